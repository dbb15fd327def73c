//! `config.json` of Hugging Face decoder checkpoints: Llama, Qwen2 (and Qwen2.5), Qwen3.
//!
//! Both the classic layout (`rope_theta` + `rope_scaling`) and the newer `rope_parameters`
//! layout are read. Missing optional fields take the defaults of the reference implementation.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The decoder families lowbit implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama family (Llama 2/3, SmolLM, Mistral-style without sliding window).
    Llama,
    /// Qwen2 and Qwen2.5: bias on q/k/v projections.
    Qwen2,
    /// Qwen3: RMSNorm on each head of q and k, no projection bias.
    Qwen3,
}

impl Architecture {
    /// The `architectures[0]` string of config.json.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The `model_type` string of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }

    fn from_names(class: Option<&str>, model_type: Option<&str>) -> Result<Self> {
        match (class, model_type) {
            (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => Ok(Architecture::Llama),
            (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Ok(Architecture::Qwen2),
            (Some("Qwen3ForCausalLM"), _) | (None, Some("qwen3")) => Ok(Architecture::Qwen3),
            (Some(other), _) | (None, Some(other)) => {
                Err(Error::UnsupportedArchitecture(other.to_string()))
            }
            (None, None) => Err(Error::UnsupportedArchitecture(
                "<neither architectures nor model_type given>".into(),
            )),
        }
    }
}

/// How rotary position frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// NTK-aware base rescaling once the sequence exceeds `original_max_position_embeddings`.
    Dynamic {
        /// Scale factor.
        factor: f64,
        /// Context the model was trained with.
        original_max_position_embeddings: usize,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// Scale factor.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are left alone.
        high_freq_factor: f64,
        /// Context the model was trained with.
        original_max_position_embeddings: usize,
    },
    /// YaRN (used by Qwen for long contexts).
    Yarn {
        /// Scale factor.
        factor: f64,
        /// Context the model was trained with.
        original_max_position_embeddings: usize,
        /// Rotations above which dimensions are extrapolated.
        beta_fast: f64,
        /// Rotations below which dimensions are interpolated.
        beta_slow: f64,
        /// Explicit attention (cos/sin) factor, if given.
        attention_factor: Option<f64>,
        /// `mscale` of the config, if given.
        mscale: Option<f64>,
        /// `mscale_all_dim` of the config, if given.
        mscale_all_dim: Option<f64>,
        /// Whether correction bounds are rounded to whole dimensions.
        truncate: bool,
    },
}

/// Everything the forward pass needs to know about a checkpoint's shape and numerics.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The decoder family.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE rescaling.
    pub rope_scaling: RopeScaling,
    /// Longest context the configuration declares.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v (and, for Llama, o) projections.
    pub attention_bias: bool,
    /// Bias on the MLP projections (Llama only).
    pub mlp_bias: bool,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// The `quantization_config` object of a quantized checkpoint, kept as JSON for the
    /// quantization layer to interpret.
    pub quantization_config: Option<Value>,
}

fn get_usize(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| Error::config(path, format!("'{key}' must be a non-negative integer"))),
    }
}

fn get_f64(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::config(path, format!("'{key}' must be a number"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| Error::config(path, format!("'{key}' must be true or false"))),
    }
}

