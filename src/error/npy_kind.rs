//! [`NpyErrorKind`]: why a `.npy` file was refused (carried by [`Error::Npy`](crate::Error::Npy)).

/// The longest header accepted, in bytes (NumPy's writer never exceeds a few hundred for the
/// arrays read here; its reader refuses more than 10000 by default).
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Why a `.npy` file was refused. Carried by [`Error::Npy`](crate::Error::Npy) with the file and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NpyErrorKind {
    /// The file does not start with `\x93NUMPY`.
    #[error("not an .npy file: it does not start with the magic string \\x93NUMPY")]
    BadMagic,
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header claims more than [`MAX_HEADER_LEN`] bytes.
    #[error("the header claims {len} bytes, more than the {MAX_HEADER_LEN} allowed")]
    HeaderTooLong {
        /// The claimed length.
        len: u64,
    },
    /// The header is not the Python dictionary literal NumPy writes.
    #[error("the header is not a valid dictionary literal: {reason}")]
    HeaderSyntax {
        /// What is wrong.
        reason: String,
    },
    /// A required key (`descr`, `fortran_order`, `shape`) is missing.
    #[error("the header lacks the key '{key}'")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// The header has a key other than `descr`, `fortran_order` and `shape`.
    #[error("the header has an unexpected key {key}")]
    UnexpectedKey {
        /// The key found.
        key: String,
    },
    /// A key's value has the wrong type or range.
    #[error("invalid value for '{key}': {reason}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A dtype other than the floats and integers this reader decodes.
    #[error("dtype '{descr}' is not supported: {reason}")]
    UnsupportedDtype {
        /// The `descr` string.
        descr: String,
        /// Why.
        reason: &'static str,
    },
    /// A structured (record) dtype.
    #[error("structured dtypes are not supported: save a plain numeric array")]
    StructuredDtype,
    /// An object array: pickled Python objects, never read.
    #[error("object arrays (dtype 'O') hold pickled Python objects and are never read")]
    ObjectDtype,
    /// The array has a number of dimensions the caller cannot use.
    #[error("a {ndim}-dimensional array of shape {shape:?} cannot be read as {expected}")]
    WrongDimensions {
        /// Number of dimensions in the file.
        ndim: usize,
        /// The shape in the file.
        shape: Vec<u64>,
        /// What was asked for.
        expected: &'static str,
    },
    /// The shape's element or byte count does not fit in 64 bits.
    #[error("the shape is too large: its size overflows")]
    ShapeTooLarge,
    /// Fewer bytes follow the header than its shape and dtype require (or the prelude
    /// itself is cut short).
    #[error("the file is truncated: {expected} bytes are needed here, only {found} are present")]
    Truncated {
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// More bytes follow the data than the header's shape describes.
    #[error("the shape describes {expected} data bytes, but {found} follow the header")]
    TrailingData {
        /// Bytes the shape describes.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A label file holds floating-point values.
    #[error("labels must be integers, but the dtype is '{descr}'")]
    NotIntegers {
        /// The `descr` string.
        descr: String,
    },
    /// A negative label.
    #[error("label {value} at index {index} is negative")]
    NegativeLabel {
        /// Index of the label.
        index: usize,
        /// The value found.
        value: i64,
    },
    /// A finite `f8` value beyond the range of `f32` (about ±3.4e38), which features are
    /// read as: converting it would give an infinity.
    #[error("value {value} at index {index} is finite but beyond f32 range (±3.4028235e38); rescale the data")]
    BeyondF32Range {
        /// Index of the value, in file order.
        index: usize,
        /// The value found, as text (e.g. `1e300`).
        value: String,
    },
    /// A label too large for `u32`.
    #[error("label {value} at index {index} does not fit in u32")]
    LabelTooLarge {
        /// Index of the label.
        index: usize,
        /// The value found.
        value: u64,
    },
}
