//! The C ABI of lowbit: load a model, tokenize, generate text, compute logits, quantize a
//! checkpoint, score a model on evaluation tasks.
//!
//! include/lowbit.h is generated from the Rust module src/ffi by cbindgen (see build.rs);
//! these notes open both. src/ffi only translates between C and the Rust API.
//!
//! Conventions:
//! - Every function that can fail returns a lowbit_status (LOWBIT_OK is 0) and delivers its
//!   results through out-pointers. lowbit_last_error() gives the message of the last failure
//!   on the calling thread.
//! - Objects and strings lowbit returns belong to the caller until passed to the matching
//!   free function: lowbit_model_free for models, lowbit_string_free for strings.
//!   Buffers passed in (ids, logits, text) stay the caller's; lowbit never keeps pointers
//!   to them after a call returns.
//! - Results of unknown size go into caller buffers with a capacity; the needed count is
//!   always reported, and LOWBIT_ERR_BUFFER_TOO_SMALL tells the caller to grow the buffer.
//! - Parameter structs begin with size_t struct_size and come from a
//!   lowbit_*_default_params() function, so that later versions can add fields.
//! - Text is UTF-8 and NUL-terminated.
//! - lowbit never aborts its host: invalid arguments give an error status, and an internal
//!   panic is caught and reported as LOWBIT_ERR_INTERNAL.
//! - All functions may be called from any thread. A lowbit_model is immutable after loading
//!   and may be used by several threads at once; only lowbit_model_free must not overlap
//!   with other uses of the same model.
//! - LOWBIT_VERSION_MAJOR/MINOR/PATCH and LOWBIT_VERSION describe this header;
//!   lowbit_version() describes the library loaded at run time.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// cbindgen emits functions in the order these modules are declared (each is its own group
// so that rustfmt keeps the order): status and identity, the model, text, inference,
// quantization, evaluation.
mod status;

mod model;

mod text;

mod inference;

mod quantize;

mod eval;

mod marshal;

pub use eval::{
    lowbit_eval, lowbit_eval_default_params, lowbit_eval_params, lowbit_eval_progress_callback,
};
pub use inference::{
    lowbit_generate, lowbit_generate_default_params, lowbit_generate_params, lowbit_logits,
    lowbit_token_callback,
};
pub use model::{
    lowbit_default_model_path, lowbit_last_error, lowbit_model, lowbit_model_free,
    lowbit_model_get_info, lowbit_model_info, lowbit_model_load, lowbit_model_vocab_size,
    lowbit_string_free, lowbit_version,
};
pub use quantize::{
    lowbit_progress_callback, lowbit_quantize, lowbit_quantize_default_params,
    lowbit_quantize_params,
};
pub use status::lowbit_status;
pub use text::{lowbit_detokenize, lowbit_tokenize};

/// The documented thread-safety of `lowbit_model` rests on this: a `Model` is shared by
/// reference across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<crate::model::Model>();
};
