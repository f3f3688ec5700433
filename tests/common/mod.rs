//! Helpers shared by the integration tests.
#![allow(dead_code)]

use tensorbridge::nalgebra::SMatrix;

/// An SMatrix from row-major nested arrays of f64 (as the NumPy fixtures write them).
pub fn mat<const R: usize, const C: usize>(rows: &[[f64; C]; R]) -> SMatrix<f32, R, C> {
    SMatrix::from_fn(|r, c| rows[r][c] as f32)
}

/// A column vector from an array of f64.
pub fn col<const R: usize>(v: &[f64; R]) -> SMatrix<f32, R, 1> {
    SMatrix::from_fn(|r, _| v[r] as f32)
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, naming the first offender.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (k, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a as f64 - e).abs();
        assert!(
            err <= atol + rtol * e.abs(),
            "{what}[{k}]: got {a}, expected {e} (error {err:e} > {atol:e} + {rtol:e} * |expected|)"
        );
    }
}

/// The values of a column-major matrix as f64.
pub fn f64s<const R: usize, const C: usize>(m: &SMatrix<f32, R, C>) -> Vec<f64> {
    m.iter().map(|&v| v as f64).collect()
}
