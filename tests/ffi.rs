//! The C ABI called directly from Rust, mostly with the misuse a C caller can commit: NULL
//! handles and out-pointers, invalid UTF-8, wrong `struct_size`, small buffers, missing and
//! corrupt files, models without a tokenizer, a callback that stops generation, and sharing
//! one model between threads. The synthetic checkpoints (tests/fixtures/synthetic, no
//! tokenizer) cover the numeric paths; the default model covers text.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use lowbit::ffi::lowbit_status::*;
use lowbit::ffi::*;
use lowbit::model::{GenerateParams, Model};

const SYNTHETIC: [&str; 4] = ["llama_gqa", "llama_tied", "qwen2", "qwen3"];
const PROMPT: &str = "The capital of France is";

/// A model handle that is freed on drop. lowbit documents models as shareable between threads.
struct Handle(*mut lowbit_model);

// SAFETY: lowbit_model is immutable after loading and documented as usable from several
// threads at once; only lowbit_model_free (in Drop, with exclusive access) must not overlap.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from lowbit_model_load and is freed only here.
        unsafe { lowbit_model_free(self.0) };
    }
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

fn last_error() -> String {
    // SAFETY: lowbit_last_error never returns NULL and the string is read before the next call.
    unsafe { CStr::from_ptr(lowbit_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

fn synthetic_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/synthetic")
        .join(name)
}

fn load(path: &Path) -> Handle {
    let path = c(path.to_str().unwrap());
    let mut model = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut model) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    assert!(!model.is_null());
    Handle(model)
}

/// The default model, loaded once through the C API (path from lowbit_default_model_path).
fn default_model() -> &'static Handle {
    static MODEL: OnceLock<Handle> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut path = null_mut();
        // SAFETY: valid out-pointer.
        let status = unsafe { lowbit_default_model_path(&mut path) };
        assert_eq!(status, LOWBIT_OK, "{}", last_error());
        // SAFETY: lowbit returned an owned NUL-terminated string.
        let text = unsafe { CStr::from_ptr(path) }
            .to_str()
            .unwrap()
            .to_string();
        // SAFETY: freed once, as documented.
        unsafe { lowbit_string_free(path) };
        load(Path::new(&text))
    })
}

fn rust_default_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load(lowbit::checkpoint::default_model::ensure().unwrap()).unwrap())
}

fn greedy(max_new_tokens: usize) -> lowbit_generate_params {
    lowbit_generate_params {
        max_new_tokens,
        temperature: 0.0,
        ..lowbit_generate_default_params()
    }
}

/// Collects streamed pieces; asks to stop once `stop_after` pieces arrived.
struct Collector {
    pieces: Vec<String>,
    stop_after: usize,
}

unsafe extern "C" fn collect(piece: *const c_char, user_data: *mut c_void) -> bool {
    // SAFETY: user_data is the &mut Collector passed to lowbit_generate by `generate` below.
    let collector = unsafe { &mut *user_data.cast::<Collector>() };
    // SAFETY: lowbit passes a NUL-terminated piece valid during the call.
    let piece = unsafe { CStr::from_ptr(piece) };
    collector.pieces.push(piece.to_str().unwrap().to_string());
    collector.pieces.len() < collector.stop_after
}

/// Runs lowbit_generate with the collecting callback; returns the status, the pieces and the
/// returned text.
fn generate(
    model: &Handle,
    prompt: &CStr,
    params: *const lowbit_generate_params,
    stop_after: usize,
) -> (lowbit_status, Vec<String>, Option<String>) {
    let mut collector = Collector {
        pieces: Vec::new(),
        stop_after,
    };
    let mut text = null_mut();
    // SAFETY: valid handle, string, params (or NULL), callback with its user data, out-pointer.
    let status = unsafe {
        lowbit_generate(
            model.0,
            prompt.as_ptr(),
            params,
            Some(collect),
            (&mut collector as *mut Collector).cast(),
            &mut text,
        )
    };
    let text = (!text.is_null()).then(|| {
        // SAFETY: an owned NUL-terminated string from lowbit, freed once right after.
        let owned = unsafe { CStr::from_ptr(text) }
            .to_str()
            .unwrap()
            .to_string();
        // SAFETY: as above.
        unsafe { lowbit_string_free(text) };
        owned
    });
    (status, collector.pieces, text)
}

