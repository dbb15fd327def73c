//! lowbit_eval called from Rust as a C caller would: the defaults, every task on small data
//! files in the published formats with results equal to the Rust API's, the settings reaching
//! the Rust options, a progress callback that counts and cancels, every kind of bad argument,
//! failures inside a task (unknown task, missing or malformed data) that name their cause, and
//! one model evaluated from two threads at once.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::checkpoint::Checkpoint;
use lowbit::eval::TaskOptions;
use lowbit::ffi::lowbit_status::*;
use lowbit::ffi::*;
use lowbit::model::Model;
use serde_json::Value;

/// Seed of the synthetic weights (the one tests/eval.rs uses).
const SEED: u64 = 11;

/// The architecture `to_json` records as `model_args` for the synthetic Llama.
const ARCHITECTURE: &str = "LlamaForCausalLM";

/// A model handle that is freed on drop. lowbit documents models as shareable between threads.
struct Handle(*mut lowbit_model);

// SAFETY: lowbit_model is immutable after loading and documented as usable from several
// threads at once; only lowbit_model_free (in Drop, with exclusive access) must not overlap.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    /// The handle as lowbit_eval takes it (a method, so that closures capture the whole
    /// `Handle`, which is Sync, rather than its raw pointer).
    fn ptr(&self) -> *const lowbit_model {
        self.0
    }
}

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
        .join(format!("ffi-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny synthetic Llama with the byte-level tokenizer, saved once per test process; with
/// `tokenizer` false, the same weights without one.
fn model_dir(tokenizer: bool) -> &'static Path {
    static WITH: OnceLock<PathBuf> = OnceLock::new();
    static WITHOUT: OnceLock<PathBuf> = OnceLock::new();
    let (slot, name) = if tokenizer {
        (&WITH, "model")
    } else {
        (&WITHOUT, "model-without-tokenizer")
    };
    slot.get_or_init(|| {
        let base = synthetic::build(Variant::LlamaGqa, SEED);
        let checkpoint = Checkpoint::from_parts(
            base.path().to_path_buf(),
            base.config().clone(),
            base.tensors().clone(),
            tokenizer.then(synthetic::byte_tokenizer_json),
        );
        let dir = scratch(name);
        checkpoint.save(&dir).unwrap();
        dir
    })
}

fn load(path: &Path) -> Handle {
    let path = c_path(path);
    let mut model = null_mut();
    // SAFETY: valid string and out-pointer.
    let status = unsafe { lowbit_model_load(path.as_ptr(), &mut model) };
    assert_eq!(status, LOWBIT_OK, "{}", last_error());
    Handle(model)
}

/// Small data sets in their published formats under `dir`, the file names the tasks look for.
fn write_data(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "arc/ARC-Easy-Test.jsonl",
        concat!(
            r#"{"id":"1","question":{"stem":"Which is hot?","choices":[{"text":"ice","label":"A"},{"text":"fire","label":"B"},{"text":"snow","label":"C"}]},"answerKey":"B"}"#,
            "\n",
            r#"{"id":"2","question":{"stem":"What do plants need?","choices":[{"text":"light","label":"A"},{"text":"noise","label":"B"}]},"answerKey":"A"}"#,
            "\n",
            r#"{"id":"3","question":"Which is a metal?","choices":{"text":["wood","iron","glass","paper"],"label":["1","2","3","4"]},"answerKey":"2"}"#,
            "\n",
        ),
    );
    write(
        "hellaswag/hellaswag_val.jsonl",
        concat!(
            r#"{"activity_label":"Baking","ctx_a":"A man mixes flour.","ctx_b":"then he","endings":["bakes it.","eats it.","sings.","runs."],"label":0}"#,
            "\n",
            r#"{"activity_label":"Running","ctx_a":"A woman ties her shoes.","ctx_b":"she","endings":["runs off.","sleeps.","bakes.","swims."],"label":"0"}"#,
            "\n",
        ),
    );
    write(
        "mmlu/test/high_school_math_test.csv",
        "What is 1+1?,1,2,3,4,B\n\"Pick \"\"C\"\"\",a,b,c,d,C\n",
    );
    write(
        "mmlu/dev/high_school_math_dev.csv",
        "What is 0+0?,0,1,2,3,A\n",
    );
    write(
        "lambada/lambada_test.jsonl",
        "{\"text\": \"the cat sat on the mat\"}\n\
         {\"text\": \"she opened the door and saw the sea\"}\n\
         {\"text\": \"he wrote a letter to his friend\"}\n",
    );
    write(
        "gsm8k/test.jsonl",
        "{\"question\": \"What is 2 + 3?\", \"answer\": \"2 + 3 = 5\\n#### 5\"}\n\
         {\"question\": \"What is 10 - 4?\", \"answer\": \"#### 6\"}\n",
    );
    write(
        "gsm8k/train.jsonl",
        &(0..8)
            .map(|i| format!("{{\"question\": \"q{i}\", \"answer\": \"#### {i}\"}}\n"))
            .collect::<String>(),
    );
    write(
        "wikitext/wiki.test.raw",
        " \n = Title = \n \n The cat @-@ dog sat . \n = Other = \n More text , here . \n",
    );
    write(
        "plain.txt",
        "A small text to score, twice. A small text to score.",
    );
}

