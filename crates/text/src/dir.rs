//! A Hugging Face model directory, with the sentence-transformers layout
//! when it has one: `modules.json` (Transformer, Pooling, Dense, Normalize),
//! `sentence_bert_config.json` (`max_seq_length`, `do_lower_case`) and
//! `config_sentence_transformers.json` (prompts, and a ColBERT's settings
//! as PyLate writes them: [`ColbertConfig`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tandem_nn::encoder::HfConfig;
use tandem_nn::kernels::Activation;

use crate::pooling::Pooling;
use crate::TextError;

/// A sentence-transformers `Dense` module: a linear layer and an activation.
#[derive(Debug, Clone)]
pub struct DenseModule {
    /// Its folder's name in the model directory (`2_Dense`).
    pub name: String,
    /// `linear.weight`, `[out, inp]`.
    pub weight: Vec<f32>,
    /// `linear.bias`, when the module has one.
    pub bias: Option<Vec<f32>>,
    /// `in_features`.
    pub inp: usize,
    /// `out_features`.
    pub out: usize,
    /// Applied after it.
    pub activation: Activation,
    /// `activation_function` as the config names it
    /// (`torch.nn.modules.activation.Tanh`).
    pub activation_name: String,
}

/// Which layout a ColBERT directory has, and so whose rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColbertLayout {
    /// PyLate's: the settings at the top of
    /// `config_sentence_transformers.json`, the prefixes tokens inserted
    /// after the first token, texts stripped.
    PyLate,
    /// sentence-transformers v6's `MultiVectorEncoder`: a `MultiVectorMask`
    /// module, the lengths and `query_expansion` in the Transformer's
    /// `sentence_bert_config.json`, the prefixes `prompts` text put before
    /// the text (not stripped), skiplist words the vocabulary lacks dropped.
    SentenceTransformers,
}

/// A ColBERT's settings, as PyLate writes them in
/// `config_sentence_transformers.json` (its defaults where a key is
/// absent), or as sentence-transformers v6 spreads them over its modules
/// (see [`ColbertLayout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ColbertConfig {
    /// Whose layout and rules.
    pub layout: ColbertLayout,
    /// The token inserted after the first token of a query (`[Q] `; empty:
    /// none); with [`ColbertLayout::SentenceTransformers`] the prompt text
    /// put before it.
    pub query_prefix: String,
    /// The same for documents (`[D] `).
    pub document_prefix: String,
    /// The most tokens per query, prefix included.
    pub query_length: usize,
    /// With query expansion, queries are padded to this many tokens with
    /// the expansion token (PyLate: `query_length`; sentence-transformers:
    /// `query_expansion.length`, which under its strategy `min` is below
    /// `query_length`).
    pub expansion_length: usize,
    /// The expansion token, when the directory names one
    /// (`query_expansion.token`); else the tokenizer's mask token.
    pub expansion_token: Option<String>,
    /// The most tokens per document, prefix included.
    pub document_length: usize,
    /// Whether the query expansion tokens are attended to (otherwise only
    /// they attend to the real tokens).
    pub attend_to_expansion_tokens: bool,
    /// Whether queries are padded with `[MASK]` tokens to `query_length`
    /// (their vectors kept).
    pub do_query_expansion: bool,
    /// Tokens left out of document vectors (punctuation).
    pub skiplist_words: Vec<String>,
    /// Whether the skiplist also leaves tokens out of query vectors
    /// (sentence-transformers' `skiplist_tasks` with `query`).
    pub skiplist_queries: bool,
    /// Whether the skiplist applies to documents (PyLate: always).
    pub skiplist_documents: bool,
}

impl ColbertConfig {
    /// PyLate's defaults.
    pub fn pylate() -> ColbertConfig {
        ColbertConfig {
            layout: ColbertLayout::PyLate,
            query_prefix: "[Q] ".into(),
            document_prefix: "[D] ".into(),
            query_length: 32,
            expansion_length: 32,
            expansion_token: None,
            document_length: 180,
            attend_to_expansion_tokens: false,
            do_query_expansion: true,
            skiplist_words: "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
                .chars()
                .map(String::from)
                .collect(),
            skiplist_queries: false,
            skiplist_documents: true,
        }
    }

