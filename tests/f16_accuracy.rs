//! `storage: f16` on the real data sets, beside the same models in `f32` (same split, seed
//! and schedule): iris (linear) and digits (`hidden: [32]`) on the CPU backend, iris on
//! every device. The f16 models must reach the bars (iris >= 0.95, digits MLP >= 0.95)
//! and stay within two test examples' worth of the f32 accuracy.

use crate::support::accuracy::{check_metrics_against_logits, quiet, split};
use tensorbridge::{Device, Engine, Model};

tensorbridge::model! {
    /// Iris in f16.
    pub struct Iris16 { batch: 16, features: 4, classes: 3, storage: f16 }
}
tensorbridge::model! {
    /// Iris in f32.
    pub struct Iris32 { batch: 16, features: 4, classes: 3 }
}
tensorbridge::model! {
    /// Digits through one hidden layer, f16.
    pub struct Digits16 { batch: 32, features: 64, hidden: [32], classes: 10, storage: f16 }
}
tensorbridge::model! {
    /// The same in f32.
    pub struct Digits32 { batch: 32, features: 64, hidden: [32], classes: 10 }
}

/// Test accuracy after training `M` on `name` with `rates` from initialisation `seed`.
fn accuracy<M: Model>(device: &Device, name: &str, seed: u64, rates: &[f32]) -> (f64, usize) {
    let (train, test) = split(name);
    let mut model = Engine::<M>::with_seed(device, seed).unwrap();
    model.fit_with(&train, rates, 1, quiet()).unwrap();
    let metrics = model.evaluate(&test).unwrap();
    check_metrics_against_logits(&mut model, &test, &metrics);
    (metrics.accuracy, test.len())
}

fn compare<M16: Model, M32: Model>(device: &Device, name: &str, seed: u64, rates: &[f32], bar: f64) {
    let (a16, n) = accuracy::<M16>(device, name, seed, rates);
    let (a32, _) = accuracy::<M32>(device, name, seed, rates);
    crate::test_log!("{name} on {device}: f16 {a16:.4}, f32 {a32:.4} ({n} test rows)");
    assert!(a16 >= bar, "{name}: f16 test accuracy {a16} < {bar}");
    assert!(a16 >= a32 - 2.0 / n as f64 - 1e-9, "{name}: f16 {a16} more than two examples below f32 {a32}");
}

fn iris_rates() -> Vec<f32> {
    (0..150).map(|e| if e < 100 { 0.5 } else { 0.1 }).collect()
}

fn iris_f16_matches_f32(device: &Device) {
    compare::<Iris16, Iris32>(device, "iris", tensorbridge::DEFAULT_SEED, &iris_rates(), 0.95);
}

fn digits_mlp_f16_matches_f32_on_cpu() {
    let rates: Vec<f32> = (0..50).map(|e| if e < 33 { 0.4 } else { 0.04 }).collect();
    compare::<Digits16, Digits32>(&Device::cpu(), "digits", 2, &rates, 0.95);
}

crate::tests! {
    device iris_f16_matches_f32,
    plain digits_mlp_f16_matches_f32_on_cpu,
}
