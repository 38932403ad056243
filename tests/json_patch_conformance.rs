//! The json-patch-tests suite (../shared/conformance/json-patch), run through the store:
//! each enabled record's doc is written, its patch applied with `Store::patch_bytes`,
//! and the stored result compared with `expected` — or, for an `error` record, the
//! patch must fail and leave the stored document byte-identical.

use serde_json::Value;
use std::path::PathBuf;
use tarn::{Engine, PatchOptions, WriteOptions};

fn suite(file: &str) -> Option<Vec<Value>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/json-patch")
        .join(file);
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("conformance cases not run: {} is missing", path.display());
        return None;
    };
    let records: Vec<Value> = serde_json::from_str(&text).expect("suite is JSON");
    Some(records)
}

fn run_suite(file: &str) {
    let Some(records) = suite(file) else { return };
    let engine = Engine::builder().manual_clock(0).build().unwrap();
    let store = engine.store();
    let (mut ran, mut failures) = (0, Vec::new());
    for (i, rec) in records.iter().enumerate() {
        if rec.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        ran += 1;
        let name = format!(
            "{file}#{i} {}",
            rec.get("comment").and_then(Value::as_str).unwrap_or("")
        );
        let key = format!("case{i}");
        store
            .write("conformance", &key, &rec["doc"], &WriteOptions::default())
            .unwrap();
        let before = store.read("conformance", &key).unwrap();
        let patch = serde_json::to_vec(&rec["patch"]).unwrap();
        let result = store.patch_bytes("conformance", &key, &patch, &PatchOptions::default());
        let after = store.read("conformance", &key).unwrap();
        if rec.get("error").is_some() {
            if result.is_ok() {
                failures.push(format!("{name}: expected an error, patch succeeded"));
            } else if after.bytes() != before.bytes() || after.version() != before.version() {
                failures.push(format!("{name}: failed patch changed the document"));
            }
        } else {
            match result {
                Err(e) => failures.push(format!("{name}: unexpected error {e}")),
                Ok(p) => {
                    if let Some(expected) = rec.get("expected") {
                        let got = after.value().unwrap();
                        if &got != expected {
                            failures.push(format!("{name}: got {got}, expected {expected}"));
                        }
                    }
                    if p.version <= before.version() {
                        failures.push(format!("{name}: version did not increase"));
                    }
                }
            }
        }
    }
    println!("{file}: {ran} enabled cases run, {} failed", failures.len());
    assert!(ran > 0, "{file}: no case ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_patch_tests_suite() {
    run_suite("tests.json");
}

#[test]
fn rfc6902_spec_tests() {
    run_suite("spec_tests.json");
}