    /// The settings of a `config_sentence_transformers.json` (at `path`),
    /// when it describes a ColBERT (`model_type` `ColBERT`, or PyLate's
    /// keys).
    fn read(v: &Value, path: &Path) -> Result<Option<ColbertConfig>, TextError> {
        let is_colbert = v.get("model_type").and_then(Value::as_str) == Some("ColBERT")
            || PYLATE_KEYS.iter().any(|k| v.get(*k).is_some());
        if !is_colbert {
            return Ok(None);
        }
        let bad = |k: &str, what: &str| {
            TextError::file(
                path,
                format!("{k:?} is not {what}"),
                "restore the file as PyLate saved it",
            )
        };
        let mut c = ColbertConfig::pylate();
        let text = |k: &str, into: &mut String| -> Result<(), TextError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(s)) => {
                    *into = s.clone();
                    Ok(())
                }
                Some(_) => Err(bad(k, "a string")),
            }
        };
        text("query_prefix", &mut c.query_prefix)?;
        text("document_prefix", &mut c.document_prefix)?;
        let count = |k: &str, into: &mut usize| -> Result<(), TextError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(()),
                Some(n) => match n.as_u64() {
                    Some(n) if n >= 1 => {
                        *into = n as usize;
                        Ok(())
                    }
                    _ => Err(bad(k, "a positive integer")),
                },
            }
        };
        count("query_length", &mut c.query_length)?;
        count("document_length", &mut c.document_length)?;
        let flag = |k: &str, into: &mut bool| -> Result<(), TextError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Bool(b)) => {
                    *into = *b;
                    Ok(())
                }
                Some(_) => Err(bad(k, "true or false")),
            }
        };
        flag(
            "attend_to_expansion_tokens",
            &mut c.attend_to_expansion_tokens,
        )?;
        flag("do_query_expansion", &mut c.do_query_expansion)?;
        match v.get("skiplist_words") {
            None | Some(Value::Null) => {}
            Some(Value::Array(words)) => {
                c.skiplist_words = words
                    .iter()
                    .map(|w| w.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("skiplist_words", "a list of strings"))?;
            }
            Some(_) => return Err(bad("skiplist_words", "a list of strings")),
        }
        // PyLate: without query expansion nothing is attended to beyond the text
        if !c.do_query_expansion {
            c.attend_to_expansion_tokens = false;
        }
        c.expansion_length = c.query_length;
        Ok(Some(c))
    }
}

/// The PyLate keys of `config_sentence_transformers.json`.
const PYLATE_KEYS: [&str; 7] = [
    "query_prefix",
    "document_prefix",
    "query_length",
    "document_length",
    "attend_to_expansion_tokens",
    "do_query_expansion",
    "skiplist_words",
];

/// What a sentence-transformers v6 `MultiVectorEncoder` directory says
/// about its ColBERT settings, from the files that hold them.
struct St6Files<'a> {
    /// `config_sentence_transformers.json` (prompts), when present.
    st: Option<(&'a Value, &'a Path)>,
    /// The Transformer's `sentence_bert_config.json` (`query_length`,
    /// `document_length`, `query_expansion`, `do_lower_case`), when present.
    transformer: Option<(&'a Value, &'a Path)>,
    /// The `MultiVectorMask` module's `config.json`.
    mask: (&'a Value, &'a Path),
    /// The tokenizer's maximum length as sentence-transformers sets it.
    model_max: usize,
}

