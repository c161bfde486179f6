//! The assembly window: spans wait here, durably, until their ancestors are
//! known, so that swarm attribution does not depend on the order exporters send
//! them in.
//!
//! A span's attribution is read off its ancestors: its process is its nearest
//! agent invocation (itself, for an agent span), that process's parent is the
//! next agent up, its session the nearest `gen_ai.conversation.id` /
//! `session.id` (else the trace id), and a span with no agent above it belongs
//! to the trace's root span. A span is resolved as soon as walking up its
//! parents finds all three or reaches the root; while a parent it needs has not
//! arrived, it waits. Exporters send children first (a parent ends after its
//! children) and split traces across batches and protocols, so waiting is
//! normal, and the answer is the same in every order.
//!
//! Bounds. A span waits at most `window` (default 10 min); then it is resolved
//! with what is known — the topmost span that arrived counts as the root — and
//! counted as `timeout`. When the spans waiting hold more than
//! `max_pending_bytes`, the traces waiting longest are resolved the same way
//! (`pressure`). A trace's links stay known for `link_retention` after its last
//! span, so a straggler still finds its ancestors; later ones wait and time out.
//!
//! Durability. A request is answered once its spans are durable. The spans
//! whose ancestors are already known — in the window or in the same request,
//! the usual case when an exporter sends a trace in one batch — are resolved on
//! arrival: their records go to the trace store (durable in its write-ahead
//! log) and the window's own log keeps only their links. When the store
//! cannot take them, the request is refused as retryable (429 / 503, gRPC
//! `UNAVAILABLE`) and nothing of it is kept. The other spans are appended whole
//! to the window's log (one fsync per request); once their records are in the
//! trace store, an `emitted` frame says so. On start the log is replayed: spans
//! not emitted wait again, emitted ones and links are links only. A span
//! stored twice (a crash between the store's acknowledgement and the `emitted`
//! frame, or a retried request) has the same record id both times, and the
//! store keeps one. Log segments are deleted once all their spans are emitted
//! and the links they hold are past retention.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use custody_model::TraceRecord;
use custody_trace::wal::{Wal, WalError};
use custody_trace::{Prepared, StoredRecord, TraceError, TraceStore};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::mapping::{Agent, SpanEntry};

#[derive(Debug, Clone)]
pub struct AssemblyOptions {
    /// The longest a span waits for its ancestors.
    pub window: Duration,
    /// How long a trace's links are kept after its last span arrived.
    pub link_retention: Duration,
    /// Bytes of waiting spans above which the longest-waiting traces are resolved early.
    pub max_pending_bytes: usize,
    /// Bytes of resolved records the trace store has not taken yet, above which
    /// new spans are refused (retryable) rather than held.
    pub max_outbox_bytes: usize,
    /// Spans whose links are kept; above it, the traces idle longest are forgotten.
    pub max_tracked_spans: usize,
    pub segment_bytes: u64,
    /// How often waiting spans are checked against the window.
    pub tick: Duration,
}

impl Default for AssemblyOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            link_retention: Duration::from_secs(600),
            max_pending_bytes: 128 * 1024 * 1024,
            max_outbox_bytes: 128 * 1024 * 1024,
            max_tracked_spans: 500_000,
            segment_bytes: 16 * 1024 * 1024,
            tick: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AssemblyError {
    #[error("the trace store is not taking records fast enough; retry after {} s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    #[error("spans cannot be made durable: {0}")]
    Unavailable(String),
    #[error("the OTLP receiver is shutting down")]
    ShuttingDown,
}

/// Why a span was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every ancestor it needed had arrived.
    Complete,
    /// It waited the whole window.
    Timeout,
    /// The window was full.
    Pressure,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AssemblyCounters {
    pub resolved_complete: AtomicU64,
    pub resolved_timeout: AtomicU64,
    pub resolved_pressure: AtomicU64,
    pub emitted: AtomicU64,
    pub dropped: AtomicU64,
    pub store_failures: AtomicU64,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    pub pending_spans: usize,
    pub pending_bytes: usize,
    pub outbox_records: usize,
    pub tracked_spans: usize,
    pub traces: usize,
}

/// A frame of the window's log, as read back.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame {
    Span { entry: Box<SpanEntry>, at_ms: u64 },
    Emitted { spans: Vec<[String; 3]> },
}

