//! Running the model: text generation with streaming, and next-token logits.

use std::ffi::{c_char, c_void};

use super::lowbit_model;
use super::marshal::{
    c_str, copy_to_buffer, handle_ref, require, slice, to_c_string, write_if_some, write_out,
};
use super::status::{guard, guard_value, lowbit_status, Failure};
use crate::model::{generate, GenerateParams, TextStream};

/// Settings of `lowbit_generate`. Obtain them from `lowbit_generate_default_params()` and
/// change the fields you need; never build one from scratch, so that `struct_size` is right
/// and fields added by later versions get their defaults.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct lowbit_generate_params {
    /// `sizeof(lowbit_generate_params)` as the caller's header defines it. A library accepts
    /// the sizes of its own layout and of every earlier one; others give
    /// `LOWBIT_ERR_INVALID_ARGUMENT`.
    pub struct_size: usize,
    /// Upper bound on new tokens (default 64).
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 selects greedy decoding (default 0). Must be finite and >= 0.
    pub temperature: f32,
    /// Sample only among the `top_k` most likely tokens; 0 turns the filter off (default 0).
    pub top_k: usize,
    /// Nucleus filter: sample among the most likely tokens whose probabilities sum to `top_p`;
    /// in (0, 1], 1 turns it off (default 1).
    pub top_p: f32,
    /// Seed of the sampler; equal seeds and settings give equal text (default 0).
    pub seed: u64,
    /// Stop at the model's end-of-sequence tokens, which are not part of the output
    /// (default true).
    pub stop_at_eos: bool,
}

/// The `struct_size` of the first published layout of `lowbit_generate_params`. Later
/// versions only append fields, accept every size from this one up to their own, and give
/// fields beyond the caller's `struct_size` their defaults.
const GENERATE_PARAMS_V1_SIZE: usize = size_of::<lowbit_generate_params>();

// When a field is appended, GENERATE_PARAMS_V1_SIZE keeps the old size and
// read_generate_params must copy only `struct_size` bytes over the defaults.
const _: () = assert!(GENERATE_PARAMS_V1_SIZE == size_of::<lowbit_generate_params>());

impl lowbit_generate_params {
    fn from_rust(params: &GenerateParams) -> Self {
        lowbit_generate_params {
            struct_size: size_of::<Self>(),
            max_new_tokens: params.max_new_tokens,
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            seed: params.seed,
            stop_at_eos: params.stop_at_eos,
        }
    }

    fn to_rust(self) -> GenerateParams {
        GenerateParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop_at_eos: self.stop_at_eos,
        }
    }
}

/// The default generation settings: up to 64 new tokens, greedy, stop at end of sequence;
/// `struct_size` is set. The struct is returned by value; nothing to free. Thread-safe.
#[no_mangle]
pub extern "C" fn lowbit_generate_default_params() -> lowbit_generate_params {
    let defaults = || lowbit_generate_params::from_rust(&GenerateParams::default());
    guard_value(
        // Unreachable in practice; a zero struct_size makes any later use fail loudly.
        lowbit_generate_params {
            struct_size: 0,
            ..defaults()
        },
        defaults,
    )
}

/// Called by `lowbit_generate` with each new piece of text as it is produced: `piece` is a
/// non-empty NUL-terminated UTF-8 string, valid only during the call (copy it to keep it);
/// `user_data` is the pointer given to `lowbit_generate`. Return true to continue, false to
/// stop generating (the piece just received is kept in the output). The callback runs on the
/// thread that called `lowbit_generate`; it must not unwind (throw a C++ exception, longjmp)
/// and must not free the model.
#[allow(non_camel_case_types)]
pub type lowbit_token_callback =
    Option<unsafe extern "C" fn(piece: *const c_char, user_data: *mut c_void) -> bool>;

