//! AutoAWQ's GEMM layout (`quant_method: "awq"`, `version: "gemm"`).
//!
//! `quantization_config`: `bits` (4), `group_size`, `zero_point`, `version`. Tensors of a
//! quantized linear `P` (`groups = in / group_size`):
//!
//! | tensor | dtype, shape | content |
//! |---|---|---|
//! | `P.qweight` | I32 `[in, out / 8]` | codes of input `k` for outputs `8j..8j+8` in word `[k, j]`; nibble `i` (bits `4i..4i+4`) holds output `8j + ORDER[i]`, `ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`; unsigned |
//! | `P.qzeros` | I32 `[groups, out / 8]` | zero points, same interleaving |
//! | `P.scales` | F16 `[groups, out]` | |
//!
//! Dequantization: `w[n, k] = (code - zero) * scale`. Note the packing runs along the output
//! dimension (GPTQ packs along the input), and the nibble order is interleaved.

use serde_json::Value;

use super::{field, import_packed_modules, int_layer_from_unsigned, words, ImportedLayer};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::quant::Granularity;

/// Nibble `i` of a word holds output `ORDER[i]` of its eight.
pub const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// Output `j` of a word's eight sits in nibble `NIBBLE_OF[j]` (the inverse of [`ORDER`]).
pub const NIBBLE_OF: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// The quantized layers of an AWQ checkpoint, in lowbit's layout.
pub(crate) fn import_layers(checkpoint: &Checkpoint) -> Result<Vec<ImportedLayer>> {
    let path = checkpoint.path();
    let q = checkpoint
        .config()
        .quantization_config
        .as_ref()
        .expect("quantized checkpoint");
    let bad = |why: String| Error::config(path, format!("AWQ quantization_config: {why}"));
    let bits = q
        .get("bits")
        .or_else(|| q.get("w_bit"))
        .and_then(Value::as_u64)
        .unwrap_or(4);
    if bits != 4 {
        return Err(bad(format!(
            "{bits}-bit codes (AWQ GEMM checkpoints are 4-bit)"
        )));
    }
    let version = q
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("gemm")
        .to_ascii_lowercase();
    if version != "gemm" {
        return Err(bad(format!(
            "version '{version}' (lowbit reads the GEMM layout)"
        )));
    }
    let group_size = q
        .get("group_size")
        .or_else(|| q.get("q_group_size"))
        .and_then(Value::as_i64)
        .unwrap_or(128);
    let granularity = match group_size {
        -1 => Granularity::Channel,
        n if n > 0 && (n as usize).is_multiple_of(32) => Granularity::Group(n as usize),
        n => {
            return Err(bad(format!(
                "group_size {n} (lowbit's groups are multiples of 32)"
            )))
        }
    };
    import_packed_modules(
        checkpoint,
        "AWQ",
        &["qweight", "qzeros", "scales"],
        |module| read_layer(checkpoint, module, granularity),
    )
}

fn read_layer(
    checkpoint: &Checkpoint,
    module: &str,
    granularity: Granularity,
) -> Result<crate::quant::QuantizedTensor> {
    let name = |s: &str| format!("{module}.{s}");
    let qweight = checkpoint.tensor(&name("qweight"))?;
    let [inp, packed_cols] = qweight.shape()[..] else {
        return Err(Error::InvalidArgument(format!(
            "qweight of shape {:?}",
            qweight.shape()
        )));
    };
    let out = packed_cols * 8;
    let group_size = match granularity {
        Granularity::Group(n) => n,
        _ => inp,
    };
    let groups = inp.div_ceil(group_size);
    let scales_t = checkpoint.tensor(&name("scales"))?;
    super::expect_shape(scales_t, &name("scales"), &[groups, out])?;
    let qzeros = checkpoint.tensor(&name("qzeros"))?;
    super::expect_shape(qzeros, &name("qzeros"), &[groups, packed_cols])?;
    let w = words(qweight, &name("qweight"))?;
    let zw = words(qzeros, &name("qzeros"))?;
    let scale_values = scales_t.to_f32_vec();
    let mut zeros = vec![0i64; out * groups];
    let mut scales = vec![0f32; out * groups];
    for g in 0..groups {
        for n in 0..out {
            let word = zw[g * packed_cols + n / 8];
            zeros[n * groups + g] = i64::from(field(word, 4, NIBBLE_OF[n % 8]));
            scales[n * groups + g] = scale_values[g * out + n];
        }
    }
    int_layer_from_unsigned(
        [out, inp],
        4,
        granularity,
        |n, k| field(w[k * packed_cols + n / 8], 4, NIBBLE_OF[n % 8]),
        &zeros,
        &scales,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_map_inverts_the_packing_order() {
        for (i, &j) in ORDER.iter().enumerate() {
            assert_eq!(NIBBLE_OF[j], i);
        }
    }
}
