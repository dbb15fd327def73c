//! NEON kernels for aarch64; the integer path uses SDOT (the `dotprod` extension) where the CPU
//! has it, which makes a second kernel set.
//!
//! Both paths walk rows in blocks of 32 values, up to [`ROW_TILE`] weight rows at a time, as the
//! AVX-512 kernels do: the rows of one call come from distant parts of the matrix (see the
//! dispatcher), and reading their code streams together keeps enough cache misses in flight for
//! one thread to stream weights. Each activation vector is loaded once per weight row from L1;
//! code bytes are prefetched a fixed distance ahead in every stream.
//!
//! Float path (activation layout [`NibbleLayout::Bytes`]`(16)` for nibble codes):
//! - nibble codes: a block is 16 code bytes; their low nibbles pair with the block's first 16
//!   activations, the high nibbles with the next 16. A nibble indexes the 16-entry f32 table
//!   through `tbl` on its four byte planes (bytes 0..3 of every entry, split by one `ld4`), and
//!   two rounds of zips put the looked-up bytes back together: exact values, 12 instructions per
//!   16 values. For int4 (entries -8..7, whose low 16 bits are zero) two planes and a shift by
//!   16 do: 8 instructions.
//! - int8 codes: 32 bytes per block, sign-extended and converted.
//! - FP8 E4M3 codes: byte `b` sign-extended and shifted left by 4, masked to `0x87F0`, then
//!   widened with a shift by 16, is an f32 whose sign, exponent and mantissa fields hold those of
//!   `b` (bits 31, 23..26 and 20..22): exactly `e4m3(b) * 2^-120` for every finite code,
//!   subnormals included. It is multiplied by 2^120 at once (exact), so products never leave the
//!   normal range.
//! - Every kind sums `value * x` unscaled over a scale group in `A` accumulators per weight and
//!   activation row, then adds the sum times the group's scale to the row's total.
//!
//! Integer path (activation layout `Bytes(16)` for nibble codes): int4 codes become signed bytes
//! `q = u - 8` (low nibbles, then high nibbles), int8 codes are read as they are, and 16 signed
//! products at a time are summed into four i32 lanes, by `sdot` with the dotprod extension and by
//! `smull` + `sadalp` (i16 products, pairwise-added into i32) without: no offset correction is
//! needed, so the activation group sums go unused. The exact (wrapping) i32 group sums are
//! converted and multiply-added to the rows' f32 totals.
//!
//! A row's last block may lie partly past the end of `codes`; it is copied into a zeroed buffer
//! first. Its padding activations are zero and every padding code decodes to a finite value.

use std::arch::aarch64::*;
use std::arch::asm;

use super::blocks::{check_tile, tail_block, Geometry, BLOCK};
use super::{scalar, KernelSet, NibbleLayout, QuantIsa, RowArgs, ROW_TILE, TOKEN_TILE};
use crate::quant::weights::INT4_TABLE;
use crate::quant::CodeKind;

/// Whether this CPU runs the NEON kernels (every aarch64 Linux CPU does).
pub fn supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Whether this CPU runs the SDOT integer kernel as well.
pub fn dotprod_supported() -> bool {
    supported() && std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The NEON kernel set (integer products by `smull` + `sadalp`).
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Neon,
    row_tile: ROW_TILE,
    float_layout: NibbleLayout::Bytes(16),
    int_layout: NibbleLayout::Bytes(16),
    dot_float,
    dot_int8: dot_int8::<false>,
    dot_limbs: None,
};

/// The NEON kernel set with the SDOT integer kernel.
pub const DOTPROD_KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::NeonDotprod,
    dot_int8: dot_int8::<true>,
    ..KERNELS
};

/// Multiplier from the f32 image of an E4M3 code to its value (2^(127 - 7), the bias
/// difference).
const FP8_F32_FACTOR: f32 = f32::from_bits((127 + 120) << 23);

/// Bits of `sign_extended_byte << 4` that form the upper half of the f32 image of an E4M3 byte:
/// the sign (bit 15) and the seven exponent and mantissa bits (10..4).
const FP8_F32_MASK: u16 = 0x87F0;

