//! ONNX import and export (feature `onnx`): [`Engine::from_onnx`] reads an MLP classifier
//! written by `torch.onnx.export`, scikit-learn's `skl2onnx` or any converter that writes
//! the same operators, and [`Engine::save_onnx`] writes the model as a graph that
//! onnxruntime runs.
//!
//! The protobuf messages are decoded and encoded by [`prost`], through message structs for
//! the subset of `onnx.proto` read and written (`src/onnx/proto.rs`, prost's derive: no
//! `protoc` at build time).
//!
//! # What is read
//!
//! One graph input (float, double or float16, `[N, features]`), then the nodes in the
//! graph's order, each taking the value that the one before produced:
//!
//! | operators | as |
//! | --- | --- |
//! | `Cast` to a float type, `Flatten` (axis 1), `Identity` | nothing (the value as it is) |
//! | `Sub` then `Div` or `Mul` by constants of `[features]` or `[1, features]`; or `ai.onnx.ml`'s `Scaler` | the model's [standardiser](crate::Standardizer): `(x - mean) / scale`, `Mul` by `m` as scale `1 / m` |
//! | `Gemm` (`transA` 0; `transB` 0 or 1; `alpha` and `beta` folded into the weight and the bias) | one dense layer |
//! | `MatMul` by a constant, then `Add` of a constant `[out]` or `[1, out]` | one dense layer |
//! | `Relu`, `Tanh` or `Sigmoid` between dense layers (nothing, or `Identity`, for `activation: identity`) | the hidden layers' activation, which must be the declaration's |
//! | `Softmax` / `LogSoftmax` on the last axis after the last layer | nothing: `logits` are the values before it; `predict_proba` gives the softmax |
//! | `ArgMax` of the output, and what follows it (`ArrayFeatureExtractor`, `Reshape`, `Cast`, `ZipMap`, `Identity`): skl2onnx's label branch | nothing |
//!
//! An activation between layers other than the declaration's (`Tanh` where the model has
//! `relu`, say) is refused, naming both, as is an activation after the last layer, two dense layers with none
//! between them, a constant that is not a plain tensor (`Constant` nodes are read), any
//! other operator, attribute value or shape: each error names the node. The dense layers
//! must chain as the declaration (`features -> hidden... -> classes`); a weight that only
//! fits transposed is an error that says so. Constants may be `float`, `double`, `float16`
//! or `bfloat16`, converted to the model's storage with a range check. Tensors in external
//! files and sparse initializers are refused.
//!
//! The reader is bounded: the file's size is checked before it is read (at most
//! [`MAX_ONNX_BYTES`]), the decoder copies no more than the file holds, and every tensor's
//! shape is checked against its data before any value is converted.
//!
//! # What is written
//!
//! Opset 13, IR version 7: input `input` (`float [N, features]`, `N` free); with a
//! standardiser, `Sub` and `Div` by its mean and scale; under `storage: f16`, a `Cast` to
//! `float16` and back (the rounding the model's batch storage does); one `Gemm` per layer
//! (`w<l>` `[in, out]`, `b<l>` `[out]`) with the declaration's activation between (`Relu`,
//! `Tanh`, `Sigmoid` or `Identity`); outputs `logits` and
//! `probabilities` (their `Softmax`).
//!
//! # The int8 model (QDQ)
//!
//! [`Int8Model::save_onnx`] writes the int8 model (see [`quant`](crate::quant) for the
//! scheme) in ONNX's QDQ form, opset 13: the integers and scales as constants, and
//! `QuantizeLinear`/`DequantizeLinear` pairs where the integer pass quantises.
//!
//! - The input: `QuantizeLinear` then `DequantizeLinear` by `a0.scale` (`float`, `[]`) and
//!   `a0.zero_point` (`int8`, `[]`).
//! - Layer `l`: `w<l>.quantized` (`int8`, `[in, out]`) through `DequantizeLinear` by
//!   `w<l>.scale` (`float`, `[out]`) and `w<l>.zero_point` (`int8` zeros), `axis` 1 (the
//!   output channel); `b<l>.quantized` (`int32`, `[out]`) through `DequantizeLinear` by
//!   `b<l>.scale` = `a<l>.scale · w<l>.scale` (zero point 0, `axis` 0); then `Gemm`.
//! - A hidden layer's output: `Relu`, then `QuantizeLinear`/`DequantizeLinear` by
//!   `a<l+1>.scale` and `a<l+1>.zero_point` (`int8`).
//! - The head's output is `int16` in the scheme, which opset 13's `QuantizeLinear` (8-bit
//!   outputs only) cannot write: it is `Div` by `a<L>.scale`, `Round`, `Clip` to
//!   `[a<L>.code_min, a<L>.code_max]` (`−32768 − z`, `32767 − z`) and `Mul` by the scale,
//!   which is the dequantised code `s · (q − z)`: the output `logits`, and
//!   `probabilities` (their `Softmax`).
//!
//! A runtime computes this graph in floating point (or fuses it into integer operators with
//! its own requantisation), where the integer pass requantises by a fixed-point multiplier
//! and rounds half away from zero (ONNX rounds half to even), so a code can differ from ours
//! by one step where a value lies within rounding of a half step: the logits agree to a few
//! of the head's steps, the predictions as a rule exactly (`tests/int8_onnx.rs` measures
//! both).

mod proto;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use prost::Message;

use crate::check;
use crate::device::Device;
use crate::engine::Engine;
use crate::error::{Error, Result};

pub use crate::error::OnnxErrorKind;
use crate::fsutil::write_atomically;
use crate::host::{narrow, Standardizer};
use crate::layout::layer_slots;
use crate::math::activation::{after_layer, Activation};
use crate::model::{Element, Model, Params, StorageElement};
use crate::quant::Int8Model;

use proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// The largest ONNX file read: 2 GiB, protobuf's own limit for one message.
pub const MAX_ONNX_BYTES: u64 = 2 << 30;

type Kind = OnnxErrorKind;
type R<T> = std::result::Result<T, Kind>;

