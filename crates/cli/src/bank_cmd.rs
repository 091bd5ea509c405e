//! `tandem bank info` and `tandem bank convert`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tandem_bank::{write_npy, Bank, Dtype, Format, OpenOptions, Overwrite};

#[derive(Debug, Subcommand)]
pub enum BankCmd {
    /// Print format, shape, dtype, size, memory mapping, norm statistics and NaN/Inf rows.
    Info(InfoArgs),
    /// Convert a bank (any supported format) to a .npy file, float32 or float16.
    Convert(ConvertArgs),
    /// Join the shard banks of one `tandem embed --shard i/n` job, in order, into one bank.
    Merge(crate::embed_cmd::MergeArgs),
}

/// Flags of `tandem bank info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The bank: .npy, .npz, .safetensors or .fvecs.
    pub file: PathBuf,
    /// Array name inside an .npz or tensor name inside a .safetensors file
    /// (required when the file holds several).
    #[arg(long)]
    pub key: Option<String>,
    /// Ids file to check against the bank: one id per row.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `tandem bank convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The input bank: .npy, .npz, .safetensors or .fvecs.
    pub input: PathBuf,
    /// The output file; must end in .npy.
    pub output: PathBuf,
    /// Array or tensor name inside the input container.
    #[arg(long)]
    pub key: Option<String>,
    /// Output dtype: float32 or float16 [default: the input's dtype].
    #[arg(long)]
    pub dtype: Option<Dtype>,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Run a `tandem bank` subcommand.
pub fn run(cmd: BankCmd) -> anyhow::Result<()> {
    match cmd {
        BankCmd::Info(args) => info(&args),
        BankCmd::Convert(args) => convert(&args),
        BankCmd::Merge(args) => crate::embed_cmd::run_merge(args),
    }
}

/// Bytes in binary units, e.g. `3.7 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let format = Format::of(&args.file)?;
    let opts = OpenOptions {
        key: args.key.clone(),
        ids: args.ids.clone(),
    };
    let bank = Bank::open(&args.file, &opts)?;
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("{}: cannot read the file size", args.file.display()))?
        .len();
    let report = bank.scan();
    if args.json {
        let v = serde_json::json!({
            "path": args.file,
            "format": format.name(),
            "key": args.key,
            "rows": bank.rows(),
            "dim": bank.dim(),
            "dtype": bank.dtype().name(),
            "size_bytes": size,
            "mapped": bank.is_mapped(),
            "ids": bank.ids().map(<[String]>::len),
            "norm": report.norms.map(|n| serde_json::json!({"min": n.min, "mean": n.mean, "max": n.max})),
            "zero_rows": report.zero_rows,
            "nonfinite_rows": report.nonfinite_rows,
            "first_nonfinite_rows": report.first_nonfinite,
        });
        println!("{v}");
        return Ok(());
    }
    let mut out = vec![
        ("path", args.file.display().to_string()),
        ("format", format.name().to_string()),
    ];
    if let Some(key) = &args.key {
        out.push(("key", key.clone()));
    }
    out.extend([
        ("shape", format!("({}, {})", bank.rows(), bank.dim())),
        ("dtype", bank.dtype().name().to_string()),
        ("size", format!("{} ({size} bytes)", human_bytes(size))),
        (
            "mapped",
            if bank.is_mapped() {
                "yes (memory-mapped)"
            } else {
                "no (read into memory)"
            }
            .to_string(),
        ),
        (
            "ids",
            bank.ids()
                .map_or("none".to_string(), |ids| format!("{} ids", ids.len())),
        ),
        (
            "norm",
            report
                .norms
                .map_or("none (every row has NaN/Inf)".to_string(), |n| {
                    format!("min {:.4}  mean {:.4}  max {:.4}", n.min, n.mean, n.max)
                }),
        ),
        ("zero rows", report.zero_rows.to_string()),
    ]);
    let bad = if report.nonfinite_rows == 0 {
        "0 rows".to_string()
    } else {
        let rows: Vec<String> = report
            .first_nonfinite
            .iter()
            .map(usize::to_string)
            .collect();
        format!(
            "{} rows (first: {})",
            report.nonfinite_rows,
            rows.join(", ")
        )
    };
    out.push(("NaN/Inf", bad));
    for (name, value) in out {
        println!("{name:<10} {value}");
    }
    Ok(())
}

fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    if !matches!(Format::of(&args.output), Ok(Format::Npy)) {
        anyhow::bail!(
            "{}: the output of bank convert must be a .npy file; give OUT a .npy extension",
            args.output.display()
        );
    }
    let bank = Bank::open(
        &args.input,
        &OpenOptions {
            key: args.key.clone(),
            ids: None,
        },
    )?;
    let dtype = args.dtype.unwrap_or(bank.dtype());
    let overwrite = Overwrite::from_force(args.force);
    let converted;
    let source = if dtype == bank.dtype() {
        &bank
    } else {
        converted = bank.to_dtype(dtype)?;
        &converted
    };
    write_npy(
        &args.output,
        source.rows(),
        source.dim(),
        source.vectors(),
        overwrite,
    )?;
    eprintln!(
        "wrote {}: ({}, {}) {dtype}",
        args.output.display(),
        source.rows(),
        source.dim()
    );
    Ok(())
}
