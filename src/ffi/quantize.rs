//! Quantization through the C ABI: parameters with defaults (scheme, method, calibration), a
//! progress callback that can cancel, and the two calls: a checkpoint on disk into a new
//! directory (`lowbit_quantize`), and a loaded model in memory (`lowbit_model_quantize`).

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::marshal::{c_str, model_ref, read_versioned, slice};
use super::model::{lowbit_model, Gpu};
use super::status::{guard, guard_value, lowbit_status, Failure};
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::model::Model;
use crate::quant::apply::{checkpoint_from_model, quantize_model_with_progress};
use crate::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use crate::quant::smoothquant::DEFAULT_SMOOTHING_ALPHA;
use crate::quant::{quantize_checkpoint, GptqOptions, QuantRules, QuantScheme, RtnOptions};

/// The scheme of `lowbit_quantize_default_params()`: 4-bit symmetric integer weights, one
/// f16 scale per group of 128 inputs, 16-bit activations.
const DEFAULT_SCHEME: &CStr = c"w4a16-g128";
/// The method of `lowbit_quantize_default_params()`: round-to-nearest.
const METHOD_RTN: &CStr = c"rtn";
/// The methods this library implements, as `params->method` names them.
const METHODS: &str = "rtn, gptq, awq, smoothquant, smoothquant+gptq";
/// Calibration defaults, as `lowbit quantize` has them.
const DEFAULT_CALIBRATION_SAMPLES: usize = 128;
const DEFAULT_CALIBRATION_SEQ_LEN: usize = 512;

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
    /// The quantization method, case ignored: `"rtn"` (round-to-nearest, the default; NULL
    /// means `"rtn"`), `"gptq"` (error-compensating rounding with the Hessian of each
    /// projection's inputs), `"awq"` (activation-aware per-channel scales folded into the
    /// preceding norms, AutoAWQ's clipping search, then round-to-nearest), `"smoothquant"`
    /// (activation outliers migrated into the weights with alpha 0.5, then round-to-nearest;
    /// meant for 8-bit activation schemes) or `"smoothquant+gptq"` (the same smoothing, then
    /// GPTQ). All but `"rtn"` need calibration text (`calibration_files`) and quantize block
    /// by block in memory. Methods added by later
    /// versions are new names here; an unknown name gives `LOWBIT_ERR_INVALID_ARGUMENT`
    /// listing the available ones.
    pub method: *const c_char,
    /// Search a clipping range per group that minimizes the quantization error: slower,
    /// usually more accurate (default false). Used by `"rtn"` only.
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
    /// `n_calibration_files` calibration text files for `"gptq"` and `"awq"`: plain text (one
    /// sample per blank-line-separated paragraph) or JSON Lines (`.jsonl`/`.json`; records
    /// with `text`, or `question` + `answer`, or chat `messages`). May be NULL when
    /// `n_calibration_files` is 0 (default); ignored by `"rtn"`. This and the following
    /// fields were added in the second layout of this struct.
    pub calibration_files: *const *const c_char,
    /// The share of samples drawn from each file, relative to the others (positive): NULL
    /// (default) gives every file weight 1; otherwise `n_calibration_files` values.
    pub calibration_weights: *const f64,
    /// Number of strings at `calibration_files` (default 0).
    pub n_calibration_files: usize,
    /// Calibration samples drawn from the files (default 128); at least 1.
    pub calibration_samples: usize,
    /// Tokens per calibration sample; longer records are truncated (default 512); at least 2.
    pub calibration_seq_len: usize,
    /// Seed of the draw of calibration samples (default 0).
    pub seed: u64,
    /// `"gptq"` only: quantize columns in order of decreasing Hessian diagonal, with groups
    /// kept in their original order (default false).
    pub act_order: bool,
}

