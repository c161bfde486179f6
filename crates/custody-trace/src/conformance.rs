//! The conformance suite every [`TraceStore`] backend runs.
//!
//! A backend's tests expand it with one line:
//!
//! ```text
//! custody_trace::trace_store_conformance!(|dir: std::path::PathBuf| async move { open(dir) });
//! ```
//!
//! where the closure opens the store kept under `dir` (a temporary directory
//! the suite owns; a server backend may ignore it, as long as opening again
//! reaches the same data). Every check works in workspaces of its own.

use std::path::PathBuf;
use std::sync::Arc;

use custody_model::{RecordKind, RecordStatus, Timestamp, TraceRecord, WorkspaceName};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::record::StoredRecord;
use crate::store::{RecordCursor, RecordQuery, TraceStore, UsageKey, UsageQuery};

/// Expands the suite into `#[tokio::test]`s over the store that `$open` opens.
#[macro_export]
macro_rules! trace_store_conformance {
    ($open:expr) => {
        mod trace_store_conformance {
            use super::*;
            $crate::trace_store_conformance!(@case $open, records_read_back_exactly_as_sent);
            $crate::trace_store_conformance!(@case $open, replayed_batches_are_stored_once);
            $crate::trace_store_conformance!(@case $open, searches_filter_and_page);
            $crate::trace_store_conformance!(@case $open, the_swarm_tree_and_usage_add_up);
            $crate::trace_store_conformance!(@case $open, workspaces_do_not_see_each_other);
            $crate::trace_store_conformance!(@case $open, acknowledged_records_survive_a_reopen);
        }
    };
    (@case $open:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = $crate::conformance::scratch_dir();
            $crate::conformance::$name(dir.path().to_path_buf(), $open).await;
        }
    };
}

/// A temporary directory for one case.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"))
}

/// A workspace name no other test uses.
pub fn unique_workspace(prefix: &str) -> WorkspaceName {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    WorkspaceName::parse(&format!("{prefix}-{}", &suffix[suffix.len() - 8..]))
        .unwrap_or_else(|_| WorkspaceName::system())
}

/// The record of the issue's example, varied by `n`.
pub fn sample_record(ws: &WorkspaceName, n: u64) -> TraceRecord {
    let second = n % 60;
    TraceRecord::from_value(json!({
        "workspace": ws.as_str(), "classification": if n.is_multiple_of(2) { Value::from("confidential") } else { Value::Null },
        "kind": "model_call", "session_id": format!("sess-{}", n % 3), "process_id": format!("proc-{}", n % 5),
        "agent_name": format!("agent-{}", n % 5),
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": format!("{:016x}", n + 1),
        "provider": "openai", "model": if n.is_multiple_of(4) { "gpt-4o-mini" } else { "gpt-4o" },
        "model_version": "gpt-4o-2024-08-06",
        "routing": {"router": "default", "reason": "primary", "region": "eu-west"},
        "input": [{"role": "system", "content": "You are a support assistant"},
                  {"role": "user", "content": format!("Draft reply {n}")}],
        "retrieved_context": [{"source": "crm://customers/42/history", "content": "Order 1182 arrived damaged", "score": 0.82}],
        "output": [{"role": "assistant", "content": [{"type": "text", "text": "Dear customer, ..."}]}],
        "tool_calls": [{"id": "call_1", "name": "send_email", "arguments": {"to": "customer@example.com", "n": n}}],
        "usage": {"input_tokens": 800 + n, "output_tokens": 160 + n, "cache_read_tokens": n % 7, "reasoning_tokens": 0},
        "started_at": format!("2026-12-01T09:{:02}:{second:02}.12Z", n / 60 % 60),
        "ended_at": format!("2026-12-01T10:{:02}:{second:02}.87Z", n / 60 % 60),
        "time_to_first_token_ms": 240, "status": if n % 10 == 9 { "error" } else { "ok" },
        "error": if n % 10 == 9 { Value::from("rate limited") } else { Value::Null },
        "action_ids": [format!("act-{n}")], "attributes": {"temperature": 0.2, "seed": n}
    }))
    .unwrap_or_else(|e| panic!("sample record {n}: {e}"))
}

/// How a backend's test opens its store over a directory: any
/// `Fn(PathBuf) -> impl Future<Output = Arc<impl TraceStore>>`.
pub trait Opener: Fn(PathBuf) -> Self::Opening {
    type Opening: std::future::Future<Output = Arc<Self::Store>>;
    type Store: TraceStore + ?Sized;
}

