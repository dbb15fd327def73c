//! Quantization studies: a matrix of models x methods x schemes x calibration budgets, each cell
//! scored on the same tasks and timed the same way, with a report.
//!
//! A cell is one quantized model (or the unquantized baseline). Its result is written to
//! `OUTPUT/cells/<key>.json` as soon as it is finished, where `key` hashes everything that
//! determines the result (model identity, method, scheme, calibration, tasks and their options,
//! efficiency settings, lowbit version); a later run reuses every cell whose file exists, so an
//! interrupted study resumes where it stopped and a changed study reruns only what changed.
//! After the matrix, [`report`] writes `results.csv`, `report.md` and SVG plots.
//!
//! Efficiency per cell: weight bytes and bits per weight of the decoder-block projections,
//! peak resident memory while the cell ran (Linux), time to first token, prefill and decode
//! tokens per second at batch 1 (see [`crate::bench::measure`]), and decode tokens per second
//! over a batch of sequences (`efficiency.batch`, see [`crate::bench::measure_on`]).

pub mod config;
pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use config::StudyConfig;

use crate::backend::Device;
use crate::bench::EfficiencyReport;
use crate::checkpoint::{default_model, Checkpoint};
use crate::error::{Error, Result};
use crate::eval::{evaluate_on, TaskOptions, TaskResult};
use crate::model::{Decoder, Model, Weight};
use crate::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use crate::quant::smoothquant::DEFAULT_SMOOTHING_ALPHA;
use crate::quant::{quantize_model, GptqOptions, QuantRules, QuantScheme, RtnOptions};

/// The data bundled for the default study (small sets made from GSM8K, MIT licence): a text for
/// perplexity, ARC-format and LAMBADA-format items, and calibration records from the training
/// split (disjoint from the others).
const BUILTIN: [(&str, &str); 4] = [
    ("text.txt", include_str!("data/text.txt")),
    (
        "arc/ARC-Easy-Test.jsonl",
        include_str!("data/ARC-Easy-Test.jsonl"),
    ),
    (
        "lambada/lambada_test.jsonl",
        include_str!("data/lambada_test.jsonl"),
    ),
    ("calibration.jsonl", include_str!("data/calibration.jsonl")),
];

/// One cell of the matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The model as the study names it.
    pub model: String,
    /// `baseline`, `rtn`, `gptq` or `awq`.
    pub method: String,
    /// The scheme (`None` for the baseline).
    pub scheme: Option<String>,
    /// Calibration samples (calibrated methods only).
    pub samples: Option<usize>,
}

impl Cell {
    /// A short label: `rtn w8a16`, `gptq w4a16-g64 @128`, `baseline`.
    pub fn label(&self) -> String {
        let mut s = self.method.clone();
        if let Some(scheme) = &self.scheme {
            s += &format!(" {scheme}");
        }
        if let Some(n) = self.samples {
            s += &format!(" @{n}");
        }
        s
    }
}

/// The measured result of one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    /// What was run.
    pub cell: Cell,
    /// The cache key.
    pub key: String,
    /// Metrics per task (`task -> metric -> value`).
    pub metrics: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    /// Standard errors of the metrics that have one (`task -> metric -> stderr`): accuracies,
    /// as the harness computes them (sample standard deviation over the documents / sqrt(n)).
    #[serde(default)]
    pub stderr: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    /// Bytes of the decoder-block projection weights (codes, scales, zero points).
    pub linear_bytes: u64,
    /// Bits per weight of those projections.
    pub bits_per_weight: f64,
    /// Bytes of every weight of the model.
    pub model_bytes: u64,
    /// Seconds spent quantizing.
    pub quantize_s: f64,
    /// Seconds spent scoring.
    pub eval_s: f64,
    /// Time to first token (seconds) for `prompt_tokens`.
    pub ttft_s: f64,
    /// Prefill tokens per second.
    pub prefill_tokens_per_s: f64,
    /// Decode tokens per second, batch 1.
    pub decode_tokens_per_s: f64,
    /// Decode tokens per second over `efficiency.batch` sequences decoded together (`None`
    /// when the study's batch is 1).
    #[serde(default)]
    pub batch_decode_tokens_per_s: Option<f64>,
    /// Peak resident memory of the process while the cell ran (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Where the cell was scored and timed (the device's name; `"CPU"`, with the reason where
    /// a GPU study fell back to the CPU for this cell).
    #[serde(default = "cpu_name")]
    pub device: String,
}

