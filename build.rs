//! Embeds the OpenCL C kernel templates of `cl/` into the runtime crate and checks them
//! (with the feature `opencl` only).
//!
//! Every template the Rust side names is listed in `TEMPLATES`; a missing or empty one, or
//! one that does not define the kernels it is listed with, fails the build with a message
//! naming the file. The generated `$OUT_DIR/kernels.rs` holds the templates, in order, as
//! `(file name, source)` pairs, and, read from each kernel's signature in `cl/`, the kernel's
//! name and the index of every argument (`kernel::tb_sgd::LR`, ...): the host sets
//! arguments by these names, so a kernel's argument order is written once, in its `.cl`
//! file.

use std::fmt::Write as _;
use std::path::Path;

/// Template files, in the order they are concatenated, with the kernels each must define.
const TEMPLATES: &[(&str, &[&str])] = &[
    ("common.cl", &["tb_widen_x"]),
    ("forward.cl", &["tb_forward"]),
    ("loss.cl", &["tb_loss"]),
    ("backward.cl", &["tb_backward", "tb_backward_inputs"]),
    ("update.cl", &["tb_sgd", "tb_check_update", "tb_opt_check", "tb_opt_apply"]),
    ("train_step.cl", &["tb_train_step"]),
    ("tiny_step.cl", &["tb_tiny_step", "tb_tiny_steps"]),
];

/// Templates of programs of their own (not part of a model's training program): the
/// int8 inference kernels, embedded as `INT8_CL`.
const SEPARATE: &[(&str, &str, &[&str])] = &[("int8.cl", "INT8_CL", &["tb_int8_layers", "tb_int8_form"])];

fn main() {
    arm_cfgs();
    // Without the feature `opencl` (the `no_std` core, a firmware) nothing embeds the
    // templates: none is read, and none can reach the binary.
    if std::env::var_os("CARGO_FEATURE_OPENCL").is_none() {
        println!("cargo:rerun-if-changed=build.rs");
        return;
    }
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("cl");
    println!("cargo:rerun-if-changed=cl");
    let mut out = String::from("/// The kernel templates of `cl/`, in order: (file name, OpenCL C source).\n");
    out.push_str("pub(crate) const TEMPLATES: &[(&str, &str)] = &[\n");
    let mut problems = Vec::new();
    for (name, kernels) in TEMPLATES {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        match std::fs::read_to_string(&path) {
            Err(err) => problems.push(format!("cl/{name}: cannot be read ({err})")),
            Ok(src) if src.trim().is_empty() => problems.push(format!("cl/{name}: is empty")),
            Ok(src) => {
                for kernel in *kernels {
                    let needle = format!("void {kernel}(");
                    if !src.contains("__kernel") || !src.contains(&needle) {
                        problems.push(format!("cl/{name}: does not define `__kernel void {kernel}(...)`"));
                    }
                }
                if src.matches('{').count() != src.matches('}').count() {
                    problems.push(format!("cl/{name}: unbalanced braces"));
                }
                let _ = writeln!(out, "    ({name:?}, include_str!({:?})),", path.display().to_string());
            }
        }
    }
    out.push_str("];\n");
    out.push_str("/// Every kernel of the program, by name, with its arguments' indices.\n");
    out.push_str("#[allow(dead_code)]\npub(crate) mod kernel {\n");
    let mut names = Vec::new();
    for (name, kernels) in TEMPLATES {
        let src = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        for kernel in *kernels {
            match arguments(&src, kernel) {
                Some(args) => {
                    let _ = writeln!(out, "    /// `{kernel}` (cl/{name}).\n    pub(crate) mod {kernel} {{");
                    let _ = writeln!(out, "        pub(crate) const NAME: &str = {kernel:?};");
                    for (k, arg) in args.iter().enumerate() {
                        let _ = writeln!(out, "        pub(crate) const {}: u32 = {k};", arg.to_uppercase());
                    }
                    out.push_str("    }\n");
                    names.push(kernel.to_string());
                }
                None => problems.push(format!("cl/{name}: cannot read the arguments of `{kernel}`")),
            }
        }
    }
    for (name, _, kernels) in SEPARATE {
        let src = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        for kernel in *kernels {
            match arguments(&src, kernel) {
                Some(args) => {
                    let _ = writeln!(out, "    /// `{kernel}` (cl/{name}).\n    pub(crate) mod {kernel} {{");
                    let _ = writeln!(out, "        pub(crate) const NAME: &str = {kernel:?};");
                    for (k, arg) in args.iter().enumerate() {
                        let _ = writeln!(out, "        pub(crate) const {}: u32 = {k};", arg.to_uppercase());
                    }
                    out.push_str("    }\n");
                }
                None => problems.push(format!("cl/{name}: cannot read the arguments of `{kernel}`")),
            }
        }
    }
    let _ = writeln!(out, "    /// Every kernel's name.\n    pub(crate) const ALL: &[&str] = &{names:?};\n}}");
    for (name, constant, kernels) in SEPARATE {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        match std::fs::read_to_string(&path) {
            Err(err) => problems.push(format!("cl/{name}: cannot be read ({err})")),
            Ok(src) => {
                for kernel in *kernels {
                    if !src.contains(&format!("void {kernel}(")) {
                        problems.push(format!("cl/{name}: does not define `__kernel void {kernel}(...)`"));
                    }
                }
                let _ = writeln!(out, "/// cl/{name}, a program of its own.");
                let _ = writeln!(
                    out,
                    "#[allow(dead_code)]\npub(crate) const {constant}: &str = include_str!({:?});",
                    path.display().to_string()
                );
            }
        }
    }
    if !problems.is_empty() {
        panic!("tensorbridge: bad OpenCL kernel templates:\n  {}", problems.join("\n  "));
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.rs");
    std::fs::write(&dest, out).expect("writing kernels.rs into OUT_DIR");
}

/// The argument names of the first definition of `__kernel ... void kernel(...)` in `src`:
/// the last identifier of each comma-separated parameter.
fn arguments(src: &str, kernel: &str) -> Option<Vec<String>> {
    let start = src.find(&format!("void {kernel}("))? + kernel.len() + 6;
    let end = start + src[start..].find(')')?;
    let params = src[start..end].trim();
    if params.is_empty() || params == "void" {
        return Some(Vec::new());
    }
    params
        .split(',')
        .map(|p| {
            let name: String = p.trim().rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next()?.to_string();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The integer forward pass's instruction sets on Arm microcontrollers (`src/quant.rs`):
/// `tb_arm_dsp` where the target has the DSP extension's dual 16-bit multiply-add (`SMLAD`:
/// Armv7E-M, the Cortex-M4 and M7), `tb_arm_v6m` where it has no 32 x 32 -> 64-bit multiply
/// (Armv6-M and Armv8-M Baseline: the Cortex-M0, M0+, M1 and M23). Stable Rust sets no
/// `target_feature` cfg for Arm, hence the target's name.
fn arm_cfgs() {
    println!("cargo:rustc-check-cfg=cfg(tb_arm_dsp)");
    println!("cargo:rustc-check-cfg=cfg(tb_arm_v6m)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo:rustc-cfg=tb_arm_dsp");
    }
    if target.starts_with("thumbv6m") || target.starts_with("thumbv8m.base") {
        println!("cargo:rustc-cfg=tb_arm_v6m");
    }
}
