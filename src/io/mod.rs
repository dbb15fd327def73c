//! Quantized checkpoints in the layouts of other tools: import (a checkpoint quantized elsewhere
//! runs and is scored in lowbit) and export (a checkpoint quantized by lowbit serves in vLLM and
//! loads in transformers).
//!
//! Import translates a foreign checkpoint into lowbit's own layout ([`crate::quant::weights`])
//! in memory: tensors are renamed, repacked where the bit order differs, and the
//! `quantization_config` is rewritten to lowbit's (`quant_method: "lowbit"`, with the source
//! layout recorded as `method: "import:<layout>"`). Layouts read:
//!
//! - [`compressed_tensors`]: llm-compressor's `pack-quantized`, `int-quantized`,
//!   `naive-quantized` and `float-quantized` formats (`quant_method: "compressed-tensors"`).
//! - [`gptq`]: AutoGPTQ / GPTQModel (`quant_method: "gptq"`, checkpoint format `gptq` or
//!   `gptq_v2`).
//! - [`awq`]: AutoAWQ's GEMM layout (`quant_method: "awq"`, `version: "gemm"`).
//!
//! Export writes [`compressed_tensors`] only: it is what vLLM and transformers load natively.

pub mod awq;
pub mod compressed_tensors;
pub mod gptq;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::checkpoint::{Checkpoint, Dtype, Tensor};
use crate::error::{Error, Result};
use crate::quant::apply::linear_modules;
use crate::quant::config::{quantization_config, QUANT_METHOD};
use crate::quant::{QuantRules, QuantScheme, QuantizedTensor};

/// The quantized-checkpoint layouts lowbit recognizes by `quantization_config.quant_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// lowbit's own (`"lowbit"`).
    Lowbit,
    /// compressed-tensors (`"compressed-tensors"`).
    CompressedTensors,
    /// AutoGPTQ / GPTQModel (`"gptq"`).
    Gptq,
    /// AutoAWQ (`"awq"`).
    Awq,
}

impl Layout {
    /// The `quant_method` string of the layout.
    pub fn quant_method(self) -> &'static str {
        match self {
            Layout::Lowbit => QUANT_METHOD,
            Layout::CompressedTensors => "compressed-tensors",
            Layout::Gptq => "gptq",
            Layout::Awq => "awq",
        }
    }
}

/// The layout `checkpoint` is quantized in; `None` when it is not quantized.
pub fn layout_of(checkpoint: &Checkpoint) -> Result<Option<Layout>> {
    let Some(q) = &checkpoint.config().quantization_config else {
        return Ok(None);
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    [
        Layout::Lowbit,
        Layout::CompressedTensors,
        Layout::Gptq,
        Layout::Awq,
    ]
    .into_iter()
    .find(|l| l.quant_method() == method)
    .map(Some)
    .ok_or_else(|| {
        Error::config(
            checkpoint.path(),
            format!(
                "quantization_config.quant_method '{method}' is not a layout lowbit reads \
                 (lowbit, compressed-tensors, gptq, awq)"
            ),
        )
    })
}

/// `checkpoint` in lowbit's own layout: unchanged when it is unquantized or already lowbit's,
/// translated when it is in a layout of [`Layout`].
pub fn import(checkpoint: &Checkpoint) -> Result<Cow<'_, Checkpoint>> {
    let layers = match layout_of(checkpoint)? {
        None | Some(Layout::Lowbit) => return Ok(Cow::Borrowed(checkpoint)),
        Some(Layout::CompressedTensors) if compressed_tensors::is_dense(checkpoint)? => {
            // Weights stored dequantized: they load as the plain float model they are.
            let mut config = checkpoint.config().clone();
            config.quantization_config = None;
            return Ok(Cow::Owned(Checkpoint::from_parts(
                checkpoint.path().to_path_buf(),
                config,
                checkpoint.tensors().clone(),
                checkpoint.tokenizer_json().map(str::to_string),
            )));
        }
        Some(Layout::CompressedTensors) => compressed_tensors::import_layers(checkpoint)?,
        Some(Layout::Gptq) => gptq::import_layers(checkpoint)?,
        Some(Layout::Awq) => awq::import_layers(checkpoint)?,
    };
    let layout = layout_of(checkpoint)?.expect("quantized");
    Ok(Cow::Owned(assemble(checkpoint, layers, layout)?))
}

