//! AWQ, activation-aware weight quantization (Lin et al. 2023), with the search of AutoAWQ and
//! llm-compressor's `AWQModifier`: per-input-channel scales that enlarge the weight columns fed
//! by large activations before round-to-nearest quantization, and an optional per-group
//! clipping search.
//!
//! # Contract with the calibration pipeline
//!
//! [`awq_search`] looks at one group of projections that read the same input `X`
//! (`[tokens, width]`, row-major): q/k/v after the input RMSNorm, o_proj, gate/up after the
//! post-attention RMSNorm, down. It returns scales `s` (`width` values, one per input channel).
//! The pipeline divides whatever produces `X` by `s` (the RMSNorm weight; for o_proj the rows of
//! v_proj, for down the rows of up_proj) and multiplies column `j` of every consumer weight
//! `W` (`[out, width]`) by `s[j]`. The transformed layer computes `(X / s) (W * s)^T`, equal to
//! `X W^T` mathematically; the scaled weights `W * s` are what gets quantized afterwards.
//! AutoAWQ skips o_proj when v_proj and o_proj differ in shape (grouped-query attention): one
//! v_proj row feeds several heads, so per-channel scales cannot be folded into it.
//!
//! # Search
//!
//! `x_mean[j] = mean_t |X[t, j]|` over all tokens. For `r = i / grid`, `i < grid`:
//! - `s = max(x_mean^r, 1e-4)`, or with `duo_scaling`
//!   `s = max(x_mean^r / (w_mean^(1 - r) + 1e-4), 1e-4)` where `w_mean[j]` is the mean over all
//!   consumers' rows of `|W[o, j]| / (max |W[o, group of j]| + 1e-6)` (AutoAWQ's per-group
//!   normalized weight magnitude);
//! - `s /= sqrt(max(s) min(s))`;
//! - each consumer becomes `W'' = dequant(rtn(W * s)) / s`, and the candidate's error is
//!   `sum_consumers ||X W^T - X W''^T||^2 / tokens` (squared Frobenius norm of the output
//!   difference, averaged over tokens).
//!
//! The scales of the smallest error win. Plain RTN (`s = 1`, the `r = 0` point without
//! `duo_scaling`) is always a candidate and wins ties, so AWQ's error never exceeds
//! [`AwqResult::baseline_error`]. Unlike AutoAWQ, which measures the error at the output of the
//! enclosing module (attention or MLP), the error here is at each projection's own output.
//!
//! The search quantizes with plain round-to-nearest (`RtnOptions::default()`), as AutoAWQ's
//! pseudo-quantization does; the pipeline may quantize the final `W * s` with other options.
//!
//! # Clipping
//!
//! [`awq_clip_search`] is AutoAWQ's `_search_best_clip` for one projection of the already
//! scaled layer: a clipping threshold per `(row, group)`, applied with [`clip_weight`] before
//! quantization.
//!
//! # Cost
//!
//! The error is measured on at most `max_tokens` rows of `X`, evenly spaced (`x_mean` uses all
//! tokens). `||X D^T||^2` for the weight difference `D` is computed either directly
//! (tokens x rows x width per candidate) or through the Gram matrix `X^T X` (once
//! tokens x width^2 in f64, then rows x width^2 per candidate), whichever costs less. The dot
//! products run in rayon tasks over blocks of rows (and tokens), with an AVX2+FMA build of the
//! same loops on x86-64 CPUs that have it. All functions are pure and thread-safe; they use
//! rayon's global pool.

use std::ops::{Add, Mul};

use rayon::prelude::*;

use super::rtn::{quantize_matrix, RtnOptions};
use super::scheme::QuantScheme;
use super::smoothquant::{channel_absmean, check_consumers};
use crate::error::{Error, Result};