/// How far ahead of the block being decoded each row's codes are prefetched (past the row's end
/// into the next row of its stream, which the dispatcher keeps contiguous); as in the AVX-512
/// kernels, which read four streams as these do.
const PREFETCH_DISTANCE: usize = 2048;

/// Prefetches the code line [`PREFETCH_DISTANCE`] bytes past `p` into L1.
#[inline(always)]
fn prefetch_at(p: *const u8) {
    let ahead = p.wrapping_add(PREFETCH_DISTANCE);
    // SAFETY: a prefetch hint reads nothing into the program, never faults, whatever the
    // address, and touches neither the stack nor the flags.
    unsafe {
        asm!("prfm pldl1keep, [{0}]", in(reg) ahead, options(nostack, readonly, preserves_flags))
    }
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

/// Checks that the rows of one call share their kind, length and group size.
fn check_rows(rows: &[RowArgs<'_>]) {
    let first = &rows[0];
    assert!(
        rows.iter().all(|r| {
            (std::ptr::eq(r.kind, first.kind) || r.kind == first.kind)
                && r.k == first.k
                && r.group_size == first.group_size
        }),
        "quantized kernel: {} weight rows of different shapes",
        rows.len()
    );
}

/// Weight rows per inner call for `tokens` activation rows, so accumulators stay within the 32
/// vector registers.
fn rows_per_call(tokens: usize) -> usize {
    match tokens {
        1 | 2 => ROW_TILE,
        3 | 4 => 2,
        _ => 1,
    }
}

/// Float-activation kernel (see [`super::FloatKernel`]).
///
/// # Safety
/// The CPU must support NEON.
unsafe fn dot_float(rows: &[RowArgs<'_>], xs: &[&[f32]], out: &mut [f32]) {
    let Some(first) = rows.first() else {
        return;
    };
    check_rows(rows);
    let (kind, table) = match first.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => (INT4, table),
        CodeKind::Nibble { table, .. } => (TABLE, table),
        CodeKind::Int8 => (INT8, &INT4_TABLE),
        CodeKind::Fp8 => (FP8, &INT4_TABLE),
    };
    let shortest = rows.iter().min_by_key(|r| r.codes.len()).unwrap_or(first);
    let Some(geometry) = Geometry::new(shortest, block_bytes(kind)) else {
        // SAFETY: the portable kernel has no requirements beyond the slice sizes.
        return unsafe { scalar::dot_float(rows, xs, out) };
    };
    let tokens = xs.len();
    assert!(
        tokens <= TOKEN_TILE,
        "quantized kernel: {tokens} activation rows"
    );
    check_tile(xs, out.len() / rows.len(), geometry.values());
    let most = rows_per_call(tokens);
    let mut done = 0;
    while done < rows.len() {
        let n = match most.min(rows.len() - done) {
            3 => 2,
            n => n,
        };
        let (rows, out) = (&rows[done..done + n], &mut out[done * tokens..]);
        // SAFETY: NEON is this function's contract; the sizes were checked above.
        unsafe {
            match kind {
                INT4 => float_tile::<INT4>(rows, &geometry, table, xs, out),
                TABLE => float_tile::<TABLE>(rows, &geometry, table, xs, out),
                INT8 => float_tile::<INT8>(rows, &geometry, table, xs, out),
                _ => float_tile::<FP8>(rows, &geometry, table, xs, out),
            }
        }
        done += n;
    }
}

/// Dispatches 1, 2 or 4 weight rows and 1..=8 activation rows to a monomorphized kernel; the
/// last constant is the number of accumulators per weight and activation row, enough
/// independent FMA chains to hide their latency.
///
/// # Safety
/// As [`float_rows`].
unsafe fn float_tile<const KIND: u8>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    macro_rules! tiles {
        ($(($r:literal, $t:literal, $a:literal))*) => {
            match (rows.len(), xs.len()) {
                $(($r, $t) => float_rows::<KIND, $r, $t, $a>(rows, geometry, table, xs, out),)*
                _ => unreachable!("quantized kernel: no tile of {} x {}", rows.len(), xs.len()),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe {
        tiles! {
            (1, 1, 4) (1, 2, 2) (1, 3, 2) (1, 4, 2) (1, 5, 1) (1, 6, 1) (1, 7, 1) (1, 8, 1)
            (2, 1, 2) (2, 2, 2) (2, 3, 1) (2, 4, 1) (4, 1, 2) (4, 2, 1)
        }
    }
}

/// The float path for `R` weight rows and `T` activation rows with `A` accumulators each.
///
/// # Safety
/// NEON; `rows` holds `R` rows whose codes cover `geometry`, `xs` `T` rows of at least
/// `geometry.values()` values, `out` at least `R * T` entries.
// Out of line: one call per tile, and one symbol per variant in profiles.
#[inline(never)]
unsafe fn float_rows<const KIND: u8, const R: usize, const T: usize, const A: usize>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let step = block_bytes(KIND);
    let codes: [&[u8]; R] = std::array::from_fn(|r| rows[r].codes);
    let x: [*const f32; T] = std::array::from_fn(|t| xs[t].as_ptr());
    // SAFETY: `table` holds 16 floats (64 bytes); `ld4` splits them into byte planes.
    let planes = unsafe { vld4q_u8(table.as_ptr().cast()) };
    let planes = [planes.0, planes.1, planes.2, planes.3];
    let mut totals = [[vdupq_n_f32(0.0); T]; R];
    for (g, blocks) in geometry.groups().enumerate() {
        let full_end = blocks.end.min(geometry.full_blocks);
        let mut acc = [[[vdupq_n_f32(0.0); A]; T]; R];
        for b in blocks.start..full_end {
            let at: [*const u8; R] = std::array::from_fn(|r| {
                // SAFETY: block `b < full_blocks` lies inside every row's codes.
                let p = unsafe { codes[r].as_ptr().add(b * step) };
                if (b * step).is_multiple_of(64) {
                    prefetch_at(p);
                }
                p
            });
            // SAFETY: `at` points to whole blocks; activation offsets stay below
            // `geometry.values()`, which every `xs` row holds (caller).
            unsafe { float_block::<KIND, R, T, A>(&at, &x, b * BLOCK, &planes, &mut acc) };
        }
        for b in full_end..blocks.end {
            let buffers: [[u8; 32]; R] = std::array::from_fn(|r| tail_block(codes[r], b * step));
            let at: [*const u8; R] = std::array::from_fn(|r| buffers[r].as_ptr());
            // SAFETY: the buffers hold a whole block; as above for the activations.
            unsafe { float_block::<KIND, R, T, A>(&at, &x, b * BLOCK, &planes, &mut acc) };
        }
        for (r, (totals, acc)) in totals.iter_mut().zip(&acc).enumerate() {
            let scale = rows[r].scales[g];
            for (total, partial) in totals.iter_mut().zip(acc) {
                let sum = partial[1..]
                    .iter()
                    .fold(partial[0], |s, &v| vaddq_f32(s, v));
                *total = vfmaq_n_f32(*total, sum, scale);
            }
        }
    }
    for (r, totals) in totals.iter().enumerate() {
        for (t, &total) in totals.iter().enumerate() {
            out[r * T + t] = vaddvq_f32(total);
        }
    }
}

/// Adds one block of `R` weight rows times `T` activation rows into the accumulators.
///
/// # Safety
/// NEON; every `codes[r]` points to a block of code bytes, every `x[t]` is readable for
/// `offset + 32` values.
#[inline(always)]
unsafe fn float_block<const KIND: u8, const R: usize, const T: usize, const A: usize>(
    codes: &[*const u8; R],
    x: &[*const f32; T],
    offset: usize,
    planes: &[uint8x16_t; 4],
    acc: &mut [[[float32x4_t; A]; T]; R],
) {
    for (r, acc) in acc.iter_mut().enumerate() {
        // SAFETY: the caller's bounds.
        let values = unsafe { decode::<KIND>(codes[r], planes) };
        for (t, &xt) in x.iter().enumerate() {
            for (j, &v) in values.iter().enumerate() {
                // SAFETY: `offset + 4j + 4 <= offset + 32`, the caller's bound.
                let activations = unsafe { vld1q_f32(xt.add(offset + 4 * j)) };
                let slot = &mut acc[t][j % A];
                *slot = vfmaq_f32(*slot, v, activations);
            }
        }
    }
}

/// The 32 unscaled values of one block in activation-layout order (see the module
/// documentation).
///
/// # Safety
/// NEON; `codes` points to `block_bytes(KIND)` readable bytes.
#[inline(always)]
unsafe fn decode<const KIND: u8>(codes: *const u8, planes: &[uint8x16_t; 4]) -> [float32x4_t; 8] {
    // SAFETY (whole function): the caller's bound on `codes`.
    unsafe {
        if KIND == INT4 || KIND == TABLE {
            let bytes = vld1q_u8(codes);
            let low = lookup::<KIND>(vandq_u8(bytes, vdupq_n_u8(0x0F)), planes);
            let high = lookup::<KIND>(vshrq_n_u8::<4>(bytes), planes);
            [
                low[0], low[1], low[2], low[3], high[0], high[1], high[2], high[3],
            ]
        } else {
            let first = widen_bytes::<KIND>(vld1q_s8(codes.cast()));
            let second = widen_bytes::<KIND>(vld1q_s8(codes.add(16).cast()));
            [
                first[0], first[1], first[2], first[3], second[0], second[1], second[2], second[3],
            ]
        }
    }
}

/// The table entries of 16 nibble indices (each below 16), in order.
#[inline(always)]
fn lookup<const KIND: u8>(index: uint8x16_t, planes: &[uint8x16_t; 4]) -> [float32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 target these kernels are built for.
    unsafe {
        // Upper halves of the entries: byte 2 in the low byte of each u16, byte 3 in the high.
        let b2 = vqtbl1q_u8(planes[2], index);
        let b3 = vqtbl1q_u8(planes[3], index);
        let upper = [
            vreinterpretq_u16_u8(vzip1q_u8(b2, b3)),
            vreinterpretq_u16_u8(vzip2q_u8(b2, b3)),
        ];
        if KIND == INT4 {
            // The lower halves of -8..7 are zero.
            [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(upper[0]))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(upper[0])),
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(upper[1]))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(upper[1])),
            ]
        } else {
            let b0 = vqtbl1q_u8(planes[0], index);
            let b1 = vqtbl1q_u8(planes[1], index);
            let lower = [
                vreinterpretq_u16_u8(vzip1q_u8(b0, b1)),
                vreinterpretq_u16_u8(vzip2q_u8(b0, b1)),
            ];
            [
                vreinterpretq_f32_u16(vzip1q_u16(lower[0], upper[0])),
                vreinterpretq_f32_u16(vzip2q_u16(lower[0], upper[0])),
                vreinterpretq_f32_u16(vzip1q_u16(lower[1], upper[1])),
                vreinterpretq_f32_u16(vzip2q_u16(lower[1], upper[1])),
            ]
        }
    }
}

