//! The GPTQ layout of AutoGPTQ and GPTQModel (`quant_method: "gptq"`).
//!
//! `quantization_config`: `bits` (4 or 8), `group_size` (-1: one group per output channel),
//! `desc_act`, `sym`, `checkpoint_format` (`"gptq"`, the default, or `"gptq_v2"`). Tensors of a
//! quantized linear `P` (`pf = 32 / bits` values per word, `groups = in / group_size`):
//!
//! | tensor | dtype, shape | content |
//! |---|---|---|
//! | `P.qweight` | I32 `[in / pf, out]` | code of input `k`, output `n`: bits `bits*(k % pf)` of word `[k / pf, n]`, unsigned |
//! | `P.qzeros` | I32 `[groups, out / pf]` | zero point of group `g`, output `n`: bits `bits*(n % pf)` of word `[g, n / pf]`; `gptq` stores the zero point minus one, `gptq_v2` the zero point itself |
//! | `P.scales` | F16 `[groups, out]` | |
//! | `P.g_idx` | I32 `[in]` | group of each input channel (optional) |
//!
//! Dequantization: `w[n, k] = (code - zero) * scale` with the group `g_idx[k]`. lowbit keeps
//! static groups only, so it imports checkpoints whose `g_idx` is `k / group_size` (always the
//! case without `desc_act`); an act-order checkpoint with reordered groups is an error.

use serde_json::Value;

use super::{
    field, import_packed_modules, int_layer_from_unsigned, int_values, words, ImportedLayer,
};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::quant::Granularity;

/// The quantized layers of a GPTQ checkpoint, in lowbit's layout.
pub(crate) fn import_layers(checkpoint: &Checkpoint) -> Result<Vec<ImportedLayer>> {
    let path = checkpoint.path();
    let q = checkpoint
        .config()
        .quantization_config
        .as_ref()
        .expect("quantized checkpoint");
    let bad = |why: String| Error::config(path, format!("GPTQ quantization_config: {why}"));
    let bits = q.get("bits").and_then(Value::as_u64).unwrap_or(4);
    if bits != 4 && bits != 8 {
        return Err(bad(format!("{bits}-bit codes (lowbit reads 4 and 8)")));
    }
    let group_size = q.get("group_size").and_then(Value::as_i64).unwrap_or(128);
    let format = q
        .get("checkpoint_format")
        .and_then(Value::as_str)
        .unwrap_or("gptq");
    let zero_offset = match format {
        "gptq" => 1,
        "gptq_v2" => 0,
        other => return Err(bad(format!("checkpoint_format '{other}'"))),
    };
    let granularity = match group_size {
        -1 => Granularity::Channel,
        n if n > 0 && (n as usize).is_multiple_of(32) => Granularity::Group(n as usize),
        n => {
            return Err(bad(format!(
                "group_size {n} (lowbit's groups are multiples of 32)"
            )))
        }
    };
    let bits = bits as usize;
    import_packed_modules(
        checkpoint,
        "GPTQ",
        &["qweight", "qzeros", "scales", "g_idx"],
        |module| read_layer(checkpoint, module, bits, granularity, zero_offset),
    )
}

fn read_layer(
    checkpoint: &Checkpoint,
    module: &str,
    bits: usize,
    granularity: Granularity,
    zero_offset: i64,
) -> Result<crate::quant::QuantizedTensor> {
    let name = |s: &str| format!("{module}.{s}");
    let per_word = 32 / bits;
    let qweight = checkpoint.tensor(&name("qweight"))?;
    let [packed_rows, out] = qweight.shape()[..] else {
        return Err(Error::InvalidArgument(format!(
            "qweight of shape {:?}",
            qweight.shape()
        )));
    };
    let g_idx = match checkpoint.tensor(&name("g_idx")) {
        Ok(t) => Some(int_values(t, &name("g_idx"))?),
        Err(_) => None,
    };
    let inp = g_idx.as_ref().map_or(packed_rows * per_word, Vec::len);
    if inp.div_ceil(per_word) != packed_rows {
        return Err(Error::InvalidArgument(format!(
            "qweight has {packed_rows} packed rows for {inp} inputs"
        )));
    }
    let group_size = match granularity {
        Granularity::Group(n) => n,
        _ => inp,
    };
    let groups = inp.div_ceil(group_size);
    if let Some(g_idx) = &g_idx {
        if g_idx
            .iter()
            .enumerate()
            .any(|(k, &g)| g != (k / group_size) as i64)
        {
            return Err(Error::InvalidArgument(
                "g_idx reorders input channels across groups (desc_act); lowbit stores static \
                 groups only"
                    .into(),
            ));
        }
    }
    let scales_t = checkpoint.tensor(&name("scales"))?;
    super::expect_shape(scales_t, &name("scales"), &[groups, out])?;
    let qzeros = checkpoint.tensor(&name("qzeros"))?;
    super::expect_shape(qzeros, &name("qzeros"), &[groups, out.div_ceil(per_word)])?;
    let w = words(qweight, &name("qweight"))?;
    let zw = words(qzeros, &name("qzeros"))?;
    let scale_values = scales_t.to_f32_vec();
    // Transposed to lowbit's [out, groups].
    let mut zeros = vec![0i64; out * groups];
    let mut scales = vec![0f32; out * groups];
    for g in 0..groups {
        for n in 0..out {
            let stored = field(
                zw[g * out.div_ceil(per_word) + n / per_word],
                bits,
                n % per_word,
            );
            zeros[n * groups + g] = i64::from(stored) + zero_offset;
            scales[n * groups + g] = scale_values[g * out + n];
        }
    }
    int_layer_from_unsigned(
        [out, inp],
        bits as u8,
        granularity,
        |n, k| field(w[(k / per_word) * out + n], bits, k % per_word),
        &zeros,
        &scales,
    )
}
