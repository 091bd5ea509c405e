//! BERT, RoBERTa and XLM-RoBERTa: post-norm encoder layers over word,
//! position and token-type embeddings.
//!
//! ```text
//! x = LN(word[id] + pos[p] + type[0])          p = t (BERT), pad + 1 + t (RoBERTa)
//! per layer:
//!   q, k, v = x Wq + bq, x Wk + bk, x Wv + bv  (one product: the three stacked)
//!   a = softmax(q k^T / sqrt(dh) + mask) v     per head, padded keys masked
//!   x = LN(x + a Wo + bo)
//!   x = LN(x + act(x Wi + bi) Wd + bd)         act = hidden_act (GELU)
//! ```

use super::{linear, Encoder, HfConfig, Tensors, TokenBatch};
use crate::kernels::{
    attention, layer_norm, scratch, scratch_zeroed, Activation, AttnShape, Dense, Precision,
};
use crate::NnError;

/// A layer norm's weight and bias.
pub(super) struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    pub(super) fn load(t: &mut Tensors, name: &str, width: usize) -> Result<Norm, NnError> {
        Ok(Norm {
            w: t.take(&format!("{name}.weight"), &[width])?,
            b: t.take(&format!("{name}.bias"), &[width])?,
        })
    }

    pub(super) fn apply(&self, x: &mut [f32], eps: f32) {
        layer_norm(x, &self.w, Some(&self.b), eps);
    }
}

struct Layer {
    qkv: Dense,
    out: Dense,
    norm1: Norm,
    up: Dense,
    down: Dense,
    norm2: Norm,
}

/// The tensor names of one post-norm layer (`{l}` is `encoder.layer.{i}`).
pub(super) struct LayerNames {
    /// Query, key and value (`{l}.attention.self.query`, ...).
    pub(super) qkv: [&'static str; 3],
    /// The attention output (`{l}.attention.output.dense`).
    pub(super) out: &'static str,
    /// The norm after attention (`{l}.attention.output.LayerNorm`).
    pub(super) norm1: &'static str,
}

/// The post-norm layers BERT, RoBERTa and MPNet share:
/// `x = LN(x + attn(x)); x = LN(x + act(x Wi + bi) Wd + bd)`.
pub(super) struct PostNorm {
    layers: Vec<Layer>,
    heads: usize,
    /// `layer_norm_eps`, also that of the embeddings' norm.
    pub(super) eps: f32,
    act: Activation,
}

impl PostNorm {
    /// Loads `num_hidden_layers` layers named as `names` says (relative to
    /// `encoder.layer.{i}`).
    pub(super) fn load(
        c: &HfConfig,
        t: &mut Tensors,
        names: &LayerNames,
    ) -> Result<PostNorm, NnError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let inter = c.usize("intermediate_size")?;
        super::check_heads(hidden, heads)?;
        let layers = (0..c.usize("num_hidden_layers")?)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                let w = |t: &mut Tensors, n: &str, out, inp| {
                    linear(t, &format!("{l}.{n}"), out, inp, true)
                };
                Ok(Layer {
                    qkv: Dense::stack(vec![
                        w(t, names.qkv[0], hidden, hidden)?,
                        w(t, names.qkv[1], hidden, hidden)?,
                        w(t, names.qkv[2], hidden, hidden)?,
                    ]),
                    out: w(t, names.out, hidden, hidden)?,
                    norm1: Norm::load(t, &format!("{l}.{}", names.norm1), hidden)?,
                    up: w(t, "intermediate.dense", inter, hidden)?,
                    down: w(t, "output.dense", hidden, inter)?,
                    norm2: Norm::load(t, &format!("{l}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(PostNorm {
            layers,
            heads,
            eps: c.opt_f64("layer_norm_eps")?.unwrap_or(1e-12) as f32,
            act: super::activation(c, "hidden_act", "gelu")?,
        })
    }

    pub(super) fn set_precision(&mut self, precision: Precision) {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.out, &mut l.up, &mut l.down] {
                d.set_precision(precision);
            }
        }
    }

