//! The int8 model with the standard library: quantising an [`Engine`]'s model, inference on
//! the model's device, `evaluate` (feature `train`), and safetensors `save`/`load` (feature
//! `checkpoint`). The scheme and the integer forward pass are the core's,
//! [`quant`](crate::quant).

use crate::device::Device;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{Element, HostTensor, Model, Params};
use crate::quant::Int8Model;

/// Where an int8 model runs: its device, and on OpenCL its parameters there and its kernel.
pub(crate) struct Placed {
    device: Device,
    #[cfg(feature = "opencl")]
    cl: Option<crate::backend::opencl::int8::Int8Cl>,
}

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// Quantises `engine`'s model with the activation ranges of `calibration` (the
    /// `quantize` method that `model!` generates calls this); the int8 model is on the same
    /// device.
    ///
    /// # Errors
    /// Those of [`Int8Model::quantize_flat`]; [`Error::Quantize`] if a standardiser is
    /// attached (quantise a model that takes standardised features).
    pub fn from_engine(engine: &Engine<M>, calibration: &[M::Input]) -> Result<Self> {
        if engine.standardizer().is_some() {
            return Err(Error::Quantize {
                reason: "the model has a standardiser attached; the int8 model takes standardised features: \
                         detach it (take_standardizer) and quantise with standardised calibration batches"
                    .to_string(),
            });
        }
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        engine.params()?.write_flat(&mut flat);
        Self::quantize_flat(&flat, calibration)?.on(engine.device())
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        match self.placed() {
            Some(placed) => &placed.device,
            None => {
                static CPU: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
                CPU.get_or_init(Device::cpu)
            }
        }
    }

    fn placed(&self) -> Option<&Placed> {
        self.placed.as_ref().and_then(|p| p.downcast_ref::<Placed>())
    }

    /// The model's parameters and kernel on OpenCL, if it is on an OpenCL device.
    #[cfg(feature = "opencl")]
    fn cl(&self) -> Option<&crate::backend::opencl::int8::Int8Cl> {
        self.placed().and_then(|p| p.cl.as_ref())
    }

    /// The same model on `device` (on OpenCL: its parameters uploaded, its kernel built).
    ///
    /// # Errors
    /// [`Error::KernelBuild`] or [`Error::OpenCl`] if the device cannot take it.
    pub fn on(self, device: &Device) -> Result<Self> {
        self.on_with(device, "")
    }

    /// As [`Int8Model::on`], with the packed dot-product path of `cl/int8.cl` emulated on
    /// a device without `cl_khr_integer_dot_product`, so that tests check its arithmetic
    /// everywhere. Not a public API.
    #[doc(hidden)]
    pub fn __on_emulating_dot_product(self, device: &Device) -> Result<Self> {
        self.on_with(device, "-D TB_Q_DOT_EMULATED")
    }

    /// As [`Int8Model::on`], with the products of `cl/int8.cl` in the form `madd`: 0 for
    /// OpenCL C's vectors alone, 256 or 512 for a CPU device's `vpmaddwd` of that width
    /// (where the device's compiler and processor have it: the build fails otherwise), so
    /// that tests check every form the device can run. Not a public API.
    #[doc(hidden)]
    pub fn __on_with_products(self, device: &Device, madd: u32) -> Result<Self> {
        self.on_with(device, &format!("-D TB_Q_MADD={madd}"))
    }

    /// On OpenCL, the form of the kernel's products (`TB_Q_MADD` in `cl/int8.cl`: 0 for
    /// OpenCL C's vectors alone, 256 or 512 for a CPU device's `vpmaddwd`); `None` on the
    /// CPU, or where the kernel takes the dot product. Not a public API.
    #[doc(hidden)]
    pub fn __products(&self) -> Option<u32> {
        #[cfg(feature = "opencl")]
        return self.cl().and_then(|cl| cl.products());
        #[cfg(not(feature = "opencl"))]
        None
    }

    #[cfg_attr(not(feature = "opencl"), allow(unused_variables))]
    fn on_with(mut self, device: &Device, options: &str) -> Result<Self> {
        #[cfg(feature = "opencl")]
        let mut on_cl = None;
        #[cfg(feature = "opencl")]
        if let Some(cl) = device.cl() {
            let runner = crate::backend::opencl::int8::Int8Cl::new(
                cl,
                M::LAYERS,
                M::BATCH,
                &self.weights,
                &self.biases,
                &self.multipliers,
                &self.shifts,
                &self.act_zeros,
                options,
            )?;
            on_cl = Some(runner);
        }
        self.placed = Some(std::sync::Arc::new(Placed {
            device: device.clone(),
            #[cfg(feature = "opencl")]
            cl: on_cl,
        }));
        Ok(self)
    }

    /// The head's `int16` output codes of a batch, `[batch x classes]` column-major (as the
    /// logits), into `out[..BATCH * CLASSES]`, computed on the model's device: the same
    /// bits on the CPU core, the CPU backend and OpenCL.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite input; [`Error::Quantize`] if `out` is
    /// shorter than `BATCH * CLASSES`; [`Error::OpenCl`] if the device fails.
    pub fn codes_into(&self, x: &M::Input, out: &mut [i16]) -> Result<()> {
        #[cfg(feature = "opencl")]
        if let Some(cl) = self.cl() {
            crate::quant::check_codes_len::<M>(out)?;
            let flat = x.as_flat();
            crate::check::finite("input", flat, M::BATCH)?;
            let (b, c) = (M::BATCH, M::CLASSES);
            let mut head = vec![0i16; b * c];
            // The input codes first, in one pass over `flat` (a loop that vectorises),
            // feature after feature.
            let mut codes = vec![0i8; M::FEATURES * b];
            self.input_codes(flat, 0, b, &mut codes);
            cl.run(|r, i| codes[i * b + r], &mut head)?;
            for (k, &q) in head.iter().enumerate() {
                out[(k % c) * b + k / c] = q;
            }
            return Ok(());
        }
        self.backend_codes_into(x, out)
    }

    /// The CPU backend: the core's blocks of rows, for large batches split into one part
    /// per thread of the worker pool that the `f32` products use (a hand-off under a
    /// microsecond to a hot worker, against tens for a rayon injection from outside its
    /// pool). Each row's integers are the same whichever part computes it.
    fn backend_codes_into(&self, x: &M::Input, out: &mut [i16]) -> Result<()> {
        #[cfg(feature = "parallel")]
        if Self::splits() {
            crate::quant::check_codes_len::<M>(out)?;
            let flat = x.as_flat();
            crate::check::finite("input", flat, M::BATCH)?;
            let (b, c) = (M::BATCH, M::CLASSES);
            // Whole blocks of rows a part, as few parts as threads.
            let per = b.div_ceil(crate::pool::threads()).next_multiple_of(crate::quant::BLOCK_ROWS);
            let mut rows = vec![0i16; b * c];
            crate::pool::chunks_mut(&mut rows, c * per, |part, chunk| {
                self.rows_of_batch(flat, part * per, chunk.len() / c, |k, j, q| chunk[k * c + j] = q);
            });
            for (k, &q) in rows.iter().enumerate() {
                out[(k % c) * b + k / c] = q;
            }
            return Ok(());
        }
        self.cpu_codes_into(x, out)
    }

    /// Multiply-adds of one row's forward pass.
    #[cfg(feature = "parallel")]
    const MACS_PER_ROW: usize = NW;

    /// Whether the CPU backend splits a batch's rows over threads.
    fn splits() -> bool {
        #[cfg(feature = "parallel")]
        return M::BATCH * Self::MACS_PER_ROW >= PARALLEL_MACS && crate::pool::threads() > 1;
        #[cfg(not(feature = "parallel"))]
        false
    }

    /// Whether the model is on an OpenCL device.
    fn on_opencl(&self) -> bool {
        #[cfg(feature = "opencl")]
        return self.cl().is_some();
        #[cfg(not(feature = "opencl"))]
        false
    }

    /// The dequantised logits of a batch: `s_y · (q_y − z_y)` of the head's codes, which
    /// are the same bits on every device.
    ///
    /// # Errors
    /// Those of [`Int8Model::codes_into`].
    pub fn logits(&self, x: &M::Input) -> Result<M::Logits> {
        let (b, c) = (M::BATCH, M::CLASSES);
        let mut codes = vec![0i16; b * c];
        self.codes_into(x, &mut codes)?;
        let (s, z) = (self.act_scales[NT - 1], i32::from(self.act_zeros[NT - 1]));
        let mut logits = M::Logits::zeroed();
        for (v, &q) in logits.as_flat_mut().iter_mut().zip(&codes) {
            *v = s * (i32::from(q) - z) as f32;
        }
        Ok(logits)
    }

    /// The predicted class of every row: the argmax of the head's codes (the first on
    /// ties).
    ///
    /// # Errors
    /// Those of [`Int8Model::codes_into`].
    pub fn predict(&self, x: &M::Input) -> Result<M::Labels> {
        if !self.on_opencl() && !Self::splits() {
            // The core's pass, each row's best class kept as its codes arrive.
            return self.cpu_predict(x);
        }
        let (b, c) = (M::BATCH, M::CLASSES);
        let mut codes = vec![0i16; b * c];
        self.codes_into(x, &mut codes)?;
        let mut labels = M::Labels::zeroed();
        let mut row = vec![0i16; c];
        for (r, label) in labels.as_flat_mut().iter_mut().enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = codes[k * b + r];
            }
            *label = crate::quant::argmax(&row);
        }
        Ok(labels)
    }
}

