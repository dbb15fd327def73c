//! The tasks: how documents become requests, and requests become scores, following each
//! task's definition in lm-evaluation-harness 0.4 (prompts, target delimiter `" "`, few-shot
//! delimiter `"\n\n"`, metrics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use regex::Regex;
use serde_json::{json, Value};

use super::data::{field, find, read_csv, read_jsonl, read_wikitext, select};
use super::engine::{Request, Scorer};
use super::metrics::{
    argmax, bits_per_byte, count_words, gsm8k_exact_match, mean_stderr, weighted_perplexity,
    RegexFilter,
};
use super::pyrandom::PyRandom;
use crate::error::{Error, Result};
use crate::model::{GenerateParams, TextStream};

/// Every task name [`run_task`] accepts.
pub const TASKS: &[&str] = &[
    "wikitext",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "mmlu",
    "lambada_openai",
    "gsm8k",
    "gsm8k_cot",
];

/// Options shared by every task.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// Folder holding the data sets (see each task for the file names looked for).
    pub data_dir: PathBuf,
    /// Score at most this many documents.
    pub limit: Option<usize>,
    /// With `limit`: pick a seeded random subset instead of the first documents.
    pub subsample_seed: Option<u64>,
    /// Few-shot examples (`None`: the task's default: 0, gsm8k 5, gsm8k_cot 8).
    pub num_fewshot: Option<usize>,
    /// Seed of the few-shot sampler (the harness' default is 1234).
    pub fewshot_seed: u64,
    /// Token perplexity of `text:` tasks: window length and stride.
    pub context_length: usize,
    /// Token perplexity stride (`== context_length`: disjoint windows, as GPTQ/AWQ report).
    pub stride: usize,
    /// Greedy generation budget of generative tasks (the harness' default is 256).
    pub max_gen_tokens: usize,
    /// Keep per-document records.
    pub keep_samples: bool,
    /// Longest model input (`None`: the model's `max_position_embeddings`, as the harness).
    pub max_length: Option<usize>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            data_dir: PathBuf::from("data"),
            limit: None,
            subsample_seed: None,
            num_fewshot: None,
            fewshot_seed: 1234,
            context_length: 2048,
            stride: 2048,
            max_gen_tokens: 256,
            keep_samples: true,
            max_length: None,
        }
    }
}

/// The scores of one task.
#[derive(Clone, Debug)]
pub struct TaskResult {
    /// Task name.
    pub task: String,
    /// Metric values, named as the harness names them (`acc`, `acc_norm`, `word_perplexity`,
    /// `exact_match,strict-match`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Standard errors where the harness reports one.
    pub stderr: BTreeMap<String, f64>,
    /// Documents scored.
    pub documents: usize,
    /// Few-shot examples used.
    pub num_fewshot: usize,
    /// Tokens run through the model (scored or generated).
    pub tokens: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Per-document records.
    pub samples: Vec<Value>,
}

/// Runs the task `name` (one of [`TASKS`], or `text:PATH` for any text file).
pub fn run_task(scorer: &Scorer<'_>, name: &str, options: &TaskOptions) -> Result<TaskResult> {
    let started = Instant::now();
    let mut result = if let Some(path) = name.strip_prefix("text:") {
        text_perplexity(scorer, Path::new(path), options)?
    } else {
        match name {
            "wikitext" => wikitext(scorer, options)?,
            "arc_easy" | "arc_challenge" => arc(scorer, name, options)?,
            "hellaswag" => hellaswag(scorer, options)?,
            "mmlu" => mmlu(scorer, options)?,
            "lambada_openai" => lambada(scorer, options)?,
            "gsm8k" | "gsm8k_cot" => gsm8k(scorer, name, options)?,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown task '{other}' (known: {}, or text:PATH)",
                    TASKS.join(", ")
                )))
            }
        }
    };
    result.task = name.to_string();
    result.seconds = started.elapsed().as_secs_f64();
    if !options.keep_samples {
        result.samples.clear();
    }
    Ok(result)
}

fn empty_result(documents: usize, num_fewshot: usize) -> TaskResult {
    TaskResult {
        task: String::new(),
        metrics: BTreeMap::new(),
        stderr: BTreeMap::new(),
        documents,
        num_fewshot,
        tokens: 0,
        seconds: 0.0,
        samples: Vec::new(),
    }
}