/// Lower clamp of an unnormalized AWQ scale (AutoAWQ).
const MIN_SCALE: f64 = 1e-4;
/// Added to `w_mean^(1 - r)` with duo scaling (AutoAWQ).
const DUO_EPSILON: f64 = 1e-4;
/// Added to a group's maximum when normalizing weight magnitudes (AutoAWQ).
const GROUP_MAX_EPSILON: f64 = 1e-6;
/// Rows per rayon task when building the Gram matrix and in the clipping search.
const ROW_BLOCK: usize = 16;
/// Output rows per task of the loss: their weight differences stay in L2 while activations or
/// Gram rows stream past.
const LOSS_ROWS: usize = 64;
/// Tokens per task of the direct loss.
const LOSS_TOKENS: usize = 256;
/// Tokens per inner tile of the direct loss, whose activations stay in L1 across the task's rows.
const TOKEN_TILE: usize = 16;

/// Runs a block kernel on the best path for this CPU.
macro_rules! best {
    ($kernel:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: `use_avx2` detected AVX2 and FMA on this CPU.
            unsafe { avx2::$kernel($($arg),*) }
        } else {
            $kernel::<false>($($arg),*)
        }
        #[cfg(not(target_arch = "x86_64"))]
        $kernel::<false>($($arg),*)
    }};
}

/// Options of [`awq_search`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqOptions {
    /// Number of ratios tried: `r = i / grid` for `i < grid` (AutoAWQ: 20).
    pub grid: usize,
    /// `s = x_mean^r / w_mean^(1 - r)` instead of `s = x_mean^r` (AutoAWQ's and
    /// llm-compressor's default: on).
    pub duo_scaling: bool,
    /// At most this many tokens (evenly spaced rows of `X`) enter the error; at least 1.
    pub max_tokens: usize,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions {
            grid: 20,
            duo_scaling: true,
            max_tokens: 4096,
        }
    }
}

/// What [`awq_search`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqResult {
    /// One scale per input channel, to fold as the module documentation says. All 1 when plain
    /// RTN was best.
    pub scales: Vec<f32>,
    /// The winning ratio `r` (0 when plain RTN was best).
    pub ratio: f32,
    /// Output error of the winning scales, `sum ||X W^T - X W''^T||^2 / tokens`.
    pub error: f64,
    /// The same error for plain RTN (`s = 1`).
    pub baseline_error: f64,
}

/// Searches AWQ scales for the consumers `weights` (each `(row-major [out, width], out)`) of
/// the activations `x` (row-major `[tokens, width]`), quantizing with round-to-nearest in
/// `scheme`.
///
/// Errors: `tokens` or the weights' widths inconsistent with `x`, no consumer, non-finite
/// values, `grid` or `max_tokens` zero, or scales that are not finite.
pub fn awq_search(
    x: &[f32],
    tokens: usize,
    weights: &[(&[f32], usize)],
    scheme: &QuantScheme,
    options: &AwqOptions,
) -> Result<AwqResult> {
    if options.grid == 0 || options.max_tokens == 0 {
        return Err(Error::InvalidArgument(format!(
            "AWQ needs grid >= 1 and max_tokens >= 1 (got {} and {})",
            options.grid, options.max_tokens
        )));
    }
    let x_mean = channel_absmean(x, tokens)?;
    let width = x_mean.len();
    let rows = check_consumers(weights, width)?;
    let w_mean = options
        .duo_scaling
        .then(|| weight_means(weights, width, scheme.group_size(width)));
    let sample = subsample(x, width, options.max_tokens);
    let loss = OutputLoss::new(sample, width, rows, options.grid + 1);

    let baseline_error = candidate_error(weights, width, None, scheme, &loss)?;
    let mut best = AwqResult {
        scales: vec![1.0; width],
        ratio: 0.0,
        error: baseline_error,
        baseline_error,
    };
    for step in 0..options.grid {
        if step == 0 && !options.duo_scaling {
            // x_mean^0 = 1: the baseline itself.
            continue;
        }
        let ratio = step as f64 / options.grid as f64;
        let scales = ratio_scales(&x_mean, w_mean.as_deref(), ratio)?;
        let error = candidate_error(weights, width, Some(&scales), scheme, &loss)
            .map_err(|e| Error::InvalidArgument(format!("AWQ candidate at ratio {ratio}: {e}")))?;
        if error < best.error {
            best.scales = scales;
            best.ratio = ratio as f32;
            best.error = error;
        }
    }
    Ok(best)
}

