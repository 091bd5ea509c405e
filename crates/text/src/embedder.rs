//! Texts to vectors: tokenise (with the prompt, truncated to the model's
//! length), sort by length so that batches carry little padding, run the
//! encoder, pool, apply the Dense modules, normalise, and put the vectors
//! back in input order.

use std::path::Path;

use tandem_nn::encoder::{self, Encoder, Tensors, TokenBatch};
use tandem_nn::kernels::{Activation, Dense, Precision};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::dir::{ModelDir, Tower};
use crate::TextError;

/// How to embed.
#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    /// Texts per forward pass.
    pub batch: usize,
    /// Tokens per text, special tokens included (default: the model's).
    pub max_length: Option<usize>,
    /// Matrix product precision.
    pub precision: Precision,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            batch: 32,
            max_length: None,
            precision: Precision::F32,
        }
    }
}

/// Vectors of a list of texts.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// `[texts, dim]`, in input order.
    pub vectors: Vec<f32>,
    /// Texts cut to the maximum length.
    pub truncated: usize,
    /// Texts that were empty (or only whitespace); embedded all the same.
    pub empty: usize,
}

/// A linear layer after the pooling (a sentence-transformers Dense module,
/// or a projection head added for training), its tensors kept in the
/// encoder's parameters under `{name}.linear.weight` / `.bias`.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// The module's folder name (`2_Dense`).
    pub(crate) name: String,
    pub(crate) dense: Dense,
    pub(crate) activation: Activation,
    /// `activation_function` as sentence-transformers writes it.
    pub(crate) activation_name: String,
}

/// What the pooling, heads and normalisation of a batch keep for the
/// backward pass.
#[derive(Debug, Default)]
pub(crate) struct HeadTape {
    /// The pooled vectors, then each head's output before its activation:
    /// `[inputs of head 0, pre-activation of head 0, ...]`.
    pub(crate) steps: Vec<Vec<f32>>,
    /// The vectors before normalisation.
    pub(crate) unnormalised: Vec<f32>,
}

/// A loaded model ready to embed (and to train: see the `train` module).
///
/// Its parameters are the encoder's, followed by those of the heads after
/// the pooling, all in one `Params`.
pub struct Embedder {
    pub(crate) dir: ModelDir,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) encoder: Box<dyn Encoder>,
    pub(crate) heads: Vec<Head>,
    /// The number of the encoder's own tensors (the heads' follow).
    pub(crate) encoder_len: usize,
    pub(crate) normalize: bool,
    max_len: usize,
    batch: usize,
    pub(crate) dim: usize,
    fingerprint: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir.path)
            .field("model_type", &self.encoder.model_type())
            .field("max_len", &self.max_len)
            .field("dim", &self.dim)
            .finish()
    }
}

impl Embedder {
    /// Loads the model in `path`, checking the directory, the config
    /// against the tensors and the tokenizer against the vocabulary. A
    /// model with separate query and document towers is refused: see
    /// [`Embedder::load_tower`] and [`Towers`](crate::Towers).
    pub fn load(path: &Path, opts: EmbedOptions) -> Result<Embedder, TextError> {
        Embedder::from_dir(ModelDir::open(path)?, opts)
    }

    /// Loads tower `tower` of the model in `path` (the model itself when it
    /// has a single tower).
    pub fn load_tower(
        path: &Path,
        opts: EmbedOptions,
        tower: Tower,
    ) -> Result<Embedder, TextError> {
        Embedder::from_dir(ModelDir::open_tower(path, tower)?, opts)
    }

