//! The curriculum of mined negatives: which epochs mine how many negatives in
//! which cosine band.
//!
//! Syntax (see `docs/curriculum.md`): phases separated by `;`, each
//! `RANGE:SPEC` where `RANGE` is `first-last` or a single epoch and `SPEC` is
//! `none` or `count@lo-hi`:
//!
//! ```
//! use tandem_train::curriculum::{Band, Curriculum};
//! let c: Curriculum = "0-5:none; 6-10:8@0.82-0.92; 11-30:16@0.84-0.96".parse().unwrap();
//! assert_eq!(c.band(3), None);
//! assert_eq!(c.band(7), Some(Band { count: 8, lo: 0.82, hi: 0.92 }));
//! assert_eq!(c.to_string(), "0-5:none;6-10:8@0.82-0.92;11-30:16@0.84-0.96");
//! assert!(c.check_covers(31).is_ok());
//! assert!(c.check_covers(32).is_err());
//! ```
//!
//! The single word `none` is the curriculum that never mines
//! ([`Curriculum::none`]); it covers every epoch.

use std::fmt;
use std::str::FromStr;

/// How many negatives to mine per example and the cosine band they must lie in.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Band {
    /// Mined negatives per example (at least 1).
    pub count: usize,
    /// Lowest cosine admitted (inclusive), `-1 <= lo < hi`.
    pub lo: f32,
    /// Highest cosine admitted (inclusive), `hi <= 1`.
    pub hi: f32,
}

/// Epochs `first..=last` mine with `band` (`None`: no mined negatives).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Phase {
    /// First epoch of the phase (0-based).
    pub first: usize,
    /// Last epoch of the phase (inclusive).
    pub last: usize,
    /// What to mine; `None` mines nothing.
    pub band: Option<Band>,
}

/// A per-epoch schedule of mined negatives. Phases are ascending,
/// contiguous from epoch 0 and non-overlapping (checked when parsing).
/// No phases at all is [`Curriculum::none`], which never mines.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Curriculum {
    phases: Vec<Phase>,
}

/// A malformed curriculum, or one that does not cover the run's epochs.
/// `Display` is one line; [`CurriculumError::caret`] draws the input with a
/// caret under the offending column.
#[derive(Clone, PartialEq, Debug)]
pub struct CurriculumError {
    /// The curriculum text.
    pub input: String,
    /// 0-based character offset of the problem in `input`.
    pub pos: usize,
    /// What is wrong and how to fix it.
    pub msg: String,
}

impl fmt::Display for CurriculumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "curriculum \"{}\": {} at column {}",
            self.input,
            self.msg,
            self.pos + 1
        )
    }
}

impl std::error::Error for CurriculumError {}

impl CurriculumError {
    /// Two lines: the input, and a caret under the offending character.
    pub fn caret(&self) -> String {
        format!("  {}\n  {}^", self.input, " ".repeat(self.pos))
    }
}

impl Curriculum {
    /// The curriculum that never mines (written `none`).
    pub fn none() -> Curriculum {
        Curriculum { phases: Vec::new() }
    }

    /// The phases, ascending (empty for [`Curriculum::none`]).
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// What epoch `epoch` mines: `None` when its phase says `none`, when the
    /// curriculum is `none`, or when no phase covers it (see
    /// [`Curriculum::check_covers`]).
    pub fn band(&self, epoch: usize) -> Option<Band> {
        self.phases
            .iter()
            .find(|p| p.first <= epoch && epoch <= p.last)
            .and_then(|p| p.band)
    }

    /// Whether any epoch mines at all.
    pub fn mines(&self) -> bool {
        self.phases.iter().any(|p| p.band.is_some())
    }

    /// Check that every epoch of `0..epochs` lies in a phase. The error names
    /// the first uncovered epoch and points at the end of the last phase.
    pub fn check_covers(&self, epochs: usize) -> Result<(), CurriculumError> {
        let Some(last) = self.phases.last() else {
            return Ok(());
        };
        if epochs == 0 || last.last >= epochs - 1 {
            return Ok(());
        }
        let input = self.to_string();
        // Point at the last epoch number of the last phase.
        let phase_start = input.rfind(';').map_or(0, |i| i + 1);
        let colon = phase_start + input[phase_start..].find(':').unwrap_or(0);
        let end_start = input[phase_start..colon]
            .find('-')
            .map_or(phase_start, |i| phase_start + i + 1);
        Err(CurriculumError {
            pos: input[..end_start].chars().count(),
            msg: format!(
                "the run has {epochs} epochs but the curriculum ends at epoch {} (epochs count from 0), so epoch {} has no phase; \
                 fix: extend the last phase to end at epoch {} or add a phase for epochs {}-{}",
                last.last,
                last.last + 1,
                epochs - 1,
                last.last + 1,
                epochs - 1
            ),
            input,
        })
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}-{}", self.count, self.lo, self.hi)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}:", self.first)?;
        } else {
            write!(f, "{}-{}:", self.first, self.last)?;
        }
        match &self.band {
            Some(b) => write!(f, "{b}"),
            None => f.write_str("none"),
        }
    }
}

