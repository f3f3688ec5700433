//! The OpenCL C source of a model: the shape constants as `#define`s, then the kernel
//! templates of `cl/` (embedded by `build.rs`).
//!
//! The source depends on the model's shape alone, never on the device, so it can be
//! printed, snapshot-tested and compiled offline. The one device-dependent constant, the
//! tile width `TB_TILE` of the tiled kernels, comes from the build options.
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
//! Otherwise it runs the tiled kernels (`tb_forward`, `tb_loss`, `tb_backward`,
//! `tb_backward_inputs`, `tb_sgd`): `3 * layers + 1` launches per step, each matrix product
//! tiled through local memory. The host also falls back to them when the device cannot run
//! the fused work-group (local memory or work-group size too small).

use std::fmt::Write as _;

use crate::backend::layer_slots;
use crate::model::{Model, Params, StorageElement};

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

/// Work-group size of the loss kernel (a power of two; `TB_LOSS_WG` in `cl/loss.cl`).
pub(crate) const LOSS_MAX_WG: usize = 256;

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

/// `batch * sum(widths)`: the batch and every layer's output, in floats.
pub(crate) fn acts_len(dims: &[usize], batch: usize) -> usize {
    batch * dims.iter().sum::<usize>()
}

/// `batch * max(widths[1..])`: one delta buffer, in floats.
pub(crate) fn delta_len(dims: &[usize], batch: usize) -> usize {
    batch * dims[1..].iter().copied().max().unwrap_or(0)
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
    let _ = writeln!(s, "#define TB_PARAMS {}", M::Params::LEN);
    let _ = writeln!(s, "#define TB_MAX_WIDTH {}", dims.iter().copied().max().unwrap_or(0));
    // The labels follow the features in the batch buffer, at this 32-bit word.
    let x_values = batch * M::FEATURES;
    if M::Storage::IS_F16 {
        // Storage `f16`: the features are `half`, two a word (see cl/common.cl).
        let _ = writeln!(s, "#define TB_STORAGE_F16 1");
        let _ = writeln!(s, "#define TB_Y {}", x_values.div_ceil(2));
    } else {
        let _ = writeln!(s, "#define TB_Y {x_values}");
    }
    let _ = writeln!(s, "#define TB_ACTS {}", acts_len(dims, batch));
    let _ = writeln!(s, "#define TB_DELTA {}", delta_len(dims, batch));
    let _ = writeln!(s, "#define TB_FUSED {}", u8::from(plan.fits));
    let _ = writeln!(s, "#define TB_FUSED_WG {}", plan.wg);
    let mut a_in = 0;
    for (l, slot) in layer_slots(dims).enumerate() {
        let a_out = a_in + batch * slot.fan_in;
        let _ = writeln!(s, "#define TB_IN_{l} {}", slot.fan_in);
        let _ = writeln!(s, "#define TB_OUT_{l} {}", slot.fan_out);
        let _ = writeln!(s, "#define TB_W_{l} {}", slot.w);
        let _ = writeln!(s, "#define TB_B_{l} {}", slot.b);
        let _ = writeln!(s, "#define TB_RELU_{l} {}", u8::from(l + 1 < layers));
        let _ = writeln!(s, "#define TB_AIN_{l} {a_in}");
        let _ = writeln!(s, "#define TB_AOUT_{l} {a_out}");
        a_in = a_out;
    }
    let _ = writeln!(s, "#define TB_AOUT_LAST {a_in}");
    let list: String = (0..layers).map(|l| format!(" X({l})")).collect();
    let rev: String = (0..layers).rev().map(|l| format!(" X({l})")).collect();
    let _ = writeln!(s, "#define TB_LAYER_LIST(X){list}");
    let _ = writeln!(s, "#define TB_LAYER_LIST_REV(X){rev}");
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
