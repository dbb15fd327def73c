//! The tasks: how documents become requests, and requests become scores, following each
//! task's definition in lm-evaluation-harness 0.4 (prompts, target delimiter `" "`, few-shot
//! delimiter `"\n\n"`, metrics).

mod choice;
mod generative;
mod perplexity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

pub use choice::{arc_item, hellaswag_item, score_choices, Choice};
pub use generative::{generate_until, gsm8k_prompts};

use super::engine::{Request, Scorer};
use crate::error::{Error, Result};

/// Every task name [`run_task`] accepts.
pub const TASKS: &[&str] = &[
    "wikitext",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "mmlu",
    "lambada_openai",
    "gsm8k",
    "gsm8k_cot",
];

/// Options shared by every task.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// Folder holding the data sets (see each task for the file names looked for).
    pub data_dir: PathBuf,
    /// Score at most this many documents.
    pub limit: Option<usize>,
    /// With `limit`: pick a seeded random subset instead of the first documents.
    pub subsample_seed: Option<u64>,
    /// Few-shot examples (`None`: the task's default: 0, gsm8k 5, gsm8k_cot 8).
    pub num_fewshot: Option<usize>,
    /// Seed of the few-shot sampler (the harness' default is 1234).
    pub fewshot_seed: u64,
    /// Token perplexity of `text:` tasks: window length and stride.
    pub context_length: usize,
    /// Token perplexity stride (`== context_length`: disjoint windows, as GPTQ/AWQ report).
    pub stride: usize,
    /// Greedy generation budget of generative tasks (the harness' default is 256).
    pub max_gen_tokens: usize,
    /// Keep per-document records.
    pub keep_samples: bool,
    /// Longest model input (`None`: the model's `max_position_embeddings`, as the harness).
    pub max_length: Option<usize>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            data_dir: PathBuf::from("data"),
            limit: None,
            subsample_seed: None,
            num_fewshot: None,
            fewshot_seed: 1234,
            context_length: 2048,
            stride: 2048,
            max_gen_tokens: 256,
            keep_samples: true,
            max_length: None,
        }
    }
}

/// The scores of one task.
#[derive(Clone, Debug)]
pub struct TaskResult {
    /// Task name.
    pub task: String,
    /// Metric values, named as the harness names them (`acc`, `acc_norm`, `word_perplexity`,
    /// `exact_match,strict-match`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Standard errors where the harness reports one.
    pub stderr: BTreeMap<String, f64>,
    /// Documents scored.
    pub documents: usize,
    /// Few-shot examples used.
    pub num_fewshot: usize,
    /// Tokens run through the model (scored or generated).
    pub tokens: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Per-document records.
    pub samples: Vec<Value>,
}

/// Runs the task `name` (one of [`TASKS`], or `text:PATH` for any text file).
pub fn run_task(scorer: &Scorer<'_>, name: &str, options: &TaskOptions) -> Result<TaskResult> {
    let started = Instant::now();
    let mut result = if let Some(path) = name.strip_prefix("text:") {
        perplexity::text(scorer, Path::new(path), options)?
    } else {
        match name {
            "wikitext" => perplexity::wikitext(scorer, options)?,
            "arc_easy" | "arc_challenge" => choice::arc(scorer, name, options)?,
            "hellaswag" => choice::hellaswag(scorer, options)?,
            "mmlu" => choice::mmlu(scorer, options)?,
            "lambada_openai" => choice::lambada(scorer, options)?,
            "gsm8k" | "gsm8k_cot" => generative::gsm8k(scorer, name, options)?,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown task '{other}' (known: {}, or text:PATH)",
                    TASKS.join(", ")
                )))
            }
        }
    };
    result.task = name.to_string();
    result.seconds = started.elapsed().as_secs_f64();
    if !options.keep_samples {
        result.samples.clear();
    }
    Ok(result)
}

pub(crate) fn empty_result(documents: usize, num_fewshot: usize) -> TaskResult {
    TaskResult {
        task: String::new(),
        metrics: BTreeMap::new(),
        stderr: BTreeMap::new(),
        documents,
        num_fewshot,
        tokens: 0,
        seconds: 0.0,
        samples: Vec::new(),
    }
}

pub(crate) fn encode(scorer: &Scorer<'_>, text: &str) -> Result<Vec<u32>> {
    scorer.model().require_tokenizer()?.encode(text, true)
}

/// The harness' `_encode_pair`: trailing spaces move from the context to the continuation; the
/// whole string is encoded and split at the context's token count.
pub fn encode_pair(scorer: &Scorer<'_>, context: &str, continuation: &str) -> Result<Request> {
    if context.is_empty() {
        return Ok(Request {
            context: vec![scorer.prefix_token()?],
            continuation: encode(scorer, continuation)?,
        });
    }
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = encode(scorer, &format!("{trimmed}{continuation}"))?;
    let context_tokens = encode(scorer, trimmed)?;
    let split = context_tokens.len().min(whole.len());
    Ok(Request {
        context: whole[..split].to_vec(),
        continuation: whole[split..].to_vec(),
    })
}
