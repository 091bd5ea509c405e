//! The on-disk sequence dataset (see `docs/dataset-format.md`): a directory
//! with `dataset.json`, a bank, an optional `ids.txt`, `sequences.jsonl` and
//! an optional `texts.jsonl`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tandem_bank::{Bank, OpenOptions, Vectors};
use tandem_io::Overwrite;

use crate::texts::{write_texts, Texts, TEXTS_FILE};
use crate::DataError;

/// The `format` field of every `dataset.json`.
pub const FORMAT_NAME: &str = "tandem-sequences";
/// The `version` field this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The context length used when none is given.
pub const DEFAULT_CONTEXT: usize = 8;
/// The manifest file name inside a dataset directory.
pub const MANIFEST_FILE: &str = "dataset.json";
/// The sequences file name inside a dataset directory.
pub const SEQUENCES_FILE: &str = "sequences.jsonl";
/// The bank file name when the dataset holds its own bank.
pub const BANK_FILE: &str = "bank.npy";
/// The ids file name inside a dataset directory.
pub const IDS_FILE: &str = "ids.txt";

/// Which part of the data a sequence belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training sequences.
    Train,
    /// Validation sequences (`"val"`).
    Val,
    /// Held-out test sequences.
    Test,
}

impl Split {
    /// All splits, in the order they are reported.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split of the item with this ordinal (0-based, in file order):
    /// `ordinal % 10 == 0` is test, `== 1` is validation, the rest train.
    pub fn of_ordinal(ordinal: usize) -> Split {
        match ordinal % 10 {
            0 => Split::Test,
            1 => Split::Val,
            _ => Split::Train,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown split name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSplit(pub String);

impl fmt::Display for UnknownSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown split {:?}; use train, val or test", self.0)
    }
}

impl std::error::Error for UnknownSplit {}

impl FromStr for Split {
    type Err = UnknownSplit;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(UnknownSplit(other.to_string())),
        }
    }
}

/// Sequence and example counts of one split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    /// Number of sequences.
    pub sequences: usize,
    /// Number of examples: every row of a sequence but its first is a target.
    pub examples: usize,
}

/// Counts per split, as recorded in `dataset.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Training counts.
    pub train: SplitCounts,
    /// Validation counts.
    pub val: SplitCounts,
    /// Test counts.
    pub test: SplitCounts,
}

impl Splits {
    /// The counts of `sequences`.
    pub fn count(sequences: &[Sequence]) -> Splits {
        let mut s = Splits::default();
        for seq in sequences {
            let c = s.get_mut(seq.split);
            c.sequences += 1;
            c.examples += seq.rows.len().saturating_sub(1);
        }
        s
    }

    /// The counts of one split.
    pub fn get(&self, split: Split) -> SplitCounts {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }

    fn get_mut(&mut self, split: Split) -> &mut SplitCounts {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
            Split::Test => &mut self.test,
        }
    }
}

/// How a dataset was built, so that it can be rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The builder: `from-sentences`, `import-npz` or `synth`.
    pub builder: String,
    /// The command line that built it.
    pub command: String,
    /// The tool and version, e.g. `tandem-data 0.1.0`.
    pub tool: String,
    /// The random seed, for generated datasets.
    pub seed: Option<u64>,
    /// Input files, as given on the command line.
    pub sources: Vec<String>,
    /// Builder-specific parameters.
    pub params: serde_json::Value,
}

/// The contents of `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Dimension of every bank vector.
    pub dim: usize,
    /// Number of bank rows.
    pub rows: usize,
    /// Context length L: an example's context is up to L rows before its target.
    pub context: usize,
    /// Element type of the bank: `float32` or `float16`.
    pub dtype: String,
    /// The bank file: `bank.npy`, or a vector file outside the dataset given
    /// by an absolute path or a path relative to the dataset directory.
    pub bank: String,
    /// The ids file relative to the dataset directory, if any.
    pub ids: Option<String>,
    /// Counts per split.
    pub splits: Splits,
    /// How the dataset was built.
    pub provenance: Provenance,
}

