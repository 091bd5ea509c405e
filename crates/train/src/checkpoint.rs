//! Crash-only checkpoints.
//!
//! A run directory holds `checkpoints/`, with one directory per checkpoint
//! named `step-{:09}` after the global optimizer step:
//!
//! ```text
//! checkpoints/
//!   step-000000500/  model.safetensors optimizer.safetensors state.json config.toml MANIFEST
//!   step-000001000/  ...
//!   latest           "step-000001000" (a hint)
//!   best             "step-000000500"
//! ```
//!
//! How a checkpoint is written ([`write_checkpoint`]):
//!
//! 1. everything goes into `checkpoints/.tmp-step-N/` (a stale one from an
//!    interrupted write is removed first); each file is written to a temp
//!    name, fsynced, renamed, and the directory fsynced;
//! 2. `MANIFEST` (format version, step, and each file's name, size and
//!    SHA-256) is written last, the same way: it is the commit mark;
//! 3. the directory is renamed to `step-N` and `checkpoints/` fsynced. When
//!    `step-N` already exists (a resumed run re-reaching a step), it is first
//!    renamed aside to `.old-step-N` and removed after the new one is in;
//! 4. the `latest` pointer is replaced atomically.
//!
//! A checkpoint is complete exactly when its `MANIFEST` verifies: every file
//! listed is there with its size and hash. [`newest_complete`] takes the
//! highest-step complete one, and also accepts a `.tmp-step-N` whose
//! MANIFEST verifies: a crash between steps 3's two renames leaves the new
//! data only there. So at every instant the newest data that finished step 2
//! can be found, whatever is killed when.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_io::{write_bytes_atomic, Overwrite};

use crate::error::TrainError;

/// Version written into every `MANIFEST`.
pub const MANIFEST_FORMAT: u32 = 1;

/// Name of the commit-mark file in each checkpoint directory.
pub const MANIFEST: &str = "MANIFEST";

/// The pointer files in `checkpoints/`: each holds a directory name.
const POINTERS: [&str; 2] = ["latest", "best"];

/// One file of a checkpoint to write.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointFile<'a> {
    /// File name inside the checkpoint directory (no path separators).
    pub name: &'a str,
    /// Its whole content.
    pub bytes: &'a [u8],
}

/// A verified checkpoint, its files read into memory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Global optimizer step.
    pub step: u64,
    files: Vec<(String, Vec<u8>)>,
}

impl Loaded {
    /// The content of file `name`; an error naming the checkpoint when the
    /// checkpoint has no such file.
    pub fn file(&self, name: &str) -> Result<&[u8], TrainError> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| TrainError::Checkpoint {
                path: self.dir.clone(),
                problem: format!(
                    "the checkpoint has no file {name:?} (it holds {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
                fix: "resume from a checkpoint written by the same version of tandem, or start a new run".into(),
            })
    }

    /// The names of the checkpoint's files, in MANIFEST order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(n, _)| n.as_str())
    }
}

/// The `MANIFEST` file.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    step: u64,
    files: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    name: String,
    size: u64,
    sha256: String,
}

/// `checkpoints/` of a run directory.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The directory name of the checkpoint of `step`: `step-000000120`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

/// The step of a `step-N` directory name.
fn parse_step_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file name that stays inside the checkpoint directory and is not ours.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name == MANIFEST
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.contains('\0')
    {
        return Err(format!(
            "invalid checkpoint file name {name:?}: names must be non-empty, not start with '.', hold no path separator and not be {MANIFEST}"
        ));
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), TrainError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(dir, e))
}

fn remove_dir_if_exists(dir: &Path) -> Result<bool, TrainError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TrainError::io(dir, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), TrainError> {
    fs::rename(from, to).map_err(|e| TrainError::io(to, e))
}

/// Where `ckdir/step-N` goes while it is replaced or removed: `.old-step-N`.
fn aside(ckdir: &Path, dir: &Path) -> PathBuf {
    let name = dir.file_name().expect("a step directory has a name");
    ckdir.join(format!(".old-{}", name.to_string_lossy()))
}

