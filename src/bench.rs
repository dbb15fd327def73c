//! Efficiency measurement of a loaded model: weight size, prefill and decode speed, time to
//! first token, and the process's resident memory.
//!
//! [`measure`] runs a fixed amount of work, deterministic and greedy, so two runs (or two
//! quantization schemes) do the same number of forward passes over the same token ids:
//!
//! 1. warm-up: the prefill below and one decode step on throwaway caches (starts rayon's threads,
//!    the kernels' per-thread buffers, a GPU's compiled kernels and workspace: what a serving
//!    process pays once, not per request);
//! 2. prefill: one forward pass over `prompt_tokens` ids for each of `batch` sequences (one
//!    ragged batch), then the greedy (argmax) first token of each; this is the time to first
//!    token;
//! 3. decode: `decode_tokens` successive forward passes of one token per sequence with the KV
//!    caches, each feeding back the previous greedy token (end-of-sequence tokens do not stop
//!    it).
//!
//! Greedy tokens come from [`Decoder::greedy_batch`], as in greedy generation: a GPU decoder
//! picks them on the device and returns only the ids, the CPU model takes the argmax of its
//! logits.
//!
//! [`measure`] runs one sequence on the CPU model; [`measure_on`] takes any [`Decoder`] (a GPU
//! copy of the model, say) and a batch size. Rates count the tokens of all sequences.
//!
//! Resident memory comes from `/proc/self/status` on Linux (`VmRSS` now, `VmHWM` the peak) and
//! is `None` elsewhere. The peak is the whole process's: it includes whatever the process held
//! before [`measure`] was called, unless the caller resets it first with [`reset_peak_rss`].

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Dtype;
use crate::error::{Error, Result};
use crate::model::{Cache, Decoder, Model, Weight};

/// What one [`measure`] call found. Sizes are bytes, times seconds, rates per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EfficiencyReport {
    /// The weights of the decoder blocks: a scheme name (`w4a16-g128`, ...), a dense dtype
    /// (`f32`, `bf16`, `f16`), or `mixed` when the blocks' projections differ.
    pub scheme: String,
    /// Size on disk of the checkpoint the model came from, when the caller knows it
    /// ([`measure`] leaves it `None`; see [`checkpoint_disk_bytes`]).
    pub checkpoint_bytes: Option<u64>,
    /// Bytes of weight data in memory ([`Model::weight_bytes`]): projections (codes, scales and
    /// zero points when quantized), the embedding, and an untied LM head.
    pub weight_bytes: u64,
    /// Number of weight parameters ([`Model::parameter_count`]).
    pub parameter_count: u64,
    /// Threads in the rayon pool the forward passes ran on.
    pub threads: usize,
    /// Sequences run together (prefill and decode rates count all of them).
    #[serde(default = "one")]
    pub batch: usize,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Single-token decode steps timed.
    pub decode_tokens: usize,
    /// Seconds of the prefill forward pass.
    pub prefill_s: f64,
    /// `prompt_tokens / prefill_s`.
    pub prefill_tokens_per_s: f64,
    /// Seconds from the start of prefill to the first greedy token.
    pub time_to_first_token_s: f64,
    /// Seconds of all decode steps together.
    pub decode_s: f64,
    /// `decode_tokens / decode_s`.
    pub decode_tokens_per_s: f64,
    /// Bytes of the KV cache after the last decode step.
    pub kv_cache_bytes: u64,
    /// Resident set size after the run (`VmRSS`); `None` off Linux.
    pub rss_bytes: Option<u64>,
    /// Peak resident set size of the process (`VmHWM`): the process-wide peak since it started
    /// or since the last [`reset_peak_rss`], not only during this run; `None` off Linux.
    pub peak_rss_bytes: Option<u64>,
}

/// Measures `model` on `prompt_tokens` prompt ids followed by `decode_tokens` greedy decode
/// steps (see the module documentation for the exact sequence).
///
/// Errors: [`Error::InvalidArgument`] when either count is 0 or the run would need more
/// positions than the model's `max_position_embeddings`; any error of the forward pass.
pub fn measure(
    model: &Model,
    prompt_tokens: usize,
    decode_tokens: usize,
) -> Result<EfficiencyReport> {
    measure_on(model, prompt_tokens, decode_tokens, 1)
}

