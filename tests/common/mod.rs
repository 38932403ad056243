//! Helpers the Rust integration tests share.

#![allow(dead_code)] // each test file uses its own subset

use tarn::{Engine, WriteOptions};

/// An engine on a manual clock starting at `t0`, with two workers.
pub fn engine_at(t0: u64) -> Engine {
    Engine::builder()
        .manual_clock(t0)
        .workers(2)
        .build()
        .unwrap()
}

/// Default write options.
pub fn w() -> WriteOptions {
    WriteOptions::default()
}