/// The normalized scales of ratio `r`.
fn ratio_scales(x_mean: &[f32], w_mean: Option<&[f64]>, ratio: f64) -> Result<Vec<f32>> {
    let raw: Vec<f64> = x_mean
        .iter()
        .enumerate()
        .map(|(j, &x)| {
            let activation = (x as f64).powf(ratio);
            let scale = match w_mean {
                None => activation,
                Some(w) => activation / (w[j].powf(1.0 - ratio) + DUO_EPSILON),
            };
            scale.max(MIN_SCALE)
        })
        .collect();
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = raw.iter().copied().fold(f64::INFINITY, f64::min);
    let norm = (max * min).sqrt();
    let scales: Vec<f32> = raw.iter().map(|&s| (s / norm) as f32).collect();
    if let Some(bad) = scales.iter().position(|s| !s.is_finite() || *s <= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "AWQ scale of channel {bad} at ratio {ratio} is {} (x_mean {})",
            scales[bad], x_mean[bad]
        )));
    }
    Ok(scales)
}

/// AutoAWQ's `w_mean`: per column, the mean over every consumer row of `|w|` divided by the
/// maximum magnitude of its quantization group.
fn weight_means(weights: &[(&[f32], usize)], width: usize, group_size: usize) -> Vec<f64> {
    let mut sum = vec![0f64; width];
    let mut rows = 0usize;
    for &(weight, out) in weights {
        for row in weight.chunks_exact(width) {
            for (group, values) in row.chunks(group_size).enumerate() {
                let max = values.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                let inverse = 1.0 / (max + GROUP_MAX_EPSILON);
                for (s, &v) in sum[group * group_size..].iter_mut().zip(values) {
                    *s += v.abs() as f64 * inverse;
                }
            }
        }
        rows += out;
    }
    sum.iter().map(|s| s / rows as f64).collect()
}

/// At most `max_tokens` rows of `x`, evenly spaced (row `k * tokens / max_tokens`).
fn subsample(x: &[f32], width: usize, max_tokens: usize) -> Vec<f32> {
    let tokens = x.len() / width;
    if tokens <= max_tokens {
        return x.to_vec();
    }
    (0..max_tokens)
        .flat_map(|k| {
            let t = k * tokens / max_tokens;
            &x[t * width..(t + 1) * width]
        })
        .copied()
        .collect()
}

/// `dequant(rtn(weight))`: [`super::weights::QuantizedTensor::dequantize`] with the rows
/// decoded in parallel (`w = value * scale - offset`, as `fill_row_scales` documents).
fn round_trip(weight: &[f32], shape: [usize; 2], scheme: &QuantScheme) -> Result<Vec<f32>> {
    let quantized = quantize_matrix(weight, shape, scheme, &RtnOptions::default())?;
    let (groups, group_size) = (quantized.groups(), quantized.group_size());
    let mut decoded = vec![0f32; weight.len()];
    decoded
        .par_chunks_mut(shape[1])
        .enumerate()
        .for_each(|(row, out)| {
            let mut scales = vec![0f32; groups];
            let mut offsets = vec![0f32; groups];
            quantized.fill_row_scales(row, &mut scales, &mut offsets);
            for (k, w) in out.iter_mut().enumerate() {
                let g = k / group_size;
                *w = quantized.code_value(row, k) * scales[g] - offsets[g];
            }
        });
    Ok(decoded)
}

/// `sum_consumers ||X (W - W'')^T||^2 / tokens` for the candidate `scales` (`None`: all 1).
fn candidate_error(
    weights: &[(&[f32], usize)],
    width: usize,
    scales: Option<&[f32]>,
    scheme: &QuantScheme,
    loss: &OutputLoss,
) -> Result<f64> {
    let mut error = 0.0;
    for &(weight, out) in weights {
        let scaled: Vec<f32> = match scales {
            None => weight.to_vec(),
            Some(s) => weight
                .chunks_exact(width)
                .flat_map(|row| row.iter().zip(s).map(|(w, s)| w * s))
                .collect(),
        };
        let decoded = round_trip(&scaled, [out, width], scheme)?;
        let difference: Vec<f32> = match scales {
            None => weight.iter().zip(&decoded).map(|(w, q)| w - q).collect(),
            Some(s) => weight
                .chunks_exact(width)
                .zip(decoded.chunks_exact(width))
                .flat_map(|(w, q)| w.iter().zip(q).zip(s).map(|((w, q), s)| w - q / s))
                .collect(),
        };
        error += loss.error(&difference);
    }
    Ok(error)
}

