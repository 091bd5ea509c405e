//! Losses over text embeddings, with their gradients: contrastive
//! (InfoNCE / MultipleNegativesRanking, symmetric or not), distillation
//! from teacher scores (MarginMSE, KL) and isotropy regularisers
//! (covariance to identity, SIGReg, standard deviation to a target), over
//! dot-product or negative squared Euclidean scores.
//!
//! Every loss takes the query vectors `q` (`[B, D]`) and the document
//! vectors `docs` (`[M, D]`) and adds its gradients into `dq` / `ddocs`
//! (scaled by its weight), so that several losses sum.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::linalg::{dot, matmul, Mat};

crate::named_enum!(
    /// How a query and a document are scored.
    Similarity {
        /// `q . d` (cosine when the vectors are normalised).
        Dot = "dot",
        /// `-|q - d|^2` (a Gaussian head's Euclidean retrieval).
        NegL2 = "l2",
    }
);

impl Similarity {
    /// The scores of every query against every document, `[B, M]`.
    pub fn scores(self, q: &[f32], docs: &[f32], dim: usize) -> Vec<f32> {
        let (b, m) = (q.len() / dim, docs.len() / dim);
        let mut s = vec![0.0f32; b * m];
        matmul(&mut s, Mat::new(q, b, dim), Mat::new(docs, m, dim).t(), 0.0);
        if self == Similarity::NegL2 {
            let qn: Vec<f32> = q.chunks_exact(dim).map(|v| dot(v, v)).collect();
            let dn: Vec<f32> = docs.chunks_exact(dim).map(|v| dot(v, v)).collect();
            for (row, qq) in s.chunks_exact_mut(m).zip(&qn) {
                for (v, dd) in row.iter_mut().zip(&dn) {
                    *v = 2.0 * *v - qq - dd;
                }
            }
        }
        s
    }

    /// Adds the gradients of the vectors given `ds` (`[B, M]`), the
    /// gradient of [`Similarity::scores`].
    pub fn backward(
        self,
        q: &[f32],
        docs: &[f32],
        dim: usize,
        ds: &[f32],
        dq: &mut [f32],
        ddocs: &mut [f32],
    ) {
        let (b, m) = (q.len() / dim, docs.len() / dim);
        let k = match self {
            Similarity::Dot => 1.0,
            Similarity::NegL2 => 2.0,
        };
        let mut g = vec![0.0f32; b * dim];
        matmul(&mut g, Mat::new(ds, b, m), Mat::new(docs, m, dim), 0.0);
        for (a, v) in dq.iter_mut().zip(&g) {
            *a += k * v;
        }
        let mut g = vec![0.0f32; m * dim];
        matmul(&mut g, Mat::new(ds, b, m).t(), Mat::new(q, b, dim), 0.0);
        for (a, v) in ddocs.iter_mut().zip(&g) {
            *a += k * v;
        }
        if self == Similarity::NegL2 {
            // d(-|q|^2 - |d|^2): -2 q times the row sums, -2 d times the column sums
            for (i, row) in ds.chunks_exact(m).enumerate() {
                let sum: f32 = row.iter().sum();
                for (a, v) in dq[i * dim..(i + 1) * dim].iter_mut().zip(&q[i * dim..]) {
                    *a -= 2.0 * sum * v;
                }
            }
            for j in 0..m {
                let sum: f32 = (0..b).map(|i| ds[i * m + j]).sum();
                for (a, v) in ddocs[j * dim..(j + 1) * dim]
                    .iter_mut()
                    .zip(&docs[j * dim..])
                {
                    *a -= 2.0 * sum * v;
                }
            }
        }
    }
}

/// Late interaction (ColBERT's MaxSim) between texts of several vectors
/// each: query `i` has the rows `q_off[i]..q_off[i + 1]` of `q`, document
/// `j` the rows `d_off[j]..d_off[j + 1]` of `docs` (`dim` wide), and
/// scores `sum over its rows t of max over the document's rows s of q_t .
/// d_s` (0 for a document without rows).
#[derive(Debug, Clone)]
pub struct MaxSim {
    /// `[B, M]`.
    pub scores: Vec<f32>,
    /// For every query row and document, the document row that won
    /// (`u32::MAX` for a document without rows).
    argmax: Vec<u32>,
    q_off: Vec<usize>,
    docs: usize,
}

