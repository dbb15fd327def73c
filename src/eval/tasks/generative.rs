//! Generative exact match: GSM8K (5-shot, drawn as the harness draws) and GSM8K chain of
//! thought (8 fixed exemplars), greedy generation until stop strings.

use serde_json::json;

use super::{empty_result, TaskOptions, TaskResult};
use crate::error::{Error, Result};
use crate::eval::data::{field, find, read_jsonl, select};
use crate::eval::engine::Scorer;
use crate::eval::metrics::{gsm8k_exact_match, mean_stderr, RegexFilter};
use crate::eval::pyrandom::PyRandom;
use crate::model::{GenerateParams, TextStream};

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
pub(super) fn gsm8k(scorer: &Scorer<'_>, task: &str, options: &TaskOptions) -> Result<TaskResult> {
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
            "doc_id": i, "prompt": prompts[k], "response": outputs[k],
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
        let generations =
            crate::model::generate(scorer.decoder(), &batch_prompts, &params, |seq, token| {
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
