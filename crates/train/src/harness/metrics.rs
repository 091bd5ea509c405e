//! `metrics.jsonl`: one JSON object per line (see [`crate::report`] for the
//! kinds), cut back on resume to what the checkpoint accounts for; the
//! numbers of its `train`, `val` and `test` lines also go to a TensorBoard
//! event file in `tb/` ([`super::tensorboard`]).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::tensorboard::EventFile;
use super::Scores;
use crate::report::NOT_MEASURES;
use crate::TrainError;

/// The open `metrics.jsonl` and event file; each line is written and
/// flushed on its own.
pub(super) struct Metrics {
    file: File,
    path: PathBuf,
    events: EventFile,
    /// The last line written.
    pub(super) last: String,
}

impl Metrics {
    /// Opens `path` (a run directory's `metrics.jsonl`, already cut back to
    /// `step`) for appending, and a new event file that takes over from
    /// `step`: the lines of `step` that stay are written to it again.
    pub(super) fn open(path: &Path, step: u64) -> Result<Metrics, TrainError> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        let mut events = EventFile::create(&path.with_file_name("tb"), step)?;
        for line in BufReader::new(&file).lines() {
            let line = line.map_err(|e| TrainError::io(path, e))?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("step").and_then(Value::as_u64) >= Some(step) {
                    mirror(&mut events, &v)?;
                }
            }
        }
        Ok(Metrics {
            file,
            path: path.to_path_buf(),
            events,
            last: String::new(),
        })
    }

    pub(super) fn write(&mut self, v: Value) -> Result<(), TrainError> {
        let line = v.to_string();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.last = line;
        mirror(&mut self.events, &v)
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

/// The numbers of a `train`, `val` or `test` line as scalars `kind/key` at
/// its step (a train line's every number but the step, an evaluation's
/// measures); other lines have none.
fn mirror(events: &mut EventFile, v: &Value) -> Result<(), TrainError> {
    let (Some(kind), Some(step), Some(obj)) = (
        v.get("kind").and_then(Value::as_str),
        v.get("step").and_then(Value::as_u64),
        v.as_object(),
    ) else {
        return Ok(());
    };
    let skip: &[&str] = match kind {
        "train" => &["step"],
        "val" | "test" => &NOT_MEASURES,
        _ => return Ok(()),
    };
    let scalars: Vec<(String, f32)> = obj
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, x)| Some((format!("{kind}/{k}"), x.as_f64()? as f32)))
        .collect();
    events.scalars(step, &scalars)
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

#[cfg(test)]
mod tests {
    use super::super::tensorboard::tests::{files, read};
    use super::*;

    #[test]
    fn numbers_go_to_the_event_file_from_the_step_it_opens_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        // What a resume from step 20 keeps.
        let kept = [
            r#"{"kind":"train","step":10,"loss":1.0}"#,
            r#"{"kind":"train","step":20,"epoch":0,"loss":0.5,"lr":0.25}"#,
            r#"{"kind":"event","step":20,"message":"resumed"}"#,
        ];
        fs::write(&path, kept.join("\n") + "\n").unwrap();
        let mut m = Metrics::open(&path, 20).unwrap();
        m.write(json!({"kind": "val", "step": 20, "epoch": 0, "recall@10": 0.75}))
            .unwrap();
        m.event(20, "stop").unwrap();
        m.baselines("test", &[("mean".into(), vec![("mrr@10".into(), 0.5)])], 30)
            .unwrap();
        m.write(json!({"kind": "test", "step": 30, "model_step": 20, "mrr@10": 0.125}))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 7);
        let tb = files(&dir.path().join("tb"));
        assert_eq!(tb.len(), 1);
        let got: Vec<_> = read(&tb[0])
            .into_iter()
            .skip(1) // the file version
            .map(|e| (e.step, e.session_status, e.scalars))
            .collect();
        let s = |pairs: &[(&str, f32)]| -> Vec<(String, f32)> {
            pairs.iter().map(|(t, v)| (t.to_string(), *v)).collect()
        };
        assert_eq!(
            got,
            [
                (20, Some(1), vec![]),
                (
                    20,
                    None,
                    s(&[
                        ("train/epoch", 0.0),
                        ("train/loss", 0.5),
                        ("train/lr", 0.25)
                    ])
                ),
                (20, None, s(&[("val/recall@10", 0.75)])),
                (30, None, s(&[("test/mrr@10", 0.125)])),
            ]
        );
    }
}
