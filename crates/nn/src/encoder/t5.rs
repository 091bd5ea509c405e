//! The T5 (and mT5) encoder: pre-norm layers with RMS norms, unscaled
//! attention and a relative position bias that the first layer computes and
//! every layer adds; also the bucketed relative position bias that MPNet
//! shares.
//!
//! ```text
//! x = D(embed[id])                             (shared.weight, not scaled)
//! B[h, i, j] = rel[bucket(j - i), h]           once, from block 0's table
//! per block:
//!   y = rms(x) g1                              rms(x) = x / sqrt(mean(x^2) + eps)
//!   q, k, v = y Wq, y Wk, y Wv                 heads of d_kv, no biases (one product)
//!   x = x + D(D(softmax(q k^T + B + mask)) v Wo)   no 1/sqrt(d_kv)
//!   y = rms(x) g2
//!   x = x + D(D(act(y Wi)) Wo)                 feed_forward_proj "relu"
//!   x = x + D(D(act(y Wi0) * (y Wi1)) Wo)      "gated-<act>" ("gated-gelu": tanh GELU)
//! x = D(rms(x) gf)                             (encoder.final_layer_norm)
//! ```
//!
//! `D` is dropout at `dropout_rate` (training passes with seeds only), as
//! `T5Stack`, `T5Attention`, `T5LayerSelfAttention`, `T5LayerFF` and
//! `T5Dense[Gated]ActDense` apply it.
//!
//! ```text
//! bucket(r), n = |r|, half = buckets / 2, exact = half / 2:
//!   (r > 0 ? half : 0) + (n < exact ? n
//!       : min(half - 1, exact + trunc(ln(n / exact) / ln(max_distance / exact) * (half - exact))))
//! ```
//!
//! The backward pass runs the same steps in reverse; it keeps each block's
//! input, `q, k, v`, the attention output, the second norm's input and the
//! feed-forward's pre-activation, and recomputes the norms' outputs, the
//! activation, the attention probabilities and the dropout masks. Every
//! block's bias gradient goes to block 0's table.

use super::{
    attention_precision, branch, dropout, linear, stream, tensor, Dropout, Encoder, HfConfig,
    Rates, Tape, Tensors, TokenBatch,
};
use crate::kernels::{
    add_into, attention, attention_backward, geglu, geglu_backward, rms_norm, rms_norm_backward,
    scratch, scratch_zeroed, Activation, AttnShape, Dense, Precision, Site,
};
use crate::params::{Params, Slot};
use crate::NnError;

/// The bucket of the relative position `rel = key - query` (bidirectional),
/// computed as transformers does (`T5Attention._relative_position_bucket`,
/// `MPNetEncoder.relative_position_bucket`): in float32, the logarithm
/// rounded once, the product truncated.
pub(super) fn bucket(rel: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let side = if rel > 0 { half } else { 0 };
    let n = rel.unsigned_abs() as usize;
    let exact = half / 2;
    if n < exact {
        return side + n;
    }
    let log = (f64::from(n as f32 / exact as f32)).ln() as f32;
    let span = (max_distance as f64 / exact as f64).ln() as f32;
    let large = exact + (log / span * (half - exact) as f32) as usize;
    side + large.min(half - 1)
}

/// A relative position bias: a table `[rows, heads]` looked up by
/// [`bucket`].
pub(super) struct RelativeBias {
    table: Slot,
    heads: usize,
    buckets: usize,
    max_distance: usize,
}

impl RelativeBias {
    /// The bias of `table` (`[rows, heads]`, `rows >= buckets`), bucketed
    /// into `buckets` up to `max_distance` (which must exceed
    /// `buckets / 4`, the exact buckets).
    pub(super) fn new(table: Slot, heads: usize, buckets: usize, max_distance: usize) -> Self {
        debug_assert!(max_distance > buckets / 4);
        RelativeBias {
            table,
            heads,
            buckets,
            max_distance,
        }
    }

    /// The bucket of each distance `j - i`, indexed by `j - i + len - 1`.
    fn buckets(&self, len: usize) -> Vec<usize> {
        (0..(2 * len).saturating_sub(1))
            .map(|d| bucket(d as i64 - len as i64 + 1, self.buckets, self.max_distance))
            .collect()
    }

    /// `B[h, i, j] = table[bucket(j - i), h]`, `[heads, len, len]`.
    pub(super) fn bias(&self, p: &Params, len: usize) -> Vec<f32> {
        let (ix, table) = (self.buckets(len), p.at(self.table));
        let mut out = Vec::with_capacity(self.heads * len * len);
        for h in 0..self.heads {
            for i in 0..len {
                out.extend((0..len).map(|j| table[ix[j + len - 1 - i] * self.heads + h]));
            }
        }
        out
    }

