//! `matrix!` and `vector!`: nalgebra's literal macros, reachable through `tensorbridge::`
//! alone. (nalgebra's own `matrix!`/`vector!` expand to `nalgebra::...` paths, which do not
//! resolve in a crate that depends on tensorbridge only.) They expand to `$crate::...`
//! paths and use nothing beyond `core`. The module is public only for those paths.

/// A statically sized matrix from rows: `matrix![a, b, c; d, e, f]` is an
/// `SMatrix<T, 2, 3>` (rows separated by `;`, a trailing `;` allowed).
///
/// The element type is inferred as for an array literal, so float literals become `f32`
/// when the matrix is used as a model's input.
///
/// ```
/// use tensorbridge::matrix;
/// use tensorbridge::nalgebra::SMatrix;
///
/// let m: SMatrix<f32, 2, 3> = matrix![1.0, 2.0, 3.0;
///                                     4.0, 5.0, 6.0];
/// assert_eq!(m[(1, 0)], 4.0);
/// ```
#[macro_export]
macro_rules! matrix {
    ($($($x:expr),+ $(,)?);+ $(;)?) => {
        $crate::macros::matrix_from_rows([$([$($x),+]),+])
    };
}

/// A statically sized column vector: `vector![a, b, c]` is an `SVector<T, 3>`.
///
/// ```
/// use tensorbridge::vector;
///
/// let y = vector![0u32, 1, 1];
/// assert_eq!(y.as_slice(), &[0, 1, 1]);
/// ```
#[macro_export]
macro_rules! vector {
    ($($x:expr),+ $(,)?) => {
        $crate::macros::vector_from_array([$($x),+])
    };
}

use nalgebra::{SMatrix, SVector, Scalar};

/// What `matrix!` expands to (not part of the API): the matrix whose row `r` is `rows[r]`.
#[inline]
pub fn matrix_from_rows<T: Scalar, const R: usize, const C: usize>(rows: [[T; C]; R]) -> SMatrix<T, R, C> {
    SMatrix::from_fn(|r, c| rows[r][c].clone())
}

/// What `vector!` expands to (not part of the API): the column vector of `values`.
#[inline]
pub fn vector_from_array<T: Scalar, const R: usize>(values: [T; R]) -> SVector<T, R> {
    SVector::from_fn(|r, _| values[r].clone())
}
