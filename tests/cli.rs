//! The `lowbit` binary: the README's main command and error handling.

use std::process::Command;

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