impl ColbertConfig {
    /// The settings of a sentence-transformers v6 `MultiVectorEncoder`, as
    /// its `Transformer.preprocess`, `MultiVectorMask` and `encode_query` /
    /// `encode_document` apply them.
    fn read_st6(f: St6Files) -> Result<ColbertConfig, TextError> {
        let fix = "restore the file as sentence-transformers 6 saved it (MultiVectorEncoder.save_pretrained)";
        let mut c = ColbertConfig::pylate();
        c.layout = ColbertLayout::SentenceTransformers;
        // prompts: encode_query uses "query", encode_document the first of
        // "document", "passage", "corpus"; else the default prompt, if any
        let (prompts, default) = match f.st {
            Some((v, path)) => {
                if let Some(k) = PYLATE_KEYS.iter().find(|k| v.get(**k).is_some()) {
                    return Err(TextError::file(
                        path,
                        format!("PyLate's {k:?} beside a MultiVectorMask module: the directory mixes PyLate's layout and sentence-transformers v6's"),
                        "keep one: re-save it with MultiVectorEncoder.save_pretrained (v6), or with PyLate (no MultiVectorMask in modules.json)",
                    ));
                }
                let default = v.get("default_prompt_name").and_then(Value::as_str);
                (v.get("prompts").and_then(Value::as_object), default)
            }
            None => (None, None),
        };
        let prompt = |names: &[&str]| -> Option<String> {
            let p = prompts?;
            names
                .iter()
                .find_map(|n| p.get(*n))
                .or_else(|| p.get(default?))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        c.query_prefix = prompt(&["query"]).unwrap_or_default();
        c.document_prefix = prompt(&["document", "passage", "corpus"]).unwrap_or_default();

        // lengths and query expansion: the Transformer's config
        let mut query_length = None;
        let mut document_length = None;
        let mut expansion = None;
        if let Some((v, path)) = f.transformer {
            let bad =
                |k: &str, what: &str| TextError::file(path, format!("{k} is not {what}"), fix);
            let length = |k: &str| -> Result<Option<usize>, TextError> {
                match v.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(n) => match n.as_u64() {
                        Some(n) if n >= 1 => Ok(Some(n as usize)),
                        _ => Err(bad(&format!("{k:?}"), "a positive integer")),
                    },
                }
            };
            query_length = length("query_length")?;
            document_length = length("document_length")?;
            if v.get("do_lower_case").and_then(Value::as_bool) == Some(true) {
                return Err(TextError::file(
                    path,
                    "do_lower_case true in a multi-vector model (sentence-transformers lower-cases through the tokenizer's normalizer, around the prompt tokens) is not supported",
                    "set do_lower_case to false (an uncased tokenizer lower-cases by itself)",
                ));
            }
            match v.get("query_expansion") {
                None | Some(Value::Null) => {}
                Some(Value::Object(q)) => {
                    if let Some(k) = q
                        .keys()
                        .find(|k| !["strategy", "attend", "token", "length"].contains(&k.as_str()))
                    {
                        return Err(bad(
                            &format!("query_expansion key {k:?}"),
                            "one of strategy, attend, token, length",
                        ));
                    }
                    let strategy = match q.get("strategy").and_then(Value::as_str) {
                        Some("fixed") => false,
                        Some("min") => true,
                        _ => return Err(bad("query_expansion.strategy", "\"fixed\" or \"min\"")),
                    };
                    let attend = match q.get("attend") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => return Err(bad("query_expansion.attend", "true or false")),
                    };
                    let token = match q.get("token") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(t)) => Some(t.clone()),
                        Some(_) => return Err(bad("query_expansion.token", "a string or null")),
                    };
                    let len = match q.get("length").and_then(Value::as_u64) {
                        Some(n) if n >= 1 => n as usize,
                        _ => return Err(bad("query_expansion.length", "a positive integer")),
                    };
                    if let Some(ql) = query_length.filter(|&ql| ql < len) {
                        return Err(TextError::file(
                            path,
                            format!("query_length {ql} is below query_expansion.length {len}"),
                            "raise query_length to the expansion length or more, or drop it",
                        ));
                    }
                    expansion = Some((strategy, attend, token, len));
                }
                Some(_) => return Err(bad("query_expansion", "an object or null")),
            }
        }
        c.document_length = document_length.unwrap_or(f.model_max);
        match expansion {
            Some((min, attend, token, len)) => {
                c.do_query_expansion = true;
                c.attend_to_expansion_tokens = attend;
                c.expansion_token = token;
                c.expansion_length = len;
                // "fixed": every query is cut and padded to the length;
                // "min": padded up to it, cut at query_length
                c.query_length = if min {
                    query_length.unwrap_or(f.model_max).max(len)
                } else {
                    len
                };
            }
            None => {
                c.do_query_expansion = false;
                c.attend_to_expansion_tokens = false;
                c.query_length = query_length.unwrap_or(f.model_max);
                c.expansion_length = c.query_length;
            }
        }

        // the scoring mask
        let (v, path) = f.mask;
        let bad = |k: &str, what: &str| TextError::file(path, format!("{k:?} is not {what}"), fix);
        let strings = |k: &str, x: &Value| -> Result<Vec<String>, TextError> {
            match x {
                Value::String(s) => Ok(vec![s.clone()]),
                Value::Array(items) => items
                    .iter()
                    .map(|w| w.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(k, "a list of strings")),
                _ => Err(bad(k, "a list of strings")),
            }
        };
        c.skiplist_words = match v.get("skiplist_words") {
            None | Some(Value::Null) => Vec::new(),
            Some(x @ Value::Array(_)) => strings("skiplist_words", x)?,
            Some(_) => return Err(bad("skiplist_words", "a list of strings")),
        };
        let tasks = match v.get("skiplist_tasks") {
            None | Some(Value::Null) => vec!["document".to_string()],
            Some(x) => strings("skiplist_tasks", x)?,
        };
        if let Some(t) = tasks.iter().find(|t| *t != "query" && *t != "document") {
            return Err(TextError::file(
                path,
                format!("skiplist_tasks names the task {t:?}; tandem encodes queries and documents only"),
                "list \"query\" and/or \"document\" in skiplist_tasks",
            ));
        }
        c.skiplist_queries = tasks.iter().any(|t| t == "query");
        c.skiplist_documents = tasks.iter().any(|t| t == "document");
        match v.get("keep_only_token_ids") {
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(TextError::file(
                    path,
                    "keep_only_token_ids (scoring only image-patch tokens of documents, for ColPali-style models) is not supported",
                    "set keep_only_token_ids to null: tandem's ColBERT encodes text",
                ))
            }
        }
        Ok(c)
    }
}