/// One imported layer: the module name, its tensor in lowbit's layout, and the names of the
/// source tensors it replaces.
pub(crate) struct ImportedLayer {
    pub module: String,
    pub tensor: QuantizedTensor,
    pub consumed: Vec<String>,
}

/// Builds the lowbit checkpoint from the imported layers and the untouched source tensors.
fn assemble(
    checkpoint: &Checkpoint,
    layers: Vec<ImportedLayer>,
    from: Layout,
) -> Result<Checkpoint> {
    let mut tensors: BTreeMap<String, Tensor> = checkpoint.tensors().clone();
    let mut schemes: BTreeMap<String, QuantScheme> = BTreeMap::new();
    for layer in layers {
        for name in &layer.consumed {
            tensors.remove(name);
        }
        tensors.extend(layer.tensor.to_tensors(&layer.module));
        schemes.insert(layer.module, *layer.tensor.scheme());
    }
    if schemes.is_empty() {
        return Err(Error::config(
            checkpoint.path(),
            format!(
                "quantization_config ({}) matches no linear layer of the model",
                from.quant_method()
            ),
        ));
    }
    // The most common scheme stands as the default of the recorded rules; `layers` is what
    // loading reads.
    let mut counts: BTreeMap<String, (usize, QuantScheme)> = BTreeMap::new();
    for s in schemes.values() {
        counts.entry(s.to_string()).or_insert((0, *s)).0 += 1;
    }
    let default = counts
        .values()
        .max_by_key(|(n, _)| *n)
        .map(|(_, s)| *s)
        .expect("non-empty");
    let mut config = checkpoint.config().clone();
    config.quantization_config = Some(quantization_config(
        &schemes,
        &QuantRules::new(default),
        &format!("import:{}", from.quant_method()),
    ));
    Ok(Checkpoint::from_parts(
        checkpoint.path().to_path_buf(),
        config,
        tensors,
        checkpoint.tokenizer_json().map(str::to_string),
    ))
}

/// The linear modules of `checkpoint` that have a stored tensor group under `prefix` + one of
/// `suffixes` (the module names a layout may quantize), in model order.
pub(crate) fn candidate_modules(checkpoint: &Checkpoint, suffixes: &[&str]) -> Vec<String> {
    linear_modules(checkpoint)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            suffixes
                .iter()
                .any(|s| checkpoint.has_tensor(&format!("{name}.{s}")))
        })
        .collect()
}

/// Imports every module of `checkpoint` that stores a `qweight` (the GPTQ and AWQ layouts) with
/// `read`; `layout` names the layout in errors, `tensors` the per-module tensors it replaces.
pub(crate) fn import_packed_modules(
    checkpoint: &Checkpoint,
    layout: &str,
    tensors: &[&str],
    read: impl Fn(&str) -> Result<QuantizedTensor>,
) -> Result<Vec<ImportedLayer>> {
    candidate_modules(checkpoint, &["qweight"])
        .into_iter()
        .map(|module| {
            let tensor = read(&module).map_err(|e| match e {
                Error::InvalidArgument(why) => {
                    Error::format(checkpoint.path(), format!("{layout} layer {module}: {why}"))
                }
                other => other,
            })?;
            let consumed = tensors
                .iter()
                .map(|s| format!("{module}.{s}"))
                .filter(|n| checkpoint.has_tensor(n))
                .collect();
            Ok(ImportedLayer {
                module,
                tensor,
                consumed,
            })
        })
        .collect()
}

