//! Decode GEMV throughput of the dense and fused quantized kernels, as GB/s of weight bytes
//! read, next to the machine's measured sequential read bandwidth.
//!
//! Shapes (`[out, in]`): the projections of SmolLM2-135M (576x576 q/o, 192x576 k/v, 1536x576
//! gate/up, 576x1536 down) and of a 7B-class model (4096x4096, 11008x4096, 4096x11008). For each:
//! f32 and bf16 dense, and w4a16-g128, w8a16, nf4, fp8, w8a8, w4a8-g128, at batch 1, plus batch
//! 8 for bf16 and w4a16-g128; each on a 1-thread rayon pool and on one with every hardware
//! thread. Weights are seeded random values.
//!
//! Weights must come from memory, not cache: each weight set is copied until the copies
//! together exceed the working set (the larger of 256 MiB and 4x the last-level cache, at most
//! 4 GiB; `LOWBIT_GEMV_WORKING_SET_MIB` overrides it), and successive calls rotate through the
//! copies. The bandwidth probe sums a buffer of at least 512 MiB (and at least the working set)
//! as u64 words, on one thread and on all, just before each shape's kernels, and each kernel's
//! share is of the rate measured for its shape: on a shared machine the read rate drifts by up to
//! 20% over a run.
//!
//! Criterion's throughput is weight bytes (codes and scales for quantized weights) per call, in
//! decimal units (`Throughput::BytesDecimal`, GB/s). At the end a summary table gives GB/s per
//! kernel (median of the samples), the speed-up over f32 and bf16 of the same shape and batch, and
//! the share of the read bandwidth measured for its shape. `LOWBIT_GEMV_QUICK=1` runs only 4096x4096;
//! `LOWBIT_GEMV_SHAPES=4096x4096,4096x11008` picks shapes (`OUTxIN`) and
//! `LOWBIT_GEMV_KERNELS=w4a16-g128,bf16` kernels (names as in the table), so that a run prepares
//! only what it measures. The thread counts are fixed: 1 and every hardware thread. Sample counts
//! and times are small so the full run stays near 3 minutes on 2 cores; criterion's
//! `--measurement-time` / `--warm-up-time` override them.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use lowbit::checkpoint::{Dtype, Tensor};
use lowbit::model::sampling::Rng;
use lowbit::quant::{quantize_matrix, QuantScheme, QuantizedTensor, RtnOptions};
use rayon::prelude::*;
use rayon::ThreadPool;

#[path = "gemv_common/mod.rs"]
mod gemv_common;
use gemv_common::{copy_quantized, copy_tensor, probe_buffer, read_pass};

const MIB: usize = 1 << 20;
/// Criterion samples per benchmark (its minimum).
const SAMPLES: usize = 10;
/// The smallest working set the brief allows, whatever the cache.
const MIN_WORKING_SET: usize = 256 * MIB;
/// Upper bound on the working set, so a machine reporting a huge shared cache still fits.
const MAX_WORKING_SET: usize = 4096 * MIB;
/// The smallest bandwidth-probe buffer.
const MIN_PROBE: usize = 512 * MIB;

/// `[out_features, in_features]` of the benchmarked projections.
const SHAPES: [[usize; 2]; 7] = [
    [576, 576],
    [192, 576],
    [1536, 576],
    [576, 1536],
    [4096, 4096],
    [11008, 4096],
    [4096, 11008],
];
/// The only shape of a `LOWBIT_GEMV_QUICK=1` run.
const QUICK_SHAPE: [usize; 2] = [4096, 4096];
/// Quantized schemes, in table order.
const SCHEMES: [&str; 6] = ["w4a16-g128", "w8a16", "nf4", "fp8", "w8a8", "w4a8-g128"];
/// Kernels that also run at batch 8 (a small continuous-batching decode step).
const BATCHED: [&str; 2] = ["bf16", "w4a16-g128"];

/// One weight matrix in several independent copies, so rotating through them defeats caches.
enum Weights {
    Dense(Vec<Tensor>),
    Quantized(Vec<QuantizedTensor>),
}

impl Weights {
    fn copies(&self) -> usize {
        match self {
            Weights::Dense(c) => c.len(),
            Weights::Quantized(c) => c.len(),
        }
    }

