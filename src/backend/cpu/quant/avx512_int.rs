//! AVX-512 integer kernel (int8 activations, the layout of [`super::avx512::KERNELS`]).
//!
//! Activation layout `B = 16`. With VNNI, codes are multiplied as unsigned bytes
//! (`u = q + 8` for int4, `u = q ^ 0x80 = q + 128` for int8) against the signed activations by
//! `vpdpbusd`, two blocks per 512-bit instruction (a lone block uses the lower half); each
//! group's accumulator starts at `-8 * xsum` or `-128 * xsum` in one lane, so its lanes add up to
//! the exact sum of `q * x`. Without VNNI the AVX2 integer kernel runs (same layout). The exact
//! (wrapping) i32 group sums are then converted and multiply-added to the rows' f32 totals.

// AVX-512 intrinsics and `target_feature` names are stable since Rust 1.89 (see `avx512.rs`).

use std::arch::x86_64::*;

use super::avx2::{add_scaled_sums, store_totals};
use super::avx512::prefetch_at;
use super::blocks::{check_tile, tail_block, Geometry, BLOCK};
use super::{scalar, RowArgs, ROW_TILE, TOKEN_TILE};
use crate::quant::weights::INT4_TABLE;
use crate::quant::CodeKind;

/// Code kinds of the integer path.
const INT_INT4: u8 = 0;
const INT_INT8: u8 = 1;

/// int8-activation kernel (see [`super::IntKernel`]): VNNI when the CPU has it, else the AVX2
/// kernel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub(super) unsafe fn dot_int8(
    rows: &[RowArgs<'_>],
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    // Both checks read a cached flag.
    if is_x86_feature_detected!("avx512vnni") {
        // SAFETY: VNNI was just detected, the other features are this function's contract.
        unsafe { dot_int8_vnni(rows, xs, xsums, out) }
    } else if super::avx2::supported() {
        // SAFETY: AVX2/FMA/F16C were just detected; the layouts agree (checked at compile time).
        unsafe { super::avx2::dot_int8(rows, xs, xsums, out) }
    } else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        unsafe { scalar::dot_int8(rows, xs, xsums, out) }
    }
}

/// The VNNI integer kernel: up to [`ROW_TILE`] weight rows at a time, like the float path.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn dot_int8_vnni(rows: &[RowArgs<'_>], xs: &[&[i8]], xsums: &[&[i32]], out: &mut [f32]) {
    let Some(first) = rows.first() else {
        return;
    };
    let kind = match first.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => INT_INT4,
        CodeKind::Int8 => INT_INT8,
        // No scheme pairs other tables or FP8 with int8 activations; the portable kernel (no
        // requirements beyond the slice sizes) keeps them correct anyway.
        // SAFETY: see above.
        _ => return unsafe { scalar::dot_int8(rows, xs, xsums, out) },
    };
    assert!(
        rows.iter().all(|r| {
            (std::ptr::eq(r.kind, first.kind) || r.kind == first.kind)
                && r.k == first.k
                && r.group_size == first.group_size
        }),
        "quantized kernel: {} weight rows of different shapes",
        rows.len()
    );
    let step = if kind == INT_INT4 { BLOCK / 2 } else { BLOCK };
    let shortest = rows.iter().min_by_key(|r| r.codes.len()).unwrap_or(first);
    let Some(geometry) = Geometry::new(shortest, step) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_int8(rows, xs, xsums, out) };
    };
    let tokens = xs.len();
    assert!(
        tokens <= TOKEN_TILE,
        "quantized kernel: {tokens} activation rows"
    );
    check_tile(
        xs,
        xsums.len().min(out.len() / rows.len()),
        geometry.values(),
    );
    // Weight rows per inner call, so accumulators stay within 32 registers.
    let most = match tokens {
        1 | 2 => ROW_TILE,
        3 | 4 => 2,
        _ => 1,
    };
    let mut done = 0;
    while done < rows.len() {
        let n = match most.min(rows.len() - done) {
            3 => 2,
            n => n,
        };
        let (rows, out) = (&rows[done..done + n], &mut out[done * tokens..]);
        // SAFETY: the CPU features are this function's contract; `check_tile` verified the sizes.
        unsafe {
            if kind == INT_INT4 {
                int_tile::<INT_INT4>(rows, &geometry, xs, xsums, out)
            } else {
                int_tile::<INT_INT8>(rows, &geometry, xs, xsums, out)
            }
        }
        done += n;
    }
}

