//! How the crate is built: its layers, bottom-up. Each layer imports only from the layers
//! below it, never the other way, so any part can be read (and tested) without the parts
//! above it; `tests/layers.rs` checks from the sources that no module imports, directly or
//! through others, a module that imports it.
//!
//! ```text
//! host I/O   train (fit, evaluate, plots)   checkpoint   data -> npy   fsutil
//!            pytorch -> checkpoint   onnx (feature `onnx`: prost)
//!            quant_host (Int8Model on a device: from_engine, evaluate, save, load)
//! runtime    engine (Engine<M>: validation, deferred losses; names no backend)   prebuild
//!            host (argmax, softmax, Standardizer)
//!            tensor (DeviceTensor)   device (Device: finds devices, builds a model's backend)
//! backends   backend::{cpu, opencl}: leaves behind the `Backend` trait
//! kernels    kernels (OpenCL source: layout -> #defines, cl/ templates, Mode, arguments)
//!            startup (StartupReport)   profile (StepProfile)   info (DeviceInfo, KernelPath)
//! ------------------------------------------------------------------ no_std below
//! core       cpu (Cpu<M>: forward, loss, gradients, SGD; no allocation)
//!            quant (Int8Model: int8 quantisation and integer inference; no allocation)
//!              -> quant::lanes (with std on x86-64: the AVX-512 VNNI pass)
//!            fixed (fixed-size products) -> gemm -> pool (feature `parallel`)
//!            check (input validation)   rng (SplitMix64)   macros (matrix!, vector!)
//! bottom     model (Model, Params, HostTensor)   layout (flat layouts)   error
//!            math (each formula once: activations, loss, optimizers; imports nothing of the crate)
//!            simd (std: the x86-64 vector extension the CPU paths run; `TENSORBRIDGE_SIMD` read once)
//! ```
//!
//! - [`math`](crate::math) is the single home of the network's formulas: the CPU core, the
//!   CPU backend's fixed-size products and the kernels (as OpenCL C that `kernels.rs` emits
//!   into their prelude, `tb_act`/`tb_act_grad`) all take an activation from
//!   [`math::activation`](crate::math::activation).
//!
//! - [`layout`](crate::layout) is the single source of the flat parameter layout and the
//!   activation offsets: the CPU core, the OpenCL backend, checkpoints, the code `model!`
//!   generates (through its `const fn`s) and the kernels' `#define`s all read it.
//! - The host/kernel contract is written once: shapes, offsets, modes and the loss
//!   work-group size are `#define`s that `kernels.rs` emits from Rust constants; kernel names
//!   and every kernel's argument order are read from the `.cl` signatures by `build.rs`,
//!   and the host sets arguments by those names.
//! - The core is compiled as the crate is built (baseline x86-64: SSE2). The CPU backend,
//!   which has `std`, also compiles the core's train step for AVX-512 and for AVX2 + FMA and
//!   picks one at run time for models of at least 128 logits a batch or with a mid-sized
//!   layer; those variants run such layers through `fixed`'s kernels, instantiated by
//!   `model!` with the layer's sizes, where the baseline runs the `gemm` crate. The numbers
//!   are the same bits (`tests/core_equals_backend.rs`). The GEMMs choose their own kernels
//!   at run time.
//! - Everything below the line builds without the standard library and without an
//!   allocator (`default-features = false`); the features `std`, `parallel`, `opencl`,
//!   `npy`, `data`, `checkpoint`, `train` and `onnx` add the layers above it.
