//! `tandem generate`: vector-native generation with the dual-path decoder.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tandem_bank::{write_npy, Vectors};
use tandem_data::Dataset;
use tandem_decode::{generate, BankRetriever, DecodeSettings, Decoder, Lane, Lanes};
use tandem_io::Overwrite;
use tandem_train::encode::{checkpoint_of, model_of};

/// Generate vectors with a trained next-vector model: at each step SNAP to
/// the nearest bank row, BLEND, or keep the proposal NOVEL, by the lane's
/// thresholds. Writes one JSON line per step and prints the telemetry.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The next-vector model: a run directory (its best checkpoint) or a
    /// checkpoint directory of `tandem train`.
    #[arg(long)]
    lvm: PathBuf,
    /// The dataset whose bank the decoder snaps to.
    #[arg(long)]
    data: PathBuf,
    /// Starting context: bank rows, comma-separated, oldest first.
    #[arg(long, value_delimiter = ',', conflicts_with = "start_ids")]
    start: Vec<u32>,
    /// Starting context: bank ids (ids.txt), comma-separated, oldest first.
    #[arg(long, value_delimiter = ',')]
    start_ids: Vec<String>,
    /// Steps to generate.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Lane: conservative, neutral, creative, or one defined with --lanes.
    #[arg(long, default_value = "neutral")]
    lane: String,
    /// A TOML file of custom lanes: [[lane]] name = "legal", snap = 0.94, novel = 0.88.
    #[arg(long)]
    lanes: Option<PathBuf>,
    /// Candidates retrieved per step.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// A row snapped within the last W steps is not snapped again.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Retrieval slower than this (milliseconds) makes the step NOVEL.
    #[arg(long, default_value_t = 200)]
    budget_ms: u64,
    /// Output: one JSON object per step.
    #[arg(long)]
    out: PathBuf,
    /// Also write the emitted vectors (.npy, float32, one row per step).
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LanesFile {
    lane: Vec<Lane>,
}

/// `tandem generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let overwrite = Overwrite::from_force(args.force);
    for p in [Some(&args.out), args.vectors.as_ref()]
        .into_iter()
        .flatten()
    {
        if p.exists() && !args.force {
            bail!(
                "{}: already exists; fix: pass --force to overwrite it or choose another path",
                p.display()
            );
        }
    }
    let custom = match &args.lanes {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot read ({e}); fix: pass --lanes an existing TOML file",
                    path.display()
                )
            })?;
            let file: LanesFile = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}; fix: write [[lane]] tables with name, snap, novel (and blend)",
                    path.display(),
                    e.message().trim_end()
                )
            })?;
            file.lane
        }
    };
    let lanes = Lanes::new(custom)?;
    let lane = lanes.get(&args.lane)?.clone();
    let ck = checkpoint_of(&args.lvm)?;
    let model = model_of(&ck)?;
    let ds = Dataset::open(&args.data)?;
    let bank = ds.bank();
    if bank.dim() != model.config().dim {
        bail!(
            "{}: the bank has dimension {} but the model in {} predicts {}; fix: generate over the dataset the model was trained on",
            args.data.display(),
            bank.dim(),
            ck.dir.display(),
            model.config().dim
        );
    }
    let rows: Vec<u32> = if args.start_ids.is_empty() {
        args.start.clone()
    } else {
        args.start_ids
            .iter()
            .map(|id| {
                (0..bank.rows())
                    .find(|&r| bank.doc_id(r) == id.as_str())
                    .map(|r| r as u32)
                    .with_context(|| {
                        format!(
                            "--start-ids: no bank row has id {id:?}; fix: use ids from {}",
                            ds.dir().join("ids.txt").display()
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    if rows.is_empty() {
        bail!("no starting context; fix: pass --start ROWS or --start-ids IDS (oldest first)");
    }
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= bank.rows()) {
        bail!(
            "--start: row {r} is outside the bank's {} rows; fix: pass rows below {}",
            bank.rows(),
            bank.rows()
        );
    }
    let start: Vec<Vec<f32>> = rows
        .iter()
        .map(|&r| bank.row_f32(r as usize).into_owned())
        .collect();
    let retriever =
        BankRetriever::new(bank).map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
    let mut decoder = Decoder::new(DecodeSettings {
        k: args.k.max(1),
        window: args.window,
        budget: Duration::from_millis(args.budget_ms),
    });
    // The starting rows are the recent past: not snapped to again within the window.
    decoder.remember(&rows);
    let steps = generate(
        &model,
        &start,
        ds.context_len(),
        args.steps,
        &lane,
        &mut decoder,
        &retriever,
    );
    tandem_io::write_atomic(&args.out, overwrite, |w| {
        for (i, s) in steps.iter().enumerate() {
            let mut line = serde_json::to_value(s).map_err(std::io::Error::other)?;
            line["step"] = serde_json::json!(i);
            line["id"] = serde_json::json!(s.row.map(|r| bank.doc_id(r as usize).into_owned()));
            line["vector_row"] = serde_json::json!(i);
            writeln!(w, "{line}")?;
        }
        Ok(())
    })?;
    if let Some(path) = &args.vectors {
        let flat: Vec<f32> = steps
            .iter()
            .flat_map(|s| s.vector.iter().copied())
            .collect();
        write_npy(
            path,
            steps.len(),
            bank.dim(),
            Vectors::F32(&flat),
            overwrite,
        )?;
    }
    print!("{}", decoder.telemetry().table());
    println!("{} steps -> {}", steps.len(), args.out.display());
    Ok(())
}