fn encode(scorer: &Scorer<'_>, text: &str) -> Result<Vec<u32>> {
    scorer.model().require_tokenizer()?.encode(text, true)
}

/// The harness' `_encode_pair`: trailing spaces move from the context to the continuation; the
/// whole string is encoded and split at the context's token count.
pub fn encode_pair(scorer: &Scorer<'_>, context: &str, continuation: &str) -> Result<Request> {
    if context.is_empty() {
        return Ok(Request {
            context: vec![scorer.prefix_token()?],
            continuation: encode(scorer, continuation)?,
        });
    }
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = encode(scorer, &format!("{trimmed}{continuation}"))?;
    let context_tokens = encode(scorer, trimmed)?;
    let split = context_tokens.len().min(whole.len());
    Ok(Request {
        context: whole[..split].to_vec(),
        continuation: whole[split..].to_vec(),
    })
}

// ---------------------------------------------------------------------------------------------
// Perplexity

fn wikitext_detokenize(page: &str) -> String {
    let mut s = page.replace("s '", "s'");
    // The harness' r"/' [0-9]/" pattern matches literal slashes; kept for fidelity.
    s = Regex::new(r"/' [0-9]/")
        .expect("fixed pattern")
        .replace_all(&s, "/'[0-9]/")
        .into_owned();
    for (from, to) in [
        (" @-@ ", "-"),
        (" @,@ ", ","),
        (" @.@ ", "."),
        (" : ", ": "),
        (" ; ", "; "),
        (" . ", ". "),
        (" ! ", "! "),
        (" ? ", "? "),
        (" , ", ", "),
    ] {
        s = s.replace(from, to);
    }
    for (pattern, replacement) in [
        (r"\(\s*([^\)]*?)\s*\)", "($1)"),
        (r"\[\s*([^\]]*?)\s*\]", "[$1]"),
        (r"\{\s*([^}]*?)\s*\}", "{$1}"),
        (r#""\s*([^"]*?)\s*""#, "\"$1\""),
        (r"'\s*([^']*?)\s*'", "'$1'"),
    ] {
        s = Regex::new(pattern)
            .expect("fixed pattern")
            .replace_all(&s, replacement)
            .into_owned();
    }
    for (from, to) in [
        ("= = = =", "===="),
        ("= = =", "==="),
        ("= =", "=="),
        (" \u{b0} ", "\u{b0}"),
        (" \n", "\n"),
        ("\n ", "\n"),
        (" N ", " 1 "),
        (" 's", "'s"),
    ] {
        s = s.replace(from, to);
    }
    s
}

/// Rolling log-likelihood of documents: word/byte perplexity and bits per byte.
fn document_perplexity(scorer: &Scorer<'_>, documents: &[(String, String)]) -> Result<TaskResult> {
    let mut result = empty_result(documents.len(), 0);
    let mut words = Vec::new();
    let mut bytes = Vec::new();
    for (i, (original, scored_text)) in documents.iter().enumerate() {
        let tokens = encode(scorer, scored_text)?;
        let ll = scorer.rolling_loglikelihood(&tokens)?;
        result.tokens += tokens.len();
        words.push((ll, count_words(original)));
        bytes.push((ll, original.len()));
        result.samples.push(json!({
            "doc_id": i, "loglikelihood": ll, "tokens": tokens.len(),
            "words": count_words(original), "bytes": original.len(),
        }));
    }
    result
        .metrics
        .insert("word_perplexity".into(), weighted_perplexity(&words));
    result
        .metrics
        .insert("byte_perplexity".into(), weighted_perplexity(&bytes));
    result
        .metrics
        .insert("bits_per_byte".into(), bits_per_byte(&bytes));
    Ok(result)
}

/// WikiText-2 (`wikitext/wiki.test.raw` or `wikitext/test.jsonl` with `page` records).
fn wikitext(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
    let path = find(
        &options.data_dir,
        "wikitext",
        &[
            "wikitext/wiki.test.raw",
            "wikitext-2-raw/wiki.test.raw",
            "wikitext/test.jsonl",
        ],
    )?;
    let pages = read_wikitext(&path)?;
    let chosen = select(pages.len(), options.limit, options.subsample_seed);
    let docs: Vec<(String, String)> = chosen
        .iter()
        .map(|&i| (pages[i].clone(), wikitext_detokenize(&pages[i])))
        .collect();
    document_perplexity(scorer, &docs)
}

/// Any text file: the whole file as one document (word/byte perplexity, bits per byte) and the
/// token perplexity over windows of `context_length` tokens advanced by `stride`, each token
/// scored once with the window's preceding tokens as context.
fn text_perplexity(scorer: &Scorer<'_>, path: &Path, options: &TaskOptions) -> Result<TaskResult> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.trim().is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: "empty text".into(),
        });
    }
    let mut result = document_perplexity(scorer, &[(text.clone(), text.clone())])?;
    let (window, stride) = (options.context_length, options.stride);
    if window < 2 || stride == 0 || stride > window {
        return Err(Error::InvalidArgument(format!(
            "token perplexity needs 2 <= context ({window}) and 0 < stride <= context ({stride})"
        )));
    }
    let tokens = encode(scorer, &text)?;
    let mut requests = Vec::new();
    let mut scored_until = 1; // The first token has no context.
    let mut start = 0;
    while scored_until < tokens.len() {
        let end = (start + window).min(tokens.len());
        let first_target = scored_until.max(start + 1);
        requests.push(Request {
            context: tokens[start..first_target].to_vec(),
            continuation: tokens[first_target..end].to_vec(),
        });
        scored_until = end;
        start += stride;
    }
    let scored = scorer.loglikelihood(&requests, &mut |_, _| {})?;
    let nll: f64 = -scored.iter().map(|s| s.logprob).sum::<f64>();
    let count: usize = requests.iter().map(|r| r.continuation.len()).sum();
    result
        .metrics
        .insert("token_perplexity".into(), (nll / count as f64).exp());
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Multiple choice

