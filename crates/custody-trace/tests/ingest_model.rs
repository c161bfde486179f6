//! The ingest pipeline (write-ahead log + buffer + Parquet flush) against an
//! in-memory model: random appends, replays, flushes, clean restarts and crashes.
//! Every acknowledged record is, after any of them, in the buffer or in exactly
//! one Parquet file — never lost, never twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use custody_model::TraceRecord;
use custody_trace::ingest::{Ingest, IngestError, IngestOptions};
use custody_trace::parquet_files::{data_files, read_file};
use custody_trace::record::StoredRecord;
use proptest::prelude::*;
use serde_json::json;

fn record(n: u64) -> StoredRecord {
    StoredRecord::prepare(
        TraceRecord::from_value(json!({
            "workspace": if n.is_multiple_of(2) { "acme" } else { "beta" }, "kind": "model_call",
            "session_id": format!("s{}", n % 3), "process_id": format!("p{}", n % 5), "model": "gpt-4o",
            "input": [{"role": "user", "content": "x".repeat(200)}],
            "started_at": format!("2026-12-0{}T10:00:00Z", 1 + n % 2),
        }))
        .unwrap(),
    )
}

/// Ids in the files (with repeats) and in the buffer.
fn stored_ids(ingest: &Ingest, root: &Path) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut files = BTreeMap::new();
    for file in data_files(&root.join("data")).unwrap() {
        for batch in read_file(&file).unwrap() {
            let ids = batch.column_by_name("id").unwrap().as_string::<i32>();
            for i in 0..batch.num_rows() {
                *files.entry(ids.value(i).to_owned()).or_insert(0) += 1;
            }
        }
    }
    let buffered = ingest.buffered().iter().map(|r| r.id().to_owned()).collect();
    (files, buffered)
}

