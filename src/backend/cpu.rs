//! The CPU backend: the same functions as the OpenCL kernels, in plain Rust over the flat
//! column-major layouts of [`super`]. Generic over the model, so every loop bound is a
//! compile-time constant: at small shapes LLVM unrolls and vectorises the whole step. Layers
//! of at least [`GEMM_MIN_MACS`] multiply-adds go through the `gemm` crate's packed kernels,
//! and from [`PAR_MIN_MACS`] on those run on rayon's threads.
//!
//! `f16` storage: the parameters are held as `f32` values that are all exactly
//! representable in `f16` (rounded to nearest-even when set and after every SGD step, as the
//! OpenCL kernels' `vstore_half_rte`), and an `f16` batch is widened into a scratch buffer
//! before the step. The arithmetic is then exactly the `f32` path's; `f32` models skip both
//! conversions at compile time (see `StorageElement::as_f32_slice`).

use std::marker::PhantomData;

use rayon::prelude::*;

use super::{layer_slot, layer_slots, update_limit, update_overflow, Backend, Batch, Buffer, LayerSlot};
use crate::error::{Error, Result};
use crate::model::{Model, Params, StorageElement};

/// A layer with at least this many multiply-adds (`batch * in * out`) splits its GEMMs
/// over rayon's threads; smaller ones run on the calling thread. Measured with
/// `benches/cpu_threshold.rs` on a 2-core machine (train steps of linear layers, threads
/// against one thread): 0.29x at 2^17, 0.61x at 2^22, 0.87x at 2^23, 1.6x at 2^24, 1.9x
/// at 2^26 — waking the pool costs tens of microseconds there. Override with the
/// environment variable `TENSORBRIDGE_PAR_MIN_MACS` (read once, at the first check).
pub const PAR_MIN_MACS: usize = 12 << 20;

/// A layer with at least this many multiply-adds goes through the `gemm` crate's packed
/// kernels; smaller ones through the loops here, whose constant bounds LLVM unrolls (the
/// seed and iris shapes stay there). Chosen, not measured: below a few thousand
/// multiply-adds, packing costs more than it saves.
pub const GEMM_MIN_MACS: usize = 1 << 13;

/// The threshold in force: [`PAR_MIN_MACS`] or `TENSORBRIDGE_PAR_MIN_MACS`.
fn par_min_macs() -> usize {
    static VALUE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("TENSORBRIDGE_PAR_MIN_MACS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(PAR_MIN_MACS)
    })
}

/// Whether a layer of `macs` multiply-adds is worth spreading over threads. Layers smaller
/// than 4096 multiply-adds never are, which keeps the tiny models' hot path free of even
/// the threshold lookup.
#[inline(always)]
fn parallel(macs: usize) -> bool {
    macs >= 4096 && macs >= par_min_macs()
}

/// The CPU backend of model `M`.
pub(crate) struct CpuBackend<M> {
    params: Vec<f32>,
    grads: Vec<f32>,
    /// `acts[l]`: output of layer `l`, `[batch x out_l]` (after ReLU for hidden layers);
    /// the last one holds the logits.
    acts: Vec<Vec<f32>>,
    /// dL/d(pre-activation) of the layer being back-propagated, and of the one below it.
    delta: Vec<f32>,
    delta_below: Vec<f32>,
    /// The batch widened to `f32` (`f16` storage only; empty for `f32`).
    x32: Vec<f32>,
    _model: PhantomData<fn() -> M>,
}

impl<M: Model> CpuBackend<M> {
    pub(crate) fn new(flat: &[M::Storage]) -> Self {
        let widest = M::LAYERS.iter().copied().max().unwrap_or(0);
        CpuBackend {
            params: flat.iter().map(|v| v.to_f32()).collect(),
            grads: vec![0.0; flat.len()],
            acts: M::LAYERS[1..].iter().map(|&d| vec![0.0; M::BATCH * d]).collect(),
            delta: vec![0.0; M::BATCH * widest],
            delta_below: vec![0.0; M::BATCH * widest],
            x32: Vec::new(),
            _model: PhantomData,
        }
    }

