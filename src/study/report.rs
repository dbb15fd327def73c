//! The study's outputs: `results.csv` (one row per cell), `report.md` (tables per model with
//! deltas to the baseline and a recommendation per task) and SVG plots (see [`super::plot`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::{plot, CellResult};
use crate::error::{Error, Result};

/// Metrics a task is judged by, in order of preference, and whether higher is better.
const MAIN_METRICS: [(&str, bool); 6] = [
    ("acc", true),
    ("exact_match,strict-match", true),
    ("exact_match,flexible-extract", true),
    ("token_perplexity", false),
    ("word_perplexity", false),
    ("perplexity", false),
];

/// A quantized cell is "close to the baseline" on a task when accuracy drops by at most this
/// many points, or perplexity rises by at most this fraction.
pub const ACCURACY_SLACK_POINTS: f64 = 1.0;
/// See [`ACCURACY_SLACK_POINTS`].
pub const PERPLEXITY_SLACK: f64 = 0.05;

/// The metric a task is judged by in `result`: name, value, higher is better.
pub fn main_metric(result: &CellResult, task: &str) -> Option<(&'static str, f64, bool)> {
    let metrics = result.metrics.get(task)?;
    MAIN_METRICS
        .iter()
        .find_map(|&(name, higher)| metrics.get(name).map(|&v| (name, v, higher)))
}

/// How a task is named in reports: `text:PATH` tasks by their file name only.
pub fn task_label(task: &str) -> String {
    match task.strip_prefix("text:") {
        Some(path) => format!(
            "text:{}",
            Path::new(path)
                .file_name()
                .map_or(path.into(), |f| f.to_string_lossy())
        ),
        None => task.to_string(),
    }
}

/// Task names over all results, in first-seen order.
pub fn tasks(results: &[CellResult]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in results {
        for t in r.metrics.keys() {
            if seen.insert(t.clone()) {
                out.push(t.clone());
            }
        }
    }
    out
}

/// Writes `results.json`, `results.csv`, `report.md` and the plots into `dir`.
pub fn write_all(results: &[CellResult], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        written.push(path);
        Ok(())
    };
    put(
        "results.json",
        serde_json::to_string_pretty(&super::to_json(results)).expect("serializes"),
    )?;
    put("results.csv", csv(results))?;
    put("report.md", markdown(results))?;
    for (name, svg) in plot::plots(results) {
        put(&name, svg)?;
    }
    Ok(written)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per cell: identity, size, every task metric, efficiency.
pub fn csv(results: &[CellResult]) -> String {
    let mut metric_columns: Vec<(String, String)> = Vec::new();
    for r in results {
        for (task, metrics) in &r.metrics {
            for name in metrics.keys() {
                let col = (task.clone(), name.clone());
                if !metric_columns.contains(&col) {
                    metric_columns.push(col);
                }
                let has_stderr = r.stderr.get(task).is_some_and(|s| s.contains_key(name));
                let col = (task.clone(), format!("{name}_stderr"));
                if has_stderr && !metric_columns.contains(&col) {
                    metric_columns.push(col);
                }
            }
        }
    }
    let mut out =
        String::from("model,method,scheme,samples,bits_per_weight,linear_bytes,model_bytes");
    for (task, name) in &metric_columns {
        out += &format!(",{}", csv_field(&format!("{task}:{name}")));
    }
    out += ",quantize_s,eval_s,ttft_s,prefill_tokens_per_s,decode_tokens_per_s,\
            batch_decode_tokens_per_s,peak_rss_bytes,device\n";
    for r in results {
        let c = &r.cell;
        let _ = write!(
            out,
            "{},{},{},{},{:.4},{},{}",
            csv_field(&c.model),
            c.method,
            c.scheme.as_deref().unwrap_or(""),
            c.samples.map_or(String::new(), |n| n.to_string()),
            r.bits_per_weight,
            r.linear_bytes,
            r.model_bytes
        );
        for (task, name) in &metric_columns {
            let v = match name.strip_suffix("_stderr") {
                Some(metric) => r.stderr.get(task).and_then(|m| m.get(metric)),
                None => r.metrics.get(task).and_then(|m| m.get(name)),
            };
            out += &v.map_or(",".to_string(), |v| format!(",{v}"));
        }
        let _ = writeln!(
            out,
            ",{:.3},{:.3},{:.5},{:.2},{:.2},{},{},{}",
            r.quantize_s,
            r.eval_s,
            r.ttft_s,
            r.prefill_tokens_per_s,
            r.decode_tokens_per_s,
            r.batch_decode_tokens_per_s
                .map_or(String::new(), |v| format!("{v:.2}")),
            r.peak_rss_bytes.map_or(String::new(), |b| b.to_string()),
            csv_field(&r.device)
        );
    }
    out
}

