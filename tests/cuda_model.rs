//! The whole forward pass on the GPU against the CPU (feature `cuda`), on the synthetic models
//! (Llama with GQA and Llama 3 RoPE, Llama with biases, Qwen2 with q/k/v bias, Qwen3 with q/k
//! norm and YaRN), dense and quantized: logits of a ragged prefill, of ragged continuations and
//! of decode steps, a copied cache, and greedy generation. Fresh random tokens each run
//! (`LOWBIT_TEST_SEED=<n>` replays one); the workspace is filled with NaN before every pass and
//! fresh KV-cache buffers are NaN, so an unwritten value fails the check. Without a GPU the tests
//! say so loudly and pass: CI has none; they run on the device machine.
#![cfg(feature = "cuda")]

use lowbit::backend::cuda::check::{device_or_skip, seed_from_env, Rng};
use lowbit::backend::cuda::device::CudaDevice;
use lowbit::backend::cuda::model::CudaModel;
use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::model::sampling::argmax;
use lowbit::model::{generate, Cache, Decoder, GenerateParams, KvCache, Logits, Model};
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

/// Bound on `||gpu - cpu|| / ||cpu||` of the logits. The GPU rounds each projection's input and
/// output to bf16 (relative error at most 2^-9 = 1.95e-3 each): per block the two norm outputs,
/// q/k/v, the attention output, o_proj, gate/up, SwiGLU and down_proj, 8 roundings on any path,
/// so 2 blocks, the final norm and the head give 18, and dense weights are rounded to bf16 once
/// more. Independent roundings add in quadrature: about sqrt(19) * 2^-9 = 8.5e-3 at most, so
/// 1e-2, the top of METHOD.md's range for bf16 operands (1e-3 to 1e-2). Seen on an H100: at most
/// 4.4e-3 over every model and scheme; a wrong index, a missing bias, norm or RoPE term gives
/// errors of order 1.
const LOGITS_TOLERANCE: f64 = 1e-2;

/// Bounds for schemes with quantized activations. Both sides quantize each projection input per
/// token, the GPU from bf16 values and the CPU from f32 ones, so a value near a rounding
/// boundary can get the neighbouring code. Four quantized inputs per block over 2 blocks add in
/// quadrature (a factor of about 2.8), on top of LOGITS_TOLERANCE's bf16 roundings.
///
/// int8 (w8a8): with Gaussian activations (max about 4 sigma) a typical code is near 32, the
/// bf16 rounding moves it by 2^-9 of that, so it changes with probability about 0.03, by one
/// step: about 0.5% of each input, 1.5% over the model. Seen on an H200: at most 9.8e-3. Bound
/// 3e-2.
const INT8_ACTIVATION_TOLERANCE: f64 = 3e-2;
/// FP8 (w8a8-fp8, -block): an E4M3 step is 2^-4 to 2^-3 of the value, so a code changes with
/// probability about 2^-9 / 2^-3.5 = 2.2%, by about 9% of the value: 1.3% of each input, 3.8%
/// over the model. Seen on an H200: 2.0e-2 to 3.8e-2. Bound 8e-2 (a wrong index, scale or
/// block gives errors of order 1).
const FP8_ACTIVATION_TOLERANCE: f64 = 8e-2;

/// Schemes checked besides dense weights (the kernels' formats: int4 grouped, int8, FP8, NF4;
/// int8 and FP8 activations through cuBLASLt).
const SCHEMES: [&str; 7] = [
    "w4a16-g128",
    "w8a16",
    "fp8",
    "nf4",
    "w8a8",
    "w8a8-fp8",
    "w8a8-fp8-block",
];

/// The logits bound for `scheme` (see the constants).
fn tolerance(scheme: Option<&str>) -> f64 {
    use lowbit::quant::scheme::ActivationFormat;
    let activation = scheme
        .and_then(|s| s.split('+').next())
        .map(|s| QuantScheme::parse(s).unwrap().activation);
    match activation {
        Some(ActivationFormat::Int8) => INT8_ACTIVATION_TOLERANCE,
        Some(ActivationFormat::Fp8) => FP8_ACTIVATION_TOLERANCE,
        _ => LOGITS_TOLERANCE,
    }
}

