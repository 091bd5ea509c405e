//! The kernels under the text encoders: matrix products (float32 and
//! bfloat16 with float32 accumulation), norms, activations, attention with
//! padding masks, rotary embeddings, dropout with stateless masks. Layers (`crate::encoder`) call only
//! these, so another backend can slot in under the same layer code.
//!
//! Every kernel splits work by output rows only and reduces each element in
//! a fixed order: results are the same bits whatever the thread count.

mod act;
mod attention;
pub mod bf16;
mod dense;
mod dropout;
mod norm;
mod scratch;

pub use act::{geglu, geglu_backward, gelu_erf, gelu_tanh, relu, tanh_inplace, Activation};
pub use attention::{attention, attention_backward, rope, rope_backward, AttnShape, Rope};
pub use dense::{Dense, Precision};
pub use dropout::{mask_bits, mask_key, split_seed, Masks, Rate, Site, Stream};
pub use norm::{layer_norm, layer_norm_backward, rms_norm, rms_norm_backward};
pub use scratch::{recycle, scratch, scratch_zeroed, Scratch};

use rayon::prelude::*;

use crate::linalg::threads;

/// Runs `f(row_index, row)` over the rows of width `width` of `x`, split
/// over threads when there are enough rows to be worth it.
pub(crate) fn for_rows(x: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    let rows = x.len() / width;
    if threads() > 1 && rows >= 64 {
        let per = rows.div_ceil(threads()).max(16);
        x.par_chunks_mut(per * width)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
                    f(c * per + i, row);
                }
            });
    } else {
        for (i, row) in x.chunks_exact_mut(width).enumerate() {
            f(i, row);
        }
    }
}

/// `x += y` elementwise (over `min(x.len(), y.len())` elements), split
/// over threads in rows of 4096 elements when long: the encoders' residual
/// additions are millions of elements a batch, and alone on one thread
/// they left the other idle.
pub fn add_into(x: &mut [f32], y: &[f32]) {
    const W: usize = 4096;
    let n = x.len().min(y.len());
    let whole = n / W * W;
    let (head, tail) = x[..n].split_at_mut(whole);
    let add = |x: &mut [f32], y: &[f32]| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    };
    for_rows(head, W, |i, row| add(row, &y[i * W..(i + 1) * W]));
    add(tail, &y[whole..n]);
}

/// `sum f(x_i)` in 16 lanes, then the lanes, then the tail: vectorises, in
/// a fixed order.
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for j in 0..16 {
            acc[j] += f(c[j]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in it.remainder() {
        s += f(v);
    }
    s
}

/// `max x_i` in 16 lanes (`-inf` for an empty slice).
#[inline(always)]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for j in 0..16 {
            acc[j] = acc[j].max(c[j]);
        }
    }
    it.remainder()
        .iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}
