//! AVX-512 kernels (F/BW/VL with FMA and F16C; VNNI for the integer path when present).
//!
//! Float path: rows are walked in chunks of 128 values, up to four weight rows at a time. The
//! rows of one call come from distant parts of the matrix (see the dispatcher): reading their
//! code streams together keeps enough cache misses in flight for one thread to stream weights
//! at close to the memory's read bandwidth, which one stream at a time does not. Each
//! activation vector is loaded once for all rows; codes are prefetched a fixed distance ahead in
//! every stream, or, for k-slices, at the same offset in the stream's next row (see
//! `prefetch_base`).
//!
//! - Nibble codes (layout [`NibbleLayout::Words`]): a chunk is one 64-byte line of codes, loaded
//!   as sixteen 32-bit words. Shifting them right by `4s` puts nibble `s` of every word in the
//!   low 4 bits of its lane, which is all `vpermps` reads to look up one of 16 table entries:
//!   per 128 values one load, seven shifts and eight permutes, where unpacking bytes first
//!   (`vpmovzxbd`) costs a shuffle more per 32 values on the shuffle port these kernels are
//!   bound by. (Loading the line again at byte offsets 1..3 instead, which saves the shifts of
//!   the even nibbles, measured 11% slower in CPU time on L2-resident int4 weights, likely
//!   because each such load splits across two cache lines.) The table is multiplied by the
//!   group's scale once per group, so products accumulate across groups.
//!
//!   Measured against this loop on a Xeon with AVX-512 BF16/FP16 and AMX (`benches/int4_decode.rs`:
//!   register-only loops, minimum of repeated runs), and not taken: `vdpbf16ps` on 32 bf16 values
//!   per code vector (three shifts and four `vpermw` lookups in a 32-entry bf16 table per line, f32
//!   activations split into bf16 high and low parts) took 1.87x the time of this loop, and 1.17x
//!   with bf16 activations (one `vdpbf16ps` per vector), because `vdpbf16ps` issues at one per two
//!   cycles and competes for the shuffle port while an FMA issues twice per cycle; and `vpermw`
//!   occupies the shift port as well as the shuffle port, so decoding nibbles 4..7 by a zero-masked
//!   `vpermw` into the upper halves of the f32 lanes (no shift) took 1.04x. AMX (`tdpbf16ps` on
//!   decoded bf16 tiles) would need the decoded weights stored and reloaded: the tile loads alone
//!   of one line's 128 decoded values (four 64-byte tile rows) took 1.2x this whole loop.
//!   Faster in the same measurement, and used for int4 against one token where the CPU has
//!   VNNI (`avx512_limbs`): integer products, the codes as unsigned bytes against the
//!   activations quantized per 128 values to 24-bit integers split into three signed bytes
//!   (about f32's precision relative to the chunk's largest value), six `vpdpbusd` of 64
//!   products each per line and one conversion, took 0.65x this loop. It needs an activation
//!   format of its own and int4's linear code, so NF4/FP4 and several tokens stay here.
//! - int8 codes sign-extend and convert; FP8 E4M3 codes go through f16 as in the AVX2 kernels,
//!   the factor 256 folded into the scale. Byte codes read activations in natural order, sum
//!   each group unscaled and add it, scaled, to the totals at the group's end.
//! - Groups smaller than a chunk (32 or 64 values): nibble codes sum each chunk unscaled and add
//!   it to the totals times a vector of each lane's scale (a word's 8 values share a group);
//!   byte codes, which no such scheme makes, scale every decoded vector.
//!
//! A row's last chunk may hold fewer than 128 values or lie partly past the end of `codes`; it
//! is copied into a zeroed buffer, and a short nibble chunk loads its activations with a mask.
//! Padding activations are zero and every padding code decodes to a finite value.
//!
//! The integer path (int8 activations) is in `avx512_int.rs`.

// AVX-512 intrinsics and `target_feature` names are stable since Rust 1.89, which this module
// needs whatever the manifest's `rust-version` says.

use std::arch::x86_64::*;

use super::avx2::{FP8_F16_FACTOR, FP8_F16_MASK};
use super::avx512_int::dot_int8;
use super::blocks::check_tile;
use super::{KernelSet, NibbleLayout, QuantIsa, RowArgs, ROW_TILE, TOKEN_TILE};
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
    row_tile: ROW_TILE,
    float_layout: NibbleLayout::Words,
    int_layout: NibbleLayout::Bytes(16),
    dot_float,
    dot_int8,
    dot_limbs: None,
};

