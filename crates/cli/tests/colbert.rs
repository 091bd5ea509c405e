//! `tandem embed` with a ColBERT: a multi-vector bank (float16 token
//! matrix, offsets, ids), sharded and merged to the same bytes, and the
//! errors for a bank of the other kind.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tandem_bank::MultiBank;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/colbert-modernbert")
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.jsonl");
    let lines: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                "{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"protein {i} folds, fast!\"}}"
            )
        })
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn embeds_a_multi_vector_bank_and_merges_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let whole = dir.path().join("whole.npy");
    tandem()
        .args(["embed", "--model"])
        .arg(model())
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&whole)
        .assert()
        .success();
    let bank = MultiBank::open(&whole, Some(&dir.path().join("whole.ids.txt"))).unwrap();
    assert_eq!(bank.docs(), 1500);
    assert_eq!(bank.dim(), 16);
    assert_eq!(bank.tokens().dtype(), tandem_bank::Dtype::F16);
    assert_eq!(bank.ids().unwrap()[3], "d3");
    let mut parts = Vec::new();
    for i in 0..2 {
        let p = dir.path().join(format!("part{i}.npy"));
        tandem()
            .args(["embed", "--model"])
            .arg(model())
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&p)
            .args(["--shard", &format!("{i}/2")])
            .assert()
            .success();
        parts.push(p);
    }
    let merged = dir.path().join("merged.npy");
    tandem()
        .args(["bank", "merge"])
        .args(&parts)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    for ext in ["npy", "offsets.npy", "ids.txt"] {
        assert_eq!(
            std::fs::read(whole.with_extension(ext)).unwrap(),
            std::fs::read(merged.with_extension(ext)).unwrap(),
            "{ext}"
        );
    }
    // a dense model refuses --colbert; a dense bank is not a multi-vector one
    let dense = Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/bert");
    let out = tandem()
        .args(["embed", "--colbert", "--model"])
        .arg(&dense)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("dense.npy"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("not a ColBERT"), "{err}");
}

/// Documents embedded as documents, queries as queries (`--tower query`:
/// the query prefix and [MASK] expansion), then `tandem search` ranks by
/// exact MaxSim: the run is the brute-force MaxSim ranking of the two
/// banks, and the dense/multi-vector mix-ups are refused.
#[test]
fn search_ranks_query_tokens_against_documents_by_maxsim() {
    let dir = tempfile::tempdir().unwrap();
    let docs_in = dir.path().join("docs.jsonl");
    let texts = [
        "Protein folding is determined by the amino acid sequence.",
        "Mean pooling averages the token vectors of a sentence.",
        "The cafe served coffee and cake.",
        "In 2019, 42.5% of 1,000 patients improved after treatment.",
        "Late interaction keeps one vector per token.",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"_id\": \"doc{i}\", \"text\": \"{t}\"}}"))
        .collect();
    std::fs::write(&docs_in, lines.join("\n") + "\n").unwrap();
    let q_in = dir.path().join("queries.jsonl");
    std::fs::write(
        &q_in,
        "{\"_id\": \"q1\", \"text\": \"how do proteins fold\"}\n{\"_id\": \"q2\", \"text\": \"token vectors\"}\n",
    )
    .unwrap();
    let embed = |input: &Path, out: &Path, extra: &[&str]| {
        tandem()
            .args(["embed", "--model"])
            .arg(model())
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(out)
            .args(extra)
            .assert()
            .success();
    };
    let (docs, queries) = (dir.path().join("d.npy"), dir.path().join("q.npy"));
    embed(&docs_in, &docs, &["--dtype", "float32"]);
    embed(&q_in, &queries, &["--tower", "query", "--dtype", "float32"]);
    let run = dir.path().join("run.trec");
    tandem()
        .args(["search", "--k", "5", "--bank"])
        .arg(&docs)
        .arg("--queries")
        .arg(&queries)
        .arg("--out")
        .arg(&run)
        .assert()
        .success();

    // the brute-force MaxSim of the two banks
    let d = MultiBank::open(&docs, Some(&docs.with_extension("ids.txt"))).unwrap();
    let q = MultiBank::open(&queries, Some(&queries.with_extension("ids.txt"))).unwrap();
    let (dv, qv, dim) = (d.tokens().to_f32_vec(), q.tokens().to_f32_vec(), d.dim());
    let row = |v: &[f32], r: usize| v[r * dim..(r + 1) * dim].to_vec();
    let text = std::fs::read_to_string(&run).unwrap();
    for (qi, qid) in ["q1", "q2"].iter().enumerate() {
        let mut want: Vec<(f64, usize)> = (0..d.docs())
            .map(|j| {
                let s: f64 = q
                    .doc_rows(qi)
                    .map(|a| {
                        d.doc_rows(j)
                            .map(|b| {
                                row(&qv, a)
                                    .iter()
                                    .zip(row(&dv, b))
                                    .map(|(x, y)| f64::from(*x) * f64::from(y))
                                    .sum::<f64>()
                            })
                            .fold(f64::MIN, f64::max)
                    })
                    .sum();
                (s, j)
            })
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{qid} ")))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[2].to_string(), f[4].parse().unwrap())
            })
            .collect();
        assert_eq!(got.len(), 5);
        for ((id, score), (s, j)) in got.iter().zip(&want) {
            assert_eq!(id, &format!("doc{j}"), "{qid}: {got:?} vs {want:?}");
            assert!((score - s).abs() < 1e-4, "{qid}: {score} vs {s}");
        }
    }
    // query tokens are expanded to the query length; documents are not
    assert!(q.doc_rows(0).len() > "how do proteins fold".split(' ').count() + 3);

    // a dense query bank against token vectors, and flags that do not apply
    let dense = dir.path().join("dense.npy");
    let zeros = vec![0.0f32; 2 * dim];
    tandem_bank::write_npy(
        &dense,
        2,
        dim,
        tandem_bank::Vectors::F32(&zeros),
        tandem_io::Overwrite::Refuse,
    )
    .unwrap();
    let out = dir.path().join("x.trec");
    tandem()
        .args(["search", "--bank"])
        .arg(&docs)
        .arg("--queries")
        .arg(&dense)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("--tower query"));
    tandem()
        .args(["search", "--metric", "cosine", "--bank"])
        .arg(&docs)
        .arg("--queries")
        .arg(&queries)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("--metric"));
    assert!(!out.exists());
}

