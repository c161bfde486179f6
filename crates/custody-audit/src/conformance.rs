//! The conformance suite every [`AuditLog`] backend runs.
//!
//! A backend's tests expand it with one line:
//!
//! ```text
//! custody_audit::audit_log_conformance!(|| async { (log, guard) });
//! ```
//!
//! where the closure opens a fresh log and returns it with anything that must
//! live as long as the test (a temporary directory). Every check works in
//! workspaces of its own, so a shared database can serve all of them.

use std::collections::HashSet;

use custody_ledger::merkle::{hash_leaf, verify_consistency, verify_inclusion};
use custody_ledger::{Checkpoint, Hash};
use custody_model::{AuditEvent, Decision, EventKind, Receipt, Timestamp, WorkspaceName, entry_bytes};
use serde_json::json;

use crate::verify::verify_log;
use crate::{AuditLog, EventQuery};

/// Expands the suite into `#[tokio::test]`s over the log that `$make` opens.
#[macro_export]
macro_rules! audit_log_conformance {
    ($make:expr) => {
        mod audit_log_conformance {
            use super::*;
            $crate::audit_log_conformance!(@case $make, receipts_are_durable_signed_and_verifiable);
            $crate::audit_log_conformance!(@case $make, seqs_are_dense_per_workspace_under_concurrency);
            $crate::audit_log_conformance!(@case $make, queries_filter_and_page);
            $crate::audit_log_conformance!(@case $make, proofs_verify_against_every_checkpoint);
            $crate::audit_log_conformance!(@case $make, proofs_outside_the_log_are_refused);
            $crate::audit_log_conformance!(@case $make, the_whole_log_verifies);
        }
    };
    (@case $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (log, _guard) = ($make)().await;
            $crate::conformance::$name(&*log).await;
        }
    };
}

/// A workspace name no other test uses.
pub fn unique_workspace(prefix: &str) -> WorkspaceName {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap_or_default();
    WorkspaceName::parse(&format!("{prefix}-{}", hex::encode(bytes))).unwrap_or_else(|_| WorkspaceName::system())
}

/// An event for tests: `n` varies the principal, action and decision.
pub fn sample_event(ws: &WorkspaceName, n: usize) -> AuditEvent {
    let decision = if n.is_multiple_of(3) { "deny" } else { "allow" };
    AuditEvent::from_value(json!({
        "workspace": ws.as_str(),
        "kind": "authz.decision",
        "principal": {"type": "agent", "id": format!("agent:{}", n % 4)},
        "action": if n.is_multiple_of(2) { "email.send" } else { "crm.read" },
        "resource": {"type": "email", "id": format!("outbound/{n}")},
        "decision": decision,
        "action_id": format!("act-{n}"),
        "occurred_at": format!("2026-12-01T10:{:02}:00Z", n % 60),
        "attributes": {"n": n},
    }))
    .expect("sample events are valid")
}

/// Checks a receipt against the event it is for and the log's key.
pub fn check_receipt(log: &dyn AuditLog, event: &AuditEvent, receipt: &Receipt) -> Checkpoint {
    let checkpoint = Checkpoint::open(&receipt.checkpoint, &log.verifier()).expect("checkpoint signature verifies");
    assert_eq!(checkpoint.size, receipt.tree_size);
    assert!(checkpoint.origin.ends_with(&format!("/{}", receipt.workspace)), "{}", checkpoint.origin);
    assert!(receipt.seq < receipt.tree_size);
    let leaf = hash_leaf(&entry_bytes(&event.canonical(), receipt.seq, &receipt.recorded_at));
    assert_eq!(hex::encode(leaf), receipt.leaf_hash, "the leaf hash covers the event as sent");
    checkpoint
}

fn hashes(hex_list: &[String]) -> Vec<Hash> {
    hex_list
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| Hash::try_from(b.as_slice()).ok()).expect("proof hashes are hex"))
        .collect()
}

/// Checks the inclusion of `receipt` in its own checkpoint through the log's proof.
pub async fn check_inclusion(log: &dyn AuditLog, receipt: &Receipt, checkpoint: &Checkpoint) {
    let ws = WorkspaceName::parse(&receipt.workspace).expect("receipt workspace");
    let proof = log.inclusion_proof(&ws, receipt.seq, receipt.tree_size).await.expect("inclusion proof");
    let leaf = hashes(std::slice::from_ref(&receipt.leaf_hash))[0];
    verify_inclusion(&leaf, receipt.seq, receipt.tree_size, &hashes(&proof.hashes), &checkpoint.root)
        .expect("inclusion proof verifies against the receipt's checkpoint");
}

