//! Store benchmarks: tarn's document store, through the Rust API and through the C ABI,
//! against in-process maps and caches.
//!
//! # How to run
//!
//! ```text
//! cargo bench --bench store                    # every group; about 2 minutes on 2 cores
//! cargo bench --bench store -- store_read_2t   # one group (any criterion filter works)
//! ```
//!
//! For each function criterion prints the time of one batch (`BATCH` operations per
//! thread) as `[low median high]` and the throughput in `elem/s`, which is operations
//! per second, all threads together. Its reports go to `target/criterion/`. Record the
//! medians, throughputs and the target ratios below in `BENCHMARKS.md` at the repository
//! root, with the machine (CPU, cores), the rustc version, the commit, and whether the
//! machine was otherwise idle (the 2-thread figures mean little on a busy 2-core box).
//!
//! # What is measured
//!
//! One ~1 KB JSON document ([`DOC`]) under 100,000 keys `"k0"`..`"k99999"` in one
//! bucket. Every structure is loaded with every key, in key order, before anything is
//! measured. Access is random: a fixed permutation of the keys, shuffled by a splitmix64
//! PRNG written here, which each thread walks from its own offset (and keeps walking
//! from sample to sample). The keys are formatted in advance, as `String` and `CString`,
//! and are allocated in access order, so neither formatting a key nor fetching it from
//! memory is measured. Only the structure's own memory accesses are. One iteration is a
//! batch of `BATCH` operations per thread, and the throughput is set to the total number
//! of operations, so criterion reports ops/s. The read groups run before the write
//! groups, so reads see the preloaded values.
//!
//! Fairness. Anchor values are `Arc<Vec<u8>>`: a reference-counted header pointing at a
//! separate heap buffer, laid out like tarn's `Arc<Body>`, one allocation per key as in
//! tarn. An anchor read returns a clone of that `Arc` and then drops it, just as tarn's
//! read returns a `Document` holding a clone of the stored `Arc` and the bench drops it.
//! So no contender copies document bytes, except `anchor_lookup_memcpy`, whose whole
//! point is the copy. Each anchor keeps its default hasher (quick_cache: foldhash;
//! dashmap, moka and std `HashMap`: SipHash); tarn uses foldhash.
//!
//! ## Groups
//!
//! - `store_read_1t`, `store_read_2t`: random reads by 1 thread, or by 2 threads at
//!   once (they start together at a `Barrier`; the time is from the first start to the
//!   last finish, over both threads' batches).
//!   - `tarn_rust`: `Store::read`, then reads the document's length.
//!   - `tarn_c_abi`: `tarn_store_read` into a `tarn_buf`, counts its bytes, then
//!     `tarn_buf_free`. This is the path a C program takes, including the argument
//!     checks (strlen and UTF-8 check of both names) and the panic guard.
//!   - `anchor_lookup_memcpy`: a `std::collections::HashMap<String, Vec<u8>>` lookup
//!     plus copying the stored bytes into a reused buffer. This is the least a C ABI
//!     that copies documents out would cost, and the C-ABI target is stated against it.
//!   - `quick_cache` (`quick_cache::sync::Cache`, capacity 2 × keys so nothing is
//!     evicted), `dashmap` (`DashMap`), `moka` (`moka::sync::Cache`, max capacity 2 ×
//!     keys): `get`, which returns a clone of the `Arc` value.
//! - `store_write_1t`, `store_write_2t`: overwrite existing keys at random with the
//!   same document.
//!   - `tarn_rust`: `Store::write_bytes`. It validates the JSON, copies it into a new
//!     body and assigns a version.
//!   - `tarn_c_abi`: `tarn_store_write`, the same through the C ABI.
//!   - `quick_cache`, `dashmap`, `moka`: `insert(key.clone(), value.clone())`, where
//!     `value` is an `Arc` built once per thread. The anchors do not validate or copy
//!     anything. The key clone is a small allocation, but their `insert` needs an owned
//!     key, whereas tarn reuses the key it already holds.
//!
//! ## Targets (from the issue), in throughput terms, for 1 and 2 threads
//!
//! - Rust-API read ≥ 1.0 × quick_cache: `tarn_rust / quick_cache ≥ 1.0` in
//!   `store_read_*`.
//! - Rust-API read ≥ 3 × moka: `tarn_rust / moka ≥ 3.0` in `store_read_*`.
//! - C-ABI read within 3 × of lookup + memcpy: `tarn_c_abi / anchor_lookup_memcpy ≥
//!   1/3` in `store_read_*` (time per read at most 3 × the anchor's).
//! - Writes have no target. They show what validation, copying and versioning cost
//!   compared with maps that store whatever they are given.

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, Throughput};
use dashmap::DashMap;
use std::collections::HashMap;
use std::ffi::CString;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tarn::ffi::buffer::{tarn_buf, tarn_buf_free};
use tarn::ffi::engine::{tarn_engine, tarn_engine_free, tarn_engine_new};
use tarn::ffi::status::tarn_status;
use tarn::ffi::store::{tarn_store_read, tarn_store_write};
use tarn::{Engine, WriteOptions};

