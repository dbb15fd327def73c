//! The compressed-tensors layout (llm-compressor's output; what vLLM and transformers load).
//!
//! `config.json` carries `quantization_config` with `quant_method: "compressed-tensors"`,
//! `format` (one format, or `"mixed-precision"` with a `format` per group), `config_groups`
//! (each a scheme: `targets`, `weights`, `input_activations`) and `ignore`. A target or ignore
//! entry is a module name, `"re:REGEX"` matched against the name, or a class name (`"Linear"`
//! matches every linear layer).
//!
//! Tensors of a quantized linear `P`, by format:
//!
//! | format | tensors |
//! |---|---|
//! | `pack-quantized` | `P.weight_packed` I32 `[out, ceil(in*bits/32)]`: value `k` of a row at bit `bits*k` of the row's bit string (words little-endian), stored as `q + 2^(bits-1)`; `P.weight_scale` `[out, groups]`; `P.weight_shape` I64 `[2]`; asymmetric: `P.weight_zero_point` packed the same way along the output dimension, I32 `[ceil(out*bits/32), groups]` |
//! | `int-quantized`, `naive-quantized` | `P.weight` I8 `[out, in]`; `P.weight_scale`; asymmetric: `P.weight_zero_point` I8 `[out, groups]` |
//! | `float-quantized` | `P.weight` F8_E4M3 `[out, in]`; `P.weight_scale` `[out, 1]` (channel), `[ceil(out/128), ceil(in/128)]` (block) or `[1]` (tensor) |
//!
//! Dequantization is `w = (q - z) * scale` for integers and `w = code * scale` for FP8, as in
//! lowbit. For int4 the packed words are lowbit's own layout, so import and export copy them.
//! lowbit runs activations with dynamic per-token (or per 1x128 group) scales, so it imports
//! dynamic activation schemes only; NF4 and FP4 have no compressed-tensors format.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{json, Value};

use super::{candidate_modules, expect_shape, int_values, word_tensor, words, ImportedLayer};
use crate::checkpoint::{Checkpoint, Dtype, Tensor};
use crate::error::{Error, Result};
use crate::quant::config::layer_schemes;
use crate::quant::scheme::FP8_BLOCK;
use crate::quant::{
    ActivationFormat, Granularity, QuantScheme, QuantizedTensor, Scales, WeightFormat,
};

/// `quant_method` of the layout.
pub const QUANT_METHOD: &str = "compressed-tensors";

