//! The run report: `report.md` and SVG plots (drawn with `plotters`) from a
//! run's `metrics.jsonl`.
//!
//! Each line of `metrics.jsonl` is one JSON object with a `kind`:
//!
//! * `train`: `step`, `loss`, and optionally `epoch`, `lr`, `steps_per_s`,
//!   `rss_bytes`, `mine_s`, `mine_hidden`, `band_fill`, `mine_cached`,
//!   `mine_cache_mb`, `elapsed_s`;
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
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::data::float::pretty_print_float;
use plotters::element::DashedPathElement;
use plotters::prelude::{
    ChartBuilder, Color, DashedLineSeries, DrawingArea, IntoDrawingArea, LineSeries, RGBColor,
    Rectangle, SVGBackend, SeriesLabelPosition, TRANSPARENT, WHITE,
};
use serde_json::{Map, Value};
use tandem_io::{write_bytes_atomic, Overwrite};

use crate::error::TrainError;
use crate::memory::format_size;

/// Keys of `val`/`test`/`baseline` records that are not measures.
pub(crate) const NOT_MEASURES: [&str; 7] = [
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
    /// Seconds spent searching for negatives so far in the run.
    mine_s: Option<f64>,
    /// Fraction of the train examples in the mining cache, and its size (MB).
    mine_cached: Option<f64>,
    mine_cache_mb: Option<f64>,
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
                    mine_s: line.num("mine_s")?,
                    mine_cached: line.num("mine_cached")?,
                    mine_cache_mb: line.num("mine_cache_mb")?,
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
    if let Some(v) = t.iter().filter_map(|r| r.mine_s).reduce(f64::max) {
        let _ = writeln!(
            s,
            "| time searching for negatives | {} |",
            format_duration(v)
        );
    }
    let cache = t
        .iter()
        .rev()
        .find_map(|r| r.mine_cached.zip(r.mine_cache_mb));
    if let Some((share, mb)) = cache {
        let _ = writeln!(
            s,
            "| mining cache (train examples mined, memory) | {:.1}%, {} |",
            100.0 * share,
            format_size((mb * 1e6) as u64)
        );
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
    let dashes = ["6 4", "2 3", "12 3"];
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
    /// An `#rrggbb` colour.
    pub color: &'static str,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Stroke width in pixels (rounded).
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
    /// An `#rrggbb` colour.
    pub color: &'static str,
    /// The lengths of a dash and of a gap in pixels, e.g. "6 4".
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

/// A plot's width and height in pixels.
const SIZE: (u32, u32) = (760, 440);
/// The font family of every text; plotters' font sizes are 1.24 times the
/// SVG's.
const FONT: &str = "sans-serif";

/// `[lo, hi]` of the finite `values`, widened when empty of width.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, lo + pad)
    } else {
        (0.0, 1.0)
    }
}

