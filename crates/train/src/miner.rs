//! The hard-negative miner: for each example, the bank rows whose cosine to
//! the anchor (the positive, or the query) lies in the curriculum's band,
//! near-duplicates of the positive and the context rows left out, sampled
//! deterministically. `sync` mines in the training thread; `pipelined` mines
//! in a worker thread ahead of training over a bounded channel, a group of
//! micro-batches in one search (the bank is read once for all of them).
//! Both call [`mine_with`], and a query's hits do not depend on what it is
//! searched with, so they return the same negatives bit for bit; a worker
//! that is late is replaced by the same synchronous search.
//!
//! With a [`HitCache`] (bands against the positive), an example's rows in
//! the band are searched once per run and drawn from in every later epoch:
//! the draw depends only on those rows and the micro-batch, so the
//! negatives are again the same bit for bit.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rand::seq::index::sample;
use tandem_bank::Bank;
use tandem_search::Index;

use crate::curriculum::Band;
use crate::harness::Stream;
use crate::mine_cache::HitCache;
use crate::TrainError;

/// The random stream of the sampling inside the band (index: global
/// micro-batch * B + example).
pub const STREAM: Stream = Stream {
    id: 4,
    name: "mine",
    index: "micro-batch*B+example",
};

/// What to mine for one micro-batch.
#[derive(Debug, Clone)]
pub struct MineRequest {
    /// The global micro-batch index (seeds the sampling).
    pub micro: u64,
    /// The band and count.
    pub band: Band,
    /// The training example of each (its index in the train split: what a
    /// [`HitCache`] keys on).
    pub examples: Vec<u32>,
    /// The positive row of each example.
    pub positives: Vec<u32>,
    /// The context rows of each example (never negatives).
    pub contexts: Vec<Vec<u32>>,
    /// Query vectors (`[B, D]`) when the band is measured against the
    /// query; `None` measures against the positive.
    pub queries: Option<Vec<f32>>,
    /// The last request of a group: the pipelined worker collects requests
    /// until one has `flush` set, then mines the group in one search.
    pub flush: bool,
}

/// The negatives of one micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Mined {
    /// The global micro-batch index.
    pub micro: u64,
    /// Negative rows per example (at most the band's count; fewer when the
    /// band holds fewer candidates).
    pub negatives: Vec<Vec<u32>>,
    /// Seconds spent searching.
    pub secs: f64,
}

impl Mined {
    /// Negatives found over negatives asked for.
    pub fn fill(&self, band: &Band) -> f64 {
        let found: usize = self.negatives.iter().map(Vec::len).sum();
        found as f64 / (band.count * self.negatives.len()).max(1) as f64
    }
}

