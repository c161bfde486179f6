//! The trace record: one observation of an agent swarm — a model call, a tool
//! call, a retrieval or an agent's own span — as a caller sends it.
//!
//! Every record carries its swarm attribution: the root `session_id`, the
//! `process_id` of the agent or sub-agent that made it, and that process's
//! parent. The server adds `id` (a UUIDv7) when absent, the process path from the
//! root, the latency and a content hash.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::timestamp::Timestamp;
use crate::validation::ValidationError;
use crate::workspace::{WorkspaceName, truncate};

/// The largest canonical encoding of one record that the store accepts.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The partition of records without a classification; not a classification a record may name.
pub const UNCLASSIFIED: &str = "unclassified";
/// The longest identifier-like string field.
const MAX_ID_LEN: usize = 512;

/// What a record observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    ModelCall,
    ToolCall,
    Retrieval,
    Agent,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] =
        [RecordKind::ModelCall, RecordKind::ToolCall, RecordKind::Retrieval, RecordKind::Agent];

    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::ModelCall => "model_call",
            RecordKind::ToolCall => "tool_call",
            RecordKind::Retrieval => "retrieval",
            RecordKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How the observed operation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    #[default]
    Ok,
    Error,
}

/// One message of a conversation. `content` is text, or structured parts as the
/// provider sent them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A document a retrieval returned or a model call was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievedDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A tool call a model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub arguments: Value,
}

/// Token counts of a model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// One trace record as a caller sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub workspace: WorkspaceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    pub kind: RecordKind,
    pub session_id: String,
    pub process_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_process_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrieved_context: Vec<RetrievedDocument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<u64>,
    #[serde(default)]
    pub status: RecordStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

impl TraceRecord {
    /// Parses and validates one record from a JSON value.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let record: TraceRecord =
            serde_path_to_error::deserialize(value).map_err(|e| crate::event::from_serde_error(&e, "kind"))?;
        record.validate()?;
        Ok(record)
    }

    /// The checks that the type system does not make, except the size (see
    /// [`TraceRecord::canonical_checked`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.kind == RecordKind::ModelCall && self.model.is_none() {
            return Err(ValidationError::new("missing_field", "model", "a `model_call` record needs `model`"));
        }
        if let Some(id) = &self.id
            && !is_uuid(id)
        {
            return Err(ValidationError::new(
                "invalid_value",
                "id",
                format!("`{}` is not a UUID; leave `id` out to have one assigned", truncate(id, 60)),
            ));
        }
        let ids = [
            ("session_id", Some(&self.session_id)),
            ("process_id", Some(&self.process_id)),
            ("parent_process_id", self.parent_process_id.as_ref()),
            ("agent_name", self.agent_name.as_ref()),
            ("provider", self.provider.as_ref()),
            ("model", self.model.as_ref()),
            ("model_version", self.model_version.as_ref()),
        ];
        for (field, value) in ids {
            if let Some(v) = value {
                crate::event::check_id(field, v, MAX_ID_LEN)?;
            }
        }
        if let Some(label) = &self.classification {
            crate::workspace::check_label(label)
                .map_err(|m| ValidationError::new("invalid_value", "classification", m))?;
            if label == UNCLASSIFIED {
                return Err(ValidationError::new(
                    "invalid_value",
                    "classification",
                    "`unclassified` is where records without a classification are filed: leave `classification` out",
                ));
            }
        }
        for (i, id) in self.action_ids.iter().enumerate() {
            crate::event::check_id(&format!("action_ids[{i}]"), id, MAX_ID_LEN)?;
        }
        for (field, value, len) in [
            ("trace_id", &self.trace_id, 32),
            ("span_id", &self.span_id, 16),
            ("parent_span_id", &self.parent_span_id, 16),
        ] {
            if let Some(v) = value {
                crate::event::check_hex(field, v, len)?;
            }
        }
        if let Some(ended) = self.ended_at
            && ended < self.started_at
        {
            return Err(ValidationError::new("invalid_value", "ended_at", "is before `started_at`"));
        }
        if self.parent_process_id.as_deref() == Some(self.process_id.as_str()) {
            return Err(ValidationError::new(
                "invalid_value",
                "parent_process_id",
                "a process cannot be its own parent",
            ));
        }
        Ok(())
    }

    /// The record's canonical JSON (RFC 8785): what is stored and hashed. Refused
    /// when it is over [`MAX_RECORD_BYTES`]. Computed once per record on the
    /// ingest path, so [`TraceRecord::validate`] does not check the size itself.
    pub fn canonical_checked(&self) -> Result<Vec<u8>, ValidationError> {
        let canonical = crate::canonical::to_canonical_json(&serde_json::to_value(self).unwrap_or(Value::Null));
        if canonical.len() > MAX_RECORD_BYTES {
            return Err(ValidationError::new(
                "record_too_large",
                "",
                format!("the record is {} bytes in canonical form; the limit is {MAX_RECORD_BYTES}", canonical.len()),
            ));
        }
        Ok(canonical)
    }

    /// Milliseconds from start to end, when the record has an end.
    pub fn latency_ms(&self) -> Option<u64> {
        let ended = self.ended_at?;
        u64::try_from((ended.unix_nanos() - self.started_at.unix_nanos()) / 1_000_000).ok()
    }
}

