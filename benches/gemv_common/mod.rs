//! Pieces shared by `benches/gemv.rs` and `benches/gemv_paired.rs`: the memory-read probe
//! (one loop, so both benches measure bandwidth with the same machine code) and owned copies of
//! quantized weights. Included by each with `#[path]`; not a bench target of its own.

use lowbit::checkpoint::Tensor;
use lowbit::quant::{QuantizedTensor, Scales};
use rayon::prelude::*;

/// A probe buffer of `bytes` (rounded down to whole words), written, not zeroed: untouched
/// zero pages all map one physical page and read from cache.
pub fn probe_buffer(bytes: usize) -> Vec<u64> {
    let mut words = vec![0u64; bytes / 8];
    words
        .par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(i, chunk)| {
            for (j, w) in chunk.iter_mut().enumerate() {
                *w = (i << 16 | j) as u64;
            }
        });
    words
}

/// One read pass over `words`: on the calling thread when `threads` is 1, else split over the
/// current rayon pool. Returns the wrapping sum, for `black_box`.
pub fn read_pass(words: &[u64], threads: usize) -> u64 {
    if threads == 1 {
        sum_words(words)
    } else {
        words
            .par_chunks(1 << 18)
            .map(sum_words)
            .reduce(|| 0, u64::wrapping_add)
    }
}

/// Not inlined, so that every caller runs the same machine code.
#[inline(never)]
fn sum_words(words: &[u64]) -> u64 {
    // Eight independent accumulators so the loop vectorizes and is bound by loads alone.
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for chunk in &mut chunks {
        for (a, &w) in acc.iter_mut().zip(chunk) {
            *a = a.wrapping_add(w);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |s, &w| s.wrapping_add(w));
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

/// An owned copy of `t` in new memory (cloning a `Tensor` shares its storage).
pub fn copy_tensor(t: &Tensor) -> Tensor {
    Tensor::from_bytes(t.shape().to_vec(), t.dtype(), t.raw_bytes())
}

/// An owned copy of `q` in new memory.
pub fn copy_quantized(q: &QuantizedTensor) -> QuantizedTensor {
    let scales = match q.scales() {
        Scales::Dense(t) => Scales::Dense(copy_tensor(t)),
        Scales::Double(dq) => Scales::Double(dq.clone()),
    };
    QuantizedTensor::new(
        *q.scheme(),
        [q.rows(), q.cols()],
        copy_tensor(q.codes()),
        scales,
        q.zero_points().map(<[i8]>::to_vec),
    )
    .expect("a copy of a valid quantized tensor")
}
