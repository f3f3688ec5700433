//! Every malformed `.npy` file is a typed error naming the file and the byte offset, never
//! a panic and never a huge allocation. The files are made here, byte by byte; the
//! expected offsets are counted by hand from the layout (6 magic bytes, 2 version bytes, a
//! 2- or 4-byte header length, the header, the data).

use crate::support;

use std::path::Path;

use tensorbridge::nalgebra::DMatrix;
use tensorbridge::npy::{self, NpyErrorKind};
use tensorbridge::rng::Rng;
use tensorbridge::Error;

/// A version-1.0 file: prelude, `header` verbatim, then `data`.
fn v1(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

const F4_2X2: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";

fn f4_data(n: usize) -> Vec<u8> {
    (0..n).flat_map(|k| (k as f32).to_le_bytes()).collect()
}

/// Writes `bytes` to a file and reads it as a matrix; returns the error's offset and kind.
fn refused(dir: &Path, name: &str, bytes: &[u8]) -> (u64, NpyErrorKind) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    match npy::read_matrix(&path) {
        Err(Error::Npy { path: p, offset, kind }) => {
            assert_eq!(p, path, "{name}: the error names the file");
            // The in-memory reader agrees with the file reader.
            match npy::matrix_from_bytes(bytes) {
                Err(Error::Npy { offset: o, kind: k, .. }) => assert_eq!((o, &k), (offset, &kind), "{name}"),
                other => panic!("{name}: from bytes: {other:?}"),
            }
            (offset, kind)
        }
        other => panic!("{name}: expected an npy error, got {other:?}"),
    }
}

fn a_valid_hand_made_file_reads() {
    let m = npy::matrix_from_bytes(&v1(F4_2X2, &f4_data(4))).unwrap();
    assert_eq!(m, DMatrix::from_row_slice(2, 2, &[0.0, 1.0, 2.0, 3.0]));
}

fn bad_magic_and_versions() {
    let dir = support::scratch("npy-bad-magic");
    assert_eq!(refused(&dir, "empty.npy", b""), (0, NpyErrorKind::BadMagic));
    assert_eq!(refused(&dir, "text.npy", b"hello, world\n"), (0, NpyErrorKind::BadMagic));
    let mut npz = b"PK\x03\x04".to_vec();
    npz.extend_from_slice(&[0; 40]);
    assert_eq!(refused(&dir, "zip.npy", &npz), (0, NpyErrorKind::BadMagic));
    assert_eq!(refused(&dir, "prefix.npy", b"\x93NUM"), (4, NpyErrorKind::Truncated { expected: 10, found: 4 }));
    let mut v4 = v1(F4_2X2, &f4_data(4));
    v4[6] = 4;
    assert_eq!(refused(&dir, "v4.npy", &v4), (6, NpyErrorKind::UnsupportedVersion { major: 4, minor: 0 }));
    let mut v1_1 = v1(F4_2X2, &f4_data(4));
    v1_1[7] = 1;
    assert_eq!(refused(&dir, "v1_1.npy", &v1_1), (6, NpyErrorKind::UnsupportedVersion { major: 1, minor: 1 }));
}

fn truncation_anywhere_is_an_error() {
    let dir = support::scratch("npy-truncated");
    let full = v1(F4_2X2, &f4_data(4));
    let data_start = 10 + F4_2X2.len();
    // Cut inside the length field, inside the header, and inside the data.
    assert_eq!(refused(&dir, "len.npy", &full[..9]), (9, NpyErrorKind::Truncated { expected: 10, found: 9 }));
    assert_eq!(
        refused(&dir, "header.npy", &full[..30]),
        (30, NpyErrorKind::Truncated { expected: F4_2X2.len() as u64, found: 20 })
    );
    assert_eq!(
        refused(&dir, "data.npy", &full[..data_start + 7]),
        ((data_start + 7) as u64, NpyErrorKind::Truncated { expected: 16, found: 7 })
    );
    // Every cut of a valid file is refused.
    for cut in 0..full.len() {
        assert!(npy::matrix_from_bytes(&full[..cut]).is_err(), "cut at {cut} was accepted");
    }
}

