//! AdamW whose state is saved with the model, the warmup + cosine learning
//! rate schedule and global-norm gradient clipping, all with PyTorch's
//! semantics.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::params::Params;
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
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let decay = 1.0 - lr * c.weight_decay;
        let moments = self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut());
        for ((p, g), (m, v)) in params.iter_mut().zip(grads.iter()).zip(moments) {
            for (((p, &g), m), v) in p
                .data
                .iter_mut()
                .zip(&g.data)
                .zip(m.data.iter_mut())
                .zip(v.data.iter_mut())
            {
                *p *= decay;
                *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + c.eps;
                *p -= step_size * *m / denom;
            }
        }
    }

    /// The state as safetensors bytes: `exp_avg.<name>`, `exp_avg_sq.<name>`,
    /// the step and hyper-parameters in the header metadata.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut all = Params::default();
        all.extend_prefixed("exp_avg.", &self.exp_avg);
        all.extend_prefixed("exp_avg_sq.", &self.exp_avg_sq);
        let meta = HashMap::from([
            ("step".to_string(), self.step.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(&self.cfg).expect("plain struct"),
            ),
        ]);
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
        let step = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no optimizer step in the header".into()))?;
        let cfg = meta
            .get("config")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no optimizer config in the header".into()))?;
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

/// Scales `grads` so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f32) -> f32 {
    let norm = grads.norm() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads.scale(coef);
    }
    norm
}
