//! `.npy` files: the bridge to NumPy itself. [`read_matrix`] and [`read_labels`] load files
//! that `numpy.save` wrote; [`write_matrix`] writes files that `numpy.load` reads.
//!
//! ```
//! use tensorbridge::nalgebra::matrix;
//! use tensorbridge::npy;
//!
//! let m = matrix![1.0f32, 2.0, 3.0; 4.0, 5.0, 6.0];
//! let bytes = npy::matrix_to_bytes(&m);
//! assert_eq!(npy::matrix_from_bytes(&bytes)?, m);
//! # Ok::<(), tensorbridge::Error>(())
//! ```
//!
//! # What is read
//! Format versions 1.0, 2.0 and 3.0; little- and big-endian; C and Fortran order; dtypes
//! `f2`, `f4`, `f8` and the signed and unsigned integers of 1, 2, 4 and 8 bytes (labels:
//! integers only, never negative). Everything else is an [`Error::Npy`] naming the file, the
//! byte offset and an [`NpyErrorKind`] — never a panic: bad magic, unknown versions,
//! truncated files, data that disagrees with the header's shape (too short or too long),
//! shapes whose size overflows, object (pickled) and structured dtypes, and headers that are
//! not the dictionary literal NumPy writes.
//!
//! # Cost and memory
//! The header's shape is checked against the file's length *before* anything is allocated
//! for the data, so a forged header asking for 2^60 elements is an error, not an
//! out-of-memory abort; headers themselves are limited to [`MAX_HEADER_LEN`] bytes. Reading
//! costs one pass over the file plus one copy into the matrix.
//!
//! # Why hand-written
//! The format is small (a magic string, a version, a length and a Python dict literal;
//! NumPy's own spec is a page), and the crates that read it did not fit the requirements:
//! `npyz` (the maintained one) reports errors as `std::io::Error` without a byte offset,
//! sizes its output from the header's shape (so a forged shape means a huge allocation
//! attempt before the data runs out), and leaves C/Fortran order and f16 to the caller;
//! `ndarray-npy` brings `ndarray` into a crate built on `nalgebra`. Writing the reader
//! here takes about 500 lines, including a depth-limited literal parser, and is fuzzed
//! (`fuzz/fuzz_targets/npy_read.rs`).

mod header;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, Dim, Matrix, RawStorage};

use crate::error::{Error, Result};
use crate::model::StorageElement;
use header::{Dtype, Header, Scalar};

/// The six bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

pub use crate::error::{LISTED_ROWS, MAX_HEADER_LEN};

pub use crate::error::NpyErrorKind;

/// Reads a 2-D array as a matrix of `f32` (a 1-D array of n values is an n x 1 matrix, a
/// 0-D array a 1 x 1 matrix). `f8` values are rounded to the nearest `f32` (a finite value
/// beyond the `f32` range is [`NpyErrorKind::BeyondF32Range`]); integers are converted
/// exactly up to 2^24.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::Npy`] for everything in
/// the module docs, and for arrays of more than two dimensions.
pub fn read_matrix(path: impl AsRef<Path>) -> Result<DMatrix<f32>> {
    let path = path.as_ref();
    let (header, data, data_offset) = read_file(path)?;
    to_matrix(&header, &data).map_err(|(offset, kind)| npy_error(path, data_offset + offset, kind))
}

/// Like [`read_matrix`], refusing NaN and infinite values: the features of a
/// [`Dataset`](crate::data::Dataset).
///
/// # Errors
/// Those of [`read_matrix`]; [`NpyErrorKind::NonFinite`] with the row and column (and the
/// byte offset) of the first NaN or infinity.
pub fn read_finite_matrix(path: impl AsRef<Path>) -> Result<DMatrix<f32>> {
    let path = path.as_ref();
    let (header, data, data_offset) = read_file(path)?;
    to_matrix(&header, &data)
        .and_then(|m| check_finite(&header, &m).map(|()| m))
        .map_err(|(offset, kind)| npy_error(path, data_offset + offset, kind))
}

/// Reads an integer array of class labels: 1-D, or 2-D with one row or one column.
///
/// # Errors
/// As [`read_matrix`]; also [`NpyErrorKind::NotIntegers`] for a float dtype, and
/// [`NpyErrorKind::NegativeLabel`] / [`NpyErrorKind::LabelTooLarge`] at the offending
/// element's byte offset.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u32>> {
    let path = path.as_ref();
    let (header, data, data_offset) = read_file(path)?;
    to_labels(&header, &data).map_err(|(offset, kind)| npy_error(path, data_offset + offset, kind))
}