fn one() -> usize {
    1
}

/// [`measure`] on `decoder` with `batch` sequences (see the module documentation).
///
/// Errors: as [`measure`], and [`Error::InvalidArgument`] when `batch` is 0.
pub fn measure_on(
    decoder: &dyn Decoder,
    prompt_tokens: usize,
    decode_tokens: usize,
    batch: usize,
) -> Result<EfficiencyReport> {
    let model = decoder.model();
    let config = model.config();
    if prompt_tokens == 0 || decode_tokens == 0 || batch == 0 {
        return Err(Error::invalid(format!(
            "benchmark needs at least one prompt and one decode token and one sequence \
             (got {prompt_tokens} prompt, {decode_tokens} decode, batch {batch})"
        )));
    }
    let positions = prompt_tokens.saturating_add(decode_tokens);
    if positions > config.max_position_embeddings {
        return Err(Error::invalid(format!(
            "{prompt_tokens} prompt + {decode_tokens} decode tokens exceed the model's context \
             of {} positions",
            config.max_position_embeddings
        )));
    }
    // Each sequence starts at another point of the walk, so no two prompts are the same.
    let walk = prompt_ids(config.vocab_size, prompt_tokens + batch);
    let prompts: Vec<&[u32]> = (0..batch).map(|s| &walk[s..s + prompt_tokens]).collect();
    let new_caches = || -> Result<Vec<Cache>> { (0..batch).map(|_| decoder.new_cache()).collect() };
    let step = |inputs: &[&[u32]], caches: &mut [Cache]| -> Result<Vec<u32>> {
        let mut refs: Vec<&mut Cache> = caches.iter_mut().collect();
        decoder.greedy_batch(inputs, &mut refs)
    };

    let mut warm_up = new_caches()?;
    let first = step(&prompts, &mut warm_up)?;
    let singles: Vec<[u32; 1]> = first.iter().map(|&t| [t]).collect();
    let inputs: Vec<&[u32]> = singles.iter().map(|t| t.as_slice()).collect();
    step(&inputs, &mut warm_up)?;
    drop(warm_up);

    let mut caches = new_caches()?;
    let started = Instant::now();
    let mut tokens = step(&prompts, &mut caches)?;
    let prefill_s = started.elapsed().as_secs_f64();
    let time_to_first_token_s = prefill_s;

    let started = Instant::now();
    for _ in 0..decode_tokens {
        let singles: Vec<[u32; 1]> = tokens.iter().map(|&t| [t]).collect();
        let inputs: Vec<&[u32]> = singles.iter().map(|t| t.as_slice()).collect();
        tokens = step(&inputs, &mut caches)?;
    }
    let decode_s = started.elapsed().as_secs_f64();

    let memory = memory_usage();
    let (prompt_total, decode_total) = (batch * prompt_tokens, batch * decode_tokens);
    Ok(EfficiencyReport {
        scheme: weights_label(model),
        checkpoint_bytes: None,
        weight_bytes: model.weight_bytes() as u64,
        parameter_count: model.parameter_count() as u64,
        threads: rayon::current_num_threads(),
        batch,
        prompt_tokens,
        decode_tokens,
        prefill_s,
        prefill_tokens_per_s: prompt_total as f64 / prefill_s.max(f64::MIN_POSITIVE),
        time_to_first_token_s,
        decode_s,
        decode_tokens_per_s: decode_total as f64 / decode_s.max(f64::MIN_POSITIVE),
        kv_cache_bytes: caches.iter().map(|c| c.bytes() as u64).sum(),
        rss_bytes: memory.map(|m| m.rss_bytes),
        peak_rss_bytes: memory.map(|m| m.peak_rss_bytes),
    })
}

/// `count` deterministic token ids spread over the vocabulary (a fixed stride walk, so every
/// run and every scheme sees the same prompt).
fn prompt_ids(vocab_size: usize, count: usize) -> Vec<u32> {
    // 7919 is prime, so the walk visits distinct ids for any vocabulary it does not divide.
    let vocab = vocab_size.max(1) as u64;
    (0..count as u64)
        .map(|i| ((17 + i * 7919) % vocab) as u32)
        .collect()
}

