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
//! people reading the file, followed by records `; <name>: <value>`:
//! - `; activations: <one per hidden layer>` for a model with hidden layers; loading refuses
//!   a file whose activations differ from the declaration's
//!   ([`CheckpointErrorKind::WrongActivations`]);
//! - `; optimizer: <name>(<hyperparameter>=<value>, ...)`: the optimizer the model declares
//!   and every hyperparameter [`Engine::set_optimizer`] last set (or the defaults), each
//!   `f32` written so that it reads back to the same bits; loading sets them again.
//!
//! For example `Mlp: 4 -> 8 -> 3; activations: tanh; optimizer: adam(lr=0.001, beta1=0.9,
//! beta2=0.999, eps=1e-8, weight_decay=0.0)`. A file without a record (written elsewhere, or
//! by an older version, which did not save the hyperparameters) loads as before: no check of
//! the activations, and the model's default hyperparameters. A record that cannot be used (not
//! of that form, a hyperparameter missing, unknown, not a number or out of range) is
//! [`CheckpointErrorKind::Hyperparameters`]. The hyperparameters of another optimizer (a
//! checkpoint of an `sgd` model loaded into an `adam` one) are not used: its parameters load
//! with the model's default hyperparameters, unless the file also holds that optimizer's state
//! ([`CheckpointErrorKind::WrongOptimizer`]). The same model always gives the same bytes.
//!
//! A model with a [standardiser attached](Engine::set_standardizer) also saves it, as two
//! `F32` tensors of shape `[features]`, `standardizer.mean` and `standardizer.scale`, and
//! loading attaches it again.
//!
//! A model whose optimizer keeps state (`optimizer: momentum | adam | adamw`) also saves it,
//! in `F32` whatever the storage: each moment buffer as one tensor per parameter, named
//! `optim.<buffer>.<parameter>` after `torch.optim`'s state (`optim.momentum_buffer.w0`,
//! `optim.exp_avg.b1`, `optim.exp_avg_sq.w0`, ...), shaped and laid out as the parameter,
//! and the step count as `optim.step`, one `U32`. Loading restores it, so that training
//! resumed from a checkpoint continues exactly as it would have (with the hyperparameters
//! of the `optimizer` record); a file without these tensors (parameters only) loads with the
//! state cleared.
//!
//! The names, the layout and the metadata entry are written once, in `format.rs` of
//! tensorbridge-macros: `model!`'s `weights: "path"` reads checkpoints at compile time with
//! the same code (its parameters; the optimizer's state is not compiled in).
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

use std::any::Any;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::check;
use crate::device::Device;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::host::Standardizer;
use crate::layout::layer_slots;
use crate::math::optim::{Adam, AdamW, Momentum, Optimizer, Sgd};
use crate::model::{Element, Model, Params, StorageElement};

pub use crate::error::{CheckpointErrorKind, ShapeHint};

/// The format's names, layout and header reader, written once for this module and for
/// `model!`'s `weights: "path"` (which reads checkpoints at compile time): the items of
/// `macros/src/format.rs`.
#[allow(dead_code)] // What only `weights:` uses.
mod format {
    tensorbridge_macros::__checkpoint_format!();
}

