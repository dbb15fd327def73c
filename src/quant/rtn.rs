//! Round-to-nearest quantization of one weight matrix, for every format, with an optional MSE
//! search over clipping ranges.
//!
//! Scale conventions follow compressed-tensors / llm-compressor so that exported checkpoints
//! decode the same way there:
//! - symmetric integers: `scale = max|w| / ((qmax - qmin) / 2)` (int4: `/7.5`), `q = clamp(
//!   round(w / scale), qmin, qmax)`;
//! - asymmetric integers: the range is widened to include 0, `scale = (max - min) / (qmax - qmin)`,
//!   `z = clamp(round(qmin - min / scale))`, `q = clamp(round(w / scale) + z)`;
//! - NF4/FP4: `absmax` per block of 64, `index = nearest(w * (1 / absmax))` (bitsandbytes);
//! - FP8: `scale = max|w| / 448`, `code = e4m3(w / scale)`.
//!
//! Integer scales are rounded to f16 *before* the codes are chosen, so the stored scale is the one
//! the codes were fitted to. Rounding is to nearest, ties to even (as `torch.round`).
//!
//! The MSE search (`RtnOptions::mse_clip`) shrinks each group's range by factors `1 - i/100`,
//! `i < 20`, and keeps the one with the least `sum |w - dequant(w)|^2.4`, the defaults of the
//! GPTQ reference code and llm-compressor's MSE observer.

use half::f16;
use rayon::prelude::*;

use super::fp8::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};
use super::nf4::{nearest_code, DoubleQuant, FP4_CODE_BOOK, NF4_CODE_BOOK};
use super::scheme::{QuantScheme, WeightFormat};
use super::weights::{f16_tensor, QuantizedTensor, Scales};
use crate::checkpoint::{Dtype, Tensor};
use crate::error::{Error, Result};

/// Options of round-to-nearest quantization.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RtnOptions {
    /// Search a clipping ratio per group that minimizes the error (slower, usually better).
    pub mse_clip: bool,
}

/// Shrink factors tried by the MSE search.
const CLIP_STEPS: usize = 20;
/// Exponent of the error norm of the MSE search.
const CLIP_NORM: f32 = 2.4;

fn shrink_factors(mse: bool) -> impl Iterator<Item = f32> {
    let steps = if mse { CLIP_STEPS } else { 1 };
    (0..steps).map(|i| 1.0 - i as f32 / 100.0)
}

fn clip_error(original: &[f32], decoded: impl Iterator<Item = f32>) -> f32 {
    original
        .iter()
        .zip(decoded)
        .map(|(&w, d)| (w - d).abs().powf(CLIP_NORM))
        .sum()
}

/// Integer range of `bits`.
fn int_range(bits: u8) -> (f32, f32) {
    let half = (1i32 << (bits - 1)) as f32;
    (-half, half - 1.0)
}

/// Scale (rounded to f16) and zero point of one integer group whose values span `[lo, hi]`.
pub fn int_params(lo: f32, hi: f32, bits: u8, symmetric: bool) -> (f32, i32) {
    let (qmin, qmax) = int_range(bits);
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let raw = if symmetric {
        lo.abs().max(hi) / ((qmax - qmin) / 2.0)
    } else {
        (hi - lo) / (qmax - qmin)
    };
    let scale = f16::from_f32(raw).to_f32();
    if scale == 0.0 || !scale.is_finite() {
        // An all-zero group: any scale decodes it exactly.
        return (1.0, 0);
    }
    let zero = if symmetric {
        0
    } else {
        (qmin - lo / scale).round_ties_even().clamp(qmin, qmax) as i32
    };
    (scale, zero)
}

/// The integer code of `w`.
#[inline]
pub fn int_code(w: f32, scale: f32, zero: i32, bits: u8) -> i32 {
    let (qmin, qmax) = int_range(bits);
    ((w / scale).round_ties_even() + zero as f32).clamp(qmin, qmax) as i32
}

/// Quantizes a row-major `[rows, cols]` f32 matrix.
pub fn quantize_matrix(
    weight: &[f32],
    shape: [usize; 2],
    scheme: &QuantScheme,
    options: &RtnOptions,
) -> Result<QuantizedTensor> {
    let [rows, cols] = shape;
    if weight.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot quantize {} values as [{rows}, {cols}]",
            weight.len()
        )));
    }
    if let Some(bad) = weight.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "weight value {} at index {bad} is not finite",
            weight[bad]
        )));
    }
    match scheme.weight {
        WeightFormat::Int { bits, symmetric } => {
            quantize_int(weight, shape, scheme, bits, symmetric, options)
        }
        WeightFormat::Nf4 | WeightFormat::Fp4 => quantize_nf4(weight, shape, scheme, options),
        WeightFormat::Fp8 => quantize_fp8(weight, shape, scheme, options),
    }
}