/// Storage formats of the layout that lowbit reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Packed,
    Int,
    Float,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Packed => "pack-quantized",
            Format::Int => "int-quantized",
            Format::Float => "float-quantized",
        }
    }

    fn parse(name: &str) -> Option<Format> {
        match name {
            "pack-quantized" => Some(Format::Packed),
            "int-quantized" | "naive-quantized" => Some(Format::Int),
            "float-quantized" => Some(Format::Float),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// One config group: its targets, the scheme it means for lowbit, and its storage format.
struct Group {
    name: String,
    targets: Vec<String>,
    scheme: QuantScheme,
    format: Format,
}

/// Whether a compressed-tensors checkpoint stores its weights dequantized (format `dense`, as
/// llm-compressor writes with `save_compressed=False`): true when every config group is dense
/// and quantizes weights only, so the stored floats are the whole model. A dense group that also
/// quantizes activations is an error: loading it as floats would silently drop that.
pub(crate) fn is_dense(checkpoint: &Checkpoint) -> Result<bool> {
    let path = checkpoint.path();
    let Some(q) = checkpoint.config().quantization_config.as_ref() else {
        return Ok(false);
    };
    let top_format = q.get("format").and_then(Value::as_str).unwrap_or("");
    let Some(groups) = q.get("config_groups").and_then(Value::as_object) else {
        return Ok(false);
    };
    let dense = |g: &Value| {
        g.get("format")
            .and_then(Value::as_str)
            .unwrap_or(top_format)
            == "dense"
    };
    if groups.is_empty() || !groups.values().all(dense) {
        return Ok(false);
    }
    for (name, g) in groups {
        if g.get("input_activations").is_some_and(|a| !a.is_null()) {
            return Err(Error::config(
                path,
                format!(
                    "compressed-tensors config: group '{name}': format 'dense' with quantized \
                     input activations; the stored weights load as floats, but the activation \
                     quantization would be lost: save the checkpoint compressed instead"
                ),
            ));
        }
    }
    Ok(true)
}

/// The quantized layers of a compressed-tensors checkpoint, in lowbit's layout.
pub(crate) fn import_layers(checkpoint: &Checkpoint) -> Result<Vec<ImportedLayer>> {
    let path = checkpoint.path();
    let bad = |why: String| Error::config(path, format!("compressed-tensors config: {why}"));
    let q = checkpoint
        .config()
        .quantization_config
        .as_ref()
        .expect("quantized checkpoint");
    let status = q
        .get("quantization_status")
        .and_then(Value::as_str)
        .unwrap_or("compressed");
    if status != "compressed" {
        return Err(bad(format!(
            "quantization_status '{status}': only compressed checkpoints hold quantized codes"
        )));
    }
    let top_format = q.get("format").and_then(Value::as_str).unwrap_or("");
    let groups_json = q
        .get("config_groups")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing 'config_groups' object".into()))?;
    let mut groups = Vec::new();
    for (name, g) in groups_json {
        let format_name = g
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or(top_format);
        let format = Format::parse(format_name).ok_or_else(|| {
            bad(format!(
                "group '{name}': format '{format_name}' is not one lowbit reads \
                 (pack-quantized, int-quantized, naive-quantized, float-quantized, or dense \
                 in every group)"
            ))
        })?;
        let scheme = group_scheme(g).map_err(|why| bad(format!("group '{name}': {why}")))?;
        let targets = string_list(g.get("targets")).ok_or_else(|| {
            bad(format!(
                "group '{name}': 'targets' must be a list of strings"
            ))
        })?;
        groups.push(Group {
            name: name.clone(),
            targets,
            scheme,
            format,
        });
    }
    let ignore = string_list(q.get("ignore")).unwrap_or_default();
    let matchers = |list: &[String]| -> Result<Vec<Matcher>> {
        list.iter().map(|t| Matcher::new(t, path)).collect()
    };
    let ignore = matchers(&ignore)?;
    let mut layers = Vec::new();
    for module in candidate_modules(checkpoint, &["weight_packed", "weight"]) {
        if ignore.iter().any(|m| m.matches(&module)) {
            continue;
        }
        let mut chosen = None;
        for g in &groups {
            if matchers(&g.targets)?.iter().any(|m| m.matches(&module)) {
                chosen = Some(g);
                break;
            }
        }
        let Some(group) = chosen else { continue };
        let tensor = read_layer(checkpoint, &module, group).map_err(|e| match e {
            Error::InvalidArgument(why) => Error::format(path, format!("{module}: {why}")),
            other => other,
        })?;
        let consumed = [
            "weight",
            "weight_packed",
            "weight_scale",
            "weight_zero_point",
            "weight_shape",
            "weight_g_idx",
        ]
        .iter()
        .map(|s| format!("{module}.{s}"))
        .filter(|n| checkpoint.has_tensor(n))
        .collect();
        layers.push(ImportedLayer {
            module,
            tensor,
            consumed,
        });
    }
    Ok(layers)
}

/// A target or ignore entry.
enum Matcher {
    /// A class name that covers every linear layer.
    AnyLinear,
    Name(String),
    Pattern(Regex),
}

impl Matcher {
    fn new(text: &str, path: &std::path::Path) -> Result<Self> {
        if let Some(pattern) = text.strip_prefix("re:") {
            // Python's re.match anchors at the start only.
            Regex::new(&format!("^(?:{pattern})"))
                .map(Matcher::Pattern)
                .map_err(|e| {
                    Error::config(path, format!("compressed-tensors target '{text}': {e}"))
                })
        } else if text == "Linear" {
            Ok(Matcher::AnyLinear)
        } else {
            Ok(Matcher::Name(text.to_string()))
        }
    }

    fn matches(&self, module: &str) -> bool {
        match self {
            Matcher::AnyLinear => true,
            Matcher::Name(n) => n == module,
            Matcher::Pattern(r) => r.is_match(module),
        }
    }
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The lowbit scheme a config group describes.
fn group_scheme(g: &Value) -> std::result::Result<QuantScheme, String> {
    let weights = g
        .get("weights")
        .filter(|w| !w.is_null())
        .ok_or("no 'weights' arguments (activation-only schemes are not supported)")?;
    let field = |v: &Value, k: &str| v.get(k).filter(|x| !x.is_null()).cloned();
    let bits = field(weights, "num_bits")
        .and_then(|v| v.as_u64())
        .unwrap_or(8);
    let kind = field(weights, "type")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "int".into());
    let symmetric = field(weights, "symmetric")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let strategy = field(weights, "strategy")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "tensor".into());
    let group_size = field(weights, "group_size").and_then(|v| v.as_u64());
    if let Some(order) = field(weights, "actorder").and_then(|v| v.as_str().map(str::to_string)) {
        if order == "group" {
            // Checked per layer against the stored g_idx, which may still be the identity order.
        } else if order != "weight" {
            return Err(format!("actorder '{order}'"));
        }
    }
    let granularity = match strategy.as_str() {
        "group" => {
            let size = group_size.ok_or("strategy 'group' without group_size")? as usize;
            if size == 0 || !size.is_multiple_of(32) {
                return Err(format!(
                    "group_size {size}: lowbit's groups are multiples of 32"
                ));
            }
            Granularity::Group(size)
        }
        "channel" => Granularity::Channel,
        // One scale for the whole tensor is a channel scale repeated.
        "tensor" if kind == "float" => Granularity::Channel,
        "block" => {
            let block = field(weights, "block_structure")
                .and_then(|v| serde_json::from_value::<Vec<usize>>(v).ok())
                .unwrap_or_default();
            if block != [FP8_BLOCK, FP8_BLOCK] || kind != "float" {
                return Err(format!(
                    "block structure {block:?} of {kind} weights (lowbit has 128x128 FP8 blocks)"
                ));
            }
            Granularity::Block128
        }
        other => return Err(format!("weight strategy '{other}' for {kind} weights")),
    };
    let weight = match (kind.as_str(), bits) {
        ("int", 4 | 8) => WeightFormat::Int {
            bits: bits as u8,
            symmetric,
        },
        ("float", 8) if symmetric => WeightFormat::Fp8,
        _ => {
            return Err(format!(
                "{bits}-bit {kind} weights (symmetric: {symmetric})"
            ))
        }
    };
    let activation = match g.get("input_activations").filter(|a| !a.is_null()) {
        None => ActivationFormat::Float,
        Some(a) => {
            let a_bits = field(a, "num_bits").and_then(|v| v.as_u64()).unwrap_or(8);
            let a_kind = field(a, "type")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "int".into());
            let dynamic = field(a, "dynamic")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let a_symmetric = field(a, "symmetric")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            let a_strategy = field(a, "strategy")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if !dynamic || !a_symmetric || a_bits != 8 {
                return Err(format!(
                    "{a_bits}-bit activations, dynamic: {dynamic}, symmetric: {a_symmetric} \
                     (lowbit quantizes activations dynamically and symmetrically to 8 bits)"
                ));
            }
            let per_group = a_strategy == "group"
                && field(a, "group_size").and_then(|v| v.as_u64()) == Some(FP8_BLOCK as u64);
            match (a_kind.as_str(), a_strategy.as_str()) {
                ("int", "token") if matches!(weight, WeightFormat::Int { .. }) => {
                    ActivationFormat::Int8
                }
                ("float", "token") if weight == WeightFormat::Fp8 => ActivationFormat::Fp8,
                ("float", _) if per_group && granularity == Granularity::Block128 => {
                    ActivationFormat::Fp8
                }
                _ => {
                    return Err(format!(
                        "{a_kind} activations with strategy '{a_strategy}' on {kind} weights"
                    ))
                }
            }
        }
    };
    Ok(QuantScheme {
        weight,
        granularity,
        activation,
        double_quant: false,
    })
}

