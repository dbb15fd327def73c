//! Correctness checks of the GPU kernels against the CPU, shared by the GPU tests and the device
//! benchmark: fresh random weights quantized by RTN, random bf16 activations, the output poisoned
//! with NaN before each launch, and `||y - ref|| / ||ref||` against an f64 product of the
//! dequantized weights.

use cudarc::driver::CudaSlice;
use half::bf16;
use rayon::prelude::*;

use super::blas::Blas;
use super::device::{driver_error, CudaDevice};
use super::layout::DeviceFormat;
use super::linear::{CudaQuantLinear, Kernel};
use super::scaled::{CudaScaledLinear, ScaledScratch};
use crate::error::Result;
use crate::quant::{quantize_matrix, QuantScheme, RtnOptions};

/// Tolerance of exactly decoded formats (int4, int8, FP8): weights are exact bf16 values and
/// products add in f32, so the error is y's rounding to bf16, at most 2^-9 = 1.95e-3 of each
/// element; the rest (f32 sums of up to 14336 terms, per-tile scaling) stays under 1e-5.
pub const EXACT_TOLERANCE: f64 = 2.5e-3;
/// Tolerance of code-book formats (NF4, FP4): the code book is rounded to bf16 for the tensor
/// cores (at most 2^-9 per product) on top of y's rounding (2^-9).
pub const TABLE_TOLERANCE: f64 = 4.5e-3;
/// Tolerance of dequantize-then-cuBLAS: each weight is rounded to bf16 once (2^-9; NF4/FP4 code
/// books once more, 2^-9) and y once (2^-9): at most 3 * 2^-9 = 5.9e-3.
pub const DEQUANT_TOLERANCE: f64 = 6e-3;
/// Tolerance of FP8 x FP8 products: codes and their products are exact, y is rounded to bf16
/// (2^-9), and the FP8 tensor cores add with fewer bits than f32 between cuBLASLt's promotions
/// to f32 (measured on an H100, see `benches/cuda/NOTES.md`).
pub const FP8_TOLERANCE: f64 = 4e-3;
/// A bf16 NaN the kernels never produce from finite inputs.
const POISON: u16 = 0x7FC1;

/// The outcome of one kernel on one problem.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// What ran: scheme, shape, tokens, kernel.
    pub label: String,
    /// `||y - ref|| / ||ref||`; infinite when an output was left unwritten or is not finite.
    pub relative_error: f64,
    /// The bound it must stay under.
    pub tolerance: f64,
    /// Outputs still holding the poison value (or not finite).
    pub bad_outputs: usize,
}

impl CheckResult {
    /// Whether the kernel passed.
    pub fn passed(&self) -> bool {
        self.bad_outputs == 0 && self.relative_error < self.tolerance
    }
}

/// SplitMix64 with a normal-ish draw, enough for test data.
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly normal (sum of four uniforms), unit variance.
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866
    }
}

fn relative_error(got: &[bf16], want: &[f64]) -> (f64, usize) {
    let bad = got
        .iter()
        .filter(|v| v.to_bits() == POISON || !v.to_f32().is_finite())
        .count();
    let (mut err, mut norm) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        err += (g.to_f32() as f64 - w).powi(2);
        norm += w * w;
    }
    let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
    (if bad > 0 { f64::INFINITY } else { rel }, bad)
}

/// Poisons `y`, runs `launch`, and compares `y` with `want`.
fn run_checked(
    device: &CudaDevice,
    y: &mut CudaSlice<bf16>,
    want: &[f64],
    launch: impl FnOnce(&mut CudaSlice<bf16>) -> Result<()>,
) -> Result<(f64, usize)> {
    let stream = device.stream();
    let poison = vec![bf16::from_bits(POISON); y.len()];
    stream
        .memcpy_htod(&poison, y)
        .map_err(driver_error("poisoning the output"))?;
    launch(y)?;
    let got = stream
        .clone_dtoh(y)
        .map_err(driver_error("downloading the output"))?;
    Ok(relative_error(&got, want))
}

