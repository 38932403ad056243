//! C functions of the event bus: listeners (callback or pull, with a file descriptor),
//! signals. Listeners are held by id in the engine handle, so an unknown or freed id is
//! TARN_NOT_FOUND, never a dangling pointer. Events reach C as one JSON object each.

use crate::bus::event::Delivery;
use crate::bus::listener::{ListenOptions, Overflow};
use crate::bus::Listener;
use crate::ffi::args::{bytes, flags, handle, name, opts, out};
use crate::ffi::buffer::tarn_buf;
use crate::ffi::engine::tarn_engine;
use crate::ffi::error::{guard, FfiError, FfiResult};
use crate::ffi::session::session;
use crate::ffi::status::tarn_status;
use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

/// `tarn_listen_options.flags`: deliver document and signal values.
pub const TARN_LISTEN_SEND_VALUES: u32 = 1;
/// `tarn_listen_options.flags`: skip changes made by the listener's own session.
pub const TARN_LISTEN_IGNORE_OWN: u32 = 2;
/// `tarn_listen_options.flags`: at the bound, block the publisher (up to
/// `block_timeout_ms`) instead of dropping and counting.
pub const TARN_LISTEN_BLOCK: u32 = 4;
/// `tarn_listen_options.flags`: first deliver every retained change after
/// `from_version` (TARN_TOO_OLD if the change log no longer has them).
pub const TARN_LISTEN_FROM_VERSION: u32 = 8;

/// Options of a listener. A NULL pointer means all defaults (zeroes).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_listen_options {
    /// TARN_LISTEN_* bits; unknown bits are TARN_INVALID_ARGUMENT.
    pub flags: u32,
    /// The listener's queue bound; 0: 1024.
    pub capacity: usize,
    /// With TARN_LISTEN_BLOCK, the longest a publisher waits for room; 0: 1000 ms.
    pub block_timeout_ms: u64,
    /// With TARN_LISTEN_FROM_VERSION, the store version to start after.
    pub from_version: u64,
}

/// A listener's counters.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_listener_stats {
    /// Events handed to the consumer.
    pub delivered: u64,
    /// Events dropped at the bound (the lag counter).
    pub missed: u64,
    /// Panics caught in the callback.
    pub panics: u64,
}

/// An event callback: `event` is one JSON object of `len` bytes,
/// `{"kind","bucket","key","version","timestamp_ms","session","request_id","user_data",
/// "value","ops","missed"}`, valid only during the call (copy it to keep it).
/// Runs on an engine worker thread, one event at a time per listener, never under a
/// lock: it may call any tarn function, but should not block for long (it holds a
/// worker).
#[allow(non_camel_case_types)]
pub type tarn_event_fn =
    Option<extern "C" fn(event: *const u8, len: usize, user_data: *mut c_void)>;

fn listen_options(o: Option<&tarn_listen_options>) -> FfiResult<ListenOptions> {
    let o = o.copied().unwrap_or_default();
    let f = flags(
        o.flags,
        TARN_LISTEN_SEND_VALUES
            | TARN_LISTEN_IGNORE_OWN
            | TARN_LISTEN_BLOCK
            | TARN_LISTEN_FROM_VERSION,
        "listen options",
    )?;
    let d = ListenOptions::default();
    Ok(ListenOptions {
        send_values: f & TARN_LISTEN_SEND_VALUES != 0,
        ignore_own: f & TARN_LISTEN_IGNORE_OWN != 0,
        capacity: if o.capacity == 0 {
            d.capacity
        } else {
            o.capacity
        },
        overflow: if f & TARN_LISTEN_BLOCK != 0 {
            Overflow::Block
        } else {
            Overflow::Drop
        },
        block_timeout: if o.block_timeout_ms == 0 {
            d.block_timeout
        } else {
            Duration::from_millis(o.block_timeout_ms)
        },
        from_version: (f & TARN_LISTEN_FROM_VERSION != 0).then_some(o.from_version),
    })
}

/// The C callback and its user data, moved to engine threads.
struct CCallback {
    f: extern "C" fn(*const u8, usize, *mut c_void),
    user_data: *mut c_void,
}

impl CCallback {
    fn call(&self, json: &[u8]) {
        (self.f)(json.as_ptr(), json.len(), self.user_data);
    }
}

// SAFETY: the header requires `user_data` to be usable from the engine's worker threads
// (the callback runs there); the library never dereferences it.
unsafe impl Send for CCallback {}
// SAFETY: as above; the library only passes the pointer back to the callback.
unsafe impl Sync for CCallback {}

fn register(
    e: &tarn_engine,
    session_id: u64,
    bucket: *const c_char,
    key: *const c_char,
    options: *const tarn_listen_options,
    callback: Option<CCallback>,
    out_listener: *mut u64,
) -> FfiResult {
    let bucket = name(bucket, "bucket")?;
    let key = name(key, "key")?;
    let o = listen_options(opts(options))?;
    let slot = out(out_listener, "out_listener")?;
    let cb = callback.map(|c| {
        move |d: &Delivery| {
            c.call(&d.to_json());
        }
    });
    let l = match (session_id, cb) {
        (0, Some(cb)) => e.engine.bus().listen(bucket, key, &o, cb)?,
        (0, None) => e.engine.bus().subscribe(bucket, key, &o)?,
        (id, Some(cb)) => session(e, id)?.listen(bucket, key, &o, cb)?,
        (id, None) => session(e, id)?.subscribe(bucket, key, &o)?,
    };
    let id = l.id();
    e.listeners.lock().insert(id, Arc::new(l));
    *slot = id;
    Ok(())
}

