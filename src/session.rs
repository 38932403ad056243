//! Sessions: one client of the engine (cachearoo's clientId).
//!
//! A session owns its listeners and its session-expiring keys (written with
//! `expire_session`); closing it removes both, publishing a `session_expire` event for
//! each key it still owns. A key belongs to the session that last wrote it with
//! `expire_session`; a plain write makes it permanent again, and closing any other
//! session leaves it alone. Opening and closing are events on the system bucket
//! `$sessions` (key: the session id; value: `{"session":id,"client_id":...}`), so
//! presence can be watched. With a lease, a session not kept alive within the lease is
//! closed by the timer (on the engine clock).
//!
//! Invariant: once `closed` is set (under `state`) no key is added to the session; a
//! write that commits a session key after that removes the key itself.
//! Lock: `state` guards `closed`, the owned keys and listeners; it is released before
//! any key is removed or any event published.

use crate::bus::event::{Event, EventKind};
use crate::bus::listener::{Core, ListenOptions};
use crate::bus::{BusInner, Listener, SESSIONS_BUCKET};
use crate::error::{Error, ErrorKind, Result};
use crate::store::document::Body;
use crate::store::Store;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

struct State {
    closed: bool,
    keys: HashSet<(Arc<str>, Arc<str>)>,
    listeners: Vec<Weak<Core>>,
}

pub(crate) struct SessionInner {
    id: u64,
    client_id: Arc<str>,
    lease_ms: Option<u64>,
    deadline: AtomicU64,
    state: Mutex<State>,
}

/// All open sessions of one engine.
#[derive(Default)]
pub(crate) struct Registry {
    open: Mutex<HashMap<u64, Arc<SessionInner>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn get(&self, id: u64) -> Result<Arc<SessionInner>> {
        self.open
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no open session {id}")))
    }
}

impl SessionInner {
    /// Records that this session now owns `bucket/key`; false if it has closed.
    pub(crate) fn adopt(&self, bucket: &str, key: &str) -> bool {
        let mut s = self.state.lock();
        if s.closed {
            return false;
        }
        s.keys.insert((Arc::from(bucket), Arc::from(key)));
        true
    }
}

/// What a session needs of its engine.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) bus: Arc<BusInner>,
    pub(crate) registry: Arc<Registry>,
}

/// One client of the engine. Dropping it closes it.
pub struct Session {
    inner: Arc<SessionInner>,
    ctx: Ctx,
}

fn presence(kind: EventKind, s: &SessionInner, now: u64) -> Event {
    let value =
        serde_json::to_vec(&serde_json::json!({"session": s.id, "client_id": &*s.client_id}))
            .unwrap_or_default();
    Event {
        kind,
        bucket: Arc::from(SESSIONS_BUCKET),
        key: Arc::from(s.id.to_string()),
        version: 0,
        timestamp_ms: now,
        session: Some(s.id),
        request_id: None,
        user_data: None,
        value: Some(Body::new_unchecked(value)),
        ops: None,
    }
}