/// Task results, scoring seconds, batch-1 efficiency and batched efficiency of one cell.
type Measured = (
    Vec<TaskResult>,
    f64,
    EfficiencyReport,
    Option<EfficiencyReport>,
);

fn cpu_name() -> String {
    "CPU".into()
}

/// The cells of `config`, baseline first for each model: the listed `cells` where the study
/// names them, else every method x scheme (x budget for calibrated methods).
pub fn plan(config: &StudyConfig) -> Vec<Cell> {
    let mut cells = Vec::new();
    for model in &config.models {
        cells.push(Cell {
            model: model.clone(),
            method: "baseline".into(),
            scheme: None,
            samples: None,
        });
        if !config.cells.is_empty() {
            for spec in &config.cells {
                let (method, scheme, samples) =
                    config::parse_cell(spec).expect("cells are checked by validate");
                let budgets = match samples {
                    Some(n) => vec![Some(n)],
                    None => budgets_of(config, &method),
                };
                for samples in budgets {
                    cells.push(Cell {
                        model: model.clone(),
                        method: method.clone(),
                        scheme: Some(scheme.clone()),
                        samples,
                    });
                }
            }
            continue;
        }
        for method in &config.methods {
            for scheme in &config.schemes {
                for samples in budgets_of(config, method) {
                    cells.push(Cell {
                        model: model.clone(),
                        method: method.clone(),
                        scheme: Some(scheme.clone()),
                        samples,
                    });
                }
            }
        }
    }
    cells
}

/// The calibration budgets a method runs at: every budget for calibrated methods, none else.
fn budgets_of(config: &StudyConfig, method: &str) -> Vec<Option<usize>> {
    if config::CALIBRATED.contains(&method) {
        config
            .calibration
            .budgets
            .iter()
            .map(|&b| Some(b))
            .collect()
    } else {
        vec![None]
    }
}

/// Progress of a study: `(cell index, cell count, cell, what is happening)`.
pub type StudyProgress<'a> = &'a mut dyn FnMut(usize, usize, &Cell, &str);

/// Runs every cell of `config` that has no cached result, and returns all results in plan
/// order (cached ones included).
pub fn run(config: &StudyConfig, progress: StudyProgress<'_>) -> Result<Vec<CellResult>> {
    // A GPU study fails here, not after quantizing its first cell.
    crate::backend::check(Device::parse(&config.device)?)?;
    let out = &config.output;
    let cells_dir = out.join("cells");
    std::fs::create_dir_all(&cells_dir).map_err(|e| Error::io(&cells_dir, e))?;
    let builtin = out.join("data");
    write_builtin(&builtin)?;
    let cells = plan(config);
    let mut results = Vec::with_capacity(cells.len());
    let mut opened: Option<(String, Checkpoint)> = None;
    for (i, cell) in cells.iter().enumerate() {
        let path = model_path(&cell.model)?;
        if opened
            .as_ref()
            .map(|(m, _)| m != &cell.model)
            .unwrap_or(true)
        {
            opened = Some((cell.model.clone(), Checkpoint::open(&path)?));
        }
        let checkpoint = &opened.as_ref().expect("opened").1;
        let key = cell_key(config, cell, checkpoint, &builtin);
        let file = cells_dir.join(format!("{key}.json"));
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(cached) = serde_json::from_str::<CellResult>(&text) {
                progress(i, cells.len(), cell, "cached");
                results.push(cached);
                continue;
            }
        }
        let result = run_cell(config, cell, checkpoint, &builtin, key, &mut |what| {
            progress(i, cells.len(), cell, what)
        })?;
        // Written whole then renamed, so an interruption never leaves a torn cell behind.
        let tmp = file.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&result).expect("result serializes");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        results.push(result);
    }
    progress(cells.len(), cells.len(), &cells[cells.len() - 1], "done");
    Ok(results)
}

