//! The calibration study: quantize the default model (or `--model PATH`) with each method and
//! calibration budget in memory, and score the token perplexity of a held-out text exactly as
//! `lowbit eval --tasks text:FILE --context 512 --stride 512` reports it (same windows, same
//! scoring engine; the task's whole-document pass is skipped since only the token perplexity
//! is reported).
//!
//! ```sh
//! python3 tests/reference/make_heldout.py DATA/gsm8k/test.jsonl /tmp/heldout.txt
//! cargo run --release --example calibration_study -- --calib DATA/gsm8k/train.jsonl \
//!     --heldout /tmp/heldout.txt --samples 128,512 --seq-len 256 \
//!     --runs f32,rtn:w4a16-g128,gptq:w4a16-g128,awq:w4a16-g128,rtn:w8a8,smoothquant:w8a8
//! ```
//!
//! One line per run: method, scheme, samples, token perplexity, wall and CPU seconds of the
//! quantization, and the peak resident memory during it.

use std::time::Instant;

use lowbit::bench::{memory_usage, release_free_memory, reset_peak_rss};
use lowbit::checkpoint::{default_model, Checkpoint, Dtype};
use lowbit::eval::{Request, Scorer};
use lowbit::model::Model;
use lowbit::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use lowbit::quant::gptq::GptqOptions;
use lowbit::quant::{QuantRules, QuantScheme, RtnOptions};

/// Window and stride of the token perplexity (the study's protocol).
const CONTEXT: usize = 512;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`), NaN elsewhere.
fn cpu_seconds() -> f64 {
    let parse = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
    };
    parse().unwrap_or(f64::NAN)
}

/// Token perplexity over windows of `CONTEXT` tokens advanced by `CONTEXT`, as the text task
/// computes it.
fn token_perplexity(model: &Model, tokens: &[u32]) -> f64 {
    let mut requests = Vec::new();
    let (mut scored_until, mut start) = (1, 0);
    while scored_until < tokens.len() {
        let end = (start + CONTEXT).min(tokens.len());
        let first_target = scored_until.max(start + 1);
        requests.push(Request {
            context: tokens[start..first_target].to_vec(),
            continuation: tokens[first_target..end].to_vec(),
        });
        scored_until = end;
        start += CONTEXT;
    }
    let scored = Scorer::new(model)
        .loglikelihood(&requests, &mut |_, _| {})
        .expect("scoring");
    let nll: f64 = -scored.iter().map(|s| s.logprob).sum::<f64>();
    let count: usize = requests.iter().map(|r| r.continuation.len()).sum();
    (nll / count as f64).exp()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = arg(&args, "--model").map_or_else(
        || default_model::ensure().expect("default model"),
        std::path::PathBuf::from,
    );
    let calib = arg(&args, "--calib").expect("--calib FILE");
    let heldout = arg(&args, "--heldout").expect("--heldout FILE");
    let seq_len: usize = arg(&args, "--seq-len").map_or(256, |v| v.parse().expect("seq len"));
    let budgets: Vec<usize> = arg(&args, "--samples")
        .unwrap_or_else(|| "128".into())
        .split(',')
        .map(|v| v.parse().expect("sample count"))
        .collect();
    let runs = arg(&args, "--runs").unwrap_or_else(|| "f32,rtn:w4a16-g128,gptq:w4a16-g128".into());

    let checkpoint = Checkpoint::open(&path).expect("checkpoint");
    let base = Model::from_checkpoint(&checkpoint, Some(Dtype::F32)).expect("model");
    let tokenizer = base.require_tokenizer().expect("tokenizer");
    let text = std::fs::read_to_string(&heldout).expect("held-out text");
    let tokens = tokenizer.encode(&text, true).expect("tokenize");
    println!(
        "model {} | held-out {heldout}: {} tokens | calibration {calib}, seq len {seq_len}",
        path.display(),
        tokens.len()
    );
    let source = CalibrationSource {
        path: calib.into(),
        weight: 1.0,
    };
    for run in runs.split(',') {
        let (method, scheme) = run.split_once(':').unwrap_or((run, "w4a16-g128"));
        let calibrated = !matches!(method, "f32" | "rtn");
        let budgets_here: &[usize] = if calibrated { &budgets } else { &[0] };
        for &samples in budgets_here {
            let mut model = base.clone();
            let (mut wall, mut cpu, mut peak_mib, mut tokens_used) = (0.0, 0.0, 0.0, 0);
            if method != "f32" {
                let rules = QuantRules::new(QuantScheme::parse(scheme).expect("scheme"));
                let chosen = match method {
                    "rtn" => Method::Rtn(RtnOptions::default()),
                    "gptq" => Method::Gptq(GptqOptions::default()),
                    "awq" => Method::awq(),
                    "smoothquant" => Method::SmoothQuant {
                        alpha: 0.5,
                        gptq: None,
                    },
                    "smoothquant+gptq" => Method::SmoothQuant {
                        alpha: 0.5,
                        gptq: Some(GptqOptions::default()),
                    },
                    other => panic!("unknown method {other}"),
                };
                let calibration = CalibrationSet::from_sources(
                    tokenizer,
                    std::slice::from_ref(&source),
                    samples.max(1),
                    seq_len,
                    0,
                )
                .expect("calibration set");
                tokens_used = if calibrated { calibration.tokens() } else { 0 };
                release_free_memory();
                reset_peak_rss();
                let (start, cpu_start) = (Instant::now(), cpu_seconds());
                quantize_sequential(&mut model, &calibration, &rules, &chosen, &mut |_, _, _| {
                    true
                })
                .expect("quantize");
                wall = start.elapsed().as_secs_f64();
                cpu = cpu_seconds() - cpu_start;
                peak_mib =
                    memory_usage().map_or(f64::NAN, |m| m.peak_rss_bytes as f64) / (1 << 20) as f64;
            }
            let ppl = token_perplexity(&model, &tokens);
            println!(
                "{method:<17} {scheme:<11} samples {samples:>4} ({tokens_used:>6} tokens) \
                 token_ppl {ppl:.4} | quantize {wall:.1} s wall, {cpu:.1} s cpu, peak RSS \
                 {peak_mib:.0} MiB"
            );
        }
    }
}
