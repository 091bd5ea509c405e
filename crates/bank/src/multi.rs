//! Multi-vector banks (late interaction, ColBERT): every document is a run
//! of token vectors. On disk, beside each other:
//!
//! - `X.npy`: the token matrix, `(tokens, dim)`, float16 or float32,
//!   memory-mapped as any [`Bank`];
//! - `X.offsets.npy`: int64 `(documents + 1,)`, from 0 to `tokens`,
//!   non-decreasing: document `i` owns rows `offsets[i]..offsets[i + 1]`;
//! - `X.ids.txt`: one id per document (optional).
//!
//! A dense bank is an `X.npy` without `X.offsets.npy`. An index over the
//! tokens (PLAID's centroids and residuals) keeps the token rows' order, so
//! the offsets map its hits back to documents.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::{read_array, ArrayData, Bank, BankError, OpenOptions, Overwrite};

/// The offsets file beside a multi-vector bank's token matrix (`X.npy` ->
/// `X.offsets.npy`).
pub fn offsets_path(tokens: &Path) -> PathBuf {
    tokens.with_extension("offsets.npy")
}

/// Whether `path` is the token matrix of a multi-vector bank (its offsets
/// file exists).
pub fn is_multi_vector(path: &Path) -> bool {
    offsets_path(path).is_file()
}