/// Measures `||X D^T||^2 / tokens` for weight differences `D` `[rows, width]`.
enum OutputLoss {
    /// The (sampled) activations themselves, row-major `[tokens, width]`.
    Direct {
        x: Vec<f32>,
        width: usize,
        tokens: usize,
    },
    /// `X^T X`, row-major `[width, width]`: `||X d||^2 = d^T G d`.
    Gram {
        gram: Vec<f64>,
        width: usize,
        tokens: usize,
    },
}

impl OutputLoss {
    /// Chooses the cheaper evaluation for `evaluations` differences of `rows` total rows each.
    fn new(x: Vec<f32>, width: usize, rows: usize, evaluations: usize) -> Self {
        let tokens = x.len() / width;
        // Multiply-adds; f64 work counts twice.
        let direct = (tokens * rows * width * evaluations) as f64;
        let gram = 2.0 * (tokens * width * width + evaluations * rows * width * width) as f64;
        if gram < direct {
            OutputLoss::gram(&x, width)
        } else {
            OutputLoss::Direct { x, width, tokens }
        }
    }

    fn gram(x: &[f32], width: usize) -> Self {
        let tokens = x.len() / width;
        let mut transposed = vec![0f64; x.len()];
        for (t, row) in x.chunks_exact(width).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                transposed[j * tokens + t] = v as f64;
            }
        }
        let mut gram = vec![0f64; width * width];
        gram.par_chunks_mut(ROW_BLOCK * width)
            .enumerate()
            .for_each(|(block, out)| best!(gram_rows(&transposed, tokens, block * ROW_BLOCK, out)));
        OutputLoss::Gram {
            gram,
            width,
            tokens,
        }
    }

    fn error(&self, difference: &[f32]) -> f64 {
        // Per-task sums are added in a fixed order so that the result does not depend on
        // scheduling.
        let per_task: Vec<f64> = match self {
            OutputLoss::Direct { x, width, tokens } => {
                let width = *width;
                let rows = difference.len() / width;
                let token_blocks = tokens.div_ceil(LOSS_TOKENS);
                (0..rows.div_ceil(LOSS_ROWS) * token_blocks)
                    .into_par_iter()
                    .map(|task| {
                        let (row_block, token_block) = (task / token_blocks, task % token_blocks);
                        let first = row_block * LOSS_ROWS;
                        let block =
                            &difference[first * width..(first + LOSS_ROWS).min(rows) * width];
                        let first = token_block * LOSS_TOKENS;
                        let xs = &x[first * width..(first + LOSS_TOKENS).min(*tokens) * width];
                        best!(direct_sum(xs, block, width))
                    })
                    .collect()
            }
            OutputLoss::Gram { gram, width, .. } => difference
                .par_chunks(LOSS_ROWS * width)
                .map(|block| {
                    let block: Vec<f64> = block.iter().map(|&v| v as f64).collect();
                    best!(gram_sum(gram, &block, *width))
                })
                .collect(),
        };
        let tokens = match self {
            OutputLoss::Direct { tokens, .. } | OutputLoss::Gram { tokens, .. } => *tokens,
        };
        per_task.iter().sum::<f64>() / tokens as f64
    }
}

/// Options of [`awq_clip_search`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqClipOptions {
    /// Shrink factors are `1 - i / grid` (AutoAWQ: 20).
    pub grid: usize,
    /// Factors stop above `1 - max_shrink`: `i < floor(max_shrink * grid)` (AutoAWQ: 0.5, so
    /// 1.0, 0.95, ..., 0.55). In `[0, 1)`.
    pub max_shrink: f32,
    /// At most this many tokens (evenly spaced rows of `X`) enter the error (AutoAWQ: 512).
    pub max_tokens: usize,
}

