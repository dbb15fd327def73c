//! The device script of the CUDA backend, one run: checks every kernel against the CPU, measures
//! the memory bandwidth, then times the quantized products (the fused kernels, and products of
//! int8 or FP8 activations through cuBLASLt, activation quantization included) against cuBLAS
//! bf16.
//!
//! Run on a machine with a GPU: `cargo bench --features cuda --bench cuda` (or the built binary
//! `target/release/deps/cuda-*`). Options: `--quick` (fewer shapes), `--seed N`, `--shapes
//! LIST` (the shapes timed, `ROWSxCOLS` separated by commas, e.g. `9728x896,896x4864` for
//! Qwen2.5-0.5B's MLP; the checks are unchanged), `--sweep` (no checks: only the w4a16-g128
//! decode kernel on the shapes, at 1 and 16 tokens, for every row-tile and warp count, to
//! choose the automatic split from).
//!
//! Timing: CUDA events around `REPS` launches, median of `ROUNDS`, once with the launches captured
//! in a CUDA graph (the GPU's time; the main columns) and once launched one by one from the host
//! (the last columns: small products there are bound by launch overhead); each launch reads
//! the next of several copies of the weights (together past `ROTATE_BYTES`, several times the L2),
//! so weights come from HBM as in a model whose layers do not fit the cache. Activations are
//! random. Bandwidth percentages are of the measured read bandwidth; the bytes counted are the
//! weight's codes, scales and zero points plus x and y.

use std::time::Instant;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::bf16;

use lowbit::backend::cuda::blas::Blas;
use lowbit::backend::cuda::check::{
    check_product, check_scaled, decode_kernels, random_quantized, seed_from_env, Rng,
};
use lowbit::backend::cuda::device::{CudaDevice, BANDWIDTH};
use lowbit::backend::cuda::layout::{DeviceFormat, DeviceScales, PackedWeight, TILE_K, TILE_ROWS};
use lowbit::backend::cuda::linear::{CudaQuantLinear, Kernel};
use lowbit::backend::cuda::scaled::{CudaScaledLinear, ScaledScratch};
use lowbit::quant::QuantScheme;
use lowbit::Result;

/// Launches per timed round.
const REPS: usize = 40;
/// Timed rounds; the median is reported.
const ROUNDS: usize = 7;
/// Total bytes of the weight copies a timing rotates through (the H100's L2 is 50 MB).
const ROTATE_BYTES: usize = 256 << 20;
/// Bytes of the bandwidth probe's buffer.
const PROBE_BYTES: usize = 1 << 30;

/// Weight shapes `[rows, cols]` timed: large square and MLP shapes, then SmolLM2-135M's.
const SHAPES: [[usize; 2]; 7] = [
    [4096, 4096],
    [14336, 4096],
    [4096, 14336],
    [576, 576],
    [192, 576],
    [1536, 576],
    [576, 1536],
];
/// Tokens per product timed.
const TOKENS: [usize; 6] = [1, 4, 16, 64, 256, 2048];
/// Schemes timed.
const SCHEMES: [&str; 5] = ["w4a16-g128", "w4a16-g128-asym", "w8a16", "fp8", "nf4"];
/// Schemes with quantized activations, checked and timed through cuBLASLt.
const SCALED_SCHEMES: [&str; 3] = ["w8a8-fp8", "w8a8-fp8-block", "w8a8"];

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(seed_from_env);
    let device = match CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            println!("no GPU, nothing to measure: {e}");
            return Ok(());
        }
    };
    let (major, minor) = device.compute_capability();
    println!(
        "device: {} (compute {major}.{minor}, {} SMs, kernels for {}), seed {seed}",
        device.name(),
        device.multiprocessors(),
        device.arch()
    );
    let blas = Blas::new(&device)?;
    let sweep = args.iter().any(|a| a == "--sweep");
    let started = Instant::now();
    let failures = if sweep {
        0
    } else {
        run_checks(&device, &blas, seed, quick)?
    };
    println!("checks took {:.1} s", started.elapsed().as_secs_f64());

    let (read_bw, copy_bw) = bandwidth(&device)?;
    println!(
        "bandwidth: read {:.0} GB/s, copy {:.0} GB/s (read + written)",
        read_bw / 1e9,
        copy_bw / 1e9
    );
    let chosen: Option<Vec<[usize; 2]>> = args
        .iter()
        .position(|a| a == "--shapes")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(parse_shape).collect());
    let shapes: &[[usize; 2]] = match &chosen {
        Some(list) => list,
        None if quick => &SHAPES[..1],
        None => &SHAPES,
    };
    if sweep {
        return decode_sweep(&device, shapes, read_bw, seed);
    }
    timings(&device, &blas, shapes, read_bw, seed)?;
    if failures > 0 {
        println!("{failures} checks FAILED");
        std::process::exit(1);
    }
    println!("all checks passed");
    Ok(())
}

