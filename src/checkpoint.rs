//! Checkpoints: [`Engine::save`] and [`Engine::load`] in the
//! [safetensors](https://huggingface.co/docs/safetensors) format, readable by
//! `safetensors.numpy.load_file` and PyTorch.
//!
//! One tensor per parameter, named as the fields of the model's `Params`: `w0`, `b0`, `w1`,
//! `b1`, ...; weights have shape `[in, out]` and biases `[out]`, all `F32` (`F16` for a model
//! declared with `storage: f16`; loading checks the dtype against the declaration), little-endian,
//! row-major (C order) as safetensors requires — nalgebra stores `[in x out]` column-major,
//! so saving transposes the layout (not the matrix) and loading transposes it back. The
//! header's `__metadata__` holds one entry, `"tensorbridge": "<model>: <layer widths>"`, for
//! people reading the file; the same parameters always give the same bytes. A model with a
//! [standardiser attached](Engine::set_standardizer) also saves it, as two `F32` tensors of
//! shape `[features]`, `standardizer.mean` and `standardizer.scale`, and loading attaches it
//! again.
//!
//! PyTorch's state dicts (names such as `0.weight`, layout `[out, in]`) load with
//! [`Engine::from_pytorch`] and are written by [`Engine::save_pytorch`]: see
//! [`pytorch`](crate::pytorch). A file in the other layout is refused with an error saying so.
//!
//! Saving is atomic: the bytes go to a temporary file in the same directory, which is
//! flushed to disk and then renamed over the target, so a crash or a failure at any point
//! leaves either the old checkpoint or the new one at the path, never a mixture. The file
//! gets the permissions `std::fs::write` would give it (`0666 & !umask` on unix), or keeps
//! those of the file it replaces. A save never writes what [`Engine::load`] would refuse
//! (a NaN or infinite parameter). The temporary file is `.<name>.tensorbridge-<pid>-<n>.tmp`;
//! a save removes those of its path whose process is gone (a save that was killed) and that
//! are more than a minute old.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::check;
use crate::device::Device;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::host::Standardizer;
use crate::layout::{layer_slots, param_name};
use crate::model::{Element, Model, Params, StorageElement};

pub use crate::error::{CheckpointErrorKind, ShapeHint};

impl<M: Model> Engine<M> {
    /// Saves the parameters to `path` as a safetensors file (see the
    /// [module docs](crate::checkpoint) for the layout), atomically replacing any file there.
    /// Costs one device -> host copy of the parameters and one file write with `fsync`.
    ///
    /// The file gets `0666 & !umask` (as `std::fs::write` or `numpy.save` would give it);
    /// a file replaced keeps its permissions. Temporary files left by killed saves of the
    /// same path are removed (see the module docs).
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite (what [`Engine::load`] would
    /// refuse), before the file is touched; [`Error::Io`] if the file cannot be written;
    /// the old file, if any, is then intact.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.params()?.write_flat(&mut flat);
        check::params(M::LAYERS, &flat)?;
        let bytes = to_safetensors::<M>(&flat, self.standardizer()).map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            kind: CheckpointErrorKind::Format { reason },
        })?;
        write_atomically(path, |file| file.write_all(&bytes))
    }

    /// Creates the model on `device` with the parameters saved at `path` by [`Engine::save`]
    /// (or by any program that writes the same tensor names and shapes). Generated models
    /// offer this as `Name::load(&device, path)`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is not a
    /// safetensors file or a tensor is missing, unexpected, of another dtype than the
    /// model's storage (`F32`, or `F16` for `storage: f16`), or shaped otherwise than the
    /// declaration (a weight in PyTorch's transposed `[out, in]` layout is named so, with
    /// [`Engine::from_pytorch`] to read it); [`Error::NonFinite`] if a parameter is NaN or
    /// infinite; [`Error::InvalidStandardizer`] for a saved standardiser that cannot be used.
    pub fn load(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let checkpoint_error = |kind| Error::Checkpoint { path: path.to_path_buf(), kind };
        let (flat, standardizer) = from_safetensors::<M>(&bytes).map_err(checkpoint_error)?;
        let mut engine = Engine::with_params(device, M::Params::from_flat(&flat))?;
        if let Some((mean, scale)) = standardizer {
            engine.set_standardizer(Standardizer::from_mean_scale(mean, scale)?)?;
        }
        Ok(engine)
    }
}

/// `(name, shape, start of the values in the flat layout)` of every tensor, in order.
fn tensors_of<M: Model>() -> Vec<(String, Vec<usize>, usize)> {
    layer_slots(M::LAYERS)
        .enumerate()
        .flat_map(|(l, s)| {
            [
                (param_name(l, false).to_string(), vec![s.fan_in, s.fan_out], s.w),
                (param_name(l, true).to_string(), vec![s.fan_out], s.b),
            ]
        })
        .collect()
}

/// The names of the two tensors of an attached standardiser.
pub(crate) const STANDARDIZER_TENSORS: [&str; 2] = ["standardizer.mean", "standardizer.scale"];

