//! [`Error`]: every way a tensorbridge call can fail, with what the caller needs to act.

#[cfg(feature = "std")]
use std::path::PathBuf;
#[cfg(feature = "std")]
use std::string::String;

#[cfg(feature = "std")]
mod checkpoint_kind;
#[cfg(feature = "std")]
mod npy_kind;
#[cfg(feature = "onnx")]
mod onnx_kind;
#[cfg(feature = "std")]
pub use checkpoint_kind::CheckpointErrorKind;
#[cfg(feature = "checkpoint")]
pub use checkpoint_kind::ShapeHint;
#[cfg(feature = "std")]
pub use npy_kind::NpyErrorKind;
#[cfg(feature = "npy")]
pub use npy_kind::{LISTED_ROWS, MAX_HEADER_LEN};
#[cfg(feature = "onnx")]
pub use onnx_kind::OnnxErrorKind;

/// The result of every fallible tensorbridge call.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Text carried by an error: a `String` with the standard library, a `&'static str` in the
/// `no_std` core (which has no allocator).
#[cfg(feature = "std")]
pub type Text = String;
/// Text carried by an error: a `String` with the standard library, a `&'static str` in the
/// `no_std` core (which has no allocator).
#[cfg(not(feature = "std"))]
pub type Text = &'static str;

