//! The `.npy` header: a Python dictionary literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (150, 4), }`.
//!
//! NumPy reads it with `ast.literal_eval`; this is the small subset of Python literal syntax
//! that a header can hold (dicts, tuples, lists, strings, integers, `True`, `False`,
//! `None`), parsed by recursive descent with a depth limit, so that no input can make it
//! recurse without bound, allocate more than the header's own size, or panic. Every error
//! carries the byte offset (within the header) of the token at fault.

use super::NpyErrorKind;

/// Nesting deeper than this is refused (a real header nests two levels; a structured dtype
/// a few more).
const MAX_DEPTH: usize = 32;

/// The largest number of dimensions accepted (NumPy 2's `NPY_MAXDIMS` is 64).
pub(crate) const MAX_DIMS: usize = 64;

/// A parsed literal and the header offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub at: usize,
    pub kind: ValueKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueKind {
    Dict(Vec<(Value, Value)>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Str(String),
    Int(i128),
    Bool(bool),
    None,
}

/// A byte-order and element type, from a `descr` string such as `<f4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub scalar: Scalar,
    pub big_endian: bool,
}

/// The element types the reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
}

impl Scalar {
    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Scalar::I8 | Scalar::U8 => 1,
            Scalar::F16 | Scalar::I16 | Scalar::U16 => 2,
            Scalar::F32 | Scalar::I32 | Scalar::U32 => 4,
            Scalar::F64 | Scalar::I64 | Scalar::U64 => 8,
        }
    }

    /// Whether this is an integer type.
    pub(crate) fn is_integer(self) -> bool {
        !matches!(self, Scalar::F16 | Scalar::F32 | Scalar::F64)
    }
}

/// The three entries of a header, validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub descr: String,
    pub dtype: Dtype,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
    /// Offset of the `shape` value in the header, for errors about the shape.
    pub shape_at: usize,
}

/// An error and its offset within the header.
pub(crate) type HeaderError = (usize, NpyErrorKind);

/// Parses and validates a header's text.
pub(crate) fn parse_header(text: &[u8]) -> Result<Header, HeaderError> {
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(syntax(parser.pos, "unexpected text after the dictionary"));
    }
    interpret(value)
}

fn syntax(at: usize, reason: impl Into<String>) -> HeaderError {
    (at, NpyErrorKind::HeaderSyntax { reason: reason.into() })
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), HeaderError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(syntax(self.pos, format!("expected '{}'", byte as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, HeaderError> {
        self.skip_ws();
        let at = self.pos;
        if depth > MAX_DEPTH {
            return Err(syntax(at, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let kind = match self.peek() {
            None => return Err(syntax(at, "unexpected end of the header")),
            Some(b'{') => {
                self.pos += 1;
                ValueKind::Dict(self.dict(depth)?)
            }
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.sequence(b')', depth)?;
                if items.len() == 1 && !trailing_comma {
                    // `(x)` is just `x` in parentheses, as in Python.
                    return items.into_iter().next().ok_or_else(|| syntax(at, "empty parentheses"));
                }
                ValueKind::Tuple(items)
            }
            Some(b'[') => {
                self.pos += 1;
                ValueKind::List(self.sequence(b']', depth)?.0)
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                ValueKind::Str(self.string(q, at)?)
            }
            Some(b'-' | b'+' | b'0'..=b'9') => ValueKind::Int(self.int(at)?),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    b"True" => ValueKind::Bool(true),
                    b"False" => ValueKind::Bool(false),
                    b"None" => ValueKind::None,
                    other => {
                        let name = String::from_utf8_lossy(other);
                        return Err(syntax(at, format!("unexpected name `{name}` (only literals are allowed)")));
                    }
                }
            }
            Some(c) => return Err(syntax(at, format!("unexpected character {:?}", c as char))),
        };
        Ok(Value { at, kind })
    }

    fn dict(&mut self, depth: usize) -> Result<Vec<(Value, Value)>, HeaderError> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(entries);
            }
            let key = self.value(depth + 1)?;
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(syntax(self.pos, "expected ',' or '}' in the dictionary")),
            }
        }
    }

    /// Items up to `close`; also whether a comma followed the last item.
    fn sequence(&mut self, close: u8, depth: usize) -> Result<(Vec<Value>, bool), HeaderError> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = false;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                _ => return Err(syntax(self.pos, format!("expected ',' or '{}'", close as char))),
            }
        }
    }

    fn string(&mut self, quote: u8, at: usize) -> Result<String, HeaderError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(syntax(at, "unterminated string")),
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(syntax(at, "unterminated string")),
                        Some(c @ (b'\\' | b'\'' | b'"')) => out.push(c),
                        Some(c) => out.extend_from_slice(&[b'\\', c]),
                    }
                    self.pos += 1;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    // Headers of versions 1 and 2 are latin-1, of version 3 UTF-8; dtype
                    // strings are ASCII either way, so a lossless-enough view suffices.
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self, at: usize) -> Result<i128, HeaderError> {
        let negative = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let start = self.pos;
        let mut value: i128 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(d - b'0')))
                .ok_or_else(|| syntax(at, "integer too large"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(syntax(at, "expected digits"));
        }
        // Python 2 wrote long integers as `3L`; NumPy still reads such headers.
        if self.peek() == Some(b'L') {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'.' || c == b'_') {
            return Err(syntax(self.pos, "only integers are allowed here"));
        }
        Ok(if negative { -value } else { value })
    }
}

