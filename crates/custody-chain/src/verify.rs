//! Checking a bundle offline: every audit entry against the signed checkpoint,
//! every trace record against its content hash, and the answers against both.

use custody_ledger::merkle::{hash_leaf, verify_inclusion};
use custody_ledger::{Checkpoint, Hash, NoteVerifier};
use custody_model::canonical::to_canonical_json;
use custody_model::{StoredEntry, TraceRecord};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{ActionReport, Answers, ProvenEntry, REPORT_FORMAT, TRACE_ROW_FIELDS, TraceSide, text_at};

/// Why a bundle is not valid. Each names the part that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    #[error("not a Custody bundle: {0}")]
    Malformed(String),
    #[error("the bundle's key is not the one given: it holds `{found}`")]
    UnexpectedKey { found: String },
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(String),
    #[error("audit entry {seq}: {reason}")]
    Entry { seq: u64, reason: String },
    #[error("trace record {id}: {reason}")]
    Record { id: String, reason: String },
    #[error("the answers do not follow from the evidence: `{field}` differs")]
    Answers { field: &'static str },
}

/// What a valid bundle holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub report: ActionReport,
    /// The key the checkpoint verified with (when the audit side is there).
    pub key: Option<String>,
    pub audit_entries: usize,
    pub trace_records: usize,
}

fn decode_hash(hex_text: &str) -> Option<Hash> {
    hex::decode(hex_text).ok().and_then(|b| Hash::try_from(b.as_slice()).ok())
}

/// Checks a bundle. With `pinned`, its checkpoint must be signed by that key;
/// without, by the key the bundle carries (which the caller should compare
/// with the log's published key).
pub fn verify_bundle(bytes: &[u8], pinned: Option<&NoteVerifier>) -> Result<Verified, BundleError> {
    let report: ActionReport = serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    if report.format != REPORT_FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {} (this build reads format {REPORT_FORMAT})",
            report.format
        )));
    }
    let mut key = None;
    let mut audit_entries = 0;
    let mut named_calls: Vec<(u64, &str)> = Vec::new();
    if let Some(audit) = report.audit.available() {
        let verifier = NoteVerifier::parse(audit.public_key.trim())
            .map_err(|e| BundleError::Checkpoint(format!("public key: {e}")))?;
        if let Some(pinned) = pinned
            && pinned.to_key_string() != verifier.to_key_string()
        {
            return Err(BundleError::UnexpectedKey { found: verifier.to_key_string() });
        }
        let checkpoint =
            Checkpoint::open(&audit.checkpoint, &verifier).map_err(|e| BundleError::Checkpoint(e.to_string()))?;
        if checkpoint.size != audit.tree_size {
            return Err(BundleError::Checkpoint(format!(
                "it is of {} entries, the bundle says {}",
                checkpoint.size, audit.tree_size
            )));
        }
        if !checkpoint.origin.ends_with(&format!("/{}", report.workspace)) {
            return Err(BundleError::Checkpoint(format!(
                "it is the log `{}`, not workspace `{}`'s",
                checkpoint.origin, report.workspace
            )));
        }
        for (n, entry) in audit.events.iter().enumerate() {
            let event = check_entry(entry, &checkpoint, &report.workspace)?;
            if text_at(&event, &["action_id"]) != Some(report.action_id.as_str()) {
                return Err(entry_error(entry, format!("it does not name action `{}`", report.action_id)));
            }
            if n > 0 && audit.events[n - 1].seq >= entry.seq {
                return Err(entry_error(entry, "the action's events are not in log order".into()));
            }
        }
        // Each event shown is the event its bytes hold (checked above), so these are the logged ids.
        named_calls.extend(audit.named_model_calls());
        for entry in audit.grants.iter().chain(&audit.credential_events) {
            check_entry(entry, &checkpoint, &report.workspace)?;
        }
        audit_entries = audit.events.len() + audit.grants.len() + audit.credential_events.len();
        key = Some(verifier.to_key_string());
    }
    let mut trace_records = 0;
    if let Some(trace) = report.trace.available() {
        check_records(trace, &report.workspace)?;
        for (seq, id) in &named_calls {
            if !trace.records.iter().any(|r| text_at(r, &["id"]) == Some(*id)) {
                return Err(BundleError::Entry {
                    seq: *seq,
                    reason: format!("it names model call `{id}`, which the bundle's trace records do not include"),
                });
            }
        }
        trace_records = trace.records.len();
    }
    let derived = Answers::derive(report.audit.available(), report.trace.available());
    let field = if derived.what != report.answers.what {
        Some("what")
    } else if derived.authorized != report.answers.authorized {
        Some("authorized")
    } else if derived.models != report.answers.models {
        Some("models")
    } else if derived.data_considered != report.answers.data_considered {
        Some("data_considered")
    } else {
        None
    };
    if let Some(field) = field {
        return Err(BundleError::Answers { field });
    }
    Ok(Verified { report, key, audit_entries, trace_records })
}