/// Dispatches 1, 2 or 4 weight rows and 1..=8 activation rows to a monomorphized kernel.
///
/// # Safety
/// As [`int_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn int_tile<const KIND: u8>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    macro_rules! tiles {
        ($(($w:literal, $t:literal))*) => {
            match (rows.len(), xs.len()) {
                $(($w, $t) => int_rows::<KIND, $w, $t>(rows, geometry, xs, xsums, out),)*
                _ => unreachable!("quantized kernel: no tile of {} x {}", rows.len(), xs.len()),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe {
        tiles! {
            (1, 1) (1, 2) (1, 3) (1, 4) (1, 5) (1, 6) (1, 7) (1, 8)
            (2, 1) (2, 2) (2, 3) (2, 4) (4, 1) (4, 2)
        }
    }
}

/// The VNNI integer path for `W` weight rows and `T` activation rows: pairs of blocks use whole
/// 512-bit registers, a lone block (odd count in a group, or the row's tail) their lower half.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI; `rows` holds `W` rows whose codes cover `geometry`, `xs` `T` rows of at
/// least `geometry.values()` values, `xsums` `T` rows of one sum per group, `out` at least
/// `W * T` entries.
// Out of line: one call per tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn int_rows<const KIND: u8, const W: usize, const T: usize>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    let step = if KIND == INT_INT4 { BLOCK / 2 } else { BLOCK };
    // Codes are multiplied as `q + offset`.
    let offset: i32 = if KIND == INT_INT4 { 8 } else { 128 };
    let codes: [&[u8]; W] = std::array::from_fn(|w| rows[w].codes);
    let x: [*const i8; T] = std::array::from_fn(|t| xs[t].as_ptr());
    let sums: [&[i32]; T] = std::array::from_fn(|t| xsums[t]);
    let mut totals = [[_mm_setzero_ps(); 2]; W];
    for (g, blocks) in geometry.groups().enumerate() {
        let full_end = blocks.end.min(geometry.full_blocks);
        // Lane 0 starts at `-offset * xsum`, so the lanes add up to the exact sum.
        let corrections: [__m512i; T] = std::array::from_fn(|t| {
            let correction = offset.wrapping_mul(sums[t][g]).wrapping_neg();
            _mm512_zextsi128_si512(_mm_cvtsi32_si128(correction))
        });
        let mut acc = [corrections; W];
        let mut b = blocks.start;
        // SAFETY (all loads below): a block `b < full_blocks` has its `step` bytes inside every
        // row's codes, the tail block is read from a 32-byte buffer; a pair reads `2 * step` code
        // bytes and 64 activations of two whole blocks, a lone block `step` bytes and 32
        // activations, all below `geometry.values()`.
        while b + 2 <= full_end {
            let unsigned: [__m512i; W] = std::array::from_fn(|w| {
                prefetch_at(codes[w].as_ptr().wrapping_add(b * step));
                unsafe { pair_codes::<KIND>(codes[w].as_ptr().add(b * step)) }
            });
            for (t, &xt) in x.iter().enumerate() {
                let activations = unsafe { _mm512_loadu_si512(xt.add(b * BLOCK).cast()) };
                for (a, &u) in acc.iter_mut().zip(&unsigned) {
                    a[t] = _mm512_dpbusd_epi32(a[t], u, activations);
                }
            }
            b += 2;
        }
        while b < blocks.end {
            let unsigned: [__m512i; W] = std::array::from_fn(|w| {
                let tail;
                let block = if b < full_end {
                    unsafe { codes[w].as_ptr().add(b * step) }
                } else {
                    tail = tail_block(codes[w], b * step);
                    tail.as_ptr()
                };
                _mm512_zextsi256_si512(unsafe { block_codes::<KIND>(block) })
            });
            for (t, &xt) in x.iter().enumerate() {
                let activations = unsafe { _mm256_loadu_si256(xt.add(b * BLOCK).cast()) };
                let activations = _mm512_zextsi256_si512(activations);
                for (a, &u) in acc.iter_mut().zip(&unsigned) {
                    a[t] = _mm512_dpbusd_epi32(a[t], u, activations);
                }
            }
            b += 1;
        }
        for ((totals, acc), row) in totals.iter_mut().zip(&acc).zip(rows) {
            let mut folded = [_mm_setzero_si128(); 8];
            for (f, &a) in folded.iter_mut().zip(acc) {
                let half =
                    _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
                *f = _mm_add_epi32(
                    _mm256_castsi256_si128(half),
                    _mm256_extracti128_si256::<1>(half),
                );
            }
            add_scaled_sums(&folded, T, row.scales[g], totals);
        }
    }
    for (w, totals) in totals.iter().enumerate() {
        store_totals(totals, &mut out[w * T..(w + 1) * T]);
    }
}

/// The offset-coded unsigned codes of one block, in activation-layout order.
///
/// # Safety
/// AVX2 (implied by the enabled features); `codes` points to the block's bytes (16 for int4, 32
/// for int8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn block_codes<const KIND: u8>(codes: *const u8) -> __m256i {
    if KIND == INT_INT4 {
        // SAFETY: the block's 16 bytes, in both halves; the upper half is shifted by a nibble.
        let bytes = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(codes.cast()) });
        let shifted = _mm256_srlv_epi64(bytes, _mm256_setr_epi64x(0, 0, 4, 4));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    } else {
        // SAFETY: the block's 32 bytes.
        let bytes = unsafe { _mm256_loadu_si256(codes.cast()) };
        _mm256_xor_si256(bytes, _mm256_set1_epi8(i8::MIN))
    }
}

/// The offset-coded unsigned codes of two consecutive blocks.
///
/// # Safety
/// AVX-512 F/BW; `codes` points to the two blocks' bytes (32 for int4, 64 for int8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn pair_codes<const KIND: u8>(codes: *const u8) -> __m512i {
    if KIND == INT_INT4 {
        // SAFETY: the two blocks' 32 bytes. 128-bit lanes: block 0's bytes twice, then block 1's
        // twice; the second copy of each is shifted by a nibble.
        let bytes = _mm512_castsi256_si512(unsafe { _mm256_loadu_si256(codes.cast()) });
        let lanes = _mm512_shuffle_i64x2::<0b01_01_00_00>(bytes, bytes);
        let shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
        _mm512_and_si512(_mm512_srlv_epi64(lanes, shifts), _mm512_set1_epi8(0x0F))
    } else {
        // SAFETY: the two blocks' 64 bytes.
        let bytes = unsafe { _mm512_loadu_si512(codes.cast()) };
        _mm512_xor_si512(bytes, _mm512_set1_epi8(i8::MIN))
    }
}
