//! C functions of sessions. Sessions are held by id in the engine handle, so a closed or
//! unknown id is TARN_NOT_FOUND, never a dangling pointer.

use crate::ffi::args::{handle, name, out};
use crate::ffi::engine::tarn_engine;
use crate::ffi::error::{guard, FfiError, FfiResult};
use crate::ffi::status::tarn_status;
use crate::session::Session;
use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn session(e: &tarn_engine, id: u64) -> FfiResult<Arc<Session>> {
    e.sessions.lock().get(&id).cloned().ok_or_else(|| {
        FfiError::new(
            tarn_status::TARN_NOT_FOUND,
            format!("no session {id} (never opened, or closed)"),
        )
    })
}

/// Opens a session for client `client_id` (NUL-terminated UTF-8, 1..=256 bytes) and
/// writes its id (never 0) to `*out_session`. With `lease_ms` > 0 the session is closed
/// when not kept alive (`tarn_session_keepalive`) within that many ms of the engine
/// clock. Publishes a `session_open` event on the bucket "$sessions".
#[no_mangle]
pub extern "C" fn tarn_session_open(
    engine: *const tarn_engine,
    client_id: *const c_char,
    lease_ms: u64,
    out_session: *mut u64,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let client_id = name(client_id, "client_id")?;
        let slot = out(out_session, "out_session")?;
        let lease = (lease_ms > 0).then(|| Duration::from_millis(lease_ms));
        let s = e.engine.open_session(client_id, lease)?;
        let id = s.id();
        e.sessions.lock().insert(id, Arc::new(s));
        *slot = id;
        Ok(())
    })
}

/// Keeps a leased session alive for another lease from now. TARN_CLOSED if its lease
/// already ran out; TARN_NOT_FOUND if the id is unknown or closed.
#[no_mangle]
pub extern "C" fn tarn_session_keepalive(
    engine: *const tarn_engine,
    session_id: u64,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        session(e, session_id)?.keepalive()?;
        Ok(())
    })
}

/// Writes whether the session is still open (true) or was closed by its lease (false)
/// to `*out_open`. TARN_NOT_FOUND for an unknown or closed id; TARN_CLOSED after
/// `tarn_engine_close`.
#[no_mangle]
pub extern "C" fn tarn_session_is_open(
    engine: *const tarn_engine,
    session_id: u64,
    out_open: *mut bool,
) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let slot = out(out_open, "out_open")?;
        e.engine.check_open()?;
        *slot = !session(e, session_id)?.is_closed();
        Ok(())
    })
}

/// Closes a session: its listeners stop, the keys it owns (TARN_WRITE_EXPIRE_SESSION)
/// are removed with `session_expire` events, and `session_close` is published on
/// "$sessions". The id is released: using it again gives TARN_NOT_FOUND.
#[no_mangle]
pub extern "C" fn tarn_session_close(engine: *const tarn_engine, session_id: u64) -> tarn_status {
    guard(|| {
        let e = handle(engine, "engine")?;
        let s = e.sessions.lock().remove(&session_id);
        match s {
            Some(s) => {
                s.close();
                Ok(())
            }
            None => Err(FfiError::new(
                tarn_status::TARN_NOT_FOUND,
                format!("no session {session_id} (never opened, or closed)"),
            )),
        }
    })
}
