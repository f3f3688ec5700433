//! Where the fused one-work-group train step stops paying against the tiled kernels on
//! this OpenCL device: both paths forced, at growing shapes that all fit the fused
//! kernel's local memory, timed with deferred steps (no read per step). The crossover is
//! where `FUSED_MAX_MACS` in `src/kernels.rs` should sit.
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench opencl_paths` (needs an OpenCL device; prints a table).

use tensorbridge::{Device, Engine, KernelPath, Model};
use tensorbridge_xtests::{bench_batch, deferred_step_seconds};

tensorbridge::model! { struct S6k { batch: 16, features: 16, classes: 8 } }
tensorbridge::model! { struct S49k { batch: 16, features: 64, classes: 16 } }
tensorbridge::model! { struct S98k { batch: 16, features: 128, classes: 16 } }
tensorbridge::model! { struct S196k { batch: 16, features: 128, classes: 32 } }
tensorbridge::model! { struct S295k { batch: 8, features: 384, classes: 32 } }
tensorbridge::model! { struct S590k { batch: 4, features: 768, classes: 64 } }
tensorbridge::model! { struct Mlp { batch: 8, features: 64, hidden: [32], classes: 10 } }

/// Median over 9 trials of the mean microseconds per deferred train step.
fn time<M: Model<Storage = f32>>(device: &Device) -> Option<f64> {
    let (x, y) = bench_batch::<M>();
    let mut model = Engine::<M>::new(device).ok()?;
    let mut run = |n: usize| Some(deferred_step_seconds(&mut model, &x, &y, n)? * 1e6);
    let per = run(20)?;
    let n = ((50_000.0 / per) as usize).clamp(5, 5000);
    let mut trials: Vec<f64> = (0..9).map(|_| run(n)).collect::<Option<_>>()?;
    trials.sort_by(f64::total_cmp);
    Some(trials[4])
}

fn row<M: Model<Storage = f32>>(fused: &Device, tiled: &Device) {
    let macs: usize = 3 * M::LAYERS.windows(2).map(|p| M::BATCH * p[0] * p[1]).sum::<usize>();
    let show = |t: Option<f64>| t.map_or("      -".to_string(), |t| format!("{t:9.1}"));
    let (f, t) = (time::<M>(fused), time::<M>(tiled));
    let ratio = match (f, t) {
        (Some(f), Some(t)) => format!("{:7.2}", t / f),
        _ => "      -".to_string(),
    };
    println!("{:<8} {:>8} {:>9} {:>9} {}", M::NAME, macs, show(f), show(t), ratio);
}

fn main() {
    if std::env::var_os("POCL_CACHE_DIR").is_none() {
        std::env::set_var("POCL_CACHE_DIR", std::env::temp_dir().join("tensorbridge-bench-pocl"));
    }
    let Ok(device) = Device::opencl() else {
        eprintln!("no OpenCL device: nothing to measure");
        return;
    };
    println!("device: {device}");
    let (fused, tiled) = (device.with_kernel_path(KernelPath::Fused), device.with_kernel_path(KernelPath::Tiled));
    println!("{:<8} {:>8} {:>9} {:>9} {:>7}", "model", "MACs", "fused us", "tiled us", "t/f");
    row::<S6k>(&fused, &tiled);
    row::<S49k>(&fused, &tiled);
    row::<S98k>(&fused, &tiled);
    row::<S196k>(&fused, &tiled);
    row::<S295k>(&fused, &tiled);
    row::<S590k>(&fused, &tiled);
    row::<Mlp>(&fused, &tiled);
}
