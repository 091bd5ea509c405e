//! Measure names: `P@10`, `recall@100`, `success@10` (`hit@10`),
//! `recip_rank` / `recip_rank@10` (`mrr@10`), `ndcg` / `ndcg@10`, `map` /
//! `map@100`, plus trec_eval spellings (`P_10`, `ndcg_cut_10`, `map_cut_100`,
//! `recall_100`, `success_10`).

use std::fmt;
use std::str::FromStr;

use crate::EvalError;

/// A ranking measure with trec_eval 9.0.8 semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Relevant docs in the top k divided by k (trec_eval `P_k`).
    Precision(usize),
    /// Relevant docs in the top k divided by all relevant docs (`recall_k`).
    Recall(usize),
    /// 1 if a relevant doc is in the top k, else 0 (`success_k`).
    Success(usize),
    /// 1 / rank of the first relevant doc; with a cutoff, 0 beyond it.
    RecipRank(Option<usize>),
    /// nDCG with linear gains; with a cutoff, trec_eval's `ndcg_cut_k`.
    Ndcg(Option<usize>),
    /// Average precision; with a cutoff, trec_eval's `map_cut_k` (still divided by all relevant).
    Map(Option<usize>),
}

const HINT: &str = "use one of P@k, recall@k, success@k (hit@k), recip_rank, recip_rank@k (mrr@k), ndcg, ndcg@k, map, map@k with k >= 1, or the trec_eval names P_k, recall_k, success_k, ndcg_cut_k, map_cut_k";

impl FromStr for Measure {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EvalError::UnknownMeasure {
            name: s.to_string(),
            hint: HINT.to_string(),
        };
        let lower = s.trim().to_ascii_lowercase();
        let (name, k) = match lower.split_once('@') {
            Some((n, k)) => (n.strip_suffix("_cut").unwrap_or(n), Some(k)),
            None => match lower.rsplit_once('_') {
                // trec_eval spelling: the suffix after the last '_' is a number.
                Some((n, k)) if k.bytes().all(|b| b.is_ascii_digit()) && !k.is_empty() => {
                    (n.strip_suffix("_cut").unwrap_or(n), Some(k))
                }
                _ => (lower.as_str(), None),
            },
        };
        let k = match k {
            Some(k) => match k.parse::<usize>() {
                Ok(k) if k >= 1 => Some(k),
                _ => return Err(bad()),
            },
            None => None,
        };
        let need = |k: Option<usize>| k.ok_or_else(bad);
        Ok(match name {
            "p" | "precision" => Measure::Precision(need(k)?),
            "recall" | "r" => Measure::Recall(need(k)?),
            "success" | "hit" | "hits" => Measure::Success(need(k)?),
            "recip_rank" | "mrr" | "rr" => Measure::RecipRank(k),
            "ndcg" => Measure::Ndcg(k),
            "map" | "ap" => Measure::Map(k),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, k) = match *self {
            Measure::Precision(k) => ("P", Some(k)),
            Measure::Recall(k) => ("recall", Some(k)),
            Measure::Success(k) => ("success", Some(k)),
            Measure::RecipRank(k) => ("recip_rank", k),
            Measure::Ndcg(k) => ("ndcg", k),
            Measure::Map(k) => ("map", k),
        };
        match k {
            Some(k) => write!(f, "{name}@{k}"),
            None => f.write_str(name),
        }
    }
}

impl Measure {
    /// Parse a comma-separated list such as `ndcg@10,recall@100,map`; a
    /// measure named twice (`ndcg@10,ndcg_cut_10`) is kept once, at its first place.
    pub fn parse_list(list: &str) -> Result<Vec<Measure>, EvalError> {
        let mut out: Vec<Measure> = Vec::new();
        for name in list.split(',').filter(|s| !s.trim().is_empty()) {
            let m = name.parse()?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_aliases() {
        let cases = [
            ("P@10", Measure::Precision(10)),
            ("p_5", Measure::Precision(5)),
            ("recall@100", Measure::Recall(100)),
            ("recall_1000", Measure::Recall(1000)),
            ("success@10", Measure::Success(10)),
            ("hit@1", Measure::Success(1)),
            ("recip_rank", Measure::RecipRank(None)),
            ("recip_rank@10", Measure::RecipRank(Some(10))),
            ("MRR@10", Measure::RecipRank(Some(10))),
            ("ndcg", Measure::Ndcg(None)),
            ("ndcg@10", Measure::Ndcg(Some(10))),
            ("ndcg_cut_10", Measure::Ndcg(Some(10))),
            ("map", Measure::Map(None)),
            ("map@100", Measure::Map(Some(100))),
            ("map_cut_100", Measure::Map(Some(100))),
        ];
        for (s, m) in cases {
            assert_eq!(s.parse::<Measure>().unwrap(), m, "{s}");
            // Display round-trips.
            assert_eq!(m.to_string().parse::<Measure>().unwrap(), m);
        }
    }

    #[test]
    fn rejects_bad_names() {
        for s in [
            "",
            "P",
            "recall",
            "P@0",
            "ndcg@x",
            "foo@10",
            "success@-1",
            "map_cut_",
        ] {
            let e = s.parse::<Measure>().unwrap_err();
            assert!(e.to_string().contains("recall@k"), "{s}: {e}");
        }
        assert_eq!(
            Measure::parse_list("ndcg@10, map,ndcg_cut@10,,NDCG_CUT_10").unwrap(),
            vec![Measure::Ndcg(Some(10)), Measure::Map(None)]
        );
    }
}
