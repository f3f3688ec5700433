//! Int8 inference: post-training quantisation of an MLP and its integer forward pass, in the
//! `no_std` core (no allocation; no floating point in the integer loops).
//!
//! `model!` generates `<Name>Int8` beside `<Name>Params`, an [`Int8Model`] for the
//! declaration; `model.quantize(&calibration)?` makes one from a trained model.
//!
//! # The scheme
//!
//! It follows the conventions of TensorFlow Lite and ONNX's QDQ form, so that a quantised
//! model means the same elsewhere. A real value `r` is represented by an integer code `q`
//! with a scale `s > 0` and a zero point `z`: `r ≈ s · (q − z)`.
//!
//! - **Weights**: `int8`, symmetric (`z = 0`), one scale per output channel (per column
//!   `o` of `w_l`): `s_w[o] = max_i |w[i, o]| / 127` (in `f32`; `1` for a column of zeros),
//!   `q = clamp(round(w / s_w[o]), −127, 127)` (the division in `f32`).
//! - **Activations**: `int8`, asymmetric, one scale and zero point per tensor: the input
//!   (tensor 0) and every hidden layer's output (tensor `l + 1`, after the ReLU). Their
//!   range `[lo, hi]` is the smallest and largest value the `f32` model computes for the
//!   tensor over every row of the calibration set, widened to hold 0.
//!   `s = (hi − lo) / 255` (in `f32`; `1` when `hi = lo = 0`),
//!   `z = clamp(round(−128 − lo / s), −128, 127)`.
//! - **The head's output** (the logits) is `int16`, asymmetric, per tensor, as TFLite's
//!   16x8 mode and ONNX's `int16` QDQ do: `s = (hi − lo) / 65535`,
//!   `z = clamp(round(−32768 − lo / s), −32768, 32767)`. With 256 steps over the logits'
//!   range, two close logits often fall on the same int8 code and the argmax takes the first
//!   (iris: one row of 150 changed class); 65536 steps keep the `f32` model's predictions. The `f32` forward pass of the calibration
//!   sums in a fixed order: `y[o] = b[o]`, then `y[o] = y[o] + x[i] · w[i, o]` for
//!   `i = 0, 1, ...` (no fused multiply-add), the order the NumPy reference follows.
//! - **Biases**: `int32` at the scale `s_x · s_w[o]`, zero point 0:
//!   `q_b = round(b / (s_x · s_w[o]))`, in `f64`.
//! - **The integer layer**: `acc[o] = q_b[o] + Σ_i (q_x[i] − z_x) · q_w[i, o]`, in `i32`
//!   (exact: quantising refuses a layer whose accumulator could overflow).
//! - **Requantisation**: the real multiplier `m = s_x · s_w[o] / s_y` (in `f64`) is written
//!   `m = M · 2^−n` with `M` a 31-bit integer in `[2^30, 2^31)` and `n` in `1..=62`
//!   (`frexp`: `m = f · 2^e`, `f` in `[0.5, 1)`, `M = round(f · 2^31)`, `n = 31 − e`; a
//!   rounding to `2^31` becomes `2^30` with `n − 1`; `m < 2^−32`, which moves no
//!   accumulator by half a step, becomes `M = 0`, `n = 62`). The output code is
//!   `q_y = clamp(z_y + round(acc · M / 2^n), lo, hi)` with the product in `i64` and one
//!   rounding, **half away from zero**; `[lo, hi]` is `[z_y, 127]` after a hidden layer
//!   (the ReLU: codes below the zero point are negative values) and `[−32768, 32767]` for
//!   the head. Saturation at both ends.
//! - **Rounding** is half away from zero everywhere (`round`); clamps saturate.
//! - **Input**: `q_x = clamp(round(x / s_x) + z_x, −128, 127)`, the division in `f32`.
//!   [`Int8Model::forward_codes`] takes codes directly, for a caller without floating point.
//! - **Output**: `predict` is the argmax of the head's `int16` codes (the first on ties),
//!   and the logits are dequantised, `s_y · (q_y − z_y)` in `f32`.
//!
//! Integer arithmetic is exact, so the codes are the same bits on every device: the CPU
//! core, the CPU backend and a microcontroller (the integer loop uses no floating point, so
//! a Cortex-M0, which has no FPU, runs it in integer instructions alone). With the standard
//! library on an x86-64 processor, a batch's pass runs with the output channels in a
//! vector's lanes (`quant::lanes`): sixteen with AVX-512 VNNI, eight with AVX2; the same
//! integers.
//!
//! Hidden layers are ReLU (the one activation of an MLP here). An int8 model has no training
//! calls: it cannot be trained (by type; quantise a trained `f32` model again instead).

//! # The int8 checkpoint
//!
//! One safetensors file, tensors named after the `f32` checkpoint's (`w0`, `b0`, ...), with
//! their quantisation parameters beside them:
//!
//! - `w{l}`: `I8`, `[in, out]` (row-major, as the `f32` checkpoint): the weight codes;
//! - `b{l}`: `I32`, `[out]`: the bias codes;
//! - `w{l}.scale`: `F32`, `[out]`: the weight scales, one per output channel;
//! - `w{l}.multiplier`: `I32`, `[out]`, and `w{l}.shift`: `U8`, `[out]`: the requantisation
//!   of layer `l`'s outputs;
//! - `a{t}.scale`: `F32`, `[]`, and `a{t}.zero_point`: `I8`, `[]` (`I16` for the head's
//!   output, the last): activation tensor `t` (`a0` the input, `a{l+1}` layer `l`'s
//!   output).
//!
//! Loading checks every name, dtype and shape, and that the multipliers and shifts are those
//! the scales give.

use crate::error::{Error, Result, Text};
use crate::model::{HostTensor, Model, StorageElement};

/// The largest code of a weight (the scheme is symmetric: `−127..=127`).
pub const WEIGHT_MAX: i32 = 127;

/// Round half away from zero, in `f32` (`libm`, the same in the `no_std` core).
#[inline]
fn round32(v: f32) -> f32 {
    libm::roundf(v)
}

/// Round half away from zero, in `f64`.
#[inline]
fn round64(v: f64) -> f64 {
    libm::round(v)
}

/// The scale and zero point of an activation tensor of range `[lo, hi]` with codes
/// `qmin..=qmax` (`−128..=127` for `int8`, `−32768..=32767` for the head's `int16`; see
/// the module docs); the range is widened to hold 0.
pub fn activation_params(lo: f32, hi: f32, qmin: i32, qmax: i32) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let mut scale = (hi - lo) / (qmax - qmin) as f32;
    if scale == 0.0 {
        scale = 1.0;
    }
    let zero = round32(qmin as f32 - lo / scale);
    (scale, zero.clamp(qmin as f32, qmax as f32) as i32)
}

/// The code range of activation tensor `t` of a model with `nt` tensors: `int8`, or
/// `int16` for the head's output (the last).
#[inline]
pub const fn code_range(t: usize, nt: usize) -> (i32, i32) {
    if t + 1 == nt {
        (i16::MIN as i32, i16::MAX as i32)
    } else {
        (-128, 127)
    }
}

/// The fixed-point form `(M, n)` of a real multiplier `m` (see the module docs), or `None`
/// for `m >= 2^30` or a non-finite or negative `m`.
pub fn multiplier(m: f64) -> Option<(i32, u8)> {
    if !m.is_finite() || m < 0.0 {
        return None;
    }
    if m == 0.0 {
        return Some((0, 62));
    }
    let (f, e) = libm::frexp(m);
    let mut mult = round64(f * 2147483648.0) as i64;
    let mut shift = 31 - e;
    if mult == 1 << 31 {
        mult = 1 << 30;
        shift -= 1;
    }
    if shift < 1 {
        return None;
    }
    if shift > 62 {
        return Some((0, 62));
    }
    Some((mult as i32, shift as u8))
}

