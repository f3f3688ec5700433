//! The OpenCL backend: a model's parameters, gradients and scratch buffers resident on one
//! device, and the kernels of `cl/` specialised for its shape (see `crate::kernels` for
//! which kernels run). Nothing outside this module names an OpenCL type.
//!
//! Per train step only the batch goes up (one non-blocking write of `x` and the labels,
//! from one of two staging slots) and nothing comes down unless asked for: the step's loss
//! is written into a device-side record (`losses`) that `train_step` reads at once and
//! `train_step_deferred` leaves for [`OpenClBackend::take_losses`]. A tiny model's
//! steps (`crate::kernels::tiny_plan`) take the batch by value and one buffer, the
//! parameters and the loss record together (`state`, of which `params` and `losses` are
//! sub-buffers); its deferred steps wait on the host in a group of up to four, sent as one
//! launch when full or when any other call needs the model (`OpenClBackend::ready`).
//!
//! `f16` storage: the parameter buffer and the batch's features are `half` on the device
//! (2 bytes a value: half the upload per step), read through `vload_half` and written
//! through `vstore_half_rte` (no `cl_khr_fp16` needed), with all arithmetic in `float`.
//! Gradients, activations, logits and losses stay `float`. The tiled path first widens the
//! batch into the activation scratch (`tb_widen_x`, one launch), so that its kernels read
//! `float` inputs in every layer.
//!
//! Optimizers: plain SGD (no weight decay) updates the parameters inside the step's kernels
//! (tiny, fused, or the tiled `tb_check_update` and `tb_sgd`). On the tiny kernel, so do
//! momentum, Adam and AdamW, whose state and hyperparameters then live in the kernel's one
//! buffer (`crate::kernels::tiny_opt_words`; the hyperparameters written when they change).
//! Every other step (those on the fused and tiled paths, and SGD with weight decay) runs
//! the path's gradients, then `tb_opt_check` and `tb_opt_apply` (`cl/update.cl`). The
//! formulas are those `crate::math::optim` emits into the prelude. The state lives in one
//! device buffer (`opt`, `crate::kernels::opt_words`; a sub-buffer of the tiny kernel's):
//! the moments (`f32` whatever the storage), then the step count, which only an accepted
//! step advances (a refused one writes no parameter, moment or count), so deferred steps
//! need no round trip. Checkpoints read and write it (`read_optimizer`,
//! `write_optimizer`).

mod cl;
mod gemm;
pub(crate) mod int8;
mod platform;
mod program;

use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use self::cl::{Event, Kernel, Mem, Program, Queue};
pub(crate) use self::platform::{enumerate, ClDevice, Found};
pub use self::program::CACHE_DIR_ENV;
use super::{Backend, DeviceBuffer, StepRecord};
use crate::check::Batch;
use crate::cpu::update_overflow;
use crate::error::{Error, Result};
use crate::info::{ClOptions, DeviceInfo, KernelPath, Upload};
use crate::kernels::{
    argument_words, batch_words, fused_plan, kernel, kernel_source, opt_step_word, opt_words, scratch_offsets,
    tiny_opt_words, tiny_plan, Mode, TinyPlan, LOSS_MAX_WG, TINY_CTRL, TINY_OPT_ALIGN, UPDATE_VEC,
};
use crate::layout::{acts_len, delta_len, param_count};
use crate::math::optim::Optimizer;
use crate::model::{Element, Model, StorageElement};
use crate::profile::{Stage, StepProfile};
use crate::startup::{self, ProgramOrigin, StartupReport};

/// Deferred losses kept on the device before they are drained to the host. Each slot is two
/// 32-bit words of the `losses` buffer (see [`word`]): the loss, then the step's update
/// status (0, or `!k` for the first parameter `k` whose update would not fit the storage;
/// set by the update check, read by `tb_sgd`, which then skips the step).
const LOSS_RING: usize = 1024;
/// The loss slot of immediate calls (`loss`, `gradients`, `train_step`).
const IMMEDIATE: usize = LOSS_RING;

/// 32-bit words per loss slot: the loss, then the update status.
const SLOT_WORDS: usize = 2;

/// The index of loss slot `slot`'s first word in the `losses` buffer (its status follows).
fn slot_start(slot: usize) -> usize {
    SLOT_WORDS * slot
}

/// [`slot_start`] as the kernels' `loss_slot` argument.
fn word(slot: usize) -> i32 {
    slot_start(slot) as i32
}

/// Opens the `index`-th usable device of [`enumerate`] (or the first whose type passes
/// `want`, when `index` is `None`).
pub(crate) fn open(index: Option<usize>, want: impl Fn(&DeviceInfo) -> bool) -> Result<Arc<ClDevice>> {
    let start = Instant::now();
    let found = enumerate()?;
    open_found(found, index, want, start.elapsed())
}

/// [`open`] among devices [`enumerate`] already found (in `platform_time`), for a caller
/// that looked at them first.
pub(crate) fn open_found(
    mut found: Vec<Found>,
    index: Option<usize>,
    want: impl Fn(&DeviceInfo) -> bool,
    platform_time: std::time::Duration,
) -> Result<Arc<ClDevice>> {
    let count = found.len();
    let pos = match index {
        Some(i) if i < count => i,
        Some(i) => {
            return Err(Error::InvalidDevice {
                value: format!("opencl:{i}"),
                reason: format!("there are {count} usable OpenCL devices (opencl:0 to opencl:{})", count - 1),
            })
        }
        None => found
            .iter()
            .position(|f| want(&f.info))
            .ok_or_else(|| Error::NoOpenClDevice { reason: "no OpenCL device of the wanted type".to_string() })?,
    };
    let mut device = ClDevice::open(found.swap_remove(pos))?;
    device.platform_time = platform_time;
    Ok(Arc::new(device))
}

/// The build options for `device`: the GEMM kernels' register blocks (`TB_RM`, `TB_RN`,
/// `TB_GI`, `TB_GO`, see `gemm.rs`), and a tile width `TB_TILE` (the largest of 16, 8 and 4 whose square fits
/// the device's work-group limit), kept for kernels that tile through local memory.
fn build_options(device: &ClDevice) -> Result<(String, usize)> {
    let max = device.info.max_work_group_size;
    let tile = [16, 8, 4].into_iter().find(|t| t * t <= max).ok_or_else(|| Error::Unsupported {
        device: device.label(),
        reason: format!("work-groups of at most {max} work-items; the tiled kernels need 16"),
    })?;
    Ok((format!("-D TB_TILE={tile} {}", gemm::options()), tile))
}

/// Compiles `source` for `device`, for tests of the build-failure path.
pub(crate) fn build_source(device: &ClDevice, source: &str) -> Result<()> {
    let (options, _) = build_options(device)?;
    program::build_from_source(device, source, &options).map(drop)
}

/// One launch of an empty kernel (one work-item), then `clFinish` (`read: false`) or a
/// blocking read of 4 bytes (`read: true`): the floor under any kernel's cost on this
/// device, and under a step that reads its loss back.
pub(crate) fn empty_launch(device: &ClDevice, read: bool) -> Result<()> {
    let mut slot = device.empty.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        let program = program::build_from_source(device, "__kernel void tb_empty(void) {}", "")?;
        let queue = Queue::new(&device.context, device.id, false)?;
        *slot = Some((queue, Kernel::new(&program, "tb_empty")?, Mem::new::<f32>(&device.context, 1)?));
    }
    match slot.as_ref() {
        Some((queue, kernel, word)) => {
            queue.launch(kernel, &[1], &[1])?;
            if read {
                queue.read(word, 0, &mut [0.0f32])
            } else {
                queue.finish()
            }
        }
        None => Ok(()),
    }
}

