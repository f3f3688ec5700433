//! Iris and digits reach the peer's test accuracy minus 0.02 (both >= 0.95, see
//! `data/README.md`) with a fixed seed, on every device; and the metrics `evaluate` reports
//! agree with what the logits say, recomputed here.

use crate::support::accuracy::{check_history, train_digits, train_iris};
use tensorbridge::Device;

fn iris_reaches_0_95(device: &Device) {
    let (history, metrics) = train_iris(device);
    check_history(&history, 150);
    crate::test_log!("iris {device}: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "iris test accuracy on {device}: {}", metrics.accuracy);
}

fn digits_reach_0_95(device: &Device) {
    let (history, metrics) = train_digits(device);
    check_history(&history, 30);
    crate::test_log!("digits {device}: train {:.3}, test {:.3}", history.last().unwrap().accuracy, metrics.accuracy);
    assert!(metrics.accuracy >= 0.95, "digits test accuracy on {device}: {}", metrics.accuracy);
}

crate::tests! {
    device iris_reaches_0_95,
    device digits_reach_0_95,
}
