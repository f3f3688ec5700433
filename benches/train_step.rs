//! Train step and inference step on the CPU backend at the anchor shapes `seed`
//! (batch 2, features 4, classes 2) and `iris` (batch 16, features 4, classes 3): the same
//! workload as `../shared/bench/numpy_anchor.py` (one SGD step: forward, mean softmax
//! cross-entropy, backward, update; inference: logits, argmax, accuracy).
//!
//! Run: `cargo bench --bench train_step`; compare with the anchor run in the same session
//! (`python3 ../shared/bench/numpy_anchor.py`), as a ratio.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::rng::Rng;
use tensorbridge::{Device, Model};

tensorbridge::model! { struct Seed { batch: 2, features: 4, classes: 2 } }
tensorbridge::model! { struct Iris { batch: 16, features: 4, classes: 3 } }

macro_rules! bench_shape {
    ($c:expr, $name:literal, $model:ty) => {{
        const B: usize = <$model as Model>::BATCH;
        const F: usize = <$model as Model>::FEATURES;
        let mut rng = Rng::new(0);
        let x = SMatrix::<f32, B, F>::from_fn(|_, _| rng.normal() as f32);
        let y = SVector::<u32, B>::from_fn(|_, _| rng.below(<$model as Model>::CLASSES as u64) as u32);
        let mut model = <$model>::new(&Device::cpu()).unwrap();
        let mut group = $c.benchmark_group($name);
        group.bench_function("train_step", |b| {
            b.iter(|| model.train_step(black_box(&x), black_box(&y), black_box(0.01)).unwrap())
        });
        group.bench_function("infer", |b| {
            b.iter(|| {
                let predicted = model.predict(black_box(&x)).unwrap();
                predicted.iter().zip(y.iter()).filter(|(p, l)| p == l).count() as f32 / B as f32
            })
        });
        group.finish();
    }};
}

fn shapes(c: &mut Criterion) {
    bench_shape!(c, "seed", Seed);
    bench_shape!(c, "iris", Iris);
}

criterion_group!(benches, shapes);
criterion_main!(benches);
