//! The train step on OpenCL (PoCL in CI) against the CPU backend, at the seed's shape and
//! at batch 64 / features 300 / classes 10, and the floor: one empty kernel launch plus
//! `clFinish` on the same device. Also the deferred step (no loss read per step), and the
//! MLP shapes of the NumPy anchor (`anchors/numpy_anchor.py`) (digits, mnist, wide: group `mlp`).
//!
//! ```text
//! cargo bench -p tensorbridge-xtests --bench opencl                       # PoCL's default (pthread) device
//! POCL_DEVICES=basic cargo bench -p tensorbridge-xtests --bench opencl    # PoCL's single-threaded device
//! cargo bench -p tensorbridge-xtests --bench opencl -- mlp/               # only the anchor MLP shapes
//! ```
//! Without an OpenCL device only the CPU benches run.

use criterion::{criterion_group, criterion_main, Criterion};
use tensorbridge::{Device, Engine, Model};
use tensorbridge_xtests::bench_batch;

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// The larger shape.
    pub struct Wide { batch: 64, features: 300, classes: 10 }
}
tensorbridge::model! {
    /// The `digits` anchor shape.
    pub struct DigitsMlp { batch: 32, features: 64, hidden: [32], classes: 10 }
}
tensorbridge::model! {
    /// The `mnist` anchor shape.
    pub struct MnistMlp { batch: 128, features: 784, hidden: [128], classes: 10 }
}
tensorbridge::model! {
    /// The `wide` anchor shape.
    pub struct WideMlp { batch: 256, features: 1024, hidden: [1024], classes: 16 }
}

fn step<M: Model<Storage = f32>>(c: &mut Criterion, name: &str, device: &Device, label: &str) {
    let (x, y) = bench_batch::<M>();
    let Ok(mut model) = Engine::<M>::new(device) else { return };
    c.bench_function(&format!("{name}/train_step/{label}"), |b| b.iter(|| model.train_step(&x, &y, 1e-3)));
    if device.is_opencl() {
        c.bench_function(&format!("{name}/train_step_deferred/{label}"), |b| {
            b.iter(|| model.train_step_deferred(&x, &y, 1e-3));
        });
        let _ = model.take_losses();
    }
}

fn benches(c: &mut Criterion) {
    if std::env::var_os("POCL_CACHE_DIR").is_none() {
        std::env::set_var("POCL_CACHE_DIR", std::env::temp_dir().join("tensorbridge-bench-pocl"));
    }
    let cpu = Device::cpu();
    step::<Seed>(c, "seed", &cpu, "cpu");
    step::<Wide>(c, "b64_f300_c10", &cpu, "cpu");
    let Ok(cl) = Device::opencl() else {
        eprintln!("no OpenCL device: OpenCL benches skipped");
        return;
    };
    c.bench_function("floor/empty_kernel_launch/opencl", |b| {
        b.iter(|| cl.__empty_launch().expect("empty launch"));
    });
    step::<Seed>(c, "seed", &cl, "opencl");
    step::<Wide>(c, "b64_f300_c10", &cl, "opencl");
}

/// The anchor MLP shapes, deferred steps on OpenCL; few samples, as a wide step takes
/// long on a CPU OpenCL device.
fn mlp(c: &mut Criterion) {
    let Ok(cl) = Device::opencl() else { return };
    let mut group = c.benchmark_group("mlp");
    group.sample_size(10);
    for (name, run) in [
        ("digits", mlp_step::<DigitsMlp> as fn(&mut criterion::BenchmarkGroup<'_, _>, &str, &Device)),
        ("mnist", mlp_step::<MnistMlp>),
        ("wide", mlp_step::<WideMlp>),
    ] {
        run(&mut group, name, &cl);
    }
    group.finish();
}

fn mlp_step<M: Model<Storage = f32>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    device: &Device,
) {
    let (x, y) = bench_batch::<M>();
    let Ok(mut model) = Engine::<M>::new(device) else { return };
    group.bench_function(format!("{name}/train_step_deferred/opencl"), |b| {
        b.iter(|| model.train_step_deferred(&x, &y, 1e-3));
    });
    let _ = model.take_losses();
}

criterion_group!(opencl, benches, mlp);
criterion_main!(opencl);
