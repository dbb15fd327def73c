//! Perplexity: WikiText-2 documents (word/byte perplexity, bits per byte, from rolling
//! log-likelihoods) and any text file (plus token perplexity over strided windows).

use std::path::Path;

use regex::Regex;
use serde_json::json;

use super::{empty_result, encode, TaskOptions, TaskResult};
use crate::error::{Error, Result};
use crate::eval::data::{find, read_wikitext, select};
use crate::eval::engine::{Request, Scorer};
use crate::eval::metrics::{bits_per_byte, count_words, weighted_perplexity};

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
pub(super) fn wikitext(scorer: &Scorer<'_>, options: &TaskOptions) -> Result<TaskResult> {
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
pub(super) fn text(scorer: &Scorer<'_>, path: &Path, options: &TaskOptions) -> Result<TaskResult> {
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
