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
pub mod ingest;
pub mod parquet_files;
pub mod record;
pub mod tree;
pub mod wal;
