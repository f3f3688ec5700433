//! The OpenCL backend: a model's parameters, gradients and scratch buffers resident on one
//! device, and the kernels of `cl/` specialised for its shape (see `crate::kernels` for
//! which kernels run). Nothing outside this module names an OpenCL type.
//!
//! Per train step only the batch goes up (one non-blocking write of `x` and the labels,
//! from one of two staging slots) and nothing comes down unless asked for: the step's loss
//! is written into a device-side record (`losses`) that `train_step` reads at once and
//! `train_step_deferred` leaves for [`OpenClBackend::take_losses`].
//!
//! `f16` storage: the parameter buffer and the batch's features are `half` on the device
//! (2 bytes a value: half the upload per step), read through `vload_half` and written
//! through `vstore_half_rte` (no `cl_khr_fp16` needed), with all arithmetic in `float`.
//! Gradients, activations, logits and losses stay `float`. The tiled path first widens the
//! batch into the activation scratch (`tb_widen_x`, one launch), so that its kernels read
//! `float` inputs in every layer.

mod cl;
mod platform;
mod program;

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use self::cl::{Event, Kernel, Mem, Queue};
pub(crate) use self::platform::{enumerate, ClDevice};
use super::{update_overflow, Backend, Batch, Buffer};
use crate::device::KernelPath;
use crate::engine::StepRecord;
use crate::error::{Error, Result};
use crate::kernels::{acts_len, delta_len, fused_plan, LOSS_MAX_WG};
use crate::model::{Model, Params, StorageElement};

/// Deferred losses kept on the device before they are drained to the host. Each slot is two
/// 32-bit words of the `losses` buffer (see [`word`]): the loss, then the step's update
/// status (0, or `!k` for the first parameter `k` whose update would not fit the storage;
/// set by the update check, read by `tb_sgd`, which then skips the step).
const LOSS_RING: usize = 1024;
/// The loss slot of immediate calls (`loss`, `gradients`, `train_step`).
const IMMEDIATE: usize = LOSS_RING;

const MODE_FORWARD: i32 = 0;
const MODE_LOSS: i32 = 1;
const MODE_GRADIENTS: i32 = 2;
const MODE_STEP: i32 = 3;

/// Every kernel of the program, by name.
const KERNELS: &[&str] = &[
    "tb_forward",
    "tb_loss",
    "tb_backward",
    "tb_backward_inputs",
    "tb_sgd",
    "tb_train_step",
    "tb_widen_x",
    "tb_check_update",
];

/// The index of loss slot `slot`'s first word in the `losses` buffer (its status follows),
/// as the kernels' `loss_slot` argument.
fn word(slot: usize) -> i32 {
    (2 * slot) as i32
}

/// Opens the `index`-th usable device of [`enumerate`] (or the first whose type passes
/// `want`, when `index` is `None`).
pub(crate) fn open(index: Option<usize>, want: impl Fn(&crate::device::DeviceInfo) -> bool) -> Result<Arc<ClDevice>> {
    let mut found = enumerate()?;
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
    Ok(Arc::new(ClDevice::open(found.swap_remove(pos))?))
}

/// The build options for `device`: the tile width of the tiled kernels, the largest of
/// 16, 8 and 4 whose square fits the device's work-group limit.
fn build_options(device: &ClDevice) -> Result<(String, usize)> {
    let max = device.info.max_work_group_size;
    let tile = [16, 8, 4].into_iter().find(|t| t * t <= max).ok_or_else(|| Error::Unsupported {
        device: device.label(),
        reason: format!("work-groups of at most {max} work-items; the tiled kernels need 16"),
    })?;
    Ok((format!("-D TB_TILE={tile}"), tile))
}

/// Compiles `source` for `device`, for tests of the build-failure path.
pub(crate) fn build_source(device: &ClDevice, source: &str) -> Result<()> {
    let (options, _) = build_options(device)?;
    program::build_from_source(device, source, &options).map(drop)
}

