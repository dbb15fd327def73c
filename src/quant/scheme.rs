//! What a quantized layer is: the weight format, how scales are shared (groups along the input
//! dimension, one per output channel, or 128x128 blocks), and what happens to activations.
//!
//! A scheme has a short name used on the command line and in reports, for example
//! `w4a16-g128`, `w4a16-g128-asym`, `w8a16`, `w8a8`, `w4a8-g128`, `nf4`, `nf4-dq`, `fp4`,
//! `fp8`, `fp8-block`, `w8a8-fp8`, `w8a8-fp8-block`. [`QuantScheme::parse`] and `Display` are
//! inverses, and serde uses the same string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Element format of the stored weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// Uniform integers of `bits` (4 or 8): symmetric (no zero point) or asymmetric.
    Int {
        /// 4 or 8.
        bits: u8,
        /// Symmetric: `w = q * s`; asymmetric: `w = (q - z) * s`.
        symmetric: bool,
    },
    /// bitsandbytes NormalFloat4 code book.
    Nf4,
    /// bitsandbytes FP4 code book (E2M1 with bitsandbytes' ordering).
    Fp4,
    /// FP8 E4M3 ("fn": max 448, no infinities).
    Fp8,
}

/// How scales are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale per output channel and `n` consecutive input features (a multiple of 32).
    Group(usize),
    /// One scale per output channel.
    Channel,
    /// One scale per 128x128 block of the weight (FP8 only).
    Block128,
}

/// What the kernels do with activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivationFormat {
    /// Kept in floating point (16 or 32-bit): weight-only quantization.
    Float,
    /// Quantized to int8 per token (dynamic, symmetric) and multiplied in integers.
    Int8,
    /// Quantized to FP8 E4M3 per token, or per 1x128 group for [`Granularity::Block128`].
    Fp8,
}

/// Block size of the NF4/FP4 absmax scales (bitsandbytes' default).
pub const NF4_BLOCK: usize = 64;
/// Block size of the second-level quantization of NF4/FP4 absmax values.
pub const DOUBLE_QUANT_BLOCK: usize = 256;
/// Edge of the square weight blocks of [`Granularity::Block128`].
pub const FP8_BLOCK: usize = 128;

/// A complete description of one quantized layer's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantScheme {
    /// Stored weight format.
    pub weight: WeightFormat,
    /// How weight scales are shared.
    pub granularity: Granularity,
    /// Activation handling.
    pub activation: ActivationFormat,
    /// NF4/FP4 only: the absmax values are themselves quantized to 8 bits in blocks of 256.
    pub double_quant: bool,
}

