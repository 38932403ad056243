//! Event bus benchmarks: tarn's publish → deliver path, through the Rust API, against a
//! raw crossbeam channel carrying the same kind of shared event.
//!
//! # How to run
//!
//! ```text
//! cargo bench --bench bus                             # every group; about 1 minute on 2 cores
//! cargo bench --bench bus -- bus_publish_nonmatching  # one group (any criterion filter works)
//! ```
//!
//! For each function criterion prints the time of one iteration as `[low median high]`
//! and the throughput in `elem/s`: events per second in `bus_deliver_1` and
//! `bus_publish_nonmatching`, deliveries (events × listeners) per second in
//! `bus_fanout_100`. Its reports go to `target/criterion/`. Record the medians,
//! throughputs and the target ratios below in `BENCHMARKS.md` at the repository root,
//! with the machine (CPU, cores), the rustc version, the commit, and whether the machine
//! was otherwise idle.
//!
//! # What is measured
//!
//! One iteration publishes `BATCH` events on `"b"/"k"` and then drains every matching
//! listener of all of them, on the benchmark thread. Each listener is a pull listener
//! (`Bus::subscribe`, capacity `BATCH`, the default `Drop` policy) drained with
//! `Listener::try_next`; each drained delivery's version is added to a sink, and the
//! iteration checks it drained exactly `BATCH` events per listener. Every engine is
//! built with `Engine::builder().workers(2)`, on the system clock; each contender gets
//! its own engine, so no group sees another's listeners.
//!
//! Publishing:
//! - `tarn_signal`: `Bus::signal("b", "k", Some(PAYLOAD))`, the pure bus path: the
//!   payload is validated and copied into a body, the event is built and handed to the
//!   listeners; nothing is stored.
//! - `tarn_write`: `Store::write_bytes("b", "k", PAYLOAD)`, a store change that publishes
//!   its event (validation, the store's commit and version, the change log, then the
//!   bus). It shows what a change event costs end to end; it has no target.
//! - `crossbeam_channel`: the anchor. A bounded `crossbeam_channel` per listener (capacity
//!   `BATCH`), carrying an `Arc<AnchorEvent>` laid out like tarn's event (kind, bucket,
//!   key, version, timestamp, value). Each event is one new `Arc` (one allocation, as
//!   tarn's one `Arc<Event>`), whose bucket, key and value are clones of `Arc`s built
//!   once. It is sent to each channel (an `Arc` clone each, as tarn clones its `Arc` into
//!   each queue), and each channel is then drained with `try_recv`. This is about the
//!   least a bus that shares one event among its listeners can cost: no pattern matching,
//!   no validation, no clock, no per-listener state.
//!
//! Fairness. The publisher and the consumer are the same thread, for both tarn and the
//! anchor, so the figures are the cost of the two data structures, not of waking a
//! sleeping consumer. With a consumer thread the result would mostly measure thread
//! wake-ups and the scheduler (tarn parks on a condvar, crossbeam on its own waker), and
//! on a busy 2-core machine that is noise. Both sides reach their queues' bounds only if
//! a drain were skipped, which the per-iteration check rules out; both sides do one
//! allocation per event for the event itself, and tarn's extra work (it allocates the
//! bucket and key names and the payload body per event, validates the payload, reads
//! the clock and looks up the index) is what the ratio shows.
//!
//! ## Groups
//!
//! - `bus_deliver_1`: one listener on `"b"/"k"`; `tarn_signal`, `tarn_write`,
//!   `crossbeam_channel`. Throughput: events.
//! - `bus_fanout_100`: 100 listeners on `"b"/"k"`, each drained of every event;
//!   `tarn_signal`, `tarn_write`, and `crossbeam_channel` with 100 channels (every event
//!   sent to all 100, then each drained). Throughput: deliveries (`BATCH` × 100).
//! - `bus_publish_nonmatching`: `tarn/N` is `tarn_signal` to one matching listener on
//!   `"b"/"k"` while `N` other listeners are registered that never match: for N = 1,
//!   100 and 10,000, 80% exact listeners on `"b"/"other{i}"` (same bucket, other keys),
//!   10% bucket-wide `"ob{i}"/"*"` and 10% key-wide `"*"/"ok{i}"` (N = 1: one exact
//!   listener). `crossbeam_channel` is the one-channel anchor of `bus_deliver_1`.
//!   Throughput: events.
//!
//! ## Targets (from the issue), in throughput terms
//!
//! - Delivery ≥ 30% of the raw channel: `tarn_signal / crossbeam_channel ≥ 0.3` in
//!   `bus_deliver_1` and `bus_fanout_100`.
//! - Publish cost flat in non-matching listeners: `tarn/10000 / tarn/1` close to 1.0 in
//!   `bus_publish_nonmatching` (the index looks up only the matching lists; what is left
//!   is the cache footprint of larger maps).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use criterion::{Bencher, Throughput};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tarn::{Engine, ListenOptions, Listener, WriteOptions};

