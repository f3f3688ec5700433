//! Dense-layer products whose sizes are compile-time constants: the CPU train step's
//! products for mid-sized layers, in the variants compiled for AVX-512 and for AVX2 + FMA
//! (see `backend::cpu`). Imports nothing of the crate but `gemm`'s threshold.
//!
//! `model!` knows every layer's sizes, so it emits [`Model::fixed_product`], which calls
//! [`layer`] with them as const generic arguments. The core asks it for each product of a
//! layer that would otherwise go through the `gemm` crate (layers of at least
//! `GEMM_MIN_MACS` multiply-adds); it answers `false`, and the `gemm` crate runs, for
//! layers of more than [`FIXED_MAX_MACS`].
//! With every size, stride and block count a constant, each product is a few
//! straight-line register blocks, with no packing, no allocation and no dispatch: at the
//! digits shape (batch 32, 64 -> 32 -> 10) the five products of a train step took 2.1 us this
//! way against 3.3 us through the `gemm` crate, on one AVX-512 core.
//!
//! # The same bits as the `gemm` crate
//! Every output is `fma(a_k-1, b_k-1, ... fma(a_1, b_1, fma(a_0, b_0, 0)))`: one fused
//! multiply-add per step, in increasing `k`, whatever the register block or the vector
//! width (a block decides which outputs are computed together, never the order within one).
//! An update `dst + s · sum` is one more fused multiply-add. That is what the `gemm` crate's
//! FMA kernels compute for these shapes (its depth blocks are longer than any `k` here), so
//! the train step gives the same bits through either, which `tests/core_equals_backend.rs`
//! checks (the core runs the `gemm` crate as built, the backend these products), and so do
//! this module's unit tests over odd shapes.
//!
//! `f32::mul_add` is one instruction only where FMA is a target feature: the core calls
//! these products only from the train steps compiled with it.
//!
//! [`Model::fixed_product`]: crate::Model::fixed_product

use core::ops::Range;

use crate::gemm::GEMM_MIN_MACS;
use crate::math::activation::Activation;
use crate::model::Product;

/// Layers of more multiply-adds go through the `gemm` crate, whose packing and cache
/// blocking pay once the operands outgrow the L1 cache. Measured on train steps (AVX-512
/// machine, this bound against a higher or lower one, three runs each): at 2^17
/// (batch 16, 256 -> 32 -> 4) these products took the step from 8.5 us to 7.5-7.8 us; at 2^18
/// (32, 128 -> 64 -> 10) they tied (11.4-12.1 us either way); at 2^19 and 2^20 (64, 128 ->
/// 64 or 128 -> 10) the `gemm` crate was 13-18% faster.
pub const FIXED_MAX_MACS: usize = 1 << 17;

/// The longest sum the `gemm` crate takes in one piece: its depth block is at least this
/// (`gemm-common` 0.19: `kc = min(k, 512)` for small products, at least 512 otherwise).
/// Longer sums it splits, adding the pieces into the destination: a different rounding.
const GEMM_MAX_DEPTH: usize = 512;

/// Whether a layer of `batch` rows, `fan_in` inputs and `fan_out` outputs has fixed-size
/// products: at least `GEMM_MIN_MACS` and at most [`FIXED_MAX_MACS`] multiply-adds, and a
/// shape where the `gemm` crate sums each output as one FMA chain in order, so that both
/// give the same bits. `gemm-common` 0.19 does otherwise, and these are refused, when a sum
/// is longer than [`GEMM_MAX_DEPTH`] (any of the three sizes: each is the depth of one
/// product), when a product has a single row or column or a depth of at most 2 (its
/// matrix-vector and outer-product paths: every size at least 3), and when the weight
/// gradient has at most 256 values (`fan_in * fan_out`; its dot-product kernels for small
/// outputs). `tests::every_accepted_shape_gives_the_gemm_crates_bits` checks shapes at
/// each of these edges against the `gemm` crate itself.
pub const fn is_fixed(batch: usize, fan_in: usize, fan_out: usize) -> bool {
    const fn depth_ok(d: usize) -> bool {
        d >= 3 && d <= GEMM_MAX_DEPTH
    }
    let macs = batch.saturating_mul(fan_in).saturating_mul(fan_out);
    macs >= GEMM_MIN_MACS
        && macs <= FIXED_MAX_MACS
        && depth_ok(batch)
        && depth_ok(fan_in)
        && depth_ok(fan_out)
        && fan_in * fan_out > 256
}

