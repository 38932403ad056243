//! The event bus (seed 000, cachearoo's addListener / signalEvent): listeners on
//! (bucket, key) patterns where either may be `*`, store change events, signals, and a
//! bounded change log that lets a listener start from a store version.
//!
//! Order: a listener receives one key's events in commit order (the store publishes
//! each key's changes one after another, under that key's shard publish lock). Across
//! keys, a listener receives events in the order they were published; for two keys
//! changed at the same time by two threads, that order need not be version order.
//! Signals from one thread arrive in the order it sent them.
//!
//! Invariants: an event is appended to the change log and its listeners are chosen in
//! one step under `log`, and a listener starting from a version is replayed and
//! registered in one step under `log`, so it gets every matching change after that
//! version exactly once.
//! Locks: `log` (then `index`, read or write) — held only to append, choose listeners,
//! replay or register; events are handed to listeners after `log` is released, and no
//! callback ever runs under either.

pub mod event;
pub(crate) mod index;
pub mod listener;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Runtime;
use crate::store::document::Body;
use crate::store::names::Limits;
use event::{Delivery, Event, EventKind};
use index::Index;
use listener::{Callback, Core, ListenOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The system bucket where sessions opening and closing are published.
pub const SESSIONS_BUCKET: &str = "$sessions";

/// Most bytes of values the change log holds (events keep their documents alive, so
/// the log is bounded in bytes as well as in events).
pub const CHANGE_LOG_BYTES: usize = 64 << 20;

/// A listener pattern: bucket and key, `None` for `*`.
type Pattern = (Option<Arc<str>>, Option<Arc<str>>);

struct ChangeLog {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Bytes of values, operations and user data held by `events`.
    bytes: usize,
    /// The newest version dropped from the log (0: none yet).
    evicted_up_to: u64,
}

impl ChangeLog {
    fn push(&mut self, e: Arc<Event>) {
        if self.capacity == 0 {
            self.evicted_up_to = e.version;
            return;
        }
        self.bytes += e.held_bytes();
        self.events.push_back(e);
        while self.events.len() > self.capacity
            || (self.bytes > CHANGE_LOG_BYTES && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.held_bytes();
            self.evicted_up_to = self.evicted_up_to.max(old.version);
        }
    }
}

pub(crate) struct BusInner {
    rt: Arc<Runtime>,
    limits: Limits,
    index: RwLock<Index>,
    log: Mutex<ChangeLog>,
    next_id: AtomicU64,
}

/// The engine's event bus. Get it with [`crate::Engine::bus`].
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
}

/// A registered listener. Dropping it (or [`Listener::close`]) stops delivery.
pub struct Listener {
    core: Arc<Core>,
    bus: Weak<BusInner>,
}

impl BusInner {
    pub(crate) fn new(rt: Arc<Runtime>, limits: Limits, log_capacity: usize) -> Arc<BusInner> {
        Arc::new(BusInner {
            rt,
            limits,
            index: RwLock::new(Index::default()),
            log: Mutex::new(ChangeLog {
                events: VecDeque::with_capacity(log_capacity.min(4096)),
                capacity: log_capacity,
                bytes: 0,
                evicted_up_to: 0,
            }),
            next_id: AtomicU64::new(1),
        })
    }

