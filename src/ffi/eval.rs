//! Scoring a model on evaluation tasks (lm-evaluation-harness style): parameters with
//! defaults, a progress callback that can cancel between tasks, and the call that returns the
//! results as JSON text.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::time::Instant;

use super::lowbit_model;
use super::marshal::{c_str, handle_ref, require, slice, to_c_string, write_if_some, write_out};
use super::status::{guard, guard_value, lowbit_status, Failure};
use crate::eval::{evaluate_on, to_json, TaskOptions, TASKS};

/// The data folder of `lowbit_eval_default_params()`, as the Rust API's default.
const DEFAULT_DATA_DIR: &CStr = c"data";

/// The prefix of a task that scores the token perplexity of any text file.
const TEXT_TASK_PREFIX: &str = "text:";

/// Called by `lowbit_eval` before each task starts: `task_index` is the task about to run
/// (0, 1, ..., `task_count - 1`, in the order of `params->tasks`), `task_count` is
/// `params->n_tasks` (the same on every call), and `task` is the task's name,
/// `params->tasks[task_index]`. `user_data` is `params->user_data`. Return true to run the
/// task, false to cancel: `lowbit_eval` then returns `LOWBIT_ERR_CANCELLED` without running it
/// or any later task, and delivers no results. The callback runs on the thread that called
/// `lowbit_eval`; it must not unwind (throw a C++ exception, longjmp) and must not free the
/// model.
#[allow(non_camel_case_types)]
pub type lowbit_eval_progress_callback = Option<
    unsafe extern "C" fn(
        task_index: usize,
        task_count: usize,
        task: *const c_char,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Settings of `lowbit_eval`. Obtain them from `lowbit_eval_default_params()` and change the
/// fields you need (at least `tasks` and `n_tasks`); never build one from scratch, so that
/// `struct_size` is right and fields added by later versions get their defaults.
///
/// The strings and arrays it points to stay the caller's; lowbit reads them only during
/// `lowbit_eval` and keeps no pointer to them afterwards.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_eval_params {
    /// `sizeof(lowbit_eval_params)` as the caller's header defines it. A library accepts the
    /// sizes of its own layout and of every earlier one; others give
    /// `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub struct_size: usize,
    /// The folder holding the data sets, in their published formats (default `"data"`,
    /// relative to the working directory). Each task looks for its own files there:
    /// `arc/ARC-Easy-Test.jsonl`, `arc/ARC-Challenge-Test.jsonl`,
    /// `hellaswag/hellaswag_val.jsonl`, `mmlu/test/` and `mmlu/dev/` (CSV files per subject),
    /// `lambada/lambada_test.jsonl`, `gsm8k/test.jsonl` and `gsm8k/train.jsonl`,
    /// `wikitext/wiki.test.raw` (some tasks accept other usual layouts too). Must not be NULL
    /// or empty.
    pub data_dir: *const c_char,
    /// `n_tasks` task names, run in this order: `"wikitext"`, `"arc_easy"`,
    /// `"arc_challenge"`, `"hellaswag"`, `"mmlu"`, `"lambada_openai"`, `"gsm8k"`,
    /// `"gsm8k_cot"`, or `"text:PATH"` for the perplexity of any UTF-8 text file (PATH as
    /// given, not under `data_dir`; windows of 2048 tokens). Each name may appear once. May be
    /// NULL only when `n_tasks` is 0 (the default), which `lowbit_eval` refuses: set at least
    /// one task.
    pub tasks: *const *const c_char,
    /// Number of strings at `tasks` (default 0).
    pub n_tasks: usize,
    /// Score at most this many documents per task (the first ones, as the harness'
    /// `--limit`); 0 scores all of them (default).
    pub limit: usize,
    /// Few-shot examples per prompt; -1 (default) uses each task's default (0; 5 for
    /// `gsm8k`, 8 for `gsm8k_cot`). Values below -1 give `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub num_fewshot: c_int,
    /// Seed of the few-shot sampler (default 1234, the harness' default).
    pub fewshot_seed: u64,
    /// Longest model input in tokens (inputs are left-truncated to it, as the harness does;
    /// values below 2 count as 2); 0 uses the model's `max_position_embeddings` (default).
    pub max_length: usize,
    /// Keep a record per document (log-likelihoods, predictions, generated text) under the
    /// JSON's `"samples"` key (default true); false leaves each task's list empty.
    pub keep_samples: bool,
    /// Called before each task; may cancel. NULL for none (default).
    pub progress: lowbit_eval_progress_callback,
    /// Passed unchanged to `progress` (default NULL).
    pub user_data: *mut c_void,
}