/// Where this device's programs came from: (compiled, loaded from disk, reused in memory).
pub(crate) fn build_counts(device: &ClDevice) -> (usize, usize, usize) {
    let c = &device.counts;
    (c.from_source.load(Ordering::Relaxed), c.from_disk.load(Ordering::Relaxed), c.from_memory.load(Ordering::Relaxed))
}

/// A device-resident tensor: the buffer, the queue that produces it, and its device.
pub(crate) struct ClTensor {
    mem: Mem,
    queue: Arc<Queue>,
    device: Arc<ClDevice>,
}

impl ClTensor {
    /// Whether the tensor lives in `device`'s context.
    pub(crate) fn is_on(&self, device: &Arc<ClDevice>) -> bool {
        Arc::ptr_eq(&self.device, device)
    }
}

impl DeviceBuffer for ClTensor {
    fn location(&self) -> String {
        self.device.label()
    }
    /// Waits for the kernels that write the tensor, then copies it into `out`.
    fn read_f32(&self, out: &mut [f32]) -> Result<()> {
        self.queue.read(&self.mem, 0, out)
    }
    fn read_f16(&self, out: &mut [half::f16]) -> Result<()> {
        self.queue.read(&self.mem, 0, out)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One staging slot for batch uploads: the device buffer, the host words it is written
/// from ([`BatchPath::Copy`]; empty otherwise), and the write's (or unmap's) event (the
/// host words may change only once it completed).
struct Slot {
    mem: Mem,
    staging: Vec<u32>,
    write: Option<Event>,
}

/// How the batch goes up, resolved from [`Upload`] for this model and device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchPath {
    /// A non-blocking write from `Slot::staging`.
    Copy,
    /// The slot's buffer is host-allocated: mapped, filled in place, unmapped.
    Mapped,
    /// By value, as the fused kernel's `batch_arg`.
    Arguments,
}

/// The kernels, set up through `&mut Inner` only (`clSetKernelArg` is not thread-safe: the
/// backend's mutex serialises every use).
struct Kernels {
    forward: Kernel,
    loss: Kernel,
    backward: Kernel,
    backward_inputs: Kernel,
    sgd: Kernel,
    fused: Kernel,
    /// The whole step in one work-item, for tiny models (`cl/tiny_step.cl`): one step, and
    /// a group of deferred steps.
    tiny: Kernel,
    tiny_group: Kernel,
    /// `f16` batch -> `float` activation scratch (tiled path of `f16` models only).
    widen: Kernel,
    /// The tiled path's update check, before `sgd`.
    check: Kernel,
    /// Every other optimizer's step (`cl/update.cl`): its check, then its update.
    opt_check: Kernel,
    opt_update: Kernel,
}

impl Kernels {
    /// Every kernel of `program`.
    fn new(program: &Program) -> Result<Kernels> {
        Ok(Kernels {
            forward: Kernel::new(program, kernel::tb_forward::NAME)?,
            loss: Kernel::new(program, kernel::tb_loss::NAME)?,
            backward: Kernel::new(program, kernel::tb_backward::NAME)?,
            backward_inputs: Kernel::new(program, kernel::tb_backward_inputs::NAME)?,
            sgd: Kernel::new(program, kernel::tb_sgd::NAME)?,
            fused: Kernel::new(program, kernel::tb_train_step::NAME)?,
            tiny: Kernel::new(program, kernel::tb_tiny_step::NAME)?,
            tiny_group: Kernel::new(program, kernel::tb_tiny_steps::NAME)?,
            widen: Kernel::new(program, kernel::tb_widen_x::NAME)?,
            check: Kernel::new(program, kernel::tb_check_update::NAME)?,
            opt_check: Kernel::new(program, kernel::tb_opt_check::NAME)?,
            opt_update: Kernel::new(program, kernel::tb_opt_apply::NAME)?,
        })
    }
}

// The two tiny kernels take the same arguments, but for how many words (their indices are
// set through `tb_tiny_step`'s names).
const _: () = assert!(
    kernel::tb_tiny_step::STATE == kernel::tb_tiny_steps::STATE
        && kernel::tb_tiny_step::TB_TINY_ONE_ARGS == kernel::tb_tiny_steps::TB_TINY_ARGS
);

/// How a step runs on this device.
#[derive(Clone, Copy)]
struct Plan {
    fused: bool,
    /// A step with the batch by value runs `tb_tiny_step`.
    tiny: Option<TinyPlan>,
    fused_wg: usize,
    loss_wg: usize,
}

/// The deferred-loss record: `pending` losses in the ring from `start` (those drained to the
/// host are in the engine's record).
#[derive(Default)]
struct LossRecord {
    start: usize,
    pending: usize,
}

/// The OpenCL backend of model `M`: its state behind a mutex, so that one model serves
/// `&self` calls from many threads (OpenCL kernels take their arguments one call at a time,
/// which only one thread may do at once).
pub(crate) struct OpenClBackend<M> {
    device: Arc<ClDevice>,
    inner: Mutex<Inner<M>>,
}

/// The state of an [`OpenClBackend`].
struct Inner<M> {
    device: Arc<ClDevice>,
    queue: Arc<Queue>,
    kernels: Kernels,
    plan: Plan,
    params: Mem,
    grads: Mem,
    /// Activation scratch of the tiled kernels (layer outputs at `TB_AOUT_l`).
    acts: Mem,
    /// The two delta buffers of the tiled backward pass.
    delta: [Mem; 2],
    /// `LOSS_RING` deferred slots, then the immediate one.
    losses: Mem,
    /// The optimizer's state (`kernels::opt_words`): its moment buffers, then its step
    /// count, which only an accepted step advances.
    opt: Mem,
    slots: [Slot; 2],
    /// Tiny models: the one buffer that holds the parameters (`params` is a sub-buffer at
    /// its start), an optimizer's state with moments (`opt`, a sub-buffer) and
    /// hyperparameters (`kernels::tiny_opt_words`), and the loss record (`losses`, a
    /// sub-buffer at word `losses_word`), which is all `tb_tiny_step` takes besides its
    /// words.
    state: Option<Mem>,
    /// The word of `state` where `losses` starts.
    losses_word: usize,
    /// The tiny kernel's by-value words: the step count, then each step's words.
    tiny_words: Vec<u32>,
    /// The hyperparameters last written to the tiny kernel's state (`tiny_opt_words`), the
    /// rate's slot 0 (each step passes its own), as bits.
    tiny_hyper: Option<[u32; 8]>,
    /// Steps in `tiny_words` not yet sent to the device, and how many of them are deferred
    /// ones (counted in `record.pending`).
    group: usize,
    group_deferred: usize,
    /// While `train_step_deferred` enqueues: a tiny step may wait in the group.
    deferring: bool,
    next_slot: usize,
    record: LossRecord,
    /// `(input offset, output offset)` of each layer in the activation scratch.
    offsets: Vec<(usize, usize)>,
    /// How the start-up went (see `crate::startup`).
    startup: StartupReport,
    /// How the batch goes up.
    batch_path: BatchPath,
    /// The fused kernel's by-value batch (`TB_ARG_WORDS` words), for [`BatchPath::Arguments`].
    arg_words: Vec<u32>,
    /// Whether the queue records timestamps (`Device::with_profiling`).
    profiling: bool,
    /// While [`Inner::profile_step`] runs: every command's stage and event.
    events: Option<Vec<(String, Event)>>,
    /// The fused kernel's arguments as last set, by index (see `run_fused`).
    fused_args: Vec<Option<u64>>,
    _model: PhantomData<fn() -> M>,
}

/// 32-bit words of the batch's features in a staging slot: one per `f32`, one per two
/// `f16` (the labels follow, at `TB_Y` in the kernels).
fn x_words<M: Model>() -> usize {
    let n = M::BATCH * M::FEATURES;
    if M::Storage::IS_F16 {
        n.div_ceil(2)
    } else {
        n
    }
}

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

fn to_i32(v: usize, device: &ClDevice, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Unsupported {
        device: device.label(),
        reason: format!("{what} ({v}) exceeds the kernels' 32-bit indexing"),
    })
}

