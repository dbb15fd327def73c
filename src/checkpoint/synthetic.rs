//! Tiny checkpoints with seeded random weights, one per supported code path, in the same
//! on-disk form as real ones (config.json + model.safetensors). They let every architecture be
//! tested against the reference implementation without downloading a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Architecture, Checkpoint, Dtype, ModelConfig, RopeScaling, Tensor};
use crate::error::Result;
use crate::model::sampling::Rng;

/// The synthetic variants, each exercising a different path of the loader and forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Llama, GQA (4 query / 2 kv heads), untied head, Llama 3 RoPE scaling, f32.
    LlamaGqa,
    /// Llama, tied head, attention and MLP bias, linear RoPE scaling, f16 storage.
    LlamaTied,
    /// Qwen2: q/k/v bias, tied head, GQA, bf16 storage.
    Qwen2,
    /// Qwen3: q/k RMSNorm, head_dim wider than hidden/heads, untied, YaRN scaling, f32.
    Qwen3,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 4] = [
        Variant::LlamaGqa,
        Variant::LlamaTied,
        Variant::Qwen2,
        Variant::Qwen3,
    ];

    /// Directory name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            Variant::LlamaGqa => "llama_gqa",
            Variant::LlamaTied => "llama_tied",
            Variant::Qwen2 => "qwen2",
            Variant::Qwen3 => "qwen3",
        }
    }

    /// The configuration of the variant.
    pub fn config(self) -> ModelConfig {
        let base = ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            vocab_size: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 256,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            quantization_config: None,
        };
        match self {
            Variant::LlamaGqa => ModelConfig {
                rope_theta: 500000.0,
                rope_scaling: RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 64,
                },
                ..base
            },
            Variant::LlamaTied => ModelConfig {
                num_key_value_heads: 4,
                tie_word_embeddings: true,
                attention_bias: true,
                mlp_bias: true,
                rope_scaling: RopeScaling::Linear { factor: 2.0 },
                ..base
            },
            Variant::Qwen2 => ModelConfig {
                architecture: Architecture::Qwen2,
                rope_theta: 1_000_000.0,
                rms_norm_eps: 1e-6,
                tie_word_embeddings: true,
                attention_bias: true,
                ..base
            },
            Variant::Qwen3 => ModelConfig {
                architecture: Architecture::Qwen3,
                head_dim: 32,
                rms_norm_eps: 1e-6,
                rope_theta: 1_000_000.0,
                rope_scaling: RopeScaling::Yarn {
                    factor: 4.0,
                    original_max_position_embeddings: 64,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    attention_factor: None,
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: true,
                },
                ..base
            },
        }
    }

    /// The storage dtype of the variant's weights.
    pub fn dtype(self) -> Dtype {
        match self {
            Variant::LlamaTied => Dtype::F16,
            Variant::Qwen2 => Dtype::BF16,
            _ => Dtype::F32,
        }
    }
}

/// Builds the variant's checkpoint in memory from `seed`.
pub fn build(variant: Variant, seed: u64) -> Checkpoint {
    build_config(variant.config(), variant.dtype(), variant.name(), seed)
}

/// A checkpoint of any shape with seeded random weights, stored as `dtype` (for speed
/// measurements of real models' shapes without their weights). `name` becomes its path.
pub fn build_config(config: ModelConfig, dtype: Dtype, name: &str, seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let mut tensors = BTreeMap::new();
    // Uniform in [-bound, bound]: weights scaled by 1/sqrt(fan_in) keep activations O(1).
    let mut uniform = |shape: &[usize], bound: f32, offset: f32| -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| offset + bound * (2.0 * rng.next_f64() as f32 - 1.0))
            .collect();
        Tensor::from_f32(shape.to_vec(), data)
    };
    let (h, inter, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim,
    );
    let q_out = config.num_attention_heads * hd;
    let kv_out = config.num_key_value_heads * hd;
    let fan = |n: usize| 1.0 / (n as f32).sqrt();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        uniform(&[config.vocab_size, h], 1.0, 0.0),
    );
    for layer in 0..config.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        let mut linear = |name: &str, out: usize, inp: usize, bias: bool| {
            tensors.insert(
                format!("{p}.{name}.weight"),
                uniform(&[out, inp], fan(inp), 0.0),
            );
            if bias {
                tensors.insert(format!("{p}.{name}.bias"), uniform(&[out], 0.1, 0.0));
            }
        };
        let bias = config.attention_bias;
        linear("self_attn.q_proj", q_out, h, bias);
        linear("self_attn.k_proj", kv_out, h, bias);
        linear("self_attn.v_proj", kv_out, h, bias);
        linear(
            "self_attn.o_proj",
            h,
            q_out,
            bias && config.architecture == Architecture::Llama,
        );
        linear("mlp.gate_proj", inter, h, config.mlp_bias);
        linear("mlp.up_proj", inter, h, config.mlp_bias);
        linear("mlp.down_proj", h, inter, config.mlp_bias);
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(format!("{p}.{norm}.weight"), uniform(&[h], 0.2, 1.0));
        }
        if config.architecture == Architecture::Qwen3 {
            for norm in ["q_norm", "k_norm"] {
                tensors.insert(
                    format!("{p}.self_attn.{norm}.weight"),
                    uniform(&[hd], 0.2, 1.0),
                );
            }
        }
    }
    tensors.insert("model.norm.weight".into(), uniform(&[h], 0.2, 1.0));
    if !config.tie_word_embeddings {
        tensors.insert(
            "lm_head.weight".into(),
            uniform(&[config.vocab_size, h], fan(h), 0.0),
        );
    }
    // Every tensor in the checkpoint dtype, norms and biases included, as the reference saves.
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| (name, t.to_dtype(dtype)))
        .collect();
    Checkpoint::from_parts(PathBuf::from(name), config, tensors, None)
}

/// Writes the variant under `dir/<name>` and returns that directory.
pub fn write(variant: Variant, seed: u64, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(variant.name());
    build(variant, seed).save_hf(&out, variant.dtype())?;
    Ok(out)
}

/// A byte-level tokenizer (`tokenizer.json`) whose 256 ids are the 256 bytes, in GPT-2's
/// byte-to-character mapping, with no merges: it fits the synthetic models' 256-entry
/// vocabulary, so text-level code paths (evaluation, chat, streaming) run on them.
pub fn byte_tokenizer_json() -> String {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut vocab = serde_json::Map::new();
    for (&byte, &c) in printable.iter().zip(&chars) {
        let symbol = char::from_u32(c).expect("valid scalar").to_string();
        vocab.insert(symbol, serde_json::json!(byte));
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}