/// Move the complete checkpoint `tmp` to `dir` (both in `ckdir`), replacing
/// an existing `dir` by renaming it aside first, and make it durable.
fn install(ckdir: &Path, tmp: &Path, dir: &Path) -> Result<(), TrainError> {
    let old = aside(ckdir, dir);
    let replacing = dir.exists();
    if replacing {
        remove_dir_if_exists(&old)?;
        rename(dir, &old)?;
    }
    rename(tmp, dir)?;
    fsync_dir(ckdir)?;
    if replacing {
        remove_dir_if_exists(&old)?;
    }
    Ok(())
}

/// Remove the checkpoint `dir` so that a kill midway leaves no partial
/// `step-N`: rename it to `.old-step-N` first (the next prune finishes it).
fn remove_checkpoint(ckdir: &Path, dir: &Path) -> Result<(), TrainError> {
    let old = aside(ckdir, dir);
    remove_dir_if_exists(&old)?;
    rename(dir, &old)?;
    remove_dir_if_exists(&old)?;
    Ok(())
}

/// Write the checkpoint of `step` into `run_dir/checkpoints/step-N` (see the
/// module documentation for the protocol) and point `latest` at it. Returns
/// the checkpoint directory. Replaces an existing checkpoint of the same step.
pub fn write_checkpoint(
    run_dir: &Path,
    step: u64,
    files: &[CheckpointFile],
) -> Result<PathBuf, TrainError> {
    let ckdir = checkpoints_dir(run_dir);
    let name = step_dir_name(step);
    let dir = ckdir.join(&name);
    for (i, f) in files.iter().enumerate() {
        let duplicate = files[..i].iter().any(|g| g.name == f.name);
        let problem = check_name(f.name)
            .err()
            .or_else(|| duplicate.then(|| format!("file name {:?} is given twice", f.name)));
        if let Some(problem) = problem {
            return Err(TrainError::Checkpoint {
                path: dir,
                problem,
                fix: "this is a bug in the caller: give each checkpoint file a distinct plain name"
                    .into(),
            });
        }
    }
    if !ckdir.is_dir() {
        fs::create_dir_all(&ckdir).map_err(|e| TrainError::io(&ckdir, e))?;
        fsync_dir(run_dir)?;
    }
    let tmp = ckdir.join(format!(".tmp-{name}"));
    remove_dir_if_exists(&tmp)?;
    fs::create_dir(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        step,
        files: Vec::with_capacity(files.len()),
    };
    for f in files {
        write_bytes_atomic(&tmp.join(f.name), Overwrite::Refuse, f.bytes)?;
        manifest.files.push(ManifestEntry {
            name: f.name.to_string(),
            size: f.bytes.len() as u64,
            sha256: sha256_hex(f.bytes),
        });
    }
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    write_bytes_atomic(&tmp.join(MANIFEST), Overwrite::Refuse, &json)?;
    install(&ckdir, &tmp, &dir)?;
    write_bytes_atomic(&ckdir.join(POINTERS[0]), Overwrite::Allow, name.as_bytes())?;
    Ok(dir)
}

/// How much of a checkpoint to verify.
#[derive(Clone, Copy, PartialEq)]
enum Verify {
    /// Sizes only (metadata): enough to tell an interrupted write.
    Sizes,
    /// Read every file and check its hash.
    Hashes,
}

