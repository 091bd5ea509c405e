//! InfoNCE over a positive and pools of shared candidates, each query
//! seeing the candidates its validity mask allows.

use crate::linalg::{dot, matmul, Mat};

/// InfoNCE settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfoNce {
    /// Temperature.
    pub tau: f32,
    /// Additive margin subtracted from the positive's similarity.
    pub margin: f32,
}

/// The inputs of one loss evaluation. `q` and `pos` are `[B, D]`; `cand` is
/// `[N, D]` with validity `[B, N]` (false: not shown to that query); `queue`
/// is `[Q, D]` with validity `[B, Q]` and gets no gradient.
#[derive(Debug, Clone, Copy)]
pub struct LossInput<'a> {
    /// Normalised queries.
    pub q: &'a [f32],
    /// Doc vectors of the positives.
    pub pos: &'a [f32],
    /// Doc vectors of the candidates.
    pub cand: &'a [f32],
    /// Which candidates each query sees.
    pub valid: &'a [bool],
    /// Detached extra candidates (the memory queue); may be empty.
    pub queue: &'a [f32],
    /// Which queue entries each query sees.
    pub queue_valid: &'a [bool],
    /// Vector dimension.
    pub dim: usize,
}

/// The loss and its gradients.
#[derive(Debug, Default)]
pub struct LossOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Fraction of queries whose positive outscores every candidate.
    pub accuracy: f32,
    /// Mean number of candidates per query.
    pub candidates: f32,
    /// d loss / d q.
    pub dq: Vec<f32>,
    /// d loss / d pos.
    pub dpos: Vec<f32>,
    /// d loss / d cand (only filled when asked for).
    pub dcand: Vec<f32>,
    logits: Vec<f32>,
    qlogits: Vec<f32>,
    gpos: Vec<f32>,
}

impl InfoNce {
    /// Evaluates the loss and its gradients into `out` (buffers reused).
    pub fn evaluate(&self, x: &LossInput<'_>, want_cand_grad: bool, out: &mut LossOutput) {
        let d = x.dim;
        let b = x.q.len() / d;
        let n = x.cand.len() / d;
        let nq = x.queue.len() / d;
        assert_eq!(x.valid.len(), b * n, "validity mask of {b} x {n}");
        assert_eq!(x.queue_valid.len(), b * nq, "queue mask of {b} x {nq}");
        let inv_tau = 1.0 / self.tau;
        out.logits.resize(b * n, 0.0);
        matmul(
            &mut out.logits,
            Mat::new(x.q, b, d),
            Mat::new(x.cand, n, d).t(),
            0.0,
        );
        out.qlogits.resize(b * nq, 0.0);
        matmul(
            &mut out.qlogits,
            Mat::new(x.q, b, d),
            Mat::new(x.queue, nq, d).t(),
            0.0,
        );
        let scale = 1.0 / b as f32;
        let (mut loss, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        out.dpos.clear();
        out.gpos.clear();
        for i in 0..b {
            let qi = &x.q[i * d..(i + 1) * d];
            let pos = (dot(qi, &x.pos[i * d..(i + 1) * d]) - self.margin) * inv_tau;
            let rows = [
                (
                    &mut out.logits[i * n..(i + 1) * n],
                    &x.valid[i * n..(i + 1) * n],
                ),
                (
                    &mut out.qlogits[i * nq..(i + 1) * nq],
                    &x.queue_valid[i * nq..(i + 1) * nq],
                ),
            ];
            let mut best = f32::NEG_INFINITY;
            for (row, ok) in &rows {
                for (l, &v) in row.iter().zip(*ok) {
                    if v {
                        best = best.max(l * inv_tau);
                    }
                }
            }
            let max = best.max(pos);
            let mut total = (pos - max).exp();
            for (row, ok) in &rows {
                for (l, &v) in row.iter().zip(*ok) {
                    if v {
                        total += (l * inv_tau - max).exp();
                    }
                }
                seen += ok.iter().filter(|&&v| v).count();
            }
            loss += f64::from(max + total.ln() - pos);
            correct += usize::from(pos > best);
            // Each row becomes d loss / d logit (softmax / B), 0 where invalid.
            for (row, ok) in rows {
                for (l, &v) in row.iter_mut().zip(ok) {
                    *l = if v {
                        (*l * inv_tau - max).exp() / total * scale
                    } else {
                        0.0
                    };
                }
            }
            let gpos = ((pos - max).exp() / total - 1.0) * scale * inv_tau;
            out.dpos.extend(qi.iter().map(|q| gpos * q));
            out.gpos.push(gpos);
        }
        out.loss = (loss / b as f64) as f32;
        out.accuracy = correct as f32 / b as f32;
        out.candidates = seen as f32 / b as f32;
        // dq = (softmax / B) [cand; queue] / tau + gpos * pos
        out.dq.resize(b * d, 0.0);
        matmul(
            &mut out.dq,
            Mat::new(&out.logits, b, n),
            Mat::new(x.cand, n, d),
            0.0,
        );
        matmul(
            &mut out.dq,
            Mat::new(&out.qlogits, b, nq),
            Mat::new(x.queue, nq, d),
            1.0,
        );
        for ((g, p), &gpos) in out
            .dq
            .chunks_exact_mut(d)
            .zip(x.pos.chunks_exact(d))
            .zip(&out.gpos)
        {
            for (g, p) in g.iter_mut().zip(p) {
                *g = *g * inv_tau + gpos * p;
            }
        }
        if want_cand_grad {
            out.dcand.resize(n * d, 0.0);
            matmul(
                &mut out.dcand,
                Mat::new(&out.logits, b, n).t(),
                Mat::new(x.q, b, d),
                0.0,
            );
            out.dcand.iter_mut().for_each(|g| *g *= inv_tau);
        }
    }
}

/// Regression of the unit prediction `q` onto the target vectors, the
/// next-vector (LVM) losses: `mse` is `torch.nn.functional.mse_loss(q, t)`
/// (the mean over every element) and `cosine` is `mean(1 - cos(q, t))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regression {
    /// Weight of the MSE term.
    pub mse: f32,
    /// Weight of the cosine term.
    pub cosine: f32,
}

impl Regression {
    /// Adds the weighted gradients with respect to `q` into `dq`; returns
    /// the unweighted (MSE, cosine loss) of the batch.
    pub fn evaluate(&self, q: &[f32], target: &[f32], dim: usize, dq: &mut [f32]) -> (f32, f32) {
        let b = q.len() / dim;
        let (mut mse, mut cos) = (0.0f64, 0.0f64);
        let mse_scale = 2.0 / (b * dim) as f32;
        for ((qi, ti), gi) in q
            .chunks_exact(dim)
            .zip(target.chunks_exact(dim))
            .zip(dq.chunks_exact_mut(dim))
        {
            let tn = dot(ti, ti).sqrt().max(1e-12);
            cos += f64::from(1.0 - dot(qi, ti) / tn);
            for ((g, &qv), &tv) in gi.iter_mut().zip(qi).zip(ti) {
                let diff = qv - tv;
                mse += f64::from(diff * diff);
                *g += self.mse * mse_scale * diff - self.cosine * tv / (tn * b as f32);
            }
        }
        ((mse / (b * dim) as f64) as f32, (cos / b as f64) as f32)
    }
}
