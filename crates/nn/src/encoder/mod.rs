//! Text encoders with the forward pass written out layer by layer over the
//! kernels of [`crate::kernels`]: BERT, RoBERTa / XLM-RoBERTa, MPNet, the T5
//! encoder and ModernBERT, loaded from a Hugging Face `config.json` and
//! `model.safetensors` with transformers' parameter names.
//!
//! Training passes may apply dropout where transformers' modules do in train
//! mode, with the probabilities of `config.json` or one for every site
//! ([`Dropout`]); the masks are drawn from one seed per text
//! ([`crate::kernels::Stream`]), so they do not depend on the batch a text
//! is in, and the backward pass recomputes them.

mod bert;
mod config;
mod modernbert;
mod mpnet;
mod t5;
mod tensors;

pub use config::HfConfig;
pub use tensors::Tensors;

use std::any::Any;

use crate::kernels::{
    layer_norm, layer_norm_backward, Activation, Dense, Masks, Precision, Rate, Site, Stream,
};
use crate::params::{Params, Slot};
use crate::NnError;

/// The `model_type`s of `config.json` that tandem runs.
pub const SUPPORTED: &[&str] = &[
    "bert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "t5",
    "modernbert",
];

/// A batch of token ids, right-padded: `ids` is `[B, len]`, sequence `b` has
/// `lens[b]` real tokens first.
#[derive(Debug, Clone, Copy)]
pub struct TokenBatch<'a> {
    /// The ids, `[B, len]` (padding positions hold any valid id).
    pub ids: &'a [u32],
    /// Real tokens per sequence.
    pub lens: &'a [usize],
    /// The padded length.
    pub len: usize,
    /// Whether the padding positions get states too, their queries
    /// attending to the real tokens ([`crate::kernels::AttnShape::pad_rows`]):
    /// ColBERT's query expansion tokens that are not attended to.
    pub pad_rows: bool,
}

impl TokenBatch<'_> {
    /// The number of sequences.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Whether row `r` of the flattened batch (`[B * len]`) gets a state
    /// that counts: a real token, or any row with `pad_rows`.
    pub fn has_state(&self, r: usize) -> bool {
        self.pad_rows || r % self.len < self.lens[r / self.len]
    }
}

/// What a training forward pass ([`Encoder::forward_train`]) keeps for its
/// backward pass; only the encoder that made it can read it.
pub struct Tape {
    inner: Box<dyn Any + Send + Sync>,
    /// The dropout seeds of the pass.
    seeds: Option<Vec<u64>>,
}

impl Tape {
    fn new<T: Any + Send + Sync>(t: T, seeds: Option<&[u64]>) -> Tape {
        Tape {
            inner: Box::new(t),
            seeds: seeds.map(<[u64]>::to_vec),
        }
    }

    /// What the encoder kept, and the dropout seeds of the pass.
    fn take<T: Any>(self) -> (T, Option<Vec<u64>>) {
        let t = self
            .inner
            .downcast::<T>()
            .unwrap_or_else(|_| panic!("a tape handed to another encoder"));
        (*t, self.seeds)
    }
}

/// Which dropout a training pass with seeds applies (passes without seeds,
/// inference among them, never drop).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Dropout {
    /// None (the default).
    #[default]
    Off,
    /// The probabilities of `config.json` at the sites transformers applies
    /// them to (BERT's `hidden_dropout_prob` and
    /// `attention_probs_dropout_prob`, T5's `dropout_rate`, ModernBERT's
    /// `embedding_dropout`, `attention_dropout` and `mlp_dropout`).
    Config,
    /// This probability (in `[0, 1)`) at every one of those sites.
    Rate(f32),
}

/// The dropout probabilities of an encoder's kinds of site: those of
/// `config.json` and those in force ([`Dropout::Off`] until set).
pub(crate) struct Rates<const N: usize> {
    config: [f32; N],
    on: [Rate; N],
}

impl<const N: usize> Rates<N> {
    /// The probabilities under `keys`, transformers' `defaults` where
    /// absent; one outside `[0, 1)` is refused.
    pub(crate) fn read(
        c: &HfConfig,
        keys: [&str; N],
        defaults: [f32; N],
    ) -> Result<Rates<N>, NnError> {
        let mut config = defaults;
        for (v, key) in config.iter_mut().zip(keys) {
            if let Some(p) = c.opt_f64(key)? {
                if !(0.0..1.0).contains(&p) {
                    return Err(NnError::config(
                        format!("config.json: {key:?} is {p}, not a probability below 1"),
                        "restore config.json from the model's source",
                    ));
                }
                *v = p as f32;
            }
        }
        Ok(Rates {
            config,
            on: [Rate::OFF; N],
        })
    }

