//! AVX2 + FMA + F16C kernels.
//!
//! A row is walked in blocks of 32 values, the padding unit of activation rows, so a scale group
//! (a multiple of 32 values, or the whole row) always starts on a block boundary. One decoded
//! block is multiplied against every activation row of the tile while it sits in registers; the
//! row count is a const generic so the accumulators stay in registers too. Code bytes are
//! prefetched a fixed distance ahead, into the next row's, so one thread streaming weights from
//! DRAM keeps enough misses in flight.
//!
//! Float path (activation layout `B = 8` for nibble codes):
//! - nibble codes: a block is 16 code bytes, two chunks of 8; each chunk widens to eight 32-bit
//!   lanes whose low nibbles pair with the chunk's first 8 activations and whose high nibbles
//!   pair with the next 8. Values come out already multiplied by the group's scale, so products
//!   accumulate across groups with no per-group reduction: int4 codes as `u * s + (-8 * s)` (one
//!   FMA), other tables through the 16 scaled entries, looked up with two 8-entry permutes and a
//!   blend on bit 3 of the index.
//! - int8 codes: 32 bytes per block, sign-extended and converted.
//! - FP8 E4M3 codes: 32 bytes per block; byte `b` becomes the f16 with bits
//!   `((b & 0x80) << 8) | ((b & 0x7F) << 7)`, which is exactly `e4m3(b) / 256` for every finite
//!   code, and converts with F16C; the factor 256 is folded into the group scale.
//! - byte codes are summed per group, then scaled.
//!
//! Integer path (int8 activations, activation layout `B = 16` for nibble codes): a block of
//! int4 codes (16 bytes) becomes 32 unsigned bytes `u = q + 8` (low nibbles, then high nibbles),
//! multiplied with `maddubs` (an i16 holds at most `2 * 15 * 128`, so it never saturates); each
//! group's accumulator starts at `-8 * xsum` in one lane, so its lanes add up to the exact sum of
//! `q * x`. int8 codes sign-extend to i16 and multiply with `madd`. The exact (wrapping) i32 group
//! sums of four rows at a time are then converted and multiply-added to the rows' f32 totals.
//!
//! A row's last block may lie partly past the end of `codes`; it is copied into a zeroed buffer
//! first. Its padding activations are zero and every padding code decodes to a finite value.

use std::arch::x86_64::*;

use super::blocks::{check_tile, tail_block, Geometry, BLOCK};
use super::{scalar, KernelSet, NibbleLayout, QuantIsa, RowArgs, TOKEN_TILE};
use crate::quant::weights::INT4_TABLE;
use crate::quant::CodeKind;

/// Whether this CPU runs these kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel set.
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Avx2,
    row_tile: 1,
    float_layout: NibbleLayout::Bytes(8),
    int_layout: NibbleLayout::Bytes(16),
    dot_float,
    dot_int8,
    dot_limbs: None,
};

/// Multiplier from the f16 image of an E4M3 code to its value (2^(15 - 7), the bias difference).
pub(super) const FP8_F16_FACTOR: f32 = 256.0;

/// Bits of `sign_extended_byte << 7` that form the f16 image of an E4M3 byte: the sign (bit 15)
/// and the seven exponent and mantissa bits (13..7); bit 14 is a copy of the sign.
pub(super) const FP8_F16_MASK: i16 = 0xBF80_u16 as i16;

/// How far ahead of the block being decoded code bytes are prefetched. Past the end of a row's
/// codes this reaches into the next row's (the dispatcher's rows are contiguous): one thread
/// decoding from DRAM otherwise keeps too few cache misses in flight to use the bandwidth.
pub(super) const PREFETCH_DISTANCE: usize = 8192;

/// Prefetches the code bytes `PREFETCH_DISTANCE` past `offset` in `codes`.
#[inline(always)]
pub(super) fn prefetch(codes: &[u8], offset: usize) {
    // The address may lie past the slice, hence `wrapping_add`; a prefetch reads nothing and
    // never faults.
    let ahead = codes.as_ptr().wrapping_add(offset + PREFETCH_DISTANCE);
    // SAFETY: a prefetch hint has no effect on the program's memory.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.cast()) }
}

/// Code kinds of the float path, as const-generic parameters.
const INT4: u8 = 0;
const TABLE: u8 = 1;
const INT8: u8 = 2;
const FP8: u8 = 3;

/// Code bytes per block of `kind`.
const fn block_bytes(kind: u8) -> usize {
    match kind {
        INT8 | FP8 => BLOCK,
        _ => BLOCK / 2,
    }
}

