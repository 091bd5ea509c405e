//! `.safetensors`: an 8-byte little-endian header length, a JSON header
//! mapping tensor names to dtype, shape and data offsets, then the data.
//! Every tensor's offsets are checked (contiguous, in bounds, sized by its
//! shape) and the data must end exactly at the end of the file.

use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use serde::Deserialize;

use crate::format::{pick_key, shape_text, ArrayHeader, Elem, Payload};
use crate::BankError;

/// The safetensors library refuses headers over 100 MB; so do we.
const MAX_HEADER_LEN: u64 = 100_000_000;

const RESAVE: &str = "the file is corrupt or was not written by safetensors; re-save it with safetensors.torch.save_file or safetensors.numpy.save_file";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// A checked header: where the data starts and every tensor, in data order.
struct Parsed {
    data_start: usize,
    tensors: Vec<(String, TensorInfo)>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, BankError> {
    let bad = |problem: String| BankError::invalid(path, problem, RESAVE);
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(bad(format!(
            "truncated: {} bytes, shorter than the 8-byte safetensors header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > MAX_HEADER_LEN {
        return Err(bad(format!(
            "the header claims {n} bytes, over the {MAX_HEADER_LEN}-byte limit"
        )));
    }
    let data_start = 8 + n as usize;
    if data_start > bytes.len() {
        return Err(bad(format!(
            "truncated: the header claims {n} bytes but the file has only {} bytes in all",
            bytes.len()
        )));
    }
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
    let mut tensors = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            if !value.is_object() {
                return Err(bad("__metadata__ in the header is not an object".into()));
            }
            continue;
        }
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor '{name}' in the header: {e}")))?;
        tensors.push((name, info));
    }
    tensors.sort_by_key(|(_, t)| t.data_offsets);
    let data_len = bytes.len() - data_start;
    let mut pos = 0usize;
    for (name, t) in &tensors {
        let [begin, end] = t.data_offsets;
        let size = dtype_size(&t.dtype)
            .ok_or_else(|| bad(format!("tensor '{name}' has unknown dtype '{}'", t.dtype)))?;
        let nbytes = t.shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        let problem = if begin > pos {
            Some(format!(
                "{} unused bytes before tensor '{name}' (data offsets must be contiguous)",
                begin - pos
            ))
        } else if begin < pos {
            Some(format!("tensor '{name}' overlaps the tensor before it"))
        } else if end < begin {
            Some(format!(
                "tensor '{name}' has data offsets [{begin}, {end}] that end before they begin"
            ))
        } else if end > data_len {
            Some(format!(
                "truncated: tensor '{name}' ends at data byte {end} but only {data_len} data bytes follow the header"
            ))
        } else if nbytes != Some(end - begin) {
            Some(format!(
                "tensor '{name}' has shape {} {} but {} data bytes",
                shape_text(&t.shape),
                t.dtype,
                end - begin
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(bad(problem));
        }
        pos = end;
    }
    if pos != data_len {
        return Err(bad(format!(
            "{} unexpected trailing bytes after the last tensor ({data_len} data bytes, tensors use {pos})",
            data_len - pos
        )));
    }
    Ok(Parsed {
        data_start,
        tensors,
    })
}

/// The tensor names of the safetensors file mapped in `map`, in data order.
pub(crate) fn list(path: &Path, map: &[u8]) -> Result<Vec<String>, BankError> {
    Ok(parse(path, map)?
        .tensors
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Find tensor `key` (required when there are several); the whole header is checked.
pub(crate) fn locate(
    path: &Path,
    map: Arc<Mmap>,
    key: Option<&str>,
) -> Result<(ArrayHeader, Payload), BankError> {
    let parsed = parse(path, &map)?;
    let names: Vec<String> = parsed.tensors.iter().map(|(n, _)| n.clone()).collect();
    let key = pick_key(path, &names, key, "tensor")?;
    let (_, info) = parsed
        .tensors
        .iter()
        .find(|(n, _)| n == key)
        .expect("picked from names");
    let elem = match info.dtype.as_str() {
        "F32" => Elem::F32,
        "F16" => Elem::F16,
        "I64" => Elem::I64,
        "I32" => Elem::I32,
        other => {
            return Err(BankError::invalid(
                path,
                format!(
                    "tensor '{key}' has dtype {other}; supported: F32 and F16 for vectors, I64 and I32 for row indices"
                ),
                "convert before saving: tensor.float() (or .half()) in PyTorch, arr.astype('float32') in numpy",
            ))
        }
    };
    let header = ArrayHeader {
        elem,
        shape: info.shape.clone(),
    };
    Ok((
        header,
        Payload::Mapped {
            offset: parsed.data_start + info.data_offsets[0],
            map,
        },
    ))
}