impl<M: Model> Engine<M> {
    /// Creates the model on `device` from an ONNX file of an MLP classifier whose layers
    /// are the declaration's: see the [module docs](crate::onnx) for the operators read. A
    /// standardisation in front of the first layer becomes the model's
    /// [standardiser](Engine::set_standardizer), so `logits` and `predict` then take raw
    /// features, as the ONNX graph does.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Onnx`] if it is larger than
    /// [`MAX_ONNX_BYTES`], not an ONNX model, or a graph that is not an MLP of this
    /// declaration (the error names the node, tensor or layer at fault);
    /// [`Error::NonFinite`] for a NaN or infinite parameter.
    pub fn from_onnx(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let onnx_error = |kind| Error::Onnx { path: path.to_path_buf(), kind };
        let (flat, standardizer) = read_onnx::<M>(&bytes).map_err(onnx_error)?;
        let mut engine = Engine::with_params(device, M::Params::from_flat(&flat))?;
        if let Some(s) = standardizer {
            engine.set_standardizer(s)?;
        }
        Ok(engine)
    }

    /// Saves the model as an ONNX graph (see the [module docs](crate::onnx) for its form)
    /// that onnxruntime runs, with the attached standardiser in front when there is one.
    /// Atomic, like [`Engine::save`].
    ///
    /// # Errors
    /// [`Error::NonFinite`] if a parameter is NaN or infinite, before the file is touched;
    /// [`Error::Io`] if the file cannot be written.
    pub fn save_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
        self.params()?.write_flat(&mut flat);
        check::params(M::LAYERS, &flat)?;
        let bytes = write_onnx::<M>(&flat, self.standardizer()).encode_to_vec();
        write_atomically(path.as_ref(), |file| file.write_all(&bytes))
    }
}

/// The bytes of the ONNX file at `path`, its size checked before reading.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > MAX_ONNX_BYTES {
        return Err(Error::Onnx { path: path.to_path_buf(), kind: Kind::TooLarge { size, max: MAX_ONNX_BYTES } });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_ONNX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// The values of the model's parameters from an ONNX file's bytes, and its standardiser.
/// Public for the fuzz target; not a public API.
#[doc(hidden)]
pub fn __read_onnx<M: Model>(
    bytes: &[u8],
) -> std::result::Result<(Vec<M::Storage>, Option<Standardizer>), OnnxErrorKind> {
    read_onnx::<M>(bytes)
}

// ---------------------------------------------------------------------------------------
// Reading

/// A constant tensor, its values as `f64` (every float type converts exactly).
struct Constant {
    dims: Vec<usize>,
    values: Vec<f64>,
}

/// A dense layer found in the graph: `[in x out]` weights (column-major, as the model
/// stores them: `w[o * in + i]`), bias, and the node that made it.
struct Dense {
    node: String,
    fan_in: usize,
    fan_out: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

/// Where the walk along the graph is.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stage {
    /// Before the first dense layer: casts, flatten, standardisation.
    Front,
    /// Right after a `MatMul` whose `Add` is still to come.
    MatMul,
    /// After a dense layer (its activation, or the next layer, or the end, may follow).
    Dense,
    /// After a hidden layer's ReLU.
    Activation,
    /// After the output's softmax.
    Softmax,
}

fn node_label(node: &NodeProto, k: usize) -> String {
    if node.name.is_empty() {
        format!("#{k}")
    } else {
        node.name.clone()
    }
}

fn dims_text(dims: &[usize]) -> String {
    format!("[{}]", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// The values of a tensor, every size checked against its data before converting.
fn constant(t: &TensorProto) -> R<Constant> {
    let bad = |reason: String| Kind::Tensor { name: t.name.clone(), reason };
    if t.data_location != 0 || !t.external_data.is_empty() {
        return Err(bad("its values are in an external file, which is not read".into()));
    }
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        count = count.checked_mul(d).ok_or_else(|| bad("its shape overflows".into()))?;
        dims.push(d);
    }
    let raw = !t.raw_data.is_empty() || count == 0;
    let (size, listed) = match t.data_type {
        data_type::FLOAT => (4, t.float_data.len()),
        data_type::DOUBLE => (8, t.double_data.len()),
        data_type::FLOAT16 | data_type::BFLOAT16 => (2, t.int32_data.len()),
        other => return Err(bad(format!("data type {other} is not a float type (float, double, float16, bfloat16)"))),
    };
    let have = if raw { t.raw_data.len() / size } else { listed };
    if (raw && !t.raw_data.len().is_multiple_of(size)) || have != count {
        return Err(bad(format!("its shape {} holds {count} values, but it has {have}", dims_text(&dims))));
    }
    let half = |bits: u16| match t.data_type {
        data_type::FLOAT16 => f64::from(half::f16::from_bits(bits).to_f32()),
        _ => f64::from(half::bf16::from_bits(bits).to_f32()),
    };
    let values: Vec<f64> = if raw {
        let chunks = t.raw_data.chunks_exact(size);
        match size {
            4 => chunks.map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            8 => chunks.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            _ => chunks.map(|c| half(u16::from_le_bytes([c[0], c[1]]))).collect(),
        }
    } else {
        match t.data_type {
            data_type::FLOAT => t.float_data.iter().map(|&v| f64::from(v)).collect(),
            data_type::DOUBLE => t.double_data.clone(),
            _ => t.int32_data.iter().map(|&v| half(v as u16)).collect(),
        }
    };
    Ok(Constant { dims, values })
}

fn read_onnx<M: Model>(bytes: &[u8]) -> R<(Vec<M::Storage>, Option<Standardizer>)> {
    let model = ModelProto::decode(bytes).map_err(|e| Kind::Decode { reason: e.to_string() })?;
    let graph = model.graph.ok_or_else(|| Kind::Graph { reason: "the model has no graph".into() })?;
    for opset in &model.opset_import {
        if matches!(opset.domain.as_str(), "" | "ai.onnx") && opset.version > 0 && opset.version < 7 {
            return Err(Kind::Graph {
                reason: format!(
                    "opset {} of the default domain is older than this reader knows (7 and later)",
                    opset.version
                ),
            });
        }
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(Kind::Graph { reason: "sparse initializers are not read".into() });
    }
    walk::<M>(&graph)
}

/// The attributes of a node, by name, each checked against the names `allowed` and, where
/// the file says (every writer since IR version 3 does), against the type its operator gives
/// it: `transB` as a float would otherwise read as 0.
fn attributes<'n>(node: &'n NodeProto, label: &str, allowed: &[&str]) -> R<HashMap<&'n str, &'n AttributeProto>> {
    let mut out = HashMap::new();
    for a in &node.attribute {
        if !allowed.contains(&a.name.as_str()) {
            return Err(node_error(node, label, format!("attribute '{}' is not supported", a.name)));
        }
        let expected = match a.name.as_str() {
            "alpha" | "beta" => attribute_type::FLOAT,
            "offset" | "scale" => attribute_type::FLOATS,
            "value" => attribute_type::TENSOR,
            _ => attribute_type::INT,
        };
        if a.r#type != 0 && a.r#type != expected {
            return Err(node_error(
                node,
                label,
                format!("attribute '{}' has type {}, where the operator defines type {expected}", a.name, a.r#type),
            ));
        }
        out.insert(a.name.as_str(), a);
    }
    Ok(out)
}

