//! The host side of one forward pass on the GPU: the batch checked as the CPU checks it, and the
//! per-token bookkeeping (sequence, position, RoPE angles from `src/model/rope.rs`, the rows that
//! get logits) that is uploaded before the kernels run.

use super::kv_cache::CudaKvCache;
use crate::error::Result;
use crate::model::rope::Rope;
use crate::model::{Logits, Model};

/// Checks the batch as the CPU forward pass does (see `validate_batch` in `src/model/forward.rs`).
pub(super) fn validate(
    model: &Model,
    inputs: &[&[u32]],
    caches: &[&mut CudaKvCache],
) -> Result<()> {
    let layers: Vec<usize> = caches.iter().map(|c| c.layers()).collect();
    crate::model::validate_batch(model.config(), inputs, &layers)
}

/// The host side of one pass: token bookkeeping, RoPE angles and the rows that get logits.
pub(super) struct Plan {
    pub(super) total: usize,
    pub(super) lengths: Vec<usize>,
    pub(super) starts: Vec<usize>,
    pub(super) tokens: Vec<u32>,
    pub(super) seq_of: Vec<i32>,
    pub(super) position: Vec<i32>,
    pub(super) cos: Vec<f32>,
    pub(super) sin: Vec<f32>,
    pub(super) rows: Vec<i32>,
}

impl Plan {
    pub(super) fn new(
        rope: &Rope,
        inputs: &[&[u32]],
        caches: &[&mut CudaKvCache],
        which: Logits,
        head_dim: usize,
    ) -> Plan {
        let total: usize = inputs.iter().map(|s| s.len()).sum();
        let mut seq_of = Vec::with_capacity(total);
        let mut position = Vec::with_capacity(total);
        let mut starts = Vec::with_capacity(inputs.len());
        for (s, seq) in inputs.iter().enumerate() {
            starts.push(seq_of.len());
            let past = caches[s].len();
            for i in 0..seq.len() {
                seq_of.push(s as i32);
                position.push((past + i) as i32);
            }
        }
        let max_position = position.iter().copied().max().unwrap_or(0) as usize;
        let rope = rope.for_call(max_position);
        let half = head_dim / 2;
        let mut cos = vec![0f32; total * half];
        let mut sin = vec![0f32; total * half];
        for (t, &p) in position.iter().enumerate() {
            let range = t * half..(t + 1) * half;
            rope.angles(p as usize, &mut cos[range.clone()], &mut sin[range]);
        }
        let lengths: Vec<usize> = inputs.iter().map(|s| s.len()).collect();
        let rows = match which {
            Logits::All => (0..total as i32).collect(),
            Logits::Last => lengths
                .iter()
                .zip(&starts)
                .map(|(&len, &start)| (start + len - 1) as i32)
                .collect(),
        };
        Plan {
            total,
            lengths,
            starts,
            tokens: inputs.iter().flat_map(|s| s.iter().copied()).collect(),
            seq_of,
            position,
            cos,
            sin,
            rows,
        }
    }
}
