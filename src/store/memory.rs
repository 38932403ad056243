//! The in-memory backend: buckets of sharded hash maps.
//!
//! Layout: `buckets` maps a bucket name to its shards; a key lives in the shard its
//! hash selects. Reads take one bucket-map read lock and one shard read lock, and clone
//! an `Arc` (the document bytes are never copied).
//!
//! Invariants:
//! - A version is taken from `seq` while the key's shard write lock is held, so the
//!   versions of one key increase in commit order.
//! - `expiry` holds exactly one `(deadline, bucket, key)` for each stored entry that has
//!   a TTL; it is updated under the entry's shard lock.
//! - `bytes` is the sum of `key.len() + body.len()` over stored entries; a write that
//!   would take it over `capacity` is refused before anything changes.
//!
//! Locks, always taken in this order: `buckets` (read, or write to add a bucket) →
//! one shard → `expiry`. Nothing else runs under them: no user code, no allocation of
//! documents (bodies are built before `mutate` takes the shard lock, except for the
//! caller's `decide`, which is the store's own code and does no I/O).

use crate::error::{Error, ErrorKind, Result};
use crate::store::backend::{Backend, Commit, Expired, Mutation};
use crate::store::document::Document;
use foldhash::fast::RandomState;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Arc<str>, Document, RandomState>>;

struct Bucket {
    name: Arc<str>,
    hasher: RandomState,
    shards: Box<[Shard]>,
}

impl Bucket {
    fn new(name: &str) -> Bucket {
        let hasher = RandomState::default();
        Bucket {
            name: Arc::from(name),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }

    #[inline]
    fn shard(&self, key: &str) -> &Shard {
        let h = self.hasher.hash_one(key);
        // High bits pick the shard; the map inside uses the low bits.
        &self.shards[(h >> 60) as usize % SHARDS]
    }
}

/// The default backend: everything in this process's memory.
pub struct MemoryBackend {
    buckets: RwLock<HashMap<Arc<str>, Arc<Bucket>, RandomState>>,
    seq: AtomicU64,
    expiry: Mutex<BTreeSet<(u64, Arc<str>, Arc<str>)>>,
    bytes: AtomicUsize,
    capacity: Option<usize>,
}

impl MemoryBackend {
    /// An empty backend; `capacity` bounds the bytes of keys and documents held.
    pub fn new(capacity: Option<usize>) -> MemoryBackend {
        MemoryBackend {
            buckets: RwLock::new(HashMap::default()),
            seq: AtomicU64::new(0),
            expiry: Mutex::new(BTreeSet::new()),
            bytes: AtomicUsize::new(0),
            capacity,
        }
    }

    #[inline]
    fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.read().get(name).cloned()
    }

    fn bucket_or_create(&self, name: &str) -> Arc<Bucket> {
        if let Some(b) = self.bucket(name) {
            return b;
        }
        let mut map = self.buckets.write();
        map.entry(Arc::from(name))
            .or_insert_with(|| Arc::new(Bucket::new(name)))
            .clone()
    }

    /// Reserves `grow` more bytes, or fails with `Full`.
    fn reserve(&self, grow: usize) -> Result<()> {
        let Some(cap) = self.capacity else {
            self.bytes.fetch_add(grow, Ordering::Relaxed);
            return Ok(());
        };
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(grow).filter(|n| *n <= cap)
            })
            .map(|_| ())
            .map_err(|cur| {
                Error::new(
                    ErrorKind::Full,
                    format!("the store holds {cur} of its {cap} bytes; {grow} more do not fit"),
                )
            })
    }

    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

fn entry_size(key: &str, doc: &Document) -> usize {
    key.len() + doc.bytes().len()
}

impl Backend for MemoryBackend {
    #[inline]
    fn get(&self, bucket: &str, key: &str, now_ms: u64) -> Option<Document> {
        let buckets = self.buckets.read();
        let b = buckets.get(bucket)?;
        let shard = b.shard(key).read();
        shard.get(key).filter(|d| d.is_live(now_ms)).cloned()
    }

    fn scan(&self, bucket: &str, now_ms: u64) -> Vec<(Arc<str>, Document)> {
        let Some(b) = self.bucket(bucket) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for shard in b.shards.iter() {
            let shard = shard.read();
            out.extend(
                shard
                    .iter()
                    .filter(|(_, d)| d.is_live(now_ms))
                    .map(|(k, d)| (k.clone(), d.clone())),
            );
        }
        out
    }

