//! Quantizing a checkpoint on disk: parameters with defaults, a progress callback that can
//! cancel, and the call that reads a model directory and writes the quantized one.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use super::marshal::{c_str, slice};
use super::status::{guard, guard_value, lowbit_status, Failure};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::quant::{quantize_checkpoint, QuantRules, QuantScheme, RtnOptions};

/// The scheme of `lowbit_quantize_default_params()`: 4-bit symmetric integer weights, one
/// f16 scale per group of 128 inputs, 16-bit activations.
const DEFAULT_SCHEME: &CStr = c"w4a16-g128";
/// The one quantization method this library implements: round-to-nearest.
const METHOD_RTN: &CStr = c"rtn";

/// Called by `lowbit_quantize` after each layer is quantized: `done` counts the layers
/// finished so far (1, 2, ..., `total`), `total` is the number of layers the call will
/// quantize (the same on every call), and `layer` is the module just finished, e.g.
/// `"model.layers.0.self_attn.q_proj"`, a NUL-terminated UTF-8 string valid only during the
/// call (copy it to keep it). `user_data` is `params->user_data`. Return true to continue,
/// false to cancel: `lowbit_quantize` then returns `LOWBIT_ERR_CANCELLED` without writing
/// anything. The callback runs on the thread that called `lowbit_quantize`; it must not
/// unwind (throw a C++ exception, longjmp).
#[allow(non_camel_case_types)]
pub type lowbit_progress_callback = Option<
    unsafe extern "C" fn(
        done: usize,
        total: usize,
        layer: *const c_char,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Settings of `lowbit_quantize`. Obtain them from `lowbit_quantize_default_params()` and
/// change the fields you need; never build one from scratch, so that `struct_size` is right
/// and fields added by later versions get their defaults.
///
/// The strings and arrays it points to stay the caller's; lowbit reads them only during
/// `lowbit_quantize` and keeps no pointer to them afterwards.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_quantize_params {
    /// `sizeof(lowbit_quantize_params)` as the caller's header defines it. A library accepts
    /// the sizes of its own layout and of every earlier one; others give
    /// `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub struct_size: usize,
    /// The quantization scheme of every linear layer of the decoder blocks (default
    /// `"w4a16-g128"`). Names read `wNaM[-gSIZE][-asym]` for integer weights of N bits with
    /// activations of M bits, plus `nf4`, `nf4-dq`, `fp4`, `fp8`, `fp8-block`, `w8a8-fp8`,
    /// `w8a8-fp8-block`; case is ignored. Must not be NULL.
    pub scheme: *const c_char,
    /// The quantization method: `"rtn"` (round-to-nearest, the default and the only method
    /// of this version). NULL means `"rtn"`.
    pub method: *const c_char,
    /// Search a clipping range per group that minimizes the quantization error: slower,
    /// usually more accurate (default false).
    pub mse_clip: bool,
    /// `n_overrides` layer rules, each `"PATTERN=SCHEME"` or `"PATTERN=skip"`, matched against
    /// module names (`"model.layers.3.mlp.down_proj"`, `"lm_head"`) with `*` matching any run
    /// of characters. The last matching rule wins. By default (no rule) every decoder-block
    /// linear gets `scheme` and the embeddings and LM head stay in floating point; a rule
    /// naming `lm_head` quantizes the head too. May be NULL when `n_overrides` is 0 (default).
    pub overrides: *const *const c_char,
    /// Number of strings at `overrides` (default 0).
    pub n_overrides: usize,
    /// Called after each quantized layer; may cancel. NULL for none (default).
    pub progress: lowbit_progress_callback,
    /// Passed unchanged to `progress` (default NULL).
    pub user_data: *mut c_void,
}

/// The `struct_size` of the first published layout of `lowbit_quantize_params`. Later
/// versions only append fields, accept every size from this one up to their own, and give
/// fields beyond the caller's `struct_size` their defaults.
const QUANTIZE_PARAMS_V1_SIZE: usize = size_of::<lowbit_quantize_params>();

// When a field is appended, QUANTIZE_PARAMS_V1_SIZE keeps the old size and
// read_quantize_params must copy only `struct_size` bytes over the defaults.
const _: () = assert!(QUANTIZE_PARAMS_V1_SIZE == size_of::<lowbit_quantize_params>());

fn default_quantize_params() -> lowbit_quantize_params {
    lowbit_quantize_params {
        struct_size: size_of::<lowbit_quantize_params>(),
        scheme: DEFAULT_SCHEME.as_ptr(),
        method: METHOD_RTN.as_ptr(),
        mse_clip: RtnOptions::default().mse_clip,
        overrides: std::ptr::null(),
        n_overrides: 0,
        progress: None,
        user_data: std::ptr::null_mut(),
    }
}

