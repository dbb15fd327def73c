//! The CUDA kernels against the CPU (feature `cuda`). Every format's kernels are compiled by
//! NVRTC where NVRTC is installed; products are checked where a GPU is present (each kernel on
//! fresh random inputs, odd and model shapes, outputs poisoned before each launch; see
//! `lowbit::backend::cuda::check`). Without NVRTC or a GPU the tests say so and pass: CI has
//! neither, and the device benchmark (`benches/cuda`) runs the same checks on the GPU machine.
//! `LOWBIT_TEST_SEED=<n>` replays a run.
#![cfg(feature = "cuda")]

use lowbit::backend::cuda::check::{
    check_product, check_scaled, decode_kernels, device_or_skip, random_quantized, seed_from_env,
    Rng,
};
use lowbit::backend::cuda::device::{compile, KernelSource, FORWARD, QUANT_GEMM, SCALED_MM};
use lowbit::backend::cuda::linear::Kernel;
use lowbit::quant::QuantScheme;

/// `source` compiled for `arch`, or `None` (after saying so) where NVRTC is not installed.
fn compiled(
    source: KernelSource,
    arch: &'static str,
    defines: &[(&str, String)],
) -> Option<String> {
    match compile(source, arch, defines) {
        Ok(ptx) => Some(ptx),
        Err(lowbit::Error::Device(e)) if e.contains("not found") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{} for {arch} {defines:?}: {e}", source.name),
    }
}

#[test]
fn every_format_compiles_for_hopper_and_ampere() {
    for arch in ["compute_90a", "compute_80"] {
        for (fmt, asym, f16) in [
            (0, 0, 1),
            (0, 1, 1),
            (1, 0, 1),
            (1, 1, 1),
            (2, 0, 0),
            (3, 0, 0),
        ] {
            let defines = [
                ("FMT", fmt.to_string()),
                ("ASYM", asym.to_string()),
                ("SCALE_F16", f16.to_string()),
            ];
            let Some(ptx) = compiled(QUANT_GEMM, arch, &defines) else {
                return;
            };
            assert!(
                ptx.contains("mma.sync.aligned.m16n8k16"),
                "{arch} {defines:?}"
            );
            for entry in ["gemm", "gemv_nt1_rt1", "gemv_nt2_rt4", "dequantize"] {
                assert!(
                    ptx.contains(&format!(".entry {entry}")),
                    "{arch} {defines:?}: {entry}"
                );
            }
            assert_dependent_launch(&ptx, arch, 4);
        }
    }
    // The timing-only variants of the bench's sweep compile too (int4 and int8).
    for (fmt, diag) in [(0, 1), (0, 2), (1, 2)] {
        let defines = [
            ("FMT", fmt.to_string()),
            ("ASYM", "0".to_string()),
            ("SCALE_F16", "1".to_string()),
            ("DIAG", diag.to_string()),
        ];
        let Some(ptx) = compiled(QUANT_GEMM, "compute_90a", &defines) else {
            return;
        };
        assert!(ptx.contains(".entry gemv_nt1_rt1"), "{defines:?}");
    }
}

/// Every kernel of `ptx` waits for the kernel before it (griddepcontrol) on Hopper, and no
/// kernel uses the instruction below compute 9.0, where it does not exist.
fn assert_dependent_launch(ptx: &str, arch: &str, kernels: usize) {
    let entries = ptx.matches(".entry ").count();
    assert!(entries >= kernels, "{arch}: {entries} kernels");
    let waits = ptx.matches("griddepcontrol.wait").count();
    if arch == "compute_90a" {
        assert!(
            waits >= entries,
            "{arch}: {waits} waits for {entries} kernels"
        );
    } else {
        assert_eq!(waits, 0, "{arch}");
    }
}

#[test]
fn forward_pass_kernels_compile_for_hopper_and_ampere() {
    for arch in ["compute_90a", "compute_80"] {
        for head_dim in [16, 64, 256] {
            let Some(ptx) = compiled(FORWARD, arch, &[("HEAD_DIM", head_dim.to_string())]) else {
                return;
            };
            for name in [
                "embed_f32",
                "add_rms_norm",
                "qkv_rope",
                "attention",
                "swiglu",
                "argmax_rows",
            ] {
                assert!(ptx.contains(&format!(".entry {name}")), "{arch}: {name}");
            }
            assert_dependent_launch(&ptx, arch, 9);
        }
    }
}