    fn from_dir(dir: ModelDir, opts: EmbedOptions) -> Result<Embedder, TextError> {
        let path = dir.path.clone();
        let path = path.as_path();
        let config_path = dir.transformer.join("config.json");
        // the weights are read once: for their fingerprint and their tensors
        let bytes = std::fs::read(&dir.weights).map_err(|e| {
            TextError::file(
                &dir.weights,
                format!("cannot read ({e})"),
                "check its permissions",
            )
        })?;
        let fingerprint = dir.fingerprint(&bytes);
        let mut tensors =
            Tensors::parse(&dir.weights, &bytes).map_err(|e| TextError::nn(&config_path, e))?;
        drop(bytes);
        let mut encoder =
            encoder::load(&dir.config, &mut tensors).map_err(|e| TextError::nn(&config_path, e))?;
        encoder.set_precision(opts.precision);
        let mut tokenizer = Tokenizer::from_file(&dir.tokenizer).map_err(|e| {
            TextError::file(
                &dir.tokenizer,
                format!("not a tokenizer.json that the tokenizers library reads ({e})"),
                "rewrite it with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)",
            )
        })?;
        let vocab = encoder.vocab_size();
        if let Some((tok, id)) = tokenizer
            .get_vocab(true)
            .into_iter()
            .filter(|(_, id)| *id as usize >= vocab)
            .max_by_key(|(_, id)| *id)
        {
            return Err(TextError::file(
                &dir.tokenizer,
                format!(
                    "token {tok:?} has id {id}, but config.json's vocab_size is {vocab}; the tokenizer does not belong with the model"
                ),
                "use the tokenizer.json saved with this model",
            ));
        }
        let model_max = encoder.max_len();
        let max_len = match (opts.max_length, dir.max_seq_length) {
            (Some(m), _) => m,
            (None, Some(m)) => m,
            (None, None) => model_max.unwrap_or(512),
        };
        if max_len < 2 {
            return Err(TextError::file(
                path,
                format!("a maximum length of {max_len} tokens leaves no room for text"),
                "pass --max-length 2 or more",
            ));
        }
        if let Some(m) = model_max {
            if max_len > m {
                return Err(TextError::file(
                    &config_path,
                    format!(
                        "a maximum length of {max_len} tokens, but the model has positions for {m}"
                    ),
                    format!("pass --max-length {m} or less"),
                ));
            }
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| {
                TextError::file(
                    &dir.tokenizer,
                    format!("cannot truncate ({e})"),
                    "use a tokenizer.json saved by transformers",
                )
            })?;
        tokenizer.with_padding(None);
        let hidden = encoder.hidden();
        let mut dim = dir.pooling.width(hidden);
        let mut heads = Vec::with_capacity(dir.dense.len());
        let encoder_len = encoder.params().len();
        for (i, d) in dir.dense.iter().enumerate() {
            if d.inp != dim {
                return Err(TextError::file(
                    &dir.path.join("modules.json"),
                    format!(
                        "Dense module {} takes {} inputs but receives {dim}",
                        i + 1,
                        d.inp
                    ),
                    "restore the model directory from its source",
                ));
            }
            dim = d.out;
            let p = encoder.params_mut();
            let name = format!("{}.linear", d.name);
            let mut dense = Dense::add(p, &name, d.weight.clone(), d.bias.clone(), d.out, d.inp);
            dense.set_precision(p, opts.precision);
            heads.push(Head {
                name: d.name.clone(),
                dense,
                activation: d.activation,
                activation_name: d.activation_name.clone(),
            });
        }
        let normalize = dir.normalize;
        Ok(Embedder {
            dir,
            tokenizer,
            encoder,
            heads,
            encoder_len,
            normalize,
            max_len,
            batch: opts.batch.max(1),
            dim,
            fingerprint,
        })
    }

    /// The directory as read.
    pub fn dir(&self) -> &ModelDir {
        &self.dir
    }

    /// The encoder under the pooling.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// The encoder's `model_type`.
    pub fn model_type(&self) -> &str {
        self.encoder.model_type()
    }

