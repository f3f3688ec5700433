//! # tensorbridge
//!
//! A static runtime for small, compile-time-configured classifiers. [`model!`] turns a
//! fixed-shape declaration into a model whose host buffers are statically sized nalgebra
//! matrices and whose kernels are specialised for exactly those shapes, on an OpenCL device
//! or on the CPU backend wherever none is present.
//!
//! The workflow is a bridge with two directions: the host prepares and slices data, the
//! batch crosses to the device ([`Engine::to_device`]), the device runs the forward and
//! backward passes, and the results cross back ([`DeviceTensor::to_host`]) for metrics.
//!
//! ```
//! use tensorbridge::{matrix, vector};
//! use tensorbridge::{host, Device};
//!
//! tensorbridge::model! {
//!     /// The seed's cat-vs-dog head: 4 features, 2 classes, batches of 2.
//!     pub struct CatDog {
//!         batch: 2,
//!         features: 4,
//!         classes: 2,
//!     }
//! }
//!
//! # fn main() -> tensorbridge::Result<()> {
//! // Host: a mini-batch and its labels (0 = cat, 1 = dog).
//! let x = matrix![0.9, 0.8, 0.1, 0.05;
//!                 0.1, 0.2, 0.8, 0.95];
//! let y = vector![0u32, 1];
//!
//! // The model, with the seed's head weights and zero bias.
//! let device = Device::auto();
//! let params = CatDogParams {
//!     w0: matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0],
//!     b0: vector![0.0, 0.0],
//! };
//! let mut model = CatDog::with_params(&device, params)?;
//!
//! // Across the bridge and back.
//! let xd = model.to_device(&x)?;
//! let logits = model.forward(&xd)?.to_host()?;
//! assert!((logits[(0, 0)] - 16.25).abs() < 1e-4);  // 0.9*10 + 0.8*10 + 0.1*-8 + 0.05*1
//! assert!((logits[(1, 1)] - 17.1).abs() < 1e-4);   // 0.1*2 + 0.2*1 + 0.8*9 + 0.95*10
//!
//! // Host: argmax and accuracy.
//! let predicted = host::argmax_rows(&logits);
//! assert_eq!(predicted, vec![0, 1]);
//! assert_eq!(host::accuracy(&predicted, y.as_slice()), 1.0);
//!
//! // Training: a fresh model (seeded initialisation) learns the batch; each SGD step
//! // returns the loss before it.
//! let mut fresh = CatDog::new(&device)?;
//! let first = fresh.train_step(&x, &y, 0.5)?;
//! for _ in 0..20 {
//!     fresh.train_step(&x, &y, 0.5)?;
//! }
//! assert!(fresh.loss(&x, &y)? < first / 2.0);
//! # Ok(())
//! # }
//! ```
//!
//! # Your data: `.npy` files
//!
//! Real data usually arrives as NumPy arrays. [`Dataset::from_npy`](data::Dataset::from_npy)
//! loads a features file (a 2-D float or integer array, one row per example) and a labels
//! file (a 1-D integer array) as `numpy.save` wrote them; the rest of [`data`] splits,
//! standardises and batches them for a model, and [`Engine::fit`] trains on them. The
//! [`npy`] module reads and writes single arrays ([`npy::read_matrix`],
//! [`npy::write_matrix`]). The repository ships Iris and handwritten digits in `data/`.
//!
//! ```
//! use tensorbridge::data::{Dataset, Standardizer};
//! use tensorbridge::Device;
//!
//! tensorbridge::model! {
//!     /// Iris: 4 measurements, 3 species, batches of 16.
//!     pub struct Iris { batch: 16, features: 4, classes: 3 }
//! }
//!
//! # fn main() -> tensorbridge::Result<()> {
//! // Paths relative to the repository's root.
//! let data = Dataset::from_npy("data/iris_features.npy", "data/iris_labels.npy")?;
//! let (train, test) = data.split_stratified(0.3, 0)?;      // 70/30, each class kept in proportion
//! let scaler = Standardizer::fit(&train)?;                  // the training part's statistics
//! let (train, test) = (scaler.apply(&train)?, scaler.apply(&test)?);
//!
//! let mut model = Iris::new(&Device::cpu())?;
//! model.fit(&train, &[0.5; 20], 1)?;                        // 20 epochs, shuffled with seed 1
//! assert!(model.evaluate(&test)?.accuracy > 0.8);
//! # Ok(())
//! # }
//! ```
//!
//! Every mistake in a declaration is a compile error pointing at the token at fault; every
//! bad runtime input (a label `>= classes`, a NaN) is an [`Error`], never a panic and never
//! an out-of-bounds read.
#![deny(missing_docs)]
#![cfg_attr(not(feature = "std"), no_std)]

