//! [`Engine`]: the runtime behind every model the macro declares. A generated model
//! dereferences to its engine, so `model.forward(..)`, `model.train_step(..)` and the rest
//! are the methods documented here.

use std::borrow::Borrow;
use std::fmt;

use crate::backend::{Backend, StepRecord};
use crate::check::{self, Batch};
use crate::cpu::{classes_into, init_params};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::{softmax_rows, Standardizer};
use crate::layout::param_count;
use crate::math::optim::Optimizer;
use crate::model::{Element, HostTensor, Model, Params, StorageElement};
#[cfg(feature = "opencl")]
use crate::startup::StartupReport;
use crate::tensor::DeviceTensor;

pub use crate::rng::DEFAULT_SEED;

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
///   the losses (`train_step`'s, [`Engine::take_losses`], or `fit`'s `History`) and stop
///   or lower the learning rate yourself.
///
/// Inference (`to_device`, `forward`, `logits`, `predict`, `loss`, `gradients`, `params`,
/// `evaluate`) takes `&self`: an engine is `Send + Sync`, so one model (an `Arc<Model>`)
/// serves many threads. On the CPU, concurrent calls run in parallel; on OpenCL they take
/// turns on the model's queue. Training and `set_params` take `&mut self`.
pub struct Engine<M: Model> {
    device: Device,
    backend: Box<dyn Backend<M>>,
    /// Records of deferred steps on the host (see [`Backend::train_step_deferred`] and
    /// [`Backend::take_losses`]), oldest first. Emptied by each take, never replaced: its
    /// allocation serves every take of a long run, so that no take leaves the allocator a
    /// freed block the size of the record (glibc then grows its heap by that much instead).
    deferred: Vec<StepRecord>,
    /// Deferred records of the caller's own steps, set aside while `fit` runs steps of its
    /// own; [`Engine::take_losses`] returns them first.
    held_losses: Vec<StepRecord>,
    /// Applied to raw features by `logits`, `predict` and `predict_proba`.
    standardizer: Option<Standardizer>,
    /// The optimizer's hyperparameters (each step's learning rate replaces `lr`).
    optimizer: M::Optimizer,
}

impl<M: Model> Engine<M> {
    /// Creates the model on `device`, its parameters initialised from [`DEFAULT_SEED`]:
    /// weights of hidden layers He-normal (`N(0, 2 / fan_in)`) before ReLU, Glorot-normal
    /// (`N(0, 2 / (fan_in + fan_out))`) before tanh, sigmoid or identity
    /// ([`Activation::init_variance`](crate::Activation::init_variance)), of the head
    /// LeCun-normal (`N(0, 1 / fan_in)`), biases zero. Costs one pass over the parameters
    /// and, on OpenCL, building (or loading from the cache) the model's kernels.
    pub fn new(device: &Device) -> Result<Self> {
        Self::with_seed(device, DEFAULT_SEED)
    }

    /// Like [`Engine::new`] with a seed of your own.
    pub fn with_seed(device: &Device, seed: u64) -> Result<Self> {
        let mut values = vec![0.0f32; param_count(M::LAYERS)];
        init_params::<M::Storage>(M::LAYERS, M::ACTIVATIONS, seed, &mut values);
        let flat: Vec<M::Storage> = values.into_iter().map(M::Storage::from_f32).collect();
        Self::from_flat(device, &flat)
    }

    /// Creates the model on `device` with the given parameters, given by value or by
    /// reference (`params` or `&params`).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite.
    pub fn with_params(device: &Device, params: impl Borrow<M::Params>) -> Result<Self> {
        let flat = flatten(params.borrow());
        check::params(M::LAYERS, &flat)?;
        Self::from_flat(device, &flat)
    }

    pub(crate) fn from_flat(device: &Device, flat: &[M::Storage]) -> Result<Self> {
        let backend = device.backend::<M>(flat)?;
        Ok(Engine {
            device: device.clone(),
            backend,
            deferred: Vec::new(),
            held_losses: Vec::new(),
            standardizer: None,
            optimizer: M::Optimizer::default(),
        })
    }

    /// How this model's start-up went on OpenCL, phase by phase (platform, context,
    /// program build or cache load, kernels, buffers, and the first launch once
    /// [`Engine::warm_up`] ran); `None` on the CPU backend. Also printed to stderr at
    /// creation with `TENSORBRIDGE_TRACE_STARTUP=1`.
    #[cfg(feature = "opencl")]
    pub fn startup_report(&self) -> Option<StartupReport> {
        self.backend.startup_report()
    }

