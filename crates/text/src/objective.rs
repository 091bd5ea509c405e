//! One training step of a dense text retriever: embed a batch of queries
//! and documents with an [`Embedder`], score them, take the loss (a
//! contrastive or distillation loss plus isotropy regularisers) and its
//! gradient back to every parameter, optionally with GradCache.
//!
//! GradCache (Gao et al., 2021; sentence-transformers'
//! CachedMultipleNegativesRankingLoss): embed the batch in mini-batches
//! without keeping activations, compute the loss and its gradient with
//! respect to the cached embeddings, then run each mini-batch again keeping
//! activations and back-propagate its slice of that gradient. The gradient
//! is the uncached one (up to float rounding) with the activations of one
//! mini-batch in memory instead of the whole batch's.
//!
//! Dropout (the model's setting, [`Embedder::set_dropout`]) draws each
//! text's masks from a seed of its own, derived from the step's seed, the
//! text's role and its index in the batch: both GradCache passes see the
//! same masks, and a resumed run draws those of the first.

use tandem_nn::contrastive::{
    Distill, Isotropy, IsotropyStats, LossValue, MaxSim, Mnrl, Similarity,
};
use tandem_nn::kernels::split_seed;
use tandem_nn::Params;

use crate::{ColBert, ColbertTokens, Embedder, Side, Tower, TowerGrads, Towers};

/// Tags the dropout seeds derived from a step's seed (`"dropout"`).
const DROPOUT: u64 = 0x0064_726f_706f_7574;

/// The main loss of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MainLoss {
    /// InfoNCE / MultipleNegativesRankingLoss over in-batch and hard
    /// negatives.
    Contrastive(Mnrl),
    /// Distillation from the teacher scores of the data.
    Distill(Distill),
}

/// What a step computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// The main loss.
    pub loss: MainLoss,
    /// How queries and documents are scored (the contrastive loss's own
    /// similarity is used when it has one).
    pub similarity: Similarity,
    /// Isotropy regularisers with their weights, over the batch's query and
    /// document vectors together.
    pub isotropy: Vec<(Isotropy, f32)>,
    /// GradCache mini-batch (texts per forward pass); `None`: the whole
    /// batch at once.
    pub cache_batch: Option<usize>,
    /// Whether the encoder trains (`false`: only the heads, `freeze_base`).
    pub train_encoder: bool,
}

/// A batch: token ids of the queries and the documents (positives and hard
/// negatives), and who is whose.
#[derive(Debug, Clone, Default)]
pub struct TextBatch {
    /// The queries' token ids.
    pub queries: Vec<Vec<u32>>,
    /// The documents' token ids.
    pub docs: Vec<Vec<u32>>,
    /// Query `i`'s positive is `docs[positive[i]]`.
    pub positive: Vec<usize>,
    /// `hidden[i * docs + j]`: document `j` is not shown to query `i` as a
    /// negative (another positive of its, or a text equal to its positive).
    pub hidden: Vec<bool>,
    /// For distillation: query `i`'s documents `[positive, negatives...]`.
    pub groups: Vec<Vec<usize>>,
    /// For distillation: the teacher's scores of `groups`.
    pub teacher: Vec<Vec<f32>>,
}

/// What a step reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// The total loss (main loss plus weighted regularisers).
    pub loss: f64,
    /// The main loss alone.
    pub main: f64,
    /// Queries whose positive outscored every negative shown.
    pub accuracy: f64,
    /// Isotropy measures of the batch's vectors.
    pub isotropy: IsotropyStats,
    /// Mean Euclidean distance between a query and its positive.
    pub positive_distance: f64,
    /// Mean number of documents shown to a query.
    pub candidates: f64,
}

