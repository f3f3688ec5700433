//! Iris and digits reach the peer's test accuracy minus 0.02 (both >= 0.95, see
//! `../shared/data/README.md`) with a fixed seed on the CPU backend; and the metrics
//! `evaluate` reports agree with what the logits say, recomputed here. The same on OpenCL:
//! tests/train_accuracy_opencl.rs (a separate binary, so that a device fault cannot take
//! these results down with it).

#[path = "fixtures/accuracy_support.rs"]
mod accuracy;

use accuracy::{check_history, train_digits, train_iris};
use tensorbridge::Device;

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
