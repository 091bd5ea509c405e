//! `tandem eval`: score a TREC run against qrels with trec_eval semantics, or
//! compare two runs with a paired significance test.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use clap::{Args, ValueEnum};
use tandem_eval::{
    compare, evaluate, Comparison, EvalOptions, Measure, Qrels, Report, Run, SigTest,
};
use tandem_io::{write_atomic, Overwrite};

/// Measures reported when `--metrics` is not given.
const DEFAULT_METRICS: &str = "ndcg@10,recall@10,recall@100,recip_rank@10,map,P@10";

/// Flags of `tandem eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Relevance judgments: TREC qrels (`qid 0 docid grade`) or BEIR TSV
    /// (`query-id corpus-id score`, header optional). Grades >= 1 are relevant.
    #[arg(long)]
    pub qrels: PathBuf,
    /// TREC run file to evaluate (`qid Q0 docid rank score tag`; ranked by score, the rank column is ignored).
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    pub run: Option<PathBuf>,
    /// Compare two run files on the qrels queries answered by either (a query missing from one run scores 0 there).
    #[arg(long, num_args = 2, value_names = ["RUN_A", "RUN_B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Comma-separated measures: P@k, recall@k, success@k (hit@k), recip_rank, recip_rank@k (mrr@k),
    /// ndcg, ndcg@k, map, map@k; trec_eval names (P_10, ndcg_cut_10, ...) work too.
    #[arg(long, default_value = DEFAULT_METRICS)]
    pub metrics: String,
    /// Also print one row per query and measure (trec_eval style: measure, qid, value).
    #[arg(long, conflicts_with = "compare")]
    pub per_query: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Score qrels queries missing from the run as 0 (trec_eval -c) instead of leaving them out.
    #[arg(long, conflicts_with = "compare")]
    pub complete: bool,
    /// Also write the full JSON report (with per-query values) to this file, atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Paired two-sided significance test for --compare.
    #[arg(long, value_enum, default_value_t = TestKind::Randomization)]
    pub test: TestKind,
    /// Random sign flips of the randomization test.
    #[arg(long, default_value_t = 10_000)]
    pub trials: usize,
    /// Seed of the randomization test's ChaCha RNG.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The significance test of `--compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestKind {
    /// Paired randomization (sign-flip) test.
    Randomization,
    /// Paired Student's t-test.
    TTest,
}

/// Run `tandem eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let measures = Measure::parse_list(&args.metrics).context("bad --metrics")?;
    ensure!(
        !measures.is_empty(),
        "--metrics is empty; give at least one measure, e.g. --metrics ndcg@10"
    );
    ensure!(args.trials >= 1, "--trials must be at least 1");
    if let Some(out) = &args.out {
        ensure!(
            args.force || !out.exists(),
            "{}: file already exists; choose another --out path or pass --force to replace it",
            out.display()
        );
    }
    let qrels = Qrels::read(&args.qrels).context("cannot load the qrels")?;
    match (&args.run, &args.compare) {
        (Some(path), None) => run_eval(&args, &qrels, path, &measures),
        (None, Some(pair)) if pair.len() == 2 => {
            run_compare(&args, &qrels, &pair[0], &pair[1], &measures)
        }
        _ => anyhow::bail!("give either --run RUN or --compare RUN_A RUN_B"),
    }
}

fn load_run(path: &Path) -> anyhow::Result<Run> {
    Run::read(path).context("cannot load the run")
}

fn run_eval(
    args: &EvalArgs,
    qrels: &Qrels,
    path: &Path,
    measures: &[Measure],
) -> anyhow::Result<()> {
    let run = load_run(path)?;
    let report = evaluate(
        qrels,
        &run,
        measures,
        &EvalOptions {
            complete: args.complete,
        },
    )
    .with_context(|| {
        format!(
            "cannot evaluate {} against {}",
            path.display(),
            args.qrels.display()
        )
    })?;
    let ignored = run
        .query_ids()
        .filter(|q| qrels.judgments(q).is_none())
        .count();
    let json_with = |per_query: bool| {
        let mut v = report.to_json(per_query);
        v["qrels"] = args.qrels.display().to_string().into();
        v["run"] = path.display().to_string().into();
        v["complete"] = args.complete.into();
        v
    };
    write_out(args, &json_with(true))?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&json_with(args.per_query))?
        )?;
        return Ok(());
    }
    eprintln!(
        "{} queries evaluated: qrels {} queries, run {} queries ({} without judgments, ignored){}",
        report.num_queries(),
        qrels.num_queries(),
        run.num_queries(),
        ignored,
        if args.complete {
            "; unanswered qrels queries count 0"
        } else {
            ""
        }
    );
    write!(stdout, "{}", eval_table(&report, args.per_query))?;
    Ok(())
}

