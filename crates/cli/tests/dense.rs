//! `tandem train --task dense` end to end on a small random BERT (the
//! `bert` fixture of tandem-text) and pairs made by `tandem data pairs`
//! from real SciFact abstracts: validation, GradCache, a projection head,
//! isotropy losses, the saved sentence-transformers directory, SIGKILL at
//! random moments with a bitwise-identical resume, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::str::contains;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/bert")
}

/// A BEIR folder of sentence -> rest-of-abstract pairs from 40 SciFact
/// abstracts (train / val / test), or `None` without `../shared`.
fn pairs(dir: &Path) -> Option<PathBuf> {
    let shared = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR"))?;
    let out = dir.join("pairs");
    tandem()
        .args(["data", "pairs", "--mode", "sentence-rest", "--sample", "40"])
        .args([
            "--num-pairs",
            "150",
            "--split",
            "0.7",
            "0.15",
            "0.15",
            "--input",
        ])
        .arg(shared.join("scifact-abstracts/corpus.jsonl"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    Some(out)
}

/// A temporary folder holding the pairs of [`pairs`], or `None` (and a
/// line saying the test is skipped) without `../shared`.
fn setup() -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let Some(data) = pairs(dir.path()) else {
        eprintln!("skipped: ../shared/data is absent");
        return None;
    };
    Some((dir, data))
}

fn run_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--task",
        "dense",
        "--epochs",
        "2",
        "--batch",
        "16",
        "--lr",
        "1e-3",
        "--ckpt-every",
        "3",
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `extra` is flag / value pairs; a flag already there gets the new value
    for pair in extra.chunks(2) {
        match a.iter().position(|x| x == pair[0]) {
            Some(i) => a[i + 1] = pair[1].to_string(),
            None => a.extend(pair.iter().map(|s| s.to_string())),
        }
    }
    if !a.iter().any(|x| x == "--model") {
        a.push("--model".into());
        a.push(fixture_model().display().to_string());
    }
    for (flag, p) in [("--data", data), ("--out", out)] {
        a.push(flag.into());
        a.push(p.display().to_string());
    }
    a
}

/// Without `--out` a dense run goes to `output/<model>/<data>`, and the
/// same command finds it again; `--sample N` trains on N examples.
#[test]
fn dense_sample_runs_in_output_model_data() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = run_args(&data, Path::new("unused"), extra);
        let at = a.iter().position(|x| x == "--out").unwrap();
        a.drain(at..at + 2);
        a
    };
    let extra = ["--sample", "20", "--epochs", "1", "--batch", "4"];
    let out = tandem()
        .current_dir(dir.path())
        .args(args(&extra))
        .assert()
        .success();
    let run = dir.path().join("output/bert/pairs");
    assert!(run.join("model").is_dir(), "no run in {}", run.display());
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("(20 examples)"), "{stderr}");
    // 20 examples in batches of 4: 5 steps
    let last = metrics(&run)
        .into_iter()
        .rfind(|v| v["kind"] == "train")
        .unwrap();
    assert_eq!(last["step"], 5);
    // the same command again: the finished run, not a new one
    tandem()
        .current_dir(dir.path())
        .args(args(&extra))
        .assert()
        .success();
    assert_eq!(
        std::fs::read_dir(dir.path().join("output/bert"))
            .unwrap()
            .count(),
        1
    );
}

/// The ModernBERT ColBERT PyLate built (a fixture of tandem-text).
fn colbert_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../text/tests/fixtures/colbert-modernbert")
        .display()
        .to_string()
}

