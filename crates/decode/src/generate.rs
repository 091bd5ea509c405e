//! The generation loop: a next-vector model proposes a vector from the
//! context, the decoder decides, the emitted vector joins the context.

use tandem_bank::Bank;
use tandem_nn::{Batch, Model, QueryCache};
use tandem_search::{Flat, Index, Metric};

use crate::decoder::{Candidate, Decoder, Retriever, Step};
use crate::lane::Lane;

/// Candidates from the bank searched with the proposal itself (cosine).
pub struct BankRetriever<'a> {
    bank: &'a Bank,
    index: Flat<'a>,
}

impl<'a> BankRetriever<'a> {
    /// Exact cosine search over `bank`.
    pub fn new(bank: &'a Bank) -> Result<BankRetriever<'a>, String> {
        let index = Flat::new(bank, Metric::Cosine).map_err(|e| e.to_string())?;
        Ok(BankRetriever { bank, index })
    }
}

impl Retriever for BankRetriever<'_> {
    fn candidates(
        &self,
        _context: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> Result<Vec<Candidate>, String> {
        search_bank(self.bank, &self.index, v, exclude, k)
    }
}

/// Candidates found by a trained two-tower model: its query tower encodes
/// the context, its doc vectors of the bank are searched (inner product), and
/// the candidates are the bank's own vectors of the rows found.
pub struct TowerRetriever<'a> {
    model: &'a Model,
    bank: &'a Bank,
    index: Flat<'a>,
    len: usize,
}

impl<'a> TowerRetriever<'a> {
    /// Searches `docs` (the doc tower's vectors of `bank`, row for row; the
    /// bank itself for an identity doc tower) with the query tower of
    /// `model` over the last `len` context vectors.
    pub fn new(
        model: &'a Model,
        bank: &'a Bank,
        docs: &'a Bank,
        len: usize,
    ) -> Result<TowerRetriever<'a>, String> {
        if docs.rows() != bank.rows() || docs.dim() != model.config().dim {
            return Err(format!(
                "the doc vectors ({} x {}) do not match the bank ({} x {})",
                docs.rows(),
                docs.dim(),
                bank.rows(),
                bank.dim()
            ));
        }
        let index = Flat::new(docs, Metric::InnerProduct).map_err(|e| e.to_string())?;
        Ok(TowerRetriever {
            model,
            bank,
            index,
            len,
        })
    }
}

impl Retriever for TowerRetriever<'_> {
    fn candidates(
        &self,
        context: &[Vec<f32>],
        _v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> Result<Vec<Candidate>, String> {
        let q = propose(self.model, context, self.len, &mut QueryCache::default());
        search_bank(self.bank, &self.index, &q, exclude, k)
    }
}

/// The top `k` rows of `index` for `query` (never one of `exclude`), as
/// candidates carrying the bank's vectors.
fn search_bank(
    bank: &Bank,
    index: &Flat<'_>,
    query: &[f32],
    exclude: &[u32],
    k: usize,
) -> Result<Vec<Candidate>, String> {
    let mut excl = exclude.to_vec();
    excl.sort_unstable();
    excl.dedup();
    let k = k.min(bank.rows().saturating_sub(excl.len())).max(1);
    let hits = index.search(query, k, &[excl]).map_err(|e| e.to_string())?;
    Ok(hits
        .into_iter()
        .flatten()
        .map(|(row, _)| Candidate {
            row,
            vector: bank.row_f32(row as usize).into_owned(),
        })
        .collect())
}

/// The proposal of `model` for a context of vectors (oldest first; the last
/// `len` are used).
pub fn propose(
    model: &Model,
    context: &[Vec<f32>],
    len: usize,
    cache: &mut QueryCache,
) -> Vec<f32> {
    let d = model.config().dim;
    let ctx = &context[context.len().saturating_sub(len)..];
    let mut x = vec![0.0; len * d];
    for (k, v) in ctx.iter().enumerate() {
        let t = len - ctx.len() + k;
        x[t * d..(t + 1) * d].copy_from_slice(v);
    }
    let lens = [ctx.len()];
    model.forward_queries(
        &Batch {
            x: &x,
            lens: &lens,
            len,
            dim: d,
        },
        cache,
    );
    cache.queries().to_vec()
}

/// Generates `steps` vectors after `start` under `lane`; every step's
/// emitted vector joins the context of the next. `tick` is called after each
/// step (a progress bar).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &Model,
    start: &[Vec<f32>],
    len: usize,
    steps: usize,
    lane: &Lane,
    decoder: &mut Decoder,
    retriever: &dyn Retriever,
    tick: &dyn Fn(),
) -> Vec<Step> {
    let mut context = start.to_vec();
    let mut cache = QueryCache::default();
    (0..steps)
        .map(|_| {
            let v = propose(model, &context, len, &mut cache);
            let step = decoder.step(lane, &context, &v, retriever);
            context.push(step.vector.clone());
            tick();
            step
        })
        .collect()
}