/// A data directory of its own for one test.
fn data_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    write_data(&dir);
    dir
}

/// Task names as C strings and the pointer array `lowbit_eval_params::tasks` points to.
struct TaskList {
    _names: Vec<CString>,
    pointers: Vec<*const c_char>,
}

fn task_list(names: &[String]) -> TaskList {
    let names: Vec<CString> = names.iter().map(|n| c(n)).collect();
    let pointers = names.iter().map(|n| n.as_ptr()).collect();
    TaskList {
        _names: names,
        pointers,
    }
}

/// The defaults with `data_dir` and `tasks` set.
fn params_for(data_dir: &CStr, tasks: &TaskList) -> lowbit_eval_params {
    lowbit_eval_params {
        data_dir: data_dir.as_ptr(),
        tasks: tasks.pointers.as_ptr(),
        n_tasks: tasks.pointers.len(),
        ..lowbit_eval_default_params()
    }
}

/// What the progress callback saw; it cancels when asked to start task `cancel_at`.
#[derive(Default)]
struct Progress {
    calls: Vec<(usize, usize, String)>,
    cancel_at: Option<usize>,
}

unsafe extern "C" fn record(
    task_index: usize,
    task_count: usize,
    task: *const c_char,
    user_data: *mut c_void,
) -> bool {
    // SAFETY: user_data is the &mut Progress that `eval` below put in the params.
    let progress = unsafe { &mut *user_data.cast::<Progress>() };
    // SAFETY: lowbit passes the caller's NUL-terminated task name, valid during the call.
    let task = unsafe { CStr::from_ptr(task) }.to_str().unwrap();
    progress
        .calls
        .push((task_index, task_count, task.to_string()));
    progress.cancel_at != Some(task_index)
}

/// What one lowbit_eval call gave.
struct Outcome {
    status: lowbit_status,
    json: Option<Value>,
    calls: Vec<(usize, usize, String)>,
}

/// Runs lowbit_eval with `params` (their callback replaced by `record`, cancelling at
/// `cancel_at`); checks that `*results_json` is set exactly on success and frees it.
fn eval(
    model: *const lowbit_model,
    params: lowbit_eval_params,
    cancel_at: Option<usize>,
) -> Outcome {
    let mut progress = Progress {
        cancel_at,
        ..Progress::default()
    };
    let params = lowbit_eval_params {
        progress: Some(record),
        user_data: (&mut progress as *mut Progress).cast(),
        ..params
    };
    // Not NULL, so that the test sees lowbit clear it on failure.
    let mut out: *mut c_char = std::ptr::dangling_mut();
    // SAFETY: params with valid pointers and a callback whose user data outlives the call.
    let status = unsafe { lowbit_eval(model, &params, &mut out) };
    let json = if status == LOWBIT_OK {
        assert!(!out.is_null());
        // SAFETY: on success `out` is a NUL-terminated string owned by the caller.
        let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
        // SAFETY: freed once, as documented.
        unsafe { lowbit_string_free(out) };
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    } else {
        assert!(out.is_null(), "results_json is NULL after a failure");
        None
    };
    Outcome {
        status,
        json,
        calls: progress.calls,
    }
}