fn node_error(node: &NodeProto, label: &str, reason: String) -> Kind {
    Kind::Node { node: label.to_string(), op: node.op_type.clone(), reason }
}

fn int_attr(attrs: &HashMap<&str, &AttributeProto>, name: &str, default: i64) -> i64 {
    attrs.get(name).map_or(default, |a| a.i)
}

fn float_attr(attrs: &HashMap<&str, &AttributeProto>, name: &str, default: f32) -> f32 {
    attrs.get(name).map_or(default, |a| a.f)
}

/// A per-feature vector: a constant of shape `[n]` or `[1, n]` (or a scalar, repeated).
fn vector(c: &Constant, n: usize) -> Option<Vec<f64>> {
    match c.dims[..] {
        [] | [1] | [1, 1] if c.values.len() == 1 => Some(vec![c.values[0]; n]),
        [k] | [1, k] if k == n => Some(c.values.clone()),
        _ => None,
    }
}

fn walk<M: Model>(graph: &GraphProto) -> R<(Vec<M::Storage>, Option<Standardizer>)> {
    let dims = M::LAYERS;
    let features = M::FEATURES;
    // Converted when a node reads them (skl2onnx's integer class labels are never read).
    let mut constants: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &graph.initializer {
        constants.insert(t.name.as_str(), t);
    }
    let inputs: Vec<&ValueInfoProto> =
        graph.input.iter().filter(|i| !constants.contains_key(i.name.as_str())).collect();
    let input = match inputs[..] {
        [one] => one,
        _ => {
            return Err(Kind::Graph {
                reason: format!(
                    "the graph has {} inputs besides its constants ({}); a classifier here has one, the features",
                    inputs.len(),
                    inputs.iter().map(|i| format!("'{}'", i.name)).collect::<Vec<_>>().join(", ")
                ),
            })
        }
    };
    if let Some(TensorTypeProto { elem_type, shape }) = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
        if ![data_type::FLOAT, data_type::DOUBLE, data_type::FLOAT16].contains(elem_type) {
            return Err(Kind::Graph {
                reason: format!("the input '{}' has element type {elem_type}, not a float type", input.name),
            });
        }
        if let Some(shape) = shape {
            let last = shape.dim.last().and_then(|d| d.dim_value);
            if shape.dim.len() != 2 || last.is_some_and(|f| f != features as i64) {
                let shown: Vec<String> = shape
                    .dim
                    .iter()
                    .map(|d| {
                        d.dim_value.map_or_else(|| d.dim_param.clone().unwrap_or_else(|| "?".into()), |v| v.to_string())
                    })
                    .collect();
                return Err(Kind::Graph {
                    reason: format!(
                        "the input '{}' has shape [{}], where the model takes [N, {features}]",
                        input.name,
                        shown.join(", ")
                    ),
                });
            }
        }
    }

    let mut current = input.name.clone();
    let mut stage = Stage::Front;
    let mut mean: Option<Vec<f64>> = None;
    let mut scale: Option<(Vec<f64>, bool)> = None; // (values, as a multiplier)
    let mut layers: Vec<Dense> = Vec::new();
    let mut pending: Option<String> = None; // a MatMul whose bias is still to come
    let mut ends: HashSet<String> = HashSet::new(); // logits, and the softmax's output
    let mut branch: HashSet<String> = HashSet::new(); // the label branch's tensors

    for (k, node) in graph.node.iter().enumerate() {
        let label = node_label(node, k);
        let label = label.as_str();
        let op = node.op_type.as_str();
        // `ai.onnx` is the default domain's other name.
        let domain = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
        let err = |reason: String| node_error(node, label, reason);
        if op == "Constant" && domain.is_empty() {
            let attrs = attributes(node, label, &["value"])?;
            let t = attrs
                .get("value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| err("only a tensor 'value' is read".into()))?;
            if let Some(out) = node.output.first() {
                constants.insert(out.as_str(), t);
            }
            continue;
        }
        let takes_current = node.input.contains(&current);
        if !takes_current {
            // The label branch: what hangs off the output (ArgMax and what follows it).
            let from_end = node.input.iter().any(|i| branch.contains(i) || ends.contains(i));
            let branch_op = matches!(
                (domain, op),
                ("", "ArgMax" | "Reshape" | "Cast" | "Identity" | "Softmax")
                    | ("ai.onnx.ml", "ArrayFeatureExtractor" | "ZipMap")
            );
            if from_end && branch_op {
                branch.extend(node.output.iter().cloned());
                continue;
            }
            return Err(err(if branch_op || from_end {
                "it does not take the output of the layer before it (the graph is not one chain of layers)".into()
            } else {
                format!(
                    "operator {}{op} is not supported, or it does not take the output of the layer before it \
                     (see tensorbridge::onnx for the operators read)",
                    if domain.is_empty() { String::new() } else { format!("{domain}.") }
                )
            }));
        }
        let at_end = matches!(stage, Stage::Dense | Stage::Softmax);
        if at_end && matches!((domain, op), ("", "ArgMax") | ("ai.onnx.ml", "ZipMap")) {
            branch.extend(node.output.iter().cloned());
            continue;
        }
        let other = |which: usize| -> R<Constant> {
            let name = node.input.get(which).map(String::as_str).unwrap_or("");
            let t = constants.get(name).ok_or_else(|| {
                err(format!("its input '{name}' is not a constant (initializer or Constant node); only constants are read there"))
            })?;
            constant(t)
        };
        let output = node.output.first().cloned().ok_or_else(|| err("it has no output".into()))?;
        let first_is_current = node.input.first() == Some(&current);
        match (domain, op, stage) {
            ("", "Cast", Stage::Front) => {
                let attrs = attributes(node, label, &["to", "saturate"])?;
                let to = int_attr(&attrs, "to", 0) as i32;
                if ![data_type::FLOAT, data_type::DOUBLE, data_type::FLOAT16].contains(&to) {
                    return Err(err(format!("a cast to type {to}; only casts to float types are read")));
                }
            }
            ("", "Identity", _) => {}
            ("", "Flatten", Stage::Front) => {
                let attrs = attributes(node, label, &["axis"])?;
                if int_attr(&attrs, "axis", 1) != 1 {
                    return Err(err("axis other than 1: the input is [N, features]".into()));
                }
            }
            ("", "Sub", Stage::Front) if first_is_current && mean.is_none() && scale.is_none() => {
                attributes(node, label, &[])?;
                let c = other(1)?;
                mean = Some(vector(&c, features).ok_or_else(|| {
                    err(format!(
                        "the mean has shape {}, where [{features}] or [1, {features}] is read",
                        dims_text(&c.dims)
                    ))
                })?);
            }
            ("", "Div" | "Mul", Stage::Front) if scale.is_none() && (first_is_current || op == "Mul") => {
                attributes(node, label, &[])?;
                let which = if first_is_current { 1 } else { 0 };
                let c = other(which)?;
                let v = vector(&c, features).ok_or_else(|| {
                    err(format!(
                        "the scale has shape {}, where [{features}] or [1, {features}] is read",
                        dims_text(&c.dims)
                    ))
                })?;
                scale = Some((v, op == "Mul"));
            }
            ("ai.onnx.ml", "Scaler", Stage::Front) if mean.is_none() && scale.is_none() => {
                let attrs = attributes(node, label, &["offset", "scale"])?;
                let get = |name: &str| -> R<Vec<f64>> {
                    let v: Vec<f64> =
                        attrs.get(name).map_or(vec![], |a| a.floats.iter().map(|&f| f64::from(f)).collect());
                    match v.len() {
                        0 => Ok(vec![if name == "scale" { 1.0 } else { 0.0 }; features]),
                        1 => Ok(vec![v[0]; features]),
                        n if n == features => Ok(v),
                        n => Err(err(format!("'{name}' has {n} values, where the model has {features} features"))),
                    }
                };
                mean = Some(get("offset")?);
                scale = Some((get("scale")?, true));
            }
            ("", "Gemm", Stage::Front | Stage::Dense | Stage::Activation) if first_is_current => {
                check_activation::<M>(&layers, stage, node, label)?;
                let attrs = attributes(node, label, &["alpha", "beta", "transA", "transB"])?;
                if int_attr(&attrs, "transA", 0) != 0 {
                    return Err(err("transA = 1 (a transposed input) is not supported".into()));
                }
                let trans_b = match int_attr(&attrs, "transB", 0) {
                    0 => false,
                    1 => true,
                    other => return Err(err(format!("transB = {other}: 0 or 1 is read"))),
                };
                let (alpha, beta) =
                    (f64::from(float_attr(&attrs, "alpha", 1.0)), f64::from(float_attr(&attrs, "beta", 1.0)));
                let b = other(1)?;
                let (w, fan_in, fan_out) = weights(&b, trans_b).map_err(err)?;
                let w = w.into_iter().map(|v| v * alpha).collect();
                let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                    None => vec![0.0; fan_out],
                    Some(_) => {
                        let c = other(2)?;
                        vector(&c, fan_out).ok_or_else(|| {
                            let hint = if c.values.len() == fan_in {
                                format!(
                                    "; it fits the weight's transpose: the weight [{}, {}] may be in the other \
                                     layout than transB = {} reads",
                                    b.dims[0],
                                    b.dims[1],
                                    i32::from(trans_b)
                                )
                            } else {
                                String::new()
                            };
                            err(format!(
                                "the bias C has shape {}, where [{fan_out}] or [1, {fan_out}] is read{hint}",
                                dims_text(&c.dims)
                            ))
                        })?
                    }
                };
                let bias = bias.into_iter().map(|v| v * beta).collect();
                layers.push(Dense { node: label.to_string(), fan_in, fan_out, w, b: bias });
                stage = Stage::Dense;
            }
            ("", "MatMul", Stage::Front | Stage::Dense | Stage::Activation) if first_is_current => {
                check_activation::<M>(&layers, stage, node, label)?;
                attributes(node, label, &[])?;
                let (w, fan_in, fan_out) = weights(&other(1)?, false).map_err(err)?;
                layers.push(Dense { node: label.to_string(), fan_in, fan_out, w, b: vec![0.0; fan_out] });
                pending = Some(label.to_string());
                stage = Stage::MatMul;
            }
            ("", "Add", Stage::MatMul) => {
                attributes(node, label, &[])?;
                let which = if first_is_current { 1 } else { 0 };
                let c = other(which)?;
                let layer = layers.last_mut().ok_or_else(|| err("an Add before any layer".into()))?;
                layer.b = vector(&c, layer.fan_out).ok_or_else(|| {
                    err(format!(
                        "the bias has shape {}, where [{}] or [1, {}] is read",
                        dims_text(&c.dims),
                        layer.fan_out,
                        layer.fan_out
                    ))
                })?;
                pending = None;
                stage = Stage::Dense;
            }
            (
                "",
                "Relu" | "Tanh" | "Sigmoid" | "LeakyRelu" | "Elu" | "Selu" | "Softplus" | "HardSigmoid",
                Stage::Dense,
            ) => {
                // The declaration's activation after this layer; one after the last layer
                // is refused once the graph is read (the output layer is linear).
                let expected = after_layer(M::ACTIVATIONS, dims.len() - 1, layers.len().saturating_sub(1));
                let last = layers.len() + 1 >= dims.len();
                if op != expected.onnx_op() && !last {
                    return Err(Kind::Activation {
                        node: label.to_string(),
                        found: op.to_string(),
                        expected: expected.onnx_op(),
                    });
                }
                attributes(node, label, &[])?;
                stage = Stage::Activation;
            }
            ("", "Softmax" | "LogSoftmax", Stage::Dense) => {
                let attrs = attributes(node, label, &["axis"])?;
                let axis = int_attr(&attrs, "axis", -1);
                if axis != -1 && axis != 1 {
                    return Err(err(format!("axis {axis}: the classes are axis 1 (or -1)")));
                }
                ends.insert(current.clone());
                stage = Stage::Softmax;
            }
            _ => {
                let place = match stage {
                    Stage::Front => "before the first layer",
                    Stage::MatMul => "between a MatMul and the Add of its bias",
                    Stage::Dense => "after a dense layer",
                    Stage::Activation => "after an activation",
                    Stage::Softmax => "after the output's softmax",
                };
                return Err(err(format!("not supported {place} (see tensorbridge::onnx for the operators read)")));
            }
        }
        current = output;
    }
    if let Some(node) = pending {
        return Err(Kind::Node { node, op: "MatMul".into(), reason: "its bias (an Add) never comes".into() });
    }
    match stage {
        Stage::Dense | Stage::Softmax => {}
        Stage::Activation => {
            let node = layers.last().map_or(String::new(), |l| l.node.clone());
            return Err(Kind::Layers {
                found: layers_found(&layers),
                model: M::NAME,
                layers: layers_text(dims),
                reason: format!(
                    "the last layer ('{node}') is followed by an activation; the model's output layer is linear"
                ),
            });
        }
        _ => {
            return Err(Kind::Layers {
                found: layers_found(&layers),
                model: M::NAME,
                layers: layers_text(dims),
                reason: "the graph has no dense layer".into(),
            })
        }
    }
    ends.insert(current.clone());
    if !graph.output.iter().any(|o| ends.contains(&o.name) || branch.contains(&o.name)) {
        return Err(Kind::Graph {
            reason: format!("no output of the graph is the last layer's value ('{current}'), or comes from it"),
        });
    }
    check_layers::<M>(&layers)?;

    let mut flat = vec![M::Storage::ZERO; M::Params::LEN];
    for (slot, layer) in layer_slots(dims).zip(&layers) {
        store::<M::Storage>(
            &format!("{} (weight)", layer.node),
            &layer.w,
            &mut flat[slot.w..slot.w + slot.fan_in * slot.fan_out],
        )?;
        store::<M::Storage>(&format!("{} (bias)", layer.node), &layer.b, &mut flat[slot.b..slot.b + slot.fan_out])?;
    }
    let standardizer = standardizer(mean, scale, features)?;
    Ok((flat, standardizer))
}