/// trec_eval-style rows `measure qid value`, per query (when asked) then `all`.
pub(crate) fn eval_table(report: &Report, per_query: bool) -> String {
    let name_w = report
        .measures
        .iter()
        .map(|m| m.to_string().len())
        .max()
        .unwrap_or(0)
        .max("measure".len());
    let mut rows: Vec<(&str, &[f64])> = Vec::new();
    if per_query {
        rows.extend(
            report
                .per_query
                .iter()
                .map(|(q, v)| (q.as_str(), v.as_slice())),
        );
    }
    rows.push(("all", &report.mean));
    let qid_w = rows
        .iter()
        .map(|(q, _)| q.len())
        .max()
        .unwrap_or(0)
        .max("qid".len());
    let mut s = format!("{:<name_w$}  {:<qid_w$}  value\n", "measure", "qid");
    for (qid, values) in rows {
        for (m, v) in report.measures.iter().zip(values) {
            s += &format!("{:<name_w$}  {qid:<qid_w$}  {v:.4}\n", m.to_string());
        }
    }
    s
}

fn run_compare(
    args: &EvalArgs,
    qrels: &Qrels,
    a: &Path,
    b: &Path,
    measures: &[Measure],
) -> anyhow::Result<()> {
    let (run_a, run_b) = (load_run(a)?, load_run(b)?);
    let test = match args.test {
        TestKind::Randomization => SigTest::Randomization {
            trials: args.trials,
            seed: args.seed,
        },
        TestKind::TTest => SigTest::TTest,
    };
    let cmp = compare(qrels, &run_a, &run_b, measures, test)
        .with_context(|| format!("cannot compare {} and {}", a.display(), b.display()))?;
    let mut json = cmp.to_json();
    json["qrels"] = args.qrels.display().to_string().into();
    json["run_a"] = a.display().to_string().into();
    json["run_b"] = b.display().to_string().into();
    write_out(args, &json)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(stdout, "A: {}\nB: {}", a.display(), b.display())?;
    write!(stdout, "{}", compare_table(&cmp))?;
    let how = match test {
        SigTest::Randomization { trials, seed } => {
            format!("paired randomization test, {trials} trials, seed {seed}")
        }
        SigTest::TTest => "paired t-test".to_string(),
    };
    writeln!(
        stdout,
        "* p < {} (two-sided {how}; {} queries; diff = B - A)",
        Comparison::ALPHA,
        cmp.queries.len()
    )?;
    Ok(())
}

fn compare_table(cmp: &Comparison) -> String {
    let names: Vec<String> = cmp.measures.iter().map(Measure::to_string).collect();
    let w = names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("measure".len());
    let mut s = format!(
        "{:<w$}  {:>7}  {:>7}  {:>8}  {:>8}\n",
        "measure", "A", "B", "diff", "p-value"
    );
    for (i, name) in names.iter().enumerate() {
        let p = cmp.p_values[i];
        let mark = if p < Comparison::ALPHA { " *" } else { "" };
        s += &format!(
            "{name:<w$}  {:>7.4}  {:>7.4}  {:>+8.4}  {p:>8.4}{mark}\n",
            cmp.mean_a[i],
            cmp.mean_b[i],
            cmp.mean_b[i] - cmp.mean_a[i]
        );
    }
    s
}

fn write_out(args: &EvalArgs, json: &serde_json::Value) -> anyhow::Result<()> {
    let Some(out) = &args.out else { return Ok(()) };
    let overwrite = Overwrite::from_force(args.force);
    write_atomic(out, overwrite, |w| {
        serde_json::to_writer_pretty(&mut *w, json)?;
        writeln!(w)
    })
    .with_context(|| format!("cannot write the report to {}", out.display()))
}