/// Like [`read_matrix`], from the bytes of a whole `.npy` file (errors name the path
/// `<memory>`).
pub fn matrix_from_bytes(bytes: &[u8]) -> Result<DMatrix<f32>> {
    let path = Path::new(MEMORY);
    let (header, data_offset) = parse_prelude(&mut &bytes[..], bytes.len() as u64, path)?;
    let data = &bytes[data_offset as usize..];
    to_matrix(&header, data).map_err(|(offset, kind)| npy_error(path, data_offset + offset, kind))
}

/// Like [`read_labels`], from the bytes of a whole `.npy` file.
pub fn labels_from_bytes(bytes: &[u8]) -> Result<Vec<u32>> {
    let path = Path::new(MEMORY);
    let (header, data_offset) = parse_prelude(&mut &bytes[..], bytes.len() as u64, path)?;
    let data = &bytes[data_offset as usize..];
    to_labels(&header, data).map_err(|(offset, kind)| npy_error(path, data_offset + offset, kind))
}

/// Writes any `f32` or `f16` matrix (static or dynamic; an `f16` model's batch or
/// parameters) as a `.npy` file: format 1.0, dtype `<f4` (`<f2` for `half::f16`, which
/// NumPy reads as `float16`), C order, shape `(rows, cols)`, header padded to 64 bytes as NumPy does. The file is
/// replaced atomically (written to a temporary file in the same directory, then renamed),
/// so a failure never leaves a half-written file at `path`.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn write_matrix<T: StorageElement, R: Dim, C: Dim, S: RawStorage<T, R, C>>(
    path: impl AsRef<Path>,
    matrix: &Matrix<T, R, C, S>,
) -> Result<()> {
    let bytes = matrix_to_bytes(matrix);
    crate::fsutil::write_atomically(path.as_ref(), |file| std::io::Write::write_all(file, &bytes))
}

/// The bytes [`write_matrix`] writes.
pub fn matrix_to_bytes<T: StorageElement, R: Dim, C: Dim, S: RawStorage<T, R, C>>(
    matrix: &Matrix<T, R, C, S>,
) -> Vec<u8> {
    let (rows, cols) = matrix.shape();
    let descr = if T::IS_F16 { "<f2" } else { "<f4" };
    let mut out = npy_prelude(descr, &format!("({rows}, {cols})"), rows * cols * std::mem::size_of::<T>());
    // Row by row only when a row holds something: an empty array may still have a huge
    // dimension (NumPy writes `(60000679014, 0)`), whose rows would take minutes to count.
    if cols > 0 {
        for r in 0..rows {
            for c in 0..cols {
                matrix[(r, c)].extend_le_bytes(&mut out);
            }
        }
    }
    out
}

/// Writes integer labels (class indices, e.g. `predict`'s output) as a 1-D `.npy` array of
/// dtype `<i8` (NumPy's default `int64`, as scikit-learn's labels), atomically like
/// [`write_matrix`]; [`read_labels`] reads it back.
///
/// ```
/// let bytes = tensorbridge::npy::labels_to_bytes(&[2, 0, 1]);
/// assert_eq!(tensorbridge::npy::labels_from_bytes(&bytes)?, vec![2, 0, 1]);
/// # Ok::<(), tensorbridge::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn write_labels(path: impl AsRef<Path>, labels: &[u32]) -> Result<()> {
    let bytes = labels_to_bytes(labels);
    crate::fsutil::write_atomically(path.as_ref(), |file| std::io::Write::write_all(file, &bytes))
}

/// The bytes [`write_labels`] writes.
pub fn labels_to_bytes(labels: &[u32]) -> Vec<u8> {
    let mut out = npy_prelude("<i8", &format!("({},)", labels.len()), labels.len() * 8);
    labels.iter().for_each(|&l| out.extend_from_slice(&i64::from(l).to_le_bytes()));
    out
}

