//! OpenTelemetry out: every record the trace store takes is queued durably and
//! sent to a configured OTLP endpoint (HTTP protobuf or gRPC) as spans of the
//! GenAI semantic conventions.
//!
//! The queue is a write-ahead log of its own (`<data-dir>/export/`): each
//! record is a frame `R ‖ seq ‖ queued-at ‖ canonical JSON`, appended once the
//! trace store has acknowledged it; after each batch the receiver accepted, a
//! frame `S ‖ seq` says "sent through `seq`" — the durable cursor. On start the
//! log is replayed and what comes after the cursor is sent again: a crash
//! between a batch's acknowledgement and its cursor frame re-sends that one
//! batch (the receiver keeps one copy: the record ids travel with the spans),
//! and nothing acknowledged is lost. Records are sent in the order they were
//! queued, `batch_records` at a time; retryable failures (connection errors,
//! HTTP 429/502/503/504, gRPC `UNAVAILABLE` and the like, but also 401/403,
//! which an operator fixes) are retried with exponential backoff up to 30 s;
//! a batch the receiver refuses as invalid (HTTP 400/413, gRPC
//! `INVALID_ARGUMENT`) is logged, counted and skipped. The queue is bounded
//! (`max_pending_bytes`): past it, records are counted as dropped rather
//! than held.
//!
//! Message content (input, output, retrieved documents, tool-call arguments)
//! leaves only when the operator opts in (`include_content`).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use custody_model::{RecordKind, RecordStatus, TraceRecord, WorkspaceName};
use custody_trace::tree::CallSummary;
use custody_trace::wal::{Wal, WalError};
use custody_trace::{
    Prepared, RecordPage, RecordQuery, StoreStats, TraceError, TraceRow, TraceStore, UsageQuery, UsageRow,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::mapping::{CLASSIFICATION_ATTRIBUTE, WORKSPACE_ATTRIBUTE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: POST to the endpoint's `/v1/traces`.
    HttpProtobuf,
    /// `grpc`: `TraceService/Export`.
    Grpc,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http/protobuf" | "http" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `http://host:port` (HTTP: `/v1/traces` is added when the URL has no path).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request, e.g. `("authorization", "Bearer …")`.
    pub headers: Vec<(String, String)>,
    /// Whether message content leaves (input, output, retrieved documents, tool arguments).
    pub include_content: bool,
    pub batch_records: usize,
    /// The longest a record waits for its batch to fill.
    pub interval: Duration,
    /// Bytes queued and not yet sent above which new records are dropped (and counted).
    pub max_pending_bytes: usize,
    pub segment_bytes: u64,
    pub timeout: Duration,
}

impl ExportOptions {
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            headers: Vec::new(),
            include_content: false,
            batch_records: 512,
            interval: Duration::from_secs(1),
            max_pending_bytes: 256 * 1024 * 1024,
            segment_bytes: 16 * 1024 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export queue: {0}")]
    Queue(#[from] WalError),
    #[error("the export endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    pub exported: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
}

/// What waits to be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExportStats {
    pub pending_records: usize,
    pub pending_bytes: usize,
    /// How long the oldest waiting record has waited.
    pub lag: Duration,
}

const RECORD: u8 = b'R';
const SENT: u8 = b'S';

struct Queued {
    seq: u64,
    at_ms: u64,
    bytes: Vec<u8>,
}

struct Queue {
    wal: Wal,
    pending: VecDeque<Queued>,
    pending_bytes: usize,
    next_seq: u64,
    /// The highest seq each segment holds.
    segments: BTreeMap<u64, u64>,
}

impl Queue {
    /// Rotates once the log holds a few MiB and nothing waits, and deletes the
    /// closed segments whose records are all sent.
    fn release(&mut self, sent_through: u64) -> Result<(), WalError> {
        if self.pending.is_empty() && self.wal.disk_bytes()? > 4 * 1024 * 1024 {
            self.wal.rotate()?;
        }
        let current = self.wal.current_segment();
        let done: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(s, max)| **s < current && **max <= sent_through)
            .map(|(s, _)| *s)
            .collect();
        if let Some(&last) = done.last() {
            self.wal.release_through(last)?;
            self.segments.retain(|s, _| *s > last);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct Exporter {
    options: ExportOptions,
    queue: Mutex<Queue>,
    wake: Notify,
    running: AtomicBool,
    pub counters: ExportCounters,
}

impl Exporter {
    /// Opens the queue in `dir`, replays it, and starts sending (needs a Tokio runtime).
    pub fn open(dir: &Path, options: ExportOptions) -> Result<Arc<Self>, ExportError> {
        let transport = Transport::new(&options)?;
        let (wal, frames, recovery) = Wal::open(dir, options.segment_bytes)?;
        if recovery.torn_bytes > 0 || !recovery.damaged.is_empty() {
            tracing::warn!(
                torn_bytes = recovery.torn_bytes,
                damaged_segments = recovery.damaged.len(),
                "the OTLP export queue was repaired on open"
            );
        }
        let mut records = Vec::new();
        let mut sent_through = None;
        let mut segments = BTreeMap::new();
        for frame in frames {
            let Some((&tag, rest)) = frame.payload.split_first() else { continue };
            let Some(seq) = rest.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes) else { continue };
            match tag {
                RECORD if rest.len() >= 16 => {
                    let at_ms = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
                    records.push(Queued { seq, at_ms, bytes: rest[16..].to_vec() });
                    let max = segments.entry(frame.segment).or_insert(seq);
                    *max = (*max).max(seq);
                }
                SENT => sent_through = Some(sent_through.map_or(seq, |s: u64| s.max(seq))),
                _ => tracing::error!("unreadable frame in the OTLP export queue; skipped"),
            }
        }
        let next_seq = records.iter().map(|r| r.seq + 1).chain(sent_through.map(|s| s + 1)).max().unwrap_or(0);
        let pending: VecDeque<Queued> =
            records.into_iter().filter(|r| sent_through.is_none_or(|s| r.seq > s)).collect();
        if !pending.is_empty() {
            tracing::info!(records = pending.len(), "OTLP export resumes after its durable cursor");
        }
        let pending_bytes = pending.iter().map(|q| q.bytes.len()).sum();
        let exporter = Arc::new(Self {
            options,
            queue: Mutex::new(Queue { wal, pending, pending_bytes, next_seq, segments }),
            wake: Notify::new(),
            running: AtomicBool::new(true),
            counters: ExportCounters::default(),
        });
        let task = exporter.clone();
        tokio::spawn(async move { task.run(transport).await });
        Ok(exporter)
    }

    /// Queues records (their canonical JSON) durably, after the trace store
    /// took them. Blocks for one fsync.
    pub fn enqueue(&self, records: &[Vec<u8>]) -> Result<(), WalError> {
        if records.is_empty() {
            return Ok(());
        }
        let at_ms = now_ms();
        let mut queue = lock(&self.queue);
        let room = self.options.max_pending_bytes.saturating_sub(queue.pending_bytes);
        let mut taken = 0usize;
        let mut kept = Vec::new();
        for bytes in records {
            if taken + bytes.len() > room {
                break;
            }
            taken += bytes.len();
            kept.push(bytes);
        }
        let dropped = records.len() - kept.len();
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(records = dropped, "the OTLP export queue is full; records not exported");
        }
        let first = queue.next_seq;
        let frames: Vec<Vec<u8>> = kept
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let mut frame = Vec::with_capacity(17 + bytes.len());
                frame.push(RECORD);
                frame.extend_from_slice(&(first + i as u64).to_le_bytes());
                frame.extend_from_slice(&at_ms.to_le_bytes());
                frame.extend_from_slice(bytes);
                frame
            })
            .collect();
        let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let segment = queue.wal.append(&slices)?;
        for (i, bytes) in kept.into_iter().enumerate() {
            queue.pending.push_back(Queued { seq: first + i as u64, at_ms, bytes: bytes.clone() });
        }
        queue.pending_bytes += taken;
        queue.next_seq = first + frames.len() as u64;
        if let Some(last) = queue.next_seq.checked_sub(1) {
            queue.segments.insert(segment, last);
        }
        let full = queue.pending.len() >= self.options.batch_records;
        drop(queue);
        if full {
            self.wake.notify_one();
        }
        Ok(())
    }

    pub fn stats(&self) -> ExportStats {
        let queue = lock(&self.queue);
        let lag =
            queue.pending.front().map_or(Duration::ZERO, |q| Duration::from_millis(now_ms().saturating_sub(q.at_ms)));
        ExportStats { pending_records: queue.pending.len(), pending_bytes: queue.pending_bytes, lag }
    }

    /// Stops sending; what was not sent stays queued for the next start.
    pub fn close(&self) {
        self.running.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Up to one batch from the front of the queue.
    fn next_batch(&self) -> (Vec<TraceRecord>, Option<u64>) {
        let queue = lock(&self.queue);
        let batch: Vec<&Queued> = queue.pending.iter().take(self.options.batch_records).collect();
        let last = batch.last().map(|q| q.seq);
        let records = batch
            .iter()
            .filter_map(|q| match serde_json::from_slice::<TraceRecord>(&q.bytes) {
                Ok(record) => Some(record),
                Err(error) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %error, "a queued record could not be read back; not exported");
                    None
                }
            })
            .collect();
        (records, last)
    }

    /// Moves the durable cursor past `seq` and forgets what it covers.
    fn mark_sent(&self, seq: u64) -> Result<(), WalError> {
        let mut queue = lock(&self.queue);
        let mut frame = vec![SENT];
        frame.extend_from_slice(&seq.to_le_bytes());
        queue.wal.append(&[frame.as_slice()])?;
        while queue.pending.front().is_some_and(|q| q.seq <= seq) {
            if let Some(q) = queue.pending.pop_front() {
                queue.pending_bytes -= q.bytes.len();
            }
        }
        queue.release(seq)
    }

    async fn run(self: Arc<Self>, mut transport: Transport) {
        let mut backoff = Duration::ZERO;
        while self.running.load(Ordering::SeqCst) {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            } else if lock(&self.queue).pending.len() < self.options.batch_records {
                let _ = tokio::time::timeout(self.options.interval, self.wake.notified()).await;
            }
            if !self.running.load(Ordering::SeqCst) {
                return;
            }
            let (records, Some(last)) = self.next_batch() else { continue };
            let count = records.len() as u64;
            let outcome = if records.is_empty() {
                Ok(None)
            } else {
                transport.send(export_request(&records, self.options.include_content)).await
            };
            match outcome {
                Ok(partial) => {
                    if let Some(partial) = partial.filter(|p| p.rejected_spans > 0) {
                        tracing::warn!(rejected = partial.rejected_spans, message = %partial.error_message, "the OTLP receiver refused some exported spans");
                    }
                    self.counters.exported.fetch_add(count, Ordering::Relaxed);
                    backoff = Duration::ZERO;
                }
                Err(SendError::Retryable { reason, retry_after }) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    backoff =
                        retry_after.unwrap_or((backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30)));
                    tracing::warn!(error = %reason, retry_in_ms = backoff.as_millis() as u64, "OTLP export failed; retrying");
                    continue;
                }
                Err(SendError::Refused(reason)) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    self.counters.dropped.fetch_add(count, Ordering::Relaxed);
                    tracing::error!(error = %reason, records = count, "the OTLP receiver refused a batch as invalid; skipped");
                }
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.mark_sent(last)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "the OTLP export cursor could not be saved; a restart re-sends the last batch")
                }
                Err(error) => tracing::warn!(error = %error, "saving the OTLP export cursor stopped"),
            }
        }
    }
}

