//! `tandem colbert build`: a ColBERT made from a dense model, as PyLate's
//! `models.ColBERT(base)` makes one, ready for `tandem train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use tandem_text::ColBert;

/// ColBERT models.
#[derive(Debug, Subcommand)]
pub enum ColbertCmd {
    /// Build a ColBERT from a dense Hugging Face / sentence-transformers model: its transformer, the [Q] / [D] prefix tokens, a Dense to --dim per token (seeded), PyLate's settings; saved as PyLate saves one.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The dense model directory to start from.
    #[arg(long)]
    model: PathBuf,
    /// The ColBERT directory to write (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Outputs of the Dense projection per token.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Seed of the projection's initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `tandem colbert ...`.
pub fn run(cmd: ColbertCmd) -> Result<()> {
    let ColbertCmd::Build(a) = cmd;
    if a.dim == 0 {
        anyhow::bail!("--dim 0 leaves no vector per token; fix: pass --dim 128 (PyLate's default) or another size");
    }
    ColBert::build(&a.model, &a.out, a.dim, a.seed)?;
    eprintln!(
        "ColBERT {} from {}: {}-d token vectors (seed {}), PyLate's settings; train it with `tandem train --task dense --model {}`",
        a.out.display(),
        a.model.display(),
        a.dim,
        a.seed,
        a.out.display()
    );
    Ok(())
}
