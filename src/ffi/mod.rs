//! The C ABI of lowbit: load a model (choosing its device), tokenize, generate text, compute
//! logits, quantize a checkpoint or a loaded model (RTN, GPTQ, AWQ) and save it, score
//! continuations and the perplexity of a text, evaluate on benchmark tasks, and measure
//! efficiency.
//!
//! include/lowbit.h is generated from the Rust module src/ffi by cbindgen (see build.rs);
//! these notes open both. src/ffi only translates between C and the Rust API.
//!
//! Conventions:
//! - Every function that can fail returns a lowbit_status (LOWBIT_OK is 0) and delivers its
//!   results through out-pointers. lowbit_last_error() gives the message of the last failure
//!   on the calling thread.
//! - Objects and strings lowbit returns belong to the caller until passed to the matching
//!   free function: lowbit_model_free for models, lowbit_string_free for strings. Freeing
//!   NULL is a no-op. lowbit remembers what it handed out, so a double free, or a freed
//!   model passed to a function, is reported (an error status, or for the free functions a
//!   lowbit_last_error() message) instead of corrupting memory, unless a newer object got
//!   the freed address. Set pointers to NULL after freeing them.
//!   Buffers passed in (ids, logits, text) stay the caller's; lowbit never keeps pointers
//!   to them after a call returns.
//! - Results of unknown size go into caller buffers with a capacity; the needed count is
//!   always reported, and LOWBIT_ERR_BUFFER_TOO_SMALL tells the caller to grow the buffer.
//! - Parameter structs begin with size_t struct_size and come from a
//!   lowbit_*_default_params() function, so that later versions can add fields. Result
//!   structs (lowbit_model_info, lowbit_perplexity_result, lowbit_bench_result) also begin
//!   with struct_size, which the caller sets to sizeof(the struct) before the call; the
//!   library writes no more than that many bytes.
//! - Text is UTF-8 and NUL-terminated.
//! - lowbit never aborts its host: invalid arguments give an error status, and an internal
//!   panic is caught and reported as LOWBIT_ERR_INTERNAL.
//! - All functions may be called from any thread. A lowbit_model may be used by several
//!   threads at once; only lowbit_model_free and lowbit_model_quantize, which change it,
//!   must not overlap with other uses of the same model.
//! - Callbacks run on the calling thread, must return normally (no C++ exception, no
//!   longjmp through lowbit), and must not free the model they are called for.
//! - LOWBIT_VERSION_MAJOR/MINOR/PATCH and LOWBIT_VERSION describe this header;
//!   lowbit_version() describes the library loaded at run time.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// cbindgen emits functions in the order these modules are declared (each is its own group
// so that rustfmt keeps the order): status and identity, the model, text, inference,
// quantization, evaluation.
mod status;

mod model;

mod load;

mod text;

mod inference;

mod score;

mod quantize;

mod eval;

mod bench;

mod marshal;

mod live;

pub use bench::{
    lowbit_bench, lowbit_bench_default_params, lowbit_bench_params, lowbit_bench_result,
};
pub use eval::{
    lowbit_eval, lowbit_eval_default_params, lowbit_eval_params, lowbit_eval_progress_callback,
};
pub use inference::{
    lowbit_generate, lowbit_generate_default_params, lowbit_generate_params, lowbit_logits,
    lowbit_token_callback,
};
pub use load::{
    lowbit_load_default_params, lowbit_load_params, lowbit_model_load_with_params,
    lowbit_model_save,
};
pub use model::{
    lowbit_default_model_path, lowbit_last_error, lowbit_model, lowbit_model_free,
    lowbit_model_get_info, lowbit_model_info, lowbit_model_load, lowbit_model_vocab_size,
    lowbit_string_free, lowbit_version,
};
pub use quantize::{
    lowbit_model_quantize, lowbit_progress_callback, lowbit_quantize,
    lowbit_quantize_default_params, lowbit_quantize_params,
};
pub use score::{lowbit_perplexity, lowbit_perplexity_result, lowbit_score_continuations};
pub use status::lowbit_status;
pub use text::{lowbit_detokenize, lowbit_tokenize};

/// The documented thread-safety of `lowbit_model` rests on this: a `Model` is shared by
/// reference across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<crate::model::Model>();
};
