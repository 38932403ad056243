//! The JSON document store: buckets of keys to JSON documents (seed 000, cachearoo).
//!
//! Operations: [`Store::read`], [`Store::read_all`], [`Store::list`], [`Store::write`],
//! [`Store::patch`], [`Store::remove`]. Every change gets a version from one store-wide
//! sequence, so a key's version increases with each change and a write can be made
//! conditional on the version its caller read (`if_version`; version 0 means "absent").
//!
//! Decisions:
//! - Buckets appear on first write; reading or listing a bucket nobody wrote gives an
//!   empty result, not an error (an empty bucket and an absent one look alike — which is
//!   also what a shared Redis backend can promise).
//! - A TTL runs from the write; a patch keeps the document's TTL; a plain write without a
//!   TTL makes the document permanent again. An expired document is gone at once for
//!   every read (checked against the engine clock); the timer then removes it for good.
//! - Names are checked on every change; a read checks them only on a miss, to say
//!   *why* nothing was found without slowing the hit path (an invalid name can never
//!   have been stored).
//! - Every committed change publishes one event on the bus (write, patch with its
//!   operations, remove, expire, session_expire), in the key's commit order, carrying
//!   the writer's `ChangeMeta`; a change may name only an open session.
//! - A key written with `expire_session` belongs to that session until a later write
//!   (with or without `expire_session`) takes it; closing the session removes the keys
//!   it still owns.
//!
//! Invariant: the stored document is only ever replaced whole, by the backend, under
//! the key's lock; a failed operation changes nothing. Lock: `sweep` holds the one
//! timer deadline of the expiry sweeper (taken briefly; never while a sweep runs).

pub(crate) mod backend;
pub mod document;
pub(crate) mod memory;
pub mod names;
pub mod patch;

use crate::bus::event::{ChangeMeta, Event, EventKind};
use crate::bus::BusInner;
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::timer::TimerId;
use crate::runtime::Runtime;
use crate::session::Registry;
use backend::{Backend, Commit, Mutation};
use document::Body;
pub use document::Document;
pub use names::Limits;
use parking_lot::Mutex;
pub use patch::PatchOps;
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Options of [`Store::write`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Fail with `Exists` if the key holds a live document. Atomic: of two racing
    /// writers exactly one succeeds.
    pub fail_if_exists: bool,
    /// Expire the document this long after the write (engine clock). Zero is refused.
    pub ttl: Option<Duration>,
    /// Write only if the key's current version is this (0: only if absent); otherwise
    /// fail with `VersionConflict`.
    pub if_version: Option<u64>,
    /// Remove the document when the writing session (`meta.session`, required) closes
    /// (the seed's `expire: 'session'`). A later write without it makes it permanent.
    pub expire_session: bool,
    /// Who makes the change and why, passed to listeners.
    pub meta: ChangeMeta,
}

/// Options of [`Store::patch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchOptions {
    /// Do not return the patched document (the seed's `removeDataFromReply`).
    pub remove_data_from_reply: bool,
    /// Patch only if the key's current version is this; otherwise `VersionConflict`.
    pub if_version: Option<u64>,
    /// Who makes the change and why, passed to listeners.
    pub meta: ChangeMeta,
}

/// Options of [`Store::remove`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Remove only if the key's current version is this; otherwise `VersionConflict`.
    pub if_version: Option<u64>,
    /// Who makes the change and why, passed to listeners.
    pub meta: ChangeMeta,
}

/// The result of a successful patch.
#[derive(Debug, Clone)]
pub struct Patched {
    /// The new version.
    pub version: u64,
    /// The patched document, unless `remove_data_from_reply` was set.
    pub document: Option<Document>,
}

/// One entry of [`Store::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// The document, unless the listing was keys only.
    pub document: Option<Document>,
}

/// The store of one engine. Get it with [`crate::Engine::store`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    rt: Arc<Runtime>,
    backend: Box<dyn Backend>,
    limits: Limits,
    bus: Arc<BusInner>,
    sessions: Arc<Registry>,
    sweep: Mutex<Option<(u64, TimerId)>>,
    me: Weak<StoreInner>,
}

/// How many expired keys one sweep step removes before checking again.
const SWEEP_BATCH: usize = 1024;

