//! What every reader shares: file formats, element types, array headers, and
//! where an array's bytes live once its header has been checked.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use half::f16;
use memmap2::Mmap;

use crate::array::ArrayData;
use crate::{fvecs, npy, npz, safetensors, BankError};

#[cfg(not(target_endian = "little"))]
compile_error!(
    "tandem-bank reads little-endian files in place and supports little-endian hosts only"
);

/// A vector file format, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy` (versions 1.0, 2.0, 3.0).
    Npy,
    /// NumPy `.npz`: a zip archive of `.npy` members, stored or deflated.
    Npz,
    /// Hugging Face `.safetensors`.
    Safetensors,
    /// `.fvecs`: each row is a little-endian i32 dimension followed by that many f32.
    Fvecs,
}

impl Format {
    /// The format of `path`, from its extension (case-insensitive).
    pub fn of(path: &Path) -> Result<Format, BankError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("npy") => Ok(Format::Npy),
            Some("npz") => Ok(Format::Npz),
            Some("safetensors") => Ok(Format::Safetensors),
            Some("fvecs") => Ok(Format::Fvecs),
            _ => Err(BankError::invalid(
                path,
                "unknown vector file extension",
                "use a .npy, .npz, .safetensors or .fvecs file (np.save(path, arr) writes .npy)",
            )),
        }
    }

    /// The short name of the format (its extension).
    pub fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Safetensors => "safetensors",
            Format::Fvecs => "fvecs",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element types the readers understand: float banks, integer index arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    I64,
    I32,
}

impl Elem {
    pub(crate) fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 => 2,
            Elem::I64 => 8,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F16 => "float16",
            Elem::I64 => "int64",
            Elem::I32 => "int32",
        }
    }
}

/// The text of a shape as Python prints it: `(5,)`, `(3, 4)`, `()`.
pub(crate) fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Element type and shape of one array, as declared by its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArrayHeader {
    pub elem: Elem,
    pub shape: Vec<usize>,
}

impl ArrayHeader {
    /// Number of elements, or an error when the shape's product overflows.
    pub(crate) fn len(&self, path: &Path) -> Result<usize, BankError> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.overflow(path))
    }

    /// Number of data bytes, or an error when it does not fit in a `usize`.
    pub(crate) fn nbytes(&self, path: &Path) -> Result<usize, BankError> {
        self.len(path)?
            .checked_mul(self.elem.size())
            .ok_or_else(|| self.overflow(path))
    }

    fn overflow(&self, path: &Path) -> BankError {
        BankError::invalid(
            path,
            format!(
                "shape {} of {} overflows a 64-bit byte count",
                shape_text(&self.shape),
                self.elem.name()
            ),
            "the header is corrupt; re-create the file",
        )
    }

    /// Check that exactly the declared number of data bytes is present:
    /// `available` bytes follow the header in a file of `file_len` bytes.
    pub(crate) fn check_data_len(
        &self,
        path: &Path,
        available: u64,
        file_len: u64,
    ) -> Result<usize, BankError> {
        let need = self.nbytes(path)?;
        let what = format!("shape {} {}", shape_text(&self.shape), self.elem.name());
        if available < need as u64 {
            return Err(BankError::invalid(
                path,
                format!(
                    "truncated: {what} needs {need} data bytes but only {available} follow the header ({file_len} bytes in all)"
                ),
                "the file was cut short (an interrupted copy or write?); re-create it",
            ));
        }
        if available > need as u64 {
            return Err(BankError::invalid(
                path,
                format!(
                    "{} unexpected trailing bytes: {what} needs {need} data bytes but {available} follow the header ({file_len} bytes in all)",
                    available - need as u64
                ),
                "the file is corrupt or was appended to; re-create it from the source array",
            ));
        }
        Ok(need)
    }
}

/// Where a located array's data lives.
#[derive(Debug)]
pub(crate) enum Payload {
    /// In a memory map, starting at `offset`; the length was checked.
    Mapped { map: Arc<Mmap>, offset: usize },
    /// Already read (decompressed or de-interleaved) into owned memory.
    Owned(ArrayData),
}

