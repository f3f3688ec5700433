//! The network's math, written once for the CPU core and the OpenCL kernels: `no_std`, no
//! allocation.

pub mod optim;
