//! Checked conversions between C arguments (raw pointers, C strings, buffers) and Rust values.
//! Every helper turns a NULL or malformed argument into a [`Failure`] naming the argument.

use std::ffi::{c_char, CStr, CString};

use super::model::lowbit_model;
use super::status::{lowbit_status, Failure};
use crate::model::Model;

/// The model behind a handle.
///
/// # Safety
/// `handle` is NULL or a pointer returned by `lowbit_model_load` and not yet freed.
pub(crate) unsafe fn model_ref<'a>(handle: *const lowbit_model) -> Result<&'a Model, Failure> {
    // SAFETY: the caller guarantees a non-NULL handle points to a live lowbit_model; it is
    // only read, and lowbit_model is Sync.
    unsafe { handle.as_ref() }
        .map(|h| &h.model)
        .ok_or_else(|| Failure::null("model"))
}

/// A NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays unchanged during the call.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| {
        Failure::invalid(format!(
            "{what} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// `len` elements at `ptr`; NULL is accepted when `len` is 0.
///
/// # Safety
/// When `len > 0`, `ptr` is NULL or points to `len` initialized, aligned elements that stay
/// unchanged during the call.
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    let fits =
        matches!(len.checked_mul(size_of::<T>()), Some(bytes) if bytes <= isize::MAX as usize);
    if !fits {
        return Err(Failure::invalid(format!(
            "{what}: {len} elements is too many"
        )));
    }
    // SAFETY: non-NULL, `len` valid elements per the caller's contract, size checked above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Fails unless an out-pointer is non-NULL.
pub(crate) fn require<T>(ptr: *mut T, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        Err(Failure::null(what))
    } else {
        Ok(())
    }
}

/// Stores `value` through an out-pointer (without reading or dropping what was there, which
/// may be uninitialized C memory).
///
/// # Safety
/// `ptr` is NULL or valid for a write of one `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T, what: &str) -> Result<(), Failure> {
    require(ptr, what)?;
    // SAFETY: non-NULL and writable per the caller's contract; `write` ignores the old value.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Stores `value` through an out-pointer if it is non-NULL (for optional outputs and for
/// resetting outputs at the start of a call).
///
/// # Safety
/// `ptr` is NULL or valid for a write of one `T`.
pub(crate) unsafe fn write_if_some<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { ptr.write(value) };
    }
}

/// Copies `values` to the caller's buffer `dst` of `capacity` elements: all of them when they
/// fit, else the first `capacity` followed by `LOWBIT_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `dst` is NULL or valid for writes of `capacity` elements, not overlapping `values`.
pub(crate) unsafe fn copy_to_buffer<T: Copy>(
    values: &[T],
    dst: *mut T,
    capacity: usize,
    what: &str,
) -> Result<(), Failure> {
    let count = values.len().min(capacity);
    if count > 0 {
        require(dst, what)?;
        // SAFETY: `dst` is non-NULL and holds `capacity >= count` writable elements per the
        // caller's contract; `values` is Rust memory, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, count) };
    }
    if values.len() > capacity {
        return Err(Failure::buffer_too_small(what, capacity, values.len()));
    }
    Ok(())
}

/// Text as an owned C string for the caller (freed by `lowbit_string_free`).
pub(crate) fn to_c_string(text: String, what: &str) -> Result<CString, Failure> {
    CString::new(text).map_err(|e| {
        Failure::new(
            lowbit_status::LOWBIT_ERR_UNSUPPORTED,
            format!(
                "{what} contains a NUL byte at offset {}, which a C string cannot carry",
                e.nul_position()
            ),
        )
    })
}
