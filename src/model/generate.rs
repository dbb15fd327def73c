//! Batched generation: prompts of different lengths prefill together, then decode one token per
//! active sequence per step; each new token is reported as it is chosen.

use super::decoder::{Cache, Decoder};
use super::forward::Logits;
use super::sampling::Sampler;
use super::Model;
use crate::checkpoint::Tokenizer;
use crate::error::{Error, Result};

/// Generation settings.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Upper bound on new tokens per sequence.
    pub max_new_tokens: usize,
    /// 0 for greedy decoding.
    pub temperature: f32,
    /// Top-k filter (0 = off).
    pub top_k: usize,
    /// Nucleus filter (1 = off).
    pub top_p: f32,
    /// Seed of the sampler (sequence `i` uses `seed + i`).
    pub seed: u64,
    /// Stop a sequence at the model's end-of-sequence tokens.
    pub stop_at_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop_at_eos: true,
        }
    }
}

impl GenerateParams {
    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid("temperature must be a finite number >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid("top_p must be in (0, 1]"));
        }
        Ok(())
    }
}

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced an end-of-sequence token (not included in the output).
    Eos,
    /// It reached `max_new_tokens`.
    Length,
    /// The callback asked to stop.
    Stopped,
}

/// The result for one prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// New token ids.
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
}

impl Model {
    /// Generates continuations of `prompts` (token ids) on the CPU. `on_token(sequence, token)`
    /// is called for every new token in order; returning `false` stops that sequence.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &GenerateParams,
        on_token: impl FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Generation>> {
        generate(self, prompts, params, on_token)
    }
}

/// Generates continuations of `prompts` (token ids) on `decoder` (the CPU model or a GPU copy).
/// `on_token(sequence, token)` is called for every new token in order; returning `false` stops
/// that sequence.
pub fn generate(
    decoder: &dyn Decoder,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    params.validate()?;
    let n = prompts.len();
    let mut caches: Vec<Cache> = (0..n).map(|_| decoder.new_cache()).collect::<Result<_>>()?;
    let mut samplers: Vec<_> = (0..n)
        .map(|i| {
            Sampler::new(
                params.temperature,
                params.top_k,
                params.top_p,
                params.seed.wrapping_add(i as u64),
            )
        })
        .collect();
    let mut results: Vec<Generation> = (0..n)
        .map(|_| Generation {
            tokens: Vec::new(),
            finish_reason: FinishReason::Length,
        })
        .collect();
    if params.max_new_tokens == 0 || n == 0 {
        return Ok(results);
    }
    let eos = &decoder.model().config().eos_token_ids;
    let greedy = samplers.iter().all(Sampler::is_greedy);
    let mut active: Vec<usize> = (0..n).collect();
    let mut next_inputs: Vec<Vec<u32>> = prompts.to_vec();
    while !active.is_empty() {
        let inputs: Vec<&[u32]> = active.iter().map(|&i| next_inputs[i].as_slice()).collect();
        let mut cache_refs: Vec<&mut Cache> = caches
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| active.contains(i))
            .map(|(_, c)| c)
            .collect();
        // Greedy decoding needs only each sequence's argmax, which a GPU decoder picks on the
        // device; sampling needs the logits.
        let tokens = if greedy {
            decoder.greedy_batch(&inputs, &mut cache_refs)?
        } else {
            let logits = decoder.forward_batch(&inputs, &mut cache_refs, Logits::Last)?;
            active
                .iter()
                .zip(&logits)
                .map(|(&i, l)| samplers[i].sample(l))
                .collect()
        };
        let mut still = Vec::with_capacity(active.len());
        for (&i, &token) in active.iter().zip(&tokens) {
            if params.stop_at_eos && eos.contains(&token) {
                results[i].finish_reason = FinishReason::Eos;
                continue;
            }
            results[i].tokens.push(token);
            if !on_token(i, token) {
                results[i].finish_reason = FinishReason::Stopped;
                continue;
            }
            if results[i].tokens.len() >= params.max_new_tokens {
                results[i].finish_reason = FinishReason::Length;
                continue;
            }
            next_inputs[i] = vec![token];
            still.push(i);
        }
        active = still;
    }
    Ok(results)
}

/// Turns a growing list of token ids into text pieces, holding back bytes of an unfinished
/// UTF-8 character until the token that completes it arrives.
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    tokens: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// A stream decoding with `tokenizer`.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream {
            tokenizer,
            tokens: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds `token`; returns the newly completed text, possibly empty.
    pub fn push(&mut self, token: u32) -> Result<String> {
        self.tokens.push(token);
        let text = self.tokenizer.decode(&self.tokens, true)?;
        if text.ends_with('\u{FFFD}') || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    /// The whole text so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.tokens, true)
    }
}