/// Whether `s` is a UUID in its hyphenated text form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        json!({"id": "0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11", "workspace": "acme", "classification": "confidential",
         "kind": "model_call", "session_id": "sess-9", "process_id": "proc-2", "parent_process_id": "proc-1",
         "agent_name": "drafter",
         "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "a3ce929d0e0e4736", "parent_span_id": "00f067aa0ba902b7",
         "provider": "openai", "model": "gpt-4o", "model_version": "gpt-4o-2024-08-06",
         "routing": {"router": "default", "reason": "primary", "region": "eu-west"},
         "input": [{"role": "system", "content": "You are a support assistant"}, {"role": "user", "content": "Draft a reply to the customer"}],
         "retrieved_context": [{"source": "crm://customers/42/history", "content": "Order 1182 arrived damaged", "score": 0.82}],
         "output": [{"role": "assistant", "content": "Dear customer, ..."}],
         "tool_calls": [{"id": "call_1", "name": "send_email", "arguments": {"to": "customer@example.com"}}],
         "usage": {"input_tokens": 812, "output_tokens": 164, "cache_read_tokens": 0, "reasoning_tokens": 0},
         "started_at": "2026-12-01T09:59:58.12Z", "ended_at": "2026-12-01T09:59:59.87Z", "time_to_first_token_ms": 240,
         "status": "ok", "action_ids": ["act-123"], "attributes": {"temperature": 0.2}})
    }

    fn refused(edit: impl FnOnce(&mut Value)) -> ValidationError {
        let mut value = example();
        edit(&mut value);
        TraceRecord::from_value(value).unwrap_err()
    }

    #[test]
    fn the_documented_example_is_accepted_and_round_trips() {
        let record = TraceRecord::from_value(example()).unwrap();
        assert_eq!(serde_json::to_value(&record).unwrap(), example());
        assert_eq!(record.latency_ms(), Some(1750));
    }

    #[test]
    fn required_fields_and_bad_values_are_named() {
        for field in ["workspace", "kind", "session_id", "process_id", "started_at", "model"] {
            let e = refused(|v| {
                v.as_object_mut().unwrap().remove(field);
            });
            assert_eq!((e.code, e.field.as_str()), ("missing_field", field), "{e}");
        }
        let e = refused(|v| v["kind"] = json!("llm"));
        assert_eq!((e.code, e.field.as_str()), ("unknown_kind", "kind"), "{e}");
        let e = refused(|v| v["usage"]["input_tokens"] = json!(-1));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "usage.input_tokens"), "{e}");
        let e = refused(|v| v["id"] = json!("abc"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "id"), "{e}");
        let e = refused(|v| v["ended_at"] = json!("2026-12-01T09:00:00Z"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "ended_at"), "{e}");
        let e = refused(|v| v["output"][0]["mood"] = json!("happy"));
        assert_eq!((e.code, e.field.as_str()), ("unknown_field", "output[0].mood"), "{e}");
        let e = refused(|v| v["classification"] = json!("../../etc"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "classification"), "{e}");
        let e = refused(|v| v["classification"] = json!("unclassified"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "classification"), "{e}");
        let e = refused(|v| v["parent_process_id"] = json!("proc-2"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "parent_process_id"), "{e}");
        let mut huge = example();
        huge["input"][0]["content"] = json!("x".repeat(MAX_RECORD_BYTES));
        let e = TraceRecord::from_value(huge).unwrap().canonical_checked().unwrap_err();
        assert_eq!(e.code, "record_too_large");
    }

    #[test]
    fn a_tool_call_needs_no_model_and_status_defaults_to_ok() {
        let record = TraceRecord::from_value(json!({"workspace": "acme", "kind": "tool_call", "session_id": "s",
            "process_id": "p", "started_at": "2026-12-01T09:59:58Z"}))
        .unwrap();
        assert_eq!(record.status, RecordStatus::Ok);
        assert_eq!(record.latency_ms(), None);
    }
}
