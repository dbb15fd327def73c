//! Fused dequantize-and-multiply on the CPU: `y = x W^T + b` with W a [`QuantizedTensor`],
//! never materializing W in floating point.
//!
//! Work is split over output rows with rayon; each task walks its rows once per tile of up to
//! [`TOKEN_TILE`] activation rows, so a weight row is decoded once per tile (GEMV for decode,
//! tiled GEMM for prefill). Per row, a kernel computes `sum_g scale[g] * sum_{i in g} v(code_i) *
//! x_i`; zero-point offsets (`w = scale * v - offset`) are subtracted afterwards with per-group
//! activation sums, and the bias added.
//!
//! Kernels exist per instruction set ([`scalar`] is the reference; `avx2`, `avx512` on x86-64),
//! chosen once by CPU feature detection; `LOWBIT_ISA=scalar|avx2|avx512` caps the choice.
//!
//! Activation layout: kernels that unpack 4-bit codes with SIMD produce the low nibbles of `B`
//! bytes, then their high nibbles. The activations are permuted once per call to match: within
//! every chunk of `2B` values covering `B` code bytes, first the values whose codes sit in the low
//! nibbles (in byte order), then those in the high nibbles. `B = 0` means natural order. Rows of
//! activations are zero-padded to a multiple of 32 values.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::quant::activation::{fake_quantize_fp8, quantize_int8_rows};
use crate::quant::{ActivationFormat, CodeKind, Granularity, QuantizedTensor};

/// Activation rows processed together against one decoded weight row.
pub const TOKEN_TILE: usize = 8;

/// Instruction sets with quantized kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuantIsa {
    /// Portable Rust: the reference.
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ VNNI for the int8 path when present).
    Avx512,
}

/// One weight row as a kernel sees it.
#[derive(Clone, Copy, Debug)]
pub struct RowArgs<'a> {
    /// How codes decode.
    pub kind: &'a CodeKind,
    /// The row's stored codes (at least `ceil(k/2)` bytes for nibbles, `k` for bytes).
    pub codes: &'a [u8],
    /// Input features.
    pub k: usize,
    /// Values per scale group: a multiple of 32, or `>= k` (one group).
    pub group_size: usize,
    /// One scale per group.
    pub scales: &'a [f32],
}

/// Float path: `out[t] = sum_g scales[g] * sum_{i in g} v(code_i) * xs[t][i]`, `xs[t]` in the
/// kernel's activation layout, `ceil(k/32)*32` values, zero past `k`. `xs.len() <= TOKEN_TILE`.
pub type FloatKernel = unsafe fn(&RowArgs<'_>, &[&[f32]], &mut [f32]);

/// Integer path (int4/int8 codes, int8 activations): `out[t] = sum_g scales[g] * sum_{i in g}
/// q(code_i) * xs[t][i]` with `q` the signed integer value; `xsums[t][g]` is the sum of `xs[t]`
/// over group `g` (for kernels that multiply offset-coded unsigned codes).
pub type IntKernel = unsafe fn(&RowArgs<'_>, &[&[i8]], &[&[i32]], &mut [f32]);

/// The kernels of one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct KernelSet {
    /// Which instruction set.
    pub isa: QuantIsa,
    /// `B` of the float path's activation layout for nibble codes (0: natural order).
    pub float_nibble_block: usize,
    /// `B` of the integer path's activation layout for nibble codes (0: natural order).
    pub int_nibble_block: usize,
    /// Float-activation kernel.
    pub dot_float: FloatKernel,
    /// int8-activation kernel.
    pub dot_int8: IntKernel,
}

/// The kernel sets this CPU can run, the portable one first.
pub fn available() -> Vec<KernelSet> {
    let mut sets = vec![scalar::KERNELS];
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::supported() {
            sets.push(avx2::KERNELS);
        }
        if avx512::supported() {
            sets.push(avx512::KERNELS);
        }
    }
    sets
}

/// The best kernel set, capped by `LOWBIT_ISA` (chosen once per process).
pub fn kernels() -> KernelSet {
    static CHOSEN: OnceLock<KernelSet> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cap = match std::env::var("LOWBIT_ISA").as_deref() {
            Ok("scalar") => QuantIsa::Scalar,
            Ok("avx2") => QuantIsa::Avx2,
            _ => QuantIsa::Avx512,
        };
        available()
            .into_iter()
            .rfind(|k| k.isa <= cap)
            .unwrap_or(scalar::KERNELS)
    })
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per-thread buffers reused across calls, so the hot path does not allocate once warm.
#[derive(Default)]
struct Scratch {
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

/// `out[t, n] = sum_k x[t, k] * w[n, k] + bias[n]` with the best kernels; `x` is `[m, k]`,
/// `out` `[m, n]`.
pub fn linear(x: &[f32], m: usize, w: &QuantizedTensor, bias: Option<&[f32]>, out: &mut [f32]) {
    linear_with(&kernels(), x, m, w, bias, out)
}

/// [`linear`] with an explicit kernel set (tests and benchmarks compare them).
pub fn linear_with(
    set: &KernelSet,
    x: &[f32],
    m: usize,
    w: &QuantizedTensor,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "quantized linear: input size");
    assert_eq!(out.len(), m * n, "quantized linear: output size");
    let scheme = w.scheme();
    let kind = w.code_kind();
    let group_size = w.group_size();
    let groups = w.groups();
    let padded = k.div_ceil(32) * 32;
    let nibble = matches!(kind, CodeKind::Nibble { .. });
    let high_first = matches!(
        kind,
        CodeKind::Nibble {
            high_first: true,
            ..
        }
    );
    let integer = scheme.activation == ActivationFormat::Int8;
    let block = match (nibble, integer) {
        (false, _) => 0,
        (true, false) => set.float_nibble_block,
        (true, true) => set.int_nibble_block,
    };

