//! The one error type of the Rust API.
//!
//! Every failure carries an [`ErrorKind`] (what went wrong, stable and matchable) and
//! a message (the details, for people). The C ABI maps each kind to exactly one
//! `tarn_status` value (see `src/ffi/status.rs`); adding a kind means adding a status.

use std::fmt;

/// What kind of failure an [`Error`] is. Each kind has its own C status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bucket or key does not exist (or has expired).
    NotFound,
    /// A write with `fail_if_exists` found the key already present.
    Exists,
    /// An argument is outside what the operation accepts (bad name, zero TTL, ...).
    InvalidArgument,
    /// A document or body is not valid JSON (or not valid UTF-8).
    InvalidJson,
    /// A JSON patch is not a well-formed RFC 6902 operation list.
    InvalidPatch,
    /// A patch operation names a path (or `from`) that does not exist in the document.
    PatchPathNotFound,
    /// A patch `test` operation did not match.
    PatchTestFailed,
    /// `if_version` did not match the stored version.
    VersionConflict,
    /// A name or document is larger than the engine's configured bound.
    TooLarge,
    /// A bounded resource (store capacity, queue) is full and its policy is to refuse.
    Full,
    /// An operation did not complete in the time allowed.
    Timeout,
    /// The operation is not available in this configuration (e.g. setting a system clock).
    NotSupported,
    /// The engine has been closed.
    Closed,
    /// A user callback panicked; the panic was caught.
    Panic,
    /// A listener asked to start from a version older than the change log keeps.
    TooOld,
}

impl ErrorKind {
    /// A short, stable, lowercase name for the kind (also used in C status names).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Exists => "exists",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::InvalidJson => "invalid json",
            ErrorKind::InvalidPatch => "invalid patch",
            ErrorKind::PatchPathNotFound => "patch path not found",
            ErrorKind::PatchTestFailed => "patch test failed",
            ErrorKind::VersionConflict => "version conflict",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Full => "full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotSupported => "not supported",
            ErrorKind::Closed => "closed",
            ErrorKind::Panic => "panic",
            ErrorKind::TooOld => "too old",
        }
    }
}

/// An error from any tarn operation: a kind plus a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// Makes an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The details.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn closed() -> Error {
        Error::new(ErrorKind::Closed, "the engine is closed")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

/// The result type of tarn operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
