//! The run-wide cache of positive-anchored hits.
//!
//! A band measured against the positive does not depend on the model: the
//! rows of example `e` that lie in band `b` (the nearest `pool` rows to its
//! positive, its context left out, filtered by the band and the
//! near-duplicate threshold) are the same in every epoch. [`HitCache`] keeps
//! them, per training example and per distinct band of the curriculum, as
//! `u32` rows in the order the search returned them, so that every later
//! draw from them (see [`crate::miner`]) gives the negatives that mining
//! again would give, bit for bit. Each example is searched once per run.
//!
//! The cache goes with the run: [`HitCache::mark`] appends what was mined
//! since the last call to `mine-cache.bin` in the run directory, fsyncs it
//! and returns its length and SHA-256, which the checkpoint records. A
//! resumed run reads back exactly that prefix ([`HitCache::load`]); bytes
//! past it (mined after the checkpoint, or torn by a crash) are cut off. A
//! file that does not match is not an error: the cache is mined again, which
//! gives the same negatives.
//!
//! `mine-cache.bin`: a header (`TANDEMHC`, format, the pool, the
//! near-duplicate threshold, the number of examples, the bands), then one
//! record per mined example: its index, and per band the number of rows and
//! the rows. Every number is a little-endian 32-bit word.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::curriculum::{Band, Curriculum};

/// The cache file's name in the run directory.
pub const FILE: &str = "mine-cache.bin";

const MAGIC: &[u8; 8] = b"TANDEMHC";
const FORMAT: u32 = 1;

/// What a checkpoint records of the cache: the length of the file's prefix
/// it covers and that prefix's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMark {
    /// Bytes of `mine-cache.bin` that belong to the checkpoint.
    pub bytes: u64,
    /// SHA-256 of those bytes, hex.
    pub sha256: String,
}

/// The in-band rows of every training example mined so far (module docs).
/// Shared by the training thread and the mining worker.
#[derive(Debug)]
pub struct HitCache {
    bands: Vec<Band>,
    pool: usize,
    dup_threshold: f32,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Per example: for each band, its number of rows then the rows.
    hits: Vec<Option<Box<[u32]>>>,
    cached: usize,
    words: u64,
    file: Persist,
}

/// The cache file being appended to.
#[derive(Debug)]
struct Persist {
    path: PathBuf,
    /// Open for appending after the first write (which cuts the file to `written`).
    out: Option<BufWriter<File>>,
    /// Bytes written (not all of them synced before [`HitCache::mark`]).
    written: u64,
    sha: Sha256,
    /// Why the file stopped being written (the cache goes on in memory).
    failed: Option<String>,
    /// What the file starts with (written first when the file is started).
    header: Vec<u8>,
}

