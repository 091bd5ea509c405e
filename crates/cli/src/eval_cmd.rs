//! `tandem eval` (skeleton: filled in by the eval work).
use clap::Args;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub qrels: std::path::PathBuf,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented: {args:?}")
}
