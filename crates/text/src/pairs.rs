//! Training data for text dual encoders: every supported input read into
//! the same [`Example`]s (a query, its positive texts, optional hard
//! negatives and teacher scores), and the raw [`Document`]s that
//! `tandem data pairs` makes pairs from.
//!
//! Formats ([`PairFormat`]; docs/training-data.md has an example of each):
//!
//! * **BEIR** folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`;
//!   one example per qrels pair with a score > 0 (as sentence-transformers
//!   trains on SciFact's pairs), the document text `title + " " + text`.
//! * **JSONL**: `query` (or `anchor`), `positive`, optional `negative` (a
//!   string or a list of them) and `negative_1`, `negative_2`, ...
//! * **Tevatron**: `query`, `positive_passages`, `negative_passages`, lists
//!   of `{"title", "text"}` (`title` optional).
//! * **FlagEmbedding**: `query`, `pos`, `neg` (lists), optional
//!   `pos_scores` / `neg_scores`; its `prompt` field is ignored.
//! * **MS MARCO** triples: `query \t positive \t negative` per line (text,
//!   not ids).
//!
//! In the JSON formats a query given as a list of strings (ReasonIR's
//! `[instruction, query]`) is one text, the strings joined with a space, and
//! so is a single positive or negative given as a list (`[instruction,
//! document]`: the instruction is kept). Texts are never ids to look up.
//! Other fields are ignored. Every text is trimmed and must be non-empty.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;
use tandem_eval::{EvalError, Qrels};

use crate::corpus::{
    for_each_json_line, join_title, line_error, read_bytes, split_lines, starts_json,
    string_or_number, utf8_line,
};
use crate::{Corpus, Ids, TextError};

/// One training example: a query, the texts relevant to it and optional
/// hard negatives, each list with optional teacher scores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Example {
    /// The query text.
    pub query: String,
    /// Its relevant texts (at least one).
    pub positives: Vec<String>,
    /// Hard negatives (may be empty).
    pub negatives: Vec<String>,
    /// One teacher score per positive, or empty when the data has none.
    pub pos_scores: Vec<f32>,
    /// One teacher score per negative, or empty when the data has none.
    pub neg_scores: Vec<f32>,
}

/// The layout of a training-data input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFormat {
    /// Detect: a folder with `corpus.jsonl` is BEIR, a `.tsv` file MS
    /// MARCO triples, JSON lines by the keys of their first line
    /// (`positive_passages`: Tevatron, `pos`: FlagEmbedding, `positive` or
    /// `anchor`: JSONL).
    Auto,
    /// A BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
    Beir,
    /// JSON lines `{"query"|"anchor", "positive", "negative"?}`.
    Jsonl,
    /// Tevatron JSON lines `{"query", "positive_passages", "negative_passages"}`.
    Tevatron,
    /// FlagEmbedding JSON lines `{"query", "pos", "neg", "pos_scores"?, "neg_scores"?}`.
    FlagEmbedding,
    /// MS MARCO text triples: `query \t positive \t negative` per line.
    MsMarco,
}

impl PairFormat {
    /// The accepted names, as a flag's help shows them.
    pub const NAMES: &'static str = "auto|beir|jsonl|tevatron|flag|msmarco";

    /// The name [`PairFormat::from_str`] reads.
    pub fn name(self) -> &'static str {
        match self {
            PairFormat::Auto => "auto",
            PairFormat::Beir => "beir",
            PairFormat::Jsonl => "jsonl",
            PairFormat::Tevatron => "tevatron",
            PairFormat::FlagEmbedding => "flag",
            PairFormat::MsMarco => "msmarco",
        }
    }
}

impl fmt::Display for PairFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PairFormat {
    type Err = String;

    /// Parses `auto`, `beir`, `jsonl`, `tevatron`, `flag` (also
    /// `flagembedding`) or `msmarco`, in any case.
    fn from_str(s: &str) -> Result<PairFormat, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => PairFormat::Auto,
            "beir" => PairFormat::Beir,
            "jsonl" => PairFormat::Jsonl,
            "tevatron" => PairFormat::Tevatron,
            "flag" | "flagembedding" => PairFormat::FlagEmbedding,
            "msmarco" => PairFormat::MsMarco,
            _ => {
                return Err(format!(
                    "unknown training-data format {s:?}; use one of {}",
                    PairFormat::NAMES
                ))
            }
        })
    }
}

/// The examples of one input, in input order (for BEIR: by query id, then
/// document id, in byte order).
#[derive(Debug, Clone, PartialEq)]
pub struct Examples {
    /// The examples (at least one).
    pub examples: Vec<Example>,
    /// The format they were read as (never [`PairFormat::Auto`]).
    pub format: PairFormat,
}