enum SendError {
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the data itself: sending it again cannot help.
    Refused(String),
}

enum Transport {
    Http { client: reqwest::Client, url: String, headers: Vec<(String, String)> },
    Grpc { client: Box<TraceServiceClient<tonic::transport::Channel>>, metadata: tonic::metadata::MetadataMap },
}

impl Transport {
    fn new(options: &ExportOptions) -> Result<Self, ExportError> {
        let bad = |reason: String| ExportError::Endpoint { endpoint: options.endpoint.clone(), reason };
        if !options.endpoint.starts_with("http://") && !options.endpoint.starts_with("https://") {
            return Err(bad("give a URL such as http://collector:4318 (HTTP) or http://collector:4317 (gRPC)".into()));
        }
        match options.protocol {
            Protocol::HttpProtobuf => {
                if options.endpoint.starts_with("https://") {
                    return Err(bad(
                        "TLS is not built into this exporter: export to a local collector over http://".into()
                    ));
                }
                let client =
                    reqwest::Client::builder().timeout(options.timeout).build().map_err(|e| bad(e.to_string()))?;
                let trimmed = options.endpoint.trim_end_matches('/');
                let has_path = trimmed.splitn(4, '/').nth(3).is_some_and(|p| !p.is_empty());
                let url = if has_path { trimmed.to_owned() } else { format!("{trimmed}/v1/traces") };
                Ok(Self::Http { client, url, headers: options.headers.clone() })
            }
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(options.endpoint.clone())
                    .map_err(|e| bad(e.to_string()))?
                    .timeout(options.timeout)
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &options.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|e| bad(format!("header `{key}`: {e}")))?;
                    let value = value.parse().map_err(|e| bad(format!("header value: {e}")))?;
                    metadata.insert(key, value);
                }
                Ok(Self::Grpc { client: Box::new(TraceServiceClient::new(channel)), metadata })
            }
        }
    }

    async fn send(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> Result<Option<ExportTracePartialSuccess>, SendError> {
        match self {
            Transport::Http { client, url, headers } => {
                let mut builder = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (key, value) in headers.iter() {
                    builder = builder.header(key.as_str(), value.as_str());
                }
                let response = builder
                    .send()
                    .await
                    .map_err(|e| SendError::Retryable { reason: e.to_string(), retry_after: None })?;
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = response.bytes().await.unwrap_or_default();
                match status {
                    200..=299 => Ok(ExportTraceServiceResponse::decode(body).ok().and_then(|r| r.partial_success)),
                    400 | 413 => Err(SendError::Refused(format!("HTTP {status}: {}", status_message(&body)))),
                    _ => Err(SendError::Retryable {
                        reason: format!("HTTP {status}: {}", status_message(&body)),
                        retry_after,
                    }),
                }
            }
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata.clone();
                match client.export(request).await {
                    Ok(response) => Ok(response.into_inner().partial_success),
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        Err(SendError::Refused(format!("gRPC {:?}: {}", status.code(), status.message())))
                    }
                    Err(status) => Err(SendError::Retryable {
                        reason: format!("gRPC {:?}: {}", status.code(), status.message()),
                        retry_after: None,
                    }),
                }
            }
        }
    }
}

