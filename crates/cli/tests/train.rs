//! `tandem train` and `tandem encode` end to end: crash-only training with a
//! real binary killed by real signals, exact resume, clean stops, the
//! memory guard, crash reports, bad input, and quality on real data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::str::contains;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

/// A small synthetic world (3,000 x 32) in `dir/world`.
fn world(dir: &Path) -> PathBuf {
    let w = dir.join("world");
    tandem()
        .args([
            "synth", "--rows", "3000", "--dim", "32", "--seed", "7", "--out",
        ])
        .arg(&w)
        .assert()
        .success();
    w
}

/// Flags of a short run exercising every moving part: pipelined mining on a
/// curriculum, the memory queue, random negatives, accumulation, frequent
/// checkpoints and mid-epoch validation.
fn run_args(world: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--epochs",
        "3",
        "--batch",
        "16",
        "--accum",
        "2",
        "--curriculum",
        "0:none;1-2:4@0.3-0.95",
        "--queue",
        "256",
        "--random-negatives",
        "32",
        "--lr",
        "2e-3",
        "--warmup",
        "10",
        "--ckpt-every",
        "7",
        "--val-every",
        "20",
        "--threads",
        "2",
        "--data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(world.display().to_string());
    a.push("--out".into());
    a.push(out.display().to_string());
    a
}

/// `args` with each `(flag, value)` set, replacing an earlier value.
fn set(args: &[String], flags: &[(&str, &str)]) -> Vec<String> {
    let mut a = args.to_vec();
    for (flag, value) in flags {
        match a.iter().position(|x| x == flag) {
            Some(i) => a[i + 1] = value.to_string(),
            None => a.extend([flag.to_string(), value.to_string()]),
        }
    }
    a
}

fn spawn(args: &[String], env: Option<(&str, &str)>) -> Child {
    let mut cmd = StdCommand::cargo_bin("tandem").unwrap();
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The newest checkpoint's model and optimizer bytes.
fn final_weights(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = run.join("checkpoints");
    let latest = std::fs::read_to_string(ck.join("latest")).unwrap();
    let dir = ck.join(latest.trim());
    (
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(dir.join("optimizer.safetensors")).unwrap(),
    )
}

fn kill(child: &mut Child, signal: libc::c_int) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

#[test]
fn sigkill_at_random_moments_then_resume_is_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let straight = dir.path().join("straight");
    let t = Instant::now();
    tandem().args(run_args(&w, &straight)).assert().success();
    let whole = t.elapsed().as_secs_f64();
    let want = final_weights(&straight);

    let killed = dir.path().join("killed");
    let args = run_args(&w, &killed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut kills = 0;
    let mut resumed = 0;
    for _ in 0..12 {
        let mut child = spawn(&args, None);
        // Kill somewhere in the first 60% of what a whole run takes: every
        // phase (start, steps, checkpoint writes, validation) gets hit.
        let wait = Duration::from_secs_f64(whole * rng.gen_range(0.1..0.6));
        let t = Instant::now();
        let mut done = None;
        while t.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match done {
            Some(status) => {
                assert!(status.success(), "the resumed run failed: {status}");
                break;
            }
            None => {
                kill(&mut child, libc::SIGKILL);
                child.wait().unwrap();
                kills += 1;
                if killed.join("checkpoints").join("latest").exists() {
                    resumed += 1;
                }
            }
        }
    }
    // Finish whatever is left.
    tandem().args(&args).assert().success();
    assert!(kills >= 2, "the run was killed only {kills} times");
    assert!(resumed >= 1, "no kill happened after a checkpoint");
    let got = final_weights(&killed);
    assert!(
        got.0 == want.0,
        "model weights differ after {kills} SIGKILLs"
    );
    assert!(
        got.1 == want.1,
        "optimizer state differs after {kills} SIGKILLs"
    );
    // The mining cache: each example mined once and appended in the same
    // order, what lay past a resumed checkpoint cut off, so the killed
    // run's file is the straight run's byte for byte.
    let cache = |run: &Path| std::fs::read(run.join("mine-cache.bin")).unwrap();
    assert!(
        cache(&straight).len() > 1000,
        "the mining cache is nearly empty"
    );
    assert!(
        cache(&killed) == cache(&straight),
        "mine-cache.bin differs after {kills} SIGKILLs"
    );
    // The resumed run's metrics tell the same story as the straight one.
    let vals = |run: &Path| -> Vec<String> {
        metrics(run)
            .iter()
            .filter(|v| v["kind"] == "val" || v["kind"] == "test")
            .map(|v| format!("{} {} {}", v["kind"], v["step"], v["recall@10"]))
            .collect()
    };
    assert_eq!(vals(&straight), vals(&killed));
}

#[test]
fn sigterm_finishes_the_step_checkpoints_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = set(
        &run_args(&w, &run),
        &[
            ("--ckpt-every", "100000"),
            ("--epochs", "30"),
            ("--curriculum", "0:none;1-29:4@0.3-0.95"),
        ],
    );
    let mut child = spawn(&args, None);
    let t = Instant::now();
    while !metrics(&run).iter().any(|v| v["kind"] == "train") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no training step logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&mut child, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exit status {status}");
    let m = metrics(&run);
    let event = m
        .iter()
        .find(|v| v["kind"] == "event")
        .expect("a stop event");
    assert!(event["message"].as_str().unwrap().contains("signal"));
    let step = event["step"].as_u64().unwrap();
    let ck = run.join("checkpoints").join(format!("step-{step:09}"));
    assert!(
        ck.join("MANIFEST").is_file(),
        "no checkpoint at the stop step {step}"
    );
    // The same command resumes from there (no fresh start: the first
    // stop's event stays in the metrics) and stops again further on.
    let mut again = spawn(&args, None);
    let t = Instant::now();
    while metrics(&run)
        .iter()
        .filter(|v| v["kind"] == "train")
        .count()
        < 3
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the resumed run logged nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&mut again, libc::SIGTERM);
    assert!(again.wait().unwrap().success());
    let events: Vec<u64> = metrics(&run)
        .iter()
        .filter(|v| v["kind"] == "event")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1] > events[0], "{events:?}");
}