/// The `struct_size` of the first published layout of `lowbit_eval_params`. Later versions
/// only append fields, accept every size from this one up to their own, and give fields
/// beyond the caller's `struct_size` their defaults.
const EVAL_PARAMS_V1_SIZE: usize = size_of::<lowbit_eval_params>();

// When a field is appended, EVAL_PARAMS_V1_SIZE keeps the old size and read_eval_params must
// copy only `struct_size` bytes over the defaults.
const _: () = assert!(EVAL_PARAMS_V1_SIZE == size_of::<lowbit_eval_params>());

fn default_eval_params() -> lowbit_eval_params {
    let options = TaskOptions::default();
    lowbit_eval_params {
        struct_size: size_of::<lowbit_eval_params>(),
        data_dir: DEFAULT_DATA_DIR.as_ptr(),
        tasks: std::ptr::null(),
        n_tasks: 0,
        limit: 0,
        num_fewshot: -1,
        fewshot_seed: options.fewshot_seed,
        max_length: 0,
        keep_samples: options.keep_samples,
        progress: None,
        user_data: std::ptr::null_mut(),
    }
}

/// The default evaluation settings: data folder `"data"`, no tasks (set `tasks` and
/// `n_tasks`), every document, each task's default number of few-shot examples with seed
/// 1234, the model's own maximum input length, per-document samples kept, no progress
/// callback; `struct_size` is set. The struct is returned by value and its strings are
/// static: nothing to free. Thread-safe.
#[no_mangle]
pub extern "C" fn lowbit_eval_default_params() -> lowbit_eval_params {
    guard_value(
        // Unreachable in practice; a zero struct_size makes any later use fail loudly.
        lowbit_eval_params {
            struct_size: 0,
            ..default_eval_params()
        },
        default_eval_params,
    )
}

