//! Import the `.npz` layout many Python projects use: a context array
//! `(N, L, D)` and targets, either vectors `(N, D)` or integer rows `(N,)`
//! of a bank.
//!
//! Vectors become bank rows by exact match (bit for bit, after float16 ->
//! float32 conversion); with a bank, a vector with no exact match takes the
//! nearest row if its cosine is at least [`MIN_COSINE`]. Without a bank, the
//! bank is built from the unique target vectors (first occurrence order) and
//! every context vector must be one of them. All-zero context vectors are
//! padding and are dropped. Example i becomes the sequence `(context rows...,
//! target row)`, split by `i % 10` (0 test, 1 val, else train).

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use tandem_bank::{
    array_keys, f16, read_array, Array, ArrayData, Bank, Format, OpenOptions, Vectors,
};
use tandem_io::Overwrite;
use tandem_search::{Flat, Index, Metric};

use crate::format::{
    check_output_dir, write_dataset, BankSource, DatasetParts, Manifest, Provenance, Sequence,
    Split,
};
use crate::DataError;

/// The least cosine at which a vector is taken to be a bank row it does not match exactly.
pub const MIN_COSINE: f32 = 0.9999;

/// Options of [`import_npz`].
#[derive(Debug, Clone)]
pub struct ImportOptions<'a> {
    /// The `.npz` file.
    pub file: &'a Path,
    /// An existing bank the vectors or integer targets refer to.
    pub bank: Option<&'a Path>,
    /// The dataset directory to write.
    pub out: &'a Path,
    /// Name of the context array.
    pub context_key: &'a str,
    /// Name of the target array.
    pub target_key: &'a str,
    /// Whether an existing dataset at `out` may be replaced.
    pub overwrite: Overwrite,
    /// The command line, recorded in the provenance.
    pub command: String,
}

/// A float array as float32, or an error naming the array.
fn floats(file: &Path, key: &str, a: Array) -> Result<Vec<f32>, DataError> {
    match a.data {
        ArrayData::F32(v) => Ok(v),
        ArrayData::F16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
        other => Err(DataError::invalid(
            file,
            format!("array {key:?} holds {}, not vectors", other.dtype_name()),
            "store vectors as float32 or float16",
        )),
    }
}

/// Check, before reading any array, that `file` is an `.npz` archive holding
/// arrays named `context_key` and `target_key` (a `.npy` suffix is optional).
fn check_archive(file: &Path, context_key: &str, target_key: &str) -> Result<(), DataError> {
    let expected = "import-npz reads an .npz archive (np.savez(path, context=C, target=T)) holding a context array (N, L, D) and target vectors (N, D) or rows (N,); a .npy of vectors is a bank: pass it with --bank";
    match Format::of(file) {
        Ok(Format::Npz) => {}
        Ok(other) => {
            return Err(DataError::invalid(
                file,
                format!("is a .{other} file, not an .npz archive"),
                expected,
            ))
        }
        Err(_) => {
            return Err(DataError::invalid(
                file,
                "is not an .npz archive (its name does not end in .npz)",
                expected,
            ))
        }
    }
    let keys = array_keys(file)?;
    for (what, key) in [("context", context_key), ("target", target_key)] {
        let key = key.strip_suffix(".npy").unwrap_or(key);
        if !keys.iter().any(|k| k == key) {
            let listing: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
            return Err(DataError::invalid(
                file,
                format!(
                    "has no array named '{key}'; it holds {}",
                    if listing.is_empty() {
                        "no arrays".to_string()
                    } else {
                        listing.join(", ")
                    }
                ),
                format!("name the {what} array with --{what}-key NAME"),
            ));
        }
    }
    Ok(())
}

