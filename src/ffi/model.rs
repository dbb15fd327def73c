//! Library identity and the model handle: version, last error, load/free, strings, model facts.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::live;
use super::marshal::{c_str, model_ref, require, to_c_string, write_if_some, write_out};
use super::status::{guard, guard_value, last_error_ptr, lowbit_status, set_last_error, Failure};
use crate::backend::SharedDecoder;
use crate::checkpoint::default_model;
use crate::model::{Decoder, Model};
use crate::quant::QuantRules;

/// The library's version, `"MAJOR.MINOR.PATCH"`, as a static string (never freed). Compare it
/// with `LOWBIT_VERSION` to check that the header matches the library loaded at run time.
/// Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn lowbit_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(version) => version,
        Err(_) => panic!("CARGO_PKG_VERSION contains a NUL byte"),
    };
    guard_value(VERSION.as_ptr(), || VERSION.as_ptr())
}

/// The message of the last failed lowbit call on the calling thread, or `""` when the last
/// status-returning call succeeded (or none was made). Never NULL.
///
/// The string belongs to lowbit (do not free it) and stays valid until the next lowbit call on
/// the same thread; copy it to keep it. Calls on other threads do not affect it. Functions that
/// return no status (`lowbit_version`, `lowbit_*_free`, `lowbit_*_default_params`,
/// `lowbit_last_error`) leave it unchanged, so a message survives freeing resources after a
/// failure; only a free function given a pointer that is not live sets it.
#[no_mangle]
pub extern "C" fn lowbit_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), last_error_ptr)
}

/// A loaded model: configuration, weights, and the tokenizer when the checkpoint carries one.
/// Created by `lowbit_model_load`, destroyed by `lowbit_model_free`.
///
/// Thread safety: a model is immutable once loaded. Any number of threads may call
/// `lowbit_tokenize`, `lowbit_detokenize`, `lowbit_generate`, `lowbit_logits` and the
/// `lowbit_model_*` queries on the same model at the same time (each call keeps its own
/// KV cache; on a GPU the forward passes of concurrent calls take turns). Only
/// `lowbit_model_free` and `lowbit_model_quantize`, which change the model, must not overlap
/// with any other use of that model.
#[allow(non_camel_case_types)]
pub struct lowbit_model {
    pub(crate) model: Arc<Model>,
    /// The GPU copy the forward passes run on, for a model loaded on a GPU.
    pub(crate) gpu: Option<Gpu>,
    /// The path the model was loaded from: `lowbit_model_save` takes the tensors the model does
    /// not hold (and the configuration) from there, and `lowbit_bench` its size on disk.
    pub(crate) source: PathBuf,
    /// How `lowbit_model_quantize` changed the model since it was loaded: the rules and the
    /// method's name, which `lowbit_model_save` records in the `quantization_config`.
    pub(crate) quantized_with: Option<(QuantRules, &'static str)>,
}

/// A model's copy on a GPU.
pub(crate) struct Gpu {
    pub(crate) decoder: SharedDecoder,
    /// The CUDA device's index.
    pub(crate) ordinal: usize,
}

impl Gpu {
    /// Uploads `model` to GPU `ordinal`; errors as [`Gpu::failure`] says.
    pub(crate) fn upload(model: Arc<Model>, ordinal: usize) -> Result<Gpu, Failure> {
        crate::backend::upload(model, ordinal)
            .map(|decoder| Gpu { decoder, ordinal })
            .map_err(|error| Gpu::failure(error, ordinal))
    }

    /// What a failure to run on GPU `ordinal` returns: a build without CUDA, a GPU that does
    /// not open and a model the GPU kernels do not take are all `LOWBIT_ERR_UNSUPPORTED`, with
    /// the reason after the device.
    pub(crate) fn failure(error: crate::Error, ordinal: usize) -> Failure {
        let (status, reason) = match error {
            crate::Error::InvalidArgument(reason) | crate::Error::Device(reason) => {
                (lowbit_status::LOWBIT_ERR_UNSUPPORTED, reason)
            }
            other => (super::status::status_of(&other), other.to_string()),
        };
        Failure::new(status, format!("device cuda:{ordinal}: {reason}"))
    }
}

impl lowbit_model {
    /// A new handle for `model`, loaded from `source` (and copied to a GPU when `gpu` is
    /// given), as a pointer for the caller.
    pub(crate) fn into_raw(
        model: Arc<Model>,
        gpu: Option<Gpu>,
        source: &Path,
    ) -> *mut lowbit_model {
        let handle = Box::into_raw(Box::new(lowbit_model {
            model,
            gpu,
            source: source.to_path_buf(),
            quantized_with: None,
        }));
        live::MODELS.insert(handle);
        handle
    }