/// Events published per iteration.
const BATCH: usize = 1_000;
/// Listeners in `bus_fanout_100`.
const FANOUT: usize = 100;
/// Non-matching listener counts in `bus_publish_nonmatching`.
const NONMATCHING: [usize; 3] = [1, 100, 10_000];
/// The bucket and key every event is published on.
const BUCKET: &str = "b";
const KEY: &str = "k";
/// The signal value and the written document: a small JSON object.
const PAYLOAD: &[u8] = br#"{"n":1,"who":"bench"}"#;

/// A fresh engine for one contender.
fn engine() -> Engine {
    Engine::builder().workers(2).build().expect("engine builds")
}

/// Queues large enough for one iteration's events; the default `Drop` policy.
fn listen_options() -> ListenOptions {
    ListenOptions {
        capacity: BATCH,
        ..ListenOptions::default()
    }
}

/// `n` pull listeners on `"b"/"k"`.
fn matching(e: &Engine, n: usize) -> Vec<Listener> {
    (0..n)
        .map(|_| {
            e.bus()
                .subscribe(BUCKET, KEY, &listen_options())
                .expect("subscribe")
        })
        .collect()
}

/// `n` listeners that never match `"b"/"k"` (see the module docs for the mix).
fn nonmatching(e: &Engine, n: usize) -> Vec<Listener> {
    let wide = n / 10;
    let exact = n - 2 * wide;
    let o = listen_options();
    let bus = e.bus();
    let mut v = Vec::with_capacity(n);
    for i in 0..exact {
        v.push(
            bus.subscribe(BUCKET, &format!("other{i}"), &o)
                .expect("exact"),
        );
    }
    for i in 0..wide {
        v.push(
            bus.subscribe(&format!("ob{i}"), "*", &o)
                .expect("bucket-wide"),
        );
        v.push(bus.subscribe("*", &format!("ok{i}"), &o).expect("key-wide"));
    }
    assert_eq!(v.len(), n);
    v
}

/// Drains one listener; returns the sum of the versions, checking it got `BATCH` events.
#[inline(always)]
fn drain(l: &Listener) -> u64 {
    let mut got = 0;
    let mut sink = 0u64;
    while let Some(d) = l.try_next().expect("listener open") {
        sink = sink.wrapping_add(d.version());
        got += 1;
    }
    assert_eq!(got, BATCH, "a listener missed events");
    sink
}

/// How a tarn contender publishes one event.
#[derive(Clone, Copy)]
enum Publish {
    Signal,
    Write,
}

impl Publish {
    #[inline(always)]
    fn run(self, e: &Engine, opts: &WriteOptions) {
        match self {
            Publish::Signal => e.bus().signal(BUCKET, KEY, Some(PAYLOAD)).expect("signal"),
            Publish::Write => {
                black_box(
                    e.store()
                        .write_bytes(BUCKET, KEY, PAYLOAD, opts)
                        .expect("write"),
                );
            }
        }
    }
}

/// One tarn iteration: `BATCH` publishes, then every listener drained.
fn tarn_iter(b: &mut Bencher<'_>, e: &Engine, how: Publish, listeners: &[Listener]) {
    let opts = WriteOptions::default();
    b.iter(|| {
        for _ in 0..BATCH {
            how.run(e, &opts);
        }
        let mut sink = 0u64;
        for l in listeners {
            sink = sink.wrapping_add(drain(l));
        }
        sink
    });
}

