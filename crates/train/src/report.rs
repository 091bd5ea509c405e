//! The run report: `report.md` and SVG plots from a run's `metrics.jsonl`.
//!
//! Each line of `metrics.jsonl` is one JSON object with a `kind`:
//!
//! * `train`: `step`, `loss`, and optionally `epoch`, `lr`, `steps_per_s`,
//!   `rss_bytes`, `mine_s`, `mine_hidden`, `band_fill`, `elapsed_s`;
//! * `val` / `test`: `step` (required for `val`) and measures such as
//!   `recall@10` or `mrr@10`;
//! * `baseline`: `split`, `query` (`mean`, `last`, ...) and measures;
//! * `event`: `message` and optionally `step`.
//!
//! Unknown kinds and keys are ignored; a `null` value (how JSON writers
//! store NaN) counts as missing. [`write_report`] writes `loss.svg`,
//! `lr.svg` and `recall.svg` (those with data) and `report.md` into the run
//! directory, each atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tandem_io::{write_bytes_atomic, Overwrite};

use crate::error::TrainError;
use crate::memory::format_size;

/// Keys of `val`/`test`/`baseline` records that are not measures.
const NOT_MEASURES: [&str; 7] = [
    "kind",
    "step",
    "epoch",
    "split",
    "query",
    "elapsed_s",
    "model_step",
];

/// One `train` line.
#[derive(Debug, Clone, PartialEq)]
struct TrainRecord {
    step: u64,
    epoch: Option<u64>,
    loss: Option<f64>,
    lr: Option<f64>,
    steps_per_s: Option<f64>,
    rss_bytes: Option<f64>,
    mine_hidden: Option<f64>,
    band_fill: Option<f64>,
}

/// Measures of one evaluation (`val`, `test` or `baseline`).
type Measures = BTreeMap<String, f64>;

/// Everything the report needs from `metrics.jsonl`.
#[derive(Debug, Default)]
struct Metrics {
    train: Vec<TrainRecord>,
    /// `(step, measures)` per validation.
    val: Vec<(u64, Measures)>,
    /// The last `test` record.
    test: Option<Measures>,
    /// The step of the weights the test record scores.
    test_model_step: Option<u64>,
    /// `(split, query, measures)`.
    baselines: Vec<(String, String, Measures)>,
    /// `(step, message)`.
    events: Vec<(Option<u64>, String)>,
    /// The largest `elapsed_s` of any record.
    elapsed_s: Option<f64>,
}

/// A field read from one record, with errors naming the line.
struct Line<'a> {
    path: &'a Path,
    number: usize,
    obj: &'a Map<String, Value>,
}

impl Line<'_> {
    fn err(&self, problem: String) -> TrainError {
        TrainError::Invalid {
            path: PathBuf::from(format!("{}:{}", self.path.display(), self.number)),
            problem,
            fix:
                "each line must be one JSON object as the trainer writes it; fix or delete the line"
                    .into(),
        }
    }

    /// A number; `None` when absent or `null`.
    fn num(&self, key: &str) -> Result<Option<f64>, TrainError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.err(format!("\"{key}\" is {v}, not a number"))),
        }
    }

    /// A non-negative integer; `None` when absent.
    fn int(&self, key: &str) -> Result<Option<u64>, TrainError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(format!("\"{key}\" is {v}, not a non-negative integer"))),
        }
    }

    fn required_int(&self, key: &str, kind: &str) -> Result<u64, TrainError> {
        self.int(key)?
            .ok_or_else(|| self.err(format!("{kind} record has no \"{key}\"")))
    }

    fn required_str(&self, key: &str, kind: &str) -> Result<String, TrainError> {
        match self.obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(format!("\"{key}\" is {v}, not a string"))),
            None => Err(self.err(format!("{kind} record has no \"{key}\""))),
        }
    }

    /// Every numeric key that is not a known non-measure.
    fn measures(&self) -> Measures {
        self.obj
            .iter()
            .filter(|(k, _)| !NOT_MEASURES.contains(&k.as_str()))
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .collect()
    }
}

