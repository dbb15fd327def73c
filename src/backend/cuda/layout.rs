//! The device layout of quantized weights, built once at load time on the host.
//!
//! The CUDA kernels (`kernels/quant_gemm.cu`) multiply with `mma.sync.m16n8k16` (bf16 inputs,
//! f32 accumulators) with the weights as operand A ("swap AB": weight rows are the M side of the
//! instruction, tokens the N side), so a warp loads its A fragments straight from global memory
//! in the order the instruction wants them, one 16-byte load per lane per tile for 4-bit codes.
//!
//! Tiles are 16 weight rows by 64 input features, stored tile after tile, `[row_tile][k_tile]`,
//! rows padded to a multiple of 16 and features to a multiple of 64 (padding bytes are zero;
//! the kernels zero the matching activations, so padding never reaches a result).
//!
//! Inside a tile, lane `l` of a warp (`g = l / 4`, `t = l % 4`) holds, for each k16 step
//! `j` (0..4) of the instruction, registers `r` (0..4) of two values each (`h` = 0 low half,
//! 1 high half). Register `r` is the A element at row `g + 8 (r & 1)` and instruction column
//! `2t + 8 (r >> 1) + h`; that column is feature
//!
//! ```text
//! k = 16 t + 4 j + 2 (r >> 1) + h          (within the tile)
//! ```
//!
//! The same mapping puts the B fragment of lane `l` (token `g`, columns `2t + h` and
//! `2t + 8 + h`) at features `16 t .. 16 t + 16` of its token: 32 contiguous bytes of
//! activations, two 16-byte loads.
//!
//! Bytes of a tile:
//! - 4-bit codes (512 bytes): lane `l` owns bytes `16 l .. 16 l + 16`, one 32-bit word per `j`;
//!   in word `j` the code of `(r, h)` is nibble `r + 4 h` (bits `4 (r + 4 h)`), so masking a
//!   word with `0x000F000F` after a shift by `4 r` yields register `r`'s two codes, one per half.
//! - 8-bit codes (1024 bytes): two chunks of 512; word `w = 2 j + (r >> 1)` of lane `l` lies in
//!   chunk `w / 4` at `512 (w / 4) + 16 l + 4 (w % 4)`, byte `2 (r & 1) + h` of the word. Each
//!   chunk is one coalesced 16-byte load per lane.
//!
//! Scales are expanded per row, `[rows, groups]` (f16 bits for integer formats as stored, f32
//! otherwise), and every 64-feature tile must fall in one group: group sizes are multiples of
//! 64, or one group spans the row. Zero points stay `[rows, groups]` int8.

use half::f16;

use crate::error::{Error, Result};
use crate::quant::{ActivationFormat, CodeKind, QuantizedTensor, WeightFormat};

/// Weight rows of a tile (the M side of `mma.m16n8k16`).
pub const TILE_ROWS: usize = 16;
/// Input features of a tile (four k16 steps).
pub const TILE_K: usize = 64;
/// Lanes of a warp.
pub const WARP: usize = 32;

/// How the kernels decode codes; the value is the `FMT` macro of `kernels/quant_gemm.cu`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DeviceFormat {
    /// Offset-coded int4 (`code - 8`), bf16 magic-number decode.
    Int4 = 0,
    /// Two's-complement int8.
    Int8 = 1,
    /// 4-bit indices into a 16-entry code book (NF4, FP4).
    NibbleTable = 2,
    /// FP8 E4M3.
    Fp8 = 3,
}

impl DeviceFormat {
    /// Bytes of one tile.
    pub fn tile_bytes(self) -> usize {
        match self {
            DeviceFormat::Int4 | DeviceFormat::NibbleTable => 512,
            DeviceFormat::Int8 | DeviceFormat::Fp8 => 1024,
        }
    }

    /// Whether codes are 4 bits.
    pub fn is_nibble(self) -> bool {
        matches!(self, DeviceFormat::Int4 | DeviceFormat::NibbleTable)
    }
}

/// Per-row scales as uploaded.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceScales {
    /// f16 bit patterns `[rows, groups]` (integer formats store f16 scales).
    F16(Vec<u16>),
    /// f32 `[rows, groups]`.
    F32(Vec<f32>),
}

