//! The portable kernels of `scalar.rs`, compiled with AVX2 and FMA enabled so the compiler emits
//! 256-bit vector code. Callers check the CPU features first (see `isa()`).

use std::arch::x86_64::*;

use half::bf16;

use super::scalar;

/// f32 dot product, AVX2 code generation.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    scalar::dot_f32(a, b)
}

/// bf16-weight dot product, AVX2 code generation.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_bf16(a: &[f32], b: &[bf16]) -> f32 {
    scalar::dot_bf16(a, b)
}

/// Rows per prefill tile.
pub const TILE_ROWS: usize = 3;
/// Activation rows per prefill tile (3 x 4 accumulators + 4 operands fill the 16 registers).
pub const TILE_TOKENS: usize = 4;

/// Defines an AVX2 prefill tile over one weight type: `out[r][t] = w[r] . x[t]` with 12
/// accumulators. A macro rather than a closure parameter, because closures do not inherit
/// `target_feature` and the intrinsics inside them would not inline.
macro_rules! tile_kernel {
    ($(#[$doc:meta])* $name:ident, $weight:ty, |$p:ident| $load:expr, |$v:ident| $widen:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA. Every row must have the same length (checked).
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn $name(
            w: [&[$weight]; TILE_ROWS],
            x: [&[f32]; TILE_TOKENS],
        ) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
            let k = x[0].len();
            assert!(w.iter().all(|r| r.len() == k) && x.iter().all(|r| r.len() == k));
            let mut acc = [[_mm256_setzero_ps(); TILE_TOKENS]; TILE_ROWS];
            let full = k / 8 * 8;
            let mut i = 0;
            while i < full {
                let mut wv = [_mm256_setzero_ps(); TILE_ROWS];
                for r in 0..TILE_ROWS {
                    // SAFETY: i + 8 <= full <= k, the length of every row.
                    let $p = unsafe { w[r].as_ptr().add(i) };
                    wv[r] = $load;
                }
                for t in 0..TILE_TOKENS {
                    // SAFETY: as above.
                    let xv = unsafe { _mm256_loadu_ps(x[t].as_ptr().add(i)) };
                    for r in 0..TILE_ROWS {
                        acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                    }
                }
                i += 8;
            }
            let mut out = [[0f32; TILE_TOKENS]; TILE_ROWS];
            for r in 0..TILE_ROWS {
                for t in 0..TILE_TOKENS {
                    let mut lanes = [0f32; 8];
                    // SAFETY: `lanes` holds 8 f32.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][t]) };
                    let mut s: f32 = lanes.iter().sum();
                    for j in full..k {
                        let $v = w[r][j];
                        s += $widen * x[t][j];
                    }
                    out[r][t] = s;
                }
            }
            out
        }
    };
}

tile_kernel!(
    /// f32-weight prefill tile, AVX2 + FMA.
    tile_f32,
    f32,
    |p| unsafe { _mm256_loadu_ps(p) },
    |v| v
);

tile_kernel!(
    /// bf16-weight prefill tile, AVX2 + FMA: bf16 widens exactly to f32 by a 16-bit shift.
    tile_bf16,
    bf16,
    |p| unsafe {
        // SAFETY: `p` points at 8 readable bf16 values (16 bytes).
        let raw = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
    },
    |v| v.to_f32()
);