/// Number of keys, `"k0"` to `"k99999"`.
const KEYS: usize = 100_000;
/// Operations per iteration, per thread.
const BATCH: usize = 1_000;
/// The one bucket all keys live in.
const BUCKET: &str = "bench";
/// Seed of the access order (any value; fixed so that runs compare).
const SEED: u64 = 0x7461_726e_5f62_656e;

/// The document: a realistic ~1 KB JSON object (strings, numbers, booleans, arrays,
/// nested objects). Its length is checked when the fixture is built.
const DOC: &str = concat!(
    r#"{"id":48213,"type":"order","status":"shipped","created_at":"2024-05-17T09:42:11Z","#,
    r#""updated_at":"2024-05-18T16:03:57Z","customer":{"id":"c-90211","name":"Ada Lovelace","#,
    r#""email":"ada.lovelace@example.com","tier":"gold","since":2016,"verified":true,"#,
    r#""address":{"street":"12 Analytical Row","city":"London","postcode":"NW1 6XE","#,
    r#""country":"GB"}},"items":[{"sku":"DE-1001","name":"Difference engine gear","#,
    r#""qty":4,"unit_price":12.5,"weight_kg":0.35},{"sku":"PC-2040","name":"Punched card set","#,
    r#""qty":200,"unit_price":0.08,"weight_kg":0.002},{"sku":"BR-0007","name":"Brass column","#,
    r#""qty":2,"unit_price":48.0,"weight_kg":3.1},{"sku":"MN-3310","name":"Mill housing","#,
    r#""qty":1,"unit_price":310.75,"weight_kg":12.4}],"subtotal":435.75,"shipping":18.9,"#,
    r#""tax":90.93,"total":545.58,"currency":"EUR","paid":true,"#,
    r#""shipment":{"carrier":"RoyalPost","tracking":"RP123456789GB","eta_days":3,"#,
    r#""events":[{"at":"2024-05-18T07:12:00Z","what":"picked up"}]},"#,
    r#""tags":["priority","gift","fragile","export"],"scores":[0.92,0.17],"#,
    r#""notes":"Leave with the porter if nobody answers: fragile brass."}"#
);

/// An anchor's stored value: shared the way tarn shares a document body.
type Value = Arc<Vec<u8>>;

/// The C engine handle.
struct CEngine(*mut tarn_engine);

// SAFETY: tarn.h allows every function taking a `const tarn_engine *` to be called from
// any thread at the same time, until `tarn_engine_free`; `Drop` frees it once, when the
// fixture is dropped at the end of `main`, after every benchmark thread has finished.
unsafe impl Send for CEngine {}
// SAFETY: as above.
unsafe impl Sync for CEngine {}