    /// What forward passes run on: the GPU copy, or the model on the CPU.
    pub(crate) fn decoder(&self) -> &dyn Decoder {
        match &self.gpu {
            Some(gpu) => gpu.decoder.as_ref(),
            None => self.model.as_ref(),
        }
    }
}

/// Loads a model from `path`: a Hugging Face style directory (config.json, model.safetensors or
/// a sharded index, optional tokenizer.json), a `.safetensors` file with config.json beside it,
/// or a `.gguf` file. On success `*out` is a new model the caller frees with
/// `lowbit_model_free`; on failure `*out` is set to NULL.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (path or out NULL), `LOWBIT_ERR_INVALID_ARGUMENT` (path
/// empty or not UTF-8), `LOWBIT_ERR_IO` (missing or unreadable file; the message names it),
/// `LOWBIT_ERR_FORMAT` (malformed checkpoint, missing tensor, wrong shape), `LOWBIT_ERR_CONFIG`,
/// `LOWBIT_ERR_UNSUPPORTED` (architecture or data type), `LOWBIT_ERR_TOKENIZER` (a
/// tokenizer.json that cannot be parsed).
///
/// Thread-safe: loads may run concurrently.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_load(
    path: *const c_char,
    out: *mut *mut lowbit_model,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable per this function's contract.
        unsafe { write_if_some(out, std::ptr::null_mut()) };
        require(out, "out")?;
        // SAFETY: `path` is NULL or NUL-terminated per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        if path.is_empty() {
            return Err(Failure::invalid("path is empty"));
        }
        let model = Model::load(path)?;
        let handle = lowbit_model::into_raw(Arc::new(model), None, Path::new(path));
        // SAFETY: checked non-NULL above; writable per this function's contract.
        unsafe { write_out(out, handle, "out") }
    })
}

/// Frees a model made by `lowbit_model_load` or `lowbit_model_load_with_params`. NULL is
/// accepted and ignored. The model must not be in use by another thread, and must not be used
/// afterwards.
///
/// Double frees are guarded: lowbit remembers the models it handed out, so freeing a pointer
/// that is not a live model (freed already, or never made by lowbit) frees nothing and sets
/// `lowbit_last_error()`; other functions given such a pointer return
/// `LOWBIT_ERR_INVALID_ARGUMENT`. The guard cannot help when a newer model happens to get the
/// address of a freed one: a stale pointer then reaches the newer model. Set pointers to NULL
/// after freeing them.
///
/// # Safety
/// `model` is NULL or a pointer from a load function not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_free(model: *mut lowbit_model) {
    guard_value((), || {
        if model.is_null() {
            return;
        }
        if !live::MODELS.remove(model) {
            set_last_error(&format!(
                "lowbit_model_free: {model:p} is not a live lowbit_model (freed already, or \
                 not made by lowbit); nothing was freed"
            ));
            return;
        }
        // SAFETY: the pointer came from Box::into_raw in lowbit_model::into_raw, and was live
        // until the line above took it out of the registry, so it is freed once; per this
        // function's contract no one else uses it.
        drop(unsafe { Box::from_raw(model) });
    })
}

/// The local directory of lowbit's default model (SmolLM2-135M-Instruct, converted to f32),
/// fetching and converting it on first use; pass it to `lowbit_model_load`. The first call
/// may take minutes and needs network access unless `LOWBIT_DEFAULT_GGUF` names a local copy
/// of the GGUF file; files live under `$LOWBIT_HOME` (else `$XDG_CACHE_HOME/lowbit`, else
/// `~/.cache/lowbit`).
///
/// On success `*out` is a new string the caller frees with `lowbit_string_free`; on failure
/// `*out` is set to NULL.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (out NULL), `LOWBIT_ERR_IO`, `LOWBIT_ERR_FORMAT` (the
/// downloaded file is not the expected one), `LOWBIT_ERR_INVALID_ARGUMENT` (the download
/// failed), `LOWBIT_ERR_UNSUPPORTED` (the path is not valid UTF-8).
///
/// Thread-safe: concurrent callers convert once.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn lowbit_default_model_path(out: *mut *mut c_char) -> lowbit_status {
    guard(|| {
        // SAFETY: `out` is NULL or writable per this function's contract.
        unsafe { write_if_some(out, std::ptr::null_mut()) };
        require(out, "out")?;
        let dir = default_model::ensure()?;
        let text = dir.into_os_string().into_string().map_err(|dir| {
            Failure::new(
                lowbit_status::LOWBIT_ERR_UNSUPPORTED,
                format!("the default model path {dir:?} is not valid UTF-8"),
            )
        })?;
        let text = to_c_string(text, "the default model path")?;
        // SAFETY: checked non-NULL above; writable per this function's contract.
        unsafe { write_out(out, owned_c_string(text), "out") }
    })
}

