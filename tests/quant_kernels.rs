//! The quantized CPU kernels of every instruction set this machine runs, against references
//! computed here from the stored codes (f64 for the float path, exact i64 for the integer path),
//! over every code kind, ragged row lengths, every group shape, every number of weight rows per
//! call and every tile height; then the fused linear layer end to end against the dequantized
//! product, with shapes that split rows into streams and k-slices.
//!
//! Inputs are random from a fresh seed per run, printed in every failure message;
//! `LOWBIT_TEST_SEED=<n>` replays a run.

use lowbit::backend::cpu::quant::limbs::Limbs;
use lowbit::backend::cpu::quant::{
    available, linear_with, permute, KernelSet, NibbleLayout, QuantIsa, RowArgs, ROW_TILE,
};
use lowbit::quant::nf4::{FP4_CODE_BOOK, NF4_CODE_BOOK};
use lowbit::quant::weights::INT4_TABLE;
use lowbit::quant::{quantize_matrix, ActivationFormat, CodeKind, QuantScheme, RtnOptions};

mod common;
use common::seed;

/// Float path tolerance, relative to `sum |scale * v * x|` over the row. The kernels add in f32
/// with 8 to 16 lanes and several accumulators, so each partial sum holds at most k/8 = 512
/// terms here: a worst-case error of 512 * 2^-24 = 3e-5 of the magnitude, and typically
/// sqrt(512) * 2^-24 = 1.3e-6. The portable kernel sums sequentially (worst case 2.4e-4 for
/// k = 4096, typically 4e-6 with random signs). 1e-4 separates rounding from any wrong term,
/// which moves the result by about 1/k = 2.4e-4 of the magnitude or more.
const FLOAT_TOLERANCE: f64 = 1e-4;

/// Row lengths: below, at and across block (32) and group boundaries, and a model-sized one.
const LENGTHS: [usize; 8] = [1, 31, 32, 33, 100, 128, 257, 4096];

/// Explicit group sizes; the whole row (`k`) is tried as well.
const GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Activation rows per kernel call (the dispatcher's tile is at most 8).
const MAX_ROWS: usize = 8;

/// Weight rows per kernel call: kernels read `ROW_TILE` at a time, so two groups and a partial
/// one.
const WEIGHT_ROWS: usize = 2 * ROW_TILE + 1;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

/// The code kinds the formats produce.
fn code_kinds() -> [(&'static str, CodeKind); 5] {
    [
        (
            "int4",
            CodeKind::Nibble {
                table: INT4_TABLE,
                high_first: false,
            },
        ),
        (
            "nf4",
            CodeKind::Nibble {
                table: NF4_CODE_BOOK,
                high_first: true,
            },
        ),
        (
            "fp4",
            CodeKind::Nibble {
                table: FP4_CODE_BOOK,
                high_first: true,
            },
        ),
        ("int8", CodeKind::Int8),
        ("fp8", CodeKind::Fp8),
    ]
}

/// Random stored codes of one row of `k` values, as long as the formats store them: int4 rows
/// padded to whole 32-bit words, NF4/FP4 `ceil(k/2)` bytes, byte kinds `k` bytes (FP8 without
/// the NaN codes, which never occur in weights).
fn random_codes(kind: &CodeKind, k: usize, rng: &mut Rng) -> Vec<u8> {
    let len = match kind {
        CodeKind::Nibble {
            high_first: false, ..
        } => k.div_ceil(8) * 4,
        CodeKind::Nibble { .. } => k.div_ceil(2),
        CodeKind::Int8 | CodeKind::Fp8 => k,
    };
    (0..len)
        .map(|_| loop {
            let b = rng.byte();
            if *kind != CodeKind::Fp8 || b & 0x7F != 0x7F {
                break b;
            }
        })
        .collect()
}

/// E4M3 decoded from its bit fields (independently of the library).
fn e4m3(code: u8) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((code >> 3) & 0x0F);
    let mantissa = f64::from(code & 0x07);
    let magnitude = if exponent == 0 {
        mantissa / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + mantissa / 8.0) * 2f64.powi(exponent - 7)
    };
    sign * magnitude
}