// The integer path falls back to the AVX2 kernel, which must read the same layout.
const _: () = assert!(matches!(
    (KERNELS.int_layout, super::avx2::KERNELS.int_layout),
    (NibbleLayout::Bytes(16), NibbleLayout::Bytes(16))
));

/// Values per chunk of the float path (see [`NibbleLayout::Words`]).
const CHUNK: usize = 128;

/// Code kinds of the float path, as const-generic parameters.
const NIBBLE: u8 = 0;
const INT8: u8 = 1;
const FP8: u8 = 2;

/// Code bytes per chunk of `kind`.
const fn chunk_bytes(kind: u8) -> usize {
    if kind == NIBBLE {
        CHUNK / 2
    } else {
        CHUNK
    }
}

/// How the float path applies scales, as const-generic parameters: nibble codes through the
/// table times the group's scale (groups of whole chunks) ...
const SCALED_TABLE: u8 = 0;
/// ... byte codes as unscaled sums per group, scaled into the totals at the group's end (groups
/// of whole chunks) ...
const GROUP_SUMS: u8 = 1;
/// ... nibble codes as unscaled sums per chunk, scaled lane by lane into the totals (groups
/// smaller than a chunk: each word lies in one group) ...
const LANE_SUMS: u8 = 2;
/// ... or every decoded vector times its group's scale (byte codes, groups smaller than a
/// chunk).
const VECTOR_SCALES: u8 = 3;

/// How a row splits into chunks.
#[derive(Clone, Copy, Debug)]
struct Chunks {
    /// Chunks in the padded row (the last may hold fewer than 128 values).
    count: usize,
    /// Leading chunks of 128 values whose code bytes lie inside every row's `codes`; the rest
    /// (only the last, for codes of the documented size) go through a zeroed buffer.
    in_place: usize,
    /// Values in the last chunk (a multiple of 32).
    last_values: usize,
    /// Chunks per scale group where groups start on chunk boundaries, else 0.
    group_chunks: usize,
}

