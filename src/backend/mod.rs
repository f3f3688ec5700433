//! The [`Backend`] trait, and its implementations as leaves, one module per backend: `cpu`
//! (the CPU core of [`crate::cpu`], shared by threads) and `opencl`. The engine reaches a
//! backend only through this trait; the device builds it (`Device::backend`).
//!
//! Buffers follow the flat layouts of [`crate::layout`]. The batch and the parameters are
//! in the model's storage type (`f32` or `f16`, see [`StorageElement`]); logits, losses
//! and gradients are always `f32`.

use std::any::Any;

use crate::check::Batch;
use crate::error::{Error, Result};
use crate::model::{Model, StorageElement};
use crate::profile::StepProfile;
#[cfg(feature = "opencl")]
use crate::startup::StartupReport;

pub(crate) mod cpu;
#[cfg(feature = "opencl")]
pub(crate) mod opencl;

/// A buffer resident on a device, made by [`Backend::upload`] or [`Backend::forward`].
/// Each backend knows its own kind and refuses the others'.
pub(crate) trait DeviceBuffer: Any + Send + Sync {
    /// Where the buffer lives, for messages.
    fn location(&self) -> String;
    /// Copies the whole buffer into `out`; for a buffer of `f32` values.
    fn read_f32(&self, out: &mut [f32]) -> Result<()>;
    /// Copies the whole buffer into `out`; for a buffer of `f16` values.
    fn read_f16(&self, out: &mut [half::f16]) -> Result<()>;
    /// Itself, for the backend that made it to recognise it.
    fn as_any(&self) -> &dyn Any;
}

impl dyn DeviceBuffer {
    /// Copies the buffer into `out`, whose element type is the one it was made with.
    pub(crate) fn read_into<T: StorageElement>(&self, out: &mut [T]) -> Result<()> {
        if let Some(out) = T::as_f32_slice_mut(out) {
            return self.read_f32(out);
        }
        match T::as_f16_slice_mut(out) {
            Some(out) => self.read_f16(out),
            None => Ok(()),
        }
    }

    /// The buffer as `B`, or [`Error::DeviceMismatch`] when another backend made it.
    pub(crate) fn downcast<B: DeviceBuffer>(&self, model_device: impl FnOnce() -> String) -> Result<&B> {
        self.as_any()
            .downcast_ref::<B>()
            .ok_or_else(|| Error::DeviceMismatch { tensor_device: self.location(), model_device: model_device() })
    }
}

/// What a deferred step leaves for `Engine::take_losses`: its loss (finite or not: checked
/// there), or the error that refused its update (`Error::UpdateOverflow`), boxed: a record
/// is 16 bytes, not the 120 of an `Error`, so that the records of a long run between two
/// `take_losses` (kept in one vector, reused from take to take) stay small.
pub(crate) type StepRecord = std::result::Result<f32, Box<Error>>;

/// What every backend computes for model `M`. Inputs arrive validated (finite, labels in
/// range, `rows` in `1..=batch`, hyperparameters in range); backends never re-check them.
/// Inference takes `&self` and may run on several threads at once; training takes
/// `&mut self`.
pub(crate) trait Backend<M: Model>: Send + Sync {
    /// Copies `data` into a new buffer on the device.
    fn upload(&self, data: &[M::Storage]) -> Result<Box<dyn DeviceBuffer>>;
    /// Replaces the parameters (flat layout).
    fn write_params(&mut self, flat: &[M::Storage]) -> Result<()>;
    /// Reads the parameters into `out` (flat layout).
    fn read_params(&self, out: &mut [M::Storage]) -> Result<()>;
    /// Logits of a device-resident batch, left on the device; [`Error::DeviceMismatch`]
    /// for a buffer of another device.
    fn forward(&self, x: &dyn DeviceBuffer) -> Result<Box<dyn DeviceBuffer>>;
    /// Logits of a host batch, written into `out` (`[batch x classes]`). The default goes
    /// through [`Backend::upload`] and [`Backend::forward`]; backends override it to skip
    /// the intermediate buffers.
    fn logits_into(&self, x: &[M::Storage], out: &mut [f32]) -> Result<()> {
        let x = self.upload(x)?;
        self.forward(&*x)?.read_f32(out)
    }
    /// Mean softmax cross-entropy over the batch's valid rows.
    fn loss(&self, batch: Batch<'_, M::Storage>) -> Result<f32>;
    /// The loss and its gradient with respect to every parameter (flat layout, into `out`).
    fn gradients(&self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32>;
    /// One step of the optimizer whose hyperparameters are `step` (its `lr` the step's
    /// learning rate; SGD: `p -= lr * dL/dp`), computed in `f32`, then rounded to the
    /// storage; returns the loss before it. A non-finite loss leaves the parameters and
    /// the optimizer's state unchanged and is returned as `Error::NonFiniteLoss`; so does
    /// an update that would store a non-finite parameter or moment, as
    /// `Error::UpdateOverflow`.
    fn train_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<f32>;
    /// Reads the optimizer's moment buffers into `moments` (flat, `MOMENTS` times the
    /// parameter count) and returns its step count.
    #[cfg_attr(not(feature = "checkpoint"), allow(dead_code))]
    fn read_optimizer(&self, moments: &mut [f32]) -> Result<u32>;
    /// Replaces the optimizer's moment buffers and step count.
    fn write_optimizer(&mut self, moments: &[f32], step: u32) -> Result<()>;
    /// One step whose loss the caller reads later, through [`Backend::take_losses`]. The
    /// default runs [`Backend::train_step`] at once and appends its record to `record` (a
    /// diverged step's non-finite loss and a refused update included: `take_losses`
    /// reports them); a device with a queue enqueues the step and keeps the record on the
    /// device instead.
    fn train_step_deferred(
        &mut self,
        batch: Batch<'_, M::Storage>,
        step: M::Optimizer,
        record: &mut Vec<StepRecord>,
    ) -> Result<()> {
        let step = match self.train_step(batch, step) {
            Ok(loss) | Err(Error::NonFiniteLoss { loss }) => Ok(loss),
            Err(err @ Error::UpdateOverflow { .. }) => Err(Box::new(err)),
            Err(err) => return Err(err),
        };
        record.push(step);
        Ok(())
    }
    /// Appends the records of the deferred steps still held by the device to `record`,
    /// oldest first. The default holds none.
    fn take_losses(&mut self, record: &mut Vec<StepRecord>) -> Result<()> {
        let _ = record;
        Ok(())
    }
    /// One [`Backend::train_step`] whose commands are timed on the device, stage by stage.
    /// Only a device made with profiling on can; the default refuses.
    fn profile_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<StepProfile> {
        let _ = (batch, step);
        Err(Error::Unsupported {
            device: "cpu".to_string(),
            reason: "step profiling needs an OpenCL device made with `with_profiling(true)`".to_string(),
        })
    }
    /// Sends a train step's batch to the device the way a step would and waits for it;
    /// runs nothing. For the upload benchmark; nothing to do by default.
    fn upload_batch(&mut self, batch: Batch<'_, M::Storage>) -> Result<()> {
        let _ = batch;
        Ok(())
    }
    /// How the model's start-up went on its device; `None` where there is nothing to
    /// build (the CPU).
    #[cfg(feature = "opencl")]
    fn startup_report(&self) -> Option<StartupReport> {
        None
    }
    /// Launches every kernel a step uses once, changing nothing the caller sees (moves a
    /// device's lazy work out of the first real step). Nothing to do by default.
    #[cfg(feature = "opencl")]
    fn warm_up(&mut self) -> Result<()> {
        Ok(())
    }
}