    /// Adds the gradient of the table given `dbias`, that of [`Self::bias`].
    pub(super) fn backward(&self, dbias: &[f32], len: usize, grads: &mut Params) {
        let (ix, dt) = (self.buckets(len), grads.at_mut(self.table));
        for h in 0..self.heads {
            for i in 0..len {
                let row = &dbias[(h * len + i) * len..(h * len + i + 1) * len];
                for (j, g) in row.iter().enumerate() {
                    dt[ix[j + len - 1 - i] * self.heads + h] += g;
                }
            }
        }
    }
}

struct Block {
    norm1: Slot,
    qkv: Dense,
    out: Dense,
    norm2: Slot,
    /// `wi`, or `wi_0` and `wi_1` stacked when gated.
    up: Dense,
    down: Dense,
}

/// What one block keeps for the backward pass.
struct BlockTape {
    /// The block's input, that of its first norm.
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    /// The input of the second norm.
    mid: Vec<f32>,
    /// The feed-forward's pre-activation, `[rows, d_ff]` (`[rows, 2 *
    /// d_ff]` gated).
    u: Vec<f32>,
}

/// What a T5 forward pass keeps for the backward pass.
#[derive(Default)]
struct T5Tape {
    /// The relative position bias, `[heads, len, len]`.
    bias: Vec<f32>,
    blocks: Vec<BlockTape>,
    /// The input of the final norm.
    last: Vec<f32>,
}

pub(super) struct T5 {
    model_type: String,
    d_model: usize,
    heads: usize,
    d_kv: usize,
    d_ff: usize,
    vocab: usize,
    eps: f32,
    act: Activation,
    gated: bool,
    params: Params,
    embed: Slot,
    bias: RelativeBias,
    blocks: Vec<Block>,
    norm: Slot,
    /// `dropout_rate`, at every site.
    rates: Rates<1>,
    /// That of the linear layers ([`Encoder::set_precision`]).
    precision: Precision,
}

/// `feed_forward_proj` as `T5Config` reads it: `"<act>"` or
/// `"gated-<act>"`, with `"gated-gelu"` meaning the tanh GELU.
fn feed_forward(c: &HfConfig) -> Result<(bool, Activation), NnError> {
    let proj = c.opt_str("feed_forward_proj").unwrap_or("relu");
    let refuse = || {
        NnError::config(
            format!("feed_forward_proj {proj:?} is not supported"),
            "use relu, gelu, gated-gelu, gated-silu or another \"[gated-]<act>\" of gelu, gelu_new, relu, silu",
        )
    };
    let (gated, name) = match proj.split_once('-') {
        None => (false, proj),
        Some(("gated", "gelu")) => (true, "gelu_new"),
        Some(("gated", act)) => (true, act),
        Some(_) => return Err(refuse()),
    };
    Ok((gated, Activation::parse_hf(name).ok_or_else(refuse)?))
}

