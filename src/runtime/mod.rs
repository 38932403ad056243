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

    pub(crate) fn spawn(&self, job: Job) -> Result<()> {
        self.pool.spawn(job)
    }

    pub(crate) fn schedule(&self, deadline_ms: u64, job: Job) -> Result<TimerId> {
        self.timer.schedule(deadline_ms, job)
    }

    pub(crate) fn cancel(&self, id: TimerId) {
        self.timer.cancel(id)
    }

    /// Whether the calling thread is one of this engine's workers (a callback).
    pub(crate) fn on_engine_thread(&self) -> bool {
        self.pool.is_own_worker()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{bounded, unbounded};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn manual(workers: usize, cap: usize) -> Arc<Runtime> {
        Arc::new(Runtime::start(Clock::manual(1_000), workers, cap).unwrap())
    }

    #[test]
    fn timers_fire_when_the_manual_clock_passes_them() {
        let rt = manual(2, 16);
        let (tx, rx) = unbounded();
        for at in [1_500u64, 1_100, 1_200] {
            let tx = tx.clone();
            rt.schedule(at, Box::new(move || tx.send(at).unwrap()))
                .unwrap();
        }
        rt.settle(None).unwrap();
        assert!(rx.try_recv().is_err(), "nothing is due at 1000");
        rt.clock().set(1_200).unwrap();
        rt.settle(None).unwrap();
        let mut fired: Vec<u64> = rx.try_iter().collect();
        fired.sort();
        assert_eq!(fired, [1_100, 1_200]);
        rt.clock().advance(Duration::from_millis(299)).unwrap();
        rt.settle(None).unwrap();
        assert!(rx.try_recv().is_err(), "1500 is not due at 1499");
        rt.clock().advance(Duration::from_millis(1)).unwrap();
        rt.settle(None).unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1_500]);
    }

    #[test]
    fn cancelled_timers_do_not_fire() {
        let rt = manual(1, 16);
        let (tx, rx) = unbounded();
        let id = rt
            .schedule(1_010, Box::new(move || tx.send(()).unwrap()))
            .unwrap();
        rt.cancel(id);
        rt.clock().advance(Duration::from_secs(1)).unwrap();
        rt.settle(None).unwrap();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_panicking_job_is_caught_and_the_pool_goes_on() {
        let rt = manual(1, 16);
        rt.spawn(Box::new(|| panic!("boom"))).unwrap();
        let (tx, rx) = bounded(1);
        rt.spawn(Box::new(move || tx.send(7).unwrap())).unwrap();
        assert_eq!(rx.recv().unwrap(), 7);
        rt.settle(None).unwrap();
        assert_eq!(rt.panics(), 1);
    }

    #[test]
    fn a_full_queue_runs_work_inline_on_a_worker_instead_of_deadlocking() {
        let rt = manual(1, 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let (rt2, ran2) = (rt.clone(), ran.clone());
        rt.spawn(Box::new(move || {
            for _ in 0..50 {
                let ran = ran2.clone();
                rt2.spawn(Box::new(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                }))
                .unwrap();
            }
        }))
        .unwrap();
        rt.settle(None).unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn settle_times_out_while_a_job_is_busy_and_refuses_engine_threads() {
        let rt = manual(2, 16);
        let (release, wait) = bounded::<()>(0);
        let (inner_tx, inner_rx) = bounded(1);
        let rt2 = rt.clone();
        rt.spawn(Box::new(move || {
            inner_tx
                .send(rt2.settle(None).map_err(|e| e.kind()))
                .unwrap();
            wait.recv().unwrap();
        }))
        .unwrap();
        assert_eq!(inner_rx.recv().unwrap(), Err(ErrorKind::NotSupported));
        let r = rt.settle(Some(Duration::from_millis(20)));
        assert_eq!(r.map_err(|e| e.kind()), Err(ErrorKind::Timeout));
        release.send(()).unwrap();
        rt.settle(None).unwrap();
    }

    #[test]
    fn nothing_runs_after_close_returns() {
        let rt = manual(2, 16);
        let (tx, rx) = unbounded();
        let t = tx.clone();
        rt.schedule(2_000, Box::new(move || t.send("timer").unwrap()))
            .unwrap();
        rt.close();
        rt.close();
        rt.clock().set(5_000).unwrap();
        assert_eq!(
            rt.spawn(Box::new(move || tx.send("job").unwrap()))
                .map_err(|e| e.kind()),
            Err(ErrorKind::Closed)
        );
        assert!(rt.schedule(6_000, Box::new(|| {})).is_err());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn system_clock_timers_fire_on_their_own() {
        let rt = Arc::new(Runtime::start(Clock::system(), 1, 4).unwrap());
        let (tx, rx) = bounded(1);
        let at = rt.now_ms() + 2;
        rt.schedule(at, Box::new(move || tx.send(()).unwrap()))
            .unwrap();
        // Settling does not wait for deadlines still in the future; the job arrives on
        // its own once the system clock passes it.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(rt.now_ms() >= at);
        rt.settle(Some(Duration::from_secs(10))).unwrap();
    }
}
