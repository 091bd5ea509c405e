//! [`Bank::open`]: any supported file to a checked `(rows, dim)` bank, plus
//! the optional ids file.

use std::collections::HashMap;
use std::path::Path;

use crate::array::ArrayData;
use crate::format::{self, shape_text, Elem, Format, Payload};
use crate::storage::Dtype;
use crate::{npz, safetensors, Bank, BankError, OpenOptions};

impl Bank {
    /// Open a vector bank from a `.npy`, `.npz`, `.safetensors` or `.fvecs`
    /// file (chosen by extension). `.npy` files, stored `.npz` members and
    /// safetensors tensors are memory-mapped when their data is aligned (the
    /// usual case), so opening costs O(header); float16 stays float16.
    ///
    /// The array must be 2-D `(rows, dim)` with at least one row and one
    /// dimension, float32 or float16. `opts.key` picks the array in a
    /// container; `opts.ids` attaches one id per row.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Bank, BankError> {
        let located = format::locate(path, opts.key.as_deref())?;
        let header = located.header;
        let shape = shape_text(&header.shape);
        let (rows, dim) = match header.shape[..] {
            [rows, dim] if rows > 0 && dim > 0 => (rows, dim),
            [_, _] => {
                return Err(BankError::invalid(
                    path,
                    format!("the array has shape {shape}: a bank needs at least one row and one dimension"),
                    "check the step that exported it; it wrote no vectors",
                ))
            }
            [dim] => {
                return Err(BankError::invalid(
                    path,
                    format!("the array has shape {shape} (1-D): a bank must be 2-D (rows, dim)"),
                    format!(
                        "save it as a matrix: arr.reshape(1, -1) for one vector of dimension {dim}, or arr.reshape(-1, DIM)"
                    ),
                ))
            }
            _ => {
                return Err(BankError::invalid(
                    path,
                    format!("the array has shape {shape} ({}-D): a bank must be 2-D (rows, dim)", header.shape.len()),
                    "flatten the leading axes before saving: arr.reshape(-1, arr.shape[-1])",
                ))
            }
        };
        let dtype = match header.elem {
            Elem::F32 => Dtype::F32,
            Elem::F16 => Dtype::F16,
            Elem::I64 | Elem::I32 => {
                return Err(BankError::invalid(
                    path,
                    format!(
                        "the array is {} {shape}: a bank holds float32 or float16 vectors",
                        header.elem.name()
                    ),
                    "convert it: np.save(path, arr.astype('float32'))",
                ))
            }
        };
        let mut bank = match located.payload {
            Payload::Mapped { map, offset } if offset % dtype.size() == 0 => {
                Bank::from_mmap(map, offset, dtype, rows, dim)
            }
            payload => match payload.into_data(&header, path)? {
                ArrayData::F32(v) => Bank::from_f32(v, dim),
                ArrayData::F16(v) => Bank::from_f16(v, dim),
                ArrayData::I64(_) | ArrayData::I32(_) => {
                    unreachable!("integer dtypes were rejected above")
                }
            },
        };
        if let Some(ids_path) = &opts.ids {
            bank.ids = Some(read_ids(ids_path, rows, path)?);
        }
        bank.path = Some(path.to_path_buf());
        Ok(bank)
    }
}

/// The names of the arrays in a container file (`.npz` members without
/// `.npy`, or safetensors tensors), for choosing a key; empty for `.npy` and
/// `.fvecs`, which hold a single array.
pub fn array_keys(path: &Path) -> Result<Vec<String>, BankError> {
    match Format::of(path)? {
        Format::Npz => npz::list(path, &format::map_file(path)?[..]),
        Format::Safetensors => safetensors::list(path, &format::map_file(path)?[..]),
        Format::Npy | Format::Fvecs => Ok(Vec::new()),
    }
}

/// Read the ids file of the vector file `vectors`: exactly `rows` lines (a
/// final newline is optional, `\r\n` is accepted), no empty ids, no duplicates.
pub(crate) fn read_ids(path: &Path, rows: usize, vectors: &Path) -> Result<Vec<String>, BankError> {
    let bytes = std::fs::read(path).map_err(|e| BankError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        BankError::invalid(
            path,
            format!(
                "ids file is not UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
            "save it as UTF-8 text, one id per line",
        )
    })?;
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let ids: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        body.split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect()
    };
    if ids.len() != rows {
        return Err(BankError::invalid(
            path,
            format!(
                "ids file has {} lines but {} has {rows} rows",
                ids.len(),
                vectors.display()
            ),
            "write exactly one id per vector row, in row order",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(rows);
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            return Err(BankError::invalid(
                path,
                format!("line {} is an empty id", i + 1),
                "give every row a non-empty id",
            ));
        }
        if let Some(first) = seen.insert(id, i) {
            return Err(BankError::invalid(
                path,
                format!("id '{id}' appears on lines {} and {}", first + 1, i + 1),
                "ids must be unique; remove or rename the duplicate",
            ));
        }
    }
    Ok(ids.into_iter().map(str::to_string).collect())
}
