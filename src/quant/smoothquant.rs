//! SmoothQuant (Xiao et al. 2022): per-input-channel scales that move activation outliers into
//! the weights before W8A8 quantization, and the per-channel activation statistics that both
//! SmoothQuant and AWQ ([`super::awq`]) start from.
//!
//! # Contract with the calibration pipeline
//!
//! Scales are computed for one group of projections that read the same input `X`
//! (`[tokens, width]`, row-major): q/k/v after the input RMSNorm, o_proj, gate/up after the
//! post-attention RMSNorm, down. For scales `s` (`width` values, one per input channel) the
//! pipeline folds `1 / s` into whatever produces `X` (an RMSNorm weight is divided by `s`) and
//! `s` into every consumer (column `j` of each weight `W` `[out, width]` is multiplied by
//! `s[j]`). The transformed layer computes `(X / s) (W * s)^T`, which equals `X W^T`
//! mathematically; only the rounding of the later quantization changes.
//!
//! # Scales
//!
//! `s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)` where `max|W_j|` is the largest magnitude in
//! column `j` over the rows of all consumers, clamped to at least [`SMOOTH_MIN_SCALE`] (the
//! reference code's clamp). After smoothing, channel `j` of the activations peaks at
//! `max|X_j|^(1-alpha) max|W_j|^(1-alpha)` and of the weights at `max|X_j|^alpha
//! max|W_j|^alpha`: `alpha = 0.5` makes them equal. A channel whose activation or weight
//! maximum is zero keeps `s = 1` (the reference code would give it a huge or tiny scale that
//! serves no purpose, since nothing flows through it).

use crate::error::{Error, Result};

/// Lower bound of a smoothing scale (the SmoothQuant reference clamp).
pub const SMOOTH_MIN_SCALE: f32 = 1e-5;

/// The alpha of the SmoothQuant paper's default and of llm-compressor's `SmoothQuantModifier`.
pub const DEFAULT_SMOOTHING_ALPHA: f32 = 0.5;

/// Width of `x` read as `tokens` rows, checking that every value is finite.
fn activation_width(x: &[f32], tokens: usize) -> Result<usize> {
    if tokens == 0 || x.is_empty() || !x.len().is_multiple_of(tokens) {
        return Err(Error::InvalidArgument(format!(
            "activations of {} values cannot be read as {tokens} tokens of equal width",
            x.len()
        )));
    }
    let width = x.len() / tokens;
    if let Some(bad) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "activation value {} at token {}, channel {} is not finite",
            x[bad],
            bad / width,
            bad % width
        )));
    }
    Ok(width)
}

/// `max_t |x[t, j]|` for each channel `j` of the row-major `[tokens, width]` activations.
pub fn channel_absmax(x: &[f32], tokens: usize) -> Result<Vec<f32>> {
    let width = activation_width(x, tokens)?;
    let mut max = vec![0f32; width];
    for row in x.chunks_exact(width) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    Ok(max)
}

/// `mean_t |x[t, j]|` for each channel `j` of the row-major `[tokens, width]` activations
/// (accumulated in f64).
pub fn channel_absmean(x: &[f32], tokens: usize) -> Result<Vec<f32>> {
    let width = activation_width(x, tokens)?;
    let mut sum = vec![0f64; width];
    for row in x.chunks_exact(width) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += v.abs() as f64;
        }
    }
    Ok(sum.iter().map(|&s| (s / tokens as f64) as f32).collect())
}

/// Checks the consumers of an input of `width` channels: at least one, each `(weight, out)` a
/// finite row-major `[out, width]` matrix. Returns the total number of output rows.
pub(crate) fn check_consumers(weights: &[(&[f32], usize)], width: usize) -> Result<usize> {
    if weights.is_empty() || width == 0 {
        return Err(Error::InvalidArgument(format!(
            "smoothing scales need at least one consumer weight and a non-empty input \
             ({} weights, width {width})",
            weights.len()
        )));
    }
    let mut rows = 0;
    for (index, &(weight, out)) in weights.iter().enumerate() {
        if out == 0 || weight.len() != out * width {
            return Err(Error::InvalidArgument(format!(
                "consumer weight {index} has {} values, which is not [{out}, {width}] \
                 (its input width must match the activations')",
                weight.len()
            )));
        }
        if let Some(bad) = weight.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "consumer weight {index} value {} at [{}, {}] is not finite",
                weight[bad],
                bad / width,
                bad % width
            )));
        }
        rows += out;
    }
    Ok(rows)
}

/// SmoothQuant scales for one input shared by `weights` (each `(row-major [out, width], out)`,
/// `width = act_absmax.len()`), from the per-channel activation maxima `act_absmax`
/// (see [`channel_absmax`]) and the migration strength `alpha` in `[0, 1]`.
///
/// Errors: empty or negative or non-finite maxima, a weight whose width differs, non-finite
/// weights, `alpha` outside `[0, 1]`, or a scale that overflows f32.
pub fn smooth_scales(
    act_absmax: &[f32],
    weights: &[(&[f32], usize)],
    alpha: f32,
) -> Result<Vec<f32>> {
    let width = act_absmax.len();
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidArgument(format!(
            "SmoothQuant alpha {alpha} is outside [0, 1]"
        )));
    }
    if let Some(bad) = act_absmax.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::InvalidArgument(format!(
            "activation maximum {} of channel {bad} is not a finite magnitude",
            act_absmax[bad]
        )));
    }
    check_consumers(weights, width)?;
    let mut weight_absmax = vec![0f32; width];
    for &(weight, _) in weights {
        for row in weight.chunks_exact(width) {
            for (m, &v) in weight_absmax.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
    }
    let alpha = alpha as f64;
    act_absmax
        .iter()
        .zip(&weight_absmax)
        .enumerate()
        .map(|(channel, (&act, &weight))| {
            if act == 0.0 || weight == 0.0 {
                return Ok(1.0);
            }
            let scale = ((act as f64).powf(alpha) / (weight as f64).powf(1.0 - alpha)) as f32;
            if !scale.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "SmoothQuant scale of channel {channel} overflows (activation max {act}, \
                     weight max {weight}, alpha {alpha})"
                )));
            }
            Ok(scale.max(SMOOTH_MIN_SCALE))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_by_hand() {
        let x = [1.0, -4.0, -3.0, 2.0, 0.5, 0.0];
        assert_eq!(channel_absmax(&x, 3).unwrap(), vec![3.0, 4.0]);
        assert_eq!(channel_absmean(&x, 3).unwrap(), vec![1.5, 2.0]);
        assert!(channel_absmax(&x, 4).is_err());
        assert!(channel_absmean(&x, 0).is_err());
    }
}