impl Chunks {
    fn new(rows: &[RowArgs<'_>], kind: u8) -> Self {
        let row = &rows[0];
        let count = row.k.div_ceil(CHUNK);
        let last_values = row.k.div_ceil(32) * 32 - count.saturating_sub(1) * CHUNK;
        let whole = count - usize::from(last_values < CHUNK);
        let shortest = rows.iter().map(|r| r.codes.len()).min().unwrap_or(0);
        let group_chunks = if row.group_size >= row.k {
            count
        } else if row.group_size.is_multiple_of(CHUNK) {
            row.group_size / CHUNK
        } else {
            0
        };
        Chunks {
            count,
            in_place: whole.min(shortest / chunk_bytes(kind)),
            last_values,
            group_chunks,
        }
    }
}

/// Float-activation kernel (see [`super::FloatKernel`]).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn dot_float(rows: &[RowArgs<'_>], xs: &[&[f32]], out: &mut [f32]) {
    let Some(first) = rows.first() else {
        return;
    };
    let (kind, table) = match first.kind {
        CodeKind::Nibble { table, .. } => (NIBBLE, table),
        CodeKind::Int8 => (INT8, &INT4_TABLE),
        CodeKind::Fp8 => (FP8, &INT4_TABLE),
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
    assert!(
        first.group_size >= first.k || first.group_size.is_multiple_of(32),
        "quantized kernel: group size {} is neither a multiple of 32 nor the row ({})",
        first.group_size,
        first.k
    );
    let tokens = xs.len();
    assert!(
        tokens <= TOKEN_TILE,
        "quantized kernel: {tokens} activation rows"
    );
    check_tile(xs, out.len() / rows.len(), first.k.div_ceil(32) * 32);
    let shape = Chunks::new(rows, kind);
    let mode = match (kind, shape.group_chunks) {
        (NIBBLE, 0) => LANE_SUMS,
        (_, 0) => VECTOR_SCALES,
        (NIBBLE, _) => SCALED_TABLE,
        _ => GROUP_SUMS,
    };
    // Weight rows per call of the inner kernels (at most ROW_TILE), so accumulators stay within
    // 32 registers.
    let most = match mode {
        SCALED_TABLE if tokens <= 4 => ROW_TILE,
        SCALED_TABLE => 2,
        GROUP_SUMS | LANE_SUMS if tokens <= 2 => ROW_TILE,
        GROUP_SUMS | LANE_SUMS if tokens <= 4 => 2,
        _ => 1,
    };
    let mut done = 0;
    while done < rows.len() {
        let n = match most.min(rows.len() - done) {
            3 => 2,
            n => n,
        };
        let ahead: [*const u8; ROW_TILE] =
            std::array::from_fn(|r| prefetch_base(rows, done + r.min(n - 1), kind));
        let (rows, out) = (&rows[done..done + n], &mut out[done * tokens..]);
        let ahead = &ahead[..n];
        // SAFETY: the CPU features are this function's contract; the sizes were checked above.
        unsafe {
            match (kind, mode) {
                (NIBBLE, SCALED_TABLE) => {
                    float_tile::<NIBBLE, SCALED_TABLE>(rows, ahead, &shape, table, xs, out)
                }
                (NIBBLE, _) => float_tile::<NIBBLE, LANE_SUMS>(rows, ahead, &shape, table, xs, out),
                (INT8, GROUP_SUMS) => {
                    float_tile::<INT8, GROUP_SUMS>(rows, ahead, &shape, table, xs, out)
                }
                (INT8, _) => float_tile::<INT8, VECTOR_SCALES>(rows, ahead, &shape, table, xs, out),
                (_, GROUP_SUMS) => {
                    float_tile::<FP8, GROUP_SUMS>(rows, ahead, &shape, table, xs, out)
                }
                _ => float_tile::<FP8, VECTOR_SCALES>(rows, ahead, &shape, table, xs, out),
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn float_tile<const KIND: u8, const MODE: u8>(
    rows: &[RowArgs<'_>],
    ahead: &[*const u8],
    shape: &Chunks,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    macro_rules! tiles {
        ($(($r:literal, $t:literal, $a:literal))*) => {
            match (rows.len(), xs.len()) {
                $(($r, $t) => {
                    float_rows::<KIND, MODE, $r, $t, $a>(rows, ahead, shape, table, xs, out)
                })*
                _ => unreachable!("quantized kernel: no tile of {} x {}", rows.len(), xs.len()),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe {
        if MODE == VECTOR_SCALES {
            tiles! {
                (1, 1, 8) (1, 2, 4) (1, 3, 2) (1, 4, 2) (1, 5, 1) (1, 6, 1) (1, 7, 1) (1, 8, 1)
            }
        } else if MODE == GROUP_SUMS || MODE == LANE_SUMS {
            tiles! {
                (1, 1, 8) (1, 2, 4) (1, 3, 2) (1, 4, 2) (1, 5, 1) (1, 6, 1) (1, 7, 1) (1, 8, 1)
                (2, 1, 4) (2, 2, 2) (2, 3, 2) (2, 4, 2) (4, 1, 2) (4, 2, 2)
            }
        } else {
            tiles! {
                (1, 1, 8) (1, 2, 4) (1, 3, 2) (1, 4, 2) (1, 5, 1) (1, 6, 1) (1, 7, 1) (1, 8, 1)
                (2, 1, 4) (2, 2, 2) (2, 3, 1) (2, 4, 1) (2, 5, 1) (2, 6, 1) (2, 7, 1) (2, 8, 1)
                (4, 1, 2) (4, 2, 1) (4, 3, 1) (4, 4, 1)
            }
        }
    }
}

/// The float path for `R` weight rows and `T` activation rows with `A` accumulators each.
///
/// # Safety
/// AVX-512 F/BW/VL, FMA and F16C; `rows` holds `R` rows described by `shape`, `xs` `T` rows of at
/// least `ceil(k/32)*32` values, `out` at least `R * T` entries.
// Out of line: one call per tile, and one symbol per variant in profiles.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn float_rows<
    const KIND: u8,
    const MODE: u8,
    const R: usize,
    const T: usize,
    const A: usize,
>(
    rows: &[RowArgs<'_>],
    ahead: &[*const u8],
    shape: &Chunks,
    table: &[f32; 16],
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let bytes = chunk_bytes(KIND);
    let codes: [&[u8]; R] = std::array::from_fn(|r| rows[r].codes);
    let ahead: [*const u8; R] = std::array::from_fn(|r| ahead[r]);
    let x: [*const f32; T] = std::array::from_fn(|t| xs[t].as_ptr());
    let group_size = rows[0].group_size;
    let factor = if KIND == FP8 { FP8_F16_FACTOR } else { 1.0 };
    let group_chunks = match MODE {
        VECTOR_SCALES => shape.count,
        LANE_SUMS => 1,
        _ => shape.group_chunks,
    };
    let groups = shape.count.div_ceil(group_chunks.max(1));
    // Indexed without checks in the loop below.
    let scales: [&[f32]; R] = std::array::from_fn(|r| {
        let s = rows[r].scales;
        assert!(
            MODE == VECTOR_SCALES || MODE == LANE_SUMS || s.len() >= groups,
            "quantized kernel: {} scales for {groups} groups",
            s.len()
        );
        s
    });
    // SAFETY: `table` holds 16 floats.
    let table = unsafe { _mm512_loadu_ps(table.as_ptr()) };
    let mut tables = [table; R];
    let mut acc = [[[_mm512_setzero_ps(); A]; T]; R];
    let mut totals = [[_mm512_setzero_ps(); T]; R];
    let mut c = 0;
    // Chunk `c < in_place` of every row, read in place, with its lines `STREAM_PREFETCH_CHUNKS`
    // chunks ahead prefetched.
    macro_rules! in_place_chunk {
        ($scaling:expr) => {{
            let at: [*const u8; R] = std::array::from_fn(|r| {
                // SAFETY: chunk `c < in_place` lies inside every row's codes.
                let p = unsafe { codes[r].as_ptr().add(c * bytes) };
                for line in (0..bytes).step_by(64) {
                    prefetch_line(ahead[r].wrapping_add(c * bytes + line));
                }
                p
            });
            // SAFETY: `at` points to whole chunks; activation offsets stay below the padded row
            // length every `xs` row holds (caller).
            unsafe {
                chunk::<KIND, MODE, R, T, A, true>(
                    &at,
                    &x,
                    c * CHUNK,
                    CHUNK,
                    &tables,
                    &$scaling,
                    &mut acc,
                )
            }
        }};
    }
    // Each row's code book times its scale of group `g` (SCALED_TABLE).
    macro_rules! scale_tables {
        ($g:expr) => {
            for (t, s) in tables.iter_mut().zip(&scales) {
                // SAFETY: `g < groups <= s.len()` (checked above).
                *t = _mm512_mul_ps(table, _mm512_set1_ps(unsafe { *s.get_unchecked($g) }));
            }
        };
    }
    if MODE == SCALED_TABLE && KIND == NIBBLE && T <= 2 && group_chunks == 1 {
        // One chunk per group (int4 g128): a plain loop over the in-place chunks first, without
        // the group loop's bookkeeping, whose scalar instructions share ports with the vector
        // work.
        let scaling = Scaling::<R>::new::<KIND, MODE>(&scales, 0, group_size, factor);
        while c < shape.in_place {
            // Chunk `c` is group `c`.
            scale_tables!(c);
            in_place_chunk!(scaling);
            c += 1;
        }
    }
    // Chunk `c` starts group `c` after the loop above, else 0.
    let first_group = c;
    for g in first_group..groups {
        let end = (c + group_chunks).min(shape.count);
        if MODE == SCALED_TABLE {
            scale_tables!(g);
        }
        // A chunk's lane scales (LANE_SUMS: one chunk per group).
        let group_scaling = Scaling::<R>::new::<KIND, MODE>(&scales, c, group_size, factor);
        while c < end.min(shape.in_place) {
            let scaling = if MODE == VECTOR_SCALES {
                Scaling::<R>::new::<KIND, MODE>(&scales, c, group_size, factor)
            } else {
                group_scaling
            };
            in_place_chunk!(scaling);
            c += 1;
        }
        while c < end {
            let scaling = if MODE == VECTOR_SCALES {
                Scaling::<R>::new::<KIND, MODE>(&scales, c, group_size, factor)
            } else {
                group_scaling
            };
            let values = if c + 1 == shape.count {
                shape.last_values
            } else {
                CHUNK
            };
            let buffers: [[u8; CHUNK]; R] = std::array::from_fn(|r| {
                let mut buffer = [0u8; CHUNK];
                let rest = codes[r].get(c * bytes..).unwrap_or_default();
                let n = rest.len().min(bytes);
                buffer[..n].copy_from_slice(&rest[..n]);
                buffer
            });
            let at: [*const u8; R] = std::array::from_fn(|r| buffers[r].as_ptr());
            // SAFETY: the buffers hold a whole chunk; as above for the activations, which a
            // short chunk reads only up to its `values`.
            unsafe {
                chunk::<KIND, MODE, R, T, A, false>(
                    &at,
                    &x,
                    c * CHUNK,
                    values,
                    &tables,
                    &scaling,
                    &mut acc,
                )
            };
            c += 1;
        }
        if MODE == GROUP_SUMS || MODE == LANE_SUMS {
            for (r, (totals, acc)) in totals.iter_mut().zip(&mut acc).enumerate() {
                let scale = if MODE == LANE_SUMS {
                    group_scaling.lanes[r]
                } else {
                    // SAFETY: `g < groups <= s.len()` (checked above).
                    _mm512_set1_ps(unsafe { *scales[r].get_unchecked(g) } * factor)
                };
                for (total, partial) in totals.iter_mut().zip(acc.iter_mut()) {
                    *total = _mm512_fmadd_ps(sum_ps(partial), scale, *total);
                    *partial = [_mm512_setzero_ps(); A];
                }
            }
        }
    }
    let mut sums = [_mm512_setzero_ps(); 16];
    for (r, (totals, acc)) in totals.iter().zip(&acc).enumerate() {
        for (t, (total, partial)) in totals.iter().zip(acc).enumerate() {
            sums[r * T + t] = if MODE == GROUP_SUMS || MODE == LANE_SUMS {
                *total
            } else {
                sum_ps(partial)
            };
        }
    }
    if R * T > 4 {
        out[..R * T].copy_from_slice(&reduce_16(&sums)[..R * T]);
    } else {
        for (o, &v) in out.iter_mut().zip(&sums[..R * T]) {
            *o = _mm512_reduce_add_ps(v);
        }
    }
}

/// The lane sums of 16 vectors, in their order: a transposing tree of shuffles and adds, about
/// a third of the instructions of 16 separate reductions.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
fn reduce_16(v: &[__m512; 16]) -> [f32; 16] {
    // Halves: each result holds two vectors' 8-lane partial sums.
    let halves: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    });
    // Quarters: 128-bit lane `q` of `quarters[j]` holds vector `4j + q` in 4 lanes.
    let quarters: [__m512; 4] = std::array::from_fn(|j| {
        let (a, b) = (halves[2 * j], halves[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    let pairs: [__m512; 2] = std::array::from_fn(|l| {
        let (a, b) = (quarters[2 * l], quarters[2 * l + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    });
    let (a, b) = (pairs[0], pairs[1]);
    let total = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(a, b),
        _mm512_shuffle_ps::<0b11_01_11_01>(a, b),
    );
    // Lane `4q + j` holds the sum of vector `4j + q`.
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 floats.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), total) };
    std::array::from_fn(|i| lanes[(i % 4) * 4 + i / 4])
}

/// How far ahead of the chunk being decoded each row's codes are prefetched (past the row's
/// end into the next row of its stream, which the dispatcher keeps contiguous): 16 chunks. With
/// four streams in flight a short distance serves best: byte codes measured 2048 to 8192 bytes,
/// 2048 fastest. With nibble codes, whose chunks are half as long, w4a16-g128 ran 1-7% faster
/// at 1024 bytes than at 2048 (4096x4096 and 4096x11008, 1 and 2 threads, three alternating
/// pairs of runs on a 2-core Xeon; 512 and 3072 were slower; nf4 within the noise), while the
/// byte-code kernels were 2-4% slower there.
const STREAM_PREFETCH_CHUNKS: usize = 16;

/// [`STREAM_PREFETCH_CHUNKS`] chunks of byte codes: the distance of the integer path, whose
/// blocks hold byte or nibble codes alike (its nibble codes, w4a8, measured no faster at 1024).
const STREAM_PREFETCH_DISTANCE: usize = STREAM_PREFETCH_CHUNKS * chunk_bytes(INT8);

/// Where the codes of `rows[i]` are prefetched from, chunk by chunk, so that the line
/// prefetched for its chunk `c` lies at `c * chunk_bytes` past the returned address (a hint
/// address, never read): [`STREAM_PREFETCH_CHUNKS`] chunks ahead in the row itself when the
/// codes run on into the next row of the stream; but when the dispatcher hands over k-slices
/// (several activation rows), the next bytes in memory belong to a later slice, read only after
/// every row of the block has passed, so the same offset in the stream's next row, which the
/// kernel reads next (rows come in stream order, [`ROW_TILE`] streams, so `rows[i + ROW_TILE]`),
/// is prefetched instead. (w4a16-g128 4096x11008 at 8 activation rows, one thread, weights from
/// memory: 2.15 GB/s prefetching 2048 bytes ahead, 2.45 GB/s this way; 4096x4096, whose
/// 2048-byte rows put the next row at that distance anyway, unchanged.)
fn prefetch_base(rows: &[RowArgs<'_>], i: usize, kind: u8) -> *const u8 {
    let row = rows[i].codes;
    let end = row.as_ptr().wrapping_add(row.len());
    match rows.get(i + ROW_TILE) {
        // Int4 rows are padded to 32-bit words: a gap of a few bytes is still the next row.
        Some(next) if (next.codes.as_ptr() as usize).wrapping_sub(end as usize) >= 64 => {
            next.codes.as_ptr()
        }
        _ => row
            .as_ptr()
            .wrapping_add(STREAM_PREFETCH_CHUNKS * chunk_bytes(kind)),
    }
}

/// [`prefetch_base`] of row `i` for nibble codes (the limb kernel prefetches as this one does).
pub(super) fn prefetch_ahead_base(rows: &[RowArgs<'_>], i: usize) -> *const u8 {
    prefetch_base(rows, i, NIBBLE)
}

/// Prefetches the code line at `p` into L1 (a hint: no effect on memory, never faults).
#[inline(always)]
pub(super) fn prefetch_line(p: *const u8) {
    // SAFETY: a prefetch hint has no effect on the program's memory and never faults.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

/// Prefetches the code line [`STREAM_PREFETCH_DISTANCE`] bytes past `p`.
#[inline(always)]
pub(super) fn prefetch_at(p: *const u8) {
    prefetch_line(p.wrapping_add(STREAM_PREFETCH_DISTANCE))
}

/// The scales of one chunk where groups are smaller: in [`LANE_SUMS`] mode one vector per row
/// with the scale of each lane's word, in [`VECTOR_SCALES`] mode one scale per row and vector.
#[derive(Clone, Copy)]
struct Scaling<const R: usize> {
    lanes: [__m512; R],
    vectors: [[f32; 8]; R],
}

impl<const R: usize> Scaling<R> {
    /// The scales of chunk `c` (nothing in other modes).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    fn new<const KIND: u8, const MODE: u8>(
        scales: &[&[f32]; R],
        c: usize,
        group_size: usize,
        factor: f32,
    ) -> Self {
        let mut scaling = Scaling {
            lanes: [_mm512_setzero_ps(); R],
            vectors: [[0.0; 8]; R],
        };
        if MODE != VECTOR_SCALES && MODE != LANE_SUMS {
            return scaling;
        }
        let start = c * CHUNK;
        if MODE == LANE_SUMS {
            // Word `j` covers values `start + 8j..+8`, all in group `(start + 8j) / group_size`.
            let (first, lanes) = if CHUNK.is_multiple_of(group_size) {
                // The same lanes in every chunk: `8j / group_size` (a shift, 32 or 64 values).
                let shift = group_size.trailing_zeros() as i32 - 3;
                let words = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                let lanes = _mm512_srlv_epi32(words, _mm512_set1_epi32(shift));
                (c * (CHUNK / group_size), lanes)
            } else {
                // Exact in f32 for rows below 2^24 values: the quotient is at least
                // 8 / group_size from the next integer, far more than its rounding error.
                let first = start / group_size;
                let words = _mm512_setr_ps(
                    0.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0, 64.0, 72.0, 80.0, 88.0, 96.0,
                    104.0, 112.0, 120.0,
                );
                let within = (start - first * group_size) as f32;
                let within = _mm512_add_ps(words, _mm512_set1_ps(within));
                let quotient = _mm512_div_ps(within, _mm512_set1_ps(group_size as f32));
                (first, _mm512_cvttps_epi32(quotient))
            };
            for (v, s) in scaling.lanes.iter_mut().zip(scales) {
                let available = s.len().saturating_sub(first).min(16);
                let mask = ((1u32 << available) - 1) as u16;
                // SAFETY: the mask covers only scales inside the slice; masked lanes are not
                // read.
                let loaded = unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr().wrapping_add(first)) };
                *v = _mm512_permutexvar_ps(lanes, loaded);
                if KIND == FP8 {
                    *v = _mm512_mul_ps(*v, _mm512_set1_ps(factor));
                }
            }
        } else {
            for (v, s) in scaling.vectors.iter_mut().zip(scales) {
                for (j, d) in v.iter_mut().enumerate() {
                    let group = ((start + 16 * j) / group_size).min(s.len().saturating_sub(1));
                    *d = s.get(group).copied().unwrap_or(0.0) * factor;
                }
            }
        }
        scaling
    }
}

/// Adds one chunk of `R` weight rows times `T` activation rows into the accumulators: `FULL`
/// for 128 values, else `values` (a multiple of 32).
///
/// # Safety
/// AVX-512 F/BW/VL, FMA and F16C; every `codes[r]` points to a chunk of code bytes, every `x[t]`
/// is readable for `offset + 128` values (`FULL`) or `offset + values`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn chunk<
    const KIND: u8,
    const MODE: u8,
    const R: usize,
    const T: usize,
    const A: usize,
    const FULL: bool,
>(
    codes: &[*const u8; R],
    x: &[*const f32; T],
    offset: usize,
    values: usize,
    tables: &[__m512; R],
    scaling: &Scaling<R>,
    acc: &mut [[[__m512; A]; T]; R],
) {
    // SAFETY (whole function): the caller's bounds.
    unsafe {
        if KIND == NIBBLE {
            let raw: [__m512i; R] = std::array::from_fn(|r| _mm512_loadu_si512(codes[r].cast()));
            let words = values / 8;
            let mask = ((1u32 << words) - 1) as u16;
            macro_rules! step {
                ($s:literal) => {{
                    let v: [__m512; R] = std::array::from_fn(|r| {
                        let index = _mm512_srli_epi32::<{ 4 * $s }>(raw[r]);
                        _mm512_permutexvar_ps(index, tables[r])
                    });
                    for (t, &xt) in x.iter().enumerate() {
                        let activations = if FULL {
                            _mm512_loadu_ps(xt.add(offset + 16 * $s))
                        } else {
                            _mm512_maskz_loadu_ps(mask, xt.add(offset + words * $s))
                        };
                        for (a, &v) in acc.iter_mut().zip(&v) {
                            let slot = &mut a[t][$s % A];
                            *slot = _mm512_fmadd_ps(v, activations, *slot);
                        }
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            step!(4);
            step!(5);
            step!(6);
            step!(7);
        } else {
            macro_rules! step {
                ($s:literal) => {{
                    if FULL || 16 * $s < values {
                        let v: [__m512; R] = std::array::from_fn(|r| {
                            let bytes = _mm_loadu_si128(codes[r].add(16 * $s).cast());
                            let v = if KIND == INT8 {
                                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
                            } else {
                                let bits = _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(bytes));
                                let mask = _mm256_set1_epi16(FP8_F16_MASK);
                                _mm512_cvtph_ps(_mm256_and_si256(bits, mask))
                            };
                            if MODE == VECTOR_SCALES {
                                _mm512_mul_ps(v, _mm512_set1_ps(scaling.vectors[r][$s]))
                            } else {
                                v
                            }
                        });
                        for (t, &xt) in x.iter().enumerate() {
                            let activations = _mm512_loadu_ps(xt.add(offset + 16 * $s));
                            for (a, &v) in acc.iter_mut().zip(&v) {
                                let slot = &mut a[t][$s % A];
                                *slot = _mm512_fmadd_ps(v, activations, *slot);
                            }
                        }
                    }
                }};
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            step!(4);
            step!(5);
            step!(6);
            step!(7);
        }
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