/// The size of each published layout of `lowbit_quantize_params`, oldest first: the first
/// ended at `user_data`; the second added the calibration fields.
const QUANTIZE_PARAMS_LAYOUTS: [usize; 2] = [
    std::mem::offset_of!(lowbit_quantize_params, calibration_files),
    size_of::<lowbit_quantize_params>(),
];

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
        calibration_files: std::ptr::null(),
        calibration_weights: std::ptr::null(),
        n_calibration_files: 0,
        calibration_samples: DEFAULT_CALIBRATION_SAMPLES,
        calibration_seq_len: DEFAULT_CALIBRATION_SEQ_LEN,
        seed: 0,
        act_order: GptqOptions::default().act_order,
    }
}

/// The default quantization settings: scheme `"w4a16-g128"`, method `"rtn"`, no MSE clipping,
/// no layer overrides, no progress callback, no calibration files (128 samples of up to 512
/// tokens, seed 0, no act-order when some are given); `struct_size` is set. The struct is returned by
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
/// as f32); it must not be quantized by lowbit already. `out_dir` is created if needed (with
/// its parents) and receives model.safetensors (quantized layers as codes and scales, every
/// other tensor unchanged, norms rescaled by `"awq"`), config.json (with a
/// `quantization_config` recording each layer's scheme and the method), and tokenizer.json
/// and tokenizer_config.json when the model has a tokenizer. Files of those names already in
/// `out_dir` are replaced; others are left alone. `out_dir` must not be the directory the
/// model is read from. With `"rtn"` the source is read through a memory map one layer at a
/// time (peak memory: the quantized result plus one layer in f32); `"gptq"` and `"awq"` load
/// the model and run the calibration samples through it block by block (peak memory: the
/// model, the residual stream of the samples, one Hessian per projection input).
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
/// params->overrides or params->calibration_files NULL with a count > 0, or one of their
/// strings NULL), `LOWBIT_ERR_INVALID_ARGUMENT` (a path empty, or a string not UTF-8; wrong
/// `params->struct_size`; unknown scheme or method; an override not of the form
/// `PATTERN=SCHEME` or `PATTERN=skip`; `"gptq"`/`"awq"` without calibration files, a
/// calibration weight not positive, fewer than 1 sample or 2 tokens per sample, a file with
/// fewer usable records than samples asked for; out_dir is the model's own directory; the
/// model is already quantized; a layer's weight cannot be quantized),
/// `LOWBIT_ERR_CANCELLED` (the progress callback returned false; nothing was written),
/// `LOWBIT_ERR_IO` (missing or unreadable model or calibration file; out_dir is a file or
/// cannot be created; an output file cannot be written; the message names the path),
/// `LOWBIT_ERR_FORMAT` (as for `lowbit_model_load`; a malformed JSON Lines calibration file),
/// `LOWBIT_ERR_CONFIG`, `LOWBIT_ERR_UNSUPPORTED` (as for `lowbit_model_load`),
/// `LOWBIT_ERR_TOKENIZER` (`"gptq"`/`"awq"` on a model without a tokenizer).
/// `lowbit_last_error()` says which argument, file or layer was wrong.
///
/// Thread-safe: several threads may quantize at once, each into its own `out_dir` (two calls
/// writing the same `out_dir` at once leave it in an unspecified state). Quantization itself
/// uses all cores. The model files must not change during the call.
///
/// # Safety
/// `model_path` and `out_dir` are NULL or NUL-terminated strings; `params` is NULL or points
/// to a `lowbit_quantize_params` whose `struct_size` is set, whose strings are NULL or
/// NUL-terminated, whose `overrides` and `calibration_files` are NULL or point to
/// `n_overrides` and `n_calibration_files` pointers each NULL or NUL-terminated, whose
/// `calibration_weights` is NULL or points to `n_calibration_files` values, and whose
/// `progress` is NULL or a function with the `lowbit_progress_callback` contract, called with
/// `user_data`.
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
        check_out_dir(Path::new(model_path), out_dir, "out_dir")?;

        let checkpoint = Checkpoint::open(model_path)?;
        let mut reporter = Reporter::new(&params);
        let quantized = match request.method {
            Method::Rtn(options) => quantize_checkpoint(
                &checkpoint,
                &request.rules,
                &options,
                &mut |done, total, layer| reporter.report(done, total, layer),
            ),
            _ if checkpoint.config().quantization_config.is_some() => Err(Error::InvalidArgument(
                format!("{} is already quantized", checkpoint.path().display()),
            )),
            _ => Model::from_checkpoint(&checkpoint, None).and_then(|mut model| {
                quantize_in_memory(&mut model, &request, &mut reporter)?;
                Ok(checkpoint_from_model(
                    &model,
                    &checkpoint,
                    &request.rules,
                    request.method_name,
                ))
            }),
        };
        let outcome = format!("nothing was written to {}", out_dir.display());
        let quantized = quantized.map_err(|error| reporter.failure(error, &outcome))?;
        quantized.save(out_dir)?;
        Ok(())
    })
}

