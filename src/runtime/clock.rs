//! The engine's clock: every timestamp and deadline in tarn comes from here.
//!
//! Time is milliseconds since the Unix epoch (`u64`). The system clock is monotonic: it
//! reads the wall clock once when the engine starts and then advances by a monotonic
//! `Instant`, so a wall-clock step never makes a TTL fire early or twice. The manual
//! clock only moves when [`Clock::set`] or [`Clock::advance`] is called; tests use it so
//! that nothing sleeps to wait for a TTL or a timeout.
//!
//! Invariants: the clock never goes backwards (a `set` to an earlier time is refused).
//! Lock: `watchers` guards the list of wake-up channels of timer threads; it is held only
//! to clone or push senders, never while anything else runs.

use crate::error::{Error, ErrorKind, Result};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A clock shared by everything in one engine. Cloning shares the same clock.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

enum Source {
    System { epoch_ms: u64, start: Instant },
    Manual { now: AtomicU64 },
}

struct ClockInner {
    source: Source,
    watchers: Mutex<Vec<Sender<()>>>,
}

impl Clock {
    /// The system clock (wall time at start, then monotonic).
    pub fn system() -> Clock {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::from_source(Source::System {
            epoch_ms,
            start: Instant::now(),
        })
    }

    /// A manual clock starting at `start_ms` (milliseconds since the Unix epoch). It moves
    /// only through [`Clock::set`] and [`Clock::advance`]; timers fire as it passes them.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::from_source(Source::Manual {
            now: AtomicU64::new(start_ms),
        })
    }

    fn from_source(source: Source) -> Clock {
        Clock {
            inner: Arc::new(ClockInner {
                source,
                watchers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.source, Source::Manual { .. })
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.inner.source {
            Source::System { epoch_ms, start } => {
                epoch_ms.saturating_add(start.elapsed().as_millis() as u64)
            }
            Source::Manual { now } => now.load(Ordering::Acquire),
        }
    }

    /// Sets a manual clock to `ms`. Refused (`NotSupported`) on the system clock and
    /// (`InvalidArgument`) when `ms` is earlier than the current time.
    pub fn set(&self, ms: u64) -> Result<()> {
        let now = self.manual_cell()?;
        let mut cur = now.load(Ordering::Acquire);
        loop {
            if ms < cur {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("the manual clock never goes backwards (now {cur} ms, asked {ms} ms)"),
                ));
            }
            match now.compare_exchange(cur, ms, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.wake_watchers();
        Ok(())
    }

    /// Advances a manual clock by `by`. Refused (`NotSupported`) on the system clock.
    pub fn advance(&self, by: Duration) -> Result<u64> {
        let now = self.manual_cell()?;
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let prev = now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.saturating_add(by_ms))
            })
            .unwrap_or_else(|cur| cur);
        self.wake_watchers();
        Ok(prev.saturating_add(by_ms))
    }

    fn manual_cell(&self) -> Result<&AtomicU64> {
        match &self.inner.source {
            Source::Manual { now } => Ok(now),
            Source::System { .. } => Err(Error::new(
                ErrorKind::NotSupported,
                "the engine runs on the system clock; only a manual clock can be set or advanced",
            )),
        }
    }

    /// Registers a channel that receives `()` (coalesced) whenever a manual clock moves.
    pub(crate) fn watch(&self, tx: Sender<()>) {
        self.inner.watchers.lock().push(tx);
    }

    fn wake_watchers(&self) {
        let watchers = self.inner.watchers.lock().clone();
        for w in watchers {
            // A full channel already holds a pending wake-up; a closed one belongs to a
            // stopped timer. Either way nothing more is needed.
            let _ = w.try_send(());
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("manual", &self.is_manual())
            .field("now_ms", &self.now_ms())
            .finish()
    }
}