/// A ColBERT saved by sentence-transformers 6 (`MultiVectorEncoder`) is
/// seen as one without `--colbert`: the bank of its golden documents holds
/// the token vectors sentence-transformers gives
/// (`bench/make_st6_colbert_fixture.py`), token for token.
#[test]
fn embeds_a_sentence_transformers_v6_colbert() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/colbert-st6-bert");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("golden.json")).unwrap())
            .unwrap();
    let docs = golden["documents"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"_id": format!("d{i}"), "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // a default prompt names one of its prefixes, which sentence-
    // transformers' encode_document does not add on top of the document's
    let model = dir.path().join("model");
    for entry in walkdir(&fixture) {
        let to = model.join(entry.strip_prefix(&fixture).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let st = model.join("config_sentence_transformers.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&st).unwrap()).unwrap();
    config["default_prompt_name"] = "query".into();
    std::fs::write(&st, config.to_string()).unwrap();
    let out = dir.path().join("docs.npy");
    tandem()
        .args(["embed", "--dtype", "float32", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let bank = MultiBank::open(&out, Some(&out.with_extension("ids.txt"))).unwrap();
    assert_eq!((bank.docs(), bank.dim()), (docs.len(), 8));
    let tokens = bank.tokens().to_f32_vec();
    let bytes = std::fs::read(fixture.join("golden.safetensors")).unwrap();
    let want = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for i in 0..docs.len() {
        let t = want.tensor(&format!("document.{i}")).unwrap();
        let w: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let rows: Vec<usize> = bank.doc_rows(i).collect();
        assert_eq!(rows.len() * 8, w.len(), "document {i}: token count");
        for (k, r) in rows.into_iter().enumerate() {
            let g = &tokens[r * 8..(r + 1) * 8];
            let dot: f32 = g
                .iter()
                .zip(&w[k * 8..(k + 1) * 8])
                .map(|(a, b)| a * b)
                .sum();
            assert!(dot > 0.9999, "document {i} token {k}: cosine {dot}");
        }
    }
}

/// Every file under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
