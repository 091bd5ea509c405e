//! `tandem embed`, `tandem bank merge` and `tandem beir` end to end with the
//! small random-initialised model fixtures of tandem-text: the bank, ids and
//! sidecar; prompts; resume after a real SIGKILL; shards and their merge;
//! refusals that write nothing; a BEIR evaluation with its cache.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;
use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tandem_bank::{Bank, Dtype, OpenOptions};

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

/// A model fixture of tandem-text (`refused/...` for the refused ones).
fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../text/tests/fixtures")
        .join(name)
}

/// Width of the bert fixture's output (its Dense module's out_features).
const BERT_DIM: usize = 16;

/// Short words: a text of two of them is far below the bert fixture's 24
/// tokens, even with a prompt.
const WORDS: &[&str] = &[
    "cell", "gene", "heat", "iron", "lung", "mouse", "salt", "bone", "virus", "drug", "blood",
    "brain", "liver", "skin", "sleep", "water", "light", "sugar", "fat", "milk",
];

/// What a generated corpus holds.
struct Texts {
    /// The `_id`s, in file order.
    ids: Vec<String>,
    /// The texts as `tandem embed` sees them (title + " " + text, trimmed).
    texts: Vec<String>,
    /// How many are longer than 24 tokens.
    long: usize,
    /// How many are empty (or only blanks).
    empty: usize,
}

/// Writes a BEIR-style corpus of `n` lines to `path`: mostly two-word
/// texts (every third one split between title and text), every seventh a
/// 40-word text, some empty or blank ones. Short texts repeat, in other
/// blocks too, under other ids.
fn write_corpus(path: &Path, n: usize) -> Texts {
    let mut t = Texts {
        ids: Vec::new(),
        texts: Vec::new(),
        long: 0,
        empty: 0,
    };
    let mut lines = String::new();
    for i in 0..n {
        let id = format!("doc{i}");
        let (title, text, seen) = if i % 97 == 5 {
            t.empty += 1;
            (
                String::new(),
                if i % 2 == 0 {
                    String::new()
                } else {
                    "   ".to_string()
                },
                String::new(),
            )
        } else if i % 7 == 3 {
            t.long += 1;
            let words: Vec<&str> = (0..40).map(|j| WORDS[(i + 3 * j) % WORDS.len()]).collect();
            let s = words.join(" ");
            (String::new(), s.clone(), s)
        } else {
            let (a, b) = (WORDS[i % WORDS.len()], WORDS[(i * 7 + 3) % WORDS.len()]);
            if i % 3 == 0 {
                (a.to_string(), b.to_string(), format!("{a} {b}"))
            } else {
                (String::new(), format!("{a} {b}"), format!("{a} {b}"))
            }
        };
        let line = serde_json::json!({"_id": id, "title": title, "text": text});
        lines.push_str(&line.to_string());
        lines.push('\n');
        t.ids.push(id);
        t.texts.push(seen);
    }
    std::fs::write(path, lines).unwrap();
    t
}

/// `tandem embed` with the bert fixture.
fn embed_cmd(input: &Path, out: &Path, extra: &[&str]) -> Command {
    embed_with(&model("bert"), input, out, extra)
}