/// A quantized matrix in the device layout (see the module documentation).
#[derive(Clone, Debug)]
pub struct PackedWeight {
    /// Decode rule.
    pub format: DeviceFormat,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Scale groups per row.
    pub groups: usize,
    /// Features per group.
    pub group_size: usize,
    /// Tiled codes, `row_tiles * k_tiles * tile_bytes` bytes.
    pub codes: Vec<u8>,
    /// Scales `[rows, groups]`.
    pub scales: DeviceScales,
    /// Zero points `[rows, groups]` of asymmetric integer schemes.
    pub zero_points: Option<Vec<i8>>,
    /// Code book of [`DeviceFormat::NibbleTable`].
    pub table: Option<[f32; 16]>,
}

impl PackedWeight {
    /// The matrices of `parts` stacked along rows (one product for q/k/v, or gate/up), when
    /// every part has the same format, features, groups, scale type, zero-point presence and
    /// code book, and every part but the last a whole number of row tiles; `None` otherwise.
    /// Tiles are `[row_tile][k_tile]` and scales and zero points `[rows, groups]`, so stacking is
    /// concatenation.
    pub fn concat_rows(parts: &[&PackedWeight]) -> Option<PackedWeight> {
        let first = parts.first()?;
        let compatible = parts.iter().all(|p| {
            p.format == first.format
                && p.cols == first.cols
                && p.groups == first.groups
                && p.group_size == first.group_size
                && p.table == first.table
                && p.zero_points.is_some() == first.zero_points.is_some()
                && matches!(
                    (&p.scales, &first.scales),
                    (DeviceScales::F16(_), DeviceScales::F16(_))
                        | (DeviceScales::F32(_), DeviceScales::F32(_))
                )
        }) && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.rows.is_multiple_of(TILE_ROWS));
        if !compatible {
            return None;
        }
        let scales = match &first.scales {
            DeviceScales::F16(_) => DeviceScales::F16(
                parts
                    .iter()
                    .flat_map(|p| match &p.scales {
                        DeviceScales::F16(s) => s.iter().copied(),
                        DeviceScales::F32(_) => unreachable!("checked above"),
                    })
                    .collect(),
            ),
            DeviceScales::F32(_) => DeviceScales::F32(
                parts
                    .iter()
                    .flat_map(|p| match &p.scales {
                        DeviceScales::F32(s) => s.iter().copied(),
                        DeviceScales::F16(_) => unreachable!("checked above"),
                    })
                    .collect(),
            ),
        };
        Some(PackedWeight {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            groups: first.groups,
            group_size: first.group_size,
            codes: parts.iter().flat_map(|p| p.codes.iter().copied()).collect(),
            scales,
            zero_points: first.zero_points.as_ref().map(|_| {
                parts
                    .iter()
                    .flat_map(|p| p.zero_points.iter().flatten().copied())
                    .collect()
            }),
            table: first.table,
        })
    }
}

/// Row and feature, within a tile, of the value in half `h` of register `r` of k16 step `j`
/// of lane `lane` (the fragment map of the module documentation).
#[inline]
pub fn fragment_position(lane: usize, j: usize, r: usize, h: usize) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    (g + 8 * (r & 1), 16 * t + 4 * j + 2 * (r >> 1) + h)
}

/// Where a code lives inside a tile: byte offset, and for 4-bit codes whether it is the high
/// nibble of that byte.
#[inline]
pub fn code_offset(
    format: DeviceFormat,
    lane: usize,
    j: usize,
    r: usize,
    h: usize,
) -> (usize, bool) {
    if format.is_nibble() {
        let nibble = r + 4 * h;
        (16 * lane + 4 * j + nibble / 2, nibble % 2 == 1)
    } else {
        let word = 2 * j + (r >> 1);
        (
            512 * (word / 4) + 16 * lane + 4 * (word % 4) + 2 * (r & 1) + h,
            false,
        )
    }
}

