//! The decoder: weights laid out for the forward pass, the KV cache, sampling and generation.
//!
//! One implementation covers Llama, Qwen2 (q/k/v bias) and Qwen3 (per-head q/k RMSNorm):
//! embedding -> N x [RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU MLP ->
//! residual] -> RMSNorm -> LM head (tied to the embedding or not).

mod decoder;
mod forward;
pub use decoder::{Cache, CacheState, Decoder};
#[cfg(feature = "cuda")]
pub(crate) use forward::validate_batch;
pub use forward::{CapturePoint, Logits, Pass};
mod generate;
mod kv_cache;
pub mod rope;
pub mod sampling;

use std::collections::BTreeMap;
use std::path::Path;

pub use crate::checkpoint::{Architecture, ModelConfig};
pub use generate::{generate, FinishReason, GenerateParams, Generation, TextStream};
pub use kv_cache::KvCache;
pub use sampling::Sampler;

use crate::checkpoint::{Checkpoint, Dtype, Tensor, Tokenizer};
use crate::error::{Error, Result};
use crate::quant::{QuantScheme, QuantizedTensor};
use rope::Rope;

/// The weight matrix of a projection, `[out_features, in_features]`.
#[derive(Clone, Debug)]
pub enum Weight {
    /// f32, f16 or bf16, row-major.
    Dense(Tensor),
    /// Quantized; multiplied by the fused dequantizing kernels.
    Quantized(QuantizedTensor),
}

impl Weight {
    /// `[out_features, in_features]`.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Weight::Dense(t) => [t.shape()[0], t.shape()[1]],
            Weight::Quantized(q) => [q.rows(), q.cols()],
        }
    }

    /// Bytes held (codes, scales and zero points for quantized weights).
    pub fn bytes(&self) -> usize {
        match self {
            Weight::Dense(t) => t.len() * t.dtype().size(),
            Weight::Quantized(q) => q.storage_bytes(),
        }
    }

    /// The quantization scheme, for quantized weights.
    pub fn scheme(&self) -> Option<&QuantScheme> {
        match self {
            Weight::Dense(_) => None,
            Weight::Quantized(q) => Some(q.scheme()),
        }
    }

    /// The weight as dense f32 values (dequantized if needed), row-major.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Weight::Dense(t) => t.to_f32_vec(),
            Weight::Quantized(q) => q.dequantize(),
        }
    }
}

/// A projection `y = x W^T + b`, W `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight, `[out_features, in_features]`.
    pub weight: Weight,
    /// Optional bias, `out_features` values.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `out = x W^T + b` for `m` rows of `x`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match &self.weight {
            Weight::Dense(w) => crate::backend::cpu::linear(x, m, w, self.bias.as_deref(), out),
            Weight::Quantized(q) => {
                crate::backend::cpu::quant::linear(x, m, q, self.bias.as_deref(), out)
            }
        }
    }
}

/// The weights of one decoder block.
#[derive(Clone, Debug)]
pub struct Block {
    /// RMSNorm before attention.
    pub input_norm: Vec<f32>,
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Attention output projection.
    pub o_proj: Linear,
    /// Qwen3: RMSNorm weights applied to each query head.
    pub q_norm: Option<Vec<f32>>,
    /// Qwen3: RMSNorm weights applied to each key head.
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm before the MLP.
    pub post_attention_norm: Vec<f32>,
    /// MLP gate projection (SiLU applied).
    pub gate_proj: Linear,
    /// MLP up projection.
    pub up_proj: Linear,
    /// MLP down projection.
    pub down_proj: Linear,
}

/// Module names of a block's projections, in [`Block::linears`] order.
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl Block {
    /// The seven projections of the block.
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }
}

/// A decoder model ready to run on the CPU.
#[derive(Clone, Debug)]
pub struct Model {
    config: ModelConfig,
    embed_tokens: Tensor,
    blocks: Vec<Block>,
    final_norm: Vec<f32>,
    lm_head: Linear,
    rope: Rope,
    tokenizer: Option<Tokenizer>,
}

