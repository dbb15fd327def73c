//! The real default model (SmolLM2-135M-Instruct, dequantized from its Q4_1 GGUF) against
//! Hugging Face transformers loading the same GGUF file (tests/reference/make_reference.py).

use std::path::Path;

use lowbit::checkpoint::{default_model, Checkpoint, Tensor};
use lowbit::model::{GenerateParams, Model, TextStream};

/// The foundation issue's bound on logits versus the f32 reference. Observed: see the test
/// output (a few 1e-5: summation order over 30 layers).
const LOGIT_TOLERANCE: f32 = 1e-3;

fn model() -> Model {
    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    Model::load(dir).unwrap()
}

fn reference() -> (serde_json::Value, Checkpoint) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let json = std::fs::read_to_string(root.join("smollm2.json")).unwrap();
    let mut tensors = std::collections::BTreeMap::new();
    lowbit::checkpoint::safetensors::read_file(&root.join("smollm2.safetensors"), &mut tensors)
        .unwrap();
    let config = lowbit::checkpoint::synthetic::Variant::LlamaGqa.config();
    (
        serde_json::from_str(&json).unwrap(),
        Checkpoint::from_parts(root, config, tensors, None),
    )
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    let model = model();
    let (reference, logits_file) = reference();
    let vocab = model.config().vocab_size;
    let cases = reference["cases"].as_array().unwrap();
    let mut prompts = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let prompt = ids(&case["ids"]);
        let logits = model.logits(&prompt).unwrap();
        let expected: &Tensor = logits_file.tensor(&format!("last_logits.{i}")).unwrap();
        let expected = expected.to_f32_vec();
        let last = &logits[(prompt.len() - 1) * vocab..];
        let diff = last
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "case {i}: {} tokens, max abs logit diff {diff:e}",
            prompt.len()
        );
        assert!(diff < LOGIT_TOLERANCE, "case {i}: max abs diff {diff}");
        let argmax: Vec<u32> = logits
            .chunks_exact(vocab)
            .map(|row| lowbit::model::sampling::argmax(row) as u32)
            .collect();
        assert_eq!(
            argmax,
            ids(&case["argmax_all"]),
            "case {i}: per-position argmax"
        );
        prompts.push(prompt);
    }
    // All prompts generate together (ragged batch), without stopping at EOS like the reference.
    let params = GenerateParams {
        max_new_tokens: 32,
        stop_at_eos: false,
        ..Default::default()
    };
    let out = model.generate(&prompts, &params, |_, _| true).unwrap();
    for (case, got) in cases.iter().zip(&out) {
        assert_eq!(got.tokens, ids(&case["greedy"]));
    }
}

#[test]
fn streamed_text_equals_decoded_text() {
    let model = model();
    let tokenizer = model.require_tokenizer().unwrap();
    let prompt = tokenizer
        .encode("Café, naïve — 東京 🚀. The", false)
        .unwrap();
    let params = GenerateParams {
        max_new_tokens: 24,
        temperature: 0.9,
        top_p: 0.95,
        seed: 3,
        ..Default::default()
    };
    let mut stream = TextStream::new(tokenizer);
    let mut streamed = String::new();
    let out = model
        .generate(&[prompt], &params, |_, token| {
            streamed.push_str(&stream.push(token).unwrap());
            true
        })
        .unwrap();
    let full = tokenizer.decode(&out[0].tokens, true).unwrap();
    assert!(full.starts_with(&streamed), "{streamed:?} vs {full:?}");
    assert_eq!(stream.text().unwrap(), full);
    // Same seed, same text.
    let again = model
        .generate(
            &[tokenizer
                .encode("Café, naïve — 東京 🚀. The", false)
                .unwrap()],
            &params,
            |_, _| true,
        )
        .unwrap();
    assert_eq!(again[0].tokens, out[0].tokens);
}
