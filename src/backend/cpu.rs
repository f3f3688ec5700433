//! The CPU backend: the same functions as the OpenCL kernels, in plain Rust over the flat
//! column-major layouts of [`super`]. Generic over the model, so every loop bound is a
//! compile-time constant: at small shapes LLVM unrolls and vectorises the whole step. Above
//! [`PAR_MIN_MACS`] multiply-adds per layer the columns of a layer are spread over rayon's
//! threads.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::{layer_slot, layer_slots, Backend, Batch, Buffer, LayerSlot};
use crate::error::{Error, Result};
use crate::model::Model;

/// A layer with at least this many multiply-adds (`batch * in * out`) runs its columns on
/// rayon's thread pool; smaller ones run on the calling thread. Measured with
/// `benches/cpu_threshold.rs` on a 2-core machine: below about 2^16 the fork/join cost
/// (a few microseconds) is larger than the work saved. Override with the environment
/// variable `TENSORBRIDGE_PAR_MIN_MACS` (read once, at the first large-enough check).
pub const PAR_MIN_MACS: usize = 1 << 16;

/// The threshold in force: [`PAR_MIN_MACS`] or `TENSORBRIDGE_PAR_MIN_MACS`.
fn par_min_macs() -> usize {
    static VALUE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *VALUE.get_or_init(|| {
        std::env::var("TENSORBRIDGE_PAR_MIN_MACS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(PAR_MIN_MACS)
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
    _model: PhantomData<fn() -> M>,
}

impl<M: Model> CpuBackend<M> {
    pub(crate) fn new(flat: &[f32]) -> Self {
        let widest = M::LAYERS.iter().copied().max().unwrap_or(0);
        CpuBackend {
            params: flat.to_vec(),
            grads: vec![0.0; flat.len()],
            acts: M::LAYERS[1..].iter().map(|&d| vec![0.0; M::BATCH * d]).collect(),
            delta: vec![0.0; M::BATCH * widest],
            delta_below: vec![0.0; M::BATCH * widest],
            _model: PhantomData,
        }
    }

    /// Runs every layer on `x`; the logits end up in the last of `self.acts`.
    #[inline(always)]
    fn run_forward(&mut self, x: &[f32]) {
        let layers = M::LAYERS.len() - 1;
        for (l, slot) in layer_slots(M::LAYERS).enumerate() {
            let (below, here) = self.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 { x } else { &below[l - 1] };
            dense_forward(input, &self.params, slot, &mut here[0], M::BATCH, l + 1 < layers);
        }
    }

    fn logits(&self) -> &[f32] {
        self.acts.last().map_or(&[], Vec::as_slice)
    }

    /// Forward and backward: fills `self.grads`, returns the loss.
    #[inline(always)]
    fn run_gradients(&mut self, batch: Batch<'_>) -> f32 {
        self.run_forward(batch.x);
        let classes = M::CLASSES;
        let n = M::BATCH * classes;
        let logits = self.acts.last().map_or(&[][..], Vec::as_slice);
        let loss = softmax_xent(logits, batch.y, batch.rows, M::BATCH, classes, &mut self.delta[..n]);
        for l in (0..M::LAYERS.len() - 1).rev() {
            let slot = layer_slot(M::LAYERS, l);
            let input: &[f32] = if l == 0 { batch.x } else { &self.acts[l - 1] };
            let (w, b) = (slot.w, slot.b);
            let (gw, gb) = self.grads[w..b + slot.fan_out].split_at_mut(b - w);
            let dz = &self.delta[..M::BATCH * slot.fan_out];
            weight_grads(input, dz, gw, gb, slot, M::BATCH);
            if l > 0 {
                let da = &mut self.delta_below[..M::BATCH * slot.fan_in];
                input_grads(&self.params[w..b], dz, da, input, slot, M::BATCH);
                std::mem::swap(&mut self.delta, &mut self.delta_below);
            }
        }
        loss
    }
}


impl<M: Model> Backend for CpuBackend<M> {
    fn upload(&self, data: &[f32]) -> Result<Buffer> {
        Ok(Buffer::Host(data.into()))
    }

    fn write_params(&mut self, flat: &[f32]) -> Result<()> {
        self.params.copy_from_slice(flat);
        Ok(())
    }

    fn read_params(&self, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&self.params);
        Ok(())
    }

    fn forward(&mut self, x: &Buffer) -> Result<Buffer> {
        let Buffer::Host(x) = x else {
            return Err(Error::DeviceMismatch { tensor_device: x.location(), model_device: "the CPU".to_string() });
        };
        self.run_forward(x);
        Ok(Buffer::Host(self.logits().into()))
    }

    fn logits_into(&mut self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.run_forward(x);
        out.copy_from_slice(self.logits());
        Ok(())
    }

    fn loss(&mut self, batch: Batch<'_>) -> Result<f32> {
        self.run_forward(batch.x);
        let n = M::BATCH * M::CLASSES;
        let logits = self.acts.last().map_or(&[][..], Vec::as_slice);
        Ok(softmax_xent(logits, batch.y, batch.rows, M::BATCH, M::CLASSES, &mut self.delta[..n]))
    }

    fn gradients(&mut self, batch: Batch<'_>, out: &mut [f32]) -> Result<f32> {
        let loss = self.run_gradients(batch);
        out.copy_from_slice(&self.grads);
        Ok(loss)
    }

    fn train_step(&mut self, batch: Batch<'_>, lr: f32) -> Result<f32> {
        let loss = self.run_gradients(batch);
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss { loss });
        }
        sgd(&mut self.params, &self.grads, lr);
        Ok(loss)
    }
}

