//! Checkpoints: round trip, every kind of damage skipped in favour of the
//! older complete checkpoint, interrupted writes, replacement and pruning.

use std::fs;
use std::path::{Path, PathBuf};

use tandem_train::checkpoint::{
    best_step, mark_best, newest_complete, prune, step_dir_name, write_checkpoint, CheckpointFile,
};
use tandem_train::TrainError;

/// Files of a checkpoint whose content depends on `step`.
fn content(step: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "model.safetensors".into(),
            (0..10_000u64).map(|i| (i * 31 + step * 7) as u8).collect(),
        ),
        (
            "state.json".into(),
            format!("{{\"step\":{step}}}").into_bytes(),
        ),
        ("empty.bin".into(), Vec::new()),
    ]
}

fn write(run: &Path, step: u64) -> PathBuf {
    let c = content(step);
    let files: Vec<CheckpointFile> = c
        .iter()
        .map(|(n, b)| CheckpointFile { name: n, bytes: b })
        .collect();
    write_checkpoint(run, step, &files).unwrap()
}

fn ck(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(step_dir_name(step))
}

/// Names in `checkpoints/`, sorted.
fn listing(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn newest_step(run: &Path) -> Option<u64> {
    newest_complete(run).unwrap().map(|l| l.step)
}

#[test]
fn round_trip_with_manifest_and_latest() {
    let run = tempfile::tempdir().unwrap();
    assert!(
        newest_complete(run.path()).unwrap().is_none(),
        "no checkpoints yet"
    );
    let dir = write(run.path(), 5);
    assert_eq!(dir, ck(run.path(), 5));
    assert!(dir.ends_with("checkpoints/step-000000005"));
    let loaded = newest_complete(run.path()).unwrap().unwrap();
    assert_eq!(loaded.step, 5);
    assert_eq!(loaded.dir, dir);
    for (name, bytes) in content(5) {
        assert_eq!(loaded.file(&name).unwrap(), bytes.as_slice(), "{name}");
    }
    assert_eq!(
        loaded.names().collect::<Vec<_>>(),
        ["model.safetensors", "state.json", "empty.bin"]
    );
    let e = loaded
        .file("optimizer.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step-000000005") && e.contains("optimizer.safetensors"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(run.path().join("checkpoints/latest")).unwrap(),
        "step-000000005"
    );
    assert_eq!(listing(run.path()), ["latest", "step-000000005"]);
    // MANIFEST records sizes and SHA-256 (of "" here: the well-known digest).
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap();
    assert_eq!(m["format"], 1);
    assert_eq!(m["step"], 5);
    assert_eq!(m["files"][0]["size"], 10_000);
    assert_eq!(
        m["files"][2]["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn sha256_matches_the_reference_digest() {
    let run = tempfile::tempdir().unwrap();
    let dir = write_checkpoint(
        run.path(),
        1,
        &[CheckpointFile {
            name: "abc",
            bytes: b"abc",
        }],
    )
    .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap();
    // FIPS 180-2 test vector for "abc".
    assert_eq!(
        m["files"][0]["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Write steps 1 and 2, damage step 2 with `damage`, expect step 1.
fn damaged_newest_falls_back(damage: impl FnOnce(&Path)) {
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 1);
    write(run.path(), 2);
    damage(&ck(run.path(), 2));
    let loaded = newest_complete(run.path()).unwrap().unwrap();
    assert_eq!(loaded.step, 1);
    assert_eq!(
        loaded.file("state.json").unwrap(),
        content(1)[1].1.as_slice()
    );
    // The pointer still names step 2: it is a hint, not trusted.
    assert_eq!(
        fs::read_to_string(run.path().join("checkpoints/latest")).unwrap(),
        "step-000000002"
    );
}

#[test]
fn truncated_file_is_skipped() {
    damaged_newest_falls_back(|d| {
        let p = d.join("model.safetensors");
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() - 1]).unwrap();
    });
}

#[test]
fn flipped_byte_is_skipped() {
    damaged_newest_falls_back(|d| {
        let p = d.join("model.safetensors");
        let mut b = fs::read(&p).unwrap();
        b[4321] ^= 0x01;
        fs::write(&p, &b).unwrap();
    });
}

#[test]
fn missing_manifest_is_skipped() {
    damaged_newest_falls_back(|d| fs::remove_file(d.join("MANIFEST")).unwrap());
}

#[test]
fn garbage_manifest_is_skipped() {
    damaged_newest_falls_back(|d| fs::write(d.join("MANIFEST"), b"{\"format\":1,").unwrap());
}

#[test]
fn missing_file_is_skipped() {
    damaged_newest_falls_back(|d| fs::remove_file(d.join("state.json")).unwrap());
}

#[test]
fn manifest_of_another_step_is_skipped() {
    damaged_newest_falls_back(|d| {
        let m = fs::read_to_string(d.join("MANIFEST")).unwrap();
        fs::write(d.join("MANIFEST"), m.replace("\"step\": 2", "\"step\": 1")).unwrap();
    });
}

#[test]
fn manifest_escaping_the_directory_is_skipped() {
    damaged_newest_falls_back(|d| {
        let m = fs::read_to_string(d.join("MANIFEST")).unwrap();
        fs::write(
            d.join("MANIFEST"),
            m.replace("\"state.json\"", "\"../state.json\""),
        )
        .unwrap();
    });
}

#[test]
fn interrupted_writes_are_ignored_and_pruned() {
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 1);
    write(run.path(), 2);
    let ckdir = run.path().join("checkpoints");
    // Killed while writing step 3: some files, no MANIFEST.
    let tmp = ckdir.join(".tmp-step-000000003");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("model.safetensors"), b"partial").unwrap();
    fs::write(tmp.join(".state.json.tmp-123"), b"par").unwrap();
    // Killed while removing step 0 in an earlier prune.
    fs::create_dir(ckdir.join(".old-step-000000000")).unwrap();
    assert_eq!(newest_step(run.path()), Some(2));
    let removed = prune(run.path(), 5).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(
        listing(run.path()),
        ["latest", "step-000000001", "step-000000002"]
    );
}

#[test]
fn complete_tmp_dir_counts_and_prune_moves_it_into_place() {
    // A write killed between moving the old step-3 aside and renaming the new
    // one in leaves the only copy of step 3 in `.tmp-step-3`.
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 2);
    write(run.path(), 3);
    let ckdir = run.path().join("checkpoints");
    fs::rename(ck(run.path(), 3), ckdir.join(".tmp-step-000000003")).unwrap();
    let loaded = newest_complete(run.path()).unwrap().unwrap();
    assert_eq!(loaded.step, 3);
    assert_eq!(loaded.file("state.json").unwrap(), b"{\"step\":3}");
    assert!(prune(run.path(), 3).unwrap().is_empty());
    assert_eq!(
        listing(run.path()),
        ["latest", "step-000000002", "step-000000003"]
    );
    assert_eq!(newest_step(run.path()), Some(3));
}

