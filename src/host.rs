//! Host-side helpers for results that came back across the bridge: argmax per row and
//! accuracy (the seed's stage five).

use nalgebra::{Dim, Matrix, RawStorage};

/// Index of the largest value in each row (the first one on ties, as NumPy's `argmax`).
/// A NaN in a row wins over every number, as in NumPy.
///
/// ```
/// use tensorbridge::nalgebra::matrix;
/// let logits = matrix![16.25, 4.0; -2.45, 17.1];
/// assert_eq!(tensorbridge::host::argmax_rows(&logits), vec![0, 1]);
/// ```
pub fn argmax_rows<R: Dim, C: Dim, S: RawStorage<f32, R, C>>(m: &Matrix<f32, R, C, S>) -> Vec<u32> {
    (0..m.nrows())
        .map(|r| {
            let mut best = 0usize;
            for c in 1..m.ncols() {
                let (v, b) = (m[(r, c)], m[(r, best)]);
                if b.is_nan() {
                    break;
                }
                if v > b || v.is_nan() {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

/// Fraction of positions where `predicted` equals `labels` (0.0 for empty input).
///
/// # Panics
/// Never; if the lengths differ, only the common prefix is compared and the longer
/// length is the denominator, so a missing prediction counts as wrong.
///
/// ```
/// assert_eq!(tensorbridge::host::accuracy(&[0, 1, 1], &[0, 1, 0]), 2.0 / 3.0);
/// ```
pub fn accuracy(predicted: &[u32], labels: &[u32]) -> f64 {
    let n = predicted.len().max(labels.len());
    if n == 0 {
        return 0.0;
    }
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::matrix;

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax_rows(&matrix![1.0f32, 3.0, 3.0; 2.0, 2.0, 1.0]), vec![1, 0]);
    }

    #[test]
    fn argmax_lets_nan_win_like_numpy() {
        assert_eq!(argmax_rows(&matrix![1.0f32, f32::NAN, 3.0]), vec![1]);
    }

    #[test]
    fn accuracy_counts_missing_predictions_as_wrong() {
        assert_eq!(accuracy(&[1], &[1, 0]), 0.5);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }
}
