//! `tandem index ...` and `tandem search` (skeleton: filled in by the search work).
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum IndexCmd {
    /// Build an HNSW index over a bank.
    Build { bank: std::path::PathBuf },
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub bank: std::path::PathBuf,
}

pub fn run_index(cmd: IndexCmd) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {cmd:?}")
}

pub fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {args:?}")
}
