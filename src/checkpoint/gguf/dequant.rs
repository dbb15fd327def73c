//! ggml storage types and their dequantization to f32.
//!
//! Supported layouts (all little-endian; a block covers 32 consecutive elements of a row):
//!
//! ```text
//! F32   4 bytes per element, IEEE binary32
//! F16   2 bytes per element, IEEE binary16
//! BF16  2 bytes per element, bfloat16 (the high half of a binary32)
//! Q4_0  18-byte block: d: f16 | qs: 16 bytes
//!         element j      (j < 16) = ((qs[j] & 0x0F) - 8) * d
//!         element j + 16 (j < 16) = ((qs[j] >> 4)   - 8) * d
//! Q4_1  20-byte block: d: f16 | m: f16 | qs: 16 bytes
//!         element j      (j < 16) = (qs[j] & 0x0F) * d + m
//!         element j + 16 (j < 16) = (qs[j] >> 4)   * d + m
//! Q8_0  34-byte block: d: f16 | qs: 32 x i8
//!         element j = qs[j] * d
//! ```
//!
//! The scale (and minimum) are widened to f32 first and each element takes one f32 multiply (and,
//! for Q4_1, one separate f32 add, never fused), the order of ggml's `dequantize_row_*` and of the
//! Python `gguf` package, so results are bit-identical to both.
//!
//! Other ggml types are recognised (so a file holding them still parses and its sizes are
//! checked) but dequantizing them gives [`Error::UnsupportedDtype`].

use std::fmt;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Blocks handed to one rayon task; below this a tensor is dequantized on the calling thread.
const BLOCKS_PER_TASK: usize = 4096;

/// A ggml tensor storage type, as numbered in ggml.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Elements per super-block of the k-quants and i-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml id `id`, if it is one ggml defines (ids of removed types are `None`).
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            16 => IQ2XXS,
            17 => IQ2XS,
            18 => IQ3XXS,
            19 => IQ1S,
            20 => IQ4NL,
            21 => IQ3S,
            22 => IQ2S,
            23 => IQ4XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// The ggml id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            IQ2XXS => 16,
            IQ2XS => 17,
            IQ3XXS => 18,
            IQ1S => 19,
            IQ4NL => 20,
            IQ3S => 21,
            IQ2S => 22,
            IQ4XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
        }
    }

    /// ggml's name for the type (`Q4_1`, `Q6_K`, ...).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
        }
    }

    /// `(elements per block, bytes per block)`, as in ggml's type traits.
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2XXS => (QK_K, 2 + QK_K / 4),
            IQ2XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4NL => (32, 18),
            IQ3S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            IQ1M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 17),
        }
    }

    /// Whether [`dequantize`] handles this type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q8_0)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// One block of `ggml_type` (`block.len()` bytes) into `out` (its elements). Scalar reference;
/// [`dequantize`] only distributes blocks over threads.
fn dequantize_block(ggml_type: GgmlType, block: &[u8], out: &mut [f32]) {
    match ggml_type {
        GgmlType::F32 => out[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
        GgmlType::F16 => out[0] = f16_at(block, 0),
        GgmlType::BF16 => out[0] = bf16::from_le_bytes([block[0], block[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = f16_at(block, 0);
            let qs = &block[2..18];
            for j in 0..16 {
                out[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
                out[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let d = f16_at(block, 0);
            let m = f16_at(block, 2);
            let qs = &block[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(block, 0);
            for (o, &q) in out.iter_mut().zip(&block[2..34]) {
                *o = (q as i8) as f32 * d;
            }
        }
        other => unreachable!("dequantize checks support before dispatching {other}"),
    }
}

/// Dequantizes `n_elements` values of `ggml_type` stored in `bytes` (exactly their stored
/// size). Large tensors are split over rayon's pool; the values do not depend on the split.
/// Unsupported types give [`Error::UnsupportedDtype`] (tensor name left empty for the caller to
/// fill in); a size mismatch is a programming error of the caller and panics.
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    if !ggml_type.is_supported() {
        return Err(Error::UnsupportedDtype {
            tensor: String::new(),
            dtype: format!("{ggml_type} (supported GGUF types: F32, F16, BF16, Q4_0, Q4_1, Q8_0)"),
        });
    }
    let (block, block_bytes) = ggml_type.block_layout();
    assert!(
        n_elements.is_multiple_of(block) && bytes.len() == n_elements / block * block_bytes,
        "{n_elements} {ggml_type} elements cannot be stored in {} bytes",
        bytes.len()
    );
    let mut out = vec![0f32; n_elements];
    let elements_per_task = BLOCKS_PER_TASK * block;
    let bytes_per_task = BLOCKS_PER_TASK * block_bytes;
    let run = |(out, bytes): (&mut [f32], &[u8])| {
        for (o, b) in out
            .chunks_exact_mut(block)
            .zip(bytes.chunks_exact(block_bytes))
        {
            dequantize_block(ggml_type, b, o);
        }
    };
    if n_elements <= elements_per_task {
        run((&mut out, bytes));
    } else {
        out.par_chunks_mut(elements_per_task)
            .zip(bytes.par_chunks(bytes_per_task))
            .for_each(run);
    }
    Ok(out)
}
