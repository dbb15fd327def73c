//! Quantized formats and RTN: hand-checked vectors, an independent reference of every format's
//! dequantization, snapshots of the stored tensors, and quantized models end to end.

use std::collections::BTreeMap;

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::checkpoint::{Checkpoint, Tensor};
use lowbit::model::{Model, Weight};
use lowbit::quant::fp8::{e4m3_to_f32, f32_to_e4m3};
use lowbit::quant::nf4::{FP4_CODE_BOOK, NF4_CODE_BOOK};
use lowbit::quant::{
    quantize_checkpoint, quantize_matrix, quantize_model, QuantRules, QuantScheme, QuantizedTensor,
    RtnOptions, Scales,
};
use lowbit::Error;

/// Every scheme the CLI accepts.
const SCHEMES: &[&str] = &[
    "w4a16-g128",
    "w4a16-g32-asym",
    "w4a16",
    "w8a16",
    "w8a16-g64-asym",
    "w8a8",
    "w4a8-g128",
    "nf4",
    "nf4-dq",
    "fp4",
    "fp4-dq",
    "fp8",
    "fp8-block",
    "w8a8-fp8",
    "w8a8-fp8-block",
];

/// Logit difference allowed between a weight-only quantized model and the same model with the
/// dequantized weights stored densely in f32: only the summation order differs (the fused
/// kernels sum per group, then scale), ~1e-6 relative over a few hundred terms.
const FUSED_VS_DEQUANT_TOLERANCE: f32 = 1e-4;

fn scheme(name: &str) -> QuantScheme {
    QuantScheme::parse(name).unwrap()
}

fn rtn(values: &[f32], shape: [usize; 2], name: &str) -> QuantizedTensor {
    quantize_matrix(values, shape, &scheme(name), &RtnOptions::default()).unwrap()
}

fn seeded(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.1
        })
        .collect()
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn padded_row(values: &[f32], len: usize) -> Vec<f32> {
    let mut row = values.to_vec();
    row.resize(len, 0.0);
    row
}

#[test]
fn int4_symmetric_by_hand() {
    // max|w| = 1.5 -> scale = 1.5 / 7.5 = 0.2, stored as f16 0.199951171875.
    // 0.75 / s = 3.75 -> 4; -1.5 / s = -7.50 -> -8; 0.3 / s = 1.50 -> 2 (ties are not hit).
    let q = rtn(&padded_row(&[0.75, -1.5, 0.3], 32), [1, 32], "w4a16-g32");
    let s = half::f16::from_f32(0.2).to_f32();
    let d = q.dequantize();
    assert_eq!(&d[..4], &[4.0 * s, -8.0 * s, 2.0 * s, 0.0]);
    // Offset codes 12, 0, 10, 8, 8, ... packed low nibble first.
    let words: &[u8] = q.codes().raw_bytes();
    assert_eq!(
        u32::from_le_bytes(words[..4].try_into().unwrap()),
        0x8888_8A0C
    );
    assert_eq!(
        u32::from_le_bytes(words[4..8].try_into().unwrap()),
        0x8888_8888
    );
}

#[test]
fn int4_asymmetric_by_hand() {
    // Range [-1, 2]: scale = 3 / 15 = 0.2 -> f16 0.199951171875; zero = round(-8 + 1/s) = -3.
    // 2 -> round(10.002) - 3 = 7; -1 -> -5 - 3 = -8; 0 -> -3.
    let q = rtn(
        &padded_row(&[2.0, -1.0, 0.0], 32),
        [1, 32],
        "w4a16-g32-asym",
    );
    let s = half::f16::from_f32(0.2).to_f32();
    assert_eq!(q.zero_points().unwrap(), &[-3]);
    let d = q.dequantize();
    assert_eq!(&d[..3], &[10.0 * s - 0.0, -5.0 * s, 0.0]);
    assert_eq!(q.codes().raw_bytes()[0], 0x0F);
}

#[test]
fn nf4_by_hand() {
    // absmax 1: 1.0 -> code 15; -0.5 -> nearest -0.5250731 (code 2); 0.25 -> 0.2461123 (10);
    // 0 -> code 7. bitsandbytes packs the first value of a pair in the high nibble.
    let q = rtn(&padded_row(&[1.0, -0.5, 0.25], 64), [1, 64], "nf4");
    assert_eq!(&q.codes().raw_bytes()[..3], &[0xF2, 0xA7, 0x77]);
    let d = q.dequantize();
    assert_eq!(&d[..4], &[1.0, NF4_CODE_BOOK[2], NF4_CODE_BOOK[10], 0.0]);
}

