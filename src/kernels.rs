//! The OpenCL C source of a model: the shape constants as `#define`s, then the kernel
//! templates of `cl/` (embedded by `build.rs`).
//!
//! The source depends on the model's shape alone, never on the device, so it can be
//! printed, snapshot-tested and compiled offline. The device-dependent constants
//! (`TB_TILE`, `TB_RN`) come from the build options.
//!
//! # Which kernels run
//! A model runs its whole train step in **one launch of one work-group**
//! (`tb_train_step`) when [`fused_plan`] says it is small enough:
//! - the batch, every activation and two delta buffers fit in [`FUSED_MAX_LOCAL_BYTES`] of
//!   local memory, and
//! - a step is at most [`FUSED_MAX_MACS`] multiply-adds (forward and backward together),
//!   the size above which one work-group on one compute unit loses to the tiled kernels
//!   spread over every compute unit.
//!
//! A tiny model whose batch goes by value ([`tiny_plan`]: the seed's shape, say) runs the
//! train step in **one work-item** instead (`tb_tiny_step`, and `tb_tiny_steps` for a group
//! of deferred steps, `cl/tiny_step.cl`): one buffer argument, no local memory, no barrier,
//! several deferred steps a launch, since on such models the launch is the cost. The fused
//! kernel still runs its other calls (forward, loss, gradients), and computes the same bits.
//!
//! Otherwise it runs the tiled kernels (`tb_forward`, `tb_loss`, `tb_backward`,
//! `tb_backward_inputs`, `tb_sgd`): `3 * layers + 1` launches per step, each matrix product
//! tiled through local memory. The host also falls back to them when the device cannot run
//! the fused work-group (local memory or work-group size too small). Where a driver allows
//! the fused kernel fewer work-items than the shape's work-group (Mesa 22.3's rusticl
//! reports 32 for every kernel), the host builds it again for the largest power of two it
//! allows (`-D TB_FUSED_WG`): its work-items stride over each stage, whatever their number.
//!
//! The optimizer's step: plain SGD's is part of the kernels above, and on the tiny kernel
//! momentum's, Adam's and AdamW's too (their state in its buffer: [`tiny_opt_words`]). Any
//! other optimizer's step (and SGD's with weight decay) runs after the path's gradients as `tb_opt_check` and
//! `tb_opt_apply` (`cl/update.cl`), two launches of one work-item per [`UPDATE_VEC`]
//! parameters, on the formulas `crate::math::optim::write_opencl` emits.

use std::fmt::Write as _;

use crate::cpu::update_limit;
use crate::info::ARGUMENT_BATCH_WORDS;
use crate::layout::{acts_len, delta_len, layer_slots, max_width, output_offset, param_count};
use crate::math::activation::{self, after_layer, Activation};
use crate::math::loss;
use crate::math::optim::{self, Optimizer};
use crate::model::{Model, StorageElement};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Local memory the fused kernel may use: half of the 32 KiB every full-profile OpenCL
/// device guarantees.
pub const FUSED_MAX_LOCAL_BYTES: usize = 16 * 1024;

/// Multiply-adds per step (forward + both backward products) above which the tiled
/// kernels are used even when the fused kernel fits. Measured with
/// `benches/opencl_paths.rs` on PoCL (2 cores): at every shape that fits the fused
/// kernel's local memory, up to 590k multiply-adds, one fused launch beat the tiled
/// launches (1.4x to 2.4x; once 0.9x, within the noise), so on such devices the local
/// memory decides. A GPU with many compute units, which one work-group leaves idle, is
/// unmeasured; this bound keeps a large step off a single compute unit there.
pub const FUSED_MAX_MACS: usize = 1 << 20;

/// Largest work-group the fused kernel asks for.
pub const FUSED_MAX_WG: usize = 256;

/// Work-group size of the loss kernel, at most (a power of two; `TB_LOSS_WG` in the
/// kernels).
pub(crate) const LOSS_MAX_WG: usize = 256;

/// Parameters per work-item of the update kernels (`TB_UPDATE_VEC` in `cl/update.cl`, which
/// loads them as one `float16` and refuses to build with any other value).
pub(crate) const UPDATE_VEC: usize = 16;

/// Control words in front of each step's batch in the tiny kernel's by-value arguments
/// (`TB_TINY_CTRL`): the loss record's word in its state buffer, the learning rate's bits,
/// the rows that count.
pub(crate) const TINY_CTRL: usize = 3;