/// Scores `model` on the tasks of `params`, one after the other, as lm-evaluation-harness
/// 0.4 does (same prompts, few-shot draws and metrics), reading each task's data from
/// `params->data_dir`. The model must have a tokenizer.
///
/// On success `*results_json` is a new NUL-terminated UTF-8 string, which the caller frees
/// with `lowbit_string_free`: a JSON object laid out like the harness' results file, with
/// `"results"` (per task, `"alias"` and `"METRIC,FILTER"` / `"METRIC_stderr,FILTER"` keys such
/// as `"acc,none"`, `"acc_norm,none"`, `"perplexity,none"`, `"exact_match,strict-match"`; a
/// standard error the harness does not report is `"N/A"`), `"n-samples"`, `"n-shot"`,
/// `"config"` (`"model_args"` is the model's architecture, e.g. `"LlamaForCausalLM"`, since a
/// handle does not remember its path), `"versions"`, `"efficiency"` (seconds, tokens and
/// tokens per second per task), `"total_evaluation_time_seconds"` and `"samples"` (per task;
/// empty lists when `params->keep_samples` is false): the layout `lowbit eval --out` writes.
/// On failure `*results_json` is set to NULL.
///
/// `params` must not be NULL: start from `lowbit_eval_default_params()` and set the tasks.
/// The arguments, every task name and the tokenizer are checked before any task runs; a
/// task's data files are read when it runs. When `params->progress` is set it is
/// called before each task, and returning false from it cancels the call.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model, params, results_json or params->data_dir NULL;
/// params->tasks NULL with n_tasks > 0, or one of its strings NULL),
/// `LOWBIT_ERR_INVALID_ARGUMENT` (wrong `params->struct_size`; n_tasks is 0; data_dir empty;
/// a task name or data_dir not UTF-8; an unknown or repeated task name; num_fewshot below -1;
/// a task's data file missing, the message naming the task, the folder and the files looked
/// for; too few few-shot examples in the data), `LOWBIT_ERR_FORMAT` (a malformed or empty
/// data file; the message names the file and line), `LOWBIT_ERR_IO` (a data file or the
/// file of a `text:` task that cannot be read; the message names it),
/// `LOWBIT_ERR_TOKENIZER` (the model has no tokenizer, or it failed),
/// `LOWBIT_ERR_CANCELLED` (the progress callback returned false; no results are delivered).
/// A failure in a task ends the call; `lowbit_last_error()` then begins with
/// `params->tasks[i] 'NAME':`.
///
/// Thread-safe: several threads may evaluate (and generate with) one model at once; the model
/// is only read. Each call uses all cores. The data files must not change during the call.
///
/// # Safety
/// `model` is NULL or a live model; `params` is NULL or points to a `lowbit_eval_params` whose
/// `struct_size` is set, whose `data_dir` is NULL or NUL-terminated, whose `tasks` is NULL or
/// points to `n_tasks` pointers each NULL or NUL-terminated, and whose `progress` is NULL or a
/// function with the `lowbit_eval_progress_callback` contract, called with `user_data`;
/// `results_json` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn lowbit_eval(
    model: *const lowbit_model,
    params: *const lowbit_eval_params,
    results_json: *mut *mut c_char,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `results_json` is NULL or writable per this function's contract.
        unsafe { write_if_some(results_json, std::ptr::null_mut()) };
        // SAFETY: `model` is NULL or live per this function's contract.
        let handle = unsafe { handle_ref(model) }?;
        let model = &*handle.model;
        require(results_json, "results_json")?;
        // SAFETY: `params` is NULL or a struct with `struct_size` set per this contract.
        let params = unsafe { read_eval_params(params) }?;
        // SAFETY: the pointers inside `params` follow this function's contract.
        let request = unsafe { EvalRequest::from_params(&params) }?;
        // Every task scores text; fail before the first task rather than inside it.
        model.require_tokenizer()?;

        let started = Instant::now();
        let task_count = request.tasks.len();
        let mut results = Vec::with_capacity(task_count);
        for (task_index, (task, task_ptr)) in request.tasks.iter().enumerate() {
            if let Some(progress) = params.progress {
                // SAFETY: the caller guarantees `progress` follows the
                // lowbit_eval_progress_callback contract; `task_ptr` is the caller's string,
                // live for the whole call, and `user_data` is passed untouched.
                let go_on =
                    unsafe { progress(task_index, task_count, *task_ptr, params.user_data) };
                if !go_on {
                    return Err(Failure::new(
                        lowbit_status::LOWBIT_ERR_CANCELLED,
                        format!(
                            "cancelled by the progress callback before task '{task}' ({} of \
                             {task_count}); no results were delivered",
                            task_index + 1
                        ),
                    ));
                }
            }
            // One task per call, so that the callback can cancel between tasks.
            let scored = evaluate_on(
                handle.decoder(),
                std::slice::from_ref(task),
                &request.options,
                &mut |_, _, _| {},
            )
            .map_err(|error| {
                let failure = Failure::from(error);
                Failure::new(
                    failure.status,
                    format!("params->tasks[{task_index}] '{task}': {}", failure.message),
                )
            })?;
            results.extend(scored);
        }

        let json = to_json(&results, model.config().architecture.hf_class(), started);
        let text = serde_json::to_string_pretty(&json).map_err(|error| {
            Failure::new(
                lowbit_status::LOWBIT_ERR_INTERNAL,
                format!("the results could not be written as JSON: {error}"),
            )
        })?;
        let text = to_c_string(text, "the results JSON")?;
        // SAFETY: checked non-NULL above; writable per this function's contract.
        unsafe {
            write_out(
                results_json,
                super::model::owned_c_string(text),
                "results_json",
            )
        }
    })
}

/// The Rust values a `lowbit_eval_params` stands for.
struct EvalRequest {
    /// Each task's name with the caller's pointer to it (passed to the progress callback).
    tasks: Vec<(String, *const c_char)>,
    options: TaskOptions,
}

