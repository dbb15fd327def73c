//! The C ABI's operations on a loaded model, called as a C program would (through
//! `lowbit::ffi`), on a small synthetic Llama with a byte-level tokenizer, each compared with
//! the Rust API: quantizing in memory (RTN and GPTQ with calibration text), saving and loading
//! the result, scoring continuations, perplexity, benchmarking, load settings, and the older
//! layout of `lowbit_quantize_params`.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use lowbit::eval::tasks::encode_pair;
use lowbit::eval::Scorer;
use lowbit::ffi::lowbit_status::*;
use lowbit::ffi::*;
use lowbit::model::Model;
use lowbit::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use lowbit::quant::{GptqOptions, QuantRules, QuantScheme};

/// Logits of the C API and of the Rust API for the same weights come from the same kernels;
/// the only difference allowed is none.
const SAME_KERNELS_TOLERANCE: f32 = 0.0;

struct Handle(*mut lowbit_model);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle from lowbit_model_load*, freed once here.
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
    // SAFETY: lowbit_last_error returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(lowbit_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn load(path: &Path) -> Handle {
    let mut handle = null_mut();
    // SAFETY: valid path and out-pointer.
    let status = unsafe { lowbit_model_load(c_path(path).as_ptr(), &mut handle) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    Handle(handle)
}

/// Last-position logits through the C API.
fn c_logits(model: &Handle, ids: &[u32]) -> Vec<f32> {
    let mut n = 0;
    // SAFETY: valid handle; capacity 0 queries the size.
    let _ = unsafe { lowbit_logits(model.0, ids.as_ptr(), ids.len(), null_mut(), 0, &mut n) };
    let mut logits = vec![0.0f32; n];
    // SAFETY: `logits` holds `n` floats.
    let status = unsafe {
        lowbit_logits(
            model.0,
            ids.as_ptr(),
            ids.len(),
            logits.as_mut_ptr(),
            n,
            &mut n,
        )
    };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    logits
}

fn rust_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    model.forward(ids, &mut model.new_cache()).unwrap()
}

fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= SAME_KERNELS_TOLERANCE,
        "{what}: logits differ by {worst}"
    );
}

