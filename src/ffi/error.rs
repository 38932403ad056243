//! The entry-point guard and the thread-local last error message.
//!
//! Every C function runs its body inside [`guard`] (or [`guard_value`]): a panic is
//! caught and becomes `TARN_PANIC`; an error becomes its status, and its message is
//! kept for `tarn_last_error()` on the calling thread. The guard wraps the body only,
//! so each function's signature stays plain Rust for cbindgen to read.
//!
//! The last error lives in a thread-local cell, so no lock is involved; it is replaced
//! by the next failing call on the same thread and left alone by successful calls.

use crate::error::Error;
use crate::ffi::status::tarn_status;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// An error at the boundary: a status and its message.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub(crate) status: tarn_status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(status: tarn_status, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn null(what: &str) -> FfiError {
        FfiError::new(tarn_status::TARN_NULL_ARGUMENT, format!("{what} is NULL"))
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError::new(e.kind().into(), e.message())
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let clean = message.replace('\0', "\u{fffd}");
    let c = CString::new(clean).unwrap_or_default();
    LAST_ERROR.with(|cell| *cell.borrow_mut() = c);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic caught at the C boundary: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic caught at the C boundary: {s}")
    } else {
        "panic caught at the C boundary".to_string()
    }
}

/// Runs `body`, turning its error or panic into a status (and the last error message).
#[inline]
pub(crate) fn guard(body: impl FnOnce() -> FfiResult) -> tarn_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => tarn_status::TARN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_message(&*payload));
            tarn_status::TARN_PANIC
        }
    }
}

/// Runs `body` for a function that returns a value instead of a status; a panic gives
/// `fallback` and sets the last error message.
#[inline]
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&panic_message(&*payload));
            fallback
        }
    }
}

/// The message of the most recent failing tarn call on this thread ("" if none).
///
/// Ownership: the string belongs to the library and stays valid until the next failing
/// tarn call on the same thread; copy it to keep it. Never free it.
#[no_mangle]
pub extern "C" fn tarn_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        LAST_ERROR.with(|cell| cell.borrow().as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: tarn_last_error returns a valid NUL-terminated string owned by this
        // thread's cell, unchanged until the next failing call on this thread.
        unsafe { CStr::from_ptr(tarn_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_in_a_body_is_caught_as_tarn_panic_with_its_message() {
        let st = guard(|| panic!("boom at the boundary"));
        assert_eq!(st, tarn_status::TARN_PANIC);
        assert!(last().contains("boom at the boundary"), "{}", last());
        assert_eq!(guard_value(7, || panic!("again")), 7);
        assert!(last().contains("again"));
    }

    #[test]
    fn errors_set_the_message_and_success_leaves_it() {
        let st = guard(|| Err(FfiError::new(tarn_status::TARN_EXISTS, "nul\0inside")));
        assert_eq!(st, tarn_status::TARN_EXISTS);
        assert_eq!(
            last(),
            "nul\u{fffd}inside",
            "a NUL in a message cannot cut it short"
        );
        assert_eq!(guard(|| Ok(())), tarn_status::TARN_OK);
        assert_eq!(last(), "nul\u{fffd}inside");
    }
}
