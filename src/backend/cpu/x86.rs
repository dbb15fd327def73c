//! The portable kernels of `scalar.rs`, compiled with AVX2 and FMA enabled so the compiler emits
//! 256-bit vector code. Callers check the CPU features first (see `isa()`).

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
