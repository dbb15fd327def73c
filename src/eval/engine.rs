//! The scoring engine: log-likelihoods of continuations, rolling log-likelihoods of whole
//! documents, and greedy generation with stop strings, with lm-evaluation-harness' semantics.
//!
//! - A request `(context, continuation)` scores `continuation` after `context`; when the two do
//!   not fit in `max_length + 1` tokens they are left-truncated as the harness does
//!   (`(context + continuation)[-(max_length + 1):][:-1]` is the model input).
//! - Requests with the same context share one prefill: the context runs once, every continuation
//!   runs from a copy of its KV cache, all of them in one batch.
//! - Long inputs run through the KV cache in chunks of [`Scorer::chunk`] tokens, so logits are
//!   never held for more than one chunk.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{Cache, Decoder, Logits, Model};

/// One log-likelihood request, in tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Conditioning tokens (at least one).
    pub context: Vec<u32>,
    /// Tokens to score (at least one).
    pub continuation: Vec<u32>,
}

/// The score of one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Sum of the log-probabilities of the continuation tokens (natural log).
    pub logprob: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub is_greedy: bool,
}

/// Scores requests on a model.
pub struct Scorer<'m> {
    decoder: &'m dyn Decoder,
    /// Longest model input, in tokens (the harness' `max_length`).
    pub max_length: usize,
    /// Tokens per forward call when running long inputs through the cache.
    pub chunk: usize,
}

/// `log_softmax(logits)[target]` in f64, and whether `target` is the (first) argmax.
pub fn token_logprob(logits: &[f32], target: u32) -> (f64, bool) {
    let mut best = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > max {
            max = v;
            best = i;
        }
    }
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lp = (logits[target as usize] - max) as f64 - sum.ln();
    (lp, best == target as usize)
}

/// Sum of `token_logprob` over `targets`, one logits row (`vocab` values) per target.
fn score_rows(rows: &[f32], vocab: usize, targets: &[u32]) -> Scored {
    let mut scored = Scored {
        logprob: 0.0,
        is_greedy: true,
    };
    for (row, &target) in rows.chunks_exact(vocab).zip(targets) {
        let (lp, greedy) = token_logprob(row, target);
        scored.logprob += lp;
        scored.is_greedy &= greedy;
    }
    scored
}

impl<'m> Scorer<'m> {
    /// A scorer with the harness' default `max_length`: the model's
    /// `max_position_embeddings`.
    pub fn new(model: &'m Model) -> Self {
        Self::with_decoder(model)
    }

