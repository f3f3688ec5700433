//! [`CheckpointErrorKind`]: why a checkpoint was refused (carried by
//! [`Error::Checkpoint`](crate::Error::Checkpoint)).

/// Why a checkpoint was refused. Carried by [`Error::Checkpoint`](crate::Error::Checkpoint) with the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// Not a valid safetensors file.
    #[error("not a valid safetensors file: {reason}")]
    Format {
        /// What the safetensors parser reported.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("tensor '{name}' is missing: {model} (layers {layers}) needs {expected}")]
    MissingTensor {
        /// The missing tensor.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths, e.g. `4 -> 8 -> 3`.
        layers: String,
        /// Every tensor the model needs.
        expected: String,
    },
    /// A tensor the model does not have (e.g. a checkpoint of a deeper model).
    #[error("unexpected tensor '{name}': {model} (layers {layers}) has only {expected}")]
    UnexpectedTensor {
        /// The tensor found.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths.
        layers: String,
        /// Every tensor the model has.
        expected: String,
    },
    /// A tensor of another element type than the model's storage (`F32`, or `F16` for
    /// `storage: f16`).
    #[error("tensor '{name}' has dtype {found}, but the model stores {expected} (declared `storage: {storage}`)")]
    WrongDtype {
        /// The tensor.
        name: String,
        /// The dtype found.
        found: String,
        /// The dtype the model needs: `F32` or `F16`.
        expected: &'static str,
        /// The model's declared storage, `f32` or `f16`.
        storage: &'static str,
    },
    /// A tensor whose shape differs from the declaration. `hint` says more where it can:
    /// when the file holds the transposed layout (PyTorch's `[out, in]` where tensorbridge
    /// stores `[in, out]`, or the other way round) and which call reads that layout.
    #[error("tensor '{name}' has shape {found:?}, but {model} declares {expected:?}{hint}")]
    WrongShape {
        /// The tensor.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// What the shape looks like, when that helps (the transposed layout).
        hint: ShapeHint,
    },
    /// A tensor of a PyTorch state dict that is not the weight or bias of an `nn.Linear`
    /// layer (e.g. a `BatchNorm`'s running mean, or a 3-D weight).
    #[error("tensor '{name}' (shape {shape:?}) is not a Linear layer's 2-D weight or 1-D bias: {reason}")]
    NotLinear {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why it cannot be one.
        reason: String,
    },
    /// The Linear layers of a state dict do not chain as the declaration: another number
    /// of layers, or an order that the names and shapes cannot settle.
    #[error("the Linear layers of the file ({found}) do not match {model} (layers {layers}): {reason}")]
    Layers {
        /// The layers found, in the order used: `0 [8 x 4], 2 [3 x 8]` (`[out x in]`).
        found: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths.
        layers: String,
        /// What does not match.
        reason: String,
    },
    /// A checkpoint saved from a model whose hidden layers have other activations (the
    /// header's `__metadata__` says which): its weights would give other numbers here.
    #[error("the file was saved from a model with hidden activations [{found}], but {model} declares [{expected}]")]
    WrongActivations {
        /// The model's name.
        model: &'static str,
        /// The declared activations, one per hidden layer (`tanh, relu`).
        expected: String,
        /// The activations the file records.
        found: String,
    },
    /// A checkpoint holding the state of another optimizer than the model declares (`adam`'s
    /// moments in an `adamw` model): training would not continue the saved run. (A file of
    /// another optimizer without state, parameters alone, loads with the model's
    /// hyperparameters.)
    #[error("the file holds the state of the optimizer {found}, but {model} declares `optimizer: {expected}`")]
    WrongOptimizer {
        /// The model's name.
        model: &'static str,
        /// The declared optimizer (`adam`).
        expected: &'static str,
        /// The optimizer the file records, with its hyperparameters.
        found: String,
    },
    /// The record of the optimizer's hyperparameters in the header's `__metadata__` cannot be
    /// used: not of the form `adam(lr=0.001, ...)`, a hyperparameter missing, unknown, not a
    /// number, or out of range.
    #[error("the optimizer's record '{record}' cannot be used: {reason}")]
    Hyperparameters {
        /// The record, as written.
        record: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that the model's storage cannot hold: an `f64` beyond `f32`'s range, or a
    /// value beyond ±65504 for `storage: f16`. Never silently turned into infinity.
    #[error("tensor '{name}' holds {value} at index {index}, beyond the range of the model's {storage} storage")]
    OutOfRange {
        /// The tensor.
        name: String,
        /// The index of the value in the tensor (row-major).
        index: usize,
        /// The value, as written in the file.
        value: String,
        /// The model's storage, `f32` or `f16`.
        storage: &'static str,
    },
}

/// What a refused tensor shape looks like (carried by
/// [`CheckpointErrorKind::WrongShape`]): printed after the shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShapeHint {
    /// Nothing to add.
    #[default]
    None,
    /// `[out, in]` in a tensorbridge checkpoint (read by `load`): PyTorch's layout.
    PyTorchLayout,
    /// `[in, out]` in a PyTorch state dict (read by `from_pytorch`): tensorbridge's layout.
    TensorbridgeLayout,
    /// A weight of a PyTorch state dict, which is `[out, in]`.
    OutIn,
    /// A bias, one value per output.
    PerOutput,
    /// A standardiser's tensor, one value per feature.
    PerFeature,
}

impl core::fmt::Display for ShapeHint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ShapeHint::None => "",
            ShapeHint::PyTorchLayout => {
                ": the transposed layout, [out, in], as PyTorch's nn.Linear stores it (tensorbridge stores \
                 [in, out]); load PyTorch state dicts with from_pytorch"
            }
            ShapeHint::TensorbridgeLayout => {
                ": the transposed layout, [in, out], as tensorbridge's own checkpoints and scikit-learn's \
                 coefs_ store it; PyTorch's nn.Linear stores [out, in] (a file with tensorbridge's names \
                 loads with load)"
            }
            ShapeHint::OutIn => " ([out, in], as nn.Linear stores it)",
            ShapeHint::PerOutput => " (one bias per output)",
            ShapeHint::PerFeature => ": one value per feature",
        })
    }
}
