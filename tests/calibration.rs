//! Calibration sets and the sequential quantization pipeline.

use std::path::PathBuf;

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::checkpoint::Checkpoint;
use lowbit::model::Model;
use lowbit::quant::calibration::{
    accumulate_hessian, quantize_sequential, CalibrationSet, CalibrationSource, Method,
};
use lowbit::quant::gptq::GptqOptions;
use lowbit::quant::hessian::CHUNK_TOKENS;
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

fn model() -> Model {
    let base = synthetic::build(Variant::LlamaGqa, 11);
    let checkpoint = Checkpoint::from_parts(
        base.path().to_path_buf(),
        base.config().clone(),
        base.tensors().clone(),
        Some(synthetic::byte_tokenizer_json()),
    );
    Model::from_checkpoint(&checkpoint, None).unwrap()
}

/// Calibration files in a folder of their own per test (tests run in parallel).
fn sources(test: &str) -> (PathBuf, Vec<CalibrationSource>) {
    let dir = std::env::temp_dir().join(format!("lowbit-calib-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = (0..40)
        .map(|i| format!("Paragraph {i}: the quick brown fox {} jumps.\n\n", i * 7))
        .collect();
    std::fs::write(dir.join("a.txt"), text).unwrap();
    let jsonl: String = (0..40)
        .map(|i| {
            format!(
                "{{\"question\": \"What is {i} + {i}?\", \"answer\": \"{} #### {}\"}}\n",
                2 * i,
                2 * i
            )
        })
        .collect();
    std::fs::write(dir.join("b.jsonl"), jsonl).unwrap();
    let sources = vec![
        CalibrationSource {
            path: dir.join("a.txt"),
            weight: 1.0,
        },
        CalibrationSource {
            path: dir.join("b.jsonl"),
            weight: 3.0,
        },
    ];
    (dir, sources)
}

#[test]
fn calibration_sets_mix_sources_deterministically() {
    let model = model();
    let tok = model.require_tokenizer().unwrap();
    let (dir, sources) = sources("mix");
    let a = CalibrationSet::from_sources(tok, &sources, 16, 24, 7).unwrap();
    let b = CalibrationSet::from_sources(tok, &sources, 16, 24, 7).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.samples.len(), 16);
    assert!(a.samples.iter().all(|s| s.len() >= 2 && s.len() <= 24));
    // Weights 1:3 -> 4 text samples, 12 question/answer samples ("Q" is byte 81).
    let from_jsonl = a.samples.iter().filter(|s| s[0] == u32::from(b'Q')).count();
    assert_eq!(from_jsonl, 12);
    let c = CalibrationSet::from_sources(tok, &sources, 16, 24, 8).unwrap();
    assert_ne!(a, c);
    assert!(CalibrationSet::from_sources(tok, &sources, 500, 24, 7).is_err());
    assert!(CalibrationSet::from_sources(tok, &[], 4, 24, 7).is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn saved_calibration_tokens_read_back_exactly() {
    let model = model();
    let tok = model.require_tokenizer().unwrap();
    let (dir, sources) = sources("saved");
    let drawn = CalibrationSet::from_sources(tok, &sources, 16, 24, 5).unwrap();
    let saved = dir.join("saved.jsonl");
    drawn.write_jsonl(&saved).unwrap();
    let from_file = vec![CalibrationSource {
        path: saved.clone(),
        weight: 1.0,
    }];
    // All 16 records, drawn in another order by another seed, are the same token sequences.
    let mut back = CalibrationSet::from_sources(tok, &from_file, 16, 24, 9).unwrap();
    let mut expected = drawn.samples.clone();
    back.samples.sort();
    expected.sort();
    assert_eq!(back.samples, expected);
    // A shorter seq_len truncates the saved tokens like text.
    let short = CalibrationSet::from_sources(tok, &from_file, 16, 5, 9).unwrap();
    assert!(short.samples.iter().all(|s| s.len() <= 5));

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"input_ids\": [1, 2, 100000]}\n").unwrap();
    let bad_source = vec![CalibrationSource {
        path: bad.clone(),
        weight: 1.0,
    }];
    let err = CalibrationSet::from_sources(tok, &bad_source, 1, 24, 0).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    std::fs::write(&bad, "{\"input_ids\": [1, -2]}\n").unwrap();
    let err = CalibrationSet::from_sources(tok, &bad_source, 1, 24, 0).unwrap_err();
    assert!(err.to_string().contains("token ids"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// One f32 rounding per product-sum within a chunk of `CHUNK_TOKENS` tokens, and one more for
/// the f64 sums (see `lowbit::quant::hessian`).
const HESSIAN_RELATIVE: f64 = (CHUNK_TOKENS as f64 + 2.0) * (f32::EPSILON as f64 / 2.0);

#[test]
fn hessian_is_x_transpose_x() {
    let (rows, width) = (CHUNK_TOKENS + 70, 21);
    let x: Vec<f32> = (0..rows * width)
        .map(|i| (i as f32 * 0.37).sin() * if i % 5 == 0 { 30.0 } else { 1.0 })
        .collect();
    let mut h = vec![0f64; width * width];
    accumulate_hessian(&mut h, rows, &x);
    for i in 0..width {
        for j in 0..width {
            let (mut expected, mut magnitude) = (0f64, 0f64);
            for t in 0..rows {
                let p = x[t * width + i] as f64 * x[t * width + j] as f64;
                expected += p;
                magnitude += p.abs();
            }
            let error = (h[i * width + j] - expected).abs();
            assert!(
                error <= HESSIAN_RELATIVE * magnitude,
                "({i}, {j}): {} vs {expected}",
                h[i * width + j]
            );
        }
    }
}

fn logits_error(reference: &Model, model: &Model, tokens: &[u32]) -> f64 {
    let a = reference.logits(tokens).unwrap();
    let b = model.logits(tokens).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn sequential_pipeline_rtn_equals_direct_rtn_and_gptq_beats_it() {
    let base = model();
    let (dir, sources) = sources("gptq");
    let calibration =
        CalibrationSet::from_sources(base.require_tokenizer().unwrap(), &sources, 24, 48, 1)
            .unwrap();
    let rules = QuantRules::new(QuantScheme::parse("w4a16-g32").unwrap());
    let mut direct = base.clone();
    quantize_model(&mut direct, &rules, &RtnOptions::default()).unwrap();
    let mut sequential = base.clone();
    let mut calls = 0;
    quantize_sequential(
        &mut sequential,
        &calibration,
        &rules,
        &Method::Rtn(RtnOptions::default()),
        &mut |done, total, _| {
            calls += 1;
            assert!(done <= total);
            true
        },
    )
    .unwrap();
    assert_eq!(calls, 14);
    let probe = &calibration.samples[0];
    assert_eq!(
        direct.logits(probe).unwrap(),
        sequential.logits(probe).unwrap()
    );

    let mut gptq = base.clone();
    quantize_sequential(
        &mut gptq,
        &calibration,
        &rules,
        &Method::Gptq(GptqOptions::default()),
        &mut |_, _, _| true,
    )
    .unwrap();
    let (mut rtn_error, mut gptq_error) = (0.0, 0.0);
    for sample in &calibration.samples {
        rtn_error += logits_error(&base, &direct, sample);
        gptq_error += logits_error(&base, &gptq, sample);
    }
    eprintln!("logit error on calibration data: rtn {rtn_error:.4} gptq {gptq_error:.4}");
    assert!(gptq_error < rtn_error, "{gptq_error} >= {rtn_error}");
    let cancelled = quantize_sequential(
        &mut base.clone(),
        &calibration,
        &rules,
        &Method::Rtn(RtnOptions::default()),
        &mut |_, _, _| false,
    );
    assert!(matches!(cancelled, Err(lowbit::Error::Cancelled)));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn awq_pipeline_keeps_the_function_and_does_not_lose_to_rtn() {
    let base = model();
    let (dir, sources) = sources("awq");
    let calibration =
        CalibrationSet::from_sources(base.require_tokenizer().unwrap(), &sources, 16, 48, 2)
            .unwrap();
    let rules = QuantRules::new(QuantScheme::parse("w4a16-g32").unwrap());
    let mut direct = base.clone();
    quantize_model(&mut direct, &rules, &RtnOptions::default()).unwrap();
    let mut awq = base.clone();
    quantize_sequential(
        &mut awq,
        &calibration,
        &rules,
        &Method::awq(),
        &mut |_, _, _| true,
    )
    .unwrap();
    let (mut rtn_error, mut awq_error) = (0.0, 0.0);
    for sample in &calibration.samples {
        rtn_error += logits_error(&base, &direct, sample);
        awq_error += logits_error(&base, &awq, sample);
    }
    eprintln!("logit error on calibration data: rtn {rtn_error:.4} awq {awq_error:.4}");
    // AWQ never picks scales worse than plain RTN per group (its search includes s = 1), so the
    // end-to-end error may only rise through interactions between layers: a 10% allowance.
    assert!(
        awq_error < rtn_error * AWQ_ALLOWANCE,
        "{awq_error} vs {rtn_error}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// See `awq_pipeline_keeps_the_function_and_does_not_lose_to_rtn`.
const AWQ_ALLOWANCE: f64 = 1.1;

/// Multiplies RMSNorm channels by `factor` and divides the matching columns of the projections
/// they feed: the same function, with activation outlier channels as real models have.
fn with_outlier_channels(model: &Model, channels: &[usize], factor: f32) -> Model {
    use lowbit::checkpoint::Tensor;
    use lowbit::model::{Linear, Weight};
    let divide_columns = |linear: &mut Linear| {
        let [out, width] = linear.weight.shape();
        let Weight::Dense(t) = &linear.weight else {
            unreachable!("the synthetic model is dense")
        };
        let mut values = t.to_f32_vec();
        for row in values.chunks_exact_mut(width) {
            for &j in channels {
                row[j] /= factor;
            }
        }
        linear.weight = Weight::Dense(Tensor::from_f32(vec![out, width], values));
    };
    let mut out = model.clone();
    for block in out.blocks_mut() {
        for &j in channels {
            block.input_norm[j] *= factor;
            block.post_attention_norm[j] *= factor;
        }
        for linear in [
            &mut block.q_proj,
            &mut block.k_proj,
            &mut block.v_proj,
            &mut block.gate_proj,
            &mut block.up_proj,
        ] {
            divide_columns(linear);
        }
    }
    out
}

fn quantized(base: &Model, calibration: &CalibrationSet, scheme: &str, method: Method) -> Model {
    let rules = QuantRules::new(QuantScheme::parse(scheme).unwrap());
    let mut model = base.clone();
    quantize_sequential(&mut model, calibration, &rules, &method, &mut |_, _, _| {
        true
    })
    .unwrap();
    model
}

fn total_error(base: &Model, model: &Model, calibration: &CalibrationSet) -> f64 {
    calibration
        .samples
        .iter()
        .map(|s| logits_error(base, model, s))
        .sum()
}

/// SmoothQuant must win clearly where per-token int8 activations lose the small channels to
/// a 40x outlier: the measured ratio is ~0.07 on this model; 0.5 leaves room across seeds.
const SMOOTHQUANT_GAIN: f64 = 0.5;

#[test]
fn smoothquant_beats_rtn_on_outlier_activations_and_gptq_adds_to_it() {
    let base = with_outlier_channels(&model(), &[3, 17, 40], 40.0);
    let (dir, sources) = sources("smoothquant");
    let calibration =
        CalibrationSet::from_sources(base.require_tokenizer().unwrap(), &sources, 16, 48, 3)
            .unwrap();
    let rtn = quantized(
        &base,
        &calibration,
        "w8a8",
        Method::Rtn(RtnOptions::default()),
    );
    let smooth = quantized(
        &base,
        &calibration,
        "w8a8",
        Method::SmoothQuant {
            alpha: 0.5,
            gptq: None,
        },
    );
    let (rtn_error, smooth_error) = (
        total_error(&base, &rtn, &calibration),
        total_error(&base, &smooth, &calibration),
    );
    eprintln!("w8a8 logit error: rtn {rtn_error:.4} smoothquant {smooth_error:.4}");
    assert!(
        smooth_error < rtn_error * SMOOTHQUANT_GAIN,
        "{smooth_error} vs {rtn_error}"
    );

    // W4A8: GPTQ on the smoothed layers lowers the 4-bit weight error further.
    let smooth4 = quantized(
        &base,
        &calibration,
        "w4a8-g32",
        Method::SmoothQuant {
            alpha: 0.5,
            gptq: None,
        },
    );
    let smooth_gptq = quantized(
        &base,
        &calibration,
        "w4a8-g32",
        Method::SmoothQuant {
            alpha: 0.5,
            gptq: Some(GptqOptions::default()),
        },
    );
    let (rtn4_error, gptq4_error) = (
        total_error(&base, &smooth4, &calibration),
        total_error(&base, &smooth_gptq, &calibration),
    );
    eprintln!("w4a8 logit error: smoothquant {rtn4_error:.4} smoothquant+gptq {gptq4_error:.4}");
    assert!(gptq4_error < rtn4_error, "{gptq4_error} vs {rtn4_error}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn awq_then_fp8_runs_and_does_not_lose_to_rtn() {
    let base = model();
    let (dir, sources) = sources("awq-fp8");
    let calibration =
        CalibrationSet::from_sources(base.require_tokenizer().unwrap(), &sources, 8, 48, 4)
            .unwrap();
    for scheme in ["fp8", "fp8-block"] {
        let rtn = quantized(
            &base,
            &calibration,
            scheme,
            Method::Rtn(RtnOptions::default()),
        );
        let awq = quantized(&base, &calibration, scheme, Method::awq());
        let (rtn_error, awq_error) = (
            total_error(&base, &rtn, &calibration),
            total_error(&base, &awq, &calibration),
        );
        eprintln!("{scheme} logit error: rtn {rtn_error:.5} awq {awq_error:.5}");
        assert!(
            awq_error < rtn_error * AWQ_ALLOWANCE,
            "{scheme}: {awq_error} vs {rtn_error}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
