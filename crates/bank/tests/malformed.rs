//! Every malformed input is one `Invalid` error naming the file, the problem
//! and the fix. Each case writes its bad file into a temp dir.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{f32_bytes, invalid, npy, npy_raw, put};
use tandem_bank::{read_array, Bank, BankError, OpenOptions};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const HEADER: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";

fn open(p: &Path) -> Result<Bank, BankError> {
    Bank::open(p, &OpenOptions::default())
}

fn open_key(p: &Path, key: &str) -> Result<Bank, BankError> {
    Bank::open(
        p,
        &OpenOptions {
            key: Some(key.into()),
            ids: None,
        },
    )
}

fn six() -> Vec<u8> {
    f32_bytes(&[1.0; 6])
}

#[test]
fn npy_preamble_and_header_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = put(d, "empty.npy", b"");
    invalid(open(&p), &p, &["file is empty (0 bytes)", "re-create"]);
    let p = put(d, "short.npy", b"\x93NUM");
    invalid(open(&p), &p, &["truncated", "8-byte .npy preamble"]);
    let p = put(d, "magic.npy", b"PK\x03\x04 this is a zip");
    invalid(open(&p), &p, &["not a .npy file", "np.save"]);
    let mut v4 = npy_raw(1, HEADER, &six());
    v4[6] = 4;
    let p = put(d, "v4.npy", &v4);
    invalid(
        open(&p),
        &p,
        &["unsupported .npy format version 4.0", "1.0, 2.0, 3.0"],
    );
    let mut huge = npy_raw(2, HEADER, &six());
    huge[8..12].copy_from_slice(&(2u32 << 20).to_le_bytes());
    let p = put(d, "huge_header.npy", &huge);
    invalid(
        open(&p),
        &p,
        &["claims 2097152 bytes", "1048576-byte limit"],
    );
    let p = put(d, "cut_header.npy", &npy_raw(1, HEADER, &[])[..40]);
    invalid(open(&p), &p, &["truncated", "inside the .npy header"]);
    let p = put(d, "list.npy", &npy_raw(1, "['descr', '<f4']", &six()));
    invalid(
        open(&p),
        &p,
        &["must be a dict literal", "np.save(path, arr)"],
    );
    let p = put(
        d,
        "extra_key.npy",
        &npy_raw(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}",
            &six(),
        ),
    );
    invalid(open(&p), &p, &["unexpected key 'x'"]);
    let p = put(
        d,
        "no_shape.npy",
        &npy_raw(1, "{'descr': '<f4', 'fortran_order': False}", &six()),
    );
    invalid(open(&p), &p, &["no 'shape' key"]);
    let mut bad_utf8 = npy_raw(3, HEADER, &six());
    bad_utf8[14] = 0xff;
    let p = put(d, "v3_latin1.npy", &bad_utf8);
    invalid(open(&p), &p, &["not valid UTF-8"]);
}

#[test]
fn npy_dtype_order_and_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = put(d, "f8.npy", &npy("<f8", "(2, 3)", &[0; 48]));
    invalid(
        open(&p),
        &p,
        &[
            "dtype '<f8' is not supported",
            "float32 '<f4'",
            "arr.astype('float32')",
        ],
    );
    let p = put(d, "be.npy", &npy(">f4", "(2, 3)", &six()));
    invalid(open(&p), &p, &["big-endian", "astype('float32')"]);
    let p = put(
        d,
        "fortran.npy",
        &npy_raw(
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}",
            &six(),
        ),
    );
    invalid(open(&p), &p, &["Fortran", "np.ascontiguousarray"]);
    let p = put(
        d,
        "overflow.npy",
        &npy("<f4", "(4294967296, 4294967296, 4294967296)", &six()),
    );
    invalid(read_array(&p, None), &p, &["overflows"]);
    let p = put(
        d,
        "overflow_bytes.npy",
        &npy("<f4", "(4611686018427387904, 2)", &six()),
    );
    invalid(open(&p), &p, &["overflows"]);
    let p = put(d, "i8.npy", &npy("<i8", "(2, 3)", &[0; 48]));
    invalid(
        open(&p),
        &p,
        &["int64", "float32 or float16", "astype('float32')"],
    );
}

#[test]
fn npy_exact_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = npy("<f4", "(2, 3)", &six());
    let p = put(d, "cut.npy", &good[..good.len() - 4]);
    invalid(
        open(&p),
        &p,
        &["truncated", "needs 24 data bytes but only 20 follow"],
    );
    let mut long = good.clone();
    long.extend_from_slice(b"junk");
    let p = put(d, "junk.npy", &long);
    invalid(
        open(&p),
        &p,
        &[
            "4 unexpected trailing bytes",
            "needs 24 data bytes but 28 follow",
        ],
    );
    invalid(read_array(&p, None), &p, &["4 unexpected trailing bytes"]);
}

