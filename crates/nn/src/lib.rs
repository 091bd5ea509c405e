//! tandem-nn: two-tower retrieval models on the CPU with hand-derived
//! gradients over AVX-512 `gemm`.
//!
//! - query towers `mean`, `attention`, `gru`, `lstm`, `transformer` with
//!   PyTorch's parameter names, shapes and default initialisation (a
//!   trained tower loads in PyTorch), optional projection and residual,
//!   L2-normalised output;
//! - doc towers `identity` and `linear`;
//! - InfoNCE with temperature and margin over shared candidates with
//!   per-query validity;
//! - AdamW whose state is saved, warmup + cosine schedule, gradient clipping;
//! - text encoders (BERT, RoBERTa, MPNet, T5, ModernBERT) with forward and
//!   backward passes over the kernels of [`kernels`], and the losses over
//!   their embeddings in [`contrastive`].
//!
//! Everything is deterministic: the same inputs give bitwise the same
//! outputs whatever the thread count, which is what makes resumed training
//! bitwise identical to uninterrupted training. The exact math is in
//! `docs/model.md`.

#[macro_use]
mod macros;
pub mod contrastive;
pub mod encoder;
mod error;
pub mod kernels;
pub mod linalg;
mod loss;
mod model;
mod optim;
mod params;
mod pool;
mod rnn;
mod simd;
mod transformer;

pub use error::NnError;
pub use loss::{InfoNce, LossInput, LossOutput, Regression};
pub use model::{DocCache, DocTower, Model, ModelConfig, QueryCache, Residual, TowerKind};
pub use optim::{clip_coef, clip_grad_norm, grad_norm, AdamW, AdamWConfig, Schedule};
pub use params::{fingerprint, Param, Params};

/// A batch of left-padded contexts: `x` is `[B, len, dim]`, row `i` has
/// `lens[i]` real steps at the end (`1 <= lens[i] <= len`).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The context vectors.
    pub x: &'a [f32],
    /// Real steps per row.
    pub lens: &'a [usize],
    /// Padded length L.
    pub len: usize,
    /// Vector dimension D.
    pub dim: usize,
}

impl Batch<'_> {
    /// The number of rows B.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Whether step `t` of row `i` is real (not padding).
    #[inline]
    pub fn is_real(&self, i: usize, t: usize) -> bool {
        t + self.lens[i] >= self.len
    }

    /// The first step at which some row is real.
    pub fn first_real_step(&self) -> usize {
        self.len - self.lens.iter().copied().max().unwrap_or(0)
    }

    /// The vector of row `i` at step `t`.
    #[inline]
    pub fn step(&self, i: usize, t: usize) -> &[f32] {
        let at = (i * self.len + t) * self.dim;
        &self.x[at..at + self.dim]
    }

    /// Panics on a batch that breaks the layout (a programming error: the
    /// trainer builds batches).
    fn check(&self, dim: usize) {
        assert_eq!(self.dim, dim, "batch dimension vs model dimension");
        assert_eq!(
            self.x.len(),
            self.rows() * self.len * self.dim,
            "batch size"
        );
        assert!(
            self.lens.iter().all(|&n| n >= 1 && n <= self.len),
            "every row needs 1..=len real steps"
        );
    }
}