/// Takes a tensor, checks its shape, converts it to the compute dtype.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    dtype: Option<Dtype>,
    /// Quantized layers of the checkpoint, by module name.
    quantized: BTreeMap<String, QuantScheme>,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.checkpoint.tensor(name)?;
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        if !t.dtype().is_float() {
            return Err(Error::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: format!("{:?} (a dense weight must be f32, f16 or bf16)", t.dtype()),
            });
        }
        let target = self.dtype.unwrap_or(t.dtype());
        let converted = t.to_dtype(target);
        // Kernels read weights as aligned slices; a misaligned mapped view becomes a copy.
        let aligned = match target {
            Dtype::F32 => converted.as_f32().is_some(),
            Dtype::BF16 => converted.as_bf16().is_some(),
            Dtype::F16 => converted.as_f16().is_some(),
            _ => false,
        };
        Ok(if aligned {
            converted
        } else {
            let values = converted.to_f32_vec();
            Tensor::from_f32(shape.to_vec(), values).to_dtype(target)
        })
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.tensor(name, &[len])?.to_f32_vec())
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = match self.quantized.get(prefix) {
            Some(scheme) => {
                let q =
                    QuantizedTensor::from_tensors(*scheme, prefix, |n| self.checkpoint.tensor(n))?;
                if [q.rows(), q.cols()] != [out, inp] {
                    return Err(Error::ShapeMismatch {
                        tensor: format!("{prefix}.weight_shape"),
                        expected: vec![out, inp],
                        found: vec![q.rows(), q.cols()],
                    });
                }
                Weight::Quantized(q)
            }
            None => Weight::Dense(self.tensor(&format!("{prefix}.weight"), &[out, inp])?),
        };
        Ok(Linear {
            weight,
            bias: if bias {
                Some(self.vector(&format!("{prefix}.bias"), out)?)
            } else {
                None
            },
        })
    }
}

