//! `tandem bank ...` (skeleton: filled in by the bank work).
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BankCmd {
    /// Print shape, dtype, norm statistics and NaN/Inf counts.
    Info { file: std::path::PathBuf },
}

pub fn run(cmd: BankCmd) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {cmd:?}")
}
