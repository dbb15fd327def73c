//! Calibration data and the sequential (block by block) pipeline of calibration-based
//! quantization.
//!
//! The pipeline follows llm-compressor's sequential pipeline: the calibration batch runs through
//! block `i` with blocks `0..i` already quantized; the inputs of each group of projections are
//! reduced to what the method needs (the Hessian `sum x x^T` for GPTQ), the block's projections
//! are quantized, and the block runs again with its quantized weights to produce the inputs of
//! block `i + 1`. Peak memory: the residual stream of the calibration batch
//! (`samples x seq_len x hidden` f32), one block's activations for one mini-batch, and one
//! Hessian per projection input (`width^2` f64).

use std::path::Path;

use rayon::prelude::*;

use super::awq::{awq_search, AwqOptions};
use super::gptq::{gptq_quantize, GptqOptions};
use super::rtn::{quantize_tensor, RtnOptions};
use super::rules::QuantRules;
use crate::checkpoint::Tensor;
use crate::checkpoint::Tokenizer;
use crate::error::{Error, Result};
use crate::eval::pyrandom::PyRandom;
use crate::model::{CapturePoint, KvCache, Linear, Model, Weight};

/// Token sequences to calibrate on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalibrationSet {
    /// One token sequence per sample.
    pub samples: Vec<Vec<u32>>,
}

/// Where calibration text comes from.
#[derive(Clone, Debug)]
pub struct CalibrationSource {
    /// A text file (one sample per blank-line-separated paragraph) or JSON Lines (`text`, or
    /// `question` + `answer`, or chat `messages` with `role`/`content`).
    pub path: std::path::PathBuf,
    /// Share of the samples drawn from this source, relative to the other sources.
    pub weight: f64,
}

impl CalibrationSet {
    /// Reads `sources`, tokenizes every record (chat records with the ChatML template the
    /// default model uses), keeps records of at least 2 tokens truncated to `seq_len`, and draws
    /// `samples` of them with `random.Random(seed)` in proportion to the sources' weights.
    pub fn from_sources(
        tokenizer: &Tokenizer,
        sources: &[CalibrationSource],
        samples: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<Self> {
        if sources.is_empty() || samples == 0 || seq_len < 2 {
            return Err(Error::InvalidArgument(
                "calibration needs a source, at least one sample and seq_len >= 2".into(),
            ));
        }
        let total_weight: f64 = sources.iter().map(|s| s.weight.max(0.0)).sum();
        if total_weight <= 0.0 {
            return Err(Error::InvalidArgument(
                "calibration source weights must be positive".into(),
            ));
        }
        let mut rng = PyRandom::new(seed);
        let mut out = Vec::with_capacity(samples);
        let mut assigned = 0;
        for (i, source) in sources.iter().enumerate() {
            let want = if i + 1 == sources.len() {
                samples - assigned
            } else {
                ((samples as f64) * source.weight.max(0.0) / total_weight).round() as usize
            }
            .min(samples - assigned);
            assigned += want;
            let texts = read_texts(&source.path)?;
            let mut records = Vec::new();
            for t in texts {
                let mut ids = tokenizer.encode(&t, true)?;
                ids.truncate(seq_len);
                if ids.len() >= 2 {
                    records.push(ids);
                }
            }
            if records.len() < want {
                return Err(Error::InvalidArgument(format!(
                    "{}: {} usable records, {want} calibration samples requested",
                    source.path.display(),
                    records.len()
                )));
            }
            for j in rng.sample_indices(records.len(), want) {
                out.push(records[j].clone());
            }
        }
        Ok(CalibrationSet { samples: out })
    }

    /// Tokens over all samples.
    pub fn tokens(&self) -> usize {
        self.samples.iter().map(Vec::len).sum()
    }
}

/// The texts of a calibration file.
fn read_texts(path: &Path) -> Result<Vec<String>> {
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    if !is_jsonl {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return Ok(text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect());
    }
    let rows = crate::eval::data::read_jsonl(path)?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            if let Some(t) = row.get("text").and_then(|v| v.as_str()) {
                return Ok(t.to_string());
            }
            if let (Some(q), Some(a)) = (
                row.get("question").and_then(|v| v.as_str()),
                row.get("answer").and_then(|v| v.as_str()),
            ) {
                return Ok(format!("Question: {q}\nAnswer: {a}"));
            }
            if let Some(messages) = row.get("messages").and_then(|v| v.as_array()) {
                let mut chat = String::new();
                for m in messages {
                    let role = m.get("role").and_then(|v| v.as_str()).unwrap_or("user");
                    let content = m.get("content").and_then(|v| v.as_str()).unwrap_or("");
                    chat.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
                }
                return Ok(chat);
            }
            Err(Error::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "line {}: expected 'text', 'question'+'answer' or 'messages'",
                    i + 1
                ),
            })
        })
        .collect()
}

