//! Training examples made ready for steps: every distinct text tokenised
//! once, batches without duplicate texts (sentence-transformers'
//! NoDuplicatesBatchSampler), and each batch's [`TextBatch`] with its
//! masks: an in-batch document that is a positive of the query (or the
//! same text as its positive) is hidden from it, not counted as a negative.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::{ColBert, Examples, Side, TextBatch, TextError, Towers};

/// One example by text index.
#[derive(Debug, Clone)]
struct Item {
    query: usize,
    positives: Vec<usize>,
    negatives: Vec<usize>,
    pos_scores: Vec<f32>,
    neg_scores: Vec<f32>,
}

/// What mining needs of a training set: the tokens of every distinct
/// query and document, and each query's positives (document indices,
/// ascending). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MineTexts {
    /// Token ids of every distinct query text (prompt included).
    pub queries: Arc<Vec<Vec<u32>>>,
    /// Token ids of every distinct document text (prompt included): the
    /// examples' positives and negatives, then the extra corpus.
    pub docs: Arc<Vec<Vec<u32>>>,
    /// The positives of each query, ascending.
    pub positives: Arc<Vec<Vec<u32>>>,
}

/// Training examples with their texts tokenised.
#[derive(Debug, Clone)]
pub struct TrainSet {
    texts: MineTexts,
    items: Vec<Item>,
    /// Every positive document of each query text.
    positives: Vec<HashSet<usize>>,
    /// Texts cut to the model's length.
    pub truncated: usize,
}

/// Distinct texts in first-appearance order, each with its index.
#[derive(Debug, Default)]
pub struct Interner {
    index: HashMap<String, usize>,
    /// The texts, in the order they were first seen.
    pub texts: Vec<String>,
}

impl Interner {
    /// The index of `text`, added if new.
    pub fn id(&mut self, text: &str) -> usize {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        self.texts.push(text.to_string());
        self.index.insert(text.to_string(), self.texts.len() - 1);
        self.texts.len() - 1
    }
}

/// How a model tokenises the texts of each side for training: the token
/// ids of each text and whether it was cut to the length.
pub trait Tokenize {
    /// The tokens of `texts` on `side`.
    fn tokenize_side(
        &self,
        side: Side,
        texts: &[String],
    ) -> Result<Vec<(Vec<u32>, bool)>, TextError>;
}

impl Tokenize for Towers {
    /// Queries with the query tower's tokenizer, documents with the
    /// document tower's.
    fn tokenize_side(
        &self,
        side: Side,
        texts: &[String],
    ) -> Result<Vec<(Vec<u32>, bool)>, TextError> {
        match side {
            Side::Query => self.query().tokenize(texts),
            Side::Document => self.document().tokenize(texts),
        }
    }
}

impl Tokenize for ColBert {
    /// Before query expansion (done per batch): [`ColBert::tokenize_texts`].
    fn tokenize_side(
        &self,
        side: Side,
        texts: &[String],
    ) -> Result<Vec<(Vec<u32>, bool)>, TextError> {
        self.tokenize_texts(texts, side)
    }
}

