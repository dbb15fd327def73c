//! The evaluation engine and tasks: request scoring against a direct computation, the harness'
//! rolling windows and few-shot draws, data readers on files in each set's published format,
//! and every task end to end on a tiny model.

use std::path::{Path, PathBuf};

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::checkpoint::Checkpoint;
use lowbit::eval::engine::token_logprob;
use lowbit::eval::tasks::{arc_item, gsm8k_prompts, hellaswag_item, score_choices, Choice};
use lowbit::eval::{run_task, Request, Scorer, TaskOptions};
use lowbit::model::Model;

/// Log-likelihood difference allowed between the engine (shared prefixes, batches, chunks) and
/// one full forward pass: f32 summation order over a few dozen tokens (~1e-6 observed).
const LOGPROB_TOLERANCE: f64 = 1e-4;

fn tiny_model() -> Model {
    // The SmolLM2-shaped synthetic Llama with a tokenizer-free config: scored on token ids.
    Model::from_checkpoint(&synthetic::build(Variant::LlamaGqa, 11), None).unwrap()
}

fn direct(model: &Model, request: &Request) -> (f64, bool) {
    let mut tokens = request.context.clone();
    tokens.extend_from_slice(&request.continuation[..request.continuation.len() - 1]);
    let logits = model.logits(&tokens).unwrap();
    let vocab = model.config().vocab_size;
    let first = request.context.len() - 1;
    let mut total = 0.0;
    let mut greedy = true;
    for (i, &target) in request.continuation.iter().enumerate() {
        let row = &logits[(first + i) * vocab..(first + i + 1) * vocab];
        let (lp, g) = token_logprob(row, target);
        total += lp;
        greedy &= g;
    }
    (total, greedy)
}

#[test]
fn engine_matches_a_direct_forward_pass() {
    let model = tiny_model();
    let mut scorer = Scorer::new(&model);
    scorer.chunk = 3;
    let ctx_a: Vec<u32> = vec![5, 17, 99, 3, 200, 41, 7];
    let requests = vec![
        Request {
            context: ctx_a.clone(),
            continuation: vec![8],
        },
        Request {
            context: ctx_a.clone(),
            continuation: vec![9, 10, 11, 12, 13],
        },
        Request {
            context: vec![1],
            continuation: vec![50, 60],
        },
        Request {
            context: ctx_a,
            continuation: vec![100, 101],
        },
    ];
    let scored = scorer.loglikelihood(&requests, &mut |_, _| {}).unwrap();
    for (r, s) in requests.iter().zip(&scored) {
        let (lp, greedy) = direct(&model, r);
        assert!(
            (lp - s.logprob).abs() < LOGPROB_TOLERANCE,
            "{lp} vs {}",
            s.logprob
        );
        assert_eq!(greedy, s.is_greedy);
    }
    // Truncation: with max_length 4 only the last 5 tokens of context + continuation count.
    scorer.max_length = 4;
    let long = Request {
        context: vec![1, 2, 3, 4, 5, 6],
        continuation: vec![7, 8],
    };
    let truncated = Request {
        context: vec![4, 5, 6],
        continuation: vec![7, 8],
    };
    let a = scorer.loglikelihood(&[long], &mut |_, _| {}).unwrap();
    let (b, _) = direct(&model, &truncated);
    assert!((a[0].logprob - b).abs() < LOGPROB_TOLERANCE);
    // Empty requests are errors.
    let empty = Request {
        context: vec![],
        continuation: vec![1],
    };
    assert!(scorer.loglikelihood(&[empty], &mut |_, _| {}).is_err());
}

#[test]
fn rolling_windows_are_the_harness_windows() {
    let model = tiny_model();
    let mut scorer = Scorer::new(&model);
    scorer.max_length = 4;
    // lm_eval.utils.get_rolling_token_windows(range(10), prefix_token=99, max_seq_len=4,
    // context_len=1) through make_disjoint_window:
    // [([99], [0, 1, 2, 3]), ([3], [4, 5, 6, 7]), ([5, 6, 7], [8, 9])]
    let tokens: Vec<u32> = (0..10).collect();
    let windows = scorer.rolling_windows(&tokens, 99);
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = windows
        .into_iter()
        .map(|w| (w.context, w.continuation))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (vec![99], vec![0, 1, 2, 3]),
            (vec![3], vec![4, 5, 6, 7]),
            (vec![5, 6, 7], vec![8, 9]),
        ]
    );
    assert!(scorer.rolling_windows(&[], 99).is_empty());
}

