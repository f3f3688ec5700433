//! The [`Backend`] trait and its implementations, one module per backend. The model code
//! (`engine.rs`) calls only this trait; nothing outside `opencl.rs` names an OpenCL type.
//!
//! Layouts shared by every backend (and by the kernels in `cl/`):
//! - a batch `x` is `[batch x features]`, column-major (nalgebra's order): `x[f * B + r]`;
//! - logits are `[batch x classes]`, column-major: `z[c * B + r]`;
//! - parameters (and gradients) are one flat buffer, layer after layer: `w_l`
//!   (`[in x out]`, column-major: `w[o * in + i]`) then `b_l` (`[out]`).
//!
//! The batch and the parameters are in the model's storage type `T` (`f32` or `f16`, see
//! [`StorageElement`]); logits, losses and gradients are always `f32`.

use crate::error::{Error, Result};
use crate::model::StorageElement;

pub(crate) mod cpu;
pub(crate) mod opencl;

/// A device-resident buffer: where it lives decides how it is read back.
pub(crate) enum Buffer {
    /// Host memory (the CPU backend), always widened to `f32` (exactly: every `f16` is an
    /// `f32`).
    Host(Box<[f32]>),
    /// A buffer on an OpenCL device (the type is private to `opencl`).
    OpenCl(opencl::ClTensor),
}

impl Buffer {
    /// Where the buffer lives, for messages.
    pub(crate) fn location(&self) -> String {
        match self {
            Buffer::Host(_) => "the CPU".to_string(),
            Buffer::OpenCl(t) => t.location(),
        }
    }

    /// Copies the whole buffer into `out` (same length), whose element type is the one the
    /// buffer was made with.
    pub(crate) fn read_into<T: StorageElement>(&self, out: &mut [T]) -> Result<()> {
        match self {
            Buffer::Host(data) => {
                for (o, &v) in out.iter_mut().zip(data.iter()) {
                    *o = T::from_f32(v);
                }
                Ok(())
            }
            Buffer::OpenCl(t) => t.read_into(out),
        }
    }
}

/// One validated batch: `x` is `[batch x features]` column-major, `y` holds `batch` labels
/// (all `< classes`), and only the first `rows` rows count (the rest is padding).
pub(crate) struct Batch<'a, T> {
    pub x: &'a [T],
    pub y: &'a [u32],
    pub rows: usize,
}

impl<T> Clone for Batch<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Batch<'_, T> {}

/// What every backend computes, for a model stored as `T`. Inputs arrive validated
/// (finite, labels in range, `rows` in `1..=batch`, `lr` finite and >= 0); backends never
/// need to re-check them.
pub(crate) trait Backend<T: StorageElement> {
    /// Copies `data` into a new buffer on the device.
    fn upload(&self, data: &[T]) -> Result<Buffer>;
    /// Replaces the parameters (flat layout, see the module docs).
    fn write_params(&mut self, flat: &[T]) -> Result<()>;
    /// Reads the parameters into `out` (flat layout).
    fn read_params(&self, out: &mut [T]) -> Result<()>;
    /// Logits of a device-resident batch, left on the device.
    fn forward(&mut self, x: &Buffer) -> Result<Buffer>;
    /// Logits of a host batch, written into `out` (`[batch x classes]`). The default goes
    /// through [`Backend::upload`] and [`Backend::forward`]; backends override it to skip
    /// the intermediate buffers.
    fn logits_into(&mut self, x: &[T], out: &mut [f32]) -> Result<()> {
        let x = self.upload(x)?;
        self.forward(&x)?.read_into(out)
    }
    /// Mean softmax cross-entropy over the batch's valid rows.
    fn loss(&mut self, batch: Batch<'_, T>) -> Result<f32>;
    /// The loss and its gradient with respect to every parameter (flat layout, into `out`).
    fn gradients(&mut self, batch: Batch<'_, T>, out: &mut [f32]) -> Result<f32>;
    /// One SGD step `p -= lr * dL/dp` (computed in `f32`, then rounded to `T`); returns
    /// the loss before it. A non-finite loss leaves the parameters unchanged and is
    /// returned as `Error::NonFiniteLoss`; so does an update that would store a
    /// non-finite parameter, as `Error::UpdateOverflow` (see [`update_overflow`]).
    fn train_step(&mut self, batch: Batch<'_, T>, lr: f32) -> Result<f32>;
}

/// Offsets of one dense layer in the flat parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerSlot {
    pub fan_in: usize,
    pub fan_out: usize,
    /// Start of `w` (`fan_in * fan_out` values).
    pub w: usize,
    /// Start of `b` (`fan_out` values).
    pub b: usize,
}

/// The slots of every layer for widths `dims = [features, hidden..., classes]`.
pub(crate) fn layer_slots(dims: &[usize]) -> impl Iterator<Item = LayerSlot> + '_ {
    let mut offset = 0;
    dims.windows(2).map(move |pair| {
        let slot = LayerSlot { fan_in: pair[0], fan_out: pair[1], w: offset, b: offset + pair[0] * pair[1] };
        offset = slot.b + slot.fan_out;
        slot
    })
}

/// The slot of layer `l` alone; a `const fn`, so that with constant widths it folds away.
#[inline(always)]
pub(crate) const fn layer_slot(dims: &[usize], l: usize) -> LayerSlot {
    let mut offset = 0;
    let mut k = 0;
    while k < l {
        offset += dims[k] * dims[k + 1] + dims[k + 1];
        k += 1;
    }
    LayerSlot { fan_in: dims[l], fan_out: dims[l + 1], w: offset, b: offset + dims[l] * dims[l + 1] }
}

/// The magnitude from which `p - lr * g` no longer fits storage `T` once rounded: `f32`'s
/// infinity, or 65520 for `f16` (halfway between 65504 and 2^16, which rounds to even,
/// i.e. to infinity). An update fits iff `|p - lr * g| < limit` (false for NaN too).
#[inline(always)]
pub(crate) fn update_limit<T: StorageElement>() -> f32 {
    if T::IS_F16 {
        65520.0
    } else {
        f32::INFINITY
    }
}

/// [`Error::UpdateOverflow`] for the parameter at flat index `k` of a model of widths
/// `dims`, named as `Engine::with_params` names parameters (`w0` row `i` column `o`, `b0`
/// row `o`).
#[cold]
#[inline(never)]
pub(crate) fn update_overflow<T: StorageElement>(dims: &[usize], k: usize) -> Error {
    let (what, row, column) = layer_slots(dims)
        .enumerate()
        .find_map(|(l, s)| {
            if k < s.b {
                k.checked_sub(s.w).map(|i| (format!("w{l}"), i % s.fan_in, i / s.fan_in))
            } else if k < s.b + s.fan_out {
                Some((format!("b{l}"), k - s.b, 0))
            } else {
                None
            }
        })
        .unwrap_or_else(|| (format!("parameter {k}"), 0, 0));
    Error::UpdateOverflow { what, row, column, storage: T::NAME, max: T::MAX }
}
