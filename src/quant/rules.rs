//! Which layers are quantized, and how: a rule, not code.
//!
//! By default every linear projection of the decoder blocks gets the default scheme; the
//! embeddings and the LM head stay in floating point. Overrides are `(pattern, choice)` pairs
//! matched against the module name (`model.layers.3.mlp.down_proj`, `lm_head`) with `*` matching
//! any run of characters; the last matching override wins, so a rule list reads top-down.

use serde::{Deserialize, Serialize};

use super::scheme::QuantScheme;
use crate::error::{Error, Result};

/// What to do with a matched layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerChoice {
    /// Keep the layer in floating point.
    Skip,
    /// Quantize with this scheme.
    Scheme(QuantScheme),
}

/// The default scheme plus name-pattern overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantRules {
    /// Scheme of every decoder-block linear not overridden.
    pub default: QuantScheme,
    /// `(pattern, choice)`, applied in order; the last match wins.
    pub overrides: Vec<(String, LayerChoice)>,
}

impl QuantRules {
    /// Every decoder-block linear gets `default`.
    pub fn new(default: QuantScheme) -> Self {
        QuantRules {
            default,
            overrides: Vec::new(),
        }
    }

    /// Adds an override parsed from `pattern=scheme` or `pattern=skip`.
    pub fn push_override(&mut self, text: &str) -> Result<()> {
        let (pattern, choice) = text.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "layer override '{text}': expected PATTERN=SCHEME or PATTERN=skip"
            ))
        })?;
        if pattern.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "layer override '{text}': empty pattern"
            )));
        }
        let choice = if choice.trim() == "skip" {
            LayerChoice::Skip
        } else {
            LayerChoice::Scheme(QuantScheme::parse(choice)?)
        };
        self.overrides.push((pattern.trim().to_string(), choice));
        Ok(())
    }

    /// The scheme for the linear layer `module` (no `.weight` suffix), or `None` to keep it.
    /// `in_block` says whether the layer belongs to a decoder block (else: the LM head).
    pub fn choose(&self, module: &str, in_block: bool) -> Option<QuantScheme> {
        let mut choice = in_block.then_some(self.default);
        for (pattern, c) in &self.overrides {
            if glob_match(pattern, module) {
                choice = match c {
                    LayerChoice::Skip => None,
                    LayerChoice::Scheme(s) => Some(*s),
                };
            }
        }
        choice
    }
}

/// `*` matches any run of characters (dots included); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.down_proj", "model.layers.0.mlp.down_proj"));
        assert!(glob_match(
            "model.layers.1.*",
            "model.layers.1.self_attn.q_proj"
        ));
        assert!(!glob_match(
            "model.layers.1.*",
            "model.layers.11.self_attn.q_proj"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b", "a"));
    }

    #[test]
    fn last_override_wins() {
        let mut rules = QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap());
        rules.push_override("*.down_proj=w8a16").unwrap();
        rules.push_override("model.layers.0.*=skip").unwrap();
        rules.push_override("lm_head=w8a16").unwrap();
        let w8 = QuantScheme::parse("w8a16").unwrap();
        assert_eq!(rules.choose("model.layers.2.mlp.down_proj", true), Some(w8));
        assert_eq!(rules.choose("model.layers.0.mlp.down_proj", true), None);
        assert_eq!(
            rules.choose("model.layers.2.mlp.up_proj", true),
            Some(rules.default)
        );
        assert_eq!(rules.choose("lm_head", false), Some(w8));
        assert!(rules.push_override("nothing").is_err());
        assert!(rules.push_override("x=w3a16").is_err());
        let json = serde_json::to_string(&rules).unwrap();
        assert_eq!(serde_json::from_str::<QuantRules>(&json).unwrap(), rules);
    }
}
