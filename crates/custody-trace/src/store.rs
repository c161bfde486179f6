//! The [`TraceStore`] trait: what the server needs of a trace backend, and the
//! queries it answers. Backends are chosen by URI ([`open_trace_store`]); each
//! runs the `conformance` suite with one line.
//!
//! A backend stores and fetches rows; what is derived from them — the session
//! tree with its rollups, each record's process path — is computed here, the
//! same for every backend.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custody_model::{RecordKind, RecordStatus, Timestamp, TraceRecord, WorkspaceName};
use serde::Serialize;

use crate::ingest::{IngestError, IngestOptions};
use crate::record::{Prepared, StoredRecord};
use crate::tree::{CallSummary, SessionTree};

#[derive(Debug, Clone, thiserror::Error)]
pub enum TraceError {
    #[error("the trace buffer is full; retry after {} ms", retry_after.as_millis())]
    Busy { retry_after: Duration },
    #[error("the trace store is unavailable: {0}")]
    Unavailable(String),
    #[error("the trace store is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    InvalidQuery(String),
}

impl From<IngestError> for TraceError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Busy { retry_after } => TraceError::Busy { retry_after },
            IngestError::Unavailable(reason) => TraceError::Unavailable(reason),
            IngestError::ShuttingDown => TraceError::ShuttingDown,
        }
    }
}

/// One stored record as queries return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRow {
    #[serde(flatten)]
    pub record: TraceRecord,
    /// Hex SHA-256 of the record's canonical JSON (RFC 8785), as ingested.
    pub content_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Process ids from the session's root down to this record's process,
    /// derived from the parent links of the session's records.
    pub process_path: Vec<String>,
}

impl TraceRow {
    pub fn new(stored: &StoredRecord) -> Self {
        Self {
            latency_ms: stored.record.latency_ms(),
            record: stored.record.clone(),
            content_hash: hex::encode(stored.content_hash),
            process_path: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        self.record.id.as_deref().unwrap_or_default()
    }
}

/// Where a page of [`RecordQuery`] results ends: records are ordered by
/// `(started_at, id)` and the next page starts after this pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCursor {
    pub started_at: Timestamp,
    pub id: String,
}

impl RecordCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.started_at.unix_nanos(), self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (nanos, id) = s.split_once('_')?;
        let nanos: i64 = nanos.parse().ok()?;
        (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            .then(|| Self { started_at: Timestamp::from_unix_nanos(nanos), id: id.to_owned() })
    }
}