    /// Launches every kernel of a train step once on a zero batch and waits, so that
    /// one-time driver work (PoCL compiles a work-group function at a kernel's first
    /// launch) happens now rather than in the first step. Changes neither the parameters
    /// nor the deferred losses. Returns the start-up report (`None` on the CPU backend,
    /// where there is nothing to warm).
    #[cfg(feature = "opencl")]
    pub fn warm_up(&mut self) -> Result<Option<StartupReport>> {
        self.backend.warm_up()?;
        Ok(self.backend.startup_report())
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Copies the parameters to the host (device -> host).
    pub fn params(&self) -> Result<M::Params> {
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.backend.read_params(&mut flat)?;
        Ok(M::Params::from_flat(&flat))
    }

    /// Replaces the parameters (host -> device).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite; the old ones are kept.
    pub fn set_params(&mut self, params: &M::Params) -> Result<()> {
        let flat = flatten(params);
        check::params(M::LAYERS, &flat)?;
        self.backend.write_params(&flat)
    }

    /// Copies a batch to the device (the seed's `Tensor(x)`).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite value.
    pub fn to_device(&self, x: &M::Input) -> Result<DeviceTensor<M::Input>> {
        let flat = x.as_flat();
        check::finite("input", flat, M::BATCH)?;
        Ok(DeviceTensor::new(self.backend.upload(flat)?))
    }

    /// Runs the forward pass on a device-resident batch; the logits stay on the device
    /// until [`DeviceTensor::to_host`].
    ///
    /// # Errors
    /// [`Error::DeviceMismatch`] if `x` lives on another device.
    pub fn forward(&self, x: &DeviceTensor<M::Input>) -> Result<DeviceTensor<M::Logits>> {
        Ok(DeviceTensor::new(self.backend.forward(&*x.buffer)?))
    }

    /// Logits for a host batch: host in, host out (no intermediate device tensor is kept).
    /// With a [standardiser attached](Engine::set_standardizer), `x` holds raw features
    /// and is standardised first (on the host, into a copy).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input (or, under `storage: f16`, a
    /// standardised value beyond ±65504).
    #[inline]
    pub fn logits(&self, x: &M::Input) -> Result<M::Logits> {
        let standardized;
        let flat = match &self.standardizer {
            None => x.as_flat(),
            Some(s) => {
                check::finite("input", x.as_flat(), M::BATCH)?;
                standardized = standardize::<M>(s, x.as_flat());
                &standardized[..]
            }
        };
        let what = if self.standardizer.is_some() { "standardised input" } else { "input" };
        check::finite(what, flat, M::BATCH)?;
        let mut logits = M::Logits::zeroed();
        self.backend.logits_into(flat, logits.as_flat_mut())?;
        Ok(logits)
    }

    /// The predicted class of every row (argmax of the logits; the first on ties). Applies
    /// an attached standardiser as [`Engine::logits`] does.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a non-finite input, or if the logits overflowed.
    #[inline]
    pub fn predict(&self, x: &M::Input) -> Result<M::Labels> {
        let logits = self.logits(x)?;
        let mut classes = M::Labels::zeroed();
        classes_into::<M>(logits.as_flat(), classes.as_flat_mut())?;
        Ok(classes)
    }

    /// Class probabilities: the softmax of every row of the logits, a `BATCH x CLASSES`
    /// matrix whose rows are non-negative and sum to 1 (within `f32` rounding), as
    /// scikit-learn's `predict_proba`. The logits come from the model's device (the CPU
    /// backend or OpenCL), the softmax is taken on the host
    /// ([`host::softmax_rows`](crate::host::softmax_rows)). Applies an attached
    /// standardiser as [`Engine::logits`] does.
    ///
    /// # Errors
    /// Those of [`Engine::logits`]; [`Error::NonFinite`] if the logits overflowed.
    pub fn predict_proba(&self, x: &M::Input) -> Result<M::Logits> {
        let mut p = self.logits(x)?;
        check::finite("logits", p.as_flat(), M::BATCH)?;
        let flat = p.as_flat_mut();
        // Column-major `[B x C]`: the row `r` is `flat[c * B + r]`.
        let mut view = nalgebra::DMatrixViewMut::from_slice(flat, M::BATCH, M::CLASSES);
        softmax_rows(&mut view);
        Ok(p)
    }

    /// Attaches a standardiser: from now on [`Engine::logits`], [`Engine::predict`] and
    /// [`Engine::predict_proba`] take raw features and standardise them first, and
    /// [`Engine::save`](crate::Engine::save) and `save_onnx` write it with the model.
    /// Training calls (`train_step`, `loss`, `gradients`, `fit`, `evaluate`) and the device
    /// tensors of `to_device`/`forward` take features as they are: standardise a training
    /// set yourself ([`Standardizer::apply`](crate::data::Standardizer::apply)).
    ///
    /// # Errors
    /// [`Error::InvalidStandardizer`] if it has another number of features than the model.
    pub fn set_standardizer(&mut self, standardizer: Standardizer) -> Result<()> {
        if standardizer.len() != M::FEATURES {
            return Err(Error::InvalidStandardizer {
                reason: format!("it has {} features, but {} takes {}", standardizer.len(), M::NAME, M::FEATURES),
            });
        }
        self.standardizer = Some(standardizer);
        Ok(())
    }

    /// The attached standardiser, if any.
    pub fn standardizer(&self) -> Option<&Standardizer> {
        self.standardizer.as_ref()
    }

    /// Detaches the standardiser and returns it: `logits` and `predict` then take
    /// standardised features again.
    pub fn take_standardizer(&mut self) -> Option<Standardizer> {
        self.standardizer.take()
    }

    /// Mean softmax cross-entropy of the batch.
    pub fn loss(&self, x: &M::Input, y: &M::Labels) -> Result<f32> {
        self.loss_rows(x, y, M::BATCH)
    }

    /// Like [`Engine::loss`], counting only the first `rows` rows (a padded last batch).
    pub fn loss_rows(&self, x: &M::Input, y: &M::Labels, rows: usize) -> Result<f32> {
        let batch = check::batch::<M>(x, y, rows)?;
        self.backend.loss(batch)
    }

    /// The loss and its gradient with respect to every parameter, in `f32` whatever the
    /// storage: `M::Grads` is `<Name>Params` for `f32` models and `<Name>Grads` (the same
    /// fields in `f32`) for `f16` models.
    pub fn gradients(&self, x: &M::Input, y: &M::Labels) -> Result<(f32, M::Grads)> {
        self.gradients_rows(x, y, M::BATCH)
    }

    /// Like [`Engine::gradients`], counting only the first `rows` rows.
    pub fn gradients_rows(&self, x: &M::Input, y: &M::Labels, rows: usize) -> Result<(f32, M::Grads)> {
        let batch = check::batch::<M>(x, y, rows)?;
        let mut flat = vec![0.0; M::Params::LEN];
        let loss = self.backend.gradients(batch, &mut flat)?;
        Ok((loss, M::Grads::from_flat(&flat)))
    }

    /// One step of the model's optimizer at learning rate `lr` (SGD: `p -= lr * dL/dp`;
    /// the other hyperparameters are those of [`Engine::set_optimizer`], see
    /// [`optim`](crate::optim)); returns the loss before the step.
    ///
    /// Every updated parameter is checked before any is written: on the CPU the new
    /// values are computed into a scratch buffer with the check folded in, then copied
    /// (one extra copy of the parameters); on OpenCL one extra kernel launch on the tiled
    /// path, a check loop and a barrier inside the fused kernel.
    ///
    /// What is detected: a non-finite loss, and an update that would overflow the storage.
    /// What is not: a loss that grows (diverges slowly) while staying finite, or parameters
    /// that grow large but representable; compare successive losses to catch those.
    ///
    /// # Errors
    /// Those of the input checks, [`Error::InvalidLearningRate`],
    /// [`Error::NonFiniteLoss`], and [`Error::UpdateOverflow`] when `p - lr * g` would be
    /// beyond `f32`'s range (or beyond ±65504 under `storage: f16`) for some parameter;
    /// in both cases the update is not applied and the parameters and the optimizer's state
    /// are bit for bit those before the call.
    pub fn train_step(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<f32> {
        self.train_step_rows(x, y, M::BATCH, lr)
    }

    /// Like [`Engine::train_step`], counting only the first `rows` rows (a padded batch:
    /// the step is exactly the one on those rows alone).
    pub fn train_step_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize, lr: f32) -> Result<f32> {
        let (batch, step) = self.step(x, y, rows, lr)?;
        self.backend.train_step(batch, step)
    }

    /// A step's batch and optimizer (its hyperparameters at learning rate `lr`), checked:
    /// the learning rate, then the batch.
    fn step<'a>(
        &self,
        x: &'a M::Input,
        y: &'a M::Labels,
        rows: usize,
        lr: f32,
    ) -> Result<(Batch<'a, M::Storage>, M::Optimizer)> {
        check::learning_rate(lr)?;
        Ok((check::batch::<M>(x, y, rows)?, self.optimizer.with_lr(lr)))
    }