/// The unscaled values of 16 int8 or E4M3 codes, in order.
#[inline(always)]
fn widen_bytes<const KIND: u8>(bytes: int8x16_t) -> [float32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 target these kernels are built for.
    unsafe {
        if KIND == INT8 {
            let halves = [vmovl_s8(vget_low_s8(bytes)), vmovl_high_s8(bytes)];
            [
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(halves[0]))),
                vcvtq_f32_s32(vmovl_high_s16(halves[0])),
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(halves[1]))),
                vcvtq_f32_s32(vmovl_high_s16(halves[1])),
            ]
        } else {
            let mask = vdupq_n_u16(FP8_F32_MASK);
            let halves = [
                vandq_u16(
                    vreinterpretq_u16_s16(vshll_n_s8::<4>(vget_low_s8(bytes))),
                    mask,
                ),
                vandq_u16(vreinterpretq_u16_s16(vshll_high_n_s8::<4>(bytes)), mask),
            ];
            let image = |bits: uint32x4_t| vmulq_n_f32(vreinterpretq_f32_u32(bits), FP8_F32_FACTOR);
            [
                image(vshll_n_u16::<16>(vget_low_u16(halves[0]))),
                image(vshll_high_n_u16::<16>(halves[0])),
                image(vshll_n_u16::<16>(vget_low_u16(halves[1]))),
                image(vshll_high_n_u16::<16>(halves[1])),
            ]
        }
    }
}