fn embed_with(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = tandem();
    c.arg("embed")
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn embed(input: &Path, out: &Path, extra: &[&str]) -> Assert {
    embed_cmd(input, out, extra).assert().success()
}

fn ids_of(out: &Path) -> PathBuf {
    out.with_extension("ids.txt")
}

fn sidecar_of(out: &Path) -> PathBuf {
    out.with_extension("json")
}

fn partial_of(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn open(out: &Path) -> Bank {
    Bank::open(
        out,
        &OpenOptions {
            key: None,
            ids: Some(ids_of(out)),
        },
    )
    .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every path under `dir`, relative, sorted (files and folders).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Checks a refusal: exit code 2, stderr one `error:` line holding every
/// needle; returns that line.
fn refused(a: Assert, needles: &[&str]) -> String {
    let out = a.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit status; stderr: {stderr}");
    let shown: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(shown.len(), 1, "one line on stderr expected: {stderr}");
    assert!(shown[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(shown[0].contains(n), "{n:?} missing from: {stderr}");
    }
    shown[0].to_string()
}

/// The sidecar without what changes from run to run.
fn steady(mut side: Value) -> Value {
    let m = side.as_object_mut().unwrap();
    for k in ["seconds", "texts_per_second", "resumed_rows", "ids"] {
        assert!(m.remove(k).is_some(), "no {k} in the sidecar");
    }
    side
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn embed_writes_the_bank_ids_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    let t = write_corpus(&input, 3000);
    assert!(t.long > 0 && t.empty > 0);
    let out = dir.path().join("vectors.npy");
    embed(&input, &out, &["--batch", "16", "--threads", "2"]);

    let bank = open(&out);
    assert_eq!(
        (bank.rows(), bank.dim(), bank.dtype()),
        (3000, BERT_DIM, Dtype::F32)
    );
    assert_eq!(lines(&ids_of(&out)), t.ids);
    assert_eq!(bank.ids().unwrap(), &t.ids[..]);
    assert!(!partial_of(&out).exists(), "the blocks are left behind");

    // rows in input order: the same text gives the same vector wherever it
    // is (other block, other batch, title split off or not), and different
    // texts give different ones; every row is normalised (Normalize module)
    let v = bank.to_f32_vec();
    let row = |r: usize| &v[r * BERT_DIM..(r + 1) * BERT_DIM];
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut repeats = 0;
    for (r, text) in t.texts.iter().enumerate() {
        let norm = row(r).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "row {r} has norm {norm}");
        match first.get(text.as_str()) {
            Some(&f) => {
                repeats += 1;
                let d = row(f)
                    .iter()
                    .zip(row(r))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    d < 1e-5,
                    "rows {f} and {r} hold the same text {text:?} but differ by {d}"
                );
            }
            None => {
                first.insert(text, r);
            }
        }
    }
    assert!(repeats > 1000);
    let distinct: Vec<usize> = first.values().copied().collect();
    for w in distinct.windows(2) {
        assert_ne!(
            row(w[0]),
            row(w[1]),
            "rows {} and {} ({:?}, {:?})",
            w[0],
            w[1],
            t.texts[w[0]],
            t.texts[w[1]]
        );
    }

    let side = read_json(&sidecar_of(&out));
    assert!(
        is_hex64(side["model"]["fingerprint"].as_str().unwrap()),
        "{side}"
    );
    assert_eq!(side["model"]["dim"], BERT_DIM);
    assert_eq!(side["model"]["max_length"], 24);
    assert_eq!(side["model"]["model_type"], "bert");
    assert_eq!(side["input"]["fingerprint"], sha256_hex(&input));
    assert_eq!(side["input"]["rows"], 3000);
    assert_eq!(side["rows"], serde_json::json!([0, 3000]));
    assert_eq!(side["shard"], Value::Null);
    assert_eq!(side["truncated"], t.long, "{side}");
    assert_eq!(side["empty"], t.empty, "{side}");
    assert_eq!(side["prompt"], "");
    assert_eq!(side["dtype"], "float32");
    assert_eq!(side["settings"]["batch"], 16);
    assert_eq!(side["settings"]["precision"], "f32");
    assert_eq!(side["settings"]["field"], "text");
    assert_eq!(side["resumed_rows"], 0);
    assert_eq!(side["ids"], "vectors.ids.txt");

    // --json prints the sidecar; float16 gives a float16 bank of the same vectors
    let half = dir.path().join("half.npy");
    let a = embed(
        &input,
        &half,
        &[
            "--batch",
            "16",
            "--threads",
            "2",
            "--dtype",
            "float16",
            "--json",
        ],
    );
    let printed: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(printed, read_json(&sidecar_of(&half)));
    assert_eq!(printed["dtype"], "float16");
    let hb = open(&half);
    assert_eq!(
        (hb.rows(), hb.dim(), hb.dtype()),
        (3000, BERT_DIM, Dtype::F16)
    );
    let hv = hb.to_f32_vec();
    let worst = v
        .iter()
        .zip(&hv)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-3, "float16 differs from float32 by {worst}");
    assert_eq!(lines(&ids_of(&half)), t.ids);
    assert_eq!(
        printed["model"], side["model"],
        "same model, same fingerprint"
    );

    // --force replaces an existing bank
    embed(
        &input,
        &half,
        &["--batch", "16", "--threads", "2", "--force"],
    );
    assert_eq!(open(&half).dtype(), Dtype::F32);
    assert_same_bank(&half, &out);
}

#[test]
fn the_fingerprint_follows_the_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    write_corpus(&input, 20);
    let copy = dir.path().join("bert");
    copy_dir(&model("bert"), &copy);
    let (a, b, c) = (
        dir.path().join("a.npy"),
        dir.path().join("b.npy"),
        dir.path().join("c.npy"),
    );
    embed(&input, &a, &[]);
    embed_with(&copy, &input, &b, &[]).assert().success();
    // one weight of the Dense module changes
    let w = copy.join("2_Dense/model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    std::fs::write(&w, bytes).unwrap();
    embed_with(&copy, &input, &c, &[]).assert().success();
    let fp = |p: &Path| {
        read_json(&sidecar_of(p))["model"]["fingerprint"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        fp(&a),
        fp(&b),
        "a copy of the model has the same fingerprint"
    );
    assert_ne!(
        fp(&b),
        fp(&c),
        "a changed weight does not change the fingerprint"
    );
    assert_same_bank(&a, &b);
    assert!(std::fs::read(&b).unwrap() != std::fs::read(&c).unwrap());
}

#[test]
fn prompts_by_name_and_by_text_agree() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    let t = write_corpus(&input, 300);
    let run = |name: &str, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let mut args = vec!["--threads", "2"];
        args.extend_from_slice(extra);
        embed(&input, &out, &args);
        out
    };
    let plain = run("plain.npy", &[]);
    let named = run("named.npy", &["--prompt-name", "query"]);
    let given = run("given.npy", &["--prompt", "query: "]);
    let doc = run("doc.npy", &["--prompt-name", "document"]);
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_same_bank(&named, &given);
    assert!(bytes(&plain) != bytes(&named), "the prompt changes nothing");
    assert!(
        bytes(&named) != bytes(&doc),
        "query and document prompts give the same vectors"
    );
    // every row moves, not just some
    let (p, q) = (open(&plain).to_f32_vec(), open(&named).to_f32_vec());
    for r in 0..t.ids.len() {
        assert_ne!(
            p[r * BERT_DIM..(r + 1) * BERT_DIM],
            q[r * BERT_DIM..(r + 1) * BERT_DIM],
            "row {r}"
        );
    }
    let side = |p: &Path| read_json(&sidecar_of(p));
    assert_eq!(side(&named)["prompt"], "query: ");
    assert_eq!(side(&given)["prompt"], "query: ");
    assert_eq!(side(&doc)["prompt"], "passage: ");
    assert_eq!(side(&plain)["prompt"], "");
    // the prompt's tokens count toward truncation, never below the long texts
    assert!(side(&named)["truncated"].as_u64().unwrap() >= t.long as u64);
    assert_eq!(side(&named)["empty"], t.empty);
    assert_eq!(steady(side(&named)), steady(side(&given)));
}