#[test]
fn a_panic_writes_a_crash_report_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = run_args(&w, &run);
    let out = tandem()
        .args(&args)
        .env("TANDEM_FAULT_PANIC_AT_STEP", "30")
        .assert()
        .failure()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("crash report written"));
    let report = std::fs::read_to_string(run.join("crash-report.md")).unwrap();
    assert!(
        report.contains("fault injected") && report.contains("backtrace"),
        "{report}"
    );
    assert!(report.contains("- step: 30"), "{report}");
    tandem()
        .args(&args)
        .assert()
        .success()
        .stderr(contains("resuming from step 28"));
}

#[test]
fn a_checkpoint_caught_between_its_renames_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = set(&run_args(&w, &run), &[("--max-steps", "21")]);
    tandem().args(&args).assert().success();
    let want = final_weights(&run);
    // A kill after the MANIFEST but before the rename leaves `.tmp-step-N`.
    let ck = run.join("checkpoints");
    std::fs::rename(ck.join("step-000000021"), ck.join(".tmp-step-000000021")).unwrap();
    tandem()
        .args(&args)
        .assert()
        .success()
        .stderr(contains("resuming from step 21"));
    assert!(ck.join("step-000000021").join("MANIFEST").is_file());
    assert!(final_weights(&run) == want);
}

#[test]
fn force_checks_first_and_resume_knows_its_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = set(&run_args(&w, &run), &[("--max-steps", "8")]);
    tandem().args(&args).assert().success();
    let want = final_weights(&run);
    // --force with a command that cannot run deletes nothing.
    tandem()
        .args(set(&args, &[("--batch", "100000")]))
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("--batch"));
    tandem()
        .args(set(
            &args,
            &[
                ("--mine-index", "nope.usearch"),
                ("--curriculum", "0-2:2@0.1-0.9"),
            ],
        ))
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("nope.usearch"));
    assert!(
        final_weights(&run) == want,
        "a refused --force touched the run"
    );
    // The same run spelled differently resumes.
    let slash = format!("{}/", run.display());
    let dotted = format!("{}/./world", dir.path().display());
    tandem()
        .args(set(&args, &[("--out", &slash), ("--data", &dotted)]))
        .assert()
        .success()
        .stderr(contains("resuming from step 8"));
    // Another dataset under the same path is refused.
    std::fs::remove_dir_all(&w).unwrap();
    tandem()
        .args([
            "synth", "--rows", "3000", "--dim", "32", "--seed", "8", "--out",
        ])
        .arg(&w)
        .assert()
        .success();
    tandem()
        .args(&args)
        .assert()
        .code(2)
        .stderr(contains("dataset differs"));
    // A user's file in the run directory survives --force; the old run's
    // TensorBoard files do not.
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let old_events = std::fs::read_dir(run.join("tb")).unwrap().count();
    assert!(old_events >= 1);
    tandem().args(&args).arg("--force").assert().success();
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(run.join("tb")).unwrap().count(),
        1,
        "one event file: the new run's"
    );
}