impl Payload {
    /// The data as owned typed elements (copied out of the map if mapped).
    pub(crate) fn into_data(
        self,
        header: &ArrayHeader,
        path: &Path,
    ) -> Result<ArrayData, BankError> {
        let (map, offset) = match self {
            Payload::Owned(data) => return Ok(data),
            Payload::Mapped { map, offset } => (map, offset),
        };
        let bytes = &map[offset..offset + header.nbytes(path)?];
        Ok(match header.elem {
            Elem::F32 => ArrayData::F32(bytemuck::pod_collect_to_vec(bytes)),
            Elem::F16 => ArrayData::F16(bytemuck::pod_collect_to_vec::<u8, f16>(bytes)),
            Elem::I64 => ArrayData::I64(bytemuck::pod_collect_to_vec(bytes)),
            Elem::I32 => ArrayData::I32(bytemuck::pod_collect_to_vec(bytes)),
        })
    }
}

/// An array found in a file: its header (validated, exact length checked) and data.
#[derive(Debug)]
pub(crate) struct Located {
    pub header: ArrayHeader,
    pub payload: Payload,
}

/// Memory-map a whole file read-only; an empty file is an error.
pub(crate) fn map_file(path: &Path) -> Result<Arc<Mmap>, BankError> {
    let file = File::open(path).map_err(|e| BankError::io(path, e))?;
    let len = file.metadata().map_err(|e| BankError::io(path, e))?.len();
    if len == 0 {
        return Err(BankError::invalid(
            path,
            "file is empty (0 bytes)",
            "an interrupted write leaves empty files; re-create it",
        ));
    }
    // SAFETY: the map is read-only and private to this process. Like every
    // memory-mapped reader, we rely on the file not being truncated while it
    // is in use.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| BankError::io(path, e))?;
    Ok(Arc::new(map))
}

/// Find the array `key` (for containers) in `path` and check its header and length.
pub(crate) fn locate(path: &Path, key: Option<&str>) -> Result<Located, BankError> {
    let format = Format::of(path)?;
    if let (Some(k), Format::Npy | Format::Fvecs) = (key, format) {
        return Err(BankError::invalid(
            path,
            format!("a key ('{k}') was given, but this file holds a single array"),
            "drop --key (it picks an array inside an .npz or a tensor inside a .safetensors file)",
        ));
    }
    let map = map_file(path)?;
    let (header, payload) = match format {
        Format::Npy => {
            let (header, offset) = npy::read_header(&mut &map[..], path)?;
            header.check_data_len(path, (map.len() - offset) as u64, map.len() as u64)?;
            (header, Payload::Mapped { map, offset })
        }
        Format::Npz => npz::locate(path, map, key)?,
        Format::Safetensors => safetensors::locate(path, map, key)?,
        Format::Fvecs => fvecs::read(path, &map)?,
    };
    Ok(Located { header, payload })
}

/// Pick a member of a container by `key`: required when there are several.
/// `names` are the available keys in file order.
pub(crate) fn pick_key<'a>(
    path: &Path,
    names: &'a [String],
    key: Option<&str>,
    what: &str,
) -> Result<&'a str, BankError> {
    let listing = || {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (key, names) {
        (_, []) => Err(BankError::invalid(
            path,
            format!("contains no {what}s"),
            "write at least one array into it",
        )),
        (None, [only]) => Ok(only),
        (None, _) => Err(BankError::invalid(
            path,
            format!(
                "contains {} {what}s ({}) and no key was given",
                names.len(),
                listing()
            ),
            format!(
                "pick one by name: --key {0} (for a query file: --query-key {0})",
                names[0]
            ),
        )),
        (Some(k), _) => names
            .iter()
            .find(|n| n.as_str() == k)
            .map(String::as_str)
            .ok_or_else(|| {
                BankError::invalid(
                    path,
                    format!("has no {what} named '{k}'; it contains {}", listing()),
                    "pass one of those names with --key (for a query file: --query-key)",
                )
            }),
    }
}