impl MaxSim {
    /// The scores of every query against every document. Each query's row
    /// of scores is computed alone (one product against every document
    /// row), so memory is that of one query and the result does not depend
    /// on the thread count.
    pub fn new(q: &[f32], q_off: &[usize], docs: &[f32], d_off: &[usize], dim: usize) -> MaxSim {
        use rayon::prelude::*;
        let (b, m) = (q_off.len() - 1, d_off.len() - 1);
        let rows = docs.len() / dim;
        let one = |i: usize| -> (Vec<f32>, Vec<u32>) {
            let qi = &q[q_off[i] * dim..q_off[i + 1] * dim];
            let t = qi.len() / dim;
            let mut g = vec![0.0f32; t * rows];
            crate::linalg::matmul_on(
                &mut g,
                Mat::new(qi, t, dim),
                Mat::new(docs, rows, dim).t(),
                0.0,
                1,
            );
            let mut scores = vec![0.0f32; m];
            let mut arg = vec![u32::MAX; t * m];
            for (r, row) in g.chunks_exact(rows.max(1)).enumerate().take(t) {
                for j in 0..m {
                    let span = d_off[j]..d_off[j + 1];
                    if span.is_empty() {
                        continue;
                    }
                    let mut best = (span.start, row[span.start]);
                    for s in span {
                        if row[s] > best.1 {
                            best = (s, row[s]);
                        }
                    }
                    arg[r * m + j] = best.0 as u32;
                    scores[j] += best.1;
                }
            }
            (scores, arg)
        };
        let parts: Vec<(Vec<f32>, Vec<u32>)> = if crate::linalg::threads() > 1 && b > 1 {
            (0..b).into_par_iter().map(one).collect()
        } else {
            (0..b).map(one).collect()
        };
        let mut scores = Vec::with_capacity(b * m);
        let mut argmax = Vec::with_capacity(q.len() / dim * m);
        for (s, a) in parts {
            scores.extend(s);
            argmax.extend(a);
        }
        MaxSim {
            scores,
            argmax,
            q_off: q_off.to_vec(),
            docs: m,
        }
    }

    /// Adds the gradients of the vectors given `ds` (`[B, M]`), the
    /// gradient of [`MaxSim::scores`]: each query row gets its winning
    /// document row, and that row the query row, times the score's
    /// gradient.
    pub fn backward(
        &self,
        q: &[f32],
        docs: &[f32],
        dim: usize,
        ds: &[f32],
        dq: &mut [f32],
        ddocs: &mut [f32],
    ) {
        let (m, q_off) = (self.docs, &self.q_off);
        for i in 0..q_off.len() - 1 {
            for t in q_off[i]..q_off[i + 1] {
                let qt = &q[t * dim..(t + 1) * dim];
                for j in 0..m {
                    let (s, g) = (self.argmax[t * m + j], ds[i * m + j]);
                    if s == u32::MAX || g == 0.0 {
                        continue;
                    }
                    let s = s as usize;
                    let d = &docs[s * dim..(s + 1) * dim];
                    for (a, v) in dq[t * dim..(t + 1) * dim].iter_mut().zip(d) {
                        *a += g * v;
                    }
                    for (a, v) in ddocs[s * dim..(s + 1) * dim].iter_mut().zip(qt) {
                        *a += g * v;
                    }
                }
            }
        }
    }
}

/// Cross-entropy of each row of `logits` (`[rows, cols]`) against its
/// `target` column over the columns `shown` allows; returns the summed loss
/// and the number of rows whose target wins, and turns `logits` into the
/// gradient of the summed loss (0 where not shown).
fn cross_entropy(
    logits: &mut [f32],
    cols: usize,
    target: &[usize],
    shown: impl Fn(usize, usize) -> bool,
) -> (f64, usize) {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (i, row) in logits.chunks_exact_mut(cols).enumerate() {
        let t = target[i];
        let mut best_other = f32::NEG_INFINITY;
        for (j, &v) in row.iter().enumerate() {
            if j != t && shown(i, j) {
                best_other = best_other.max(v);
            }
        }
        correct += usize::from(row[t] > best_other);
        let max = best_other.max(row[t]);
        let mut total = 0.0f32;
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j == t || shown(i, j) {
                (*v - max).exp()
            } else {
                0.0
            };
            total += *v;
        }
        loss -= f64::from((row[t] / total).ln());
        for v in row.iter_mut() {
            *v /= total;
        }
        row[t] -= 1.0;
    }
    (loss, correct)
}