impl TrainSet {
    /// Tokenises the examples for `model` (queries as its query side
    /// tokenises them, documents as its document side does), queries
    /// prefixed with `query_prompt` and documents with `doc_prompt`; the
    /// documents of `corpus` join the examples' (candidates for mined
    /// negatives).
    pub fn new(
        examples: &Examples,
        corpus: &[String],
        model: &dyn Tokenize,
        query_prompt: &str,
        doc_prompt: &str,
    ) -> Result<TrainSet, TextError> {
        let (mut qs, mut ds) = (Interner::default(), Interner::default());
        let items: Vec<Item> = examples
            .examples
            .iter()
            .map(|e| Item {
                query: qs.id(&e.query),
                positives: e.positives.iter().map(|t| ds.id(t)).collect(),
                negatives: e.negatives.iter().map(|t| ds.id(t)).collect(),
                pos_scores: e.pos_scores.clone(),
                neg_scores: e.neg_scores.clone(),
            })
            .collect();
        for t in corpus {
            ds.id(t);
        }
        let mut positives = vec![HashSet::new(); qs.texts.len()];
        for it in &items {
            positives[it.query].extend(it.positives.iter().copied());
        }
        let tokenize = |side: Side,
                        texts: &[String],
                        prompt: &str|
         -> Result<(Vec<Vec<u32>>, usize), TextError> {
            let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
            let tokens = model.tokenize_side(side, &prompted)?;
            let cut = tokens.iter().filter(|t| t.1).count();
            Ok((tokens.into_iter().map(|t| t.0).collect(), cut))
        };
        let (queries, cq) = tokenize(Side::Query, &qs.texts, query_prompt)?;
        let (docs, cd) = tokenize(Side::Document, &ds.texts, doc_prompt)?;
        let sorted = positives
            .iter()
            .map(|p| {
                let mut v: Vec<u32> = p.iter().map(|&d| d as u32).collect();
                v.sort_unstable();
                v
            })
            .collect();
        Ok(TrainSet {
            texts: MineTexts {
                queries: Arc::new(queries),
                docs: Arc::new(docs),
                positives: Arc::new(sorted),
            },
            items,
            positives,
            truncated: cq + cd,
        })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The texts mining works on.
    pub fn mine_texts(&self) -> &MineTexts {
        &self.texts
    }

    /// Whether every example carries teacher scores for its positives and
    /// negatives (distillation needs them).
    pub fn has_scores(&self) -> bool {
        self.items.iter().all(|it| {
            !it.pos_scores.is_empty()
                && !it.negatives.is_empty()
                && it.neg_scores.len() == it.negatives.len()
        })
    }

    /// The texts of an example: its query (as `usize::MAX - query`, so that
    /// query and document indices never meet) and its documents.
    fn texts(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let it = &self.items[i];
        std::iter::once(usize::MAX - it.query)
            .chain(it.positives.iter().copied())
            .chain(it.negatives.iter().copied())
    }

    /// The epoch's batches of `batch` examples over a random order drawn
    /// from `rng`: examples are taken in that order, one whose texts meet a
    /// text already in the batch waits for a later batch; every batch but
    /// the last is full, and there are `ceil(len / batch)` of them (the
    /// last takes whatever is left, duplicates included).
    pub fn batches(&self, batch: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(rng);
        let n = self.len().div_ceil(batch.max(1));
        let mut out = Vec::with_capacity(n);
        let mut waiting = order;
        for b in 0..n {
            if b + 1 == n {
                out.push(std::mem::take(&mut waiting));
                break;
            }
            let (mut seen, mut take, mut rest) = (HashSet::new(), Vec::new(), Vec::new());
            for &i in &waiting {
                if take.len() < batch && self.texts(i).all(|t| !seen.contains(&t)) {
                    seen.extend(self.texts(i));
                    take.push(i);
                } else {
                    rest.push(i);
                }
            }
            // too many duplicates to fill the batch: top it up anyway
            while take.len() < batch && !rest.is_empty() {
                take.push(rest.remove(0));
            }
            out.push(take);
            waiting = rest;
        }
        out
    }

    /// The [`TextBatch`] of the examples `ids`: each query with one of its
    /// positives (drawn from `rng` when it has several), up to `negatives`
    /// of its hard negatives (drawn without replacement), then the
    /// documents `mined(slot, query, positive)` returns for it (indices of
    /// [`MineTexts::docs`]), the positives first. For distillation,
    /// `groups` and `teacher` hold each query's positive and negatives with
    /// their scores.
    pub fn batch(
        &self,
        ids: &[usize],
        negatives: usize,
        rng: &mut impl Rng,
        mut mined: impl FnMut(usize, usize, usize) -> Vec<usize>,
    ) -> TextBatch {
        let b = ids.len();
        let mut doc_text = Vec::with_capacity(b * (1 + negatives));
        let mut teacher = Vec::with_capacity(b);
        let mut negs: Vec<Vec<usize>> = Vec::with_capacity(b);
        for (slot, &i) in ids.iter().enumerate() {
            let it = &self.items[i];
            let p = rng.gen_range(0..it.positives.len());
            doc_text.push(it.positives[p]);
            let mut chosen: Vec<usize> = (0..it.negatives.len()).collect();
            chosen.shuffle(rng);
            chosen.truncate(negatives);
            let mut scores = vec![it.pos_scores.get(p).copied().unwrap_or(0.0)];
            scores.extend(
                chosen
                    .iter()
                    .map(|&n| it.neg_scores.get(n).copied().unwrap_or(0.0)),
            );
            teacher.push(scores);
            let mut n: Vec<usize> = chosen.iter().map(|&n| it.negatives[n]).collect();
            n.extend(mined(slot, it.query, it.positives[p]));
            negs.push(n);
        }
        let mut groups = Vec::with_capacity(b);
        for (i, n) in negs.iter().enumerate() {
            let mut g = vec![i];
            for &t in n {
                g.push(doc_text.len());
                doc_text.push(t);
            }
            groups.push(g);
        }
        let m = doc_text.len();
        let mut hidden = vec![false; b * m];
        for (qi, &i) in ids.iter().enumerate() {
            let pos = &self.positives[self.items[i].query];
            for (j, &t) in doc_text.iter().enumerate() {
                hidden[qi * m + j] = j != qi && (pos.contains(&t) || t == doc_text[qi]);
            }
        }
        TextBatch {
            queries: ids
                .iter()
                .map(|&i| self.texts.queries[self.items[i].query].clone())
                .collect(),
            docs: doc_text
                .iter()
                .map(|&t| self.texts.docs[t].clone())
                .collect(),
            positive: (0..b).collect(),
            hidden,
            groups,
            teacher,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbedOptions, Example, PairFormat};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn example(q: &str, p: &[&str], n: &[&str]) -> Example {
        Example {
            query: q.into(),
            positives: p.iter().map(|s| s.to_string()).collect(),
            negatives: n.iter().map(|s| s.to_string()).collect(),
            pos_scores: Vec::new(),
            neg_scores: Vec::new(),
        }
    }

    fn model() -> Towers {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert");
        Towers::load(&dir, EmbedOptions::default()).unwrap()
    }

    #[test]
    fn batches_hold_no_duplicate_text_and_cover_every_example() {
        // q0 has two positives (two examples), q1 shares d2 with q2
        let ex = Examples {
            examples: vec![
                example("q0", &["d0"], &["n0"]),
                example("q0", &["d1"], &["n0"]),
                example("q1", &["d2"], &[]),
                example("q2", &["d2"], &["n1"]),
                example("q3", &["d3"], &[]),
                example("q4", &["d4"], &[]),
            ],
            format: PairFormat::Jsonl,
        };
        let set = TrainSet::new(&ex, &[], &model(), "", "").unwrap();
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let batches = set.batches(2, &mut rng);
            assert_eq!(batches.len(), 3);
            let mut all: Vec<usize> = batches.concat();
            all.sort();
            assert_eq!(all, (0..6).collect::<Vec<_>>());
            for b in &batches[..2] {
                assert_eq!(b.len(), 2);
            }
        }
        // the two examples of q0 in one batch: each hides the other's positive
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let tb = set.batch(&[0, 1, 4], 1, &mut rng, |_, _, _| Vec::new());
        assert_eq!(
            tb.docs.len(),
            3 + 2,
            "positives, then one negative each for 0 and 1"
        );
        let m = tb.docs.len();
        assert!(
            tb.hidden[1] && tb.hidden[m],
            "d1 hidden from q0, d0 from q0 again"
        );
        assert!(
            !tb.hidden[2] && !tb.hidden[2 * m],
            "d3 shown to q0, d0 shown to q3"
        );
        // n0 is the negative of both: the same text twice, shown (a negative)
        assert!(!tb.hidden[3] && !tb.hidden[4]);
        assert_eq!(tb.groups[0], vec![0, 3]);
        assert_eq!(tb.positive, vec![0, 1, 2]);
    }
}
