//! The `.npy` format: the one header parser every reader uses (plain files
//! and `.npz` members), and the writer, byte-identical to `np.save`.

use std::io::{self, Read, Write};
use std::path::Path;

use tandem_io::Overwrite;

use crate::format::{shape_text, ArrayHeader, Elem};
use crate::{BankError, Dtype, Vectors};

/// The six magic bytes every `.npy` file starts with.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Largest header we accept. numpy itself refuses headers over 10,000 bytes
/// unless asked; 1 MiB leaves room for any real shape and stops a corrupt
/// length from allocating gigabytes.
pub(crate) const MAX_HEADER_LEN: usize = 1 << 20;

/// How deeply nested a header literal may be (real headers nest twice).
const MAX_DEPTH: usize = 16;

/// What to do about a header that is not what numpy writes.
const RESAVE: &str =
    "the header is not what np.save writes; re-save the array with np.save(path, arr)";

/// Read the `.npy` preamble and header from `r`. Returns the header and the
/// number of bytes consumed, which is where the data starts.
pub(crate) fn read_header(
    r: &mut impl Read,
    path: &Path,
) -> Result<(ArrayHeader, usize), BankError> {
    let mut pre = [0u8; 8];
    read_full(r, &mut pre, path, "the 8-byte .npy preamble")?;
    if &pre[..6] != MAGIC {
        return Err(BankError::invalid(
            path,
            format!(
                "not a .npy file: it starts with {:02x?}, not the magic \\x93NUMPY",
                &pre[..6]
            ),
            "pass an array written by np.save (or give the file its real extension)",
        ));
    }
    let len_bytes = match (pre[6], pre[7]) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        (major, minor) => {
            return Err(BankError::invalid(
                path,
                format!(
                    "unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)"
                ),
                "re-save the array with np.save (it writes version 1.0)",
            ))
        }
    };
    let mut len_buf = [0u8; 4];
    read_full(r, &mut len_buf[..len_bytes], path, "the .npy header length")?;
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(BankError::invalid(
            path,
            format!(
                "the .npy header claims {header_len} bytes, over the {MAX_HEADER_LEN}-byte limit"
            ),
            "the header length is corrupt; re-save the array with np.save",
        ));
    }
    let mut text = vec![0u8; header_len];
    read_full(r, &mut text, path, "the .npy header")?;
    if pre[6] == 3 && std::str::from_utf8(&text).is_err() {
        return Err(BankError::invalid(
            path,
            "the version 3.0 .npy header is not valid UTF-8",
            RESAVE,
        ));
    }
    let header =
        parse_header(&text).map_err(|problem| BankError::invalid(path, problem.0, problem.1))?;
    Ok((header, 8 + len_bytes + header_len))
}

/// `read_exact`, with end of input reported as truncation.
pub(crate) fn read_full(
    r: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), BankError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BankError::invalid(
            path,
            format!("truncated: the data ends inside {what}"),
            "the file was cut short (an interrupted copy or write?); re-create it",
        ),
        _ => BankError::invalid(
            path,
            format!("cannot read {what}: {e}"),
            "the file is corrupt; re-create it",
        ),
    })
}

/// A Python literal, as far as `.npy` headers use them.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    None,
    Int(i128),
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

impl Lit {
    fn kind(&self) -> &'static str {
        match self {
            Lit::Str(_) => "a string",
            Lit::Bool(_) => "a bool",
            Lit::None => "None",
            Lit::Int(_) => "an integer",
            Lit::Tuple(_) => "a tuple",
            Lit::List(_) => "a list",
            Lit::Dict(_) => "a dict",
        }
    }
}

