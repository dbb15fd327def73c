//! Calibration data and the sequential (block by block) pipeline of calibration-based
//! quantization.
//!
//! The pipeline follows llm-compressor's sequential pipeline: the calibration batch runs through
//! block `i` with blocks `0..i` already quantized; the inputs of each group of projections are
//! reduced to what the method needs (the Hessian `sum x x^T` for GPTQ, per-channel maxima for
//! SmoothQuant, the activations themselves for AWQ), scales are folded into the block
//! (SmoothQuant, AWQ; see the scaling module), the block's projections are quantized, and the
//! block runs again with its quantized weights to produce the inputs of block `i + 1`.
//!
//! Peak memory: the model, the residual stream and KV cache of one layer for the whole
//! calibration batch (`tokens x hidden` f32 each for the stream, keys and values), one block's
//! activations for one mini-batch, one Hessian per projection input (`width^2` f64) with GPTQ,
//! and with AWQ the inputs of every projection of one block over all calibration tokens
//! (`tokens x (3 hidden + intermediate)` f32).

use std::path::Path;

use super::apply::quantize_model_with_progress;
use super::awq::{AwqClipOptions, AwqOptions};
use super::gptq::{gptq_quantize, GptqOptions};
pub use super::hessian::accumulate_hessian;
use super::rtn::{quantize_tensor, RtnOptions};
use super::rules::QuantRules;
use super::scaling::{awq_block, consumers, point_index, probe_block, smooth_block, POINTS};
use crate::checkpoint::Tokenizer;
use crate::error::{Error, Result};
use crate::eval::pyrandom::PyRandom;
use crate::model::{KvCache, Model, Weight};

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
    /// `question` + `answer`, or chat `messages` with `role`/`content`, or `input_ids` taken as
    /// tokens as they are, as [`CalibrationSet::write_jsonl`] writes them).
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
        let vocab = tokenizer.vocab_size();
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
            let mut records = Vec::new();
            for record in read_records(&source.path)? {
                let mut ids = match record {
                    Record::Text(t) => tokenizer.encode(&t, true)?,
                    Record::Tokens(ids) => {
                        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                            return Err(Error::InvalidArgument(format!(
                                "{}: token id {id} is outside the vocabulary ({vocab} tokens)",
                                source.path.display()
                            )));
                        }
                        ids
                    }
                };
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

    /// Writes the samples as JSON Lines, one `{"input_ids": [...]}` per sample: the format
    /// [`CalibrationSet::from_sources`] reads back token for token, and the column a Hugging
    /// Face `datasets` calibration set for other quantizers takes.
    pub fn write_jsonl(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for sample in &self.samples {
            text.push_str(&serde_json::json!({ "input_ids": sample }).to_string());
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }
}

/// One calibration record: text to tokenize, or tokens given as they are.
enum Record {
    Text(String),
    Tokens(Vec<u32>),
}

/// The records of a calibration file.
fn read_records(path: &Path) -> Result<Vec<Record>> {
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json");
    if !is_jsonl {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        return Ok(text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Record::Text(p.to_string()))
            .collect());
    }
    let rows = crate::eval::data::read_jsonl(path)?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            if let Some(t) = row.get("text").and_then(|v| v.as_str()) {
                return Ok(Record::Text(t.to_string()));
            }
            if let Some(ids) = row.get("input_ids").and_then(|v| v.as_array()) {
                return ids
                    .iter()
                    .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .map(Record::Tokens)
                    .ok_or_else(|| Error::Format {
                        path: path.to_path_buf(),
                        reason: format!("line {}: 'input_ids' must be token ids", i + 1),
                    });
            }
            if let (Some(q), Some(a)) = (
                row.get("question").and_then(|v| v.as_str()),
                row.get("answer").and_then(|v| v.as_str()),
            ) {
                return Ok(Record::Text(format!("Question: {q}\nAnswer: {a}")));
            }
            if let Some(messages) = row.get("messages").and_then(|v| v.as_array()) {
                let mut chat = String::new();
                for m in messages {
                    let role = m.get("role").and_then(|v| v.as_str()).unwrap_or("user");
                    let content = m.get("content").and_then(|v| v.as_str()).unwrap_or("");
                    chat.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
                }
                return Ok(Record::Text(chat));
            }
            Err(Error::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "line {}: expected 'text', 'question'+'answer', 'messages' or 'input_ids'",
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
    /// preceding RMSNorm (q/k/v, gate/up) or up_proj (down_proj), then, with `clip`, AutoAWQ's
    /// clipping search on every projection but q/k, then round to nearest. o_proj is not scaled
    /// (see the scaling module).
    Awq {
        /// The scale search.
        search: AwqOptions,
        /// The clipping search (AutoAWQ applies it by default), or `None` to skip it.
        clip: Option<AwqClipOptions>,
    },
    /// SmoothQuant: scales `max|X|^alpha / max|W|^(1 - alpha)` folded like AWQ's, then round to
    /// nearest, or GPTQ on the smoothed layer with `gptq`.
    SmoothQuant {
        /// Migration strength in `[0, 1]` (default
        /// [`super::smoothquant::DEFAULT_SMOOTHING_ALPHA`]).
        alpha: f32,
        /// Quantize the smoothed weights with GPTQ instead of round to nearest.
        gptq: Option<GptqOptions>,
    },
}