/// The standardiser of a graph's front: `(x - mean) / scale`, or `* m` as scale `1 / m`.
fn standardizer(mean: Option<Vec<f64>>, scale: Option<(Vec<f64>, bool)>, features: usize) -> R<Option<Standardizer>> {
    if mean.is_none() && scale.is_none() {
        return Ok(None);
    }
    let mean: Vec<f32> = mean.unwrap_or_else(|| vec![0.0; features]).into_iter().map(|v| v as f32).collect();
    let scale: Vec<f32> = match scale {
        None => vec![1.0; features],
        Some((v, false)) => v.into_iter().map(|s| s as f32).collect(),
        Some((v, true)) => v.into_iter().map(|m| (1.0 / m) as f32).collect(),
    };
    Standardizer::from_mean_scale(mean, scale)
        .map_err(|e| Kind::Graph { reason: format!("the standardisation in front of the first layer: {e}") })
        .map(Some)
}

/// A dense layer's weights from the constant `B` of `x @ B` (`[in, out]`), or of `x @ B^T`
/// (`[out, in]`) when `trans_b`: column-major `[in x out]`, with `in` and `out`.
fn weights(b: &Constant, trans_b: bool) -> std::result::Result<(Vec<f64>, usize, usize), String> {
    let [r, c] = b.dims[..] else {
        return Err(format!("the weight has shape {}; a 2-D weight is read", dims_text(&b.dims)));
    };
    let (fan_in, fan_out) = if trans_b { (c, r) } else { (r, c) };
    let mut w = vec![0.0; r * c];
    for i in 0..fan_in {
        for o in 0..fan_out {
            w[o * fan_in + i] = if trans_b { b.values[o * c + i] } else { b.values[i * c + o] };
        }
    }
    Ok((w, fan_in, fan_out))
}

