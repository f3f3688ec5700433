//! The CPU backend: the CPU core of [`crate::cpu`] behind the [`Backend`] trait, shared by
//! threads. The parameters are read-only for inference. A small model's inference computes
//! in working memory on the stack; a larger one's in the backend's, behind a mutex that
//! inference only tries: a thread that finds it taken computes in a scratch of its own
//! instead of waiting. So `&self` calls from many threads run in parallel, and an
//! uncontended call allocates nothing. Training (`&mut self`) reaches the backend's working
//! memory without locking, and runs the core's step compiled for the CPU's widest vector
//! extension when the model is large enough to gain from it.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::{Mutex, TryLockError};

use super::{Backend, DeviceBuffer};
use crate::check::Batch;
use crate::cpu;
use crate::error::Result;
use crate::layout::{FlatSpace, ScratchParts, ScratchSpace, ZeroBuffer};
use crate::model::{boxed_buffer, Model, StorageElement};
use crate::simd;

/// A batch in host memory (the CPU backend's "device"), widened to `f32` (exactly: every
/// `f16` is an `f32`).
pub(crate) struct HostBuffer(Box<[f32]>);

impl DeviceBuffer for HostBuffer {
    fn location(&self) -> String {
        "the CPU".to_string()
    }
    fn read_f32(&self, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&self.0[..out.len()]);
        Ok(())
    }
    fn read_f16(&self, out: &mut [half::f16]) -> Result<()> {
        for (o, &v) in out.iter_mut().zip(self.0.iter()) {
            *o = half::f16::from_f32(v);
        }
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Models whose working memory is at most this many bytes run inference in a scratch on the
/// stack (no lock, no allocation); larger ones share the backend's, behind the mutex.
const STACK_SCRATCH_BYTES: usize = 4096;

/// The CPU backend of model `M`.
pub(crate) struct CpuBackend<M: Model> {
    params: Box<M::Flat>,
    scratch: Mutex<Box<M::Scratch>>,
    /// What the last train step knew of the parameters and moments (see [`cpu::train_step`]).
    bound: cpu::UpdateBound,
    /// The optimizer's moment buffers and step count.
    moments: Box<M::OptState>,
    step: u32,
    _model: PhantomData<fn() -> M>,
}

impl<M: Model> CpuBackend<M> {
    pub(crate) fn new(flat: &[M::Storage]) -> Self {
        let mut backend = CpuBackend {
            params: boxed_buffer::<M::Flat>(),
            scratch: Mutex::new(boxed_buffer::<M::Scratch>()),
            bound: cpu::UpdateBound::UNKNOWN,
            moments: boxed_buffer::<M::OptState>(),
            step: 0,
            _model: PhantomData,
        };
        backend.set_params(flat);
        backend
    }

    /// The parameters from the storage type, widened (exactly) to `f32`.
    fn set_params(&mut self, flat: &[M::Storage]) {
        for (p, v) in self.params.values_mut().iter_mut().zip(flat) {
            *p = v.to_f32();
        }
        self.bound = cpu::UpdateBound::UNKNOWN;
    }

    /// Runs `f` on the shared working memory, or on a fresh one while another thread holds
    /// it (a poisoned lock only means a panic elsewhere: the memory is scratch, rewritten
    /// before it is read).
    #[inline]
    fn with_scratch<R>(&self, f: impl FnOnce(&mut ScratchParts<'_>) -> R) -> R {
        if core::mem::size_of::<M::Scratch>() <= STACK_SCRATCH_BYTES {
            // A small model's working memory costs less to zero on the stack than the
            // mutex's two atomic operations (seed inference: 26 -> 8 ns).
            let mut scratch = <M::Scratch as ZeroBuffer>::zeroed();
            return f(&mut scratch.parts());
        }
        match self.scratch.try_lock() {
            Ok(mut guard) => f(&mut guard.parts()),
            Err(TryLockError::Poisoned(poisoned)) => f(&mut poisoned.into_inner().parts()),
            Err(TryLockError::WouldBlock) => f(&mut boxed_buffer::<M::Scratch>().parts()),
        }
    }

    fn location() -> String {
        describe()
    }
}

/// The CPU backend in a few words, e.g. `cpu (2 threads, avx512)`.
pub(crate) fn describe() -> String {
    format!("cpu ({} threads, {})", threads(), simd::chosen().name())
}

/// [`cpu::train_step`] compiled for the extension [`simd::chosen`] picks (AVX-512, else
/// AVX2 and FMA, on x86-64), else as built. A crate built for the baseline x86-64 otherwise
/// runs the core's loops (softmax, bias and ReLU, the update, ...) on SSE2 alone; the GEMMs
/// choose their kernels at run time themselves. These variants also run the model's fixed-size
/// products (`crate::fixed`) where the baseline runs the `gemm` crate. The numbers do not
/// change: Rust never fuses a multiply and an add on its own, vectorising does not reorder a
/// sum, and the fixed-size products compute the `gemm` crate's FMA chains
/// (`tests/core_equals_backend.rs` checks each variant). Models below
/// `cpu::VECTOR_SOFTMAX_MIN` logits a batch and without a layer of fixed-size products run
/// as built.
#[inline(always)]
fn train_step_simd<M: Model>(
    params: &mut [f32],
    s: &mut ScratchParts<'_>,
    batch: Batch<'_, M::Storage>,
    step: M::Optimizer,
    state: cpu::OptimState<'_>,
) -> Result<f32> {
    // Small models gain nothing (measured: seed and iris steps 5-10% slower on AVX-512).
    #[cfg(target_arch = "x86_64")]
    if M::BATCH * M::CLASSES >= cpu::VECTOR_SOFTMAX_MIN || cpu::has_fixed_layer::<M>() {
        match simd::chosen() {
            // SAFETY: `simd::chosen` picks a variant only when the CPU has every feature it
            // is compiled for (`simd::detected`); the function itself is safe code.
            simd::Simd::Avx512 => return unsafe { avx512::train_step::<M>(params, s, batch, step, state) },
            // SAFETY: as above, for AVX2 and FMA.
            simd::Simd::Avx2 => return unsafe { avx2::train_step::<M>(params, s, batch, step, state) },
            simd::Simd::Baseline => {}
        }
    }
    cpu::train_step::<M, cpu::Packed>(params, s, batch, step, state)
}

/// The CPU core's train step compiled (with all it inlines) for one set of target features.
macro_rules! simd_variant {
    ($name:ident, $features:literal, $products:ty) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::*;
            /// [`cpu::train_step`] for these target features.
            ///
            /// # Safety
            /// The CPU must support every feature named in `target_feature`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn train_step<M: Model>(
                params: &mut [f32],
                s: &mut ScratchParts<'_>,
                batch: Batch<'_, M::Storage>,
                step: M::Optimizer,
                state: cpu::OptimState<'_>,
            ) -> Result<f32> {
                cpu::train_step::<M, $products>(params, s, batch, step, state)
            }
        }
    };
}
// Register blocks of the fixed-size products (`crate::fixed`): AVX-512, 32 rows (two
// vectors) by 6 columns, 12 of its 32 registers holding sums; AVX2, 32 rows (four vectors) by
// 3 columns, 12 of its 16. Measured on the digits train step (AVX-512 machine, AVX2 variant
// forced): 32 x 3 5.68-5.74 us, 16 x 4 5.81 us, 16 x 3 6.27 us, 16 x 6 (spills) 7.0-7.3 us.
simd_variant!(avx512, "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma", SimdProducts<32, 6>);
simd_variant!(avx2, "avx2,fma", SimdProducts<32, 3>);