impl<M: Model> OpenClBackend<M> {
    /// # Errors
    /// Those of building the kernels and making the buffers.
    pub(crate) fn new(device: &Arc<ClDevice>, options: ClOptions, flat: &[M::Storage]) -> Result<Self> {
        Ok(OpenClBackend { device: Arc::clone(device), inner: Mutex::new(Inner::new(device, options, flat)?) })
    }

    /// The state (a poisoned lock only means a panic in another thread between two OpenCL
    /// calls: the device buffers are whole, and every call sets all the arguments it uses).
    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inner_mut(&mut self) -> &mut Inner<M> {
        self.inner.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, with the tiny kernel's waiting steps sent first ([`Inner::send_group`]):
    /// what every call but a deferred step uses, so that calls see the model in order.
    fn ready(&self) -> Result<MutexGuard<'_, Inner<M>>> {
        let mut inner = self.lock();
        inner.send_group()?;
        Ok(inner)
    }

    /// [`Self::ready`] through `&mut self`.
    fn ready_mut(&mut self) -> Result<&mut Inner<M>> {
        let inner = self.inner_mut();
        inner.send_group()?;
        Ok(inner)
    }
}

impl<M: Model> Inner<M> {
    fn new(device: &Arc<ClDevice>, options: ClOptions, flat: &[M::Storage]) -> Result<Self> {
        let path = options.path;
        let dims = M::LAYERS;
        let (b, f) = (M::BATCH, M::FEATURES);
        let acts = acts_len(dims, b);
        for (what, n) in [
            ("the activation scratch", acts),
            ("the parameter count", param_count(dims)),
            ("the batch", b * (f + 1)),
            ("the optimizer's state", opt_words::<M>()),
        ] {
            to_i32(n, device, what)?;
        }
        let (build, _) = build_options(device)?;
        let shape = fused_plan(dims, b);
        let start = Instant::now();
        let before = build_counts(device);
        let label = device.label();
        let (kernels, fused_wg) = startup::with_build_notice(M::NAME, &label, || -> Result<(Kernels, usize)> {
            let source = kernel_source::<M>();
            let kernels = Kernels::new(&*program::build(device, &source, &build, kernel::ALL)?)?;
            // A driver may allow the fused kernel fewer work-items than the shape's
            // work-group (Mesa 22.3's rusticl reports 32 for every kernel): then the
            // kernel again, on the largest power of two it allows (it strides over any
            // work-group).
            let limit = kernels.fused.max_work_group(device.id)?;
            let wg = 1usize << limit.max(1).ilog2();
            if !shape.fits || wg >= shape.wg {
                return Ok((kernels, shape.wg));
            }
            let options = format!("{build} -D TB_FUSED_WG={wg}");
            Ok((Kernels::new(&*program::build(device, &source, &options, kernel::ALL)?)?, wg))
        })?;
        let program_time = start.elapsed();
        let after = build_counts(device);
        let origin = if after.0 > before.0 {
            ProgramOrigin::Compiled
        } else if after.1 > before.1 {
            ProgramOrigin::DiskCache
        } else {
            ProgramOrigin::Memory
        };
        let start = Instant::now();
        let gemm_wg = gemm::LOCAL[0] * gemm::LOCAL[1];
        for k in [&kernels.forward, &kernels.backward, &kernels.backward_inputs] {
            if k.max_work_group(device.id)? < gemm_wg {
                return Err(Error::Unsupported {
                    device: device.label(),
                    reason: format!("the tiled kernels need work-groups of {gemm_wg} work-items"),
                });
            }
        }
        let fused_fits = shape.fits
            && kernels.fused.max_work_group(device.id)? >= fused_wg
            && kernels.fused.local_mem(device.id)? <= device.info.local_mem_bytes;
        let fused = match path {
            KernelPath::Auto => fused_fits && shape.fused,
            KernelPath::Tiled => false,
            KernelPath::Fused if fused_fits => true,
            KernelPath::Fused => {
                return Err(Error::Unsupported {
                    device: device.label(),
                    reason: format!(
                        "the fused kernel was asked for, but `{}` needs {} bytes of local memory (limit {}) or the device cannot run its work-group of {}",
                        M::NAME,
                        shape.local_bytes,
                        crate::kernels::FUSED_MAX_LOCAL_BYTES,
                        fused_wg
                    ),
                })
            }
        };
        let loss_max = kernels.loss.max_work_group(device.id)?.min(LOSS_MAX_WG);
        let loss_wg = b.next_power_of_two().min(1 << loss_max.max(1).ilog2());

        let batch_path = batch_path::<M>(device, options.upload, fused)?;
        // The tiny kernel: where the model would run fused with the batch by value, unless
        // the fused work-group kernel was asked for by name, and the fused kernel has a
        // work-item per row (then both sum the rows' losses in the same order).
        // An optimizer with moments keeps its state in the tiny kernel's buffer too, at an
        // origin that must suit the device's sub-buffers.
        let opt_fits = tiny_opt_words::<M>().is_none() || TINY_OPT_ALIGN.is_multiple_of(device.base_align_bytes());
        let tiny = tiny_plan::<M>().filter(|_| {
            path == KernelPath::Auto
                && fused
                && batch_path == BatchPath::Arguments
                && fused_wg >= b.next_power_of_two()
                && opt_fits
        });
        let kernels_time = start.elapsed();
        let start = Instant::now();
        let context = &device.context;
        let queue = Arc::new(Queue::new(context, device.id, options.profiling)?);
        let loss_words = slot_start(LOSS_RING + 1);
        let (state, params, losses, losses_word, opt) = match tiny {
            Some(_) => {
                // One buffer: the parameters; an optimizer with moments, its state and its
                // hyperparameters (`tiny_opt_words`); then the loss record at the first
                // offset a sub-buffer may start from.
                let param_bytes = std::mem::size_of_val(flat).max(1);
                let used = tiny_opt_words::<M>().map_or(param_bytes, |(_, hyper)| 4 * (hyper + 8));
                let origin = round_up(used, device.base_align_bytes());
                let words = origin / 4 + loss_words;
                to_i32(words, device, "the tiny kernel's state")?;
                let state = Mem::new::<u32>(context, words)?;
                let params = state.sub(0, param_bytes)?;
                let losses = state.sub(origin, 4 * loss_words)?;
                queue.write(&params, 0, flat)?;
                queue.write(&losses, 0, &vec![0u32; loss_words])?;
                let opt = match tiny_opt_words::<M>() {
                    Some((opt, _)) => {
                        // The state and the hyperparameters start as zeros (the host writes
                        // the hyperparameters before a step reads them).
                        let opt = state.sub(4 * opt, 4 * opt_words::<M>())?;
                        queue.write(
                            &state,
                            param_bytes.div_ceil(4),
                            &vec![0u32; used / 4 - param_bytes.div_ceil(4)],
                        )?;
                        opt
                    }
                    None => Mem::from_slice(context, &vec![0u32; opt_words::<M>()])?,
                };
                (Some(state), params, losses, origin / 4, opt)
            }
            None => (
                None,
                Mem::from_slice(context, flat)?,
                Mem::from_slice(context, &vec![0.0f32; loss_words])?,
                0,
                Mem::from_slice(context, &vec![0u32; opt_words::<M>()])?,
            ),
        };
        let grads = Mem::from_slice(context, &vec![0.0f32; param_count(dims)])?;
        // The fused kernel keeps activations and deltas in local memory.
        let (acts_n, delta_n) = if fused { (1, 1) } else { (acts, delta_len(dims, b)) };
        let acts_mem = Mem::new::<f32>(context, acts_n)?;
        let delta = [Mem::new::<f32>(context, delta_n)?, Mem::new::<f32>(context, delta_n)?];
        let words = batch_words::<M>();
        let slot = || -> Result<Slot> {
            Ok(match batch_path {
                BatchPath::Copy => Slot { mem: Mem::new::<u32>(context, words)?, staging: vec![0; words], write: None },
                BatchPath::Mapped => {
                    Slot { mem: Mem::new_host::<u32>(context, words)?, staging: Vec::new(), write: None }
                }
                // The kernel's buffer arguments still need a buffer: a one-word one.
                BatchPath::Arguments => Slot { mem: Mem::new::<u32>(context, 1)?, staging: Vec::new(), write: None },
            })
        };
        let slots = [slot()?, slot()?];
        let offsets = (0..dims.len() - 1).map(|l| scratch_offsets(dims, b, l)).collect();
        let startup = StartupReport {
            model: M::NAME,
            device: label,
            platform: device.platform_time,
            context: device.context_time,
            program: program_time,
            origin,
            kernels: kernels_time,
            buffers: start.elapsed(),
            first_launch: None,
        };
        let mut inner = Inner {
            device: Arc::clone(device),
            queue,
            kernels,
            plan: Plan { fused, tiny, fused_wg, loss_wg },
            params,
            grads,
            acts: acts_mem,
            delta,
            losses,
            opt,
            slots,
            state,
            losses_word,
            tiny_words: vec![0; 4 * tiny.map_or(0, |t| t.args)],
            tiny_hyper: None,
            group: 0,
            group_deferred: 0,
            deferring: false,
            next_slot: 0,
            record: LossRecord::default(),
            offsets,
            startup,
            batch_path,
            arg_words: vec![0; argument_words::<M>().unwrap_or(1)],
            profiling: options.profiling,
            events: None,
            fused_args: vec![None; 16],
            _model: PhantomData,
        };
        if let (Some(state), Some(plan)) = (&inner.state, tiny) {
            // Set once; the words are set before every launch, but every argument must
            // have a value from the first.
            let kernels = &mut inner.kernels;
            for (k, args) in [(&mut kernels.tiny, plan.one_args), (&mut kernels.tiny_group, plan.args)] {
                k.set_mem(kernel::tb_tiny_step::STATE, state)?;
                for (i, four) in inner.tiny_words.chunks_exact(4).take(args).enumerate() {
                    k.set_words(kernel::tb_tiny_step::TB_TINY_ONE_ARGS + i as u32, four)?;
                }
            }
        }
        if startup::tracing() {
            inner.warm_up()?;
            eprintln!("{}", inner.startup);
        }
        Ok(inner)
    }