/// A dense layer that follows another one directly is refused, unless the declaration's
/// activation between them is the identity.
fn check_activation<M: Model>(layers: &[Dense], stage: Stage, node: &NodeProto, label: &str) -> R<()> {
    let below = after_layer(M::ACTIVATIONS, M::LAYERS.len() - 1, layers.len().saturating_sub(1));
    if stage == Stage::Dense && !layers.is_empty() && below != Activation::Identity {
        return Err(node_error(
            node,
            label,
            format!(
                "it follows a dense layer with no activation between them; the model's hidden layer there is {}",
                below.onnx_op()
            ),
        ));
    }
    Ok(())
}

fn layers_text(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ")
}

fn layers_found(layers: &[Dense]) -> String {
    layers.iter().map(|l| format!("'{}' [{} x {}]", l.node, l.fan_in, l.fan_out)).collect::<Vec<_>>().join(", ")
}

fn check_layers<M: Model>(layers: &[Dense]) -> R<()> {
    let dims = M::LAYERS;
    let error = |reason: String| Kind::Layers {
        found: layers_found(layers),
        model: M::NAME,
        layers: layers_text(dims),
        reason,
    };
    if layers.len() != dims.len() - 1 {
        return Err(error(format!("{} dense layers, where the declaration has {}", layers.len(), dims.len() - 1)));
    }
    for (l, layer) in layers.iter().enumerate() {
        let want = (dims[l], dims[l + 1]);
        if (layer.fan_in, layer.fan_out) != want {
            let hint = if (layer.fan_out, layer.fan_in) == want {
                " (its transpose would fit: the weight is stored in the other layout, [out, in] where the \
                 node reads [in, out] or the other way round; a Gemm reads [out, in] with transB = 1, \
                 a MatMul reads [in, out])"
            } else {
                ""
            };
            return Err(error(format!(
                "layer {l} ('{}') is [{} x {}] ([in x out]), where the declaration has [{} x {}]{hint}",
                layer.node, layer.fan_in, layer.fan_out, want.0, want.1
            )));
        }
    }
    Ok(())
}