/// The default quantization settings: scheme `"w4a16-g128"`, method `"rtn"`, no MSE clipping,
/// no layer overrides, no progress callback; `struct_size` is set. The struct is returned by
/// value and its strings are static: nothing to free. Thread-safe.
#[no_mangle]
pub extern "C" fn lowbit_quantize_default_params() -> lowbit_quantize_params {
    guard_value(
        // Unreachable in practice; a zero struct_size makes any later use fail loudly.
        lowbit_quantize_params {
            struct_size: 0,
            ..default_quantize_params()
        },
        default_quantize_params,
    )
}

/// Quantizes the checkpoint at `model_path` and writes the result to the directory `out_dir`,
/// which `lowbit_model_load` then loads (and `lowbit_generate` runs).
///
/// `model_path` is what `lowbit_model_load` accepts: a Hugging Face style directory, a
/// `.safetensors` file with config.json beside it, or a `.gguf` file (whose weights are read
/// as f32); it must not be quantized by lowbit already. `out_dir` is created if needed (with its parents) and
/// receives model.safetensors (quantized layers as codes and scales, every other tensor
/// unchanged), config.json (with a `quantization_config` recording each layer's scheme), and
/// tokenizer.json and tokenizer_config.json when the model has a tokenizer. Files of those
/// names already in `out_dir` are replaced; others are left alone. `out_dir` must not be the
/// directory the model is read from. The source is read through a memory map one layer at a
/// time; peak memory is about the size of the quantized result plus one layer in f32.
///
/// `params` must not be NULL: start from `lowbit_quantize_default_params()`. When
/// `params->progress` is set it is called after each layer, and returning false from it
/// cancels the call.
///
/// Nothing is allocated for the caller; nothing is to be freed. Nothing is written to
/// `out_dir` until every layer is quantized, so a failure or cancellation before that point
/// leaves it untouched; a failure while writing (disk full, say) can leave partial files there.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model_path, out_dir, params or params->scheme NULL;
/// params->overrides NULL with n_overrides > 0, or one of its strings NULL),
/// `LOWBIT_ERR_INVALID_ARGUMENT` (a path empty, or a string not UTF-8; wrong
/// `params->struct_size`; unknown scheme or method; an override not of the form
/// `PATTERN=SCHEME` or `PATTERN=skip`; out_dir is the model's own directory; the model is
/// already quantized; a layer's weight cannot be quantized), `LOWBIT_ERR_CANCELLED` (the
/// progress callback returned false; nothing was written), `LOWBIT_ERR_IO` (missing or
/// unreadable model; out_dir is a file or cannot be created; an output file cannot be
/// written; the message names the path), `LOWBIT_ERR_FORMAT` (as for `lowbit_model_load`),
/// `LOWBIT_ERR_CONFIG`,
/// `LOWBIT_ERR_UNSUPPORTED` (as for `lowbit_model_load`). `lowbit_last_error()` says which
/// argument, file or layer was wrong.
///
/// Thread-safe: several threads may quantize at once, each into its own `out_dir` (two calls
/// writing the same `out_dir` at once leave it in an unspecified state). Quantization itself
/// uses all cores. The model files must not change during the call.
///
/// # Safety
/// `model_path` and `out_dir` are NULL or NUL-terminated strings; `params` is NULL or points
/// to a `lowbit_quantize_params` whose `struct_size` is set, whose `scheme` and `method` are
/// NULL or NUL-terminated, whose `overrides` is NULL or points to `n_overrides` pointers each
/// NULL or NUL-terminated, and whose `progress` is NULL or a function with the
/// `lowbit_progress_callback` contract, called with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_quantize(
    model_path: *const c_char,
    out_dir: *const c_char,
    params: *const lowbit_quantize_params,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model_path` is NULL or NUL-terminated per this function's contract.
        let model_path = unsafe { c_str(model_path, "model_path") }?;
        // SAFETY: `out_dir` is NULL or NUL-terminated per this function's contract.
        let out_dir = unsafe { c_str(out_dir, "out_dir") }?;
        if model_path.is_empty() {
            return Err(Failure::invalid("model_path is empty"));
        }
        if out_dir.is_empty() {
            return Err(Failure::invalid("out_dir is empty"));
        }
        // SAFETY: `params` is NULL or a struct with `struct_size` set per this contract.
        let params = unsafe { read_quantize_params(params) }?;
        // SAFETY: the pointers inside `params` follow this function's contract.
        let request = unsafe { QuantizeRequest::from_params(&params) }?;
        let out_dir = Path::new(out_dir);
        check_out_dir(Path::new(model_path), out_dir)?;

        let checkpoint = Checkpoint::open(model_path)?;
        // The last layer reported to the callback, for the cancellation message.
        let mut last_reported: Option<(usize, usize, String)> = None;
        let mut report = |done: usize, total: usize, layer: &str| -> bool {
            let Some(progress) = params.progress else {
                return true;
            };
            // Module names are built by lowbit from config-derived ASCII parts: never NUL.
            let layer_text = CString::new(layer).unwrap_or_default();
            last_reported = Some((done, total, layer.to_string()));
            // SAFETY: the caller guarantees `progress` follows the lowbit_progress_callback
            // contract; `layer_text` outlives the call and `user_data` is passed untouched.
            unsafe { progress(done, total, layer_text.as_ptr(), params.user_data) }
        };
        let quantized =
            quantize_checkpoint(&checkpoint, &request.rules, &request.options, &mut report);
        let quantized = quantized.map_err(|error| match (error, &last_reported) {
            (Error::Cancelled, Some((done, total, layer))) => Failure::new(
                lowbit_status::LOWBIT_ERR_CANCELLED,
                format!(
                    "cancelled by the progress callback after {layer} ({done} of {total} \
                     layers); nothing was written to {}",
                    out_dir.display()
                ),
            ),
            (error, _) => Failure::from(error),
        })?;
        quantized.save(out_dir)?;
        Ok(())
    })
}

/// The Rust values a `lowbit_quantize_params` stands for.
struct QuantizeRequest {
    rules: QuantRules,
    options: RtnOptions,
}

impl QuantizeRequest {
    /// Parses scheme, method and overrides.
    ///
    /// # Safety
    /// The pointers in `params` follow the contract of `lowbit_quantize`.
    unsafe fn from_params(params: &lowbit_quantize_params) -> Result<Self, Failure> {
        // SAFETY: NULL or NUL-terminated per the caller's contract.
        let scheme = unsafe { c_str(params.scheme, "params->scheme") }?;
        let method = if params.method.is_null() {
            "rtn"
        } else {
            // SAFETY: non-NULL and NUL-terminated per the caller's contract.
            unsafe { c_str(params.method, "params->method") }?
        };
        if method != "rtn" {
            return Err(Failure::invalid(format!(
                "params->method '{method}' is not available (this library implements: rtn)"
            )));
        }
        let mut rules = QuantRules::new(QuantScheme::parse(scheme)?);
        // SAFETY: NULL or `n_overrides` pointers per the caller's contract.
        let overrides =
            unsafe { slice(params.overrides, params.n_overrides, "params->overrides") }?;
        for (i, &text) in overrides.iter().enumerate() {
            let what = format!("params->overrides[{i}]");
            // SAFETY: each entry is NULL or NUL-terminated per the caller's contract.
            let text = unsafe { c_str(text, &what) }?;
            rules.push_override(text).map_err(|error| {
                let failure = Failure::from(error);
                Failure::new(failure.status, format!("{what}: {}", failure.message))
            })?;
        }
        Ok(QuantizeRequest {
            rules,
            options: RtnOptions {
                mse_clip: params.mse_clip,
            },
        })
    }
}

/// The caller's parameters; unlike `lowbit_generate`, NULL is an error, since the scheme is a
/// choice the caller should make visibly.
///
/// # Safety
/// `params` is NULL or points to a readable struct whose first field is `struct_size`, at
/// least `struct_size` bytes long.
unsafe fn read_quantize_params(
    params: *const lowbit_quantize_params,
) -> Result<lowbit_quantize_params, Failure> {
    if params.is_null() {
        return Err(Failure::new(
            lowbit_status::LOWBIT_ERR_NULL_POINTER,
            "params is NULL; start from lowbit_quantize_default_params()",
        ));
    }
    // SAFETY: non-NULL; every layout begins with `size_t struct_size`.
    let struct_size = unsafe { std::ptr::addr_of!((*params).struct_size).read() };
    let known = QUANTIZE_PARAMS_V1_SIZE..=size_of::<lowbit_quantize_params>();
    if !known.contains(&struct_size) {
        return Err(Failure::invalid(format!(
            "params->struct_size is {struct_size}; this library (lowbit {}) accepts \
             {} to {} (sizeof(lowbit_quantize_params)); start from \
             lowbit_quantize_default_params()",
            crate::VERSION,
            known.start(),
            known.end()
        )));
    }
    // SAFETY: the caller's struct is `struct_size` bytes long, which (asserted at compile time)
    // is the whole current layout.
    Ok(unsafe { params.read() })
}

/// Refuses an `out_dir` that is the directory the model is read from: writing model.safetensors
/// there would truncate the file while it is memory-mapped, which crashes the process rather
/// than failing. Also fails early, before the long quantization, when `out_dir` is a file.
fn check_out_dir(model_path: &Path, out_dir: &Path) -> Result<(), Failure> {
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Failure::new(
            lowbit_status::LOWBIT_ERR_IO,
            format!(
                "{}: out_dir exists and is not a directory",
                out_dir.display()
            ),
        ));
    }
    let model_dir: PathBuf = if model_path.is_dir() {
        model_path.to_path_buf()
    } else {
        match model_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    // Paths that do not exist yet cannot be the same directory; opening the model reports a
    // missing one.
    if let (Ok(model_dir), Ok(out)) = (model_dir.canonicalize(), out_dir.canonicalize()) {
        if model_dir == out {
            return Err(Failure::invalid(format!(
                "out_dir {} is the directory the model is read from; choose another directory",
                out_dir.display()
            )));
        }
    }
    Ok(())
}