#[test]
fn complete_tmp_dir_replaces_the_older_copy_of_its_step() {
    // Killed before the old step-3 was moved aside: both copies complete;
    // the `.tmp-` one is the newer write and wins.
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 3);
    let ckdir = run.path().join("checkpoints");
    let tmp = ckdir.join(".tmp-step-000000003");
    fs::create_dir(&tmp).unwrap();
    let newer = tempfile::tempdir().unwrap();
    let d = write_checkpoint(
        newer.path(),
        3,
        &[CheckpointFile {
            name: "state.json",
            bytes: b"newer",
        }],
    )
    .unwrap();
    for f in ["state.json", "MANIFEST"] {
        fs::copy(d.join(f), tmp.join(f)).unwrap();
    }
    assert_eq!(
        newest_complete(run.path())
            .unwrap()
            .unwrap()
            .file("state.json")
            .unwrap(),
        b"newer"
    );
    prune(run.path(), 1).unwrap();
    assert_eq!(listing(run.path()), ["latest", "step-000000003"]);
    let loaded = newest_complete(run.path()).unwrap().unwrap();
    assert_eq!(loaded.dir, ck(run.path(), 3));
    assert_eq!(loaded.file("state.json").unwrap(), b"newer");
}

#[test]
fn rewriting_a_step_replaces_it() {
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 4);
    let again = write_checkpoint(
        run.path(),
        4,
        &[CheckpointFile {
            name: "state.json",
            bytes: b"second",
        }],
    )
    .unwrap();
    assert_eq!(again, ck(run.path(), 4));
    let loaded = newest_complete(run.path()).unwrap().unwrap();
    assert_eq!(loaded.names().collect::<Vec<_>>(), ["state.json"]);
    assert_eq!(loaded.file("state.json").unwrap(), b"second");
    assert_eq!(listing(run.path()), ["latest", "step-000000004"]);
    // An incomplete directory of the same step (not from this writer) is replaced too.
    fs::remove_file(ck(run.path(), 4).join("MANIFEST")).unwrap();
    write(run.path(), 4);
    assert_eq!(newest_step(run.path()), Some(4));
}

