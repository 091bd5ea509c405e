//! TREC run-file writing: `qid Q0 docid rank score tag`, one line per hit.

use std::io::{self, Write};

/// Write one query's ranked hits as TREC run lines. `ranked` must already be
/// in rank order (best first); ranks are written 1-based. Scores print in
/// their shortest round-trip form (an `f32` score stays an `f32`'s digits).
pub fn write_run_lines<'a, W: Write, S: std::fmt::Display>(
    w: &mut W,
    qid: &str,
    ranked: impl IntoIterator<Item = (&'a str, S)>,
    tag: &str,
) -> io::Result<()> {
    for (i, (docid, score)) in ranked.into_iter().enumerate() {
        writeln!(w, "{qid} Q0 {docid} {} {score} {tag}", i + 1)?;
    }
    Ok(())
}