/// One document: bank rows in reading order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sequence {
    /// Unique id (e.g. the document id).
    pub id: String,
    /// The split it belongs to.
    pub split: Split,
    /// Bank rows in order.
    pub rows: Vec<u32>,
}

impl Serialize for Split {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One next-vector example: predict bank row `target` from `context`, the
/// (at most L, at least 1) rows immediately before it in sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example<'a> {
    /// Index of the sequence in [`Dataset::sequences`].
    pub seq: usize,
    /// The bank row to predict.
    pub target: u32,
    /// The context rows, oldest first.
    pub context: &'a [u32],
}

/// The examples of a list of sequences with context length `context`, in
/// sequence order then position order.
pub fn examples_of<'a>(
    sequences: &'a [Sequence],
    split: Split,
    context: usize,
) -> impl Iterator<Item = Example<'a>> + 'a {
    sequences
        .iter()
        .enumerate()
        .filter(move |(_, s)| s.split == split)
        .flat_map(move |(seq, s)| {
            (1..s.rows.len()).map(move |i| Example {
                seq,
                target: s.rows[i],
                context: &s.rows[i.saturating_sub(context)..i],
            })
        })
}

/// A loaded, validated dataset.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    bank: Bank,
    sequences: Vec<Sequence>,
}

impl Dataset {
    /// Open and validate the dataset in `dir`: the manifest, the bank (rows,
    /// dim, dtype), the ids file, and every line of `sequences.jsonl` (known
    /// split, unique id, rows in range, counts matching the manifest).
    pub fn open(dir: &Path) -> Result<Dataset, DataError> {
        let manifest = read_manifest(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let bank_path = dir.join(&manifest.bank);
        let ids = manifest.ids.as_ref().map(|i| dir.join(i));
        let bank =
            Bank::open(&bank_path, &OpenOptions { key: None, ids }).map_err(|e| match &e {
                tandem_bank::BankError::Io { path, .. }
                | tandem_bank::BankError::Invalid { path, .. }
                    if *path == bank_path && manifest.bank != BANK_FILE =>
                {
                    DataError::invalid(
                        &manifest_path,
                        format!(
                            "the dataset refers to the bank file {}, which cannot be opened ({e})",
                            bank_path.display()
                        ),
                        "put that file back, or rebuild the dataset with --copy-bank so that it holds its own bank",
                    )
                }
                _ => DataError::from(e),
            })?;
        let actual = (bank.rows(), bank.dim(), bank.dtype().name());
        if actual != (manifest.rows, manifest.dim, manifest.dtype.as_str()) {
            return Err(DataError::invalid(
                &manifest_path,
                format!(
                    "the manifest describes a {} x {} {} bank, but {} holds {} x {} {}",
                    manifest.rows,
                    manifest.dim,
                    manifest.dtype,
                    bank_path.display(),
                    actual.0,
                    actual.1,
                    actual.2
                ),
                "the bank file was replaced after the dataset was built; rebuild the dataset",
            ));
        }
        let sequences = read_sequences(&dir.join(SEQUENCES_FILE), manifest.rows)?;
        let counted = Splits::count(&sequences);
        if counted != manifest.splits {
            return Err(DataError::invalid(
                &manifest_path,
                format!(
                    "the manifest counts {:?} but {SEQUENCES_FILE} holds {:?}",
                    manifest.splits, counted
                ),
                "the files do not belong together; rebuild the dataset",
            ));
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            bank,
            sequences,
        })
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `dataset.json`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bank every sequence indexes into.
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// All sequences, in file order.
    pub fn sequences(&self) -> &[Sequence] {
        &self.sequences
    }

    /// The context length L.
    pub fn context_len(&self) -> usize {
        self.manifest.context
    }

    /// The examples of one split (see [`examples_of`]).
    pub fn examples(&self, split: Split) -> impl Iterator<Item = Example<'_>> + '_ {
        examples_of(&self.sequences, split, self.manifest.context)
    }

    /// The text of every bank row, from the dataset's `texts.jsonl`, indexed
    /// and checked to hold one line per row; `None` when the dataset has no
    /// such file.
    pub fn texts(&self) -> Result<Option<Texts>, DataError> {
        let path = self.dir.join(TEXTS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Texts::open(&path, self.manifest.rows).map(Some)
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, DataError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return Err(DataError::invalid(
            dir,
            format!("not a tandem dataset (no {MANIFEST_FILE})"),
            "give a directory built by `tandem data from-sentences`, `tandem data import-npz` or `tandem synth`",
        ));
    }
    let text = fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        DataError::at_line(
            &path,
            e.line(),
            format!("invalid manifest: {e}"),
            "rebuild the dataset or fix the JSON",
        )
    })?;
    if manifest.format != FORMAT_NAME || manifest.version != FORMAT_VERSION {
        return Err(DataError::invalid(
            &path,
            format!(
                "format {:?} version {}, expected {FORMAT_NAME:?} version {FORMAT_VERSION}",
                manifest.format, manifest.version
            ),
            "rebuild the dataset with this version of tandem",
        ));
    }
    if manifest.context == 0 {
        return Err(DataError::invalid(
            &path,
            "context is 0",
            "set \"context\" to 1 or more (the default is 8)",
        ));
    }
    if manifest.dim == 0 || manifest.rows == 0 {
        return Err(DataError::invalid(
            &path,
            "the bank has no rows or no dimensions",
            "rebuild the dataset",
        ));
    }
    Ok(manifest)
}

