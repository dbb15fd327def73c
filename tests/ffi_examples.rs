//! The examples in ffi-examples/ built and run as their users would: the C pipeline against
//! the shared and the static library, the C misuse program, the C++ RAII wrapper scoring a
//! multiple-choice question, and the Go package's `go test`. Each program's output is checked,
//! against the Rust API where it prints numbers or text.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::{
    c_compiler, compile, root, run, scratch_dir, stdout_of_success, tiny_model_dir, Link,
};
use lowbit::checkpoint::default_model;
use lowbit::eval::tasks::encode_pair;
use lowbit::eval::Scorer;
use lowbit::model::{GenerateParams, Model};
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

#[cfg(unix)]
#[test]
fn c_misuse_program_gets_clean_statuses() {
    let model = tiny_model_dir("misuse-model");
    let out = scratch_dir("misuse-out");
    let program = compile(
        &c_compiler(),
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[root().join("ffi-examples/c/misuse.c")],
        Link::Shared,
        "misuse",
    );
    let output = run(&program, &[model.to_str().unwrap(), out.to_str().unwrap()]);
    let _ = std::fs::remove_file(&program);
    let stdout = stdout_of_success(&output, "misuse.c");
    assert!(stdout.trim_end().ends_with("\nok"), "{stdout}");
    assert!(!stdout.contains("FAILED"));
    for line in [
        "null model generate: LOWBIT_ERR_NULL_POINTER: model is NULL",
        "cuda device: LOWBIT_ERR_UNSUPPORTED: device cuda:0: this lowbit was built without CUDA \
         support",
        "use after free: LOWBIT_ERR_INVALID_ARGUMENT: model 0x",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in:\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&model);
    let _ = std::fs::remove_dir_all(&out);
}

/// What the Rust API computes with the default model quantized as pipeline.c quantizes it
/// (RTN, w4a16-g128, 8-bit down projections), quantized once per test process.
fn rust_quantized_default_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
        let mut model = Model::load(dir).unwrap();
        let mut rules = QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap());
        rules.push_override("*.mlp.down_proj=w8a16").unwrap();
        quantize_model(&mut model, &rules, &RtnOptions::default()).unwrap();
        model
    })
}

/// pipeline.c's prompt, token budget and perplexity text.
const PROMPT: &str = "The capital of France is";
const NEW_TOKENS: usize = 16;
const PERPLEXITY_TEXT: &str =
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. \
     It is named after the engineer Gustave Eiffel, whose company designed and built the \
     tower from 1887 to 1889.";

fn check_pipeline(link: Link) {
    let name = format!("pipeline-{link:?}").to_lowercase();
    let program = compile(
        &c_compiler(),
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[root().join("ffi-examples/c/pipeline.c")],
        link,
        &name,
    );
    let out = scratch_dir(&format!("{name}-out"));
    let output = run(&program, &[out.to_str().unwrap(), PROMPT]);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&program);
    let stdout = stdout_of_success(&output, "pipeline.c");
    assert!(stdout.contains(&format!("lowbit {} (header", lowbit::VERSION)));
    // The suite builds lowbit without the `cuda` feature.
    assert!(stdout.contains(
        "cuda refused: device cuda:0: this lowbit was built without CUDA support (build with \
         --features cuda)"
    ));
    assert!(
        stdout.contains("quantized 210 layers in memory"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("\nok"));

    let model = rust_quantized_default_model();
    let tokenizer = model.require_tokenizer().unwrap();
    let ids = tokenizer.encode(PROMPT, true).unwrap();
    let params = GenerateParams {
        max_new_tokens: NEW_TOKENS,
        temperature: 0.0,
        ..GenerateParams::default()
    };
    let generated = model.generate(&[ids], &params, |_, _| true).unwrap();
    let text = tokenizer.decode(&generated[0].tokens, true).unwrap();
    assert!(!text.is_empty());
    assert!(
        stdout.contains(&format!("<<<\n{text}\n>>>\n")),
        "expected the Rust API's text {text:?} in:\n{stdout}"
    );
    assert!(stdout.contains(&format!("streamed: {text}\n")));

    let tokens = tokenizer.encode(PERPLEXITY_TEXT, true).unwrap();
    let loglikelihood = Scorer::new(model).rolling_loglikelihood(&tokens).unwrap();
    let words = PERPLEXITY_TEXT.split_whitespace().count();
    let expected = format!(
        "perplexity: token={:.6} word={:.6} tokens={}",
        (-loglikelihood / tokens.len() as f64).exp(),
        (-loglikelihood / words as f64).exp(),
        tokens.len()
    );
    assert!(
        stdout.lines().any(|l| l == expected),
        "expected {expected:?} in:\n{stdout}"
    );
    assert!(stdout.contains("bench: checkpoint "));
}

