//! Stored documents: immutable JSON bytes shared by reference, plus their metadata.
//!
//! A document's bytes are validated once, when written, and never re-serialized on
//! read: readers (Rust or C) share the same immutable allocation.

use crate::error::{Error, ErrorKind, Result};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;

/// The immutable bytes of one stored JSON document.
#[derive(Debug)]
pub(crate) struct Body {
    bytes: Box<[u8]>,
}

impl Body {
    /// Wraps bytes already known to be one valid JSON value.
    pub(crate) fn new_unchecked(bytes: Vec<u8>) -> Arc<Body> {
        Arc::new(Body {
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// Validates `bytes` as one JSON value (UTF-8, full grammar, string escapes and
    /// fewer than 128 levels of nesting) and wraps a copy of them.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Arc<Body>> {
        validate_json(bytes)?;
        Ok(Body::new_unchecked(bytes.to_vec()))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Checks that `bytes` hold exactly one JSON value, without building it.
pub(crate) fn validate_json(bytes: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidJson,
            format!("the document is not valid UTF-8: {e}"),
        )
    })?;
    serde_json::from_str::<Valid>(text)
        .map(|_| ())
        .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("invalid JSON: {e}")))
}

/// Accepts any JSON value. Unlike `IgnoredAny`, it makes serde_json decode every string
/// (so bad escapes such as lone surrogates are refused) while allocating nothing.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Valid, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> Visitor<'de> for ValidVisitor {
    type Value = Valid;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> std::result::Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// One stored document as read: its JSON bytes (shared, never copied by a read), its
/// version, and when it was last modified and will expire, in engine-clock milliseconds.
#[derive(Clone)]
pub struct Document {
    pub(crate) body: Arc<Body>,
    pub(crate) version: u64,
    pub(crate) modified_ms: u64,
    pub(crate) expires_ms: Option<u64>,
    /// The session whose closing removes this document (`expire_session` writes).
    pub(crate) session: Option<u64>,
}

impl Document {
    /// The document's JSON text, exactly as written (or as a patch produced it).
    pub fn bytes(&self) -> &[u8] {
        self.body.bytes()
    }

    /// The document's JSON text as a `str` (always valid UTF-8).
    pub fn as_str(&self) -> &str {
        // Bodies are validated as UTF-8 when written; this cannot fail.
        std::str::from_utf8(self.body.bytes()).unwrap_or_default()
    }

    /// Parses the document into a `serde_json::Value`.
    pub fn value(&self) -> Result<serde_json::Value> {
        self.to()
    }

    /// Deserializes the document into any `T`.
    pub fn to<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.body.bytes()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidJson,
                format!("the document does not fit the requested type: {e}"),
            )
        })
    }

    /// The version: a store-wide sequence number, assigned to every change, so it
    /// increases each time this key changes (and never repeats, even after removal).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the document was last written or patched (engine-clock ms since the epoch).
    pub fn modified_ms(&self) -> u64 {
        self.modified_ms
    }

    /// When the document expires, if it has a TTL (engine-clock ms since the epoch).
    pub fn expires_ms(&self) -> Option<u64> {
        self.expires_ms
    }

    /// The session this document expires with, if it was written with `expire_session`.
    pub fn session(&self) -> Option<u64> {
        self.session
    }

    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| e > now_ms)
    }
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("json", &self.as_str())
            .field("version", &self.version)
            .field("modified_ms", &self.modified_ms)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}