/// 32-bit words the tiny kernel takes by value at most (`TB_TINY_WORDS`, as `uint4`s): the
/// step count, then each step's control words and batch. On PoCL's `basic` device each
/// `uint4` argument adds about 0.025 us to a launch of about 0.5 us, and a seed step's work
/// about 0.1 us: measured, a deferred seed step took 0.76 us one a launch and 0.42-0.47 us
/// four a launch (14 `uint4`s).
pub(crate) const TINY_MAX_WORDS: usize = 64;

/// Steps a launch of the tiny kernel runs at most (`TB_TINY_STEPS`).
pub(crate) const TINY_MAX_STEPS: usize = 4;

/// Private `float`s (activations, two deltas, gradients) the tiny kernel may hold.
pub(crate) const TINY_MAX_PRIVATE: usize = 256;

/// What a launch of the fused kernel computes (its `mode` argument; `TB_MODE_*` in the
/// kernels). Each mode does everything the one before it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub(crate) enum Mode {
    /// Logits into the output buffer.
    Forward = 0,
    /// The mean loss into the loss record.
    Loss = 1,
    /// And dL/dparams into the gradient buffer.
    Gradients = 2,
    /// And plain SGD's update, unless the loss is not finite (the other optimizers run
    /// [`Mode::Gradients`], then their own update kernels).
    Step = 3,
}

impl Mode {
    /// Every mode, with the name of its `#define`.
    const ALL: [(Mode, &'static str); 4] = [
        (Mode::Forward, "TB_MODE_FORWARD"),
        (Mode::Loss, "TB_MODE_LOSS"),
        (Mode::Gradients, "TB_MODE_GRADIENTS"),
        (Mode::Step, "TB_MODE_STEP"),
    ];
}

/// Whether and how a shape runs fused, from its layer widths and batch alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FusedPlan {
    /// The fused kernel fits the shape (local memory): it is compiled in (`TB_FUSED`), and
    /// [`KernelPath::Fused`](crate::KernelPath::Fused) may force it.
    pub fits: bool,
    /// [`KernelPath::Auto`](crate::KernelPath::Auto) picks it: it fits, and a step is at
    /// most [`FUSED_MAX_MACS`] multiply-adds.
    pub fused: bool,
    /// Its work-group size (a power of two).
    pub wg: usize,
    /// Local memory it declares, in bytes.
    pub local_bytes: usize,
}

/// `(input, output)` offsets of layer `l` in the kernels' activation scratch: the batch
/// first, then every layer's output ([`output_offset`]).
pub(crate) fn scratch_offsets(dims: &[usize], batch: usize, l: usize) -> (usize, usize) {
    let x = batch * dims[0];
    let a_in = if l == 0 { 0 } else { x + output_offset(dims, batch, l - 1) };
    (a_in, x + output_offset(dims, batch, l))
}

/// The fused-kernel decision for a shape (see the module docs).
pub(crate) fn fused_plan(dims: &[usize], batch: usize) -> FusedPlan {
    let mut widest_stage = batch; // the loss stage: one row per work-item
    let mut macs = 0usize;
    for (l, slot) in layer_slots(dims).enumerate() {
        let (fan_in, fan_out) = (slot.fan_in, slot.fan_out);
        widest_stage = widest_stage.max(batch * fan_out).max(fan_in * fan_out + fan_out);
        if l > 0 {
            widest_stage = widest_stage.max(batch * fan_in);
        }
        macs = macs.saturating_add(batch.saturating_mul(fan_in).saturating_mul(fan_out).saturating_mul(3));
    }
    let wg = widest_stage.next_power_of_two().clamp(1, FUSED_MAX_WG);
    let floats = acts_len(dims, batch) + 2 * delta_len(dims, batch) + wg;
    let local_bytes = floats.saturating_mul(4);
    let fits = local_bytes <= FUSED_MAX_LOCAL_BYTES;
    FusedPlan { fits, fused: fits && macs <= FUSED_MAX_MACS, wg, local_bytes }
}

/// 32-bit words of a batch in the kernels' layout (features, `f32` one a word or `f16`
/// two a word, then one per label): the batch buffer's size.
pub(crate) fn batch_words<M: Model>() -> usize {
    let x = M::BATCH * M::FEATURES;
    let x = if M::Storage::IS_F16 { x.div_ceil(2) } else { x };
    x + M::BATCH
}

/// The words of the fused kernel's by-value batch argument (`TB_ARG_WORDS`), when the
/// batch fits [`ARGUMENT_BATCH_WORDS`] and the fused kernel is compiled in.
pub(crate) fn argument_words<M: Model>() -> Option<usize> {
    let words = batch_words::<M>();
    (fused_plan(M::LAYERS, M::BATCH).fits && words <= ARGUMENT_BATCH_WORDS).then_some(words)
}