#[cfg(unix)]
#[test]
fn c_pipeline_against_the_shared_library() {
    check_pipeline(Link::Shared);
}

#[cfg(unix)]
#[test]
fn c_pipeline_against_the_static_library() {
    check_pipeline(Link::Static);
}

#[cfg(unix)]
#[test]
fn cpp_wrapper_scores_a_multiple_choice_question() {
    if Command::new(common::cxx_compiler())
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "\n\n*** SKIPPING the C++ example: no `{}` on PATH. Install a C++ compiler \
             (Debian: apt-get install g++); .ci/run does. ***\n\n",
            common::cxx_compiler()
        );
        return;
    }
    let wrapper_dir = format!("-I{}", root().join("ffi-examples/cpp").display());
    let program = compile(
        &common::cxx_compiler(),
        &[
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            &wrapper_dir,
        ],
        &[root().join("ffi-examples/cpp/choice.cpp")],
        Link::Shared,
        "choice",
    );
    let output = run(&program, &[]);
    let _ = std::fs::remove_file(&program);
    let stdout = stdout_of_success(&output, "choice.cpp");
    assert!(stdout.contains(&format!("lowbit {} (header", lowbit::VERSION)));
    assert!(
        stdout.contains("caught: LOWBIT_ERR_IO: ") && stdout.contains("/nonexistent/lowbit-model"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("\nok"));

    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    let model = Model::load(dir).unwrap();
    let scorer = Scorer::new(&model);
    let question = "Question: What is the capital of France?\nAnswer:";
    let choices = [" Berlin", " Madrid", " Paris", " Rome"];
    let requests: Vec<_> = choices
        .iter()
        .map(|c| encode_pair(&scorer, question, c).unwrap())
        .collect();
    let scored = scorer.loglikelihood(&requests, &mut |_, _| {}).unwrap();
    let mut best = 0;
    for (i, (choice, s)) in choices.iter().zip(&scored).enumerate() {
        let line = format!(
            "choice {i}: {:.6} {:.6}{choice}",
            s.logprob,
            s.logprob / choice.len() as f64
        );
        assert!(
            stdout.lines().any(|l| l == line),
            "expected {line:?} in:\n{stdout}"
        );
        if s.logprob > scored[best].logprob {
            best = i;
        }
    }
    assert!(stdout.contains(&format!("acc: {best}\n")));
    // A plausibility check of the scoring itself: the model knows this one.
    assert_eq!(choices[best], " Paris");
}

/// Whether the `go` tool runs.
fn go_available() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(target_os = "linux")]
#[test]
fn go_package_tests_pass() {
    if !go_available() {
        eprintln!(
            "\n\n*** SKIPPING the Go example: no `go` on PATH. Install it (Debian: apt-get \
             install golang-go); .ci/run does. ***\n\n"
        );
        return;
    }
    let lib_dir = common::build_native_libs();
    let model = tiny_model_dir("go-model");
    let scratch = scratch_dir("go-home");
    let output = Command::new("go")
        .args(["test", "-v", "-count=1", "./..."])
        .current_dir(root().join("ffi-examples/go"))
        .env("CGO_ENABLED", "1")
        .env(
            "CGO_LDFLAGS",
            format!("-L{0} -Wl,-rpath,{0}", lib_dir.display()),
        )
        // Kept between runs (the scratch folder is not): Go's build cache is what makes a
        // second `go test` fast.
        .env(
            "GOCACHE",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache"),
        )
        .env("GOPATH", scratch.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("LOWBIT_TEST_MODEL", &model)
        .output()
        .expect("running go test");
    let _ = std::fs::remove_dir_all(&model);
    let _ = std::fs::remove_dir_all(&scratch);
    let stdout = stdout_of_success(&output, "go test");
    for test in [
        "TestVersionMatchesHeader",
        "TestMissingModelIsAnIOError",
        "TestCudaLoadsOrIsUnsupported",
        "TestGenerateScorePerplexity",
        "TestErrorsCarryStatusAndMessage",
    ] {
        assert!(
            stdout.contains(&format!("--- PASS: {test} ")),
            "{test} did not pass:\n{stdout}"
        );
    }
    assert!(!stdout.contains("--- SKIP"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("ok ")), "{stdout}");
}