/// Everything read from a model directory, before the weights are built.
#[derive(Debug)]
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
    /// The transformer's folder (the directory itself, or a module folder).
    pub transformer: PathBuf,
    /// Its `config.json`.
    pub config: HfConfig,
    /// Its `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Its `model.safetensors`.
    pub weights: PathBuf,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Dense modules after pooling, in order.
    pub dense: Vec<DenseModule>,
    /// Whether the output is L2-normalised.
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`.
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` of `sentence_bert_config.json`.
    pub lower_case: bool,
    /// Named prompts (`query`, `document`, ...).
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when none is asked for.
    pub default_prompt_name: Option<String>,
    /// `similarity_fn_name` (`cosine`, `dot`, `MaxSim`, ...), when given.
    pub similarity: Option<String>,
    /// The tower read, when the model has separate query and document
    /// towers.
    pub tower: Option<Tower>,
    /// A ColBERT's settings, when the directory is one (see
    /// [`ColbertConfig`]).
    pub colbert: Option<ColbertConfig>,
    /// `mask_token` and `unk_token` of `tokenizer_config.json`, when given.
    pub mask_token: Option<String>,
    /// See `mask_token`.
    pub unk_token: Option<String>,
    /// A SHA-256 over every file that shapes the output but the weights
    /// (which [`ModelDir::fingerprint`] adds, from bytes read once).
    pub files_sha256: String,
}

pub(crate) fn read_json(path: &Path) -> Result<Value, TextError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        TextError::file(
            path,
            format!("cannot read ({e})"),
            "check the path and its permissions",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        TextError::file(
            path,
            format!("not valid JSON ({e})"),
            "restore the file from the model's source",
        )
    })
}

