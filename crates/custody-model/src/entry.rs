//! The stored form of a log entry, the exact bytes its leaf hash covers.
//!
//! An entry is the RFC 8785 canonical JSON of
//! `{"event": <event>, "format": 1, "recorded_at": "<RFC 3339>", "seq": <n>}`.
//! Its members sort in that order, so the writer builds it by concatenation
//! around the event's canonical bytes, which the request path computed already.

use serde_json::Value;

use crate::timestamp::Timestamp;

/// The version of the entry encoding; part of every leaf.
pub const ENTRY_FORMAT: u32 = 1;

/// The canonical entry bytes for an event's canonical JSON at `seq`.
pub fn entry_bytes(event_canonical: &[u8], seq: u64, recorded_at: &Timestamp) -> Vec<u8> {
    let recorded_at = recorded_at.to_string();
    let mut out = Vec::with_capacity(event_canonical.len() + recorded_at.len() + 64);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(event_canonical);
    out.extend_from_slice(
        format!(",\"format\":{ENTRY_FORMAT},\"recorded_at\":\"{recorded_at}\",\"seq\":{seq}}}").as_bytes(),
    );
    out
}

/// A stored entry read back: its event and the fields the log added.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub event: Value,
    pub seq: u64,
    pub recorded_at: Timestamp,
}

impl StoredEntry {
    /// Parses entry bytes; `None` when they are not a well-formed entry of a known format.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let obj = value.as_object()?;
        if obj.get("format")?.as_u64()? != u64::from(ENTRY_FORMAT) || obj.len() != 4 {
            return None;
        }
        Some(Self {
            event: obj.get("event")?.clone(),
            seq: obj.get("seq")?.as_u64()?,
            recorded_at: Timestamp::parse(obj.get("recorded_at")?.as_str()?).ok()?,
        })
    }

    /// The entry as the API shows it: the event's fields with `seq`, `recorded_at`
    /// and `leaf_hash` beside them.
    pub fn to_api_json(&self, leaf_hash_hex: &str) -> Value {
        let mut out = self.event.clone();
        if let Some(obj) = out.as_object_mut() {
            obj.insert("seq".into(), self.seq.into());
            obj.insert("recorded_at".into(), self.recorded_at.to_string().into());
            obj.insert("leaf_hash".into(), leaf_hash_hex.into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::to_canonical_json;
    use serde_json::json;

    #[test]
    fn concatenated_entry_bytes_are_the_canonical_json_of_the_entry() {
        let event = json!({"workspace": "acme", "kind": "role.granted", "zeta": [1, 2]});
        let at = Timestamp::parse("2026-12-01T10:00:01.25Z").unwrap();
        let bytes = entry_bytes(&to_canonical_json(&event), 42, &at);
        let whole = json!({"seq": 42, "recorded_at": "2026-12-01T10:00:01.25Z", "format": 1, "event": event});
        assert_eq!(bytes, to_canonical_json(&whole));
        let back = StoredEntry::parse(&bytes).unwrap();
        assert_eq!((back.seq, back.recorded_at, back.event), (42, at, event));
    }

    #[test]
    fn foreign_bytes_are_not_entries() {
        assert!(
            StoredEntry::parse(b"{\"event\":{},\"format\":2,\"recorded_at\":\"2026-12-01T10:00:01Z\",\"seq\":1}")
                .is_none()
        );
        assert!(StoredEntry::parse(b"not json").is_none());
    }
}