use format::{Checkpoint, STANDARDIZER_TENSORS, STEP_TENSOR};

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
        let standardizer = self.standardizer().map(|s| (s.mean().to_vec(), s.scale().to_vec()));
        let saved = Saved::<M> { flat, standardizer, state, optimizer: Some(self.optimizer()) };
        let bytes = to_safetensors::<M>(&saved).map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            kind: CheckpointErrorKind::Format { reason },
        })?;
        write_atomically(path, |file| file.write_all(&bytes))
    }

    /// Creates the model on `device` with the parameters saved at `path` by [`Engine::save`]
    /// (or by any program that writes the same tensor names and shapes), the optimizer's
    /// state and hyperparameters where the file holds them, and the standardiser where one
    /// was saved (see the [module docs](crate::checkpoint)). Generated models offer this as
    /// `Name::load(&device, path)`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is not a
    /// safetensors file or a tensor is missing, unexpected, of another dtype than the
    /// model's storage (`F32`, or `F16` for `storage: f16`), or shaped otherwise than the
    /// declaration (a weight in PyTorch's transposed `[out, in]` layout is named so, with
    /// [`Engine::from_pytorch`] to read it), or its recorded activations, optimizer or
    /// hyperparameters cannot be used; [`Error::NonFinite`] if a parameter is NaN or
    /// infinite; [`Error::InvalidStandardizer`] for a saved standardiser that cannot be used.
    pub fn load(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let checkpoint_error = |kind| Error::Checkpoint { path: path.to_path_buf(), kind };
        let saved = from_safetensors::<M>(&bytes).map_err(checkpoint_error)?;
        check::params(M::LAYERS, &saved.flat)?;
        let mut engine = Engine::from_flat(device, &saved.flat)?;
        if let Some(optimizer) = saved.optimizer {
            engine.restore_optimizer(optimizer);
        }
        if let Some((moments, step)) = saved.state {
            engine.set_optimizer_state(&moments, step)?;
        }
        if let Some((mean, scale)) = saved.standardizer {
            engine.set_standardizer(Standardizer::from_mean_scale(mean, scale)?)?;
        }
        Ok(engine)
    }
}

/// What a checkpoint holds of model `M`.
struct Saved<M: Model> {
    /// The parameters, in the flat layout.
    flat: Vec<M::Storage>,
    /// The attached standardiser.
    standardizer: Option<MeanScale>,
    /// The optimizer's moment buffers (flat, one after the other) and step count.
    state: Option<(Vec<f32>, u32)>,
    /// The optimizer's hyperparameters (none in a file that does not record those of the
    /// model's optimizer).
    optimizer: Option<M::Optimizer>,
}

/// A standardiser's means and scales.
type MeanScale = (Vec<f32>, Vec<f32>);

/// `(name, shape, start of the values in the flat layout)` of every tensor, in order.
fn tensors_of<M: Model>() -> Vec<(String, Vec<usize>, usize)> {
    let starts = layer_slots(M::LAYERS).flat_map(|s| [s.w, s.b]);
    format::param_tensors(M::LAYERS)
        .into_iter()
        .zip(starts)
        .map(|((name, shape), start)| (name, shape, start))
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
            tensors_of::<M>().into_iter().map(move |(name, shape, start)| {
                (format::state_tensor(buffer, &name), shape, j * M::Params::LEN + start)
            })
        })
        .collect()
}

/// The little-endian, row-major bytes of one tensor (`shape`, from `start`) of a flat
/// column-major layout.
fn tensor_bytes<T: StorageElement>(flat: &[T], shape: &[usize], start: usize) -> Vec<u8> {
    let len = shape.iter().product::<usize>();
    let mut bytes = Vec::with_capacity(len * std::mem::size_of::<T>());
    for k in 0..len {
        flat[start + format::flat_offset(shape, k)].extend_le_bytes(&mut bytes);
    }
    bytes
}

/// Writes one tensor's values (row-major, `shape`) into a flat column-major layout at
/// `start`.
fn read_tensor<T: StorageElement>(values: impl Iterator<Item = T>, shape: &[usize], start: usize, flat: &mut [T]) {
    for (k, v) in values.enumerate() {
        flat[start + format::flat_offset(shape, k)] = v;
    }
}

/// The hidden layers' activations of model `M`, as a checkpoint records them: `tanh, relu`.
fn activations_text<M: Model>() -> String {
    let last = M::LAYERS.len() - 1;
    format::activations_text(
        (0..M::LAYERS.len().saturating_sub(2))
            .map(|l| crate::math::activation::after_layer(M::ACTIVATIONS, last, l).name()),
    )
}

