//! Speed of the whole forward pass on the GPU for a model of Qwen2.5-0.5B's shape (24 blocks,
//! hidden 896, MLP 4864, 14 query / 2 key-value heads, vocabulary 151936, tied head, q/k/v bias)
//! with seeded random weights: decode and prefill tokens per second per scheme and batch size,
//! with decode steps replayed as CUDA graphs and, for comparison, launched kernel by kernel.
//!
//! Run on a machine with a GPU: `cargo bench --features cuda --bench cuda_forward` (or the built
//! binary `target/release/deps/cuda_forward-*`). Options: `--schemes LIST` (default
//! bf16,w4a16-g128,w8a16,fp8,nf4,w8a8,w8a8-fp8,w8a8-fp8-block; bf16 is dense), `--batch LIST`
//! (default 1,16), `--prompt-tokens N` (128), `--decode-tokens N` (128), `--separate-swiglu` (the
//! SwiGLU as its own kernel instead of in the gate/up product; see
//! `CudaModel::set_fused_swiglu`), `--pdl LIST` (`on`, `off` or `on,off`; default `on`:
//! kernels launched with programmatic dependent launch, see
//! `CudaDevice::set_programmatic_launch`), `--profile` (after the timings, GPU time per stage
//! of a batch-1 decode step, kernels launched one by one with an event after each stage; see
//! `CudaModel::set_profiling`), `--skip-stages LIST` (after the timings, graph-replayed decode
//! steps with each listed stage left out, against the full step in the same loop: what each
//! stage costs inside a graph; timing only, see `CudaModel::set_timing_skip`). The real
//! model's numbers come from `lowbit bench --device cuda`.

use std::time::Instant;

use lowbit::backend::cuda::device::CudaDevice;
use lowbit::backend::cuda::model::CudaModel;
use lowbit::bench::measure_on;
use lowbit::checkpoint::synthetic::{build_config, Variant};
use lowbit::checkpoint::{Dtype, ModelConfig};
use lowbit::model::Model;
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};
use lowbit::Result;

fn qwen25_05b() -> ModelConfig {
    ModelConfig {
        hidden_size: 896,
        intermediate_size: 4864,
        num_hidden_layers: 24,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        head_dim: 64,
        vocab_size: 151_936,
        max_position_embeddings: 32_768,
        ..Variant::Qwen2.config()
    }
}

/// Time of the LM head product alone (cuBLAS, bf16 weights, one token), with bf16 and with f32
/// output: the floor of a decode step's head.
fn head_probe(device: &CudaDevice, cfg: &ModelConfig) -> Result<()> {
    use half::bf16;
    use lowbit::backend::cuda::blas::Blas;
    let blas = Blas::new(device)?;
    let stream = device.stream();
    let (rows, cols) = (cfg.vocab_size, cfg.hidden_size);
    let mut rng = lowbit::backend::cuda::check::Rng(3);
    let w: Vec<bf16> = (0..rows * cols)
        .map(|_| bf16::from_f32(rng.uniform() * 0.05))
        .collect();
    let x: Vec<bf16> = (0..cols).map(|_| bf16::from_f32(rng.uniform())).collect();
    let upload = |e| lowbit::Error::Device(format!("probe: {e:?}"));
    let w = stream.clone_htod(&w).map_err(upload)?;
    let x = stream.clone_htod(&x).map_err(upload)?;
    let mut y16 = stream.alloc_zeros::<bf16>(rows).map_err(upload)?;
    let mut y32 = stream.alloc_zeros::<f32>(rows).map_err(upload)?;
    for f32_out in [false, true] {
        let reps = 200;
        for _ in 0..10 {
            if f32_out {
                blas.linear_f32_out(&x, &w, &mut y32, [1, rows, cols])?;
            } else {
                blas.linear(&x, &w, &mut y16, [1, rows, cols])?;
            }
        }
        device.synchronize()?;
        let started = Instant::now();
        for _ in 0..reps {
            if f32_out {
                blas.linear_f32_out(&x, &w, &mut y32, [1, rows, cols])?;
            } else {
                blas.linear(&x, &w, &mut y16, [1, rows, cols])?;
            }
        }
        device.synchronize()?;
        let us = started.elapsed().as_secs_f64() / reps as f64 * 1e6;
        println!(
            "LM head [{rows}, {cols}] bf16, one token, {} output: {us:.1} us per product ({:.0} GB/s)",
            if f32_out { "f32" } else { "bf16" },
            (rows * cols * 2) as f64 / us / 1e3
        );
    }
    Ok(())
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn list(args: &[String], name: &str, default: &str) -> Vec<String> {
    option(args, name)
        .unwrap_or(default)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let schemes = list(
        &args,
        "--schemes",
        "bf16,w4a16-g128,w8a16,fp8,nf4,w8a8,w8a8-fp8,w8a8-fp8-block",
    );
    let batches: Vec<usize> = list(&args, "--batch", "1,16")
        .iter()
        .map(|b| b.parse().expect("--batch: numbers"))
        .collect();
    let prompt_tokens: usize =
        option(&args, "--prompt-tokens").map_or(128, |v| v.parse().expect("--prompt-tokens"));
    let decode_tokens: usize =
        option(&args, "--decode-tokens").map_or(128, |v| v.parse().expect("--decode-tokens"));
    let fused = !args.iter().any(|a| a == "--separate-swiglu");
    let profile = args.iter().any(|a| a == "--profile");
    let skip_stages = list(&args, "--skip-stages", "");
    let pdl_modes: Vec<bool> = list(&args, "--pdl", "on")
        .iter()
        .map(|m| match m.as_str() {
            "on" => true,
            "off" => false,
            other => panic!("--pdl: on or off, not {other}"),
        })
        .collect();
    let device = match CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("no GPU, nothing to measure: {e}");
            return Ok(());
        }
    };
    head_probe(&device, &qwen25_05b())?;
    let started = Instant::now();
    let checkpoint = build_config(qwen25_05b(), Dtype::BF16, "qwen2.5-0.5b-shape", 5);
    let base = Model::from_checkpoint(&checkpoint, Some(Dtype::BF16))?;
    drop(checkpoint);
    println!(
        "device: {}; model: Qwen2.5-0.5B shape, random weights, {:.1}M parameters (built in {:.1} s); \
         {prompt_tokens} prompt + {decode_tokens} decode tokens per sequence; SwiGLU fused into \
         the gate/up product: {}",
        device.name(),
        base.parameter_count() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        if fused { "yes" } else { "no" }
    );
    println!(
        "{:<12} {:>4} {:>6} {:>5} {:>10} {:>13} {:>14} {:>9}",
        "scheme", "PDL", "graphs", "batch", "GPU MB", "decode tok/s", "prefill tok/s", "TTFT ms"
    );
    for name in &schemes {
        let mut model = base.clone();
        if name != "bf16" {
            let scheme = QuantScheme::parse(name)?;
            quantize_model(&mut model, &QuantRules::new(scheme), &RtnOptions::default())?;
        }
        for &pdl in &pdl_modes {
            device.set_programmatic_launch(pdl);
            let pdl = device.programmatic_launch();
            let mut gpu = CudaModel::new(&model, &device)?;
            gpu.set_fused_swiglu(fused);
            for graphs in [false, true] {
                gpu.set_graphs(graphs);
                for &batch in &batches {
                    let r = measure_on(&gpu, prompt_tokens, decode_tokens, batch)?;
                    println!(
                        "{:<12} {:>4} {:>6} {:>5} {:>10.1} {:>13.1} {:>14.1} {:>9.2}",
                        name,
                        if pdl { "on" } else { "off" },
                        if graphs { "yes" } else { "no" },
                        batch,
                        gpu.device_bytes() as f64 / 1e6,
                        r.decode_tokens_per_s,
                        r.prefill_tokens_per_s,
                        r.time_to_first_token_s * 1e3
                    );
                }
            }
            if profile {
                print_profile(&gpu, name, pdl, prompt_tokens)?;
            }
            if !skip_stages.is_empty() {
                print_stage_costs(&mut gpu, name, &skip_stages, &batches, prompt_tokens)?;
            }
        }
    }
    Ok(())
}