    /// The optimizer's hyperparameters: PyTorch's defaults (see [`optim`](crate::optim))
    /// until [`Engine::set_optimizer`]. Each step's learning rate is the one it is given.
    pub fn optimizer(&self) -> M::Optimizer {
        self.optimizer
    }

    /// Sets the optimizer's hyperparameters for the following steps. The optimizer is the
    /// one the model declares (`optimizer:` in [`model!`](macro@crate::model)), so that passing
    /// another is a compile error. Its state (moments, step count) is kept; see
    /// [`Engine::reset_optimizer`].
    ///
    /// # Errors
    /// [`Error::InvalidHyperparameter`] for a value out of range. The old hyperparameters
    /// are then kept.
    pub fn set_optimizer(&mut self, optimizer: M::Optimizer) -> Result<()> {
        check::optimizer(&optimizer)?;
        self.optimizer = optimizer;
        Ok(())
    }

    /// Clears the optimizer's state (moments zero, step count 0), as before the first
    /// step. [`Engine::set_params`] leaves it alone.
    pub fn reset_optimizer(&mut self) -> Result<()> {
        let zeros = vec![0.0f32; optimizer_len::<M>()];
        self.backend.write_optimizer(&zeros, 0)
    }

    #[cfg(feature = "checkpoint")]
    /// The optimizer's moment buffers (flat: each buffer in the parameters' flat layout,
    /// one after the other) and step count.
    pub(crate) fn optimizer_state(&self) -> Result<(Vec<f32>, u32)> {
        let mut moments = vec![0.0f32; optimizer_len::<M>()];
        let step = self.backend.read_optimizer(&mut moments)?;
        Ok((moments, step))
    }