    /// Runs every layer on `x`; the logits end up in the last of `self.acts`.
    #[inline(always)]
    fn run_forward(&mut self, x: &[f32]) {
        let layers = M::LAYERS.len() - 1;
        for (l, slot) in layer_slots(M::LAYERS).enumerate() {
            let (below, here) = self.acts.split_at_mut(l);
            // Slices of constant length: the bounds checks inside fold away.
            let input: &[f32] =
                if l == 0 { &x[..M::BATCH * M::FEATURES] } else { &below[l - 1][..M::BATCH * slot.fan_in] };
            let z = &mut here[0][..M::BATCH * slot.fan_out];
            dense_forward(input, &self.params[..<M::Params as Params>::LEN], slot, z, M::BATCH, l + 1 < layers);
        }
    }

    /// Runs `f` on the batch as `f32`: the slice itself for `f32` storage, else widened
    /// into `self.x32`.
    #[inline(always)]
    fn with_x32<R>(&mut self, x: &[M::Storage], f: impl FnOnce(&mut Self, &[f32]) -> R) -> R {
        if let Some(x) = M::Storage::as_f32_slice(x) {
            return f(self, x);
        }
        let mut x32 = std::mem::take(&mut self.x32);
        x32.clear();
        x32.extend(x.iter().map(|v| v.to_f32()));
        let out = f(self, &x32);
        self.x32 = x32;
        out
    }

    fn logits(&self) -> &[f32] {
        self.acts.last().map_or(&[], Vec::as_slice)
    }

    /// Forward and backward: fills `self.grads`, returns the loss.
    #[inline(always)]
    fn run_gradients(&mut self, batch: Batch<'_, M::Storage>) -> f32 {
        self.with_x32(batch.x, |this, x| this.run_gradients_f32(x, batch.y, batch.rows))
    }

    #[inline(always)]
    fn run_gradients_f32(&mut self, x: &[f32], y: &[u32], rows: usize) -> f32 {
        let batch = Batch { x, y, rows };
        self.run_forward(batch.x);
        let classes = M::CLASSES;
        let n = M::BATCH * classes;
        let logits = &self.acts.last().map_or(&[][..], Vec::as_slice)[..n];
        let (y, dz) = (&batch.y[..M::BATCH], &mut self.delta[..n]);
        let loss = if batch.rows == M::BATCH {
            softmax_xent(logits, y, M::BATCH, M::BATCH, classes, dz)
        } else {
            softmax_xent(logits, y, batch.rows, M::BATCH, classes, dz)
        };
        for l in (0..M::LAYERS.len() - 1).rev() {
            let slot = layer_slot(M::LAYERS, l);
            let input: &[f32] =
                if l == 0 { &batch.x[..M::BATCH * M::FEATURES] } else { &self.acts[l - 1][..M::BATCH * slot.fan_in] };
            let (w, b) = (slot.w, slot.b);
            let (gw, gb) = self.grads[w..b + slot.fan_out].split_at_mut(b - w);
            let dz = &self.delta[..M::BATCH * slot.fan_out];
            // A full batch passes `rows` as the constant it then is, so that the small
            // layers' loops unroll completely.
            if batch.rows == M::BATCH {
                weight_grads(input, dz, gw, gb, slot, M::BATCH, M::BATCH);
            } else {
                weight_grads(input, dz, gw, gb, slot, M::BATCH, batch.rows);
            }
            if l > 0 {
                let da = &mut self.delta_below[..M::BATCH * slot.fan_in];
                input_grads(&self.params[w..b], dz, da, input, slot, M::BATCH);
                std::mem::swap(&mut self.delta, &mut self.delta_below);
            }
        }
        loss
    }
}

impl<M: Model> Backend<M::Storage> for CpuBackend<M> {
    fn upload(&self, data: &[M::Storage]) -> Result<Buffer> {
        Ok(Buffer::Host(match M::Storage::as_f32_slice(data) {
            Some(data) => data.into(),
            None => data.iter().map(|v| v.to_f32()).collect(),
        }))
    }

    fn write_params(&mut self, flat: &[M::Storage]) -> Result<()> {
        match M::Storage::as_f32_slice(flat) {
            Some(flat) => self.params.copy_from_slice(flat),
            None => {
                for (p, v) in self.params.iter_mut().zip(flat) {
                    *p = v.to_f32();
                }
            }
        }
        Ok(())
    }

    fn read_params(&self, out: &mut [M::Storage]) -> Result<()> {
        match M::Storage::as_f32_slice_mut(out) {
            Some(out) => out.copy_from_slice(&self.params),
            None => {
                for (o, &p) in out.iter_mut().zip(&self.params) {
                    *o = M::Storage::from_f32(p);
                }
            }
        }
        Ok(())
    }

