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
//! people reading the file, followed by `; activations: <one per hidden layer>` for a model
//! with hidden layers (`Mlp: 4 -> 8 -> 3; activations: tanh`); loading refuses a file whose
//! activations differ from the declaration's ([`CheckpointErrorKind::WrongActivations`]), and
//! a file without that record (written elsewhere) loads as before. The same parameters always
//! give the same bytes. A model with a
//! [standardiser attached](Engine::set_standardizer) also saves it, as two `F32` tensors of
//! shape `[features]`, `standardizer.mean` and `standardizer.scale`, and loading attaches it
//! again.
//!
//! A model whose optimizer keeps state (`optimizer: momentum | adam | adamw`) also saves it,
//! in `F32` whatever the storage: each moment buffer as one tensor per parameter, named
//! `optim.<buffer>.<parameter>` after `torch.optim`'s state (`optim.momentum_buffer.w0`,
//! `optim.exp_avg.b1`, `optim.exp_avg_sq.w0`, ...), shaped and laid out as the parameter,
//! and the step count as `optim.step`, one `U32`. Loading restores it, so that training
//! resumed from a checkpoint continues exactly as it would have; a file without these
//! tensors (parameters only) loads with the state cleared. The hyperparameters are not
//! saved: set them again with [`Engine::set_optimizer`].
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
use crate::math::optim::Optimizer;
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
        let state = if <M::Optimizer as Optimizer>::MOMENTS > 0 { Some(self.optimizer_state()?) } else { None };
        let bytes = to_safetensors::<M>(&flat, self.standardizer(), state.as_ref()).map_err(|reason| {
            Error::Checkpoint { path: path.to_path_buf(), kind: CheckpointErrorKind::Format { reason } }
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
        let (flat, standardizer, state) = from_safetensors::<M>(&bytes).map_err(checkpoint_error)?;
        let mut engine = Engine::with_params(device, M::Params::from_flat(&flat))?;
        if let Some((moments, step)) = state {
            engine.set_optimizer_state(&moments, step)?;
        }
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

/// `(name, shape, start in the flat moment buffers)` of every tensor of the optimizer's
/// moments (none for SGD).
fn optim_tensors<M: Model>() -> Vec<(String, Vec<usize>, usize)> {
    let names = <M::Optimizer as Optimizer>::MOMENT_NAMES;
    names
        .iter()
        .enumerate()
        .flat_map(|(j, buffer)| {
            tensors_of::<M>()
                .into_iter()
                .map(move |(name, shape, start)| (format!("optim.{buffer}.{name}"), shape, j * M::Params::LEN + start))
        })
        .collect()
}

/// The name of the optimizer's step count.
const STEP_TENSOR: &str = "optim.step";

/// The little-endian, row-major bytes of one tensor (`shape`, from `start`) of a flat
/// column-major layout.
fn tensor_bytes<T: StorageElement>(flat: &[T], shape: &[usize], start: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(shape.iter().product::<usize>() * std::mem::size_of::<T>());
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
    bytes
}

/// Writes one tensor's values (row-major, `shape`) into a flat column-major layout at
/// `start`.
fn read_tensor<T: StorageElement>(values: impl Iterator<Item = T>, shape: &[usize], start: usize, flat: &mut [T]) {
    if let [fan_in, fan_out] = shape[..] {
        // Row-major `[i][o]` (index k = i * out + o) -> column-major `w[o * in + i]`.
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

/// The names of the two tensors of an attached standardiser.
pub(crate) const STANDARDIZER_TENSORS: [&str; 2] = ["standardizer.mean", "standardizer.scale"];

/// The metadata entry checkpoints write, and what precedes the activations in it.
const METADATA_KEY: &str = "tensorbridge";
const ACTIVATIONS_RECORD: &str = "; activations: ";

/// The hidden layers' activations of model `M`, as a checkpoint records them: `tanh, relu`.
fn activations_text<M: Model>() -> String {
    (0..M::LAYERS.len().saturating_sub(2))
        .map(|l| crate::math::activation::after_layer(M::ACTIVATIONS, M::LAYERS.len() - 1, l).name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a file whose metadata records other hidden activations than `M` declares.
fn check_activations<M: Model>(
    file_metadata: Option<&HashMap<String, String>>,
) -> std::result::Result<(), CheckpointErrorKind> {
    let found = file_metadata
        .and_then(|m| m.get(METADATA_KEY))
        .and_then(|entry| entry.split_once(ACTIVATIONS_RECORD))
        .map(|(_, activations)| activations.trim().to_string());
    match found {
        Some(found) if found != activations_text::<M>() => {
            Err(CheckpointErrorKind::WrongActivations { model: M::NAME, expected: activations_text::<M>(), found })
        }
        _ => Ok(()),
    }
}

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
    state: Option<&(Vec<f32>, u32)>,
) -> std::result::Result<Vec<u8>, String> {
    let mut buffers = Vec::new();
    for (name, shape, start) in tensors_of::<M>() {
        let bytes = tensor_bytes(flat, &shape, start);
        buffers.push((name, shape, bytes, dtype_of::<M>()));
    }
    if let Some((moments, step)) = state {
        for (name, shape, start) in optim_tensors::<M>() {
            let bytes = tensor_bytes(moments, &shape, start);
            buffers.push((name, shape, bytes, Dtype::F32));
        }
        buffers.push((STEP_TENSOR.to_string(), vec![1], step.to_le_bytes().to_vec(), Dtype::U32));
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
    let mut entry = format!("{}: {}", M::NAME, layers_text::<M>());
    if M::LAYERS.len() > 2 {
        entry.push_str(&format!("{ACTIVATIONS_RECORD}{}", activations_text::<M>()));
    }
    let metadata = HashMap::from([(METADATA_KEY.to_string(), entry)]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// A saved standardiser's means and scales.
type SavedStandardizer = Option<(Vec<f32>, Vec<f32>)>;

/// A saved optimizer state: the flat moment buffers and the step count.
type SavedState = Option<(Vec<f32>, u32)>;

/// The flat parameters (and a saved standardiser) from safetensors bytes, every name, dtype
/// and shape checked.
fn from_safetensors<M: Model>(
    bytes: &[u8],
) -> std::result::Result<(Vec<M::Storage>, SavedStandardizer, SavedState), CheckpointErrorKind> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    let expected = tensors_of::<M>();
    let optim = optim_tensors::<M>();
    let mut expected_names = expected.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    if !optim.is_empty() {
        expected_names.push_str(&format!(" (and the optimizer's state: {STEP_TENSOR}, optim.<buffer>.<parameter>)"));
    }
    let mut names = file.names();
    names.sort_unstable();
    for name in names {
        let is_optim = !optim.is_empty() && (name == STEP_TENSOR || optim.iter().any(|(n, _, _)| n == name));
        if !expected.iter().any(|(n, _, _)| n == name) && !STANDARDIZER_TENSORS.contains(&name) && !is_optim {
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
        read_tensor(values, shape, *start, &mut flat);
    }
    // The tensors fit the declaration: the activations they were trained with must too.
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    check_activations::<M>(header.metadata().as_ref())?;
    Ok((flat, saved_standardizer::<M>(&file)?, saved_state::<M>(&file, &optim)?))
}

/// The optimizer's state saved beside the parameters: every tensor of it (`F32`, shaped as
/// its parameter; the step count one `U32`) or none.
fn saved_state<M: Model>(
    file: &SafeTensors<'_>,
    optim: &[(String, Vec<usize>, usize)],
) -> std::result::Result<SavedState, CheckpointErrorKind> {
    let step = file.tensor(STEP_TENSOR).ok();
    if optim.is_empty() || (step.is_none() && optim.iter().all(|(n, _, _)| file.tensor(n).is_err())) {
        return Ok(None);
    }
    let missing = |name: &str| CheckpointErrorKind::MissingTensor {
        name: name.to_string(),
        model: M::NAME,
        layers: layers_text::<M>(),
        expected: "it beside the optimizer's other state (saved all together)".to_string(),
    };
    let step = step.ok_or_else(|| missing(STEP_TENSOR))?;
    let step = match (step.dtype(), step.shape(), step.data()) {
        (Dtype::U32, [1], &[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        (Dtype::U32, shape, _) => {
            return Err(CheckpointErrorKind::WrongShape {
                name: STEP_TENSOR.to_string(),
                model: M::NAME,
                expected: vec![1],
                found: shape.to_vec(),
                hint: ShapeHint::None,
            })
        }
        (dtype, _, _) => {
            return Err(CheckpointErrorKind::WrongDtype {
                name: STEP_TENSOR.to_string(),
                found: format!("{dtype:?}"),
                expected: "U32",
                storage: M::Storage::NAME,
            })
        }
    };
    let mut moments = vec![0.0f32; <M::Optimizer as Optimizer>::MOMENTS * M::Params::LEN];
    for (name, shape, start) in optim {
        let view = file.tensor(name).map_err(|_| missing(name))?;
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointErrorKind::WrongDtype {
                name: name.clone(),
                found: format!("{:?}", view.dtype()),
                expected: "F32",
                storage: M::Storage::NAME,
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(CheckpointErrorKind::WrongShape {
                name: name.clone(),
                model: M::NAME,
                expected: shape.clone(),
                found: view.shape().to_vec(),
                hint: ShapeHint::None,
            });
        }
        read_tensor(view.data().chunks_exact(4).map(f32::from_le_slice), shape, *start, &mut moments);
    }
    if let Some(k) = moments.iter().position(|v| !v.is_finite()) {
        let (name, _, _) = optim.iter().rev().find(|(_, _, start)| *start <= k).unwrap_or(&optim[0]);
        return Err(CheckpointErrorKind::Format { reason: format!("tensor '{name}' holds a NaN or infinite value") });
    }
    Ok(Some((moments, step)))
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
