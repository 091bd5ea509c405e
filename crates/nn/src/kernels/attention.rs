//! Multi-head self-attention over right-padded sequences, and rotary
//! position embeddings.

use rayon::prelude::*;

use super::bf16::Products;
use super::{lane_max, lane_sum, scratch, scratch_zeroed, Masks, Precision, Site};
use crate::linalg::{matmul_on, matmul_strided, threads, Mat};
use crate::simd::{avx512_dispatch, exp};

/// `e = exp(scale * s + bias - max)` in place over the keys `lo..hi` of
/// `row` (`max` over them), zero elsewhere; returns the sum of `e`.
#[inline(always)]
fn exp_keys(row: &mut [f32], scale: f32, bias: Option<&[f32]>, lo: usize, hi: usize) -> f32 {
    match bias {
        Some(bias) => {
            for (v, b) in row[lo..hi].iter_mut().zip(&bias[lo..hi]) {
                *v = *v * scale + b;
            }
        }
        None => {
            for v in &mut row[lo..hi] {
                *v *= scale;
            }
        }
    }
    let keys = &mut row[lo..hi];
    let max = lane_max(keys);
    for v in keys.iter_mut() {
        *v = exp(*v - max);
    }
    let sum = lane_sum(keys, |v| v);
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    sum
}

avx512_dispatch!(
    /// One row of attention probabilities in place: `scale * s + bias` over
    /// the keys `lo..hi`, softmax there, zero elsewhere.
    fn softmax_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>, lo: usize, hi: usize) {
        let inv = 1.0 / exp_keys(row, scale, bias, lo, hi);
        for v in &mut row[lo..hi] {
            *v *= inv;
        }
    }
);

avx512_dispatch!(
    /// [`exp_keys`]: the softmax of the portable bfloat16 path
    /// ([`super::bf16::Products::softmax_nn`]), which divides by the sum
    /// after the product with the values.
    pub(super) fn exp_row(
        row: &mut [f32],
        scale: f32,
        bias: Option<&[f32]>,
        lo: usize,
        hi: usize,
    ) -> f32 {
        exp_keys(row, scale, bias, lo, hi)
    }
);

/// The layout of a batch for attention: `batch` sequences padded to `len`
/// tokens, `heads` heads of `head_dim` each.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Sequences.
    pub batch: usize,
    /// Padded length.
    pub len: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Whether the rows of padding are computed too, as queries over the
    /// real tokens (as transformers does under an attention mask), rather
    /// than left zero: ColBERT's query expansion tokens when they are not
    /// attended to (the backward pass then takes their gradients too).
    pub pad_rows: bool,
}

/// The keys query row `i` attends to among `n` real tokens: all of them,
/// or those within `window` of it (a row of padding may have none).
fn keys_of(i: usize, n: usize, window: Option<usize>) -> (usize, usize) {
    match window {
        Some(w) => {
            let hi = (i + w + 1).min(n);
            (i.saturating_sub(w).min(hi), hi)
        }
        None => (0, n),
    }
}

