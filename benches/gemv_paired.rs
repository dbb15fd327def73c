//! Quantized GEMV throughput as a share of the read bandwidth, measured in alternation: each
//! round times one pass of the bandwidth probe and then one pass of GEMV calls over rotating
//! weight copies, so that load from other processes on a shared machine, which drifts over
//! seconds, weighs on both sides of each ratio alike. Prints, per kernel, shape, batch and thread
//! count, the median and the range of the per-round ratios, and the load average before and after.
//!
//! `cargo bench --bench gemv_paired` runs w4a16-g128 at batch 1 on 4096x4096 and 4096x11008 with
//! 1 and all hardware threads. Settings (environment):
//! - `LOWBIT_GEMV_KERNELS=w4a16-g128,nf4`: schemes (as `QuantScheme::parse` reads them);
//! - `LOWBIT_GEMV_SHAPES=4096x4096`: shapes (`OUTxIN`);
//! - `LOWBIT_GEMV_BATCH=1`: activation rows;
//! - `LOWBIT_GEMV_ROUNDS=21`: rounds (the first, a warm-up, is not counted);
//! - `LOWBIT_GEMV_CPU_TIME=1`: one-thread runs are timed by the thread's CPU time instead of the
//!   wall clock, which leaves out the time other processes hold the core (not their share of
//!   memory bandwidth); several threads are always timed by the wall clock;
//! - `LOWBIT_GEMV_PROBE_REPEATS=3`: probe passes per round, back to back. The ratio uses the
//!   first (right after the previous round's GEMV pass); the others are reported apart, as the
//!   steady streaming rate that `benches/gemv.rs`'s back-to-back probe measures.
//!
//! The probe sums a buffer of the working-set size (1 GiB, as the copies of each weight set) as
//! u64 words with the loop `benches/gemv.rs` uses (`gemv_common`); weights are seeded random
//! values.

use std::time::Instant;

use lowbit::model::sampling::Rng;
use lowbit::quant::{quantize_matrix, QuantScheme, QuantizedTensor, RtnOptions};
use rayon::prelude::*;

#[path = "gemv_common/mod.rs"]
mod gemv_common;
use gemv_common::{copy_quantized, probe_buffer, read_pass};

/// Bytes of weight copies per set, and of the probe buffer.
const WORKING_SET: usize = 1 << 30;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".to_string())
}

/// CPU time of the calling thread, seconds (Linux; elsewhere `None`).
fn thread_cpu_seconds() -> Option<f64> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let mut time = [0i64; 2];
        let status: i64;
        // SAFETY: clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time) writes one timespec (two i64
        // on x86-64 Linux) into `time` and touches nothing else.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") 228i64 => status,
                in("rdi") 3i64,
                in("rsi") time.as_mut_ptr(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            )
        };
        (status == 0).then(|| time[0] as f64 + time[1] as f64 * 1e-9)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    None
}

/// Seconds `work` takes: thread CPU time if `cpu_time` (and available), else wall time.
fn timed(cpu_time: bool, work: impl FnOnce()) -> f64 {
    let cpu = if cpu_time { thread_cpu_seconds() } else { None };
    let started = Instant::now();
    work();
    match (cpu, thread_cpu_seconds().filter(|_| cpu.is_some())) {
        (Some(before), Some(after)) => after - before,
        _ => started.elapsed().as_secs_f64(),
    }
}

/// Median, minimum and maximum.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn main() {
    // `cargo test --benches` runs bench targets once; measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let schemes = env_list("LOWBIT_GEMV_KERNELS", "w4a16-g128");
    let shapes: Vec<[usize; 2]> = env_list("LOWBIT_GEMV_SHAPES", "4096x4096,4096x11008")
        .iter()
        .filter_map(|s| {
            let (out, inp) = s.split_once('x')?;
            Some([out.parse().ok()?, inp.parse().ok()?])
        })
        .collect();
    let m = env_number("LOWBIT_GEMV_BATCH", 1).max(1);
    let rounds = env_number("LOWBIT_GEMV_ROUNDS", 21).max(2);
    let cpu_time = std::env::var("LOWBIT_GEMV_CPU_TIME").is_ok_and(|v| v == "1");
    let repeats = env_number("LOWBIT_GEMV_PROBE_REPEATS", 1).max(1);
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }
    let words = probe_buffer(WORKING_SET);
    println!(
        "paired GEMV / read probe, {} rounds, timed by {}",
        rounds - 1,
        if cpu_time {
            "thread CPU time (1 thread) and wall clock"
        } else {
            "wall clock"
        }
    );
    for name in &schemes {
        let Ok(scheme) = QuantScheme::parse(name) else {
            println!("{name}: not a scheme");
            continue;
        };
        for &[out, inp] in &shapes {
            let mut rng = Rng::new(1000);
            let values: Vec<f32> = (0..out * inp)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
                .collect();
            let base = quantize_matrix(&values, [out, inp], &scheme, &RtnOptions::default())
                .expect("quantize random weights");
            let bytes = base.storage_bytes();
            let copies: Vec<QuantizedTensor> = (0..WORKING_SET.div_ceil(bytes))
                .into_par_iter()
                .map(|_| copy_quantized(&base))
                .collect();
            let x: Vec<f32> = (0..m * inp)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
                .collect();
            let mut y = vec![0f32; m * out];
            for &threads in &thread_counts {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("rayon pool");
                let one = cpu_time && threads == 1;
                let load_before = load_average();
                let (mut probes, mut gemvs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
                let mut repeated = Vec::new();
                pool.install(|| {
                    for round in 0..rounds {
                        let probe_pass = || {
                            timed(one, || {
                                std::hint::black_box(read_pass(&words, threads));
                            })
                        };
                        let probe_s = probe_pass();
                        for _ in 1..repeats {
                            let again = probe_pass();
                            if round > 0 {
                                repeated.push(WORKING_SET as f64 / again / 1e9);
                            }
                        }
                        let gemv_s = timed(one, || {
                            for w in &copies {
                                lowbit::backend::cpu::quant::linear(&x, m, w, None, &mut y);
                            }
                            std::hint::black_box(&mut y);
                        });
                        if round > 0 {
                            let probe = WORKING_SET as f64 / probe_s / 1e9;
                            let gemv = (copies.len() * bytes) as f64 / gemv_s / 1e9;
                            probes.push(probe);
                            gemvs.push(gemv);
                            ratios.push(gemv / probe);
                        }
                    }
                });
                let (probe, ..) = spread(probes);
                let (gemv, gemv_low, gemv_high) = spread(gemvs);
                let steady = if repeated.is_empty() {
                    String::new()
                } else {
                    let (median, low, high) = spread(repeated);
                    format!(
                        ", repeated probe passes {median:.2} GB/s [{low:.2}..{high:.2}] \
                         (GEMV / repeated {:.1}%)",
                        100.0 * gemv / median
                    )
                };
                let (ratio, ratio_low, ratio_high) = spread(ratios);
                println!(
                    "{name} {out}x{inp} m{m} t{threads}: GEMV {gemv:.2} GB/s [{gemv_low:.2}..\
                     {gemv_high:.2}], probe {probe:.2} GB/s, GEMV/probe {:.1}% [{:.1}..{:.1}], \
                     load {load_before} -> {}{steady}",
                    100.0 * ratio,
                    100.0 * ratio_low,
                    100.0 * ratio_high,
                    load_average()
                );
            }
        }
    }
}
