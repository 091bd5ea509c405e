//! The two-tower model: a query tower over a context of bank vectors and a
//! doc tower over bank vectors (docs/model.md has the math).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::kernels::Dense;
use crate::linalg::dot;
use crate::params::Params;
use crate::pool::{self, Attention, AttentionCache};
use crate::rnn::{Cell, Rnn, RnnCache};
use crate::transformer::{self, Transformer, TransformerCache};
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
        /// A causal pre-LN transformer; its final-normed last state.
        Transformer = "transformer",
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
    /// Hidden size of the GRU/LSTM, of the attention scorer, or the
    /// transformer's width.
    pub hidden: usize,
    /// Whether a `Linear(pooled, dim)` follows the pooling.
    pub projection: bool,
    /// Residual added after the projection.
    pub residual: Residual,
    /// The doc tower.
    pub doc: DocTower,
    /// Transformer blocks (kind `transformer` only; absent from configs
    /// saved before it existed, hence the default).
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// Attention heads per transformer block (kind `transformer` only).
    #[serde(default = "default_heads")]
    pub heads: usize,
}

fn default_layers() -> usize {
    ModelConfig::DEFAULT_LAYERS
}

fn default_heads() -> usize {
    ModelConfig::DEFAULT_HEADS
}

impl ModelConfig {
    /// The number of transformer blocks when a config does not say.
    pub const DEFAULT_LAYERS: usize = 2;
    /// The number of attention heads when a config does not say.
    pub const DEFAULT_HEADS: usize = 4;

    /// The dimension of the pooled state.
    fn pooled_dim(&self) -> usize {
        match self.kind {
            TowerKind::Mean | TowerKind::Attention => self.dim,
            TowerKind::Gru | TowerKind::Lstm | TowerKind::Transformer => self.hidden,
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
            TowerKind::Transformer => transformer::param_count(d, h, self.layers),
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
        if self.kind == TowerKind::Transformer {
            transformer::check(self.hidden, self.layers, self.heads)?;
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
                "set projection = true, a learned kind (gru, lstm, attention, transformer) or doc = linear",
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
    pool: Pool,
    proj: Option<Dense>,
    doc: Option<Dense>,
}

/// The pooling of the query tower, with the slots of its weights.
#[derive(Debug, Clone)]
enum Pool {
    Mean,
    Attention(Attention),
    Rnn(Rnn),
    Transformer(Transformer),
}

/// Reusable buffers of a query-tower forward and backward pass.
#[derive(Debug, Default)]
pub struct QueryCache {
    rnn: RnnCache,
    attn: AttentionCache,
    tf: TransformerCache,
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
        let pool = match cfg.kind {
            TowerKind::Mean => Pool::Mean,
            TowerKind::Attention => Pool::Attention(Attention::init(d, h, &mut params, &mut rng)),
            TowerKind::Gru => Pool::Rnn(Rnn::init(Cell::Gru, "gru", d, h, &mut params, &mut rng)),
            TowerKind::Lstm => {
                Pool::Rnn(Rnn::init(Cell::Lstm, "lstm", d, h, &mut params, &mut rng))
            }
            TowerKind::Transformer => Pool::Transformer(Transformer::init(
                d,
                h,
                cfg.layers,
                cfg.heads,
                &mut params,
                &mut rng,
            )),
        };
        let proj = cfg
            .projection
            .then(|| Dense::init(&mut params, "proj", cfg.pooled_dim(), d, &mut rng));
        let doc = (cfg.doc == DocTower::Linear).then(|| {
            let mut eye = vec![0.0; d * d];
            (0..d).for_each(|i| eye[i * d + i] = 1.0);
            Dense::add(&mut params, "doc", eye, Some(vec![0.0; d]), d, d)
        });
        Ok(Model {
            cfg,
            params,
            pool,
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
        let d = self.cfg.dim;
        let p = &self.params;
        match &self.pool {
            Pool::Rnn(rnn) => rnn.forward(p, batch, &mut cache.rnn, &mut cache.pooled),
            Pool::Attention(attn) => attn.forward(p, batch, &mut cache.attn, &mut cache.pooled),
            Pool::Transformer(tf) => tf.forward(p, batch, &mut cache.tf, &mut cache.pooled),
            Pool::Mean => pool::mean(batch, &mut cache.pooled),
        }
        match &self.proj {
            Some(proj) => proj.forward(p, &cache.pooled, &mut cache.y),
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
        let p = &self.params;
        normalize_back(&cache.q, &cache.norms, dq, &mut cache.dy, self.cfg.dim);
        let dpooled = match &self.proj {
            Some(proj) => {
                proj.backward(p, &cache.pooled, &cache.dy, grads, Some(&mut cache.dpooled));
                &cache.dpooled
            }
            None => &cache.dy,
        };
        match &self.pool {
            Pool::Rnn(rnn) => rnn.backward(p, batch, &mut cache.rnn, dpooled, grads),
            Pool::Attention(attn) => attn.backward(p, batch, &mut cache.attn, dpooled, grads),
            Pool::Transformer(tf) => tf.backward(p, batch, &mut cache.tf, dpooled, grads),
            Pool::Mean => {}
        }
    }

    /// Whether the doc tower has parameters (and doc vectors need encoding).
    pub fn doc_is_learned(&self) -> bool {
        self.doc.is_some()
    }

    /// Encodes bank vectors `rows` (`[N, D]`) with the doc tower into
    /// `cache.docs()`.
    pub fn forward_docs(&self, rows: &[f32], cache: &mut DocCache) {
        match &self.doc {
            None => {
                cache.out.clear();
                cache.out.extend_from_slice(rows);
            }
            Some(doc) => {
                doc.forward(&self.params, rows, &mut cache.dy);
                normalize(&cache.dy, &mut cache.out, &mut cache.norms, self.cfg.dim);
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
        let Some(doc) = &self.doc else { return };
        normalize_back(&cache.out, &cache.norms, dd, &mut cache.dy, self.cfg.dim);
        doc.backward(&self.params, rows, &cache.dy, grads, None);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_saved_before_the_transformer_still_load() {
        let old = r#"{"kind":"gru","dim":8,"hidden":8,"projection":true,"residual":"mean","doc":"identity"}"#;
        let cfg: ModelConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg.kind, TowerKind::Gru);
        assert_eq!(
            (cfg.layers, cfg.heads),
            (ModelConfig::DEFAULT_LAYERS, ModelConfig::DEFAULT_HEADS)
        );
    }

    #[test]
    fn transformer_shapes_are_checked() {
        let cfg = |hidden, layers, heads| ModelConfig {
            kind: TowerKind::Transformer,
            dim: 8,
            hidden,
            projection: true,
            residual: Residual::Mean,
            doc: DocTower::Identity,
            layers,
            heads,
        };
        assert!(cfg(12, 2, 4).check().is_ok());
        let err = |c: ModelConfig| c.check().unwrap_err().to_string();
        let odd = err(cfg(9, 2, 1));
        assert!(
            odd.contains("must be even") && odd.contains("e.g. 10"),
            "{odd}"
        );
        let heads = err(cfg(12, 2, 5));
        assert!(
            heads.contains("divisible by heads 5") && heads.contains("e.g. 20"),
            "{heads}"
        );
        let none = err(cfg(12, 0, 4));
        assert!(
            none.contains("0 layers") && none.contains("at least 1"),
            "{none}"
        );
    }
}
