//! The C API as a C program sees it: include/lowbit.h is current, its version macros agree with
//! the library, and the examples in ffi-examples/c compile warning-free against the header, link
//! against the cdylib, and give the same results as the Rust API (generate.c with the default
//! model, quantize.c with the default model quantized through lowbit_quantize, eval.c scoring
//! the default model on the fixtures in tests/fixtures/eval).

mod common;

use std::ffi::CStr;
use std::path::Path;

use common::root;
use lowbit::checkpoint::default_model;
use lowbit::model::{GenerateParams, Model};
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

const PROMPT: &str = "The capital of France is";
/// generate.c asks for this many new tokens, greedily.
const NEW_TOKENS: usize = 16;

#[test]
fn committed_header_is_current() {
    let committed = root().join("include/lowbit.h");
    let generated = env!("LOWBIT_GENERATED_HEADER");
    let committed_text = std::fs::read_to_string(&committed).unwrap_or_default();
    let generated_text = std::fs::read_to_string(generated)
        .unwrap_or_else(|e| panic!("reading the generated header {generated}: {e}"));
    assert!(
        committed_text == generated_text,
        "include/lowbit.h differs from the header generated from src/ffi ({generated}).\n\
         Regenerate it with:\n    LOWBIT_UPDATE_HEADER=1 cargo build\nand commit the result."
    );
}

/// The `#define NAME value` of the committed header.
fn header_define(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.starts_with(' ').then(|| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("include/lowbit.h has no #define {name}"))
}

#[test]
fn version_macros_agree_with_the_library() {
    let header = std::fs::read_to_string(root().join("include/lowbit.h")).unwrap();
    let macros = [
        header_define(&header, "LOWBIT_VERSION_MAJOR"),
        header_define(&header, "LOWBIT_VERSION_MINOR"),
        header_define(&header, "LOWBIT_VERSION_PATCH"),
    ];
    assert_eq!(
        macros,
        [
            env!("CARGO_PKG_VERSION_MAJOR"),
            env!("CARGO_PKG_VERSION_MINOR"),
            env!("CARGO_PKG_VERSION_PATCH"),
        ]
    );
    let dotted = macros.join(".");
    assert_eq!(
        header_define(&header, "LOWBIT_VERSION"),
        format!("\"{dotted}\"")
    );
    // SAFETY: lowbit_version returns a static NUL-terminated string.
    let library = unsafe { CStr::from_ptr(lowbit::ffi::lowbit_version()) };
    assert_eq!(library.to_str().unwrap(), dotted);
    assert_eq!(lowbit::VERSION, dotted);
}

/// What the Rust API generates for `prompt` with generate.c's settings.
fn rust_generation(prompt: &str) -> String {
    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    greedy_generation(&Model::load(dir).unwrap(), prompt)
}

/// `NEW_TOKENS` greedy tokens of `model` after `prompt`, as text.
fn greedy_generation(model: &Model, prompt: &str) -> String {
    let tokenizer = model.require_tokenizer().unwrap();
    let ids = tokenizer.encode(prompt, true).unwrap();
    let params = GenerateParams {
        max_new_tokens: NEW_TOKENS,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    let generated = model.generate(&[ids], &params, |_, _| true).unwrap();
    tokenizer.decode(&generated[0].tokens, true).unwrap()
}

/// Compiles ffi-examples/c/`example`.c against the header and the cdylib, runs it with `args`,
/// and returns its standard output after checking that it exited successfully.
fn run_c_example(example: &str, args: &[&str]) -> String {
    let program = common::compile(
        &common::c_compiler(),
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[root().join(format!("ffi-examples/c/{example}.c"))],
        common::Link::Shared,
        example,
    );
    let run = common::run(&program, args);
    let _ = std::fs::remove_file(&program);
    let stdout = common::stdout_of_success(&run, &format!("{example}.c"));
    println!("{stdout}");
    assert!(stdout.contains(&format!("lowbit {} (header", lowbit::VERSION)));
    assert!(stdout.trim_end().ends_with("ok"));
    stdout
}

/// The text an example printed between its `<<<` and `>>>` lines.
fn generated_text(stdout: &str) -> &str {
    let start = stdout.find("<<<\n").expect("a <<< line") + "<<<\n".len();
    let end = stdout.rfind("\n>>>\n").expect("a >>> line");
    &stdout[start..end]
}

#[cfg(unix)]
#[test]
fn c_example_generates_what_the_rust_api_generates() {
    let stdout = run_c_example("generate", &[PROMPT]);
    assert!(stdout.contains("misuse reported: model is NULL"));
    let from_rust = rust_generation(PROMPT);
    assert!(!from_rust.is_empty());
    assert_eq!(generated_text(&stdout), from_rust);
}

#[cfg(unix)]
#[test]
fn c_quantize_example_generates_what_the_rust_api_generates_quantized() {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quantize-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let stdout = run_c_example("quantize", &[out_dir.to_str().unwrap(), PROMPT]);
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(stdout.contains("misuse reported: invalid argument: unknown quantization scheme"));
    assert!(stdout.contains("cancelled as asked: cancelled by the progress callback"));

    // quantize.c's settings: the defaults (w4a16-g128, RTN) with 8-bit down projections.
    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    let mut model = Model::load(dir).unwrap();
    let mut rules = QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap());
    rules.push_override("*.mlp.down_proj=w8a16").unwrap();
    quantize_model(&mut model, &rules, &RtnOptions::default()).unwrap();
    let from_rust = greedy_generation(&model, PROMPT);
    assert!(!from_rust.is_empty());
    assert_eq!(generated_text(&stdout), from_rust);
}

#[cfg(unix)]
#[test]
fn c_eval_example_scores_what_the_rust_api_scores() {
    let fixtures = root().join("tests/fixtures/eval");
    let stdout = run_c_example("eval", &[fixtures.to_str().unwrap()]);
    assert!(stdout.contains("misuse reported: params->tasks[1] is 'arc_medium', an unknown task"));
    assert!(stdout.contains(
        "cancelled as asked: cancelled by the progress callback before task 'lambada_openai'"
    ));
    assert!(stdout.contains("[1/2] arc_easy\n[2/2] lambada_openai\nresults: "));

    // eval.c's settings: the first 5 documents of each task, no samples, other defaults.
    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    let model = Model::load(dir).unwrap();
    let tasks = ["arc_easy".to_string(), "lambada_openai".to_string()];
    let options = lowbit::eval::TaskOptions {
        data_dir: fixtures,
        limit: Some(5),
        keep_samples: false,
        ..Default::default()
    };
    let results = lowbit::eval::evaluate(&model, &tasks, &options, &mut |_, _, _| {}).unwrap();
    for (result, metrics) in results
        .iter()
        .zip([["acc", "acc_norm"], ["acc", "perplexity"]])
    {
        // eval.c prints each value with printf("%.6f"), the same digits as Rust's {:.6}.
        let expected = format!(
            "{}: {}={:.6} {}={:.6} documents={}",
            result.task,
            format_args!("{},none", metrics[0]),
            result.metrics[metrics[0]],
            format_args!("{},none", metrics[1]),
            result.metrics[metrics[1]],
            result.documents
        );
        assert_eq!(result.documents, 5);
        assert!(
            stdout.lines().any(|line| line == expected),
            "expected the line {expected:?} in:\n{stdout}"
        );
    }
}