impl Objective {
    /// Runs the step: adds `grad_scale` times the gradient of the loss into
    /// `grads` (each tower's in the layout of its parameters). `seed` (mixed
    /// into SIGReg's own) draws SIGReg's directions and the dropout masks:
    /// vary it per step.
    pub fn step(
        &self,
        towers: &Towers,
        batch: &TextBatch,
        grad_scale: f32,
        seed: u64,
        grads: &mut TowerGrads<'_>,
    ) -> StepStats {
        let dim = towers.dim();
        let (b, m) = (batch.queries.len(), batch.docs.len());
        // one dropout seed per text: queries, then documents
        let seeds = self.seeds(seed, b + m);
        let (qseeds, dseeds) = seeds.split_at(b);
        match self.cache_batch {
            None => {
                let train = self.train_encoder;
                let (q, qpass) = towers
                    .query()
                    .forward_train(&batch.queries, train, Some(qseeds));
                let (d, dpass) = towers
                    .document()
                    .forward_train(&batch.docs, train, Some(dseeds));
                let (stats, dq, dd) = self.loss(batch, &q, &d, dim, grad_scale, seed);
                towers.query().backward(qpass, &dq, grads.of(Tower::Query));
                towers
                    .document()
                    .backward(dpass, &dd, grads.of(Tower::Document));
                stats
            }
            Some(mb) => {
                let mb = mb.max(1);
                // the first pass draws the masks of the second: the same
                // seeds, and none for a frozen encoder (which runs as in
                // inference in the second)
                let embed = |model: &Embedder, texts: &[Vec<u32>], seeds: &[u64]| -> Vec<f32> {
                    texts
                        .chunks(mb)
                        .zip(seeds.chunks(mb))
                        .flat_map(|(c, s)| {
                            model.embed_tokens_seeded(c, self.train_encoder.then_some(s))
                        })
                        .collect()
                };
                let q = embed(towers.query(), &batch.queries, qseeds);
                let d = embed(towers.document(), &batch.docs, dseeds);
                let (stats, dq, dd) = self.loss(batch, &q, &d, dim, grad_scale, seed);
                let sides = [
                    (Tower::Query, &batch.queries, qseeds, &dq),
                    (Tower::Document, &batch.docs, dseeds, &dd),
                ];
                for (tower, texts, s, g) in sides {
                    let model = towers.tower(tower);
                    let chunks = texts.chunks(mb).zip(s.chunks(mb)).zip(g.chunks(mb * dim));
                    for ((c, sc), gc) in chunks {
                        let (_, pass) = model.forward_train(c, self.train_encoder, Some(sc));
                        model.backward(pass, gc, grads.of(tower));
                    }
                }
                debug_assert_eq!((q.len(), d.len()), (b * dim, m * dim));
                stats
            }
        }
    }

    /// [`Objective::step`] for a ColBERT: queries and documents are token
    /// vectors (a query expanded as the model is configured), scored by
    /// MaxSim; GradCache's mini-batches cut the texts as for a dense model.
    /// The isotropy regularisers and the similarity do not apply.
    pub fn step_colbert(
        &self,
        model: &ColBert,
        batch: &TextBatch,
        grad_scale: f32,
        seed: u64,
        grads: &mut Params,
    ) -> StepStats {
        let b = batch.queries.len();
        let seeds = self.seeds(seed, b + batch.docs.len());
        let sides = [
            (Side::Query, &batch.queries, &seeds[..b]),
            (Side::Document, &batch.docs, &seeds[b..]),
        ];
        let toks = sides.map(|(side, texts, _)| -> Vec<ColbertTokens> {
            texts
                .iter()
                .map(|t| model.expand(t.clone(), side))
                .collect()
        });
        let train = self.train_encoder;
        let mb = self.cache_batch.unwrap_or(usize::MAX).max(1);
        // the vectors of every text (without activations when cached) and
        // the offsets of each text's rows
        let mut vectors: [(Vec<f32>, Vec<usize>); 2] = Default::default();
        let mut passes = [Vec::new(), Vec::new()];
        for (k, (side, _, s)) in sides.iter().enumerate() {
            let (v, off) = &mut vectors[k];
            off.push(0);
            for (c, sc) in toks[k].chunks(mb).zip(s.chunks(mb)) {
                let keep = self.cache_batch.is_none().then_some(train);
                let (out, counts, pass) = model.forward_tokens(c, *side, train.then_some(sc), keep);
                v.extend(out);
                for n in counts {
                    off.push(off.last().copied().unwrap_or(0) + n);
                }
                passes[k].extend(pass);
            }
        }
        let [(q, q_off), (d, d_off)] = &vectors;
        let dim = model.dim();
        let late = MaxSim::new(q, q_off, d, d_off, dim);
        let m = batch.docs.len();
        let mut ds = late.scores.clone();
        let main: LossValue = match self.loss {
            MainLoss::Contrastive(l) => l.evaluate_scores(
                &mut ds,
                m,
                &batch.positive,
                |i, j| batch.hidden[i * m + j],
                grad_scale,
            ),
            MainLoss::Distill(l) => {
                let (v, g) =
                    l.evaluate_scores(&late.scores, m, &batch.groups, &batch.teacher, grad_scale);
                ds = g;
                v
            }
        };
        let (mut dq, mut dd) = (vec![0.0f32; q.len()], vec![0.0f32; d.len()]);
        late.backward(q, d, dim, &ds, &mut dq, &mut dd);
        for (k, (side, _, s)) in sides.iter().enumerate() {
            let (g, off) = (if k == 0 { &dq } else { &dd }, &vectors[k].1);
            let slice =
                |i: usize, n: usize| &g[off[i] * dim..off[(i + n).min(off.len() - 1)] * dim];
            if self.cache_batch.is_none() {
                for pass in passes[k].drain(..) {
                    model.backward(pass, slice(0, toks[k].len()), grads);
                }
                continue;
            }
            // GradCache's second pass: each mini-batch again, with activations
            for (i, (c, sc)) in toks[k].chunks(mb).zip(s.chunks(mb)).enumerate() {
                let (_, _, pass) = model.forward_tokens(c, *side, Some(sc), Some(train));
                let pass = pass.expect("a training pass keeps its tape");
                model.backward(pass, slice(i * mb, c.len()), grads);
            }
        }
        let shown = batch.hidden.iter().filter(|h| !**h).count();
        let scale = f64::from(grad_scale);
        StepStats {
            loss: main.loss / scale,
            main: main.loss / scale,
            accuracy: main.accuracy,
            isotropy: IsotropyStats::default(),
            positive_distance: 0.0,
            candidates: shown as f64 / b.max(1) as f64,
        }
    }

