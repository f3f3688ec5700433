//! Gradients against central finite differences of the loss, on random inputs, for a
//! linear model and a two-hidden-layer MLP at odd sizes (CPU backend).

use tensorbridge::nalgebra::SMatrix;
use tensorbridge::rng::Rng;
use tensorbridge::{Device, Engine, Model, Params};

tensorbridge::model! { struct Odd { batch: 3, features: 5, classes: 7 } }
tensorbridge::model! { struct Deep { batch: 3, features: 5, hidden: [6, 4], classes: 3 } }

/// Compares every analytic gradient with (L(p + h) - L(p - h)) / 2h, in f32 with h = 1e-2
/// (the loss is smooth away from ReLU kinks; a kink inside [p - h, p + h] is detected and
/// skipped, as a finite difference across it is meaningless).
fn check<M: Model<Storage = f32>>(seed: u64) {
    let device = Device::cpu();
    let mut rng = Rng::new(seed);
    let x_flat: Vec<f32> = (0..M::BATCH * M::FEATURES).map(|_| rng.normal() as f32).collect();
    let y_flat: Vec<u32> = (0..M::BATCH).map(|_| rng.below(M::CLASSES as u64) as u32).collect();
    let x = <M::Input as tensorbridge::HostTensor>::from_flat(&x_flat);
    let y = <M::Labels as tensorbridge::HostTensor>::from_flat(&y_flat);
    let mut model = Engine::<M>::with_seed(&device, seed).unwrap();
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
            "parameter {k}: analytic {a}, finite difference {numeric}"
        );
        checked += 1;
    }
    assert!(checked >= flat.len() * 3 / 4, "only {checked} of {} parameters checked", flat.len());
}

#[test]
fn linear_gradients_match_finite_differences() {
    check::<Odd>(11);
    check::<Odd>(12);
}

#[test]
fn mlp_gradients_match_finite_differences() {
    check::<Deep>(21);
    check::<Deep>(22);
}

#[test]
fn input_built_from_flat_is_column_major() {
    let m = <SMatrix<f32, 2, 3> as tensorbridge::HostTensor>::from_flat(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(m[(1, 0)], 2.0);
    assert_eq!(m[(0, 1)], 3.0);
}
