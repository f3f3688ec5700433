//! The loss: mean softmax cross-entropy over a batch's rows that count, and its gradient
//! with respect to the logits. The CPU core's function ([`softmax_xent`]) and the kernels'
//! per-row macro (`TB_ROW_LOSS`, [`write_opencl`]) are the same formula: per row, stably
//! around the row's maximum `m`, `loss_r = (m - z[label]) + ln(1 + rest)` with
//! `rest = Σ_{c != top} e^(z_c - m)`, and `dz_c = e^(z_c - m) / (1 + rest) / rows`, minus
//! `1 / rows` at the label; padding rows get `dz = 0`. A NaN logit makes the loss NaN
//! (never silently finite).
//!
//! The exponential is a primitive of the caller's ([`Exp`]): the CPU core passes its own,
//! the same bits on every platform; the kernels use OpenCL's `exp`.

use core::fmt::{self, Write};

/// The exponential [`softmax_xent`] is computed with.
pub trait Exp {
    /// Logits a batch (`batch * classes`) from which the exponentials are taken in a loop
    /// that vectorises ([`Exp::exp_lanes`]), below which in a scalar loop that skips the
    /// top class's.
    const VECTOR_MIN: usize;
    /// `e^x`.
    fn exp(x: f32) -> f32;
    /// `e^x`, the same bits as [`Exp::exp`], without a branch (so that a loop of calls
    /// vectorises).
    fn exp_lanes(x: f32) -> f32;
}

/// Mean softmax cross-entropy over the first `rows` rows of the logits `z`
/// (`[batch x classes]`, column-major), computed stably (log-sum-exp around the row
/// maximum). Writes dL/dz into `dz` (zero for the padding rows).
///
/// Rows go in blocks of 16 (`ROW_BLOCK`): each stage runs over the block's rows before the
/// next, so that the exponentials of several rows are independent work the CPU overlaps
/// (one row at a time, a small class count left it waiting on each `exp` in turn). Every
/// sum is still taken in row and class order: the result is the same bit for bit.
#[inline(always)]
pub fn softmax_xent<E: Exp>(z: &[f32], y: &[u32], rows: usize, batch: usize, classes: usize, dz: &mut [f32]) -> f32 {
    let inv_rows = 1.0 / rows as f32;
    // loss = Σ_r (max_r - z[r, y_r]) + Σ_r ln(1 + rest_r). The logarithms are summed as the
    // logarithm of a product, one `ln` per batch instead of one per row (iris's step: 400 ->
    // 325 ns). All in f32: the product is kept as `q = Π(1 + rest_r) - 1`, updated as
    // `q + rest + q·rest`, and its logarithm taken as `ln_1p(q)`, so that a confident row's
    // tiny rest (1e-6) keeps all its digits, as it would not in `1 + rest`.
    let mut gaps = 0.0f32;
    let mut q = 0.0f32;
    let mut logs = 0.0f32;
    // Columns through `chunks_exact`, `rows <= batch` stated, and the labels' logits through
    // `get` (the labels were checked): no index can fail, so no panic path is compiled in.
    let rows = rows.min(batch);
    let z = &z[..(batch * classes).min(z.len())];
    for dzc in dz.chunks_exact_mut(batch) {
        dzc[rows..].fill(0.0);
    }
    let mut r0 = 0;
    while r0 < rows {
        let n = ROW_BLOCK.min(rows - r0);
        let block = r0..r0 + n;
        let mut top = [0u32; ROW_BLOCK];
        let mut max = [0.0f32; ROW_BLOCK];
        let mut rest = [0.0f32; ROW_BLOCK];
        // Each row's first largest logit, class by class over the block's rows (selects,
        // so that it vectorises): `max[i]` is always `z[top[i], r]`.
        let mut columns = z.chunks_exact(batch);
        if let Some(z0) = columns.next() {
            max[..n].copy_from_slice(&z0[block.clone()]);
        }
        for (c, zc) in columns.enumerate() {
            for ((m, t), &v) in max[..n].iter_mut().zip(&mut top[..n]).zip(&zc[block.clone()]) {
                let above = v > *m;
                *m = if above { v } else { *m };
                *t = if above { c as u32 + 1 } else { *t };
            }
        }
        // The row's maximum contributes exp(0) = 1 exactly: sum = 1 + rest.
        let columns = z.chunks_exact(batch).zip(dz.chunks_exact_mut(batch)).enumerate();
        if batch * classes >= E::VECTOR_MIN {
            // Slices of the block's length and selects: the loop vectorises, exp included
            // (computed for the top class too, then not used).
            for (c, (zc, dc)) in columns {
                let lanes = zc[block.clone()].iter().zip(&mut dc[block.clone()]).zip(&top[..n]).zip(&max[..n]);
                for ((((&v, d), &t), &m), s) in lanes.zip(&mut rest[..n]) {
                    let top = c == t as usize;
                    let e = if top { 1.0 } else { E::exp_lanes(v - m) };
                    *d = e;
                    // rest + 0.0 is rest, bit for bit (rest >= +0.0).
                    *s += if top { 0.0 } else { e };
                }
            }
        } else {
            // Few values: scalar code that skips the top class's exp is faster.
            for (c, (zc, dc)) in columns {
                let lanes = zc[block.clone()].iter().zip(&mut dc[block.clone()]).zip(&top[..n]).zip(&max[..n]);
                for ((((&v, d), &t), &m), s) in lanes.zip(&mut rest[..n]) {
                    let top = c == t as usize;
                    let e = if top { 1.0 } else { E::exp(v - m) };
                    *d = e;
                    if !top {
                        *s += e;
                    }
                }
            }
        }
        let mut scale = [0.0f32; ROW_BLOCK];
        for (i, r) in block.clone().enumerate() {
            let label = y.get(r).map_or(0, |&l| l as usize);
            // (max - z_label): exactly 0 when the label holds the maximum.
            gaps += max[i] - z.get(label * batch + r).copied().unwrap_or(f32::NAN);
            q = q + rest[i] + q * rest[i];
            if q > 1e30 {
                // Each factor is at most `classes` (< 2^21): flushing here keeps q finite.
                logs += libm::log1pf(q);
                q = 0.0;
            }
            scale[i] = inv_rows / (1.0 + rest[i]);
        }
        // dz = softmax / rows, class by class over the block's rows (so that it vectorises),
        // then minus 1 / rows at each row's label.
        for dc in dz.chunks_exact_mut(batch) {
            for (d, &s) in dc[block.clone()].iter_mut().zip(&scale[..n]) {
                *d *= s;
            }
        }
        for r in block {
            let label = y.get(r).map_or(0, |&l| l as usize);
            if let Some(d) = dz.get_mut(label * batch + r) {
                *d -= inv_rows;
            }
        }
        r0 += n;
    }
    (gaps + logs + libm::log1pf(q)) * inv_rows
}

