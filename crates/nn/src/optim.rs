//! AdamW whose state is saved with the model, the warmup + cosine learning
//! rate schedule and global-norm gradient clipping, all with PyTorch's
//! semantics.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::linalg::threads;
use crate::params::Params;
use crate::simd::avx512_dispatch;
use crate::NnError;

/// AdamW hyper-parameters (`torch.optim.AdamW` defaults except the
/// learning rate, which the schedule supplies).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW with its moments in the open.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// First moments (`exp_avg`), laid out like the parameters.
    pub exp_avg: Params,
    /// Second moments (`exp_avg_sq`).
    pub exp_avg_sq: Params,
}

impl AdamW {
    /// Zero state for `params`.
    pub fn new(cfg: AdamWConfig, params: &Params) -> AdamW {
        AdamW {
            cfg,
            step: 0,
            exp_avg: params.zeros_like(),
            exp_avg_sq: params.zeros_like(),
        }
    }

    /// One update of `params` in place with gradients `grads` at `lr`.
    pub fn update(&mut self, params: &mut Params, grads: &Params, lr: f32) {
        self.update_scaled(params, grads, lr, 1.0);
    }

    /// One update with the gradients multiplied by `grad_scale` on the fly:
    /// bitwise the same as scaling `grads` first and calling
    /// [`AdamW::update`], without the extra pass. With
    /// `grad_scale = clip_coef(grad_norm(&grads), max_norm)` it is
    /// [`clip_grad_norm`] followed by [`AdamW::update`] (`grads` is left
    /// unclipped).
    pub fn update_scaled(&mut self, params: &mut Params, grads: &Params, lr: f32, grad_scale: f32) {
        self.update_groups(params, grads, lr, grad_scale, &[]);
    }

    /// [`AdamW::update_scaled`] with tensor `i` at `lr * lr_scale[i]`
    /// (differential learning rates); a tensor at scale 0 is frozen: neither
    /// it nor its moments change (no weight decay either). An empty
    /// `lr_scale` is 1 for every tensor.
    pub fn update_groups(
        &mut self,
        params: &mut Params,
        grads: &Params,
        lr: f32,
        grad_scale: f32,
        lr_scale: &[f32],
    ) {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let step = |lr: f32| AdamStep {
            cfg: c,
            step_size: lr / bc1,
            bc2_sqrt: (1.0 - c.beta2.powi(t)).sqrt(),
            decay: 1.0 - lr * c.weight_decay,
            grad_scale,
        };
        let mut work = Vec::new();
        let moments = self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut());
        for (i, ((p, g), (m, v))) in params.iter_mut().zip(grads.iter()).zip(moments).enumerate() {
            let scale = lr_scale.get(i).copied().unwrap_or(1.0);
            if scale == 0.0 {
                continue;
            }
            let k = step(if scale == 1.0 { lr } else { lr * scale });
            let blocks = p
                .data
                .chunks_mut(BLOCK)
                .zip(g.data.chunks(BLOCK))
                .zip(m.data.chunks_mut(BLOCK).zip(v.data.chunks_mut(BLOCK)));
            work.extend(blocks.map(|((p, g), (m, v))| (k, p, g, m, v)));
        }
        // Elementwise: the partition cannot change any value.
        let run = |(k, p, g, m, v): (AdamStep, &mut [f32], &[f32], &mut [f32], &mut [f32])| {
            k.apply(p, g, m, v)
        };
        if threads() > 1 {
            work.into_par_iter().for_each(run);
        } else {
            work.into_iter().for_each(run);
        }
    }

    /// The state as safetensors bytes: `exp_avg.<name>`, `exp_avg_sq.<name>`,
    /// the step and hyper-parameters in the header metadata.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut all = Params::default();
        all.extend_prefixed("exp_avg.", &self.exp_avg);
        all.extend_prefixed("exp_avg_sq.", &self.exp_avg_sq);
        // One metadata key: a HashMap of several would serialise in a
        // random order, and identical states must give identical bytes.
        let header = AdamWHeader {
            step: self.step,
            config: self.cfg,
        };
        let meta = HashMap::from([(
            "adamw".to_string(),
            serde_json::to_string(&header).expect("plain struct"),
        )]);
        all.to_safetensors(&meta)
    }

    /// Restores the state written by [`AdamW::to_safetensors`] for the
    /// parameters `params`.
    pub fn from_safetensors(path: &Path, bytes: &[u8], params: &Params) -> Result<AdamW, NnError> {
        let bad = |problem: String| {
            NnError::weights(
                path,
                problem,
                "resume from a checkpoint written by this version of tandem, or start a new run",
            )
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let AdamWHeader { step, config: cfg } = meta
            .get("adamw")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no optimizer step and config in the header".into()))?;
        let mut all = Params::default();
        all.extend_prefixed("exp_avg.", params);
        all.extend_prefixed("exp_avg_sq.", params);
        all.load_safetensors(path, bytes)?;
        Ok(AdamW {
            cfg,
            step,
            exp_avg: all.strip_prefix("exp_avg."),
            exp_avg_sq: all.strip_prefix("exp_avg_sq."),
        })
    }
}

/// The optimizer's header metadata.
#[derive(Serialize, Deserialize)]
struct AdamWHeader {
    step: u64,
    config: AdamWConfig,
}

