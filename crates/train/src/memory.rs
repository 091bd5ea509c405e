//! Memory: resident-set readings, human sizes, a growth watch and estimates.
//!
//! The trainer logs [`rss_bytes`] every N steps, warns through [`RssWatch`]
//! when it grows past a baseline, and prints an [`Estimate`] table before it
//! allocates so that a run that cannot fit fails before it starts.

use std::fmt::Write as _;

/// The resident set size of this process in bytes (`/proc/self/statm`
/// resident pages times the page size); `None` where that is unavailable
/// (not Linux, or `/proc` not mounted).
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads a configuration value; it has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).ok().map(|p| pages * p)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Binary units, smallest first, as [`format_size`] writes them.
const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// Parse a size such as `3G`, `3GiB`, `512M`, `1.5g`, `64 KB` or `1048576`
/// (plain bytes). Units are powers of 1024 whatever the spelling (`K`, `KB`,
/// `KiB` are all 1024 bytes), case-insensitive; fractions are rounded to the
/// nearest byte. The error says what was wrong and what is accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let hint = "write a size such as 3G, 3GiB, 512M, 1.5g or a plain number of bytes";
    if num.is_empty() {
        return Err(format!("size {s:?} does not start with a number; {hint}"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: {num:?} is not a number; {hint}"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("size {s:?}: unknown unit {unit:?}; {hint}")),
    };
    let bytes = (value * (1u64 << shift) as f64).round();
    // 2^64 as f64 is exact; anything at or above it does not fit.
    if bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!(
            "size {s:?} is too large (the limit is 16 EiB); {hint}"
        ));
    }
    Ok(bytes as u64)
}

/// A size for people: `512 B`, `1.50 KiB`, `3.00 GiB` (powers of 1024).
pub fn format_size(bytes: u64) -> String {
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Warns when the resident set grows past `baseline * (1 + warn_growth)`:
/// once when it first crosses, then again each time the excess over the
/// baseline has doubled since the last warning, never on every call.
#[derive(Debug, Clone)]
pub struct RssWatch {
    baseline: u64,
    warn_growth: f64,
    /// Excess over the baseline that triggers the next warning.
    next_excess: u64,
}

impl RssWatch {
    /// Watch growth above `baseline` bytes; `warn_growth` is a fraction
    /// (`0.2` warns at 20% above the baseline; negative values count as 0).
    pub fn new(baseline: u64, warn_growth: f64) -> RssWatch {
        let warn_growth = warn_growth.max(0.0);
        RssWatch {
            baseline,
            warn_growth,
            next_excess: (baseline as f64 * warn_growth) as u64,
        }
    }

    /// The baseline in bytes.
    pub fn baseline(&self) -> u64 {
        self.baseline
    }

    /// Record a reading; `Some(warning)` when it crosses the next threshold.
    pub fn observe(&mut self, rss: u64) -> Option<String> {
        let excess = rss.checked_sub(self.baseline).filter(|&e| e > 0)?;
        if excess <= self.next_excess {
            return None;
        }
        self.next_excess = excess.saturating_mul(2);
        let pct = 100.0 * excess as f64 / self.baseline.max(1) as f64;
        Some(format!(
            "memory: RSS {} is {pct:.0}% above the baseline {} (warning threshold +{:.0}%); \
             memory keeps growing: check caches and queues, lower the batch size or set a memory budget \
             (next warning when the excess reaches {})",
            format_size(rss),
            format_size(self.baseline),
            100.0 * self.warn_growth,
            format_size(self.next_excess)
        ))
    }
}

/// A list of labelled memory needs, printed as a table before allocating.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    items: Vec<(String, u64)>,
}

impl Estimate {
    /// An empty estimate.
    pub fn new() -> Estimate {
        Estimate::default()
    }

    /// Add `bytes` for `label`.
    pub fn add(&mut self, label: impl Into<String>, bytes: u64) -> &mut Estimate {
        self.items.push((label.into(), bytes));
        self
    }

    /// The items in insertion order.
    pub fn items(&self) -> &[(String, u64)] {
        &self.items
    }