/// One launch of an empty kernel (one work-item) and `clFinish`: the floor under any
/// kernel's cost on this device.
pub(crate) fn empty_launch(device: &ClDevice) -> Result<()> {
    let mut slot = device.empty.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        let program = program::build_from_source(device, "__kernel void tb_empty(void) {}", "")?;
        *slot = Some((Queue::new(&device.context, device.id)?, Kernel::new(&program, "tb_empty")?));
    }
    match slot.as_ref() {
        Some((queue, kernel)) => {
            queue.launch(kernel, &[1], &[1])?;
            queue.finish()
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
    pub(crate) fn location(&self) -> String {
        self.device.label()
    }

    /// Waits for the kernels that write the tensor, then copies it into `out` (of the
    /// element type the tensor was made with).
    pub(crate) fn read_into<T: Copy>(&self, out: &mut [T]) -> Result<()> {
        self.queue.read(&self.mem, 0, out)
    }

    /// Whether the tensor lives in `device`'s context.
    pub(crate) fn is_on(&self, device: &Arc<ClDevice>) -> bool {
        Arc::ptr_eq(&self.device, device)
    }
}

/// One staging slot for batch uploads: the device buffer, the host words it is written
/// from, and the write's event (the host words may change only once it completed).
struct Slot {
    mem: Mem,
    staging: Vec<u32>,
    write: Option<Event>,
}

/// The kernels, set up by `&mut self` only (`clSetKernelArg` is not thread-safe).
struct Kernels {
    forward: Kernel,
    loss: Kernel,
    backward: Kernel,
    backward_inputs: Kernel,
    sgd: Kernel,
    fused: Kernel,
    /// `f16` batch -> `float` activation scratch (tiled path of `f16` models only).
    widen: Kernel,
    /// The tiled path's update check, before `sgd`.
    check: Kernel,
}

// SAFETY: `Kernels` exposes its kernels only through `&mut OpenClBackend` (every method
// that sets arguments or launches takes `&mut self`), so a shared reference never reaches
// `clSetKernelArg`.
unsafe impl Sync for Kernels {}

/// How a step runs on this device.
#[derive(Clone, Copy)]
struct Plan {
    fused: bool,
    fused_wg: usize,
    tile: usize,
    loss_wg: usize,
}

/// The deferred-loss record: `pending` losses in the ring from `start`, plus those already
/// drained to the host.
#[derive(Default)]
struct LossRecord {
    start: usize,
    pending: usize,
    drained: Vec<StepRecord>,
}

/// The OpenCL backend of model `M`.
pub(crate) struct OpenClBackend<M> {
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
    slots: [Slot; 2],
    next_slot: usize,
    record: LossRecord,
    /// `(input offset, output offset)` of each layer in the activation scratch.
    offsets: Vec<(usize, usize)>,
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
    pub(crate) fn new(device: &Arc<ClDevice>, path: KernelPath, flat: &[M::Storage]) -> Result<Self> {
        let dims = M::LAYERS;
        let (b, f) = (M::BATCH, M::FEATURES);
        let acts = acts_len(dims, b);
        for (what, n) in
            [("the activation scratch", acts), ("the parameter count", M::Params::LEN), ("the batch", b * (f + 1))]
        {
            to_i32(n, device, what)?;
        }
        let (options, tile) = build_options(device)?;
        let program = program::build(device, M::kernel_source(), &options, KERNELS)?;
        let kernels = Kernels {
            forward: Kernel::new(&program, "tb_forward")?,
            loss: Kernel::new(&program, "tb_loss")?,
            backward: Kernel::new(&program, "tb_backward")?,
            backward_inputs: Kernel::new(&program, "tb_backward_inputs")?,
            sgd: Kernel::new(&program, "tb_sgd")?,
            fused: Kernel::new(&program, "tb_train_step")?,
            widen: Kernel::new(&program, "tb_widen_x")?,
            check: Kernel::new(&program, "tb_check_update")?,
        };
        for k in [&kernels.forward, &kernels.backward, &kernels.backward_inputs] {
            if k.max_work_group(device.id)? < tile * tile {
                return Err(Error::Unsupported {
                    device: device.label(),
                    reason: format!("the tiled kernels need work-groups of {} work-items", tile * tile),
                });
            }
        }
        let shape = fused_plan(dims, b);
        let fused_fits = shape.fits
            && kernels.fused.max_work_group(device.id)? >= shape.wg
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
                        shape.wg
                    ),
                })
            }
        };
        let loss_max = kernels.loss.max_work_group(device.id)?.min(LOSS_MAX_WG);
        let loss_wg = b.next_power_of_two().min(1 << loss_max.max(1).ilog2());

        let context = &device.context;
        let queue = Arc::new(Queue::new(context, device.id)?);
        let params = Mem::from_slice(context, flat)?;
        let grads = Mem::from_slice(context, &vec![0.0f32; M::Params::LEN])?;
        // The fused kernel keeps activations and deltas in local memory.
        let (acts_n, delta_n) = if fused { (1, 1) } else { (acts, delta_len(dims, b)) };
        let acts_mem = Mem::new::<f32>(context, acts_n)?;
        let delta = [Mem::new::<f32>(context, delta_n)?, Mem::new::<f32>(context, delta_n)?];
        let losses = Mem::from_slice(context, &vec![0.0f32; 2 * (LOSS_RING + 1)])?;
        let words = x_words::<M>() + b;
        let slot = || -> Result<Slot> {
            Ok(Slot { mem: Mem::new::<u32>(context, words)?, staging: vec![0; words], write: None })
        };
        let slots = [slot()?, slot()?];
        let mut offsets = Vec::new();
        let mut a_in = 0;
        for pair in dims.windows(2) {
            offsets.push((a_in, a_in + b * pair[0]));
            a_in += b * pair[0];
        }
        Ok(OpenClBackend {
            device: Arc::clone(device),
            queue,
            kernels,
            plan: Plan { fused, fused_wg: shape.wg, tile, loss_wg },
            params,
            grads,
            acts: acts_mem,
            delta,
            losses,
            slots,
            next_slot: 0,
            record: LossRecord::default(),
            offsets,
            _model: PhantomData,
        })
    }

    /// Writes the batch (`x` bits, then the labels) into the next staging slot; returns it.
    fn upload_batch(&mut self, batch: Batch<'_, M::Storage>) -> Result<usize> {
        let index = self.next_slot;
        self.next_slot ^= 1;
        let slot = &mut self.slots[index];
        if let Some(event) = slot.write.take() {
            event.wait()?;
        }
        let (xs, ys) = slot.staging.split_at_mut(x_words::<M>());
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
                let bits =
                    |v: Option<&M::Storage>| v.map_or(0, |v| u32::from(half::f16::from_f32(v.to_f32()).to_bits()));
                for (s, pair) in xs.iter_mut().zip(batch.x.chunks(2)) {
                    *s = bits(pair.first()) | (bits(pair.get(1)) << 16);
                }
            }
        }
        ys.copy_from_slice(batch.y);
        // SAFETY: `slot.staging` is neither written nor freed before `slot.write` has
        // completed: it is rewritten only after waiting on that event (above), and `Drop`
        // finishes the queue before the slots are freed.
        slot.write = Some(unsafe { self.queue.write_async(&slot.mem, &slot.staging)? });
        Ok(index)
    }

    /// The fused kernel in `mode` (loss, gradients or step) on staging slot `batch`, the
    /// loss going to `slot`.
    fn run_fused(&mut self, batch: usize, rows: usize, lr: f32, mode: i32, slot: usize) -> Result<()> {
        let k = &mut self.kernels.fused;
        let batch = &self.slots[batch & 1].mem;
        k.set_mem(0, &self.params)?;
        k.set_mem(1, &self.grads)?;
        k.set_mem(2, batch)?;
        k.set_mem(3, batch)?;
        k.set_scalar(4, rows as i32)?;
        k.set_scalar(5, lr)?;
        k.set_scalar(6, mode)?;
        k.set_mem(7, &self.losses)?;
        k.set_scalar(8, word(slot))?;
        // Written only in MODE_FORWARD, which `forward` runs with a buffer of its own.
        k.set_mem(9, &self.grads)?;
        self.queue.launch(k, &[self.plan.fused_wg], &[self.plan.fused_wg])
    }

    /// The tiled forward pass: layer 0 reads `x` (a tensor, or a staging slot); the last
    /// layer writes `out`, or the activation scratch when `None`.
    fn run_tiled_forward(&mut self, x: Input<'_>, out: Option<&Mem>) -> Result<()> {
        let layers = self.offsets.len();
        let t = self.plan.tile;
        if M::Storage::IS_F16 {
            self.widen_x(x)?;
        }
        for (l, &(a_in, a_out)) in self.offsets.iter().enumerate() {
            let k = &mut self.kernels.forward;
            k.set_mem(0, &self.params)?;
            // f16: layer 0 reads the widened batch at offset 0 of the scratch (`a_in` is 0).
            if l == 0 && !M::Storage::IS_F16 {
                match x {
                    Input::Tensor(mem) => k.set_mem(1, mem)?,
                    Input::Slot(i) => k.set_mem(1, &self.slots[i].mem)?,
                }
                k.set_scalar(2, 0i32)?;
            } else {
                k.set_mem(1, &self.acts)?;
                k.set_scalar(2, a_in as i32)?;
            }
            match out {
                Some(out) if l + 1 == layers => {
                    k.set_mem(3, out)?;
                    k.set_scalar(4, 0i32)?;
                }
                _ => {
                    k.set_mem(3, &self.acts)?;
                    k.set_scalar(4, a_out as i32)?;
                }
            }
            k.set_scalar(5, l as i32)?;
            let fan_out = M::LAYERS[l + 1];
            self.queue.launch(k, &[round_up(M::BATCH, t), round_up(fan_out, t)], &[t, t])?;
        }
        Ok(())
    }

    /// `f16` storage: widens the batch `x` into the activation scratch at offset 0, where
    /// the tiled kernels read layer 0's input.
    fn widen_x(&mut self, x: Input<'_>) -> Result<()> {
        let k = &mut self.kernels.widen;
        match x {
            Input::Tensor(mem) => k.set_mem(0, mem)?,
            Input::Slot(i) => k.set_mem(0, &self.slots[i].mem)?,
        }
        k.set_mem(1, &self.acts)?;
        let n = M::BATCH * M::FEATURES;
        let wg = 64.min(self.device.info.max_work_group_size.max(1));
        self.queue.launch(k, &[round_up(n, wg)], &[wg])
    }

    /// The tiled loss: logits from the scratch, dz into `delta[0]`, loss into `slot`.
    fn run_tiled_loss(&mut self, batch: usize, rows: usize, slot: usize) -> Result<()> {
        let logits_off = self.offsets.last().map_or(0, |o| o.1);
        let k = &mut self.kernels.loss;
        k.set_mem(0, &self.acts)?;
        k.set_scalar(1, logits_off as i32)?;
        k.set_mem(2, &self.slots[batch].mem)?;
        k.set_scalar(3, rows as i32)?;
        k.set_mem(4, &self.delta[0])?;
        k.set_mem(5, &self.losses)?;
        k.set_scalar(6, word(slot))?;
        self.queue.launch(k, &[self.plan.loss_wg], &[self.plan.loss_wg])
    }

    /// The tiled backward pass into `grads`, from `delta[0]`.
    fn run_tiled_backward(&mut self, batch: usize, rows: usize) -> Result<()> {
        let t = self.plan.tile;
        let mut cur = 0;
        for l in (0..self.offsets.len()).rev() {
            let (a_in, _) = self.offsets[l];
            let (fan_in, fan_out) = (M::LAYERS[l], M::LAYERS[l + 1]);
            let k = &mut self.kernels.backward;
            if l == 0 && !M::Storage::IS_F16 {
                k.set_mem(0, &self.slots[batch].mem)?;
                k.set_scalar(1, 0i32)?;
            } else {
                k.set_mem(0, &self.acts)?;
                k.set_scalar(1, a_in as i32)?;
            }
            k.set_mem(2, &self.delta[cur])?;
            k.set_mem(3, &self.grads)?;
            k.set_scalar(4, l as i32)?;
            k.set_scalar(5, rows as i32)?;
            self.queue.launch(k, &[round_up(fan_in + 1, t), round_up(fan_out, t)], &[t, t])?;
            if l > 0 {
                let k = &mut self.kernels.backward_inputs;
                k.set_mem(0, &self.params)?;
                k.set_mem(1, &self.delta[cur])?;
                k.set_mem(2, &self.delta[1 - cur])?;
                k.set_mem(3, &self.acts)?;
                k.set_scalar(4, a_in as i32)?;
                k.set_scalar(5, l as i32)?;
                self.queue.launch(k, &[round_up(M::BATCH, t), round_up(fan_in, t)], &[t, t])?;
                cur = 1 - cur;
            }
        }
        Ok(())
    }

    fn run_sgd(&mut self, lr: f32, slot: usize) -> Result<()> {
        let k = &mut self.kernels.sgd;
        k.set_mem(0, &self.params)?;
        k.set_mem(1, &self.grads)?;
        k.set_scalar(2, lr)?;
        k.set_mem(3, &self.losses)?;
        k.set_scalar(4, word(slot))?;
        self.queue.launch(k, &[round_up(M::Params::LEN, 64)], &[64.min(self.device.info.max_work_group_size.max(1))])
    }

    /// The tiled path's update check: flags the step in `slot`'s status word if an update
    /// of `run_sgd` would not fit the storage (then `tb_sgd` writes nothing).
    fn run_check(&mut self, lr: f32, slot: usize) -> Result<()> {
        let k = &mut self.kernels.check;
        k.set_mem(0, &self.params)?;
        k.set_mem(1, &self.grads)?;
        k.set_scalar(2, lr)?;
        k.set_mem(3, &self.losses)?;
        k.set_scalar(4, word(slot))?;
        self.queue.launch(k, &[round_up(M::Params::LEN, 64)], &[64.min(self.device.info.max_work_group_size.max(1))])
    }

    /// Enqueues the batch and the kernels of `mode` (loss, gradients or step), the loss
    /// going to `slot`. Reads nothing back.
    fn enqueue(&mut self, batch: Batch<'_, M::Storage>, lr: f32, mode: i32, slot: usize) -> Result<()> {
        let b = self.upload_batch(batch)?;
        if self.plan.fused {
            return self.run_fused(b, batch.rows, lr, mode, slot);
        }
        self.run_tiled_forward(Input::Slot(b), None)?;
        self.run_tiled_loss(b, batch.rows, slot)?;
        if mode >= MODE_GRADIENTS {
            self.run_tiled_backward(b, batch.rows)?;
        }
        if mode == MODE_STEP {
            self.run_check(lr, slot)?;
            self.run_sgd(lr, slot)?;
        }
        Ok(())
    }

    /// Reads the loss of `slot`.
    fn read_loss(&self, slot: usize) -> Result<f32> {
        let mut loss = [0.0f32];
        self.queue.read(&self.losses, 2 * slot, &mut loss)?;
        Ok(loss[0])
    }

    /// Reads the loss and the update status of `slot` (one read of both words).
    fn read_step(&self, slot: usize) -> Result<StepRecord> {
        let mut words = [0u32; 2];
        self.queue.read(&self.losses, 2 * slot, &mut words)?;
        Ok(step_record::<M>(words[0], words[1]))
    }

    /// Deferred steps' records since the last call, oldest first.
    pub(crate) fn take_losses(&mut self) -> Result<Vec<StepRecord>> {
        self.drain()?;
        Ok(std::mem::take(&mut self.record.drained))
    }

    /// Moves the pending ring entries to the host.
    fn drain(&mut self) -> Result<()> {
        let LossRecord { start, pending, .. } = self.record;
        if pending == 0 {
            return Ok(());
        }
        let first = pending.min(LOSS_RING - start);
        let mut out = vec![0u32; 2 * pending];
        self.queue.read(&self.losses, 2 * start, &mut out[..2 * first])?;
        if first < pending {
            self.queue.read(&self.losses, 0, &mut out[2 * first..])?;
        }
        self.record.drained.extend(out.chunks_exact(2).map(|w| step_record::<M>(w[0], w[1])));
        self.record.start = (start + pending) % LOSS_RING;
        self.record.pending = 0;
        Ok(())
    }

    /// One step whose loss stays on the device until [`Self::take_losses`].
    pub(crate) fn train_step_deferred(&mut self, batch: Batch<'_, M::Storage>, lr: f32) -> Result<()> {
        if self.record.pending == LOSS_RING {
            self.drain()?;
        }
        let slot = (self.record.start + self.record.pending) % LOSS_RING;
        self.enqueue(batch, lr, MODE_STEP, slot)?;
        self.record.pending += 1;
        self.queue.flush()
    }
}

