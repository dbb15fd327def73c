//! NEON dot products and prefill tiles for dense f32 and bf16 weights (aarch64). The same
//! shapes as `scalar.rs`: sixteen f32 lanes of accumulators (four vectors, independent FMA
//! chains) for the dot products, 3 x 4 vector accumulators for the tiles. bf16 widens exactly to
//! f32 by a shift of 16 while the vector widens (`shll`).

use std::arch::aarch64::*;

use half::bf16;

use super::scalar;

/// Rows per prefill tile.
pub const TILE_ROWS: usize = 3;
/// Activation rows per prefill tile.
pub const TILE_TOKENS: usize = 4;

/// Whether this CPU runs these kernels (every aarch64 Linux CPU does).
pub fn supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Four f32 weights from `p` as a vector.
///
/// # Safety
/// NEON; `p` points to 4 readable values.
#[inline(always)]
unsafe fn load_f32(p: *const f32) -> float32x4_t {
    // SAFETY: the caller's bound.
    unsafe { vld1q_f32(p) }
}

/// Eight bf16 weights from `p` as two f32 vectors.
///
/// # Safety
/// NEON; `p` points to 8 readable values.
#[inline(always)]
unsafe fn load_bf16(p: *const bf16) -> [float32x4_t; 2] {
    // SAFETY: the caller's bound; bf16 is a u16 in memory.
    unsafe {
        let raw = vld1q_u16(p.cast());
        [
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(raw))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(raw)),
        ]
    }
}

/// Sum of four vectors' lanes.
#[inline(always)]
fn sum_lanes(acc: &[float32x4_t; 4]) -> f32 {
    // SAFETY: NEON is part of every aarch64 target this module is built for.
    unsafe {
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    }
}

/// f32 dot product.
///
/// # Safety
/// The CPU must support NEON.
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 16 * 16;
    // SAFETY: NEON (contract); every load reads 16 values below `full <= n` of both slices.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < full {
            for (j, slot) in acc.iter_mut().enumerate() {
                let offset = i + 4 * j;
                *slot = vfmaq_f32(
                    *slot,
                    vld1q_f32(a.as_ptr().add(offset)),
                    load_f32(b.as_ptr().add(offset)),
                );
            }
            i += 16;
        }
        sum_lanes(&acc) + scalar::dot_f32(&a[full..n], &b[full..n])
    }
}

/// Dot product of f32 activations with bf16 weights.
///
/// # Safety
/// The CPU must support NEON.
pub unsafe fn dot_bf16(a: &[f32], b: &[bf16]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 16 * 16;
    // SAFETY: NEON (contract); every load reads values below `full <= n` of both slices.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < full {
            for half in 0..2 {
                let offset = i + 8 * half;
                let w = load_bf16(b.as_ptr().add(offset));
                for (j, &wv) in w.iter().enumerate() {
                    let slot = &mut acc[2 * half + j];
                    *slot = vfmaq_f32(*slot, vld1q_f32(a.as_ptr().add(offset + 4 * j)), wv);
                }
            }
            i += 16;
        }
        sum_lanes(&acc) + scalar::dot_bf16(&a[full..n], &b[full..n])
    }
}

/// `out[r][t] = w[r] . x[t]` with 12 vector accumulators, 8 values per step; `load` reads 8
/// weights as two vectors, `widen` one weight for the tail.
///
/// # Safety
/// NEON; every row of `w` and `x` has the same length (checked).
#[inline(always)]
unsafe fn tile<W: Copy>(
    w: [&[W]; TILE_ROWS],
    x: [&[f32]; TILE_TOKENS],
    load: impl Fn(*const W) -> [float32x4_t; 2],
    widen: impl Fn(W) -> f32,
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    let k = x[0].len();
    assert!(w.iter().all(|r| r.len() == k) && x.iter().all(|r| r.len() == k));
    let full = k / 8 * 8;
    // SAFETY: NEON (contract); loads read 8 values below `full <= k` of every row.
    unsafe {
        let mut acc = [[[vdupq_n_f32(0.0); 2]; TILE_TOKENS]; TILE_ROWS];
        let mut i = 0;
        while i < full {
            let wv: [[float32x4_t; 2]; TILE_ROWS] =
                std::array::from_fn(|r| load(w[r].as_ptr().add(i)));
            for t in 0..TILE_TOKENS {
                let xv = [
                    vld1q_f32(x[t].as_ptr().add(i)),
                    vld1q_f32(x[t].as_ptr().add(i + 4)),
                ];
                for r in 0..TILE_ROWS {
                    for h in 0..2 {
                        acc[r][t][h] = vfmaq_f32(acc[r][t][h], wv[r][h], xv[h]);
                    }
                }
            }
            i += 8;
        }
        std::array::from_fn(|r| {
            std::array::from_fn(|t| {
                let mut s = vaddvq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1]));
                for j in full..k {
                    s += widen(w[r][j]) * x[t][j];
                }
                s
            })
        })
    }
}

/// f32-weight prefill tile.
///
/// # Safety
/// The CPU must support NEON. Every row must have the same length (checked).
pub unsafe fn tile_f32(
    w: [&[f32]; TILE_ROWS],
    x: [&[f32]; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    // SAFETY: forwarded contract; `load` reads 8 values where `tile` has checked there are.
    unsafe { tile(w, x, |p| [load_f32(p), load_f32(p.add(4))], |v| v) }
}

/// bf16-weight prefill tile.
///
/// # Safety
/// The CPU must support NEON. Every row must have the same length (checked).
pub unsafe fn tile_bf16(
    w: [&[bf16]; TILE_ROWS],
    x: [&[f32]; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
    // SAFETY: as in `tile_f32`.
    unsafe { tile(w, x, |p| load_bf16(p), |v| v.to_f32()) }
}
