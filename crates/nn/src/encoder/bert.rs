//! BERT, RoBERTa and XLM-RoBERTa: post-norm encoder layers over word,
//! position and token-type embeddings.
//!
//! ```text
//! x = D(LN(word[id] + pos[p] + type[0]))       p = t (BERT), pad + 1 + t (RoBERTa)
//! per layer:
//!   q, k, v = x Wq + bq, x Wk + bk, x Wv + bv  (one product: the three stacked)
//!   a = Da(softmax(q k^T / sqrt(dh) + mask)) v per head, padded keys masked
//!   x = LN(x + D(a Wo + bo))
//!   x = LN(x + D(act(x Wi + bi) Wd + bd))      act = hidden_act (GELU)
//! ```
//!
//! `D` is dropout at `hidden_dropout_prob`, `Da` at
//! `attention_probs_dropout_prob` (training passes with seeds only).
//!
//! The backward pass runs the same steps in reverse; it keeps each layer's
//! input, `q, k, v`, the attention output, both norms' inputs and the
//! feed-forward's pre-activation, and recomputes the attention
//! probabilities and the dropout masks.

use super::{
    attention_precision, branch, dropout, linear, stream, tensor, Dropout, Encoder, HfConfig, Norm,
    Rates, Tape, Tensors, TokenBatch,
};
use crate::kernels::{
    add_into, attention, attention_backward, scratch, scratch_zeroed, Activation, AttnShape, Dense,
    Precision, Site, Stream,
};
use crate::params::{Params, Slot};
use crate::NnError;

struct Layer {
    qkv: Dense,
    out: Dense,
    norm1: Norm,
    up: Dense,
    down: Dense,
    norm2: Norm,
}

/// What one layer keeps for the backward pass.
pub(super) struct LayerTape {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    /// The input of the first norm.
    r1: Vec<f32>,
    /// Its output.
    x1: Vec<f32>,
    /// The feed-forward's pre-activation.
    u: Vec<f32>,
    /// The input of the second norm.
    r2: Vec<f32>,
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
/// `x = LN(x + attn(x)); x = LN(x + act(x Wi + bi) Wd + bd)`, and the
/// dropout of their input, the normed embeddings.
pub(super) struct PostNorm {
    layers: Vec<Layer>,
    heads: usize,
    /// `layer_norm_eps`, also that of the embeddings' norm.
    pub(super) eps: f32,
    act: Activation,
    /// `[HIDDEN, ATTENTION]`.
    pub(super) rates: Rates<2>,
    /// That of the linear layers ([`PostNorm::set_precision`]).
    precision: Precision,
}

/// The kinds of dropout site of [`PostNorm::rates`]: `hidden_dropout_prob`
/// (embeddings, attention output, feed-forward output) and
/// `attention_probs_dropout_prob`.
const HIDDEN: usize = 0;
const ATTENTION: usize = 1;

impl PostNorm {
    /// The number of layers.
    pub(super) fn len(&self) -> usize {
        self.layers.len()
    }