pub(crate) fn layers_text<M: Model>() -> String {
    M::LAYERS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// The safetensors dtype of model `M`'s storage.
fn dtype_of<M: Model>() -> Dtype {
    if M::Storage::IS_F16 {
        Dtype::F16
    } else {
        Dtype::F32
    }
}

/// The safetensors bytes of the flat parameters.
fn to_safetensors<M: Model>(
    flat: &[M::Storage],
    standardizer: Option<&Standardizer>,
) -> std::result::Result<Vec<u8>, String> {
    let mut buffers = Vec::new();
    for (name, shape, start) in tensors_of::<M>() {
        let mut bytes = Vec::with_capacity(shape.iter().product::<usize>() * std::mem::size_of::<M::Storage>());
        if let [fan_in, fan_out] = shape[..] {
            // Column-major `w[o * in + i]` -> row-major `[i][o]`.
            for i in 0..fan_in {
                for o in 0..fan_out {
                    flat[start + o * fan_in + i].extend_le_bytes(&mut bytes);
                }
            }
        } else {
            for v in &flat[start..start + shape[0]] {
                v.extend_le_bytes(&mut bytes);
            }
        }
        buffers.push((name, shape, bytes, dtype_of::<M>()));
    }
    if let Some(s) = standardizer {
        for (name, values) in STANDARDIZER_TENSORS.iter().zip([s.mean(), s.scale()]) {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((name.to_string(), vec![values.len()], bytes, Dtype::F32));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes, dtype)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    // One entry only: safetensors takes a `HashMap`, whose order would otherwise make the
    // bytes of two saves of the same parameters differ.
    let metadata = HashMap::from([("tensorbridge".to_string(), format!("{}: {}", M::NAME, layers_text::<M>()))]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// A saved standardiser's means and scales.
type SavedStandardizer = Option<(Vec<f32>, Vec<f32>)>;

/// The flat parameters (and a saved standardiser) from safetensors bytes, every name, dtype
/// and shape checked.
fn from_safetensors<M: Model>(
    bytes: &[u8],
) -> std::result::Result<(Vec<M::Storage>, SavedStandardizer), CheckpointErrorKind> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    let expected = tensors_of::<M>();
    let expected_names = expected.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut names = file.names();
    names.sort_unstable();
    for name in names {
        if !expected.iter().any(|(n, _, _)| n == name) && !STANDARDIZER_TENSORS.contains(&name) {
            return Err(CheckpointErrorKind::UnexpectedTensor {
                name: name.to_string(),
                model: M::NAME,
                layers: layers_text::<M>(),
                expected: expected_names,
            });
        }
    }
    let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
    for (name, shape, start) in &expected {
        let view = file.tensor(name).map_err(|_| CheckpointErrorKind::MissingTensor {
            name: name.clone(),
            model: M::NAME,
            layers: layers_text::<M>(),
            expected: expected_names.clone(),
        })?;
        if view.dtype() != dtype_of::<M>() {
            return Err(CheckpointErrorKind::WrongDtype {
                name: name.clone(),
                found: format!("{:?}", view.dtype()),
                expected: if M::Storage::IS_F16 { "F16" } else { "F32" },
                storage: M::Storage::NAME,
            });
        }
        if view.shape() != shape.as_slice() {
            let transposed = matches!(view.shape(), [a, b] if [*b, *a] == shape[..]);
            let hint = if transposed { ShapeHint::PyTorchLayout } else { ShapeHint::None };
            return Err(CheckpointErrorKind::WrongShape {
                name: name.clone(),
                model: M::NAME,
                expected: shape.clone(),
                found: view.shape().to_vec(),
                hint,
            });
        }
        // The parser checked that the data holds exactly product(shape) values of the dtype.
        let values = view.data().chunks_exact(std::mem::size_of::<M::Storage>()).map(M::Storage::from_le_slice);
        if let [fan_in, _] = shape[..] {
            // Row-major `[i][o]` (index k = i * out + o) -> column-major `w[o * in + i]`.
            let fan_out = shape[1];
            for (k, v) in values.enumerate() {
                let (i, o) = (k / fan_out, k % fan_out);
                flat[start + o * fan_in + i] = v;
            }
        } else {
            for (k, v) in values.enumerate() {
                flat[start + k] = v;
            }
        }
    }
    Ok((flat, saved_standardizer::<M>(&file)?))
}

/// The standardiser saved beside the parameters: both tensors or neither, `F32`,
/// `[features]`.
fn saved_standardizer<M: Model>(file: &SafeTensors<'_>) -> std::result::Result<SavedStandardizer, CheckpointErrorKind> {
    let [mean, scale] = STANDARDIZER_TENSORS.map(|name| file.tensor(name).ok());
    let (mean, scale) = match (mean, scale) {
        (None, None) => return Ok(None),
        (Some(mean), Some(scale)) => (mean, scale),
        (mean, _) => {
            let (missing, other) = if mean.is_none() { (0, 1) } else { (1, 0) };
            return Err(CheckpointErrorKind::MissingTensor {
                name: STANDARDIZER_TENSORS[missing].to_string(),
                model: M::NAME,
                layers: layers_text::<M>(),
                expected: format!("it beside '{}' (a standardiser is saved as both)", STANDARDIZER_TENSORS[other]),
            });
        }
    };
    let mut out = Vec::new();
    for (name, view) in STANDARDIZER_TENSORS.iter().zip([mean, scale]) {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointErrorKind::WrongDtype {
                name: name.to_string(),
                found: format!("{:?}", view.dtype()),
                expected: "F32",
                storage: M::Storage::NAME,
            });
        }
        if view.shape() != [M::FEATURES] {
            return Err(CheckpointErrorKind::WrongShape {
                name: name.to_string(),
                model: M::NAME,
                expected: vec![M::FEATURES],
                found: view.shape().to_vec(),
                hint: ShapeHint::PerFeature,
            });
        }
        out.push(view.data().chunks_exact(4).map(f32::from_le_slice).collect::<Vec<f32>>());
    }
    let scale = out.pop().unwrap_or_default();
    let mean = out.pop().unwrap_or_default();
    Ok(Some((mean, scale)))
}
