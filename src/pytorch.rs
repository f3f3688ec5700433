//! PyTorch state dicts in safetensors files: [`Engine::from_pytorch`] reads what
//! `safetensors.torch.save_file(model.state_dict(), path)` writes for an MLP of `nn.Linear`
//! layers, and [`Engine::save_pytorch`] writes the parameters under PyTorch's names and
//! layout.
//!
//! # What is read
//!
//! Every tensor must be the `weight` (2-D, `[out, in]`, as `nn.Linear` stores it) or the
//! `bias` (1-D, `[out]`) of a Linear layer, its name `<prefix>.weight` or `<prefix>.bias`.
//! Activations (`nn.ReLU`) and `nn.Dropout` have no tensors; anything else with tensors
//! (`BatchNorm`'s running statistics, an embedding, a 3-D weight) is refused, naming the
//! tensor. Each layer needs its bias (`nn.Linear(.., bias=True)`, the default).
//!
//! # The order of the layers
//!
//! A safetensors file does not keep the order of the module's layers: its header is a JSON
//! object, and `save_file` lays the data out sorted by dtype and then by name, so neither
//! carries the module's order. The order is therefore read from the names, by this rule:
//!
//! 1. When the layers' prefixes differ only in their numbers (`0`, `2`, `4` of an
//!    `nn.Sequential`; `fc1`, `fc2`, `fc10`; `layers.0.linear`, `layers.1.linear`), the
//!    numbers give the order, compared as numbers (`2` before `10`).
//! 2. Otherwise (`hidden` and `out`, `encoder` and `head`) the names say nothing about the
//!    order, and the shapes must: for each layer of the declaration, in turn, exactly one
//!    remaining layer must have its shape. When two could (two `[8 x 8]` layers), the load
//!    is refused rather than guessed; rename them with numbers, or save an `nn.Sequential`.
//!
//! # Layout, shapes and dtypes
//!
//! Weights are `[out, in]` row-major in the file; tensorbridge stores `[in x out]`
//! column-major, which is the same sequence of values, so they are copied as they are.
//! A weight whose shape is the transpose of the one expected (the `[in, out]` layout of
//! tensorbridge's own checkpoints and of scikit-learn's `coefs_`) is refused with an error
//! saying so, never transposed on a guess; a square layer cannot show its layout, and is
//! read as PyTorch stores it. `F32`, `F16`, `BF16` and `F64` tensors are converted to the
//! model's storage (rounded to nearest once); a finite value beyond the storage's range
//! (an `F64` beyond `f32`, or anything beyond ±65504 for `storage: f16`) is an error naming
//! the tensor and the index, never an infinity.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::check;
use crate::checkpoint::layers_text;
use crate::device::Device;
use crate::engine::Engine;
use crate::error::{CheckpointErrorKind, Error, Result, ShapeHint};
use crate::fsutil::write_atomically;
use crate::host::narrow;
use crate::layout::layer_slots;
use crate::model::{Element, Model, Params, StorageElement};

impl<M: Model> Engine<M> {
    /// Creates the model on `device` with the parameters of a PyTorch state dict saved by
    /// `safetensors.torch.save_file(model.state_dict(), path)`: an `nn.Sequential` of
    /// `nn.Linear` and activation layers (`0.weight`, `0.bias`, `2.weight`, ...), or a
    /// module with named Linear attributes (`fc1.weight`, ...). See the
    /// [module docs](crate::pytorch) for the rules (order of the layers, layout, dtypes).
    ///
    /// The activations are not in the file: the declaration's (`activation:`, ReLU by
    /// default) must be the PyTorch model's between its Linear layers (`nn.ReLU`,
    /// `nn.Tanh`, `nn.Sigmoid`, or none for `identity`) for the logits to agree.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Checkpoint`] if it is not a
    /// safetensors file, holds a tensor that is not a Linear layer's weight or bias
    /// ([`CheckpointErrorKind::NotLinear`]), lacks a bias, has layers that do not chain as
    /// the declaration or whose order the names and shapes cannot settle
    /// ([`CheckpointErrorKind::Layers`]), a weight in the transposed layout
    /// ([`CheckpointErrorKind::WrongShape`], saying so), a dtype other than `F32`, `F16`,
    /// `BF16`, `F64`, or a value the storage cannot hold ([`CheckpointErrorKind::OutOfRange`]);
    /// [`Error::NonFinite`] for a NaN or infinite parameter.
    pub fn from_pytorch(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let flat = read_state_dict::<M>(&bytes).map_err(|kind| Error::Checkpoint { path: path.to_path_buf(), kind })?;
        Engine::with_params(device, M::Params::from_flat(&flat))
    }