/// One multiple-choice item: `context + " " + choice` is scored for each choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Prompt (few-shot examples included).
    pub context: String,
    /// The choices, without the target delimiter.
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub gold: usize,
}

/// Scores items: `acc` (argmax of log-likelihood) and `acc_norm` (argmax of log-likelihood per
/// character of the choice), with standard errors.
pub fn score_choices(scorer: &Scorer<'_>, items: &[Choice]) -> Result<TaskResult> {
    let mut requests = Vec::new();
    for item in items {
        for c in &item.choices {
            requests.push(encode_pair(scorer, &item.context, &format!(" {c}"))?);
        }
    }
    let scored = scorer.loglikelihood(&requests, &mut |_, _| {})?;
    let mut result = empty_result(items.len(), 0);
    result.tokens = requests
        .iter()
        .map(|r| r.context.len() + r.continuation.len())
        .sum();
    let (mut acc, mut acc_norm) = (Vec::new(), Vec::new());
    let mut offset = 0;
    for (i, item) in items.iter().enumerate() {
        let n = item.choices.len();
        let lls: Vec<f64> = scored[offset..offset + n]
            .iter()
            .map(|s| s.logprob)
            .collect();
        offset += n;
        let normalized: Vec<f64> = lls
            .iter()
            .zip(&item.choices)
            .map(|(ll, c)| ll / c.chars().count() as f64)
            .collect();
        let (pred, pred_norm) = (argmax(&lls), argmax(&normalized));
        acc.push(f64::from(pred == item.gold));
        acc_norm.push(f64::from(pred_norm == item.gold));
        result.samples.push(json!({
            "doc_id": i, "target": item.gold, "loglikelihoods": lls,
            "pred": pred, "pred_norm": pred_norm,
        }));
    }
    for (name, values) in [("acc", acc), ("acc_norm", acc_norm)] {
        let (mean, stderr) = mean_stderr(&values);
        result.metrics.insert(name.into(), mean);
        if let Some(s) = stderr {
            result.stderr.insert(name.into(), s);
        }
    }
    Ok(result)
}

/// ARC (`arc/ARC-Easy-Test.jsonl` as published by AI2, or the Hub layout exported to JSON
/// Lines): "Question: {question}\nAnswer:", choices the answer texts.
fn arc(scorer: &Scorer<'_>, name: &str, options: &TaskOptions) -> Result<TaskResult> {
    let set = if name == "arc_easy" {
        "ARC-Easy"
    } else {
        "ARC-Challenge"
    };
    let path = find(
        &options.data_dir,
        name,
        &[
            &format!("arc/{set}-Test.jsonl"),
            &format!("{set}/{set}-Test.jsonl"),
            &format!("arc/{set}/test.jsonl"),
        ],
    )?;
    let rows = read_jsonl(&path)?;
    let mut items = Vec::new();
    for &i in &select(rows.len(), options.limit, options.subsample_seed) {
        items.push(arc_item(&path, i + 1, &rows[i])?);
    }
    score_choices(scorer, &items)
}

