//! Cutting documents into the pieces that become bank rows: sentences, by a
//! deterministic rule-based splitter for English scientific and
//! encyclopedic text ([`sentences`]), or consecutive chunks of a fixed
//! number of a model's tokens ([`Chunker`]).
//!
//! The sentence rules: a paragraph break (a blank line) always ends a
//! sentence; otherwise a sentence ends after a run of `.`, `!` or `?`
//! (optionally followed by closing quotes or brackets) when whitespace
//! follows and then an uppercase letter, a digit or an opening quote or
//! bracket, unless the run is a single `.` ending a common abbreviation
//! (`e.g.`, `i.e.`, `et al.`, `Fig.`, `Dr.`, `vs.`, `etc.`, `No.`,
//! `approx.`, `U.S.`, ...) or a capital initial (`J. Smith`). A decimal
//! number never ends one, since no whitespace follows its point. Pieces are
//! trimmed; empty ones are dropped.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::{ModelDir, TextError};

/// The name and version of the sentence rules, recorded with the data they
/// split (a change of the rules is a new version).
pub const SENTENCE_SPLITTER: &str = "tandem-text rule-based sentences v1";

/// Words that a single `.` follows without ending a sentence (matched
/// exactly, without the period; `No` only capitalised, since "no." ends
/// sentences): Latin and scholarly abbreviations, titles, organisations,
/// months.
const ABBREVIATIONS: [&[&str]; 4] = [
    &[
        "al", "etc", "Etc", "vs", "Vs", "v", "p", "rel", "cf", "Cf", "ca", "Ca", "approx",
        "Approx", "resp", "viz", "ibid", "Ibid", "sp", "spp", "var", "cv", "subsp", "ssp", "pp",
        "vol", "Vol", "vols", "Vols", "ed", "Ed", "eds", "Eds", "fig", "Fig", "figs", "Figs", "eq",
        "Eq", "eqs", "Eqs", "ref", "Ref", "refs", "Refs", "tab", "Tab", "suppl", "Suppl", "sect",
        "Sect", "sec", "Sec", "ch", "Ch", "chap", "Chap", "No", "Nos", "Ph.D", "PhD", "incl",
        "Incl", "Univ", "Dept",
    ],
    &[
        "Dr", "Drs", "Mr", "Mrs", "Ms", "Prof", "Profs", "St", "Jr", "Sr", "Gen", "Gov", "Sen",
        "Rep", "Rev", "Hon", "Capt", "Col", "Lt", "Sgt", "Mt", "Messrs",
    ],
    &["Inc", "Ltd", "Co", "Corp", "Bros"],
    &[
        "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
    ],
];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

fn is_opener(c: char) -> bool {
    matches!(c, '"' | '\'' | '(' | '[' | '{' | '“' | '‘' | '«')
}

/// Whether a single `.` after `word` (the text since the last whitespace,
/// opening quotes and brackets removed) marks an abbreviation.
fn is_abbreviation(word: &str) -> bool {
    if ABBREVIATIONS.iter().any(|list| list.contains(&word)) {
        return true;
    }
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (None, _) => return false,
        // a capital initial: "J. Smith", "(B. subtilis"
        (Some(c), None) => return c.is_uppercase(),
        _ => {}
    }
    // letters joined by periods: "e.g", "i.e", "U.S", "a.m"
    word.contains('.')
        && word.split('.').all(|s| {
            let mut c = s.chars();
            c.next().is_some_and(char::is_alphabetic) && c.next().is_none()
        })
}

/// The byte ranges of the paragraphs of `text`: maximal runs of lines that
/// are not blank.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                out.push((s, at));
            }
        } else if start.is_none() {
            start = Some(at);
        }
        at += line.len();
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// Splits one paragraph, pushing its trimmed non-empty sentences.
fn split_paragraph<'a>(p: &'a str, out: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = p.char_indices().collect();
    let n = chars.len();
    let mut push = |s: &'a str| {
        let s = s.trim();
        if !s.is_empty() {
            out.push(s);
        }
    };
    let mut piece = 0usize;
    let mut i = 0usize;
    while i < n {
        if !is_terminator(chars[i].1) {
            i += 1;
            continue;
        }
        let run = i;
        let mut j = i;
        while j < n && is_terminator(chars[j].1) {
            j += 1;
        }
        let single_period = j - run == 1 && chars[run].1 == '.';
        while j < n && is_closer(chars[j].1) {
            j += 1;
        }
        if j >= n || !chars[j].1.is_whitespace() {
            i = j;
            continue;
        }
        let mut k = j;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        if k >= n {
            break;
        }
        let next = chars[k].1;
        if !(next.is_uppercase() || next.is_numeric() || is_opener(next)) {
            i = k;
            continue;
        }
        if single_period {
            let mut w = run;
            while w > 0 && !chars[w - 1].1.is_whitespace() {
                w -= 1;
            }
            let word = p[chars[w].0..chars[run].0].trim_start_matches(is_opener);
            if is_abbreviation(word) {
                i = k;
                continue;
            }
        }
        push(&p[piece..chars[j].0]);
        piece = chars[k].0;
        i = k;
    }
    push(&p[piece..]);
}