impl Examples {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there is no example (never, for what [`read_examples`] returns).
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Every positive text of each query text, over all examples: a query
    /// split over several examples (as BEIR's one example per pair does)
    /// has all its positives here, so that in-batch negatives can mask them.
    pub fn positives_by_query(&self) -> HashMap<&str, HashSet<&str>> {
        let mut out: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in &self.examples {
            out.entry(e.query.as_str())
                .or_default()
                .extend(e.positives.iter().map(String::as_str));
        }
        out
    }
}

/// Reads the training examples of `path` in `format` (`Auto` detects it).
/// `split` names the qrels file of a BEIR folder (`qrels/<split>.tsv`) and is
/// unused by the other formats. Bad data (invalid UTF-8 or JSON, a missing
/// field, an empty text, score lists of the wrong length, a qrels id absent
/// from the corpus or the queries, no example at all) is one error naming the
/// file, the line and the fix.
pub fn read_examples(path: &Path, format: PairFormat, split: &str) -> Result<Examples, TextError> {
    let (examples, format) = if path.is_dir() {
        match format {
            PairFormat::Auto | PairFormat::Beir => (read_beir(path, split)?, PairFormat::Beir),
            other => return Err(TextError::file(
                path,
                format!("is a folder, but the format is {other}"),
                "give the file of the examples, or pass --format beir (or auto) for a BEIR folder",
            )),
        }
    } else {
        match format {
            PairFormat::Beir => {
                return Err(TextError::file(
                    path,
                    "is not a folder; a BEIR dataset is a folder with corpus.jsonl, queries.jsonl and qrels/",
                    "give the BEIR folder, or pass the format of this file (--format auto detects it)",
                ))
            }
            PairFormat::MsMarco => (read_msmarco(path)?, PairFormat::MsMarco),
            PairFormat::Auto if path.extension().is_some_and(|e| e == "tsv") => {
                (read_msmarco(path)?, PairFormat::MsMarco)
            }
            json => read_json(path, json)?,
        }
    };
    if examples.is_empty() {
        return Err(TextError::file(
            path,
            "holds no training example",
            "check that the right file (and --split) was given",
        ));
    }
    Ok(Examples { examples, format })
}

/// A qrels error about `path` as a [`TextError`].
fn qrels_error(path: &Path, e: EvalError) -> TextError {
    match e {
        EvalError::Parse { line, message, .. } => TextError::file(
            path,
            format!("line {line}: {message}"),
            "fix or remove that line",
        ),
        EvalError::Empty { .. } => TextError::file(
            path,
            "holds no judgments",
            "check that the right split was given (--split)",
        ),
        other => TextError::file(path, other.to_string(), "check the qrels file"),
    }
}

/// The 1-based line of `qrels` judging `qid` (and `docid` when given), for
/// an error message; 0 when none does.
fn qrels_line(qrels: &Path, qid: &str, docid: Option<&str>) -> usize {
    let text = std::fs::read_to_string(qrels).unwrap_or_default();
    text.lines()
        .position(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == qid && docid.is_none_or(|d| f[f.len() - 2] == d)
        })
        .map_or(0, |i| i + 1)
}

/// One example per positive (score > 0) qrels pair of a BEIR folder.
fn read_beir(dir: &Path, split: &str) -> Result<Vec<Example>, TextError> {
    let corpus_path = dir.join("corpus.jsonl");
    let queries_path = dir.join("queries.jsonl");
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    for p in [&corpus_path, &queries_path, &qrels_path] {
        if !p.is_file() {
            return Err(TextError::file(
                p,
                "missing",
                "a BEIR folder has corpus.jsonl, queries.jsonl and qrels/<split>.tsv; check the folder and --split",
            ));
        }
    }
    let qrels = Qrels::read(&qrels_path).map_err(|e| qrels_error(&qrels_path, e))?;
    let index = |path: &Path| -> Result<HashMap<String, String>, TextError> {
        let (c, _) = Corpus::read_with(path, "text", Ids::Given("_id"))?;
        Ok(c.ids.into_iter().zip(c.texts).collect())
    };
    let queries = index(&queries_path)?;
    let corpus = index(&corpus_path)?;
    let missing = |what: &str, id: &str, file: &Path, line: usize| {
        TextError::file(
            &qrels_path,
            format!(
                "line {line}: {what} {id:?} is not in {}",
                file.display()
            ),
            "use the qrels, queries.jsonl and corpus.jsonl of the same dataset, or remove that line",
        )
    };
    let mut examples = Vec::new();
    for qid in qrels.query_ids() {
        let mut docs: Vec<(&str, i64)> = qrels
            .judgments(qid)
            .into_iter()
            .flatten()
            .filter(|(_, &g)| g > 0)
            .map(|(d, &g)| (&**d, g))
            .collect();
        if docs.is_empty() {
            continue;
        }
        docs.sort_unstable();
        let query = queries.get(qid).ok_or_else(|| {
            missing(
                "query id",
                qid,
                &queries_path,
                qrels_line(&qrels_path, qid, None),
            )
        })?;
        for (docid, _) in docs {
            let doc = corpus.get(docid).ok_or_else(|| {
                missing(
                    "document id",
                    docid,
                    &corpus_path,
                    qrels_line(&qrels_path, qid, Some(docid)),
                )
            })?;
            for (text, file, id) in [(query, &queries_path, qid), (doc, &corpus_path, docid)] {
                if text.is_empty() {
                    return Err(TextError::file(
                        file,
                        format!("the text of {id:?} is empty"),
                        "give it a text or remove its judgments from the qrels",
                    ));
                }
            }
            examples.push(Example {
                query: query.clone(),
                positives: vec![doc.clone()],
                ..Example::default()
            });
        }
    }
    Ok(examples)
}