// The unit tests of a `no_std` build still run on the host, with its `std`.
#[cfg(all(test, not(feature = "std")))]
extern crate std;

// The modules form layers, described bottom-up in the `architecture` module;
// `tests/layers.rs` checks from the sources that no import cycle exists.
pub mod architecture;
#[cfg(feature = "std")]
mod backend;
pub mod check;
#[cfg(feature = "checkpoint")]
pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "data")]
pub mod data;
#[cfg(feature = "std")]
mod device;
#[cfg(feature = "std")]
mod engine;
mod error;
#[cfg(feature = "parallel")]
mod fixed;
#[cfg(any(feature = "npy", feature = "checkpoint", feature = "onnx"))]
mod fsutil;
#[cfg(feature = "parallel")]
mod gemm;
#[cfg(feature = "std")]
pub mod host;
#[cfg(feature = "std")]
mod info;
#[cfg(feature = "opencl")]
mod kernels;
pub mod layout;
#[doc(hidden)]
#[macro_use]
pub mod macros;
pub mod math;
mod model;
#[cfg(feature = "npy")]
pub mod npy;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "parallel")]
mod pool;
#[cfg(feature = "opencl")]
mod prebuild;
#[cfg(feature = "std")]
mod profile;
#[cfg(feature = "checkpoint")]
pub mod pytorch;
pub mod quant;
#[cfg(feature = "std")]
mod quant_host;
pub mod rng;
#[cfg(feature = "std")]
mod simd;
#[cfg(feature = "opencl")]
mod startup;
#[cfg(feature = "std")]
mod tensor;
#[cfg(feature = "train")]
pub mod train;

#[cfg(not(feature = "std"))]
pub use cpu::Device;
#[cfg(feature = "data")]
pub use data::Dataset;
#[cfg(feature = "std")]
pub use device::{Device, CACHE_DIR_ENV, DEVICE_ENV, TRACE_DEVICE_ENV};
#[cfg(feature = "std")]
pub use engine::Engine;
pub use error::{Error, Result};
#[cfg(feature = "std")]
pub use host::Standardizer;
#[cfg(feature = "std")]
pub use info::{DeviceInfo, DeviceType, KernelPath, Upload, ARGUMENT_BATCH_WORDS};
pub use math::activation::Activation;
/// The optimizers: [`optim::Sgd`], [`optim::Momentum`], [`optim::Adam`], [`optim::AdamW`]
/// (see [`math::optim`]).
pub use math::optim;
#[cfg(feature = "std")]
pub use model::boxed_zeros;
pub use model::{Element, HostTensor, Model, Params, StorageElement};
#[cfg(feature = "opencl")]
pub use prebuild::prebuild;
#[cfg(feature = "std")]
pub use profile::{Stage, StepProfile};
pub use rng::DEFAULT_SEED;
#[cfg(feature = "opencl")]
pub use startup::{ProgramOrigin, StartupReport, BUILD_NOTICE_ENV, TRACE_STARTUP_ENV};
#[cfg(feature = "std")]
pub use tensor::DeviceTensor;
#[cfg(feature = "train")]
pub use train::{EpochStats, FitOptions, History, Metrics};

pub use half;
pub use nalgebra;

