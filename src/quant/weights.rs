//! [`QuantizedTensor`]: a quantized weight matrix `[out, in]` as the kernels read it and as
//! checkpoints store it.
//!
//! Stored layouts, by format (`groups = ceil(in / group_size)`):
//!
//! | format        | codes                                   | scales                          |
//! |---------------|-----------------------------------------|---------------------------------|
//! | int4          | I32 `[out, ceil(in/8)]`, see below      | F16 `[out, groups]`             |
//! | int8          | I8 `[out, in]`, two's complement        | F16 `[out, groups]`             |
//! | NF4 / FP4     | U8 `[out, ceil(in/2)]`, see [`super::nf4`] | F32 absmax `[out, groups]` or double-quantized |
//! | FP8 E4M3      | F8_E4M3 `[out, in]`, see [`super::fp8`] | F32 `[out, 1]` or `[ceil(out/128), ceil(in/128)]` |
//!
//! int4 packing is compressed-tensors' `pack-quantized` layout: value `k` of a row lives in word
//! `k / 8` at bits `4 * (k % 8)`, stored offset-coded as `q + 8` (so -8..7 becomes 0..15); a row
//! is padded with zero codes to a whole word. Asymmetric zero points `z` (-8..7, or -128..127 for
//! int8) are kept per `[out, groups]`. Dequantization: `w = (q - z) * scale`.

use std::collections::BTreeMap;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::fp8::e4m3_to_f32;
use super::nf4::{DoubleQuant, FP4_CODE_BOOK, NF4_CODE_BOOK};
use super::scheme::{QuantScheme, WeightFormat};
use crate::checkpoint::{Dtype, Tensor};
use crate::error::{Error, Result};

/// Per-group scales of a quantized tensor.
#[derive(Clone, Debug)]
pub enum Scales {
    /// A float tensor `[row_blocks, groups]` (F16 for integers, F32 for NF4/FP4 and FP8).
    Dense(Tensor),
    /// NF4/FP4 absmax values quantized a second time.
    Double(DoubleQuant),
}

/// How the kernels turn one stored code into a value before scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CodeKind {
    /// Two 4-bit indices per byte into `table`; `high_first`: the first of each pair is in the
    /// high nibble (bitsandbytes) rather than the low one (compressed-tensors).
    Nibble {
        /// Value of each of the 16 codes.
        table: [f32; 16],
        /// Nibble order within a byte.
        high_first: bool,
    },
    /// One two's-complement int8 per byte.
    Int8,
    /// One FP8 E4M3 per byte.
    Fp8,
}

/// The value of each offset-coded int4 code (`u - 8`).
pub const INT4_TABLE: [f32; 16] = [
    -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
];

/// A quantized weight matrix.
#[derive(Clone, Debug)]
pub struct QuantizedTensor {
    scheme: QuantScheme,
    rows: usize,
    cols: usize,
    codes: Tensor,
    scales: Scales,
    zero_points: Option<Vec<i8>>,
}

impl QuantizedTensor {
    /// Assembles a tensor from its parts, checking every size against the scheme.
    pub fn new(
        scheme: QuantScheme,
        shape: [usize; 2],
        codes: Tensor,
        scales: Scales,
        zero_points: Option<Vec<i8>>,
    ) -> Result<Self> {
        let [rows, cols] = shape;
        let t = QuantizedTensor {
            scheme,
            rows,
            cols,
            codes,
            scales,
            zero_points,
        };
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(format!("quantized tensor: {what}")));
        let (expected_dtype, row_bytes) = match self.scheme.weight {
            WeightFormat::Int { bits: 4, .. } => (Dtype::I32, self.cols.div_ceil(8) * 4),
            WeightFormat::Int { bits: 8, .. } => (Dtype::I8, self.cols),
            WeightFormat::Int { bits, .. } => return bad(format!("{bits}-bit integers")),
            WeightFormat::Nf4 | WeightFormat::Fp4 => (Dtype::U8, self.cols.div_ceil(2)),
            WeightFormat::Fp8 => (Dtype::F8E4M3, self.cols),
        };
        if self.codes.dtype() != expected_dtype
            || self.codes.raw_bytes().len() != self.rows * row_bytes
        {
            return bad(format!(
                "codes of {:?} {:?} do not fit {} for shape [{}, {}]",
                self.codes.dtype(),
                self.codes.shape(),
                self.scheme,
                self.rows,
                self.cols
            ));
        }
        let scale_count = self.row_blocks() * self.groups();
        match &self.scales {
            Scales::Dense(s) if s.len() != scale_count || !s.dtype().is_float() => {
                return bad(format!(
                    "{} scales of {:?}, expected {scale_count} floats",
                    s.len(),
                    s.dtype()
                ))
            }
            Scales::Double(dq)
                if dq.codes.len() != scale_count
                    || dq.absmax.len()
                        != scale_count.div_ceil(super::scheme::DOUBLE_QUANT_BLOCK) =>
            {
                return bad("double-quantized scales of the wrong size".into())
            }
            _ => {}
        }
        let asymmetric = matches!(
            self.scheme.weight,
            WeightFormat::Int {
                symmetric: false,
                ..
            }
        );
        match &self.zero_points {
            Some(z) if !asymmetric || z.len() != self.rows * self.groups() => {
                bad("zero points do not fit the scheme".into())
            }
            None if asymmetric => bad("an asymmetric scheme needs zero points".into()),
            _ => Ok(()),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> &QuantScheme {
        &self.scheme
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Input features covered by one scale.
    pub fn group_size(&self) -> usize {
        self.scheme.group_size(self.cols)
    }

    /// Scale groups per row.
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group_size())
    }