fn read_json_opt(path: &Path) -> Result<Option<Value>, TextError> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The file `name` in `dir`, refused when missing; a directory with only
/// `pytorch_model.bin` is told how to convert it.
fn weights_file(dir: &Path) -> Result<PathBuf, TextError> {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return Ok(st);
    }
    if dir.join("model.safetensors.index.json").is_file() {
        return Err(TextError::file(
            dir,
            "the weights are sharded (model.safetensors.index.json); tandem reads one model.safetensors",
            "save them as one file: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', max_shard_size='100GB')\"",
        ));
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(TextError::file(
            &dir.join("pytorch_model.bin"),
            "tandem reads safetensors weights, not pickled PyTorch ones",
            "convert once: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\"",
        ));
    }
    Err(TextError::file(
        &st,
        "missing: a model directory needs config.json, tokenizer.json and model.safetensors",
        "point --model at a Hugging Face model directory saved with save_pretrained",
    ))
}

/// The module types of `modules.json` that tandem runs.
const MODULES: &[&str] = &[
    "Transformer",
    "Pooling",
    "Dense",
    "Normalize",
    "Router",
    "MultiVectorMask",
];

/// One tower of a model with separate query and document towers (a
/// sentence-transformers `Router` with `query` and `document` routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    /// The `query` route.
    Query,
    /// The `document` route.
    Document,
}

impl Tower {
    /// The route's name in `router_config.json`.
    pub fn route(self) -> &'static str {
        match self {
            Tower::Query => "query",
            Tower::Document => "document",
        }
    }
}

/// The modules of `path` in order (their short type and folder), a
/// Router's route `tower` in its place, and whether there was a Router.
fn module_list(
    path: &Path,
    tower: Option<Tower>,
) -> Result<(Vec<(String, PathBuf)>, bool), TextError> {
    let modules_path = path.join("modules.json");
    if !modules_path.is_file() {
        return Ok((Vec::new(), false));
    }
    let modules = read_json(&modules_path)?;
    let list = modules.as_array().ok_or_else(|| {
        TextError::file(
            &modules_path,
            "not a JSON list",
            "restore the file from the model's source",
        )
    })?;
    let mut out = Vec::new();
    let mut routed = false;
    for m in list {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        let dir = path.join(m.get("path").and_then(Value::as_str).unwrap_or(""));
        if short == "Router" {
            let Some(tower) = tower else {
                return Err(TextError::file(
                    &modules_path,
                    "the model has separate query and document towers (a Router module)",
                    "pick one: tandem embed --tower query|document (tandem beir, mine and train use both)",
                ));
            };
            routed = true;
            out.extend(route(&dir, tower)?);
            continue;
        }
        if short.ends_with("TokenPooling") {
            return Err(TextError::file(
                &modules_path,
                format!("module type {ty:?}: token pooling (fewer vectors per document) is not supported; tandem keeps every token vector"),
                "remove the token pooling module from modules.json (the model then gives one vector per token)",
            ));
        }
        if !MODULES.contains(&short) {
            return Err(TextError::file(
                &modules_path,
                format!("module type {ty:?} is not supported"),
                format!(
                    "use a model made of the modules tandem runs: {}",
                    MODULES.join(", ")
                ),
            ));
        }
        out.push((short.to_string(), dir));
    }
    Ok((out, routed))
}

