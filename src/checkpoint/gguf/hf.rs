//! From llama.cpp's naming, layout and metadata to Hugging Face's: tensor names, the q/k row
//! order of Llama, and the [`ModelConfig`].
//!
//! Names (`N` is the block index; each takes `.weight` and, where present, `.bias`):
//!
//! ```text
//! token_embd          model.embed_tokens            output_norm     model.norm
//! output              lm_head (absent: tied to the embedding)
//! blk.N.attn_norm     model.layers.N.input_layernorm
//! blk.N.ffn_norm      model.layers.N.post_attention_layernorm
//! blk.N.attn_q/k/v    model.layers.N.self_attn.q_proj/k_proj/v_proj
//! blk.N.attn_output   model.layers.N.self_attn.o_proj
//! blk.N.attn_q_norm   model.layers.N.self_attn.q_norm     (Qwen3; also attn_k_norm -> k_norm)
//! blk.N.ffn_gate/up/down  model.layers.N.mlp.gate_proj/up_proj/down_proj
//! ```
//!
//! Llama q/k rows. llama.cpp's converter reorders the rows of `q_proj` and `k_proj` (weight and
//! bias) for its interleaved RoPE: per head of `head_dim` rows, HF row `j * head_dim/2 + i`
//! (`j` in 0..2, `i` in 0..head_dim/2) is stored at row `2 * i + j`
//! (`w.reshape(n_head, 2, half, cols).swapaxes(1, 2)`, with `n_head_kv` heads for k). HF applies
//! rotate-half RoPE to the original order, so loading undoes it. Qwen2/Qwen3 are not permuted.

use super::reader::GgufFile;
use super::value::GgufValue;
use crate::checkpoint::config::{Architecture, ModelConfig, RopeScaling};
use crate::error::{Error, Result};

/// The tensor llama.cpp adds for Llama 3 RoPE scaling; it becomes [`RopeScaling::Llama3`].
pub(super) const ROPE_FREQS: &str = "rope_freqs.weight";

/// The Hugging Face name of a GGUF tensor, `None` if it has none.
pub(super) fn hf_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let top = match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(top) = top {
        return Some(format!("{top}.{suffix}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (block, part) = rest.split_once('.')?;
    if block.is_empty() || !block.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hf_part = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{block}.{hf_part}.{suffix}"))
}

/// The number of heads whose rows llama.cpp permuted in `gguf_name`, for Llama q/k tensors.
pub(super) fn permuted_heads(config: &ModelConfig, gguf_name: &str) -> Option<usize> {
    if config.architecture != Architecture::Llama {
        return None;
    }
    if gguf_name.ends_with(".attn_q.weight") || gguf_name.ends_with(".attn_q.bias") {
        Some(config.num_attention_heads)
    } else if gguf_name.ends_with(".attn_k.weight") || gguf_name.ends_with(".attn_k.bias") {
        Some(config.num_key_value_heads)
    } else {
        None
    }
}

/// Undoes llama.cpp's q/k row permutation on a row-major `[rows, cols]` matrix (`cols` = 1 for
/// a bias). `rows` must be a multiple of `2 * n_head` (checked by the caller).
pub(super) fn reverse_llama_permute(values: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = values.len() / rows;
    let head_rows = rows / n_head;
    let half = head_rows / 2;
    let mut out = vec![0f32; values.len()];
    for head in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                let hf_row = head * head_rows + j * half + i;
                let stored_row = head * head_rows + 2 * i + j;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&values[stored_row * cols..(stored_row + 1) * cols]);
            }
        }
    }
    out
}

/// Typed access to `{arch}.*` metadata with errors that name the file and key.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::config(
                        self.file.path(),
                        format!("'{key}' must be a non-negative integer, found {v:?}"),
                    )
                }),
        }
    }

    fn require_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?
            .ok_or_else(|| Error::config(self.file.path(), format!("missing '{key}'")))
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::config(
                    self.file.path(),
                    format!("'{key}' must be a number, found {v:?}"),
                )
            }),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(Error::config(
                self.file.path(),
                format!("'{key}' must be a string, found {v:?}"),
            )),
        }
    }
}