impl Method {
    /// AWQ with AutoAWQ's defaults (scale search and clipping).
    pub fn awq() -> Self {
        Method::Awq {
            search: AwqOptions::default(),
            clip: Some(AwqClipOptions::default()),
        }
    }

    /// The GPTQ options when the weights are quantized with GPTQ.
    fn gptq(&self) -> Option<GptqOptions> {
        match *self {
            Method::Gptq(options) => Some(options),
            Method::SmoothQuant { gptq, .. } => gptq,
            _ => None,
        }
    }
}

/// Sequences per forward call of the pipeline.
const MINI_BATCH: usize = 8;

/// What the probe of a block collects per capture point.
#[derive(Default)]
struct PointStatistics {
    /// `sum x x^T` (`[width, width]`, f64) for GPTQ.
    hessian: Option<Vec<f64>>,
    /// `max_t |x_t[j]|` for SmoothQuant.
    absmax: Option<Vec<f32>>,
}

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
    // Round to nearest reads no activations: no pass over the calibration set.
    if let Method::Rtn(options) = method {
        return quantize_model_with_progress(model, rules, options, progress);
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
    let gptq = method.gptq();
    let smoothing = match method {
        Method::SmoothQuant { alpha, .. } => Some(*alpha),
        _ => None,
    };
    for layer in 0..layers {
        // 1. Statistics of the block's projection inputs, with the block still in float.
        let mut statistics: Vec<PointStatistics> =
            POINTS.iter().map(|_| PointStatistics::default()).collect();
        if gptq.is_some() || smoothing.is_some() {
            probe_block(model, layer, &passes, &mut |point, rows, values| {
                let width = values.len() / rows.max(1);
                let slot = &mut statistics[point_index(point)];
                if gptq.is_some() {
                    let h = slot
                        .hessian
                        .get_or_insert_with(|| vec![0f64; width * width]);
                    accumulate_hessian(h, rows, values);
                }
                if smoothing.is_some() {
                    let max = slot.absmax.get_or_insert_with(|| vec![0f32; width]);
                    for row in values.chunks_exact(width) {
                        for (m, v) in max.iter_mut().zip(row) {
                            *m = m.max(v.abs());
                        }
                    }
                }
            });
        }
        if let Some(alpha) = smoothing {
            let absmax: Vec<Option<Vec<f32>>> =
                statistics.iter_mut().map(|s| s.absmax.take()).collect();
            let applied = smooth_block(model, layer, &absmax, rules, alpha)?;
            // The smoothed inputs are X / s: H' = diag(1/s) H diag(1/s).
            for (slot, scales) in statistics.iter_mut().zip(&applied) {
                if let (Some(h), Some(s)) = (&mut slot.hessian, scales) {
                    let width = s.len();
                    for (i, row) in h.chunks_exact_mut(width).enumerate() {
                        for (v, sj) in row.iter_mut().zip(s) {
                            *v /= s[i] as f64 * *sj as f64;
                        }
                    }
                }
            }
        }
        if let Method::Awq { search, clip } = method {
            awq_block(model, layer, &passes, rules, search, clip.as_ref())?;
        }
        // 2. Quantize the block's projections.
        let prefix = format!("model.layers.{layer}");
        for point in POINTS {
            for suffix in consumers(point) {
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
                let quantized = match (method, gptq) {
                    (Method::Rtn(options), _) => quantize_tensor(dense, &scheme, options)?,
                    (_, Some(options)) => {
                        let hessian = statistics[point_index(point)]
                            .hessian
                            .as_ref()
                            .ok_or_else(|| Error::invalid("no calibration statistics"))?;
                        let shape = [dense.shape()[0], dense.shape()[1]];
                        gptq_quantize(&dense.to_f32_vec(), shape, hessian, &scheme, &options)
                            .map_err(|e| Error::invalid(format!("{name}: {e}")))?
                            .tensor
                    }
                    _ => quantize_tensor(dense, &scheme, &RtnOptions::default())?,
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