/// InfoNCE as sentence-transformers' MultipleNegativesRankingLoss computes
/// it: each query against every document of the batch (its positive, the
/// other queries' positives and every hard negative), scores times `scale`
/// (1 / temperature), cross-entropy towards its positive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mnrl {
    /// `1 / temperature` (sentence-transformers' default: 20).
    pub scale: f32,
    /// Adds the documents-to-queries direction (each positive against every
    /// query) and averages the two (MultipleNegativesSymmetricRankingLoss).
    pub symmetric: bool,
    /// How vectors are scored.
    pub similarity: Similarity,
}

/// What a loss reports besides its gradients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossValue {
    /// The (weighted) loss.
    pub loss: f64,
    /// The fraction of queries whose positive outscores every other
    /// document shown (contrastive losses only).
    pub accuracy: f64,
}

impl Mnrl {
    /// The loss over queries `q` (`[B, D]`) and documents `docs` (`[M, D]`,
    /// query `i`'s positive at row `positive[i]`); `hidden(i, j)` hides
    /// document `j` from query `i` (another positive of the same query,
    /// a duplicate text). Adds `weight` times the gradients into `dq` and
    /// `ddocs`.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &self,
        q: &[f32],
        docs: &[f32],
        dim: usize,
        positive: &[usize],
        hidden: impl Fn(usize, usize) -> bool,
        weight: f32,
        dq: &mut [f32],
        ddocs: &mut [f32],
    ) -> LossValue {
        let (b, m) = (q.len() / dim, docs.len() / dim);
        let mut s = self.similarity.scores(q, docs, dim);
        let dirs = if self.symmetric { 2.0 } else { 1.0 };
        let (loss, correct) = self.forward_scores(&mut s, m, positive, &hidden, weight, dirs);
        let k = weight * self.scale / (b as f32 * dirs);
        let mut total = loss / b as f64;
        if self.symmetric {
            // each positive against every query: the transpose of the
            // positives' columns
            let pos: Vec<f32> = positive
                .iter()
                .flat_map(|&j| docs[j * dim..(j + 1) * dim].iter().copied())
                .collect();
            let mut t = self.similarity.scores(&pos, q, dim);
            t.iter_mut().for_each(|v| *v *= self.scale);
            let diag: Vec<usize> = (0..b).collect();
            let (back, _) =
                cross_entropy(&mut t, b, &diag, |i, j| i != j && !hidden(j, positive[i]));
            total = (total + back / b as f64) / 2.0;
            // scores(pos, q) = scores(q, pos)^T: fold it into ds
            for i in 0..b {
                for (j, &pj) in positive.iter().enumerate() {
                    s[i * m + pj] += t[j * b + i] * k;
                }
            }
        }
        self.similarity.backward(q, docs, dim, &s, dq, ddocs);
        LossValue {
            loss: f64::from(weight) * total,
            accuracy: correct as f64 / b as f64,
        }
    }

    /// The loss (one direction) over given scores `s` (`[B, M]`, any
    /// scoring: ColBERT's MaxSim), turning `s` into `weight` times its
    /// gradient; the similarity and `symmetric` are not used.
    pub fn evaluate_scores(
        &self,
        s: &mut [f32],
        m: usize,
        positive: &[usize],
        hidden: impl Fn(usize, usize) -> bool,
        weight: f32,
    ) -> LossValue {
        let b = positive.len();
        let (loss, correct) = self.forward_scores(s, m, positive, &hidden, weight, 1.0);
        LossValue {
            loss: f64::from(weight) * loss / b as f64,
            accuracy: correct as f64 / b as f64,
        }
    }

    /// Cross-entropy of the scaled scores `s` towards the positives: the
    /// summed loss and the queries ranked right; `s` becomes the gradient
    /// of `weight / dirs` times the mean loss.
    fn forward_scores(
        &self,
        s: &mut [f32],
        m: usize,
        positive: &[usize],
        hidden: &impl Fn(usize, usize) -> bool,
        weight: f32,
        dirs: f32,
    ) -> (f64, usize) {
        let b = positive.len();
        s.iter_mut().for_each(|v| *v *= self.scale);
        let (loss, correct) =
            cross_entropy(s, m, positive, |i, j| j != positive[i] && !hidden(i, j));
        let k = weight * self.scale / (b as f32 * dirs);
        s.iter_mut().for_each(|v| *v *= k);
        (loss, correct)
    }
}