#[test]
fn max_rss_checkpoints_and_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = set(
        &run_args(&w, &run),
        // A large GRU (hidden 1024 over 32-d vectors) resides in about
        // 130 MB while training; the estimate (about 70 MB) and the
        // process before the model (about 25 MB) stay below the limit.
        &[
            ("--max-rss", "100M"),
            ("--rss-every", "1"),
            ("--hidden", "1024"),
        ],
    );
    tandem()
        .args(&args)
        .assert()
        .code(2)
        .stderr(contains("exceeded max_rss"))
        .stderr(contains("--max-rss"));
    assert!(run.join("checkpoints").join("latest").is_file());
    // A limit below the estimate is refused before anything runs ...
    tandem()
        .args(set(&args, &[("--max-rss", "1M")]))
        .assert()
        .code(2)
        .stderr(contains("estimate"));
    // ... and a higher one resumes the stopped run.
    tandem()
        .args(set(&args, &[("--max-rss", "8G"), ("--max-steps", "12")]))
        .assert()
        .code(2)
        .stderr(contains("different config"));
    tandem()
        .args(set(&args, &[("--max-rss", "8G")]))
        .assert()
        .success()
        .stderr(contains("resuming from step 1"));
}

#[test]
fn bad_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let base = run_args(&w, &run);
    let with = |extra: &[&str]| {
        let pairs: Vec<(&str, &str)> = extra
            .chunks(2)
            .map(|p| (p[0], p.get(1).copied().unwrap_or("")))
            .collect();
        let mut a = set(&base, &pairs);
        a.retain(|x| !x.is_empty());
        a
    };
    tandem()
        .args(with(&["--curriculum", "0-1:none;2-5:8@0.9-0.8"]))
        .assert()
        .code(2)
        .stderr(contains("curriculum"))
        .stderr(contains("column"));
    tandem()
        .args(with(&["--device", "cuda"]))
        .assert()
        .code(2)
        .stderr(contains("--device cpu"));
    tandem()
        .args(with(&["--kind", "mamba"]))
        .assert()
        .code(2)
        .stderr(contains("mamba"));
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "epochs = 2\nlearning_rate = 0.1\n").unwrap();
    tandem()
        .args(with(&["--config", cfg.to_str().unwrap()]))
        .assert()
        .code(2)
        .stderr(contains("run.toml"))
        .stderr(contains("learning_rate"));
    assert!(!run.exists(), "a rejected run left files behind");
    tandem()
        .args(["train", "--data"])
        .arg(dir.path().join("nowhere"))
        .arg("--out")
        .arg(&run)
        .assert()
        .code(2)
        .stderr(contains("nowhere"));

    // A finished short run; the same directory with another config is refused.
    tandem()
        .args(with(&["--max-steps", "5"]))
        .assert()
        .success();
    tandem()
        .args(with(&["--max-steps", "5", "--lr", "0.1"]))
        .assert()
        .code(2)
        .stderr(contains("different config"))
        .stderr(contains("lr"));
    tandem()
        .args(with(&["--max-steps", "5", "--lr", "0.1"]))
        .arg("--force")
        .assert()
        .success();
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "mine").unwrap();
    tandem()
        .args(["train", "--max-steps", "2", "--data"])
        .arg(&w)
        .arg("--out")
        .arg(&notes)
        .assert()
        .code(2)
        .stderr(contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(notes.join("todo.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn config_file_and_flags_merge_and_encode_writes_a_scorable_run() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "data = {:?}\nout = {:?}\nkind = \"lstm\"\nepochs = 1\nbatch = 16\nlr = 0.002\nmax_steps = 40\n",
            w.display().to_string(),
            run.display().to_string()
        ),
    )
    .unwrap();
    tandem()
        .args(["train", "--config"])
        .arg(&cfg)
        .args(["--kind", "attention", "--miner", "sync"])
        .assert()
        .success()
        .stdout(contains("attention tower"))
        .stdout(contains("report:"));
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("kind = \"attention\"") && saved.contains("max_steps = 40"),
        "{saved}"
    );
    for f in [
        "report.md",
        "loss.svg",
        "lr.svg",
        "recall.svg",
        "test.run",
        "test.qrels",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("## Settings") && report.contains("kind = \"attention\""),
        "{report}"
    );

    let q = dir.path().join("q.npy");
    let trec = dir.path().join("t.run");
    let encode = || {
        let mut c = tandem();
        c.args(["encode", "--checkpoint"])
            .arg(&run)
            .arg("--data")
            .arg(&w)
            .arg("--out")
            .arg(&q);
        c
    };
    encode().arg("--run").arg(&trec).assert().success();
    let info = tandem().args(["bank", "info"]).arg(&q).assert().success();
    let text = String::from_utf8_lossy(&info.get_output().stdout).to_string();
    assert!(text.contains("32"), "{text}");
    let eval = tandem()
        .args(["eval", "--qrels"])
        .arg(dir.path().join("t.qrels"))
        .arg("--run")
        .arg(&trec)
        .args(["--metrics", "recall@10", "--json"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&eval.get_output().stdout).unwrap();
    // The run file scores what the trainer measured on the test split.
    let test = metrics(&run)
        .into_iter()
        .find(|v| v["kind"] == "test")
        .unwrap();
    let from_file = v["mean"]["recall@10"].as_f64().unwrap();
    assert!(
        (from_file - test["recall@10"].as_f64().unwrap()).abs() < 1e-9,
        "{v}"
    );
    // Encoding refuses to overwrite without --force.
    encode().assert().code(2).stderr(contains("--force"));
    // One path for two outputs is refused.
    encode()
        .arg("--run")
        .arg(&q)
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("two outputs"));
    // A corrupted checkpoint is refused, not encoded with.
    let best = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    let model = run
        .join("checkpoints")
        .join(best.trim())
        .join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();
    encode()
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("SHA-256"));
}