    /// Puts `mode` in force.
    pub(crate) fn set(&mut self, mode: Dropout) {
        self.on = match mode {
            Dropout::Off => [Rate::OFF; N],
            Dropout::Config => self.config.map(Rate::new),
            Dropout::Rate(p) => [Rate::new(p); N],
        };
    }

    /// The largest probability of `config.json`.
    pub(crate) fn config_max(&self) -> f32 {
        self.config.iter().copied().fold(0.0, f32::max)
    }

    /// The masks of the sites of kind `kind` of `layer` in a pass with the
    /// dropout stream `drop`; `None` without a stream or at rate 0.
    pub(crate) fn at<'a>(
        &self,
        drop: Option<Stream<'a>>,
        layer: usize,
        kind: usize,
    ) -> Option<Masks<'a>> {
        drop.and_then(|d| d.at(layer, self.on[kind]))
    }
}

/// The dropout stream of a pass over `batch` with `seeds`.
pub(crate) fn stream<'a>(seeds: Option<&'a [u64]>, batch: TokenBatch<'a>) -> Option<Stream<'a>> {
    seeds.map(|s| Stream::new(s, batch.lens, batch.len))
}

/// The precision of attention's products in a pass of an encoder whose
/// linear layers run in `precision`: bfloat16 only in inference passes (no
/// dropout stream, nothing kept for a backward pass), since
/// [`crate::kernels::attention_backward`] recomputes the probabilities in
/// float32 from `q`, `k` and `v`: the forward pass of a training step must
/// have used those same probabilities.
pub(crate) fn attention_precision(
    precision: Precision,
    drop: Option<Stream<'_>>,
    training: bool,
) -> Precision {
    if drop.is_none() && !training {
        precision
    } else {
        Precision::F32
    }
}

/// Applies the dropout `masks` of `site`, if any, to `x` (in the forward
/// pass, or to the gradient of the output in the backward pass).
pub(crate) fn dropout(masks: Option<Masks<'_>>, x: &mut [f32], site: Site) {
    if let Some(m) = masks {
        m.apply(x, site);
    }
}

/// The gradient of the input of a dropout on a residual branch given `d`,
/// that of its output, which the other path needs as it is: `d` through the
/// masks of `site` in `buf`, or `d` itself without masks.
pub(crate) fn branch<'b>(
    masks: Option<Masks<'_>>,
    site: Site,
    d: &'b [f32],
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    match masks {
        Some(m) => {
            buf.clear();
            buf.extend_from_slice(d);
            m.apply(buf, site);
            buf
        }
        None => d,
    }
}