/// One ARC record: AI2's `{"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}`
/// or the Hub's `{"question", "choices": {"text": [...], "label": [...]}, "answerKey"}`.
pub fn arc_item(path: &Path, line: usize, row: &Value) -> Result<Choice> {
    let bad = |why: &str| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {why}"),
    };
    let (question, texts, labels): (String, Vec<String>, Vec<String>) = match &row["question"] {
        Value::String(q) => {
            let strings = |v: &Value| -> Option<Vec<String>> {
                v.as_array()?
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect()
            };
            (
                q.clone(),
                strings(&row["choices"]["text"]).ok_or_else(|| bad("choices.text"))?,
                strings(&row["choices"]["label"]).ok_or_else(|| bad("choices.label"))?,
            )
        }
        Value::Object(q) => {
            let stem = q
                .get("stem")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("question.stem"))?;
            let choices = q
                .get("choices")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("question.choices"))?;
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            for c in choices {
                texts.push(c["text"].as_str().ok_or_else(|| bad("choice text"))?.into());
                labels.push(
                    c["label"]
                        .as_str()
                        .ok_or_else(|| bad("choice label"))?
                        .into(),
                );
            }
            (stem.to_string(), texts, labels)
        }
        _ => return Err(bad("missing 'question'")),
    };
    let key = field(path, line, row, "answerKey")?;
    let gold = labels
        .iter()
        .position(|l| l == key)
        .ok_or_else(|| bad("answerKey is not one of the labels"))?;
    Ok(Choice {
        context: format!("Question: {question}\nAnswer:"),
        choices: texts,
        gold,
    })
}

fn hellaswag_preprocess(text: &str) -> String {
    let s = text.trim().replace(" [title]", ". ");
    let s = Regex::new(r"\[.*?\]")
        .expect("fixed pattern")
        .replace_all(&s, "")
        .into_owned();
    s.replace("  ", " ")
}

/// Python's `str.capitalize`: first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// One HellaSwag record (`ctx_a`, `ctx_b`, `activity_label`, `endings`, `label`).
pub fn hellaswag_item(path: &Path, line: usize, row: &Value) -> Result<Choice> {
    let ctx = format!(
        "{} {}",
        field(path, line, row, "ctx_a")?,
        capitalize(field(path, line, row, "ctx_b")?)
    );
    let query = hellaswag_preprocess(&format!(
        "{}: {ctx}",
        field(path, line, row, "activity_label")?
    ));
    let endings = row["endings"].as_array().ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: missing 'endings'"),
    })?;
    let choices: Vec<String> = endings
        .iter()
        .map(|e| hellaswag_preprocess(e.as_str().unwrap_or_default()))
        .collect();
    let gold = match &row["label"] {
        Value::Number(n) => n.as_u64().map(|v| v as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|&g| g < choices.len())
    .ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: 'label' is not a choice index"),
    })?;
    Ok(Choice {
        context: query,
        choices,
        gold,
    })
}

/// HellaSwag validation (`hellaswag/hellaswag_val.jsonl` as published).
fn hellaswag(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
    let path = find(
        &options.data_dir,
        "hellaswag",
        &[
            "hellaswag/hellaswag_val.jsonl",
            "hellaswag/validation.jsonl",
        ],
    )?;
    let rows = read_jsonl(&path)?;
    let mut items = Vec::new();
    for &i in &select(rows.len(), options.limit, options.subsample_seed) {
        items.push(hellaswag_item(&path, i + 1, &rows[i])?);
    }
    score_choices(scorer, &items)
}

