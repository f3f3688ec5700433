//! The CPU core: a model's forward pass, loss, gradients and SGD step in plain Rust over the
//! flat layouts of [`crate::layout`], with no allocation and no standard library. It is
//! what the `no_std` build offers ([`Cpu`]), and what the full crate's CPU backend runs, so
//! both compute the same numbers bit for bit.
//!
//! Generic over the model, so every loop bound is a compile-time constant: at small shapes
//! LLVM unrolls and vectorises the whole step. With the feature `parallel`, layers of at
//! least `GEMM_MIN_MACS` (2^13) multiply-adds go through the `gemm`
//! crate's packed kernels instead of these loops, or, in the train steps the CPU backend
//! compiles for AVX-512 and AVX2 (`Products`), layers of up to `FIXED_MAX_MACS` (2^17)
//! through kernels `model!` instantiates with the layer's sizes (`crate::fixed`): the same
//! sums, bit for bit.
//!
//! `f16` storage: the parameters are held as `f32` values that are all exactly
//! representable in `f16` (rounded to nearest-even when set and after every SGD step, as the
//! OpenCL kernels' `vstore_half_rte`), and an `f16` batch is widened into the scratch before
//! the step. The arithmetic is then exactly the `f32` path's; `f32` models skip both
//! conversions at compile time.
//!
//! ## Stack on a Cortex-M4F
//!
//! The stack each call needs at most, beyond its caller's frame, on a Cortex-M4F
//! (`thumbv7em-none-eabihf`, opt-level "s", LTO), for the seed model
//! `{batch 2, features 4, classes 2}` and `{batch 8, features 16, hidden [32], classes 4}`.
//! `.ci/run` measures the high-water marks on QEMU's board (`firmware/m4f/footprint.py`) and
//! fails if one exceeds its bound here. A model's buffers are not on the stack: they are
//! the [`Cpu`] itself (see [`Model::PARAM_BYTES`] and [`Model::WORK_BYTES`]); only
//! [`Cpu::gradients`] returns a copy of the gradients by value.
//!
//! ## No panic path
//!
//! Every index of the core's loops is either folded away by constant lengths or written
//! so that it cannot fail (`chunks_exact`, `get`, `zip`): a firmware that calls
//! construction, `logits`, `predict`, `loss`, `gradients` and `train_step` links no panic
//! code at all (`firmware/m4f/footprint.py --check` verifies it on the quiet firmwares).
//! Bad input is a typed [`Error`].
//!
//! | call | seed | `{8, 16 -> [32] -> 4}` |
//! | --- | --- | --- |
//! | `new` ([`Cpu::init_with_seed`]) | 320 B | 320 B |
//! | `logits` | 320 B | 896 B |
//! | `predict` | 320 B | 576 B |
//! | `loss` | 384 B | 640 B |
//! | `gradients` | 384 B | 7,168 B |
//! | `train_step` | 384 B | 704 B |
//!
//! ```
//! use tensorbridge::cpu::Cpu;
//! use tensorbridge::{matrix, vector};
//!
//! tensorbridge::model! {
//!     pub struct CatDog { batch: 2, features: 4, classes: 2 }
//! }
//!
//! # fn main() -> tensorbridge::Result<()> {
//! let params = CatDogParams {
//!     w0: matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0],
//!     b0: vector![0.0, 0.0],
//! };
//! let mut cpu = Cpu::<CatDog>::with_params(&params)?; // no allocation, no device
//! let x = matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95];
//! let y = vector![0u32, 1];
//! assert_eq!(cpu.predict(&x)?, y);
//! let loss = cpu.train_step(&x, &y, 0.1)?;
//! assert!(loss < 1e-4);
//! # Ok(())
//! # }
//! ```

use core::mem::MaybeUninit;

use crate::check::{self, Batch};
use crate::error::{Error, Result, Text};
use crate::layout::{
    layer_slot, locate, output_offset, outputs_len, FlatSpace, LayerSlot, ScratchParts, ScratchSpace, ZeroBuffer,
};
use crate::math::activation::{after_layer, all_are, Activation};
use crate::math::loss;
use crate::math::optim::{self, Maxima, Optimizer};
use crate::model::{HostTensor, Model, Params, StorageElement};
use crate::rng::Rng;

#[cfg(feature = "parallel")]
use crate::gemm::{gemm, Dst, View, GEMM_MIN_MACS};
#[cfg(feature = "parallel")]
use crate::model::Product;

/// How the train step computes the products of the layers that would otherwise go through
/// the `gemm` crate (feature `parallel`): [`Packed`] as the core is built, `Fixed` in the
/// train steps the CPU backend compiles for AVX-512 and for AVX2 + FMA. Both give the same
/// bits (see `crate::fixed`).
pub(crate) trait Products {
    /// Whether the code these products are compiled into has fused multiply-adds (the
    /// optimizer's update then divides with them: [`optim::div_fma`], the same bits).
    const FMA: bool;

    /// Computes `p` for layer `layer` of `M` and returns `true`, or returns `false` and
    /// leaves it to the `gemm` crate.
    #[cfg(feature = "parallel")]
    fn fixed<M: Model>(layer: usize, p: Product<'_>) -> bool;

    /// The largest magnitude in `v` (0 when empty), or NaN if `v` holds a NaN or an
    /// infinity: the fused update's bound ([`train_step`]). Every way gives the same value.
    #[cfg(feature = "parallel")]
    fn max_abs(v: &[f32]) -> f32;
}

/// Every product through the `gemm` crate.
pub(crate) struct Packed;

impl Products for Packed {
    const FMA: bool = false;

    #[cfg(feature = "parallel")]
    #[inline(always)]
    fn fixed<M: Model>(_: usize, _: Product<'_>) -> bool {
        false
    }

    #[cfg(feature = "parallel")]
    #[inline(always)]
    fn max_abs(v: &[f32]) -> f32 {
        max_abs_f32(v)
    }
}

/// The model's fixed-size products ([`Model::fixed_product`]) with register blocks of
/// `MR x NR`, where it has them, else the `gemm` crate. `f32::mul_add` is one instruction
/// only where FMA is a target feature: used only in code compiled with it.
#[cfg(feature = "parallel")]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Only the x86-64 variants run them.
pub(crate) struct Fixed<const MR: usize, const NR: usize>;

#[cfg(feature = "parallel")]
impl<const MR: usize, const NR: usize> Products for Fixed<MR, NR> {
    const FMA: bool = true;

    #[inline(always)]
    fn fixed<M: Model>(layer: usize, p: Product<'_>) -> bool {
        M::fixed_product::<MR, NR>(layer, p)
    }

    /// On the bits: a magnitude's bits order as its value does, and NaN and infinity are
    /// the patterns from `0x7f80_0000` up. One integer maximum, whose short latency let it
    /// run 2.7x faster than [`max_abs_f32`] on AVX-512 (2048 values: 52 ns against 144 ns);
    /// without SSE4.1's integer maximum it ran 2x slower, hence only here.
    #[inline(always)]
    fn max_abs(v: &[f32]) -> f32 {
        let bits = v.iter().fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff));
        if bits >= 0x7f80_0000 {
            f32::NAN
        } else {
            f32::from_bits(bits)
        }
    }
}

/// A model on the CPU core: its parameters and working memory, held by value, with no
/// allocation, no thread and no standard library. Everything the `no_std` build offers runs
/// through it; the full crate's CPU backend computes the same numbers (it calls the same
/// functions).
///
/// Its size is the model's parameters twice (values and gradients) plus its activations
/// (and, with the feature `parallel`, room for a transposed batch when the first layer is
/// mid-sized): small for the models microcontrollers run; a large model belongs in a
/// `static` or a `Box`.
#[derive(Clone)]
pub struct Cpu<M: Model> {
    params: M::Flat,
    scratch: M::Scratch,
    bound: UpdateBound,
    moments: M::OptState,
    step: u32,
    optimizer: M::Optimizer,
}

impl<M: Model> Cpu<M> {
    /// The model with the given parameters.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite.
    pub fn with_params(params: &M::Params) -> Result<Self> {
        let mut cpu = Cpu {
            params: M::Flat::zeroed(),
            scratch: M::Scratch::zeroed(),
            bound: UpdateBound::UNKNOWN,
            moments: M::OptState::zeroed(),
            step: 0,
            optimizer: M::Optimizer::default(),
        };
        cpu.set_params(params)?;
        Ok(cpu)
    }

    /// The model initialised from `seed` as [`Engine::with_seed`](crate::Engine::with_seed)
    /// does (the same values on every platform).
    pub fn with_seed(seed: u64) -> Self {
        let mut params = M::Flat::zeroed();
        init_params::<M::Storage>(M::LAYERS, M::ACTIVATIONS, seed, params.values_mut());
        Cpu {
            params,
            scratch: M::Scratch::zeroed(),
            bound: UpdateBound::UNKNOWN,
            moments: M::OptState::zeroed(),
            step: 0,
            optimizer: M::Optimizer::default(),
        }
    }

    /// Initialises the model in place, in `slot`, from `seed` (as [`Cpu::with_seed`]), and
    /// returns it: no copy of the model on the stack, so that a large model can be built
    /// in a `static` (a `MaybeUninit<Cpu<M>>`).
    pub fn init_with_seed(slot: &mut MaybeUninit<Self>, seed: u64) -> &mut Self {
        let cpu = Self::init_zeroed(slot);
        init_params::<M::Storage>(M::LAYERS, M::ACTIVATIONS, seed, cpu.params.values_mut());
        cpu
    }