impl Store {
    pub(crate) fn new(
        rt: Arc<Runtime>,
        backend: Box<dyn Backend>,
        limits: Limits,
        bus: Arc<BusInner>,
        sessions: Arc<Registry>,
    ) -> Store {
        Store {
            inner: Arc::new_cyclic(|me| StoreInner {
                rt,
                backend,
                limits,
                bus,
                sessions,
                sweep: Mutex::new(None),
                me: me.clone(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<StoreInner> {
        &self.inner
    }

    pub(crate) fn from_inner(inner: Arc<StoreInner>) -> Store {
        Store { inner }
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.rt
    }

    /// Removes `bucket/key` if `session` still owns it, publishing `session_expire`.
    pub(crate) fn remove_session_key(&self, bucket: &str, key: &str, session: u64) {
        let s = &self.inner;
        let meta = Meta {
            session: Some(session),
            request_id: None,
            user_data: None,
        };
        let _ = s.backend.mutate(
            bucket,
            key,
            s.rt.now_ms(),
            &mut |cur| match cur {
                Some(d) if d.session == Some(session) => Ok(Mutation::Remove),
                _ => Err(Error::new(
                    ErrorKind::NotFound,
                    "no longer this session's key",
                )),
            },
            &mut |c| s.publish(EventKind::SessionExpire, bucket, key, c, &meta, None),
        );
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Reads one document. `NotFound` if the key is absent or expired.
    #[inline]
    pub fn read(&self, bucket: &str, key: &str) -> Result<Document> {
        let s = &self.inner;
        s.rt.check_open()?;
        match s.backend.get(bucket, key) {
            // The clock is read only for documents with a TTL: on the system clock it is
            // a clock_gettime call that would otherwise be half the cost of a hit.
            Some(doc) if doc.expires_ms.is_none_or(|e| e > s.rt.now_ms()) => Ok(doc),
            _ => {
                s.limits.check_bucket(bucket)?;
                s.limits.check_key(key)?;
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no document {bucket}/{key}"),
                ))
            }
        }
    }

    /// Reads every live document of a bucket (the seed's empty-key read), sorted by key.
    pub fn read_all(&self, bucket: &str) -> Result<Vec<(String, Document)>> {
        let s = &self.inner;
        s.rt.check_open()?;
        s.limits.check_bucket(bucket)?;
        let now = s.rt.now_ms();
        let mut all: Vec<(String, Document)> = s
            .backend
            .scan(bucket)
            .into_iter()
            .filter(|(_, d)| d.is_live(now))
            .map(|(k, d)| (k.to_string(), d))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Lists a bucket's keys, sorted; with `keys_only` false each entry carries its
    /// document too.
    pub fn list(&self, bucket: &str, keys_only: bool) -> Result<Vec<Listed>> {
        Ok(self
            .read_all(bucket)?
            .into_iter()
            .map(|(key, d)| Listed {
                key,
                document: (!keys_only).then_some(d),
            })
            .collect())
    }

    /// The names of the buckets holding at least one live document, sorted.
    pub fn buckets(&self) -> Result<Vec<String>> {
        let s = &self.inner;
        s.rt.check_open()?;
        let mut names = s.backend.buckets(s.rt.now_ms());
        names.sort_unstable();
        Ok(names)
    }

    /// Writes a document given as a JSON value; returns the new version.
    pub fn write(
        &self,
        bucket: &str,
        key: &str,
        value: &Value,
        opts: &WriteOptions,
    ) -> Result<u64> {
        self.inner.check_change(bucket, key)?;
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("cannot serialize: {e}")))?;
        self.inner.limits.check_document(bytes.len())?;
        self.inner
            .put(bucket, key, Body::new_unchecked(bytes), opts)
    }

    /// Writes a document given as JSON text (validated, stored as given); returns the
    /// new version.
    pub fn write_bytes(
        &self,
        bucket: &str,
        key: &str,
        json: &[u8],
        opts: &WriteOptions,
    ) -> Result<u64> {
        self.inner.check_change(bucket, key)?;
        self.inner.limits.check_document(json.len())?;
        let body = Body::parse(json)?;
        self.inner.put(bucket, key, body, opts)
    }

    /// Applies RFC 6902 operations to a document, all or none.
    pub fn patch(
        &self,
        bucket: &str,
        key: &str,
        ops: &PatchOps,
        opts: &PatchOptions,
    ) -> Result<Patched> {
        self.inner.check_change(bucket, key)?;
        self.inner.patch(bucket, key, ops, opts)
    }

    /// Applies RFC 6902 operations given as JSON text.
    pub fn patch_bytes(
        &self,
        bucket: &str,
        key: &str,
        ops: &[u8],
        opts: &PatchOptions,
    ) -> Result<Patched> {
        self.inner.check_change(bucket, key)?;
        let ops = PatchOps::from_slice(ops)?;
        self.inner.patch(bucket, key, &ops, opts)
    }

    /// Removes a document; returns the version of the removal. `NotFound` if absent.
    pub fn remove(&self, bucket: &str, key: &str, opts: &RemoveOptions) -> Result<u64> {
        let s = &self.inner;
        s.check_change(bucket, key)?;
        let meta = s.meta(&opts.meta)?;
        let commit = s.backend.mutate(
            bucket,
            key,
            s.rt.now_ms(),
            &mut |cur| {
                let Some(cur) = cur else {
                    return Err(not_found(bucket, key));
                };
                check_version(bucket, key, Some(cur), opts.if_version)?;
                Ok(Mutation::Remove)
            },
            &mut |c| s.publish(EventKind::Remove, bucket, key, c, &meta, None),
        )?;
        Ok(commit.version)
    }

    /// The newest version the store has assigned (expiry removals take versions too:
    /// they are changes, and publish events like any other).
    pub fn last_version(&self) -> Result<u64> {
        self.inner.rt.check_open()?;
        Ok(self.inner.backend.last_version())
    }

    /// Bytes of keys and documents held.
    pub fn stored_bytes(&self) -> usize {
        self.inner.backend.stored_bytes()
    }
}

fn not_found(bucket: &str, key: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no document {bucket}/{key}"))
}

fn check_version(bucket: &str, key: &str, cur: Option<&Document>, want: Option<u64>) -> Result<()> {
    let Some(want) = want else { return Ok(()) };
    let have = cur.map_or(0, |d| d.version);
    if have == want {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::VersionConflict,
            format!("{bucket}/{key} is at version {have}, not {want}"),
        ))
    }
}

fn ttl_ms(ttl: Duration) -> Result<u64> {
    if ttl.is_zero() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a TTL of zero is refused",
        ));
    }
    // Round up: a TTL never ends before it was asked to.
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// A change's metadata, serialized once for all its events.
#[derive(Default)]
struct Meta {
    session: Option<u64>,
    request_id: Option<Arc<str>>,
    user_data: Option<Arc<Body>>,
}

