//! Hard negatives refreshed while a text retriever trains (ANCE-style): the
//! training queries ranked against the corpus with the weights of step `s`
//! by a background worker, the ranking used from step `s + lag` on.
//!
//! Determinism: which weights make a ranking and from which step it is used
//! depend only on the steps, never on timing. Generation `s` (a multiple of
//! `every`, or 0) is a copy of the weights at the start of step `s`; its
//! ranking becomes the one mined from at step `s + lag` (generation 0, the
//! starting weights, from the first step that mines: ranked in the
//! background during the curriculum's first `none` epochs, if it has
//! any). If the worker has not finished by then, the
//! training thread embeds the remaining batches itself beside it: it never
//! waits longer than one batch of the worker's, and every batch is embedded
//! the same way whoever embeds it, so the ranking is the same bits.
//! Generations whose ranking no mining step would use (the curriculum's
//! `none` epochs) are never made.
//!
//! A checkpoint holds the ranking in use (`mined.bin`) and the weights of
//! the generation under way (`refresh.safetensors`), which a resumed run
//! embeds again: resume is exact.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use rand::seq::index::sample;
use serde::{Deserialize, Serialize};
use tandem_text::mine::{in_band, BatchVectors, Candidates, Ranker};
use tandem_text::MineTexts;

use crate::curriculum::{Band, Curriculum};
use crate::miner::STREAM;
use crate::TrainError;

/// The checkpoint file of the ranking in use.
pub const MINED_FILE: &str = "mined.bin";
/// The checkpoint file of the weights of the generation under way.
pub const PENDING_FILE: &str = "refresh.safetensors";

/// When generations are made and used.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Steps between generations (0: only generation 0).
    pub every: u64,
    /// Steps from a generation's weights to its use (at most `every`).
    pub lag: u64,
    /// The generations made (their steps), ascending.
    pub needed: BTreeSet<u64>,
    /// The first step that mines (generation 0 is used from it).
    pub first_mining: u64,
}

impl Schedule {
    /// The generations a run of `steps` steps (`steps_per_epoch` each) with
    /// `curriculum` uses: generation `s` is made when some step between its
    /// first use and the next generation's mines.
    pub fn new(
        curriculum: &Curriculum,
        every: u64,
        lag: u64,
        steps: u64,
        steps_per_epoch: u64,
    ) -> Schedule {
        let lag = lag.min(every);
        let mines = |t: u64| {
            curriculum
                .band((t / steps_per_epoch.max(1)) as usize)
                .is_some()
        };
        let first_mining = (0..steps).find(|&t| mines(t)).unwrap_or(steps);
        let used_from = |s: u64| if s == 0 { first_mining } else { s + lag };
        let mut gens = vec![0];
        if every > 0 {
            gens.extend((1..).map(|k| k * every).take_while(|&s| s < steps));
        }
        let needed = gens
            .iter()
            .enumerate()
            .filter(|&(i, &s)| {
                let end = gens.get(i + 1).map_or(steps, |&n| used_from(n).min(steps));
                (used_from(s)..end).any(mines)
            })
            .map(|(_, &s)| s)
            .collect();
        Schedule {
            every,
            lag,
            needed,
            first_mining,
        }
    }

    /// The step from which generation `s` is mined from.
    pub fn used_from(&self, s: u64) -> u64 {
        if s == 0 {
            self.first_mining
        } else {
            s + self.lag
        }
    }
}

/// A batch's vectors, or why it has none (a panic's message).
type Vectors = Option<Result<BatchVectors, String>>;

/// One generation's ranking, embedded by whoever takes its batches.
struct Job {
    /// Its step.
    step: u64,
    model: Ranker,
    texts: MineTexts,
    pool: usize,
    /// Batches of text indices: documents, then queries offset by the
    /// number of documents.
    batches: Vec<Vec<usize>>,
    next: AtomicUsize,
    /// Each batch's vectors, and how many are in.
    done: Mutex<(Vec<Vectors>, usize)>,
    finished: Condvar,
    cancel: AtomicBool,
    result: OnceLock<Result<Candidates, String>>,
    started: Instant,
    seconds: OnceLock<f64>,
}

impl Job {
    fn new(step: u64, model: Ranker, texts: &MineTexts, pool: usize) -> Job {
        let batches = model.batches(&texts.queries, &texts.docs);
        let n = batches.len();
        Job {
            step,
            model,
            texts: texts.clone(),
            pool,
            batches,
            next: AtomicUsize::new(0),
            done: Mutex::new(((0..n).map(|_| None).collect(), 0)),
            finished: Condvar::new(),
            cancel: AtomicBool::new(false),
            result: OnceLock::new(),
            started: Instant::now(),
            seconds: OnceLock::new(),
        }
    }

