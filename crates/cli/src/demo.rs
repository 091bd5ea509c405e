//! `tandem demo`: the main job on a built-in default, with nothing to
//! download. It synthesises a small next-vector world, trains a GRU query
//! tower on it with a curriculum of mined hard negatives (crash-only: kill it
//! and rerun the same command, it resumes), evaluates the tower against the
//! last-vector and mean-of-context baselines, scores the tower's TREC run
//! with trec_eval semantics, and prints the report's path: every stage a user
//! runs by hand with `tandem synth`, `tandem train` and `tandem eval`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tandem_data::synth::{write_synth, Preset};
use tandem_data::Dataset;
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};
use tandem_io::Overwrite;
use tandem_train::{train, Resume, Stop, TrainConfig};

/// Marks a directory as the output of `tandem demo`, so that rerunning
/// resumes it and `--force` only ever replaces a demo, never other files.
const MARKER: &str = ".tandem-demo";
const DEMO_REPORT: &str = "demo.json";
/// The demo's curriculum: one warm-up epoch on in-batch and queue negatives,
/// then four mined hard negatives per example.
const CURRICULUM: &str = "0:none;1-3:4@0.4-0.9";

/// Flags of `tandem demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory: the world, the training run and demo.json.
    #[arg(long, default_value = "tandem-demo")]
    pub out: PathBuf,
    /// Seed of the synthetic world and of training.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Compute threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Delete an earlier demo at --out and start over (without it, an
    /// unfinished demo resumes and a finished one is refused).
    #[arg(long)]
    pub force: bool,
}

/// The training recipe of the demo.
fn demo_config(world: &Path, run: &Path, args: &DemoArgs) -> anyhow::Result<TrainConfig> {
    Ok(TrainConfig {
        data: world.to_path_buf(),
        out: run.to_path_buf(),
        epochs: 4,
        curriculum: CURRICULUM.parse()?,
        queue: 2048,
        lr: 2e-3,
        warmup: 50,
        seed: args.seed,
        threads: args.threads,
        ..TrainConfig::default()
    })
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let out = &args.out;
    let started = Instant::now();
    if out.exists() {
        let ours = out.join(MARKER).is_file();
        let empty = out.is_dir() && fs::read_dir(out)?.next().is_none();
        if !ours && !empty {
            bail!(
                "{}: exists and is not an earlier demo; choose another --out",
                out.display()
            );
        }
        if ours && out.join(DEMO_REPORT).is_file() && !args.force {
            bail!(
                "{}: holds a finished demo; pass --force to run it again from scratch, or choose another --out",
                out.display()
            );
        }
        let earlier = out.join("run").join("config.toml");
        if ours && !args.force && earlier.is_file() {
            let text = fs::read_to_string(&earlier)
                .with_context(|| format!("{}: cannot read", earlier.display()))?;
            let seed = TrainConfig::from_toml(&earlier, &text)?.seed;
            if seed != args.seed {
                bail!(
                    "{}: holds an unfinished demo with seed {seed}; rerun with --seed {seed} to resume it, or pass --force to start over with seed {}",
                    out.display(),
                    args.seed
                );
            }
        }
        if ours && args.force {
            fs::remove_dir_all(out)
                .with_context(|| format!("{}: cannot remove the earlier demo", out.display()))?;
        }
    }
    fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create the output directory", out.display()))?;
    fs::write(out.join(MARKER), b"written by tandem demo\n")
        .with_context(|| format!("{}: cannot write", out.join(MARKER).display()))?;

    // 1. A synthetic world (a bank, documents as sequences of rows, splits).
    let mut synth = Preset::Small.config();
    synth.seed = args.seed;
    let world = out.join("world");
    println!("1. synthetic world: {}", synth.command());
    if Dataset::open(&world).is_err() {
        if world.exists() {
            fs::remove_dir_all(&world)
                .with_context(|| format!("{}: cannot remove a partial world", world.display()))?;
        }
        write_synth(&synth, &world, Overwrite::Refuse)?;
    }

    // 2. Train a GRU tower with a curriculum of mined negatives.
    let run_dir = out.join("run");
    let cfg = demo_config(&world, &run_dir, &args)?;
    println!(
        "\n2. tandem train --data {} --out {} --epochs {} --curriculum \"{CURRICULUM}\" --queue {} --lr {} --warmup {} --seed {}",
        world.display(),
        run_dir.display(),
        cfg.epochs,
        cfg.queue,
        cfg.lr,
        cfg.warmup,
        cfg.seed
    );
    let outcome = train(&cfg, Resume::Auto)?;
    if outcome.stop == Stop::Signal {
        println!(
            "stopped; rerun `tandem demo --out {}` to resume",
            out.display()
        );
        return Ok(());
    }
    println!("\n   test split, exact search over the whole bank (context rows excluded):");
    println!("   | query | recall@1 | recall@10 | recall@100 | mrr@10 |");
    println!("   |---|---|---|---|---|");
    let pick = |vals: &[(String, f64)], k: &str| {
        vals.iter()
            .find(|(n, _)| n == k)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let row = |label: &str, vals: &[(String, f64)]| {
        println!(
            "   | {label} | {:.4} | {:.4} | {:.4} | {:.4} |",
            pick(vals, "recall@1"),
            pick(vals, "recall@10"),
            pick(vals, "recall@100"),
            pick(vals, "mrr@10")
        );
    };
    row("gru tower", &outcome.test);
    for (name, vals) in &outcome.test_baselines {
        row(&format!("{name} of context (baseline)"), vals);
    }

    // 3. Score the tower's TREC run file, as `tandem eval` does.
    let (run_file, qrels_file) = (run_dir.join("test.run"), run_dir.join("test.qrels"));
    println!(
        "\n3. tandem eval --qrels {} --run {}:",
        qrels_file.display(),
        run_file.display()
    );
    let qrels = Qrels::read(&qrels_file)?;
    let trec = Run::read(&run_file)?;
    let measures = [
        Measure::Recall(10),
        Measure::Ndcg(Some(10)),
        Measure::RecipRank(Some(10)),
    ];
    let eval = evaluate(&qrels, &trec, &measures, &EvalOptions::default())?;
    print!("{}", crate::eval_cmd::eval_table(&eval, false));

    let summary = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "seed": args.seed,
        "world": synth.command(),
        "train": toml::Value::try_from(&cfg)?,
        "steps": outcome.steps,
        "resumed_from": outcome.resumed_from,
        "test": metrics_json(&outcome.test),
        "baselines": outcome.test_baselines.iter().map(|(n, v)| (n.clone(), metrics_json(v))).collect::<serde_json::Map<_, _>>(),
        "eval": eval.to_json(false),
        "report": outcome.report,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&summary)?;
    tandem_io::write_bytes_atomic(&out.join(DEMO_REPORT), Overwrite::Allow, text.as_bytes())?;
    if let Some(report) = &outcome.report {
        println!("\nreport: {}", report.display());
    }
    println!("wrote {}", out.join(DEMO_REPORT).display());
    Ok(())
}

fn metrics_json(values: &[(String, f64)]) -> serde_json::Value {
    values
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
