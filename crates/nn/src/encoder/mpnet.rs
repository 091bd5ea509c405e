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

use super::bert::{LayerNames, Norm, PostNorm};
use super::t5::RelativeBias;
use super::{Encoder, HfConfig, Tensors, TokenBatch};
use crate::kernels::{scratch_zeroed, Precision};
use crate::NnError;

/// `MPNetEmbeddings.padding_idx`.
const PAD: usize = 1;
/// `MPNetEncoder.compute_position_bias`'s buckets and maximum distance.
const BUCKETS: usize = 32;
const MAX_DISTANCE: usize = 128;

pub(super) struct MpNet {
    hidden: usize,
    vocab: usize,
    max_pos: usize,
    word: Vec<f32>,
    pos: Vec<f32>,
    norm: Norm,
    bias: RelativeBias,
    layers: PostNorm,
}

/// MPNet's tensor names.
const NAMES: LayerNames = LayerNames {
    qkv: ["attention.attn.q", "attention.attn.k", "attention.attn.v"],
    out: "attention.attn.o",
    norm1: "attention.LayerNorm",
};

impl MpNet {
    pub(super) fn load(c: &HfConfig, t: &mut Tensors) -> Result<Box<dyn Encoder>, NnError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let vocab = c.usize("vocab_size")?;
        let max_pos = c.usize("max_position_embeddings")?;
        let buckets = c.opt_usize("relative_attention_num_buckets")?.unwrap_or(32);
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
        let norm = Norm::load(t, &format!("{e}.LayerNorm"), hidden)?;
        let layers = PostNorm::load(c, t, &NAMES)?;
        Ok(Box::new(MpNet {
            hidden,
            vocab,
            max_pos,
            word,
            pos,
            norm,
            bias: RelativeBias::new(table, heads, BUCKETS, MAX_DISTANCE),
            layers,
        }))
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
        self.layers.set_precision(precision);
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
        self.norm.apply(&mut x, self.layers.eps);
        let bias = self.bias.bias(len);
        self.layers.forward(&mut x, batch, Some(&bias));
        x.into_vec()
    }
}
