//! The TraceStore conformance suite against the embedded Parquet backend.

use std::path::PathBuf;
use std::sync::Arc;

use custody_trace::{IngestOptions, ParquetTraceStore};

async fn open_parquet(dir: PathBuf) -> Arc<ParquetTraceStore> {
    Arc::new(ParquetTraceStore::open(&dir, IngestOptions::default()).expect("open the store"))
}

custody_trace::trace_store_conformance!(open_parquet);

/// The same suite with every append flushed to Parquet at once and small files
/// merged as soon as they appear, so queries read files, the buffer and
/// compactions in progress rather than the buffer alone.
mod flushing {
    use std::time::Duration;

    use super::*;

    async fn open_flushing(dir: PathBuf) -> Arc<ParquetTraceStore> {
        let options = IngestOptions { flush_bytes: 1, compact_interval: Duration::ZERO, ..IngestOptions::default() };
        Arc::new(ParquetTraceStore::open(&dir, options).expect("open the store"))
    }

    custody_trace::trace_store_conformance!(open_flushing);
}
