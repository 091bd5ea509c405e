//! A small causal transformer query tower: `Linear(D, hidden)`, sinusoidal
//! positions counted from each row's first real step, `layers` pre-LN
//! blocks exactly like `torch.nn.TransformerEncoderLayer(hidden, heads,
//! 4 * hidden, dropout=0, activation="relu", batch_first=True,
//! norm_first=True)`, a final `LayerNorm`, pooled at the last step
//! (docs/model.md has the math).
//!
//! Every position-wise operation is one matrix product over the whole
//! `[B * L, hidden]` batch (over the last steps `[B, hidden]` only after the
//! last block's keys and values, as nothing else reads the rest); only the
//! `L x L` attention of each (row, head) runs as plain loops.

use std::ops::{Range, RangeInclusive};

use rand_chacha::ChaCha8Rng;

use crate::kernels::Dense;
use crate::linalg::{add_col_sums, dot};
use crate::params::{Params, Slot};
use crate::{Batch, NnError};

/// `torch.nn.LayerNorm`'s default epsilon.
const LN_EPS: f32 = 1e-5;

/// The feed-forward width is this many times `hidden`.
const FF_MULT: usize = 4;

/// The number of parameters of a transformer tower over `dim`-vectors.
pub(crate) fn param_count(dim: usize, hidden: usize, layers: usize) -> usize {
    let (h, ff) = (hidden, FF_MULT * hidden);
    let block = (3 * h * h + 3 * h) + (h * h + h) + (ff * h + ff) + (h * ff + h) + 4 * h;
    (h * dim + h) + layers * block + 2 * h
}

/// Checks the transformer's shape: at least one block and one head, an
/// even `hidden` (sin/cos pairs) that the heads divide.
pub(crate) fn check(hidden: usize, layers: usize, heads: usize) -> Result<(), NnError> {
    if layers == 0 || heads == 0 {
        return Err(NnError::config(
            format!("a transformer with {layers} layers and {heads} heads"),
            format!(
                "set layers and heads to at least 1 (the defaults are {} and {})",
                crate::ModelConfig::DEFAULT_LAYERS,
                crate::ModelConfig::DEFAULT_HEADS
            ),
        ));
    }
    if !hidden.is_multiple_of(2) || !hidden.is_multiple_of(heads) {
        let step = if heads.is_multiple_of(2) {
            heads
        } else {
            2 * heads
        };
        return Err(NnError::config(
            format!(
                "a transformer's hidden {hidden} must be even (its positional encoding \
                 pairs sin and cos) and divisible by heads {heads}"
            ),
            format!(
                "set hidden to a multiple of {step} (e.g. {}) or change heads",
                hidden.div_ceil(step) * step
            ),
        ));
    }
    Ok(())
}

/// A `torch.nn.LayerNorm(width)` with eps 1e-5.
#[derive(Debug, Clone, Copy)]
struct Norm {
    w: Slot,
    b: Slot,
    width: usize,
}

