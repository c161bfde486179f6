//! The embedded SQLite backend.
//!
//! One database file holds every workspace's log: `audit_events` (one row per
//! entry, with the columns queries filter on), `audit_nodes` (complete interior
//! Merkle nodes, so proofs are a few lookups) and `audit_checkpoints`. Triggers
//! abort every UPDATE and DELETE on the three tables.
//!
//! Writes go through one [`writer`] thread (group commit); reads use a small pool
//! of connections on blocking threads, which WAL mode lets run beside the writer.

mod indexer;
mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use custody_ledger::{NoteSigner, NoteVerifier};
use custody_model::{AuditEvent, ConsistencyProof, InclusionProof, Receipt, WorkspaceName};
use tokio::sync::{mpsc, oneshot};

use crate::{
    AppendError, AuditLog, EventPage, EventQuery, OpenError, OpenOptions, ProofQueryError, RawEntry, StoreError,
    StoredCheckpoint,
};
use reader::ReaderPool;
use writer::{AppendJob, GroupCommitWriter};

pub use schema::APPEND_ONLY_TRIGGERS;

/// The SQLite audit log.
pub struct SqliteAuditLog {
    jobs: Option<mpsc::Sender<AppendJob>>,
    readers: Arc<ReaderPool>,
    verifier: NoteVerifier,
}

impl SqliteAuditLog {
    /// Opens (creating if needed) the database at `path` and starts its writer.
    pub fn open(path: &Path, signer: NoteSigner, options: OpenOptions) -> Result<Self, OpenError> {
        let io = |e: rusqlite::Error| OpenError::Io { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Io { path: dir.display().to_string(), reason: e.to_string() })?;
        }
        let conn = schema::open_writer(path, options.busy_timeout).map_err(io)?;
        let verifier = signer.verifier();
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let index = indexer::open(path).map_err(io)?;
        let (notify, commits) = std::sync::mpsc::sync_channel(1);
        let writer = GroupCommitWriter::new(conn, signer, options, notify).map_err(io)?;
        let thread_error =
            |e: std::io::Error| OpenError::Io { path: path.display().to_string(), reason: e.to_string() };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || writer.run(rx)).map_err(thread_error)?;
        std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || indexer::run(index, commits))
            .map_err(thread_error)?;
        Ok(Self { jobs: Some(tx), readers: Arc::new(ReaderPool::new(path.to_path_buf(), false)), verifier })
    }

    /// Opens an existing database for reading only (offline verification); appends fail.
    pub fn open_read_only(path: &Path, verifier: NoteVerifier) -> Result<Self, OpenError> {
        if !path.exists() {
            return Err(OpenError::Io { path: path.display().to_string(), reason: "no such file".into() });
        }
        let readers = ReaderPool::new(PathBuf::from(path), true);
        readers
            .with(|conn| conn.query_row("SELECT count(*) FROM audit_events", [], |_| Ok(())))
            .map_err(|e| OpenError::Io { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(Self { jobs: None, readers: Arc::new(readers), verifier })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
            .map_err(reader::store_error)
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<Receipt>, AppendError> {
        let Some(jobs) = &self.jobs else {
            return Err(AppendError::Unavailable("the store was opened read-only".into()));
        };
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Canonical encoding happens here, on the caller's task, so the single
        // writer thread only hashes, inserts and signs.
        let events = events
            .into_iter()
            .map(|e| {
                let canonical = e.canonical();
                (e, canonical)
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        jobs.send(AppendJob { events, reply }).await.map_err(|_| AppendError::ShuttingDown)?;
        answer.await.map_err(|_| AppendError::ShuttingDown)?
    }

    async fn query(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.read(move |conn| reader::query(conn, &query)).await?
    }

    async fn entries(
        &self,
        workspace: &WorkspaceName,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let ws = workspace.to_string();
        self.read(move |conn| reader::entries(conn, &ws, from_seq, limit)).await?
    }

    async fn workspaces(&self) -> Result<Vec<WorkspaceName>, StoreError> {
        self.read(reader::workspaces).await?
    }

    async fn latest_checkpoint(&self, workspace: &WorkspaceName) -> Result<Option<StoredCheckpoint>, StoreError> {
        let ws = workspace.to_string();
        self.read(move |conn| reader::latest_checkpoint(conn, &ws)).await?
    }

    async fn checkpoints(&self, workspace: &WorkspaceName) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let ws = workspace.to_string();
        self.read(move |conn| reader::checkpoints(conn, &ws)).await?
    }

    async fn inclusion_proof(
        &self,
        workspace: &WorkspaceName,
        seq: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, ProofQueryError> {
        let ws = workspace.to_string();
        self.read(move |conn| Ok(reader::inclusion_proof(conn, &ws, seq, tree_size))).await?
    }

    async fn consistency_proof(
        &self,
        workspace: &WorkspaceName,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, ProofQueryError> {
        let ws = workspace.to_string();
        self.read(move |conn| Ok(reader::consistency_proof(conn, &ws, first, second))).await?
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.jobs.as_ref().is_some_and(|j| j.is_closed()) {
            return Err(StoreError::Unavailable("the writer has stopped".into()));
        }
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    fn verifier(&self) -> NoteVerifier {
        self.verifier.clone()
    }
}
