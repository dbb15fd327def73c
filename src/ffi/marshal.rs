//! Checked conversions between C arguments (raw pointers, C strings, buffers) and Rust values.
//! Every helper turns a NULL or malformed argument into a [`Failure`] naming the argument.

use std::ffi::{c_char, CStr, CString};

use super::model::lowbit_model;
use super::status::{lowbit_status, Failure};
use crate::model::Model;

/// The model behind a handle.
///
/// A pointer that is not a live model (freed already, never made by lowbit) is an invalid
/// argument; see `live`.
///
/// # Safety
/// `handle` is NULL or a pointer returned by a load function, not being freed by another
/// thread.
pub(crate) unsafe fn model_ref<'a>(handle: *const lowbit_model) -> Result<&'a Model, Failure> {
    // SAFETY: the caller's contract is this function's.
    Ok(&unsafe { handle_ref(handle) }?.model)
}

/// The handle itself (the model and where its forward passes run), checked as [`model_ref`]
/// checks it.
///
/// # Safety
/// As [`model_ref`].
pub(crate) unsafe fn handle_ref<'a>(
    handle: *const lowbit_model,
) -> Result<&'a lowbit_model, Failure> {
    if handle.is_null() {
        return Err(Failure::null("model"));
    }
    if !super::live::MODELS.contains(handle) {
        return Err(Failure::invalid(format!(
            "model {handle:p} is not a live lowbit_model (freed already, or not made by lowbit)"
        )));
    }
    // SAFETY: non-NULL and registered as live, so it came from lowbit_model::into_raw and was
    // not freed; the caller guarantees no concurrent free. It is only read, and lowbit_model is
    // Sync.
    Ok(unsafe { &*handle })
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

/// Reads a caller's parameter struct of a versioned layout: `T` begins with `size_t
/// struct_size`; every size from `oldest` (the first published layout) up to `size_of::<T>()`
/// is accepted, and fields beyond the caller's `struct_size` keep their values in `defaults`.
/// `name` is the C type name and `defaults_fn` the function that makes its defaults, both for
/// the message of a NULL pointer or an unknown size.
///
/// # Safety
/// `params` is NULL or points to a readable struct whose first field is a `usize`, at least
/// that many bytes long. `T` is a `#[repr(C)]` struct whose fields are valid for any bytes the
/// caller may write (integers, floats, `bool`s it set, raw and optional function pointers).
pub(crate) unsafe fn read_versioned<T: Copy>(
    params: *const T,
    defaults: T,
    layouts: &[usize],
    name: &str,
    defaults_fn: &str,
) -> Result<T, Failure> {
    if params.is_null() {
        return Err(Failure::new(
            lowbit_status::LOWBIT_ERR_NULL_POINTER,
            format!("params is NULL; start from {defaults_fn}()"),
        ));
    }
    // SAFETY: non-NULL; every layout begins with `size_t struct_size`.
    let struct_size = unsafe { params.cast::<usize>().read_unaligned() };
    debug_assert_eq!(layouts.last(), Some(&size_of::<T>()));
    if !layouts.contains(&struct_size) {
        let sizes: Vec<String> = layouts.iter().map(usize::to_string).collect();
        return Err(Failure::invalid(format!(
            "params->struct_size is {struct_size}; this library (lowbit {}) accepts {} \
             (sizeof({name}) of its layouts); start from {defaults_fn}()",
            crate::VERSION,
            sizes.join(" or ")
        )));
    }
    let mut out = defaults;
    // SAFETY: the caller's struct holds `struct_size <= size_of::<T>()` readable bytes; `out` is
    // a distinct local of `size_of::<T>()` bytes. Layouts only grow by appending fields, so the
    // first `struct_size` bytes are whole fields of the caller's (older or equal) layout.
    unsafe {
        std::ptr::copy_nonoverlapping(
            params.cast::<u8>(),
            (&mut out as *mut T).cast::<u8>(),
            struct_size,
        )
    };
    Ok(out)
}

/// Writes a result struct of a versioned layout to the caller's `out`, whose `struct_size` the
/// caller set: checks it against `layouts` (as [`read_versioned`]) and writes that many bytes
/// of `value` (with `struct_size` kept), so a caller built against an older header gets the
/// fields it knows. `name` is the C type name.
///
/// # Safety
/// `out` is NULL or points to a writable struct whose first field, a `usize`, is set, at least
/// that many bytes long. `T` is a `#[repr(C)]` struct beginning with `struct_size: usize`.
pub(crate) unsafe fn write_versioned<T: Copy>(
    out: *mut T,
    mut value: T,
    layouts: &[usize],
    name: &str,
) -> Result<(), Failure> {
    // SAFETY: per this function's contract.
    let struct_size = unsafe { out_struct_size(out, layouts, name) }?;
    // SAFETY: `value` is a local `T`, which begins with a `usize`.
    unsafe { (&mut value as *mut T).cast::<usize>().write(struct_size) };
    // SAFETY: the caller's struct holds `struct_size <= size_of::<T>()` writable bytes, whole
    // fields of its layout; `value` is a distinct local.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&value as *const T).cast::<u8>(),
            out.cast::<u8>(),
            struct_size,
        )
    };
    Ok(())
}

/// The `struct_size` the caller set in a result struct `out`, checked against `layouts`; for
/// entry points to fail before their work when it is wrong.
///
/// # Safety
/// `out` is NULL or points to a struct whose first field, a `usize`, is set.
pub(crate) unsafe fn out_struct_size<T>(
    out: *mut T,
    layouts: &[usize],
    name: &str,
) -> Result<usize, Failure> {
    require(out, "out")?;
    // SAFETY: non-NULL; every layout begins with `size_t struct_size`, set by the caller.
    let struct_size = unsafe { out.cast::<usize>().read_unaligned() };
    if !layouts.contains(&struct_size) {
        let sizes: Vec<String> = layouts.iter().map(usize::to_string).collect();
        return Err(Failure::invalid(format!(
            "out->struct_size is {struct_size}; this library (lowbit {}) accepts {} \
             (sizeof({name}) of its layouts); set it to sizeof({name})",
            crate::VERSION,
            sizes.join(" or ")
        )));
    }
    Ok(struct_size)
}