    /// Bytes of one copy: what one call reads.
    fn bytes(&self) -> usize {
        match self {
            Weights::Dense(c) => c[0].raw_bytes().len(),
            Weights::Quantized(c) => c[0].storage_bytes(),
        }
    }

    fn linear(&self, copy: usize, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Weights::Dense(c) => lowbit::backend::cpu::linear(x, m, &c[copy], None, out),
            Weights::Quantized(c) => lowbit::backend::cpu::quant::linear(x, m, &c[copy], None, out),
        }
    }
}

/// How many copies of `bytes` make up `working_set` (at least one).
fn copy_count(bytes: usize, working_set: usize) -> usize {
    working_set.div_ceil(bytes.max(1)).max(1)
}

/// The largest cache of cpu0 from sysfs (`index*/size`, e.g. `491520K`), if readable.
fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|entry| {
        let text = std::fs::read_to_string(entry.ok()?.path().join("size")).ok()?;
        let text = text.trim();
        let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => return None,
        };
        Some(digits.parse::<usize>().ok()? * scale)
    })
    .max()
}

/// Whether criterion runs for real (`cargo bench`) rather than once each (`cargo test`).
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn working_set() -> usize {
    if !benchmarking() {
        return 0;
    }
    if let Some(mib) = std::env::var("LOWBIT_GEMV_WORKING_SET_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return mib * MIB;
    }
    let cache = last_level_cache_bytes().unwrap_or(0);
    (4 * cache).clamp(MIN_WORKING_SET, MAX_WORKING_SET)
}

fn random_values(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

/// One benchmark's raw timings, kept for the summary: `(iterations, elapsed)` per routine call.
struct Record {
    shape: [usize; 2],
    kernel: String,
    m: usize,
    threads: usize,
    bytes: usize,
    calls: Vec<(u64, Duration)>,
}

impl Record {
    fn seconds_per_call(&self) -> Option<f64> {
        seconds_per_call(&self.calls)
    }
}

/// Seconds per call: the median over the measured samples (the last [`SAMPLES`] routine calls;
/// the earlier ones are criterion's warm-up) of each sample's time per iteration. The median
/// keeps a sample slowed by another process on a small machine from moving the summary.
fn seconds_per_call(calls: &[(u64, Duration)]) -> Option<f64> {
    let measured = &calls[calls.len().saturating_sub(SAMPLES)..];
    let mut per_call: Vec<f64> = measured
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, d)| d.as_secs_f64() / *n as f64)
        .collect();
    per_call.sort_by(f64::total_cmp);
    let middle = per_call.len() / 2;
    match per_call.len() {
        0 => None,
        n if n % 2 == 1 => Some(per_call[middle]),
        _ => Some((per_call[middle - 1] + per_call[middle]) / 2.0),
    }
    .filter(|s| *s > 0.0)
}

/// The rayon pools runs are spread over: one thread, and every hardware thread.
fn pools() -> Vec<(usize, ThreadPool)> {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    counts
        .into_iter()
        .map(|n| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("rayon pool");
            (n, pool)
        })
        .collect()
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
}

/// The bandwidth probe's buffer: at least [`MIN_PROBE`] and the working set when benchmarking.
fn probe_words() -> Vec<u64> {
    let bytes = if benchmarking() {
        MIN_PROBE.max(working_set())
    } else {
        16 * MIB
    };
    probe_buffer(bytes)
}

/// Sequential read bandwidth per pool, GB/s, measured under `label` (the shape it serves).
fn bandwidth_probe(
    c: &mut Criterion,
    pools: &[(usize, ThreadPool)],
    words: &[u64],
    label: &str,
) -> Vec<(usize, f64)> {
    let bytes = std::mem::size_of_val(words);
    let mut group = c.benchmark_group(format!("memory_read/{label}"));
    configure(&mut group);
    group.throughput(Throughput::BytesDecimal(bytes as u64));
    let mut results = Vec::new();
    for (threads, pool) in pools {
        let mut calls = Vec::new();
        group.bench_function(format!("sum_u64_{}MiB/t{threads}", bytes / MIB), |b| {
            b.iter_custom(|iterations| {
                pool.install(|| {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        black_box(read_pass(words, *threads));
                    }
                    let elapsed = started.elapsed();
                    calls.push((iterations, elapsed));
                    elapsed
                })
            })
        });
        if let Some(seconds) = seconds_per_call(&calls) {
            results.push((*threads, bytes as f64 / seconds / 1e9));
        }
    }
    group.finish();
    results
}