    fn buckets(&self, now_ms: u64) -> Vec<String> {
        let all: Vec<Arc<Bucket>> = self.buckets.read().values().cloned().collect();
        all.iter()
            .filter(|b| {
                b.shards
                    .iter()
                    .any(|s| s.read().values().any(|d| d.is_live(now_ms)))
            })
            .map(|b| b.name.to_string())
            .collect()
    }

    fn mutate(
        &self,
        bucket: &str,
        key: &str,
        now_ms: u64,
        decide: &mut dyn FnMut(Option<&Document>) -> Result<Mutation>,
    ) -> Result<Commit> {
        let b = match self.bucket(bucket) {
            Some(b) => b,
            None => match decide(None)? {
                // Decided on the absent key before creating the bucket, so a refused
                // change never leaves an empty bucket behind. A put creates the bucket
                // and decides again under the shard lock, as the trait allows.
                Mutation::Put { .. } => self.bucket_or_create(bucket),
                Mutation::Remove => {
                    return Ok(Commit {
                        version: self.seq.fetch_add(1, Ordering::AcqRel) + 1,
                        previous: None,
                        current: None,
                    })
                }
            },
        };
        let mut shard = b.shard(key).write();
        let stored = shard
            .get_key_value(key)
            .map(|(k, d)| (k.clone(), d.clone()));
        let live = stored
            .as_ref()
            .map(|(_, d)| d)
            .filter(|d| d.is_live(now_ms));
        let mutation = decide(live)?;
        let old_size = stored.as_ref().map_or(0, |(k, d)| entry_size(k, d));
        let previous = live.cloned();
        let old_expiry = stored
            .as_ref()
            .and_then(|(k, d)| d.expires_ms.map(|e| (e, k.clone())));
        match mutation {
            Mutation::Put { body, expires_ms } => {
                let new_size = key.len() + body.bytes().len();
                if new_size > old_size {
                    self.reserve(new_size - old_size)?;
                } else {
                    self.release(old_size - new_size);
                }
                let version = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
                let doc = Document {
                    body,
                    version,
                    modified_ms: now_ms,
                    expires_ms,
                };
                let key: Arc<str> = match stored {
                    Some((k, _)) => k,
                    None => Arc::from(key),
                };
                if old_expiry.is_some() || expires_ms.is_some() {
                    let mut ex = self.expiry.lock();
                    if let Some((e, k)) = old_expiry {
                        ex.remove(&(e, b.name.clone(), k));
                    }
                    if let Some(e) = expires_ms {
                        ex.insert((e, b.name.clone(), key.clone()));
                    }
                }
                shard.insert(key, doc.clone());
                Ok(Commit {
                    version,
                    previous,
                    current: Some(doc),
                })
            }
            Mutation::Remove => {
                let version = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
                if let Some((k, _)) = stored {
                    shard.remove(&*k);
                    self.release(old_size);
                    if let Some((e, k)) = old_expiry {
                        self.expiry.lock().remove(&(e, b.name.clone(), k));
                    }
                }
                Ok(Commit {
                    version,
                    previous,
                    current: None,
                })
            }
        }
    }

    fn expire(&self, now_ms: u64, max: usize) -> Vec<Expired> {
        let due: Vec<(u64, Arc<str>, Arc<str>)> = {
            let ex = self.expiry.lock();
            ex.iter()
                .take_while(|(e, _, _)| *e <= now_ms)
                .take(max)
                .cloned()
                .collect()
        };
        let mut out = Vec::with_capacity(due.len());
        for (deadline, bucket, key) in due {
            let Some(b) = self.bucket(&bucket) else {
                continue;
            };
            let mut shard = b.shard(&key).write();
            // The entry may have been rewritten since the index was read: only remove it
            // if it still carries this deadline.
            let still = shard
                .get(&*key)
                .is_some_and(|d| d.expires_ms == Some(deadline));
            if !still {
                continue;
            }
            if let Some(previous) = shard.remove(&*key) {
                self.release(entry_size(&key, &previous));
                self.expiry
                    .lock()
                    .remove(&(deadline, bucket.clone(), key.clone()));
                let version = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
                out.push(Expired {
                    bucket,
                    key,
                    version,
                    previous,
                });
            }
        }
        out
    }

    fn next_expiry(&self) -> Option<u64> {
        self.expiry.lock().first().map(|(e, _, _)| *e)
    }

    fn last_version(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    fn stored_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}