impl PackedWeight {
    /// Tiles along the rows.
    pub fn row_tiles(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    /// Tiles along the input features.
    pub fn k_tiles(&self) -> usize {
        self.cols.div_ceil(TILE_K)
    }

    /// Bytes the kernels read per product: codes, scales, zero points.
    pub fn device_bytes(&self) -> usize {
        let scales = match &self.scales {
            DeviceScales::F16(s) => s.len() * 2,
            DeviceScales::F32(s) => s.len() * 4,
        };
        self.codes.len() + scales + self.zero_points.as_ref().map_or(0, |z| z.len())
    }

    /// Rearranges `weight` into the device layout. Errors name what the kernels do not cover:
    /// quantized activations, groups that are not multiples of 64, features that are not a
    /// multiple of 8 (activation rows are read 16 bytes at a time).
    pub fn pack(weight: &QuantizedTensor) -> Result<PackedWeight> {
        let scheme = weight.scheme();
        let unsupported = |why: String| {
            Err(Error::InvalidArgument(format!(
                "CUDA kernels for {scheme}: {why}"
            )))
        };
        if scheme.activation != ActivationFormat::Float {
            return unsupported("quantized activations are not implemented on the GPU".into());
        }
        let (rows, cols) = (weight.rows(), weight.cols());
        let (groups, group_size) = (weight.groups(), weight.group_size());
        if groups > 1 && !group_size.is_multiple_of(TILE_K) {
            return unsupported(format!(
                "group size {group_size} is not a multiple of {TILE_K}"
            ));
        }
        if !cols.is_multiple_of(8) {
            return unsupported(format!("{cols} input features is not a multiple of 8"));
        }
        let (format, table) = match (scheme.weight, weight.code_kind()) {
            (WeightFormat::Int { bits: 4, .. }, _) => (DeviceFormat::Int4, None),
            (WeightFormat::Int { bits: 8, .. }, _) => (DeviceFormat::Int8, None),
            (WeightFormat::Fp8, _) => (DeviceFormat::Fp8, None),
            (WeightFormat::Nf4 | WeightFormat::Fp4, CodeKind::Nibble { table, .. }) => {
                (DeviceFormat::NibbleTable, Some(table))
            }
            _ => return unsupported("no device format".into()),
        };
        let (row_tiles, k_tiles) = (rows.div_ceil(TILE_ROWS), cols.div_ceil(TILE_K));
        let tile_bytes = format.tile_bytes();
        let mut codes = vec![0u8; row_tiles * k_tiles * tile_bytes];
        let raw = |row: usize, k: usize| -> u8 {
            let bytes = weight.row_codes(row);
            match weight.code_kind() {
                CodeKind::Nibble { high_first, .. } => {
                    let byte = bytes[k / 2];
                    let low = k.is_multiple_of(2) != high_first;
                    if low {
                        byte & 0x0F
                    } else {
                        byte >> 4
                    }
                }
                CodeKind::Int8 | CodeKind::Fp8 => bytes[k],
            }
        };
        for rt in 0..row_tiles {
            for kt in 0..k_tiles {
                let tile = &mut codes[(rt * k_tiles + kt) * tile_bytes..][..tile_bytes];
                for lane in 0..WARP {
                    for j in 0..4 {
                        for r in 0..4 {
                            for h in 0..2 {
                                let (tr, tk) = fragment_position(lane, j, r, h);
                                let (row, k) = (rt * TILE_ROWS + tr, kt * TILE_K + tk);
                                if row >= rows || k >= cols {
                                    continue;
                                }
                                let code = raw(row, k);
                                let (at, high) = code_offset(format, lane, j, r, h);
                                tile[at] |= if high { code << 4 } else { code };
                            }
                        }
                    }
                }
            }
        }
        let mut row_scales = vec![0f32; groups];
        let mut offsets = vec![0f32; groups];
        let mut scales = Vec::with_capacity(rows * groups);
        for row in 0..rows {
            weight.fill_row_scales(row, &mut row_scales, &mut offsets);
            scales.extend_from_slice(&row_scales);
        }
        let scales = match format {
            // Integer scales are stored as f16, so the conversion back is exact.
            DeviceFormat::Int4 | DeviceFormat::Int8 => {
                DeviceScales::F16(scales.iter().map(|&s| f16::from_f32(s).to_bits()).collect())
            }
            _ => DeviceScales::F32(scales),
        };
        Ok(PackedWeight {
            format,
            rows,
            cols,
            groups,
            group_size,
            codes,
            scales,
            zero_points: weight.zero_points().map(<[i8]>::to_vec),
            table,
        })
    }

    /// Scale of `row` for the group holding feature `k`.
    fn scale(&self, row: usize, k: usize) -> f32 {
        let i = row * self.groups + k / self.group_size;
        match &self.scales {
            DeviceScales::F16(s) => f16::from_bits(s[i]).to_f32(),
            DeviceScales::F32(s) => s[i],
        }
    }

    /// The unscaled value a kernel decodes from `code` (zero point applied), as the bf16 the
    /// tensor cores see.
    fn code_value(&self, code: u8, row: usize, k: usize) -> f32 {
        let zero = self
            .zero_points
            .as_ref()
            .map_or(0.0, |z| z[row * self.groups + k / self.group_size] as f32);
        let value = match self.format {
            DeviceFormat::Int4 => code as f32 - 8.0 - zero,
            DeviceFormat::Int8 => code as i8 as f32 - zero,
            DeviceFormat::Fp8 => crate::quant::fp8::e4m3_to_f32(code),
            DeviceFormat::NibbleTable => self.table.expect("code book")[code as usize],
        };
        half::bf16::from_f32(value).to_f32()
    }

    /// `y = x W^T` (`x` `[m, cols]`, `y` `[m, rows]`) computed from the tiled bytes exactly as
    /// the kernels walk them: per tile, fragments are rebuilt from lane data, multiplied as
    /// `mma.m16n8k16` does, and scaled per tile. A CPU check of the layout, not a fast path.
    // The loops index by lane, step, register and half because the layout formulas do.
    #[allow(clippy::needless_range_loop)]
    pub fn emulate(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.rows];
        let tile_bytes = self.format.tile_bytes();
        for rt in 0..self.row_tiles() {
            for kt in 0..self.k_tiles() {
                let tile = &self.codes[(rt * self.k_tiles() + kt) * tile_bytes..][..tile_bytes];
                // a[j][row][instruction column] as the lanes hold it.
                let mut a = [[[0f32; 16]; TILE_ROWS]; 4];
                for lane in 0..WARP {
                    let (g, t) = (lane / 4, lane % 4);
                    for j in 0..4 {
                        for r in 0..4 {
                            for h in 0..2 {
                                let (at, high) = code_offset(self.format, lane, j, r, h);
                                let byte = tile[at];
                                let code = if !self.format.is_nibble() {
                                    byte
                                } else if high {
                                    byte >> 4
                                } else {
                                    byte & 0x0F
                                };
                                let row = (rt * TILE_ROWS + g + 8 * (r & 1)).min(self.rows - 1);
                                let k = (kt * TILE_K).min(self.cols - 1);
                                a[j][g + 8 * (r & 1)][2 * t + 8 * (r >> 1) + h] =
                                    self.code_value(code, row, k);
                            }
                        }
                    }
                }
                for token in 0..m {
                    // b[j][instruction column] of this token, as lane (token % 8, t) loads it.
                    let mut b = [[0f32; 16]; 4];
                    for t in 0..4 {
                        for j in 0..4 {
                            for q in 0..2 {
                                for h in 0..2 {
                                    let k = kt * TILE_K + 16 * t + 4 * j + 2 * q + h;
                                    b[j][2 * t + 8 * q + h] = if k < self.cols {
                                        x[token * self.cols + k]
                                    } else {
                                        0.0
                                    };
                                }
                            }
                        }
                    }
                    for tr in 0..TILE_ROWS {
                        let row = rt * TILE_ROWS + tr;
                        if row >= self.rows {
                            continue;
                        }
                        let mut sum = 0f32;
                        for j in 0..4 {
                            for c in 0..16 {
                                sum += a[j][tr][c] * b[j][c];
                            }
                        }
                        y[token * self.rows + row] += sum * self.scale(row, kt * TILE_K);
                    }
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_map_is_a_bijection_onto_the_tile() {
        let mut seen = [[false; TILE_K]; TILE_ROWS];
        for lane in 0..WARP {
            for j in 0..4 {
                for r in 0..4 {
                    for h in 0..2 {
                        let (row, k) = fragment_position(lane, j, r, h);
                        assert!(!seen[row][k], "({row}, {k}) mapped twice");
                        seen[row][k] = true;
                    }
                }
            }
        }
        assert!(seen.iter().flatten().all(|&s| s));
    }

    #[test]
    fn code_offsets_fill_each_tile_once() {
        for format in [DeviceFormat::Int4, DeviceFormat::Int8] {
            let slots = if format.is_nibble() { 2 } else { 1 };
            let mut used = vec![0u8; format.tile_bytes()];
            for lane in 0..WARP {
                for j in 0..4 {
                    for r in 0..4 {
                        for h in 0..2 {
                            let (at, high) = code_offset(format, lane, j, r, h);
                            let bit = if high { 2 } else { 1 };
                            assert_eq!(used[at] & bit, 0, "{format:?} byte {at} used twice");
                            used[at] |= bit;
                        }
                    }
                }
            }
            let full = if slots == 2 { 3 } else { 1 };
            assert!(used.iter().all(|&u| u == full), "{format:?} leaves gaps");
        }
    }

    /// Integer and FP8 values are exact in bf16, so the emulation differs from the f64 product
    /// only by f32 accumulation over at most a few hundred terms: < 1e-5 relative.
    const EXACT_TOLERANCE: f64 = 1e-5;
    /// Code-book values (NF4/FP4) are rounded to bf16 for the tensor cores: each product is off
    /// by at most 2^-9 relative, so the result by at most 2^-9 = 1.95e-3 of its norm.
    const TABLE_TOLERANCE: f64 = 2e-3;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    fn seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }

    #[test]
    fn emulated_kernel_matches_the_dequantized_product() {
        let seed = seed();
        let mut rng = Rng(seed);
        // Rows across a tile edge, features that are not a multiple of 64, and a model shape.
        for (rows, cols) in [(37, 200), (16, 64), (21, 576)] {
            for name in [
                "w4a16-g128",
                "w4a16-g128-asym",
                "w4a16",
                "w8a16",
                "w8a16-asym",
                "nf4",
                "nf4-dq",
                "fp4",
                "fp8",
                "fp8-block",
            ] {
                let scheme = crate::quant::QuantScheme::parse(name).unwrap();
                let weights: Vec<f32> = (0..rows * cols).map(|_| rng.next() * 0.1).collect();
                let quantized = crate::quant::quantize_matrix(
                    &weights,
                    [rows, cols],
                    &scheme,
                    &Default::default(),
                )
                .unwrap();
                let packed = PackedWeight::pack(&quantized).unwrap();
                let m = 3;
                let x: Vec<f32> = (0..m * cols)
                    .map(|_| half::bf16::from_f32(rng.next()).to_f32())
                    .collect();
                let dense = quantized.dequantize();
                let got = packed.emulate(&x, m);
                let (mut err, mut norm) = (0f64, 0f64);
                for token in 0..m {
                    for row in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|k| x[token * cols + k] as f64 * dense[row * cols + k] as f64)
                            .sum();
                        err += (got[token * rows + row] as f64 - want).powi(2);
                        norm += want * want;
                    }
                }
                let rel = (err / norm).sqrt();
                let tolerance = if packed.format == DeviceFormat::NibbleTable {
                    TABLE_TOLERANCE
                } else {
                    EXACT_TOLERANCE
                };
                assert!(
                    rel < tolerance,
                    "{name} [{rows}, {cols}]: relative error {rel:e} (seed {seed})"
                );
            }
        }
    }

    #[test]
    fn unsupported_schemes_are_refused_with_a_reason() {
        let scheme = crate::quant::QuantScheme::parse("w4a16-g32").unwrap();
        let q = crate::quant::quantize_matrix(&[0.5; 64], [1, 64], &scheme, &Default::default())
            .unwrap();
        let err = PackedWeight::pack(&q).unwrap_err().to_string();
        assert!(err.contains("multiple of 64"), "{err}");
    }
}
