//! Export to and import from the layouts of other tools (`lowbit::io`).
//!
//! - compressed-tensors export: every exportable scheme round-trips (export, save, load) to the
//!   same quantized tensors and bit-identical logits, and transformers (with the
//!   compressed-tensors package) computes the same logits from the exported files
//!   (`tests/fixtures/reference/compressed_tensors.json`, made by
//!   `tests/reference/compressed_tensors_reference.py`).
//! - compressed-tensors import: checkpoints written by the compressed-tensors package's own
//!   compressors (`tests/fixtures/compressed_tensors/`) give transformers' logits.
//! - GPTQ and AWQ import: layers packed here from random codes, zero points and scales, by an
//!   independent packer that follows each layout's documentation, dequantize to exactly
//!   `(code - zero) * scale`.
//! - Bad input: each unsupported or inconsistent checkpoint is a clear error.
//!
//! Random inputs come from a fresh seed per run, printed on failure; `LOWBIT_TEST_SEED=<n>`
//! replays one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use lowbit::checkpoint::{Checkpoint, Dtype, Tensor};
use lowbit::io::compressed_tensors;
use lowbit::model::Weight;
use lowbit::quant::{quantize_checkpoint, QuantRules, QuantScheme, RtnOptions};
use lowbit::Model;
use serde_json::{json, Value};

mod common;
use common::seed;

/// lowbit against transformers, weight-only schemes: both run f32 on the same dequantized
/// weights, so only summation order differs (the forward-pass tests hold 1e-3 on these models).
const WEIGHT_ONLY_TOLERANCE: f32 = 1e-3;
/// With activations quantized per token, the f32 differences above put some activations on the
/// other side of a rounding boundary in the second layer, and each such flip moves the logits by
/// a fraction of one quantization step; measured: median 1e-3, max 0.009 over every scheme.
const ACTIVATION_TOLERANCE: f32 = 0.05;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference/compressed_tensors.json"))
        .expect("reference fixture");
    serde_json::from_str(&text).expect("reference JSON")
}

