//! The two-tower model: a query tower over a context of bank vectors and a
//! doc tower over bank vectors (docs/model.md has the math).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::linalg::{add_bias, add_col_sums, dot, matmul, Mat};
use crate::params::{Params, Slot};
use crate::pool::{self, Attention, AttentionCache};
use crate::rnn::{Cell, Rnn, RnnCache};
use crate::{Batch, NnError};

/// `torch.nn.functional.normalize`'s epsilon.
const NORM_EPS: f32 = 1e-12;

crate::named_enum!(
    /// How the query tower pools its context.
    TowerKind {
        /// Masked mean of the context vectors.
        Mean = "mean",
        /// Learned attention pooling.
        Attention = "attention",
        /// A GRU; its last hidden state.
        Gru = "gru",
        /// An LSTM; its last hidden state.
        Lstm = "lstm",
    }
);

crate::named_enum!(
    /// What is added to the projected query before normalisation.
    Residual {
        /// Nothing.
        None = "none",
        /// The mean of the context vectors.
        Mean = "mean",
        /// The last context vector.
        Last = "last",
    }
);

crate::named_enum!(
    /// The doc tower.
    DocTower {
        /// Bank vectors as they are.
        Identity = "identity",
        /// A learned linear map (identity at start), then normalisation.
        Linear = "linear",
    }
);

/// The shape of a two-tower model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Query tower pooling.
    pub kind: TowerKind,
    /// Dimension of the bank vectors.
    pub dim: usize,
    /// Hidden size of the GRU/LSTM, or of the attention scorer.
    pub hidden: usize,
    /// Whether a `Linear(pooled, dim)` follows the pooling.
    pub projection: bool,
    /// Residual added after the projection.
    pub residual: Residual,
    /// The doc tower.
    pub doc: DocTower,
}

impl ModelConfig {
    /// The dimension of the pooled state.
    fn pooled_dim(&self) -> usize {
        match self.kind {
            TowerKind::Mean | TowerKind::Attention => self.dim,
            TowerKind::Gru | TowerKind::Lstm => self.hidden,
        }
    }

    /// The number of parameters the model will have.
    pub fn param_count(&self) -> usize {
        let (d, h) = (self.dim, self.hidden);
        let pool = match self.kind {
            TowerKind::Mean => 0,
            TowerKind::Attention => h * d + 2 * h,
            TowerKind::Gru => 3 * h * (d + h) + 6 * h,
            TowerKind::Lstm => 4 * h * (d + h) + 8 * h,
        };
        let proj = if self.projection {
            self.pooled_dim() * d + d
        } else {
            0
        };
        let doc = if self.doc == DocTower::Linear {
            d * d + d
        } else {
            0
        };
        pool + proj + doc
    }

    /// Checks that the shape can be built (without allocating it).
    pub fn check(&self) -> Result<(), NnError> {
        if self.dim == 0 || self.hidden == 0 {
            return Err(NnError::config(
                format!(
                    "dim {} and hidden {} must be positive",
                    self.dim, self.hidden
                ),
                "set hidden to a positive size (the default is the bank's dimension)",
            ));
        }
        if !self.projection && self.pooled_dim() != self.dim {
            return Err(NnError::config(
                format!(
                    "projection = false needs the {} state ({}) to have the bank's dimension {}",
                    self.kind,
                    self.pooled_dim(),
                    self.dim
                ),
                "set projection = true or hidden equal to the bank's dimension",
            ));
        }
        if self.kind == TowerKind::Mean && !self.projection && self.doc == DocTower::Identity {
            return Err(NnError::config(
                "a mean tower without projection and an identity doc tower has nothing to train",
                "set projection = true, a learned kind (gru, lstm, attention) or doc = linear",
            ));
        }
        Ok(())
    }
}

/// A two-tower model and its parameters.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    params: Params,
    rnn: Option<Rnn>,
    attn: Option<Attention>,
    proj: Option<(Slot, Slot)>,
    doc: Option<(Slot, Slot)>,
}

/// Reusable buffers of a query-tower forward and backward pass.
#[derive(Debug, Default)]
pub struct QueryCache {
    rnn: RnnCache,
    attn: AttentionCache,
    pooled: Vec<f32>,
    y: Vec<f32>,
    norms: Vec<f32>,
    q: Vec<f32>,
    dy: Vec<f32>,
    dpooled: Vec<f32>,
}