impl Model {
    /// Opens the checkpoint at `path` (see [`Checkpoint::open`]) and builds the model with the
    /// weights in their stored dtype.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(path)?, None)
    }

    /// Builds the model from `checkpoint`; matrix weights are converted to `dtype` when given
    /// (norms, biases and activations are always f32).
    pub fn from_checkpoint(checkpoint: &Checkpoint, dtype: Option<Dtype>) -> Result<Self> {
        // Checkpoints quantized by other tools (compressed-tensors, GPTQ, AWQ) are translated
        // to lowbit's layout first.
        let imported = crate::io::import(checkpoint)?;
        let checkpoint: &Checkpoint = &imported;
        let config = checkpoint.config().clone();
        let loader = Loader {
            checkpoint,
            dtype,
            quantized: crate::quant::config::layer_schemes(&config, checkpoint.path())?,
        };
        let (hidden, inter) = (config.hidden_size, config.intermediate_size);
        let q_out = config.num_attention_heads * config.head_dim;
        let kv_out = config.num_key_value_heads * config.head_dim;
        let embed_tokens =
            loader.tensor("model.embed_tokens.weight", &[config.vocab_size, hidden])?;
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for layer in 0..config.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            let qk_norm = config.architecture == Architecture::Qwen3;
            let bias = config.attention_bias;
            blocks.push(Block {
                input_norm: loader.vector(&format!("{p}.input_layernorm.weight"), hidden)?,
                q_proj: loader.linear(&format!("{p}.self_attn.q_proj"), q_out, hidden, bias)?,
                k_proj: loader.linear(&format!("{p}.self_attn.k_proj"), kv_out, hidden, bias)?,
                v_proj: loader.linear(&format!("{p}.self_attn.v_proj"), kv_out, hidden, bias)?,
                // Qwen2 has bias on q/k/v only; Llama's attention_bias covers o_proj too.
                o_proj: loader.linear(
                    &format!("{p}.self_attn.o_proj"),
                    hidden,
                    q_out,
                    bias && config.architecture != Architecture::Qwen2,
                )?,
                q_norm: if qk_norm {
                    Some(loader.vector(&format!("{p}.self_attn.q_norm.weight"), config.head_dim)?)
                } else {
                    None
                },
                k_norm: if qk_norm {
                    Some(loader.vector(&format!("{p}.self_attn.k_norm.weight"), config.head_dim)?)
                } else {
                    None
                },
                post_attention_norm: loader
                    .vector(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
                gate_proj: loader.linear(
                    &format!("{p}.mlp.gate_proj"),
                    inter,
                    hidden,
                    config.mlp_bias,
                )?,
                up_proj: loader.linear(
                    &format!("{p}.mlp.up_proj"),
                    inter,
                    hidden,
                    config.mlp_bias,
                )?,
                down_proj: loader.linear(
                    &format!("{p}.mlp.down_proj"),
                    hidden,
                    inter,
                    config.mlp_bias,
                )?,
            });
        }
        let final_norm = loader.vector("model.norm.weight", hidden)?;
        let separate_head =
            checkpoint.has_tensor("lm_head.weight") || loader.quantized.contains_key("lm_head");
        let lm_head = if config.tie_word_embeddings && !separate_head {
            Linear {
                weight: Weight::Dense(embed_tokens.clone()),
                bias: None,
            }
        } else {
            loader.linear("lm_head", config.vocab_size, hidden, false)?
        };
        let rope = Rope::new(&config);
        let tokenizer = checkpoint.tokenizer()?;
        Ok(Model {
            config,
            embed_tokens,
            blocks,
            final_norm,
            lm_head,
            rope,
            tokenizer,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tokenizer, when the checkpoint carries one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The tokenizer, or an error saying the checkpoint has none.
    pub fn require_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::Tokenizer("this checkpoint has no tokenizer.json".into()))
    }

    /// The decoder blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Number of weight parameters (matrices, norms and biases; a tied head counted once).
    pub fn parameter_count(&self) -> usize {
        let linear = |l: &Linear| {
            l.in_features() * l.out_features() + l.bias.as_ref().map_or(0, |b| b.len())
        };
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.input_norm.len()
                    + b.post_attention_norm.len()
                    + b.q_norm.as_ref().map_or(0, |v| v.len())
                    + b.k_norm.as_ref().map_or(0, |v| v.len())
                    + b.linears().into_iter().map(linear).sum::<usize>()
            })
            .sum();
        let head = if self.head_is_tied() {
            0
        } else {
            linear(&self.lm_head)
        };
        self.embed_tokens.len() + blocks + self.final_norm.len() + head
    }

    /// Bytes of weight data as held in memory.
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.linears()
                    .into_iter()
                    .map(|l| l.weight.bytes())
                    .sum::<usize>()
            })
            .sum();
        let head = if self.head_is_tied() {
            0
        } else {
            self.lm_head.weight.bytes()
        };
        self.embed_tokens.len() * self.embed_tokens.dtype().size() + blocks + head
    }

    /// Whether the LM head is the embedding matrix itself (not a separate or quantized copy).
    fn head_is_tied(&self) -> bool {
        self.config.tie_word_embeddings && matches!(self.lm_head.weight, Weight::Dense(_))
    }

    /// The token embedding, `[vocab, hidden]`.
    pub fn embed_tokens(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Weights of the final RMSNorm.
    pub fn final_norm(&self) -> &[f32] {
        &self.final_norm
    }

    /// The LM head.
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Every projection with its module name (`model.layers.N.self_attn.q_proj`, ..., and
    /// `lm_head` last).
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for (suffix, linear) in PROJECTIONS.iter().zip(b.linears()) {
                out.push((format!("model.layers.{i}.{suffix}"), linear));
            }
        }
        out.push(("lm_head".to_string(), &self.lm_head));
        out
    }

    /// The decoder blocks, mutable (calibration methods rescale norms and weights).
    pub fn blocks_mut(&mut self) -> &mut [Block] {
        &mut self.blocks
    }

    /// The tensors of this model in checkpoint naming, on top of `base` (the checkpoint it was
    /// loaded from, for tensors the model does not change): projections as stored (quantized
    /// ones as [`QuantizedTensor::to_tensors`] names them) and the block norms.
    pub fn export_tensors(&self, base: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
        let mut out = base.clone();
        for (name, linear) in self.linears() {
            if name == "lm_head" && self.head_is_tied() {
                continue;
            }
            out.remove(&format!("{name}.weight"));
            match &linear.weight {
                Weight::Dense(t) => {
                    out.insert(format!("{name}.weight"), t.clone());
                }
                Weight::Quantized(q) => out.extend(q.to_tensors(&name)),
            }
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (n, v) in [
                ("input_layernorm", &b.input_norm),
                ("post_attention_layernorm", &b.post_attention_norm),
            ] {
                out.insert(
                    format!("{p}.{n}.weight"),
                    Tensor::from_f32(vec![v.len()], v.clone()),
                );
            }
        }
        out
    }

    /// Every projection with its module name (`model.layers.N.self_attn.q_proj`, ..., and
    /// `lm_head` last), for quantization passes.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), &mut b.q_proj));
            out.push((format!("{p}.self_attn.k_proj"), &mut b.k_proj));
            out.push((format!("{p}.self_attn.v_proj"), &mut b.v_proj));
            out.push((format!("{p}.self_attn.o_proj"), &mut b.o_proj));
            out.push((format!("{p}.mlp.gate_proj"), &mut b.gate_proj));
            out.push((format!("{p}.mlp.up_proj"), &mut b.up_proj));
            out.push((format!("{p}.mlp.down_proj"), &mut b.down_proj));
        }
        out.push(("lm_head".to_string(), &mut self.lm_head));
        out
    }

    /// A new, empty KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config)
    }
}
