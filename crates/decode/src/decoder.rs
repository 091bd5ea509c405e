//! One decision per generated step: the LVM proposes `v`; the retriever
//! offers bank candidates; `c` is the cosine between `v` and the candidate
//! closest to it. SNAP (emit the bank row) when `c >= snap`, NOVEL (emit
//! `v`) when `c <= novel`, BLEND (emit `normalize(a cand + (1 - a) v)`) in
//! between. A retrieval that fails or exceeds its time budget makes the step
//! NOVEL with the reason recorded: generation never stops on a retrieval
//! error. Rows snapped in the last `window` steps are not offered again.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lane::Lane;

/// A bank row offered by a retriever.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its bank row.
    pub row: u32,
    /// Its vector.
    pub vector: Vec<f32>,
}

/// Where candidates come from: the bank searched with `v` itself, or with a
/// query tower over the context. An error is a message naming the cause.
pub trait Retriever {
    /// Up to `k` candidates for the proposal `v` made from `context`
    /// (oldest first), never one of `exclude`.
    fn candidates(
        &self,
        context: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> Result<Vec<Candidate>, String>;
}

/// What a step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    /// The bank row was emitted.
    Snap,
    /// A blend of the bank row and the proposal was emitted.
    Blend,
    /// The proposal was emitted.
    Novel,
}

/// One generated step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The decision.
    pub decision: Decision,
    /// Cosine between the proposal and the best candidate (None when
    /// retrieval gave nothing).
    pub cosine: Option<f32>,
    /// The lane that decided.
    pub lane: String,
    /// The candidate's bank row (SNAP and BLEND).
    pub row: Option<u32>,
    /// The candidate's weight in a BLEND.
    pub alpha: Option<f32>,
    /// Why a step went NOVEL without a usable candidate.
    pub fallback: Option<String>,
    /// The emitted vector (unit length).
    #[serde(skip)]
    pub vector: Vec<f32>,
}

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeSettings {
    /// Candidates asked of the retriever per step.
    pub k: usize,
    /// Rows snapped within the last `window` steps are not offered again.
    pub window: usize,
    /// Retrieval slower than this goes NOVEL.
    pub budget: Duration,
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// The cosine of `a` and `b` (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    d / (norm(a) * norm(b)).max(1e-12)
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = norm(v).max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// The dual-path decoder's state: the recent snaps and the telemetry.
#[derive(Debug, Clone)]
pub struct Decoder {
    settings: DecodeSettings,
    recent: VecDeque<u32>,
    telemetry: Telemetry,
}

impl Decoder {
    /// A decoder with an empty window.
    pub fn new(settings: DecodeSettings) -> Decoder {
        Decoder {
            settings,
            recent: VecDeque::new(),
            telemetry: Telemetry::default(),
        }
    }

    /// Counts `rows` as recently emitted (e.g. the starting context), so
    /// that they are not snapped to within the window.
    pub fn remember(&mut self, rows: &[u32]) {
        self.recent.extend(rows);
        while self.recent.len() > self.settings.window {
            self.recent.pop_front();
        }
    }

    /// The candidate closest to `v` among those `retriever` offers for
    /// `context` and `v` (rows in `exclude` left out), with its cosine to
    /// `v`; or why there is none (a failed or slow retrieval, no candidate).
    pub fn best(
        &self,
        retriever: &dyn Retriever,
        context: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
    ) -> Result<(f32, Candidate), String> {
        let t = Instant::now();
        let found = retriever.candidates(context, v, exclude, self.settings.k);
        let elapsed = t.elapsed();
        match found {
            Err(e) => Err(format!("retrieval failed: {e}")),
            Ok(_) if elapsed > self.settings.budget => Err(format!(
                "retrieval took {:.1} ms, over the {:.1} ms budget",
                elapsed.as_secs_f64() * 1e3,
                self.settings.budget.as_secs_f64() * 1e3
            )),
            Ok(cands) => cands
                .into_iter()
                .filter(|c| !exclude.contains(&c.row))
                .map(|c| (cosine(v, &c.vector), c))
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.row.cmp(&a.1.row)))
                .ok_or_else(|| "retrieval returned no candidate".to_string()),
        }
    }

    /// Decides one step under `lane` for the proposal `v` made from
    /// `context` (oldest first), records it and returns it.
    pub fn step(
        &mut self,
        lane: &Lane,
        context: &[Vec<f32>],
        v: &[f32],
        retriever: &dyn Retriever,
    ) -> Step {
        let exclude: Vec<u32> = self.recent.iter().copied().collect();
        let step = decide(lane, v, self.best(retriever, context, v, &exclude));
        if step.decision == Decision::Snap {
            if let Some(r) = step.row {
                self.recent.push_back(r);
            }
        }
        while self.recent.len() > self.settings.window {
            self.recent.pop_front();
        }
        self.telemetry.record(&step);
        step
    }

    /// What the decoder has decided so far.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

