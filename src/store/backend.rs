//! The backend seam: where the store keeps its documents.
//!
//! The store ([`super::Store`]) owns the rules (names, options, JSON, patches, bounds,
//! expiry scheduling); a backend owns the state and makes each change atomic. The
//! in-memory backend ([`super::memory::MemoryBackend`]) is the default; the durable and
//! Redis backends of later areas implement this same trait, which is why a change is a
//! closure (`decide`) that the backend may run more than once (an optimistic Redis
//! transaction retries it; the memory backend runs it once under the key's shard lock).

use crate::error::Result;
use crate::store::document::{Body, Document};
use std::sync::Arc;

/// What a change does to one key, decided from the key's current document.
pub enum Mutation {
    /// Store `body` as the key's new document.
    Put {
        /// The new JSON bytes.
        body: Arc<Body>,
        /// When it expires, in engine-clock ms (None: never).
        expires_ms: Option<u64>,
        /// The session it expires with (None: none).
        session: Option<u64>,
    },
    /// Remove the key.
    Remove,
}

/// The outcome of one committed change.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The change's version (store-wide sequence number).
    pub version: u64,
    /// The document after the change (None: removed).
    pub current: Option<Document>,
}

/// One key removed because its TTL passed.
#[derive(Debug, Clone)]
pub struct Expired {
    /// Its bucket.
    pub bucket: Arc<str>,
    /// Its key.
    pub key: Arc<str>,
    /// The removal's version.
    pub version: u64,
}

/// A place the store keeps its documents. All methods are called with validated names.
pub trait Backend: Send + Sync + 'static {
    /// The document held for a key, expired or not (the store checks the TTL, so the
    /// clock is only read for documents that have one).
    fn get(&self, bucket: &str, key: &str) -> Option<Document>;

    /// Every document held in a bucket, expired or not, in no particular order.
    fn scan(&self, bucket: &str) -> Vec<(Arc<str>, Document)>;

    /// The names of the buckets that hold at least one live document.
    fn buckets(&self, now_ms: u64) -> Vec<String>;

    /// Atomically changes one key: `decide` sees the live document (or None) and returns
    /// the change, or an error that aborts it with nothing changed. `publish` is called
    /// once with the commit, after it is visible to readers and with no data lock held,
    /// and — for any one key — in commit order (so events can be published in order).
    fn mutate(
        &self,
        bucket: &str,
        key: &str,
        now_ms: u64,
        decide: &mut dyn FnMut(Option<&Document>) -> Result<Mutation>,
        publish: &mut dyn FnMut(&Commit),
    ) -> Result<Commit>;

    /// Removes up to `max` keys whose TTL has passed at `now_ms`, calling `publish` for
    /// each as `mutate` does, and returns how many it removed.
    fn expire(&self, now_ms: u64, max: usize, publish: &mut dyn FnMut(&Expired)) -> usize;

    /// The earliest TTL deadline still held.
    fn next_expiry(&self) -> Option<u64>;

    /// The newest version assigned so far.
    fn last_version(&self) -> u64;

    /// Bytes of keys and documents held (for the capacity bound).
    fn stored_bytes(&self) -> usize;
}
