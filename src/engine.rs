//! [`Engine`]: the runtime behind every model the macro declares. A generated model
//! dereferences to its engine, so `model.forward(..)`, `model.train_step(..)` and the rest
//! are the methods documented here.

use std::fmt;

use crate::backend::cpu::CpuBackend;
use crate::backend::opencl::OpenClBackend;
use crate::backend::{layer_slots, Backend, Batch, Buffer};
use crate::device::{Device, DeviceKind};
use crate::error::{Error, Result};
use crate::host::argmax_column_major;
use crate::model::{Element, HostTensor, Model, Params, StorageElement};
use crate::rng::Rng;
use crate::tensor::DeviceTensor;

/// The seed [`Engine::new`] uses: every model created with `new` starts from the same
/// parameters on every machine and in every version.
pub const DEFAULT_SEED: u64 = 0x7E45_0B21_D6E5_0001;

/// The backends an engine can run on.
enum Backends<M: Model> {
    /// The CPU backend, and the records of its deferred steps (see
    /// [`Engine::train_step_deferred`] and [`StepRecord`]).
    Cpu(CpuBackend<M>, Vec<StepRecord>),
    OpenCl(Box<OpenClBackend<M>>),
}

impl<M: Model> Backends<M> {
    fn get(&mut self) -> &mut dyn Backend<M::Storage> {
        match self {
            Backends::Cpu(b, _) => b,
            Backends::OpenCl(b) => &mut **b,
        }
    }
    fn get_ref(&self) -> &dyn Backend<M::Storage> {
        match self {
            Backends::Cpu(b, _) => b,
            Backends::OpenCl(b) => &**b,
        }
    }
    fn train_step_deferred(&mut self, batch: Batch<'_, M::Storage>, lr: f32) -> Result<()> {
        match self {
            Backends::Cpu(b, losses) => {
                let record = match b.train_step(batch, lr) {
                    Ok(loss) | Err(Error::NonFiniteLoss { loss }) => Ok(loss),
                    Err(err @ Error::UpdateOverflow { .. }) => Err(err),
                    Err(err) => return Err(err),
                };
                losses.push(record);
                Ok(())
            }
            Backends::OpenCl(b) => b.train_step_deferred(batch, lr),
        }
    }
    /// Every deferred step's record since the last call, oldest first, unchecked.
    fn take_losses(&mut self) -> Result<Vec<StepRecord>> {
        match self {
            Backends::Cpu(_, losses) => Ok(std::mem::take(losses)),
            Backends::OpenCl(b) => b.take_losses(),
        }
    }
}

/// A model's parameters on a device, and every operation of the runtime API.
///
/// Validation (on the host, before any arithmetic, so a bad call changes nothing):
/// - labels: every label `< CLASSES`, else [`Error::LabelOutOfRange`] (`BATCH` compares);
/// - host inputs (`to_device`, `logits`, `predict`, `loss`, `gradients`, `train_step`): every
///   value finite, else [`Error::NonFinite`] (`BATCH * FEATURES` compares, less than the
///   forward pass's multiply-adds by a factor of the first layer's width);
/// - parameters (`with_params`, `set_params`): every value finite (one pass over them);
/// - learning rate: finite and `>= 0`, else [`Error::InvalidLearningRate`];
/// - training: a non-finite loss is [`Error::NonFiniteLoss`], and an update that would store
///   a non-finite parameter (beyond `f32`'s range, or `f16`'s ±65504) is
///   [`Error::UpdateOverflow`]; either way the update is skipped and the parameters stay
///   exactly as they were. A loss that grows while staying finite is not an error: watch
///   the losses (`train_step`'s, [`Engine::take_losses`], or `fit`'s
///   [`History`](crate::train::History)) and stop or lower the learning rate yourself.
pub struct Engine<M: Model> {
    device: Device,
    backend: Backends<M>,
    /// Deferred losses of the caller's own steps, set aside while `fit` runs steps of its
    /// own; [`Engine::take_losses`] returns them first.
    held_losses: Vec<StepRecord>,
}

/// What a deferred step left for [`Engine::take_losses`]: its loss (finite or not: checked
/// there), or the error that refused its update (`Error::UpdateOverflow`).
pub(crate) type StepRecord = Result<f32>;