/// A calibration-based method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Round to nearest (no calibration data needed).
    Rtn(RtnOptions),
    /// GPTQ with the Hessian of each projection's inputs.
    Gptq(GptqOptions),
    /// AWQ: per-input-channel scales searched on the captured activations and folded into the
    /// preceding RMSNorm (q/k/v, gate/up) or up_proj (down_proj), then round to nearest. o_proj
    /// is not scaled (its input comes from v_proj through attention; with grouped-query
    /// attention the scales cannot be folded).
    Awq(AwqOptions),
}

/// `sum_t x_t x_t^T` of a `[rows, width]` matrix, added into `hessian` (`[width, width]`, f64).
pub fn accumulate_hessian(hessian: &mut [f64], rows: usize, values: &[f32]) {
    let width = values.len() / rows.max(1);
    debug_assert_eq!(hessian.len(), width * width);
    hessian
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(i, out)| {
            for t in 0..rows {
                let row = &values[t * width..(t + 1) * width];
                let xi = row[i] as f64;
                if xi == 0.0 {
                    continue;
                }
                for (o, &xj) in out.iter_mut().zip(row) {
                    *o += xi * xj as f64;
                }
            }
        });
}

/// Projections of a block fed by each capture point, by module suffix.
fn consumers(point: CapturePoint) -> &'static [&'static str] {
    match point {
        CapturePoint::Attention => &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        CapturePoint::AttentionOutput => &["self_attn.o_proj"],
        CapturePoint::Mlp => &["mlp.gate_proj", "mlp.up_proj"],
        CapturePoint::MlpInner => &["mlp.down_proj"],
    }
}

const POINTS: [CapturePoint; 4] = [
    CapturePoint::Attention,
    CapturePoint::AttentionOutput,
    CapturePoint::Mlp,
    CapturePoint::MlpInner,
];

/// Sequences per forward call of the pipeline.
const MINI_BATCH: usize = 8;

