//! The forward pass of every synthetic architecture against Hugging Face transformers.
//!
//! The checkpoints in tests/fixtures/synthetic are written by `lowbit::checkpoint::synthetic`
//! (checked byte for byte below); their reference logits in tests/fixtures/reference come from
//! tests/reference/make_reference.py.

use std::path::{Path, PathBuf};

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::model::{GenerateParams, Logits, Model};

/// Max-abs logit difference allowed against the f32 reference (the foundation issue's bound;
/// observed differences are ~1e-6, summation order only).
const LOGIT_TOLERANCE: f32 = 1e-3;
/// Seed the committed synthetic checkpoints were written with.
const SEED: u64 = 20261123;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(variant: Variant) -> serde_json::Value {
    let path = fixtures()
        .join("reference")
        .join(format!("{}.json", variant.name()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn synthetic_fixtures_are_what_the_helper_writes() {
    let dir = std::env::temp_dir().join(format!("lowbit-synth-{}", std::process::id()));
    let regenerate = std::env::var_os("LOWBIT_WRITE_FIXTURES").is_some();
    for variant in Variant::ALL {
        let out = if regenerate {
            synthetic::write(variant, SEED, &fixtures().join("synthetic")).unwrap()
        } else {
            synthetic::write(variant, SEED, &dir).unwrap()
        };
        let committed = fixtures().join("synthetic").join(variant.name());
        for file in ["config.json", "model.safetensors"] {
            let a = std::fs::read(out.join(file)).unwrap();
            let b = std::fs::read(committed.join(file)).unwrap();
            assert!(
                a == b,
                "{}/{file} differs from the helper's output",
                variant.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn logits_match_reference_for_every_architecture() {
    for variant in Variant::ALL {
        let model = Model::load(fixtures().join("synthetic").join(variant.name())).unwrap();
        let reference = reference(variant);
        let cases = reference["cases"].as_array().unwrap();
        let vocab = model.config().vocab_size;
        for case in cases {
            let prompt = ids(&case["ids"]);
            let logits = model.logits(&prompt).unwrap();
            if let Some(all) = case.get("logits") {
                let expected: Vec<f32> = all.as_array().unwrap().iter().flat_map(floats).collect();
                let diff = max_abs_diff(&logits, &expected);
                assert!(
                    diff < LOGIT_TOLERANCE,
                    "{}: max abs diff {diff}",
                    variant.name()
                );
            }
            if let Some(last) = case.get("last_logits") {
                let got = &logits[(prompt.len() - 1) * vocab..];
                let diff = max_abs_diff(got, &floats(last));
                assert!(
                    diff < LOGIT_TOLERANCE,
                    "{} long: max abs diff {diff}",
                    variant.name()
                );
            }
        }
    }
}

#[test]
fn batched_greedy_generation_matches_reference() {
    for variant in Variant::ALL {
        let model = Model::load(fixtures().join("synthetic").join(variant.name())).unwrap();
        let reference = reference(variant);
        let cases: Vec<_> = reference["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("greedy").is_some())
            .collect();
        let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
        let params = GenerateParams {
            max_new_tokens: 32,
            stop_at_eos: false,
            ..Default::default()
        };
        let out = model.generate(&prompts, &params, |_, _| true).unwrap();
        for (case, got) in cases.iter().zip(&out) {
            assert_eq!(got.tokens, ids(&case["greedy"]), "{}", variant.name());
        }
    }
}

#[test]
fn incremental_decoding_equals_full_recomputation() {
    let model = Model::load(fixtures().join("synthetic/qwen3")).unwrap();
    let prompt: Vec<u32> = (0..20).map(|i| (i * 13 + 5) % 256).collect();
    let full = model.logits(&prompt).unwrap();
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    model.forward(&prompt[..7], &mut cache).unwrap();
    for (i, &t) in prompt.iter().enumerate().skip(7) {
        let step = model
            .forward_batch(&[&[t]], &mut [&mut cache], Logits::Last)
            .unwrap();
        let diff = max_abs_diff(&step[0], &full[i * vocab..(i + 1) * vocab]);
        assert!(diff < 1e-4, "position {i}: {diff}");
    }
}
