//! Teacher-forced evaluation of the decoder on held-out sequences: for each
//! example the LVM's proposal `v` (from the true context) goes through the
//! decoder, and the emitted vector is compared with the true next vector:
//! its cosine, and whether the true next row is among the `hit_k` bank rows
//! nearest to it (context rows excluded). A sweep replays the decisions for
//! many (snap, novel) pairs, so that lane thresholds are picked from data.

use serde::Serialize;
use tandem_bank::Bank;
use tandem_search::{Flat, Index, Metric};

use crate::decoder::{cosine, decide, Candidate, Decision, Decoder, Retriever};
use crate::lane::{Blend, Lane};

/// Queries searched at a time when scoring hits.
const CHUNK: usize = 256;

/// One held-out example: the context rows (oldest first) and the true next row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The context's bank rows.
    pub context: Vec<u32>,
    /// The true next row.
    pub target: u32,
}

/// What was retrieved for one case, and how its two pure paths score.
#[derive(Debug, Clone)]
struct Retrieved {
    v: Vec<f32>,
    best: Result<(f32, Candidate), String>,
    /// Cosine of the proposal to the true next vector, and its hit.
    v_score: (f32, bool),
    /// The same for the best candidate (None without one).
    cand_score: Option<(f32, bool)>,
}

/// The outcome of one case under one lane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Cosine of the proposal to its best candidate (None on a fallback).
    pub cosine: Option<f32>,
    /// The candidate's row (SNAP and BLEND).
    pub row: Option<u32>,
    /// The candidate's weight in a BLEND.
    pub alpha: Option<f32>,
    /// Why retrieval gave nothing usable.
    pub fallback: Option<String>,
    /// Cosine of the emitted vector to the true next vector.
    pub cos_true: f32,
    /// Whether the true next row is among the `hit_k` nearest rows to the
    /// emitted vector.
    pub hit: bool,
    /// Cosine of the proposal itself to the true next vector.
    pub lvm_cos_true: f32,
    /// Whether the proposal itself hits.
    pub lvm_hit: bool,
}

/// Counts and means of a set of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Cases.
    pub n: usize,
    /// Mean cosine of the emitted vector to the true next vector.
    pub cos_true: f64,
    /// Fraction of cases whose true next row is hit.
    pub hit: f64,
}

impl Tally {
    /// The tally of (cosine to the truth, hit) pairs.
    fn of(scores: impl Iterator<Item = (f32, bool)>) -> Tally {
        let (mut n, mut c, mut h) = (0usize, 0f64, 0usize);
        for (cos, hit) in scores {
            n += 1;
            c += f64::from(cos);
            h += usize::from(hit);
        }
        let d = n.max(1) as f64;
        Tally {
            n,
            cos_true: c / d,
            hit: h as f64 / d,
        }
    }
}

/// The summary of one lane over every case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Every case.
    pub all: Tally,
    /// SNAP cases.
    pub snap: Tally,
    /// BLEND cases.
    pub blend: Tally,
    /// NOVEL cases.
    pub novel: Tally,
    /// NOVEL cases caused by a failed or slow retrieval.
    pub fallbacks: usize,
    /// The proposal alone (always NOVEL).
    pub lvm: Tally,
}

impl Summary {
    /// Summarises `outcomes`.
    pub fn of(outcomes: &[Outcome]) -> Summary {
        let with = |d: Decision| {
            Tally::of(
                outcomes
                    .iter()
                    .filter(|o| o.decision == d)
                    .map(|o| (o.cos_true, o.hit)),
            )
        };
        Summary {
            all: Tally::of(outcomes.iter().map(|o| (o.cos_true, o.hit))),
            snap: with(Decision::Snap),
            blend: with(Decision::Blend),
            novel: with(Decision::Novel),
            fallbacks: outcomes.iter().filter(|o| o.fallback.is_some()).count(),
            lvm: Tally::of(outcomes.iter().map(|o| (o.lvm_cos_true, o.lvm_hit))),
        }
    }

    /// Percentage of cases with `decision`.
    pub fn percent(&self, decision: Decision) -> f64 {
        let n = match decision {
            Decision::Snap => self.snap.n,
            Decision::Blend => self.blend.n,
            Decision::Novel => self.novel.n,
        };
        100.0 * n as f64 / self.all.n.max(1) as f64
    }
}

/// One (snap, novel) pair of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// SNAP at or above this cosine.
    pub snap: f32,
    /// NOVEL at or below this cosine.
    pub novel: f32,
    /// The summary under these thresholds.
    pub summary: Summary,
}

/// Held-out cases with their proposals and retrievals, ready to be decided
/// under any lane.
pub struct Evaluation<'a> {
    bank: &'a Bank,
    index: Flat<'a>,
    hit_k: usize,
    cases: Vec<Case>,
    retrieved: Vec<Retrieved>,
}