/// Read and check `dir`'s MANIFEST and files; the reason why not on failure.
fn verify(dir: &Path, step: u64, how: Verify) -> Result<Vec<(String, Vec<u8>)>, String> {
    let text = match fs::read(dir.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!("no {MANIFEST} (an interrupted write)"))
        }
        Err(e) => return Err(format!("cannot read {MANIFEST}: {e}")),
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{MANIFEST} is not a valid manifest: {e}"))?;
    if m.format != MANIFEST_FORMAT {
        return Err(format!(
            "{MANIFEST} format {} is not the supported format {MANIFEST_FORMAT}",
            m.format
        ));
    }
    if m.step != step {
        return Err(format!(
            "{MANIFEST} says step {} but the directory is for step {step}",
            m.step
        ));
    }
    let mut files = Vec::with_capacity(m.files.len());
    for entry in m.files {
        check_name(&entry.name).map_err(|p| format!("{MANIFEST}: {p}"))?;
        let path = dir.join(&entry.name);
        let size = match how {
            Verify::Sizes => fs::metadata(&path).map(|md| md.len()),
            Verify::Hashes => fs::read(&path).map(|bytes| {
                let len = bytes.len() as u64;
                files.push((entry.name.clone(), bytes));
                len
            }),
        };
        let size = size.map_err(|e| match e.kind() {
            ErrorKind::NotFound => format!("file {} listed in {MANIFEST} is missing", entry.name),
            _ => format!("cannot read {}: {e}", entry.name),
        })?;
        if size != entry.size {
            return Err(format!(
                "file {} has {size} bytes but {MANIFEST} says {} (truncated or overwritten)",
                entry.name, entry.size
            ));
        }
        if how == Verify::Hashes {
            let (_, bytes) = files.last().expect("pushed above");
            if sha256_hex(bytes) != entry.sha256 {
                return Err(format!(
                    "file {} does not match its SHA-256 in {MANIFEST} (corrupted)",
                    entry.name
                ));
            }
        }
    }
    Ok(files)
}

/// A checkpoint directory found in `checkpoints/`.
struct Candidate {
    dir: PathBuf,
    step: u64,
    /// A `.tmp-step-N` (complete only if its MANIFEST verifies).
    tmp: bool,
}

/// The `step-N` and `.tmp-step-N` directories, newest first; for one step
/// the `.tmp-` one (written later) comes first.
fn candidates(ckdir: &Path) -> Result<Vec<Candidate>, TrainError> {
    let entries = match fs::read_dir(ckdir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(ckdir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(ckdir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (tmp, step) = match name.strip_prefix(".tmp-") {
            Some(rest) => (true, parse_step_name(rest)),
            None => (false, parse_step_name(name)),
        };
        if let Some(step) = step {
            if entry.path().is_dir() {
                found.push(Candidate {
                    dir: entry.path(),
                    step,
                    tmp,
                });
            }
        }
    }
    found.sort_by(|a, b| b.step.cmp(&a.step).then(b.tmp.cmp(&a.tmp)));
    Ok(found)
}

/// The highest-step complete checkpoint of `run_dir`, every file verified
/// against its size and SHA-256; `None` when there is none. The `latest`
/// pointer is not trusted: directories are scanned. A `step-N` directory
/// that does not verify is skipped with a warning on stderr naming it.
pub fn newest_complete(run_dir: &Path) -> Result<Option<Loaded>, TrainError> {
    for c in candidates(&checkpoints_dir(run_dir))? {
        match verify(&c.dir, c.step, Verify::Hashes) {
            Ok(files) => {
                return Ok(Some(Loaded {
                    dir: c.dir,
                    step: c.step,
                    files,
                }))
            }
            // An unfinished `.tmp-` directory is an interrupted write: expected.
            Err(_) if c.tmp => {}
            Err(reason) => eprintln!(
                "warning: {}: skipping checkpoint: {reason}; looking for an older complete one",
                c.dir.display()
            ),
        }
    }
    Ok(None)
}

/// The checkpoint in `dir` (a `step-N` directory), every file verified
/// against the MANIFEST's sizes and SHA-256.
pub fn load_dir(dir: &Path) -> Result<Loaded, TrainError> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let step = parse_step_name(name).ok_or_else(|| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        problem: "not a checkpoint directory (its name is not step-N)".into(),
        fix: "pass <run>/checkpoints/step-N or the run directory".into(),
    })?;
    let files = verify(dir, step, Verify::Hashes).map_err(|reason| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        problem: reason,
        fix: "use another checkpoint of the run (pass the run directory to take its best or newest complete one)".into(),
    })?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        step,
        files,
    })
}

