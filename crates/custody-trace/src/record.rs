//! A record as the store keeps it: the caller's record with its id assigned,
//! and the hash of its canonical form.
//!
//! The write-ahead log holds each record's canonical JSON (RFC 8785); the
//! content hash is SHA-256 of exactly those bytes, so anyone holding the record
//! can recompute it.

use custody_model::canonical::to_canonical_json;
use custody_model::{TraceRecord, ValidationError};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The record, `id` always set.
    pub record: TraceRecord,
    /// SHA-256 of [`StoredRecord::canonical`].
    pub content_hash: [u8; 32],
}

impl StoredRecord {
    /// Assigns an id (UUIDv7: time-ordered) when the caller gave none.
    pub fn prepare(mut record: TraceRecord) -> Self {
        if record.id.is_none() {
            record.id = Some(uuid::Uuid::now_v7().to_string());
        }
        let content_hash = Sha256::digest(canonical(&record)).into();
        Self { record, content_hash }
    }

    /// Like [`StoredRecord::prepare`], refusing a record over the size limit, and
    /// keeping the canonical bytes for the write-ahead log (computed once).
    pub fn prepare_checked(mut record: TraceRecord) -> Result<Prepared, ValidationError> {
        if record.id.is_none() {
            record.id = Some(uuid::Uuid::now_v7().to_string());
        }
        let canonical = record.canonical_checked()?;
        let content_hash = Sha256::digest(&canonical).into();
        Ok(Prepared { stored: Self { record, content_hash }, canonical })
    }

    pub fn id(&self) -> &str {
        self.record.id.as_deref().unwrap_or_default()
    }

    /// The canonical JSON of the record: what the write-ahead log holds.
    pub fn canonical(&self) -> Vec<u8> {
        canonical(&self.record)
    }

    /// Rebuilds a stored record from write-ahead-log bytes.
    pub fn from_canonical(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let record: TraceRecord = serde_json::from_slice(bytes)?;
        Ok(Self { content_hash: Sha256::digest(bytes).into(), record })
    }
}

/// A record ready for the store: the stored record and its canonical bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub stored: StoredRecord,
    /// [`StoredRecord::canonical`], already computed.
    pub canonical: Vec<u8>,
}

impl From<StoredRecord> for Prepared {
    fn from(stored: StoredRecord) -> Self {
        Self { canonical: stored.canonical(), stored }
    }
}

fn canonical(record: &TraceRecord) -> Vec<u8> {
    to_canonical_json(&serde_json::to_value(record).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: Option<&str>) -> TraceRecord {
        let mut value = json!({"workspace": "acme", "kind": "model_call", "session_id": "s", "process_id": "p",
            "model": "gpt-4o", "started_at": "2026-12-01T09:59:58Z",
            "input": [{"role": "user", "content": "hello"}]});
        if let Some(id) = id {
            value["id"] = json!(id);
        }
        TraceRecord::from_value(value).unwrap()
    }

    #[test]
    fn ids_are_assigned_once_and_time_ordered() {
        let a = StoredRecord::prepare(record(None));
        let b = StoredRecord::prepare(record(None));
        assert_eq!(a.id().len(), 36);
        assert_eq!(&a.id()[14..15], "7", "a version 7 UUID");
        assert!(a.id() < b.id(), "later ids sort later");
        let given = StoredRecord::prepare(record(Some("0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11")));
        assert_eq!(given.id(), "0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11");
    }

    #[test]
    fn the_content_hash_covers_the_canonical_bytes_and_survives_the_log() {
        let stored = StoredRecord::prepare(record(Some("0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11")));
        let bytes = stored.canonical();
        assert_eq!(stored.content_hash, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(StoredRecord::from_canonical(&bytes).unwrap(), stored);
        let mut changed = stored.record.clone();
        changed.model = Some("gpt-4o-mini".into());
        assert_ne!(StoredRecord::prepare(changed).content_hash, stored.content_hash);
        let prepared = StoredRecord::prepare_checked(stored.record.clone()).unwrap();
        assert_eq!((&prepared.stored, &prepared.canonical), (&stored, &bytes), "one canonical form either way");
    }
}