/// Computes `p` for a layer of `B` rows, `I` inputs and `O` outputs with register blocks of
/// `MR` rows (a multiple of the vector width) by `NR` columns (at most 8), and returns
/// `true`; or returns `false`, computing nothing, when the layer has fewer than
/// `GEMM_MIN_MACS` (which the core's loops take) or more than `FIXED_MAX_MACS`
/// multiply-adds, an operand has the wrong length, or the scratch is too small.
///
/// What `model!`'s [`Model::fixed_product`](crate::Model::fixed_product) calls; see the
/// module documentation for when and why.
#[inline(always)]
pub fn layer<const MR: usize, const NR: usize, const B: usize, const I: usize, const O: usize>(p: Product<'_>) -> bool {
    // A constant (`const`), so that nothing below is even compiled for other layers.
    if !const { is_fixed(B, I, O) } {
        return false;
    }
    match p {
        Product::Forward { a, w, bias, act, z } => {
            if a.len() != B * I || w.len() != I * O || bias.len() != O || z.len() != B * O {
                return false;
            }
            // a(r, i) = a[i*B + r], W(i, o) = w[o*I + i].
            product::<MR, NR, B, O, B, 1, I>(z, a, w, I, Epilogue::Bias(bias, act));
        }
        Product::InputGrads { dz, w, da } => {
            if dz.len() != B * O || w.len() != I * O || da.len() != B * I {
                return false;
            }
            // dz(r, o) = dz[o*B + r], Wᵀ(o, i) = w[o*I + i].
            product::<MR, NR, B, I, B, I, 1>(da, dz, w, O, Epilogue::Store);
        }
        Product::WeightGrads { a, dz, gw, rows, scale, scratch } => {
            // Fewer than 3 rows: the `gemm` crate's outer-product path (see `is_fixed`).
            if a.len() != B * I
                || dz.len() != B * O
                || gw.len() != I * O
                || rows < 3
                || rows > B
                || scratch.len() < B * I
            {
                return false;
            }
            let at = &mut scratch[..B * I];
            transpose::<B, I>(a, at);
            // aᵀ(i, r) = at[r*I + i], dz(r, o) = dz[o*B + r].
            let epilogue = match scale {
                None => Epilogue::Store,
                Some(s) => Epilogue::Update(s),
            };
            // A full batch, the usual case, with the depth a constant: with `rows` alone,
            // LLVM kept part of each register block's sums in memory across the loop and
            // read them back in pieces, a failed store forwarding per block (2.6% of the
            // AVX2 digits step's samples on one load). Measured on the digits train step,
            // AVX2 variant, best of each of four interleaved rounds on a loaded machine:
            // 4.60-4.70 us before, 4.43-4.56 us after. The same sums either way.
            if rows == B {
                product::<MR, NR, I, O, I, 1, B>(gw, at, dz, B, epilogue);
            } else {
                product::<MR, NR, I, O, I, 1, B>(gw, at, dz, rows, epilogue);
            }
        }
    }
    true
}

/// What a product does with its sums.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `dst = sum`.
    Store,
    /// `dst = fma(s, sum, dst)`.
    Update(f32),
    /// `dst = act(sum + b[column])`: the same roundings as a separate pass over `dst`.
    Bias(&'a [f32], Activation),
}

/// `dst[M x N] = a · b`, finished by `epilogue`, `dst` column-major, with
/// `a(r, kk) = a[kk*LDA + r]` and `b(kk, j) = b[kk*BK + j*BN]` for `kk < k`: rows in panels
/// of `MR`, then the rest in panels of 16, 8, 4, 2 and 1 (`MR` is 32 or 16); columns in
/// blocks of `NR`, then one narrower block. Every choice of a block
/// size is a constant (`const`), so only the blocks the shape needs are compiled.
#[inline(always)]
fn product<
    const MR: usize,
    const NR: usize,
    const M: usize,
    const N: usize,
    const LDA: usize,
    const BK: usize,
    const BN: usize,