#[test]
fn null_model_handles_are_reported() {
    let text = c("hi");
    let ids = [1u32, 2];
    let mut count = 0usize;
    let mut buffer = [0u8; 8];
    let mut info = lowbit_model_info {
        struct_size: size_of::<lowbit_model_info>(),
        architecture: null(),
        vocab_size: 0,
        hidden_size: 0,
        intermediate_size: 0,
        num_layers: 0,
        num_attention_heads: 0,
        num_key_value_heads: 0,
        head_dim: 0,
        max_position_embeddings: 0,
        parameter_count: 0,
        weight_bytes: 0,
        has_tokenizer: false,
    };
    let mut out_text = null_mut();
    // SAFETY: every pointer but the model is valid; the model is NULL on purpose.
    let statuses = unsafe {
        [
            lowbit_model_vocab_size(null(), &mut count),
            lowbit_model_get_info(null(), &mut info),
            lowbit_tokenize(null(), text.as_ptr(), true, null_mut(), 0, &mut count),
            lowbit_detokenize(
                null(),
                ids.as_ptr(),
                2,
                true,
                buffer.as_mut_ptr().cast(),
                8,
                &mut count,
            ),
            lowbit_generate(
                null(),
                text.as_ptr(),
                null(),
                None,
                null_mut(),
                &mut out_text,
            ),
            lowbit_logits(null(), ids.as_ptr(), 2, null_mut(), 0, &mut count),
        ]
    };
    for status in statuses {
        assert_eq!(status, LOWBIT_ERR_NULL_POINTER);
    }
    assert_eq!(last_error(), "model is NULL");
    assert!(out_text.is_null());
    // Freeing NULL is allowed and leaves the last error alone.
    // SAFETY: NULL is documented as accepted.
    unsafe {
        lowbit_model_free(null_mut());
        lowbit_string_free(null_mut());
    }
    assert_eq!(last_error(), "model is NULL");
}