impl Default for AwqClipOptions {
    fn default() -> Self {
        AwqClipOptions {
            grid: 20,
            max_shrink: 0.5,
            max_tokens: 512,
        }
    }
}

/// What [`awq_clip_search`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqClipResult {
    /// Clipping threshold of each `(row, group)`, row-major `[out, groups]`; apply with
    /// [`clip_weight`].
    pub max_values: Vec<f32>,
    /// Input channels per group (the scheme's group size for this width).
    pub group_size: usize,
    /// Input channels of the weight the thresholds belong to.
    pub width: usize,
    /// `sum_(row, group) mean_t (x_t[group] . (w - w'')[row, group])^2` with the chosen
    /// thresholds: AutoAWQ's objective, which leaves out products between groups.
    pub error: f64,
    /// The same without clipping.
    pub baseline_error: f64,
}

/// AutoAWQ's clipping search for one consumer `weight` (row-major `[out, width]`) of the
/// activations `x` (`[tokens, width]`). Call it on the scaled layer, `x / s` and `w * s`, after
/// [`awq_search`]; AutoAWQ skips q_proj and k_proj, whose outputs pass through attention
/// scores where this error measure does not apply.
///
/// For each shrink factor `p`, every group of every row is clamped to `±p max|w_group|`,
/// quantized with round-to-nearest, and each `(row, group)` keeps the `p` whose partial output
/// `x_t[group] . w''[row, group]` is closest to the original on average. The choice per group is
/// exact when each `(row, group)` has its own scale (integer, NF4/FP4 without double
/// quantization, per-channel FP8); with shared scales (128x128 blocks, double quantization) it
/// is a heuristic.
pub fn awq_clip_search(
    x: &[f32],
    tokens: usize,
    weight: &[f32],
    out: usize,
    scheme: &QuantScheme,
    options: &AwqClipOptions,
) -> Result<AwqClipResult> {
    if options.grid == 0 || options.max_tokens == 0 || !(0.0..1.0).contains(&options.max_shrink) {
        return Err(Error::InvalidArgument(format!(
            "AWQ clipping needs grid >= 1, max_tokens >= 1 and max_shrink in [0, 1) (got {}, {} \
             and {})",
            options.grid, options.max_tokens, options.max_shrink
        )));
    }
    let width = channel_absmean(x, tokens)?.len();
    check_consumers(&[(weight, out)], width)?;
    let group_size = scheme.group_size(width);
    let groups = width.div_ceil(group_size);
    let sample = subsample(x, width, options.max_tokens);
    let group_max: Vec<f32> = weight
        .chunks_exact(width)
        .flat_map(|row| {
            row.chunks(group_size)
                .map(|g| g.iter().fold(0f32, |m, v| m.max(v.abs())))
        })
        .collect();
    let steps = ((options.max_shrink * options.grid as f32) as usize).max(1);
    let mut best_error = vec![f64::INFINITY; out * groups];
    let mut max_values = group_max.clone();
    let mut baseline_error = 0.0;
    for step in 0..steps {
        let shrink = 1.0 - step as f32 / options.grid as f32;
        let clipped: Vec<f32> = weight
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let limit = shrink * group_max[(i / width) * groups + (i % width) / group_size];
                w.clamp(-limit, limit)
            })
            .collect();
        let decoded = round_trip(&clipped, [out, width], scheme)?;
        let difference: Vec<f32> = weight.iter().zip(&decoded).map(|(w, q)| w - q).collect();
        let errors = group_errors(&sample, &difference, width, group_size);
        if step == 0 {
            baseline_error = errors.iter().sum();
        }
        for (i, &error) in errors.iter().enumerate() {
            if error < best_error[i] {
                best_error[i] = error;
                max_values[i] = shrink * group_max[i];
            }
        }
    }
    Ok(AwqClipResult {
        max_values,
        group_size,
        width,
        error: best_error.iter().sum(),
        baseline_error,
    })
}