#[test]
fn fp8_by_hand() {
    // scale = 2 / 448; 2 -> 448 = 0x7E; -1 -> -224 = -1.75 * 2^7 -> 0xF6; 0.1 -> 22.4 -> 22
    // (1.375 * 2^4 = 0x5B).
    let q = rtn(&[2.0, -1.0, 0.1], [1, 3], "fp8");
    assert_eq!(q.codes().raw_bytes(), &[0x7E, 0xF6, 0x5B]);
    let scale = 2.0f32 / 448.0;
    assert_eq!(
        q.dequantize(),
        vec![448.0 * scale, -224.0 * scale, 22.0 * scale]
    );
}

/// An independent decoding of every format from its documented layout.
fn reference_dequantize(q: &QuantizedTensor) -> Vec<f32> {
    let (rows, cols) = (q.rows(), q.cols());
    let scheme = q.scheme().to_string();
    let group = q.group_size();
    let groups = cols.div_ceil(group);
    let bytes = q.codes().raw_bytes();
    let row_bytes = bytes.len() / rows;
    let scale_at = |r: usize, g: usize| -> f32 {
        match q.scales() {
            Scales::Dense(t) => {
                let all = t.to_f32_vec();
                let rb = if scheme.contains("block") { r / 128 } else { r };
                all[rb * groups + g]
            }
            Scales::Double(dq) => {
                let i = r * groups + g;
                lowbit::quant::nf4::dynamic_map()[dq.codes[i] as usize] * dq.absmax[i / 256]
                    + dq.offset
            }
        }
    };
    let mut out = Vec::new();
    for r in 0..rows {
        let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
        for c in 0..cols {
            let g = c / group;
            let s = scale_at(r, g);
            let z = q.zero_points().map_or(0.0, |z| z[r * groups + g] as f32);
            let v = if scheme.starts_with("w4") {
                let word = u32::from_le_bytes(row[c / 8 * 4..c / 8 * 4 + 4].try_into().unwrap());
                (((word >> (4 * (c % 8))) & 0xF) as i32 - 8) as f32
            } else if scheme.starts_with("w8") && !scheme.contains("fp8") {
                row[c] as i8 as f32
            } else if scheme.starts_with("nf4") || scheme.starts_with("fp4") {
                let b = row[c / 2];
                let nibble = if c % 2 == 0 { b >> 4 } else { b & 0xF };
                let book = if scheme.starts_with("nf4") {
                    &NF4_CODE_BOOK
                } else {
                    &FP4_CODE_BOOK
                };
                book[nibble as usize]
            } else {
                e4m3_to_f32(row[c])
            };
            out.push((v - z) * s);
        }
    }
    out
}

#[test]
fn every_scheme_decodes_as_its_documented_layout() {
    let seed = fresh_seed();
    for name in SCHEMES {
        for shape in [[3, 100], [130, 256], [5, 64]] {
            let values = seeded(shape[0] * shape[1], seed);
            let q = rtn(&values, shape, name);
            let decoded = q.dequantize();
            assert_eq!(
                decoded,
                reference_dequantize(&q),
                "{name} {shape:?} seed {seed}"
            );
            // Error bound: half a quantization step of the coarsest format (int4 / FP4 over a
            // range of 0.1 -> ~0.1 / 7.5 / 2 ~ 0.0067, NF4 ~ 0.015 near +-1 of the absmax).
            let worst = values
                .iter()
                .zip(&decoded)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.02, "{name}: {worst}");
        }
    }
}

#[test]
fn rtn_codes_are_the_nearest_for_their_scale() {
    // For symmetric int4 without clipping every code must be the rounding of w / scale.
    let seed = fresh_seed();
    let values = seeded(4 * 256, seed);
    let q = rtn(&values, [4, 256], "w4a16-g64");
    let decoded = q.dequantize();
    for (i, (&w, &d)) in values.iter().zip(&decoded).enumerate() {
        let Scales::Dense(t) = q.scales() else {
            unreachable!()
        };
        let s = t.to_f32_vec()[i / 64];
        let expected = (w / s).round_ties_even().clamp(-8.0, 7.0) * s;
        assert_eq!(d, expected, "seed {seed} index {i}");
    }
    // FP8 codes are the nearest representable value.
    for w in seeded(1000, seed) {
        let code = f32_to_e4m3(w * 3000.0);
        assert!((e4m3_to_f32(code) - w * 3000.0).abs() <= 16.0);
    }
}