    /// A scorer whose forward passes run on `decoder` (the CPU model or a GPU copy), with the
    /// same defaults as [`Scorer::new`].
    pub fn with_decoder(decoder: &'m dyn Decoder) -> Self {
        Scorer {
            decoder,
            max_length: decoder.model().config().max_position_embeddings.max(2),
            chunk: 512,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        self.decoder.model()
    }

    /// Where the forward passes run.
    pub fn decoder(&self) -> &dyn Decoder {
        self.decoder
    }

    /// The token that conditions an empty context: BOS, else the first EOS (as the harness'
    /// `prefix_token_id`).
    pub fn prefix_token(&self) -> Result<u32> {
        let c = self.model().config();
        c.bos_token_id
            .or_else(|| c.eos_token_ids.first().copied())
            .ok_or_else(|| Error::invalid("the model has neither a BOS nor an EOS token"))
    }

    /// Scores every request; results in request order. `progress(done, total)` is called after
    /// each group of requests sharing a context.
    pub fn loglikelihood(
        &self,
        requests: &[Request],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Scored>> {
        for (i, r) in requests.iter().enumerate() {
            if r.context.is_empty() || r.continuation.is_empty() {
                return Err(Error::invalid(format!(
                    "request {i}: context and continuation need at least one token"
                )));
            }
            if r.continuation.len() > self.max_length {
                return Err(Error::invalid(format!(
                    "request {i}: continuation of {} tokens exceeds max_length {}",
                    r.continuation.len(),
                    self.max_length
                )));
            }
        }
        // Truncate as the harness does, then group by the (truncated) context.
        let mut groups: BTreeMap<Vec<u32>, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            let total = r.context.len() + r.continuation.len();
            let keep = total.min(self.max_length + 1);
            let context_kept = keep - r.continuation.len();
            let context = r.context[r.context.len() - context_kept..].to_vec();
            groups.entry(context).or_default().push(i);
        }
        // Longest first, as the harness sorts, so memory peaks early and predictably.
        let mut order: Vec<(Vec<u32>, Vec<usize>)> = groups.into_iter().collect();
        order.sort_by_key(|(ctx, members)| {
            let longest = members
                .iter()
                .map(|&i| requests[i].continuation.len())
                .max()
                .unwrap_or(0);
            std::cmp::Reverse(ctx.len() + longest)
        });
        let mut results = vec![
            Scored {
                logprob: 0.0,
                is_greedy: false
            };
            requests.len()
        ];
        let total = order.len();
        let mut done = 0;
        // Small groups (context and continuations within one chunk) run several at a time in one
        // ragged batch; the others one by one.
        let mut pending: Vec<(Vec<u32>, Vec<usize>)> = Vec::new();
        let mut pending_tokens = 0;
        for (context, members) in order {
            let size = context.len()
                + members
                    .iter()
                    .map(|&i| requests[i].continuation.len())
                    .sum::<usize>();
            if context.len() >= 2 && size <= self.chunk {
                if pending_tokens + size > self.chunk {
                    done += pending.len();
                    self.score_small_groups(&std::mem::take(&mut pending), requests, &mut results)?;
                    pending_tokens = 0;
                    progress(done, total);
                }
                pending_tokens += size;
                pending.push((context, members));
            } else {
                self.score_group(&context, &members, requests, &mut results)?;
                done += 1;
                progress(done, total);
            }
        }
        if !pending.is_empty() {
            done += pending.len();
            self.score_small_groups(&pending, requests, &mut results)?;
            progress(done, total);
        }
        Ok(results)
    }

    /// Several groups at once: their contexts (all but the last token) prefill in one ragged
    /// batch, then every continuation of every group runs in a second one from a copy of its
    /// group's cache.
    fn score_small_groups(
        &self,
        groups: &[(Vec<u32>, Vec<usize>)],
        requests: &[Request],
        results: &mut [Scored],
    ) -> Result<()> {
        let mut shared: Vec<Cache> = groups
            .iter()
            .map(|_| self.decoder.new_cache())
            .collect::<Result<_>>()?;
        {
            let prefixes: Vec<&[u32]> = groups.iter().map(|(c, _)| &c[..c.len() - 1]).collect();
            let mut refs: Vec<&mut Cache> = shared.iter_mut().collect();
            self.decoder
                .forward_batch(&prefixes, &mut refs, Logits::Last)?;
        }
        let mut inputs = Vec::new();
        let mut caches = Vec::new();
        let mut owners = Vec::new();
        for ((context, members), cache) in groups.iter().zip(&shared) {
            let last = context[context.len() - 1];
            for &i in members {
                let cont = &requests[i].continuation;
                let mut v = Vec::with_capacity(cont.len());
                v.push(last);
                v.extend_from_slice(&cont[..cont.len() - 1]);
                inputs.push(v);
                caches.push(cache.try_clone()?);
                owners.push(i);
            }
        }
        let slices: Vec<&[u32]> = inputs.iter().map(|v| v.as_slice()).collect();
        let mut refs: Vec<&mut Cache> = caches.iter_mut().collect();
        let logits = self
            .decoder
            .forward_batch(&slices, &mut refs, Logits::All)?;
        let vocab = self.model().config().vocab_size;
        for (rows, &i) in logits.iter().zip(&owners) {
            results[i] = score_rows(rows, vocab, &requests[i].continuation);
        }
        Ok(())
    }

    fn score_group(
        &self,
        context: &[u32],
        members: &[usize],
        requests: &[Request],
        results: &mut [Scored],
    ) -> Result<()> {
        // When the context is empty after truncation (continuation fills the window), the first
        // continuation token is the conditioning one: score the remainder from scratch.
        if context.is_empty() {
            for &i in members {
                let cont = &requests[i].continuation;
                let mut cache = self.decoder.new_cache()?;
                results[i] = self.score_tokens(&mut cache, &cont[..1], &cont[1..])?;
            }
            return Ok(());
        }
        let mut shared = self.decoder.new_cache()?;
        self.feed(&mut shared, &context[..context.len() - 1])?;
        let last = context[context.len() - 1];
        let short = members
            .iter()
            .all(|&i| requests[i].continuation.len() <= self.chunk);
        if !short {
            for &i in members {
                let mut cache = shared.try_clone()?;
                results[i] = self.score_tokens(&mut cache, &[last], &requests[i].continuation)?;
            }
            return Ok(());
        }
        // All continuations together: [last context token, continuation[..len-1]] each.
        let inputs: Vec<Vec<u32>> = members
            .iter()
            .map(|&i| {
                let cont = &requests[i].continuation;
                let mut v = Vec::with_capacity(cont.len());
                v.push(last);
                v.extend_from_slice(&cont[..cont.len() - 1]);
                v
            })
            .collect();
        // Batches bounded in tokens keep the logits buffer moderate.
        let vocab = self.model().config().vocab_size;
        let mut start = 0;
        while start < members.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < members.len() && (end == start || tokens + inputs[end].len() <= self.chunk)
            {
                tokens += inputs[end].len();
                end += 1;
            }
            let mut caches: Vec<Cache> = (start..end)
                .map(|_| shared.try_clone())
                .collect::<Result<_>>()?;
            let mut cache_refs: Vec<&mut Cache> = caches.iter_mut().collect();
            let slices: Vec<&[u32]> = inputs[start..end].iter().map(|v| v.as_slice()).collect();
            let logits = self
                .decoder
                .forward_batch(&slices, &mut cache_refs, Logits::All)?;
            for (j, rows) in logits.iter().enumerate() {
                let i = members[start + j];
                results[i] = score_rows(rows, vocab, &requests[i].continuation);
            }
            start = end;
        }
        Ok(())
    }

