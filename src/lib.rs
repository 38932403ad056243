//! # tarn
//!
//! An embedded engine: link it into a process (as a Rust crate, from C/C++ through
//! `include/tarn.h`, or from Python through `python/tarn.py`) and get, in memory and
//! without any server, a JSON document store with versions, TTLs and RFC 6902 patches —
//! with the event bus, messaging and caches of later areas built on the same runtime.
//!
//! ```
//! use tarn::{Engine, WriteOptions};
//! use serde_json::json;
//!
//! let engine = Engine::builder().manual_clock(0).build()?;
//! let store = engine.store();
//! let v1 = store.write("users", "ada", &json!({"name": "Ada"}), &WriteOptions::default())?;
//! let doc = store.read("users", "ada")?;
//! assert_eq!(doc.version(), v1);
//! assert_eq!(doc.value()?["name"], "Ada");
//! # Ok::<(), tarn::Error>(())
//! ```
//!
//! The core is synchronous: a fixed worker pool on crossbeam channels and one timer
//! thread, all time from the engine's [`Clock`] (manual in tests), no async runtime.

#![deny(missing_docs)]

pub mod bus;
mod engine;
pub mod error;
pub mod ffi;
pub mod runtime;
pub mod session;
pub mod store;

pub use bus::event::{ChangeMeta, Delivery, EventKind};
pub use bus::listener::{ListenOptions, Overflow};
pub use bus::{Bus, Listener, SESSIONS_BUCKET};
pub use engine::{Engine, EngineBuilder, MAX_WORKERS};
pub use error::{Error, ErrorKind, Result};
pub use runtime::clock::Clock;
pub use session::Session;
pub use store::{
    Document, Limits, Listed, PatchOps, PatchOptions, Patched, RemoveOptions, Store, WriteOptions,
};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