/// Multiply-adds of a batch above which the CPU backend splits its rows over threads.
#[cfg(feature = "parallel")]
const PARALLEL_MACS: usize = 1 << 18;

#[cfg(feature = "train")]
impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// Accuracy, mean loss (softmax cross-entropy of the dequantised logits, in `f64`) and
    /// confusion matrix over every row of `data`, as [`Engine::evaluate`] for the `f32`
    /// model.
    ///
    /// # Errors
    /// [`Error::EmptyDataset`]; those of [`Dataset::batches`](crate::Dataset::batches).
    pub fn evaluate(&self, data: &crate::data::Dataset) -> Result<crate::train::Metrics> {
        use crate::model::HostTensor;
        if data.is_empty() {
            return Err(Error::EmptyDataset { what: "the dataset to evaluate".to_string() });
        }
        let (b, classes) = (M::BATCH, M::CLASSES);
        let mut confusion = nalgebra::DMatrix::<usize>::zeros(classes, classes);
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for batch in data.batches::<M>()? {
            let logits = self.logits(&batch.x)?;
            let predicted = self.predict(&batch.x)?;
            let (z, p, y) = (logits.as_flat(), predicted.as_flat(), batch.y.as_flat());
            for r in 0..batch.rows {
                let (t, q) = (y[r] as usize, p[r] as usize);
                confusion[(t, q)] += 1;
                correct += usize::from(t == q);
                let row = (0..classes).map(|c| f64::from(z[c * b + r]));
                let max = row.clone().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.map(|v| (v - max).exp()).sum::<f64>().ln();
                loss += lse - f64::from(z[t * b + r]);
            }
        }
        let n = data.len();
        Ok(crate::train::Metrics {
            accuracy: correct as f64 / n as f64,
            loss: (loss / n as f64) as f32,
            confusion,
            rows: n,
        })
    }
}