/// A recursive-descent parser for the Python literal subset numpy writes.
struct LitParser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self.pos < self.b.len() && matches!(self.b[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
    }

    fn err(&self, what: &str) -> String {
        match self.b.get(self.pos) {
            Some(&c) => format!(
                "{what} at byte {} of the header, found {:?}",
                self.pos, c as char
            ),
            None => format!("{what} at byte {} of the header, found its end", self.pos),
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.b.get(self.pos) == Some(&c);
        self.pos += usize::from(hit);
        hit
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("the header literal is nested too deeply"));
        }
        self.ws();
        match self.b.get(self.pos) {
            Some(b'\'' | b'"') => self.string(),
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.items(b')', depth)?;
                // `(5)` is the integer 5 in Python; `(5,)` is a tuple.
                match (items.len(), trailing_comma) {
                    (1, false) => Ok(items.into_iter().next().expect("one item")),
                    _ => Ok(Lit::Tuple(items)),
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Ok(Lit::List(self.items(b']', depth)?.0))
            }
            Some(b'{') => {
                self.pos += 1;
                self.dict(depth)
            }
            Some(b'0'..=b'9' | b'-' | b'+') => self.int(),
            Some(b'A'..=b'Z' | b'a'..=b'z') => {
                let start = self.pos;
                while self.pos < self.b.len() && self.b[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.b[start..self.pos] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    _ => {
                        self.pos = start;
                        Err(self.err("expected a Python literal"))
                    }
                }
            }
            _ => Err(self.err("expected a Python literal")),
        }
    }

    fn string(&mut self) -> Result<Lit, String> {
        let quote = self.b[self.pos];
        self.pos += 1;
        let start = self.pos;
        while let Some(&c) = self.b.get(self.pos) {
            match c {
                _ if c == quote => {
                    let s = self.b[start..self.pos].iter().map(|&c| c as char).collect();
                    self.pos += 1;
                    return Ok(Lit::Str(s));
                }
                b'\\' | b'\n' => return Err(self.err("unsupported character in a string")),
                _ => self.pos += 1,
            }
        }
        Err(self.err("unterminated string"))
    }

    fn int(&mut self) -> Result<Lit, String> {
        let start = self.pos;
        if matches!(self.b[self.pos], b'-' | b'+') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        if self.pos == digits {
            return Err(self.err("expected digits"));
        }
        let text = std::str::from_utf8(&self.b[start..self.pos]).expect("ASCII digits");
        // Python 2 wrote long integers with an `L` suffix.
        if self.b.get(self.pos) == Some(&b'L') {
            self.pos += 1;
        }
        text.parse::<i128>()
            .map(Lit::Int)
            .map_err(|_| format!("integer {text} in the header is out of range"))
    }

    /// Comma-separated values up to `close`; reports whether a comma came last.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Lit>, bool), String> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                return if self.eat(close) {
                    Ok((items, false))
                } else {
                    Err(self.err(&format!("expected ',' or '{}'", close as char)))
                };
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Lit, String> {
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(Lit::Dict(entries));
            }
            let key = self.value(depth + 1)?;
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            if !self.eat(b',') {
                return if self.eat(b'}') {
                    Ok(Lit::Dict(entries))
                } else {
                    Err(self.err("expected ',' or '}'"))
                };
            }
        }
    }
}

/// A header problem: (what is wrong, what to do).
type Problem = (String, String);

fn problem(what: impl Into<String>) -> Problem {
    (what.into(), RESAVE.to_string())
}