    // Activations: per-token dynamic quantization first, then the kernel layout.
    let mut activations: Vec<f32>;
    let x = if scheme.activation == ActivationFormat::Fp8 {
        activations = x.to_vec();
        let group = if scheme.granularity == Granularity::Block128 {
            crate::quant::scheme::FP8_BLOCK
        } else {
            k
        };
        fake_quantize_fp8(&mut activations, k, group);
        &activations[..]
    } else {
        x
    };
    // Per-token, per-group sums of the activations as the kernels see them (for offsets).
    let mut sums = vec![0f32; m * groups];
    let mut token_scales = vec![1f32; m];
    let mut float_x = Vec::new();
    let mut int_x: Vec<i8> = Vec::new();
    let mut int_sums: Vec<i32> = vec![0; m * groups];
    if integer {
        let mut codes = vec![0i8; m * k];
        quantize_int8_rows(x, k, &mut codes, &mut token_scales);
        int_x = vec![0i8; m * padded];
        for t in 0..m {
            let row = &codes[t * k..(t + 1) * k];
            permute(
                row,
                &mut int_x[t * padded..(t + 1) * padded],
                block,
                high_first,
            );
            for (g, part) in row.chunks(group_size).enumerate() {
                let s: i32 = part.iter().map(|&v| v as i32).sum();
                int_sums[t * groups + g] = s;
                sums[t * groups + g] = s as f32 * token_scales[t];
            }
        }
    } else {
        float_x = vec![0f32; m * padded];
        for t in 0..m {
            let row = &x[t * k..(t + 1) * k];
            permute(
                row,
                &mut float_x[t * padded..(t + 1) * padded],
                block,
                high_first,
            );
            if w.has_offsets() {
                for (g, part) in row.chunks(group_size).enumerate() {
                    sums[t * groups + g] = part.iter().sum();
                }
            }
        }
    }

    // Results weight-row-major ([n, m]) so each task owns a contiguous block.
    let rows_per_task = (16_384 / (k * m.min(TOKEN_TILE)).max(1)).clamp(1, n.max(1));
    let compute = |target: &mut [f32]| {
        target
            .par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(|(task, block_out)| {
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let Scratch { scales, offsets } = &mut *scratch;
                    scales.resize(groups, 0.0);
                    offsets.clear();
                    offsets.resize(groups, 0.0);
                    let first = task * rows_per_task;
                    for r in 0..block_out.len() / m {
                        let row = first + r;
                        w.fill_row_scales(row, scales, offsets);
                        let args = RowArgs {
                            kind: &kind,
                            codes: w.row_codes(row),
                            k,
                            group_size,
                            scales,
                        };
                        let dst = &mut block_out[r * m..(r + 1) * m];
                        for t0 in (0..m).step_by(TOKEN_TILE) {
                            let tile = TOKEN_TILE.min(m - t0);
                            let mut acc = [0f32; TOKEN_TILE];
                            if integer {
                                let xs: [&[i8]; TOKEN_TILE] = std::array::from_fn(|i| {
                                    let t = (t0 + i).min(m - 1);
                                    &int_x[t * padded..(t + 1) * padded]
                                });
                                let xsums: [&[i32]; TOKEN_TILE] = std::array::from_fn(|i| {
                                    let t = (t0 + i).min(m - 1);
                                    &int_sums[t * groups..(t + 1) * groups]
                                });
                                // SAFETY: a KernelSet only exists for instruction sets this CPU
                                // supports (see `available`); the slices have the documented sizes.
                                unsafe {
                                    (set.dot_int8)(
                                        &args,
                                        &xs[..tile],
                                        &xsums[..tile],
                                        &mut acc[..tile],
                                    )
                                };
                                for (i, a) in acc[..tile].iter_mut().enumerate() {
                                    *a *= token_scales[t0 + i];
                                }
                            } else {
                                let xs: [&[f32]; TOKEN_TILE] = std::array::from_fn(|i| {
                                    let t = (t0 + i).min(m - 1);
                                    &float_x[t * padded..(t + 1) * padded]
                                });
                                // SAFETY: as above.
                                unsafe { (set.dot_float)(&args, &xs[..tile], &mut acc[..tile]) };
                            }
                            for (i, &a) in acc[..tile].iter().enumerate() {
                                let t = t0 + i;
                                let mut v = a;
                                if w.has_offsets() {
                                    let s = &sums[t * groups..(t + 1) * groups];
                                    v -= offsets.iter().zip(s).map(|(o, s)| o * s).sum::<f32>();
                                }
                                if let Some(b) = bias {
                                    v += b[row];
                                }
                                dst[t] = v;
                            }
                        }
                    }
                })
            });
    };
    if m == 1 {
        compute(out);
    } else {
        let mut transposed = vec![0f32; m * n];
        compute(&mut transposed);
        for row in 0..n {
            for t in 0..m {
                out[t * n + row] = transposed[row * m + t];
            }
        }
    }
}

/// Writes `src` (k values) into `dst` (padded to a multiple of 32) in the activation layout with
/// nibble block `block` (see the module documentation).
pub fn permute<T: Copy + Default>(src: &[T], dst: &mut [T], block: usize, high_first: bool) {
    dst.fill(T::default());
    if block == 0 {
        dst[..src.len()].copy_from_slice(src);
        return;
    }
    let chunk = 2 * block;
    for (i, &v) in src.iter().enumerate() {
        let base = i / chunk * chunk;
        let within = i % chunk;
        let byte = within / 2;
        let low = within.is_multiple_of(2) != high_first;
        dst[base + byte + if low { 0 } else { block }] = v;
    }
}