>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    k: usize,
    epilogue: Epilogue<'_>,
) {
    const { assert!(MR == 32 || MR == 16, "register blocks of 32 or 16 rows") };
    let mut r0 = 0;
    while r0 + MR <= M {
        panel::<MR, NR, M, N, LDA, BK, BN>(dst, a, b, k, r0, epilogue);
        r0 += MR;
    }
    // The remaining `M % MR` rows (under 32) as the sum of its binary digits.
    macro_rules! rest {
        ($($rows:literal),*) => {$(
            if const { M % MR & $rows != 0 } {
                panel::<$rows, NR, M, N, LDA, BK, BN>(dst, a, b, k, r0, epilogue);
                r0 += $rows;
            }
        )*};
    }
    rest!(16, 8, 4, 2, 1);
    debug_assert_eq!(r0, M);
}

/// Rows `r0..r0 + R` of every column of `dst`: blocks of `NR` columns, then the rest.
#[inline(always)]
fn panel<
    const R: usize,
    const NR: usize,
    const M: usize,
    const N: usize,
    const LDA: usize,
    const BK: usize,
    const BN: usize,
>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    k: usize,
    r0: usize,
    epilogue: Epilogue<'_>,
) {
    const { assert!(NR >= 1 && NR <= 8, "register blocks of 1 to 8 columns") };
    let mut c0 = 0;
    while c0 + NR <= N {
        tile::<R, NR, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue);
        c0 += NR;
    }
    match const { N % NR } {
        0 => {}
        1 => tile::<R, 1, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        2 => tile::<R, 2, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        3 => tile::<R, 3, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        4 => tile::<R, 4, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        5 => tile::<R, 5, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        6 => tile::<R, 6, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
        _ => tile::<R, 7, M, LDA, BK, BN>(dst, a, b, k, r0, c0, epilogue),
    }
}