/// The scores of query `i` against its own documents `groups[i]`
/// (`[positive, negative, ...]`), from the full score matrix `s` (`[B, M]`).
fn group_scores(s: &[f32], m: usize, groups: &[Vec<usize>]) -> Vec<Vec<f32>> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| g.iter().map(|&j| s[i * m + j]).collect())
        .collect()
}

/// Distillation from teacher scores: query `i` scores its documents
/// `groups[i]` (`[positive, negative, ...]`, rows of `docs`), the teacher
/// gave `teacher[i]` (same length).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distill {
    /// sentence-transformers' MarginMSELoss: the mean over negatives of
    /// `((s_pos - s_neg) - (t_pos - t_neg))^2`.
    MarginMse,
    /// sentence-transformers' DistillKLDivLoss: `KL(softmax(t / T) ||
    /// softmax(s / T)) * T^2`, averaged over queries.
    Kl {
        /// The temperature `T`.
        temperature: f32,
        /// Min-max normalises each query's student scores first,
        /// `(s - min) / (max - min + 1e-8)` (PyLate's Distillation with
        /// `normalize_scores`).
        normalize: bool,
    },
}

impl Distill {
    /// The loss, adding `weight` times its gradients into `dq` and `ddocs`.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &self,
        similarity: Similarity,
        q: &[f32],
        docs: &[f32],
        dim: usize,
        groups: &[Vec<usize>],
        teacher: &[Vec<f32>],
        weight: f32,
        dq: &mut [f32],
        ddocs: &mut [f32],
    ) -> LossValue {
        let m = docs.len() / dim;
        let s = similarity.scores(q, docs, dim);
        let (value, ds) = self.evaluate_scores(&s, m, groups, teacher, weight);
        similarity.backward(q, docs, dim, &ds, dq, ddocs);
        value
    }

    /// The loss over given scores `s` (`[B, M]`, any scoring: ColBERT's
    /// MaxSim) and `weight` times its gradient with respect to them.
    pub fn evaluate_scores(
        &self,
        s: &[f32],
        m: usize,
        groups: &[Vec<usize>],
        teacher: &[Vec<f32>],
        weight: f32,
    ) -> (LossValue, Vec<f32>) {
        let b = groups.len();
        let student = group_scores(s, m, groups);
        let mut ds = vec![0.0f32; b * m];
        let mut loss = 0.0f64;
        match *self {
            Distill::MarginMse => {
                let pairs: usize = groups.iter().map(|g| g.len().saturating_sub(1)).sum();
                let k = weight / pairs.max(1) as f32;
                for (i, (st, te)) in student.iter().zip(teacher).enumerate() {
                    for n in 1..st.len() {
                        let e = (st[0] - st[n]) - (te[0] - te[n]);
                        loss += f64::from(e * e);
                        ds[i * m + groups[i][0]] += 2.0 * e * k;
                        ds[i * m + groups[i][n]] -= 2.0 * e * k;
                    }
                }
                loss /= pairs.max(1) as f64;
            }
            Distill::Kl {
                temperature: t,
                normalize,
            } => {
                let softmax = |v: &[f32]| -> Vec<f32> {
                    let max = v.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x / t));
                    let e: Vec<f32> = v.iter().map(|x| (x / t - max).exp()).collect();
                    let z: f32 = e.iter().sum();
                    e.iter().map(|x| x / z).collect()
                };
                for (i, (st, te)) in student.iter().zip(teacher).enumerate() {
                    let norm = normalize.then(|| MinMax::of(st));
                    let st = norm.as_ref().map_or(st.clone(), |n| n.apply(st));
                    let (ps, pt) = (softmax(&st), softmax(te));
                    let mut g = vec![0.0f32; st.len()];
                    for (n, (a, p)) in ps.iter().zip(&pt).enumerate() {
                        if *p > 0.0 {
                            loss += f64::from(p * (p.ln() - a.ln()));
                        }
                        g[n] = (a - p) * t * weight / b as f32;
                    }
                    if let Some(n) = norm {
                        n.backward(&st, &mut g);
                    }
                    for (n, v) in g.into_iter().enumerate() {
                        ds[i * m + groups[i][n]] += v;
                    }
                }
                loss *= f64::from(t * t) / b as f64;
            }
        }
        let value = LossValue {
            loss: f64::from(weight) * loss,
            accuracy: 0.0,
        };
        (value, ds)
    }
}