/// Checks the dictionary's keys and values.
fn interpret(value: Value) -> Result<Header, HeaderError> {
    let ValueKind::Dict(entries) = value.kind else {
        return Err(syntax(value.at, "the header must be a dictionary"));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, val) in entries {
        let ValueKind::Str(name) = &key.kind else {
            return Err((key.at, NpyErrorKind::UnexpectedKey { key: format!("{:?}", key.kind) }));
        };
        let slot = match name.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => return Err((key.at, NpyErrorKind::UnexpectedKey { key: name.clone() })),
        };
        if slot.is_some() {
            return Err(syntax(key.at, format!("the key '{name}' appears twice")));
        }
        *slot = Some(val);
    }
    let descr = descr.ok_or((0, NpyErrorKind::MissingKey { key: "descr" }))?;
    let fortran = fortran.ok_or((0, NpyErrorKind::MissingKey { key: "fortran_order" }))?;
    let shape = shape.ok_or((0, NpyErrorKind::MissingKey { key: "shape" }))?;

    let (descr_text, dtype) = match descr.kind {
        ValueKind::Str(s) => {
            let dtype = parse_dtype(&s).map_err(|kind| (descr.at, kind))?;
            (s, dtype)
        }
        ValueKind::List(_) | ValueKind::Tuple(_) | ValueKind::Dict(_) => {
            return Err((descr.at, NpyErrorKind::StructuredDtype))
        }
        _ => return Err(invalid(descr.at, "descr", "expected a dtype string such as '<f4'")),
    };
    let ValueKind::Bool(fortran_order) = fortran.kind else {
        return Err(invalid(fortran.at, "fortran_order", "expected True or False"));
    };
    let shape_at = shape.at;
    let ValueKind::Tuple(dims) = shape.kind else {
        return Err(invalid(shape_at, "shape", "expected a tuple of integers"));
    };
    if dims.len() > MAX_DIMS {
        return Err(invalid(shape_at, "shape", &format!("more than {MAX_DIMS} dimensions")));
    }
    let mut out = Vec::with_capacity(dims.len());
    for dim in dims {
        match dim.kind {
            ValueKind::Int(n) if n >= 0 => {
                let n = u64::try_from(n).map_err(|_| (dim.at, NpyErrorKind::ShapeTooLarge))?;
                out.push(n);
            }
            _ => return Err(invalid(dim.at, "shape", "dimensions must be integers >= 0")),
        }
    }
    Ok(Header { descr: descr_text, dtype, fortran_order, shape: out, shape_at })
}

fn invalid(at: usize, key: &'static str, reason: &str) -> HeaderError {
    (at, NpyErrorKind::InvalidValue { key, reason: reason.to_string() })
}

