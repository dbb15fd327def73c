//! AVX-512 VNNI kernel for int4 weights against float activations in limbs ([`Limbs`]): one
//! 64-byte line of codes (128 values) per chunk, its low and high nibbles split with one shift
//! and two ANDs, and six `vpdpbusd` (unsigned codes times signed limb bytes, 64 products each)
//! into three integer accumulators, which make the chunk's exact `sum code * X` per 32-bit
//! lane; less the offset of the int4 code (`8 sum X`), converted once and scaled by the
//! weight's group scale times the chunk's activation step. Measured against the table loop of
//! `avx512.rs` (`benches/int4_decode.rs`): 0.65x the time per line.
//!
//! Up to four weight rows at a time (the streams of the dispatcher), each line prefetched
//! [`STREAM_PREFETCH_CHUNKS`](super::avx512) ahead as the float path does.
// AVX-512 intrinsics and `target_feature` names are stable since Rust 1.89 (see `avx512.rs`).

use std::arch::x86_64::*;

use super::avx512::{prefetch_ahead_base, prefetch_line};
use super::limbs::{step_for, Limbs, CHUNK, CHUNK_BYTES, LIMB_RANGE};
use super::{KernelSet, QuantIsa, RowArgs, ROW_TILE};
use crate::quant::weights::INT4_TABLE;
use crate::quant::CodeKind;

/// The AVX-512 set with this kernel for int4 weights against one token.
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Avx512Vnni,
    dot_limbs: Some(dot_limbs),
    ..super::avx512::KERNELS
};

/// Whether the CPU runs this kernel (AVX-512 F/BW/VL, FMA, VNNI).
pub fn supported() -> bool {
    super::avx512::supported() && is_x86_feature_detected!("avx512vnni")
}

/// Whether rows of `kind` with `k` features and groups of `group_size` can use this kernel:
/// offset-coded int4 stored low nibble first, `k` a multiple of 32 (a short last chunk is read
/// with a masked load), groups of whole chunks or one group per row.
pub fn fits(kind: &CodeKind, k: usize, group_size: usize) -> bool {
    matches!(
        kind,
        CodeKind::Nibble { table, high_first: false } if *table == INT4_TABLE
    ) && k > 0
        && k.is_multiple_of(32)
        && (group_size >= k || group_size.is_multiple_of(CHUNK))
}

/// `x` (a multiple of [`CHUNK`] values) in limbs, as [`Limbs::new`] makes them (quantized
/// values rounded half to even instead of half away from zero), vectorized: it runs once per
/// product before the threads start, so its time is not shared.
pub fn split(x: &[f32]) -> Limbs {
    assert!(supported(), "limbs: AVX-512 VNNI is not available");
    // SAFETY: the features were just checked.
    unsafe { split_avx512(x) }
}