#[test]
fn bank_shape_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = put(d, "one_d.npy", &npy("<f4", "(6,)", &six()));
    invalid(
        open(&p),
        &p,
        &["shape (6,) (1-D)", "must be 2-D", "arr.reshape(1, -1)"],
    );
    let p = put(d, "three_d.npy", &npy("<f4", "(1, 2, 3)", &six()));
    invalid(
        open(&p),
        &p,
        &["(1, 2, 3) (3-D)", "arr.reshape(-1, arr.shape[-1])"],
    );
    let p = put(d, "zero_rows.npy", &npy("<f4", "(0, 384)", &[]));
    invalid(open(&p), &p, &["shape (0, 384)", "at least one row"]);
    let p = put(d, "zero_dim.npy", &npy("<f4", "(5, 0)", &[]));
    invalid(open(&p), &p, &["shape (5, 0)", "one dimension"]);
    let p = put(d, "vectors.txt", &six());
    invalid(
        open(&p),
        &p,
        &[
            "unknown vector file extension",
            ".npy, .npz, .safetensors or .fvecs",
        ],
    );
    let missing = d.join("missing.npy");
    let e = open(&missing).unwrap_err();
    assert!(matches!(e, BankError::Io { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&missing.display().to_string()));
}

/// Write a zip with the given (name, bytes, deflated) members.
fn zip_file(d: &Path, name: &str, members: &[(&str, &[u8], bool)]) -> PathBuf {
    let p = d.join(name);
    let mut zip = ZipWriter::new(std::fs::File::create(&p).unwrap());
    for &(name, bytes, deflated) in members {
        let method = if deflated {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        zip.start_file(
            name,
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    p
}

#[test]
fn npz_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = npy("<f4", "(2, 3)", &six());
    let p = put(d, "not_zip.npz", &good);
    invalid(
        open(&p),
        &p,
        &["not a readable .npz (zip) archive", "np.savez"],
    );
    let p = zip_file(
        d,
        "two.npz",
        &[("ctx.npy", &good, false), ("tgt.npy", &good, true)],
    );
    invalid(
        open(&p),
        &p,
        &[
            "contains 2 arrays ('ctx', 'tgt') and no key was given",
            "--key ctx",
        ],
    );
    invalid(
        open_key(&p, "emb"),
        &p,
        &[
            "has no array named 'emb'; it contains 'ctx', 'tgt'",
            "--key",
        ],
    );
    invalid(
        read_array(&p, Some("emb.npy")),
        &p,
        &["no array named 'emb'"],
    );
    let p = zip_file(d, "empty.npz", &[]);
    invalid(open(&p), &p, &["contains no arrays"]);
    for deflated in [false, true] {
        let p = zip_file(
            d,
            "cut.npz",
            &[("emb.npy", &good[..good.len() - 8], deflated)],
        );
        invalid(
            open(&p),
            &p,
            &["array 'emb': truncated", "needs 24 data bytes but only 16"],
        );
        let mut long = good.clone();
        long.push(0);
        let p = zip_file(d, "long.npz", &[("emb.npy", &long, deflated)]);
        invalid(open(&p), &p, &["array 'emb': 1 unexpected trailing bytes"]);
        let p = zip_file(
            d,
            "f8.npz",
            &[("emb.npy", &npy("<f8", "(2, 3)", &[0; 48]), deflated)],
        );
        invalid(open(&p), &p, &["array 'emb': dtype '<f8' is not supported"]);
    }
    // Corrupt the stored CRC of a deflated member: the data must not be trusted.
    let p = zip_file(d, "crc.npz", &[("emb.npy", &good, true)]);
    let mut bytes = std::fs::read(&p).unwrap();
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 16] ^= 0xff;
    bytes[14] ^= 0xff; // the local header's copy too
    let p = put(d, "crc.npz", &bytes);
    invalid(
        open(&p),
        &p,
        &["array 'emb': the compressed data is corrupt"],
    );
}

/// A safetensors file from a header JSON and `data_len` zero data bytes.
fn st(json: &str, data_len: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.resize(out.len() + data_len, 0);
    out
}

#[test]
fn safetensors_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = |dtype: &str, shape: &str, a: usize, b: usize| {
        format!(r#"{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{a},{b}]}}"#)
    };
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "short",
            vec![1, 2, 3],
            vec!["shorter than the 8-byte safetensors header length"],
        ),
        (
            "huge",
            st("{}", 0).into_iter().take(8).map(|_| 0xff).collect(),
            vec!["over the 100000000-byte limit"],
        ),
        (
            "past_end",
            {
                let mut v = st("{}", 0);
                v[0] = 50;
                v
            },
            vec!["truncated: the header claims 50 bytes"],
        ),
        ("not_json", st("{nope", 0), vec!["not a JSON object"]),
        (
            "no_offsets",
            st(r#"{"a":{"dtype":"F32","shape":[1,1]}}"#, 4),
            vec!["tensor 'a' in the header", "data_offsets"],
        ),
        (
            "gap",
            st(&format!(r#"{{"a":{}}}"#, t("F32", "[1,1]", 4, 8)), 8),
            vec!["4 unused bytes before tensor 'a'"],
        ),
        (
            "overlap",
            st(
                &format!(
                    r#"{{"a":{},"b":{}}}"#,
                    t("F32", "[1,2]", 0, 8),
                    t("F32", "[1,1]", 4, 8)
                ),
                8,
            ),
            vec!["overlaps"],
        ),
        (
            "none",
            st(r#"{"__metadata__":{"format":"pt"}}"#, 0),
            vec!["contains no tensors"],
        ),
        (
            "cut",
            st(&format!(r#"{{"a":{}}}"#, t("F32", "[2,3]", 0, 24)), 20),
            vec!["truncated: tensor 'a' ends at data byte 24 but only 20"],
        ),
        (
            "size",
            st(&format!(r#"{{"a":{}}}"#, t("F32", "[2,3]", 0, 20)), 20),
            vec!["tensor 'a' has shape (2, 3) F32 but 20 data bytes"],
        ),
        (
            "trailing",
            st(&format!(r#"{{"a":{}}}"#, t("F32", "[2,3]", 0, 24)), 30),
            vec!["6 unexpected trailing bytes"],
        ),
        (
            "bf16",
            st(&format!(r#"{{"a":{}}}"#, t("BF16", "[2,3]", 0, 12)), 12),
            vec!["dtype BF16", "tensor.float()"],
        ),
        (
            "unknown",
            st(&format!(r#"{{"a":{}}}"#, t("Q4", "[2,3]", 0, 12)), 12),
            vec!["unknown dtype 'Q4'"],
        ),
        (
            "two",
            st(
                &format!(
                    r#"{{"a":{},"b":{}}}"#,
                    t("F32", "[1,1]", 0, 4),
                    t("F32", "[1,1]", 4, 8)
                ),
                8,
            ),
            vec!["contains 2 tensors ('a', 'b')", "--key a"],
        ),
        (
            "rank1",
            st(&format!(r#"{{"a":{}}}"#, t("F32", "[3]", 0, 12)), 12),
            vec!["shape (3,) (1-D)"],
        ),
    ];
    for (name, bytes, want) in cases {
        let p = put(d, &format!("{name}.safetensors"), &bytes);
        invalid(open(&p), &p, &want);
    }
    // Offsets that end before they begin.
    let json = format!(
        r#"{{"a":{},"b":{}}}"#,
        t("F32", "[1]", 0, 4),
        t("F32", "[1]", 0, 4).replace("[0,4]", "[4,0]")
    );
    let p = put(d, "rev.safetensors", &st(&json, 4));
    invalid(
        open(&p),
        &p,
        &["tensor 'b' has data offsets [4, 0] that end before they begin"],
    );
}

#[test]
fn fvecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let row = |dim: i32, n: usize| {
        let mut v = dim.to_le_bytes().to_vec();
        v.extend(f32_bytes(&vec![0.5; n]));
        v
    };
    let p = put(d, "tiny.fvecs", &[1, 0, 0]);
    invalid(open(&p), &p, &["shorter than one row's 4-byte dimension"]);
    let p = put(d, "neg.fvecs", &row(-1, 0));
    invalid(open(&p), &p, &["row 0 declares dimension -1"]);
    let p = put(
        d,
        "mixed.fvecs",
        &[row(3, 3), row(3, 3), row(4, 4)].concat(),
    );
    invalid(
        open(&p),
        &p,
        &["row 2 declares dimension 4 but row 0 declares 3"],
    );
    let p = put(d, "cut.fvecs", &[row(3, 3), row(3, 2)].concat());
    invalid(open(&p), &p, &["truncated", "row 1 is incomplete"]);
}
