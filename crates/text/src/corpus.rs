//! Texts to embed: JSON lines with a text field (a BEIR corpus line is
//! `title + " " + text`, as BEIR and sentence-transformers join them) or
//! plain lines, with an id per text.

use std::path::Path;

use serde_json::Value;

use crate::TextError;

/// Where the id of a JSON line comes from.
#[derive(Debug, Clone, Copy)]
pub enum Ids<'a> {
    /// This field, required on every line.
    Given(&'a str),
    /// The first of these fields a line has, else the line number (from 0).
    FirstOf(&'a [&'a str]),
}

/// Texts and their ids, in file order.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// One id per text: `_id` or `id` of a JSON line, else the line number
    /// (from 0).
    pub ids: Vec<String>,
    /// The texts.
    pub texts: Vec<String>,
}

impl Corpus {
    /// The number of texts.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there is no text.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Reads `path`: JSON lines when the first non-blank line starts with
    /// `{`, else one text per line. For JSON, `field` names the text; when
    /// it is `text` and the line has a non-empty `title`, the text is
    /// `title + " " + text`. Blank lines of a JSON file are skipped; a
    /// plain file keeps them (as empty texts). Invalid UTF-8 or JSON, or a
    /// missing field, is an error naming the line. Ids are `_id` or `id`.
    pub fn read(path: &Path, field: &str) -> Result<Corpus, TextError> {
        Corpus::read_with(path, field, Ids::FirstOf(&["_id", "id"])).map(|(c, _)| c)
    }

    /// [`Corpus::read`] with the id fields to use, and the 1-based line of
    /// every text.
    pub fn read_with(
        path: &Path,
        field: &str,
        ids: Ids<'_>,
    ) -> Result<(Corpus, Vec<usize>), TextError> {
        let bytes = read_bytes(path)?;
        let lines = split_lines(&bytes);
        let json = starts_json(&lines);
        if let (false, Ids::Given(f)) = (json, ids) {
            return Err(TextError::file(
                path,
                format!("an id field ({f:?}) is given, but the file is not JSON lines"),
                "drop --id-field: the ids of plain lines are their line numbers",
            ));
        }
        let mut c = Corpus::default();
        let mut at_line = Vec::new();
        if !json {
            for (i, raw) in lines.iter().enumerate() {
                c.ids.push(i.to_string());
                c.texts.push(utf8_line(path, i, raw)?.to_string());
                at_line.push(i + 1);
            }
            return Ok((c, at_line));
        }
        for_each_json_line(path, &lines, |i, v| {
            let at = |problem: String, fix: &str| line_error(path, i, problem, fix);
            let text = match v.get(field) {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    return Err(at(
                        format!("field {field:?} is {other}, not a string"),
                        "pass --field with the name of the text field",
                    ))
                }
                None => {
                    return Err(at(
                        format!("no field {field:?}"),
                        "pass --field with the name of the text field",
                    ))
                }
            };
            let title = v.get("title").and_then(Value::as_str).unwrap_or("");
            let text = if field == "text" {
                join_title(title, text)
            } else {
                text.trim().to_string()
            };
            let given = |f: &str| string_or_number(&v, f);
            let id = match ids {
                Ids::Given(f) => given(f).ok_or_else(|| {
                    at(
                        format!("no string or number field {f:?}"),
                        "pass --id-field with the name of the id field",
                    )
                })?,
                Ids::FirstOf(fields) => fields
                    .iter()
                    .find_map(|f| given(f))
                    .unwrap_or_else(|| i.to_string()),
            };
            at_line.push(i + 1);
            c.ids.push(id);
            c.texts.push(text);
            Ok(())
        })?;
        Ok((c, at_line))
    }
}

/// `title + " " + text`, trimmed, as BEIR and sentence-transformers join a
/// document's title and body; the text alone when the title is empty.
pub(crate) fn join_title(title: &str, text: &str) -> String {
    if title.is_empty() {
        text.trim().to_string()
    } else {
        format!("{title} {text}").trim().to_string()
    }
}

/// Field `f` of a JSON object when it is a string or a number (an id).
pub(crate) fn string_or_number(v: &Value, f: &str) -> Option<String> {
    match v.get(f) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The bytes of the file `path`.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, TextError> {
    std::fs::read(path).map_err(|e| {
        TextError::file(
            path,
            format!("cannot read ({e})"),
            "check the path and its permissions",
        )
    })
}

/// The lines of a file's bytes, split at `\n`; a final newline ends the last
/// line rather than starting an empty one.
pub(crate) fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Whether the first non-blank line starts with `{` (a JSON lines file).
pub(crate) fn starts_json(lines: &[&[u8]]) -> bool {
    lines
        .iter()
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with(b"{"))
}

/// An error about line `i` (from 0; named from 1) of `path`.
pub(crate) fn line_error(path: &Path, i: usize, problem: String, fix: &str) -> TextError {
    TextError::file(path, format!("line {}: {problem}", i + 1), fix)
}

/// Line `i` (from 0) of `path` as UTF-8, without a final `\r`.
pub(crate) fn utf8_line<'a>(path: &Path, i: usize, raw: &'a [u8]) -> Result<&'a str, TextError> {
    std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw)).map_err(|e| {
        line_error(
            path,
            i,
            format!("not valid UTF-8 ({e})"),
            "convert the file to UTF-8",
        )
    })
}

/// Calls `each` with the index (from 0) and the value of every non-blank
/// line of a JSON lines file, in order, stopping at the first error (invalid
/// UTF-8 or JSON is one, naming the line).
pub(crate) fn for_each_json_line(
    path: &Path,
    lines: &[&[u8]],
    mut each: impl FnMut(usize, Value) -> Result<(), TextError>,
) -> Result<(), TextError> {
    for (i, raw) in lines.iter().enumerate() {
        let line = utf8_line(path, i, raw)?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| {
            line_error(
                path,
                i,
                format!("not valid JSON ({e})"),
                "fix or remove that line",
            )
        })?;
        each(i, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8], field: &str) -> Result<Corpus, TextError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, content).unwrap();
        Corpus::read(&p, field)
    }

    #[test]
    fn beir_lines_join_title_and_text() {
        let c = read(
            b"{\"_id\": \"d1\", \"title\": \"T\", \"text\": \"body\"}\n\n{\"_id\": 7, \"title\": \"\", \"text\": \" x \"}\n",
            "text",
        )
        .unwrap();
        assert_eq!(c.ids, vec!["d1", "7"]);
        assert_eq!(c.texts, vec!["T body", "x"]);
    }

    #[test]
    fn plain_lines_keep_blank_lines_and_number_them() {
        let c = read(b"one\n\nthree\r\n", "text").unwrap();
        assert_eq!(c.ids, vec!["0", "1", "2"]);
        assert_eq!(c.texts, vec!["one", "", "three"]);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = read(b"{\"text\": \"a\"}\n{\"text\": \n", "text")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("not valid JSON"), "{e}");
        let e = read(b"{\"body\": \"a\"}\n", "text")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("--field"), "{e}");
        let e = read(b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}\n", "text")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");
        let c = read(b"{\"q\": \"a\"}\n", "q").unwrap();
        assert_eq!(c.texts, vec!["a"]);
    }
}