#[test]
fn three_choice_item_by_hand() {
    // Metric logic on known log-likelihoods: [-3, -4, -5] over choices of 1, 4 and 6
    // characters: acc picks 0 (largest), acc_norm picks 2 (-5/6 > -4/4 > -3/1).
    let lls = [-3.0, -4.0, -5.0];
    let lens = [1.0, 4.0, 6.0];
    let norm: Vec<f64> = lls.iter().zip(lens).map(|(l, n)| l / n).collect();
    assert_eq!(lowbit::eval::metrics::argmax(&lls), 0);
    assert_eq!(lowbit::eval::metrics::argmax(&norm), 2);
}

#[test]
fn gsm8k_fewshot_draws_follow_python_random() {
    // python3 -c "import random; r=random.Random(1234);
    //             print([r.sample(range(50), 5) for _ in range(2)])"
    // -> [[49, 28, 7, 0, 5], [37, 2, 42, 44, 5]]
    let train: Vec<(String, String)> = (0..50)
        .map(|i| (format!("q{i}"), format!("a{i}\n#### {i}")))
        .collect();
    let prompts = gsm8k_prompts("gsm8k", &["first?", "second?"], &train, 5, 1234).unwrap();
    let order = |p: &str| -> Vec<usize> {
        p.split("Question: q")
            .skip(1)
            .map(|s| s.split('\n').next().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(order(&prompts[0]), vec![49, 28, 7, 0, 5]);
    assert_eq!(order(&prompts[1]), vec![37, 2, 42, 44, 5]);
    assert!(prompts[0].starts_with("Question: q49\nAnswer: a49\n#### 49\n\nQuestion: q28"));
    assert!(prompts[1].ends_with("\n\nQuestion: second?\nAnswer:"));
    let cot = gsm8k_prompts("gsm8k_cot", &["x?"], &[], 8, 1234).unwrap();
    assert!(cot[0].starts_with("Q: There are 15 trees"));
    assert!(cot[0].ends_with("The answer is 8.\n\nQ: x?\nA:"));
    assert!(gsm8k_prompts("gsm8k", &["x"], &train[..2], 5, 1).is_err());
}

#[test]
fn published_record_layouts() {
    let p = Path::new("arc.jsonl");
    let ai2: serde_json::Value = serde_json::from_str(
        r#"{"id":"x","question":{"stem":"Which is hot?","choices":[{"text":"ice","label":"A"},{"text":"fire","label":"B"}]},"answerKey":"B"}"#,
    )
    .unwrap();
    let hub: serde_json::Value = serde_json::from_str(
        r#"{"id":"x","question":"Which is hot?","choices":{"text":["ice","fire"],"label":["A","B"]},"answerKey":"B"}"#,
    )
    .unwrap();
    let expected = Choice {
        context: "Question: Which is hot?\nAnswer:".into(),
        choices: vec!["ice".into(), "fire".into()],
        gold: 1,
    };
    assert_eq!(arc_item(p, 1, &ai2).unwrap(), expected);
    assert_eq!(arc_item(p, 1, &hub).unwrap(), expected);
    let bad: serde_json::Value =
        serde_json::from_str(r#"{"question":"q","answerKey":"B"}"#).unwrap();
    assert!(arc_item(p, 7, &bad)
        .unwrap_err()
        .to_string()
        .contains("line 7"));

    // HellaSwag: ctx_b capitalized (rest lower-cased), " [title]" -> ". ", brackets dropped.
    let hs: serde_json::Value = serde_json::from_str(
        r#"{"activity_label":"Baking","ctx_a":"A man [step] mixes flour.","ctx_b":"then HE","endings":["bakes [title] it.","eats it."],"label":"1"}"#,
    )
    .unwrap();
    let item = hellaswag_item(p, 1, &hs).unwrap();
    assert_eq!(item.context, "Baking: A man mixes flour. Then he");
    assert_eq!(item.choices, vec!["bakes. it.", "eats it."]);
    assert_eq!(item.gold, 1);
}

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lowbit-eval-data-{}", std::process::id()));
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "gsm8k/test.jsonl",
        "{\"question\": \"What is 2 + 3?\", \"answer\": \"2 + 3 = 5\\n#### 5\"}\n\
         {\"question\": \"What is 10 - 4?\", \"answer\": \"#### 6\"}\n",
    );
    write(
        "gsm8k/train.jsonl",
        &(0..8)
            .map(|i| format!("{{\"question\": \"q{i}\", \"answer\": \"#### {i}\"}}\n"))
            .collect::<String>(),
    );
    write(
        "arc/ARC-Easy-Test.jsonl",
        r#"{"id":"1","question":{"stem":"Which is hot?","choices":[{"text":"ice","label":"A"},{"text":"fire","label":"B"},{"text":"snow","label":"C"}]},"answerKey":"B"}
"#,
    );
    write(
        "hellaswag/hellaswag_val.jsonl",
        r#"{"activity_label":"Baking","ctx_a":"A man mixes flour.","ctx_b":"then he","endings":["bakes it.","eats it.","sings.","runs."],"label":0}
"#,
    );
    write(
        "mmlu/test/high_school_math_test.csv",
        "What is 1+1?,1,2,3,4,B\n\"Pick \"\"C\"\"\",a,b,c,d,C\n",
    );
    write(
        "mmlu/dev/high_school_math_dev.csv",
        "What is 0+0?,0,1,2,3,A\n",
    );
    write(
        "lambada/lambada_test.jsonl",
        "{\"text\": \"the cat sat on the mat\"}\n",
    );
    write(
        "wikitext/wiki.test.raw",
        " \n = Title = \n \n The cat @-@ dog sat . \n = Other = \n More text , here . \n",
    );
    write(
        "plain.txt",
        "A small text to score, twice. A small text to score.",
    );
    dir
}

#[test]
fn every_task_runs_on_local_files() {
    // A real tokenizer is needed for text tasks: the synthetic checkpoints carry none, so the
    // committed SmolLM2 tokenizer is attached to the tiny model (ids folded into its vocabulary).
    let model = tiny_model_with_tokenizer();
    let scorer = Scorer::new(&model);
    let dir = data_dir();
    let mut options = TaskOptions {
        data_dir: dir.clone(),
        max_gen_tokens: 8,
        context_length: 8,
        stride: 4,
        ..Default::default()
    };
    for task in [
        "wikitext",
        "arc_easy",
        "hellaswag",
        "mmlu",
        "lambada_openai",
        "gsm8k",
        "gsm8k_cot",
    ] {
        let r = run_task(&scorer, task, &options).unwrap_or_else(|e| panic!("{task}: {e}"));
        assert!(r.documents > 0, "{task}");
        assert!(!r.metrics.is_empty(), "{task}");
        for (k, v) in &r.metrics {
            assert!(v.is_finite(), "{task} {k} = {v}");
        }
    }
    let text = run_task(
        &scorer,
        &format!("text:{}", dir.join("plain.txt").display()),
        &options,
    )
    .unwrap();
    assert!(text.metrics["token_perplexity"] > 1.0);
    options.num_fewshot = Some(1);
    let mmlu = run_task(&scorer, "mmlu", &options).unwrap();
    assert_eq!(mmlu.num_fewshot, 1);
    assert!(mmlu.metrics.contains_key("acc,high_school_math"));
    // Missing and malformed data name the file and line.
    let err = run_task(&scorer, "arc_challenge", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ARC-Challenge"), "{err}");
    std::fs::write(dir.join("lambada/lambada_test.jsonl"), "{\"text\": 1}\n").unwrap();
    let err = run_task(&scorer, "lambada_openai", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(run_task(&scorer, "nope", &options).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn tiny_model_with_tokenizer() -> Model {
    let base = synthetic::build(Variant::LlamaGqa, 11);
    let checkpoint = Checkpoint::from_parts(
        base.path().to_path_buf(),
        base.config().clone(),
        base.tensors().clone(),
        Some(synthetic::byte_tokenizer_json()),
    );
    Model::from_checkpoint(&checkpoint, None).unwrap()
}

#[test]
fn byte_tokenizer_round_trips() {
    let model = tiny_model_with_tokenizer();
    let tok = model.require_tokenizer().unwrap();
    let text = "Héllo, wörld! 12";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
}

#[test]
fn choices_are_scored_as_their_requests() {
    let model = tiny_model_with_tokenizer();
    let scorer = Scorer::new(&model);
    let item = Choice {
        context: "Question: x?\nAnswer:".into(),
        choices: vec!["a".into(), "bb".into(), "ccc".into()],
        gold: 1,
    };
    let result = score_choices(&scorer, std::slice::from_ref(&item)).unwrap();
    let lls: Vec<f64> =
        serde_json::from_value(result.samples[0]["loglikelihoods"].clone()).unwrap();
    for (c, ll) in item.choices.iter().zip(&lls) {
        let request =
            lowbit::eval::tasks::encode_pair(&scorer, &item.context, &format!(" {c}")).unwrap();
        let (expected, _) = direct(&model, &request);
        assert!((expected - ll).abs() < LOGPROB_TOLERANCE);
    }
    let pred = lowbit::eval::metrics::argmax(&lls);
    assert_eq!(result.metrics["acc"], f64::from(pred == 1));
}
