//! GGUF files (llama.cpp's format) as lowbit checkpoints.
//!
//! [`open`] turns a GGUF file of a Llama, Qwen2 or Qwen3 model into a [`Checkpoint`]: every
//! tensor dequantized to owned f32 under its Hugging Face name and shape (Llama's q/k rows put
//! back in Hugging Face order), a [`ModelConfig`] from the metadata and a Hugging Face
//! tokenizer.json built from the tokenizer metadata.
//!
//! The layers below are public for tools that need less or more:
//! - [`GgufFile`]: the mapped, validated container (metadata, [`TensorInfo`]s, raw bytes);
//!   layout in `reader.rs`.
//! - [`dequantize`] and [`GgmlType`]: ggml block formats to f32; layouts in `dequant.rs`.
//! - [`model_config`] and [`tokenizer_json`]: the metadata translated to Hugging Face terms;
//!   names and permutation in `hf.rs`, tokenizer choices in `vocab.rs`.

mod dequant;
mod hf;
mod reader;
mod value;
mod vocab;

use std::collections::BTreeMap;
use std::path::Path;

pub use dequant::{dequantize, GgmlType};
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT};
pub use value::{GgufArray, GgufValue};
pub use vocab::{tokenizer_json, SUPPORTED_PRE};

use super::{Checkpoint, ModelConfig, Tensor};
use crate::error::{Error, Result};

/// Opens a GGUF file as a checkpoint (see the module documentation).
///
/// Errors: [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file (and
/// tensor or key) for a malformed container or a tensor without a Hugging Face counterpart;
/// [`Error::UnsupportedDtype`] for tensors in ggml types lowbit cannot dequantize (K-quants,
/// i-quants, ...); [`Error::UnsupportedArchitecture`] for architectures other than llama, qwen2
/// and qwen3; [`Error::Config`] for missing or inconsistent hyper-parameters;
/// [`Error::Tokenizer`] for tokenizer metadata lowbit cannot reproduce.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let file = GgufFile::open(path)?;
    let config = model_config(&file)?;
    let tokenizer = tokenizer_json(&file)?;
    let mut tensors = BTreeMap::new();
    for info in file.tensor_infos() {
        if info.name == hf::ROPE_FREQS {
            continue; // folded into `config.rope_scaling`
        }
        let name = hf::hf_name(&info.name).ok_or_else(|| {
            Error::format(
                path,
                format!("tensor '{}' has no Hugging Face counterpart", info.name),
            )
        })?;
        let shape = info.shape();
        let mut values = file.dequantize(info)?;
        if let Some(n_head) = hf::permuted_heads(&config, &info.name) {
            hf::check_permutable(&info.name, &shape, n_head, config.head_dim)?;
            values = hf::reverse_llama_permute(&values, shape[0], n_head);
        }
        tensors.insert(name, Tensor::from_f32(shape, values));
    }
    Ok(Checkpoint::from_parts(
        path.to_path_buf(),
        config,
        tensors,
        tokenizer,
    ))
}

/// The model configuration a GGUF file describes: hyper-parameters from `{arch}.*` metadata,
/// vocabulary size from the embedding's rows, tied head when there is no `output.weight`,
/// attention bias for Qwen2 (or when `blk.0.attn_q.bias` exists), BOS/EOS from
/// `tokenizer.ggml.bos_token_id` / `eos_token_id`, and Llama 3 RoPE scaling recovered from a
/// `rope_freqs.weight` tensor.
pub fn model_config(file: &GgufFile) -> Result<ModelConfig> {
    let rope_freqs = match file.tensor_info(hf::ROPE_FREQS) {
        Some(info) => Some(file.dequantize(info)?),
        None => None,
    };
    hf::model_config(file, rope_freqs.as_deref())
}

/// The Hugging Face name of a GGUF tensor name (`blk.3.attn_q.weight` ->
/// `model.layers.3.self_attn.q_proj.weight`), `None` when it has none.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    hf::hf_name(gguf_name)
}