/// Clamps each `(row, group)` of `weight` (row-major `[out, width]`, the weight searched) to
/// `±max_values[row, group]` from [`awq_clip_search`].
pub fn clip_weight(weight: &mut [f32], clip: &AwqClipResult) -> Result<()> {
    let (width, group_size) = (clip.width, clip.group_size);
    let groups = width.div_ceil(group_size.max(1));
    let rows = clip.max_values.len() / groups.max(1);
    if groups == 0 || rows * groups != clip.max_values.len() || weight.len() != rows * width {
        return Err(Error::InvalidArgument(format!(
            "{} clipping thresholds ({groups} groups of {group_size} per row) do not fit a weight \
             of {} values and width {width}",
            clip.max_values.len(),
            weight.len()
        )));
    }
    for (row, limits) in weight
        .chunks_exact_mut(width)
        .zip(clip.max_values.chunks_exact(groups))
    {
        for (values, &limit) in row.chunks_mut(clip.group_size).zip(limits) {
            for v in values {
                *v = v.clamp(-limit, limit);
            }
        }
    }
    Ok(())
}

/// `mean_t (x_t[group] . d[row, group])^2` for each `(row, group)` of the differences `d`
/// `[rows, width]`, row-major `[rows, groups]`.
fn group_errors(x: &[f32], difference: &[f32], width: usize, group_size: usize) -> Vec<f64> {
    let tokens = x.len() / width;
    let groups = width.div_ceil(group_size);
    let per_block: Vec<Vec<f64>> = difference
        .par_chunks(ROW_BLOCK * width)
        .map(|block| {
            let mut errors = vec![0f64; block.len() / width * groups];
            best!(group_sums(x, block, width, group_size, &mut errors));
            errors
        })
        .collect();
    per_block
        .into_iter()
        .flatten()
        .map(|e| e / tokens as f64)
        .collect()
}

// Kernels. Each block kernel is written once, generic over `FUSED`: the portable build
// multiplies and adds separately (`FUSED = false`); on x86-64 the same code is also compiled with
// AVX2 and FMA (module `avx2`, `FUSED = true`) and picked at run time, as `backend::cpu` does.
// `LOWBIT_ISA=scalar` forces the portable path.

/// Float types of the tiled dot products.
trait Element: Copy + Default + Add<Output = Self> + Mul<Output = Self> {
    /// `self + a * b`, rounded once.
    fn fused_add(self, a: Self, b: Self) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn fused_add(self, a: f32, b: f32) -> f32 {
        a.mul_add(b, self)
    }
}

impl Element for f64 {
    #[inline(always)]
    fn fused_add(self, a: f64, b: f64) -> f64 {
        a.mul_add(b, self)
    }
}

/// Independent accumulators per dot product: four AVX2 registers of f32, enough to hide the
/// latency of the additions (8 measured 10-45% slower).
const LANES: usize = 32;

/// `a . b` with [`LANES`] accumulators, added in a fixed order.
#[inline(always)]
fn dot<E: Element, const FUSED: bool>(a: &[E], b: &[E]) -> E {
    let mut acc = [E::default(); LANES];
    let split = a.len() / LANES * LANES;
    for (x, y) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] = if FUSED {
                acc[i].fused_add(x[i], y[i])
            } else {
                acc[i] + x[i] * y[i]
            };
        }
    }
    let mut sum = acc.iter().fold(E::default(), |s, &v| s + v);
    for (&x, &y) in a[split..].iter().zip(&b[split..]) {
        sum = sum + x * y;
    }
    sum
}

/// `sum_t sum_r (x_t . d_r)^2` over the rows `x_t` of `x` and `d_r` of `block`.
#[inline(always)]
fn direct_sum<const FUSED: bool>(x: &[f32], block: &[f32], width: usize) -> f64 {
    let mut sum = 0f64;
    for tile in x.chunks(TOKEN_TILE * width) {
        for row in block.chunks_exact(width) {
            for token in tile.chunks_exact(width) {
                let y = dot::<f32, FUSED>(token, row) as f64;
                sum += y * y;
            }
        }
    }
    sum
}