    /// Runs `tokens` into `cache` in chunks, discarding logits.
    fn feed(&self, cache: &mut Cache, tokens: &[u32]) -> Result<()> {
        for part in tokens.chunks(self.chunk) {
            self.decoder
                .forward_batch(&[part], &mut [cache], Logits::Last)?;
        }
        Ok(())
    }

    /// Feeds `lead` then `targets[..len-1]`, scoring every target token: the logits after
    /// `lead`'s last token predict `targets[0]`.
    fn score_tokens(&self, cache: &mut Cache, lead: &[u32], targets: &[u32]) -> Result<Scored> {
        let mut scored = Scored {
            logprob: 0.0,
            is_greedy: true,
        };
        if targets.is_empty() {
            return Ok(scored);
        }
        self.feed(cache, &lead[..lead.len() - 1])?;
        let vocab = self.model().config().vocab_size;
        let mut input = Vec::with_capacity(targets.len());
        input.push(lead[lead.len() - 1]);
        input.extend_from_slice(&targets[..targets.len() - 1]);
        let mut scored_so_far = 0;
        for part in input.chunks(self.chunk) {
            let logits = self
                .decoder
                .forward_batch(&[part], &mut [cache], Logits::All)?;
            for row in logits[0].chunks_exact(vocab) {
                let (lp, greedy) = token_logprob(row, targets[scored_so_far]);
                scored.logprob += lp;
                scored.is_greedy &= greedy;
                scored_so_far += 1;
            }
        }
        Ok(scored)
    }

    /// The harness' rolling windows of a document's tokens (`loglikelihood_rolling`): the first
    /// window predicts `min(max_length, n)` tokens after the prefix token; each later one
    /// predicts up to `max_length` new tokens with the preceding tokens as context, so every
    /// token is predicted once with as much context as fits.
    pub fn rolling_windows(&self, tokens: &[u32], prefix: u32) -> Vec<Request> {
        let mut out = Vec::new();
        if tokens.is_empty() {
            return out;
        }
        let max = self.max_length;
        let first = max.min(tokens.len());
        out.push(Request {
            // Disjoint: the context is what precedes the predicted tokens.
            context: vec![prefix],
            continuation: tokens[..first].to_vec(),
        });
        let mut predicted = first;
        while predicted < tokens.len() {
            let len = (tokens.len() - predicted).min(max);
            let end = predicted + len;
            let window_start = end.saturating_sub(max + 1);
            out.push(Request {
                context: tokens[window_start..end - len].to_vec(),
                continuation: tokens[end - len..end].to_vec(),
            });
            predicted = end;
        }
        out
    }

    /// Sum of the log-probabilities of every token of a document (rolling windows).
    pub fn rolling_loglikelihood(&self, tokens: &[u32]) -> Result<f64> {
        let prefix = self.prefix_token()?;
        let windows = self.rolling_windows(tokens, prefix);
        let scored = self.loglikelihood(&windows, &mut |_, _| {})?;
        Ok(scored.iter().map(|s| s.logprob).sum())
    }
}