    /// Loads `num_hidden_layers` layers named as `names` says (relative to
    /// `encoder.layer.{i}`).
    pub(super) fn load(
        c: &HfConfig,
        t: &mut Tensors,
        p: &mut Params,
        names: &LayerNames,
    ) -> Result<PostNorm, NnError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let inter = c.usize("intermediate_size")?;
        super::check_heads(hidden, heads)?;
        let layers = (0..c.usize("num_hidden_layers")?)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                let mut w = |n: &str, out, inp| linear(t, p, &format!("{l}.{n}"), out, inp, true);
                let qkv = Dense::stack(vec![
                    w(names.qkv[0], hidden, hidden)?,
                    w(names.qkv[1], hidden, hidden)?,
                    w(names.qkv[2], hidden, hidden)?,
                ]);
                let out = w(names.out, hidden, hidden)?;
                let norm1 = Norm::load(t, p, &format!("{l}.{}", names.norm1), hidden)?;
                Ok(Layer {
                    qkv,
                    out,
                    norm1,
                    up: linear(
                        t,
                        p,
                        &format!("{l}.intermediate.dense"),
                        inter,
                        hidden,
                        true,
                    )?,
                    down: linear(t, p, &format!("{l}.output.dense"), hidden, inter, true)?,
                    norm2: Norm::load(t, p, &format!("{l}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        Ok(PostNorm {
            layers,
            heads,
            eps: c.opt_f64("layer_norm_eps")?.unwrap_or(1e-12) as f32,
            act: super::activation(c, "hidden_act", "gelu")?,
            rates: Rates::read(
                c,
                ["hidden_dropout_prob", "attention_probs_dropout_prob"],
                [0.1, 0.1],
            )?,
            precision: Precision::F32,
        })
    }

    pub(super) fn set_dropout(&mut self, mode: Dropout) {
        self.rates.set(mode);
    }

    fn dense_mut(&mut self) -> impl Iterator<Item = &mut Dense> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.qkv, &mut l.out, &mut l.up, &mut l.down])
    }

    pub(super) fn set_precision(&mut self, p: &Params, precision: Precision) {
        self.dense_mut().for_each(|d| d.set_precision(p, precision));
        self.precision = precision;
    }

    pub(super) fn sync(&mut self, p: &Params) {
        self.dense_mut().for_each(|d| d.sync(p));
    }

    fn shape(&self, batch: TokenBatch<'_>, h: usize) -> (AttnShape, f32) {
        let shape = AttnShape {
            batch: batch.rows(),
            len: batch.len,
            heads: self.heads,
            head_dim: h / self.heads,
            pad_rows: batch.pad_rows,
        };
        (shape, 1.0 / ((h / self.heads) as f32).sqrt())
    }

    /// Runs the dropout of the embeddings and the layers over `x` (`[B *
    /// len, hidden]`), adding `bias` (`[heads, len, len]`) to the scores
    /// when given, with the dropout masks of `drop` when given; keeps each
    /// layer's [`LayerTape`] in `tape` when given.
    fn run(
        &self,
        p: &Params,
        x: &mut [f32],
        batch: TokenBatch<'_>,
        bias: Option<&[f32]>,
        drop: Option<Stream<'_>>,
        mut tape: Option<&mut Vec<LayerTape>>,
    ) {
        let h = x.len() / batch.ids.len();
        let (shape, scale) = self.shape(batch, h);
        let at = |layer, kind| self.rates.at(drop, layer, kind);
        dropout(at(0, HIDDEN), x, Site::Embeddings);
        let (mut qkv, mut ctx, mut y, mut inner) =
            (scratch(), scratch_zeroed(x.len()), scratch(), scratch());
        let keep = |v: &[f32], on: bool| if on { v.to_vec() } else { Vec::new() };
        let on = tape.is_some();
        let precision = attention_precision(self.precision, drop, on);
        for (i, l) in self.layers.iter().enumerate() {
            let x_in = keep(x, on);
            l.qkv.forward(p, x, &mut qkv);
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
                at(i, ATTENTION),
                precision,
            );
            l.out.forward(p, &ctx, &mut y);
            dropout(at(i, HIDDEN), &mut y, Site::AttnOut);
            add_into(x, &y);
            let r1 = keep(x, on);
            l.norm1.apply(p, x, self.eps);
            l.up.forward(p, x, &mut inner);
            let u = keep(&inner, on);
            self.act.apply(&mut inner);
            l.down.forward(p, &inner, &mut y);
            dropout(at(i, HIDDEN), &mut y, Site::FfnOut);
            let x1 = keep(x, on);
            add_into(x, &y);
            let r2 = keep(x, on);
            l.norm2.apply(p, x, self.eps);
            if let Some(t) = tape.as_deref_mut() {
                t.push(LayerTape {
                    x: x_in,
                    qkv: qkv.to_vec(),
                    ctx: ctx.to_vec(),
                    r1,
                    x1,
                    u,
                    r2,
                });
            }
        }
    }

    pub(super) fn forward(
        &self,
        p: &Params,
        x: &mut [f32],
        batch: TokenBatch<'_>,
        bias: Option<&[f32]>,
        seeds: Option<&[u64]>,
    ) {
        self.run(p, x, batch, bias, stream(seeds, batch), None);
    }

    pub(super) fn forward_train(
        &self,
        p: &Params,
        x: &mut [f32],
        batch: TokenBatch<'_>,
        bias: Option<&[f32]>,
        seeds: Option<&[u64]>,
    ) -> Vec<LayerTape> {
        let mut tape = Vec::with_capacity(self.layers.len());
        self.run(p, x, batch, bias, stream(seeds, batch), Some(&mut tape));
        tape
    }

    /// The backward pass of the layers and the embeddings' dropout: `dx`
    /// goes from the gradient of their output to that of their input; the
    /// gradient of the scores' bias is added into `dbias` when given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        p: &Params,
        batch: TokenBatch<'_>,
        tape: Vec<LayerTape>,
        bias: Option<&[f32]>,
        seeds: Option<&[u64]>,
        dx: &mut [f32],
        grads: &mut Params,
        mut dbias: Option<&mut [f32]>,
    ) {
        let h = dx.len() / batch.ids.len();
        let (shape, scale) = self.shape(batch, h);
        let drop = stream(seeds, batch);
        let at = |layer, kind| self.rates.at(drop, layer, kind);
        let (mut d1, mut d2, mut dy) = (scratch(), scratch(), scratch());
        let mut dqkv = scratch_zeroed(3 * dx.len());
        for ((i, l), t) in self.layers.iter().enumerate().zip(tape).rev() {
            // x = LN2(x1 + D(down(act(u))))
            l.norm2.backward(p, &t.r2, dx, grads, self.eps);
            let mut g = t.u.clone();
            self.act.apply(&mut g);
            let d = branch(at(i, HIDDEN), Site::FfnOut, dx, &mut dy);
            l.down.backward(p, &g, d, grads, Some(&mut d1));
            self.act.backward(&t.u, &mut d1);
            l.up.backward(p, &t.x1, &d1, grads, Some(&mut d2));
            add_into(dx, &d2);
            // x1 = LN1(x + D(out(attn(qkv(x)))))
            l.norm1.backward(p, &t.r1, dx, grads, self.eps);
            let d = branch(at(i, HIDDEN), Site::AttnOut, dx, &mut dy);
            l.out.backward(p, &t.ctx, d, grads, Some(&mut d1));
            attention_backward(
                &mut dqkv,
                &d1,
                &t.qkv,
                3 * h,
                [0, h, 2 * h],
                shape,
                batch.lens,
                scale,
                bias,
                None,
                dbias.as_deref_mut(),
                at(i, ATTENTION),
            );
            l.qkv.backward(p, &t.x, &dqkv, grads, Some(&mut d2));
            add_into(dx, &d2);
        }
        dropout(at(0, HIDDEN), dx, Site::Embeddings);
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
    params: Params,
    word: Slot,
    pos: Slot,
    token_type: Slot,
    norm: Norm,
    layers: PostNorm,
}

