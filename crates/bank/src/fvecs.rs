//! `.fvecs`: each row is a little-endian i32 dimension followed by that many
//! little-endian f32. The interleaved dimensions rule out using the map in
//! place, so rows are copied into memory after every dimension is checked.

use std::path::Path;

use crate::array::ArrayData;
use crate::format::{ArrayHeader, Elem, Payload};
use crate::BankError;

const REWRITE: &str = "the file is corrupt or truncated; re-export it (or save the array with np.save and use the .npy)";

fn dim_at(bytes: &[u8], pos: usize) -> i32 {
    i32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"))
}

/// Read and check a whole `.fvecs` file (already mapped, non-empty).
pub(crate) fn read(path: &Path, bytes: &[u8]) -> Result<(ArrayHeader, Payload), BankError> {
    let bad = |problem: String| BankError::invalid(path, problem, REWRITE);
    if bytes.len() < 4 {
        return Err(bad(format!(
            "truncated: {} bytes, shorter than one row's 4-byte dimension",
            bytes.len()
        )));
    }
    let first = dim_at(bytes, 0);
    let dim = usize::try_from(first)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| bad(format!("row 0 declares dimension {first}")))?;
    let row_bytes = (dim + 1) * 4;
    let rows = bytes.len() / row_bytes;
    // Walk every row's dimension first, so a bad row is reported as such
    // rather than as a length mismatch.
    let mut pos = 0;
    let mut row = 0;
    while pos + 4 <= bytes.len() {
        let d = dim_at(bytes, pos);
        if d != first {
            return Err(bad(format!(
                "row {row} declares dimension {d} but row 0 declares {first}"
            )));
        }
        if pos + row_bytes > bytes.len() {
            break;
        }
        pos += row_bytes;
        row += 1;
    }
    if pos != bytes.len() {
        return Err(bad(format!(
            "truncated: {} rows of dimension {dim} take {} bytes, but the file has {} bytes (row {rows} is incomplete)",
            rows,
            rows * row_bytes,
            bytes.len()
        )));
    }
    let bar = tandem_io::progress(rows as u64, "reading");
    let mut data = Vec::with_capacity(rows * dim);
    for (i, row) in bytes.chunks_exact(row_bytes).enumerate() {
        data.extend(
            row[4..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
        if i % 4096 == 4095 {
            bar.inc(4096);
        }
    }
    bar.finish_and_clear();
    Ok((
        ArrayHeader {
            elem: Elem::F32,
            shape: vec![rows, dim],
        },
        Payload::Owned(ArrayData::F32(data)),
    ))
}
