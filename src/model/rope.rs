//! Rotary position embeddings in the rotate-half layout of the Hugging Face implementations:
//! a head vector `x` of width `d` is rotated pairwise as `(x[i], x[i + d/2])`.
//!
//! Inverse frequencies and the attention factor follow the reference `rope_type`s (default,
//! linear, dynamic, llama3, yarn), computed in f32 like the reference so long positions agree.

use crate::checkpoint::{ModelConfig, RopeScaling};

/// Inverse frequencies (`d/2` values) and the factor applied to cos and sin.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
    head_dim: usize,
    /// For dynamic NTK scaling, the parameters to recompute frequencies for long sequences.
    dynamic: Option<(f64, usize, f64)>,
}

fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            1.0 / (base as f32).powf(exponent)
        })
        .collect()
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl Rope {
    /// Frequencies for `config`.
    pub fn new(config: &ModelConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta;
        let mut inv_freq = default_inv_freq(base, dim);
        let mut attention_factor = 1.0f32;
        let mut dynamic = None;
        match &config.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                for f in &mut inv_freq {
                    *f /= *factor as f32;
                }
            }
            RopeScaling::Dynamic {
                factor,
                original_max_position_embeddings,
            } => dynamic = Some((*factor, *original_max_position_embeddings, base)),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f32;
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                for f in &mut inv_freq {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let smooth = (old / wavelen - low) / (high - low);
                    let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                    // Written as the reference writes it: neither high- nor low-frequency.
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    *f = if medium { smoothed } else { scaled };
                }
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor: explicit,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                attention_factor = match (explicit, mscale, mscale_all_dim) {
                    (Some(a), _, _) => *a as f32,
                    (None, Some(m), Some(all)) if *m != 0.0 && *all != 0.0 => {
                        (yarn_mscale(*factor, *m) / yarn_mscale(*factor, *all)) as f32
                    }
                    _ => yarn_mscale(*factor, 1.0) as f32,
                };
                let original = *original_max_position_embeddings as f64;
                let correction_dim = |rotations: f64| {
                    (dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln())
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let high = high.min(dim as f64 - 1.0);
                let high = if low == high { high + 0.001 } else { high };
                for (i, f) in inv_freq.iter_mut().enumerate() {
                    let pos_freq = (base as f32).powf((2 * i) as f32 / dim as f32);
                    let extrapolation = 1.0 / pos_freq;
                    let interpolation = 1.0 / (*factor as f32 * pos_freq);
                    let ramp = (((i as f64 - low) / (high - low)).clamp(0.0, 1.0)) as f32;
                    let extrapolation_factor = 1.0 - ramp;
                    *f = interpolation * (1.0 - extrapolation_factor)
                        + extrapolation * extrapolation_factor;
                }
            }
        }
        Rope {
            inv_freq,
            attention_factor,
            head_dim: dim,
            dynamic,
        }
    }

    /// The frequencies to use for a forward call whose largest position is `max_position`
    /// (dynamic NTK scaling grows the base past the original context, as the reference does).
    pub fn for_call(&self, max_position: usize) -> std::borrow::Cow<'_, Rope> {
        match self.dynamic {
            Some((factor, original, base)) if max_position + 1 > original => {
                let seq_len = (max_position + 1) as f64;
                let dim = self.head_dim as f64;
                let new_base = base
                    * ((factor * seq_len / original as f64) - (factor - 1.0))
                        .powf(dim / (dim - 2.0));
                std::borrow::Cow::Owned(Rope {
                    inv_freq: default_inv_freq(new_base, self.head_dim),
                    ..self.clone()
                })
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// Fills `cos` and `sin` (each `d/2`) for `position`.
    pub fn angles(&self, position: usize, cos: &mut [f32], sin: &mut [f32]) {
        let p = position as f32;
        for ((f, c), s) in self.inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
            let angle = p * f;
            *c = angle.cos() * self.attention_factor;
            *s = angle.sin() * self.attention_factor;
        }
    }

    /// Rotates every head of `x` (`heads * d` values) in place with the given angles.
    pub fn apply(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
        let half = head_dim / 2;
        for head in x.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}
