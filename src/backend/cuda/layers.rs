//! Projections on the device: one weight matrix ([`DeviceLinear`], quantized for the fused
//! kernels or dense bf16 for cuBLAS), and projections that read the same input stacked into one
//! matrix ([`Stacked`]: q/k/v, gate/up), so a decode step launches one product for them.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::blas::Blas;
use super::device::{driver_error, CudaDevice};
use super::layout::PackedWeight;
use super::linear::{CudaQuantLinear, GEMV_MAX_TOKENS};
use super::scaled::{CudaScaledLinear, ScaledNeeds, ScaledScratch};
use crate::error::{Error, Result};
use crate::model::{Linear, Weight};
use crate::quant::scheme::ActivationFormat;
use crate::quant::QuantizedTensor;

/// A projection's weight on the device.
pub(super) enum DeviceWeight {
    /// Packed codes for the fused kernels.
    Quantized(Box<CudaQuantLinear>),
    /// bf16, row-major `[rows, cols]`, for cuBLAS.
    Dense(CudaSlice<bf16>),
    /// Codes for products with quantized activations (W8A8) through cuBLASLt.
    Scaled(Box<CudaScaledLinear>),
}

/// The scratch buffers products share: a dequantized weight (quantized weights with many
/// tokens) and the buffers of products with quantized activations.
pub(super) struct Scratch {
    pub(super) dequantized: CudaSlice<bf16>,
    pub(super) scaled: ScaledScratch,
}

/// Whether `q`'s activations are quantized too (so it runs as a scaled product).
fn scaled_activations(q: &QuantizedTensor) -> bool {
    q.scheme().activation != ActivationFormat::Float
}

/// A projection on the device. Its bias is applied by the kernel that reads its output.
pub(super) struct DeviceLinear {
    pub(super) weight: DeviceWeight,
    pub(super) bias: Option<CudaSlice<f32>>,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

/// Projections of one input: stacked into one matrix when their weights allow (all dense, or
/// all quantized with the same packing), else one matrix each.
pub(super) enum Stacked {
    /// Outputs side by side in each token's row, in the parts' order.
    One(Box<DeviceLinear>),
    /// One output buffer per part.
    Each(Vec<DeviceLinear>),
}

pub(super) fn upload_f32(
    device: &CudaDevice,
    values: &[f32],
    what: &str,
) -> Result<CudaSlice<f32>> {
    device
        .stream()
        .clone_htod(values)
        .map_err(driver_error(&format!("uploading {what}")))
}

fn upload_bf16(device: &CudaDevice, values: &[f32], what: &str) -> Result<CudaSlice<bf16>> {
    let converted: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
    device
        .stream()
        .clone_htod(&converted)
        .map_err(driver_error(&format!("uploading {what}")))
}

/// `e` with the module name in front.
pub(super) fn context(e: Error, name: &str) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{name}: {m}")),
        Error::Device(m) => Error::Device(format!("{name}: {m}")),
        other => other,
    }
}

impl DeviceLinear {
    /// Uploads `linear` (weight and bias).
    pub(super) fn new(device: &CudaDevice, linear: &Linear, name: &str) -> Result<Self> {
        let [rows, cols] = linear.weight.shape();
        let weight = match &linear.weight {
            Weight::Quantized(q) if scaled_activations(q) => DeviceWeight::Scaled(Box::new(
                CudaScaledLinear::new(device, &[q]).map_err(|e| context(e, name))?,
            )),
            Weight::Quantized(q) => DeviceWeight::Quantized(Box::new(
                CudaQuantLinear::new(device, q).map_err(|e| context(e, name))?,
            )),
            Weight::Dense(t) => DeviceWeight::Dense(upload_bf16(device, &t.to_f32_vec(), name)?),
        };
        let bias = match &linear.bias {
            Some(b) => Some(upload_f32(device, b, name)?),
            None => None,
        };
        Ok(DeviceLinear {
            weight,
            bias,
            rows,
            cols,
        })
    }

    /// Bytes on the device.
    pub(super) fn bytes(&self) -> usize {
        let weight = match &self.weight {
            DeviceWeight::Quantized(q) => q.device_bytes(),
            DeviceWeight::Dense(w) => w.len() * 2,
            DeviceWeight::Scaled(s) => s.device_bytes(),
        };
        weight + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }

    /// Values the dequantization buffer needs for this weight (0 for dense ones).
    pub(super) fn dequantized_values(&self) -> usize {
        match self.weight {
            DeviceWeight::Quantized(_) => self.rows * self.cols,
            DeviceWeight::Dense(_) | DeviceWeight::Scaled(_) => 0,
        }
    }

    /// What the scaled-product scratch needs for this weight.
    pub(super) fn scaled_needs(&self) -> ScaledNeeds {
        match &self.weight {
            DeviceWeight::Scaled(s) => s.needs(),
            _ => ScaledNeeds::default(),
        }
    }

    /// `y = x W^T` for `m` rows (bias not applied): the fused kernel for up to
    /// [`GEMV_MAX_TOKENS`] rows, dequantize-then-cuBLAS above; quantized activations through
    /// cuBLASLt.
    pub(super) fn forward(
        &self,
        device: &CudaDevice,
        blas: &Blas,
        x: &CudaSlice<bf16>,
        m: usize,
        y: &mut CudaSlice<bf16>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        match &self.weight {
            DeviceWeight::Dense(w) => blas.linear(x, w, y, [m, self.rows, self.cols]),
            DeviceWeight::Quantized(q) if m <= GEMV_MAX_TOKENS => q.forward(device, x, m, y),
            DeviceWeight::Quantized(q) => {
                q.dequantize_into(device, &mut scratch.dequantized)?;
                blas.linear(x, &scratch.dequantized, y, [m, self.rows, self.cols])
            }
            DeviceWeight::Scaled(s) => s.forward(device, blas, x, m, y, &mut scratch.scaled),
        }
    }
}

impl Stacked {
    /// Uploads `parts` (biases are not kept: the consumer applies the parts' own).
    pub(super) fn new(device: &CudaDevice, parts: &[(&Linear, String)]) -> Result<Self> {
        let cols = parts[0].0.in_features();
        let rows: usize = parts.iter().map(|(l, _)| l.out_features()).sum();
        let quantized: Vec<_> = parts
            .iter()
            .filter_map(|(l, _)| match &l.weight {
                Weight::Quantized(q) => Some(q),
                Weight::Dense(_) => None,
            })
            .collect();
        let scaled = quantized.iter().filter(|q| scaled_activations(q)).count();
        let stacked = if scaled == parts.len() {
            // One matrix when the parts can share it, else one each (below).
            CudaScaledLinear::new(device, &quantized)
                .ok()
                .map(|s| DeviceWeight::Scaled(Box::new(s)))
        } else if scaled > 0 {
            None
        } else if quantized.len() == parts.len() {
            let packed = quantized
                .iter()
                .zip(parts)
                .map(|(q, (_, name))| PackedWeight::pack(q).map_err(|e| context(e, name)))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&PackedWeight> = packed.iter().collect();
            match PackedWeight::concat_rows(&refs) {
                Some(joined) => Some(DeviceWeight::Quantized(Box::new(
                    CudaQuantLinear::from_packed(device, &joined)?,
                ))),
                None => None,
            }
        } else if quantized.is_empty() {
            let values: Vec<f32> = parts
                .iter()
                .flat_map(|(l, _)| l.weight.to_f32_vec())
                .collect();
            Some(DeviceWeight::Dense(upload_bf16(
                device,
                &values,
                &parts[0].1,
            )?))
        } else {
            None
        };
        Ok(match stacked {
            Some(weight) => Stacked::One(Box::new(DeviceLinear {
                weight,
                bias: None,
                rows,
                cols,
            })),
            None => Stacked::Each(
                parts
                    .iter()
                    .map(|(l, name)| {
                        let mut one = DeviceLinear::new(device, l, name)?;
                        one.bias = None;
                        Ok(one)
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// The matrices.
    pub(super) fn linears(&self) -> Vec<&DeviceLinear> {
        match self {
            Stacked::One(l) => vec![l.as_ref()],
            Stacked::Each(ls) => ls.iter().collect(),
        }
    }
}

/// Uploads every bias of `parts` (`None` where a part has none).
pub(super) fn biases(
    device: &CudaDevice,
    parts: &[(&Linear, String)],
) -> Result<Vec<Option<CudaSlice<f32>>>> {
    parts
        .iter()
        .map(|(l, name)| {
            l.bias
                .as_ref()
                .map(|b| upload_f32(device, b, name))
                .transpose()
        })
        .collect()
}