/// Quantizes the decoder blocks of `model` in place with `method`, layer by layer over
/// `calibration` (see the module documentation). The LM head follows `rules` with RTN.
/// `progress(done, total, module)` after each projection; `false` cancels.
pub fn quantize_sequential(
    model: &mut Model,
    calibration: &CalibrationSet,
    rules: &QuantRules,
    method: &Method,
    progress: &mut dyn FnMut(usize, usize, &str) -> bool,
) -> Result<()> {
    if calibration.samples.is_empty() {
        return Err(Error::InvalidArgument("empty calibration set".into()));
    }
    let layers = model.blocks().len();
    let total = layers * 7;
    let mut done = 0;
    // One pass (residual stream) per mini-batch of samples, advanced block by block.
    let mut passes = Vec::new();
    for chunk in calibration.samples.chunks(MINI_BATCH) {
        let inputs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let mut caches: Vec<KvCache> = chunk.iter().map(|_| model.new_cache()).collect();
        let refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let pass = model.begin_pass(&inputs, &refs)?;
        passes.push((pass, caches));
    }
    for layer in 0..layers {
        // 1. Statistics of the block's projection inputs, with the block still in float.
        let mut hessians: Vec<Option<Vec<f64>>> = vec![None; POINTS.len()];
        if matches!(method, Method::Gptq(_)) {
            for (pass, caches) in &passes {
                // A copy runs the float block; the pass itself advances after quantization.
                let mut probe = pass.clone();
                let mut probe_caches = caches.clone();
                let mut refs: Vec<&mut KvCache> = probe_caches.iter_mut().collect();
                model.run_block(layer, &mut probe, &mut refs, &mut |point, rows, values| {
                    let index = POINTS
                        .iter()
                        .position(|p| *p == point)
                        .expect("known point");
                    let width = values.len() / rows.max(1);
                    let h = hessians[index].get_or_insert_with(|| vec![0f64; width * width]);
                    accumulate_hessian(h, rows, values);
                });
            }
        }
        if let Method::Awq(options) = method {
            awq_scale_block(model, layer, &passes, rules, options)?;
        }
        // 2. Quantize the block's projections.
        let prefix = format!("model.layers.{layer}");
        for (point_index, point) in POINTS.iter().enumerate() {
            for suffix in consumers(*point) {
                let name = format!("{prefix}.{suffix}");
                done += 1;
                let Some(scheme) = rules.choose(&name, true) else {
                    continue;
                };
                let linear = model
                    .linears_mut()
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, l)| l)
                    .ok_or_else(|| Error::invalid(format!("no projection {name}")))?;
                let Weight::Dense(dense) = &linear.weight else {
                    return Err(Error::invalid(format!("{name} is already quantized")));
                };
                let quantized = match method {
                    Method::Rtn(options) => quantize_tensor(dense, &scheme, options)?,
                    Method::Awq(_) => quantize_tensor(dense, &scheme, &RtnOptions::default())?,
                    Method::Gptq(options) => {
                        let hessian = hessians[point_index]
                            .as_ref()
                            .ok_or_else(|| Error::invalid("no calibration statistics"))?;
                        let shape = [dense.shape()[0], dense.shape()[1]];
                        gptq_quantize(&dense.to_f32_vec(), shape, hessian, &scheme, options)
                            .map_err(|e| Error::invalid(format!("{name}: {e}")))?
                            .tensor
                    }
                };
                linear.weight = Weight::Quantized(quantized);
                if !progress(done, total, &name) {
                    return Err(Error::Cancelled);
                }
            }
        }
        // 3. Advance every pass through the quantized block; free the layer's cache.
        for (pass, caches) in &mut passes {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            model.run_block(layer, pass, &mut refs, &mut |_, _, _| {});
            for cache in caches.iter_mut() {
                cache.clear_layer(layer);
            }
        }
    }
    if let Some(scheme) = rules.choose("lm_head", false) {
        let head = model
            .linears_mut()
            .into_iter()
            .find(|(n, _)| n == "lm_head")
            .map(|(_, l)| l)
            .expect("the model has an LM head");
        if let Weight::Dense(dense) = &head.weight {
            head.weight =
                Weight::Quantized(quantize_tensor(dense, &scheme, &RtnOptions::default())?);
        }
    }
    Ok(())
}

/// The dense weight of a projection as f32 values, or an error for a quantized one.
fn dense_values(linear: &Linear, name: &str) -> Result<Vec<f32>> {
    match &linear.weight {
        Weight::Dense(t) => Ok(t.to_f32_vec()),
        Weight::Quantized(_) => Err(Error::invalid(format!("{name} is already quantized"))),
    }
}

/// Multiplies column `j` of a `[out, width]` weight by `scales[j]`.
fn scale_columns(linear: &mut Linear, scales: &[f32], name: &str) -> Result<()> {
    let [out, width] = linear.weight.shape();
    let mut values = dense_values(linear, name)?;
    for row in values.chunks_exact_mut(width) {
        for (v, s) in row.iter_mut().zip(scales) {
            *v *= s;
        }
    }
    linear.weight = Weight::Dense(Tensor::from_f32(vec![out, width], values));
    Ok(())
}

