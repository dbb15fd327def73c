//! Efficiency of a loaded model: size, peak memory, time to first token, prefill and decode
//! speed (the measurement of `lowbit bench`).

use super::lowbit_model;
use super::marshal::{model_ref, out_struct_size, read_versioned, write_versioned};
use super::status::{guard, guard_value, lowbit_status};
use crate::bench::{checkpoint_disk_bytes, measure_on};

/// Prompt tokens of `lowbit_bench_default_params()`, as `lowbit bench` has them.
const DEFAULT_PROMPT_TOKENS: usize = 64;
/// Decode steps of `lowbit_bench_default_params()`, as `lowbit bench` has them.
const DEFAULT_DECODE_TOKENS: usize = 16;

/// Settings of `lowbit_bench`. Obtain them from `lowbit_bench_default_params()` and change the
/// fields you need; never build one from scratch, so that `struct_size` is right and fields
/// added by later versions get their defaults.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_bench_params {
    /// `sizeof(lowbit_bench_params)` as the caller's header defines it. A library accepts the
    /// sizes of its own layout and of every earlier one; others give
    /// `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub struct_size: usize,
    /// Tokens of the prompt run in one prefill pass (default 64); at least 1.
    pub prompt_tokens: usize,
    /// Single-token decode steps after the prefill (default 16); at least 1.
    pub decode_tokens: usize,
}

/// The size of each published layout of `lowbit_bench_params`, oldest first.
const BENCH_PARAMS_LAYOUTS: [usize; 1] = [size_of::<lowbit_bench_params>()];

fn default_bench_params() -> lowbit_bench_params {
    lowbit_bench_params {
        struct_size: size_of::<lowbit_bench_params>(),
        prompt_tokens: DEFAULT_PROMPT_TOKENS,
        decode_tokens: DEFAULT_DECODE_TOKENS,
    }
}

/// The default benchmark settings: 64 prompt tokens, 16 decode steps; `struct_size` is set.
/// The struct is returned by value; nothing to free. Thread-safe.
#[no_mangle]
pub extern "C" fn lowbit_bench_default_params() -> lowbit_bench_params {
    guard_value(
        // Unreachable in practice; a zero struct_size makes any later use fail loudly.
        lowbit_bench_params {
            struct_size: 0,
            ..default_bench_params()
        },
        default_bench_params,
    )
}

/// What `lowbit_bench` measured. The caller sets `struct_size` to `sizeof(lowbit_bench_result)`
/// and `lowbit_bench` fills in the rest. Sizes are bytes, times seconds, rates per second.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_bench_result {
    /// `sizeof(lowbit_bench_result)` as the caller's header defines it; set by the caller. A
    /// library accepts the sizes of its own layout and of every earlier one.
    pub struct_size: usize,
    /// Size on disk of the weights of the checkpoint the model was loaded from: the file's
    /// size for a single file, the summed `.safetensors`/`.gguf` files of a directory
    /// (configuration and tokenizer files not counted); 0 after `lowbit_model_quantize`, when
    /// the files no longer describe the model (`weight_bytes` does).
    pub checkpoint_bytes: u64,
    /// Bytes of weight data in memory: projections (codes, scales and zero points when
    /// quantized), the embedding and an untied LM head.
    pub weight_bytes: u64,
    /// Weight parameters.
    pub parameter_count: u64,
    /// Peak resident memory of the whole process (Linux `VmHWM`), since it started: it
    /// includes whatever the host held before; 0 where the system does not report it.
    pub peak_memory_bytes: u64,
    /// Resident memory of the process after the run (Linux `VmRSS`); 0 where not reported.
    pub memory_bytes: u64,
    /// Bytes of the KV cache after the last decode step.
    pub kv_cache_bytes: u64,
    /// Seconds from the start of the prefill to the first (greedy) token.
    pub time_to_first_token_s: f64,
    /// Prompt tokens per second of the prefill pass.
    pub prefill_tokens_per_s: f64,
    /// Tokens per second of the single-token decode steps.
    pub decode_tokens_per_s: f64,
    /// Prompt tokens run (as asked).
    pub prompt_tokens: usize,
    /// Decode steps run (as asked).
    pub decode_tokens: usize,
    /// Threads the forward passes ran on.
    pub threads: usize,
}

/// The size of each published layout of `lowbit_bench_result`, oldest first.
const BENCH_RESULT_LAYOUTS: [usize; 1] = [size_of::<lowbit_bench_result>()];

/// Measures the efficiency of `model`: one warm-up step, then a prefill of
/// `params->prompt_tokens` fixed token ids and the first greedy token (the time to first
/// token), then `params->decode_tokens` greedy single-token decode steps with the KV cache
/// (end-of-sequence tokens do not stop it), so that two models or schemes do the same work.
/// `params` NULL means `lowbit_bench_default_params()`. Set `out->struct_size` first. Nothing
/// is allocated for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or out NULL), `LOWBIT_ERR_INVALID_ARGUMENT` (wrong
/// `params->struct_size` or `out->struct_size`; a count of 0; more tokens than the model's
/// context), `LOWBIT_ERR_IO` (the checkpoint's files cannot be listed for their size).
///
/// Thread safety: callable on a model other threads use, but the timings then measure shared
/// cores; for meaningful numbers run nothing else. Uses all cores.
///
/// # Safety
/// `model` is NULL or a live model; `params` is NULL or points to a `lowbit_bench_params` whose
/// `struct_size` is set; `out` is NULL or points to a writable `lowbit_bench_result` whose
/// `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn lowbit_bench(
    model: *const lowbit_model,
    params: *const lowbit_bench_params,
    out: *mut lowbit_bench_result,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        unsafe { model_ref(model) }?;
        // SAFETY: as above; the handle is only read.
        let handle = unsafe { &*model };
        let params = if params.is_null() {
            default_bench_params()
        } else {
            // SAFETY: a struct with `struct_size` set, per this function's contract.
            unsafe {
                read_versioned(
                    params,
                    default_bench_params(),
                    &BENCH_PARAMS_LAYOUTS,
                    "lowbit_bench_params",
                    "lowbit_bench_default_params",
                )
            }?
        };
        // SAFETY: NULL or a struct whose `struct_size` is set, per this function's contract.
        unsafe { out_struct_size(out, &BENCH_RESULT_LAYOUTS, "lowbit_bench_result") }?;
        let checkpoint_bytes = match handle.quantized_with {
            Some(_) => 0,
            None => checkpoint_disk_bytes(&handle.source)?,
        };
        let report = measure_on(
            handle.decoder(),
            params.prompt_tokens,
            params.decode_tokens,
            1,
        )?;
        let result = lowbit_bench_result {
            struct_size: size_of::<lowbit_bench_result>(),
            checkpoint_bytes,
            weight_bytes: report.weight_bytes,
            parameter_count: report.parameter_count,
            peak_memory_bytes: report.peak_rss_bytes.unwrap_or(0),
            memory_bytes: report.rss_bytes.unwrap_or(0),
            kv_cache_bytes: report.kv_cache_bytes,
            time_to_first_token_s: report.time_to_first_token_s,
            prefill_tokens_per_s: report.prefill_tokens_per_s,
            decode_tokens_per_s: report.decode_tokens_per_s,
            prompt_tokens: report.prompt_tokens,
            decode_tokens: report.decode_tokens,
            threads: report.threads,
        };
        // SAFETY: non-NULL, a struct whose `struct_size` is set, per this function's contract.
        unsafe { write_versioned(out, result, &BENCH_RESULT_LAYOUTS, "lowbit_bench_result") }
    })
}