/// `LOWBIT_GEMV_SHAPES` (`OUTxIN`, comma-separated), if set and valid.
fn picked_shapes() -> Option<Vec<[usize; 2]>> {
    let text = std::env::var("LOWBIT_GEMV_SHAPES").ok()?;
    text.split(',')
        .map(|shape| {
            let (out, inp) = shape.trim().split_once('x')?;
            Some([out.parse().ok()?, inp.parse().ok()?])
        })
        .collect()
}

/// `LOWBIT_GEMV_KERNELS` (kernel names, comma-separated), if set.
fn picked_kernels() -> Option<Vec<String>> {
    let text = std::env::var("LOWBIT_GEMV_KERNELS").ok()?;
    Some(text.split(',').map(|k| k.trim().to_string()).collect())
}

/// The base weights of every kernel for one shape (those of `only`, if given), quantized from
/// one f32 matrix.
fn kernels_for(shape: [usize; 2], seed: u64, only: Option<&[String]>) -> Vec<(String, Weights)> {
    let [out, inp] = shape;
    let wanted = |name: &str| only.is_none_or(|names| names.iter().any(|n| n == name));
    let values = random_values(out * inp, seed);
    let mut kernels = Vec::new();
    let dense = Tensor::from_f32(vec![out, inp], values.clone());
    if wanted("f32") {
        kernels.push(("f32".to_string(), Weights::Dense(vec![dense.clone()])));
    }
    if wanted("bf16") {
        kernels.push((
            "bf16".to_string(),
            Weights::Dense(vec![dense.to_dtype(Dtype::BF16)]),
        ));
    }
    for name in SCHEMES.into_iter().filter(|n| wanted(n)) {
        let scheme = QuantScheme::parse(name).expect("scheme name");
        let q = quantize_matrix(&values, shape, &scheme, &RtnOptions::default())
            .expect("quantize random weights");
        kernels.push((name.to_string(), Weights::Quantized(vec![q])));
    }
    kernels
}

/// Replaces the single base copy by enough independent copies to fill `working_set`.
fn replicate(weights: Weights, working_set: usize) -> Weights {
    let count = copy_count(weights.bytes(), working_set);
    match weights {
        Weights::Dense(base) => Weights::Dense(
            (0..count)
                .into_par_iter()
                .map(|_| copy_tensor(&base[0]))
                .collect(),
        ),
        Weights::Quantized(base) => Weights::Quantized(
            (0..count)
                .into_par_iter()
                .map(|_| copy_quantized(&base[0]))
                .collect(),
        ),
    }
}

fn gemv(c: &mut Criterion) {
    let pools = pools();
    let working_set = working_set();
    let words = probe_words();
    let quick = std::env::var("LOWBIT_GEMV_QUICK").is_ok_and(|v| v == "1");
    let shapes: Vec<[usize; 2]> = if let Some(picked) = picked_shapes() {
        picked
    } else if quick {
        vec![QUICK_SHAPE]
    } else {
        SHAPES.to_vec()
    };
    let kernels = picked_kernels();
    let mut records = Vec::new();
    let mut bandwidth = Vec::new();
    for (index, &shape) in shapes.iter().enumerate() {
        let [out, inp] = shape;
        // Measured next to the shape's kernels: on a shared machine the read rate drifts by
        // 20% over a run, more than the gap the share is meant to show.
        for (threads, rate) in bandwidth_probe(c, &pools, &words, &format!("{out}x{inp}")) {
            bandwidth.push((shape, threads, rate));
        }
        let mut group = c.benchmark_group(format!("gemv/{out}x{inp}"));
        configure(&mut group);
        let started = Instant::now();
        let bases = kernels_for(shape, 1000 + index as u64, kernels.as_deref());
        let mut prepare_s = started.elapsed().as_secs_f64();
        for (kernel, base) in bases {
            let started = Instant::now();
            let weights = replicate(base, working_set);
            prepare_s += started.elapsed().as_secs_f64();
            let bytes = weights.bytes();
            group.throughput(Throughput::BytesDecimal(bytes as u64));
            let batches: &[usize] = if BATCHED.contains(&kernel.as_str()) {
                &[1, 8]
            } else {
                &[1]
            };
            for &m in batches {
                let x = random_values(m * inp, 7);
                let mut y = vec![0f32; m * out];
                for (threads, pool) in &pools {
                    let mut calls = Vec::new();
                    let mut next = 0;
                    group.bench_function(format!("{kernel}/m{m}/t{threads}"), |b| {
                        b.iter_custom(|iterations| {
                            pool.install(|| {
                                let started = Instant::now();
                                for _ in 0..iterations {
                                    weights.linear(next, &x, m, &mut y);
                                    next = (next + 1) % weights.copies();
                                }
                                black_box(&mut y);
                                let elapsed = started.elapsed();
                                calls.push((iterations, elapsed));
                                elapsed
                            })
                        })
                    });
                    records.push(Record {
                        shape,
                        kernel: kernel.clone(),
                        m,
                        threads: *threads,
                        bytes,
                        calls,
                    });
                }
            }
        }
        group.finish();
        eprintln!("gemv/{out}x{inp}: weights quantized and copied in {prepare_s:.1} s");
    }
    if benchmarking() {
        summary(&records, &bandwidth, working_set);
    }
}

