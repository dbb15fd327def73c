//! Projections with quantized activations on the GPU (W8A8 int8, W8A8 FP8 per channel or in
//! 128x128 blocks): each product quantizes its bf16 input per token (or per 1x128 group) with
//! the CPU's rounding (`kernels/scaled_mm.cu`), multiplies the codes on the tensor cores through
//! cuBLASLt ([`Blas::scaled`]) and, for int8, scales the i32 sums back to bf16.
//!
//! Weights are plain row-major codes, each row padded with zero codes to `cols_pad` (a multiple
//! of 16, of 128 for blocks); weight scales are f32, one per row, or one per 128x128 block laid
//! out `[ceil(rows / 128)][kb4]` (kb4: the column blocks rounded up to 4), as cuBLASLt reads
//! them. Token counts are padded to a multiple of 4 with zero codes.

use cudarc::driver::{CudaFunction, CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits};
use half::bf16;

use super::blas::{Blas, ScaledKind, ScaledOperands};
use super::device::{driver_error, CudaDevice, SCALED_MM};
use crate::error::{Error, Result};
use crate::quant::scheme::{ActivationFormat, Granularity, WeightFormat, FP8_BLOCK};
use crate::quant::{QuantScheme, QuantizedTensor};

/// Threads of the quantization kernel (`THREADS` in `kernels/scaled_mm.cu`).
const QUANTIZE_THREADS: u32 = 128;
/// Threads and 8-value loads per thread of the one-pass per-token kernel (`ROW_THREADS`,
/// `ROW_VECS`).
const ROW_THREADS: u32 = 512;
const ROW_VECS: usize = 4;

/// Tokens rounded up to what cuBLASLt takes.
pub fn padded_tokens(m: usize) -> usize {
    m.next_multiple_of(4)
}

/// The scratch buffers of scaled products: activation codes and scales, i32 sums (int8) and a
/// bf16 output for token counts cuBLASLt cannot write directly (FP8, `m` not a multiple of 4).
pub struct ScaledScratch {
    codes: CudaSlice<u8>,
    scales: CudaSlice<f32>,
    sums: CudaSlice<i32>,
    out: CudaSlice<bf16>,
}

/// The largest product a [`ScaledScratch`] serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaledNeeds {
    /// Padded input features.
    pub cols: usize,
    /// Output features.
    pub rows: usize,
    /// Whether an int8 product is among them.
    pub int8: bool,
    /// Whether an FP8 product is among them.
    pub fp8: bool,
}

impl ScaledNeeds {
    /// The larger of two needs.
    pub fn max(self, other: ScaledNeeds) -> ScaledNeeds {
        ScaledNeeds {
            cols: self.cols.max(other.cols),
            rows: self.rows.max(other.rows),
            int8: self.int8 || other.int8,
            fp8: self.fp8 || other.fp8,
        }
    }
}

impl ScaledScratch {
    /// Buffers for up to `tokens` tokens of every product `needs` describes.
    pub fn new(device: &CudaDevice, tokens: usize, needs: ScaledNeeds) -> Result<Self> {
        fn zeros<T: DeviceRepr + ValidAsZeroBits>(
            device: &CudaDevice,
            n: usize,
        ) -> Result<CudaSlice<T>> {
            device
                .stream()
                .alloc_zeros(n.max(1))
                .map_err(driver_error("allocating the scaled-product scratch"))
        }
        let t = padded_tokens(tokens.max(1));
        // Buffers a kind of product does not use keep one element.
        let only = |on: bool, n: usize| if on { n } else { 0 };
        let used = needs.int8 || needs.fp8;
        Ok(ScaledScratch {
            codes: zeros(device, only(used, t * needs.cols))?,
            scales: zeros(
                device,
                only(used, t * needs.cols.div_ceil(FP8_BLOCK).max(1)),
            )?,
            sums: zeros(device, only(needs.int8, t * needs.rows))?,
            out: zeros(device, only(needs.fp8, t * needs.rows))?,
        })
    }
}

/// A weight matrix of a scheme with quantized activations, on the GPU.
pub struct CudaScaledLinear {
    rows: usize,
    cols: usize,
    cols_pad: usize,
    kind: ScaledKind,
    codes: CudaSlice<u8>,
    scales: CudaSlice<f32>,
    quantize: CudaFunction,
    /// The one-pass per-token quantization (rows of a multiple of 8 values, up to
    /// `ROW_THREADS * ROW_VECS * 8`).
    quantize_row: CudaFunction,
    rescale: CudaFunction,
}

