//! Property tests of the curriculum syntax: the canonical string round-trips,
//! any spacing parses the same, and arbitrary text never panics.

use proptest::prelude::*;
use tandem_train::curriculum::{Band, Curriculum};

/// A band with `-1 <= lo < hi <= 1`.
fn band() -> impl Strategy<Value = Band> {
    (1usize..10_000, -1.0f32..1.0, 0.0f32..=1.0).prop_map(|(count, lo, t)| {
        let hi = lo + (1.0 - lo) * t;
        let hi = if hi > lo { hi.min(1.0) } else { 1.0 };
        Band { count, lo, hi }
    })
}

/// The canonical text of a random valid curriculum: phase lengths and specs.
fn curriculum_text() -> impl Strategy<Value = String> {
    prop::collection::vec((1usize..20, prop::option::of(band())), 1..8).prop_map(|phases| {
        let mut first = 0;
        let mut parts = Vec::new();
        for (len, band) in phases {
            let last = first + len - 1;
            let range = if len == 1 {
                format!("{first}")
            } else {
                format!("{first}-{last}")
            };
            let spec = band.map_or("none".to_string(), |b| {
                format!("{}@{}-{}", b.count, b.lo, b.hi)
            });
            parts.push(format!("{range}:{spec}"));
            first = last + 1;
        }
        parts.join(";")
    })
}

proptest! {
    #[test]
    fn display_parse_round_trip(text in curriculum_text()) {
        let c: Curriculum = text.parse().unwrap();
        prop_assert_eq!(c.to_string(), text.clone());
        let back: Curriculum = c.to_string().parse().unwrap();
        prop_assert_eq!(&back, &c);
        let last = c.phases().last().unwrap().last;
        prop_assert!(c.check_covers(last + 1).is_ok());
        prop_assert!(c.check_covers(last + 2).is_err());
        for p in c.phases() {
            prop_assert_eq!(c.band(p.first), p.band);
            prop_assert_eq!(c.band(p.last), p.band);
        }
    }

    #[test]
    fn spacing_does_not_matter(text in curriculum_text(), spaces in prop::collection::vec(0usize..3, 64)) {
        // Put 0-2 spaces around every separator.
        let mut spaced = String::new();
        let mut i = 0;
        for ch in text.chars() {
            if matches!(ch, ';' | ':' | '@') {
                spaced.push_str(&" ".repeat(spaces[i % spaces.len()]));
                spaced.push(ch);
                spaced.push_str(&" ".repeat(spaces[(i + 1) % spaces.len()]));
                i += 2;
            } else {
                spaced.push(ch);
            }
        }
        let c: Curriculum = spaced.parse().unwrap();
        prop_assert_eq!(c.to_string(), text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[0-9:;@. none-]{0,30}") {
        match text.parse::<Curriculum>() {
            Ok(c) => {
                let back: Curriculum = c.to_string().parse().unwrap();
                prop_assert_eq!(back, c);
            }
            Err(e) => {
                prop_assert!(e.pos <= text.chars().count());
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}