/// A calibration text file in its own folder.
fn calibration_file(name: &str) -> PathBuf {
    let dir = common::scratch_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("calibration.txt");
    let text: String = (0..24)
        .map(|i| {
            format!(
                "Paragraph {i}: the quick brown fox {} jumps over the lazy dog.\n\n",
                i * 7
            )
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

const PROBE: [u32; 6] = [72, 101, 108, 108, 111, 33];

#[test]
fn gptq_in_memory_equals_the_rust_pipeline_and_survives_save_and_load() {
    let dir = common::tiny_model_dir("ops-gptq-model");
    let calibration = calibration_file("ops-gptq-calibration");
    let model = load(&dir);

    let scheme = c("w4a16-g32");
    let method = c("gptq");
    let files = [c_path(&calibration)];
    let file_ptrs: Vec<*const c_char> = files.iter().map(|f| f.as_ptr()).collect();
    let params = lowbit_quantize_params {
        scheme: scheme.as_ptr(),
        method: method.as_ptr(),
        calibration_files: file_ptrs.as_ptr(),
        n_calibration_files: 1,
        calibration_samples: 8,
        calibration_seq_len: 32,
        seed: 3,
        act_order: true,
        ..lowbit_quantize_default_params()
    };
    // SAFETY: valid handle and params whose pointers outlive the call.
    let status = unsafe { lowbit_model_quantize(model.0, &params) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());

    let mut rust = Model::load(&dir).unwrap();
    let rules = QuantRules::new(QuantScheme::parse("w4a16-g32").unwrap());
    let set = CalibrationSet::from_sources(
        rust.require_tokenizer().unwrap(),
        &[CalibrationSource {
            path: calibration.clone(),
            weight: 1.0,
        }],
        8,
        32,
        3,
    )
    .unwrap();
    let method = Method::Gptq(GptqOptions {
        act_order: true,
        ..GptqOptions::default()
    });
    quantize_sequential(&mut rust, &set, &rules, &method, &mut |_, _, _| true).unwrap();
    let expected = rust_logits(&rust, &PROBE);
    assert_same(&c_logits(&model, &PROBE), &expected, "GPTQ in memory");

    let saved = common::scratch_dir("ops-gptq-saved");
    // SAFETY: valid handle and path.
    let status = unsafe { lowbit_model_save(model.0, c_path(&saved).as_ptr()) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let config = std::fs::read_to_string(saved.join("config.json")).unwrap();
    assert!(config.contains("\"method\": \"gptq\"") || config.contains("\"method\":\"gptq\""));
    let reloaded = load(&saved);
    assert_same(
        &c_logits(&reloaded, &PROBE),
        &expected,
        "GPTQ saved and loaded",
    );
    for path in [dir, saved, calibration.parent().unwrap().to_path_buf()] {
        let _ = std::fs::remove_dir_all(path);
    }
}

#[test]
fn the_first_layout_of_quantize_params_is_read_without_the_calibration_fields() {
    let dir = common::tiny_model_dir("ops-layout-model");
    let model = load(&dir);
    let gptq = c("gptq");
    let bogus = [null::<c_char>(); 1];
    let params = lowbit_quantize_params {
        // A caller built against the first layout: the calibration fields are not its own.
        struct_size: offset_of!(lowbit_quantize_params, calibration_files),
        method: gptq.as_ptr(),
        calibration_files: bogus.as_ptr(),
        n_calibration_files: 1,
        ..lowbit_quantize_default_params()
    };
    // SAFETY: valid handle; the struct is larger than its struct_size says.
    let status = unsafe { lowbit_model_quantize(model.0, &params) };
    // The fields past struct_size keep their defaults (no files), so GPTQ lacks calibration
    // text; had they been read, the NULL file would be reported instead.
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("needs calibration text"),
        "{}",
        last_error()
    );

    let rtn = lowbit_quantize_params {
        struct_size: offset_of!(lowbit_quantize_params, calibration_files),
        scheme: c("w8a16").into_raw(),
        ..lowbit_quantize_default_params()
    };
    // SAFETY: as above.
    let status = unsafe { lowbit_model_quantize(model.0, &rtn) };
    // SAFETY: reclaims the string leaked into the struct above.
    drop(unsafe { CString::from_raw(rtn.scheme as *mut c_char) });
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn scores_and_perplexity_equal_the_rust_api() {
    let dir = common::tiny_model_dir("ops-score-model");
    let model = load(&dir);
    let rust = Model::load(&dir).unwrap();
    let scorer = Scorer::new(&rust);

    let context = "The answer is ";
    let choices = ["yes", "no", "maybe so"];
    let c_choices: Vec<CString> = choices.iter().map(|s| c(s)).collect();
    let pointers: Vec<*const c_char> = c_choices.iter().map(|s| s.as_ptr()).collect();
    let mut logprobs = [0.0f64; 3];
    let mut greedy = [true; 3];
    // SAFETY: arrays of three.
    let status = unsafe {
        lowbit_score_continuations(
            model.0,
            c(context).as_ptr(),
            pointers.as_ptr(),
            3,
            logprobs.as_mut_ptr(),
            greedy.as_mut_ptr(),
        )
    };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let requests: Vec<_> = choices
        .iter()
        .map(|choice| encode_pair(&scorer, context, choice).unwrap())
        .collect();
    let expected = scorer.loglikelihood(&requests, &mut |_, _| {}).unwrap();
    for i in 0..3 {
        assert_eq!(logprobs[i], expected[i].logprob, "choice {i}");
        assert_eq!(greedy[i], expected[i].is_greedy, "choice {i}");
        assert!(logprobs[i] < 0.0);
    }

    let text = "a short text, to be measured twice";
    let mut result = lowbit_perplexity_result {
        struct_size: size_of::<lowbit_perplexity_result>(),
        token_perplexity: 0.0,
        word_perplexity: 0.0,
        byte_perplexity: 0.0,
        loglikelihood: 0.0,
        tokens: 0,
        words: 0,
        bytes: 0,
    };
    // SAFETY: valid handle, text and result.
    let status = unsafe { lowbit_perplexity(model.0, c(text).as_ptr(), 0, &mut result) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let tokens = rust
        .require_tokenizer()
        .unwrap()
        .encode(text, true)
        .unwrap();
    let ll = scorer.rolling_loglikelihood(&tokens).unwrap();
    assert_eq!(result.loglikelihood, ll);
    assert_eq!(result.tokens, tokens.len());
    assert_eq!((result.words, result.bytes), (7, text.len()));
    assert_eq!(result.token_perplexity, (-ll / tokens.len() as f64).exp());
    assert_eq!(result.word_perplexity, (-ll / 7.0).exp());

    // A shorter window scores the later tokens with less context: a different number.
    // SAFETY: as above.
    let status = unsafe { lowbit_perplexity(model.0, c(text).as_ptr(), 4, &mut result) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    assert_ne!(result.loglikelihood, ll);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_and_load_settings() {
    let dir = common::tiny_model_dir("ops-bench-model");
    let mut handle = null_mut();
    let bf16 = c("bf16");
    let params = lowbit_load_params {
        dtype: bf16.as_ptr(),
        ..lowbit_load_default_params()
    };
    // SAFETY: valid path, params and out-pointer.
    let status =
        unsafe { lowbit_model_load_with_params(c_path(&dir).as_ptr(), &params, &mut handle) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let model = Handle(handle);
    let f32_model = load(&dir);

    let info = |m: &Handle| {
        let mut info = std::mem::MaybeUninit::<lowbit_model_info>::zeroed();
        // SAFETY: zeroed struct with struct_size set.
        unsafe { (*info.as_mut_ptr()).struct_size = size_of::<lowbit_model_info>() };
        // SAFETY: valid handle and struct.
        assert_eq!(
            unsafe { lowbit_model_get_info(m.0, info.as_mut_ptr()) },
            LOWBIT_OK
        );
        // SAFETY: filled in by the call.
        unsafe { info.assume_init() }
    };
    assert!(info(&model).weight_bytes < info(&f32_model).weight_bytes);

    let bench = lowbit_bench_params {
        prompt_tokens: 8,
        decode_tokens: 3,
        ..lowbit_bench_default_params()
    };
    // SAFETY: a zeroed result is a valid value of this plain struct.
    let mut result: lowbit_bench_result = unsafe { std::mem::zeroed() };
    result.struct_size = size_of::<lowbit_bench_result>();
    // SAFETY: valid handle, params and result.
    let status = unsafe { lowbit_bench(f32_model.0, &bench, &mut result) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    assert_eq!((result.prompt_tokens, result.decode_tokens), (8, 3));
    // The weight files only: config.json and the tokenizer files are not counted.
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(result.checkpoint_bytes, on_disk);
    assert_eq!(result.weight_bytes, info(&f32_model).weight_bytes);
    assert!(result.time_to_first_token_s > 0.0 && result.decode_tokens_per_s > 0.0);
    assert!(result.prefill_tokens_per_s > 0.0 && result.kv_cache_bytes > 0);
    if cfg!(target_os = "linux") {
        assert!(result.peak_memory_bytes >= result.memory_bytes && result.memory_bytes > 0);
    }
    let too_long = lowbit_bench_params {
        prompt_tokens: 1 << 30,
        ..bench
    };
    // SAFETY: as above.
    let status = unsafe { lowbit_bench(f32_model.0, &too_long, &mut result) };
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("exceed the model's context"),
        "{}",
        last_error()
    );
    let _ = std::fs::remove_dir_all(dir);
}
