//! A tour of tarn: every capability end to end, printing what happens.
//!
//! Run it with `cargo run --release --example tour`. Later areas (event bus, messaging,
//! caches, router) add their own chapters here as they land.

use serde_json::json;
use std::time::Duration;
use tarn::{Engine, ErrorKind, PatchOps, PatchOptions, RemoveOptions, WriteOptions};

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

    chapter("close");
    engine.close();
    engine.close();
    let e = store.read("users", "ada").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    println!("closed (twice, harmlessly); a read now fails with {e}");
    Ok(())
}
