//! The in-memory backend: a directory of buckets, each a set of sharded hash tables.
//!
//! Read path (the hot one): load the directory snapshot (no shared write), find the
//! bucket, hash the key once — the hash picks both the shard and the slot — take that
//! shard's read lock and clone the document's `Arc`. The document bytes are never
//! copied. Liveness (TTL) is the store's business: `get` and `scan` return what is held.
//!
//! Directory: `snapshot` is an immutable map that readers load lock-free; buckets made
//! since it was built sit in `recent` (behind a lock) until the snapshot is rebuilt,
//! which happens when `recent` has grown past an eighth of the snapshot, so making N
//! buckets costs O(N) in all and a new bucket is visible at once through `recent`.
//!
//! Invariants:
//! - A bucket, once made, is in `snapshot` or `recent` (or both) until the backend drops.
//! - A version is taken from `seq` while the key's shard write lock is held, so the
//!   versions of one key increase in commit order.
//! - `expiry` holds exactly one `(deadline, bucket, key)` for each stored entry that has
//!   a TTL; it is updated under the entry's shard lock.
//! - `bytes` is the sum of `key.len() + body.len()` over stored entries; a write that
//!   would take it over `capacity` is refused before anything changes.
//!
//! Locks, always taken in this order: `recent` (to make or find a new bucket) → one
//! shard's `data` → `expiry`; and a shard's `publish` is taken while its `data` is
//! still held, which is then released before `publish(..)` runs. No user code runs
//! under any of them: `decide` is the store's own code (comparisons and clones only),
//! and `publish` hands events to listener queues (it may wait for room in a `Block`
//! listener, holding only the shard's `publish` lock, never a data lock).

use crate::error::{Error, ErrorKind, Result};
use crate::store::backend::{Backend, Commit, Expired, Mutation};
use crate::store::document::Document;
use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Shards per bucket (a power of two).
const SHARDS: usize = 32;

struct Slot {
    key: SlotKey,
    doc: Document,
}

/// Longest key kept inside its slot.
const INLINE_KEY: usize = 30;

/// A key as a slot holds it: short keys inline, so that the comparison that confirms a
/// probe reads the slot's own cache line instead of chasing a pointer (a cache miss per
/// read that perf showed as a third of the read time at 100k keys); longer keys shared.
#[derive(Clone)]
enum SlotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Arc<str>),
}

impl SlotKey {
    fn new(key: &str) -> SlotKey {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            SlotKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            SlotKey::Shared(Arc::from(key))
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            SlotKey::Inline { len, bytes } => &bytes[..*len as usize],
            SlotKey::Shared(s) => s.as_bytes(),
        }
    }

    #[inline]
    fn is(&self, key: &str) -> bool {
        self.bytes() == key.as_bytes()
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The key as a shared string (allocates for inline keys).
    fn shared(&self) -> Arc<str> {
        match self {
            SlotKey::Shared(s) => s.clone(),
            // Inline keys were copied from a `&str`, so they are valid UTF-8.
            SlotKey::Inline { .. } => {
                Arc::from(std::str::from_utf8(self.bytes()).unwrap_or_default())
            }
        }
    }
}

/// Keeps each shard on its own cache lines, so readers of different shards do not
/// slow each other down.
#[repr(align(128))]
struct Padded<T>(T);

type Table = HashTable<Slot>;

/// One shard: its data, and the lock that orders its commits' publication. A change
/// takes `publish` before it releases `data`, and publishes while holding only
/// `publish`: so one key's events go out in commit order, and readers never wait for a
/// publication (which may wait for a slow listener).
struct Shard {
    data: RwLock<Table>,
    publish: Mutex<()>,
}

struct Bucket {
    name: Arc<str>,
    hasher: RandomState,
    shards: Box<[Padded<Shard>]>,
}

