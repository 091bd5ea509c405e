//! `tandem demo`: the main job on a built-in default, with nothing to
//! download. It synthesises a small next-vector world, scores the two context
//! baselines with exact search, then sends the mean-of-context queries through
//! an HNSW index, writes them as a TREC run with its qrels, and evaluates the
//! run file with trec_eval semantics: every stage a user runs by hand with
//! `tandem synth`, `tandem baseline`, `tandem index build`, `tandem search`
//! and `tandem eval`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tandem_data::baseline::{DEFAULT_KS, MRR_CUTOFF};
use tandem_data::synth::{write_synth, Preset};
use tandem_data::{baseline, Dataset, QueryKind, Split};
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};
use tandem_io::Overwrite;
use tandem_search::{Hnsw, HnswParams, Index, Metric};

/// Marks a directory as the output of `tandem demo`, so `--force` only ever
/// replaces a previous demo, never other files.
const DEMO_REPORT: &str = "demo.json";
const RUN_FILE: &str = "hnsw-mean.trec";
const QRELS_FILE: &str = "qrels.test.txt";
/// Depth of the HNSW run.
const RUN_DEPTH: usize = 100;

/// Flags of `tandem demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory: the world, the run, the qrels and demo.json.
    #[arg(long, default_value = "tandem-demo")]
    pub out: PathBuf,
    /// Seed of the synthetic world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Replace the output of an earlier `tandem demo` at --out.
    #[arg(long)]
    pub force: bool,
}

/// Run the demo into a temporary sibling of `--out`, then move it into place:
/// a failed demo leaves nothing behind.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let out = &args.out;
    if out.exists() {
        if !args.force {
            bail!(
                "{}: already exists; pass --force to replace an earlier demo, or choose another --out",
                out.display()
            );
        }
        if !out.join(DEMO_REPORT).is_file() {
            bail!(
                "{}: exists but holds no {DEMO_REPORT}, so it is not an earlier demo; choose another --out",
                out.display()
            );
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().context("--out must name a directory")?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = demo_into(&tmp, &args);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        return result;
    }
    if out.exists() {
        fs::remove_dir_all(out)
            .with_context(|| format!("{}: cannot remove the earlier demo", out.display()))?;
    }
    fs::rename(&tmp, out)
        .with_context(|| format!("{}: cannot move the demo into place", out.display()))?;
    println!(
        "\nwrote {} (world/, {RUN_FILE}, {QRELS_FILE}, {DEMO_REPORT})",
        out.display()
    );
    Ok(())
}

fn demo_into(dir: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the output directory", dir.display()))?;
    let started = Instant::now();

    // 1. A synthetic world (a bank, documents as sequences of rows, splits).
    let mut cfg = Preset::Small.config();
    cfg.seed = args.seed;
    let world_dir = dir.join("world");
    println!("1. synthesising a world: {}", cfg.command());
    write_synth(&cfg, &world_dir, Overwrite::Refuse)?;
    let ds = Dataset::open(&world_dir)?;
    let bank = ds.bank();
    println!(
        "   bank {} x {} ({})",
        bank.rows(),
        bank.dim(),
        bank.dtype().name()
    );

    // 2. The context baselines with exact (flat) search, context rows excluded.
    println!("\n2. baselines on the test split (exact inner-product search):");
    let report = baseline(&ds, Split::Test, &DEFAULT_KS)?;
    print!("{}", report.table());

    // 3. The mean-of-context queries through an HNSW index, written as a TREC run.
    println!("\n3. HNSW index and a TREC run of the mean-of-context queries:");
    let index = Hnsw::build(bank, Metric::InnerProduct, HnswParams::default())?;
    let examples: Vec<_> = ds.examples(Split::Test).collect();
    let dim = bank.dim();
    let mut queries = vec![0f32; examples.len() * dim];
    for (ex, q) in examples.iter().zip(queries.chunks_exact_mut(dim)) {
        QueryKind::Mean.query_into(&ds, ex.context, q);
    }
    let exclude: Vec<Vec<u32>> = examples.iter().map(|ex| ex.context.to_vec()).collect();
    let hits = index.search(&queries, RUN_DEPTH, &exclude)?;
    let qid = |i: usize| format!("q{i}");
    let run_path = dir.join(RUN_FILE);
    tandem_io::write_atomic(&run_path, Overwrite::Refuse, |w| {
        for (i, ranked) in hits.iter().enumerate() {
            crate::search_cmd::write_hits(w, bank, &qid(i), ranked, "tandem-hnsw")?;
        }
        Ok(())
    })?;
    let qrels_path = dir.join(QRELS_FILE);
    tandem_io::write_atomic(&qrels_path, Overwrite::Refuse, |w| {
        use std::io::Write;
        for (i, ex) in examples.iter().enumerate() {
            writeln!(w, "{} 0 {} 1", qid(i), bank.doc_id(ex.target as usize))?;
        }
        Ok(())
    })?;
    println!("   {} queries -> {RUN_FILE}", examples.len());

    // 4. Evaluate the run file against the qrels file, as `tandem eval` does.
    println!("\n4. tandem eval --qrels {QRELS_FILE} --run {RUN_FILE}:");
    let qrels = Qrels::read(&qrels_path)?;
    let run = Run::read(&run_path)?;
    let measures = [
        Measure::Recall(1),
        Measure::Recall(10),
        Measure::Recall(100),
        Measure::RecipRank(Some(MRR_CUTOFF)),
    ];
    let hnsw_report = evaluate(&qrels, &run, &measures, &EvalOptions::default())?;
    print!("{}", crate::eval_cmd::eval_table(&hnsw_report, false));
    let exact_r100 = report.value(QueryKind::Mean, "recall@100");
    let hnsw_r100 = hnsw_report.mean[2];
    if let Some(exact) = exact_r100 {
        println!("   HNSW recall@100 {hnsw_r100:.4} vs exact {exact:.4}");
    }

    let p = index.params();
    let hnsw_params = json!({
        "m": p.connectivity, "ef_construction": p.expansion_add,
        "ef": p.expansion_search, "scalar": index.sidecar().scalar,
    });
    let summary = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seed": args.seed,
        "world": cfg.command(),
        "baseline": report.to_json(),
        "hnsw": { "params": hnsw_params, "run": RUN_FILE, "qrels": QRELS_FILE, "eval": hnsw_report.to_json(false) },
        "seconds": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&summary)?;
    tandem_io::write_bytes_atomic(&dir.join(DEMO_REPORT), Overwrite::Refuse, text.as_bytes())?;
    Ok(())
}
