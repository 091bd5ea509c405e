//! Kill a real process while it writes checkpoints (SIGKILL at random
//! times), ten times over the same run directory, and check after every kill
//! that the newest complete checkpoint holds exactly the bytes written for
//! its step, that it is at least the last step the child reported finished,
//! and that it never goes backwards.
//!
//! This test binary is its own child: with `TANDEM_CKPT_CHILD=<run dir>` set
//! it runs the writer loop instead (hence `harness = false`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tandem_train::checkpoint::{
    mark_best, newest_complete, prune, write_checkpoint, CheckpointFile,
};

const CHILD_ENV: &str = "TANDEM_CKPT_CHILD";

/// splitmix64: a tiny deterministic stream for the checkpoint bytes.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn stream(seed: u64, len: usize) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| splitmix(seed.wrapping_mul(1 << 32) ^ i).to_le_bytes())
        .take(len)
        .collect()
}

/// The files of the checkpoint of `step` (about 3 MiB), derived from the step.
fn content(step: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("model.safetensors", stream(step * 2, 2 << 20)),
        ("optimizer.safetensors", stream(step * 2 + 1, 1 << 20)),
        ("state.json", format!("{{\"step\":{step}}}").into_bytes()),
    ]
}

fn write(run: &Path, step: u64) {
    let c = content(step);
    let files: Vec<CheckpointFile> = c
        .iter()
        .map(|(name, bytes)| CheckpointFile { name, bytes })
        .collect();
    write_checkpoint(run, step, &files).unwrap();
}

/// The child: resume after the newest complete checkpoint and write, rewrite,
/// mark and prune checkpoints until killed (or 60 s, should the parent die).
fn child(run: &Path) {
    let start = newest_complete(run).unwrap().map_or(1, |l| l.step + 1);
    let began = Instant::now();
    for step in start.. {
        write(run, step);
        println!("{step}");
        if step % 3 == 0 {
            // Re-reach the same step, as a resumed run does.
            write(run, step);
            println!("{step}");
        }
        if step % 4 == 0 {
            mark_best(run, step).unwrap();
        }
        prune(run, 2).unwrap();
        if began.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
}

fn parent() {
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut previous = 0;
    for round in 0..10 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, run.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        // Child::kill sends SIGKILL on Unix: no cleanup code runs.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child was killed, not finished"
        );
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(err.is_empty(), "round {round}: child stderr: {err}");
        let reported = out
            .lines()
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
            .unwrap_or(previous);
        let loaded = newest_complete(run.path())
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: no complete checkpoint"));
        assert!(
            loaded.step >= reported && loaded.step >= previous,
            "round {round}: newest complete step {} but the child finished step {reported} (previous {previous})",
            loaded.step
        );
        // The pointer is a hint, but it is never torn: always a whole name.
        let latest = std::fs::read_to_string(run.path().join("checkpoints/latest")).unwrap();
        assert!(
            latest.len() == 14 && latest.starts_with("step-"),
            "round {round}: latest holds {latest:?}"
        );
        for (name, bytes) in content(loaded.step) {
            assert!(
                loaded.file(name).unwrap() == bytes.as_slice(),
                "round {round}: {name} of step {} differs from what was written",
                loaded.step
            );
        }
        println!(
            "round {round}: killed after step {reported}; resumable from step {} ({})",
            loaded.step,
            loaded.dir.display()
        );
        previous = loaded.step;
    }
    assert!(previous > 0, "the children never finished a checkpoint");
    // One clean prune leaves only complete checkpoints: the newest two and best.
    prune(run.path(), 2).unwrap();
    let names: Vec<String> = std::fs::read_dir(run.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    let steps = names.iter().filter(|n| n.starts_with("step-")).count();
    assert!((1..=3).contains(&steps), "{names:?}");
    println!("checkpoint_kill: 10 kills survived, reached step {previous}");
}

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    }
}