/// Quantizes a loaded model in memory with `params` (scheme, method, layer rules, calibration
/// as for `lowbit_quantize`); the quantized model then generates, scores and evaluates with
/// the fused low-bit kernels, and `lowbit_model_save` writes it as a checkpoint. Only models
/// with no quantized layer can be quantized. With `"rtn"` the model's dense weights are
/// replaced layer by layer; `"gptq"` and `"awq"` run the calibration samples through it
/// block by block.
///
/// The model changes only when the call succeeds: on any failure or cancellation it is left
/// exactly as it was. Nothing is allocated for the caller.
///
/// `params` must not be NULL: start from `lowbit_quantize_default_params()`. When
/// `params->progress` is set it is called after each layer, and returning false from it
/// cancels the call.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or params NULL, and the pointers inside params as
/// for `lowbit_quantize`), `LOWBIT_ERR_INVALID_ARGUMENT` (as for `lowbit_quantize`; the model
/// already has quantized layers), `LOWBIT_ERR_CANCELLED` (the progress callback returned
/// false; the model is unchanged), `LOWBIT_ERR_IO` and `LOWBIT_ERR_FORMAT` (a calibration
/// file), `LOWBIT_ERR_TOKENIZER` (`"gptq"`/`"awq"` on a model without a tokenizer).
///
/// Thread safety: this call changes the model, so, like `lowbit_model_free`, it must not
/// overlap with any other use of the same model; other models are unaffected. It uses all
/// cores.
///
/// # Safety
/// `model` is NULL or a live model not in use by another thread; `params` follows the
/// contract of `lowbit_quantize`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_model_quantize(
    model: *mut lowbit_model,
    params: *const lowbit_quantize_params,
) -> lowbit_status {
    guard(|| {
        // SAFETY: NULL or a model used by no other thread, per this function's contract.
        unsafe { model_ref(model) }?;
        // SAFETY: checked non-NULL and live above; no other thread uses it, per this contract.
        let handle = unsafe { &mut *model };
        // SAFETY: `params` is NULL or a struct with `struct_size` set per this contract.
        let params = unsafe { read_quantize_params(params) }?;
        // SAFETY: the pointers inside `params` follow this function's contract.
        let request = unsafe { QuantizeRequest::from_params(&params) }?;
        let mut reporter = Reporter::new(&params);
        // Weights are shared, not copied, by the clone; it replaces the model only on success.
        let mut quantized = Model::clone(&handle.model);
        quantize_in_memory(&mut quantized, &request, &mut reporter)
            .map_err(|error| reporter.failure(error, "the model is unchanged"))?;
        let quantized = Arc::new(quantized);
        // A model on a GPU gets a new copy there (the old one is kept until that succeeds).
        let gpu = match &handle.gpu {
            Some(gpu) => Some(
                Gpu::upload(quantized.clone(), gpu.ordinal).map_err(|failure| {
                    Failure::new(
                        failure.status,
                        format!(
                        "the quantized model does not run on the GPU: {}; the model is unchanged",
                        failure.message
                    ),
                    )
                })?,
            ),
            None => None,
        };
        handle.model = quantized;
        handle.gpu = gpu;
        handle.quantized_with = Some((request.rules, request.method_name));
        Ok(())
    })
}