/// Fail on the first NaN/Inf in array `key`, naming the example (rows of
/// `per_example` numbers) and, for contexts (`dim` given), the vector in it.
fn check_finite(
    file: &Path,
    key: &str,
    v: &[f32],
    per_example: usize,
    dim: Option<usize>,
) -> Result<(), DataError> {
    let Some(at) = v.iter().position(|x| !x.is_finite()) else {
        return Ok(());
    };
    let example = at / per_example;
    let vector = dim.map_or(String::new(), |d| {
        format!(", vector {}", (at % per_example) / d)
    });
    Err(DataError::invalid(
        file,
        format!("array '{key}', example {example}{vector} holds NaN/Inf"),
        "fix or drop that example",
    ))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Maps vectors to bank rows: exact matches first, then (with a bank) nearest rows.
struct RowMap {
    exact: HashMap<Vec<u32>, u32>,
}

impl RowMap {
    fn of_rows(data: &[f32], dim: usize) -> RowMap {
        let mut exact = HashMap::new();
        for (r, v) in data.chunks_exact(dim).enumerate() {
            exact.entry(bits(v)).or_insert(r as u32);
        }
        RowMap { exact }
    }
}

/// Where the bank comes from: an existing file, or the unique target vectors
/// (float32 values; `true` when they were float16).
enum BankPlan<'a> {
    Existing(&'a Path, Bank),
    Built(Vec<f32>, bool),
}

/// The targets: vectors (`true` when float16) or rows.
enum Targets {
    Vectors(Vec<f32>, bool),
    Rows(Vec<i64>),
}

/// Import `opts.file` as a dataset at `opts.out` (see the module docs).
pub fn import_npz(opts: &ImportOptions<'_>) -> Result<Manifest, DataError> {
    check_output_dir(opts.out, opts.overwrite)?;
    let file = opts.file;
    check_archive(file, opts.context_key, opts.target_key)?;
    let ctx = read_array(file, Some(opts.context_key))?;
    let (n, l, dim) = match ctx.shape[..] {
        [n, l, d] if n > 0 && l > 0 && d > 0 => (n, l, d),
        _ => {
            return Err(DataError::invalid(
                file,
                format!(
                    "context array {:?} has shape {}; expected (N, L, D) with N, L, D >= 1",
                    opts.context_key,
                    ctx.shape_text()
                ),
                "pass the right array with --context-key",
            ))
        }
    };
    let ctx = floats(file, opts.context_key, ctx)?;
    check_finite(file, opts.context_key, &ctx, l * dim, Some(dim))?;
    let tgt = read_array(file, Some(opts.target_key))?;
    let shape = tgt.shape_text();
    let targets = match (&tgt.shape[..], tgt.data) {
        (&[tn, td], data) if tn == n && td == dim => {
            let f16 = matches!(data, ArrayData::F16(_));
            let v = floats(file, opts.target_key, Array { shape: vec![tn, td], data })?;
            check_finite(file, opts.target_key, &v, dim, None)?;
            Targets::Vectors(v, f16)
        }
        (&[tn], ArrayData::I64(v)) if tn == n => Targets::Rows(v),
        (&[tn], ArrayData::I32(v)) if tn == n => Targets::Rows(v.into_iter().map(i64::from).collect()),
        _ => {
            return Err(DataError::invalid(
                file,
                format!("target array {:?} has shape {shape}; with contexts ({n}, {l}, {dim}) expected ({n}, {dim}) vectors or ({n},) integer rows", opts.target_key),
                "pass the right array with --target-key",
            ))
        }
    };

    let plan = match (opts.bank, &targets) {
        (Some(path), _) => {
            let bank = Bank::open(path, &OpenOptions::default())?;
            if bank.dim() != dim {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "bank dimension {} differs from the vectors' dimension {dim} in {}",
                        bank.dim(),
                        file.display()
                    ),
                    "pass the bank these vectors were taken from",
                ));
            }
            BankPlan::Existing(path, bank)
        }
        (None, Targets::Vectors(v, is_f16)) => {
            let mut seen = std::collections::HashSet::new();
            let unique: Vec<f32> = v
                .chunks_exact(dim)
                .filter(|t| seen.insert(bits(t)))
                .flatten()
                .copied()
                .collect();
            BankPlan::Built(unique, *is_f16)
        }
        (None, Targets::Rows(_)) => {
            return Err(DataError::invalid(
                file,
                format!(
                    "target array {:?} holds bank rows, but no bank was given",
                    opts.target_key
                ),
                "pass the bank the rows refer to with --bank",
            ))
        }
    };
    let bank_f32: std::borrow::Cow<'_, [f32]> = match &plan {
        BankPlan::Existing(_, bank) => std::borrow::Cow::Owned(bank.to_f32_vec()),
        BankPlan::Built(v, _) => std::borrow::Cow::Borrowed(v),
    };
    let rows = bank_f32.len() / dim;
    let map = RowMap::of_rows(&bank_f32, dim);

    // Context and target vectors -> rows; unmatched ones resolved by nearest search below.
    let mut unmatched: Vec<(usize, usize)> = Vec::new(); // (example, position; l = target)
    let mut seq_rows: Vec<Vec<Option<u32>>> = Vec::with_capacity(n);
    let bar = tandem_io::progress(n as u64, "mapping");
    for i in 0..n {
        bar.inc(1);
        let mut r = Vec::with_capacity(l + 1);
        for j in 0..l {
            let v = &ctx[(i * l + j) * dim..(i * l + j + 1) * dim];
            if v.iter().all(|&x| x == 0.0) {
                continue; // padding
            }
            match map.exact.get(&bits(v)) {
                Some(&row) => r.push(Some(row)),
                None => {
                    unmatched.push((i, r.len()));
                    r.push(None);
                }
            }
        }
        if r.is_empty() {
            return Err(DataError::invalid(
                file,
                format!("example {i}: every context vector is zero (padding)"),
                "drop examples without context",
            ));
        }
        match &targets {
            Targets::Rows(t) => {
                let row = t[i];
                if row < 0 || row as usize >= rows {
                    return Err(DataError::invalid(
                        file,
                        format!("example {i}: target row {row} is outside the bank's {rows} rows"),
                        "the targets do not index this bank; pass the right --bank",
                    ));
                }
                r.push(Some(row as u32));
            }
            Targets::Vectors(t, _) => match map.exact.get(&bits(&t[i * dim..(i + 1) * dim])) {
                Some(&row) => r.push(Some(row)),
                None => {
                    unmatched.push((i, r.len()));
                    r.push(None);
                }
            },
        }
        seq_rows.push(r);
    }
    bar.finish_and_clear();
    if let Some(&(i, j)) = unmatched.first() {
        let BankPlan::Existing(_, bank) = &plan else {
            return Err(DataError::invalid(
                file,
                format!("example {i}: context vector {j} is not one of the target vectors ({} of {} vectors are not)", unmatched.len(), n * l),
                "pass the bank the vectors come from with --bank",
            ));
        };
        resolve_nearest(
            file,
            bank,
            &ctx,
            &targets,
            l,
            dim,
            &unmatched,
            &mut seq_rows,
        )?;
    }

    let sequences: Vec<Sequence> = seq_rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| Sequence {
            id: format!("ex{i}"),
            split: Split::of_ordinal(i),
            rows: r
                .into_iter()
                .map(|x| x.expect("every row resolved"))
                .collect(),
        })
        .collect();
    let provenance = Provenance {
        builder: "import-npz".to_string(),
        command: opts.command.clone(),
        tool: crate::TOOL.to_string(),
        seed: None,
        sources: std::iter::once(file)
            .chain(opts.bank)
            .map(|p| p.display().to_string())
            .collect(),
        params: json!({
            "context_key": opts.context_key, "target_key": opts.target_key, "examples": n,
            "match": format!("exact, else nearest with cosine >= {MIN_COSINE} (with --bank)"),
            "split": "example index % 10: 0 test, 1 val, else train",
        }),
    };
    let built_f16: Vec<f16>;
    let (source, dtype) = match &plan {
        BankPlan::Built(v, true) => {
            built_f16 = v.iter().map(|&x| f16::from_f32(x)).collect();
            (
                BankSource::Write {
                    vectors: Vectors::F16(&built_f16),
                    dim,
                },
                "float16",
            )
        }
        BankPlan::Built(v, false) => (
            BankSource::Write {
                vectors: Vectors::F32(v),
                dim,
            },
            "float32",
        ),
        BankPlan::Existing(path, bank) => (BankSource::Reference(path), bank.dtype().name()),
    };
    let parts = DatasetParts {
        bank: source,
        rows,
        dim,
        dtype,
        ids: None,
        texts: None,
        sequences: &sequences,
        context: l,
        provenance,
    };
    write_dataset(opts.out, opts.overwrite, parts)
}

