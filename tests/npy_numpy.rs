//! Round trips through NumPy itself: files `numpy.save` wrote load with the shapes and
//! values NumPy sees; files we write load in NumPy with the right dtype, shape and values;
//! every variant of the format NumPy can write (versions, byte orders, Fortran order,
//! dtypes) reads back, and the ones we refuse are refused with the right error.
//!
//! The tests that need `python3` with NumPy are listed as skipped without it, unless
//! `TENSORBRIDGE_REQUIRE_NUMPY=1`.

use crate::support::{data, python, scratch};
use tensorbridge::matrix;
use tensorbridge::nalgebra::DMatrix;
use tensorbridge::npy::{self, NpyErrorKind};
use tensorbridge::Error;

/// Parses lines of Python `repr` floats.
fn floats(text: &str) -> Vec<f64> {
    text.split_whitespace().map(|t| t.parse::<f64>().unwrap_or_else(|_| panic!("not a float: {t}"))).collect()
}

/// NumPy's view of a file: shape, then every value in C order (as Python floats).
fn numpy_values(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
    let out = python(
        "import sys, numpy as np\n\
         a = np.load(sys.argv[1])\n\
         print(' '.join(map(str, a.shape)))\n\
         print(' '.join(repr(float(v)) for v in a.ravel(order='C')))",
        &[path.to_str().unwrap()],
    );
    let mut lines = out.lines();
    let shape = lines.next().unwrap().split_whitespace().map(|d| d.parse().unwrap()).collect();
    (shape, floats(lines.next().unwrap_or("")))
}

fn assert_matrix_is(m: &DMatrix<f32>, shape: &[usize], values: &[f64]) {
    assert_eq!(&[m.nrows(), m.ncols()][..shape.len().max(1)], shape, "shape");
    assert_eq!(m.len(), values.len());
    for r in 0..m.nrows() {
        for c in 0..m.ncols() {
            let expected = values[r * m.ncols() + c];
            assert_eq!(f64::from(m[(r, c)]), expected, "value at ({r}, {c})");
        }
    }
}

fn iris_matches_the_csv() {
    let x = npy::read_matrix(data("iris_features.npy")).unwrap();
    let y = npy::read_labels(data("iris_labels.npy")).unwrap();
    assert_eq!(x.shape(), (150, 4));
    assert_eq!(y.len(), 150);
    // The CSV beside the files is an independent copy of the same rows.
    let csv = std::fs::read_to_string(data("iris.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 150);
    for (r, line) in rows.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        for c in 0..4 {
            let v: f32 = fields[c].parse().unwrap();
            assert_eq!(x[(r, c)], v, "row {r} column {c}");
        }
        assert_eq!(y[r], fields[4].parse::<u32>().unwrap(), "label of row {r}");
    }
}

fn iris_reads_as_numpy_reads_it() {
    let x = npy::read_matrix(data("iris_features.npy")).unwrap();
    let (shape, values) = numpy_values(&data("iris_features.npy"));
    assert_matrix_is(&x, &shape, &values);
}

fn digits_load() {
    let x = npy::read_matrix(data("digits_features.npy")).unwrap();
    let y = npy::read_labels(data("digits_labels.npy")).unwrap();
    assert_eq!(x.shape(), (1797, 64));
    assert_eq!(y.len(), 1797);
    assert!(x.iter().all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0), "8x8 pixels are 0..16");
    assert_eq!(y.iter().max(), Some(&9));
}

fn digits_read_as_numpy_reads_them() {
    let x = npy::read_matrix(data("digits_features.npy")).unwrap();
    let y = npy::read_labels(data("digits_labels.npy")).unwrap();
    let (shape, values) = numpy_values(&data("digits_features.npy"));
    assert_matrix_is(&x, &shape, &values);
    let (_, labels) = numpy_values(&data("digits_labels.npy"));
    assert_eq!(y.iter().map(|&l| f64::from(l)).collect::<Vec<_>>(), labels);
}