fn data_that_disagrees_with_the_shape_is_an_error() {
    let dir = support::scratch("npy-shape-data");
    let data_start = (10 + F4_2X2.len()) as u64;
    assert_eq!(
        refused(&dir, "long.npy", &v1(F4_2X2, &f4_data(5))),
        (data_start + 16, NpyErrorKind::TrailingData { expected: 16, found: 20 })
    );
    assert_eq!(
        refused(&dir, "short.npy", &v1(F4_2X2, &f4_data(3))),
        (data_start + 12, NpyErrorKind::Truncated { expected: 16, found: 12 })
    );
}

fn absurd_shapes_fail_before_allocating() {
    let dir = support::scratch("npy-absurd");
    // 2^62 f4 elements: 2^64 bytes overflows; the shape's offset is reported.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }\n";
    let shape_at = 10 + header.find('(').unwrap() as u64;
    assert_eq!(refused(&dir, "overflow.npy", &v1(header, &[])), (shape_at, NpyErrorKind::ShapeTooLarge));
    // 2^40 x 2^20 elements (4 EiB): no overflow, but the file is 4 bytes long.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1048576), }\n";
    let len = (10 + header.len() + 4) as u64;
    assert_eq!(
        refused(&dir, "huge.npy", &v1(header, &[0; 4])),
        (len, NpyErrorKind::Truncated { expected: 1 << 62, found: 4 })
    );
    // A header length far beyond the file, in a version 2.0 prelude.
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(refused(&dir, "header_len.npy", &v2), (8, NpyErrorKind::HeaderTooLong { len: u32::MAX as u64 }));
}

fn object_and_structured_dtypes_are_refused() {
    let dir = support::scratch("npy-dtypes");
    let object = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }\n";
    assert_eq!(refused(&dir, "object.npy", &v1(object, &[0; 16])), (20, NpyErrorKind::ObjectDtype));
    let structured = "{'descr': [('x', '<f4'), ('y', '<i4')], 'fortran_order': False, 'shape': (2,), }\n";
    assert_eq!(refused(&dir, "structured.npy", &v1(structured, &[0; 16])), (20, NpyErrorKind::StructuredDtype));
    let void = "{'descr': '|V8', 'fortran_order': False, 'shape': (2,), }\n";
    assert_eq!(refused(&dir, "void.npy", &v1(void, &[0; 16])), (20, NpyErrorKind::StructuredDtype));
    for descr in ["<c8", "<U4", "|S3", "<M8[ns]", "|b1", "<f3", "<i16", "|f4"] {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (0,), }}\n");
        let (offset, kind) = refused(&dir, "other.npy", &v1(&header, &[]));
        assert_eq!(offset, 20, "{descr}");
        assert!(matches!(kind, NpyErrorKind::UnsupportedDtype { .. }), "{descr}: {kind:?}");
    }
}

fn garbage_headers_are_refused_with_their_offset() {
    let dir = support::scratch("npy-garbage");
    let cases: &[(&str, u64)] = &[
        ("", 10),                                                                    // nothing at all
        ("not a dict at all\n", 10),                                                 // a name
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)\n", 67),          // no closing brace
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), } extra\n", 70), // trailing text
        ("{'descr': '<f4, 'fortran_order': False, 'shape': (2, 2), }\n", 27),        // unbalanced quote
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2.5), }\n", 65),     // a float in the shape
        ("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2), }\n", 44),       // an unknown name
        ("\u{1}\u{2}\u{3}", 10),                                                     // control characters
    ];
    for (k, (header, offset)) in cases.iter().enumerate() {
        let (at, kind) = refused(&dir, "garbage.npy", &v1(header, &f4_data(4)));
        assert!(matches!(kind, NpyErrorKind::HeaderSyntax { .. }), "case {k} {header:?}: {kind:?}");
        assert_eq!(at, *offset, "case {k} {header:?}: {kind}");
    }
    let missing = "{'descr': '<f4', 'shape': (2, 2), }\n";
    assert_eq!(
        refused(&dir, "missing.npy", &v1(missing, &f4_data(4))).1,
        NpyErrorKind::MissingKey { key: "fortran_order" }
    );
    let extra = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'extra': 1}\n";
    assert!(matches!(refused(&dir, "extra.npy", &v1(extra, &f4_data(4))).1, NpyErrorKind::UnexpectedKey { .. }));
    let wrong_type = "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 2), }\n";
    assert!(matches!(
        refused(&dir, "wrong_type.npy", &v1(wrong_type, &f4_data(4))).1,
        NpyErrorKind::InvalidValue { key: "fortran_order", .. }
    ));
    let negative = "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, -2), }\n";
    assert!(matches!(
        refused(&dir, "negative.npy", &v1(negative, &[])).1,
        NpyErrorKind::InvalidValue { key: "shape", .. }
    ));
    let deep =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}2{}, }}\n", "(".repeat(5000), ",)".repeat(5000));
    assert!(matches!(refused(&dir, "deep.npy", &v1(&deep, &[])).1, NpyErrorKind::HeaderSyntax { .. }));
    let mut v3 = b"\x93NUMPY\x03\x00".to_vec();
    let bad_utf8 = b"{'descr': '<f4', 'fortran_order': False, 'shape': (0,), '\xff': 1}\n";
    v3.extend_from_slice(&(bad_utf8.len() as u32).to_le_bytes());
    v3.extend_from_slice(bad_utf8);
    assert_eq!(refused(&dir, "v3.npy", &v3).0, 12);
}

