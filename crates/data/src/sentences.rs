//! Build a dataset from ordered sentences (`{"doc_id", "idx", "text"}` per
//! line, grouped by document, in reading order) and their vectors (row i =
//! line i). The dataset keeps the sentence texts in `texts.jsonl`.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;
use serde_json::json;
use tandem_bank::{Bank, OpenOptions};
use tandem_io::Overwrite;

use crate::format::{
    check_output_dir, write_dataset, BankSource, DatasetParts, Manifest, Provenance, Sequence,
    Split,
};
use crate::DataError;

/// Options of [`from_sentences`].
#[derive(Debug, Clone)]
pub struct SentencesOptions<'a> {
    /// The sentences file (JSON lines).
    pub sentences: &'a Path,
    /// The vector file: one row per sentence line.
    pub vectors: &'a Path,
    /// The dataset directory to write.
    pub out: &'a Path,
    /// Context length L.
    pub context: usize,
    /// Copy the vectors into `bank.npy` instead of referring to the file.
    pub copy_bank: bool,
    /// Whether an existing dataset at `out` may be replaced.
    pub overwrite: Overwrite,
    /// The command line, recorded in the provenance.
    pub command: String,
}

#[derive(Deserialize)]
struct SentenceLine {
    doc_id: serde_json::Value,
    idx: u64,
    text: String,
}

/// What a sentences file holds, row i = line i.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceDocs {
    /// One sequence per document, rows = line numbers (0-based), split by
    /// document ordinal.
    pub sequences: Vec<Sequence>,
    /// One id per line: `DOC#IDX`.
    pub ids: Vec<String>,
    /// One text per line.
    pub texts: Vec<String>,
}

/// Read and check a sentences file (see the module docs).
pub fn read_sentence_docs(path: &Path) -> Result<SentenceDocs, DataError> {
    let file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut sequences: Vec<Sequence> = Vec::new();
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    // doc id -> (first line, last line) of its sentences, 1-based.
    let mut lines_of: HashMap<String, (usize, usize)> = HashMap::new();
    let mut last_idx = 0u64;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        let fix = r#"each line must be {"doc_id": "...", "idx": N, "text": "..."}"#;
        let raw: SentenceLine = serde_json::from_str(&line)
            .map_err(|e| DataError::at_line(path, n, format!("not a sentence: {e}"), fix))?;
        let doc = match raw.doc_id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(x) => x.to_string(),
            other => {
                return Err(DataError::at_line(
                    path,
                    n,
                    format!("doc_id {other} is not a string or number"),
                    fix,
                ))
            }
        };
        let row = u32::try_from(i).map_err(|_| {
            DataError::at_line(
                path,
                n,
                "more than 2^32 sentences",
                "split the file into several datasets",
            )
        })?;
        let continues = sequences.last().is_some_and(|s| s.id == doc);
        if continues {
            if raw.idx <= last_idx {
                return Err(DataError::at_line(
                    path,
                    n,
                    format!("sentence idx {} of document {doc:?} does not increase (previous idx {last_idx})", raw.idx),
                    "sort each document's sentences by idx, in reading order",
                ));
            }
            sequences
                .last_mut()
                .expect("continues implies a last sequence")
                .rows
                .push(row);
            lines_of.get_mut(&doc).expect("seen document").1 = n;
        } else {
            if let Some((first, last)) = lines_of.get(&doc) {
                return Err(DataError::at_line(
                    path,
                    n,
                    format!("document {doc:?} continues here, but its sentences already appeared on lines {first}-{last}: its sentences are not contiguous"),
                    "group the sentences of each document together, in reading order",
                ));
            }
            lines_of.insert(doc.clone(), (n, n));
            let split = Split::of_ordinal(sequences.len());
            sequences.push(Sequence {
                id: doc.clone(),
                split,
                rows: vec![row],
            });
        }
        last_idx = raw.idx;
        ids.push(format!("{doc}#{}", raw.idx));
        texts.push(raw.text);
    }
    if sequences.is_empty() {
        return Err(DataError::invalid(
            path,
            "no sentences",
            "give a non-empty sentences file",
        ));
    }
    Ok(SentenceDocs {
        sequences,
        ids,
        texts,
    })
}