fn model_path(model: &str) -> Result<PathBuf> {
    if model == "default" {
        default_model::ensure()
    } else {
        Ok(PathBuf::from(model))
    }
}

fn write_builtin(dir: &Path) -> Result<()> {
    for (name, text) in BUILTIN {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Resolves `builtin` placeholders in task names and data folders.
fn task_setup(config: &StudyConfig, builtin: &Path) -> (Vec<String>, TaskOptions) {
    let names = config
        .tasks
        .names
        .iter()
        .map(|n| {
            if n == "text:builtin" {
                format!("text:{}", builtin.join("text.txt").display())
            } else {
                n.clone()
            }
        })
        .collect();
    let data_dir = if config.tasks.data_dir == "builtin" {
        builtin.to_path_buf()
    } else {
        PathBuf::from(&config.tasks.data_dir)
    };
    let options = TaskOptions {
        data_dir,
        limit: config.tasks.limit,
        context_length: config.tasks.context,
        stride: config.tasks.context,
        max_length: Some(config.tasks.context.max(2)),
        keep_samples: false,
        ..TaskOptions::default()
    };
    (names, options)
}

/// FNV-1a 64 of everything that determines a cell's result.
fn cell_key(config: &StudyConfig, cell: &Cell, checkpoint: &Checkpoint, builtin: &Path) -> String {
    let (tasks, options) = task_setup(config, builtin);
    let calibration = cell.samples.map(|_| {
        json!({
            "files": config.calibration.files,
            "seq_len": config.calibration.seq_len,
            "seed": config.calibration.seed,
        })
    });
    let mut identity = json!({
        "lowbit": crate::VERSION,
        "model": cell.model,
        "model_bytes": checkpoint.size_bytes(),
        "config": checkpoint.config().to_json(),
        "cell": cell,
        "calibration": calibration,
        "tasks": tasks,
        "limit": options.limit,
        "context": options.context_length,
        "efficiency": [
            config.efficiency.prompt_tokens,
            config.efficiency.decode_tokens,
            config.efficiency.batch,
        ],
    });
    // CPU cells keep the keys they had before the device option existed.
    if config.device != "cpu" {
        identity["device"] = json!(config.device);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in identity.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn run_cell(
    config: &StudyConfig,
    cell: &Cell,
    checkpoint: &Checkpoint,
    builtin: &Path,
    key: String,
    progress: &mut dyn FnMut(&str),
) -> Result<CellResult> {
    crate::bench::reset_peak_rss();
    let mut model = Model::from_checkpoint(checkpoint, None)?;
    let started = Instant::now();
    if let Some(scheme) = &cell.scheme {
        progress("quantizing");
        let rules = QuantRules::new(QuantScheme::parse(scheme)?);
        let mut layer_progress = |_: usize, _: usize, _: &str| true;
        match cell.method.as_str() {
            "rtn" => quantize_model(&mut model, &rules, &RtnOptions::default())?,
            method => {
                let sources = calibration_sources(config, builtin);
                let calibration = CalibrationSet::from_sources(
                    model.require_tokenizer()?,
                    &sources,
                    cell.samples.unwrap_or(128),
                    config.calibration.seq_len,
                    config.calibration.seed,
                )?;
                let method = match method {
                    "awq" => Method::awq(),
                    "smoothquant" => Method::SmoothQuant {
                        alpha: DEFAULT_SMOOTHING_ALPHA,
                        gptq: None,
                    },
                    "smoothquant+gptq" => Method::SmoothQuant {
                        alpha: DEFAULT_SMOOTHING_ALPHA,
                        gptq: Some(GptqOptions::default()),
                    },
                    _ => Method::Gptq(GptqOptions::default()),
                };
                quantize_sequential(
                    &mut model,
                    &calibration,
                    &rules,
                    &method,
                    &mut layer_progress,
                )?;
            }
        }
    }
    let quantize_s = started.elapsed().as_secs_f64();
    let (tasks, options) = task_setup(config, builtin);
    let efficiency = &config.efficiency;
    let measured = |decoder: &dyn Decoder, progress: &mut dyn FnMut(&str)| -> Result<Measured> {
        progress("scoring");
        let started = Instant::now();
        let scored = evaluate_on(decoder, &tasks, &options, &mut |_, _, _| {})?;
        let eval_s = started.elapsed().as_secs_f64();
        progress("timing");
        let single = crate::bench::measure_on(
            decoder,
            efficiency.prompt_tokens,
            efficiency.decode_tokens,
            1,
        )?;
        let batched = (efficiency.batch > 1)
            .then(|| {
                crate::bench::measure_on(
                    decoder,
                    efficiency.prompt_tokens,
                    efficiency.decode_tokens,
                    efficiency.batch,
                )
            })
            .transpose()?;
        Ok((scored, eval_s, single, batched))
    };
    let ((scored, eval_s, efficiency, batched), device) = match Device::parse(&config.device)? {
        Device::Cpu => (measured(&model, progress)?, cpu_name()),
        Device::Cuda => {
            match crate::backend::with_decoder(&model, Device::Cuda, |gpu, name| {
                measured(gpu, &mut *progress).map(|m| (m, name.to_string()))
            }) {
                Ok(outcome) => outcome?,
                // A model the GPU kernels do not take (W4A8, grouped W8A8): the CPU scores it.
                Err(Error::InvalidArgument(why)) => {
                    progress("not on the GPU; scoring on the CPU");
                    (measured(&model, progress)?, format!("CPU ({why})"))
                }
                Err(e) => return Err(e),
            }
        }
    };
    let (linear_bytes, linear_weights) = projection_size(&model);
    Ok(CellResult {
        cell: cell.clone(),
        key,
        stderr: scored
            .iter()
            .filter(|r| !r.stderr.is_empty())
            .map(|r| (r.task.clone(), r.stderr.clone()))
            .collect(),
        metrics: scored.into_iter().map(|r| (r.task, r.metrics)).collect(),
        linear_bytes,
        bits_per_weight: linear_bytes as f64 * 8.0 / linear_weights.max(1) as f64,
        model_bytes: model.weight_bytes() as u64,
        quantize_s,
        eval_s,
        ttft_s: efficiency.time_to_first_token_s,
        prefill_tokens_per_s: efficiency.prefill_tokens_per_s,
        decode_tokens_per_s: efficiency.decode_tokens_per_s,
        batch_decode_tokens_per_s: batched.map(|b| b.decode_tokens_per_s),
        peak_rss_bytes: efficiency.peak_rss_bytes,
        device,
    })
}

fn calibration_sources(config: &StudyConfig, builtin: &Path) -> Vec<CalibrationSource> {
    config
        .calibration
        .files
        .iter()
        .map(|entry| {
            let (path, weight) = match entry.rsplit_once(':') {
                Some((p, w)) if w.parse::<f64>().is_ok() => (p, w.parse().unwrap_or(1.0)),
                _ => (entry.as_str(), 1.0),
            };
            let path = if path == "builtin" {
                builtin.join("calibration.jsonl")
            } else {
                PathBuf::from(path)
            };
            CalibrationSource { path, weight }
        })
        .collect()
}

/// Bytes and weight count of the decoder-block projections.
fn projection_size(model: &Model) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut weights = 0u64;
    for (name, linear) in model.linears() {
        if name == "lm_head" {
            continue;
        }
        match &linear.weight {
            Weight::Dense(t) => {
                bytes += (t.len() * t.dtype().size()) as u64;
                weights += t.len() as u64;
            }
            Weight::Quantized(q) => {
                bytes += q.storage_bytes() as u64;
                weights += (q.rows() * q.cols()) as u64;
            }
        }
    }
    (bytes, weights)
}

/// The study's results as one JSON value (what `results.json` holds).
pub fn to_json(results: &[CellResult]) -> Value {
    json!({ "lowbit": crate::VERSION, "cells": results })
}
