//! Gradients against central finite differences of the loss, computed from the loss alone
//! (never from the gradient code), on every device: on OpenCL through the fused and the
//! tiled kernels. Full batches of random normal inputs for a linear model and a
//! two-hidden-layer MLP at odd sizes; and masked batches (all rows but the last count) for
//! a linear model and a one-hidden-layer MLP.

use crate::support::{noise, paths};
use tensorbridge::nalgebra::SMatrix;
use tensorbridge::rng::Rng;
use tensorbridge::{Device, Engine, HostTensor, Model, Params};

tensorbridge::model! { struct Odd { batch: 3, features: 5, classes: 7 } }
tensorbridge::model! { struct Deep { batch: 3, features: 5, hidden: [6, 4], classes: 3 } }
tensorbridge::model! {
    /// Linear head, odd sizes.
    pub struct Lin { batch: 3, features: 5, classes: 7 }
}
tensorbridge::model! {
    /// One hidden ReLU layer.
    pub struct Mlp { batch: 4, features: 3, classes: 4, hidden: [5] }
}

/// Compares every analytic gradient with (L(p + h) - L(p - h)) / 2h, in f32 with h = 1e-2
/// (the loss is smooth away from ReLU kinks; a kink inside [p - h, p + h] is detected and
/// skipped, as a finite difference across it is meaningless).
fn check<M: Model<Storage = f32>>(device: &Device, seed: u64) {
    let mut rng = Rng::new(seed);
    let x_flat: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|_| rng.normal() as f32).collect();
    let y_flat: Vec<u32> = (0..M::BATCH).map(|_| rng.below(M::CLASSES as u64) as u32).collect();
    let x = <M::Input as tensorbridge::HostTensor>::from_flat(&x_flat);
    let y = <M::Labels as tensorbridge::HostTensor>::from_flat(&y_flat);
    let mut model = Engine::<M>::with_seed(device, seed).unwrap();
    // Non-zero biases, so the bias path is exercised.
    let mut flat = vec![0.0; M::Params::LEN];
    model.params().unwrap().write_flat(&mut flat);
    for v in flat.iter_mut() {
        *v += 0.1 * rng.normal() as f32;
    }
    model.set_params(&M::Params::from_flat(&flat)).unwrap();
    let (_, grads) = model.gradients(&x, &y).unwrap();
    let mut analytic = vec![0.0; M::Params::LEN];
    grads.write_flat(&mut analytic);

    let h = 1e-2f32;
    let mut checked = 0;
    for k in 0..flat.len() {
        let mut at = |delta: f32| {
            let mut p = flat.clone();
            p[k] += delta;
            model.set_params(&M::Params::from_flat(&p)).unwrap();
            model.loss(&x, &y).unwrap() as f64
        };
        let (lm, l0, lp) = (at(-h), at(0.0), at(h));
        let numeric = (lp - lm) / (2.0 * h as f64);
        // A kink shows as one-sided slopes that disagree.
        let (left, right) = ((l0 - lm) / h as f64, (lp - l0) / h as f64);
        if (left - right).abs() > 0.05 * (left.abs() + right.abs()) + 1e-3 {
            continue;
        }
        let a = analytic[k] as f64;
        assert!(
            (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
            "{} on {device}: parameter {k}: analytic {a}, finite difference {numeric}",
            M::NAME
        );
        checked += 1;
    }
    assert!(checked >= flat.len() * 3 / 4, "only {checked} of {} parameters checked", flat.len());
}
/// The masked variant: the loss and gradients of the first `BATCH - 1` rows, from the
/// seeded initialisation, with inputs from `noise`.
fn check_masked<M: Model<Storage = f32>>(device: &Device) {
    let x = M::Input::from_flat(&(0..M::BATCH * M::FEATURES).map(|k| noise(21, k)).collect::<Vec<_>>());
    let y = M::Labels::from_flat(&(0..M::BATCH).map(|r| (r * 3 % M::CLASSES) as u32).collect::<Vec<_>>());
    let mut model = Engine::<M>::with_seed(device, 5).unwrap();
    let mut base = vec![0.0; M::Params::LEN];
    model.params().unwrap().write_flat(&mut base);
    let (_, grads) = model.gradients_rows(&x, &y, M::BATCH - 1).unwrap();
    let mut g = vec![0.0; M::Params::LEN];
    grads.write_flat(&mut g);
    // A ReLU kink inside [p - eps, p + eps] makes the central difference meaningless; the
    // forward and backward differences then disagree, and such parameters are skipped (at
    // most a tenth of them). When they agree, the central difference is off by at most
    // half of their gap.
    let eps = 4e-3f32;
    let mut skipped = 0;
    for k in 0..M::Params::LEN {
        let mut loss_at = |delta: f32| {
            let mut p = base.clone();
            p[k] += delta;
            model.set_params(&M::Params::from_flat(&p)).unwrap();
            f64::from(model.loss_rows(&x, &y, M::BATCH - 1).unwrap())
        };
        let (here, up, down) = (loss_at(0.0), loss_at(eps), loss_at(-eps));
        let e = f64::from(eps);
        let (forward, backward) = (((up - here) / e) as f32, ((here - down) / e) as f32);
        let coarse = ((up - down) / (2.0 * e)) as f32;
        let tol = |v: f32| 2e-3 + 2e-2 * v.abs();
        if (forward - backward).abs() > tol(coarse) {
            skipped += 1;
            continue;
        }
        assert!(
            (coarse - g[k]).abs() <= tol(coarse),
            "{} on {device}: dL/dp[{k}] = {} but finite differences give {coarse}",
            M::NAME,
            g[k]
        );
    }
    assert!(skipped * 10 <= M::Params::LEN, "{skipped} of {} parameters sit on a ReLU kink", M::Params::LEN);
}

fn linear_gradients_match_finite_differences(device: &Device) {
    for d in paths(device) {
        check::<Odd>(&d, 11);
        check::<Odd>(&d, 12);
    }
}

fn mlp_gradients_match_finite_differences(device: &Device) {
    for d in paths(device) {
        check::<Deep>(&d, 21);
        check::<Deep>(&d, 22);
    }
}

fn masked_gradients_match_finite_differences(device: &Device) {
    for d in paths(device) {
        check_masked::<Lin>(&d);
        check_masked::<Mlp>(&d);
    }
}

fn input_built_from_flat_is_column_major() {
    let m = <SMatrix<f32, 2, 3> as tensorbridge::HostTensor>::from_flat(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(m[(1, 0)], 2.0);
    assert_eq!(m[(0, 1)], 3.0);
}

crate::tests! {
    device linear_gradients_match_finite_differences,
    device mlp_gradients_match_finite_differences,
    device masked_gradients_match_finite_differences,
    plain input_built_from_flat_is_column_major,
}