    /// Initialises the model in place, in `slot`, with the given parameters (as
    /// [`Cpu::with_params`]), and returns it.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite; the slot then holds the model
    /// with every parameter zero.
    pub fn init_with_params<'a>(slot: &'a mut MaybeUninit<Self>, params: &M::Params) -> Result<&'a mut Self> {
        let cpu = Self::init_zeroed(slot);
        cpu.set_params(params)?;
        Ok(cpu)
    }

    /// The slot's bytes zeroed, as a model whose parameters are all zero.
    fn init_zeroed(slot: &mut MaybeUninit<Self>) -> &mut Self {
        // SAFETY: every field of `Cpu` is valid when all its bits are zero: `M::Flat`,
        // `M::Scratch` and `M::OptState` are `ZeroBuffer`s (a sealed trait of `#[repr(C)]`
        // structs of `f32` arrays, zero being 0.0), `UpdateBound` holds an `f64` and `f32`s (0.0),
        // `step` is a `u32`, and `M::Optimizer` is one of the sealed `optim` structs, of
        // `f32` and `bool` fields (0.0 and `false`). The slot is then fully initialised, and
        // `bound` and `optimizer` are set to the values a new model has.
        unsafe {
            slot.as_mut_ptr().write_bytes(0, 1);
            let cpu = slot.assume_init_mut();
            cpu.bound = UpdateBound::UNKNOWN;
            cpu.optimizer = M::Optimizer::default();
            cpu
        }
    }

    /// The parameters.
    pub fn params(&self) -> M::Params {
        read_params::<M>(self.params.values())
    }

    /// Replaces the parameters.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if one is NaN or infinite; the old ones are kept.
    pub fn set_params(&mut self, params: &M::Params) -> Result<()> {
        write_params::<M>(params, self.params.values_mut())?;
        self.bound = UpdateBound::UNKNOWN;
        Ok(())
    }

    /// Logits of a batch.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    pub fn logits(&mut self, x: &M::Input) -> Result<M::Logits> {
        let mut out = M::Logits::zeroed();
        logits_into::<M>(self.params.values(), &mut self.scratch.parts(), x, out.as_flat_mut())?;
        Ok(out)
    }

    /// The predicted class of every row (argmax of the logits; the first on ties).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a non-finite input, or if the logits overflowed.
    pub fn predict(&mut self, x: &M::Input) -> Result<M::Labels> {
        let mut out = M::Labels::zeroed();
        predict_into::<M>(self.params.values(), &mut self.scratch.parts(), x, out.as_flat_mut())?;
        Ok(out)
    }

    /// Mean softmax cross-entropy of the batch.
    pub fn loss(&mut self, x: &M::Input, y: &M::Labels) -> Result<f32> {
        let batch = check::batch::<M>(x, y, M::BATCH)?;
        Ok(loss::<M>(self.params.values(), &mut self.scratch.parts(), batch))
    }

    /// The loss and its gradient with respect to every parameter.
    pub fn gradients(&mut self, x: &M::Input, y: &M::Labels) -> Result<(f32, M::Grads)> {
        let batch = check::batch::<M>(x, y, M::BATCH)?;
        let mut parts = self.scratch.parts();
        let loss = gradients::<M>(self.params.values(), &mut parts, batch);
        let grads = &parts.grads;
        Ok((loss, <M::Grads as Params>::from_flat_fn(&mut |k| grads.get(k).copied().unwrap_or(0.0))))
    }

    /// One step of the model's optimizer (SGD: `p -= lr * dL/dp`; see
    /// [`optim`]) at learning rate `lr`, its other hyperparameters those of
    /// [`Cpu::set_optimizer`]; returns the loss before the step.
    ///
    /// # Errors
    /// Those of the input checks, [`Error::InvalidLearningRate`],
    /// [`Error::NonFiniteLoss`] and [`Error::UpdateOverflow`] (the parameters and the
    /// optimizer's state are then unchanged).
    pub fn train_step(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<f32> {
        self.train_step_rows(x, y, M::BATCH, lr)
    }

    /// Like [`Cpu::train_step`], counting only the first `rows` rows.
    pub fn train_step_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize, lr: f32) -> Result<f32> {
        check::learning_rate(lr)?;
        let batch = check::batch::<M>(x, y, rows)?;
        let state = OptimState { moments: self.moments.values_mut(), step: &mut self.step, bound: &mut self.bound };
        train_step::<M, Packed>(
            self.params.values_mut(),
            &mut self.scratch.parts(),
            batch,
            self.optimizer.with_lr(lr),
            state,
        )
    }

    /// The optimizer's hyperparameters (PyTorch's defaults until set; the learning rate of
    /// each step is the one it is given).
    pub fn optimizer(&self) -> M::Optimizer {
        self.optimizer
    }

    /// Sets the optimizer's hyperparameters for the following steps; its state (moments,
    /// step count) is kept.
    ///
    /// # Errors
    /// [`Error::InvalidHyperparameter`] for a value out of range (as `torch.optim` checks
    /// them); the old ones are kept.
    pub fn set_optimizer(&mut self, optimizer: M::Optimizer) -> Result<()> {
        check::optimizer(&optimizer)?;
        self.optimizer = optimizer;
        Ok(())
    }

    /// Clears the optimizer's state: moments zero, step count 0, as before the first step.
    pub fn reset_optimizer(&mut self) {
        self.moments.values_mut().fill(0.0);
        self.step = 0;
        self.bound = UpdateBound::UNKNOWN;
    }
}

impl<M: Model> Cpu<M> {
    /// The model with the parameters of `weights`, copied into it (so that it can train).
    pub fn from_weights(weights: &Weights<M>) -> Self {
        let mut params = M::Flat::zeroed();
        copy_weights::<M>(weights, params.values_mut());
        Cpu {
            params,
            scratch: M::Scratch::zeroed(),
            bound: UpdateBound::UNKNOWN,
            moments: M::OptState::zeroed(),
            step: 0,
            optimizer: M::Optimizer::default(),
        }
    }

    /// Initialises the model in place, in `slot`, with the parameters of `weights` (as
    /// [`Cpu::from_weights`]), and returns it.
    pub fn init_with_weights<'a>(slot: &'a mut MaybeUninit<Self>, weights: &Weights<M>) -> &'a mut Self {
        let cpu = Self::init_zeroed(slot);
        copy_weights::<M>(weights, cpu.params.values_mut());
        cpu
    }
}

/// `weights`' values into `out`, each rounded to the storage type (a no-op for `f32`).
fn copy_weights<M: Model>(weights: &Weights<M>, out: &mut [f32]) {
    for (p, &v) in out.iter_mut().zip(weights.flat.values()) {
        *p = M::Storage::round_f32(v);
    }
}

/// A model's parameters on their own, apart from any working memory: what a trained model
/// needs for inference. Built by a `const fn`, a `static` of them is laid out at compile
/// time, so that on a microcontroller the weights sit in flash and [`Weights::logits`] and
/// [`Weights::predict`] read them there, with no copy in RAM: only a [`Work`] area is
/// mutable. `model!`'s `weights: "path"` key generates such a `static`
/// (`Name::weights()`); to train, copy them into a model ([`Cpu::from_weights`],
/// [`Cpu::init_with_weights`]).
///
/// ```
/// use tensorbridge::cpu::{Weights, Work};
/// use tensorbridge::layout::FlatParams;
/// use tensorbridge::{matrix, vector};
///
/// tensorbridge::model! {
///     pub struct CatDog { batch: 2, features: 4, classes: 2 }
/// }
///
/// // The flat layout: w0 column-major ([in x out], `w[o * in + i]`), then b0.
/// static WEIGHTS: Weights<CatDog> = Weights::from_flat(match FlatParams::finite([
///     10.0, 10.0, -8.0, 1.0, // w0's first column
///     2.0, 1.0, 9.0, 10.0, // w0's second column
///     0.0, 0.0, // b0
/// ]) {
///     Some(flat) => flat,
///     None => panic!("a weight is not finite"), // at compile time, not at run time
/// });
///
/// # fn main() -> tensorbridge::Result<()> {
/// let mut work = Work::<CatDog>::new();
/// let x = matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95];
/// assert_eq!(WEIGHTS.predict(&mut work, &x)?, vector![0u32, 1]);
/// # Ok(())
/// # }
/// ```
pub struct Weights<M: Model> {
    flat: M::Flat,
}

impl<M: Model> Weights<M> {
    /// The parameters in the flat layout ([`crate::layout`]), in a `const` context too.
    /// Values that the model's storage type cannot hold exactly (`f16`) are rounded when
    /// they are copied into a [`Cpu`], and used as given by [`Weights::logits`].
    pub const fn from_flat(flat: M::Flat) -> Self {
        Weights { flat }
    }

    /// The parameters, as the model's `Params` struct.
    pub fn params(&self) -> M::Params {
        read_params::<M>(self.flat.values())
    }

    /// The values in the flat layout.
    pub fn values(&self) -> &[f32] {
        self.flat.values()
    }

    /// Logits of a batch, read from these weights in place, with `work` as the working
    /// memory: the same numbers as [`Cpu::logits`] of a model with these parameters.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    pub fn logits(&self, work: &mut Work<M>, x: &M::Input) -> Result<M::Logits> {
        let mut out = M::Logits::zeroed();
        logits_into::<M>(self.flat.values(), &mut work.scratch.parts(), x, out.as_flat_mut())?;
        Ok(out)
    }

    /// The predicted class of every row (as [`Cpu::predict`]), read from these weights in
    /// place.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a non-finite input, or if the logits overflowed.
    pub fn predict(&self, work: &mut Work<M>, x: &M::Input) -> Result<M::Labels> {
        let mut out = M::Labels::zeroed();
        predict_into::<M>(self.flat.values(), &mut work.scratch.parts(), x, out.as_flat_mut())?;
        Ok(out)
    }
}

impl<M: Model> core::fmt::Debug for Weights<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Weights").field("model", &M::NAME).field("values", &M::Flat::LEN).finish()
    }
}

/// The working memory of a model's calls without its parameters ([`Model::WORK_BYTES`]):
/// what [`Weights::logits`] and [`Weights::predict`] write. Keep it in a `static` slot
/// ([`Work::init`]) or on the stack ([`Work::new`]).
pub struct Work<M: Model> {
    scratch: M::Scratch,
}

impl<M: Model> Work<M> {
    /// The working memory, zeroed, by value.
    pub fn new() -> Self {
        Work { scratch: M::Scratch::zeroed() }
    }

    /// The working memory zeroed in place, in `slot` (no copy of it on the stack).
    pub fn init(slot: &mut MaybeUninit<Self>) -> &mut Self {
        // SAFETY: `M::Scratch` is a `ZeroBuffer` (a sealed trait of `#[repr(C)]` structs of
        // `f32` arrays), valid when all its bits are zero; the slot is then initialised.
        unsafe {
            slot.as_mut_ptr().write_bytes(0, 1);
            slot.assume_init_mut()
        }
    }
}

impl<M: Model> Default for Work<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Model> core::fmt::Debug for Work<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Work").field("model", &M::NAME).finish_non_exhaustive()
    }
}

/// The device of a build without `std`: the CPU core, the only one there is. It gives the
/// generated constructors the signatures they have with `std` (`Name::on(&device)`,
/// `Name::on_with_params(&device, params)`), so that code builds with and without `std`.
#[cfg(not(feature = "std"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Device {
    _private: (),
}

#[cfg(not(feature = "std"))]
impl Device {
    /// The CPU core.
    pub const fn cpu() -> Self {
        Device { _private: () }
    }

    /// The CPU core (with `std`, the best device found).
    pub const fn auto() -> Self {
        Device { _private: () }
    }
}

impl<M: Model> core::fmt::Debug for Cpu<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cpu").field("model", &M::NAME).field("layers", &M::LAYERS).finish_non_exhaustive()
    }
}

/// Seeded initial parameters in the flat layout, into `out`: the weights of a hidden layer
/// as its activation asks ([`Activation::init_variance`]: He-normal `N(0, 2 / fan_in)` for
/// ReLU, Glorot-normal `N(0, 2 / (fan_in + fan_out))` for the others), of the head
/// LeCun-normal (`N(0, 1 / fan_in)`), biases zero; each value rounded to the storage type
/// `T`. `hidden` are the hidden layers' activations ([`Model::ACTIVATIONS`]). In `f32`
/// arithmetic only ([`Rng::normal_pair`]).
pub(crate) fn init_params<T: StorageElement>(dims: &[usize], hidden: &[Activation], seed: u64, out: &mut [f32]) {
    let mut rng = Rng::new(seed);
    let layers = dims.len() - 1;
    for l in 0..layers {
        let slot = layer_slot(dims, l);
        let variance = if l + 1 < layers {
            after_layer(hidden, layers, l).init_variance(slot.fan_in, slot.fan_out)
        } else {
            1.0 / slot.fan_in as f32
        };
        let std = crate::math::sqrt(variance);
        // Normals in pairs (the polar method gives two a draw).
        let mut pairs = sub_mut(out, slot.w, slot.b - slot.w).chunks_exact_mut(2);
        for pair in &mut pairs {
            let (a, b) = rng.normal_pair();
            pair[0] = T::round_f32(a * std);
            pair[1] = T::round_f32(b * std);
        }
        if let [last] = pairs.into_remainder() {
            *last = T::round_f32(rng.normal_pair().0 * std);
        }
        sub_mut(out, slot.b, slot.fan_out).fill(0.0);
    }
}