fn entry_error(entry: &ProvenEntry, reason: String) -> BundleError {
    BundleError::Entry { seq: entry.seq, reason }
}

/// Checks one entry's bytes, leaf hash, readable copy and proof; returns its event.
fn check_entry(entry: &ProvenEntry, checkpoint: &Checkpoint, workspace: &str) -> Result<Value, BundleError> {
    let leaf = hash_leaf(entry.entry.as_bytes());
    if hex::encode(leaf) != entry.leaf_hash {
        return Err(entry_error(entry, "its bytes do not hash to its leaf hash".into()));
    }
    let stored = StoredEntry::parse(entry.entry.as_bytes())
        .ok_or_else(|| entry_error(entry, "its bytes are not a well-formed log entry".into()))?;
    if stored.seq != entry.seq || stored.recorded_at.to_string() != entry.recorded_at {
        return Err(entry_error(entry, "its seq or recorded_at is not what its bytes say".into()));
    }
    if stored.to_api_json(&entry.leaf_hash) != entry.event {
        return Err(entry_error(entry, "the event shown is not the event its bytes hold".into()));
    }
    if text_at(&stored.event, &["workspace"]) != Some(workspace) {
        return Err(entry_error(entry, format!("it is not an event of workspace `{workspace}`")));
    }
    let proof: Vec<Hash> = entry
        .proof
        .iter()
        .map(|h| decode_hash(h).ok_or_else(|| entry_error(entry, format!("proof hash `{h}` is not 32 bytes of hex"))))
        .collect::<Result<_, _>>()?;
    verify_inclusion(&leaf, entry.seq, checkpoint.size, &proof, &checkpoint.root)
        .map_err(|e| entry_error(entry, format!("its inclusion proof does not verify against the checkpoint: {e}")))?;
    Ok(stored.event)
}

/// Checks that each record's content hash recomputes from its fields.
fn check_records(trace: &TraceSide, workspace: &str) -> Result<(), BundleError> {
    for row in &trace.records {
        let id = text_at(row, &["id"]).unwrap_or("(no id)").to_owned();
        let failed = |reason: String| BundleError::Record { id: id.clone(), reason };
        let Value::Object(fields) = row else { return Err(failed("it is not a JSON object".into())) };
        let claimed =
            fields.get("content_hash").and_then(Value::as_str).ok_or_else(|| failed("no content_hash".into()))?;
        let mut fields = fields.clone();
        for added in TRACE_ROW_FIELDS {
            fields.remove(added);
        }
        let record: TraceRecord =
            serde_json::from_value(Value::Object(fields)).map_err(|e| failed(format!("not a trace record: {e}")))?;
        if record.workspace.as_str() != workspace {
            return Err(failed(format!("it is not a record of workspace `{workspace}`")));
        }
        let value = serde_json::to_value(&record).map_err(|e| failed(e.to_string()))?;
        if hex::encode(Sha256::digest(to_canonical_json(&value))) != claimed {
            return Err(failed("its content does not hash to its content_hash".into()));
        }
    }
    Ok(())
}
