//! The engine: owns the runtime (clock, pool, timer) and every area built on it.
//!
//! One `Engine` is one embedded instance. It is `Send + Sync`: share it by reference
//! (or in an `Arc`) across threads. Closing stops its threads; dropping closes it.

use crate::bus::{Bus, BusInner};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::clock::Clock;
use crate::runtime::Runtime;
use crate::session::{Ctx, Registry, Session};
use crate::store::memory::MemoryBackend;
use crate::store::{Limits, Store};
use std::sync::Arc;
use std::time::Duration;

/// Most worker threads a builder accepts.
pub const MAX_WORKERS: usize = 256;

/// Configures and builds an [`Engine`]; start with [`Engine::builder`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    workers: usize,
    queue_capacity: usize,
    clock: ClockChoice,
    limits: Limits,
    change_log: usize,
}

/// Which clock a built engine gets. A manual clock is made fresh by each `build`, so two
/// engines built from one builder never share a clock unless given one explicitly.
#[derive(Debug, Clone)]
enum ClockChoice {
    System,
    Manual(u64),
    Shared(Clock),
}

impl Default for EngineBuilder {
    fn default() -> EngineBuilder {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineBuilder {
            workers: cores.clamp(2, 8),
            queue_capacity: 4096,
            clock: ClockChoice::System,
            limits: Limits::default(),
            change_log: 4096,
        }
    }
}

impl EngineBuilder {
    /// Number of worker threads (1..=256; default: cores, at least 2, at most 8).
    pub fn workers(mut self, n: usize) -> EngineBuilder {
        self.workers = n;
        self
    }

    /// Bound of the worker pool's queue (at least 1; default 4096). When it is full,
    /// handing work to the pool blocks (on an engine thread, the work runs inline).
    pub fn queue_capacity(mut self, n: usize) -> EngineBuilder {
        self.queue_capacity = n;
        self
    }

    /// Uses a manual clock starting at `start_ms` (ms since the Unix epoch); move it
    /// with [`Engine::clock`]. For tests: timers fire only when it is moved past them.
    pub fn manual_clock(mut self, start_ms: u64) -> EngineBuilder {
        self.clock = ClockChoice::Manual(start_ms);
        self
    }

    /// Uses the given clock, shared with whoever else holds it (several engines may
    /// run on one manual clock this way).
    pub fn clock(mut self, clock: Clock) -> EngineBuilder {
        self.clock = ClockChoice::Shared(clock);
        self
    }

    /// Sets every store bound at once.
    pub fn limits(mut self, limits: Limits) -> EngineBuilder {
        self.limits = limits;
        self
    }

    /// Longest bucket name in bytes (default 128).
    pub fn max_bucket_bytes(mut self, n: usize) -> EngineBuilder {
        self.limits.max_bucket_bytes = n;
        self
    }

    /// Longest key in bytes (default 1024).
    pub fn max_key_bytes(mut self, n: usize) -> EngineBuilder {
        self.limits.max_key_bytes = n;
        self
    }

    /// Largest document in bytes (default 16 MiB).
    pub fn max_document_bytes(mut self, n: usize) -> EngineBuilder {
        self.limits.max_document_bytes = n;
        self
    }

    /// Total bytes of keys and documents the store holds before writes fail with
    /// `Full` (default: unbounded).
    pub fn store_capacity_bytes(mut self, n: usize) -> EngineBuilder {
        self.limits.capacity_bytes = Some(n);
        self
    }

    /// How many store changes the bus keeps for listeners that start from a version
    /// (default 4096; 0 keeps none; also at most 64 MiB of their documents). Older
    /// starting points get `TooOld`.
    pub fn change_log_capacity(mut self, n: usize) -> EngineBuilder {
        self.change_log = n;
        self
    }

    /// Starts the engine's threads.
    pub fn build(self) -> Result<Engine> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("workers must be 1..={MAX_WORKERS}, not {}", self.workers),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "queue_capacity must be at least 1",
            ));
        }
        let l = &self.limits;
        if l.max_bucket_bytes == 0 || l.max_key_bytes == 0 || l.max_document_bytes == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "name and document bounds must be at least 1 byte",
            ));
        }
        let clock = match self.clock {
            ClockChoice::System => Clock::system(),
            ClockChoice::Manual(start) => Clock::manual(start),
            ClockChoice::Shared(c) => c,
        };
        let rt = Arc::new(Runtime::start(clock, self.workers, self.queue_capacity)?);
        let backend = Box::new(MemoryBackend::new(self.limits.capacity_bytes));
        let bus = BusInner::new(rt.clone(), self.limits, self.change_log);
        let registry = Arc::new(Registry::default());
        let store = Store::new(
            rt.clone(),
            backend,
            self.limits,
            bus.clone(),
            registry.clone(),
        );
        Ok(Engine {
            rt,
            ctx: Ctx {
                store,
                bus: bus.clone(),
                registry,
            },
            bus: Bus { inner: bus },
        })
    }
}

/// One embedded tarn instance.
pub struct Engine {
    rt: Arc<Runtime>,
    ctx: Ctx,
    bus: Bus,
}

impl Engine {
    /// A builder with the defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// An engine with the defaults (system clock).
    pub fn new() -> Result<Engine> {
        EngineBuilder::default().build()
    }

    /// The JSON document store.
    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// The event bus: listeners, signals, change events.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Opens a session (one client of the engine) with a client id and, optionally, a
    /// lease: a session not kept alive within its lease is closed.
    pub fn open_session(&self, client_id: &str, lease: Option<Duration>) -> Result<Session> {
        self.ctx.open(client_id, lease)
    }

    /// The engine clock (set and advance it when it is manual).
    pub fn clock(&self) -> &Clock {
        self.rt.clock()
    }

    /// Waits until the engine's background work has settled: no job queued or running
    /// on the pool and no timer deadline due by the engine clock (so after advancing a
    /// manual clock, every TTL it passed has been processed). `Timeout` if `timeout`
    /// passes first; `NotSupported` when called from an engine thread (a callback).
    pub fn settle_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.rt.check_open()?;
        self.rt.settle(timeout)
    }

    /// [`Engine::settle_timeout`] without a timeout.
    pub fn settle(&self) -> Result<()> {
        self.settle_timeout(None)
    }

    /// Panics caught in background jobs and callbacks so far.
    pub fn caught_panics(&self) -> u64 {
        self.rt.panics()
    }

    /// Stops every engine thread and waits for them; no callback runs after this
    /// returns (except the one calling it, if a callback closes its own engine).
    /// Every later operation fails with `Closed`. Harmless twice.
    pub fn close(&self) {
        self.rt.close();
        self.bus.inner.close();
    }

    /// `Closed` once the engine is closed.
    pub fn check_open(&self) -> Result<()> {
        self.rt.check_open()
    }

    /// Whether [`Engine::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.rt.is_closed()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("closed", &self.is_closed())
            .field("clock", self.clock())
            .finish()
    }
}