/// The products of the SIMD variants: the model's fixed-size kernels (feature `parallel`),
/// else the core's own loops, compiled for the variant's target features (x86-64 only).
#[cfg(all(feature = "parallel", target_arch = "x86_64"))]
type SimdProducts<const MR: usize, const NR: usize> = cpu::Fixed<MR, NR>;
#[cfg(all(not(feature = "parallel"), target_arch = "x86_64"))]
type SimdProducts<const MR: usize, const NR: usize> = cpu::Packed;

/// Threads the CPU backend may use (`TENSORBRIDGE_THREADS`, else the machine's).
pub(crate) fn threads() -> usize {
    #[cfg(feature = "parallel")]
    return crate::pool::threads();
    #[cfg(not(feature = "parallel"))]
    1
}

impl<M: Model> Backend<M> for CpuBackend<M> {
    fn upload(&self, data: &[M::Storage]) -> Result<Box<dyn DeviceBuffer>> {
        let data: Box<[f32]> = match M::Storage::as_f32_slice(data) {
            Some(data) => data.into(),
            None => data.iter().map(|v| v.to_f32()).collect(),
        };
        Ok(Box::new(HostBuffer(data)))
    }

    fn write_params(&mut self, flat: &[M::Storage]) -> Result<()> {
        self.set_params(flat);
        Ok(())
    }

    fn read_params(&self, out: &mut [M::Storage]) -> Result<()> {
        for (o, &p) in out.iter_mut().zip(self.params.values()) {
            *o = M::Storage::from_f32(p);
        }
        Ok(())
    }

    fn forward(&self, x: &dyn DeviceBuffer) -> Result<Box<dyn DeviceBuffer>> {
        let x = x.downcast::<HostBuffer>(Self::location)?;
        let logits = self.with_scratch(|s| {
            cpu::forward::<M>(self.params.values(), s.acts, &x.0);
            Box::<[f32]>::from(cpu::logits_of::<M>(s.acts))
        });
        Ok(Box::new(HostBuffer(logits)))
    }

    fn logits_into(&self, x: &[M::Storage], out: &mut [f32]) -> Result<()> {
        self.with_scratch(|s| out.copy_from_slice(cpu::forward_batch::<M>(self.params.values(), s, x)));
        Ok(())
    }

    fn loss(&self, batch: Batch<'_, M::Storage>) -> Result<f32> {
        Ok(self.with_scratch(|s| cpu::loss::<M>(self.params.values(), s, batch)))
    }

    fn gradients(&self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32> {
        Ok(self.with_scratch(|s| {
            let loss = cpu::gradients::<M>(self.params.values(), s, batch);
            out.copy_from_slice(&s.grads[..out.len()]);
            loss
        }))
    }

    fn train_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<f32> {
        let scratch = self.scratch.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state =
            cpu::OptimState { moments: self.moments.values_mut(), step: &mut self.step, bound: &mut self.bound };
        train_step_simd::<M>(self.params.values_mut(), &mut scratch.parts(), batch, step, state)
    }

    fn read_optimizer(&self, moments: &mut [f32]) -> Result<u32> {
        moments.copy_from_slice(self.moments.values());
        Ok(self.step)
    }

    fn write_optimizer(&mut self, moments: &[f32], step: u32) -> Result<()> {
        self.moments.values_mut().copy_from_slice(moments);
        self.step = step;
        // What the last step knew of the moments no longer holds.
        self.bound = cpu::UpdateBound::UNKNOWN;
        Ok(())
    }
}