#[test]
fn encode_exports_the_doc_tower() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let run = dir.path().join("run");
    let args = set(
        &run_args(&w, &run),
        &[("--max-steps", "5"), ("--doc", "linear")],
    );
    tandem().args(&args).assert().success();
    let docs = dir.path().join("docs.npy");
    tandem()
        .args(["encode", "--checkpoint"])
        .arg(&run)
        .arg("--data")
        .arg(&w)
        .arg("--out")
        .arg(dir.path().join("q.npy"))
        .arg("--docs")
        .arg(&docs)
        .assert()
        .success()
        .stdout(contains("doc tower linear"));
    let info = tandem()
        .args(["bank", "info", "--json"])
        .arg(&docs)
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&info.get_output().stdout).unwrap();
    assert_eq!(v["rows"], 3000);
    assert_eq!(v["dtype"], "float32");
    // The linear doc tower normalises its output.
    assert!(
        (v["norm"]["min"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{v}"
    );
    assert!(
        (v["norm"]["max"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{v}"
    );
}

#[test]
fn mining_with_an_hnsw_index() {
    let dir = tempfile::tempdir().unwrap();
    let w = world(dir.path());
    let index = dir.path().join("bank.usearch");
    tandem()
        .args(["index", "build", "--metric", "cosine", "--bank"])
        .arg(w.join("bank.npy"))
        .arg("--out")
        .arg(&index)
        .assert()
        .success();
    let run = dir.path().join("run");
    let args = set(
        &run_args(&w, &run),
        &[("--curriculum", "0-2:4@0.3-0.95"), ("--max-steps", "30")],
    );
    let mut with_index = args.clone();
    with_index.extend(["--mine-index".into(), index.display().to_string()]);
    tandem().args(&with_index).assert().success();
    let last = metrics(&run)
        .into_iter()
        .rfind(|v| v["kind"] == "train")
        .unwrap();
    assert!(last["band_fill"].as_f64().unwrap() > 0.5, "{last}");
    // A file that is not an index is refused before training, and the bank is untouched.
    let mut wrong = set(
        &args,
        &[("--out", dir.path().join("run2").to_str().unwrap())],
    );
    wrong.extend([
        "--mine-index".into(),
        w.join("bank.npy").display().to_string(),
    ]);
    tandem()
        .args(&wrong)
        .assert()
        .code(2)
        .stderr(contains("not a tandem HNSW index"));
}

#[test]
fn gru_tower_beats_the_mean_baseline_on_scifact() {
    let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let sf = data.join("scifact-abstracts");
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("sf");
    tandem()
        .args(["data", "from-sentences", "--sentences"])
        .arg(sf.join("sentences.jsonl"))
        .arg("--vectors")
        .arg(sf.join("sentences.minilm.f16.npy"))
        .arg("--out")
        .arg(&ds)
        .assert()
        .success();
    let run = dir.path().join("run");
    tandem()
        .args([
            "train",
            "--hidden",
            "384",
            "--epochs",
            "1",
            "--max-steps",
            "120",
            "--lr",
            "1e-3",
        ])
        .args([
            "--warmup",
            "10",
            "--queue",
            "4096",
            "--threads",
            "2",
            "--ks",
            "10,100",
            "--data",
        ])
        .arg(&ds)
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    let m = metrics(&run);
    let test = m.iter().find(|v| v["kind"] == "test").unwrap();
    let mean = m
        .iter()
        .find(|v| v["kind"] == "baseline" && v["split"] == "test" && v["query"] == "mean")
        .unwrap();
    for k in ["recall@10", "mrr@10"] {
        let (t, b) = (test[k].as_f64().unwrap(), mean[k].as_f64().unwrap());
        assert!(
            t > b,
            "{k}: GRU tower {t:.4} does not beat the mean baseline {b:.4}"
        );
    }
    // The mean baseline is the README's reference figure.
    assert!((mean["recall@10"].as_f64().unwrap() - 0.5614).abs() < 1e-3);
}
