//! `lowbit bench` on a tiny synthetic model: one JSON line per row with sane numbers, and a
//! clear error for an unknown scheme.

use std::path::PathBuf;
use std::process::Command;

use lowbit::checkpoint::synthetic::{self, Variant};

fn lowbit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lowbit"))
}

/// A synthetic model written to a fresh temporary directory.
fn synthetic_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    synthetic::write(Variant::LlamaGqa, 11, &dir).unwrap()
}

fn number(line: &serde_json::Value, field: &str) -> f64 {
    let value = line[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {line}"));
    assert!(
        value.is_finite() && value > 0.0,
        "{field} = {value} in {line}"
    );
    value
}

#[test]
fn json_lines_cover_every_scheme_with_sane_numbers() {
    let model = synthetic_model("json");
    let out = lowbit()
        .arg("bench")
        .arg("--model")
        .arg(&model)
        .args([
            "--json",
            "--schemes",
            "w4a16-g32,nf4",
            "--prompt-tokens",
            "8",
            "--decode-tokens",
            "4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let schemes: Vec<&str> = lines
        .iter()
        .map(|l| l["scheme"].as_str().unwrap())
        .collect();
    assert_eq!(schemes, ["f32", "bf16", "w4a16-g32", "nf4"], "{stdout}");
    let mut weight_bytes = Vec::new();
    for line in &lines {
        weight_bytes.push(number(line, "weight_bytes"));
        for field in [
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
            "time_to_first_token_s",
            "prefill_s",
            "decode_s",
            "kv_cache_bytes",
        ] {
            number(line, field);
        }
        assert_eq!(line["prompt_tokens"], 8, "{line}");
        assert_eq!(line["decode_tokens"], 4, "{line}");
        if cfg!(target_os = "linux") {
            let peak = number(line, "peak_rss_bytes");
            assert!(peak >= number(line, "rss_bytes"), "{line}");
        }
    }
    // The dense rows carry the input checkpoint's size on disk; quantized rows do not.
    number(&lines[0], "checkpoint_bytes");
    assert!(lines[2]["checkpoint_bytes"].is_null(), "{}", lines[2]);
    let f32_bytes = weight_bytes[0];
    assert!(weight_bytes[1] < f32_bytes, "bf16 {weight_bytes:?}");
    for quantized in &weight_bytes[2..] {
        assert!(*quantized < f32_bytes, "{weight_bytes:?}");
    }
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

#[test]
fn unknown_scheme_fails_with_a_clear_message() {
    let model = synthetic_model("bad");
    let out = lowbit()
        .arg("bench")
        .arg("--model")
        .arg(&model)
        .args(["--schemes", "w4a16-g32,w5a16"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--schemes") && stderr.contains("unknown quantization scheme 'w5a16'"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}