    /// Launches every kernel a train step and a forward pass use once, on a zero batch,
    /// and waits: on PoCL the first launch of a kernel compiles its work-group function,
    /// which this moves out of the first step. The parameters, the deferred losses and
    /// the staging slots' contents that matter are unchanged: the gradients are computed
    /// (into `grads`, which every gradient call rewrites), and the update runs with a NaN
    /// loss in the immediate slot, so it changes nothing. Records the time as the
    /// report's first launch (the first call only).
    fn warm_up(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let x = vec![M::Storage::ZERO; M::BATCH * M::FEATURES];
        let y = vec![0u32; M::BATCH];
        let batch = Batch { x: &x, y: &y, rows: M::BATCH };
        self.enqueue(batch, M::Optimizer::default(), Mode::Gradients, IMMEDIATE)?;
        if let Some(plan) = self.plan.tiny {
            // A NaN rate: no update fits, so nothing is stored.
            self.upload_batch(batch)?;
            self.run_tiny(plan, M::BATCH, f32::NAN, IMMEDIATE)?;
        }
        if !self.plan.fused || (<M::Optimizer as Optimizer>::MOMENTS > 0 && self.plan.tiny.is_none()) {
            // A NaN loss: the updates write nothing (the check's candidate step count is
            // rewritten by every step's check before its update reads it).
            self.queue.write(&self.losses, slot_start(IMMEDIATE), &[f32::NAN])?;
            if <M::Optimizer as Optimizer>::MOMENTS > 0 {
                self.run_opt(&M::Optimizer::default(), IMMEDIATE)?;
            } else {
                self.run_sgd(0.0, IMMEDIATE)?;
            }
        }
        self.queue.finish()?;
        let took = start.elapsed();
        if self.startup.first_launch.is_none() {
            self.startup.first_launch = Some(took);
        }
        Ok(took)
    }

