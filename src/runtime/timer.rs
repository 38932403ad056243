//! The timer thread: one thread holding every deadline of the engine.
//!
//! Deadlines are engine-clock milliseconds. When the clock passes a deadline, its job is
//! handed to the worker pool (the timer thread itself never runs user code). On the
//! system clock the thread sleeps until the earliest deadline; on a manual clock it wakes
//! whenever the clock is moved.
//!
//! Invariants: the deadline map is owned by the timer thread alone (no lock); other
//! threads reach it only through the command channel. Every command is counted busy in
//! [`Activity`] when sent and retired in the same step that publishes the new earliest
//! deadline, so a settle never sees a scheduled deadline as absent.
//! Lock: `thread` holds the join handle, taken once by `close`.

use crate::error::{Error, Result};
use crate::runtime::activity::Activity;
use crate::runtime::clock::Clock;
use crate::runtime::pool::{Job, Pool};
use crossbeam_channel::{after, bounded, never, select, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Identifies one scheduled deadline, for cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TimerId(u64);

enum Cmd {
    Add(TimerId, u64, Job),
    Cancel(TimerId),
}

pub(crate) struct Timer {
    // Unbounded on purpose: commands are bounded by the timers their owners hold (each
    // owner keeps at most a few live deadlines and cancels the ones it replaces), and a
    // bounded channel here could block a store write behind a stalled pool.
    cmds: Sender<Cmd>,
    stop: Mutex<Option<Sender<()>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    activity: Arc<Activity>,
}

impl Timer {
    pub(crate) fn start(
        clock: Clock,
        pool: Arc<Pool>,
        activity: Arc<Activity>,
    ) -> std::io::Result<Timer> {
        let (cmds, cmd_rx) = unbounded::<Cmd>();
        let (stop, stop_rx) = bounded::<()>(0);
        let (wake, wake_rx) = bounded::<()>(1);
        clock.watch(wake);
        let act = activity.clone();
        let thread = std::thread::Builder::new()
            .name("tarn-timer".into())
            .spawn(move || timer_loop(clock, pool, act, cmd_rx, stop_rx, wake_rx))?;
        Ok(Timer {
            cmds,
            stop: Mutex::new(Some(stop)),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            activity,
        })
    }

    /// Runs `job` on the pool once the engine clock reaches `deadline_ms`.
    pub(crate) fn schedule(&self, deadline_ms: u64, job: Job) -> Result<TimerId> {
        let id = TimerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send(Cmd::Add(id, deadline_ms, job))?;
        Ok(id)
    }

    /// Cancels a deadline; cancelling one that already fired does nothing.
    pub(crate) fn cancel(&self, id: TimerId) {
        let _ = self.send(Cmd::Cancel(id));
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        self.activity.begin(1);
        if self.cmds.send(cmd).is_err() {
            self.activity.end(1);
            return Err(Error::closed());
        }
        Ok(())
    }

    /// Stops and joins the timer thread; pending deadlines are dropped. Harmless twice.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.stop.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn timer_loop(
    clock: Clock,
    pool: Arc<Pool>,
    activity: Arc<Activity>,
    cmd_rx: Receiver<Cmd>,
    stop_rx: Receiver<()>,
    wake_rx: Receiver<()>,
) {
    let mut deadlines: BTreeMap<(u64, TimerId), Job> = BTreeMap::new();
    let mut by_id: HashMap<TimerId, u64> = HashMap::new();
    loop {
        let first = deadlines.keys().next().map(|(d, _)| *d);
        let tick = match first {
            Some(d) if !clock.is_manual() => {
                after(Duration::from_millis(d.saturating_sub(clock.now_ms())))
            }
            _ => never(),
        };
        let mut pending = Vec::new();
        select! {
            recv(stop_rx) -> _ => break,
            recv(cmd_rx) -> c => match c {
                Ok(c) => pending.push(c),
                Err(_) => break,
            },
            recv(wake_rx) -> _ => {},
            recv(tick) -> _ => {},
        }
        pending.extend(cmd_rx.try_iter());
        let taken = pending.len();
        for c in pending {
            match c {
                Cmd::Add(id, at, job) => {
                    by_id.insert(id, at);
                    deadlines.insert((at, id), job);
                }
                Cmd::Cancel(id) => {
                    if let Some(at) = by_id.remove(&id) {
                        deadlines.remove(&(at, id));
                    }
                }
            }
        }
        let now = clock.now_ms();
        let later = deadlines.split_off(&(now.saturating_add(1), TimerId(0)));
        let due = std::mem::replace(&mut deadlines, later);
        for (_, id) in due.keys() {
            by_id.remove(id);
        }
        let next = deadlines.keys().next().map(|(d, _)| *d);
        activity.timer_step(taken, due.len(), next);
        for (_, job) in due {
            // Counted busy by timer_step above; a closed pool uncounts it.
            let _ = pool.spawn_counted(job);
        }
    }
    activity.timer_step(0, 0, None);
}