/// `clamp(zero + round(acc · mult / 2^shift), lo, hi)`, rounding half away from zero; the
/// integer requantisation of one accumulator. `shift` is in `1..=62`.
#[inline(always)]
pub fn requantize(acc: i32, mult: i32, shift: u8, zero: i32, lo: i32, hi: i32) -> i32 {
    let p = acc as i64 * mult as i64;
    let half = 1i64 << (shift - 1);
    // Half away from zero without a branch: for p >= 0, floor((p + half) / 2^n); for p < 0,
    // -floor((half - p) / 2^n) = ceil((p - half) / 2^n) = floor((p + half - 1) / 2^n).
    // `p >> 63` is 0 or -1. No overflow: |p| < 2^62 and n >= 1.
    let r = (p + half + (p >> 63)) >> shift;
    // |r| < 2^31.
    (r + zero as i64).clamp(lo as i64, hi as i64) as i32
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod lanes;

// `cpu_predict` keeps a running best per row of a block: the vector pass's blocks are
// the scalar pass's.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
const _: () = assert!(lanes::ROWS == BLOCK_ROWS);

#[cfg(target_arch = "arm")]
mod arm;

/// Rows of a block of the integer forward pass: each weight is loaded once for this many
/// rows. Four on the host (with two columns, eight vector sums in registers); on a
/// microcontroller four or two (see `quant::arm`), one channel at a time.
pub(crate) const BLOCK_ROWS: usize = 4;

/// Output channels of a block of the integer forward pass on the host: each input code is
/// loaded once for this many channels (a microcontroller's kernels take one channel of
/// four or two rows, `quant::arm`).
#[cfg(not(target_arch = "arm"))]
const BLOCK_COLS: usize = 2;

/// One row's input codes minus their zero point (or a hidden layer's), the operands of the
/// integer products on the host. Word-aligned.
#[cfg(not(target_arch = "arm"))]
#[derive(Clone, Copy)]
#[repr(C, align(4))]
struct Centred<const MAXW: usize>([i16; MAXW]);

/// The requantisation of one output channel, [`requantize`]'s integers in 32-bit
/// arithmetic (one 32 x 32 -> 64-bit multiply, of which only the high word is used):
/// prepared once per channel for all the rows of a call.
///
/// `requantize` rounds `p = acc · M / 2^n` half away from zero, that is
/// `sign(acc) · r(|acc|)` with `r(u) = floor((u · M + 2^(n−1)) / 2^n)`. With `N ≥ 33`,
/// `u · M + 2^(N−1) = (hi + 2^(N−33)) · 2^32 + lo` (`hi`, `lo` the words of `u · M`), and
/// `lo < 2^32` cannot carry into the quotient, so `r(u) = (hi + 2^(N−33)) >> (N − 32)`.
/// For `n ≥ 33` that is the form (`|acc| < 2^31` and `M < 2^31`: `hi < 2^30`, no
/// overflow). For `3 ≤ n < 33`, `u` is first capped at `2^(n−2) − 1` and shifted left by
/// `k = 33 − n` (below `2^31`), so that `N = 33`: the cap changes nothing, since already
/// `r(2^(n−2) − 1) ≥ 2^27` saturates every output (`M ≥ 2^30`). For `n < 3`
/// (`m ≥ 2^28`), every `u ≥ 1` saturates and `u = 0` gives 0, which `M = 2^30, n = 3`
/// gives as well. `tests::fast_requantisation_equals_requantize` checks the two against
/// each other.
#[derive(Clone, Copy)]
struct Requant {
    /// The largest `u` kept (larger ones saturate anyway).
    cap: u32,
    /// The left shift `k`.
    k: u32,
    /// `M`.
    mult: u32,
    /// The rounding term `2^(N−33)`.
    round: u32,
    /// The right shift `N − 32`.
    shift: u32,
}

impl Requant {
    /// The form of the multiplier `mult` and shift `shift` (as [`multiplier`] gives them:
    /// `mult` 0 or in `[2^30, 2^31)`, `shift` in `1..=62`).
    #[inline(always)]
    fn new(mult: i32, shift: u8) -> Self {
        let (mult, n) = if shift < 3 { (1u32 << 30, 3u32) } else { (mult as u32, u32::from(shift)) };
        if n >= 33 {
            Self { cap: u32::MAX, k: 0, mult, round: 1 << (n - 33), shift: n - 32 }
        } else {
            Self { cap: (1 << (n - 2)) - 1, k: 33 - n, mult, round: 1, shift: 1 }
        }
    }

    /// `r(u)` of a magnitude `u = |acc|` (see the type's docs).
    #[inline(always)]
    fn magnitude(&self, u: u32) -> u32 {
        // SAFETY: `Requant::new`, the type's one constructor (its fields are private to
        // this module, which writes them nowhere else), makes `k = 0` or `33 − n <= 30`
        // (`n >= 3`) and `shift = 1` or `n − 32 <= 30` (`n <= 62`, or 3 where a shift
        // below 3 is replaced). Told so, the compiler drops the masks that Rust's shifts
        // put on their amounts (two instructions each on a Cortex-M0).
        unsafe { core::hint::assert_unchecked(self.k < 32 && self.shift < 32) };
        (mul_high(u.min(self.cap) << self.k, self.mult) + self.round) >> self.shift
    }

    /// The head's code of the sum `acc`, zero point `z`: `clamp(z ± r(|acc|))`.
    #[inline(always)]
    fn head(&self, acc: i32, z: i32) -> i16 {
        let m = self.magnitude(acc.unsigned_abs()) as i32;
        let y = if acc < 0 { z - m } else { z + m };
        y.clamp(-32768, 32767) as i16
    }

    /// A hidden layer's code of the sum `acc` minus its zero point `z`:
    /// `min(r(acc), 127 − z)`, 0 for a negative sum (the ReLU).
    #[inline(always)]
    fn hidden(&self, acc: i32, z: i32) -> i16 {
        // A sum of 0 or less (about half of a ReLU layer's) gives 0, as `r(0) = 0` does:
        // on a microcontroller it skips the multiply; the host's vector loops take the
        // select.
        #[cfg(target_arch = "arm")]
        if acc <= 0 {
            return 0;
        }
        self.magnitude(acc.max(0) as u32).min((127 - z) as u32) as i16
    }
}

/// Requantises the sums `acc` of output channel `o` of a block's rows with `q`: for the
/// head, its codes `clamp(z ± r(|acc|))` go to `sink(row, o, code)`; for a hidden layer,
/// the codes minus their zero point `z`, `min(r(acc), 127 − z)` (0 for a negative sum: the
/// ReLU), go to `next`, the next layer's operands.
#[cfg(not(target_arch = "arm"))]
#[inline(always)]
fn store<const R: usize, const MAXW: usize>(
    q: &Requant,
    acc: &[i32; R],
    head: bool,
    z: i32,
    o: usize,
    next: &mut [Centred<MAXW>; R],
    sink: &mut impl FnMut(usize, usize, i16),
) {
    if head {
        for (r, &v) in acc.iter().enumerate() {
            sink(r, o, q.head(v, z));
        }
    } else {
        for (row, &v) in next.iter_mut().zip(acc) {
            row.0[o] = q.hidden(v, z);
        }
    }
}

/// The high word of `a · b`, for `a, b < 2^31`.
#[cfg(not(tb_arm_v6m))]
#[inline(always)]
fn mul_high(a: u32, b: u32) -> u32 {
    ((u64::from(a) * u64::from(b)) >> 32) as u32
}

/// The high word of `a · b` on a Cortex-M0: [`mul_high_halves`].
#[cfg(tb_arm_v6m)]
#[inline(always)]
fn mul_high(a: u32, b: u32) -> u32 {
    mul_high_halves(a, b)
}

/// The high word of `a · b`, for `a, b < 2^31`, from four 16 x 16-bit products: a Cortex-M0
/// has no 32 x 32 -> 64-bit multiply, and the library's 64 x 64-bit one costs a call.
/// With `a = ah · 2^16 + al` and `b = bh · 2^16 + bl` (`ah, bh < 2^15`), the middle sum
/// `ah · bl + al · bh + (al · bl >> 16)` is below `2^32`, and
/// `floor(a · b / 2^32) = ah · bh + (middle >> 16)`.
#[cfg(any(test, tb_arm_v6m))]
#[inline(always)]
fn mul_high_halves(a: u32, b: u32) -> u32 {
    let (ah, al, bh, bl) = (a >> 16, a & 0xFFFF, b >> 16, b & 0xFFFF);
    let middle = ah * bl + al * bh + ((al * bl) >> 16);
    ah * bh + (middle >> 16)
}

/// The sums `bias[c] + Σ_i a[r][i] · col[c][i]` of `R` rows by `C` output channels: each
/// weight is loaded once for the `R` rows, each activation once for the `C` channels, and
/// the `R x C` sums stay in registers. On the host the loop over `i` vectorises into
/// widening multiply-adds (`pmaddwd`, `vpdpwssd`). The quantiser bounds every sum within
/// `i32`, so the wrapping never happens.
#[cfg(not(target_arch = "arm"))]
#[inline(always)]
fn products<const R: usize, const C: usize, const MAXW: usize>(
    a: &[Centred<MAXW>; R],
    col: [&[i8]; C],
    bias: [i32; C],
) -> [[i32; C]; R] {
    let n = col[0].len();
    let a: [&[i16]; R] = core::array::from_fn(|r| &a[r].0[..n]);
    let col: [&[i8]; C] = core::array::from_fn(|c| &col[c][..n]);
    let mut acc = [[0i32; C]; R];
    for i in 0..n {
        for r in 0..R {
            let x = i32::from(a[r][i]);
            for c in 0..C {
                acc[r][c] = acc[r][c].wrapping_add(x * i32::from(col[c][i]));
            }
        }
    }
    for row in &mut acc {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = v.wrapping_add(b);
        }
    }
    acc
}