/// `<f4`, `>i8`, `|u1`, ... -> the element type. Object, string, complex, datetime and
/// other dtypes are errors.
pub(crate) fn parse_dtype(descr: &str) -> Result<Dtype, NpyErrorKind> {
    let bytes = descr.as_bytes();
    let (order, rest) = match bytes.first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (Some(c), &bytes[1..]),
        _ => (None, bytes),
    };
    let unsupported = |reason: &'static str| NpyErrorKind::UnsupportedDtype { descr: descr.to_string(), reason };
    let Some((&kind, digits)) = rest.split_first() else {
        return Err(unsupported("empty type"));
    };
    if kind == b'O' {
        return Err(NpyErrorKind::ObjectDtype);
    }
    if kind == b'V' {
        return Err(NpyErrorKind::StructuredDtype);
    }
    let size = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<usize>().ok());
    let scalar = match (kind, size) {
        (b'f', Some(2)) => Scalar::F16,
        (b'f', Some(4)) => Scalar::F32,
        (b'f', Some(8)) => Scalar::F64,
        (b'i', Some(1)) => Scalar::I8,
        (b'i', Some(2)) => Scalar::I16,
        (b'i', Some(4)) => Scalar::I32,
        (b'i', Some(8)) => Scalar::I64,
        (b'u', Some(1)) => Scalar::U8,
        (b'u', Some(2)) => Scalar::U16,
        (b'u', Some(4)) => Scalar::U32,
        (b'u', Some(8)) => Scalar::U64,
        (b'f' | b'i' | b'u', _) => return Err(unsupported("unsupported size (floats: 2, 4, 8; integers: 1, 2, 4, 8)")),
        _ => return Err(unsupported("only floats (f2, f4, f8) and integers (i1..i8, u1..u8) are read")),
    };
    let big_endian = match order {
        Some(b'>') => true,
        Some(b'<') => false,
        Some(b'|') if scalar.size() == 1 => false,
        Some(b'|') => return Err(unsupported("'|' (no byte order) is only valid for 1-byte types")),
        // `=` (native) and no order character: the byte order of this machine.
        _ => cfg!(target_endian = "big"),
    };
    Ok(Dtype { scalar, big_endian })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Header {
        match parse_header(text.as_bytes()) {
            Ok(h) => h,
            Err(e) => panic!("{text:?}: {e:?}"),
        }
    }

    fn err(text: &str) -> HeaderError {
        match parse_header(text.as_bytes()) {
            Ok(h) => panic!("{text:?} parsed as {h:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn numpy_headers_parse() {
        let h = ok("{'descr': '<f4', 'fortran_order': False, 'shape': (150, 4), }          \n");
        assert_eq!(h.shape, vec![150, 4]);
        assert!(!h.fortran_order);
        assert_eq!(h.dtype, Dtype { scalar: Scalar::F32, big_endian: false });
        assert_eq!(ok("{'descr': '>i8', 'fortran_order': True, 'shape': (7,)}").shape, vec![7]);
        assert_eq!(ok("{\"shape\": (), \"descr\": \"|u1\", \"fortran_order\": False}").shape, Vec::<u64>::new());
        assert_eq!(ok("{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 2L)}").shape, vec![3, 2]);
    }

    #[test]
    fn bad_headers_are_errors_with_offsets() {
        assert!(matches!(err("{'descr': '<f4'"), (_, NpyErrorKind::HeaderSyntax { .. })));
        assert!(matches!(err("[1, 2]"), (0, NpyErrorKind::HeaderSyntax { .. })));
        assert!(matches!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
            (56, NpyErrorKind::UnexpectedKey { .. })
        ));
        assert!(matches!(
            err("{'descr': '<f4', 'fortran_order': False}"),
            (0, NpyErrorKind::MissingKey { key: "shape" })
        ));
        assert!(matches!(
            err("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}"),
            (10, NpyErrorKind::StructuredDtype)
        ));
        assert!(matches!(
            err("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}"),
            (10, NpyErrorKind::ObjectDtype)
        ));
        assert!(matches!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}"),
            (_, NpyErrorKind::InvalidValue { key: "shape", .. })
        ));
        assert!(matches!(
            err("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}"),
            (_, NpyErrorKind::ShapeTooLarge)
        ));
        let deep = format!("{}{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(parse_header(deep.as_bytes()), Err((_, NpyErrorKind::HeaderSyntax { .. }))));
    }

    #[test]
    fn dtypes() {
        assert_eq!(parse_dtype("<f2"), Ok(Dtype { scalar: Scalar::F16, big_endian: false }));
        assert_eq!(parse_dtype(">u2"), Ok(Dtype { scalar: Scalar::U16, big_endian: true }));
        assert_eq!(parse_dtype("|i1"), Ok(Dtype { scalar: Scalar::I8, big_endian: false }));
        assert!(matches!(parse_dtype("|f4"), Err(NpyErrorKind::UnsupportedDtype { .. })));
        assert!(matches!(parse_dtype("<c8"), Err(NpyErrorKind::UnsupportedDtype { .. })));
        assert!(matches!(parse_dtype("<U3"), Err(NpyErrorKind::UnsupportedDtype { .. })));
        assert!(matches!(parse_dtype("<f16"), Err(NpyErrorKind::UnsupportedDtype { .. })));
        assert!(matches!(parse_dtype("|V8"), Err(NpyErrorKind::StructuredDtype)));
        assert!(matches!(parse_dtype(""), Err(NpyErrorKind::UnsupportedDtype { .. })));
    }
}
