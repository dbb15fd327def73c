//! Quantization studies (`lowbit::study`): the matrix runs end to end on the tiny synthetic
//! model, finished cells are reused and a missing one is recomputed alone, and the report's
//! layout is pinned by insta snapshots (of results with fixed numbers, since timings and the
//! last digits of scores differ between machines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lowbit::study::report::{csv, markdown, write_all};
use lowbit::study::{plan, run, Cell, CellResult, StudyConfig};

/// The synthetic llama_gqa checkpoint with a byte-level tokenizer, in `dir`.
fn synthetic(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic/llama_gqa");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(source.join(file), model.join(file)).unwrap();
    }
    std::fs::write(
        model.join("tokenizer.json"),
        lowbit::checkpoint::synthetic::byte_tokenizer_json(),
    )
    .unwrap();
    model
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-study-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny_study(out: &Path) -> StudyConfig {
    let text = format!(
        r#"
models = ["{model}"]
methods = ["rtn", "gptq"]
schemes = ["w4a16-g32", "w8a16"]
output = "{out}"
[calibration]
budgets = [4, 8]
seq_len = 32
[tasks]
names = ["text:builtin", "arc_easy"]
limit = 4
context = 64
[efficiency]
prompt_tokens = 8
decode_tokens = 4
"#,
        model = synthetic(out).display(),
        out = out.display()
    );
    StudyConfig::from_toml(&text, Path::new("tiny.toml")).unwrap()
}

#[test]
fn study_runs_caches_and_resumes() {
    let out = temp_dir("tiny");
    let config = tiny_study(&out);
    let cells = plan(&config);
    // baseline + rtn x 2 schemes + gptq x 2 schemes x 2 budgets
    assert_eq!(cells.len(), 7);
    let mut events: Vec<String> = Vec::new();
    let first = run(&config, &mut |_, _, cell, what| {
        events.push(format!("{} {what}", cell.label()))
    })
    .unwrap();
    assert_eq!(first.len(), 7);
    assert!(!events.iter().any(|e| e.ends_with("cached")), "{events:?}");
    for r in &first {
        assert_eq!(r.metrics.len(), 2, "{}", r.cell.label());
        assert!(r.decode_tokens_per_s > 0.0 && r.ttft_s > 0.0);
    }
    let bits: BTreeMap<String, f64> = first
        .iter()
        .map(|r| (r.cell.label(), r.bits_per_weight))
        .collect();
    assert_eq!(bits["baseline"], 32.0, "the synthetic model is f32");
    // int4 codes plus an f16 scale per 32 weights: 4.5 bits.
    assert!((bits["rtn w4a16-g32"] - 4.5).abs() < 1e-9, "{bits:?}");
    // int8 codes plus one f16 scale per row of 64 or 128 inputs: between 8.125 and 8.25.
    assert!((8.125..=8.25).contains(&bits["rtn w8a16"]), "{bits:?}");

    // Everything cached on a second run, with identical results.
    events.clear();
    let second = run(&config, &mut |_, _, cell, what| {
        events.push(format!("{} {what}", cell.label()))
    })
    .unwrap();
    assert_eq!(events.iter().filter(|e| e.ends_with("cached")).count(), 7);
    // (Compared after the same JSON round trip the cache files take.)
    let reread: Vec<CellResult> =
        serde_json::from_str(&serde_json::to_string(&first).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_string(&reread).unwrap(),
        serde_json::to_string(&second).unwrap()
    );

    // An interrupted study: one cell's file is gone; only that cell runs again.
    let lost = out.join("cells").join(format!("{}.json", first[3].key));
    std::fs::remove_file(&lost).unwrap();
    events.clear();
    run(&config, &mut |_, _, cell, what| {
        events.push(format!("{} {what}", cell.label()))
    })
    .unwrap();
    let recomputed: Vec<&String> = events.iter().filter(|e| e.ends_with("scoring")).collect();
    assert_eq!(recomputed.len(), 1, "{events:?}");
    assert!(recomputed[0].starts_with(&first[3].cell.label()));

    let written = write_all(&first, &out).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["results.json", "results.csv", "report.md"] {
        assert!(names.contains(&expected.to_string()), "{names:?}");
    }
    // A Pareto plot per task, a calibration plot per task (gptq has budgets).
    assert_eq!(names.iter().filter(|n| n.starts_with("pareto-")).count(), 2);
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("calibration-"))
            .count(),
        2
    );
    let csv_text = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv_text.lines().count(), 8, "header and one row per cell");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bad_study_files_are_clear_errors() {
    let out = temp_dir("bad");
    let mut config = tiny_study(&out);
    config.models = vec!["/nonexistent/model".into()];
    let err = run(&config, &mut |_, _, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    let mut config = tiny_study(&out);
    config.tasks.names = vec!["not_a_task".into()];
    let err = run(&config, &mut |_, _, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("not_a_task"), "{err}");
    let _ = std::fs::remove_dir_all(out);
}

/// Results with fixed numbers, shaped like the tiny study's.
fn fixed_results() -> Vec<CellResult> {
    let cell = |method: &str, scheme: Option<&str>, samples: Option<usize>| Cell {
        model: "tiny".into(),
        method: method.into(),
        scheme: scheme.map(String::from),
        samples,
    };
    let result = |cell: Cell, bits: f64, ppl: f64, acc: f64| CellResult {
        key: format!("{:016x}", (bits * 1000.0) as u64 + (ppl * 10.0) as u64),
        metrics: BTreeMap::from([
            (
                "text:data/text.txt".to_string(),
                BTreeMap::from([
                    ("token_perplexity".to_string(), ppl),
                    ("word_perplexity".to_string(), ppl * 3.0),
                ]),
            ),
            (
                "arc_easy".to_string(),
                BTreeMap::from([("acc".to_string(), acc), ("acc_norm".to_string(), acc)]),
            ),
        ]),
        // Accuracy over 40 documents: the harness' standard error.
        stderr: BTreeMap::from([(
            "arc_easy".to_string(),
            BTreeMap::from([("acc".to_string(), (acc * (1.0 - acc) / 39.0).sqrt())]),
        )]),
        linear_bytes: (bits * 1e6) as u64,
        bits_per_weight: bits,
        model_bytes: (bits * 2e6) as u64,
        quantize_s: 1.0,
        eval_s: 2.0,
        ttft_s: 0.01,
        prefill_tokens_per_s: 800.0,
        decode_tokens_per_s: 40.0 * 32.0 / bits,
        batch_decode_tokens_per_s: Some(400.0 * 32.0 / bits),
        peak_rss_bytes: Some(500_000_000),
        device: "CPU".to_string(),
        cell,
    };
    vec![
        result(cell("baseline", None, None), 32.0, 6.1, 0.5),
        result(cell("rtn", Some("w4a16-g32"), None), 4.5, 9.0, 0.45),
        result(cell("rtn", Some("w8a16"), None), 8.0, 6.15, 0.5),
        result(cell("gptq", Some("w4a16-g32"), Some(4)), 4.5, 7.4, 0.475),
        result(cell("gptq", Some("w4a16-g32"), Some(8)), 4.5, 7.2, 0.5),
    ]
}

/// One device for every cell is a sentence; cells on different devices are listed each.
#[test]
fn report_names_where_cells_ran() {
    let mut results = fixed_results();
    let one = markdown(&results);
    assert!(one.contains("\nScored and timed on CPU.\n"), "{one}");
    for r in &mut results {
        r.device = "GPU-X (CUDA)".to_string();
    }
    results[2].device = "CPU (int8 activations)".to_string();
    let mixed = markdown(&results);
    assert!(!mixed.contains("Scored and timed on CPU."), "{mixed}");
    let label = results[2].cell.label();
    assert!(
        mixed.contains(&format!("- {label}: CPU (int8 activations)\n")),
        "{mixed}"
    );
    assert!(
        mixed.contains(&format!("- {}: GPU-X (CUDA)\n", results[0].cell.label())),
        "{mixed}"
    );
    let table = csv(&results);
    assert!(
        table.lines().next().unwrap().ends_with(",device"),
        "{table}"
    );
    assert!(table.contains(",CPU (int8 activations)\n"), "{table}");
}

#[test]
fn report_layout_is_pinned() {
    let results = fixed_results();
    insta::assert_snapshot!("report_markdown", markdown(&results));
    insta::assert_snapshot!("report_csv", csv(&results));
    let plots = lowbit::study::plot::plots(&results);
    let names: Vec<&str> = plots.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "pareto-arc_easy.svg",
            "calibration-arc_easy.svg",
            "pareto-text_text_txt.svg",
            "calibration-text_text_txt.svg"
        ]
    );
    for (name, svg) in &plots {
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}"
        );
    }
    // Every cell is a point of the Pareto plots.
    assert_eq!(plots[0].1.matches("<circle").count(), results.len());
}