/// Listens on `bucket`/`key` (either may be "*") and calls `callback` with each event
/// (see `tarn_event_fn` for the thread and the JSON). `session_id` 0: no session;
/// otherwise the listener belongs to that session and closes with it. `options` may be
/// NULL. The listener's id goes to `*out_listener`; release it with
/// `tarn_listener_free`. `user_data` is passed back to every call, from engine threads.
#[no_mangle]
pub extern "C" fn tarn_bus_listen(
    engine: *const tarn_engine,
    session_id: u64,
    bucket: *const c_char,
    key: *const c_char,
    options: *const tarn_listen_options,
    callback: tarn_event_fn,
    user_data: *mut c_void,
    out_listener: *mut u64,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let f = callback.ok_or_else(|| FfiError::null("callback"))?;
        register(
            e,
            session_id,
            bucket,
            key,
            options,
            Some(CCallback { f, user_data }),
            out_listener,
        )
    })
}

/// Listens on `bucket`/`key` (either may be "*") for pulling: take events with
/// `tarn_listener_next`, or wait on `tarn_listener_fd`. Otherwise as `tarn_bus_listen`.
#[no_mangle]
pub extern "C" fn tarn_bus_subscribe(
    engine: *const tarn_engine,
    session_id: u64,
    bucket: *const c_char,
    key: *const c_char,
    options: *const tarn_listen_options,
    out_listener: *mut u64,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        register(e, session_id, bucket, key, options, None, out_listener)
    })
}

fn listener(e: &tarn_engine, id: u64) -> FfiResult<Arc<Listener>> {
    e.listeners.lock().get(&id).cloned().ok_or_else(|| {
        FfiError::new(
            tarn_status::TARN_NOT_FOUND,
            format!("no listener {id} (never made, or freed)"),
        )
    })
}

/// Takes the next event of a pull listener into `*out_event` (one JSON object, as for
/// `tarn_event_fn`; free it with `tarn_buf_free`), waiting up to `timeout_ms` (0: no
/// wait). TARN_TIMEOUT when none came; TARN_NOT_SUPPORTED for a callback listener;
/// TARN_CLOSED once the listener closed (with its session or its engine). Blocks the
/// calling thread only; `tarn_listener_free` from another thread wakes it.
#[no_mangle]
pub extern "C" fn tarn_listener_next(
    engine: *const tarn_engine,
    listener_id: u64,
    timeout_ms: u64,
    out_event: *mut tarn_buf,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let slot = out(out_event, "out_event")?;
        let l = listener(e, listener_id)?;
        match l.next(Duration::from_millis(timeout_ms))? {
            Some(d) => {
                *slot = tarn_buf::from_vec(d.to_json());
                Ok(())
            }
            None => Err(FfiError::new(
                tarn_status::TARN_TIMEOUT,
                format!("no event within {timeout_ms} ms"),
            )),
        }
    })
}

/// Writes a file descriptor that is readable exactly while events wait on the pull
/// listener to `*out_fd`, for poll/epoll/libuv. The fd belongs to the listener: do not
/// read, write or close it; it is valid until `tarn_listener_free`. When the listener
/// closes (its session or engine closing) the fd becomes readable, and
/// `tarn_listener_next` then gives TARN_CLOSED.
#[no_mangle]
pub extern "C" fn tarn_listener_fd(
    engine: *const tarn_engine,
    listener_id: u64,
    out_fd: *mut i32,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let slot = out(out_fd, "out_fd")?;
        *slot = listener(e, listener_id)?.fd()?;
        Ok(())
    })
}

/// Writes a listener's counters (delivered, missed at the bound, caught panics).
#[no_mangle]
pub extern "C" fn tarn_listener_get_stats(
    engine: *const tarn_engine,
    listener_id: u64,
    out_stats: *mut tarn_listener_stats,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let slot = out(out_stats, "out_stats")?;
        e.engine.check_open()?;
        let l = listener(e, listener_id)?;
        *slot = tarn_listener_stats {
            delivered: l.delivered(),
            missed: l.missed(),
            panics: l.panics(),
        };
        Ok(())
    })
}

/// Stops a listener and releases its id; waits for a running callback to return
/// (unless called from that callback). TARN_NOT_FOUND for an unknown or freed id.
#[no_mangle]
pub extern "C" fn tarn_listener_free(engine: *const tarn_engine, listener_id: u64) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let l = e.listeners.lock().remove(&listener_id);
        match l {
            Some(l) => {
                l.close();
                Ok(())
            }
            None => Err(FfiError::new(
                tarn_status::TARN_NOT_FOUND,
                format!("no listener {listener_id} (never made, or freed)"),
            )),
        }
    })
}

/// Sends a signal event (`json`, `json_len` bytes of JSON, or NULL for none) to every
/// matching listener; it is never stored. `session_id` 0: no session.
#[no_mangle]
pub extern "C" fn tarn_bus_signal(
    engine: *const tarn_engine,
    session_id: u64,
    bucket: *const c_char,
    key: *const c_char,
    json: *const u8,
    json_len: usize,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let bucket = name(bucket, "bucket")?;
        let key = name(key, "key")?;
        let value = if json.is_null() {
            None
        } else {
            Some(bytes(json, json_len, "json")?)
        };
        match session_id {
            0 => e.engine.bus().signal(bucket, key, value)?,
            id => session(e, id)?.signal(bucket, key, value)?,
        }
        Ok(())
    })
}
