//! The vector task: a query tower over the context of a bank-vector
//! sequence, trained to find the next row. One implementation serves both
//! kinds of run, which differ only in their config:
//!
//! * a two-tower retriever (`task = "retriever"`): InfoNCE of the query
//!   against the doc tower's vectors of the in-batch positives, the mined
//!   hard negatives of the curriculum, random rows and a memory queue of
//!   recent positives; scored by Recall@k;
//! * a next-vector model (LVM, `task = "lvm"`): the query is a prediction of
//!   the next vector itself (an identity doc tower, cosine/MSE to the target
//!   mixed with InfoNCE); scored by Hit@k of the true next row.
//!
//! A micro-batch is `batch` examples in the epoch's order; the memory queue
//! goes into each checkpoint (only its bank rows for an identity doc tower).

mod eval;
mod setup;

use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::index::sample;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tandem_data::{Dataset, Example, Split};
use tandem_nn::{
    Batch, DocCache, InfoNce, LossInput, LossOutput, Model, Params, QueryCache, Regression,
};
use tandem_search::{Flat, Index};

use crate::checkpoint::Loaded;
use crate::config::{Anchor, MinerMode, TrainConfig};
use crate::curriculum::Band;
use crate::encode::{self, fill_batch};
use crate::harness::{damaged, Micro, Scores, Snapshot, Stream, Task, Tested, TrainLine};
use crate::memory::Estimate;
use crate::mine_cache::{self, CacheMark, HitCache};
use crate::miner::{self, mine_with, MineRequest, MineSettings, MineStats, Mined, Pipeline};
use crate::queue::MemoryQueue;
use crate::TrainError;
use setup::DataFingerprint;

/// Parameter initialisation (index 0).
const INIT: Stream = Stream {
    id: 1,
    name: "init",
    index: "0",
};
/// The example order of an epoch (index: the epoch); the dense task's too.
pub(crate) const ORDER: Stream = Stream {
    id: 2,
    name: "order",
    index: "epoch",
};
/// Random negatives of a micro-batch (index: the global micro-batch).
const RANDOM: Stream = Stream {
    id: 3,
    name: "random",
    index: "micro-batch",
};
const STREAMS: [Stream; 4] = [INIT, ORDER, RANDOM, miner::STREAM];

/// Micro-batches the pipelined miner searches at once (the bank is read
/// once for all their positives).
const MINE_GROUP: u64 = 32;

/// How far ahead the pipelined miner runs, in micro-batches: two groups,
/// so that the next group is mined while this one trains.
const MINE_DEPTH: usize = 2 * MINE_GROUP as usize;

/// What the checkpoint's `state.json` holds for the task.
#[derive(Debug, Serialize, Deserialize)]
pub struct VectorState {
    /// The dataset the run trains on.
    data: DataFingerprint,
    queue_capacity: usize,
    queue_next: usize,
    queue_rows: Vec<u32>,
    /// The prefix of the run's `mine-cache.bin` this checkpoint covers
    /// (none: the cache is mined again on resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mine_cache: Option<CacheMark>,
}

/// A retriever or an LVM over a dataset of bank-vector sequences.
pub struct VectorTask<'a> {
    setup: Setup<'a>,
    model: Model,
    queue: MemoryQueue,
    /// The pipelined miner while the loop runs.
    ahead: Option<Ahead>,
    /// The positive-anchored hits of the run, when the curriculum mines
    /// against the positive.
    cache: Option<Arc<HitCache>>,
    /// Why the cache file could not be written, once said.
    cache_failed: std::cell::Cell<bool>,
    /// The tenths of the cache's fill last reported (11: finished, said).
    cache_said: usize,
    /// The exact index over the bank that validation and the baselines
    /// rank with, built once.
    eval_index: Option<Flat<'a>>,
    /// The epoch whose order is cached, and that order.
    order: (usize, Vec<usize>),
    buf: Buffers,
    stats: MineStats,
    /// `stats.fill_sum` and `stats.batches` at the last `train` line.
    fill_mark: (f64, u64),
    warned_band: Option<Band>,
    /// Accuracy sum and micro-batches since the last `train` line.
    accuracy: (f64, u64),
}