/// A min-max normalisation of a list of scores, `(s - min) / (max - min +
/// 1e-8)`, with the places of its minimum and maximum (the first of ties,
/// as `torch.max` / `torch.min` report them).
struct MinMax {
    min: (usize, f32),
    max: (usize, f32),
}

impl MinMax {
    fn of(s: &[f32]) -> MinMax {
        let (mut min, mut max) = ((0, s[0]), (0, s[0]));
        for (i, &v) in s.iter().enumerate() {
            if v < min.1 {
                min = (i, v);
            }
            if v > max.1 {
                max = (i, v);
            }
        }
        MinMax { min, max }
    }

    fn range(&self) -> f32 {
        self.max.1 - self.min.1 + 1e-8
    }

    fn apply(&self, s: &[f32]) -> Vec<f32> {
        s.iter().map(|v| (v - self.min.1) / self.range()).collect()
    }

    /// Turns `g`, the gradient of the normalised scores `y`, into that of
    /// the scores.
    fn backward(&self, y: &[f32], g: &mut [f32]) {
        let r = self.range();
        let sum: f32 = g.iter().sum();
        let sum_y: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
        g.iter_mut().for_each(|v| *v /= r);
        // y = (s - min) / (max - min): through min, -(1 - y) / r; through max, -y / r
        g[self.min.0] += (sum_y - sum) / r;
        g[self.max.0] -= sum_y / r;
    }
}

/// The mean of the rows of `x` (`[n, dim]`) and the rows minus it.
fn centred(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / dim;
    let mut mean = vec![0.0f32; dim];
    for row in x.chunks_exact(dim) {
        crate::kernels::add_into(&mut mean, row);
    }
    mean.iter_mut().for_each(|v| *v /= n as f32);
    let c = x
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(a, b)| a - b))
        .collect();
    (mean, c)
}

/// The covariance of the rows of `x` (unbiased, `[dim, dim]`) and the
/// centred rows.
fn covariance(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / dim;
    let (_, c) = centred(x, dim);
    let mut cov = vec![0.0f32; dim * dim];
    matmul(
        &mut cov,
        Mat::new(&c, n, dim).t(),
        Mat::new(&c, n, dim),
        0.0,
    );
    cov.iter_mut().for_each(|v| *v /= (n.max(2) - 1) as f32);
    (cov, c)
}

/// Regularisers that push a batch of embeddings towards an isotropic
/// Gaussian (RAGCUN's Gaussian head, LeJEPA's SIGReg). Each takes the rows
/// of `x` (`[n, dim]`, `n >= 2`) and adds `weight` times its gradient into
/// `dx`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Isotropy {
    /// `|Cov(x) - I|_F^2 / dim`.
    Covariance,
    /// `mean over dimensions of (std - target)^2` (unbiased std).
    Std {
        /// The target standard deviation.
        target: f32,
    },
    /// SIGReg: the Epps-Pulley statistic of the projections of the rows on
    /// `projections` random unit directions (drawn from `seed`) against a
    /// standard normal, `n * integral over t in [0, 3] of
    /// exp(-t^2 / 2) |phi_n(t) - exp(-t^2 / 2)|^2` (17-knot trapezoid),
    /// averaged over the directions.
    SigReg {
        /// Random directions per evaluation.
        projections: usize,
        /// Their seed (vary it per step, from the run's seed).
        seed: u64,
    },
}

/// The quadrature of SIGReg: 17 knots on `[0, 3]` and trapezoid weights
/// times the `exp(-t^2 / 2)` window.
fn sigreg_knots() -> Vec<(f32, f32)> {
    let (k, top) = (17usize, 3.0f32);
    let h = top / (k - 1) as f32;
    (0..k)
        .map(|i| {
            let t = i as f32 * h;
            let trap = if i == 0 || i == k - 1 { h / 2.0 } else { h };
            (t, trap * (-t * t / 2.0).exp())
        })
        .collect()
}