    /// The width of the output vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens per text, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The fingerprint of the model's files.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The token ids of `texts` (special tokens added, truncated), and
    /// whether each was truncated.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<(Vec<u32>, bool)>, TextError> {
        let inputs: Vec<String> = if self.dir.lower_case {
            texts.iter().map(|t| t.to_lowercase()).collect()
        } else {
            texts.to_vec()
        };
        let enc = self.tokenizer.encode_batch(inputs, true).map_err(|e| {
            TextError::file(
                &self.dir.tokenizer,
                format!("cannot tokenise ({e})"),
                "check the input text",
            )
        })?;
        Ok(enc
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), !e.get_overflowing().is_empty()))
            .collect())
    }

    /// Embeds `texts`, each prefixed with `prompt` (may be empty), calling
    /// `progress(n)` after each batch of `n` texts.
    pub fn embed(
        &self,
        texts: &[String],
        prompt: &str,
        progress: impl FnMut(usize),
    ) -> Result<Embedded, TextError> {
        let inputs: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let tokens = self.tokenize(&inputs)?;
        let truncated = tokens.iter().filter(|(_, t)| *t).count();
        let empty = texts.iter().filter(|t| t.trim().is_empty()).count();
        let tokens: Vec<Vec<u32>> = tokens.into_iter().map(|t| t.0).collect();
        Ok(Embedded {
            vectors: self.embed_all(&tokens, progress),
            truncated,
            empty,
        })
    }

    /// The prompts to put before queries and documents: `query` and
    /// `document` as given, else the model's prompt named `query`, and its
    /// first of `document`, `passage` and `corpus` (empty when it has none).
    pub fn prompts(&self, query: Option<&str>, document: Option<&str>) -> (String, String) {
        let pick = |given: Option<&str>, names: &[&str]| {
            given.map(str::to_string).unwrap_or_else(|| {
                names
                    .iter()
                    .find_map(|n| self.dir.prompts.get(*n))
                    .cloned()
                    .unwrap_or_default()
            })
        };
        (
            pick(query, &["query"]),
            pick(document, &["document", "passage", "corpus"]),
        )
    }

    /// The batches [`Embedder::embed_all`] embeds `tokens` in (indices
    /// into `tokens`): the model's batch size each, longest first, ties in
    /// input order. A fixed batching for fixed input, so the same texts
    /// give the same bits.
    pub fn batches(&self, tokens: &[Vec<u32>]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        order.chunks(self.batch).map(<[usize]>::to_vec).collect()
    }

    /// The vectors of pre-tokenised texts (`[n, dim]`), embedded in
    /// [`Embedder::batches`], calling `progress(n)` after each batch of `n`
    /// texts.
    pub fn embed_all(&self, tokens: &[Vec<u32>], mut progress: impl FnMut(usize)) -> Vec<f32> {
        let mut vectors = vec![0.0f32; tokens.len() * self.dim];
        for chunk in self.batches(tokens) {
            let texts: Vec<Vec<u32>> = chunk.iter().map(|&i| tokens[i].clone()).collect();
            let out = self.embed_tokens(&texts);
            for (row, &i) in out.chunks_exact(self.dim).zip(&chunk) {
                vectors[i * self.dim..(i + 1) * self.dim].copy_from_slice(row);
            }
            progress(chunk.len());
        }
        vectors
    }

    /// Pools the token states of `batch` (`[B * len, hidden]`), runs the
    /// heads and normalises: `[B, dim]`. Keeps what the backward pass needs
    /// in `tape` when given.
    pub(crate) fn head_pass(
        &self,
        states: &[f32],
        batch: TokenBatch<'_>,
        mut tape: Option<&mut HeadTape>,
    ) -> Vec<f32> {
        let hidden = self.encoder.hidden();
        let len = batch.len;
        let width = self.dir.pooling.width(hidden);
        let mut x = vec![0.0f32; batch.rows() * width];
        for (b, out) in x.chunks_exact_mut(width).enumerate() {
            let real = &states[b * len * hidden..(b * len + batch.lens[b]) * hidden];
            self.dir.pooling.pool(real, hidden, out);
        }
        let mut x = self.heads_forward(x, tape.as_deref_mut());
        if let Some(t) = tape {
            t.unnormalised = x.clone();
        }
        if self.normalize {
            l2_normalize_rows(&mut x, self.dim);
        }
        x
    }

    /// Runs the heads (the Dense modules) over the rows of `x`, one vector
    /// each (pooled vectors, or a ColBERT's token states); keeps each
    /// head's input and pre-activation output in `tape` when given.
    pub(crate) fn heads_forward(
        &self,
        mut x: Vec<f32>,
        mut tape: Option<&mut HeadTape>,
    ) -> Vec<f32> {
        let p = self.encoder.params();
        let mut next = Vec::new();
        for h in &self.heads {
            h.dense.forward(p, &x, &mut next);
            if let Some(t) = tape.as_deref_mut() {
                t.steps.push(std::mem::take(&mut x));
                t.steps.push(next.clone());
            }
            h.activation.apply(&mut next);
            std::mem::swap(&mut x, &mut next);
        }
        x
    }
}

/// Scales each row of `x` (`dim` wide) to unit L2 norm (a zero row stays
/// zero).
pub(crate) fn l2_normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in row.iter_mut() {
            *v /= norm;
        }
    }
}