/// The modules of a Router's route `tower`, from `router_config.json`
/// (`types`: module id to type; `structure`: route to module ids; each
/// module in the folder named by its id).
fn route(dir: &Path, tower: Tower) -> Result<Vec<(String, PathBuf)>, TextError> {
    let path = dir.join("router_config.json");
    let config = read_json(&path)?;
    let bad = |what: String| {
        TextError::file(
            &path,
            what,
            "restore the model directory from its source (sentence-transformers' Router.save writes it)",
        )
    };
    let ids = config
        .get("structure")
        .and_then(|s| s.get(tower.route()))
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("no route {:?} in \"structure\"", tower.route())))?;
    let mut out = Vec::new();
    for id in ids {
        let id = id.as_str().ok_or_else(|| {
            bad(format!(
                "a module id of route {:?} is not a string",
                tower.route()
            ))
        })?;
        if id.contains("..") || Path::new(id).is_absolute() {
            return Err(bad(format!("module id {id:?} leaves the model directory")));
        }
        let ty = config
            .get("types")
            .and_then(|t| t.get(id))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("module {id:?} has no type in \"types\"")))?;
        let short = ty.rsplit('.').next().unwrap_or(ty);
        if !MODULES[..4].contains(&short) {
            return Err(TextError::file(
                &path,
                format!(
                    "module type {ty:?} (route {:?}) is not supported",
                    tower.route()
                ),
                format!(
                    "use a model made of the modules tandem runs: {}",
                    MODULES[..4].join(", ")
                ),
            ));
        }
        out.push((short.to_string(), dir.join(id)));
    }
    Ok(out)
}

impl ModelDir {
    /// Reads the directory: every file is checked before any weight is
    /// built. A model with separate query and document towers is refused
    /// (see [`ModelDir::open_tower`]).
    pub fn open(path: &Path) -> Result<ModelDir, TextError> {
        ModelDir::read(path, None)
    }

    /// Reads tower `tower` of the directory: a model with separate query
    /// and document towers gives the modules of that route (then those
    /// after the Router), any other model its one tower.
    pub fn open_tower(path: &Path, tower: Tower) -> Result<ModelDir, TextError> {
        ModelDir::read(path, Some(tower))
    }

    /// Whether the model has separate query and document towers (a Router
    /// in `modules.json`).
    pub fn has_towers(path: &Path) -> Result<bool, TextError> {
        Ok(module_list(path, Some(Tower::Query))?.1)
    }

    fn read(path: &Path, tower: Option<Tower>) -> Result<ModelDir, TextError> {
        if !path.is_dir() {
            return Err(TextError::file(
                path,
                "not a directory",
                "point --model at a Hugging Face model directory (config.json, tokenizer.json, model.safetensors)",
            ));
        }
        let mut transformer = path.to_path_buf();
        let mut pooling_dir = None;
        let mut dense_dirs = Vec::new();
        let mut normalize = false;
        let mut mask_dir = None;
        let modules_path = path.join("modules.json");
        let (modules, routed) = module_list(path, tower)?;
        for (kind, dir) in modules {
            match kind.as_str() {
                "Transformer" => transformer = dir,
                "Pooling" => pooling_dir = Some(dir),
                "Dense" => dense_dirs.push(dir),
                "MultiVectorMask" => mask_dir = Some(dir),
                _ => normalize = true,
            }
        }
        let config_path = transformer.join("config.json");
        if !config_path.is_file() {
            return Err(TextError::file(
                &config_path,
                "missing: a model directory needs config.json, tokenizer.json and model.safetensors",
                "point --model at a Hugging Face model directory saved with save_pretrained",
            ));
        }
        let config_text = std::fs::read_to_string(&config_path).map_err(|e| {
            TextError::file(
                &config_path,
                format!("cannot read ({e})"),
                "check its permissions",
            )
        })?;
        let config = HfConfig::parse(&config_text).map_err(|e| TextError::nn(&config_path, e))?;
        let tokenizer = transformer.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(TextError::file(
                &tokenizer,
                "missing: tandem reads the fast tokenizer's tokenizer.json",
                "write it once: python -c \"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('DIR').save_pretrained('DIR')\"",
            ));
        }
        let weights = weights_file(&transformer)?;

