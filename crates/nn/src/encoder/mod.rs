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

use crate::kernels::{Activation, Dense, Precision};
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

/// A text encoder: token ids in, one hidden state per token out.
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

/// `torch.nn.Linear(inp, out)` named `{name}.weight` / `{name}.bias`.
pub(crate) fn linear(
    t: &mut Tensors,
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
    Ok(Dense::new(w, b, out, inp))
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

/// `x += y` elementwise.
pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
