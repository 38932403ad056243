//! Events: what the bus delivers.
//!
//! One `Event` is built per change (or signal) and shared by every listener it reaches;
//! what differs per listener (whether it sees the value, how many events it missed
//! before this one) lives in [`Delivery`].

use crate::store::document::Body;
use std::sync::Arc;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A document was written.
    Write,
    /// A document was patched (the event carries the operations).
    Patch,
    /// A document was removed.
    Remove,
    /// A document's TTL passed and it was removed.
    Expire,
    /// A session-expiring document was removed because its session closed.
    SessionExpire,
    /// A signal: delivered, never stored.
    Signal,
    /// A session opened (on the system bucket `$sessions`).
    SessionOpen,
    /// A session closed (on the system bucket `$sessions`).
    SessionClose,
}

impl EventKind {
    /// The kind's stable lowercase name ("write", "session_close", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Write => "write",
            EventKind::Patch => "patch",
            EventKind::Remove => "remove",
            EventKind::Expire => "expire",
            EventKind::SessionExpire => "session_expire",
            EventKind::Signal => "signal",
            EventKind::SessionOpen => "session_open",
            EventKind::SessionClose => "session_close",
        }
    }

    /// Whether this kind is a change to the store (and so has a version).
    pub fn is_change(self) -> bool {
        matches!(
            self,
            EventKind::Write
                | EventKind::Patch
                | EventKind::Remove
                | EventKind::Expire
                | EventKind::SessionExpire
        )
    }
}

/// Who made a change and why, as the writer gave it (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeMeta {
    /// The session making the change (listeners may ignore their own session's changes).
    pub session: Option<u64>,
    /// A request id the writer chose, passed through to listeners.
    pub request_id: Option<String>,
    /// Any JSON the writer attaches, passed through to listeners (validated).
    pub user_data: Option<serde_json::Value>,
}

/// One event, shared by every listener it reaches.
#[derive(Debug)]
pub struct Event {
    pub(crate) kind: EventKind,
    pub(crate) bucket: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) version: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) session: Option<u64>,
    pub(crate) request_id: Option<Arc<str>>,
    pub(crate) user_data: Option<Arc<Body>>,
    pub(crate) value: Option<Arc<Body>>,
    pub(crate) ops: Option<Arc<Body>>,
}

impl Event {
    /// Bytes of document, operations and user data this event keeps alive.
    pub(crate) fn held_bytes(&self) -> usize {
        [&self.value, &self.ops, &self.user_data]
            .iter()
            .map(|b| b.as_ref().map_or(0, |b| b.bytes().len()))
            .sum()
    }
}

/// An event as one listener receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub(crate) event: Arc<Event>,
    pub(crate) with_value: bool,
    pub(crate) missed: u64,
}

fn text(b: &Option<Arc<Body>>) -> Option<&str> {
    b.as_ref()
        .map(|b| std::str::from_utf8(b.bytes()).unwrap_or_default())
}

impl Delivery {
    /// What happened.
    pub fn kind(&self) -> EventKind {
        self.event.kind
    }
    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.event.bucket
    }
    /// The key.
    pub fn key(&self) -> &str {
        &self.event.key
    }
    /// The change's store version (0 for signals and session events).
    pub fn version(&self) -> u64 {
        self.event.version
    }
    /// When it happened, engine-clock ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.event.timestamp_ms
    }
    /// The session that made the change or sent the signal, if any.
    pub fn session(&self) -> Option<u64> {
        self.event.session
    }
    /// The writer's request id, if it gave one.
    pub fn request_id(&self) -> Option<&str> {
        self.event.request_id.as_deref()
    }
    /// The writer's user data (JSON text), if it gave any.
    pub fn user_data(&self) -> Option<&str> {
        text(&self.event.user_data)
    }
    /// The document after the change, or the signal's value (JSON text) — only when the
    /// listener asked for values. A removal has none.
    pub fn value(&self) -> Option<&str> {
        if self.with_value {
            text(&self.event.value)
        } else {
            None
        }
    }
    /// For a patch, the operations applied (JSON text).
    pub fn ops(&self) -> Option<&str> {
        text(&self.event.ops)
    }
    /// How many events this listener missed (dropped at its bound) just before this one.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The delivery as one JSON object (the form the C ABI and Python receive):
    /// `{"kind","bucket","key","version","timestamp_ms","session","request_id",
    /// "user_data","value","ops","missed"}`, absent parts as `null`.
    pub fn to_json(&self) -> Vec<u8> {
        let e = &*self.event;
        let mut out = Vec::with_capacity(160 + self.value().map_or(0, str::len));
        out.extend_from_slice(b"{\"kind\":\"");
        out.extend_from_slice(e.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"bucket\":");
        let _ = serde_json::to_writer(&mut out, &*e.bucket);
        out.extend_from_slice(b",\"key\":");
        let _ = serde_json::to_writer(&mut out, &*e.key);
        out.extend_from_slice(
            format!(
                ",\"version\":{},\"timestamp_ms\":{}",
                e.version, e.timestamp_ms
            )
            .as_bytes(),
        );
        out.extend_from_slice(b",\"session\":");
        match e.session {
            Some(s) => out.extend_from_slice(s.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"request_id\":");
        let _ = serde_json::to_writer(&mut out, &self.request_id());
        for (name, part) in [
            ("user_data", self.user_data()),
            ("value", self.value()),
            ("ops", self.ops()),
        ] {
            out.extend_from_slice(format!(",\"{name}\":").as_bytes());
            out.extend_from_slice(part.unwrap_or("null").as_bytes());
        }
        out.extend_from_slice(format!(",\"missed\":{}}}", self.missed).as_bytes());
        out
    }
}