/// MMLU from the published CSV files (`mmlu/test/{subject}_test.csv`, few-shot examples from
/// `mmlu/dev/{subject}_dev.csv`, first N in order): every subject found, `acc` over all
/// questions, and `acc,{subject}` per subject.
fn mmlu(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
    let test_dir = find(&options.data_dir, "mmlu", &["mmlu/test", "mmlu/data/test"])?;
    let dev_dir = test_dir.parent().unwrap_or(Path::new(".")).join("dev");
    let shots = options.num_fewshot.unwrap_or(0);
    let mut subjects: Vec<(String, PathBuf)> = std::fs::read_dir(&test_dir)
        .map_err(|e| Error::io(&test_dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix("_test.csv")
                .map(|s| (s.to_string(), e.path()))
        })
        .collect();
    subjects.sort();
    if subjects.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mmlu: no *_test.csv under {}",
            test_dir.display()
        )));
    }
    let parse = |path: &Path| -> Result<Vec<(String, Vec<String>, usize)>> {
        read_csv(path)?
            .into_iter()
            .map(|(line, row)| {
                if row.len() < 6 {
                    return Err(Error::Format {
                        path: path.to_path_buf(),
                        reason: format!("line {line}: expected question, 4 choices, answer"),
                    });
                }
                let gold = ["A", "B", "C", "D"]
                    .iter()
                    .position(|l| *l == row[5].trim())
                    .ok_or_else(|| Error::Format {
                        path: path.to_path_buf(),
                        reason: format!("line {line}: answer '{}' is not A-D", row[5]),
                    })?;
                Ok((row[0].clone(), row[1..5].to_vec(), gold))
            })
            .collect()
    };
    let prompt = |q: &str, c: &[String]| {
        format!(
            "{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
            q.trim(),
            c[0],
            c[1],
            c[2],
            c[3]
        )
    };
    let letters: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    let mut all = empty_result(0, shots);
    let mut per_subject = Vec::new();
    let mut acc_all = Vec::new();
    for (subject, path) in &subjects {
        let rows = parse(path)?;
        let mut fewshot = String::new();
        if shots > 0 {
            let dev = parse(&dev_dir.join(format!("{subject}_dev.csv")))?;
            if dev.len() < shots {
                return Err(Error::InvalidArgument(format!(
                    "mmlu {subject}: {shots} few-shot examples requested, {} available",
                    dev.len()
                )));
            }
            for (q, c, g) in &dev[..shots] {
                fewshot.push_str(&format!("{} {}\n\n", prompt(q, c), letters[*g]));
            }
        }
        let description = format!(
            "The following are multiple choice questions (with answers) about {}.\n\n",
            subject.replace('_', " ")
        );
        let items: Vec<Choice> = select(rows.len(), options.limit, options.subsample_seed)
            .into_iter()
            .map(|i| Choice {
                context: format!("{description}{fewshot}{}", prompt(&rows[i].0, &rows[i].1)),
                choices: letters.clone(),
                gold: rows[i].2,
            })
            .collect();
        let r = score_choices(scorer, &items)?;
        all.tokens += r.tokens;
        all.documents += r.documents;
        acc_all.extend(
            r.samples
                .iter()
                .map(|s| f64::from(s["pred"] == s["target"])),
        );
        per_subject.push((subject.clone(), r.metrics["acc"]));
        all.samples.extend(r.samples.into_iter().map(|mut s| {
            s["subject"] = json!(subject);
            s
        }));
    }
    let (mean, stderr) = mean_stderr(&acc_all);
    all.metrics.insert("acc".into(), mean);
    if let Some(s) = stderr {
        all.stderr.insert("acc".into(), s);
    }
    for (subject, acc) in per_subject {
        all.metrics.insert(format!("acc,{subject}"), acc);
    }
    Ok(all)
}