    fn forward(&mut self, x: &Buffer) -> Result<Buffer> {
        let Buffer::Host(x) = x else {
            return Err(Error::DeviceMismatch { tensor_device: x.location(), model_device: "the CPU".to_string() });
        };
        self.run_forward(x);
        Ok(Buffer::Host(self.logits().into()))
    }

    fn logits_into(&mut self, x: &[M::Storage], out: &mut [f32]) -> Result<()> {
        self.with_x32(x, |this, x| this.run_forward(x));
        out.copy_from_slice(self.logits());
        Ok(())
    }

    fn loss(&mut self, batch: Batch<'_, M::Storage>) -> Result<f32> {
        self.with_x32(batch.x, |this, x| this.run_forward(x));
        let n = M::BATCH * M::CLASSES;
        let logits = self.acts.last().map_or(&[][..], Vec::as_slice);
        Ok(softmax_xent(logits, batch.y, batch.rows, M::BATCH, M::CLASSES, &mut self.delta[..n]))
    }

    fn gradients(&mut self, batch: Batch<'_, M::Storage>, out: &mut [f32]) -> Result<f32> {
        let loss = self.run_gradients(batch);
        out.copy_from_slice(&self.grads);
        Ok(loss)
    }

    fn train_step(&mut self, batch: Batch<'_, M::Storage>, lr: f32) -> Result<f32> {
        let loss = self.run_gradients(batch);
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss { loss });
        }
        let n = <M::Params as Params>::LEN;
        sgd_checked::<M::Storage>(M::LAYERS, &mut self.params[..n], &mut self.grads[..n], lr)?;
        Ok(loss)
    }
}

/// `z = a · W + b` for one layer (ReLU after it when `relu`). `a` is `[batch x in]`, `z`
/// `[batch x out]`, both column-major; column `o` of `z` is `b[o] + Σ_i W[i, o] · a[:, i]`.
#[inline(always)]
fn dense_forward(a: &[f32], params: &[f32], slot: LayerSlot, z: &mut [f32], batch: usize, relu: bool) {
    let w = &params[slot.w..slot.b];
    let bias = &params[slot.b..slot.b + slot.fan_out];
    let macs = batch * slot.fan_in * slot.fan_out;
    if macs >= GEMM_MIN_MACS {
        for (zc, &bo) in z.chunks_exact_mut(batch).zip(bias) {
            zc.fill(bo);
        }
        // z += a · W
        let a = View::col_major(a, batch, slot.fan_in);
        let w = View::col_major(w, slot.fan_in, slot.fan_out);
        gemm_acc(z, batch, slot.fan_out, a, w, macs);
        if relu {
            relu_in_place(z);
        }
        return;
    }
    // Small layers: plain loops over constant bounds, which LLVM unrolls completely at
    // the smallest shapes.
    for o in 0..slot.fan_out {
        let zc = &mut z[o * batch..(o + 1) * batch];
        zc.fill(bias[o]);
        for i in 0..slot.fan_in {
            let wio = w[o * slot.fan_in + i];
            for (zr, &ar) in zc.iter_mut().zip(&a[i * batch..(i + 1) * batch]) {
                *zr += ar * wio;
            }
        }
        if relu {
            relu_in_place(zc);
        }
    }
}

/// ReLU that keeps NaN (so a diverged value still surfaces as a non-finite loss).
#[inline(always)]
fn relu_in_place(v: &mut [f32]) {
    for x in v {
        // A select, not a conditional store, so that it vectorises.
        *x = if *x < 0.0 { 0.0 } else { *x };
    }
}

/// `d *= (a > 0)`: the ReLU derivative applied to a delta, as a select.
#[inline(always)]
fn relu_mask(d: &mut [f32], a: &[f32]) {
    for (d, &a) in d.iter_mut().zip(a) {
        *d = if a > 0.0 { *d } else { 0.0 };
    }
}

