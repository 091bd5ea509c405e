//! tandem-eval: TREC / BEIR qrels and run files, and ranking metrics with
//! trec_eval 9.0.8 semantics.

pub mod trec;