    /// The sum of all items (saturating).
    pub fn total(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |acc, (_, b)| acc.saturating_add(*b))
    }

    /// One line per item, labels left-aligned and sizes right-aligned, a rule
    /// and a `total` line.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = self
            .items
            .iter()
            .map(|(l, b)| (l.as_str(), format_size(*b)))
            .chain(std::iter::once(("total", format_size(self.total()))))
            .collect();
        let lw = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let sw = rows.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (i, (label, size)) in rows.iter().enumerate() {
            if i + 1 == rows.len() {
                let _ = writeln!(out, "{}", "-".repeat(lw + 2 + sw));
            }
            let _ = writeln!(out, "{label:<lw$}  {size:>sw$}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("3gb"), Ok(3 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size(" 64 KiB "), Ok(64 << 10));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("10b"), Ok(10));
        assert_eq!(parse_size("0.5k"), Ok(512));
    }

    #[test]
    fn rejects_bad_sizes_with_the_fix() {
        for bad in ["", "G", "-1G", "1.2.3G", "3X", "3 gigs", "99999999999T"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("write a size such as"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(parse_size("3X").unwrap_err().contains("unknown unit \"X\""));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.00 KiB");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(3 << 30), "3.00 GiB");
        assert_eq!(format_size(5 << 40), "5.00 TiB");
        assert_eq!(format_size(u64::MAX), "16777216.00 TiB");
        // What format_size writes, parse_size reads (to its precision).
        assert_eq!(parse_size(&format_size(3 << 29)), Ok(3 << 29));
    }

    #[test]
    fn rss_is_plausible_on_linux() {
        if cfg!(target_os = "linux") {
            let before = rss_bytes().expect("/proc/self/statm is readable on Linux");
            assert!(before > 1 << 20, "a test process holds more than 1 MiB");
            // Touch 64 MiB and see the resident set grow by most of it.
            let big = vec![1u8; 64 << 20];
            let after = rss_bytes().unwrap();
            assert!(after >= before + (48 << 20), "{before} -> {after}");
            assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
        } else {
            assert_eq!(rss_bytes(), None);
        }
    }

    #[test]
    fn watch_warns_once_then_at_each_doubling() {
        let gib = 1u64 << 30;
        let mut w = RssWatch::new(10 * gib, 0.2);
        assert_eq!(w.baseline(), 10 * gib);
        assert_eq!(w.observe(9 * gib), None);
        assert_eq!(w.observe(12 * gib), None, "exactly +20% is not past it");
        let first = w.observe(12 * gib + 1).expect("past +20%");
        assert!(first.contains("above the baseline 10.00 GiB"), "{first}");
        assert!(first.contains("+20%"), "{first}");
        // Warned at an excess of 2 GiB + 1: the next warning comes past twice that.
        for rss in [12 * gib + 2, 13 * gib, 14 * gib + 2] {
            assert_eq!(w.observe(rss), None, "{rss}");
        }
        let second = w.observe(14 * gib + 3).expect("excess doubled");
        assert!(second.contains("RSS 14.00 GiB is 40% above"), "{second}");
        assert_eq!(w.observe(14 * gib + 4), None);
        assert_eq!(w.observe(10 * gib), None, "shrinking never warns");
        assert!(w.observe(30 * gib).is_some());
        assert_eq!(w.observe(30 * gib), None);
    }

    #[test]
    fn estimate_table_is_aligned_with_a_total() {
        let mut e = Estimate::new();
        e.add("bank (f16)", 16_000_000)
            .add("optimizer moments", 2 << 20)
            .add("queue", 512);
        assert_eq!(e.items().len(), 3);
        assert_eq!(e.total(), 16_000_000 + (2 << 20) + 512);
        let t = e.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert_eq!(lines[0], "bank (f16)         15.26 MiB");
        assert_eq!(lines[1], "optimizer moments   2.00 MiB");
        assert_eq!(lines[2], "queue                  512 B");
        assert!(lines[3].chars().all(|c| c == '-'));
        assert_eq!(lines[4], "total              17.26 MiB");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
        assert_eq!(Estimate::new().table(), "----------\ntotal  0 B\n");
    }
}