    /// One dropout seed per text of a step's batch (`texts` of them:
    /// queries, then documents).
    fn seeds(&self, seed: u64, texts: usize) -> Vec<u64> {
        (0..texts as u64)
            .map(|i| split_seed(seed ^ DROPOUT, i))
            .collect()
    }

    /// The loss over the vectors `q` and `d` and its gradients with respect
    /// to them, times `grad_scale`.
    fn loss(
        &self,
        batch: &TextBatch,
        q: &[f32],
        d: &[f32],
        dim: usize,
        grad_scale: f32,
        seed: u64,
    ) -> (StepStats, Vec<f32>, Vec<f32>) {
        let (b, m) = (batch.queries.len(), batch.docs.len());
        let mut dq = vec![0.0f32; q.len()];
        let mut dd = vec![0.0f32; d.len()];
        let hidden = |i: usize, j: usize| batch.hidden[i * m + j];
        let main: LossValue = match self.loss {
            MainLoss::Contrastive(l) => l.evaluate(
                q,
                d,
                dim,
                &batch.positive,
                hidden,
                grad_scale,
                &mut dq,
                &mut dd,
            ),
            MainLoss::Distill(l) => l.evaluate(
                self.similarity,
                q,
                d,
                dim,
                &batch.groups,
                &batch.teacher,
                grad_scale,
                &mut dq,
                &mut dd,
            ),
        };
        let mut loss = main.loss;
        let all: Vec<f32> = q.iter().chain(d).copied().collect();
        if !self.isotropy.is_empty() {
            let mut dall = vec![0.0f32; all.len()];
            for &(reg, weight) in &self.isotropy {
                // SIGReg draws new directions every step
                let reg = match reg {
                    Isotropy::SigReg {
                        projections,
                        seed: s,
                    } => Isotropy::SigReg {
                        projections,
                        seed: s ^ seed,
                    },
                    other => other,
                };
                loss += reg.evaluate(&all, dim, weight * grad_scale, &mut dall);
            }
            let (gq, gd) = dall.split_at(q.len());
            tandem_nn::kernels::add_into(&mut dq, gq);
            tandem_nn::kernels::add_into(&mut dd, gd);
        }
        let positive_distance = batch
            .positive
            .iter()
            .enumerate()
            .map(|(i, &j)| {
                let (a, p) = (&q[i * dim..(i + 1) * dim], &d[j * dim..(j + 1) * dim]);
                f64::from(a.iter().zip(p).map(|(x, y)| (x - y) * (x - y)).sum::<f32>()).sqrt()
            })
            .sum::<f64>()
            / b.max(1) as f64;
        let shown = batch.hidden.iter().filter(|h| !**h).count();
        let scale = f64::from(grad_scale);
        let stats = StepStats {
            loss: loss / scale,
            main: main.loss / scale,
            accuracy: main.accuracy,
            isotropy: IsotropyStats::of(&all, dim),
            positive_distance,
            candidates: shown as f64 / b.max(1) as f64,
        };
        (stats, dq, dd)
    }
}