/// Mining settings that do not change during a run.
#[derive(Debug, Clone, Copy)]
pub struct MineSettings {
    /// Nearest rows searched before the band filter.
    pub pool: usize,
    /// Cosine to the positive at or above which a row is a near-duplicate.
    pub dup_threshold: f32,
    /// The run's seed.
    pub seed: u64,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

fn cosine(a_unit: &[f32], b: &[f32]) -> f32 {
    let (dot, nn) = b
        .iter()
        .zip(a_unit)
        .fold((0.0f32, 0.0f32), |(d, n), (x, y)| (d + x * y, n + x * x));
    dot / nn.sqrt().max(1e-12)
}

/// Mines one micro-batch with `index` (a cosine index over `bank`).
pub fn mine(
    index: &dyn Index,
    bank: &Bank,
    s: &MineSettings,
    req: &MineRequest,
) -> Result<Mined, TrainError> {
    let mut m = mine_many(index, bank, s, std::slice::from_ref(req))?;
    Ok(m.pop().expect("one request, one result"))
}

/// Mines several micro-batches with one search of all their anchors: the
/// negatives [`mine`] gives each (a query's hits do not depend on the
/// others searched with it); the time is shared evenly.
pub fn mine_many(
    index: &dyn Index,
    bank: &Bank,
    s: &MineSettings,
    reqs: &[MineRequest],
) -> Result<Vec<Mined>, TrainError> {
    mine_with(index, bank, s, reqs, None)
}

/// [`mine_many`] drawing from `cache` where it can: the examples of
/// positive-anchored requests it lacks are searched (once each, in one
/// search), their rows in every band of the cache stored, and every such
/// request drawn from the cache. Requests against the query, or whose band
/// the cache does not hold, are searched as [`mine_many`] searches them.
pub fn mine_with(
    index: &dyn Index,
    bank: &Bank,
    s: &MineSettings,
    reqs: &[MineRequest],
    cache: Option<&HitCache>,
) -> Result<Vec<Mined>, TrainError> {
    let t = Instant::now();
    let cached = |req: &MineRequest| {
        let c = cache?;
        if req.queries.is_some() {
            return None;
        }
        Some((c, c.band_index(&req.band)?))
    };
    // The anchors to search: the examples the cache lacks (each once), and
    // every example of the requests it cannot serve.
    let mut anchors: Vec<Anchored> = Vec::new();
    let mut missing: Vec<(u32, usize)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (r, req) in reqs.iter().enumerate() {
        match cached(req) {
            Some((c, band)) => {
                for (i, got) in c.lookup(&req.examples, band).iter().enumerate() {
                    let e = req.examples[i];
                    if got.is_none() && seen.insert(e) {
                        missing.push((e, anchors.len()));
                        anchors.push(Anchored { req: r, i });
                    }
                }
            }
            None => anchors.extend((0..req.positives.len()).map(|i| Anchored { req: r, i })),
        }
    }
    let hits = search(index, bank, s, reqs, &anchors)?;
    if let Some(c) = cache {
        for &(e, at) in &missing {
            let a = &anchors[at];
            let req = &reqs[a.req];
            let per_band: Vec<Vec<u32>> = c
                .bands()
                .iter()
                .map(|band| in_band(bank, s, band, req.positives[a.i], None, &hits[at]))
                .collect();
            c.insert(e, &per_band);
        }
    }
    let mut searched = anchors.iter().zip(&hits).peekable();
    let mut out = Vec::with_capacity(reqs.len());
    for (r, req) in reqs.iter().enumerate() {
        let b = req.positives.len();
        let rows: Vec<Vec<u32>> = match cached(req) {
            Some((c, band)) => c
                .lookup(&req.examples, band)
                .into_iter()
                .map(|rows| rows.expect("every missing example was just stored"))
                .collect(),
            None => (0..b)
                .map(|i| {
                    let (a, hits) = searched.next().expect("searched in order");
                    debug_assert_eq!((a.req, a.i), (r, i));
                    let query = req
                        .queries
                        .as_ref()
                        .map(|q| &q[i * bank.dim()..][..bank.dim()]);
                    in_band(bank, s, &req.band, req.positives[i], query, hits)
                })
                .collect(),
        };
        // The searches of the cache's missing examples are not the request's own.
        while searched.peek().is_some_and(|(a, _)| a.req == r) {
            searched.next();
        }
        let negatives = rows
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                draw(
                    rows,
                    req.band.count,
                    s.seed,
                    req.micro * b as u64 + i as u64,
                )
            })
            .collect();
        out.push(Mined {
            micro: req.micro,
            negatives,
            secs: 0.0,
        });
    }
    let secs = t.elapsed().as_secs_f64() / reqs.len().max(1) as f64;
    out.iter_mut().for_each(|m| m.secs = secs);
    Ok(out)
}

/// Example `i` of request `req`, searched.
struct Anchored {
    req: usize,
    i: usize,
}