/// Writes the offsets of a multi-vector bank (`documents + 1` values from
/// 0) as an int64 `.npy`, atomically.
pub fn write_offsets(
    path: &Path,
    offsets: &[usize],
    overwrite: Overwrite,
) -> Result<(), BankError> {
    let header = crate::npy::header_bytes(crate::format::Elem::I64, &[offsets.len()]);
    tandem_io::write_atomic(path, overwrite, |w| {
        w.write_all(&header)?;
        for &o in offsets {
            w.write_all(&(o as i64).to_le_bytes())?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A multi-vector bank: token vectors and the documents they belong to.
#[derive(Debug)]
pub struct MultiBank {
    tokens: Bank,
    offsets: Vec<usize>,
    ids: Option<Vec<String>>,
}

impl MultiBank {
    /// Opens the token matrix `path` (memory-mapped where it can be), its
    /// offsets beside it and, when given, the ids file (one line per
    /// document). A dense bank (no offsets file), offsets that do not fit
    /// the matrix and an ids file of another length are refused.
    pub fn open(path: &Path, ids: Option<&Path>) -> Result<MultiBank, BankError> {
        let op = offsets_path(path);
        if !op.is_file() {
            return Err(BankError::invalid(
                path,
                format!(
                    "a dense bank (one vector per document): no {} beside it, so not a multi-vector bank",
                    op.display()
                ),
                "embed the corpus with a ColBERT model (tandem embed --model COLBERT_DIR) to get a multi-vector bank, or search this bank with a dense model",
            ));
        }
        let tokens = Bank::open(path, &OpenOptions::default())?;
        let a = read_array(&op, None)?;
        let bad = |problem: String| {
            BankError::invalid(
                &op,
                problem,
                "rewrite the bank with tandem embed; the offsets belong with the token matrix written with them",
            )
        };
        let values: Vec<i64> = match (a.shape.as_slice(), a.data) {
            ([_], ArrayData::I64(v)) => v,
            (_, d) => {
                return Err(bad(format!(
                    "offsets must be int64 of shape (documents + 1,), found {} {}",
                    d.dtype_name(),
                    crate::format::shape_text(&a.shape)
                )))
            }
        };
        let offsets = check_offsets(&values, tokens.rows()).map_err(bad)?;
        let docs = offsets.len() - 1;
        let ids = match ids {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| BankError::io(p, e))?;
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                if lines.len() != docs {
                    return Err(BankError::invalid(
                        p,
                        format!(
                            "{} ids for {docs} documents of {}",
                            lines.len(),
                            path.display()
                        ),
                        "use the ids file written with the bank",
                    ));
                }
                Some(lines)
            }
            None => None,
        };
        Ok(MultiBank {
            tokens,
            offsets,
            ids,
        })
    }

    /// A bank in memory: the token matrix and `documents + 1` offsets
    /// into its rows (from 0 to the rows, never going back), no ids.
    ///
    /// # Panics
    ///
    /// On offsets that do not fit the matrix.
    pub fn from_parts(tokens: Bank, offsets: Vec<usize>) -> MultiBank {
        let values: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
        let offsets = check_offsets(&values, tokens.rows()).expect("offsets fit the matrix");
        MultiBank {
            tokens,
            offsets,
            ids: None,
        }
    }

    /// The token matrix.
    pub fn tokens(&self) -> &Bank {
        &self.tokens
    }

    /// The token matrix, the offsets and ids dropped.
    pub fn into_tokens(self) -> Bank {
        self.tokens
    }

    /// `documents + 1` offsets into the token rows, from 0.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The number of documents.
    pub fn docs(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The width of the token vectors.
    pub fn dim(&self) -> usize {
        self.tokens.dim()
    }

    /// The token rows of document `doc`.
    pub fn doc_rows(&self, doc: usize) -> Range<usize> {
        self.offsets[doc]..self.offsets[doc + 1]
    }

    /// The document ids, when an ids file was given.
    pub fn ids(&self) -> Option<&[String]> {
        self.ids.as_deref()
    }
}

/// The offsets as indices, when they run from 0 to `rows` without going
/// back.
fn check_offsets(values: &[i64], rows: usize) -> Result<Vec<usize>, String> {
    if values.is_empty() {
        return Err("no offsets: a bank of n documents has n + 1 offsets, from 0".into());
    }
    if values[0] != 0 {
        return Err(format!("the first offset is {}, not 0", values[0]));
    }
    if let Some(i) = values.windows(2).position(|w| w[1] < w[0]) {
        return Err(format!(
            "offset {} ({}) is below offset {i} ({}): offsets never decrease",
            i + 1,
            values[i + 1],
            values[i]
        ));
    }
    let last = *values.last().expect("not empty");
    if last != rows as i64 {
        return Err(format!(
            "the last offset is {last}, but the token matrix has {rows} rows: the offsets do not fit the matrix"
        ));
    }
    Ok(values.iter().map(|&v| v as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_npy, Vectors};

    fn bank(dir: &Path, rows: usize, offsets: &[usize]) -> PathBuf {
        let p = dir.join("b.npy");
        let data = vec![0.5f32; rows * 2];
        write_npy(&p, rows, 2, Vectors::F32(&data), Overwrite::Allow).unwrap();
        write_offsets(&offsets_path(&p), offsets, Overwrite::Allow).unwrap();
        p
    }

    #[test]
    fn opens_and_maps_documents_to_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = bank(dir.path(), 5, &[0, 2, 2, 5]);
        std::fs::write(dir.path().join("ids.txt"), "a\nb\nc\n").unwrap();
        let b = MultiBank::open(&p, Some(&dir.path().join("ids.txt"))).unwrap();
        assert_eq!(b.docs(), 3);
        assert_eq!(b.doc_rows(1), 2..2);
        assert_eq!(b.doc_rows(2), 2..5);
        assert_eq!(b.ids().unwrap()[2], "c");
    }

    #[test]
    fn offsets_that_do_not_fit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = bank(dir.path(), 5, &[0, 2, 7]);
        let e = MultiBank::open(&p, None).unwrap_err().to_string();
        assert!(e.contains("offsets.npy") && e.contains("do not fit"), "{e}");
        let p = bank(dir.path(), 5, &[0, 3, 2, 5]);
        let e = MultiBank::open(&p, None).unwrap_err().to_string();
        assert!(e.contains("never decrease"), "{e}");
    }

    #[test]
    fn a_dense_bank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.npy");
        write_npy(&p, 1, 2, Vectors::F32(&[1.0, 0.0]), Overwrite::Allow).unwrap();
        let e = MultiBank::open(&p, None).unwrap_err().to_string();
        assert!(e.contains("a dense bank"), "{e}");
        assert!(!is_multi_vector(&p));
    }
}