/// Softmax attention. `qkv` holds a row of `stride` floats per token (`[B *
/// L, stride]`); head `h` of the queries, keys and values starts at column
/// `offsets[0..3] + h * head_dim`. Sequence `b` has `lens[b]` real tokens
/// first, then padding; keys past `lens[b]` are masked out. Scores are
/// `scale * q.k + bias[h, i, j]` (`bias` is `[heads, L, L]`, shared by the
/// batch: relative position biases), restricted to `|i - j| <= window` when
/// a window is given (local attention). With `drop`, the probabilities of
/// head `h` go through the masks of [`Site::Probs`] (token position `i`,
/// feature `j`) before they weigh the values. `out` (`[B * L, heads *
/// head_dim]`) gets the heads side by side; rows of padding get zeros, or
/// with `shape.pad_rows` their queries' attention over the real tokens.
///
/// With [`Precision::Bf16`] the products `q kᵀ` and `p v` round their
/// operands to bfloat16 and sum in float32 (the softmax stays float32, its
/// division applied to the output rows); inference only, as
/// [`attention_backward`] recomputes the probabilities in float32: refused
/// with dropout masks.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut [f32],
    qkv: &[f32],
    stride: usize,
    offsets: [usize; 3],
    shape: AttnShape,
    lens: &[usize],
    scale: f32,
    bias: Option<&[f32]>,
    window: Option<usize>,
    drop: Option<Masks<'_>>,
    precision: Precision,
) {
    let AttnShape {
        batch,
        len,
        heads,
        head_dim: dh,
        pad_rows,
    } = shape;
    let width = heads * dh;
    assert_eq!(out.len(), batch * len * width, "attention output size");
    assert_eq!(qkv.len(), batch * len * stride, "attention input size");
    assert_eq!(lens.len(), batch, "one length per sequence");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), heads * len * len, "attention bias size");
    }
    let bf16 = precision == Precision::Bf16;
    assert!(!bf16 || drop.is_none(), "bfloat16 attention with dropout");
    let one = |b: usize, out: &mut [f32]| {
        let n = lens[b];
        // query rows: the real tokens, or every row with `pad_rows`
        let m = if pad_rows { len } else { n };
        let rows = &qkv[b * len * stride..(b + 1) * len * stride];
        let mut s = scratch_zeroed(m * n);
        out.fill(0.0);
        if bf16 {
            let mut products = Products::new();
            for h in 0..heads {
                let at = |which: usize| (&rows[offsets[which] + h * dh..], stride);
                products.nt(&mut s, n, at(0), at(1), m, n, dh);
                let keys = |i: usize| {
                    let bias = bias.map(|bias| &bias[(h * len + i) * len..(h * len + i) * len + n]);
                    let (lo, hi) = keys_of(i, n, window);
                    (bias, lo, hi)
                };
                let o = &mut out[h * dh..];
                products.softmax_nn(o, width, &mut s, scale, keys, at(2), m, dh, n);
            }
            return;
        }
        let mut o = scratch_zeroed(m * dh);
        for h in 0..heads {
            let at = |which: usize, r: usize| {
                Mat::strided(&rows[offsets[which] + h * dh..], r, dh, stride)
            };
            // s = q k^T, one product per head
            matmul_on(&mut s, at(0, m), at(1, n).t(), 0.0, 1);
            for (i, row) in s.chunks_exact_mut(n).enumerate() {
                let bias = bias.map(|bias| &bias[(h * len + i) * len..(h * len + i) * len + n]);
                let (lo, hi) = keys_of(i, n, window);
                softmax_row(row, scale, bias, lo, hi);
                if let Some(m) = drop {
                    m.row(row, b, i, Site::Probs { head: h });
                }
            }
            // o = p v
            matmul_on(&mut o, Mat::new(&s, m, n), at(2, n), 0.0, 1);
            for (dst, src) in out.chunks_exact_mut(width).zip(o.chunks_exact(dh)) {
                dst[h * dh..(h + 1) * dh].copy_from_slice(src);
            }
        }
    };
    if threads() > 1 && batch > 1 {
        out.par_chunks_mut(len * width)
            .enumerate()
            .for_each(|(b, o)| one(b, o));
    } else {
        for (b, o) in out.chunks_mut(len * width).enumerate() {
            one(b, o);
        }
    }
}

