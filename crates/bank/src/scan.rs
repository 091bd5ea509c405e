//! One parallel pass over a bank: L2-norm statistics, zero rows, and rows
//! holding NaN or Inf.

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::{Bank, BankError, Vectors};

/// How many bad row numbers a [`ScanReport`] keeps.
pub const FIRST_BAD_ROWS: usize = 10;

/// L2-norm statistics over the rows without NaN/Inf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormStats {
    /// Smallest row norm.
    pub min: f64,
    /// Mean row norm.
    pub mean: f64,
    /// Largest row norm.
    pub max: f64,
}

/// What [`Bank::scan`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanReport {
    /// Norm statistics of the finite rows; `None` when every row has NaN/Inf.
    pub norms: Option<NormStats>,
    /// Rows whose L2 norm is exactly zero.
    pub zero_rows: usize,
    /// Rows holding at least one NaN or infinite element.
    pub nonfinite_rows: usize,
    /// The first (lowest) of those rows, at most [`FIRST_BAD_ROWS`].
    pub first_nonfinite: Vec<usize>,
}

/// Partial results of one block of rows; merged in row order.
#[derive(Debug, Clone)]
struct Acc {
    min: f64,
    max: f64,
    sum: f64,
    finite: usize,
    zero: usize,
    bad: usize,
    first_bad: Vec<usize>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            finite: 0,
            zero: 0,
            bad: 0,
            first_bad: Vec::new(),
        }
    }

    fn merge(mut self, other: Acc) -> Acc {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.finite += other.finite;
        self.zero += other.zero;
        self.bad += other.bad;
        self.first_bad.extend(other.first_bad);
        self.first_bad.sort_unstable();
        self.first_bad.truncate(FIRST_BAD_ROWS);
        self
    }

    /// Add rows `first_row..` stored contiguously in `block`.
    fn add_rows(&mut self, block: &[f32], dim: usize, first_row: usize) {
        for (i, row) in block.chunks_exact(dim).enumerate() {
            match row_norm(row) {
                Some(norm) => {
                    self.min = self.min.min(norm);
                    self.max = self.max.max(norm);
                    self.sum += norm;
                    self.finite += 1;
                    self.zero += usize::from(norm == 0.0);
                }
                None => {
                    self.bad += 1;
                    if self.first_bad.len() < FIRST_BAD_ROWS {
                        self.first_bad.push(first_row + i);
                    }
                }
            }
        }
    }
}

/// The L2 norm of a row, or `None` if it holds NaN or Inf. Sums in eight
/// float32 lanes (vectorisable); falls back to float64 only when the float32
/// sum is not finite, to tell overflow from NaN/Inf elements.
fn row_norm(row: &[f32]) -> Option<f64> {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x * x;
        }
    }
    let sq = lanes.iter().sum::<f32>() + tail;
    if sq.is_finite() {
        return Some(f64::from(sq).sqrt());
    }
    if row.iter().all(|x| x.is_finite()) {
        Some(
            row.iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt(),
        )
    } else {
        None
    }
}

impl Bank {
    /// Scan every row once, in parallel: L2-norm min/mean/max, zero rows,
    /// and the rows holding NaN or Inf. Runs at memory bandwidth; shows a
    /// progress bar on a terminal.
    pub fn scan(&self) -> ScanReport {
        let dim = self.dim;
        // Blocks of about 256 KiB keep float16 conversion buffers in cache.
        let block_rows = ((256 << 10) / (dim * self.dtype.size())).max(1);
        let bar = tandem_io::progress(self.rows as u64, "scanning");
        let acc = match self.vectors() {
            Vectors::F32(v) => v
                .par_chunks(block_rows * dim)
                .enumerate()
                .map(|(b, block)| {
                    let mut acc = Acc::new();
                    acc.add_rows(block, dim, b * block_rows);
                    bar.inc((block.len() / dim) as u64);
                    acc
                })
                .reduce(Acc::new, Acc::merge),
            Vectors::F16(v) => v
                .par_chunks(block_rows * dim)
                .enumerate()
                .map_init(Vec::new, |buf: &mut Vec<f32>, (b, block)| {
                    buf.resize(block.len(), 0.0);
                    block.convert_to_f32_slice(buf);
                    let mut acc = Acc::new();
                    acc.add_rows(buf, dim, b * block_rows);
                    bar.inc((block.len() / dim) as u64);
                    acc
                })
                .reduce(Acc::new, Acc::merge),
        };
        bar.finish_and_clear();
        let norms = (acc.finite > 0).then(|| NormStats {
            min: acc.min,
            mean: acc.sum / acc.finite as f64,
            max: acc.max,
        });
        ScanReport {
            norms,
            zero_rows: acc.zero,
            nonfinite_rows: acc.bad,
            first_nonfinite: acc.first_bad,
        }
    }

    /// Refuse a bank with NaN or Inf values: the error names the first bad rows.
    pub fn check_finite(&self) -> Result<(), BankError> {
        let report = self.scan();
        if report.nonfinite_rows == 0 {
            return Ok(());
        }
        let rows = report
            .first_nonfinite
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(BankError::invalid(
            self.label(),
            format!(
                "{} of {} rows hold NaN or Inf (first: rows {rows})",
                report.nonfinite_rows, self.rows
            ),
            "re-embed or drop those rows; list them with `tandem bank info`",
        ))
    }
}