    /// Sends the batch up the model's way: into the next staging slot (returned as
    /// `Input::Slot`), or into the by-value argument words (`Input::Words`).
    fn upload_batch(&mut self, batch: Batch<'_, M::Storage>) -> Result<Input<'static>> {
        if self.batch_path == BatchPath::Arguments {
            batch_into_words::<M>(batch, &mut self.arg_words);
            return Ok(Input::Words);
        }
        let index = self.next_slot;
        self.next_slot ^= 1;
        let slot = &mut self.slots[index];
        if let Some(event) = slot.write.take() {
            event.wait()?;
        }
        let event = match self.batch_path {
            BatchPath::Mapped => {
                // Blocking: returns once the earlier commands (those reading this slot
                // included) are done.
                let mapped = self.queue.map_write(&slot.mem)?;
                let words = slot.mem.len::<u32>();
                if mapped.align_offset(std::mem::align_of::<u32>()) != 0 {
                    // SAFETY: `mapped` was just returned by `map_write` for `slot.mem`.
                    let _ = unsafe { self.queue.unmap(&slot.mem, mapped) };
                    return Err(Error::Unsupported {
                        device: self.device.label(),
                        reason: "a mapped buffer is not 4-byte aligned; use Upload::Copy".to_string(),
                    });
                }
                {
                    // SAFETY: the map covers the whole buffer, `words` 32-bit words, at a
                    // 4-byte-aligned address (checked above), and stays valid until the
                    // unmap below; no other reference to it exists meanwhile (the slot is
                    // ours, and the queue's earlier commands completed in the blocking map).
                    let view = unsafe { std::slice::from_raw_parts_mut(mapped.cast::<u32>(), words) };
                    batch_into_words::<M>(batch, view);
                }
                // SAFETY: `mapped` came from `map_write` on `slot.mem`, unmapped once here,
                // and `view` (its only use) is gone.
                unsafe { self.queue.unmap(&slot.mem, mapped)? }
            }
            _ => {
                batch_into_words::<M>(batch, &mut slot.staging);
                // SAFETY: `slot.staging` is neither written nor freed before `slot.write`
                // has completed: it is rewritten only after waiting on that event (above),
                // and `Drop` finishes the queue before the slots are freed.
                unsafe { self.queue.write_async(&slot.mem, &slot.staging)? }
            }
        };
        if let Some(events) = &mut self.events {
            events.push(("upload".to_string(), event));
        } else {
            slot.write = Some(event);
        }
        Ok(Input::Slot(index))
    }

    /// Keeps `event` under `stage` while a step is being profiled.
    fn record(&mut self, stage: impl FnOnce() -> String, event: Event) {
        if let Some(events) = &mut self.events {
            events.push((stage(), event));
        }
    }

    /// The fused kernel in `mode` on input `x` (the batch and labels of a staging slot, or
    /// a tensor for [`Mode::Forward`]), the loss going to `slot`, the logits of
    /// [`Mode::Forward`] to `out`.
    #[allow(clippy::too_many_arguments)]
    fn run_fused(
        &mut self,
        x_in: Input<'_>,
        rows: usize,
        lr: f32,
        mode: Mode,
        slot: usize,
        out: Option<&Mem>,
    ) -> Result<()> {
        if let (Mode::Step, Some(plan), Input::Words) = (mode, self.plan.tiny, &x_in) {
            return self.run_tiny(plan, rows, lr, slot);
        }
        use kernel::tb_train_step as arg;
        let k = &mut self.kernels.fused;
        let seen = &mut self.fused_args;
        // Each argument is set only when it differs from the value it was last set to
        // (`clSetKernelArg` calls are a good part of a small step's host time). Cached
        // are scalars and the backend's own buffers, which live as long as it; a tensor
        // or an output buffer is always set (a freed buffer's handle may come back).
        let mut set = |index: u32, key: Option<u64>, set: &mut dyn FnMut(&mut Kernel) -> Result<()>| -> Result<()> {
            let cached = seen.get_mut(index as usize);
            match (key, cached) {
                (Some(key), Some(last)) if *last == Some(key) => Ok(()),
                (key, cached) => {
                    if let Some(last) = cached {
                        *last = None;
                    }
                    set(k)?;
                    if let (Some(key), Some(last)) = (key, seen.get_mut(index as usize)) {
                        *last = Some(key);
                    }
                    Ok(())
                }
            }
        };
        let (x, x_key) = match x_in {
            Input::Tensor(mem) => (mem, None),
            Input::Slot(i) => (&self.slots[i & 1].mem, Some((i & 1) as u64)),
            Input::Words => (&self.slots[0].mem, Some(0)),
        };
        let by_value = matches!(x_in, Input::Words);
        if by_value {
            set(arg::BATCH_ARG, None, &mut |k| k.set_words(arg::BATCH_ARG, &self.arg_words))?;
        } else {
            // Unread; but every argument must be set once.
            set(arg::BATCH_ARG, Some(0), &mut |k| k.set_words(arg::BATCH_ARG, &self.arg_words))?;
        }
        set(arg::BATCH_IN_ARG, Some(u64::from(by_value)), &mut |k| {
            k.set_scalar(arg::BATCH_IN_ARG, i32::from(by_value))
        })?;
        set(arg::PARAMS, Some(0), &mut |k| k.set_mem(arg::PARAMS, &self.params))?;
        set(arg::GRADS, Some(0), &mut |k| k.set_mem(arg::GRADS, &self.grads))?;
        set(arg::X, x_key, &mut |k| k.set_mem(arg::X, x))?;
        set(arg::BATCH, x_key, &mut |k| k.set_mem(arg::BATCH, x))?;
        set(arg::ROWS_ARG, Some(rows as u64), &mut |k| k.set_scalar(arg::ROWS_ARG, rows as i32))?;
        set(arg::LR, Some(u64::from(lr.to_bits())), &mut |k| k.set_scalar(arg::LR, lr))?;
        set(arg::MODE, Some(mode as u64), &mut |k| k.set_scalar(arg::MODE, mode as i32))?;
        set(arg::LOSSES, Some(0), &mut |k| k.set_mem(arg::LOSSES, &self.losses))?;
        set(arg::LOSS_SLOT, Some(slot as u64), &mut |k| k.set_scalar(arg::LOSS_SLOT, word(slot)))?;
        // Written only in `Mode::Forward`, which `forward` runs with a buffer of its own.
        match out {
            Some(out) => set(arg::LOGITS_OUT, None, &mut |k| k.set_mem(arg::LOGITS_OUT, out))?,
            None => set(arg::LOGITS_OUT, Some(0), &mut |k| k.set_mem(arg::LOGITS_OUT, &self.grads))?,
        }
        let k = &self.kernels.fused;
        let event = self.queue.launch_event(k, &[self.plan.fused_wg], &[self.plan.fused_wg])?;
        self.record(|| "fused".to_string(), event);
        Ok(())
    }

    /// A train step of a tiny model on the batch in `arg_words`, the loss and update status
    /// going to `slot`: added to the group of steps `tb_tiny_step` runs in one launch, which
    /// is sent at once unless a deferred step leaves room in it (see [`Inner::send_group`]).
    fn run_tiny(&mut self, plan: TinyPlan, rows: usize, lr: f32, slot: usize) -> Result<()> {
        let start = 1 + self.group * plan.step_words;
        let step = &mut self.tiny_words[start..start + plan.step_words];
        // Sizes checked against i32 at creation.
        step[0] = (self.losses_word + slot_start(slot)) as u32;
        step[1] = lr.to_bits();
        step[2] = rows as u32;
        step[TINY_CTRL..TINY_CTRL + self.arg_words.len()].copy_from_slice(&self.arg_words);
        self.group += 1;
        self.group_deferred += usize::from(self.deferring);
        if !self.deferring || self.group == plan.steps {
            self.send_group()?;
        }
        Ok(())
    }

    /// Launches `tb_tiny_steps` on the steps waiting in the group, if any (`tb_tiny_step`,
    /// which takes fewer arguments, on a group of one). Every call that
    /// reads or changes the model sends the group first (`OpenClBackend::ready`), so the
    /// steps run in the order they were asked for. If the launch fails, its deferred steps
    /// are dropped from the loss record, so that no slot reports a step that did not run.
    fn send_group(&mut self) -> Result<()> {
        let (Some(plan), n) = (self.plan.tiny, self.group) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let deferred = self.group_deferred;
        self.group = 0;
        self.group_deferred = 0;
        self.tiny_words[0] = n as u32;
        let used = (1 + n * plan.step_words).div_ceil(4);
        let k = if n == 1 { &mut self.kernels.tiny } else { &mut self.kernels.tiny_group };
        let launched = self
            .tiny_words
            .chunks_exact(4)
            .take(used)
            .enumerate()
            .try_for_each(|(i, four)| k.set_words(kernel::tb_tiny_step::TB_TINY_ONE_ARGS + i as u32, four));
        match launched.and_then(|()| self.queue.launch_event(k, &[1], &[1])) {
            Ok(event) => {
                self.record(|| "tiny".to_string(), event);
                Ok(())
            }
            Err(err) => {
                self.record.pending -= deferred;
                Err(err)
            }
        }
    }

    /// The tiled forward pass: layer 0 reads `x` (a tensor, or a staging slot); the last
    /// layer writes `out`, or the activation scratch when `None`.
    fn run_tiled_forward(&mut self, x: Input<'_>, out: Option<&Mem>) -> Result<()> {
        let layers = self.offsets.len();
        if M::Storage::IS_F16 {
            self.widen_x(x)?;
        }
        for l in 0..layers {
            let (a_in, a_out) = self.offsets[l];
            use kernel::tb_forward as arg;
            let k = &mut self.kernels.forward;
            k.set_mem(arg::PARAMS, &self.params)?;
            // f16: layer 0 reads the widened batch at offset 0 of the scratch (`a_in` is 0).
            if l == 0 && !M::Storage::IS_F16 {
                k.set_mem(arg::IN, x.mem(&self.slots))?;
                k.set_scalar(arg::IN_OFF, 0i32)?;
            } else {
                k.set_mem(arg::IN, &self.acts)?;
                k.set_scalar(arg::IN_OFF, a_in as i32)?;
            }
            match out {
                Some(out) if l + 1 == layers => {
                    k.set_mem(arg::OUT, out)?;
                    k.set_scalar(arg::OUT_OFF, 0i32)?;
                }
                _ => {
                    k.set_mem(arg::OUT, &self.acts)?;
                    k.set_scalar(arg::OUT_OFF, a_out as i32)?;
                }
            }
            k.set_scalar(arg::LAYER, l as i32)?;
            let fan_out = M::LAYERS[l + 1];
            let event = self.queue.launch_event(k, &gemm::forward(M::BATCH, fan_out), &gemm::LOCAL)?;
            self.record(|| format!("forward[{l}]"), event);
        }
        Ok(())
    }

    /// `f16` storage: widens the batch `x` into the activation scratch at offset 0, where
    /// the tiled kernels read layer 0's input.
    fn widen_x(&mut self, x: Input<'_>) -> Result<()> {
        use kernel::tb_widen_x as arg;
        let k = &mut self.kernels.widen;
        k.set_mem(arg::X, x.mem(&self.slots))?;
        k.set_mem(arg::OUT, &self.acts)?;
        let n = M::BATCH * M::FEATURES;
        let wg = 64.min(self.device.info.max_work_group_size.max(1));
        let event = self.queue.launch_event(k, &[round_up(n, wg)], &[wg])?;
        self.record(|| "widen".to_string(), event);
        Ok(())
    }

    /// The tiled loss: logits from the scratch, dz into `delta[0]`, loss into `slot`.
    fn run_tiled_loss(&mut self, batch: usize, rows: usize, slot: usize) -> Result<()> {
        let logits_off = self.offsets.last().map_or(0, |o| o.1);
        use kernel::tb_loss as arg;
        let k = &mut self.kernels.loss;
        k.set_mem(arg::LOGITS, &self.acts)?;
        k.set_scalar(arg::LOGITS_OFF, logits_off as i32)?;
        k.set_mem(arg::BATCH, &self.slots[batch].mem)?;
        k.set_scalar(arg::ROWS_ARG, rows as i32)?;
        k.set_mem(arg::DZ, &self.delta[0])?;
        k.set_mem(arg::LOSSES, &self.losses)?;
        k.set_scalar(arg::LOSS_SLOT, word(slot))?;
        let event = self.queue.launch_event(k, &[self.plan.loss_wg], &[self.plan.loss_wg])?;
        self.record(|| "loss".to_string(), event);
        Ok(())
    }

    /// The tiled backward pass into `grads`, from `delta[0]`.
    fn run_tiled_backward(&mut self, batch: usize, rows: usize) -> Result<()> {
        let mut cur = 0;
        for l in (0..self.offsets.len()).rev() {
            let (a_in, _) = self.offsets[l];
            let (fan_in, fan_out) = (M::LAYERS[l], M::LAYERS[l + 1]);
            use kernel::{tb_backward as arg, tb_backward_inputs as arg_in};
            let k = &mut self.kernels.backward;
            if l == 0 && !M::Storage::IS_F16 {
                k.set_mem(arg::A, &self.slots[batch].mem)?;
                k.set_scalar(arg::A_OFF, 0i32)?;
            } else {
                k.set_mem(arg::A, &self.acts)?;
                k.set_scalar(arg::A_OFF, a_in as i32)?;
            }
            k.set_mem(arg::DZ, &self.delta[cur])?;
            k.set_mem(arg::GRADS, &self.grads)?;
            k.set_scalar(arg::LAYER, l as i32)?;
            k.set_scalar(arg::ROWS_ARG, rows as i32)?;
            let event = self.queue.launch_event(k, &gemm::weights(fan_in, fan_out), &gemm::LOCAL)?;
            self.record(|| format!("backward[{l}]"), event);
            if l > 0 {
                let k = &mut self.kernels.backward_inputs;
                k.set_mem(arg_in::PARAMS, &self.params)?;
                k.set_mem(arg_in::DZ, &self.delta[cur])?;
                k.set_mem(arg_in::DA, &self.delta[1 - cur])?;
                k.set_mem(arg_in::ACTS, &self.acts)?;
                k.set_scalar(arg_in::A_OFF, a_in as i32)?;
                k.set_scalar(arg_in::LAYER, l as i32)?;
                let event = self.queue.launch_event(k, &gemm::inputs(M::BATCH, fan_in), &gemm::LOCAL)?;
                self.record(|| format!("backward[{l}]"), event);
                cur = 1 - cur;
            }
        }
        Ok(())
    }

    /// The step of an optimizer other than plain SGD, on the gradients in `grads`:
    /// `tb_opt_check`, then `tb_opt_apply` (one argument list, checked at compile time),
    /// one work-item per [`UPDATE_VEC`] parameters.
    fn run_opt(&mut self, step: &M::Optimizer, slot: usize) -> Result<()> {
        use kernel::{tb_opt_apply as arg, tb_opt_check as check};
        const _: () = assert!(
            arg::PARAMS == check::PARAMS
                && arg::GRADS == check::GRADS
                && arg::OPT == check::OPT
                && arg::HYPER == check::HYPER
                && arg::LOSSES == check::LOSSES
                && arg::LOSS_SLOT == check::LOSS_SLOT,
            "tb_opt_check and tb_opt_apply must take the same arguments"
        );
        let hyper = step.opencl_hyper().map(f32::to_bits);
        let wg = 64.min(self.device.info.max_work_group_size.max(1));
        let items = param_count(M::LAYERS).div_ceil(UPDATE_VEC);
        for (stage, k) in [("opt check", &mut self.kernels.opt_check), ("opt update", &mut self.kernels.opt_update)] {
            k.set_mem(arg::PARAMS, &self.params)?;
            k.set_mem(arg::GRADS, &self.grads)?;
            k.set_mem(arg::OPT, &self.opt)?;
            k.set_words(arg::HYPER, &hyper)?;
            k.set_mem(arg::LOSSES, &self.losses)?;
            k.set_scalar(arg::LOSS_SLOT, word(slot))?;
            let event = self.queue.launch_event(k, &[round_up(items, wg)], &[wg])?;
            if let Some(events) = &mut self.events {
                events.push((stage.to_string(), event));
            }
        }
        Ok(())
    }

    fn run_sgd(&mut self, lr: f32, slot: usize) -> Result<()> {
        self.run_per_param(|k| &mut k.sgd, lr, slot)
    }

    /// The tiled path's update check: flags the step in `slot`'s status word if an update
    /// of `run_sgd` would not fit the storage (then `tb_sgd` writes nothing).
    fn run_check(&mut self, lr: f32, slot: usize) -> Result<()> {
        self.run_per_param(|k| &mut k.check, lr, slot)
    }

    /// `tb_sgd` or `tb_check_update` (chosen by `pick`; one argument list, checked at
    /// compile time), one work-item per [`UPDATE_VEC`] parameters.
    fn run_per_param(&mut self, pick: fn(&mut Kernels) -> &mut Kernel, lr: f32, slot: usize) -> Result<()> {
        use kernel::{tb_check_update as check, tb_sgd as arg};
        const _: () = assert!(
            arg::PARAMS == check::PARAMS
                && arg::GRADS == check::GRADS
                && arg::LR == check::LR
                && arg::LOSSES == check::LOSSES
                && arg::LOSS_SLOT == check::LOSS_SLOT,
            "tb_sgd and tb_check_update must take the same arguments"
        );
        let k = pick(&mut self.kernels);
        k.set_mem(arg::PARAMS, &self.params)?;
        k.set_mem(arg::GRADS, &self.grads)?;
        k.set_scalar(arg::LR, lr)?;
        k.set_mem(arg::LOSSES, &self.losses)?;
        k.set_scalar(arg::LOSS_SLOT, word(slot))?;
        let wg = 64.min(self.device.info.max_work_group_size.max(1));
        let items = param_count(M::LAYERS).div_ceil(UPDATE_VEC);
        let event = self.queue.launch_event(pick(&mut self.kernels), &[round_up(items, wg)], &[wg])?;
        self.record(|| "update".to_string(), event);
        Ok(())
    }

    /// Enqueues the batch and the kernels of `mode` (loss, gradients or a step of `step`),
    /// the loss going to `slot`. Reads nothing back. Plain SGD's step runs inside the
    /// path's kernels (tiny, fused, or the tiled `tb_check_update` and `tb_sgd`); every
    /// other optimizer's runs the path's gradients, then `tb_opt_check` and `tb_opt_apply`.
    fn enqueue(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer, mode: Mode, slot: usize) -> Result<()> {
        let lr = step.lr();
        if let (Mode::Step, Some(plan), Some((_, hyper_word)), true) =
            (mode, self.plan.tiny, tiny_opt_words::<M>(), self.state.is_some())
        {
            // An optimizer with moments on the tiny kernel: its hyperparameters in the
            // state, written when they change (after the steps waiting in the group, which
            // read the old ones), then the step joins the group as plain SGD's do.
            let mut hyper = step.opencl_hyper().map(f32::to_bits);
            hyper[0] = 0;
            if self.tiny_hyper != Some(hyper) {
                self.send_group()?;
                if let Some(state) = &self.state {
                    self.queue.write(state, hyper_word, &hyper)?;
                }
                self.tiny_hyper = Some(hyper);
            }
            self.upload_batch(batch)?;
            return self.run_tiny(plan, batch.rows, lr, slot);
        }
        if mode == Mode::Step && !step.is_plain_sgd() {
            // Tiny steps waiting in the group go first (this step does not join it).
            self.send_group()?;
            self.enqueue(batch, step, Mode::Gradients, slot)?;
            return self.run_opt(&step, slot);
        }
        let input = self.upload_batch(batch)?;
        if self.plan.fused {
            return self.run_fused(input, batch.rows, lr, mode, slot, None);
        }
        // The tiled path never takes the batch by value (`batch_path`).
        let b = match input {
            Input::Slot(b) => b,
            _ => 0,
        };
        self.run_tiled_forward(input, None)?;
        self.run_tiled_loss(b, batch.rows, slot)?;
        if mode >= Mode::Gradients {
            self.run_tiled_backward(b, batch.rows)?;
        }
        if mode == Mode::Step {
            self.run_check(lr, slot)?;
            self.run_sgd(lr, slot)?;
        }
        Ok(())
    }

    /// Reads the loss of `slot`.
    fn read_loss(&self, slot: usize) -> Result<f32> {
        let mut loss = [0.0f32];
        self.queue.read(&self.losses, slot_start(slot), &mut loss)?;
        Ok(loss[0])
    }

    /// Reads the loss and the update status of `slot` (one read of both words).
    fn read_step(&self, slot: usize) -> Result<StepRecord> {
        let mut words = [0u32; SLOT_WORDS];
        self.queue.read(&self.losses, slot_start(slot), &mut words)?;
        Ok(step_record::<M>(words[0], words[1]))
    }

    /// Moves the pending ring entries to the host, appending them to `record`.
    fn drain(&mut self, record: &mut Vec<StepRecord>) -> Result<()> {
        self.send_group()?;
        let LossRecord { start, pending, .. } = self.record;
        if pending == 0 {
            return Ok(());
        }
        let first = pending.min(LOSS_RING - start);
        let mut out = vec![0u32; slot_start(pending)];
        self.queue.read(&self.losses, slot_start(start), &mut out[..slot_start(first)])?;
        if first < pending {
            self.queue.read(&self.losses, 0, &mut out[slot_start(first)..])?;
        }
        record.extend(out.chunks_exact(SLOT_WORDS).map(|w| step_record::<M>(w[0], w[1])));
        self.record.start = (start + pending) % LOSS_RING;
        self.record.pending = 0;
        Ok(())
    }

    /// One step whose loss stays on the device until [`Self::drain`] (into `record`, where
    /// a full ring goes first).
    pub(crate) fn train_step_deferred(
        &mut self,
        batch: Batch<'_, M::Storage>,
        step: M::Optimizer,
        record: &mut Vec<StepRecord>,
    ) -> Result<()> {
        if self.record.pending == LOSS_RING {
            self.drain(record)?;
        }
        let slot = (self.record.start + self.record.pending) % LOSS_RING;
        // Counted before the enqueue: a tiny step that joins the group is pending from now.
        self.record.pending += 1;
        self.deferring = true;
        let enqueued = self.enqueue(batch, step, Mode::Step, slot);
        self.deferring = false;
        match enqueued {
            Err(err) => {
                // The tiny path's only failure is its launch, whose steps `send_group` has
                // taken off the count already.
                if self.plan.tiny.is_none() {
                    self.record.pending -= 1;
                }
                Err(err)
            }
            // Waiting in the group: no command was enqueued.
            Ok(()) if self.group > 0 => Ok(()),
            Ok(()) => self.queue.flush(),
        }
    }

    /// Logits of a device tensor into a new buffer.
    fn forward(&mut self, x: &ClTensor) -> Result<ClTensor> {
        if x.mem.len::<M::Storage>() < M::BATCH * M::FEATURES {
            return Err(Error::ShapeMismatch {
                what: "device tensor".to_string(),
                expected: format!("{} values", M::BATCH * M::FEATURES),
                found: format!("{} values", x.mem.len::<M::Storage>()),
            });
        }
        if !Arc::ptr_eq(&x.queue, &self.queue) {
            // Made by another model's queue: its upload must be complete before ours reads.
            x.queue.finish()?;
        }
        let out = Mem::new::<f32>(&self.device.context, M::BATCH * M::CLASSES)?;
        if self.plan.fused {
            self.run_fused(Input::Tensor(&x.mem), M::BATCH, 0.0, Mode::Forward, IMMEDIATE, Some(&out))?;
        } else {
            self.run_tiled_forward(Input::Tensor(&x.mem), Some(&out))?;
        }
        Ok(ClTensor { mem: out, queue: Arc::clone(&self.queue), device: Arc::clone(&self.device) })
    }

    fn loss(&mut self, batch: Batch<'_, M::Storage>) -> Result<f32> {
        self.enqueue(batch, M::Optimizer::default(), Mode::Loss, IMMEDIATE)?;
        self.read_loss(IMMEDIATE)
    }

    fn gradients(&mut self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32> {
        self.enqueue(batch, M::Optimizer::default(), Mode::Gradients, IMMEDIATE)?;
        let loss = self.read_loss(IMMEDIATE)?;
        self.queue.read(&self.grads, 0, out)?;
        Ok(loss)
    }

    fn train_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<f32> {
        self.enqueue(batch, step, Mode::Step, IMMEDIATE)?;
        match self.read_step(IMMEDIATE)? {
            Ok(loss) if !loss.is_finite() => Err(Error::NonFiniteLoss { loss }),
            record => record.map_err(|err| *err),
        }
    }

    /// [`Inner::train_step`] with every command's event kept, then timed by stage.
    fn profile_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<StepProfile> {
        if !self.profiling {
            return Err(Error::Unsupported {
                device: self.device.label(),
                reason: "step profiling is off: make the model on `device.with_profiling(true)`".to_string(),
            });
        }
        self.events = Some(Vec::new());
        let step = self.train_step(batch, step);
        let events = self.events.take().unwrap_or_default();
        // Before anything returns: the upload's event was kept here, not in its slot.
        let finished = self.queue.finish();
        let loss = step?;
        finished?;
        let mut stages: Vec<Stage> = Vec::new();
        for (name, event) in events {
            let (start, end) = event.times()?;
            let took = Duration::from_nanos(end.saturating_sub(start));
            match stages.last_mut() {
                Some(last) if last.name == name => {
                    last.duration += took;
                    last.commands += 1;
                }
                _ => stages.push(Stage { name, duration: took, commands: 1 }),
            }
        }
        Ok(StepProfile { model: M::NAME.to_string(), device: self.device.label(), loss, stages })
    }
}

/// A step's record from its two words: the loss, or the update check's error when the
/// status word is set (a non-finite loss takes precedence: its gradients mean nothing).
fn step_record<M: Model>(loss: u32, status: u32) -> StepRecord {
    let loss = f32::from_bits(loss);
    if status == 0 || !loss.is_finite() {
        Ok(loss)
    } else {
        Err(Box::new(update_overflow::<M::Storage>(M::LAYERS, !status as usize)))
    }
}

/// The input of the first layer.
#[derive(Clone, Copy)]
enum Input<'a> {
    Tensor(&'a Mem),
    Slot(usize),
    /// `Inner::arg_words`, by value (fused kernel only).
    Words,
}

impl Input<'_> {
    /// The buffer holding the input (slot 0's for `Words`, which no tiled kernel reads).
    fn mem<'s>(&'s self, slots: &'s [Slot; 2]) -> &'s Mem {
        match *self {
            Input::Tensor(mem) => mem,
            Input::Slot(i) => &slots[i & 1].mem,
            Input::Words => &slots[0].mem,
        }
    }
}

/// Writes `batch` in the kernels' word layout into `out` (`batch_words` words): the
/// features' bits, then the labels.
fn batch_into_words<M: Model>(batch: Batch<'_, M::Storage>, out: &mut [u32]) {
    let (xs, ys) = out.split_at_mut(x_words::<M>());
    match M::Storage::as_f32_slice(batch.x) {
        Some(x) => {
            for (s, v) in xs.iter_mut().zip(x) {
                *s = v.to_bits();
            }
        }
        None => {
            // Two halves a word, the lower index in the low bits: the bytes of a
            // little-endian `half` array (`vload_half(k, x)` reads bytes 2k and 2k + 1).
            // (f16 -> f32 -> f16 is exact.)
            let bits = |v: Option<&M::Storage>| v.map_or(0, |v| u32::from(half::f16::from_f32(v.to_f32()).to_bits()));
            for (s, pair) in xs.iter_mut().zip(batch.x.chunks(2)) {
                *s = bits(pair.first()) | (bits(pair.get(1)) << 16);
            }
        }
    }
    for (s, &y) in ys.iter_mut().zip(batch.y) {
        *s = y;
    }
}

/// Resolves `upload` for model `M` on `device` (`fused`: whether the step runs fused).
fn batch_path<M: Model>(device: &ClDevice, upload: Upload, fused: bool) -> Result<BatchPath> {
    // The fused kernel's other arguments: ten of at most 8 bytes each.
    let fits = |words: usize| device.info.max_parameter_size >= 4 * words + 10 * 8;
    let by_value = fused && argument_words::<M>().is_some_and(fits);
    Ok(match upload {
        Upload::Auto if by_value => BatchPath::Arguments,
        Upload::Auto if device.info.host_unified_memory => BatchPath::Mapped,
        Upload::Auto | Upload::Copy => BatchPath::Copy,
        Upload::ZeroCopy => BatchPath::Mapped,
        Upload::Arguments if by_value => BatchPath::Arguments,
        Upload::Arguments => {
            return Err(Error::Unsupported {
                device: device.label(),
                reason: format!(
                    "the batch as a kernel argument was asked for, but `{}` {} (at most {} words of features and labels on the fused kernel)",
                    M::NAME,
                    if fused { "has too large a batch" } else { "runs the tiled kernels" },
                    crate::info::ARGUMENT_BATCH_WORDS
                ),
            })
        }
    })
}

impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        // Steps still waiting in the tiny kernel's group are dropped unsent: nothing can
        // read the model any more. The staging slots must outlive their non-blocking writes.
        let _ = self.queue.finish();
    }
}