    #[cfg(feature = "checkpoint")]
    /// Sets hyperparameters read from a checkpoint, which the caller checked as
    /// [`Engine::set_optimizer`] checks them.
    pub(crate) fn restore_optimizer(&mut self, optimizer: M::Optimizer) {
        self.optimizer = optimizer;
    }

    #[cfg(feature = "checkpoint")]
    /// Replaces the optimizer's moment buffers and step count (as
    /// [`Engine::optimizer_state`] returns them); `moments` has their length.
    pub(crate) fn set_optimizer_state(&mut self, moments: &[f32], step: u32) -> Result<()> {
        self.backend.write_optimizer(moments, step)
    }

    /// One step like [`Engine::train_step`], without waiting for its loss: on OpenCL
    /// the batch is uploaded, the step's kernels are enqueued, and the loss is written into
    /// a record on the device, so a loop of steps never stalls on a device -> host round
    /// trip. Read the losses with [`Engine::take_losses`]. A step whose loss is not finite,
    /// or whose update would store a non-finite parameter, still skips its update (the
    /// check runs on the device), and is reported by `take_losses`.
    ///
    /// A tiny model whose batch goes as a kernel argument (see
    /// [`Device::with_upload`](crate::Device::with_upload)) runs up to four of these steps
    /// in one launch: a step may wait on the host for the next ones, and every other call
    /// on the model sends the waiting steps first, so it sees them all, in order.
    ///
    /// # Errors
    /// Those of the input checks and [`Error::InvalidLearningRate`], before anything is
    /// enqueued; OpenCL errors from enqueueing (a failed launch of waiting steps is reported
    /// by the call that sent them, and those steps leave no loss).
    pub fn train_step_deferred(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<()> {
        self.train_step_deferred_rows(x, y, M::BATCH, lr)
    }

    /// Like [`Engine::train_step_deferred`], counting only the first `rows` rows.
    pub fn train_step_deferred_rows(&mut self, x: &M::Input, y: &M::Labels, rows: usize, lr: f32) -> Result<()> {
        let (batch, step) = self.step(x, y, rows, lr)?;
        self.backend.train_step_deferred(batch, step, &mut self.deferred)
    }

    /// One [`Engine::train_step`] (the parameters are updated) whose device commands are
    /// timed, stage by stage, from OpenCL event timestamps: `upload`, `forward[l]` per
    /// layer, `loss`, `backward[l]` per layer from the last, `update` on the tiled
    /// kernels; `upload`, `fused` for the one-launch kernel (no `upload` when the batch
    /// goes as a kernel argument); `tiny` for a tiny model's one-work-item kernel. See [`StepProfile`](crate::StepProfile),
    /// and [`StepProfile::to_json`](crate::StepProfile::to_json) for a machine-readable
    /// form.
    ///
    /// ```no_run
    /// # tensorbridge::model! { pub struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 } }
    /// # use tensorbridge::{Device, Engine, HostTensor, Model};
    /// let device = Device::opencl()?.with_profiling(true);
    /// let mut model = Engine::<Mnist>::new(&device)?;
    /// let x = <Mnist as Model>::Input::from_flat(&vec![0.5; 128 * 784]);
    /// let y = <Mnist as Model>::Labels::from_flat(&vec![3; 128]);
    /// let profile = model.profile_step(&x, &y, 0.01)?;
    /// println!("{profile}{}", profile.to_json());
    /// # Ok::<(), tensorbridge::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Engine::train_step`]; [`Error::Unsupported`] on the CPU backend and on
    /// an OpenCL device made without [`Device::with_profiling`](crate::Device::with_profiling).
    pub fn profile_step(&mut self, x: &M::Input, y: &M::Labels, lr: f32) -> Result<crate::profile::StepProfile> {
        let (batch, step) = self.step(x, y, M::BATCH, lr)?;
        self.backend.profile_step(batch, step)
    }

    /// Sends a batch to the device as a train step would (see
    /// [`Device::with_upload`](crate::Device::with_upload)) and waits; runs no kernel. For
    /// the upload benchmark; not a public API.
    #[doc(hidden)]
    pub fn __upload_batch(&mut self, x: &M::Input, y: &M::Labels) -> Result<()> {
        let batch = check::batch::<M>(x, y, M::BATCH)?;
        self.backend.upload_batch(batch)
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
        self.backend.take_losses(&mut self.deferred)?;
        let held = std::mem::take(&mut self.held_losses);
        finite_losses(held.into_iter().chain(self.deferred.drain(..)))
    }

    /// Sets aside the deferred losses recorded so far, so that internal steps (`fit`'s)
    /// can read their own with [`Engine::take_own_losses`] and lose none of the caller's.
    #[cfg(feature = "train")]
    pub(crate) fn hold_losses(&mut self) -> Result<()> {
        self.backend.take_losses(&mut self.deferred)?;
        self.held_losses.append(&mut self.deferred);
        Ok(())
    }

    /// The deferred losses recorded since [`Engine::hold_losses`], checked like
    /// [`Engine::take_losses`]; held ones stay held.
    #[cfg(feature = "train")]
    pub(crate) fn take_own_losses(&mut self) -> Result<Vec<f32>> {
        self.backend.take_losses(&mut self.deferred)?;
        finite_losses(self.deferred.drain(..))
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
/// loss that is not finite, or the error its record holds. The records are consumed either
/// way (a drain drops those after a failed one); the losses' vector is allocated once, at
/// its size.
fn finite_losses(records: impl Iterator<Item = StepRecord>) -> Result<Vec<f32>> {
    let mut losses = Vec::with_capacity(records.size_hint().0);
    for record in records {
        match record {
            Ok(loss) if loss.is_finite() => losses.push(loss),
            Ok(loss) => return Err(Error::NonFiniteLoss { loss }),
            Err(err) => return Err(*err),
        }
    }
    Ok(losses)
}

/// The standardised copy of a column-major `[BATCH x FEATURES]` batch.
fn standardize<M: Model>(s: &Standardizer, x: &[M::Storage]) -> Vec<M::Storage> {
    x.iter().enumerate().map(|(k, v)| M::Storage::from_f32(s.standardize(k / M::BATCH, v.to_f32()))).collect()
}

/// Values in the optimizer's moment buffers of model `M`.
pub(crate) fn optimizer_len<M: Model>() -> usize {
    <M::Optimizer as Optimizer>::MOMENTS * param_count(M::LAYERS)
}

fn flatten<P: Params>(params: &P) -> Vec<P::Elem> {
    let mut flat = vec![P::Elem::ZERO; P::LEN];
    params.write_flat(&mut flat);
    flat
}
