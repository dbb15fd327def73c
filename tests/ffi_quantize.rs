//! lowbit_quantize called from Rust as a C caller would: the defaults, a quantized synthetic
//! checkpoint that loads through lowbit_model_load and stays close to the original, settings
//! (method, MSE clipping, overrides) that reach the Rust API, a progress callback that counts
//! and cancels, every kind of bad argument, and the default model quantized and generating.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use lowbit::checkpoint::default_model;
use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::ffi::lowbit_status::*;
use lowbit::ffi::*;
use lowbit::model::{GenerateParams, Model};
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

/// Seed of the synthetic weights.
const SEED: u64 = 7;

/// Bound on `max |logit(quantized) - logit(original)|` for the synthetic models under the default
/// w4a16-g128 scheme, as a fraction of the original logits' spread (max - min over the
/// vocabulary). Where the number comes from: the synthetic weights are uniform in [-m, m], and
/// with 64 or 128 inputs a group of 128 is a whole row, so symmetric 4-bit RTN has a step of
/// m / 7.5 and an RMS error of step / sqrt(12) ~ 0.04 m against a weight RMS of m / sqrt(3):
/// about 7% relative error per matrix. Through 14 such matrices, norms and residuals the measured
/// worst case over the four variants and three sequences is 4% of the spread. The bound, 25%,
/// leaves six times that margin and still fails for a broken layout or scale: the logits of the
/// same architecture with other random weights differ by more (checked below as a control).
const LOGIT_TOLERANCE_OF_SPREAD: f32 = 0.25;

/// Token sequences whose logits are compared (ids below the synthetic vocabulary of 256).
const SEQUENCES: [&[u32]; 3] = [&[1, 5, 9, 200, 3], &[255, 0, 17], &[42]];

/// Linear layers per decoder block (q, k, v, o, gate, up, down).
const LINEARS_PER_BLOCK: usize = 7;

const PROMPT: &str = "The capital of France is";

/// A model handle that is freed on drop.
struct Handle(*mut lowbit_model);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from lowbit_model_load and is freed only here.
        unsafe { lowbit_model_free(self.0) };
    }
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

fn c_path(path: &Path) -> CString {
    c(path.to_str().unwrap())
}

