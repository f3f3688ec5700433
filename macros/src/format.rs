// The checkpoint format of `tensorbridge::checkpoint`, written once: its tensor names, the
// order and layout of the parameters in the file, the header's metadata entry, and a reader
// that parses the header once.
//
// This file is compiled twice: here, as the module `format` that `weights: "path"` reads
// checkpoints with at compile time, and in tensorbridge's `checkpoint` module through the
// hidden `__checkpoint_format!()` macro, which expands to this file's items (tensorbridge
// cannot import from this proc-macro crate, and a crate of its own would add a dependency to
// the `no_std` core's build). So it is plain Rust over `std` and `safetensors` (both crates
// depend on them), with no `crate::` paths and no inner doc comments.

/// The key of the header's metadata entry: `"<model>: <widths>"`, then one record
/// `; <name>: <value>` per [`ACTIVATIONS`] and [`OPTIMIZER`] (`Mlp: 4 -> 8 -> 3;
/// activations: tanh; optimizer: adam(lr=0.001, ...)`). One entry, not one per record: the
/// header's metadata is a map, whose order would make two saves of one model differ.
pub const METADATA_KEY: &str = "tensorbridge";

/// The record of the hidden layers' activations (`tanh, relu`), written for a model that has
/// hidden layers.
pub const ACTIVATIONS: &str = "activations";

/// The record of the optimizer and its hyperparameters (`adam(lr=0.001, beta1=0.9, ...)`).
pub const OPTIMIZER: &str = "optimizer";

/// What separates the records of the metadata entry.
const RECORD_SEPARATOR: &str = "; ";

/// The names of an attached standardiser's two tensors.
pub const STANDARDIZER_TENSORS: [&str; 2] = ["standardizer.mean", "standardizer.scale"];

/// The name of the optimizer's step count, one `U32`.
pub const STEP_TENSOR: &str = "optim.step";

/// What the names of the optimizer's state begin with.
const STATE_PREFIX: &str = "optim.";

/// The tensor of layer `layer`'s weight (`w0`) or bias (`b0`): the fields of the model's
/// `Params`.
pub fn param_tensor(layer: usize, bias: bool) -> String {
    format!("{}{layer}", if bias { 'b' } else { 'w' })
}

/// The tensor of moment buffer `buffer` (named as `torch.optim` names it: `exp_avg`) of
/// parameter `param` (`w0`): `optim.exp_avg.w0`.
pub fn state_tensor(buffer: &str, param: &str) -> String {
    format!("{STATE_PREFIX}{buffer}.{param}")
}

/// Whether a tensor is part of the optimizer's state (its moments or its step count).
pub fn is_state(name: &str) -> bool {
    name.starts_with(STATE_PREFIX)
}

/// The parameters' tensors of a model of widths `dims` (`[features, hidden..., classes]`),
/// in the order of the flat layout: `(name, shape)`, `[in, out]` for a weight and `[out]`
/// for a bias.
pub fn param_tensors(dims: &[usize]) -> Vec<(String, Vec<usize>)> {
    dims.windows(2)
        .enumerate()
        .flat_map(|(l, pair)| {
            [(param_tensor(l, false), vec![pair[0], pair[1]]), (param_tensor(l, true), vec![pair[1]])]
        })
        .collect()
}

/// Where the `k`-th value of a tensor of `shape` in the file (little-endian, row-major, as
/// safetensors stores it) goes in the flat layout, counted from the tensor's start there:
/// a weight `[in, out]` is column-major in the flat layout (`w[o * in + i]`), so only the
/// layout changes, not the matrix.
pub fn flat_offset(shape: &[usize], k: usize) -> usize {
    match *shape {
        [fan_in, fan_out] => (k % fan_out) * fan_in + k / fan_out,
        _ => k,
    }
}

/// The widths as a person reads them: `4 -> 8 -> 3`.
pub fn widths_text(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" -> ")
}

/// The hidden layers' activations as their record holds them: `tanh, relu`.
pub fn activations_text<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names.into_iter().map(|name| name.as_ref().to_string()).collect::<Vec<_>>().join(", ")
}

/// The metadata entry of model `model` of widths `dims`, with `records` (`(name, value)`)
/// in order.
pub fn metadata_entry(model: &str, dims: &[usize], records: &[(&str, String)]) -> String {
    let mut entry = format!("{model}: {}", widths_text(dims));
    for (name, value) in records {
        entry.push_str(&format!("{RECORD_SEPARATOR}{name}: {value}"));
    }
    entry
}

/// The value of record `name` in a metadata entry, trimmed, if the entry has it.
pub fn record<'a>(entry: &'a str, name: &str) -> Option<&'a str> {
    entry.split(RECORD_SEPARATOR).skip(1).find_map(|r| r.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// A safetensors file whose header was parsed once: its tensors and its metadata entry.
pub struct Checkpoint<'a> {
    header: safetensors::tensor::Metadata,
    data: &'a [u8],
}

impl<'a> Checkpoint<'a> {
    /// Parses the header of `bytes` (which it checks against the data's length) and keeps
    /// the data.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, safetensors::SafeTensorError> {
        let (n, header) = safetensors::SafeTensors::read_metadata(bytes)?;
        // `read_metadata` checked that the header and the data fill `bytes`.
        let data = bytes.get(8 + n..).unwrap_or_default();
        Ok(Checkpoint { header, data })
    }

    /// The names of the tensors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.header.tensors().into_keys().collect();
        names.sort_unstable();
        names
    }

    /// The tensor `name`, if the file holds it.
    pub fn tensor(&self, name: &str) -> Option<safetensors::tensor::TensorView<'a>> {
        let info = self.header.info(name)?;
        let (start, end) = info.data_offsets;
        let data = self.data.get(start..end)?;
        safetensors::tensor::TensorView::new(info.dtype, info.shape.clone(), data).ok()
    }

    /// The metadata entry tensorbridge writes ([`METADATA_KEY`]), if the file has one.
    pub fn entry(&self) -> Option<&str> {
        self.header.metadata().as_ref()?.get(METADATA_KEY).map(String::as_str)
    }
}
