//! Pooling of a left-padded context without recurrence: the masked mean and
//! learned attention pooling, plus the residual vectors.

use crate::linalg::{add_col_sums, dot, matmul, Mat};
use crate::params::{Params, Slot};
use crate::Batch;

/// Writes the mean of the real context vectors of every row into `out`
/// (`[B, D]`).
pub(crate) fn mean(batch: &Batch<'_>, out: &mut Vec<f32>) {
    let (b, l, d) = (batch.rows(), batch.len, batch.dim);
    out.clear();
    out.resize(b * d, 0.0);
    for i in 0..b {
        let o = &mut out[i * d..(i + 1) * d];
        for t in (0..l).filter(|&t| batch.is_real(i, t)) {
            for (v, x) in o.iter_mut().zip(batch.step(i, t)) {
                *v += x;
            }
        }
        let n = batch.lens[i] as f32;
        o.iter_mut().for_each(|v| *v /= n);
    }
}

/// Adds the last context vector of every row to `out` (`[B, D]`).
pub(crate) fn add_last(batch: &Batch<'_>, out: &mut [f32]) {
    let d = batch.dim;
    for i in 0..batch.rows() {
        for (v, x) in out[i * d..(i + 1) * d]
            .iter_mut()
            .zip(batch.step(i, batch.len - 1))
        {
            *v += x;
        }
    }
}

/// Attention pooling: `s_t = v . tanh(W x_t + b)`, softmax over the real
/// steps, weighted sum of the context vectors.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    hidden: usize,
    w: Slot,
    b: Slot,
    v: Slot,
}

/// What attention pooling keeps for its backward pass.
#[derive(Debug, Default)]
pub(crate) struct AttentionCache {
    /// `tanh(W x + b)`, `[B, L, A]`.
    u: Vec<f32>,
    /// The attention weights, `[B, L]` (0 at pad steps).
    alpha: Vec<f32>,
    /// Pre-activation gradients, `[B, L, A]`.
    du: Vec<f32>,
}

impl Attention {
    /// `attn = Linear(D, A)` and `attn_v = Linear(A, 1, bias=False)` with
    /// PyTorch's default initialisation.
    pub(crate) fn init(
        dim: usize,
        hidden: usize,
        params: &mut Params,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Attention {
        let kd = 1.0 / (dim as f32).sqrt();
        let ka = 1.0 / (hidden as f32).sqrt();
        Attention {
            hidden,
            w: params.uniform("attn.weight", &[hidden, dim], kd, rng),
            b: params.uniform("attn.bias", &[hidden], kd, rng),
            v: params.uniform("attn_v.weight", &[1, hidden], ka, rng),
        }
    }

    /// Pools every row into `out` (`[B, D]`).
    pub(crate) fn forward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut AttentionCache,
        out: &mut Vec<f32>,
    ) {
        let (b, l, d, a) = (batch.rows(), batch.len, batch.dim, self.hidden);
        c.u.resize(b * l * a, 0.0);
        matmul(
            &mut c.u,
            Mat::new(batch.x, b * l, d),
            Mat::new(p.at(self.w), a, d).t(),
            0.0,
        );
        let bias = p.at(self.b);
        for row in c.u.chunks_exact_mut(a) {
            for (u, bb) in row.iter_mut().zip(bias) {
                *u = (*u + bb).tanh();
            }
        }
        let v = p.at(self.v);
        c.alpha.clear();
        c.alpha.resize(b * l, 0.0);
        out.clear();
        out.resize(b * d, 0.0);
        for i in 0..b {
            let real = (0..l).filter(|&t| batch.is_real(i, t));
            let scores: Vec<(usize, f32)> = real
                .map(|t| (t, dot(&c.u[(i * l + t) * a..(i * l + t + 1) * a], v)))
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(s.1));
            let total: f32 = scores.iter().map(|s| (s.1 - max).exp()).sum();
            for &(t, s) in &scores {
                let w = (s - max).exp() / total;
                c.alpha[i * l + t] = w;
                for (o, x) in out[i * d..(i + 1) * d].iter_mut().zip(batch.step(i, t)) {
                    *o += w * x;
                }
            }
        }
    }

    /// Adds the gradients of the pooling weights, given the gradient of the
    /// pooled vectors `dout` (`[B, D]`).
    pub(crate) fn backward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut AttentionCache,
        dout: &[f32],
        grads: &mut Params,
    ) {
        let (b, l, d, a) = (batch.rows(), batch.len, batch.dim, self.hidden);
        let v = p.at(self.v);
        c.du.clear();
        c.du.resize(b * l * a, 0.0);
        let mut dv = vec![0.0f32; a];
        for i in 0..b {
            let g = &dout[i * d..(i + 1) * d];
            let real: Vec<usize> = (0..l).filter(|&t| batch.is_real(i, t)).collect();
            let dalpha: Vec<f32> = real.iter().map(|&t| dot(g, batch.step(i, t))).collect();
            let mean: f32 = real
                .iter()
                .zip(&dalpha)
                .map(|(&t, da)| c.alpha[i * l + t] * da)
                .sum();
            for (&t, da) in real.iter().zip(&dalpha) {
                let ds = c.alpha[i * l + t] * (da - mean);
                let u = &c.u[(i * l + t) * a..(i * l + t + 1) * a];
                let du = &mut c.du[(i * l + t) * a..(i * l + t + 1) * a];
                for k in 0..a {
                    dv[k] += ds * u[k];
                    du[k] = ds * v[k] * (1.0 - u[k] * u[k]);
                }
            }
        }
        grads
            .at_mut(self.v)
            .iter_mut()
            .zip(&dv)
            .for_each(|(g, x)| *g += x);
        matmul(
            grads.at_mut(self.w),
            Mat::new(&c.du, b * l, a).t(),
            Mat::new(batch.x, b * l, d),
            1.0,
        );
        add_col_sums(grads.at_mut(self.b), &c.du);
    }
}
