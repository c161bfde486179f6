//! Prometheus metrics, `custody_<subsystem>_<name>_<unit>`. Label values come
//! from small fixed sets (event kinds, decisions, failure reasons), never ids.

use std::sync::Arc;
use std::time::Duration;

use custody_audit::CommitObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

pub struct Metrics {
    registry: Registry,
    pub appends: Family<AppendLabels, Counter>,
    pub append_duration: Histogram,
    pub append_failures: Family<ReasonLabels, Counter>,
    pub commit_group_events: Histogram,
    pub commit_duration: Histogram,
    pub auth_refusals: Family<ReasonLabels, Counter>,
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
        Arc::new(Self {
            registry,
            appends,
            append_duration,
            append_failures,
            commit_group_events,
            commit_duration,
            auth_refusals,
        })
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