/// Float-activation kernel (see [`super::FloatKernel`]): one weight row after the other.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float(rows: &[RowArgs<'_>], xs: &[&[f32]], out: &mut [f32]) {
    for (row, out) in rows.iter().zip(out.chunks_mut(xs.len())) {
        // SAFETY: forwarded contract.
        unsafe { dot_float_row(row, xs, out) };
    }
}

/// The float path for one weight row.
///
/// # Safety
/// As [`dot_float`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float_row(row: &RowArgs<'_>, xs: &[&[f32]], out: &mut [f32]) {
    let (kind, table) = match row.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => (INT4, table),
        CodeKind::Nibble { table, .. } => (TABLE, table),
        CodeKind::Int8 => (INT8, &INT4_TABLE),
        CodeKind::Fp8 => (FP8, &INT4_TABLE),
    };
    let Some(geometry) = Geometry::new(row, block_bytes(kind)) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_float(std::slice::from_ref(row), xs, out) };
    };
    check_tile(xs, out.len(), geometry.values());
    for (xs, out) in xs.chunks(TOKEN_TILE).zip(out.chunks_mut(TOKEN_TILE)) {
        // SAFETY: the CPU features are this function's contract; `check_tile` verified that every
        // activation row holds `geometry.values()` values.
        unsafe {
            match kind {
                INT4 => float_tile::<INT4>(row, &geometry, table, xs, out),
                TABLE => float_tile::<TABLE>(row, &geometry, table, xs, out),
                INT8 => float_tile::<INT8>(row, &geometry, table, xs, out),
                _ => float_tile::<FP8>(row, &geometry, table, xs, out),
            }
        }
    }
}

/// Dispatches a tile of 1..=8 activation rows to its monomorphized kernel; the second constant
/// is the number of accumulators per row, enough independent FMA chains to hide their latency
/// within 16 registers.
///
/// # Safety
/// As [`float_rows`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_tile<const KIND: u8>(
    row: &RowArgs<'_>,
    geometry: &Geometry,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match xs.len() {
            1 => float_rows::<KIND, 1, 8>(row, geometry, table, xs, out),
            2 => float_rows::<KIND, 2, 4>(row, geometry, table, xs, out),
            3 => float_rows::<KIND, 3, 2>(row, geometry, table, xs, out),
            4 => float_rows::<KIND, 4, 2>(row, geometry, table, xs, out),
            5 => float_rows::<KIND, 5, 2>(row, geometry, table, xs, out),
            6 => float_rows::<KIND, 6, 2>(row, geometry, table, xs, out),
            7 => float_rows::<KIND, 7, 1>(row, geometry, table, xs, out),
            8 => float_rows::<KIND, 8, 1>(row, geometry, table, xs, out),
            _ => {}
        }
    }
}

