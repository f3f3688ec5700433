//! The OpenCL C source of a model: the shape constants as `#define`s, then the kernel
//! templates of `cl/` (embedded by `build.rs`).

use std::fmt::Write as _;

use crate::backend::layer_slots;
use crate::model::{Model, Params};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The `#define`s that specialise the templates for model `M`.
pub fn defines<M: Model>() -> String {
    let mut s = String::new();
    let dims = M::LAYERS;
    let _ = writeln!(s, "// tensorbridge: kernels specialised for `{}`", M::NAME);
    let _ = writeln!(s, "#define TB_BATCH {}", M::BATCH);
    let _ = writeln!(s, "#define TB_FEATURES {}", M::FEATURES);
    let _ = writeln!(s, "#define TB_CLASSES {}", M::CLASSES);
    let _ = writeln!(s, "#define TB_LAYERS {}", dims.len() - 1);
    let _ = writeln!(s, "#define TB_PARAMS {}", M::Params::LEN);
    let _ = writeln!(s, "#define TB_MAX_WIDTH {}", dims.iter().copied().max().unwrap_or(0));
    for (l, slot) in layer_slots(dims).enumerate() {
        let _ = writeln!(s, "#define TB_IN_{l} {}", slot.fan_in);
        let _ = writeln!(s, "#define TB_OUT_{l} {}", slot.fan_out);
        let _ = writeln!(s, "#define TB_W_{l} {}", slot.w);
        let _ = writeln!(s, "#define TB_B_{l} {}", slot.b);
    }
    s
}

/// The complete specialised source: [`defines`] followed by every template.
pub fn kernel_source<M: Model>() -> String {
    let mut s = defines::<M>();
    for (name, src) in TEMPLATES {
        let _ = write!(s, "\n// ---- cl/{name}\n{src}");
    }
    s
}