/// A ColBERT trains as a dense run does (PyLate's cached contrastive loss
/// here, with hard negatives mined by MaxSim from rankings refreshed in the
/// background), validates and tests by MaxSim, and is saved as a PyLate
/// directory that `tandem beir` scores as the run did; SIGKILLed at
/// random moments, it resumes to the same bits.
#[test]
fn colbert_run_trains_saves_a_pylate_model_and_resumes_bitwise() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let model = colbert_model();
    let extra = [
        "--model",
        model.as_str(),
        "--val-split",
        "val",
        "--val-every",
        "10",
        "--cache-batch",
        "3",
        "--epochs",
        "6",
        "--batch",
        "4",
        "--dropout",
        "0.1",
        "--curriculum",
        "0-1:none;2-5:2@0.0-1.0",
        "--refresh-every",
        "4",
        "--mine-pool",
        "20",
    ];
    let run = sigkill_then_resume_is_bitwise(dir.path(), &data, &extra);
    let lines = metrics(&run);
    let train: Vec<f64> = lines
        .iter()
        .filter(|v| v["kind"] == "train")
        .map(|v| v["main_loss"].as_f64().unwrap())
        .collect();
    assert!(
        train.last().unwrap() < train.first().unwrap(),
        "the loss did not fall: {train:?}"
    );
    // negatives mined by MaxSim, from rankings refreshed every 4 steps
    assert!(
        lines
            .iter()
            .any(|v| v["mined_fill"].as_f64().is_some_and(|f| f > 0.0)),
        "no negatives were mined"
    );
    let saved = run.join("model");
    let modules = std::fs::read_to_string(saved.join("modules.json")).unwrap();
    assert!(modules.contains("pylate.models.Dense.Dense"), "{modules}");
    assert!(!saved.join("1_Pooling").exists());
    let st = std::fs::read_to_string(saved.join("config_sentence_transformers.json")).unwrap();
    assert!(st.contains("\"model_type\": \"ColBERT\""), "{st}");
    // the saved model's weights moved from the base's
    let base = Path::new(&model).join("model.safetensors");
    assert_ne!(
        std::fs::read(&base).unwrap(),
        std::fs::read(saved.join("model.safetensors")).unwrap()
    );
    // tandem beir on the saved model: the run's test scores
    let v = beir_gives_the_test_score(dir.path(), &saved, &data, &run);
    assert_eq!(v["metric"], "maxsim");
}

/// `tandem colbert build` makes a ColBERT from a dense model that
/// `tandem train` then trains as one; a bad --dim is refused.
#[test]
fn colbert_built_from_a_dense_model_trains() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let built = dir.path().join("built");
    tandem()
        .args(["colbert", "build", "--dim", "8", "--model"])
        .arg(fixture_model())
        .arg("--out")
        .arg(&built)
        .assert()
        .success();
    let model = built.display().to_string();
    let run = dir.path().join("run");
    let extra = ["--model", model.as_str(), "--epochs", "1", "--batch", "8"];
    let out = tandem()
        .args(run_args(&data, &run, &extra))
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("ColBERT token vectors"), "{stderr}");
    let modules = std::fs::read_to_string(run.join("model/modules.json")).unwrap();
    assert!(modules.contains("pylate.models.Dense.Dense"), "{modules}");
    tandem()
        .args(["colbert", "build", "--dim", "0", "--model"])
        .arg(fixture_model())
        .arg("--out")
        .arg(dir.path().join("zero"))
        .assert()
        .failure()
        .stderr(contains("--dim"));
    assert!(!dir.path().join("zero").exists());
}

/// Settings a ColBERT does not take are refused by name, before anything
/// is written.
#[test]
fn colbert_run_refuses_what_it_does_not_take() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let model = colbert_model();
    for (flag, value, says) in [
        ("--separate-towers", "true", "--separate-towers"),
        ("--head-dim", "8", "--head-dim"),
        ("--symmetric", "true", "--symmetric"),
    ] {
        let out = dir.path().join(flag.trim_start_matches('-'));
        let extra = ["--model", model.as_str(), flag, value];
        tandem()
            .args(run_args(&data, &out, &extra))
            .assert()
            .failure()
            .stderr(contains(says))
            .stderr(contains("is a ColBERT"));
        assert!(!out.join("model").exists());
    }
}

