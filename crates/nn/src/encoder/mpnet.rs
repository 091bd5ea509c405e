//! MPNet: BERT's post-norm layers over word and position embeddings (no
//! token types), with a relative position bias computed once and added to
//! the scores of every layer.
//!
//! ```text
//! x = LN(word[id] + pos[p])                    p = 1 + (non-pad ids up to t), pad id 1: p = 1
//! B[h, i, j] = rel[bucket(j - i), h]           32 buckets up to distance 128 (t5::bucket)
//! per layer:
//!   q, k, v = x Wq + bq, x Wk + bk, x Wv + bv  (one product)
//!   a = softmax(q k^T / sqrt(dh) + B + mask) v
//!   x = LN(x + a Wo + bo)
//!   x = LN(x + act(x Wi + bi) Wd + bd)         act = hidden_act (GELU)
//! ```
//!
//! transformers fixes the padding index (1) and the bucketing (32 buckets,
//! distance 128) whatever `pad_token_id` and `relative_attention_num_buckets`
//! say; so does this.

use super::t5::RelativeBias;
use super::{linear, Encoder, HfConfig, Tensors, TokenBatch};
use crate::kernels::{
    attention, layer_norm, scratch, scratch_zeroed, Activation, AttnShape, Dense, Precision,
};
use crate::NnError;

/// `MPNetEmbeddings.padding_idx`.
const PAD: usize = 1;
/// `MPNetEncoder.compute_position_bias`'s buckets and maximum distance.
const BUCKETS: usize = 32;
const MAX_DISTANCE: usize = 128;

/// A layer norm's weight and bias.
type Ln = [Vec<f32>; 2];

fn ln(t: &mut Tensors, name: &str, width: usize) -> Result<Ln, NnError> {
    Ok([
        t.take(&format!("{name}.weight"), &[width])?,
        t.take(&format!("{name}.bias"), &[width])?,
    ])
}

struct Layer {
    qkv: Dense,
    out: Dense,
    norm1: Ln,
    up: Dense,
    down: Dense,
    norm2: Ln,
}

pub(super) struct MpNet {
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_pos: usize,
    eps: f32,
    act: Activation,
    word: Vec<f32>,
    pos: Vec<f32>,
    norm: Ln,
    bias: RelativeBias,
    layers: Vec<Layer>,
}

impl MpNet {
    pub(super) fn load(c: &HfConfig, t: &mut Tensors) -> Result<Box<dyn Encoder>, NnError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let layers = c.usize("num_hidden_layers")?;
        let inter = c.usize("intermediate_size")?;
        let vocab = c.usize("vocab_size")?;
        let max_pos = c.usize("max_position_embeddings")?;
        let buckets = c.opt_usize("relative_attention_num_buckets")?.unwrap_or(32);
        let eps = c.opt_f64("layer_norm_eps")?.unwrap_or(1e-12) as f32;
        super::check_heads(hidden, heads)?;
        let act = super::activation(c, "hidden_act", "gelu")?;
        if max_pos < PAD + 3 {
            return Err(NnError::config(
                format!("max_position_embeddings {max_pos} leaves no positions after the padding index {PAD}"),
                "restore config.json from the model's source",
            ));
        }
        if buckets < BUCKETS {
            return Err(NnError::config(
                format!("relative_attention_num_buckets {buckets} is under the {BUCKETS} buckets MPNet looks up"),
                "restore config.json from the model's source",
            ));
        }
        let rel = "encoder.relative_attention_bias.weight";
        t.find_prefix(&[rel], "mpnet")?;
        let table = t.take(rel, &[buckets, heads])?;
        let e = "embeddings";
        let word = t.take(&format!("{e}.word_embeddings.weight"), &[vocab, hidden])?;
        let pos = t.take(
            &format!("{e}.position_embeddings.weight"),
            &[max_pos, hidden],
        )?;
        let norm = ln(t, &format!("{e}.LayerNorm"), hidden)?;
        let layers = (0..layers)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                let a = format!("{l}.attention");
                let w = |t: &mut Tensors, n: &str, out, inp| linear(t, n, out, inp, true);
                Ok(Layer {
                    qkv: Dense::stack(vec![
                        w(t, &format!("{a}.attn.q"), hidden, hidden)?,
                        w(t, &format!("{a}.attn.k"), hidden, hidden)?,
                        w(t, &format!("{a}.attn.v"), hidden, hidden)?,
                    ]),
                    out: w(t, &format!("{a}.attn.o"), hidden, hidden)?,
                    norm1: ln(t, &format!("{a}.LayerNorm"), hidden)?,
                    up: w(t, &format!("{l}.intermediate.dense"), inter, hidden)?,
                    down: w(t, &format!("{l}.output.dense"), hidden, inter)?,
                    norm2: ln(t, &format!("{l}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(Box::new(MpNet {
            hidden,
            heads,
            vocab,
            max_pos,
            eps,
            act,
            word,
            pos,
            norm,
            bias: RelativeBias::new(table, heads, BUCKETS, MAX_DISTANCE),
            layers,
        }))
    }

    fn apply(&self, n: &Ln, x: &mut [f32]) {
        layer_norm(x, &n[0], Some(&n[1]), self.eps);
    }
}

impl Encoder for MpNet {
    fn model_type(&self) -> &str {
        "mpnet"
    }

    fn hidden(&self) -> usize {
        self.hidden
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_len(&self) -> Option<usize> {
        Some(self.max_pos - PAD - 1)
    }

    fn set_precision(&mut self, precision: Precision) {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.out, &mut l.up, &mut l.down] {
                d.set_precision(precision);
            }
        }
    }

    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        let (h, len) = (self.hidden, batch.len);
        assert!(
            len + PAD < self.max_pos,
            "sequence longer than the position table"
        );
        let mut x = scratch_zeroed(batch.ids.len() * h);
        // create_position_ids_from_input_ids: positions count the ids that
        // are not PAD; those stay at PAD.
        let mut seen = PAD;
        for (r, row) in x.chunks_exact_mut(h).enumerate() {
            let (b, id) = (r / len, batch.ids[r] as usize);
            if r % len == 0 {
                seen = PAD;
            }
            let p = if r % len < batch.lens[b] && id != PAD {
                seen += 1;
                seen
            } else {
                PAD
            };
            let word = &self.word[id * h..(id + 1) * h];
            let pos = &self.pos[p * h..(p + 1) * h];
            for ((v, a), c) in row.iter_mut().zip(word).zip(pos) {
                *v = a + c;
            }
        }
        self.apply(&self.norm, &mut x);
        let bias = self.bias.bias(len);
        let shape = AttnShape {
            batch: batch.rows(),
            len,
            heads: self.heads,
            head_dim: h / self.heads,
        };
        let scale = 1.0 / ((h / self.heads) as f32).sqrt();
        let (mut qkv, mut ctx, mut y, mut inner) =
            (scratch(), scratch_zeroed(x.len()), scratch(), scratch());
        for l in &self.layers {
            l.qkv.forward(&x, &mut qkv);
            let offsets = [0, h, 2 * h];
            attention(
                &mut ctx,
                &qkv,
                3 * h,
                offsets,
                shape,
                batch.lens,
                scale,
                Some(&bias),
                None,
            );
            l.out.forward(&ctx, &mut y);
            super::add_into(&mut x, &y);
            self.apply(&l.norm1, &mut x);
            l.up.forward(&x, &mut inner);
            self.act.apply(&mut inner);
            l.down.forward(&inner, &mut y);
            super::add_into(&mut x, &y);
            self.apply(&l.norm2, &mut x);
        }
        x.into_vec()
    }
}
