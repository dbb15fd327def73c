//! AVX-512 kernels (F/BW/VL with FMA and F16C; VNNI for the integer path when present).
//!
//! Rows are walked in blocks of 32 values as in [`super::avx2`], whose block geometry, prefetch
//! and row-sum helpers this file shares.
//!
//! Float path (activation layout `B = 16` for nibble codes): a block of nibble codes is 16 bytes,
//! widened to sixteen 32-bit lanes; the low nibbles pair with the block's first 16 activations,
//! the high nibbles with the next 16, and one `vpermps` looks any 16-entry table up (it reads the
//! low 4 bits of each index). The table is multiplied by the group's scale once per group, so
//! products accumulate across groups. int8 codes sign-extend and convert; FP8 E4M3 codes go
//! through f16 as in the AVX2 kernels, the factor 256 folded into the group scale; byte codes
//! are summed per group, then scaled.
//!
//! Integer path (activation layout `B = 16`): with VNNI, codes are multiplied as unsigned bytes
//! (`u = q + 8` for int4, `u = q ^ 0x80 = q + 128` for int8) against the signed activations by
//! `vpdpbusd`, two blocks per 512-bit instruction (a lone block uses the lower half); each
//! group's accumulator starts at `-8 * xsum` or `-128 * xsum` in one lane, so its lanes add up to
//! the exact sum of `q * x`. Without VNNI the AVX2 integer kernel runs (same layout). The exact
//! (wrapping) i32 group sums are then converted and multiply-added to the rows' f32 totals.

// AVX-512 intrinsics and `target_feature` names are stable since Rust 1.89, which this module
// needs whatever the manifest's `rust-version` says.

use std::arch::x86_64::*;

use super::avx2::{
    add_scaled_sums, check_tile, prefetch, store_totals, tail_block, Geometry, BLOCK,
    FP8_F16_FACTOR, FP8_F16_MASK,
};
use super::{scalar, KernelSet, QuantIsa, RowArgs, TOKEN_TILE};
use crate::quant::weights::INT4_TABLE;
use crate::quant::CodeKind;

/// Whether this CPU runs these kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX-512 kernel set.
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Avx512,
    float_nibble_block: 16,
    int_nibble_block: 16,
    dot_float,
    dot_int8,
};

// The integer path falls back to the AVX2 kernel, which must read the same layout.
const _: () = assert!(KERNELS.int_nibble_block == super::avx2::KERNELS.int_nibble_block);

/// Code kinds of the float path, as const-generic parameters.
const NIBBLE: u8 = 0;
const INT8: u8 = 1;
const FP8: u8 = 2;

/// Code bytes per block of `kind`.
const fn block_bytes(kind: u8) -> usize {
    if kind == NIBBLE {
        BLOCK / 2
    } else {
        BLOCK
    }
}

/// Float-activation kernel (see [`super::FloatKernel`]).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn dot_float(row: &RowArgs<'_>, xs: &[&[f32]], out: &mut [f32]) {
    let (kind, table) = match row.kind {
        CodeKind::Nibble { table, .. } => (NIBBLE, table),
        CodeKind::Int8 => (INT8, &INT4_TABLE),
        CodeKind::Fp8 => (FP8, &INT4_TABLE),
    };
    let Some(geometry) = Geometry::new(row, block_bytes(kind)) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_float(row, xs, out) };
    };
    check_tile(xs, out.len(), geometry.values());
    for (xs, out) in xs.chunks(TOKEN_TILE).zip(out.chunks_mut(TOKEN_TILE)) {
        // SAFETY: the CPU features are this function's contract; `check_tile` verified that every
        // activation row holds `geometry.values()` values.
        unsafe {
            match kind {
                NIBBLE => float_tile::<NIBBLE>(row, &geometry, table, xs, out),
                INT8 => float_tile::<INT8>(row, &geometry, table, xs, out),
                _ => float_tile::<FP8>(row, &geometry, table, xs, out),
            }
        }
    }
}

/// Dispatches a tile of 1..=8 activation rows to its monomorphized kernel; the second constant
/// is the number of accumulators per row (independent FMA chains).
///
/// # Safety
/// As [`float_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
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
            1 => float_rows::<KIND, 1, 4>(row, geometry, table, xs, out),
            2 => float_rows::<KIND, 2, 4>(row, geometry, table, xs, out),
            3 => float_rows::<KIND, 3, 2>(row, geometry, table, xs, out),
            4 => float_rows::<KIND, 4, 2>(row, geometry, table, xs, out),
            5 => float_rows::<KIND, 5, 2>(row, geometry, table, xs, out),
            6 => float_rows::<KIND, 6, 2>(row, geometry, table, xs, out),
            7 => float_rows::<KIND, 7, 2>(row, geometry, table, xs, out),
            8 => float_rows::<KIND, 8, 2>(row, geometry, table, xs, out),
            _ => {}
        }
    }
}