/// A sentence-transformers v6 multi-vector model trains too, and is saved
/// in its own layout (its prefixes are prompt text), which `tandem beir`
/// scores as the run did.
#[test]
fn st6_colbert_trains_and_is_saved_in_its_layout() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let st6 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../text/tests/fixtures/colbert-st6-modernbert")
        .display()
        .to_string();
    let out = dir.path().join("st6");
    let extra = ["--model", st6.as_str(), "--epochs", "1", "--batch", "8"];
    tandem()
        .args(run_args(&data, &out, &extra))
        .assert()
        .success();
    let saved = out.join("model");
    let modules = std::fs::read_to_string(saved.join("modules.json")).unwrap();
    assert!(modules.contains("MultiVectorMask"), "{modules}");
    assert_ne!(
        std::fs::read(Path::new(&st6).join("model.safetensors")).unwrap(),
        std::fs::read(saved.join("model.safetensors")).unwrap(),
        "the weights moved"
    );
    beir_gives_the_test_score(dir.path(), &saved, &data, &out);
}

/// `tandem beir` on the saved model `saved` of the run `run` (test split
/// of `data`) gives the run's test nDCG@10; returns its JSON summary.
fn beir_gives_the_test_score(dir: &Path, saved: &Path, data: &Path, run: &Path) -> Value {
    let test = metrics(run)
        .into_iter()
        .find(|v| v["kind"] == "test")
        .expect("a test line");
    let out = tandem()
        .args(["beir", "--json", "--split", "test", "--model"])
        .arg(saved)
        .arg("--data")
        .arg(data)
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("--out")
        .arg(dir.join("beir.run"))
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let (a, b) = (
        v["metrics"]["ndcg@10"].as_f64().unwrap(),
        test["ndcg@10"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-6,
        "tandem beir {a} vs the run's test {b}"
    );
    v
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

#[test]
fn dense_run_validates_tests_and_saves_a_sentence_transformers_model() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let run = dir.path().join("run");
    let extra = [
        "--val-split",
        "val",
        "--val-every",
        "5",
        "--cache-batch",
        "5",
        "--head-dim",
        "8",
        "--iso-cov",
        "0.05",
        "--iso-sigreg",
        "0.01",
        "--head-lr",
        "2e-3",
        "--symmetric",
        "true",
    ];
    tandem()
        .args(run_args(&data, &run, &extra))
        .assert()
        .success()
        .stdout(contains("trained model"));
    let m = metrics(&run);
    let train: Vec<&Value> = m.iter().filter(|v| v["kind"] == "train").collect();
    assert!(!train.is_empty());
    for key in [
        "main_loss",
        "accuracy",
        "emb_std",
        "emb_norm",
        "cov_error",
        "pos_distance",
    ] {
        assert!(
            train[0][key].is_number(),
            "train lines log {key}: {}",
            train[0]
        );
    }
    let vals: Vec<&Value> = m.iter().filter(|v| v["kind"] == "val").collect();
    assert!(
        vals.len() >= 3,
        "validations every 5 steps and at epoch ends: {m:?}"
    );
    assert!(vals.iter().all(|v| v["ndcg@10"].is_number()));
    let test = m.iter().find(|v| v["kind"] == "test").expect("a test line");
    assert!(test["ndcg@10"].as_f64().unwrap() > 0.0);
    // the saved model: a sentence-transformers directory tandem embeds with
    let model = run.join("model");
    for f in [
        "modules.json",
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "README.md",
        "2_Dense/config.json",
        "3_Dense/model.safetensors",
        "4_Normalize",
    ] {
        assert!(model.join(f).exists(), "{f} in the saved model");
    }
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    assert!(
        card.contains("ndcg@10") && card.contains("GradCache"),
        "{card}"
    );
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "protein folding\nmean pooling\n").unwrap();
    let out = dir.path().join("v.npy");
    tandem()
        .args(["embed", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&texts)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert!(out.is_file());
}

#[test]
fn dense_sigkill_at_random_moments_then_resume_is_bitwise_identical() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let extra = [
        "--val-split",
        "val",
        "--val-every",
        "5",
        "--cache-batch",
        "6",
        "--epochs",
        "4",
        "--batch",
        "8",
    ];
    sigkill_then_resume_is_bitwise(dir.path(), &data, &extra);
}