/// The command line of an embedding into `out` slow enough to be killed
/// mid-way: many short rows, small batches, one thread.
fn slow_args(input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["embed", "--model"].iter().map(|s| s.to_string()).collect();
    a.push(model("bert").display().to_string());
    a.extend(["--input".to_string(), input.display().to_string()]);
    a.extend(["--out".to_string(), out.display().to_string()]);
    a.extend(
        ["--batch", "4", "--threads", "1", "--max-length", "64"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Rows of the kill test's corpus.
const KILL_ROWS: usize = 20_000;

/// Writes a corpus of long texts (every one fills the 64 tokens).
fn write_long_corpus(path: &Path, n: usize) {
    let mut s = String::new();
    for i in 0..n {
        let words: Vec<&str> = (0..70)
            .map(|j| WORDS[(i * 13 + j * 7 + j * j) % WORDS.len()])
            .collect();
        let line = serde_json::json!({"_id": format!("p{i}"), "title": WORDS[i % WORDS.len()], "text": words.join(" ")});
        s.push_str(&line.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn blocks_in(partial: &Path) -> usize {
    std::fs::read_dir(partial)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("block-") && n.ends_with(".f32")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_then_rerun_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    write_long_corpus(&input, KILL_ROWS);

    let straight = dir.path().join("straight.npy");
    let t = Instant::now();
    tandem()
        .args(slow_args(&input, &straight, &[]))
        .assert()
        .success();
    eprintln!("uninterrupted: {:.1} s", t.elapsed().as_secs_f64());

    let killed = dir.path().join("killed.npy");
    let partial = partial_of(&killed);
    let args = slow_args(&input, &killed, &[]);
    let mut child = StdCommand::cargo_bin("tandem")
        .unwrap()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while blocks_in(&partial) == 0 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before a block was saved: make the corpus bigger");
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "no block saved in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before the kill: make the corpus bigger"
    );
    let saved = blocks_in(&partial);
    assert!(
        saved >= 1 && saved < KILL_ROWS.div_ceil(1024),
        "{saved} blocks saved"
    );
    for p in [&killed, &ids_of(&killed), &sidecar_of(&killed)] {
        assert!(!p.exists(), "{} exists after the kill", p.display());
    }
    assert!(partial.join("job.json").is_file());

    // other settings would mix two jobs' rows: refused, the blocks kept
    let before = listing(&partial);
    let shown = partial.display().to_string();
    for other in [
        &["--batch", "8"][..],
        &["--prompt", "query: "][..],
        &["--max-length", "32"][..],
    ] {
        let mut a = slow_args(&input, &killed, &[]);
        for pair in other.chunks(2) {
            let i = a.iter().position(|x| x == pair[0]);
            match i {
                Some(i) => a[i + 1] = pair[1].to_string(),
                None => a.extend([pair[0].to_string(), pair[1].to_string()]),
            }
        }
        refused(tandem().args(&a).assert(), &[&shown, "unfinished"]);
        assert_eq!(
            listing(&partial),
            before,
            "a refused run changed {}",
            partial.display()
        );
        assert!(!killed.exists());
    }

    // the same command resumes and ends with the same bytes
    tandem().args(&args).assert().success();
    assert!(!partial.exists(), "the blocks are left behind");
    let side = read_json(&sidecar_of(&killed));
    let resumed = side["resumed_rows"].as_u64().unwrap() as usize;
    assert!(resumed > 0, "nothing resumed: {side}");
    assert!(
        resumed >= saved * 1024,
        "{saved} blocks saved but {resumed} rows resumed"
    );
    assert!(resumed < KILL_ROWS);
    eprintln!("killed after {saved} saved blocks; the rerun resumed {resumed} rows");
    assert_same_bank(&killed, &straight);
    assert!(std::fs::read(ids_of(&killed)).unwrap() == std::fs::read(ids_of(&straight)).unwrap());
    let want = read_json(&sidecar_of(&straight));
    assert_eq!(want["resumed_rows"], 0);
    assert_eq!(
        steady(side),
        steady(want),
        "the sidecars tell different stories"
    );
}

/// A 3,000-row corpus in `dir` embedded whole and as shards 0/3, 1/3, 2/3
/// (`extra` flags on the shards only): the corpus, the whole bank, the parts.
fn whole_and_shards(dir: &Path, extra: &[&str]) -> (Texts, PathBuf, Vec<PathBuf>) {
    let input = dir.join("corpus.jsonl");
    let t = write_corpus(&input, 3000);
    let whole = dir.join("whole.npy");
    embed(&input, &whole, &["--threads", "2"]);
    let parts = (0..3).map(|i| shard(&input, dir, i, extra)).collect();
    (t, whole, parts)
}

/// Shard `i` of 3 of `input`, into `dir`.
fn shard(input: &Path, dir: &Path, i: usize, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!(
        "part{i}{}.npy",
        if extra.is_empty() { "" } else { "-other" }
    ));
    let s = format!("{i}/3");
    let mut args = vec!["--threads", "2", "--shard", s.as_str()];
    args.extend_from_slice(extra);
    embed(input, &out, &args);
    out
}

fn merge(parts: &[&PathBuf], out: &Path) -> Assert {
    let mut c = tandem();
    c.args(["bank", "merge"])
        .args(parts.iter())
        .arg("--out")
        .arg(out);
    c.assert()
}

/// Fails unless the two banks are the same bytes, saying which rows differ
/// and by how much when they are not.
fn assert_same_bank(got: &Path, want: &Path) {
    let (g, w) = (std::fs::read(got).unwrap(), std::fs::read(want).unwrap());
    if g == w {
        return;
    }
    let (gb, wb) = (
        Bank::open(got, &OpenOptions::default()).unwrap(),
        Bank::open(want, &OpenOptions::default()).unwrap(),
    );
    assert_eq!(
        (gb.rows(), gb.dim(), gb.dtype()),
        (wb.rows(), wb.dim(), wb.dtype()),
        "{} and {}: shapes",
        got.display(),
        want.display()
    );
    let (gv, wv) = (gb.to_f32_vec(), wb.to_f32_vec());
    let dim = gb.dim();
    let rows: Vec<usize> = (0..gb.rows())
        .filter(|&r| gv[r * dim..(r + 1) * dim] != wv[r * dim..(r + 1) * dim])
        .collect();
    let worst = gv
        .iter()
        .zip(&wv)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    panic!(
        "{} is not byte-identical to {}: {} of {} rows differ (first: {:?}), by up to {worst:e}",
        got.display(),
        want.display(),
        rows.len(),
        gb.rows(),
        &rows[..rows.len().min(10)]
    );
}

#[test]
fn merged_shards_are_byte_identical_to_the_unsharded_bank() {
    let dir = tempfile::tempdir().unwrap();
    let (t, whole, parts) = whole_and_shards(dir.path(), &[]);
    // shards hold whole blocks of 1024 rows: 3000 rows are 3 blocks
    let edges = [0, 1024, 2048, 3000];
    for (i, p) in parts.iter().enumerate() {
        let side = read_json(&sidecar_of(p));
        assert_eq!(side["rows"], serde_json::json!([edges[i], edges[i + 1]]));
        assert_eq!(side["shard"], serde_json::json!({"index": i, "count": 3}));
        assert_eq!(lines(&ids_of(p)), t.ids[edges[i]..edges[i + 1]]);
        assert_eq!(open(p).rows(), edges[i + 1] - edges[i]);
    }
    let merged = dir.path().join("merged.npy");
    merge(&[&parts[0], &parts[1], &parts[2]], &merged).success();
    assert_eq!(lines(&ids_of(&merged)), t.ids);
    assert!(std::fs::read(ids_of(&merged)).unwrap() == std::fs::read(ids_of(&whole)).unwrap());
    let (ms, ws) = (
        read_json(&sidecar_of(&merged)),
        read_json(&sidecar_of(&whole)),
    );
    for k in [
        "model",
        "input",
        "rows",
        "dtype",
        "prompt",
        "settings",
        "truncated",
        "empty",
    ] {
        assert_eq!(ms[k], ws[k], "{k}");
    }
    assert_eq!(ms["shard"], Value::Null);
    assert_same_bank(&merged, &whole);
}

#[test]
fn merge_refuses_shards_out_of_order_missing_or_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, _whole, parts) = whole_and_shards(d, &[]);
    let bad = d.join("bad.npy");
    let gone = |bad: &Path| {
        for p in [bad.to_path_buf(), ids_of(bad), sidecar_of(bad)] {
            assert!(!p.exists(), "{} written by a refused merge", p.display());
        }
    };
    // out of order
    let p1 = parts[1].display().to_string();
    refused(
        merge(&[&parts[1], &parts[0], &parts[2]], &bad),
        &[&p1, "rows 1024..2048", "in order"],
    );
    gone(&bad);
    refused(
        merge(&[&parts[0], &parts[2], &parts[1]], &bad),
        &["rows 2048..3000", "end at 1024"],
    );
    gone(&bad);
    // a shard missing, in the middle or at the end
    refused(
        merge(&[&parts[0], &parts[2]], &bad),
        &["rows 2048..3000", "end at 1024", "every shard"],
    );
    gone(&bad);
    refused(
        merge(&[&parts[0], &parts[1]], &bad),
        &["row 2048 of 3000", "every shard"],
    );
    gone(&bad);
    // the same shard twice
    refused(
        merge(&[&parts[0], &parts[0], &parts[1], &parts[2]], &bad),
        &["rows 0..1024"],
    );
    gone(&bad);
    // a shard of another prompt, or another dtype
    let input = d.join("corpus.jsonl");
    let other = shard(&input, d, 1, &["--prompt", "query: "]);
    let o = other.display().to_string();
    refused(
        merge(&[&parts[0], &other, &parts[2]], &bad),
        &[&o, "prompt differs"],
    );
    gone(&bad);
    std::fs::remove_file(&other).unwrap();
    let other = shard(&input, d, 1, &["--dtype", "float16", "--force"]);
    refused(
        merge(&[&parts[0], &other, &parts[2]], &bad),
        &[&o, "dtype differs"],
    );
    gone(&bad);
    // in order they merge; then the merged output exists
    let merged = d.join("merged.npy");
    merge(&[&parts[0], &parts[1], &parts[2]], &merged).success();
    assert_eq!(lines(&ids_of(&merged)), t.ids);
    let m = merged.display().to_string();
    let before = std::fs::read(&merged).unwrap();
    refused(
        merge(&[&parts[0], &parts[1], &parts[2]], &merged),
        &[&m, "exists"],
    );
    assert!(std::fs::read(&merged).unwrap() == before);
}

/// More shards than rows leaves a shard without rows: `tandem embed` may
/// refuse that up front, but what it writes must merge.
#[test]
fn more_shards_than_rows_still_merge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("three.jsonl");
    std::fs::write(
        &input,
        "{\"_id\": \"a\", \"text\": \"cell\"}\n{\"_id\": \"b\", \"text\": \"gene\"}\n{\"_id\": \"c\", \"text\": \"heat\"}\n",
    )
    .unwrap();
    let whole = d.join("whole.npy");
    embed(&input, &whole, &[]);
    let mut parts = Vec::new();
    for i in 0..4 {
        let out = d.join(format!("s{i}.npy"));
        let s = format!("{i}/4");
        let a = embed_cmd(&input, &out, &["--shard", &s]).assert();
        if !a.get_output().status.success() {
            refused(a, &["--shard"]);
            return;
        }
        parts.push(out);
    }
    let merged = d.join("merged.npy");
    merge(&parts.iter().collect::<Vec<_>>(), &merged).success();
    assert_eq!(lines(&ids_of(&merged)), ["a", "b", "c"]);
    // an ids file holds one line a row
    for out in &parts {
        let side = read_json(&sidecar_of(out));
        let (from, to) = (
            side["rows"][0].as_u64().unwrap(),
            side["rows"][1].as_u64().unwrap(),
        );
        assert_eq!(
            lines(&ids_of(out)).len() as u64,
            to - from,
            "{}: {:?} for rows {from}..{to}",
            ids_of(out).display(),
            std::fs::read_to_string(ids_of(out)).unwrap()
        );
    }
    assert_same_bank(&merged, &whole);
}

/// A kill between creating `<out>.partial/` and writing its `job.json`
/// leaves an empty folder; the same command must still run.
#[test]
fn an_empty_partial_folder_does_not_block_the_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("corpus.jsonl");
    write_corpus(&input, 50);
    let want = d.join("want.npy");
    embed(&input, &want, &[]);
    let out = d.join("out.npy");
    std::fs::create_dir(partial_of(&out)).unwrap();
    embed(&input, &out, &[]);
    assert!(!partial_of(&out).exists());
    assert_same_bank(&out, &want);
}

