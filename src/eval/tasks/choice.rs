//! Multiple-choice log-likelihood: ARC, HellaSwag, MMLU (acc, acc_norm) and LAMBADA (acc,
//! perplexity).

use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::{json, Value};

use super::{empty_result, encode_pair, TaskOptions, TaskResult};
use crate::error::{Error, Result};
use crate::eval::data::{field, find, read_csv, read_jsonl, select};
use crate::eval::engine::Scorer;
use crate::eval::metrics::{argmax, mean_stderr};

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
pub(super) fn arc(scorer: &Scorer<'_>, name: &str, options: &TaskOptions) -> Result<TaskResult> {
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
pub(super) fn hellaswag(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
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
pub(super) fn mmlu(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
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
pub(super) fn lambada(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
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