fn format_metric(name: &str, v: f64) -> String {
    if name.contains("perplexity") {
        format!("{v:.3}")
    } else {
        format!("{:.1}", v * 100.0)
    }
}

fn format_delta(name: &str, v: f64, base: f64) -> String {
    if name.contains("perplexity") {
        format!("{:+.1}%", (v / base - 1.0) * 100.0)
    } else {
        format!("{:+.1}", (v - base) * 100.0)
    }
}

/// The standard error of metric `name` of `task` in `result`, where the task reports one.
fn stderr_of(result: &CellResult, task: &str, name: &str) -> Option<f64> {
    result.stderr.get(task).and_then(|m| m.get(name)).copied()
}

/// Half-width in points of the 95% interval of the difference of two accuracies with these
/// standard errors (independent samples, normal approximation); 0 when either is unknown.
fn noise_points(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => 1.96 * (a * a + b * b).sqrt() * 100.0,
        _ => 0.0,
    }
}

/// Whether `value` is within the slack of `base`: perplexity within [`PERPLEXITY_SLACK`];
/// accuracy within [`ACCURACY_SLACK_POINTS`], or within `noise` points where that is wider
/// (a drop the data cannot tell from chance).
fn close(name: &str, value: f64, base: f64, higher: bool, noise: f64) -> bool {
    let slack = ACCURACY_SLACK_POINTS.max(noise);
    if name.contains("perplexity") {
        value <= base * (1.0 + PERPLEXITY_SLACK)
    } else if higher {
        (base - value) * 100.0 <= slack
    } else {
        (value - base) * 100.0 <= slack
    }
}

/// The Markdown report: per model, a table of every cell (accuracy as percentages, perplexity
/// as is, deltas to the baseline), then a recommendation per task.
pub fn markdown(results: &[CellResult]) -> String {
    let tasks = tasks(results);
    let mut out = String::from("# Quantization study\n\n");
    let _ = writeln!(
        out,
        "{} cells. Accuracy in percent with its standard error (delta in points), perplexity \
         as is (delta in percent); bits per weight and size count the decoder-block \
         projections; speeds at batch 1 (TPOT: time per output token while decoding), and \
         decoding a batch of sequences together where measured.\n",
        results.len()
    );
    let models: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for r in results {
            if !v.contains(&r.cell.model.as_str()) {
                v.push(&r.cell.model);
            }
        }
        v
    };
    for model in models {
        let rows: Vec<&CellResult> = results.iter().filter(|r| r.cell.model == model).collect();
        let baseline = rows.iter().find(|r| r.cell.method == "baseline").copied();
        let _ = writeln!(out, "## {model}\n");
        let mut header = String::from("| cell | bits/weight | size MB |");
        let mut rule = String::from("|---|---:|---:|");
        for t in &tasks {
            let metric = rows
                .iter()
                .find_map(|r| main_metric(r, t))
                .map_or("", |m| m.0);
            let _ = write!(header, " {} {metric} | delta |", task_label(t));
            rule += "---:|---:|";
        }
        header += " TTFT ms | TPOT ms | prefill tok/s | decode tok/s | batched decode tok/s | \
                   peak RSS MB | quantize s |";
        rule += "---:|---:|---:|---:|---:|---:|---:|";
        let _ = writeln!(out, "{header}\n{rule}");
        for r in &rows {
            let _ = write!(
                out,
                "| {} | {:.2} | {:.1} |",
                r.cell.label(),
                r.bits_per_weight,
                r.linear_bytes as f64 / 1e6
            );
            for t in &tasks {
                match main_metric(r, t) {
                    Some((name, v, _)) => {
                        let delta = baseline
                            .and_then(|b| main_metric(b, t))
                            .filter(|_| r.cell.method != "baseline")
                            .map_or("".to_string(), |(_, b, _)| format_delta(name, v, b));
                        let shown = match stderr_of(r, t, name) {
                            Some(se) => format!("{} ±{:.1}", format_metric(name, v), se * 100.0),
                            None => format_metric(name, v),
                        };
                        let _ = write!(out, " {shown} | {delta} |");
                    }
                    None => out += " | |",
                }
            }
            let _ = writeln!(
                out,
                " {:.1} | {:.2} | {:.1} | {:.1} | {} | {} | {} |",
                r.ttft_s * 1e3,
                1e3 / r.decode_tokens_per_s,
                r.prefill_tokens_per_s,
                r.decode_tokens_per_s,
                r.batch_decode_tokens_per_s
                    .map_or("".to_string(), |v| format!("{v:.1}")),
                r.peak_rss_bytes
                    .map_or("".to_string(), |b| format!("{:.0}", b as f64 / 1e6)),
                if r.cell.method == "baseline" {
                    "".to_string()
                } else {
                    format!("{:.1}", r.quantize_s)
                }
            );
        }
        let mut devices: Vec<&str> = Vec::new();
        for r in &rows {
            if !devices.contains(&r.device.as_str()) {
                devices.push(&r.device);
            }
        }
        if let [only] = devices.as_slice() {
            let _ = writeln!(out, "\nScored and timed on {only}.");
        } else {
            out += "\nScored and timed on:\n";
            for r in &rows {
                let _ = writeln!(out, "- {}: {}", r.cell.label(), r.device);
            }
        }
        out += "\n### Recommendation\n\n";
        for t in &tasks {
            let _ = writeln!(
                out,
                "- **{}**: {}",
                task_label(t),
                recommend(&rows, baseline, t)
            );
        }
        out += "\n";
    }
    out
}