    /// Runs the layers over `x` (`[B * len, hidden]`), adding `bias`
    /// (`[heads, len, len]`) to the scores when given.
    pub(super) fn forward(&self, x: &mut [f32], batch: TokenBatch<'_>, bias: Option<&[f32]>) {
        let (h, len) = (x.len() / batch.ids.len(), batch.len);
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
            l.qkv.forward(x, &mut qkv);
            attention(
                &mut ctx,
                &qkv,
                3 * h,
                [0, h, 2 * h],
                shape,
                batch.lens,
                scale,
                bias,
                None,
            );
            l.out.forward(&ctx, &mut y);
            super::add_into(x, &y);
            l.norm1.apply(x, self.eps);
            l.up.forward(x, &mut inner);
            self.act.apply(&mut inner);
            l.down.forward(&inner, &mut y);
            super::add_into(x, &y);
            l.norm2.apply(x, self.eps);
        }
    }
}

pub(super) struct Bert {
    model_type: String,
    hidden: usize,
    vocab: usize,
    max_pos: usize,
    /// Position of the first token: 0 for BERT, `pad_token_id + 1` for
    /// RoBERTa and XLM-RoBERTa.
    pos_offset: usize,
    word: Vec<f32>,
    pos: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: PostNorm,
}

/// BERT's and RoBERTa's tensor names.
const NAMES: LayerNames = LayerNames {
    qkv: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ],
    out: "attention.output.dense",
    norm1: "attention.output.LayerNorm",
};

impl Bert {
    pub(super) fn load(c: &HfConfig, t: &mut Tensors) -> Result<Bert, NnError> {
        let model_type = c.model_type()?;
        let hidden = c.usize("hidden_size")?;
        let vocab = c.usize("vocab_size")?;
        let max_pos = c.usize("max_position_embeddings")?;
        let types = c.opt_usize("type_vocab_size")?.unwrap_or(2).max(1);
        if let Some(p) = c.opt_str("position_embedding_type") {
            if p != "absolute" {
                return Err(NnError::config(
                    format!("position_embedding_type {p:?} is not supported"),
                    "use a model with absolute position embeddings",
                ));
            }
        }
        let pos_offset = if model_type == "bert" {
            0
        } else {
            c.opt_usize("pad_token_id")?.unwrap_or(1) + 1
        };
        if pos_offset >= max_pos {
            return Err(NnError::config(
                format!(
                    "pad_token_id {} leaves no positions of {max_pos}",
                    pos_offset - 1
                ),
                "restore config.json from the model's source",
            ));
        }
        t.find_prefix(&["embeddings.word_embeddings.weight"], &model_type)?;
        let e = "embeddings";
        let word = t.take(&format!("{e}.word_embeddings.weight"), &[vocab, hidden])?;
        let pos = t.take(
            &format!("{e}.position_embeddings.weight"),
            &[max_pos, hidden],
        )?;
        let token_type = t.take(
            &format!("{e}.token_type_embeddings.weight"),
            &[types, hidden],
        )?;
        let norm = Norm::load(t, &format!("{e}.LayerNorm"), hidden)?;
        let layers = PostNorm::load(c, t, &NAMES)?;
        Ok(Bert {
            model_type,
            hidden,
            vocab,
            max_pos,
            pos_offset,
            word,
            pos,
            token_type: token_type[..hidden].to_vec(),
            norm,
            layers,
        })
    }
}

impl Encoder for Bert {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn hidden(&self) -> usize {
        self.hidden
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_len(&self) -> Option<usize> {
        Some(self.max_pos - self.pos_offset)
    }

    fn set_precision(&mut self, precision: Precision) {
        self.layers.set_precision(precision);
    }

    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        let (h, len) = (self.hidden, batch.len);
        assert!(
            len <= self.max_pos - self.pos_offset,
            "sequence longer than the position table"
        );
        let mut x = scratch_zeroed(batch.ids.len() * h);
        for (r, (row, &id)) in x.chunks_exact_mut(h).zip(batch.ids).enumerate() {
            let p = self.pos_offset + r % len;
            let word = &self.word[id as usize * h..(id as usize + 1) * h];
            let pos = &self.pos[p * h..(p + 1) * h];
            for (((v, a), b), c) in row.iter_mut().zip(word).zip(pos).zip(&self.token_type) {
                *v = a + b + c;
            }
        }
        self.norm.apply(&mut x, self.layers.eps);
        self.layers.forward(&mut x, batch, None);
        x.into_vec()
    }
}
