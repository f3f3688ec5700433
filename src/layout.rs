//! The flat layouts every part of tensorbridge shares, written once: the parameter buffer,
//! the activation and delta buffers, and the fixed-size working memory of the CPU core.
//!
//! Users of the CPU backend, the OpenCL backend, checkpoints, the code that `model!`
//! generates (through these `const fn`s) and the kernels' `#define`s all read their offsets
//! from here. This module imports nothing of the crate.
//!
//! - A batch `x` is `[batch x features]`, column-major (nalgebra's order): `x[f * B + r]`.
//! - Logits are `[batch x classes]`, column-major: `z[c * B + r]`.
//! - Parameters (and gradients) are one flat buffer, layer after layer: `w_l` (`[in x out]`,
//!   column-major: `w[o * in + i]`) then `b_l` (`[out]`).
//! - Layer outputs are one flat buffer, layer after layer, each `[batch x out_l]`
//!   column-major ([`output_offset`]); the OpenCL kernels put the batch in front of them
//!   ([`acts_len`]).

/// Offsets of one dense layer in the flat parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSlot {
    /// Inputs of the layer.
    pub fan_in: usize,
    /// Outputs of the layer.
    pub fan_out: usize,
    /// Start of `w` (`fan_in * fan_out` values).
    pub w: usize,
    /// Start of `b` (`fan_out` values).
    pub b: usize,
}

impl LayerSlot {
    /// One past the last value of `b`: where the next layer starts.
    pub const fn end(&self) -> usize {
        self.b + self.fan_out
    }
}

/// The slots of every layer for widths `dims = [features, hidden..., classes]`.
pub fn layer_slots(dims: &[usize]) -> impl Iterator<Item = LayerSlot> + '_ {
    (0..dims.len().saturating_sub(1)).map(move |l| layer_slot(dims, l))
}

/// The slot of layer `l` alone; a `const fn`, so that with constant widths it folds away.
#[inline(always)]
pub const fn layer_slot(dims: &[usize], l: usize) -> LayerSlot {
    let mut offset = 0;
    let mut k = 0;
    while k < l {
        offset += dims[k] * dims[k + 1] + dims[k + 1];
        k += 1;
    }
    LayerSlot { fan_in: dims[l], fan_out: dims[l + 1], w: offset, b: offset + dims[l] * dims[l + 1] }
}

/// Number of parameters of all layers together.
pub const fn param_count(dims: &[usize]) -> usize {
    if dims.len() < 2 {
        return 0;
    }
    layer_slot(dims, dims.len() - 2).end()
}

/// `batch * sum(widths[1..])`: every layer's output, in floats (the CPU's activations).
pub const fn outputs_len(dims: &[usize], batch: usize) -> usize {
    output_offset(dims, batch, dims.len().saturating_sub(1))
}

/// Start of layer `l`'s output among the layer outputs: `batch * sum(widths[1..=l])`
/// (layer `l` writes `batch * widths[l + 1]` floats there).
pub const fn output_offset(dims: &[usize], batch: usize, l: usize) -> usize {
    let mut sum = 0;
    let mut k = 1;
    while k <= l && k < dims.len() {
        sum += dims[k];
        k += 1;
    }
    batch * sum
}

/// `batch * sum(widths)`: the batch and every layer's output, in floats (the OpenCL
/// kernels' activation scratch: the batch first, then [`output_offset`]).
pub const fn acts_len(dims: &[usize], batch: usize) -> usize {
    batch * dims[0] + outputs_len(dims, batch)
}

/// `batch * max(widths[1..])`: one delta buffer, in floats.
pub const fn delta_len(dims: &[usize], batch: usize) -> usize {
    let mut widest = 0;
    let mut k = 1;
    while k < dims.len() {
        if dims[k] > widest {
            widest = dims[k];
        }
        k += 1;
    }
    batch * widest
}

/// The widest layer, the batch's features included.
pub const fn max_width(dims: &[usize]) -> usize {
    let mut widest = 0;
    let mut k = 0;
    while k < dims.len() {
        if dims[k] > widest {
            widest = dims[k];
        }
        k += 1;
    }
    widest
}

macro_rules! param_names {
    ($($l:literal)*) => {
        [$(concat!("w", $l), concat!("b", $l),)*]
    };
}

/// The names of the parameter tensors, `w0, b0, w1, b1, ...` (the fields of `<Name>Params`
/// and the tensors of a checkpoint), for the at most 65 layers a declaration allows.
pub const PARAM_NAMES: [&str; 130] = param_names!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
    33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62
    63 64
);

