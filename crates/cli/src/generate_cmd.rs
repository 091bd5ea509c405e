//! `tandem generate`: vector-native generation with the dual-path decoder.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use tandem_bank::{write_npy, Bank, OpenOptions, Vectors};
use tandem_data::{Dataset, Texts};
use tandem_decode::{
    generate, BankRetriever, Candidate, Decision, DecodeSettings, Decoder, Lane, Lanes, Retriever,
    TowerRetriever,
};
use tandem_io::Overwrite;
use tandem_train::encode::{check_checkpoint_for, checkpoint_of, encode_bank, model_of};
use tandem_train::TaskKind;

mod eval;

/// Generate vectors with a trained next-vector model: at each step SNAP to
/// the nearest bank row, BLEND, or keep the proposal NOVEL, by the lane's
/// thresholds. Writes one JSON line per step and prints the telemetry. With
/// --eval, evaluates the decoder teacher-forced on a held-out split instead,
/// with a threshold sweep.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The next-vector model: a run directory of `tandem lvm train` (its best
    /// checkpoint) or one of its checkpoint directories.
    #[arg(long)]
    lvm: PathBuf,
    /// The dataset whose bank the decoder snaps to.
    #[arg(long)]
    data: PathBuf,
    /// Find candidates with this trained two-tower retriever (a run or
    /// checkpoint of `tandem train`) over the context, instead of searching
    /// the bank with the proposal itself.
    #[arg(long)]
    retriever: Option<PathBuf>,
    /// Starting context: bank rows, comma-separated, oldest first.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["start_ids", "start_vectors", "eval"])]
    start: Vec<u32>,
    /// Starting context: bank ids (ids.txt), comma-separated, oldest first.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["start_vectors", "eval"])]
    start_ids: Vec<String>,
    /// Starting context: a vector file (.npy, .npz, .safetensors, .fvecs),
    /// one vector per row, oldest first.
    #[arg(long, conflicts_with = "eval")]
    start_vectors: Option<PathBuf>,
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
    /// The text of each bank row (JSON lines with a "text" field, line i =
    /// row i) [default: texts.jsonl of the dataset, when there is one].
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Output: one JSON object per step; with --eval, a directory.
    #[arg(long)]
    out: PathBuf,
    /// Also write the emitted vectors (.npy, float32, one row per step).
    #[arg(long, conflicts_with = "eval")]
    vectors: Option<PathBuf>,
    /// Evaluate teacher-forced on a held-out split: decisions, cosine of the
    /// emitted vector to the true next one, Hit@k, and a threshold sweep.
    #[arg(long)]
    eval: bool,
    /// The split --eval reads.
    #[arg(long, default_value = "test", requires = "eval")]
    split: String,
    /// --eval: at most this many examples (the first ones); 0 = all.
    #[arg(long, default_value_t = 0, requires = "eval")]
    limit: usize,
    /// --eval: the k of Hit@k.
    #[arg(long, default_value_t = 5, requires = "eval")]
    hit_k: usize,
    /// --eval: snap thresholds of the sweep.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "eval",
        default_value = "0.80,0.84,0.86,0.88,0.90,0.92,0.94,0.96,0.98"
    )]
    sweep_snap: Vec<f32>,
    /// --eval: novel thresholds of the sweep (pairs with novel >= snap are skipped).
    #[arg(
        long,
        value_delimiter = ',',
        requires = "eval",
        default_value = "0.60,0.70,0.75,0.80,0.85,0.88,0.90"
    )]
    sweep_novel: Vec<f32>,
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
    let telemetry_path = args.out.with_extension("telemetry.json");
    let outputs: Vec<&PathBuf> = if args.eval {
        Vec::new() // a directory: checked by `eval::run`
    } else {
        [
            Some(&args.out),
            Some(&telemetry_path),
            args.vectors.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    };
    if args.k == 0 {
        bail!("--k 0: fix: retrieve at least one candidate per step, e.g. --k 10");
    }
    let inputs: Vec<PathBuf> = [
        args.texts.clone(),
        args.start_vectors.clone(),
        args.lanes.clone(),
    ]
    .into_iter()
    .flatten()
    .chain(
        [
            "dataset.json",
            "sequences.jsonl",
            "ids.txt",
            "texts.jsonl",
            "bank.npy",
        ]
        .iter()
        .map(|f| args.data.join(f)),
    )
    .collect();
    check_outputs(&outputs, &inputs, args.force)?;
    let lanes = read_lanes(args.lanes.as_deref())?;
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
    check_checkpoint_for(&ck, &ds, TaskKind::Lvm, "--lvm")?;
    let texts = match &args.texts {
        Some(p) => Some(Texts::open(p, bank.rows())?),
        None => ds.texts()?,
    };
    // The retriever: the bank searched with the proposal, or a two-tower model.
    let tower = match &args.retriever {
        None => None,
        Some(path) => {
            let rck = checkpoint_of(path)?;
            let rmodel = model_of(&rck)?;
            check_checkpoint_for(&rck, &ds, TaskKind::Retriever, "--retriever")?;
            if rmodel.config().dim != bank.dim() {
                bail!(
                    "{}: the retriever encodes dimension {} but the bank has {}; fix: pass a retriever trained on this dataset",
                    rck.dir.display(),
                    rmodel.config().dim,
                    bank.dim()
                );
            }
            let docs = rmodel.doc_is_learned().then(|| encode_bank(&rmodel, bank));
            Some((rmodel, docs))
        }
    };
    let plain;
    let towered;
    let retriever: &dyn Retriever = match &tower {
        None => {
            plain = BankRetriever::new(bank)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
            &plain
        }
        Some((rmodel, docs)) => {
            towered = TowerRetriever::new(
                rmodel,
                bank,
                docs.as_ref().unwrap_or(bank),
                ds.context_len(),
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
            &towered
        }
    };
    let faulty = fault_every()?.map(|every| Faulty {
        inner: retriever,
        every,
        calls: Cell::new(0),
    });
    let retriever: &dyn Retriever = match &faulty {
        Some(f) => f,
        None => retriever,
    };
    let decoder = Decoder::new(DecodeSettings {
        k: args.k,
        window: args.window,
        budget: Duration::from_millis(args.budget_ms),
    });
    if args.eval {
        return eval::run(
            &args,
            &ds,
            &model,
            &decoder,
            retriever,
            &lane,
            texts.as_ref(),
        );
    }
    let rows = start_rows(&args, &ds)?;
    let start: Vec<Vec<f32>> = match &args.start_vectors {
        Some(path) => {
            let v = Bank::open(path, &OpenOptions::default())?;
            if v.dim() != bank.dim() || v.rows() == 0 {
                bail!(
                    "{}: {} vectors of dimension {}; fix: pass at least one vector of the bank's dimension {}",
                    path.display(),
                    v.rows(),
                    v.dim(),
                    bank.dim()
                );
            }
            let rows: Vec<Vec<f32>> = (0..v.rows()).map(|r| v.row_f32(r).into_owned()).collect();
            if let Some(r) = rows
                .iter()
                .position(|x| x.iter().any(|f| !f.is_finite()) || x.iter().all(|&f| f == 0.0))
            {
                bail!(
                    "{}: row {r} is all zeros or holds NaN/Inf; fix: pass finite, non-zero starting vectors",
                    path.display()
                );
            }
            rows
        }
        None => rows
            .iter()
            .map(|&r| bank.row_f32(r as usize).into_owned())
            .collect(),
    };
    let mut decoder = decoder;
    // The starting rows are the recent past: not snapped to again within the window.
    decoder.remember(&rows);
    let bar = tandem_io::progress(args.steps as u64, "generate");
    let steps = generate(
        &model,
        &start,
        ds.context_len(),
        args.steps,
        &lane,
        &mut decoder,
        retriever,
        &|| bar.inc(1),
    );
    bar.finish_and_clear();
    let step_texts: Vec<Option<String>> = steps
        .iter()
        .map(|s| match (&texts, s.decision, s.row) {
            (Some(t), Decision::Snap, Some(r)) => t.get(r as usize).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    tandem_io::write_atomic(&args.out, overwrite, |w| {
        for (i, s) in steps.iter().enumerate() {
            let mut line = serde_json::to_value(s).map_err(std::io::Error::other)?;
            line["step"] = serde_json::json!(i);
            line["id"] = serde_json::json!(s.row.map(|r| bank.doc_id(r as usize).into_owned()));
            line["text"] = serde_json::json!(step_texts[i]);
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
    for (i, s) in steps.iter().enumerate() {
        let what = match (s.row, &step_texts[i]) {
            (Some(r), Some(t)) => format!("row {r} {t:?}"),
            (Some(r), None) => format!("row {r} ({})", bank.doc_id(r as usize)),
            (None, _) => s.fallback.clone().unwrap_or_default(),
        };
        let c = s.cosine.map_or("-".into(), |c| format!("{c:.3}"));
        println!(
            "step {i:>3}  {:<5}  cos {c}  {what}",
            format!("{:?}", s.decision).to_uppercase()
        );
    }
    if texts.is_none() {
        println!(
            "(no texts: build the dataset with `tandem data from-sentences` or pass --texts to see the text of snapped rows)"
        );
    }
    let summary = serde_json::json!({
        "settings": {
            "lvm": args.lvm,
            "data": args.data,
            "retriever": args.retriever,
            "start_rows": rows,
            "start_vectors": args.start_vectors,
            "steps": args.steps,
            "lane": lane,
            "k": args.k,
            "window": args.window,
            "budget_ms": args.budget_ms,
        },
        "telemetry": decoder.telemetry(),
    });
    tandem_io::write_atomic(&telemetry_path, overwrite, |w| writeln!(w, "{summary:#}"))?;
    print!("{}", decoder.telemetry().table());
    println!(
        "{} steps -> {} (settings and telemetry: {})",
        steps.len(),
        args.out.display(),
        telemetry_path.display()
    );
    Ok(())
}

/// The shipped lanes and those of a `--lanes` file, checked.
fn read_lanes(path: Option<&Path>) -> Result<Lanes> {
    let Some(path) = path else {
        return Ok(Lanes::new(Vec::new())?);
    };
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
    for (i, lane) in file.lane.iter().enumerate() {
        if file.lane[..i].iter().any(|l| l.name == lane.name) {
            bail!(
                "{}: lane {:?} is defined twice; fix: give each [[lane]] its own name",
                path.display(),
                lane.name
            );
        }
    }
    Lanes::new(file.lane).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Refuses outputs that would overwrite each other or an input, that exist
/// (without `force`), or whose folder does not exist: before any work.
fn check_outputs(outputs: &[&PathBuf], inputs: &[PathBuf], force: bool) -> Result<()> {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for (i, p) in outputs.iter().enumerate() {
        let a = abs(p);
        if let Some(other) = outputs[..i].iter().find(|o| abs(o) == a) {
            bail!(
                "{}: given as two outputs ({} and this one); fix: choose different paths for --out and --vectors",
                p.display(),
                other.display()
            );
        }
        if let Some(input) = inputs.iter().find(|q| abs(q) == a) {
            bail!(
                "{}: is an input of this command ({}); fix: write the output elsewhere",
                p.display(),
                input.display()
            );
        }
        let parent = a.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            bail!(
                "{}: the folder {} does not exist; fix: create it or choose another path",
                p.display(),
                parent.display()
            );
        }
        if p.exists() && !force {
            bail!(
                "{}: already exists; fix: pass --force to overwrite it or choose another path",
                p.display()
            );
        }
    }
    Ok(())
}

/// The starting bank rows of --start or --start-ids (none with --start-vectors).
fn start_rows(args: &GenerateArgs, ds: &Dataset) -> Result<Vec<u32>> {
    let bank = ds.bank();
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
    if rows.is_empty() && args.start_vectors.is_none() {
        bail!("no starting context; fix: pass --start ROWS, --start-ids IDS or --start-vectors FILE (oldest first)");
    }
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= bank.rows()) {
        bail!(
            "--start: row {r} is outside the bank's {} rows; fix: pass rows below {}",
            bank.rows(),
            bank.rows()
        );
    }
    Ok(rows)
}

/// The fault-injection hook of the reliability tests:
/// `TANDEM_FAULT_RETRIEVAL_EVERY=N` makes every N-th retrieval fail.
fn fault_every() -> Result<Option<usize>> {
    match std::env::var("TANDEM_FAULT_RETRIEVAL_EVERY") {
        Err(_) => Ok(None),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => bail!(
                "TANDEM_FAULT_RETRIEVAL_EVERY={v:?}; fix: set it to a positive integer or unset it"
            ),
        },
    }
}

/// A retriever whose every `every`-th call fails (fault injection).
struct Faulty<'a> {
    inner: &'a dyn Retriever,
    every: usize,
    calls: Cell<usize>,
}

impl Retriever for Faulty<'_> {
    fn candidates(
        &self,
        context: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> std::result::Result<Vec<Candidate>, String> {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if n.is_multiple_of(self.every) {
            return Err(format!(
                "injected fault on call {n} (TANDEM_FAULT_RETRIEVAL_EVERY={})",
                self.every
            ));
        }
        self.inner.candidates(context, v, exclude, k)
    }
}