/// Give every unmatched vector its nearest bank row (cosine), or fail.
#[allow(clippy::too_many_arguments)]
fn resolve_nearest(
    file: &Path,
    bank: &Bank,
    ctx: &[f32],
    targets: &Targets,
    l: usize,
    dim: usize,
    unmatched: &[(usize, usize)],
    seq_rows: &mut [Vec<Option<u32>>],
) -> Result<(), DataError> {
    let index = Flat::new(bank, Metric::Cosine)?;
    let mut queries = Vec::with_capacity(unmatched.len() * dim);
    for &(i, j) in unmatched {
        let is_target = j + 1 == seq_rows[i].len();
        let v = match targets {
            Targets::Vectors(t, _) if is_target => &t[i * dim..(i + 1) * dim],
            _ => {
                // j counts kept (non-padding) context vectors: find the j-th one.
                let pos = (0..l)
                    .filter(|&p| {
                        ctx[(i * l + p) * dim..(i * l + p + 1) * dim]
                            .iter()
                            .any(|&x| x != 0.0)
                    })
                    .nth(j)
                    .expect("j indexes a kept context vector");
                &ctx[(i * l + pos) * dim..(i * l + pos + 1) * dim]
            }
        };
        queries.extend_from_slice(v);
    }
    let hits = index.search(&queries, 1, &[])?;
    for (&(i, j), h) in unmatched.iter().zip(&hits) {
        let (row, cos) = h[0];
        if cos < MIN_COSINE {
            let what = if j + 1 == seq_rows[i].len() {
                "the target".to_string()
            } else {
                format!("context vector {j}")
            };
            return Err(DataError::invalid(
                file,
                format!("example {i}: {what} is in no bank row (nearest: row {row}, cosine {cos:.6} < {MIN_COSINE})"),
                "pass the bank these vectors were taken from",
            ));
        }
        seq_rows[i][j] = Some(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::{Dataset, Split};

    /// `.npy` bytes (version 1.0) of a little-endian array.
    fn npy(descr: &str, shape: &[usize], data: Vec<u8>) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Vec<u8> {
        npy(
            "<f4",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    /// An `.npz` (stored members, as `np.savez` writes) of float32 contexts
    /// `(n, 2, 3)`, and float32 target vectors `(n, 3)` or int64 target rows.
    fn npz(
        dir: &Path,
        name: &str,
        context: &[f32],
        targets: Result<&[f32], &[i64]>,
    ) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let n = context.len() / 6;
        let target = match targets {
            Ok(v) => f32s(&[n, 3], v),
            Err(rows) => npy(
                "<i8",
                &[rows.len()],
                rows.iter().flat_map(|r| r.to_le_bytes()).collect(),
            ),
        };
        for (key, bytes) in [("context", f32s(&[n, 2, 3], context)), ("target", target)] {
            zip.start_file(format!("{key}.npy"), opts).unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    use std::fs;

    /// A bank of 6 distinct 3-D rows, and examples (context rows, target row).
    fn bank() -> Vec<f32> {
        (0..18).map(|x| ((x * 5) % 7) as f32 - 2.5).collect()
    }
    const EXAMPLES: [([usize; 2], usize); 3] = [([0, 1], 2), ([3, 4], 5), ([1, 2], 3)];

    fn gather(bank: &[f32], rows: &[usize]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| bank[r * 3..r * 3 + 3].to_vec())
            .collect()
    }

    fn options<'a>(file: &'a Path, bank: Option<&'a Path>, out: &'a Path) -> ImportOptions<'a> {
        ImportOptions {
            file,
            bank,
            out,
            context_key: "context",
            target_key: "target",
            overwrite: Overwrite::Refuse,
            command: "t".into(),
        }
    }

    #[test]
    fn imports_vectors_rows_and_near_matches() {
        let dir = tempfile::tempdir().unwrap();
        let b = bank();
        let bank_path = dir.path().join("bank.npy");
        tandem_bank::write_npy(&bank_path, 6, 3, Vectors::F32(&b), Overwrite::Refuse).unwrap();
        let ctx = gather(
            &b,
            &EXAMPLES
                .iter()
                .flat_map(|(c, _)| c.to_vec())
                .collect::<Vec<_>>(),
        );
        let tgt = gather(&b, &EXAMPLES.iter().map(|(_, t)| *t).collect::<Vec<_>>());
        let want: Vec<Vec<u32>> = EXAMPLES
            .iter()
            .map(|(c, t)| vec![c[0] as u32, c[1] as u32, *t as u32])
            .collect();

        let vec_file = npz(dir.path(), "v.npz", &ctx, Ok(&tgt));
        let out = dir.path().join("d1");
        import_npz(&options(&vec_file, Some(&bank_path), &out)).unwrap();
        let ds = Dataset::open(&out).unwrap();
        assert_eq!(
            ds.sequences()
                .iter()
                .map(|s| s.rows.clone())
                .collect::<Vec<_>>(),
            want
        );
        assert_eq!(ds.sequences()[0].split, Split::Test);
        assert_eq!(ds.sequences()[1].split, Split::Val);
        assert_eq!(ds.context_len(), 2);
        assert_eq!(ds.manifest().bank, bank_path.to_string_lossy());

        let rows_file = npz(dir.path(), "r.npz", &ctx, Err(&[2, 5, 3]));
        let out = dir.path().join("d2");
        import_npz(&options(&rows_file, Some(&bank_path), &out)).unwrap();
        assert_eq!(Dataset::open(&out).unwrap().sequences()[1].rows, want[1]);

        // Slightly perturbed vectors find their rows by cosine.
        let near: Vec<f32> = ctx.iter().map(|x| x * 1.0001 + 1e-5).collect();
        let near_file = npz(dir.path(), "n.npz", &near, Ok(&tgt));
        let out = dir.path().join("d3");
        import_npz(&options(&near_file, Some(&bank_path), &out)).unwrap();
        assert_eq!(Dataset::open(&out).unwrap().sequences()[2].rows, want[2]);

        // Without a bank, the bank is the unique targets (rows 2, 5, 3), and
        // contexts must be among them: example 0's context (rows 0, 1) is not.
        let e = import_npz(&options(&vec_file, None, &dir.path().join("d4")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v.npz") && e.contains("example 0") && e.contains("--bank"),
            "{e}"
        );
        assert!(!dir.path().join("d4").exists());
        let self_ctx = gather(&b, &[2, 2, 5, 3, 3, 5]);
        let self_file = npz(dir.path(), "s.npz", &self_ctx, Ok(&tgt));
        let out = dir.path().join("d5");
        import_npz(&options(&self_file, None, &out)).unwrap();
        let ds = Dataset::open(&out).unwrap();
        assert_eq!(ds.bank().rows(), 3);
        assert_eq!(ds.sequences()[1].rows, vec![1, 2, 1]);
    }

    #[test]
    fn checks_the_archive_its_keys_and_finiteness_first() {
        let dir = tempfile::tempdir().unwrap();
        let b = bank();
        let bank_path = dir.path().join("bank.npy");
        tandem_bank::write_npy(&bank_path, 6, 3, Vectors::F32(&b), Overwrite::Refuse).unwrap();
        let out = dir.path().join("o");
        let err = |file: &Path| {
            import_npz(&options(file, Some(&bank_path), &out))
                .unwrap_err()
                .to_string()
        };

        let mut ctx = gather(&b, &[0, 1, 3, 4, 1, 2]);
        ctx[(2 + 1) * 3 + 1] = f32::NAN; // example 1, vector 1
        let e = err(&npz(dir.path(), "nan.npz", &ctx, Err(&[2, 5, 3])));
        assert!(
            e.contains("nan.npz")
                && e.contains("array 'context', example 1, vector 1 holds NaN/Inf")
                && e.contains("fix or drop that example"),
            "{e}"
        );
        let ctx = gather(&b, &[0, 1, 3, 4, 1, 2]);
        let mut tgt = gather(&b, &[2, 5, 3]);
        tgt[7] = f32::INFINITY;
        let e = err(&npz(dir.path(), "inf.npz", &ctx, Ok(&tgt)));
        assert!(e.contains("array 'target', example 2 holds NaN/Inf"), "{e}");

        let names = dir.path().join("names.npz");
        let mut zip = zip::ZipWriter::new(fs::File::create(&names).unwrap());
        for key in ["x", "y"] {
            zip.start_file(
                format!("{key}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(&f32s(&[6, 3], &b)).unwrap();
        }
        zip.finish().unwrap();
        let e = err(&names);
        assert!(
            e.contains("names.npz: has no array named 'context'; it holds 'x', 'y'")
                && e.contains("--context-key")
                && !e.contains("--key "),
            "{e}"
        );
        let mut o = options(&names, Some(&bank_path), &out);
        o.context_key = "x";
        let e = import_npz(&o).unwrap_err().to_string();
        assert!(e.contains("'target'") && e.contains("--target-key"), "{e}");

        let e = err(&bank_path);
        assert!(
            e.contains("bank.npy: is a .npy file, not an .npz archive")
                && e.contains("context array (N, L, D)"),
            "{e}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let dir = tempfile::tempdir().unwrap();
        let b = bank();
        let bank_path = dir.path().join("bank.npy");
        tandem_bank::write_npy(&bank_path, 6, 3, Vectors::F32(&b), Overwrite::Refuse).unwrap();
        let ctx = gather(&b, &[0, 1, 3, 4, 1, 2]);
        let far: Vec<f32> = ctx
            .iter()
            .enumerate()
            .map(|(i, x)| if i == 7 { -x } else { *x })
            .collect();
        let far_file = npz(dir.path(), "f.npz", &far, Err(&[2, 5, 3]));
        let e = import_npz(&options(&far_file, Some(&bank_path), &dir.path().join("o")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("example 1: context vector 0 is in no bank row"),
            "{e}"
        );
        let bad_rows = npz(dir.path(), "b.npz", &ctx, Err(&[2, 6, 3]));
        let e = import_npz(&options(&bad_rows, Some(&bank_path), &dir.path().join("o")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target row 6 is outside the bank's 6 rows"),
            "{e}"
        );
        let e = import_npz(&options(&bad_rows, None, &dir.path().join("o")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bank was given"), "{e}");
        let flat = dir.path().join("x.npz");
        let mut zip = zip::ZipWriter::new(fs::File::create(&flat).unwrap());
        for key in ["context", "target"] {
            zip.start_file(
                format!("{key}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(&f32s(&[6, 3], &ctx)).unwrap();
        }
        zip.finish().unwrap();
        let e = import_npz(&options(&flat, Some(&bank_path), &dir.path().join("o")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected (N, L, D)"), "{e}");
        assert!(!dir.path().join("o").exists());
    }
}
