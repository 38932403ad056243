//! RFC 6902 JSON patch: parsing an operation list and applying it all-or-nothing.
//!
//! Application is done by the `json-patch` crate on a freshly parsed copy of the stored
//! document, so a failed patch leaves the stored document untouched by construction.
//! Errors are mapped to three kinds: `InvalidPatch` (not an RFC 6902 operation list),
//! `PatchPathNotFound` (a `path` or `from` that does not resolve), `PatchTestFailed`.

use crate::error::{Error, ErrorKind, Result};
use json_patch::{Patch, PatchErrorKind, PatchOperation};
use serde_json::Value;

/// A parsed, well-formed list of RFC 6902 operations.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOps(pub(crate) Patch);

impl PatchOps {
    /// Parses an operation list from JSON text.
    pub fn from_slice(bytes: &[u8]) -> Result<PatchOps> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                ErrorKind::InvalidPatch,
                format!("the patch is not valid JSON: {e}"),
            )
        })?;
        PatchOps::from_value(value)
    }

    /// Parses an operation list from a JSON value (an array of operation objects).
    pub fn from_value(value: Value) -> Result<PatchOps> {
        if !value.is_array() {
            return Err(Error::new(
                ErrorKind::InvalidPatch,
                "a patch is a JSON array of operations",
            ));
        }
        serde_json::from_value::<Patch>(value)
            .map(PatchOps)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidPatch,
                    format!("invalid patch operation: {e}"),
                )
            })
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.0 .0.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.0 .0.is_empty()
    }

    /// The operations as a JSON value (an array), for events and replies.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    /// Applies the operations to `doc`; on error `doc` is unspecified (callers pass a
    /// copy and drop it).
    pub(crate) fn apply(&self, doc: &mut Value) -> Result<()> {
        json_patch::patch(doc, &self.0).map_err(|e| {
            let op = self.0 .0.get(e.operation).map(describe).unwrap_or_default();
            let kind = match e.kind {
                PatchErrorKind::TestFailed => ErrorKind::PatchTestFailed,
                PatchErrorKind::InvalidPointer | PatchErrorKind::InvalidFromPointer => {
                    ErrorKind::PatchPathNotFound
                }
                _ => ErrorKind::InvalidPatch,
            };
            Error::new(
                kind,
                format!("patch operation {} ({op}) failed: {}", e.operation, e.kind),
            )
        })
    }
}

fn describe(op: &PatchOperation) -> String {
    let name = match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    };
    format!("{name} {}", op.path())
}
