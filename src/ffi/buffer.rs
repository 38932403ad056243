//! `tarn_buf`: bytes the library hands to C.
//!
//! A buffer shares the library's immutable bytes by reference count: a document read
//! hands out the stored bytes themselves (no copy, no re-serialization), and the bytes
//! stay valid until `tarn_buf_free`, whatever happens to the document meanwhile.

use crate::ffi::error::guard_value;
use crate::store::document::Body;
use std::ffi::c_void;
use std::sync::Arc;

/// Bytes returned by the library (JSON text, UTF-8, not NUL-terminated).
///
/// Ownership: the caller owns the buffer and must release it with exactly one call to
/// `tarn_buf_free`. `data` is valid for `len` bytes until then and must not be written.
/// `_owner` is private to the library. A zeroed buffer (all fields 0) is empty and
/// freeing it does nothing.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct tarn_buf {
    /// The first byte (NULL only for an empty buffer).
    pub data: *const u8,
    /// The number of bytes.
    pub len: usize,
    /// Library-private: the reference that keeps `data` alive.
    pub _owner: *mut c_void,
}

impl tarn_buf {
    /// An empty buffer that owns nothing.
    pub(crate) fn empty() -> tarn_buf {
        tarn_buf {
            data: std::ptr::null(),
            len: 0,
            _owner: std::ptr::null_mut(),
        }
    }

    /// A buffer that takes over one reference to `body` (no copy of the bytes).
    pub(crate) fn own(body: Arc<Body>) -> tarn_buf {
        let bytes = body.bytes();
        let (data, len) = (bytes.as_ptr(), bytes.len());
        tarn_buf {
            data,
            len,
            _owner: Arc::into_raw(body) as *mut c_void,
        }
    }

    /// A buffer owning freshly produced bytes.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> tarn_buf {
        tarn_buf::own(Body::new_unchecked(bytes))
    }
}

/// Releases a buffer returned by the library and zeroes it, so a second free does
/// nothing. `buf` NULL, or a zeroed buffer: does nothing. Any thread.
#[no_mangle]
pub extern "C" fn tarn_buf_free(buf: *mut tarn_buf) {
    guard_value((), || {
        // SAFETY: the header requires `buf` to be NULL or to point to a tarn_buf the
        // library filled in (or a zeroed one), not freed since and not shared with a
        // concurrent call.
        let Some(buf) = (unsafe { buf.as_mut() }) else {
            return;
        };
        let owner = std::mem::replace(&mut buf._owner, std::ptr::null_mut());
        buf.data = std::ptr::null();
        buf.len = 0;
        if !owner.is_null() {
            // SAFETY: a non-NULL `_owner` was produced by `Arc::into_raw` on an
            // `Arc<Body>` in `tarn_buf::share` and is released here exactly once (the
            // field is cleared above).
            drop(unsafe { Arc::from_raw(owner as *const Body) });
        }
    })
}