/// Why the GPU does not take `scheme` with quantized activations (`None` when it does).
pub fn unsupported_reason(scheme: &QuantScheme) -> Option<String> {
    match (scheme.activation, scheme.weight, scheme.granularity) {
        (ActivationFormat::Float, ..) => Some("activations are not quantized".into()),
        (
            ActivationFormat::Int8,
            WeightFormat::Int {
                bits: 8,
                symmetric: true,
            },
            Granularity::Channel,
        ) => None,
        (ActivationFormat::Int8, ..) => Some(
            "int8 activations on the GPU take symmetric int8 weights with one scale per output \
             channel (w8a8)"
                .into(),
        ),
        (
            ActivationFormat::Fp8,
            WeightFormat::Fp8,
            Granularity::Channel | Granularity::Block128,
        ) => None,
        (ActivationFormat::Fp8, ..) => Some("FP8 activations need FP8 weights".into()),
    }
}

impl CudaScaledLinear {
    /// Uploads `parts` (one weight, or several of one scheme whose rows are stacked in order,
    /// sharing their input).
    pub fn new(device: &CudaDevice, parts: &[&QuantizedTensor]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::invalid("a scaled product needs a weight"))?;
        let scheme = *first.scheme();
        let unsupported = |why: String| {
            Err(Error::InvalidArgument(format!(
                "GPU kernels for {scheme}: {why}"
            )))
        };
        if let Some(why) = unsupported_reason(&scheme) {
            return unsupported(why);
        }
        let cols = first.cols();
        if parts
            .iter()
            .any(|p| *p.scheme() != scheme || p.cols() != cols)
        {
            return unsupported("stacked weights differ in scheme or width".into());
        }
        let rows: usize = parts.iter().map(|p| p.rows()).sum();
        if !rows.is_multiple_of(16) {
            return unsupported(format!("{rows} output features is not a multiple of 16"));
        }
        let kind = match (scheme.activation, scheme.granularity) {
            (ActivationFormat::Int8, _) => ScaledKind::Int8,
            (_, Granularity::Block128) => ScaledKind::Fp8Block,
            _ => ScaledKind::Fp8Channel,
        };
        let block = kind == ScaledKind::Fp8Block;
        if block
            && parts[..parts.len() - 1]
                .iter()
                .any(|p| !p.rows().is_multiple_of(FP8_BLOCK))
        {
            return unsupported(format!(
                "stacked block-scaled weights need {FP8_BLOCK}-row multiples"
            ));
        }
        let cols_pad = cols.next_multiple_of(if block { FP8_BLOCK } else { 16 });
        let mut codes = vec![0u8; rows * cols_pad];
        let column_blocks = cols_pad / FP8_BLOCK;
        let kb4 = column_blocks.next_multiple_of(4);
        let mut scales = if block {
            vec![0f32; rows.div_ceil(FP8_BLOCK) * kb4]
        } else {
            vec![0f32; rows]
        };
        let mut row_scales = vec![0f32; first.groups()];
        let mut offsets = vec![0f32; first.groups()];
        let mut at = 0;
        for part in parts {
            for r in 0..part.rows() {
                let row = at + r;
                codes[row * cols_pad..][..cols].copy_from_slice(&part.row_codes(r)[..cols]);
                part.fill_row_scales(r, &mut row_scales, &mut offsets);
                if !block {
                    scales[row] = row_scales[0];
                } else if row.is_multiple_of(FP8_BLOCK) {
                    let n = part.groups().min(column_blocks);
                    scales[row / FP8_BLOCK * kb4..][..n].copy_from_slice(&row_scales[..n]);
                }
            }
            at += part.rows();
        }
        let stream = device.stream();
        let codes = stream
            .clone_htod(&codes)
            .map_err(driver_error("uploading weights"))?;
        let scales = stream
            .clone_htod(&scales)
            .map_err(driver_error("uploading scales"))?;
        let module = device.module(SCALED_MM, &[])?;
        let (by_group, by_row) = if kind == ScaledKind::Int8 {
            ("quantize_int8", "quantize_row_int8")
        } else {
            ("quantize_fp8", "quantize_row_fp8")
        };
        let quantize = CudaDevice::function(&module, by_group)?;
        let quantize_row = CudaDevice::function(&module, by_row)?;
        let rescale = CudaDevice::function(&module, "scale_int32")?;
        Ok(CudaScaledLinear {
            rows,
            cols,
            cols_pad,
            kind,
            codes,
            scales,
            quantize,
            quantize_row,
            rescale,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of codes and scales on the device.
    pub fn device_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4
    }

    /// What its scratch must hold.
    pub fn needs(&self) -> ScaledNeeds {
        ScaledNeeds {
            cols: self.cols_pad,
            rows: self.rows,
            int8: self.kind == ScaledKind::Int8,
            fp8: self.kind != ScaledKind::Int8,
        }
    }

    /// `y = x W^T` for `m` tokens (`x` bf16 `[m, cols]`, `y` bf16 `[m, rows]`), queued on the
    /// device's stream; `scratch` must have been sized for `m` tokens and this weight.
    pub fn forward(
        &self,
        device: &CudaDevice,
        blas: &Blas,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
        scratch: &mut ScaledScratch,
    ) -> Result<()> {
        let m_pad = padded_tokens(m);
        let groups = if self.kind == ScaledKind::Fp8Block {
            self.cols_pad / FP8_BLOCK
        } else {
            1
        };
        if m == 0
            || x.len() < m * self.cols
            || y.len() < m * self.rows
            || scratch.codes.len() < m_pad * self.cols_pad
            || scratch.scales.len() < m_pad * groups
        {
            return Err(Error::InvalidArgument(format!(
                "scaled product [{}, {}]: {m} tokens need {} inputs and {} outputs (got {} and \
                 {}), or the scratch is too small",
                self.rows,
                self.cols,
                m * self.cols,
                m * self.rows,
                x.len(),
                y.len()
            )));
        }
        let group = self.cols_pad / groups;
        let [m_i, m_pad_i, cols, cols_pad, group] =
            [m, m_pad, self.cols, self.cols_pad, group].map(|v| v as i32);
        let what = "launching the activation quantization";
        let one_pass = groups == 1
            && self.cols.is_multiple_of(8)
            && self.cols_pad <= ROW_THREADS as usize * ROW_VECS * 8;
        if one_pass {
            let mut args = device.args();
            args.ptr(x)
                .ptr(&scratch.codes)
                .ptr(&scratch.scales)
                .i32(m_i)
                .i32(cols)
                .i32(cols_pad);
            let config = LaunchConfig {
                grid_dim: (m_pad as u32, 1, 1),
                block_dim: (ROW_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches `quantize_row_int8` / `quantize_row_fp8`; x holds m rows of cols
            // values (a multiple of 8, so 16-byte loads stay in the row), the codes m_pad rows
            // of cols_pad (at most what the block's threads cover) and the scales m_pad
            // (checked above); the grid covers exactly m_pad tokens.
            unsafe { device.launch(&self.quantize_row, config, &mut args, what) }?;
        } else {
            let mut args = device.args();
            args.ptr(x)
                .ptr(&scratch.codes)
                .ptr(&scratch.scales)
                .i32(m_i)
                .i32(m_pad_i)
                .i32(cols)
                .i32(cols_pad)
                .i32(group);
            let config = LaunchConfig {
                grid_dim: (m_pad as u32, groups as u32, 1),
                block_dim: (QUANTIZE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches `quantize_int8` / `quantize_fp8` in kernels/scaled_mm.cu; x holds
            // m rows of cols values, the codes m_pad rows of cols_pad and the scales groups *
            // m_pad (checked above); the grid covers exactly m_pad tokens and cols_pad / group
            // groups.
            unsafe { device.launch(&self.quantize, config, &mut args, what) }?;
        }
        let operands = ScaledOperands {
            weight: &self.codes,
            weight_scales: &self.scales,
            activations: &scratch.codes,
            activation_scales: &scratch.scales,
        };
        let dims = [m_pad, self.rows, self.cols_pad];
        match self.kind {
            ScaledKind::Int8 => {
                if scratch.sums.len() < m_pad * self.rows {
                    return Err(Error::invalid("scaled product: scratch too small"));
                }
                blas.scaled(self.kind, operands, &mut scratch.sums, dims)?;
                let mut args = device.args();
                args.ptr(&scratch.sums)
                    .ptr(&scratch.scales)
                    .ptr(&self.scales)
                    .ptr(y)
                    .i32(m_i)
                    .i32(self.rows as i32);
                let config = LaunchConfig {
                    grid_dim: ((m * self.rows).div_ceil(256) as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: matches `scale_int32`; sums hold m_pad * rows values, the token
                // scales m_pad, the row scales rows and y m * rows (checked above); the kernel
                // bounds its index by m * rows.
                let what = "launching the int8 rescale";
                unsafe { device.launch(&self.rescale, config, &mut args, what) }?;
            }
            _ if m == m_pad => blas.scaled(self.kind, operands, y, dims)?,
            _ => {
                if scratch.out.len() < m_pad * self.rows {
                    return Err(Error::invalid("scaled product: scratch too small"));
                }
                blas.scaled(self.kind, operands, &mut scratch.out, dims)?;
                let head = scratch.out.slice(..m * self.rows);
                device
                    .stream()
                    .memcpy_dtod(&head, y)
                    .map_err(driver_error("copying the product out"))?;
            }
        }
        Ok(())
    }
}
