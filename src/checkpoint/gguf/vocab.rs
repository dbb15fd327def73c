//! A Hugging Face `tokenizer.json` from the `tokenizer.ggml.*` metadata of a GGUF file.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is built. The GGUF stores the
//! vocabulary (`tokens`, the id is the index), `merges` ("left right", best first) and a
//! `token_type` per token; CONTROL (3) tokens become special added tokens and USER_DEFINED (4)
//! ones plain added tokens, both matched whole and not normalized, as transformers' GGUF loader
//! sets them. The normalizer, pre-tokenizer and BPE options are not stored in the file: they
//! are chosen by `tokenizer.ggml.pre` to reproduce the original model's tokenizer.json:
//!
//! ```text
//! pre                    normalizer  pre-tokenizer                                      ignore_merges
//! smollm                 -           Digits(individual) + ByteLevel(GPT-2 regex)         false
//! qwen2                  NFC         Split(Qwen2 regex, isolated) + ByteLevel(no regex)  false
//! llama-bpe, llama3,     -           Split(Llama 3 regex, isolated) + ByteLevel(no regex) true
//!   llama-v3
//! gpt-2, default/absent  -           ByteLevel(GPT-2 regex)                              false
//! ```
//!
//! Sources: SmolLM's tokenizer splits every digit before GPT-2's regex (llama.cpp's `smollm`
//! pre-tokenizer, checked against Hugging Face by its test-tokenizer-0; the vocabulary has no
//! token holding a digit besides the ten single digits). The Qwen2 and Llama 3 regexes are those of
//! transformers' `Qwen2Tokenizer` and GGUF tokenizer mapping, and of the models' tokenizer.json
//! files. `default` is what llama.cpp writes when it does not recognise the tokenizer, so the
//! original is unknown; like transformers, lowbit then uses GPT-2's pre-tokenizer (llama.cpp
//! itself uses a different regex for `default`). Any other `pre` is refused.
//!
//! Note that transformers' own GGUF loader does not split digits for `smollm` and adds no NFC
//! normalizer for `qwen2`; lowbit follows the original tokenizer.json files instead.

use serde_json::{json, Map, Value};

use super::reader::GgufFile;
use super::value::{GgufArray, GgufValue};
use crate::error::{Error, Result};

const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer names accepted in `tokenizer.ggml.pre`.
pub const SUPPORTED_PRE: &[&str] = &[
    "smollm",
    "qwen2",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "gpt-2",
    "default",
];

fn err(file: &GgufFile, reason: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {reason}", file.path().display()))
}

fn byte_level(trim_offsets: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split_then_bytes(regex: &str, trim_offsets: bool) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(trim_offsets, false),
    ]})
}

/// `(normalizer, pre_tokenizer, ignore_merges)` for a `tokenizer.ggml.pre` value.
fn pre_tokenization(file: &GgufFile, pre: &str) -> Result<(Value, Value, bool)> {
    Ok(match pre {
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true, true),
            ]}),
            false,
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            split_then_bytes(QWEN2_SPLIT, false),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => {
            (Value::Null, split_then_bytes(LLAMA3_SPLIT, true), true)
        }
        "gpt-2" | "default" => (Value::Null, byte_level(true, true), false),
        other => {
            return Err(err(
                file,
                format!(
                    "unsupported pre-tokenizer '{other}' (tokenizer.ggml.pre); supported: {}",
                    SUPPORTED_PRE.join(", ")
                ),
            ))
        }
    })
}

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a [String]>> {
    match file.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(GgufArray::String(v))) => Ok(Some(v)),
        Some(_) => Err(err(file, format!("'{key}' must be an array of strings"))),
    }
}

fn token_id(file: &GgufFile, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < n_tokens => Ok(Some(id as u32)),
            _ => Err(err(
                file,
                format!("'{key}' must be a token id below {n_tokens}, found {v:?}"),
            )),
        },
    }
}