impl Metrics {
    /// Parse the text of `path`.
    fn parse(path: &Path, text: &str) -> Result<Metrics, TrainError> {
        let mut m = Metrics::default();
        for (i, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(raw).map_err(|e| TrainError::Invalid {
                path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                problem: format!("not valid JSON ({e})"),
                fix: "each line must be one JSON object; fix or delete the line (a run killed mid-write can leave a torn last line)".into(),
            })?;
            let Value::Object(obj) = &value else {
                return Err(TrainError::Invalid {
                    path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                    problem: "the line is JSON but not an object".into(),
                    fix: "each line must be one JSON object such as {\"kind\":\"train\",...}; fix or delete the line".into(),
                });
            };
            let line = Line {
                path,
                number: i + 1,
                obj,
            };
            if let Some(t) = line.num("elapsed_s")? {
                m.elapsed_s = Some(m.elapsed_s.map_or(t, |e: f64| e.max(t)));
            }
            let kind = line.required_str("kind", "the")?;
            match kind.as_str() {
                "train" => m.train.push(TrainRecord {
                    step: line.required_int("step", "train")?,
                    epoch: line.int("epoch")?,
                    loss: line.num("loss")?,
                    lr: line.num("lr")?,
                    steps_per_s: line.num("steps_per_s")?,
                    rss_bytes: line.num("rss_bytes")?,
                    mine_hidden: line.num("mine_hidden")?,
                    band_fill: line.num("band_fill")?,
                }),
                "val" => m
                    .val
                    .push((line.required_int("step", "val")?, line.measures())),
                "test" => {
                    m.test = Some(line.measures());
                    m.test_model_step = line.int("model_step")?;
                }
                "baseline" => m.baselines.push((
                    line.required_str("split", "baseline")?,
                    line.required_str("query", "baseline")?,
                    line.measures(),
                )),
                "event" => m
                    .events
                    .push((line.int("step")?, line.required_str("message", "event")?)),
                _ => {}
            }
        }
        Ok(m)
    }

    /// Baselines of `split`, in order of appearance: `(query, measures)`.
    fn baselines_of(&self, split: &str) -> Vec<(&str, &Measures)> {
        self.baselines
            .iter()
            .filter(|(s, _, _)| s == split)
            .map(|(_, q, m)| (q.as_str(), m))
            .collect()
    }
}

/// Measure names in reading order: recall, hit, mrr, ndcg, map, others; by
/// cutoff within a family.
fn measure_order(name: &str) -> (usize, String, u64) {
    let (family, cutoff) = match name.split_once('@') {
        Some((f, k)) => (f, k.parse().unwrap_or(u64::MAX)),
        None => (name, 0),
    };
    let rank = ["recall", "hit", "mrr", "ndcg", "map"]
        .iter()
        .position(|f| *f == family)
        .unwrap_or(5);
    (rank, family.to_string(), cutoff)
}

/// The union of measure names in `sets`, in reading order.
fn measure_names<'a>(sets: impl Iterator<Item = &'a Measures>) -> Vec<String> {
    let mut names: Vec<String> = sets.flat_map(|m| m.keys().cloned()).collect();
    names.sort_by_key(|n| measure_order(n));
    names.dedup();
    names
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.4}"))
}

/// `h m s` for a duration in seconds.
fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec} s"),
        (0, m, sec) => format!("{m} min {sec} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// Bias-corrected exponential moving average (TensorBoard's smoothing).
fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut avg = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            avg = avg * weight + (1.0 - weight) * y;
            (x, avg / (1.0 - weight.powi(i as i32 + 1)))
        })
        .collect()
}

