//! What only the SQLite backend can show: append-only triggers, restarts, and a
//! property test of concurrent appends across workspaces.

use std::sync::Arc;

use custody_audit::conformance::{check_inclusion, check_receipt, sample_event};
use custody_audit::sqlite::SqliteAuditLog;
use custody_audit::verify::verify_log;
use custody_audit::{AuditLog, OpenOptions};
use custody_ledger::merkle::{verify_consistency, verify_inclusion};
use custody_ledger::{Checkpoint, Hash, NoteSigner};
use custody_model::WorkspaceName;
use proptest::prelude::*;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("custody.test/audit", [5; 32]).unwrap()
}

fn open(path: &std::path::Path) -> SqliteAuditLog {
    SqliteAuditLog::open(path, signer(), OpenOptions::default()).unwrap()
}

fn ws(name: &str) -> WorkspaceName {
    WorkspaceName::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_itself_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = open(&path);
    log.append(vec![sample_event(&ws("acme"), 0), sample_event(&ws("acme"), 1)]).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sql in [
        "UPDATE audit_events SET payload = x'00' WHERE seq = 0",
        "DELETE FROM audit_events WHERE seq = 1",
        "UPDATE audit_nodes SET hash = x'00'",
        "DELETE FROM audit_nodes",
        "UPDATE audit_checkpoints SET tree_size = 1",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    let outcome = verify_log(&log, &log.verifier(), |_, _| {}).await.unwrap();
    assert!(outcome.is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_log_continues_its_trees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let acme = ws("acme");
    {
        let log = open(&path);
        for n in 0..7 {
            log.append(vec![sample_event(&acme, n)]).await.unwrap();
        }
    }
    let log = open(&path);
    let event = sample_event(&acme, 7);
    let receipt = log.append(vec![event.clone()]).await.unwrap().remove(0);
    assert_eq!((receipt.seq, receipt.tree_size), (7, 8));
    let checkpoint = check_receipt(&log, &event, &receipt);
    check_inclusion(&log, &receipt, &checkpoint).await;
    let outcome = verify_log(&log, &log.verifier(), |_, _| {}).await.unwrap();
    assert!(outcome.is_intact(), "{:?}", outcome.findings);
}

fn hashes(list: &[String]) -> Vec<Hash> {
    list.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random concurrent appends across several workspaces: every receipt verifies,
    /// every seq has an inclusion proof, and every two checkpoints are consistent.
    #[test]
    fn random_concurrent_appends_always_verify(batches in prop::collection::vec((0usize..3, 1usize..5), 1..30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let log: Arc<dyn AuditLog> = Arc::new(open(&dir.path().join("audit.db")));
            let spaces = [ws("ws-a"), ws("ws-b"), ws("ws-c")];
            let mut tasks = Vec::new();
            for (i, (w, size)) in batches.iter().enumerate() {
                let events: Vec<_> = (0..*size).map(|n| sample_event(&spaces[*w], i * 10 + n)).collect();
                let log = log.clone();
                tasks.push(tokio::spawn(async move { (events.clone(), log.append(events).await.unwrap()) }));
            }
            let mut receipts = Vec::new();
            for task in tasks {
                let (events, got) = task.await.unwrap();
                for (event, receipt) in events.iter().zip(got) {
                    let checkpoint = check_receipt(&*log, event, &receipt);
                    check_inclusion(&*log, &receipt, &checkpoint).await;
                    receipts.push(receipt);
                }
            }
            for space in &spaces {
                let Some(latest) = log.latest_checkpoint(space).await.unwrap() else { continue };
                let latest = Checkpoint::open(&latest.note, &log.verifier()).unwrap();
                let entries = log.entries(space, 0, 10_000).await.unwrap();
                assert_eq!(entries.len() as u64, latest.size);
                for entry in &entries {
                    let proof = log.inclusion_proof(space, entry.seq, latest.size).await.unwrap();
                    verify_inclusion(&entry.leaf_hash, entry.seq, latest.size, &hashes(&proof.hashes), &latest.root).unwrap();
                }
                let checkpoints: Vec<Checkpoint> = log.checkpoints(space).await.unwrap().iter()
                    .map(|c| Checkpoint::open(&c.note, &log.verifier()).unwrap()).collect();
                for a in &checkpoints {
                    for b in checkpoints.iter().filter(|b| b.size >= a.size) {
                        let proof = log.consistency_proof(space, a.size, b.size).await.unwrap();
                        verify_consistency(a.size, b.size, &a.root, &b.root, &hashes(&proof.hashes)).unwrap();
                    }
                }
            }
            let total: usize = batches.iter().map(|(_, n)| n).sum();
            assert_eq!(receipts.len(), total);
            let outcome = verify_log(&*log, &log.verifier(), |_, _| {}).await.unwrap();
            assert!(outcome.is_intact(), "{:?}", outcome.findings);
        });
    }
}

/// Waits until the derived index covers `entries` log rows.
async fn wait_indexed(db: &std::path::Path, entries: i64) {
    let index = db.with_file_name("audit.index.db");
    for _ in 0..500 {
        if let Ok(conn) = rusqlite::Connection::open(&index) {
            let up_to: Result<i64, _> = conn.query_row("SELECT up_to FROM indexed", [], |r| r.get(0));
            if up_to.is_ok_and(|n| n >= entries) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the index never caught up with {entries} entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_indexed_entries_and_the_unindexed_tail_and_the_index_rebuilds() {
    use custody_audit::EventQuery;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let acme = ws("acme");
    let seqs = |page: custody_audit::EventPage| page.events.iter().map(|e| e.entry.seq).collect::<Vec<_>>();
    let by = |f: &dyn Fn(&mut EventQuery)| {
        let mut q = EventQuery { workspace: Some(acme.clone()), limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    {
        let log = open(&path);
        log.append((0..8).map(|n| sample_event(&acme, n)).collect()).await.unwrap();
        wait_indexed(&path, 8).await;
        // Entries 8..12 are committed but (for a moment at least) beyond the index's watermark.
        log.append((8..12).map(|n| sample_event(&acme, n)).collect()).await.unwrap();
        assert_eq!(seqs(log.query(by(&|q| q.action_id = Some("act-9".into()))).await.unwrap()), vec![9]);
        assert_eq!(seqs(log.query(by(&|q| q.action_id = Some("act-3".into()))).await.unwrap()), vec![3]);
        assert_eq!(seqs(log.query(by(&|q| q.principal = Some("agent:1".into()))).await.unwrap()), vec![1, 5, 9]);
        let page = log
            .query(by(&|q| {
                q.resource_id = Some("outbound/10".into());
                q.resource_type = Some("email".into());
            }))
            .await
            .unwrap();
        assert_eq!(seqs(page), vec![10]);
        wait_indexed(&path, 12).await;
        let page = log
            .query(by(&|q| {
                q.principal = Some("agent:2".into());
                q.since = Some(custody_model::Timestamp::parse("2026-12-01T10:05:00Z").unwrap());
            }))
            .await
            .unwrap();
        assert_eq!(seqs(page), vec![6, 10], "principal + time through the index");
        // Paging through an indexed filter keeps order and loses nothing.
        let first = log
            .query(by(&|q| {
                q.principal = Some("agent:0".into());
                q.limit = 2;
            }))
            .await
            .unwrap();
        let after = first.next_cursor.clone();
        assert_eq!(seqs(first), vec![0, 4]);
        let rest = log
            .query(by(&|q| {
                q.principal = Some("agent:0".into());
                q.limit = 2;
                q.after = after.clone();
            }))
            .await
            .unwrap();
        assert_eq!(seqs(rest), vec![8]);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The index is derived data: without it the log rebuilds it on open.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.with_file_name("audit.index.db").display()));
    }
    let log = open(&path);
    wait_indexed(&path, 12).await;
    assert_eq!(seqs(log.query(by(&|q| q.action_id = Some("act-11".into()))).await.unwrap()), vec![11]);
}