/// Refuses a file whose metadata records other hidden activations than `M` declares.
fn check_activations<M: Model>(entry: Option<&str>) -> std::result::Result<(), CheckpointErrorKind> {
    match entry.and_then(|entry| format::record(entry, format::ACTIVATIONS)) {
        Some(found) if found != activations_text::<M>() => Err(CheckpointErrorKind::WrongActivations {
            model: M::NAME,
            expected: activations_text::<M>(),
            found: found.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A hyperparameter, by reference into its optimizer's struct.
enum Field<'a> {
    /// An `f32` (`lr`, `beta1`, ...).
    Real(&'a mut f32),
    /// A flag (`nesterov`).
    Flag(&'a mut bool),
}

/// The hyperparameters of `optimizer` (one of the four of [`optim`](crate::optim)) by name,
/// in their struct's order. Each struct is destructured whole, so that a field added to one
/// does not compile until it is listed here, and so saved and restored; each name is its
/// field's.
fn fields(optimizer: &mut dyn Any) -> Vec<(&'static str, Field<'_>)> {
    macro_rules! fields_of {
        ($ty:ident { $($field:ident: $kind:ident),* }) => {
            if optimizer.is::<$ty>() {
                let Some($ty { $($field),* }) = optimizer.downcast_mut() else { return Vec::new() };
                return vec![$((stringify!($field), Field::$kind($field))),*];
            }
        };
    }
    fields_of!(Sgd { lr: Real, weight_decay: Real });
    fields_of!(Momentum { lr: Real, momentum: Real, nesterov: Flag, weight_decay: Real });
    fields_of!(Adam { lr: Real, beta1: Real, beta2: Real, eps: Real, weight_decay: Real });
    fields_of!(AdamW { lr: Real, beta1: Real, beta2: Real, eps: Real, weight_decay: Real });
    Vec::new()
}

/// The optimizer's record: its name and every hyperparameter, each `f32` written so that it
/// reads back to the same bits: `adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8,
/// weight_decay=0.0)`.
fn optimizer_text<O: Optimizer>(mut optimizer: O) -> String {
    let values = fields(&mut optimizer)
        .into_iter()
        .map(|(name, field)| match field {
            Field::Real(v) => format!("{name}={v:?}"),
            Field::Flag(v) => format!("{name}={v}"),
        })
        .collect::<Vec<_>>();
    format!("{}({})", O::NAME, values.join(", "))
}

/// The hyperparameters an optimizer's record holds (see [`optimizer_text`]): `None` for the
/// record of another optimizer than `O`.
fn parse_optimizer<O: Optimizer>(text: &str) -> std::result::Result<Option<O>, CheckpointErrorKind> {
    let malformed = |reason: String| CheckpointErrorKind::Hyperparameters { record: text.to_string(), reason };
    let Some((name, values)) = text.split_once('(').and_then(|(name, rest)| Some((name, rest.strip_suffix(')')?)))
    else {
        return Err(malformed("it is not `<optimizer>(<name>=<value>, ...)`".to_string()));
    };
    if name != O::NAME {
        return Ok(None);
    }
    let mut pairs = Vec::new();
    for pair in values.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| malformed(format!("`{pair}` is not `<name>=<value>`")))?;
        pairs.push((key.trim(), value.trim()));
    }
    let mut optimizer = O::default();
    let mut fields = fields(&mut optimizer);
    for (name, field) in &mut fields {
        let value = pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| malformed(format!("it has no `{name}`")))?;
        match field {
            Field::Real(v) => {
                **v = value.parse().map_err(|_| malformed(format!("`{name}={value}` is not a number")))?
            }
            Field::Flag(v) => {
                **v = value.parse().map_err(|_| malformed(format!("`{name}={value}` is not true or false")))?
            }
        }
    }
    if pairs.len() != fields.len() {
        let known = fields.iter().map(|(name, _)| *name).collect::<Vec<_>>();
        return Err(malformed(format!("{} has the hyperparameters {} alone, once each", O::NAME, known.join(", "))));
    }
    drop(fields);
    match optimizer.invalid() {
        Some((name, value)) => Err(malformed(format!("`{name}={value:?}` is out of range"))),
        None => Ok(Some(optimizer)),
    }
}

/// The widths of model `M` as a person reads them: `4 -> 8 -> 3`.
pub(crate) fn layers_text<M: Model>() -> String {
    format::widths_text(M::LAYERS)
}

/// The safetensors dtype of model `M`'s storage.
fn dtype_of<M: Model>() -> Dtype {
    if M::Storage::IS_F16 {
        Dtype::F16
    } else {
        Dtype::F32
    }
}

/// The safetensors bytes of what is saved.
fn to_safetensors<M: Model>(saved: &Saved<M>) -> std::result::Result<Vec<u8>, String> {
    let mut buffers = Vec::new();
    for (name, shape, start) in tensors_of::<M>() {
        let bytes = tensor_bytes(&saved.flat, &shape, start);
        buffers.push((name, shape, bytes, dtype_of::<M>()));
    }
    if let Some((moments, step)) = &saved.state {
        for (name, shape, start) in optim_tensors::<M>() {
            let bytes = tensor_bytes(moments, &shape, start);
            buffers.push((name, shape, bytes, Dtype::F32));
        }
        buffers.push((STEP_TENSOR.to_string(), vec![1], step.to_le_bytes().to_vec(), Dtype::U32));
    }
    if let Some((mean, scale)) = &saved.standardizer {
        for (name, values) in STANDARDIZER_TENSORS.iter().zip([mean, scale]) {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((name.to_string(), vec![values.len()], bytes, Dtype::F32));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes, dtype)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    if M::LAYERS.len() > 2 {
        records.push((format::ACTIVATIONS, activations_text::<M>()));
    }
    if let Some(optimizer) = saved.optimizer {
        records.push((format::OPTIMIZER, optimizer_text(optimizer)));
    }
    let entry = format::metadata_entry(M::NAME, M::LAYERS, &records);
    let metadata = HashMap::from([(format::METADATA_KEY.to_string(), entry)]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// The name of a dtype a checkpoint's tensors may need.
fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "F16",
        Dtype::U32 => "U32",
        _ => "F32",
    }
}

/// Refuses tensor `name` unless it has `dtype` and `shape`; `hint` is said of another shape.
fn check_tensor<M: Model>(
    name: &str,
    view: &TensorView<'_>,
    dtype: Dtype,
    shape: &[usize],
    hint: ShapeHint,
) -> std::result::Result<(), CheckpointErrorKind> {
    if view.dtype() != dtype {
        return Err(CheckpointErrorKind::WrongDtype {
            name: name.to_string(),
            found: format!("{:?}", view.dtype()),
            expected: dtype_name(dtype),
            storage: M::Storage::NAME,
        });
    }
    if view.shape() != shape {
        return Err(CheckpointErrorKind::WrongShape {
            name: name.to_string(),
            model: M::NAME,
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
            hint,
        });
    }
    Ok(())
}

/// What a checkpoint holds of model `M` (its header parsed once), every name, dtype and
/// shape checked.
fn from_safetensors<M: Model>(bytes: &[u8]) -> std::result::Result<Saved<M>, CheckpointErrorKind> {
    let file = Checkpoint::parse(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    let expected = tensors_of::<M>();
    let optim = optim_tensors::<M>();
    let mut expected_names = expected.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    if !optim.is_empty() {
        expected_names.push_str(&format!(" (and the optimizer's state: {STEP_TENSOR}, optim.<buffer>.<parameter>)"));
    }
    for name in file.names() {
        let is_optim = !optim.is_empty() && (name == STEP_TENSOR || optim.iter().any(|(n, _, _)| *n == name));
        if !expected.iter().any(|(n, _, _)| *n == name) && !STANDARDIZER_TENSORS.contains(&name.as_str()) && !is_optim {
            return Err(CheckpointErrorKind::UnexpectedTensor {
                name,
                model: M::NAME,
                layers: layers_text::<M>(),
                expected: expected_names,
            });
        }
    }
    let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
    for (name, shape, start) in &expected {
        let view = file.tensor(name).ok_or_else(|| CheckpointErrorKind::MissingTensor {
            name: name.clone(),
            model: M::NAME,
            layers: layers_text::<M>(),
            expected: expected_names.clone(),
        })?;
        let transposed = matches!(view.shape(), [a, b] if [*b, *a] == shape[..]);
        let hint = if transposed { ShapeHint::PyTorchLayout } else { ShapeHint::None };
        check_tensor::<M>(name, &view, dtype_of::<M>(), shape, hint)?;
        // The parser checked that the data holds exactly product(shape) values of the dtype.
        let values = view.data().chunks_exact(std::mem::size_of::<M::Storage>()).map(M::Storage::from_le_slice);
        read_tensor(values, shape, *start, &mut flat);
    }
    // The tensors fit the declaration: the activations they were trained with must too.
    check_activations::<M>(file.entry())?;
    let standardizer = saved_standardizer::<M>(&file)?;
    let state = saved_state::<M>(&file, &optim)?;
    let optimizer = match file.entry().and_then(|entry| format::record(entry, format::OPTIMIZER)) {
        None => None,
        Some(record) => match parse_optimizer::<M::Optimizer>(record)? {
            Some(optimizer) => Some(optimizer),
            // Another optimizer's state would not continue its run here.
            None if state.is_some() => {
                return Err(CheckpointErrorKind::WrongOptimizer {
                    model: M::NAME,
                    expected: <M::Optimizer as Optimizer>::NAME,
                    found: record.to_string(),
                })
            }
            // Parameters alone: they load, with the model's hyperparameters.
            None => None,
        },
    };
    Ok(Saved { flat, standardizer, state, optimizer })
}

/// The optimizer's state saved beside the parameters: every tensor of it (`F32`, shaped as
/// its parameter; the step count one `U32`) or none.
fn saved_state<M: Model>(
    file: &Checkpoint<'_>,
    optim: &[(String, Vec<usize>, usize)],
) -> std::result::Result<Option<(Vec<f32>, u32)>, CheckpointErrorKind> {
    let step = file.tensor(STEP_TENSOR);
    if optim.is_empty() || (step.is_none() && optim.iter().all(|(n, _, _)| file.tensor(n).is_none())) {
        return Ok(None);
    }
    let missing = |name: &str| CheckpointErrorKind::MissingTensor {
        name: name.to_string(),
        model: M::NAME,
        layers: layers_text::<M>(),
        expected: "it beside the optimizer's other state (saved all together)".to_string(),
    };
    let step = step.ok_or_else(|| missing(STEP_TENSOR))?;
    check_tensor::<M>(STEP_TENSOR, &step, Dtype::U32, &[1], ShapeHint::None)?;
    let step = <[u8; 4]>::try_from(step.data())
        .map(u32::from_le_bytes)
        .map_err(|_| CheckpointErrorKind::Format { reason: format!("tensor '{STEP_TENSOR}' is not 4 bytes") })?;
    let mut moments = vec![0.0f32; <M::Optimizer as Optimizer>::MOMENTS * M::Params::LEN];
    for (name, shape, start) in optim {
        let view = file.tensor(name).ok_or_else(|| missing(name))?;
        check_tensor::<M>(name, &view, Dtype::F32, shape, ShapeHint::None)?;
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
fn saved_standardizer<M: Model>(file: &Checkpoint<'_>) -> std::result::Result<Option<MeanScale>, CheckpointErrorKind> {
    let [mean, scale] = STANDARDIZER_TENSORS.map(|name| file.tensor(name));
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
    let [mean, scale] = [(STANDARDIZER_TENSORS[0], mean), (STANDARDIZER_TENSORS[1], scale)].map(|(name, view)| {
        check_tensor::<M>(name, &view, Dtype::F32, &[M::FEATURES], ShapeHint::PerFeature)
            .map(|()| view.data().chunks_exact(4).map(f32::from_le_slice).collect::<Vec<f32>>())
    });
    Ok(Some((mean?, scale?)))
}