/// Write `report.md` and the plots for the run in `run_dir` (reading
/// `run_dir/metrics.jsonl`); returns the path of `report.md`. Existing
/// report files are replaced.
pub fn write_report(run_dir: &Path, title: &str) -> Result<PathBuf, TrainError> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let m = Metrics::parse(&path, &text)?;
    if m.train.is_empty() && m.val.is_empty() && m.test.is_none() {
        return Err(TrainError::Invalid {
            path,
            problem: "holds no train, val or test records, so there is nothing to report".into(),
            fix: "give the directory of a run that has trained at least one logging interval"
                .into(),
        });
    }
    let mut plots = Vec::new();
    for (file, plot) in [
        ("loss.svg", loss_plot(&m)),
        ("lr.svg", lr_plot(&m)),
        ("recall.svg", recall_plot(&m)),
    ] {
        if let Some(plot) = plot {
            write_bytes_atomic(
                &run_dir.join(file),
                Overwrite::Allow,
                plot.render().as_bytes(),
            )?;
            plots.push((file, plot.title));
        }
    }
    let mut md = markdown(&m, title, &plots);
    // The run's settings, when the run directory holds them.
    if let Ok(config) = std::fs::read_to_string(run_dir.join("config.toml")) {
        let _ = writeln!(
            md,
            "## Settings (config.toml)\n\n```toml\n{}\n```",
            config.trim_end()
        );
    }
    let out = run_dir.join("report.md");
    write_bytes_atomic(&out, Overwrite::Allow, md.as_bytes())?;
    Ok(out)
}

/// The text of `report.md`.
fn markdown(m: &Metrics, title: &str, plots: &[(&str, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    training_section(&mut s, m);
    validation_section(&mut s, m);
    if let Some(test) = &m.test {
        let baselines = m.baselines_of("test");
        let _ = writeln!(s, "## Test\n");
        if let Some(step) = m.test_model_step {
            let _ = writeln!(
                s,
                "Scored with the weights of step {step} (the best validation).\n"
            );
        }
        let mut header = "| measure | model |".to_string();
        let mut rule = "|---|---:|".to_string();
        for (q, _) in &baselines {
            let _ = write!(header, " {q} baseline |");
            rule.push_str("---:|");
        }
        let _ = writeln!(s, "{header}\n{rule}");
        let names = measure_names(std::iter::once(test).chain(baselines.iter().map(|(_, b)| *b)));
        for name in names {
            let _ = write!(s, "| {name} | {} |", cell(test.get(&name).copied()));
            for (_, b) in &baselines {
                let _ = write!(s, " {} |", cell(b.get(&name).copied()));
            }
            s.push('\n');
        }
        s.push('\n');
    }
    if !plots.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for (file, plot_title) in plots {
            let _ = writeln!(s, "![{plot_title}]({file})\n");
        }
    }
    if !m.events.is_empty() {
        let _ = writeln!(s, "## Events\n");
        for (step, message) in &m.events {
            match step {
                Some(step) => {
                    let _ = writeln!(s, "- step {step}: {message}");
                }
                None => {
                    let _ = writeln!(s, "- {message}");
                }
            }
        }
        s.push('\n');
    }
    s
}

/// Mean of the present values.
fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn training_section(s: &mut String, m: &Metrics) {
    let Some(last) = m.train.last() else { return };
    let t = &m.train;
    let _ = writeln!(s, "## Training\n\n| | |\n|---|---:|");
    let _ = writeln!(s, "| optimizer steps | {} |", last.step);
    if let Some(epoch) = t.iter().filter_map(|r| r.epoch).max() {
        let _ = writeln!(s, "| epochs started | {} |", epoch + 1);
    }
    // Wall time: logged, or estimated from the logged speed.
    let estimate = || {
        let mut prev = 0;
        let mut total = 0.0;
        for r in t {
            if let Some(v) = r.steps_per_s.filter(|v| *v > 0.0) {
                total += r.step.saturating_sub(prev) as f64 / v;
            }
            prev = r.step;
        }
        (total > 0.0).then_some(total)
    };
    match (m.elapsed_s, estimate()) {
        (Some(e), _) => {
            let _ = writeln!(s, "| time | {} |", format_duration(e));
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "| time (from steps/s) | about {} |", format_duration(e));
        }
        (None, None) => {}
    }
    let losses: Vec<(f64, f64)> = loss_points(m);
    if let Some(&(_, l)) = losses.last() {
        let smoothed = smooth(&losses, 0.9).last().map_or(l, |p| p.1);
        let _ = writeln!(s, "| final loss (smoothed) | {l:.4} ({smoothed:.4}) |");
    }
    let nonfinite = t.iter().filter(|r| r.loss.is_none()).count();
    if nonfinite > 0 {
        let _ = writeln!(s, "| records without a finite loss | {nonfinite} |");
    }
    if let Some(lr) = last.lr {
        let _ = writeln!(s, "| final learning rate | {lr:.3e} |");
    }
    let mut rates: Vec<f64> = t.iter().filter_map(|r| r.steps_per_s).collect();
    rates.sort_by(f64::total_cmp);
    if let Some(&v) = rates.get(rates.len() / 2) {
        let _ = writeln!(
            s,
            "| steps/s while training (median of the logged windows) | {v:.1} |"
        );
    }
    if let Some(e) = m.elapsed_s.filter(|e| *e > 0.0) {
        let _ = writeln!(
            s,
            "| steps/s overall (with validation and checkpoints) | {:.1} |",
            last.step as f64 / e
        );
    }
    if let Some(v) = t.iter().filter_map(|r| r.rss_bytes).reduce(f64::max) {
        let _ = writeln!(s, "| peak RSS | {} |", format_size(v as u64));
    }
    if let Some(v) = mean(t.iter().map(|r| r.band_fill)) {
        let _ = writeln!(s, "| mean band fill | {v:.3} |");
    }
    if let Some(v) = mean(t.iter().map(|r| r.mine_hidden)) {
        let _ = writeln!(s, "| mining hidden behind training | {:.1}% |", 100.0 * v);
    }
    s.push('\n');
}

