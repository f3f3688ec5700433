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
    /// A tensor whose shape differs from the declaration.
    #[error("tensor '{name}' has shape {found:?}, but {model} declares {expected:?}")]
    WrongShape {
        /// The tensor.
        name: String,
        /// The model's name.
        model: &'static str,
        /// The declared shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
}
