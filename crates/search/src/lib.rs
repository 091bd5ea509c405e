//! tandem-search: nearest-neighbour search over a [`tandem_bank::Bank`].
//!
//! Everything downstream talks to one object-safe trait, [`Index`]:
//!
//! * [`Flat`]: exact search, a multi-threaded scan with a fused top-k: int8
//!   (AVX512-VNNI) or float32 (blocked matrix multiply), each score with a
//!   proven error bound, then an exact float32 rescore of the rows that can
//!   still reach the top-k; float32 and float16 banks (float16 stays float16
//!   in memory).
//! * [`Hnsw`]: approximate search through usearch's HNSW graph, built from a
//!   bank, saved, loaded or memory-mapped, guarded by a JSON sidecar that ties
//!   the index to the bank it was built from.
//! * [`MaxSim`]: exact late-interaction (ColBERT) search over a
//!   [`tandem_bank::MultiBank`], documents scored by MaxSim.
//! * [`Plaid`]: a PLAID-style index over a multi-vector bank (centroids,
//!   2- or 4-bit residuals, inverted lists; candidates by centroid
//!   interaction, exact MaxSim re-ranking), saved as a folder of arrays,
//!   memory-mapped, tied to its bank by a JSON sidecar.
//!
//! Results are `(bank row, score)` pairs, best first; ties are broken by the
//! lower row. Scores are inner products, or cosine similarities.

mod error;
mod exact;
mod flat;
mod hnsw;
mod int8;
mod maxsim;
mod plaid;
mod topk;

use std::fmt;
use std::str::FromStr;

pub use error::SearchError;
pub use flat::Flat;
pub use hnsw::{sidecar_path, BankFingerprint, Hnsw, HnswParams, HnswSidecar, Scalar};
pub use maxsim::{MaxSim, BLOCK_TOKENS};
pub use plaid::{
    default_centroids, is_plaid_index, Plaid, PlaidParams, PlaidSearch, PlaidSidecar, PLAID_SIDECAR,
};

/// One search result: `(bank row, score)`. Lists of hits are best first.
pub type Hit = (u32, f32);

/// A searchable collection of vectors.
pub trait Index: Send + Sync {
    /// Number of vectors (bank rows) in the index.
    fn len(&self) -> usize;
    /// Whether the index holds no vectors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Dimension of every vector.
    fn dim(&self) -> usize;
    /// The similarity the scores are measured in.
    fn metric(&self) -> Metric;
    /// queries: row-major (nq, dim) f32. exclude: empty slice = no exclusions,
    /// else one list of bank rows per query that must never be returned.
    ///
    /// Returns one list of at most `k` hits per query, best first (a query
    /// with fewer than `k` candidates left after exclusion gets what there is).
    fn search(
        &self,
        queries: &[f32],
        k: usize,
        exclude: &[Vec<u32>],
    ) -> Result<Vec<Vec<Hit>>, SearchError>;
}

/// The similarity used to rank bank rows against a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Inner product `q . x` (`"ip"`).
    InnerProduct,
    /// Cosine similarity `q . x / (|q| |x|)` (`"cosine"`); a zero vector scores 0.
    Cosine,
}

impl Metric {
    /// The name used on the command line and in sidecar files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = SearchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ip" | "inner_product" | "dot" => Ok(Metric::InnerProduct),
            "cosine" | "cos" => Ok(Metric::Cosine),
            _ => Err(SearchError::UnknownMetric(s.to_string())),
        }
    }
}