        let st_config = read_json_opt(&transformer.join("sentence_bert_config.json"))?;
        let max_seq_length = st_config
            .as_ref()
            .and_then(|v| v.get("max_seq_length"))
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let lower_case = st_config
            .as_ref()
            .and_then(|v| v.get("do_lower_case"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut prompts = BTreeMap::new();
        let mut default_prompt_name = None;
        let mut similarity = None;
        let mut colbert = None;
        let st_path = path.join("config_sentence_transformers.json");
        let st_json = read_json_opt(&st_path)?;
        if let Some(v) = &st_json {
            if mask_dir.is_none() {
                colbert = ColbertConfig::read(v, &st_path)?;
            }
            if let Some(map) = v.get("prompts").and_then(Value::as_object) {
                for (k, p) in map {
                    if let Some(p) = p.as_str() {
                        prompts.insert(k.clone(), p.to_string());
                    }
                }
            }
            default_prompt_name = v
                .get("default_prompt_name")
                .and_then(Value::as_str)
                .map(str::to_string);
            similarity = v
                .get("similarity_fn_name")
                .and_then(Value::as_str)
                .map(str::to_string);
        }

        let tok_config = read_json_opt(&transformer.join("tokenizer_config.json"))?;
        let special = |k: &str| {
            let v = tok_config.as_ref()?.get(k)?;
            v.as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))
                .map(str::to_string)
        };
        let (mask_token, unk_token) = (special("mask_token"), special("unk_token"));
        if let Some(dir) = &mask_dir {
            colbert = Some(read_multi_vector(
                dir,
                &modules_path,
                st_json.as_ref().map(|v| (v, st_path.as_path())),
                st_config
                    .as_ref()
                    .map(|v| (v, transformer.join("sentence_bert_config.json"))),
                MultiVectorShape {
                    pooling: pooling_dir.is_some(),
                    normalize,
                    model_max: max_seq_length.unwrap_or_else(|| {
                        let positions = config
                            .opt_usize("max_position_embeddings")
                            .ok()
                            .flatten()
                            .unwrap_or(512);
                        tok_config
                            .as_ref()
                            .and_then(|v| v.get("model_max_length"))
                            .and_then(Value::as_u64)
                            .map_or(positions, |m| positions.min(m as usize))
                    }),
                },
            )?);
        } else if st_json
            .as_ref()
            .and_then(|v| v.get("model_type"))
            .and_then(Value::as_str)
            == Some("MultiVectorEncoder")
        {
            return Err(TextError::file(
                &modules_path,
                "a MultiVectorEncoder (config_sentence_transformers.json) without a MultiVectorMask module: nothing says which tokens are scored",
                "restore modules.json as sentence-transformers 6 saved it (Transformer, Dense, MultiVectorMask, Normalize)",
            ));
        }
        let pooling = match &pooling_dir {
            Some(dir) => {
                let p = dir.join("config.json");
                Pooling::from_config(&read_json(&p)?, &p)?
            }
            // sentence-transformers pools a plain transformer by the mean
            None => Pooling::mean(),
        };
        let mut dense = Vec::new();
        for dir in &dense_dirs {
            dense.push(read_dense(dir)?);
        }

        let mut files: Vec<PathBuf> = vec![config_path, tokenizer.clone()];
        for p in [
            modules_path,
            path.join("router_config.json"),
            transformer.join("sentence_bert_config.json"),
            st_path,
        ] {
            if p.is_file() {
                files.push(p);
            }
        }
        // a ColBERT's expansion token is named there
        let tok_config_path = transformer.join("tokenizer_config.json");
        if colbert.is_some() && tok_config_path.is_file() {
            files.push(tok_config_path);
        }
        for dir in pooling_dir.iter().chain(&mask_dir) {
            files.push(dir.join("config.json"));
        }
        for dir in &dense_dirs {
            files.push(dir.join("config.json"));
            files.push(dir.join("model.safetensors"));
        }
        let files_sha256 = fingerprint(&files)?;
        Ok(ModelDir {
            path: path.to_path_buf(),
            transformer,
            config,
            tokenizer,
            weights,
            pooling,
            dense,
            normalize,
            max_seq_length,
            lower_case,
            prompts,
            default_prompt_name,
            similarity,
            tower: routed.then_some(tower).flatten(),
            colbert,
            mask_token,
            unk_token,
            files_sha256,
        })
    }
}

