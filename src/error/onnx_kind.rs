//! [`OnnxErrorKind`]: why an ONNX file was refused (carried by
//! [`Error::Onnx`](crate::Error::Onnx)).

/// Why an ONNX file was refused. Carried by [`Error::Onnx`](crate::Error::Onnx) with the
/// file's path; every kind found at a node names the node (its `name`, or `#k` with its
/// index in the graph when it has none) and its operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxErrorKind {
    /// The file is larger than the reader accepts (checked before reading it).
    #[error("the file has {size} bytes, more than the {max} an ONNX file of a model of this crate may have")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The largest size read.
        max: u64,
    },
    /// Not a valid ONNX protobuf message.
    #[error("not a valid ONNX model: {reason}")]
    Decode {
        /// What the protobuf decoder reported.
        reason: String,
    },
    /// The graph as a whole is not one this crate reads: no graph, not one float input,
    /// external data, an opset it does not know, ...
    #[error("{reason}")]
    Graph {
        /// What is wrong.
        reason: String,
    },
    /// A node whose operator, attribute, input or shape is not supported.
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        /// The node's name, or `#k` (its index) when it has none.
        node: String,
        /// Its operator, e.g. `Gemm`.
        op: String,
        /// What is not supported, and what is.
        reason: String,
    },
    /// An initializer (a constant tensor) that cannot be read: an unsupported data type,
    /// a length that disagrees with its shape, a value out of the storage's range.
    #[error("tensor '{name}': {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A hidden activation that is not the declaration's.
    #[error("node '{node}' is a {found} activation, but the model's hidden layer there is {expected}")]
    Activation {
        /// The node's name, or `#k`.
        node: String,
        /// The operator found, e.g. `Tanh`.
        found: String,
        /// What the declaration has there: `Relu`, `Tanh`, `Sigmoid` or `Identity`.
        expected: &'static str,
    },
    /// The dense layers of the graph do not chain as the declaration.
    #[error("the graph's dense layers ({found}) do not match {model} (layers {layers}): {reason}")]
    Layers {
        /// The layers found, `[in x out]` each.
        found: String,
        /// The model's name.
        model: &'static str,
        /// The model's layer widths.
        layers: String,
        /// What does not match.
        reason: String,
    },
}