impl Bucket {
    fn new(name: &str) -> Bucket {
        Bucket {
            name: Arc::from(name),
            hasher: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(Shard {
                        data: RwLock::new(HashTable::new()),
                        publish: Mutex::new(()),
                    })
                })
                .collect(),
        }
    }

    /// The key's hash and its shard. The shard comes from bits 40.. of the hash, which
    /// the table uses for neither its slot index (low bits) nor its tags (top 7 bits).
    #[inline]
    fn locate(&self, key: &str) -> (u64, &Shard) {
        let h = self.hasher.hash_one(key);
        (h, &self.shards[(h >> 40) as usize & (SHARDS - 1)].0)
    }

    fn rehash(&self) -> impl Fn(&Slot) -> u64 + '_ {
        // Keys are hashed as `str` everywhere; inline bytes came from a `&str`.
        move |s: &Slot| {
            self.hasher
                .hash_one(std::str::from_utf8(s.key.bytes()).unwrap_or_default())
        }
    }
}

type Directory = HashMap<Arc<str>, Arc<Bucket>, RandomState>;

/// One TTL deadline: (expires at, bucket, key).
type Deadline = (u64, Arc<str>, Arc<str>);

/// The default backend: everything in this process's memory.
pub struct MemoryBackend {
    snapshot: ArcSwap<Directory>,
    recent: RwLock<Directory>,
    seq: AtomicU64,
    expiry: Mutex<BTreeSet<Deadline>>,
    bytes: AtomicUsize,
    capacity: Option<usize>,
}

impl MemoryBackend {
    /// An empty backend; `capacity` bounds the bytes of keys and documents held.
    pub fn new(capacity: Option<usize>) -> MemoryBackend {
        MemoryBackend {
            snapshot: ArcSwap::from_pointee(Directory::default()),
            recent: RwLock::new(Directory::default()),
            seq: AtomicU64::new(0),
            expiry: Mutex::new(BTreeSet::new()),
            bytes: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Finds a bucket and runs `f` on it without cloning its `Arc` on the fast path.
    #[inline]
    fn with_bucket<R>(&self, name: &str, f: impl FnOnce(&Bucket) -> R) -> Option<R> {
        let snap = self.snapshot.load();
        if let Some(b) = snap.get(name) {
            return Some(f(b));
        }
        let b = self.recent.read().get(name).cloned()?;
        Some(f(&b))
    }

    fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        let found = self.snapshot.load().get(name).cloned();
        found.or_else(|| self.recent.read().get(name).cloned())
    }

    fn bucket_or_create(&self, name: &str) -> Arc<Bucket> {
        if let Some(b) = self.bucket(name) {
            return b;
        }
        let mut recent = self.recent.write();
        if let Some(b) = self.snapshot.load().get(name).or_else(|| recent.get(name)) {
            return b.clone();
        }
        let b = Arc::new(Bucket::new(name));
        recent.insert(b.name.clone(), b.clone());
        let snap = self.snapshot.load_full();
        if recent.len() > snap.len() / 8 + 8 {
            // Fold the recent buckets into a new snapshot; still under `recent`'s lock,
            // so no bucket is ever in neither.
            let mut next: Directory = (*snap).clone();
            next.extend(recent.drain());
            self.snapshot.store(Arc::new(next));
        }
        b
    }

    fn all_buckets(&self) -> Vec<Arc<Bucket>> {
        let mut all: Vec<Arc<Bucket>> = self.snapshot.load().values().cloned().collect();
        all.extend(self.recent.read().values().cloned());
        all
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
        if n > 0 {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
        }
    }

    fn next_version(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::AcqRel) + 1
    }
}

fn entry_size(key: &str, doc: &Document) -> usize {
    key.len() + doc.bytes().len()
}

impl Backend for MemoryBackend {
    #[inline]
    fn get(&self, bucket: &str, key: &str) -> Option<Document> {
        self.with_bucket(bucket, |b| {
            let (h, shard) = b.locate(key);
            let t = shard.data.read();
            t.find(h, |s| s.key.is(key)).map(|s| s.doc.clone())
        })
        .flatten()
    }

    fn scan(&self, bucket: &str) -> Vec<(Arc<str>, Document)> {
        self.with_bucket(bucket, |b| {
            let mut out = Vec::new();
            for shard in b.shards.iter() {
                let t = shard.0.data.read();
                out.extend(t.iter().map(|s| (s.key.shared(), s.doc.clone())));
            }
            out
        })
        .unwrap_or_default()
    }