/// What a layer norm keeps for its backward pass.
#[derive(Debug, Default)]
struct NormCache {
    /// The normalised rows before the affine map, `[n, width]`.
    xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)` per row, `[n]`.
    rstd: Vec<f32>,
}

impl Norm {
    /// `{name}.weight` = 1 and `{name}.bias` = 0 (PyTorch's initialisation).
    fn init(name: &str, width: usize, params: &mut Params) -> Norm {
        Norm {
            w: params.push(&format!("{name}.weight"), &[width], vec![1.0; width]),
            b: params.push(&format!("{name}.bias"), &[width], vec![0.0; width]),
            width,
        }
    }

    /// `out = (x - mean) / sqrt(var + eps) * w + b` row by row (biased
    /// variance).
    fn forward(&self, p: &Params, x: &[f32], c: &mut NormCache, out: &mut Vec<f32>) {
        let n = self.width as f32;
        let (w, b) = (p.at(self.w), p.at(self.b));
        c.xhat.clear();
        c.rstd.clear();
        out.clear();
        for row in x.chunks_exact(self.width) {
            let mean = row.iter().sum::<f32>() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let rstd = 1.0 / (var + LN_EPS).sqrt();
            c.rstd.push(rstd);
            for ((v, wj), bj) in row.iter().zip(w).zip(b) {
                let xh = (v - mean) * rstd;
                c.xhat.push(xh);
                out.push(xh * wj + bj);
            }
        }
    }

    /// Adds the weight and bias gradients given `dout`, and adds the input
    /// gradient into `dx`:
    /// `dx += rstd * (g - mean(g) - xhat * mean(g * xhat))`, `g = dout * w`.
    fn backward(
        &self,
        p: &Params,
        c: &NormCache,
        dout: &[f32],
        grads: &mut Params,
        dx: &mut [f32],
    ) {
        let width = self.width;
        let n = width as f32;
        let gw = grads.at_mut(self.w);
        for (d, xh) in dout.chunks_exact(width).zip(c.xhat.chunks_exact(width)) {
            for ((g, dv), x) in gw.iter_mut().zip(d).zip(xh) {
                *g += dv * x;
            }
        }
        add_col_sums(grads.at_mut(self.b), dout);
        let w = p.at(self.w);
        let rows = dout
            .chunks_exact(width)
            .zip(c.xhat.chunks_exact(width))
            .zip(dx.chunks_exact_mut(width))
            .zip(&c.rstd);
        for (((d, xh), dxr), &rstd) in rows {
            let (mut sum, mut sum_x) = (0.0f32, 0.0f32);
            for ((dv, wj), x) in d.iter().zip(w).zip(xh) {
                let g = dv * wj;
                sum += g;
                sum_x += g * x;
            }
            let (mean, mean_x) = (sum / n, sum_x / n);
            for (((o, dv), wj), x) in dxr.iter_mut().zip(d).zip(w).zip(xh) {
                *o += rstd * (dv * wj - mean - x * mean_x);
            }
        }
    }
}

/// One pre-LN encoder block:
/// `m = x + out(attn(qkv(norm1(x))))`, `y = m + ff2(relu(ff1(norm2(m))))`.
#[derive(Debug, Clone)]
struct Block {
    qkv: Dense,
    out: Dense,
    ff1: Dense,
    ff2: Dense,
    norm1: Norm,
    norm2: Norm,
}

/// What a block keeps for its backward pass. A block computes its output
/// at the query steps `q0..L` of every row (all steps, or only the last in
/// the last block, the only one the pooling reads): `Q = L - q0` of them,
/// `[B * Q, ...]`; keys and values cover all `N = B * L` steps.
#[derive(Debug, Default)]
struct BlockCache {
    n1: NormCache,
    /// `norm1(x)`, `[N, hidden]`.
    a1: Vec<f32>,
    /// Queries, keys and values, `[N, 3 * hidden]`.
    qkv: Vec<f32>,
    /// Attention weights `[B, heads, Q, L]`, 0 outside the attended keys.
    probs: Vec<f32>,
    /// The heads' outputs side by side, `[B * Q, hidden]`.
    ctx: Vec<f32>,
    /// The stream after the attention residual, `[B * Q, hidden]`.
    mid: Vec<f32>,
    n2: NormCache,
    /// `norm2(mid)`.
    a2: Vec<f32>,
    /// `relu(ff1(a2))`, `[B * Q, 4 * hidden]`.
    ff: Vec<f32>,
    /// The block's output, `[B * Q, hidden]`.
    y: Vec<f32>,
}

/// The transformer tower's weights.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    hidden: usize,
    heads: usize,
    input: Dense,
    blocks: Vec<Block>,
    norm: Norm,
}

/// Reusable buffers of a transformer forward and backward pass.
#[derive(Debug, Default)]
pub(crate) struct TransformerCache {
    /// The positional encoding of positions `0..L`, `[L, hidden]`.
    pe: Vec<f32>,
    /// The stream entering the first block, `[N, hidden]`.
    h0: Vec<f32>,
    blocks: Vec<BlockCache>,
    fin: NormCache,
    /// Gradient of the stream leaving the block being back-propagated.
    dx: Vec<f32>,
    /// Gradient of the stream entering it, `[N, hidden]`.
    dnext: Vec<f32>,
    /// Gradient of a norm's output.
    da: Vec<f32>,
    dqkv: Vec<f32>,
    dctx: Vec<f32>,
    dff: Vec<f32>,
    /// Gradient of one attention row's weights, `[L]`.
    dp: Vec<f32>,
}

/// The standard sinusoidal encoding of positions `0..len` into `pe`
/// (`[len, width]`): `pe[p, 2j] = sin(p / 10000^(2j / width))`,
/// `pe[p, 2j + 1] = cos(...)`, computed in f64.
fn sinusoids(len: usize, width: usize, pe: &mut Vec<f32>) {
    pe.clear();
    for pos in 0..len {
        for j in 0..width / 2 {
            let angle = pos as f64 / 10000f64.powf((2 * j) as f64 / width as f64);
            pe.push(angle.sin() as f32);
            pe.push(angle.cos() as f32);
        }
    }
}

/// The keys query `t` of a row whose first real step is `start` attends
/// to: the real steps up to `t`, or only itself at a pad step (whose output
/// nothing reads; it keeps every softmax over a non-empty set).
#[inline]
fn keys(start: usize, t: usize) -> RangeInclusive<usize> {
    start.min(t)..=t
}

/// For every row `i` of a batch of `b` rows of `l` steps of width `h`: the
/// span of its steps `q0..l` in a `[b * l, h]` stream, and in the
/// `[b * (l - q0), h]` layout of those steps alone.
fn tails(
    b: usize,
    l: usize,
    q0: usize,
    h: usize,
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> {
    let q = l - q0;
    (0..b).map(move |i| {
        (
            (i * l + q0) * h..(i + 1) * l * h,
            i * q * h..(i + 1) * q * h,
        )
    })
}

/// `dst += src` element by element.
fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

impl Transformer {
    /// Adds the tower's parameters (`tf.*`, PyTorch's names) with PyTorch's
    /// initialisation: `Linear`s `U(-1/sqrt(in), 1/sqrt(in))`, the
    /// attention's `in_proj_weight` Xavier-uniform with zero `in_proj_bias`
    /// and `out_proj.bias`, layer norms 1 and 0.
    pub(crate) fn init(
        dim: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        params: &mut Params,
        rng: &mut ChaCha8Rng,
    ) -> Transformer {
        let h = hidden;
        let input = Dense::init(params, "tf.in", dim, h, rng);
        let blocks = (0..layers)
            .map(|l| {
                let name = |part: &str| format!("tf.{l}.{part}");
                let xavier = (6.0 / (h + 3 * h) as f32).sqrt();
                let qkv = Dense::from_slots(
                    params.uniform(&name("self_attn.in_proj_weight"), &[3 * h, h], xavier, rng),
                    Some(params.push(&name("self_attn.in_proj_bias"), &[3 * h], vec![0.0; 3 * h])),
                    3 * h,
                    h,
                );
                let out = Dense::init(params, &name("self_attn.out_proj"), h, h, rng);
                out.zero_bias(params);
                Block {
                    qkv,
                    out,
                    ff1: Dense::init(params, &name("linear1"), h, FF_MULT * h, rng),
                    ff2: Dense::init(params, &name("linear2"), FF_MULT * h, h, rng),
                    norm1: Norm::init(&name("norm1"), h, params),
                    norm2: Norm::init(&name("norm2"), h, params),
                }
            })
            .collect();
        Transformer {
            hidden,
            heads,
            input,
            blocks,
            norm: Norm::init("tf.norm", h, params),
        }
    }

    /// The first query step of block `k`: the last block computes the last
    /// step only.
    fn first_query(&self, k: usize, len: usize) -> usize {
        if k + 1 == self.blocks.len() {
            len - 1
        } else {
            0
        }
    }

    /// Runs the tower; writes the final-normed state of every row's last
    /// step into `out` (`[B, hidden]`).
    pub(crate) fn forward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut TransformerCache,
        out: &mut Vec<f32>,
    ) {
        let (b, l, h) = (batch.rows(), batch.len, self.hidden);
        if c.pe.len() != l * h {
            sinusoids(l, h, &mut c.pe);
        }
        self.input.forward(p, batch.x, &mut c.h0);
        for i in 0..b {
            let start = l - batch.lens[i];
            let pe = &c.pe[..batch.lens[i] * h];
            add(&mut c.h0[(i * l + start) * h..(i + 1) * l * h], pe);
        }
        c.blocks.resize_with(self.blocks.len(), BlockCache::default);
        for (k, block) in self.blocks.iter().enumerate() {
            let (done, rest) = c.blocks.split_at_mut(k);
            let x = done.last().map_or(&c.h0, |prev| &prev.y);
            let q0 = self.first_query(k, l);
            self.block_forward(block, p, batch, x, q0, &mut rest[0]);
        }
        let top = c.blocks.last().map_or(&c.h0, |last| &last.y);
        self.norm.forward(p, top, &mut c.fin, out);
    }

    /// One block over the stream `x` (`[N, hidden]`), computing the query
    /// steps `q0..L`.
    fn block_forward(
        &self,
        k: &Block,
        p: &Params,
        batch: &Batch<'_>,
        x: &[f32],
        q0: usize,
        c: &mut BlockCache,
    ) {
        let (b, l, h) = (batch.rows(), batch.len, self.hidden);
        k.norm1.forward(p, x, &mut c.n1, &mut c.a1);
        k.qkv.forward(p, &c.a1, &mut c.qkv);
        self.attend(batch, q0, &c.qkv, &mut c.probs, &mut c.ctx);
        k.out.forward(p, &c.ctx, &mut c.mid);
        for (full, tail) in tails(b, l, q0, h) {
            add(&mut c.mid[tail], &x[full]);
        }
        k.norm2.forward(p, &c.mid, &mut c.n2, &mut c.a2);
        k.ff1.forward(p, &c.a2, &mut c.ff);
        c.ff.iter_mut().for_each(|v| *v = v.max(0.0));
        k.ff2.forward(p, &c.ff, &mut c.y);
        add(&mut c.y, &c.mid);
    }

    /// Scaled dot-product attention of every (row, head) at the query steps
    /// `q0..L` over their causal, padding-masked keys ([`keys`]): `probs`
    /// and the heads' outputs `ctx`.
    fn attend(
        &self,
        batch: &Batch<'_>,
        q0: usize,
        qkv: &[f32],
        probs: &mut Vec<f32>,
        ctx: &mut Vec<f32>,
    ) {
        let (b, l, h, nh) = (batch.rows(), batch.len, self.hidden, self.heads);
        let (q, dh) = (l - q0, h / nh);
        let scale = 1.0 / (dh as f32).sqrt();
        probs.clear();
        probs.resize(b * nh * q * l, 0.0);
        ctx.clear();
        ctx.resize(b * q * h, 0.0);
        let at =
            |i: usize, t: usize, part: usize, hd: usize| (i * l + t) * 3 * h + part * h + hd * dh;
        for i in 0..b {
            let start = l - batch.lens[i];
            for hd in 0..nh {
                for t in q0..l {
                    let row = &mut probs[((i * nh + hd) * q + t - q0) * l..][..l];
                    let qt = &qkv[at(i, t, 0, hd)..][..dh];
                    let mut max = f32::NEG_INFINITY;
                    for s in keys(start, t) {
                        row[s] = dot(qt, &qkv[at(i, s, 1, hd)..][..dh]) * scale;
                        max = max.max(row[s]);
                    }
                    let mut total = 0.0;
                    for s in keys(start, t) {
                        row[s] = (row[s] - max).exp();
                        total += row[s];
                    }
                    let o = &mut ctx[(i * q + t - q0) * h + hd * dh..][..dh];
                    for s in keys(start, t) {
                        row[s] /= total;
                        let v = &qkv[at(i, s, 2, hd)..][..dh];
                        o.iter_mut().zip(v).for_each(|(o, v)| *o += row[s] * v);
                    }
                }
            }
        }
    }

    /// Back-propagates `dout` (`[B, hidden]`, the gradient of the pooled
    /// states) through the tower; adds every weight gradient into `grads`.
    pub(crate) fn backward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut TransformerCache,
        dout: &[f32],
        grads: &mut Params,
    ) {
        let (b, l, h) = (batch.rows(), batch.len, self.hidden);
        c.dx.clear();
        c.dx.resize(b * h, 0.0);
        self.norm.backward(p, &c.fin, dout, grads, &mut c.dx);
        for (k, (block, bc)) in self.blocks.iter().zip(&c.blocks).enumerate().rev() {
            let q0 = self.first_query(k, l);
            // y = mid + ff2(relu(ff1(norm2(mid)))): dx is dy, becomes dmid.
            block
                .ff2
                .backward(p, &bc.ff, &c.dx, grads, Some(&mut c.dff));
            c.dff
                .iter_mut()
                .zip(&bc.ff)
                .for_each(|(d, &f)| *d = if f > 0.0 { *d } else { 0.0 });
            block
                .ff1
                .backward(p, &bc.a2, &c.dff, grads, Some(&mut c.da));
            block.norm2.backward(p, &bc.n2, &c.da, grads, &mut c.dx);
            // mid = x + out(attn(qkv(norm1(x)))) at the query steps.
            block
                .out
                .backward(p, &bc.ctx, &c.dx, grads, Some(&mut c.dctx));
            self.attend_back(batch, q0, bc, &c.dctx, &mut c.dqkv, &mut c.dp);
            block
                .qkv
                .backward(p, &bc.a1, &c.dqkv, grads, Some(&mut c.da));
            c.dnext.clear();
            c.dnext.resize(b * l * h, 0.0);
            block.norm1.backward(p, &bc.n1, &c.da, grads, &mut c.dnext);
            for (full, tail) in tails(b, l, q0, h) {
                add(&mut c.dnext[full], &c.dx[tail]);
            }
            std::mem::swap(&mut c.dx, &mut c.dnext);
        }
        self.input.backward(p, batch.x, &c.dx, grads, None);
    }

    /// The gradient of the queries, keys and values (`dqkv`, `[N, 3 *
    /// hidden]`) given that of the heads' outputs at the query steps `q0..L`
    /// (`dctx`).
    fn attend_back(
        &self,
        batch: &Batch<'_>,
        q0: usize,
        c: &BlockCache,
        dctx: &[f32],
        dqkv: &mut Vec<f32>,
        dp: &mut Vec<f32>,
    ) {
        let (b, l, h, nh) = (batch.rows(), batch.len, self.hidden, self.heads);
        let (q, dh) = (l - q0, h / nh);
        let scale = 1.0 / (dh as f32).sqrt();
        let qkv = &c.qkv;
        dqkv.clear();
        dqkv.resize(b * l * 3 * h, 0.0);
        dp.resize(l, 0.0);
        let at =
            |i: usize, t: usize, part: usize, hd: usize| (i * l + t) * 3 * h + part * h + hd * dh;
        for i in 0..b {
            let start = l - batch.lens[i];
            for hd in 0..nh {
                for t in q0..l {
                    let probs = &c.probs[((i * nh + hd) * q + t - q0) * l..][..l];
                    let g = &dctx[(i * q + t - q0) * h + hd * dh..][..dh];
                    let mut mean = 0.0;
                    for s in keys(start, t) {
                        dp[s] = dot(g, &qkv[at(i, s, 2, hd)..][..dh]);
                        mean += probs[s] * dp[s];
                    }
                    // dqkv has the layout of qkv: one index serves both.
                    let qt = at(i, t, 0, hd);
                    for s in keys(start, t) {
                        let ds = probs[s] * (dp[s] - mean) * scale;
                        let (ks, vs) = (at(i, s, 1, hd), at(i, s, 2, hd));
                        for j in 0..dh {
                            dqkv[qt + j] += ds * qkv[ks + j];
                            dqkv[ks + j] += ds * qkv[qt + j];
                            dqkv[vs + j] += probs[s] * g[j];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The gradient of `sum(pooled * g)` with respect to the context
    /// vectors (`dx W_in`, from the stream gradient the backward pass leaves
    /// in the cache) against central differences, over ragged rows: exactly
    /// zero at pad steps, which change nothing.
    #[test]
    fn input_gradient_matches_finite_differences() {
        let (b, l, d, h) = (3, 4, 5, 4);
        let lens = [4, 2, 1];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut params = Params::default();
        let tf = Transformer::init(d, h, 2, 2, &mut params, &mut rng);
        for p in params.iter_mut() {
            p.data
                .iter_mut()
                .for_each(|v| *v += rng.gen_range(-0.2..0.2));
        }
        let mut x: Vec<f32> = (0..b * l * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let g: Vec<f32> = (0..b * h).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut c = TransformerCache::default();
        let mut pooled = Vec::new();
        let mut run = |x: &[f32], c: &mut TransformerCache| {
            let batch = Batch {
                x,
                lens: &lens,
                len: l,
                dim: d,
            };
            tf.forward(&params, &batch, c, &mut pooled);
            dot(&pooled, &g)
        };
        run(&x, &mut c);
        let batch = Batch {
            x: &x,
            lens: &lens,
            len: l,
            dim: d,
        };
        let mut grads = params.zeros_like();
        tf.backward(&params, &batch, &mut c, &g, &mut grads);
        let mut dx = Vec::new();
        tf.input
            .backward(&params, &x, &c.dx, &mut grads, Some(&mut dx));
        assert!(dx.iter().filter(|v| v.abs() > 1e-2).count() > x.len() / 4);
        let eps = 3e-4;
        for k in 0..x.len() {
            let (i, t) = (k / (l * d), k / d % l);
            let orig = x[k];
            x[k] = orig + eps;
            let up = run(&x, &mut c);
            x[k] = orig - eps;
            let down = run(&x, &mut c);
            x[k] = orig;
            let numeric = (up - down) / (2.0 * eps);
            if t + lens[i] < l {
                assert!(
                    up == down && dx[k] == 0.0,
                    "pad step {t} of row {i}: d/dx[{k}] {} numeric {numeric}",
                    dx[k]
                );
            } else {
                assert!(
                    (numeric - dx[k]).abs() < 5e-3 * numeric.abs().max(1.0),
                    "d/dx[{k}] analytic {} numeric {numeric}",
                    dx[k]
                );
            }
        }
    }
}