/// `z = a · W + b` for one layer (ReLU after it when `relu`). `a` is `[batch x in]`, `z`
/// `[batch x out]`, both column-major; column `o` of `z` is `b[o] + Σ_i W[i, o] · a[:, i]`.
#[inline(always)]
fn dense_forward(a: &[f32], params: &[f32], slot: LayerSlot, z: &mut [f32], batch: usize, relu: bool) {
    let w = &params[slot.w..slot.b];
    let bias = &params[slot.b..slot.b + slot.fan_out];
    let column = |(o, zc): (usize, &mut [f32])| {
        zc.fill(bias[o]);
        for (i, &wio) in w[o * slot.fan_in..(o + 1) * slot.fan_in].iter().enumerate() {
            for (zr, &ar) in zc.iter_mut().zip(&a[i * batch..(i + 1) * batch]) {
                *zr += ar * wio;
            }
        }
        if relu {
            relu_in_place(zc);
        }
    };
    if parallel(batch * slot.fan_in * slot.fan_out) {
        z.par_chunks_exact_mut(batch).enumerate().for_each(column);
    } else {
        z.chunks_exact_mut(batch).enumerate().for_each(column);
    }
}

/// ReLU that keeps NaN (so a diverged value still surfaces as a non-finite loss).
#[inline(always)]
fn relu_in_place(v: &mut [f32]) {
    for x in v {
        if *x < 0.0 {
            *x = 0.0;
        }
    }
}

/// Mean softmax cross-entropy over the first `rows` rows of the logits `z`
/// (`[batch x classes]`, column-major), computed stably (log-sum-exp around the row
/// maximum). Writes dL/dz into `dz` (zero for the padding rows).
#[inline(always)]
pub(crate) fn softmax_xent(z: &[f32], y: &[u32], rows: usize, batch: usize, classes: usize, dz: &mut [f32]) -> f32 {
    let inv_rows = 1.0 / rows as f32;
    let mut total = 0.0f32;
    for r in 0..batch {
        if r >= rows {
            for c in 0..classes {
                dz[c * batch + r] = 0.0;
            }
            continue;
        }
        // The row's maximum contributes exp(0) = 1 exactly: sum = 1 + rest, and
        // ln(sum) = ln_1p(rest) keeps a confident row's tiny loss accurate.
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
        // (max - z_label) first: exact when the label holds the maximum.
        total += (max - z[label * batch + r]) + rest.ln_1p();
        let scale = inv_rows / (1.0 + rest);
        for c in 0..classes {
            dz[c * batch + r] *= scale;
        }
        dz[label * batch + r] -= inv_rows;
    }
    total * inv_rows
}

/// dL/dW and dL/db of one layer: `gW[i, o] = Σ_r a[r, i] · dz[r, o]`, `gb[o] = Σ_r dz[r, o]`.
#[inline(always)]
fn weight_grads(a: &[f32], dz: &[f32], gw: &mut [f32], gb: &mut [f32], slot: LayerSlot, batch: usize) {
    let column = |(o, gwc): (usize, &mut [f32])| {
        let dzc = &dz[o * batch..(o + 1) * batch];
        for (i, g) in gwc.iter_mut().enumerate() {
            *g = dot(&a[i * batch..(i + 1) * batch], dzc);
        }
    };
    if parallel(batch * slot.fan_in * slot.fan_out) {
        gw.par_chunks_exact_mut(slot.fan_in).enumerate().for_each(column);
    } else {
        gw.chunks_exact_mut(slot.fan_in).enumerate().for_each(column);
    }
    for (o, g) in gb.iter_mut().enumerate() {
        *g = dz[o * batch..(o + 1) * batch].iter().sum();
    }
}

/// dL/d(pre-activation) of the layer below: `da[r, i] = Σ_o dz[r, o] · W[i, o]`, times the
/// ReLU derivative (`a[r, i] > 0`, `a` being that layer's output).
#[inline(always)]
fn input_grads(w: &[f32], dz: &[f32], da: &mut [f32], a: &[f32], slot: LayerSlot, batch: usize) {
    let column = |(i, dac): (usize, &mut [f32])| {
        dac.fill(0.0);
        for o in 0..slot.fan_out {
            let wio = w[o * slot.fan_in + i];
            for (d, &g) in dac.iter_mut().zip(&dz[o * batch..(o + 1) * batch]) {
                *d += g * wio;
            }
        }
        for (d, &ar) in dac.iter_mut().zip(&a[i * batch..(i + 1) * batch]) {
            if ar <= 0.0 {
                *d = 0.0;
            }
        }
    };
    if parallel(batch * slot.fan_in * slot.fan_out) {
        da.par_chunks_exact_mut(batch).enumerate().for_each(column);
    } else {
        da.chunks_exact_mut(batch).enumerate().for_each(column);
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `p -= lr * g`, elementwise.
#[inline(always)]
fn sgd(params: &mut [f32], grads: &[f32], lr: f32) {
    for (p, g) in params.iter_mut().zip(grads) {
        *p -= lr * g;
    }
}