/// The model's own files are inputs: `--force` replaces earlier outputs,
/// never them (`--out MODEL/config.npy` would put the sidecar on
/// `MODEL/config.json`).
#[test]
fn outputs_never_land_on_the_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("corpus.jsonl");
    write_corpus(&input, 10);
    let copy = d.join("bert");
    copy_dir(&model("bert"), &copy);
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        listing(dir)
            .into_iter()
            .filter(|n| dir.join(n).is_file())
            .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
            .collect()
    };
    let before = snapshot(&copy);
    // the files of the model directory that tandem reads
    for name in [
        "config",
        "modules",
        "config_sentence_transformers",
        "sentence_bert_config",
        "tokenizer",
        "1_Pooling/config",
    ] {
        let out = copy.join(format!("{name}.npy"));
        let shown = out.display().to_string();
        let a = embed_with(&copy, &input, &out, &["--force"]).assert();
        assert!(
            !a.get_output().status.success(),
            "--out {} --force succeeded: it wrote its sidecar over the model's {shown}",
            out.display()
        );
        refused(a, &[&shown, "input", "model directory"]);
        assert!(
            snapshot(&copy) == before,
            "--out {} --force changed the model directory",
            out.display()
        );
    }
}

/// Runs `cmd`, expects a refusal naming `needles`, and checks that nothing
/// under `dir` changed.
fn refused_writing_nothing(dir: &Path, cmd: &mut Command, needles: &[&str]) -> String {
    let before = listing(dir);
    let line = refused(cmd.assert(), needles);
    assert_eq!(listing(dir), before, "a refused run wrote files: {line}");
    line
}

