//! Prometheus metrics, `custody_<subsystem>_<name>_<unit>`. Label values come
//! from small fixed sets (event kinds, decisions, failure reasons), never ids.

use std::sync::Arc;
use std::time::Duration;

use custody_audit::CommitObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppendLabels {
    pub kind: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Distinct provider label values before the rest count as `other`.
const MAX_PROVIDERS: usize = 32;

pub struct Metrics {
    registry: Registry,
    pub trace_records: Family<KindLabels, Counter>,
    pub trace_bytes: Counter,
    pub trace_rejected: Counter,
    pub trace_failures: Family<ReasonLabels, Counter>,
    pub trace_append_duration: Histogram,
    pub trace_tokens: Family<ProviderLabels, Counter>,
    providers: std::sync::Mutex<std::collections::HashSet<String>>,
    pub trace_buffer_bytes: Gauge,
    pub trace_wal_bytes: Gauge,
    pub trace_files: Gauge,
    pub trace_file_bytes: Gauge,
    pub trace_flush_duration: Histogram,
    pub trace_compaction_duration: Histogram,
    pub appends: Family<AppendLabels, Counter>,
    pub append_duration: Histogram,
    pub append_failures: Family<ReasonLabels, Counter>,
    pub commit_group_events: Histogram,
    pub commit_duration: Histogram,
    pub auth_refusals: Family<ReasonLabels, Counter>,
    pub otlp_spans_accepted: Counter,
    pub otlp_spans_rejected: Counter,
    pub otlp_resolved: Family<HowLabels, Counter>,
    pub otlp_pending_spans: Gauge,
    pub otlp_pending_bytes: Gauge,
    pub otlp_exported: Counter,
    pub otlp_export_failures: Counter,
    pub otlp_export_dropped: Counter,
    pub otlp_export_pending: Gauge,
    pub otlp_export_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HowLabels {
    pub how: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let appends = Family::<AppendLabels, Counter>::default();
        // 50 µs … ~1.6 s
        let append_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let append_failures = Family::<ReasonLabels, Counter>::default();
        let commit_group_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let commit_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let auth_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "custody_audit_appends",
            "Audit events appended durably, by kind and decision",
            appends.clone(),
        );
        registry.register(
            "custody_audit_append_duration_seconds",
            "Time from receiving an append request to answering it with receipts",
            append_duration.clone(),
        );
        registry.register(
            "custody_audit_append_failures",
            "Audit events that could not be made durable (the callers got 503), by reason",
            append_failures.clone(),
        );
        registry.register(
            "custody_audit_commit_group_events",
            "Events committed together in one transaction and one fsync",
            commit_group_events.clone(),
        );
        registry.register(
            "custody_audit_commit_duration_seconds",
            "Time to insert, sign and durably commit one group",
            commit_duration.clone(),
        );
        registry.register(
            "custody_auth_refusals",
            "Requests refused for their API key, by reason",
            auth_refusals.clone(),
        );
        let trace_records = Family::<KindLabels, Counter>::default();
        let trace_bytes = Counter::default();
        let trace_rejected = Counter::default();
        let trace_failures = Family::<ReasonLabels, Counter>::default();
        let trace_append_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let trace_tokens = Family::<ProviderLabels, Counter>::default();
        let trace_buffer_bytes = Gauge::default();
        let trace_wal_bytes = Gauge::default();
        let trace_files = Gauge::default();
        let trace_file_bytes = Gauge::default();
        // 1 ms … ~65 s
        let trace_flush_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let trace_compaction_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "custody_trace_records",
            "Trace records acknowledged (durable in the write-ahead log), by kind",
            trace_records.clone(),
        );
        registry.register(
            "custody_trace_ingested_bytes",
            "Request bytes of acknowledged trace batches",
            trace_bytes.clone(),
        );
        registry.register(
            "custody_trace_rejected_records",
            "Trace records refused for failing validation (reported by index)",
            trace_rejected.clone(),
        );
        registry.register(
            "custody_trace_append_failures",
            "Trace batches not acknowledged, by reason (busy: buffer full, 429; unavailable: 503)",
            trace_failures.clone(),
        );
        registry.register(
            "custody_trace_append_duration_seconds",
            "Time to make a trace batch durable in the write-ahead log",
            trace_append_duration.clone(),
        );
        registry.register(
            "custody_trace_tokens",
            "Input plus output tokens of acknowledged records, by provider (at most 32 providers, then `other`)",
            trace_tokens.clone(),
        );
        registry.register(
            "custody_trace_buffer_bytes",
            "Bytes acknowledged and not yet in Parquet files (ingest answers 429 at the limit)",
            trace_buffer_bytes.clone(),
        );
        registry.register("custody_trace_wal_bytes", "Bytes in the trace write-ahead log", trace_wal_bytes.clone());
        registry.register("custody_trace_parquet_files", "Parquet files of the trace store", trace_files.clone());
        registry.register(
            "custody_trace_parquet_bytes",
            "Bytes of the trace store's Parquet files",
            trace_file_bytes.clone(),
        );
        registry.register(
            "custody_trace_flush_duration_seconds",
            "Time to write the buffer out as Parquet files",
            trace_flush_duration.clone(),
        );
        registry.register(
            "custody_trace_compaction_duration_seconds",
            "Time to merge a round of small Parquet files",
            trace_compaction_duration.clone(),
        );
        let otlp_spans_accepted = Counter::default();
        let otlp_spans_rejected = Counter::default();
        let otlp_resolved = Family::<HowLabels, Counter>::default();
        let otlp_pending_spans = Gauge::default();
        let otlp_pending_bytes = Gauge::default();
        registry.register(
            "custody_otlp_spans_accepted",
            "OTLP spans made durable in the assembly window (over HTTP and gRPC)",
            otlp_spans_accepted.clone(),
        );
        registry.register(
            "custody_otlp_spans_rejected",
            "OTLP spans refused for failing validation (reported as partial success)",
            otlp_spans_rejected.clone(),
        );
        registry.register(
            "custody_otlp_resolved_spans",
            "OTLP spans attributed to their session and process, by how (complete: every ancestor arrived; timeout: the window ended; pressure: the window was full)",
            otlp_resolved.clone(),
        );
        registry.register(
            "custody_otlp_pending_spans",
            "OTLP spans waiting in the assembly window for their ancestors",
            otlp_pending_spans.clone(),
        );
        registry.register(
            "custody_otlp_pending_bytes",
            "Bytes of the OTLP spans waiting in the assembly window",
            otlp_pending_bytes.clone(),
        );
        let otlp_exported = Counter::default();
        let otlp_export_failures = Counter::default();
        let otlp_export_dropped = Counter::default();
        let otlp_export_pending = Gauge::default();
        let otlp_export_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "custody_otlp_exported_records",
            "Trace records the OTLP exporter delivered (the receiver answered success)",
            otlp_exported.clone(),
        );
        registry.register(
            "custody_otlp_export_failures",
            "OTLP export requests that failed (retried, or skipped when refused as invalid)",
            otlp_export_failures.clone(),
        );
        registry.register(
            "custody_otlp_export_dropped_records",
            "Trace records that will not be exported: queue full, or refused by the receiver as invalid",
            otlp_export_dropped.clone(),
        );
        registry.register(
            "custody_otlp_export_pending_records",
            "Trace records queued for export and not yet delivered",
            otlp_export_pending.clone(),
        );
        registry.register(
            "custody_otlp_export_lag_seconds",
            "How long the oldest record queued for export has waited",
            otlp_export_lag.clone(),
        );
        Arc::new(Self {
            registry,
            otlp_exported,
            otlp_export_failures,
            otlp_export_dropped,
            otlp_export_pending,
            otlp_export_lag,
            otlp_spans_accepted,
            otlp_spans_rejected,
            otlp_resolved,
            otlp_pending_spans,
            otlp_pending_bytes,
            trace_records,
            trace_bytes,
            trace_rejected,
            trace_failures,
            trace_append_duration,
            trace_tokens,
            providers: std::sync::Mutex::new(std::collections::HashSet::new()),
            trace_buffer_bytes,
            trace_wal_bytes,
            trace_files,
            trace_file_bytes,
            trace_flush_duration,
            trace_compaction_duration,
            appends,
            append_duration,
            append_failures,
            commit_group_events,
            commit_duration,
            auth_refusals,
        })
    }

    /// Counts an acknowledged batch: each record's kind, provider and tokens.
    pub fn trace_ingested(
        &self,
        records: &[(custody_model::RecordKind, Option<String>, u64)],
        bytes: u64,
        duration: Duration,
    ) {
        self.trace_bytes.inc_by(bytes);
        self.trace_append_duration.observe(duration.as_secs_f64());
        let mut providers = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, provider, tokens) in records {
            self.trace_records.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
            if *tokens == 0 {
                continue;
            }
            let provider = provider.as_deref().unwrap_or("none");
            let label = if providers.contains(provider) {
                provider.to_owned()
            } else if providers.len() < MAX_PROVIDERS {
                providers.insert(provider.to_owned());
                provider.to_owned()
            } else {
                "other".to_owned()
            };
            self.trace_tokens.get_or_create(&ProviderLabels { provider: label }).inc_by(*tokens);
        }
    }

    pub fn trace_failed(&self, error: &custody_trace::TraceError) {
        let reason = match error {
            custody_trace::TraceError::Busy { .. } => "busy",
            custody_trace::TraceError::ShuttingDown => "shutting_down",
            _ => "unavailable",
        };
        self.trace_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Takes the trace store's figures that are read rather than counted.
    pub fn trace_stats(&self, stats: &custody_trace::StoreStats) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.trace_buffer_bytes.set(gauge(stats.buffered_bytes));
        self.trace_wal_bytes.set(gauge(stats.wal_bytes));
        self.trace_files.set(gauge(stats.data_files));
        self.trace_file_bytes.set(gauge(stats.data_bytes));
    }

    /// Takes the assembly window's figures: what waits now, and the running
    /// totals of resolved spans (counted here as they grow).
    pub fn otlp_window(&self, stats: &custody_otlp::AssemblyStats, resolved: [(&'static str, u64); 3]) {
        self.otlp_pending_spans.set(i64::try_from(stats.pending_spans).unwrap_or(i64::MAX));
        self.otlp_pending_bytes.set(i64::try_from(stats.pending_bytes).unwrap_or(i64::MAX));
        for (how, total) in resolved {
            let counter = self.otlp_resolved.get_or_create(&HowLabels { how });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Takes the exporter's figures: its queue now, and its running totals
    /// (exported, failures, dropped).
    pub fn otlp_export(&self, stats: &custody_otlp::ExportStats, totals: [u64; 3]) {
        self.otlp_export_pending.set(i64::try_from(stats.pending_records).unwrap_or(i64::MAX));
        self.otlp_export_lag.set(stats.lag.as_secs_f64());
        for (counter, total) in
            [&self.otlp_exported, &self.otlp_export_failures, &self.otlp_export_dropped].into_iter().zip(totals)
        {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The commit observer the audit backend reports to.
pub struct CommitMetrics(pub Arc<Metrics>);

impl CommitObserver for CommitMetrics {
    fn group_committed(&self, events: usize, duration: Duration) {
        self.0.commit_group_events.observe(events as f64);
        self.0.commit_duration.observe(duration.as_secs_f64());
    }

    fn group_failed(&self, events: usize, reason: &'static str) {
        self.0.append_failures.get_or_create(&ReasonLabels { reason }).inc_by(events as u64);
    }
}

/// The ingest observer the trace store reports flushes and compactions to.
pub struct IngestMetrics(pub Arc<Metrics>);

impl custody_trace::ingest::IngestObserver for IngestMetrics {
    fn flushed(&self, _records: usize, duration: Duration) {
        self.0.trace_flush_duration.observe(duration.as_secs_f64());
    }

    fn compacted(&self, _report: &custody_trace::compaction::CompactionReport, duration: Duration) {
        self.0.trace_compaction_duration.observe(duration.as_secs_f64());
    }
}