pub async fn receipts_are_durable_signed_and_verifiable(log: &dyn AuditLog) {
    let ws = unique_workspace("conf-receipt");
    let events: Vec<AuditEvent> = (0..3).map(|n| sample_event(&ws, n)).collect();
    let before = Timestamp::now();
    let receipts = log.append(events.clone()).await.expect("append");
    assert_eq!(receipts.len(), 3);
    for (n, (event, receipt)) in events.iter().zip(&receipts).enumerate() {
        assert_eq!((receipt.workspace.as_str(), receipt.seq, receipt.tree_size), (ws.as_str(), n as u64, 3));
        assert!(receipt.recorded_at >= before);
        let checkpoint = check_receipt(log, event, receipt);
        check_inclusion(log, receipt, &checkpoint).await;
    }
    let latest = log.latest_checkpoint(&ws).await.expect("checkpoint").expect("a checkpoint exists");
    assert_eq!(latest.tree_size, 3);
    assert_eq!(latest.note, receipts[2].checkpoint);
    // The stored event is the event as sent, with the fields the log added.
    let page = log.query(EventQuery { workspace: Some(ws.clone()), limit: 10, ..Default::default() }).await.unwrap();
    let shown = page.events[1].entry.to_api_json(&hex::encode(page.events[1].leaf_hash));
    let mut expected = serde_json::to_value(&events[1]).unwrap();
    expected["seq"] = json!(1);
    expected["recorded_at"] = json!(receipts[1].recorded_at.to_string());
    expected["leaf_hash"] = json!(receipts[1].leaf_hash);
    assert_eq!(shown, expected);
}

pub async fn seqs_are_dense_per_workspace_under_concurrency(log: &dyn AuditLog) {
    let spaces = [unique_workspace("conf-dense-a"), unique_workspace("conf-dense-b")];
    let mut tasks = Vec::new();
    for task in 0..24usize {
        let ws = spaces[task % 2].clone();
        let events: Vec<AuditEvent> = (0..1 + task % 3).map(|n| sample_event(&ws, task * 10 + n)).collect();
        tasks.push(async move { (events.clone(), log.append(events).await) });
    }
    let results = futures_join_all(tasks).await;
    for ws in &spaces {
        let mut seqs = HashSet::new();
        for (events, result) in &results {
            let receipts = result.as_ref().expect("append");
            for (event, receipt) in events.iter().zip(receipts) {
                if receipt.workspace == ws.as_str() {
                    check_receipt(log, event, receipt);
                    assert!(seqs.insert(receipt.seq), "seq {} given twice", receipt.seq);
                }
            }
        }
        let n = seqs.len() as u64;
        assert_eq!(seqs, (0..n).collect::<HashSet<_>>(), "seqs of {ws} are dense from 0");
        // The events of one call are adjacent and in order.
        for (_, result) in &results {
            let receipts = result.as_ref().unwrap();
            for pair in receipts.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq + 1);
            }
        }
    }
}