    /// Rows of the scale grid (`ceil(out/128)` for blocks, else `out`).
    pub fn row_blocks(&self) -> usize {
        self.rows.div_ceil(self.scheme.row_block())
    }

    /// The codes tensor.
    pub fn codes(&self) -> &Tensor {
        &self.codes
    }

    /// The scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// Zero points `[out, groups]` of asymmetric integer schemes.
    pub fn zero_points(&self) -> Option<&[i8]> {
        self.zero_points.as_deref()
    }

    /// Bytes of codes per row.
    pub fn row_bytes(&self) -> usize {
        self.codes.raw_bytes().len() / self.rows.max(1)
    }

    /// The stored codes of one row.
    #[inline]
    pub fn row_codes(&self, row: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.codes.raw_bytes()[row * n..(row + 1) * n]
    }

    /// How codes decode.
    pub fn code_kind(&self) -> CodeKind {
        match self.scheme.weight {
            WeightFormat::Int { bits: 4, .. } => CodeKind::Nibble {
                table: INT4_TABLE,
                high_first: false,
            },
            WeightFormat::Int { .. } => CodeKind::Int8,
            WeightFormat::Nf4 => CodeKind::Nibble {
                table: NF4_CODE_BOOK,
                high_first: true,
            },
            WeightFormat::Fp4 => CodeKind::Nibble {
                table: FP4_CODE_BOOK,
                high_first: true,
            },
            WeightFormat::Fp8 => CodeKind::Fp8,
        }
    }

    /// Whether [`QuantizedTensor::fill_row_scales`] produces non-zero offsets.
    pub fn has_offsets(&self) -> bool {
        self.zero_points.is_some()
    }

    /// Scales of `row`, one per group, into `scales[..groups]`; with zero points, `offsets[g] =
    /// scales[g] * z[g]` so that `w = scale * value - offset`.
    pub fn fill_row_scales(&self, row: usize, scales: &mut [f32], offsets: &mut [f32]) {
        let groups = self.groups();
        let first = (row / self.scheme.row_block()) * groups;
        match &self.scales {
            Scales::Dense(t) => match t.dtype() {
                Dtype::F16 => {
                    let all = t.as_f16().expect("aligned f16 scales");
                    all[first..first + groups].convert_to_f32_slice(&mut scales[..groups]);
                }
                Dtype::F32 => {
                    scales[..groups]
                        .copy_from_slice(&t.as_f32().expect("aligned f32")[first..first + groups]);
                }
                _ => {
                    let bytes = &t.raw_bytes()[first * t.dtype().size()..];
                    let tmp = Tensor::from_bytes(
                        vec![groups],
                        t.dtype(),
                        &bytes[..groups * t.dtype().size()],
                    );
                    scales[..groups].copy_from_slice(&tmp.to_f32_vec());
                }
            },
            Scales::Double(dq) => {
                for (g, d) in scales[..groups].iter_mut().enumerate() {
                    *d = dq.get(first + g);
                }
            }
        }
        if let Some(z) = &self.zero_points {
            for g in 0..groups {
                offsets[g] = scales[g] * z[row * groups + g] as f32;
            }
        }
    }

    /// Decoded (unscaled) value of code `k` of `row`: the scalar reference for every kernel.
    #[inline]
    pub fn code_value(&self, row: usize, k: usize) -> f32 {
        let codes = self.row_codes(row);
        match self.code_kind() {
            CodeKind::Nibble { table, high_first } => {
                let byte = codes[k / 2];
                let low = k.is_multiple_of(2) != high_first;
                table[(if low { byte & 0x0F } else { byte >> 4 }) as usize]
            }
            CodeKind::Int8 => codes[k] as i8 as f32,
            CodeKind::Fp8 => e4m3_to_f32(codes[k]),
        }
    }