/// The products' instruction set, a const argument of the forward pass: plain Rust (which
/// the compiler vectorises as it can), or intrinsics, only in code compiled for them.
const PLAIN: u8 = 0;
/// AVX2: [`products_avx2`], only in `rows_avx2`.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
const AVX2: u8 = 1;

/// [`products`], or with `SIMD` [`products_avx2`].
#[cfg(not(target_arch = "arm"))]
#[inline(always)]
fn products_any<const R: usize, const C: usize, const MAXW: usize, const SIMD: u8>(
    a: &[Centred<MAXW>; R],
    col: [&[i8]; C],
    bias: [i32; C],
) -> [[i32; C]; R] {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if SIMD == AVX2 {
        // SAFETY: `SIMD` is AVX2 only in `rows_avx2`, which runs on processors with AVX2
        // (its caller checks) and into which this function and `products_avx2` inline.
        return unsafe { products_avx2(a, col, bias) };
    }
    products(a, col, bias)
}

/// [`products`] with AVX2's widening multiply-add: per 16 inputs, each channel's weights
/// sign-extended to 16 bits once (`vpmovsxbw`) for the `R` rows, each row's 16 operands
/// loaded once for the `C` channels, and one `vpmaddwd` (16 products, added in pairs into
/// 8 sums of 32 bits: exact, `|2 · 255 · 127| < 2^31`) with one `vpaddd` per row and
/// channel; the `R x C` vector sums stay in registers. The rest of the inputs one by one.
/// The same sums (`vpaddd` wraps as `wrapping_add`).
///
/// # Safety
/// The processor must have AVX2, and this must be inlined into code compiled for it.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline(always)]
unsafe fn products_avx2<const R: usize, const C: usize, const MAXW: usize>(
    a: &[Centred<MAXW>; R],
    col: [&[i8]; C],
    bias: [i32; C],
) -> [[i32; C]; R] {
    use core::arch::x86_64::*;
    let n = col[0].len();
    let col: [&[i8]; C] = core::array::from_fn(|c| &col[c][..n]);
    let rows: [&[i16]; R] = core::array::from_fn(|r| &a[r].0[..n]);
    let whole = n & !15;
    let mut acc = [[_mm256_setzero_si256(); C]; R];
    let mut i = 0;
    while i < whole {
        // SAFETY: `i + 16 <= whole <= n`, and every `col[c]` and `rows[r]` holds `n`
        // elements (sliced above): the 16 bytes and the 16 `i16` read are in bounds
        // (unaligned loads); AVX2 is present (the function's contract).
        unsafe {
            let w: [__m256i; C] =
                core::array::from_fn(|c| _mm256_cvtepi8_epi16(_mm_loadu_si128(col[c].as_ptr().add(i).cast())));
            for r in 0..R {
                let x = _mm256_loadu_si256(rows[r].as_ptr().add(i).cast());
                for c in 0..C {
                    acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(x, w[c]));
                }
            }
        }
        i += 16;
    }
    let mut out = [[0i32; C]; R];
    for c in 0..C {
        // The eight lanes of each sum added up, four rows at a time: two rounds of pairwise
        // additions (`vphaddd`) leave row r's halves in lanes r and r + 4.
        let mut r = 0;
        while r + 4 <= R {
            let mut lanes = [0i32; 4];
            // SAFETY: AVX2 is present (the function's contract); `lanes` holds 16 bytes
            // (an unaligned store).
            unsafe {
                let t01 = _mm256_hadd_epi32(acc[r][c], acc[r + 1][c]);
                let t23 = _mm256_hadd_epi32(acc[r + 2][c], acc[r + 3][c]);
                let t = _mm256_hadd_epi32(t01, t23);
                let sum = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
                _mm_storeu_si128(lanes.as_mut_ptr().cast(), sum);
            }
            for k in 0..4 {
                out[r + k][c] = lanes[k];
            }
            r += 4;
        }
        while r < R {
            let mut lanes = [0i32; 8];
            // SAFETY: AVX2 is present; `lanes` holds 32 bytes (an unaligned store).
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc[r][c]) };
            out[r][c] = lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v));
            r += 1;
        }
        for (r, row) in rows.iter().enumerate() {
            let mut s = out[r][c].wrapping_add(bias[c]);
            for k in whole..n {
                s = s.wrapping_add(i32::from(row[k]) * i32::from(col[c][k]));
            }
            out[r][c] = s;
        }
    }
    out
}

/// An int8 MLP: the quantised parameters of model `M`, and its integer forward pass.
///
/// The const arguments are sizes that `model!` fills in: `NW` weights (all layers), `NC`
/// output channels (the widths of every layer but the input), `NT` activation tensors
/// (the layers plus one), `MAXW` the widest layer. Every array is inline: in the `no_std`
/// core, no allocation.
///
/// Layout: layer after layer, `weights` holds `w_l` column by column (`w[o * fan_in + i]`,
/// the flat layout of [`layout`](crate::layout)); the per-channel arrays hold layer 0's
/// outputs, then layer 1's, ...
pub struct Int8Model<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> {
    /// Weight codes, `−127..=127`.
    pub(crate) weights: [i8; NW],
    /// Bias codes, at the scale `s_x · s_w[o]`.
    pub(crate) biases: [i32; NC],
    /// Weight scales, one per output channel.
    pub(crate) weight_scales: [f32; NC],
    /// Requantisation multipliers `M`, one per output channel.
    pub(crate) multipliers: [i32; NC],
    /// Requantisation shifts `n`, one per output channel.
    pub(crate) shifts: [u8; NC],
    /// Activation scales: the input, then every layer's output.
    pub(crate) act_scales: [f32; NT],
    /// Activation zero points, as `act_scales` (`int8` range; `int16` for the head).
    pub(crate) act_zeros: [i16; NT],
    /// With `std`, where the model runs: its device and, on OpenCL, its parameters there and
    /// its kernel (a type of the layers above, which this one does not name); `None` on the
    /// CPU.
    #[cfg(feature = "std")]
    pub(crate) placed: Option<std::sync::Arc<dyn core::any::Any + Send + Sync>>,
    /// The model regrouped for the host's vector pass (AVX-512 VNNI), made at its first
    /// use.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    pub(crate) lanes: std::sync::OnceLock<lanes::Prepared>,
    pub(crate) model: core::marker::PhantomData<fn() -> M>,
}

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Clone
    for Int8Model<M, NW, NC, NT, MAXW>
{
    fn clone(&self) -> Self {
        Self {
            weights: self.weights,
            biases: self.biases,
            weight_scales: self.weight_scales,
            multipliers: self.multipliers,
            shifts: self.shifts,
            act_scales: self.act_scales,
            act_zeros: self.act_zeros,
            #[cfg(feature = "std")]
            placed: self.placed.clone(),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            lanes: std::sync::OnceLock::new(),
            model: core::marker::PhantomData,
        }
    }
}

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> core::fmt::Debug
    for Int8Model<M, NW, NC, NT, MAXW>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Int8Model")
            .field("model", &M::NAME)
            .field("layers", &M::LAYERS)
            .field("act_scales", &&self.act_scales[..])
            .field("act_zeros", &&self.act_zeros[..])
            .finish_non_exhaustive()
    }
}