/// What does not change during a run.
struct Setup<'a> {
    cfg: &'a TrainConfig,
    ds: &'a Dataset,
    data: DataFingerprint,
    train: Vec<Example<'a>>,
    val: Vec<Example<'a>>,
    len: usize,
    steps_per_epoch: u64,
    loss: InfoNce,
    mine: MineSettings,
    /// What the miner searches (shared with its worker).
    index: Arc<dyn Index + 'a>,
}

/// The mining worker and the next micro-batch to ask it for.
struct Ahead {
    pipeline: Pipeline,
    next: Option<u64>,
}

/// Reusable buffers of one micro-batch.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    lens: Vec<usize>,
    pos: Vec<f32>,
    cand: Vec<f32>,
    cand_rows: Vec<u32>,
    valid: Vec<bool>,
    queue_valid: Vec<bool>,
    qc: QueryCache,
    pos_dc: DocCache,
    cand_dc: DocCache,
    out: LossOutput,
}

impl<'a> VectorTask<'a> {
    /// The task `cfg` describes over the dataset `ds`, its model freshly
    /// initialised; every setting is checked against the data first. Build
    /// it after [`Harness::new`](crate::harness::Harness::new), which sets
    /// the threads the exact mining index is built with.
    pub fn new(cfg: &'a TrainConfig, ds: &'a Dataset) -> Result<VectorTask<'a>, TrainError> {
        let bank = ds.bank();
        if let Some(&k) = cfg.ks.iter().find(|&&k| k > bank.rows()) {
            return Err(cfg.invalid_key(
                "ks",
                format!("cutoff {k} exceeds the bank's {} rows", bank.rows()),
                "pass --ks with cutoffs no larger than the bank, e.g. --ks 1,5,10",
            ));
        }
        let train: Vec<Example<'_>> = ds.examples(Split::Train).collect();
        let val: Vec<Example<'_>> = ds.examples(Split::Val).take(eval_limit(cfg)).collect();
        let micro = (train.len() / cfg.batch) as u64;
        let steps_per_epoch = micro / cfg.accum as u64;
        if steps_per_epoch == 0 {
            return Err(cfg.invalid_key(
                "batch",
                format!(
                    "the train split of {} has {} examples, fewer than one optimizer step of batch {} x accum {}",
                    cfg.data.display(),
                    train.len(),
                    cfg.batch,
                    cfg.accum
                ),
                "lower --batch or --accum",
            ));
        }
        let mcfg = setup::model_config(cfg, bank);
        mcfg.check().map_err(|e| {
            cfg.invalid_key(
                "kind",
                e.to_string(),
                "adjust --kind, --hidden, --projection or --doc",
            )
        })?;
        let index = setup::mining_index(cfg, bank)?;
        let cache = setup::mines_cached(cfg).then(|| {
            Arc::new(HitCache::new(
                &cfg.out,
                train.len(),
                mine_cache::bands(&cfg.curriculum),
                cfg.mine_pool,
                cfg.dup_threshold,
            ))
        });
        let model = Model::new(mcfg, INIT.seed(cfg.seed, 0))
            .map_err(|e| cfg.invalid_key("kind", e.to_string(), "adjust the model keys"))?;
        Ok(VectorTask {
            setup: Setup {
                cfg,
                ds,
                data: setup::data_fingerprint(ds)?,
                train,
                val,
                len: ds.context_len(),
                steps_per_epoch,
                loss: InfoNce {
                    tau: cfg.tau,
                    margin: cfg.margin,
                },
                mine: MineSettings {
                    pool: cfg.mine_pool,
                    dup_threshold: cfg.dup_threshold,
                    seed: cfg.seed,
                },
                index: Arc::from(index),
            },
            model,
            queue: MemoryQueue::new(cfg.queue, bank.dim()),
            ahead: None,
            cache,
            cache_failed: Default::default(),
            cache_said: 0,
            eval_index: None,
            order: (usize::MAX, Vec::new()),
            buf: Buffers::default(),
            stats: MineStats::default(),
            fill_mark: (0.0, 0),
            warned_band: None,
            accuracy: (0.0, 0),
        })
    }
}