/// Values into the storage type, each checked against its range.
fn store<T: StorageElement>(what: &str, values: &[f64], out: &mut [T]) -> R<()> {
    for (k, (&v, o)) in values.iter().zip(out.iter_mut()).enumerate() {
        *o = narrow::<T>(v).ok_or_else(|| Kind::Tensor {
            name: what.to_string(),
            reason: format!("value {v} at index {k} is beyond the range of the model's {} storage", T::NAME),
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Writing

fn attribute_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i, ..Default::default() }
}

fn attribute_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f, ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op.to_string(),
        domain: String::new(),
        attribute,
    }
}

fn tensor(name: &str, dims: &[usize], values: impl Iterator<Item = f32>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        name: name.to_string(),
        raw_data: values.flat_map(f32::to_le_bytes).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, columns: usize) -> ValueInfoProto {
    let dim = vec![
        Dimension { dim_value: None, dim_param: Some("N".into()) },
        Dimension { dim_value: Some(columns as i64), dim_param: None },
    ];
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: data_type::FLOAT, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

fn write_onnx<M: Model>(flat: &[M::Storage], standardizer: Option<&Standardizer>) -> ModelProto {
    let mut nodes = Vec::new();
    let mut initializer = Vec::new();
    let mut current = "input".to_string();
    if let Some(s) = standardizer {
        initializer.push(tensor("standardizer.mean", &[M::FEATURES], s.mean().iter().copied()));
        initializer.push(tensor("standardizer.scale", &[M::FEATURES], s.scale().iter().copied()));
        nodes.push(node("Sub", "standardize_sub", &[&current, "standardizer.mean"], "centred", vec![]));
        nodes.push(node("Div", "standardize_div", &["centred", "standardizer.scale"], "standardized", vec![]));
        current = "standardized".into();
    }
    if M::Storage::IS_F16 {
        // The model stores its batch as f16: the same rounding, then f32 arithmetic.
        nodes.push(node(
            "Cast",
            "storage_f16",
            &[&current],
            "input_f16",
            vec![attribute_int("to", data_type::FLOAT16.into())],
        ));
        nodes.push(node(
            "Cast",
            "storage_f32",
            &["input_f16"],
            "input_rounded",
            vec![attribute_int("to", data_type::FLOAT.into())],
        ));
        current = "input_rounded".into();
    }
    let n_layers = M::LAYERS.len() - 1;
    for (l, s) in layer_slots(M::LAYERS).enumerate() {
        let (w, b) = (format!("w{l}"), format!("b{l}"));
        // Column-major `[in x out]` -> row-major `[in, out]`.
        let weights = (0..s.fan_in).flat_map(|i| (0..s.fan_out).map(move |o| flat[s.w + o * s.fan_in + i].to_f32()));
        initializer.push(tensor(&w, &[s.fan_in, s.fan_out], weights));
        initializer.push(tensor(&b, &[s.fan_out], flat[s.b..s.b + s.fan_out].iter().map(|v| v.to_f32())));
        let last = l + 1 == n_layers;
        let out = if last { "logits".to_string() } else { format!("dense{l}") };
        let attrs = vec![
            attribute_float("alpha", 1.0),
            attribute_float("beta", 1.0),
            attribute_int("transA", 0),
            attribute_int("transB", 0),
        ];
        nodes.push(node("Gemm", &format!("dense{l}"), &[&current, &w, &b], &out, attrs));
        current = out;
        if !last {
            let op = after_layer(M::ACTIVATIONS, n_layers, l).onnx_op();
            let out = format!("{}{l}", op.to_ascii_lowercase());
            nodes.push(node(op, &out, &[&current], &out, vec![]));
            current = out;
        }
    }
    nodes.push(node("Softmax", "softmax", &["logits"], "probabilities", vec![attribute_int("axis", 1)]));
    let graph = GraphProto {
        node: nodes,
        name: M::NAME.to_string(),
        initializer,
        sparse_initializer: vec![],
        input: vec![value_info("input", M::FEATURES)],
        output: vec![value_info("logits", M::CLASSES), value_info("probabilities", M::CLASSES)],
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "tensorbridge".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
    }
}

// ---------------------------------------------------------------------------------------
// Writing the int8 model: ONNX's QDQ form

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// Saves the int8 model as an ONNX graph in the QDQ form (opset 13) that onnxruntime
    /// runs: see the [module docs](crate::onnx#the-int8-model-qdq). Atomic: on failure the
    /// old file, if any, is intact.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written; the old file, if any, is then intact.
    pub fn save_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = write_qdq::<M>(
            self.weights(),
            self.biases(),
            self.weight_scales(),
            self.act_scales(),
            self.act_zero_points(),
        )
        .encode_to_vec();
        write_atomically(path.as_ref(), |file| file.write_all(&bytes))
    }
}

/// An int8 model's parts as its accessors give them (what `__read_onnx_int8` returns; not
/// a public API): weight codes (column-major, layer
/// after layer), bias codes, weight scales, activation scales and zero points.
#[doc(hidden)]
pub type Int8Parts = (Vec<i8>, Vec<i32>, Vec<f32>, Vec<f32>, Vec<i16>);

impl<M: Model, const NW: usize, const NC: usize, const NT: usize, const MAXW: usize> Int8Model<M, NW, NC, NT, MAXW> {
    /// Loads an int8 model that [`Int8Model::save_onnx`] wrote, on `device`: the graph must
    /// be that QDQ form for this declaration, node for node and constant for constant
    /// (another graph, even one that computes the same, is refused: the integers are read
    /// from the form, not recomputed from a float graph).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Onnx`] if it is larger than
    /// [`MAX_ONNX_BYTES`], not an ONNX model, or not the QDQ form of this declaration (the
    /// error names the node or tensor at fault); [`Error::Quantize`] if the parts do not hold
    /// together (see [`Int8Model::from_parts`]).
    pub fn from_onnx(device: &Device, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let onnx_error = |kind| Error::Onnx { path: path.to_path_buf(), kind };
        let (weights, biases, weight_scales, act_scales, act_zeros) = read_qdq::<M>(&bytes).map_err(onnx_error)?;
        let sizes = || onnx_error(Kind::Graph { reason: format!("the parts do not fit {}'s int8 model", M::NAME) });
        Self::from_scales(
            weights.try_into().map_err(|_| sizes())?,
            biases.try_into().map_err(|_| sizes())?,
            weight_scales.try_into().map_err(|_| sizes())?,
            act_scales.try_into().map_err(|_| sizes())?,
            act_zeros.try_into().map_err(|_| sizes())?,
        )?
        .on(device)
    }
}

