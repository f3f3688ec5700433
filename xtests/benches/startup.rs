//! Cold and warm start on OpenCL, phase by phase (`StartupReport`), against the budget:
//! a warm start (binary cache filled) within 10 ms, from opening the device to the model
//! ready (`Device::opencl` + `Engine::new`), and the first launch after it.
//!
//! Run: `cargo bench --bench startup` (needs an OpenCL device). It uses fresh cache
//! directories of its own (PoCL's and tensorbridge's) under the system's temporary
//! directory and removes them. Three measurements:
//! 1. cold: empty caches (a full build) in this process;
//! 2. warm, fresh process: this bench re-run as a child process with the caches filled,
//!    five times (the platform discovery of a new process included);
//! 3. warm, in process: a new `Device` (so no program reused in memory) and model, ten times.

use std::process::Command;
use std::time::{Duration, Instant};

use tensorbridge::{Device, Engine, StartupReport};

tensorbridge::model! {
    /// The `mnist` anchor shape.
    pub struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 }
}

const BUDGET: Duration = Duration::from_millis(10);
const CHILD_ENV: &str = "TB_STARTUP_BENCH_CHILD";

/// (device open + model ready, the report after warm-up)
fn start() -> Option<(Duration, StartupReport)> {
    let t = Instant::now();
    let device = Device::opencl().ok()?;
    let mut model = Engine::<Mnist>::new(&device).ok()?;
    let ready = t.elapsed();
    let report = model.warm_up().ok()??;
    Some((ready, report))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: one warm start, as JSON plus the ready time, on stdout.
        if let Some((ready, report)) = start() {
            println!("{:.1} {}", ready.as_secs_f64() * 1e6, report.to_json());
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("tensorbridge-bench-startup-{}", std::process::id()));
    let (pocl, ours) = (dir.join("pocl"), dir.join("tensorbridge"));
    for d in [&pocl, &ours] {
        if std::fs::create_dir_all(d).is_err() {
            eprintln!("cannot create {}: nothing measured", d.display());
            return;
        }
    }
    std::env::set_var("POCL_CACHE_DIR", &pocl);
    std::env::set_var(tensorbridge::CACHE_DIR_ENV, &ours);

    let Some((ready, cold)) = start() else {
        eprintln!("no OpenCL device: nothing to measure");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    println!("cold start (empty caches), ready after {:.1} ms:\n{cold}\n", ready.as_secs_f64() * 1e3);

    let exe = std::env::current_exe().ok();
    let mut child_ready = Vec::new();
    let mut child_launch = Vec::new();
    for _ in 0..5 {
        let Some(out) = exe.as_ref().and_then(|e| Command::new(e).env(CHILD_ENV, "1").output().ok()) else { break };
        let text = String::from_utf8_lossy(&out.stdout);
        let Some((us, json)) = text.trim().split_once(' ') else { continue };
        if let Ok(us) = us.parse::<f64>() {
            child_ready.push(us / 1e3);
            println!("warm, fresh process: ready {:.2} ms  {json}", us / 1e3);
        }
        if let Some(fl) = json.split("\"first_launch_us\":").nth(1).and_then(|r| r.split(',').next()) {
            if let Ok(fl) = fl.parse::<f64>() {
                child_launch.push(fl / 1e3);
            }
        }
    }

    let mut ready_ms = Vec::new();
    let mut program_ms = Vec::new();
    let mut launch_ms = Vec::new();
    for _ in 0..10 {
        let Some((ready, r)) = start() else { break };
        ready_ms.push(ready.as_secs_f64() * 1e3);
        program_ms.push(r.program.as_secs_f64() * 1e3);
        launch_ms.push(r.first_launch.unwrap_or_default().as_secs_f64() * 1e3);
    }
    let budget = BUDGET.as_secs_f64() * 1e3;
    let verdict = |ms: f64| if ms <= budget { "within" } else { "OVER" };
    if !child_ready.is_empty() {
        let (r, l) = (median(child_ready), median(child_launch));
        println!("\nwarm start, fresh process (median of 5): ready {r:.2} ms ({} the {budget} ms budget), first launch {l:.2} ms", verdict(r));
    }
    if !ready_ms.is_empty() {
        let r = median(ready_ms);
        println!(
            "warm start, in process (median of 10): ready {r:.2} ms ({} the {budget} ms budget; program {:.2} ms), first launch {:.2} ms",
            verdict(r),
            median(program_ms),
            median(launch_ms)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