#[test]
fn refused_models_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    write_corpus(&input, 10);
    let out = dir.path().join("out.npy");
    let d = dir.path();

    let nope = d.join("no-such-model");
    let n = nope.display().to_string();
    refused_writing_nothing(
        d,
        &mut embed_with(&nope, &input, &out, &[]),
        &[&n, "not a directory"],
    );
    refused_writing_nothing(
        d,
        &mut embed_with(&model("refused/pytorch-bin-only"), &input, &out, &[]),
        &["pytorch_model.bin", "safe_serialization"],
    );
    let line = refused_writing_nothing(
        d,
        &mut embed_with(&model("refused/unsupported"), &input, &out, &[]),
        &["config.json", "gpt2"],
    );
    for arch in [
        "bert",
        "roberta",
        "xlm-roberta",
        "mpnet",
        "t5",
        "modernbert",
    ] {
        assert!(line.contains(arch), "{arch} missing from: {line}");
    }
    refused_writing_nothing(
        d,
        &mut embed_with(&model("refused/vocab-mismatch"), &input, &out, &[]),
        &["tokenizer.json", "vocab_size is 400"],
    );
    // config.json says 48 where the tensors hold 64
    let bad = d.join("bert-bad");
    copy_dir(&model("bert"), &bad);
    let cfg = std::fs::read_to_string(bad.join("config.json")).unwrap();
    assert!(cfg.contains("\"intermediate_size\": 64"));
    std::fs::write(
        bad.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    refused_writing_nothing(
        d,
        &mut embed_with(&bad, &input, &out, &[]),
        &["model.safetensors", "64", "48"],
    );
    // the same refusals from tandem beir
    let data = beir_folder(&d.join("beir"));
    let run = d.join("run.trec");
    refused_writing_nothing(
        d,
        beir_cmd(&model("refused/pytorch-bin-only"), &data, &run, &[])
            .arg("--cache")
            .arg(d.join("cache")),
        &["safe_serialization"],
    );
}

