//! The forward pass over a ragged batch: several sequences, each with its own KV cache and any
//! number of new tokens, run together so every weight matrix is read once per step.

use half::{bf16, f16};
use rayon::prelude::*;

use super::rope::Rope;
use super::{KvCache, Model};
use crate::backend::cpu::dot_f32;
use crate::checkpoint::{Dtype, ModelConfig};
use crate::error::{Error, Result};

/// Where in a block [`Model::run_block`] shows projection inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePoint {
    /// Input of q/k/v projections (after the input RMSNorm).
    Attention,
    /// Input of the output projection (attention result).
    AttentionOutput,
    /// Input of gate/up projections (after the post-attention RMSNorm).
    Mlp,
    /// Input of the down projection (`silu(gate) * up`).
    MlpInner,
}

/// The state of one forward pass over a ragged batch, between blocks: the residual stream of
/// every new token and its bookkeeping.
#[derive(Clone, Debug)]
pub struct Pass {
    lengths: Vec<usize>,
    seq_of: Vec<usize>,
    position: Vec<usize>,
    starts: Vec<usize>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    x: Vec<f32>,
}

impl Pass {
    /// The residual stream, `[tokens, hidden]`.
    pub fn hidden(&self) -> &[f32] {
        &self.x
    }

    /// Tokens in the pass.
    pub fn tokens(&self) -> usize {
        self.seq_of.len()
    }
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new token of each sequence (generation).
    Last,
    /// Every new token (scoring, perplexity).
    All,
}

/// `out = x / sqrt(mean(x^2) + eps) * weight`, row by row.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean_square = dot_f32(row, row) / width as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *d = w * (v * inv);
        }
    }
}

fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    for row in x.chunks_exact_mut(width) {
        let mean_square = dot_f32(row, row) / width as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = w * (*v * inv);
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Model {
    /// Copies the embedding row of `token` into `out`.
    fn embed(&self, token: u32, out: &mut [f32]) {
        let hidden = self.config.hidden_size;
        let row = token as usize * hidden..(token as usize + 1) * hidden;
        let e = &self.embed_tokens;
        match e.dtype() {
            Dtype::F32 => out.copy_from_slice(&e.as_f32().expect("aligned")[row]),
            Dtype::BF16 => {
                let src: &[bf16] = &e.as_bf16().expect("aligned")[row];
                for (d, s) in out.iter_mut().zip(src) {
                    *d = s.to_f32();
                }
            }
            Dtype::F16 => {
                let src: &[f16] = &e.as_f16().expect("aligned")[row];
                for (d, s) in out.iter_mut().zip(src) {
                    *d = s.to_f32();
                }
            }
            // The loader only accepts float embeddings.
            other => panic!("embedding stored as {other:?}"),
        }
    }

    /// Runs `inputs[i]` after the positions already in `caches[i]`, appends their keys and
    /// values, and returns logits per sequence: `vocab` values for [`Logits::Last`], or
    /// `inputs[i].len() * vocab` for [`Logits::All`].
    pub fn forward_batch(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut KvCache],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() && caches.is_empty() {
            return Ok(Vec::new());
        }
        let mut pass = self.begin_pass(inputs, caches)?;
        for layer in 0..self.blocks.len() {
            self.run_block(layer, &mut pass, caches, &mut |_, _, _| {});
        }
        Ok(self.finish_pass(&pass, caches, which))
    }

    /// Validates a batch and prepares its pass: embeddings, positions and RoPE angles.
    pub fn begin_pass(&self, inputs: &[&[u32]], caches: &[&mut KvCache]) -> Result<Pass> {
        let cfg = &self.config;
        let layers: Vec<usize> = caches.iter().map(|c| c.keys.len()).collect();
        validate_batch(cfg, inputs, &layers)?;
        let (hidden, hd) = (cfg.hidden_size, cfg.head_dim);
        // Token bookkeeping: owning sequence and absolute position of each new token.
        let total: usize = inputs.iter().map(|s| s.len()).sum();
        let mut seq_of = Vec::with_capacity(total);
        let mut position = Vec::with_capacity(total);
        let mut starts = Vec::with_capacity(inputs.len());
        for (s, seq) in inputs.iter().enumerate() {
            starts.push(seq_of.len());
            let past = caches[s].len();
            for i in 0..seq.len() {
                seq_of.push(s);
                position.push(past + i);
            }
        }
        let max_position = position.iter().copied().max().unwrap_or(0);
        let rope = self.rope.for_call(max_position);
        let half = hd / 2;
        let mut cos = vec![0f32; total * half];
        let mut sin = vec![0f32; total * half];
        for t in 0..total {
            rope.angles(
                position[t],
                &mut cos[t * half..(t + 1) * half],
                &mut sin[t * half..(t + 1) * half],
            );
        }
        let mut x = vec![0f32; total * hidden];
        for (t, token) in inputs.iter().flat_map(|s| s.iter()).enumerate() {
            self.embed(*token, &mut x[t * hidden..(t + 1) * hidden]);
        }
        Ok(Pass {
            lengths: inputs.iter().map(|s| s.len()).collect(),
            seq_of,
            position,
            starts,
            cos,
            sin,
            x,
        })
    }

    /// Runs decoder block `layer` over the pass, appending keys and values to the caches.
    /// `capture(point, rows, values)` sees the input of each group of projections (`rows` rows
    /// of `values.len() / rows` features) before they run: what calibration-based quantization
    /// collects.
    pub fn run_block(
        &self,
        layer: usize,
        pass: &mut Pass,
        caches: &mut [&mut KvCache],
        capture: &mut dyn FnMut(CapturePoint, usize, &[f32]),
    ) {
        let cfg = &self.config;
        let block = &self.blocks[layer];
        let (hidden, hd) = (cfg.hidden_size, cfg.head_dim);
        let (n_heads, n_kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_out, kv_out, inter) = (n_heads * hd, n_kv * hd, cfg.intermediate_size);
        let eps = cfg.rms_norm_eps as f32;
        let total = pass.seq_of.len();
        let half = hd / 2;
        let x = &mut pass.x;
        let mut h = vec![0f32; total * hidden];
        let mut q = vec![0f32; total * q_out];
        let mut k = vec![0f32; total * kv_out];
        let mut v = vec![0f32; total * kv_out];
        let mut attn = vec![0f32; total * q_out];
        let mut proj = vec![0f32; total * hidden];
        let mut gate = vec![0f32; total * inter];
        let mut up = vec![0f32; total * inter];
        let scale = 1.0 / (hd as f32).sqrt();

        rms_norm(x, &block.input_norm, eps, &mut h);
        capture(CapturePoint::Attention, total, &h);
        block.q_proj.forward(&h, total, &mut q);
        block.k_proj.forward(&h, total, &mut k);
        block.v_proj.forward(&h, total, &mut v);
        if let (Some(qn), Some(kn)) = (&block.q_norm, &block.k_norm) {
            rms_norm_in_place(&mut q, qn, eps);
            rms_norm_in_place(&mut k, kn, eps);
        }
        for t in 0..total {
            let (c, s) = (
                &pass.cos[t * half..(t + 1) * half],
                &pass.sin[t * half..(t + 1) * half],
            );
            Rope::apply(&mut q[t * q_out..(t + 1) * q_out], hd, c, s);
            Rope::apply(&mut k[t * kv_out..(t + 1) * kv_out], hd, c, s);
        }
        for (s, &len) in pass.lengths.iter().enumerate() {
            let rows = pass.starts[s] * kv_out..(pass.starts[s] + len) * kv_out;
            caches[s].keys[layer].extend_from_slice(&k[rows.clone()]);
            caches[s].values[layer].extend_from_slice(&v[rows]);
        }
        // Attention, one task per (token, query head).
        let caches_ro: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        let group = n_heads / n_kv;
        let (seq_of, position) = (&pass.seq_of, &pass.position);
        attn.par_chunks_mut(hd).enumerate().for_each(|(idx, out)| {
            let (t, head) = (idx / n_heads, idx % n_heads);
            let cache = caches_ro[seq_of[t]];
            let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
            let kv_head = head / group;
            let query = &q[t * q_out + head * hd..t * q_out + (head + 1) * hd];
            let visible = position[t] + 1;
            let mut scores: Vec<f32> = (0..visible)
                .map(|j| {
                    let key = &keys[j * kv_out + kv_head * hd..j * kv_out + (kv_head + 1) * hd];
                    dot_f32(query, key) * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            out.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let w = p / sum;
                let value = &values[j * kv_out + kv_head * hd..j * kv_out + (kv_head + 1) * hd];
                for (o, &val) in out.iter_mut().zip(value) {
                    *o += w * val;
                }
            }
        });
        capture(CapturePoint::AttentionOutput, total, &attn);
        block.o_proj.forward(&attn, total, &mut proj);
        for (xv, pv) in x.iter_mut().zip(&proj) {
            *xv += pv;
        }
        rms_norm(x, &block.post_attention_norm, eps, &mut h);
        capture(CapturePoint::Mlp, total, &h);
        block.gate_proj.forward(&h, total, &mut gate);
        block.up_proj.forward(&h, total, &mut up);
        gate.par_iter_mut()
            .zip(up.par_iter())
            .for_each(|(g, &u)| *g = silu(*g) * u);
        capture(CapturePoint::MlpInner, total, &gate);
        block.down_proj.forward(&gate, total, &mut proj);
        for (xv, pv) in x.iter_mut().zip(&proj) {
            *xv += pv;
        }
    }

    /// Marks the pass's tokens as cached and computes the requested logits.
    pub fn finish_pass(
        &self,
        pass: &Pass,
        caches: &mut [&mut KvCache],
        which: Logits,
    ) -> Vec<Vec<f32>> {
        let cfg = &self.config;
        let hidden = cfg.hidden_size;
        let eps = cfg.rms_norm_eps as f32;
        for (s, &len) in pass.lengths.iter().enumerate() {
            caches[s].advance(len);
        }
        let total = pass.seq_of.len();
        // Final norm and LM head on the rows that need logits.
        let rows: Vec<usize> = match which {
            Logits::All => (0..total).collect(),
            Logits::Last => pass
                .lengths
                .iter()
                .enumerate()
                .map(|(s, &len)| pass.starts[s] + len - 1)
                .collect(),
        };
        let mut selected = vec![0f32; rows.len() * hidden];
        for (i, &r) in rows.iter().enumerate() {
            selected[i * hidden..(i + 1) * hidden]
                .copy_from_slice(&pass.x[r * hidden..(r + 1) * hidden]);
        }
        rms_norm_in_place(&mut selected, &self.final_norm, eps);
        let vocab = cfg.vocab_size;
        let mut logits = vec![0f32; rows.len() * vocab];
        self.lm_head.forward(&selected, rows.len(), &mut logits);
        match which {
            Logits::Last => logits.chunks_exact(vocab).map(|c| c.to_vec()).collect(),
            Logits::All => pass
                .lengths
                .iter()
                .enumerate()
                .map(|(s, &len)| {
                    logits[pass.starts[s] * vocab..(pass.starts[s] + len) * vocab].to_vec()
                })
                .collect(),
        }
    }

    /// Logits of every position of `tokens` (`tokens.len() * vocab` values), from a fresh cache.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut cache = self.new_cache();
        let mut out = self.forward_batch(&[tokens], &mut [&mut cache], Logits::All)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Runs `tokens` after what `cache` holds and returns the last position's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let mut out = self.forward_batch(&[tokens], &mut [cache], Logits::Last)?;
        Ok(out.pop().unwrap_or_default())
    }
}

/// Checks a ragged batch before a pass, on any backend: one cache per sequence (`cache_layers`
/// gives each cache's layer count), at least one sequence, no empty sequence, every token id
/// inside the vocabulary, and caches made for a model of this depth.
pub(crate) fn validate_batch(
    cfg: &ModelConfig,
    inputs: &[&[u32]],
    cache_layers: &[usize],
) -> Result<()> {
    if inputs.len() != cache_layers.len() {
        return Err(Error::invalid("one KV cache is needed per input sequence"));
    }
    if inputs.is_empty() {
        return Err(Error::invalid("no input sequence"));
    }
    for (i, seq) in inputs.iter().enumerate() {
        if seq.is_empty() {
            return Err(Error::invalid(format!("sequence {i} has no tokens")));
        }
        if let Some(&bad) = seq.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary ({} entries)",
                cfg.vocab_size
            )));
        }
    }
    if cache_layers.iter().any(|&l| l != cfg.num_hidden_layers) {
        return Err(Error::invalid("KV cache was made for another model"));
    }
    Ok(())
}
