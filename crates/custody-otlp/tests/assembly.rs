//! Swarm attribution whatever the arrival order: the assembly window in memory
//! under every order, split and duplication proptest finds, and the durable
//! window in front of a real trace store across a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use custody_model::{RecordKind, TraceRecord, WorkspaceName};
use custody_otlp::assembly::resolve_batches;
use custody_otlp::mapping::{Origin, SpanEntry, map_span};
use custody_otlp::{Assembler, AssemblyOptions};
use custody_trace::{IngestOptions, RecordQuery, TraceStore, open_trace_store};
use opentelemetry_proto::tonic::trace::v1::Span;
use proptest::prelude::*;

fn entries(spans: &[Span]) -> Vec<SpanEntry> {
    let workspace = WorkspaceName::parse("acme").unwrap();
    let origin = Origin { workspace: &workspace, classification: None, service_name: None, scope: None };
    spans.iter().map(|s| map_span(s, &origin).unwrap()).collect()
}

fn hex(n: u8) -> String {
    hex::encode(span_id(n))
}

/// (session, process, parent process, agent name) by span number, as the
/// swarm of `common::swarm` must be attributed.
fn expected() -> BTreeMap<String, (String, String, Option<String>, Option<String>)> {
    let agents: [(u8, Option<u8>, &str); 6] = [
        (1, None, "planner"),
        (2, Some(1), "researcher"),
        (3, Some(1), "writer"),
        (4, Some(1), "reviewer"),
        (5, Some(3), "drafter"),
        (6, Some(3), "editor"),
    ];
    let mut out = BTreeMap::new();
    let row = |process: u8| {
        let (_, parent, name) = agents.iter().find(|a| a.0 == process).unwrap();
        ("conv-7".to_owned(), hex(process), parent.map(hex), Some((*name).to_owned()))
    };
    for (n, ..) in agents {
        out.insert(hex(n), row(n));
    }
    for (call, process) in [(11, 1), (12, 2), (13, 3), (14, 4), (15, 5), (16, 6)] {
        out.insert(hex(call), row(process));
    }
    out
}

fn attribution(records: &[TraceRecord]) -> BTreeMap<String, (String, String, Option<String>, Option<String>)> {
    records
        .iter()
        .map(|r| {
            let span = r.span_id.clone().unwrap();
            (span, (r.session_id.clone(), r.process_id.clone(), r.parent_process_id.clone(), r.agent_name.clone()))
        })
        .collect()
}

fn by_id(mut records: Vec<TraceRecord>) -> Vec<TraceRecord> {
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

#[test]
fn all_at_once_the_swarm_is_attributed_to_its_processes() {
    let records = resolve_batches(vec![entries(&swarm())]);
    assert_eq!(records.len(), 12, "six agents and six calls; the HTTP span only links");
    assert_eq!(attribution(&records), expected());
    let calls = records.iter().filter(|r| r.kind == RecordKind::ModelCall).count();
    assert_eq!(calls, 6);
}

#[test]
fn a_span_whose_ancestors_never_arrive_is_attributed_with_what_is_known_when_the_window_ends() {
    // Only helper 5's call and the HTTP span under it: agent 5 never arrives.
    let spans: Vec<Span> = swarm().into_iter().filter(|s| [15, 20].contains(&s.span_id[7])).collect();
    let records = resolve_batches(vec![entries(&spans)]);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.session_id, "4bf92f3577b34da6a3ce929d0e0e4736", "no conversation id known: the trace id");
    assert_eq!(r.process_id, hex(20), "the topmost span that arrived stands for the root");
    assert_eq!(r.parent_process_id, None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any order, any split into batches, any duplicated batch: the same rows.
    #[test]
    fn every_arrival_order_gives_the_same_rows(
        order in Just((0..13usize).collect::<Vec<_>>()).prop_shuffle(),
        cuts in proptest::collection::vec(0..13usize, 0..6),
        duplicate in proptest::option::of(0..13usize),
    ) {
        let all = entries(&swarm());
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let mut batches: Vec<Vec<SpanEntry>> = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([order.len()]) {
            if cut > start {
                batches.push(order[start..cut].iter().map(|&i| all[i].clone()).collect());
                start = cut;
            }
        }
        if let Some(d) = duplicate {
            let again = batches[d % batches.len()].clone();
            batches.push(again);
        }
        let reference = by_id(resolve_batches(vec![all.clone()]));
        let got = by_id(resolve_batches(batches));
        prop_assert_eq!(attribution(&got), expected());
        prop_assert_eq!(got, reference);
    }
}

async fn rows(store: &Arc<dyn TraceStore>) -> Vec<TraceRecord> {
    let query =
        RecordQuery { workspace: Some(WorkspaceName::parse("acme").unwrap()), limit: 1000, ..RecordQuery::default() };
    store.records(&query).await.unwrap().records.into_iter().map(|r| r.record).collect()
}

/// A real trace store and a window directory beside it, in a temporary directory.
fn setup() -> (tempfile::TempDir, Arc<dyn TraceStore>, std::path::PathBuf, AssemblyOptions) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        open_trace_store(&format!("parquet://{}", dir.path().join("traces").display()), IngestOptions::default())
            .unwrap();
    let window = dir.path().join("otlp");
    let options = AssemblyOptions { tick: Duration::from_millis(20), ..AssemblyOptions::default() };
    (dir, store, window, options)
}