/// A step's record from its two words: the loss, or the update check's error when the
/// status word is set (a non-finite loss takes precedence: its gradients mean nothing).
fn step_record<M: Model>(loss: u32, status: u32) -> StepRecord {
    let loss = f32::from_bits(loss);
    if status == 0 || !loss.is_finite() {
        Ok(loss)
    } else {
        Err(update_overflow::<M::Storage>(M::LAYERS, !status as usize))
    }
}

/// The input of the first layer.
#[derive(Clone, Copy)]
enum Input<'a> {
    Tensor(&'a Mem),
    Slot(usize),
}

impl<M> Drop for OpenClBackend<M> {
    fn drop(&mut self) {
        // The staging slots must outlive their non-blocking writes.
        let _ = self.queue.finish();
    }
}

impl<M: Model> Backend<M::Storage> for OpenClBackend<M> {
    fn upload(&self, data: &[M::Storage]) -> Result<Buffer> {
        let mem = Mem::from_slice(&self.device.context, data)?;
        Ok(Buffer::OpenCl(ClTensor { mem, queue: Arc::clone(&self.queue), device: Arc::clone(&self.device) }))
    }

    fn write_params(&mut self, flat: &[M::Storage]) -> Result<()> {
        self.queue.write(&self.params, 0, flat)
    }