/// A search of one workspace's records. Every filter narrows; `until` is exclusive.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub workspace: Option<WorkspaceName>,
    pub session_id: Option<String>,
    pub process_id: Option<String>,
    pub agent_name: Option<String>,
    pub model: Option<String>,
    pub kind: Option<RecordKind>,
    pub status: Option<RecordStatus>,
    /// Records whose `action_ids` name this action.
    pub action_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    pub after: Option<RecordCursor>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordPage {
    pub records: Vec<TraceRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What usage can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKey {
    Model,
    ModelVersion,
    Provider,
    AgentName,
    Kind,
    Day,
}

impl UsageKey {
    pub const ALL: [UsageKey; 6] = [
        UsageKey::Model,
        UsageKey::ModelVersion,
        UsageKey::Provider,
        UsageKey::AgentName,
        UsageKey::Kind,
        UsageKey::Day,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            UsageKey::Model => "model",
            UsageKey::ModelVersion => "model_version",
            UsageKey::Provider => "provider",
            UsageKey::AgentName => "agent_name",
            UsageKey::Kind => "kind",
            UsageKey::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Calls, tokens and latency of one workspace, grouped.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub workspace: Option<WorkspaceName>,
    pub group_by: Vec<UsageKey>,
    pub session_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// One group of a usage report. `agent` records describe processes, not calls,
/// and are not counted. Latency percentiles interpolate between the two nearest
/// ranks (`percentile_cont`), over the calls that have an end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    /// The group's value for each `group_by` key, in order; `null` where the records have none.
    pub group: Vec<Option<String>>,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub reasoning_tokens: u64,
    pub errors: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// What a store reports about itself, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes accepted and not yet in the columnar files.
    pub buffered_bytes: u64,
    pub wal_bytes: u64,
    pub data_files: u64,
    pub data_bytes: u64,
}

/// The trace store as the server sees it.
#[async_trait]
pub trait TraceStore: Send + Sync + 'static {
    /// Makes the records durable (acknowledged once they are); returns how many
    /// were new — a record whose id the store already holds is not stored again.
    async fn append_prepared(&self, records: Vec<Prepared>) -> Result<usize, TraceError>;

    /// One record of `workspace` by id (without its process path).
    async fn get(&self, workspace: &WorkspaceName, id: &str) -> Result<Option<TraceRow>, TraceError>;

    /// A page of records in `(started_at, id)` order (without process paths).
    async fn search(&self, query: &RecordQuery) -> Result<RecordPage, TraceError>;

    /// The call summaries of the given sessions of `workspace`, with session ids.
    async fn session_calls(
        &self,
        workspace: &WorkspaceName,
        sessions: &[String],
    ) -> Result<Vec<(String, CallSummary)>, TraceError>;

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, TraceError>;

    /// Whether the store can take records now.
    async fn health(&self) -> Result<(), TraceError>;

    fn stats(&self) -> StoreStats;

    /// Stops taking records and leaves everything acknowledged durable.
    async fn close(&self) -> Result<(), TraceError>;

    /// [`TraceStore::append_prepared`] for records whose canonical form is not yet computed.
    async fn append(&self, records: Vec<StoredRecord>) -> Result<usize, TraceError> {
        self.append_prepared(records.into_iter().map(Prepared::from).collect()).await
    }

    /// One record with its process path.
    async fn record(&self, workspace: &WorkspaceName, id: &str) -> Result<Option<TraceRow>, TraceError> {
        let Some(row) = self.get(workspace, id).await? else { return Ok(None) };
        let mut rows = vec![row];
        add_process_paths(self, workspace, &mut rows).await?;
        Ok(rows.pop())
    }

    /// A page of records, each with its process path.
    async fn records(&self, query: &RecordQuery) -> Result<RecordPage, TraceError> {
        let mut page = self.search(query).await?;
        if let Some(workspace) = &query.workspace {
            add_process_paths(self, workspace, &mut page.records).await?;
        }
        Ok(page)
    }

    /// The session's processes as a tree with rollups; `None` when the session has no records.
    async fn session_tree(
        &self,
        workspace: &WorkspaceName,
        session_id: &str,
    ) -> Result<Option<SessionTree>, TraceError> {
        let calls = self.session_calls(workspace, &[session_id.to_owned()]).await?;
        if calls.is_empty() {
            return Ok(None);
        }
        Ok(Some(SessionTree::build(session_id, calls.into_iter().map(|(_, c)| c).collect())))
    }
}

/// Fills in each row's process path from its session's tree.
async fn add_process_paths<S: TraceStore + ?Sized>(
    store: &S,
    workspace: &WorkspaceName,
    rows: &mut [TraceRow],
) -> Result<(), TraceError> {
    let sessions: BTreeSet<String> = rows.iter().map(|r| r.record.session_id.clone()).collect();
    if sessions.is_empty() {
        return Ok(());
    }
    let sessions: Vec<String> = sessions.into_iter().collect();
    let mut by_session: HashMap<String, Vec<CallSummary>> = HashMap::new();
    for (session, call) in store.session_calls(workspace, &sessions).await? {
        by_session.entry(session).or_default().push(call);
    }
    let mut paths: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (session, calls) in by_session {
        for node in SessionTree::build(&session, calls).walk() {
            paths.insert((session.clone(), node.process_id.clone()), node.path.clone());
        }
    }
    for row in rows {
        let key = (row.record.session_id.clone(), row.record.process_id.clone());
        row.process_path = paths.remove(&key).unwrap_or_else(|| vec![row.record.process_id.clone()]);
        paths.insert(key, row.process_path.clone());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "`{0}` is not a trace store URI: use parquet://DIR (the embedded store), e.g. parquet://./custody-data/traces"
    )]
    BadUri(String),
    #[error("the trace store at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Opens the backend a URI names. `parquet://DIR` is the embedded store.
pub fn open_trace_store(uri: &str, options: IngestOptions) -> Result<Arc<dyn TraceStore>, OpenError> {
    let Some(path) = uri.strip_prefix("parquet://").filter(|p| !p.is_empty()) else {
        return Err(OpenError::BadUri(uri.to_owned()));
    };
    let path = PathBuf::from(path);
    let store = crate::parquet_store::ParquetTraceStore::open(&path, options)
        .map_err(|e| OpenError::Open { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_was_not_given_out() {
        let cursor = RecordCursor {
            started_at: Timestamp::from_unix_nanos(1_764_583_198_120_000_000),
            id: "0193a5c2-7d1e".into(),
        };
        assert_eq!(RecordCursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "12", "x_0193", "12_", "12_'; drop", "12_a b"] {
            assert_eq!(RecordCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn usage_keys_parse_by_name() {
        for key in UsageKey::ALL {
            assert_eq!(UsageKey::parse(key.as_str()), Some(key));
        }
        assert_eq!(UsageKey::parse("tokens"), None);
    }
}
