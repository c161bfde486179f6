//! The audit event: one authorization-relevant fact, as a caller sends it.
//!
//! Deserialisation is strict (unknown fields are refused) so that a typo in a
//! field name cannot silently drop evidence. [`AuditEvent::from_value`] turns
//! every failure into a [`ValidationError`] naming the field and the fix.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::to_canonical_json;
use crate::timestamp::Timestamp;
use crate::validation::ValidationError;
use crate::workspace::{WorkspaceName, truncate};

/// The largest canonical encoding of one event that the log accepts.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// The longest identifier-like string field (ids, actions, types, names).
pub const MAX_ID_LEN: usize = 512;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
            pub fn names() -> String {
                Self::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What kind of authorization fact an event records.
    EventKind {
        AuthzDecision => "authz.decision",
        RoleGranted => "role.granted",
        RoleRevoked => "role.revoked",
        ShareCreated => "share.created",
        ShareRevoked => "share.revoked",
        ApiKeyCreated => "api_key.created",
        ApiKeyRotated => "api_key.rotated",
        ApiKeyRevoked => "api_key.revoked",
        IntentCreated => "intent.created",
        ApprovalGranted => "approval.granted",
        ApprovalDenied => "approval.denied",
        FileAccessed => "file.accessed",
        ActionCompleted => "action.completed",
    }
);

string_enum!(
    /// The outcome of an authorization decision.
    Decision { Allow => "allow", Deny => "deny" }
);

string_enum!(
    /// How consequential an action is, and how much a principal may do unapproved.
    Severity { Low => "low", Medium => "medium", High => "high", Critical => "critical" }
);

/// Who acted: a user, an agent, a service, an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

/// The approved intent that allowed an action above the principal's ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub intent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Timestamp>,
}

/// The credential used, and the boundary it crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<String>,
}

/// Where in an agent swarm the request came from; links to the trace store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// One audit event as a caller sends it. The log adds `seq`, `recorded_at` and
/// `leaf_hash` when it stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub workspace: WorkspaceName,
    pub kind: EventKind,
    pub principal: Principal,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_path: Vec<String>,
    pub action: String,
    pub resource: Resource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_call_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
}

impl AuditEvent {
    /// Parses and validates one event from a JSON value.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        if !value.is_object() {
            return Err(ValidationError::new(
                "invalid_type",
                "",
                format!("an event must be a JSON object, not {}", json_type(&value)),
            ));
        }
        let event: AuditEvent = serde_path_to_error::deserialize(value).map_err(|e| from_serde_error(&e, "kind"))?;
        event.validate()?;
        Ok(event)
    }

    /// Parses and validates one event straight from JSON text (no intermediate
    /// value tree). Syntax errors have the code `malformed_json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ValidationError> {
        let malformed = |e: &serde_json::Error| {
            ValidationError::new("malformed_json", "", format!("the body is not valid JSON: {e}"))
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let event: AuditEvent = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            if e.inner().is_syntax() || e.inner().is_eof() {
                malformed(e.inner())
            } else {
                from_serde_error(&e, "kind")
            }
        })?;
        de.end().map_err(|e| malformed(&e))?;
        event.validate()?;
        Ok(event)
    }

    /// The checks that the type system does not make.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.kind == EventKind::AuthzDecision && self.decision.is_none() {
            return Err(ValidationError::new(
                "missing_field",
                "decision",
                "an `authz.decision` event needs `decision`: \"allow\" or \"deny\"",
            ));
        }
        let ids = [
            ("principal.type", Some(&self.principal.kind)),
            ("principal.id", Some(&self.principal.id)),
            ("principal.on_behalf_of", self.principal.on_behalf_of.as_ref()),
            ("action", Some(&self.action)),
            ("resource.type", Some(&self.resource.kind)),
            ("resource.id", Some(&self.resource.id)),
            ("action_id", self.action_id.as_ref()),
            ("credential.type", self.credential.as_ref().map(|c| &c.kind)),
            ("credential.id", self.credential.as_ref().map(|c| &c.id)),
            ("approval.intent_id", self.approval.as_ref().map(|a| &a.intent_id)),
        ];
        for (field, value) in ids {
            if let Some(v) = value {
                check_id(field, v, MAX_ID_LEN)?;
            }
        }
        if let Some(label) = &self.classification {
            crate::workspace::check_label(label)
                .map_err(|m| ValidationError::new("invalid_value", "classification", m))?;
        }
        for (i, hop) in self.access_path.iter().enumerate() {
            check_id(&format!("access_path[{i}]"), hop, MAX_ID_LEN)?;
        }
        if let Some(session) = &self.session {
            if let Some(t) = &session.trace_id {
                check_hex("session.trace_id", t, 32)?;
            }
            if let Some(s) = &session.span_id {
                check_hex("session.span_id", s, 16)?;
            }
        }
        let size = self.canonical().len();
        if size > MAX_EVENT_BYTES {
            return Err(ValidationError::new(
                "event_too_large",
                "",
                format!(
                    "the event is {size} bytes in canonical form; the limit is {MAX_EVENT_BYTES}: move bulky data out of `attributes` and reference it"
                ),
            ));
        }
        Ok(())
    }

    /// The RFC 8785 canonical JSON of this event.
    pub fn canonical(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        to_canonical_json(&value)
    }

    /// The time the fact happened: `occurred_at` when given, else when it was recorded.
    pub fn effective_time(&self, recorded_at: Timestamp) -> Timestamp {
        self.occurred_at.unwrap_or(recorded_at)
    }
}