/// Rows of [`softmax_xent`]'s blocks.
const ROW_BLOCK: usize = 16;

/// Writes `TB_ROW_LOSS(Z, DZ, LABEL, INV_ROWS, OUT_LOSS)`, the loss of one row of the
/// logits `Z` (stride `TB_BATCH`) into `OUT_LOSS` and its `DZ`, for the kernels' prelude:
/// the loss kernel and the fused and tiny kernels share it, so that they compute exactly
/// the same arithmetic. The row's maximum contributes `exp(0) = 1` exactly, so
/// `log(sum) = log1p(rest)`, which keeps a confident row's tiny loss accurate (as the CPU
/// core does).
pub fn write_opencl(out: &mut impl Write) -> fmt::Result {
    out.write_str(OPENCL_ROW_LOSS)
}

const OPENCL_ROW_LOSS: &str = r"#define TB_ROW_LOSS(Z, DZ, LABEL, INV_ROWS, OUT_LOSS)                     \
    do {                                                                  \
        int top_ = 0;                                                     \
        for (int c_ = 1; c_ < TB_CLASSES; ++c_) {                         \
            if (Z[c_ * TB_BATCH] > Z[top_ * TB_BATCH]) {                  \
                top_ = c_;                                                \
            }                                                             \
        }                                                                 \
        const float m_ = Z[top_ * TB_BATCH];                              \
        float rest_ = 0.0f;                                               \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            const float e_ = (c_ == top_) ? 1.0f : exp(Z[c_ * TB_BATCH] - m_); \
            DZ[c_ * TB_BATCH] = e_;                                       \
            if (c_ != top_) {                                             \
                rest_ += e_;                                              \
            }                                                             \
        }                                                                 \
        OUT_LOSS = (m_ - Z[(LABEL) * TB_BATCH]) + log1p(rest_);          \
        const float scale_ = (INV_ROWS) / (1.0f + rest_);                 \
        for (int c_ = 0; c_ < TB_CLASSES; ++c_) {                         \
            DZ[c_ * TB_BATCH] *= scale_;                                  \
        }                                                                 \
        DZ[(LABEL) * TB_BATCH] -= (INV_ROWS);                             \
    } while (0)
";