#[test]
fn bad_input_files_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.npy");
    let check = |name: &str, content: &[u8], extra: &[&str], needles: &[&str]| {
        let input = d.join(name);
        std::fs::write(&input, content).unwrap();
        let shown = input.display().to_string();
        let mut all = vec![shown.as_str()];
        all.extend_from_slice(needles);
        refused_writing_nothing(d, &mut embed_cmd(&input, &out, extra), &all);
        assert_eq!(std::fs::read(&input).unwrap(), content, "the input changed");
    };
    let good =
        |i: usize| format!("{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"cell {i}\"}}\n");
    let mut bad_json = format!("{}{}", good(1), good(2));
    bad_json.push_str("{\"_id\": \"d3\", \"text\": \"cell\n");
    bad_json.push_str(&good(4));
    check(
        "bad-json.jsonl",
        bad_json.as_bytes(),
        &[],
        &["line 3", "not valid JSON"],
    );
    let mut bad_utf8 = format!("{}{}", good(1), good(2)).into_bytes();
    bad_utf8.extend_from_slice(b"{\"_id\": \"d3\", \"text\": \"caf\xe9\"}\n");
    bad_utf8.extend_from_slice(good(4).as_bytes());
    check("bad-utf8.jsonl", &bad_utf8, &[], &["line 3", "UTF-8"]);
    // plain lines are checked too
    check(
        "bad-utf8.txt",
        b"one\ntwo \xff\xfe\n",
        &[],
        &["line 2", "UTF-8"],
    );
    check(
        "no-field.jsonl",
        format!("{}{}", good(1), good(2)).as_bytes(),
        &["--field", "body"],
        &["line 1", "body", "--field"],
    );
    check("empty.jsonl", b"", &[], &["no texts"]);
    // a missing input
    let missing = d.join("missing.jsonl");
    let m = missing.display().to_string();
    refused_writing_nothing(d, &mut embed_cmd(&missing, &out, &[]), &[&m, "cannot read"]);
}

#[test]
fn outputs_that_would_clobber_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("corpus.jsonl");
    write_corpus(&input, 10);
    let original = std::fs::read(&input).unwrap();
    // the output is the input
    let shown = input.display().to_string();
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &input, &[]),
        &[&shown, "overwrite an input"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &input, &["--force"]),
        &[&shown, "overwrite an input"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), original);
    // the sidecar would land on the input (corpus.json beside corpus.npy)
    let json_input = d.join("texts.json");
    std::fs::write(&json_input, &original).unwrap();
    let j = json_input.display().to_string();
    refused_writing_nothing(
        d,
        &mut embed_cmd(&json_input, &d.join("texts.npy"), &["--force"]),
        &[&j, "overwrite an input"],
    );
    assert_eq!(std::fs::read(&json_input).unwrap(), original);
    // an existing bank, ids file or sidecar, without --force
    let out = d.join("out.npy");
    for existing in [out.clone(), ids_of(&out), sidecar_of(&out)] {
        std::fs::write(&existing, b"keep me").unwrap();
        let e = existing.display().to_string();
        refused_writing_nothing(
            d,
            &mut embed_cmd(&input, &out, &[]),
            &[&e, "exists", "--force"],
        );
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
        std::fs::remove_file(&existing).unwrap();
    }
}