#[test]
fn mse_clipping_never_increases_the_error() {
    let seed = fresh_seed();
    // Heavy-tailed rows: a few outliers make plain absmax scaling coarse.
    let mut values = seeded(8 * 128, seed);
    for i in (0..values.len()).step_by(61) {
        values[i] *= 12.0;
    }
    for name in ["w4a16-g128", "w4a16-g128-asym", "nf4", "fp8"] {
        let err = |mse: bool| -> f64 {
            let q = quantize_matrix(
                &values,
                [8, 128],
                &scheme(name),
                &RtnOptions { mse_clip: mse },
            )
            .unwrap();
            q.dequantize()
                .iter()
                .zip(&values)
                .map(|(a, b)| ((a - b) as f64).abs().powf(2.4))
                .sum()
        };
        let (plain, searched) = (err(false), err(true));
        assert!(
            searched <= plain * (1.0 + 1e-6),
            "{name}: {searched} > {plain}"
        );
    }
}

#[test]
fn quantized_tensors_snapshot() {
    let values = seeded(4 * 96, 7);
    let mut summary = BTreeMap::new();
    for name in SCHEMES {
        let q = rtn(&values, [4, 96], name);
        let scales: Vec<String> = match q.scales() {
            Scales::Dense(t) => t.to_f32_vec().iter().map(|v| format!("{v:.6e}")).collect(),
            Scales::Double(dq) => dq.codes.iter().map(|c| c.to_string()).collect(),
        };
        let first: Vec<String> = q.codes().raw_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        summary.insert(
            name.to_string(),
            serde_json::json!({
                "scales": scales,
                "zero_points": q.zero_points(),
                "first_code_bytes": first.join(""),
                "storage_bytes": q.storage_bytes(),
            }),
        );
    }
    insta::assert_json_snapshot!("quantized_tensors", summary);
}

#[test]
fn bad_inputs_are_errors() {
    let s = scheme("w4a16-g32");
    let opts = RtnOptions::default();
    assert!(quantize_matrix(&[1.0; 10], [3, 4], &s, &opts).is_err());
    assert!(quantize_matrix(&[], [0, 4], &s, &opts).is_err());
    assert!(quantize_matrix(&[f32::NAN; 4], [1, 4], &s, &opts).is_err());
    // Scales of the wrong size.
    let q = rtn(&seeded(64, 1), [2, 32], "w4a16-g32");
    let tensors = q.to_tensors("layer");
    let mut broken = tensors.clone();
    broken.insert(
        "layer.weight_scale".into(),
        Tensor::from_f32(vec![3], vec![1.0; 3]),
    );
    let lookup = |map: &BTreeMap<String, Tensor>, prefix: &str| {
        QuantizedTensor::from_tensors(s, prefix, |n| {
            map.get(n)
                .ok_or_else(|| Error::InvalidArgument(format!("missing {n}")))
        })
        .map(|_| ())
    };
    let err = lookup(&broken, "layer").unwrap_err();
    assert!(err.to_string().contains("scales"), "{err}");
    assert!(lookup(&tensors, "layer").is_ok());
    assert!(lookup(&tensors, "other").is_err());
}

fn dense_copy(model: &Model) -> Model {
    let mut dense = model.clone();
    for (_, linear) in dense.linears_mut() {
        if let Weight::Quantized(q) = &linear.weight {
            linear.weight =
                Weight::Dense(Tensor::from_f32(vec![q.rows(), q.cols()], q.dequantize()));
        }
    }
    dense
}

#[test]
fn quantized_model_matches_its_dequantized_weights() {
    let base = Model::from_checkpoint(&synthetic::build(Variant::Qwen3, 3), None).unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 % 250) as u32).collect();
    for name in [
        "w4a16-g32",
        "w4a16-g64-asym",
        "w8a16",
        "nf4-dq",
        "fp4",
        "fp8",
        "fp8-block",
    ] {
        let mut model = base.clone();
        quantize_model(
            &mut model,
            &QuantRules::new(scheme(name)),
            &RtnOptions::default(),
        )
        .unwrap();
        assert!(model.weight_bytes() < base.weight_bytes(), "{name}");
        let fused = model.logits(&tokens).unwrap();
        let reference = dense_copy(&model).logits(&tokens).unwrap();
        let diff = fused
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < FUSED_VS_DEQUANT_TOLERANCE, "{name}: {diff}");
    }
}