/// Validation and test examples evaluated: the first `eval_limit` (0 = all).
fn eval_limit(cfg: &TrainConfig) -> usize {
    if cfg.eval_limit == 0 {
        usize::MAX
    } else {
        cfg.eval_limit
    }
}

impl Setup<'_> {
    fn micro_per_epoch(&self) -> u64 {
        self.steps_per_epoch * self.cfg.accum as u64
    }

    fn epoch_of_micro(&self, g: u64) -> usize {
        (g / self.micro_per_epoch()) as usize
    }

    /// The train examples (indices) of global micro-batch `g`.
    fn micro_indices<'o>(&self, g: u64, order: &'o mut (usize, Vec<usize>)) -> &'o [usize] {
        let e = self.epoch_of_micro(g);
        if order.0 != e || order.1.is_empty() {
            let mut perm: Vec<usize> = (0..self.train.len()).collect();
            perm.shuffle(&mut ORDER.rng(self.cfg.seed, e as u64));
            *order = (e, perm);
        }
        let m = (g % self.micro_per_epoch()) as usize;
        let b = self.cfg.batch;
        &order.1[m * b..(m + 1) * b]
    }

    /// The examples of global micro-batch `g`.
    fn micro_batch(&self, g: u64, order: &mut (usize, Vec<usize>)) -> Vec<&Example<'_>> {
        self.micro_indices(g, order)
            .iter()
            .map(|&k| &self.train[k])
            .collect()
    }

    /// What to mine for global micro-batch `g` of `total` (`None` when its
    /// epoch does not mine). Requests are grouped by [`MINE_GROUP`]
    /// micro-batches (and cut where the run or the mining epochs end): the
    /// pipelined worker mines a group in one search.
    fn mine_request(
        &self,
        g: u64,
        total: u64,
        order: &mut (usize, Vec<usize>),
        queries: Option<Vec<f32>>,
    ) -> Option<MineRequest> {
        let band = self.cfg.curriculum.band(self.epoch_of_micro(g))?;
        let examples = self
            .micro_indices(g, order)
            .iter()
            .map(|&k| k as u32)
            .collect();
        let exs = self.micro_batch(g, order);
        let next = g + 1;
        let flush = next.is_multiple_of(MINE_GROUP)
            || next >= total
            || self
                .cfg
                .curriculum
                .band(self.epoch_of_micro(next))
                .is_none();
        Some(MineRequest {
            micro: g,
            band,
            examples,
            positives: exs.iter().map(|e| e.target).collect(),
            contexts: exs.iter().map(|e| e.context.to_vec()).collect(),
            queries,
            flush,
        })
    }
}