/// Integer values of an I32 or I64 tensor, exactly (packed words must not pass through f32).
pub(crate) fn int_values(t: &Tensor, name: &str) -> Result<Vec<i64>> {
    let bytes = t.raw_bytes();
    match t.dtype() {
        Dtype::I32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))))
            .collect()),
        Dtype::I64 => Ok(bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        Dtype::I8 => Ok(bytes.iter().map(|&b| i64::from(b as i8)).collect()),
        other => Err(Error::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: format!("{other:?} (expected an integer tensor)"),
        }),
    }
}

/// Packed 32-bit words of an I32 tensor, as unsigned bit patterns.
pub(crate) fn words(t: &Tensor, name: &str) -> Result<Vec<u32>> {
    if t.dtype() != Dtype::I32 {
        return Err(Error::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: format!("{:?} (packed codes must be I32)", t.dtype()),
        });
    }
    Ok(t.raw_bytes()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}

/// An I32 tensor of `words`.
pub(crate) fn word_tensor(shape: Vec<usize>, words: &[u32]) -> Tensor {
    Tensor::from_bytes(shape, Dtype::I32, bytemuck::cast_slice(words))
}

/// Checks that `t` has `shape`.
pub(crate) fn expect_shape(t: &Tensor, name: &str, shape: &[usize]) -> Result<()> {
    if t.shape() == shape {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            tensor: name.to_string(),
            expected: shape.to_vec(),
            found: t.shape().to_vec(),
        })
    }
}

/// An integer layer from unsigned codes: `code(r, k)` in `0..2^bits`, `zeros[r * groups + g]`
/// the unsigned zero point of row `r` and group `g`, `scales` `[rows, groups]`. Dequantization
/// `w = (code - zero) * scale`; a layer whose zero points all sit at `2^(bits-1)` becomes a
/// symmetric scheme.
pub(crate) fn int_layer_from_unsigned(
    shape: [usize; 2],
    bits: u8,
    granularity: crate::quant::Granularity,
    code: impl Fn(usize, usize) -> u32,
    zeros: &[i64],
    scales: &[f32],
) -> Result<QuantizedTensor> {
    use crate::quant::{ActivationFormat, Scales, WeightFormat};
    let [rows, cols] = shape;
    let mid = 1i64 << (bits - 1);
    let symmetric = zeros.iter().all(|&z| z == mid);
    let scheme = QuantScheme {
        weight: WeightFormat::Int { bits, symmetric },
        granularity,
        activation: ActivationFormat::Float,
        double_quant: false,
    };
    let codes = if bits == 4 {
        let per_row = cols.div_ceil(8);
        let mut w = vec![0u32; rows * per_row];
        for r in 0..rows {
            for k in 0..cols {
                w[r * per_row + k / 8] |= (code(r, k) & 0xF) << (4 * (k % 8));
            }
        }
        word_tensor(vec![rows, per_row], &w)
    } else {
        let mut bytes = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for k in 0..cols {
                bytes.push((code(r, k) as u8).wrapping_sub(128));
            }
        }
        Tensor::from_bytes(vec![rows, cols], Dtype::I8, &bytes)
    };
    let zero_points = if symmetric {
        None
    } else {
        let range = -mid..mid;
        Some(
            zeros
                .iter()
                .map(|&z| {
                    let signed = z - mid;
                    if range.contains(&signed) {
                        Ok(signed as i8)
                    } else {
                        Err(Error::InvalidArgument(format!(
                            "zero point {z} outside 0..{} for {bits}-bit codes",
                            2 * mid
                        )))
                    }
                })
                .collect::<Result<Vec<i8>>>()?,
        )
    };
    let groups = scales.len() / rows.max(1);
    let scale = crate::quant::weights::f16_tensor(vec![rows, groups], scales);
    QuantizedTensor::new(scheme, shape, codes, Scales::Dense(scale), zero_points)
}

/// `bits`-bit field `index` of a packed word.
pub(crate) fn field(word: u32, bits: usize, index: usize) -> u32 {
    (word >> (bits * index)) & ((1u32 << bits) - 1)
}
