//! The trace store: "what did the model see, and what did it produce?"
//!
//! Records of model calls, tool calls, retrievals and agent spans are accepted
//! asynchronously: ingest acknowledges a batch once it is in the fsynced
//! [`wal`], and the store catches up behind it. This crate shares nothing with
//! `custody-audit` — its own threads, files and errors — so a failure of one
//! witness never blinds the other.
//!
//! Built so far: the [`record`] as stored (id, content hash); the [`ingest`]
//! pipeline — [`wal`] → buffer → [`parquet_files`] in retention-friendly
//! partitions → [`compaction`]; and the session [`tree`] with its rollups.
//! Queries (DataFusion), the `TraceStore` trait and the HTTP API follow (see
//! ARCHITECTURE.md).

pub mod compaction;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod ingest;
pub mod parquet_files;
pub mod parquet_store;
pub mod record;
pub mod store;
pub mod tree;
pub mod wal;

pub use ingest::IngestOptions;
pub use parquet_store::ParquetTraceStore;
pub use record::StoredRecord;
pub use store::{
    OpenError, RecordCursor, RecordPage, RecordQuery, StoreStats, TraceError, TraceRow, TraceStore, UsageKey,
    UsageQuery, UsageRow, open_trace_store,
};
pub use tree::{CallSummary, SessionTree};