/// The tokenizer.json text for `file`, or `None` when the file has no `tokenizer.ggml.model`.
/// Errors are [`Error::Tokenizer`] naming the file (unsupported model or pre-tokenizer,
/// malformed tokenizer metadata).
pub fn tokenizer_json(file: &GgufFile) -> Result<Option<String>> {
    let model = match file.get("tokenizer.ggml.model") {
        None => return Ok(None),
        Some(GgufValue::String(m)) => m.as_str(),
        Some(_) => return Err(err(file, "'tokenizer.ggml.model' must be a string")),
    };
    if model != "gpt2" {
        return Err(err(
            file,
            format!("unsupported tokenizer model '{model}' (tokenizer.ggml.model); only byte-level BPE ('gpt2') is supported"),
        ));
    }
    let pre = match file.get("tokenizer.ggml.pre") {
        None => "default",
        Some(GgufValue::String(p)) => p.as_str(),
        Some(_) => return Err(err(file, "'tokenizer.ggml.pre' must be a string")),
    };
    let (normalizer, pre_tokenizer, ignore_merges) = pre_tokenization(file, pre)?;

    let tokens = string_array(file, "tokenizer.ggml.tokens")?
        .ok_or_else(|| err(file, "missing 'tokenizer.ggml.tokens'"))?;
    let merges = string_array(file, "tokenizer.ggml.merges")?.ok_or_else(|| {
        err(
            file,
            "missing 'tokenizer.ggml.merges' (needed for byte-level BPE)",
        )
    })?;
    let types = match file.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(GgufValue::Array(a)) => a.to_i64_vec().ok_or_else(|| {
            err(
                file,
                "'tokenizer.ggml.token_type' must be an array of integers",
            )
        })?,
        Some(_) => return Err(err(file, "'tokenizer.ggml.token_type' must be an array")),
    };
    if types.len() != tokens.len() {
        return Err(err(
            file,
            format!("{} token types for {} tokens", types.len(), tokens.len()),
        ));
    }

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| (token.clone(), json!(id)))
        .collect();
    let merges = merges
        .iter()
        .enumerate()
        .map(|(index, merge)| {
            merge
                .split_once(' ')
                .map(|(left, right)| json!([left, right]))
                .ok_or_else(|| {
                    err(
                        file,
                        format!("merge #{index} '{merge}' is not two tokens separated by a space"),
                    )
                })
        })
        .collect::<Result<Vec<Value>>>()?;
    let added_tokens: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, (token, &ty))| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": ty == TOKEN_TYPE_CONTROL})
        })
        .collect();

    let flag = |key: &str| file.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    let bos = token_id(file, "tokenizer.ggml.bos_token_id", tokens.len())?
        .filter(|_| flag("tokenizer.ggml.add_bos_token"));
    let eos = token_id(file, "tokenizer.ggml.eos_token_id", tokens.len())?
        .filter(|_| flag("tokenizer.ggml.add_eos_token"));
    let post_processor = post_processor(tokens, bos, eos);

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Ok(Some(tokenizer.to_string()))
}

/// BOS/EOS insertion when the file asks for it (`add_bos_token` / `add_eos_token`), else the
/// ByteLevel post-processor (offsets only; it adds no ids).
fn post_processor(tokens: &[String], bos: Option<u32>, eos: Option<u32>) -> Value {
    if bos.is_none() && eos.is_none() {
        return json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    }
    let special = |id: u32, type_id: u32| json!({"SpecialToken": {"id": tokens[id as usize], "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    // One sequence with its type id, framed by BOS/EOS as the file asks: [BOS] $X [EOS].
    let framed = |name: &str, type_id: u32| -> Vec<Value> {
        let mut items: Vec<Value> = bos.map(|b| special(b, type_id)).into_iter().collect();
        items.push(sequence(name, type_id));
        items.extend(eos.map(|e| special(e, type_id)));
        items
    };
    let single = framed("A", 0);
    let mut pair = single.clone();
    pair.extend(framed("B", 1));
    let mut special_tokens = Map::new();
    for id in bos.into_iter().chain(eos) {
        let token = &tokens[id as usize];
        special_tokens.insert(
            token.clone(),
            json!({"id": token, "ids": [id], "tokens": [token]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
}
