//! FP8 E4M3 ("e4m3fn", as in PyTorch's `float8_e4m3fn` and the OCP FP8 spec).
//!
//! Bit layout of one byte: `s eeee mmm`, exponent bias 7. Normal values
//! `(-1)^s * 2^(e-7) * (1 + m/8)` for `e` in 1..=15 (except `e = 15, m = 7`, which is NaN);
//! subnormals `(-1)^s * 2^-6 * m/8`. Largest finite value 448; there are no infinities, so
//! encoding saturates to +-448.
//!
//! Weights: one byte per value, row-major `[out, in]`, with an f32 scale per output channel or per
//! 128x128 block: `w = e4m3_to_f32(code) * scale`.

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// Decodes one E4M3 byte exactly.
pub fn e4m3_to_f32(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = ((code >> 3) & 0x0F) as i32;
    let mantissa = (code & 0x07) as f32;
    if exponent == 15 && code & 0x07 == 7 {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        mantissa / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + mantissa / 8.0) * 2f32.powi(exponent - 7)
    };
    sign * magnitude
}

/// Encodes `x` to the nearest E4M3 value (ties to even), saturating at +-448; NaN maps to NaN.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return 0x7F;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    // Subnormal range: multiples of 2^-9 below 2^-6.
    if a < 2f32.powi(-6) {
        let m = (a * 512.0).round_ties_even() as u8;
        // m == 8 is exactly the smallest normal, whose encoding is 0x08.
        return sign | m;
    }
    let bits = a.to_bits();
    let mut exponent = ((bits >> 23) & 0xFF) as i32 - 127;
    let fraction = bits & 0x7F_FFFF;
    let mut mantissa = fraction >> 20;
    let remainder = fraction & 0xF_FFFF;
    let half = 0x8_0000;
    if remainder > half || (remainder == half && mantissa & 1 == 1) {
        mantissa += 1;
        if mantissa == 8 {
            mantissa = 0;
            exponent += 1;
        }
    }
    let code = (((exponent + 7) as u32) << 3) | mantissa;
    sign | code.min(0x7E) as u8
}

/// All 256 decoded values, for table-driven kernels and reference code.
pub fn e4m3_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| e4m3_to_f32(i as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Checked by hand against the layout in the module comment.
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xC0), -2.0);
        assert!(e4m3_to_f32(0x7F).is_nan());
        assert_eq!(f32_to_e4m3(1.0), 0x38);
        assert_eq!(f32_to_e4m3(-2.0), 0xC0);
        assert_eq!(f32_to_e4m3(1000.0), 0x7E);
        // 1.0625 lies halfway between 1.0 (even mantissa) and 1.125: ties to even.
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
    }

    #[test]
    fn encoding_is_nearest_and_round_trips() {
        let finite: Vec<(u8, f32)> = (0..=255u8)
            .map(|c| (c, e4m3_to_f32(c)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        for &(code, value) in &finite {
            if value != 0.0 {
                assert_eq!(f32_to_e4m3(value), code, "{value}");
            }
        }
        let mut seed = 0x1234_5678u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let x = ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 500.0;
            let got = e4m3_to_f32(f32_to_e4m3(x));
            let best = finite
                .iter()
                .map(|&(_, v)| (v - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!((got - x).abs() <= best, "{x}: {got}");
        }
    }
}
