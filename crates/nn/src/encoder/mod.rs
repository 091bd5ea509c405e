//! Text encoders with the forward pass written out layer by layer over the
//! kernels of [`crate::kernels`]: BERT, RoBERTa / XLM-RoBERTa, MPNet, the T5
//! encoder and ModernBERT, loaded from a Hugging Face `config.json` and
//! `model.safetensors` with transformers' parameter names.

mod bert;
mod config;
mod modernbert;
mod mpnet;
mod t5;
mod tensors;

pub use config::HfConfig;
pub use tensors::Tensors;

use std::any::Any;

use crate::kernels::{layer_norm, layer_norm_backward, Activation, Dense, Precision};
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
}

impl TokenBatch<'_> {
    /// The number of sequences.
    pub fn rows(&self) -> usize {
        self.lens.len()
    }
}

/// What a training forward pass ([`Encoder::forward_train`]) keeps for its
/// backward pass; only the encoder that made it can read it.
pub struct Tape(Box<dyn Any + Send + Sync>);

impl Tape {
    fn new<T: Any + Send + Sync>(t: T) -> Tape {
        Tape(Box::new(t))
    }

    fn take<T: Any>(self) -> T {
        *self
            .0
            .downcast::<T>()
            .unwrap_or_else(|_| panic!("a tape handed to another encoder"))
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
    /// The number of token ids the embedding table covers.
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model can take (its position table), if it
    /// has one.
    fn max_len(&self) -> Option<usize>;
    /// Chooses float32 or bfloat16 matrix products.
    fn set_precision(&mut self, precision: Precision);
    /// The last hidden states, `[B * len, hidden]`; rows of padding are
    /// unspecified (finite).
    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32>;
    /// The parameters.
    fn params(&self) -> &Params;
    /// The parameters, to change; call [`Encoder::sync`] after.
    fn params_mut(&mut self) -> &mut Params;
    /// Refreshes what the encoder derives from its parameters (the bfloat16
    /// copies of its weights) after they changed.
    fn sync(&mut self);
    /// [`Encoder::forward`], keeping what the backward pass needs.
    fn forward_train(&self, batch: TokenBatch<'_>) -> (Vec<f32>, Tape);
    /// Adds to `grads` (the layout of [`Encoder::params`]) the gradient of a
    /// loss whose gradient with respect to the output of the
    /// [`Encoder::forward_train`] that made `tape` is `dh` (`[B * len,
    /// hidden]`, zero on padding rows); `dh` is used up as working space.
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
