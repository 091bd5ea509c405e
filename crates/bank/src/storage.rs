use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use half::{f16, slice::HalfFloatSliceExt};
use memmap2::Mmap;
use rayon::prelude::*;

use crate::BankError;

/// Element type of a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// The numpy name: `float32` or `float16`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
        }
    }
}

impl FromStr for Dtype {
    type Err = String;

    /// Accepts `float32`/`f32` and `float16`/`f16` (case-insensitive).
    fn from_str(s: &str) -> Result<Dtype, String> {
        match s.to_ascii_lowercase().as_str() {
            "float32" | "f32" => Ok(Dtype::F32),
            "float16" | "f16" => Ok(Dtype::F16),
            _ => Err(format!("unknown dtype '{s}'; use float32 or float16")),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a bank's elements live.
#[derive(Debug)]
pub(crate) enum Backing {
    /// A read-only memory map; elements start at `offset` bytes (aligned for the dtype).
    Mmap {
        map: Arc<Mmap>,
        offset: usize,
    },
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// A borrowed view of all elements, row-major.
#[derive(Debug, Clone, Copy)]
pub enum Vectors<'a> {
    /// Float32 elements.
    F32(&'a [f32]),
    /// Float16 elements.
    F16(&'a [f16]),
}

/// A `(rows, dim)` matrix of embeddings with optional document ids.
#[derive(Debug)]
pub struct Bank {
    pub(crate) backing: Backing,
    pub(crate) dtype: Dtype,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    pub(crate) ids: Option<Vec<String>>,
    pub(crate) path: Option<PathBuf>,
}

impl Bank {
    /// An in-memory float32 bank. `data.len()` must equal `rows * dim`.
    pub fn from_f32(data: Vec<f32>, dim: usize) -> Bank {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "data length must be a multiple of dim"
        );
        let rows = data.len() / dim;
        Bank {
            backing: Backing::F32(data),
            dtype: Dtype::F32,
            rows,
            dim,
            ids: None,
            path: None,
        }
    }

    /// An in-memory float16 bank. `data.len()` must equal `rows * dim`.
    pub fn from_f16(data: Vec<f16>, dim: usize) -> Bank {
        assert!(
            dim > 0 && data.len().is_multiple_of(dim),
            "data length must be a multiple of dim"
        );
        let rows = data.len() / dim;
        Bank {
            backing: Backing::F16(data),
            dtype: Dtype::F16,
            rows,
            dim,
            ids: None,
            path: None,
        }
    }

    pub(crate) fn from_mmap(
        map: Arc<Mmap>,
        offset: usize,
        dtype: Dtype,
        rows: usize,
        dim: usize,
    ) -> Bank {
        debug_assert_eq!(offset % dtype.size(), 0);
        debug_assert!(offset + rows * dim * dtype.size() <= map.len());
        Bank {
            backing: Backing::Mmap { map, offset },
            dtype,
            rows,
            dim,
            ids: None,
            path: None,
        }
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Dimension of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Element type as stored (float16 banks are not widened).
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The file this bank was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the elements are memory-mapped rather than held in owned memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mmap { .. })
    }

    /// All elements, row-major, in their stored dtype.
    pub fn vectors(&self) -> Vectors<'_> {
        let n = self.rows * self.dim;
        match &self.backing {
            Backing::F32(v) => Vectors::F32(v),
            Backing::F16(v) => Vectors::F16(v),
            Backing::Mmap { map, offset } => {
                let bytes = &map[*offset..*offset + n * self.dtype.size()];
                match self.dtype {
                    Dtype::F32 => Vectors::F32(bytemuck::cast_slice(bytes)),
                    Dtype::F16 => Vectors::F16(bytemuck::cast_slice(bytes)),
                }
            }
        }
    }

    /// Rows `start..end` as float32: borrowed for float32 banks, converted for float16.
    pub fn rows_f32(&self, start: usize, end: usize) -> Cow<'_, [f32]> {
        let (a, b) = (start * self.dim, end * self.dim);
        match self.vectors() {
            Vectors::F32(v) => Cow::Borrowed(&v[a..b]),
            Vectors::F16(v) => Cow::Owned(v[a..b].iter().map(|x| x.to_f32()).collect()),
        }
    }

    /// Copy rows `start..end` as float32 into `out` (length `(end - start) * dim`).
    pub fn rows_f32_into(&self, start: usize, end: usize, out: &mut [f32]) {
        let (a, b) = (start * self.dim, end * self.dim);
        match self.vectors() {
            Vectors::F32(v) => out.copy_from_slice(&v[a..b]),
            // one vectorised conversion (F16C where the CPU has it)
            Vectors::F16(v) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[a..b], out),
        }
    }