fn last_error() -> String {
    // SAFETY: lowbit_last_error never returns NULL and the string is read before the next call.
    unsafe { CStr::from_ptr(lowbit_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

/// An empty directory for one test under the target's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ffi-quantize-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &Path) -> Handle {
    let path = c_path(path);
    let mut model = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut model) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    Handle(model)
}

fn logits(model: &Handle, ids: &[u32]) -> Vec<f32> {
    let mut vocab = 0usize;
    // SAFETY: valid handle and out-pointer.
    let status = unsafe { lowbit_model_vocab_size(model.0, &mut vocab) };
    assert_eq!(status, LOWBIT_OK);
    let mut out = vec![f32::NAN; vocab];
    let mut written = 0usize;
    // SAFETY: `ids` and `out` are valid for their lengths.
    let status = unsafe {
        lowbit_logits(
            model.0,
            ids.as_ptr(),
            ids.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut written,
        )
    };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    out
}

fn weight_bytes(model: &Handle) -> u64 {
    let mut info = std::mem::MaybeUninit::<lowbit_model_info>::zeroed();
    // SAFETY: writing the first field of a zeroed struct.
    unsafe { (*info.as_mut_ptr()).struct_size = size_of::<lowbit_model_info>() };
    // SAFETY: valid handle, struct_size set.
    let status = unsafe { lowbit_model_get_info(model.0, info.as_mut_ptr()) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    // SAFETY: lowbit filled every field.
    unsafe { info.assume_init() }.weight_bytes
}

/// What the progress callback saw; it cancels once `cancel_at` layers are done.
#[derive(Default)]
struct Progress {
    calls: Vec<(usize, usize, String)>,
    cancel_at: Option<usize>,
}

unsafe extern "C" fn record(
    done: usize,
    total: usize,
    layer: *const c_char,
    user_data: *mut c_void,
) -> bool {
    // SAFETY: user_data is the &mut Progress that `quantize` below put in the params.
    let progress = unsafe { &mut *user_data.cast::<Progress>() };
    // SAFETY: lowbit passes a NUL-terminated layer name valid during the call.
    let layer = unsafe { CStr::from_ptr(layer) }.to_str().unwrap();
    progress.calls.push((done, total, layer.to_string()));
    progress.cancel_at != Some(done)
}

/// Runs lowbit_quantize with `params` (their callback replaced by `record` into `progress`).
fn quantize(
    model: &Path,
    out: &Path,
    mut params: lowbit_quantize_params,
    progress: &mut Progress,
) -> lowbit_status {
    params.progress = Some(record);
    params.user_data = (progress as *mut Progress).cast();
    let (model, out) = (c_path(model), c_path(out));
    // SAFETY: valid strings; params from lowbit_quantize_default_params with valid pointers and
    // a callback whose user data outlives the call.
    unsafe { lowbit_quantize(model.as_ptr(), out.as_ptr(), &params) }
}

/// The progress calls of a complete pass over `layers` layers: done runs 1..=total.
fn assert_complete_progress(progress: &Progress, layers: usize) {
    assert_eq!(progress.calls.len(), layers);
    for (i, (done, total, layer)) in progress.calls.iter().enumerate() {
        assert_eq!((*done, *total), (i + 1, layers), "{layer}");
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn default_params_are_w4a16_g128_round_to_nearest() {
    let params = lowbit_quantize_default_params();
    assert_eq!(params.struct_size, size_of::<lowbit_quantize_params>());
    // SAFETY: the defaults hold static NUL-terminated strings.
    let (scheme, method) =
        unsafe { (CStr::from_ptr(params.scheme), CStr::from_ptr(params.method)) };
    assert_eq!(scheme.to_str().unwrap(), "w4a16-g128");
    assert_eq!(method.to_str().unwrap(), "rtn");
    assert!(!params.mse_clip);
    assert!(params.overrides.is_null());
    assert_eq!(params.n_overrides, 0);
    assert!(params.progress.is_none());
    assert!(params.user_data.is_null());
}

#[test]
fn quantized_synthetic_models_load_and_stay_close_to_the_originals() {
    let dir = scratch("close");
    for variant in Variant::ALL {
        let source = synthetic::write(variant, SEED, &dir).unwrap();
        let out = dir.join(format!("{}-w4a16-g128", variant.name()));
        let mut progress = Progress::default();
        let status = quantize(
            &source,
            &out,
            lowbit_quantize_default_params(),
            &mut progress,
        );
        assert_eq!(status, LOWBIT_OK, "{}: {}", variant.name(), last_error());
        assert_eq!(last_error(), "");

        // Every decoder-block linear, in order, and nothing else (the head stays float).
        let layers = variant.config().num_hidden_layers * LINEARS_PER_BLOCK;
        assert_complete_progress(&progress, layers);
        assert_eq!(progress.calls[0].2, "model.layers.0.self_attn.q_proj");
        assert_eq!(progress.calls[layers - 1].2, "model.layers.1.mlp.down_proj");
        assert!(progress
            .calls
            .iter()
            .all(|(_, _, l)| l.starts_with("model.layers.")));

        let original = load(&source);
        let quantized = load(&out);
        let control_dir = dir.join("control");
        let unrelated = load(&synthetic::write(variant, SEED + 1, &control_dir).unwrap());
        assert!(weight_bytes(&quantized) < weight_bytes(&original));
        // The defaults mean what they say: the Rust API with w4a16-g128 RTN gives the same
        // logits.
        let mut reference = Model::load(&source).unwrap();
        let rules = QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap());
        quantize_model(&mut reference, &rules, &RtnOptions::default()).unwrap();
        for ids in SEQUENCES {
            let before = logits(&original, ids);
            let after = logits(&quantized, ids);
            assert!(after.iter().all(|x| x.is_finite()), "{}", variant.name());
            let spread = before.iter().copied().fold(f32::MIN, f32::max)
                - before.iter().copied().fold(f32::MAX, f32::min);
            let diff = max_abs_diff(&before, &after);
            let control = max_abs_diff(&before, &logits(&unrelated, ids));
            eprintln!(
                "{} {ids:?}: max |diff| {:.1}% of the spread, other weights {:.1}%",
                variant.name(),
                100.0 * diff / spread,
                100.0 * control / spread
            );
            assert!(
                control > LOGIT_TOLERANCE_OF_SPREAD * spread,
                "{} {ids:?}: the bound does not tell other weights apart ({control})",
                variant.name()
            );
            assert!(
                diff > 0.0,
                "{}: quantization changed nothing",
                variant.name()
            );
            assert!(
                diff < LOGIT_TOLERANCE_OF_SPREAD * spread,
                "{} {ids:?}: max |diff| {diff} vs spread {spread}",
                variant.name()
            );
            let expected = reference.forward(ids, &mut reference.new_cache()).unwrap();
            assert_eq!(after, expected, "{}", variant.name());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn method_mse_clip_and_overrides_reach_the_rust_api() {
    let dir = scratch("settings");
    let source = synthetic::write(Variant::Qwen3, SEED, &dir).unwrap();
    let out = dir.join("out");
    let overrides_text = ["*.down_proj=w8a16", "model.layers.0.*=skip", "lm_head=nf4"];
    let overrides: Vec<CString> = overrides_text.iter().map(|o| c(o)).collect();
    let pointers: Vec<*const c_char> = overrides.iter().map(|o| o.as_ptr()).collect();
    let scheme = c("W4A16-G32-ASYM");
    let method = c("rtn");
    let params = lowbit_quantize_params {
        scheme: scheme.as_ptr(),
        method: method.as_ptr(),
        mse_clip: true,
        overrides: pointers.as_ptr(),
        n_overrides: pointers.len(),
        ..lowbit_quantize_default_params()
    };
    let mut progress = Progress::default();
    let status = quantize(&source, &out, params, &mut progress);
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    // Layer 0 is skipped; layer 1's seven linears and the head are quantized.
    assert_complete_progress(&progress, LINEARS_PER_BLOCK + 1);
    assert_eq!(progress.calls.last().unwrap().2, "lm_head");

    let loaded = Model::load(&out).unwrap();
    let blocks = loaded.blocks();
    let parse = |name: &str| QuantScheme::parse(name).unwrap();
    assert!(blocks[0].q_proj.weight.scheme().is_none());
    assert!(blocks[0].down_proj.weight.scheme().is_none());
    assert_eq!(
        blocks[1].q_proj.weight.scheme(),
        Some(&parse("w4a16-g32-asym"))
    );
    assert_eq!(blocks[1].down_proj.weight.scheme(), Some(&parse("w8a16")));
    assert_eq!(loaded.lm_head().weight.scheme(), Some(&parse("nf4")));

    let mut rules = QuantRules::new(parse("w4a16-g32-asym"));
    for o in overrides_text {
        rules.push_override(o).unwrap();
    }
    let mut reference = Model::load(&source).unwrap();
    quantize_model(&mut reference, &rules, &RtnOptions { mse_clip: true }).unwrap();
    let handle = load(&out);
    for ids in SEQUENCES {
        let expected = reference.forward(ids, &mut reference.new_cache()).unwrap();
        assert_eq!(logits(&handle, ids), expected);
    }

    // A NULL method is round-to-nearest too.
    let plain = dir.join("plain");
    let params = lowbit_quantize_params {
        method: null(),
        ..lowbit_quantize_default_params()
    };
    assert_eq!(
        quantize(&source, &plain, params, &mut Progress::default()),
        LOWBIT_OK,
        "{}",
        last_error()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn returning_false_from_progress_cancels_and_writes_nothing() {
    let dir = scratch("cancel");
    let source = synthetic::write(Variant::LlamaGqa, SEED, &dir).unwrap();
    let out = dir.join("out");
    let mut progress = Progress {
        cancel_at: Some(3),
        ..Progress::default()
    };
    let status = quantize(
        &source,
        &out,
        lowbit_quantize_default_params(),
        &mut progress,
    );
    assert_eq!(status, LOWBIT_ERR_CANCELLED);
    let message = last_error();
    assert!(message.contains("cancelled"), "{message}");
    assert!(
        message.contains("model.layers.0.self_attn.v_proj (3 of 14 layers)"),
        "{message}"
    );
    assert_eq!(progress.calls.len(), 3, "no call after cancelling");
    assert!(!out.exists(), "a cancelled call writes nothing");

    // An existing out_dir is left as it was.
    std::fs::create_dir_all(&out).unwrap();
    let mut progress = Progress {
        cancel_at: Some(1),
        ..Progress::default()
    };
    let status = quantize(
        &source,
        &out,
        lowbit_quantize_default_params(),
        &mut progress,
    );
    assert_eq!(status, LOWBIT_ERR_CANCELLED);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_arguments_are_errors_with_messages() {
    let dir = scratch("bad");
    let source = synthetic::write(Variant::LlamaGqa, SEED, &dir).unwrap();
    let out = dir.join("out");
    let (source_c, out_c) = (c_path(&source), c_path(&out));
    let defaults = lowbit_quantize_default_params();

    // NULL and empty arguments.
    // SAFETY: valid or NULL strings and params, on purpose.
    unsafe {
        assert_eq!(
            lowbit_quantize(null(), out_c.as_ptr(), &defaults),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "model_path is NULL");
        assert_eq!(
            lowbit_quantize(source_c.as_ptr(), null(), &defaults),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "out_dir is NULL");
        assert_eq!(
            lowbit_quantize(source_c.as_ptr(), out_c.as_ptr(), null()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            last_error(),
            "params is NULL; start from lowbit_quantize_default_params()"
        );
        let empty = c("");
        assert_eq!(
            lowbit_quantize(empty.as_ptr(), out_c.as_ptr(), &defaults),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "model_path is empty");
        assert_eq!(
            lowbit_quantize(source_c.as_ptr(), empty.as_ptr(), &defaults),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "out_dir is empty");
        let invalid = CString::new(b"tests/\xff\xfe".to_vec()).unwrap();
        assert_eq!(
            lowbit_quantize(invalid.as_ptr(), out_c.as_ptr(), &defaults),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("model_path is not valid UTF-8"),
            "{}",
            last_error()
        );
    }

    // Bad settings, each with its status and a message naming the culprit.
    let bad_scheme = c("w3a16");
    let gptq = c("gptq");
    let magic = c("magic");
    let nothing = c("nothing");
    let not_utf8 = CString::new(b"\xff=skip".to_vec()).unwrap();
    let good = c("lm_head=w8a16");
    let with_nothing = [good.as_ptr(), nothing.as_ptr()];
    let with_null = [good.as_ptr(), null()];
    let with_not_utf8 = [not_utf8.as_ptr()];
    let cases: Vec<(lowbit_quantize_params, lowbit_status, &str)> = vec![
        (
            lowbit_quantize_params {
                struct_size: 0,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->struct_size is 0",
        ),
        (
            lowbit_quantize_params {
                struct_size: size_of::<lowbit_quantize_params>() + 8,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "sizeof(lowbit_quantize_params)",
        ),
        (
            lowbit_quantize_params {
                scheme: null(),
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->scheme is NULL",
        ),
        (
            lowbit_quantize_params {
                scheme: bad_scheme.as_ptr(),
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "unknown quantization scheme 'w3a16'",
        ),
        (
            lowbit_quantize_params {
                method: magic.as_ptr(),
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->method 'magic' is not available (this library implements: rtn, gptq, awq",
        ),
        (
            lowbit_quantize_params {
                method: gptq.as_ptr(),
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->method 'gptq' needs calibration text",
        ),
        (
            lowbit_quantize_params {
                overrides: with_nothing.as_ptr(),
                n_overrides: 2,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->overrides[1]: invalid argument: layer override 'nothing': expected \
             PATTERN=SCHEME or PATTERN=skip",
        ),
        (
            lowbit_quantize_params {
                overrides: with_null.as_ptr(),
                n_overrides: 2,
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->overrides[1] is NULL",
        ),
        (
            lowbit_quantize_params {
                overrides: null(),
                n_overrides: 1,
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->overrides is NULL",
        ),
        (
            lowbit_quantize_params {
                overrides: with_not_utf8.as_ptr(),
                n_overrides: 1,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->overrides[0] is not valid UTF-8",
        ),
    ];
    for (params, status, message) in cases {
        let mut progress = Progress::default();
        assert_eq!(
            quantize(&source, &out, params, &mut progress),
            status,
            "{message}"
        );
        assert!(
            last_error().contains(message),
            "{} / {message}",
            last_error()
        );
        assert!(
            progress.calls.is_empty(),
            "settings are checked before any work"
        );
        assert!(!out.exists());
    }

    // Files: a missing model, out_dir the model's own directory or a file, a quantized model.
    let missing = dir.join("no-such-model");
    let status = quantize(&missing, &out, defaults, &mut Progress::default());
    assert_eq!(status, LOWBIT_ERR_IO);
    assert!(
        last_error().contains(missing.to_str().unwrap()),
        "{}",
        last_error()
    );
    let status = quantize(&source, &source, defaults, &mut Progress::default());
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("is the directory the model is read from"),
        "{}",
        last_error()
    );
    let weights_file = source.join("model.safetensors");
    let status = quantize(&weights_file, &source, defaults, &mut Progress::default());
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT, "{}", last_error());
    let status = quantize(&source, &weights_file, defaults, &mut Progress::default());
    assert_eq!(status, LOWBIT_ERR_IO);
    assert!(last_error().contains("not a directory"), "{}", last_error());
    assert!(Model::load(&source).is_ok(), "the source is intact");

    assert_eq!(
        quantize(&source, &out, defaults, &mut Progress::default()),
        LOWBIT_OK
    );
    let twice = dir.join("twice");
    let status = quantize(&out, &twice, defaults, &mut Progress::default());
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("already quantized"),
        "{}",
        last_error()
    );
    assert!(!twice.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Collects streamed text.
unsafe extern "C" fn collect(piece: *const c_char, user_data: *mut c_void) -> bool {
    // SAFETY: user_data is the &mut String passed to lowbit_generate below.
    let text = unsafe { &mut *user_data.cast::<String>() };
    // SAFETY: lowbit passes a NUL-terminated piece valid during the call.
    text.push_str(unsafe { CStr::from_ptr(piece) }.to_str().unwrap());
    true
}

#[test]
fn quantized_default_model_generates_what_the_rust_api_generates() {
    let source = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    let dir = scratch("default-model");
    let out = dir.join("w4a16-g128");
    let mut progress = Progress::default();
    let status = quantize(
        &source,
        &out,
        lowbit_quantize_default_params(),
        &mut progress,
    );
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let base = Model::load(&source).unwrap();
    assert_complete_progress(
        &progress,
        base.config().num_hidden_layers * LINEARS_PER_BLOCK,
    );

    let model = load(&out);
    let params = lowbit_generate_params {
        max_new_tokens: 16,
        temperature: 0.0,
        ..lowbit_generate_default_params()
    };
    let prompt = c(PROMPT);
    let mut streamed = String::new();
    let mut text = null_mut();
    // SAFETY: valid handle, prompt, params, callback with its user data, and out-pointer.
    let status = unsafe {
        lowbit_generate(
            model.0,
            prompt.as_ptr(),
            &params,
            Some(collect),
            (&mut streamed as *mut String).cast(),
            &mut text,
        )
    };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    // SAFETY: an owned NUL-terminated string from lowbit, freed once right after.
    let generated = unsafe { CStr::from_ptr(text) }
        .to_str()
        .unwrap()
        .to_string();
    // SAFETY: as above.
    unsafe { lowbit_string_free(text) };
    eprintln!("quantized default model: {PROMPT}{generated}");
    assert!(!generated.trim().is_empty());
    assert_eq!(streamed, generated);

    // The same text from the Rust API quantizing in memory.
    let mut reference = base;
    let rules = QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap());
    quantize_model(&mut reference, &rules, &RtnOptions::default()).unwrap();
    let tokenizer = reference.require_tokenizer().unwrap();
    let ids = tokenizer.encode(PROMPT, true).unwrap();
    let rust_params = GenerateParams {
        max_new_tokens: 16,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    let tokens = &reference
        .generate(&[ids], &rust_params, |_, _| true)
        .unwrap()[0]
        .tokens;
    assert_eq!(generated, tokenizer.decode(tokens, true).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}