/// The Rust API's results JSON for the same tasks and options, through text as lowbit_eval
/// delivers it (serde_json's default parser may round the last bit of a float; the same
/// text parses to the same values).
fn rust_json(tasks: &[String], options: &TaskOptions) -> Value {
    let model = Model::load(model_dir(true)).unwrap();
    let started = std::time::Instant::now();
    let results = lowbit::eval::evaluate(&model, tasks, options, &mut |_, _, _| {}).unwrap();
    let json = lowbit::eval::to_json(&results, ARCHITECTURE, started);
    serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap()
}

/// `json` without the wall times and the process's peak memory, which differ from run to run.
fn without_timing(mut json: Value) -> Value {
    let object = json.as_object_mut().unwrap();
    assert!(object.remove("total_evaluation_time_seconds").is_some());
    assert!(object.remove("peak_rss_bytes").is_some());
    for task in object["efficiency"].as_object_mut().unwrap().values_mut() {
        let task = task.as_object_mut().unwrap();
        assert!(task.remove("seconds").unwrap().as_f64().unwrap() >= 0.0);
        assert!(task.remove("tokens_per_second").is_some());
    }
    json
}

/// Every task: the benchmarks on the files of `write_data` and a text file.
fn every_task(dir: &Path) -> Vec<String> {
    let mut tasks: Vec<String> = [
        "arc_easy",
        "hellaswag",
        "mmlu",
        "lambada_openai",
        "gsm8k",
        "wikitext",
    ]
    .map(String::from)
    .to_vec();
    tasks.push(format!("text:{}", dir.join("plain.txt").display()));
    tasks
}

#[test]
fn default_params_are_the_rust_defaults() {
    let params = lowbit_eval_default_params();
    let options = TaskOptions::default();
    assert_eq!(params.struct_size, size_of::<lowbit_eval_params>());
    // SAFETY: the default data_dir is a static NUL-terminated string.
    let data_dir = unsafe { CStr::from_ptr(params.data_dir) };
    assert_eq!(Path::new(data_dir.to_str().unwrap()), options.data_dir);
    assert!(params.tasks.is_null());
    assert_eq!(params.n_tasks, 0);
    assert_eq!(params.limit, 0);
    assert_eq!(params.num_fewshot, -1);
    assert_eq!(params.fewshot_seed, options.fewshot_seed);
    assert_eq!(params.fewshot_seed, 1234);
    assert_eq!(params.max_length, 0);
    assert_eq!(params.keep_samples, options.keep_samples);
    assert!(params.progress.is_none());
    assert!(params.user_data.is_null());
}