    /// One row as float32.
    pub fn row_f32(&self, row: usize) -> Cow<'_, [f32]> {
        self.rows_f32(row, row + 1)
    }

    /// The whole bank as an owned float32 vector.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.rows_f32(0, self.rows).into_owned()
    }

    /// Document ids, if an ids file was attached.
    pub fn ids(&self) -> Option<&[String]> {
        self.ids.as_deref()
    }

    /// The id of a row: its id from the ids file, or the row number.
    pub fn doc_id(&self, row: usize) -> Cow<'_, str> {
        match &self.ids {
            Some(ids) => Cow::Borrowed(ids[row].as_str()),
            None => Cow::Owned(row.to_string()),
        }
    }

    /// How messages name this bank: its file, or `<in-memory bank>`.
    pub fn label(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<in-memory bank>"))
    }

    /// Check that `dim` (the dimension of `what`, e.g. "queries q.npy" or
    /// "the model's output") equals this bank's dimension; the error names both.
    pub fn expect_dim(&self, dim: usize, what: &str) -> Result<(), BankError> {
        if dim == self.dim {
            return Ok(());
        }
        Err(BankError::invalid(
            self.label(),
            format!(
                "the bank has dimension {} but {what} has dimension {dim}",
                self.dim
            ),
            "use vectors from the same embedding model for both (check which files were passed)",
        ))
    }

    /// Check that `other` (e.g. the queries) has this bank's dimension; the
    /// error names both files.
    pub fn expect_same_dim(&self, other: &Bank) -> Result<(), BankError> {
        self.expect_dim(other.dim, &other.label().display().to_string())
    }

    /// An in-memory copy in `dtype` (converted in parallel), keeping ids and
    /// path. Converting to float16 fails, naming the row, if a finite value
    /// lies beyond float16's range (±65504).
    pub fn to_dtype(&self, dtype: Dtype) -> Result<Bank, BankError> {
        const CHUNK: usize = 1 << 16;
        let backing = match (self.vectors(), dtype) {
            (Vectors::F32(v), Dtype::F32) => Backing::F32(v.to_vec()),
            (Vectors::F16(v), Dtype::F16) => Backing::F16(v.to_vec()),
            (Vectors::F16(v), Dtype::F32) => {
                let mut out = vec![0f32; v.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(v.par_chunks(CHUNK))
                    .for_each(|(o, s)| s.convert_to_f32_slice(o));
                Backing::F32(out)
            }
            (Vectors::F32(v), Dtype::F16) => {
                let mut out = vec![f16::ZERO; v.len()];
                let overflow = out
                    .par_chunks_mut(CHUNK)
                    .zip(v.par_chunks(CHUNK))
                    .enumerate()
                    .filter_map(|(c, (o, s))| {
                        o.convert_from_f32_slice(s);
                        o.iter()
                            .zip(s)
                            .position(|(h, x)| h.is_infinite() && x.is_finite())
                            .map(|p| c * CHUNK + p)
                    })
                    .min();
                if let Some(i) = overflow {
                    return Err(BankError::invalid(
                        self.label(),
                        format!("row {} holds {}, beyond float16's range (±65504)", i / self.dim, v[i]),
                        "keep float32 (--dtype float32), or normalise the vectors before converting",
                    ));
                }
                Backing::F16(out)
            }
        };
        Ok(Bank {
            backing,
            dtype,
            rows: self.rows,
            dim: self.dim,
            ids: self.ids.clone(),
            path: self.path.clone(),
        })
    }
}