/// Mean softmax cross-entropy over the first `rows` rows of the logits `z`
/// (`[batch x classes]`, column-major), computed stably (log-sum-exp around the row
/// maximum). Writes dL/dz into `dz` (zero for the padding rows).
#[inline(always)]
pub(crate) fn softmax_xent(z: &[f32], y: &[u32], rows: usize, batch: usize, classes: usize, dz: &mut [f32]) -> f32 {
    let inv_rows = 1.0 / rows as f32;
    // loss = Σ_r (max_r - z[r, y_r]) + Σ_r ln(1 + rest_r). The logarithms are summed as the
    // logarithm of a product kept in f64: one `ln` per batch instead of one per row (iris's
    // step: 400 -> 325 ns), and 1 + rest loses nothing of a confident row's tiny rest.
    let mut gaps = 0.0f32;
    let mut product = 1.0f64;
    let mut logs = 0.0f64;
    for r in 0..batch {
        if r >= rows {
            for c in 0..classes {
                dz[c * batch + r] = 0.0;
            }
            continue;
        }
        // The row's maximum contributes exp(0) = 1 exactly: sum = 1 + rest.
        let mut top = 0;
        for c in 1..classes {
            if z[c * batch + r] > z[top * batch + r] {
                top = c;
            }
        }
        let max = z[top * batch + r];
        let mut rest = 0.0f32;
        for c in 0..classes {
            let e = if c == top { 1.0 } else { (z[c * batch + r] - max).exp() };
            dz[c * batch + r] = e;
            if c != top {
                rest += e;
            }
        }
        let label = y[r] as usize;
        // (max - z_label): exactly 0 when the label holds the maximum.
        gaps += max - z[label * batch + r];
        product *= 1.0 + f64::from(rest);
        if product > 1e300 {
            // Each factor is at most `classes` (< 2^21): flushing here keeps f64 finite.
            logs += product.ln();
            product = 1.0;
        }
        let scale = inv_rows / (1.0 + rest);
        for c in 0..classes {
            dz[c * batch + r] *= scale;
        }
        dz[label * batch + r] -= inv_rows;
    }
    // ln(product) is as accurate as ln_1p(product - 1) here: the product itself is what
    // f64 holds to 1e-16, and a confident row's 1 + 1e-6 keeps ten significant digits.
    ((f64::from(gaps) + logs + product.ln()) * f64::from(inv_rows)) as f32
}

/// dL/dW and dL/db of one layer: `gW[i, o] = Σ_r a[r, i] · dz[r, o]`, `gb[o] = Σ_r dz[r, o]`,
/// summed over the first `rows` rows only: a padding row never enters a gradient, even
/// when its activations overflowed (inf · 0 would be NaN).
#[inline(always)]
fn weight_grads(a: &[f32], dz: &[f32], gw: &mut [f32], gb: &mut [f32], slot: LayerSlot, batch: usize, rows: usize) {
    for (o, g) in gb.iter_mut().enumerate() {
        *g = sum(&dz[o * batch..o * batch + rows]);
    }
    let macs = rows * slot.fan_in * slot.fan_out;
    if macs >= GEMM_MIN_MACS {
        // gW = aᵀ · dz over the valid rows: column-major views with `rows` rows and a
        // column stride of `batch`.
        gw.fill(0.0);
        let at = View { data: a, rows, cols: slot.fan_in, rs: 1, cs: batch }.t();
        let dz = View { data: dz, rows, cols: slot.fan_out, rs: 1, cs: batch };
        gemm_acc(gw, slot.fan_in, slot.fan_out, at, dz, macs);
        return;
    }
    for o in 0..slot.fan_out {
        let dzc = &dz[o * batch..o * batch + rows];
        for i in 0..slot.fan_in {
            let ac = &a[i * batch..i * batch + rows];
            gw[o * slot.fan_in + i] = ac.iter().zip(dzc).fold(0.0, |g, (x, d)| g + x * d);
        }
    }
}

/// dL/d(pre-activation) of the layer below: `da[r, i] = Σ_o dz[r, o] · W[i, o]`, times the
/// ReLU derivative (`a[r, i] > 0`, `a` being that layer's output).
#[inline(always)]
fn input_grads(w: &[f32], dz: &[f32], da: &mut [f32], a: &[f32], slot: LayerSlot, batch: usize) {
    let macs = batch * slot.fan_in * slot.fan_out;
    if macs >= GEMM_MIN_MACS {
        // da = dz · Wᵀ, then the ReLU mask
        da.fill(0.0);
        let dzv = View::col_major(dz, batch, slot.fan_out);
        let wt = View::col_major(w, slot.fan_in, slot.fan_out).t();
        gemm_acc(da, batch, slot.fan_in, dzv, wt, macs);
        relu_mask(da, a);
        return;
    }
    for i in 0..slot.fan_in {
        let dac = &mut da[i * batch..(i + 1) * batch];
        dac.fill(0.0);
        for o in 0..slot.fan_out {
            let wio = w[o * slot.fan_in + i];
            for (d, &g) in dac.iter_mut().zip(&dz[o * batch..(o + 1) * batch]) {
                *d += g * wio;
            }
        }
        relu_mask(dac, &a[i * batch..(i + 1) * batch]);
    }
}