/// The parts of an int8 model from the bytes of its QDQ file. Public for the fuzz target;
/// not a public API.
#[doc(hidden)]
pub fn __read_onnx_int8<M: Model>(bytes: &[u8]) -> std::result::Result<Int8Parts, OnnxErrorKind> {
    read_qdq::<M>(bytes)
}

/// The integers of an `int8` or `int32` constant of shape `dims`, from its raw data (as
/// [`Int8Model::save_onnx`] writes them).
fn integers(t: &TensorProto, data_type: i32, dims: &[usize]) -> R<Vec<i32>> {
    let bad = |reason: String| Kind::Tensor { name: t.name.clone(), reason };
    let want: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    if t.data_type != data_type || t.dims != want {
        return Err(bad(format!(
            "it is of data type {} and shape {:?}; the int8 model has data type {data_type} and shape {}",
            t.data_type,
            t.dims,
            dims_text(dims)
        )));
    }
    let size = if data_type == data_type::INT8 { 1 } else { 4 };
    let count: usize = dims.iter().product();
    if t.data_location != 0 || t.raw_data.len() != count * size {
        return Err(bad(format!("its {count} values are not in its raw data, {} bytes", count * size)));
    }
    Ok(match size {
        1 => t.raw_data.iter().map(|&b| i32::from(b as i8)).collect(),
        _ => t.raw_data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    })
}

/// The `float` values of a constant of shape `dims`; `positive`: each must be a finite
/// positive number (a scale).
fn floats(t: &TensorProto, dims: &[usize], positive: bool) -> R<Vec<f32>> {
    let bad = |reason: String| Kind::Tensor { name: t.name.clone(), reason };
    let c = constant(t)?;
    if t.data_type != data_type::FLOAT || c.dims != dims {
        return Err(bad(format!("the int8 model has a float tensor of shape {} here", dims_text(dims))));
    }
    let values: Vec<f32> = c.values.iter().map(|&v| v as f32).collect();
    if !values.iter().all(|v| v.is_finite() && (!positive || *v > 0.0)) {
        return Err(bad(
            if positive { "a scale is not a finite positive number" } else { "a value is not finite" }.into()
        ));
    }
    Ok(values)
}

fn read_qdq<M: Model>(bytes: &[u8]) -> R<Int8Parts> {
    let model = ModelProto::decode(bytes).map_err(|e| Kind::Decode { reason: e.to_string() })?;
    let graph = model.graph.as_ref().ok_or_else(|| Kind::Graph { reason: "the model has no graph".into() })?;
    let by_name: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let get = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| Kind::Graph {
            reason: format!("tensor '{name}' is missing: not the int8 QDQ form of {}", M::NAME),
        })
    };
    let dims = M::LAYERS;
    let layers = dims.len() - 1;
    let (mut act_scales, mut act_zeros) = (Vec::new(), Vec::new());
    for t in 0..layers {
        act_scales.push(floats(get(&format!("a{t}.scale"))?, &[], true)?[0]);
        act_zeros.push(integers(get(&format!("a{t}.zero_point"))?, data_type::INT8, &[])?[0] as i16);
    }
    // The head: its scale, and its zero point from the clip's lower bound, -32768 - z.
    act_scales.push(floats(get(&format!("a{layers}.scale"))?, &[], true)?[0]);
    let code_min = get(&format!("a{layers}.code_min"))?;
    let z = -32768.0 - floats(code_min, &[], false)?[0];
    if z.fract() != 0.0 || !(-32768.0..=32767.0).contains(&z) {
        return Err(Kind::Tensor { name: code_min.name.clone(), reason: "not -32768 less an int16 zero point".into() });
    }
    act_zeros.push(z as i16);
    let (mut weights, mut biases, mut weight_scales) = (Vec::new(), Vec::new(), Vec::new());
    for l in 0..layers {
        let (fan_in, fan_out) = (dims[l], dims[l + 1]);
        let codes = integers(get(&format!("w{l}.quantized"))?, data_type::INT8, &[fan_in, fan_out])?;
        // Row-major `[in, out]` -> column-major `w[o * fan_in + i]`.
        weights.extend((0..fan_in * fan_out).map(|k| codes[(k % fan_in) * fan_out + k / fan_in] as i8));
        biases.extend(integers(get(&format!("b{l}.quantized"))?, data_type::INT32, &[fan_out])?);
        weight_scales.extend(floats(get(&format!("w{l}.scale"))?, &[fan_out], true)?);
    }
    // Everything else must be what the writer makes of these parts.
    let expected = write_qdq::<M>(&weights, &biases, &weight_scales, &act_scales, &act_zeros);
    let not_ours = |reason: String| Kind::Graph { reason: format!("{reason}: not the int8 QDQ form of {}", M::NAME) };
    if model.opset_import != expected.opset_import {
        return Err(not_ours("the operator sets differ from opset 13".into()));
    }
    let want = expected.graph.as_ref().ok_or_else(|| not_ours("no graph".into()))?;
    for (k, (found, node)) in graph.node.iter().zip(&want.node).enumerate() {
        let same = found.op_type == node.op_type
            && found.domain == node.domain
            && found.input == node.input
            && found.output == node.output
            && found.attribute == node.attribute;
        if !same {
            return Err(Kind::Node {
                node: node_label(found, k),
                op: found.op_type.clone(),
                reason: format!(
                    "the int8 QDQ form of {} has {} '{}' here, taking {:?}",
                    M::NAME,
                    node.op_type,
                    node.name,
                    node.input
                ),
            });
        }
    }
    if graph.node.len() != want.node.len() {
        return Err(not_ours(format!("the graph has {} nodes, the form {}", graph.node.len(), want.node.len())));
    }
    if graph.initializer.len() != want.initializer.len() {
        return Err(not_ours(format!(
            "the graph has {} constants, the form {}",
            graph.initializer.len(),
            want.initializer.len()
        )));
    }
    for t in &want.initializer {
        if get(&t.name)? != t {
            return Err(Kind::Tensor {
                name: t.name.clone(),
                reason: format!(
                    "it is not the value that the int8 QDQ form of {} derives from its codes and scales",
                    M::NAME
                ),
            });
        }
    }
    if graph.input != want.input || graph.output != want.output || !graph.sparse_initializer.is_empty() {
        return Err(not_ours("the graph's inputs or outputs differ".into()));
    }
    Ok((weights, biases, weight_scales, act_scales, act_zeros))
}