/// The nearest `pool` rows to each anchor (the query, or the positive), the
/// example's context and positive left out: one search for all of them.
fn search(
    index: &dyn Index,
    bank: &Bank,
    s: &MineSettings,
    reqs: &[MineRequest],
    anchors: &[Anchored],
) -> Result<Vec<Vec<(u32, f32)>>, TrainError> {
    if anchors.is_empty() {
        return Ok(Vec::new());
    }
    let d = bank.dim();
    let mut queries: Vec<f32> = Vec::with_capacity(anchors.len() * d);
    let mut exclude: Vec<Vec<u32>> = Vec::with_capacity(anchors.len());
    for a in anchors {
        let req = &reqs[a.req];
        let p = req.positives[a.i];
        match &req.queries {
            Some(q) => queries.extend_from_slice(&q[a.i * d..(a.i + 1) * d]),
            None => queries.extend_from_slice(&bank.row_f32(p as usize)),
        }
        let mut e: Vec<u32> = req.contexts[a.i].iter().copied().chain([p]).collect();
        e.sort_unstable();
        e.dedup();
        exclude.push(e);
    }
    let pool = s.pool.min(bank.rows().saturating_sub(1)).max(1);
    index
        .search(&queries, pool, &exclude)
        .map_err(|e| TrainError::Invalid {
            path: bank.path().map(|p| p.to_path_buf()).unwrap_or_default(),
            problem: format!("mining search failed: {e}"),
            fix: "check the bank and the mining index".into(),
        })
}

/// The rows of `hits` (an example's search, best first) in `band` that are
/// not near-duplicates of its `positive`, in the order of `hits`. `query`:
/// the anchor when it is not the positive (the hits' scores are then to the
/// query, and the cosine to the positive is computed).
fn in_band(
    bank: &Bank,
    s: &MineSettings,
    band: &Band,
    positive: u32,
    query: Option<&[f32]>,
    hits: &[(u32, f32)],
) -> Vec<u32> {
    let pos = query.map(|_| unit(&bank.row_f32(positive as usize)));
    hits.iter()
        .filter(|&&(_, c)| c >= band.lo && c <= band.hi)
        .filter(|&&(row, c)| {
            let to_pos = match &pos {
                Some(pos) => cosine(pos, &bank.row_f32(row as usize)),
                None => c,
            };
            to_pos < s.dup_threshold
        })
        .map(|&(row, _)| row)
        .collect()
}

/// `count` of `rows` (fewer when there are fewer), sampled with draw
/// `index` of [`STREAM`], sorted.
fn draw(rows: &[u32], count: usize, seed: u64, index: u64) -> Vec<u32> {
    let take = count.min(rows.len());
    let mut rng = STREAM.rng(seed, index);
    let mut picked: Vec<u32> = sample(&mut rng, rows.len(), take)
        .into_iter()
        .map(|k| rows[k])
        .collect();
    picked.sort_unstable();
    picked
}

/// Mining time accounting for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct MineStats {
    /// Seconds spent searching (worker or training thread).
    pub search_secs: f64,
    /// Seconds the training thread waited for or did mining.
    pub blocked_secs: f64,
    /// Micro-batches mined synchronously because the worker was late.
    pub fallbacks: u64,
    /// Sum of fill rates and their count.
    pub fill_sum: f64,
    /// Micro-batches mined.
    pub batches: u64,
}

impl MineStats {
    /// The fraction of search time hidden behind training.
    pub fn hidden(&self) -> f64 {
        if self.search_secs <= 0.0 {
            return 1.0;
        }
        (1.0 - self.blocked_secs / self.search_secs).clamp(0.0, 1.0)
    }

    /// The mean band fill rate.
    pub fn fill(&self) -> f64 {
        if self.batches == 0 {
            return 1.0;
        }
        self.fill_sum / self.batches as f64
    }
}

/// A worker thread mining ahead of training.
pub struct Pipeline {
    jobs: Option<SyncSender<MineRequest>>,
    results: Receiver<Result<Mined, String>>,
    timeout: Duration,
    /// Requests sent and not yet received, oldest first.
    pending: std::collections::VecDeque<MineRequest>,
}