/// Reads the layer `module` of `group` into lowbit's layout.
fn read_layer(checkpoint: &Checkpoint, module: &str, group: &Group) -> Result<QuantizedTensor> {
    let get = |s: &str| checkpoint.tensor(&format!("{module}.{s}"));
    let scheme = group.scheme;
    let bits = scheme.code_bits();
    let (rows, cols, codes) = match (group.format, scheme.weight) {
        (Format::Packed, WeightFormat::Int { .. }) => {
            let shape_name = format!("{module}.weight_shape");
            let shape = int_values(get("weight_shape")?, &shape_name)?;
            let [rows, cols] = shape[..] else {
                return Err(Error::InvalidArgument(format!(
                    "weight_shape {shape:?} is not two sizes"
                )));
            };
            let (rows, cols) = (usize::try_from(rows), usize::try_from(cols));
            let (Ok(rows), Ok(cols)) = (rows, cols) else {
                return Err(Error::InvalidArgument("negative weight_shape".into()));
            };
            let name = format!("{module}.weight_packed");
            let packed = get("weight_packed")?;
            expect_shape(packed, &name, &[rows, (cols * bits).div_ceil(32)])?;
            let codes = if bits == 4 {
                packed.clone()
            } else {
                let w = words(packed, &name)?;
                let per_row = cols.div_ceil(4);
                let mut bytes = Vec::with_capacity(rows * cols);
                for r in 0..rows {
                    for k in 0..cols {
                        let byte = (w[r * per_row + k / 4] >> (8 * (k % 4))) as u8;
                        bytes.push(byte.wrapping_sub(128));
                    }
                }
                Tensor::from_bytes(vec![rows, cols], Dtype::I8, &bytes)
            };
            (rows, cols, codes)
        }
        (Format::Int, WeightFormat::Int { .. }) => {
            let weight = get("weight")?;
            if weight.dtype() != Dtype::I8 || weight.shape().len() != 2 {
                return Err(Error::InvalidArgument(format!(
                    "int-quantized weight must be I8 [out, in], found {:?} {:?}",
                    weight.dtype(),
                    weight.shape()
                )));
            }
            let (rows, cols) = (weight.shape()[0], weight.shape()[1]);
            let codes = if bits == 8 {
                weight.clone()
            } else {
                pack_int4_rows(weight.raw_bytes(), rows, cols)?
            };
            (rows, cols, codes)
        }
        (Format::Float, WeightFormat::Fp8) => {
            let weight = get("weight")?;
            if weight.dtype() != Dtype::F8E4M3 || weight.shape().len() != 2 {
                return Err(Error::InvalidArgument(format!(
                    "float-quantized weight must be F8_E4M3 [out, in], found {:?} {:?}",
                    weight.dtype(),
                    weight.shape()
                )));
            }
            (weight.shape()[0], weight.shape()[1], weight.clone())
        }
        (format, _) => {
            return Err(Error::InvalidArgument(format!(
                "format {} does not store {scheme} weights",
                format.name()
            )))
        }
    };
    let group_size = scheme.group_size(cols);
    let groups = cols.div_ceil(group_size);
    let scale_rows = rows.div_ceil(scheme.row_block());
    let scale = get("weight_scale")?;
    if !scale.dtype().is_float() {
        return Err(Error::InvalidArgument(format!(
            "weight_scale of {:?}",
            scale.dtype()
        )));
    }
    let scale = if scale.len() == 1 && scale_rows * groups != 1 {
        // Per-tensor FP8 scale, repeated per channel.
        Tensor::from_f32(vec![rows, 1], vec![scale.to_f32_vec()[0]; rows])
    } else {
        expect_shape(
            scale,
            &format!("{module}.weight_scale"),
            &[scale_rows, groups],
        )?;
        match scale.dtype() {
            Dtype::F16 | Dtype::F32 => scale.clone(),
            _ => scale.to_dtype(Dtype::F32),
        }
    };
    if let Ok(g_idx) = get("weight_g_idx") {
        let values = int_values(g_idx, &format!("{module}.weight_g_idx"))?;
        let identity = values.len() == cols
            && values
                .iter()
                .enumerate()
                .all(|(k, &g)| g == (k / group_size) as i64);
        if !identity {
            return Err(Error::InvalidArgument(
                "weight_g_idx reorders input channels across groups (activation ordering with \
                 dynamic groups); lowbit stores static groups only"
                    .into(),
            ));
        }
    }
    let zero_points = match scheme.weight {
        WeightFormat::Int {
            symmetric: false, ..
        } => {
            let name = format!("{module}.weight_zero_point");
            let z = get("weight_zero_point")?;
            Some(match group.format {
                Format::Packed => {
                    expect_shape(z, &name, &[(rows * bits).div_ceil(32), groups])?;
                    unpack_columns(&words(z, &name)?, rows, groups, bits)
                }
                _ => {
                    expect_shape(z, &name, &[rows, groups])?;
                    int_values(z, &name)?.iter().map(|&v| v as i8).collect()
                }
            })
        }
        _ => None,
    };
    QuantizedTensor::new(
        scheme,
        [rows, cols],
        codes,
        Scales::Dense(scale),
        zero_points,
    )
    .map_err(|e| Error::InvalidArgument(format!("group '{}': {e}", group.name)))
}

