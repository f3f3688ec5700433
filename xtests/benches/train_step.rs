//! Train step and inference step on the CPU backend at the shapes of the NumPy anchor
//! (`anchors/numpy_anchor.py`, see `anchors/README.md`) (one SGD step: forward, mean softmax cross-entropy, backward, update;
//! inference: logits, argmax, accuracy; float32):
//!
//! | name   | batch | features | hidden | classes |
//! |--------|-------|----------|--------|---------|
//! | seed   | 2     | 4        | -      | 2       |
//! | iris   | 16    | 4        | -      | 3       |
//! | digits | 32    | 64       | 32     | 10      |
//! | mnist  | 128   | 784      | 128    | 10      |
//! | wide   | 256   | 1024     | 1024   | 16      |
//!
//! Each shape also has `adam_step`: the same train step with `optimizer: adam` (PyTorch's
//! defaults), against the anchor's Adam step (the same formula, `torch.optim.Adam`'s).
//!
//! Run: `cargo bench -p tensorbridge-xtests --bench train_step [-- SHAPE]`; compare with the
//! anchor run in the same session, as a ratio: `python3 xtests/benches/compare.py`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tensorbridge::rng::Rng;
use tensorbridge::{Device, Engine, HostTensor, Model};

tensorbridge::model! { struct Seed { batch: 2, features: 4, classes: 2 } }
tensorbridge::model! { struct Iris { batch: 16, features: 4, classes: 3 } }
tensorbridge::model! { struct Digits { batch: 32, features: 64, hidden: [32], classes: 10 } }
tensorbridge::model! { struct Mnist { batch: 128, features: 784, hidden: [128], classes: 10 } }
tensorbridge::model! { struct Wide { batch: 256, features: 1024, hidden: [1024], classes: 16 } }

tensorbridge::model! { struct SeedAdam { batch: 2, features: 4, classes: 2, optimizer: adam } }
tensorbridge::model! { struct IrisAdam { batch: 16, features: 4, classes: 3, optimizer: adam } }
tensorbridge::model! { struct DigitsAdam { batch: 32, features: 64, hidden: [32], classes: 10, optimizer: adam } }
tensorbridge::model! { struct MnistAdam { batch: 128, features: 784, hidden: [128], classes: 10, optimizer: adam } }
tensorbridge::model! { struct WideAdam { batch: 256, features: 1024, hidden: [1024], classes: 16, optimizer: adam } }

/// The Adam step at one shape: the same batch as [`bench_shape`]'s (same seed).
fn bench_adam<M: Model<Storage = f32>>(c: &mut Criterion, name: &str) {
    let mut rng = Rng::new(0);
    let x_flat: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|_| rng.normal() as f32).collect();
    let y_flat: Vec<u32> = (0..M::BATCH).map(|_| rng.below(M::CLASSES as u64) as u32).collect();
    let (x, y) = (M::Input::from_flat(&x_flat), M::Labels::from_flat(&y_flat));
    // Adam's steps keep about the rate's size however small the gradient, so thousands of
    // steps on one batch drive the probabilities of the classes it lacks into subnormal
    // numbers, which x86 multiplies ~100x slower (measured: digits 5x slower after a few
    // seconds). Every 64 steps the model starts over, parameters and state: the cost of a
    // step of the first 64 of a run, the restart included (a copy of the parameters).
    let mut model = Engine::<M>::new(&Device::cpu()).expect("model");
    let start = model.params().expect("params");
    let mut group = c.benchmark_group(name);
    let mut k = 0u32;
    group.bench_function("adam_step", |b| {
        b.iter(|| {
            k += 1;
            if k.is_multiple_of(64) {
                model.set_params(&start).expect("params");
                model.reset_optimizer().expect("reset");
            }
            model.train_step(black_box(&x), black_box(&y), black_box(1e-3)).expect("step")
        })
    });
    group.finish();
}

fn bench_shape<M: Model<Storage = f32>>(c: &mut Criterion, name: &str) {
    let mut rng = Rng::new(0);
    let x_flat: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|_| rng.normal() as f32).collect();
    let y_flat: Vec<u32> = (0..M::BATCH).map(|_| rng.below(M::CLASSES as u64) as u32).collect();
    let (x, y) = (M::Input::from_flat(&x_flat), M::Labels::from_flat(&y_flat));
    let mut model = Engine::<M>::new(&Device::cpu()).expect("model");
    let mut group = c.benchmark_group(name);
    group.bench_function("train_step", |b| {
        b.iter(|| model.train_step(black_box(&x), black_box(&y), black_box(0.01)).expect("step"))
    });
    group.bench_function("infer", |b| {
        b.iter(|| {
            let predicted = model.predict(black_box(&x)).expect("predict");
            let correct = predicted.as_flat().iter().zip(y.as_flat()).filter(|(p, l)| p == l).count();
            correct as f32 / M::BATCH as f32
        })
    });
    group.finish();
}

fn shapes(c: &mut Criterion) {
    bench_shape::<Seed>(c, "seed");
    bench_shape::<Iris>(c, "iris");
    bench_shape::<Digits>(c, "digits");
    bench_shape::<Mnist>(c, "mnist");
    bench_shape::<Wide>(c, "wide");
    bench_adam::<SeedAdam>(c, "seed");
    bench_adam::<IrisAdam>(c, "iris");
    bench_adam::<DigitsAdam>(c, "digits");
    bench_adam::<MnistAdam>(c, "mnist");
    bench_adam::<WideAdam>(c, "wide");
}

criterion_group!(benches, shapes);
criterion_main!(benches);
