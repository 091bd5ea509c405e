//! `tandem data ...`, `tandem synth`, `tandem baseline` (skeleton: filled in by the data work).
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Build a sequence dataset from a sentences file and its vectors.
    FromSentences { dir: std::path::PathBuf },
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    #[arg(long)]
    pub out: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    pub dataset: std::path::PathBuf,
}

pub fn run(cmd: DataCmd) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {cmd:?}")
}

pub fn run_synth(args: SynthArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {args:?}")
}

pub fn run_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {args:?}")
}