/// A constant of `data_type` from its little-endian bytes.
fn raw_tensor(name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
        ..Default::default()
    }
}

/// Quantise then dequantise `value` by activation tensor `t`'s scale and `int8` zero point
/// (`QuantizeLinear`, `DequantizeLinear`); returns the dequantised value's name.
fn qdq_activation(
    nodes: &mut Vec<NodeProto>,
    initializer: &mut Vec<TensorProto>,
    value: &str,
    t: usize,
    scale: f32,
    zero: i16,
) -> String {
    let (s, z) = (format!("a{t}.scale"), format!("a{t}.zero_point"));
    initializer.push(tensor(&s, &[], std::iter::once(scale)));
    initializer.push(raw_tensor(&z, &[], data_type::INT8, vec![zero as i8 as u8]));
    let (q, dq) = (format!("a{t}.quantized"), format!("a{t}"));
    nodes.push(node("QuantizeLinear", &format!("quantize_a{t}"), &[value, &s, &z], &q, vec![]));
    nodes.push(node("DequantizeLinear", &format!("dequantize_a{t}"), &[&q, &s, &z], &dq, vec![]));
    dq
}

fn write_qdq<M: Model>(
    weights: &[i8],
    biases: &[i32],
    weight_scales: &[f32],
    act_scales: &[f32],
    act_zeros: &[i16],
) -> ModelProto {
    let mut nodes = Vec::new();
    let mut initializer = Vec::new();
    let dims = M::LAYERS;
    let layers = dims.len() - 1;
    let mut current = qdq_activation(&mut nodes, &mut initializer, "input", 0, act_scales[0], act_zeros[0]);
    let (mut w, mut c) = (0, 0);
    for l in 0..layers {
        let (fan_in, fan_out) = (dims[l], dims[l + 1]);
        let channels = c..c + fan_out;
        // Column-major `w[o * fan_in + i]` -> row-major `[in, out]`.
        let codes = (0..fan_in).flat_map(|i| (0..fan_out).map(move |o| weights[w + o * fan_in + i] as u8)).collect();
        let (wq, ws, wz) = (format!("w{l}.quantized"), format!("w{l}.scale"), format!("w{l}.zero_point"));
        initializer.push(raw_tensor(&wq, &[fan_in, fan_out], data_type::INT8, codes));
        initializer.push(tensor(&ws, &[fan_out], weight_scales[channels.clone()].iter().copied()));
        initializer.push(raw_tensor(&wz, &[fan_out], data_type::INT8, vec![0; fan_out]));
        let per_channel = || vec![attribute_int("axis", 1)];
        nodes.push(node(
            "DequantizeLinear",
            &format!("dequantize_w{l}"),
            &[&wq, &ws, &wz],
            &format!("w{l}"),
            per_channel(),
        ));
        // The bias at the scale s_x * s_w[o], zero point 0 (DequantizeLinear's default).
        let (bq, bs) = (format!("b{l}.quantized"), format!("b{l}.scale"));
        let bias_codes = biases[channels.clone()].iter().flat_map(|v| v.to_le_bytes()).collect();
        initializer.push(raw_tensor(&bq, &[fan_out], data_type::INT32, bias_codes));
        initializer.push(tensor(&bs, &[fan_out], weight_scales[channels].iter().map(|&s| act_scales[l] * s)));
        let axis0 = vec![attribute_int("axis", 0)];
        nodes.push(node("DequantizeLinear", &format!("dequantize_b{l}"), &[&bq, &bs], &format!("b{l}"), axis0));
        let attrs = vec![
            attribute_float("alpha", 1.0),
            attribute_float("beta", 1.0),
            attribute_int("transA", 0),
            attribute_int("transB", 0),
        ];
        let dense = format!("dense{l}");
        nodes.push(node("Gemm", &dense, &[&current, &format!("w{l}"), &format!("b{l}")], &dense, attrs));
        let t = l + 1;
        if t < layers {
            let relu = format!("relu{l}");
            nodes.push(node("Relu", &relu, &[&dense], &relu, vec![]));
            current = qdq_activation(&mut nodes, &mut initializer, &relu, t, act_scales[t], act_zeros[t]);
        } else {
            // The head's int16 codes (opset 13's QuantizeLinear has 8-bit outputs only):
            // s * clip(round(y / s), -32768 - z, 32767 - z), which is s * (q - z) for
            // q = clamp(round(y / s) + z, -32768, 32767).
            let (s, z) = (act_scales[t], i32::from(act_zeros[t]));
            let names = [format!("a{t}.scale"), format!("a{t}.code_min"), format!("a{t}.code_max")];
            for (name, v) in names.iter().zip([s, (-32768 - z) as f32, (32767 - z) as f32]) {
                initializer.push(tensor(name, &[], std::iter::once(v)));
            }
            let steps = format!("a{t}.steps");
            nodes.push(node("Div", &steps, &[&dense, &names[0]], &steps, vec![]));
            let rounded = format!("a{t}.rounded");
            nodes.push(node("Round", &rounded, &[&steps], &rounded, vec![]));
            let clipped = format!("a{t}.clipped");
            nodes.push(node("Clip", &clipped, &[&rounded, &names[1], &names[2]], &clipped, vec![]));
            nodes.push(node("Mul", "logits", &[&clipped, &names[0]], "logits", vec![]));
        }
        w += fan_in * fan_out;
        c += fan_out;
    }
    nodes.push(node("Softmax", "softmax", &["logits"], "probabilities", vec![attribute_int("axis", 1)]));
    let graph = GraphProto {
        node: nodes,
        name: format!("{}Int8", M::NAME),
        initializer,
        sparse_initializer: vec![],
        input: vec![value_info("input", M::FEATURES)],
        output: vec![value_info("logits", M::CLASSES), value_info("probabilities", M::CLASSES)],
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "tensorbridge".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
    }
}