fn files_we_write_load_in_numpy() {
    let dir = scratch("npy-write");
    let dynamic = DMatrix::from_row_slice(
        3,
        4,
        &[
            1.5f32,
            -2.25,
            0.0,
            1e-30, //
            3.4028235e38,
            -1.0,
            7.0,
            0.1, //
            -0.0,
            1e6,
            2.5e-3,
            42.0,
        ],
    );
    let fixed = matrix![1.0f32, 2.0, 3.0; 4.0, 5.0, 6.0];
    let empty = DMatrix::<f32>::zeros(0, 3);
    npy::write_matrix(dir.join("dynamic.npy"), &dynamic).unwrap();
    npy::write_matrix(dir.join("fixed.npy"), &fixed).unwrap();
    npy::write_matrix(dir.join("empty.npy"), &empty).unwrap();
    // A transposed view (non-contiguous storage) is written in its logical order.
    npy::write_matrix(dir.join("transposed.npy"), &fixed.transpose()).unwrap();

    let script = "import sys, numpy as np\n\
        for p in sys.argv[1:]:\n\
        \x20   a = np.load(p, allow_pickle=False)\n\
        \x20   print(a.dtype.str, a.flags['C_CONTIGUOUS'], ' '.join(map(str, a.shape)))\n\
        \x20   print(' '.join(repr(float(v)) for v in a.ravel()))";
    let paths: Vec<String> = ["dynamic", "fixed", "empty", "transposed"]
        .iter()
        .map(|n| dir.join(format!("{n}.npy")).to_string_lossy().into_owned())
        .collect();
    let out = python(script, &paths.iter().map(String::as_str).collect::<Vec<_>>());
    let lines: Vec<&str> = out.lines().collect();
    let expect = |k: usize, shape: &str, m: &DMatrix<f32>| {
        assert_eq!(lines[2 * k], format!("<f4 True {shape}"), "file {k}");
        let values = floats(lines.get(2 * k + 1).copied().unwrap_or(""));
        let ours: Vec<f64> = (0..m.nrows()).flat_map(|r| (0..m.ncols()).map(move |c| f64::from(m[(r, c)]))).collect();
        assert_eq!(values, ours, "values of file {k}");
    };
    expect(0, "3 4", &dynamic);
    expect(1, "2 3", &DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    expect(2, "0 3", &empty);
    expect(3, "3 2", &DMatrix::from_row_slice(3, 2, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
}

/// The values every variant file holds: `arange(12).reshape(3, 4) - 5` (so some are
/// negative), as the file's dtype.
fn arange_minus_5() -> DMatrix<f32> {
    DMatrix::from_fn(3, 4, |r, c| (r * 4 + c) as f32 - 5.0)
}

fn every_variant_numpy_writes_reads_back() {
    let dir = scratch("npy-variants");
    let script = r#"
import sys, os, numpy as np
from numpy.lib import format as fmt
d = sys.argv[1]
base = np.arange(12).reshape(3, 4) - 5
names = []
for dt in ['<f2', '>f2', '<f4', '>f4', '<f8', '>f8', '|i1', '<i2', '>i2', '<i4', '>i4', '<i8', '>i8']:
    for order in ['C', 'F']:
        for version in [(1, 0), (2, 0), (3, 0)]:
            a = np.asarray(base, dtype=dt, order=order)
            name = 'v%d_%s_%s.npy' % (version[0], dt.replace('<', 'le').replace('>', 'be').replace('|', ''), order)
            with open(os.path.join(d, name), 'wb') as f:
                fmt.write_array(f, a, version=version)
            names.append(name)
for dt in ['|u1', '<u2', '>u2', '<u4', '>u4', '<u8', '>u8']:
    a = np.asarray(base + 5, dtype=dt)
    name = 'unsigned_%s.npy' % dt.replace('<', 'le').replace('>', 'be').replace('|', '')
    np.save(os.path.join(d, name), a)
    names.append(name)
print('\n'.join(names))
"#;
    let names = python(script, &[dir.to_str().unwrap()]);
    let expected = arange_minus_5();
    let mut count = 0;
    for name in names.lines() {
        let m = npy::read_matrix(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if name.starts_with("unsigned") { expected.add_scalar(5.0) } else { expected.clone() };
        assert_eq!(m, want, "{name}");
        count += 1;
    }
    assert_eq!(count, 13 * 2 * 3 + 7);
}

fn label_variants_read_and_bad_labels_are_refused() {
    let dir = scratch("npy-labels");
    let script = r#"
import sys, os, numpy as np
d = sys.argv[1]
y = np.array([0, 2, 1, 9, 3])
for dt in ['|i1', '|u1', '<i2', '>u2', '<i4', '>i4', '<u4', '<i8', '>u8']:
    np.save(os.path.join(d, 'y_%s.npy' % dt[1:] + ('_be' if dt[0] == '>' else '')), y.astype(dt))
np.save(os.path.join(d, 'column.npy'), y.reshape(5, 1).astype('<i4'))
np.save(os.path.join(d, 'row.npy'), y.reshape(1, 5).astype('<i8'))
np.save(os.path.join(d, 'negative.npy'), np.array([0, 1, -3, 2, -1, 5, -2], dtype='<i4'))
np.save(os.path.join(d, 'huge.npy'), np.array([0, 2**40], dtype='<u8'))
np.save(os.path.join(d, 'floats.npy'), np.array([0.0, 1.0], dtype='<f4'))
np.save(os.path.join(d, 'matrix.npy'), np.zeros((2, 3), dtype='<i4'))
np.save(os.path.join(d, 'object.npy'), np.array([1, 'a', None], dtype=object), allow_pickle=True)
np.save(os.path.join(d, 'structured.npy'), np.zeros(3, dtype=[('a', '<f4'), ('b', '<i4')]))
np.save(os.path.join(d, 'complex.npy'), np.zeros(3, dtype='<c8'))
np.save(os.path.join(d, 'strings.npy'), np.array(['ab', 'c']))
np.save(os.path.join(d, 'cube.npy'), np.zeros((2, 2, 2), dtype='<f4'))
"#;
    python(script, &[dir.to_str().unwrap()]);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("y_") || name == "column.npy" || name == "row.npy" {
            assert_eq!(
                npy::read_labels(&path).unwrap_or_else(|e| panic!("{name}: {e}")),
                vec![0, 2, 1, 9, 3],
                "{name}"
            );
        }
    }
    let kind = |name: &str, labels: bool| -> (u64, NpyErrorKind) {
        let path = dir.join(name);
        let result = if labels { npy::read_labels(&path).map(|_| ()) } else { npy::read_matrix(&path).map(|_| ()) };
        match result {
            Err(Error::Npy { path: p, offset, kind }) => {
                assert_eq!(p, path, "the error names the file");
                (offset, kind)
            }
            other => panic!("{name}: expected an npy error, got {other:?}"),
        }
    };
    // NumPy 2 writes a 128-byte prelude + header for these small arrays: data starts at 128.
    // The first offender, with the count and rows of all (rows 2, 4 and 6 are negative).
    let negative = NpyErrorKind::NegativeLabel { index: 2, value: -3, count: 3, first_rows: vec![2, 4, 6] };
    assert_eq!(kind("negative.npy", true), (128 + 8, negative.clone()));
    let text = negative.to_string();
    assert!(text.starts_with("label -3 in row 2 is negative; 3 rows hold labels outside"), "{text}");
    assert!(text.ends_with(": rows 2, 4, 6"), "{text}");
    let huge = NpyErrorKind::LabelTooLarge { index: 1, value: 1 << 40, count: 1, first_rows: vec![1] };
    assert_eq!(kind("huge.npy", true), (128 + 8, huge));
    assert!(matches!(kind("floats.npy", true).1, NpyErrorKind::NotIntegers { .. }));
    assert!(matches!(kind("matrix.npy", true).1, NpyErrorKind::WrongDimensions { ndim: 2, .. }));
    assert!(matches!(kind("object.npy", false).1, NpyErrorKind::ObjectDtype));
    assert!(matches!(kind("object.npy", true).1, NpyErrorKind::ObjectDtype));
    assert!(matches!(kind("structured.npy", false).1, NpyErrorKind::StructuredDtype));
    assert!(matches!(kind("complex.npy", false).1, NpyErrorKind::UnsupportedDtype { .. }));
    assert!(matches!(kind("strings.npy", false).1, NpyErrorKind::UnsupportedDtype { .. }));
    assert!(matches!(kind("cube.npy", false).1, NpyErrorKind::WrongDimensions { ndim: 3, .. }));
}

crate::tests! {
    plain iris_matches_the_csv,
    numpy iris_reads_as_numpy_reads_it,
    plain digits_load,
    numpy digits_read_as_numpy_reads_them,
    numpy files_we_write_load_in_numpy,
    numpy every_variant_numpy_writes_reads_back,
    numpy label_variants_read_and_bad_labels_are_refused,
}