/// Quantizes a dense 2-D tensor of any float dtype.
pub fn quantize_tensor(
    tensor: &Tensor,
    scheme: &QuantScheme,
    options: &RtnOptions,
) -> Result<QuantizedTensor> {
    let shape = tensor.shape();
    if shape.len() != 2 || !tensor.dtype().is_float() {
        return Err(Error::InvalidArgument(format!(
            "only 2-D float tensors are quantized, not {:?} of {:?}",
            shape,
            tensor.dtype()
        )));
    }
    quantize_matrix(&tensor.to_f32_vec(), [shape[0], shape[1]], scheme, options)
}

fn quantize_int(
    weight: &[f32],
    [rows, cols]: [usize; 2],
    scheme: &QuantScheme,
    bits: u8,
    symmetric: bool,
    options: &RtnOptions,
) -> Result<QuantizedTensor> {
    let group_size = scheme.group_size(cols);
    let groups = cols.div_ceil(group_size);
    // Per row: codes (offset-coded u8 for int4, i8 bits for int8), scales, zero points.
    let per_row: Vec<(Vec<u8>, Vec<f32>, Vec<i8>)> = weight
        .par_chunks(cols)
        .map(|row| {
            let mut codes = Vec::with_capacity(cols);
            let mut scales = Vec::with_capacity(groups);
            let mut zeros = Vec::with_capacity(groups);
            for group in row.chunks(group_size) {
                let lo = group.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut best = (f32::INFINITY, 1.0, 0);
                for p in shrink_factors(options.mse_clip) {
                    let (scale, zero) = int_params(lo * p, hi * p, bits, symmetric);
                    let error = if options.mse_clip {
                        clip_error(
                            group,
                            group
                                .iter()
                                .map(|&w| (int_code(w, scale, zero, bits) - zero) as f32 * scale),
                        )
                    } else {
                        0.0
                    };
                    if error < best.0 {
                        best = (error, scale, zero);
                    }
                }
                let (_, scale, zero) = best;
                scales.push(scale);
                zeros.push(zero as i8);
                codes.extend(
                    group
                        .iter()
                        .map(|&w| int_code(w, scale, zero, bits) as i8 as u8),
                );
            }
            (codes, scales, zeros)
        })
        .collect();
    let mut scales = Vec::with_capacity(rows * groups);
    let mut zeros = Vec::with_capacity(rows * groups);
    let codes = if bits == 4 {
        let words_per_row = cols.div_ceil(8);
        let mut words = vec![0u32; rows * words_per_row];
        for (r, (codes, s, z)) in per_row.iter().enumerate() {
            for (k, &c) in codes.iter().enumerate() {
                let offset_coded = ((c as i8 as i32 + 8) & 0x0F) as u32;
                words[r * words_per_row + k / 8] |= offset_coded << (4 * (k % 8));
            }
            scales.extend_from_slice(s);
            zeros.extend_from_slice(z);
        }
        Tensor::from_bytes(
            vec![rows, words_per_row],
            Dtype::I32,
            bytemuck::cast_slice(&words),
        )
    } else {
        let mut bytes = Vec::with_capacity(rows * cols);
        for (codes, s, z) in &per_row {
            bytes.extend_from_slice(codes);
            scales.extend_from_slice(s);
            zeros.extend_from_slice(z);
        }
        Tensor::from_bytes(vec![rows, cols], Dtype::I8, &bytes)
    };
    QuantizedTensor::new(
        *scheme,
        [rows, cols],
        codes,
        Scales::Dense(f16_tensor(vec![rows, groups], &scales)),
        (!symmetric).then_some(zeros),
    )
}

