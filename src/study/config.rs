//! The study file (`study.toml`): which models, methods, schemes, calibration budgets, tasks and
//! efficiency measurements make up the matrix. Every field has a default; an empty file (or no
//! file) is the default study on the embedded default model.
//!
//! ```toml
//! models = ["default"]                 # "default" or checkpoint paths
//! methods = ["rtn", "gptq", "awq"]     # the f32/bf16 baseline is always run
//! schemes = ["w4a16-g64", "w8a16", "w8a8", "nf4", "fp8"]
//! # or, instead of methods x schemes, the cells themselves ("METHOD SCHEME [@SAMPLES]"):
//! # cells = ["rtn w4a16-g128", "gptq w4a16-g128 @128", "awq w4a16-g128 @128", "rtn fp8"]
//! output = "study"                     # directory of cells, CSV, report and plots
//!
//! [calibration]                        # for gptq and awq
//! files = ["data/gsm8k/train.jsonl"]   # text, JSONL or chat; "PATH:WEIGHT" mixes sets
//! budgets = [128, 512]                 # samples; one cell per budget
//! seq_len = 256
//! seed = 0
//!
//! [tasks]
//! names = ["text:data/wiki.txt", "arc_easy", "lambada_openai"]
//! data_dir = "data"                    # "builtin": the small sets bundled with lowbit
//! limit = 100
//! context = 512                        # token-perplexity window (text: tasks)
//!
//! [efficiency]
//! prompt_tokens = 64
//! decode_tokens = 32
//! batch = 16                           # also decode this many sequences together (1: off)
//!
//! # top level, before any [table]: where scoring and timing run ("cpu" or "cuda")
//! # device = "cpu"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::QuantScheme;

/// A whole study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudyConfig {
    /// `"default"` (the embedded default model) or checkpoint paths.
    pub models: Vec<String>,
    /// Quantization methods: `rtn`, `gptq`, `awq`, `smoothquant`, `smoothquant+gptq`.
    pub methods: Vec<String>,
    /// Scheme names (see [`QuantScheme::parse`]).
    pub schemes: Vec<String>,
    /// Explicit cells, `"METHOD SCHEME"` or `"METHOD SCHEME @SAMPLES"` (calibrated methods;
    /// without `@`, one cell per calibration budget); when given, they replace
    /// `methods` x `schemes`.
    pub cells: Vec<String>,
    /// Output directory.
    pub output: PathBuf,
    /// Calibration data of the calibrated methods.
    pub calibration: CalibrationConfig,
    /// What to score.
    pub tasks: TasksConfig,
    /// What to time.
    pub efficiency: EfficiencyConfig,
    /// Where scoring and timing run: `"cpu"` or `"cuda"` (lowbit built with `--features
    /// cuda`). Quantization always runs on the CPU. A cell whose model the GPU kernels do not
    /// take (int8 activations with 4-bit or grouped weights) is scored and timed on the CPU, and
    /// its result says so.
    pub device: String,
}

/// Calibration data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationConfig {
    /// `PATH` or `PATH:WEIGHT` entries; `"builtin"` uses the bundled text.
    pub files: Vec<String>,
    /// Sample counts; one cell per budget and calibrated method.
    pub budgets: Vec<usize>,
    /// Tokens per sample.
    pub seq_len: usize,
    /// Seed of the draw.
    pub seed: u64,
}

/// Tasks and their options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Task names as `lowbit eval` takes them.
    pub names: Vec<String>,
    /// Data folder, or `"builtin"`.
    pub data_dir: String,
    /// Documents per task (`None`: all).
    pub limit: Option<usize>,
    /// Token-perplexity window of `text:` tasks.
    pub context: usize,
}

/// Efficiency measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EfficiencyConfig {
    /// Prompt tokens of the prefill / time-to-first-token measurement.
    pub prompt_tokens: usize,
    /// Greedy decode steps timed.
    pub decode_tokens: usize,
    /// Sequences of the batched decode measurement (1: measure batch 1 only).
    pub batch: usize,
}

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig {
            models: vec!["default".into()],
            methods: vec!["rtn".into()],
            schemes: ["w4a16-g64", "w4a16-g64-asym", "w8a16", "w8a8", "nf4", "fp8"]
                .map(String::from)
                .to_vec(),
            cells: Vec::new(),
            output: PathBuf::from("study"),
            calibration: CalibrationConfig::default(),
            tasks: TasksConfig::default(),
            efficiency: EfficiencyConfig::default(),
            device: "cpu".into(),
        }
    }
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            files: vec!["builtin".into()],
            budgets: vec![32],
            seq_len: 256,
            seed: 0,
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            names: ["text:builtin", "arc_easy", "lambada_openai"]
                .map(String::from)
                .to_vec(),
            data_dir: "builtin".into(),
            limit: Some(30),
            context: 512,
        }
    }
}

impl Default for EfficiencyConfig {
    fn default() -> Self {
        EfficiencyConfig {
            prompt_tokens: 64,
            decode_tokens: 32,
            batch: 16,
        }
    }
}

/// Splits a cell spec `"METHOD SCHEME [@SAMPLES]"` into its parts, checking each.
pub fn parse_cell(spec: &str) -> std::result::Result<(String, String, Option<usize>), String> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (method, scheme, samples) = match parts.as_slice() {
        [m, s] => (*m, *s, None),
        [m, s, n] => {
            let n = n
                .strip_prefix('@')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("cell '{spec}': samples are written @N with N >= 1"))?;
            (*m, *s, Some(n))
        }
        _ => {
            return Err(format!(
                "cell '{spec}': expected \"METHOD SCHEME [@SAMPLES]\""
            ))
        }
    };
    if !METHODS.contains(&method) {
        return Err(format!(
            "cell '{spec}': unknown method '{method}' ({})",
            METHODS.join(", ")
        ));
    }
    QuantScheme::parse(scheme).map_err(|e| format!("cell '{spec}': {e}"))?;
    if samples.is_some() && !CALIBRATED.contains(&method) {
        return Err(format!(
            "cell '{spec}': {method} takes no calibration samples"
        ));
    }
    Ok((method.to_string(), scheme.to_string(), samples))
}