fn options() -> IngestOptions {
    // Flushes happen only when a test asks, so the model knows where records are.
    IngestOptions { flush_interval: Duration::from_secs(3600), segment_bytes: 2048, ..IngestOptions::default() }
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    /// Send again a batch that was acknowledged before.
    Replay(usize),
    Flush,
    Compact,
    CleanRestart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..6).prop_map(Op::Append),
        1 => (0usize..100).prop_map(Op::Replay),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::CleanRestart),
        2 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_acknowledged_record_is_stored_exactly_once(ops in prop::collection::vec(op(), 1..25)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (mut ingest, _) = Ingest::open(&root, options()).unwrap();
        let mut acknowledged: Vec<String> = Vec::new();
        let mut batches: Vec<Vec<StoredRecord>> = Vec::new();
        let mut n = 0u64;
        for op in ops {
            match op {
                Op::Append(count) => {
                    let batch: Vec<StoredRecord> = (0..count).map(|_| { n += 1; record(n) }).collect();
                    let new = runtime.block_on(ingest.append(batch.clone())).unwrap();
                    prop_assert_eq!(new, batch.len());
                    acknowledged.extend(batch.iter().map(|r| r.id().to_owned()));
                    batches.push(batch);
                }
                Op::Replay(i) => {
                    if batches.is_empty() { continue; }
                    let batch = batches[i % batches.len()].clone();
                    runtime.block_on(ingest.append(batch)).unwrap();
                }
                Op::Flush => {
                    ingest.flush().unwrap();
                    let (_, buffered) = stored_ids(&ingest, &root);
                    prop_assert!(buffered.is_empty());
                }
                Op::Compact => {
                    let before = data_files(&root.join("data")).unwrap().len();
                    let report = ingest.compact().unwrap();
                    prop_assert_eq!(data_files(&root.join("data")).unwrap().len(), before - report.files_in + report.partitions);
                }
                Op::CleanRestart => {
                    ingest.shutdown().unwrap();
                    ingest = Ingest::open(&root, options()).unwrap().0;
                }
                Op::Crash => {
                    drop(ingest);
                    ingest = Ingest::open(&root, options()).unwrap().0;
                }
            }
            let (files, buffered) = stored_ids(&ingest, &root);
            let mut all: BTreeMap<String, usize> = files.clone();
            for id in &buffered {
                *all.entry(id.clone()).or_insert(0) += 1;
            }
            let expected: BTreeMap<String, usize> = acknowledged.iter().map(|id| (id.clone(), 1)).collect();
            prop_assert_eq!(all, expected);
        }
    }
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_flush_leaves_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest, _) = Ingest::open(dir.path(), options()).unwrap();
    let batch: Vec<StoredRecord> = (0..4).map(record).collect();
    ingest.append(batch.clone()).await.unwrap();
    drop(ingest);
    // A flush that wrote a file and died before recording itself.
    let part = dir.path().join("data/workspace=acme/day=2026-12-01/classification=unclassified");
    let orphan = custody_trace::parquet_files::write_file(
        &part,
        99,
        &custody_trace::parquet_files::to_record_batch(&batch[..2]).unwrap(),
    )
    .unwrap();
    let (ingest, recovered) = Ingest::open(dir.path(), options()).unwrap();
    assert_eq!((recovered.removed_files, recovered.replayed), (1, 4));
    assert!(!orphan.exists());
    assert_eq!(ingest.flush().unwrap(), 4);
    let (files, buffered) = stored_ids(&ingest, dir.path());
    assert!(buffered.is_empty());
    assert_eq!(files.len(), 4);
    assert!(files.values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_full_buffer_refuses_with_busy_until_a_flush_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = IngestOptions { max_buffer_bytes: 4 * record(0).canonical().len(), ..options() };
    let (ingest, _) = Ingest::open(dir.path(), small).unwrap();
    for n in 0..4 {
        ingest.append(vec![record(n)]).await.unwrap();
    }
    match ingest.append(vec![record(10)]).await {
        Err(IngestError::Busy { retry_after }) => assert!(retry_after >= Duration::from_secs(1)),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(ingest.buffered().len(), 4, "the refused record was not taken");
    ingest.flush().unwrap();
    assert_eq!(ingest.pending_bytes(), 0);
    ingest.append(vec![record(10)]).await.unwrap();
}

#[tokio::test]
async fn the_flusher_writes_on_its_own_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let quick = IngestOptions { flush_interval: Duration::from_millis(100), ..options() };
    let (ingest, _) = Ingest::open(dir.path(), quick).unwrap();
    ingest.append((0..3).map(record).collect()).await.unwrap();
    for _ in 0..100 {
        if ingest.buffered().is_empty() {
            // Once a record leaves the buffer, its file is in place.
            let (files, _) = stored_ids(&ingest, dir.path());
            assert_eq!(files.len(), 3);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the buffer was not flushed");
}

/// Three flushes into one partition, one record sent twice past the recent-id
/// memory: compaction leaves one file with one row per id.
#[tokio::test]
async fn compaction_merges_a_partitions_files_and_keeps_one_row_per_id() {
    let dir = tempfile::tempdir().unwrap();
    let forgetful = IngestOptions { recent_ids: 1, ..options() };
    let (ingest, _) = Ingest::open(dir.path(), forgetful).unwrap();
    let same_partition = |n: u64| record(n * 2);
    let first = same_partition(1);
    for batch in [vec![first.clone(), same_partition(2)], vec![same_partition(3)], vec![first.clone()]] {
        ingest.append(batch).await.unwrap();
        ingest.flush().unwrap();
    }
    let (files, _) = stored_ids(&ingest, dir.path());
    assert_eq!(files.get(first.id()), Some(&2), "stored twice: the replay was older than the id memory");
    let before = data_files(&dir.path().join("data")).unwrap();
    assert_eq!(before.len(), 3);
    let report = ingest.compact().unwrap();
    assert_eq!((report.partitions, report.files_in, report.rows_in, report.rows_out), (1, 3, 4, 3));
    assert_eq!(data_files(&dir.path().join("data")).unwrap().len(), 1);
    let (files, _) = stored_ids(&ingest, dir.path());
    assert_eq!(files.len(), 3);
    assert!(files.values().all(|&n| n == 1));
}

/// A compaction cut short: before its new file existed it is undone, after it
/// is finished; either way every record is in exactly one file.
#[tokio::test]
async fn an_interrupted_compaction_is_finished_or_undone_on_start() {
    use custody_trace::parquet_files::{file_name, to_record_batch, write_file_as};
    for new_file_written in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, _) = Ingest::open(dir.path(), options()).unwrap();
        let records: Vec<StoredRecord> = (1..=3).map(|n| record(n * 2)).collect();
        for r in &records {
            ingest.append(vec![r.clone()]).await.unwrap();
            ingest.flush().unwrap();
        }
        drop(ingest);
        let old = data_files(&dir.path().join("data")).unwrap();
        let part = old[0].parent().unwrap().to_path_buf();
        let new_file = part.join(file_name(3));
        let plan = new_file.with_extension("parquet.compacting");
        let listing: String = old.iter().map(|f| format!("{}\n", f.file_name().unwrap().to_str().unwrap())).collect();
        std::fs::write(&plan, listing).unwrap();
        if new_file_written {
            write_file_as(&new_file, &to_record_batch(&records).unwrap()).unwrap();
        }
        let (ingest, recovered) = Ingest::open(dir.path(), options()).unwrap();
        assert_eq!(recovered.compactions_resolved, 1);
        assert!(!plan.exists());
        let left = data_files(&dir.path().join("data")).unwrap();
        assert_eq!(left.len(), if new_file_written { 1 } else { 3 }, "{left:?}");
        let (files, _) = stored_ids(&ingest, dir.path());
        assert_eq!(files.len(), 3);
        assert!(files.values().all(|&n| n == 1));
    }
}
