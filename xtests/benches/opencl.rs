//! The train step on OpenCL (PoCL in CI) against the CPU backend, at the seed's shape and
//! at batch 64 / features 300 / classes 10, and the floor: one empty kernel launch plus
//! `clFinish` on the same device. Also the deferred step (no loss read per step), and the
//! MLP shapes of the NumPy anchor (`anchors/numpy_anchor.py`) (digits, mnist, wide: group `mlp`),
//! each also with `optimizer: adam` (`adam_step_deferred`: the same deferred step, Adam's
//! update kernels after the gradients; compare it with `train_step_deferred` as a ratio).
//! The seed's shape with Adam too (`seed/adam_step`, `seed/adam_step_deferred`: the tiny
//! kernel, Adam's step inside its one launch).
//!
//! ```text
//! cargo bench -p tensorbridge-xtests --bench opencl                       # PoCL's default (pthread) device
//! POCL_DEVICES=basic cargo bench -p tensorbridge-xtests --bench opencl    # PoCL's single-threaded device
//! cargo bench -p tensorbridge-xtests --bench opencl -- mlp/               # only the anchor MLP shapes
//! ```
//! Without an OpenCL device only the CPU benches run.

use criterion::{criterion_group, criterion_main, Criterion};
use tensorbridge::{Device, Engine, KernelPath, Model};
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
tensorbridge::model! {
    /// The seed's shape, trained with Adam.
    pub struct SeedAdam { batch: 2, features: 4, classes: 2, optimizer: adam }
}
tensorbridge::model! {
    /// The `digits` anchor shape, trained with Adam.
    pub struct DigitsAdam { batch: 32, features: 64, hidden: [32], classes: 10, optimizer: adam }
}
tensorbridge::model! {
    /// The `mnist` anchor shape, trained with Adam.
    pub struct MnistAdam { batch: 128, features: 784, hidden: [128], classes: 10, optimizer: adam }
}
tensorbridge::model! {
    /// The `wide` anchor shape, trained with Adam.
    pub struct WideAdam { batch: 256, features: 1024, hidden: [1024], classes: 16, optimizer: adam }
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
    seed_adam(c, &cl);
    step::<Wide>(c, "b64_f300_c10", &cl, "opencl");
}

/// The seed's Adam step on OpenCL, immediate and deferred: the tiny kernel, its state in
/// the kernel's buffer; and deferred on the fused path (`KernelPath::Fused`: the fused
/// kernel's gradients, then the two update launches), for comparison. Every 1024 steps the
/// model starts over (see [`adam_step`]; two blocking writes, which also wait for the
/// queue, about 0.1 us a step here).
fn seed_adam(c: &mut Criterion, device: &Device) {
    let (x, y) = bench_batch::<SeedAdam>();
    for (label, device) in [("opencl", device.clone()), ("opencl-fused", device.with_kernel_path(KernelPath::Fused))] {
        let Ok(mut model) = Engine::<SeedAdam>::new(&device) else { return };
        let Ok(start) = model.params() else { return };
        let mut k = 0u32;
        let mut restart = |model: &mut Engine<SeedAdam>| {
            k += 1;
            if k.is_multiple_of(1024) {
                let _ = model.set_params(&start);
                let _ = model.reset_optimizer();
            }
        };
        if label == "opencl" {
            c.bench_function("seed/adam_step/opencl", |b| {
                b.iter(|| {
                    restart(&mut model);
                    model.train_step(&x, &y, 1e-3)
                })
            });
        }
        c.bench_function(&format!("seed/adam_step_deferred/{label}"), |b| {
            b.iter(|| {
                restart(&mut model);
                model.train_step_deferred(&x, &y, 1e-3)
            })
        });
        let _ = model.take_losses();
    }
}

/// The anchor MLP shapes, deferred steps on OpenCL; few samples, as a wide step takes
/// long on a CPU OpenCL device.
fn mlp(c: &mut Criterion) {
    let Ok(cl) = Device::opencl() else { return };
    let mut group = c.benchmark_group("mlp");
    group.sample_size(10);
    for (name, run) in [
        ("digits", mlp_step::<DigitsMlp> as fn(&mut criterion::BenchmarkGroup<'_, _>, &str, &Device)),
        ("digits", adam_step::<DigitsAdam>),
        ("mnist", mlp_step::<MnistMlp>),
        ("mnist", adam_step::<MnistAdam>),
        ("wide", mlp_step::<WideMlp>),
        ("wide", adam_step::<WideAdam>),
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

/// [`mlp_step`] with Adam. As in `train_step.rs`'s Adam rows, every 64 steps the model
/// starts over, parameters and state (Adam's steps on one batch would otherwise drive some
/// values into subnormal numbers): the cost of a step of the first 64 of a run, the restart
/// (two blocking writes, which also wait for the queue) included.
fn adam_step<M: Model<Storage = f32>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    device: &Device,
) {
    let (x, y) = bench_batch::<M>();
    let Ok(mut model) = Engine::<M>::new(device) else { return };
    let Ok(start) = model.params() else { return };
    let mut k = 0u32;
    group.bench_function(format!("{name}/adam_step_deferred/opencl"), |b| {
        b.iter(|| {
            k += 1;
            if k.is_multiple_of(64) {
                let _ = model.set_params(&start);
                let _ = model.reset_optimizer();
            }
            model.train_step_deferred(&x, &y, 1e-3)
        });
    });
    let _ = model.take_losses();
}

criterion_group!(opencl, benches, mlp);
criterion_main!(opencl);