#[test]
fn bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("corpus.jsonl");
    write_corpus(&input, 10);
    let out = d.join("out.npy");
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--shard", "3/3"]),
        &["--shard", "3/3", "below"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--shard", "x"]),
        &["--shard", "\"x\"", "i/n"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--shard", "1/0"]),
        &["--shard", "1/0"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--prompt-name", "nope"]),
        &[
            "config_sentence_transformers.json",
            "\"nope\"",
            "document, query",
        ],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--prompt-name", "query", "--prompt", "x"]),
        &["--prompt", "--prompt-name"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--batch", "0"]),
        &["--batch"],
    );
    refused_writing_nothing(
        d,
        &mut embed_cmd(&input, &out, &["--max-length", "65"]),
        &["--max-length", "64"],
    );
}

/// A BEIR folder in `dir`: 10 documents, 4 queries (one not judged, one
/// whose id is a document id and whose text is that document's), qrels of
/// the test split with a header.
fn beir_folder(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let docs: Vec<String> = (0..10)
        .map(|i| {
            let text = format!(
                "{} {} {}",
                WORDS[i],
                WORDS[(i + 5) % 20],
                WORDS[(i * 3 + 1) % 20]
            );
            serde_json::json!({"_id": format!("d{i}"), "title": WORDS[(i + 10) % 20], "text": text})
                .to_string()
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), docs.join("\n") + "\n").unwrap();
    let queries = [
        ("q1", "gene heat"),
        ("q2", "blood sugar"),
        ("d3", "iron brain"),
        ("q9", "never judged"),
    ];
    let q: Vec<String> = queries
        .iter()
        .map(|(id, text)| serde_json::json!({"_id": id, "text": text, "metadata": {}}).to_string())
        .collect();
    std::fs::write(dir.join("queries.jsonl"), q.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td7\t1\nd3\td4\t1\n",
    )
    .unwrap();
    dir.to_path_buf()
}

fn beir_cmd(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = tandem();
    c.arg("beir")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--threads", "2"])
        .args(extra);
    c
}

/// A TREC run: query -> (doc, rank, score) in file order.
fn read_run(path: &Path) -> BTreeMap<String, Vec<(String, usize, f64)>> {
    let mut m: BTreeMap<String, Vec<(String, usize, f64)>> = BTreeMap::new();
    for line in lines(path) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "not `qid Q0 docid rank score tag`: {line:?}");
        assert_eq!(f[1], "Q0", "{line:?}");
        assert_eq!(f[5], "tandem", "{line:?}");
        m.entry(f[0].to_string()).or_default().push((
            f[2].to_string(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        ));
    }
    m
}

#[test]
fn beir_reports_the_metrics_writes_the_run_and_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = beir_folder(&d.join("tiny"));
    let cache = d.join("cache");
    let run1 = d.join("first.run");
    let c = ["--cache", cache.to_str().unwrap()];
    let a = beir_cmd(&model("bert"), &data, &run1, &c)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    for m in ["ndcg@10", "recall@100", "map@100", "recip_rank@10"] {
        assert!(stdout.contains(m), "{m} missing from: {stdout}");
    }

    // the run: every judged query (not q9), all 10 documents ranked 1..10
    // by falling score
    let run = read_run(&run1);
    assert_eq!(run.keys().collect::<Vec<_>>(), ["d3", "q1", "q2"]);
    for (q, hits) in &run {
        assert_eq!(hits.len(), 10, "{q}");
        let mut docs: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.1, i + 1, "{q}: ranks");
            if i > 0 {
                assert!(h.2 <= hits[i - 1].2, "{q}: scores rise at rank {}", i + 1);
            }
        }
        docs.sort();
        assert_eq!(docs, (0..10).map(|i| format!("d{i}")).collect::<Vec<_>>());
    }

    // the metrics, recomputed from the run (one relevant document a query)
    let side = read_json(&d.join("first.json"));
    let relevant = [("q1", "d1"), ("q2", "d7"), ("d3", "d4")];
    let rank_of = |q: &str, doc: &str| run[q].iter().find(|h| h.0 == doc).unwrap().1 as f64;
    let mean = |f: &dyn Fn(f64) -> f64| {
        relevant
            .iter()
            .map(|(q, doc)| f(rank_of(q, doc)))
            .sum::<f64>()
            / 3.0
    };
    let want = [
        (
            "ndcg@10",
            mean(&|r| {
                if r <= 10.0 {
                    1.0 / (r + 1.0).log2()
                } else {
                    0.0
                }
            }),
        ),
        ("recall@100", 1.0),
        ("map@100", mean(&|r| 1.0 / r)),
        (
            "recip_rank@10",
            mean(&|r| if r <= 10.0 { 1.0 / r } else { 0.0 }),
        ),
    ];
    for (m, v) in want {
        let got = side["metrics"][m]
            .as_f64()
            .unwrap_or_else(|| panic!("no {m} in {side}"));
        assert!((got - v).abs() < 1e-6, "{m}: {got}, recomputed {v}");
        assert!(
            stdout.contains(&format!("{v:.4}")),
            "{m} {v:.4} not printed: {stdout}"
        );
    }
    assert_eq!(side["queries"], 3);
    assert_eq!(side["documents"], 10);
    assert_eq!(side["corpus_cache"]["reused"], false);
    assert_eq!(side["query_prompt"], "query: ");
    assert_eq!(side["doc_prompt"], "passage: ");
    assert!(is_hex64(side["model"]["fingerprint"].as_str().unwrap()));
    let cached: Vec<String> = listing(&cache)
        .into_iter()
        .filter(|n| n.ends_with(".npy"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");

    // again: the cache is reused, the same run comes out
    let run2 = d.join("second.run");
    beir_cmd(&model("bert"), &data, &run2, &c)
        .assert()
        .success();
    let side2 = read_json(&d.join("second.json"));
    assert_eq!(side2["corpus_cache"]["reused"], true, "{side2}");
    assert_eq!(side2["corpus_cache"]["path"], side["corpus_cache"]["path"]);
    assert_eq!(side2["metrics"], side["metrics"]);
    assert_eq!(std::fs::read(&run2).unwrap(), std::fs::read(&run1).unwrap());
    assert_eq!(
        listing(&cache)
            .iter()
            .filter(|n| n.ends_with(".npy"))
            .count(),
        1
    );

    // an existing run is kept without --force, replaced with it
    let r = run1.display().to_string();
    refused(
        beir_cmd(&model("bert"), &data, &run1, &c).assert(),
        &[&r, "exists"],
    );
    let a = beir_cmd(
        &model("bert"),
        &data,
        &run1,
        &["--force", "--json", c[0], c[1]],
    )
    .assert()
    .success();
    let printed: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(printed["corpus_cache"]["reused"], true);
    assert_eq!(printed["metrics"], side["metrics"]);

    // without --ignore-identical-ids query d3 finds document d3; with it, never
    assert!(run["d3"].iter().any(|h| h.0 == "d3"));
    let run3 = d.join("third.run");
    beir_cmd(
        &model("bert"),
        &data,
        &run3,
        &["--ignore-identical-ids", c[0], c[1]],
    )
    .assert()
    .success();
    let run3 = read_run(&run3);
    assert!(run3["d3"].iter().all(|h| h.0 != "d3"), "{:?}", run3["d3"]);
    assert_eq!(run3["d3"].len(), 9);
    let without: Vec<&(String, usize, f64)> = run["d3"].iter().filter(|h| h.0 != "d3").collect();
    assert_eq!(
        run3["d3"].iter().map(|h| &h.0).collect::<Vec<_>>(),
        without.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    assert_eq!(run3["q1"], run["q1"]);
    assert_eq!(
        read_json(&d.join("third.json"))["ignore_identical_ids"],
        true
    );

    // a split without qrels
    let dev = d.join("dev.run");
    refused_writing_nothing(
        d,
        &mut beir_cmd(&model("bert"), &data, &dev, &["--split", "dev", c[0], c[1]]),
        &["dev.tsv", "missing", "--split"],
    );
}

#[test]
fn beir_runs_on_scifact() {
    let Some(shared) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let data = shared.join("scifact-beir");
    let before = listing(&data);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("scifact.run");
    let cache = d.join("cache");
    let a = beir_cmd(
        &model("bert"),
        &data,
        &out,
        &["--k", "100", "--json", "--cache", cache.to_str().unwrap()],
    )
    .assert()
    .success();
    assert_eq!(listing(&data), before, "tandem beir wrote into the dataset");
    let side: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(side, read_json(&d.join("scifact.json")));
    assert_eq!(side["queries"], 300);
    assert_eq!(side["documents"], 5183);
    assert_eq!(side["k"], 100);

    // the cached corpus bank: one row a document, in file order
    let bank_path = PathBuf::from(side["corpus_cache"]["path"].as_str().unwrap());
    assert!(bank_path.starts_with(&cache));
    let corpus_ids: Vec<String> = lines(&data.join("corpus.jsonl"))
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["_id"].as_str().unwrap().to_string()
        })
        .collect();
    let bank = open(&bank_path);
    assert_eq!((bank.rows(), bank.dim()), (5183, BERT_DIM));
    assert_eq!(bank.ids().unwrap(), &corpus_ids[..]);

    // recall@100 and recip_rank@10 recomputed from the run and the qrels
    let run = read_run(&out);
    assert_eq!(run.len(), 300);
    assert!(run.values().all(|h| h.len() == 100));
    let mut qrels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines(&data.join("qrels/test.tsv")).iter().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        if f[2].trim().parse::<f64>().unwrap() > 0.0 {
            qrels
                .entry(f[0].to_string())
                .or_default()
                .push(f[1].to_string());
        }
    }
    assert_eq!(
        qrels.keys().collect::<Vec<_>>(),
        run.keys().collect::<Vec<_>>()
    );
    let (mut recall, mut rr) = (0.0, 0.0);
    for (q, rel) in &qrels {
        let hits = &run[q];
        let found = rel
            .iter()
            .filter(|r| hits.iter().any(|h| &h.0 == *r))
            .count();
        recall += found as f64 / rel.len() as f64;
        if let Some(h) = hits.iter().take(10).find(|h| rel.contains(&h.0)) {
            rr += 1.0 / h.1 as f64;
        }
    }
    let n = qrels.len() as f64;
    for (m, want) in [("recall@100", recall / n), ("recip_rank@10", rr / n)] {
        let got = side["metrics"][m].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{m}: {got}, recomputed {want}");
    }
    for m in ["ndcg@10", "map@100"] {
        let v = side["metrics"][m].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{m} = {v}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
