//! ColBERT models as PyLate writes them: a transformer, Dense modules
//! applied to every token state, and per-token L2 normalisation, with the
//! settings of [`ColbertConfig`]. The rules are PyLate's (`ColBERT.tokenize`
//! and `ColBERT.encode`):
//!
//! - a text is stripped (and lower-cased when `do_lower_case`), tokenised
//!   with its special tokens and truncated to the length less one; the
//!   prefix token (`[Q] ` / `[D] `, an added token of `tokenizer.json`) is
//!   then inserted after the first token;
//! - with query expansion a query is padded to `query_length` with the
//!   `[MASK]` token; the expansion tokens are attended to only with
//!   `attend_to_expansion_tokens`, but every query token keeps its vector;
//! - a document keeps the vectors of its tokens that are not in the
//!   skiplist (punctuation; a skiplist word the vocabulary lacks stands for
//!   the unknown token, as `convert_tokens_to_ids` maps it).
//!
//! A sentence-transformers v6 `MultiVectorEncoder` directory
//! ([`ColbertLayout::SentenceTransformers`]) follows its own rules
//! (`Transformer.preprocess`, `MultiVectorMask`):
//!
//! - the prompt (`[Q] `, `query: `, ...) is text put before the text, which
//!   is neither stripped nor lower-cased; the whole is tokenised with its
//!   special tokens and truncated to the length;
//! - with query expansion a query is padded to `expansion_length` with the
//!   expansion token (strategy `fixed`: cut and padded to that length;
//!   `min`: padded to it, cut at `query_length`);
//! - the skiplist leaves out the tokens of the sides in `skiplist_tasks`
//!   (documents by default); skiplist words the vocabulary lacks are
//!   dropped from it.

use std::path::Path;

use tandem_nn::encoder::{Tape, TokenBatch};
use tandem_nn::Params;
use tokenizers::models::ModelWrapper;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::dir::{ColbertConfig, ColbertLayout};
use crate::embedder::{l2_normalize_rows, HeadTape};
use crate::train::pad;
use crate::{EmbedOptions, Embedder, TextError};

/// Which side of the MaxSim a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `[Q] `, expanded to the expansion length.
    Query,
    /// `[D] `, truncated to `document_length`, skiplist dropped.
    Document,
}

impl Side {
    /// `query` or `document`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Query => "query",
            Side::Document => "document",
        }
    }
}

/// A text's tokens as the encoder gets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColbertTokens {
    /// The ids, expansion tokens included.
    pub ids: Vec<u32>,
    /// The tokens attended to (the first `attended` of `ids`).
    pub attended: usize,
    /// Whether the text was cut to the length.
    pub truncated: bool,
}

/// Token vectors of a list of texts.
#[derive(Debug, Clone)]
pub struct MultiVectors {
    /// `[tokens, dim]`, text after text in input order.
    pub vectors: Vec<f32>,
    /// Text `i` has rows `offsets[i]..offsets[i + 1]` (`texts + 1`
    /// entries, from 0).
    pub offsets: Vec<usize>,
    /// Texts cut to the length.
    pub truncated: usize,
    /// Texts that were empty (or only whitespace).
    pub empty: usize,
}

/// A loaded ColBERT.
pub struct ColBert {
    embedder: Embedder,
    config: ColbertConfig,
    query_tok: Tokenizer,
    doc_tok: Tokenizer,
    /// PyLate's prefix tokens, inserted after the first token (none with
    /// [`ColbertLayout::SentenceTransformers`], whose prefixes are text).
    query_prefix: Option<u32>,
    document_prefix: Option<u32>,
    /// The query expansion token (`[MASK]`).
    expansion: u32,
    /// Sorted ids of the skiplist.
    skiplist: Vec<u32>,
}

impl std::fmt::Debug for ColBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColBert")
            .field("embedder", &self.embedder)
            .field("config", &self.config)
            .finish()
    }
}

impl ColBert {
    /// Whether the directory at `path` is a ColBERT (PyLate's settings in
    /// its `config_sentence_transformers.json`).
    pub fn is_colbert(path: &Path) -> Result<bool, TextError> {
        // a model with separate query and document towers is a dense one
        if crate::ModelDir::has_towers(path)? {
            return Ok(false);
        }
        Ok(crate::ModelDir::open(path)?.colbert.is_some())
    }

