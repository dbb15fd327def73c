//! Activation buffers aligned to cache lines.

/// Zeroed f32 values whose first one starts a 64-byte cache line. Rows of activations are
/// multiples of 32 values (128 bytes), so every row, and every vector a kernel loads at a
/// multiple of 16 values into one, lies within a single cache line: a load straddling two lines
/// costs two cache accesses, which made the AVX-512 kernel 20% slower at 8 activation rows
/// (where activation loads outnumber everything else on the load ports).
pub(super) struct LineAligned {
    storage: Vec<f32>,
    start: usize,
}

impl LineAligned {
    /// Values per 64-byte line.
    const LINE: usize = 16;

    pub(super) fn zeroed(len: usize) -> Self {
        let storage = vec![0f32; len + Self::LINE - 1];
        let misaligned = storage.as_ptr() as usize % 64 / std::mem::size_of::<f32>();
        let start = (Self::LINE - misaligned) % Self::LINE;
        LineAligned { storage, start }
    }

    pub(super) fn values(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.storage.len() + 1 - Self::LINE]
    }

    pub(super) fn values_mut(&mut self) -> &mut [f32] {
        let len = self.storage.len() + 1 - Self::LINE;
        &mut self.storage[self.start..self.start + len]
    }
}

#[cfg(test)]
mod tests {
    use super::LineAligned;

    #[test]
    fn line_aligned_values_start_a_cache_line() {
        for len in [0, 1, 15, 16, 33, 4096] {
            let mut aligned = LineAligned::zeroed(len);
            assert_eq!(aligned.values().len(), len);
            assert_eq!(aligned.values().as_ptr() as usize % 64, 0, "{len} values");
            assert!(aligned.values_mut().iter().all(|&v| v == 0.0));
        }
    }
}