fn prompt(reference: &Value) -> Vec<u32> {
    reference["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn flat(rows: &Value) -> Vec<f32> {
    rows.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tolerance(scheme: &QuantScheme) -> f32 {
    match scheme.activation {
        lowbit::quant::ActivationFormat::Float => WEIGHT_ONLY_TOLERANCE,
        _ => ACTIVATION_TOLERANCE,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn source() -> Checkpoint {
    Checkpoint::open(fixtures().join("synthetic/llama_gqa")).expect("synthetic fixture")
}

fn dequantized_layers(model: &Model) -> BTreeMap<String, Vec<f32>> {
    model
        .linears()
        .into_iter()
        .filter_map(|(name, l)| match &l.weight {
            Weight::Quantized(q) => Some((name, q.dequantize())),
            Weight::Dense(_) => None,
        })
        .collect()
}

#[test]
fn compressed_tensors_export_round_trips_and_matches_transformers() {
    let reference = reference();
    let ids = prompt(&reference);
    let source = source();
    let exports = reference["exports"].as_object().unwrap();
    assert!(
        exports.len() >= 8,
        "every exportable scheme has a reference"
    );
    for (name, expected) in exports {
        // Refused on the synthetic model's 64-wide layers (see the test of refusals below).
        if name == "w8a8-fp8-block" {
            continue;
        }
        let scheme = QuantScheme::parse(name).unwrap();
        let quantized = quantize_checkpoint(
            &source,
            &QuantRules::new(scheme),
            &RtnOptions::default(),
            &mut |_, _, _| true,
        )
        .unwrap();
        let exported = compressed_tensors::export(&quantized, None).unwrap();
        let q = exported.config().quantization_config.as_ref().unwrap();
        assert_eq!(q["quant_method"], "compressed-tensors", "{name}");
        let dir = temp_dir(name);
        exported.save(&dir).unwrap();
        let original = Model::from_checkpoint(&quantized, None).unwrap();
        let reloaded = Model::load(&dir).unwrap();
        let (a, b) = (dequantized_layers(&original), dequantized_layers(&reloaded));
        assert_eq!(a.len(), 14, "{name}: every block linear quantized");
        assert_eq!(a, b, "{name}: dequantized weights after export and import");
        let logits = reloaded.logits(&ids).unwrap();
        assert_eq!(logits, original.logits(&ids).unwrap(), "{name}: logits");
        let diff = max_abs_diff(&logits, &flat(expected));
        assert!(
            diff < tolerance(&scheme),
            "{name}: lowbit vs transformers on the export: max abs diff {diff}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn compressed_tensors_package_checkpoints_import_to_transformers_logits() {
    let reference = reference();
    let ids = prompt(&reference);
    let imports = reference["imports"].as_object().unwrap();
    assert!(imports.len() >= 5);
    for (name, expected) in imports {
        let model = Model::load(fixtures().join("compressed_tensors").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let layers = dequantized_layers(&model);
        assert_eq!(
            layers.len(),
            14,
            "{name}: every block linear imported quantized"
        );
        let scheme = *model.linears()[0].1.weight.scheme().unwrap();
        let diff = max_abs_diff(&model.logits(&ids).unwrap(), &flat(expected));
        assert!(
            diff < tolerance(&scheme),
            "{name} ({scheme}): max abs diff {diff}"
        );
    }
}

#[test]
fn schemes_without_a_compressed_tensors_form_are_errors() {
    let quantized = quantize_checkpoint(
        &source(),
        &QuantRules::new(QuantScheme::parse("nf4").unwrap()),
        &RtnOptions::default(),
        &mut |_, _, _| true,
    )
    .unwrap();
    let err = compressed_tensors::export(&quantized, None).unwrap_err();
    assert!(
        err.to_string().contains("no compressed-tensors format"),
        "{err}"
    );
    // The synthetic model's 64 input features hold no whole group of 128.
    let quantized = quantize_checkpoint(
        &source(),
        &QuantRules::new(QuantScheme::parse("w4a16-g128").unwrap()),
        &RtnOptions::default(),
        &mut |_, _, _| true,
    )
    .unwrap();
    let err = compressed_tensors::export(&quantized, None).unwrap_err();
    assert!(
        err.to_string().contains("not a multiple of the group size"),
        "{err}"
    );
    // Dynamic FP8 activations in groups of 128 need whole groups too (compressed-tensors'
    // own forward fails on a 64-wide input); weight-only 128x128 blocks export.
    for (scheme, refused) in [("w8a8-fp8-block", true), ("fp8-block", false)] {
        let quantized = quantize_checkpoint(
            &source(),
            &QuantRules::new(QuantScheme::parse(scheme).unwrap()),
            &RtnOptions::default(),
            &mut |_, _, _| true,
        )
        .unwrap();
        match compressed_tensors::export(&quantized, None) {
            Err(err) if refused => assert!(
                err.to_string().contains("not a multiple of 128"),
                "{scheme}: {err}"
            ),
            Ok(_) if !refused => {}
            other => panic!("{scheme}: {:?}", other.map(|_| "exported")),
        }
    }
    let err = compressed_tensors::export(&source(), None).unwrap_err();
    assert!(err.to_string().contains("not quantized"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// GPTQ and AWQ, packed here.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One layer's integers: codes `[out][in]`, zero points and scales `[out][groups]`.
struct Layer {
    codes: Vec<Vec<u32>>,
    zeros: Vec<Vec<u32>>,
    scales: Vec<Vec<f16>>,
    group_size: usize,
}

impl Layer {
    /// Asymmetric zero points are drawn from `1..2^bits`: GPTQ's `gptq` format stores them
    /// minus one in `bits` bits, so a zero point of 0 is not representable there.
    fn random(
        rng: &mut Rng,
        out: usize,
        inp: usize,
        bits: u32,
        group_size: usize,
        sym: bool,
    ) -> Self {
        let groups = inp.div_ceil(group_size);
        let levels = 1u64 << bits;
        Layer {
            codes: (0..out)
                .map(|_| (0..inp).map(|_| rng.below(levels) as u32).collect())
                .collect(),
            zeros: (0..out)
                .map(|_| {
                    (0..groups)
                        .map(|_| {
                            if sym {
                                (levels / 2) as u32
                            } else {
                                1 + rng.below(levels - 1) as u32
                            }
                        })
                        .collect()
                })
                .collect(),
            scales: (0..out)
                .map(|_| {
                    (0..groups)
                        .map(|_| f16::from_f32(0.001 + rng.below(1000) as f32 * 1e-4))
                        .collect()
                })
                .collect(),
            group_size,
        }
    }

    fn expected(&self) -> Vec<f32> {
        let mut w = Vec::new();
        for (n, row) in self.codes.iter().enumerate() {
            for (k, &c) in row.iter().enumerate() {
                let g = k / self.group_size;
                let z = self.zeros[n][g];
                w.push(((c as f64 - z as f64) * self.scales[n][g].to_f64()) as f32);
            }
        }
        w
    }

    fn scales_tensor(&self) -> Tensor {
        // [groups, out]
        let groups = self.scales[0].len();
        let v: Vec<f16> = (0..groups)
            .flat_map(|g| self.scales.iter().map(move |row| row[g]))
            .collect();
        Tensor::from_bytes(
            vec![groups, self.scales.len()],
            Dtype::F16,
            bytemuck::cast_slice(&v),
        )
    }
}

fn i32_tensor(shape: Vec<usize>, words: &[u32]) -> Tensor {
    Tensor::from_bytes(shape, Dtype::I32, bytemuck::cast_slice(words))
}

/// GPTQ: qweight `[in/pf, out]` packed along the input; qzeros `[groups, out/pf]` along the
/// output, stored minus one in the `gptq` format.
fn pack_gptq(layer: &Layer, bits: u32, v1: bool) -> [Tensor; 3] {
    let pf = (32 / bits) as usize;
    let (out, inp) = (layer.codes.len(), layer.codes[0].len());
    let mut qweight = vec![0u32; inp / pf * out];
    for k in 0..inp {
        for n in 0..out {
            qweight[(k / pf) * out + n] |= layer.codes[n][k] << (bits as usize * (k % pf));
        }
    }
    let groups = layer.zeros[0].len();
    let mask = (1u32 << bits) - 1;
    let mut qzeros = vec![0u32; groups * out / pf];
    for g in 0..groups {
        for n in 0..out {
            let stored = (layer.zeros[n][g].wrapping_sub(u32::from(v1))) & mask;
            qzeros[g * (out / pf) + n / pf] |= stored << (bits as usize * (n % pf));
        }
    }
    [
        i32_tensor(vec![inp / pf, out], &qweight),
        i32_tensor(vec![groups, out / pf], &qzeros),
        layer.scales_tensor(),
    ]
}

/// AWQ GEMM: qweight `[in, out/8]`, nibble `i` of a word holding output `[0,2,4,6,1,3,5,7][i]`.
fn pack_awq(layer: &Layer) -> [Tensor; 3] {
    const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
    let (out, inp) = (layer.codes.len(), layer.codes[0].len());
    let groups = layer.zeros[0].len();
    let mut qweight = vec![0u32; inp * out / 8];
    for k in 0..inp {
        for j in 0..out / 8 {
            for (i, &o) in ORDER.iter().enumerate() {
                qweight[k * (out / 8) + j] |= layer.codes[8 * j + o][k] << (4 * i);
            }
        }
    }
    let mut qzeros = vec![0u32; groups * out / 8];
    for g in 0..groups {
        for j in 0..out / 8 {
            for (i, &o) in ORDER.iter().enumerate() {
                qzeros[g * (out / 8) + j] |= layer.zeros[8 * j + o][g] << (4 * i);
            }
        }
    }
    [
        i32_tensor(vec![inp, out / 8], &qweight),
        i32_tensor(vec![groups, out / 8], &qzeros),
        layer.scales_tensor(),
    ]
}

/// Makes one layer of `[out, in]`: its integers and its packed tensors.
type MakeLayer<'a> = &'a dyn Fn(&mut Rng, usize, usize) -> (Layer, [Tensor; 3]);
/// Extra tensors of a module (name, input features).
type ExtraTensors<'a> = &'a dyn Fn(&str, usize) -> Vec<(String, Tensor)>;

/// The synthetic model with every block linear replaced by `pack`ed random layers, and the
/// expected dequantized weight of each.
fn foreign_checkpoint(
    quantization_config: Value,
    seed: u64,
    make: MakeLayer<'_>,
    extra: ExtraTensors<'_>,
) -> (Checkpoint, BTreeMap<String, Vec<f32>>) {
    let source = source();
    let mut rng = Rng(seed);
    let mut tensors = source.tensors().clone();
    let mut expected = BTreeMap::new();
    let modules: Vec<String> = tensors
        .keys()
        .filter(|n| n.starts_with("model.layers.") && n.ends_with("proj.weight"))
        .map(|n| n.trim_end_matches(".weight").to_string())
        .collect();
    for module in modules {
        let shape = tensors[&format!("{module}.weight")].shape().to_vec();
        let (layer, [qweight, qzeros, scales]) = make(&mut rng, shape[0], shape[1]);
        tensors.remove(&format!("{module}.weight"));
        tensors.insert(format!("{module}.qweight"), qweight);
        tensors.insert(format!("{module}.qzeros"), qzeros);
        tensors.insert(format!("{module}.scales"), scales);
        tensors.extend(extra(&module, shape[1]));
        expected.insert(module, layer.expected());
    }
    let mut config = source.config().clone();
    config.quantization_config = Some(quantization_config);
    (
        Checkpoint::from_parts(source.path().to_path_buf(), config, tensors, None),
        expected,
    )
}

fn assert_dequantized(model: &Model, expected: &BTreeMap<String, Vec<f32>>, what: &str) {
    let got = dequantized_layers(model);
    assert_eq!(got.len(), expected.len(), "{what}: quantized layers");
    for (name, want) in expected {
        for (i, (&a, &b)) in got[name].iter().zip(want).enumerate() {
            // lowbit computes scale*code - scale*zero in f32: two roundings of products below
            // 256 * 0.1 (8-bit codes, scales up to 0.1), so a few epsilons of that; a wrong code
            // or zero point is off by a whole scale, at least 0.001.
            let bound = 4.0 * f32::EPSILON * 256.0 * 0.1;
            assert!((a - b).abs() <= bound, "{what} {name}[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn gptq_layers_import_to_their_dequantized_values() {
    let seed = seed();
    for (bits, group, sym, v1) in [
        (4, 32, true, true),
        (4, 64, false, true),
        (8, -1, false, false),
    ] {
        let what = format!("GPTQ {bits}-bit group {group} sym {sym} v1 {v1}; seed {seed}");
        let config = json!({
            "quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": false,
            "sym": sym, "checkpoint_format": if v1 { "gptq" } else { "gptq_v2" },
        });
        let (checkpoint, expected) = foreign_checkpoint(
            config,
            seed,
            &|rng, out, inp| {
                let g = if group < 0 { inp } else { group as usize };
                let layer = Layer::random(rng, out, inp, bits, g, sym);
                let packed = pack_gptq(&layer, bits, v1);
                (layer, packed)
            },
            &|module, inp| {
                let g = if group < 0 { inp } else { group as usize };
                let g_idx: Vec<i32> = (0..inp).map(|k| (k / g) as i32).collect();
                vec![(
                    format!("{module}.g_idx"),
                    Tensor::from_bytes(vec![inp], Dtype::I32, bytemuck::cast_slice(&g_idx)),
                )]
            },
        );
        let model =
            Model::from_checkpoint(&checkpoint, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_dequantized(&model, &expected, &what);
        let scheme = model.linears()[0].1.weight.scheme().copied().unwrap();
        assert!(
            scheme.to_string().starts_with(&format!("w{bits}a16")),
            "{what}: {scheme}"
        );
    }
}

#[test]
fn awq_layers_import_to_their_dequantized_values() {
    let seed = seed();
    let what = format!("AWQ; seed {seed}");
    let config = json!({
        "quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": true, "version": "gemm",
    });
    let (checkpoint, expected) = foreign_checkpoint(
        config,
        seed,
        &|rng, out, inp| {
            let layer = Layer::random(rng, out, inp, 4, 32, false);
            let packed = pack_awq(&layer);
            (layer, packed)
        },
        &|_, _| Vec::new(),
    );
    let model = Model::from_checkpoint(&checkpoint, None).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_dequantized(&model, &expected, &what);
    // The imported model runs and exports onward to compressed-tensors.
    let imported = lowbit::io::import(&checkpoint).unwrap();
    compressed_tensors::export(&imported, None).unwrap();
    assert!(model
        .logits(&[1, 2, 3])
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
}

#[test]
fn inconsistent_or_unsupported_checkpoints_are_clear_errors() {
    let seed = seed();
    let gptq = |extra: ExtraTensors<'_>, config: Value| {
        foreign_checkpoint(
            config,
            seed,
            &|rng, out, inp| {
                let layer = Layer::random(rng, out, inp, 4, 32, true);
                let packed = pack_gptq(&layer, 4, true);
                (layer, packed)
            },
            extra,
        )
        .0
    };
    let base = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": true});
    let cases: Vec<(&str, Checkpoint, &str)> = vec![
        (
            "act-order g_idx",
            gptq(
                &|module, inp| {
                    // Groups in reverse order: not expressible as static groups.
                    let g_idx: Vec<i32> = (0..inp).map(|k| ((inp - 1 - k) / 32) as i32).collect();
                    vec![(
                        format!("{module}.g_idx"),
                        Tensor::from_bytes(vec![inp], Dtype::I32, bytemuck::cast_slice(&g_idx)),
                    )]
                },
                base.clone(),
            ),
            "g_idx",
        ),
        (
            "3-bit",
            gptq(
                &|_, _| Vec::new(),
                json!({"quant_method": "gptq", "bits": 3}),
            ),
            "3-bit",
        ),
        (
            "group 16",
            gptq(
                &|_, _| Vec::new(),
                json!({"quant_method": "gptq", "bits": 4, "group_size": 16}),
            ),
            "group_size 16",
        ),
        (
            "unknown method",
            gptq(&|_, _| Vec::new(), json!({"quant_method": "bitsandbytes"})),
            "not a layout lowbit reads",
        ),
        (
            "wrong scales shape",
            gptq(
                &|module, _| {
                    vec![(
                        format!("{module}.scales"),
                        Tensor::from_f32(vec![1, 1], vec![1.0]),
                    )]
                },
                json!({"quant_method": "gptq", "bits": 4, "group_size": 32}),
            ),
            "scales",
        ),
        (
            "AWQ GEMV",
            gptq(
                &|_, _| Vec::new(),
                json!({"quant_method": "awq", "version": "gemv"}),
            ),
            "version 'gemv'",
        ),
    ];
    for (what, checkpoint, needle) in cases {
        let err = match Model::from_checkpoint(&checkpoint, None) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{what}: '{err}' lacks '{needle}'");
    }
    // compressed-tensors schemes lowbit cannot run.
    let source = source();
    for (what, group, needle) in [
        (
            "static activations",
            json!({"targets": ["Linear"], "format": "pack-quantized",
                   "weights": {"num_bits": 4, "type": "int", "strategy": "channel"},
                   "input_activations": {"num_bits": 8, "type": "int", "strategy": "tensor",
                                         "dynamic": false}}),
            "dynamically",
        ),
        (
            "group 16",
            json!({"targets": ["Linear"], "format": "pack-quantized",
                   "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 16}}),
            "group_size 16",
        ),
        (
            "nvfp4",
            json!({"targets": ["Linear"], "format": "nvfp4-pack-quantized",
                   "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group"}}),
            "nvfp4-pack-quantized",
        ),
    ] {
        let mut config = source.config().clone();
        config.quantization_config = Some(json!({
            "quant_method": "compressed-tensors", "format": "pack-quantized",
            "quantization_status": "compressed", "config_groups": {"group_0": group},
        }));
        let checkpoint = Checkpoint::from_parts(
            source.path().to_path_buf(),
            config,
            source.tensors().clone(),
            None,
        );
        let err = match Model::from_checkpoint(&checkpoint, None) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{what}: '{err}' lacks '{needle}'");
    }
}

/// llm-compressor's `save_compressed=False` output: format `dense`, the weights stored
/// dequantized next to a quantization_config.
#[test]
fn dense_format_checkpoints_load_as_their_stored_floats() {
    let source = source();
    let quantized = quantize_checkpoint(
        &source,
        &QuantRules::new(QuantScheme::parse("w4a16-g32").unwrap()),
        &RtnOptions::default(),
        &mut |_, _, _| true,
    )
    .unwrap();
    let expected = Model::from_checkpoint(&quantized, None).unwrap();
    let mut tensors = source.tensors().clone();
    for (module, values) in dequantized_layers(&expected) {
        let name = format!("{module}.weight");
        let shape = tensors[&name].shape().to_vec();
        tensors.insert(name, Tensor::from_f32(shape, values));
    }
    let dense_config = |activations: Value| {
        json!({
            "quant_method": "compressed-tensors",
            "format": "dense",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 4, "type": "int", "symmetric": true,
                            "strategy": "group", "group_size": 32},
                "input_activations": activations,
            }},
            "ignore": ["lm_head"],
        })
    };
    let with = |q: Value| {
        let mut config = source.config().clone();
        config.quantization_config = Some(q);
        Checkpoint::from_parts(source.path().to_path_buf(), config, tensors.clone(), None)
    };
    let model = Model::from_checkpoint(&with(dense_config(Value::Null)), None).unwrap();
    assert!(
        model
            .linears()
            .iter()
            .all(|(_, l)| matches!(l.weight, Weight::Dense(_))),
        "dense format loads dense weights"
    );
    let ids = prompt(&reference());
    let diff = max_abs_diff(
        &model.logits(&ids).unwrap(),
        &expected.logits(&ids).unwrap(),
    );
    assert!(
        diff < 1e-3,
        "dense copy vs quantized model: max abs diff {diff}"
    );
    // Activation quantization cannot be kept by a float load: refused.
    let activations = json!({"num_bits": 8, "type": "int", "symmetric": true,
                             "strategy": "token", "dynamic": true});
    let err = Model::from_checkpoint(&with(dense_config(activations)), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("activation quantization would be lost"),
        "{err}"
    );
}