/// Unscaled value of element `i` of a row.
fn value(kind: &CodeKind, codes: &[u8], i: usize) -> f64 {
    match kind {
        CodeKind::Nibble { table, high_first } => {
            let byte = codes[i / 2];
            let first = i.is_multiple_of(2);
            let index = if first != *high_first {
                byte & 0x0F
            } else {
                byte >> 4
            };
            f64::from(table[usize::from(index)])
        }
        CodeKind::Int8 => f64::from(codes[i] as i8),
        CodeKind::Fp8 => e4m3(codes[i]),
    }
}

/// The activation layout of `set` for `kind`.
fn layout(set: &KernelSet, kind: &CodeKind, integer: bool) -> (NibbleLayout, bool) {
    match kind {
        CodeKind::Nibble { high_first, .. } => (
            if integer {
                set.int_layout
            } else {
                set.float_layout
            },
            *high_first,
        ),
        _ => (NibbleLayout::Natural, false),
    }
}

/// Every shape of the kernel tests: `(k, group_size)`.
fn shapes() -> Vec<(usize, usize)> {
    let mut shapes = Vec::new();
    for k in LENGTHS {
        for group_size in GROUP_SIZES.into_iter().chain([k]) {
            shapes.push((k, group_size));
        }
    }
    shapes
}