impl<M: Model> Backend<M> for OpenClBackend<M> {
    fn upload(&self, data: &[M::Storage]) -> Result<Box<dyn DeviceBuffer>> {
        let mem = Mem::from_slice(&self.device.context, data)?;
        let queue = Arc::clone(&self.lock().queue);
        Ok(Box::new(ClTensor { mem, queue, device: Arc::clone(&self.device) }))
    }

    fn write_params(&mut self, flat: &[M::Storage]) -> Result<()> {
        let inner = self.ready_mut()?;
        inner.queue.write(&inner.params, 0, flat)
    }

    fn read_params(&self, out: &mut [M::Storage]) -> Result<()> {
        let inner = self.ready()?;
        inner.queue.read(&inner.params, 0, out)
    }

    fn forward(&self, x: &dyn DeviceBuffer) -> Result<Box<dyn DeviceBuffer>> {
        let x = x.downcast::<ClTensor>(|| self.device.label())?;
        if !x.is_on(&self.device) {
            return Err(Error::DeviceMismatch { tensor_device: x.location(), model_device: self.device.label() });
        }
        Ok(Box::new(self.ready()?.forward(x)?))
    }

    fn loss(&self, batch: Batch<'_, M::Storage>) -> Result<f32> {
        self.ready()?.loss(batch)
    }