#[test]
fn recommendation_counts_a_drop_within_the_noise_as_close() {
    let mut results = fixed_results();
    // Both GPTQ cells score below RTN here.
    for (r, acc) in results[3..].iter_mut().zip([0.40, 0.42]) {
        r.metrics
            .get_mut("arc_easy")
            .unwrap()
            .insert("acc".into(), acc);
    }
    let verdict = |results: &[CellResult]| {
        let md = markdown(results);
        md.lines()
            .find(|l| l.starts_with("- **arc_easy**"))
            .unwrap_or_else(|| panic!("no arc_easy recommendation in\n{md}"))
            .to_string()
    };
    // With 40 documents the 5-point drop of rtn w4a16-g32 is noise (about ±22 points at 95%), so the
    // 4.5-bit cell is recommended and the line says why.
    let noisy = verdict(&results);
    assert!(noisy.contains("rtn w4a16-g32 at 4.50"), "{noisy}");
    assert!(noisy.contains("within the noise"), "{noisy}");
    // With errors 20x smaller the same drop is real: the smallest cell within 1 point is
    // w8a16, which matches the baseline.
    for r in &mut results {
        for se in r.stderr.values_mut().flat_map(|m| m.values_mut()) {
            *se /= 20.0;
        }
    }
    let precise = verdict(&results);
    assert!(precise.contains("rtn w8a16 at 8.00"), "{precise}");
    assert!(precise.contains("within the slack"), "{precise}");
    // Without any standard error the slack alone decides, as before.
    for r in &mut results {
        r.stderr.clear();
    }
    assert_eq!(verdict(&results), precise);
}

#[test]
fn the_command_line_runs_a_study_file() {
    let out = temp_dir("cli");
    let model = synthetic(&out);
    let file = out.join("study.toml");
    std::fs::write(
        &file,
        format!(
            r#"
models = ["{}"]
cells = ["rtn w8a16"]
[tasks]
names = ["arc_easy"]
limit = 2
[efficiency]
prompt_tokens = 4
decode_tokens = 2
batch = 2
"#,
            model.display()
        ),
    )
    .unwrap();
    let report_dir = out.join("report");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .arg("study")
        .arg(&file)
        .arg("--out")
        .arg(&report_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(report.contains("| rtn w8a16 |"), "{report}");
    let csv = std::fs::read_to_string(report_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let _ = std::fs::remove_dir_all(out);
}