    /// Loads the ColBERT in `path`; `opts.max_length` replaces the
    /// directory's `document_length` when given.
    pub fn load(path: &Path, opts: EmbedOptions) -> Result<ColBert, TextError> {
        let dir = crate::ModelDir::open(path)?;
        let st_config = path.join("config_sentence_transformers.json");
        let Some(mut config) = dir.colbert.clone() else {
            return Err(TextError::file(
                &st_config,
                "not a ColBERT: config_sentence_transformers.json has no model_type \"ColBERT\" nor PyLate's query_prefix / query_length settings, and modules.json no MultiVectorMask",
                "load a ColBERT directory saved by PyLate or by sentence-transformers 6 (MultiVectorEncoder), or drop --colbert for a dense model",
            ));
        };
        if let Some(m) = opts.max_length {
            config.document_length = m;
        }
        let longest = config.query_length.max(config.document_length);
        let embedder = Embedder::load(
            path,
            EmbedOptions {
                max_length: Some(longest),
                ..opts
            },
        )?;
        let dir = embedder.dir();
        let tok_path = dir.tokenizer.clone();
        let id_of = |token: &str| embedder.tokenizer.token_to_id(token);
        let prefix = |p: &str, key: &str| -> Result<Option<u32>, TextError> {
            if p.is_empty() {
                return Ok(None);
            }
            id_of(p).map(Some).ok_or_else(|| {
                TextError::file(
                    &tok_path,
                    format!("the {key} {p:?} is not a token of the tokenizer"),
                    "use the tokenizer.json PyLate saved with the model (it adds the prefixes as tokens)",
                )
            })
        };
        let st6 = config.layout == ColbertLayout::SentenceTransformers;
        let (query_prefix, document_prefix) = if st6 {
            (None, None)
        } else {
            (
                prefix(&config.query_prefix, "query_prefix")?,
                prefix(&config.document_prefix, "document_prefix")?,
            )
        };
        let transformer_config = dir.transformer.join("sentence_bert_config.json");
        let expansion = match &config.expansion_token {
            Some(t) => Some(id_of(t).ok_or_else(|| {
                TextError::file(
                    &transformer_config,
                    format!("query_expansion.token {t:?} is not a token of the tokenizer"),
                    "name a token of tokenizer.json, or set it to null for the mask token",
                )
            })?),
            None => dir
                .mask_token
                .as_deref()
                .and_then(id_of)
                .or_else(|| ["[MASK]", "<mask>"].into_iter().find_map(id_of)),
        };
        let expansion = match expansion {
            Some(id) => id,
            None if !config.do_query_expansion => 0,
            None => {
                return Err(TextError::file(
                    &tok_path,
                    "no mask token ([MASK] or <mask>) to expand queries with",
                    if st6 {
                        "name the token in query_expansion.token of sentence_bert_config.json, or set query_expansion to null"
                    } else {
                        "use a masked-language-model tokenizer, or set do_query_expansion to false in config_sentence_transformers.json"
                    },
                ))
            }
        };
        let unk = dir
            .unk_token
            .as_deref()
            .and_then(id_of)
            .or_else(|| unknown_id(&embedder.tokenizer));
        // PyLate maps a word the vocabulary lacks to the unknown token;
        // sentence-transformers drops it
        let mut skiplist: Vec<u32> = config
            .skiplist_words
            .iter()
            .filter_map(|w| if st6 { id_of(w) } else { id_of(w).or(unk) })
            .collect();
        skiplist.sort_unstable();
        skiplist.dedup();
        let truncating = |len: usize, prefixed: bool| -> Result<Tokenizer, TextError> {
            let mut t = embedder.tokenizer.clone();
            let max_length = len - usize::from(prefixed);
            t.with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| {
                TextError::file(
                    &tok_path,
                    format!("cannot truncate to {max_length} tokens ({e})"),
                    "set query_length and document_length to 3 or more",
                )
            })?;
            Ok(t)
        };
        let lengths_file = if st6 { &transformer_config } else { &st_config };
        for (key, len) in [
            ("query_length", config.query_length),
            ("document_length", config.document_length),
        ] {
            if len < 3 {
                return Err(TextError::file(
                    lengths_file,
                    format!("{key} {len} leaves no room for text"),
                    format!("set {key} to 3 or more"),
                ));
            }
        }
        let query_tok = truncating(config.query_length, query_prefix.is_some())?;
        let doc_tok = truncating(config.document_length, document_prefix.is_some())?;
        Ok(ColBert {
            embedder,
            config,
            query_tok,
            doc_tok,
            query_prefix,
            document_prefix,
            expansion,
            skiplist,
        })
    }

    /// The model under the ColBERT settings.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The model under the ColBERT settings, to change (its parameters in
    /// training; call [`Embedder::sync`] after).
    pub fn embedder_mut(&mut self) -> &mut Embedder {
        &mut self.embedder
    }

    /// The settings in force.
    pub fn config(&self) -> &ColbertConfig {
        &self.config
    }

    /// The width of the token vectors.
    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// The text to put before queries and documents besides the model's
    /// own prefixes: `query` and `document` as given, else nothing (a
    /// sentence-transformers v6 model's prompts are its prefixes, which
    /// [`ColBert::tokenize_texts`] adds).
    pub fn prompts(&self, query: Option<&str>, document: Option<&str>) -> (String, String) {
        (
            query.unwrap_or_default().to_string(),
            document.unwrap_or_default().to_string(),
        )
    }

    /// The tokens of `texts` on `side`, as PyLate builds them.
    pub fn tokenize(&self, texts: &[String], side: Side) -> Result<Vec<ColbertTokens>, TextError> {
        Ok(self
            .tokenize_texts(texts, side)?
            .into_iter()
            .map(|(ids, truncated)| ColbertTokens {
                truncated,
                ..self.expand(ids, side)
            })
            .collect())
    }

    /// The tokens of `texts` on `side` before query expansion (PyLate:
    /// stripped, lower-cased when the model is, truncated, the prefix
    /// inserted; sentence-transformers: after the prompt, truncated), and
    /// whether each text was cut: what training stores per text.
    pub fn tokenize_texts(
        &self,
        texts: &[String],
        side: Side,
    ) -> Result<Vec<(Vec<u32>, bool)>, TextError> {
        let (tok, prefix) = match side {
            Side::Query => (&self.query_tok, self.query_prefix),
            Side::Document => (&self.doc_tok, self.document_prefix),
        };
        let lower = self.embedder.dir().lower_case;
        let inputs: Vec<String> = match self.config.layout {
            ColbertLayout::PyLate => texts
                .iter()
                .map(|t| {
                    let t = t.trim();
                    if lower {
                        t.to_lowercase()
                    } else {
                        t.to_string()
                    }
                })
                .collect(),
            ColbertLayout::SentenceTransformers => {
                let prompt = match side {
                    Side::Query => &self.config.query_prefix,
                    Side::Document => &self.config.document_prefix,
                };
                texts.iter().map(|t| format!("{prompt}{t}")).collect()
            }
        };
        let enc = tok.encode_batch(inputs, true).map_err(|e| {
            TextError::file(
                &self.embedder.dir().tokenizer,
                format!("cannot tokenise ({e})"),
                "check the input text",
            )
        })?;
        Ok(enc
            .into_iter()
            .map(|e| {
                let mut ids = e.get_ids().to_vec();
                if let Some(p) = prefix {
                    ids.insert(ids.len().min(1), p);
                }
                (ids, !e.get_overflowing().is_empty())
            })
            .collect())
    }

    /// A text's tokens of [`ColBert::tokenize_texts`] as the encoder gets
    /// them: a query padded to the expansion length with the expansion
    /// token (attended to or not as configured).
    pub fn expand(&self, mut ids: Vec<u32>, side: Side) -> ColbertTokens {
        let mut attended = ids.len();
        if side == Side::Query && self.config.do_query_expansion {
            ids.resize(ids.len().max(self.config.expansion_length), self.expansion);
            if self.config.attend_to_expansion_tokens {
                attended = ids.len();
            }
        }
        ColbertTokens {
            ids,
            attended,
            truncated: false,
        }
    }

    /// Whether a token `id` on `side` keeps a vector (it is not left out
    /// by the skiplist).
    pub fn keeps(&self, id: u32, side: Side) -> bool {
        let skips = match side {
            Side::Query => self.config.skiplist_queries,
            Side::Document => self.config.skiplist_documents,
        };
        !(skips && self.skiplist.binary_search(&id).is_ok())
    }

    /// One forward pass over the texts `toks` on `side`: the vectors of
    /// the tokens that keep one (`[kept, dim]`, text after text), how many
    /// each text keeps, and, when `train` is given, what the backward pass
    /// needs (`train` says whether the encoder trains: with `false` it runs
    /// as in inference and only the heads get gradients). With `seeds` (one
    /// per text) the encoder drops out as [`Embedder::forward_train`] does.
    pub(crate) fn forward_tokens(
        &self,
        toks: &[ColbertTokens],
        side: Side,
        seeds: Option<&[u64]>,
        train: Option<bool>,
    ) -> (Vec<f32>, Vec<usize>, Option<ColbertPass>) {
        let ids: Vec<Vec<u32>> = toks.iter().map(|t| t.ids.clone()).collect();
        let (padded, _, len) = pad(&ids);
        let lens: Vec<usize> = toks.iter().map(|t| t.attended).collect();
        let pad_rows = toks.iter().any(|t| t.attended < t.ids.len());
        let batch = TokenBatch {
            ids: &padded,
            lens: &lens,
            len,
            pad_rows,
        };
        let encoder = &self.embedder.encoder;
        let (states, tape) = match train {
            Some(true) => {
                let (s, t) = encoder.forward_train(batch, seeds);
                (s, Some(t))
            }
            Some(false) => (encoder.forward(batch), None),
            None => (encoder.forward_seeded(batch, seeds), None),
        };
        // the states of the tokens that keep a vector, text after text
        let hidden = encoder.hidden();
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(toks.len());
        for (b, t) in toks.iter().enumerate() {
            let before = rows.len();
            for (pos, &id) in t.ids.iter().enumerate() {
                if self.keeps(id, side) {
                    rows.push(b * len + pos);
                }
            }
            counts.push(rows.len() - before);
        }
        let mut kept = Vec::with_capacity(rows.len() * hidden);
        for &r in &rows {
            kept.extend_from_slice(&states[r * hidden..(r + 1) * hidden]);
        }
        tandem_nn::kernels::recycle(states);
        let mut heads = train.map(|_| HeadTape::default());
        let mut out = self.embedder.heads_forward(kept, heads.as_mut());
        if let Some(h) = heads.as_mut() {
            h.unnormalised = out.clone();
        }
        l2_normalize_rows(&mut out, self.dim());
        let pass = heads.map(|heads| ColbertPass {
            ids: padded,
            lens,
            len,
            pad_rows,
            rows,
            tape,
            heads,
        });
        (out, counts, pass)
    }

    /// The token vectors of `texts` on `side`, calling `progress(n)` after
    /// each batch of `n` texts.
    pub fn encode(
        &self,
        texts: &[String],
        side: Side,
        mut progress: impl FnMut(usize),
    ) -> Result<MultiVectors, TextError> {
        let tokens = self.tokenize(texts, side)?;
        let dim = self.dim();
        let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.ids.clone()).collect();
        let mut per_text: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in self.embedder.batches(&ids) {
            let toks: Vec<ColbertTokens> = chunk.iter().map(|&i| tokens[i].clone()).collect();
            let (out, counts, _) = self.forward_tokens(&toks, side, None, None);
            let mut at = 0;
            for (&i, &n) in chunk.iter().zip(&counts) {
                per_text[i] = out[at * dim..(at + n) * dim].to_vec();
                at += n;
            }
            progress(chunk.len());
        }
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        let mut vectors = Vec::with_capacity(per_text.iter().map(Vec::len).sum());
        for v in per_text {
            vectors.extend_from_slice(&v);
            offsets.push(vectors.len() / dim);
        }
        Ok(MultiVectors {
            vectors,
            offsets,
            truncated: tokens.iter().filter(|t| t.truncated).count(),
            empty: texts.iter().filter(|t| t.trim().is_empty()).count(),
        })
    }
}

