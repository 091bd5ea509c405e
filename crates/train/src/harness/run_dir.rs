//! The run directory: a fresh start, a resume, or a refusal.

use std::fs;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::{Resume, TrainError};

/// The harness's files of a run that a restart removes (besides the
/// checkpoints and the task's outputs).
const RUN_FILES: [&str; 8] = [
    "metrics.jsonl",
    "tb",
    "config.toml",
    "report.md",
    "loss.svg",
    "lr.svg",
    "recall.svg",
    "crash-report.md",
];

/// Decides between a fresh start and a resume of `cfg.out`; returns the
/// checkpoint to resume from. `outputs` are the task's files, removed with
/// the run's by `--force`.
pub(super) fn prepare(
    cfg: &TrainConfig,
    resume: Resume,
    outputs: &[&str],
) -> Result<Option<checkpoint::Loaded>, TrainError> {
    let dir = &cfg.out;
    let config_path = dir.join("config.toml");
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::Invalid {
            path: dir.clone(),
            problem: "the run directory is a file".into(),
            fix: "pass --out a new or existing run directory".into(),
        });
    }
    // --force deletes tandem's own files of an earlier run, and only when
    // the directory holds one (its config.toml); anything else stays.
    let restarted = resume == Resume::Restart && config_path.is_file();
    if restarted {
        for f in RUN_FILES.iter().chain(outputs) {
            let p = dir.join(f);
            if p.is_dir() {
                fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
            } else if p.exists() {
                fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
        let ck = checkpoint::checkpoints_dir(dir);
        if ck.exists() {
            fs::remove_dir_all(&ck).map_err(|e| TrainError::io(&ck, e))?;
        }
    }
    let existing = if config_path.exists() {
        let text = fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
        Some(TrainConfig::from_toml(&config_path, &text)?)
    } else {
        None
    };
    if existing.is_none()
        && !restarted
        && dir.is_dir()
        && fs::read_dir(dir)
            .map_err(|e| TrainError::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(TrainError::Invalid {
            path: dir.clone(),
            problem: "the directory is not empty and holds no tandem run (no config.toml)".into(),
            fix: "pass --out a new or empty directory".into(),
        });
    }
    if let Some(old) = existing {
        let diff = old.differences(cfg);
        if !diff.is_empty() {
            return Err(TrainError::Invalid {
                path: config_path,
                problem: format!("this run directory holds a run with a different config: {}", diff.join(", ")),
                fix: "rerun with the same settings to resume it, pass a new --out, or add --force to delete that run and start over".into(),
            });
        }
    }
    let mut loaded = if dir.exists() {
        checkpoint::newest_complete(dir)?
    } else {
        None
    };
    // A write killed between its last renames leaves a complete
    // `.tmp-step-N`: put it in place before resuming from it.
    if loaded.as_ref().is_some_and(|l| {
        l.dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
    }) {
        checkpoint::prune(dir, cfg.keep_last)?;
        loaded = checkpoint::newest_complete(dir)?;
    }
    if resume == Resume::Require && loaded.is_none() {
        return Err(TrainError::Checkpoint {
            path: checkpoint::checkpoints_dir(dir),
            problem: "--resume was given but there is no complete checkpoint".into(),
            fix: "drop --resume to start the run".into(),
        });
    }
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    Ok(loaded)
}
