//! Dynamic activation quantization, per token (row) or per 1x128 group.
//!
//! int8: `scale = max|x| / 127`, `q = clamp(round(x / scale), -127, 127)` (symmetric, as vLLM's
//! dynamic per-token int8). FP8: `scale = max|x| / 448`, `code = e4m3(x / scale)`.

use super::fp8::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};

/// Quantizes each row of `x` (`width` values) to int8; `codes` has `x.len()` entries, `scales`
/// one per row.
pub fn quantize_int8_rows(x: &[f32], width: usize, codes: &mut [i8], scales: &mut [f32]) {
    for ((row, dst), scale) in x
        .chunks_exact(width)
        .zip(codes.chunks_exact_mut(width))
        .zip(scales.iter_mut())
    {
        let max_abs = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
        *scale = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
        let inverse = 1.0 / *scale;
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// Replaces `x` by its FP8 quantize-dequantize image, one scale per `group` values of each row of
/// `width` (`group == width` for per-token scales).
pub fn fake_quantize_fp8(x: &mut [f32], width: usize, group: usize) {
    for row in x.chunks_exact_mut(width) {
        for part in row.chunks_mut(group.max(1)) {
            let max_abs = part.iter().fold(0f32, |a, &v| a.max(v.abs()));
            if max_abs == 0.0 {
                continue;
            }
            let scale = max_abs / E4M3_MAX;
            for v in part.iter_mut() {
                *v = e4m3_to_f32(f32_to_e4m3(*v / scale)) * scale;
            }
        }
    }
}
