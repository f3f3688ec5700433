//! The network's math, each formula written once: the Rust function the CPU core and the
//! CPU backend call, and the OpenCL C text of the same formula that
//! `kernels.rs` emits into the kernels' prelude. `no_std`, no allocation;
//! imports nothing of the crate.

pub mod activation;
pub mod loss;
pub mod optim;