/// Mined negatives refreshed in the background every 3 steps from the
/// 5,183 SciFact documents (a refresh takes longer than the steps it
/// overlaps, so kills land in refreshes and the training thread finishes
/// them), with separate query and document towers (whose weights a
/// refresh copies and a checkpoint keeps): the same bits after SIGKILLs
/// as a straight run.
#[test]
fn dense_refreshed_negatives_survive_sigkill_bitwise() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let corpus = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .join("scifact-beir/corpus.jsonl");
    let corpus = corpus.to_str().unwrap();
    let extra = [
        "--curriculum",
        "0:none;1-3:2@0.0-1.0",
        "--refresh-every",
        "3",
        "--refresh-lag",
        "2",
        "--mine-pool",
        "30",
        "--corpus",
        corpus,
        "--max-length",
        "48",
        "--epochs",
        "4",
        "--batch",
        "8",
        "--separate-towers",
        "true",
    ];
    let runs = sigkill_then_resume_is_bitwise(dir.path(), &data, &extra);
    assert!(runs.join("model/router_config.json").is_file());
    let lines = metrics(&runs);
    let train: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "train").collect();
    let fill = |v: &Value| v["mined_fill"].as_f64();
    assert!(
        train.iter().any(|v| fill(v).is_some_and(|f| f > 0.0)),
        "negatives were mined"
    );
    assert!(train.iter().any(|v| v["staleness"].as_f64() >= Some(2.0)));
    assert!(train.iter().any(|v| v["refresh_s"].as_f64() > Some(0.0)));
}

/// Separate query and document towers: both learn, apart; the saved model
/// is a sentence-transformers Router that `tandem beir` scores as the run
/// did, and `tandem embed` embeds with the tower asked for.
#[test]
fn dense_separate_towers_train_apart_and_save_a_router() {
    let Some((dir, data)) = setup() else {
        return;
    };
    let run = dir.path().join("run");
    let extra = [
        "--separate-towers",
        "true",
        "--head-dim",
        "8",
        "--freeze-base",
        "true",
        "--cache-batch",
        "5",
        "--test-split",
        "test",
    ];
    tandem()
        .args(run_args(&data, &run, &extra))
        .assert()
        .success();
    let model = run.join("model");
    for f in [
        "modules.json",
        "router_config.json",
        "query_0_Transformer/model.safetensors",
        "query_0_Transformer/tokenizer.json",
        "query_2_Dense/model.safetensors",
        "document_1_Pooling/config.json",
        "document_2_Dense/model.safetensors",
        "1_Normalize",
    ] {
        assert!(model.join(f).exists(), "{f} in the saved model");
    }
    // a frozen base: only the heads moved, each its own way
    let base = std::fs::read(fixture_model().join("model.safetensors")).unwrap();
    for t in ["query", "document"] {
        let enc =
            std::fs::read(model.join(format!("{t}_0_Transformer/model.safetensors"))).unwrap();
        assert_eq!(
            tensors(&enc, "embeddings.word_embeddings.weight"),
            tensors(&base, "embeddings.word_embeddings.weight"),
            "{t}: the frozen encoder changed"
        );
    }
    let head = |t: &str| {
        let b = std::fs::read(model.join(format!("{t}_2_Dense/model.safetensors"))).unwrap();
        tensors(&b, "linear.weight")
    };
    assert_ne!(
        head("query"),
        head("document"),
        "the towers' heads are the same"
    );

    // tandem beir scores the saved model as the run's test line did
    let summary = beir_gives_the_test_score(dir.path(), &model, &data, &run);
    assert_eq!(summary["model"]["separate_towers"], true);

    // tandem embed needs a tower, and the two embed differently
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "protein folding\nmean pooling\n").unwrap();
    let embed = |tower: Option<&str>, out: &str| {
        let mut c = tandem();
        c.args(["embed", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&texts)
            .arg("--out")
            .arg(dir.path().join(out));
        if let Some(t) = tower {
            c.args(["--tower", t]);
        }
        c.assert()
    };
    embed(None, "none.npy")
        .failure()
        .stderr(contains("--tower"));
    assert!(!dir.path().join("none.npy").exists());
    embed(Some("query"), "q.npy").success();
    embed(Some("document"), "d.npy").success();
    let (q, d) = (
        std::fs::read(dir.path().join("q.npy")).unwrap(),
        std::fs::read(dir.path().join("d.npy")).unwrap(),
    );
    assert_ne!(q, d);
}

