//! The text of each bank row: `texts.jsonl` beside the bank (see
//! `docs/dataset-format.md`), line i = `{"text": "..."}` of row i.
//!
//! [`Texts`] indexes the file once and keeps only the byte offset of every
//! line, so a bank of millions of rows costs 8 bytes per row; [`Texts::get`]
//! reads and parses one line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::DataError;

/// The text file name inside a dataset directory.
pub const TEXTS_FILE: &str = "texts.jsonl";

/// What every line must be, for error messages.
const LINE_FIX: &str =
    r#"each line must be a JSON object with a string field "text", e.g. {"text": "..."}"#;

/// One line of a texts file, as written.
#[derive(Serialize)]
struct TextLine<'a> {
    text: &'a str,
}

/// Write `texts` as a texts file: one `{"text": ...}` line per text.
pub(crate) fn write_texts<W: Write>(w: &mut W, texts: &[String]) -> io::Result<()> {
    for text in texts {
        serde_json::to_writer(&mut *w, &TextLine { text })?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// An indexed texts file: the text of every bank row, read on demand.
#[derive(Debug)]
pub struct Texts {
    path: PathBuf,
    /// Byte offset of the start of every line, then the file length.
    bounds: Vec<u64>,
    file: Mutex<File>,
}

impl Texts {
    /// Index the texts file `path` of a bank of `rows` rows: scan it once,
    /// keeping the offset of every line, and check that it has exactly
    /// `rows` lines (the lines themselves are parsed by [`Texts::get`]).
    pub fn open(path: &Path, rows: usize) -> Result<Texts, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut bounds = vec![0u64];
        let mut offset = 0u64;
        let mut last_byte = None;
        loop {
            let chunk = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
            if chunk.is_empty() {
                break;
            }
            for (i, &b) in chunk.iter().enumerate() {
                if b == b'\n' {
                    bounds.push(offset + i as u64 + 1);
                }
            }
            let n = chunk.len();
            last_byte = chunk.last().copied();
            offset += n as u64;
            reader.consume(n);
        }
        // A last line without a final newline still counts.
        if last_byte.is_some_and(|b| b != b'\n') {
            bounds.push(offset);
        }
        let lines = bounds.len() - 1;
        if lines != rows {
            return Err(DataError::invalid(
                path,
                format!("holds {lines} lines, but the bank has {rows} rows"),
                "line i must be the text of bank row i, one line per row; rebuild the file from the sentences the bank embeds",
            ));
        }
        Ok(Texts {
            path: path.to_path_buf(),
            bounds,
            file: Mutex::new(file),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of rows (lines).
    pub fn rows(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The text of bank row `row`: its line, read and parsed.
    pub fn get(&self, row: usize) -> Result<String, DataError> {
        let rows = self.rows();
        if row >= rows {
            return Err(DataError::invalid(
                &self.path,
                format!("row {row} asked for, but the file holds {rows} rows (0..{rows})"),
                "ask for a row of this bank",
            ));
        }
        let (start, end) = (self.bounds[row], self.bounds[row + 1]);
        let mut bytes = vec![0u8; (end - start) as usize];
        {
            let mut file = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| DataError::io(&self.path, e))?;
        }
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let bad = |problem: String| {
            DataError::at_line(
                &self.path,
                row + 1,
                format!("not a text line: {problem}"),
                LINE_FIX,
            )
        };
        // A map, not a struct: serde would also take `["..."]` for a struct.
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        match object.remove("text") {
            Some(serde_json::Value::String(text)) => Ok(text),
            Some(other) => Err(bad(format!("\"text\" is {other}, not a string"))),
            None => Err(bad("no \"text\" field".to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts_of(content: &str, rows: usize) -> (tempfile::TempDir, Result<Texts, DataError>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(TEXTS_FILE);
        std::fs::write(&p, content).unwrap();
        let t = Texts::open(&p, rows);
        (dir, t)
    }

    #[test]
    fn reads_each_line_and_ignores_other_fields() {
        let content = "{\"text\": \"first\"}\r\n{\"doc_id\": 7, \"idx\": 0, \"text\": \"s\\u00e9cond \\\"q\\\"\"}\n{\"text\":\"\"}";
        let (_d, t) = texts_of(content, 3);
        let t = t.unwrap();
        assert_eq!(t.rows(), 3);
        assert_eq!(t.get(1).unwrap(), "s\u{e9}cond \"q\"");
        assert_eq!(t.get(0).unwrap(), "first");
        assert_eq!(t.get(2).unwrap(), "");
        let e = t.get(3).unwrap_err().to_string();
        assert!(e.contains("row 3 asked for") && e.contains("3 rows"), "{e}");
    }

    #[test]
    fn written_lines_read_back() {
        let texts: Vec<String> = ["a\nb", "", "\u{1F600} \"x\""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut bytes = Vec::new();
        write_texts(&mut bytes, &texts).unwrap();
        let (_d, t) = texts_of(std::str::from_utf8(&bytes).unwrap(), 3);
        let t = t.unwrap();
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(&t.get(i).unwrap(), text);
        }
    }

    #[test]
    fn wrong_line_count_names_both_counts() {
        for (content, lines) in [
            ("{\"text\":\"a\"}\n{\"text\":\"b\"}\n", 2),
            ("", 0),
            ("{\"text\":\"a\"}\n\n", 2),
        ] {
            let (_d, t) = texts_of(content, 3);
            let e = t.unwrap_err().to_string();
            assert!(
                e.contains(TEXTS_FILE)
                    && e.contains(&format!("holds {lines} lines, but the bank has 3 rows"))
                    && e.contains("line i must be the text of bank row i"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_lines_name_the_line() {
        let content = "{\"text\":\"a\"}\n[\"a\"]\n{\"text\": 3}\n{\"title\":\"a\"}\n\n\"a\"\n{\"text\":\"\\ud800\"}\n";
        let (_d, t) = texts_of(content, 7);
        let t = t.unwrap();
        assert_eq!(t.get(0).unwrap(), "a");
        let problems = [
            "expected a map",
            "\"text\" is 3, not a string",
            "no \"text\" field",
            "EOF while parsing",
            "expected a map",
            "hex escape",
        ];
        for (row, problem) in (1..).zip(problems) {
            let e = t.get(row).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{TEXTS_FILE}:{}: not a text line", row + 1))
                    && e.contains(problem)
                    && e.contains(r#"a string field "text""#),
                "{e}"
            );
        }
    }
}