/// The message of an OTLP/HTTP failure body (a `google.rpc.Status`), or the body as text.
fn status_message(body: &[u8]) -> String {
    #[derive(prost::Message)]
    struct RpcStatus {
        #[prost(string, tag = "2")]
        message: String,
    }
    match RpcStatus::decode(body) {
        Ok(status) if !status.message.is_empty() => status.message,
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// The trace store, with every record it takes queued for export afterwards.
pub struct ExportingStore {
    inner: Arc<dyn TraceStore>,
    exporter: Arc<Exporter>,
}

impl ExportingStore {
    pub fn new(inner: Arc<dyn TraceStore>, exporter: Arc<Exporter>) -> Self {
        Self { inner, exporter }
    }
}

#[async_trait]
impl TraceStore for ExportingStore {
    async fn append_prepared(&self, records: Vec<Prepared>) -> Result<usize, TraceError> {
        let canonical: Vec<Vec<u8>> = records.iter().map(|p| p.canonical.clone()).collect();
        let new = self.inner.append_prepared(records).await?;
        // The trace store is the record; the export is a copy. A queue that
        // cannot take records is counted and logged, and ingest goes on.
        let exporter = self.exporter.clone();
        let count = canonical.len() as u64;
        let queued = tokio::task::spawn_blocking(move || exporter.enqueue(&canonical)).await;
        if !matches!(queued, Ok(Ok(()))) {
            self.exporter.counters.dropped.fetch_add(count, Ordering::Relaxed);
            tracing::error!(
                records = count,
                "the OTLP export queue could not take records; they are stored but not exported"
            );
        }
        Ok(new)
    }

    async fn get(&self, workspace: &WorkspaceName, id: &str) -> Result<Option<TraceRow>, TraceError> {
        self.inner.get(workspace, id).await
    }

    async fn search(&self, query: &RecordQuery) -> Result<RecordPage, TraceError> {
        self.inner.search(query).await
    }

    async fn session_calls(
        &self,
        workspace: &WorkspaceName,
        sessions: &[String],
    ) -> Result<Vec<(String, CallSummary)>, TraceError> {
        self.inner.session_calls(workspace, sessions).await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, TraceError> {
        self.inner.usage(query).await
    }

    async fn health(&self) -> Result<(), TraceError> {
        self.inner.health().await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    async fn close(&self) -> Result<(), TraceError> {
        self.exporter.close();
        self.inner.close().await
    }
}

/// Records as one OTLP request: a resource per workspace, classification and
/// service (`service.name` only where the record came from one), a scope per
/// instrumentation scope (`custody` for records that came in natively).
pub fn export_request(records: &[TraceRecord], include_content: bool) -> ExportTraceServiceRequest {
    type ResourceKey = (String, Option<String>, Option<String>);
    let mut groups: BTreeMap<ResourceKey, BTreeMap<String, Vec<Span>>> = BTreeMap::new();
    for record in records {
        let attributes = record.attributes.as_ref();
        let text = |key: &str| attributes.and_then(|a| a.get(key)).and_then(Value::as_str).map(str::to_owned);
        // Only the service a record came from: a receiver would keep any other as the record's.
        let service = text("service.name");
        let scope = text("otel.scope.name").unwrap_or_else(|| "custody".to_owned());
        let key = (record.workspace.as_str().to_owned(), record.classification.clone(), service);
        groups.entry(key).or_default().entry(scope).or_default().push(record_span(record, include_content));
    }
    let resource_spans = groups
        .into_iter()
        .map(|((workspace, classification, service), scopes)| {
            let mut attributes = vec![kv(WORKSPACE_ATTRIBUTE, text_value(workspace))];
            if let Some(service) = service {
                attributes.push(kv("service.name", text_value(service)));
            }
            if let Some(c) = classification {
                attributes.push(kv(CLASSIFICATION_ATTRIBUTE, text_value(c)));
            }
            ResourceSpans {
                resource: Some(Resource { attributes, ..Resource::default() }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(name, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope { name, ..InstrumentationScope::default() }),
                        spans,
                        ..ScopeSpans::default()
                    })
                    .collect(),
                ..ResourceSpans::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// Attributes the receiver adds from where a span came from; on the way out
/// they become the span's name, scope, resource and events again.
const PROVENANCE: [&str; 4] = ["otel.span.name", "otel.scope.name", "service.name", "otel.events"];

/// One record as a span of the GenAI semantic conventions, with the `custody.*`
/// attributes that let a Custody receiver take it back exactly.
pub fn record_span(record: &TraceRecord, include_content: bool) -> Span {
    let id = record.id.as_deref().unwrap_or_default();
    let trace_id = record
        .trace_id
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_else(|| digest(&format!("custody/session\0{}\0{}", record.workspace, record.session_id), 16));
    let span_id = record
        .span_id
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_else(|| digest(&format!("custody/record\0{id}"), 8));
    let parent_span_id = record.parent_span_id.as_deref().and_then(|h| hex::decode(h).ok()).unwrap_or_default();
    let kept = record.attributes.clone().unwrap_or_default();
    let tool_name = record.tool_calls.first().map(|t| t.name.clone());
    let name =
        kept.get("otel.span.name").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| match record.kind {
            RecordKind::ModelCall => format!("chat {}", record.model.as_deref().unwrap_or_default()),
            RecordKind::ToolCall => {
                tool_name.as_ref().map_or_else(|| "execute_tool".to_owned(), |n| format!("execute_tool {n}"))
            }
            RecordKind::Retrieval => "retrieval".to_owned(),
            RecordKind::Agent => {
                format!("invoke_agent {}", record.agent_name.as_deref().unwrap_or_default()).trim_end().to_owned()
            }
        });
    let mut attributes = Vec::new();
    let mut put = |key: &str, value: Option<AnyValue>| {
        if let Some(value) = value {
            attributes.push(kv(key, value));
        }
    };
    if !kept.contains_key("gen_ai.operation.name") {
        let operation = match record.kind {
            RecordKind::ModelCall => "chat",
            RecordKind::ToolCall => "execute_tool",
            RecordKind::Retrieval => "retrieval",
            RecordKind::Agent => "invoke_agent",
        };
        put("gen_ai.operation.name", Some(text_value(operation.to_owned())));
    }
    put("gen_ai.provider.name", record.provider.clone().map(text_value));
    put("gen_ai.request.model", record.model.clone().map(text_value));
    put("gen_ai.response.model", record.model_version.clone().map(text_value));
    if let Some(usage) = record.usage {
        put("gen_ai.usage.input_tokens", Some(int_value(usage.input_tokens)));
        put("gen_ai.usage.output_tokens", Some(int_value(usage.output_tokens)));
        put("gen_ai.usage.cache_read.input_tokens", Some(int_value(usage.cache_read_tokens)));
        put("gen_ai.usage.reasoning.output_tokens", Some(int_value(usage.reasoning_tokens)));
    }
    put("gen_ai.conversation.id", Some(text_value(record.session_id.clone())));
    put("gen_ai.agent.name", record.agent_name.clone().map(text_value));
    if record.kind == RecordKind::ToolCall {
        put("gen_ai.tool.name", tool_name.map(text_value));
        put("gen_ai.tool.call.id", record.tool_calls.first().and_then(|t| t.id.clone()).map(text_value));
    }
    put("custody.record_id", Some(text_value(id.to_owned())));
    put("custody.session_id", Some(text_value(record.session_id.clone())));
    put("custody.process_id", Some(text_value(record.process_id.clone())));
    put("custody.parent_process_id", record.parent_process_id.clone().map(text_value));
    if !record.action_ids.is_empty() {
        put("custody.action_ids", Some(json_value(&Value::from(record.action_ids.clone()))));
    }
    put("custody.routing", record.routing.as_ref().map(|r| text_value(Value::Object(r.clone()).to_string())));
    put("custody.time_to_first_token_ms", record.time_to_first_token_ms.map(int_value));
    if include_content {
        let json_text = |v: Value| text_value(v.to_string());
        if !record.input.is_empty() {
            put("gen_ai.input.messages", Some(json_text(messages_json(&record.input))));
        }
        if !record.output.is_empty() {
            put("gen_ai.output.messages", Some(json_text(messages_json(&record.output))));
        }
        if !record.retrieved_context.is_empty() {
            put("gen_ai.retrieval.documents", serde_json::to_value(&record.retrieved_context).ok().map(json_text));
        }
        if !record.tool_calls.is_empty() {
            put("custody.tool_calls", serde_json::to_value(&record.tool_calls).ok().map(json_text));
        }
    }
    let mut events = Vec::new();
    for (key, value) in &kept {
        if key == "otel.events" {
            events = value.as_array().map(|all| all.iter().map(event).collect()).unwrap_or_default();
        } else if !PROVENANCE.contains(&key.as_str()) {
            put(key, Some(json_value(value)));
        }
    }
    let nanos = |t: custody_model::Timestamp| u64::try_from(t.unix_nanos()).unwrap_or(0);
    let status = match record.status {
        RecordStatus::Ok => None,
        RecordStatus::Error => {
            Some(Status { code: StatusCode::Error as i32, message: record.error.clone().unwrap_or_default() })
        }
    };
    Span {
        trace_id,
        span_id,
        parent_span_id,
        name,
        kind: if record.kind == RecordKind::Agent { SpanKind::Internal } else { SpanKind::Client } as i32,
        start_time_unix_nano: nanos(record.started_at),
        end_time_unix_nano: record.ended_at.map_or(0, nanos),
        attributes,
        events,
        status,
        ..Span::default()
    }
}

/// Messages in the GenAI shape: text as one text part, other content as sent.
fn messages_json(messages: &[custody_model::trace::Message]) -> Value {
    let list = messages.iter().map(|m| {
        let mut out = serde_json::Map::new();
        out.insert("role".into(), Value::String(m.role.clone()));
        match &m.content {
            Value::String(text) => {
                out.insert("parts".into(), serde_json::json!([{"type": "text", "content": text}]));
            }
            other => {
                out.insert("content".into(), other.clone());
            }
        }
        if let Some(name) = &m.name {
            out.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(id) = &m.tool_call_id {
            out.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        Value::Object(out)
    });
    Value::Array(list.collect())
}

fn event(value: &Value) -> Event {
    let attributes = value
        .get("attributes")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| kv(k, json_value(v))).collect())
        .unwrap_or_default();
    Event {
        name: value.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
        time_unix_nano: value.get("time_unix_nano").and_then(Value::as_u64).unwrap_or(0),
        attributes,
        ..Event::default()
    }
}

fn digest(text: &str, len: usize) -> Vec<u8> {
    Sha256::digest(text.as_bytes())[..len].to_vec()
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(value), key_strindex: 0 }
}

fn text_value(s: String) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s)) }
}

fn int_value(n: u64) -> AnyValue {
    AnyValue { value: Some(any_value::Value::IntValue(i64::try_from(n).unwrap_or(i64::MAX))) }
}

/// JSON as an OTLP value: the inverse of [`crate::attributes::to_json`] for everything JSON can hold.
fn json_value(value: &Value) -> AnyValue {
    use any_value::Value as V;
    let inner = match value {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => Some(n.as_i64().map_or_else(|| V::DoubleValue(n.as_f64().unwrap_or(0.0)), V::IntValue)),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Array(items) => Some(V::ArrayValue(ArrayValue { values: items.iter().map(json_value).collect() })),
        Value::Object(map) => Some(V::KvlistValue(KeyValueList {
            values: map.iter().map(|(k, v)| kv(k, json_value(v))).collect::<Vec<_>>(),
        })),
    };
    AnyValue { value: inner }
}
