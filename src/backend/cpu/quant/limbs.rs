//! Float activations of one token for the int4 kernel with integer products
//! (`avx512_limbs`): each 128-value chunk quantized to 24-bit integers and split into three
//! signed bytes, so that `vpdpbusd` (unsigned codes times signed bytes, 64 products per
//! instruction) computes the products.
//!
//! Per chunk `c` of 128 values: `X_i = round(x_i / s_c)` with `s_c = max |x| / LIMB_RANGE`, so
//! `|X_i| <= LIMB_RANGE` and the rounding error is at most `s_c / 2`, 2^-24 of the chunk's
//! largest value, about f32's own precision. `X = 2^16 h + 2^8 m + l` with `l, m` in
//! `-128..=127` (balanced digits) and `h` in `-128..=127` (`LIMB_RANGE` keeps it there). Each
//! limb's 128 bytes are laid out as int4 codes store values (compressed-tensors order, low
//! nibble first): byte `B` of the first half holds the limb of value `2B` (the low nibbles'
//! values), byte `B` of the second half that of value `2B + 1`. A 32-bit lane `d` of a
//! 64-byte vector then covers values `8d .. 8d + 8` in both halves, and `offsets[c][d]` is 8
//! times the sum of their `X`: int4 codes are `v + 8`, so `sum v X = sum code X - offsets`.

/// Largest magnitude of a quantized activation: `2^23 - 2^16`, so the top limb of a balanced
/// split stays within a signed byte.
pub const LIMB_RANGE: f32 = 8_323_072.0;

/// Values per chunk.
pub const CHUNK: usize = 128;

/// One token's activations in limbs (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Limbs {
    /// `[chunk][limb l, m, h][even values, odd values][64]` signed bytes.
    pub bytes: Vec<i8>,
    /// `[chunk][16]`: 8 times the sum of each 32-bit lane's eight quantized values.
    pub offsets: Vec<i32>,
    /// `[chunk]`: the quantization step `s_c`.
    pub scales: Vec<f32>,
}

/// Bytes of one chunk's limbs.
pub const CHUNK_BYTES: usize = 3 * CHUNK;

/// The quantization step of a chunk whose largest magnitude is `largest` (1 for a chunk of
/// zeros, or one that is not finite).
pub fn step_for(largest: f32) -> f32 {
    if largest > 0.0 && largest.is_finite() {
        largest / LIMB_RANGE
    } else {
        1.0
    }
}

impl Limbs {
    /// Zeroed limbs for `values` values (a multiple of [`CHUNK`]).
    pub fn zeroed(values: usize) -> Limbs {
        assert!(
            values.is_multiple_of(CHUNK),
            "limbs: {values} values is not a multiple of {CHUNK}"
        );
        let chunks = values / CHUNK;
        Limbs {
            bytes: vec![0; chunks * CHUNK_BYTES],
            offsets: vec![0; chunks * 16],
            scales: vec![0.0; chunks],
        }
    }

    /// `x` (a multiple of [`CHUNK`] values) in limbs.
    pub fn new(x: &[f32]) -> Limbs {
        let mut limbs = Limbs::zeroed(x.len());
        for (c, values) in x.chunks_exact(CHUNK).enumerate() {
            let step = step_for(values.iter().fold(0f32, |m, v| m.max(v.abs())));
            limbs.scales[c] = step;
            let inverse = 1.0 / step;
            let bytes = &mut limbs.bytes[c * CHUNK_BYTES..][..CHUNK_BYTES];
            let offsets = &mut limbs.offsets[c * 16..][..16];
            for (i, &v) in values.iter().enumerate() {
                // Rounded half away from zero by truncation (no library call on the hot path);
                // the product may exceed the range by a rounding, hence the clamp.
                let scaled = v * inverse;
                let q = ((scaled + 0.5f32.copysign(scaled)) as i32)
                    .clamp(-(LIMB_RANGE as i32), LIMB_RANGE as i32);
                offsets[i / 8] += 8 * q;
                let l = ((q + 128) & 255) - 128;
                let rest = (q - l) >> 8;
                let m = ((rest + 128) & 255) - 128;
                let h = (rest - m) >> 8;
                // Even values under the low nibbles, odd ones under the high nibbles.
                let at = (i % 2) * 64 + i / 2;
                for (limb, digit) in [l, m, h].into_iter().enumerate() {
                    bytes[limb * CHUNK + at] = digit as i8;
                }
            }
        }
        limbs
    }

    /// The quantized value `i` of chunk `c`, rebuilt from its limbs (for tests).
    pub fn value(&self, c: usize, i: usize) -> i32 {
        let bytes = &self.bytes[c * CHUNK_BYTES..];
        let at = (i % 2) * 64 + i / 2;
        let digit = |limb: usize| bytes[limb * CHUNK + at] as i32;
        (digit(2) << 16) + (digit(1) << 8) + digit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sampling::Rng;

    #[test]
    fn limbs_rebuild_the_quantized_values_within_half_a_step() {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next_f64() * 2.0 - 1.0;
        // Random values, one large outlier per chunk, a zero chunk and exact limits.
        let mut x: Vec<f32> = (0..4 * CHUNK).map(|_| next() as f32).collect();
        x[5] = 300.0;
        x[CHUNK + 7] = -1e-3;
        x[2 * CHUNK..3 * CHUNK].fill(0.0);
        x[3 * CHUNK] = -2.5;
        let limbs = Limbs::new(&x);
        for (c, values) in x.chunks_exact(CHUNK).enumerate() {
            let step = limbs.scales[c];
            for (i, &v) in values.iter().enumerate() {
                let q = limbs.value(c, i);
                assert!(q.abs() <= LIMB_RANGE as i32);
                let error = (q as f64 * step as f64 - v as f64).abs();
                assert!(
                    error <= 0.5 * step as f64 * (1.0 + 1e-6) + v.abs() as f64 * 1e-7,
                    "chunk {c} value {i}: {v} rebuilt as {q} x {step}"
                );
            }
            for d in 0..16 {
                let sum: i32 = (8 * d..8 * d + 8).map(|i| limbs.value(c, i)).sum();
                assert_eq!(limbs.offsets[c * 16 + d], 8 * sum);
            }
        }
        // The chunk's largest value uses the whole range (to f32's rounding of the division).
        assert!(limbs.value(0, 5) >= LIMB_RANGE as i32 - 1);
        assert!(limbs.value(3, 0) <= 1 - LIMB_RANGE as i32);
    }
}
