//! Writing, scanning, converting, ids files, dimension checks, and the real
//! MS MARCO bank.

mod common;

use std::path::{Path, PathBuf};

use common::{hex, invalid, put, NP_SAVE_F16, NP_SAVE_F32};
use proptest::prelude::*;
use tandem_bank::{f16, write_npy, Bank, BankError, Dtype, OpenOptions, Overwrite, Vectors};

const A: [f32; 6] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25];

fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

#[test]
fn write_npy_matches_np_save_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    write_npy(&p, 2, 3, Vectors::F32(&A), Overwrite::Refuse).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), hex(NP_SAVE_F32));
    let p = dir.path().join("h.npy");
    write_npy(&p, 2, 3, Vectors::F16(&halves(&A)), Overwrite::Refuse).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), hex(NP_SAVE_F16));
}

#[test]
fn write_npy_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = put(dir.path(), "a.npy", b"keep me");
    let e = write_npy(&p, 2, 3, Vectors::F32(&A), Overwrite::Refuse).unwrap_err();
    assert!(
        matches!(e, BankError::Write(tandem_io::WriteError::Exists(_))),
        "{e:?}"
    );
    assert!(e.to_string().contains("--force"));
    assert_eq!(std::fs::read(&p).unwrap(), b"keep me");
    write_npy(&p, 2, 3, Vectors::F32(&A), Overwrite::Allow).unwrap();
    assert_eq!(
        Bank::open(&p, &OpenOptions::default())
            .unwrap()
            .to_f32_vec(),
        A
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn npy_round_trip(rows in 1usize..40, dim in 1usize..20, half in any::<bool>(), seed in any::<u32>()) {
        let data: Vec<f32> = (0..rows * dim).map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / 1e9 - 2.0).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.npy");
        let h = halves(&data);
        let v = if half { Vectors::F16(&h) } else { Vectors::F32(&data) };
        write_npy(&p, rows, dim, v, Overwrite::Refuse).unwrap();
        let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
        prop_assert_eq!((bank.rows(), bank.dim()), (rows, dim));
        prop_assert!(bank.is_mapped());
        match (bank.vectors(), half) {
            (Vectors::F16(got), true) => prop_assert_eq!(got, &h[..]),
            (Vectors::F32(got), false) => prop_assert_eq!(got, &data[..]),
            _ => prop_assert!(false, "dtype changed"),
        }
    }

    #[test]
    fn scan_agrees_with_naive_oracle(rows in 1usize..300, dim in 1usize..40, bad in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3), 0..6)) {
        let mut data: Vec<f32> = (0..rows * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        for row in data.chunks_mut(dim).step_by(7) {
            row.fill(0.0);
        }
        for (at, kind) in &bad {
            let i = at.index(data.len());
            data[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][*kind as usize];
        }
        let report = Bank::from_f32(data.clone(), dim).scan();
        let norms: Vec<Option<f64>> = data
            .chunks(dim)
            .map(|r| r.iter().all(|x| x.is_finite()).then(|| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()))
            .collect();
        let bad_rows: Vec<usize> = norms.iter().enumerate().filter(|(_, n)| n.is_none()).map(|(i, _)| i).collect();
        prop_assert_eq!(report.nonfinite_rows, bad_rows.len());
        prop_assert_eq!(&report.first_nonfinite[..], &bad_rows[..bad_rows.len().min(10)]);
        let good: Vec<f64> = norms.into_iter().flatten().collect();
        prop_assert_eq!(report.zero_rows, good.iter().filter(|&&n| n == 0.0).count());
        if good.is_empty() {
            // Every row holds NaN/Inf: there is no norm to report.
            prop_assert!(report.norms.is_none());
        } else {
            let stats = report.norms.unwrap();
            let max = good.iter().cloned().fold(0.0, f64::max);
            let min = good.iter().cloned().fold(f64::INFINITY, f64::min);
            let tol = 1e-4 * max.max(1.0);
            prop_assert!((stats.max - max).abs() < tol);
            prop_assert!((stats.min - min).abs() < tol);
            prop_assert!((stats.mean - good.iter().sum::<f64>() / good.len() as f64).abs() < tol);
        }
    }
}

#[test]
fn scan_finds_nan_inf_rows_in_float16_and_survives_overflow() {
    let dim = 3;
    let mut data = vec![0.6f32; 100 * dim];
    data[5 * dim + 1] = f32::NAN;
    data[70 * dim] = f32::INFINITY;
    let bank = Bank::from_f16(halves(&data), dim);
    let r = bank.scan();
    assert_eq!(
        (r.nonfinite_rows, r.first_nonfinite.clone(), r.zero_rows),
        (2, vec![5, 70], 0)
    );
    let n = r.norms.unwrap();
    assert!(
        (n.min - n.max).abs() < 1e-6 && (n.mean - (3.0f64 * 0.36).sqrt()).abs() < 1e-3,
        "{n:?}"
    );
    let e = bank.check_finite().unwrap_err().to_string();
    assert!(
        e.starts_with("<in-memory bank>: 2 of 100 rows hold NaN or Inf (first: rows 5, 70)"),
        "{e}"
    );
    assert!(e.contains("tandem bank info"), "{e}");

    // Finite values whose squares overflow float32 are not NaN/Inf rows.
    let big = Bank::from_f32(vec![3e19, 4e19, 0.0, 0.0], 2);
    let r = big.scan();
    assert_eq!((r.nonfinite_rows, r.zero_rows), (0, 1));
    assert!((r.norms.unwrap().max - 5e19).abs() < 1e13);
    big.check_finite().unwrap();

    let all_bad = Bank::from_f32(vec![f32::NAN; 4], 2).scan();
    assert_eq!((all_bad.norms, all_bad.nonfinite_rows), (None, 2));
}

