//! Portable dot products. Sixteen independent accumulators let the compiler vectorize without
//! reassociating a single running sum; the same source is recompiled for AVX2 in `x86.rs`.

use half::bf16;

/// Lanes of the accumulator array.
const LANES: usize = 16;

/// f32 dot product.
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// bf16 to f32 is exact: the bf16 bits are the upper half of the f32 bits.
#[inline(always)]
fn widen(v: bf16) -> f32 {
    f32::from_bits((v.to_bits() as u32) << 16)
}

/// Dot product of f32 activations with bf16 weights.
#[inline(always)]
pub fn dot_bf16(a: &[f32], b: &[bf16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += ca[i] * widen(cb[i]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * widen(*y);
    }
    acc.iter().sum::<f32>() + tail
}

/// Lanes of one tile accumulator (one AVX2 register of f32).
const TILE_LANES: usize = 8;

/// `out[r][t] = w[r] . x[t]` for `R` weight rows and `T` activation rows: each weight and
/// activation chunk is loaded once for `R * T` multiply-adds (the prefill micro-kernel).
/// `load` widens weight elements to f32.
#[inline(always)]
pub fn tile<W: Copy, const R: usize, const T: usize>(
    w: [&[W]; R],
    x: [&[f32]; T],
    load: impl Fn(W) -> f32,
) -> [[f32; T]; R] {
    let k = x[0].len();
    let mut acc = [[[0f32; TILE_LANES]; T]; R];
    let full = k / TILE_LANES * TILE_LANES;
    let mut base = 0;
    while base < full {
        let xs: [[f32; TILE_LANES]; T] =
            std::array::from_fn(|t| std::array::from_fn(|l| x[t][base + l]));
        for r in 0..R {
            let wv: [f32; TILE_LANES] = std::array::from_fn(|l| load(w[r][base + l]));
            for t in 0..T {
                for l in 0..TILE_LANES {
                    acc[r][t][l] = wv[l].mul_add(xs[t][l], acc[r][t][l]);
                }
            }
        }
        base += TILE_LANES;
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|t| {
            let mut s = acc[r][t].iter().sum::<f32>();
            for i in full..k {
                s += load(w[r][i]) * x[t][i];
            }
            s
        })
    })
}

/// f32-weight tile (see [`tile`]).
#[inline(always)]
pub fn tile_f32<const R: usize, const T: usize>(w: [&[f32]; R], x: [&[f32]; T]) -> [[f32; T]; R] {
    tile(w, x, |v| v)
}

/// bf16-weight tile (see [`tile`]).
#[inline(always)]
pub fn tile_bf16<const R: usize, const T: usize>(w: [&[bf16]; R], x: [&[f32]; T]) -> [[f32; T]; R] {
    tile(w, x, widen)
}