fn validation_section(s: &mut String, m: &Metrics) {
    let Some((final_step, final_m)) = m.val.last() else {
        return;
    };
    let baselines = m.baselines_of("val");
    let _ = writeln!(
        s,
        "## Validation\n\n{} evaluations; final at step {final_step}.\n",
        m.val.len()
    );
    let mut header = "| measure | final | best | best step |".to_string();
    let mut rule = "|---|---:|---:|---:|".to_string();
    for (q, _) in &baselines {
        let _ = write!(header, " {q} baseline |");
        rule.push_str("---:|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    let names = measure_names(
        m.val
            .iter()
            .map(|(_, v)| v)
            .chain(baselines.iter().map(|(_, b)| *b)),
    );
    for name in names {
        let best = m
            .val
            .iter()
            .filter_map(|(step, v)| v.get(&name).map(|x| (*step, *x)))
            .fold(None, |best: Option<(u64, f64)>, (step, x)| match best {
                Some((_, b)) if b >= x => best,
                _ => Some((step, x)),
            });
        let _ = write!(
            s,
            "| {name} | {} | {} | {} |",
            cell(final_m.get(&name).copied()),
            cell(best.map(|b| b.1)),
            best.map_or("-".to_string(), |b| b.0.to_string())
        );
        for (_, b) in &baselines {
            let _ = write!(s, " {} |", cell(b.get(&name).copied()));
        }
        s.push('\n');
    }
    s.push('\n');
}

/// `(step, loss)` of the train records with a finite loss.
fn loss_points(m: &Metrics) -> Vec<(f64, f64)> {
    m.train
        .iter()
        .filter_map(|r| r.loss.filter(|l| l.is_finite()).map(|l| (r.step as f64, l)))
        .collect()
}

const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#ff7f0e";
const GREEN: &str = "#2ca02c";

fn loss_plot(m: &Metrics) -> Option<Plot> {
    let points = loss_points(m);
    if points.is_empty() {
        return None;
    }
    let smoothed = smooth(&points, 0.9);
    Some(Plot {
        title: "Training loss".into(),
        x_label: "optimizer step".into(),
        y_label: "loss".into(),
        series: vec![
            Series::line("loss", BLUE, points, 1.0),
            Series::line("smoothed (EMA 0.9)", ORANGE, smoothed, 2.0),
        ],
        hlines: Vec::new(),
    })
}

fn lr_plot(m: &Metrics) -> Option<Plot> {
    let points: Vec<(f64, f64)> = m
        .train
        .iter()
        .filter_map(|r| r.lr.map(|lr| (r.step as f64, lr)))
        .collect();
    if points.is_empty() {
        return None;
    }
    Some(Plot {
        title: "Learning rate".into(),
        x_label: "optimizer step".into(),
        y_label: "learning rate".into(),
        series: vec![Series::line("lr", GREEN, points, 1.5)],
        hlines: Vec::new(),
    })
}

fn recall_plot(m: &Metrics) -> Option<Plot> {
    let mut series = Vec::new();
    let mut hlines = Vec::new();
    let dashes = ["6 4", "2 3", "8 3 2 3"];
    // A retriever reports recall@k, an LVM hit@k (the same number for one target).
    for (key, label, color) in [
        ("recall@10", "R@10", BLUE),
        ("hit@10", "Hit@10", BLUE),
        ("mrr@10", "MRR@10", ORANGE),
    ] {
        let points: Vec<(f64, f64)> = m
            .val
            .iter()
            .filter_map(|(step, v)| v.get(key).map(|x| (*step as f64, *x)))
            .collect();
        if points.is_empty() {
            continue;
        }
        for (i, (query, b)) in m.baselines_of("val").into_iter().enumerate() {
            if let Some(&y) = b.get(key) {
                hlines.push(HLine {
                    label: format!("{label}, {query} baseline"),
                    y,
                    color,
                    dash: dashes[i % dashes.len()],
                });
            }
        }
        series.push(Series::line(
            &format!("{label} (validation)"),
            color,
            points,
            2.0,
        ));
    }
    if series.is_empty() {
        return None;
    }
    Some(Plot {
        title: "Validation retrieval".into(),
        x_label: "optimizer step".into(),
        y_label: "score".into(),
        series,
        hlines,
    })
}

/// A line of points.
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// An SVG colour.
    pub color: &'static str,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Stroke width.
    pub width: f64,
}

