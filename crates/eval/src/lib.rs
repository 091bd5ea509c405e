//! tandem-eval: TREC / BEIR qrels and run files, and ranking metrics with
//! trec_eval 9.0.8 semantics (what pytrec_eval bundles), plus paired
//! significance tests for comparing two runs.
//!
//! ```
//! use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};
//! let mut qrels = Qrels::new();
//! qrels.insert("q1", "d1", 2);
//! let mut run = Run::new();
//! run.insert("q1", "d0", 0.9).unwrap();
//! run.insert("q1", "d1", 0.8).unwrap();
//! let m: Measure = "recip_rank".parse().unwrap();
//! let report = evaluate(&qrels, &run, &[m], &EvalOptions::default()).unwrap();
//! assert_eq!(report.mean, vec![0.5]);
//! ```

mod error;
pub mod measure;
pub mod metrics;
pub mod qrels;
pub mod run;
pub mod stats;
mod text;
pub mod trec;

pub use error::EvalError;
pub use measure::Measure;
pub use metrics::{evaluate, EvalOptions, Report};
pub use qrels::Qrels;
pub use run::Run;
pub use stats::{compare, Comparison, SigTest};