/// Code kinds of the integer path.
const INT_INT4: u8 = 0;
const INT_INT8: u8 = 1;

/// int8-activation kernel (see [`super::IntKernel`]); `DOT`: with SDOT.
///
/// # Safety
/// The CPU must support NEON, and the dotprod extension for `DOT`.
unsafe fn dot_int8<const DOT: bool>(
    rows: &[RowArgs<'_>],
    xs: &[&[i8]],
    xsums: &[&[i32]],
    out: &mut [f32],
) {
    let Some(first) = rows.first() else {
        return;
    };
    check_rows(rows);
    let kind = match first.kind {
        CodeKind::Nibble { table, .. } if *table == INT4_TABLE => INT_INT4,
        CodeKind::Int8 => INT_INT8,
        // No scheme pairs other tables or FP8 with int8 activations; the portable kernel (no
        // requirements beyond the slice sizes) keeps them correct anyway.
        // SAFETY: see above.
        _ => return unsafe { scalar::dot_int8(rows, xs, xsums, out) },
    };
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
    check_tile(xs, out.len() / rows.len(), geometry.values());
    let most = rows_per_call(tokens);
    let mut done = 0;
    while done < rows.len() {
        let n = match most.min(rows.len() - done) {
            3 => 2,
            n => n,
        };
        let (rows, out) = (&rows[done..done + n], &mut out[done * tokens..]);
        // SAFETY: the CPU features are this function's contract; the sizes were checked above.
        unsafe {
            match (kind, DOT) {
                (INT_INT4, true) => int_tile_dot::<INT_INT4>(rows, &geometry, xs, out),
                (_, true) => int_tile_dot::<INT_INT8>(rows, &geometry, xs, out),
                (INT_INT4, false) => int_tile::<INT_INT4, false>(rows, &geometry, xs, out),
                _ => int_tile::<INT_INT8, false>(rows, &geometry, xs, out),
            }
        }
        done += n;
    }
}

/// [`int_tile`] with SDOT, compiled with the dotprod extension enabled.
///
/// # Safety
/// As [`int_rows`], and the CPU must support the dotprod extension.
#[target_feature(enable = "dotprod")]
unsafe fn int_tile_dot<const KIND: u8>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    xs: &[&[i8]],
    out: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { int_tile::<KIND, true>(rows, geometry, xs, out) }
}

