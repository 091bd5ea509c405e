//! A lower-level reader for n-dimensional arrays (e.g. `.npz` training files
//! with a context array `(N, L, D)` and targets `(N, D)` or `(N,)` indices).

use std::path::Path;

use half::f16;

use crate::format::{self, shape_text};
use crate::BankError;

/// Owned elements of an array, row-major (C order).
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// float32 (`<f4`, safetensors `F32`).
    F32(Vec<f32>),
    /// float16 (`<f2`, safetensors `F16`).
    F16(Vec<f16>),
    /// int64 (`<i8`, safetensors `I64`), e.g. target row indices.
    I64(Vec<i64>),
    /// int32 (`<i4`, safetensors `I32`).
    I32(Vec<i32>),
}

impl ArrayData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len(),
            ArrayData::F16(v) => v.len(),
            ArrayData::I64(v) => v.len(),
            ArrayData::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's numpy name: `float32`, `float16`, `int64` or `int32`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            ArrayData::F32(_) => "float32",
            ArrayData::F16(_) => "float16",
            ArrayData::I64(_) => "int64",
            ArrayData::I32(_) => "int32",
        }
    }
}

/// An n-dimensional array read whole into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The shape, outermost axis first; its product is `data.len()`.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: ArrayData,
}

impl Array {
    /// The shape as Python prints it, e.g. `(16314, 8, 384)`.
    pub fn shape_text(&self) -> String {
        shape_text(&self.shape)
    }
}

/// Read one array of any rank from a `.npy`, `.npz` (pick it with `key`,
/// required when the archive holds several; `.npy` suffix optional),
/// `.safetensors` or `.fvecs` file. The header checks are the same as for
/// [`crate::Bank::open`]: exact length, dtype, checked shape arithmetic.
pub fn read_array(path: &Path, key: Option<&str>) -> Result<Array, BankError> {
    let located = format::locate(path, key)?;
    let data = located.payload.into_data(&located.header, path)?;
    Ok(Array {
        shape: located.header.shape,
        data,
    })
}