/// lowbit's int4 words from int8-held values in `-8..=7`.
fn pack_int4_rows(values: &[u8], rows: usize, cols: usize) -> Result<Tensor> {
    let per_row = cols.div_ceil(8);
    let mut out = vec![0u32; rows * per_row];
    for r in 0..rows {
        for k in 0..cols {
            let v = values[r * cols + k] as i8;
            if !(-8..=7).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "int4 value {v} outside -8..7 at [{r}, {k}]"
                )));
            }
            out[r * per_row + k / 8] |= ((v + 8) as u32) << (4 * (k % 8));
        }
    }
    Ok(word_tensor(vec![rows, per_row], &out))
}

/// Values `[rows, cols]` packed along the rows (compressed-tensors' `packed_dim=0`): row `r` of
/// column `c` at bit `bits*r` of column `c`'s bit string, words `[ceil(rows*bits/32), cols]`.
fn unpack_columns(w: &[u32], rows: usize, cols: usize, bits: usize) -> Vec<i8> {
    let per_word = 32 / bits;
    let mask = (1u32 << bits) - 1;
    let offset = 1i32 << (bits - 1);
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let word = w[(r / per_word) * cols + c];
            out[r * cols + c] = (((word >> (bits * (r % per_word))) & mask) as i32 - offset) as i8;
        }
    }
    out
}

