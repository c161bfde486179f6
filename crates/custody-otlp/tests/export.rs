//! The exporter: records → OTLP spans → the receiver's mapping → the same
//! records; content only when asked; the durable queue against a real gRPC
//! collector (tonic) that fails for a while, across restarts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_model::{TraceRecord, WorkspaceName};
use custody_otlp::assembly::resolve_batches;
use custody_otlp::export::{export_request, record_span};
use custody_otlp::{ExportOptions, Exporter, Protocol, map_request};
use custody_trace::conformance::{sample_record, swarm};
use custody_trace::{Prepared, StoredRecord};

mod common;

use common::without_provenance;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

fn acme() -> WorkspaceName {
    WorkspaceName::parse("acme").unwrap()
}

fn records() -> Vec<TraceRecord> {
    let mut records: Vec<TraceRecord> = (0..12).map(|n| sample_record(&acme(), n)).collect();
    records.extend(swarm(&acme(), "sess-x"));
    for (n, r) in records.iter_mut().enumerate() {
        r.id = Some(format!("0193a5c2-7d1e-7c3a-9f00-{n:012x}"));
    }
    records
}

/// What the receiver makes of a request, as records in id order.
fn received(request: &ExportTraceServiceRequest) -> Vec<TraceRecord> {
    let decoded = ExportTraceServiceRequest::decode(request.encode_to_vec().as_slice()).unwrap();
    let mapped = map_request(&decoded, |named| WorkspaceName::parse(named.unwrap()));
    assert_eq!(mapped.rejected, vec![], "every exported span is taken");
    let mut records = resolve_batches(vec![mapped.entries]);
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

#[test]
fn exported_records_come_back_as_they_left() {
    let mut originals = records();
    originals.sort_by(|a, b| a.id.cmp(&b.id));
    let back = received(&export_request(&originals, true));
    assert_eq!(back.len(), originals.len());
    for (back, original) in back.into_iter().zip(&originals) {
        assert_eq!(&without_provenance(back, original), original);
    }
}

#[test]
fn content_leaves_only_when_asked() {
    let record = sample_record(&acme(), 3);
    let keys = |span: &opentelemetry_proto::tonic::trace::v1::Span| -> BTreeSet<String> {
        span.attributes.iter().map(|kv| kv.key.clone()).collect()
    };
    let with = keys(&record_span(&record, true));
    let without = keys(&record_span(&record, false));
    for key in ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.retrieval.documents", "custody.tool_calls"] {
        assert!(with.contains(key), "{key} with content");
        assert!(!without.contains(key), "{key} without content");
    }
    for key in ["gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.conversation.id", "custody.process_id"] {
        assert!(without.contains(key), "{key} always");
    }
    let back = received(&export_request(std::slice::from_ref(&record), false));
    assert!(back[0].input.is_empty() && back[0].output.is_empty() && back[0].retrieved_context.is_empty());
    assert_eq!(back[0].usage, record.usage);
}

/// A real OTLP/gRPC peer: keeps what it is sent, or answers UNAVAILABLE while told to.
#[derive(Clone, Default)]
struct Collector {
    failing: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer collector-key");
        if self.failing.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("collector restarting"));
        }
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        let mut received = self.received.lock().unwrap();
        for span in spans {
            let id = span.attributes.iter().find(|kv| kv.key == "custody.record_id").unwrap();
            let Some(any_value::Value::StringValue(id)) = id.value.clone().unwrap().value else { panic!("record id") };
            received.push(id);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (collector, format!("http://{addr}"))
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_records_survive_failures_and_restarts_and_are_sent_once() {
    let (collector, endpoint) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let options = ExportOptions {
        headers: vec![("authorization".into(), "Bearer collector-key".into())],
        batch_records: 10,
        interval: Duration::from_millis(50),
        ..ExportOptions::new(endpoint, Protocol::Grpc)
    };
    let canonical: Vec<Vec<u8>> =
        records().into_iter().map(|r| Prepared::from(StoredRecord::prepare(r)).canonical).collect();
    let total = canonical.len();

    collector.failing.store(true, Ordering::SeqCst);
    let exporter = Exporter::open(dir.path(), options.clone()).unwrap();
    exporter.enqueue(&canonical[..20]).unwrap();
    until("failed attempts", || exporter.counters.failures.load(Ordering::Relaxed) >= 2).await;
    assert_eq!(exporter.stats().pending_records, 20);
    assert!(collector.received.lock().unwrap().is_empty());
    exporter.close();
    drop(exporter);

    // Restarted while the collector is still down; then it comes back.
    let exporter = Exporter::open(dir.path(), options.clone()).unwrap();
    assert_eq!(exporter.stats().pending_records, 20, "the queue was replayed");
    exporter.enqueue(&canonical[20..]).unwrap();
    collector.failing.store(false, Ordering::SeqCst);
    until("every record", || collector.received.lock().unwrap().len() >= total).await;
    until("the cursor", || exporter.stats().pending_records == 0).await;
    exporter.close();
    drop(exporter);

    let exporter = Exporter::open(dir.path(), options).unwrap();
    assert_eq!(exporter.stats().pending_records, 0, "the durable cursor covers what was sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = collector.received.lock().unwrap().clone();
    assert_eq!(received.len(), total, "nothing sent twice");
    let expected: Vec<String> = records().into_iter().map(|r| r.id.unwrap()).collect();
    // Batches go in the order queued; inside one, spans are grouped by resource.
    for (got, queued) in received.chunks(10).zip(expected.chunks(10)) {
        assert_eq!(got.iter().collect::<BTreeSet<_>>(), queued.iter().collect::<BTreeSet<_>>());
    }
    exporter.close();
}