/// Dispatches 1, 2 or 4 weight rows and 1..=8 activation rows to a monomorphized kernel.
///
/// # Safety
/// As [`int_rows`].
#[inline(always)]
unsafe fn int_tile<const KIND: u8, const DOT: bool>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    xs: &[&[i8]],
    out: &mut [f32],
) {
    macro_rules! tiles {
        ($(($w:literal, $t:literal))*) => {
            match (rows.len(), xs.len()) {
                $(($w, $t) => int_rows::<KIND, DOT, $w, $t>(rows, geometry, xs, out),)*
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

/// The integer path for `W` weight rows and `T` activation rows.
///
/// # Safety
/// NEON, and the dotprod extension for `DOT`; `rows` holds `W` rows whose codes cover
/// `geometry`, `xs` `T` rows of at least `geometry.values()` values, `out` at least `W * T`
/// entries.
// Inlined into its caller, which for `DOT` carries the dotprod feature, so `sdot` inlines too.
#[inline(always)]
unsafe fn int_rows<const KIND: u8, const DOT: bool, const W: usize, const T: usize>(
    rows: &[RowArgs<'_>],
    geometry: &Geometry,
    xs: &[&[i8]],
    out: &mut [f32],
) {
    let step = if KIND == INT_INT4 { BLOCK / 2 } else { BLOCK };
    let codes: [&[u8]; W] = std::array::from_fn(|w| rows[w].codes);
    let x: [*const i8; T] = std::array::from_fn(|t| xs[t].as_ptr());
    let mut totals = [[0f32; T]; W];
    for (g, blocks) in geometry.groups().enumerate() {
        let full_end = blocks.end.min(geometry.full_blocks);
        // SAFETY: NEON.
        let mut acc = [[unsafe { vdupq_n_s32(0) }; T]; W];
        for b in blocks.start..full_end {
            let at: [*const u8; W] = std::array::from_fn(|w| {
                // SAFETY: block `b < full_blocks` lies inside every row's codes.
                let p = unsafe { codes[w].as_ptr().add(b * step) };
                if (b * step).is_multiple_of(64) {
                    prefetch_at(p);
                }
                p
            });
            // SAFETY: whole blocks; activation offsets below `geometry.values()` (caller).
            unsafe { int_block::<KIND, DOT, W, T>(&at, &x, b * BLOCK, &mut acc) };
        }
        for b in full_end..blocks.end {
            let buffers: [[u8; 32]; W] = std::array::from_fn(|w| tail_block(codes[w], b * step));
            let at: [*const u8; W] = std::array::from_fn(|w| buffers[w].as_ptr());
            // SAFETY: the buffers hold a whole block; as above for the activations.
            unsafe { int_block::<KIND, DOT, W, T>(&at, &x, b * BLOCK, &mut acc) };
        }
        for ((totals, acc), row) in totals.iter_mut().zip(&acc).zip(rows) {
            let scale = row.scales[g];
            for (total, &a) in totals.iter_mut().zip(acc) {
                // Wrapping i32 additions: exact whenever the true sum fits in i32.
                // SAFETY: NEON.
                let sum = unsafe { vaddvq_s32(a) };
                *total = (sum as f32).mul_add(scale, *total);
            }
        }
    }
    for (w, totals) in totals.iter().enumerate() {
        out[w * T..(w + 1) * T].copy_from_slice(totals);
    }
}

/// Adds the integer products of one block of `W` weight rows with `T` activation rows into the
/// accumulators.
///
/// # Safety
/// As [`int_rows`]; every `codes[w]` points to the block's bytes (16 for int4, 32 for int8),
/// every `x[t]` is readable for `offset + 32` values.
#[inline(always)]
unsafe fn int_block<const KIND: u8, const DOT: bool, const W: usize, const T: usize>(
    codes: &[*const u8; W],
    x: &[*const i8; T],
    offset: usize,
    acc: &mut [[int32x4_t; T]; W],
) {
    // SAFETY (whole function): the caller's bounds and features.
    unsafe {
        let signed: [[int8x16_t; 2]; W] = std::array::from_fn(|w| {
            if KIND == INT_INT4 {
                let bytes = vld1q_u8(codes[w]);
                let eight = vdupq_n_s8(8);
                [
                    vsubq_s8(
                        vreinterpretq_s8_u8(vandq_u8(bytes, vdupq_n_u8(0x0F))),
                        eight,
                    ),
                    vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(bytes)), eight),
                ]
            } else {
                [vld1q_s8(codes[w].cast()), vld1q_s8(codes[w].add(16).cast())]
            }
        });
        for (t, &xt) in x.iter().enumerate() {
            let activations = [vld1q_s8(xt.add(offset)), vld1q_s8(xt.add(offset + 16))];
            for (a, s) in acc.iter_mut().zip(&signed) {
                for (&c, &v) in s.iter().zip(&activations) {
                    a[t] = dot_16::<DOT>(a[t], c, v);
                }
            }
        }
    }
}

/// `acc` plus the products of 16 signed byte pairs, summed four consecutive ones per lane
/// (`DOT`) or pairwise over the i16 products (without).
///
/// # Safety
/// NEON, and the dotprod extension for `DOT`.
#[inline(always)]
unsafe fn dot_16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        // SAFETY: the caller guarantees the dotprod extension.
        unsafe { sdot(acc, a, b) }
    } else {
        // SAFETY: NEON. An i16 holds any product of two i8 (at most 2^14 in magnitude).
        unsafe {
            let low = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let high = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, low), high)
        }
    }
}

/// `sdot`: `acc` plus the products of 16 signed byte pairs, four consecutive ones per lane. Its
/// intrinsic is not stable yet; this function carries the feature the assembler needs, and
/// inlines into callers compiled with it.
///
/// # Safety
/// The CPU must support the dotprod extension.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the caller guarantees the extension; `sdot` reads and writes only these registers.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}