impl EvalRequest {
    /// Checks and converts data_dir, tasks and the numeric settings.
    ///
    /// # Safety
    /// The pointers in `params` follow the contract of `lowbit_eval`.
    unsafe fn from_params(params: &lowbit_eval_params) -> Result<Self, Failure> {
        // SAFETY: NULL or `n_tasks` pointers per the caller's contract.
        let pointers = unsafe { slice(params.tasks, params.n_tasks, "params->tasks") }?;
        if pointers.is_empty() {
            return Err(Failure::invalid(format!(
                "params->n_tasks is 0; name at least one task ({}, or {TEXT_TASK_PREFIX}PATH)",
                TASKS.join(", ")
            )));
        }
        let mut tasks: Vec<(String, *const c_char)> = Vec::with_capacity(pointers.len());
        for (i, &pointer) in pointers.iter().enumerate() {
            let what = format!("params->tasks[{i}]");
            // SAFETY: each entry is NULL or NUL-terminated per the caller's contract.
            let name = unsafe { c_str(pointer, &what) }?;
            if !TASKS.contains(&name) && !name.starts_with(TEXT_TASK_PREFIX) {
                return Err(Failure::invalid(format!(
                    "{what} is '{name}', an unknown task (known: {}, or {TEXT_TASK_PREFIX}PATH)",
                    TASKS.join(", ")
                )));
            }
            // The results are keyed by task name, so a repeated task would hide the first.
            if let Some(first) = tasks.iter().position(|(known, _)| known == name) {
                return Err(Failure::invalid(format!(
                    "{what} '{name}' repeats params->tasks[{first}]; name each task once"
                )));
            }
            tasks.push((name.to_string(), pointer));
        }

        // SAFETY: NULL or NUL-terminated per the caller's contract.
        let data_dir = unsafe { c_str(params.data_dir, "params->data_dir") }?;
        if data_dir.is_empty() {
            return Err(Failure::invalid("params->data_dir is empty"));
        }
        let num_fewshot = match params.num_fewshot {
            -1 => None,
            n if n >= 0 => Some(n as usize),
            n => {
                return Err(Failure::invalid(format!(
                    "params->num_fewshot is {n}; use -1 for each task's default or a count >= 0"
                )))
            }
        };
        Ok(EvalRequest {
            tasks,
            options: TaskOptions {
                data_dir: PathBuf::from(data_dir),
                limit: (params.limit > 0).then_some(params.limit),
                num_fewshot,
                fewshot_seed: params.fewshot_seed,
                max_length: (params.max_length > 0).then_some(params.max_length),
                keep_samples: params.keep_samples,
                ..TaskOptions::default()
            },
        })
    }
}

/// The caller's parameters; NULL is an error, since the tasks are a choice the caller must
/// make.
///
/// # Safety
/// `params` is NULL or points to a readable struct whose first field is `struct_size`, at
/// least `struct_size` bytes long.
unsafe fn read_eval_params(
    params: *const lowbit_eval_params,
) -> Result<lowbit_eval_params, Failure> {
    if params.is_null() {
        return Err(Failure::new(
            lowbit_status::LOWBIT_ERR_NULL_POINTER,
            "params is NULL; start from lowbit_eval_default_params()",
        ));
    }
    // SAFETY: non-NULL; every layout begins with `size_t struct_size`.
    let struct_size = unsafe { std::ptr::addr_of!((*params).struct_size).read() };
    let known = EVAL_PARAMS_V1_SIZE..=size_of::<lowbit_eval_params>();
    if !known.contains(&struct_size) {
        return Err(Failure::invalid(format!(
            "params->struct_size is {struct_size}; this library (lowbit {}) accepts \
             {} to {} (sizeof(lowbit_eval_params)); start from lowbit_eval_default_params()",
            crate::VERSION,
            known.start(),
            known.end()
        )));
    }
    // SAFETY: the caller's struct is `struct_size` bytes long, which (asserted at compile time)
    // is the whole current layout.
    Ok(unsafe { params.read() })
}
