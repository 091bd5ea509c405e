//! tandem-io: the small pieces every tandem crate shares.
//!
//! * [`write_atomic`]: a file appears complete or not at all (temp file in the
//!   same directory, fsync, rename, fsync of the directory), and an existing
//!   file is only replaced when the caller says so.
//! * [`progress`]: one progress-bar style for every long loop (hidden when
//!   stderr is not a terminal, as indicatif does).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

/// What to do when the destination of a write already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse: the user's file is never replaced without being asked.
    Refuse,
    /// Replace the existing file (atomically).
    Allow,
}

impl Overwrite {
    /// `Allow` when the user passed `--force`, else `Refuse`.
    pub fn from_force(force: bool) -> Overwrite {
        if force {
            Overwrite::Allow
        } else {
            Overwrite::Refuse
        }
    }
}

/// What a user can do about an I/O error, by its kind: appended to every
/// file error so that it names the fix, not only the OS's words.
pub fn io_fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "check the path: the file or a folder on the way does not exist",
        io::ErrorKind::PermissionDenied => "check the permissions of the file and its folder",
        io::ErrorKind::IsADirectory => "that is a directory; give the path of a file",
        io::ErrorKind::NotADirectory => {
            "a part of the path is a file, not a folder; check the path"
        }
        io::ErrorKind::StorageFull => "the disk is full; free space or write elsewhere",
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only; write elsewhere",
        _ => "check the path and try again",
    }
}

/// Errors from [`write_atomic`].
#[derive(Debug)]
pub enum WriteError {
    /// The destination exists and `Overwrite::Refuse` was given.
    Exists(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Exists(p) => write!(
                f,
                "{}: file already exists; choose another output path or pass --force to replace it",
                p.display()
            ),
            WriteError::Io(p, e) => write!(f, "{}: {e}; {}", p.display(), io_fix(e)),
        }
    }
}

impl std::error::Error for WriteError {}

/// Write `path` atomically: `fill` writes into a temporary file next to
/// `path`; only when it succeeds is the file fsynced and renamed over `path`
/// (then the directory is fsynced). On any error the temporary file is removed
/// and `path` is untouched.
pub fn write_atomic<F>(path: &Path, overwrite: Overwrite, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    if overwrite == Overwrite::Refuse && path.exists() {
        return Err(WriteError::Exists(path.to_path_buf()));
    }
    let err = |e| WriteError::Io(path.to_path_buf(), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| err(io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is on disk.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// A progress bar over `len` items with tandem's style.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Write a whole byte buffer atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(
    path: &Path,
    overwrite: Overwrite,
    bytes: &[u8],
) -> Result<(), WriteError> {
    write_atomic(path, overwrite, |w| w.write_all(bytes))
}

/// The project's real test data, `shared/data` beside the repository root,
/// found from a crate's `CARGO_MANIFEST_DIR`. `None` (after a note on stderr)
/// when it is absent, as in a user's fresh clone; when the environment sets
/// `TANDEM_REQUIRE_SHARED` (CI does), a missing folder panics so tests that
/// need real data can never pass by skipping.
pub fn shared_data(manifest_dir: &str) -> Option<PathBuf> {
    let found = Path::new(manifest_dir)
        .ancestors()
        .map(|d| d.join("shared").join("data"))
        .find(|d| d.is_dir());
    if found.is_none() {
        assert!(
            std::env::var_os("TANDEM_REQUIRE_SHARED").is_none(),
            "TANDEM_REQUIRE_SHARED is set but no shared/data folder was found above {manifest_dir}"
        );
        eprintln!("skipping: shared/data not found above {manifest_dir} (tests on real data need ../shared)");
    }
    found
}

/// A real model fetched for the tests (`bench/fetch_minilm.sh` puts
/// all-MiniLM-L6-v2 in `target/models/`), found from a crate's
/// `CARGO_MANIFEST_DIR`; `TANDEM_MODELS` names another folder of models.
/// `None` (after a note on stderr) when it is absent; under
/// `TANDEM_REQUIRE_SHARED` (CI) a missing model panics instead.
pub fn real_model(manifest_dir: &str, name: &str) -> Option<PathBuf> {
    let found = match std::env::var_os("TANDEM_MODELS") {
        Some(dir) => Some(PathBuf::from(dir).join(name)).filter(|d| d.is_dir()),
        None => Path::new(manifest_dir)
            .ancestors()
            .map(|d| d.join("target").join("models").join(name))
            .find(|d| d.is_dir()),
    };
    if found.is_none() {
        assert!(
            std::env::var_os("TANDEM_REQUIRE_SHARED").is_none(),
            "TANDEM_REQUIRE_SHARED is set but the model {name} was not found; run bench/fetch_minilm.sh"
        );
        eprintln!("skipping: model {name} not found (run bench/fetch_minilm.sh)");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes_atomic(&p, Overwrite::Refuse, b"one").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        let e = write_bytes_atomic(&p, Overwrite::Refuse, b"two").unwrap_err();
        assert!(matches!(e, WriteError::Exists(_)));
        assert!(e.to_string().contains("--force"));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_bytes_atomic(&p, Overwrite::Allow, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
    }

    #[test]
    fn failed_fill_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.txt");
        let e = write_atomic(&p, Overwrite::Refuse, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(e.is_err());
        assert!(!p.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file removed"
        );
    }
}
