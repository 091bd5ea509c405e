//! Reading valid files in every format, including byte layouts written by
//! numpy and safetensors themselves (the Python is in each comment).

mod common;

use std::io::Write;

use common::{f32_bytes, hex, npy, npy_raw, put, NP_SAVE_F16, NP_SAVE_F32};
use tandem_bank::{array_keys, f16, read_array, ArrayData, Bank, Dtype, OpenOptions, Vectors};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// np.lib.format.write_array(f, a, version=(2, 0))
const NP_V2_F32: &str = "
934e554d50590200740000007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a204661
6c73652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020
202020202020202020202020202020202020202020202020202020202020200a000000000000803e0000003f0000403f
0000803f0000a03f";

/// np.lib.format.write_array(f, a.astype('<f2'), version=(3, 0))
const NP_V3_F16: &str = "
934e554d50590300740000007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a204661
6c73652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020
202020202020202020202020202020202020202020202020202020202020200a000000340038003a003c003d";

/// np.savez('s.npz', ctx=a, tgt=np.array([1, 0], dtype='<i8'))  (numpy 2.4, stored, zip64 local headers)
const NP_SAVEZ: &str = "
504b03042d0000000000000021000a9c00a4ffffffffffffffff070014006374782e6e70790100100098000000000000
009800000000000000934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f7264
6572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020
202020202020202020202020202020202020202020202020202020202020202020202020202020200a00000000000080
3e0000003f0000403f0000803f0000a03f504b03042d00000000000000210071fb39abffffffffffffffff0700140074
67742e6e70790100100090000000000000009000000000000000934e554d5059010076007b276465736372273a20273c
6938272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020
202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020
2020202020202020200a01000000000000000000000000000000504b01022d032d0000000000000021000a9c00a49800
0000980000000700000000000000000000008001000000006374782e6e7079504b01022d032d00000000000000210071
fb39ab90000000900000000700000000000000000000008001d10000007467742e6e7079504b05060000000002000200
6a0000009a0100000000";

/// np.savez_compressed('c.npz', ctx=a.astype('<f2'), tgt=np.array([1, 0], dtype='<i4'))
const NP_SAVEZ_COMPRESSED: &str = "
504b03042d000000080000002100726ba206ffffffffffffffff070014006374782e6e7079010010008c000000000000
0052000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9366a4aea3a09e965f54529498179f5f94
920a12774bcc294e058a17672416a402f91a463a0ac69a3a0ab50a64032e06060613060b062b061b065b00504b03042d
0000000800000021008031a387ffffffffffffffff070014007467742e6e707901001000880000000000000048000000
000000009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9369a2aea3a09e965f54529498179f5f94920a12774b
cc294e058a17672416a402f91a463a9a3a0ab50a14002e4606080000504b01022d032d000000080000002100726ba206
520000008c0000000700000000000000000000008001000000006374782e6e7079504b01022d032d0000000800000021
008031a387480000008800000007000000000000000000000080018b0000007467742e6e7079504b0506000000000200
02006a0000000c0100000000";

/// safetensors.numpy.save_file({'emb': a, 'ids': np.array([5, 6], dtype='<i8')}, 'a.safetensors')
const ST_SAVE_FILE: &str = "
78000000000000007b22696473223a7b226474797065223a22493634222c227368617065223a5b325d2c22646174615f
6f666673657473223a5b302c31365d7d2c22656d62223a7b226474797065223a22463332222c227368617065223a5b32
2c335d2c22646174615f6f666673657473223a5b31362c34305d7d7d2020202005000000000000000600000000000000
000000000000803e0000003f0000403f0000803f0000a03f";

const A: [f32; 6] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25];

fn opts(key: Option<&str>) -> OpenOptions {
    OpenOptions {
        key: key.map(str::to_string),
        ids: None,
    }
}

fn assert_a(bank: &Bank, dtype: Dtype) {
    assert_eq!((bank.rows(), bank.dim(), bank.dtype()), (2, 3, dtype));
    assert_eq!(bank.to_f32_vec(), A);
    assert_eq!(bank.row_f32(1).as_ref(), &A[3..]);
}

#[test]
fn reads_numpy_npy_versions_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, dtype) in [
        ("v1f32.npy", NP_SAVE_F32, Dtype::F32),
        ("v1f16.npy", NP_SAVE_F16, Dtype::F16),
        ("v2f32.npy", NP_V2_F32, Dtype::F32),
        ("v3f16.npy", NP_V3_F16, Dtype::F16),
    ] {
        let p = put(dir.path(), name, &hex(bytes));
        let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
        assert_a(&bank, dtype);
        assert!(bank.is_mapped(), "{name} is memory-mapped");
        assert_eq!(bank.path(), Some(p.as_path()));
        assert!(matches!(
            (bank.vectors(), dtype),
            (Vectors::F16(_), Dtype::F16) | (Vectors::F32(_), Dtype::F32)
        ));
    }
}