fn missing_files_are_io_errors() {
    let result = npy::read_matrix("/nonexistent/tensorbridge/file.npy");
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
}

/// A bounded random-mutation loop over valid files (bit flips, byte changes, cuts,
/// insertions, and splices of header text): the reader may accept or refuse each mutant,
/// but must never panic, and whatever it accepts must have as many values as its shape.
fn random_mutations_never_panic() {
    let seeds: Vec<Vec<u8>> = vec![
        v1(F4_2X2, &f4_data(4)),
        npy::matrix_to_bytes(&DMatrix::from_fn(3, 5, |r, c| (r * 5 + c) as f32)),
        v1("{'descr': '>i2', 'fortran_order': True, 'shape': (3,), }\n", &[0, 1, 0, 2, 0, 3]),
        v1("{'descr': '<f2', 'fortran_order': False, 'shape': (), }\n", &[0, 60]),
    ];
    let tokens: &[&[u8]] =
        &[b"(", b")", b"{", b"}", b"'", b",", b"-", b"L", b"9999999999999999999999", b"'|O'", b"True"];
    let mut rng = Rng::new(0x5EED);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut bytes = seeds[rng.below(seeds.len() as u64) as usize].clone();
        for _ in 0..=rng.below(4) {
            let len = bytes.len() as u64;
            match rng.below(5) {
                0 if len > 0 => {
                    let i = rng.below(len) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 if len > 0 => {
                    let i = rng.below(len) as usize;
                    bytes[i] = rng.below(256) as u8;
                }
                2 => bytes.truncate(rng.below(len + 1) as usize),
                3 => {
                    let i = rng.below(len + 1) as usize;
                    bytes.insert(i, rng.below(256) as u8);
                }
                _ => {
                    let i = rng.below(len + 1) as usize;
                    let t = tokens[rng.below(tokens.len() as u64) as usize];
                    bytes.splice(i..i, t.iter().copied());
                }
            }
        }
        if let Ok(m) = npy::matrix_from_bytes(&bytes) {
            accepted += 1;
            assert!(m.len() <= bytes.len(), "{} values from {} bytes", m.len(), bytes.len());
        }
        let _ = npy::labels_from_bytes(&bytes);
    }
    assert!(accepted > 0, "no mutant was valid: the loop is not exercising the decoder");
}

/// Empty arrays whose other dimension is huge (found by the fuzzer: writing one back
/// counted its 6·10^10 empty rows) read, and write back, at once.
fn empty_arrays_with_a_huge_dimension_round_trip() {
    for shape in ["(60000679014, 0)", "(0, 60000679014)"] {
        let header = format!("{{'descr': '>f2', 'fortran_order': False, 'shape': {shape}, }}\n");
        let m = npy::matrix_from_bytes(&v1(&header, &[])).unwrap();
        assert_eq!(m.len(), 0, "{shape}");
        let again = npy::matrix_from_bytes(&npy::matrix_to_bytes(&m)).unwrap();
        assert_eq!(again.shape(), m.shape(), "{shape}");
    }
}

crate::tests! {
    plain empty_arrays_with_a_huge_dimension_round_trip,
    plain a_valid_hand_made_file_reads,
    plain bad_magic_and_versions,
    plain truncation_anywhere_is_an_error,
    plain data_that_disagrees_with_the_shape_is_an_error,
    plain absurd_shapes_fail_before_allocating,
    plain object_and_structured_dtypes_are_refused,
    plain garbage_headers_are_refused_with_their_offset,
    plain missing_files_are_io_errors,
    plain random_mutations_never_panic,
}