/// Adds a tarn contender: a fresh engine with `listeners` matching and `others`
/// non-matching listeners.
fn tarn_contender(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    how: Publish,
    listeners: usize,
    others: usize,
) {
    let e = engine();
    let ls = matching(&e, listeners);
    let _others = nonmatching(&e, others);
    assert_eq!(e.bus().listener_count(), listeners + others);
    g.bench_function(id, |b| tarn_iter(b, &e, how, &ls));
    for l in &ls {
        assert_eq!(l.missed(), 0, "a listener dropped events at its bound");
    }
}

/// The anchor's event, laid out like tarn's (minus the optional request id, user data
/// and patch operations, which tarn leaves empty here). Only `version` is read, as in the
/// tarn drain.
#[allow(dead_code)]
struct AnchorEvent {
    kind: u8,
    bucket: Arc<str>,
    key: Arc<str>,
    version: u64,
    timestamp_ms: u64,
    value: Option<Arc<Vec<u8>>>,
}

/// Adds the anchor: `channels` bounded channels, every event sent to each, then each
/// drained.
fn anchor_contender(g: &mut BenchmarkGroup<'_, WallTime>, id: BenchmarkId, channels: usize) {
    type Chan = (Sender<Arc<AnchorEvent>>, Receiver<Arc<AnchorEvent>>);
    let chans: Vec<Chan> = (0..channels).map(|_| bounded(BATCH)).collect();
    let bucket: Arc<str> = Arc::from(BUCKET);
    let key: Arc<str> = Arc::from(KEY);
    let value = Arc::new(PAYLOAD.to_vec());
    let mut version = 0u64;
    g.bench_function(id, |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                version += 1;
                let ev = Arc::new(AnchorEvent {
                    kind: 5, // "signal"
                    bucket: bucket.clone(),
                    key: key.clone(),
                    version,
                    timestamp_ms: version,
                    value: Some(value.clone()),
                });
                for (tx, _) in &chans {
                    tx.try_send(ev.clone()).expect("room for the batch");
                }
            }
            let mut sink = 0u64;
            for (_, rx) in &chans {
                let mut got = 0;
                while let Ok(ev) = rx.try_recv() {
                    let ev = black_box(ev);
                    sink = sink.wrapping_add(ev.version);
                    got += 1;
                }
                assert_eq!(got, BATCH, "a channel missed events");
            }
            sink
        });
    });
}

fn bus_deliver_1(c: &mut Criterion) {
    let mut g = c.benchmark_group("bus_deliver_1");
    g.throughput(Throughput::Elements(BATCH as u64));
    tarn_contender(
        &mut g,
        BenchmarkId::from_parameter("tarn_signal"),
        Publish::Signal,
        1,
        0,
    );
    tarn_contender(
        &mut g,
        BenchmarkId::from_parameter("tarn_write"),
        Publish::Write,
        1,
        0,
    );
    anchor_contender(&mut g, BenchmarkId::from_parameter("crossbeam_channel"), 1);
    g.finish();
}

fn bus_fanout_100(c: &mut Criterion) {
    let mut g = c.benchmark_group("bus_fanout_100");
    g.throughput(Throughput::Elements((BATCH * FANOUT) as u64));
    tarn_contender(
        &mut g,
        BenchmarkId::from_parameter("tarn_signal"),
        Publish::Signal,
        FANOUT,
        0,
    );
    tarn_contender(
        &mut g,
        BenchmarkId::from_parameter("tarn_write"),
        Publish::Write,
        FANOUT,
        0,
    );
    anchor_contender(
        &mut g,
        BenchmarkId::from_parameter("crossbeam_channel"),
        FANOUT,
    );
    g.finish();
}

fn bus_publish_nonmatching(c: &mut Criterion) {
    let mut g = c.benchmark_group("bus_publish_nonmatching");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in NONMATCHING {
        tarn_contender(&mut g, BenchmarkId::new("tarn", n), Publish::Signal, 1, n);
    }
    anchor_contender(&mut g, BenchmarkId::from_parameter("crossbeam_channel"), 1);
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bus_deliver_1, bus_fanout_100, bus_publish_nonmatching
}
criterion_main!(benches);
