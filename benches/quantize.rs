//! Quantization time per calibration method, and the Hessian accumulation against the plain
//! f64 loops, measured in the same run.
//!
//! 1. Hessian: `X^T X` of one pipeline mini-batch (8 sequences x 256 tokens) at the widths of
//!    the default model's projection inputs (576, 1536), blocked f32 kernel vs
//!    `accumulate_hessian_reference`; best of 3.
//! 2. Pipeline (skipped unless `$LOWBIT_BENCH_CALIB` names a JSONL/text calibration file, e.g.
//!    GSM8K `train.jsonl`): `quantize_sequential` of the default model (or `$LOWBIT_BENCH_MODEL`)
//!    for each method in `$LOWBIT_BENCH_METHODS` (default `rtn,gptq,awq,smoothquant`) and each
//!    sample count in `$LOWBIT_BENCH_SAMPLES` (default `128,512`), sequence length
//!    `$LOWBIT_BENCH_SEQ_LEN` (default 256); w4a16-g128, SmoothQuant w8a8. One run each (minutes
//!    per run); wall time, CPU time of the process, and peak resident memory during the run.
//!
//! `cargo bench --bench quantize`

use std::time::Instant;

use lowbit::bench::{memory_usage, release_free_memory, reset_peak_rss};
use lowbit::checkpoint::{default_model, Checkpoint, Dtype};
use lowbit::model::Model;
use lowbit::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use lowbit::quant::gptq::GptqOptions;
use lowbit::quant::hessian::{accumulate_hessian, accumulate_hessian_reference};
use lowbit::quant::{QuantRules, QuantScheme, RtnOptions};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`), if available.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn hessian() {
    let rows = 8 * 256;
    println!("hessian: X [{rows}, width] -> X^T X, best of 3");
    for width in [576, 1536] {
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i as f32 * 0.618).fract() - 0.5) * if i % 31 == 0 { 20.0 } else { 1.0 })
            .collect();
        let mut h = vec![0f64; width * width];
        let reference = best_of(3, || accumulate_hessian_reference(&mut h, rows, &x));
        let blocked = best_of(3, || accumulate_hessian(&mut h, rows, &x));
        let gflop = 2.0 * (rows * width * width) as f64 / 1e9;
        println!(
            "  width {width:>5}: f64 loops {:>8.1} ms ({:>5.1} GFLOP/s), blocked f32 {:>7.1} ms \
             ({:>5.1} GFLOP/s, full-matrix count), speed-up {:.1}x",
            reference * 1e3,
            gflop / reference,
            blocked * 1e3,
            gflop / blocked,
            reference / blocked
        );
    }
}

fn pipeline(calib: &str) {
    let path = match std::env::var_os("LOWBIT_BENCH_MODEL") {
        Some(p) => p.into(),
        None => default_model::ensure().expect("default model"),
    };
    let checkpoint = Checkpoint::open(&path).expect("checkpoint");
    let base = Model::from_checkpoint(&checkpoint, Some(Dtype::F32)).expect("model");
    let seq_len: usize = env_or("LOWBIT_BENCH_SEQ_LEN", "256")
        .parse()
        .expect("seq len");
    let source = CalibrationSource {
        path: calib.into(),
        weight: 1.0,
    };
    println!("pipeline: {} , seq len {seq_len}", path.display());
    for samples in env_or("LOWBIT_BENCH_SAMPLES", "128,512").split(',') {
        let samples: usize = samples.trim().parse().expect("sample count");
        let tokenizer = base.require_tokenizer().expect("tokenizer");
        let calibration = CalibrationSet::from_sources(
            tokenizer,
            std::slice::from_ref(&source),
            samples,
            seq_len,
            0,
        )
        .expect("calibration set");
        for method in env_or("LOWBIT_BENCH_METHODS", "rtn,gptq,awq,smoothquant").split(',') {
            let (scheme, chosen) = match method.trim() {
                "rtn" => ("w4a16-g128", Method::Rtn(RtnOptions::default())),
                "gptq" => ("w4a16-g128", Method::Gptq(GptqOptions::default())),
                "awq" => ("w4a16-g128", Method::awq()),
                "smoothquant" => (
                    "w8a8",
                    Method::SmoothQuant {
                        alpha: 0.5,
                        gptq: None,
                    },
                ),
                other => panic!("unknown method {other}"),
            };
            let rules = QuantRules::new(QuantScheme::parse(scheme).expect("scheme"));
            let mut model = base.clone();
            release_free_memory();
            let before = memory_usage().map_or(0, |m| m.rss_bytes);
            reset_peak_rss();
            let cpu = cpu_seconds();
            let start = Instant::now();
            quantize_sequential(&mut model, &calibration, &rules, &chosen, &mut |_, _, _| {
                true
            })
            .expect("quantize");
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu
                .and_then(|c| Some(cpu_seconds()? - c))
                .unwrap_or(f64::NAN);
            let peak = memory_usage().map_or(0, |m| m.peak_rss_bytes);
            println!(
                "  {samples:>4} samples ({:>6} tokens) {method:<12} {scheme:<11} {wall:>7.1} s wall \
                 {cpu:>7.1} s cpu, peak RSS {:.0} MiB ({:+.0} MiB over the loaded model)",
                calibration.tokens(),
                peak as f64 / (1 << 20) as f64,
                (peak as f64 - before as f64) / (1 << 20) as f64
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    hessian();
    match std::env::var("LOWBIT_BENCH_CALIB") {
        Ok(calib) => pipeline(&calib),
        Err(_) => println!("pipeline: set LOWBIT_BENCH_CALIB to a calibration file to run it"),
    }
}