/// The step `lane` takes for the proposal `v` given the best candidate (or
/// why there is none): the SNAP / BLEND / NOVEL rule of the module docs.
pub fn decide(lane: &Lane, v: &[f32], best: Result<(f32, Candidate), String>) -> Step {
    let step = |decision, cosine, row, alpha, fallback, vector| Step {
        decision,
        cosine,
        lane: lane.name.clone(),
        row,
        alpha,
        fallback,
        vector,
    };
    match best {
        Err(reason) => step(Decision::Novel, None, None, None, Some(reason), unit(v)),
        Ok((c, cand)) if c >= lane.snap => step(
            Decision::Snap,
            Some(c),
            Some(cand.row),
            None,
            None,
            unit(&cand.vector),
        ),
        Ok((c, _)) if c <= lane.novel => step(Decision::Novel, Some(c), None, None, None, unit(v)),
        Ok((c, cand)) => {
            let a = lane.alpha(c);
            step(
                Decision::Blend,
                Some(c),
                Some(cand.row),
                Some(a),
                None,
                blend(a, &cand.vector, v),
            )
        }
    }
}

/// `normalize(a * unit(cand) + (1 - a) * unit(v))`.
pub fn blend(a: f32, cand: &[f32], v: &[f32]) -> Vec<f32> {
    let (uc, uv) = (unit(cand), unit(v));
    let mixed: Vec<f32> = uc
        .iter()
        .zip(&uv)
        .map(|(x, y)| a * x + (1.0 - a) * y)
        .collect();
    unit(&mixed)
}

/// Decision counts per lane, mean cosine, fallbacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Telemetry {
    /// Per lane.
    pub lanes: BTreeMap<String, LaneTelemetry>,
}

/// The counts of one lane.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LaneTelemetry {
    /// Steps decided.
    pub steps: u64,
    /// SNAP steps.
    pub snap: u64,
    /// BLEND steps.
    pub blend: u64,
    /// NOVEL steps.
    pub novel: u64,
    /// NOVEL steps caused by a failed or slow retrieval.
    pub fallbacks: u64,
    /// Steps that had a candidate.
    pub cosine_steps: u64,
    /// Mean cosine of proposal to best candidate over those steps.
    pub mean_cosine: Option<f64>,
}

impl LaneTelemetry {
    /// Percentage of steps with `decision`.
    pub fn percent(&self, decision: Decision) -> f64 {
        let n = match decision {
            Decision::Snap => self.snap,
            Decision::Blend => self.blend,
            Decision::Novel => self.novel,
        };
        100.0 * n as f64 / self.steps.max(1) as f64
    }
}

impl Telemetry {
    fn record(&mut self, step: &Step) {
        let t = self.lanes.entry(step.lane.clone()).or_default();
        t.steps += 1;
        match step.decision {
            Decision::Snap => t.snap += 1,
            Decision::Blend => t.blend += 1,
            Decision::Novel => t.novel += 1,
        }
        if step.fallback.is_some() {
            t.fallbacks += 1;
        }
        if let Some(c) = step.cosine {
            t.cosine_steps += 1;
            let m = t.mean_cosine.unwrap_or(0.0);
            t.mean_cosine = Some(m + (f64::from(c) - m) / t.cosine_steps as f64);
        }
    }

    /// A Markdown table: %SNAP, %BLEND, %NOVEL, mean cosine and fallbacks per lane.
    pub fn table(&self) -> String {
        let mut s = String::from("| lane | steps | SNAP % | BLEND % | NOVEL % | mean cosine | fallbacks |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for (name, t) in &self.lanes {
            s.push_str(&format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
                t.steps,
                t.percent(Decision::Snap),
                t.percent(Decision::Blend),
                t.percent(Decision::Novel),
                t.mean_cosine.map_or("-".into(), |c| format!("{c:.4}")),
                t.fallbacks
            ));
        }
        s
    }
}