macro_rules! param_names_joined {
    ($($l:literal)*) => {
        concat!($("w", $l, "b", $l,)*)
    };
}

/// The names of layers 10 to 64 written one after the other (`w10b10w11b11...w64b64`),
/// from which [`param_name`] slices theirs: 330 bytes of text instead of 110 pointers in a
/// table. With a model's widths as constants the optimiser sees which names can occur, and a
/// model of fewer than ten layers links none of this text.
const PARAM_NAMES_JOINED: &str = param_names_joined!(
    10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
    40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64
);

/// The name of layer `l`'s weights (`w{l}`) or bias (`b{l}`), for the 65 layers a
/// declaration allows; `"parameter"` past them.
pub const fn param_name(l: usize, bias: bool) -> &'static str {
    // Layers 0-9 from a table of their own (a model's widths as constants reduce the
    // lookup to the names that can occur).
    const FIRST_TEN: [&str; 20] = param_names!(0 1 2 3 4 5 6 7 8 9);
    if l < 10 {
        return FIRST_TEN[2 * l + bias as usize];
    }
    // Layers 10-64 take 6 characters each (`w10b10`).
    let start = 6 * (l - 10) + 3 * bias as usize;
    let bytes = PARAM_NAMES_JOINED.as_bytes();
    let Some((_, tail)) = bytes.split_at_checked(start) else { return "parameter" };
    let Some((name, _)) = tail.split_at_checked(3) else { return "parameter" };
    // SAFETY: the joined names are ASCII, so every range of their bytes is valid UTF-8.
    unsafe { core::str::from_utf8_unchecked(name) }
}

/// Where flat index `k` lies: the parameter tensor's name (`w{l}` or `b{l}`), and the row
/// and column within it (a weight's input and output index; a bias's output index and 0).
/// Past the last layer: `("parameter", k, 0)`.
pub const fn locate(dims: &[usize], k: usize) -> (&'static str, usize, usize) {
    let mut l = 0;
    while l + 1 < dims.len() {
        let s = layer_slot(dims, l);
        if k >= s.w && k < s.b {
            return (param_name(l, false), (k - s.w) % s.fan_in, (k - s.w) / s.fan_in);
        }
        if k >= s.b && k < s.end() {
            return (param_name(l, true), k - s.b, 0);
        }
        l += 1;
    }
    ("parameter", k, 0)
}

mod sealed {
    pub trait Sealed {}
}

/// The CPU core's working memory for one model, of fixed size: gradients (`P`), layer
/// outputs (`A`), two delta buffers (`D` each) and the batch widened to `f32` plus room
/// for its transpose (`X`; often zero for `f32` storage). `model!` picks the sizes (through
/// this module's `const fn`s and `x32_len`); it holds no pointer, so a `no_std` user can
/// keep it in a `static` or on the stack.
#[derive(Clone)]
#[repr(C)]
pub struct Scratch<const P: usize, const A: usize, const D: usize, const X: usize> {
    grads: [f32; P],
    acts: [f32; A],
    delta: [f32; D],
    delta_below: [f32; D],
    x32: [f32; X],
}

/// The parameters of one model as one flat `f32` array (`P` values, the flat layout).
#[derive(Clone)]
#[repr(C)]
pub struct FlatParams<const P: usize>([f32; P]);

/// The parts of a [`Scratch`], borrowed separately.
pub struct ScratchParts<'a> {
    /// dL/dparameters, flat layout.
    pub grads: &'a mut [f32],
    /// Every layer's output, at [`output_offset`].
    pub acts: &'a mut [f32],
    /// dL/d(pre-activation) of the layer being back-propagated.
    pub delta: &'a mut [f32],
    /// The same for the layer below it.
    pub delta_below: &'a mut [f32],
    /// The batch widened to `f32` (`f16` storage), then room for its transpose (see
    /// `Model::fixed_product`).
    pub x32: &'a mut [f32],
}

/// Fixed-size `f32` buffers that are valid when all-zero: [`Scratch`] and [`FlatParams`].
/// Sealed: the CPU core relies on their sizes.
pub trait ZeroBuffer: sealed::Sealed + Clone + Send + Sync + 'static {
    /// Number of `f32` values.
    const LEN: usize;
    /// All zeros, by value (on the stack: meant for small models and `no_std` users).
    fn zeroed() -> Self;
}

