//! The store through the Rust API: every operation, every error kind, TTLs on the
//! manual clock, and concurrency checked with barriers and invariants (no sleeps).

use serde_json::json;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tarn::{Engine, ErrorKind, PatchOptions, RemoveOptions, WriteOptions};

const T0: u64 = 1_700_000_000_000;

mod common;
use common::w;

fn engine() -> Engine {
    common::engine_at(T0)
}

fn kind<T: std::fmt::Debug>(r: tarn::Result<T>) -> ErrorKind {
    let e = r.expect_err("expected an error");
    assert!(!e.message().is_empty(), "error without a message: {e:?}");
    e.kind()
}

#[test]
fn write_read_round_trip_keeps_bytes_and_metadata() {
    let e = engine();
    let s = e.store();
    let text = br#"{ "name" : "Ada",  "langs": ["en", "fr"] }"#;
    let v = s.write_bytes("users", "ada", text, &w()).unwrap();
    let d = s.read("users", "ada").unwrap();
    assert_eq!(d.bytes(), text, "stored as given, not re-serialized");
    assert_eq!(d.version(), v);
    assert_eq!(d.modified_ms(), T0);
    assert_eq!(d.expires_ms(), None);
    assert_eq!(d.value().unwrap()["langs"][1], "fr");
    // Any JSON value is a document, not only objects.
    s.write("users", "n", &json!(42), &w()).unwrap();
    assert_eq!(s.read("users", "n").unwrap().as_str(), "42");
}

#[test]
fn versions_increase_with_every_change_and_never_repeat() {
    let e = engine();
    let s = e.store();
    let v1 = s.write("b", "k", &json!({"n": 1}), &w()).unwrap();
    let v2 = s.write("b", "k", &json!({"n": 2}), &w()).unwrap();
    let p = s
        .patch_bytes(
            "b",
            "k",
            br#"[{"op":"replace","path":"/n","value":3}]"#,
            &PatchOptions::default(),
        )
        .unwrap();
    let v4 = s.remove("b", "k", &RemoveOptions::default()).unwrap();
    let v5 = s.write("b", "k", &json!({"n": 5}), &w()).unwrap();
    assert!(
        v1 < v2 && v2 < p.version && p.version < v4 && v4 < v5,
        "{v1} {v2} {} {v4} {v5}",
        p.version
    );
    assert_eq!(s.last_version().unwrap(), v5);
    // A change to another key also takes a version, so versions are store-wide.
    let other = s.write("b", "other", &json!(0), &w()).unwrap();
    assert!(other > v5);
}

