//! Multi-head self-attention over right-padded sequences, and rotary
//! position embeddings.

use rayon::prelude::*;

use super::{lane_max, lane_sum, scratch_zeroed};
use crate::linalg::{matmul_on, threads, Mat};
use crate::simd::{avx512_dispatch, exp};

avx512_dispatch!(
    /// One row of attention probabilities in place: `scale * s + bias` over
    /// the keys `lo..hi`, softmax there, zero elsewhere.
    fn softmax_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>, lo: usize, hi: usize) {
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
        let inv = 1.0 / sum;
        for v in &mut row[lo..hi] {
            *v *= inv;
        }
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
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
}

/// Softmax attention. `qkv` holds a row of `stride` floats per token (`[B *
/// L, stride]`); head `h` of the queries, keys and values starts at column
/// `offsets[0..3] + h * head_dim`. Sequence `b` has `lens[b]` real tokens
/// first, then padding; keys past `lens[b]` are masked out. Scores are
/// `scale * q.k + bias[h, i, j]` (`bias` is `[heads, L, L]`, shared by the
/// batch: relative position biases), restricted to `|i - j| <= window` when
/// a window is given (local attention). `out` (`[B * L, heads * head_dim]`)
/// gets the heads side by side; rows of padding get zeros.
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
) {
    let AttnShape {
        batch,
        len,
        heads,
        head_dim: dh,
    } = shape;
    let width = heads * dh;
    assert_eq!(out.len(), batch * len * width, "attention output size");
    assert_eq!(qkv.len(), batch * len * stride, "attention input size");
    assert_eq!(lens.len(), batch, "one length per sequence");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), heads * len * len, "attention bias size");
    }
    let one = |b: usize, out: &mut [f32]| {
        let n = lens[b];
        let rows = &qkv[b * len * stride..(b + 1) * len * stride];
        let (mut s, mut o) = (scratch_zeroed(n * n), scratch_zeroed(n * dh));
        out.fill(0.0);
        for h in 0..heads {
            let at = |which: usize| Mat::strided(&rows[offsets[which] + h * dh..], n, dh, stride);
            // s = q k^T, one product per head
            matmul_on(&mut s, at(0), at(1).t(), 0.0, 1);
            for (i, row) in s.chunks_exact_mut(n).enumerate() {
                let bias = bias.map(|bias| &bias[(h * len + i) * len..(h * len + i) * len + n]);
                let (lo, hi) = match window {
                    Some(w) => (i.saturating_sub(w), (i + w + 1).min(n)),
                    None => (0, n),
                };
                softmax_row(row, scale, bias, lo, hi);
            }
            // o = p v
            matmul_on(&mut o, Mat::new(&s, n, n), at(2), 0.0, 1);
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
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * cos[i] - b * sin[i];
                x2[i] = b * cos[i] + a * sin[i];
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