    /// Embeds batches until none is left to take (or the job is cancelled).
    fn work(&self) {
        while !self.cancel.load(Ordering::Relaxed) {
            let b = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = self.batches.get(b) else {
                return;
            };
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.model
                    .embed_batch(batch, &self.texts.queries, &self.texts.docs)
            }))
            .map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            });
            let mut done = self.done.lock().expect("no panic holds the lock");
            done.0[b] = Some(out);
            done.1 += 1;
            self.finished.notify_all();
        }
    }

    /// The ranking: takes the batches left, waits for those under way, then
    /// ranks (once: the first thread through, under the lock).
    fn result(&self) -> &Result<Candidates, String> {
        self.work();
        let mut done = self.done.lock().expect("no panic holds the lock");
        while done.1 < self.batches.len() {
            done = self.finished.wait(done).expect("no panic holds the lock");
        }
        if self.result.get().is_none() {
            let c = self.rank(std::mem::take(&mut done.0));
            let _ = self.seconds.set(self.started.elapsed().as_secs_f64());
            let _ = self.result.set(c);
        }
        drop(done);
        self.result.get().expect("set above")
    }

    /// Ranks the documents for the queries from every batch's vectors.
    fn rank(&self, vectors: Vec<Vectors>) -> Result<Candidates, String> {
        let vectors = vectors
            .into_iter()
            .map(|v| v.expect("every batch is in"))
            .collect::<Result<Vec<_>, String>>()?;
        let (d, q) = self
            .model
            .gather(&self.batches, vectors, self.texts.docs.len());
        self.model
            .rank(d, q, &self.texts.positives, self.pool)
            .map_err(|e| e.to_string())
    }
}

/// The worker thread: embeds the jobs it is sent.
struct Worker {
    jobs: Option<Sender<Arc<Job>>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn start() -> Worker {
        let (tx, rx) = mpsc::channel::<Arc<Job>>();
        let handle = std::thread::Builder::new()
            .name("tandem-refresh".into())
            .spawn(move || {
                for job in rx {
                    if !job.cancel.load(Ordering::Relaxed) {
                        let _ = job.result();
                    }
                }
            })
            .expect("a thread can be spawned");
        Worker {
            jobs: Some(tx),
            handle: Some(handle),
        }
    }
}

/// Sums since the last `train` line.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Micro-batches mined, and the sums of their band fill and staleness.
    pub batches: f64,
    pub fill: f64,
    pub staleness: f64,
    /// Seconds the training thread spent on rankings (waiting or embedding).
    pub wait_s: f64,
    /// Seconds of the last ranking finished, from its start.
    pub last_s: Option<f64>,
}

/// The rankings of a run: the one in use and the one under way.
pub struct Refresher {
    schedule: Schedule,
    texts: MineTexts,
    pool: usize,
    /// The step of the ranking in use, and the ranking.
    active: Option<(u64, Arc<Candidates>)>,
    pending: Option<Arc<Job>>,
    worker: Option<Worker>,
    pub stats: RefreshStats,
}

/// What `state.json` says of the rankings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RefreshState {
    /// The step of the ranking in use (in `mined.bin`).
    pub active: Option<u64>,
    /// The step of the generation under way (weights in
    /// `refresh.safetensors`).
    pub pending: Option<u64>,
}