/// Why a model cannot be quantised, as an error.
fn refuse(reason: Text) -> Error {
    Error::Quantize { reason }
}

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// Parameter bytes: the weight and bias codes, the weight scales, the multipliers and
    /// shifts, and the activations' scales and zero points (one byte each, two for the
    /// head's).
    pub const PARAM_BYTES: usize = NW + NC * (4 + 4 + 4 + 1) + NT * (4 + 1) + 1;

    /// Checks that the const arguments fit `M` (they do for the `model!` types).
    const SIZES_FIT: () = {
        let dims = M::LAYERS;
        let (mut nw, mut nc, mut maxw, mut l) = (0, 0, 0, 0);
        while l + 1 < dims.len() {
            nw += dims[l] * dims[l + 1];
            nc += dims[l + 1];
            l += 1;
        }
        let mut k = 0;
        while k < dims.len() {
            if dims[k] > maxw {
                maxw = dims[k];
            }
            k += 1;
        }
        assert!(nw == NW && nc == NC && dims.len() == NT && maxw == MAXW, "Int8Model sizes do not fit the model");
    };

    /// Quantises the `f32` (or `f16`) parameters `flat` (in the flat layout of
    /// [`Params::write_flat`](crate::Params::write_flat)) with the activation ranges of
    /// `calibration`, a slice of input batches (every row counts). See the module docs for
    /// the scheme. Used by the `quantize` method that `model!` generates.
    ///
    /// # Errors
    /// [`Error::Quantize`] for an empty calibration set, a layer whose integer accumulator
    /// could overflow `i32` or a bias that does not fit one, or a multiplier of `2^30` or
    /// more; [`Error::NonFinite`] for a NaN or infinite parameter or calibration value (or
    /// an activation that overflows).
    pub fn quantize_flat(flat: &[M::Storage], calibration: &[M::Input]) -> Result<Self> {
        let () = Self::SIZES_FIT;
        let dims = M::LAYERS;
        crate::check::params(dims, flat)?;
        // The integer pass clamps at the zero point: ReLU's. Another activation would need
        // a lookup table per layer, which this scheme does not have.
        if M::ACTIVATIONS.iter().any(|&a| a != crate::math::activation::Activation::Relu) {
            return Err(refuse(Text::from(
                "int8 quantisation supports ReLU hidden layers only; this model declares another activation",
            )));
        }
        if calibration.is_empty() {
            return Err(refuse(Text::from("the calibration set holds no batch")));
        }
        let mut lo = [0.0f32; NT];
        let mut hi = [0.0f32; NT];
        let (mut a, mut y) = ([0.0f32; MAXW], [0.0f32; MAXW]);
        for x in calibration {
            let x = x.as_flat();
            crate::check::finite("calibration input", x, M::BATCH)?;
            for r in 0..M::BATCH {
                for (i, v) in a[..dims[0]].iter_mut().enumerate() {
                    *v = x[i * M::BATCH + r].to_f32();
                }
                widen(&mut lo[0], &mut hi[0], &a[..dims[0]]);
                let mut offset = 0;
                for l in 0..dims.len() - 1 {
                    let (fan_in, fan_out) = (dims[l], dims[l + 1]);
                    let (w, b) = (offset, offset + fan_in * fan_out);
                    for o in 0..fan_out {
                        let mut acc = flat[b + o].to_f32();
                        for i in 0..fan_in {
                            acc += a[i] * flat[w + o * fan_in + i].to_f32();
                        }
                        y[o] = if l + 2 < dims.len() { acc.max(0.0) } else { acc };
                    }
                    if !y[..fan_out].iter().all(|v| v.is_finite()) {
                        return Err(Error::NonFinite {
                            what: Text::from("an activation of the calibration set"),
                            row: r,
                            column: l,
                            value: y[..fan_out].iter().copied().find(|v| !v.is_finite()).unwrap_or(f32::NAN),
                        });
                    }
                    widen(&mut lo[l + 1], &mut hi[l + 1], &y[..fan_out]);
                    a[..fan_out].copy_from_slice(&y[..fan_out]);
                    offset = b + fan_out;
                }
            }
        }
        let mut act_scales = [0.0f32; NT];
        let mut act_zeros = [0i16; NT];
        for t in 0..NT {
            let (qmin, qmax) = code_range(t, NT);
            let (s, z) = activation_params(lo[t], hi[t], qmin, qmax);
            act_scales[t] = s;
            act_zeros[t] = z as i16;
        }
        let mut weights = [0i8; NW];
        let mut weight_scales = [0.0f32; NC];
        let mut biases = [0i32; NC];
        let (mut offset, mut wq, mut channel) = (0, 0, 0);
        for l in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let b = offset + fan_in * fan_out;
            for o in 0..fan_out {
                let column = &flat[offset + o * fan_in..offset + (o + 1) * fan_in];
                let max = column.iter().fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
                let mut s = max / WEIGHT_MAX as f32;
                if s == 0.0 {
                    s = 1.0;
                }
                for (q, v) in weights[wq + o * fan_in..wq + (o + 1) * fan_in].iter_mut().zip(column) {
                    *q = round32(v.to_f32() / s).clamp(-127.0, 127.0) as i8;
                }
                weight_scales[channel + o] = s;
                let qb = round64(flat[b + o].to_f32() as f64 / (act_scales[l] as f64 * s as f64));
                biases[channel + o] = bias_code(qb, fan_in)?;
            }
            wq += fan_in * fan_out;
            channel += fan_out;
            offset = b + fan_out;
        }
        let (multipliers, shifts) = multipliers_of::<NC, NT>(dims, &weight_scales, &act_scales)?;
        Ok(Self {
            weights,
            biases,
            weight_scales,
            multipliers,
            shifts,
            act_scales,
            act_zeros,
            #[cfg(feature = "std")]
            placed: None,
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            lanes: std::sync::OnceLock::new(),
            model: core::marker::PhantomData,
        })
    }

    /// The integer forward pass of one row: `input` holds the row's `FEATURES` input codes,
    /// `out` receives the head's `CLASSES` output codes (`int16`). No floating point, no
    /// allocation. For several rows, [`Int8Model::forward_rows`] is faster.
    ///
    /// # Errors
    /// [`Error::Quantize`] if `input` holds fewer than `FEATURES` codes or `out` has room
    /// for fewer than `CLASSES`.
    #[inline]
    pub fn forward_codes(&self, input: &[i8], out: &mut [i16]) -> Result<()> {
        if input.len() < M::FEATURES || out.len() < M::CLASSES {
            return Err(refuse(Text::from(
                "forward_codes takes FEATURES input codes and room for CLASSES output codes",
            )));
        }
        self.forward_codes_inline(input, out);
        Ok(())
    }

    /// The integer forward pass of several rows, a block of rows at a time (every weight is
    /// loaded once for the block's rows): `input` holds the rows' input codes one row after
    /// another (`FEATURES` each), `out` receives the head's codes of every row, one row
    /// after another (`CLASSES` each). The rows are `input.len() / FEATURES`. The same
    /// integers as [`Int8Model::forward_codes`] row by row. No floating point, no
    /// allocation.
    ///
    /// # Errors
    /// [`Error::Quantize`] if `input`'s length is not a multiple of `FEATURES` or `out`
    /// has room for fewer than `CLASSES` codes a row.
    pub fn forward_rows(&self, input: &[i8], out: &mut [i16]) -> Result<()> {
        let (f, c) = (M::FEATURES, M::CLASSES);
        let rows = input.len() / f;
        if !input.len().is_multiple_of(f) || out.len() < rows * c {
            return Err(refuse(Text::from(
                "forward_rows takes whole rows of FEATURES input codes and room for CLASSES output codes a row",
            )));
        }
        self.rows(rows, |r, i| input[r * f + i], |r, k, q| out[r * c + k] = q);
        Ok(())
    }

    /// [`Int8Model::forward_codes`], inlined into its caller (which may be compiled for
    /// wider vector instructions), for callers whose `input` holds at least `FEATURES`
    /// codes and whose `out` has room for `CLASSES` (shorter ones panic on a slice bound).
    #[inline(always)]
    pub(crate) fn forward_codes_inline(&self, input: &[i8], out: &mut [i16]) {
        #[cfg(not(target_arch = "arm"))]
        self.block::<1, PLAIN>(&self.requants(), |_, i| input[i], |_, k, q| out[k] = q);
        #[cfg(target_arch = "arm")]
        self.block(&mut [arm::Operands::<2, 1, MAXW>::new(); 2], 1, |_, i| input[i], |_, k, q| out[k] = q);
    }

    /// The forward pass of `rows` rows, [`BLOCK_ROWS`] at a time, then the rest one by
    /// one: `code(r, i)` is input code `i` of row `r`, `sink(r, k, q)` takes the head's
    /// code `k` of row `r`. Inlined into its caller (which may be compiled for wider vector
    /// instructions).
    #[cfg(not(target_arch = "arm"))]
    #[inline(always)]
    pub(crate) fn rows_inline<const SIMD: u8>(
        &self,
        rows: usize,
        code: impl Fn(usize, usize) -> i8,
        mut sink: impl FnMut(usize, usize, i16),
    ) {
        let q = self.requants();
        let mut r0 = 0;
        while r0 + BLOCK_ROWS <= rows {
            self.block::<BLOCK_ROWS, SIMD>(&q, |r, i| code(r0 + r, i), |r, k, q| sink(r0 + r, k, q));
            r0 += BLOCK_ROWS;
        }
        while r0 < rows {
            self.block::<1, SIMD>(&q, |_, i| code(r0, i), |_, k, q| sink(r0, k, q));
            r0 += 1;
        }
    }

    /// The requantisation of every output channel, prepared once for all rows (on the
    /// host; a microcontroller prepares a channel's as its block reaches it, which keeps
    /// `NC` of them off its stack).
    #[cfg(not(target_arch = "arm"))]
    #[inline(always)]
    fn requants(&self) -> [Requant; NC] {
        core::array::from_fn(|k| Requant::new(self.multipliers[k], self.shifts[k]))
    }

    /// The forward pass of `R` rows (see [`Int8Model::rows_inline`]): layer after layer,
    /// the products of [`BLOCK_COLS`] output channels at a time for all `R` rows (each
    /// weight loaded once for the `R` rows), then each channel's requantisation
    /// (`requants`, prepared once for all rows).
    #[cfg(not(target_arch = "arm"))]
    #[inline(always)]
    fn block<const R: usize, const SIMD: u8>(
        &self,
        requants: &[Requant; NC],
        code: impl Fn(usize, usize) -> i8,
        mut sink: impl FnMut(usize, usize, i16),
    ) {
        let dims = M::LAYERS;
        let mut a = [Centred([0i16; MAXW]); R];
        let mut next = [Centred([0i16; MAXW]); R];
        let f = dims[0];
        let z_in = self.act_zeros[0];
        for (r, row) in a.iter_mut().enumerate() {
            for i in 0..f {
                row.0[i] = code(r, i) as i16 - z_in;
            }
        }
        let (mut w, mut channel) = (0, 0);
        for l in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let weights = &self.weights[w..w + fan_in * fan_out];
            let z = self.act_zeros[l + 1] as i32;
            let head = l + 2 == dims.len();
            let mut o = 0;
            while o + BLOCK_COLS <= fan_out {
                let cols: [&[i8]; BLOCK_COLS] =
                    core::array::from_fn(|c| &weights[(o + c) * fan_in..(o + c + 1) * fan_in]);
                let bias: [i32; BLOCK_COLS] = core::array::from_fn(|c| self.biases[channel + o + c]);
                let acc = products_any::<R, BLOCK_COLS, MAXW, SIMD>(&a, cols, bias);
                // `c` picks a column of every row's sums.
                #[allow(clippy::needless_range_loop)]
                for c in 0..BLOCK_COLS {
                    let q = requants[channel + o + c];
                    let sums = core::array::from_fn(|r| acc[r][c]);
                    store(&q, &sums, head, z, o + c, &mut next, &mut sink);
                }
                o += BLOCK_COLS;
            }
            while o < fan_out {
                let col = &weights[o * fan_in..(o + 1) * fan_in];
                let acc = products_any::<R, 1, MAXW, SIMD>(&a, [col], [self.biases[channel + o]]);
                let q = requants[channel + o];
                let sums = core::array::from_fn(|r| acc[r][0]);
                store(&q, &sums, head, z, o, &mut next, &mut sink);
                o += 1;
            }
            if !head {
                core::mem::swap(&mut a, &mut next);
            }
            w += fan_in * fan_out;
            channel += fan_out;
        }
    }

    /// [`Int8Model::rows_inline`] on a microcontroller: blocks of four rows where
    /// [`arm::quads`] allows (the model's widest layer within the stack it sets), then
    /// blocks of two (a last single row runs as two equal rows, the second's codes dropped).
    #[cfg(target_arch = "arm")]
    #[inline(always)]
    pub(crate) fn rows_inline<const SIMD: u8>(
        &self,
        rows: usize,
        code: impl Fn(usize, usize) -> i8,
        mut sink: impl FnMut(usize, usize, i16),
    ) {
        let mut r0 = 0;
        #[cfg(any(tb_arm_dsp, tb_arm_v6m))]
        if const { arm::quads(MAXW) } && rows >= 4 {
            let mut ops = [arm::Operands::<4, { arm::QUAD_WORDS }, MAXW>::new(); 2];
            while r0 + 4 <= rows {
                self.block(&mut ops, 4, |r, i| code(r0 + r, i), |r, k, q| sink(r0 + r, k, q));
                r0 += 4;
            }
        }
        if r0 < rows {
            let mut ops = [arm::Operands::<2, 1, MAXW>::new(); 2];
            while r0 < rows {
                let n = (rows - r0).min(2);
                self.block(&mut ops, n, |r, i| code(r0 + r, i), |r, k, q| sink(r0 + r, k, q));
                r0 += n;
            }
        }
    }

    /// The forward pass of a block of `rows` rows (1 to `K`; the rows past them repeat the
    /// last, their codes dropped) on a microcontroller, a channel at a time for the block's
    /// `K` rows ([`arm::Operands::products`], `N` words an input), its `K` sums requantised
    /// at once into the next layer's operands (or, for the head, to `sink`). `ops` holds a
    /// layer's operands and the next's, in turn. Each channel's [`Requant`] is prepared as
    /// the channel comes (a few instructions; an array of all of them would take 20 bytes
    /// of stack a channel).
    #[cfg(target_arch = "arm")]
    #[inline(always)]
    fn block<const K: usize, const N: usize>(
        &self,
        ops: &mut [arm::Operands<K, N, MAXW>; 2],
        rows: usize,
        code: impl Fn(usize, usize) -> i8,
        mut sink: impl FnMut(usize, usize, i16),
    ) {
        let dims = M::LAYERS;
        let last = rows.clamp(1, K) - 1;
        let f = dims[0];
        let z_in = self.act_zeros[0];
        for i in 0..f {
            ops[0].put(i, f, |r| code(r.min(last), i) as i16 - z_in);
        }
        let (mut w, mut channel) = (0, 0);
        for l in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let weights = &self.weights[w..w + fan_in * fan_out];
            let biases = &self.biases[channel..channel + fan_out];
            let requants =
                self.multipliers[channel..channel + fan_out].iter().zip(&self.shifts[channel..channel + fan_out]);
            let z = self.act_zeros[l + 1] as i32;
            let head = l + 2 == dims.len();
            let [even, odd] = ops;
            let (a, next) = if l % 2 == 0 { (&*even, odd) } else { (&*odd, even) };
            let channels = weights.chunks_exact(fan_in).zip(biases).zip(requants);
            for (o, ((column, &bias), (&mult, &shift))) in channels.enumerate() {
                let s = a.products(column, bias);
                let q = Requant::new(mult, shift);
                if head {
                    arm::each::<K>(|r| {
                        if r <= last {
                            sink(r, o, q.head(s[r], z));
                        }
                    });
                } else {
                    next.put(o, fan_out, |r| q.hidden(s[r], z));
                }
            }
            w += fan_in * fan_out;
            channel += fan_out;
        }
    }

    /// The input code of a feature value (see the module docs).
    #[inline(always)]
    pub fn input_code(&self, x: f32) -> i8 {
        // round(v), half away from zero, for |v| <= 1024 (anything beyond saturates):
        // truncate, then step away from zero when the (exact) remainder is half or more.
        let v = (x / self.act_scales[0]).clamp(-1024.0, 1024.0);
        // NaN (a NaN input) truncates to 0, as `as i32` would truncate it; the unchecked
        // conversion vectorises, the saturating `as` does not.
        let v = if v.is_nan() { 0.0 } else { v };
        // SAFETY: `v` is a number within ±1024, so its truncation fits an `i32`.
        let t: i32 = unsafe { v.to_int_unchecked() };
        let rest = v - t as f32;
        let r = t + i32::from(rest >= 0.5) - i32::from(rest <= -0.5);
        (r + self.act_zeros[0] as i32).clamp(-128, 127) as i8
    }

    /// The head's `int16` output codes of a batch on the CPU core, `[batch x classes]`
    /// column-major (as the logits), into `out[..BATCH * CLASSES]`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input; [`Error::Quantize`] if `out` is
    /// shorter than `BATCH * CLASSES`.
    pub fn cpu_codes_into(&self, x: &M::Input, out: &mut [i16]) -> Result<()> {
        check_codes_len::<M>(out)?;
        let flat = x.as_flat();
        crate::check::finite("input", flat, M::BATCH)?;
        let b = M::BATCH;
        self.rows_of_batch(flat, 0, b, |r, k, q| out[k * b + r] = q);
        Ok(())
    }

    /// The dequantised logits of a batch on the CPU core: `s_y · (q_y − z_y)` of the
    /// head's codes.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    pub fn cpu_logits(&self, x: &M::Input) -> Result<M::Logits> {
        let mut logits = M::Logits::zeroed();
        let out = logits.as_flat_mut();
        let b = M::BATCH;
        let flat = x.as_flat();
        crate::check::finite("input", flat, b)?;
        let (s, z) = (self.act_scales[NT - 1], self.act_zeros[NT - 1] as i32);
        self.rows_of_batch(flat, 0, b, |r, k, q| out[k * b + r] = s * (q as i32 - z) as f32);
        Ok(logits)
    }

    /// The predicted class of every row on the CPU core: the argmax of the head's codes
    /// (the first on ties).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    pub fn cpu_predict(&self, x: &M::Input) -> Result<M::Labels> {
        let mut labels = M::Labels::zeroed();
        let out = labels.as_flat_mut();
        let flat = x.as_flat();
        let b = M::BATCH;
        crate::check::finite("input", flat, b)?;
        // The head's codes of a row arrive class after class (the rows of a block
        // interleaved, at most `BLOCK_ROWS` consecutive rows): the running best of each
        // row (the first on ties).
        let mut best = [i16::MIN; BLOCK_ROWS];
        self.rows_of_batch(flat, 0, b, |r, k, q| {
            let top = &mut best[r % BLOCK_ROWS];
            if k == 0 || q > *top {
                *top = q;
                out[r] = k as u32;
            }
        });
        Ok(labels)
    }

    /// The head's codes of rows `first..first + count` of a batch (`flat`, its inputs
    /// column-major), to `sink(row, class, code)` (`row` from 0): with the standard
    /// library, the inputs are quantised first, in one pass over `flat` (a loop that
    /// vectorises), then the blocks of rows run; without it, each input is quantised as a
    /// block reads it (no allocation).
    #[inline]
    pub(crate) fn rows_of_batch(
        &self,
        flat: &[M::Storage],
        first: usize,
        count: usize,
        sink: impl FnMut(usize, usize, i16),
    ) {
        #[cfg(feature = "std")]
        {
            let mut codes = std::vec![0i8; M::FEATURES * count];
            self.input_codes(flat, first, count, &mut codes);
            #[cfg(target_arch = "x86_64")]
            if let Some(kind) = lanes::kind(NW) {
                let prepared = self.lanes.get_or_init(|| {
                    let req: std::vec::Vec<lanes::Req> =
                        self.requants().iter().map(|q| [q.cap, q.k, q.mult, q.round, q.shift]).collect();
                    let net = lanes::Net {
                        dims: M::LAYERS,
                        weights: &self.weights,
                        biases: &self.biases,
                        req: &req,
                        zeros: &self.act_zeros,
                    };
                    // SAFETY: `kind` checked the processor; the model's arrays hold its
                    // layers' weights, channels and tensors (`NW`, `NC`, `NT` are its
                    // constants).
                    unsafe { lanes::prepare(&net, kind) }
                });
                // SAFETY: as above (the prepared pass is `kind`'s, or one found on this
                // processor at the model's first call); `codes` holds the `FEATURES ·
                // count` input codes.
                unsafe { lanes::rows(prepared, &codes, count, sink) };
                return;
            }
            self.rows(count, |r, i| codes[i * count + r], sink);
        }
        #[cfg(not(feature = "std"))]
        self.rows(count, |r, i| self.input_code(flat[i * M::BATCH + first + r].to_f32()), sink);
    }

    /// The input codes of rows `first..first + count` of a batch (`flat`, column-major),
    /// feature after feature, into `codes` (`FEATURES * count` of them): on x86-64 compiled
    /// for AVX-512 or AVX2 where the processor has them and `TENSORBRIDGE_SIMD` allows them
    /// (the division, the rounding and the clamps of [`Int8Model::input_code`] give the
    /// same bits at every width).
    #[cfg(feature = "std")]
    pub(crate) fn input_codes(&self, flat: &[M::Storage], first: usize, count: usize, codes: &mut [i8]) {
        #[cfg(target_arch = "x86_64")]
        {
            // As wide as the processor goes and `TENSORBRIDGE_SIMD` lets it.
            use crate::simd::{allows, Simd};
            if allows(Simd::Avx512) && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the processor has AVX-512F and AVX2 (which it implies), checked
                // just above.
                return unsafe { self.input_codes_avx512(flat, first, count, codes) };
            }
            if allows(Simd::Avx2) && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2, checked just above.
                return unsafe { self.input_codes_avx2(flat, first, count, codes) };
            }
        }
        self.input_codes_inline(flat, first, count, codes)
    }

    /// [`Int8Model::input_codes`]' loop, inlined into its callers.
    #[cfg(feature = "std")]
    #[inline(always)]
    fn input_codes_inline(&self, flat: &[M::Storage], first: usize, count: usize, codes: &mut [i8]) {
        let b = M::BATCH;
        for (i, chunk) in codes.chunks_exact_mut(count.max(1)).enumerate() {
            let x = &flat[i * b + first..i * b + first + chunk.len()];
            for (q, v) in chunk.iter_mut().zip(x) {
                *q = self.input_code(v.to_f32());
            }
        }
    }

    /// [`Int8Model::input_codes_inline`] compiled for AVX-512F.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn input_codes_avx512(&self, flat: &[M::Storage], first: usize, count: usize, codes: &mut [i8]) {
        self.input_codes_inline(flat, first, count, codes)
    }

    /// [`Int8Model::input_codes_inline`] compiled for AVX2.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn input_codes_avx2(&self, flat: &[M::Storage], first: usize, count: usize, codes: &mut [i8]) {
        self.input_codes_inline(flat, first, count, codes)
    }

    /// [`Int8Model::rows_inline`]; with the standard library on x86-64, compiled for AVX2
    /// where the processor has it, with its widening multiply-adds of 16-bit pairs
    /// (`vpmaddwd`, [`products_avx2`]; the same integers).
    #[inline]
    pub(crate) fn rows(&self, rows: usize, code: impl Fn(usize, usize) -> i8, sink: impl FnMut(usize, usize, i16)) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2 (checked just above), the one feature the
            // function is compiled for.
            unsafe { self.rows_avx2(rows, code, sink) };
            return;
        }
        self.rows_inline::<PLAIN>(rows, code, sink)
    }

    /// [`Int8Model::rows_inline`] compiled for AVX2, its products by [`products_avx2`].
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(&self, rows: usize, code: impl Fn(usize, usize) -> i8, sink: impl FnMut(usize, usize, i16)) {
        self.rows_inline::<AVX2>(rows, code, sink)
    }

    /// The dequantised logits of a batch (see [`Int8Model::cpu_logits`]).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    #[cfg(not(feature = "std"))]
    pub fn logits(&self, x: &M::Input) -> Result<M::Logits> {
        self.cpu_logits(x)
    }

    /// The predicted class of every row (see [`Int8Model::cpu_predict`]).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    #[cfg(not(feature = "std"))]
    pub fn predict(&self, x: &M::Input) -> Result<M::Labels> {
        self.cpu_predict(x)
    }

    /// The head's `int16` output codes of a batch (see [`Int8Model::cpu_codes_into`]).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input.
    #[cfg(not(feature = "std"))]
    pub fn codes_into(&self, x: &M::Input, out: &mut [i16]) -> Result<()> {
        self.cpu_codes_into(x, out)
    }

    /// Weight codes, layer after layer, `w_l[o * fan_in + i]`.
    pub fn weights(&self) -> &[i8] {
        &self.weights
    }
    /// Bias codes (`int32`), layer after layer.
    pub fn biases(&self) -> &[i32] {
        &self.biases
    }
    /// Weight scales, one per output channel, layer after layer.
    pub fn weight_scales(&self) -> &[f32] {
        &self.weight_scales
    }
    /// Requantisation multipliers `M`, one per output channel, layer after layer.
    pub fn multipliers(&self) -> &[i32] {
        &self.multipliers
    }
    /// Requantisation shifts `n`, one per output channel, layer after layer.
    pub fn shifts(&self) -> &[u8] {
        &self.shifts
    }
    /// Activation scales: the input, then every layer's output.
    pub fn act_scales(&self) -> &[f32] {
        &self.act_scales
    }
    /// Activation zero points: the input, then every layer's output (the head's in the
    /// `int16` range, the others in `int8`'s).
    pub fn act_zero_points(&self) -> &[i16] {
        &self.act_zeros
    }

    /// Builds the model from its parts (as [`Int8Model::weights`] and the other accessors
    /// return them), checking them: every scale finite and positive, every weight code in
    /// `−127..=127`, every bias within the accumulator's bound, and the multipliers and
    /// shifts those the scales give.
    ///
    /// # Errors
    /// [`Error::Quantize`] naming what does not hold.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        weights: [i8; NW],
        biases: [i32; NC],
        weight_scales: [f32; NC],
        multipliers: [i32; NC],
        shifts: [u8; NC],
        act_scales: [f32; NT],
        act_zeros: [i16; NT],
    ) -> Result<Self> {
        let () = Self::SIZES_FIT;
        let dims = M::LAYERS;
        if weights.contains(&i8::MIN) {
            return Err(refuse(Text::from("a weight code is -128 (the symmetric range is -127..=127)")));
        }
        if !weight_scales.iter().chain(&act_scales).all(|s| s.is_finite() && *s > 0.0) {
            return Err(refuse(Text::from("a scale is not a finite positive number")));
        }
        for (t, &z) in act_zeros.iter().enumerate() {
            let (qmin, qmax) = code_range(t, NT);
            if (z as i32) < qmin || z as i32 > qmax {
                return Err(refuse(Text::from("an int8 activation's zero point is outside -128..=127")));
            }
        }
        let mut channel = 0;
        for l in 0..dims.len() - 1 {
            for &b in &biases[channel..channel + dims[l + 1]] {
                bias_code(b as f64, dims[l])?;
            }
            channel += dims[l + 1];
        }
        let (m, n) = multipliers_of::<NC, NT>(dims, &weight_scales, &act_scales)?;
        if m != multipliers || n != shifts {
            return Err(refuse(Text::from("the multipliers and shifts are not those the scales give")));
        }
        Ok(Self {
            weights,
            biases,
            weight_scales,
            multipliers,
            shifts,
            act_scales,
            act_zeros,
            #[cfg(feature = "std")]
            placed: None,
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            lanes: std::sync::OnceLock::new(),
            model: core::marker::PhantomData,
        })
    }
}

