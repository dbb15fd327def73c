//! Portable reference kernels: activations in natural order, one code decoded at a time.

use super::{KernelSet, NibbleLayout, QuantIsa, RowArgs};
use crate::quant::fp8::e4m3_table;
use crate::quant::CodeKind;

/// The portable kernel set.
pub const KERNELS: KernelSet = KernelSet {
    isa: QuantIsa::Scalar,
    row_tile: 1,
    float_layout: NibbleLayout::Natural,
    int_layout: NibbleLayout::Natural,
    dot_float,
    dot_int8,
    dot_limbs: None,
};

/// Unscaled value of code `i` of the row.
#[inline]
fn value(kind: &CodeKind, codes: &[u8], i: usize) -> f32 {
    match kind {
        CodeKind::Nibble { table, high_first } => {
            let byte = codes[i / 2];
            let low = i.is_multiple_of(2) != *high_first;
            table[(if low { byte & 0x0F } else { byte >> 4 }) as usize]
        }
        CodeKind::Int8 => codes[i] as i8 as f32,
        CodeKind::Fp8 => e4m3_table()[codes[i] as usize],
    }
}

/// Signed integer value of code `i` (int4 or int8 codes only).
#[inline]
fn integer(kind: &CodeKind, codes: &[u8], i: usize) -> i32 {
    match kind {
        CodeKind::Nibble { .. } => value(kind, codes, i) as i32,
        _ => codes[i] as i8 as i32,
    }
}

/// Float-activation reference kernel (see [`super::FloatKernel`]).
///
/// # Safety
/// None beyond the slice sizes [`super::FloatKernel`] documents; `unsafe` only to share the
/// function-pointer type with the SIMD kernels.
pub unsafe fn dot_float(rows: &[RowArgs<'_>], xs: &[&[f32]], out: &mut [f32]) {
    for (row, out) in rows.iter().zip(out.chunks_mut(xs.len())) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            let mut total = 0f32;
            for (g, &scale) in row.scales.iter().enumerate() {
                let start = g * row.group_size;
                let end = (start + row.group_size).min(row.k);
                let mut acc = 0f32;
                for i in start..end {
                    acc += value(row.kind, row.codes, i) * x[i];
                }
                total += acc * scale;
            }
            *o = total;
        }
    }
}

/// int8-activation reference kernel (see [`super::IntKernel`]).
///
/// # Safety
/// As [`dot_float`].
pub unsafe fn dot_int8(rows: &[RowArgs<'_>], xs: &[&[i8]], _xsums: &[&[i32]], out: &mut [f32]) {
    for (row, out) in rows.iter().zip(out.chunks_mut(xs.len())) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            let mut total = 0f32;
            for (g, &scale) in row.scales.iter().enumerate() {
                let start = g * row.group_size;
                let end = (start + row.group_size).min(row.k);
                let mut acc = 0i32;
                for i in start..end {
                    acc += integer(row.kind, row.codes, i) * x[i] as i32;
                }
                total += acc as f32 * scale;
            }
            *o = total;
        }
    }
}
