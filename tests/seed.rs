//! The worked example of `examples/seed.rs` (a 4-feature, 2-class linear model with the
//! hand-set weights `W = [[10, 2], [10, 1], [-8, 9], [1, 10]]`), with expectations worked
//! out by hand (the logits are [16.25, 4.0] and [-2.45, 17.1]).

// Index loops mirror the hand arithmetic they check.
#![allow(clippy::needless_range_loop)]

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::{host, Device, Model};
use tensorbridge::{matrix, vector};

tensorbridge::model! {
    /// The seed's cat-vs-dog head.
    pub struct CatDog {
        batch: 2,
        features: 4,
        classes: 2,
    }
}

fn seed_x() -> SMatrix<f32, 2, 4> {
    matrix![0.9, 0.8, 0.1, 0.05;
            0.1, 0.2, 0.8, 0.95]
}

fn seed_params() -> CatDogParams {
    CatDogParams { w0: matrix![10.0, 2.0; 10.0, 1.0; -8.0, 9.0; 1.0, 10.0], b0: vector![0.0, 0.0] }
}

fn declaration_gives_the_contracted_constants_and_types() {
    assert_eq!((CatDog::BATCH, CatDog::FEATURES, CatDog::CLASSES), (2, 4, 2));
    assert_eq!(CatDog::LAYERS, &[4, 2]);
    let _: <CatDog as Model>::Input = SMatrix::<f32, 2, 4>::zeros();
    let _: <CatDog as Model>::Labels = SVector::<u32, 2>::zeros();
    let _: <CatDog as Model>::Logits = SMatrix::<f32, 2, 2>::zeros();
    let p: <CatDog as Model>::Params = seed_params();
    let _: SMatrix<f32, 4, 2> = p.w0;
    let _: SVector<f32, 2> = p.b0;
}

fn seed_logits_are_what_the_arithmetic_gives() {
    let model = CatDog::with_params(&Device::cpu(), seed_params()).unwrap();
    let xd = model.to_device(&seed_x()).unwrap();
    let logits = model.forward(&xd).unwrap().to_host().unwrap();
    // Row 0: 0.9*10 + 0.8*10 + 0.1*(-8) + 0.05*1 = 16.25;  0.9*2 + 0.8*1 + 0.1*9 + 0.05*10 = 4.0
    // Row 1: 0.1*10 + 0.2*10 + 0.8*(-8) + 0.95*1 = -2.45;  0.1*2 + 0.2*1 + 0.8*9 + 0.95*10 = 17.1
    let expected = matrix![16.25f32, 4.0; -2.45, 17.1];
    assert!((logits - expected).abs().max() < 1e-5, "{logits}");
    assert_eq!(model.logits(&seed_x()).unwrap(), logits);
}

fn seed_predictions_and_accuracy() {
    let model = CatDog::with_params(&Device::cpu(), seed_params()).unwrap();
    let y = vector![0u32, 1];
    let predicted = model.predict(&seed_x()).unwrap();
    assert_eq!(predicted, vector![0u32, 1]);
    let logits = model.logits(&seed_x()).unwrap();
    assert_eq!(host::argmax_rows(&logits), vec![0, 1]);
    assert_eq!(host::accuracy(predicted.as_slice(), y.as_slice()), 1.0);
}

/// Softmax cross-entropy of one row in f64, written out independently of the library.
fn xent(logits: [f64; 2], label: usize) -> f64 {
    let m = logits[0].max(logits[1]);
    let lse = m + ((logits[0] - m).exp() + (logits[1] - m).exp()).ln();
    lse - logits[label]
}

fn seed_loss_and_gradients_by_hand() {
    // Softer weights (the seed's W / 10) so that the loss is not vanishingly small.
    let params = CatDogParams { w0: seed_params().w0 / 10.0, b0: vector![0.5, -0.5] };
    let model = CatDog::with_params(&Device::cpu(), params).unwrap();
    let y = vector![0u32, 1];
    let z = [[1.625 + 0.5, 0.4 - 0.5], [-0.245 + 0.5, 1.71 - 0.5]];
    let expected_loss = (xent(z[0], 0) + xent(z[1], 1)) / 2.0;
    let loss = model.loss(&seed_x(), &y).unwrap() as f64;
    assert!((loss - expected_loss).abs() < 1e-6, "loss {loss} vs {expected_loss}");

    // dL/dz = (softmax - onehot) / B; dL/dW = x^T dz; dL/db = column sums of dz.
    let mut dz = [[0.0f64; 2]; 2];
    for r in 0..2 {
        let e = [z[r][0].exp(), z[r][1].exp()];
        for c in 0..2 {
            dz[r][c] = (e[c] / (e[0] + e[1]) - if c == y[r] as usize { 1.0 } else { 0.0 }) / 2.0;
        }
    }
    let x = seed_x();
    let (loss_g, grads) = model.gradients(&seed_x(), &y).unwrap();
    assert_eq!(loss_g as f64, loss);
    for f in 0..4 {
        for c in 0..2 {
            let expected = x[(0, f)] as f64 * dz[0][c] + x[(1, f)] as f64 * dz[1][c];
            assert!((grads.w0[(f, c)] as f64 - expected).abs() < 1e-6, "gw[{f},{c}]");
        }
    }
    for c in 0..2 {
        assert!((grads.b0[c] as f64 - (dz[0][c] + dz[1][c])).abs() < 1e-6, "gb[{c}]");
    }
}