/// MS MARCO text triples (or pairs): `query \t positive [\t negative]`.
fn read_msmarco(path: &Path) -> Result<Vec<Example>, TextError> {
    let bytes = read_bytes(path)?;
    let mut examples = Vec::new();
    for (i, raw) in split_lines(&bytes).iter().enumerate() {
        let line = utf8_line(path, i, raw)?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if fields.len() != 2 && fields.len() != 3 {
            return Err(line_error(
                path,
                i,
                format!("{} tab-separated fields", fields.len()),
                "an MS MARCO triple is `query<TAB>positive<TAB>negative` (or a pair without the negative); fix that line",
            ));
        }
        if fields.iter().all(|f| f.bytes().all(|b| b.is_ascii_digit())) {
            return Err(line_error(
                path,
                i,
                "holds ids, not texts (qidpidtriples?)".to_string(),
                "use the text triples (triples.train.small.tsv), or a BEIR folder for ids",
            ));
        }
        for (f, what) in fields.iter().zip(["query", "positive", "negative"]) {
            if f.is_empty() {
                return Err(line_error(
                    path,
                    i,
                    format!("the {what} is empty"),
                    "give it a text or remove that line",
                ));
            }
        }
        examples.push(Example {
            query: fields[0].to_string(),
            positives: vec![fields[1].to_string()],
            negatives: fields[2..].iter().map(|s| s.to_string()).collect(),
            ..Example::default()
        });
    }
    Ok(examples)
}

/// The name of a JSON value's type, for errors.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A text: a string, or a list of strings joined with a space (ReasonIR's
/// `[instruction, text]`), trimmed; `None` for anything else.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Array(parts) => {
            let parts: Option<Vec<&str>> =
                parts.iter().map(|p| p.as_str().map(str::trim)).collect();
            let parts = parts?;
            Some(
                parts
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
        _ => None,
    }
}

/// Reads the fields of one JSON line, each error naming the line and the
/// format's layout.
struct Line<'a> {
    path: &'a Path,
    i: usize,
    v: &'a Value,
    format: PairFormat,
}

impl<'a> Line<'a> {
    fn error(&self, problem: String) -> TextError {
        let layout = match self.format {
            PairFormat::Tevatron => {
                r#"a Tevatron line is {"query": "...", "positive_passages": [{"title": "...", "text": "..."}], "negative_passages": [...]}"#
            }
            PairFormat::FlagEmbedding => {
                r#"a FlagEmbedding line is {"query": "...", "pos": ["..."], "neg": ["..."], "pos_scores": [1.0], "neg_scores": [0.0]}"#
            }
            _ => r#"a JSONL line is {"query": "...", "positive": "...", "negative": "..."}"#,
        };
        line_error(
            self.path,
            self.i,
            problem,
            &format!("{layout} (see docs/training-data.md); fix that line, or check --format"),
        )
    }

    /// A non-empty text at `v`, named `name` in errors.
    fn text(&self, v: &Value, name: &str) -> Result<String, TextError> {
        match text_of(v) {
            None => Err(self.error(format!(
                "{name} is {}, not a string or a list of strings",
                kind(v)
            ))),
            Some(t) if t.is_empty() => Err(self.error(format!("{name} is empty"))),
            Some(t) => Ok(t),
        }
    }