#[cfg(feature = "checkpoint")]
mod file {
    use std::collections::HashMap;
    use std::io::Write;
    use std::path::Path;

    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    use crate::device::Device;
    use crate::error::{CheckpointErrorKind, Error, Result};
    use crate::fsutil::write_atomically;
    use crate::model::Model;
    use crate::quant::Int8Model;

    type Tensor = (String, Vec<usize>, Vec<u8>, Dtype);

    impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
        /// Saves the int8 model to `path` as a safetensors file (see the
        /// [`quant`](crate::quant) docs for its tensors), atomically replacing any file
        /// there.
        ///
        /// # Errors
        /// [`Error::Io`] if the file cannot be written; the old file, if any, is then intact.
        pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
            let path = path.as_ref();
            let mut tensors: Vec<Tensor> = Vec::new();
            let dims = M::LAYERS;
            let (mut w, mut c) = (0, 0);
            for l in 0..dims.len() - 1 {
                let (fan_in, fan_out) = (dims[l], dims[l + 1]);
                let mut codes = Vec::with_capacity(fan_in * fan_out);
                for i in 0..fan_in {
                    for o in 0..fan_out {
                        codes.push(self.weights[w + o * fan_in + i] as u8);
                    }
                }
                let ch = c..c + fan_out;
                tensors.push((format!("w{l}"), vec![fan_in, fan_out], codes, Dtype::I8));
                tensors.push((
                    format!("b{l}"),
                    vec![fan_out],
                    le(&self.biases[ch.clone()], |v| v.to_le_bytes()),
                    Dtype::I32,
                ));
                let scales = le(&self.weight_scales[ch.clone()], |v| v.to_le_bytes());
                tensors.push((format!("w{l}.scale"), vec![fan_out], scales, Dtype::F32));
                let mults = le(&self.multipliers[ch.clone()], |v| v.to_le_bytes());
                tensors.push((format!("w{l}.multiplier"), vec![fan_out], mults, Dtype::I32));
                tensors.push((format!("w{l}.shift"), vec![fan_out], self.shifts[ch].to_vec(), Dtype::U8));
                w += fan_in * fan_out;
                c += fan_out;
            }
            for t in 0..NT {
                tensors.push((format!("a{t}.scale"), vec![], self.act_scales[t].to_le_bytes().to_vec(), Dtype::F32));
                let zero = self.act_zeros[t];
                let (bytes, dtype) = if t + 1 == NT {
                    (zero.to_le_bytes().to_vec(), Dtype::I16)
                } else {
                    (vec![zero as i8 as u8], Dtype::I8)
                };
                tensors.push((format!("a{t}.zero_point"), vec![], bytes, dtype));
            }
            let format_error = |reason: String| Error::Checkpoint {
                path: path.to_path_buf(),
                kind: CheckpointErrorKind::Format { reason },
            };
            let views = tensors
                .iter()
                .map(|(name, shape, bytes, dtype)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?)))
                .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
                .map_err(|e| format_error(e.to_string()))?;
            let layers = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ");
            let metadata = HashMap::from([("tensorbridge".to_string(), format!("{} int8: {layers}", M::NAME))]);
            let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| format_error(e.to_string()))?;
            write_atomically(path, |file| file.write_all(&bytes))
        }

        /// Loads an int8 model that [`Int8Model::save`] wrote, on `device`.
        ///
        /// # Errors
        /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is not a
        /// safetensors file, or a tensor is missing, unexpected, or of another dtype or
        /// shape than the declaration gives; [`Error::Quantize`] if the parts do not hold
        /// together (see [`Int8Model::from_parts`]).
        pub fn load(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let format_error = |reason: String| Error::Checkpoint {
                path: path.to_path_buf(),
                kind: CheckpointErrorKind::Format { reason },
            };
            let file = SafeTensors::deserialize(&bytes).map_err(|e| format_error(e.to_string()))?;
            let dims = M::LAYERS;
            let mut expected = Vec::new();
            for l in 0..dims.len() - 1 {
                for suffix in ["", ".scale", ".multiplier", ".shift"] {
                    expected.push(format!("w{l}{suffix}"));
                }
                expected.push(format!("b{l}"));
            }
            for t in 0..NT {
                expected.push(format!("a{t}.scale"));
                expected.push(format!("a{t}.zero_point"));
            }
            for name in file.names() {
                if !expected.iter().any(|e| e == name) {
                    return Err(format_error(format!("unexpected tensor '{name}' for {}'s int8 model", M::NAME)));
                }
            }
            let get = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
                let view = file
                    .tensor(name)
                    .map_err(|_| format_error(format!("tensor '{name}' is missing for {}'s int8 model", M::NAME)))?;
                if view.dtype() != dtype || view.shape() != shape {
                    return Err(format_error(format!(
                        "tensor '{name}' is {:?} {:?}; {}'s int8 model has {dtype:?} {shape:?}",
                        view.dtype(),
                        view.shape(),
                        M::NAME
                    )));
                }
                Ok(view.data().to_vec())
            };
            let mut weights = [0i8; NW];
            let mut biases = [0i32; NC];
            let mut weight_scales = [0f32; NC];
            let mut multipliers = [0i32; NC];
            let mut shifts = [0u8; NC];
            let mut act_scales = [0f32; NT];
            let mut act_zeros = [0i16; NT];
            let (mut w, mut c) = (0, 0);
            for l in 0..dims.len() - 1 {
                let (fan_in, fan_out) = (dims[l], dims[l + 1]);
                let codes = get(&format!("w{l}"), Dtype::I8, &[fan_in, fan_out])?;
                for (k, &v) in codes.iter().enumerate() {
                    let (i, o) = (k / fan_out, k % fan_out);
                    weights[w + o * fan_in + i] = v as i8;
                }
                let ch = c..c + fan_out;
                let words = |name: String, dtype| get(&name, dtype, &[fan_out]);
                for (dst, src) in biases[ch.clone()].iter_mut().zip(words(format!("b{l}"), Dtype::I32)?.chunks_exact(4))
                {
                    *dst = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
                let scales = words(format!("w{l}.scale"), Dtype::F32)?;
                for (dst, src) in weight_scales[ch.clone()].iter_mut().zip(scales.chunks_exact(4)) {
                    *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
                let mults = words(format!("w{l}.multiplier"), Dtype::I32)?;
                for (dst, src) in multipliers[ch.clone()].iter_mut().zip(mults.chunks_exact(4)) {
                    *dst = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                }
                shifts[ch].copy_from_slice(&words(format!("w{l}.shift"), Dtype::U8)?);
                w += fan_in * fan_out;
                c += fan_out;
            }
            for t in 0..NT {
                let s = get(&format!("a{t}.scale"), Dtype::F32, &[])?;
                act_scales[t] = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                let name = format!("a{t}.zero_point");
                act_zeros[t] = if t + 1 == NT {
                    let z = get(&name, Dtype::I16, &[])?;
                    i16::from_le_bytes([z[0], z[1]])
                } else {
                    get(&name, Dtype::I8, &[])?[0] as i8 as i16
                };
            }
            let model = Self::from_parts(weights, biases, weight_scales, multipliers, shifts, act_scales, act_zeros)?;
            model.on(device)
        }
    }

    /// Little-endian bytes of `values`.
    fn le<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }
}