/// The name [`EfficiencyReport::scheme`] gives the weights of `model`'s decoder blocks.
pub fn weights_label(model: &Model) -> String {
    let mut labels = model
        .blocks()
        .iter()
        .flat_map(|b| b.linears())
        .map(|l| match &l.weight {
            Weight::Quantized(q) => q.scheme().to_string(),
            Weight::Dense(t) => dtype_label(t.dtype()).to_string(),
        });
    let Some(first) = labels.next() else {
        return "none".to_string();
    };
    if labels.all(|l| l == first) {
        first
    } else {
        "mixed".to_string()
    }
}

fn dtype_label(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::BF16 => "bf16",
        Dtype::I8 => "i8",
        Dtype::U8 => "u8",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::F8E4M3 => "f8_e4m3",
    }
}

/// Resident memory of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident set size now (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size of the process (`VmHWM`), since start or the last
    /// [`reset_peak_rss`].
    pub peak_rss_bytes: u64,
}

/// Current and peak resident memory of this process, from `/proc/self/status`; `None` where
/// that file does not exist or lacks the fields (every platform but Linux).
pub fn memory_usage() -> Option<MemoryUsage> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(MemoryUsage {
        rss_bytes: status_kib(&status, "VmRSS")? * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM")? * 1024,
    })
}

/// The value of a `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Resets the process's peak resident set size to its current value (Linux 4.0 and later, by
/// writing `5` to `/proc/self/clear_refs`), so that a later [`memory_usage`] or [`measure`]
/// reports the peak from here on. Returns whether it worked; elsewhere it does nothing.
///
/// This changes process-wide state: call it from a program that owns its process (the CLI), not
/// from a library embedded in a host that tracks its own peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Returns freed heap memory to the operating system where the allocator keeps it resident
/// (glibc's `malloc_trim`), so that the resident set reflects live data; returns whether the
/// platform has such a call. Loading and quantizing a model frees many buffers below glibc's
/// mmap threshold, which otherwise stay resident and count in the next peak.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers from us and is
        // thread-safe (each arena is locked while trimmed).
        unsafe {
            malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes a checkpoint occupies on disk: the file's size for a single file, or the summed
/// sizes of the `.safetensors` and `.gguf` files of a directory (configuration and tokenizer
/// files are not counted).
///
/// Errors: [`Error::Io`] when `path` or a directory entry cannot be read.
pub fn checkpoint_disk_bytes(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let file = entry.path();
        let weights = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("safetensors" | "gguf")
        );
        if weights {
            total += std::fs::metadata(&file)
                .map_err(|e| Error::io(&file, e))?
                .len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::synthetic::{self, Variant};

    fn tiny_model() -> Model {
        Model::from_checkpoint(&synthetic::build(Variant::LlamaGqa, 3), None).unwrap()
    }

    #[test]
    fn measure_reports_positive_rates() {
        let model = tiny_model();
        let report = measure(&model, 6, 3).unwrap();
        assert_eq!(report.scheme, "f32");
        assert_eq!((report.prompt_tokens, report.decode_tokens), (6, 3));
        for rate in [report.prefill_tokens_per_s, report.decode_tokens_per_s] {
            assert!(rate.is_finite() && rate > 0.0, "{report:?}");
        }
        assert!(report.time_to_first_token_s >= report.prefill_s);
        assert!(report.kv_cache_bytes > 0);
        if cfg!(target_os = "linux") {
            let (rss, peak) = (report.rss_bytes.unwrap(), report.peak_rss_bytes.unwrap());
            assert!(rss > 0 && peak >= rss, "{report:?}");
        }
    }

    #[test]
    fn bad_token_counts_are_errors() {
        let model = tiny_model();
        let context = model.config().max_position_embeddings;
        for (prompt, decode) in [(0, 4), (4, 0), (context, 1), (usize::MAX, usize::MAX)] {
            assert!(
                matches!(
                    measure(&model, prompt, decode),
                    Err(Error::InvalidArgument(_))
                ),
                "{prompt} {decode}"
            );
        }
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn prompt_ids_stay_in_the_vocabulary() {
        let ids = prompt_ids(256, 100);
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|&t| t < 256));
        assert_eq!(ids, prompt_ids(256, 100));
    }
}
