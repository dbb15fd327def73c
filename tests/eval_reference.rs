//! lowbit's scores of the default model against lm-evaluation-harness 0.4.13 on the same model,
//! tokenizer and data (tests/reference/eval_reference.py, run with transformers in float32; its
//! numbers are in tests/fixtures/reference/eval.json). Data: tests/fixtures/eval, in each
//! benchmark's published file format. Both sides use max_length 512.

use std::path::{Path, PathBuf};

use lowbit::checkpoint::default_model;
use lowbit::eval::{run_task, Scorer, TaskOptions, TaskResult};
use lowbit::model::Model;
use serde_json::Value;

/// Relative agreement required of perplexities: four significant digits.
const PERPLEXITY_RELATIVE: f64 = 5e-5;
/// Per-choice log-likelihoods: f32 summation order differs from PyTorch's (~1e-5 observed).
const LOGLIKELIHOOD_ABSOLUTE: f64 = 2e-3;
/// Share of multiple-choice items whose predicted choice must be identical.
const SAME_CHOICE: f64 = 0.99;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("reference/eval.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run(model: &Model, task: &str, fewshot: Option<usize>, limit: Option<usize>) -> TaskResult {
    let mut scorer = Scorer::new(model);
    scorer.max_length = 512;
    let options = TaskOptions {
        data_dir: root().join("eval"),
        num_fewshot: fewshot,
        limit,
        context_length: 256,
        stride: 128,
        max_length: Some(512),
        ..Default::default()
    };
    run_task(&scorer, task, &options).unwrap_or_else(|e| panic!("{task}: {e}"))
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * b.abs()
}

fn check_choices(ours: &TaskResult, reference: &Value, name: &str) {
    let samples = &reference["samples"].as_array().unwrap()[..ours.samples.len()];
    let mut same = 0;
    let mut worst = 0f64;
    for (a, b) in ours.samples.iter().zip(samples) {
        same += usize::from(a["pred"] == b["pred"] && a["pred_norm"] == b["pred_norm"]);
        for (x, y) in a["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["loglikelihoods"].as_array().unwrap())
        {
            worst = worst.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
        }
    }
    let share = same as f64 / samples.len() as f64;
    eprintln!(
        "{name}: same choice on {same}/{} items, max |delta ll| {worst:.2e}",
        samples.len()
    );
    assert!(share >= SAME_CHOICE, "{name}: {share}");
    assert!(worst < LOGLIKELIHOOD_ABSOLUTE, "{name}: {worst}");
    // The harness' accuracy over the same items, from its per-item predictions.
    let gold: Vec<u64> = ours
        .samples
        .iter()
        .map(|s| s["target"].as_u64().unwrap())
        .collect();
    for (metric, key) in [("acc", "pred"), ("acc_norm", "pred_norm")] {
        let Some(&value) = ours.metrics.get(metric) else {
            continue;
        };
        let hits = samples
            .iter()
            .zip(&gold)
            .filter(|(s, &g)| s[key].as_u64() == Some(g))
            .count();
        let expected = hits as f64 / samples.len() as f64;
        assert!(
            (value - expected).abs() < 1e-12,
            "{name} {metric}: {value} vs {expected}"
        );
    }
}

#[test]
fn scores_match_lm_evaluation_harness() {
    let dir = default_model::ensure().unwrap_or_else(|e| panic!("default model: {e}"));
    let model = Model::load(dir).unwrap();
    let reference = reference();
    let tasks = &reference["tasks"];

    check_choices(
        &run(&model, "arc_easy", None, None),
        &tasks["arc_easy"],
        "arc_easy",
    );
    let mmlu0 = run(&model, "mmlu", Some(0), None);
    check_choices(&mmlu0, &tasks["mmlu_0shot"], "mmlu 0-shot");
    // Five-shot prompts are ~500 tokens: the first 10 items keep the test short.
    let mmlu5 = run(&model, "mmlu", Some(5), Some(10));
    check_choices(&mmlu5, &tasks["mmlu_5shot"], "mmlu 5-shot");

    let lambada = run(&model, "lambada_openai", None, None);
    let lref = &tasks["lambada_openai"];
    let same_greedy = lambada
        .samples
        .iter()
        .zip(lref["samples"].as_array().unwrap())
        .filter(|(a, b)| a["is_greedy"] == b["is_greedy"])
        .count();
    assert!(same_greedy as f64 >= SAME_CHOICE * lambada.samples.len() as f64);
    let ppl = lambada.metrics["perplexity"];
    eprintln!("lambada perplexity {ppl} vs {}", lref["perplexity"]);
    assert!(close(
        ppl,
        lref["perplexity"].as_f64().unwrap(),
        PERPLEXITY_RELATIVE
    ));

    let text_path = root().join("eval/text.txt");
    let text = run(&model, &format!("text:{}", text_path.display()), None, None);
    for metric in [
        "word_perplexity",
        "byte_perplexity",
        "bits_per_byte",
        "token_perplexity",
    ] {
        let r = tasks["text"][metric].as_f64().unwrap();
        eprintln!("text {metric}: {} vs {r}", text.metrics[metric]);
        assert!(
            close(text.metrics[metric], r, PERPLEXITY_RELATIVE),
            "{metric}"
        );
    }

    let gsm = run(&model, "gsm8k_cot", None, None);
    let gref = &tasks["gsm8k_cot"];
    let mut identical = 0;
    for (a, b) in gsm.samples.iter().zip(gref["samples"].as_array().unwrap()) {
        identical += usize::from(a["response"] == b["response"]);
        assert_eq!(a["strict"], b["strict"]);
        assert_eq!(a["flexible"], b["flexible"]);
    }
    eprintln!(
        "gsm8k_cot: {identical}/{} responses identical",
        gsm.samples.len()
    );
    for metric in ["exact_match,strict-match", "exact_match,flexible-extract"] {
        assert_eq!(
            gsm.metrics[metric],
            gref[metric].as_f64().unwrap(),
            "{metric}"
        );
    }
}