/// Frees a string returned by lowbit (`lowbit_default_model_path`, `lowbit_generate`,
/// `lowbit_eval`). NULL is accepted and ignored. Thread-safe.
///
/// Guarded like `lowbit_model_free`: a pointer that is not a live string from lowbit (freed
/// already, `lowbit_version()`, `lowbit_last_error()`, or a string from elsewhere) frees
/// nothing and sets `lowbit_last_error()`, except when a newer string got the same address.
///
/// # Safety
/// `text` is NULL or any pointer; only a live string returned by lowbit is freed.
#[no_mangle]
pub unsafe extern "C" fn lowbit_string_free(text: *mut c_char) {
    guard_value((), || {
        if text.is_null() {
            return;
        }
        if !live::STRINGS.remove(text) {
            set_last_error(&format!(
                "lowbit_string_free: {text:p} is not a live string returned by lowbit (freed \
                 already, or not lowbit's to free); nothing was freed"
            ));
            return;
        }
        // SAFETY: the pointer came from CString::into_raw (see owned_c_string) and was live
        // until the line above took it out of the registry, so it is freed once.
        drop(unsafe { CString::from_raw(text) });
    })
}

/// Hands an owned string to the caller (freed by `lowbit_string_free`).
pub(crate) fn owned_c_string(text: CString) -> *mut c_char {
    let ptr = text.into_raw();
    live::STRINGS.insert(ptr);
    ptr
}

/// Stores the number of logits per position (the vocabulary size of the model's output layer)
/// in `*out`. The tokenizer may know a few ids fewer; token ids passed to lowbit must be below
/// this number.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or out NULL). Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_vocab_size(
    model: *const lowbit_model,
    out: *mut usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let model = unsafe { model_ref(model) }?;
        // SAFETY: `out` is NULL or writable per this function's contract.
        unsafe { write_out(out, model.config().vocab_size, "out") }
    })
}

/// Facts about a loaded model. The caller sets `struct_size` to
/// `sizeof(lowbit_model_info)` and `lowbit_model_get_info` fills in the rest.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_model_info {
    /// `sizeof(lowbit_model_info)` as the caller's header defines it; set by the caller. A
    /// library accepts the sizes of its own layout and of every earlier one.
    pub struct_size: usize,
    /// The Hugging Face class, e.g. `"LlamaForCausalLM"`: a static string, never freed.
    pub architecture: *const c_char,
    /// Logits per position (see `lowbit_model_vocab_size`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads per block.
    pub num_attention_heads: usize,
    /// Key/value heads per block (fewer than query heads with grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// The context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Weight parameters (matrices, norms, biases; a tied output layer counted once).
    pub parameter_count: u64,
    /// Bytes of weight data held in memory.
    pub weight_bytes: u64,
    /// Whether the checkpoint carries a tokenizer (text functions need one).
    pub has_tokenizer: bool,
}

/// The `struct_size` of the first published layout of `lowbit_model_info`. Later versions
/// only append fields and accept every size from this one up to their own.
const MODEL_INFO_V1_SIZE: usize = size_of::<lowbit_model_info>();

// When a field is appended, MODEL_INFO_V1_SIZE keeps the old size and lowbit_model_get_info
// must write only `struct_size` bytes.
const _: () = assert!(MODEL_INFO_V1_SIZE == size_of::<lowbit_model_info>());

/// Fills `*info` with facts about `model`. Set `info->struct_size = sizeof(lowbit_model_info)`
/// first. Nothing is allocated: `info->architecture` is a static string.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or info NULL), `LOWBIT_ERR_INVALID_ARGUMENT`
/// (`struct_size` is not a layout this library knows). Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `info` is NULL or points to a writable
/// `lowbit_model_info` whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_get_info(
    model: *const lowbit_model,
    info: *mut lowbit_model_info,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let model = unsafe { model_ref(model) }?;
        require(info, "info")?;
        // SAFETY: `info` is non-NULL and, per this function's contract, its first field is set.
        let struct_size = unsafe { std::ptr::addr_of!((*info).struct_size).read() };
        let known = MODEL_INFO_V1_SIZE..=size_of::<lowbit_model_info>();
        if !known.contains(&struct_size) {
            return Err(Failure::invalid(format!(
                "info->struct_size is {struct_size}; this library (lowbit {}) accepts {} to {} \
                 (sizeof(lowbit_model_info))",
                crate::VERSION,
                known.start(),
                known.end()
            )));
        }
        let config = model.config();
        let facts = lowbit_model_info {
            struct_size,
            architecture: architecture_name(config.architecture.hf_class()),
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            num_key_value_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            max_position_embeddings: config.max_position_embeddings,
            parameter_count: model.parameter_count() as u64,
            weight_bytes: model.weight_bytes() as u64,
            has_tokenizer: model.tokenizer().is_some(),
        };
        // SAFETY: non-NULL, and the caller's struct is `struct_size` bytes long, which
        // (asserted at compile time) is the whole current layout.
        unsafe { write_out(info, facts, "info") }
    })
}

/// A static C string equal to `name`, interned once per distinct name.
fn architecture_name(name: &'static str) -> *const c_char {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    // A B-tree, not a hash map: leak checkers see its nodes as reachable (see `live`).
    static NAMES: Mutex<BTreeMap<&'static str, &'static std::ffi::CStr>> =
        Mutex::new(BTreeMap::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = names.entry(name).or_insert_with(|| {
        let text = CString::new(name).unwrap_or_default();
        Box::leak(text.into_boxed_c_str())
    });
    entry.as_ptr()
}