/// A training forward pass of a [`ColBert`] over a batch of texts, kept
/// for its backward pass.
pub struct ColbertPass {
    ids: Vec<u32>,
    lens: Vec<usize>,
    len: usize,
    pad_rows: bool,
    /// The rows of the padded batch whose tokens keep a vector.
    rows: Vec<usize>,
    /// `None` when the encoder is frozen.
    tape: Option<Tape>,
    heads: HeadTape,
}

impl ColBert {
    /// Adds to `grads` (the layout of the model's parameters) the gradient
    /// of a loss whose gradient with respect to the token vectors of
    /// `pass` is `dout` (`[kept, dim]`).
    pub fn backward(&self, pass: ColbertPass, dout: &[f32], grads: &mut Params) {
        let d = self.embedder.heads_backward(&pass.heads, dout, true, grads);
        let Some(tape) = pass.tape else { return };
        let hidden = self.embedder.encoder.hidden();
        let mut dstates = vec![0.0f32; pass.ids.len() * hidden];
        for (k, &r) in pass.rows.iter().enumerate() {
            dstates[r * hidden..(r + 1) * hidden].copy_from_slice(&d[k * hidden..(k + 1) * hidden]);
        }
        let batch = TokenBatch {
            ids: &pass.ids,
            lens: &pass.lens,
            len: pass.len,
            pad_rows: pass.pad_rows,
        };
        self.embedder
            .encoder
            .backward(batch, tape, &mut dstates, grads);
    }
}

/// The unknown token's id of the tokenizer's model, when it names one
/// (a Unigram model's is found through `tokenizer_config.json` only).
fn unknown_id(t: &Tokenizer) -> Option<u32> {
    let name = match t.get_model() {
        ModelWrapper::WordPiece(m) => Some(m.unk_token.clone()),
        ModelWrapper::BPE(m) => m.unk_token.clone(),
        ModelWrapper::WordLevel(m) => Some(m.unk_token.clone()),
        ModelWrapper::Unigram(_) => None,
    };
    name.and_then(|n| t.token_to_id(&n))
}