#[test]
fn prune_keeps_the_newest_and_the_best() {
    let run = tempfile::tempdir().unwrap();
    for step in 1..=6 {
        write(run.path(), step);
    }
    mark_best(run.path(), 2).unwrap();
    assert_eq!(best_step(run.path()).unwrap(), Some(2));
    let mut removed = prune(run.path(), 2).unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [ck(run.path(), 1), ck(run.path(), 3), ck(run.path(), 4)]
    );
    assert_eq!(
        listing(run.path()),
        [
            "best",
            "latest",
            "step-000000002",
            "step-000000005",
            "step-000000006"
        ]
    );
    // The best among the newest counts towards keep_last.
    mark_best(run.path(), 6).unwrap();
    assert_eq!(prune(run.path(), 1).unwrap().len(), 2);
    assert_eq!(listing(run.path()), ["best", "latest", "step-000000006"]);
    assert!(prune(run.path(), 1).unwrap().is_empty());
    // A damaged newest does not count: the complete older one is kept.
    write(run.path(), 7);
    fs::write(ck(run.path(), 7).join("state.json"), b"x").unwrap();
    assert!(prune(run.path(), 1).unwrap().is_empty());
    assert_eq!(newest_step(run.path()), Some(6));
}

#[test]
fn prune_without_checkpoints_removes_nothing() {
    let run = tempfile::tempdir().unwrap();
    assert!(prune(run.path(), 3).unwrap().is_empty());
}

#[test]
fn bad_requests_are_one_line_errors_naming_the_path_and_fix() {
    let run = tempfile::tempdir().unwrap();
    write(run.path(), 1);
    let check = |e: TrainError, needle: &str| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.contains("checkpoints"), "{s}");
        assert!(s.contains("; fix: "), "{s}");
        assert!(s.contains(needle), "{s}");
    };
    check(prune(run.path(), 0).unwrap_err(), "keep at least 1");
    check(
        mark_best(run.path(), 9).unwrap_err(),
        "no checkpoint of that step",
    );
    for (name, needle) in [
        ("MANIFEST", "invalid checkpoint file name"),
        ("../x", "invalid checkpoint file name"),
        ("", "invalid checkpoint file name"),
        (".hidden", "invalid checkpoint file name"),
    ] {
        check(
            write_checkpoint(run.path(), 2, &[CheckpointFile { name, bytes: b"" }]).unwrap_err(),
            needle,
        );
    }
    let dup = [
        CheckpointFile {
            name: "a",
            bytes: b"1",
        },
        CheckpointFile {
            name: "a",
            bytes: b"2",
        },
    ];
    check(
        write_checkpoint(run.path(), 2, &dup).unwrap_err(),
        "given twice",
    );
    assert!(
        !ck(run.path(), 2).exists(),
        "nothing written on a bad request"
    );
    fs::write(run.path().join("checkpoints/best"), "nonsense").unwrap();
    check(best_step(run.path()).unwrap_err(), "not a checkpoint name");
    // A run directory that is a file: an I/O error naming it, with a fix.
    let file = run.path().join("file");
    fs::write(&file, b"").unwrap();
    check(
        write_checkpoint(&file, 1, &[]).map(|_| ()).unwrap_err(),
        "file/checkpoints",
    );
}
