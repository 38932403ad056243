//! Listeners: a pattern, a bounded queue, and one way of receiving.
//!
//! Receiving: a callback (run on an engine worker, one event at a time, never under a
//! lock, so it may call the engine), pulling with a timeout, or — for C event loops —
//! a file descriptor that is readable exactly while events wait.
//!
//! At the bound (`capacity`), the policy decides: `Drop` drops the new event and counts
//! it; `Block` makes the publisher wait for room, at most `block_timeout` (then the
//! event is dropped and counted: a consumer that never drains cannot hang a writer),
//! and never on an engine thread (a callback publishing into a full queue that only
//! engine threads drain would wait for itself): there it drops and counts. The next
//! event delivered after drops carries how many were missed. A `Block` publisher waits
//! holding its shard's publish order, so writers of other keys that share that shard
//! wait with it (still at most `block_timeout`); readers never wait.
//!
//! Closing a listener (or its session, or the engine) discards the events still queued.
//!
//! Invariants: the queue holds events in the order they were offered; at most one
//! drain job per callback listener is queued or running (`draining`); the notify pipe
//! holds one byte exactly while the queue is non-empty or the listener is closed.
//! Lock: `state` guards the queue, the counters and the pipe byte; it is never held
//! while a callback runs or while waiting (the condvars release it).

use crate::bus::event::{Delivery, Event};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::Runtime;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// What a listener does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop the new event and count it (the default).
    #[default]
    Drop,
    /// Make the publisher wait for room (see the module docs for the limits).
    Block,
}

/// A user callback for events. It runs on an engine worker thread.
pub type Callback = Arc<dyn Fn(&Delivery) + Send + Sync + 'static>;

/// Options of a listener.
#[derive(Clone)]
pub struct ListenOptions {
    /// Deliver document values (and signal values) with the events.
    pub send_values: bool,
    /// Do not deliver events caused by the listener's own session: its changes, its
    /// signals and its own presence events.
    pub ignore_own: bool,
    /// Queue bound (at least 1; default 1024).
    pub capacity: usize,
    /// Policy at the bound.
    pub overflow: Overflow,
    /// Longest a `Block` publisher waits for room (default 1 s).
    pub block_timeout: Duration,
    /// Start from this store version: first deliver every retained change after it.
    pub from_version: Option<u64>,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            send_values: false,
            ignore_own: false,
            capacity: 1024,
            overflow: Overflow::Drop,
            block_timeout: Duration::from_secs(1),
            from_version: None,
        }
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("send_values", &self.send_values)
            .field("ignore_own", &self.ignore_own)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("from_version", &self.from_version)
            .finish()
    }
}

struct Queued {
    event: Arc<Event>,
    missed: u64,
}

struct State {
    queue: VecDeque<Queued>,
    /// Dropped since the last accepted event.
    missed_pending: u64,
    closed: bool,
    draining: bool,
    /// The thread running this listener's callback right now, if any.
    in_callback: Option<ThreadId>,
    pipe: Option<(std::io::PipeReader, std::io::PipeWriter)>,
}