/// The magic, version 1.0, header length and header dict of a C-order array, padded to 64
/// bytes as NumPy does, with room for `data_len` bytes of data.
fn npy_prelude(descr: &str, shape: &str, data_len: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Prelude (10 bytes) + dict + padding + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header_len + data_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // A one- or two-dimensional dict is below 100 bytes, far below version 1.0's u16 limit.
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

const MEMORY: &str = "<memory>";

fn npy_error(path: &Path, offset: u64, kind: NpyErrorKind) -> Error {
    Error::Npy { path: PathBuf::from(path), offset, kind }
}

/// Opens `path`, parses the header, checks the data size against the file's length, and
/// only then reads the data. Returns the header, the data bytes and their offset.
fn read_file(path: &Path) -> Result<(Header, Vec<u8>, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let total = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let (header, data_offset) = parse_prelude(&mut reader, total, path)?;
    // `parse_prelude` checked that exactly this many bytes remain, and they fit in memory
    // as a file of that size does.
    let len =
        usize::try_from(total - data_offset).map_err(|_| npy_error(path, data_offset, NpyErrorKind::ShapeTooLarge))?;
    let mut data = vec![0u8; len];
    reader.read_exact(&mut data).map_err(|e| Error::io(path, e))?;
    Ok((header, data, data_offset))
}

/// Reads and validates everything before the data from `reader`, whose whole length is
/// `total` bytes; checks that exactly the bytes the shape needs follow. Returns the header
/// and the offset of the data.
fn parse_prelude(reader: &mut impl Read, total: u64, path: &Path) -> Result<(Header, u64)> {
    let err = |offset: u64, kind| npy_error(path, offset, kind);
    let io = |e| Error::io(path, e);

    // Magic and version: 8 bytes.
    let mut prelude = [0u8; 8];
    let have = total.min(8) as usize;
    reader.read_exact(&mut prelude[..have]).map_err(io)?;
    let magic_len = have.min(MAGIC.len());
    if have == 0 || prelude[..magic_len] != MAGIC[..magic_len] {
        return Err(err(0, NpyErrorKind::BadMagic));
    }
    if have < 8 {
        return Err(err(total, NpyErrorKind::Truncated { expected: 10, found: total }));
    }
    let (major, minor) = (prelude[6], prelude[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(err(6, NpyErrorKind::UnsupportedVersion { major, minor })),
    };
    let header_start = 8 + len_bytes;
    if total < header_start {
        return Err(err(total, NpyErrorKind::Truncated { expected: header_start, found: total }));
    }
    let mut len_buf = [0u8; 4];
    reader.read_exact(&mut len_buf[..len_bytes as usize]).map_err(io)?;
    let header_len = u64::from(u32::from_le_bytes(len_buf));
    if header_len > MAX_HEADER_LEN as u64 {
        return Err(err(8, NpyErrorKind::HeaderTooLong { len: header_len }));
    }
    let data_offset = header_start + header_len;
    if total < data_offset {
        return Err(err(total, NpyErrorKind::Truncated { expected: header_len, found: total - header_start }));
    }
    let mut text = vec![0u8; header_len as usize];
    reader.read_exact(&mut text).map_err(io)?;
    if major == 3 && std::str::from_utf8(&text).is_err() {
        let reason = "a version 3.0 header must be UTF-8".to_string();
        return Err(err(header_start, NpyErrorKind::HeaderSyntax { reason }));
    }
    let header = header::parse_header(&text).map_err(|(at, kind)| err(header_start + at as u64, kind))?;

    let shape_err = || err(header_start + header.shape_at as u64, NpyErrorKind::ShapeTooLarge);
    let count = header.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(shape_err)?;
    let expected = count.checked_mul(header.dtype.scalar.size() as u64).ok_or_else(shape_err)?;
    let found = total - data_offset;
    if found < expected {
        return Err(err(total, NpyErrorKind::Truncated { expected, found }));
    }
    if found > expected {
        return Err(err(data_offset + expected, NpyErrorKind::TrailingData { expected, found }));
    }
    Ok((header, data_offset))
}

/// An error and its byte offset within the data.
type DataError = (u64, NpyErrorKind);

/// `(rows, cols)` of a 0-, 1- or 2-D array. The counts fit in `usize` because the data
/// (already checked to be present) holds that many elements.
fn matrix_shape(header: &Header) -> Result<(usize, usize), DataError> {
    let dims: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    match dims.as_slice() {
        [] => Ok((1, 1)),
        [n] => Ok((*n, 1)),
        [r, c] => Ok((*r, *c)),
        _ => Err((0, wrong_dims(header, "a matrix (at most 2 dimensions)"))),
    }
}

fn wrong_dims(header: &Header, expected: &'static str) -> NpyErrorKind {
    NpyErrorKind::WrongDimensions { ndim: header.shape.len(), shape: header.shape.clone(), expected }
}

fn to_matrix(header: &Header, data: &[u8]) -> Result<DMatrix<f32>, DataError> {
    let (rows, cols) = matrix_shape(header)?;
    let values = decode_f32(header.dtype, data);
    check_f32_range(header, data, &values)?;
    // Column-major data as it is, and an empty array as it is: nalgebra's row-major
    // constructor counts every row, and an empty array may have 6·10^10 of them.
    Ok(if header.fortran_order || values.is_empty() {
        DMatrix::from_vec(rows, cols, values)
    } else {
        DMatrix::from_row_slice(rows, cols, &values)
    })
}

/// The row and column of the element at `index` in file order.
fn row_column(header: &Header, index: usize) -> (usize, usize) {
    // `matrix_shape` accepted the header already; a shape it refuses never gets here.
    let (rows, cols) = matrix_shape(header).unwrap_or((1, 1));
    if header.fortran_order {
        (index % rows.max(1), index / rows.max(1))
    } else {
        (index / cols.max(1), index % cols.max(1))
    }
}

/// A finite `f8` value that became infinite as `f32` (beyond ±3.4e38) is an error, not an
/// `inf` for a later check to misreport as non-finite. One pass over the decoded values;
/// the data is read again only on the cold path.
fn check_f32_range(header: &Header, data: &[u8], values: &[f32]) -> Result<(), DataError> {
    let dtype = header.dtype;
    if dtype.scalar != Scalar::F64 || values.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    for (index, chunk) in data.chunks_exact(8).enumerate() {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        let value = if dtype.big_endian { f64::from_be_bytes(a) } else { f64::from_le_bytes(a) };
        if value.is_finite() && (value as f32).is_infinite() {
            let (row, column) = row_column(header, index);
            let kind = NpyErrorKind::BeyondF32Range { index, row, column, value: format!("{value:e}") };
            return Err(((index * 8) as u64, kind));
        }
    }
    Ok(())
}

/// The first NaN or infinite value of `matrix` (read from `header`'s file), as the error
/// at its byte offset.
fn check_finite(header: &Header, matrix: &DMatrix<f32>) -> Result<(), DataError> {
    let Some((k, &value)) = matrix.iter().enumerate().find(|(_, v)| !v.is_finite()) else {
        return Ok(());
    };
    let (row, column) = (k % matrix.nrows(), k / matrix.nrows());
    let index = if header.fortran_order { k } else { row * matrix.ncols() + column };
    Err((
        (index * header.dtype.scalar.size()) as u64,
        NpyErrorKind::NonFinite { row, column, value: value.to_string() },
    ))
}

fn to_labels(header: &Header, data: &[u8]) -> Result<Vec<u32>, DataError> {
    match header.shape.as_slice() {
        [] | [_] => {}
        [r, c] if *r == 1 || *c == 1 => {}
        _ => return Err((0, wrong_dims(header, "labels (1-D, or 2-D with one row or column)"))),
    }
    let Dtype { scalar, big_endian } = header.dtype;
    if !scalar.is_integer() {
        return Err((0, NpyErrorKind::NotIntegers { descr: header.descr.clone() }));
    }
    let size = scalar.size();
    let mut out = Vec::with_capacity(data.len() / size);
    // The first label outside `u32` (its row and value), how many there are, the first few rows.
    let (mut first, mut count, mut first_rows) = (None, 0, Vec::new());
    for (index, chunk) in data.chunks_exact(size).enumerate() {
        let value = read_int(scalar, big_endian, chunk);
        match u32::try_from(value) {
            Ok(label) => out.push(label),
            Err(_) => {
                first.get_or_insert((index, value));
                count += 1;
                if first_rows.len() < LISTED_ROWS {
                    first_rows.push(index);
                }
            }
        }
    }
    match first {
        None => Ok(out),
        Some((index, value)) => {
            let at = (index * size) as u64;
            Err((
                at,
                if value < 0 {
                    NpyErrorKind::NegativeLabel { index, value: value as i64, count, first_rows }
                } else {
                    NpyErrorKind::LabelTooLarge { index, value: value as u64, count, first_rows }
                },
            ))
        }
    }
}

/// One integer element as `i128` (wide enough for every `i8..u64`).
fn read_int(scalar: Scalar, big_endian: bool, b: &[u8]) -> i128 {
    macro_rules! int {
        ($t:ty, $n:literal) => {{
            let mut a = [0u8; $n];
            a.copy_from_slice(&b[..$n]);
            i128::from(if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) })
        }};
    }
    match scalar {
        Scalar::I8 => int!(i8, 1),
        Scalar::I16 => int!(i16, 2),
        Scalar::I32 => int!(i32, 4),
        Scalar::I64 => int!(i64, 8),
        Scalar::U8 => int!(u8, 1),
        Scalar::U16 => int!(u16, 2),
        Scalar::U32 => int!(u32, 4),
        Scalar::U64 => int!(u64, 8),
        // Callers pass integer types only; floats never reach here.
        Scalar::F16 | Scalar::F32 | Scalar::F64 => 0,
    }
}

