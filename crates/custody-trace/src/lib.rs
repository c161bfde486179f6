//! The trace store: "what did the model see, and what did it produce?"
//!
//! Records of model calls, tool calls, retrievals and agent spans are accepted
//! asynchronously: ingest acknowledges a batch once it is in the fsynced
//! [`wal`], and the store catches up behind it. This crate shares nothing with
//! `custody-audit` — its own threads, files and errors — so a failure of one
//! witness never blinds the other.
//!
//! The pieces: the [`record`] as stored (id, content hash); the [`store`] trait
//! the server uses, with the [`conformance`] suite every backend runs; the
//! embedded backend [`parquet_store`] — the [`ingest`] pipeline ([`wal`] →
//! buffer → [`parquet_files`] in retention-friendly partitions → [`compaction`])
//! for writes, DataFusion over the files and the buffer for reads; and the
//! session [`tree`] with its rollups, computed the same for every backend.

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
pub use record::{Prepared, StoredRecord};
pub use store::{
    OpenError, RecordCursor, RecordPage, RecordQuery, StoreStats, TraceError, TraceRow, TraceStore, UsageKey,
    UsageQuery, UsageRow, open_trace_store,
};
pub use tree::{CallSummary, ProcessNode, SessionTree};