/// The w4a16-g128 decode kernel at 1 and 16 tokens for every row-tile count and a range of
/// warp counts (those the shared memory takes), one line each, the automatic split marked;
/// then the automatic split compiled without its scale loads, and without its arithmetic too
/// ([`CudaQuantLinear::diagnostic`]).
fn decode_sweep(device: &CudaDevice, shapes: &[[usize; 2]], read_bw: f64, seed: u64) -> Result<()> {
    let err = |e| lowbit::Error::Device(format!("sweep buffers: {e:?}"));
    let stream = device.stream();
    let mut rng = Rng(seed);
    let scheme = QuantScheme::parse("w4a16-g128")?;
    println!("sweep: shape, tokens, row tiles, warps, us per product, % of read bandwidth");
    for &[rows, cols] in shapes {
        let packed = random_packed(&scheme, [rows, cols], &mut rng)?;
        let (bytes, linears) = rotated_copies(device, &packed)?;
        let copies = linears.len();
        let x: CudaSlice<bf16> = stream
            .clone_htod(&vec![bf16::from_f32(0.5); 16 * cols])
            .map_err(err)?;
        let mut y: CudaSlice<bf16> = stream.alloc_zeros(16 * rows).map_err(err)?;
        for m in [1, 16] {
            let auto = linears[0].default_kernel(m);
            let mut best = (f64::INFINITY, String::new());
            for row_tiles in [1, 2, 4] {
                for warps in [1, 2, 3, 4, 6, 8, 10, 12, 16] {
                    let kernel = Kernel::Gemv {
                        row_tiles,
                        warps: Some(warps),
                    };
                    // Splits the shared memory cannot take are refused: skipped.
                    let Ok((seconds, _)) = time(device, |i| {
                        linears[i % copies].forward_with(device, &x, m, &mut y, kernel)
                    }) else {
                        continue;
                    };
                    let moved = bytes + m * (rows + cols) * 2;
                    let share = 100.0 * moved as f64 / seconds / read_bw;
                    let mark = if kernel == auto { " (automatic)" } else { "" };
                    println!(
                        "sweep {rows}x{cols} m{m} rt{row_tiles} w{warps}: {:.2} us {share:.0}%{mark}",
                        seconds * 1e6
                    );
                    if seconds < best.0 {
                        best = (seconds, format!("rt{row_tiles} w{warps}"));
                    }
                }
            }
            println!(
                "sweep best {rows}x{cols} m{m}: {} {:.2} us; automatic {auto:?}",
                best.1,
                best.0 * 1e6
            );
        }
        // Where the automatic split's time goes: the same kernel without its scale loads, and
        // with neither those nor the arithmetic (wrong products, timing only).
        for diagnostic in [1, 2] {
            let variants = (0..copies)
                .map(|_| CudaQuantLinear::diagnostic(device, &packed, diagnostic))
                .collect::<Result<Vec<_>>>()?;
            for m in [1, 16] {
                let kernel = linears[0].default_kernel(m);
                let (seconds, _) = time(device, |i| {
                    variants[i % copies].forward_with(device, &x, m, &mut y, kernel)
                })?;
                let share = 100.0 * (bytes + m * (rows + cols) * 2) as f64 / seconds / read_bw;
                let what = if diagnostic == 1 {
                    "no scale loads"
                } else {
                    "weight loads only"
                };
                println!(
                    "sweep diagnostic {rows}x{cols} m{m} {kernel:?}, {what}: {:.2} us {share:.0}%",
                    seconds * 1e6
                );
            }
        }
    }
    Ok(())
}