/// Children first, a restart while they wait, the parents after it, and a
/// batch delivered twice: every record stored once, attributed as if the
/// spans had come together.
#[tokio::test]
async fn waiting_spans_survive_a_restart_and_are_stored_once() {
    let (_dir, store, window, options) = setup();
    let all = entries(&swarm());
    let (parents, children): (Vec<SpanEntry>, Vec<SpanEntry>) =
        all.into_iter().partition(|e| ["0000000000001001", "0000000000001003"].contains(&e.span_id.as_str()));

    let assembler = Assembler::open(&window, options.clone(), store.clone()).unwrap();
    assembler.admit(children.clone()).await.unwrap();
    assembler.drain().await.unwrap();
    let waiting = assembler.stats();
    assert_eq!(waiting.pending_spans, 10, "every record but agents 1 and 3 waits for one of them: {waiting:?}");
    assert!(rows(&store).await.is_empty(), "nothing is stored before its ancestors are known");
    assembler.close().await.unwrap();
    drop(assembler);

    let assembler = Assembler::open(&window, options, store.clone()).unwrap();
    assert_eq!(assembler.stats().pending_spans, 10, "the waiting spans were replayed from the window's log");
    assembler.admit(parents.clone()).await.unwrap();
    assembler.admit(children).await.unwrap();
    assembler.admit(parents).await.unwrap();
    assembler.drain().await.unwrap();
    assert_eq!(assembler.stats().pending_spans, 0);
    let stored = rows(&store).await;
    assert_eq!(stored.len(), 12, "each record once");
    assert_eq!(attribution(&stored), expected());
    assert_eq!(by_id(stored), by_id(resolve_batches(vec![entries(&swarm())])));
    assembler.close().await.unwrap();
    store.close().await.unwrap();
}

fn agents_and_the_rest(all: Vec<SpanEntry>) -> (Vec<SpanEntry>, Vec<SpanEntry>) {
    all.into_iter().partition(|e| e.record.as_ref().is_some_and(|r| r.kind == RecordKind::Agent))
}