#[test]
fn every_task_gives_the_results_of_the_rust_api() {
    let model = load(model_dir(true));
    let dir = data_dir("every-task");
    let tasks = every_task(&dir);
    let list = task_list(&tasks);
    let dir_c = c_path(&dir);
    let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
    assert_eq!(outcome.status, LOWBIT_OK, "{}", last_error());
    assert_eq!(last_error(), "");

    // The progress callback: once per task, in order, before each.
    let expected_calls: Vec<(usize, usize, String)> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (i, tasks.len(), t.clone()))
        .collect();
    assert_eq!(outcome.calls, expected_calls);

    let json = outcome.json.unwrap();
    let results = json["results"].as_object().unwrap();
    assert_eq!(results.len(), tasks.len());
    for task in &tasks {
        let metrics = results[task]
            .as_object()
            .unwrap_or_else(|| panic!("{task}"));
        assert_eq!(metrics["alias"], Value::from(task.as_str()));
        let values: Vec<(&String, &Value)> = metrics
            .iter()
            .filter(|(k, _)| *k != "alias" && !k.contains("_stderr,"))
            .collect();
        assert!(!values.is_empty(), "{task} has no metrics");
        for (key, value) in values {
            let value = value
                .as_f64()
                .unwrap_or_else(|| panic!("{task} {key}: {value}"));
            assert!(value.is_finite(), "{task} {key} = {value}");
        }
        assert!(json["n-samples"][task]["effective"].as_u64().unwrap() > 0);
        assert!(!json["samples"][task].as_array().unwrap().is_empty());
    }
    assert!(results["arc_easy"]["acc,none"].is_f64());
    assert!(results["lambada_openai"]["perplexity,none"].is_f64());
    assert!(results["gsm8k"]["exact_match,strict-match"].is_f64());
    assert_eq!(json["n-shot"]["gsm8k"], 5);
    assert_eq!(json["config"]["model_args"], ARCHITECTURE);
    assert_eq!(json["versions"]["lowbit"], lowbit::VERSION);

    let options = TaskOptions {
        data_dir: dir.clone(),
        ..TaskOptions::default()
    };
    assert_eq!(
        without_timing(json),
        without_timing(rust_json(&tasks, &options))
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn settings_reach_the_rust_options() {
    let model = load(model_dir(true));
    let dir = data_dir("settings");
    let tasks: Vec<String> = ["arc_easy", "mmlu", "lambada_openai", "gsm8k"]
        .map(String::from)
        .to_vec();
    let list = task_list(&tasks);
    let dir_c = c_path(&dir);
    let params = lowbit_eval_params {
        limit: 1,
        num_fewshot: 1,
        fewshot_seed: 7,
        max_length: 48,
        keep_samples: false,
        ..params_for(&dir_c, &list)
    };
    let outcome = eval(model.ptr(), params, None);
    assert_eq!(outcome.status, LOWBIT_OK, "{}", last_error());
    let json = outcome.json.unwrap();
    for task in &tasks {
        assert_eq!(json["n-samples"][task]["effective"], 1, "{task}");
        assert_eq!(json["samples"][task], Value::Array(vec![]), "{task}");
    }
    // Of these tasks only MMLU and GSM8K take few-shot examples (as in the harness' configs).
    for (task, shots) in [
        ("arc_easy", 0),
        ("mmlu", 1),
        ("lambada_openai", 0),
        ("gsm8k", 1),
    ] {
        assert_eq!(json["n-shot"][task], shots, "{task}");
    }
    let options = TaskOptions {
        data_dir: dir.clone(),
        limit: Some(1),
        num_fewshot: Some(1),
        fewshot_seed: 7,
        max_length: Some(48),
        keep_samples: false,
        ..TaskOptions::default()
    };
    let expected = rust_json(&tasks, &options);
    assert_eq!(without_timing(json), without_timing(expected.clone()));
    // The settings change the scores: the defaults do not give the same numbers.
    let defaults = rust_json(
        &tasks,
        &TaskOptions {
            data_dir: dir.clone(),
            ..TaskOptions::default()
        },
    );
    assert_ne!(expected["results"], defaults["results"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn returning_false_from_progress_cancels_before_the_task() {
    let model = load(model_dir(true));
    let dir = data_dir("cancel");
    let tasks: Vec<String> = ["arc_easy", "lambada_openai", "hellaswag"]
        .map(String::from)
        .to_vec();
    let list = task_list(&tasks);
    let dir_c = c_path(&dir);
    for cancel_at in 0..tasks.len() {
        let outcome = eval(model.ptr(), params_for(&dir_c, &list), Some(cancel_at));
        assert_eq!(outcome.status, LOWBIT_ERR_CANCELLED);
        assert_eq!(
            outcome.calls.len(),
            cancel_at + 1,
            "no task after the cancelled one"
        );
        assert_eq!(outcome.calls[cancel_at].2, tasks[cancel_at]);
        assert_eq!(
            last_error(),
            format!(
                "cancelled by the progress callback before task '{}' ({} of {}); no results \
                 were delivered",
                tasks[cancel_at],
                cancel_at + 1,
                tasks.len()
            )
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_arguments_are_errors_with_messages() {
    let model = load(model_dir(true));
    let dir = data_dir("bad");
    let tasks: Vec<String> = vec!["arc_easy".into()];
    let list = task_list(&tasks);
    let dir_c = c_path(&dir);
    let defaults = params_for(&dir_c, &list);

    // NULL model, params and out-pointer.
    let mut out: *mut c_char = std::ptr::dangling_mut();
    // SAFETY: every pointer is valid or NULL.
    unsafe {
        assert_eq!(
            lowbit_eval(null(), &defaults, &mut out),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "model is NULL");
        assert!(out.is_null());
        out = std::ptr::dangling_mut();
        assert_eq!(
            lowbit_eval(model.ptr(), null(), &mut out),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(
            last_error(),
            "params is NULL; start from lowbit_eval_default_params()"
        );
        assert!(out.is_null());
        assert_eq!(
            lowbit_eval(model.ptr(), &defaults, null_mut()),
            LOWBIT_ERR_NULL_POINTER
        );
        assert_eq!(last_error(), "results_json is NULL");
    }

    // A model without a tokenizer cannot score text.
    let bare = load(model_dir(false));
    let outcome = eval(bare.ptr(), defaults, None);
    assert_eq!(outcome.status, LOWBIT_ERR_TOKENIZER, "{}", last_error());
    assert!(last_error().contains("tokenizer"), "{}", last_error());
    assert!(outcome.calls.is_empty());

    // Bad settings, each with its status and a message naming the culprit.
    let not_utf8 = CString::new(b"arc_\xff".to_vec()).unwrap();
    let not_utf8_dir = CString::new(b"data\xfe".to_vec()).unwrap();
    let empty = c("");
    let nope = c("nope");
    let arc = c("arc_easy");
    let with_null = [arc.as_ptr(), null()];
    let with_not_utf8 = [not_utf8.as_ptr()];
    let with_unknown = [arc.as_ptr(), nope.as_ptr()];
    let repeated = [arc.as_ptr(), arc.as_ptr()];
    let cases: Vec<(lowbit_eval_params, lowbit_status, &str)> = vec![
        (
            lowbit_eval_params {
                struct_size: 0,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->struct_size is 0",
        ),
        (
            lowbit_eval_params {
                struct_size: size_of::<lowbit_eval_params>() + 8,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "sizeof(lowbit_eval_params)",
        ),
        (
            lowbit_eval_params {
                n_tasks: 0,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->n_tasks is 0; name at least one task (wikitext, arc_easy",
        ),
        (
            lowbit_eval_params {
                tasks: null(),
                n_tasks: 0,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->n_tasks is 0",
        ),
        (
            lowbit_eval_params {
                tasks: null(),
                n_tasks: 1,
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->tasks is NULL",
        ),
        (
            lowbit_eval_params {
                tasks: with_null.as_ptr(),
                n_tasks: 2,
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->tasks[1] is NULL",
        ),
        (
            lowbit_eval_params {
                tasks: with_not_utf8.as_ptr(),
                n_tasks: 1,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->tasks[0] is not valid UTF-8",
        ),
        (
            lowbit_eval_params {
                tasks: with_unknown.as_ptr(),
                n_tasks: 2,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->tasks[1] is 'nope', an unknown task (known: wikitext, arc_easy, \
             arc_challenge, hellaswag, mmlu, lambada_openai, gsm8k, gsm8k_cot, or text:PATH)",
        ),
        (
            lowbit_eval_params {
                tasks: repeated.as_ptr(),
                n_tasks: 2,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->tasks[1] 'arc_easy' repeats params->tasks[0]",
        ),
        (
            lowbit_eval_params {
                data_dir: null(),
                ..defaults
            },
            LOWBIT_ERR_NULL_POINTER,
            "params->data_dir is NULL",
        ),
        (
            lowbit_eval_params {
                data_dir: not_utf8_dir.as_ptr(),
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->data_dir is not valid UTF-8",
        ),
        (
            lowbit_eval_params {
                data_dir: empty.as_ptr(),
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->data_dir is empty",
        ),
        (
            lowbit_eval_params {
                num_fewshot: -2,
                ..defaults
            },
            LOWBIT_ERR_INVALID_ARGUMENT,
            "params->num_fewshot is -2; use -1 for each task's default or a count >= 0",
        ),
    ];
    for (params, status, message) in cases {
        let outcome = eval(model.ptr(), params, None);
        assert_eq!(outcome.status, status, "{message}: {}", last_error());
        assert!(
            last_error().contains(message),
            "{} / {message}",
            last_error()
        );
        assert!(
            outcome.calls.is_empty(),
            "settings are checked before any task runs"
        );
    }
    // The same settings run once corrected.
    assert_eq!(eval(model.ptr(), defaults, None).status, LOWBIT_OK);
    assert_eq!(last_error(), "");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn failures_inside_a_task_name_the_task_and_file() {
    let model = load(model_dir(true));
    let dir = data_dir("task-failures");
    let dir_c = c_path(&dir);

    // A missing data file: the task, the folder and the files looked for; earlier tasks ran.
    let tasks: Vec<String> = vec!["arc_easy".into(), "arc_challenge".into()];
    let list = task_list(&tasks);
    let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
    assert_eq!(outcome.status, LOWBIT_ERR_INVALID_ARGUMENT);
    let message = last_error();
    assert!(
        message.starts_with("params->tasks[1] 'arc_challenge': "),
        "{message}"
    );
    assert!(message.contains("no data file under"), "{message}");
    assert!(message.contains(dir.to_str().unwrap()), "{message}");
    assert!(
        message.contains("arc/ARC-Challenge-Test.jsonl"),
        "{message}"
    );
    assert_eq!(outcome.calls.len(), 2);

    // A missing text file: LOWBIT_ERR_IO naming it.
    let missing = dir.join("absent.txt");
    let list = task_list(&[format!("text:{}", missing.display())]);
    let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
    assert_eq!(outcome.status, LOWBIT_ERR_IO);
    assert!(
        last_error().contains(missing.to_str().unwrap()),
        "{}",
        last_error()
    );

    // A malformed record: LOWBIT_ERR_FORMAT naming the file and line.
    let lambada = dir.join("lambada/lambada_test.jsonl");
    std::fs::write(&lambada, "{\"text\": \"a b\"}\n{\"text\": 1}\n").unwrap();
    let list = task_list(&["lambada_openai".to_string()]);
    let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
    assert_eq!(outcome.status, LOWBIT_ERR_FORMAT);
    let message = last_error();
    assert!(
        message.starts_with("params->tasks[0] 'lambada_openai': "),
        "{message}"
    );
    assert!(message.contains(lambada.to_str().unwrap()), "{message}");
    assert!(message.contains("line 2"), "{message}");

    // Too few examples for the few-shot prompts.
    std::fs::write(
        dir.join("gsm8k/train.jsonl"),
        "{\"question\": \"q\", \"answer\": \"#### 1\"}\n",
    )
    .unwrap();
    let list = task_list(&["gsm8k".to_string()]);
    let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
    assert_eq!(
        outcome.status,
        LOWBIT_ERR_INVALID_ARGUMENT,
        "{}",
        last_error()
    );
    assert!(
        last_error().starts_with("params->tasks[0] 'gsm8k': "),
        "{}",
        last_error()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn one_model_evaluates_on_two_threads_at_once() {
    let model = load(model_dir(true));
    let dir = data_dir("threads");
    let tasks: Vec<String> = ["arc_easy", "lambada_openai"].map(String::from).to_vec();
    let dir_c = c_path(&dir);
    let run = || {
        let list = task_list(&tasks);
        let outcome = eval(model.ptr(), params_for(&dir_c, &list), None);
        assert_eq!(outcome.status, LOWBIT_OK, "{}", last_error());
        without_timing(outcome.json.unwrap())
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(run);
        let b = scope.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, b);
    let options = TaskOptions {
        data_dir: dir.clone(),
        ..TaskOptions::default()
    };
    assert_eq!(a, without_timing(rust_json(&tasks, &options)));
    std::fs::remove_dir_all(&dir).ok();
}