/// Declares a fixed-shape classifier.
///
/// ```
/// tensorbridge::model! {
///     /// Doc comments and attributes pass through to the struct.
///     #[allow(dead_code)]
///     pub struct Iris {
///         batch: 16,      // rows per batch
///         features: 4,    // inputs per row
///         classes: 3,     // labels are 0..3
///         hidden: [8],    // optional: dense ReLU layers before the linear head
///     }
/// }
/// # use tensorbridge::Model;
/// assert_eq!(Iris::LAYERS, &[4, 8, 3]);
/// ```
///
/// Keys: `batch`, `features`, `classes` (required; positive integer literals, at most
/// 2^20 each, `classes` at least 2), `hidden` (optional list of widths, `[]` for none, at
/// most 64 layers), `storage` (optional, `f32` or `f16`, default `f32`), `activation`
/// (optional, see below), `optimizer`
/// (optional, `sgd`, `momentum`, `adam` or `adamw`, default `sgd`: see [`optim`]; the
/// model's [`Model::Optimizer`] is then that struct of [`optim`], its state sized in
/// [`Model::OptState`]). No buffer (the
/// batch, a weight matrix, the logits) may exceed 2^28 elements (1 GiB of `f32`). Every mistake is a compile error
/// pointing at the token at fault.
///
/// For `struct CatDog` it generates:
/// - `CatDog`, implementing [`Model`] (`BATCH`, `FEATURES`, `CLASSES`, `LAYERS`;
///   `Input = SMatrix<f32, B, F>`, `Labels = SVector<u32, B>`, `Logits = SMatrix<f32, B, C>`,
///   `Params = CatDogParams`), with `CatDog::new(&device)`, `CatDog::with_params(&device, p)`,
///   `CatDog::kernel_source()`, and the runtime API of [`Engine`] through `Deref`;
/// - `CatDogParams` with public fields `w0: SMatrix<f32, F, C>`, `b0: SVector<f32, C>` (and
///   `w1, b1, ...` for hidden layers), deriving `Clone`, `Debug`, `PartialEq`.
/// - `CatDogInt8`, the int8 twin ([`quant::Int8Model`] with the declaration's sizes), and
///   `CatDog::quantize(&calibration)`, which makes one (see [`quant`]).
///
/// # `activation: relu | tanh | sigmoid | identity`
///
/// The function after each hidden layer ([`Activation`]): one name for all of them
/// (`activation: tanh`), or a list with one per hidden layer (`activation: [tanh, relu]`).
/// The default is `relu`. The output layer is always linear (its logits go to the softmax
/// cross-entropy). Gradients are exact, each derivative taken from the layer's output
/// (`tanh' = 1 - y²`, `sigmoid' = y (1 - y)`), on every path (CPU core, CPU backend, OpenCL).
///
/// The initial weights suit the activation ([`Activation::init_variance`]): a hidden layer
/// before ReLU is He-normal, `N(0, 2 / fan_in)`; before tanh, sigmoid or identity
/// Glorot-normal, `N(0, 2 / (fan_in + fan_out))`. The output layer is LeCun-normal,
/// `N(0, 1 / fan_in)`, and every bias starts at zero. Changing a declaration's activation
/// changes the initial weights of the layers it applies to, not the others'.
///
/// ```
/// tensorbridge::model! {
///     pub struct Moons { batch: 8, features: 2, classes: 2, hidden: [16, 8], activation: [tanh, sigmoid] }
/// }
/// # use tensorbridge::{Activation, Model};
/// assert_eq!(Moons::ACTIVATIONS, &[Activation::Tanh, Activation::Sigmoid]);
/// ```
///
/// # `storage: f16`
///
/// The batch and the parameters are stored as [`half::f16`] on the host and on the device:
/// `Input = SMatrix<f16, B, F>`, `CatDogParams { w0: SMatrix<f16, F, C>, .. }`, half the
/// memory and half the bytes uploaded per step. Labels stay `u32`; every arithmetic
/// operation and accumulator is `f32`, so `Logits` is `SMatrix<f32, B, C>` and
/// `gradients` returns `CatDogGrads` (the fields of `CatDogParams` in `f32`). On OpenCL the
/// kernels read and write `half` through the core `vload_half`/`vstore_half_rte`, so they run
/// on devices without `cl_khr_fp16`; the CPU backend computes exactly the same `f32`
/// arithmetic on the widened values.
///
/// Every SGD update is computed in `f32` and rounded to the nearest `f16` (ties to even), on
/// both backends. Inputs and parameters are checked for NaN and infinity as in `f32`; where
/// the library converts `f32` data into the model's storage (the mini-batches of a
/// [`Dataset`]), a value beyond ±65504 is [`Error::StorageOverflow`], never a silent `inf`.
/// Checkpoints hold `F16` tensors, and `npy::write_matrix` writes `<f2` arrays.
///
/// Accuracy against `f32`: `f16` keeps 11 significant bits, so storing a value changes it by
/// at most 2^-11 ≈ 4.9e-4 relative (values below 6.1e-5 are subnormal and keep less). For a
/// linear model a logit's storage error is at most about `2^-10 · Σ_i |x_i w_i| + 2^-11 · |b|`
/// (twice the unit roundoff: both factors are rounded); an MLP adds each layer's error to the
/// next in the same way (`tests/f16_storage.rs` checks this bound). Measured on random data
/// (inputs up to 3 in magnitude, weights up to 1): logit errors up to 1.4e-3, about a quarter
/// of the bound, for a linear model, and 2.9e-4 for a 2-hidden-layer MLP. Training reaches
/// the same test accuracy as `f32` with the same seed and schedule: iris 1.0, digits with
/// `hidden: [32]` 0.976 (`tests/f16_accuracy.rs`). Small updates (`lr · g` below half an
/// `f16` step of the parameter) are lost to rounding: prefer larger learning rates or `f32`
/// when fine-tuning.
///
/// Host buffers of more than 16384 elements (64 KiB) are boxed (`Box<SMatrix<..>>`) so they
/// never sit on the stack; make them with [`boxed_zeros`].
pub use tensorbridge_macros::model;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    //! Used by the code `model!` generates; not a public API.
    pub use crate::cpu::x32_len;
    #[cfg(feature = "parallel")]
    pub use crate::fixed::layer as fixed_layer;
    #[cfg(feature = "opencl")]
    pub use crate::kernels::kernel_source;
    #[cfg(feature = "parallel")]
    pub use crate::model::Product;
    /// The CPU backend's worker pool, for `xtests/benches/cpu_threshold.rs` to time a hand-off.
    #[cfg(feature = "parallel")]
    pub use crate::pool::run as pool_run;
    #[cfg(feature = "std")]
    pub use std::{string::String, sync::OnceLock};

    /// Where a large host buffer lives: on the heap with the standard library, inline in
    /// the `no_std` core (which has no allocator).
    #[cfg(feature = "std")]
    pub type Boxed<T> = std::boxed::Box<T>;
    /// Where a large host buffer lives: on the heap with the standard library, inline in
    /// the `no_std` core (which has no allocator).
    #[cfg(not(feature = "std"))]
    pub type Boxed<T> = T;

    /// The runtime a model struct wraps: the [`Engine`](crate::Engine) with the standard
    /// library, the CPU core ([`Cpu`](crate::cpu::Cpu)) without.
    #[cfg(feature = "std")]
    pub type EngineOf<M> = crate::Engine<M>;
    /// The runtime a model struct wraps: the [`Engine`](crate::Engine) with the standard
    /// library, the CPU core ([`Cpu`](crate::cpu::Cpu)) without.
    #[cfg(not(feature = "std"))]
    pub type EngineOf<M> = crate::cpu::Cpu<M>;
}

