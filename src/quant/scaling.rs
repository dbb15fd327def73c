//! Per-block steps of the sequential pipeline that change a block's float weights before they
//! are quantized: AWQ scales (with AutoAWQ's clipping search) and SmoothQuant scales, each
//! folded so that the block computes the same function up to rounding.
//!
//! Folding (the contract of [`super::awq`] and [`super::smoothquant`]): scales `s` of an input
//! `X` divide what produces `X` and multiply column `j` of every consumer by `s[j]`:
//! - q/k/v: `input_norm /= s`;
//! - gate/up: `post_attention_norm /= s`;
//! - down: row `j` of up_proj (and its bias) `/= s[j]`, since down's input is
//!   `silu(gate) * up`.
//!
//! o_proj is never scaled: its input comes from v_proj through attention, and with grouped-query
//! attention one v_proj row feeds several heads (AutoAWQ skips it whenever the shapes differ).

use super::awq::{awq_clip_search, awq_search, clip_weight, AwqClipOptions, AwqOptions};
use super::rules::QuantRules;
use super::smoothquant::smooth_scales;
use crate::checkpoint::Tensor;
use crate::error::{Error, Result};
use crate::model::{Block, CapturePoint, KvCache, Linear, Model, Pass, Weight};

/// The capture points of a block, in the pipeline's order.
pub(crate) const POINTS: [CapturePoint; 4] = [
    CapturePoint::Attention,
    CapturePoint::AttentionOutput,
    CapturePoint::Mlp,
    CapturePoint::MlpInner,
];

/// Index of `point` in [`POINTS`].
pub(crate) fn point_index(point: CapturePoint) -> usize {
    POINTS
        .iter()
        .position(|p| *p == point)
        .expect("every capture point is listed")
}

/// Projections of a block fed by each capture point, by module suffix.
pub(crate) fn consumers(point: CapturePoint) -> &'static [&'static str] {
    match point {
        CapturePoint::Attention => &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        CapturePoint::AttentionOutput => &["self_attn.o_proj"],
        CapturePoint::Mlp => &["mlp.gate_proj", "mlp.up_proj"],
        CapturePoint::MlpInner => &["mlp.down_proj"],
    }
}

/// The consumers of `point` in `block`, in [`consumers`] order.
fn consumer_linears(block: &Block, point: CapturePoint) -> Vec<&Linear> {
    match point {
        CapturePoint::Attention => vec![&block.q_proj, &block.k_proj, &block.v_proj],
        CapturePoint::AttentionOutput => vec![&block.o_proj],
        CapturePoint::Mlp => vec![&block.gate_proj, &block.up_proj],
        CapturePoint::MlpInner => vec![&block.down_proj],
    }
}

/// Runs block `layer` (as it is now) over copies of every calibration pass, handing each
/// capture point's inputs (`rows`, row-major values) to `capture`. The passes do not advance.
pub(crate) fn probe_block(
    model: &Model,
    layer: usize,
    passes: &[(Pass, Vec<KvCache>)],
    capture: &mut dyn FnMut(CapturePoint, usize, &[f32]),
) {
    for (pass, caches) in passes {
        let mut probe = pass.clone();
        let mut probe_caches = caches.clone();
        let mut refs: Vec<&mut KvCache> = probe_caches.iter_mut().collect();
        model.run_block(layer, &mut probe, &mut refs, capture);
    }
}

/// The dense weight of a projection as f32 values, or an error for a quantized one.
fn dense_values(linear: &Linear, name: &str) -> Result<Vec<f32>> {
    match &linear.weight {
        Weight::Dense(t) => Ok(t.to_f32_vec()),
        Weight::Quantized(_) => Err(Error::invalid(format!("{name} is already quantized"))),
    }
}

/// Replaces the weight of `linear` by `transform` of its dense values.
fn update_dense(
    linear: &mut Linear,
    name: &str,
    transform: impl FnOnce(&mut [f32], usize),
) -> Result<()> {
    let [out, width] = linear.weight.shape();
    let mut values = dense_values(linear, name)?;
    transform(&mut values, width);
    linear.weight = Weight::Dense(Tensor::from_f32(vec![out, width], values));
    Ok(())
}

/// Multiplies column `j` of a `[out, width]` weight by `scales[j]`.
fn scale_columns(linear: &mut Linear, scales: &[f32], name: &str) -> Result<()> {
    update_dense(linear, name, |values, width| {
        for row in values.chunks_exact_mut(width) {
            for (v, s) in row.iter_mut().zip(scales) {
                *v *= s;
            }
        }
    })
}