/// [`split`].
///
/// # Safety
/// AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn split_avx512(x: &[f32]) -> Limbs {
    let mut limbs = Limbs::zeroed(x.len());
    let chunks = x.len() / CHUNK;
    let range = LIMB_RANGE as i32;
    let (low, high) = (_mm512_set1_epi32(-range), _mm512_set1_epi32(range));
    let (bias, byte) = (_mm512_set1_epi32(128), _mm512_set1_epi32(255));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    // A balanced byte: ((v + 128) & 255) - 128.
    let digit =
        |v: __m512i| _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(v, bias), byte), bias);
    for c in 0..chunks {
        // SAFETY: chunk `c` holds 128 values.
        let v: [__m512; 8] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_ps(x.as_ptr().add(c * CHUNK + 16 * j)) });
        let largest = _mm512_reduce_max_ps(v.iter().fold(_mm512_setzero_ps(), |m, &v| {
            _mm512_max_ps(m, _mm512_abs_ps(v))
        }));
        let step = step_for(largest);
        limbs.scales[c] = step;
        let inverse = _mm512_set1_ps(1.0 / step);
        let q: [__m512i; 8] = std::array::from_fn(|j| {
            let rounded = _mm512_cvtps_epi32(_mm512_mul_ps(v[j], inverse));
            _mm512_min_epi32(_mm512_max_epi32(rounded, low), high)
        });
        for (j, q) in q.iter().enumerate() {
            limbs.offsets[c * 16 + 2 * j] = 8 * _mm512_mask_reduce_add_epi32(0x00FF, *q);
            limbs.offsets[c * 16 + 2 * j + 1] = 8 * _mm512_mask_reduce_add_epi32(0xFF00, *q);
        }
        let bytes = &mut limbs.bytes[c * CHUNK_BYTES..][..CHUNK_BYTES];
        for k in 0..4 {
            // Values 32k + 2i and 32k + 2i + 1, i = 0..16: bytes 16k + i of each half.
            let (a, b) = (q[2 * k], q[2 * k + 1]);
            for (half, pick) in [even, odd].into_iter().enumerate() {
                let values = _mm512_permutex2var_epi32(a, pick, b);
                let l = digit(values);
                let rest = _mm512_srai_epi32::<8>(_mm512_sub_epi32(values, l));
                let m = digit(rest);
                let h = _mm512_srai_epi32::<8>(_mm512_sub_epi32(rest, m));
                for (limb, d) in [l, m, h].into_iter().enumerate() {
                    let at = limb * CHUNK + half * 64 + 16 * k;
                    // SAFETY: 16 bytes at `at < CHUNK_BYTES - 15` of the chunk's bytes.
                    unsafe {
                        _mm_storeu_si128(bytes.as_mut_ptr().add(at).cast(), _mm512_cvtepi32_epi8(d))
                    };
                }
            }
        }
    }
    limbs
}