impl Drop for CEngine {
    fn drop(&mut self) {
        tarn_engine_free(self.0);
    }
}

/// Everything the benchmarks read and write, built once and shared by every group.
struct Fixture {
    doc: &'static [u8],
    /// Every key once, in the (random) access order, allocated in that order so that
    /// fetching the next key is not itself a cache miss.
    keys: Vec<String>,
    /// The same keys as C strings, in the same order.
    ckeys: Vec<CString>,
    cbucket: CString,
    tarn: Engine,
    c: CEngine,
    std_map: HashMap<String, Vec<u8>>,
    quick: quick_cache::sync::Cache<String, Value>,
    dash: DashMap<String, Value>,
    moka: moka::sync::Cache<String, Value>,
}

static FIXTURE: Mutex<Option<Arc<Fixture>>> = Mutex::new(None);

/// The shared fixture, built on first use (so a filtered run builds it only if needed).
fn fixture() -> Arc<Fixture> {
    let mut slot = FIXTURE.lock().expect("fixture lock");
    slot.get_or_insert_with(|| Arc::new(Fixture::build()))
        .clone()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A Fisher-Yates shuffle of `0..n`.
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn zeroed_buf() -> tarn_buf {
    tarn_buf {
        data: std::ptr::null(),
        len: 0,
        _owner: std::ptr::null_mut(),
    }
}

impl Fixture {
    fn build() -> Fixture {
        let doc = DOC.as_bytes();
        assert!(
            (900..=1100).contains(&doc.len()),
            "DOC should be about 1 KB, not {} bytes",
            doc.len()
        );
        serde_json::from_slice::<serde_json::Value>(doc).expect("DOC is valid JSON");
        // Everything is loaded in key order, k0 to k99999, and read in a random order,
        // so the stored values do not lie in memory in the order they are read.
        let names: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
        let keys: Vec<String> = shuffled(KEYS, SEED)
            .into_iter()
            .map(|i| format!("k{i}"))
            .collect();
        let ckeys: Vec<CString> = keys
            .iter()
            .map(|k| CString::new(k.as_str()).expect("no NUL in keys"))
            .collect();
        let cbucket = CString::new(BUCKET).expect("no NUL in the bucket");

        let tarn = Engine::builder().workers(2).build().expect("engine builds");
        let opts = WriteOptions::default();
        for k in &names {
            tarn.store()
                .write_bytes(BUCKET, k, doc, &opts)
                .expect("preload write");
        }
        assert_eq!(tarn.store().read(BUCKET, "k0").expect("read").bytes(), doc);
        assert_eq!(
            tarn.store().read(BUCKET, "k99999").expect("read").bytes(),
            doc
        );

        let mut ptr: *mut tarn_engine = std::ptr::null_mut();
        assert_eq!(tarn_engine_new(&mut ptr), tarn_status::TARN_OK);
        let c = CEngine(ptr);
        for k in &names {
            let k = CString::new(k.as_str()).expect("no NUL in keys");
            let st = tarn_store_write(
                c.0,
                cbucket.as_ptr(),
                k.as_ptr(),
                doc.as_ptr(),
                doc.len(),
                std::ptr::null(),
                std::ptr::null_mut(),
            );
            assert_eq!(st, tarn_status::TARN_OK, "preload C write");
        }
        let mut buf = zeroed_buf();
        let st = tarn_store_read(
            c.0,
            cbucket.as_ptr(),
            ckeys[0].as_ptr(),
            &mut buf,
            std::ptr::null_mut(),
        );
        assert_eq!(st, tarn_status::TARN_OK);
        assert_eq!(buf.len, doc.len());
        tarn_buf_free(&mut buf);

        // Each structure gets its own allocation per key, built in its own pass, as the
        // engines' preloads do.
        let std_map: HashMap<String, Vec<u8>> =
            names.iter().map(|k| (k.clone(), doc.to_vec())).collect();

        let quick = quick_cache::sync::Cache::new(2 * KEYS);
        for k in &names {
            quick.insert(k.clone(), Arc::new(doc.to_vec()));
        }
        assert_eq!(quick.len(), KEYS, "quick_cache evicted during the preload");

        let dash = DashMap::new();
        for k in &names {
            dash.insert(k.clone(), Arc::new(doc.to_vec()));
        }

        let moka = moka::sync::Cache::new(2 * KEYS as u64);
        for k in &names {
            moka.insert(k.clone(), Arc::new(doc.to_vec()));
        }
        moka.run_pending_tasks();
        assert_eq!(moka.entry_count(), KEYS as u64, "moka dropped entries");

        for k in &names {
            assert!(quick.get(k.as_str()).is_some(), "quick_cache lost {k}");
            assert!(moka.get(k.as_str()).is_some(), "moka lost {k}");
        }

        Fixture {
            doc,
            keys,
            ckeys,
            cbucket,
            tarn,
            c,
            std_map,
            quick,
            dash,
            moka,
        }
    }
}

/// One benchmark thread's own state.
struct Local {
    /// What the anchors insert in the write groups (built once per thread).
    value: Value,
    /// Where `anchor_lookup_memcpy` copies to (reused).
    buf: Vec<u8>,
    /// Sum of the lengths seen, so no result is optimized away.
    sink: usize,
}

impl Local {
    fn new(doc: &[u8]) -> Local {
        Local {
            value: Arc::new(doc.to_vec()),
            buf: Vec::with_capacity(doc.len()),
            sink: 0,
        }
    }
}

/// Runs `iters` batches of `op` over the access order, from `*cursor` on.
#[inline(always)]
fn run_batches<F>(f: &Fixture, iters: u64, cursor: &mut usize, local: &mut Local, op: &F)
where
    F: Fn(&Fixture, &mut Local, usize),
{
    let mut pos = *cursor;
    for _ in 0..iters {
        for _ in 0..BATCH {
            op(f, local, pos);
            pos += 1;
            if pos == KEYS {
                pos = 0;
            }
        }
    }
    *cursor = pos;
}

/// The wall time of `iters` batches on each of `cursors.len()` threads.
fn timed<F>(f: &Fixture, iters: u64, cursors: &mut [usize], op: &F) -> Duration
where
    F: Fn(&Fixture, &mut Local, usize) + Sync,
{
    if let [cursor] = cursors {
        let mut local = Local::new(f.doc);
        let start = Instant::now();
        run_batches(f, iters, cursor, &mut local, op);
        let elapsed = start.elapsed();
        black_box(local.sink);
        return elapsed;
    }
    let barrier = Barrier::new(cursors.len());
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = cursors
            .iter_mut()
            .map(|cursor| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut local = Local::new(f.doc);
                    barrier.wait();
                    let start = Instant::now();
                    run_batches(f, iters, cursor, &mut local, op);
                    let end = Instant::now();
                    black_box(local.sink);
                    (start, end)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a benchmark thread panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("threads ran");
    let end = spans.iter().map(|s| s.1).max().expect("threads ran");
    end - start
}

/// Adds one contender to a group: `op(fixture, local, i)` is one operation on the key
/// `fixture.keys[i]` (or `fixture.ckeys[i]`).
fn contender<F>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, threads: usize, op: F)
where
    F: Fn(&Fixture, &mut Local, usize) + Sync,
{
    // Each thread starts at its own offset of the access order and carries on from
    // where it stopped in the previous sample.
    let mut cursors: Vec<usize> = (0..threads).map(|t| t * KEYS / threads).collect();
    g.bench_function(name, |b| {
        let f = fixture();
        b.iter_custom(|iters| timed(&f, iters, &mut cursors, &op));
    });
}

fn store_read(c: &mut Criterion, threads: usize) {
    let mut g = c.benchmark_group(format!("store_read_{threads}t"));
    g.throughput(Throughput::Elements((BATCH * threads) as u64));
    contender(&mut g, "tarn_rust", threads, |f, l, i| {
        let doc = f.tarn.store().read(BUCKET, &f.keys[i]).expect("preloaded");
        l.sink += black_box(doc).bytes().len();
    });
    contender(&mut g, "tarn_c_abi", threads, |f, l, i| {
        let mut buf = zeroed_buf();
        let st = tarn_store_read(
            f.c.0,
            f.cbucket.as_ptr(),
            f.ckeys[i].as_ptr(),
            &mut buf,
            std::ptr::null_mut(),
        );
        assert_eq!(st, tarn_status::TARN_OK);
        l.sink += black_box(&buf).len;
        tarn_buf_free(&mut buf);
    });
    contender(&mut g, "anchor_lookup_memcpy", threads, |f, l, i| {
        let stored = f.std_map.get(f.keys[i].as_str()).expect("preloaded");
        l.buf.clear();
        l.buf.extend_from_slice(stored);
        l.sink += black_box(&l.buf).len();
    });
    contender(&mut g, "quick_cache", threads, |f, l, i| {
        let v = f.quick.get(f.keys[i].as_str()).expect("preloaded");
        l.sink += black_box(v).len();
    });
    contender(&mut g, "dashmap", threads, |f, l, i| {
        let v = f
            .dash
            .get(f.keys[i].as_str())
            .map(|r| r.value().clone())
            .expect("preloaded");
        l.sink += black_box(v).len();
    });
    contender(&mut g, "moka", threads, |f, l, i| {
        let v = f.moka.get(f.keys[i].as_str()).expect("preloaded");
        l.sink += black_box(v).len();
    });
    g.finish();
}

fn store_write(c: &mut Criterion, threads: usize) {
    let mut g = c.benchmark_group(format!("store_write_{threads}t"));
    g.throughput(Throughput::Elements((BATCH * threads) as u64));
    // tarn validates every document it is given; the anchors below do not.
    contender(&mut g, "tarn_rust", threads, |f, l, i| {
        let version = f
            .tarn
            .store()
            .write_bytes(BUCKET, &f.keys[i], f.doc, &WriteOptions::default())
            .expect("write");
        l.sink += black_box(version) as usize;
    });
    contender(&mut g, "tarn_c_abi", threads, |f, l, i| {
        let mut version = 0u64;
        let st = tarn_store_write(
            f.c.0,
            f.cbucket.as_ptr(),
            f.ckeys[i].as_ptr(),
            f.doc.as_ptr(),
            f.doc.len(),
            std::ptr::null(),
            &mut version,
        );
        assert_eq!(st, tarn_status::TARN_OK);
        l.sink += black_box(version) as usize;
    });
    contender(&mut g, "quick_cache", threads, |f, l, i| {
        f.quick.insert(f.keys[i].clone(), l.value.clone());
    });
    contender(&mut g, "dashmap", threads, |f, l, i| {
        black_box(f.dash.insert(f.keys[i].clone(), l.value.clone()));
    });
    contender(&mut g, "moka", threads, |f, l, i| {
        f.moka.insert(f.keys[i].clone(), l.value.clone());
    });
    g.finish();
}

fn store_read_1t(c: &mut Criterion) {
    store_read(c, 1);
}

fn store_read_2t(c: &mut Criterion) {
    store_read(c, 2);
}

fn store_write_1t(c: &mut Criterion) {
    store_write(c, 1);
}

fn store_write_2t(c: &mut Criterion) {
    store_write(c, 2);
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
    targets = store_read_1t, store_read_2t, store_write_1t, store_write_2t
}

// `criterion_main!` plus releasing the fixture at the end, which frees the C engine
// with `tarn_engine_free` and closes the Rust one.
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let last = FIXTURE.lock().map(|mut slot| slot.take());
    drop(last);
}