impl T5 {
    pub(super) fn load(c: &HfConfig, t: &mut Tensors) -> Result<Box<dyn Encoder>, NnError> {
        let model_type = c.model_type()?;
        let d_model = c.usize("d_model")?;
        let d_kv = c.usize("d_kv")?;
        let d_ff = c.usize("d_ff")?;
        let heads = c.usize("num_heads")?;
        let layers = c.usize("num_layers")?;
        let vocab = c.usize("vocab_size")?;
        let buckets = c.opt_usize("relative_attention_num_buckets")?.unwrap_or(32);
        let max_distance = c
            .opt_usize("relative_attention_max_distance")?
            .unwrap_or(128);
        let eps = c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-6) as f32;
        let (gated, act) = feed_forward(c)?;
        let inner = heads * d_kv;
        super::check_heads(inner, heads)?;
        if buckets < 4 || max_distance <= buckets / 4 {
            return Err(NnError::config(
                format!(
                    "relative_attention_max_distance {max_distance} does not exceed the \
                     {} exact buckets of relative_attention_num_buckets {buckets}",
                    buckets / 4
                ),
                "restore config.json from the model's source",
            ));
        }
        let rel = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
        t.find_prefix(&[rel], &model_type)?;
        let mut p = Params::default();
        // Saved checkpoints hold the tied table once, under either name.
        let embed_name = if t.has("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let embed = tensor(t, &mut p, embed_name, &[vocab, d_model])?;
        let bias = RelativeBias::new(
            tensor(t, &mut p, rel, &[buckets, heads])?,
            heads,
            buckets,
            max_distance,
        );
        let blocks = (0..layers)
            .map(|i| {
                let a = format!("encoder.block.{i}.layer.0");
                let f = format!("encoder.block.{i}.layer.1");
                let p = &mut p;
                let w = |t: &mut Tensors, p: &mut Params, n: &str, out, inp| {
                    linear(t, p, n, out, inp, false)
                };
                let norm1 = tensor(t, p, &format!("{a}.layer_norm.weight"), &[d_model])?;
                let qkv = Dense::stack(vec![
                    w(t, p, &format!("{a}.SelfAttention.q"), inner, d_model)?,
                    w(t, p, &format!("{a}.SelfAttention.k"), inner, d_model)?,
                    w(t, p, &format!("{a}.SelfAttention.v"), inner, d_model)?,
                ]);
                let out = w(t, p, &format!("{a}.SelfAttention.o"), d_model, inner)?;
                let norm2 = tensor(t, p, &format!("{f}.layer_norm.weight"), &[d_model])?;
                let up = if gated {
                    Dense::stack(vec![
                        w(t, p, &format!("{f}.DenseReluDense.wi_0"), d_ff, d_model)?,
                        w(t, p, &format!("{f}.DenseReluDense.wi_1"), d_ff, d_model)?,
                    ])
                } else {
                    w(t, p, &format!("{f}.DenseReluDense.wi"), d_ff, d_model)?
                };
                Ok(Block {
                    norm1,
                    qkv,
                    out,
                    norm2,
                    up,
                    down: w(t, p, &format!("{f}.DenseReluDense.wo"), d_model, d_ff)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        let norm = tensor(t, &mut p, "encoder.final_layer_norm.weight", &[d_model])?;
        let rates = Rates::read(c, ["dropout_rate"], [0.1])?;
        Ok(Box::new(T5 {
            model_type,
            d_model,
            heads,
            d_kv,
            d_ff,
            vocab,
            eps,
            act,
            gated,
            params: p,
            embed,
            bias,
            blocks,
            norm,
            rates,
            precision: Precision::F32,
        }))
    }
}

impl T5 {
    fn shape(&self, batch: TokenBatch<'_>) -> AttnShape {
        AttnShape {
            batch: batch.rows(),
            len: batch.len,
            heads: self.heads,
            head_dim: self.d_kv,
            pad_rows: batch.pad_rows,
        }
    }

    /// The encoder over `batch`, with the dropout masks of `seeds` when
    /// given; keeps what the backward pass needs in `tape` when given.
    fn run(
        &self,
        batch: TokenBatch<'_>,
        seeds: Option<&[u64]>,
        mut tape: Option<&mut T5Tape>,
    ) -> Vec<f32> {
        let (h, inner) = (self.d_model, self.heads * self.d_kv);
        let p = &self.params;
        // the embeddings' and the final norm's masks count as layer 0's
        let drop = stream(seeds, batch);
        let at = |layer| self.rates.at(drop, layer, 0);
        let embed = p.at(self.embed);
        let mut x = scratch();
        x.extend(
            batch
                .ids
                .iter()
                .flat_map(|&id| &embed[id as usize * h..(id as usize + 1) * h]),
        );
        dropout(at(0), &mut x, Site::Embeddings);
        let bias = self.bias.bias(p, batch.len);
        let mut ctx = scratch_zeroed(batch.ids.len() * inner);
        let (mut y, mut qkv, mut up, mut gate) = (scratch(), scratch(), scratch(), scratch());
        let on = tape.is_some();
        let keep = |v: &[f32]| if on { v.to_vec() } else { Vec::new() };
        let precision = attention_precision(self.precision, drop, on);
        for (i, b) in self.blocks.iter().enumerate() {
            let x_in = keep(&x);
            y.clone_from(&x);
            rms_norm(&mut y, p.at(b.norm1), self.eps);
            b.qkv.forward(p, &y, &mut qkv);
            attention(
                &mut ctx,
                &qkv,
                3 * inner,
                [0, inner, 2 * inner],
                self.shape(batch),
                batch.lens,
                1.0,
                Some(&bias),
                None,
                at(i),
                precision,
            );
            b.out.forward(p, &ctx, &mut y);
            dropout(at(i), &mut y, Site::AttnOut);
            add_into(&mut x, &y);
            let mid = keep(&x);
            y.clone_from(&x);
            rms_norm(&mut y, p.at(b.norm2), self.eps);
            b.up.forward(p, &y, &mut up);
            let u = keep(&up);
            if self.gated {
                geglu(&up, self.d_ff, self.act, &mut gate);
                dropout(at(i), &mut gate, Site::FfnInner);
                b.down.forward(p, &gate, &mut y);
            } else {
                self.act.apply(&mut up);
                dropout(at(i), &mut up, Site::FfnInner);
                b.down.forward(p, &up, &mut y);
            }
            dropout(at(i), &mut y, Site::FfnOut);
            add_into(&mut x, &y);
            if let Some(t) = tape.as_deref_mut() {
                t.blocks.push(BlockTape {
                    x: x_in,
                    qkv: qkv.to_vec(),
                    ctx: ctx.to_vec(),
                    mid,
                    u,
                });
            }
        }
        if let Some(t) = tape {
            t.bias = bias;
            t.last = x.to_vec();
        }
        rms_norm(&mut x, p.at(self.norm), self.eps);
        dropout(at(0), &mut x, Site::Final);
        x.into_vec()
    }
}

impl Encoder for T5 {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn hidden(&self) -> usize {
        self.d_model
    }

    fn layers(&self) -> usize {
        self.blocks.len()
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_len(&self) -> Option<usize> {
        None
    }

    fn set_precision(&mut self, precision: Precision) {
        for b in &mut self.blocks {
            for d in [&mut b.qkv, &mut b.out, &mut b.up, &mut b.down] {
                d.set_precision(&self.params, precision);
            }
        }
        self.precision = precision;
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    fn sync(&mut self) {
        for b in &mut self.blocks {
            for d in [&mut b.qkv, &mut b.out, &mut b.up, &mut b.down] {
                d.sync(&self.params);
            }
        }
    }

    fn config_dropout(&self) -> f32 {
        self.rates.config_max()
    }

    fn set_dropout(&mut self, mode: Dropout) {
        self.rates.set(mode);
    }

    fn forward_seeded(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> Vec<f32> {
        self.run(batch, seeds, None)
    }

    fn forward_train(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> (Vec<f32>, Tape) {
        let mut tape = T5Tape::default();
        let x = self.run(batch, seeds, Some(&mut tape));
        (x, Tape::new(tape, seeds))
    }

    fn backward(&self, batch: TokenBatch<'_>, tape: Tape, dh: &mut [f32], grads: &mut Params) {
        let (t, seeds): (T5Tape, _) = tape.take();
        let (h, len, inner) = (self.d_model, batch.len, self.heads * self.d_kv);
        let p = &self.params;
        let drop = stream(seeds.as_deref(), batch);
        let at = |layer| self.rates.at(drop, layer, 0);
        dropout(at(0), dh, Site::Final);
        rms_norm_backward(
            &t.last,
            p.at(self.norm),
            dh,
            grads.at_mut(self.norm),
            self.eps,
        );
        let mut dbias = vec![0.0; t.bias.len()];
        let (mut y, mut a, mut d1, mut d2) = (scratch(), scratch(), scratch(), scratch());
        let mut dy = scratch();
        let mut dqkv = scratch_zeroed(3 * batch.ids.len() * inner);
        for ((i, b), bt) in self.blocks.iter().enumerate().zip(t.blocks).rev() {
            let m = at(i);
            // x = mid + D(down(D(ff(rms(mid) g2))))
            let d = branch(m, Site::FfnOut, dh, &mut dy);
            let du = if self.gated {
                geglu(&bt.u, self.d_ff, self.act, &mut a);
                dropout(m, &mut a, Site::FfnInner);
                b.down.backward(p, &a, d, grads, Some(&mut d1));
                dropout(m, &mut d1, Site::FfnInner);
                geglu_backward(&bt.u, self.d_ff, self.act, &d1, &mut a);
                &a
            } else {
                a.clone_from(&bt.u);
                self.act.apply(&mut a);
                dropout(m, &mut a, Site::FfnInner);
                b.down.backward(p, &a, d, grads, Some(&mut d1));
                dropout(m, &mut d1, Site::FfnInner);
                self.act.backward(&bt.u, &mut d1);
                &d1
            };
            y.clone_from(&bt.mid);
            rms_norm(&mut y, p.at(b.norm2), self.eps);
            b.up.backward(p, &y, du, grads, Some(&mut d2));
            rms_norm_backward(
                &bt.mid,
                p.at(b.norm2),
                &mut d2,
                grads.at_mut(b.norm2),
                self.eps,
            );
            add_into(dh, &d2);
            // mid = x + D(out(attn(qkv(rms(x) g1))))
            let d = branch(m, Site::AttnOut, dh, &mut dy);
            b.out.backward(p, &bt.ctx, d, grads, Some(&mut d1));
            attention_backward(
                &mut dqkv,
                &d1,
                &bt.qkv,
                3 * inner,
                [0, inner, 2 * inner],
                self.shape(batch),
                batch.lens,
                1.0,
                Some(&t.bias),
                None,
                Some(&mut dbias),
                m,
            );
            y.clone_from(&bt.x);
            rms_norm(&mut y, p.at(b.norm1), self.eps);
            b.qkv.backward(p, &y, &dqkv, grads, Some(&mut d2));
            rms_norm_backward(
                &bt.x,
                p.at(b.norm1),
                &mut d2,
                grads.at_mut(b.norm1),
                self.eps,
            );
            add_into(dh, &d2);
        }
        self.bias.backward(&dbias, len, grads);
        dropout(at(0), dh, Site::Embeddings);
        for (r, &id) in batch.ids.iter().enumerate() {
            if batch.has_state(r) {
                super::add_row(grads.at_mut(self.embed), id as usize, dh, r, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REL: [i64; 27] = [
        -200, -128, -127, -64, -63, -32, -31, -16, -15, -9, -8, -7, -1, 0, 1, 7, 8, 9, 15, 16, 31,
        32, 63, 64, 127, 128, 500,
    ];

    /// From the installed transformers (bench/.venv):
    ///
    /// ```python
    /// import torch
    /// from transformers.models.t5.modeling_t5 import T5Attention
    /// rel = torch.tensor([-200, -128, -127, -64, -63, -32, -31, -16, -15, -9, -8, -7, -1, 0,
    ///                     1, 7, 8, 9, 15, 16, 31, 32, 63, 64, 127, 128, 500])  # REL
    /// for nb, md in [(32, 128), (32, 16), (64, 256)]:
    ///     print(T5Attention._relative_position_bucket(rel, True, nb, md).tolist())
    /// ```
    ///
    /// (`MPNetEncoder.relative_position_bucket(rel)` gives the (32, 128) row.)
    #[test]
    fn buckets_match_transformers() {
        let want: [(usize, usize, [usize; 27]); 3] = [
            (
                32,
                128,
                [
                    15, 15, 15, 14, 13, 12, 11, 10, 9, 8, 8, 7, 1, 0, 17, 23, 24, 24, 25, 26, 27,
                    28, 29, 30, 31, 31, 31,
                ],
            ),
            (
                32,
                16,
                [
                    15, 15, 15, 15, 15, 15, 15, 15, 15, 9, 8, 7, 1, 0, 17, 23, 24, 25, 31, 31, 31,
                    31, 31, 31, 31, 31, 31,
                ],
            ),
            (
                64,
                256,
                [
                    30, 28, 27, 24, 23, 20, 19, 16, 15, 9, 8, 7, 1, 0, 33, 39, 40, 41, 47, 48, 51,
                    52, 55, 56, 59, 60, 63,
                ],
            ),
        ];
        for (nb, md, row) in want {
            let got: Vec<usize> = REL.iter().map(|&r| bucket(r, nb, md)).collect();
            assert_eq!(got, row, "buckets {nb}, max distance {md}");
        }
    }

    #[test]
    fn bias_looks_up_key_minus_query() {
        // two heads, 32 buckets: row b of the table is [b, 100 + b]
        let table: Vec<f32> = (0..32).flat_map(|b| [b as f32, 100.0 + b as f32]).collect();
        let mut p = Params::default();
        let rb = RelativeBias::new(p.push("rel", &[32, 2], table), 2, 32, 128);
        let len = 20;
        let bias = rb.bias(&p, len);
        assert_eq!(bias.len(), 2 * len * len);
        for i in 0..len {
            for j in 0..len {
                let b = bucket(j as i64 - i as i64, 32, 128) as f32;
                assert_eq!(bias[i * len + j], b);
                assert_eq!(bias[(len + i) * len + j], 100.0 + b);
            }
        }
        // The gradient of the table sums the gradients of the positions
        // that look up each bucket.
        let mut grads = p.zeros_like();
        rb.backward(&vec![1.0; bias.len()], len, &mut grads);
        let dt = grads.at(Slot(0));
        for b in 0..32 {
            let uses = (0..len)
                .flat_map(|i| (0..len).map(move |j| (i, j)))
                .filter(|&(i, j)| bucket(j as i64 - i as i64, 32, 128) == b)
                .count() as f32;
            assert_eq!((dt[2 * b], dt[2 * b + 1]), (uses, uses), "bucket {b}");
        }
    }
}