/// The float path for `R` activation rows with `A` accumulators each.
///
/// # Safety
/// AVX2, FMA and F16C; `xs` has `R` rows of at least `geometry.values()` values, `out` at least
/// `R` entries.
// Out of line: one call per weight row and tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<const KIND: u8, const R: usize, const A: usize>(
    row: &RowArgs<'_>,
    geometry: &Geometry,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let step = block_bytes(KIND);
    let codes = row.codes;
    let x: [*const f32; R] = std::array::from_fn(|r| xs[r].as_ptr());
    // SAFETY: `table` holds 16 floats.
    let lut = unsafe {
        [
            _mm256_loadu_ps(table.as_ptr()),
            _mm256_loadu_ps(table.as_ptr().add(8)),
        ]
    };
    // Nibble codes decode through a table that already holds the group's scale, so products
    // accumulate across groups; byte codes sum each group, then scale it.
    let nibbles = KIND == INT4 || KIND == TABLE;
    let factor = if KIND == FP8 { FP8_F16_FACTOR } else { 1.0 };
    let mut acc = [[_mm256_setzero_ps(); A]; R];
    let mut totals = [_mm256_setzero_ps(); R];
    for (blocks, &scale) in geometry.groups().zip(row.scales) {
        let lut = group_lut::<KIND>(&lut, scale);
        if !nibbles {
            acc = [[_mm256_setzero_ps(); A]; R];
        }
        let full_end = blocks.end.min(geometry.full_blocks);
        let mut b = blocks.start;
        // SAFETY (all loads below): a block `b < full_blocks` has its `step` bytes inside `codes`;
        // the tail block is read from a 32-byte buffer; activation offsets stay below
        // `blocks * BLOCK`, which every row holds (caller).
        while b + 2 <= full_end {
            prefetch(codes, b * step);
            unsafe {
                let values = decode::<KIND>(codes.as_ptr().add(b * step), &lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
                let values = decode::<KIND>(codes.as_ptr().add((b + 1) * step), &lut);
                accumulate(&mut acc, &values, &x, (b + 1) * BLOCK, 1);
            }
            b += 2;
        }
        if b < full_end {
            unsafe {
                let values = decode::<KIND>(codes.as_ptr().add(b * step), &lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
            }
            b += 1;
        }
        if b < blocks.end {
            let tail = tail_block(codes, b * step);
            unsafe {
                let values = decode::<KIND>(tail.as_ptr(), &lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
            }
        }
        if !nibbles {
            let scale = _mm256_set1_ps(scale * factor);
            for (total, partial) in totals.iter_mut().zip(&acc) {
                *total = _mm256_fmadd_ps(sum_ps(partial), scale, *total);
            }
        }
    }
    if nibbles {
        for (total, partial) in totals.iter_mut().zip(&acc) {
            *total = sum_ps(partial);
        }
    }
    for (o, &total) in out.iter_mut().zip(&totals) {
        *o = hsum_ps(total);
    }
}

/// Lane-wise sum of accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_ps<const A: usize>(partial: &[__m256; A]) -> __m256 {
    partial[1..]
        .iter()
        .fold(partial[0], |s, &v| _mm256_add_ps(s, v))
}

/// What [`decode`] needs for one group: for int4, the scale and `-8 * scale`; for other
/// tables, the table times the scale (halves 0..8 and 8..16); byte codes use neither.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_lut<const KIND: u8>(table: &[__m256; 2], scale: f32) -> [__m256; 2] {
    match KIND {
        INT4 => [_mm256_set1_ps(scale), _mm256_set1_ps(-8.0 * scale)],
        TABLE => {
            let scale = _mm256_set1_ps(scale);
            [
                _mm256_mul_ps(table[0], scale),
                _mm256_mul_ps(table[1], scale),
            ]
        }
        _ => *table,
    }
}

/// Adds one decoded block times each activation row into the accumulators; `half` (0 or 1)
/// picks the accumulators of the even or odd block of a pair when there are more than four.
///
/// # Safety
/// AVX2 and FMA; every `x[r]` is readable for `offset + 32` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate<const R: usize, const A: usize>(
    acc: &mut [[__m256; A]; R],
    values: &[__m256; 4],
    x: &[*const f32; R],
    offset: usize,
    half: usize,
) {
    for (j, &v) in values.iter().enumerate() {
        let slot = (half * values.len() + j) % A;
        for (a, &xr) in acc.iter_mut().zip(x) {
            // SAFETY: the caller's bound on `offset`.
            let activations = unsafe { _mm256_loadu_ps(xr.add(offset + 8 * j)) };
            a[slot] = _mm256_fmadd_ps(v, activations, a[slot]);
        }
    }
}

/// The 32 values of one block in activation-layout order (see the module documentation); nibble
/// values come scaled, through the group's `lut` (see [`group_lut`]).
///
/// # Safety
/// AVX2 and F16C; `codes` points to `block_bytes(KIND)` readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode<const KIND: u8>(codes: *const u8, lut: &[__m256; 2]) -> [__m256; 4] {
    let mut values = [_mm256_setzero_ps(); 4];
    if KIND == INT8 || KIND == FP8 {
        for (j, v) in values.iter_mut().enumerate() {
            // SAFETY: 8 of the block's 32 bytes.
            let bytes = unsafe { _mm_loadl_epi64(codes.add(8 * j).cast()) };
            *v = if KIND == INT8 {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
            } else {
                let bits = _mm_slli_epi16::<7>(_mm_cvtepi8_epi16(bytes));
                _mm256_cvtph_ps(_mm_and_si128(bits, _mm_set1_epi16(FP8_F16_MASK)))
            };
        }
    } else {
        for (chunk, pair) in values.chunks_exact_mut(2).enumerate() {
            // SAFETY: 8 of the block's 16 bytes.
            let bytes = unsafe { _mm_loadl_epi64(codes.add(8 * chunk).cast()) };
            let wide = _mm256_cvtepu8_epi32(bytes);
            pair[0] = nibble_values::<KIND>(wide, lut);
            pair[1] = nibble_values::<KIND>(_mm256_srli_epi32::<4>(wide), lut);
        }
    }
    values
}