/// One line of `sequences.jsonl`, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceLine {
    id: String,
    split: String,
    rows: Vec<u64>,
}

/// Read and validate a sequences file against a bank of `bank_rows` rows.
pub fn read_sequences(path: &Path, bank_rows: usize) -> Result<Vec<Sequence>, DataError> {
    let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut sequences = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: SequenceLine = serde_json::from_str(&line).map_err(|e| {
            DataError::at_line(
                path,
                n,
                format!("not a sequence: {e}"),
                r#"each line must be {"id": "...", "split": "train|val|test", "rows": [bank rows]}"#,
            )
        })?;
        let split: Split = raw.split.parse().map_err(|e: UnknownSplit| {
            DataError::at_line(path, n, e.to_string(), "fix the split of this sequence")
        })?;
        if raw.rows.is_empty() {
            return Err(DataError::at_line(
                path,
                n,
                format!("sequence {:?} has no rows", raw.id),
                "drop the line",
            ));
        }
        if let Some(&row) = raw.rows.iter().find(|&&r| r >= bank_rows as u64) {
            return Err(DataError::at_line(
                path,
                n,
                format!("sequence {:?} names row {row}, but the bank has {bank_rows} rows (0..{bank_rows})", raw.id),
                "the sequences do not belong to this bank; rebuild the dataset",
            ));
        }
        if let Some(first) = seen.insert(raw.id.clone(), n) {
            return Err(DataError::at_line(
                path,
                n,
                format!("sequence id {:?} was already used on line {first}", raw.id),
                "give every sequence a unique id",
            ));
        }
        sequences.push(Sequence {
            id: raw.id,
            split,
            rows: raw.rows.into_iter().map(|r| r as u32).collect(),
        });
    }
    if sequences.is_empty() {
        return Err(DataError::invalid(
            path,
            "no sequences",
            "a dataset needs at least one sequence",
        ));
    }
    Ok(sequences)
}