/// Generates a continuation of `prompt`, which is tokenized with special tokens added (as
/// `lowbit_tokenize(..., true, ...)`); the prompt is not repeated in the output.
///
/// `params` NULL means `lowbit_generate_default_params()`. `callback` (may be NULL) receives
/// the text piece by piece as tokens are chosen; bytes of a character split across tokens are
/// held back until it is complete. When the callback returns false generation stops and the
/// call still returns `LOWBIT_OK`, with the text produced so far: stopping is a normal
/// outcome, not an error. When `out_text` is not NULL, `*out_text` receives the whole
/// generated text, which the caller frees with `lowbit_string_free` (set to NULL on failure);
/// the concatenated pieces equal it, except that a character left unfinished by the last token
/// appears only in `*out_text` (as U+FFFD).
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or prompt NULL), `LOWBIT_ERR_INVALID_ARGUMENT`
/// (prompt not UTF-8 or giving no tokens, wrong `params->struct_size`, temperature negative
/// or not finite, top_p outside (0, 1]), `LOWBIT_ERR_TOKENIZER` (no tokenizer, or it failed),
/// `LOWBIT_ERR_UNSUPPORTED` (the text contains a NUL byte, which a C string cannot carry).
///
/// Thread-safe: several threads may generate with one model at once.
///
/// # Safety
/// `model` is NULL or a live model; `prompt` is NULL or NUL-terminated; `params` is NULL or
/// points to a `lowbit_generate_params` whose `struct_size` is set; `callback` is NULL or a
/// function with the `lowbit_token_callback` contract, called with `user_data`; `out_text` is
/// NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn lowbit_generate(
    model: *const lowbit_model,
    prompt: *const c_char,
    params: *const lowbit_generate_params,
    callback: lowbit_token_callback,
    user_data: *mut c_void,
    out_text: *mut *mut c_char,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `out_text` is NULL or writable per this function's contract.
        unsafe { write_if_some(out_text, std::ptr::null_mut()) };
        // SAFETY: `model` is NULL or live per this function's contract.
        let handle = unsafe { handle_ref(model) }?;
        let model = &*handle.model;
        // SAFETY: `prompt` is NULL or NUL-terminated per this function's contract.
        let prompt = unsafe { c_str(prompt, "prompt") }?;
        // SAFETY: `params` is NULL or a struct with `struct_size` set per this contract.
        let params = unsafe { read_generate_params(params) }?;
        let tokenizer = model.require_tokenizer()?;
        let ids = tokenizer.encode(prompt, true)?;
        let mut stream = TextStream::new(tokenizer);
        // An error while streaming stops generation through the callback's return value and
        // is reported after `generate` returns.
        let mut stream_failure = None;
        let generations = generate(handle.decoder(), &[ids], &params, |_, token| {
            let Some(callback) = callback else {
                return true;
            };
            let piece = match stream.push(token).map_err(Failure::from).and_then(|piece| {
                if piece.is_empty() {
                    Ok(None)
                } else {
                    to_c_string(piece, "the generated text").map(Some)
                }
            }) {
                Ok(Some(piece)) => piece,
                Ok(None) => return true,
                Err(failure) => {
                    stream_failure = Some(failure);
                    return false;
                }
            };
            // SAFETY: the caller guarantees `callback` follows the lowbit_token_callback
            // contract; `piece` outlives the call and `user_data` is passed through untouched.
            unsafe { callback(piece.as_ptr(), user_data) }
        })?;
        if let Some(failure) = stream_failure {
            return Err(failure);
        }
        if !out_text.is_null() {
            let tokens = generations.first().map_or(&[][..], |g| g.tokens.as_slice());
            let text = to_c_string(tokenizer.decode(tokens, true)?, "the generated text")?;
            // SAFETY: checked non-NULL; writable per this function's contract.
            unsafe { write_out(out_text, super::model::owned_c_string(text), "out_text") }?;
        }
        Ok(())
    })
}

/// The caller's parameters, or the defaults when `params` is NULL.
///
/// # Safety
/// `params` is NULL or points to a readable struct whose first field is `struct_size`, at
/// least `struct_size` bytes long.
unsafe fn read_generate_params(
    params: *const lowbit_generate_params,
) -> Result<GenerateParams, Failure> {
    if params.is_null() {
        return Ok(GenerateParams::default());
    }
    // SAFETY: non-NULL; every layout begins with `size_t struct_size`.
    let struct_size = unsafe { std::ptr::addr_of!((*params).struct_size).read() };
    let known = GENERATE_PARAMS_V1_SIZE..=size_of::<lowbit_generate_params>();
    if !known.contains(&struct_size) {
        return Err(Failure::invalid(format!(
            "params->struct_size is {struct_size}; this library (lowbit {}) accepts \
             {} to {} (sizeof(lowbit_generate_params)); start from \
             lowbit_generate_default_params()",
            crate::VERSION,
            known.start(),
            known.end()
        )));
    }
    // SAFETY: the caller's struct is `struct_size` bytes long, which (asserted at compile time)
    // is the whole current layout.
    Ok(unsafe { params.read() }.to_rust())
}

/// Runs the model over `n_ids` token ids (a fresh context each call) and writes the logits of
/// the last position, one float per vocabulary entry (`lowbit_model_vocab_size`), to `logits`.
///
/// `*n_logits` always receives the vocabulary size. When `capacity` is smaller, nothing is
/// computed or written and the call returns `LOWBIT_ERR_BUFFER_TOO_SMALL`, so `capacity = 0`
/// (with `logits` NULL) queries the size. Nothing is allocated for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or n_logits NULL; ids NULL with n_ids > 0; logits
/// NULL with a large enough capacity), `LOWBIT_ERR_INVALID_ARGUMENT` (n_ids is 0, or an id is
/// not below the vocabulary size), `LOWBIT_ERR_BUFFER_TOO_SMALL`.
///
/// Thread-safe: several threads may compute logits with one model at once.
///
/// # Safety
/// `model` is NULL or a live model; `ids` is NULL or points to `n_ids` ids; `logits` is NULL or
/// valid for writing `capacity` floats; `n_logits` is NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_logits(
    model: *const lowbit_model,
    ids: *const u32,
    n_ids: usize,
    logits: *mut f32,
    capacity: usize,
    n_logits: *mut usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let decoder = unsafe { handle_ref(model) }?.decoder();
        let vocab_size = decoder.model().config().vocab_size;
        // SAFETY: `n_logits` is NULL or writable per this function's contract.
        unsafe { write_out(n_logits, vocab_size, "n_logits") }?;
        if capacity < vocab_size {
            return Err(Failure::buffer_too_small("logits", capacity, vocab_size));
        }
        require(logits, "logits")?;
        // SAFETY: `ids` points to `n_ids` ids per this function's contract.
        let ids = unsafe { slice(ids, n_ids, "ids") }?;
        let values = decoder.forward(ids, &mut decoder.new_cache()?)?;
        // SAFETY: `logits` holds `capacity >= vocab_size` writable floats per this contract.
        unsafe { copy_to_buffer(&values, logits, capacity, "logits") }
    })
}