#[test]
fn null_out_pointers_and_buffers_are_reported() {
    let model = load(&synthetic_dir("llama_gqa"));
    let path = c(synthetic_dir("llama_gqa").to_str().unwrap());
    let ids = [1u32, 2, 3];
    let mut count = 0usize;
    let mut loaded = std::ptr::NonNull::<lowbit_model>::dangling().as_ptr();
    // SAFETY: pointers are valid or NULL on purpose; lowbit must not write through NULL.
    unsafe {
        assert_eq!(
            lowbit_model_load(path.as_ptr(), null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "out is NULL");
        assert_eq!(
            lowbit_model_load(null(), &mut loaded),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "path is NULL");
        assert!(loaded.is_null(), "*out is reset on failure");
        assert_eq!(
            lowbit_default_model_path(null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_model_vocab_size(model.0, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_model_get_info(model.0, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_tokenize(model.0, null(), true, null_mut(), 0, &mut count),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "text is NULL");
        let text = c("hi");
        assert_eq!(
            lowbit_tokenize(model.0, text.as_ptr(), true, null_mut(), 0, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_tokenize(model.0, text.as_ptr(), true, null_mut(), 4, &mut count),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "ids is NULL");
        assert_eq!(
            lowbit_detokenize(model.0, null(), 3, true, null_mut(), 0, &mut count),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_detokenize(model.0, ids.as_ptr(), 3, true, null_mut(), 0, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_generate(model.0, null(), null(), None, null_mut(), null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "prompt is NULL");
        assert_eq!(
            lowbit_logits(model.0, ids.as_ptr(), 3, null_mut(), 0, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            lowbit_logits(model.0, ids.as_ptr(), 3, null_mut(), 1 << 20, &mut count),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "logits is NULL");
        let mut logits = vec![0f32; 256];
        assert_eq!(
            lowbit_logits(model.0, null(), 3, logits.as_mut_ptr(), 256, &mut count),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "ids is NULL");
    }
}

#[test]
fn invalid_utf8_and_empty_strings_are_invalid_arguments() {
    let model = load(&synthetic_dir("llama_gqa"));
    let invalid = CString::new(b"tests/\xff\xfe".to_vec()).unwrap();
    let empty = c("");
    let mut loaded = null_mut();
    let mut count = 0usize;
    // SAFETY: valid NUL-terminated strings and out-pointers.
    unsafe {
        assert_eq!(
            lowbit_model_load(invalid.as_ptr(), &mut loaded),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("path is not valid UTF-8"),
            "{}",
            last_error()
        );
        assert_eq!(
            lowbit_model_load(empty.as_ptr(), &mut loaded),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "path is empty");
        assert!(loaded.is_null());
        assert_eq!(
            lowbit_tokenize(model.0, invalid.as_ptr(), true, null_mut(), 0, &mut count),
            LOWBIT_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("text is not valid UTF-8"));
    }
    let (status, pieces, text) = generate(&model, &invalid, null(), usize::MAX);
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("prompt is not valid UTF-8"));
    assert!(pieces.is_empty() && text.is_none());
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-model/model.gguf");
    let path = c(missing.to_str().unwrap());
    let mut loaded = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut loaded) };
    assert_eq!(status, LOWBIT_ERR_IO);
    assert!(
        last_error().contains(missing.to_str().unwrap()),
        "{}",
        last_error()
    );
    assert!(loaded.is_null());
}

#[test]
fn truncated_safetensors_is_a_format_error() {
    let source = synthetic_dir("llama_gqa");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ffi-corrupt-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(source.join("config.json"), dir.join("config.json")).unwrap();
    let weights = std::fs::read(source.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let path = c(dir.to_str().unwrap());
    let mut loaded = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut loaded) };
    assert_eq!(status, LOWBIT_ERR_FORMAT, "{}", last_error());
    assert!(
        last_error().contains("model.safetensors"),
        "{}",
        last_error()
    );
    assert!(loaded.is_null());
}

#[test]
fn synthetic_checkpoints_load_but_have_no_tokenizer() {
    for name in SYNTHETIC {
        let model = load(&synthetic_dir(name));
        let text = c("hello");
        let ids = [1u32, 2];
        let mut count = usize::MAX;
        // SAFETY: valid handle, strings, buffers and out-pointers.
        unsafe {
            assert_eq!(
                lowbit_tokenize(model.0, text.as_ptr(), true, null_mut(), 0, &mut count),
                LOWBIT_ERR_TOKENIZER,
                "{name}"
            );
            assert!(last_error().contains("no tokenizer"), "{}", last_error());
            assert_eq!(
                lowbit_detokenize(model.0, ids.as_ptr(), 2, true, null_mut(), 0, &mut count),
                LOWBIT_ERR_TOKENIZER
            );
        }
        let (status, _, text) = generate(&model, &c("hello"), null(), usize::MAX);
        assert_eq!(status, LOWBIT_ERR_TOKENIZER);
        assert!(text.is_none());

        let mut info = info_of(&model);
        assert!(!info.has_tokenizer);
        let rust = Model::load(synthetic_dir(name)).unwrap();
        assert_eq!(info.vocab_size, rust.config().vocab_size);
        assert_eq!(info.num_layers, rust.config().num_hidden_layers);
        assert_eq!(info.parameter_count, rust.parameter_count() as u64);
        // SAFETY: architecture is a static NUL-terminated string.
        let architecture = unsafe { CStr::from_ptr(info.architecture) };
        assert_eq!(
            architecture.to_str().unwrap(),
            rust.config().architecture.hf_class()
        );
        info.struct_size = 0;
        // SAFETY: valid handle and struct.
        let status = unsafe { lowbit_model_get_info(model.0, &mut info) };
        assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("struct_size is 0"));
    }
}

fn info_of(model: &Handle) -> lowbit_model_info {
    let mut info = std::mem::MaybeUninit::<lowbit_model_info>::zeroed();
    // SAFETY: writing the first field of a zeroed struct.
    unsafe { (*info.as_mut_ptr()).struct_size = size_of::<lowbit_model_info>() };
    // SAFETY: valid handle, struct_size set.
    let status = unsafe { lowbit_model_get_info(model.0, info.as_mut_ptr()) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    // SAFETY: lowbit filled every field.
    unsafe { info.assume_init() }
}

fn logits(model: &Handle, ids: &[u32]) -> Result<Vec<f32>, lowbit_status> {
    let mut vocab = 0usize;
    // SAFETY: valid handle and out-pointer.
    assert_eq!(
        unsafe { lowbit_model_vocab_size(model.0, &mut vocab) },
        LOWBIT_OK
    );
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
    assert_eq!(written, vocab);
    if status == LOWBIT_OK {
        Ok(out)
    } else {
        Err(status)
    }
}

#[test]
fn logits_equal_the_rust_api_and_reject_bad_ids() {
    for name in SYNTHETIC {
        let model = load(&synthetic_dir(name));
        let rust = Model::load(synthetic_dir(name)).unwrap();
        let ids = [3u32, 17, 255, 0, 42];
        let expected = rust.forward(&ids, &mut rust.new_cache()).unwrap();
        assert_eq!(logits(&model, &ids).unwrap(), expected, "{name}");

        let vocab = rust.config().vocab_size as u32;
        assert_eq!(
            logits(&model, &[1, vocab]),
            Err(LOWBIT_ERR_INVALID_ARGUMENT)
        );
        assert!(
            last_error().contains(&format!("token id {vocab}")),
            "{}",
            last_error()
        );
        assert_eq!(logits(&model, &[]), Err(LOWBIT_ERR_INVALID_ARGUMENT));
    }
}

#[test]
fn small_buffers_report_the_needed_size() {
    let model = load(&synthetic_dir("qwen2"));
    let ids = [5u32, 6];
    let mut small = [7f32; 8];
    let mut needed = 0usize;
    // SAFETY: `small` holds 8 floats.
    let status =
        unsafe { lowbit_logits(model.0, ids.as_ptr(), 2, small.as_mut_ptr(), 8, &mut needed) };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert_eq!(needed, 256);
    assert_eq!(
        small, [7f32; 8],
        "nothing is written to a too-small logits buffer"
    );
    // SAFETY: capacity 0 with a NULL buffer is a size query.
    let status = unsafe { lowbit_logits(model.0, ids.as_ptr(), 2, null_mut(), 0, &mut needed) };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert!(last_error().contains("256"), "{}", last_error());

    let model = default_model();
    let rust = rust_default_model().require_tokenizer().unwrap();
    let text = c(PROMPT);
    let expected = rust.encode(PROMPT, true).unwrap();
    let mut n_ids = 0usize;
    // SAFETY: capacity 0 with a NULL buffer is a size query.
    let status =
        unsafe { lowbit_tokenize(model.0, text.as_ptr(), true, null_mut(), 0, &mut n_ids) };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert_eq!(n_ids, expected.len());
    let mut ids = vec![u32::MAX; n_ids];
    // SAFETY: `ids` holds n_ids ids; capacity one short.
    let status = unsafe {
        lowbit_tokenize(
            model.0,
            text.as_ptr(),
            true,
            ids.as_mut_ptr(),
            n_ids - 1,
            &mut n_ids,
        )
    };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert_eq!(
        ids[..n_ids - 1],
        expected[..n_ids - 1],
        "the first `capacity` ids are written"
    );
    assert_eq!(ids[n_ids - 1], u32::MAX);
    // SAFETY: `ids` holds n_ids ids.
    let status = unsafe {
        lowbit_tokenize(
            model.0,
            text.as_ptr(),
            true,
            ids.as_mut_ptr(),
            n_ids,
            &mut n_ids,
        )
    };
    assert_eq!(status, LOWBIT_OK);
    assert_eq!(last_error(), "", "success clears the last error");
    assert_eq!(ids, expected);

    let mut len = 0usize;
    // SAFETY: capacity 0 with a NULL buffer is a size query.
    let status = unsafe {
        lowbit_detokenize(
            model.0,
            ids.as_ptr(),
            ids.len(),
            true,
            null_mut(),
            0,
            &mut len,
        )
    };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert_eq!(len, PROMPT.len());
    let mut buffer = vec![b'#'; len + 1];
    // SAFETY: `buffer` holds len + 1 bytes; capacity `len` leaves no room for the NUL.
    let status = unsafe {
        lowbit_detokenize(
            model.0,
            ids.as_ptr(),
            ids.len(),
            true,
            buffer.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    };
    assert_eq!(status, LOWBIT_ERR_BUFFER_TOO_SMALL);
    assert!(
        buffer.iter().all(|&b| b == b'#'),
        "nothing is written to a too-small text buffer"
    );
    // SAFETY: `buffer` holds len + 1 bytes.
    let status = unsafe {
        lowbit_detokenize(
            model.0,
            ids.as_ptr(),
            ids.len(),
            true,
            buffer.as_mut_ptr().cast(),
            len + 1,
            &mut len,
        )
    };
    assert_eq!(status, LOWBIT_OK);
    assert_eq!(
        CStr::from_bytes_with_nul(&buffer)
            .unwrap()
            .to_str()
            .unwrap(),
        PROMPT
    );
}

#[test]
fn generation_streams_the_text_the_rust_api_generates() {
    let model = default_model();
    let params = greedy(16);
    let (status, pieces, text) = generate(model, &c(PROMPT), &params, usize::MAX);
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let text = text.unwrap();
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.is_empty()));

    let rust = rust_default_model();
    let tokenizer = rust.require_tokenizer().unwrap();
    let ids = tokenizer.encode(PROMPT, true).unwrap();
    let rust_params = GenerateParams {
        max_new_tokens: 16,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    let generated = rust.generate(&[ids], &rust_params, |_, _| true).unwrap();
    assert_eq!(text, tokenizer.decode(&generated[0].tokens, true).unwrap());

    // Without a callback or an output the call still runs and succeeds.
    // SAFETY: valid handle, prompt and params; callback and out_text are optional.
    let status = unsafe {
        lowbit_generate(
            model.0,
            c(PROMPT).as_ptr(),
            &params,
            None,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(status, LOWBIT_OK);
}

#[test]
fn a_callback_returning_false_stops_generation_successfully() {
    let model = default_model();
    let params = greedy(16);
    let (_, full, _) = generate(model, &c(PROMPT), &params, usize::MAX);
    let (status, pieces, text) = generate(model, &c(PROMPT), &params, 3);
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces[..], full[..3]);
    assert_eq!(text.unwrap(), pieces.concat(), "the stopping piece is kept");
}

#[test]
fn generate_params_are_checked() {
    let model = default_model();
    let prompt = c(PROMPT);
    let defaults = lowbit_generate_default_params();
    let rust = GenerateParams::default();
    assert_eq!(defaults.struct_size, size_of::<lowbit_generate_params>());
    assert_eq!(
        (
            defaults.max_new_tokens,
            defaults.temperature,
            defaults.top_k
        ),
        (rust.max_new_tokens, rust.temperature, rust.top_k)
    );
    assert_eq!(
        (defaults.top_p, defaults.seed, defaults.stop_at_eos),
        (rust.top_p, rust.seed, rust.stop_at_eos)
    );

    for struct_size in [0, 8, size_of::<lowbit_generate_params>() - 8] {
        let params = lowbit_generate_params {
            struct_size,
            ..greedy(4)
        };
        let (status, pieces, text) = generate(model, &prompt, &params, usize::MAX);
        assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains(&format!("struct_size is {struct_size}")),
            "{}",
            last_error()
        );
        assert!(pieces.is_empty() && text.is_none());
    }
    /// A caller built against a newer header with a field this library does not know.
    #[repr(C)]
    struct FromTheFuture {
        params: lowbit_generate_params,
        extra: [u64; 2],
    }
    let future = FromTheFuture {
        params: lowbit_generate_params {
            struct_size: size_of::<FromTheFuture>(),
            ..greedy(4)
        },
        extra: [0; 2],
    };
    let (status, _, _) = generate(model, &prompt, &future.params, usize::MAX);
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert_eq!(future.extra, [0; 2]);

    for bad in [
        lowbit_generate_params {
            temperature: -1.0,
            ..greedy(4)
        },
        lowbit_generate_params {
            temperature: f32::NAN,
            ..greedy(4)
        },
        lowbit_generate_params {
            top_p: 0.0,
            ..greedy(4)
        },
    ] {
        let (status, _, _) = generate(model, &prompt, &bad, usize::MAX);
        assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT, "{bad:?}");
    }
    let (status, _, _) = generate(model, &c(""), null(), usize::MAX);
    assert_eq!(
        status, LOWBIT_ERR_INVALID_ARGUMENT,
        "an empty prompt has no tokens"
    );

    // NULL params are the defaults: 64 greedy tokens at most.
    let (status, pieces, text) = generate(model, &prompt, null(), usize::MAX);
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    let (_, expected, _) = generate(model, &prompt, &defaults, usize::MAX);
    assert_eq!(pieces, expected);
    assert!(text.unwrap().starts_with(&pieces[..4].concat()));
}

#[test]
fn last_error_is_per_thread() {
    let path = c("");
    let mut loaded = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut loaded) };
    assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
    assert_eq!(last_error(), "path is empty");
    std::thread::spawn(|| assert_eq!(last_error(), ""))
        .join()
        .unwrap();
    assert_eq!(last_error(), "path is empty");
    // lowbit_version does not touch the last error; a successful status call clears it.
    // SAFETY: lowbit_version returns a static string.
    let version = unsafe { CStr::from_ptr(lowbit_version()) };
    assert_eq!(version.to_str().unwrap(), lowbit::VERSION);
    assert_eq!(last_error(), "path is empty");
    let model = load(&synthetic_dir("qwen3"));
    drop(model);
    assert_eq!(last_error(), "");
}

#[test]
fn one_model_serves_several_threads_at_once() {
    let model = load(&synthetic_dir("llama_gqa"));
    let inputs: Vec<Vec<u32>> = (0..4u32)
        .map(|t| (0..8).map(|i| (t * 37 + i * 11) % 256).collect())
        .collect();
    let sequential: Vec<Vec<f32>> = inputs
        .iter()
        .map(|ids| logits(&model, ids).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (ids, expected) in inputs.iter().zip(&sequential) {
            let model = &model;
            scope.spawn(move || {
                for _ in 0..5 {
                    assert_eq!(&logits(model, ids).unwrap(), expected);
                }
            });
        }
    });

    let model = default_model();
    let params = greedy(8);
    let prompts = ["The capital of France is", "Once upon a time"];
    let alone: Vec<_> = prompts
        .iter()
        .map(|p| generate(model, &c(p), &params, usize::MAX).2.unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (prompt, expected) in prompts.iter().zip(&alone) {
            let params = &params;
            scope.spawn(move || {
                let (status, _, text) = generate(model, &c(prompt), params, usize::MAX);
                assert_eq!(status, LOWBIT_OK);
                assert_eq!(&text.unwrap(), expected);
            });
        }
    });
}

#[test]
fn model_info_describes_the_default_model() {
    let info = info_of(default_model());
    let rust = rust_default_model();
    assert!(info.has_tokenizer);
    assert_eq!(info.struct_size, size_of::<lowbit_model_info>());
    assert_eq!(
        (info.num_layers, info.hidden_size, info.vocab_size),
        (30, 576, 49152)
    );
    assert_eq!(info.num_attention_heads, rust.config().num_attention_heads);
    assert_eq!(info.num_key_value_heads, rust.config().num_key_value_heads);
    assert_eq!(info.head_dim, rust.config().head_dim);
    assert_eq!(info.intermediate_size, rust.config().intermediate_size);
    assert_eq!(
        info.max_position_embeddings,
        rust.config().max_position_embeddings
    );
    assert_eq!(info.parameter_count, rust.parameter_count() as u64);
    assert_eq!(info.weight_bytes, rust.weight_bytes() as u64);
    // SAFETY: architecture is a static NUL-terminated string.
    let architecture = unsafe { CStr::from_ptr(info.architecture) };
    assert_eq!(architecture.to_str().unwrap(), "LlamaForCausalLM");
}