/// Scaled values of the nibbles in the low 4 bits of each lane (higher bits are ignored).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibble_values<const KIND: u8>(index: __m256i, lut: &[__m256; 2]) -> __m256 {
    if KIND == INT4 {
        let u = _mm256_and_si256(index, _mm256_set1_epi32(0xF));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), lut[0], lut[1])
    } else {
        // The permutes read bits 0..3 of each lane; the blend takes bit 3 as its sign.
        let low = _mm256_permutevar8x32_ps(lut[0], index);
        let high = _mm256_permutevar8x32_ps(lut[1], index);
        let upper = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(index));
        _mm256_blendv_ps(low, high, upper)
    }
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Code kinds of the integer path.
const INT_INT4: u8 = 0;
const INT_INT8: u8 = 1;

/// int8-activation kernel (see [`super::IntKernel`]): one weight row after the other; the
/// AVX-512 set uses it too where VNNI is missing.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_int8(
    rows: &[RowArgs<'_>],
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    for (row, out) in rows.iter().zip(out.chunks_mut(xs.len())) {
        // SAFETY: forwarded contract.
        unsafe { dot_int8_row(row, xs, xsums, out) };
    }
}

/// The integer path for one weight row.
///
/// # Safety
/// As [`dot_int8`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_int8_row(row: &RowArgs<'_>, xs: &[&[i8]], xsums: &[&[i32]], out: &mut [f32]) {
    let kind = match row.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => INT_INT4,
        CodeKind::Int8 => INT_INT8,
        // No scheme pairs other tables or FP8 with int8 activations; the portable kernel (no
        // requirements beyond the slice sizes) keeps them correct anyway.
        // SAFETY: see above.
        _ => return unsafe { scalar::dot_int8(std::slice::from_ref(row), xs, xsums, out) },
    };
    let step = if kind == INT_INT4 { BLOCK / 2 } else { BLOCK };
    let Some(geometry) = Geometry::new(row, step) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_int8(std::slice::from_ref(row), xs, xsums, out) };
    };
    check_tile(xs, out.len().min(xsums.len()), geometry.values());
    let tiles = xs
        .chunks(TOKEN_TILE)
        .zip(xsums.chunks(TOKEN_TILE))
        .zip(out.chunks_mut(TOKEN_TILE));
    for ((xs, xsums), out) in tiles {
        // SAFETY: the CPU features are this function's contract; `check_tile` verified the sizes.
        unsafe {
            if kind == INT_INT4 {
                int_tile::<INT_INT4>(row, &geometry, xs, xsums, out)
            } else {
                int_tile::<INT_INT8>(row, &geometry, xs, xsums, out)
            }
        }
    }
}

/// Dispatches a tile of 1..=8 activation rows to its monomorphized integer kernel.
///
/// # Safety
/// As [`int_rows`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int_tile<const KIND: u8>(
    row: &RowArgs<'_>,
    geometry: &Geometry,
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match xs.len() {
            1 => int_rows::<KIND, 1>(row, geometry, xs, xsums, out),
            2 => int_rows::<KIND, 2>(row, geometry, xs, xsums, out),
            3 => int_rows::<KIND, 3>(row, geometry, xs, xsums, out),
            4 => int_rows::<KIND, 4>(row, geometry, xs, xsums, out),
            5 => int_rows::<KIND, 5>(row, geometry, xs, xsums, out),
            6 => int_rows::<KIND, 6>(row, geometry, xs, xsums, out),
            7 => int_rows::<KIND, 7>(row, geometry, xs, xsums, out),
            8 => int_rows::<KIND, 8>(row, geometry, xs, xsums, out),
            _ => {}
        }
    }
}

