//! `tandem bank info` and `tandem bank convert`, end to end.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use tandem_bank::{write_npy, Bank, Dtype, OpenOptions, Overwrite, Vectors};

const A: [f32; 6] = [0.0, 0.25, 0.5, 3.0, 4.0, 0.0];

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn bank_file(dir: &Path, name: &str, data: &[f32]) -> PathBuf {
    let p = dir.join(name);
    write_npy(&p, data.len() / 3, 3, Vectors::F32(data), Overwrite::Refuse).unwrap();
    p
}

#[test]
fn info_reports_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = bank_file(dir.path(), "a.npy", &A);
    let out = tandem().args(["bank", "info"]).arg(&p).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for want in [
        "format     npy",
        "shape      (2, 3)",
        "dtype      float32",
        "size       152 B (152 bytes)",
        "mapped     yes",
        "ids        none",
        "norm       min 0.5590  mean 2.7795  max 5.0000",
        "zero rows  0",
        "NaN/Inf    0 rows",
    ] {
        assert!(text.contains(want), "{text} lacks {want:?}");
    }
}

#[test]
fn info_json_lists_nan_rows_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![1.0f32; 15];
    data[4] = f32::NAN;
    data[13] = f32::INFINITY;
    data[6..9].fill(0.0);
    let p = bank_file(dir.path(), "nan.npy", &data);
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "a\nb\nc\nd\ne\n").unwrap();
    let out = tandem()
        .args(["bank", "info", "--json", "--ids"])
        .arg(&ids)
        .arg(&p)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["rows"], 5);
    assert_eq!(v["dim"], 3);
    assert_eq!(v["ids"], 5);
    assert_eq!(v["mapped"], true);
    assert_eq!(v["zero_rows"], 1);
    assert_eq!(v["nonfinite_rows"], 2);
    assert_eq!(v["first_nonfinite_rows"], serde_json::json!([1, 4]));
    assert_eq!(v["norm"]["min"], 0.0);
    tandem()
        .args(["bank", "info"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("NaN/Inf    2 rows (first: 1, 4)"));
}

#[test]
fn info_on_a_malformed_file_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = bank_file(dir.path(), "junk.npy", &A);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&p, bytes).unwrap();
    let out = tandem().args(["bank", "info"]).arg(&p).assert().code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {}: 8 unexpected trailing bytes",
            p.display()
        )),
        "{err}"
    );
    assert!(err.contains("re-create it"), "{err}");
    assert!(out.get_output().stdout.is_empty());
}

#[test]
fn convert_round_trips_through_float16() {
    let dir = tempfile::tempdir().unwrap();
    let src = bank_file(dir.path(), "a.npy", &A);
    let half = dir.path().join("h.npy");
    let back = dir.path().join("back.npy");
    tandem()
        .args(["bank", "convert"])
        .arg(&src)
        .arg(&half)
        .args(["--dtype", "float16"])
        .assert()
        .success();
    let h = Bank::open(&half, &OpenOptions::default()).unwrap();
    assert_eq!(h.dtype(), Dtype::F16);
    assert!(matches!(h.vectors(), Vectors::F16(v) if v.iter().map(|x| x.to_f32()).eq(A)));
    // No --dtype keeps the input's dtype.
    tandem()
        .args(["bank", "convert"])
        .arg(&half)
        .arg(&back)
        .assert()
        .success();
    assert_eq!(
        Bank::open(&back, &OpenOptions::default()).unwrap().dtype(),
        Dtype::F16
    );
    tandem()
        .args(["bank", "convert", "--force", "--dtype", "float32"])
        .arg(&half)
        .arg(&back)
        .assert()
        .success();
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn convert_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let src = bank_file(dir.path(), "a.npy", &A);
    let out = dir.path().join("out.npy");
    std::fs::write(&out, b"precious").unwrap();
    tandem()
        .args(["bank", "convert"])
        .arg(&src)
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("already exists").and(predicate::str::contains("--force")),
        );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    tandem()
        .args(["bank", "convert", "--force"])
        .arg(&src)
        .arg(&out)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    tandem()
        .args(["bank", "convert"])
        .arg(&src)
        .arg(dir.path().join("out.bin"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be a .npy file"));
}

#[test]
fn info_on_the_real_msmarco_corpus() {
    let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let p = data.join("msmarco-dl-5k/corpus.minilm.f16.npy");
    let out = tandem()
        .args(["bank", "info", "--json"])
        .arg(&p)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        (v["rows"].as_u64(), v["dim"].as_u64()),
        (Some(5000), Some(384))
    );
    assert_eq!(
        (v["dtype"].as_str(), v["mapped"].as_bool()),
        (Some("float16"), Some(true))
    );
    assert_eq!(v["nonfinite_rows"], 0);
    let mean = v["norm"]["mean"].as_f64().unwrap();
    assert!((mean - 1.0).abs() < 1e-3, "{v}");
}

#[test]
fn a_key_for_a_single_array_file_is_an_error_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let p = bank_file(dir.path(), "a.npy", &A);
    tandem()
        .args(["bank", "info", "--key", "doc"])
        .arg(&p)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("holds a single array; drop --key"));
}

#[test]
fn a_missing_file_is_one_line_that_names_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.npy");
    let out = tandem().args(["bank", "info"]).arg(&p).assert().code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("nope.npy") && err.contains("check the path"),
        "{err}"
    );
    // The OS error is said once, not once per layer of the error chain.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