/// Inverse of [`unpack_columns`].
fn pack_columns(values: &[i8], rows: usize, cols: usize, bits: usize) -> Vec<u32> {
    let per_word = 32 / bits;
    let mask = (1u32 << bits) - 1;
    let offset = 1i32 << (bits - 1);
    let mut out = vec![0u32; rows.div_ceil(per_word) * cols];
    for r in 0..rows {
        for c in 0..cols {
            let v = ((i32::from(values[r * cols + c]) + offset) as u32) & mask;
            out[(r / per_word) * cols + c] |= v << (bits * (r % per_word));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Export

/// `checkpoint` (lowbit's layout, quantized) in the compressed-tensors layout. Dense tensors are
/// converted to `dense_dtype` when given; codes and scales are kept as stored. NF4/FP4 layers
/// have no compressed-tensors format and are an error.
pub fn export(checkpoint: &Checkpoint, dense_dtype: Option<Dtype>) -> Result<Checkpoint> {
    let path = checkpoint.path();
    let schemes = layer_schemes(checkpoint.config(), path)?;
    if schemes.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} is not quantized: nothing to export",
            path.display()
        )));
    }
    let mut tensors: BTreeMap<String, Tensor> = checkpoint
        .tensors()
        .iter()
        .map(|(n, t)| {
            let t = match dense_dtype {
                Some(d) if t.dtype().is_float() => t.to_dtype(d),
                _ => t.clone(),
            };
            (n.clone(), t)
        })
        .collect();
    let mut groups: BTreeMap<String, (Value, Format, Vec<String>)> = BTreeMap::new();
    for (module, scheme) in &schemes {
        let q = QuantizedTensor::from_tensors(*scheme, module, |n| checkpoint.tensor(n))?;
        for name in q.to_tensors(module).keys() {
            tensors.remove(name);
        }
        let (format, layer) = export_layer(&q, module)?;
        tensors.extend(layer);
        let entry = groups
            .entry(scheme.to_string())
            .or_insert_with(|| (scheme_json(scheme), format, Vec::new()));
        entry.2.push(module.clone());
    }
    let all_linears: Vec<String> = super::candidate_modules(checkpoint, &["weight"])
        .into_iter()
        .chain(schemes.keys().cloned())
        .collect();
    let single = groups.len() == 1;
    let formats: std::collections::BTreeSet<&str> =
        groups.values().map(|(_, f, _)| f.name()).collect();
    let top_format = if formats.len() == 1 {
        formats.into_iter().next().expect("one").to_string()
    } else {
        "mixed-precision".to_string()
    };
    let mut config_groups = serde_json::Map::new();
    for (i, (_, (mut scheme, format, modules))) in groups.into_iter().enumerate() {
        scheme["targets"] = if single {
            json!(["Linear"])
        } else {
            json!(modules)
        };
        scheme["format"] = json!(format.name());
        config_groups.insert(format!("group_{i}"), scheme);
    }
    let mut ignore: Vec<String> = all_linears
        .into_iter()
        .filter(|m| !schemes.contains_key(m))
        .collect();
    ignore.sort();
    ignore.dedup();
    if !checkpoint.has_tensor("lm_head.weight") && !schemes.contains_key("lm_head") {
        // A tied head is still a Linear module to the loaders.
        ignore.push("lm_head".into());
    }
    let mut config = checkpoint.config().clone();
    config.quantization_config = Some(json!({
        "quant_method": QUANT_METHOD,
        "format": top_format,
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
    }));
    Ok(Checkpoint::from_parts(
        path.to_path_buf(),
        config,
        tensors,
        checkpoint.tokenizer_json().map(str::to_string),
    ))
}