/// LAMBADA, OpenAI's version (`lambada/lambada_test.jsonl`, `{"text"}` records): the last word
/// after the rest; `acc` (the word is the greedy continuation) and `perplexity`.
fn lambada(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
    let path = find(
        &options.data_dir,
        "lambada_openai",
        &["lambada/lambada_test.jsonl", "lambada_openai/test.jsonl"],
    )?;
    let rows = read_jsonl(&path)?;
    let chosen = select(rows.len(), options.limit, options.subsample_seed);
    let mut requests = Vec::new();
    for &i in &chosen {
        let text = field(&path, i + 1, &rows[i], "text")?;
        let (context, word) = match text.rsplit_once(' ') {
            Some((c, w)) => (c, w),
            None => ("", text),
        };
        requests.push(encode_pair(scorer, context, &format!(" {word}"))?);
    }
    let scored = scorer.loglikelihood(&requests, &mut |_, _| {})?;
    let mut result = empty_result(chosen.len(), 0);
    result.tokens = requests
        .iter()
        .map(|r| r.context.len() + r.continuation.len())
        .sum();
    let acc: Vec<f64> = scored.iter().map(|s| f64::from(s.is_greedy)).collect();
    let lls: Vec<f64> = scored.iter().map(|s| s.logprob).collect();
    let (mean, stderr) = mean_stderr(&acc);
    result.metrics.insert("acc".into(), mean);
    if let Some(s) = stderr {
        result.stderr.insert("acc".into(), s);
    }
    let mean_ll = lls.iter().sum::<f64>() / lls.len() as f64;
    result.metrics.insert("perplexity".into(), (-mean_ll).exp());
    for (i, s) in scored.iter().enumerate() {
        result.samples.push(json!({
            "doc_id": chosen[i], "loglikelihood": s.logprob, "is_greedy": s.is_greedy,
        }));
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Generative

/// The eight chain-of-thought exemplars of the harness' `gsm8k_cot` task.
const GSM8K_COT_EXEMPLARS: &[(&str, &str)] = &[
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."),
];

/// The prompts of GSM8K test documents, as the harness builds them.
///
/// `gsm8k`: "Question: {q}\nAnswer:", few-shot examples drawn from the train split with
/// `random.Random(fewshot_seed).sample(train, n)` per document, in document order, each followed
/// by " {full answer}". `gsm8k_cot`: "Q: {q}\nA:" with the eight fixed exemplars.
pub fn gsm8k_prompts(
    task: &str,
    questions: &[&str],
    train: &[(String, String)],
    shots: usize,
    fewshot_seed: u64,
) -> Result<Vec<String>> {
    let mut rng = PyRandom::new(fewshot_seed);
    let mut prompts = Vec::with_capacity(questions.len());
    for q in questions {
        let mut prompt = String::new();
        if task == "gsm8k_cot" {
            if shots > GSM8K_COT_EXEMPLARS.len() {
                return Err(Error::InvalidArgument(format!(
                    "gsm8k_cot has {} exemplars, {shots} requested",
                    GSM8K_COT_EXEMPLARS.len()
                )));
            }
            for (eq, ea) in &GSM8K_COT_EXEMPLARS[..shots] {
                prompt.push_str(&format!("Q: {eq}\nA: {ea}\n\n"));
            }
            prompt.push_str(&format!("Q: {q}\nA:"));
        } else {
            if shots > train.len() {
                return Err(Error::InvalidArgument(format!(
                    "gsm8k: {shots} few-shot examples requested, {} in the train split",
                    train.len()
                )));
            }
            for i in rng.sample_indices(train.len(), shots) {
                let (tq, ta) = &train[i];
                prompt.push_str(&format!("Question: {tq}\nAnswer: {ta}\n\n"));
            }
            prompt.push_str(&format!("Question: {q}\nAnswer:"));
        }
        prompts.push(prompt);
    }
    Ok(prompts)
}

/// GSM8K test (`gsm8k/test.jsonl`, few-shot pool `gsm8k/train.jsonl`): greedy generation until
/// "Question:" (or "Q:"), "</s>", "<|im_end|>" or EOS; `exact_match` under the strict and the
/// flexible answer filters.
fn gsm8k(scorer: &Scorer<'_>, task: &str, options: &TaskOptions) -> Result<TaskResult> {
    let test_path = find(&options.data_dir, task, &["gsm8k/test.jsonl"])?;
    let test = read_jsonl(&test_path)?;
    let cot = task == "gsm8k_cot";
    let shots = options.num_fewshot.unwrap_or(if cot { 8 } else { 5 });
    let train: Vec<(String, String)> = if !cot && shots > 0 {
        let train_path = find(&options.data_dir, task, &["gsm8k/train.jsonl"])?;
        read_jsonl(&train_path)?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok((
                    field(&train_path, i + 1, r, "question")?.to_string(),
                    field(&train_path, i + 1, r, "answer")?.to_string(),
                ))
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    // The harness draws few-shot examples for every document in order, so subsets keep the
    // draws of the documents they skip.
    let all_questions: Vec<&str> = test
        .iter()
        .enumerate()
        .map(|(i, r)| field(&test_path, i + 1, r, "question"))
        .collect::<Result<_>>()?;
    let chosen = select(test.len(), options.limit, options.subsample_seed);
    let last = chosen.last().map_or(0, |&i| i + 1);
    let prompts = gsm8k_prompts(
        task,
        &all_questions[..last],
        &train,
        shots,
        options.fewshot_seed,
    )?;
    let stops: Vec<&str> = vec![if cot { "Q:" } else { "Question:" }, "</s>", "<|im_end|>"];
    let prompts: Vec<String> = chosen.iter().map(|&i| prompts[i].clone()).collect();
    let (outputs, tokens) = generate_until(scorer, &prompts, &stops, options.max_gen_tokens)?;
    let (strict, flexible) = if cot {
        (
            RegexFilter::new(r"The answer is (\-?[0-9\.\,]+).", 0),
            RegexFilter::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
        )
    } else {
        (
            RegexFilter::new(r"#### (\-?[0-9\.\,]+)", 0),
            RegexFilter::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
        )
    };
    let mut result = empty_result(chosen.len(), shots);
    result.tokens = tokens;
    let (mut strict_scores, mut flexible_scores) = (Vec::new(), Vec::new());
    for (k, &i) in chosen.iter().enumerate() {
        let answer = field(&test_path, i + 1, &test[i], "answer")?;
        let reference = if cot {
            answer
                .rsplit("####")
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        } else {
            answer.to_string()
        };
        let (s, f) = (strict.apply(&outputs[k]), flexible.apply(&outputs[k]));
        let (sm, fm) = (
            gsm8k_exact_match(&s, &reference),
            gsm8k_exact_match(&f, &reference),
        );
        strict_scores.push(f64::from(sm));
        flexible_scores.push(f64::from(fm));
        result.samples.push(json!({
            "doc_id": i, "prompt_chars": prompts[k].len(), "response": outputs[k],
            "target": reference, "strict": s, "flexible": f,
            "exact_match,strict-match": sm, "exact_match,flexible-extract": fm,
        }));
    }
    for (name, values) in [
        ("exact_match,strict-match", strict_scores),
        ("exact_match,flexible-extract", flexible_scores),
    ] {
        let (mean, stderr) = mean_stderr(&values);
        result.metrics.insert(name.into(), mean);
        if let Some(s) = stderr {
            result.stderr.insert(name.into(), s);
        }
    }
    Ok(result)
}

/// Greedy generation for each prompt until a stop string, EOS or `max_tokens`, in batches; the
/// text is cut before the first stop string. Prompts are left-truncated to
/// `max_length - max_tokens` tokens. Returns the texts and the tokens processed.
pub fn generate_until(
    scorer: &Scorer<'_>,
    prompts: &[String],
    stops: &[&str],
    max_tokens: usize,
) -> Result<(Vec<String>, usize)> {
    let model = scorer.model();
    let tokenizer = model.require_tokenizer()?;
    let budget = scorer.max_length.saturating_sub(max_tokens).max(1);
    let mut encoded = Vec::with_capacity(prompts.len());
    for p in prompts {
        let ids = tokenizer.encode(p, true)?;
        let keep = ids.len().min(budget);
        encoded.push(ids[ids.len() - keep..].to_vec());
    }
    let params = GenerateParams {
        max_new_tokens: max_tokens,
        temperature: 0.0,
        stop_at_eos: true,
        ..Default::default()
    };
    let mut outputs = vec![String::new(); prompts.len()];
    let mut tokens = 0;
    // Batches of similar-length prompts share every weight read.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
    const BATCH: usize = 16;
    for batch in order.chunks(BATCH) {
        let batch_prompts: Vec<Vec<u32>> = batch.iter().map(|&i| encoded[i].clone()).collect();
        let mut streams: Vec<TextStream<'_>> =
            batch.iter().map(|_| TextStream::new(tokenizer)).collect();
        let mut texts = vec![String::new(); batch.len()];
        let mut failure = None;
        let generations = model.generate(&batch_prompts, &params, |seq, token| {
            match streams[seq].push(token) {
                Ok(piece) => {
                    texts[seq].push_str(&piece);
                    !stops.iter().any(|s| texts[seq].contains(s))
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        for (j, &i) in batch.iter().enumerate() {
            tokens += encoded[i].len() + generations[j].tokens.len();
            let mut text = tokenizer.decode(&generations[j].tokens, true)?;
            for stop in stops {
                if let Some(pos) = text.find(stop) {
                    text.truncate(pos);
                }
            }
            outputs[i] = text;
        }
    }
    Ok((outputs, tokens))
}