impl QuantScheme {
    /// Parses a scheme name (see the module documentation).
    pub fn parse(name: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "unknown quantization scheme '{name}': {why} (examples: w4a16-g128, \
                 w4a16-g128-asym, w8a16, w8a8, w4a8-g128, nf4, nf4-dq, fp4, fp8, fp8-block, \
                 w8a8-fp8, w8a8-fp8-block)"
            ))
        };
        let lower = name.trim().to_ascii_lowercase();
        let mut parts = lower.split('-');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let scheme = match head {
            "nf4" | "fp4" => {
                let double_quant = match rest.as_slice() {
                    [] => false,
                    ["dq"] => true,
                    _ => return Err(bad("NF4/FP4 take only the suffix -dq")),
                };
                QuantScheme {
                    weight: if head == "nf4" {
                        WeightFormat::Nf4
                    } else {
                        WeightFormat::Fp4
                    },
                    granularity: Granularity::Group(NF4_BLOCK),
                    activation: ActivationFormat::Float,
                    double_quant,
                }
            }
            "fp8" => QuantScheme {
                weight: WeightFormat::Fp8,
                granularity: match rest.as_slice() {
                    [] => Granularity::Channel,
                    ["block"] => Granularity::Block128,
                    _ => return Err(bad("FP8 takes only the suffix -block")),
                },
                activation: ActivationFormat::Float,
                double_quant: false,
            },
            _ => {
                let (bits, activation_bits) = parse_wa(head).ok_or_else(|| bad("expected wNaM"))?;
                let mut granularity = Granularity::Channel;
                let mut symmetric = true;
                let mut fp8 = false;
                for part in &rest {
                    match *part {
                        "asym" => symmetric = false,
                        "sym" => symmetric = true,
                        "fp8" => fp8 = true,
                        "block" if fp8 => granularity = Granularity::Block128,
                        g if g.starts_with('g') => {
                            let size: usize = g[1..].parse().map_err(|_| bad("bad group size"))?;
                            if size == 0 || !size.is_multiple_of(32) {
                                return Err(bad("the group size must be a multiple of 32"));
                            }
                            granularity = Granularity::Group(size);
                        }
                        _ => return Err(bad("unknown suffix")),
                    }
                }
                if fp8 {
                    if bits != 8 || activation_bits != 8 || !symmetric {
                        return Err(bad("FP8 activations go with w8a8-fp8 only"));
                    }
                    if matches!(granularity, Granularity::Group(_)) {
                        return Err(bad("FP8 weights are per channel or -block"));
                    }
                    QuantScheme {
                        weight: WeightFormat::Fp8,
                        granularity,
                        activation: ActivationFormat::Fp8,
                        double_quant: false,
                    }
                } else {
                    if !matches!(bits, 4 | 8) {
                        return Err(bad("integer weights are 4 or 8 bits"));
                    }
                    let activation = match activation_bits {
                        16 | 32 => ActivationFormat::Float,
                        8 => ActivationFormat::Int8,
                        _ => return Err(bad("activations are 16 or 8 bits")),
                    };
                    QuantScheme {
                        weight: WeightFormat::Int { bits, symmetric },
                        granularity,
                        activation,
                        double_quant: false,
                    }
                }
            }
        };
        Ok(scheme)
    }

    /// The input-dimension extent of one scale for a weight with `in_features` columns.
    pub fn group_size(&self, in_features: usize) -> usize {
        match self.granularity {
            Granularity::Group(g) => g,
            Granularity::Channel => in_features.max(1),
            Granularity::Block128 => FP8_BLOCK,
        }
    }

    /// Output rows that share one scale row (128 for blocks, else 1).
    pub fn row_block(&self) -> usize {
        match self.granularity {
            Granularity::Block128 => FP8_BLOCK,
            _ => 1,
        }
    }

    /// Stored bits per weight value (codes only).
    pub fn code_bits(&self) -> usize {
        match self.weight {
            WeightFormat::Int { bits, .. } => bits as usize,
            WeightFormat::Nf4 | WeightFormat::Fp4 => 4,
            WeightFormat::Fp8 => 8,
        }
    }

    /// The scheme's name, as [`QuantScheme::parse`] reads it.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

/// `w4a16` -> (4, 16).
fn parse_wa(head: &str) -> Option<(u8, u8)> {
    let rest = head.strip_prefix('w')?;
    let (w, a) = rest.split_once('a')?;
    Some((w.parse().ok()?, a.parse().ok()?))
}

impl fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.weight {
            WeightFormat::Nf4 | WeightFormat::Fp4 => {
                let head = if self.weight == WeightFormat::Nf4 {
                    "nf4"
                } else {
                    "fp4"
                };
                write!(f, "{head}{}", if self.double_quant { "-dq" } else { "" })
            }
            WeightFormat::Fp8 => {
                let block = self.granularity == Granularity::Block128;
                match (self.activation, block) {
                    (ActivationFormat::Fp8, false) => write!(f, "w8a8-fp8"),
                    (ActivationFormat::Fp8, true) => write!(f, "w8a8-fp8-block"),
                    (_, false) => write!(f, "fp8"),
                    (_, true) => write!(f, "fp8-block"),
                }
            }
            WeightFormat::Int { bits, symmetric } => {
                let a = if self.activation == ActivationFormat::Int8 {
                    8
                } else {
                    16
                };
                write!(f, "w{bits}a{a}")?;
                if let Granularity::Group(g) = self.granularity {
                    write!(f, "-g{g}")?;
                }
                if !symmetric {
                    write!(f, "-asym")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for QuantScheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QuantScheme::parse(s)
    }
}

impl Serialize for QuantScheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for QuantScheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        QuantScheme::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "w4a16-g128",
            "w4a16-g32-asym",
            "w4a16",
            "w8a16",
            "w8a16-g128",
            "w8a8",
            "w4a8-g128",
            "nf4",
            "nf4-dq",
            "fp4",
            "fp4-dq",
            "fp8",
            "fp8-block",
            "w8a8-fp8",
            "w8a8-fp8-block",
        ] {
            let scheme = QuantScheme::parse(name).unwrap();
            assert_eq!(scheme.to_string(), name);
            let json = serde_json::to_string(&scheme).unwrap();
            assert_eq!(serde_json::from_str::<QuantScheme>(&json).unwrap(), scheme);
        }
    }

    #[test]
    fn bad_names_are_errors() {
        for name in [
            "",
            "w3a16",
            "w4a16-g100",
            "w4a4",
            "nf4-g32",
            "fp8-x",
            "w4a8-fp8",
            "q4",
        ] {
            assert!(QuantScheme::parse(name).is_err(), "{name}");
        }
    }
}
