//! Iris and digits reach test accuracy >= 0.95 on OpenCL with the schedules of the CPU
//! tests (tests/train_accuracy.rs). Skip with a notice when no OpenCL device is usable,
//! unless `TENSORBRIDGE_REQUIRE_OPENCL=1`.

#[path = "fixtures/accuracy_support.rs"]
mod accuracy;

use accuracy::{opencl, train_digits, train_iris};

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