/// The float path for `R` activation rows with `A` accumulators each.
///
/// # Safety
/// AVX-512 F/BW/VL, FMA and F16C; `xs` has `R` rows of at least `geometry.values()` values, `out`
/// at least `R` entries.
// Out of line: one call per weight row and tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
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
    let table = unsafe { _mm512_loadu_ps(table.as_ptr()) };
    // Nibble codes decode through a table that already holds the group's scale, so products
    // accumulate across groups; byte codes sum each group, then scale it.
    let nibbles = KIND == NIBBLE;
    let factor = if KIND == FP8 { FP8_F16_FACTOR } else { 1.0 };
    let mut acc = [[_mm512_setzero_ps(); A]; R];
    let mut totals = [_mm512_setzero_ps(); R];
    for (blocks, &scale) in geometry.groups().zip(row.scales) {
        let lut = if nibbles {
            _mm512_mul_ps(table, _mm512_set1_ps(scale))
        } else {
            table
        };
        if !nibbles {
            acc = [[_mm512_setzero_ps(); A]; R];
        }
        let full_end = blocks.end.min(geometry.full_blocks);
        let mut b = blocks.start;
        // SAFETY (all loads below): a block `b < full_blocks` has its `step` bytes inside `codes`;
        // the tail block is read from a 32-byte buffer; activation offsets stay below
        // `blocks * BLOCK`, which every row holds (caller).
        while b + 2 <= full_end {
            prefetch(codes, b * step);
            unsafe {
                let values = decode::<KIND>(codes.as_ptr().add(b * step), lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
                let values = decode::<KIND>(codes.as_ptr().add((b + 1) * step), lut);
                accumulate(&mut acc, &values, &x, (b + 1) * BLOCK, 1);
            }
            b += 2;
        }
        if b < full_end {
            unsafe {
                let values = decode::<KIND>(codes.as_ptr().add(b * step), lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
            }
            b += 1;
        }
        if b < blocks.end {
            let tail = tail_block(codes, b * step);
            unsafe {
                let values = decode::<KIND>(tail.as_ptr(), lut);
                accumulate(&mut acc, &values, &x, b * BLOCK, 0);
            }
        }
        if !nibbles {
            let scale = _mm512_set1_ps(scale * factor);
            for (total, partial) in totals.iter_mut().zip(&acc) {
                *total = _mm512_fmadd_ps(sum_ps(partial), scale, *total);
            }
        }
    }
    if nibbles {
        for (total, partial) in totals.iter_mut().zip(&acc) {
            *total = sum_ps(partial);
        }
    }
    for (o, &total) in out.iter_mut().zip(&totals) {
        *o = _mm512_reduce_add_ps(total);
    }
}

/// Lane-wise sum of accumulators.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
fn sum_ps<const A: usize>(partial: &[__m512; A]) -> __m512 {
    partial[1..]
        .iter()
        .fold(partial[0], |s, &v| _mm512_add_ps(s, v))
}

/// Adds one decoded block times each activation row into the accumulators; `half` (0 or 1)
/// picks the accumulators of the even or odd block of a pair when there are more than two.
///
/// # Safety
/// AVX-512F; every `x[r]` is readable for `offset + 32` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn accumulate<const R: usize, const A: usize>(
    acc: &mut [[__m512; A]; R],
    values: &[__m512; 2],
    x: &[*const f32; R],
    offset: usize,
    half: usize,
) {
    for (j, &v) in values.iter().enumerate() {
        let slot = (half * values.len() + j) % A;
        for (a, &xr) in acc.iter_mut().zip(x) {
            // SAFETY: the caller's bound on `offset`.
            let activations = unsafe { _mm512_loadu_ps(xr.add(offset + 16 * j)) };
            a[slot] = _mm512_fmadd_ps(v, activations, a[slot]);
        }
    }
}

/// The 32 values of one block in activation-layout order (see the module documentation); nibble
/// values come scaled, through the group's `lut`.
///
/// # Safety
/// AVX-512 F/BW and F16C; `codes` points to `block_bytes(KIND)` readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn decode<const KIND: u8>(codes: *const u8, lut: __m512) -> [__m512; 2] {
    if KIND == NIBBLE {
        // SAFETY: the block's 16 bytes.
        let wide = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(codes.cast()) });
        [
            _mm512_permutexvar_ps(wide, lut),
            _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(wide), lut),
        ]
    } else {
        let mut values = [_mm512_setzero_ps(); 2];
        for (j, v) in values.iter_mut().enumerate() {
            // SAFETY: 16 of the block's 32 bytes.
            let bytes = unsafe { _mm_loadu_si128(codes.add(16 * j).cast()) };
            *v = if KIND == INT8 {
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
            } else {
                let bits = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(bytes));
                _mm512_cvtph_ps(_mm256_and_si256(bits, _mm256_set1_epi16(FP8_F16_MASK)))
            };
        }
        values
    }
}