/// The shared part of a listener (the index holds these).
pub(crate) struct Core {
    pub(crate) id: u64,
    pub(crate) bucket: Option<Arc<str>>,
    pub(crate) key: Option<Arc<str>>,
    send_values: bool,
    /// Changes by this session are not delivered.
    skip_session: Option<u64>,
    pub(crate) owner: Option<u64>,
    capacity: usize,
    overflow: Overflow,
    block_timeout: Duration,
    callback: Option<Callback>,
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    missed_total: AtomicU64,
    delivered: AtomicU64,
    panics: AtomicU64,
    rt: Weak<Runtime>,
    me: Weak<Core>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        bucket: Option<Arc<str>>,
        key: Option<Arc<str>>,
        opts: &ListenOptions,
        session: Option<u64>,
        callback: Option<Callback>,
        rt: &Arc<Runtime>,
    ) -> Arc<Core> {
        Arc::new_cyclic(|me| Core {
            id,
            bucket,
            key,
            send_values: opts.send_values,
            skip_session: if opts.ignore_own { session } else { None },
            owner: session,
            capacity: opts.capacity,
            overflow: opts.overflow,
            block_timeout: opts.block_timeout,
            callback,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                missed_pending: 0,
                closed: false,
                draining: false,
                in_callback: None,
                pipe: None,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            missed_total: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            rt: Arc::downgrade(rt),
            me: me.clone(),
        })
    }

    /// Whether this listener wants `event` (the index already matched the pattern).
    pub(crate) fn wants(&self, event: &Event) -> bool {
        !(self.skip_session.is_some() && event.session == self.skip_session)
    }

    /// Offers an event. `may_block` is false for replays and on engine threads.
    pub(crate) fn offer(&self, event: &Arc<Event>, may_block: bool) {
        let mut s = self.state.lock();
        if s.closed {
            return;
        }
        if s.queue.len() >= self.capacity {
            let blocking = may_block && self.overflow == Overflow::Block;
            if blocking {
                // A timeout too long to represent waits without limit.
                let until = Instant::now().checked_add(self.block_timeout);
                while s.queue.len() >= self.capacity && !s.closed {
                    match until {
                        Some(u) => {
                            if self.not_full.wait_until(&mut s, u).timed_out() {
                                break;
                            }
                        }
                        None => self.not_full.wait(&mut s),
                    }
                }
                if s.closed {
                    return;
                }
            }
            if s.queue.len() >= self.capacity {
                s.missed_pending += 1;
                self.missed_total.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let missed = std::mem::take(&mut s.missed_pending);
        let was_empty = s.queue.is_empty();
        s.queue.push_back(Queued {
            event: event.clone(),
            missed,
        });
        if was_empty {
            if let Some((_, w)) = s.pipe.as_mut() {
                // One byte marks "non-empty"; the pipe never holds more, so this never
                // blocks.
                let _ = w.write_all(&[1]);
            }
        }
        self.not_empty.notify_one();
        if self.callback.is_some() && !s.draining {
            s.draining = true;
            drop(s);
            self.start_drain();
        }
    }

    fn start_drain(&self) {
        let (Some(rt), Some(me)) = (self.rt.upgrade(), self.me.upgrade()) else {
            return;
        };
        if rt.spawn(Box::new(move || me.drain())).is_err() {
            self.state.lock().draining = false;
        }
    }

    fn pop(&self, s: &mut State) -> Option<Delivery> {
        let q = s.queue.pop_front()?;
        if s.queue.is_empty() {
            if let Some((r, _)) = s.pipe.as_mut() {
                let mut byte = [0u8; 1];
                // The byte written when the queue became non-empty is there to read.
                let _ = r.read_exact(&mut byte);
            }
        }
        self.not_full.notify_one();
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Some(Delivery {
            event: q.event,
            with_value: self.send_values,
            missed: q.missed,
        })
    }

    /// Runs the callback on queued events, one at a time, outside the lock.
    fn drain(&self) {
        let Some(cb) = self.callback.clone() else {
            return;
        };
        loop {
            let next = {
                let mut s = self.state.lock();
                if s.closed {
                    s.draining = false;
                    self.not_empty.notify_all();
                    return;
                }
                match self.pop(&mut s) {
                    Some(d) => {
                        s.in_callback = Some(std::thread::current().id());
                        d
                    }
                    None => {
                        s.draining = false;
                        return;
                    }
                }
            };
            if catch_unwind(AssertUnwindSafe(|| cb(&next))).is_err() {
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
            let mut s = self.state.lock();
            s.in_callback = None;
            self.not_empty.notify_all();
        }
    }

    /// Takes the next event, waiting up to `timeout` (None: no wait).
    pub(crate) fn next(&self, timeout: Option<Duration>) -> Result<Option<Delivery>> {
        if self.callback.is_some() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                "this listener delivers by callback; it cannot be pulled",
            ));
        }
        let mut s = self.state.lock();
        // None: do not wait; Some(None): a timeout too long to represent, wait without limit.
        let until = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            if s.closed {
                return Err(Error::new(ErrorKind::Closed, "the listener is closed"));
            }
            if let Some(d) = self.pop(&mut s) {
                return Ok(Some(d));
            }
            match until {
                Some(Some(u)) if Instant::now() < u => {
                    let _ = self.not_empty.wait_until(&mut s, u);
                }
                Some(None) => self.not_empty.wait(&mut s),
                _ => return Ok(None),
            }
        }
    }

    /// The file descriptor that is readable while events wait (made on first use).
    pub(crate) fn fd(&self) -> Result<i32> {
        use std::os::fd::AsRawFd;
        if self.callback.is_some() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                "this listener delivers by callback; it has no file descriptor",
            ));
        }
        let mut s = self.state.lock();
        if s.closed && s.pipe.is_none() {
            return Err(Error::new(ErrorKind::Closed, "the listener is closed"));
        }
        if s.pipe.is_none() {
            let (r, mut w) = std::io::pipe().map_err(|e| {
                Error::new(
                    ErrorKind::Full,
                    format!("cannot make a notification pipe: {e}"),
                )
            })?;
            if !s.queue.is_empty() {
                let _ = w.write_all(&[1]);
            }
            s.pipe = Some((r, w));
        }
        Ok(s.pipe.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()))
    }

    /// Events dropped at the bound so far.
    pub(crate) fn missed(&self) -> u64 {
        self.missed_total.load(Ordering::Relaxed)
    }

    /// Events handed to the consumer so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Panics caught in this listener's callback.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Stops delivery; waits for a running callback to return (unless called from it).
    /// The notify pipe stays open (until the listener is dropped) and is left readable,
    /// so an event loop polling it wakes up and learns the listener closed.
    pub(crate) fn close(&self) {
        let mut s = self.state.lock();
        if !s.closed && s.queue.is_empty() {
            if let Some((_, w)) = s.pipe.as_mut() {
                let _ = w.write_all(&[1]);
            }
        }
        s.closed = true;
        s.queue.clear();
        self.not_full.notify_all();
        self.not_empty.notify_all();
        let me = std::thread::current().id();
        while s.in_callback.is_some_and(|t| t != me) {
            self.not_empty.wait(&mut s);
        }
    }
}
