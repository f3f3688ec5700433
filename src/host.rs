//! Host-side helpers for results that came back across the bridge: argmax per row,
//! accuracy (the seed's stage five) and class probabilities (softmax per row); and the
//! per-feature [`Standardizer`] a model can carry (see
//! [`Engine::set_standardizer`](crate::Engine::set_standardizer)).

use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};

use crate::error::{Error, Result};
#[cfg(any(feature = "checkpoint", feature = "onnx"))]
use crate::model::StorageElement;

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

/// Replaces every row of `m` by its softmax: `exp(z - max) / sum(exp(z - max))` in `f32`,
/// so every row is non-negative and sums to 1 (within rounding) whatever the scale of the
/// logits. A row holding a NaN becomes all NaN.
///
/// ```
/// use tensorbridge::nalgebra::matrix;
/// let mut p = matrix![0.0f32, 0.0; 1000.0, 0.0];
/// tensorbridge::host::softmax_rows(&mut p);
/// assert_eq!(p, matrix![0.5, 0.5; 1.0, 0.0]);
/// ```
pub fn softmax_rows<R: Dim, C: Dim, S: RawStorageMut<f32, R, C>>(m: &mut Matrix<f32, R, C, S>) {
    for r in 0..m.nrows() {
        let max = (0..m.ncols()).map(|c| m[(r, c)]).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for c in 0..m.ncols() {
            let e = (m[(r, c)] - max).exp();
            m[(r, c)] = e;
            sum += e;
        }
        for c in 0..m.ncols() {
            m[(r, c)] /= sum;
        }
    }
}

/// Per-feature standardisation `(x - mean) / scale`, as scikit-learn's `StandardScaler`
/// (`mean_`, `scale_`) or PyTorch code in front of a model computes it.
///
/// Made from given statistics with [`Standardizer::from_mean_scale`], or from a training
/// set with [`Standardizer::fit`](crate::data::Standardizer::fit) (feature `data`).
/// Attached to a model ([`Engine::set_standardizer`](crate::Engine::set_standardizer)) it is
/// applied to raw features by `logits`, `predict` and `predict_proba`, saved in the
/// model's checkpoint and written into its ONNX graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    pub(crate) mean: Vec<f32>,
    pub(crate) scale: Vec<f32>,
}

impl Standardizer {
    /// A standardiser from per-feature means and scales (standard deviations), e.g.
    /// scikit-learn's `StandardScaler().mean_` and `.scale_`.
    ///
    /// ```
    /// use tensorbridge::Standardizer;
    /// let s = Standardizer::from_mean_scale(vec![1.0, 2.0], vec![0.5, 4.0])?;
    /// assert_eq!(s.mean(), &[1.0, 2.0]);
    /// assert!(Standardizer::from_mean_scale(vec![1.0], vec![0.0]).is_err());
    /// # Ok::<(), tensorbridge::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the two lengths differ or are zero;
    /// [`Error::NonFinite`] for a NaN or infinite value (`what` is `"mean"` or `"scale"`,
    /// `column` the feature); [`Error::InvalidStandardizer`] for a scale that is zero or
    /// negative.
    pub fn from_mean_scale(mean: Vec<f32>, scale: Vec<f32>) -> Result<Standardizer> {
        if mean.len() != scale.len() || mean.is_empty() {
            return Err(Error::ShapeMismatch {
                what: "standardiser scale".to_string(),
                expected: format!("one value per feature, as the mean's {} (at least one)", mean.len()),
                found: format!("{} values", scale.len()),
            });
        }
        for (what, values) in [("mean", &mean), ("scale", &scale)] {
            if let Some((column, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::NonFinite { what: what.to_string(), row: 0, column, value });
            }
        }
        if let Some((feature, &value)) = scale.iter().enumerate().find(|(_, &v)| v <= 0.0) {
            return Err(Error::InvalidStandardizer {
                reason: format!("the scale of feature {feature} is {value}; scales must be greater than 0"),
            });
        }
        Ok(Standardizer { mean, scale })
    }

    /// The per-feature means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The per-feature scales (standard deviations, 1 for constant columns).
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// Whether it has no feature (never true for one made by this crate).
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// `(x - mean) / scale` of one value of feature `feature`, in `f32` (one subtraction and
    /// one division, each rounded, as the ONNX graph's `Sub` and `Div` compute it).
    #[inline]
    pub(crate) fn standardize(&self, feature: usize, x: f32) -> f32 {
        (x - self.mean[feature]) / self.scale[feature]
    }
}

/// `v` in the storage type `T` (rounded to nearest once, from `f64`), or `None` when `v` is
/// finite but beyond `T`'s range (it would round to infinity). A NaN or infinite `v` stays
/// what it is, for the parameters' own finite check to name.
#[cfg(any(feature = "checkpoint", feature = "onnx"))]
pub(crate) fn narrow<T: StorageElement>(v: f64) -> Option<T> {
    let rounded = if T::IS_F16 { half::f16::from_f64(v).to_f32() } else { v as f32 };
    if v.is_finite() && !rounded.is_finite() {
        return None;
    }
    Some(T::from_f32(rounded))
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

    #[test]
    fn softmax_rows_sum_to_one_and_keep_the_order() {
        let mut p = matrix![1.0f32, 2.0, 3.0; -50.0, 0.0, 50.0];
        softmax_rows(&mut p);
        for r in 0..2 {
            let sum: f32 = p.row(r).iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "row {r} sums to {sum}");
        }
        // e^1 / (e^1 + e^2 + e^3), by hand: 2.718282 / 30.192874
        assert!((p[(0, 0)] - 0.09003057).abs() < 1e-7);
        assert_eq!(argmax_rows(&p), vec![2, 2]);
    }

    #[test]
    fn standardizer_refuses_bad_statistics() {
        assert!(matches!(Standardizer::from_mean_scale(vec![0.0, 1.0], vec![1.0]), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(
            Standardizer::from_mean_scale(vec![f32::NAN], vec![1.0]),
            Err(Error::NonFinite { column: 0, .. })
        ));
        assert!(matches!(
            Standardizer::from_mean_scale(vec![0.0, 0.0], vec![1.0, -2.0]),
            Err(Error::InvalidStandardizer { .. })
        ));
    }
}