impl Isotropy {
    /// The loss, adding `weight` times its gradient into `dx`.
    pub fn evaluate(&self, x: &[f32], dim: usize, weight: f32, dx: &mut [f32]) -> f64 {
        let n = x.len() / dim;
        match *self {
            Isotropy::Covariance => {
                let (mut cov, c) = covariance(x, dim);
                for i in 0..dim {
                    cov[i * dim + i] -= 1.0;
                }
                let loss = cov.iter().map(|v| f64::from(v * v)).sum::<f64>() / dim as f64;
                // d/dx_r = 4 / (dim (n - 1)) (x_r - mean) (Cov - I)
                let mut g = vec![0.0f32; n * dim];
                matmul(&mut g, Mat::new(&c, n, dim), Mat::new(&cov, dim, dim), 0.0);
                let k = weight * 4.0 / (dim as f32 * (n.max(2) - 1) as f32);
                for (d, v) in dx.iter_mut().zip(&g) {
                    *d += k * v;
                }
                f64::from(weight) * loss
            }
            Isotropy::Std { target } => {
                let (_, c) = centred(x, dim);
                let mut var = vec![0.0f32; dim];
                for row in c.chunks_exact(dim) {
                    for (v, a) in var.iter_mut().zip(row) {
                        *v += a * a;
                    }
                }
                let std: Vec<f32> = var
                    .iter()
                    .map(|v| (v / (n.max(2) - 1) as f32 + 1e-8).sqrt())
                    .collect();
                let loss = std
                    .iter()
                    .map(|s| f64::from((s - target) * (s - target)))
                    .sum::<f64>()
                    / dim as f64;
                for (drow, crow) in dx.chunks_exact_mut(dim).zip(c.chunks_exact(dim)) {
                    for ((d, a), s) in drow.iter_mut().zip(crow).zip(&std) {
                        *d += weight * 2.0 * (s - target) / dim as f32 * a
                            / ((n.max(2) - 1) as f32 * s);
                    }
                }
                f64::from(weight) * loss
            }
            Isotropy::SigReg { projections, seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let knots = sigreg_knots();
                let mut loss = 0.0f64;
                let mut dir = vec![0.0f32; dim];
                let mut z = vec![0.0f32; n];
                let mut dz = vec![0.0f32; n];
                for _ in 0..projections {
                    for v in dir.iter_mut() {
                        *v = StandardNormal.sample(&mut rng);
                    }
                    let norm = dot(&dir, &dir).sqrt().max(1e-12);
                    dir.iter_mut().for_each(|v| *v /= norm);
                    for (zi, row) in z.iter_mut().zip(x.chunks_exact(dim)) {
                        *zi = dot(row, &dir);
                    }
                    dz.fill(0.0);
                    let mut stat = 0.0f64;
                    for &(t, w) in &knots {
                        let (mut cs, mut sn) = (0.0f32, 0.0f32);
                        for &zi in &z {
                            cs += (t * zi).cos();
                            sn += (t * zi).sin();
                        }
                        let (cs, sn) = (cs / n as f32, sn / n as f32);
                        let re = cs - (-t * t / 2.0).exp();
                        stat += f64::from(w * (re * re + sn * sn));
                        // d/dz_j of n w (re^2 + sn^2)
                        for (d, &zi) in dz.iter_mut().zip(&z) {
                            *d += w * 2.0 * (-re * t * (t * zi).sin() + sn * t * (t * zi).cos());
                        }
                    }
                    loss += stat * n as f64;
                    let k = weight / projections as f32;
                    for (drow, g) in dx.chunks_exact_mut(dim).zip(&dz) {
                        for (d, a) in drow.iter_mut().zip(&dir) {
                            *d += k * g * a;
                        }
                    }
                }
                f64::from(weight) * loss / projections.max(1) as f64
            }
        }
    }
}

/// Isotropy measures of a batch of embeddings, logged with the loss.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IsotropyStats {
    /// The mean over dimensions of the (unbiased) standard deviation.
    pub std: f64,
    /// The mean L2 norm of the rows.
    pub mean_norm: f64,
    /// `|Cov - I|_F / sqrt(dim)`.
    pub cov_error: f64,
}

impl IsotropyStats {
    /// The measures of the rows of `x` (`[n, dim]`).
    pub fn of(x: &[f32], dim: usize) -> IsotropyStats {
        let n = x.len() / dim;
        if n == 0 {
            return IsotropyStats::default();
        }
        let (cov, _) = covariance(x, dim);
        let std = (0..dim)
            .map(|i| f64::from(cov[i * dim + i].max(0.0)).sqrt())
            .sum::<f64>()
            / dim as f64;
        let err = (0..dim * dim)
            .map(|k| {
                let e = cov[k] - if k % (dim + 1) == 0 { 1.0 } else { 0.0 };
                f64::from(e * e)
            })
            .sum::<f64>();
        IsotropyStats {
            std,
            mean_norm: x
                .chunks_exact(dim)
                .map(|r| f64::from(dot(r, r)).sqrt())
                .sum::<f64>()
                / n as f64,
            cov_error: (err / dim as f64).sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| {
                let v: f32 = StandardNormal.sample(&mut rng);
                v * 0.5
            })
            .collect()
    }