fn train_step_applies_sgd_and_returns_the_loss_before() {
    let start = CatDogParams { w0: seed_params().w0 / 10.0, b0: vector![0.5, -0.5] };
    let mut model = CatDog::with_params(&Device::cpu(), start.clone()).unwrap();
    let y = vector![0u32, 1];
    let (loss, grads) = model.gradients(&seed_x(), &y).unwrap();
    let returned = model.train_step(&seed_x(), &y, 0.5).unwrap();
    assert_eq!(returned, loss);
    let after = model.params().unwrap();
    assert!((after.w0 - (start.w0 - grads.w0 * 0.5)).abs().max() < 1e-6);
    assert!((after.b0 - (start.b0 - grads.b0 * 0.5)).abs().max() < 1e-6);
    assert!(model.loss(&seed_x(), &y).unwrap() < loss);
}

fn new_is_seeded_and_deterministic() {
    let a = CatDog::new(&Device::cpu()).unwrap().params().unwrap();
    let b = CatDog::new(&Device::cpu()).unwrap().params().unwrap();
    assert_eq!(a, b);
    assert!(a.w0.iter().any(|&v| v != 0.0), "weights are initialised, not zero");
    assert_eq!(a.b0, vector![0.0, 0.0]);
    let c = tensorbridge::Engine::<CatDog>::with_seed(&Device::cpu(), 1).unwrap().params().unwrap();
    assert_ne!(a, c);
}

fn set_params_round_trips() {
    let mut model = CatDog::new(&Device::cpu()).unwrap();
    model.set_params(&seed_params()).unwrap();
    assert_eq!(model.params().unwrap(), seed_params());
}

fn huge_logits_give_finite_loss_and_gradients() {
    // Logits of magnitude ~1e4: a naive softmax overflows exp() to inf and returns NaN.
    let params = CatDogParams { w0: seed_params().w0 * 1000.0, b0: vector![0.0, 0.0] };
    let model = CatDog::with_params(&Device::cpu(), params).unwrap();
    let logits = model.logits(&seed_x()).unwrap();
    assert!(logits.abs().max() > 1e4);
    // Labels chosen wrong on purpose: the loss is then about the logit gap, 12250 and 19550.
    let y = vector![1u32, 0];
    let (loss, grads) = model.gradients(&seed_x(), &y).unwrap();
    assert!(loss.is_finite() && grads.w0.iter().all(|g| g.is_finite()));
    let expected = ((16250.0 - 4000.0) + (17100.0 - -2450.0)) / 2.0;
    assert!((loss as f64 - expected).abs() / expected < 1e-4, "loss {loss} vs {expected}");
    // Saturated softmax: dz = (onehot(argmax) - onehot(label)) / 2 exactly.
    assert!((grads.b0 - vector![0.0, 0.0]).abs().max() < 1e-6);
    assert!((grads.w0[(0, 0)] - (0.9 - 0.1) / 2.0).abs() < 1e-6);
}

tensorbridge::model! {
    /// Many classes and rows: the loss's running product of (1 + rest) needs flushing.
    struct ManyClasses { batch: 128, features: 1, classes: 1000 }
}

fn uniform_logits_over_many_classes_cost_ln_classes_per_row() {
    // Zero weights and bias: every logit is 0, every row's loss is ln(1000), and the
    // product of the 128 rows' softmax sums (1000^128) would overflow f64 unflushed.
    let zero = ManyClassesParams { w0: SMatrix::zeros(), b0: SVector::zeros() };
    let model = ManyClasses::with_params(&Device::cpu(), zero).unwrap();
    let x = SMatrix::<f32, 128, 1>::from_fn(|r, _| r as f32);
    let y = SVector::<u32, 128>::from_fn(|r, _| (r * 7 % 1000) as u32);
    let loss = model.loss(&x, &y).unwrap() as f64;
    assert!((loss - 1000f64.ln()).abs() < 1e-5, "loss {loss} vs ln 1000 = {}", 1000f64.ln());
    let rows = model.loss_rows(&x, &y, 3).unwrap() as f64;
    assert!((rows - 1000f64.ln()).abs() < 1e-5, "3 rows: {rows}");
}

crate::tests! {
    plain declaration_gives_the_contracted_constants_and_types,
    plain seed_logits_are_what_the_arithmetic_gives,
    plain seed_predictions_and_accuracy,
    plain seed_loss_and_gradients_by_hand,
    plain train_step_applies_sgd_and_returns_the_loss_before,
    plain new_is_seeded_and_deterministic,
    plain set_params_round_trips,
    plain huge_logits_give_finite_loss_and_gradients,
    plain uniform_logits_over_many_classes_cost_ln_classes_per_row,
}
