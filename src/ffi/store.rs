//! C functions of the store: read, read_all, list, buckets, write, patch, remove.
//!
//! Only converts, checks and calls `crate::store`. Documents come in as pointer +
//! length JSON text and go out as `tarn_buf`s that share the stored bytes.

use crate::bus::event::ChangeMeta;
use crate::engine::Engine;
use crate::ffi::args::{bytes, flags, handle, name, opts, out, out_opt, put};
use crate::ffi::buffer::tarn_buf;
use crate::ffi::engine::tarn_engine;
use crate::ffi::error::{guard, FfiResult};
use crate::ffi::status::tarn_status;
use crate::store::{Document, PatchOptions, RemoveOptions, WriteOptions};
use std::ffi::c_char;
use std::time::Duration;

/// `tarn_write_options.flags`: fail with TARN_EXISTS if the key holds a live document.
pub const TARN_WRITE_FAIL_IF_EXISTS: u32 = 1;
/// `tarn_write_options.flags`: write only if the current version is `if_version`
/// (0: only if absent), else TARN_VERSION_CONFLICT.
pub const TARN_WRITE_IF_VERSION: u32 = 2;
/// `tarn_write_options.flags`: remove the document when the writing session
/// (`meta.session`, required) closes.
pub const TARN_WRITE_EXPIRE_SESSION: u32 = 4;
/// `tarn_patch_options.flags`: do not return the patched document.
pub const TARN_PATCH_REMOVE_DATA_FROM_REPLY: u32 = 1;
/// `tarn_patch_options.flags`: patch only if the current version is `if_version`.
pub const TARN_PATCH_IF_VERSION: u32 = 2;
/// `tarn_remove_options.flags`: remove only if the current version is `if_version`.
pub const TARN_REMOVE_IF_VERSION: u32 = 1;
/// `tarn_store_list` flags: list keys only (a JSON array of strings).
pub const TARN_LIST_KEYS_ONLY: u32 = 1;

/// Who makes a change and why; passed through to listeners. All zero: nothing.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct tarn_change_meta {
    /// The id of the session making the change (from `tarn_session_open`); 0: none.
    pub session: u64,
    /// A request id (NUL-terminated UTF-8), or NULL. Borrowed for the call only.
    pub request_id: *const c_char,
    /// User data (JSON text, `user_data_len` bytes), or NULL. Borrowed for the call.
    pub user_data: *const u8,
    /// Length of `user_data` in bytes.
    pub user_data_len: usize,
}

impl Default for tarn_change_meta {
    fn default() -> tarn_change_meta {
        tarn_change_meta {
            session: 0,
            request_id: std::ptr::null(),
            user_data: std::ptr::null(),
            user_data_len: 0,
        }
    }
}

fn change_meta(m: &tarn_change_meta) -> FfiResult<ChangeMeta> {
    let request_id = if m.request_id.is_null() {
        None
    } else {
        Some(name(m.request_id, "meta.request_id")?.to_string())
    };
    let user_data = if m.user_data.is_null() {
        None
    } else {
        let raw = bytes(m.user_data, m.user_data_len, "meta.user_data")?;
        Some(serde_json::from_slice(raw).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::InvalidJson,
                format!("meta.user_data is not JSON: {e}"),
            )
        })?)
    };
    Ok(ChangeMeta {
        session: (m.session != 0).then_some(m.session),
        request_id,
        user_data,
    })
}

/// Options of `tarn_store_write`. A NULL pointer means all defaults (zeroes).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_write_options {
    /// TARN_WRITE_* bits; unknown bits are TARN_INVALID_ARGUMENT.
    pub flags: u32,
    /// Expire this many ms after the write (engine clock); 0: never.
    pub ttl_ms: u64,
    /// The version the write is conditional on, with TARN_WRITE_IF_VERSION.
    pub if_version: u64,
    /// Who makes the change and why.
    pub meta: tarn_change_meta,
}