/// The weight's device bytes and enough copies of it on the device to pass [`ROTATE_BYTES`]
/// (at least two), so that products rotating through them read from memory, not the L2.
fn rotated_copies(
    device: &CudaDevice,
    packed: &PackedWeight,
) -> Result<(usize, Vec<CudaQuantLinear>)> {
    let bytes = packed.device_bytes();
    let copies = ROTATE_BYTES.div_ceil(bytes).max(2);
    let linears = (0..copies)
        .map(|_| CudaQuantLinear::from_packed(device, packed))
        .collect::<Result<_>>()?;
    Ok((bytes, linears))
}

/// `ROWSxCOLS` as `[rows, cols]`.
fn parse_shape(text: &str) -> [usize; 2] {
    let parsed = text
        .split_once('x')
        .and_then(|(r, c)| Some([r.trim().parse().ok()?, c.trim().parse().ok()?]));
    match parsed {
        Some([rows, cols]) if rows > 0 && cols > 0 && cols % 8 == 0 => [rows, cols],
        _ => {
            eprintln!("--shapes: {text:?} is not ROWSxCOLS (COLS a multiple of 8)");
            std::process::exit(2);
        }
    }
}

/// Every scheme against odd and model shapes, every kernel that applies; returns failures.
fn run_checks(device: &CudaDevice, blas: &Blas, seed: u64, quick: bool) -> Result<usize> {
    let mut rng = Rng(seed);
    let schemes = [
        "w4a16-g128",
        "w4a16-g128-asym",
        "w4a16",
        "w8a16",
        "w8a16-asym",
        "fp8",
        "fp8-block",
        "nf4",
        "nf4-dq",
        "fp4",
    ];
    let shapes: &[[usize; 2]] = if quick {
        &[[37, 200], [1000, 1032]]
    } else {
        &[
            [37, 200],
            [1000, 1032],
            [576, 576],
            [1536, 576],
            [576, 1536],
            [4096, 4096],
        ]
    };
    let mut failures = 0;
    let mut worst = 0f64;
    for name in schemes {
        let scheme = QuantScheme::parse(name)?;
        for &shape in shapes {
            for m in [1, 3, 8, 13, 16, 17, 64, 100, 300] {
                // Quantizing and the f64 reference run on the host: keep each problem small.
                if shape[0] * shape[1] * m > 120_000_000 {
                    continue;
                }
                let kernels: Vec<Kernel> = if m <= 16 {
                    decode_kernels().into_iter().chain([Kernel::Gemm]).collect()
                } else {
                    vec![Kernel::Gemm]
                };
                let results =
                    check_product(device, Some(blas), &scheme, shape, m, &kernels, &mut rng)?;
                for r in results {
                    worst = worst.max(r.relative_error / r.tolerance);
                    if !r.passed() {
                        failures += 1;
                        println!(
                            "FAIL {}: relative error {:.3e} (tolerance {:.1e}), {} outputs unwritten \
                             or not finite (seed {seed})",
                            r.label, r.relative_error, r.tolerance, r.bad_outputs
                        );
                    }
                }
            }
        }
    }
    println!(
        "checks: {} schemes x {} shapes x 9 token counts, {failures} failures, worst error {:.2} of \
         its tolerance",
        schemes.len(),
        shapes.len(),
        worst
    );
    // Quantized activations (rows a multiple of 16; widths padded to 16 or 128, one, 196, not
    // a multiple of 8 so its rows are read value by value).
    let scaled_shapes: &[[usize; 2]] = if quick {
        &[[64, 196], [1024, 1032]]
    } else {
        &[
            [64, 196],
            [1024, 1032],
            [576, 576],
            [1536, 576],
            [576, 1536],
            [4096, 4096],
        ]
    };
    let mut scaled_worst = 0f64;
    let mut scaled_failures = 0;
    for name in SCALED_SCHEMES {
        let scheme = QuantScheme::parse(name)?;
        for &shape in scaled_shapes {
            for m in [1, 3, 4, 16, 17, 64, 130, 300] {
                if shape[0] * shape[1] * m > 120_000_000 {
                    continue;
                }
                let r = check_scaled(device, blas, &scheme, shape, m, &mut rng)?;
                scaled_worst = scaled_worst.max(r.relative_error / r.tolerance);
                if !r.passed() {
                    scaled_failures += 1;
                    println!(
                        "FAIL {}: relative error {:.3e} (tolerance {:.1e}), {} outputs unwritten \
                         or not finite (seed {seed})",
                        r.label, r.relative_error, r.tolerance, r.bad_outputs
                    );
                }
            }
        }
    }
    println!(
        "checks of quantized activations (cuBLASLt): {} schemes x {} shapes x 8 token counts, \
         {scaled_failures} failures, worst error {scaled_worst:.2} of its tolerance",
        SCALED_SCHEMES.len(),
        scaled_shapes.len()
    );
    Ok(failures + scaled_failures)
}