/// The checks every [`Index::search`] makes before it looks at a vector:
/// `k` in `1..=rows`, query length a multiple of `dim`, finite queries, and one
/// exclusion list per query (or none). Returns the number of queries.
pub(crate) fn check_request(
    rows: usize,
    dim: usize,
    queries: &[f32],
    k: usize,
    exclude: &[Vec<u32>],
) -> Result<usize, SearchError> {
    if k == 0 {
        return Err(SearchError::ZeroK);
    }
    if k > rows {
        return Err(SearchError::KTooLarge { k, rows });
    }
    if !queries.len().is_multiple_of(dim) {
        return Err(SearchError::QueryDim {
            len: queries.len(),
            dim,
        });
    }
    let nq = queries.len() / dim;
    if let Some(row) = queries
        .chunks_exact(dim)
        .position(|q| q.iter().any(|x| !x.is_finite()))
    {
        return Err(SearchError::NonFiniteQuery { row });
    }
    if !exclude.is_empty() && exclude.len() != nq {
        return Err(SearchError::ExcludeCount {
            lists: exclude.len(),
            queries: nq,
        });
    }
    for (query, list) in exclude.iter().enumerate() {
        if let Some(&row) = list.iter().find(|&&r| r as usize >= rows) {
            return Err(SearchError::ExcludeRow { query, row, rows });
        }
    }
    Ok(nq)
}

/// How [`Flat`] scans the bank. The results are the same either way: the
/// scan only decides which rows are rescored exactly in float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// The fastest exact scan the CPU has: int8 with AVX512-VNNI, else float32 (`"auto"`).
    #[default]
    Auto,
    /// Float32 only (`"f32"`): no int8 copy of the bank.
    F32,
}

impl Precision {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = SearchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "float32" => Ok(Precision::F32),
            _ => Err(SearchError::UnknownPrecision(s.to_string())),
        }
    }
}

/// Refuses an output `path` whose folder does not exist (before minutes of
/// building an index to write there).
pub(crate) fn check_out_folder(path: &std::path::Path) -> Result<(), SearchError> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        return Err(SearchError::index(
            path,
            format!(
                "cannot write the index there: the folder {} does not exist",
                folder.display()
            ),
            "create the folder first or choose another output path",
        ));
    }
    Ok(())
}

/// Exclusion lists sorted and deduplicated, so membership is a binary search.
pub(crate) fn sorted_exclusions(exclude: &[Vec<u32>]) -> Vec<Vec<u32>> {
    exclude
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.sort_unstable();
            l.dedup();
            l
        })
        .collect()
}

/// Orders hits best first: higher score, then lower row.
pub(crate) fn hit_order(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_round_trips_through_strings() {
        for m in [Metric::InnerProduct, Metric::Cosine] {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        let e = "l2".parse::<Metric>().unwrap_err().to_string();
        assert!(
            e.contains("l2") && e.contains("ip") && e.contains("cosine"),
            "{e}"
        );
    }

    #[test]
    fn precision_round_trips_through_strings() {
        for p in [Precision::Auto, Precision::F32] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let e = "bf16".parse::<Precision>().unwrap_err().to_string();
        assert!(
            e.contains("bf16") && e.contains("auto") && e.contains("f32"),
            "{e}"
        );
    }

    #[test]
    fn request_checks_name_the_problem_and_the_fix() {
        let q = vec![0.0f32; 6];
        assert!(check_request(5, 3, &q, 0, &[])
            .unwrap_err()
            .to_string()
            .contains("k must be at least 1"));
        let e = check_request(5, 3, &q, 6, &[]).unwrap_err().to_string();
        assert!(e.contains("5 rows") && e.contains("--k 5"), "{e}");
        let e = check_request(5, 4, &q, 2, &[]).unwrap_err().to_string();
        assert!(e.contains("dimension 4"), "{e}");
        let mut bad = q.clone();
        bad[4] = f32::NAN;
        let e = check_request(5, 3, &bad, 2, &[]).unwrap_err().to_string();
        assert!(e.contains("query row 1"), "{e}");
        let e = check_request(5, 3, &q, 2, &[vec![]])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 exclusion lists") && e.contains("2 queries"),
            "{e}"
        );
        let e = check_request(5, 3, &q, 2, &[vec![], vec![5]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 5") && e.contains("query 1"), "{e}");
        assert_eq!(check_request(5, 3, &q, 5, &[vec![4], vec![]]).unwrap(), 2);
    }
}