/// Folds `scales` of the input at `point` into block `layer` (see the module documentation).
fn fold_scales(block: &mut Block, prefix: &str, point: CapturePoint, scales: &[f32]) -> Result<()> {
    let name = |suffix: &str| format!("{prefix}.{suffix}");
    match point {
        CapturePoint::Attention => {
            for (n, s) in block.input_norm.iter_mut().zip(scales) {
                *n /= s;
            }
            scale_columns(&mut block.q_proj, scales, &name("self_attn.q_proj"))?;
            scale_columns(&mut block.k_proj, scales, &name("self_attn.k_proj"))?;
            scale_columns(&mut block.v_proj, scales, &name("self_attn.v_proj"))
        }
        CapturePoint::Mlp => {
            for (n, s) in block.post_attention_norm.iter_mut().zip(scales) {
                *n /= s;
            }
            scale_columns(&mut block.gate_proj, scales, &name("mlp.gate_proj"))?;
            scale_columns(&mut block.up_proj, scales, &name("mlp.up_proj"))
        }
        CapturePoint::MlpInner => {
            update_dense(&mut block.up_proj, &name("mlp.up_proj"), |values, width| {
                for (row, s) in values.chunks_exact_mut(width).zip(scales) {
                    for v in row {
                        *v /= s;
                    }
                }
            })?;
            if let Some(bias) = &mut block.up_proj.bias {
                for (b, s) in bias.iter_mut().zip(scales) {
                    *b /= s;
                }
            }
            scale_columns(&mut block.down_proj, scales, &name("mlp.down_proj"))
        }
        CapturePoint::AttentionOutput => Err(Error::invalid(format!(
            "{prefix}: scales of o_proj's input cannot be folded"
        ))),
    }
}

/// The scheme shared by all consumers of `point` when every one of them is quantized with the
/// same scheme (the condition for searching and folding scales), else `None`.
fn shared_scheme(
    rules: &QuantRules,
    prefix: &str,
    point: CapturePoint,
) -> Option<super::QuantScheme> {
    let schemes: Vec<_> = consumers(point)
        .iter()
        .map(|s| rules.choose(&format!("{prefix}.{s}"), true))
        .collect();
    let first = (*schemes.first()?)?;
    schemes.iter().all(|s| *s == Some(first)).then_some(first)
}

/// SmoothQuant for block `layer`: scales from the per-channel activation maxima `absmax` (one
/// entry per [`POINTS`] element, `None` where nothing was captured) and migration strength
/// `alpha`, folded into the block for q/k/v, gate/up and down. Returns the scales applied per
/// point (`None` where the point was left alone), so that statistics captured before the fold
/// can be transformed (`X' = X / s`).
pub(crate) fn smooth_block(
    model: &mut Model,
    layer: usize,
    absmax: &[Option<Vec<f32>>],
    rules: &QuantRules,
    alpha: f32,
) -> Result<Vec<Option<Vec<f32>>>> {
    let prefix = format!("model.layers.{layer}");
    let mut applied = vec![None; POINTS.len()];
    for (index, point) in POINTS.iter().enumerate() {
        if *point == CapturePoint::AttentionOutput
            || shared_scheme(rules, &prefix, *point).is_none()
        {
            continue;
        }
        let Some(maxima) = &absmax[index] else {
            continue;
        };
        let names: Vec<String> = consumers(*point)
            .iter()
            .map(|s| format!("{prefix}.{s}"))
            .collect();
        let block = &model.blocks()[layer];
        let weights: Vec<(Vec<f32>, usize)> = consumer_linears(block, *point)
            .iter()
            .zip(&names)
            .map(|(l, n)| Ok((dense_values(l, n)?, l.out_features())))
            .collect::<Result<_>>()?;
        let views: Vec<(&[f32], usize)> = weights.iter().map(|(w, o)| (&w[..], *o)).collect();
        let scales = smooth_scales(maxima, &views, alpha)
            .map_err(|e| Error::invalid(format!("{prefix} SmoothQuant: {e}")))?;
        fold_scales(&mut model.blocks_mut()[layer], &prefix, *point, &scales)?;
        applied[index] = Some(scales);
    }
    Ok(applied)
}

