//! The `quantization_config` that lowbit writes into `config.json` of a quantized checkpoint,
//! and reads back to know which layers are quantized and how.
//!
//! ```json
//! "quantization_config": {
//!   "quant_method": "lowbit",
//!   "format_version": 1,
//!   "method": "rtn",
//!   "rules": { "default": "w4a16-g128", "overrides": [] },
//!   "layers": { "model.layers.0.self_attn.q_proj": "w4a16-g128", ... }
//! }
//! ```
//! `layers` is authoritative; `rules` and `method` record how it was produced.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::rules::QuantRules;
use super::scheme::QuantScheme;
use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result};

/// `quant_method` of checkpoints written by lowbit.
pub const QUANT_METHOD: &str = "lowbit";
/// Version of the tensor layout documented in [`super::weights`].
pub const FORMAT_VERSION: u64 = 1;

/// The quantized layers of a checkpoint, by module name; empty for an unquantized one.
pub fn layer_schemes(config: &ModelConfig, path: &Path) -> Result<BTreeMap<String, QuantScheme>> {
    let Some(q) = &config.quantization_config else {
        return Ok(BTreeMap::new());
    };
    let bad = |why: String| Error::Config {
        path: path.to_path_buf(),
        reason: format!("quantization_config: {why}"),
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != QUANT_METHOD {
        return Err(bad(format!(
            "quant_method '{method}' is not one lowbit loads directly (expected '{QUANT_METHOD}')"
        )));
    }
    let version = q.get("format_version").and_then(Value::as_u64).unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format_version {version} (this build reads {FORMAT_VERSION})"
        )));
    }
    let layers = q
        .get("layers")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing 'layers' object".into()))?;
    layers
        .iter()
        .map(|(name, scheme)| {
            let text = scheme
                .as_str()
                .ok_or_else(|| bad(format!("layer '{name}': scheme must be a string")))?;
            let scheme =
                QuantScheme::parse(text).map_err(|e| bad(format!("layer '{name}': {e}")))?;
            Ok((name.clone(), scheme))
        })
        .collect()
}

/// The `quantization_config` object for `layers`.
pub fn quantization_config(
    layers: &BTreeMap<String, QuantScheme>,
    rules: &QuantRules,
    method: &str,
) -> Value {
    let layers: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(n, s)| (n.clone(), Value::String(s.to_string())))
        .collect();
    json!({
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "method": method,
        "rules": rules,
        "layers": layers,
    })
}