/// The smallest quantized cell within the slack (or the noise) of the baseline on `task`;
/// without one, the best-scoring quantized cell.
fn recommend(rows: &[&CellResult], baseline: Option<&CellResult>, task: &str) -> String {
    let quantized: Vec<(&CellResult, &'static str, f64, bool)> = rows
        .iter()
        .filter(|r| r.cell.method != "baseline")
        .filter_map(|r| main_metric(r, task).map(|(n, v, h)| (*r, n, v, h)))
        .collect();
    if quantized.is_empty() {
        return "no quantized cell scored this task".into();
    }
    let base = baseline.and_then(|b| main_metric(b, task));
    let noise = |r: &CellResult, name: &str| {
        noise_points(
            stderr_of(r, task, name),
            baseline.and_then(|b| stderr_of(b, task, name)),
        )
    };
    let within: Vec<_> = match base {
        Some((_, b, _)) => quantized
            .iter()
            .filter(|(r, n, v, h)| close(n, *v, b, *h, noise(r, n)))
            .collect(),
        None => Vec::new(),
    };
    let better = |a: f64, b: f64, higher: bool| if higher { a > b } else { a < b };
    let pick = if within.is_empty() {
        quantized
            .iter()
            .reduce(|a, b| if better(b.2, a.2, a.3) { b } else { a })
            .expect("non-empty")
    } else {
        within
            .into_iter()
            .reduce(|a, b| {
                if b.0.bits_per_weight < a.0.bits_per_weight
                    || (b.0.bits_per_weight == a.0.bits_per_weight && better(b.2, a.2, a.3))
                {
                    b
                } else {
                    a
                }
            })
            .expect("non-empty")
    };
    let (r, name, v, higher) = *pick;
    let delta = base.map_or(String::new(), |(_, b, _)| {
        format!(" ({} vs baseline)", format_delta(name, v, b))
    });
    let verdict = match base {
        Some((_, b, _)) if close(name, v, b, higher, 0.0) => {
            "the smallest cell within the slack of the baseline".to_string()
        }
        Some((_, b, _)) if close(name, v, b, higher, noise(r, name)) => format!(
            "the smallest cell whose drop is within the noise of this data (±{:.1} points at \
             95%); more documents would tell it from the baseline",
            noise(r, name)
        ),
        Some(_) => "no cell is within the slack of the baseline; this one scores best".into(),
        None => "best score (no baseline)".into(),
    };
    format!(
        "{} at {:.2} bits/weight, {name} {}{delta}: {verdict}",
        r.cell.label(),
        r.bits_per_weight,
        format_metric(name, v)
    )
}