/// Where the bank of a dataset being written comes from.
#[derive(Debug, Clone, Copy)]
pub enum BankSource<'a> {
    /// Write these `(rows, dim)` vectors to `bank.npy` inside the dataset.
    Write {
        /// Row-major elements.
        vectors: Vectors<'a>,
        /// Dimension.
        dim: usize,
    },
    /// Refer to an existing vector file: stored as given when absolute, else
    /// relative to the dataset directory.
    Reference(&'a Path),
}

/// Everything [`write_dataset`] needs.
#[derive(Debug, Clone)]
pub struct DatasetParts<'a> {
    /// The bank.
    pub bank: BankSource<'a>,
    /// Number of bank rows (checked against the bank).
    pub rows: usize,
    /// Bank dimension.
    pub dim: usize,
    /// Bank dtype name (`float32` / `float16`).
    pub dtype: &'static str,
    /// One id per bank row, written to `ids.txt`.
    pub ids: Option<&'a [String]>,
    /// One text per bank row, written to `texts.jsonl`.
    pub texts: Option<&'a [String]>,
    /// The sequences.
    pub sequences: &'a [Sequence],
    /// Context length L.
    pub context: usize,
    /// How it was built.
    pub provenance: Provenance,
}

/// Fail early, before any expensive work, when `out` exists and may not be replaced.
pub fn check_output_dir(out: &Path, overwrite: Overwrite) -> Result<(), DataError> {
    if !out.exists() {
        return Ok(());
    }
    let is_empty_dir = out.is_dir()
        && fs::read_dir(out)
            .map_err(|e| DataError::io(out, e))?
            .next()
            .is_none();
    if is_empty_dir {
        return Ok(());
    }
    if !out.join(MANIFEST_FILE).is_file() {
        return Err(DataError::invalid(
            out,
            "exists and is not a tandem dataset directory",
            "choose a new output directory (tandem never deletes a directory it did not write)",
        ));
    }
    if overwrite == Overwrite::Refuse {
        return Err(DataError::invalid(
            out,
            "dataset already exists",
            "choose another --out or pass --force to replace it",
        ));
    }
    Ok(())
}