#[test]
fn activation_quantization_compiles_for_hopper_and_ampere() {
    for arch in ["compute_90a", "compute_80"] {
        let Some(ptx) = compiled(SCALED_MM, arch, &[]) else {
            return;
        };
        for entry in [
            "quantize_int8",
            "quantize_fp8",
            "quantize_row_int8",
            "quantize_row_fp8",
            "scale_int32",
        ] {
            assert!(ptx.contains(&format!(".entry {entry}")), "{arch}: {entry}");
        }
        // FP8 conversion exists from compute 8.9; older GPUs get a trap, and cuBLASLt refuses
        // FP8 products there anyway.
        assert_eq!(
            ptx.contains("cvt.rn.satfinite.e4m3x2.f32"),
            arch == "compute_90a",
            "{arch}"
        );
        assert_dependent_launch(&ptx, arch, 5);
    }
}

#[test]
fn products_of_quantized_activations_match_the_cpu() {
    let Some(device) = device_or_skip("the cuBLASLt products were") else {
        return;
    };
    let blas = lowbit::backend::cuda::blas::Blas::new(&device).unwrap();
    let seed = seed_from_env();
    let mut rng = Rng(seed);
    let mut worst = 0f64;
    for name in ["w8a8", "w8a8-fp8", "w8a8-fp8-block"] {
        let scheme = QuantScheme::parse(name).unwrap();
        // Widths that need padding to 16 and to 128 (196, not a multiple of 8, is read value
        // by value, the others 8 values at a time), rows under one 128-row block.
        for shape in [[1024, 1032], [576, 576], [64, 896], [1536, 576], [64, 196]] {
            for m in [1, 3, 4, 16, 17, 130] {
                let r = check_scaled(&device, &blas, &scheme, shape, m, &mut rng).unwrap();
                assert!(
                    r.passed(),
                    "{}: relative error {:e} (tolerance {:e}), {} outputs unwritten or not \
                     finite (seed {seed})",
                    r.label,
                    r.relative_error,
                    r.tolerance,
                    r.bad_outputs
                );
                worst = worst.max(r.relative_error / r.tolerance);
            }
        }
    }
    eprintln!("quantized-activation products: worst error {worst:.2} of the tolerance");
    // What the GPU does not take is an error that says so, not a wrong product.
    for (name, shape) in [
        ("w8a8", [37, 200]),
        ("w4a8-g128", [64, 256]),
        ("w8a8-g128", [64, 256]),
    ] {
        let scheme = QuantScheme::parse(name).unwrap();
        let e = check_scaled(&device, &blas, &scheme, shape, 2, &mut rng).unwrap_err();
        assert!(e.to_string().contains("GPU kernels for"), "{name}: {e}");
    }
}

#[test]
fn products_match_the_cpu_for_every_scheme() {
    let Some(device) = device_or_skip("the GPU kernels were") else {
        return;
    };
    let seed = seed_from_env();
    let mut rng = Rng(seed);
    for name in [
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
    ] {
        let scheme = QuantScheme::parse(name).unwrap();
        for shape in [[37, 200], [1000, 1032], [576, 1536]] {
            for m in [1, 5, 16, 17, 130] {
                let kernels: Vec<Kernel> = if m <= 16 {
                    decode_kernels().into_iter().chain([Kernel::Gemm]).collect()
                } else {
                    vec![Kernel::Gemm]
                };
                for r in
                    check_product(&device, None, &scheme, shape, m, &kernels, &mut rng).unwrap()
                {
                    assert!(
                        r.passed(),
                        "{}: relative error {:e} (tolerance {:e}), {} outputs unwritten or not \
                         finite (seed {seed})",
                        r.label,
                        r.relative_error,
                        r.tolerance,
                        r.bad_outputs
                    );
                }
            }
        }
    }
}