    /// A loss of (q, docs) adding its gradients into (dq, ddocs).
    type LossFn<'a> = &'a dyn Fn(&[f32], &[f32], &mut [f32], &mut [f32]) -> f64;

    /// Checks `f`'s gradients by central differences.
    fn check(q: &[f32], docs: &[f32], f: LossFn<'_>) {
        let mut dq = vec![0.0; q.len()];
        let mut dd = vec![0.0; docs.len()];
        f(q, docs, &mut dq, &mut dd);
        let e = 1e-3f32;
        let run = |q: &[f32], d: &[f32]| {
            let (mut a, mut b) = (vec![0.0; q.len()], vec![0.0; d.len()]);
            f(q, d, &mut a, &mut b)
        };
        for i in 0..q.len() {
            let (mut up, mut down) = (q.to_vec(), q.to_vec());
            up[i] += e;
            down[i] -= e;
            let fd = (run(&up, docs) - run(&down, docs)) / f64::from(2.0 * e);
            assert!(
                (fd - f64::from(dq[i])).abs() < 2e-3 * fd.abs().max(1.0),
                "dq[{i}] {} vs {fd}",
                dq[i]
            );
        }
        for i in 0..docs.len() {
            let (mut up, mut down) = (docs.to_vec(), docs.to_vec());
            up[i] += e;
            down[i] -= e;
            let fd = (run(q, &up) - run(q, &down)) / f64::from(2.0 * e);
            assert!(
                (fd - f64::from(dd[i])).abs() < 2e-3 * fd.abs().max(1.0),
                "ddocs[{i}] {} vs {fd}",
                dd[i]
            );
        }
    }

    #[test]
    fn mnrl_is_the_cross_entropy_of_scaled_scores() {
        let (b, m, dim) = (3, 5, 4);
        let (q, docs) = (data(b, dim, 1), data(m, dim, 2));
        let positive = [0, 1, 2];
        let loss = Mnrl {
            scale: 20.0,
            symmetric: false,
            similarity: Similarity::Dot,
        };
        let (mut dq, mut dd) = (vec![0.0; q.len()], vec![0.0; docs.len()]);
        let got = loss.evaluate(
            &q,
            &docs,
            dim,
            &positive,
            |_, _| false,
            1.0,
            &mut dq,
            &mut dd,
        );
        let mut want = 0.0f64;
        for i in 0..b {
            let s: Vec<f64> = (0..m)
                .map(|j| {
                    20.0 * (0..dim)
                        .map(|c| f64::from(q[i * dim + c] * docs[j * dim + c]))
                        .sum::<f64>()
                })
                .collect();
            let z: f64 = s.iter().map(|v| v.exp()).sum();
            want += z.ln() - s[i];
        }
        assert!(
            (got.loss - want / b as f64).abs() < 1e-4,
            "{} vs {}",
            got.loss,
            want / b as f64
        );
    }

    #[test]
    fn contrastive_gradients_match_finite_differences() {
        let (b, m, dim) = (3, 6, 4);
        let (q, docs) = (data(b, dim, 3), data(m, dim, 4));
        let positive = [0, 1, 2];
        for similarity in [Similarity::Dot, Similarity::NegL2] {
            for symmetric in [false, true] {
                let loss = Mnrl {
                    scale: 2.0,
                    symmetric,
                    similarity,
                };
                // query 0 must not see document 4 (another of its positives)
                check(&q, &docs, &|q, d, dq, dd| {
                    loss.evaluate(q, d, dim, &positive, |i, j| i == 0 && j == 4, 0.7, dq, dd)
                        .loss
                });
            }
        }
    }

    #[test]
    fn distillation_gradients_match_finite_differences() {
        let (b, m, dim) = (2, 6, 4);
        let (q, docs) = (data(b, dim, 5), data(m, dim, 6));
        let groups = vec![vec![0, 2, 3], vec![1, 4, 5]];
        let teacher = vec![vec![3.0, 1.0, -0.5], vec![2.0, 2.5, 0.0]];
        let kl = |temperature, normalize| Distill::Kl {
            temperature,
            normalize,
        };
        for loss in [Distill::MarginMse, kl(2.0, false), kl(1.0, true)] {
            for similarity in [Similarity::Dot, Similarity::NegL2] {
                check(&q, &docs, &|q, d, dq, dd| {
                    loss.evaluate(similarity, q, d, dim, &groups, &teacher, 0.5, dq, dd)
                        .loss
                });
            }
        }
    }