/// AWQ for one block: captures the inputs of q/k/v, gate/up and down over the calibration
/// passes (float block), searches scales per group, and folds them (the block computes the same
/// function afterwards, up to rounding).
fn awq_scale_block(
    model: &mut Model,
    layer: usize,
    passes: &[(crate::model::Pass, Vec<KvCache>)],
    rules: &QuantRules,
    options: &AwqOptions,
) -> Result<()> {
    let mut captured: Vec<(Vec<f32>, usize)> = vec![(Vec::new(), 0); POINTS.len()];
    for (pass, caches) in passes {
        let mut probe = pass.clone();
        let mut probe_caches = caches.clone();
        let mut refs: Vec<&mut KvCache> = probe_caches.iter_mut().collect();
        model.run_block(layer, &mut probe, &mut refs, &mut |point, rows, values| {
            let index = POINTS
                .iter()
                .position(|p| *p == point)
                .expect("known point");
            captured[index].0.extend_from_slice(values);
            captured[index].1 += rows;
        });
    }
    let prefix = format!("model.layers.{layer}");
    for (index, point) in POINTS.iter().enumerate() {
        if *point == CapturePoint::AttentionOutput {
            continue;
        }
        let names: Vec<String> = consumers(*point)
            .iter()
            .map(|s| format!("{prefix}.{s}"))
            .collect();
        let schemes: Vec<_> = names.iter().map(|n| rules.choose(n, true)).collect();
        let Some(Some(scheme)) = schemes.first().copied() else {
            continue;
        };
        if schemes.iter().any(|s| *s != Some(scheme)) {
            continue;
        }
        let block = &model.blocks()[layer];
        let linears: Vec<&Linear> = match point {
            CapturePoint::Attention => vec![&block.q_proj, &block.k_proj, &block.v_proj],
            CapturePoint::Mlp => vec![&block.gate_proj, &block.up_proj],
            _ => vec![&block.down_proj],
        };
        let weights: Vec<(Vec<f32>, usize)> = linears
            .iter()
            .zip(&names)
            .map(|(l, n)| Ok((dense_values(l, n)?, l.out_features())))
            .collect::<Result<_>>()?;
        let views: Vec<(&[f32], usize)> = weights.iter().map(|(w, o)| (&w[..], *o)).collect();
        let (x, tokens) = &captured[index];
        let result = awq_search(x, *tokens, &views, &scheme, options)
            .map_err(|e| Error::invalid(format!("{prefix} AWQ: {e}")))?;
        let scales = result.scales;
        let block = &mut model.blocks_mut()[layer];
        match point {
            CapturePoint::Attention => {
                for (n, s) in block.input_norm.iter_mut().zip(&scales) {
                    *n /= s;
                }
                scale_columns(&mut block.q_proj, &scales, &names[0])?;
                scale_columns(&mut block.k_proj, &scales, &names[1])?;
                scale_columns(&mut block.v_proj, &scales, &names[2])?;
            }
            CapturePoint::Mlp => {
                for (n, s) in block.post_attention_norm.iter_mut().zip(&scales) {
                    *n /= s;
                }
                scale_columns(&mut block.gate_proj, &scales, &names[0])?;
                scale_columns(&mut block.up_proj, &scales, &names[1])?;
            }
            _ => {
                // down_proj's input is silu(gate) * up: scaling up_proj's output rows by 1/s
                // scales the input of down_proj by 1/s.
                let up_name = format!("{prefix}.mlp.up_proj");
                let [out, width] = block.up_proj.weight.shape();
                let mut up = dense_values(&block.up_proj, &up_name)?;
                for (row, s) in up.chunks_exact_mut(width).zip(&scales) {
                    for v in row {
                        *v /= s;
                    }
                }
                if let Some(bias) = &mut block.up_proj.bias {
                    for (b, s) in bias.iter_mut().zip(&scales) {
                        *b /= s;
                    }
                }
                block.up_proj.weight = Weight::Dense(Tensor::from_f32(vec![out, width], up));
                scale_columns(&mut block.down_proj, &scales, &names[0])?;
            }
        }
    }
    Ok(())
}