/// The canonical form: no spaces, single epochs without a range, `none` for
/// [`Curriculum::none`]. Parsing it gives back an equal curriculum.
impl fmt::Display for Curriculum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.phases.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.phases.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Example syntax quoted in error messages.
const EXAMPLE: &str = "`0-5:none;6-10:8@0.82-0.92`";

/// A cursor over the characters of the input.
struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> CurriculumError {
        CurriculumError {
            input: self.input.to_string(),
            pos,
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consume `c` (after whitespace) or fail with `what`.
    fn expect(&mut self, c: char, what: &str) -> Result<(), CurriculumError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(self.pos, format!("expected {what}, found {}", self.found())))
        }
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "the end".to_string(),
        }
    }

    /// Consume characters while `keep` holds; return where they start and the text.
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> (usize, String) {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        (start, self.chars[start..self.pos].iter().collect())
    }

    /// A non-negative integer (after whitespace); `what` names it in errors.
    fn integer(&mut self, what: &str) -> Result<(usize, usize), CurriculumError> {
        self.skip_ws();
        let (start, text) = self.take_while(|c| c.is_ascii_digit());
        if text.is_empty() {
            return Err(self.err(start, format!("expected {what}, found {}", self.found())));
        }
        let n = text.parse().map_err(|_| {
            self.err(
                start,
                format!("{what} {text} is too large; use a number below 2^64"),
            )
        })?;
        Ok((start, n))
    }

    /// A decimal cosine such as `0.82`, `-0.1` or `1` (after whitespace).
    fn cosine(&mut self, what: &str) -> Result<(usize, f32), CurriculumError> {
        self.skip_ws();
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        let (_, digits) = self.take_while(|c| c.is_ascii_digit() || c == '.');
        let text: String = self.chars[start..self.pos].iter().collect();
        if !digits.chars().any(|c| c.is_ascii_digit()) {
            self.pos = start;
            return Err(self.err(
                start,
                format!(
                    "expected {what} (a cosine such as 0.82), found {}",
                    self.found()
                ),
            ));
        }
        let v: f32 = text.parse().map_err(|_| {
            self.err(
                start,
                format!("{what} {text:?} is not a number; write a cosine such as 0.82"),
            )
        })?;
        if !(-1.0..=1.0).contains(&v) {
            return Err(self.err(
                start,
                format!("{what} {text} is outside [-1, 1]; a cosine lies between -1 and 1"),
            ));
        }
        Ok((start, v))
    }

    /// `none` or `count@lo-hi`.
    fn spec(&mut self) -> Result<Option<Band>, CurriculumError> {
        self.skip_ws();
        let (start, word) = self.take_while(|c| c.is_ascii_alphabetic());
        if !word.is_empty() {
            if word == "none" {
                return Ok(None);
            }
            return Err(self.err(
                start,
                format!(
                    "expected `none` or `count@lo-hi` after ':', found {word:?}; e.g. {EXAMPLE}"
                ),
            ));
        }
        let (count_pos, count) = self.integer("`none` or a negative count (`count@lo-hi`)")?;
        if count == 0 {
            return Err(self.err(
                count_pos,
                "a band of 0 negatives is not allowed; write `none` for a phase without mined negatives",
            ));
        }
        self.expect('@', "'@' after the negative count (`count@lo-hi`)")?;
        let (lo_pos, lo) = self.cosine("the band's low cosine")?;
        self.expect(
            '-',
            "'-' between the band's low and high cosines (`count@lo-hi`)",
        )?;
        let (hi_pos, hi) = self.cosine("the band's high cosine")?;
        if hi <= lo {
            return Err(self.err(
                hi_pos.max(lo_pos),
                format!("band {lo}-{hi} is empty: the high cosine must be above the low one (write lo-hi with lo < hi)"),
            ));
        }
        Ok(Some(Band { count, lo, hi }))
    }

    /// One `RANGE:SPEC`, checked against the epoch it must start at.
    fn phase(&mut self, next_epoch: usize) -> Result<Phase, CurriculumError> {
        self.skip_ws();
        if matches!(self.peek(), Some(';') | None) {
            return Err(self.err(
                self.pos,
                format!(
                    "empty phase; each phase is `epochs:spec`, separated by ';', e.g. {EXAMPLE}"
                ),
            ));
        }
        let (first_pos, first) = self.integer("an epoch number")?;
        self.skip_ws();
        let last = if self.peek() == Some('-') {
            self.pos += 1;
            let (last_pos, last) = self.integer("the last epoch of the range")?;
            if last < first {
                return Err(self.err(
                    last_pos,
                    format!("range {first}-{last} runs backwards; write the lower epoch first ({last}-{first})"),
                ));
            }
            last
        } else {
            first
        };
        if first != next_epoch {
            let msg = if next_epoch == 0 {
                format!("the first phase starts at epoch {first}; it must start at epoch 0 (epochs count from 0)")
            } else if first < next_epoch {
                format!(
                    "phase starting at epoch {first} overlaps the previous phase, which ends at epoch {}; start it at {next_epoch}",
                    next_epoch - 1
                )
            } else {
                format!(
                    "phase starts at epoch {first} but the previous phase ends at epoch {}, leaving a gap; start it at {next_epoch}",
                    next_epoch - 1
                )
            };
            return Err(self.err(first_pos, msg));
        }
        self.expect(':', "':' after the epoch range (`epochs:spec`)")?;
        let band = self.spec()?;
        Ok(Phase { first, last, band })
    }
}