/// How the tiny kernels (`tb_tiny_step`, `tb_tiny_steps`, `cl/tiny_step.cl`) run a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TinyPlan {
    /// Words of one step: [`TINY_CTRL`], then the batch.
    pub step_words: usize,
    /// Steps a launch may run (`TB_TINY_STEPS`).
    pub steps: usize,
    /// The `uint4` by-value arguments (after the state buffer) of `tb_tiny_steps`.
    pub args: usize,
    /// Those of `tb_tiny_step` (one step).
    pub one_args: usize,
}

/// The tiny kernel's plan, when the shape takes it: the batch goes by value
/// ([`argument_words`]), a step's words fit [`TINY_MAX_WORDS`] with the step count, and the
/// step's activations, deltas and gradients fit [`TINY_MAX_PRIVATE`] floats. Such a step is
/// a few hundred multiply-adds at most, which one work-item does in less time than a
/// work-group's barriers cost.
pub(crate) fn tiny_plan<M: Model>() -> Option<TinyPlan> {
    let dims = M::LAYERS;
    let step_words = argument_words::<M>()? + TINY_CTRL;
    let private = acts_len(dims, M::BATCH) + 2 * delta_len(dims, M::BATCH) + param_count(dims);
    if 1 + step_words > TINY_MAX_WORDS || private > TINY_MAX_PRIVATE {
        return None;
    }
    let steps = ((TINY_MAX_WORDS - 1) / step_words).min(TINY_MAX_STEPS);
    Some(TinyPlan {
        step_words,
        steps,
        args: (1 + steps * step_words).div_ceil(4),
        one_args: (1 + step_words).div_ceil(4),
    })
}

/// Bytes to which the tiny kernel's state aligns the optimizer's state after the
/// parameters: a multiple of any device's base address alignment (the backend checks it),
/// so that the optimizer's state is also a sub-buffer, which the update kernels, the
/// checkpoints and `reset_optimizer` read and write.
pub(crate) const TINY_OPT_ALIGN: usize = 4096;

/// Where the tiny kernel keeps an optimizer with moments (`TB_TINY_OPT_STATE`) in its
/// state buffer, in words: `(TB_TINY_OPT, TB_TINY_HYPER)`, the optimizer's state
/// ([`opt_words`]) after the parameters at [`TINY_OPT_ALIGN`], then its 8 hyperparameters
/// (`opencl_hyper`, a `float8`). `None` for an optimizer without moments (plain SGD's step
/// takes its rate alone, by value).
pub(crate) fn tiny_opt_words<M: Model>() -> Option<(usize, usize)> {
    if <M::Optimizer as Optimizer>::MOMENTS == 0 {
        return None;
    }
    let param_bytes = (param_count(M::LAYERS) * core::mem::size_of::<M::Storage>()).max(1);
    let opt = param_bytes.next_multiple_of(TINY_OPT_ALIGN) / 4;
    Some((opt, opt + opt_words::<M>()))
}

/// Words of the optimizer's state buffer on the device (`opt` in `cl/update.cl`): the
/// moment buffers ([`Optimizer::MOMENTS`] times the parameter count, `f32`), then the step
/// count of the accepted steps at word [`opt_step_word`] (`TB_OPT_STEP`), then the step
/// count a step being checked would reach.
pub(crate) fn opt_words<M: Model>() -> usize {
    opt_step_word::<M>() + 2
}

/// The word of the step count in the optimizer's state buffer (see [`opt_words`]).
pub(crate) fn opt_step_word<M: Model>() -> usize {
    <M::Optimizer as Optimizer>::MOMENTS * param_count(M::LAYERS)
}

