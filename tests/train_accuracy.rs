//! Iris and digits reach the peer's test accuracy minus 0.02 (both >= 0.95, see
//! `../shared/data/README.md`) with a fixed seed, on the CPU backend and on OpenCL; and the
//! metrics `evaluate` reports agree with what the logits say, recomputed here.
//!
//! OpenCL tests skip with a notice when no OpenCL device is usable, unless
//! `TENSORBRIDGE_REQUIRE_OPENCL=1`.

#[path = "fixtures/numpy_support.rs"]
mod support;

use tensorbridge::data::{Dataset, Standardizer};
use tensorbridge::{host, Device, FitOptions, History, Metrics, Model};

tensorbridge::model! {
    /// As examples/iris.rs.
    pub struct Iris { batch: 16, features: 4, classes: 3 }
}
tensorbridge::model! {
    /// As examples/digits.rs.
    pub struct Digits { batch: 32, features: 64, classes: 10 }
}

/// 70/30 stratified split (seed 0), standardised with the training statistics.
fn split(name: &str) -> (Dataset, Dataset) {
    let data = Dataset::from_npy(
        support::shared_data(&format!("{name}_features.npy")),
        support::shared_data(&format!("{name}_labels.npy")),
    )
    .unwrap();
    let (train, test) = data.split_stratified(0.3, 0).unwrap();
    let scaler = Standardizer::fit(&train).unwrap();
    (scaler.apply(&train).unwrap(), scaler.apply(&test).unwrap())
}

fn opencl(test: &str) -> Option<Device> {
    match Device::from_name("opencl") {
        Ok(device) => Some(device),
        Err(err) => {
            if std::env::var("TENSORBRIDGE_REQUIRE_OPENCL").as_deref() == Ok("1") {
                panic!("{test}: TENSORBRIDGE_REQUIRE_OPENCL=1 but no OpenCL device: {err}");
            }
            eprintln!("note: {test}: skipped on OpenCL ({err})");
            None
        }
    }
}

fn quiet() -> FitOptions<'static> {
    FitOptions::new().progress(false)
}

fn train_iris(device: &Device) -> (History, Metrics) {
    let (train, test) = split("iris");
    let mut model = Iris::new(device).unwrap();
    let rates: Vec<f32> = (0..150).map(|e| if e < 100 { 0.5 } else { 0.1 }).collect();
    let history = model.fit_with(&train, &rates, 1, quiet()).unwrap();
    let metrics = model.evaluate(&test).unwrap();
    check_metrics_against_logits(&mut model, &test, &metrics);
    (history, metrics)
}

fn train_digits(device: &Device) -> (History, Metrics) {
    let (train, test) = split("digits");
    let mut model = Digits::new(device).unwrap();
    let rates: Vec<f32> = (0..30).map(|e| if e < 20 { 0.1 } else { 0.02 }).collect();
    let history = model.fit_with(&train, &rates, 1, quiet()).unwrap();
    let metrics = model.evaluate(&test).unwrap();
    check_metrics_against_logits(&mut model, &test, &metrics);
    (history, metrics)
}

/// Recomputes accuracy, loss and confusion from the logits of every row.
fn check_metrics_against_logits<M: Model>(model: &mut tensorbridge::Engine<M>, test: &Dataset, m: &Metrics) {
    let logits = model.logits_of(test).unwrap();
    assert_eq!(logits.shape(), (test.len(), M::CLASSES));
    let predicted = host::argmax_rows(&logits);
    assert_eq!(m.accuracy, host::accuracy(&predicted, test.labels()));
    assert_eq!(m.rows, test.len());
    let mut loss = 0.0f64;
    for (r, &label) in test.labels().iter().enumerate() {
        let row: Vec<f64> = logits.row(r).iter().map(|&v| f64::from(v)).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - row[label as usize];
    }
    let loss = loss / test.len() as f64;
    assert!((f64::from(m.loss) - loss).abs() < 1e-4 * (1.0 + loss), "loss {} vs {loss}", m.loss);
    let diagonal: usize = (0..M::CLASSES).map(|c| m.confusion[(c, c)]).sum();
    assert_eq!(m.confusion.iter().sum::<usize>(), test.len());
    assert_eq!(diagonal as f64 / test.len() as f64, m.accuracy);
    for (t, p) in test.labels().iter().zip(&predicted) {
        assert!(m.confusion[(*t as usize, *p as usize)] > 0);
    }
}

fn check_history(history: &History, epochs: usize) {
    assert_eq!(history.epochs.len(), epochs);
    let losses = history.losses();
    assert!(losses[epochs - 1] < losses[0], "the training loss went down: {losses:?}");
    assert!(history.epochs.iter().enumerate().all(|(e, s)| s.epoch == e + 1));
}

#[test]
fn iris_reaches_0_95_on_cpu() {
    let (history, metrics) = train_iris(&Device::cpu());
    check_history(&history, 150);
    eprintln!("iris cpu: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "iris test accuracy {}", metrics.accuracy);
}

#[test]
fn digits_reach_0_95_on_cpu() {
    let (history, metrics) = train_digits(&Device::cpu());
    check_history(&history, 30);
    eprintln!("digits cpu: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "digits test accuracy {}", metrics.accuracy);
}

#[test]
fn iris_reaches_0_95_on_opencl() {
    let Some(device) = opencl("iris_reaches_0_95_on_opencl") else { return };
    let (history, metrics) = train_iris(&device);
    eprintln!("iris {device}: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "iris test accuracy on {device}: {}", metrics.accuracy);
}

#[test]
fn digits_reach_0_95_on_opencl() {
    let Some(device) = opencl("digits_reach_0_95_on_opencl") else { return };
    let (history, metrics) = train_digits(&device);
    eprintln!("digits {device}: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "digits test accuracy on {device}: {}", metrics.accuracy);
}