/// The integer path for `R` activation rows.
///
/// # Safety
/// AVX2; `xs` has `R` rows of at least `geometry.values()` values, `xsums` `R` rows of one sum
/// per group, `out` at least `R` entries.
// Out of line: one call per weight row and tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int_rows<const KIND: u8, const R: usize>(
    row: &RowArgs<'_>,
    geometry: &Geometry,
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    let step = if KIND == INT_INT4 { BLOCK / 2 } else { BLOCK };
    // int4 codes are multiplied as `q + 8`.
    let offset: i32 = if KIND == INT_INT4 { 8 } else { 0 };
    let codes = row.codes;
    let x: [*const i8; R] = std::array::from_fn(|r| xs[r].as_ptr());
    let sums: [&[i32]; R] = std::array::from_fn(|r| xsums[r]);
    let mut totals = [_mm_setzero_ps(); 2];
    for (g, (blocks, &scale)) in geometry.groups().zip(row.scales).enumerate() {
        let full_end = blocks.end.min(geometry.full_blocks);
        let mut acc = [_mm256_setzero_si256(); R];
        if offset != 0 {
            // Lane 0 starts at `-offset * xsum`, so the lanes add up to the exact sum.
            for (a, sums) in acc.iter_mut().zip(&sums) {
                let correction = offset.wrapping_mul(sums[g]).wrapping_neg();
                *a = _mm256_zextsi128_si256(_mm_cvtsi32_si128(correction));
            }
        }
        // SAFETY (all loads below): as in `float_rows`.
        for b in blocks.start..full_end {
            prefetch(codes, b * step);
            unsafe { int_block::<KIND, R>(&mut acc, codes.as_ptr().add(b * step), &x, b * BLOCK) };
        }
        if full_end < blocks.end {
            let tail = tail_block(codes, full_end * step);
            unsafe { int_block::<KIND, R>(&mut acc, tail.as_ptr(), &x, full_end * BLOCK) };
        }
        let mut folded = [_mm_setzero_si128(); 8];
        for (f, &a) in folded.iter_mut().zip(&acc) {
            *f = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        }
        add_scaled_sums(&folded, R, scale, &mut totals);
    }
    store_totals(&totals, &mut out[..R]);
}

/// Adds `scale` times the exact lane sum of each row's partial sums (up to eight rows, zero
/// past the last) to the rows' totals (rows 0..4 in `totals[0]`, 4..8 in `totals[1]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn add_scaled_sums(
    folded: &[__m128i; 8],
    rows: usize,
    scale: f32,
    totals: &mut [__m128; 2],
) {
    let scale = _mm_set1_ps(scale);
    let quads = folded.chunks_exact(4).zip(totals.iter_mut());
    for (quad, total) in quads.take(rows.div_ceil(4)) {
        // Wrapping i32 additions: exact whenever the true sum fits in i32.
        let sums = _mm_hadd_epi32(
            _mm_hadd_epi32(quad[0], quad[1]),
            _mm_hadd_epi32(quad[2], quad[3]),
        );
        *total = _mm_fmadd_ps(_mm_cvtepi32_ps(sums), scale, *total);
    }
}

/// Writes the totals of [`add_scaled_sums`] to `out` (one per row).
pub(super) fn store_totals(totals: &[__m128; 2], out: &mut [f32]) {
    let mut all = [0f32; 8];
    for (chunk, &total) in all.chunks_exact_mut(4).zip(totals) {
        // SAFETY: `chunk` holds four floats.
        unsafe { _mm_storeu_ps(chunk.as_mut_ptr(), total) };
    }
    let n = out.len().min(all.len());
    out[..n].copy_from_slice(&all[..n]);
}

/// Adds the integer products of one block with each activation row into the accumulators.
///
/// # Safety
/// AVX2; `codes` points to the block's bytes (16 for int4, 32 for int8), every `x[r]` is
/// readable for `offset + 32` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int_block<const KIND: u8, const R: usize>(
    acc: &mut [__m256i; R],
    codes: *const u8,
    x: &[*const i8; R],
    offset: usize,
) {
    if KIND == INT_INT4 {
        // SAFETY: the block's 16 bytes, in both halves; the upper half is shifted by a nibble.
        let bytes = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(codes.cast()) });
        let shifted = _mm256_srlv_epi64(bytes, _mm256_setr_epi64x(0, 0, 4, 4));
        let unsigned = _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
        let ones = _mm256_set1_epi16(1);
        for (a, &xr) in acc.iter_mut().zip(x) {
            // SAFETY: the caller's bound on `offset`.
            let activations = unsafe { _mm256_loadu_si256(xr.add(offset).cast()) };
            let pairs = _mm256_maddubs_epi16(unsigned, activations);
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
        }
    } else {
        // SAFETY: the block's 32 bytes.
        let (first, second) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(codes.cast())),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(codes.add(16).cast())),
            )
        };
        for (a, &xr) in acc.iter_mut().zip(x) {
            // SAFETY: the caller's bound on `offset`.
            let (x0, x1) = unsafe {
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(xr.add(offset).cast())),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(xr.add(offset + 16).cast())),
                )
            };
            let products =
                _mm256_add_epi32(_mm256_madd_epi16(first, x0), _mm256_madd_epi16(second, x1));
            *a = _mm256_add_epi32(*a, products);
        }
    }
}