/// A read-only strided matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A column-major `rows x cols` matrix.
    fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data, rows, cols, rs: 1, cs: rows }
    }
    /// The transpose (no copy).
    fn t(self) -> Self {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    /// Columns `c0..c1` (no copy). Out-of-range columns give a view that fails
    /// [`View::in_bounds`].
    fn columns(self, c0: usize, c1: usize) -> Self {
        let data = self.data.get(c0 * self.cs..).unwrap_or(&[]);
        View { data, cols: c1.saturating_sub(c0), ..self }
    }
    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Columns of `dst` per thread, at least: narrower parts cost more in packing than the
/// second thread saves.
const MIN_COLUMNS_PER_THREAD: usize = 16;

/// `dst += lhs · rhs` with `dst` column-major `m x n`, through the `gemm` crate (packed,
/// cache-blocked, AVX-512 where the CPU has it). When `macs` is large, the columns of `dst`
/// are split over rayon's threads, one single-threaded GEMM each: the `gemm` crate's own
/// rayon split of these shapes kept to one thread in most calls (measured at 256 x 1024 x
/// 1024: median 4.7 ms with it, 2.4 ms with this split, on 2 cores).
fn gemm_acc(dst: &mut [f32], m: usize, n: usize, lhs: View<'_>, rhs: View<'_>, macs: usize) {
    let threads = rayon::current_num_threads();
    let parts = threads.min(n / MIN_COLUMNS_PER_THREAD);
    if parallel(macs) && parts > 1 {
        let per = n.div_ceil(parts);
        dst.par_chunks_mut(per * m).enumerate().for_each(|(p, part)| {
            let (c0, c1) = (p * per, (p * per + per).min(n));
            gemm_serial(part, m, c1 - c0, lhs, rhs.columns(c0, c1));
        });
    } else {
        gemm_serial(dst, m, n, lhs, rhs);
    }
}

/// `dst += lhs · rhs` on the calling thread.
fn gemm_serial(dst: &mut [f32], m: usize, n: usize, lhs: View<'_>, rhs: View<'_>) {
    let k = lhs.cols;
    // The shapes come from the model's constants; a mismatch is a bug in this file.
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n && dst.len() == m * n && lhs.in_bounds() && rhs.in_bounds(),
        "gemm operand shapes disagree"
    );
    // SAFETY: the assert above checked that `dst` holds exactly the m x n column-major
    // result and that every element `(r, c)` of `lhs` (m x k) and `rhs` (k x n) addressed
    // through its strides lies inside its slice; `dst` is a unique borrow, so it aliases
    // neither operand. `gemm` reads and writes nothing else.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            m as isize,
            1,
            true,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Sum with eight independent accumulators.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for k in 0..8 {
            acc[k] += x[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `p -= lr * g`, elementwise (in parallel chunks for large models), each result rounded
/// to the storage type `T` (a no-op for `f32`), refused when a result would not be finite
/// in `T` (an `f32` overflow, or beyond `f16`'s ±65504). The new values go into `grads`
/// (which the step no longer needs) in one branch-free pass that also folds whether each
/// fits, and only then are copied over `params`: on refusal `params` is untouched (`grads`
/// holds the rejected values) and the error names the first parameter that overflowed.
/// Against the unchecked update, this costs one copy of the parameters per step.
#[inline(always)]
fn sgd_checked<T: StorageElement>(dims: &[usize], params: &mut [f32], grads: &mut [f32], lr: f32) -> Result<()> {
    let limit = update_limit::<T>();
    let step = |p: &[f32], g: &mut [f32]| {
        p.iter().zip(g.iter_mut()).fold(true, |ok, (p, g)| {
            let v = *p - lr * *g;
            *g = T::round_f32(v);
            ok & (v.abs() < limit)
        })
    };
    const CHUNK: usize = 1 << 15;
    let ok = if params.len() >= 4 * CHUNK {
        params.par_chunks(CHUNK).zip(grads.par_chunks_mut(CHUNK)).map(|(p, g)| step(p, g)).reduce(|| true, |a, b| a & b)
    } else {
        step(params, grads)
    };
    if !ok {
        // `round(v)` is non-finite exactly when `|v| >= limit` (or `v` is NaN).
        let k = grads.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(update_overflow::<T>(dims, k));
    }
    params.copy_from_slice(grads);
    Ok(())
}