/// AWQ for block `layer`: captures the inputs of every projection over the calibration passes
/// (float block), searches scales per group of projections sharing an input and folds them;
/// then, with `clip`, runs AutoAWQ's clipping search on the scaled weights of every projection
/// but q_proj and k_proj (AutoAWQ's exclusion) and clamps them.
pub(crate) fn awq_block(
    model: &mut Model,
    layer: usize,
    passes: &[(Pass, Vec<KvCache>)],
    rules: &QuantRules,
    options: &AwqOptions,
    clip: Option<&AwqClipOptions>,
) -> Result<()> {
    let mut captured: Vec<(Vec<f32>, usize)> = vec![(Vec::new(), 0); POINTS.len()];
    probe_block(model, layer, passes, &mut |point, rows, values| {
        let slot = &mut captured[point_index(point)];
        slot.0.extend_from_slice(values);
        slot.1 += rows;
    });
    let prefix = format!("model.layers.{layer}");
    for (index, point) in POINTS.iter().enumerate() {
        if *point == CapturePoint::AttentionOutput {
            continue;
        }
        let Some(scheme) = shared_scheme(rules, &prefix, *point) else {
            continue;
        };
        let names: Vec<String> = consumers(*point)
            .iter()
            .map(|s| format!("{prefix}.{s}"))
            .collect();
        let block = &model.blocks()[layer];
        let weights: Vec<(Vec<f32>, usize)> = consumer_linears(block, *point)
            .iter()
            .zip(&names)
            .map(|(l, n)| Ok((dense_values(l, n)?, l.out_features())))
            .collect::<Result<_>>()?;
        let views: Vec<(&[f32], usize)> = weights.iter().map(|(w, o)| (&w[..], *o)).collect();
        let (x, tokens) = &mut captured[index];
        let result = awq_search(x, *tokens, &views, &scheme, options)
            .map_err(|e| Error::invalid(format!("{prefix} AWQ: {e}")))?;
        fold_scales(
            &mut model.blocks_mut()[layer],
            &prefix,
            *point,
            &result.scales,
        )?;
        // The clipping search sees the scaled layer: X / s.
        let width = result.scales.len();
        for row in x.chunks_exact_mut(width) {
            for (v, s) in row.iter_mut().zip(&result.scales) {
                *v /= s;
            }
        }
    }
    let Some(clip) = clip else {
        return Ok(());
    };
    for (index, point) in POINTS.iter().enumerate() {
        let (x, tokens) = &captured[index];
        if *tokens == 0 {
            continue;
        }
        for (position, suffix) in consumers(*point).iter().enumerate() {
            let name = format!("{prefix}.{suffix}");
            if suffix.ends_with("q_proj") || suffix.ends_with("k_proj") {
                continue;
            }
            let Some(scheme) = rules.choose(&name, true) else {
                continue;
            };
            let block = &mut model.blocks_mut()[layer];
            let linear = match point {
                CapturePoint::Attention => &mut block.v_proj,
                CapturePoint::AttentionOutput => &mut block.o_proj,
                CapturePoint::Mlp if position == 0 => &mut block.gate_proj,
                CapturePoint::Mlp => &mut block.up_proj,
                CapturePoint::MlpInner => &mut block.down_proj,
            };
            let [out, width] = linear.weight.shape();
            let mut weight = dense_values(linear, &name)?;
            let thresholds = awq_clip_search(x, *tokens, &weight, out, &scheme, clip)
                .map_err(|e| Error::invalid(format!("{name} AWQ clipping: {e}")))?;
            clip_weight(&mut weight, &thresholds)?;
            linear.weight = Weight::Dense(Tensor::from_f32(vec![out, width], weight));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::synthetic::{self, Variant};
    use crate::checkpoint::Checkpoint;

    /// Folding only reorders f32 arithmetic: logits of the synthetic model (O(1) activations,
    /// 2 blocks) move by a few f32 ulps of their magnitude; 1e-4 absolute leaves a wide margin
    /// while any mistake in a fold (a wrong row or column) moves them by O(0.1).
    const FOLD_TOLERANCE: f32 = 1e-4;

    fn model(variant: Variant) -> Model {
        let base = synthetic::build(variant, 5);
        let checkpoint = Checkpoint::from_parts(
            base.path().to_path_buf(),
            base.config().clone(),
            base.tensors().clone(),
            Some(synthetic::byte_tokenizer_json()),
        );
        Model::from_checkpoint(&checkpoint, None).unwrap()
    }

    #[test]
    fn folded_scales_keep_the_function() {
        for variant in [
            Variant::LlamaGqa,
            Variant::LlamaTied,
            Variant::Qwen2,
            Variant::Qwen3,
        ] {
            let base = model(variant);
            let tokens: Vec<u32> = (0..12).map(|i| 40 + 7 * i).collect();
            let reference = base.logits(&tokens).unwrap();
            let mut smoothed = base.clone();
            let rules = QuantRules::new(super::super::QuantScheme::parse("w8a8").unwrap());
            for layer in 0..smoothed.blocks().len() {
                let config = smoothed.config().clone();
                let widths = [
                    config.hidden_size,
                    0,
                    config.hidden_size,
                    config.intermediate_size,
                ];
                // Arbitrary maxima spanning three decades give scales far from 1.
                let absmax: Vec<Option<Vec<f32>>> = widths
                    .iter()
                    .map(|&w| {
                        (w > 0).then(|| (0..w).map(|j| 10f32.powf((j % 7) as f32 / 2.0)).collect())
                    })
                    .collect();
                let applied = smooth_block(&mut smoothed, layer, &absmax, &rules, 0.5).unwrap();
                assert!(applied[0].is_some() && applied[1].is_none() && applied[3].is_some());
            }
            let folded = smoothed.logits(&tokens).unwrap();
            for (i, (a, b)) in reference.iter().zip(&folded).enumerate() {
                assert!(
                    (a - b).abs() <= FOLD_TOLERANCE,
                    "{variant:?} logit {i}: {a} vs {b}"
                );
            }
        }
    }
}