/// `out[r] = sum_g scales[g] * sum_{i in g} v(code_i) x_i` for each row of `rows`, with `x` in
/// `limbs` (one token).
///
/// # Safety
/// The CPU must pass [`supported`]; every row must pass [`fits`] with the same `k` and group
/// size and hold `k / 2` bytes of codes and one scale per group; `limbs` must hold `k` values
/// padded with zeros to whole chunks; `out` one value per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
pub unsafe fn dot_limbs(rows: &[RowArgs<'_>], limbs: &Limbs, out: &mut [f32]) {
    let Some(first) = rows.first() else {
        return;
    };
    let (k, group_size) = (first.k, first.group_size);
    let chunks = k.div_ceil(CHUNK);
    // Code bytes of the last chunk (64 unless it is short).
    let tail_bytes = (k - (chunks - 1) * CHUNK) / 2;
    let group_chunks = if group_size >= k {
        chunks
    } else {
        group_size / CHUNK
    };
    let groups = chunks.div_ceil(group_chunks);
    assert!(
        rows.iter().all(|r| r.k == k
            && r.group_size == group_size
            && r.codes.len() >= k / 2
            && r.scales.len() >= groups)
            && limbs.scales.len() >= chunks
            && out.len() >= rows.len(),
        "limb kernel: rows, activations or outputs of the wrong size"
    );
    let mut done = 0;
    while done < rows.len() {
        let n = match (rows.len() - done).min(ROW_TILE) {
            3 => 2,
            n => n,
        };
        let tile = &rows[done..done + n];
        let ahead: [*const u8; ROW_TILE] =
            std::array::from_fn(|r| prefetch_ahead_base(rows, done + r.min(n - 1)));
        let out = &mut out[done..done + n];
        // SAFETY: the sizes were checked above; the CPU features are this function's contract.
        unsafe {
            match n {
                1 => limb_rows::<1>(tile, &ahead, limbs, [chunks, group_chunks, tail_bytes], out),
                2 => limb_rows::<2>(tile, &ahead, limbs, [chunks, group_chunks, tail_bytes], out),
                _ => limb_rows::<4>(tile, &ahead, limbs, [chunks, group_chunks, tail_bytes], out),
            }
        }
        done += n;
    }
}

/// `R` rows of [`dot_limbs`].
///
/// # Safety
/// As [`dot_limbs`], for exactly `R` rows.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn limb_rows<const R: usize>(
    rows: &[RowArgs<'_>],
    ahead: &[*const u8; ROW_TILE],
    limbs: &Limbs,
    [chunks, group_chunks, tail_bytes]: [usize; 3],
    out: &mut [f32],
) {
    // The bytes of a short last chunk; the rest of its line may lie past the row's codes.
    let tail_mask: __mmask64 = if tail_bytes >= 64 {
        !0
    } else {
        (1u64 << tail_bytes) - 1
    };
    let codes: [*const u8; R] = std::array::from_fn(|r| rows[r].codes.as_ptr());
    let scales: [*const f32; R] = std::array::from_fn(|r| rows[r].scales.as_ptr());
    let nibble = _mm512_set1_epi8(0x0F);
    let mut totals = [_mm512_setzero_ps(); R];
    for c in 0..chunks {
        // SAFETY: chunk `c < chunks` of the limbs, offsets and steps exists (caller).
        let (x, offset, step) = unsafe {
            let base = limbs.bytes.as_ptr().add(c * CHUNK_BYTES);
            let x: [__m512i; 6] =
                std::array::from_fn(|i| _mm512_loadu_si512(base.add(64 * i).cast()));
            (
                x,
                _mm512_loadu_si512(limbs.offsets.as_ptr().add(16 * c).cast()),
                *limbs.scales.get_unchecked(c),
            )
        };
        let group = c / group_chunks;
        for r in 0..R {
            prefetch_line(ahead[r].wrapping_add(c * 64));
            // SAFETY: a row holds `k / 2` bytes of codes, all whole chunks but a short last one,
            // read with a mask (masked-out bytes are not accessed), and a scale per group
            // (caller).
            let (w, scale) = unsafe {
                let at = codes[r].add(c * 64);
                (
                    if c + 1 == chunks {
                        _mm512_maskz_loadu_epi8(tail_mask, at.cast())
                    } else {
                        _mm512_loadu_si512(at.cast())
                    },
                    *scales[r].add(group),
                )
            };
            let low = _mm512_and_si512(w, nibble);
            let high = _mm512_and_si512(_mm512_srli_epi16::<4>(w), nibble);
            let zero = _mm512_setzero_si512();
            let l = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, low, x[0]), high, x[1]);
            let m = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, low, x[2]), high, x[3]);
            let h = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, low, x[4]), high, x[5]);
            // sum code X per lane (at most 8 x 15 x 2^23 < 2^31), less 8 sum X.
            let sum = _mm512_add_epi32(
                _mm512_add_epi32(_mm512_slli_epi32::<16>(h), _mm512_slli_epi32::<8>(m)),
                l,
            );
            let sum = _mm512_sub_epi32(sum, offset);
            totals[r] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(sum),
                _mm512_set1_ps(scale * step),
                totals[r],
            );
        }
    }
    for (o, t) in out.iter_mut().zip(&totals) {
        *o = _mm512_reduce_add_ps(*t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sampling::Rng;

    #[test]
    fn the_vectorized_split_matches_the_reference_but_for_ties() {
        if !supported() {
            eprintln!("skipped: no AVX-512 VNNI");
            return;
        }
        let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
        let mut next = || rng.next_f64() * 2.0 - 1.0;
        let mut x: Vec<f32> = (0..6 * CHUNK).map(|_| next() as f32 * 3.0).collect();
        x[CHUNK + 3] = 1e4;
        x[2 * CHUNK..3 * CHUNK].fill(0.0);
        let (fast, reference) = (split(&x), Limbs::new(&x));
        assert_eq!(fast.scales, reference.scales);
        for c in 0..6 {
            for i in 0..CHUNK {
                let (a, b) = (fast.value(c, i), reference.value(c, i));
                assert!((a - b).abs() <= 1, "chunk {c} value {i}: {a} against {b}");
            }
            for d in 0..16 {
                let sum: i32 = (8 * d..8 * d + 8).map(|i| fast.value(c, i)).sum();
                assert_eq!(fast.offsets[c * 16 + d], 8 * sum);
            }
        }
    }
}