/// Options of `tarn_store_patch`. A NULL pointer means all defaults (zeroes).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_patch_options {
    /// TARN_PATCH_* bits; unknown bits are TARN_INVALID_ARGUMENT.
    pub flags: u32,
    /// The version the patch is conditional on, with TARN_PATCH_IF_VERSION.
    pub if_version: u64,
    /// Who makes the change and why.
    pub meta: tarn_change_meta,
}

/// Options of `tarn_store_remove`. A NULL pointer means all defaults (zeroes).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_remove_options {
    /// TARN_REMOVE_* bits; unknown bits are TARN_INVALID_ARGUMENT.
    pub flags: u32,
    /// The version the removal is conditional on, with TARN_REMOVE_IF_VERSION.
    pub if_version: u64,
    /// Who makes the change and why.
    pub meta: tarn_change_meta,
}

/// A document's metadata.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tarn_doc_info {
    /// The version (store-wide sequence number of the document's last change).
    pub version: u64,
    /// When it was last changed, engine-clock ms since the Unix epoch.
    pub modified_ms: u64,
    /// When it expires, engine-clock ms since the Unix epoch; 0: never.
    pub expires_ms: u64,
}

/// The engine, bucket and key arguments every single-document call takes.
fn doc_args<'a>(
    engine: *const tarn_engine,
    bucket: *const c_char,
    key: *const c_char,
) -> FfiResult<(&'a Engine, &'a str, &'a str)> {
    Ok((
        &handle(engine, "engine")?.engine,
        name(bucket, "bucket")?,
        name(key, "key")?,
    ))
}

impl From<&Document> for tarn_doc_info {
    fn from(d: &Document) -> tarn_doc_info {
        tarn_doc_info {
            version: d.version(),
            modified_ms: d.modified_ms(),
            expires_ms: d.expires_ms().unwrap_or(0),
        }
    }
}

/// Reads one document: its JSON bytes into `*out_doc` (free with `tarn_buf_free`) and,
/// if `out_info` is not NULL, its metadata. Both written only on success.
/// TARN_NOT_FOUND when the key is absent or expired. The bytes are shared with the
/// store, not copied or re-serialized. Any thread.
#[no_mangle]
pub extern "C" fn tarn_store_read(
    engine: *const tarn_engine,
    bucket: *const c_char,
    key: *const c_char,
    out_doc: *mut tarn_buf,
    out_info: *mut tarn_doc_info,
) -> tarn_status {
    guard(|| {
        let (e, bucket, key) = doc_args(engine, bucket, key)?;
        let slot = out(out_doc, "out_doc")?;
        let doc = e.store().read(bucket, key)?;
        if let Some(info) = out_opt(out_info) {
            *info = tarn_doc_info::from(&doc);
        }
        // Hand the read's own reference to the buffer: no second count on the document.
        *slot = tarn_buf::own(doc.body);
        Ok(())
    })
}

fn push_entry(out: &mut Vec<u8>, key: &str, doc: Option<&Document>, with_info: bool) {
    out.extend_from_slice(b"{\"key\":");
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    if let Some(doc) = doc {
        if with_info {
            out.extend_from_slice(format!(",\"version\":{}", doc.version()).as_bytes());
            out.extend_from_slice(format!(",\"modified_ms\":{}", doc.modified_ms()).as_bytes());
            match doc.expires_ms() {
                Some(x) => out.extend_from_slice(format!(",\"expires_ms\":{x}").as_bytes()),
                None => out.extend_from_slice(b",\"expires_ms\":null"),
            }
        }
        out.extend_from_slice(b",\"value\":");
        out.extend_from_slice(doc.bytes());
    }
    out.push(b'}');
}

