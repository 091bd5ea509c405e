//! Helpers shared by the integration tests: byte builders and error checks.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use tandem_bank::BankError;

/// Decode a hex string (whitespace ignored).
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Write `bytes` to `dir/name` and return the path.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A `.npy` file with an arbitrary header text (not padded) and data.
pub fn npy_raw(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A version 1.0 `.npy` file with the standard header for `descr` and `shape`.
pub fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    npy_raw(
        1,
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n"),
        data,
    )
}

/// Little-endian bytes of float32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Assert `r` is an `Invalid` error about `path` whose message contains every
/// one of `want`; returns the message.
#[track_caller]
pub fn invalid<T: std::fmt::Debug>(r: Result<T, BankError>, path: &Path, want: &[&str]) -> String {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    match &e {
        BankError::Invalid {
            path: p,
            problem,
            fix,
        } => {
            assert_eq!(p, path, "{msg}");
            assert!(!problem.is_empty() && !fix.is_empty(), "{msg}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    for w in want {
        assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
    }
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    msg
}

/// a = np.arange(6, dtype='<f4').reshape(2, 3) / 4; np.save('a_f32.npy', a)
pub const NP_SAVE_F32: &str = "
934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73
652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020
202020202020202020202020202020202020202020202020202020202020200a000000000000803e0000003f0000403f
0000803f0000a03f";

/// np.save('a_f16.npy', a.astype('<f2'))
pub const NP_SAVE_F16: &str = "
934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73
652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020
202020202020202020202020202020202020202020202020202020202020200a000000340038003a003c003d";