#[test]
fn bad_sizes_are_errors_not_launches() {
    let Some(device) = device_or_skip("the GPU kernels were") else {
        return;
    };
    let scheme = QuantScheme::parse("w4a16-g128").unwrap();
    let weights = vec![0.25f32; 64 * 128];
    let q =
        lowbit::quant::quantize_matrix(&weights, [64, 128], &scheme, &Default::default()).unwrap();
    let linear = lowbit::backend::cuda::linear::CudaQuantLinear::new(&device, &q).unwrap();
    let stream = device.stream();
    let x = stream.alloc_zeros::<half::bf16>(128).unwrap();
    let mut y = stream.alloc_zeros::<half::bf16>(64).unwrap();
    assert!(linear.forward(&device, &x, 2, &mut y).is_err());
    assert!(linear
        .forward_with(
            &device,
            &x,
            1,
            &mut y,
            Kernel::Gemv {
                row_tiles: 3,
                warps: None
            }
        )
        .is_err());
    for warps in [0, 17] {
        let kernel = Kernel::Gemv {
            row_tiles: 1,
            warps: Some(warps),
        };
        assert!(linear.forward_with(&device, &x, 1, &mut y, kernel).is_err());
    }
    assert!(linear.forward(&device, &x, 1, &mut y).is_ok());
    device.synchronize().unwrap();
}

#[test]
fn fused_swiglu_product_equals_swiglu_then_product() {
    use half::bf16;
    use lowbit::backend::cuda::linear::CudaQuantLinear;
    use lowbit::backend::cuda::ops::ForwardKernels;
    let Some(device) = device_or_skip("the fused SwiGLU product was") else {
        return;
    };
    let seed = seed_from_env();
    let mut rng = Rng(seed);
    let kernels = ForwardKernels::new(&device, 64).unwrap();
    let stream = device.stream();
    for name in ["w4a16-g128", "w4a16-g128-asym", "w8a16", "nf4", "fp8"] {
        let scheme = QuantScheme::parse(name).unwrap();
        // Stacked gate/up weights [2 * inter, cols]: short and long rows, one and many tiles.
        for [inter, cols] in [[208, 576], [16, 1536], [96, 200]] {
            let q = random_quantized(&scheme, [2 * inter, cols], &mut rng).unwrap();
            let linear = CudaQuantLinear::new(&device, &q).unwrap();
            for m in [1, 3, 9, 16] {
                let x: Vec<bf16> = (0..m * cols)
                    .map(|_| bf16::from_f32(rng.normal()))
                    .collect();
                let x = stream.clone_htod(&x).unwrap();
                // The same split of k among warps as the fused product (two row tiles per
                // block, warps from the shape), so the sums are added in the same order.
                let mut gate_up = stream.alloc_zeros::<bf16>(m * 2 * inter).unwrap();
                let kernel = Kernel::Gemv {
                    row_tiles: 2,
                    warps: None,
                };
                linear
                    .forward_with(&device, &x, m, &mut gate_up, kernel)
                    .unwrap();
                let (gate, up) = (gate_up.slice(..), gate_up.slice(inter..));
                let mut want = stream.alloc_zeros::<bf16>(m * inter).unwrap();
                kernels
                    .swiglu(
                        &device,
                        [&gate, &up],
                        [None, None],
                        [m, inter, 2 * inter],
                        &mut want,
                    )
                    .unwrap();
                let mut got = stream.clone_htod(&vec![bf16::NAN; m * inter]).unwrap();
                linear.forward_swiglu(&device, &x, m, &mut got).unwrap();
                let (want, got) = (
                    stream.clone_dtoh(&want).unwrap(),
                    stream.clone_dtoh(&got).unwrap(),
                );
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && want.iter().any(|v| v.to_f32() != 0.0),
                    "{name} [{inter} x 2, {cols}] m={m}: fused SwiGLU product differs (seed {seed})"
                );
            }
            // Too many tokens for the decode kernel: an error, not a launch.
            let x = stream.alloc_zeros::<bf16>(17 * cols).unwrap();
            let mut y = stream.alloc_zeros::<bf16>(17 * inter).unwrap();
            assert!(linear.forward_swiglu(&device, &x, 17, &mut y).is_err());
        }
        // Halves that are not whole row tiles cannot be paired.
        let q = random_quantized(&scheme, [2 * 24, 64], &mut rng).unwrap();
        let linear = CudaQuantLinear::new(&device, &q).unwrap();
        let x = stream.alloc_zeros::<bf16>(64).unwrap();
        let mut y = stream.alloc_zeros::<bf16>(24).unwrap();
        assert!(linear.forward_swiglu(&device, &x, 1, &mut y).is_err());
    }
}
