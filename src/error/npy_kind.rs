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
    /// A negative label. The file's first such row, and how many rows hold labels outside
    /// `u32` (negative or too large) in all.
    #[error("label {value} in row {index} is negative{}", others(*count, first_rows))]
    NegativeLabel {
        /// Row of the label (its index in the 1-D array).
        index: usize,
        /// The value found.
        value: i64,
        /// How many rows hold a label outside `0..=u32::MAX`.
        count: usize,
        /// The first few of those rows (at most [`LISTED_ROWS`]).
        first_rows: Vec<usize>,
    },
    /// A finite `f8` value beyond the range of `f32` (about ±3.4e38), which features are
    /// read as: converting it would give an infinity.
    #[error(
        "value {value} at row {row}, column {column} is finite but beyond f32 range (±3.4028235e38); rescale the data"
    )]
    BeyondF32Range {
        /// Index of the value, in file order.
        index: usize,
        /// Row of the value.
        row: usize,
        /// Column of the value.
        column: usize,
        /// The value found, as text (e.g. `1e300`).
        value: String,
    },
    /// A NaN or infinite value where finite ones are needed (the features of a
    /// [`Dataset`](crate::data::Dataset)).
    #[error("value {value} at row {row}, column {column} is not finite; every feature must be a finite number")]
    NonFinite {
        /// Row of the value.
        row: usize,
        /// Column of the value.
        column: usize,
        /// The value found, as text (`NaN`, `inf` or `-inf`).
        value: String,
    },
    /// A label too large for `u32`. The file's first such row, and how many rows hold
    /// labels outside `u32` (negative or too large) in all.
    #[error("label {value} in row {index} does not fit in u32{}", others(*count, first_rows))]
    LabelTooLarge {
        /// Row of the label (its index in the 1-D array).
        index: usize,
        /// The value found.
        value: u64,
        /// How many rows hold a label outside `0..=u32::MAX`.
        count: usize,
        /// The first few of those rows (at most [`LISTED_ROWS`]).
        first_rows: Vec<usize>,
    },
}

/// How many offending rows an error lists before it gives only their count.
#[cfg(feature = "npy")]
pub const LISTED_ROWS: usize = 5;

/// `"; 3 rows hold labels outside 0..=4294967295: rows 2, 7, 9"`, or nothing when the row
/// at fault is the only one.
fn others(count: usize, first_rows: &[usize]) -> String {
    if count <= 1 {
        return String::new();
    }
    let list: Vec<String> = first_rows.iter().map(usize::to_string).collect();
    let more = if count > first_rows.len() { ", ..." } else { "" };
    format!("; {count} rows hold labels outside 0..={}: rows {}{more}", u32::MAX, list.join(", "))
}