/// The sentences of `text`, trimmed, in order (see the module docs for the
/// rules). Deterministic; empty pieces are dropped, so a blank text has
/// none.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (s, e) in paragraphs(text) {
        split_paragraph(&text[s..e], &mut out);
    }
    out
}

/// Cuts texts into consecutive chunks of a fixed number of a model's
/// tokens (special tokens not counted), each chunk's text the span of the
/// document from its first token's start to its last token's end.
pub struct Chunker {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("tokenizer", &self.path)
            .finish()
    }
}

impl Chunker {
    /// The tokenizer of the model directory `model` (its `tokenizer.json`).
    pub fn for_model(model: &Path) -> Result<Chunker, TextError> {
        Chunker::from_file(&ModelDir::open(model)?.tokenizer)
    }

    /// A `tokenizer.json`, with its truncation and padding turned off so
    /// that a whole document is tokenised.
    pub fn from_file(path: &Path) -> Result<Chunker, TextError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            TextError::file(
                path,
                format!("not a tokenizer.json that the tokenizers library reads ({e})"),
                "rewrite it with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)",
            )
        })?;
        tokenizer.with_truncation(None).map_err(|e| {
            TextError::file(
                path,
                format!("cannot turn truncation off ({e})"),
                "use a tokenizer.json saved by transformers",
            )
        })?;
        tokenizer.with_padding(None);
        Ok(Chunker {
            tokenizer,
            path: path.to_path_buf(),
        })
    }

    /// The byte spans `(start, end)` of the tokens of `text`, without
    /// special tokens, snapped to character boundaries.
    pub fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, TextError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| {
            TextError::file(
                &self.path,
                format!("cannot tokenise ({e})"),
                "check the input text",
            )
        })?;
        let floor = |mut i: usize| {
            i = i.min(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let ceil = |mut i: usize| {
            i = i.min(text.len());
            while !text.is_char_boundary(i) {
                i += 1;
            }
            i
        };
        Ok(enc
            .get_offsets()
            .iter()
            .map(|&(s, e)| (floor(s), ceil(e.max(s))))
            .collect())
    }

    /// `text` cut into consecutive chunks of `tokens` tokens (the last may
    /// be shorter), each the trimmed span from its first token's start to
    /// its last token's end; chunks with no text are dropped.
    pub fn chunks<'a>(&self, text: &'a str, tokens: usize) -> Result<Vec<&'a str>, TextError> {
        if tokens == 0 {
            return Err(TextError::file(
                &self.path,
                "chunks of 0 tokens",
                "ask for chunks of at least 1 token",
            ));
        }
        let spans = self.token_spans(text)?;
        Ok(spans
            .chunks(tokens)
            .map(|c| {
                let start = c.iter().map(|s| s.0).min().unwrap_or(0);
                let end = c.iter().map(|s| s.1).max().unwrap_or(0);
                text[start..end.max(start)].trim()
            })
            .filter(|s| !s.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(t: &str) -> Vec<&str> {
        sentences(t)
    }

    #[test]
    fn plain_sentences_and_terminators() {
        assert_eq!(
            split("One. Two! Three? Four"),
            vec!["One.", "Two!", "Three?", "Four"]
        );
        assert_eq!(
            split("Really?! Yes... Then 3 more."),
            vec!["Really?!", "Yes...", "Then 3 more."]
        );
        // lowercase after the period: not a sentence end
        assert_eq!(split("It rose. and fell."), vec!["It rose. and fell."]);
        // no whitespace after the period
        assert_eq!(
            split("See www.example.org. It works."),
            vec!["See www.example.org.", "It works."]
        );
        assert_eq!(split("   \n  "), Vec::<&str>::new());
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(
            split("  no terminator at all  "),
            vec!["no terminator at all"]
        );
    }

    #[test]
    fn digits_quotes_and_brackets() {
        assert_eq!(
            split("Mice were used. 25 of them died. (See below.) \"Quoted.\" Done."),
            vec![
                "Mice were used.",
                "25 of them died.",
                "(See below.)",
                "\"Quoted.\"",
                "Done."
            ]
        );
        assert_eq!(
            split("He said \u{201c}stop.\u{201d} Then [1] it ended."),
            vec!["He said \u{201c}stop.\u{201d}", "Then [1] it ended."]
        );
        assert_eq!(
            split("Fine (p < 0.05). Next."),
            vec!["Fine (p < 0.05).", "Next."]
        );
    }

    #[test]
    fn abbreviations_initials_and_decimals_do_not_split() {
        let t = "Proteins, e.g. Actin, i.e. The Big One, were seen. Smith et al. Reported it. \
                 See Fig. 2 and Figs. 3-4. Dr. Who met Mr. Xu vs. Yang. Cells, etc. Were counted. \
                 No. 5 was approx. 3.5 mm in the U.S. Army. J. R. R. Tolkien wrote. \
                 The value was 3.14. Then 0.5 units.";
        assert_eq!(
            split(t),
            vec![
                "Proteins, e.g. Actin, i.e. The Big One, were seen.",
                "Smith et al. Reported it.",
                "See Fig. 2 and Figs. 3-4.",
                "Dr. Who met Mr. Xu vs. Yang.",
                "Cells, etc. Were counted.",
                "No. 5 was approx. 3.5 mm in the U.S. Army.",
                "J. R. R. Tolkien wrote.",
                "The value was 3.14.",
                "Then 0.5 units.",
            ]
        );
        // "v." for versus, "p." for page
        assert_eq!(
            split("Kappa (0.76 v. 0.58). See p. 561. Done."),
            vec!["Kappa (0.76 v. 0.58).", "See p. 561.", "Done."]
        );
        // an initial inside brackets, a lowercase "no." that ends a sentence
        assert_eq!(
            split("Strains (B. subtilis) grew."),
            vec!["Strains (B. subtilis) grew."]
        );
        assert_eq!(
            split("The answer was no. Then we left."),
            vec!["The answer was no.", "Then we left."]
        );
        // "?" and "!" end sentences even after an abbreviation-like word
        assert_eq!(split("Was it Dr? Yes."), vec!["Was it Dr?", "Yes."]);
        // a vitamin's capital letter is taken as an initial (a known miss)
        assert_eq!(
            split("Take vitamin A. Then rest."),
            vec!["Take vitamin A. Then rest."]
        );
    }

    #[test]
    fn blank_lines_always_split_single_newlines_do_not() {
        assert_eq!(
            split("Title without period\n\nFirst line\ncontinues here. Second.\n  \n\tlast one"),
            vec![
                "Title without period",
                "First line\ncontinues here.",
                "Second.",
                "last one"
            ]
        );
        assert_eq!(split("a\r\n\r\nb"), vec!["a", "b"]);
        assert_eq!(split("\n\nx.\n\n\n"), vec!["x."]);
    }

    #[test]
    fn pieces_are_slices_in_order_and_non_ascii_is_safe() {
        let t = "Über alles. Ça va? Ωmega rises… Ende.";
        let s = split(t);
        assert_eq!(s, vec!["Über alles.", "Ça va?", "Ωmega rises… Ende."]);
        let mut at = 0;
        for p in &s {
            let off = p.as_ptr() as usize - t.as_ptr() as usize;
            assert!(off >= at);
            at = off + p.len();
        }
    }

    fn chunker() -> Chunker {
        Chunker::for_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert"))
            .unwrap()
    }

    #[test]
    fn chunks_follow_the_tokens() {
        let c = chunker();
        let text = "the cat sat on the mat and then the dog came in, which was a surprise to everyone there";
        let spans = c.token_spans(text).unwrap();
        assert!(spans.len() > 8, "{spans:?}");
        let chunks = c.chunks(text, 8).unwrap();
        assert_eq!(chunks.len(), spans.len().div_ceil(8));
        // every chunk is a slice of the text, in order, and they cover all tokens
        let mut at = 0;
        for ch in &chunks {
            let off = text[at..].find(ch).unwrap() + at;
            at = off + ch.len();
        }
        assert_eq!(chunks[0], &text[spans[0].0..spans[7].1]);
        assert_eq!(
            *chunks.last().unwrap(),
            &text[spans[(chunks.len() - 1) * 8].0..spans.last().unwrap().1]
        );
        // one chunk when the text is short
        assert_eq!(c.chunks("the cat", 8).unwrap(), vec!["the cat"]);
        assert!(c.chunks("   ", 8).unwrap().is_empty());
        assert!(c.chunks("x", 0).is_err());
        // truncation in tokenizer.json does not cut long documents
        let long = "word ".repeat(300);
        assert!(c.token_spans(&long).unwrap().len() >= 300);
    }
}