/// Expands to its input in builds with the feature `std`, to nothing without.
#[cfg(feature = "std")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_std {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `std`, to nothing without.
#[cfg(not(feature = "std"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_std {
    ($($t:tt)*) => {};
}
/// Expands to its input in builds without the feature `std`, to nothing with it.
#[cfg(feature = "std")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_no_std {
    ($($t:tt)*) => {};
}
/// Expands to its input in builds without the feature `std`, to nothing with it.
#[cfg(not(feature = "std"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_no_std {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `parallel`, to nothing without.
#[cfg(feature = "parallel")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_parallel {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `parallel`, to nothing without.
#[cfg(not(feature = "parallel"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_parallel {
    ($($t:tt)*) => {};
}
/// Expands to its input in builds with the feature `checkpoint`, to nothing without.
#[cfg(feature = "checkpoint")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_checkpoint {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `checkpoint`, to nothing without.
#[cfg(not(feature = "checkpoint"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_checkpoint {
    ($($t:tt)*) => {};
}
/// Expands to its input in builds with the feature `onnx`, to nothing without.
#[cfg(feature = "onnx")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_onnx {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `onnx`, to nothing without.
#[cfg(not(feature = "onnx"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_onnx {
    ($($t:tt)*) => {};
}
/// Expands to its input in builds with the feature `opencl`, to nothing without.
#[cfg(feature = "opencl")]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_opencl {
    ($($t:tt)*) => { $($t)* };
}
/// Expands to its input in builds with the feature `opencl`, to nothing without.
#[cfg(not(feature = "opencl"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __if_opencl {
    ($($t:tt)*) => {};
}