/// The raw bytes of tensor `name` in safetensors `bytes`.
fn tensors(bytes: &[u8], name: &str) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensor(name).unwrap().data().to_vec()
}

/// Runs `extra` straight, then again with SIGKILLs at random moments and
/// resumes: final weights, optimizer state, val/test lines and the saved
/// model must be the same bits. Returns the straight run's directory.
fn sigkill_then_resume_is_bitwise(dir: &Path, data: &Path, extra: &[&str]) -> PathBuf {
    let data = data.to_path_buf();
    let straight = dir.join("straight");
    let t = Instant::now();
    tandem()
        .args(run_args(&data, &straight, extra))
        .assert()
        .success();
    let whole = t.elapsed().as_secs_f64();
    let want = final_weights(&straight);

    let killed = dir.join("killed");
    let args = run_args(&data, &killed, extra);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (mut kills, mut resumed) = (0, 0);
    for _ in 0..10 {
        let mut child = StdCommand::cargo_bin("tandem")
            .unwrap()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_secs_f64(whole * rng.gen_range(0.1..0.4));
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
                // SAFETY: a signal to our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
                child.wait().unwrap();
                kills += 1;
                if killed.join("checkpoints").join("latest").exists() {
                    resumed += 1;
                }
            }
        }
    }
    tandem().args(&args).assert().success();
    assert!(
        kills >= 2 && resumed >= 1,
        "{kills} kills, {resumed} after a checkpoint"
    );
    let got = final_weights(&killed);
    assert!(
        got.0 == want.0,
        "model weights differ after {kills} SIGKILLs"
    );
    assert!(
        got.1 == want.1,
        "optimizer state differs after {kills} SIGKILLs"
    );
    let vals = |run: &Path| -> Vec<String> {
        metrics(run)
            .iter()
            .filter(|v| v["kind"] == "val" || v["kind"] == "test")
            .map(|v| format!("{} {} {}", v["kind"], v["step"], v["ndcg@10"]))
            .collect()
    };
    assert_eq!(vals(&straight), vals(&killed));
    let saved = weight_files(&straight.join("model"));
    assert!(!saved.is_empty());
    assert_eq!(saved, weight_files(&killed.join("model")));
    straight
}

/// Every `.safetensors` file under `dir` (its path inside `dir`, then its
/// bytes), in path order.
fn weight_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            for (rel, bytes) in weight_files(&p) {
                out.push((Path::new(&entry.file_name()).join(rel), bytes));
            }
        } else if p.extension().is_some_and(|e| e == "safetensors") {
            out.push((PathBuf::from(entry.file_name()), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn dense_bad_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"query\": \"a\", \"positive\": \"b\"}\n{\"query\": \"c\"\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    tandem()
        .args(run_args(
            &bad,
            &run,
            &["--val-split", "", "--test-split", ""],
        ))
        .assert()
        .code(2)
        .stderr(
            contains("bad.jsonl")
                .and(contains("line 2"))
                .and(contains("fix")),
        );
    assert!(!run.exists(), "nothing written");
    tandem()
        .args(["train", "--task", "dense", "--data"])
        .arg(&bad)
        .args(["--out"])
        .arg(&run)
        .assert()
        .code(2)
        .stderr(contains("--model"));
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"query\": \"a\", \"positive\": \"b\"}\n{\"query\": \"c\", \"positive\": \"d\"}\n",
    )
    .unwrap();
    tandem()
        .args(run_args(
            &good,
            &run,
            &["--val-split", "", "--test-split", "", "--text-loss", "kl"],
        ))
        .assert()
        .code(2)
        .stderr(contains("teacher scores"));
    // roberta's fixture has no head after its pooling
    let roberta = fixture_model().with_file_name("roberta");
    tandem()
        .args([
            "train",
            "--task",
            "dense",
            "--freeze-base",
            "true",
            "--model",
        ])
        .arg(&roberta)
        .arg("--data")
        .arg(&good)
        .args(["--test-split", "", "--out"])
        .arg(&run)
        .assert()
        .code(2)
        .stderr(contains("nothing to train"));
}

use predicates::prelude::PredicateBooleanExt;
