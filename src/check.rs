//! Validation of everything a caller hands in, before any arithmetic: labels, finite values,
//! row counts, learning rates. Shared by the `no_std` CPU core and the engine; a bad call is
//! refused here and changes nothing.

use crate::error::{Error, Result, Text};
use crate::layout::locate;
use crate::math::optim::Optimizer;
use crate::model::{HostTensor, Model, StorageElement};

/// One validated batch: `x` is `[batch x features]` column-major, `y` holds `batch` labels
/// (all `< classes`), and only the first `rows` rows count (the rest is padding).
pub struct Batch<'a, T> {
    /// The features, column-major.
    pub x: &'a [T],
    /// The labels.
    pub y: &'a [u32],
    /// Rows that count, `1..=batch`.
    pub rows: usize,
}

impl<T> Clone for Batch<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Batch<'_, T> {}

/// Checks labels, inputs and `rows`; returns the batch as flat slices. Inlined, so that the
/// slices' lengths stay the constants they are for the CPU core's loops.
#[inline(always)]
pub fn batch<'a, M: Model>(x: &'a M::Input, y: &'a M::Labels, rows: usize) -> Result<Batch<'a, M::Storage>> {
    if rows == 0 || rows > M::BATCH {
        return Err(Error::InvalidRowCount { rows, batch: M::BATCH });
    }
    let labels = y.as_flat();
    labels_in_range(labels, M::CLASSES)?;
    let flat = x.as_flat();
    finite("input", flat, M::BATCH)?;
    Ok(Batch { x: flat, y: labels, rows })
}

/// A learning rate: finite and `>= 0`.
#[inline]
pub fn learning_rate(lr: f32) -> Result<()> {
    if !lr.is_finite() || lr < 0.0 {
        return Err(Error::InvalidLearningRate { lr });
    }
    Ok(())
}

/// Every hyperparameter of `optimizer` in its range ([`Optimizer::invalid`]).
pub fn optimizer<O: Optimizer>(optimizer: &O) -> Result<()> {
    match optimizer.invalid() {
        Some((name, value)) => Err(Error::InvalidHyperparameter { optimizer: O::NAME, name, value }),
        None => Ok(()),
    }
}

/// Every label `< classes`.
#[inline]
pub fn labels_in_range(labels: &[u32], classes: usize) -> Result<()> {
    // One branch-free pass in the common case; the cold path finds the row.
    if labels.iter().fold(true, |ok, &l| ok & ((l as usize) < classes)) {
        return Ok(());
    }
    label_error(labels, classes)
}

#[cold]
#[inline(never)]
fn label_error(labels: &[u32], classes: usize) -> Result<()> {
    let (row, &label) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes).unwrap_or((0, &0));
    Err(Error::LabelOutOfRange { row, label, classes })
}

/// Every value of a column-major buffer with `rows` rows finite.
#[inline]
pub fn finite<T: StorageElement>(what: &'static str, flat: &[T], rows: usize) -> Result<()> {
    let ok = match T::as_f32_slice(flat) {
        Some(flat) => all_finite(flat),
        None => flat.iter().fold(true, |ok, v| ok & v.is_finite()),
    };
    if ok {
        return Ok(());
    }
    finite_error(what, flat, rows)
}

/// Whether every value is finite, on the bits: a value's exponent field plus one carries
/// into the top bit exactly when the field is all ones (NaN or infinity), and those carries
/// are OR-ed together. Integer operations of one cycle, which LLVM spreads over independent
/// lanes: 2048 values took 133 ns on SSE2 against 216 ns for `is_finite` folded.
#[inline]
fn all_finite(flat: &[f32]) -> bool {
    let carries = flat.iter().fold(0u32, |acc, v| acc | (v.to_bits() & 0x7f80_0000).wrapping_add(0x0080_0000));
    carries & 0x8000_0000 == 0
}

#[cold]
#[inline(never)]
fn finite_error<T: StorageElement>(what: &'static str, flat: &[T], rows: usize) -> Result<()> {
    let (k, value) = flat.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, 0.0), |(k, v)| (k, v.to_f32()));
    Err(Error::NonFinite { what: Text::from(what), row: k % rows.max(1), column: k / rows.max(1), value })
}

/// Every parameter finite; the error names the field (`w0`, `b1`, ...) and the position.
pub fn params<T: StorageElement>(dims: &[usize], flat: &[T]) -> Result<()> {
    params_at(dims, 0, flat)
}

/// Every value of `values`, the parameters from flat index `offset` on, finite; the error
/// names the field and the position (see [`layout::locate`](crate::layout::locate)).
#[inline]
pub fn params_at<T: StorageElement>(dims: &[usize], offset: usize, values: &[T]) -> Result<()> {
    if values.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    params_error(dims, offset, values)
}

#[cold]
#[inline(never)]
fn params_error<T: StorageElement>(dims: &[usize], offset: usize, values: &[T]) -> Result<()> {
    let (j, value) = values.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, 0.0), |(j, v)| (j, v.to_f32()));
    let (what, row, column) = locate(dims, offset + j);
    Err(Error::NonFinite { what: Text::from(what), row, column, value })
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_tells_every_non_finite_pattern() {
        let finite = [0.0f32, -0.0, 1.0, -3.5, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -1e-45, 65504.0];
        assert!(all_finite(&finite));
        assert!(all_finite(&[]));
        // Every NaN and infinity pattern: exponent all ones, any sign, any payload.
        for bits in [0x7f80_0000u32, 0xff80_0000, 0x7fc0_0000, 0xffc0_0000, 0x7f80_0001, 0x7fbf_ffff, 0xffff_ffff] {
            for at in [0, 4, 9] {
                let mut v = finite;
                v[at] = f32::from_bits(bits);
                assert!(!all_finite(&v), "{bits:#x} at {at}");
            }
        }
        // The largest exponent below all ones is finite, whatever the sign and mantissa.
        assert!(all_finite(&[f32::from_bits(0x7f7f_ffff), f32::from_bits(0xff00_0000)]));
    }
}