/// Calibrated methods (those that take calibration budgets).
pub const CALIBRATED: [&str; 4] = ["gptq", "awq", "smoothquant", "smoothquant+gptq"];
/// Every method name a study accepts.
pub const METHODS: [&str; 5] = ["rtn", "gptq", "awq", "smoothquant", "smoothquant+gptq"];

impl StudyConfig {
    /// Parses a study file; relative paths in it are taken relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = Self::from_toml(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses study TOML (`path` names the source in errors) and validates it.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let config: StudyConfig =
            toml::from_str(text).map_err(|e| Error::config(path, e.to_string()))?;
        config.validate(path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &str| -> String {
            if p == "builtin" || p == "default" || Path::new(p).is_absolute() {
                p.to_string()
            } else {
                base.join(p).display().to_string()
            }
        };
        self.models = self.models.iter().map(|m| resolve(m)).collect();
        self.calibration.files = self.calibration.files.iter().map(|f| resolve(f)).collect();
        if self.tasks.data_dir != "builtin" {
            self.tasks.data_dir = resolve(&self.tasks.data_dir);
        }
        self.tasks.names = self
            .tasks
            .names
            .iter()
            .map(|n| match n.strip_prefix("text:") {
                Some(p) => format!("text:{}", resolve(p)),
                None => n.clone(),
            })
            .collect();
        if self.output.is_relative() {
            self.output = base.join(&self.output);
        }
    }

    /// Checks every name and count up front, so a long study does not fail at its last cell.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |why: String| Err(Error::config(path, why));
        if self.models.is_empty() {
            return bad("models: at least one model".into());
        }
        for m in &self.methods {
            if !METHODS.contains(&m.as_str()) {
                return bad(format!(
                    "methods: unknown method '{m}' ({})",
                    METHODS.join(", ")
                ));
            }
        }
        for s in &self.schemes {
            QuantScheme::parse(s).map_err(|e| Error::config(path, format!("schemes: {e}")))?;
        }
        let mut cell_methods = Vec::new();
        for c in &self.cells {
            let (method, _, samples) = parse_cell(c).map_err(|e| Error::config(path, e))?;
            if samples.is_none() {
                cell_methods.push(method);
            }
        }
        if self.tasks.names.is_empty() {
            return bad("tasks.names: at least one task".into());
        }
        crate::backend::Device::parse(&self.device)
            .map_err(|e| Error::config(path, format!("device: {e}")))?;
        let methods = if self.cells.is_empty() {
            &self.methods
        } else {
            &cell_methods
        };
        let calibrated = methods.iter().any(|m| CALIBRATED.contains(&m.as_str()));
        let listed_samples = self.cells.iter().any(|c| c.contains('@'));
        if (calibrated
            && (self.calibration.budgets.is_empty() || self.calibration.budgets.contains(&0)))
            || ((calibrated || listed_samples)
                && (self.calibration.files.is_empty() || self.calibration.seq_len == 0))
        {
            return bad(
                "calibration: calibrated methods need files, non-zero budgets and a non-zero seq_len".into(),
            );
        }
        if self.efficiency.prompt_tokens == 0
            || self.efficiency.decode_tokens == 0
            || self.efficiency.batch == 0
        {
            return bad(
                "efficiency: prompt_tokens, decode_tokens and batch must be at least 1".into(),
            );
        }
        if self.tasks.context < 2 {
            return bad("tasks.context must be at least 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_study() {
        let c = StudyConfig::from_toml("", Path::new("s.toml")).unwrap();
        assert_eq!(c, StudyConfig::default());
    }

    #[test]
    fn listed_cells_replace_the_cross_product() {
        let text = "cells = [\"rtn w4a16-g128\", \"gptq w4a16-g128 @64\", \"awq nf4\"]\n\
                    [calibration]\nbudgets = [8, 16]";
        let c = StudyConfig::from_toml(text, Path::new("s.toml")).unwrap();
        let labels: Vec<String> = crate::study::plan(&c).iter().map(|c| c.label()).collect();
        assert_eq!(
            labels,
            [
                "baseline",
                "rtn w4a16-g128",
                "gptq w4a16-g128 @64",
                "awq nf4 @8",
                "awq nf4 @16"
            ]
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("methods = [\"gptx\"]", "gptx"),
            ("schemes = [\"w3a16\"]", "w3a16"),
            ("colour = 1", "colour"),
            (
                "methods = [\"gptq\"]\n[calibration]\nbudgets = [0]",
                "budgets",
            ),
            ("[tasks]\nnames = []", "tasks.names"),
            ("cells = [\"gptq\"]", "METHOD SCHEME"),
            ("cells = [\"gptx w4a16-g128\"]", "gptx"),
            ("cells = [\"rtn w3a16\"]", "w3a16"),
            ("cells = [\"rtn w4a16-g128 @128\"]", "takes no calibration"),
            ("cells = [\"gptq w4a16-g128 @0\"]", "@N"),
            ("[efficiency]\nbatch = 0", "batch"),
        ] {
            let err = StudyConfig::from_toml(text, Path::new("s.toml")).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
