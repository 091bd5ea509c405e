//! InfoNCE over a positive and a pool of shared candidates, each query
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

/// The inputs of one loss evaluation; `q`, `pos` are `[B, D]`, `cand` is
/// `[N, D]`, `valid` is `[B, N]` (false: candidate not shown to that query).
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
    gpos: Vec<f32>,
}

impl InfoNce {
    /// Evaluates the loss and its gradients into `out` (buffers reused).
    pub fn evaluate(&self, x: &LossInput<'_>, want_cand_grad: bool, out: &mut LossOutput) {
        let d = x.dim;
        let b = x.q.len() / d;
        let n = x.cand.len() / d;
        assert_eq!(x.valid.len(), b * n, "validity mask of {b} x {n}");
        out.logits.resize(b * n, 0.0);
        matmul(
            &mut out.logits,
            Mat::new(x.q, b, d),
            Mat::new(x.cand, n, d).t(),
            0.0,
        );
        let inv_tau = 1.0 / self.tau;
        let scale = 1.0 / b as f32;
        let (mut loss, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        out.dpos.clear();
        out.dpos.resize(b * d, 0.0);
        out.gpos.clear();
        for i in 0..b {
            let qi = &x.q[i * d..(i + 1) * d];
            let pi = &x.pos[i * d..(i + 1) * d];
            let pos = (dot(qi, pi) - self.margin) * inv_tau;
            let row = &mut out.logits[i * n..(i + 1) * n];
            let ok = &x.valid[i * n..(i + 1) * n];
            let mut max = pos;
            let mut best_neg = f32::NEG_INFINITY;
            for (l, &v) in row.iter_mut().zip(ok) {
                *l *= inv_tau;
                if v {
                    max = max.max(*l);
                    best_neg = best_neg.max(*l);
                }
            }
            let mut total = (pos - max).exp();
            for (l, &v) in row.iter().zip(ok) {
                if v {
                    total += (l - max).exp();
                }
            }
            loss += f64::from(max + total.ln() - pos);
            correct += usize::from(pos > best_neg);
            seen += ok.iter().filter(|&&v| v).count();
            // Row becomes d loss / d logit (softmax / B), 0 where invalid.
            for (l, &v) in row.iter_mut().zip(ok) {
                *l = if v { (*l - max).exp() / total * scale } else { 0.0 };
            }
            let gpos = ((pos - max).exp() / total - 1.0) * scale * inv_tau;
            out.dpos[i * d..(i + 1) * d]
                .iter_mut()
                .zip(qi)
                .for_each(|(g, q)| *g = gpos * q);
            out.gpos.push(gpos);
        }
        out.loss = (loss / b as f64) as f32;
        out.accuracy = correct as f32 / b as f32;
        out.candidates = seen as f32 / b as f32;
        // dq = (softmax/B) cand / tau + gpos * pos
        out.dq.resize(b * d, 0.0);
        matmul(&mut out.dq, Mat::new(&out.logits, b, n), Mat::new(x.cand, n, d), 0.0);
        for ((g, p), &gpos) in out.dq.chunks_exact_mut(d).zip(x.pos.chunks_exact(d)).zip(&out.gpos) {
            for (g, p) in g.iter_mut().zip(p) {
                *g = *g * inv_tau + gpos * p;
            }
        }
        if want_cand_grad {
            out.dcand.resize(n * d, 0.0);
            matmul(&mut out.dcand, Mat::new(&out.logits, b, n).t(), Mat::new(x.q, b, d), 0.0);
            out.dcand.iter_mut().for_each(|g| *g *= inv_tau);
        }
    }
}
