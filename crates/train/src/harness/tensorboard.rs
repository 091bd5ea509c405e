//! TensorBoard event files: the scalars of `metrics.jsonl` again, in
//! `<run dir>/tb/events.out.tfevents.<unix seconds>.<hostname>`, one file
//! per process start, so that TensorBoard can watch a run live.
//!
//! A file is a sequence of records: the data's length (`u64`, little
//! endian), the masked CRC-32C of those 8 bytes, the data, the masked
//! CRC-32C of the data. Each record's data is an `Event` protocol buffer,
//! encoded here by hand:
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { enum Status status = 1; }  // START = 1
//! ```
//!
//! (Field 6 of `Event` is the deprecated `LogMessage`, which TensorBoard
//! ignores: a session log must be field 7.)
//!
//! A file starts with the file version and a `START` session log at the
//! step the process starts from: TensorBoard then drops what earlier files
//! logged at that step or later, as a resume drops it from `metrics.jsonl`.
//! Each record is written with one call and not buffered; a crash can leave
//! a torn last record, which TensorBoard skips.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::TrainError;

/// An open event file.
pub(super) struct EventFile {
    file: File,
    path: PathBuf,
}

impl EventFile {
    /// A new event file in `dir` (created if missing), opened with the file
    /// version and a `START` session log at `step`.
    pub(super) fn create(dir: &Path, step: u64) -> Result<EventFile, TrainError> {
        fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let host = hostname();
        // Files are read in name order: a start within the same second as
        // the last one takes the next free second.
        let mut secs = unix_time() as u64;
        let (file, path) = loop {
            let path = dir.join(format!("events.out.tfevents.{secs:010}.{host}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => secs += 1,
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        };
        let mut events = EventFile { file, path };
        let mut version = Vec::new();
        bytes_field(&mut version, 3, b"brain.Event:2");
        events.write(0, &version)?;
        let mut start = Vec::new();
        bytes_field(&mut start, 7, &[1 << 3, 1]); // SessionLog { status: START }
        events.write(step, &start)?;
        Ok(events)
    }

    /// One event holding `scalars` (tag, value) at `step`.
    pub(super) fn scalars(
        &mut self,
        step: u64,
        scalars: &[(String, f32)],
    ) -> Result<(), TrainError> {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        let mut fields = Vec::new();
        bytes_field(&mut fields, 5, &summary);
        self.write(step, &fields)
    }

    /// An event of `fields` after its wall time and `step`, as one record.
    fn write(&mut self, step: u64, fields: &[u8]) -> Result<(), TrainError> {
        let mut event = Vec::with_capacity(fields.len() + 20);
        key(&mut event, 1, 1);
        event.extend_from_slice(&unix_time().to_le_bytes());
        key(&mut event, 2, 0);
        varint(&mut event, step);
        event.extend_from_slice(fields);
        let len = (event.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(event.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&event);
        record.extend_from_slice(&masked_crc(&event).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Seconds since the Unix epoch.
fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name, `localhost` when it has none.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is cut to fit.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace('/', "_");
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// A protocol buffer varint.
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A field's key: its number and wire type (0 varint, 1 64-bit,
/// 2 length-delimited, 5 32-bit).
fn key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    varint(buf, field << 3 | wire);
}

/// A length-delimited field (a string or a message).
fn bytes_field(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), byte by byte.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC32C_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The CRC as TFRecord stores it.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// A reader of event files, for the tests here and in [`super::metrics`].
#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What a test reads back from one event.
    #[derive(Debug, Default, PartialEq)]
    pub(in crate::harness) struct Event {
        pub(in crate::harness) wall_time: f64,
        pub(in crate::harness) step: u64,
        pub(in crate::harness) file_version: Option<String>,
        pub(in crate::harness) session_status: Option<u64>,
        pub(in crate::harness) scalars: Vec<(String, f32)>,
    }

    /// A protocol buffer reader over `buf`, field by field.
    struct Fields<'a>(&'a [u8]);

    enum Field<'a> {
        Varint(u64),
        Fixed64([u8; 8]),
        Bytes(&'a [u8]),
        Fixed32([u8; 4]),
    }

    impl Fields<'_> {
        fn varint(&mut self) -> u64 {
            let mut v = 0;
            for shift in (0..64).step_by(7) {
                let (b, rest) = self.0.split_first().expect("truncated varint");
                self.0 = rest;
                v |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return v;
                }
            }
            panic!("varint too long")
        }

        fn take(&mut self, n: usize) -> &[u8] {
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
    }

    impl<'a> Iterator for Fields<'a> {
        type Item = (u64, Field<'a>);

        fn next(&mut self) -> Option<Self::Item> {
            if self.0.is_empty() {
                return None;
            }
            let k = self.varint();
            let field = match k & 7 {
                0 => Field::Varint(self.varint()),
                1 => Field::Fixed64(self.take(8).try_into().unwrap()),
                2 => {
                    let n = self.varint() as usize;
                    let (head, rest) = self.0.split_at(n);
                    self.0 = rest;
                    Field::Bytes(head)
                }
                5 => Field::Fixed32(self.take(4).try_into().unwrap()),
                w => panic!("wire type {w}"),
            };
            Some((k >> 3, field))
        }
    }

    fn decode(data: &[u8]) -> Event {
        let mut e = Event::default();
        for (n, f) in Fields(data) {
            match (n, f) {
                (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
                (2, Field::Varint(v)) => e.step = v,
                (3, Field::Bytes(b)) => e.file_version = Some(String::from_utf8(b.into()).unwrap()),
                (5, Field::Bytes(summary)) => {
                    for (n, value) in Fields(summary) {
                        let (1, Field::Bytes(value)) = (n, value) else {
                            panic!("Summary field {n}")
                        };
                        let (mut tag, mut x) = (String::new(), f32::NAN);
                        for (n, f) in Fields(value) {
                            match (n, f) {
                                (1, Field::Bytes(b)) => tag = String::from_utf8(b.into()).unwrap(),
                                (2, Field::Fixed32(b)) => x = f32::from_le_bytes(b),
                                _ => panic!("Value field {n}"),
                            }
                        }
                        e.scalars.push((tag, x));
                    }
                }
                (7, Field::Bytes(log)) => {
                    for (n, f) in Fields(log) {
                        let (1, Field::Varint(s)) = (n, f) else {
                            panic!("SessionLog field {n}")
                        };
                        e.session_status = Some(s);
                    }
                }
                (n, _) => panic!("Event field {n}"),
            }
        }
        e
    }

    /// The event files in `dir`, in name order.
    pub(in crate::harness) fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    /// The events of the file at `path`, checking each record's framing.
    pub(in crate::harness) fn read(path: &Path) -> Vec<Event> {
        let bytes = fs::read(path).unwrap();
        let mut rest = &bytes[..];
        let mut events = Vec::new();
        while !rest.is_empty() {
            let len: [u8; 8] = rest[..8].try_into().unwrap();
            let crc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&len), "length CRC");
            let n = u64::from_le_bytes(len) as usize;
            let data = &rest[12..12 + n];
            let crc = u32::from_le_bytes(rest[12 + n..16 + n].try_into().unwrap());
            assert_eq!(crc, masked_crc(data), "data CRC");
            events.push(decode(data));
            rest = &rest[16 + n..];
        }
        events
    }

    #[test]
    fn crc32c_matches_the_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn scalars_read_back_with_their_steps_and_framing() {
        let dir = tempfile::tempdir().unwrap();
        let tb = dir.path().join("tb");
        let before = unix_time();
        let mut w = EventFile::create(&tb, 7).unwrap();
        let first = vec![("train/loss".to_string(), 0.5), ("train/lr".into(), 2e-5)];
        w.scalars(8, &first).unwrap();
        let second = vec![("val/recall@10".to_string(), 0.625)];
        w.scalars(300, &second).unwrap();
        assert_eq!(files(&tb), [w.path.clone()]);
        let name = w.path.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(&hostname()),
            "{name}"
        );
        let events = read(&w.path);
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.step,
                    e.file_version.as_deref(),
                    e.session_status,
                    &e.scalars[..],
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, Some("brain.Event:2"), None, &[][..]),
                (7, None, Some(1), &[]),
                (8, None, None, &first),
                (300, None, None, &second),
            ]
        );
        assert!(events
            .iter()
            .all(|e| e.wall_time >= before && e.wall_time <= unix_time()));

        // A second start in the same second gets a file of its own, after
        // the first in name order.
        let again = EventFile::create(&tb, 300).unwrap();
        assert_eq!(files(&tb), [w.path, again.path.clone()]);
        assert_eq!(read(&again.path)[1].session_status, Some(1));
    }
}
