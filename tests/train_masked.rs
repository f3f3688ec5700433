//! A short last batch is padded and masked: ten rows with batch size 4 train on exactly ten
//! rows. Expected values come from NumPy (`tests/fixtures/masked_batch.py`, which computes
//! them on the ten rows alone), and, as a second route, from a model whose batch holds all
//! ten rows so that nothing is padded.

use std::path::PathBuf;

use tensorbridge::data::Dataset;
use tensorbridge::nalgebra::{DMatrix, SMatrix, SVector};
use tensorbridge::{npy, Device, FitOptions};

tensorbridge::model! {
    /// Batch 4 over 10 rows: batches of 4, 4 and 2 (+2 padding).
    pub struct Linear4 { batch: 4, features: 3, classes: 3 }
}
tensorbridge::model! {
    /// The same model with all ten rows in one batch.
    pub struct Linear10 { batch: 10, features: 3, classes: 3 }
}
tensorbridge::model! {
    /// One hidden ReLU layer, batch 4.
    pub struct Mlp4 { batch: 4, features: 3, classes: 3, hidden: [5] }
}

fn fixture(name: &str) -> DMatrix<f32> {
    let path: PathBuf = crate::support::repo().join("tests/fixtures/masked").join(name);
    npy::read_matrix(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_f64(name: &str) -> f64 {
    f64::from(fixture(name)[(0, 0)])
}

fn dataset() -> Dataset {
    let dir: PathBuf = crate::support::repo().join("tests/fixtures/masked");
    Dataset::from_npy(dir.join("x.npy"), dir.join("y.npy")).unwrap()
}

fn smatrix<const R: usize, const C: usize>(m: &DMatrix<f32>) -> SMatrix<f32, R, C> {
    assert_eq!(m.shape(), (R, C));
    SMatrix::from_column_slice(m.as_slice())
}

fn svector<const N: usize>(m: &DMatrix<f32>) -> SVector<f32, N> {
    assert_eq!(m.shape(), (N, 1));
    SVector::from_column_slice(m.as_slice())
}

fn assert_close(what: &str, got: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (k, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol * (1.0 + e.abs()), "{what}[{k}]: got {g}, expected {e}");
    }
}

fn linear_params() -> Linear4Params {
    Linear4Params { w0: smatrix(&fixture("linear_w0.npy")), b0: svector(&fixture("linear_b0.npy")) }
}

fn mlp_params() -> Mlp4Params {
    Mlp4Params {
        w0: smatrix(&fixture("mlp_w0.npy")),
        b0: svector(&fixture("mlp_b0.npy")),
        w1: smatrix(&fixture("mlp_w1.npy")),
        b1: svector(&fixture("mlp_b1.npy")),
    }
}

fn ten_rows_in_batches_of_four_are_4_4_2() {
    let data = dataset();
    assert_eq!(data.len(), 10);
    let rows: Vec<usize> = data.batches::<Linear4>().unwrap().map(|b| b.rows).collect();
    assert_eq!(rows, vec![4, 4, 2]);
}

/// Loss and gradients of a padded dataset (batches 4, 4, 2) against NumPy's.
fn loss_and_gradients_over_padded_batches_match_numpy(device: &Device) {
    gradients_match_numpy(device);
}

/// One epoch of three steps against NumPy's.
fn one_epoch_of_three_steps_matches_numpy(device: &Device) {
    epoch_matches_numpy(device);
}

fn gradients_match_numpy(device: &Device) {
    let data = dataset();
    let model = Linear4::with_params(device, linear_params()).unwrap();
    let (loss, g) = model.dataset_gradients(&data).unwrap();
    assert_close("loss", &[loss], &[fixture_f64("linear_loss.npy") as f32], 1e-5);
    assert_close("dw0", g.w0.as_slice(), fixture("linear_grad_w0.npy").as_slice(), 1e-5);
    assert_close("db0", g.b0.as_slice(), fixture("linear_grad_b0.npy").as_slice(), 1e-5);
    let metrics = model.evaluate(&data).unwrap();
    assert_eq!(metrics.rows, 10);
    assert_eq!(metrics.confusion.iter().sum::<usize>(), 10);
    assert_close("evaluate loss", &[metrics.loss], &[loss], 1e-6);

    let mlp = Mlp4::with_params(device, mlp_params()).unwrap();
    let (loss, g) = mlp.dataset_gradients(&data).unwrap();
    assert_close("mlp loss", &[loss], &[fixture_f64("mlp_loss.npy") as f32], 1e-5);
    assert_close("mlp dw0", g.w0.as_slice(), fixture("mlp_grad_w0.npy").as_slice(), 1e-5);
    assert_close("mlp db0", g.b0.as_slice(), fixture("mlp_grad_b0.npy").as_slice(), 1e-5);
    assert_close("mlp dw1", g.w1.as_slice(), fixture("mlp_grad_w1.npy").as_slice(), 1e-5);
    assert_close("mlp db1", g.b1.as_slice(), fixture("mlp_grad_b1.npy").as_slice(), 1e-5);
}

fn padded_gradients_equal_those_of_one_unpadded_batch() {
    let data = dataset();
    let p = linear_params();
    let four = Linear4::with_params(&Device::cpu(), p.clone()).unwrap();
    let ten = Linear10::with_params(&Device::cpu(), Linear10Params { w0: p.w0, b0: p.b0 }).unwrap();
    let (l4, g4) = four.dataset_gradients(&data).unwrap();
    let batch = data.batches::<Linear10>().unwrap().next().unwrap();
    assert_eq!(batch.rows, 10);
    let (l10, g10) = ten.gradients(&batch.x, &batch.y).unwrap();
    assert_close("loss", &[l4], &[l10], 1e-6);
    assert_close("dw0", g4.w0.as_slice(), g10.w0.as_slice(), 1e-6);
    assert_close("db0", g4.b0.as_slice(), g10.b0.as_slice(), 1e-6);
}

fn epoch_matches_numpy(device: &Device) {
    let data = dataset();
    let options = || FitOptions::new().shuffle(false).progress(false);

    let mut model = Linear4::with_params(device, linear_params()).unwrap();
    let history = model.fit_with(&data, &[0.5], 0, options()).unwrap();
    let stats = &history.epochs[0];
    assert_close("step loss", &[stats.step_loss], &[fixture_f64("linear_step_loss.npy") as f32], 1e-5);
    let p = model.params().unwrap();
    assert_close("w0", p.w0.as_slice(), fixture("linear_epoch_w0.npy").as_slice(), 1e-5);
    assert_close("b0", p.b0.as_slice(), fixture("linear_epoch_b0.npy").as_slice(), 1e-5);

    let mut mlp = Mlp4::with_params(device, mlp_params()).unwrap();
    let history = mlp.fit_with(&data, &[0.5], 0, options()).unwrap();
    assert_close("mlp step loss", &[history.epochs[0].step_loss], &[fixture_f64("mlp_step_loss.npy") as f32], 1e-5);
    let p = mlp.params().unwrap();
    assert_close("mlp w0", p.w0.as_slice(), fixture("mlp_epoch_w0.npy").as_slice(), 1e-5);
    assert_close("mlp b0", p.b0.as_slice(), fixture("mlp_epoch_b0.npy").as_slice(), 1e-5);
    assert_close("mlp w1", p.w1.as_slice(), fixture("mlp_epoch_w1.npy").as_slice(), 1e-5);
    assert_close("mlp b1", p.b1.as_slice(), fixture("mlp_epoch_b1.npy").as_slice(), 1e-5);
}

fn shuffled_epochs_still_visit_every_row_once() {
    // The shuffled order of an epoch still puts every row in exactly one batch, and the
    // padding rows are zeros.
    let data = dataset();
    let mut rng = tensorbridge::rng::Rng::new(9);
    let mut seen = Vec::new();
    for b in data.shuffled_batches::<Linear4>(&mut rng).unwrap() {
        let x = b.x;
        for r in 0..b.rows {
            let row: Vec<f32> = (0..3).map(|c| x[(r, c)]).collect();
            let k = (0..10).find(|&k| (0..3).all(|c| data.features()[(k, c)] == row[c])).unwrap();
            seen.push(k);
        }
        for r in b.rows..4 {
            assert!((0..3).all(|c| x[(r, c)] == 0.0), "padding row {r} is not zero");
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

crate::tests! {
    plain ten_rows_in_batches_of_four_are_4_4_2,
    device loss_and_gradients_over_padded_batches_match_numpy,
    device one_epoch_of_three_steps_matches_numpy,
    plain padded_gradients_equal_those_of_one_unpadded_batch,
    plain shuffled_epochs_still_visit_every_row_once,
}