/// The `weights` / `input_activations` arguments of `scheme`.
fn scheme_json(scheme: &QuantScheme) -> Value {
    let (bits, kind, symmetric) = match scheme.weight {
        WeightFormat::Int { bits, symmetric } => (bits, "int", symmetric),
        _ => (8, "float", true),
    };
    let (strategy, group_size, block) = match scheme.granularity {
        Granularity::Group(n) => ("group", json!(n), Value::Null),
        Granularity::Channel => ("channel", Value::Null, Value::Null),
        Granularity::Block128 => ("block", Value::Null, json!([FP8_BLOCK, FP8_BLOCK])),
    };
    let activations = |kind: &str, strategy: &str, group_size: Value| {
        json!({
            "num_bits": 8, "type": kind, "symmetric": true, "strategy": strategy,
            "group_size": group_size, "block_structure": null, "dynamic": true,
            "actorder": null, "observer": null, "observer_kwargs": {},
        })
    };
    let input = match (scheme.activation, scheme.granularity) {
        (ActivationFormat::Float, _) => Value::Null,
        (ActivationFormat::Int8, _) => activations("int", "token", Value::Null),
        (ActivationFormat::Fp8, Granularity::Block128) => {
            activations("float", "group", json!(FP8_BLOCK))
        }
        (ActivationFormat::Fp8, _) => activations("float", "token", Value::Null),
    };
    json!({
        "weights": {
            "num_bits": bits, "type": kind, "symmetric": symmetric, "strategy": strategy,
            "group_size": group_size, "block_structure": block, "dynamic": false,
            "actorder": null, "observer": "minmax", "observer_kwargs": {},
        },
        "input_activations": input,
        "output_activations": null,
    })
}