#[test]
fn quantized_checkpoint_round_trips_through_disk() {
    let source = synthetic::build(Variant::LlamaTied, 5);
    let dir = std::env::temp_dir().join(format!("lowbit-quant-{}", std::process::id()));
    let mut rules = QuantRules::new(scheme("w4a16-g32-asym"));
    rules.push_override("*.down_proj=w8a16").unwrap();
    rules
        .push_override("model.layers.0.self_attn.*=skip")
        .unwrap();
    rules.push_override("lm_head=nf4-dq").unwrap();
    let mut seen = Vec::new();
    let quantized = quantize_checkpoint(
        &source,
        &rules,
        &RtnOptions::default(),
        &mut |done, total, _| {
            seen.push((done, total));
            true
        },
    )
    .unwrap();
    assert_eq!(seen.len(), 2 * 7 - 4 + 1);
    assert!(seen
        .iter()
        .enumerate()
        .all(|(i, &(d, t))| d == i + 1 && t == seen.len()));
    quantized.save(&dir).unwrap();
    let loaded = Model::load(&dir).unwrap();
    let blocks = loaded.blocks();
    assert!(blocks[0].q_proj.weight.scheme().is_none());
    assert_eq!(blocks[0].down_proj.weight.scheme(), Some(&scheme("w8a16")));
    assert_eq!(
        blocks[1].q_proj.weight.scheme(),
        Some(&scheme("w4a16-g32-asym"))
    );
    assert_eq!(loaded.lm_head().weight.scheme(), Some(&scheme("nf4-dq")));

    // The same rules applied in memory give the same weights and logits.
    let mut in_memory = Model::from_checkpoint(&source, None).unwrap();
    quantize_model(&mut in_memory, &rules, &RtnOptions::default()).unwrap();
    let tokens = [1u32, 5, 9, 200, 3];
    assert_eq!(
        loaded.logits(&tokens).unwrap(),
        in_memory.logits(&tokens).unwrap()
    );

    // Quantizing twice, a cancelled pass, and a corrupt quantization_config are errors.
    let reopened = Checkpoint::open(&dir).unwrap();
    let twice = quantize_checkpoint(&reopened, &rules, &RtnOptions::default(), &mut |_, _, _| {
        true
    });
    assert!(twice.unwrap_err().to_string().contains("already quantized"));
    let cancelled = quantize_checkpoint(&source, &rules, &RtnOptions::default(), &mut |_, _, _| {
        false
    });
    assert!(matches!(cancelled, Err(Error::Cancelled)));
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    for (from, to, expect) in [
        ("\"lowbit\"", "\"bitsandbytes\"", "quant_method"),
        ("\"w8a16\"", "\"w3a16\"", "w3a16"),
    ] {
        std::fs::write(&config_path, text.replacen(from, to, 1)).unwrap();
        let err = Model::load(&dir).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
    std::fs::write(&config_path, &text).unwrap();
    // A truncated code tensor.
    let mut c = Checkpoint::open(&dir).unwrap().tensors().clone();
    c.insert(
        "model.layers.1.mlp.up_proj.weight_packed".into(),
        Tensor::from_f32(vec![2], vec![0.0; 2]).to_dtype(lowbit::checkpoint::Dtype::I32),
    );
    let broken = Checkpoint::from_parts(
        dir.clone(),
        Checkpoint::open(&dir).unwrap().config().clone(),
        c,
        None,
    );
    let err = Model::from_checkpoint(&broken, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("up_proj"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn in_memory_quantization_saves_and_reloads() {
    let source = synthetic::build(Variant::Qwen2, 9);
    let mut model = Model::from_checkpoint(&source, None).unwrap();
    let rules = QuantRules::new(scheme("nf4"));
    quantize_model(&mut model, &rules, &RtnOptions::default()).unwrap();
    let saved = lowbit::quant::apply::checkpoint_from_model(&model, &source, &rules, "rtn");
    let dir = std::env::temp_dir().join(format!("lowbit-inmem-{}", std::process::id()));
    saved.save(&dir).unwrap();
    let loaded = Model::load(&dir).unwrap();
    let tokens = [3u32, 9, 27, 81];
    assert_eq!(
        loaded.logits(&tokens).unwrap(),
        model.logits(&tokens).unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}
