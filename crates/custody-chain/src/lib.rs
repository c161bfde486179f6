//! The chain of custody of one action: what the audit log and the trace store
//! each say about it, side by side, and the answers a review asks for.
//!
//! The report is assembled from the two stores independently (a store that
//! cannot answer is [`Witness::Unavailable`], and the other side still
//! shows). It is also the bundle: every audit entry it cites comes with its
//! exact bytes and its inclusion proof against a signed checkpoint, with the
//! public key, and every trace record with its content hash, so that
//! [`verify_bundle`] can check all of it offline. The answers are derived
//! from the two sides by [`Answers::derive`], so a bundle whose answers say
//! something its evidence does not is refused too.
//!
//! This crate knows the records' shapes only through `custody-model`: it
//! depends on neither store.

mod answers;
mod text;
mod verify;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use answers::Answers;
pub use text::render_text;
pub use verify::{BundleError, Verified, verify_bundle};

/// The version of the report / bundle format.
pub const REPORT_FORMAT: u32 = 1;

/// The chain of custody of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionReport {
    pub format: u32,
    pub action_id: String,
    pub workspace: String,
    /// When the server assembled it (RFC 3339).
    pub generated_at: String,
    pub audit: Witness<AuditSide>,
    pub trace: Witness<TraceSide>,
    pub answers: Answers,
}

/// What one store said, or why it could not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Witness<T> {
    Available(T),
    Unavailable { error: String },
}

impl<T> Witness<T> {
    pub fn available(&self) -> Option<&T> {
        match self {
            Witness::Available(side) => Some(side),
            Witness::Unavailable { .. } => None,
        }
    }
}

/// The audit log's side: the action's events and the context in force at the
/// decision, each with its inclusion proof against one signed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSide {
    /// The key that verifies `checkpoint` (`name+id+key`).
    pub public_key: String,
    /// The workspace log's latest signed checkpoint (a C2SP signed note).
    pub checkpoint: String,
    pub tree_size: u64,
    /// Every event naming the action, in log order: decision, intent, approval, effect.
    pub events: Vec<ProvenEntry>,
    /// The role grants and revocations of the deciding principal (and of the
    /// user it acts for) logged before the decision.
    pub grants: Vec<ProvenEntry>,
    /// The lifecycle events of the credential the decision names.
    pub credential_events: Vec<ProvenEntry>,
}

/// One audit entry, its exact bytes and its proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEntry {
    pub seq: u64,
    pub recorded_at: String,
    /// Hex SHA-256(0x00 ‖ entry).
    pub leaf_hash: String,
    /// The canonical entry bytes as stored (JSON text).
    pub entry: String,
    /// The entry's event, for reading (checked against `entry`).
    pub event: Value,
    /// The inclusion proof of `seq` in the tree of `tree_size` entries, hex.
    pub proof: Vec<String>,
}

/// The trace store's side: the model calls, retrievals and tool calls that led
/// to the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSide {
    /// The sessions the records came from.
    pub sessions: Vec<String>,
    /// Records as the trace API returns them (the record's fields with
    /// `content_hash`, `latency_ms` and `process_path`), in start order.
    pub records: Vec<Value>,
}

impl AuditSide {
    /// The action's decision: the first `authz.decision` among its events.
    pub fn decision(&self) -> Option<&ProvenEntry> {
        self.events.iter().find(|e| text_at(&e.event, &["kind"]) == Some("authz.decision"))
    }

    /// The model calls the action's events name, each with the seq of the event naming it.
    pub fn named_model_calls(&self) -> impl Iterator<Item = (u64, &str)> {
        self.events.iter().flat_map(|e| {
            let ids = e.event.get("model_call_ids").and_then(Value::as_array).into_iter().flatten();
            ids.filter_map(Value::as_str).map(move |id| (e.seq, id))
        })
    }
}

/// The text at `path` in a JSON value (`["principal", "id"]`), when it is text.
pub fn text_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

/// The fields a trace row adds to its record.
pub const TRACE_ROW_FIELDS: [&str; 3] = ["content_hash", "latency_ms", "process_path"];
