//! The T5 (and mT5) encoder: pre-norm layers with RMS norms, unscaled
//! attention and a relative position bias that the first layer computes and
//! every layer adds; also the bucketed relative position bias that MPNet
//! shares.
//!
//! ```text
//! x = embed[id]                                (shared.weight, not scaled)
//! B[h, i, j] = rel[bucket(j - i), h]           once, from block 0's table
//! per block:
//!   y = rms(x) g1                              rms(x) = x / sqrt(mean(x^2) + eps)
//!   q, k, v = y Wq, y Wk, y Wv                 heads of d_kv, no biases (one product)
//!   x = x + softmax(q k^T + B + mask) v Wo     no 1/sqrt(d_kv)
//!   y = rms(x) g2
//!   x = x + act(y Wi) Wo                       feed_forward_proj "relu"
//!   x = x + (act(y Wi0) * (y Wi1)) Wo          "gated-<act>" ("gated-gelu": tanh GELU)
//! x = rms(x) gf                                (encoder.final_layer_norm)
//!
//! bucket(r), n = |r|, half = buckets / 2, exact = half / 2:
//!   (r > 0 ? half : 0) + (n < exact ? n
//!       : min(half - 1, exact + trunc(ln(n / exact) / ln(max_distance / exact) * (half - exact))))
//! ```

use super::{linear, Encoder, HfConfig, Tensors, TokenBatch};
use crate::kernels::{
    attention, geglu, rms_norm, scratch, scratch_zeroed, Activation, AttnShape, Dense, Precision,
};
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
    table: Vec<f32>,
    heads: usize,
    buckets: usize,
    max_distance: usize,
}

impl RelativeBias {
    /// The bias of `table` (`[rows, heads]`, `rows >= buckets`), bucketed
    /// into `buckets` up to `max_distance` (which must exceed
    /// `buckets / 4`, the exact buckets).
    pub(super) fn new(table: Vec<f32>, heads: usize, buckets: usize, max_distance: usize) -> Self {
        debug_assert!(table.len() >= buckets * heads && max_distance > buckets / 4);
        RelativeBias {
            table,
            heads,
            buckets,
            max_distance,
        }
    }

    /// `B[h, i, j] = table[bucket(j - i), h]`, `[heads, len, len]`.
    pub(super) fn bias(&self, len: usize) -> Vec<f32> {
        let ix: Vec<usize> = (0..(2 * len).saturating_sub(1))
            .map(|d| bucket(d as i64 - len as i64 + 1, self.buckets, self.max_distance))
            .collect();
        let mut out = Vec::with_capacity(self.heads * len * len);
        for h in 0..self.heads {
            for i in 0..len {
                out.extend((0..len).map(|j| self.table[ix[j + len - 1 - i] * self.heads + h]));
            }
        }
        out
    }
}

struct Block {
    norm1: Vec<f32>,
    qkv: Dense,
    out: Dense,
    norm2: Vec<f32>,
    /// `wi`, or `wi_0` and `wi_1` stacked when gated.
    up: Dense,
    down: Dense,
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
    embed: Vec<f32>,
    bias: RelativeBias,
    blocks: Vec<Block>,
    norm: Vec<f32>,
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
        let embed = match t.take_opt("encoder.embed_tokens.weight", &[vocab, d_model])? {
            Some(e) => e,
            None => t.take("shared.weight", &[vocab, d_model])?,
        };
        let bias = RelativeBias::new(
            t.take(rel, &[buckets, heads])?,
            heads,
            buckets,
            max_distance,
        );
        let blocks = (0..layers)
            .map(|i| {
                let a = format!("encoder.block.{i}.layer.0");
                let f = format!("encoder.block.{i}.layer.1");
                let w = |t: &mut Tensors, n: &str, out, inp| linear(t, n, out, inp, false);
                let up = if gated {
                    Dense::stack(vec![
                        w(t, &format!("{f}.DenseReluDense.wi_0"), d_ff, d_model)?,
                        w(t, &format!("{f}.DenseReluDense.wi_1"), d_ff, d_model)?,
                    ])
                } else {
                    w(t, &format!("{f}.DenseReluDense.wi"), d_ff, d_model)?
                };
                Ok(Block {
                    norm1: t.take(&format!("{a}.layer_norm.weight"), &[d_model])?,
                    qkv: Dense::stack(vec![
                        w(t, &format!("{a}.SelfAttention.q"), inner, d_model)?,
                        w(t, &format!("{a}.SelfAttention.k"), inner, d_model)?,
                        w(t, &format!("{a}.SelfAttention.v"), inner, d_model)?,
                    ]),
                    out: w(t, &format!("{a}.SelfAttention.o"), d_model, inner)?,
                    norm2: t.take(&format!("{f}.layer_norm.weight"), &[d_model])?,
                    up,
                    down: w(t, &format!("{f}.DenseReluDense.wo"), d_model, d_ff)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        let norm = t.take("encoder.final_layer_norm.weight", &[d_model])?;
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
            embed,
            bias,
            blocks,
            norm,
        }))
    }
}

impl Encoder for T5 {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn hidden(&self) -> usize {
        self.d_model
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
                d.set_precision(precision);
            }
        }
    }

    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        let (h, len, inner) = (self.d_model, batch.len, self.heads * self.d_kv);
        let mut x = scratch();
        x.extend(
            batch
                .ids
                .iter()
                .flat_map(|&id| &self.embed[id as usize * h..(id as usize + 1) * h]),
        );
        let bias = self.bias.bias(len);
        let shape = AttnShape {
            batch: batch.rows(),
            len,
            heads: self.heads,
            head_dim: self.d_kv,
        };
        let mut ctx = scratch_zeroed(batch.ids.len() * inner);
        let (mut y, mut qkv, mut up, mut gate) = (scratch(), scratch(), scratch(), scratch());
        for b in &self.blocks {
            y.clone_from(&x);
            rms_norm(&mut y, &b.norm1, self.eps);
            b.qkv.forward(&y, &mut qkv);
            let offsets = [0, inner, 2 * inner];
            attention(
                &mut ctx,
                &qkv,
                3 * inner,
                offsets,
                shape,
                batch.lens,
                1.0,
                Some(&bias),
                None,
            );
            b.out.forward(&ctx, &mut y);
            super::add_into(&mut x, &y);
            y.clone_from(&x);
            rms_norm(&mut y, &b.norm2, self.eps);
            b.up.forward(&y, &mut up);
            if self.gated {
                geglu(&up, self.d_ff, self.act, &mut gate);
                b.down.forward(&gate, &mut y);
            } else {
                self.act.apply(&mut up);
                b.down.forward(&up, &mut y);
            }
            super::add_into(&mut x, &y);
        }
        rms_norm(&mut x, &self.norm, self.eps);
        x.into_vec()
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
        let rb = RelativeBias::new(table, 2, 32, 128);
        let len = 20;
        let bias = rb.bias(len);
        assert_eq!(bias.len(), 2 * len * len);
        for i in 0..len {
            for j in 0..len {
                let b = bucket(j as i64 - i as i64, 32, 128) as f32;
                assert_eq!(bias[i * len + j], b);
                assert_eq!(bias[(len + i) * len + j], 100.0 + b);
            }
        }
    }
}
