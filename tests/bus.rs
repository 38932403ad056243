//! The event bus and sessions through the Rust API: the wildcard matrix, values, signals,
//! per-key order, watch from a version, sessions and presence, leases on the manual
//! clock, both bound policies with exact counts, and the fd. No sleeps: threads meet on
//! channels and barriers, time comes from the manual clock, `settle` waits for
//! background work.

use crossbeam_channel::unbounded;
use serde_json::json;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tarn::{
    ChangeMeta, Delivery, Engine, ErrorKind, EventKind, ListenOptions, Overflow, PatchOptions,
    RemoveOptions, WriteOptions,
};

const T0: u64 = 1_000_000;

mod common;
use common::w;

fn engine() -> Engine {
    common::engine_at(T0)
}

fn drain(l: &tarn::Listener) -> Vec<Delivery> {
    std::iter::from_fn(|| l.try_next().unwrap()).collect()
}

fn keys(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| format!("{}/{}", d.bucket(), d.key()))
        .collect()
}

#[test]
fn wildcard_matrix() {
    let e = engine();
    let bus = e.bus();
    let o = ListenOptions::default();
    let exact = bus.subscribe("b1", "k1", &o).unwrap();
    let bucket_wide = bus.subscribe("b1", "*", &o).unwrap();
    let key_wide = bus.subscribe("*", "k1", &o).unwrap();
    let global = bus.subscribe("*", "*", &o).unwrap();
    for (b, k) in [("b1", "k1"), ("b1", "k2"), ("b2", "k1"), ("b2", "k2")] {
        e.store().write(b, k, &json!(1), &w()).unwrap();
    }
    assert_eq!(keys(&drain(&exact)), ["b1/k1"]);
    assert_eq!(keys(&drain(&bucket_wide)), ["b1/k1", "b1/k2"]);
    assert_eq!(keys(&drain(&key_wide)), ["b1/k1", "b2/k1"]);
    assert_eq!(keys(&drain(&global)), ["b1/k1", "b1/k2", "b2/k1", "b2/k2"]);
    assert_eq!(bus.listener_count(), 4);
    drop(exact);
    assert_eq!(bus.listener_count(), 3);
}