/// The distinct bands of `curriculum`, in the order they first appear.
pub fn bands(curriculum: &Curriculum) -> Vec<Band> {
    let mut out: Vec<Band> = Vec::new();
    for b in curriculum.phases().iter().filter_map(|p| p.band) {
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// The most memory a cache can take: every example with `pool` rows in
/// every band, plus a pointer per example.
pub fn max_bytes(examples: usize, bands: usize, pool: usize) -> u64 {
    examples as u64 * (16 + 16 + bands as u64 * (pool as u64 + 1) * 4)
}

impl HitCache {
    /// An empty cache for `examples` training examples and `bands`, mined
    /// with `pool` and `dup_threshold`, persisted to `run_dir`/[`FILE`].
    pub fn new(
        run_dir: &Path,
        examples: usize,
        bands: Vec<Band>,
        pool: usize,
        dup_threshold: f32,
    ) -> HitCache {
        let header = header(examples, &bands, pool, dup_threshold);
        HitCache {
            bands,
            pool,
            dup_threshold,
            inner: Mutex::new(Inner {
                hits: vec![None; examples],
                cached: 0,
                words: 0,
                file: Persist {
                    path: run_dir.join(FILE),
                    out: None,
                    written: 0,
                    sha: Sha256::new(),
                    failed: None,
                    header,
                },
            }),
        }
    }

    /// The cache as the checkpoint `mark` left it in `run_dir`/[`FILE`],
    /// or why it cannot be taken back (then mine again with [`HitCache::new`]).
    pub fn load(
        run_dir: &Path,
        mark: &CacheMark,
        examples: usize,
        bands: Vec<Band>,
        pool: usize,
        dup_threshold: f32,
    ) -> Result<HitCache, String> {
        let path = run_dir.join(FILE);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| {
                let have = f.metadata()?.len();
                bytes.reserve_exact(have.min(mark.bytes) as usize);
                f.take(mark.bytes).read_to_end(&mut bytes)
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() as u64 != mark.bytes {
            return Err(format!(
                "{} holds {} bytes, the checkpoint {}",
                path.display(),
                bytes.len(),
                mark.bytes
            ));
        }
        let sha = Sha256::new_with_prefix(&bytes);
        if hex(&sha) != mark.sha256 {
            return Err(format!(
                "{} does not match the checkpoint's SHA-256",
                path.display()
            ));
        }
        let mut c = HitCache::new(run_dir, examples, bands, pool, dup_threshold);
        let header = header(examples, &c.bands, c.pool, c.dup_threshold);
        if !bytes.starts_with(&header) || !(bytes.len() - header.len()).is_multiple_of(4) {
            return Err(format!(
                "{} was mined with other settings (pool, near-duplicate threshold, bands or examples)",
                path.display()
            ));
        }
        let body = &bytes[header.len()..];
        let len = body.len() / 4;
        let word =
            |i: usize| u32::from_le_bytes(body[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let inner = c.inner.get_mut().expect("not shared yet");
        let mut at = 0;
        while at < len {
            let e = word(at) as usize;
            let mut end = at + 1;
            for _ in 0..c.bands.len() {
                end = (end < len)
                    .then(|| end + 1 + word(end) as usize)
                    .filter(|&x| x <= len)
                    .ok_or_else(|| format!("{} has a torn record", path.display()))?;
            }
            let slot = inner
                .hits
                .get_mut(e)
                .ok_or_else(|| format!("{} names example {e} of {examples}", path.display()))?;
            if slot.is_none() {
                inner.cached += 1;
                inner.words += (end - at - 1) as u64;
            }
            *slot = Some((at + 1..end).map(word).collect());
            at = end;
        }
        inner.file.written = mark.bytes;
        inner.file.sha = sha;
        Ok(c)
    }

    /// The bands cached, in order.
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// Which of `bands` is `band`.
    pub fn band_index(&self, band: &Band) -> Option<usize> {
        self.bands.iter().position(|b| b == band)
    }

    /// The cached rows of band `band` (an index into [`HitCache::bands`])
    /// for each of `examples` (`None`: not mined yet).
    pub fn lookup(&self, examples: &[u32], band: usize) -> Vec<Option<Vec<u32>>> {
        let inner = self.inner.lock().expect("cache lock");
        examples
            .iter()
            .map(|&e| {
                let words = inner.hits.get(e as usize)?.as_deref()?;
                let mut at = 0;
                for _ in 0..band {
                    at += 1 + words[at] as usize;
                }
                let n = words[at] as usize;
                Some(words[at + 1..at + 1 + n].to_vec())
            })
            .collect()
    }

    /// Stores example `e`'s rows in each band (one list per band, in order).
    /// An example already cached is left alone.
    pub fn insert(&self, e: u32, per_band: &[Vec<u32>]) {
        assert_eq!(per_band.len(), self.bands.len(), "one list per band");
        let mut words = Vec::with_capacity(per_band.iter().map(|r| r.len() + 1).sum());
        for rows in per_band {
            words.push(rows.len() as u32);
            words.extend_from_slice(rows);
        }
        let mut inner = self.inner.lock().expect("cache lock");
        let inner = &mut *inner;
        let Some(slot) = inner.hits.get_mut(e as usize) else {
            panic!("example {e} is outside the cache");
        };
        if slot.is_some() {
            return;
        }
        let mut record = Vec::with_capacity(4 * (1 + words.len()));
        record.extend(e.to_le_bytes());
        words.iter().for_each(|w| record.extend(w.to_le_bytes()));
        inner.file.append(&record);
        inner.cached += 1;
        inner.words += words.len() as u64;
        *slot = Some(words.into());
    }

    /// Examples cached, and the bytes the cache holds in memory.
    pub fn size(&self) -> (usize, u64) {
        let inner = self.inner.lock().expect("cache lock");
        (
            inner.cached,
            inner.words * 4 + inner.hits.len() as u64 * 16 + inner.cached as u64 * 16,
        )
    }

    /// Writes what was mined since the last call to the cache file, syncs
    /// it and returns the mark a checkpoint records; `Err` says why the file
    /// could not be written (the cache still serves this run; a resumed run
    /// mines again).
    pub fn mark(&self) -> Result<CacheMark, String> {
        let mut inner = self.inner.lock().expect("cache lock");
        let p = &mut inner.file;
        if p.failed.is_none() {
            if let Err(e) = p.sync() {
                p.failed = Some(format!("{}: {e}", p.path.display()));
                p.out = None;
            }
        }
        match &p.failed {
            Some(why) => Err(why.clone()),
            None => Ok(CacheMark {
                bytes: p.written,
                sha256: hex(&p.sha),
            }),
        }
    }
}

impl Persist {
    /// Appends `bytes` (buffered): the first write cuts the file to what a
    /// checkpoint covers, dropping anything past it.
    fn append(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let r = (|| -> std::io::Result<()> {
            if self.out.is_none() {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut f = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&self.path)?;
                f.set_len(self.written)?;
                f.seek(SeekFrom::Start(self.written))?;
                let mut out = BufWriter::with_capacity(1 << 20, f);
                if self.written == 0 {
                    out.write_all(&self.header)?;
                    self.written = self.header.len() as u64;
                    self.sha.update(&self.header);
                }
                self.out = Some(out);
            }
            self.out.as_mut().expect("opened").write_all(bytes)
        })();
        match r {
            Ok(()) => {
                self.written += bytes.len() as u64;
                self.sha.update(bytes);
            }
            Err(e) => {
                self.failed = Some(format!("{}: {e}", self.path.display()));
                self.out = None;
            }
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if self.out.is_none() {
            // Nothing written yet: the header, at least, goes in.
            self.append(&[]);
            if let Some(why) = &self.failed {
                return Err(std::io::Error::other(why.clone()));
            }
        }
        let out = self.out.as_mut().expect("opened");
        out.flush()?;
        out.get_ref().sync_data()
    }
}

/// The file's header for these settings.
fn header(examples: usize, bands: &[Band], pool: usize, dup_threshold: f32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    let mut words = vec![
        FORMAT,
        u32::try_from(pool).unwrap_or(u32::MAX),
        dup_threshold.to_bits(),
        examples as u32,
        bands.len() as u32,
    ];
    for b in bands {
        words.extend([b.count as u32, b.lo.to_bits(), b.hi.to_bits()]);
    }
    words.iter().for_each(|w| h.extend(w.to_le_bytes()));
    h
}

fn hex(sha: &Sha256) -> String {
    sha.clone()
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