/// The `#define`s that specialise the templates for model `M`.
pub fn defines<M: Model>() -> String {
    let mut s = String::new();
    let dims = M::LAYERS;
    let batch = M::BATCH;
    let layers = dims.len() - 1;
    let plan = fused_plan(dims, batch);
    let _ = writeln!(s, "// tensorbridge: kernels specialised for `{}`", M::NAME);
    let _ = writeln!(s, "#define TB_BATCH {batch}");
    let _ = writeln!(s, "#define TB_FEATURES {}", M::FEATURES);
    let _ = writeln!(s, "#define TB_CLASSES {}", M::CLASSES);
    let _ = writeln!(s, "#define TB_LAYERS {layers}");
    let _ = writeln!(s, "#define TB_PARAMS {}", param_count(dims));
    let _ = writeln!(s, "#define TB_MAX_WIDTH {}", max_width(dims));
    for (mode, name) in Mode::ALL {
        let _ = writeln!(s, "#define {name} {}", mode as i32);
    }
    let _ = writeln!(s, "#define TB_LOSS_WG {LOSS_MAX_WG}");
    let _ = writeln!(s, "#define TB_UPDATE_VEC {UPDATE_VEC}");
    // |p - lr * g| from which an update no longer fits the storage (crate::cpu::update_limit).
    let limit = update_limit::<M::Storage>();
    let limit = if limit.is_finite() { format!("{limit:.1}f") } else { "INFINITY".to_string() };
    let _ = writeln!(s, "#define TB_UPDATE_LIMIT {limit}");
    // The labels follow the features in the batch buffer, at this 32-bit word.
    let x_values = batch * M::FEATURES;
    if M::Storage::IS_F16 {
        // Storage `f16`: the features are `half`, two a word (see cl/common.cl).
        let _ = writeln!(s, "#define TB_STORAGE_F16 1");
        let _ = writeln!(s, "#define TB_Y {}", x_values.div_ceil(2));
    } else {
        let _ = writeln!(s, "#define TB_Y {x_values}");
    }
    // The batch as a by-value argument of the fused kernel (Upload::Arguments).
    let arg_words = argument_words::<M>().unwrap_or(1);
    let _ = writeln!(s, "#define TB_ARG_WORDS {arg_words}");
    // Its words one by one, for a copy at constant offsets (cl/train_step.cl).
    let list: String = (0..arg_words).map(|i| format!(" X({i})")).collect();
    let _ = writeln!(s, "#define TB_ARG_LIST(X){list}");
    let _ = writeln!(s, "#define TB_ACTS {}", acts_len(dims, batch));
    let _ = writeln!(s, "#define TB_DELTA {}", delta_len(dims, batch));
    let _ = writeln!(s, "#define TB_FUSED {}", u8::from(plan.fits));
    // The host may build with a smaller `-D TB_FUSED_WG` where a driver allows the kernel
    // fewer work-items (src/backend/opencl/mod.rs, `Inner::new`).
    let _ = writeln!(s, "#ifndef TB_FUSED_WG\n#define TB_FUSED_WG {}\n#endif", plan.wg);
    // The tiny kernels' arguments: `uint4`s a0, a1, ... (one, unused, when they do not apply).
    let tiny = tiny_plan::<M>();
    let _ = writeln!(s, "#define TB_TINY {}", u8::from(tiny.is_some()));
    let _ = writeln!(s, "#define TB_TINY_CTRL {TINY_CTRL}");
    let _ = writeln!(s, "#define TB_TINY_STEP_WORDS {}", tiny.map_or(1, |t| t.step_words));
    let _ = writeln!(s, "#define TB_TINY_STEPS {}", tiny.map_or(1, |t| t.steps));
    let opt_state = tiny_opt_words::<M>();
    let _ = writeln!(s, "#define TB_TINY_OPT_STATE {}", u8::from(opt_state.is_some()));
    let (opt, hyper) = opt_state.unwrap_or((0, 0));
    let _ = writeln!(s, "#define TB_TINY_OPT {opt}\n#define TB_TINY_HYPER {hyper}");
    // The rows' loss reduction: the fused kernel's tree, cut to the rows it can hold.
    let _ = writeln!(s, "#define TB_TINY_RED {}", batch.next_power_of_two());
    for (name, args) in [("", tiny.map_or(1, |t| t.args)), ("_ONE", tiny.map_or(1, |t| t.one_args))] {
        let _ = writeln!(s, "#define TB_TINY{name}_WORDS {}", 4 * args);
        let decl: Vec<String> = (0..args).map(|i| format!("const uint4 a{i}")).collect();
        let _ = writeln!(s, "#define TB_TINY{name}_ARGS {}", decl.join(", "));
        let list: String = (0..args).map(|i| format!(" X({i})")).collect();
        let _ = writeln!(s, "#define TB_TINY{name}_LIST(X){list}");
    }
    let mut last = 0;
    for (l, slot) in layer_slots(dims).enumerate() {
        let (a_in, a_out) = scratch_offsets(dims, batch, l);
        let _ = writeln!(s, "#define TB_IN_{l} {}", slot.fan_in);
        let _ = writeln!(s, "#define TB_OUT_{l} {}", slot.fan_out);
        let _ = writeln!(s, "#define TB_W_{l} {}", slot.w);
        let _ = writeln!(s, "#define TB_B_{l} {}", slot.b);
        // The activation after the layer, and the one after the layer below (whose output
        // is this layer's input; identity for the first layer's input, the batch).
        let act = after_layer(M::ACTIVATIONS, layers, l);
        let below = if l == 0 { Activation::Identity } else { after_layer(M::ACTIVATIONS, layers, l - 1) };
        let _ = writeln!(s, "#define TB_ACT_{l} {}", act.opencl_name());
        let _ = writeln!(s, "#define TB_ACT_IN_{l} {}", below.opencl_name());
        let _ = writeln!(s, "#define TB_AIN_{l} {a_in}");
        let _ = writeln!(s, "#define TB_AOUT_{l} {a_out}");
        last = a_out;
    }
    let _ = writeln!(s, "#define TB_AOUT_LAST {last}");
    let list: String = (0..layers).map(|l| format!(" X({l})")).collect();
    let rev: String = (0..layers).rev().map(|l| format!(" X({l})")).collect();
    let _ = writeln!(s, "#define TB_LAYER_LIST(X){list}");
    let _ = writeln!(s, "#define TB_LAYER_LIST_REV(X){rev}");
    // The activations' formulas (src/math/activation.rs): tb_act, tb_act_grad, ...
    let _ = activation::write_opencl(&mut s);
    // The loss of one row (src/math/loss.rs): TB_ROW_LOSS.
    let _ = loss::write_opencl(&mut s);
    // The optimizer's step (src/math/optim.rs): tb_opt_coeffs, tb_opt_update, and where its
    // state buffer keeps the step count.
    let _ = writeln!(s, "#define TB_OPT_STEP {}", opt_step_word::<M>());
    let _ = optim::write_opencl::<M::Optimizer>(&mut s);
    s
}