/// `sum_r d_r^T G d_r` over the rows `d_r` of `block`, for the symmetric `gram`.
#[inline(always)]
fn gram_sum<const FUSED: bool>(gram: &[f64], block: &[f64], width: usize) -> f64 {
    let mut sum = 0f64;
    for (j, gram_row) in gram.chunks_exact(width).enumerate() {
        for row in block.chunks_exact(width) {
            sum += row[j] * dot::<f64, FUSED>(gram_row, row);
        }
    }
    sum
}

/// Rows `first..` of `X^T X` into `out` (`[rows, width]`), from `transposed` = `X^T`
/// (`[width, tokens]`).
#[inline(always)]
fn gram_rows<const FUSED: bool>(transposed: &[f64], tokens: usize, first: usize, out: &mut [f64]) {
    let width = transposed.len() / tokens;
    for (k, channel) in transposed.chunks_exact(tokens).enumerate() {
        for (i, row) in out.chunks_exact_mut(width).enumerate() {
            let j = first + i;
            row[k] = dot::<f64, FUSED>(&transposed[j * tokens..(j + 1) * tokens], channel);
        }
    }
}

/// Adds `(x_t[group] . d_r[group])^2` over tokens to `errors[r * groups + group]`.
#[inline(always)]
fn group_sums<const FUSED: bool>(
    x: &[f32],
    block: &[f32],
    width: usize,
    group_size: usize,
    errors: &mut [f64],
) {
    let groups = width.div_ceil(group_size);
    for token in x.chunks_exact(width) {
        for (row, row_errors) in block
            .chunks_exact(width)
            .zip(errors.chunks_exact_mut(groups))
        {
            for ((x_group, d_group), error) in token
                .chunks(group_size)
                .zip(row.chunks(group_size))
                .zip(row_errors.iter_mut())
            {
                let y = dot::<f32, FUSED>(x_group, d_group) as f64;
                *error += y * y;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The block kernels compiled with AVX2 and FMA. Safety of every function: the CPU must
    //! support both (see `use_avx2`).

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn direct_sum(x: &[f32], block: &[f32], width: usize) -> f64 {
        super::direct_sum::<true>(x, block, width)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gram_sum(gram: &[f64], block: &[f64], width: usize) -> f64 {
        super::gram_sum::<true>(gram, block, width)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gram_rows(transposed: &[f64], tokens: usize, first: usize, out: &mut [f64]) {
        super::gram_rows::<true>(transposed, tokens, first, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn group_sums(
        x: &[f32],
        block: &[f32],
        width: usize,
        group_size: usize,
        errors: &mut [f64],
    ) {
        super::group_sums::<true>(x, block, width, group_size, errors)
    }
}

/// Whether the AVX2+FMA kernels run (detected once).
#[cfg(target_arch = "x86_64")]
fn use_avx2() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::env::var("LOWBIT_ISA").map_or(true, |v| v != "scalar")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Both evaluations of the loss agree with a plain f64 reference.
    #[test]
    fn direct_and_gram_losses_agree() {
        let (tokens, width, rows) = (37, 21, 19);
        let x = values(tokens * width, 1);
        let difference = values(rows * width, 2);
        let mut reference = 0f64;
        for xt in x.chunks_exact(width) {
            for d in difference.chunks_exact(width) {
                let y: f64 = xt.iter().zip(d).map(|(&a, &b)| a as f64 * b as f64).sum();
                reference += y * y;
            }
        }
        reference /= tokens as f64;
        let direct = OutputLoss::Direct {
            x: x.clone(),
            width,
            tokens,
        }
        .error(&difference);
        let gram = OutputLoss::gram(&x, width).error(&difference);
        // f32 dot products over 21 terms: relative error well under 1e-5.
        assert!(
            (direct - reference).abs() <= 1e-5 * reference,
            "{direct} {reference}"
        );
        assert!(
            (gram - reference).abs() <= 1e-10 * reference,
            "{gram} {reference}"
        );
    }

    #[test]
    fn parallel_round_trip_matches_dequantize() {
        let (rows, cols) = (37, 160);
        let weight = values(rows * cols, 3);
        for name in [
            "w4a16-g32",
            "w4a16-g32-asym",
            "w8a16",
            "nf4-dq",
            "fp4",
            "fp8-block",
        ] {
            let scheme = QuantScheme::parse(name).unwrap();
            let expected = quantize_matrix(&weight, [rows, cols], &scheme, &RtnOptions::default())
                .unwrap()
                .dequantize();
            assert_eq!(
                round_trip(&weight, [rows, cols], &scheme).unwrap(),
                expected,
                "{name}"
            );
        }
    }

    /// The AVX2+FMA build of each block kernel against the portable one. Sums of up to 40
    /// products in a different association and with fused rounding: relative 1e-5 (f32) and
    /// 1e-12 (f64) of the sum of magnitudes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_portable() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        // Odd sizes exercise the tails of the lane loops.
        let (tokens, width, rows, group_size) = (13, 75, 9, 32);
        let x = values(tokens * width, 4);
        let block = values(rows * width, 5);
        let close = |a: f64, b: f64, scale: f64, tolerance: f64| {
            assert!((a - b).abs() <= tolerance * scale, "{a} vs {b}")
        };
        let magnitude = |a: &[f32]| a.iter().map(|v| v.abs() as f64).sum::<f64>();
        let scale = magnitude(&x) * magnitude(&block);
        // SAFETY: AVX2 and FMA were detected above.
        let fast = unsafe { avx2::direct_sum(&x, &block, width) };
        close(fast, direct_sum::<false>(&x, &block, width), scale, 1e-5);

        let mut fast = vec![0f64; rows * 3];
        let mut portable = vec![0f64; rows * 3];
        // SAFETY: as above.
        unsafe { avx2::group_sums(&x, &block, width, group_size, &mut fast) };
        group_sums::<false>(&x, &block, width, group_size, &mut portable);
        for (a, b) in fast.iter().zip(&portable) {
            close(*a, *b, scale, 1e-5);
        }

        let transposed: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (channels, samples) = (tokens, width);
        let mut fast = vec![0f64; 4 * channels];
        let mut portable = vec![0f64; 4 * channels];
        // SAFETY: as above.
        unsafe { avx2::gram_rows(&transposed, samples, 2, &mut fast) };
        gram_rows::<false>(&transposed, samples, 2, &mut portable);
        for (a, b) in fast.iter().zip(&portable) {
            close(*a, *b, magnitude(&x), 1e-12);
        }

        let gram: Vec<f64> = values(width * width, 6).iter().map(|&v| v as f64).collect();
        let block: Vec<f64> = block.iter().map(|&v| v as f64).collect();
        let scale: f64 = block
            .chunks_exact(width)
            .map(|d| {
                let g = gram.chunks_exact(width).zip(d);
                g.map(|(row, dj)| {
                    dj.abs() * row.iter().zip(d).map(|(a, b)| (a * b).abs()).sum::<f64>()
                })
                .sum::<f64>()
            })
            .sum();
        // SAFETY: as above.
        let fast = unsafe { avx2::gram_sum(&gram, &block, width) };
        close(fast, gram_sum::<false>(&gram, &block, width), scale, 1e-12);
    }

    #[test]
    fn subsample_is_evenly_spaced() {
        let x: Vec<f32> = (0..10).flat_map(|t| [t as f32, -(t as f32)]).collect();
        assert_eq!(
            subsample(&x, 2, 4),
            vec![0.0, -0.0, 2.0, -2.0, 5.0, -5.0, 7.0, -7.0]
        );
        assert_eq!(subsample(&x, 2, 10), x);
    }

    #[test]
    fn ratio_scales_are_normalized() {
        let scales = ratio_scales(&[4.0, 1.0, 0.0], None, 1.0).unwrap();
        // raw [4, 1, 1e-4], norm sqrt(4e-4) = 0.02.
        let expected = [200.0, 50.0, 0.005];
        for (s, e) in scales.iter().zip(expected) {
            assert!((s - e).abs() <= 1e-4 * e, "{scales:?}");
        }
    }
}