/// Code kinds of the integer path.
const INT_INT4: u8 = 0;
const INT_INT8: u8 = 1;

/// int8-activation kernel (see [`super::IntKernel`]): VNNI when the CPU has it, else the AVX2
/// kernel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn dot_int8(row: &RowArgs<'_>, xs: &[&[i8]], xsums: &[&[i32]], out: &mut [f32]) {
    // Both checks read a cached flag.
    if is_x86_feature_detected!("avx512vnni") {
        // SAFETY: VNNI was just detected, the other features are this function's contract.
        unsafe { dot_int8_vnni(row, xs, xsums, out) }
    } else if super::avx2::supported() {
        // SAFETY: AVX2/FMA/F16C were just detected; the layouts agree (checked at compile time).
        unsafe { super::avx2::dot_int8(row, xs, xsums, out) }
    } else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        unsafe { scalar::dot_int8(row, xs, xsums, out) }
    }
}

/// The VNNI integer kernel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn dot_int8_vnni(row: &RowArgs<'_>, xs: &[&[i8]], xsums: &[&[i32]], out: &mut [f32]) {
    let kind = match row.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => INT_INT4,
        CodeKind::Int8 => INT_INT8,
        // No scheme pairs other tables or FP8 with int8 activations; the portable kernel (no
        // requirements beyond the slice sizes) keeps them correct anyway.
        // SAFETY: see above.
        _ => return unsafe { scalar::dot_int8(row, xs, xsums, out) },
    };
    let step = if kind == INT_INT4 { BLOCK / 2 } else { BLOCK };
    let Some(geometry) = Geometry::new(row, step) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_int8(row, xs, xsums, out) };
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
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

/// The VNNI integer path for `R` activation rows: pairs of blocks use whole 512-bit registers,
/// a lone block (odd count in a group, or the row's tail) their lower half.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI; `xs` has `R` rows of at least `geometry.values()` values, `xsums` `R`
/// rows of one sum per group, `out` at least `R` entries.
// Out of line: one call per weight row and tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn int_rows<const KIND: u8, const R: usize>(
    row: &RowArgs<'_>,
    geometry: &Geometry,
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    let step = if KIND == INT_INT4 { BLOCK / 2 } else { BLOCK };
    // Codes are multiplied as `q + offset`.
    let offset: i32 = if KIND == INT_INT4 { 8 } else { 128 };
    let codes = row.codes;
    let x: [*const i8; R] = std::array::from_fn(|r| xs[r].as_ptr());
    let sums: [&[i32]; R] = std::array::from_fn(|r| xsums[r]);
    let mut totals = [_mm_setzero_ps(); 2];
    for (g, (blocks, &scale)) in geometry.groups().zip(row.scales).enumerate() {
        let full_end = blocks.end.min(geometry.full_blocks);
        // Lane 0 starts at `-offset * xsum`, so the lanes add up to the exact sum.
        let mut acc = [_mm512_setzero_si512(); R];
        for (a, sums) in acc.iter_mut().zip(&sums) {
            let correction = offset.wrapping_mul(sums[g]).wrapping_neg();
            *a = _mm512_zextsi128_si512(_mm_cvtsi32_si128(correction));
        }
        let mut b = blocks.start;
        // SAFETY (all loads below): as in `float_rows`; a pair reads `2 * step` code bytes and 64
        // activations of two whole blocks, a lone block `step` bytes and 32 activations.
        while b + 2 <= full_end {
            prefetch(codes, b * step);
            let unsigned = unsafe { pair_codes::<KIND>(codes.as_ptr().add(b * step)) };
            for (a, &xr) in acc.iter_mut().zip(&x) {
                let activations = unsafe { _mm512_loadu_si512(xr.add(b * BLOCK).cast()) };
                *a = _mm512_dpbusd_epi32(*a, unsigned, activations);
            }
            b += 2;
        }
        while b < blocks.end {
            let tail;
            let block = if b < full_end {
                unsafe { codes.as_ptr().add(b * step) }
            } else {
                tail = tail_block(codes, b * step);
                tail.as_ptr()
            };
            let unsigned = _mm512_zextsi256_si512(unsafe { block_codes::<KIND>(block) });
            for (a, &xr) in acc.iter_mut().zip(&x) {
                let activations = unsafe { _mm256_loadu_si256(xr.add(b * BLOCK).cast()) };
                let activations = _mm512_zextsi256_si512(activations);
                *a = _mm512_dpbusd_epi32(*a, unsigned, activations);
            }
            b += 1;
        }
        let mut folded = [_mm_setzero_si128(); 8];
        for (f, &a) in folded.iter_mut().zip(&acc) {
            let half =
                _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
            *f = _mm_add_epi32(
                _mm256_castsi256_si128(half),
                _mm256_extracti128_si256::<1>(half),
            );
        }
        add_scaled_sums(&folded, R, scale, &mut totals);
    }
    store_totals(&totals, &mut out[..R]);
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