#[test]
fn float_kernels_match_f64_reference() {
    let seed = seed();
    let mut rng = Rng(seed);
    let sets = available();
    eprintln!(
        "kernel sets: {:?}; seed {seed}",
        sets.iter().map(|s| s.isa).collect::<Vec<_>>()
    );
    for (name, kind) in code_kinds() {
        for (k, group_size) in shapes() {
            let padded = k.div_ceil(32) * 32;
            let groups = k.div_ceil(group_size);
            let codes: Vec<Vec<u8>> = (0..WEIGHT_ROWS)
                .map(|_| random_codes(&kind, k, &mut rng))
                .collect();
            let scales: Vec<Vec<f32>> = (0..WEIGHT_ROWS)
                .map(|_| (0..groups).map(|_| rng.symmetric() * 2.0).collect())
                .collect();
            let natural: Vec<Vec<f32>> = (0..MAX_ROWS)
                .map(|_| (0..k).map(|_| rng.symmetric()).collect())
                .collect();
            // Reference and magnitude per weight row and activation row.
            let reference: Vec<Vec<(f64, f64)>> = (0..WEIGHT_ROWS)
                .map(|r| {
                    natural
                        .iter()
                        .map(|x| {
                            let (mut sum, mut magnitude) = (0f64, 0f64);
                            for (i, &xi) in x.iter().enumerate() {
                                let term = f64::from(scales[r][i / group_size])
                                    * value(&kind, &codes[r], i)
                                    * f64::from(xi);
                                sum += term;
                                magnitude += term.abs();
                            }
                            (sum, magnitude)
                        })
                        .collect()
                })
                .collect();
            let args: Vec<RowArgs<'_>> = (0..WEIGHT_ROWS)
                .map(|r| RowArgs {
                    kind: &kind,
                    codes: &codes[r],
                    k,
                    group_size,
                    scales: &scales[r],
                })
                .collect();
            for set in &sets {
                let (block, high_first) = layout(set, &kind, false);
                let laid_out: Vec<Vec<f32>> = natural
                    .iter()
                    .map(|x| {
                        let mut dst = vec![0f32; padded];
                        permute(x, &mut dst, block, high_first);
                        dst
                    })
                    .collect();
                for weight_rows in 1..=WEIGHT_ROWS {
                    for rows in 1..=MAX_ROWS {
                        let xs: Vec<&[f32]> = laid_out[..rows].iter().map(|x| &x[..]).collect();
                        let mut out = vec![f32::NAN; weight_rows * rows];
                        // SAFETY: `set` comes from `available()`, so this CPU runs its
                        // instructions; `xs` rows hold `ceil(k/32)*32` values in the set's
                        // layout, `out` one per weight row and activation row.
                        unsafe { (set.dot_float)(&args[..weight_rows], &xs, &mut out) };
                        for (i, &got) in out.iter().enumerate() {
                            let (r, t) = (i / rows, i % rows);
                            let (expected, magnitude) = reference[r][t];
                            let error = (f64::from(got) - expected).abs();
                            assert!(
                                error <= FLOAT_TOLERANCE * magnitude,
                                "{:?} {name} k={k} group={group_size} weight rows={weight_rows} \
                                 rows={rows} ({r}, {t}): {got} vs {expected} (magnitude \
                                 {magnitude}); seed {seed}",
                                set.isa
                            );
                        }
                    }
                }
                // The limb kernel (int4, k a multiple of 32, groups of whole 128-value chunks),
                // one activation row at a time, where the set has it.
                let limb_rows = matches!(
                    kind,
                    CodeKind::Nibble { table, high_first: false } if table == INT4_TABLE
                ) && k % 32 == 0
                    && (group_size >= k || group_size % 128 == 0);
                if let (Some(kernel), true) = (set.dot_limbs, limb_rows) {
                    for (t, x) in natural.iter().enumerate() {
                        let mut padded = x.clone();
                        padded.resize(k.next_multiple_of(128), 0.0);
                        let limbs = Limbs::new(&padded);
                        for weight_rows in 1..=WEIGHT_ROWS {
                            let mut out = vec![f32::NAN; weight_rows];
                            // SAFETY: `set` comes from `available()`; the rows are int4 of
                            // whole chunks with groups of whole chunks, `limbs` holds `k`
                            // values and `out` one per row.
                            unsafe { kernel(&args[..weight_rows], &limbs, &mut out) };
                            for (r, &got) in out.iter().enumerate() {
                                let (expected, magnitude) = reference[r][t];
                                let error = (f64::from(got) - expected).abs();
                                assert!(
                                    error <= FLOAT_TOLERANCE * magnitude,
                                    "{:?} limbs k={k} group={group_size} weight rows \
                                     {weight_rows} ({r}, {t}): {got} vs {expected} (magnitude \
                                     {magnitude}); seed {seed}",
                                    set.isa
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn int8_kernels_match_exact_integer_sums() {
    let seed = seed();
    let mut rng = Rng(seed);
    let sets = available();
    let kinds = [code_kinds()[0], code_kinds()[3]];
    for (name, kind) in kinds {
        for (k, group_size) in shapes() {
            let padded = k.div_ceil(32) * 32;
            let groups = k.div_ceil(group_size);
            let codes: Vec<Vec<u8>> = (0..WEIGHT_ROWS)
                .map(|_| random_codes(&kind, k, &mut rng))
                .collect();
            let scales: Vec<Vec<f32>> = (0..WEIGHT_ROWS)
                .map(|_| (0..groups).map(|_| rng.symmetric() * 2.0).collect())
                .collect();
            // The full i8 range, -128 included, though the dispatcher only makes -127..=127.
            let natural: Vec<Vec<i8>> = (0..MAX_ROWS)
                .map(|_| (0..k).map(|_| rng.byte() as i8).collect())
                .collect();
            let xsums: Vec<Vec<i32>> = natural
                .iter()
                .map(|x| {
                    x.chunks(group_size)
                        .map(|part| part.iter().map(|&v| i32::from(v)).sum())
                        .collect()
                })
                .collect();
            let reference: Vec<Vec<(f64, f64)>> = (0..WEIGHT_ROWS)
                .map(|r| {
                    natural
                        .iter()
                        .map(|x| {
                            let (mut sum, mut magnitude) = (0f64, 0f64);
                            for (g, part) in x.chunks(group_size).enumerate() {
                                let integer: i64 = part
                                    .iter()
                                    .enumerate()
                                    .map(|(j, &xi)| {
                                        value(&kind, &codes[r], g * group_size + j) as i64
                                            * i64::from(xi)
                                    })
                                    .sum();
                                let term = f64::from(scales[r][g]) * integer as f64;
                                sum += term;
                                magnitude += term.abs();
                            }
                            (sum, magnitude)
                        })
                        .collect()
                })
                .collect();
            // The integer sums are exact; what remains is f32 rounding of the int-to-float
            // conversion (only past 2^24), of each product with the scale and of the running sum:
            // at most one epsilon of the magnitude per group, and one more.
            let tolerance = (groups + 1) as f64 * f64::from(f32::EPSILON);
            let args: Vec<RowArgs<'_>> = (0..WEIGHT_ROWS)
                .map(|r| RowArgs {
                    kind: &kind,
                    codes: &codes[r],
                    k,
                    group_size,
                    scales: &scales[r],
                })
                .collect();
            for set in &sets {
                let (block, high_first) = layout(set, &kind, true);
                let laid_out: Vec<Vec<i8>> = natural
                    .iter()
                    .map(|x| {
                        let mut dst = vec![0i8; padded];
                        permute(x, &mut dst, block, high_first);
                        dst
                    })
                    .collect();
                for weight_rows in 1..=WEIGHT_ROWS {
                    for rows in 1..=MAX_ROWS {
                        let xs: Vec<&[i8]> = laid_out[..rows].iter().map(|x| &x[..]).collect();
                        let sums: Vec<&[i32]> = xsums[..rows].iter().map(|s| &s[..]).collect();
                        let mut out = vec![f32::NAN; weight_rows * rows];
                        // SAFETY: `set` comes from `available()`; `xs` rows hold `ceil(k/32)*32`
                        // values in the set's layout, `sums` one sum per group, `out` one per
                        // weight row and activation row.
                        unsafe { (set.dot_int8)(&args[..weight_rows], &xs, &sums, &mut out) };
                        for (i, &got) in out.iter().enumerate() {
                            let (r, t) = (i / rows, i % rows);
                            let (expected, magnitude) = reference[r][t];
                            let error = (f64::from(got) - expected).abs();
                            assert!(
                                error <= tolerance * magnitude,
                                "{:?} {name} k={k} group={group_size} weight rows={weight_rows} \
                                 rows={rows} ({r}, {t}): {got} vs {expected} (magnitude \
                                 {magnitude}); seed {seed}",
                                set.isa
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Schemes of the end-to-end test: every weight format, offsets, blocks and both activation
/// quantizations.
const SCHEMES: [&str; 10] = [
    "w4a16-g128",
    "w4a16-g32-asym",
    "w8a16",
    "nf4",
    "fp4-dq",
    "fp8",
    "fp8-block",
    "w8a8",
    "w4a8-g128",
    "w8a8-fp8",
];

/// End-to-end tolerance, relative to `sum |x * w| + |bias|` per output: the kernels' rounding
/// (see [`FLOAT_TOLERANCE`]) plus the offset subtraction and bias in f32.
const LINEAR_TOLERANCE: f64 = 1e-4;

#[test]
fn linear_matches_dequantized_product() {
    let seed = seed();
    let mut rng = Rng(seed);
    let sets = available();
    let n = 37;
    for scheme_name in SCHEMES {
        let scheme = QuantScheme::parse(scheme_name).expect("known scheme");
        // Short rows; and rows of several k-slices (see `SLICE_BYTES`) ending in a short chunk.
        for k in [100, 320, 1056, 768] {
            let weights: Vec<f32> = (0..n * k).map(|_| rng.symmetric()).collect();
            let tensor = quantize_matrix(&weights, [n, k], &scheme, &RtnOptions::default())
                .expect("quantizable weights");
            let dequantized = tensor.dequantize();
            let bias: Vec<f32> = (0..n).map(|_| rng.symmetric()).collect();
            for m in [1, 3, 8, 11] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.symmetric()).collect();
                let mut exact = vec![0f64; m * n];
                let mut magnitude = vec![0f64; m * n];
                for t in 0..m {
                    for row in 0..n {
                        let products = x[t * k..(t + 1) * k]
                            .iter()
                            .zip(&dequantized[row * k..(row + 1) * k])
                            .map(|(&a, &w)| f64::from(a) * f64::from(w));
                        let (sum, abs) =
                            products.fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()));
                        exact[t * n + row] = sum + f64::from(bias[row]);
                        magnitude[t * n + row] = abs + f64::from(bias[row]).abs();
                    }
                }
                let outputs: Vec<(QuantIsa, Vec<f32>)> = sets
                    .iter()
                    .map(|set| {
                        let mut out = vec![f32::NAN; m * n];
                        linear_with(set, &x, m, &tensor, Some(&bias), &mut out);
                        (set.isa, out)
                    })
                    .collect();
                // Quantized activations move the result away from the float product; there the
                // portable kernel is the reference.
                let float = scheme.activation == ActivationFormat::Float;
                let portable = &outputs[0].1;
                for (isa, out) in &outputs {
                    for (i, &got) in out.iter().enumerate() {
                        let expected = if float {
                            exact[i]
                        } else {
                            f64::from(portable[i])
                        };
                        let error = (f64::from(got) - expected).abs();
                        assert!(
                            error <= LINEAR_TOLERANCE * magnitude[i],
                            "{isa:?} {scheme_name} [{n}, {k}] m={m} output {i}: {got} vs \
                             {expected} (magnitude {}); seed {seed}",
                            magnitude[i]
                        );
                    }
                }
            }
        }
    }
}