    fn read_params(&self, out: &mut [M::Storage]) -> Result<()> {
        self.queue.read(&self.params, 0, out)
    }

    fn forward(&mut self, x: &Buffer) -> Result<Buffer> {
        let Buffer::OpenCl(x) = x else {
            return Err(Error::DeviceMismatch { tensor_device: x.location(), model_device: self.device.label() });
        };
        if !x.is_on(&self.device) {
            return Err(Error::DeviceMismatch { tensor_device: x.location(), model_device: self.device.label() });
        }
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
            let k = &mut self.kernels.fused;
            k.set_mem(0, &self.params)?;
            k.set_mem(1, &self.grads)?;
            k.set_mem(2, &x.mem)?;
            k.set_mem(3, &x.mem)?;
            k.set_scalar(4, M::BATCH as i32)?;
            k.set_scalar(5, 0.0f32)?;
            k.set_scalar(6, MODE_FORWARD)?;
            k.set_mem(7, &self.losses)?;
            k.set_scalar(8, word(IMMEDIATE))?;
            k.set_mem(9, &out)?;
            self.queue.launch(k, &[self.plan.fused_wg], &[self.plan.fused_wg])?;
        } else {
            self.run_tiled_forward(Input::Tensor(&x.mem), Some(&out))?;
        }
        Ok(Buffer::OpenCl(ClTensor { mem: out, queue: Arc::clone(&self.queue), device: Arc::clone(&self.device) }))
    }

    fn loss(&mut self, batch: Batch<'_, M::Storage>) -> Result<f32> {
        self.enqueue(batch, 0.0, MODE_LOSS, IMMEDIATE)?;
        self.read_loss(IMMEDIATE)
    }

    fn gradients(&mut self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32> {
        self.enqueue(batch, 0.0, MODE_GRADIENTS, IMMEDIATE)?;
        let loss = self.read_loss(IMMEDIATE)?;
        self.queue.read(&self.grads, 0, out)?;
        Ok(loss)
    }

    fn train_step(&mut self, batch: Batch<'_, M::Storage>, lr: f32) -> Result<f32> {
        self.enqueue(batch, lr, MODE_STEP, IMMEDIATE)?;
        match self.read_step(IMMEDIATE)? {
            Ok(loss) if !loss.is_finite() => Err(Error::NonFiniteLoss { loss }),
            record => record,
        }
    }
}
