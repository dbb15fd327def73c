//! Scoring text: log-likelihoods of continuations of a context, and the perplexity of a text,
//! with lm-evaluation-harness' tokenization and windowing (the engine of `lowbit_eval`).

use std::ffi::c_char;

use super::lowbit_model;
use super::marshal::{c_str, handle_ref, out_struct_size, require, slice, write_versioned};
use super::status::{guard, lowbit_status, Failure};
use crate::eval::metrics::count_words;
use crate::eval::tasks::encode_pair;
use crate::eval::Scorer;

/// Scores `n_continuations` continuations of `context`: `logprobs[i]` receives the sum of the
/// natural-log probabilities of the tokens of `continuations[i]` given `context` and, when
/// `is_greedy` is not NULL, `is_greedy[i]` whether greedy decoding after `context` produces
/// exactly those tokens. This is lm-evaluation-harness' `loglikelihood` request, with its
/// tokenization: trailing whitespace of the context moves to the front of the continuation,
/// and context + continuation is tokenized as one string and split at the context's token
/// count; an empty context is conditioned on the model's BOS (else EOS) token. Inputs longer
/// than the model's context are left-truncated. Continuations of one context share one
/// prefill. To compare choices of different lengths, normalize by the continuation's length in
/// bytes as the harness' `acc_norm` does.
///
/// Nothing is allocated for the caller; `logprobs` and `is_greedy` stay the caller's.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model, context or logprobs NULL; continuations NULL with
/// n_continuations > 0, or one of its strings NULL), `LOWBIT_ERR_INVALID_ARGUMENT` (a string
/// not UTF-8; n_continuations is 0; a continuation that gives no tokens),
/// `LOWBIT_ERR_TOKENIZER` (the model has no tokenizer, or it failed). On failure the output
/// arrays are unspecified.
///
/// Thread-safe: several threads may score with one model at once.
///
/// # Safety
/// `model` is NULL or a live model; `context` is NULL or NUL-terminated; `continuations` is
/// NULL or points to `n_continuations` pointers each NULL or NUL-terminated; `logprobs` is NULL
/// or valid for writing `n_continuations` doubles; `is_greedy` is NULL or valid for writing
/// `n_continuations` bools.
#[no_mangle]
pub unsafe extern "C" fn lowbit_score_continuations(
    model: *const lowbit_model,
    context: *const c_char,
    continuations: *const *const c_char,
    n_continuations: usize,
    logprobs: *mut f64,
    is_greedy: *mut bool,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let handle = unsafe { handle_ref(model) }?;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let context = unsafe { c_str(context, "context") }?;
        // SAFETY: NULL or `n_continuations` pointers per this function's contract.
        let continuations = unsafe { slice(continuations, n_continuations, "continuations") }?;
        if continuations.is_empty() {
            return Err(Failure::invalid("n_continuations is 0; give at least one"));
        }
        require(logprobs, "logprobs")?;
        let scorer = Scorer::with_decoder(handle.decoder());
        let mut requests = Vec::with_capacity(continuations.len());
        for (i, &continuation) in continuations.iter().enumerate() {
            let what = format!("continuations[{i}]");
            // SAFETY: each entry is NULL or NUL-terminated per this function's contract.
            let continuation = unsafe { c_str(continuation, &what) }?;
            let request = encode_pair(&scorer, context, continuation)?;
            if request.continuation.is_empty() {
                return Err(Failure::invalid(format!(
                    "{what} gives no tokens after the context"
                )));
            }
            requests.push(request);
        }
        let scored = scorer.loglikelihood(&requests, &mut |_, _| {})?;
        for (i, result) in scored.iter().enumerate() {
            // SAFETY: `logprobs` is non-NULL and holds `n_continuations` doubles, and
            // `is_greedy` is NULL or holds as many bools, per this function's contract;
            // `scored` has one entry per continuation.
            unsafe {
                logprobs.add(i).write(result.logprob);
                if !is_greedy.is_null() {
                    is_greedy.add(i).write(result.is_greedy);
                }
            }
        }
        Ok(())
    })
}

