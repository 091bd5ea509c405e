//! The int8 scan: bank rows and queries rounded to 8-bit integers with one
//! float32 scale per vector, multiplied with AVX512-VNNI (`vpdpbusd`: 64
//! byte products per instruction, four times the float32 multiply-adds), each
//! score with a proven bound (see [`crate::exact`]) so that an exact float32
//! rescore of the few rows that can still reach the top-k gives the exact
//! result.
//!
//! A vector `y` becomes `x~ = s a`, `s = max |y_i| / 127`, `a_i` = `y_i / s`
//! rounded (in `-127..=127`); its error `|y - x~|` and `max(|y|, |x~|)` are
//! computed in float64 when it is rounded. Bank rows are packed once, 16 rows
//! side by side in every 64-byte line (four consecutive bytes of each row), so
//! one load feeds 16 rows; queries are stored as `a + 128` (`vpdpbusd`
//! multiplies unsigned by signed bytes) and the `128 sum(a)` of each row is
//! taken off the integer dot product, which is exact (`dim <= 65,536`).
//!
//! Scales are kept within `2^-40..=2^40` (or zero); a bank or a request with
//! one outside it is scanned in float32 instead, so the float32 arithmetic of
//! the scores and bounds never leaves the normal range.

use rayon::prelude::*;
use tandem_bank::Bank;

use crate::exact::{norm64, norm_up, Coef};

/// Rows side by side in a packed group (one 64-byte line per 4 dimensions).
pub(crate) const GROUP: usize = 16;
/// Queries per micro-kernel call.
pub(crate) const QUERY_GROUP: usize = 8;
/// The largest dimension whose integer dot products cannot overflow an i32.
const MAX_DIM: usize = 65_536;
/// Scales allowed (zero aside): keeps scores and bounds in float32's normal range.
const MIN_SCALE: f32 = 1.0 / (1u64 << 40) as f32;
const MAX_SCALE: f32 = (1u64 << 40) as f32;

/// Whether this CPU runs the int8 kernel (AVX-512 F/BW and VNNI).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One vector rounded to int8: `x~ = scale * codes`.
struct Rounded {
    scale: f32,
    /// `>= |y - x~|`
    err: f32,
    /// `>= |y|, |x~|`
    norm: f32,
}

/// Rounds `y` into `codes` (same length); `None` if its scale is out of range.
fn round(y: &[f64], codes: &mut [i8]) -> Option<Rounded> {
    let max = y.iter().fold(0f64, |m, v| m.max(v.abs()));
    let scale = (max / 127.0) as f32;
    if max > 0.0 && !(MIN_SCALE..=MAX_SCALE).contains(&scale) {
        return None;
    }
    // Any rounding of y / scale will do: the error is measured afterwards.
    let inv = if scale > 0.0 { 1.0 / scale as f64 } else { 0.0 };
    let mut err = 0f64;
    let mut approx = 0f64;
    for (c, &v) in codes.iter_mut().zip(y) {
        // Adding and taking off 1.5 * 2^52 rounds to the nearest integer
        // (|v / scale| <= 128), without a call to libm's `round`.
        const ROUND: f64 = 6_755_399_441_055_744.0;
        let a = ((v * inv + ROUND) - ROUND).clamp(-127.0, 127.0);
        *c = a as i8;
        let x = scale as f64 * a;
        err += (v - x) * (v - x);
        approx += x * x;
    }
    Some(Rounded {
        scale,
        err: norm_up(err.sqrt()),
        norm: norm_up(norm64(y.iter().copied()).max(approx.sqrt())),
    })
}

/// The bank, rounded and packed for the kernel.
#[derive(Debug)]
// Read only by the x86_64 kernel; elsewhere `available()` is false and it is never built.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Int8Bank {
    rows: usize,
    /// Dimension rounded up to a multiple of 4 (zero-padded), over 4.
    words: usize,
    /// Groups of [`GROUP`] rows (an even number, zero-padded): `words` lines of 64 bytes each.
    packed: Vec<u8>,
    /// Per row (padded like `packed`): scale, `128 * sum(a)`, error, norm.
    scale: Vec<f32>,
    offset: Vec<i32>,
    err: Vec<f32>,
    norm: Vec<f32>,
}