/// The seed of a check run: `LOWBIT_TEST_SEED` when set (to replay a run), else the clock, so
/// every run draws fresh inputs.
pub fn seed_from_env() -> u64 {
    std::env::var("LOWBIT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// GPU 0, or `None` after printing that `what` was skipped and why (machines without a GPU,
/// CI among them, pass the GPU tests this way).
pub fn device_or_skip(what: &str) -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: no usable GPU, {what} not checked: {e}");
            None
        }
    }
}

/// The decode kernels a check runs: one row tile per block with the warps chosen from the
/// shape, one warp (a warp walks every k tile) and 16 (most warps idle on short rows); two row
/// tiles with the chosen warps; four row tiles with 11 warps (the most the shared memory takes at
/// 16 tokens).
pub fn decode_kernels() -> Vec<Kernel> {
    [
        (1, None),
        (1, Some(1)),
        (1, Some(16)),
        (2, None),
        (4, Some(11)),
    ]
    .map(|(row_tiles, warps)| Kernel::Gemv { row_tiles, warps })
    .to_vec()
}

/// A random problem: weights with a few outliers, as trained matrices have, quantized by RTN;
/// bf16 activations.
struct Problem {
    quantized: crate::quant::QuantizedTensor,
    dense: Vec<f32>,
    x: Vec<bf16>,
    xf: Vec<f64>,
    shape: [usize; 3],
}

/// A random `[rows, cols]` weight with a few outliers, as trained matrices have, quantized to
/// `scheme` by RTN.
pub fn random_quantized(
    scheme: &QuantScheme,
    [rows, cols]: [usize; 2],
    rng: &mut Rng,
) -> Result<crate::quant::QuantizedTensor> {
    let weights: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let w = rng.normal() * 0.02;
            if i % 997 == 0 {
                w * 8.0
            } else {
                w
            }
        })
        .collect();
    quantize_matrix(&weights, [rows, cols], scheme, &RtnOptions::default())
}

impl Problem {
    fn new(
        scheme: &QuantScheme,
        [rows, cols]: [usize; 2],
        m: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let quantized = random_quantized(scheme, [rows, cols], rng)?;
        let dense = quantized.dequantize();
        let x: Vec<bf16> = (0..m * cols)
            .map(|_| bf16::from_f32(rng.normal()))
            .collect();
        let xf = x.iter().map(|v| v.to_f32() as f64).collect();
        Ok(Problem {
            quantized,
            dense,
            x,
            xf,
            shape: [m, rows, cols],
        })
    }

    /// `x w^T` in f64.
    fn reference(&self, w: &[f32], x: &[f64]) -> Vec<f64> {
        let [m, rows, cols] = self.shape;
        let mut y = vec![0f64; m * rows];
        y.par_chunks_mut(rows).enumerate().for_each(|(t, out)| {
            let xt = &x[t * cols..(t + 1) * cols];
            for (r, o) in out.iter_mut().enumerate() {
                *o = w[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(xt)
                    .map(|(&a, &b)| a as f64 * b)
                    .sum();
            }
        });
        y
    }
}

/// Checks a scheme with quantized activations (`w8a8`, `w8a8-fp8`, `w8a8-fp8-block`) on a
/// `[rows, cols]` weight against `m` tokens: [`CudaScaledLinear`] against the f64 product of
/// the dequantized weight and the activations quantized by the CPU's rules
/// (`crate::quant::activation`), from the same bf16 values.
pub fn check_scaled(
    device: &CudaDevice,
    blas: &Blas,
    scheme: &QuantScheme,
    [rows, cols]: [usize; 2],
    m: usize,
    rng: &mut Rng,
) -> Result<CheckResult> {
    use crate::quant::activation::{fake_quantize_fp8, quantize_int8_rows};
    use crate::quant::scheme::{ActivationFormat, Granularity, FP8_BLOCK};
    let problem = Problem::new(scheme, [rows, cols], m, rng)?;
    let xq: Vec<f64> = {
        let xs: Vec<f32> = problem.x.iter().map(|v| v.to_f32()).collect();
        if scheme.activation == ActivationFormat::Int8 {
            let mut codes = vec![0i8; m * cols];
            let mut scales = vec![0f32; m];
            quantize_int8_rows(&xs, cols, &mut codes, &mut scales);
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| c as f64 * scales[i / cols] as f64)
                .collect()
        } else {
            let mut xs = xs;
            let group = if scheme.granularity == Granularity::Block128 {
                FP8_BLOCK
            } else {
                cols
            };
            fake_quantize_fp8(&mut xs, cols, group);
            xs.iter().map(|&v| v as f64).collect()
        }
    };
    let want = problem.reference(&problem.dense, &xq);
    let linear = CudaScaledLinear::new(device, &[&problem.quantized])?;
    let stream = device.stream();
    let x_device = stream
        .clone_htod(&problem.x)
        .map_err(driver_error("uploading activations"))?;
    let mut y = stream
        .alloc_zeros::<bf16>(m * rows)
        .map_err(driver_error("allocating the output"))?;
    let mut scratch = ScaledScratch::new(device, m, linear.needs())?;
    let (relative_error, bad_outputs) = run_checked(device, &mut y, &want, |y| {
        linear.forward(device, blas, &x_device, m, y, &mut scratch)
    })?;
    Ok(CheckResult {
        label: format!("{scheme} [{rows}, {cols}] m={m} cuBLASLt"),
        relative_error,
        tolerance: if scheme.activation == ActivationFormat::Int8 {
            EXACT_TOLERANCE
        } else {
            FP8_TOLERANCE
        },
        bad_outputs,
    })
}