impl<M: Model> Engine<M> {
    /// Creates the model on `device`, its parameters initialised from [`DEFAULT_SEED`]:
    /// weights of hidden (ReLU) layers He-normal (`N(0, 2 / fan_in)`), of the head
    /// LeCun-normal (`N(0, 1 / fan_in)`), biases zero. Costs one pass over the parameters
    /// and, on OpenCL, building (or loading from the cache) the model's kernels.
    pub fn new(device: &Device) -> Result<Self> {
        Self::with_seed(device, DEFAULT_SEED)
    }

    /// Like [`Engine::new`] with a seed of your own.
    pub fn with_seed(device: &Device, seed: u64) -> Result<Self> {
        let flat: Vec<M::Storage> = initial_params(M::LAYERS, seed).into_iter().map(M::Storage::from_f32).collect();
        Self::from_flat(device, &flat)
    }

    /// Creates the model on `device` with the given parameters.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite.
    pub fn with_params(device: &Device, params: &M::Params) -> Result<Self> {
        let flat = flatten(params);
        check_params(M::LAYERS, &flat)?;
        Self::from_flat(device, &flat)
    }

    fn from_flat(device: &Device, flat: &[M::Storage]) -> Result<Self> {
        let backend = match device.kind() {
            DeviceKind::Cpu => Backends::Cpu(CpuBackend::new(flat), Vec::new()),
            DeviceKind::OpenCl { device, path } => Backends::OpenCl(Box::new(OpenClBackend::new(device, *path, flat)?)),
        };
        Ok(Engine { device: device.clone(), backend, held_losses: Vec::new() })
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Copies the parameters to the host (device -> host).
    pub fn params(&self) -> Result<M::Params> {
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.backend.get_ref().read_params(&mut flat)?;
        Ok(M::Params::from_flat(&flat))
    }

    /// Replaces the parameters (host -> device).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite; the old ones are kept.
    pub fn set_params(&mut self, params: &M::Params) -> Result<()> {
        let flat = flatten(params);
        check_params(M::LAYERS, &flat)?;
        self.backend.get().write_params(&flat)
    }

    /// Copies a batch to the device (the seed's `Tensor(x)`).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite value.
    pub fn to_device(&self, x: &M::Input) -> Result<DeviceTensor<M::Input>> {
        let flat = x.as_flat();
        check_finite("input", flat, M::BATCH)?;
        Ok(DeviceTensor::new(self.backend.get_ref().upload(flat)?))
    }

    /// Runs the forward pass on a device-resident batch; the logits stay on the device
    /// until [`DeviceTensor::to_host`].
    ///
    /// # Errors
    /// [`Error::DeviceMismatch`] if `x` lives on another device.
    pub fn forward(&mut self, x: &DeviceTensor<M::Input>) -> Result<DeviceTensor<M::Logits>> {
        self.check_same_device(&x.buffer)?;
        Ok(DeviceTensor::new(self.backend.get().forward(&x.buffer)?))
    }

    fn check_same_device(&self, buffer: &Buffer) -> Result<()> {
        let ok = match (buffer, self.device.kind()) {
            (Buffer::Host(_), DeviceKind::Cpu) => true,
            (Buffer::OpenCl(t), DeviceKind::OpenCl { device, .. }) => t.is_on(device),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::DeviceMismatch { tensor_device: buffer.location(), model_device: self.device.name() })
        }
    }