/// A text encoder: token ids in, one hidden state per token out.
///
/// Its parameters live in one [`Params`] under transformers' names (without
/// a `bert.`-style prefix), so that an optimizer can update them, a
/// checkpoint can save them and a Hugging Face directory can be written
/// from them.
pub trait Encoder: Send + Sync {
    /// The `model_type` it was loaded as.
    fn model_type(&self) -> &str;
    /// The width of the hidden states.
    fn hidden(&self) -> usize;
    /// The number of layers (transformer blocks).
    fn layers(&self) -> usize;
    /// The number of token ids the embedding table covers.
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model can take (its position table), if it
    /// has one.
    fn max_len(&self) -> Option<usize>;
    /// Chooses float32 or bfloat16 matrix products.
    fn set_precision(&mut self, precision: Precision);
    /// The largest dropout probability of `config.json` (what
    /// [`Dropout::Config`] applies at most).
    fn config_dropout(&self) -> f32;
    /// Chooses the dropout of the passes given seeds; panics on a
    /// [`Dropout::Rate`] outside `[0, 1)`.
    fn set_dropout(&mut self, mode: Dropout);
    /// The last hidden states, `[B * len, hidden]`; rows of padding are
    /// unspecified (finite). With `seeds` (one per sequence) the dropout of
    /// [`Encoder::set_dropout`] applies, its masks drawn from them.
    fn forward_seeded(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> Vec<f32>;
    /// The last hidden states without dropout (inference).
    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        self.forward_seeded(batch, None)
    }
    /// The parameters.
    fn params(&self) -> &Params;
    /// The parameters, to change; call [`Encoder::sync`] after.
    fn params_mut(&mut self) -> &mut Params;
    /// Refreshes what the encoder derives from its parameters (the bfloat16
    /// copies of its weights) after they changed.
    fn sync(&mut self);
    /// [`Encoder::forward_seeded`], keeping what the backward pass needs.
    fn forward_train(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> (Vec<f32>, Tape);
    /// Adds to `grads` (the layout of [`Encoder::params`]) the gradient of a
    /// loss whose gradient with respect to the output of the
    /// [`Encoder::forward_train`] that made `tape` is `dh` (`[B * len,
    /// hidden]`, zero on padding rows); `dh` is used up as working space.
    /// The dropout masks are recomputed from the pass's seeds with the
    /// dropout in force, which must be the one of the forward pass.
    fn backward(&self, batch: TokenBatch<'_>, tape: Tape, dh: &mut [f32], grads: &mut Params);
}

/// Builds the encoder that `config` describes from `tensors`, checking every
/// tensor's shape; an unsupported `model_type` is refused with the list of
/// supported ones.
pub fn load(config: &HfConfig, tensors: &mut Tensors) -> Result<Box<dyn Encoder>, NnError> {
    let ty = config.model_type()?;
    match ty.as_str() {
        "bert" | "roberta" | "xlm-roberta" | "camembert" => {
            Ok(Box::new(bert::Bert::load(config, tensors)?))
        }
        "mpnet" => mpnet::MpNet::load(config, tensors),
        "t5" | "mt5" => t5::T5::load(config, tensors),
        "modernbert" => modernbert::ModernBert::load(config, tensors),
        other => Err(NnError::config(
            format!("model_type {other:?} is not supported"),
            format!(
                "use a model of a supported architecture: {}",
                SUPPORTED.join(", ")
            ),
        )),
    }
}

/// `torch.nn.Linear(inp, out)` named `{name}.weight` / `{name}.bias`, taken
/// from `t` into `p`.
pub(crate) fn linear(
    t: &mut Tensors,
    p: &mut Params,
    name: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Dense, NnError> {
    let w = t.take(&format!("{name}.weight"), &[out, inp])?;
    let b = if bias {
        Some(t.take(&format!("{name}.bias"), &[out])?)
    } else {
        None
    };
    Ok(Dense::add(p, name, w, b, out, inp))
}

/// The tensor `name` of `shape`, taken from `t` into `p`.
pub(crate) fn tensor(
    t: &mut Tensors,
    p: &mut Params,
    name: &str,
    shape: &[usize],
) -> Result<Slot, NnError> {
    let v = t.take(name, shape)?;
    Ok(p.push(name, shape, v))
}

/// Adds row `from` of `src` to row `to` of `dst` (rows of `width`).
pub(crate) fn add_row(dst: &mut [f32], to: usize, src: &[f32], from: usize, width: usize) {
    crate::kernels::add_into(
        &mut dst[to * width..(to + 1) * width],
        &src[from * width..(from + 1) * width],
    );
}

/// A layer norm's weight and, unless `norm_bias` is false (ModernBERT),
/// bias.
pub(crate) struct Norm {
    w: Slot,
    b: Option<Slot>,
}

impl Norm {
    /// `{name}.weight` and `{name}.bias`.
    pub(crate) fn load(
        t: &mut Tensors,
        p: &mut Params,
        name: &str,
        width: usize,
    ) -> Result<Norm, NnError> {
        Norm::load_opt(t, p, name, width, true)
    }

    /// `{name}.weight` and, when `bias`, `{name}.bias`.
    pub(crate) fn load_opt(
        t: &mut Tensors,
        p: &mut Params,
        name: &str,
        width: usize,
        bias: bool,
    ) -> Result<Norm, NnError> {
        Ok(Norm {
            w: tensor(t, p, &format!("{name}.weight"), &[width])?,
            b: if bias {
                Some(tensor(t, p, &format!("{name}.bias"), &[width])?)
            } else {
                None
            },
        })
    }

    pub(crate) fn apply(&self, p: &Params, x: &mut [f32], eps: f32) {
        layer_norm(x, p.at(self.w), self.b.map(|b| p.at(b)), eps);
    }

    /// The backward pass on the norm's input `x`: `d` goes from the output
    /// gradient to the input gradient.
    pub(crate) fn backward(
        &self,
        p: &Params,
        x: &[f32],
        d: &mut [f32],
        grads: &mut Params,
        eps: f32,
    ) {
        match self.b {
            Some(b) => {
                let (dw, db) = grads.pair_mut(self.w, b);
                layer_norm_backward(x, p.at(self.w), d, dw, Some(db), eps);
            }
            None => layer_norm_backward(x, p.at(self.w), d, grads.at_mut(self.w), None, eps),
        }
    }
}

/// Refuses a hidden width that the heads do not divide.
pub(crate) fn check_heads(hidden: usize, heads: usize) -> Result<(), NnError> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(NnError::config(
            format!("hidden size {hidden} is not a multiple of the {heads} attention heads"),
            "restore config.json from the model's source",
        ));
    }
    Ok(())
}

/// The activation named by `key` (default `default`), refused by name when
/// tandem does not have it.
pub(crate) fn activation(c: &HfConfig, key: &str, default: &str) -> Result<Activation, NnError> {
    let name = c.opt_str(key).unwrap_or(default);
    Activation::parse_hf(name).ok_or_else(|| {
        NnError::config(
            format!("{key} {name:?} is not supported"),
            "use gelu, gelu_new, gelu_pytorch_tanh, relu, silu or tanh",
        )
    })
}
