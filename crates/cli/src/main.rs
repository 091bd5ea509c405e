//! `tandem`: the binary. Thin: flags are parsed into plain data, validated,
//! and handed to the library crates. Errors print as one readable chain and
//! exit with code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bank_cmd;
mod colbert_cmd;
mod data_cmd;
mod demo;
mod embed_cmd;
mod eval_cmd;
mod from_text;
mod generate_cmd;
mod maxsim_cmd;
mod mine_cmd;
mod search_cmd;
mod train_cmd;

/// tandem trains and evaluates retrievers, and never loses a run.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Inspect and convert vector banks (.npy, .npz, .safetensors, .fvecs).
    #[command(subcommand)]
    Bank(bank_cmd::BankCmd),
    /// Build approximate (HNSW) indexes over a bank.
    #[command(subcommand)]
    Index(search_cmd::IndexCmd),
    /// Search a bank (exact or HNSW) and write a TREC run file.
    Search(search_cmd::SearchArgs),
    /// Evaluate a TREC run against qrels with trec_eval semantics.
    Eval(eval_cmd::EvalArgs),
    /// Build and import next-vector sequence datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCmd),
    /// Generate a synthetic next-vector world (bank + sequences + splits).
    Synth(data_cmd::SynthArgs),
    /// Recall@K / MRR@10 of the last-vector and mean-of-context baselines.
    Baseline(data_cmd::BaselineArgs),
    /// The main job on a built-in default: synthesise a world, train a GRU tower on it with a curriculum, evaluate it against the baselines.
    Demo(demo::DemoArgs),
    /// Train a two-tower retriever (crash-only: checkpoints, exact resume).
    Train(Box<train_cmd::TrainArgs>),
    /// Next-vector models (LVMs): train one for `tandem generate`.
    #[command(subcommand)]
    Lvm(train_cmd::LvmCmd),
    /// Apply a trained query tower: query vectors and a TREC ranking.
    Encode(train_cmd::EncodeArgs),
    /// Generate vectors with a next-vector model and the SNAP / BLEND / NOVEL decoder.
    Generate(generate_cmd::GenerateArgs),
    /// Embed texts (JSON lines or plain lines) with a Hugging Face model into a bank; resumable, shardable.
    Embed(Box<embed_cmd::EmbedArgs>),
    /// Evaluate a Hugging Face model on a BEIR dataset: embed (cached), search, nDCG@10 / Recall@100 / MAP@100 / MRR@10.
    Beir(Box<embed_cmd::BeirArgs>),
    /// ColBERT models: build one from a dense model.
    #[command(subcommand)]
    Colbert(colbert_cmd::ColbertCmd),
    /// Mine hard negatives for (query, positive) training data with a Hugging Face model (sentence-transformers' mine_hard_negatives); writes JSON lines for `tandem train --task dense`.
    Mine(Box<mine_cmd::MineArgs>),
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`tandem ... | head`) like other Unix
    // tools, instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE at start-up, before
    // any thread exists, is sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Bank(c) => bank_cmd::run(c),
        Cmd::Index(c) => search_cmd::run_index(c),
        Cmd::Search(a) => search_cmd::run_search(a),
        Cmd::Eval(a) => eval_cmd::run(a),
        Cmd::Data(c) => data_cmd::run(c),
        Cmd::Synth(a) => data_cmd::run_synth(a),
        Cmd::Baseline(a) => data_cmd::run_baseline(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Train(a) => train_cmd::run_train(*a),
        Cmd::Lvm(c) => train_cmd::run_lvm(c),
        Cmd::Encode(a) => train_cmd::run_encode(a),
        Cmd::Generate(a) => generate_cmd::run(a),
        Cmd::Embed(a) => embed_cmd::run_embed(*a),
        Cmd::Beir(a) => embed_cmd::run_beir(*a),
        Cmd::Mine(a) => mine_cmd::run(*a),
        Cmd::Colbert(c) => colbert_cmd::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, `a: b: c`, leaving out a cause whose
/// text its parent already shows (library errors often quote their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

// glibc malloc costs 1.5-2x in the training loop's many short-lived buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc's `mimalloc.h` (the 16th option of
/// `mi_option_e` in versions 2 and 3); libmimalloc-sys has no constant for
/// it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the pages mimalloc frees for reuse rather than returning them to
/// the OS. A text encoder's passes free and reallocate the same large
/// buffers (its activations, tens of MB a batch); mimalloc returns freed
/// pages after 10 ms by default, and faulting them back in (the kernel's
/// `clear_page_erms`) cost 14% of a dense training step and 9% of `tandem
/// embed`. Resident memory stays at a pass's peak, which the memory
/// estimates already count. Call it before the work's threads start.
pub(crate) fn keep_freed_pages() {
    // SAFETY: sets an allocator option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
