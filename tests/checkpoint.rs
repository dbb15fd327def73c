//! Checkpoint loading: sharded files, and every kind of bad input giving its own clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::checkpoint::{safetensors, Checkpoint, Dtype, Tensor};
use lowbit::model::Model;
use lowbit::Error;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn synthetic_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    synthetic::write(Variant::LlamaGqa, 5, &dir).unwrap()
}

fn error_text<T: std::fmt::Debug>(r: lowbit::Result<T>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let text = e.to_string();
    (e, text)
}

/// A safetensors file built by hand: `header` JSON, padded to 8 bytes, then `data`.
fn raw_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sharded_checkpoint_gives_the_same_logits() {
    let single = synthetic_dir("single");
    let sharded = scratch("sharded");
    std::fs::copy(single.join("config.json"), sharded.join("config.json")).unwrap();
    let ckpt = Checkpoint::open(&single).unwrap();
    let mut shards = [BTreeMap::new(), BTreeMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in ckpt.tensors().iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        shards[i % 2].insert(name.clone(), t.clone());
        weight_map.insert(name.clone(), serde_json::json!(file));
    }
    for (i, shard) in shards.iter().enumerate() {
        let file = sharded.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        safetensors::write_file(&file, shard).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let tokens = [1u32, 9, 77, 200, 3];
    let a = Model::load(&single).unwrap().logits(&tokens).unwrap();
    let b = Model::load(&sharded).unwrap().logits(&tokens).unwrap();
    assert_eq!(a, b);

    // An index naming a tensor its shard lacks.
    weight_map.insert(
        "model.extra.weight".into(),
        serde_json::json!("model-00001-of-00002.safetensors"),
    );
    let index = serde_json::json!({"weight_map": weight_map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (e, text) = error_text(Checkpoint::open(&sharded));
    assert!(matches!(e, Error::MissingTensor { .. }), "{text}");
    assert!(
        text.contains("model.extra.weight") && text.contains("model-00001-of-00002"),
        "{text}"
    );
}

#[test]
fn truncated_file_names_the_file() {
    let dir = synthetic_dir("truncated");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(matches!(e, Error::Format { .. }), "{text}");
    assert!(text.contains("model.safetensors"), "{text}");
    // Cut inside the header.
    std::fs::write(&file, &bytes[..20]).unwrap();
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(matches!(e, Error::Format { .. }), "{text}");
    // Shorter than the length prefix.
    std::fs::write(&file, &bytes[..3]).unwrap();
    assert!(matches!(Checkpoint::open(&dir), Err(Error::Format { .. })));
}

#[test]
fn header_size_past_end_is_rejected() {
    let dir = synthetic_dir("header");
    let file = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(matches!(e, Error::Format { .. }), "{text}");
    assert!(text.contains("model.safetensors"), "{text}");
}

#[test]
fn overlapping_offsets_are_rejected() {
    let dir = synthetic_dir("overlap");
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    raw_safetensors(&dir.join("model.safetensors"), header, &[0u8; 12]);
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(matches!(e, Error::Format { .. }), "{text}");
    assert!(text.contains("offset") || text.contains("Offset"), "{text}");
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let dir = synthetic_dir("dtype");
    let header =
        r#"{"model.embed_tokens.weight":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    raw_safetensors(&dir.join("model.safetensors"), header, &[0u8; 8]);
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(matches!(e, Error::UnsupportedDtype { .. }), "{text}");
    assert!(
        text.contains("model.embed_tokens.weight") && text.contains("F64"),
        "{text}"
    );
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let ckpt = synthetic::build(Variant::Qwen3, 1);
    let mut tensors = ckpt.tensors().clone();
    tensors.remove("model.layers.1.self_attn.k_norm.weight");
    let broken = Checkpoint::from_parts(
        PathBuf::from("qwen3-broken"),
        ckpt.config().clone(),
        tensors,
        None,
    );
    let (e, text) = error_text(Model::from_checkpoint(&broken, None));
    assert!(matches!(e, Error::MissingTensor { .. }), "{text}");
    assert!(
        text.contains("model.layers.1.self_attn.k_norm.weight"),
        "{text}"
    );

    let mut tensors = ckpt.tensors().clone();
    tensors.insert(
        "model.layers.0.mlp.up_proj.weight".into(),
        Tensor::from_f32(vec![3, 5], vec![0.0; 15]),
    );
    let broken = Checkpoint::from_parts(PathBuf::from("x"), ckpt.config().clone(), tensors, None);
    let (e, text) = error_text(Model::from_checkpoint(&broken, None));
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{text}");
    assert!(text.contains("up_proj") && text.contains("[128, 64]") && text.contains("[3, 5]"));
}

#[test]
fn bad_configs_are_explained() {
    let dir = synthetic_dir("config");
    let config_path = dir.join("config.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut c = good.clone();
                c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
                c
            },
            "GPTNeoXForCausalLM",
        ),
        (
            {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("hidden_size");
                c
            },
            "missing 'hidden_size'",
        ),
        (
            {
                let mut c = good.clone();
                c["num_key_value_heads"] = serde_json::json!(3);
                c
            },
            "not a multiple",
        ),
        (
            {
                let mut c = good.clone();
                c["rope_scaling"] = serde_json::json!({"rope_type": "longrope", "factor": 2.0});
                c
            },
            "longrope",
        ),
    ];
    for (config, needle) in cases {
        std::fs::write(&config_path, config.to_string()).unwrap();
        let (_, text) = error_text(Checkpoint::open(&dir));
        assert!(text.contains(needle), "{needle}: {text}");
        assert!(
            text.contains("config.json") || needle == "GPTNeoXForCausalLM",
            "{text}"
        );
    }
    std::fs::write(&config_path, "{ not json").unwrap();
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(
        matches!(e, Error::Config { .. }) && text.contains("invalid JSON"),
        "{text}"
    );
    std::fs::remove_file(&config_path).unwrap();
    let (e, text) = error_text(Checkpoint::open(&dir));
    assert!(
        matches!(e, Error::Io { .. }) && text.contains("config.json"),
        "{text}"
    );
}

#[test]
fn out_of_vocabulary_tokens_and_empty_prompts_are_errors() {
    let model = Model::load(synthetic_dir("vocab")).unwrap();
    let (e, text) = error_text(model.logits(&[1, 256]));
    assert!(
        matches!(e, Error::InvalidArgument(_)) && text.contains("256"),
        "{text}"
    );
    assert!(matches!(model.logits(&[]), Err(Error::InvalidArgument(_))));
}

#[test]
fn bf16_in_memory_conversion_stays_close_to_f32() {
    let ckpt = synthetic::build(Variant::LlamaGqa, 11);
    let f32_model = Model::from_checkpoint(&ckpt, None).unwrap();
    let bf16_model = Model::from_checkpoint(&ckpt, Some(Dtype::BF16)).unwrap();
    let tokens = [1u32, 50, 60, 70];
    let a = f32_model.logits(&tokens).unwrap();
    let b = bf16_model.logits(&tokens).unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    // bf16 keeps 8 mantissa bits (relative error 2^-9 per weight); logits here are O(1).
    assert!(diff < 0.1, "bf16 vs f32 max abs diff {diff}");
    assert!(diff > 0.0, "bf16 conversion had no effect");
    assert_eq!(bf16_model.weight_bytes() * 2, f32_model.weight_bytes());
}
