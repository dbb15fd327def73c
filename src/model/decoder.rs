//! The seam between what runs a model (generation, scoring, benchmarks) and where its forward
//! pass runs: [`Decoder`] is implemented by the CPU [`Model`] and by the GPU copy of a model
//! (`backend::cuda::model::CudaModel`, feature `cuda`). Each keeps its own per-sequence KV cache
//! behind [`Cache`], which the caller creates, copies and hands back but never looks inside.

use std::any::Any;

use super::forward::Logits;
use super::{KvCache, Model};
use crate::error::{Error, Result};

/// Something that runs the forward pass of a model over a ragged batch.
pub trait Decoder {
    /// The model on the host: configuration, tokenizer, weights as loaded.
    fn model(&self) -> &Model;

    /// A new, empty cache for one sequence.
    fn new_cache(&self) -> Result<Cache>;

    /// Runs `inputs[i]` after the positions already in `caches[i]`, appends their keys and
    /// values, and returns logits per sequence: `vocab` values for [`Logits::Last`], or
    /// `inputs[i].len() * vocab` for [`Logits::All`] (see [`Model::forward_batch`]).
    fn forward_batch(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut Cache],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>>;

    /// Runs `inputs[i]` after `caches[i]` as [`Decoder::forward_batch`] with [`Logits::Last`]
    /// and returns each sequence's greedy next token: the index of its largest logit, the first
    /// on ties ([`crate::model::sampling::argmax`]). A GPU decoder picks on the device and
    /// copies back only the ids.
    fn greedy_batch(&self, inputs: &[&[u32]], caches: &mut [&mut Cache]) -> Result<Vec<u32>> {
        let logits = self.forward_batch(inputs, caches, Logits::Last)?;
        Ok(logits
            .iter()
            .map(|l| crate::model::sampling::argmax(l) as u32)
            .collect())
    }

    /// Runs `tokens` after what `cache` holds and returns the last position's logits.
    fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        let mut out = self.forward_batch(&[tokens], &mut [cache], Logits::Last)?;
        Ok(out.pop().unwrap_or_default())
    }
}

/// What a [`Decoder`] keeps per sequence (its KV cache), type-erased.
pub trait CacheState: Any + Send {
    /// Positions held.
    fn len(&self) -> usize;
    /// Whether no position is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held.
    fn bytes(&self) -> usize;
    /// A copy (for sequences that share a prefix).
    fn try_clone(&self) -> Result<Box<dyn CacheState>>;
    /// For the decoder that made it, to get its own type back.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A per-sequence cache made by a [`Decoder`] (see [`Decoder::new_cache`]).
pub struct Cache(Box<dyn CacheState>);

impl Cache {
    /// Wraps a decoder's own cache.
    pub fn new(state: impl CacheState) -> Self {
        Cache(Box::new(state))
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }

    /// A copy of the cache (a device copy for GPU caches, which can fail).
    pub fn try_clone(&self) -> Result<Cache> {
        Ok(Cache(self.0.try_clone()?))
    }

    /// The decoder's own cache type, or an error when the cache was made by another decoder.
    pub fn downcast_mut<T: CacheState>(&mut self) -> Result<&mut T> {
        self.0
            .as_any_mut()
            .downcast_mut::<T>()
            .ok_or_else(|| Error::invalid("the KV cache was made by another backend"))
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("len", &self.len()).finish()
    }
}

impl CacheState for KvCache {
    fn len(&self) -> usize {
        KvCache::len(self)
    }

    fn bytes(&self) -> usize {
        KvCache::bytes(self)
    }

    fn try_clone(&self) -> Result<Box<dyn CacheState>> {
        Ok(Box::new(self.clone()))
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Decoder for Model {
    fn model(&self) -> &Model {
        self
    }

    fn new_cache(&self) -> Result<Cache> {
        Ok(Cache::new(Model::new_cache(self)))
    }

    fn forward_batch(
        &self,
        inputs: &[&[u32]],
        caches: &mut [&mut Cache],
        which: Logits,
    ) -> Result<Vec<Vec<f32>>> {
        let mut own = caches
            .iter_mut()
            .map(|c| c.downcast_mut::<KvCache>())
            .collect::<Result<Vec<_>>>()?;
        Model::forward_batch(self, inputs, &mut own, which)
    }
}