impl Int8Bank {
    /// Rounds every row of `bank` (times `inv_norms[row]` when not empty, for
    /// cosine). `None` when the kernel cannot take it: dimension over 65,536
    /// or a scale out of range.
    pub(crate) fn new(bank: &Bank, inv_norms: &[f32]) -> Option<Int8Bank> {
        let (rows, dim) = (bank.rows(), bank.dim());
        if dim > MAX_DIM {
            return None;
        }
        let words = dim.div_ceil(4);
        let groups = rows.div_ceil(GROUP).next_multiple_of(2);
        let padded = groups * GROUP;
        let line = words * 64;
        let mut packed = vec![0u8; groups * line];
        let mut scale = vec![0f32; padded];
        let mut offset = vec![0i32; padded];
        let mut err = vec![0f32; padded];
        let mut norm = vec![0f32; padded];
        let ok = packed
            .par_chunks_mut(line)
            .zip(scale.par_chunks_mut(GROUP))
            .zip(offset.par_chunks_mut(GROUP))
            .zip(err.par_chunks_mut(GROUP))
            .zip(norm.par_chunks_mut(GROUP))
            .enumerate()
            .all(|(g, ((((pack, scale), offset), err), norm))| {
                let (r0, r1) = ((g * GROUP).min(rows), ((g + 1) * GROUP).min(rows));
                let x = bank.rows_f32(r0, r1);
                let mut y = vec![0f64; dim];
                let mut codes = vec![0i8; words * 4];
                for (l, row) in x.chunks_exact(dim).enumerate() {
                    let inv = inv_norms.get(r0 + l).map_or(1.0, |&n| n as f64);
                    y.iter_mut()
                        .zip(row)
                        .for_each(|(y, &v)| *y = v as f64 * inv);
                    let Some(r) = round(&y, &mut codes[..dim]) else {
                        return false;
                    };
                    (scale[l], err[l], norm[l]) = (r.scale, r.err, r.norm);
                    offset[l] = 128 * codes.iter().map(|&c| c as i32).sum::<i32>();
                    for (w, quad) in codes.chunks_exact(4).enumerate() {
                        let at = w * 64 + l * 4;
                        for (b, &c) in pack[at..at + 4].iter_mut().zip(quad) {
                            *b = c as u8;
                        }
                    }
                }
                true
            });
        ok.then_some(Int8Bank {
            rows,
            words,
            packed,
            scale,
            offset,
            err,
            norm,
        })
    }

    /// The bound on `|y|` of every row, also `>= |x~|`: valid for the float32 scan too.
    pub(crate) fn norms(&self) -> &[f32] {
        &self.norm[..self.rows]
    }
}

/// Queries rounded and packed for the kernel.
#[derive(Debug)]
// Read only by the x86_64 kernel; elsewhere `available()` is false and it is never built.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Int8Queries {
    /// Per group of [`QUERY_GROUP`] queries (zero-padded): `words` x 8 words,
    /// the 4 bytes `a + 128` of each query side by side.
    packed: Vec<u32>,
    scale: Vec<f32>,
    coef: Vec<Coef>,
}

impl Int8Queries {
    /// Rounds the queries `q` (row-major, `dim` columns), a group of
    /// [`QUERY_GROUP`] per parallel task; `None` when a scale is out of range.
    pub(crate) fn new(q: &[f32], dim: usize) -> Option<Int8Queries> {
        let words = dim.div_ceil(4);
        let nq = q.len() / dim;
        let mut packed = vec![0x8080_8080u32; nq.div_ceil(QUERY_GROUP) * QUERY_GROUP * words];
        let rounded: Option<Vec<Vec<(f32, Coef)>>> = packed
            .par_chunks_mut(QUERY_GROUP * words)
            .zip(q.par_chunks(QUERY_GROUP * dim))
            .map(|(packed, q)| {
                let mut codes = vec![0i8; words * 4];
                let mut y = vec![0f64; dim];
                q.chunks_exact(dim)
                    .enumerate()
                    .map(|(l, row)| {
                        y.iter_mut().zip(row).for_each(|(y, &v)| *y = v as f64);
                        let r = round(&y, &mut codes[..dim])?;
                        for (w, quad) in codes.chunks_exact(4).enumerate() {
                            let byte = |j: usize| (quad[j] as u8) ^ 0x80;
                            packed[w * QUERY_GROUP + l] =
                                u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
                        }
                        Some((r.scale, Coef::new(r.norm as f64, r.err as f64, dim, 1)))
                    })
                    .collect()
            })
            .collect();
        let (scale, coef) = rounded?.into_iter().flatten().unzip();
        Some(Int8Queries {
            packed,
            scale,
            coef,
        })
    }
}

