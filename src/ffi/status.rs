//! `tarn_status`: the result of every C function.

use crate::error::ErrorKind;
use std::ffi::c_char;

/// The result of a tarn C function. 0 is success; every other value names one kind of
/// failure, and `tarn_last_error()` gives the details. Values are written out and never
/// reused for another meaning; new kinds get new numbers.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tarn_status {
    /// Success.
    TARN_OK = 0,
    /// The bucket or key does not exist (or has expired).
    TARN_NOT_FOUND = 1,
    /// A fail-if-exists write found the key present.
    TARN_EXISTS = 2,
    /// An argument is outside what the function accepts (bad name, unknown flag, ...).
    TARN_INVALID_ARGUMENT = 3,
    /// A required pointer argument is NULL.
    TARN_NULL_ARGUMENT = 4,
    /// A name is not valid UTF-8.
    TARN_INVALID_UTF8 = 5,
    /// A document or body is not valid JSON (or not UTF-8).
    TARN_INVALID_JSON = 6,
    /// A patch is not a well-formed RFC 6902 operation list.
    TARN_INVALID_PATCH = 7,
    /// A patch operation's path (or from) does not exist in the document.
    TARN_PATCH_PATH_NOT_FOUND = 8,
    /// A patch `test` operation did not match.
    TARN_PATCH_TEST_FAILED = 9,
    /// The stored version is not the one the call was conditional on.
    TARN_VERSION_CONFLICT = 10,
    /// A name or document is over its configured bound.
    TARN_TOO_LARGE = 11,
    /// A bounded resource is full and refuses more.
    TARN_FULL = 12,
    /// The operation did not complete in time.
    TARN_TIMEOUT = 13,
    /// The operation is not available in this configuration.
    TARN_NOT_SUPPORTED = 14,
    /// The engine is closed.
    TARN_CLOSED = 15,
    /// A panic was caught at the boundary (a bug in tarn, or in a callback).
    TARN_PANIC = 16,
    /// A listener asked to start from a version older than the change log keeps.
    TARN_TOO_OLD = 17,
}

impl tarn_status {
    /// Every status, for tests and for name look-ups.
    pub const ALL: [tarn_status; 18] = [
        tarn_status::TARN_OK,
        tarn_status::TARN_NOT_FOUND,
        tarn_status::TARN_EXISTS,
        tarn_status::TARN_INVALID_ARGUMENT,
        tarn_status::TARN_NULL_ARGUMENT,
        tarn_status::TARN_INVALID_UTF8,
        tarn_status::TARN_INVALID_JSON,
        tarn_status::TARN_INVALID_PATCH,
        tarn_status::TARN_PATCH_PATH_NOT_FOUND,
        tarn_status::TARN_PATCH_TEST_FAILED,
        tarn_status::TARN_VERSION_CONFLICT,
        tarn_status::TARN_TOO_LARGE,
        tarn_status::TARN_FULL,
        tarn_status::TARN_TIMEOUT,
        tarn_status::TARN_NOT_SUPPORTED,
        tarn_status::TARN_CLOSED,
        tarn_status::TARN_PANIC,
        tarn_status::TARN_TOO_OLD,
    ];

    /// The status's name as a NUL-terminated static string.
    pub fn name(self) -> &'static str {
        match self {
            tarn_status::TARN_OK => "TARN_OK\0",
            tarn_status::TARN_NOT_FOUND => "TARN_NOT_FOUND\0",
            tarn_status::TARN_EXISTS => "TARN_EXISTS\0",
            tarn_status::TARN_INVALID_ARGUMENT => "TARN_INVALID_ARGUMENT\0",
            tarn_status::TARN_NULL_ARGUMENT => "TARN_NULL_ARGUMENT\0",
            tarn_status::TARN_INVALID_UTF8 => "TARN_INVALID_UTF8\0",
            tarn_status::TARN_INVALID_JSON => "TARN_INVALID_JSON\0",
            tarn_status::TARN_INVALID_PATCH => "TARN_INVALID_PATCH\0",
            tarn_status::TARN_PATCH_PATH_NOT_FOUND => "TARN_PATCH_PATH_NOT_FOUND\0",
            tarn_status::TARN_PATCH_TEST_FAILED => "TARN_PATCH_TEST_FAILED\0",
            tarn_status::TARN_VERSION_CONFLICT => "TARN_VERSION_CONFLICT\0",
            tarn_status::TARN_TOO_LARGE => "TARN_TOO_LARGE\0",
            tarn_status::TARN_FULL => "TARN_FULL\0",
            tarn_status::TARN_TIMEOUT => "TARN_TIMEOUT\0",
            tarn_status::TARN_NOT_SUPPORTED => "TARN_NOT_SUPPORTED\0",
            tarn_status::TARN_CLOSED => "TARN_CLOSED\0",
            tarn_status::TARN_PANIC => "TARN_PANIC\0",
            tarn_status::TARN_TOO_OLD => "TARN_TOO_OLD\0",
        }
    }
}

impl From<ErrorKind> for tarn_status {
    fn from(kind: ErrorKind) -> tarn_status {
        match kind {
            ErrorKind::NotFound => tarn_status::TARN_NOT_FOUND,
            ErrorKind::Exists => tarn_status::TARN_EXISTS,
            ErrorKind::InvalidArgument => tarn_status::TARN_INVALID_ARGUMENT,
            ErrorKind::InvalidJson => tarn_status::TARN_INVALID_JSON,
            ErrorKind::InvalidPatch => tarn_status::TARN_INVALID_PATCH,
            ErrorKind::PatchPathNotFound => tarn_status::TARN_PATCH_PATH_NOT_FOUND,
            ErrorKind::PatchTestFailed => tarn_status::TARN_PATCH_TEST_FAILED,
            ErrorKind::VersionConflict => tarn_status::TARN_VERSION_CONFLICT,
            ErrorKind::TooLarge => tarn_status::TARN_TOO_LARGE,
            ErrorKind::Full => tarn_status::TARN_FULL,
            ErrorKind::Timeout => tarn_status::TARN_TIMEOUT,
            ErrorKind::NotSupported => tarn_status::TARN_NOT_SUPPORTED,
            ErrorKind::Closed => tarn_status::TARN_CLOSED,
            ErrorKind::Panic => tarn_status::TARN_PANIC,
            ErrorKind::TooOld => tarn_status::TARN_TOO_OLD,
        }
    }
}

/// The name of a status value (such as "TARN_NOT_FOUND"), or "TARN_UNKNOWN_STATUS" for
/// a value that is not one. The returned string is static: never free it.
#[no_mangle]
pub extern "C" fn tarn_status_name(status: i32) -> *const c_char {
    let name = tarn_status::ALL
        .iter()
        .find(|s| **s as i32 == status)
        .map_or("TARN_UNKNOWN_STATUS\0", |s| s.name());
    name.as_ptr().cast()
}