/// Point `checkpoints/best` at the checkpoint of `step` (atomically).
pub fn mark_best(run_dir: &Path, step: u64) -> Result<(), TrainError> {
    let ckdir = checkpoints_dir(run_dir);
    let name = step_dir_name(step);
    if !ckdir.join(&name).is_dir() {
        return Err(TrainError::Checkpoint {
            path: ckdir.join(&name),
            problem: format!(
                "cannot mark step {step} as best: there is no checkpoint of that step"
            ),
            fix: "write the checkpoint first, then mark it".into(),
        });
    }
    write_bytes_atomic(&ckdir.join(POINTERS[1]), Overwrite::Allow, name.as_bytes())?;
    Ok(())
}

/// The step `checkpoints/best` points to, if any.
pub fn best_step(run_dir: &Path) -> Result<Option<u64>, TrainError> {
    let path = checkpoints_dir(run_dir).join(POINTERS[1]);
    match fs::read_to_string(&path) {
        Ok(text) => parse_step_name(text.trim())
            .map(Some)
            .ok_or_else(|| TrainError::Invalid {
                path,
                problem: format!(
                    "holds {:?}, not a checkpoint name like step-000000120",
                    text.trim()
                ),
                fix: "delete the file (no best checkpoint) or mark the best step again".into(),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// Delete every complete checkpoint except the newest `keep_last` and the
/// one `best` points to, and the leftovers of interrupted writes
/// (`.tmp-step-N` that are not complete, `.old-step-N`, temp files of
/// pointer updates). A complete
/// `.tmp-step-N` (a write killed between its final renames) is first moved
/// into place as `step-N`. Completeness here is checked from the MANIFEST and
/// file sizes only (no hashing). Directories named `step-N` that are not
/// complete are left for inspection. Call it only while no checkpoint is
/// being written. Returns what was removed.
pub fn prune(run_dir: &Path, keep_last: usize) -> Result<Vec<PathBuf>, TrainError> {
    let ckdir = checkpoints_dir(run_dir);
    if keep_last == 0 {
        return Err(TrainError::Checkpoint {
            path: ckdir,
            problem: "prune was asked to keep 0 checkpoints".into(),
            fix: "keep at least 1: a resume starts from the newest checkpoint".into(),
        });
    }
    if !ckdir.is_dir() {
        return Ok(Vec::new());
    }
    let best = best_step(run_dir)?;
    let mut removed = Vec::new();
    let mut promoted: Vec<u64> = Vec::new();
    let mut kept = 0;
    for c in candidates(&ckdir)? {
        let complete = verify(&c.dir, c.step, Verify::Sizes).is_ok();
        let dir = if c.tmp {
            if !complete {
                if remove_dir_if_exists(&c.dir)? {
                    removed.push(c.dir);
                }
                continue;
            }
            let dir = ckdir.join(step_dir_name(c.step));
            install(&ckdir, &c.dir, &dir)?;
            promoted.push(c.step);
            dir
        } else if promoted.contains(&c.step) || !complete {
            // Replaced by the promoted copy, or left for inspection.
            continue;
        } else {
            c.dir
        };
        if kept < keep_last {
            kept += 1;
            continue;
        }
        if best == Some(c.step) {
            continue;
        }
        remove_checkpoint(&ckdir, &dir)?;
        removed.push(dir);
    }
    let entries = fs::read_dir(&ckdir).map_err(|e| TrainError::io(&ckdir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(&ckdir, e))?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if name
            .strip_prefix(".old-")
            .is_some_and(|rest| parse_step_name(rest).is_some())
        {
            if remove_dir_if_exists(&entry.path())? {
                removed.push(entry.path());
            }
        } else if POINTERS
            .iter()
            .any(|p| name.starts_with(&format!(".{p}.tmp-")))
        {
            // A pointer update killed before its rename (tandem_io's temp name).
            match fs::remove_file(entry.path()) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(TrainError::io(entry.path(), e))
                }
                _ => removed.push(entry.path()),
            }
        }
    }
    if !removed.is_empty() {
        fsync_dir(&ckdir)?;
    }
    Ok(removed)
}