/// One unit of work for [`scan`]: queries `q0..q1` (q0 a multiple of
/// [`QUERY_GROUP`]) against bank rows `r0..r1` (r0 a multiple of 32).
// Read only by the x86_64 kernel; elsewhere `available()` is false and it is never built.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Unit<'a> {
    pub(crate) q0: usize,
    pub(crate) q1: usize,
    pub(crate) r0: usize,
    pub(crate) r1: usize,
    /// Sorted exclusion list per query of the whole request (or none).
    pub(crate) exclude: &'a [Vec<u32>],
    /// The absolute part of every bound.
    pub(crate) abs: f32,
    /// The canonical score of (query number, row), for rows tied at a floor.
    pub(crate) score: &'a (dyn Fn(usize, u32) -> f32 + Sync),
}

/// Scans one unit, offering every row to `cands` (one per query `q0..q1`).
///
/// Needs [`available`]: checked here, a panic otherwise.
pub(crate) fn scan(
    bank: &Int8Bank,
    q: &Int8Queries,
    unit: &Unit,
    cands: &mut [crate::exact::Candidates],
) {
    assert!(available(), "the int8 kernel needs AVX-512 F/BW and VNNI");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has every feature the kernel is compiled for (asserted above).
    unsafe {
        kernel::scan(bank, q, unit, cands)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bank, q, unit, cands);
        unreachable!("available() is false off x86_64");
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{Int8Bank, Int8Queries, Unit, GROUP, QUERY_GROUP};
    use crate::exact::{offer_lanes, Candidates};

    /// Rows per micro-kernel call: two groups.
    const ROWS: usize = 2 * GROUP;

    /// Integer dot products of 8 packed queries (`q`: words x 8) with 32 packed
    /// rows (`x0`, `x1`: two groups of words x 64 bytes), into `out[query][row]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn micro(q: &[u32], x0: &[u8], x1: &[u8], out: &mut [[i32; ROWS]; QUERY_GROUP]) {
        assert!(x0.len() == q.len() * 8 && x1.len() == x0.len());
        let mut acc = [[_mm512_setzero_si512(); 2]; QUERY_GROUP];
        for ((qw, l0), l1) in q
            .chunks_exact(QUERY_GROUP)
            .zip(x0.chunks_exact(64))
            .zip(x1.chunks_exact(64))
        {
            // SAFETY: l0 and l1 are 64 bytes each (chunks_exact), unaligned loads.
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_si512(l0.as_ptr().cast()),
                    _mm512_loadu_si512(l1.as_ptr().cast()),
                )
            };
            for (acc, &w) in acc.iter_mut().zip(qw) {
                let a = _mm512_set1_epi32(w as i32);
                acc[0] = _mm512_dpbusd_epi32(acc[0], a, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], a, b1);
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            for (half, v) in out.chunks_exact_mut(GROUP).zip(acc) {
                // SAFETY: half is 16 i32 = 64 bytes (chunks_exact), unaligned store.
                unsafe { _mm512_storeu_si512(half.as_mut_ptr().cast(), v) };
            }
        }
    }

    /// [`super::scan`]: for each pair of bank groups (32 rows, kept in L1),
    /// every group of 8 queries. The integer scores are scaled and bounded
    /// 16 rows at a time in vector registers and their upper ends compared
    /// with the query's floor there: the scalar path ([`offer_lanes`]) sees
    /// only the few rows that reach it. Each lane does the scalar operations
    /// of the bound's derivation (`r = ((d - o) t) s`, `beta = (a e + b n) +
    /// abs`, `r + beta`) in the same order, without fused multiply-adds, so
    /// the roundings are the ones [`crate::exact`] accounts for.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn scan(bank: &Int8Bank, q: &Int8Queries, unit: &Unit, cands: &mut [Candidates]) {
        let words = bank.words;
        let line = words * 64;
        let mut dots = [[0i32; ROWS]; QUERY_GROUP];
        let (mut r, mut beta) = ([0f32; GROUP], [0f32; GROUP]);
        let (mut ri, mut rh, mut li, mut ll) =
            ([0u32; GROUP], [0f32; GROUP], [0u32; GROUP], [0f32; GROUP]);
        let abs = _mm512_set1_ps(unit.abs);
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        debug_assert!(unit.r0.is_multiple_of(ROWS) && unit.q0.is_multiple_of(QUERY_GROUP));
        for g in (unit.r0 / GROUP..unit.r1.div_ceil(ROWS) * 2).step_by(2) {
            let x = &bank.packed[g * line..(g + 2) * line];
            let (x0, x1) = x.split_at(line);
            let row0 = g * GROUP;
            // The per-row numbers of both groups (padded to whole groups),
            // and which lanes are rows of the bank.
            let rows = row0..row0 + ROWS;
            let (scale, offset) = (&bank.scale[rows.clone()], &bank.offset[rows.clone()]);
            let (err, norm) = (&bank.err[rows.clone()], &bank.norm[rows]);
            let nr = bank.rows.saturating_sub(row0).min(ROWS);
            let load = |v: &[f32], h: usize| {
                // SAFETY: v holds ROWS = 2 * GROUP floats; unaligned load of 16.
                unsafe { _mm512_loadu_ps(v[h * GROUP..].as_ptr()) }
            };
            let (s, e, n) = (
                [load(scale, 0), load(scale, 1)],
                [load(err, 0), load(err, 1)],
                [load(norm, 0), load(norm, 1)],
            );
            // SAFETY: offset holds ROWS = 2 * GROUP i32; unaligned loads of 16.
            let o = unsafe {
                [
                    _mm512_loadu_si512(offset.as_ptr().cast()),
                    _mm512_loadu_si512(offset[GROUP..].as_ptr().cast()),
                ]
            };
            let valid = [lanes(nr), lanes(nr.saturating_sub(GROUP))];
            for qg in (unit.q0..unit.q1).step_by(QUERY_GROUP) {
                let packed = &q.packed[qg * words..(qg + QUERY_GROUP) * words];
                micro(packed, x0, x1, &mut dots);
                for (i, dots) in (qg..unit.q1.min(qg + QUERY_GROUP)).zip(&dots) {
                    let (t, c) = (_mm512_set1_ps(q.scale[i]), q.coef[i]);
                    let (a, b) = (_mm512_set1_ps(c.a), _mm512_set1_ps(c.b));
                    let cand = &mut cands[i - unit.q0];
                    let excl = unit.exclude.get(i).map_or(&[][..], |v| v.as_slice());
                    for h in 0..2 {
                        // SAFETY: dots[h * GROUP..] holds 16 i32; unaligned load.
                        let d = unsafe { _mm512_loadu_si512(dots[h * GROUP..].as_ptr().cast()) };
                        let rv = _mm512_mul_ps(
                            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(d, o[h])), t),
                            s[h],
                        );
                        let bv = _mm512_add_ps(
                            _mm512_add_ps(_mm512_mul_ps(a, e[h]), _mm512_mul_ps(b, n[h])),
                            abs,
                        );
                        // hi >= floor, or hi NaN (an overflowed bound): the row is kept.
                        let floor = _mm512_set1_ps(cand.floor());
                        let hi = _mm512_add_ps(rv, bv);
                        let reach = _mm512_mask_cmp_ps_mask::<_CMP_NLT_UQ>(valid[h], hi, floor);
                        if reach == 0 {
                            continue;
                        }
                        let row = (row0 + h * GROUP) as u32;
                        let score = |row| (unit.score)(i, row);
                        if excl.is_empty() {
                            // The rows that reach the floor, and those whose
                            // lower end beats it, packed to the front of
                            // their arrays: no branch per row.
                            let ids = _mm512_add_epi32(iota, _mm512_set1_epi32(row as i32));
                            let lo = _mm512_sub_ps(rv, bv);
                            let low = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(reach, lo, floor);
                            // Compressed in registers, then stored whole
                            // (a compress straight to memory is slow on AMD).
                            // SAFETY: each array holds 16 lanes; unaligned stores.
                            unsafe {
                                let ids_in = |m| _mm512_maskz_compress_epi32(m, ids);
                                _mm512_storeu_si512(ri.as_mut_ptr().cast(), ids_in(reach));
                                _mm512_storeu_ps(
                                    rh.as_mut_ptr(),
                                    _mm512_maskz_compress_ps(reach, hi),
                                );
                                _mm512_storeu_si512(li.as_mut_ptr().cast(), ids_in(low));
                                _mm512_storeu_ps(
                                    ll.as_mut_ptr(),
                                    _mm512_maskz_compress_ps(low, lo),
                                );
                            }
                            let (n, m) = (reach.count_ones() as usize, low.count_ones() as usize);
                            cand.take(&ri[..n], &rh[..n], &li[..m], &ll[..m], &score);
                        } else {
                            // SAFETY: r and beta hold 16 floats; unaligned stores.
                            unsafe {
                                _mm512_storeu_ps(r.as_mut_ptr(), rv);
                                _mm512_storeu_ps(beta.as_mut_ptr(), bv);
                            }
                            offer_lanes(reach as u32, &r, &beta, row, cand, excl, &score);
                        }
                    }
                }
            }
        }
    }

    /// The mask of the first `n` of 16 lanes.
    fn lanes(n: usize) -> __mmask16 {
        ((1u32 << n.min(GROUP)) - 1) as __mmask16
    }
}
