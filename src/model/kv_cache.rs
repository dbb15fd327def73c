//! Per-sequence key/value cache: for each layer, keys and values of every past position,
//! laid out `[position][kv_head][head_dim]` (post-RoPE keys).

use crate::checkpoint::ModelConfig;

/// The cache of one sequence.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub(crate) keys: Vec<Vec<f32>>,
    pub(crate) values: Vec<Vec<f32>>,
    len: usize,
    row: usize,
}

impl KvCache {
    /// An empty cache shaped for `config`.
    pub fn new(config: &ModelConfig) -> Self {
        KvCache {
            keys: vec![Vec::new(); config.num_hidden_layers],
            values: vec![Vec::new(); config.num_hidden_layers],
            len: 0,
            row: config.num_key_value_heads * config.head_dim,
        }
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every position from `len` on (for reusing a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            for layer in 0..self.keys.len() {
                self.keys[layer].truncate(len * self.row);
                self.values[layer].truncate(len * self.row);
            }
            self.len = len;
        }
    }

    /// Frees the keys and values of one layer (layer-by-layer passes need only the current one).
    pub fn clear_layer(&mut self, layer: usize) {
        if let (Some(k), Some(v)) = (self.keys.get_mut(layer), self.values.get_mut(layer)) {
            *k = Vec::new();
            *v = Vec::new();
        }
    }

    /// Keys of `layer`, `len * kv_heads * head_dim` values (post-RoPE).
    pub fn layer_keys(&self, layer: usize) -> &[f32] {
        &self.keys[layer]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|v| v.len() * 4)
            .sum()
    }

    /// Marks `n` more positions as filled (every layer has appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.keys.iter().all(|k| k.len() == self.len * self.row));
    }
}
