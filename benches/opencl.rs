//! The train step on OpenCL (PoCL in CI) against the CPU backend, at the seed's shape and
//! at batch 64 / features 300 / classes 10, and the floor: one empty kernel launch plus
//! `clFinish` on the same device. Also the deferred step (no loss read per step).
//!
//! ```text
//! cargo bench --bench opencl                       # PoCL's default (pthread) device
//! POCL_DEVICES=basic cargo bench --bench opencl    # PoCL's single-threaded device
//! ```
//! Without an OpenCL device only the CPU benches run.

use criterion::{criterion_group, criterion_main, Criterion};
use tensorbridge::{Device, Engine, HostTensor, Model};

tensorbridge::model! {
    /// The seed's shape.
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    /// The larger shape.
    pub struct Wide { batch: 64, features: 300, classes: 10 }
}

fn data<M: Model<Storage = f32>>() -> (M::Input, M::Labels) {
    let x: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|k| ((k * 37 % 101) as f32 / 101.0) - 0.5).collect();
    let y: Vec<u32> = (0..M::BATCH).map(|r| (r % M::CLASSES) as u32).collect();
    (M::Input::from_flat(&x), M::Labels::from_flat(&y))
}

fn step<M: Model<Storage = f32>>(c: &mut Criterion, name: &str, device: &Device, label: &str) {
    let (x, y) = data::<M>();
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

criterion_group!(opencl, benches);
criterion_main!(opencl);