/// Checks `params` and writes them into `flat` (rounded values of the storage type, as
/// `f32`); `flat` is unchanged on error.
pub(crate) fn write_params<M: Model>(params: &M::Params, flat: &mut [f32]) -> Result<()> {
    // Checked tensor by tensor through the flat view, without a temporary buffer.
    let mut error = None;
    params.visit_flat(&mut |offset, values: &[M::Storage]| {
        if error.is_none() {
            error = check::params_at(M::LAYERS, offset, values).err();
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    params.visit_flat(&mut |offset, values: &[M::Storage]| {
        for (p, v) in flat[offset..offset + values.len()].iter_mut().zip(values) {
            *p = v.to_f32();
        }
    });
    Ok(())
}

/// The parameters from the flat `f32` layout.
pub(crate) fn read_params<M: Model>(flat: &[f32]) -> M::Params {
    M::Params::from_flat_fn(&mut |k| M::Storage::from_f32(flat[k]))
}

/// The length of a [`Scratch`](crate::layout::Scratch)'s `x32`: the batch widened to `f32`
/// (`f16` storage only), then room for the batch's transpose when the first layer's weight
/// gradients go through the CPU train step's fixed-size products (feature `parallel`; see
/// `Model::fixed_product`). Used by the code `model!` generates.
#[doc(hidden)]
pub const fn x32_len(dims: &[usize], batch: usize, f16: bool) -> usize {
    widened_len(batch, dims[0], f16) + first_transpose_len(dims, batch)
}

/// The start of `x32` that holds the batch widened to `f32`: `batch * features` values for
/// `f16` storage, none for `f32`.
const fn widened_len(batch: usize, features: usize, f16: bool) -> usize {
    if f16 {
        batch * features
    } else {
        0
    }
}

/// Whether a layer of `M` has the size of the fixed-size products (`crate::fixed`; none
/// without the feature `parallel`).
#[cfg(feature = "std")]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Asked by the x86-64 variants alone.
pub(crate) const fn has_fixed_layer<M: Model>() -> bool {
    let mut l = 0;
    while l + 1 < M::LAYERS.len() {
        if layer_is_fixed(M::BATCH, M::LAYERS[l], M::LAYERS[l + 1]) {
            return true;
        }
        l += 1;
    }
    false
}

/// Room for the batch's transpose: `batch * features` when the first layer has the size of
/// the fixed-size products, else 0.
const fn first_transpose_len(dims: &[usize], batch: usize) -> usize {
    if dims.len() >= 2 && layer_is_fixed(batch, dims[0], dims[1]) {
        batch * dims[0]
    } else {
        0
    }
}

/// Whether a layer has the size of the fixed-size products (`crate::fixed`; none without
/// the feature `parallel`).
const fn layer_is_fixed(batch: usize, fan_in: usize, fan_out: usize) -> bool {
    #[cfg(feature = "parallel")]
    return crate::fixed::is_fixed(batch, fan_in, fan_out);
    #[cfg(not(feature = "parallel"))]
    {
        let _ = (batch, fan_in, fan_out);
        false
    }
}

/// The batch as `f32`: the slice itself for `f32` storage, else widened into the start of
/// `x32`.
#[inline(always)]
fn widen<'a, T: StorageElement>(x: &'a [T], x32: &'a mut [f32]) -> &'a [f32] {
    if let Some(x) = T::as_f32_slice(x) {
        return x;
    }
    let x32 = &mut x32[..x.len()];
    for (w, v) in x32.iter_mut().zip(x) {
        *w = v.to_f32();
    }
    x32
}

/// `x32` split into the part [`widen`] writes (empty for `f32` storage) and the room for
/// the batch's transpose after it (see [`x32_len`]).
#[inline(always)]
fn split_x32<M: Model>(x32: &mut [f32]) -> (&mut [f32], &mut [f32]) {
    x32.split_at_mut(widened_len(M::BATCH, M::FEATURES, M::Storage::IS_F16))
}

/// Runs every layer on `x`; the logits end up in the last output of `acts`.
#[inline(always)]
pub(crate) fn forward<M: Model>(params: &[f32], acts: &mut [f32], x: &[f32]) {
    forward_with::<M, Packed>(params, acts, x);
}

/// [`forward`] with the products of `P`.
#[inline(always)]
fn forward_with<M: Model, P: Products>(params: &[f32], acts: &mut [f32], x: &[f32]) {
    let layers = M::LAYERS.len() - 1;
    let params = sub(params, 0, <M::Params as Params>::LEN);
    for l in 0..layers {
        let slot = layer_slot(M::LAYERS, l);
        let start = output_offset(M::LAYERS, M::BATCH, l).min(acts.len());
        let (below, here) = acts.split_at_mut(start);
        // Slices of constant length: the bounds checks inside fold away.
        let input: &[f32] = if l == 0 {
            sub(x, 0, M::BATCH * M::FEATURES)
        } else {
            sub(below, output_offset(M::LAYERS, M::BATCH, l - 1), M::BATCH * slot.fan_in)
        };
        let z = sub_mut(here, 0, M::BATCH * slot.fan_out);
        dense_forward::<M, P>(l, input, params, slot, z, activation_after::<M>(l));
    }
}

/// The activation after layer `l` of `M` ([`after_layer`]). When every hidden layer is
/// ReLU (the default) it is worked out from `l` alone, ReLU or identity, so that the
/// other activations' code (libm's `tanhf`, `expf`) is not compiled into such a model's
/// steps, whose code stays what it was before there was a choice.
#[inline(always)]
fn activation_after<M: Model>(l: usize) -> Activation {
    let layers = M::LAYERS.len() - 1;
    if const { all_are(M::ACTIVATIONS, Activation::Relu) } {
        if l + 1 < layers {
            Activation::Relu
        } else {
            Activation::Identity
        }
    } else {
        after_layer(M::ACTIVATIONS, layers, l)
    }
}

/// The logits, `[batch x classes]` column-major, within `acts`.
#[inline(always)]
pub(crate) fn logits_of<M: Model>(acts: &[f32]) -> &[f32] {
    &acts[output_offset(M::LAYERS, M::BATCH, M::LAYERS.len() - 2)..outputs_len(M::LAYERS, M::BATCH)]
}

/// Runs the forward pass on a batch of the storage type (widened into `s.x32` for `f16`)
/// and returns the logits (within `s.acts`). The caller has checked the batch.
#[inline(always)]
pub(crate) fn forward_batch<'s, M: Model>(params: &[f32], s: &'s mut ScratchParts<'_>, x: &[M::Storage]) -> &'s [f32] {
    let x = widen(x, s.x32);
    forward::<M>(params, s.acts, x);
    logits_of::<M>(s.acts)
}

/// Checks `x`, runs the forward pass, and returns the logits (within `s.acts`).
#[inline]
fn checked_logits<'s, M: Model>(params: &[f32], s: &'s mut ScratchParts<'_>, x: &M::Input) -> Result<&'s [f32]> {
    let flat = x.as_flat();
    check::finite("input", flat, M::BATCH)?;
    Ok(forward_batch::<M>(params, s, flat))
}

/// Checks `x`, runs the forward pass and copies the logits into `out`.
#[inline]
pub(crate) fn logits_into<M: Model>(
    params: &[f32],
    s: &mut ScratchParts<'_>,
    x: &M::Input,
    out: &mut [f32],
) -> Result<()> {
    for (o, &v) in out.iter_mut().zip(checked_logits::<M>(params, s, x)?) {
        *o = v;
    }
    Ok(())
}

/// Checks `x`, runs the forward pass and writes each row's argmax into `out`.
#[inline]
pub(crate) fn predict_into<M: Model>(
    params: &[f32],
    s: &mut ScratchParts<'_>,
    x: &M::Input,
    out: &mut [u32],
) -> Result<()> {
    classes_into::<M>(checked_logits::<M>(params, s, x)?, out)
}

/// Each row's predicted class (the argmax of its logits, the first on ties) into `out`,
/// from column-major logits `z`; [`Error::NonFinite`] if the logits overflowed.
#[inline]
pub(crate) fn classes_into<M: Model>(z: &[f32], out: &mut [u32]) -> Result<()> {
    check::finite("logits", z, M::BATCH)?;
    for (r, class) in out.iter_mut().enumerate() {
        *class = argmax_column_major(z, M::BATCH, M::CLASSES, r) as u32;
    }
    Ok(())
}

/// The class of row `r` with the largest logit (the first on ties) in column-major logits
/// `z` (`[batch x classes]`, `z[c * batch + r]`), which the caller has checked are finite.
#[inline]
pub(crate) fn argmax_column_major(z: &[f32], batch: usize, classes: usize, r: usize) -> usize {
    // `get`: no panic path; an index past `z` (never, for the callers' logits) reads NaN,
    // which is never the larger.
    let at = |c: usize| z.get(c * batch + r).copied().unwrap_or(f32::NAN);
    (1..classes).fold(0, |best, c| if at(c) > at(best) { c } else { best })
}

/// `s[start..start + len]`, or an empty slice where that is out of range, which the flat
/// layout's constants rule out (the loops over it then do nothing). Slicing that compiles no
/// panic path, for offsets that depend on a layer index, which the optimiser does not fold
/// to constants in loops it keeps (opt-level "s").
#[inline(always)]
fn sub(s: &[f32], start: usize, len: usize) -> &[f32] {
    s.get(start..start.saturating_add(len)).unwrap_or(&[])
}

/// [`sub`], mutably.
#[inline(always)]
fn sub_mut(s: &mut [f32], start: usize, len: usize) -> &mut [f32] {
    match s.get_mut(start..start.saturating_add(len)) {
        Some(part) => part,
        None => &mut [],
    }
}

/// Mean softmax cross-entropy of a validated batch.
#[inline]
pub(crate) fn loss<M: Model>(params: &[f32], s: &mut ScratchParts<'_>, batch: Batch<'_, M::Storage>) -> f32 {
    let x = widen(batch.x, s.x32);
    forward::<M>(params, s.acts, x);
    let n = M::BATCH * M::CLASSES;
    softmax_xent(logits_of::<M>(s.acts), batch.y, batch.rows, M::BATCH, M::CLASSES, &mut s.delta[..n])
}

/// Forward and backward of a validated batch: fills `s.grads`, returns the loss.
#[inline(always)]
pub(crate) fn gradients<M: Model>(params: &[f32], s: &mut ScratchParts<'_>, batch: Batch<'_, M::Storage>) -> f32 {
    backward::<M, Packed>(params, s, batch, true)
}

/// Forward and backward of a validated batch: fills `s.grads` (all but the first layer's
/// weight gradients unless `first_weights`), returns the loss. The first layer's
/// dL/d(output) is left in [`first_delta`].
#[inline(always)]
fn backward<M: Model, P: Products>(
    params: &[f32],
    s: &mut ScratchParts<'_>,
    batch: Batch<'_, M::Storage>,
    first_weights: bool,
) -> f32 {
    let ScratchParts { grads, acts, delta, delta_below, x32 } = s;
    let (x32, xt) = split_x32::<M>(x32);
    let x = widen(batch.x, x32);
    forward_with::<M, P>(params, acts, x);
    let classes = M::CLASSES;
    let n = M::BATCH * classes;
    let y = &batch.y[..M::BATCH];
    let loss = if batch.rows == M::BATCH {
        softmax_xent(logits_of::<M>(acts), y, M::BATCH, M::BATCH, classes, &mut delta[..n])
    } else {
        softmax_xent(logits_of::<M>(acts), y, batch.rows, M::BATCH, classes, &mut delta[..n])
    };
    let (mut delta, mut delta_below): (&mut [f32], &mut [f32]) = (delta, delta_below);
    for l in (0..M::LAYERS.len() - 1).rev() {
        let slot = layer_slot(M::LAYERS, l);
        let input: &[f32] = if l == 0 {
            sub(x, 0, M::BATCH * M::FEATURES)
        } else {
            sub(acts, output_offset(M::LAYERS, M::BATCH, l - 1), M::BATCH * slot.fan_in)
        };
        let layer = sub_mut(grads, slot.w, slot.end() - slot.w);
        let (gw, gb) = layer.split_at_mut((slot.b - slot.w).min(layer.len()));
        let dz = sub(delta, 0, M::BATCH * slot.fan_out);
        bias_grads(dz, gb, M::BATCH, batch.rows);
        // A full batch passes `rows` as the constant it then is, so that the small
        // layers' loops unroll completely.
        if l > 0 || first_weights {
            // Room for the input's transpose: the batch's in `x32`, a layer output's in
            // `delta_below`, free until the input gradients below fill it.
            let scratch: &mut [f32] = if l == 0 { xt } else { delta_below };
            if batch.rows == M::BATCH {
                weight_grads::<M, P>(l, input, dz, gw, slot, M::BATCH, scratch);
            } else {
                weight_grads::<M, P>(l, input, dz, gw, slot, batch.rows, scratch);
            }
        }
        if l > 0 {
            let da = sub_mut(delta_below, 0, M::BATCH * slot.fan_in);
            input_grads::<M, P>(l, sub(params, slot.w, slot.b - slot.w), dz, da, input, slot);
            core::mem::swap(&mut delta, &mut delta_below);
        }
    }
    loss
}

/// The first layer's dL/d(output) after [`backward`]: in `delta` or `delta_below`, as the
/// number of layers above it (one swap each) makes it.
#[cfg(feature = "parallel")]
#[inline(always)]
fn first_delta<'s, M: Model>(delta: &'s [f32], delta_below: &'s [f32]) -> &'s [f32] {
    let n = M::BATCH * M::LAYERS[1];
    if (M::LAYERS.len() - 2) % 2 == 0 {
        &delta[..n]
    } else {
        &delta_below[..n]
    }
}

/// What the model knows of its values from one train step to the next, so that a step can
/// prove before touching anything that its update cannot overflow; [`UpdateBound::UNKNOWN`]
/// when the parameters or the optimizer's state were just set.
///
/// - `first`: plain SGD's upper bound on the magnitude of every weight of the first layer,
///   with which the update of that layer is applied in place, fused into the
///   weight-gradient product (see [`train_step`]);
/// - `tensors` (with `std`): the other optimizers' [`Maxima`] of the parameters and
///   moments, with which a step is [`optim::proven`] from the largest gradient alone,
///   without the pass that checks each value. The `no_std` core checks every step (on a
///   microcontroller the flash it saves outweighs a pass), and keeps no maxima.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct UpdateBound {
    first: f64,
    #[cfg(feature = "std")]
    tensors: Maxima,
}

impl UpdateBound {
    /// Nothing known: the next step checks every value before storing any.
    pub(crate) const UNKNOWN: Self = Self::fused(f64::INFINITY);

    /// The fused SGD path's bound `first`, nothing known of the tensors.
    const fn fused(first: f64) -> Self {
        UpdateBound {
            first,
            #[cfg(feature = "std")]
            tensors: Maxima::UNKNOWN,
        }
    }

    /// What a step of the other optimizers leaves: the maxima `tensors` of what it stored.
    fn after_update(tensors: Maxima) -> Self {
        let _ = tensors;
        UpdateBound {
            first: f64::INFINITY,
            #[cfg(feature = "std")]
            tensors,
        }
    }

    /// Whether the next step of the other optimizers is proven from what is known (see
    /// `tensors`), or must be checked; `g_max` computes the largest gradient.
    #[inline(always)]
    #[cfg_attr(not(feature = "std"), allow(clippy::extra_unused_type_parameters))]
    fn proves<O: Optimizer>(&self, c: &optim::Coeffs, limit: f32, g_max: impl FnOnce() -> f32) -> bool {
        #[cfg(feature = "std")]
        return self.tensors.is_known() && optim::proven::<O>(c, &self.tensors, g_max(), limit);
        #[cfg(not(feature = "std"))]
        {
            let _ = (c, limit, g_max);
            false
        }
    }
}

/// The optimizer's state as a train step updates it: the moment buffers
/// ([`Optimizer::MOMENTS`] times the parameter count), the count of steps taken, and the
/// [`UpdateBound`] (plain SGD's bound on the first layer's weights; the other optimizers'
/// maxima of the parameters and moments).
pub(crate) struct OptimState<'a> {
    pub(crate) moments: &'a mut [f32],
    pub(crate) step: &'a mut u32,
    pub(crate) bound: &'a mut UpdateBound,
}

/// One step of optimizer `step` (its hyperparameters, the learning rate this step's) on a
/// validated batch: the loss before it; a non-finite loss leaves the parameters and the
/// state unchanged and is [`Error::NonFiniteLoss`], an update that would store a
/// non-finite parameter or moment leaves them unchanged and is [`Error::UpdateOverflow`].
///
/// Plain SGD (no weight decay) computes `p - lr · g` for every parameter into the gradient
/// buffer with the check folded in ([`sgd_values`]), then copies. With the feature
/// `parallel`, an `f32` model whose first layer goes through the GEMM computes that layer's
/// update `W0 - lr · (xᵀ · dz)` as one product added to `W0`, instead of writing the
/// gradient out and reading it back; the state's `bound` decides where the result goes
/// first (see [`UpdateBound`]). Either way the same product computes the same bits. Every
/// other optimizer computes the whole gradient, then checks ([`optim::first_refused`]) and
/// applies ([`optim::apply`]) its update; the check is skipped when the step is
/// [`optim::proven`] from the maxima the last step's update left and the largest gradient
/// (which costs one pass over the gradients instead of one over the parameters, gradients
/// and moments).
#[inline(always)]
pub(crate) fn train_step<M: Model, P: Products>(
    params: &mut [f32],
    s: &mut ScratchParts<'_>,
    batch: Batch<'_, M::Storage>,
    step: M::Optimizer,
    state: OptimState<'_>,
) -> Result<f32> {
    let plain = step.is_plain_sgd();
    #[cfg(feature = "parallel")]
    if plain && fuses_first_update::<M>() {
        return train_step_fused::<M, P>(params, s, batch, step.lr(), state.bound);
    }
    let loss = backward::<M, P>(params, s, batch, true);
    if !loss.is_finite() {
        return Err(Error::NonFiniteLoss { loss });
    }
    let n = <M::Params as Params>::LEN;
    if plain {
        if !sgd_values::<M::Storage>(&params[..n], &mut s.grads[..n], step.lr()) {
            return Err(overflow_in::<M::Storage>(M::LAYERS, &s.grads[..n]));
        }
        params[..n].copy_from_slice(&s.grads[..n]);
        // The parameters changed without their maxima (an SGD whose weight decay is set
        // again later must not rely on older ones).
        *state.bound = UpdateBound::fused(state.bound.first);
        return Ok(loss);
    }
    let t = state.step.saturating_add(1);
    let c = step.coeffs(t);
    let moments = &mut state.moments[..<M::Optimizer as Optimizer>::MOMENTS * n];
    let (params, grads) = (&mut params[..n], &s.grads[..n]);
    let limit = update_limit::<M::Storage>();
    // From the last step's maxima and this step's largest gradient (one pass over the
    // gradients, against the check's pass over the parameters, gradients and moments).
    if !state.bound.proves::<M::Optimizer>(&c, limit, || optim_parts::max_magnitude(grads)) {
        if let Some(k) = optim_parts::first_refused::<M::Optimizer>(&c, params, grads, moments, limit) {
            return Err(update_overflow::<M::Storage>(M::LAYERS, k));
        }
    }
    let tensors = optim_parts::apply::<M::Optimizer, M::Storage>(&c, params, grads, moments, P::FMA);
    *state.step = t;
    // The fused SGD path's bound no longer holds (the weight decay may change at run time).
    *state.bound = UpdateBound::after_update(tensors);
    Ok(loss)
}

/// [`optim::first_refused`], [`optim::apply`] and [`optim::max_magnitude`] for
/// [`train_step`]: with the feature `parallel` and at least 2^16 parameters, in one part per
/// thread over the worker pool (each part compiled for AVX-512 or AVX2, with FMA, where the
/// processor has them; the update then divides by Adam's bias correction with
/// [`optim::div_fma`]). All are elementwise and their arithmetic (`+`, `·`, `/`, `√`, and
/// `div_fma`, the division's bits) is correctly rounded at every width, so the parts give
/// the bits the whole slice gives; the maxima are the largest of the parts'.
mod optim_parts {
    use crate::math::optim::{self, Coeffs, Maxima, Optimizer};
    use crate::model::StorageElement;

    /// Parameters from which the parts run on the pool: a pass over 2^16 parameters and
    /// their moments (about a megabyte) takes tens of microseconds, the hand-off to a hot
    /// worker under one.
    #[cfg(feature = "parallel")]
    const PARALLEL_MIN: usize = 1 << 16;

    /// One part's parameters, gradients and moments.
    #[cfg(feature = "parallel")]
    type Part<'a> = (&'a mut [f32], &'a [f32], &'a mut [f32], &'a mut [f32]);

    /// Splits `[0, n)` into `parts` ranges whose starts are multiples of 64 (whole vectors).
    #[cfg(feature = "parallel")]
    fn range(n: usize, parts: usize, k: usize) -> core::ops::Range<usize> {
        let per = n.div_ceil(parts).next_multiple_of(64);
        (k * per).min(n)..((k + 1) * per).min(n)
    }

    /// [`optim::first_refused`] (the first refused index over the whole slice).
    #[inline(always)]
    pub(super) fn first_refused<O: Optimizer>(
        c: &Coeffs,
        params: &[f32],
        grads: &[f32],
        moments: &[f32],
        limit: f32,
    ) -> Option<usize> {
        let n = params.len();
        #[cfg(feature = "parallel")]
        if n >= PARALLEL_MIN && crate::pool::threads() > 1 {
            use core::sync::atomic::{AtomicUsize, Ordering};
            let (parts, width) = (crate::pool::threads(), widest());
            let first = AtomicUsize::new(usize::MAX);
            let (m, v) = moments.split_at(moments.len().min(n));
            crate::pool::run(parts, &|k| {
                let r = range(n, parts, k);
                let (m, v) = (m.get(r.clone()).unwrap_or(&[]), v.get(r.clone()).unwrap_or(&[]));
                if let Some(j) = first_refused_part::<O>(width, c, &params[r.clone()], &grads[r.clone()], m, v, limit) {
                    first.fetch_min(r.start + j, Ordering::Relaxed);
                }
            });
            let k = first.into_inner();
            return (k != usize::MAX).then_some(k);
        }
        let (m, v) = moments.split_at(moments.len().min(n));
        optim::first_refused_split::<O>(c, params, grads, m, v, limit)
    }

    /// [`optim::max_magnitude`] of the gradients (the largest over the parts).
    #[inline(always)]
    pub(super) fn max_magnitude(grads: &[f32]) -> f32 {
        let n = grads.len();
        #[cfg(feature = "parallel")]
        if n >= PARALLEL_MIN && crate::pool::threads() > 1 {
            use core::sync::atomic::{AtomicU32, Ordering};
            let (parts, width) = (crate::pool::threads(), widest());
            // Magnitudes order as their bits do (see `optim::magnitude_bits`).
            let max = AtomicU32::new(0);
            crate::pool::run(parts, &|k| {
                let part = max_magnitude_part(width, &grads[range(n, parts, k)]);
                max.fetch_max(part.to_bits(), Ordering::Relaxed);
            });
            return f32::from_bits(max.into_inner());
        }
        optim::max_magnitude(&grads[..n])
    }

    /// [`optim::apply`], each new parameter rounded to the storage `T`: the [`Maxima`] of
    /// what it stored (the largest over the parts). With `fma` (the caller is compiled with
    /// fused multiply-adds), on one thread too, [`optim::apply_split_fma`].
    #[inline(always)]
    pub(super) fn apply<O: Optimizer, T: StorageElement>(
        c: &Coeffs,
        params: &mut [f32],
        grads: &[f32],
        moments: &mut [f32],
        fma: bool,
    ) -> Maxima {
        let n = params.len();
        let (m, v) = moments.split_at_mut(moments.len().min(n));
        #[cfg(feature = "parallel")]
        if n >= PARALLEL_MIN && crate::pool::threads() > 1 {
            let (parts, width) = (crate::pool::threads(), widest());
            let (m_len, v_len) = (m.len(), v.len());
            // One uncontended lock a part: each part takes its own disjoint slices.
            let mut slots: std::vec::Vec<std::sync::Mutex<Part<'_>>> = std::vec::Vec::with_capacity(parts);
            let (mut p_rest, mut g_rest, mut m_rest, mut v_rest) = (params, grads, m, v);
            for k in 0..parts {
                let r = range(n, parts, k);
                let len = r.len();
                let (p, pr) = core::mem::take(&mut p_rest).split_at_mut(len);
                let (g, gr) = g_rest.split_at(len);
                let (mm, mr) = core::mem::take(&mut m_rest).split_at_mut(len.min(m_len.saturating_sub(r.start)));
                let (vv, vr) = core::mem::take(&mut v_rest).split_at_mut(len.min(v_len.saturating_sub(r.start)));
                (p_rest, g_rest, m_rest, v_rest) = (pr, gr, mr, vr);
                slots.push(std::sync::Mutex::new((p, g, mm, vv)));
            }
            use core::sync::atomic::{AtomicU32, Ordering};
            // Magnitudes order as their bits do (see `optim::magnitude_bits`).
            let maxima = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
            crate::pool::run(parts, &|k| {
                let mut slot = slots[k].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (p, g, m, v) = &mut *slot;
                let part = apply_part::<O, T>(width, c, p, g, m, v);
                for (max, x) in maxima.iter().zip([part.params, part.m, part.v]) {
                    max.fetch_max(x.to_bits(), Ordering::Relaxed);
                }
            });
            let [p, m, v] = maxima.map(|max| f32::from_bits(max.into_inner()));
            return Maxima { params: p, m, v };
        }
        #[cfg(feature = "std")]
        if fma {
            return optim::apply_split_fma::<O>(c, params, grads, m, v, T::round_f32);
        }
        let _ = fma;
        optim::apply_split::<O>(c, params, grads, m, v, T::round_f32)
    }

    /// One part of [`max_magnitude`], compiled for `width`.
    #[cfg(feature = "parallel")]
    fn max_magnitude_part(width: Width, g: &[f32]) -> f32 {
        match width {
            // SAFETY: a `Width` names a variant only where the processor has its features.
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => unsafe { wide::max_magnitude_avx512(g) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => unsafe { wide::max_magnitude_avx2(g) },
            Width::Baseline => optim::max_magnitude(g),
        }
    }

    /// One part of [`first_refused`], compiled for `width`.
    #[cfg(feature = "parallel")]
    fn first_refused_part<O: Optimizer>(
        width: Width,
        c: &Coeffs,
        p: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        limit: f32,
    ) -> Option<usize> {
        match width {
            // SAFETY: a `Width` names a variant only where the processor has its features.
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => unsafe { wide::first_refused_avx512::<O>(c, p, g, m, v, limit) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => unsafe { wide::first_refused_avx2::<O>(c, p, g, m, v, limit) },
            Width::Baseline => optim::first_refused_split::<O>(c, p, g, m, v, limit),
        }
    }

    /// One part of [`apply`], compiled for `width`.
    #[cfg(feature = "parallel")]
    fn apply_part<O: Optimizer, T: StorageElement>(
        width: Width,
        c: &Coeffs,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Maxima {
        match width {
            // SAFETY: a `Width` names a variant only where the processor has its features.
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => unsafe { wide::apply_avx512::<O, T>(c, p, g, m, v) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => unsafe { wide::apply_avx2::<O, T>(c, p, g, m, v) },
            Width::Baseline => optim::apply_split::<O>(c, p, g, m, v, T::round_f32),
        }
    }

    /// The vectors of the parts' loops ([`wide`]'s variants, all with FMA). A `Width` names
    /// a variant only where the processor has its features: it is made by [`Width::of`] from
    /// an extension no wider than [`crate::simd::detected`] ([`widest`], and
    /// `Width::available` for tests) alone.
    #[cfg(feature = "parallel")]
    #[derive(Clone, Copy, Debug)]
    enum Width {
        /// AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Avx512,
        /// AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Avx2,
        /// The loops compiled for the build's target alone.
        Baseline,
    }

    #[cfg(feature = "parallel")]
    impl Width {
        /// The variant of `simd`, an extension the processor has (at most
        /// [`crate::simd::detected`], whose features are a superset of the variants').
        fn of(simd: crate::simd::Simd) -> Width {
            #[cfg(target_arch = "x86_64")]
            match simd {
                crate::simd::Simd::Avx512 => return Width::Avx512,
                crate::simd::Simd::Avx2 => return Width::Avx2,
                crate::simd::Simd::Baseline => {}
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd;
            Width::Baseline
        }

        /// Every width this processor runs, the narrowest first.
        #[cfg(test)]
        pub(super) fn available() -> std::vec::Vec<Width> {
            let best = crate::simd::detected();
            crate::simd::Simd::ALL.into_iter().filter(|&s| s <= best).map(Width::of).collect()
        }
    }

    /// The parts' [`Width`]: the extension the `f32` paths run ([`crate::simd::chosen`]: the
    /// processor's widest, lowered by `TENSORBRIDGE_SIMD`).
    #[cfg(feature = "parallel")]
    #[inline]
    fn widest() -> Width {
        Width::of(crate::simd::chosen())
    }

    /// The parts' loops compiled with AVX-512F or AVX2 (the same bits: see [`super::optim_parts`]).
    #[cfg(all(feature = "parallel", target_arch = "x86_64"))]
    mod wide {
        use crate::math::optim::{self, Coeffs, Maxima, Optimizer};
        use crate::model::StorageElement;

        macro_rules! wide {
            ($refused:ident, $apply:ident, $max:ident, $features:literal) => {
                /// # Safety
                /// The processor must have the target features.
                #[target_feature(enable = $features)]
                pub(super) unsafe fn $refused<O: Optimizer>(
                    c: &Coeffs,
                    p: &[f32],
                    g: &[f32],
                    m: &[f32],
                    v: &[f32],
                    limit: f32,
                ) -> Option<usize> {
                    optim::first_refused_split::<O>(c, p, g, m, v, limit)
                }

                /// # Safety
                /// The processor must have the target features.
                #[target_feature(enable = $features)]
                pub(super) unsafe fn $apply<O: Optimizer, T: StorageElement>(
                    c: &Coeffs,
                    p: &mut [f32],
                    g: &[f32],
                    m: &mut [f32],
                    v: &mut [f32],
                ) -> Maxima {
                    optim::apply_split_fma::<O>(c, p, g, m, v, T::round_f32)
                }

                /// # Safety
                /// The processor must have the target features.
                #[target_feature(enable = $features)]
                pub(super) unsafe fn $max(g: &[f32]) -> f32 {
                    optim::max_magnitude(g)
                }
            };
        }
        wide!(first_refused_avx512, apply_avx512, max_magnitude_avx512, "avx512f,avx2,fma");
        wide!(first_refused_avx2, apply_avx2, max_magnitude_avx2, "avx2,fma");
    }

    /// Each variant of the parts' loops this processor runs (AVX-512, AVX2, as built; which
    /// one `train_step` runs depends on the processor and `TENSORBRIDGE_SIMD`) gives the
    /// whole slice's bits: every optimizer's update and maxima, in `f32` and rounded to
    /// `f16`, the largest gradient and the first refused index.
    #[cfg(all(test, feature = "parallel"))]
    mod tests {
        use super::*;
        use crate::math::optim::{Adam, AdamW, Momentum, Sgd};

        fn bits(v: &[f32]) -> std::vec::Vec<u32> {
            v.iter().map(|x| x.to_bits()).collect()
        }

        /// `O`'s update over `p` and its moments (`moments` of them) by each width, against
        /// the core's whole-slice update, stored as `T`.
        fn same<O: Optimizer, T: StorageElement>(c: &Coeffs, p: &[f32], g: &[f32], mv: &[f32], moments: usize) {
            let n = p.len();
            let mv = &mv[..moments * n];
            let (mut want_p, mut want_mv) = (p.to_vec(), mv.to_vec());
            let want = optim::apply::<O>(c, &mut want_p, g, &mut want_mv, T::round_f32);
            for width in Width::available() {
                let (mut got_p, mut got_mv) = (p.to_vec(), mv.to_vec());
                let (m, v) = got_mv.split_at_mut(n.min(moments * n));
                let got = apply_part::<O, T>(width, c, &mut got_p, g, m, v);
                assert_eq!((bits(&got_p), bits(&got_mv)), (bits(&want_p), bits(&want_mv)), "{} {width:?}", O::NAME);
                assert_eq!(got, want, "{} {width:?}", O::NAME);
            }
        }

        #[test]
        fn every_width_gives_the_whole_slices_bits() {
            // Not a multiple of any vector's lanes: every loop's tail runs too.
            let n = 4_099;
            let mut rng = crate::rng::Rng::new(17);
            let mut values =
                |scale: f64| -> std::vec::Vec<f32> { (0..n).map(|_| (rng.normal() * scale) as f32).collect() };
            let (p, g, m) = (values(1.0), values(0.1), values(0.01));
            let v: std::vec::Vec<f32> = values(0.001).iter().map(|x| x * x).collect();
            let mv = [m, v].concat();
            let sgd = Sgd { lr: 0.1, weight_decay: 1e-3 };
            let momentum = Momentum { momentum: 0.9, nesterov: true, weight_decay: 1e-4, ..Momentum::default() };
            let adam = Adam { weight_decay: 1e-2, ..Adam::default() }.with_lr(0.01);
            let adamw = AdamW::default().with_lr(0.01);
            same::<Sgd, f32>(&sgd.coeffs(1), &p, &g, &mv, 0);
            same::<Momentum, f32>(&momentum.coeffs(4), &p, &g, &mv, 1);
            same::<Adam, f32>(&adam.coeffs(3), &p, &g, &mv, 2);
            same::<AdamW, f32>(&adamw.coeffs(9), &p, &g, &mv, 2);
            same::<Adam, half::f16>(&adam.coeffs(3), &p, &g, &mv, 2);
            same::<Momentum, half::f16>(&momentum.coeffs(2), &p, &g, &mv, 1);
            let (mm, vv) = mv.split_at(n);
            for width in Width::available() {
                assert_eq!(max_magnitude_part(width, &g), optim::max_magnitude(&g), "{width:?}");
                let c = Adam::default().coeffs(1);
                for bad in [None, Some(n - 1), Some(5), Some(2_048)] {
                    let mut g = g.clone();
                    if let Some(k) = bad {
                        g[k] = f32::INFINITY;
                    }
                    let got = first_refused_part::<Adam>(width, &c, &p, &g, mm, vv, f32::MAX);
                    assert_eq!(got, bad, "{width:?}");
                    assert_eq!(max_magnitude_part(width, &g).is_finite(), bad.is_none(), "{width:?}");
                }
            }
        }
    }
}

/// Whether [`train_step`] fuses the first layer's update into its weight-gradient product:
/// `f32` storage (an `f16` update rounds every value to the storage first), a first layer
/// large enough for the GEMM.
#[cfg(feature = "parallel")]
#[inline(always)]
const fn fuses_first_update<M: Model>() -> bool {
    !M::Storage::IS_F16 && M::BATCH * M::LAYERS[0] * M::LAYERS[1] >= GEMM_MIN_MACS
}

/// Magnitudes below this stay finite through one more fused update's rounding: the update
/// is known to fit when `bound + growth` stays under it.
#[cfg(feature = "parallel")]
const FUSED_LIMIT: f64 = f32::MAX as f64 / 4.0;

/// [`train_step`] with the first layer's update fused into its weight-gradient product.
///
/// `|dL/dW0[i, o]| = |Σ_r x[r, i] · dz[r, o]| <= rows · max|x| · max|dz|`, so the update
/// moves no weight by more than `growth = 2 · lr · rows · max|x| · max|dz|` (the factor 2
/// covers the product's rounding; computed in `f64`, as the bound is). When
/// `bound + growth` is finite and below [`FUSED_LIMIT`], no first-layer weight can
/// overflow: the other parameters are checked and updated as usual, then the product
/// updates `W0` in place. Otherwise the same product goes into a copy of `W0`
/// (in the gradient buffer), which is checked with the rest before anything is stored, and
/// `bound` becomes the exact maximum. NaN anywhere makes the bound NaN: the checked way.
#[cfg(feature = "parallel")]
#[inline(always)]
fn train_step_fused<M: Model, P: Products>(
    params: &mut [f32],
    s: &mut ScratchParts<'_>,
    batch: Batch<'_, M::Storage>,
    lr: f32,
    bound: &mut UpdateBound,
) -> Result<f32> {
    let loss = backward::<M, P>(params, s, batch, false);
    if !loss.is_finite() {
        return Err(Error::NonFiniteLoss { loss });
    }
    let n = <M::Params as Params>::LEN;
    let first = layer_slot(M::LAYERS, 0);
    let rows = batch.rows;
    let ScratchParts { grads, delta, delta_below, x32, .. } = s;
    let (x32, xt) = split_x32::<M>(x32);
    let x = &widen(batch.x, x32)[..M::BATCH * M::FEATURES];
    let dz = first_delta::<M>(delta, delta_below);
    // In f64, where no product of these overflows.
    let growth = 2.0 * f64::from(lr) * rows as f64 * f64::from(P::max_abs(x)) * f64::from(P::max_abs(dz));
    let (w0, rest) = params[..n].split_at_mut(first.b);
    let (new_w0, new_rest) = grads[..n].split_at_mut(first.b);
    let known = bound.first + growth;
    if known < FUSED_LIMIT {
        if !sgd_values::<M::Storage>(rest, new_rest, lr) {
            return Err(overflow_in::<M::Storage>(M::LAYERS, &grads[..n]));
        }
        rest.copy_from_slice(new_rest);
        update_first::<M, P>(w0, x, dz, xt, rows, lr);
        *bound = UpdateBound::fused(known);
    } else {
        new_w0.copy_from_slice(w0);
        update_first::<M, P>(new_w0, x, dz, xt, rows, lr);
        let rest_fits = sgd_values::<M::Storage>(rest, new_rest, lr);
        let new = &grads[..n];
        if !(rest_fits && new[..first.b].iter().all(|v| v.is_finite())) {
            return Err(overflow_in::<M::Storage>(M::LAYERS, new));
        }
        params[..n].copy_from_slice(new);
        *bound = UpdateBound::fused(f64::from(P::max_abs(&params[..first.b])));
    }
    Ok(loss)
}

/// `w0 += -lr · xᵀ · dz` over the first `rows` rows: the first layer's fused update, through
/// `P`'s product (with `xt` as room for the transpose) or the `gemm` crate.
#[cfg(feature = "parallel")]
#[inline(always)]
fn update_first<M: Model, P: Products>(w0: &mut [f32], x: &[f32], dz: &[f32], xt: &mut [f32], rows: usize, lr: f32) {
    let first = layer_slot(M::LAYERS, 0);
    let p = Product::WeightGrads { a: x, dz, gw: &mut *w0, rows, scale: Some(-lr), scratch: xt };
    if !P::fixed::<M>(0, p) {
        let xt = View { data: x, rows, cols: first.fan_in, rs: 1, cs: M::BATCH }.t();
        let dzv = View { data: dz, rows, cols: first.fan_out, rs: 1, cs: M::BATCH };
        let macs = rows * first.fan_in * first.fan_out;
        gemm(w0, first.fan_in, first.fan_out, xt, dzv, macs, Dst::Add(-lr));
    }
}

/// The largest magnitude in `v` (0 when empty), or NaN if `v` holds a NaN or an infinity,
/// in `f32` arithmetic ([`Packed`]'s [`Products::max_abs`]).
#[cfg(feature = "parallel")]
#[inline(always)]
fn max_abs_f32(v: &[f32]) -> f32 {
    // Independent lanes, so that it vectorises: the maxima as selects (which skip NaN), and
    // `a · 0` summed, which is 0 for finite values and NaN from the first non-finite one.
    const LANES: usize = 16;
    let (mut max, mut poison) = ([0.0f32; LANES], [0.0f32; LANES]);
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            let a = c[k].abs();
            max[k] = if a > max[k] { a } else { max[k] };
            poison[k] += a * 0.0;
        }
    }
    for (k, x) in tail.iter().enumerate() {
        let a = x.abs();
        max[k] = if a > max[k] { a } else { max[k] };
        poison[k] += a * 0.0;
    }
    max.iter().fold(0.0f32, |m, &a| if a > m { a } else { m }) + poison.iter().sum::<f32>()
}

/// `z = act(a · W + b)` for one layer. `a` is `[batch x in]`, `z`
/// `[batch x out]`, both column-major; column `o` of `z` is `b[o] + Σ_i W[i, o] · a[:, i]`.
#[inline(always)]
fn dense_forward<M: Model, P: Products>(
    l: usize,
    a: &[f32],
    params: &[f32],
    slot: LayerSlot,
    z: &mut [f32],
    act: Activation,
) {
    #[cfg(not(feature = "parallel"))]
    let _ = l;
    let batch = M::BATCH;
    let w = sub(params, slot.w, slot.b - slot.w);
    let bias = sub(params, slot.b, slot.fan_out);
    #[cfg(feature = "parallel")]
    {
        let macs = batch * slot.fan_in * slot.fan_out;
        if macs >= GEMM_MIN_MACS {
            // The fixed-size product adds the bias (and the activation) as it stores z.
            if P::fixed::<M>(l, Product::Forward { a, w, bias, act, z: &mut *z }) {
                return;
            }
            // z = a · W, then the bias and the activation in one pass over z
            let a = View::col_major(a, batch, slot.fan_in);
            let w = View::col_major(w, slot.fan_in, slot.fan_out);
            gemm(z, batch, slot.fan_out, a, w, macs, Dst::Set);
            for (zc, &bo) in z.chunks_exact_mut(batch).zip(bias) {
                match act {
                    Activation::Identity => {
                        for v in zc {
                            *v += bo;
                        }
                    }
                    Activation::Relu => {
                        for v in zc {
                            *v = Activation::Relu.apply(*v + bo);
                        }
                    }
                    _ => {
                        for v in zc {
                            *v = act.apply(*v + bo);
                        }
                    }
                }
            }
            return;
        }
    }
    // Small layers: loops over constant bounds, which LLVM unrolls completely at the
    // smallest shapes. Output columns go in pairs, each in blocks of 8 rows whose 16 sums
    // stay in registers and share the loads of the input (a Cortex-M4F at opt-level "s"
    // otherwise loads and stores the sum at every multiply-add); each sum is still `b[o]`
    // then the inputs in order, and the activation is applied as the block is stored
    // rather than in a second pass over z (on the Cortex-M4F that pass cost 8 instructions
    // a value, about a third of the big model's non-multiply-add work).
    let fan_in = slot.fan_in;
    if batch < FORWARD_ROWS {
        // Fewer rows than a block: a column at a time, its sums in place, which LLVM unrolls
        // and vectorises completely at these sizes on the host.
        for ((wo, zc), &bo) in w.chunks_exact(fan_in.max(1)).zip(z.chunks_exact_mut(batch)).zip(bias) {
            zc.fill(bo);
            for (&wio, ac) in wo.iter().zip(a.chunks_exact(batch)) {
                for (zr, &ar) in zc.iter_mut().zip(ac) {
                    *zr += ar * wio;
                }
            }
            act.apply_in_place(zc);
        }
        return;
    }
    let mut pairs = w.chunks_exact((2 * fan_in).max(1)).zip(z.chunks_exact_mut(2 * batch)).zip(bias.chunks_exact(2));
    for ((w2, z2), b2) in &mut pairs {
        let (Some((w0, w1)), Some((z0, z1))) = (w2.split_at_checked(fan_in), z2.split_at_mut_checked(batch)) else {
            break;
        };
        for (k, (out0, out1)) in z0.chunks_exact_mut(FORWARD_ROWS).zip(z1.chunks_exact_mut(FORWARD_ROWS)).enumerate() {
            dot_rows8x2(a, batch, k * FORWARD_ROWS, [w0, w1], b2, act, [out0, out1]);
        }
        // The rows past the last block (none when the batch is a multiple of 8, which the
        // compiler sees: the loop then is not compiled).
        if batch % FORWARD_ROWS != 0 {
            for ((wo, zc), &bo) in [w0, w1].into_iter().zip([z0, z1]).zip(b2) {
                for (r, zr) in zc.iter_mut().enumerate().skip(batch - batch % FORWARD_ROWS) {
                    *zr = act.apply(dot_row(a, batch, r, wo, bo));
                }
            }
        }
    }
    // The last column of an odd count.
    let done = slot.fan_out - slot.fan_out % 2;
    let rest = w.chunks_exact(fan_in).zip(z.chunks_exact_mut(batch)).zip(bias).skip(done);
    for ((wo, zc), &bo) in rest {
        for (k, out) in zc.chunks_exact_mut(FORWARD_ROWS).enumerate() {
            dot_rows8(a, batch, k * FORWARD_ROWS, wo, bo, act, out);
        }
        if batch % FORWARD_ROWS != 0 {
            for (r, zr) in zc.iter_mut().enumerate().skip(batch - batch % FORWARD_ROWS) {
                *zr = act.apply(dot_row(a, batch, r, wo, bo));
            }
        }
    }
}

/// Rows of [`dense_forward`]'s register blocks ([`dot_rows8`]).
const FORWARD_ROWS: usize = 8;

/// `out[k] = act(bias + Σ_i a[i, r0 + k] · wo[i])` for the 8 rows from `r0` (`a`
/// column-major with `batch` rows), summed in `i`'s order in eight named accumulators: at
/// opt-level "s" an array of them would live in memory. The activation is applied to the
/// sums in registers as they are stored ([`activate8`]), not in a later pass over `out`:
/// the same function of the same sums, so the same bits.
#[inline(always)]
fn dot_rows8(a: &[f32], batch: usize, r0: usize, wo: &[f32], bias: f32, act: Activation, out: &mut [f32]) {
    let [mut s0, mut s1, mut s2, mut s3, mut s4, mut s5, mut s6, mut s7] = [bias; 8];
    for (col, &wi) in a.chunks_exact(batch).zip(wo) {
        let Some(&[c0, c1, c2, c3, c4, c5, c6, c7]) = col.get(r0..r0 + 8) else { break };
        let c = [c0, c1, c2, c3, c4, c5, c6, c7];
        s0 += c[0] * wi;
        s1 += c[1] * wi;
        s2 += c[2] * wi;
        s3 += c[3] * wi;
        s4 += c[4] * wi;
        s5 += c[5] * wi;
        s6 += c[6] * wi;
        s7 += c[7] * wi;
    }
    if let Ok(out) = <&mut [f32; 8]>::try_from(out) {
        *out = activate8(act, [s0, s1, s2, s3, s4, s5, s6, s7]);
    }
}

/// [`dot_rows8`] for two output columns at once (weights `w[0]`, `w[1]`, biases `b[0]`,
/// `b[1]`), each input value loaded once for both: 16 accumulators.
#[inline(always)]
fn dot_rows8x2(a: &[f32], batch: usize, r0: usize, w: [&[f32]; 2], b: &[f32], act: Activation, out: [&mut [f32]; 2]) {
    let (b0, b1) = match b {
        [b0, b1, ..] => (*b0, *b1),
        _ => return,
    };
    let [mut s0, mut s1, mut s2, mut s3, mut s4, mut s5, mut s6, mut s7] = [b0; 8];
    let [mut t0, mut t1, mut t2, mut t3, mut t4, mut t5, mut t6, mut t7] = [b1; 8];
    for ((col, &u), &v) in a.chunks_exact(batch).zip(w[0]).zip(w[1]) {
        let Some(&[c0, c1, c2, c3, c4, c5, c6, c7]) = col.get(r0..r0 + 8) else { break };
        s0 += c0 * u;
        s1 += c1 * u;
        s2 += c2 * u;
        s3 += c3 * u;
        s4 += c4 * u;
        s5 += c5 * u;
        s6 += c6 * u;
        s7 += c7 * u;
        t0 += c0 * v;
        t1 += c1 * v;
        t2 += c2 * v;
        t3 += c3 * v;
        t4 += c4 * v;
        t5 += c5 * v;
        t6 += c6 * v;
        t7 += c7 * v;
    }
    let [o0, o1] = out;
    if let (Ok(o0), Ok(o1)) = (<&mut [f32; 8]>::try_from(o0), <&mut [f32; 8]>::try_from(o1)) {
        *o0 = activate8(act, [s0, s1, s2, s3, s4, s5, s6, s7]);
        *o1 = activate8(act, [t0, t1, t2, t3, t4, t5, t6, t7]);
    }
}

/// [`Activation::apply`] on each of 8 sums held in registers, the activation matched once
/// for the 8 and each value named, so that at opt-level "s" they stay in registers (a loop
/// over the array would put it in memory).
#[inline(always)]
fn activate8(act: Activation, v: [f32; 8]) -> [f32; 8] {
    #[inline(always)]
    fn each(v: [f32; 8], f: impl Fn(f32) -> f32) -> [f32; 8] {
        let [v0, v1, v2, v3, v4, v5, v6, v7] = v;
        [f(v0), f(v1), f(v2), f(v3), f(v4), f(v5), f(v6), f(v7)]
    }
    match act {
        Activation::Identity => v,
        Activation::Relu => each(v, |x| Activation::Relu.apply(x)),
        _ => each(v, |x| act.apply(x)),
    }
}

/// [`dot_rows8`] for the one row `r`.
#[inline(always)]
fn dot_row(a: &[f32], batch: usize, r: usize, wo: &[f32], bias: f32) -> f32 {
    a.chunks_exact(batch).zip(wo).fold(bias, |s, (col, &wi)| s + col.get(r).copied().unwrap_or(0.0) * wi)
}

/// Mean softmax cross-entropy over the first `rows` rows of the logits `z` and its dL/dz
/// ([`loss::softmax_xent`], the formula's one home), with the core's [`exp`].
#[inline(always)]
pub(crate) fn softmax_xent(z: &[f32], y: &[u32], rows: usize, batch: usize, classes: usize, dz: &mut [f32]) -> f32 {
    loss::softmax_xent::<CoreExp>(z, y, rows, batch, classes, dz)
}

/// The core's exponentials, for [`loss::softmax_xent`].
pub(crate) struct CoreExp;

impl loss::Exp for CoreExp {
    const VECTOR_MIN: usize = VECTOR_SOFTMAX_MIN;

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        exp(x)
    }

    #[inline(always)]
    fn exp_lanes(x: f32) -> f32 {
        exp_branch_free(x)
    }
}

/// Logits (`batch * classes`) from which [`softmax_xent`] takes its exponentials in a loop
/// that vectorises. Measured (train steps, AVX-512 machine): the vector loop took the
/// digits step (320 logits) from 6.1 to 5.2 us, and made the seed (4) and iris (48) steps
/// 10% and 7% slower than the scalar loop.
pub(crate) const VECTOR_SOFTMAX_MIN: usize = 128;

/// `e^x` for `f32`, in `f32` arithmetic only (a single-precision FPU, such as a
/// Cortex-M4F's, runs it in hardware): within two units in the last place of the exact
/// value (checked against `f64::exp` in the tests), the same bits on every platform and in
/// the `no_std` core. In the way of Cephes' `expf`: `x = k·ln2 + r` with `|r| <= ln2/2`
/// (Cody-Waite: `ln2` in two parts, the first exact in `k·ln2`), `e^r` a degree-7 polynomial,
/// and `2^k` applied as two normal factors, so that subnormal results round once.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // One predictable branch on the hot path; NaN fails it too.
    if !(x > -104.0 && x <= 89.0) {
        return exp_out_of_range_cold(x);
    }
    exp_in_range(x)
}

/// [`exp`], bit for bit, without a branch (the range is handled by selects), so that a loop
/// of calls vectorises.
#[inline(always)]
pub(crate) fn exp_branch_free(x: f32) -> f32 {
    // NaN fails the test too.
    let in_range = x > -104.0 && x <= 89.0;
    let r = exp_in_range(if in_range { x } else { 0.0 });
    if in_range {
        r
    } else {
        exp_out_of_range(x)
    }
}

/// [`exp`] for `x` in `(-104, 89]`.
#[inline(always)]
fn exp_in_range(x: f32) -> f32 {
    // Round to nearest through the 1.5·2^23 trick (`f32::round` is not in `core`): the sum's
    // low mantissa bits hold k itself, read without a float-to-int conversion.
    const SHIFT: f32 = 12_582_912.0;
    // ln 2 = LN2_HI + LN2_LO; LN2_HI = 355/512 has 9 significant bits, so that k · LN2_HI is
    // exact for |k| < 2^15 and x - k · LN2_HI is exact too (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let shifted = x * core::f32::consts::LOG2_E + SHIFT;
    let kf = shifted - SHIFT;
    let k = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32; // in -150..=128
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // e^r = 1 + r + r^2 · p(r) on |r| <= ln2/2 (Cephes expf's minimax coefficients).
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // 2^k = 2^k1 · 2^k2, both normal (k1, k2 in -75..=64).
    let k1 = k >> 1;
    let k2 = k - k1;
    let s1 = f32::from_bits(((127 + k1) as u32) << 23);
    let s2 = f32::from_bits(((127 + k2) as u32) << 23);
    (e * s1) * s2
}

/// [`exp`] outside `(-104, 89]`: NaN stays NaN, below e^-104 (about 7e-46) the result
/// rounds to zero, above e^89 to infinity.
#[cold]
#[inline(never)]
fn exp_out_of_range_cold(x: f32) -> f32 {
    exp_out_of_range(x)
}

/// [`exp`] outside `(-104, 89]`, as selects.
#[inline(always)]
fn exp_out_of_range(x: f32) -> f32 {
    if x > 0.0 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        0.0
    }
}

/// dL/db of one layer, `gb[o] = Σ_r dz[r, o]` over the first `rows` rows.
#[inline(always)]
fn bias_grads(dz: &[f32], gb: &mut [f32], batch: usize, rows: usize) {
    let rows = rows.min(batch);
    for (g, dzc) in gb.iter_mut().zip(dz.chunks_exact(batch)) {
        *g = sum(&dzc[..rows]);
    }
}

/// dL/dW of one layer: `gW[i, o] = Σ_r a[r, i] · dz[r, o]`, summed over the first `rows`
/// rows only: a padding row never enters a gradient, even when its activations overflowed
/// (inf · 0 would be NaN). `scratch` is room for `P`'s transpose of `a`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grads<M: Model, P: Products>(
    l: usize,
    a: &[f32],
    dz: &[f32],
    gw: &mut [f32],
    slot: LayerSlot,
    rows: usize,
    scratch: &mut [f32],
) {
    let batch = M::BATCH;
    #[cfg(feature = "parallel")]
    {
        // The choice goes by the full batch (a constant, so that small models compile no
        // GEMM at all); the product then covers the valid rows only.
        let macs = rows * slot.fan_in * slot.fan_out;
        if batch * slot.fan_in * slot.fan_out >= GEMM_MIN_MACS {
            if P::fixed::<M>(l, Product::WeightGrads { a, dz, gw: &mut *gw, rows, scale: None, scratch }) {
                return;
            }
            // gW = aᵀ · dz over the valid rows: column-major views with `rows` rows and a
            // column stride of `batch`.
            let at = View { data: a, rows, cols: slot.fan_in, rs: 1, cs: batch }.t();
            let dz = View { data: dz, rows, cols: slot.fan_out, rs: 1, cs: batch };
            gemm(gw, slot.fan_in, slot.fan_out, at, dz, macs, Dst::Set);
            return;
        }
    }
    #[cfg(not(feature = "parallel"))]
    let _ = (l, scratch);
    // Columns through `chunks_exact` and `rows <= batch` stated: no index can fail, so no
    // panic path is compiled in.
    let rows = rows.min(batch);
    for (dzc, gwo) in dz.chunks_exact(batch).zip(gw.chunks_exact_mut(slot.fan_in)) {
        let dzc = &dzc[..rows];
        for (ac, g) in a.chunks_exact(batch).zip(gwo) {
            *g = ac[..rows].iter().zip(dzc).fold(0.0, |g, (x, d)| g + x * d);
        }
    }
}