/// Agents first, in one batch: each is resolved on arrival and stored at
/// once, and the window keeps only its links; after a restart, the calls that
/// come later still find them.
#[tokio::test]
async fn spans_resolved_on_arrival_are_stored_at_once_and_their_links_survive_a_restart() {
    let (_dir, store, window, options) = setup();
    let (agents, calls) = agents_and_the_rest(entries(&swarm()));
    assert_eq!(agents.len(), 6);

    let assembler = Assembler::open(&window, options.clone(), store.clone()).unwrap();
    assembler.admit(agents).await.unwrap();
    // No drain: the records are in the store when `admit` returns.
    assert_eq!(rows(&store).await.len(), 6, "the agents are stored on arrival");
    assert_eq!(assembler.stats().pending_spans, 0);
    assembler.close().await.unwrap();
    drop(assembler);

    let assembler = Assembler::open(&window, options, store.clone()).unwrap();
    assert_eq!(assembler.stats().tracked_spans, 6, "the agents' links were replayed");
    assembler.admit(calls).await.unwrap();
    assert_eq!(assembler.stats().pending_spans, 0, "every call found its agent");
    let counters = &assembler.counters;
    assert_eq!(counters.resolved_complete.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert_eq!(counters.resolved_timeout.load(std::sync::atomic::Ordering::Relaxed), 0);
    let stored = rows(&store).await;
    assert_eq!(attribution(&stored), expected());
    assert_eq!(by_id(stored), by_id(resolve_batches(vec![entries(&swarm())])));
    assembler.close().await.unwrap();
    store.close().await.unwrap();
}

/// A trace store that refuses appends while `refusing` is set.
struct Refusing {
    inner: Arc<dyn TraceStore>,
    refusing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl TraceStore for Refusing {
    async fn append_prepared(&self, records: Vec<custody_trace::Prepared>) -> Result<usize, custody_trace::TraceError> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(custody_trace::TraceError::Unavailable("refusing, as the test asks".into()));
        }
        self.inner.append_prepared(records).await
    }
    async fn get(
        &self,
        w: &WorkspaceName,
        id: &str,
    ) -> Result<Option<custody_trace::TraceRow>, custody_trace::TraceError> {
        self.inner.get(w, id).await
    }
    async fn search(&self, q: &RecordQuery) -> Result<custody_trace::RecordPage, custody_trace::TraceError> {
        self.inner.search(q).await
    }
    async fn session_calls(
        &self,
        w: &WorkspaceName,
        sessions: &[String],
    ) -> Result<Vec<(String, custody_trace::CallSummary)>, custody_trace::TraceError> {
        self.inner.session_calls(w, sessions).await
    }
    async fn usage(
        &self,
        q: &custody_trace::UsageQuery,
    ) -> Result<Vec<custody_trace::UsageRow>, custody_trace::TraceError> {
        self.inner.usage(q).await
    }
    async fn health(&self) -> Result<(), custody_trace::TraceError> {
        self.inner.health().await
    }
    fn stats(&self) -> custody_trace::StoreStats {
        self.inner.stats()
    }
    async fn close(&self) -> Result<(), custody_trace::TraceError> {
        self.inner.close().await
    }
}

/// The store refuses the records resolved on arrival: the request is refused
/// as retryable and nothing of it is kept; sent again once the store takes
/// records, it is stored whole, once.
#[tokio::test]
async fn a_request_the_store_cannot_take_is_refused_whole_and_stored_when_sent_again() {
    use std::sync::atomic::Ordering;
    let (_dir, inner, window, options) = setup();
    let store = Arc::new(Refusing { inner: inner.clone(), refusing: true.into() });

    let assembler = Assembler::open(&window, options.clone(), store.clone()).unwrap();
    let refused = assembler.admit(entries(&swarm())).await;
    assert!(matches!(refused, Err(custody_otlp::AssemblyError::Unavailable(_))), "{refused:?}");
    assert_eq!(assembler.stats(), Default::default(), "nothing of the refused request is kept");
    assembler.close().await.unwrap();
    drop(assembler);

    let assembler = Assembler::open(&window, options, store.clone()).unwrap();
    assert_eq!(assembler.stats().tracked_spans, 0, "nothing of it was logged either");
    store.refusing.store(false, Ordering::SeqCst);
    assembler.admit(entries(&swarm())).await.unwrap();
    assembler.admit(entries(&swarm())).await.unwrap();
    assembler.drain().await.unwrap();
    let stored = rows(&inner).await;
    assert_eq!(stored.len(), 12, "each record once");
    assert_eq!(attribution(&stored), expected());
    assembler.close().await.unwrap();
    inner.close().await.unwrap();
}