/// Reads every live document of a bucket (the seed's empty-key read) into `*out_json`:
/// a JSON array, sorted by key, of
/// `{"key":..., "version":..., "modified_ms":..., "expires_ms":... or null, "value":...}`.
/// A bucket nobody wrote gives `[]`. Free the buffer with `tarn_buf_free`.
#[no_mangle]
pub extern "C" fn tarn_store_read_all(
    engine: *const tarn_engine,
    bucket: *const c_char,
    out_json: *mut tarn_buf,
) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        let bucket = name(bucket, "bucket")?;
        let slot = out(out_json, "out_json")?;
        let all = e.store().read_all(bucket)?;
        let mut json = Vec::with_capacity(
            2 + all
                .iter()
                .map(|(k, d)| k.len() + d.bytes().len() + 80)
                .sum::<usize>(),
        );
        json.push(b'[');
        for (i, (k, d)) in all.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            push_entry(&mut json, k, Some(d), true);
        }
        json.push(b']');
        *slot = tarn_buf::from_vec(json);
        Ok(())
    })
}

/// Lists a bucket into `*out_json`, sorted by key: with TARN_LIST_KEYS_ONLY a JSON array
/// of keys, otherwise an array of `{"key":..., "value":...}`. Free with `tarn_buf_free`.
#[no_mangle]
pub extern "C" fn tarn_store_list(
    engine: *const tarn_engine,
    bucket: *const c_char,
    list_flags: u32,
    out_json: *mut tarn_buf,
) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        let bucket = name(bucket, "bucket")?;
        let f = flags(list_flags, TARN_LIST_KEYS_ONLY, "list flags")?;
        let slot = out(out_json, "out_json")?;
        let keys_only = f & TARN_LIST_KEYS_ONLY != 0;
        let listed = e.store().list(bucket, keys_only)?;
        let mut json = vec![b'['];
        for (i, l) in listed.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            if keys_only {
                let _ = serde_json::to_writer(&mut json, &l.key);
            } else {
                push_entry(&mut json, &l.key, l.document.as_ref(), false);
            }
        }
        json.push(b']');
        *slot = tarn_buf::from_vec(json);
        Ok(())
    })
}

/// Writes the names of the buckets holding live documents, as a sorted JSON array of
/// strings, into `*out_json`. Free with `tarn_buf_free`.
#[no_mangle]
pub extern "C" fn tarn_store_buckets(
    engine: *const tarn_engine,
    out_json: *mut tarn_buf,
) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        let slot = out(out_json, "out_json")?;
        let names = e.store().buckets()?;
        let json = serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec());
        *slot = tarn_buf::from_vec(json);
        Ok(())
    })
}

/// Writes a document (JSON text `json`, `json_len` bytes; validated, stored as given).
/// `options` may be NULL (defaults). The new version goes to `*out_version` (may be
/// NULL). TARN_EXISTS (fail-if-exists), TARN_VERSION_CONFLICT, TARN_INVALID_JSON,
/// TARN_TOO_LARGE, TARN_FULL: nothing changed.
#[no_mangle]
pub extern "C" fn tarn_store_write(
    engine: *const tarn_engine,
    bucket: *const c_char,
    key: *const c_char,
    json: *const u8,
    json_len: usize,
    options: *const tarn_write_options,
    out_version: *mut u64,
) -> tarn_status {
    guard(|| {
        let (e, bucket, key) = doc_args(engine, bucket, key)?;
        let json = bytes(json, json_len, "json")?;
        let o = opts(options).copied().unwrap_or_default();
        let f = flags(
            o.flags,
            TARN_WRITE_FAIL_IF_EXISTS | TARN_WRITE_IF_VERSION | TARN_WRITE_EXPIRE_SESSION,
            "write options",
        )?;
        let wo = WriteOptions {
            fail_if_exists: f & TARN_WRITE_FAIL_IF_EXISTS != 0,
            ttl: (o.ttl_ms > 0).then(|| Duration::from_millis(o.ttl_ms)),
            if_version: (f & TARN_WRITE_IF_VERSION != 0).then_some(o.if_version),
            expire_session: f & TARN_WRITE_EXPIRE_SESSION != 0,
            meta: change_meta(&o.meta)?,
        };
        let version = e.store().write_bytes(bucket, key, json, &wo)?;
        put(out_version, version);
        Ok(())
    })
}