/// dL/d(pre-activation) of the layer below: `da[r, i] = Σ_o dz[r, o] · W[i, o]`, through
/// the derivative of that layer's activation ([`Activation::backprop`], from `a`, that
/// layer's output).
#[inline(always)]
fn input_grads<M: Model, P: Products>(l: usize, w: &[f32], dz: &[f32], da: &mut [f32], a: &[f32], slot: LayerSlot) {
    let batch = M::BATCH;
    // Layer `l - 1` is a hidden layer (`l > 0` here): ReLU for an all-ReLU model.
    let act = if const { all_are(M::ACTIVATIONS, Activation::Relu) } {
        Activation::Relu
    } else {
        after_layer(M::ACTIVATIONS, M::LAYERS.len() - 1, l.saturating_sub(1))
    };
    #[cfg(feature = "parallel")]
    {
        let macs = batch * slot.fan_in * slot.fan_out;
        if macs >= GEMM_MIN_MACS {
            // da = dz · Wᵀ, then the activation's derivative
            if !P::fixed::<M>(l, Product::InputGrads { dz, w, da: &mut *da }) {
                let dzv = View::col_major(dz, batch, slot.fan_out);
                let wt = View::col_major(w, slot.fan_in, slot.fan_out).t();
                gemm(da, batch, slot.fan_in, dzv, wt, macs, Dst::Set);
            }
            act.backprop_in_place(da, a);
            return;
        }
    }
    #[cfg(not(feature = "parallel"))]
    let _ = l;
    for (i, (dac, ac)) in da.chunks_exact_mut(batch).zip(a.chunks_exact(batch)).enumerate() {
        dac.fill(0.0);
        for (wo, dzc) in w.chunks_exact(slot.fan_in).zip(dz.chunks_exact(batch)) {
            let Some(&wio) = wo.get(i) else { break };
            for (d, &g) in dac.iter_mut().zip(dzc) {
                *d += g * wio;
            }
        }
        act.backprop_in_place(dac, ac);
    }
}

