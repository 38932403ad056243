//! The C ABI (`include/tarn.h`, generated from this module by cbindgen).
//!
//! Conventions every area copies:
//! - Functions are `tarn_<area>_<verb>`, types `tarn_<noun>`, constants `TARN_`.
//! - Every function returns `tarn_status` (0 is OK); on failure the thread-local
//!   `tarn_last_error()` has the details. Out-parameters are written only on success.
//! - Names are NUL-terminated UTF-8; JSON comes in as pointer + length and goes out as a
//!   `tarn_buf`, freed with `tarn_buf_free`. Handles are opaque with one free function;
//!   freeing NULL does nothing.
//! - Options are small `#[repr(C)]` structs whose pointer may be NULL (defaults), with a
//!   `flags` word whose unknown bits are refused, so options can grow by new flags.
//! - Every body runs in `error::guard`, which catches panics; this module only converts,
//!   checks and calls the Rust API.
//!
//! The one file per area mirrors the core modules: `engine.rs` (runtime), `store.rs`,
//! `bus.rs`, `session.rs`. Sessions and listeners are held by id in the engine handle.

// The extern functions below take raw pointers while being safe `fn`s: their contract
// is the C header's, and every pointer goes through the checks in `args.rs` (or a
// `SAFETY`-commented block) before use. Marking them `unsafe fn` would change nothing
// for C callers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod args;
pub mod buffer;
pub mod bus;
pub mod engine;
pub mod error;
pub mod session;
pub mod status;
pub mod store;

use std::ffi::c_char;

/// The C ABI version. It changes whenever a function, type or constant changes in a way
/// that breaks programs built against an older header. `tarn_abi_version()` returns the
/// library's; compare it with this constant from the header.
pub const TARN_ABI_VERSION: u32 = 2;

/// The library version ("0.1.0"), a static NUL-terminated string: never free it.
#[no_mangle]
pub extern "C" fn tarn_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's C ABI version; equal to TARN_ABI_VERSION of the header it was built
/// with.
#[no_mangle]
pub extern "C" fn tarn_abi_version() -> u32 {
    TARN_ABI_VERSION
}