/// Median seconds per launch of `launch(i)` (i counts launches, for rotating inputs): first
/// with `REPS` launches captured in a CUDA graph and replayed (GPU time, launch gaps shrunk),
/// then launched one by one from the host (what a caller without graphs sees).
fn time(device: &CudaDevice, mut launch: impl FnMut(usize) -> Result<()>) -> Result<(f64, f64)> {
    use cudarc::driver::sys::{CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode};
    let err = |e| lowbit::Error::Device(format!("timing: {e:?}"));
    for i in 0..3 {
        launch(i)?;
    }
    device.synchronize()?;
    let stream = device.stream();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(err)?;
    let captured: Result<()> = (0..REPS).try_for_each(&mut launch);
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .map_err(err)?;
    captured?;
    let graph = graph.ok_or_else(|| lowbit::Error::Device("empty graph".into()))?;
    graph.launch().map_err(err)?;
    let mut graphed = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = stream.record_event(flags).map_err(err)?;
        graph.launch().map_err(err)?;
        let end = stream.record_event(flags).map_err(err)?;
        end.synchronize().map_err(err)?;
        graphed.push(start.elapsed_ms(&end).map_err(err)? as f64 / 1e3 / REPS as f64);
    }
    let mut launched = Vec::with_capacity(ROUNDS);
    let mut i = 0;
    for _ in 0..ROUNDS {
        let start = stream.record_event(flags).map_err(err)?;
        for _ in 0..REPS {
            launch(i)?;
            i += 1;
        }
        let end = stream.record_event(flags).map_err(err)?;
        end.synchronize().map_err(err)?;
        launched.push(start.elapsed_ms(&end).map_err(err)? as f64 / 1e3 / REPS as f64);
    }
    graphed.sort_by(f64::total_cmp);
    launched.sort_by(f64::total_cmp);
    Ok((graphed[ROUNDS / 2], launched[ROUNDS / 2]))
}