    #[test]
    fn maxsim_losses_match_finite_differences() {
        let dim = 3;
        // queries of 2 and 3 rows; documents of 2, 1, 0 (empty) and 3 rows
        let (q_off, d_off) = (vec![0, 2, 5], vec![0, 2, 3, 3, 6]);
        let (q, docs) = (data(5, dim, 8), data(6, dim, 9));
        let m = d_off.len() - 1;
        let late = |q: &[f32],
                    d: &[f32],
                    ds: &dyn Fn(&mut Vec<f32>) -> f64,
                    dq: &mut [f32],
                    dd: &mut [f32]| {
            let ms = MaxSim::new(q, &q_off, d, &d_off, dim);
            let mut s = ms.scores.clone();
            let loss = ds(&mut s);
            ms.backward(q, d, dim, &s, dq, dd);
            loss
        };
        let mnrl = Mnrl {
            scale: 2.0,
            symmetric: false,
            similarity: Similarity::Dot,
        };
        check(&q, &docs, &|q, d, dq, dd| {
            late(
                q,
                d,
                &|s| {
                    mnrl.evaluate_scores(s, m, &[0, 3], |i, j| i == 1 && j == 2, 0.7)
                        .loss
                },
                dq,
                dd,
            )
        });
        let groups = vec![vec![0, 1, 3], vec![3, 0, 2]];
        let teacher = vec![vec![3.0, 1.0, -0.5], vec![2.0, 2.5, 0.0]];
        for normalize in [false, true] {
            let kl = Distill::Kl {
                temperature: 1.0,
                normalize,
            };
            check(&q, &docs, &|q, d, dq, dd| {
                late(
                    q,
                    d,
                    &|s| {
                        let (v, g) = kl.evaluate_scores(s, m, &groups, &teacher, 0.5);
                        *s = g;
                        v.loss
                    },
                    dq,
                    dd,
                )
            });
        }
        // the scores themselves: a brute force
        let ms = MaxSim::new(&q, &q_off, &docs, &d_off, dim);
        for i in 0..2 {
            for j in 0..m {
                let want: f32 = (q_off[i]..q_off[i + 1])
                    .map(|t| {
                        (d_off[j]..d_off[j + 1])
                            .map(|s| dot(&q[t * dim..(t + 1) * dim], &docs[s * dim..(s + 1) * dim]))
                            .fold(None, |a: Option<f32>, v| Some(a.map_or(v, |a| a.max(v))))
                            .unwrap_or(0.0)
                    })
                    .sum();
                assert!((ms.scores[i * m + j] - want).abs() < 1e-5, "{i} {j}");
            }
        }
    }

    #[test]
    fn isotropy_gradients_match_finite_differences() {
        let (n, dim) = (7, 3);
        let x = data(n, dim, 7);
        for loss in [
            Isotropy::Covariance,
            Isotropy::Std { target: 1.0 },
            Isotropy::SigReg {
                projections: 4,
                seed: 9,
            },
        ] {
            check(&x, &[], &|x, _, dx, _| loss.evaluate(x, dim, 0.3, dx));
        }
    }

    #[test]
    fn isotropy_losses_vanish_on_a_whitened_batch() {
        // Rows +-e_i scaled so that the covariance is exactly I.
        let dim = 3;
        let n = 2 * dim;
        let s = ((n - 1) as f32 / 2.0).sqrt();
        let mut x = vec![0.0f32; n * dim];
        for i in 0..dim {
            x[2 * i * dim + i] = s;
            x[(2 * i + 1) * dim + i] = -s;
        }
        let mut dx = vec![0.0; x.len()];
        assert!(Isotropy::Covariance.evaluate(&x, dim, 1.0, &mut dx) < 1e-10);
        assert!(Isotropy::Std { target: 1.0 }.evaluate(&x, dim, 1.0, &mut dx) < 1e-10);
        let st = IsotropyStats::of(&x, dim);
        assert!((st.std - 1.0).abs() < 1e-6 && st.cov_error < 1e-6, "{st:?}");
    }
}