/// Parse and validate the header text: a dict with exactly the keys
/// `descr`, `fortran_order` and `shape`, followed only by padding.
fn parse_header(text: &[u8]) -> Result<ArrayHeader, Problem> {
    let mut p = LitParser { b: text, pos: 0 };
    p.ws();
    if p.b.get(p.pos) != Some(&b'{') {
        return Err(problem(
            p.err("the .npy header must be a dict literal: expected '{'"),
        ));
    }
    let lit = p.value(0).map_err(problem)?;
    p.ws();
    if p.pos != text.len() {
        return Err(problem(p.err("unexpected text after the header dict")));
    }
    let Lit::Dict(entries) = lit else {
        unreachable!("a '{{' always parses as a dict")
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let slot = match &key {
            Lit::Str(k) if k == "descr" => &mut descr,
            Lit::Str(k) if k == "fortran_order" => &mut fortran,
            Lit::Str(k) if k == "shape" => &mut shape,
            Lit::Str(k) => return Err(problem(format!("unexpected key '{k}' in the .npy header"))),
            other => {
                return Err(problem(format!(
                    "the .npy header has a key that is {}",
                    other.kind()
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(problem(format!("the .npy header repeats the key {key:?}")));
        }
    }
    let missing = |k: &str| problem(format!("the .npy header has no '{k}' key"));
    let elem = parse_descr(&descr.ok_or_else(|| missing("descr"))?)?;
    match fortran.ok_or_else(|| missing("fortran_order"))? {
        Lit::Bool(false) => {}
        Lit::Bool(true) => {
            return Err((
                "the array is stored in Fortran (column-major) order".into(),
                "save a C-ordered copy: np.save(path, np.ascontiguousarray(arr))".into(),
            ))
        }
        other => {
            return Err(problem(format!(
                "fortran_order is {}, not True or False",
                other.kind()
            )))
        }
    }
    let Lit::Tuple(dims) = shape.ok_or_else(|| missing("shape"))? else {
        return Err(problem("shape in the .npy header is not a tuple"));
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Lit::Int(n) => usize::try_from(*n)
                .map_err(|_| problem(format!("shape has an invalid dimension {n}"))),
            other => Err(problem(format!(
                "shape has a dimension that is {}",
                other.kind()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArrayHeader { elem, shape })
}

/// The dtypes we read: float32/float16 (banks) and int64/int32 (index arrays),
/// little-endian (`<`), native (`=`, `|` or no prefix) on this little-endian host.
fn parse_descr(descr: &Lit) -> Result<Elem, Problem> {
    const SUPPORTED: &str = "supported: float32 '<f4' and float16 '<f2' for vectors, int64 '<i8' and int32 '<i4' for row indices";
    let Lit::Str(s) = descr else {
        return Err((
            format!(
                "the array has a structured dtype ({}); {SUPPORTED}",
                descr.kind()
            ),
            "save a plain numeric array: arr.astype('float32')".into(),
        ));
    };
    let (order, code) = match s.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=' | b'!') => s.split_at(1),
        _ => ("", s.as_str()),
    };
    let elem = match code {
        "f4" => Some(Elem::F32),
        "f2" | "e" => Some(Elem::F16),
        "i8" => Some(Elem::I64),
        "i4" => Some(Elem::I32),
        _ => None,
    };
    match (order, elem) {
        ("" | "<" | "|" | "=", Some(elem)) => Ok(elem),
        (">" | "!", Some(elem)) => Err((
            format!("the array is big-endian ('{s}'); {SUPPORTED}"),
            format!("convert it: np.save(path, arr.astype('{}'))", elem.name()),
        )),
        _ => Err((
            format!("dtype '{s}' is not supported; {SUPPORTED}"),
            "convert it: np.save(path, arr.astype('float32'))".into(),
        )),
    }
}

/// The `.npy` version 1.0 header np.save writes for `shape` (C order),
/// including its growth spaces and padding to a multiple of 64 bytes.
pub(crate) fn header_bytes(elem: Elem, shape: &[usize]) -> Vec<u8> {
    let descr = match elem {
        Elem::F32 => "<f4",
        Elem::F16 => "<f2",
        Elem::I64 => "<i8",
        Elem::I32 => "<i4",
    };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_text(shape)
    );
    // numpy leaves room to grow the first axis in place (GROWTH_AXIS_MAX_DIGITS = 21).
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(21usize.saturating_sub(first.to_string().len())));
    }
    let hlen = dict.len() + 1;
    let pad = 64 - (MAGIC.len() + 4 + hlen) % 64;
    let total = hlen + pad;
    let mut out = Vec::with_capacity(10 + total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(
        &u16::try_from(total)
            .expect("a 2-D header is far below 64 KiB")
            .to_le_bytes(),
    );
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Write a `(rows, dim)` matrix as a `.npy` file (version 1.0, C order,
/// float32 or float16 as given), atomically via [`tandem_io::write_atomic`].
/// The bytes are identical to what `np.save` writes for the same array.
///
/// Panics if `data` does not hold exactly `rows * dim` elements.
pub fn write_npy(
    path: &Path,
    rows: usize,
    dim: usize,
    data: Vectors<'_>,
    overwrite: Overwrite,
) -> Result<(), BankError> {
    let (elem, bytes): (Elem, &[u8]) = match data {
        Vectors::F32(v) => (Elem::F32, bytemuck::cast_slice(v)),
        Vectors::F16(v) => (Elem::F16, bytemuck::cast_slice(v)),
    };
    assert_eq!(
        bytes.len(),
        rows * dim * elem.size(),
        "write_npy: data must hold rows * dim elements"
    );
    let header = header_bytes(elem, &[rows, dim]);
    const CHUNK: usize = 8 << 20;
    let bar = tandem_io::progress(bytes.len().div_ceil(CHUNK) as u64, "writing");
    tandem_io::write_atomic(path, overwrite, |w| {
        w.write_all(&header)?;
        for chunk in bytes.chunks(CHUNK) {
            w.write_all(chunk)?;
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Writes a `(rows, dim)` `.npy` file of `dtype` atomically from float32
/// blocks that `fill` hands to its writer in row order (converted to
/// float16 on the way when asked), so a bank larger than memory can be
/// written. The bytes are those [`write_npy`] writes for the same matrix.
/// `fill` must hand exactly `rows * dim` values, else the write fails and
/// nothing is left behind.
pub fn write_npy_streamed(
    path: &Path,
    rows: usize,
    dim: usize,
    dtype: Dtype,
    overwrite: Overwrite,
    fill: impl FnOnce(&mut dyn FnMut(&[f32]) -> io::Result<()>) -> io::Result<()>,
) -> Result<(), BankError> {
    let elem = match dtype {
        Dtype::F32 => Elem::F32,
        Dtype::F16 => Elem::F16,
    };
    let header = header_bytes(elem, &[rows, dim]);
    tandem_io::write_atomic(path, overwrite, |w| {
        w.write_all(&header)?;
        let mut written = 0usize;
        let mut buf: Vec<u8> = Vec::new();
        fill(&mut |block: &[f32]| {
            written += block.len();
            if written > rows * dim {
                return Err(io::Error::other("more values than rows * dim"));
            }
            buf.clear();
            match dtype {
                Dtype::F32 => buf.extend(block.iter().flat_map(|v| v.to_le_bytes())),
                Dtype::F16 => buf.extend(
                    block
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes()),
                ),
            }
            w.write_all(&buf)
        })?;
        if written != rows * dim {
            return Err(io::Error::other(format!(
                "{written} values written, {} expected",
                rows * dim
            )));
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ArrayHeader, Problem> {
        parse_header(text.as_bytes())
    }

    #[test]
    fn parses_numpy_headers() {
        let h =
            parse("{'descr': '<f2', 'fortran_order': False, 'shape': (5000, 384), }          \n")
                .unwrap();
        assert_eq!(
            h,
            ArrayHeader {
                elem: Elem::F16,
                shape: vec![5000, 384]
            }
        );
        let h = parse("{\"shape\": (7,), \"descr\": \"|f4\", \"fortran_order\": False}").unwrap();
        assert_eq!(
            h,
            ArrayHeader {
                elem: Elem::F32,
                shape: vec![7]
            }
        );
        let h = parse("{'descr': '=i8', 'fortran_order': False, 'shape': (2L, 3L, 4L)}").unwrap();
        assert_eq!(
            h,
            ArrayHeader {
                elem: Elem::I64,
                shape: vec![2, 3, 4]
            }
        );
        let h = parse("{'descr': 'i4', 'fortran_order': False, 'shape': ()}").unwrap();
        assert_eq!(
            h,
            ArrayHeader {
                elem: Elem::I32,
                shape: vec![]
            }
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases = [
            ("", "expected '{'"),
            ("['descr']", "expected '{'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected ',' or '}'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", "unexpected text after"),
            ("{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"),
            ("{'descr': '<f4', 'shape': (1, 2)}", "no 'fortran_order' key"),
            ("{'fortran_order': False, 'shape': (1, 2)}", "no 'descr' key"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'x': 1}", "unexpected key 'x'"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)}", "repeats the key"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}", "invalid dimension -2"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (5)}", "not a tuple"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': [1, 2]}", "not a tuple"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 2)}", "not True or False"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 'a')}", "dimension that is a string"),
            ("{'descr': '<f4, 'fortran_order': False, 'shape': (1, 2)}", "expected ',' or '}'"),
            ("{'descr' '<f4'}", "expected ':'"),
            ("{'descr': '<f4', 'fortran_order': Nope, 'shape': (1, 2)}", "expected a Python literal"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999,)}", "out of range"),
            ("{1: '<f4'}", "key that is an integer"),
            ("{'descr': '<f4\\'', 'fortran_order': False, 'shape': (1, 2)}", "unsupported character"),
        ];
        for (text, want) in cases {
            let (got, fix) = parse(text).unwrap_err();
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
            assert!(fix.contains("np.save"), "{text:?}: fix {fix:?}");
        }
        let deep = format!("{{'descr': {}", "(".repeat(100));
        assert!(parse(&deep).unwrap_err().0.contains("nested too deeply"));
    }

    #[test]
    fn rejects_dtypes_with_fixes() {
        let with = |descr: &str| {
            parse(&format!(
                "{{'descr': {descr}, 'fortran_order': False, 'shape': (1, 2)}}"
            ))
        };
        let (p, f) = with("'<f8'").unwrap_err();
        assert!(
            p.contains("'<f8' is not supported") && p.contains("float32 '<f4'"),
            "{p}"
        );
        assert!(f.contains("arr.astype('float32')"), "{f}");
        let (p, f) = with("'>f4'").unwrap_err();
        assert!(p.contains("big-endian"), "{p}");
        assert!(f.contains("astype('float32')"), "{f}");
        let (p, f) = with("[('a', '<f4'), ('b', '<f4')]").unwrap_err();
        assert!(p.contains("structured dtype"), "{p}");
        assert!(f.contains("astype"), "{f}");
        let (p, f) = parse("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2)}").unwrap_err();
        assert!(p.contains("Fortran"), "{p}");
        assert!(f.contains("np.ascontiguousarray"), "{f}");
    }

    #[test]
    fn header_matches_numpy_layout() {
        // np.save of np.zeros((5000, 384), 'f2') starts with exactly these 128 bytes.
        let h = header_bytes(Elem::F16, &[5000, 384]);
        assert_eq!(h.len(), 128);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(
            text.starts_with("{'descr': '<f2', 'fortran_order': False, 'shape': (5000, 384), }")
        );
        assert!(text.ends_with(" \n"));
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        for shape in [vec![1], vec![3, 4], vec![123456789, 1024], vec![]] {
            let h = header_bytes(Elem::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            let (parsed, offset) = read_header(&mut &h[..], Path::new("x.npy")).unwrap();
            assert_eq!(offset, h.len());
            assert_eq!(parsed.shape, shape);
        }
    }

    #[test]
    fn streamed_writes_are_the_bytes_of_write_npy() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..7 * 5).map(|i| i as f32 * 0.37 - 3.0).collect();
        let half: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        for (dtype, whole) in [
            (Dtype::F32, Vectors::F32(&data)),
            (Dtype::F16, Vectors::F16(&half)),
        ] {
            let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
            write_npy(&a, 7, 5, whole, Overwrite::Allow).unwrap();
            write_npy_streamed(&b, 7, 5, dtype, Overwrite::Allow, |w| {
                w(&data[..10])?;
                w(&data[10..])
            })
            .unwrap();
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        }
        // too few values: an error, and no file
        let c = dir.path().join("c.npy");
        let e = write_npy_streamed(&c, 7, 5, Dtype::F32, Overwrite::Allow, |w| w(&data[..10]));
        assert!(e.is_err() && !c.exists());
    }
}
