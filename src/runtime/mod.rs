//! The runtime every area of the engine shares: one clock, one worker pool, one timer
//! thread, and the activity count behind [`crate::Engine::settle`].

pub(crate) mod activity;
pub mod clock;
pub(crate) mod pool;
pub(crate) mod timer;

use crate::error::{Error, ErrorKind, Result};
use activity::Activity;
use clock::Clock;
use pool::{Job, Pool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use timer::{Timer, TimerId};

/// The shared runtime. Areas hold an `Arc<Runtime>`.
pub(crate) struct Runtime {
    clock: Clock,
    activity: Arc<Activity>,
    pool: Arc<Pool>,
    timer: Timer,
    closed: AtomicBool,
}

impl Runtime {
    pub(crate) fn start(clock: Clock, workers: usize, queue_capacity: usize) -> Result<Runtime> {
        let activity = Arc::new(Activity::default());
        let io = |e: std::io::Error| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("cannot start engine threads: {e}"),
            )
        };
        let pool = Arc::new(Pool::new(workers, queue_capacity, activity.clone()).map_err(io)?);
        let timer = match Timer::start(clock.clone(), pool.clone(), activity.clone()) {
            Ok(t) => t,
            Err(e) => {
                pool.close();
                return Err(io(e));
            }
        };
        Ok(Runtime {
            clock,
            activity,
            pool,
            timer,
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Fails with `Closed` once the engine is closed.
    #[inline]
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::closed())
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[allow(dead_code)] // the bus and later areas hand work to the pool
    pub(crate) fn spawn(&self, job: Job) -> Result<()> {
        self.pool.spawn(job)
    }

    pub(crate) fn schedule(&self, deadline_ms: u64, job: Job) -> Result<TimerId> {
        self.timer.schedule(deadline_ms, job)
    }

    pub(crate) fn cancel(&self, id: TimerId) {
        self.timer.cancel(id)
    }

    pub(crate) fn panics(&self) -> u64 {
        self.pool.panics()
    }

    /// Waits until the background work has settled; see [`crate::Engine::settle`].
    pub(crate) fn settle(&self, timeout: Option<Duration>) -> Result<()> {
        if self.pool.is_own_worker() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                "settle cannot be called from an engine thread: it would wait for itself",
            ));
        }
        if self.activity.wait_settled(&self.clock, timeout) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                "background work did not settle within the timeout",
            ))
        }
    }

    /// Stops the timer, then the pool; harmless twice.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.timer.close();
        self.pool.close();
    }
}