impl<const P: usize, const A: usize, const D: usize, const X: usize> sealed::Sealed for Scratch<P, A, D, X> {}
impl<const P: usize, const A: usize, const D: usize, const X: usize> ZeroBuffer for Scratch<P, A, D, X> {
    const LEN: usize = P + A + 2 * D + X;
    fn zeroed() -> Self {
        Scratch { grads: [0.0; P], acts: [0.0; A], delta: [0.0; D], delta_below: [0.0; D], x32: [0.0; X] }
    }
}

impl<const P: usize, const A: usize, const D: usize, const X: usize> Scratch<P, A, D, X> {
    /// The parts, borrowed separately.
    pub fn parts(&mut self) -> ScratchParts<'_> {
        ScratchParts {
            grads: &mut self.grads,
            acts: &mut self.acts,
            delta: &mut self.delta,
            delta_below: &mut self.delta_below,
            x32: &mut self.x32,
        }
    }
}

impl<const P: usize> sealed::Sealed for FlatParams<P> {}
impl<const P: usize> ZeroBuffer for FlatParams<P> {
    const LEN: usize = P;
    fn zeroed() -> Self {
        FlatParams([0.0; P])
    }
}

impl<const P: usize> FlatParams<P> {
    /// The parameters given in the flat layout (see the [module docs](self)), in a `const`
    /// context too, so that a `static` of them is laid out at compile time (in flash on a
    /// microcontroller; see [`Weights`](crate::cpu::Weights)); `None` if a value is NaN or
    /// infinite.
    pub const fn finite(values: [f32; P]) -> Option<Self> {
        let mut k = 0;
        while k < P {
            // NaN - NaN and ∞ - ∞ are NaN, which is not equal to 0.
            #[allow(clippy::eq_op)]
            if values[k] - values[k] != 0.0 {
                return None;
            }
            k += 1;
        }
        Some(FlatParams(values))
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
    /// The values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// Access to a model's [`Scratch`] without naming its sizes.
pub trait ScratchSpace: ZeroBuffer {
    /// The parts, borrowed separately.
    fn parts(&mut self) -> ScratchParts<'_>;
}
impl<const P: usize, const A: usize, const D: usize, const X: usize> ScratchSpace for Scratch<P, A, D, X> {
    fn parts(&mut self) -> ScratchParts<'_> {
        Scratch::parts(self)
    }
}

/// Access to a model's [`FlatParams`] without naming its size.
pub trait FlatSpace: ZeroBuffer {
    /// The values.
    fn values(&self) -> &[f32];
    /// The values, mutably.
    fn values_mut(&mut self) -> &mut [f32];
}
impl<const P: usize> FlatSpace for FlatParams<P> {
    fn values(&self) -> &[f32] {
        &self.0
    }
    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_by_hand() {
        // 4 -> 3 -> 2: w0 [4x3] at 0, b0 at 12, w1 [3x2] at 15, b1 at 21, 23 values.
        let dims = [4, 3, 2];
        let slots: [LayerSlot; 2] = [layer_slot(&dims, 0), layer_slot(&dims, 1)];
        assert_eq!(slots[0], LayerSlot { fan_in: 4, fan_out: 3, w: 0, b: 12 });
        assert_eq!(slots[1], LayerSlot { fan_in: 3, fan_out: 2, w: 15, b: 21 });
        assert_eq!(param_count(&dims), 23);
        assert!(layer_slots(&dims).eq(slots));
        // batch 5: outputs 5*3 then 5*2; the OpenCL scratch puts 5*4 in front.
        assert_eq!((output_offset(&dims, 5, 0), output_offset(&dims, 5, 1)), (0, 15));
        assert_eq!(outputs_len(&dims, 5), 25);
        assert_eq!(acts_len(&dims, 5), 45);
        assert_eq!(delta_len(&dims, 5), 15);
        assert_eq!(max_width(&dims), 4);
        assert_eq!((param_name(0, false), param_name(1, true), param_name(64, true)), ("w0", "b1", "b64"));
        // Every name of the joined text is the table's, and past the last layer "parameter".
        for (k, name) in PARAM_NAMES.iter().enumerate() {
            assert_eq!(param_name(k / 2, k % 2 == 1), *name);
        }
        assert_eq!((param_name(65, false), param_name(usize::MAX / 8, true)), ("parameter", "parameter"));
        // w0 is [4 x 3] column-major: index 5 is input 1 of output 1; b1 starts at 21.
        assert_eq!(locate(&dims, 5), ("w0", 1, 1));
        assert_eq!(locate(&dims, 13), ("b0", 1, 0));
        assert_eq!(locate(&dims, 22), ("b1", 1, 0));
        assert_eq!(locate(&dims, 23), ("parameter", 23, 0));
    }
}