/// A frame as written: the same encoding, borrowing what it writes.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum FrameOut<'a> {
    Span { entry: &'a SpanEntry, at_ms: u64 },
    Emitted { spans: Vec<[&'a str; 3]> },
}

fn encode(frame: &FrameOut<'_>) -> Result<Vec<u8>, AssemblyError> {
    serde_json::to_vec(frame).map_err(|e| AssemblyError::Unavailable(format!("encoding a frame: {e}")))
}

type TraceKey = (String, String);

/// What the window knows of a trace, beside the request's spans of it (by span id).
type RequestTrace<'a> = (Option<&'a Trace>, HashMap<&'a str, usize>);

struct Pending {
    record: TraceRecord,
    bytes: usize,
    since_ms: u64,
    segment: u64,
}

struct Node {
    parent: Option<String>,
    /// The record states its own attribution.
    attributed: bool,
    agent: Option<Agent>,
    session: Option<String>,
    pending: Option<Pending>,
}

#[derive(Default)]
struct Trace {
    nodes: HashMap<String, Node>,
    pending: usize,
    last_seen_ms: u64,
}

struct Outgoing {
    key: TraceKey,
    span_id: String,
    record: TraceRecord,
    bytes: usize,
    segment: u64,
}

struct Segment {
    /// Spans in the segment whose records are not in the store yet.
    pending: usize,
    opened_at_ms: u64,
    closed_at_ms: Option<u64>,
}

impl Segment {
    fn opened(at_ms: u64) -> Self {
        Self { pending: 0, opened_at_ms: at_ms, closed_at_ms: None }
    }
}

#[derive(Default)]
struct State {
    traces: HashMap<TraceKey, Trace>,
    tracked: usize,
    pending_spans: usize,
    pending_bytes: usize,
    outbox: VecDeque<Outgoing>,
    outbox_bytes: usize,
    segments: BTreeMap<u64, Segment>,
}

pub struct Assembler {
    options: AssemblyOptions,
    wal: Mutex<Wal>,
    state: Mutex<State>,
    store: Arc<dyn TraceStore>,
    wake: Notify,
    /// Held while records are handed to the store, so that `drain` and
    /// `close` return only once what the background task took is stored.
    emitting: tokio::sync::Mutex<()>,
    running: AtomicBool,
    pub counters: AssemblyCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Assembler {
    /// Opens the window's log in `dir`, replays it, and starts the task that
    /// resolves spans and hands their records to `store`. Needs a Tokio runtime.
    pub fn open(dir: &Path, options: AssemblyOptions, store: Arc<dyn TraceStore>) -> Result<Arc<Self>, AssemblyError> {
        let (wal, frames, recovery) =
            Wal::open(dir, options.segment_bytes).map_err(|e| AssemblyError::Unavailable(e.to_string()))?;
        if recovery.torn_bytes > 0 || !recovery.damaged.is_empty() {
            tracing::warn!(
                torn_bytes = recovery.torn_bytes,
                damaged_segments = recovery.damaged.len(),
                "the OTLP assembly log was repaired on open"
            );
        }
        let mut state = State::default();
        let current = wal.current_segment();
        let mut replayed = 0usize;
        for frame in frames {
            state.segments.entry(frame.segment).or_insert_with(|| Segment::opened(0));
            match serde_json::from_slice::<Frame>(&frame.payload) {
                Ok(Frame::Span { entry, at_ms }) => {
                    let bytes = frame.payload.len();
                    if state.insert(*entry, bytes, at_ms, frame.segment) {
                        replayed += 1;
                    }
                }
                Ok(Frame::Emitted { spans }) => {
                    for [workspace, trace_id, span_id] in spans {
                        state.mark_emitted(&(workspace, trace_id), &span_id);
                    }
                }
                Err(error) => tracing::error!(error = %error, "unreadable frame in the OTLP assembly log; skipped"),
            }
        }
        let now = now_ms();
        for (&no, segment) in state.segments.iter_mut() {
            if no < current {
                segment.closed_at_ms = Some(now);
            }
        }
        state.segments.entry(current).or_insert_with(|| Segment::opened(now));
        if replayed > 0 {
            tracing::info!(spans = replayed, "OTLP spans replayed into the assembly window");
        }
        let assembler = Arc::new(Self {
            options,
            wal: Mutex::new(wal),
            state: Mutex::new(state),
            store,
            wake: Notify::new(),
            emitting: tokio::sync::Mutex::new(()),
            running: AtomicBool::new(true),
            counters: AssemblyCounters::default(),
        });
        {
            let mut state = lock(&assembler.state);
            let keys: Vec<TraceKey> = state.traces.keys().cloned().collect();
            assembler.resolve(&mut state, &keys);
        }
        let task = assembler.clone();
        tokio::spawn(async move { task.run().await });
        Ok(assembler)
    }

    /// Makes the spans durable and takes them in; returns once they are. A
    /// span whose ancestors are already known (in the window or in the same
    /// request) goes straight to the store, and the window's log keeps only its
    /// links; the others wait in the log until resolved.
    pub async fn admit(self: &Arc<Self>, entries: Vec<SpanEntry>) -> Result<(), AssemblyError> {
        if !self.running.load(Ordering::SeqCst) {
            return Err(AssemblyError::ShuttingDown);
        }
        if entries.is_empty() {
            return Ok(());
        }
        if lock(&self.state).outbox_bytes > self.options.max_outbox_bytes {
            self.wake.notify_one();
            return Err(AssemblyError::Busy { retry_after: Duration::from_secs(1) });
        }
        let (entries, direct) = {
            let state = lock(&self.state);
            state.plan(entries)
        };
        let stored = direct.len();
        if !direct.is_empty() {
            let prepared = self.prepare(direct);
            // Refused whole and retryable, as on the native API: nothing of the
            // request is logged, and the exporter sends it again.
            self.store.append_prepared(prepared).await.map_err(|error| match error {
                TraceError::Busy { retry_after } => AssemblyError::Busy { retry_after },
                TraceError::ShuttingDown => AssemblyError::ShuttingDown,
                other => AssemblyError::Unavailable(other.to_string()),
            })?;
        }
        let at_ms = now_ms();
        let frames: Vec<(SpanEntry, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| encode(&FrameOut::Span { entry: &entry, at_ms }).map(|bytes| (entry, bytes)))
            .collect::<Result<_, _>>()?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.admit_blocking(frames, at_ms))
            .await
            .map_err(|e| AssemblyError::Unavailable(e.to_string()))??;
        self.counters.resolved_complete.fetch_add(stored as u64, Ordering::Relaxed);
        self.counters.emitted.fetch_add(stored as u64, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    fn admit_blocking(&self, frames: Vec<(SpanEntry, Vec<u8>)>, at_ms: u64) -> Result<(), AssemblyError> {
        let mut wal = lock(&self.wal);
        let payloads: Vec<&[u8]> = frames.iter().map(|(_, b)| b.as_slice()).collect();
        let segment = wal.append(&payloads).map_err(|e: WalError| AssemblyError::Unavailable(e.to_string()))?;
        let mut state = lock(&self.state);
        let mut touched = Vec::new();
        for (entry, bytes) in frames {
            let key = (entry.workspace.as_str().to_owned(), entry.trace_id.clone());
            if state.insert(entry, bytes.len(), at_ms, segment) {
                touched.push(key);
            }
        }
        touched.sort();
        touched.dedup();
        self.resolve(&mut state, &touched);
        Ok(())
    }

    /// The records in the store's form; one that fails the store's checks is
    /// dropped and counted (it would be refused every time).
    fn prepare(&self, records: impl IntoIterator<Item = TraceRecord>) -> Vec<Prepared> {
        records
            .into_iter()
            .filter_map(|record| {
                let span_id = record.span_id.clone().unwrap_or_default();
                StoredRecord::prepare_checked(record)
                    .map_err(|error| {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %error, span_id = %span_id, "an OTLP span's record was refused by the store's checks; dropped");
                    })
                    .ok()
            })
            .collect()
    }

    /// Resolves every waiting span of `keys` whose ancestors are known.
    fn resolve(&self, state: &mut State, keys: &[TraceKey]) {
        for key in keys {
            state.resolve_trace(key, None, &self.counters);
        }
    }

    pub fn stats(&self) -> AssemblyStats {
        let state = lock(&self.state);
        AssemblyStats {
            pending_spans: state.pending_spans,
            pending_bytes: state.pending_bytes,
            outbox_records: state.outbox.len(),
            tracked_spans: state.tracked,
            traces: state.traces.len(),
        }
    }

    /// Resolves and hands over everything resolvable now (tests and shutdown).
    pub async fn drain(&self) -> Result<(), TraceError> {
        self.sweep();
        while self.emit_once().await? > 0 {}
        Ok(())
    }

    /// Stops taking spans and hands the resolved records to the store; spans
    /// still waiting stay in the log for the next start.
    pub async fn close(&self) -> Result<(), TraceError> {
        self.running.store(false, Ordering::SeqCst);
        self.wake.notify_one();
        while self.emit_once().await? > 0 {}
        Ok(())
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = Duration::ZERO;
        while self.running.load(Ordering::SeqCst) {
            if backoff.is_zero() {
                let _ = tokio::time::timeout(self.options.tick, self.wake.notified()).await;
            } else {
                tokio::time::sleep(backoff).await;
            }
            if !self.running.load(Ordering::SeqCst) {
                return;
            }
            self.sweep();
            backoff = match self.emit_once().await {
                Ok(_) => Duration::ZERO,
                Err(TraceError::Busy { retry_after }) => retry_after,
                Err(TraceError::ShuttingDown) => return,
                Err(error) => {
                    self.counters.store_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %error, "the trace store refused resolved OTLP records; retrying");
                    (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
                }
            };
            if let Err(error) = self.release() {
                tracing::warn!(error = %error, "releasing OTLP assembly log segments failed");
            }
        }
    }

    /// Resolves spans past the window, and the longest-waiting traces when the
    /// window is over its byte bound; forgets idle traces past retention.
    fn sweep(&self) {
        let now = now_ms();
        let window = self.options.window.as_millis() as u64;
        let retention = self.options.link_retention.as_millis() as u64;
        let mut state = lock(&self.state);
        let overdue: Vec<TraceKey> = state
            .traces
            .iter()
            .filter(|(_, t)| t.pending > 0 && t.oldest_pending().is_some_and(|since| since + window <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            state.resolve_trace(&key, Some((Resolution::Timeout, now.saturating_sub(window))), &self.counters);
        }
        if state.pending_bytes > self.options.max_pending_bytes {
            let mut waiting: Vec<(u64, TraceKey)> =
                state.traces.iter().filter_map(|(k, t)| t.oldest_pending().map(|since| (since, k.clone()))).collect();
            waiting.sort();
            let target = self.options.max_pending_bytes / 4 * 3;
            for (_, key) in waiting {
                if state.pending_bytes <= target {
                    break;
                }
                state.resolve_trace(&key, Some((Resolution::Pressure, u64::MAX)), &self.counters);
            }
        }
        let idle: Vec<TraceKey> = state
            .traces
            .iter()
            .filter(|(_, t)| t.pending == 0 && t.last_seen_ms + retention <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            state.forget(&key);
        }
        if state.tracked > self.options.max_tracked_spans {
            let mut idle: Vec<(u64, TraceKey)> =
                state.traces.iter().filter(|(_, t)| t.pending == 0).map(|(k, t)| (t.last_seen_ms, k.clone())).collect();
            idle.sort();
            for (_, key) in idle {
                if state.tracked <= self.options.max_tracked_spans / 4 * 3 {
                    break;
                }
                state.forget(&key);
            }
        }
    }

    /// Hands up to 1,000 resolved records to the store; returns how many it took.
    async fn emit_once(&self) -> Result<usize, TraceError> {
        let _emitting = self.emitting.lock().await;
        let batch: Vec<Outgoing> = {
            let mut state = lock(&self.state);
            let n = state.outbox.len().min(1000);
            state.outbox.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let prepared = self.prepare(batch.iter().map(|out| out.record.clone()));
        let result: Result<usize, TraceError> =
            if prepared.is_empty() { Ok(0) } else { self.store.append_prepared(prepared).await };
        if let Err(error) = result {
            // Put the batch back in front, in order.
            let mut state = lock(&self.state);
            for out in batch.into_iter().rev() {
                state.outbox.push_front(out);
            }
            return Err(error);
        }
        let spans: Vec<[&str; 3]> =
            batch.iter().map(|o| [o.key.0.as_str(), o.key.1.as_str(), o.span_id.as_str()]).collect();
        // Without the marker a restart hands these over again under the same ids: the store keeps one.
        let marker = encode(&FrameOut::Emitted { spans });
        let segments: Vec<u64> = batch.iter().map(|o| o.segment).collect();
        let count = batch.len();
        {
            let mut state = lock(&self.state);
            for out in &batch {
                state.outbox_bytes = state.outbox_bytes.saturating_sub(out.bytes);
            }
            for segment in segments {
                if let Some(s) = state.segments.get_mut(&segment) {
                    s.pending = s.pending.saturating_sub(1);
                }
            }
        }
        self.counters.emitted.fetch_add(count as u64, Ordering::Relaxed);
        let recorded = marker.and_then(|marker| {
            lock(&self.wal).append(&[marker.as_slice()]).map_err(|e| AssemblyError::Unavailable(e.to_string()))
        });
        if let Err(error) = recorded {
            tracing::warn!(error = %error, "recording emitted OTLP spans failed; a restart re-sends them (stored once)");
        }
        Ok(count)
    }

    /// Rotates the log once its segment has been open a quarter of the link
    /// retention, and deletes the oldest closed segments whose spans are all
    /// emitted and whose links are past retention.
    fn release(&self) -> Result<(), WalError> {
        let now = now_ms();
        let retention = self.options.link_retention.as_millis() as u64;
        let mut wal = lock(&self.wal);
        let mut state = lock(&self.state);
        let mut current = wal.current_segment();
        let opened = state.segments.entry(current).or_insert_with(|| Segment::opened(now)).opened_at_ms;
        if opened + (retention / 4).max(1000) <= now {
            wal.rotate()?;
            current = wal.current_segment();
            state.segments.entry(current).or_insert_with(|| Segment::opened(now));
        }
        let mut releasable = None;
        for (&no, segment) in state.segments.iter_mut() {
            if no >= current {
                break;
            }
            let closed = *segment.closed_at_ms.get_or_insert(now);
            if segment.pending > 0 || closed + retention > now {
                break;
            }
            releasable = Some(no);
        }
        if let Some(through) = releasable {
            wal.release_through(through)?;
            state.segments.retain(|&no, _| no > through);
        }
        Ok(())
    }
}

impl Trace {
    fn oldest_pending(&self) -> Option<u64> {
        self.nodes.values().filter_map(|n| n.pending.as_ref().map(|p| p.since_ms)).min()
    }
}

impl State {
    /// Splits a request's spans: drops those already known (a duplicated
    /// batch, or a span repeated within it), and takes out — attributed — the
    /// records whose ancestors are all known here or in the request itself,
    /// which can be stored at once. What remains is the spans to log: links
    /// only for the records taken out.
    fn plan(&self, mut entries: Vec<SpanEntry>) -> (Vec<SpanEntry>, Vec<TraceRecord>) {
        let mut keep = vec![false; entries.len()];
        let resolvable: Vec<(usize, Option<Attribution>)> = {
            // Per trace of the request: what the window knows of it, and the request's new spans of it.
            let mut traces: HashMap<(&str, &str), RequestTrace<'_>> = HashMap::new();
            for (i, e) in entries.iter().enumerate() {
                let key = (e.workspace.as_str(), e.trace_id.as_str());
                let (known, batch) = traces
                    .entry(key)
                    .or_insert_with(|| (self.traces.get(&(key.0.to_owned(), key.1.to_owned())), HashMap::new()));
                // The first of a span repeated within the request is the one kept.
                let new =
                    !known.is_some_and(|t| t.nodes.contains_key(&e.span_id)) && !batch.contains_key(e.span_id.as_str());
                if new {
                    batch.insert(&e.span_id, i);
                }
                keep[i] = new;
            }
            let entries = &entries;
            entries
                .iter()
                .enumerate()
                .filter(|(i, e)| keep[*i] && e.record.is_some())
                .filter_map(|(i, e)| {
                    // A record that states its own attribution keeps it.
                    if e.attributed {
                        return Some((i, None));
                    }
                    let (known, batch) = &traces[&(e.workspace.as_str(), e.trace_id.as_str())];
                    let links = |id: &str| {
                        known
                            .and_then(|t| t.nodes.get(id))
                            .map(Node::link)
                            .or_else(|| batch.get(id).map(|&j| entry_link(&entries[j])))
                    };
                    attribute(links, &e.span_id, &e.trace_id, false).map(|a| (i, Some(a)))
                })
                .collect()
        };
        let direct = resolvable
            .into_iter()
            .filter_map(|(i, attribution)| {
                let mut record = entries[i].record.take()?;
                if let Some(attribution) = attribution {
                    attribution.apply(&mut record);
                }
                Some(record)
            })
            .collect();
        let fresh = entries.into_iter().zip(keep).filter_map(|(e, keep)| keep.then_some(e)).collect();
        (fresh, direct)
    }

    /// Takes a span in; false when the same span is already known.
    fn insert(&mut self, entry: SpanEntry, bytes: usize, at_ms: u64, segment: u64) -> bool {
        let key = (entry.workspace.as_str().to_owned(), entry.trace_id);
        let trace = self.traces.entry(key).or_default();
        trace.last_seen_ms = trace.last_seen_ms.max(at_ms);
        if trace.nodes.contains_key(&entry.span_id) {
            return false;
        }
        let pending = entry.record.map(|record| Pending { record, bytes, since_ms: at_ms, segment });
        if pending.is_some() {
            trace.pending += 1;
            self.pending_spans += 1;
            self.pending_bytes += bytes;
            self.segments.entry(segment).or_insert_with(|| Segment::opened(at_ms)).pending += 1;
        }
        trace.nodes.insert(
            entry.span_id,
            Node {
                parent: entry.parent_span_id,
                attributed: entry.attributed,
                agent: entry.agent,
                session: entry.session,
                pending,
            },
        );
        self.tracked += 1;
        true
    }

    /// A replayed `emitted` frame: the span's record is in the store.
    fn mark_emitted(&mut self, key: &TraceKey, span_id: &str) {
        let Some(trace) = self.traces.get_mut(key) else { return };
        let Some(pending) = trace.nodes.get_mut(span_id).and_then(|n| n.pending.take()) else { return };
        trace.pending -= 1;
        self.pending_spans -= 1;
        self.pending_bytes -= pending.bytes;
        if let Some(s) = self.segments.get_mut(&pending.segment) {
            s.pending = s.pending.saturating_sub(1);
        }
    }

    fn forget(&mut self, key: &TraceKey) {
        if let Some(trace) = self.traces.remove(key) {
            self.tracked -= trace.nodes.len();
        }
    }

    /// Resolves the waiting spans of one trace: those whose ancestors are all
    /// known, or — with `force` — those that have waited since before its
    /// cut-off, with whatever is known.
    fn resolve_trace(&mut self, key: &TraceKey, force: Option<(Resolution, u64)>, counters: &AssemblyCounters) {
        let Some(trace) = self.traces.get_mut(key) else { return };
        if trace.pending == 0 {
            return;
        }
        let waiting: Vec<String> =
            trace.nodes.iter().filter(|(_, n)| n.pending.is_some()).map(|(id, _)| id.clone()).collect();
        let mut out = Vec::new();
        for span_id in waiting {
            let forced = force
                .filter(|(_, cutoff)| trace.nodes[&span_id].pending.as_ref().is_some_and(|p| p.since_ms <= *cutoff));
            // A record that states its own attribution keeps it; the others take it from their ancestors.
            let attribution = if trace.nodes[&span_id].attributed {
                None
            } else {
                let nodes = &trace.nodes;
                let links = |id: &str| nodes.get(id).map(Node::link);
                let Some(found) = attribute(links, &span_id, &key.1, forced.is_some()) else { continue };
                Some(found)
            };
            let complete = attribution.as_ref().is_none_or(|a| a.complete);
            let counter =
                match if complete { Resolution::Complete } else { forced.map_or(Resolution::Timeout, |f| f.0) } {
                    Resolution::Complete => &counters.resolved_complete,
                    Resolution::Timeout => &counters.resolved_timeout,
                    Resolution::Pressure => &counters.resolved_pressure,
                };
            counter.fetch_add(1, Ordering::Relaxed);
            let Some(node) = trace.nodes.get_mut(&span_id) else { continue };
            let Some(pending) = node.pending.take() else { continue };
            trace.pending -= 1;
            let mut record = pending.record;
            if let Some(attribution) = attribution {
                attribution.apply(&mut record);
            }
            out.push(Outgoing { key: key.clone(), span_id, record, bytes: pending.bytes, segment: pending.segment });
        }
        for o in out {
            self.pending_spans -= 1;
            self.pending_bytes -= o.bytes;
            self.outbox_bytes += o.bytes;
            self.outbox.push_back(o);
        }
    }
}

struct Attribution {
    session_id: String,
    process_id: String,
    parent_process_id: Option<String>,
    agent_name: Option<String>,
    /// Whether everything was found or the root was reached (rather than forced).
    complete: bool,
}

/// What attribution reads off a span: its links, not its record.
#[derive(Clone, Copy)]
struct Link<'a> {
    parent: Option<&'a str>,
    agent: Option<&'a Agent>,
    session: Option<&'a str>,
}

impl Node {
    fn link(&self) -> Link<'_> {
        Link { parent: self.parent.as_deref(), agent: self.agent.as_ref(), session: self.session.as_deref() }
    }
}

fn entry_link(entry: &SpanEntry) -> Link<'_> {
    Link { parent: entry.parent_span_id.as_deref(), agent: entry.agent.as_ref(), session: entry.session.as_deref() }
}

/// Walks up from `span_id` through the spans `links` knows; `None` while an
/// ancestor it needs is missing (unless `force`).
fn attribute<'a>(
    links: impl Fn(&str) -> Option<Link<'a>>,
    span_id: &'a str,
    trace_id: &str,
    force: bool,
) -> Option<Attribution> {
    const MAX_DEPTH: usize = 4096;
    let start = links(span_id)?;
    let mut process: Option<(&str, Option<&String>)> = start.agent.map(|a| (span_id, a.name.as_ref()));
    let mut parent_process: Option<Option<&str>> = None;
    let mut session = start.session;
    let mut top = span_id;
    let mut node = start;
    let mut complete = true;
    for depth in 0.. {
        if process.is_some() && parent_process.is_some() && session.is_some() {
            break;
        }
        let Some(parent_id) = node.parent else { break };
        let Some(parent) = links(parent_id).filter(|_| depth < MAX_DEPTH) else {
            if !force {
                return None;
            }
            complete = false;
            break;
        };
        if let Some(agent) = parent.agent {
            if process.is_none() {
                process = Some((parent_id, agent.name.as_ref()));
            } else if parent_process.is_none() {
                parent_process = Some(Some(parent_id));
            }
        }
        if session.is_none() {
            session = parent.session;
        }
        top = parent_id;
        node = parent;
    }
    let (process_id, agent_name) = process.map_or((top, None), |(id, name)| (id, name.cloned()));
    let parent_process_id = parent_process.flatten().filter(|p| *p != process_id).map(str::to_owned);
    Some(Attribution {
        session_id: session.map_or_else(|| trace_id.to_owned(), str::to_owned),
        process_id: process_id.to_owned(),
        parent_process_id,
        agent_name,
        complete,
    })
}

impl Attribution {
    fn apply(self, record: &mut TraceRecord) {
        record.session_id = self.session_id;
        record.process_id = self.process_id;
        record.parent_process_id = self.parent_process_id;
        record.agent_name = self.agent_name;
    }
}

/// The records spans resolve to when they arrive in `batches`, one batch after
/// another, and then wait out the window: the window run in memory, for tests
/// and the fuzz target.
pub fn resolve_batches(batches: Vec<Vec<SpanEntry>>) -> Vec<TraceRecord> {
    let mut state = State::default();
    let counters = AssemblyCounters::default();
    let mut records = Vec::new();
    for batch in batches {
        // As `admit` does with a store that takes everything.
        let (entries, direct) = state.plan(batch);
        records.extend(direct);
        let mut keys = Vec::new();
        for entry in entries {
            let key = (entry.workspace.as_str().to_owned(), entry.trace_id.clone());
            if state.insert(entry, 0, 0, 0) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.dedup();
        for key in &keys {
            state.resolve_trace(key, None, &counters);
        }
    }
    let keys: Vec<TraceKey> = state.traces.keys().cloned().collect();
    for key in &keys {
        state.resolve_trace(key, Some((Resolution::Timeout, u64::MAX)), &counters);
    }
    records.extend(state.outbox.into_iter().map(|o| o.record));
    records
}