/// What each stage of `stages` costs in a graph-replayed decode step: the step's time with the
/// stage left out against the full step's, measured alternately.
fn print_stage_costs(
    gpu: &mut CudaModel<'_>,
    name: &str,
    stages: &[String],
    batches: &[usize],
    prompt_tokens: usize,
) -> Result<()> {
    const DECODE: usize = 64;
    gpu.set_graphs(true);
    for &batch in batches {
        for stage in stages {
            gpu.set_timing_skip(None)?;
            let full = measure_on(gpu, prompt_tokens, DECODE, batch)?;
            gpu.set_timing_skip(Some(stage))?;
            let without = measure_on(gpu, prompt_tokens, DECODE, batch)?;
            gpu.set_timing_skip(None)?;
            let step = |tok_s: f64| batch as f64 / tok_s * 1e6;
            let (with_us, without_us) = (
                step(full.decode_tokens_per_s),
                step(without.decode_tokens_per_s),
            );
            println!(
                "stage cost {name} batch {batch} {stage:<15} step {with_us:>7.1} us, without it \
                 {without_us:>7.1} us: {:>6.1} us per step",
                with_us - without_us
            );
        }
    }
    Ok(())
}

/// GPU time per stage of batch-1 decode steps after a `prompt_tokens` prompt.
fn print_profile(gpu: &CudaModel<'_>, name: &str, pdl: bool, prompt_tokens: usize) -> Result<()> {
    const STEPS: usize = 32;
    let vocab = lowbit::model::Decoder::model(gpu).config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_tokens as u32)
        .map(|i| (i * 7919) % vocab)
        .collect();
    let mut cache = gpu.new_device_cache();
    let mut next = gpu.greedy_device(&[&prompt], &mut [&mut cache])?[0];
    gpu.set_profiling(true)?;
    for _ in 0..STEPS {
        next = gpu.greedy_device(&[&[next]], &mut [&mut cache])?[0];
    }
    let stages = gpu.take_profile()?;
    gpu.set_profiling(false)?;
    let total: f64 = stages.iter().map(|s| s.seconds).sum::<f64>() / STEPS as f64;
    println!(
        "profile {name} (PDL {}): {:.1} us per decode step, batch 1, launched one by one",
        if pdl { "on" } else { "off" },
        total * 1e6
    );
    for s in &stages {
        let per_step = s.seconds / STEPS as f64;
        println!(
            "  {:<10} {:>8.1} us/step {:>5.1}% {:>4} launches/step {:>6.2} us each",
            s.stage,
            per_step * 1e6,
            100.0 * per_step / total,
            s.launches / STEPS,
            s.seconds / s.launches as f64 * 1e6
        );
    }
    Ok(())
}