    fn gradients(&self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32> {
        self.ready()?.gradients(batch, out)
    }

    fn train_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<f32> {
        self.ready_mut()?.train_step(batch, step)
    }

    /// Reads the moment buffers and the step count from the device (after the steps
    /// enqueued before).
    fn read_optimizer(&self, moments: &mut [f32]) -> Result<u32> {
        let inner = self.ready()?;
        let at = opt_step_word::<M>();
        let n = at.min(moments.len());
        if n > 0 {
            inner.queue.read(&inner.opt, 0, &mut moments[..n])?;
        }
        let mut step = [0u32];
        inner.queue.read(&inner.opt, at, &mut step)?;
        Ok(step[0])
    }

    /// Writes the moment buffers and the step count to the device (ordered after the steps
    /// enqueued before, before those enqueued after).
    fn write_optimizer(&mut self, moments: &[f32], step: u32) -> Result<()> {
        let inner = self.ready_mut()?;
        let at = opt_step_word::<M>();
        let n = at.min(moments.len());
        if n > 0 {
            inner.queue.write(&inner.opt, 0, &moments[..n])?;
        }
        inner.queue.write(&inner.opt, at, &[step, step])
    }

    fn train_step_deferred(
        &mut self,
        batch: Batch<'_, M::Storage>,
        step: M::Optimizer,
        record: &mut Vec<StepRecord>,
    ) -> Result<()> {
        self.inner_mut().train_step_deferred(batch, step, record)
    }

    fn take_losses(&mut self, record: &mut Vec<StepRecord>) -> Result<()> {
        self.ready_mut()?.drain(record)
    }

    fn startup_report(&self) -> Option<StartupReport> {
        Some(self.lock().startup.clone())
    }

    fn profile_step(&mut self, batch: Batch<'_, M::Storage>, step: M::Optimizer) -> Result<StepProfile> {
        self.ready_mut()?.profile_step(batch, step)
    }

    fn upload_batch(&mut self, batch: Batch<'_, M::Storage>) -> Result<()> {
        let inner = self.ready_mut()?;
        inner.upload_batch(batch)?;
        inner.queue.finish()
    }

    fn warm_up(&mut self) -> Result<()> {
        self.ready_mut()?.warm_up().map(drop)
    }
}