/// The compressed-tensors tensors of one layer, and the format they are in.
fn export_layer(q: &QuantizedTensor, module: &str) -> Result<(Format, BTreeMap<String, Tensor>)> {
    let scheme = q.scheme();
    let (rows, cols, groups) = (q.rows(), q.cols(), q.groups());
    let mut out = BTreeMap::new();
    let Scales::Dense(scale) = q.scales() else {
        return Err(unsupported(module, scheme));
    };
    out.insert(format!("{module}.weight_scale"), scale.clone());
    if let Granularity::Group(size) = scheme.granularity {
        if !cols.is_multiple_of(size) {
            return Err(Error::InvalidArgument(format!(
                "{module}: {cols} input features are not a multiple of the group size {size}; \
                 compressed-tensors (and vLLM's kernels) need whole groups: quantize with a \
                 group size that divides {cols}"
            )));
        }
    }
    if scheme.activation == ActivationFormat::Fp8
        && scheme.granularity == Granularity::Block128
        && !cols.is_multiple_of(FP8_BLOCK)
    {
        return Err(Error::InvalidArgument(format!(
            "{module}: {cols} input features are not a multiple of {FP8_BLOCK}; dynamic FP8 \
             activations in groups of {FP8_BLOCK} need whole groups in compressed-tensors (and \
             vLLM): export w8a8-fp8 (per-token activations) or fp8-block (weight-only) instead"
        )));
    }
    let format = match (scheme.weight, scheme.activation) {
        (WeightFormat::Int { bits, .. }, _)
            if bits == 4 || scheme.activation == ActivationFormat::Float =>
        {
            let packed = if bits == 4 {
                q.codes().clone()
            } else {
                let per_row = cols.div_ceil(4);
                let mut w = vec![0u32; rows * per_row];
                let bytes = q.codes().raw_bytes();
                for r in 0..rows {
                    for k in 0..cols {
                        let v = u32::from(bytes[r * cols + k].wrapping_add(128));
                        w[r * per_row + k / 4] |= v << (8 * (k % 4));
                    }
                }
                word_tensor(vec![rows, per_row], &w)
            };
            out.insert(format!("{module}.weight_packed"), packed);
            let shape = [rows as i64, cols as i64];
            out.insert(
                format!("{module}.weight_shape"),
                Tensor::from_bytes(vec![2], Dtype::I64, bytemuck::cast_slice(&shape)),
            );
            if let Some(z) = q.zero_points() {
                let bits = usize::from(bits);
                let w = pack_columns(z, rows, groups, bits);
                out.insert(
                    format!("{module}.weight_zero_point"),
                    word_tensor(vec![(rows * bits).div_ceil(32), groups], &w),
                );
            }
            Format::Packed
        }
        (WeightFormat::Int { .. }, _) => {
            out.insert(format!("{module}.weight"), q.codes().clone());
            if let Some(z) = q.zero_points() {
                let bytes: Vec<u8> = z.iter().map(|&v| v as u8).collect();
                out.insert(
                    format!("{module}.weight_zero_point"),
                    Tensor::from_bytes(vec![rows, groups], Dtype::I8, &bytes),
                );
            }
            Format::Int
        }
        (WeightFormat::Fp8, _) => {
            out.insert(format!("{module}.weight"), q.codes().clone());
            Format::Float
        }
        (WeightFormat::Nf4 | WeightFormat::Fp4, _) => return Err(unsupported(module, scheme)),
    };
    Ok((format, out))
}

fn unsupported(module: &str, scheme: &QuantScheme) -> Error {
    Error::InvalidArgument(format!(
        "{module}: {scheme} has no compressed-tensors format (int4/int8 and FP8 schemes export; \
         NF4/FP4 stay in lowbit's layout)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_packing_round_trips_and_matches_the_documented_bits() {
        for bits in [4usize, 8] {
            let (rows, cols) = (19, 3);
            let lo = -(1i32 << (bits - 1));
            let values: Vec<i8> = (0..rows * cols)
                .map(|i| (lo + (i as i32 * 7) % (1 << bits)) as i8)
                .collect();
            let w = pack_columns(&values, rows, cols, bits);
            assert_eq!(w.len(), (rows * bits).div_ceil(32) * cols);
            assert_eq!(unpack_columns(&w, rows, cols, bits), values);
            // Row 1 of column 0 sits right after row 0 in the first word of column 0.
            let first = (w[0] >> bits) & ((1 << bits) - 1);
            assert_eq!(first as i32 - (1 << (bits - 1)), i32::from(values[cols]));
        }
    }
}