/// The `R x NC` outputs from `(r0, c0)`: `Σ_kk a(r, kk) · b(kk, c)` in increasing `kk`, one
/// fused multiply-add a step, then finished by `epilogue`.
#[inline(always)]
fn tile<const R: usize, const NC: usize, const M: usize, const LDA: usize, const BK: usize, const BN: usize>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    k: usize,
    r0: usize,
    c0: usize,
    epilogue: Epilogue<'_>,
) {
    let mut acc = [[0.0f32; R]; NC];
    if k > 0 {
        let a = &a[r0..];
        let b = &b[c0 * BN..];
        // One check for the whole loop, so that the checks inside fold away.
        assert!((k - 1) * LDA + R <= a.len() && (k - 1) * BK + (NC - 1) * BN < b.len(), "product operands too short");
        for kk in 0..k {
            let col = &a[kk * LDA..kk * LDA + R];
            // A loop, not `array::from_fn`, which LLVM left as a call in a large train
            // step (spilling every accumulator around it).
            let mut bv = [0.0f32; NC];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = b[kk * BK + j * BN];
            }
            // Rows outside, columns inside: the column loop unrolls and the row loop
            // becomes vector instructions (the other order made LLVM gather).
            for r in 0..R {
                for j in 0..NC {
                    acc[j][r] = col[r].mul_add(bv[j], acc[j][r]);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let start = (c0 + j) * M + r0;
        let d = &mut dst[start..start + R];
        match epilogue {
            Epilogue::Store => d.copy_from_slice(acc),
            Epilogue::Update(s) => {
                for (d, &v) in d.iter_mut().zip(acc) {
                    *d = s.mul_add(v, *d);
                }
            }
            Epilogue::Bias(bias, act) => {
                let bo = bias[c0 + j];
                // One loop per activation: ReLU's and identity's vectorise.
                match act {
                    Activation::Identity => {
                        for (d, &v) in d.iter_mut().zip(acc) {
                            *d = v + bo;
                        }
                    }
                    Activation::Relu => {
                        for (d, &v) in d.iter_mut().zip(acc) {
                            *d = Activation::Relu.apply(v + bo);
                        }
                    }
                    _ => {
                        for (d, &v) in d.iter_mut().zip(acc) {
                            *d = act.apply(v + bo);
                        }
                    }
                }
            }
        }
    }
}

/// `dst[C x R] = src[R x C]ᵀ`, both column-major: `dst[r*C + c] = src[c*R + r]`.
///
/// On x86-64 with AVX, in 8 x 8 blocks through registers ([`transpose_avx`]); the element
/// by element loop, which LLVM makes gathers of, took twice as long (32 x 64: 119 ns against
/// 237 ns on an AVX-512 core) and was an eighth of the digits train step.
#[inline(always)]
fn transpose<const R: usize, const C: usize>(src: &[f32], dst: &mut [f32]) {
    let (src, dst) = (&src[..R * C], &mut dst[..R * C]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above); `src` and `dst` hold `R * C` values.
        unsafe { transpose_avx::<R, C>(src, dst) };
        return;
    }
    transpose_rect::<R, C>(src, dst, 0..R, 0..C);
}

/// [`transpose`] of the rows `rows` and columns `cols` of `src`, element by element.
#[inline(always)]
fn transpose_rect<const R: usize, const C: usize>(
    src: &[f32],
    dst: &mut [f32],
    rows: Range<usize>,
    cols: Range<usize>,
) {
    for r in rows {
        for c in cols.clone() {
            dst[r * C + c] = src[c * R + r];
        }
    }
}

/// [`transpose`] in 8 x 8 blocks with AVX: per block, eight loads of two half-columns each,
/// two rounds of shuffles, eight stores of a row; the edges element by element.
///
/// # Safety
/// The CPU must have AVX, and `src` and `dst` must hold at least `R * C` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn transpose_avx<const R: usize, const C: usize>(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_castps128_ps256, _mm256_insertf128_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
        _mm256_unpacklo_ps, _mm_loadu_ps,
    };
    debug_assert!(src.len() >= R * C && dst.len() >= R * C);
    let (rows, cols) = (R / 8 * 8, C / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..rows).step_by(8) {
        for c0 in (0..cols).step_by(8) {
            // SAFETY (every load): column `c0 + c` (< C), rows `r0 + h .. r0 + h + 4`
            // (h = 0 or 4; at most r0 + 8 <= R): inside `src`'s `R * C` values.
            // `t[c % 4 + 4 * (h / 4)]` holds rows `r0+h..+4` of columns `c0 + c % 4` (low half)
            // and `c0 + c % 4 + 4` (high half).
            // (A macro, not a closure: before Rust 1.86 a closure did not inherit AVX, and the
            // intrinsics would not inline into it.)
            macro_rules! pair {
                ($c:literal, $h:literal) => {
                    _mm256_insertf128_ps::<1>(
                        _mm256_castps128_ps256(unsafe { _mm_loadu_ps(s.add((c0 + $c) * R + r0 + $h)) }),
                        unsafe { _mm_loadu_ps(s.add((c0 + $c + 4) * R + r0 + $h)) },
                    )
                };
            }
            let t = [
                pair!(0, 0),
                pair!(1, 0),
                pair!(2, 0),
                pair!(3, 0),
                pair!(0, 4),
                pair!(1, 4),
                pair!(2, 4),
                pair!(3, 4),
            ];
            // Interleave columns 0/1 and 2/3 (and 4/5, 6/7 in the high halves) ...
            let u = [
                _mm256_unpacklo_ps(t[0], t[1]),
                _mm256_unpackhi_ps(t[0], t[1]),
                _mm256_unpacklo_ps(t[2], t[3]),
                _mm256_unpackhi_ps(t[2], t[3]),
                _mm256_unpacklo_ps(t[4], t[5]),
                _mm256_unpackhi_ps(t[4], t[5]),
                _mm256_unpacklo_ps(t[6], t[7]),
                _mm256_unpackhi_ps(t[6], t[7]),
            ];
            // ... then pair them: row `r0 + k` of the block, columns c0..c0+8.
            let rows_out = [
                _mm256_shuffle_ps::<0x44>(u[0], u[2]),
                _mm256_shuffle_ps::<0xEE>(u[0], u[2]),
                _mm256_shuffle_ps::<0x44>(u[1], u[3]),
                _mm256_shuffle_ps::<0xEE>(u[1], u[3]),
                _mm256_shuffle_ps::<0x44>(u[4], u[6]),
                _mm256_shuffle_ps::<0xEE>(u[4], u[6]),
                _mm256_shuffle_ps::<0x44>(u[5], u[7]),
                _mm256_shuffle_ps::<0xEE>(u[5], u[7]),
            ];
            for (k, row) in rows_out.into_iter().enumerate() {
                // SAFETY: row `r0 + k` (< R), columns `c0..c0 + 8` (<= C): inside `dst`.
                unsafe { _mm256_storeu_ps(d.add((r0 + k) * C + c0), row) };
            }
        }
    }
    // The rows below the last full block (all columns), then the columns right of it.
    transpose_rect::<R, C>(src, dst, rows..R, 0..C);
    transpose_rect::<R, C>(src, dst, 0..rows, cols..C);
}

