//! `.npz` archives: zip files of `.npy` members. Stored members whose data
//! is aligned are used in place from the memory map; deflated members are
//! decompressed into memory.

use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use memmap2::Mmap;
use zip::{CompressionMethod, ZipArchive};

use crate::array::ArrayData;
use crate::format::{pick_key, ArrayHeader, Elem, Payload};
use crate::{npy, BankError};

/// Deflate cannot expand data by more than about 1032:1; a larger claim is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1100;

fn zip_error(path: &Path, e: zip::result::ZipError) -> BankError {
    BankError::invalid(
        path,
        format!("not a readable .npz (zip) archive: {e}"),
        "re-create it with np.savez(path, name=arr) or np.savez_compressed",
    )
}

/// Prefix an error about a member's contents with the member's name.
fn in_member(e: BankError, name: &str) -> BankError {
    match e {
        BankError::Invalid { path, problem, fix } => BankError::Invalid {
            path,
            problem: format!("array '{name}': {problem}"),
            fix,
        },
        other => other,
    }
}

/// The array keys of an archive (member names without `.npy`), in file order.
fn keys(zip: &ZipArchive<Cursor<&[u8]>>) -> Vec<String> {
    (0..zip.len())
        .filter_map(|i| zip.name_for_index(i))
        .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
        .collect()
}

/// The array keys of the `.npz` archive at `path`.
pub(crate) fn list(path: &Path, map: &[u8]) -> Result<Vec<String>, BankError> {
    let zip = ZipArchive::new(Cursor::new(map)).map_err(|e| zip_error(path, e))?;
    Ok(keys(&zip))
}

/// Find array `key` and check its header and exact length.
pub(crate) fn locate(
    path: &Path,
    map: Arc<Mmap>,
    key: Option<&str>,
) -> Result<(ArrayHeader, Payload), BankError> {
    let mut zip = ZipArchive::new(Cursor::new(&map[..])).map_err(|e| zip_error(path, e))?;
    let names = keys(&zip);
    let key = pick_key(
        path,
        &names,
        key.map(|k| k.strip_suffix(".npy").unwrap_or(k)),
        "array",
    )?;
    let index = names
        .iter()
        .position(|n| n == key)
        .expect("picked from names");
    let mut member = zip.by_index(index).map_err(|e| zip_error(path, e))?;
    let size = member.size();
    let result = match member.compression() {
        CompressionMethod::Stored => {
            let start = member.data_start() as usize;
            let end = start
                .checked_add(size as usize)
                .filter(|&end| end <= map.len() && size == member.compressed_size());
            let Some(end) = end else {
                return Err(BankError::invalid(
                    path,
                    format!("array '{key}': the zip entry's sizes disagree with the file"),
                    "the archive is corrupt or truncated; re-create it with np.savez",
                ));
            };
            let mut data = &map[start..end];
            let (header, offset) =
                npy::read_header(&mut data, path).map_err(|e| in_member(e, key))?;
            header
                .check_data_len(path, data.len() as u64, size)
                .map_err(|e| in_member(e, key))?;
            drop(member);
            Ok((
                header,
                Payload::Mapped {
                    map: Arc::clone(&map),
                    offset: start + offset,
                },
            ))
        }
        _ => {
            if size
                > member
                    .compressed_size()
                    .saturating_mul(MAX_DEFLATE_RATIO)
                    .saturating_add(1 << 16)
            {
                return Err(BankError::invalid(
                    path,
                    format!(
                        "array '{key}': the zip entry claims {size} bytes from {} compressed bytes, more than deflate can produce",
                        member.compressed_size()
                    ),
                    "the archive is corrupt; re-create it with np.savez_compressed",
                ));
            }
            read_member(path, &mut member, size)
        }
    };
    result.map_err(|e| in_member(e, key))
}

/// Decompress a member: header, exactly the declared data, then end of data
/// (which also makes the zip reader verify the CRC).
fn read_member(
    path: &Path,
    r: &mut impl Read,
    size: u64,
) -> Result<(ArrayHeader, Payload), BankError> {
    let (header, offset) = npy::read_header(r, path)?;
    let n = header.len(path)?;
    header.check_data_len(path, size.saturating_sub(offset as u64), size)?;
    let data = match header.elem {
        Elem::F32 => ArrayData::F32(read_vec(r, n, path)?),
        Elem::F16 => ArrayData::F16(read_vec(r, n, path)?),
        Elem::I64 => ArrayData::I64(read_vec(r, n, path)?),
        Elem::I32 => ArrayData::I32(read_vec(r, n, path)?),
    };
    let mut probe = [0u8; 1];
    match r.read(&mut probe) {
        Ok(0) => Ok((header, Payload::Owned(data))),
        Ok(_) => Err(BankError::invalid(
            path,
            "the decompressed data is longer than the header says",
            "the archive is corrupt; re-create it with np.savez_compressed",
        )),
        Err(e) => Err(BankError::invalid(
            path,
            format!("the compressed data is corrupt: {e}"),
            "re-create the archive with np.savez_compressed",
        )),
    }
}

/// Read `n` elements, with a progress bar for large arrays.
fn read_vec<T: Pod + Zeroable>(
    r: &mut impl Read,
    n: usize,
    path: &Path,
) -> Result<Vec<T>, BankError> {
    const CHUNK: usize = 8 << 20;
    let mut v = vec![T::zeroed(); n];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    let bar = tandem_io::progress(bytes.len().div_ceil(CHUNK) as u64, "inflating");
    for chunk in bytes.chunks_mut(CHUNK) {
        npy::read_full(r, chunk, path, "the array data")?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(v)
}