impl StoreInner {
    fn check_change(&self, bucket: &str, key: &str) -> Result<()> {
        self.rt.check_open()?;
        self.limits.check_bucket(bucket)?;
        self.limits.check_key(key)
    }

    fn meta(&self, m: &ChangeMeta) -> Result<Meta> {
        if let Some(id) = m.session {
            // A change is attributed only to a session that is open: otherwise anyone
            // could make another session's `ignore_own` listeners skip a change.
            self.sessions.get(id)?;
        }
        let user_data = match &m.user_data {
            Some(v) => {
                let bytes = serde_json::to_vec(v)
                    .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("user data: {e}")))?;
                self.limits.check_document(bytes.len())?;
                Some(Body::new_unchecked(bytes))
            }
            None => None,
        };
        if let Some(r) = &m.request_id {
            if r.len() > self.limits.max_key_bytes {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    "the request id is over the key size limit",
                ));
            }
        }
        Ok(Meta {
            session: m.session,
            request_id: m.request_id.as_deref().map(Arc::from),
            user_data,
        })
    }

    /// Publishes the event of one committed change.
    fn publish(
        &self,
        kind: EventKind,
        bucket: &str,
        key: &str,
        c: &Commit,
        meta: &Meta,
        ops: Option<Arc<Body>>,
    ) {
        self.bus.publish(Event {
            kind,
            bucket: Arc::from(bucket),
            key: Arc::from(key),
            version: c.version,
            timestamp_ms: c
                .current
                .as_ref()
                .map_or_else(|| self.rt.now_ms(), |d| d.modified_ms),
            session: meta.session,
            request_id: meta.request_id.clone(),
            user_data: meta.user_data.clone(),
            value: c.current.as_ref().map(|d| d.body.clone()),
            ops,
        });
    }

    fn put(&self, bucket: &str, key: &str, body: Arc<Body>, opts: &WriteOptions) -> Result<u64> {
        let now = self.rt.now_ms();
        let expires = opts
            .ttl
            .map(ttl_ms)
            .transpose()?
            .map(|t| now.saturating_add(t));
        let meta = self.meta(&opts.meta)?;
        let owner = match (opts.expire_session, opts.meta.session) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "expire_session needs the writing session (meta.session)",
                ))
            }
            (true, Some(id)) => Some((id, self.sessions.get(id)?)),
        };
        let session = owner.as_ref().map(|(id, _)| *id);
        let commit = self.with_room(now, &mut || {
            self.backend.mutate(
                bucket,
                key,
                now,
                &mut |cur| {
                    if opts.fail_if_exists && cur.is_some() {
                        return Err(Error::new(
                            ErrorKind::Exists,
                            format!("{bucket}/{key} already exists"),
                        ));
                    }
                    check_version(bucket, key, cur, opts.if_version)?;
                    Ok(Mutation::Put {
                        body: body.clone(),
                        expires_ms: expires,
                        session,
                    })
                },
                &mut |c| self.publish(EventKind::Write, bucket, key, c, &meta, None),
            )
        })?;
        if let Some(e) = expires {
            self.schedule_sweep(e);
        }
        if let Some((id, owner)) = owner {
            if !owner.adopt(bucket, key) {
                // The session closed while this write was in flight: its keys go with it.
                if let Some(me) = self.me.upgrade() {
                    Store::from_inner(me).remove_session_key(bucket, key, id);
                }
            }
        }
        Ok(commit.version)
    }

    fn patch(
        &self,
        bucket: &str,
        key: &str,
        ops: &PatchOps,
        opts: &PatchOptions,
    ) -> Result<Patched> {
        let now = self.rt.now_ms();
        // Compute the result outside the key's lock from a snapshot; commit it only if
        // the key is still at the snapshot's version, else recompute under the lock.
        let snapshot = self
            .backend
            .get(bucket, key)
            .filter(|d| d.is_live(now))
            .ok_or_else(|| not_found(bucket, key))?;
        check_version(bucket, key, Some(&snapshot), opts.if_version)?;
        let meta = self.meta(&opts.meta)?;
        let first = self.apply_patch(&snapshot, ops)?;
        let ops_json = Body::new_unchecked(serde_json::to_vec(&ops.0).unwrap_or_default());
        let commit: Commit = self.with_room(now, &mut || {
            self.backend.mutate(
                bucket,
                key,
                now,
                &mut |cur| {
                    let Some(cur) = cur else {
                        return Err(not_found(bucket, key));
                    };
                    check_version(bucket, key, Some(cur), opts.if_version)?;
                    let body = if cur.version == snapshot.version {
                        first.clone()
                    } else {
                        self.apply_patch(cur, ops)?
                    };
                    Ok(Mutation::Put {
                        body,
                        expires_ms: cur.expires_ms,
                        session: cur.session,
                    })
                },
                &mut |c| {
                    let ops = Some(ops_json.clone());
                    self.publish(EventKind::Patch, bucket, key, c, &meta, ops)
                },
            )
        })?;
        Ok(Patched {
            version: commit.version,
            document: if opts.remove_data_from_reply {
                None
            } else {
                commit.current
            },
        })
    }

    fn apply_patch(&self, doc: &Document, ops: &PatchOps) -> Result<Arc<Body>> {
        let mut value = doc.value()?;
        ops.apply(&mut value)?;
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| Error::new(ErrorKind::InvalidJson, format!("cannot serialize: {e}")))?;
        self.limits.check_document(bytes.len())?;
        Ok(Body::new_unchecked(bytes))
    }

    /// Runs a change; if the store is full, first removes the documents that have
    /// expired but not yet been swept (they are gone for readers already, so they must
    /// not hold capacity either) and tries once more.
    fn with_room(&self, now: u64, change: &mut dyn FnMut() -> Result<Commit>) -> Result<Commit> {
        match change() {
            Err(e)
                if e.kind() == ErrorKind::Full
                    && self.backend.next_expiry().is_some_and(|x| x <= now) =>
            {
                self.reap(now);
                change()
            }
            other => other,
        }
    }

    /// Removes every document expired at `now`, in batches, publishing each removal.
    fn reap(&self, now: u64) {
        loop {
            let removed = self.backend.expire(now, SWEEP_BATCH, &mut |x| {
                self.bus.publish(Event {
                    kind: EventKind::Expire,
                    bucket: x.bucket.clone(),
                    key: x.key.clone(),
                    version: x.version,
                    timestamp_ms: now,
                    session: None,
                    request_id: None,
                    user_data: None,
                    value: None,
                    ops: None,
                });
            });
            if removed < SWEEP_BATCH || self.rt.is_closed() {
                break;
            }
        }
    }

    /// Makes sure a sweep runs by `deadline`.
    fn schedule_sweep(&self, deadline: u64) {
        let mut sweep = self.sweep.lock();
        if let Some((at, _)) = *sweep {
            if at <= deadline {
                return;
            }
        }
        let me = self.me.clone();
        let job = Box::new(move || {
            if let Some(store) = me.upgrade() {
                store.run_sweep();
            }
        });
        if let Ok(id) = self.rt.schedule(deadline, job) {
            if let Some((_, old)) = sweep.replace((deadline, id)) {
                self.rt.cancel(old);
            }
        }
    }

    /// Removes every expired document, then schedules the next sweep.
    fn run_sweep(&self) {
        *self.sweep.lock() = None;
        self.reap(self.rt.now_ms());
        if let Some(next) = self.backend.next_expiry() {
            self.schedule_sweep(next);
        }
    }
}
