//! The trace API: ingest of records, and the queries over them.
//!
//! Every record a query returns is checked against its `content_hash`: the
//! hash is recomputed from the record's canonical JSON (RFC 8785), so a row
//! altered after ingest does not pass.

use custody_model::TraceRecord;
use custody_model::canonical::to_canonical_json;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Client, ClientError};

/// What the server made of a batch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TraceIngest {
    /// Records durable in the trace store's write-ahead log.
    pub accepted: usize,
    /// Records refused, by their index in the batch.
    pub rejected: Vec<TraceRejection>,
    /// The ids of the accepted records, in batch order (assigned where absent).
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TraceRejection {
    pub index: usize,
    pub code: String,
    pub error: String,
}

/// Filters of a record search (`GET /api/v1/traces/records`).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub workspace: Option<String>,
    pub session_id: Option<String>,
    pub process_id: Option<String>,
    pub agent_name: Option<String>,
    pub model: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl TraceQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("workspace", &self.workspace),
            ("session_id", &self.session_id),
            ("process_id", &self.process_id),
            ("agent_name", &self.agent_name),
            ("model", &self.model),
            ("kind", &self.kind),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
            ("cursor", &self.cursor),
        ];
        crate::query_pairs(fields, self.limit)
    }
}

/// The fields a row adds to the record as it was sent.
const DERIVED: [&str; 3] = ["content_hash", "latency_ms", "process_path"];

/// Checks a row's `content_hash` against the record it carries.
pub fn verify_trace_row(row: &Value) -> Result<(), ClientError> {
    let Some(obj) = row.as_object() else { return Err(ClientError::Decode("a trace row is not an object".into())) };
    let claimed = obj.get("content_hash").and_then(Value::as_str).unwrap_or_default();
    let record: serde_json::Map<String, Value> =
        obj.iter().filter(|(k, _)| !DERIVED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let record = TraceRecord::from_value(Value::Object(record))
        .map_err(|e| ClientError::Verification(format!("a trace row is not a valid record: {e}")))?;
    let canonical = to_canonical_json(&serde_json::to_value(&record).map_err(|e| ClientError::Decode(e.to_string()))?);
    let computed = hex::encode(Sha256::digest(&canonical));
    if computed != claimed {
        let id = record.id.unwrap_or_default();
        return Err(ClientError::Verification(format!(
            "trace record {id}: content hash {claimed} does not match the record ({computed})"
        )));
    }
    Ok(())
}

impl Client {
    /// Sends records (JSON objects in the trace record format); answers once the
    /// accepted ones are durable. A full buffer is [`ClientError::Busy`].
    pub async fn append_traces(&self, records: &[Value]) -> Result<TraceIngest, ClientError> {
        self.json(self.request(Method::POST, "/api/v1/traces").json(&json!({ "records": records }))).await
    }

    /// One record by id, its content hash checked; `None` when there is none.
    pub async fn trace_record(&self, workspace: &str, id: &str) -> Result<Option<Value>, ClientError> {
        let path = format!("/api/v1/traces/records/{}", segment(id));
        match self.json::<Value>(self.request(Method::GET, &path).query(&[("workspace", workspace)])).await {
            Ok(row) => {
                verify_trace_row(&row)?;
                Ok(Some(row))
            }
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A page of records (each content hash checked) and the cursor of the next page.
    pub async fn trace_records(&self, query: &TraceQuery) -> Result<(Vec<Value>, Option<String>), ClientError> {
        #[derive(Deserialize)]
        struct Page {
            records: Vec<Value>,
            next_cursor: Option<String>,
        }
        let page: Page = self.json(self.request(Method::GET, "/api/v1/traces/records").query(&query.pairs())).await?;
        for row in &page.records {
            verify_trace_row(row)?;
        }
        Ok((page.records, page.next_cursor))
    }

    /// The session's process tree with rollups.
    pub async fn session_tree(&self, workspace: Option<&str>, session_id: &str) -> Result<Value, ClientError> {
        let path = format!("/api/v1/traces/sessions/{}/tree", segment(session_id));
        let query: Vec<(&str, &str)> = workspace.map(|w| ("workspace", w)).into_iter().collect();
        self.json(self.request(Method::GET, &path).query(&query)).await
    }

    /// Usage grouped by `group_by` (`model`, `model_version`, `provider`, `agent_name`, `kind`, `day`).
    pub async fn trace_usage(
        &self,
        workspace: Option<&str>,
        group_by: &[&str],
        filters: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let mut query = vec![("group_by", group_by.join(","))];
        query.extend(workspace.map(|w| ("workspace", w.to_owned())));
        query.extend(filters.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.json(self.request(Method::GET, "/api/v1/traces/usage").query(&query)).await
    }
}

/// `s` as one URL path segment (percent-encoded outside the unreserved characters).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