/// Quantizes `model` in place as `request` says.
fn quantize_in_memory(
    model: &mut Model,
    request: &QuantizeRequest,
    reporter: &mut Reporter,
) -> Result<(), Error> {
    if let Some((name, _)) = model
        .linears()
        .into_iter()
        .find(|(_, linear)| linear.weight.scheme().is_some())
    {
        return Err(Error::InvalidArgument(format!(
            "the model is already quantized ({name} is); load an unquantized checkpoint"
        )));
    }
    let mut report = |done: usize, total: usize, layer: &str| reporter.report(done, total, layer);
    match &request.method {
        Method::Rtn(options) => {
            quantize_model_with_progress(model, &request.rules, options, &mut report)
        }
        method => {
            let calibration = CalibrationSet::from_sources(
                model.require_tokenizer()?,
                &request.calibration.sources,
                request.calibration.samples,
                request.calibration.seq_len,
                request.calibration.seed,
            )?;
            quantize_sequential(model, &calibration, &request.rules, method, &mut report)
        }
    }
}

/// Calls the caller's progress callback and remembers the last layer reported, for the message
/// of a cancellation.
struct Reporter {
    progress: lowbit_progress_callback,
    user_data: *mut c_void,
    last_reported: Option<(usize, usize, String)>,
}

impl Reporter {
    fn new(params: &lowbit_quantize_params) -> Self {
        Reporter {
            progress: params.progress,
            user_data: params.user_data,
            last_reported: None,
        }
    }

    fn report(&mut self, done: usize, total: usize, layer: &str) -> bool {
        let Some(progress) = self.progress else {
            return true;
        };
        // Module names are built by lowbit from config-derived ASCII parts: never NUL.
        let layer_text = CString::new(layer).unwrap_or_default();
        self.last_reported = Some((done, total, layer.to_string()));
        // SAFETY: the caller guarantees `progress` follows the lowbit_progress_callback
        // contract; `layer_text` outlives the call and `user_data` is passed untouched.
        unsafe { progress(done, total, layer_text.as_ptr(), self.user_data) }
    }

    /// The failure `error` becomes; a cancellation names the last layer and `outcome`.
    fn failure(&self, error: Error, outcome: &str) -> Failure {
        match (error, &self.last_reported) {
            (Error::Cancelled, Some((done, total, layer))) => Failure::new(
                lowbit_status::LOWBIT_ERR_CANCELLED,
                format!(
                    "cancelled by the progress callback after {layer} ({done} of {total} \
                     layers); {outcome}"
                ),
            ),
            (error, _) => Failure::from(error),
        }
    }
}

/// Calibration settings of a `"gptq"` or `"awq"` request.
struct Calibration {
    sources: Vec<CalibrationSource>,
    samples: usize,
    seq_len: usize,
    seed: u64,
}

/// The Rust values a `lowbit_quantize_params` stands for.
struct QuantizeRequest {
    rules: QuantRules,
    method: Method,
    /// The method's name as `quantization_config` records it.
    method_name: &'static str,
    calibration: Calibration,
}

