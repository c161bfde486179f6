//! The trace store: "what did the model see, and what did it produce?"
//!
//! Records of model calls, tool calls, retrievals and agent spans are accepted
//! asynchronously: ingest acknowledges a batch once it is in the fsynced
//! [`wal`], and the store catches up behind it. This crate shares nothing with
//! `custody-audit` — its own threads, files and errors — so a failure of one
//! record never blinds the other.
//!
//! Built so far: the [`record`] as stored (id, content hash), the [`ingest`]
//! pipeline over the write-ahead log, Parquet files of records in retention-friendly partitions
//! ([`parquet_files`]) and the session [`tree`] with its rollups. The in-memory Arrow buffer, Parquet files,
//! compaction and DataFusion queries follow (see ARCHITECTURE.md).

pub mod compaction;
pub mod ingest;
pub mod parquet_files;
pub mod record;
pub mod tree;
pub mod wal;