/// The architecture named by `general.architecture`.
pub(super) fn architecture(file: &GgufFile) -> Result<Architecture> {
    let arch = match file.get("general.architecture") {
        Some(GgufValue::String(s)) => s.as_str(),
        Some(v) => {
            return Err(Error::config(
                file.path(),
                format!("'general.architecture' must be a string, found {v:?}"),
            ))
        }
        None => return Err(Error::config(file.path(), "missing 'general.architecture'")),
    };
    match arch {
        "llama" => Ok(Architecture::Llama),
        "qwen2" => Ok(Architecture::Qwen2),
        "qwen3" => Ok(Architecture::Qwen3),
        other => Err(Error::UnsupportedArchitecture(other.to_string())),
    }
}

/// Builds the configuration from `{arch}.*` and `tokenizer.ggml.*` metadata and the tensor
/// directory (vocabulary size, tied head, biases). `rope_freqs` are the values of
/// [`ROPE_FREQS`] when the file has that tensor.
pub(super) fn model_config(file: &GgufFile, rope_freqs: Option<&[f32]>) -> Result<ModelConfig> {
    let architecture = architecture(file)?;
    let path = file.path();
    let meta = Meta {
        file,
        arch: architecture.model_type(),
    };
    let hidden_size = meta.require_usize(&meta.key("embedding_length"))?;
    let num_attention_heads = meta.require_usize(&meta.key("attention.head_count"))?;
    let num_key_value_heads = meta
        .usize(&meta.key("attention.head_count_kv"))?
        .unwrap_or(num_attention_heads);
    if num_attention_heads == 0 || num_key_value_heads == 0 {
        return Err(Error::config(path, "head counts must be positive"));
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(Error::config(
            path,
            format!("head_count ({num_attention_heads}) is not a multiple of head_count_kv ({num_key_value_heads})"),
        ));
    }
    let head_dim = match meta.usize(&meta.key("attention.key_length"))? {
        Some(d) => d,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => {
            return Err(Error::config(
                path,
                "embedding_length is not a multiple of head_count and no key_length",
            ))
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(Error::config(
            path,
            format!("head_dim {head_dim} must be even"),
        ));
    }
    if let Some(rot) = meta.usize(&meta.key("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(Error::config(
                path,
                format!("partial rotary embedding (rope.dimension_count {rot} of head_dim {head_dim}) is not supported"),
            ));
        }
    }
    let max_position_embeddings = meta.usize(&meta.key("context_length"))?.unwrap_or(2048);
    let rope_theta = meta.f64(&meta.key("rope.freq_base"))?.unwrap_or(10000.0);
    let rope_scaling = match rope_freqs {
        Some(freqs) if architecture == Architecture::Llama => {
            llama3_scaling(file, freqs, rope_theta, head_dim)?
        }
        Some(_) => {
            return Err(Error::config(
                path,
                format!("'{ROPE_FREQS}' is only understood for llama"),
            ))
        }
        None => rope_scaling(&meta, max_position_embeddings)?,
    };

    let embedding = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            path: path.to_path_buf(),
            tensor: "token_embd.weight".into(),
        })?;
    let shape = embedding.shape();
    if shape.len() != 2 || shape[1] != hidden_size {
        return Err(Error::ShapeMismatch {
            tensor: "token_embd.weight".into(),
            expected: vec![shape.first().copied().unwrap_or(0), hidden_size],
            found: shape,
        });
    }
    let has = |name: &str| file.tensor_info(name).is_some();
    let attention_bias = architecture == Architecture::Qwen2 || has("blk.0.attn_q.bias");
    let token_id = |key: &str| -> Result<Option<u32>> {
        meta.usize(key)?
            .map(|id| {
                u32::try_from(id)
                    .map_err(|_| Error::config(path, format!("'{key}' {id} is too large")))
            })
            .transpose()
    };
    let config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: meta.require_usize(&meta.key("feed_forward_length"))?,
        num_hidden_layers: meta.require_usize(&meta.key("block_count"))?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size: shape[0],
        rms_norm_eps: meta
            .f64(&meta.key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings: !has("output.weight"),
        attention_bias,
        mlp_bias: architecture == Architecture::Llama && has("blk.0.ffn_up.bias"),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect(),
        quantization_config: None,
    };
    if config.hidden_size == 0 || config.vocab_size == 0 || config.num_hidden_layers == 0 {
        return Err(Error::config(
            path,
            "embedding_length, vocabulary size and block_count must be positive",
        ));
    }
    Ok(config)
}