/// Build a dataset from a sentences file and its vectors (see the module docs).
pub fn from_sentences(opts: &SentencesOptions<'_>) -> Result<Manifest, DataError> {
    check_output_dir(opts.out, opts.overwrite)?;
    let bank = Bank::open(opts.vectors, &OpenOptions::default())?;
    let docs = read_sentence_docs(opts.sentences)?;
    if docs.ids.len() != bank.rows() {
        return Err(DataError::invalid(
            opts.vectors,
            format!(
                "holds {} vectors but {} has {} sentence lines",
                bank.rows(),
                opts.sentences.display(),
                docs.ids.len()
            ),
            "row i of the vectors must embed line i of the sentences; re-embed the sentences file",
        ));
    }
    let source = if opts.copy_bank {
        BankSource::Write {
            vectors: bank.vectors(),
            dim: bank.dim(),
        }
    } else {
        BankSource::Reference(opts.vectors)
    };
    let provenance = Provenance {
        builder: "from-sentences".to_string(),
        command: opts.command.clone(),
        tool: crate::TOOL.to_string(),
        seed: None,
        sources: vec![
            opts.sentences.display().to_string(),
            opts.vectors.display().to_string(),
        ],
        params: json!({ "split": "document ordinal % 10: 0 test, 1 val, else train", "copy_bank": opts.copy_bank }),
    };
    let parts = DatasetParts {
        bank: source,
        rows: bank.rows(),
        dim: bank.dim(),
        dtype: bank.dtype().name(),
        ids: Some(&docs.ids),
        texts: Some(&docs.texts),
        sequences: &docs.sequences,
        context: opts.context,
        provenance,
    };
    write_dataset(opts.out, opts.overwrite, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Result<SentenceDocs, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        fs::write(&p, text).unwrap();
        read_sentence_docs(&p)
    }

    #[test]
    fn groups_documents_and_splits_by_ordinal() {
        let mut text = String::new();
        for d in 0..12 {
            for i in 0..3 {
                text +=
                    &format!("{{\"doc_id\": \"d{d}\", \"idx\": {i}, \"text\": \"t{d}.{i}\"}}\n");
            }
        }
        let docs = docs(&text).unwrap();
        assert_eq!(docs.sequences.len(), 12);
        assert_eq!(docs.ids.len(), 36);
        assert_eq!(docs.ids[4], "d1#1");
        assert_eq!(docs.texts[4], "t1.1");
        assert_eq!(docs.texts.len(), 36);
        assert_eq!(docs.sequences[1].rows, vec![3, 4, 5]);
        let splits: Vec<Split> = docs.sequences.iter().map(|s| s.split).collect();
        assert_eq!(&splits[..3], &[Split::Test, Split::Val, Split::Train]);
        assert_eq!(splits[10], Split::Test);
        assert_eq!(splits[11], Split::Val);
    }

    #[test]
    fn rejects_scattered_documents_and_bad_order() {
        let e = docs("{\"doc_id\":\"a\",\"idx\":0,\"text\":\"\"}\n{\"doc_id\":\"b\",\"idx\":0,\"text\":\"\"}\n{\"doc_id\":\"a\",\"idx\":1,\"text\":\"\"}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.jsonl:3") && e.contains("lines 1-1") && e.contains("not contiguous"),
            "{e}"
        );
        let e = docs(
            "{\"doc_id\":7,\"idx\":2,\"text\":\"\"}\n{\"doc_id\":7,\"idx\":1,\"text\":\"\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("s.jsonl:2") && e.contains("does not increase"),
            "{e}"
        );
        let e = docs("{\"doc_id\":\"a\",\"text\":\"\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.jsonl:1") && e.contains("idx"), "{e}");
        let e = docs("{\"doc_id\":\"a\",\"idx\":0}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.jsonl:1") && e.contains("missing field `text`"),
            "{e}"
        );
    }
}