impl Series {
    /// A line of `points`.
    pub fn line(label: &str, color: &'static str, points: Vec<(f64, f64)>, width: f64) -> Series {
        Series {
            label: label.to_string(),
            color,
            points,
            width,
        }
    }
}

/// A dashed horizontal reference line across the plot.
pub struct HLine {
    /// The legend's text.
    pub label: String,
    /// Where it crosses the y axis.
    pub y: f64,
    /// An SVG colour.
    pub color: &'static str,
    /// An SVG dash array, e.g. "6 4".
    pub dash: &'static str,
}

/// A line chart rendered as standalone SVG.
pub struct Plot {
    /// Above the chart.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Horizontal reference lines.
    pub hlines: Vec<HLine>,
}

/// Distinct line colours, in order of use.
pub const PALETTE: [&str; 8] = [
    BLUE, ORANGE, GREEN, "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

/// Escape text for SVG/XML.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick positions covering `[lo, hi]` (steps of 1, 2 or 5 times a
/// power of ten), and the step.
fn ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|i| i as f64 * step).collect(), step)
}

/// A tick label with as many decimals as the tick step needs.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if step < 1e-3 || v.abs() >= 1e6 {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// `[lo, hi]` of `values`, widened when empty of width.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, lo + pad)
    }
}