/// An `#rrggbb` colour; black where it is not one.
fn rgb(hex: &str) -> RGBColor {
    let n = hex
        .strip_prefix('#')
        .filter(|h| h.len() == 6)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    RGBColor((n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// The dash and gap lengths of an [`HLine::dash`]; the gap defaults to the
/// dash, a missing dash to 6.
fn dash_gap(dash: &str) -> (u32, u32) {
    let mut lengths = dash
        .split_whitespace()
        .filter_map(|n| n.parse::<f64>().ok());
    let on = lengths.next().map_or(6, |n| n.round().max(1.0) as u32);
    (on, lengths.next().map_or(on, |n| n.round().max(1.0) as u32))
}

impl Plot {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            // Drawing into a string has no I/O to fail, and text needs no
            // fonts: the SVG backend writes <text> elements.
            self.draw(&root)
                .expect("plotting into an in-memory SVG cannot fail");
        }
        svg
    }

    fn draw(&self, root: &DrawingArea<SVGBackend, Shift>) -> Result<(), Box<dyn Error>> {
        root.fill(&WHITE)?;
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
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(x0..x1, y0 - pad..y1 + pad)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xe5, 0xe5, 0xe5))
            .x_labels(6)
            .y_labels(8)
            .x_label_formatter(&|x| pretty_print_float(*x, false))
            .y_label_formatter(&|y| pretty_print_float(*y, true))
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for s in &self.series {
            let style = rgb(s.color).stroke_width(s.width.round().max(1.0) as u32);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(&s.label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 1), (x + 24, y + 1)], style.filled())
                });
        }
        for h in &self.hlines {
            let style = rgb(h.color).stroke_width(2);
            let (on, off) = dash_gap(h.dash);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, h.y), (x1, h.y)],
                    on,
                    off,
                    style,
                ))?
                .label(&h.label)
                .legend(move |(x, y)| {
                    DashedPathElement::new([(x, y), (x + 24, y)], on, off, style)
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .margin(14)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(0x99, 0x99, 0x99))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Point counts of `svg`'s polylines stroked `color` (plotters writes
    /// one element a line, colours in upper case).
    fn polylines(svg: &str, color: &str) -> Vec<usize> {
        let stroke = format!("stroke=\"{}\"", color.to_uppercase());
        svg.lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
            .map(|l| {
                l.split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .map(|points| points.split_whitespace().count())
            .collect()
    }

    /// Whether `svg` holds a <text> of `text`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn a_plot_draws_its_lines_legend_and_labels() {
        let plot = Plot {
            title: "loss & <more>".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![Series::line(
                "train",
                BLUE,
                vec![(0.0, 2.0), (5.0, 1.0), (9.0, 0.5)],
                2.0,
            )],
            hlines: vec![HLine {
                label: "baseline".into(),
                y: 1.5,
                color: ORANGE,
                dash: "6 4",
            }],
        };
        let svg = plot.render();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert_eq!(polylines(&svg, BLUE), [3]);
        // Dashes of two points each across the plot, and one in the legend.
        let dashes = polylines(&svg, ORANGE);
        assert!(
            dashes.len() > 10 && dashes.iter().all(|n| *n == 2),
            "{dashes:?}"
        );
        for text in [
            "loss &amp; &lt;more&gt;",
            "step",
            "loss",
            "train",
            "baseline",
        ] {
            assert!(has_text(&svg, text), "{text} in {svg}");
        }
    }

    #[test]
    fn the_report_writes_a_plot_per_series_kind() {
        let run = tempfile::tempdir().unwrap();
        let mut lines =
            vec![r#"{"kind":"baseline","split":"val","query":"mean","recall@10":0.5}"#.to_string()];
        for i in 1..=20u64 {
            lines.push(format!(
                r#"{{"kind":"train","step":{},"loss":{},"lr":{}}}"#,
                i * 10,
                2.0 / i as f64,
                5e-5 * (1.0 - i as f64 / 40.0)
            ));
        }
        for step in [100, 200] {
            lines.push(format!(r#"{{"kind":"val","step":{step},"recall@10":0.6}}"#));
        }
        std::fs::write(run.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        write_report(run.path(), "t").unwrap();
        let read = |f: &str| std::fs::read_to_string(run.path().join(f)).unwrap();
        let loss = read("loss.svg");
        // The loss and its smoothing, one point per record.
        assert_eq!(
            (polylines(&loss, BLUE), polylines(&loss, ORANGE)),
            (vec![20], vec![20])
        );
        assert!(has_text(&loss, "smoothed (EMA 0.9)"));
        let lr = read("lr.svg");
        assert_eq!(polylines(&lr, GREEN), [20]);
        assert!(lr.contains("e-5\n</text>"), "scientific ticks: {lr}");
        let recall = read("recall.svg");
        assert_eq!(polylines(&recall, BLUE)[0], 2);
        assert!(has_text(&recall, "R@10 (validation)") && has_text(&recall, "R@10, mean baseline"));
        let md = read("report.md");
        for f in ["loss.svg", "lr.svg", "recall.svg"] {
            assert!(md.contains(&format!("]({f})")), "{f} linked:\n{md}");
        }
    }

    #[test]
    fn colours_and_dashes_are_read() {
        assert_eq!(rgb("#1f77b4"), RGBColor(0x1f, 0x77, 0xb4));
        assert_eq!(rgb("red"), RGBColor(0, 0, 0));
        assert_eq!(dash_gap("6 4"), (6, 4));
        assert_eq!(dash_gap("3"), (3, 3));
        assert_eq!(dash_gap(""), (6, 6));
    }

    #[test]
    fn ranges_have_width() {
        assert_eq!(range([1.0, f64::NAN, 3.0].into_iter()), (1.0, 3.0));
        assert_eq!(range([2.0].into_iter()), (1.8, 2.2));
        assert_eq!(range([0.0].into_iter()), (-1.0, 1.0));
        assert_eq!(range(std::iter::empty()), (0.0, 1.0));
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
}
