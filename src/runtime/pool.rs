//! The worker pool: a fixed set of threads fed by one bounded crossbeam channel.
//!
//! Policy at the bound: `spawn` blocks until a slot frees, except on one of this pool's
//! own worker threads, where the job runs inline (a worker waiting for a slot that only
//! workers can free would deadlock the pool). After `close`, `spawn` fails with `Closed`.
//! A job that panics is caught and counted; the worker goes on with the next job.
//!
//! Invariants: every job is counted in [`Activity`] before it is queued and uncounted
//! after it ran (or was refused). After `close` returns no job runs: the workers leave
//! their loop on the shutdown channel and are joined; jobs still queued are dropped.
//! Lock: `threads` holds the join handles, taken once by `close`.

use crate::error::{Error, Result};
use crate::runtime::activity::Activity;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A unit of work for the pool.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The id of the pool whose worker this thread is (0: none).
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

pub(crate) struct Pool {
    id: usize,
    jobs: Sender<Job>,
    shutdown: Mutex<Option<Sender<()>>>,
    shutdown_rx: Receiver<()>,
    /// Kept to drop, uncounted, the jobs still queued when the pool closes.
    jobs_rx: Receiver<Job>,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    activity: Arc<Activity>,
    panics: Arc<AtomicU64>,
}

impl Pool {
    pub(crate) fn new(
        workers: usize,
        capacity: usize,
        activity: Arc<Activity>,
    ) -> std::io::Result<Pool> {
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let (jobs, jobs_rx) = bounded::<Job>(capacity);
        let (shutdown, shutdown_rx) = bounded::<()>(0);
        let panics = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(workers);
        for n in 0..workers {
            let rx = jobs_rx.clone();
            let stop = shutdown_rx.clone();
            let activity = activity.clone();
            let panics = panics.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tarn-worker-{n}"))
                .spawn(move || worker_loop(id, rx, stop, activity, panics));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    drop(shutdown);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Pool {
            id,
            jobs,
            shutdown: Mutex::new(Some(shutdown)),
            shutdown_rx,
            jobs_rx,
            closed: AtomicBool::new(false),
            threads: Mutex::new(threads),
            activity,
            panics,
        })
    }

    /// Queues `job`; see the module docs for the policy when the queue is full.
    pub(crate) fn spawn(&self, job: Job) -> Result<()> {
        self.activity.begin(1);
        self.spawn_counted(job)
    }

    /// Queues a job that the caller has already counted in the activity.
    pub(crate) fn spawn_counted(&self, job: Job) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            self.activity.end(1);
            return Err(Error::closed());
        }
        if self.is_own_worker() {
            match self.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::TrySendError::Full(job)) => {
                    run_job(job, &self.activity, &self.panics);
                    return Ok(());
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    self.activity.end(1);
                    return Err(Error::closed());
                }
            }
        }
        select! {
            send(self.jobs, job) -> r => match r {
                Ok(()) => Ok(()),
                Err(_) => { self.activity.end(1); Err(Error::closed()) }
            },
            recv(self.shutdown_rx) -> _ => { self.activity.end(1); Err(Error::closed()) }
        }
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        WORKER_OF.with(|w| w.get()) == self.id
    }

    /// Panics caught in jobs so far.
    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Stops and joins the workers. Harmless twice. Called from a worker (a job closing
    /// the engine), that worker is not joined: it leaves after the job returns.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.shutdown.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        // Jobs still queued will never run: uncount them so a settle() does not wait.
        let dropped = self.jobs_rx.try_iter().count();
        self.activity.end(dropped);
    }
}

fn worker_loop(
    id: usize,
    jobs: Receiver<Job>,
    stop: Receiver<()>,
    activity: Arc<Activity>,
    panics: Arc<AtomicU64>,
) {
    WORKER_OF.with(|w| w.set(id));
    loop {
        select! {
            recv(stop) -> _ => return,
            recv(jobs) -> job => match job {
                Ok(job) => run_job(job, &activity, &panics),
                Err(_) => return,
            },
        }
    }
}

fn run_job(job: Job, activity: &Activity, panics: &AtomicU64) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        panics.fetch_add(1, Ordering::Relaxed);
    }
    activity.end(1);
}
