//! Text <-> token ids through the model's tokenizer, into caller-provided buffers.

use std::ffi::c_char;

use super::lowbit_model;
use super::marshal::{c_str, copy_to_buffer, model_ref, require, slice, write_out};
use super::status::{guard, lowbit_status};

/// Tokenizes `text` with the model's tokenizer. `add_special_tokens` applies the tokenizer's
/// post-processor (for example a beginning-of-sequence token), as Hugging Face's
/// `encode(text, add_special_tokens=True)`.
///
/// Writes up to `capacity` ids to `ids` and always stores the number of ids the text needs in
/// `*n_ids`. When `capacity` is too small the first `capacity` ids are written and the call
/// returns `LOWBIT_ERR_BUFFER_TOO_SMALL`, so `capacity = 0` (with `ids` NULL) queries the
/// size. Nothing is allocated for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model, text or n_ids NULL; ids NULL with capacity > 0),
/// `LOWBIT_ERR_INVALID_ARGUMENT` (text not UTF-8), `LOWBIT_ERR_TOKENIZER` (the model has no
/// tokenizer, or it failed), `LOWBIT_ERR_BUFFER_TOO_SMALL`. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `text` is NULL or NUL-terminated; `ids` is NULL or valid
/// for writing `capacity` ids; `n_ids` is NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_tokenize(
    model: *const lowbit_model,
    text: *const c_char,
    add_special_tokens: bool,
    ids: *mut u32,
    capacity: usize,
    n_ids: *mut usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let model = unsafe { model_ref(model) }?;
        // SAFETY: `text` is NULL or NUL-terminated per this function's contract.
        let text = unsafe { c_str(text, "text") }?;
        require(n_ids, "n_ids")?;
        if capacity > 0 {
            require(ids, "ids")?;
        }
        let encoded = model
            .require_tokenizer()?
            .encode(text, add_special_tokens)?;
        // SAFETY: `n_ids` is non-NULL (checked) and writable per this function's contract.
        unsafe { write_out(n_ids, encoded.len(), "n_ids") }?;
        // SAFETY: `ids` holds `capacity` writable ids per this function's contract.
        unsafe { copy_to_buffer(&encoded, ids, capacity, "ids") }
    })
}

/// Turns `n_ids` token ids back into UTF-8 text; special tokens are left out when
/// `skip_special_tokens`. Ids the tokenizer does not know contribute nothing (as in Hugging
/// Face's `decode`).
///
/// Always stores the text's length in bytes, without the terminating NUL, in `*text_len`.
/// When `capacity >= *text_len + 1` the text and a terminating NUL are written to `text`;
/// otherwise nothing is written and the call returns `LOWBIT_ERR_BUFFER_TOO_SMALL`, so
/// `capacity = 0` (with `text` NULL) queries the size. The text may itself contain NUL bytes
/// (rare; from byte-level tokens), which is why the length is reported. Nothing is allocated
/// for the caller.
///
/// Errors: `LOWBIT_ERR_NULL_POINTER` (model or text_len NULL; ids NULL with n_ids > 0; text
/// NULL with a large enough capacity), `LOWBIT_ERR_TOKENIZER` (no tokenizer, or it failed),
/// `LOWBIT_ERR_BUFFER_TOO_SMALL`. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `ids` is NULL or points to `n_ids` ids; `text` is NULL or
/// valid for writing `capacity` bytes; `text_len` is NULL or valid for writing a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn lowbit_detokenize(
    model: *const lowbit_model,
    ids: *const u32,
    n_ids: usize,
    skip_special_tokens: bool,
    text: *mut c_char,
    capacity: usize,
    text_len: *mut usize,
) -> lowbit_status {
    guard(|| {
        // SAFETY: `model` is NULL or live per this function's contract.
        let model = unsafe { model_ref(model) }?;
        // SAFETY: `ids` points to `n_ids` ids per this function's contract.
        let ids = unsafe { slice(ids, n_ids, "ids") }?;
        require(text_len, "text_len")?;
        let decoded = model
            .require_tokenizer()?
            .decode(ids, skip_special_tokens)?;
        // SAFETY: `text_len` is non-NULL (checked) and writable per this function's contract.
        unsafe { write_out(text_len, decoded.len(), "text_len") }?;
        let mut terminated = decoded.into_bytes();
        terminated.push(0);
        if capacity < terminated.len() {
            return Err(super::status::Failure::buffer_too_small(
                "text",
                capacity,
                terminated.len(),
            ));
        }
        // SAFETY: `text` holds `capacity >= terminated.len()` writable bytes per this
        // function's contract; c_char and u8 have the same size and alignment.
        unsafe { copy_to_buffer(&terminated, text.cast::<u8>(), capacity, "text") }
    })
}