/// What `lowbit_perplexity` measured. The caller sets `struct_size` to
/// `sizeof(lowbit_perplexity_result)` and `lowbit_perplexity` fills in the rest.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct lowbit_perplexity_result {
    /// `sizeof(lowbit_perplexity_result)` as the caller's header defines it; set by the
    /// caller. A library accepts the sizes of its own layout and of every earlier one.
    pub struct_size: usize,
    /// Perplexity per token: `exp(-loglikelihood / tokens)`.
    pub token_perplexity: f64,
    /// Perplexity per word (whitespace-separated, as the harness counts them):
    /// `exp(-loglikelihood / words)`, comparable across tokenizers.
    pub word_perplexity: f64,
    /// Perplexity per UTF-8 byte: `exp(-loglikelihood / bytes)`.
    pub byte_perplexity: f64,
    /// Sum of the natural-log probabilities of every token of the text.
    pub loglikelihood: f64,
    /// Tokens of the text, each predicted once.
    pub tokens: usize,
    /// Words of the text.
    pub words: usize,
    /// Bytes of the text.
    pub bytes: usize,
}

/// The size of each published layout of `lowbit_perplexity_result`, oldest first.
const PERPLEXITY_RESULT_LAYOUTS: [usize; 1] = [size_of::<lowbit_perplexity_result>()];

/// Measures how well the model predicts `text`: the text is tokenized (as `lowbit_tokenize`
/// with special tokens) and every token is predicted once, the first one after the model's BOS
/// (else EOS) token, the others with as many preceding tokens as fit in `max_length` (0: the
/// model's `max_position_embeddings`): lm-evaluation-harness' rolling log-likelihood, the
/// measure behind its wikitext word perplexity. Set `out->struct_size` first. Nothing is
/// allocated for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model, text or out NULL), `LOWBIT_ERR_INVALID_ARGUMENT`
/// (text not UTF-8, or giving no tokens or no words; max_length 1; wrong
/// `out->struct_size`), `LOWBIT_ERR_TOKENIZER` (the model has no tokenizer, or it failed).
///
/// Thread-safe: several threads may score with one model at once.
///
/// # Safety
/// `model` is NULL or a live model; `text` is NULL or NUL-terminated; `out` is NULL or points
/// to a writable `lowbit_perplexity_result` whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn lowbit_perplexity(
    model: *const lowbit_model,
    text: *const c_char,
    max_length: usize,
    out: *mut lowbit_perplexity_result,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let handle = unsafe { handle_ref(model) }?;
        let model = &*handle.model;
        // SAFETY: NULL or NUL-terminated per this function's contract.
        let text = unsafe { c_str(text, "text") }?;
        // SAFETY: NULL or a struct whose `struct_size` is set, per this function's contract.
        unsafe { out_struct_size(out, &PERPLEXITY_RESULT_LAYOUTS, "lowbit_perplexity_result") }?;
        let mut scorer = Scorer::with_decoder(handle.decoder());
        match max_length {
            0 => {}
            1 => return Err(Failure::invalid("max_length is 1; use 0 or at least 2")),
            n => scorer.max_length = n,
        }
        let tokens = model.require_tokenizer()?.encode(text, true)?;
        let words = count_words(text);
        if tokens.is_empty() || words == 0 {
            return Err(Failure::invalid(
                "text has no words; perplexity needs some text",
            ));
        }
        let loglikelihood = scorer.rolling_loglikelihood(&tokens)?;
        let per = |count: usize| (-loglikelihood / count as f64).exp();
        let result = lowbit_perplexity_result {
            struct_size: size_of::<lowbit_perplexity_result>(),
            token_perplexity: per(tokens.len()),
            word_perplexity: per(words),
            byte_perplexity: per(text.len()),
            loglikelihood,
            tokens: tokens.len(),
            words,
            bytes: text.len(),
        };
        // SAFETY: non-NULL, a struct whose `struct_size` is set, per this function's contract.
        unsafe {
            write_versioned(
                out,
                result,
                &PERPLEXITY_RESULT_LAYOUTS,
                "lowbit_perplexity_result",
            )
        }
    })
}
