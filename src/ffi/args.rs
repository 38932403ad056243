//! Checked conversions of C arguments: names, byte ranges, handles, out-pointers.
//!
//! Each function here is the one place its kind of pointer is trusted; the `SAFETY`
//! comments state what the header promises about it.

use crate::ffi::error::{FfiError, FfiResult};
use crate::ffi::status::tarn_status;
use std::ffi::{c_char, CStr};

/// A NUL-terminated UTF-8 name argument.
pub(crate) fn name<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: the header requires name arguments to be NULL (checked above) or to point
    // to a NUL-terminated string that stays valid and unchanged during the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        FfiError::new(
            tarn_status::TARN_INVALID_UTF8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// A pointer + length byte argument.
pub(crate) fn bytes<'a>(p: *const u8, len: usize, what: &str) -> FfiResult<&'a [u8]> {
    if p.is_null() {
        return Err(FfiError::null(what));
    }
    if len > isize::MAX as usize {
        return Err(FfiError::new(
            tarn_status::TARN_INVALID_ARGUMENT,
            format!("{what} length {len} is not a valid length"),
        ));
    }
    // SAFETY: the header requires `p` to point to `len` readable bytes that stay valid
    // and unchanged during the call; `p` is not NULL and `len` fits a slice.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A handle argument (`const T *` that the library handed out).
pub(crate) fn handle<'a, T>(p: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: the header requires handles to be NULL (refused here) or a live pointer
    // returned by this library and not yet freed; the library only hands out properly
    // aligned boxes of T.
    unsafe { p.as_ref() }.ok_or_else(|| FfiError::null(what))
}

/// A required out-pointer.
pub(crate) fn out<'a, T>(p: *mut T, what: &str) -> FfiResult<&'a mut T> {
    // SAFETY: the header requires out-pointers to be NULL (refused here) or to point to
    // writable, aligned storage for one T that nobody else accesses during the call.
    unsafe { p.as_mut() }.ok_or_else(|| FfiError::null(what))
}

/// An optional out-pointer (NULL: the caller does not want this output).
pub(crate) fn out_opt<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: as for `out`, but NULL is allowed and means "not wanted".
    unsafe { p.as_mut() }
}

/// Writes `value` through an optional out-pointer (NULL: not wanted).
pub(crate) fn put<T>(p: *mut T, value: T) {
    if let Some(slot) = out_opt(p) {
        *slot = value;
    }
}

/// An optional options-struct pointer (NULL: defaults).
pub(crate) fn opts<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: the header requires options pointers to be NULL or to point to a valid,
    // aligned struct that stays unchanged during the call.
    unsafe { p.as_ref() }
}

/// Refuses flag bits outside `known`.
pub(crate) fn flags(flags: u32, known: u32, what: &str) -> FfiResult<u32> {
    if flags & !known != 0 {
        return Err(FfiError::new(
            tarn_status::TARN_INVALID_ARGUMENT,
            format!("{what} has unknown flag bits {:#x}", flags & !known),
        ));
    }
    Ok(flags)
}