    /// Logits for a host batch: host in, host out (no intermediate device tensor is kept).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    pub fn logits(&mut self, x: &M::Input) -> Result<M::Logits> {
        let flat = x.as_flat();
        check_finite("input", flat, M::BATCH)?;
        let mut logits = M::Logits::zeroed();
        self.backend.get().logits_into(flat, logits.as_flat_mut())?;
        Ok(logits)
    }

    /// The predicted class of every row (argmax of the logits; the first on ties).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a non-finite input, or if the logits overflowed.
    pub fn predict(&mut self, x: &M::Input) -> Result<M::Labels> {
        let logits = self.logits(x)?;
        let z = logits.as_flat();
        check_finite("logits", z, M::BATCH)?;
        let mut classes = M::Labels::zeroed();
        for (r, class) in classes.as_flat_mut().iter_mut().enumerate() {
            *class = argmax_column_major(z, M::BATCH, M::CLASSES, r) as u32;
        }
        Ok(classes)
    }

    /// Mean softmax cross-entropy of the batch.
    pub fn loss(&mut self, x: &M::Input, y: &M::Labels) -> Result<f32> {
        self.loss_rows(x, y, M::BATCH)
    }

    /// Like [`Engine::loss`], counting only the first `rows` rows (a padded last batch).
    pub fn loss_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize) -> Result<f32> {
        let batch = validate::<M>(x, y, rows)?;
        self.backend.get().loss(batch)
    }

    /// The loss and its gradient with respect to every parameter, in `f32` whatever the
    /// storage: `M::Grads` is `<Name>Params` for `f32` models and `<Name>Grads` (the same
    /// fields in `f32`) for `f16` models.
    pub fn gradients(&mut self, x: &M::Input, y: &M::Labels) -> Result<(f32, M::Grads)> {
        self.gradients_rows(x, y, M::BATCH)
    }

    /// Like [`Engine::gradients`], counting only the first `rows` rows.
    pub fn gradients_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize) -> Result<(f32, M::Grads)> {
        let batch = validate::<M>(x, y, rows)?;
        let mut flat = vec![0.0; M::Params::LEN];
        let loss = self.backend.get().gradients(batch, &mut flat)?;
        Ok((loss, M::Grads::from_flat(&flat)))
    }

    /// One SGD step (`p -= lr * dL/dp`); returns the loss before the step.
    ///
    /// Every updated parameter is checked before any is written: on the CPU the new
    /// values are computed into a scratch buffer with the check folded in, then copied
    /// (one extra copy of the parameters; see the README's benchmark notes for its cost);
    /// on OpenCL one extra kernel launch on the tiled path, a check loop and a barrier
    /// inside the fused kernel.
    ///
    /// What is detected: a non-finite loss, and an update that would overflow the storage.
    /// What is not: a loss that grows (diverges slowly) while staying finite, or parameters
    /// that grow large but representable; compare successive losses to catch those.
    ///
    /// # Errors
    /// Those of the input checks, [`Error::InvalidLearningRate`],
    /// [`Error::NonFiniteLoss`], and [`Error::UpdateOverflow`] when `p - lr * g` would be
    /// beyond `f32`'s range (or beyond ±65504 under `storage: f16`) for some parameter;
    /// in both cases the update is not applied and the parameters are bit for bit those
    /// before the call.
    pub fn train_step(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<f32> {
        self.train_step_rows(x, y, M::BATCH, lr)
    }

    /// Like [`Engine::train_step`], counting only the first `rows` rows (a padded batch:
    /// the step is exactly the one on those rows alone).
    pub fn train_step_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize, lr: f32) -> Result<f32> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::InvalidLearningRate { lr });
        }
        let batch = validate::<M>(x, y, rows)?;
        self.backend.get().train_step(batch, lr)
    }

    /// One SGD step like [`Engine::train_step`], without waiting for its loss: on OpenCL
    /// the batch is uploaded, the step's kernels are enqueued, and the loss is written into
    /// a record on the device, so a loop of steps never stalls on a device -> host round
    /// trip. Read the losses with [`Engine::take_losses`]. A step whose loss is not finite,
    /// or whose update would store a non-finite parameter, still skips its update (the
    /// check runs on the device), and is reported by `take_losses`.
    ///
    /// # Errors
    /// Those of the input checks and [`Error::InvalidLearningRate`], before anything is
    /// enqueued; OpenCL errors from enqueueing.
    pub fn train_step_deferred(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<()> {
        self.train_step_deferred_rows(x, y, M::BATCH, lr)
    }

    /// Like [`Engine::train_step_deferred`], counting only the first `rows` rows.
    pub fn train_step_deferred_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize, lr: f32) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::InvalidLearningRate { lr });
        }
        let batch = validate::<M>(x, y, rows)?;
        self.backend.train_step_deferred(batch, lr)
    }

    /// The losses of every [`Engine::train_step_deferred`] since the last call, oldest
    /// first, and clears the record. On OpenCL this waits for those steps and costs one
    /// device -> host read (two when the device-side ring of 1024 entries wrapped; a
    /// longer run drains it to the host every 1024 steps).
    ///
    /// # Errors
    /// The error of the first step that failed: [`Error::NonFiniteLoss`] if its loss was
    /// not finite, [`Error::UpdateOverflow`] if its update would have stored a non-finite
    /// parameter (such steps did not update the parameters; later steps did; the record
    /// is cleared all the same).
    pub fn take_losses(&mut self) -> Result<Vec<f32>> {
        let mut losses = std::mem::take(&mut self.held_losses);
        losses.extend(self.backend.take_losses()?);
        finite_losses(losses)
    }

    /// Sets aside the deferred losses recorded so far, so that internal steps (`fit`'s)
    /// can read their own with [`Engine::take_own_losses`] and lose none of the caller's.
    pub(crate) fn hold_losses(&mut self) -> Result<()> {
        let losses = self.backend.take_losses()?;
        self.held_losses.extend(losses);
        Ok(())
    }

    /// The deferred losses recorded since [`Engine::hold_losses`], checked like
    /// [`Engine::take_losses`]; held ones stay held.
    pub(crate) fn take_own_losses(&mut self) -> Result<Vec<f32>> {
        finite_losses(self.backend.take_losses()?)
    }
}

