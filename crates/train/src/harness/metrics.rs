//! `metrics.jsonl`: one JSON object per line (see [`crate::report`] for the
//! kinds), cut back on resume to what the checkpoint accounts for.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::Scores;
use crate::TrainError;

/// The open `metrics.jsonl`; each line is written and flushed on its own.
pub(super) struct Metrics {
    file: File,
    path: PathBuf,
    /// The last line written.
    pub(super) last: String,
}

impl Metrics {
    pub(super) fn open(path: &Path) -> Result<Metrics, TrainError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Metrics {
            file,
            path: path.to_path_buf(),
            last: String::new(),
        })
    }

    pub(super) fn write(&mut self, v: Value) -> Result<(), TrainError> {
        let line = v.to_string();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.last = line;
        Ok(())
    }

    /// An `event` line.
    pub(super) fn event(&mut self, step: u64, message: &str) -> Result<(), TrainError> {
        self.write(json!({"kind": "event", "step": step, "message": message}))
    }

    /// A `baseline` line per baseline of `split`.
    pub(super) fn baselines(
        &mut self,
        split: &str,
        baselines: &[(String, Scores)],
        step: u64,
    ) -> Result<(), TrainError> {
        for (name, scores) in baselines {
            let mut m = scores_map(scores);
            m.insert("kind".into(), json!("baseline"));
            m.insert("split".into(), json!(split));
            m.insert("query".into(), json!(name));
            m.insert("step".into(), json!(step));
            self.write(Value::Object(m))?;
        }
        Ok(())
    }
}

/// `scores` as the keys of a line.
pub(super) fn scores_map(scores: &Scores) -> Map<String, Value> {
    scores.iter().map(|(n, v)| (n.clone(), json!(v))).collect()
}

/// Keeps the lines of `metrics.jsonl` that the checkpoint of `step`
/// accounts for; the rest is written again by the resumed run.
pub(super) fn truncate(path: &Path, step: u64, pending: bool) -> Result<(), TrainError> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue; // a line cut by a crash
        };
        let s = v.get("step").and_then(Value::as_u64).unwrap_or(0);
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        // Lines of `step` itself: train lines and events stay; its
        // validation stays unless it is redone (pending); test-split lines
        // are rewritten when the run finishes.
        let keep_at_step = match kind {
            "train" | "event" => true,
            "val" => !pending,
            _ => false,
        };
        if s < step || (s == step && keep_at_step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    tandem_io::write_bytes_atomic(path, tandem_io::Overwrite::Allow, kept.as_bytes())?;
    Ok(())
}

/// The validation baselines of `metric` recorded in `metrics.jsonl`, as
/// `mean 0.5614, last 0.4698`.
pub(super) fn val_reference(metrics: &Path, metric: &str) -> String {
    let text = fs::read_to_string(metrics).unwrap_or_default();
    let parts: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "baseline" && v["split"] == "val")
        .filter_map(|v| {
            Some(format!(
                "{} {:.4}",
                v["query"].as_str()?,
                v[metric].as_f64()?
            ))
        })
        .collect();
    if parts.is_empty() {
        "none recorded".into()
    } else {
        parts.join(", ")
    }
}