/// The variant's model, quantized with `scheme`: a scheme name, optionally followed by
/// `+`-separated overrides (`w4a16-g128+*.k_proj=skip`).
fn model(variant: Variant, scheme: Option<&str>) -> Model {
    let mut model = Model::from_checkpoint(&synthetic::build(variant, 7), None).unwrap();
    if let Some(spec) = scheme {
        let mut parts = spec.split('+');
        let scheme = QuantScheme::parse(parts.next().unwrap()).unwrap();
        let mut rules = QuantRules::new(scheme);
        for rule in parts {
            rules.push_override(rule).unwrap();
        }
        quantize_model(&mut model, &rules, &RtnOptions::default()).unwrap();
    }
    model
}

/// `(relative error, non-finite count)` of one sequence's logits.
fn compare(gpu: &[f32], cpu: &[f32]) -> (f64, usize) {
    assert_eq!(gpu.len(), cpu.len());
    let bad = gpu.iter().filter(|v| !v.is_finite()).count();
    let (mut err, mut norm) = (0f64, 0f64);
    for (&g, &c) in gpu.iter().zip(cpu) {
        err += (g as f64 - c as f64).powi(2);
        norm += (c as f64).powi(2);
    }
    ((err / norm.max(1e-30)).sqrt(), bad)
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

/// Runs one batch on both and returns the worst relative error; panics on a failure (an error
/// over `tolerance`).
fn step(
    (label, tolerance): (&str, f64),
    cpu: &Model,
    gpu: &CudaModel<'_>,
    inputs: &[Vec<u32>],
    cpu_caches: &mut [KvCache],
    gpu_caches: &mut [lowbit::backend::cuda::kv_cache::CudaKvCache],
    which: Logits,
) -> f64 {
    let slices: Vec<&[u32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut cpu_refs: Vec<&mut KvCache> = cpu_caches.iter_mut().collect();
    let want = cpu.forward_batch(&slices, &mut cpu_refs, which).unwrap();
    gpu.poison_workspace().unwrap();
    let mut gpu_refs: Vec<_> = gpu_caches.iter_mut().collect();
    let got = gpu.forward_device(&slices, &mut gpu_refs, which).unwrap();
    let mut worst = 0f64;
    for (s, (g, c)) in got.iter().zip(&want).enumerate() {
        let (err, bad) = compare(g, c);
        assert!(
            bad == 0 && err < tolerance,
            "{label}, sequence {s}: relative error {err:e} (tolerance {tolerance:e}), {bad} \
             logits not finite"
        );
        worst = worst.max(err);
    }
    worst
}

/// Ragged prefill (1, 7 and 19 tokens), a ragged continuation (3, 1, 5 tokens), then four
/// decode steps, on fresh caches.
fn check_model(device: &CudaDevice, variant: Variant, scheme: Option<&str>, rng: &mut Rng) -> f64 {
    let cpu = model(variant, scheme);
    let gpu = CudaModel::new(&cpu, device).unwrap();
    let vocab = cpu.config().vocab_size;
    let label = format!("{} {}", variant.name(), scheme.unwrap_or("dense"));
    let tol = tolerance(scheme);
    let mut cpu_caches: Vec<KvCache> = (0..3).map(|_| cpu.new_cache()).collect();
    let mut gpu_caches: Vec<_> = (0..3).map(|_| gpu.new_device_cache()).collect();
    let mut worst = 0f64;
    let prefill: Vec<Vec<u32>> = [1, 7, 19].iter().map(|&n| tokens(rng, n, vocab)).collect();
    worst = worst.max(step(
        (&format!("{label} prefill"), tol),
        &cpu,
        &gpu,
        &prefill,
        &mut cpu_caches,
        &mut gpu_caches,
        Logits::All,
    ));
    let more: Vec<Vec<u32>> = [3, 1, 5].iter().map(|&n| tokens(rng, n, vocab)).collect();
    worst = worst.max(step(
        (&format!("{label} continuation"), tol),
        &cpu,
        &gpu,
        &more,
        &mut cpu_caches,
        &mut gpu_caches,
        Logits::All,
    ));
    for i in 0..4 {
        let next: Vec<Vec<u32>> = (0..3).map(|_| tokens(rng, 1, vocab)).collect();
        worst = worst.max(step(
            (&format!("{label} decode step {i}"), tol),
            &cpu,
            &gpu,
            &next,
            &mut cpu_caches,
            &mut gpu_caches,
            Logits::Last,
        ));
    }
    // The keys the GPU cached are the CPU's post-RoPE keys (f32 cache, bf16 k projection).
    let want = cpu_caches[2].layer_keys(0).to_vec();
    let got = gpu_caches[2].keys_to_host(0).unwrap();
    let (err, bad) = compare(&got, &want);
    assert!(
        bad == 0 && err < tol,
        "{label}: cached keys, relative error {err:e}, {bad} not finite"
    );
    eprintln!("{label}: worst logits relative error {worst:.3e}");
    worst
}

#[test]
fn logits_match_the_cpu_for_every_architecture_and_scheme() {
    let Some(device) = device_or_skip("the GPU forward pass was") else {
        return;
    };
    let seed = seed_from_env();
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    // Worst error with bf16 activations and with quantized ones.
    let (mut worst, mut worst_scaled) = (0f64, 0f64);
    for variant in Variant::ALL {
        for scheme in std::iter::once(None).chain(SCHEMES.iter().map(|s| Some(*s))) {
            let err = check_model(&device, variant, scheme, &mut rng);
            let tol = tolerance(scheme);
            if tol == LOGITS_TOLERANCE {
                worst = worst.max(err);
            } else {
                worst_scaled = worst_scaled.max(err / tol);
            }
        }
    }
    // Mixed weights: q/v quantized and k dense, gate and up in different schemes, so the
    // projections that share an input cannot be stacked and run one by one.
    for variant in [Variant::LlamaGqa, Variant::Qwen2] {
        let mixed = "w4a16-g128+*.k_proj=skip+*.up_proj=w8a16";
        worst = worst.max(check_model(&device, variant, Some(mixed), &mut rng));
    }
    eprintln!(
        "worst logits relative error over all models: {worst:.3e} (tolerance \
         {LOGITS_TOLERANCE:e}); with quantized activations {worst_scaled:.2} of the tolerance"
    );
}

#[test]
fn greedy_generation_and_copied_caches_match_the_cpu() {
    let Some(device) = device_or_skip("the GPU forward pass was") else {
        return;
    };
    let seed = seed_from_env();
    let mut rng = Rng(seed ^ 0x5EED);
    for variant in [Variant::LlamaGqa, Variant::Qwen3] {
        let cpu = model(variant, Some("w4a16-g128"));
        let gpu = CudaModel::new(&cpu, &device).unwrap();
        let vocab = cpu.config().vocab_size;
        let prompts: Vec<Vec<u32>> = [5, 11]
            .iter()
            .map(|&n| tokens(&mut rng, n, vocab))
            .collect();
        let params = GenerateParams {
            max_new_tokens: 6,
            stop_at_eos: false,
            ..Default::default()
        };
        let want = generate(&cpu, &prompts, &params, |_, _| true).unwrap();
        let got = generate(&gpu, &prompts, &params, |_, _| true).unwrap();
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            // Tokens agree until the first step whose top two CPU logits are closer than the
            // GPU's error can tell apart; check that such a step explains any difference.
            let first_diff = g.tokens.iter().zip(&w.tokens).position(|(a, b)| a != b);
            if let Some(at) = first_diff {
                let mut context = prompts[s].clone();
                context.extend_from_slice(&w.tokens[..at]);
                let logits = cpu.logits(&context).unwrap();
                let last = &logits[(context.len() - 1) * vocab..];
                let gap = (last[w.tokens[at] as usize] - last[g.tokens[at] as usize]).abs();
                let scale = last.iter().map(|v| v * v).sum::<f32>().sqrt() / (vocab as f32).sqrt();
                assert!(
                    gap < 0.05 * scale,
                    "{} sequence {s}: GPU picked {} and CPU {} at step {at} with a logit gap \
                     of {gap} (seed {seed})",
                    variant.name(),
                    g.tokens[at],
                    w.tokens[at]
                );
                eprintln!(
                    "{}: sequence {s} diverged at step {at} on a near tie",
                    variant.name()
                );
            }
            assert!(
                first_diff.is_none_or(|at| at >= 1),
                "differs at the first token"
            );
        }
        // A copy of a cache continues like the original.
        let mut cache = gpu.new_cache().unwrap();
        let first = gpu.forward(&prompts[0], &mut cache).unwrap();
        let mut copy = cache.try_clone().unwrap();
        let a = gpu.forward(&[3], &mut cache).unwrap();
        let b = gpu.forward(&[3], &mut copy).unwrap();
        assert_eq!(a, b, "a copied cache gives other logits");
        assert_eq!(copy.len(), prompts[0].len() + 1);
        assert!(first.iter().all(|v| v.is_finite()));
        // Greedy picks made on the GPU are the host's argmax of the same step's logits: two
        // copies of a batch of caches take the same step, one returning logits, one picks.
        let mut caches: Vec<Cache> = prompts.iter().map(|_| gpu.new_cache().unwrap()).collect();
        let inputs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut refs: Vec<&mut Cache> = caches.iter_mut().collect();
        let prefill = gpu.greedy_batch(&inputs, &mut refs).unwrap();
        let mut copies: Vec<Cache> = caches.iter().map(|c| c.try_clone().unwrap()).collect();
        let step: Vec<[u32; 1]> = prefill.iter().map(|&t| [t]).collect();
        let step: Vec<&[u32]> = step.iter().map(|t| t.as_slice()).collect();
        let mut refs: Vec<&mut Cache> = caches.iter_mut().collect();
        let logits = gpu.forward_batch(&step, &mut refs, Logits::Last).unwrap();
        let mut refs: Vec<&mut Cache> = copies.iter_mut().collect();
        let picks = gpu.greedy_batch(&step, &mut refs).unwrap();
        let want: Vec<u32> = logits.iter().map(|l| argmax(l) as u32).collect();
        assert_eq!(
            picks, want,
            "GPU picks differ from the argmax of the logits"
        );
    }
}

#[test]
fn argmax_on_the_gpu_matches_the_host() {
    use lowbit::backend::cuda::ops::ForwardKernels;
    let Some(device) = device_or_skip("the GPU argmax was") else {
        return;
    };
    let mut rng = Rng(seed_from_env() ^ 0xA5);
    let width = 49_157; // odd, and more than the block's threads many times over
    let random = |rng: &mut Rng| -> Vec<f32> { (0..width).map(|_| rng.normal()).collect() };
    let mut rows = vec![random(&mut rng)];
    // A tie: the first of the two maxima wins.
    let mut tie = random(&mut rng);
    tie[3000] = 50.0;
    tie[7] = 50.0;
    rows.push(tie);
    // NaN never wins (not at index 0, where the host's loop would keep it).
    let mut nan = random(&mut rng);
    nan[1] = f32::NAN;
    nan[width - 1] = f32::NAN;
    nan[500] = 40.0;
    rows.push(nan);
    // Every value -inf: the first.
    rows.push(vec![f32::NEG_INFINITY; width]);
    // The maximum in the last place.
    let mut last = random(&mut rng);
    last[width - 1] = 60.0;
    rows.push(last);
    let flat: Vec<f32> = rows.concat();
    let kernels = ForwardKernels::new(&device, 64).unwrap();
    let stream = device.stream();
    let logits = stream.clone_htod(&flat).unwrap();
    let mut out = stream.alloc_zeros::<u32>(rows.len()).unwrap();
    kernels
        .argmax_rows(&device, &logits, [rows.len(), width], &mut out)
        .unwrap();
    let got = stream.clone_dtoh(&out).unwrap();
    let want: Vec<u32> = rows.iter().map(|r| argmax(r) as u32).collect();
    assert_eq!(got, want);
    assert_eq!(&want[1..], &[7, 500, 0, width as u32 - 1]);
}

#[test]
fn bad_inputs_are_errors() {
    let Some(device) = device_or_skip("the GPU forward pass was") else {
        return;
    };
    let cpu = model(Variant::Qwen2, None);
    let mut gpu = CudaModel::new(&cpu, &device).unwrap();
    let error = gpu.set_timing_skip(Some("rope")).unwrap_err().to_string();
    assert!(
        error.contains("unknown stage") && error.contains("qkv_rope"),
        "{error}"
    );
    let mut cache = gpu.new_cache().unwrap();
    assert!(gpu.forward(&[], &mut cache).is_err());
    assert!(gpu.forward(&[100_000], &mut cache).is_err());
    let mut cpu_cache = Decoder::new_cache(&cpu).unwrap();
    assert!(
        gpu.forward(&[1], &mut cpu_cache).is_err(),
        "a CPU cache must not be accepted by the GPU model"
    );
}

/// Logits of a 19-token prefill and three graph-replayed decode steps of `gpu`.
fn prefill_and_decode(gpu: &CudaModel<'_>, prompt: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = gpu.new_device_cache();
    let mut out = gpu
        .forward_device(&[prompt], &mut [&mut cache], Logits::All)
        .unwrap();
    for step in 0..3u32 {
        let token = [prompt[step as usize] ^ 1];
        out.extend(
            gpu.forward_device(&[&token], &mut [&mut cache], Logits::Last)
                .unwrap(),
        );
    }
    out
}

#[test]
fn dependent_launch_and_profiling_change_no_logit() {
    let Some(device) = device_or_skip("programmatic dependent launch was") else {
        return;
    };
    let mut rng = Rng(seed_from_env() ^ 0xD1);
    let cpu = model(Variant::Qwen2, Some("w4a16-g128"));
    let prompt = tokens(&mut rng, 19, cpu.config().vocab_size);
    // The kernels are deterministic, so overlapping their launches must not change a bit;
    // a kernel that read its input before the previous one finished would.
    device.set_programmatic_launch(false);
    let plain = prefill_and_decode(&CudaModel::new(&cpu, &device).unwrap(), &prompt);
    device.set_programmatic_launch(true);
    let expect_pdl = device.compute_capability().0 >= 9;
    assert_eq!(device.programmatic_launch(), expect_pdl);
    // A stage left out for timing changes the logits; put back, they are bit for bit again.
    let mut skipping = CudaModel::new(&cpu, &device).unwrap();
    skipping.set_timing_skip(Some("attention")).unwrap();
    assert!(prefill_and_decode(&skipping, &prompt) != plain);
    skipping.set_timing_skip(None).unwrap();
    assert!(prefill_and_decode(&skipping, &prompt) == plain);
    drop(skipping);
    let gpu = CudaModel::new(&cpu, &device).unwrap();
    for round in 0..3 {
        gpu.poison_workspace().unwrap();
        assert!(
            prefill_and_decode(&gpu, &prompt) == plain,
            "round {round}: logits differ with programmatic dependent launch"
        );
    }
    // Profiled passes run the same kernels without graphs.
    gpu.set_profiling(true).unwrap();
    assert!(
        prefill_and_decode(&gpu, &prompt) == plain,
        "profiled logits differ"
    );
    let stages = gpu.take_profile().unwrap();
    gpu.set_profiling(false).unwrap();
    let layers = cpu.config().num_hidden_layers;
    let launches = |name: &str| {
        let stage = stages.iter().find(|s| s.stage == name);
        let stage = stage.unwrap_or_else(|| panic!("no {name} in {stages:?}"));
        assert!(stage.seconds > 0.0 && stage.seconds < 1.0, "{stage:?}");
        stage.launches
    };
    // One prefill pass and three decode steps.
    for name in ["embed", "lm_head"] {
        assert_eq!(launches(name), 4, "{name}");
    }
    for name in ["qkv", "qkv_rope", "attention", "o_proj", "down"] {
        assert_eq!(launches(name), 4 * layers, "{name}");
    }
    // The 19-token prefill runs the gate/up product and SwiGLU apart; the one-token decode
    // steps run them as one launch.
    assert_eq!(launches("gate_up"), layers);
    assert_eq!(launches("swiglu"), layers);
    assert_eq!(launches("gate_up_swiglu"), 3 * layers);
    assert!(gpu.take_profile().unwrap().is_empty());
}

/// `lowbit_last_error()` as a string.
fn last_error() -> String {
    // SAFETY: lowbit_last_error never returns NULL; the string is read before the next call.
    unsafe { std::ffi::CStr::from_ptr(lowbit::ffi::lowbit_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// The logits of `ids` through `lowbit_logits`.
fn c_logits(model: *mut lowbit::ffi::lowbit_model, ids: &[u32], vocab: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; vocab];
    let mut n = 0;
    // SAFETY: a live model, `ids.len()` ids, `vocab` writable floats and a writable count.
    let status = unsafe {
        lowbit::ffi::lowbit_logits(
            model,
            ids.as_ptr(),
            ids.len(),
            out.as_mut_ptr(),
            vocab,
            &mut n,
        )
    };
    assert_eq!(
        status,
        lowbit::ffi::lowbit_status::LOWBIT_OK,
        "{}",
        last_error()
    );
    assert_eq!(n, vocab);
    out
}

/// Quantizes `model` in memory with RTN to `scheme` through `lowbit_model_quantize`.
fn c_quantize(model: *mut lowbit::ffi::lowbit_model, scheme: &str) -> lowbit::ffi::lowbit_status {
    let scheme = std::ffi::CString::new(scheme).unwrap();
    let params = lowbit::ffi::lowbit_quantize_params {
        scheme: scheme.as_ptr(),
        ..lowbit::ffi::lowbit_quantize_default_params()
    };
    // SAFETY: a live model used by no other thread; params from the default function.
    unsafe { lowbit::ffi::lowbit_model_quantize(model, &params) }
}

#[test]
fn the_c_api_runs_models_on_the_gpu() {
    use lowbit::ffi::lowbit_status::*;
    use lowbit::ffi::*;
    let Some(device) = device_or_skip("the C API on the GPU was") else {
        return;
    };
    drop(device);
    let mut rng = Rng(seed_from_env());
    let base = synthetic::build(Variant::Qwen2, 5);
    let dir = std::env::temp_dir().join(format!("lowbit-c-api-gpu-{}", std::process::id()));
    lowbit::checkpoint::Checkpoint::from_parts(
        base.path().to_path_buf(),
        base.config().clone(),
        base.tensors().clone(),
        Some(synthetic::byte_tokenizer_json()),
    )
    .save(&dir)
    .unwrap();
    let vocab = base.config().vocab_size;
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let load = |device: &std::ffi::CStr| {
        let params = lowbit_load_params {
            device: device.as_ptr(),
            ..lowbit_load_default_params()
        };
        let mut model = std::ptr::null_mut();
        // SAFETY: a valid path, params from the default function, a writable out-pointer.
        let status = unsafe { lowbit_model_load_with_params(path.as_ptr(), &params, &mut model) };
        assert_eq!(status, LOWBIT_OK, "{device:?}: {}", last_error());
        model
    };
    let cpu = load(c"cpu");
    let gpu = load(c"cuda:0");
    let ids = tokens(&mut rng, 23, vocab);
    let check = |stage: &str| {
        let (err, bad) = compare(&c_logits(gpu, &ids, vocab), &c_logits(cpu, &ids, vocab));
        assert!(
            bad == 0 && err < LOGITS_TOLERANCE,
            "C API, {stage}: GPU logits relative error {err:e}, {bad} not finite"
        );
        eprintln!("C API on the GPU, {stage}: logits relative error {err:.3e}");
    };
    check("dense");
    // A scheme the GPU kernels do not take leaves the model as it was, still on the GPU.
    let before = c_logits(gpu, &ids, vocab);
    assert_eq!(c_quantize(gpu, "w4a8-g128"), LOWBIT_ERR_UNSUPPORTED);
    let message = last_error();
    assert!(message.contains("the model is unchanged"), "{message}");
    let (err, _) = compare(&c_logits(gpu, &ids, vocab), &before);
    assert!(
        err < 1e-6,
        "the model changed after a refused quantization: {err:e}"
    );
    // Quantizing in memory replaces the GPU copy.
    for m in [cpu, gpu] {
        assert_eq!(c_quantize(m, "w4a16-g128"), LOWBIT_OK, "{}", last_error());
    }
    check("w4a16-g128");
    // Generation and the benchmark run there too.
    let prompt = c"hello";
    let params = lowbit_generate_params {
        max_new_tokens: 8,
        temperature: 0.0,
        ..lowbit_generate_default_params()
    };
    let mut text = std::ptr::null_mut();
    // SAFETY: a live model, a NUL-terminated prompt, default-derived params, no callback and a
    // writable out-pointer.
    let status = unsafe {
        lowbit_generate(
            gpu,
            prompt.as_ptr(),
            &params,
            None,
            std::ptr::null_mut(),
            &mut text,
        )
    };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    // SAFETY: lowbit allocated the string; it is freed once.
    unsafe { lowbit_string_free(text) };
    let bench = lowbit_bench_params {
        prompt_tokens: 16,
        decode_tokens: 8,
        ..lowbit_bench_default_params()
    };
    // SAFETY: a zeroed result is a valid value of this plain struct.
    let mut result: lowbit_bench_result = unsafe { std::mem::zeroed() };
    result.struct_size = std::mem::size_of::<lowbit_bench_result>();
    // SAFETY: a live model, params from the default function and a result with struct_size set.
    let status = unsafe { lowbit_bench(gpu, &bench, &mut result) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    assert!(result.decode_tokens_per_s > 0.0);
    eprintln!(
        "C API bench on the GPU: {:.0} decode tok/s",
        result.decode_tokens_per_s
    );
    // SAFETY: both came from lowbit_model_load_with_params and are freed once.
    unsafe {
        lowbit_model_free(cpu);
        lowbit_model_free(gpu);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