/// An identifier-like field: not empty, at most `max_len` bytes, no control characters.
pub fn check_id(field: &str, value: &str, max_len: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new("invalid_value", field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(ValidationError::new(
            "invalid_value",
            field,
            format!("is {} bytes long; the limit is {max_len}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new("invalid_value", field, "must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn check_hex(field: &str, value: &str, len: usize) -> Result<(), ValidationError> {
    if value.len() != len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ValidationError::new(
            "invalid_value",
            field,
            format!("must be {len} hexadecimal characters (W3C trace context), got `{}`", truncate(value, 40)),
        ));
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Turns serde's messages into codes, keeping the path of the field at fault.
/// An unknown variant at `kind_field` is an unknown kind.
pub(crate) fn from_serde_error(e: &serde_path_to_error::Error<serde_json::Error>, kind_field: &str) -> ValidationError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = e.inner().to_string();
    // serde_json appends " at line L column C"; positions in a re-parsed value are meaningless.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    let code = if message.starts_with("missing field") {
        "missing_field"
    } else if message.starts_with("unknown field") {
        "unknown_field"
    } else if message.starts_with("invalid type") {
        "invalid_type"
    } else if message.starts_with("unknown variant") && path == kind_field {
        // serde lists the expected variants itself.
        return ValidationError::new("unknown_kind", path, message);
    } else {
        "invalid_value"
    };
    // A missing field is reported at its parent; name the field itself.
    if code == "missing_field"
        && let Some(name) = message.split('`').nth(1)
    {
        let field = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        return ValidationError::new(code, field, format!("{message}: it is required"));
    }
    ValidationError::new(code, path, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn example() -> Value {
        json!({"workspace": "acme", "kind": "authz.decision",
         "principal": {"type": "agent", "id": "agent:mailer-7", "on_behalf_of": "user:support-lead"},
         "access_path": ["user:support-lead", "role:support", "agent:mailer-7"],
         "action": "email.send",
         "resource": {"type": "email", "id": "outbound/8812", "attributes": {"external": true}},
         "decision": "allow", "reason": "approved intent", "severity": "high", "ceiling": "medium",
         "policies": ["external-email-requires-intent"],
         "approval": {"intent_id": "intent-77", "approver": "user:security-officer", "approved_at": "2026-12-01T10:00:00Z"},
         "credential": {"type": "api_key", "id": "key_4f2a", "boundary": "workspace:acme/scope:email.send"},
         "action_id": "act-123",
         "session": {"session_id": "sess-9", "process_id": "proc-2", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
         "model_call_ids": ["0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11"],
         "classification": "confidential", "occurred_at": "2026-12-01T10:00:01Z",
         "attributes": {"recipient_domain": "example.com"}})
    }

    fn refused(mut value: Value, edit: impl FnOnce(&mut Value)) -> ValidationError {
        edit(&mut value);
        AuditEvent::from_value(value).unwrap_err()
    }

    #[test]
    fn the_documented_example_is_accepted_and_round_trips() {
        let event = AuditEvent::from_value(example()).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), example());
        assert_eq!(event.canonical(), to_canonical_json(&example()));
    }

    #[test]
    fn each_required_field_is_named_when_missing() {
        for field in ["workspace", "kind", "principal", "action", "resource", "decision"] {
            let e = refused(example(), |v| {
                v.as_object_mut().unwrap().remove(field);
            });
            assert_eq!((e.code, e.field.as_str()), ("missing_field", field), "{e}");
        }
        let e = refused(example(), |v| {
            v["principal"].as_object_mut().unwrap().remove("id");
        });
        assert_eq!((e.code, e.field.as_str()), ("missing_field", "principal.id"));
    }

    #[test]
    fn wrong_types_unknown_fields_kinds_and_timestamps_are_refused_by_name() {
        let e = refused(example(), |v| v["action"] = json!(7));
        assert_eq!((e.code, e.field.as_str()), ("invalid_type", "action"));
        let e = refused(example(), |v| v["principal"]["nickname"] = json!("x"));
        assert_eq!((e.code, e.field.as_str()), ("unknown_field", "principal.nickname"));
        assert!(e.message.contains("nickname"), "{e}");
        let e = refused(example(), |v| v["kind"] = json!("authz.guess"));
        assert_eq!((e.code, e.field.as_str()), ("unknown_kind", "kind"));
        assert!(e.message.contains("role.granted"), "{e}");
        let e = refused(example(), |v| v["occurred_at"] = json!("last tuesday"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "occurred_at"));
        assert!(e.message.contains("RFC 3339"), "{e}");
        let e = refused(example(), |v| v["workspace"] = json!("Not Valid"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "workspace"));
        let e = refused(example(), |v| v["session"]["trace_id"] = json!("xyz"));
        assert_eq!((e.code, e.field.as_str()), ("invalid_value", "session.trace_id"));
        let e = refused(json!([1]), |_| {});
        assert_eq!(e.code, "invalid_type");
    }

    #[test]
    fn parsing_text_and_parsing_a_value_agree() {
        let text = serde_json::to_vec(&example()).unwrap();
        assert_eq!(AuditEvent::from_json(&text).unwrap(), AuditEvent::from_value(example()).unwrap());
        let mut bad = example();
        bad["principal"]["nickname"] = json!("x");
        let from_text = AuditEvent::from_json(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert_eq!(from_text, AuditEvent::from_value(bad).unwrap_err());
        assert_eq!(AuditEvent::from_json(b"{\"workspace\": ").unwrap_err().code, "malformed_json");
        let mut trailing = serde_json::to_vec(&example()).unwrap();
        trailing.extend_from_slice(b" }");
        assert_eq!(AuditEvent::from_json(&trailing).unwrap_err().code, "malformed_json");
        assert_eq!(AuditEvent::from_json(b"[1]").unwrap_err().code, "invalid_type");
    }

    #[test]
    fn oversized_events_are_refused() {
        let e = refused(example(), |v| v["attributes"]["blob"] = json!("x".repeat(MAX_EVENT_BYTES)));
        assert_eq!(e.code, "event_too_large");
    }
}
