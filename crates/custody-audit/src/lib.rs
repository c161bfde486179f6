//! The audit log: "who did what, and who allowed it".
//!
//! [`AuditLog`] is the one interface the server uses; backends are chosen by URI
//! through [`open_audit_log`]. Every backend keeps one RFC 6962 Merkle log per
//! workspace, appends through a group-commit writer that answers only after the
//! batch is durable, signs a checkpoint after every commit group, and refuses
//! updates and deletes inside the store itself.
//!
//! [`verify`] recomputes everything from what a backend returns and names the
//! first bad entry; [`keys`] holds API keys, which live beside the log.

pub mod keys;
pub mod signing_key;
pub mod sqlite;
pub mod verify;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custody_ledger::{Hash, NoteSigner, NoteVerifier};
use custody_model::{
    AuditEvent, ConsistencyProof, Decision, EventKind, InclusionProof, Receipt, StoredEntry, Timestamp, WorkspaceName,
};

/// The audit log of every workspace, behind one writer.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends events durably and returns one receipt each, in order. All events of
    /// one call are committed together or not at all.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<Receipt>, AppendError>;

    /// Stored events matching a query, in log order.
    async fn query(&self, query: EventQuery) -> Result<EventPage, StoreError>;

    /// The raw entries of a workspace from `from_seq` on, for verification and export.
    async fn entries(
        &self,
        workspace: &WorkspaceName,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEntry>, StoreError>;

    /// Every workspace that has a log.
    async fn workspaces(&self) -> Result<Vec<WorkspaceName>, StoreError>;

    /// The most recent signed checkpoint of a workspace.
    async fn latest_checkpoint(&self, workspace: &WorkspaceName) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Every stored checkpoint of a workspace, in the order they were written.
    async fn checkpoints(&self, workspace: &WorkspaceName) -> Result<Vec<StoredCheckpoint>, StoreError>;

    async fn inclusion_proof(
        &self,
        workspace: &WorkspaceName,
        seq: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ProofQueryError>;

    async fn consistency_proof(
        &self,
        workspace: &WorkspaceName,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, ProofQueryError>;

    /// Whether the store can serve reads and the writer is running.
    async fn health(&self) -> Result<(), StoreError>;

    /// The key that verifies this log's checkpoints.
    fn verifier(&self) -> NoteVerifier;
}

/// One stored entry as it lies in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub seq: u64,
    pub leaf_hash: Hash,
    /// The canonical entry bytes ([`custody_model::entry_bytes`]).
    pub payload: Vec<u8>,
}

/// A stored signed checkpoint. `id` orders checkpoints by when they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub id: u64,
    pub tree_size: u64,
    pub note: String,
}

/// Filters of an audit search. All given filters must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub workspace: Option<WorkspaceName>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub kind: Option<EventKind>,
    pub decision: Option<Decision>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub action_id: Option<String>,
    /// On `occurred_at` (or `recorded_at` when the event had none), inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub after: Option<QueryCursor>,
}

/// Where a page ended: a workspace and a seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCursor {
    pub workspace: String,
    pub seq: u64,
}

impl QueryCursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.workspace, self.seq)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (workspace, seq) = s.rsplit_once(':')?;
        Some(Self { workspace: WorkspaceName::parse(workspace).ok()?.to_string(), seq: seq.parse().ok()? })
    }
}

/// A stored event with the fields the log added.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub entry: StoredEntry,
    pub leaf_hash: Hash,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next_cursor: Option<QueryCursor>,
}

/// Why an append did not produce receipts. Every variant means: nothing of the
/// batch was committed, and the caller must not proceed with the action.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("the audit log cannot make the events durable: {0}")]
    Unavailable(String),
    #[error("the audit log is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the audit store is unavailable: {0}")]
    Unavailable(String),
    #[error("the audit store holds data it cannot read: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProofQueryError {
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Told about every commit group, for metrics.
pub trait CommitObserver: Send + Sync {
    fn group_committed(&self, events: usize, duration: Duration);
    fn group_failed(&self, events: usize, reason: &'static str);
}

/// Tuning of a backend; the defaults suit the embedded store.
#[derive(Clone)]
pub struct OpenOptions {
    /// How long the writer waits for a lock held by another process before it
    /// gives up on a commit group (and its callers get 503).
    pub busy_timeout: Duration,
    /// The most events one commit group takes.
    pub max_group_events: usize,
    /// Append requests waiting for the writer before callers wait in turn.
    pub queue_capacity: usize,
    pub observer: Option<Arc<dyn CommitObserver>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { busy_timeout: Duration::from_secs(2), max_group_events: 4096, queue_capacity: 4096, observer: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "unsupported audit store `{0}`: use sqlite://PATH (PostgreSQL, postgres://…, is not compiled into this build)"
    )]
    Unsupported(String),
    #[error("cannot open the audit store at {path}: {reason}")]
    Io { path: String, reason: String },
}

/// Opens the audit log a URI names: `sqlite://PATH` (a relative or absolute path).
pub async fn open_audit_log(
    uri: &str,
    signer: NoteSigner,
    options: OpenOptions,
) -> Result<Arc<dyn AuditLog>, OpenError> {
    match uri.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {
            let log = sqlite::SqliteAuditLog::open(std::path::Path::new(path), signer, options)?;
            Ok(Arc::new(log))
        }
        _ => Err(OpenError::Unsupported(uri.to_owned())),
    }
}

pub(crate) fn hex_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}