/// What a BERT forward pass keeps for the backward pass.
struct BertTape {
    /// The input of the embeddings' norm.
    emb: Vec<f32>,
    layers: Vec<LayerTape>,
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
        let mut p = Params::default();
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
        let token_type = tensor(
            t,
            &mut p,
            &format!("{e}.token_type_embeddings.weight"),
            &[types, hidden],
        )?;
        let norm = Norm::load(t, &mut p, &format!("{e}.LayerNorm"), hidden)?;
        let layers = PostNorm::load(c, t, &mut p, &NAMES)?;
        Ok(Bert {
            model_type,
            hidden,
            vocab,
            max_pos,
            pos_offset,
            params: p,
            word,
            pos,
            token_type,
            norm,
            layers,
        })
    }

    /// The embeddings before their norm, `[B * len, hidden]`.
    fn embed(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        let (h, len, p) = (self.hidden, batch.len, &self.params);
        assert!(
            len <= self.max_pos - self.pos_offset,
            "sequence longer than the position table"
        );
        let (word, pos, types) = (p.at(self.word), p.at(self.pos), &p.at(self.token_type)[..h]);
        let mut x = scratch_zeroed(batch.ids.len() * h);
        for (r, (row, &id)) in x.chunks_exact_mut(h).zip(batch.ids).enumerate() {
            let at = self.pos_offset + r % len;
            let word = &word[id as usize * h..(id as usize + 1) * h];
            let pos = &pos[at * h..(at + 1) * h];
            for (((v, a), b), c) in row.iter_mut().zip(word).zip(pos).zip(types) {
                *v = a + b + c;
            }
        }
        x.into_vec()
    }
}

impl Encoder for Bert {
    fn model_type(&self) -> &str {
        &self.model_type
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
        Some(self.max_pos - self.pos_offset)
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
        let mut x = self.embed(batch);
        self.norm.apply(&self.params, &mut x, self.layers.eps);
        self.layers
            .forward(&self.params, &mut x, batch, None, seeds);
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
        let mut x = self.embed(batch);
        let emb = x.clone();
        self.norm.apply(&self.params, &mut x, self.layers.eps);
        let layers = self
            .layers
            .forward_train(&self.params, &mut x, batch, None, seeds);
        (x, Tape::new(BertTape { emb, layers }, seeds))
    }

    fn backward(&self, batch: TokenBatch<'_>, tape: Tape, dh: &mut [f32], grads: &mut Params) {
        let (t, seeds): (BertTape, _) = tape.take();
        let (h, len, p) = (self.hidden, batch.len, &self.params);
        self.layers
            .backward(p, batch, t.layers, None, seeds.as_deref(), dh, grads, None);
        self.norm.backward(p, &t.emb, dh, grads, self.layers.eps);
        for (r, &id) in batch.ids.iter().enumerate() {
            if !batch.has_state(r) {
                continue;
            }
            super::add_row(grads.at_mut(self.word), id as usize, dh, r, h);
            super::add_row(grads.at_mut(self.pos), self.pos_offset + r % len, dh, r, h);
            super::add_row(grads.at_mut(self.token_type), 0, dh, r, h);
        }
    }
}