/// Every element converted to `f32`, in file order.
fn decode_f32(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    let Dtype { scalar, big_endian } = dtype;
    macro_rules! decode {
        ($t:ty, $n:literal, $conv:expr) => {
            data.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) };
                    $conv(v)
                })
                .collect()
        };
    }
    match scalar {
        Scalar::F16 => decode!(u16, 2, |v| half::f16::from_bits(v).to_f32()),
        Scalar::F32 => decode!(f32, 4, |v| v),
        Scalar::F64 => decode!(f64, 8, |v| v as f32),
        Scalar::I8 => decode!(i8, 1, |v| v as f32),
        Scalar::I16 => decode!(i16, 2, |v| v as f32),
        Scalar::I32 => decode!(i32, 4, |v| v as f32),
        Scalar::I64 => decode!(i64, 8, |v| v as f32),
        Scalar::U8 => decode!(u8, 1, |v| v as f32),
        Scalar::U16 => decode!(u16, 2, |v| v as f32),
        Scalar::U32 => decode!(u32, 4, |v| v as f32),
        Scalar::U64 => decode!(u64, 8, |v| v as f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with the given version, header text and data, built by hand.
    fn file(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn kind(result: Result<impl std::fmt::Debug>) -> (u64, NpyErrorKind) {
        match result {
            Err(Error::Npy { offset, kind, .. }) => (offset, kind),
            other => panic!("expected an npy error, got {other:?}"),
        }
    }

    #[test]
    fn big_endian_fortran_f8_reads() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column: 1 4 2 5 3 6.
        let data: Vec<u8> = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = file(2, "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }\n", &data);
        let m = matrix_from_bytes(&bytes).unwrap();
        assert_eq!(m, DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    }

    #[test]
    fn absurd_shape_is_refused_before_allocating() {
        let bytes = file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }\n", &[]);
        assert!(matches!(kind(matrix_from_bytes(&bytes)), (_, NpyErrorKind::Truncated { .. })));
        let bytes = file(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }\n", &[]);
        assert!(matches!(kind(matrix_from_bytes(&bytes)), (60, NpyErrorKind::ShapeTooLarge)));
    }

    #[test]
    fn negative_label_reports_its_offset() {
        let data: Vec<u8> = [0i16, 2, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = "{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }\n";
        let bytes = file(1, header, &data);
        let offset = 10 + header.len() as u64 + 4;
        let negative = NpyErrorKind::NegativeLabel { index: 2, value: -1, count: 1, first_rows: vec![2] };
        assert_eq!(kind(labels_from_bytes(&bytes)), (offset, negative));
    }

    #[test]
    fn every_label_outside_u32_is_counted_and_the_first_rows_listed() {
        let values: Vec<i64> = vec![-1, 0, 1 << 33, -5, 1, -1, -1, -1, -1, 2];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (10,), }\n";
        let bytes = file(1, header, &data);
        let (_, got) = kind(labels_from_bytes(&bytes));
        // Rows 0, 2, 3, 5, 6, 7, 8 are outside u32: 7 of them, the first 5 listed.
        let expected = NpyErrorKind::NegativeLabel { index: 0, value: -1, count: 7, first_rows: vec![0, 2, 3, 5, 6] };
        assert_eq!(got, expected);
        assert!(got.to_string().ends_with(": rows 0, 2, 3, 5, 6, ..."), "{got}");
    }

    #[test]
    fn written_header_is_aligned_to_64_bytes() {
        let bytes = matrix_to_bytes(&DMatrix::<f32>::zeros(150, 4));
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(bytes.len(), 10 + header_len + 150 * 4 * 4);
    }
}