#[test]
fn if_version_guards_write_patch_and_remove() {
    let e = engine();
    let s = e.store();
    // 0 means "only if absent".
    let v1 = s
        .write(
            "b",
            "k",
            &json!(1),
            &WriteOptions {
                if_version: Some(0),
                ..w()
            },
        )
        .unwrap();
    assert_eq!(
        kind(s.write(
            "b",
            "k",
            &json!(2),
            &WriteOptions {
                if_version: Some(0),
                ..w()
            }
        )),
        ErrorKind::VersionConflict
    );
    assert_eq!(
        kind(s.write(
            "b",
            "k",
            &json!(2),
            &WriteOptions {
                if_version: Some(v1 + 7),
                ..w()
            }
        )),
        ErrorKind::VersionConflict
    );
    let v2 = s
        .write(
            "b",
            "k",
            &json!(2),
            &WriteOptions {
                if_version: Some(v1),
                ..w()
            },
        )
        .unwrap();
    let ops = br#"[{"op":"replace","path":"","value":3}]"#;
    assert_eq!(
        kind(s.patch_bytes(
            "b",
            "k",
            ops,
            &PatchOptions {
                if_version: Some(v1),
                ..Default::default()
            }
        )),
        ErrorKind::VersionConflict
    );
    let p = s
        .patch_bytes(
            "b",
            "k",
            ops,
            &PatchOptions {
                if_version: Some(v2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        kind(s.remove(
            "b",
            "k",
            &RemoveOptions {
                if_version: Some(v2),
                ..Default::default()
            }
        )),
        ErrorKind::VersionConflict
    );
    assert_eq!(
        s.read("b", "k").unwrap().as_str(),
        "3",
        "conflicts changed nothing"
    );
    s.remove(
        "b",
        "k",
        &RemoveOptions {
            if_version: Some(p.version),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(kind(s.read("b", "k")), ErrorKind::NotFound);
}

#[test]
fn fail_if_exists_has_exactly_one_winner() {
    let e = Arc::new(engine());
    let threads = 8;
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(threads));
        let key = format!("race{round}");
        let results: Vec<_> = (0..threads)
            .map(|t| {
                let (e, barrier, key) = (e.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    e.store().write(
                        "race",
                        &key,
                        &json!({ "writer": t }),
                        &WriteOptions {
                            fail_if_exists: true,
                            ..w()
                        },
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind() == ErrorKind::Exists));
    }
}

#[test]
fn conditional_increments_from_two_threads_lose_no_update() {
    let e = Arc::new(engine());
    e.store().write("c", "n", &json!(0), &w()).unwrap();
    let per_thread = 500;
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut conflicts = 0;
                let mut last_seen = 0;
                for _ in 0..per_thread {
                    loop {
                        let d = e.store().read("c", "n").unwrap();
                        assert!(d.version() >= last_seen, "a key's version went backwards");
                        last_seen = d.version();
                        let n: u64 = d.to().unwrap();
                        let r = e.store().write(
                            "c",
                            "n",
                            &json!(n + 1),
                            &WriteOptions {
                                if_version: Some(d.version()),
                                ..w()
                            },
                        );
                        match r {
                            Ok(_) => break,
                            Err(err) if err.kind() == ErrorKind::VersionConflict => conflicts += 1,
                            Err(err) => panic!("{err}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let n: u64 = e.store().read("c", "n").unwrap().to().unwrap();
    assert_eq!(n, 2 * per_thread);
}

#[test]
fn concurrent_patches_are_each_applied_once() {
    let e = Arc::new(engine());
    e.store()
        .write("p", "doc", &json!({"items": []}), &w())
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..200 {
                    let op =
                        json!([{ "op": "add", "path": "/items/-", "value": format!("{t}-{i}") }]);
                    e.store()
                        .patch(
                            "p",
                            "doc",
                            &tarn::PatchOps::from_value(op).unwrap(),
                            &PatchOptions {
                                remove_data_from_reply: true,
                                ..Default::default()
                            },
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let v = e.store().read("p", "doc").unwrap().value().unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 400);
    for t in 0..2 {
        let mine: Vec<_> = items
            .iter()
            .filter_map(|x| x.as_str())
            .filter(|x| x.starts_with(&format!("{t}-")))
            .collect();
        let expected: Vec<String> = (0..200).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(mine, expected, "thread {t}'s patches are in its order");
    }
}

#[test]
fn ttl_expires_on_the_manual_clock() {
    let e = engine();
    let s = e.store();
    let ttl = WriteOptions {
        ttl: Some(Duration::from_millis(1000)),
        ..w()
    };
    s.write("t", "short", &json!("x"), &ttl).unwrap();
    s.write(
        "t",
        "long",
        &json!("y"),
        &WriteOptions {
            ttl: Some(Duration::from_secs(60)),
            ..w()
        },
    )
    .unwrap();
    s.write("t", "forever", &json!("z"), &w()).unwrap();
    assert_eq!(s.read("t", "short").unwrap().expires_ms(), Some(T0 + 1000));
    let bytes_before = s.stored_bytes();

    e.clock().advance(Duration::from_millis(999)).unwrap();
    e.settle().unwrap();
    assert!(s.read("t", "short").is_ok(), "not yet expired at 999 ms");

    e.clock().advance(Duration::from_millis(1)).unwrap();
    assert_eq!(
        kind(s.read("t", "short")),
        ErrorKind::NotFound,
        "gone at once for readers"
    );
    e.settle().unwrap();
    let keys: Vec<String> = s
        .list("t", true)
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, ["forever", "long"]);
    assert_eq!(
        s.stored_bytes(),
        bytes_before - "short".len() - "\"x\"".len(),
        "removed for good by the sweeper"
    );

    e.clock().advance(Duration::from_secs(60)).unwrap();
    e.settle().unwrap();
    let keys: Vec<String> = s
        .list("t", true)
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, ["forever"]);
}

#[test]
fn rewriting_changes_or_clears_the_ttl_and_patch_keeps_it() {
    let e = engine();
    let s = e.store();
    let ttl = |ms| WriteOptions {
        ttl: Some(Duration::from_millis(ms)),
        ..w()
    };
    s.write("t", "a", &json!(1), &ttl(100)).unwrap();
    s.write("t", "a", &json!(2), &w()).unwrap(); // permanent again
    s.write("t", "b", &json!({"n": 1}), &ttl(100)).unwrap();
    s.write("t", "b", &json!({"n": 2}), &ttl(500)).unwrap(); // later deadline replaces the old one
    s.write("t", "c", &json!({"n": 1}), &ttl(300)).unwrap();
    s.patch_bytes(
        "t",
        "c",
        br#"[{"op":"replace","path":"/n","value":9}]"#,
        &PatchOptions::default(),
    )
    .unwrap();
    assert_eq!(s.read("t", "c").unwrap().expires_ms(), Some(T0 + 300));

    e.clock().advance(Duration::from_millis(100)).unwrap();
    e.settle().unwrap();
    assert!(s.read("t", "a").is_ok());
    assert_eq!(
        s.read("t", "b").unwrap().value().unwrap()["n"],
        2,
        "old deadline did not remove the rewrite"
    );
    e.clock().advance(Duration::from_millis(200)).unwrap();
    e.settle().unwrap();
    assert_eq!(
        kind(s.read("t", "c")),
        ErrorKind::NotFound,
        "patch kept the TTL"
    );
    e.clock().advance(Duration::from_millis(200)).unwrap();
    e.settle().unwrap();
    assert_eq!(kind(s.read("t", "b")), ErrorKind::NotFound);
    assert_eq!(
        kind(s.write(
            "t",
            "d",
            &json!(1),
            &WriteOptions {
                ttl: Some(Duration::ZERO),
                ..w()
            }
        )),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn patch_is_all_or_nothing() {
    let e = engine();
    let s = e.store();
    let text = br#"{"a": 1, "list": [1, 2]}"#;
    let v = s.write_bytes("p", "k", text, &w()).unwrap();
    let cases: [(&[u8], ErrorKind); 7] = [
        (
            br#"[{"op":"replace","path":"/a","value":2},{"op":"test","path":"/a","value":1}]"#,
            ErrorKind::PatchTestFailed,
        ),
        (
            br#"[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/missing"}]"#,
            ErrorKind::PatchPathNotFound,
        ),
        (
            br#"[{"op":"add","path":"/x/y","value":2}]"#,
            ErrorKind::PatchPathNotFound,
        ),
        (
            br#"[{"op":"move","from":"/nope","path":"/a"}]"#,
            ErrorKind::PatchPathNotFound,
        ),
        (
            br#"[{"op":"frobnicate","path":"/a"}]"#,
            ErrorKind::InvalidPatch,
        ),
        (
            br#"{"op":"add","path":"/a","value":1}"#,
            ErrorKind::InvalidPatch,
        ),
        (br#"[{"op":"add","path":"/a""#, ErrorKind::InvalidPatch),
    ];
    for (ops, want) in cases {
        let got = kind(s.patch_bytes("p", "k", ops, &PatchOptions::default()));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(ops));
        let d = s.read("p", "k").unwrap();
        assert_eq!(
            (d.bytes(), d.version()),
            (&text[..], v),
            "document untouched"
        );
    }
    let p = s
        .patch_bytes(
            "p",
            "k",
            br#"[{"op":"add","path":"/list/-","value":3},{"op":"remove","path":"/a"}]"#,
            &PatchOptions::default(),
        )
        .unwrap();
    assert_eq!(
        p.document.unwrap().value().unwrap(),
        json!({"list": [1, 2, 3]})
    );
    let quiet = s
        .patch_bytes(
            "p",
            "k",
            br#"[{"op":"add","path":"/q","value":true}]"#,
            &PatchOptions {
                remove_data_from_reply: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(quiet.document.is_none());
    assert_eq!(s.read("p", "k").unwrap().version(), quiet.version);
    assert_eq!(
        kind(s.patch_bytes("p", "missing", b"[]", &PatchOptions::default())),
        ErrorKind::NotFound
    );
}

#[test]
fn read_all_list_and_buckets_are_sorted() {
    let e = engine();
    let s = e.store();
    for k in ["c", "a", "b"] {
        s.write("letters", k, &json!({ "k": k }), &w()).unwrap();
    }
    s.write("other", "x", &json!(1), &w()).unwrap();
    let all = s.read_all("letters").unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(all[1].1.value().unwrap(), json!({"k": "b"}));
    let listed = s.list("letters", false).unwrap();
    assert!(listed.iter().all(|l| l.document.is_some()));
    assert!(s
        .list("letters", true)
        .unwrap()
        .iter()
        .all(|l| l.document.is_none()));
    assert_eq!(s.buckets().unwrap(), ["letters", "other"]);
    assert!(
        s.read_all("never-written").unwrap().is_empty(),
        "an unknown bucket is empty"
    );
    s.remove("other", "x", &RemoveOptions::default()).unwrap();
    assert_eq!(
        s.buckets().unwrap(),
        ["letters"],
        "a bucket with no live document is not listed"
    );
}

#[test]
fn bad_names_are_refused_and_change_nothing() {
    let e = engine();
    let s = e.store();
    for bucket in ["", " a", "a ", ".a", "a.", "*", "$sys", "a\nb"] {
        assert_eq!(
            kind(s.write(bucket, "k", &json!(1), &w())),
            ErrorKind::InvalidArgument,
            "{bucket:?}"
        );
        assert_eq!(
            kind(s.read(bucket, "k")),
            ErrorKind::InvalidArgument,
            "{bucket:?}"
        );
        assert_eq!(
            kind(s.read_all(bucket)),
            ErrorKind::InvalidArgument,
            "{bucket:?}"
        );
    }
    for key in ["", "*", "a\u{7}"] {
        assert_eq!(
            kind(s.write("b", key, &json!(1), &w())),
            ErrorKind::InvalidArgument,
            "{key:?}"
        );
        assert_eq!(
            kind(s.remove("b", key, &RemoveOptions::default())),
            ErrorKind::InvalidArgument,
            "{key:?}"
        );
    }
    assert_eq!(s.last_version().unwrap(), 0);
    assert!(s.buckets().unwrap().is_empty());
    // Dots and spaces inside a name are fine.
    s.write("my bucket.v1", "a key/with:odd chars ✓", &json!(1), &w())
        .unwrap();
}

#[test]
fn bounds_are_enforced() {
    let e = Engine::builder()
        .manual_clock(T0)
        .max_bucket_bytes(8)
        .max_key_bytes(8)
        .max_document_bytes(64)
        .store_capacity_bytes(200)
        .build()
        .unwrap();
    let s = e.store();
    assert_eq!(
        kind(s.write("123456789", "k", &json!(1), &w())),
        ErrorKind::TooLarge
    );
    assert_eq!(
        kind(s.write("b", "123456789", &json!(1), &w())),
        ErrorKind::TooLarge
    );
    let big = json!("x".repeat(70));
    assert_eq!(kind(s.write("b", "k", &big, &w())), ErrorKind::TooLarge);
    assert_eq!(
        kind(s.write_bytes("b", "k", "x".repeat(65).as_bytes(), &w())),
        ErrorKind::TooLarge
    );
    // A patch whose result is too large fails too.
    s.write("b", "k", &json!({"s": ""}), &w()).unwrap();
    let grow = json!([{ "op": "replace", "path": "/s", "value": "y".repeat(60) }]);
    assert_eq!(
        kind(s.patch_bytes(
            "b",
            "k",
            &serde_json::to_vec(&grow).unwrap(),
            &PatchOptions::default()
        )),
        ErrorKind::TooLarge
    );
    // Capacity: 200 bytes of keys + documents.
    let doc = json!("z".repeat(40)); // 42 bytes + 2-byte key
    let mut written = vec![];
    for i in 0..10 {
        match s.write("b", &format!("k{i}"), &doc, &w()) {
            Ok(_) => written.push(i),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Full);
                break;
            }
        }
    }
    assert!(s.stored_bytes() <= 200);
    assert!(!written.is_empty() && written.len() < 10);
    let used = s.stored_bytes();
    assert_eq!(kind(s.write("b", "k9", &doc, &w())), ErrorKind::Full);
    assert_eq!(s.stored_bytes(), used, "a refused write reserves nothing");
    s.remove("b", "k0", &RemoveOptions::default()).unwrap();
    s.write("b", "k9", &doc, &w()).unwrap();
}

#[test]
fn invalid_json_is_refused() {
    let e = engine();
    let s = e.store();
    for bad in [
        &b"{"[..],
        b"",
        b"[1,]",
        b"{} x",
        b"\xff",
        b"\"\\ud800\"",
        b"{\"a\":}",
        b"nul",
        b"01",
    ] {
        assert_eq!(
            kind(s.write_bytes("b", "k", bad, &w())),
            ErrorKind::InvalidJson,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        kind(s.write_bytes("b", "k", deep.as_bytes(), &w())),
        ErrorKind::InvalidJson,
        "nesting over 128"
    );
    assert_eq!(s.last_version().unwrap(), 0, "nothing was written");
    s.write_bytes("b", "k", b" \"\\ud83d\\ude00 escaped pair\" ", &w())
        .unwrap();
}

#[test]
fn close_stops_everything_and_is_harmless_twice() {
    let e = engine();
    e.store().write("b", "k", &json!(1), &w()).unwrap();
    e.close();
    e.close();
    assert!(e.is_closed());
    assert_eq!(kind(e.store().read("b", "k")), ErrorKind::Closed);
    assert_eq!(
        kind(e.store().write("b", "k", &json!(1), &w())),
        ErrorKind::Closed
    );
    assert_eq!(
        kind(
            e.store()
                .patch_bytes("b", "k", b"[]", &PatchOptions::default())
        ),
        ErrorKind::Closed
    );
    assert_eq!(
        kind(e.store().remove("b", "k", &RemoveOptions::default())),
        ErrorKind::Closed
    );
    assert_eq!(kind(e.store().read_all("b")), ErrorKind::Closed);
    assert_eq!(kind(e.store().buckets()), ErrorKind::Closed);
    assert_eq!(kind(e.settle()), ErrorKind::Closed);
}

#[test]
fn clock_rules() {
    let e = engine();
    assert_eq!(e.clock().now_ms(), T0);
    assert_eq!(e.clock().advance(Duration::from_millis(5)).unwrap(), T0 + 5);
    e.clock().set(T0 + 10).unwrap();
    assert_eq!(
        kind(e.clock().set(T0)),
        ErrorKind::InvalidArgument,
        "never backwards"
    );
    let sys = Engine::builder().workers(1).build().unwrap();
    assert_eq!(
        kind(sys.clock().advance(Duration::from_millis(1))),
        ErrorKind::NotSupported
    );
    assert_eq!(kind(sys.clock().set(0)), ErrorKind::NotSupported);
    sys.settle().unwrap();
}

#[test]
fn builder_refuses_bad_settings() {
    assert_eq!(
        kind(Engine::builder().workers(0).build()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(Engine::builder().workers(10_000).build()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(Engine::builder().queue_capacity(0).build()),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(Engine::builder().max_key_bytes(0).build()),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn many_ttl_keys_expire_in_batches() {
    let e = engine();
    let s = e.store();
    for i in 0..3000 {
        let ttl = Duration::from_millis(1 + (i % 7) as u64);
        s.write(
            "many",
            &format!("k{i}"),
            &json!(i),
            &WriteOptions {
                ttl: Some(ttl),
                ..w()
            },
        )
        .unwrap();
    }
    s.write("many", "stay", &json!(true), &w()).unwrap();
    e.clock().advance(Duration::from_millis(10)).unwrap();
    e.settle().unwrap();
    assert_eq!(s.list("many", true).unwrap().len(), 1);
    assert_eq!(s.stored_bytes(), "stay".len() + "true".len());
}

#[test]
fn patch_keeps_key_order() {
    let e = engine();
    let s = e.store();
    s.write_bytes(
        "o",
        "k",
        br#"{"zeta": 1, "alpha": 2, "mid": {"b": 1, "a": 2}}"#,
        &w(),
    )
    .unwrap();
    s.patch_bytes(
        "o",
        "k",
        br#"[{"op":"add","path":"/beta","value":3}]"#,
        &PatchOptions::default(),
    )
    .unwrap();
    assert_eq!(
        s.read("o", "k").unwrap().as_str(),
        r#"{"zeta":1,"alpha":2,"mid":{"b":1,"a":2},"beta":3}"#
    );
}

#[test]
fn expired_documents_do_not_hold_capacity() {
    let e = Engine::builder()
        .manual_clock(T0)
        .store_capacity_bytes(50)
        .build()
        .unwrap();
    let s = e.store();
    let doc = json!("x".repeat(38)); // 40 bytes + 2-byte key
    s.write(
        "b",
        "k1",
        &doc,
        &WriteOptions {
            ttl: Some(Duration::from_millis(10)),
            ..w()
        },
    )
    .unwrap();
    assert_eq!(kind(s.write("b", "k2", &doc, &w())), ErrorKind::Full);
    e.clock().advance(Duration::from_millis(10)).unwrap();
    // No settle: the write itself reclaims what has expired.
    s.write("b", "k2", &doc, &w()).unwrap();
    assert_eq!(s.list("b", true).unwrap().len(), 1);
}

#[test]
fn refused_changes_leave_no_bucket_behind() {
    let e = engine();
    let s = e.store();
    for i in 0..100 {
        let b = format!("ghost{i}");
        assert_eq!(
            kind(s.remove(&b, "k", &RemoveOptions::default())),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(s.write(
                &b,
                "k",
                &json!(1),
                &WriteOptions {
                    if_version: Some(3),
                    ..w()
                }
            )),
            ErrorKind::VersionConflict
        );
    }
    assert!(s.buckets().unwrap().is_empty());
    assert_eq!(
        s.last_version().unwrap(),
        0,
        "refused changes take no version"
    );
}

#[test]
fn two_engines_from_one_builder_have_their_own_clocks() {
    let b = Engine::builder().manual_clock(T0);
    let (e1, e2) = (b.clone().build().unwrap(), b.build().unwrap());
    e1.clock().advance(Duration::from_millis(5)).unwrap();
    assert_eq!(e2.clock().now_ms(), T0);
    // An explicitly shared clock is shared.
    let c = tarn::Clock::manual(0);
    let (e3, e4) = (
        Engine::builder().clock(c.clone()).build().unwrap(),
        Engine::builder().clock(c).build().unwrap(),
    );
    e3.clock().advance(Duration::from_millis(7)).unwrap();
    assert_eq!(e4.clock().now_ms(), 7);
}