/// Checks `scheme` on a `[rows, cols]` weight against `m` tokens with every kernel in
/// `kernels`; with `blas`, also the GPU dequantization followed by cuBLAS, and cuBLAS alone on
/// the weight dequantized by the CPU.
pub fn check_product(
    device: &CudaDevice,
    blas: Option<&Blas>,
    scheme: &QuantScheme,
    [rows, cols]: [usize; 2],
    m: usize,
    kernels: &[Kernel],
    rng: &mut Rng,
) -> Result<Vec<CheckResult>> {
    let problem = Problem::new(scheme, [rows, cols], m, rng)?;
    let (quantized, dense, x) = (&problem.quantized, &problem.dense, &problem.x);
    let reference = |w: &[f32]| problem.reference(w, &problem.xf);
    let want = reference(dense);

    let linear = CudaQuantLinear::new(device, quantized)?;
    let tolerance = if linear.format() == DeviceFormat::NibbleTable {
        TABLE_TOLERANCE
    } else {
        EXACT_TOLERANCE
    };
    let stream = device.stream();
    let x_device = stream
        .clone_htod(x)
        .map_err(driver_error("uploading activations"))?;
    let mut y = stream
        .alloc_zeros::<bf16>(m * rows)
        .map_err(driver_error("allocating the output"))?;
    let mut results = Vec::new();
    for &kernel in kernels {
        let (relative_error, bad_outputs) = run_checked(device, &mut y, &want, |y| {
            linear.forward_with(device, &x_device, m, y, kernel)
        })?;
        results.push(CheckResult {
            label: format!("{scheme} [{rows}, {cols}] m={m} {kernel:?}"),
            relative_error,
            tolerance,
            bad_outputs,
        });
    }
    if let Some(blas) = blas {
        let mut dequantized = stream
            .alloc_zeros::<bf16>(rows * cols)
            .map_err(driver_error("allocating the dequantized weight"))?;
        let (relative_error, bad_outputs) = run_checked(device, &mut y, &want, |y| {
            linear.dequantize_into(device, &mut dequantized)?;
            blas.linear(&x_device, &dequantized, y, [m, rows, cols])
        })?;
        results.push(CheckResult {
            label: format!("{scheme} [{rows}, {cols}] m={m} dequantize + cuBLAS"),
            relative_error,
            tolerance: DEQUANT_TOLERANCE,
            bad_outputs,
        });
        let w16: Vec<bf16> = dense.iter().map(|&v| bf16::from_f32(v)).collect();
        let w_rounded: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        let want = reference(&w_rounded);
        let w_device = stream
            .clone_htod(&w16)
            .map_err(driver_error("uploading bf16 weights"))?;
        let (relative_error, bad_outputs) = run_checked(device, &mut y, &want, |y| {
            blas.linear(&x_device, &w_device, y, [m, rows, cols])
        })?;
        results.push(CheckResult {
            label: format!("cuBLAS bf16 [{rows}, {cols}] m={m}"),
            relative_error,
            tolerance: EXACT_TOLERANCE,
            bad_outputs,
        });
    }
    Ok(results)
}