/// `out` holds a batch's head codes.
pub(crate) fn check_codes_len<M: Model>(out: &[i16]) -> Result<()> {
    if out.len() < M::BATCH * M::CLASSES {
        return Err(refuse(Text::from("the codes' buffer is shorter than BATCH * CLASSES")));
    }
    Ok(())
}

/// The index of the largest code, the first on ties.
#[inline]
pub fn argmax(codes: &[i16]) -> u32 {
    let mut best = 0;
    for (c, &v) in codes.iter().enumerate() {
        if v > codes[best] {
            best = c;
        }
    }
    best as u32
}

fn widen(lo: &mut f32, hi: &mut f32, values: &[f32]) {
    for &v in values {
        *lo = lo.min(v);
        *hi = hi.max(v);
    }
}

/// A bias code `qb` checked against the accumulator's bound: `|qb| + fan_in · 255 · 127`
/// must fit `i32`, so that no sum of the integer layer overflows.
fn bias_code(qb: f64, fan_in: usize) -> Result<i32> {
    let products = fan_in as f64 * 255.0 * 127.0;
    if products > i32::MAX as f64 {
        return Err(refuse(Text::from("a layer has too many inputs for an i32 accumulator (at most 66311)")));
    }
    // NaN fails the comparison too.
    let fits = qb.abs() + products <= i32::MAX as f64;
    if !fits {
        return Err(refuse(Text::from(
            "a bias is too large for its scale (s_x * s_w): its code and the products overflow i32",
        )));
    }
    Ok(qb as i32)
}

