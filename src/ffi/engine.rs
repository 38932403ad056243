//! C functions of the engine: builder, lifecycle, clock, settle.

use crate::bus::Listener;
use crate::engine::{Engine, EngineBuilder};
use crate::ffi::args::{handle, out, put};
use crate::ffi::error::{guard, guard_value, FfiError};
use crate::ffi::status::tarn_status;
use crate::session::Session;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// An engine: one embedded tarn instance. Opaque.
///
/// Ownership: created by `tarn_engine_new` or `tarn_engine_builder_build`, owned by the
/// caller, released by exactly one `tarn_engine_free`. All functions taking a
/// `const tarn_engine *` may be called from any thread at the same time, until
/// `tarn_engine_free` (which must not race with any other call on the same engine).
#[allow(non_camel_case_types)]
pub struct tarn_engine {
    pub(crate) engine: Engine,
    /// Sessions and listeners that C holds by id (so an unknown or freed id is an error,
    /// never a dangling pointer). Locks: each table is held only to insert, remove or
    /// clone out an entry — never while a listener waits or a callback runs.
    pub(crate) sessions: Mutex<HashMap<u64, Arc<Session>>>,
    pub(crate) listeners: Mutex<HashMap<u64, Arc<Listener>>>,
}

impl tarn_engine {
    fn boxed(engine: Engine) -> *mut tarn_engine {
        Box::into_raw(Box::new(tarn_engine {
            engine,
            sessions: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
        }))
    }
}

/// Settings for a new engine. Opaque.
///
/// Ownership: created by `tarn_engine_builder_new`, owned by the caller, released by
/// exactly one `tarn_engine_builder_free` (building does not consume it).
#[allow(non_camel_case_types)]
pub struct tarn_engine_builder {
    builder: EngineBuilder,
}

/// A new builder with the default settings (system clock; workers: cores, 2..8;
/// queue 4096; bucket names 128 B; keys 1024 B; documents 16 MiB; unbounded store).
/// Never NULL. Release it with `tarn_engine_builder_free`.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_new() -> *mut tarn_engine_builder {
    guard_value(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(tarn_engine_builder {
            builder: Engine::builder(),
        }))
    })
}

/// Releases a builder. NULL: does nothing.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_free(builder: *mut tarn_engine_builder) {
    guard_value((), || {
        if !builder.is_null() {
            // SAFETY: a non-NULL builder was made by Box::into_raw in
            // tarn_engine_builder_new, and the header allows one free.
            drop(unsafe { Box::from_raw(builder) });
        }
    })
}

fn set(
    builder: *mut tarn_engine_builder,
    f: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> tarn_status {
    guard(|| {
        let b = out(builder, "builder")?;
        b.builder = f(std::mem::take(&mut b.builder));
        Ok(())
    })
}

/// Sets the number of worker threads (checked by build: 1..256).
#[no_mangle]
pub extern "C" fn tarn_engine_builder_workers(
    builder: *mut tarn_engine_builder,
    n: u32,
) -> tarn_status {
    set(builder, |b| b.workers(n as usize))
}

/// Sets the bound of the worker pool's queue (checked by build: at least 1).
#[no_mangle]
pub extern "C" fn tarn_engine_builder_queue_capacity(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.queue_capacity(n))
}

/// Uses a manual clock starting at `start_ms` (ms since the Unix epoch), moved only by
/// `tarn_clock_set` and `tarn_clock_advance`. For tests.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_manual_clock(
    builder: *mut tarn_engine_builder,
    start_ms: u64,
) -> tarn_status {
    set(builder, |b| b.manual_clock(start_ms))
}

/// Sets the longest bucket name, in bytes.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_max_bucket_bytes(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.max_bucket_bytes(n))
}

/// Sets the longest key, in bytes.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_max_key_bytes(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.max_key_bytes(n))
}

/// Sets the largest document, in bytes.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_max_document_bytes(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.max_document_bytes(n))
}

/// How many store changes the bus keeps for listeners that start from a version
/// (default 4096; 0 keeps none).
#[no_mangle]
pub extern "C" fn tarn_engine_builder_change_log_capacity(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.change_log_capacity(n))
}