/// Sum with eight independent accumulators.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for k in 0..8 {
            acc[k] += x[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The magnitude from which `p - lr * g` no longer fits storage `T` once rounded: `f32`'s
/// infinity, or 65520 for `f16` (halfway between 65504 and 2^16, which rounds to even,
/// i.e. to infinity). An update fits iff `|p - lr * g| < limit` (false for NaN too).
#[inline(always)]
pub(crate) fn update_limit<T: StorageElement>() -> f32 {
    if T::IS_F16 {
        65520.0
    } else {
        f32::INFINITY
    }
}

/// [`Error::UpdateOverflow`] for the parameter at flat index `k` of a model of widths
/// `dims`, named as the parameter checks name parameters (`w0` row `i` column `o`, `b0`
/// row `o`).
#[cold]
#[inline(never)]
pub(crate) fn update_overflow<T: StorageElement>(dims: &[usize], k: usize) -> Error {
    let (what, row, column) = locate(dims, k);
    Error::UpdateOverflow { what: Text::from(what), row, column, storage: T::NAME, max: T::MAX }
}

/// The SGD update `p - lr * g` of every parameter into `grads` (which the step no longer
/// needs), elementwise (in parallel chunks for large models with the feature `parallel`),
/// each result rounded to the storage type `T` (a no-op for `f32`); whether every result
/// is finite in `T` (not an `f32` overflow, not beyond `f16`'s ±65504). One branch-free
/// pass; `params` is not touched, so that the caller stores the new values only when all
/// fit (see [`overflow_in`] otherwise). Against an unchecked update in place, this costs one
/// copy of the parameters per step.
#[inline(always)]
fn sgd_values<T: StorageElement>(params: &[f32], grads: &mut [f32], lr: f32) -> bool {
    let limit = update_limit::<T>();
    let step = |p: &[f32], g: &mut [f32]| {
        p.iter().zip(g.iter_mut()).fold(true, |ok, (p, g)| {
            let v = *p - lr * *g;
            *g = T::round_f32(v);
            ok & (v.abs() < limit)
        })
    };
    #[cfg(feature = "parallel")]
    return crate::gemm::all_chunks(params, grads, step);
    #[cfg(not(feature = "parallel"))]
    step(params, grads)
}

/// [`Error::UpdateOverflow`] for the first parameter whose new value in `new` (the whole
/// flat layout, as [`sgd_values`] left it) is not finite.
#[cold]
#[inline(never)]
fn overflow_in<T: StorageElement>(dims: &[usize], new: &[f32]) -> Error {
    // `round(v)` is non-finite exactly when `|v| >= limit` (or `v` is NaN).
    let k = new.iter().position(|v| !v.is_finite()).unwrap_or(0);
    update_overflow::<T>(dims, k)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::{exp, exp_branch_free};

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulps_of_the_exact_value() {
        let mut worst = 0;
        let mut x = -104.0f32;
        while x < 88.7 {
            let exact = f64::from(x).exp() as f32; // f64 exp, rounded once
            let got = exp(x);
            worst = worst.max(ulps(got, exact));
            assert!(ulps(got, exact) <= 2, "exp({x}) = {got}, expected {exact}");
            x += 0.000_731;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(worst <= 2);
    }

    /// The optimizer's check and update in parts over the pool give the whole slice's bits,
    /// maxima and first refused index, and the largest gradient in parts the whole's (parts
    /// of 2^16 parameters and more; 3 threads or the machine's).
    #[cfg(feature = "parallel")]
    #[test]
    fn optimizer_parts_equal_the_whole_slice() {
        use crate::math::optim::{self, Adam, Momentum, Optimizer};
        let n = (1 << 16) + 4_321;
        let mut rng = crate::rng::Rng::new(5);
        let mut values = |scale: f64| -> Vec<f32> { (0..n).map(|_| (rng.normal() * scale) as f32).collect() };
        let (p, g, m) = (values(1.0), values(0.1), values(0.01));
        let v: Vec<f32> = values(0.001).iter().map(|x| x * x).collect();
        let c = Adam::default().with_lr(0.01).coeffs(3);
        let mut moments = [m.clone(), v.clone()].concat();
        let (mut want_p, mut want_m) = (p.clone(), moments.clone());
        optim::apply::<Adam>(&c, &mut want_p, &g, &mut want_m, |x| x);
        let mut got_p = p.clone();
        let maxima = super::optim_parts::apply::<Adam, f32>(&c, &mut got_p, &g, &mut moments, false);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got_p), bits(&want_p));
        assert_eq!(bits(&moments), bits(&want_m));
        // The maxima of what was stored, as a plain fold of the magnitudes finds them.
        let largest = |v: &[f32]| v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let (new_m, new_v) = moments.split_at(n);
        assert_eq!(maxima, optim::Maxima { params: largest(&want_p), m: largest(new_m), v: largest(new_v) });
        assert_eq!(super::optim_parts::max_magnitude(&g), largest(&g));
        for (k, bad) in [(n - 1, f32::INFINITY), (3, f32::NAN), (69_000, f32::NEG_INFINITY)] {
            let mut g = g.clone();
            g[k] = bad;
            assert!(!super::optim_parts::max_magnitude(&g).is_finite(), "{bad} at {k}");
        }
        // On one thread (fewer than 2^16 parameters), with the division of fused
        // multiply-adds (`optim::div_fma`): the division's bits.
        let k = 5_000;
        let mut small = [m[..k].to_vec(), v[..k].to_vec()].concat();
        let (mut want_p, mut want_m) = (p[..k].to_vec(), small.clone());
        optim::apply::<Adam>(&c, &mut want_p, &g[..k], &mut want_m, |x| x);
        let mut got_p = p[..k].to_vec();
        super::optim_parts::apply::<Adam, f32>(&c, &mut got_p, &g[..k], &mut small, true);
        assert_eq!((bits(&got_p), bits(&small)), (bits(&want_p), bits(&want_m)));
        // One moment buffer (momentum): the parts' moment slices follow the parameters'.
        let c = Momentum { momentum: 0.9, ..Momentum::default() }.coeffs(2);
        let (mut want_p, mut want_m, mut got_p, mut got_m) = (p.clone(), m.clone(), p.clone(), m.clone());
        optim::apply::<Momentum>(&c, &mut want_p, &g, &mut want_m, |x| x);
        super::optim_parts::apply::<Momentum, f32>(&c, &mut got_p, &g, &mut got_m, false);
        assert_eq!((bits(&got_p), bits(&got_m)), (bits(&want_p), bits(&want_m)));
        // The first refused index, wherever the refusals lie (the first part, the last, both).
        let c = Adam::default().coeffs(1);
        let moments = [m.clone(), v.clone()].concat();
        for bad in [vec![], vec![n - 1], vec![7], vec![n - 10, 40_000, 3], vec![65_600]] {
            let mut g = g.clone();
            for &k in &bad {
                g[k] = f32::INFINITY;
            }
            let want = optim::first_refused::<Adam>(&c, &p, &g, &moments, f32::MAX);
            assert_eq!(want, bad.iter().min().copied());
            assert_eq!(super::optim_parts::first_refused::<Adam>(&c, &p, &g, &moments, f32::MAX), want, "{bad:?}");
        }
    }

    /// The loss in f32 (since single precision throughout) against the same formula in f64,
    /// `mean_r(ln Σ_c e^(z[r, c]) - z[r, y_r])`, over confident, uncertain and mixed rows:
    /// within 4 units in the last place of the f64 value (or 1e-12 absolute near zero). The
    /// gradient `softmax / rows - onehot / rows` within 2e-7 of its f64 value.
    #[test]
    fn the_f32_loss_matches_an_f64_reference() {
        let mut rng = crate::rng::Rng::new(11);
        for &(batch, classes, spread) in &[(2, 2, 12.0f32), (16, 3, 2.0), (32, 10, 5.0), (8, 4, 0.01), (64, 10, 30.0)] {
            for rows in [batch, batch / 2 + 1] {
                let z: Vec<f32> = (0..batch * classes).map(|_| (rng.normal() as f32) * spread).collect();
                let y: Vec<u32> = (0..batch).map(|_| rng.below(classes as u64) as u32).collect();
                let mut dz = vec![0.0f32; batch * classes];
                let loss = super::softmax_xent(&z, &y, rows, batch, classes, &mut dz);
                let mut want = 0.0f64;
                for r in 0..rows {
                    let row: Vec<f64> = (0..classes).map(|c| f64::from(z[c * batch + r])).collect();
                    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
                    want += max + sum.ln() - row[y[r] as usize];
                    for c in 0..classes {
                        let p = (row[c] - max).exp() / sum - f64::from(u8::from(c == y[r] as usize));
                        let g = f64::from(dz[c * batch + r]);
                        assert!((g - p / rows as f64).abs() < 2e-7, "dz[{r}, {c}] = {g}, expected {}", p / rows as f64);
                    }
                }
                want /= rows as f64;
                let err = (f64::from(loss) - want).abs();
                let ulp = f64::from(f32::EPSILON) * want.abs();
                assert!(err <= 4.0 * ulp || err < 1e-12, "{batch}x{classes} rows {rows}: {loss} against {want}");
            }
        }
    }

    #[test]
    fn the_branch_free_exp_gives_the_same_bits() {
        // Every 997th f32 bit pattern: NaNs, infinities, subnormals and both ranges' edges.
        let specials = [-104.0f32, -103.99999, 89.0, 89.00001, 0.0, -0.0, f32::MIN_POSITIVE];
        let patterns = (0..=u32::MAX / 997).map(|k| f32::from_bits(k * 997));
        for x in patterns.chain(specials) {
            let (a, b) = (exp(x), exp_branch_free(x));
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "exp({x}): {a} against {b}");
        }
        // And as the softmax's vectorised loop calls it, 16 lanes at a time.
        let xs: Vec<f32> = (0..4096).map(|k| -110.0 + k as f32 * 0.0483).collect();
        let mut out = vec![0.0f32; xs.len()];
        for (o, &x) in out.iter_mut().zip(&xs) {
            *o = exp_branch_free(x);
        }
        for (&o, &x) in out.iter().zip(&xs) {
            assert_eq!(o.to_bits(), exp(x).to_bits(), "exp({x})");
        }
    }
}