/// The complete specialised source: `defines` followed by every template.
pub fn kernel_source<M: Model>() -> String {
    let mut s = defines::<M>();
    for (name, src) in TEMPLATES {
        let _ = write!(s, "\n// ---- cl/{name}\n{src}");
    }
    s
}

/// The OpenCL C source of the int8 inference kernel (`cl/int8.cl`) for batches of `batch`
/// rows: its shape constant and the index of each value of a layer's description
/// ([`Int8Layer::META`]) as `#define`s, then the template. The layer sizes, zero points and
/// code ranges are in the descriptions, a buffer of the launch.
pub(crate) fn int8_source(batch: usize) -> String {
    let mut s = format!("#define TB_Q_BATCH {batch}\n");
    for (index, name) in Int8Layer::META.iter().enumerate() {
        let _ = writeln!(s, "#define TB_Q_M_{name} {index}");
    }
    let _ = writeln!(s, "#define TB_Q_M_COUNT {}\n", Int8Layer::META.len());
    s + INT8_CL
}

/// One layer of the int8 kernel, as `cl/int8.cl` reads it from its `meta` buffer.
pub(crate) struct Int8Layer {
    /// Where its operands start in the operands buffer (in operands); a hidden layer's
    /// only (the first layer reads the input's buffer, a launch argument of its own).
    pub input: usize,
    /// Where the operands it writes start (a hidden layer's).
    pub output: usize,
    /// Where its weights start (in quads).
    pub w_off: usize,
    /// Its first output channel.
    pub c_off: usize,
    /// Quads of operands of an input row.
    pub quads: usize,
    pub fan_out: usize,
    /// Quads of operands of an output row.
    pub out_stride: usize,
    pub z_in: i32,
    pub z_out: i32,
    /// The range of its output codes.
    pub lo: i32,
    pub hi: i32,
    /// Whether it is the head (which writes `short` codes).
    pub head: bool,
}

impl Int8Layer {
    /// The names of [`Int8Layer::values`], in order: `TB_Q_M_<name>` in the kernel.
    pub(crate) const META: [&'static str; 12] =
        ["IN", "OUT", "W_OFF", "C_OFF", "QUADS", "FAN_OUT", "OUT_STRIDE", "Z_IN", "Z_OUT", "LO", "HI", "HEAD"];

    /// The description as the kernel reads it.
    pub(crate) fn values(&self) -> [i32; 12] {
        let n = |v: usize| v as i32;
        [
            n(self.input),
            n(self.output),
            n(self.w_off),
            n(self.c_off),
            n(self.quads),
            n(self.fan_out),
            n(self.out_stride),
            self.z_in,
            self.z_out,
            self.lo,
            self.hi,
            i32::from(self.head),
        ]
    }
}