fn rope_scaling(meta: &Meta<'_>, max_position_embeddings: usize) -> Result<RopeScaling> {
    let path = meta.file.path();
    let kind = meta.str(&meta.key("rope.scaling.type"))?;
    let factor = meta.f64(&meta.key("rope.scaling.factor"))?;
    // Files from before `rope.scaling.*` carry a linear factor only.
    let legacy_linear = meta.f64(&meta.key("rope.scale_linear"))?;
    let original = meta
        .usize(&meta.key("rope.scaling.original_context_length"))?
        .unwrap_or(max_position_embeddings);
    let need_factor = |kind: &str| {
        factor.ok_or_else(|| {
            Error::config(
                path,
                format!(
                    "rope scaling '{kind}' needs '{}'",
                    meta.key("rope.scaling.factor")
                ),
            )
        })
    };
    Ok(match (kind, legacy_linear) {
        (None, Some(f)) if f != 1.0 => RopeScaling::Linear { factor: f },
        (None, _) | (Some("none"), _) => RopeScaling::None,
        (Some("linear"), _) => RopeScaling::Linear {
            factor: need_factor("linear")?,
        },
        (Some("yarn"), _) => RopeScaling::Yarn {
            factor: need_factor("yarn")?,
            original_max_position_embeddings: original,
            beta_fast: meta
                .f64(&meta.key("rope.scaling.yarn_beta_fast"))?
                .unwrap_or(32.0),
            beta_slow: meta
                .f64(&meta.key("rope.scaling.yarn_beta_slow"))?
                .unwrap_or(1.0),
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        },
        (Some(other), _) => {
            return Err(Error::config(
                path,
                format!("unsupported rope scaling type '{other}'"),
            ));
        }
    })
}

/// Llama 3.x stores its frequency-dependent RoPE scaling as per-frequency divisors in
/// `rope_freqs.weight` instead of metadata. The divisors are recomputed from the Llama 3.1/3.2
/// parameters (low_freq_factor 1, high_freq_factor 4, original context 8192, factor = the largest
/// divisor) with llama.cpp's formula and must match; anything else is refused rather than guessed.
fn llama3_scaling(
    file: &GgufFile,
    freqs: &[f32],
    rope_theta: f64,
    head_dim: usize,
) -> Result<RopeScaling> {
    // Relative tolerance: the tensor holds f32 values computed from f32 base frequencies.
    const RELATIVE_TOLERANCE: f64 = 1e-4;
    const LOW_FREQ_FACTOR: f64 = 1.0;
    const HIGH_FREQ_FACTOR: f64 = 4.0;
    const ORIGINAL: usize = 8192;
    if freqs.len() != head_dim / 2 {
        return Err(Error::config(
            file.path(),
            format!(
                "'{ROPE_FREQS}' has {} values, expected head_dim / 2 = {}",
                freqs.len(),
                head_dim / 2
            ),
        ));
    }
    let factor = freqs.iter().fold(1f32, |a, &b| a.max(b)) as f64;
    let low_freq_wavelen = ORIGINAL as f64 / LOW_FREQ_FACTOR;
    let high_freq_wavelen = ORIGINAL as f64 / HIGH_FREQ_FACTOR;
    for (i, &stored) in freqs.iter().enumerate() {
        let freq = 1.0 / rope_theta.powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let expected = if wavelen < high_freq_wavelen {
            1.0
        } else if wavelen > low_freq_wavelen {
            factor
        } else {
            let smooth = (ORIGINAL as f64 / wavelen - LOW_FREQ_FACTOR)
                / (HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        if ((stored as f64 - expected) / expected).abs() > RELATIVE_TOLERANCE {
            return Err(Error::config(
                file.path(),
                format!(
                    "'{ROPE_FREQS}'[{i}] = {stored} does not match Llama 3 rope scaling (factor {factor}, \
                     low/high freq factors 1/4, original context 8192): expected {expected}"
                ),
            ));
        }
    }
    Ok(RopeScaling::Llama3 {
        factor,
        low_freq_factor: LOW_FREQ_FACTOR,
        high_freq_factor: HIGH_FREQ_FACTOR,
        original_max_position_embeddings: ORIGINAL,
    })
}

/// Checks that a q/k tensor of Hugging Face `shape` can be un-permuted over `n_head` heads.
pub(super) fn check_permutable(
    name: &str,
    shape: &[usize],
    n_head: usize,
    head_dim: usize,
) -> Result<()> {
    let rows = shape.first().copied().unwrap_or(0);
    if rows != n_head * head_dim {
        let mut expected = shape.to_vec();
        if let Some(r) = expected.first_mut() {
            *r = n_head * head_dim;
        }
        return Err(Error::ShapeMismatch {
            tensor: name.to_string(),
            expected,
            found: shape.to_vec(),
        });
    }
    Ok(())
}