fn require_usize(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<usize> {
    get_usize(obj, key, path)?.ok_or_else(|| Error::config(path, format!("missing '{key}'")))
}

fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Reads and validates `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses a config.json text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(path, format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config(path, "top level must be an object"))?;
        let class = obj
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str());
        let model_type = obj.get("model_type").and_then(|m| m.as_str());
        let architecture = Architecture::from_names(class, model_type)?;

        let hidden_size = require_usize(obj, "hidden_size", path)?;
        let num_attention_heads = require_usize(obj, "num_attention_heads", path)?;
        let num_key_value_heads =
            get_usize(obj, "num_key_value_heads", path)?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(Error::config(path, "head counts must be positive"));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::config(
                path,
                format!(
                    "num_attention_heads ({num_attention_heads}) is not a multiple of \
                     num_key_value_heads ({num_key_value_heads})"
                ),
            ));
        }
        let head_dim = match get_usize(obj, "head_dim", path)? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        path,
                        "hidden_size is not a multiple of num_attention_heads and no head_dim",
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::config(
                path,
                format!("head_dim {head_dim} must be even"),
            ));
        }
        if get_bool(obj, "use_sliding_window", path)? == Some(true) {
            return Err(Error::config(
                path,
                "sliding-window attention is not supported",
            ));
        }
        let max_position_embeddings =
            get_usize(obj, "max_position_embeddings", path)?.unwrap_or(2048);

        // Newer configs fold theta and scaling into `rope_parameters`.
        let rope_params = obj.get("rope_parameters").and_then(|v| v.as_object());
        let rope_theta = get_f64(obj, "rope_theta", path)?
            .or(match rope_params {
                Some(p) => get_f64(p, "rope_theta", path)?,
                None => None,
            })
            .unwrap_or(10000.0);
        let scaling_obj = obj
            .get("rope_scaling")
            .and_then(|v| v.as_object())
            .or(rope_params);
        let rope_scaling = match scaling_obj {
            None => RopeScaling::None,
            Some(s) => Self::parse_rope_scaling(s, max_position_embeddings, path)?,
        };

        let default_bias = architecture == Architecture::Qwen2;
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: require_usize(obj, "intermediate_size", path)?,
            num_hidden_layers: require_usize(obj, "num_hidden_layers", path)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: require_usize(obj, "vocab_size", path)?,
            rms_norm_eps: get_f64(obj, "rms_norm_eps", path)?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: get_bool(obj, "tie_word_embeddings", path)?.unwrap_or(false),
            // Qwen2 always has q/k/v bias; Llama and Qwen3 follow `attention_bias`.
            attention_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => get_bool(obj, "attention_bias", path)?.unwrap_or(default_bias),
            },
            mlp_bias: architecture == Architecture::Llama
                && get_bool(obj, "mlp_bias", path)?.unwrap_or(false),
            bos_token_id: token_ids(obj.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(obj.get("eos_token_id")),
            quantization_config: obj.get("quantization_config").cloned(),
        };
        if config.hidden_size == 0 || config.vocab_size == 0 || config.num_hidden_layers == 0 {
            return Err(Error::config(
                path,
                "hidden_size, vocab_size and num_hidden_layers must be positive",
            ));
        }
        Ok(config)
    }

    fn parse_rope_scaling(
        s: &Map<String, Value>,
        max_position_embeddings: usize,
        path: &Path,
    ) -> Result<RopeScaling> {
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let factor = || -> Result<f64> {
            get_f64(s, "factor", path)?
                .ok_or_else(|| Error::config(path, format!("rope scaling '{kind}' needs 'factor'")))
        };
        let original = get_usize(s, "original_max_position_embeddings", path)?
            .unwrap_or(max_position_embeddings);
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "dynamic" => RopeScaling::Dynamic {
                factor: factor()?,
                original_max_position_embeddings: original,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: get_f64(s, "low_freq_factor", path)?.unwrap_or(1.0),
                high_freq_factor: get_f64(s, "high_freq_factor", path)?.unwrap_or(4.0),
                original_max_position_embeddings: original,
            },
            "yarn" => RopeScaling::Yarn {
                factor: factor()?,
                original_max_position_embeddings: original,
                beta_fast: get_f64(s, "beta_fast", path)?.unwrap_or(32.0),
                beta_slow: get_f64(s, "beta_slow", path)?.unwrap_or(1.0),
                attention_factor: get_f64(s, "attention_factor", path)?,
                mscale: get_f64(s, "mscale", path)?,
                mscale_all_dim: get_f64(s, "mscale_all_dim", path)?,
                truncate: get_bool(s, "truncate", path)?.unwrap_or(true),
            },
            other => {
                return Err(Error::config(
                    path,
                    format!("unsupported rope scaling type '{other}'"),
                ))
            }
        })
    }

    /// A Hugging Face compatible config.json for this configuration.
    pub fn to_json(&self) -> Value {
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Dynamic {
                factor,
                original_max_position_embeddings,
            } => json!({"rope_type": "dynamic", "factor": factor,
                "original_max_position_embeddings": original_max_position_embeddings}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({"rope_type": "llama3", "factor": factor,
                "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings}),
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let mut m = json!({"rope_type": "yarn", "factor": factor,
                    "original_max_position_embeddings": original_max_position_embeddings,
                    "beta_fast": beta_fast, "beta_slow": beta_slow, "truncate": truncate});
                let o = m.as_object_mut().expect("object literal");
                for (k, v) in [
                    ("attention_factor", attention_factor),
                    ("mscale", mscale),
                    ("mscale_all_dim", mscale_all_dim),
                ] {
                    if let Some(v) = v {
                        o.insert(k.into(), json!(v));
                    }
                }
                m
            }
        };
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().expect("object literal");
        match self.architecture {
            Architecture::Llama => {
                o.insert("attention_bias".into(), json!(self.attention_bias));
                o.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Architecture::Qwen3 => {
                o.insert("attention_bias".into(), json!(self.attention_bias));
            }
            Architecture::Qwen2 => {
                o.insert("use_sliding_window".into(), json!(false));
            }
        }
        if let Some(q) = &self.quantization_config {
            o.insert("quantization_config".into(), q.clone());
        }
        v
    }

    /// Number of query heads sharing one key/value head.
    pub fn gqa_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}