    /// Publishes an event: appends changes to the log, then hands it to every matching
    /// listener. Call it in per-key commit order.
    pub(crate) fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let targets = if event.kind.is_change() {
            let mut log = self.log.lock();
            log.push(event.clone());
            self.index.read().matching(&event)
        } else {
            // Signals and session events are not logged (no replay), so they need only
            // the index.
            self.index.read().matching(&event)
        };
        let mut may_block = None;
        for l in targets.iter().flatten().flat_map(|list| list.iter()) {
            if l.wants(&event) {
                let b = *may_block.get_or_insert_with(|| !self.rt.on_engine_thread());
                l.offer(&event, b);
            }
        }
    }

    fn check_pattern(&self, bucket: &str, key: &str) -> Result<Pattern> {
        let b = match bucket {
            "*" => None,
            SESSIONS_BUCKET => Some(Arc::from(bucket)),
            _ => {
                self.limits.check_bucket(bucket)?;
                Some(Arc::from(bucket))
            }
        };
        let k = match key {
            "*" => None,
            _ => {
                self.limits.check_key(key)?;
                Some(Arc::from(key))
            }
        };
        Ok((b, k))
    }

    pub(crate) fn listen(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        opts: &ListenOptions,
        session: Option<u64>,
        callback: Option<Callback>,
    ) -> Result<Listener> {
        self.rt.check_open()?;
        if opts.capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a listener's capacity must be at least 1",
            ));
        }
        let (b, k) = self.check_pattern(bucket, key)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let core = Core::new(id, b, k, opts, session, callback, &self.rt);
        let log = self.log.lock();
        if let Some(from) = opts.from_version {
            if from < log.evicted_up_to {
                return Err(Error::new(
                    ErrorKind::TooOld,
                    format!(
                        "version {from} is too old: the change log keeps changes after version {} only",
                        log.evicted_up_to
                    ),
                ));
            }
            let mut probe = Index::default();
            probe.insert(core.clone());
            for e in log.events.iter().filter(|e| e.version > from) {
                if probe.matching(e).iter().any(Option::is_some) && core.wants(e) {
                    core.offer(e, false);
                }
            }
        }
        self.index.write().insert(core.clone());
        drop(log);
        Ok(Listener {
            core,
            bus: Arc::downgrade(self),
        })
    }

    pub(crate) fn unregister(&self, core: &Core) {
        self.index.write().remove(core);
        core.close();
    }

    pub(crate) fn signal(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Arc<Body>>,
        session: Option<u64>,
    ) -> Result<()> {
        self.rt.check_open()?;
        self.limits.check_bucket(bucket)?;
        self.limits.check_key(key)?;
        if let Some(v) = &value {
            self.limits.check_document(v.bytes().len())?;
        }
        self.publish(Event {
            kind: EventKind::Signal,
            bucket: Arc::from(bucket),
            key: Arc::from(key),
            version: 0,
            timestamp_ms: self.rt.now_ms(),
            session,
            request_id: None,
            user_data: None,
            value,
            ops: None,
        });
        Ok(())
    }

    /// Closes every listener (the engine is closing): pull listeners then report
    /// `Closed`, and callbacks that hold the engine no longer keep it alive.
    pub(crate) fn close(&self) {
        let all = std::mem::take(&mut *self.index.write());
        let mut cores = Vec::new();
        all.drain_into(&mut cores);
        for c in cores {
            c.close();
        }
    }

    pub(crate) fn listener_count(&self) -> usize {
        self.index.read().len()
    }
}

impl Bus {
    /// Listens on `bucket`/`key` (either may be `*`) and delivers to `callback`, run on an
    /// engine worker thread, one event at a time, never under a lock (it may call the
    /// engine). A panic in it is caught and counted; the listener keeps working.
    pub fn listen<F>(
        &self,
        bucket: &str,
        key: &str,
        opts: &ListenOptions,
        callback: F,
    ) -> Result<Listener>
    where
        F: Fn(&Delivery) + Send + Sync + 'static,
    {
        self.inner
            .listen(bucket, key, opts, None, Some(Arc::new(callback)))
    }

    /// Listens on `bucket`/`key` (either may be `*`); pull events with
    /// [`Listener::next`] or wait on [`Listener::fd`].
    pub fn subscribe(&self, bucket: &str, key: &str, opts: &ListenOptions) -> Result<Listener> {
        self.inner.listen(bucket, key, opts, None, None)
    }

    /// Sends a signal event to every matching listener; it is never stored. `value` is
    /// JSON text (or None).
    pub fn signal(&self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        let body = value.map(Body::parse).transpose()?;
        self.inner.signal(bucket, key, body, None)
    }

    /// How many listeners are registered.
    pub fn listener_count(&self) -> usize {
        self.inner.listener_count()
    }
}

impl Listener {
    /// The listener's id (unique within its engine).
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// Takes the next event, waiting up to `timeout` for one; `Ok(None)` if none came.
    /// `NotSupported` for a callback listener, `Closed` once closed.
    pub fn next(&self, timeout: Duration) -> Result<Option<Delivery>> {
        self.core.next(Some(timeout))
    }

    /// Takes the next event if one is waiting.
    pub fn try_next(&self) -> Result<Option<Delivery>> {
        self.core.next(None)
    }

    /// A file descriptor that is readable exactly while events wait (for poll, epoll,
    /// libuv). Owned by the listener: valid until it closes; do not read or close it.
    pub fn fd(&self) -> Result<i32> {
        self.core.fd()
    }

    /// Events dropped at the bound so far.
    pub fn missed(&self) -> u64 {
        self.core.missed()
    }

    /// Events handed to the consumer so far.
    pub fn delivered(&self) -> u64 {
        self.core.delivered()
    }

    /// Panics caught in this listener's callback.
    pub fn panics(&self) -> u64 {
        self.core.panics()
    }

    /// The session that owns this listener, if any.
    pub fn session(&self) -> Option<u64> {
        self.core.owner
    }

    /// Stops delivery and unregisters; waits for a running callback to return (unless
    /// called from that callback). Harmless twice.
    pub fn close(&self) {
        match self.bus.upgrade() {
            Some(bus) => bus.unregister(&self.core),
            None => self.core.close(),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("id", &self.core.id)
            .field("bucket", &self.core.bucket)
            .field("key", &self.core.key)
            .finish()
    }
}