impl Plot {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let (x0, x1) = range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0)),
        );
        let (y0, y1) = range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .chain(self.hlines.iter().map(|h| h.y)),
        );
        // A little headroom above and below the data.
        let pad = (y1 - y0) * 0.05;
        let (y0, y1) = (y0 - pad, y1 + pad);
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + (y1 - y) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
            WIDTH / 2.0,
            xml(&self.title)
        );
        // Grid, ticks and tick labels.
        let (xt, xstep) = ticks(x0, x1);
        for x in xt {
            let px = sx(x);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.2}" y1="{TOP}" x2="{px:.2}" y2="{:.2}" stroke="#e5e5e5"/>"##,
                TOP + ph
            );
            let _ = writeln!(
                s,
                r#"<text x="{px:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                TOP + ph + 16.0,
                tick_label(x, xstep)
            );
        }
        let (yt, ystep) = ticks(y0, y1);
        for y in yt {
            let py = sy(y);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{py:.2}" x2="{:.2}" y2="{py:.2}" stroke="#e5e5e5"/>"##,
                LEFT + pw
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                py + 4.0,
                tick_label(y, ystep)
            );
        }
        // Axes and their labels.
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 12.0,
            xml(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.2}" text-anchor="middle" transform="rotate(-90 18 {:.2})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            xml(&self.y_label)
        );
        for h in &self.hlines {
            let py = sy(h.y);
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{py:.2}" x2="{:.2}" y2="{py:.2}" stroke="{}" stroke-width="1.5" stroke-dasharray="{}"/>"#,
                LEFT + pw,
                h.color,
                h.dash
            );
        }
        for series in &self.series {
            let points: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="{}" points="{}"/>"#,
                series.color,
                series.width,
                points.join(" ")
            );
        }
        // Legend, top right inside the plot.
        let entries: Vec<(&str, &str, f64, Option<&str>)> = self
            .series
            .iter()
            .map(|s| (s.label.as_str(), s.color, s.width, None))
            .chain(
                self.hlines
                    .iter()
                    .map(|h| (h.label.as_str(), h.color, 1.5, Some(h.dash))),
            )
            .collect();
        let text_w = entries
            .iter()
            .map(|e| e.0.chars().count())
            .max()
            .unwrap_or(0) as f64
            * 7.2;
        let (lw, lh) = (text_w + 44.0, entries.len() as f64 * 18.0 + 8.0);
        let (lx, ly) = (LEFT + pw - lw - 8.0, TOP + 8.0);
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.2}" y="{ly:.2}" width="{lw:.2}" height="{lh:.2}" fill="white" fill-opacity="0.85" stroke="#999"/>"##
        );
        for (i, (label, color, width, dash)) in entries.iter().enumerate() {
            let y = ly + 16.0 + i as f64 * 18.0;
            let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
            let _ = writeln!(
                s,
                r#"<line x1="{:.2}" y1="{:.2}" x2="{:.2}" y2="{:.2}" stroke="{color}" stroke-width="{width}"{dash}/>"#,
                lx + 8.0,
                y - 4.0,
                lx + 32.0,
                y - 4.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{y:.2}">{}</text>"#,
                lx + 38.0,
                xml(label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, step) = ticks(0.0, 1000.0);
        assert_eq!(step, 200.0);
        assert_eq!(t, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        let (t, step) = ticks(0.23, 0.61);
        assert!((step - 0.1).abs() < 1e-12);
        assert_eq!(t.len(), 4);
        assert_eq!(tick_label(t[0], step), "0.3");
        assert_eq!(tick_label(4e-5, 1e-5), "4.0e-5");
        assert_eq!(tick_label(0.0, 1e-5), "0");
        assert_eq!(tick_label(1500.0, 500.0), "1500");
    }

    #[test]
    fn smoothing_is_debiased() {
        let s = smooth(&[(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)], 0.9);
        assert!(s.iter().all(|p| (p.1 - 2.0).abs() < 1e-12), "{s:?}");
        let s = smooth(&[(0.0, 0.0), (1.0, 10.0)], 0.5);
        // (0.5 * 0 * 0.5 + 0.5 * 10) / (1 - 0.25)
        assert!((s[1].1 - 5.0 / 0.75).abs() < 1e-12);
    }

    #[test]
    fn measures_are_ordered_for_reading() {
        let m: Measures = [
            "mrr@10",
            "recall@100",
            "recall@5",
            "ndcg@10",
            "recall@1",
            "zeta",
        ]
        .iter()
        .map(|k| (k.to_string(), 0.0))
        .collect();
        assert_eq!(
            measure_names(std::iter::once(&m)),
            [
                "recall@1",
                "recall@5",
                "recall@100",
                "mrr@10",
                "ndcg@10",
                "zeta"
            ]
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(42.4), "42 s");
        assert_eq!(format_duration(125.0), "2 min 5 s");
        assert_eq!(format_duration(7300.0), "2 h 1 min");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(xml("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