/// What [`read_multi_vector`] checks of the other modules.
struct MultiVectorShape {
    pooling: bool,
    normalize: bool,
    model_max: usize,
}

/// The ColBERT settings of a sentence-transformers v6 `MultiVectorEncoder`
/// whose `MultiVectorMask` module is in `dir`.
fn read_multi_vector(
    dir: &Path,
    modules_path: &Path,
    st: Option<(&Value, &Path)>,
    transformer: Option<(&Value, PathBuf)>,
    shape: MultiVectorShape,
) -> Result<ColbertConfig, TextError> {
    if shape.pooling {
        return Err(TextError::file(
            modules_path,
            "a Pooling module beside a MultiVectorMask: a multi-vector model keeps one vector per token",
            "remove the Pooling module from modules.json (or the MultiVectorMask, for a dense model)",
        ));
    }
    if !shape.normalize {
        return Err(TextError::file(
            modules_path,
            "no Normalize module after the MultiVectorMask: tandem's ColBERT L2-normalises every token vector",
            "add sentence-transformers' Normalize(module_input_name=\"token_embeddings\") after the Dense, as MultiVectorEncoder does by default",
        ));
    }
    let mask_path = dir.join("config.json");
    let mask = read_json(&mask_path)?;
    ColbertConfig::read_st6(St6Files {
        st,
        transformer: transformer.as_ref().map(|(v, p)| (*v, p.as_path())),
        mask: (&mask, &mask_path),
        model_max: shape.model_max,
    })
}

impl ModelDir {
    /// The model's fingerprint: SHA-256 over [`ModelDir::files_sha256`] and
    /// the bytes of `model.safetensors`, hex.
    pub fn fingerprint(&self, weights: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.files_sha256.as_bytes());
        h.update(Sha256::digest(weights));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A `Dense` module folder: `config.json` (`in_features`, `out_features`,
/// `bias`, `activation_function`) and `model.safetensors` (`linear.weight`,
/// `linear.bias`).
fn read_dense(dir: &Path) -> Result<DenseModule, TextError> {
    let cp = dir.join("config.json");
    let c = read_json(&cp)?;
    let get = |k: &str| {
        c.get(k)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| {
                TextError::file(
                    &cp,
                    format!("no integer {k:?}"),
                    "restore the file from the model's source",
                )
            })
    };
    let (inp, out) = (get("in_features")?, get("out_features")?);
    if c.get("use_residual").and_then(Value::as_bool) == Some(true) {
        return Err(TextError::file(
            &cp,
            "use_residual true (PyLate's residual Dense) is not supported yet",
            "use a model whose Dense modules have use_residual false",
        ));
    }
    let bias = c.get("bias").and_then(Value::as_bool).unwrap_or(true);
    let act_name = c
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("torch.nn.modules.activation.Tanh");
    let activation = Activation::parse_hf(act_name).ok_or_else(|| {
        TextError::file(
            &cp,
            format!("activation_function {act_name:?} is not supported"),
            "use Tanh, Identity, ReLU, GELU or SiLU",
        )
    })?;
    let wp = weights_file(dir)?;
    let mut t = tandem_nn::encoder::Tensors::read(&wp).map_err(|e| TextError::nn(&cp, e))?;
    let w = t
        .take("linear.weight", &[out, inp])
        .map_err(|e| TextError::nn(&cp, e))?;
    let b = if bias {
        Some(
            t.take("linear.bias", &[out])
                .map_err(|e| TextError::nn(&cp, e))?,
        )
    } else {
        None
    };
    Ok(DenseModule {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        weight: w,
        bias: b,
        inp,
        out,
        activation,
        activation_name: act_name.to_string(),
    })
}

/// SHA-256 over the names and bytes of `files`, hex.
fn fingerprint(files: &[PathBuf]) -> Result<String, TextError> {
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| {
            TextError::file(f, format!("cannot read ({e})"), "check its permissions")
        })?;
        h.update(
            f.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