/// The multipliers and shifts of every output channel, from the scales.
fn multipliers_of<const NC: usize, const NT: usize>(
    dims: &[usize],
    weight_scales: &[f32; NC],
    act_scales: &[f32; NT],
) -> Result<([i32; NC], [u8; NC])> {
    let mut multipliers = [0i32; NC];
    let mut shifts = [0u8; NC];
    let mut channel = 0;
    for l in 0..dims.len() - 1 {
        for o in 0..dims[l + 1] {
            let k = channel + o;
            let m = act_scales[l] as f64 * weight_scales[k] as f64 / act_scales[l + 1] as f64;
            let (mult, shift) =
                multiplier(m).ok_or_else(|| refuse(Text::from("a requantisation multiplier is 2^30 or more")))?;
            multipliers[k] = mult;
            shifts[k] = shift;
        }
        channel += dims[l + 1];
    }
    Ok((multipliers, shifts))
}

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// [`Int8Model::from_parts`] with the multipliers and shifts derived from the scales
    /// (for a file that does not carry them, as ONNX's QDQ form).
    ///
    /// # Errors
    /// Those of [`Int8Model::from_parts`].
    pub fn from_scales(
        weights: [i8; NW],
        biases: [i32; NC],
        weight_scales: [f32; NC],
        act_scales: [f32; NT],
        act_zeros: [i16; NT],
    ) -> Result<Self> {
        let () = Self::SIZES_FIT;
        if !weight_scales.iter().chain(&act_scales).all(|s| s.is_finite() && *s > 0.0) {
            return Err(refuse(Text::from("a scale is not a finite positive number")));
        }
        let (m, n) = multipliers_of::<NC, NT>(M::LAYERS, &weight_scales, &act_scales)?;
        Self::from_parts(weights, biases, weight_scales, m, n, act_scales, act_zeros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(not(feature = "std"))]
    use std::{vec, vec::Vec};

    #[test]
    fn requantize_rounds_half_away_from_zero_and_saturates() {
        // m = 0.5: M = 2^30, n = 31.
        assert_eq!(multiplier(0.5), Some((1 << 30, 31)));
        let (m, n) = (1 << 30, 31);
        assert_eq!(requantize(3, m, n, 0, -128, 127), 2); // 1.5 -> 2
        assert_eq!(requantize(-3, m, n, 0, -128, 127), -2); // -1.5 -> -2
        assert_eq!(requantize(5, m, n, 0, -128, 127), 3); // 2.5 -> 3
        assert_eq!(requantize(-1, m, n, 0, -128, 127), -1); // -0.5 -> -1
        assert_eq!(requantize(1000, m, n, 0, -128, 127), 127);
        assert_eq!(requantize(-1000, m, n, 0, -128, 127), -128);
        assert_eq!(requantize(-10, m, n, -128, -128, 127), -128); // ReLU floor at the zero point
        assert_eq!(requantize(-10, m, n, 3, 3, 127), 3);
        assert_eq!(requantize(100_000, m, n, 7, -32768, 32767), 32767);
    }

    /// A xorshift generator for the tests below.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// The 32-bit requantisation (`Requant`) against `requantize`'s 64-bit formula, for
    /// every shift, multipliers at both ends of their range and random, accumulators at
    /// the rounding ties, near 0 and at the ends of `i32`, and zero points across the
    /// range, as a hidden layer (ReLU) and as the head use it.
    #[test]
    fn fast_requantisation_equals_requantize() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut checked = 0u64;
        for shift in 1u8..=62 {
            let mut mults = vec![1 << 30, i32::MAX, 0x5A82_7999];
            for _ in 0..12 {
                mults.push((1 << 30) + (next(&mut state) % (1 << 30)) as i32);
            }
            if shift == 62 {
                mults.push(0);
            }
            for &mult in &mults {
                let q = Requant::new(mult, shift);
                let mut accs = vec![0, 1, -1, 2, -2, i32::MAX, -i32::MAX, 1 << 20, -(1 << 20)];
                // Accumulators around the ties and the saturation points of this multiplier.
                let m = mult as f64 / 2f64.powi(shift as i32);
                for target in [0.5, 1.5, 2.5, 126.5, 127.5, 255.5, 256.5, 32767.5, 65535.5, 65536.5] {
                    let centre = target / m;
                    if centre < 2e9 {
                        for d in -2i64..=2 {
                            let a = (centre as i64 + d).clamp(-(i32::MAX as i64), i32::MAX as i64) as i32;
                            accs.push(a);
                            accs.push(-a);
                        }
                    }
                }
                for _ in 0..64 {
                    let bits = next(&mut state) % 31;
                    let a = (next(&mut state) % (1u64 << bits)) as i32;
                    accs.push(if next(&mut state).is_multiple_of(2) { a } else { -a });
                }
                for &acc in &accs {
                    for z in [-128, -100, -1, 0, 5, 127] {
                        let r = q.magnitude(acc.max(0) as u32);
                        let hidden = z + r.min((127 - z) as u32) as i32;
                        assert_eq!(
                            hidden,
                            requantize(acc, mult, shift, z, z, 127),
                            "hidden acc {acc} M {mult} n {shift} z {z}"
                        );
                    }
                    for z in [-32768, -7, 0, 12345, 32767] {
                        let r = q.magnitude(acc.unsigned_abs()) as i32;
                        let head = (if acc < 0 { z - r } else { z + r }).clamp(-32768, 32767);
                        assert_eq!(
                            head,
                            requantize(acc, mult, shift, z, -32768, 32767),
                            "head acc {acc} M {mult} n {shift} z {z}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    /// The host's vector products (AVX2, where this processor has it) and
    /// the plain loop against a sum written out here, for lengths around the vectors'
    /// widths, operands at the ends of their ranges and random.
    #[cfg(not(target_arch = "arm"))]
    #[test]
    fn block_products_equal_the_plain_sums() {
        const MAXW: usize = 100;
        let mut state = 0x1234_5678_9ABC_DEF1u64;
        for n in [0usize, 1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100] {
            let mut a = [Centred([0i16; MAXW]); 4];
            let mut w = [[0i8; MAXW]; 2];
            for (k, row) in a.iter_mut().enumerate() {
                for (i, v) in row.0.iter_mut().enumerate() {
                    *v = match (k + i) % 7 {
                        0 => 255,
                        1 => -255,
                        _ => (next(&mut state) % 511) as i16 - 255,
                    };
                }
            }
            for (c, col) in w.iter_mut().enumerate() {
                for (i, v) in col.iter_mut().enumerate() {
                    *v = if (c + i) % 5 == 0 { -127 } else { ((next(&mut state) % 255) as i32 - 127) as i8 };
                }
            }
            let bias = [123_456, -7];
            let cols = [&w[0][..n], &w[1][..n]];
            let mut want = [[0i32; 2]; 4];
            for r in 0..4 {
                for c in 0..2 {
                    want[r][c] = bias[c] + (0..n).map(|i| a[r].0[i] as i32 * w[c][i] as i32).sum::<i32>();
                }
            }
            assert_eq!(products(&a, cols, bias), want, "plain, n = {n}");
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor has AVX2 (checked); the intrinsics run as calls.
                    assert_eq!(unsafe { products_avx2(&a, cols, bias) }, want, "avx2, n = {n}");
                }
            }
        }
    }

    /// The Cortex-M0's high word of a product, from 16-bit halves, against the 64-bit
    /// product.
    #[test]
    fn high_word_from_halves_equals_the_64_bit_product() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let ends = [0u32, 1, 0xFFFF, 0x1_0000, 0x7FFF_FFFF, 0x4000_0000, 0x7FFF_0000, 0xFFFF];
        let mut pairs: Vec<(u32, u32)> = ends.iter().flat_map(|&a| ends.iter().map(move |&b| (a, b))).collect();
        for _ in 0..100_000 {
            pairs.push(((next(&mut state) >> 33) as u32, (next(&mut state) >> 33) as u32));
        }
        for (a, b) in pairs {
            assert_eq!(mul_high_halves(a, b), ((a as u64 * b as u64) >> 32) as u32, "{a} x {b}");
        }
    }

    #[test]
    fn multiplier_decomposes_exactly() {
        // 0.75 = 0.75 * 2^0: M = 0.75 * 2^31, n = 31.
        assert_eq!(multiplier(0.75), Some((3 << 29, 31)));
        assert_eq!(multiplier(1.0), Some((1 << 30, 30)));
        assert_eq!(multiplier(1e-30), Some((0, 62)));
        assert_eq!(multiplier(2f64.powi(30)), None);
        assert_eq!(multiplier(f64::NAN), None);
        // 1 - 2^-40 rounds to 2^31 at 31 bits: becomes 2^30 with one shift less.
        assert_eq!(multiplier(1.0 - 2f64.powi(-40)), Some((1 << 30, 30)));
    }

    #[test]
    fn activation_params_cover_the_range() {
        // [0, 2.55]: s = 0.01, z = -128.
        let (s, z) = activation_params(0.0, 2.55, -128, 127);
        assert!((s - 0.01).abs() < 1e-9);
        assert_eq!(z, -128);
        // [-2.55, 0]: z = round(-128 + 255) = 127.
        assert_eq!(activation_params(-2.55, 0.0, -128, 127).1, 127);
        assert_eq!(activation_params(0.0, 0.0, -128, 127), (1.0, -128));
        // int16: [-1, 0] over 65535 steps puts 0 at the top code.
        assert_eq!(activation_params(-1.0, 0.0, -32768, 32767).1, 32767);
    }
}