/// Bounds the total bytes of keys and documents; writes past it fail with TARN_FULL.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_store_capacity_bytes(
    builder: *mut tarn_engine_builder,
    n: usize,
) -> tarn_status {
    set(builder, |b| b.store_capacity_bytes(n))
}

/// Builds an engine from the builder's settings and writes it to `*out_engine`
/// (written only on success). The builder stays the caller's.
#[no_mangle]
pub extern "C" fn tarn_engine_builder_build(
    builder: *const tarn_engine_builder,
    out_engine: *mut *mut tarn_engine,
) -> tarn_status {
    guard(|| {
        let b = handle(builder, "builder")?;
        let slot = out(out_engine, "out_engine")?;
        let engine = b.builder.clone().build()?;
        *slot = tarn_engine::boxed(engine);
        Ok(())
    })
}

/// Builds an engine with the default settings into `*out_engine` (written only on
/// success).
#[no_mangle]
pub extern "C" fn tarn_engine_new(out_engine: *mut *mut tarn_engine) -> tarn_status {
    guard(|| {
        let slot = out(out_engine, "out_engine")?;
        let engine = Engine::new()?;
        *slot = tarn_engine::boxed(engine);
        Ok(())
    })
}

/// Stops the engine's threads and waits for them. Afterwards every call on it fails
/// with TARN_CLOSED and no callback runs; the handle stays valid until
/// `tarn_engine_free`. Closing twice is harmless.
#[no_mangle]
pub extern "C" fn tarn_engine_close(engine: *const tarn_engine) -> tarn_status {
    guard(|| {
        handle(engine, "engine")?.engine.close();
        Ok(())
    })
}

/// Closes (if needed) and releases an engine. NULL: does nothing. No other call on this
/// engine may run at the same time or after.
#[no_mangle]
pub extern "C" fn tarn_engine_free(engine: *mut tarn_engine) {
    guard_value((), || {
        if !engine.is_null() {
            // SAFETY: a non-NULL engine was made by Box::into_raw in this module, and the
            // header allows one free with no concurrent use.
            drop(unsafe { Box::from_raw(engine) });
        }
    })
}

/// Waits until the engine's background work has settled (no queued or running job, no
/// timer due by the engine clock). `timeout_ms` 0 waits without limit; otherwise
/// TARN_TIMEOUT after that long. TARN_NOT_SUPPORTED from inside a callback.
#[no_mangle]
pub extern "C" fn tarn_engine_settle(engine: *const tarn_engine, timeout_ms: u64) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        e.settle_timeout(timeout)?;
        Ok(())
    })
}

/// Writes the engine clock's current time (ms since the Unix epoch) to `*out_ms`.
/// TARN_CLOSED after `tarn_engine_close`, like every call on a closed engine.
#[no_mangle]
pub extern "C" fn tarn_clock_now(engine: *const tarn_engine, out_ms: *mut u64) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        let slot = out(out_ms, "out_ms")?;
        check_open(e)?;
        *slot = e.clock().now_ms();
        Ok(())
    })
}

/// Sets a manual clock to `ms`; timers it passes fire (see `tarn_engine_settle`).
/// TARN_NOT_SUPPORTED on the system clock; TARN_INVALID_ARGUMENT when `ms` is earlier
/// than now (the clock never goes backwards).
#[no_mangle]
pub extern "C" fn tarn_clock_set(engine: *const tarn_engine, ms: u64) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        check_open(e)?;
        e.clock().set(ms)?;
        Ok(())
    })
}

/// Advances a manual clock by `ms` and writes the new time to `*out_now_ms` (may be
/// NULL). TARN_NOT_SUPPORTED on the system clock.
#[no_mangle]
pub extern "C" fn tarn_clock_advance(
    engine: *const tarn_engine,
    ms: u64,
    out_now_ms: *mut u64,
) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        check_open(e)?;
        let now = e.clock().advance(Duration::from_millis(ms))?;
        put(out_now_ms, now);
        Ok(())
    })
}

fn check_open(e: &Engine) -> Result<(), FfiError> {
    if e.is_closed() {
        return Err(crate::error::Error::closed().into());
    }
    Ok(())
}
