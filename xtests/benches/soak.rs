//! Memory over long runs: the resident set (`VmRSS`) of deferred and immediate train steps,
//! inference calls (`logits`, `predict`) and model creation and drop, on every path: the
//! CPU backend, and OpenCL's tiny, fused and tiled kernels, each with `f32` and `f16`
//! storage, plus the shapes of a user's program on the automatic path.
//!
//! Each row runs in a child process of its own (this binary, started again with `--row`),
//! so that its figures are its own: the resident set after the model is made (`start`),
//! after the first tenth of the run (`warm-up`), then every tenth, and the growth from the
//! warm-up to the end. Deferred steps call `take_losses` every 20,000 steps, as a training
//! loop that logs its losses would. The kernels each row ran are read from a profiled step
//! (`tiny`, `fused`, `upload+fused`, `forward[0]+...`).
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench soak [-- [STEPS] [FILTER]]`: STEPS
//! (default 1000000; also `TENSORBRIDGE_SOAK_STEPS`) steps or calls a row (model rows make
//! STEPS / 1000 models), FILTER a part of the rows' names (`tiny`, `cpu`, `deferred`, ...).
//! OpenCL rows need an OpenCL device; without one only the CPU rows run.

use std::process::Command;

use tensorbridge::{Device, Engine, HostTensor, KernelPath, Model, StorageElement};
use tensorbridge_xtests::resident_kib;

tensorbridge::model! { struct Seed { batch: 2, features: 4, classes: 2 } }
tensorbridge::model! { struct Seed16 { batch: 2, features: 4, classes: 2, storage: f16 } }
tensorbridge::model! { struct Iris { batch: 16, features: 4, classes: 3 } }
tensorbridge::model! { struct Iris16 { batch: 16, features: 4, classes: 3, storage: f16 } }
tensorbridge::model! { struct Mlp { batch: 32, features: 64, hidden: [32], classes: 10 } }
tensorbridge::model! { struct Mlp16 { batch: 32, features: 64, hidden: [32], classes: 10, storage: f16 } }

/// Deferred steps between two `take_losses`.
const TAKE_EVERY: usize = 20_000;
/// Checkpoints a run prints (the first is the warm-up).
const CHECKPOINTS: usize = 10;

/// What a row does.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    Deferred,
    Immediate,
    Logits,
    Predict,
    /// Models made and dropped.
    Models,
}

const WORKS: [(&str, Work); 5] = [
    ("deferred", Work::Deferred),
    ("immediate", Work::Immediate),
    ("logits", Work::Logits),
    ("predict", Work::Predict),
    ("models", Work::Models),
];

/// Where a row runs.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Cpu,
    Auto,
    Fused,
    Tiled,
}

/// The rows' devices, models and paths: `(path name, model name, device path)`. `tiny` is
/// the automatic path of a model the tiny kernel takes.
const TARGETS: [(&str, &str, Path); 12] = [
    ("cpu", "Iris", Path::Cpu),
    ("cpu", "Iris16", Path::Cpu),
    ("cpu", "Mlp", Path::Cpu),
    ("cpu", "Mlp16", Path::Cpu),
    ("tiny", "Seed", Path::Auto),
    ("tiny", "Seed16", Path::Auto),
    ("fused", "Iris", Path::Fused),
    ("fused", "Iris16", Path::Fused),
    ("tiled", "Mlp", Path::Tiled),
    ("tiled", "Mlp16", Path::Tiled),
    ("auto", "Iris", Path::Auto),
    ("auto", "Mlp", Path::Auto),
];

fn device(path: Path) -> Option<Device> {
    let opencl = || Device::opencl().ok();
    Some(match path {
        Path::Cpu => Device::cpu(),
        Path::Auto => opencl()?,
        Path::Fused => opencl()?.with_kernel_path(KernelPath::Fused),
        Path::Tiled => opencl()?.with_kernel_path(KernelPath::Tiled),
    })
}

/// A deterministic batch of `M` (features in [-0.5, 0.5), labels cycling).
fn batch<M: Model>() -> (M::Input, M::Labels) {
    let x: Vec<M::Storage> =
        (0..M::BATCH * M::FEATURES).map(|k| M::Storage::from_f32(((k * 37 % 101) as f32 / 101.0) - 0.5)).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(&y))
}

/// The kernels a step of `M` runs on `device` (its profiled stages), `cpu` on the CPU.
fn kernels<M: Model>(device: &Device) -> String {
    if device.is_cpu() {
        return "cpu".to_string();
    }
    let (x, y) = batch::<M>();
    let profiled = Engine::<M>::new(&device.with_profiling(true)).and_then(|mut m| m.profile_step(&x, &y, 1e-4));
    match profiled {
        Ok(p) => {
            let mut names: Vec<String> = p.stages.into_iter().map(|s| s.name).collect();
            names.dedup();
            names.join("+")
        }
        Err(err) => format!("({err})"),
    }
}

/// In the child: runs `work` on `M` for `steps`, printing `rss <done> <KiB>` at the start
/// and at each checkpoint.
fn soak<M: Model>(device: &Device, work: Work, steps: usize) -> Result<(), String> {
    println!("kernels {}", kernels::<M>(device));
    let (x, y) = batch::<M>();
    let fail = |e: tensorbridge::Error| e.to_string();
    let every = (steps / CHECKPOINTS).max(1);
    if work == Work::Models {
        // STEPS / 1000 models (1,000 for a full run), a checkpoint every tenth.
        let models = (steps / 1000).max(CHECKPOINTS);
        let every = (models / CHECKPOINTS).max(1);
        drop(Engine::<M>::new(device).map_err(fail)?);
        println!("rss 0 {}", resident_kib());
        for k in 1..=models {
            let mut model = Engine::<M>::new(device).map_err(fail)?;
            model.train_step(&x, &y, 1e-4).map_err(fail)?;
            drop(model);
            if k % every == 0 {
                println!("rss {k} {}", resident_kib());
            }
        }
        return Ok(());
    }
    let mut model = Engine::<M>::new(device).map_err(fail)?;
    model.warm_up().map_err(fail)?;
    println!("rss 0 {}", resident_kib());
    let mut losses = 0usize;
    for k in 1..=steps {
        match work {
            Work::Deferred => {
                model.train_step_deferred(&x, &y, 1e-4).map_err(fail)?;
                if k % TAKE_EVERY == 0 {
                    losses += model.take_losses().map_err(fail)?.len();
                }
            }
            Work::Immediate => drop(model.train_step(&x, &y, 1e-4).map_err(fail)?),
            Work::Logits => drop(model.logits(&x).map_err(fail)?),
            Work::Predict => drop(model.predict(&x).map_err(fail)?),
            Work::Models => unreachable!("handled above"),
        }
        if k % every == 0 {
            println!("rss {k} {}", resident_kib());
        }
    }
    if work == Work::Deferred {
        losses += model.take_losses().map_err(fail)?.len();
        if losses != steps {
            return Err(format!("{losses} losses taken for {steps} steps"));
        }
    }
    Ok(())
}

fn run_model(model: &str, device: &Device, work: Work, steps: usize) -> Result<(), String> {
    match model {
        "Seed" => soak::<Seed>(device, work, steps),
        "Seed16" => soak::<Seed16>(device, work, steps),
        "Iris" => soak::<Iris>(device, work, steps),
        "Iris16" => soak::<Iris16>(device, work, steps),
        "Mlp" => soak::<Mlp>(device, work, steps),
        "Mlp16" => soak::<Mlp16>(device, work, steps),
        other => Err(format!("no model {other}")),
    }
}

/// The row's name: `<path> <model> <work>`.
fn row_name(path: &str, model: &str, work: &str) -> String {
    format!("{path} {model} {work}")
}

/// In the child: the row named `name`.
fn child(name: &str, steps: usize) -> Result<(), String> {
    for (path_name, model, path) in TARGETS {
        for (work_name, work) in WORKS {
            if row_name(path_name, model, work_name) == name {
                let device = device(path).ok_or("no OpenCL device")?;
                return run_model(model, &device, work, steps);
            }
        }
    }
    Err(format!("no row {name:?}"))
}

/// In the parent: runs the row in a child process and prints its line of the table.
fn row(name: &str, steps: usize) {
    let out = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .args(["--row", name, "--steps", &steps.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
    });
    let out = match out {
        Ok(out) => out,
        Err(err) => return println!("{name:<24} cannot start: {err}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let kernels = text.lines().find_map(|l| l.strip_prefix("kernels ")).unwrap_or("?");
    let rss: Vec<u64> =
        text.lines().filter_map(|l| l.strip_prefix("rss ")?.split_whitespace().nth(1)?.parse().ok()).collect();
    let mut line = format!("{name:<24} {kernels:<28}");
    for v in &rss {
        line += &format!(" {v:>7}");
    }
    if let (Some(&warm), Some(&end)) = (rss.get(1), rss.last()) {
        line += &format!(" {:>+8}", end as i64 - warm as i64);
    }
    if !out.status.success() {
        line += &format!("  FAILED ({}): {}", out.status, text.lines().last().unwrap_or(""));
    }
    println!("{line}");
}

fn main() {
    if std::env::var_os("POCL_CACHE_DIR").is_none() {
        std::env::set_var("POCL_CACHE_DIR", std::env::temp_dir().join("tensorbridge-bench-pocl"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let steps = value("--steps").and_then(|s| s.parse().ok());
    if let (Some(name), Some(steps)) = (value("--row"), steps) {
        if let Err(err) = child(name, steps) {
            println!("error: {err}");
            std::process::exit(1);
        }
        return;
    }
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let steps = positional
        .iter()
        .find_map(|a| a.parse::<usize>().ok())
        .or_else(|| std::env::var("TENSORBRIDGE_SOAK_STEPS").ok()?.parse().ok())
        .unwrap_or(1_000_000)
        .max(CHECKPOINTS);
    let filter = positional.iter().find(|a| a.parse::<usize>().is_err()).map_or("", |s| s.as_str());
    let opencl = Device::opencl();
    match &opencl {
        Ok(device) => println!("device: {device}"),
        Err(err) => println!("no OpenCL device ({err}): CPU rows only"),
    }
    let every = steps / CHECKPOINTS;
    println!(
        "resident set in KiB: at start (model made), then every {every} steps or calls (every {} models); the first is the warm-up; last column: end - warm-up",
        (steps / 1000).max(CHECKPOINTS) / CHECKPOINTS
    );
    let mut header = format!("{:<24} {:<28} {:>7}", "row", "kernels", "start");
    for k in 1..=CHECKPOINTS {
        header += &format!(" {:>7}", format!("{}/10", k));
    }
    header += &format!(" {:>8}", "growth");
    println!("{header}");
    for (path_name, model, path) in TARGETS {
        if path != Path::Cpu && opencl.is_err() {
            continue;
        }
        for (work_name, _) in WORKS {
            let name = row_name(path_name, model, work_name);
            if name.contains(filter) {
                row(&name, steps);
            }
        }
    }
}
