//! Book-keeping of background work, so callers can wait until it has settled.
//!
//! `busy` counts units of background work that have been handed to the runtime and not
//! finished: pool jobs (queued or running) and timer commands (sent, not yet taken in
//! by the timer thread). `next_deadline` is the earliest deadline the timer still holds.
//! The runtime is settled when nothing is busy and no held deadline is due by the
//! engine clock.
//!
//! Invariant: work is counted *before* it is handed over and uncounted only after it has
//! finished, and a job that creates more work counts the new work before finishing, so
//! `busy == 0` is never observed while work is still pending.
//! Lock: `state` guards both counters together so one wait sees a consistent pair; it is
//! held only for the arithmetic, never while a job runs.

use crate::runtime::clock::Clock;
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    busy: usize,
    next_deadline: Option<u64>,
}

/// Counts pending background work; see the module docs.
#[derive(Default)]
pub(crate) struct Activity {
    state: Mutex<State>,
    changed: Condvar,
}

impl Activity {
    pub(crate) fn begin(&self, n: usize) {
        self.state.lock().busy += n;
    }

    pub(crate) fn end(&self, n: usize) {
        let mut s = self.state.lock();
        s.busy = s.busy.saturating_sub(n);
        if s.busy == 0 {
            self.changed.notify_all();
        }
    }

    /// Called by the timer thread after it has taken in commands and fired what was due:
    /// `fired` jobs are counted busy in the same step that retires `taken` commands.
    pub(crate) fn timer_step(&self, taken: usize, fired: usize, next_deadline: Option<u64>) {
        let mut s = self.state.lock();
        s.busy = (s.busy + fired).saturating_sub(taken);
        s.next_deadline = next_deadline;
        self.changed.notify_all();
    }

    /// Waits until settled, or until `timeout` (if any) passes. Returns whether settled.
    pub(crate) fn wait_settled(&self, clock: &Clock, timeout: Option<Duration>) -> bool {
        // A timeout too long to represent waits without limit.
        let give_up = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut s = self.state.lock();
        loop {
            let now = clock.now_ms();
            let due = s.next_deadline.is_some_and(|d| d <= now);
            if s.busy == 0 && !due {
                return true;
            }
            // On the system clock a deadline becomes due without anyone calling in, so
            // wake up by then at the latest; on a manual clock the timer notifies.
            let mut wake = give_up;
            if !clock.is_manual() {
                let at = s.next_deadline.and_then(|d| {
                    Instant::now().checked_add(Duration::from_millis(
                        d.saturating_sub(now).saturating_add(1),
                    ))
                });
                if let Some(at) = at {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            match wake {
                Some(at) => {
                    if self.changed.wait_until(&mut s, at).timed_out()
                        && give_up.is_some_and(|g| Instant::now() >= g)
                    {
                        return false;
                    }
                }
                None => self.changed.wait(&mut s),
            }
        }
    }
}