    /// The dequantized matrix, row-major `[out, in]`, f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let groups = self.groups();
        let group_size = self.group_size();
        let mut scales = vec![0f32; groups];
        let mut offsets = vec![0f32; groups];
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for row in 0..self.rows {
            self.fill_row_scales(row, &mut scales, &mut offsets);
            for k in 0..self.cols {
                let g = k / group_size;
                out.push(self.code_value(row, k) * scales[g] - offsets[g]);
            }
        }
        out
    }

    /// Bytes held: codes, scales and zero points.
    pub fn storage_bytes(&self) -> usize {
        let scales = match &self.scales {
            Scales::Dense(t) => t.raw_bytes().len(),
            Scales::Double(dq) => dq.codes.len() + dq.absmax.len() * 4 + 4,
        };
        self.codes.raw_bytes().len() + scales + self.zero_points.as_ref().map_or(0, |z| z.len())
    }

    /// The tensors a checkpoint stores for the layer `prefix` (e.g. `model.layers.0.mlp.up_proj`),
    /// named as compressed-tensors does where it has a name: `weight_packed` (int4) or `weight`
    /// (int8, FP8, NF4/FP4 codes), `weight_scale`, `weight_zero_point`, `weight_shape`; NF4/FP4
    /// double quantization adds `weight_absmax_code`, `weight_absmax_scale`,
    /// `weight_absmax_offset`.
    pub fn to_tensors(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        let codes_name = match self.scheme.weight {
            WeightFormat::Int { bits: 4, .. } => "weight_packed",
            _ => "weight",
        };
        out.insert(format!("{prefix}.{codes_name}"), self.codes.clone());
        match &self.scales {
            Scales::Dense(t) => {
                out.insert(format!("{prefix}.weight_scale"), t.clone());
            }
            Scales::Double(dq) => {
                let n = dq.codes.len();
                out.insert(
                    format!("{prefix}.weight_absmax_code"),
                    Tensor::from_bytes(vec![n], Dtype::U8, &dq.codes),
                );
                out.insert(
                    format!("{prefix}.weight_absmax_scale"),
                    Tensor::from_f32(vec![dq.absmax.len()], dq.absmax.clone()),
                );
                out.insert(
                    format!("{prefix}.weight_absmax_offset"),
                    Tensor::from_f32(vec![1], vec![dq.offset]),
                );
            }
        }
        if let Some(z) = &self.zero_points {
            let bytes: Vec<u8> = z.iter().map(|&v| v as u8).collect();
            out.insert(
                format!("{prefix}.weight_zero_point"),
                Tensor::from_bytes(vec![self.rows, self.groups()], Dtype::I8, &bytes),
            );
        }
        let shape = [self.rows as i32, self.cols as i32];
        out.insert(
            format!("{prefix}.weight_shape"),
            Tensor::from_bytes(vec![2], Dtype::I32, bytemuck::cast_slice(&shape)),
        );
        out
    }

    /// Reads the layer `prefix` back from tensors written by [`QuantizedTensor::to_tensors`];
    /// `get` looks a tensor up by name. Every size is checked; codes stay zero-copy.
    pub fn from_tensors<'a>(
        scheme: QuantScheme,
        prefix: &str,
        get: impl Fn(&str) -> Result<&'a Tensor>,
    ) -> Result<Self> {
        let shape_tensor = get(&format!("{prefix}.weight_shape"))?;
        let shape = shape_tensor.to_f32_vec();
        if shape.len() != 2 || shape.iter().any(|&d| d < 0.0) {
            return Err(Error::InvalidArgument(format!(
                "{prefix}.weight_shape: expected two sizes, found {shape:?}"
            )));
        }
        let dims = [shape[0] as usize, shape[1] as usize];
        let codes_name = match scheme.weight {
            WeightFormat::Int { bits: 4, .. } => "weight_packed",
            _ => "weight",
        };
        let codes = get(&format!("{prefix}.{codes_name}"))?.clone();
        let scales = if scheme.double_quant {
            let code_tensor = get(&format!("{prefix}.weight_absmax_code"))?;
            let offset = get(&format!("{prefix}.weight_absmax_offset"))?.to_f32_vec();
            Scales::Double(DoubleQuant {
                codes: code_tensor.raw_bytes().to_vec(),
                absmax: get(&format!("{prefix}.weight_absmax_scale"))?.to_f32_vec(),
                offset: offset.first().copied().unwrap_or(0.0),
            })
        } else {
            let s = get(&format!("{prefix}.weight_scale"))?;
            // Kernels read f16/f32 scales in place; other float types are converted once.
            Scales::Dense(match s.dtype() {
                Dtype::F16 if s.as_f16().is_some() => s.clone(),
                Dtype::F32 if s.as_f32().is_some() => s.clone(),
                _ => Tensor::from_f32(s.shape().to_vec(), s.to_f32_vec()),
            })
        };
        let zero_points = match scheme.weight {
            WeightFormat::Int {
                symmetric: false, ..
            } => Some(
                get(&format!("{prefix}.weight_zero_point"))?
                    .to_f32_vec()
                    .iter()
                    .map(|&v| v as i8)
                    .collect(),
            ),
            _ => None,
        };
        QuantizedTensor::new(scheme, dims, codes, scales, zero_points)
            .map_err(|e| Error::InvalidArgument(format!("{prefix}: {e}")))
    }
}

/// f16 scales as a tensor.
pub(crate) fn f16_tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    let v: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
    Tensor::from_bytes(shape, Dtype::F16, bytemuck::cast_slice(&v))
}