/// Runs futures concurrently on the current task, keeping their order.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => {
                        *output = Some(out);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub async fn queries_filter_and_page(log: &dyn AuditLog) {
    let ws = unique_workspace("conf-query");
    let other = unique_workspace("conf-query-other");
    let events: Vec<AuditEvent> = (0..12).map(|n| sample_event(&ws, n)).collect();
    log.append(events).await.expect("append");
    log.append(vec![sample_event(&other, 0)]).await.expect("append other");
    let q = |f: &dyn Fn(&mut EventQuery)| {
        let mut query = EventQuery { workspace: Some(ws.clone()), limit: 100, ..Default::default() };
        f(&mut query);
        query
    };
    let seqs = |page: crate::EventPage| page.events.iter().map(|e| e.entry.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.query(q(&|_| {})).await.unwrap()), (0..12).collect::<Vec<_>>());
    assert_eq!(seqs(log.query(q(&|q| q.principal = Some("agent:1".into()))).await.unwrap()), vec![1, 5, 9]);
    assert_eq!(seqs(log.query(q(&|q| q.action = Some("crm.read".into()))).await.unwrap()), vec![1, 3, 5, 7, 9, 11]);
    assert_eq!(seqs(log.query(q(&|q| q.decision = Some(Decision::Deny))).await.unwrap()), vec![0, 3, 6, 9]);
    assert_eq!(seqs(log.query(q(&|q| q.kind = Some(EventKind::RoleGranted))).await.unwrap()), Vec::<u64>::new());
    assert_eq!(
        seqs(
            log.query(q(&|q| {
                q.resource_type = Some("email".into());
                q.resource_id = Some("outbound/4".into());
            }))
            .await
            .unwrap()
        ),
        vec![4]
    );
    assert_eq!(seqs(log.query(q(&|q| q.action_id = Some("act-7".into()))).await.unwrap()), vec![7]);
    let at = |m: u32| Timestamp::parse(&format!("2026-12-01T10:{m:02}:00Z")).unwrap();
    assert_eq!(
        seqs(
            log.query(q(&|q| {
                q.since = Some(at(3));
                q.until = Some(at(6));
            }))
            .await
            .unwrap()
        ),
        vec![3, 4, 5]
    );
    // Paging: five at a time, no entry twice, none lost, the last page has no cursor.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = log
            .query(q(&|q| {
                q.limit = 5;
                q.after = after.clone();
            }))
            .await
            .unwrap();
        let next = page.next_cursor.clone();
        seen.extend(seqs(page));
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    // Without a workspace filter, another workspace's events are visible too.
    let all = log.query(EventQuery { limit: 10_000, ..Default::default() }).await.unwrap();
    assert!(all.events.iter().any(|e| e.entry.event["workspace"] == other.as_str()));
}

pub async fn proofs_verify_against_every_checkpoint(log: &dyn AuditLog) {
    let ws = unique_workspace("conf-proofs");
    for batch in 0..6usize {
        let events: Vec<AuditEvent> = (0..1 + batch).map(|n| sample_event(&ws, batch * 10 + n)).collect();
        log.append(events).await.expect("append");
    }
    let checkpoints: Vec<Checkpoint> = log
        .checkpoints(&ws)
        .await
        .unwrap()
        .iter()
        .map(|c| Checkpoint::open(&c.note, &log.verifier()).expect("checkpoint verifies"))
        .collect();
    assert_eq!(checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(), vec![1, 3, 6, 10, 15, 21]);
    let entries = log.entries(&ws, 0, 100).await.unwrap();
    for cp in &checkpoints {
        for entry in entries.iter().filter(|e| e.seq < cp.size) {
            let proof = log.inclusion_proof(&ws, entry.seq, cp.size).await.unwrap();
            verify_inclusion(&entry.leaf_hash, entry.seq, cp.size, &hashes(&proof.hashes), &cp.root)
                .expect("inclusion verifies");
        }
    }
    for a in &checkpoints {
        for b in checkpoints.iter().filter(|b| b.size >= a.size) {
            let proof = log.consistency_proof(&ws, a.size, b.size).await.unwrap();
            verify_consistency(a.size, b.size, &a.root, &b.root, &hashes(&proof.hashes)).expect("consistency verifies");
        }
    }
}

pub async fn proofs_outside_the_log_are_refused(log: &dyn AuditLog) {
    let ws = unique_workspace("conf-range");
    log.append(vec![sample_event(&ws, 0), sample_event(&ws, 1)]).await.unwrap();
    assert!(log.inclusion_proof(&ws, 2, 2).await.is_err(), "seq beyond the tree");
    assert!(log.inclusion_proof(&ws, 0, 3).await.is_err(), "tree larger than the log");
    assert!(log.consistency_proof(&ws, 2, 1).await.is_err(), "sizes out of order");
    assert!(log.consistency_proof(&ws, 1, 5).await.is_err(), "second size beyond the log");
    assert!(log.latest_checkpoint(&unique_workspace("conf-none")).await.unwrap().is_none());
}

pub async fn the_whole_log_verifies(log: &dyn AuditLog) {
    let ws = unique_workspace("conf-verify");
    for n in 0..5 {
        log.append(vec![sample_event(&ws, n), sample_event(&ws, n + 100)]).await.unwrap();
    }
    let outcome = verify_log(log, &log.verifier(), |_, _| {}).await.expect("verification runs");
    assert!(outcome.is_intact(), "{:?}", outcome.findings);
    let summary = outcome.workspaces.iter().find(|w| w.workspace == ws.as_str()).expect("workspace verified");
    assert_eq!((summary.entries, summary.checkpoints), (10, 5));
}
