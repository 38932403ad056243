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

fn engine() -> Engine {
    Engine::builder()
        .manual_clock(T0)
        .workers(2)
        .build()
        .unwrap()
}

fn w() -> WriteOptions {
    WriteOptions::default()
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