impl<F, Fut, S> Opener for F
where
    F: Fn(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Arc<S>>,
    S: TraceStore + ?Sized,
{
    type Opening = Fut;
    type Store = S;
}

async fn open<O: Opener>(dir: &std::path::Path, opener: &O) -> Arc<O::Store> {
    opener(dir.to_path_buf()).await
}

fn query(ws: &WorkspaceName, limit: usize) -> RecordQuery {
    RecordQuery { workspace: Some(ws.clone()), limit, ..RecordQuery::default() }
}

pub async fn records_read_back_exactly_as_sent(dir: PathBuf, opener: impl Opener) {
    let store = open(&dir, &opener).await;
    let ws = unique_workspace("exact");
    let sent: Vec<StoredRecord> = (0..4).map(|n| StoredRecord::prepare(sample_record(&ws, n))).collect();
    let mut bare = sample_record(&ws, 4);
    bare.usage = None;
    bare.ended_at = None;
    bare.routing = None;
    bare.input.clear();
    bare.attributes = None;
    let mut sent = sent;
    sent.push(StoredRecord::prepare(bare));
    assert_eq!(store.append(sent.clone()).await.expect("append"), 5);
    for stored in &sent {
        let row = store.record(&ws, stored.id()).await.expect("get").expect("the record is there");
        assert_eq!(row.record, stored.record, "the record reads back field for field");
        assert_eq!(row.content_hash, hex::encode(stored.content_hash));
        let canonical = stored.canonical();
        assert_eq!(hex::encode(Sha256::digest(&canonical)), row.content_hash, "the hash covers the canonical form");
        assert_eq!(row.latency_ms, stored.record.latency_ms());
        assert_eq!(row.process_path, vec![stored.record.process_id.clone()]);
    }
    let missing = "0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11";
    assert!(store.record(&ws, missing).await.expect("get").is_none());
    store.close().await.expect("close");
}

pub async fn replayed_batches_are_stored_once(dir: PathBuf, opener: impl Opener) {
    let store = open(&dir, &opener).await;
    let ws = unique_workspace("replay");
    let batch: Vec<StoredRecord> = (0..20).map(|n| StoredRecord::prepare(sample_record(&ws, n))).collect();
    assert_eq!(store.append(batch.clone()).await.expect("append"), 20);
    assert_eq!(store.append(batch.clone()).await.expect("replay"), 0, "a replay adds nothing");
    let mut doubled = batch[..3].to_vec();
    doubled.extend(batch[..3].iter().cloned());
    assert_eq!(store.append(doubled).await.expect("repeats within a batch"), 0);
    let page = store.records(&query(&ws, 100)).await.expect("search");
    assert_eq!(page.records.len(), 20);
    store.close().await.expect("close");
}

pub async fn searches_filter_and_page(dir: PathBuf, opener: impl Opener) {
    let store = open(&dir, &opener).await;
    let ws = unique_workspace("search");
    let records: Vec<StoredRecord> = (0..60).map(|n| StoredRecord::prepare(sample_record(&ws, n))).collect();
    // In several batches, so that a backend may hold them in different places.
    for chunk in records.chunks(25) {
        store.append(chunk.to_vec()).await.expect("append");
    }
    let count = |q: RecordQuery| {
        let store = store.clone();
        async move { store.records(&q).await.expect("search").records }
    };
    let all = count(query(&ws, 1000)).await;
    assert_eq!(all.len(), 60);
    let order: Vec<(Timestamp, String)> = all.iter().map(|r| (r.record.started_at, r.id().to_owned())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "ordered by (started_at, id)");
    let expect = |keep: &dyn Fn(&TraceRecord) -> bool| records.iter().filter(|r| keep(&r.record)).count();
    let q = RecordQuery { session_id: Some("sess-1".into()), ..query(&ws, 1000) };
    assert_eq!(count(q).await.len(), expect(&|r| r.session_id == "sess-1"));
    let q = RecordQuery { process_id: Some("proc-2".into()), ..query(&ws, 1000) };
    assert_eq!(count(q).await.len(), expect(&|r| r.process_id == "proc-2"));
    let q = RecordQuery { agent_name: Some("agent-3".into()), model: Some("gpt-4o".into()), ..query(&ws, 1000) };
    let found = count(q).await;
    assert_eq!(
        found.len(),
        expect(&|r| r.agent_name.as_deref() == Some("agent-3") && r.model.as_deref() == Some("gpt-4o"))
    );
    assert!(found.iter().all(|r| r.record.model.as_deref() == Some("gpt-4o")));
    let q = RecordQuery { status: Some(RecordStatus::Error), ..query(&ws, 1000) };
    assert_eq!(count(q).await.len(), 6);
    let q = RecordQuery { kind: Some(RecordKind::ToolCall), ..query(&ws, 1000) };
    assert!(count(q).await.is_empty());
    let q = RecordQuery { action_id: Some("act-17".into()), ..query(&ws, 1000) };
    let named = count(q).await;
    assert_eq!(named.len(), 1, "one record names act-17");
    assert_eq!(named[0].record.action_ids, ["act-17"]);
    let q = RecordQuery { action_id: Some("act-1".into()), ..query(&ws, 1000) };
    assert_eq!(count(q).await.len(), 1, "`act-1` matches whole ids, not prefixes");
    let since = records[10].record.started_at;
    let until = records[20].record.started_at;
    let q = RecordQuery { since: Some(since), until: Some(until), ..query(&ws, 1000) };
    assert_eq!(count(q).await.len(), expect(&|r| r.started_at >= since && r.started_at < until));
    // Pages of 7 walk every record once.
    let mut seen = Vec::new();
    let mut after: Option<RecordCursor> = None;
    loop {
        let page = store.records(&RecordQuery { after: after.clone(), ..query(&ws, 7) }).await.expect("page");
        assert!(page.records.len() <= 7);
        seen.extend(page.records.iter().map(|r| r.id().to_owned()));
        match page.next_cursor {
            Some(cursor) => after = Some(RecordCursor::decode(&cursor).expect("a cursor the store gave out")),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|r| r.id().to_owned()).collect::<Vec<_>>());
    store.close().await.expect("close");
}

/// The swarm of the acceptance test: a root agent spawning three helpers, one
/// of which spawns two more; every process makes calls.
pub fn swarm(ws: &WorkspaceName, session: &str) -> Vec<TraceRecord> {
    let processes = [
        ("root", None, "support"),
        ("crm", Some("root"), "crm-helper"),
        ("drafter", Some("root"), "drafter"),
        ("research", Some("root"), "researcher"),
        ("web", Some("research"), "web-searcher"),
        ("summarizer", Some("research"), "summarizer"),
    ];
    let mut records = Vec::new();
    for (p, (process, parent, agent)) in processes.iter().enumerate() {
        let p = p as u64;
        records.push(
            TraceRecord::from_value(json!({"workspace": ws.as_str(), "kind": "agent", "session_id": session,
                "process_id": process, "parent_process_id": parent, "agent_name": agent,
                "started_at": format!("2026-12-01T10:00:0{p}Z")}))
            .unwrap_or_else(|e| panic!("{e}")),
        );
        for c in 0..=p {
            let kind = if c == 1 { "tool_call" } else { "model_call" };
            records.push(
                TraceRecord::from_value(json!({"workspace": ws.as_str(), "kind": kind, "session_id": session,
                    "process_id": process, "parent_process_id": parent, "agent_name": agent,
                    "provider": "anthropic", "model": if p.is_multiple_of(2) { "claude-sonnet-4" } else { "claude-haiku-4" },
                    "usage": {"input_tokens": 100 * (p + 1) + c, "output_tokens": 10 * (p + 1)},
                    "started_at": format!("2026-12-01T10:01:{:02}Z", p * 6 + c),
                    "ended_at": format!("2026-12-01T10:02:{:02}Z", p * 6 + c),
                    "status": if p == 4 && c == 0 { "error" } else { "ok" }}))
                .unwrap_or_else(|e| panic!("{e}")),
            );
        }
    }
    records
}

pub async fn the_swarm_tree_and_usage_add_up(dir: PathBuf, opener: impl Opener) {
    let store = open(&dir, &opener).await;
    let ws = unique_workspace("swarm");
    let mut records: Vec<StoredRecord> = swarm(&ws, "sess-swarm").into_iter().map(StoredRecord::prepare).collect();
    // Children before parents: the tree does not depend on arrival order.
    records.reverse();
    store.append(records[..10].to_vec()).await.expect("append");
    store.append(records[10..].to_vec()).await.expect("append");
    let tree = store.session_tree(&ws, "sess-swarm").await.expect("tree").expect("the session exists");
    assert_eq!(tree.processes.len(), 1);
    let root = &tree.processes[0];
    assert_eq!(root.process_id, "root");
    assert_eq!(root.agent_name.as_deref(), Some("support"));
    let children: Vec<&str> = root.children.iter().map(|c| c.process_id.as_str()).collect();
    assert_eq!(children, ["crm", "drafter", "research"]);
    let research = &root.children[2];
    let grandchildren: Vec<&str> = research.children.iter().map(|c| c.process_id.as_str()).collect();
    assert_eq!(grandchildren, ["summarizer", "web"]);
    assert_eq!(research.children[1].path, ["root", "research", "web"]);
    // Process p makes p + 1 calls: 1 + 2 + ... + 6 = 21.
    assert_eq!(tree.total.calls, 21);
    assert_eq!(root.subtree, tree.total);
    assert_eq!(research.subtree.calls, 4 + 5 + 6);
    assert_eq!(research.subtree.errors, 1);
    assert_eq!(research.own.calls, 4);
    let web = &research.children[1];
    assert_eq!(web.own.input_tokens, 500 * 5 + 10, "100·(p+1)+c over c in 0..=4");
    assert_eq!(web.calls.len(), 5 + 1, "its calls and its agent record");
    let own_sum: u64 = tree.walk().iter().map(|n| n.own.input_tokens).sum();
    assert_eq!(own_sum, tree.total.input_tokens);
    let paths = store.records(&RecordQuery { process_id: Some("web".into()), ..query(&ws, 10) }).await.expect("rows");
    assert!(paths.records.iter().all(|r| r.process_path == ["root", "research", "web"]), "{paths:?}");
    let usage = store
        .usage(&UsageQuery {
            workspace: Some(ws.clone()),
            group_by: vec![UsageKey::AgentName],
            session_id: Some("sess-swarm".into()),
            ..UsageQuery::default()
        })
        .await
        .expect("usage");
    assert_eq!(usage.len(), 6, "one group per agent: {usage:?}");
    assert_eq!(usage.iter().map(|u| u.calls).sum::<u64>(), tree.total.calls);
    assert_eq!(usage.iter().map(|u| u.input_tokens).sum::<u64>(), tree.total.input_tokens);
    assert_eq!(usage.iter().map(|u| u.output_tokens).sum::<u64>(), tree.total.output_tokens);
    assert_eq!(usage.iter().map(|u| u.errors).sum::<u64>(), tree.total.errors);
    let web_usage = usage.iter().find(|u| u.group == [Some("web-searcher".to_owned())]).expect("web-searcher");
    assert_eq!(web_usage.calls, 5);
    assert_eq!(web_usage.latency_p50_ms, Some(60_000.0));
    let by_model = store
        .usage(&UsageQuery {
            workspace: Some(ws.clone()),
            group_by: vec![UsageKey::Provider, UsageKey::Model, UsageKey::Day],
            ..UsageQuery::default()
        })
        .await
        .expect("usage");
    let groups: Vec<Vec<Option<String>>> = by_model.iter().map(|u| u.group.clone()).collect();
    let group = |m: &str| vec![Some("anthropic".to_owned()), Some(m.to_owned()), Some("2026-12-01".to_owned())];
    assert_eq!(groups, [group("claude-haiku-4"), group("claude-sonnet-4")]);
    assert!(store.session_tree(&ws, "no-such-session").await.expect("tree").is_none());
    store.close().await.expect("close");
}

pub async fn workspaces_do_not_see_each_other(dir: PathBuf, opener: impl Opener) {
    let store = open(&dir, &opener).await;
    let (a, b) = (unique_workspace("iso-a"), unique_workspace("iso-b"));
    let ra = StoredRecord::prepare(sample_record(&a, 1));
    let rb = StoredRecord::prepare(sample_record(&b, 1));
    store.append(vec![ra.clone(), rb.clone()]).await.expect("append");
    assert!(store.record(&b, ra.id()).await.expect("get").is_none());
    let page = store.records(&query(&a, 10)).await.expect("search");
    assert_eq!(page.records.iter().map(|r| r.id()).collect::<Vec<_>>(), [ra.id()]);
    assert!(store.session_tree(&b, &ra.record.session_id).await.expect("tree").is_some_and(|t| t.total.calls == 1));
    store.close().await.expect("close");
}

pub async fn acknowledged_records_survive_a_reopen(dir: PathBuf, opener: impl Opener) {
    let ws = unique_workspace("reopen");
    let records: Vec<StoredRecord> = (0..30).map(|n| StoredRecord::prepare(sample_record(&ws, n))).collect();
    {
        let store = open(&dir, &opener).await;
        store.append(records[..15].to_vec()).await.expect("append");
        store.close().await.expect("close");
    }
    let store = open(&dir, &opener).await;
    store.health().await.expect("healthy after a reopen");
    assert_eq!(store.append(records.clone()).await.expect("append"), 15, "the first half is known");
    let page = store.records(&query(&ws, 100)).await.expect("search");
    assert_eq!(page.records.len(), 30);
    store.close().await.expect("close");
}
