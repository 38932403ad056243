//! A tour of tarn: every capability end to end, printing what happens.
//!
//! Run it with `cargo run --release --example tour`. Later areas (event bus, messaging,
//! caches, router) add their own chapters here as they land.

use serde_json::json;
use std::time::Duration;
use tarn::{
    ChangeMeta, Engine, ErrorKind, ListenOptions, Overflow, PatchOps, PatchOptions, RemoveOptions,
    WriteOptions,
};

fn chapter(title: &str) {
    println!("\n== {title} ==");
}

fn main() -> Result<(), tarn::Error> {
    // A manual clock makes the TTL chapter deterministic; a real program would use
    // Engine::new() (the system clock).
    let engine = Engine::builder()
        .manual_clock(1_700_000_000_000)
        .workers(2)
        .build()?;
    let store = engine.store();
    println!("tarn {} — engine up: {engine:?}", tarn::VERSION);

    chapter("write and read");
    let v1 = store.write(
        "users",
        "ada",
        &json!({"name": "Ada", "langs": ["en"]}),
        &WriteOptions::default(),
    )?;
    let doc = store.read("users", "ada")?;
    println!(
        "wrote users/ada at version {v1}; read back {} (version {}, modified {} ms)",
        doc.as_str(),
        doc.version(),
        doc.modified_ms()
    );
    store.write_bytes(
        "users",
        "alan",
        br#"{ "name": "Alan",  "langs": ["en"] }"#,
        &WriteOptions::default(),
    )?;
    println!(
        "raw JSON text is stored exactly as given: {}",
        store.read("users", "alan")?.as_str()
    );

    chapter("fail if exists, and conditional writes");
    let err = store
        .write(
            "users",
            "ada",
            &json!({"name": "impostor"}),
            &WriteOptions {
                fail_if_exists: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    println!("second create of users/ada refused: {err}");
    let v2 = store.write(
        "users",
        "ada",
        &json!({"name": "Ada", "langs": ["en", "fr"]}),
        &WriteOptions {
            if_version: Some(v1),
            ..Default::default()
        },
    )?;
    println!("write conditional on version {v1} succeeded → version {v2}");
    let err = store
        .write(
            "users",
            "ada",
            &json!({}),
            &WriteOptions {
                if_version: Some(v1),
                ..Default::default()
            },
        )
        .unwrap_err();
    println!("a second write conditional on the stale version {v1}: {err}");

    chapter("RFC 6902 patch, all or nothing");
    let ops = PatchOps::from_value(json!([
        {"op": "add", "path": "/langs/-", "value": "de"},
        {"op": "replace", "path": "/name", "value": "Ada Lovelace"}
    ]))?;
    let patched = store.patch("users", "ada", &ops, &PatchOptions::default())?;
    println!(
        "patched → version {}: {}",
        patched.version,
        patched.document.as_ref().map(|d| d.as_str()).unwrap_or("")
    );
    let bad = br#"[{"op":"replace","path":"/name","value":"X"},{"op":"test","path":"/name","value":"Y"}]"#;
    let err = store
        .patch_bytes("users", "ada", bad, &PatchOptions::default())
        .unwrap_err();
    println!(
        "a patch whose test fails: {err}; document untouched: {}",
        store.read("users", "ada")?.as_str()
    );

    chapter("list and read all");
    let keys: Vec<String> = store
        .list("users", true)?
        .into_iter()
        .map(|l| l.key)
        .collect();
    println!("keys of users: {keys:?}");
    for (key, doc) in store.read_all("users")? {
        println!("  {key} v{}: {}", doc.version(), doc.as_str());
    }
    println!("buckets: {:?}", store.buckets()?);

    chapter("TTL on the engine clock");
    store.write(
        "sessions",
        "token-1",
        &json!({"user": "ada"}),
        &WriteOptions {
            ttl: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    )?;
    let d = store.read("sessions", "token-1")?;
    println!(
        "sessions/token-1 expires at {:?} (now {})",
        d.expires_ms(),
        engine.clock().now_ms()
    );
    engine.clock().advance(Duration::from_secs(29))?;
    engine.settle()?;
    println!(
        "after 29 s: {}",
        if store.read("sessions", "token-1").is_ok() {
            "still there"
        } else {
            "gone"
        }
    );
    engine.clock().advance(Duration::from_secs(1))?;
    engine.settle()?;
    println!(
        "after 30 s: {:?}; keys left: {}",
        store
            .read("sessions", "token-1")
            .map(|_| ())
            .unwrap_err()
            .kind(),
        store.list("sessions", true)?.len()
    );

    chapter("remove");
    let v = store.remove("users", "alan", &RemoveOptions::default())?;
    println!(
        "removed users/alan at version {v}; reading it now: {}",
        store.read("users", "alan").unwrap_err()
    );

    chapter("bad input changes nothing");
    for (what, result) in [
        (
            "invalid JSON",
            store
                .write_bytes("users", "x", b"{not json", &WriteOptions::default())
                .map(|_| ()),
        ),
        (
            "bucket with a trailing dot",
            store
                .write("users.", "x", &json!(1), &WriteOptions::default())
                .map(|_| ()),
        ),
        (
            "wildcard key",
            store
                .write("users", "*", &json!(1), &WriteOptions::default())
                .map(|_| ()),
        ),
        (
            "patch of a missing path",
            store
                .patch_bytes(
                    "users",
                    "ada",
                    br#"[{"op":"remove","path":"/nope"}]"#,
                    &PatchOptions::default(),
                )
                .map(|_| ()),
        ),
        (
            "not a patch",
            store
                .patch_bytes("users", "ada", br#"{"op":"add"}"#, &PatchOptions::default())
                .map(|_| ()),
        ),
    ] {
        let e = result.unwrap_err();
        println!("  {what}: {:?} — {}", e.kind(), e.message());
    }
    println!(
        "store still holds {:?} at version {}",
        store
            .list("users", true)?
            .into_iter()
            .map(|l| l.key)
            .collect::<Vec<_>>(),
        store.last_version()?
    );

    chapter("event bus: listeners, change events, signals");
    let everything = engine
        .bus()
        .subscribe("*", "*", &ListenOptions::default())?;
    let users = engine.bus().subscribe(
        "users",
        "*",
        &ListenOptions {
            send_values: true,
            ..Default::default()
        },
    )?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let _callback = engine
        .bus()
        .listen("users", "ada", &ListenOptions::default(), move |d| {
            // Runs on an engine worker, never under a lock.
            let _ = tx.send(format!(
                "{} {}/{} v{}",
                d.kind().as_str(),
                d.bucket(),
                d.key(),
                d.version()
            ));
        })?;
    let meta = ChangeMeta {
        request_id: Some("req-42".into()),
        ..Default::default()
    };
    store.write(
        "users",
        "ada",
        &json!({"name": "Ada", "online": true}),
        &WriteOptions {
            meta,
            ..Default::default()
        },
    )?;
    store.write(
        "orders",
        "o1",
        &json!({"total": 12}),
        &WriteOptions::default(),
    )?;
    engine
        .bus()
        .signal("chat", "room1", Some(br#"{"text":"hello"}"#))?;
    engine.settle()?;
    println!("callback saw: {}", rx.recv().unwrap_or_default());
    while let Some(d) = users.try_next()? {
        println!(
            "users/* (with values): {} {} v{} request {:?} value {}",
            d.kind().as_str(),
            d.key(),
            d.version(),
            d.request_id(),
            d.value().unwrap_or("-")
        );
    }
    while let Some(d) = everything.try_next()? {
        println!("*/* : {} {}/{}", d.kind().as_str(), d.bucket(), d.key());
    }

    chapter("watch from a version, and a bounded queue");
    let since = store.last_version()?;
    store.write(
        "users",
        "grace",
        &json!({"name": "Grace"}),
        &WriteOptions::default(),
    )?;
    let replay = engine.bus().subscribe(
        "users",
        "*",
        &ListenOptions {
            from_version: Some(since),
            ..Default::default()
        },
    )?;
    println!(
        "a listener starting after version {since} first gets: {:?}",
        replay.try_next()?.map(|d| d.key().to_string())
    );
    let small = engine.bus().subscribe(
        "burst",
        "*",
        &ListenOptions {
            capacity: 2,
            overflow: Overflow::Drop,
            ..Default::default()
        },
    )?;
    for i in 0..5 {
        store.write(
            "burst",
            &format!("k{i}"),
            &json!(i),
            &WriteOptions::default(),
        )?;
    }
    println!(
        "capacity 2, 5 writes: {} dropped and counted",
        small.missed()
    );

    chapter("sessions and presence");
    let presence = engine.bus().subscribe(
        tarn::SESSIONS_BUCKET,
        "*",
        &ListenOptions {
            send_values: true,
            ..Default::default()
        },
    )?;
    let alice = engine.open_session("alice", Some(Duration::from_secs(10)))?;
    let mine = WriteOptions {
        expire_session: true,
        meta: ChangeMeta {
            session: Some(alice.id()),
            ..Default::default()
        },
        ..Default::default()
    };
    store.write("presence", "alice", &json!({"status": "here"}), &mine)?;
    println!(
        "session {} wrote presence/alice (expires with the session)",
        alice.id()
    );
    engine.clock().advance(Duration::from_secs(10))?;
    engine.settle()?;
    println!(
        "10 s without keepalive: session closed = {}; presence/alice now: {}",
        alice.is_closed(),
        store
            .read("presence", "alice")
            .map(|_| "still there")
            .unwrap_or("removed")
    );
    while let Some(d) = presence.try_next()? {
        println!(
            "$sessions: {} {}",
            d.kind().as_str(),
            d.value().unwrap_or("")
        );
    }

    chapter("close");
    engine.close();
    engine.close();
    let e = store.read("users", "ada").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    println!("closed (twice, harmlessly); a read now fails with {e}");
    Ok(())
}