impl QueryCache {
    /// The normalised queries of the last forward pass, `[B, D]`.
    pub fn queries(&self) -> &[f32] {
        &self.q
    }
}

/// Reusable buffers of a doc-tower pass.
#[derive(Debug, Default)]
pub struct DocCache {
    norms: Vec<f32>,
    out: Vec<f32>,
    dy: Vec<f32>,
}

impl DocCache {
    /// The doc vectors of the last forward pass, `[N, D]`.
    pub fn docs(&self) -> &[f32] {
        &self.out
    }
}

impl Model {
    /// A freshly initialised model (PyTorch's default initialisation drawn
    /// from a ChaCha8 stream seeded with `seed`).
    pub fn new(cfg: ModelConfig, seed: u64) -> Result<Model, NnError> {
        cfg.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Params::default();
        let (d, h) = (cfg.dim, cfg.hidden);
        let (rnn, attn) = match cfg.kind {
            TowerKind::Mean => (None, None),
            TowerKind::Attention => (None, Some(Attention::init(d, h, &mut params, &mut rng))),
            TowerKind::Gru => (
                Some(Rnn::init(Cell::Gru, "gru", d, h, &mut params, &mut rng)),
                None,
            ),
            TowerKind::Lstm => (
                Some(Rnn::init(Cell::Lstm, "lstm", d, h, &mut params, &mut rng)),
                None,
            ),
        };
        let proj = cfg.projection.then(|| {
            let inp = cfg.pooled_dim();
            let k = 1.0 / (inp as f32).sqrt();
            (
                params.uniform("proj.weight", &[d, inp], k, &mut rng),
                params.uniform("proj.bias", &[d], k, &mut rng),
            )
        });
        let doc = (cfg.doc == DocTower::Linear).then(|| {
            let mut eye = vec![0.0; d * d];
            (0..d).for_each(|i| eye[i * d + i] = 1.0);
            (
                params.push("doc.weight", &[d, d], eye),
                params.push("doc.bias", &[d], vec![0.0; d]),
            )
        });
        Ok(Model {
            cfg,
            params,
            rnn,
            attn,
            proj,
            doc,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Every parameter (query tower first, then `doc.*`).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Every parameter, mutably (the optimizer updates them in place).
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// Encodes a batch of contexts into normalised queries
    /// (`cache.queries()`), keeping what the backward pass needs.
    pub fn forward_queries(&self, batch: &Batch<'_>, cache: &mut QueryCache) {
        batch.check(self.cfg.dim);
        let (b, d) = (batch.rows(), self.cfg.dim);
        let p = &self.params;
        match (&self.rnn, &self.attn) {
            (Some(rnn), _) => rnn.forward(p, batch, &mut cache.rnn, &mut cache.pooled),
            (None, Some(attn)) => attn.forward(p, batch, &mut cache.attn, &mut cache.pooled),
            (None, None) => pool::mean(batch, &mut cache.pooled),
        }
        match self.proj {
            Some((w, bias)) => {
                cache.y.resize(b * d, 0.0);
                let inp = self.cfg.pooled_dim();
                matmul(
                    &mut cache.y,
                    Mat::new(&cache.pooled, b, inp),
                    Mat::new(p.at(w), d, inp).t(),
                    0.0,
                );
                add_bias(&mut cache.y, p.at(bias));
            }
            None => {
                cache.y.clear();
                cache.y.extend_from_slice(&cache.pooled);
            }
        }
        match self.cfg.residual {
            Residual::None => {}
            Residual::Last => pool::add_last(batch, &mut cache.y),
            Residual::Mean => {
                let mut m = std::mem::take(&mut cache.dy);
                pool::mean(batch, &mut m);
                cache.y.iter_mut().zip(&m).for_each(|(y, v)| *y += v);
                cache.dy = m;
            }
        }
        normalize(&cache.y, &mut cache.q, &mut cache.norms, d);
    }

    /// Adds the gradients of the query tower's parameters given `dq`, the
    /// gradient of the loss with respect to `cache.queries()`.
    pub fn backward_queries(
        &self,
        batch: &Batch<'_>,
        cache: &mut QueryCache,
        dq: &[f32],
        grads: &mut Params,
    ) {
        let (b, d) = (batch.rows(), self.cfg.dim);
        let p = &self.params;
        normalize_back(&cache.q, &cache.norms, dq, &mut cache.dy, d);
        let dpooled = match self.proj {
            Some((w, bias)) => {
                let inp = self.cfg.pooled_dim();
                matmul(
                    grads.at_mut(w),
                    Mat::new(&cache.dy, b, d).t(),
                    Mat::new(&cache.pooled, b, inp),
                    1.0,
                );
                add_col_sums(grads.at_mut(bias), &cache.dy);
                cache.dpooled.resize(b * inp, 0.0);
                matmul(
                    &mut cache.dpooled,
                    Mat::new(&cache.dy, b, d),
                    Mat::new(p.at(w), d, inp),
                    0.0,
                );
                &cache.dpooled
            }
            None => &cache.dy,
        };
        match (&self.rnn, &self.attn) {
            (Some(rnn), _) => rnn.backward(p, batch, &mut cache.rnn, dpooled, grads),
            (None, Some(attn)) => attn.backward(p, batch, &mut cache.attn, dpooled, grads),
            (None, None) => {}
        }
    }

    /// Whether the doc tower has parameters (and doc vectors need encoding).
    pub fn doc_is_learned(&self) -> bool {
        self.doc.is_some()
    }

    /// Encodes bank vectors `rows` (`[N, D]`) with the doc tower into
    /// `cache.docs()`.
    pub fn forward_docs(&self, rows: &[f32], cache: &mut DocCache) {
        let d = self.cfg.dim;
        let n = rows.len() / d;
        match self.doc {
            None => {
                cache.out.clear();
                cache.out.extend_from_slice(rows);
            }
            Some((w, bias)) => {
                cache.dy.resize(n * d, 0.0);
                matmul(
                    &mut cache.dy,
                    Mat::new(rows, n, d),
                    Mat::new(self.params.at(w), d, d).t(),
                    0.0,
                );
                add_bias(&mut cache.dy, self.params.at(bias));
                normalize(&cache.dy, &mut cache.out, &mut cache.norms, d);
            }
        }
    }

    /// Adds the doc tower's gradients given `dd`, the gradient of the loss
    /// with respect to `cache.docs()` (nothing to do for `identity`).
    pub fn backward_docs(
        &self,
        rows: &[f32],
        cache: &mut DocCache,
        dd: &[f32],
        grads: &mut Params,
    ) {
        let Some((w, bias)) = self.doc else { return };
        let d = self.cfg.dim;
        let n = rows.len() / d;
        normalize_back(&cache.out, &cache.norms, dd, &mut cache.dy, d);
        matmul(
            grads.at_mut(w),
            Mat::new(&cache.dy, n, d).t(),
            Mat::new(rows, n, d),
            1.0,
        );
        add_col_sums(grads.at_mut(bias), &cache.dy);
    }
}

/// `out = y / max(||y||, eps)` row by row; `norms` keeps the row norms.
fn normalize(y: &[f32], out: &mut Vec<f32>, norms: &mut Vec<f32>, d: usize) {
    out.clear();
    norms.clear();
    for row in y.chunks_exact(d) {
        let n = dot(row, row).sqrt().max(NORM_EPS);
        norms.push(n);
        out.extend(row.iter().map(|v| v / n));
    }
}

/// The gradient through [`normalize`]: `dy = (dq - q (q . dq)) / ||y||`, or
/// `dq / eps` where the norm was clamped.
fn normalize_back(q: &[f32], norms: &[f32], dq: &[f32], dy: &mut Vec<f32>, d: usize) {
    dy.clear();
    for ((qr, dr), &n) in q.chunks_exact(d).zip(dq.chunks_exact(d)).zip(norms) {
        if n > NORM_EPS {
            let s = dot(qr, dr);
            dy.extend(qr.iter().zip(dr).map(|(q, g)| (g - q * s) / n));
        } else {
            dy.extend(dr.iter().map(|g| g / n));
        }
    }
}