/// Linear warmup then cosine decay, stepped per optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate.
    pub min_lr: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// Total optimizer steps.
    pub total: u64,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup {
            return (f64::from(self.lr) * (step + 1) as f64 / self.warmup as f64) as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (f64::from(self.min_lr) + f64::from(self.lr - self.min_lr) * cos) as f32
    }
}

/// Elements per unit of parallel work in the optimizer and the norm.
const BLOCK: usize = 1 << 15;

/// The per-step constants of one AdamW update.
#[derive(Clone, Copy)]
struct AdamStep {
    cfg: AdamWConfig,
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
    grad_scale: f32,
}

impl AdamStep {
    /// Updates one block of parameters and moments (AVX-512 where the CPU
    /// has it; the same IEEE operations either way, so the same bits).
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked above).
            unsafe { self.apply_avx512(p, g, m, v) };
            return;
        }
        self.apply_portable(p, g, m, v);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn apply_avx512(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_portable(p, g, m, v);
    }

    #[inline(always)]
    fn apply_portable(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let c = self.cfg;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * self.grad_scale;
            *p *= self.decay;
            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
            *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
            let denom = v.sqrt() / self.bc2_sqrt + c.eps;
            *p -= self.step_size * *m / denom;
        }
    }
}

/// The global L2 norm of `grads`. Squares are summed in float64 over fixed
/// blocks with 16 lanes each, and the block sums in order, so the value does
/// not depend on the number of threads.
pub fn grad_norm(grads: &Params) -> f32 {
    let blocks: Vec<&[f32]> = grads.iter().flat_map(|p| p.data.chunks(BLOCK)).collect();
    let sums: Vec<f64> = if threads() > 1 {
        blocks.into_par_iter().map(sum_squares).collect()
    } else {
        blocks.into_iter().map(sum_squares).collect()
    };
    sums.iter().sum::<f64>().sqrt() as f32
}

avx512_dispatch!(
    /// The sum of squares of `x` in float64, 16 interleaved lanes.
    fn sum_squares(x: &[f32]) -> f64 {
        let mut acc = [0.0f64; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f64::from(v) * f64::from(v);
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += f64::from(v) * f64::from(v);
        }
        acc.iter().sum()
    }
);

/// The factor `torch.nn.utils.clip_grad_norm_` scales gradients of global
/// norm `norm` by: `max_norm / (norm + 1e-6)` when that is below 1, else 1.
pub fn clip_coef(norm: f32, max_norm: f32) -> f32 {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        coef
    } else {
        1.0
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
/// [`AdamW::update_scaled`] with [`clip_coef`] does the same without the
/// scaling pass.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    let coef = clip_coef(norm, max_norm);
    if coef < 1.0 {
        grads.scale(coef);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_serialises_identically() {
        let p = grads(1);
        let mut params = p.clone();
        let mut opt = AdamW::new(AdamWConfig::default(), &params);
        opt.update(&mut params, &grads(2), 1e-3);
        opt.update(&mut params, &grads(3), 1e-3);
        let bytes = opt.to_safetensors();
        // Same state, same bytes (checkpoint hashes compare them).
        assert_eq!(bytes, opt.clone().to_safetensors());
        let back =
            AdamW::from_safetensors(Path::new("optimizer.safetensors"), &bytes, &params).unwrap();
        assert_eq!(back, opt);
        let err = AdamW::from_safetensors(
            Path::new("optimizer.safetensors"),
            &params.to_safetensors(&HashMap::new()),
            &params,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("optimizer.safetensors") && err.contains("header"),
            "{err}"
        );
    }

    fn grads(seed: u32) -> Params {
        let mut g = Params::default();
        for (i, n) in [5usize, 70_000, 33].into_iter().enumerate() {
            let data = (0..n)
                .map(|k| ((k as f32 + 0.5 * i as f32) * 0.013 + seed as f32).sin())
                .collect();
            g.push(&format!("t{i}"), &[n], data);
        }
        g
    }

    #[test]
    fn fused_clip_matches_clip_then_update_bitwise_at_any_thread_count() {
        let params = grads(7);
        let g = grads(1);
        let mut want_p = params.clone();
        let mut want_opt = AdamW::new(AdamWConfig::default(), &params);
        let mut clipped = g.clone();
        crate::linalg::set_threads(1);
        let norm = clip_grad_norm(&mut clipped, 1.0);
        assert!(norm > 1.0, "the test must clip");
        want_opt.update(&mut want_p, &clipped, 1e-3);
        for t in [1, 2, 3] {
            crate::linalg::set_threads(t);
            let mut p = params.clone();
            let mut opt = AdamW::new(AdamWConfig::default(), &params);
            let n = grad_norm(&g);
            assert_eq!(n.to_bits(), norm.to_bits());
            opt.update_scaled(&mut p, &g, 1e-3, clip_coef(n, 1.0));
            assert_eq!(p, want_p, "threads {t}");
            assert_eq!(opt, want_opt, "threads {t}");
        }
        crate::linalg::set_threads(1);
    }

    #[test]
    fn grad_norm_is_the_l2_norm() {
        let g = grads(2);
        let exact: f64 = g
            .iter()
            .flat_map(|p| p.data.iter())
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        assert!((f64::from(grad_norm(&g)) - exact).abs() < 1e-6 * exact);
        assert_eq!(clip_coef(0.5, 1.0), 1.0);
        assert!((clip_coef(4.0, 1.0) - 0.25).abs() < 1e-6);
    }
}
