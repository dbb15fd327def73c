//! The `lowbit` binary: the README's main command and error handling.

use std::process::Command;

mod common;

fn lowbit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
}

#[test]
fn readme_main_command_prints_generated_text() {
    let out = lowbit()
        .args([
            "generate",
            "--chat",
            "--prompt",
            "What is the capital of France?",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Paris"), "{stdout}");
}

#[test]
fn info_describes_a_checkpoint() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/synthetic/qwen3"
    );
    let out = lowbit().args(["info", "--model", dir]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("Qwen3ForCausalLM") && stdout.contains("of width 32"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    for args in [
        vec![
            "generate",
            "--model",
            "/nonexistent/model",
            "--prompt",
            "hi",
        ],
        vec!["generate", "--prompt"],
        vec!["generate", "--prompt", "x", "--max-tokens", "many"],
        vec!["frobnicate"],
        vec!["info", "--bogus", "1"],
    ] {
        let out = lowbit().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("lowbit:"), "{args:?}: {stderr}");
    }
}

#[test]
fn eval_max_length_alone_bounds_perplexity_windows() {
    // The synthetic Qwen3 checkpoint with a byte-level tokenizer.
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/synthetic/qwen3"
    );
    let tmp = std::env::temp_dir().join(format!("lowbit-cli-eval-{}", std::process::id()));
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(format!("{source}/{file}"), model.join(file)).unwrap();
    }
    std::fs::write(
        model.join("tokenizer.json"),
        lowbit::checkpoint::synthetic::byte_tokenizer_json(),
    )
    .unwrap();
    let dir = model.to_str().unwrap();
    let text = tmp.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(8),
    )
    .unwrap();
    let task = format!("text:{}", text.display());
    let run = |extra: &[&str]| {
        lowbit()
            .args(["eval", "--model", dir, "--tasks", &task, "--no-samples"])
            .args(extra)
            .output()
            .unwrap()
    };
    // 360 byte tokens in windows of at most 64: the default window (2048) follows --max-length.
    let out = run(&["--max-length", "64"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("token_perplexity"),
        "{stderr}"
    );
    // An explicit --context longer than --max-length is still a clear error.
    let out = run(&["--max-length", "64", "--context", "128"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("exceeds max_length 64"), "{stderr}");
    std::fs::remove_dir_all(tmp).ok();
}

/// `--device cuda` without the `cuda` feature, or without a GPU, is an error with a message
/// (exit code 1), never a panic (101); an unknown device is an error too.
#[test]
fn device_errors_are_messages_not_panics() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/synthetic/qwen3"
    );
    let unknown = lowbit()
        .args([
            "generate", "--model", dir, "--prompt", "hi", "--device", "tpu",
        ])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("expected cpu or cuda"));
    let out = lowbit()
        .args([
            "bench",
            "--model",
            dir,
            "--schemes",
            "w8a16",
            "--prompt-tokens",
            "4",
            "--decode-tokens",
            "2",
            "--device",
            "cuda",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // Built with the feature, on a machine with a GPU: it ran there.
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GPU:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A study on a missing GPU stops before its first cell, with the same reason.
    let tmp = std::env::temp_dir().join(format!("lowbit-cli-study-gpu-{}", std::process::id()));
    let study = lowbit()
        .args(["study", "--device", "cuda", "--out"])
        .arg(&tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&study.stderr);
    assert_eq!(study.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CUDA") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!tmp.join("cells").exists(), "the study started: {stderr}");
    std::fs::remove_dir_all(tmp).ok();
}

#[test]
fn flags_take_no_value_wherever_they_stand() {
    // `--no-clip` before another option used to swallow it as its value.
    let model = common::tiny_model_dir("cli-flags-model");
    let dir = common::scratch_dir("cli-flags");
    std::fs::create_dir_all(&dir).unwrap();
    let calib = dir.join("calib.jsonl");
    let rows: Vec<String> = (0..4)
        .map(|r| format!("{{\"text\": \"calibration row {r}: the quick brown fox jumps\"}}"))
        .collect();
    std::fs::write(&calib, rows.join("\n")).unwrap();
    let out_dir = dir.join("awq");
    let out = lowbit()
        .arg("quantize")
        .arg("--model")
        .arg(&model)
        .args(["--scheme", "w4a16-g32", "--method", "awq"])
        .args(["--no-clip", "--out"])
        .arg(&out_dir)
        .args(["--act-order", "--calib"])
        .arg(&calib)
        .args(["--samples", "4", "--seq-len", "16"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out_dir.join("config.json").exists(), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&model).ok();
}