/// Write a dataset directory atomically: every file goes into a staging
/// directory beside `out`, which is renamed to `out` when complete (an
/// existing dataset at `out` is replaced only with `Overwrite::Allow`).
/// Returns the manifest written.
pub fn write_dataset(
    out: &Path,
    overwrite: Overwrite,
    parts: DatasetParts<'_>,
) -> Result<Manifest, DataError> {
    check_output_dir(out, overwrite)?;
    let name = out
        .file_name()
        .ok_or_else(|| {
            DataError::invalid(
                out,
                "is not a directory name",
                "give --out a directory path",
            )
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| DataError::io(&parent, e))?;
    let stage = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| DataError::io(&stage, e))?;
    }
    fs::create_dir(&stage).map_err(|e| DataError::io(&stage, e))?;
    let result = fill_stage(&stage, out, &parent, &parts).and_then(|m| {
        swap_into_place(&stage, out, &parent, &name)?;
        Ok(m)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    result
}

fn fill_stage(
    stage: &Path,
    out: &Path,
    parent: &Path,
    parts: &DatasetParts<'_>,
) -> Result<Manifest, DataError> {
    if parts.context == 0 {
        return Err(DataError::invalid(
            out,
            "context length 0",
            "pass --context 1 or more",
        ));
    }
    let bank = match parts.bank {
        BankSource::Write { vectors, dim } => {
            tandem_bank::write_npy(
                &stage.join(BANK_FILE),
                parts.rows,
                dim,
                vectors,
                Overwrite::Refuse,
            )?;
            BANK_FILE.to_string()
        }
        BankSource::Reference(path) => reference(path, parent, out)?,
    };
    if let Some(ids) = parts.ids {
        let path = stage.join(IDS_FILE);
        tandem_io::write_atomic(&path, Overwrite::Refuse, |w| {
            ids.iter().try_for_each(|id| writeln!(w, "{id}"))
        })?;
    }
    tandem_io::write_atomic(&stage.join(SEQUENCES_FILE), Overwrite::Refuse, |w| {
        for s in parts.sequences {
            serde_json::to_writer(&mut *w, s)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    if let Some(texts) = parts.texts {
        tandem_io::write_atomic(&stage.join(TEXTS_FILE), Overwrite::Refuse, |w| {
            write_texts(w, texts)
        })?;
    }
    let manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        dim: parts.dim,
        rows: parts.rows,
        context: parts.context,
        dtype: parts.dtype.to_string(),
        bank,
        ids: parts.ids.map(|_| IDS_FILE.to_string()),
        splits: Splits::count(parts.sequences),
        provenance: parts.provenance.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
    json.push(b'\n');
    tandem_io::write_bytes_atomic(&stage.join(MANIFEST_FILE), Overwrite::Refuse, &json)?;
    // Check what was written the way every reader will.
    let staged = Dataset::open(stage)?;
    staged.texts()?;
    Ok(staged.manifest)
}

/// Rename the complete staging directory to `out`, moving an old dataset
/// aside first and deleting it afterwards.
fn swap_into_place(stage: &Path, out: &Path, parent: &Path, name: &str) -> Result<(), DataError> {
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = out.exists();
    if had_old {
        fs::rename(out, &old).map_err(|e| DataError::io(out, e))?;
    }
    if let Err(e) = fs::rename(stage, out) {
        if had_old {
            let _ = fs::rename(&old, out);
        }
        return Err(DataError::io(out, e));
    }
    if had_old {
        fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
    }
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| DataError::io(parent, e))
}

/// How a dataset at `parent/<out name>` records the bank file `path`: as
/// given when absolute (so the dataset can be moved), else relative to the
/// dataset directory.
fn reference(path: &Path, parent: &Path, out: &Path) -> Result<String, DataError> {
    if path.is_absolute() {
        fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        Ok(path.to_string_lossy().into_owned())
    } else {
        relative_to(path, parent, out)
    }
}

/// `target` as a path relative to the directory `parent/<out name>`, with `/` separators.
fn relative_to(target: &Path, parent: &Path, out: &Path) -> Result<String, DataError> {
    let target = fs::canonicalize(target).map_err(|e| DataError::io(target, e))?;
    let base = fs::canonicalize(parent)
        .map_err(|e| DataError::io(parent, e))?
        .join(out.file_name().unwrap_or_default());
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(id: &str, split: Split, rows: &[u32]) -> Sequence {
        Sequence {
            id: id.to_string(),
            split,
            rows: rows.to_vec(),
        }
    }

    #[test]
    fn examples_take_up_to_l_previous_rows() {
        let seqs = vec![
            seq("a", Split::Train, &[5, 6, 7, 8]),
            seq("b", Split::Test, &[1, 2]),
            seq("c", Split::Train, &[9]),
        ];
        let ex: Vec<_> = examples_of(&seqs, Split::Train, 2).collect();
        assert_eq!(ex.len(), 3);
        assert_eq!(
            ex[0],
            Example {
                seq: 0,
                target: 6,
                context: &[5]
            }
        );
        assert_eq!(
            ex[1],
            Example {
                seq: 0,
                target: 7,
                context: &[5, 6]
            }
        );
        assert_eq!(
            ex[2],
            Example {
                seq: 0,
                target: 8,
                context: &[6, 7]
            }
        );
        let test: Vec<_> = examples_of(&seqs, Split::Test, 8).collect();
        assert_eq!(
            test,
            vec![Example {
                seq: 1,
                target: 2,
                context: &[1]
            }]
        );
        let counts = Splits::count(&seqs);
        assert_eq!(
            counts.train,
            SplitCounts {
                sequences: 2,
                examples: 3
            }
        );
        assert_eq!(
            counts.test,
            SplitCounts {
                sequences: 1,
                examples: 1
            }
        );
    }

    #[test]
    fn split_by_ordinal_and_names() {
        assert_eq!(Split::of_ordinal(0), Split::Test);
        assert_eq!(Split::of_ordinal(11), Split::Val);
        assert_eq!(Split::of_ordinal(19), Split::Train);
        for s in Split::ALL {
            assert_eq!(s.name().parse::<Split>().unwrap(), s);
        }
        assert!("dev"
            .parse::<Split>()
            .unwrap_err()
            .to_string()
            .contains("train, val or test"));
    }

    #[test]
    fn relative_paths_climb_out_of_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("v.npy"), b"x").unwrap();
        let rel = relative_to(&data.join("v.npy"), dir.path(), &dir.path().join("ds")).unwrap();
        assert_eq!(rel, "../data/v.npy");
    }

    #[test]
    fn absolute_bank_paths_are_kept_so_the_dataset_can_move() {
        let dir = tempfile::tempdir().unwrap();
        let bank = dir.path().join("v.npy");
        tandem_bank::write_npy(
            &bank,
            2,
            2,
            Vectors::F32(&[1.0, 0.0, 0.0, 1.0]),
            Overwrite::Refuse,
        )
        .unwrap();
        let seqs = vec![seq("a", Split::Train, &[0, 1])];
        let parts = DatasetParts {
            bank: BankSource::Reference(&bank),
            rows: 2,
            dim: 2,
            dtype: "float32",
            ids: None,
            texts: None,
            sequences: &seqs,
            context: 2,
            provenance: Provenance {
                builder: "t".into(),
                command: "t".into(),
                tool: "t".into(),
                seed: None,
                sources: vec![],
                params: serde_json::Value::Null,
            },
        };
        let ds = dir.path().join("ds");
        let m = write_dataset(&ds, Overwrite::Refuse, parts).unwrap();
        assert_eq!(m.bank, bank.to_string_lossy());
        let moved = dir.path().join("sub").join("moved");
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::rename(&ds, &moved).unwrap();
        assert_eq!(Dataset::open(&moved).unwrap().bank().rows(), 2);
        fs::remove_file(&bank).unwrap();
        let e = Dataset::open(&moved).unwrap_err().to_string();
        assert!(
            e.contains(MANIFEST_FILE)
                && e.contains(&format!("refers to the bank file {}", bank.display()))
                && e.contains("--copy-bank"),
            "{e}"
        );
    }

    fn write_lines(lines: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SEQUENCES_FILE);
        fs::write(&p, lines).unwrap();
        (dir, p)
    }

    #[test]
    fn sequence_errors_name_the_line() {
        let cases = [
            ("{\"id\":\"a\",\"split\":\"train\",\"rows\":[0,1]}\n{\"id\":\"b\",\"split\":\"dev\",\"rows\":[0]}\n", ":2:", "unknown split \"dev\""),
            ("{\"id\":\"a\",\"split\":\"train\",\"rows\":[0,10]}\n", ":1:", "names row 10, but the bank has 10 rows"),
            ("{\"id\":\"a\",\"split\":\"train\",\"rows\":[0]}\n{\"id\":\"a\",\"split\":\"test\",\"rows\":[1]}\n", ":2:", "already used on line 1"),
            ("{\"id\":\"a\",\"split\":\"train\",\"rows\":[]}\n", ":1:", "has no rows"),
            ("{\"id\":\"a\",\"split\":\"train\",\"rows\":[-1]}\n", ":1:", "not a sequence"),
            ("\n", "sequences.jsonl:", "no sequences"),
        ];
        for (text, place, what) in cases {
            let (_d, p) = write_lines(text);
            let e = read_sequences(&p, 10).unwrap_err().to_string();
            assert!(
                e.contains(place) && e.contains(what) && e.contains(SEQUENCES_FILE),
                "{e}"
            );
        }
    }
}