impl<'a> Evaluation<'a> {
    /// Retrieves candidates for every case: `proposals` holds the LVM's
    /// proposal of each case (`[cases, D]`); the decoder's settings (k,
    /// budget) and `retriever` find the best candidate, the context rows
    /// excluded. `tick` is called once per case (a progress bar).
    pub fn new(
        bank: &'a Bank,
        cases: Vec<Case>,
        proposals: &[f32],
        decoder: &Decoder,
        retriever: &dyn Retriever,
        hit_k: usize,
        tick: &dyn Fn(),
    ) -> Result<Evaluation<'a>, String> {
        let d = bank.dim();
        if proposals.len() != cases.len() * d {
            return Err(format!(
                "{} proposals of dimension {d} for {} cases",
                proposals.len() / d.max(1),
                cases.len()
            ));
        }
        let index = Flat::new(bank, Metric::Cosine).map_err(|e| e.to_string())?;
        let mut found = Vec::with_capacity(cases.len());
        for (case, v) in cases.iter().zip(proposals.chunks_exact(d)) {
            let context: Vec<Vec<f32>> = case
                .context
                .iter()
                .map(|&r| bank.row_f32(r as usize).into_owned())
                .collect();
            found.push((
                v.to_vec(),
                decoder.best(retriever, &context, v, &case.context),
            ));
            tick();
        }
        let mut eval = Evaluation {
            bank,
            index,
            hit_k,
            cases,
            retrieved: Vec::new(),
        };
        let v_scores = eval.score(found.iter().map(|(v, _)| Some(v.as_slice())))?;
        let cand_scores = eval.score(
            found
                .iter()
                .map(|(_, b)| b.as_ref().ok().map(|(_, c)| c.vector.as_slice())),
        )?;
        eval.retrieved = found
            .into_iter()
            .zip(v_scores.into_iter().zip(cand_scores))
            .map(|((v, best), (vs, cs))| Retrieved {
                v,
                best,
                v_score: vs.expect("every case has a proposal"),
                cand_score: cs,
            })
            .collect();
        Ok(eval)
    }

    /// The number of cases.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether there are no cases.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The cases, in order.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// (cosine to the true next vector, hit) of each vector given (None
    /// where there is none), case by case.
    fn score<'v>(
        &self,
        vectors: impl Iterator<Item = Option<&'v [f32]>>,
    ) -> Result<Vec<Option<(f32, bool)>>, String> {
        let vectors: Vec<Option<&[f32]>> = vectors.collect();
        let mut out = vec![None; vectors.len()];
        let todo: Vec<usize> = (0..vectors.len())
            .filter(|&i| vectors[i].is_some())
            .collect();
        for chunk in todo.chunks(CHUNK) {
            let queries: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| vectors[i].expect("filtered").iter().copied())
                .collect();
            let exclude: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&i| {
                    let mut e = self.cases[i].context.clone();
                    e.sort_unstable();
                    e.dedup();
                    e
                })
                .collect();
            let hits = self
                .index
                .search(&queries, self.hit_k, &exclude)
                .map_err(|e| e.to_string())?;
            for (&i, h) in chunk.iter().zip(hits) {
                let target = self.cases[i].target;
                let truth = self.bank.row_f32(target as usize);
                let v = vectors[i].expect("filtered");
                out[i] = Some((cosine(v, &truth), h.iter().any(|&(row, _)| row == target)));
            }
        }
        Ok(out)
    }

    /// Every case decided under `lane`, scored against the truth.
    pub fn outcomes(&self, lane: &Lane) -> Result<Vec<Outcome>, String> {
        let steps: Vec<_> = self
            .retrieved
            .iter()
            .map(|r| decide(lane, &r.v, r.best.clone()))
            .collect();
        // Only a BLEND emits a vector whose score is not known already.
        let blends = self.score(
            steps
                .iter()
                .map(|s| (s.decision == Decision::Blend).then_some(s.vector.as_slice())),
        )?;
        Ok(steps
            .into_iter()
            .zip(&self.retrieved)
            .zip(blends)
            .map(|((s, r), b)| {
                let (cos_true, hit) = match s.decision {
                    Decision::Snap => r.cand_score.expect("a SNAP has a candidate"),
                    Decision::Blend => b.expect("a BLEND was scored"),
                    Decision::Novel => r.v_score,
                };
                Outcome {
                    decision: s.decision,
                    cosine: s.cosine,
                    row: s.row,
                    alpha: s.alpha,
                    fallback: s.fallback,
                    cos_true,
                    hit,
                    lvm_cos_true: r.v_score.0,
                    lvm_hit: r.v_score.1,
                }
            })
            .collect())
    }

    /// The summary of every (snap, novel) pair with `novel < snap`, blending
    /// as `blend` says, in the order of `snaps` then `novels`; `tick` is
    /// called after each pair.
    pub fn sweep(
        &self,
        snaps: &[f32],
        novels: &[f32],
        blend_rule: Blend,
        tick: &dyn Fn(),
    ) -> Result<Vec<SweepRow>, String> {
        let mut rows = Vec::new();
        for &snap in snaps {
            for &novel in novels.iter().filter(|&&n| n < snap) {
                let lane = Lane {
                    name: format!("sweep {snap}/{novel}"),
                    snap,
                    novel,
                    blend: blend_rule,
                };
                rows.push(SweepRow {
                    snap,
                    novel,
                    summary: Summary::of(&self.outcomes(&lane)?),
                });
                tick();
            }
        }
        Ok(rows)
    }
}