impl Pipeline {
    /// Starts the worker in `scope`. `depth` bounds how far ahead it runs;
    /// a group of requests (up to one with `flush`) must fit in it.
    pub fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        index: &'env (dyn Index + Sync),
        bank: &'env Bank,
        settings: MineSettings,
        cache: Option<&'env HitCache>,
        depth: usize,
        timeout: Duration,
    ) -> Pipeline {
        let (jobs, job_rx) = mpsc::sync_channel::<MineRequest>(depth);
        let (res_tx, results) = mpsc::sync_channel(depth);
        scope.spawn(move || {
            let mut group = Vec::new();
            for req in job_rx {
                let flush = req.flush;
                group.push(req);
                if !flush {
                    continue;
                }
                let reqs = std::mem::take(&mut group);
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    mine_with(index, bank, &settings, &reqs, cache)
                }));
                let msgs = match out {
                    Ok(Ok(ms)) => ms.into_iter().map(Ok).collect(),
                    Ok(Err(e)) => vec![Err(e.to_string())],
                    Err(p) => vec![Err(format!(
                        "the mining worker panicked: {}",
                        p.downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| p.downcast_ref::<&str>().copied())
                            .unwrap_or("unknown panic")
                    ))],
                };
                for msg in msgs {
                    let failed = msg.is_err();
                    if res_tx.send(msg).is_err() || failed {
                        return;
                    }
                }
            }
        });
        Pipeline {
            jobs: Some(jobs),
            results,
            timeout,
            pending: Default::default(),
        }
    }

    /// Queues a request (blocks while the worker is `depth` requests behind).
    pub fn submit(&mut self, req: MineRequest) -> Result<(), TrainError> {
        self.pending.push_back(req.clone());
        let sender = self.jobs.as_ref().expect("pipeline open");
        sender.send(req).map_err(|_| worker_gone())
    }

    /// The result of the oldest pending request: the worker's, or a
    /// synchronous search (with the worker's `cache`) when the worker takes
    /// longer than the timeout.
    pub fn next(
        &mut self,
        index: &dyn Index,
        bank: &Bank,
        settings: &MineSettings,
        cache: Option<&HitCache>,
        stats: &mut MineStats,
    ) -> Result<Mined, TrainError> {
        let req = self.pending.pop_front().expect("a request was submitted");
        let t = Instant::now();
        loop {
            match self.results.recv_timeout(self.timeout) {
                Ok(Ok(m)) if m.micro < req.micro => continue, // replaced earlier by a sync search
                Ok(Ok(m)) => {
                    debug_assert_eq!(m.micro, req.micro);
                    stats.search_secs += m.secs;
                    stats.blocked_secs += t.elapsed().as_secs_f64();
                    return Ok(m);
                }
                Ok(Err(msg)) => {
                    return Err(TrainError::Invalid {
                        path: bank.path().map(|p| p.to_path_buf()).unwrap_or_default(),
                        problem: format!("mining failed: {msg}"),
                        fix: "fix the cause above and rerun the same command: training resumes from the last checkpoint".into(),
                    })
                }
                Err(RecvTimeoutError::Timeout) => {
                    let m = mine_with(index, bank, settings, std::slice::from_ref(&req), cache)?
                        .pop()
                        .expect("one request, one result");
                    stats.fallbacks += 1;
                    stats.search_secs += m.secs;
                    stats.blocked_secs += t.elapsed().as_secs_f64();
                    // The worker's answer for this request arrives later and
                    // is skipped by the `m.micro < req.micro` arm.
                    return Ok(m);
                }
                Err(RecvTimeoutError::Disconnected) => return Err(worker_gone()),
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the job channel ends the worker; drain so it is not
        // blocked on a full result channel.
        self.jobs.take();
        while self.results.recv().is_ok() {}
    }
}

fn worker_gone() -> TrainError {
    TrainError::Invalid {
        path: Default::default(),
        problem: "the mining worker stopped unexpectedly".into(),
        fix: "rerun with --miner sync to see the underlying error".into(),
    }
}