/// Read and copy bandwidth in bytes per second.
fn bandwidth(device: &CudaDevice) -> Result<(f64, f64)> {
    let err = |e| lowbit::Error::Device(format!("bandwidth probe: {e:?}"));
    let module = device.module(BANDWIDTH, &[])?;
    let read = CudaDevice::function(&module, "read_probe")?;
    let copy = CudaDevice::function(&module, "copy_probe")?;
    let stream = device.stream();
    let vectors = PROBE_BYTES / 16;
    let src: CudaSlice<u8> = stream.clone_htod(&vec![0x5Au8; PROBE_BYTES]).map_err(err)?;
    let mut dst: CudaSlice<u8> = stream.alloc_zeros(PROBE_BYTES / 2).map_err(err)?;
    let sink: CudaSlice<u32> = stream.alloc_zeros(1).map_err(err)?;
    let config = LaunchConfig {
        grid_dim: (device.multiprocessors() as u32 * 8, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = vectors as i64;
    let half = n / 2;
    let (t_read, _) = time(device, |_| {
        let mut l = stream.launch_builder(&read);
        l.arg(&src).arg(&n).arg(&sink);
        // SAFETY: read_probe(const uint4*, long, u32*) with n vectors in src.
        unsafe { l.launch(config) }.map(|_| ()).map_err(err)
    })?;
    let (t_copy, _) = time(device, |_| {
        let mut l = stream.launch_builder(&copy);
        l.arg(&src).arg(&mut dst).arg(&half);
        // SAFETY: copy_probe(const uint4*, uint4*, long) with n / 2 vectors in both buffers.
        unsafe { l.launch(config) }.map(|_| ()).map_err(err)
    })?;
    Ok((
        PROBE_BYTES as f64 / t_read,
        PROBE_BYTES as f64 / t_copy, // half read + half written
    ))
}

/// A weight in the device layout with random codes and scales (timing only).
fn random_packed(
    scheme: &QuantScheme,
    [rows, cols]: [usize; 2],
    rng: &mut Rng,
) -> Result<PackedWeight> {
    // The layout of a tiny quantized matrix gives the format, group size and scale kind.
    let probe = lowbit::quant::quantize_matrix(
        &vec![0.5; 64 * 128],
        [64, 128],
        scheme,
        &Default::default(),
    )?;
    let template = PackedWeight::pack(&probe)?;
    let group_size = scheme.group_size(cols);
    let groups = cols.div_ceil(group_size);
    let tiles = rows.div_ceil(TILE_ROWS) * cols.div_ceil(TILE_K);
    let mut codes = vec![0u8; tiles * template.format.tile_bytes()];
    for chunk in codes.chunks_mut(8) {
        let bits = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bits[..chunk.len()]);
    }
    if template.format == DeviceFormat::Fp8 {
        // Keep codes finite (0x7F / 0xFF are NaN).
        codes.iter_mut().for_each(|c| *c &= 0xF7);
    }
    let n = rows * groups;
    let scales = match template.scales {
        DeviceScales::F16(_) => DeviceScales::F16(
            (0..n)
                .map(|_| half::f16::from_f32(0.01 + 0.01 * rng.uniform().abs()).to_bits())
                .collect(),
        ),
        DeviceScales::F32(_) => {
            DeviceScales::F32((0..n).map(|_| 0.01 + 0.01 * rng.uniform().abs()).collect())
        }
    };
    Ok(PackedWeight {
        format: template.format,
        rows,
        cols,
        groups,
        group_size,
        codes,
        scales,
        zero_points: template
            .zero_points
            .map(|_| (0..n).map(|_| (rng.next_u64() % 16) as i8 - 8).collect()),
        table: template.table,
    })
}

fn timings(
    device: &CudaDevice,
    blas: &Blas,
    shapes: &[[usize; 2]],
    read_bw: f64,
    seed: u64,
) -> Result<()> {
    let err = |e| lowbit::Error::Device(format!("timing buffers: {e:?}"));
    let stream = device.stream();
    let mut rng = Rng(seed ^ 0x5EED);
    println!();
    println!("| shape [out, in] | M | kernel | us | GB/s | % read BW | TFLOP/s | vs cuBLAS bf16 |");
    println!("|---|---|---|---|---|---|---|---|");
    for &[rows, cols] in shapes {
        let max_m = *TOKENS.last().unwrap();
        let x: CudaSlice<bf16> = stream
            .clone_htod(
                &(0..max_m * cols)
                    .map(|_| bf16::from_f32(rng.normal()))
                    .collect::<Vec<_>>(),
            )
            .map_err(err)?;
        let mut y: CudaSlice<bf16> = stream.alloc_zeros(max_m * rows).map_err(err)?;
        let dense_bytes = rows * cols * 2;
        let copies = ROTATE_BYTES.div_ceil(dense_bytes).max(2);
        let dense: Vec<CudaSlice<bf16>> = (0..copies)
            .map(|_| {
                let w: Vec<bf16> = (0..rows * cols)
                    .map(|_| bf16::from_f32(rng.normal() * 0.02))
                    .collect();
                stream.clone_htod(&w).map_err(err)
            })
            .collect::<Result<_>>()?;
        let mut baseline = Vec::new();
        for &m in &TOKENS {
            let t = time(device, |i| {
                blas.linear(&x, &dense[i % copies], &mut y, [m, rows, cols])
            })?;
            baseline.push(t);
            report([rows, cols], m, "cuBLAS bf16", t, dense_bytes, read_bw, t);
        }
        drop(dense);
        let mut scratch: CudaSlice<bf16> = stream.alloc_zeros(rows * cols).map_err(err)?;
        for name in SCHEMES {
            let scheme = QuantScheme::parse(name)?;
            let packed = random_packed(&scheme, [rows, cols], &mut rng)?;
            let (bytes, linears) = rotated_copies(device, &packed)?;
            let copies = linears.len();
            if rows == shapes[0][0] && cols == shapes[0][1] {
                for (kernel, regs, local) in linears[0].kernel_resources()? {
                    println!("{name} {kernel}: {regs} registers, {local} bytes of local memory");
                }
            }
            for (mi, &m) in TOKENS.iter().enumerate() {
                if m > 16 || name == "w4a16-g128" {
                    let t = time(device, |i| {
                        linears[i % copies].dequantize_into(device, &mut scratch)?;
                        blas.linear(&x, &scratch, &mut y, [m, rows, cols])
                    })?;
                    let label = format!("{name} dequantize + cuBLAS");
                    report([rows, cols], m, &label, t, bytes, read_bw, baseline[mi]);
                }
                let default = linears[0].default_kernel(m);
                let mut kernels = vec![default];
                if name == "w4a16-g128" && m <= 16 {
                    let variants = [(1, None), (1, Some(8)), (2, None), (4, None)];
                    for (row_tiles, warps) in variants {
                        // The default already is the row-tile count's automatic split.
                        if matches!(default, Kernel::Gemv { row_tiles: r, .. } if r == row_tiles)
                            && warps.is_none()
                        {
                            continue;
                        }
                        kernels.push(Kernel::Gemv { row_tiles, warps });
                    }
                    kernels.push(Kernel::Gemm);
                }
                for kernel in kernels {
                    let t = time(device, |i| {
                        linears[i % copies].forward_with(device, &x, m, &mut y, kernel)
                    })?;
                    let label = match kernel {
                        Kernel::Gemv { row_tiles, warps } if kernel == default => {
                            format!("{name} gemv rt{row_tiles} w{}", warps.unwrap_or(0))
                        }
                        Kernel::Gemv { row_tiles, warps } => match warps {
                            Some(w) => format!("{name} (gemv rt{row_tiles} w{w})"),
                            None => format!("{name} (gemv rt{row_tiles} w-auto)"),
                        },
                        Kernel::Gemm if kernel == default => format!("{name} gemm"),
                        Kernel::Gemm => format!("{name} (gemm)"),
                    };
                    report([rows, cols], m, &label, t, bytes, read_bw, baseline[mi]);
                    // Back-to-back decode products overlap with programmatic dependent launch
                    // (the next one's weight loads start while this one finishes); the same
                    // kernel without it shows how much of the time that hides.
                    let pdl = device.programmatic_launch();
                    if pdl && kernel == default && name == "w4a16-g128" && m <= 16 {
                        device.set_programmatic_launch(false);
                        let t = time(device, |i| {
                            linears[i % copies].forward_with(device, &x, m, &mut y, kernel)
                        });
                        device.set_programmatic_launch(true);
                        let label = format!("{name} (default gemv, no PDL)");
                        report([rows, cols], m, &label, t?, bytes, read_bw, baseline[mi]);
                    }
                }
            }
        }
        for name in SCALED_SCHEMES {
            let scheme = QuantScheme::parse(name)?;
            let q = random_quantized(&scheme, [rows, cols], &mut rng)?;
            let first = CudaScaledLinear::new(device, &[&q])?;
            let bytes = first.device_bytes();
            let copies = ROTATE_BYTES.div_ceil(bytes).max(2);
            let mut linears = vec![first];
            for _ in 1..copies {
                linears.push(CudaScaledLinear::new(device, &[&q])?);
            }
            let mut scratch = ScaledScratch::new(device, max_m, linears[0].needs())?;
            for (mi, &m) in TOKENS.iter().enumerate() {
                let t = time(device, |i| {
                    linears[i % copies].forward(device, blas, &x, m, &mut y, &mut scratch)
                })?;
                let label = format!("{name} cuBLASLt");
                report([rows, cols], m, &label, t, bytes, read_bw, baseline[mi]);
            }
        }
    }
    Ok(())
}

/// One table row; times are (graph replay, one-by-one launches) in seconds.
fn report(
    [rows, cols]: [usize; 2],
    m: usize,
    label: &str,
    (seconds, launched): (f64, f64),
    weight_bytes: usize,
    read_bw: f64,
    (baseline, baseline_launched): (f64, f64),
) {
    let bytes = weight_bytes + m * (rows + cols) * 2;
    let gbps = bytes as f64 / seconds / 1e9;
    let tflops = 2.0 * (m * rows * cols) as f64 / seconds / 1e12;
    println!(
        "| [{rows}, {cols}] | {m} | {label} | {:.2} | {gbps:.0} | {:.0}% | {tflops:.1} | {:.2}x | {:.2} | {:.2}x |",
        seconds * 1e6,
        100.0 * gbps * 1e9 / read_bw,
        baseline / seconds,
        launched * 1e6,
        baseline_launched / launched
    );
}
