//! Scoring models as lm-evaluation-harness does: perplexity (rolling windows), multiple-choice
//! log-likelihood (ARC, HellaSwag, MMLU, LAMBADA) and generative exact match (GSM8K), from local
//! data files, with results laid out like the harness' JSON.

pub mod data;
pub mod engine;
pub mod metrics;
pub mod pyrandom;
pub mod tasks;

use std::time::Instant;

use serde_json::{json, Map, Value};

pub use engine::{Request, Scored, Scorer};
pub use tasks::{run_task, TaskOptions, TaskResult, TASKS};

use crate::error::Result;
use crate::model::{Decoder, Model};

/// Runs `tasks` on `model` (on the CPU); `progress(task_index, task_count, task)` is called
/// before each.
pub fn evaluate(
    model: &Model,
    task_names: &[String],
    options: &TaskOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<TaskResult>> {
    evaluate_on(model, task_names, options, progress)
}

/// [`evaluate`] with the forward passes on `decoder` (the CPU model or a GPU copy of it).
pub fn evaluate_on(
    decoder: &dyn Decoder,
    task_names: &[String],
    options: &TaskOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<TaskResult>> {
    let mut scorer = Scorer::with_decoder(decoder);
    if let Some(max) = options.max_length {
        scorer.max_length = max.max(2);
    }
    let mut results = Vec::new();
    for (i, name) in task_names.iter().enumerate() {
        progress(i, task_names.len(), name);
        results.push(run_task(&scorer, name, options)?);
    }
    Ok(results)
}

/// The results as JSON close to the harness' layout: `results` with `"{metric},none"` and
/// `"{metric}_stderr,none"` keys, `n-samples`, `n-shot`, `config`, `versions`, `efficiency`
/// (per task: seconds, tokens, tokens per second), the process's `peak_rss_bytes` (Linux), and
/// `samples` per task.
pub fn to_json(results: &[TaskResult], model_name: &str, started: Instant) -> Value {
    let mut res = Map::new();
    let mut n_samples = Map::new();
    let mut n_shot = Map::new();
    let mut samples = Map::new();
    let mut efficiency = Map::new();
    for r in results {
        let mut m = Map::new();
        m.insert("alias".into(), json!(r.task));
        for (k, v) in &r.metrics {
            let (metric, filter) = k.split_once(',').unwrap_or((k, "none"));
            m.insert(format!("{metric},{filter}"), json!(v));
            let stderr = r.stderr.get(k).map_or(json!("N/A"), |s| json!(s));
            m.insert(format!("{metric}_stderr,{filter}"), stderr);
        }
        res.insert(r.task.clone(), Value::Object(m));
        n_samples.insert(
            r.task.clone(),
            json!({"original": r.documents, "effective": r.documents}),
        );
        n_shot.insert(r.task.clone(), json!(r.num_fewshot));
        samples.insert(r.task.clone(), json!(r.samples));
        efficiency.insert(
            r.task.clone(),
            json!({
                "seconds": r.seconds,
                "tokens": r.tokens,
                "tokens_per_second": r.tokens as f64 / r.seconds.max(1e-9),
            }),
        );
    }
    let memory = crate::bench::memory_usage();
    json!({
        "results": res,
        "n-samples": n_samples,
        "n-shot": n_shot,
        "config": {"model": "lowbit", "model_args": model_name},
        "versions": {"lowbit": crate::VERSION},
        "efficiency": efficiency,
        "total_evaluation_time_seconds": started.elapsed().as_secs_f64().to_string(),
        "peak_rss_bytes": memory.map(|m| m.peak_rss_bytes),
        "samples": samples,
    })
}