impl Ctx {
    pub(crate) fn open(&self, client_id: &str, lease: Option<Duration>) -> Result<Session> {
        let rt = self.store.runtime();
        rt.check_open()?;
        if client_id.is_empty()
            || client_id.len() > MAX_CLIENT_ID_BYTES
            || client_id.chars().any(char::is_control)
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a client id is 1..={MAX_CLIENT_ID_BYTES} bytes without control characters"
                ),
            ));
        }
        let lease_ms = match lease {
            Some(d) if d.is_zero() => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "a lease of zero is refused",
                ))
            }
            Some(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            None => None,
        };
        let now = rt.now_ms();
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let inner = Arc::new(SessionInner {
            id,
            client_id: Arc::from(client_id),
            lease_ms,
            deadline: AtomicU64::new(lease_ms.map_or(u64::MAX, |l| now.saturating_add(l))),
            state: Mutex::new(State {
                closed: false,
                keys: HashSet::new(),
                listeners: Vec::new(),
            }),
        });
        self.registry.open.lock().insert(id, inner.clone());
        self.bus
            .publish(presence(EventKind::SessionOpen, &inner, now));
        if lease_ms.is_some() {
            self.watch_lease(&inner);
        }
        Ok(Session {
            inner,
            ctx: self.clone(),
        })
    }

    /// Schedules the lease check at the session's current deadline. The job holds only
    /// weak references, so a pending check keeps nothing alive.
    fn watch_lease(&self, inner: &Arc<SessionInner>) {
        let at = inner.deadline.load(Ordering::Acquire);
        let session = Arc::downgrade(inner);
        let (store, bus, registry) = (
            Arc::downgrade(self.store.inner()),
            Arc::downgrade(&self.bus),
            Arc::downgrade(&self.registry),
        );
        let job = Box::new(move || {
            let (Some(inner), Some(store), Some(bus), Some(registry)) = (
                session.upgrade(),
                store.upgrade(),
                bus.upgrade(),
                registry.upgrade(),
            ) else {
                return;
            };
            let ctx = Ctx {
                store: Store::from_inner(store),
                bus,
                registry,
            };
            if inner.state.lock().closed {
                return;
            }
            if ctx.store.runtime().now_ms() >= inner.deadline.load(Ordering::Acquire) {
                ctx.close(&inner);
            } else {
                ctx.watch_lease(&inner);
            }
        });
        let _ = self.store.runtime().schedule(at, job);
    }

    /// Closes a session: its listeners, its keys (with events), then the presence event.
    fn close(&self, inner: &SessionInner) {
        let (keys, listeners) = {
            let mut s = inner.state.lock();
            if s.closed {
                return;
            }
            s.closed = true;
            (
                std::mem::take(&mut s.keys),
                std::mem::take(&mut s.listeners),
            )
        };
        self.registry.open.lock().remove(&inner.id);
        for l in listeners.iter().filter_map(Weak::upgrade) {
            self.bus.unregister(&l);
        }
        if self.store.runtime().is_closed() {
            return;
        }
        for (bucket, key) in keys {
            self.store.remove_session_key(&bucket, &key, inner.id);
        }
        let now = self.store.runtime().now_ms();
        self.bus
            .publish(presence(EventKind::SessionClose, inner, now));
    }
}

impl Session {
    /// The session id (unique within its engine; 1, 2, ...).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The client id it was opened with.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Whether the session has closed (by `close`, its lease, or its engine closing).
    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().closed || self.ctx.store.runtime().is_closed()
    }

    /// Keeps a leased session alive for another lease from now. `Closed` if it closed.
    pub fn keepalive(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("session {} is closed", self.inner.id),
            ));
        }
        if let Some(l) = self.inner.lease_ms {
            let now = self.ctx.store.runtime().now_ms();
            self.inner
                .deadline
                .store(now.saturating_add(l), Ordering::Release);
        }
        Ok(())
    }

    /// Listens as this session (see [`crate::Bus::listen`]); the listener closes with
    /// the session, and with `ignore_own` it skips this session's own changes.
    pub fn listen<F>(
        &self,
        bucket: &str,
        key: &str,
        opts: &ListenOptions,
        callback: F,
    ) -> Result<Listener>
    where
        F: Fn(&crate::bus::event::Delivery) + Send + Sync + 'static,
    {
        self.own(self.ctx.bus.listen(
            bucket,
            key,
            opts,
            Some(self.inner.id),
            Some(Arc::new(callback)),
        )?)
    }

    /// Subscribes as this session (see [`crate::Bus::subscribe`]).
    pub fn subscribe(&self, bucket: &str, key: &str, opts: &ListenOptions) -> Result<Listener> {
        self.own(
            self.ctx
                .bus
                .listen(bucket, key, opts, Some(self.inner.id), None)?,
        )
    }

    fn own(&self, l: Listener) -> Result<Listener> {
        let mut s = self.inner.state.lock();
        if s.closed {
            drop(s);
            l.close();
            return Err(Error::new(
                ErrorKind::Closed,
                format!("session {} is closed", self.inner.id),
            ));
        }
        s.listeners.retain(|w| w.strong_count() > 0);
        s.listeners.push(Arc::downgrade(l.core()));
        Ok(l)
    }

    /// Sends a signal as this session (see [`crate::Bus::signal`]).
    pub fn signal(&self, bucket: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        if self.is_closed() {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("session {} is closed", self.inner.id),
            ));
        }
        let body = value.map(Body::parse).transpose()?;
        self.ctx.bus.signal(bucket, key, body, Some(self.inner.id))
    }

    /// Closes the session: removes its listeners and the keys it owns (publishing their
    /// removal), then publishes its closing. Harmless twice.
    pub fn close(&self) {
        self.ctx.close(&self.inner);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("client_id", &self.inner.client_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}
