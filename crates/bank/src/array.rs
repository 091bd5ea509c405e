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

/// Borrowed elements of an array, for [`write_array`].
#[derive(Debug, Clone, Copy)]
pub enum ArrayRef<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
}

impl ArrayRef<'_> {
    fn elem_and_bytes(&self) -> (format::Elem, &[u8]) {
        match self {
            ArrayRef::F32(v) => (format::Elem::F32, bytemuck::cast_slice(v)),
            ArrayRef::I64(v) => (format::Elem::I64, bytemuck::cast_slice(v)),
            ArrayRef::I32(v) => (format::Elem::I32, bytemuck::cast_slice(v)),
        }
    }
}

/// Writes an array of any rank as a `.npy` file (what `np.save` writes),
/// atomically. Panics if `data` does not hold the product of `shape`
/// elements.
pub fn write_array(
    path: &Path,
    shape: &[usize],
    data: ArrayRef<'_>,
    overwrite: tandem_io::Overwrite,
) -> Result<(), BankError> {
    use std::io::Write;
    let (elem, bytes) = data.elem_and_bytes();
    assert_eq!(
        bytes.len(),
        shape.iter().product::<usize>() * elem.size(),
        "write_array: data must hold the product of the shape's elements"
    );
    let header = crate::npy::header_bytes(elem, shape);
    tandem_io::write_atomic(path, overwrite, |w| {
        w.write_all(&header)?;
        w.write_all(bytes)
    })?;
    Ok(())
}

/// A `.npy` array of any rank, memory-mapped and checked (header, exact
/// length) but not copied: typed views of its elements are borrowed from
/// the map.
#[derive(Debug)]
pub struct MappedArray {
    map: std::sync::Arc<memmap2::Mmap>,
    offset: usize,
    bytes: usize,
    elem: format::Elem,
    shape: Vec<usize>,
    path: std::path::PathBuf,
}

impl MappedArray {
    /// Maps the `.npy` file `path`.
    pub fn open(path: &Path) -> Result<MappedArray, BankError> {
        if format::Format::of(path)? != format::Format::Npy {
            return Err(BankError::invalid(
                path,
                "not a .npy file",
                "give the .npy file written with the others",
            ));
        }
        let located = format::locate(path, None)?;
        let format::Payload::Mapped { map, offset } = located.payload else {
            unreachable!("a .npy file is always mapped")
        };
        let bytes = located.header.nbytes(path)?;
        Ok(MappedArray {
            map,
            offset,
            bytes,
            elem: located.header.elem,
            shape: located.header.shape,
            path: path.to_path_buf(),
        })
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type's numpy name (`float32`, `int64`, ...).
    pub fn dtype_name(&self) -> &'static str {
        self.elem.name()
    }

    fn view<T: bytemuck::Pod>(&self, want: format::Elem) -> Result<&[T], BankError> {
        if self.elem != want {
            return Err(BankError::invalid(
                &self.path,
                format!(
                    "{} {}, where {} was expected",
                    self.elem.name(),
                    shape_text(&self.shape),
                    want.name()
                ),
                "the file was replaced or damaged; re-create it",
            ));
        }
        bytemuck::try_cast_slice(&self.map[self.offset..self.offset + self.bytes]).map_err(|_| {
            BankError::invalid(
                &self.path,
                "the data is not aligned for its element type",
                "re-save the array with np.save",
            )
        })
    }

    /// The elements as float32 (an error for another dtype).
    pub fn f32(&self) -> Result<&[f32], BankError> {
        self.view(format::Elem::F32)
    }

    /// The elements as int64 (an error for another dtype).
    pub fn i64(&self) -> Result<&[i64], BankError> {
        self.view(format::Elem::I64)
    }

    /// The elements as int32 (an error for another dtype).
    pub fn i32(&self) -> Result<&[i32], BankError> {
        self.view(format::Elem::I32)
    }
}