/// The backward pass of [`attention`] with the same inputs, given `dout`,
/// the gradient of its output (`[B * L, heads * head_dim]`; rows of padding
/// are ignored unless `shape.pad_rows`). `dqkv` (`[B * L, stride]`) is overwritten with the
/// gradient of `qkv` (zero outside the query, key and value columns and on
/// padding); the gradient of the scores before scaling is added into
/// `dbias` (`[heads, L, L]`) when given. The probabilities (and their
/// dropout masks) are recomputed rather than kept from the forward pass:
/// `O(L^2)` memory per thread, not per batch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    stride: usize,
    offsets: [usize; 3],
    shape: AttnShape,
    lens: &[usize],
    scale: f32,
    bias: Option<&[f32]>,
    window: Option<usize>,
    mut dbias: Option<&mut [f32]>,
    drop: Option<Masks<'_>>,
) {
    let AttnShape {
        batch,
        len,
        heads,
        head_dim: dh,
        pad_rows,
    } = shape;
    let width = heads * dh;
    assert_eq!(dqkv.len(), qkv.len(), "attention gradient size");
    assert_eq!(
        dout.len(),
        batch * len * width,
        "attention output gradient size"
    );
    // One sequence: its rows of dqkv, and its score gradients per head
    // ([heads, n, n]) when a bias gradient is wanted.
    // query rows `m` (the real tokens, or every row with `pad_rows`)
    // against the `n` real keys
    let one = |b: usize, dst: &mut [f32], want_dbias: bool| -> Vec<f32> {
        let n = lens[b];
        let m = if pad_rows { len } else { n };
        let rows = &qkv[b * len * stride..(b + 1) * len * stride];
        let drows = &dout[b * len * width..(b + 1) * len * width];
        dst.fill(0.0);
        let mut ds_all = if want_dbias {
            vec![0.0; heads * m * n]
        } else {
            Vec::new()
        };
        let (mut p, mut dp, mut kept) = (scratch_zeroed(m * n), scratch_zeroed(m * n), scratch());
        for h in 0..heads {
            let at = |which: usize, r: usize| {
                Mat::strided(&rows[offsets[which] + h * dh..], r, dh, stride)
            };
            let d_o = Mat::strided(&drows[h * dh..], m, dh, width);
            matmul_on(&mut p, at(0, m), at(1, n).t(), 0.0, 1);
            for (i, row) in p.chunks_exact_mut(n).enumerate() {
                let bias = bias.map(|bias| &bias[(h * len + i) * len..(h * len + i) * len + n]);
                let (lo, hi) = keys_of(i, n, window);
                softmax_row(row, scale, bias, lo, hi);
            }
            let site = Site::Probs { head: h };
            // the probabilities that weighed the values: P, or D = P * mask / (1 - p)
            let weights: &[f32] = match drop {
                Some(m) => {
                    kept.clone_from(&p);
                    for (i, row) in kept.chunks_exact_mut(n).enumerate() {
                        m.row(row, b, i, site);
                    }
                    &kept
                }
                None => &p,
            };
            // dV = D^T dO
            matmul_strided(
                &mut dst[offsets[2] + h * dh..],
                stride,
                Mat::new(weights, m, n).t(),
                d_o,
                0.0,
                1,
            );
            // dD = dO V^T, dP = dD * mask / (1 - p), then dS = P * (dP - rowsum(P * dP))
            matmul_on(&mut dp, d_o, at(2, n).t(), 0.0, 1);
            if let Some(m) = drop {
                for (i, row) in dp.chunks_exact_mut(n).enumerate() {
                    m.row(row, b, i, site);
                }
            }
            for (prow, drow) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
                let dot: f32 = prow.iter().zip(drow.iter()).map(|(a, b)| a * b).sum();
                for (d, pv) in drow.iter_mut().zip(prow) {
                    *d = pv * (*d - dot);
                }
            }
            if want_dbias {
                ds_all[h * m * n..(h + 1) * m * n].copy_from_slice(&dp);
            }
            dp.iter_mut().for_each(|v| *v *= scale);
            // dQ = dS K, dK = dS^T Q
            matmul_strided(
                &mut dst[offsets[0] + h * dh..],
                stride,
                Mat::new(&dp, m, n),
                at(1, n),
                0.0,
                1,
            );
            matmul_strided(
                &mut dst[offsets[1] + h * dh..],
                stride,
                Mat::new(&dp, m, n).t(),
                at(0, m),
                0.0,
                1,
            );
        }
        ds_all
    };
    let want = dbias.is_some();
    let group = if threads() > 1 { threads() } else { 1 };
    for (g, chunk) in dqkv.chunks_mut(group * len * stride).enumerate() {
        let partials: Vec<Vec<f32>> = if group > 1 {
            chunk
                .par_chunks_mut(len * stride)
                .enumerate()
                .map(|(i, dst)| one(g * group + i, dst, want))
                .collect()
        } else {
            chunk
                .chunks_mut(len * stride)
                .enumerate()
                .map(|(i, dst)| one(g * group + i, dst, want))
                .collect()
        };
        if let Some(dbias) = dbias.as_deref_mut() {
            // Summed in sequence order: the same bits on any thread count.
            for (i, ds) in partials.iter().enumerate() {
                let n = lens[g * group + i];
                let m = if pad_rows { len } else { n };
                for h in 0..heads {
                    for r in 0..m {
                        let dst = &mut dbias[(h * len + r) * len..(h * len + r) * len + n];
                        super::add_into(dst, &ds[(h * m + r) * n..(h * m + r + 1) * n]);
                    }
                }
            }
        }
    }
}