#[test]
fn converts_between_dtypes() {
    let bank = Bank::from_f32(A.to_vec(), 3);
    let h = bank.to_dtype(Dtype::F16).unwrap();
    assert_eq!(h.dtype(), Dtype::F16);
    assert!(matches!(h.vectors(), Vectors::F16(v) if v == halves(&A)));
    let back = h.to_dtype(Dtype::F32).unwrap();
    assert_eq!((back.dtype(), back.to_f32_vec()), (Dtype::F32, A.to_vec()));
    assert_eq!(bank.to_dtype(Dtype::F32).unwrap().to_f32_vec(), A);

    let mut wide = vec![0.0f32; 300_000];
    wide[200_001] = 1e6;
    let e = Bank::from_f32(wide, 3)
        .to_dtype(Dtype::F16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 66667 holds 1000000, beyond float16's range"),
        "{e}"
    );
    assert!(e.contains("--dtype float32"), "{e}");
    assert_eq!("float16".parse::<Dtype>(), Ok(Dtype::F16));
    assert_eq!("F32".parse::<Dtype>(), Ok(Dtype::F32));
    assert!("f64"
        .parse::<Dtype>()
        .unwrap_err()
        .contains("float32 or float16"));
}

#[test]
fn dimension_checks_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let bp = dir.path().join("bank.npy");
    let qp = dir.path().join("queries.npy");
    write_npy(&bp, 2, 3, Vectors::F32(&A), Overwrite::Refuse).unwrap();
    write_npy(&qp, 3, 2, Vectors::F32(&A), Overwrite::Refuse).unwrap();
    let bank = Bank::open(&bp, &OpenOptions::default()).unwrap();
    let queries = Bank::open(&qp, &OpenOptions::default()).unwrap();
    bank.expect_dim(3, "the model").unwrap();
    let msg = invalid(
        bank.expect_same_dim(&queries),
        &bp,
        &["dimension 3", "dimension 2", "same embedding model"],
    );
    assert!(msg.contains(&qp.display().to_string()), "{msg}");
    invalid(
        bank.expect_dim(768, "the model's output"),
        &bp,
        &["the model's output has dimension 768"],
    );
}

fn with_ids(bank: &Path, ids: &Path) -> Result<Bank, BankError> {
    Bank::open(
        bank,
        &OpenOptions {
            key: None,
            ids: Some(ids.to_path_buf()),
        },
    )
}

#[test]
fn ids_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bp: PathBuf = d.join("b.npy");
    write_npy(&bp, 3, 2, Vectors::F32(&A), Overwrite::Refuse).unwrap();
    for text in ["d1\nd2\nd3\n", "d1\nd2\nd3", "d1\r\nd2\r\nd3\r\n"] {
        let ip = put(d, "ids.txt", text.as_bytes());
        let bank = with_ids(&bp, &ip).unwrap();
        assert_eq!(bank.ids().unwrap(), ["d1", "d2", "d3"]);
        assert_eq!(bank.doc_id(2), "d3");
    }
    let cases: [(&str, &[u8], &[&str]); 6] = [
        (
            "short.txt",
            b"d1\nd2\n",
            &["ids file has 2 lines but", "b.npy has 3 rows"],
        ),
        ("long.txt", b"d1\nd2\nd3\nd4\n", &["has 4 lines"]),
        ("empty.txt", b"", &["has 0 lines"]),
        ("blank.txt", b"d1\n\nd3\n", &["line 2 is an empty id"]),
        (
            "dup.txt",
            b"d1\nd2\nd1\n",
            &["id 'd1' appears on lines 1 and 3", "unique"],
        ),
        (
            "latin1.txt",
            b"d1\nd\xe92\nd3\n",
            &["not UTF-8 (at byte 4)"],
        ),
    ];
    for (name, text, want) in cases {
        let ip = put(d, name, text);
        invalid(with_ids(&bp, &ip), &ip, want);
    }
}

/// The shared MS MARCO slice (`shared/data` beside the repository).
#[test]
fn opens_real_msmarco_corpus() {
    let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let p = data.join("msmarco-dl-5k/corpus.minilm.f16.npy");
    let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
    assert_eq!(
        (bank.rows(), bank.dim(), bank.dtype()),
        (5000, 384, Dtype::F16)
    );
    assert!(bank.is_mapped());
    let r = bank.scan();
    assert_eq!((r.nonfinite_rows, r.zero_rows), (0, 0));
    let n = r.norms.unwrap();
    assert!(
        n.min > 0.99 && n.max < 1.01 && (n.mean - 1.0).abs() < 1e-3,
        "{n:?}"
    );
    bank.check_finite().unwrap();
}