impl FromStr for Curriculum {
    type Err = CurriculumError;

    fn from_str(input: &str) -> Result<Curriculum, CurriculumError> {
        let mut p = Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        };
        p.skip_ws();
        if p.peek().is_none() {
            return Err(p.err(
                p.pos,
                format!("empty curriculum; write `none` for no mined negatives, or phases such as {EXAMPLE}"),
            ));
        }
        if input.trim() == "none" {
            return Ok(Curriculum::none());
        }
        let mut phases: Vec<Phase> = Vec::new();
        loop {
            let next_epoch = match phases.last() {
                None => 0,
                Some(prev) => prev.last.checked_add(1).ok_or_else(|| {
                    p.err(
                        p.pos,
                        "the previous phase already ends at the largest epoch; remove this phase",
                    )
                })?,
            };
            phases.push(p.phase(next_epoch)?);
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(';') => p.pos += 1,
                Some(c) => {
                    return Err(p.err(
                        p.pos,
                        format!("unexpected '{c}'; phases are separated by ';', e.g. {EXAMPLE}"),
                    ))
                }
            }
        }
        Ok(Curriculum { phases })
    }
}

impl serde::Serialize for Curriculum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Curriculum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Curriculum, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `input`, expecting an error at `pos` whose message contains `needle`.
    fn fails_at(input: &str, pos: usize, needle: &str) {
        let e = input.parse::<Curriculum>().unwrap_err();
        assert_eq!(e.pos, pos, "{input:?}: {e}");
        assert!(e.msg.contains(needle), "{input:?}: {e}");
        assert_eq!(e.input, input);
    }

    #[test]
    fn parses_the_example_with_spaces() {
        let c: Curriculum = " 0 - 5 : none ;6-10: 8 @ 0.82 - 0.92;11-30:16@0.84-0.96 "
            .parse()
            .unwrap();
        assert_eq!(c.phases().len(), 3);
        assert_eq!(
            c.phases()[1],
            Phase {
                first: 6,
                last: 10,
                band: Some(Band {
                    count: 8,
                    lo: 0.82,
                    hi: 0.92
                })
            }
        );
        assert_eq!(c.band(0), None);
        assert_eq!(c.band(5), None);
        assert_eq!(c.band(6).unwrap().count, 8);
        assert_eq!(c.band(10).unwrap().count, 8);
        assert_eq!(c.band(11).unwrap().count, 16);
        assert_eq!(c.band(30).unwrap().hi, 0.96);
        assert_eq!(c.band(31), None);
        assert!(c.mines());
        assert_eq!(
            c.to_string(),
            "0-5:none;6-10:8@0.82-0.92;11-30:16@0.84-0.96"
        );
    }

    #[test]
    fn single_epochs_and_negative_cosines() {
        let c: Curriculum = "0-6:none;7:4@-0.5-0.9;8:1@-1--0.25".parse().unwrap();
        assert_eq!(
            c.band(7),
            Some(Band {
                count: 4,
                lo: -0.5,
                hi: 0.9
            })
        );
        assert_eq!(
            c.band(8),
            Some(Band {
                count: 1,
                lo: -1.0,
                hi: -0.25
            })
        );
        assert_eq!(c.to_string(), "0-6:none;7:4@-0.5-0.9;8:1@-1--0.25");
    }

    #[test]
    fn none_never_mines_and_covers_everything() {
        let c: Curriculum = "  none ".parse().unwrap();
        assert_eq!(c, Curriculum::none());
        assert_eq!(c, Curriculum::default());
        assert_eq!(c.to_string(), "none");
        assert!(!c.mines());
        assert_eq!(c.band(0), None);
        assert!(c.check_covers(1_000_000).is_ok());
        // A phase list of only `none` phases is not `none()` but also never mines.
        let c: Curriculum = "0-3:none".parse().unwrap();
        assert!(!c.mines());
    }

    #[test]
    fn malformed_inputs_point_at_the_problem() {
        fails_at("", 0, "empty curriculum");
        fails_at("   ", 3, "empty curriculum");
        fails_at("x", 0, "expected an epoch number");
        fails_at("0-5", 3, "expected ':'");
        fails_at("0-5:", 4, "expected `none` or a negative count");
        fails_at("0-5:nope", 4, "expected `none` or `count@lo-hi`");
        fails_at("0-5:0@0.1-0.2", 4, "write `none`");
        fails_at("0-5:8", 5, "expected '@'");
        fails_at("0-5:8@", 6, "low cosine");
        fails_at("0-5:8@0.5", 9, "'-' between");
        fails_at("0-5:8@0.5-", 10, "high cosine");
        fails_at("0-5:8@0.9-0.5", 10, "band 0.9-0.5 is empty");
        fails_at("0-5:8@0.5-0.5", 10, "is empty");
        fails_at("0-5:8@1.5-2", 6, "outside [-1, 1]");
        fails_at("0-5:8@0.1-1.01", 10, "outside [-1, 1]");
        fails_at("0-5:8@0.1.2-0.5", 6, "not a number");
        fails_at("0-5:8@.-0.5", 6, "low cosine");
        fails_at("5-3:none", 2, "runs backwards");
        fails_at("1-3:none", 0, "must start at epoch 0");
        fails_at("0-3:none;3-5:none", 9, "overlaps");
        fails_at("0-3:none;5-6:none", 9, "gap");
        fails_at("0-3:none;;4:none", 9, "empty phase");
        fails_at("0-3:none;", 9, "empty phase");
        fails_at("0-3:none 4-5:none", 9, "separated by ';'");
        fails_at("0-99999999999999999999:none", 2, "too large");
        fails_at("none;0:none", 0, "expected an epoch number");
        fails_at("é:none", 0, "expected an epoch number");
        fails_at("0-2:1@0.1-0.2;é", 14, "expected an epoch number");
    }

    #[test]
    fn display_is_one_line_and_caret_points_at_the_column() {
        let e = "0-5:8@0.9-0.5".parse::<Curriculum>().unwrap_err();
        let line = e.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("curriculum \"0-5:8@0.9-0.5\": band 0.9-0.5 is empty"),
            "{line}"
        );
        assert!(line.ends_with(" at column 11"), "{line}");
        assert_eq!(e.caret(), "  0-5:8@0.9-0.5\n            ^");
    }

    #[test]
    fn check_covers_names_the_epoch_and_the_fix() {
        let c: Curriculum = "0-5:none;6-10:8@0.82-0.92".parse().unwrap();
        assert!(c.check_covers(0).is_ok());
        assert!(c.check_covers(11).is_ok());
        let e = c.check_covers(13).unwrap_err();
        assert!(e.msg.contains("epoch 11 has no phase"), "{e}");
        assert!(e.msg.contains("end at epoch 12"), "{e}");
        assert_eq!(e.input, "0-5:none;6-10:8@0.82-0.92");
        assert_eq!(e.pos, 11, "points at the `10`: {}", e.caret());
        let single: Curriculum = "0:none".parse().unwrap();
        assert_eq!(single.check_covers(2).unwrap_err().pos, 0);
    }

    #[test]
    fn serde_uses_the_string() {
        let c: Curriculum = "0-1:none;2:3@0.1-0.2".parse().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"0-1:none;2:3@0.1-0.2\"");
        let back: Curriculum = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let e = serde_json::from_str::<Curriculum>("\"0-1:0@0.1-0.2\"").unwrap_err();
        assert!(e.to_string().contains("write `none`"), "{e}");
    }
}
