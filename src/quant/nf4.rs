//! NF4 and FP4, the bitsandbytes 4-bit code books, with absmax scales per block of 64 values.
//!
//! Layout (identical to bitsandbytes when `in_features` is a multiple of 64): codes are 4-bit
//! indices into the 16-entry code book, two per byte, the *first* value of each pair in the high
//! nibble; rows are `ceil(in/2)` bytes. Each row is cut into blocks of 64 values (the last one
//! possibly shorter) with one absmax per block: `w = code_book[index] * absmax`.
//!
//! Double quantization (bitsandbytes `compress_statistics`): the f32 absmax values minus their
//! mean (`offset`) are quantized with the signed 8-bit dynamic map in blocks of 256, each with an
//! f32 absmax of its own: `absmax = dynamic_map[code] * absmax2[block] + offset`.

use std::sync::OnceLock;

/// bitsandbytes' NF4 code book (quantiles of N(0, 1), normalized to [-1, 1]).
pub const NF4_CODE_BOOK: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 code book: index bits `s e1 e0 m` with its own ordering of magnitudes
/// (0, 0.0625, 8, 12, 4, 6, 2, 3), normalized by 12.
pub const FP4_CODE_BOOK: [f32; 16] = {
    const RAW: [f32; 16] = [
        0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0,
        -3.0,
    ];
    let mut out = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = RAW[i] / 12.0;
        i += 1;
    }
    out
};

/// Index of the code-book entry nearest to `x` (`x` already divided by the block absmax).
pub fn nearest_code(code_book: &[f32; 16], x: f32) -> u8 {
    let mut best = 0u8;
    let mut best_error = f32::INFINITY;
    for (i, &c) in code_book.iter().enumerate() {
        let error = (c - x).abs();
        // Strictly smaller keeps the first of two equal negative/positive zeros (FP4).
        if error < best_error {
            best_error = error;
            best = i as u8;
        }
    }
    best
}

/// bitsandbytes' signed 8-bit dynamic quantization map (`create_dynamic_map(signed=True)`):
/// for each decade `10^(i-6)`, `i < 7`, the midpoints of `2^i + 1` points evenly spaced over
/// [0.1, 1], both signs; plus 0 and 1; sorted ascending.
pub fn dynamic_map() -> &'static [f32; 256] {
    static MAP: OnceLock<[f32; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut data: Vec<f32> = Vec::with_capacity(256);
        for i in 0..7i32 {
            let points = (1usize << i) + 1;
            let boundaries = linspace_f32(0.1, 1.0, points);
            let decade = 10f64.powi(i - 6);
            for pair in boundaries.windows(2) {
                let mean = (pair[0] + pair[1]) / 2.0;
                data.push((decade * mean as f64) as f32);
                data.push((-decade * mean as f64) as f32);
            }
        }
        data.push(0.0);
        data.push(1.0);
        data.sort_by(f32::total_cmp);
        data.try_into().expect("254 + 2 values")
    })
}

/// `torch.linspace(start, end, steps)` in f32: the first half counted from `start`, the second
/// from `end`, as PyTorch's CPU kernel does.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// Index of the dynamic-map entry nearest to `x` in [-1, 1].
pub fn nearest_dynamic(x: f32) -> u8 {
    let map = dynamic_map();
    let upper = map.partition_point(|&v| v < x).min(255);
    if upper == 0 {
        return 0;
    }
    let lower = upper - 1;
    if (x - map[lower]).abs() <= (map[upper] - x).abs() {
        lower as u8
    } else {
        upper as u8
    }
}

/// Double-quantized absmax values.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleQuant {
    /// One 8-bit dynamic-map index per first-level absmax.
    pub codes: Vec<u8>,
    /// One f32 absmax per 256 codes.
    pub absmax: Vec<f32>,
    /// Mean of the first-level absmax values, added back on decoding.
    pub offset: f32,
}

impl DoubleQuant {
    /// Quantizes the first-level `absmax` values.
    pub fn encode(absmax: &[f32]) -> Self {
        let offset = if absmax.is_empty() {
            0.0
        } else {
            (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len() as f64) as f32
        };
        let mut codes = Vec::with_capacity(absmax.len());
        let mut second = Vec::with_capacity(absmax.len().div_ceil(256));
        for block in absmax.chunks(super::scheme::DOUBLE_QUANT_BLOCK) {
            let block_max = block
                .iter()
                .map(|&v| (v - offset).abs())
                .fold(0f32, f32::max);
            let inverse = if block_max > 0.0 {
                1.0 / block_max
            } else {
                0.0
            };
            codes.extend(
                block
                    .iter()
                    .map(|&v| nearest_dynamic((v - offset) * inverse)),
            );
            second.push(block_max);
        }
        DoubleQuant {
            codes,
            absmax: second,
            offset,
        }
    }

    /// The `i`-th first-level absmax.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        dynamic_map()[self.codes[i] as usize] * self.absmax[i / super::scheme::DOUBLE_QUANT_BLOCK]
            + self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_books_are_sorted_as_documented() {
        assert!(NF4_CODE_BOOK.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(FP4_CODE_BOOK[3], 1.0);
        assert_eq!(FP4_CODE_BOOK[1], 0.0625 / 12.0);
        assert_eq!(nearest_code(&NF4_CODE_BOOK, 0.9), 15);
        assert_eq!(nearest_code(&NF4_CODE_BOOK, 0.0), 7);
        assert_eq!(nearest_code(&FP4_CODE_BOOK, -0.5), 13);
    }

    #[test]
    fn dynamic_map_has_the_bitsandbytes_shape() {
        let map = dynamic_map();
        assert!(map.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(map[255], 1.0);
        assert!(map.contains(&0.0));
        // The smallest magnitudes are 10^-6 times the midpoint of [0.1, 1].
        let smallest = map
            .iter()
            .filter(|&&v| v > 0.0)
            .fold(1f32, |a, &b| a.min(b));
        assert!((smallest - 0.55e-6).abs() < 1e-12);
        for &v in map.iter() {
            assert_eq!(map[nearest_dynamic(v) as usize], v);
        }
    }

    #[test]
    fn double_quant_is_close() {
        let absmax: Vec<f32> = (0..600)
            .map(|i| 0.01 + (i as f32 * 0.37).sin().abs())
            .collect();
        let dq = DoubleQuant::encode(&absmax);
        assert_eq!(dq.absmax.len(), 3);
        for (i, &v) in absmax.iter().enumerate() {
            // The dynamic map's spacing near 1 is 1/64 of the block maximum (~1): half a step.
            assert!((dq.get(i) - v).abs() < 1.0 / 64.0, "{i}");
        }
    }
}