    fn buckets(&self, now_ms: u64) -> Vec<String> {
        self.all_buckets()
            .iter()
            .filter(|b| {
                b.shards
                    .iter()
                    .any(|s| s.0.data.read().iter().any(|slot| slot.doc.is_live(now_ms)))
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
        publish: &mut dyn FnMut(&Commit),
    ) -> Result<Commit> {
        let b = match self.bucket(bucket) {
            Some(b) => b,
            None => match decide(None)? {
                // Decided on the absent key before making the bucket, so a refused
                // change never leaves an empty bucket behind. A put makes the bucket and
                // decides again under the shard lock, as the trait allows.
                Mutation::Put { .. } => self.bucket_or_create(bucket),
                Mutation::Remove => {
                    let commit = Commit {
                        version: self.next_version(),
                        current: None,
                    };
                    publish(&commit);
                    return Ok(commit);
                }
            },
        };
        let (h, shard) = b.locate(key);
        let mut t = shard.data.write();
        let stored = t
            .find(h, |s| s.key.is(key))
            .map(|s| (s.key.clone(), s.doc.clone()));
        let live = stored
            .as_ref()
            .map(|(_, d)| d)
            .filter(|d| d.is_live(now_ms));
        let mutation = decide(live)?;
        let old_size = stored
            .as_ref()
            .map_or(0, |(k, d)| k.len() + d.bytes().len());
        let old_expiry = stored
            .as_ref()
            .and_then(|(k, d)| d.expires_ms.map(|e| (e, k.shared())));
        let commit = match mutation {
            Mutation::Put {
                body,
                expires_ms,
                session,
            } => {
                let new_size = key.len() + body.bytes().len();
                if new_size > old_size {
                    self.reserve(new_size - old_size)?;
                } else {
                    self.release(old_size - new_size);
                }
                let doc = Document {
                    body,
                    version: self.next_version(),
                    modified_ms: now_ms,
                    expires_ms,
                    session,
                };
                if old_expiry.is_some() || expires_ms.is_some() {
                    let mut ex = self.expiry.lock();
                    if let Some((e, k)) = old_expiry {
                        ex.remove(&(e, b.name.clone(), k));
                    }
                    if let Some(e) = expires_ms {
                        let k = match &stored {
                            Some((k, _)) => k.shared(),
                            None => Arc::from(key),
                        };
                        ex.insert((e, b.name.clone(), k));
                    }
                }
                match t.find_mut(h, |s| s.key.is(key)) {
                    Some(slot) => slot.doc = doc.clone(),
                    None => {
                        let slot = Slot {
                            key: SlotKey::new(key),
                            doc: doc.clone(),
                        };
                        t.insert_unique(h, slot, b.rehash());
                    }
                }
                Commit {
                    version: doc.version,
                    current: Some(doc),
                }
            }
            Mutation::Remove => {
                let version = self.next_version();
                if let Ok(entry) = t.find_entry(h, |s| s.key.is(key)) {
                    entry.remove();
                    self.release(old_size);
                    if let Some((e, k)) = old_expiry {
                        self.expiry.lock().remove(&(e, b.name.clone(), k));
                    }
                }
                Commit {
                    version,
                    current: None,
                }
            }
        };
        let order = shard.publish.lock();
        drop(t);
        publish(&commit);
        drop(order);
        Ok(commit)
    }

    fn expire(&self, now_ms: u64, max: usize, publish: &mut dyn FnMut(&Expired)) -> usize {
        let due: Vec<Deadline> = {
            let ex = self.expiry.lock();
            ex.iter()
                .take_while(|(e, _, _)| *e <= now_ms)
                .take(max)
                .cloned()
                .collect()
        };
        let mut removed = 0;
        for (deadline, bucket, key) in due {
            let Some(b) = self.bucket(&bucket) else {
                continue;
            };
            let (h, shard) = b.locate(&key);
            let mut t = shard.data.write();
            // The entry may have been rewritten since the index was read: only remove it
            // if it still carries this deadline.
            let Ok(entry) =
                t.find_entry(h, |s| s.key.is(&key) && s.doc.expires_ms == Some(deadline))
            else {
                continue;
            };
            let (slot, _) = entry.remove();
            self.release(entry_size(&key, &slot.doc));
            self.expiry
                .lock()
                .remove(&(deadline, bucket.clone(), key.clone()));
            let expired = Expired {
                bucket,
                key,
                version: self.next_version(),
            };
            let order = shard.publish.lock();
            drop(t);
            publish(&expired);
            drop(order);
            removed += 1;
        }
        removed
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
