//! AVX2 + FMA kernels (placeholder: the portable code compiled for AVX2).

use super::{KernelSet, QuantIsa, RowArgs};

/// Whether this CPU runs these kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel set.
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Avx2,
    float_nibble_block: 0,
    int_nibble_block: 0,
    dot_float,
    dot_int8,
};

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_float(row: &RowArgs<'_>, xs: &[&[f32]], out: &mut [f32]) {
    // SAFETY: same contract.
    unsafe { super::scalar::dot_float(row, xs, out) }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_int8(row: &RowArgs<'_>, xs: &[&[i8]], xsums: &[&[i32]], out: &mut [f32]) {
    // SAFETY: same contract.
    unsafe { super::scalar::dot_int8(row, xs, xsums, out) }
}