fn quantize_nf4(
    weight: &[f32],
    [rows, cols]: [usize; 2],
    scheme: &QuantScheme,
    options: &RtnOptions,
) -> Result<QuantizedTensor> {
    let code_book = if scheme.weight == WeightFormat::Nf4 {
        &NF4_CODE_BOOK
    } else {
        &FP4_CODE_BOOK
    };
    let block = scheme.group_size(cols);
    let row_bytes = cols.div_ceil(2);
    let per_row: Vec<(Vec<u8>, Vec<f32>)> = weight
        .par_chunks(cols)
        .map(|row| {
            let mut indices = Vec::with_capacity(cols);
            let mut absmax = Vec::with_capacity(cols.div_ceil(block));
            for values in row.chunks(block) {
                let max_abs = values.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let mut best = (f32::INFINITY, max_abs);
                for p in shrink_factors(options.mse_clip && max_abs > 0.0) {
                    let candidate = max_abs * p;
                    let inverse = if candidate > 0.0 {
                        1.0 / candidate
                    } else {
                        0.0
                    };
                    let error = if options.mse_clip {
                        clip_error(
                            values,
                            values.iter().map(|&w| {
                                code_book[nearest_code(code_book, w * inverse) as usize] * candidate
                            }),
                        )
                    } else {
                        0.0
                    };
                    if error < best.0 {
                        best = (error, candidate);
                    }
                }
                let scale = best.1;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                indices.extend(values.iter().map(|&w| nearest_code(code_book, w * inverse)));
                absmax.push(scale);
            }
            let mut bytes = vec![0u8; row_bytes];
            for (k, &i) in indices.iter().enumerate() {
                // bitsandbytes order: the first value of a pair in the high nibble.
                bytes[k / 2] |= if k % 2 == 0 { i << 4 } else { i };
            }
            (bytes, absmax)
        })
        .collect();
    let mut codes = Vec::with_capacity(rows * row_bytes);
    let mut absmax = Vec::new();
    for (b, a) in per_row {
        codes.extend_from_slice(&b);
        absmax.extend_from_slice(&a);
    }
    let groups = cols.div_ceil(block);
    let scales = if scheme.double_quant {
        Scales::Double(DoubleQuant::encode(&absmax))
    } else {
        Scales::Dense(Tensor::from_f32(vec![rows, groups], absmax))
    };
    QuantizedTensor::new(
        *scheme,
        [rows, cols],
        Tensor::from_bytes(vec![rows, row_bytes], Dtype::U8, &codes),
        scales,
        None,
    )
}

fn quantize_fp8(
    weight: &[f32],
    [rows, cols]: [usize; 2],
    scheme: &QuantScheme,
    options: &RtnOptions,
) -> Result<QuantizedTensor> {
    let group_size = scheme.group_size(cols);
    let row_block = scheme.row_block();
    let groups = cols.div_ceil(group_size);
    let row_blocks = rows.div_ceil(row_block);
    // One scale per (row block, group): the cells it covers.
    let cell = |rb: usize, g: usize| {
        let rows_range = rb * row_block..((rb + 1) * row_block).min(rows);
        let cols_range = g * group_size..((g + 1) * group_size).min(cols);
        rows_range.flat_map(move |r| cols_range.clone().map(move |c| r * cols + c))
    };
    let scales: Vec<f32> = (0..row_blocks * groups)
        .into_par_iter()
        .map(|i| {
            let (rb, g) = (i / groups, i % groups);
            let values: Vec<f32> = cell(rb, g).map(|idx| weight[idx]).collect();
            let max_abs = values.iter().fold(0f32, |a, &v| a.max(v.abs()));
            if max_abs == 0.0 {
                return 1.0;
            }
            let mut best = (f32::INFINITY, max_abs / E4M3_MAX);
            for p in shrink_factors(options.mse_clip) {
                let scale = max_abs * p / E4M3_MAX;
                let error = if options.mse_clip {
                    clip_error(
                        &values,
                        values
                            .iter()
                            .map(|&w| e4m3_to_f32(f32_to_e4m3(w / scale)) * scale),
                    )
                } else {
                    0.0
                };
                if error < best.0 {
                    best = (error, scale);
                }
            }
            best.1
        })
        .collect();
    let codes: Vec<u8> = weight
        .par_iter()
        .enumerate()
        .map(|(idx, &w)| {
            let (r, c) = (idx / cols, idx % cols);
            let scale = scales[(r / row_block) * groups + c / group_size];
            f32_to_e4m3(w / scale)
        })
        .collect();
    QuantizedTensor::new(
        *scheme,
        [rows, cols],
        Tensor::from_bytes(vec![rows, cols], Dtype::F8E4M3, &codes),
        Scales::Dense(Tensor::from_f32(vec![row_blocks, groups], scales)),
        None,
    )
}