    /// The first of `keys` the line has.
    fn field<'k>(&self, keys: &[&'k str]) -> Result<(&'k str, &'a Value), TextError> {
        keys.iter()
            .find_map(|&k| self.v.get(k).map(|v| (k, v)))
            .ok_or_else(|| {
                let names: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
                self.error(format!("no field {}", names.join(" or ")))
            })
    }

    /// The list at `key` (`None` when absent and not `required`).
    fn list(&self, key: &str, required: bool) -> Result<Option<&Vec<Value>>, TextError> {
        match self.v.get(key) {
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(self.error(format!("no field {key:?}"))),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.error(format!("field {key:?} is {}, not a list", kind(other)))),
        }
    }

    /// The texts of the list at `key`, each a string or a list of strings;
    /// a required list must not be empty.
    fn texts(&self, key: &str, required: bool) -> Result<Vec<String>, TextError> {
        let items = self.list(key, required)?.map_or(&[][..], Vec::as_slice);
        if required && items.is_empty() {
            return Err(self.error(format!("field {key:?} is an empty list")));
        }
        items
            .iter()
            .enumerate()
            .map(|(j, v)| self.text(v, &format!("{key}[{j}]")))
            .collect()
    }

    /// The passages of a Tevatron list: `title + " " + text` of each.
    fn passages(&self, key: &str, required: bool) -> Result<Vec<String>, TextError> {
        let items = self.list(key, required)?.map_or(&[][..], Vec::as_slice);
        if required && items.is_empty() {
            return Err(self.error(format!("field {key:?} is an empty list")));
        }
        items
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let name = format!("{key}[{j}]");
                let text = p.get("text").ok_or_else(|| {
                    self.error(format!("{name} has no field \"text\" (it is {})", kind(p)))
                })?;
                let text = self.text(text, &format!("{name}.text"))?;
                let title = match p.get("title") {
                    None | Some(Value::Null) => String::new(),
                    Some(t) => text_of(t).ok_or_else(|| {
                        self.error(format!("{name}.title is {}, not a string", kind(t)))
                    })?,
                };
                Ok(join_title(&title, &text))
            })
            .collect()
    }

    /// The scores at `key`, one per text of `of` (`n` of them), or empty
    /// when absent.
    fn scores(&self, key: &str, of: &str, n: usize) -> Result<Vec<f32>, TextError> {
        let Some(items) = self.list(key, false)? else {
            return Ok(Vec::new());
        };
        if items.len() != n {
            return Err(self.error(format!(
                "field {key:?} has {} scores but {of:?} has {n} texts; give one score per text",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(j, s)| match s.as_f64() {
                Some(x) if x.is_finite() => Ok(x as f32),
                _ => Err(self.error(format!("{key}[{j}] is {}, not a finite number", kind(s)))),
            })
            .collect()
    }

    /// The negatives of a JSONL line: `negative` (a string, or a list of
    /// them) then `negative_1`, `negative_2`, ... in number order.
    fn jsonl_negatives(&self) -> Result<Vec<String>, TextError> {
        let mut out = match self.v.get("negative") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(_)) => self.texts("negative", false)?,
            Some(v) => vec![self.text(v, "negative")?],
        };
        let mut numbered: Vec<(u64, &str)> = self
            .v
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter_map(|k| Some((k.strip_prefix("negative_")?.parse().ok()?, k.as_str())))
            .collect();
        numbered.sort_unstable();
        for (_, k) in numbered {
            out.push(self.text(&self.v[k], k)?);
        }
        Ok(out)
    }

    fn example(&self) -> Result<Example, TextError> {
        let query_keys: &[&str] = match self.format {
            PairFormat::Jsonl => &["query", "anchor"],
            _ => &["query"],
        };
        let (qk, q) = self.field(query_keys)?;
        let query = self.text(q, qk)?;
        Ok(match self.format {
            PairFormat::Tevatron => Example {
                query,
                positives: self.passages("positive_passages", true)?,
                negatives: self.passages("negative_passages", false)?,
                ..Example::default()
            },
            PairFormat::FlagEmbedding => {
                let positives = self.texts("pos", true)?;
                let negatives = self.texts("neg", false)?;
                Example {
                    query,
                    pos_scores: self.scores("pos_scores", "pos", positives.len())?,
                    neg_scores: self.scores("neg_scores", "neg", negatives.len())?,
                    positives,
                    negatives,
                }
            }
            _ => {
                let (pk, p) = self.field(&["positive"])?;
                Example {
                    query,
                    positives: vec![self.text(p, pk)?],
                    negatives: self.jsonl_negatives()?,
                    ..Example::default()
                }
            }
        })
    }
}

/// The JSON format of a line, by its keys.
fn detect(v: &Value) -> Option<PairFormat> {
    let has = |k: &str| v.get(k).is_some();
    if has("positive_passages") {
        Some(PairFormat::Tevatron)
    } else if has("pos") {
        Some(PairFormat::FlagEmbedding)
    } else if has("positive") || has("anchor") {
        Some(PairFormat::Jsonl)
    } else {
        None
    }
}

/// The examples of a JSON lines file in `format` (`Auto`: detected from the
/// first line) and the format read.
fn read_json(path: &Path, format: PairFormat) -> Result<(Vec<Example>, PairFormat), TextError> {
    let bytes = read_bytes(path)?;
    let lines = split_lines(&bytes);
    if !lines.iter().all(|l| l.trim_ascii().is_empty()) && !starts_json(&lines) {
        return Err(TextError::file(
            path,
            "is not JSON lines (its first line does not start with `{`)",
            "give one JSON object per line (a .json array: convert it to JSON lines), MS MARCO triples as a .tsv file, or a BEIR folder",
        ));
    }
    let mut format = (format != PairFormat::Auto).then_some(format);
    let mut examples = Vec::new();
    for_each_json_line(path, &lines, |i, v| {
        let f = match format {
            Some(f) => f,
            None => *format.insert(detect(&v).ok_or_else(|| {
                line_error(
                    path,
                    i,
                    "cannot tell the format from the keys of the first line".to_string(),
                    "give \"positive_passages\" (Tevatron), \"pos\" (FlagEmbedding) or \"positive\" (JSONL) fields, or pass --format (see docs/training-data.md)",
                )
            })?),
        };
        examples.push(
            Line {
                path,
                i,
                v: &v,
                format: f,
            }
            .example()?,
        );
        Ok(())
    })?;
    Ok((examples, format.unwrap_or(PairFormat::Jsonl)))
}

