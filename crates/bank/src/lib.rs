//! tandem-bank: vector banks read from `.npy`, `.npz`, `.safetensors` and
//! `.fvecs` files, memory-mapped where the layout allows, float32 or float16.
//!
//! A [`Bank`] is a row-major `(rows, dim)` matrix plus optional document ids.
//! Float16 banks stay float16 in memory; consumers that need float32 convert
//! a block of rows at a time with [`Bank::rows_f32_into`].
//!
//! Every reader checks before it trusts: magic, version, header size caps,
//! dtype, checked shape arithmetic, and the exact file length. A bad file is
//! one [`BankError::Invalid`] naming the file, the problem and the fix.
//! [`read_array`] reads arrays of any rank (e.g. training contexts) with the
//! same checks, and [`write_npy`] writes what `np.save` writes.

mod array;
mod error;
mod format;
mod fvecs;
mod multi;
mod npy;
mod npz;
mod open;
mod safetensors;
mod scan;
mod storage;

pub use array::{read_array, write_array, Array, ArrayData, ArrayRef, MappedArray};
pub use error::BankError;
pub use format::Format;
pub use half::f16;
pub use multi::{is_multi_vector, offsets_path, write_offsets, MultiBank};
pub use npy::{write_npy, write_npy_streamed};
pub use open::array_keys;
pub use scan::{NormStats, ScanReport, FIRST_BAD_ROWS};
pub use storage::{Bank, Dtype, Vectors};
pub use tandem_io::Overwrite;

/// Options for [`Bank::open`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Array name inside an `.npz` archive or tensor name inside a
    /// `.safetensors` file. Required when the container holds more than one;
    /// an error for `.npy` and `.fvecs`, which hold a single array.
    pub key: Option<String>,
    /// Optional ids file: one id per line, as many lines as the bank has rows.
    pub ids: Option<std::path::PathBuf>,
}