#[test]
fn accepts_little_endian_spellings() {
    let dir = tempfile::tempdir().unwrap();
    for descr in ["<f4", "|f4", "=f4", "f4"] {
        let p = put(dir.path(), "x.npy", &npy(descr, "(2, 3)", &f32_bytes(&A)));
        assert_a(
            &Bank::open(&p, &OpenOptions::default()).unwrap(),
            Dtype::F32,
        );
    }
    // Unaligned data (a 13-byte header) is copied rather than mapped.
    let p = put(
        dir.path(),
        "odd.npy",
        &npy_raw(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}  ",
            &f32_bytes(&A),
        ),
    );
    let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
    assert!(!bank.is_mapped());
    assert_a(&bank, Dtype::F32);
}

#[test]
fn reads_numpy_savez_stored_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let s = put(dir.path(), "s.npz", &hex(NP_SAVEZ));
    assert_eq!(array_keys(&s).unwrap(), ["ctx", "tgt"]);
    for key in ["ctx", "ctx.npy"] {
        assert_a(&Bank::open(&s, &opts(Some(key))).unwrap(), Dtype::F32);
    }
    let tgt = read_array(&s, Some("tgt")).unwrap();
    assert_eq!(
        (tgt.shape.clone(), tgt.data),
        (vec![2], ArrayData::I64(vec![1, 0]))
    );

    let c = put(dir.path(), "c.npz", &hex(NP_SAVEZ_COMPRESSED));
    let bank = Bank::open(&c, &opts(Some("ctx"))).unwrap();
    assert!(!bank.is_mapped(), "deflated members are decompressed");
    assert_a(&bank, Dtype::F16);
    let tgt = read_array(&c, Some("tgt.npy")).unwrap();
    assert_eq!(tgt.data, ArrayData::I32(vec![1, 0]));
}

#[test]
fn maps_aligned_stored_npz_members_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("aligned.npz");
    let mut zip = ZipWriter::new(std::fs::File::create(&p).unwrap());
    let stored = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(64);
    zip.start_file("emb.npy", stored).unwrap();
    zip.write_all(&hex(NP_SAVE_F16)).unwrap();
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.start_file("other.npy", deflated).unwrap();
    zip.write_all(&hex(NP_SAVE_F32)).unwrap();
    zip.finish().unwrap();
    let bank = Bank::open(&p, &opts(Some("emb"))).unwrap();
    assert!(bank.is_mapped());
    assert_a(&bank, Dtype::F16);
    assert_a(&Bank::open(&p, &opts(Some("other"))).unwrap(), Dtype::F32);
}

#[test]
fn reads_safetensors_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = put(dir.path(), "a.safetensors", &hex(ST_SAVE_FILE));
    assert_eq!(array_keys(&p).unwrap(), ["ids", "emb"]);
    let bank = Bank::open(&p, &opts(Some("emb"))).unwrap();
    assert!(bank.is_mapped());
    assert_a(&bank, Dtype::F32);
    assert_eq!(
        read_array(&p, Some("ids")).unwrap().data,
        ArrayData::I64(vec![5, 6])
    );

    // A single float16 tensor written by the safetensors crate needs no key.
    let halves: Vec<u8> = A
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 3], &halves).unwrap();
    let bytes = safetensors::serialize([("vectors", view)], &None).unwrap();
    let p = put(dir.path(), "h.safetensors", &bytes);
    let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
    assert!(bank.is_mapped());
    assert_a(&bank, Dtype::F16);
}

#[test]
fn reads_fvecs_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for row in A.chunks(3) {
        bytes.extend_from_slice(&3i32.to_le_bytes());
        bytes.extend(f32_bytes(row));
    }
    let p = put(dir.path(), "a.fvecs", &bytes);
    let bank = Bank::open(&p, &OpenOptions::default()).unwrap();
    assert!(!bank.is_mapped());
    assert_a(&bank, Dtype::F32);
    assert!(array_keys(&p).unwrap().is_empty());
}

#[test]
fn reads_arrays_of_any_rank() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let p = put(
        dir.path(),
        "ctx.npy",
        &npy("<f4", "(2, 3, 4)", &f32_bytes(&data)),
    );
    let arr = read_array(&p, None).unwrap();
    assert_eq!(arr.shape, [2, 3, 4]);
    assert_eq!(arr.shape_text(), "(2, 3, 4)");
    assert_eq!(arr.data, ArrayData::F32(data));
    let ints: Vec<u8> = [7i32, -1, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = put(dir.path(), "rows.npy", &npy("<i4", "(3,)", &ints));
    let arr = read_array(&p, None).unwrap();
    assert_eq!(
        (arr.shape, arr.data.dtype_name(), arr.data.len()),
        (vec![3], "int32", 3)
    );
}