#[test]
fn change_events_carry_kind_version_meta_and_values_when_asked() {
    let e = engine();
    let with = e
        .bus()
        .subscribe(
            "b",
            "*",
            &ListenOptions {
                send_values: true,
                ..Default::default()
            },
        )
        .unwrap();
    let without = e
        .bus()
        .subscribe("b", "*", &ListenOptions::default())
        .unwrap();
    let meta = ChangeMeta {
        session: None,
        request_id: Some("req-1".into()),
        user_data: Some(json!({"who": "test"})),
    };
    let v1 = e
        .store()
        .write(
            "b",
            "k",
            &json!({"n": 1}),
            &WriteOptions {
                meta: meta.clone(),
                ..w()
            },
        )
        .unwrap();
    let p = e
        .store()
        .patch_bytes(
            "b",
            "k",
            br#"[{"op":"replace","path":"/n","value":2}]"#,
            &PatchOptions::default(),
        )
        .unwrap();
    let v3 = e
        .store()
        .remove("b", "k", &RemoveOptions::default())
        .unwrap();
    e.store()
        .write(
            "b",
            "t",
            &json!(0),
            &WriteOptions {
                ttl: Some(Duration::from_millis(5)),
                ..w()
            },
        )
        .unwrap();
    e.clock().advance(Duration::from_millis(5)).unwrap();
    e.settle().unwrap();

    let got = drain(&with);
    let kinds: Vec<EventKind> = got.iter().map(|d| d.kind()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Write,
            EventKind::Patch,
            EventKind::Remove,
            EventKind::Write,
            EventKind::Expire
        ]
    );
    assert_eq!(got[0].version(), v1);
    assert_eq!(got[0].value(), Some(r#"{"n":1}"#));
    assert_eq!(got[0].request_id(), Some("req-1"));
    assert_eq!(got[0].user_data(), Some(r#"{"who":"test"}"#));
    assert_eq!(got[0].timestamp_ms(), T0);
    assert_eq!(got[1].version(), p.version);
    assert_eq!(got[1].value(), Some(r#"{"n":2}"#));
    assert_eq!(
        got[1].ops(),
        Some(r#"[{"op":"replace","path":"/n","value":2}]"#)
    );
    assert_eq!((got[2].version(), got[2].value()), (v3, None));
    assert_eq!(got[4].key(), "t");
    assert_eq!(got[4].timestamp_ms(), T0 + 5);
    let plain = drain(&without);
    assert_eq!(plain.len(), 5);
    assert!(
        plain.iter().all(|d| d.value().is_none()),
        "values only when asked"
    );
    let j: serde_json::Value = serde_json::from_slice(&got[0].to_json()).unwrap();
    assert_eq!(j["kind"], "write");
    assert_eq!(j["value"]["n"], 1);
    assert_eq!(j["missed"], 0);
}

#[test]
fn signals_reach_listeners_and_are_never_stored() {
    let e = engine();
    let l = e
        .bus()
        .subscribe(
            "chat",
            "*",
            &ListenOptions {
                send_values: true,
                ..Default::default()
            },
        )
        .unwrap();
    e.bus()
        .signal("chat", "room1", Some(br#"{"text":"hi"}"#))
        .unwrap();
    e.bus().signal("chat", "room2", None).unwrap();
    let got = drain(&l);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].kind(), got[0].value(), got[0].version()),
        (EventKind::Signal, Some(r#"{"text":"hi"}"#), 0)
    );
    assert_eq!(got[1].value(), None);
    assert_eq!(
        e.store().read("chat", "room1").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(e.store().last_version().unwrap(), 0);
    assert_eq!(
        e.bus()
            .signal("chat", "x", Some(b"{bad"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidJson
    );
    assert_eq!(
        e.bus().signal("$sessions", "x", None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn callbacks_run_on_engine_threads_and_may_call_the_engine() {
    let e = Arc::new(engine());
    let (tx, rx) = unbounded();
    let e2 = Arc::downgrade(&e);
    let l = e
        .bus()
        .listen(
            "in",
            "*",
            &ListenOptions {
                send_values: true,
                ..Default::default()
            },
            move |d| {
                // Re-enter the engine from the callback: copy the value to another bucket.
                if let Some(e) = e2.upgrade() {
                    let v: serde_json::Value = serde_json::from_str(d.value().unwrap()).unwrap();
                    e.store()
                        .write("out", d.key(), &v, &WriteOptions::default())
                        .unwrap();
                }
                tx.send(d.key().to_string()).unwrap();
            },
        )
        .unwrap();
    for i in 0..20 {
        e.store()
            .write("in", &format!("k{i}"), &json!(i), &w())
            .unwrap();
    }
    let got: Vec<String> = (0..20).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(
        got,
        (0..20).map(|i| format!("k{i}")).collect::<Vec<_>>(),
        "one listener's callbacks run in order"
    );
    e.settle().unwrap();
    assert_eq!(e.store().list("out", true).unwrap().len(), 20);
    assert_eq!(
        l.next(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::NotSupported
    );
}

#[test]
fn a_panicking_callback_is_caught_counted_and_keeps_working() {
    let e = engine();
    let (tx, rx) = unbounded();
    let l = e
        .bus()
        .listen("p", "*", &ListenOptions::default(), move |d| {
            if d.key() == "boom" {
                panic!("callback panics");
            }
            tx.send(d.key().to_string()).unwrap();
        })
        .unwrap();
    e.store().write("p", "boom", &json!(1), &w()).unwrap();
    e.store().write("p", "after", &json!(1), &w()).unwrap();
    assert_eq!(rx.recv().unwrap(), "after");
    e.settle().unwrap();
    assert_eq!(l.panics(), 1);
    assert_eq!(l.delivered(), 2);
}

#[test]
fn one_keys_events_arrive_in_commit_order_from_two_writer_threads() {
    let e = Arc::new(engine());
    let l = e
        .bus()
        .subscribe(
            "o",
            "k",
            &ListenOptions {
                capacity: 10_000,
                ..Default::default()
            },
        )
        .unwrap();
    let other = e
        .bus()
        .subscribe(
            "o",
            "*",
            &ListenOptions {
                capacity: 10_000,
                ..Default::default()
            },
        )
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..500 {
                    e.store()
                        .write(
                            "o",
                            "k",
                            &json!({ "t": t, "i": i }),
                            &WriteOptions::default(),
                        )
                        .unwrap();
                    e.store()
                        .write("o", &format!("t{t}"), &json!(i), &WriteOptions::default())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let got = drain(&l);
    assert_eq!(got.len(), 1000);
    assert!(
        got.windows(2).all(|w| w[0].version() < w[1].version()),
        "per-key commit order"
    );
    // Across keys: each key's own events are still in order within a wider listener.
    let all = drain(&other);
    assert_eq!(all.len(), 2000);
    for key in ["k", "t0", "t1"] {
        let v: Vec<u64> = all
            .iter()
            .filter(|d| d.key() == key)
            .map(|d| d.version())
            .collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{key} in order");
    }
}

#[test]
fn watch_from_a_version_replays_then_goes_live_or_is_too_old() {
    let e = Engine::builder()
        .manual_clock(T0)
        .change_log_capacity(4)
        .build()
        .unwrap();
    let s = e.store();
    let mut versions = vec![];
    for i in 0..6 {
        versions.push(s.write("w", &format!("k{i}"), &json!(i), &w()).unwrap());
    }
    // The log keeps the last 4 changes (versions 3..=6): starting after 2 is fine.
    let l = e
        .bus()
        .subscribe(
            "w",
            "*",
            &ListenOptions {
                from_version: Some(versions[1]),
                ..Default::default()
            },
        )
        .unwrap();
    s.write("w", "live", &json!(true), &w()).unwrap();
    let got: Vec<u64> = drain(&l).iter().map(|d| d.version()).collect();
    assert_eq!(
        got,
        [
            versions[2],
            versions[3],
            versions[4],
            versions[5],
            versions[5] + 1
        ]
    );
    let err = e
        .bus()
        .subscribe(
            "w",
            "*",
            &ListenOptions {
                from_version: Some(versions[0]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooOld);
    // Replays respect the pattern.
    let one = e
        .bus()
        .subscribe(
            "w",
            "k5",
            &ListenOptions {
                from_version: Some(versions[2]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        drain(&one)
            .iter()
            .map(|d| d.key().to_string())
            .collect::<Vec<_>>(),
        ["k5"]
    );
}

#[test]
fn drop_policy_counts_exactly_and_the_next_event_says_how_many() {
    let e = engine();
    let l = e
        .bus()
        .subscribe(
            "d",
            "*",
            &ListenOptions {
                capacity: 2,
                ..Default::default()
            },
        )
        .unwrap();
    for i in 0..5 {
        e.store()
            .write("d", &format!("k{i}"), &json!(i), &w())
            .unwrap();
    }
    let first = drain(&l);
    assert_eq!(keys(&first), ["d/k0", "d/k1"]);
    assert!(first.iter().all(|d| d.missed() == 0));
    assert_eq!(l.missed(), 3);
    e.store().write("d", "k5", &json!(5), &w()).unwrap();
    let next = drain(&l);
    assert_eq!((next[0].key(), next[0].missed()), ("k5", 3));
    assert_eq!(l.delivered(), 3);
}

#[test]
fn block_policy_holds_the_publisher_until_there_is_room() {
    let e = Arc::new(engine());
    let l = e
        .bus()
        .subscribe(
            "blk",
            "*",
            &ListenOptions {
                capacity: 1,
                overflow: Overflow::Block,
                block_timeout: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .unwrap();
    let (done_tx, done_rx) = unbounded();
    let e2 = e.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..3 {
            e2.store()
                .write("blk", &format!("k{i}"), &json!(i), &WriteOptions::default())
                .unwrap();
            done_tx.send(i).unwrap();
        }
    });
    // The first write fits; the second blocks until we take the first event.
    assert_eq!(done_rx.recv().unwrap(), 0);
    let mut got = vec![];
    while got.len() < 3 {
        if let Some(d) = l.next(Duration::from_secs(30)).unwrap() {
            got.push(d.key().to_string());
        }
    }
    writer.join().unwrap();
    assert_eq!(got, ["k0", "k1", "k2"]);
    assert_eq!(done_rx.try_iter().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(l.missed(), 0);
}

#[test]
fn the_fd_is_readable_exactly_while_events_wait() {
    let e = engine();
    let l = e
        .bus()
        .subscribe("fd", "*", &ListenOptions::default())
        .unwrap();
    let fd = l.fd().unwrap();
    let readable = |timeout_ms: i32| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        n == 1 && p.revents & libc::POLLIN != 0
    };
    assert!(!readable(0));
    e.store().write("fd", "a", &json!(1), &w()).unwrap();
    e.store().write("fd", "b", &json!(1), &w()).unwrap();
    assert!(readable(0));
    l.try_next().unwrap().unwrap();
    assert!(readable(0), "still one waiting");
    l.try_next().unwrap().unwrap();
    assert!(!readable(0));
    // A poll with a timeout is woken by a write from another thread.
    let e = Arc::new(e);
    let e2 = e.clone();
    let (go, wait) = unbounded::<()>();
    let writer = std::thread::spawn(move || {
        wait.recv().unwrap();
        e2.store()
            .write("fd", "c", &json!(1), &WriteOptions::default())
            .unwrap();
    });
    go.send(()).unwrap();
    assert!(readable(30_000));
    writer.join().unwrap();
    assert_eq!(l.try_next().unwrap().unwrap().key(), "c");
    assert!(!readable(0));
    // Closing leaves the fd open (it is the listener's until dropped) and readable, so a
    // poller wakes and learns the listener closed.
    l.close();
    assert!(readable(0));
    assert_eq!(l.try_next().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn closing_a_session_removes_its_keys_and_listeners_with_events() {
    let e = engine();
    let watch = e
        .bus()
        .subscribe("s", "*", &ListenOptions::default())
        .unwrap();
    let presence = e
        .bus()
        .subscribe(
            tarn::SESSIONS_BUCKET,
            "*",
            &ListenOptions {
                send_values: true,
                ..Default::default()
            },
        )
        .unwrap();
    let a = e.open_session("alice", None).unwrap();
    let b = e.open_session("bob", None).unwrap();
    let as_a = |expire_session| WriteOptions {
        expire_session,
        meta: ChangeMeta {
            session: Some(a.id()),
            ..Default::default()
        },
        ..w()
    };
    let as_b = WriteOptions {
        expire_session: true,
        meta: ChangeMeta {
            session: Some(b.id()),
            ..Default::default()
        },
        ..w()
    };
    e.store().write("s", "a1", &json!(1), &as_a(true)).unwrap();
    e.store().write("s", "a2", &json!(1), &as_a(true)).unwrap();
    e.store()
        .write("s", "moved", &json!(1), &as_a(true))
        .unwrap();
    e.store().write("s", "moved", &json!(2), &as_b).unwrap(); // now bob's
    e.store()
        .write("s", "kept", &json!(1), &as_a(true))
        .unwrap();
    e.store().write("s", "kept", &json!(2), &w()).unwrap(); // permanent again
    assert_eq!(e.store().read("s", "a1").unwrap().session(), Some(a.id()));
    let a_listener = a.subscribe("s", "*", &ListenOptions::default()).unwrap();
    drain(&watch);

    a.close();
    a.close();
    let removed = drain(&watch);
    let mut gone: Vec<(EventKind, String)> = removed
        .iter()
        .map(|d| (d.kind(), d.key().to_string()))
        .collect();
    gone.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        gone,
        [
            (EventKind::SessionExpire, "a1".into()),
            (EventKind::SessionExpire, "a2".into())
        ]
    );
    assert!(removed.iter().all(|d| d.session() == Some(a.id())));
    let left: Vec<String> = e
        .store()
        .list("s", true)
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(left, ["kept", "moved"]);
    assert_eq!(
        a_listener.try_next().unwrap_err().kind(),
        ErrorKind::Closed,
        "its listeners closed with it"
    );
    assert_eq!(
        e.store()
            .write("s", "x", &json!(1), &as_a(true))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    drop(b);
    assert!(
        e.store().read("s", "moved").is_err(),
        "bob's key went with bob"
    );

    let p = drain(&presence);
    let seen: Vec<(EventKind, serde_json::Value)> = p
        .iter()
        .map(|d| {
            (
                d.kind(),
                serde_json::from_str::<serde_json::Value>(d.value().unwrap()).unwrap()["client_id"]
                    .clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::SessionOpen, json!("alice")),
            (EventKind::SessionOpen, json!("bob")),
            (EventKind::SessionClose, json!("alice")),
            (EventKind::SessionClose, json!("bob")),
        ]
    );
}

#[test]
fn a_session_not_kept_alive_within_its_lease_is_closed() {
    let e = engine();
    let s = e
        .open_session("leased", Some(Duration::from_millis(1000)))
        .unwrap();
    let opts = WriteOptions {
        expire_session: true,
        meta: ChangeMeta {
            session: Some(s.id()),
            ..Default::default()
        },
        ..w()
    };
    e.store().write("l", "k", &json!(1), &opts).unwrap();
    e.clock().advance(Duration::from_millis(999)).unwrap();
    e.settle().unwrap();
    assert!(!s.is_closed());
    s.keepalive().unwrap();
    e.clock().advance(Duration::from_millis(999)).unwrap();
    e.settle().unwrap();
    assert!(!s.is_closed(), "kept alive at 999 ms");
    e.clock().advance(Duration::from_millis(1)).unwrap();
    e.settle().unwrap();
    assert!(s.is_closed(), "lease ran out at 1998 ms");
    assert_eq!(
        e.store().read("l", "k").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.keepalive().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn ignore_own_skips_the_sessions_own_changes() {
    let e = engine();
    let me = e.open_session("me", None).unwrap();
    let l = me
        .subscribe(
            "i",
            "*",
            &ListenOptions {
                ignore_own: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mine = WriteOptions {
        meta: ChangeMeta {
            session: Some(me.id()),
            ..Default::default()
        },
        ..w()
    };
    e.store().write("i", "mine", &json!(1), &mine).unwrap();
    e.store().write("i", "theirs", &json!(1), &w()).unwrap();
    me.signal("i", "sig", None).unwrap();
    assert_eq!(keys(&drain(&l)), ["i/theirs"]);
}

#[test]
fn bad_listener_input_is_refused() {
    let e = engine();
    let bus = e.bus();
    for (b, k) in [("", "k"), ("b", ""), ("b.", "*"), ("$other", "*")] {
        assert_eq!(
            bus.subscribe(b, k, &ListenOptions::default())
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument,
            "{b:?}/{k:?}"
        );
    }
    assert_eq!(
        bus.subscribe(
            "b",
            "*",
            &ListenOptions {
                capacity: 0,
                ..Default::default()
            }
        )
        .unwrap_err()
        .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        e.open_session("", None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        e.open_session("x", Some(Duration::ZERO))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let ghost = WriteOptions {
        meta: ChangeMeta {
            session: Some(999),
            ..Default::default()
        },
        ..w()
    };
    assert_eq!(
        e.store()
            .write("b", "k", &json!(1), &ghost)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "changes name open sessions only"
    );
    let no_session = WriteOptions {
        expire_session: true,
        ..w()
    };
    assert_eq!(
        e.store()
            .write("b", "k", &json!(1), &no_session)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let l = bus.subscribe("b", "*", &ListenOptions::default()).unwrap();
    l.close();
    l.close();
    assert_eq!(l.try_next().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(bus.listener_count(), 0);
    let open = bus.subscribe("b", "*", &ListenOptions::default()).unwrap();
    e.close();
    assert_eq!(
        open.try_next().unwrap_err().kind(),
        ErrorKind::Closed,
        "closing the engine closes its listeners"
    );
    assert_eq!(bus.listener_count(), 0);
    assert_eq!(
        bus.subscribe("b", "*", &ListenOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        e.open_session("late", None).unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn huge_timeouts_are_not_a_panic() {
    let e = Arc::new(engine());
    let l = e
        .bus()
        .subscribe(
            "h",
            "*",
            &ListenOptions {
                capacity: 1,
                overflow: Overflow::Block,
                block_timeout: Duration::MAX,
                ..Default::default()
            },
        )
        .unwrap();
    e.store().write("h", "a", &json!(1), &w()).unwrap();
    let e2 = e.clone();
    let writer = std::thread::spawn(move || {
        e2.store()
            .write("h", "b", &json!(2), &WriteOptions::default())
            .unwrap()
    });
    assert_eq!(l.next(Duration::MAX).unwrap().unwrap().key(), "a");
    writer.join().unwrap();
    assert_eq!(l.next(Duration::MAX).unwrap().unwrap().key(), "b");
    e.settle_timeout(Some(Duration::MAX)).unwrap();
    e.store()
        .write(
            "h",
            "ttl",
            &json!(1),
            &WriteOptions {
                ttl: Some(Duration::MAX),
                ..w()
            },
        )
        .unwrap();
    e.settle_timeout(Some(Duration::MAX)).unwrap();
}

#[test]
fn close_waits_for_a_running_callback_and_none_runs_after() {
    let e = Arc::new(engine());
    let (entered_tx, entered) = unbounded();
    let (release, release_rx) = unbounded::<()>();
    let (ran_tx, ran) = unbounded();
    let _l = e
        .bus()
        .listen("c", "*", &ListenOptions::default(), move |d| {
            if d.key() == "first" {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }
            ran_tx.send(d.key().to_string()).unwrap();
        })
        .unwrap();
    e.store().write("c", "first", &json!(1), &w()).unwrap();
    e.store().write("c", "second", &json!(2), &w()).unwrap();
    entered.recv().unwrap();
    let (closed_tx, closed) = unbounded();
    let e2 = e.clone();
    let closer = std::thread::spawn(move || {
        e2.close();
        closed_tx.send(()).unwrap();
    });
    // The callback is still running: close cannot have returned.
    assert!(closed.try_recv().is_err());
    release.send(()).unwrap();
    closed.recv().unwrap();
    closer.join().unwrap();
    let after: Vec<String> = ran.try_iter().collect();
    assert_eq!(after.first().map(String::as_str), Some("first"));
    assert!(ran.try_recv().is_err(), "no callback after close returned");
}
