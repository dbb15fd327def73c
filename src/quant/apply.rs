//! Applying quantization rules to a whole checkpoint (streaming, for `lowbit quantize`) or to a
//! model in memory (for benchmarks and tests).

use std::collections::BTreeMap;

use super::config::quantization_config;
use super::rtn::{quantize_tensor, RtnOptions};
use super::rules::QuantRules;
use super::scheme::QuantScheme;
use crate::checkpoint::{Checkpoint, Tensor};
use crate::error::{Error, Result};
use crate::model::{Model, Weight};

/// Progress of a quantization pass: called after each layer with `(done, total, layer)`;
/// returning `false` cancels the pass with [`Error::Cancelled`].
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str) -> bool;

/// The linear layers of a checkpoint's decoder, `(module name, in a decoder block)`, in order.
pub fn linear_modules(checkpoint: &Checkpoint) -> Vec<(String, bool)> {
    let config = checkpoint.config();
    let mut out = Vec::new();
    for i in 0..config.num_hidden_layers {
        for m in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            out.push((format!("model.layers.{i}.{m}"), true));
        }
    }
    out.push(("lm_head".to_string(), false));
    out
}

/// Quantizes `checkpoint` with round-to-nearest: one layer at a time from the memory-mapped
/// source (peak memory: the quantized result plus one layer in f32). Layers the rules keep, and
/// every other tensor, are carried over unchanged. The result carries a `quantization_config`.
pub fn quantize_checkpoint(
    checkpoint: &Checkpoint,
    rules: &QuantRules,
    options: &RtnOptions,
    progress: Progress<'_>,
) -> Result<Checkpoint> {
    if checkpoint.config().quantization_config.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{} is already quantized",
            checkpoint.path().display()
        )));
    }
    let mut plan: Vec<(String, QuantScheme)> = Vec::new();
    for (module, in_block) in linear_modules(checkpoint) {
        if let Some(scheme) = rules.choose(&module, in_block) {
            // A tied LM head has no tensor of its own: it is quantized from the embedding.
            let source = if module == "lm_head" && !checkpoint.has_tensor("lm_head.weight") {
                "model.embed_tokens.weight".to_string()
            } else {
                format!("{module}.weight")
            };
            checkpoint.tensor(&source)?;
            plan.push((module, scheme));
        }
    }
    let mut tensors: BTreeMap<String, Tensor> = checkpoint.tensors().clone();
    let mut layers = BTreeMap::new();
    let total = plan.len();
    for (done, (module, scheme)) in plan.into_iter().enumerate() {
        let source = if tensors.contains_key(&format!("{module}.weight")) {
            format!("{module}.weight")
        } else {
            "model.embed_tokens.weight".to_string()
        };
        let q = quantize_tensor(checkpoint.tensor(&source)?, &scheme, options)
            .map_err(|e| Error::InvalidArgument(format!("{source}: {e}")))?;
        tensors.remove(&format!("{module}.weight"));
        tensors.extend(q.to_tensors(&module));
        layers.insert(module.clone(), scheme);
        if !progress(done + 1, total, &module) {
            return Err(Error::Cancelled);
        }
    }
    let mut config = checkpoint.config().clone();
    config.quantization_config = Some(quantization_config(&layers, rules, "rtn"));
    Ok(Checkpoint::from_parts(
        checkpoint.path().to_path_buf(),
        config,
        tensors,
        checkpoint.tokenizer_json().map(str::to_string),
    ))
}

/// Quantizes the projections of `model` in place with round-to-nearest.
pub fn quantize_model(model: &mut Model, rules: &QuantRules, options: &RtnOptions) -> Result<()> {
    quantize_model_with_progress(model, rules, options, &mut |_, _, _| true)
}

/// [`quantize_model`] with `progress(done, total, module)` after each quantized projection;
/// returning `false` stops with [`Error::Cancelled`], leaving the projections done so far
/// quantized.
pub fn quantize_model_with_progress(
    model: &mut Model,
    rules: &QuantRules,
    options: &RtnOptions,
    progress: Progress<'_>,
) -> Result<()> {
    let planned: Vec<(String, &mut crate::model::Linear, QuantScheme)> = model
        .linears_mut()
        .into_iter()
        .filter_map(|(name, linear)| {
            let in_block = name != "lm_head";
            rules
                .choose(&name, in_block)
                .map(|scheme| (name, linear, scheme))
        })
        .collect();
    let total = planned.len();
    for (done, (name, linear, scheme)) in planned.into_iter().enumerate() {
        let dense = match &linear.weight {
            Weight::Dense(t) => t.clone(),
            Weight::Quantized(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{name} is already quantized"
                )))
            }
        };
        let q = quantize_tensor(&dense, &scheme, options)
            .map_err(|e| Error::InvalidArgument(format!("{name}: {e}")))?;
        linear.weight = Weight::Quantized(q);
        if !progress(done + 1, total, &name) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}

/// The checkpoint of a model quantized in memory (by [`quantize_model`] or a calibration
/// method), on top of the `source` it was loaded from: quantized projections, rescaled norms,
/// and a `quantization_config` naming every quantized layer and the `method`.
pub fn checkpoint_from_model(
    model: &Model,
    source: &Checkpoint,
    rules: &QuantRules,
    method: &str,
) -> Checkpoint {
    let layers: BTreeMap<String, QuantScheme> = model
        .linears()
        .into_iter()
        .filter_map(|(name, l)| l.weight.scheme().map(|s| (name, *s)))
        .collect();
    let mut config = source.config().clone();
    config.quantization_config = Some(quantization_config(&layers, rules, method));
    Checkpoint::from_parts(
        source.path().to_path_buf(),
        config,
        model.export_tensors(source.tensors()),
        source.tokenizer_json().map(str::to_string),
    )
}
