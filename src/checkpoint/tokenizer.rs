//! Tokenization through the `tokenizers` crate, from a `tokenizer.json` definition.

use serde_json::{json, Value};

use super::config::ModelConfig;
use crate::error::{Error, Result};

/// A text tokenizer with the model's special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

impl Tokenizer {
    /// Builds a tokenizer from tokenizer.json text; special ids come from `config`.
    pub fn from_json_str(json: &str, config: &ModelConfig) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| Error::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Ok(Tokenizer {
            inner,
            bos_token_id: config.bos_token_id,
            eos_token_ids: config.eos_token_ids.clone(),
        })
    }

    /// Token ids of `text`. `add_special_tokens` applies the tokenizer's post-processor
    /// (for example a BOS token), as Hugging Face's `encode(..., add_special_tokens=True)`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("encode failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("decode failed: {e}")))
    }

    /// Number of entries, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Beginning-of-sequence id, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Ids that end generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }
}

/// A minimal tokenizer_config.json so Hugging Face's AutoTokenizer loads a saved directory with
/// the right special tokens.
pub fn tokenizer_config_json(tokenizer_json: &str, config: &ModelConfig) -> Value {
    let parsed: Value = serde_json::from_str(tokenizer_json).unwrap_or(Value::Null);
    let name_of = |id: Option<u32>| -> Value {
        let id = match id {
            Some(id) => id as u64,
            None => return Value::Null,
        };
        parsed
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .and_then(|a| {
                a.iter()
                    .find(|t| t.get("id").and_then(|i| i.as_u64()) == Some(id))
            })
            .and_then(|t| t.get("content").cloned())
            .unwrap_or(Value::Null)
    };
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name_of(config.bos_token_id),
        "eos_token": name_of(config.eos_token_ids.first().copied()),
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_position_embeddings,
    })
}