#[cfg(test)]
mod tests {
    use super::*;
    // Values in [-2, 2) with many significant bits, so that any change of the order of the
    // sums or of their rounding shows in the bits.
    use crate::gemm::tests::values;

    /// The reference: one output at a time, `acc = fma(x, y, acc)` over `k` in order, written
    /// out from the definitions (`a(r, kk)`, `b(kk, c)` as closures), and `d + s · acc`.
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for c in 0..n {
            for r in 0..m {
                out[c * m + r] = (0..k).fold(0.0f32, |acc, kk| a(r, kk).mul_add(b(kk, c), acc));
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// All three products of a `B x I -> O` layer against [`reference`], bit for bit, and
    /// against `f64` sums within float rounding.
    fn check<const MR: usize, const NR: usize, const B: usize, const I: usize, const O: usize>(rows: usize) {
        let (a, w, dz, bias) = (values(B * I, 1), values(I * O, 2), values(B * O, 3), values(O, 4));
        let mut z = vec![f32::NAN; B * O];
        let p = Product::Forward { a: &a, w: &w, bias: &vec![0.0; O], act: Activation::Identity, z: &mut z };
        assert!(layer::<MR, NR, B, I, O>(p));
        let want = reference(B, O, I, |r, i| a[i * B + r], |i, o| w[o * I + i]);
        assert_eq!(bits(&z), bits(&want), "forward {B}x{I}x{O} with {MR}x{NR} blocks");
        // The same against exact sums: the products are what they say, not just equal.
        for o in 0..O {
            for r in 0..B {
                let exact: f64 = (0..I).map(|i| f64::from(a[i * B + r]) * f64::from(w[o * I + i])).sum();
                let scale: f64 = (0..I).map(|i| (f64::from(a[i * B + r]) * f64::from(w[o * I + i])).abs()).sum();
                assert!((f64::from(z[o * B + r]) - exact).abs() <= 1e-6 * scale.max(1.0), "forward ({r}, {o})");
            }
        }
        // With a bias, and each activation: ReLU is `sum + b`, then zero below 0.
        for act in Activation::ALL {
            let p = Product::Forward { a: &a, w: &w, bias: &bias, act, z: &mut z };
            assert!(layer::<MR, NR, B, I, O>(p));
            let mut negative = 0;
            for (k, (&got, &sum)) in z.iter().zip(&want).enumerate() {
                let s = sum + bias[k / B];
                negative += usize::from(s < 0.0);
                let expected = match act {
                    Activation::Relu => {
                        if s < 0.0 {
                            0.0
                        } else {
                            s
                        }
                    }
                    Activation::Identity => s,
                    _ => act.apply(s),
                };
                assert_eq!(got.to_bits(), expected.to_bits(), "forward + bias ({act:?}) at {k}");
            }
            assert!(negative > 0 && negative < z.len(), "the data reach both sides of ReLU");
        }

        let mut da = vec![f32::NAN; B * I];
        assert!(layer::<MR, NR, B, I, O>(Product::InputGrads { dz: &dz, w: &w, da: &mut da }));
        let want = reference(B, I, O, |r, o| dz[o * B + r], |o, i| w[o * I + i]);
        assert_eq!(bits(&da), bits(&want), "input gradients {B}x{I}x{O}");

        let mut scratch = vec![f32::NAN; B * I];
        let mut gw = vec![f32::NAN; I * O];
        let p = Product::WeightGrads { a: &a, dz: &dz, gw: &mut gw, rows, scale: None, scratch: &mut scratch };
        assert!(layer::<MR, NR, B, I, O>(p));
        let want = reference(I, O, rows, |i, r| a[i * B + r], |r, o| dz[o * B + r]);
        assert_eq!(bits(&gw), bits(&want), "weight gradients {B}x{I}x{O}, {rows} rows");

        // The fused update: w + s · (aᵀ · dz), one rounding for the update.
        let mut updated = w.clone();
        let p =
            Product::WeightGrads { a: &a, dz: &dz, gw: &mut updated, rows, scale: Some(-0.3), scratch: &mut scratch };
        assert!(layer::<MR, NR, B, I, O>(p));
        let want: Vec<f32> = w.iter().zip(&want).map(|(&w, &g)| (-0.3f32).mul_add(g, w)).collect();
        assert_eq!(bits(&updated), bits(&want), "fused update {B}x{I}x{O}");
    }

    #[test]
    fn the_products_are_fused_multiply_add_chains_in_order() {
        // The digits layer with both blockings the train steps use, a full and a partial batch.
        check::<32, 6, 32, 64, 32>(32);
        check::<16, 4, 32, 64, 32>(17);
        // Odd sizes: leftover rows (37 = 32 + 4 + 1) and every leftover column count.
        check::<32, 6, 37, 13, 23>(37);
        check::<32, 6, 37, 23, 13>(5);
        check::<16, 4, 37, 29, 11>(36);
        check::<32, 3, 9, 100, 11>(3);
        check::<32, 6, 64, 16, 17>(64);
    }

    /// All three products of a `B x I -> O` layer against the `gemm` crate called as the
    /// core calls it (`crate::gemm::gemm`, then the bias pass), bit for bit.
    fn same_as_gemm<const MR: usize, const NR: usize, const B: usize, const I: usize, const O: usize>() {
        use crate::gemm::{gemm, Dst, View};
        assert!(is_fixed(B, I, O), "{B}x{I}x{O} should be accepted");
        let (a, w, dz, bias) = (values(B * I, 5), values(I * O, 6), values(B * O, 7), values(O, 8));
        let macs = B * I * O;
        for act in Activation::ALL {
            let mut z = vec![0.0f32; B * O];
            assert!(layer::<MR, NR, B, I, O>(Product::Forward { a: &a, w: &w, bias: &bias, act, z: &mut z }));
            let mut want = vec![0.0f32; B * O];
            gemm(&mut want, B, O, View::col_major(&a, B, I), View::col_major(&w, I, O), macs, Dst::Set);
            for (k, v) in want.iter_mut().enumerate() {
                let s = *v + bias[k / B];
                *v = act.apply(s);
            }
            assert_eq!(bits(&z), bits(&want), "forward {B}x{I}x{O}, {act:?}");
        }
        let mut da = vec![0.0f32; B * I];
        assert!(layer::<MR, NR, B, I, O>(Product::InputGrads { dz: &dz, w: &w, da: &mut da }));
        let mut want = vec![0.0f32; B * I];
        gemm(&mut want, B, I, View::col_major(&dz, B, O), View::col_major(&w, I, O).t(), macs, Dst::Set);
        assert_eq!(bits(&da), bits(&want), "input gradients {B}x{I}x{O}");
        let mut scratch = vec![0.0f32; B * I];
        for rows in [B, (B - 1).max(3), 3] {
            for scale in [None, Some(-0.3f32)] {
                let mut gw = w.clone();
                let p = Product::WeightGrads { a: &a, dz: &dz, gw: &mut gw, rows, scale, scratch: &mut scratch };
                assert!(layer::<MR, NR, B, I, O>(p));
                let mut want = w.clone();
                let at = View { data: &a, rows, cols: I, rs: 1, cs: B }.t();
                let dzv = View { data: &dz, rows, cols: O, rs: 1, cs: B };
                let op = scale.map_or(Dst::Set, Dst::Add);
                gemm(&mut want, I, O, at, dzv, rows * I * O, op);
                assert_eq!(bits(&gw), bits(&want), "weight gradients {B}x{I}x{O}, {rows} rows, {scale:?}");
            }
        }
    }

    /// The shapes `is_fixed` accepts give the `gemm` crate's own bits (which is what lets the
    /// core, running the `gemm` crate, and the backend, running these, agree): the digits
    /// layers, odd sizes, and each edge of the accepted region (depth 3 and 512, a weight
    /// gradient of 257+ values, the largest layer).
    #[test]
    fn every_accepted_shape_gives_the_gemm_crates_bits() {
        // The `gemm` crate picks FMA kernels at run time; where the CPU has no FMA it sums
        // otherwise, and the train steps never run these products there either.
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("fma") {
            eprintln!("skipped: this CPU has no FMA");
            return;
        }
        same_as_gemm::<32, 6, 32, 64, 32>();
        same_as_gemm::<32, 3, 32, 32, 10>();
        same_as_gemm::<32, 6, 37, 13, 23>();
        same_as_gemm::<32, 6, 3, 100, 30>();
        same_as_gemm::<32, 6, 400, 17, 19>();
        same_as_gemm::<32, 6, 8, 512, 30>();
        same_as_gemm::<32, 3, 16, 20, 400>();
        same_as_gemm::<32, 6, 64, 16, 17>();
        same_as_gemm::<32, 6, 40, 3, 100>();
        same_as_gemm::<32, 3, 40, 100, 3>();
        same_as_gemm::<32, 6, 16, 256, 32>();
        // Refused: a weight gradient of 256 values, a depth of 2 or 513, too few or too many
        // multiply-adds.
        assert!(!is_fixed(64, 16, 16) && !is_fixed(2, 100, 50) && !is_fixed(40, 100, 2));
        assert!(!is_fixed(8, 513, 30) && !is_fixed(2, 4, 2) && !is_fixed(64, 128, 64));
    }

    #[test]
    fn other_layers_and_wrong_operands_are_refused() {
        let (a, w) = (vec![0.5f32; 64 * 64], vec![0.25f32; 64 * 64]);
        let mut z = vec![7.0f32; 64 * 64];
        // Too small (the core's loops), too large (the `gemm` crate): untouched.
        let b = [0.0f32; 64];
        let p = Product::Forward { a: &a[..8], w: &w[..8], bias: &b[..2], act: Activation::Relu, z: &mut z[..4] };
        assert!(!layer::<32, 6, 2, 4, 2>(p));
        assert!(!layer::<32, 6, 64, 64, 64>(Product::Forward {
            a: &a,
            w: &w,
            bias: &b,
            act: Activation::Relu,
            z: &mut z
        }));
        assert!(z.iter().all(|&v| v == 7.0));
        // Lengths that do not match the sizes.
        let p = Product::Forward {
            a: &a[..100],
            w: &w[..2048],
            bias: &b[..32],
            act: Activation::Identity,
            z: &mut z[..1024],
        };
        assert!(!layer::<32, 6, 32, 64, 32>(p));
        let p = Product::Forward {
            a: &a[..2048],
            w: &w[..2048],
            bias: &b[..31],
            act: Activation::Identity,
            z: &mut z[..1024],
        };
        assert!(!layer::<32, 6, 32, 64, 32>(p));
        let p = Product::InputGrads { dz: &a[..1024], w: &w[..2048], da: &mut z[..100] };
        assert!(!layer::<32, 6, 32, 64, 32>(p));
        // More rows than the batch, or no room for the transpose.
        let mut scratch = vec![0.0f32; 2048];
        let p = Product::WeightGrads {
            a: &a[..2048],
            dz: &w[..1024],
            gw: &mut z[..2048],
            rows: 33,
            scale: None,
            scratch: &mut scratch,
        };
        assert!(!layer::<32, 6, 32, 64, 32>(p));
        let p = Product::WeightGrads {
            a: &a[..2048],
            dz: &w[..1024],
            gw: &mut z[..2048],
            rows: 32,
            scale: None,
            scratch: &mut scratch[..2047],
        };
        assert!(!layer::<32, 6, 32, 64, 32>(p));
        assert!(z.iter().all(|&v| v == 7.0));
    }
}