/// Applies an RFC 6902 patch (JSON text `ops`, `ops_len` bytes) to a document, all
/// operations or none. `options` may be NULL. The new version goes to `*out_version`
/// and the patched document to `*out_doc` (each may be NULL; with
/// TARN_PATCH_REMOVE_DATA_FROM_REPLY `*out_doc` is set empty). TARN_NOT_FOUND,
/// TARN_INVALID_PATCH, TARN_PATCH_PATH_NOT_FOUND, TARN_PATCH_TEST_FAILED,
/// TARN_VERSION_CONFLICT, TARN_TOO_LARGE, TARN_FULL: the stored document is untouched.
/// A successful patch is a change even when the result equals the input (an empty
/// list, only `test` operations): it takes a new version. The result is stored as
/// compact JSON with the document's key order kept.
#[no_mangle]
pub extern "C" fn tarn_store_patch(
    engine: *const tarn_engine,
    bucket: *const c_char,
    key: *const c_char,
    ops: *const u8,
    ops_len: usize,
    options: *const tarn_patch_options,
    out_version: *mut u64,
    out_doc: *mut tarn_buf,
) -> tarn_status {
    guard(|| {
        let (e, bucket, key) = doc_args(engine, bucket, key)?;
        let ops = bytes(ops, ops_len, "ops")?;
        let o = opts(options).copied().unwrap_or_default();
        let f = flags(
            o.flags,
            TARN_PATCH_REMOVE_DATA_FROM_REPLY | TARN_PATCH_IF_VERSION,
            "patch options",
        )?;
        let po = PatchOptions {
            remove_data_from_reply: f & TARN_PATCH_REMOVE_DATA_FROM_REPLY != 0 || out_doc.is_null(),
            if_version: (f & TARN_PATCH_IF_VERSION != 0).then_some(o.if_version),
            meta: change_meta(&o.meta)?,
        };
        let patched = e.store().patch_bytes(bucket, key, ops, &po)?;
        put(out_version, patched.version);
        if let Some(d) = out_opt(out_doc) {
            *d = match patched.document {
                Some(doc) => tarn_buf::own(doc.body),
                None => tarn_buf::empty(),
            };
        }
        Ok(())
    })
}

/// Removes a document. `options` may be NULL. The removal's version goes to
/// `*out_version` (may be NULL). TARN_NOT_FOUND when absent, TARN_VERSION_CONFLICT.
#[no_mangle]
pub extern "C" fn tarn_store_remove(
    engine: *const tarn_engine,
    bucket: *const c_char,
    key: *const c_char,
    options: *const tarn_remove_options,
    out_version: *mut u64,
) -> tarn_status {
    guard(|| {
        let (e, bucket, key) = doc_args(engine, bucket, key)?;
        let o = opts(options).copied().unwrap_or_default();
        let f = flags(o.flags, TARN_REMOVE_IF_VERSION, "remove options")?;
        let ro = RemoveOptions {
            if_version: (f & TARN_REMOVE_IF_VERSION != 0).then_some(o.if_version),
            meta: change_meta(&o.meta)?,
        };
        let version = e.store().remove(bucket, key, &ro)?;
        put(out_version, version);
        Ok(())
    })
}

/// Writes the newest version the store has assigned to `*out_version`.
#[no_mangle]
pub extern "C" fn tarn_store_last_version(
    engine: *const tarn_engine,
    out_version: *mut u64,
) -> tarn_status {
    guard(|| {
        let e = &handle(engine, "engine")?.engine;
        *out(out_version, "out_version")? = e.store().last_version()?;
        Ok(())
    })
}