    /// Saves the parameters as the state dict of PyTorch's
    /// `nn.Sequential(nn.Linear(f, h1), nn.ReLU(), ..., nn.Linear(hn, c))`: tensors `0.weight`,
    /// `0.bias`, `2.weight`, ... of shape `[out, in]` and `[out]` (dtype `F32`, or `F16` for
    /// `storage: f16`), with the metadata `{"format": "pt"}` that `safetensors.torch`
    /// writes, so `model.load_state_dict(safetensors.torch.load_file(path))` reads it. An
    /// attached standardiser is not written (a state dict has no place for it). Atomic, like
    /// [`Engine::save`].
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite, before the file is touched;
    /// [`Error::Io`] if the file cannot be written.
    pub fn save_pytorch(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.params()?.write_flat(&mut flat);
        check::params(M::LAYERS, &flat)?;
        let bytes = write_state_dict::<M>(&flat).map_err(|reason| Error::Checkpoint {
            path: path.to_path_buf(),
            kind: CheckpointErrorKind::Format { reason },
        })?;
        write_atomically(path, |file| file.write_all(&bytes))
    }
}

/// The name of layer `l` in `nn.Sequential(Linear, ReLU, Linear, ...)`: `2 * l`.
fn sequential_prefix(l: usize) -> String {
    (2 * l).to_string()
}