impl Task for VectorTask<'_> {
    type State = VectorState;

    fn describe(&self) -> String {
        let (cfg, bank) = (self.setup.cfg, self.setup.ds.bank());
        format!(
            "{}: {} tower over {} ({} x {}), {} train / {} val examples",
            cfg.command(),
            cfg.kind,
            cfg.data.display(),
            bank.rows(),
            bank.dim(),
            self.setup.train.len(),
            self.setup.val.len(),
        )
    }

    fn title(&self) -> String {
        let cfg = self.setup.cfg;
        format!(
            "{}: {} tower on {}",
            cfg.command(),
            cfg.kind,
            cfg.data.display()
        )
    }

    fn outputs(&self) -> &'static [&'static str] {
        &["test.run", "test.qrels", mine_cache::FILE]
    }

    fn streams(&self) -> &'static [Stream] {
        &STREAMS
    }

    fn steps_per_epoch(&self) -> u64 {
        self.setup.steps_per_epoch
    }

    fn estimate(&self, estimate: &mut Estimate) {
        setup::estimate(
            self.setup.cfg,
            self.model.config(),
            self.setup.ds.bank(),
            self.setup.val.len(),
            self.setup.train.len(),
            estimate,
        );
    }

    fn shrink_keys(&self) -> &'static [&'static str] {
        &["hidden", "queue", "batch"]
    }

    fn params(&self) -> &Params {
        self.model.params()
    }

    fn params_mut(&mut self) -> &mut Params {
        self.model.params_mut()
    }

    fn weights_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            "config".to_string(),
            serde_json::to_string(self.model.config()).expect("plain struct"),
        )])
    }

    fn with_workers<R>(&mut self, train: impl FnOnce(&mut Self) -> R) -> R {
        let cfg = self.setup.cfg;
        if !(cfg.miner == MinerMode::Pipelined && cfg.curriculum.mines()) {
            return train(self);
        }
        let index = Arc::clone(&self.setup.index);
        let cache = self.cache.clone();
        let bank = self.setup.ds.bank();
        std::thread::scope(|scope| {
            self.ahead = Some(Ahead {
                pipeline: Pipeline::start(
                    scope,
                    &*index,
                    bank,
                    self.setup.mine,
                    cache.as_deref(),
                    MINE_DEPTH,
                    Duration::from_secs_f64(cfg.miner_timeout),
                ),
                next: None,
            });
            let out = catch_unwind(AssertUnwindSafe(|| train(&mut *self)));
            // Dropping the pipeline ends its worker, which the scope joins.
            self.ahead = None;
            out.unwrap_or_else(|panic| resume_unwind(panic))
        })
    }

    fn micro_step(&mut self, at: &Micro<'_>, grads: &mut Params) -> Result<f64, TrainError> {
        let setup = &self.setup;
        let cfg = setup.cfg;
        let bank = setup.ds.bank();
        let d = bank.dim();
        let g = at.global;
        let (model, buf, order, stats) =
            (&self.model, &mut self.buf, &mut self.order, &mut self.stats);
        if let Some(ahead) = &mut self.ahead {
            // Keep the worker MINE_DEPTH micro-batches ahead (at most
            // MINE_DEPTH + 1 requests outstanding: fewer than the two
            // channels and the worker hold, so sending never deadlocks),
            // which covers the rest of this group and the whole next one.
            let total = at.steps * at.accum as u64;
            let next = ahead.next.get_or_insert(g);
            let upto = (g + 1 + MINE_DEPTH as u64).min(total);
            while *next < upto {
                if let Some(req) = setup.mine_request(*next, total, order, None) {
                    ahead.pipeline.submit(req)?;
                }
                *next += 1;
            }
        }
        let exs = setup.micro_batch(g, order);
        fill_batch(bank, &exs, setup.len, &mut buf.x, &mut buf.lens);
        let batch = Batch {
            x: &buf.x,
            lens: &buf.lens,
            len: setup.len,
            dim: d,
        };
        model.forward_queries(&batch, &mut buf.qc);
        let positives: Vec<u32> = exs.iter().map(|e| e.target).collect();
        let band = cfg.curriculum.band(at.epoch);
        let index = setup.index.as_ref();
        let cache = self.cache.as_deref();
        let mined: Option<Mined> = match (band, &mut self.ahead) {
            (None, _) => None,
            (Some(_), Some(ahead)) => {
                Some(
                    ahead
                        .pipeline
                        .next(index, bank, &setup.mine, cache, stats)?,
                )
            }
            (Some(_), None) => {
                let queries = (cfg.band_anchor == Anchor::Query).then(|| buf.qc.queries().to_vec());
                let total = at.steps * at.accum as u64;
                let req = setup
                    .mine_request(g, total, order, queries)
                    .expect("band checked");
                let t = Instant::now();
                let m = mine_with(index, bank, &setup.mine, std::slice::from_ref(&req), cache)?
                    .pop()
                    .expect("one request, one result");
                stats.search_secs += m.secs;
                stats.blocked_secs += t.elapsed().as_secs_f64();
                Some(m)
            }
        };
        if let (Some(m), Some(b)) = (&mined, band) {
            stats.fill_sum += m.fill(&b);
            stats.batches += 1;
        }
        if let (Some(cache), true) = (&self.cache, mined.is_some()) {
            // The one-off mining of the cache, in tenths.
            let (done, bytes) = cache.size();
            // An epoch's examples (those past the last whole micro-batch
            // wait for an epoch that draws them).
            let all = (setup.micro_per_epoch() as usize * cfg.batch).min(setup.train.len());
            let tenths = done * 10 / all.max(1);
            if tenths > self.cache_said.min(10) || (done >= all && self.cache_said <= 10) {
                self.cache_said = if done >= all { 11 } else { tenths };
                at.progress.say(if done >= all {
                    format!(
                        "mining cache complete: the rows in the band of an epoch's {all} examples ({:.0} MB, {:.0} s of search); later epochs draw from it",
                        bytes as f64 / 1e6,
                        stats.search_secs
                    )
                } else {
                    format!(
                        "mining cache: {}% of {all} examples mined ({:.0} MB, {:.0} s of search)",
                        tenths * 10,
                        bytes as f64 / 1e6,
                        stats.search_secs
                    )
                });
            }
        }
        // Candidates: in-batch positives, own mined negatives, random rows.
        let b = exs.len();
        buf.cand_rows.clear();
        buf.cand_rows.extend_from_slice(&positives);
        let mut owner: Vec<Option<usize>> = vec![None; b];
        if let Some(m) = &mined {
            for (i, negs) in m.negatives.iter().enumerate() {
                buf.cand_rows.extend_from_slice(negs);
                owner.extend(std::iter::repeat_n(Some(i), negs.len()));
            }
        }
        if cfg.random_negatives > 0 {
            let mut rng = RANDOM.rng(cfg.seed, g);
            let n = cfg.random_negatives.min(bank.rows());
            buf.cand_rows.extend(
                sample(&mut rng, bank.rows(), n)
                    .into_iter()
                    .map(|r| r as u32),
            );
            owner.extend(std::iter::repeat_n(None, n));
        }
        let n = buf.cand_rows.len();
        buf.valid.clear();
        for (i, &p) in positives.iter().enumerate() {
            for (c, &r) in buf.cand_rows.iter().enumerate() {
                let own = match (c < b, owner[c]) {
                    (true, _) => true,
                    (false, Some(o)) => o == i,
                    (false, None) => true,
                };
                buf.valid.push(own && r != p);
            }
        }
        let queue = &mut self.queue;
        buf.queue_valid.clear();
        for &p in &positives {
            buf.queue_valid.extend(queue.rows().iter().map(|&r| r != p));
        }
        setup::gather(bank, &positives, &mut buf.pos);
        setup::gather(bank, &buf.cand_rows, &mut buf.cand);
        model.forward_docs(&buf.pos, &mut buf.pos_dc);
        model.forward_docs(&buf.cand, &mut buf.cand_dc);
        let input = LossInput {
            q: buf.qc.queries(),
            pos: buf.pos_dc.docs(),
            cand: buf.cand_dc.docs(),
            valid: &buf.valid,
            queue: queue.vectors(),
            queue_valid: &buf.queue_valid,
            dim: d,
        };
        if cfg.loss_infonce > 0.0 {
            setup
                .loss
                .evaluate(&input, model.doc_is_learned(), &mut buf.out);
            let w = cfg.loss_infonce;
            buf.out.loss *= w;
            for g in [&mut buf.out.dq, &mut buf.out.dpos, &mut buf.out.dcand] {
                g.iter_mut().for_each(|v| *v *= w);
            }
        } else {
            buf.out.loss = 0.0;
            buf.out.accuracy = 0.0;
            buf.out.dq.clear();
            buf.out.dq.resize(b * d, 0.0);
            buf.out.dpos.clear();
            buf.out.dpos.resize(b * d, 0.0);
            buf.out.dcand.clear();
            buf.out.dcand.resize(n * d, 0.0);
        }
        if cfg.loss_mse > 0.0 || cfg.loss_cosine > 0.0 {
            // The next-vector losses pull the query onto the target row.
            let reg = Regression {
                mse: cfg.loss_mse,
                cosine: cfg.loss_cosine,
            };
            let (mse, cos) = reg.evaluate(buf.qc.queries(), &buf.pos, d, &mut buf.out.dq);
            buf.out.loss += cfg.loss_mse * mse + cfg.loss_cosine * cos;
        }
        if !buf.out.loss.is_finite() {
            return Err(TrainError::Invalid {
                path: cfg.out.join("metrics.jsonl"),
                problem: format!("the loss became {} at step {}", buf.out.loss, at.step),
                fix: "lower --lr or raise --tau; rerunning resumes from the last good checkpoint"
                    .into(),
            });
        }
        let scale = at.grad_scale();
        buf.out.dq.iter_mut().for_each(|v| *v *= scale);
        model.backward_queries(&batch, &mut buf.qc, &buf.out.dq, grads);
        if model.doc_is_learned() {
            buf.out.dpos.iter_mut().for_each(|v| *v *= scale);
            buf.out.dcand.iter_mut().for_each(|v| *v *= scale);
            model.backward_docs(&buf.pos, &mut buf.pos_dc, &buf.out.dpos, grads);
            model.backward_docs(&buf.cand, &mut buf.cand_dc, &buf.out.dcand, grads);
        }
        debug_assert_eq!(buf.valid.len(), b * n);
        queue.push(&positives, buf.pos_dc.docs());
        self.accuracy.0 += f64::from(buf.out.accuracy);
        self.accuracy.1 += 1;
        Ok(f64::from(buf.out.loss))
    }

    fn log(&mut self, line: &mut TrainLine<'_>) {
        let cfg = self.setup.cfg;
        let (sum, n) = std::mem::take(&mut self.accuracy);
        line.set("accuracy", sum / n.max(1) as f64);
        line.set("queue", self.queue.len());
        let stats = &self.stats;
        if stats.batches == 0 {
            return;
        }
        if let Some(cache) = &self.cache {
            let (examples, bytes) = cache.size();
            line.set(
                "mine_cached",
                examples as f64 / self.setup.train.len() as f64,
            );
            line.set("mine_cache_mb", bytes as f64 / 1e6);
        }
        line.set("mine_s", stats.search_secs);
        line.set("mine_hidden", stats.hidden());
        line.set("band_fill", stats.fill());
        line.set("mine_fallbacks", stats.fallbacks);
        let (sum, n) = (
            stats.fill_sum - self.fill_mark.0,
            stats.batches - self.fill_mark.1,
        );
        self.fill_mark = (stats.fill_sum, stats.batches);
        let band = cfg.curriculum.band(line.epoch);
        if let Some(b) =
            band.filter(|b| n > 0 && sum / (n as f64) < 0.5 && self.warned_band != Some(*b))
        {
            self.warned_band = Some(b);
            line.warn(format!(
                "the mined band {b} filled only {:.0}% of the negatives asked over the last {n} batches; widen the band or raise --mine-pool (now {})",
                100.0 * sum / n as f64,
                cfg.mine_pool
            ));
        }
    }

    fn validates(&self) -> bool {
        !self.setup.val.is_empty()
    }

    fn validate(&mut self) -> Result<Scores, TrainError> {
        let setup = &self.setup;
        eval::evaluate_model(
            setup.cfg,
            &self.model,
            setup.ds,
            &setup.val,
            "validate",
            &mut self.eval_index,
        )
    }

    fn baselines(&mut self) -> Result<Vec<(String, Scores)>, TrainError> {
        let setup = &self.setup;
        eval::baselines(setup.cfg, setup.ds, &setup.val, &mut self.eval_index)
    }

    fn snapshot(&self) -> Snapshot<VectorState> {
        let queue = &self.queue;
        let mut files = Vec::new();
        if self.model.doc_is_learned() {
            let mut p = Params::default();
            p.push(
                "queue",
                &[queue.len(), queue.vectors().len() / queue.len().max(1)],
                queue.vectors().to_vec(),
            );
            files.push((
                "queue.safetensors".to_string(),
                p.to_safetensors(&HashMap::new()),
            ));
        }
        Snapshot {
            state: VectorState {
                data: self.setup.data.clone(),
                queue_capacity: self.setup.cfg.queue,
                queue_next: queue.next_slot(),
                queue_rows: queue.rows().to_vec(),
                mine_cache: self.cache.as_ref().and_then(|c| match c.mark() {
                    Ok(mark) => Some(mark),
                    Err(why) => {
                        if !self.cache_failed.replace(true) {
                            eprintln!("warning: the mining cache is not saved with the checkpoints ({why}); a resumed run mines it again");
                        }
                        None
                    }
                }),
            },
            files,
        }
    }

    fn restore(&mut self, state: VectorState, checkpoint: &Loaded) -> Result<(), TrainError> {
        let setup = &self.setup;
        if state.data != setup.data {
            return Err(TrainError::Checkpoint {
                path: setup.cfg.data.clone(),
                problem: format!(
                    "the dataset differs from the one this run was trained on ({})",
                    state.data.differences(&setup.data).join(", ")
                ),
                fix: "point --data at the run's dataset, or pass --force to start the run over on this one".into(),
            });
        }
        if let (Some(mark), Some(cache)) = (&state.mine_cache, &mut self.cache) {
            let cfg = setup.cfg;
            match HitCache::load(
                &cfg.out,
                mark,
                setup.train.len(),
                cache.bands().to_vec(),
                cfg.mine_pool,
                cfg.dup_threshold,
            ) {
                Ok(loaded) => *cache = Arc::new(loaded),
                Err(why) => eprintln!("warning: the mining cache is mined again: {why}"),
            }
        }
        let bank = setup.ds.bank();
        let vectors = if self.model.doc_is_learned() {
            let bytes = checkpoint.file("queue.safetensors")?;
            setup::safetensors_vectors(bytes)
                .ok_or_else(|| damaged(checkpoint, "queue.safetensors is unreadable".into()))?
        } else {
            let mut v = Vec::new();
            setup::gather(bank, &state.queue_rows, &mut v);
            v
        };
        self.queue = MemoryQueue::restore(
            setup.cfg.queue,
            bank.dim(),
            state.queue_rows,
            vectors,
            state.queue_next,
        )
        .ok_or_else(|| {
            damaged(
                checkpoint,
                "the saved memory queue does not fit the configured size".into(),
            )
        })?;
        Ok(())
    }

    fn finish(&mut self) -> Result<Tested, TrainError> {
        let (cfg, ds) = (self.setup.cfg, self.setup.ds);
        let test: Vec<Example<'_>> = ds.examples(Split::Test).take(eval_limit(cfg)).collect();
        if test.is_empty() {
            return Ok(Tested::default());
        }
        let scores =
            eval::evaluate_model(cfg, &self.model, ds, &test, "test", &mut self.eval_index)?;
        let baselines = eval::baselines(cfg, ds, &test, &mut self.eval_index)?;
        encode::write_ranking_with(
            &self.model,
            ds,
            &test,
            &cfg.out.join("test.run"),
            &cfg.out.join("test.qrels"),
            &cfg.ks,
            self.eval_index.as_ref(),
        )?;
        Ok(Tested { scores, baselines })
    }
}