/// Rotary position embeddings (`rotate_half` layout, as transformers'
/// Llama and ModernBERT): for a head `x = [x1 | x2]`,
/// `x <- x * cos + [-x2 | x1] * sin`, with frequencies
/// `theta^(-2i / head_dim)`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    /// The tables for positions `0..max_len` of heads of `head_dim`.
    pub fn new(head_dim: usize, theta: f64, max_len: usize) -> Rope {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_len * half);
        let mut sin = Vec::with_capacity(max_len * half);
        // transformers computes the angles in float32; so does this.
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        for pos in 0..max_len {
            for &f in &inv {
                let a = (pos as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Rope { cos, sin, half }
    }

    /// The longest sequence the tables cover.
    pub fn max_len(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }
}

/// Rotates, in place, the heads of width `2 * rope.half` that start at
/// `offset + h * 2 * half` (`h < heads`) in every row of `x` (rows of
/// `stride` floats, `len` rows per sequence: the position is the row index
/// within its sequence).
pub fn rope(x: &mut [f32], stride: usize, offset: usize, heads: usize, len: usize, r: &Rope) {
    rotate(x, stride, offset, heads, len, r, 1.0);
}

/// The backward pass of [`rope`]: rotates the gradient `dx` back (by the
/// opposite angles).
pub fn rope_backward(
    dx: &mut [f32],
    stride: usize,
    offset: usize,
    heads: usize,
    len: usize,
    r: &Rope,
) {
    rotate(dx, stride, offset, heads, len, r, -1.0);
}

/// [`rope`] with the sines multiplied by `sign`.
fn rotate(
    x: &mut [f32],
    stride: usize,
    offset: usize,
    heads: usize,
    len: usize,
    r: &Rope,
    sign: f32,
) {
    let half = r.half;
    assert!(
        len <= r.max_len(),
        "rotary tables shorter than the sequence"
    );
    super::for_rows(x, stride, |row_ix, row| {
        let pos = row_ix % len;
        let cos = &r.cos[pos * half..(pos + 1) * half];
        let sin = &r.sin[pos * half..(pos + 1) * half];
        for h in 0..heads {
            let at = offset + h * 2 * half;
            let (x1, x2) = row[at..at + 2 * half].split_at_mut(half);
            for i in 0..half {
                let (a, b, s) = (x1[i], x2[i], sign * sin[i]);
                x1[i] = a * cos[i] - b * s;
                x2[i] = b * cos[i] + a * s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention of one head by the definition, in f64.
    fn naive(q: &[f32], k: &[f32], v: &[f32], n: usize, d: usize, scale: f64) -> Vec<f64> {
        let mut out = vec![0.0; n * d];
        for i in 0..n {
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    (0..d)
                        .map(|c| (q[i * d + c] * k[j * d + c]) as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..n {
                for c in 0..d {
                    out[i * d + c] += e[j] / z * v[j * d + c] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn padded_keys_do_not_count_and_padded_rows_are_zero() {
        let (len, d) = (5, 4);
        let stride = 3 * d;
        let qkv: Vec<f32> = (0..2 * len * stride)
            .map(|i| ((i * 7919) % 97) as f32 / 50.0 - 1.0)
            .collect();
        let lens = [5, 3];
        let shape = AttnShape {
            batch: 2,
            len,
            heads: 1,
            head_dim: d,
            pad_rows: false,
        };
        let mut out = vec![9.0; 2 * len * d];
        attention(
            &mut out,
            &qkv,
            stride,
            [0, d, 2 * d],
            shape,
            &lens,
            0.5,
            None,
            None,
            None,
            Precision::F32,
        );
        for (b, &n) in lens.iter().enumerate() {
            let rows = &qkv[b * len * stride..];
            let pick = |o: usize| -> Vec<f32> {
                (0..n)
                    .flat_map(|t| rows[t * stride + o..t * stride + o + d].to_vec())
                    .collect()
            };
            let want = naive(&pick(0), &pick(d), &pick(2 * d), n, d, 0.5);
            for i in 0..len {
                for c in 0..d {
                    let got = out[(b * len + i) * d + c] as f64;
                    let w = if i < n { want[i * d + c] } else { 0.0 };
                    assert!((got - w).abs() < 1e-5, "b{b} i{i} c{c}: {got} vs {w}");
                }
            }
        }
    }

    #[test]
    fn dropout_masks_the_probabilities() {
        // values e_0..e_3: the output rows are the probability rows
        let (len, d) = (4, 4);
        let stride = 3 * d;
        let qkv: Vec<f32> = (0..len * stride)
            .map(|i| {
                let (t, c) = (i / stride, i % stride);
                if c >= 2 * d {
                    f32::from(u8::from(c - 2 * d == t))
                } else {
                    ((i * 7919) % 97) as f32 / 50.0 - 1.0
                }
            })
            .collect();
        let shape = AttnShape {
            batch: 1,
            len,
            heads: 1,
            head_dim: d,
            pad_rows: false,
        };
        let (lens, seeds) = ([len], [9]);
        let rate = crate::kernels::Rate::new(0.5);
        let drop = crate::kernels::Stream::new(&seeds, &lens, len).at(2, rate);
        let run = |drop| {
            let mut out = vec![0.0; len * d];
            let offsets = [0, d, 2 * d];
            attention(
                &mut out,
                &qkv,
                stride,
                offsets,
                shape,
                &lens,
                0.5,
                None,
                None,
                drop,
                Precision::F32,
            );
            out
        };
        let (p, dropped) = (run(None), run(drop));
        let mut zeros = 0;
        for i in 0..len {
            let key = crate::kernels::mask_key(9, 2, Site::Probs { head: 0 }, i);
            for j in 0..len {
                let keep = rate.keeps(crate::kernels::mask_bits(key, j as u32));
                let want = if keep { p[i * d + j] * 2.0 } else { 0.0 };
                zeros += usize::from(!keep);
                assert!((dropped[i * d + j] - want).abs() < 1e-6, "{i} {j}");
            }
        }
        assert!(zeros > 0 && zeros < len * len, "{zeros} dropped");
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (len, heads, d) = (5, 2, 3);
        let (width, stride) = (heads * d, 3 * heads * d + 2);
        let lens = [5, 3];
        let offsets = [0, width, 2 * width];
        let qkv: Vec<f32> = (0..2 * len * stride)
            .map(|i| ((i * 7919) % 97) as f32 / 40.0 - 1.2)
            .collect();
        let bias: Vec<f32> = (0..heads * len * len)
            .map(|i| ((i * 31) % 17) as f32 / 10.0 - 0.8)
            .collect();
        let r: Vec<f32> = (0..2 * len * width)
            .map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let seeds = [3, 4];
        let stream = crate::kernels::Stream::new(&seeds, &lens, len);
        let rate = crate::kernels::Rate::new(0.3);
        let cases = [
            (None, None),
            (Some(1), None),
            (None, stream.at(0, rate)),
            (Some(1), stream.at(1, rate)),
        ];
        // with pad_rows the padding rows' outputs count too
        for (pad_rows, (window, drop)) in [false, true]
            .into_iter()
            .flat_map(|p| cases.iter().map(move |c| (p, *c)))
        {
            let shape = AttnShape {
                batch: 2,
                len,
                heads,
                head_dim: d,
                pad_rows,
            };
            let loss = |qkv: &[f32], bias: &[f32]| -> f64 {
                let mut out = vec![0.0; 2 * len * width];
                attention(
                    &mut out,
                    qkv,
                    stride,
                    offsets,
                    shape,
                    &lens,
                    0.7,
                    Some(bias),
                    window,
                    drop,
                    Precision::F32,
                );
                out.iter().zip(&r).map(|(a, b)| f64::from(a * b)).sum()
            };
            let mut dqkv = vec![9.0; qkv.len()];
            let mut dbias = vec![0.0; bias.len()];
            attention_backward(
                &mut dqkv,
                &r,
                &qkv,
                stride,
                offsets,
                shape,
                &lens,
                0.7,
                Some(&bias),
                window,
                Some(&mut dbias),
                drop,
            );
            let e = 1e-2f32;
            for i in 0..qkv.len() {
                let (mut up, mut down) = (qkv.clone(), qkv.clone());
                up[i] += e;
                down[i] -= e;
                let fd = (loss(&up, &bias) - loss(&down, &bias)) / f64::from(2.0 * e);
                assert!(
                    (fd - f64::from(dqkv[i])).abs() < 2e-3,
                    "{pad_rows} {window:?} dqkv[{i}]: {} vs {fd}",
                    dqkv[i]
                );
            }
            for i in 0..bias.len() {
                let (mut up, mut down) = (bias.clone(), bias.clone());
                up[i] += e;
                down[i] -= e;
                let fd = (loss(&qkv, &up) - loss(&qkv, &down)) / f64::from(2.0 * e);
                assert!(
                    (fd - f64::from(dbias[i])).abs() < 2e-3,
                    "{pad_rows} {window:?} dbias[{i}]: {} vs {fd}",
                    dbias[i]
                );
            }
        }
    }

    #[test]
    fn bfloat16_attention_stays_close_to_float32() {
        // Two heads of 20 (not a whole panel), sequences of 1, 2, 17 and 40
        // tokens, padding rows, a score bias and local attention: every
        // output row against float32's, and the padding rows zero.
        let (len, heads, d) = (40, 2, 20);
        let (width, stride) = (heads * d, 3 * heads * d + 4);
        let lens = [17, 40, 2, 1];
        let offsets = [0, width, 2 * width];
        let qkv: Vec<f32> = (0..lens.len() * len * stride)
            .map(|i| ((i * 7919) % 1009) as f32 / 300.0 - 1.7)
            .collect();
        let bias: Vec<f32> = (0..heads * len * len)
            .map(|i| ((i * 31) % 17) as f32 / 10.0 - 0.8)
            .collect();
        let mut checked = 0;
        for pad_rows in [false, true] {
            for (bias, window) in [(None, None), (Some(&bias[..]), None), (None, Some(3))] {
                let shape = AttnShape {
                    batch: lens.len(),
                    len,
                    heads,
                    head_dim: d,
                    pad_rows,
                };
                let run = |precision| {
                    let mut out = vec![f32::NAN; lens.len() * len * width];
                    attention(
                        &mut out, &qkv, stride, offsets, shape, &lens, 0.4, bias, window, None,
                        precision,
                    );
                    out
                };
                let (want, got) = (run(Precision::F32), run(Precision::Bf16));
                for (r, (g, w)) in got.chunks_exact(d).zip(want.chunks_exact(d)).enumerate() {
                    let (b, i) = (r / heads / len, r / heads % len);
                    if !pad_rows && i >= lens[b] {
                        assert!(g.iter().chain(w).all(|&v| v == 0.0), "padding row {r}");
                        continue;
                    }
                    let dot = |x: &[f32], y: &[f32]| -> f64 {
                        x.iter()
                            .zip(y)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum()
                    };
                    let (gw, gg, ww) = (dot(g, w), dot(g, g), dot(w, w));
                    if ww == 0.0 {
                        assert_eq!(gg, 0.0, "row {r}: zero in float32, not in bfloat16");
                        continue;
                    }
                    let cos = gw / (gg * ww).sqrt();
                    assert!(
                        cos > 0.999,
                        "pad_rows {pad_rows} window {window:?} row {r}: cosine {cos}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 400, "{checked} rows checked");
    }

    #[test]
    fn rope_backward_undoes_the_rotation() {
        let r = Rope::new(4, 10_000.0, 3);
        let x: Vec<f32> = (0..24).map(|i| i as f32 / 7.0 - 1.0).collect();
        let mut y = x.clone();
        rope(&mut y, 8, 0, 2, 3, &r);
        rope_backward(&mut y, 8, 0, 2, 3, &r);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        let r = Rope::new(4, 10_000.0, 3);
        // one sequence of 3 tokens, one head of 4: [x1 x1' | x2 x2']
        let mut x = [1.0, 1.0, 0.0, 0.0].repeat(3);
        rope(&mut x, 4, 0, 1, 3, &r);
        for pos in 0..3 {
            let f = [1.0f64, 0.01];
            for i in 0..2 {
                let a = pos as f64 * f[i];
                assert!((x[pos * 4 + i] as f64 - a.cos()).abs() < 1e-6);
                assert!((x[pos * 4 + 2 + i] as f64 - a.sin()).abs() < 1e-6);
            }
        }
    }
}
