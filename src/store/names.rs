//! Bucket and key names: what the store accepts, and the bounds it enforces.
//!
//! Decisions (the seed is silent on most of these):
//! - A bucket name is 1..=`max_bucket_bytes` bytes of UTF-8, with no leading or trailing
//!   space or dot, no control characters, not `*` (the listener wildcard), and not
//!   starting with `$` (reserved for the engine's system buckets, such as sessions).
//! - A key is 1..=`max_key_bytes` bytes of UTF-8, without control characters, and not
//!   `*`. The empty key is not a key: reading all of a bucket is its own call.

use crate::error::{Error, ErrorKind, Result};

/// Size bounds of the store, set with the engine builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bucket name, in bytes (default 128).
    pub max_bucket_bytes: usize,
    /// Longest key, in bytes (default 1024).
    pub max_key_bytes: usize,
    /// Largest document, in bytes of JSON text (default 16 MiB). Applies to writes and to
    /// the result of a patch.
    pub max_document_bytes: usize,
    /// Total bytes of keys and documents the store may hold; a write past it fails with
    /// `Full` (default: unbounded).
    pub capacity_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bucket_bytes: 128,
            max_key_bytes: 1024,
            max_document_bytes: 16 << 20,
            capacity_bytes: None,
        }
    }
}

impl Limits {
    /// Checks a bucket name against the rules in the module docs.
    pub fn check_bucket(&self, bucket: &str) -> Result<()> {
        let bad = |why: &str| {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid bucket name {:?}: {why}", clip(bucket)),
            ))
        };
        if bucket.is_empty() {
            return bad("it is empty");
        }
        if bucket.len() > self.max_bucket_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "bucket name of {} bytes is over the limit of {} bytes",
                    bucket.len(),
                    self.max_bucket_bytes
                ),
            ));
        }
        if bucket == "*" {
            return bad("`*` is the listener wildcard");
        }
        if bucket.starts_with('$') {
            return bad("names starting with `$` are reserved for system buckets");
        }
        let first = bucket.as_bytes()[0];
        let last = bucket.as_bytes()[bucket.len() - 1];
        if matches!(first, b' ' | b'.') || matches!(last, b' ' | b'.') {
            return bad("it may not start or end with a space or a dot");
        }
        if bucket.chars().any(char::is_control) {
            return bad("it contains a control character");
        }
        Ok(())
    }

    /// Checks a key against the rules in the module docs.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, "the key is empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "key of {} bytes is over the limit of {} bytes",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        if key == "*" {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "invalid key \"*\": `*` is the listener wildcard",
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "invalid key {:?}: it contains a control character",
                    clip(key)
                ),
            ));
        }
        Ok(())
    }

    /// Checks a document size.
    pub fn check_document(&self, len: usize) -> Result<()> {
        if len > self.max_document_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "document of {len} bytes is over the limit of {} bytes",
                    self.max_document_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// At most 64 characters of a name, for error messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
