//! tandem-bank: vector banks read from `.npy`, `.npz`, `.safetensors` and
//! `.fvecs` files, memory-mapped where the layout allows, float32 or float16.
//!
//! A [`Bank`] is a row-major `(rows, dim)` matrix plus optional document ids.
//! Float16 banks stay float16 in memory; consumers that need float32 convert
//! a block of rows at a time with [`Bank::rows_f32_into`].

mod error;
mod storage;

pub use error::BankError;
pub use half::f16;
pub use storage::{Bank, Dtype, Vectors};

/// Options for [`Bank::open`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Array name inside an `.npz` archive or tensor name inside a
    /// `.safetensors` file. Required when the container holds more than one.
    pub key: Option<String>,
    /// Optional ids file: one id per line, as many lines as the bank has rows.
    pub ids: Option<std::path::PathBuf>,
}
