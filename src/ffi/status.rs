//! Status codes, the thread-local last error, and the guard every entry point runs its body in
//! (catch_unwind, error-to-status translation, last-error bookkeeping).

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// The result of every fallible lowbit call. `LOWBIT_OK` is 0; every other value is an error
/// whose text `lowbit_last_error()` gives. The numeric values are part of the ABI and never
/// change; later versions may add values, so treat unknown ones as errors.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum lowbit_status {
    /// Success.
    LOWBIT_OK = 0,
    /// An argument is out of range or inconsistent: an empty path, invalid UTF-8 text, a
    /// `struct_size` this library does not know, a token id outside the vocabulary, an empty
    /// token sequence, a bad sampling parameter.
    LOWBIT_ERR_INVALID_ARGUMENT = 1,
    /// A pointer argument that must not be NULL was NULL.
    LOWBIT_ERR_NULL_POINTER = 2,
    /// The operating system failed to read or write a file (missing file, permission denied);
    /// the message names the path.
    LOWBIT_ERR_IO = 3,
    /// A checkpoint file is malformed (truncated, corrupt header, bad offsets) or its tensors do
    /// not match its configuration (a missing tensor, a wrong shape).
    LOWBIT_ERR_FORMAT = 4,
    /// The checkpoint uses something lowbit does not implement (architecture, data type), or a
    /// result cannot be expressed through the C API (text with a NUL byte in a C string).
    LOWBIT_ERR_UNSUPPORTED = 5,
    /// The model has no tokenizer, or the tokenizer failed.
    LOWBIT_ERR_TOKENIZER = 6,
    /// The operation was cancelled. Returning `false` from a `lowbit_token_callback` is not a
    /// cancellation: it ends generation normally with `LOWBIT_OK`.
    LOWBIT_ERR_CANCELLED = 7,
    /// A bug inside lowbit (a caught panic). The message says where; please report it.
    LOWBIT_ERR_INTERNAL = 8,
    /// An output buffer is smaller than the result. The call has stored the needed size in its
    /// count out-parameter, so the caller can allocate and call again.
    LOWBIT_ERR_BUFFER_TOO_SMALL = 9,
    /// config.json (or GGUF metadata) is missing a field or has an invalid value.
    LOWBIT_ERR_CONFIG = 10,
}

use lowbit_status::*;

/// The status a Rust error becomes at the C boundary. Exhaustive on purpose: a new `Error`
/// variant does not compile until it is given a status here.
pub(crate) fn status_of(error: &Error) -> lowbit_status {
    match error {
        Error::Io { .. } => LOWBIT_ERR_IO,
        Error::Format { .. } | Error::MissingTensor { .. } | Error::ShapeMismatch { .. } => {
            LOWBIT_ERR_FORMAT
        }
        Error::UnsupportedDtype { .. } | Error::UnsupportedArchitecture(_) => {
            LOWBIT_ERR_UNSUPPORTED
        }
        Error::Config { .. } => LOWBIT_ERR_CONFIG,
        Error::Tokenizer(_) => LOWBIT_ERR_TOKENIZER,
        Error::InvalidArgument(_) => LOWBIT_ERR_INVALID_ARGUMENT,
        Error::Cancelled => LOWBIT_ERR_CANCELLED,
        // A GPU that is missing, does not open or fails: the GPU path is not available.
        Error::Device(_) => LOWBIT_ERR_UNSUPPORTED,
    }
}

/// Why an entry point failed: the status it returns and the text `lowbit_last_error` gives.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: lowbit_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: lowbit_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// `what` (an argument name) was NULL.
    pub(crate) fn null(what: &str) -> Self {
        Failure::new(LOWBIT_ERR_NULL_POINTER, format!("{what} is NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(LOWBIT_ERR_INVALID_ARGUMENT, message)
    }

    /// `what` holds `capacity` elements but the result needs `needed`.
    pub(crate) fn buffer_too_small(what: &str, capacity: usize, needed: usize) -> Self {
        Failure::new(
            LOWBIT_ERR_BUFFER_TOO_SMALL,
            format!("{what} holds {capacity} elements, {needed} are needed"),
        )
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::new(status_of(&error), error.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread; empty after a successful one.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    // A C string cannot hold NUL; such bytes (from tokenizer text, say) are shown escaped.
    let text = CString::new(message.replace('\0', "\\0")).expect("NUL bytes were replaced");
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = text);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| {
        if !slot.borrow().is_empty() {
            *slot.borrow_mut() = CString::default();
        }
    });
}

/// The message of the last failure on this thread, as a pointer into thread-local storage.
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: &std::ffi::CStr = c"";
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let detail = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("internal error (panic inside lowbit): {detail}")
}

/// Runs the body of a status-returning entry point: clears the last error, catches a panic
/// (-> `LOWBIT_ERR_INTERNAL`), and records the message of a failure.
///
/// `AssertUnwindSafe` is sound here because a body only reads the model (`&Model`, no interior
/// mutability that a panic could leave half-updated) and writes out-pointers that the caller
/// must ignore when the status is not `LOWBIT_OK`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> lowbit_status {
    clear_last_error();
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Failure::new(
            LOWBIT_ERR_INTERNAL,
            panic_message(payload.as_ref()),
        ))
    });
    match outcome {
        Ok(()) => LOWBIT_OK,
        Err(failure) => {
            set_last_error(&failure.message);
            failure.status
        }
    }
}

/// Runs the body of an entry point that returns a value rather than a status (version,
/// default parameters, frees). A panic yields `fallback` and is recorded as the last error;
/// otherwise the last error is left as it was, so that freeing a string between a failing call
/// and `lowbit_last_error()` does not lose the message.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        set_last_error(&panic_message(payload.as_ref()));
        fallback
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> String {
        // SAFETY: last_error_ptr returns a NUL-terminated string owned by this thread's slot,
        // which is not modified while it is read here.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let status = guard(|| panic!("kaboom {}", 42));
        assert_eq!(status, LOWBIT_ERR_INTERNAL);
        assert!(last_error().contains("kaboom 42"), "{}", last_error());
        assert_eq!(guard_value(7, || panic!("static message")), 7);
        assert!(last_error().contains("static message"));
    }

    #[test]
    fn success_clears_the_last_error_and_failures_set_it() {
        let status = guard(|| Err(Error::invalid("bad top_p").into()));
        assert_eq!(status, LOWBIT_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(), "invalid argument: bad top_p");
        // Value-returning entry points leave the message alone.
        assert_eq!(guard_value(0, || 1), 1);
        assert_eq!(last_error(), "invalid argument: bad top_p");
        assert_eq!(guard(|| Ok(())), LOWBIT_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn nul_bytes_in_messages_are_escaped() {
        let _ = guard(|| Err(Error::Tokenizer("a\0b".into()).into()));
        assert_eq!(last_error(), "tokenizer: a\\0b");
    }

    #[test]
    fn every_error_variant_has_a_distinct_meaning() {
        let io = Error::io("x", std::io::Error::other("boom"));
        assert_eq!(status_of(&io), LOWBIT_ERR_IO);
        assert_eq!(status_of(&Error::format("x", "bad")), LOWBIT_ERR_FORMAT);
        assert_eq!(status_of(&Error::config("x", "bad")), LOWBIT_ERR_CONFIG);
        assert_eq!(status_of(&Error::Cancelled), LOWBIT_ERR_CANCELLED);
        assert_eq!(
            status_of(&Error::UnsupportedArchitecture("Gpt2".into())),
            LOWBIT_ERR_UNSUPPORTED
        );
    }
}