fn write_state_dict<M: Model>(flat: &[M::Storage]) -> std::result::Result<Vec<u8>, String> {
    let dtype = if M::Storage::IS_F16 { Dtype::F16 } else { Dtype::F32 };
    let mut buffers = Vec::new();
    for (l, s) in layer_slots(M::LAYERS).enumerate() {
        // Column-major `[in x out]` is row-major `[out, in]`: the same values in order.
        for (suffix, shape, values) in [
            ("weight", vec![s.fan_out, s.fan_in], &flat[s.w..s.w + s.fan_in * s.fan_out]),
            ("bias", vec![s.fan_out], &flat[s.b..s.b + s.fan_out]),
        ] {
            let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
            values.iter().for_each(|v| v.extend_le_bytes(&mut bytes));
            buffers.push((format!("{}.{suffix}", sequential_prefix(l)), shape, bytes));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(dtype, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// One Linear layer of the file: its prefix and its two tensors.
struct Linear<'a> {
    prefix: String,
    weight: TensorView<'a>,
    bias: TensorView<'a>,
}

impl Linear<'_> {
    /// `[out, in]` of the weight.
    fn shape(&self) -> [usize; 2] {
        [self.weight.shape()[0], self.weight.shape()[1]]
    }
}

fn describe(layers: &[&Linear<'_>]) -> String {
    layers
        .iter()
        .map(|l| format!("'{}' [{} x {}]", l.prefix, l.shape()[0], l.shape()[1]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The prefix with every run of digits replaced by `#`, and the numbers in order.
fn numbering(prefix: &str) -> (String, Vec<(usize, String)>) {
    let (mut skeleton, mut numbers, mut digits) = (String::new(), Vec::new(), String::new());
    for c in prefix.chars().chain(std::iter::once('/')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            let trimmed = digits.trim_start_matches('0').to_string();
            // Compared as numbers of any size: by length, then digit by digit.
            numbers.push((trimmed.len(), trimmed));
            skeleton.push('#');
            digits.clear();
        }
        skeleton.push(c);
    }
    skeleton.pop();
    (skeleton, numbers)
}

fn read_state_dict<M: Model>(bytes: &[u8]) -> std::result::Result<Vec<M::Storage>, CheckpointErrorKind> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointErrorKind::Format { reason: e.to_string() })?;
    let layers_error = |found: &[&Linear<'_>], reason: String| CheckpointErrorKind::Layers {
        found: describe(found),
        model: M::NAME,
        layers: layers_text::<M>(),
        reason,
    };

    // Group the tensors by prefix; each must be a Linear layer's 2-D weight or 1-D bias.
    let mut groups: BTreeMap<String, [Option<TensorView<'_>>; 2]> = BTreeMap::new();
    let mut tensors = file.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        let not_linear = |reason: &str| CheckpointErrorKind::NotLinear {
            name: name.clone(),
            shape: view.shape().to_vec(),
            reason: reason.to_string(),
        };
        let (prefix, suffix) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
        let slot = match (suffix, view.shape().len()) {
            ("weight", 2) => 0,
            ("bias", 1) => 1,
            ("weight" | "bias", _) => {
                return Err(not_linear("nn.Linear's weight is 2-D ([out, in]) and its bias 1-D ([out])"))
            }
            _ => {
                return Err(not_linear(
                    "only nn.Linear layers (with activations between them) are read; \
                     other layers with tensors (BatchNorm, embeddings, ...) are not supported",
                ))
            }
        };
        groups.entry(prefix.to_string()).or_default()[slot] = Some(view);
    }
    let mut linears = Vec::new();
    for (prefix, [weight, bias]) in groups {
        let dot = if prefix.is_empty() { "" } else { "." };
        match (weight, bias) {
            (Some(weight), Some(bias)) => linears.push(Linear { prefix, weight, bias }),
            (weight, _) => {
                let (missing, why) = if weight.is_none() {
                    ("weight", "every bias belongs to a Linear layer with a weight")
                } else {
                    ("bias", "tensorbridge's layers have biases: nn.Linear(.., bias=True), the default")
                };
                return Err(CheckpointErrorKind::MissingTensor {
                    name: format!("{prefix}{dot}{missing}"),
                    model: M::NAME,
                    layers: layers_text::<M>(),
                    expected: format!("a weight and a bias for every Linear layer ({why})"),
                });
            }
        }
    }
    let dims = M::LAYERS;
    let n_layers = dims.len() - 1;
    let all: Vec<&Linear<'_>> = linears.iter().collect();
    if linears.len() != n_layers {
        return Err(layers_error(
            &all,
            format!("{} Linear layers, where the declaration has {n_layers}", linears.len()),
        ));
    }

    // The order: by the numbers in the names when they differ only there, else by shapes.
    let numbered: Vec<_> = linears.iter().map(|l| numbering(&l.prefix)).collect();
    let by_numbers = numbered.iter().all(|(skeleton, _)| *skeleton == numbered[0].0);
    let ordered: Vec<&Linear<'_>> = if by_numbers {
        let mut order: Vec<usize> = (0..linears.len()).collect();
        order.sort_by(|&a, &b| numbered[a].1.cmp(&numbered[b].1));
        order.into_iter().map(|k| &linears[k]).collect()
    } else {
        let mut left = all.clone();
        let mut ordered = Vec::new();
        for l in 0..n_layers {
            let want = [dims[l + 1], dims[l]];
            let fits: Vec<usize> = (0..left.len()).filter(|&k| left[k].shape() == want).collect();
            match fits[..] {
                [k] => ordered.push(left.remove(k)),
                [] => {
                    let transposed = left.iter().find(|c| c.shape() == [dims[l], dims[l + 1]]);
                    let hint = transposed.map_or(String::new(), |c| {
                        format!(
                            "; '{}' is [{} x {}], the transposed layout ([in, out], as tensorbridge's own \
                             checkpoints and scikit-learn's coefs_ store it), which from_pytorch does not read",
                            c.prefix,
                            dims[l],
                            dims[l + 1]
                        )
                    });
                    return Err(layers_error(
                        &all,
                        format!(
                            "no layer has layer {l}'s shape [{} x {}] ([out x in]); the names differ in more than \
                             numbers, so the order was taken from the shapes{hint}",
                            want[0], want[1]
                        ),
                    ));
                }
                _ => {
                    let same: Vec<&Linear<'_>> = fits.iter().map(|&k| left[k]).collect();
                    return Err(layers_error(
                        &all,
                        format!(
                            "the names differ in more than numbers, so they do not give the order, and the \
                             shapes cannot settle it: {} could each be layer {l}; name the layers with \
                             numbers (fc1, fc2, ...) or save an nn.Sequential",
                            describe(&same)
                        ),
                    ));
                }
            }
        }
        ordered
    };

    let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
    for (slot, layer) in layer_slots(dims).zip(&ordered) {
        let want = [slot.fan_out, slot.fan_in];
        let found = layer.shape();
        if found != want {
            let hint =
                if found == [slot.fan_in, slot.fan_out] { ShapeHint::TensorbridgeLayout } else { ShapeHint::OutIn };
            return Err(CheckpointErrorKind::WrongShape {
                name: format!("{}.weight", layer.prefix),
                model: M::NAME,
                expected: want.to_vec(),
                found: found.to_vec(),
                hint,
            });
        }
        if layer.bias.shape() != [slot.fan_out] {
            return Err(CheckpointErrorKind::WrongShape {
                name: format!("{}.bias", layer.prefix),
                model: M::NAME,
                expected: vec![slot.fan_out],
                found: layer.bias.shape().to_vec(),
                hint: ShapeHint::PerOutput,
            });
        }
        // Row-major `[out, in]` is column-major `[in x out]`: copied in order.
        let name = |suffix: &str| format!("{}.{suffix}", layer.prefix);
        convert::<M::Storage>(&name("weight"), &layer.weight, &mut flat[slot.w..slot.w + slot.fan_in * slot.fan_out])?;
        convert::<M::Storage>(&name("bias"), &layer.bias, &mut flat[slot.b..slot.b + slot.fan_out])?;
    }
    Ok(flat)
}

/// The values of `view` (its length already checked against `out`'s) in the storage type.
fn convert<T: StorageElement>(
    name: &str,
    view: &TensorView<'_>,
    out: &mut [T],
) -> std::result::Result<(), CheckpointErrorKind> {
    let data = view.data();
    let read = |k: usize| -> f64 {
        match view.dtype() {
            Dtype::F64 => f64::from_le_bytes(data[8 * k..8 * k + 8].try_into().unwrap_or([0; 8])),
            Dtype::F32 => f64::from(f32::from_le_bytes(data[4 * k..4 * k + 4].try_into().unwrap_or([0; 4]))),
            Dtype::F16 => f64::from(half::f16::from_le_bytes([data[2 * k], data[2 * k + 1]]).to_f32()),
            _ => f64::from(half::bf16::from_le_bytes([data[2 * k], data[2 * k + 1]]).to_f32()),
        }
    };
    if !matches!(view.dtype(), Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(CheckpointErrorKind::WrongDtype {
            name: name.to_string(),
            found: format!("{:?}", view.dtype()),
            expected: "F32, F16, BF16 or F64",
            storage: T::NAME,
        });
    }
    for (k, o) in out.iter_mut().enumerate() {
        let v = read(k);
        *o = narrow::<T>(v).ok_or_else(|| CheckpointErrorKind::OutOfRange {
            name: name.to_string(),
            index: k,
            value: v.to_string(),
            storage: T::NAME,
        })?;
    }
    Ok(())
}