/// Everything that can go wrong, as one enum. Each variant carries what a user needs to
/// find the cause: the row and label, the value and where it was, the OpenCL call and
/// code, the build log, the file and byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A label is not a class of the model (`label >= classes`). Checked on the host
    /// before any arithmetic or kernel runs.
    #[error("label {label} in row {row} is out of range: the model has {classes} classes (0..{classes})")]
    LabelOutOfRange {
        /// Row of the batch.
        row: usize,
        /// The offending label.
        label: u32,
        /// The model's number of classes.
        classes: usize,
    },

    #[cfg(feature = "std")]
    /// Labels of a dataset that the model has no class for (`label >= classes`), found
    /// before training or evaluation starts: the labels file (for a dataset loaded from
    /// one), how many rows, and the first few of them.
    #[error(
        "labels out of range in {}: `{model}` has {classes} classes (0..{classes}), but {count} {} other labels: {}",
        file.as_ref().map_or_else(|| "the dataset".to_string(), |f| f.display().to_string()),
        if *count == 1 { "row holds" } else { "rows hold" },
        listed_rows(rows, *count)
    )]
    LabelsOutOfRange {
        /// The labels file of a dataset loaded from files; `None` for one made in memory.
        file: Option<PathBuf>,
        /// The model's name.
        model: &'static str,
        /// The model's number of classes.
        classes: usize,
        /// How many rows hold a label `>= classes`.
        count: usize,
        /// The first few of them, as (row, label): rows of the file for a dataset loaded
        /// from one (whatever splits and shuffles came after), else of the dataset.
        rows: Vec<(usize, u32)>,
    },

    /// An input or parameter value is NaN or infinite.
    #[error("{what} holds a non-finite value {value} at row {row}, column {column}")]
    NonFinite {
        /// Which buffer: "input", "w0", "b1", ...
        what: Text,
        /// Row of that buffer.
        row: usize,
        /// Column of that buffer.
        column: usize,
        /// The value found (NaN, inf or -inf).
        value: f32,
    },

    #[cfg(feature = "std")]
    /// A finite `f32` value that the model's `f16` storage cannot hold: beyond ±65504 it
    /// would round to infinity. Raised where the library converts (a [`Dataset`]'s rows
    /// into an `f16` model's batches), never silently turned into `inf`.
    ///
    /// [`Dataset`]: crate::data::Dataset
    #[error(
        "{what} holds {value} at row {row}, column {column}, beyond the largest value f16 storage can hold (±{max}); \
         standardise or rescale the data"
    )]
    StorageOverflow {
        /// Which data: "features", ...
        what: String,
        /// Row of that data.
        row: usize,
        /// Column of that data.
        column: usize,
        /// The value found.
        value: f32,
        /// The largest finite value of the storage type (65504 for `f16`).
        max: f32,
    },

    /// A model cannot be quantised to int8 (an empty calibration set, a layer whose integer
    /// accumulator could overflow, a scale out of range), or an int8 model's parts do not
    /// hold together (see [`quant`](crate::quant)).
    #[error("int8 quantisation: {reason}")]
    Quantize {
        /// What does not hold.
        reason: Text,
    },

    /// A training step produced a non-finite loss (diverged: learning rate too large, or
    /// parameters already huge). The step's update was not applied.
    #[error("the loss is {loss}: training diverged, the update was not applied (try a smaller learning rate)")]
    NonFiniteLoss {
        /// The loss computed (NaN or infinite).
        loss: f32,
    },

    /// A training step's update (of the model's optimizer: SGD's `p - lr * g`, momentum's,
    /// Adam's, ...) would store a non-finite parameter: a value beyond `f32`'s range, or
    /// beyond ±65504 under `storage: f16` (where it would round to infinity), or a
    /// non-finite value in the optimizer's state for that parameter. Checked over every
    /// parameter before any is written: the update was not applied and the parameters and
    /// the optimizer's state are exactly as before the step.
    #[error(
        "the optimizer's update would store a non-finite value in {what} at row {row}, column {column} \
         (beyond {storage} range, ±{}): the update was not applied (try a smaller learning rate)",
        ShortNumber(*max)
    )]
    UpdateOverflow {
        /// The first parameter (in the flat layout) that would overflow: "w0", "b1", ...
        what: Text,
        /// Its row (the input index for a weight, the output index for a bias).
        row: usize,
        /// Its column (the output index for a weight, 0 for a bias).
        column: usize,
        /// The storage type, `f32` or `f16`.
        storage: &'static str,
        /// The largest finite value of that storage type.
        max: f32,
    },

    /// The learning rate is negative, NaN or infinite.
    #[error("learning rate {lr} is invalid: expected a finite value >= 0")]
    InvalidLearningRate {
        /// The rate given.
        lr: f32,
    },

    /// An optimizer's hyperparameter out of its range (as `torch.optim` checks them: rates,
    /// momentum, eps and weight decay finite and >= 0, betas in `[0, 1)`, Nesterov with a
    /// positive momentum).
    #[error("optimizer {optimizer}: {name} = {value} is out of range")]
    InvalidHyperparameter {
        /// The optimizer (`sgd`, `momentum`, `adam`, `adamw`).
        optimizer: &'static str,
        /// The hyperparameter.
        name: &'static str,
        /// Its value.
        value: f32,
    },

    /// A per-step learning-rate list shorter than the training run
    /// ([`Schedule::per_step`](crate::train::Schedule::per_step)).
    #[error("the learning-rate schedule lists {rates} rates, but the run takes {steps} steps")]
    ScheduleTooShort {
        /// Rates in the list.
        rates: usize,
        /// Steps the run takes.
        steps: usize,
    },

    /// A number of valid rows outside `1..=batch`.
    #[error("{rows} valid rows requested, but a batch holds 1 to {batch} rows")]
    InvalidRowCount {
        /// Rows requested.
        rows: usize,
        /// The model's batch size.
        batch: usize,
    },

    #[cfg(feature = "std")]
    /// A device tensor was used with a model on another device.
    #[error("a tensor that lives on {tensor_device} was given to a model on {model_device}; move it through the host")]
    DeviceMismatch {
        /// Where the tensor lives.
        tensor_device: String,
        /// Where the model lives.
        model_device: String,
    },

    #[cfg(feature = "std")]
    /// A shape or length that does not match what is required.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What was checked.
        what: String,
        /// What the model requires.
        expected: String,
        /// What was given.
        found: String,
    },

    #[cfg(feature = "std")]
    /// `TENSORBRIDGE_DEVICE` or a device index names no usable device.
    #[error("invalid device selection {value:?}: {reason}")]
    InvalidDevice {
        /// The text or index given.
        value: String,
        /// Why it was refused, and what is allowed.
        reason: String,
    },

    #[cfg(feature = "std")]
    /// No OpenCL device could be used.
    #[error("no OpenCL device available: {reason}")]
    NoOpenClDevice {
        /// Why (library missing, no platform, no device, ...).
        reason: String,
    },

    #[cfg(feature = "std")]
    /// An OpenCL call failed.
    #[error("OpenCL call {call} failed with {name} ({code})")]
    OpenCl {
        /// The API call or step that failed.
        call: &'static str,
        /// The OpenCL error code (negative), or -2000 when the library could not be loaded.
        code: i32,
        /// The code's name, e.g. `CL_OUT_OF_RESOURCES`.
        name: &'static str,
    },

    #[cfg(feature = "std")]
    /// The device compiler rejected a kernel program.
    #[error("building the OpenCL program for {device} failed:\n{log}")]
    KernelBuild {
        /// The device the program was built for.
        device: String,
        /// The device compiler's build log.
        log: String,
    },

    #[cfg(feature = "std")]
    /// The model cannot run on this device (e.g. a shape larger than the device allows).
    #[error("unsupported on {device}: {reason}")]
    Unsupported {
        /// The device.
        device: String,
        /// What is not supported, and why.
        reason: String,
    },

    #[cfg(feature = "std")]
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    #[cfg(feature = "std")]
    /// A `.npy` file could not be read: the file, the byte offset at fault and why.
    #[error("{path}: byte {offset}: {kind}", path = path.display())]
    Npy {
        /// The file (`<memory>` for bytes given directly).
        path: PathBuf,
        /// Byte offset in the file of the part at fault.
        offset: u64,
        /// What is wrong.
        kind: NpyErrorKind,
    },

    #[cfg(feature = "std")]
    /// A checkpoint could not be loaded: not a safetensors file, or its tensors do not
    /// match the model's declaration.
    #[error("checkpoint {path}: {kind}", path = path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        kind: CheckpointErrorKind,
    },

    #[cfg(feature = "std")]
    /// Per-feature statistics that cannot standardise: a scale that is zero or negative,
    /// or a standardiser whose number of features is not the model's.
    #[error("invalid standardiser: {reason}")]
    InvalidStandardizer {
        /// What is wrong.
        reason: String,
    },

    #[cfg(feature = "onnx")]
    /// An ONNX file could not be loaded: not an ONNX model, or a graph that is not an MLP
    /// of the model's declaration. Names the node at fault where there is one.
    #[error("ONNX model {path}: {kind}", path = path.display())]
    Onnx {
        /// The ONNX file (`<memory>` for bytes given directly).
        path: PathBuf,
        /// What is wrong, and where.
        kind: OnnxErrorKind,
    },

    #[cfg(feature = "std")]
    /// A dataset, or a part of one, holds no rows where rows are needed.
    #[error("{what} is empty")]
    EmptyDataset {
        /// Which dataset: "the training set", "the test part of the split", ...
        what: String,
    },

    #[cfg(feature = "std")]
    /// A train/test split that cannot be made.
    #[error("cannot split with test fraction {test_fraction}: {reason}")]
    InvalidSplit {
        /// The fraction asked for.
        test_fraction: f64,
        /// Why it cannot be done.
        reason: String,
    },
}

/// `65504`, or `3.4028235e38`: a number as people write it in a message.
struct ShortNumber(f32);

impl core::fmt::Display for ShortNumber {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.abs() >= 1e6 {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(any(feature = "npy", feature = "checkpoint", feature = "onnx"))]
impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// `row 5 (label 7), row 9 (label 3), ...`: the rows an error lists, and an ellipsis when
/// it lists fewer than `count`.
#[cfg(feature = "std")]
fn listed_rows(rows: &[(usize, u32)], count: usize) -> String {
    let listed: Vec<String> = rows.iter().map(|(row, label)| format!("row {row} (label {label})")).collect();
    let more = if count > rows.len() { ", ..." } else { "" };
    format!("{}{more}", listed.join(", "))
}