impl<M: Model> fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(M::NAME)
            .field("batch", &M::BATCH)
            .field("layers", &M::LAYERS)
            .field("device", &self.device.name())
            .finish_non_exhaustive()
    }
}

/// The losses, or the error of the first step that failed: [`Error::NonFiniteLoss`] for a
/// loss that is not finite, or the error its record holds.
fn finite_losses(records: Vec<StepRecord>) -> Result<Vec<f32>> {
    records
        .into_iter()
        .map(|record| match record {
            Ok(loss) if !loss.is_finite() => Err(Error::NonFiniteLoss { loss }),
            other => other,
        })
        .collect()
}

fn flatten<P: Params>(params: &P) -> Vec<P::Elem> {
    let mut flat = vec![P::Elem::ZERO; P::LEN];
    params.write_flat(&mut flat);
    flat
}

/// Checks labels, inputs and `rows`; returns the batch as flat slices.
fn validate<'a, M: Model>(x: &'a M::Input, y: &'a M::Labels, rows: usize) -> Result<Batch<'a, M::Storage>> {
    if rows == 0 || rows > M::BATCH {
        return Err(Error::InvalidRowCount { rows, batch: M::BATCH });
    }
    let labels = y.as_flat();
    check_labels(labels, M::CLASSES)?;
    let flat = x.as_flat();
    check_finite("input", flat, M::BATCH)?;
    Ok(Batch { x: flat, y: labels, rows })
}

/// Every label `< classes`.
#[inline]
pub(crate) fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    // One branch-free pass in the common case; the cold path finds the row.
    if labels.iter().fold(true, |ok, &l| ok & ((l as usize) < classes)) {
        return Ok(());
    }
    label_error(labels, classes)
}

#[cold]
#[inline(never)]
fn label_error(labels: &[u32], classes: usize) -> Result<()> {
    let (row, &label) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes).unwrap_or((0, &0));
    Err(Error::LabelOutOfRange { row, label, classes })
}

/// Every value of a column-major buffer with `rows` rows finite.
#[inline]
pub(crate) fn check_finite<T: StorageElement>(what: &str, flat: &[T], rows: usize) -> Result<()> {
    if flat.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    finite_error(what, flat, rows)
}

#[cold]
#[inline(never)]
fn finite_error<T: StorageElement>(what: &str, flat: &[T], rows: usize) -> Result<()> {
    let (k, value) = flat.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, 0.0), |(k, v)| (k, v.to_f32()));
    Err(Error::NonFinite { what: what.to_string(), row: k % rows, column: k / rows, value })
}

/// Every parameter finite; the error names the field (`w0`, `b1`, ...) and the position.
pub(crate) fn check_params<T: StorageElement>(dims: &[usize], flat: &[T]) -> Result<()> {
    for (l, slot) in layer_slots(dims).enumerate() {
        check_finite(&format!("w{l}"), &flat[slot.w..slot.b], slot.fan_in)?;
        check_finite(&format!("b{l}"), &flat[slot.b..slot.b + slot.fan_out], slot.fan_out)?;
    }
    Ok(())
}

/// Seeded initial parameters in the flat layout.
pub(crate) fn initial_params(dims: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let layers = dims.len() - 1;
    let mut flat = Vec::new();
    for (l, slot) in layer_slots(dims).enumerate() {
        let gain = if l + 1 < layers { 2.0 } else { 1.0 };
        let std = (gain / slot.fan_in as f64).sqrt();
        flat.extend((0..slot.fan_in * slot.fan_out).map(|_| (rng.normal() * std) as f32));
        flat.extend(std::iter::repeat_n(0.0, slot.fan_out));
    }
    flat
}