impl Refresher {
    pub fn new(schedule: Schedule, texts: MineTexts, pool: usize) -> Refresher {
        Refresher {
            schedule,
            texts,
            pool,
            active: None,
            pending: None,
            worker: None,
            stats: RefreshStats::default(),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Starts generation `step` from `model` (a copy of the weights of that
    /// step) on the worker.
    fn submit(&mut self, step: u64, model: Ranker) {
        let job = Arc::new(Job::new(step, model, &self.texts, self.pool));
        let worker = self.worker.get_or_insert_with(Worker::start);
        if let Some(tx) = &worker.jobs {
            // a worker that is gone leaves the job to the training thread
            let _ = tx.send(job.clone());
        }
        self.pending = Some(job);
    }

    /// What to do at the start of step `step`: the generation due from it
    /// put in use (finished here if the worker has not), then a new one
    /// started from the current weights (`snapshot()` makes the copy) when
    /// one is due. Returns a line for the person watching, if any.
    pub fn at_step(
        &mut self,
        step: u64,
        snapshot: impl FnOnce() -> Result<Ranker, TrainError>,
    ) -> Result<Option<String>, TrainError> {
        let mut said = self.use_due(step)?;
        if self.schedule.needed.contains(&step) && self.pending.is_none() {
            self.submit(step, snapshot()?);
            if let Some(now) = self.use_due(step)? {
                said = Some(now);
            }
        }
        Ok(said)
    }

    /// Puts the generation under way in use if it is due at `step`.
    fn use_due(&mut self, step: u64) -> Result<Option<String>, TrainError> {
        let due = self
            .pending
            .as_ref()
            .is_some_and(|j| self.schedule.used_from(j.step) <= step);
        if !due {
            return Ok(None);
        }
        let job = self.pending.take().expect("due");
        let t = Instant::now();
        let c = job.result().clone().map_err(|e| {
            TrainError::Message(format!(
                "refreshing the mined negatives (weights of step {}) failed: {e}; rerun the same command: training resumes from the last checkpoint",
                job.step
            ))
        })?;
        let waited = t.elapsed().as_secs_f64();
        self.stats.wait_s += waited;
        self.stats.last_s = job.seconds.get().copied();
        self.active = Some((job.step, Arc::new(c)));
        Ok(Some(format!(
            "mined negatives: the ranking of step {}'s weights in use from step {step} ({:.1} s to make, {:.1} s waited for)",
            job.step,
            self.stats.last_s.unwrap_or(0.0),
            waited
        )))
    }

    /// The ranking in use and its step.
    pub fn active(&self) -> Option<(u64, &Candidates)> {
        self.active.as_ref().map(|(s, c)| (*s, c.as_ref()))
    }

    /// For query `query` with positive `positive` (document indices of the
    /// training set), up to `band.count` documents drawn uniformly from the
    /// ranking's candidates whose score lies in the band, measured against
    /// the positive's score; `draw` indexes the random stream
    /// ([`STREAM`]), `seed` is the run's. Counts the fill and staleness at
    /// `step`.
    pub fn mine(
        &mut self,
        band: Band,
        query: usize,
        positive: usize,
        seed: u64,
        draw: u64,
        step: u64,
    ) -> Vec<usize> {
        let Some((from, c)) = &self.active else {
            return Vec::new();
        };
        let ps = &self.texts.positives[query];
        let at = ps
            .binary_search(&(positive as u32))
            .expect("the positive is one of the query's");
        let pos = c.positive_scores[query][at];
        let pool: Vec<u32> = in_band(&c.hits[query], pos, band.lo, band.hi)
            .map(|h| h.0)
            .collect();
        let take = band.count.min(pool.len());
        let mut rng = STREAM.rng(seed, draw);
        let mut picked: Vec<usize> = sample(&mut rng, pool.len(), take)
            .into_iter()
            .map(|i| pool[i] as usize)
            .collect();
        picked.sort_unstable();
        self.stats.batches += 1.0;
        self.stats.fill += take as f64 / band.count.max(1) as f64;
        self.stats.staleness += step.saturating_sub(*from) as f64;
        picked
    }

    /// The state and files a checkpoint keeps.
    pub fn snapshot(&self) -> (RefreshState, Vec<(String, Vec<u8>)>) {
        let mut files = Vec::new();
        if let Some((_, c)) = &self.active {
            files.push((MINED_FILE.to_string(), c.to_bytes()));
        }
        if let Some(j) = &self.pending {
            files.push((
                PENDING_FILE.to_string(),
                j.model.params().to_safetensors(&Default::default()),
            ));
        }
        (
            RefreshState {
                active: self.active.as_ref().map(|a| a.0),
                pending: self.pending.as_ref().map(|j| j.step),
            },
            files,
        )
    }

    /// Takes back what [`Refresher::snapshot`] kept: the ranking in use,
    /// and the generation under way started again from its weights
    /// (`model` with them loaded).
    pub fn restore(
        &mut self,
        state: &RefreshState,
        mined: Option<&[u8]>,
        pending: Option<Ranker>,
    ) -> Result<(), String> {
        self.active = match (state.active, mined) {
            (Some(step), Some(bytes)) => {
                let c = Candidates::from_bytes(bytes)
                    .filter(|c| c.hits.len() == self.texts.queries.len())
                    .ok_or_else(|| format!("{MINED_FILE} is damaged or is not this data's"))?;
                Some((step, Arc::new(c)))
            }
            (None, _) => None,
            (Some(_), None) => return Err(format!("{MINED_FILE} is missing")),
        };
        self.pending = None;
        match (state.pending, pending) {
            (Some(step), Some(model)) => self.submit(step, model),
            (None, _) => {}
            (Some(_), None) => return Err(format!("{PENDING_FILE} is missing")),
        }
        Ok(())
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(j) = &self.pending {
            j.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(mut w) = self.worker.take() {
            w.jobs.take();
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_made_only_where_a_mining_step_uses_them() {
        // 4 epochs of 10 steps, mining in epochs 2-3
        let c: Curriculum = "0-1:none;2-3:4@0.5-0.9".parse().unwrap();
        let s = Schedule::new(&c, 10, 10, 40, 10);
        // generation 10 is used from step 20 (the first mining step), 20
        // from 30; 30 would be used from 40, after the run
        assert_eq!(s.needed, BTreeSet::from([10, 20]));
        let s = Schedule::new(&c, 10, 5, 40, 10);
        assert_eq!(
            s.needed,
            BTreeSet::from([10, 20, 30]),
            "15..25, 25..35, 35..40"
        );
        // refresh_every 0: the starting weights' ranking, when anything
        // mines, made while the `none` epochs train
        let s = Schedule::new(&c, 0, 0, 40, 10);
        assert_eq!(s.needed, BTreeSet::from([0]));
        assert_eq!(s.used_from(0), 20);
        let none = Curriculum::none();
        assert!(Schedule::new(&none, 10, 10, 40, 10).needed.is_empty());
        // mining from the start: generation 0 at once
        let all: Curriculum = "0-3:4@0.5-0.9".parse().unwrap();
        let s = Schedule::new(&all, 8, 8, 40, 10);
        assert_eq!(s.needed, BTreeSet::from([0, 8, 16, 24]));
        assert_eq!(s.used_from(0), 0);
        assert_eq!(s.used_from(8), 16);
    }
}