/// Prints GB/s per kernel, speed-ups over f32 and bf16 (same shape, batch and threads), and the
/// share of the read bandwidth measured just before the shape's kernels, one table per thread
/// count.
fn summary(records: &[Record], bandwidth: &[([usize; 2], usize, f64)], working_set: usize) {
    let time_of = |r: &Record, kernel: &str| {
        records
            .iter()
            .find(|o| {
                o.shape == r.shape && o.m == r.m && o.threads == r.threads && o.kernel == kernel
            })
            .and_then(Record::seconds_per_call)
    };
    let ratio = |r: &Record, kernel: &str| match (time_of(r, kernel), r.seconds_per_call()) {
        (Some(reference), Some(own)) => format!("{:.2}x", reference / own),
        _ => "-".to_string(),
    };
    let mut thread_counts: Vec<usize> = records.iter().map(|r| r.threads).collect();
    thread_counts.sort_unstable();
    thread_counts.dedup();
    println!(
        "\nGEMV summary: weights rotated through copies totalling >= {} MiB; GB/s = 1e9 bytes of \
         weights (codes + scales) per second, median of {SAMPLES} samples; speed-ups are per \
         call at the same batch.",
        working_set / MIB
    );
    for threads in thread_counts {
        let rates: Vec<f64> = bandwidth
            .iter()
            .filter(|(_, t, _)| *t == threads)
            .map(|(_, _, rate)| *rate)
            .collect();
        let range = match (
            rates.iter().copied().reduce(f64::min),
            rates.iter().copied().reduce(f64::max),
        ) {
            (Some(low), Some(high)) => format!("{low:.1}-{high:.1} GB/s over the shapes"),
            _ => "not measured".to_string(),
        };
        println!(
            "\n{threads} thread{}: sequential read bandwidth {range}",
            if threads == 1 { "" } else { "s" },
        );
        println!(
            "{:<12} {:<11} {:>2} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "shape",
            "kernel",
            "m",
            "weight MB",
            "us/call",
            "GB/s",
            "vs f32",
            "vs bf16",
            "read",
            "% read"
        );
        for r in records.iter().filter(|r| r.threads == threads) {
            let Some(seconds) = r.seconds_per_call() else {
                continue;
            };
            let read = bandwidth
                .iter()
                .find(|(shape, t, _)| *shape == r.shape && *t == threads)
                .map(|(_, _, rate)| *rate);
            let rate = r.bytes as f64 / seconds / 1e9;
            let share = read.map_or("-".to_string(), |b| format!("{:.0}%", 100.0 * rate / b));
            println!(
                "{:<12} {:<11} {:>2} {:>10.2} {:>10.1} {:>8.2} {:>8} {:>8} {:>8} {:>7}",
                format!("{}x{}", r.shape[0], r.shape[1]),
                r.kernel,
                r.m,
                r.bytes as f64 / 1e6,
                seconds * 1e6,
                rate,
                ratio(r, "f32"),
                ratio(r, "bf16"),
                read.map_or("-".to_string(), |b| format!("{b:.1}")),
                share
            );
        }
    }
}

criterion_group!(benches, gemv);
criterion_main!(benches);