impl QuantizeRequest {
    /// Parses scheme, method, overrides and (for calibrated methods) the calibration fields.
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
        let (method, method_name) = match method.trim().to_ascii_lowercase().as_str() {
            "rtn" => (
                Method::Rtn(RtnOptions {
                    mse_clip: params.mse_clip,
                }),
                "rtn",
            ),
            "gptq" => (
                Method::Gptq(GptqOptions {
                    act_order: params.act_order,
                    ..GptqOptions::default()
                }),
                "gptq",
            ),
            "awq" => (Method::awq(), "awq"),
            "smoothquant" => (
                Method::SmoothQuant {
                    alpha: DEFAULT_SMOOTHING_ALPHA,
                    gptq: None,
                },
                "smoothquant",
            ),
            "smoothquant+gptq" => (
                Method::SmoothQuant {
                    alpha: DEFAULT_SMOOTHING_ALPHA,
                    gptq: Some(GptqOptions {
                        act_order: params.act_order,
                        ..GptqOptions::default()
                    }),
                },
                "smoothquant+gptq",
            ),
            _ => {
                return Err(Failure::invalid(format!(
                    "params->method '{method}' is not available (this library implements: \
                     {METHODS})"
                )))
            }
        };
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
        let calibration = if matches!(method, Method::Rtn(_)) {
            Calibration {
                sources: Vec::new(),
                samples: 0,
                seq_len: 0,
                seed: 0,
            }
        } else {
            // SAFETY: the calibration pointers follow the caller's contract.
            unsafe { read_calibration(params, method_name) }?
        };
        Ok(QuantizeRequest {
            rules,
            method,
            method_name,
            calibration,
        })
    }
}

/// The calibration fields of `params`, checked.
///
/// # Safety
/// `calibration_files` and `calibration_weights` follow the contract of `lowbit_quantize`.
unsafe fn read_calibration(
    params: &lowbit_quantize_params,
    method: &str,
) -> Result<Calibration, Failure> {
    let count = params.n_calibration_files;
    if count == 0 {
        return Err(Failure::invalid(format!(
            "params->method '{method}' needs calibration text: set params->calibration_files \
             and params->n_calibration_files"
        )));
    }
    // SAFETY: NULL or `count` pointers per the caller's contract.
    let files = unsafe { slice(params.calibration_files, count, "params->calibration_files") }?;
    let weights = if params.calibration_weights.is_null() {
        vec![1.0; count]
    } else {
        // SAFETY: non-NULL, `count` values per the caller's contract.
        unsafe {
            slice(
                params.calibration_weights,
                count,
                "params->calibration_weights",
            )
        }?
        .to_vec()
    };
    let mut sources = Vec::with_capacity(count);
    for (i, (&file, &weight)) in files.iter().zip(&weights).enumerate() {
        let what = format!("params->calibration_files[{i}]");
        // SAFETY: each entry is NULL or NUL-terminated per the caller's contract.
        let path = unsafe { c_str(file, &what) }?;
        if path.is_empty() {
            return Err(Failure::invalid(format!("{what} is empty")));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Failure::invalid(format!(
                "params->calibration_weights[{i}] is {weight}; weights must be positive"
            )));
        }
        sources.push(CalibrationSource {
            path: PathBuf::from(path),
            weight,
        });
    }
    if params.calibration_samples == 0 || params.calibration_seq_len < 2 {
        return Err(Failure::invalid(format!(
            "calibration needs at least 1 sample of at least 2 tokens (params->\
             calibration_samples is {}, params->calibration_seq_len is {})",
            params.calibration_samples, params.calibration_seq_len
        )));
    }
    Ok(Calibration {
        sources,
        samples: params.calibration_samples,
        seq_len: params.calibration_seq_len,
        seed: params.seed,
    })
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
    // SAFETY: per this function's contract.
    unsafe {
        read_versioned(
            params,
            default_quantize_params(),
            &QUANTIZE_PARAMS_LAYOUTS,
            "lowbit_quantize_params",
            "lowbit_quantize_default_params",
        )
    }
}

/// Refuses an output directory that is the directory the model is read from: writing
/// model.safetensors there would truncate the file while it is memory-mapped, which crashes the
/// process rather than failing. Also fails early, before the long quantization, when it is a
/// file. `what` names the argument.
pub(super) fn check_out_dir(model_path: &Path, out_dir: &Path, what: &str) -> Result<(), Failure> {
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Failure::new(
            lowbit_status::LOWBIT_ERR_IO,
            format!(
                "{}: {what} exists and is not a directory",
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
                "{what} {} is the directory the model is read from; choose another directory",
                out_dir.display()
            )));
        }
    }
    Ok(())
}