/// A raw document to make training pairs from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `_id`, `id` or `doc_id` of its JSON line, else its line number (from 0).
    pub id: String,
    /// Its title, trimmed; empty when it has none.
    pub title: String,
    /// Its body, trimmed (without the title).
    pub text: String,
    /// Its line in the file (from 1).
    pub line: usize,
}

/// Reads raw documents: JSON lines with the body in `field` and the title in
/// `title_field` (optional on a line), or plain lines (one document each,
/// blank lines skipped, no titles). Invalid UTF-8 or JSON, or a line without
/// a string `field`, is an error naming the line.
pub fn read_documents(
    path: &Path,
    field: &str,
    title_field: &str,
) -> Result<Vec<Document>, TextError> {
    let bytes = read_bytes(path)?;
    let lines = split_lines(&bytes);
    let mut docs = Vec::new();
    if !starts_json(&lines) {
        for (i, raw) in lines.iter().enumerate() {
            let text = utf8_line(path, i, raw)?.trim();
            if !text.is_empty() {
                docs.push(Document {
                    id: i.to_string(),
                    title: String::new(),
                    text: text.to_string(),
                    line: i + 1,
                });
            }
        }
        return Ok(docs);
    }
    for_each_json_line(path, &lines, |i, v| {
        let text = v.get(field).and_then(Value::as_str).ok_or_else(|| {
            line_error(
                path,
                i,
                format!("no string field {field:?}"),
                "pass --field with the name of the text field",
            )
        })?;
        let title = match v.get(title_field) {
            None | Some(Value::Null) => "",
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(line_error(
                    path,
                    i,
                    format!("field {title_field:?} is {}, not a string", kind(other)),
                    "pass --title-field with the name of the title field",
                ))
            }
        };
        docs.push(Document {
            id: ["_id", "id", "doc_id"]
                .iter()
                .find_map(|f| string_or_number(&v, f))
                .unwrap_or_else(|| i.to_string()),
            title: title.trim().to_string(),
            text: text.trim().to_string(),
            line: i + 1,
        });
        Ok(())
    })?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (relative path, content) under a fresh folder.
    fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        dir
    }

    /// Reads one file named `name` holding `content`.
    fn read(name: &str, content: &str, format: PairFormat) -> Result<Examples, TextError> {
        let dir = folder(&[(name, content.as_bytes())]);
        read_examples(&dir.path().join(name), format, "train")
    }

    fn pair(q: &str, p: &str) -> Example {
        Example {
            query: q.into(),
            positives: vec![p.into()],
            ..Example::default()
        }
    }

    fn err(r: Result<Examples, TextError>) -> String {
        r.unwrap_err().to_string()
    }

    const CORPUS: &str = concat!(
        r#"{"_id": "d1", "title": "T1", "text": "one"}"#,
        "\n",
        r#"{"_id": "d2", "title": "", "text": "two"}"#,
        "\n",
        r#"{"_id": "d3", "text": "three"}"#,
        "\n"
    );
    const QUERIES: &str = concat!(
        r#"{"_id": "q1", "text": "first"}"#,
        "\n",
        r#"{"_id": "q2", "text": "second"}"#,
        "\n",
        r#"{"_id": "q3", "text": "unjudged"}"#,
        "\n"
    );

    #[test]
    fn beir_gives_one_example_per_positive_pair() {
        let dir = folder(&[
            ("corpus.jsonl", CORPUS.as_bytes()),
            ("queries.jsonl", QUERIES.as_bytes()),
            (
                "qrels/train.tsv",
                b"query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td2\t2\nq1\td1\t1\nq1\td3\t0\n",
            ),
            ("qrels/dev.tsv", b"q2\td1\t1\n"),
        ]);
        for format in [PairFormat::Auto, PairFormat::Beir] {
            let ex = read_examples(dir.path(), format, "train").unwrap();
            assert_eq!(ex.format, PairFormat::Beir);
            assert_eq!(
                ex.examples,
                vec![
                    pair("first", "T1 one"),
                    pair("first", "two"),
                    pair("second", "three")
                ]
            );
            let by_query = ex.positives_by_query();
            assert_eq!(by_query["first"], HashSet::from(["T1 one", "two"]));
            assert_eq!(by_query["second"], HashSet::from(["three"]));
        }
        // headerless qrels of another split
        let ex = read_examples(dir.path(), PairFormat::Auto, "dev").unwrap();
        assert_eq!(ex.examples, vec![pair("second", "T1 one")]);
    }

    #[test]
    fn beir_errors_name_the_file_line_and_fix() {
        let beir = |qrels: &[u8], corpus: &[u8]| {
            let dir = folder(&[
                ("corpus.jsonl", corpus),
                ("queries.jsonl", QUERIES.as_bytes()),
                ("qrels/train.tsv", qrels),
            ]);
            err(read_examples(dir.path(), PairFormat::Beir, "train"))
        };
        let e = beir(
            b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n",
            CORPUS.as_bytes(),
        );
        assert!(
            e.contains("train.tsv: line 3: document id \"d9\" is not in")
                && e.contains("corpus.jsonl")
                && e.contains("fix: use the qrels"),
            "{e}"
        );
        let e = beir(b"q1\td1\t1\nq7\td1\t1\n", CORPUS.as_bytes());
        assert!(
            e.contains("train.tsv: line 2: query id \"q7\" is not in")
                && e.contains("queries.jsonl"),
            "{e}"
        );
        let e = beir(b"q1\td1\tx\tz\n", CORPUS.as_bytes());
        assert!(e.contains("train.tsv: line 1:"), "{e}");
        let e = beir(b"\n", CORPUS.as_bytes());
        assert!(
            e.contains("holds no judgments") && e.contains("--split"),
            "{e}"
        );
        let e = beir(b"q1\td1\t0\n", CORPUS.as_bytes());
        assert!(e.contains("holds no training example"), "{e}");
        let e = beir(
            b"q1\td1\t1\n",
            br#"{"_id": "d1", "title": "", "text": " "}"#,
        );
        assert!(
            e.contains("corpus.jsonl: the text of \"d1\" is empty"),
            "{e}"
        );
        let e = beir(
            b"q1\td1\t1\n",
            b"{\"_id\": \"d1\", \"text\": \"a\"}\n{\"text\": \"b\"}\n",
        );
        assert!(
            e.contains("corpus.jsonl: line 2: no string or number field \"_id\""),
            "{e}"
        );
        let e = beir(b"q1\td1\t1\n", b"{\"_id\": \"d1\", \"text\": \"\xff\"}\n");
        assert!(e.contains("corpus.jsonl: line 1: not valid UTF-8"), "{e}");
        let dir = folder(&[("corpus.jsonl", CORPUS.as_bytes())]);
        let e = err(read_examples(dir.path(), PairFormat::Auto, "train"));
        assert!(e.contains("queries.jsonl: missing"), "{e}");
        let e = err(read_examples(dir.path(), PairFormat::Jsonl, "train"));
        assert!(
            e.contains("is a folder") && e.contains("--format beir"),
            "{e}"
        );
        let e = err(read("x.jsonl", "{}", PairFormat::Beir));
        assert!(e.contains("is not a folder"), "{e}");
    }

    #[test]
    fn jsonl_with_query_or_anchor_and_negatives() {
        let text = concat!(
            r#"{"query": " q1 ", "positive": "p1", "negative": "n1"}"#,
            "\n\n",
            r#"{"anchor": "q2", "positive": "p2", "negative": ["n2", "n3"], "id": 7}"#,
            "\n",
            r#"{"anchor": "q3", "positive": "p3", "negative_2": "m2", "negative_1": "m1"}"#,
            "\n",
            r#"{"query": "q4", "positive": "p4", "negative": null}"#,
            "\n",
        );
        for format in [PairFormat::Auto, PairFormat::Jsonl] {
            let ex = read("train.jsonl", text, format).unwrap();
            assert_eq!(ex.format, PairFormat::Jsonl);
            let negs: Vec<_> = ex.examples.iter().map(|e| e.negatives.clone()).collect();
            assert_eq!(
                negs,
                vec![vec!["n1"], vec!["n2", "n3"], vec!["m1", "m2"], vec![]]
            );
            assert_eq!(ex.examples[0].query, "q1");
            assert_eq!(ex.examples[1].query, "q2");
            assert_eq!(ex.examples[2].positives, vec!["p3"]);
        }
    }

    #[test]
    fn tevatron_joins_titles() {
        let text = concat!(
            r#"{"query_id": "1", "query": "q", "positive_passages": [{"docid": "a", "title": "T", "text": "body"}, {"docid": "b", "title": "", "text": "x"}], "negative_passages": [{"text": "neg"}]}"#,
            "\n",
            r#"{"query": "r", "positive_passages": [{"text": "y", "title": null}]}"#,
            "\n",
        );
        let ex = read("t.jsonl", text, PairFormat::Auto).unwrap();
        assert_eq!(ex.format, PairFormat::Tevatron);
        assert_eq!(ex.examples[0].positives, vec!["T body", "x"]);
        assert_eq!(ex.examples[0].negatives, vec!["neg"]);
        assert_eq!(ex.examples[1], pair("r", "y"));
    }

    #[test]
    fn flag_embedding_with_scores_and_prompt() {
        let text = concat!(
            r#"{"query": "q", "pos": ["p1", "p2"], "neg": ["n1"], "pos_scores": [1, 0.5], "neg_scores": [0.1], "prompt": "Represent: "}"#,
            "\n",
            r#"{"query": "r", "pos": ["p"]}"#,
            "\n",
        );
        let ex = read("f.jsonl", text, PairFormat::Auto).unwrap();
        assert_eq!(ex.format, PairFormat::FlagEmbedding);
        assert_eq!(
            ex.examples[0],
            Example {
                query: "q".into(),
                positives: vec!["p1".into(), "p2".into()],
                negatives: vec!["n1".into()],
                pos_scores: vec![1.0, 0.5],
                neg_scores: vec![0.1],
            }
        );
        assert_eq!(ex.examples[1], pair("r", "p"));
        let e = err(read(
            "f.jsonl",
            "{\"query\": \"q\", \"pos\": [\"a\"]}\n{\"query\": \"q\", \"pos\": [\"a\", \"b\"], \"pos_scores\": [1]}\n",
            PairFormat::Auto,
        ));
        assert!(
            e.contains("line 2: field \"pos_scores\" has 1 scores but \"pos\" has 2 texts"),
            "{e}"
        );
        let e = err(read(
            "f.jsonl",
            r#"{"query": "q", "pos": ["a"], "neg": ["b"], "neg_scores": ["high"]}"#,
            PairFormat::FlagEmbedding,
        ));
        assert!(
            e.contains("line 1: neg_scores[0] is a string, not a finite number"),
            "{e}"
        );
    }

    #[test]
    fn reasonir_lists_are_joined_and_negatives_are_texts() {
        let text = concat!(
            r#"{"query": ["Given a post, retrieve documents.", "Why is the sky blue?"], "pos": [["Represent the document:", "Rayleigh scattering."]], "neg": ["12345", ["Represent the document:", "Clouds."]]}"#,
            "\n"
        );
        let ex = read("r.jsonl", text, PairFormat::Auto).unwrap();
        let e = &ex.examples[0];
        assert_eq!(
            e.query,
            "Given a post, retrieve documents. Why is the sky blue?"
        );
        assert_eq!(
            e.positives,
            vec!["Represent the document: Rayleigh scattering."]
        );
        assert_eq!(
            e.negatives,
            vec!["12345", "Represent the document: Clouds."]
        );
        let ex = read(
            "r.jsonl",
            r#"{"query": ["inst", "q"], "positive": ["inst", "doc"]}"#,
            PairFormat::Auto,
        )
        .unwrap();
        assert_eq!(ex.examples, vec![pair("inst q", "inst doc")]);
    }

    #[test]
    fn msmarco_triples() {
        let ex = read(
            "triples.tsv",
            "what is x\tx is a letter\ty is a letter\n\nq2\tp2\r\n",
            PairFormat::Auto,
        )
        .unwrap();
        assert_eq!(ex.format, PairFormat::MsMarco);
        assert_eq!(
            ex.examples[0],
            Example {
                negatives: vec!["y is a letter".into()],
                ..pair("what is x", "x is a letter")
            }
        );
        assert_eq!(ex.examples[1], pair("q2", "p2"));
        let e = err(read("t.tsv", "a\tb\tc\nonly one\n", PairFormat::Auto));
        assert!(e.contains("t.tsv: line 2: 1 tab-separated fields"), "{e}");
        let e = err(read("t.tsv", "12\t34\t56\n", PairFormat::Auto));
        assert!(e.contains("line 1: holds ids, not texts"), "{e}");
        let e = err(read("t.tsv", "a\t \tc\n", PairFormat::Auto));
        assert!(e.contains("line 1: the positive is empty"), "{e}");
        // forced on a file of another name
        let ex = read("t.txt", "a\tb\n", PairFormat::MsMarco).unwrap();
        assert_eq!(ex.examples, vec![pair("a", "b")]);
    }

    #[test]
    fn json_errors_name_the_line_and_fix() {
        let cases: [(&str, &str, PairFormat); 11] = [
            (
                "{\"query\": \"q\", \"positive\": \"p\"}\n{\"query\": ",
                "line 2: not valid JSON",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"positive\": \"p\"}\n{\"query\": \"q\"}\n",
                "line 2: no field \"positive\"",
                PairFormat::Auto,
            ),
            (
                "{\"positive\": \"p\"}\n",
                "line 1: no field \"query\" or \"anchor\"",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \" \", \"positive\": \"p\"}\n",
                "line 1: query is empty",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"positive\": \"\"}\n",
                "line 1: positive is empty",
                PairFormat::Auto,
            ),
            (
                "{\"query\": 3, \"positive\": \"p\"}\n",
                "line 1: query is a number, not a string",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"pos\": []}\n",
                "line 1: field \"pos\" is an empty list",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"pos\": [\"a\", \"\"]}\n",
                "line 1: pos[1] is empty",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"positive_passages\": [{\"title\": \"t\"}]}\n",
                "line 1: positive_passages[0] has no field \"text\"",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"text\": \"p\"}\n",
                "line 1: cannot tell the format",
                PairFormat::Auto,
            ),
            (
                "{\"query\": \"q\", \"positive\": \"p\"}\n",
                "line 1: no field \"pos\"",
                PairFormat::FlagEmbedding,
            ),
        ];
        for (text, want, format) in cases {
            let e = err(read("d.jsonl", text, format));
            assert!(
                e.contains("d.jsonl: ") && e.contains(want) && e.contains("fix: "),
                "{want}: {e}"
            );
        }
        // invalid UTF-8 (the literal above is valid: write raw bytes)
        let dir = folder(&[(
            "d.jsonl",
            b"{\"query\": \"q\", \"positive\": \"p\"}\n{\"query\": \"\xff\"}\n",
        )]);
        let e = err(read_examples(
            &dir.path().join("d.jsonl"),
            PairFormat::Auto,
            "train",
        ));
        assert!(e.contains("line 2: not valid UTF-8"), "{e}");
        for empty in ["", "\n\n"] {
            let e = err(read("d.jsonl", empty, PairFormat::Auto));
            assert!(e.contains("holds no training example"), "{e}");
        }
        let e = err(read("d.json", "[{\"query\": \"q\"}]", PairFormat::Auto));
        assert!(
            e.contains("is not JSON lines") && e.contains("convert it to JSON lines"),
            "{e}"
        );
        let e = err(read_examples(
            Path::new("/no/such/file.jsonl"),
            PairFormat::Auto,
            "train",
        ));
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn formats_parse_and_print() {
        for f in [
            PairFormat::Auto,
            PairFormat::Beir,
            PairFormat::Jsonl,
            PairFormat::Tevatron,
            PairFormat::FlagEmbedding,
            PairFormat::MsMarco,
        ] {
            assert_eq!(f.name().parse::<PairFormat>(), Ok(f));
            assert!(PairFormat::NAMES.contains(&f.to_string()));
        }
        assert_eq!("FlagEmbedding".parse(), Ok(PairFormat::FlagEmbedding));
        assert!("csv"
            .parse::<PairFormat>()
            .unwrap_err()
            .contains(PairFormat::NAMES));
    }

    #[test]
    fn documents_keep_title_and_body_apart() {
        let dir = folder(&[
            (
                "docs.jsonl",
                b"{\"_id\": \"a\", \"title\": \" T \", \"text\": \" body \"}\n\n{\"doc_id\": 7, \"text\": \"b\"}\n{\"text\": \"c\", \"title\": null}\n",
            ),
            ("plain.txt", b"one\n\ntwo\n"),
            ("bad.jsonl", b"{\"text\": \"a\"}\n{\"body\": \"b\"}\n"),
            ("badtitle.jsonl", b"{\"text\": \"a\", \"name\": 3}\n"),
        ]);
        let docs = read_documents(&dir.path().join("docs.jsonl"), "text", "title").unwrap();
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.id.as_str(), d.title.as_str(), d.text.as_str(), d.line))
            .collect();
        assert_eq!(
            got,
            vec![("a", "T", "body", 1), ("7", "", "b", 3), ("3", "", "c", 4)]
        );
        let docs = read_documents(&dir.path().join("plain.txt"), "text", "title").unwrap();
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.id.as_str(), d.text.as_str()))
            .collect();
        assert_eq!(got, vec![("0", "one"), ("2", "two")]);
        let e = read_documents(&dir.path().join("bad.jsonl"), "text", "title")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: no string field \"text\"") && e.contains("--field"),
            "{e}"
        );
        let e = read_documents(&dir.path().join("badtitle.jsonl"), "text", "name")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: field \"name\" is a number") && e.contains("--title-field"),
            "{e}"
        );
    }

    #[test]
    fn scifact_train_split_gives_its_919_pairs() {
        let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
            return;
        };
        let dir = data.join("scifact-beir");
        let ex = read_examples(&dir, PairFormat::Auto, "train").unwrap();
        assert_eq!(ex.format, PairFormat::Beir);
        assert_eq!(ex.len(), 919);
        let by_query = ex.positives_by_query();
        // 809 query ids but 807 texts: two claims are there twice, under
        // two ids each, sharing three of their documents
        assert_eq!(by_query.len(), 807);
        assert_eq!(by_query.values().map(HashSet::len).sum::<usize>(), 916);
        let test = read_examples(&dir, PairFormat::Beir, "test").unwrap();
        assert_eq!(test.len(), 339);
        // a document is its title and text joined
        let corpus = Corpus::read(&dir.join("corpus.jsonl"), "text").unwrap();
        let texts: HashSet<&str> = corpus.texts.iter().map(String::as_str).collect();
        assert!(ex
            .examples
            .iter()
            .all(|e| texts.contains(e.positives[0].as_str())));
    }
}
