//! Bad runtime input is a typed error before any arithmetic, and changes nothing: on every
//! device (on OpenCL, bad labels never reach a kernel).

use tensorbridge::{matrix, vector};
use tensorbridge::{Device, Error};

use crate::support::paths;

tensorbridge::model! { struct CatDog { batch: 2, features: 4, classes: 2 } }

fn x() -> tensorbridge::nalgebra::SMatrix<f32, 2, 4> {
    matrix![0.9, 0.8, 0.1, 0.05; 0.1, 0.2, 0.8, 0.95]
}

fn label_out_of_range_is_an_error_naming_row_and_label(device: &Device) {
    let mut model = CatDog::new(device).unwrap();
    let before = model.params().unwrap();
    let y = vector![0u32, 2];
    for err in [
        model.loss(&x(), &y).unwrap_err(),
        model.gradients(&x(), &y).unwrap_err(),
        model.train_step(&x(), &y, 0.1).unwrap_err(),
    ] {
        match err {
            Error::LabelOutOfRange { row, label, classes } => assert_eq!((row, label, classes), (1, 2, 2)),
            other => panic!("unexpected error {other:?}"),
        }
    }
    let msg = model.train_step(&x(), &vector![u32::MAX, 0], 0.1).unwrap_err().to_string();
    assert!(msg.contains("row 0") && msg.contains("4294967295"), "{msg}");
    assert!(model.train_step_deferred(&x(), &vector![7, 0], 0.1).is_err());
    assert_eq!(model.params().unwrap(), before, "nothing was trained");
}

fn non_finite_input_is_an_error_naming_the_position(device: &Device) {
    let mut model = CatDog::new(device).unwrap();
    let before = model.params().unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = x();
        x[(1, 2)] = bad;
        let errs = [
            model.to_device(&x).unwrap_err(),
            model.logits(&x).unwrap_err(),
            model.predict(&x).unwrap_err(),
            model.loss(&x, &vector![0, 1]).unwrap_err(),
            model.gradients(&x, &vector![0, 1]).unwrap_err(),
            model.train_step(&x, &vector![0, 1], 0.1).unwrap_err(),
        ];
        for err in errs {
            match err {
                Error::NonFinite { what, row, column, value } => {
                    assert_eq!((what.as_str(), row, column), ("input", 1, 2));
                    assert!(value.is_nan() == bad.is_nan() && (value.is_nan() || value == bad));
                }
                other => panic!("unexpected error {other:?}"),
            }
        }
    }
    assert_eq!(model.params().unwrap(), before);
}

fn non_finite_parameters_are_refused_and_the_old_ones_kept(device: &Device) {
    let mut params = CatDog::new(device).unwrap().params().unwrap();
    params.b0[1] = f32::NAN;
    match CatDog::with_params(device, params.clone()) {
        Err(Error::NonFinite { what, row, column, .. }) => assert_eq!((what.as_str(), row, column), ("b0", 1, 0)),
        other => panic!("unexpected {other:?}"),
    }
    let mut model = CatDog::new(device).unwrap();
    let before = model.params().unwrap();
    params.b0[1] = 0.0;
    params.w0[(3, 1)] = f32::INFINITY;
    match model.set_params(&params) {
        Err(Error::NonFinite { what, row, column, .. }) => assert_eq!((what.as_str(), row, column), ("w0", 3, 1)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(model.params().unwrap(), before);
}

fn invalid_learning_rates_are_errors(device: &Device) {
    let mut model = CatDog::new(device).unwrap();
    let before = model.params().unwrap();
    for lr in [-0.1, f32::NAN, f32::INFINITY] {
        assert!(matches!(model.train_step(&x(), &vector![0, 1], lr), Err(Error::InvalidLearningRate { .. })));
    }
    assert_eq!(model.params().unwrap(), before);
    // Zero is a valid rate: the step computes the loss and changes nothing.
    model.train_step(&x(), &vector![0, 1], 0.0).unwrap();
    assert_eq!(model.params().unwrap(), before);
}

fn row_counts_outside_the_batch_are_errors(device: &Device) {
    let mut model = CatDog::new(device).unwrap();
    for rows in [0, 3] {
        match model.train_step_rows(&x(), &vector![0, 1], rows, 0.1) {
            Err(Error::InvalidRowCount { rows: r, batch }) => assert_eq!((r, batch), (rows, 2)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn divergence_is_reported_and_the_update_skipped(device: &Device) {
    // Finite parameters whose logits overflow f32: 3e38 * 0.9 + 3e38 * 0.8 = inf.
    let params = CatDogParams { w0: matrix![3e38, 0.0; 3e38, 0.0; 0.0, 0.0; 0.0, 0.0], b0: vector![0.0, 0.0] };
    for d in paths(device) {
        let mut model = CatDog::with_params(&d, params.clone()).unwrap();
        match model.train_step(&x(), &vector![1, 1], 0.1) {
            Err(Error::NonFiniteLoss { loss }) => assert!(!loss.is_finite()),
            other => panic!("on {d}: unexpected {other:?}"),
        }
        assert_eq!(model.params().unwrap(), params);
        assert!(matches!(model.predict(&x()), Err(Error::NonFinite { ref what, .. }) if what == "logits"));
        // Deferred steps: the loss is reported when taken, and neither step changed anything.
        model.train_step_deferred(&x(), &vector![1, 1], 0.1).unwrap();
        model.train_step_deferred(&x(), &vector![1, 1], 0.1).unwrap();
        assert!(matches!(model.take_losses(), Err(Error::NonFiniteLoss { .. })), "on {d}");
        assert_eq!(model.params().unwrap(), params);
        assert!(model.take_losses().unwrap().is_empty());
    }
}

tensorbridge::model! { struct Tiny { batch: 2, features: 1, hidden: [1], classes: 2 } }

fn padding_rows_never_enter_gradients_even_when_they_overflow(device: &Device) {
    // Row 1 is padding (rows = 1). Its hidden activation overflows: 10 * 3e38 = inf. A
    // gradient summed over all rows would hold inf * 0 = NaN.
    let params = TinyParams { w0: matrix![3e38], b0: vector![0.0], w1: matrix![1e-38, -1e-38], b1: vector![0.0, 0.0] };
    let model = Tiny::with_params(device, params).unwrap();
    let x = matrix![0.5; 10.0];
    let (loss, grads) = model.gradients_rows(&x, &vector![0, 1], 1).unwrap();
    assert!(loss.is_finite());
    for g in grads.w0.iter().chain(grads.b0.iter()).chain(grads.w1.iter()).chain(grads.b1.iter()) {
        assert!(g.is_finite(), "{grads:?}");
    }
}

crate::tests! {
    device label_out_of_range_is_an_error_naming_row_and_label,
    device non_finite_input_is_an_error_naming_the_position,
    device non_finite_parameters_are_refused_and_the_old_ones_kept,
    device invalid_learning_rates_are_errors,
    device row_counts_outside_the_batch_are_errors,
    device divergence_is_reported_and_the_update_skipped,
    device padding_rows_never_enter_gradients_even_when_they_overflow,
}
