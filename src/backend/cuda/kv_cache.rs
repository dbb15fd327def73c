//! The KV cache of one sequence on the GPU: per layer, one contiguous f32 buffer of keys and one
//! of values, `[position][kv_head][head_dim]` with post-RoPE keys (the CPU cache's layout).
//! Buffers grow by doubling (a device copy of the filled part) when a pass needs more room.

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::device::driver_error;
use crate::error::Result;
use crate::model::CacheState;

/// Positions a new cache's buffers hold before their first growth.
const INITIAL_CAPACITY: usize = 64;

/// The keys and values of one sequence, on the device.
pub struct CudaKvCache {
    stream: Arc<CudaStream>,
    keys: Vec<CudaSlice<f32>>,
    values: Vec<CudaSlice<f32>>,
    layers: usize,
    /// `kv_heads * head_dim`.
    row: usize,
    capacity: usize,
    len: usize,
}

impl CudaKvCache {
    /// An empty cache for `layers` layers of `row` values per position (nothing allocated yet).
    pub fn new(stream: &Arc<CudaStream>, layers: usize, row: usize) -> Self {
        CudaKvCache {
            stream: stream.clone(),
            keys: Vec::new(),
            values: Vec::new(),
            layers,
            row,
            capacity: 0,
            len: 0,
        }
    }

    /// Layers.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `positions` positions in every layer, keeping those held.
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        if positions <= self.capacity && !self.keys.is_empty() {
            return Ok(());
        }
        let layers = self.layers;
        let capacity = positions.max(2 * self.capacity).max(INITIAL_CAPACITY);
        let grow = |old: Option<&CudaSlice<f32>>| -> Result<CudaSlice<f32>> {
            // SAFETY: uninitialised device memory, filled with NaN at once (so a read of a
            // position no pass wrote shows in the logits); the held part is copied in below.
            let mut fresh = unsafe { self.stream.alloc::<f32>(capacity * self.row) }
                .map_err(driver_error("allocating the KV cache"))?;
            fill_nan(&self.stream, &mut fresh)?;
            if let Some(old) = old.filter(|_| self.len > 0) {
                let filled = old.slice(..self.len * self.row);
                self.stream
                    .memcpy_dtod(&filled, &mut fresh.slice_mut(..self.len * self.row))
                    .map_err(driver_error("growing the KV cache"))?;
            }
            Ok(fresh)
        };
        let mut keys = Vec::with_capacity(layers);
        let mut values = Vec::with_capacity(layers);
        for layer in 0..layers {
            keys.push(grow(self.keys.get(layer))?);
            values.push(grow(self.values.get(layer))?);
        }
        self.keys = keys;
        self.values = values;
        self.capacity = capacity;
        Ok(())
    }

    /// Device addresses of layer `layer`'s key and value buffers.
    pub fn addresses(&self, layer: usize) -> [u64; 2] {
        [&self.keys[layer], &self.values[layer]].map(|b| b.device_ptr(&self.stream).0)
    }

    /// Marks `n` more positions as written.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.len <= self.capacity);
    }

    /// Keys of layer `layer`, `len * row` values (for checks).
    pub fn keys_to_host(&self, layer: usize) -> Result<Vec<f32>> {
        self.stream
            .clone_dtoh(&self.keys[layer].slice(..self.len * self.row))
            .map_err(driver_error("reading the KV cache"))
    }
}

fn fill_nan(stream: &Arc<CudaStream>, buf: &mut CudaSlice<f32>) -> Result<()> {
    let bytes = buf.len() * 4;
    let (ptr, _record) = buf.device_ptr_mut(stream);
    // SAFETY: exactly the buffer's bytes, on its stream.
    unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream()) }
        .map_err(driver_error("filling the KV cache"))
}

impl CacheState for CudaKvCache {
    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> usize {
        2 * self.keys.len() * self.capacity * self.row * 4
    }

    fn try_clone(&self) -> Result<Box<dyn CacheState>> {
        let mut copy = CudaKvCache {
            stream: self.stream.clone(),
            keys: Vec::new(),
            values: Vec::new(),
            layers: self.layers,
            row: self.row,
            capacity: 0,
            len: 0,
        };
        copy.reserve(self.len.max(1))?;
        if self.len == 0 {
            return Ok(Box::new(copy));
        }
        for (src, dst) in self
            .keys
            .iter()
            .chain(&self.values)
            .zip(copy.keys.iter_mut().chain(copy.values.iter_mut()))
        {
            let n = self.len * self.row;
            self.stream
                .memcpy_dtod(&src.slice(..n), &mut dst.slice_mut(..n))
                .map_err(driver_error("copying the KV cache"))?;
        }
        copy.len = self.len;
        Ok(Box::new(copy))
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
