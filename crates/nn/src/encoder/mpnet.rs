//! MPNet: BERT's post-norm layers over word and position embeddings (no
//! token types), with a relative position bias computed once and added to
//! the scores of every layer.
//!
//! ```text
//! x = D(LN(word[id] + pos[p]))                 p = 1 + (non-pad ids up to t), pad id 1: p = 1
//! B[h, i, j] = rel[bucket(j - i), h]           32 buckets up to distance 128 (t5::bucket)
//! per layer:
//!   q, k, v = x Wq + bq, x Wk + bk, x Wv + bv  (one product)
//!   a = Da(softmax(q k^T / sqrt(dh) + B + mask)) v
//!   x = LN(x + D(a Wo + bo))
//!   x = LN(x + D(act(x Wi + bi) Wd + bd))      act = hidden_act (GELU)
//! ```
//!
//! `D` is dropout at `hidden_dropout_prob`, `Da` at
//! `attention_probs_dropout_prob`, as in BERT (training passes with seeds
//! only).
//!
//! transformers fixes the padding index (1) and the bucketing (32 buckets,
//! distance 128) whatever `pad_token_id` and `relative_attention_num_buckets`
//! say; so does this.

use super::bert::{LayerNames, LayerTape, PostNorm};
use super::t5::RelativeBias;
use super::{tensor, Dropout, Encoder, HfConfig, Norm, Tape, Tensors, TokenBatch};
use crate::kernels::{scratch_zeroed, Precision};
use crate::params::{Params, Slot};
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
    params: Params,
    word: Slot,
    pos: Slot,
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
        let mut p = Params::default();
        let table = tensor(t, &mut p, rel, &[buckets, heads])?;
        let e = "embeddings";
        let word = tensor(
            t,
            &mut p,
            &format!("{e}.word_embeddings.weight"),
            &[vocab, hidden],
        )?;
        let pos = tensor(
            t,
            &mut p,
            &format!("{e}.position_embeddings.weight"),
            &[max_pos, hidden],
        )?;
        let norm = Norm::load(t, &mut p, &format!("{e}.LayerNorm"), hidden)?;
        let layers = PostNorm::load(c, t, &mut p, &NAMES)?;
        Ok(Box::new(MpNet {
            hidden,
            vocab,
            max_pos,
            params: p,
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

    fn layers(&self) -> usize {
        self.layers.len()
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_len(&self) -> Option<usize> {
        Some(self.max_pos - PAD - 1)
    }

    fn set_precision(&mut self, precision: Precision) {
        self.layers.set_precision(&self.params, precision);
    }

    fn config_dropout(&self) -> f32 {
        self.layers.rates.config_max()
    }

    fn set_dropout(&mut self, mode: Dropout) {
        self.layers.set_dropout(mode);
    }

    fn forward_seeded(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> Vec<f32> {
        let (mut x, _) = self.embed(batch);
        self.norm.apply(&self.params, &mut x, self.layers.eps);
        let bias = self.bias.bias(&self.params, batch.len);
        self.layers
            .forward(&self.params, &mut x, batch, Some(&bias), seeds);
        x
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    fn sync(&mut self) {
        self.layers.sync(&self.params);
    }

    fn forward_train(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> (Vec<f32>, Tape) {
        let (mut x, positions) = self.embed(batch);
        let emb = x.clone();
        self.norm.apply(&self.params, &mut x, self.layers.eps);
        let bias = self.bias.bias(&self.params, batch.len);
        let layers = self
            .layers
            .forward_train(&self.params, &mut x, batch, Some(&bias), seeds);
        let tape = MpNetTape {
            emb,
            positions,
            bias,
            layers,
        };
        (x, Tape::new(tape, seeds))
    }

    fn backward(&self, batch: TokenBatch<'_>, tape: Tape, dh: &mut [f32], grads: &mut Params) {
        let (t, seeds): (MpNetTape, _) = tape.take();
        let (h, len, p) = (self.hidden, batch.len, &self.params);
        let mut dbias = vec![0.0; t.bias.len()];
        self.layers.backward(
            p,
            batch,
            t.layers,
            Some(&t.bias),
            seeds.as_deref(),
            dh,
            grads,
            Some(&mut dbias),
        );
        self.bias.backward(&dbias, len, grads);
        self.norm.backward(p, &t.emb, dh, grads, self.layers.eps);
        for (r, (&id, &at)) in batch.ids.iter().zip(&t.positions).enumerate() {
            if batch.has_state(r) {
                super::add_row(grads.at_mut(self.word), id as usize, dh, r, h);
                super::add_row(grads.at_mut(self.pos), at, dh, r, h);
            }
        }
    }
}

/// What an MPNet forward pass keeps for the backward pass.
struct MpNetTape {
    /// The input of the embeddings' norm.
    emb: Vec<f32>,
    /// The position of every token.
    positions: Vec<usize>,
    bias: Vec<f32>,
    layers: Vec<LayerTape>,
}

impl MpNet {
    /// The embeddings before their norm (`[B * len, hidden]`) and the
    /// position of every token.
    fn embed(&self, batch: TokenBatch<'_>) -> (Vec<f32>, Vec<usize>) {
        let (h, len, p) = (self.hidden, batch.len, &self.params);
        assert!(
            len + PAD < self.max_pos,
            "sequence longer than the position table"
        );
        let (word, pos) = (p.at(self.word), p.at(self.pos));
        let mut x = scratch_zeroed(batch.ids.len() * h);
        let mut positions = Vec::with_capacity(batch.ids.len());
        // create_position_ids_from_input_ids: positions count the ids that
        // are not PAD; those stay at PAD.
        let mut seen = PAD;
        for (r, row) in x.chunks_exact_mut(h).enumerate() {
            let (b, id) = (r / len, batch.ids[r] as usize);
            if r % len == 0 {
                seen = PAD;
            }
            let at = if r % len < batch.lens[b] && id != PAD {
                seen += 1;
                seen
            } else {
                PAD
            };
            positions.push(at);
            let word = &word[id * h..(id + 1) * h];
            let pos = &pos[at * h..(at + 1) * h];
            for ((v, a), c) in row.iter_mut().zip(word).zip(pos) {
                *v = a + c;
            }
        }
        (x.into_vec(), positions)
    }
}
