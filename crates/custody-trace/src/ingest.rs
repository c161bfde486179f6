//! The ingest pipeline: write-ahead log → acknowledge → buffer → Parquet.
//!
//! [`Ingest::append`] hands a batch to the log-writer thread, which appends every
//! batch waiting at that moment to the write-ahead log with one fsync, then moves
//! their records into the in-memory buffer and acknowledges. The flusher thread
//! writes the buffer out as Parquet files about once a second (sooner when it is
//! large), then releases the log segments they came from.
//!
//! Crash safety. A flush rotates the log and takes the buffer in one step (under
//! the log's lock, which the writer also holds while it appends and buffers), so
//! the records taken are exactly those in the segments up to the closed one, `S`.
//! It writes their files named with flush number `S`, then durably records
//! "flushed through S" in a marker file, then deletes segments ≤ S. On start,
//! files of a flush beyond the marker (a crash mid-flush) are deleted and their
//! records replayed from the log; segments ≤ the marker are released without
//! replay. So every acknowledged record ends up in exactly one file.
//!
//! Small files are merged by [`compaction`] from time to time (one row per id),
//! never beside a flush and only over finished flushes.
//!
//! Memory is bounded: a batch that would take the bytes accepted but not yet
//! flushed past `max_buffer_bytes` is refused with [`IngestError::Busy`] (HTTP
//! 429 with `Retry-After`). Replays of recently seen record ids (a client
//! retrying a batch) are acknowledged without being stored again: the last
//! `recent_ids` ids, taken on start from the newest files and the log. A replay
//! older than that is stored again: reads keep one row per id, and a compaction
//! that merges the files holding both copies keeps one.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::compaction::{self, CompactionReport};
use crate::parquet_files::{data_files, flush_of, partition, read_ids, to_record_batch, write_file};
use crate::record::{Prepared, StoredRecord};
use crate::wal::{Wal, WalError};

/// Told about each flush and compaction (for metrics).
pub trait IngestObserver: Send + Sync {
    fn flushed(&self, records: usize, duration: Duration);
    fn compacted(&self, report: &CompactionReport, duration: Duration);
}

#[derive(Clone)]
pub struct IngestOptions {
    /// Bytes accepted but not yet in Parquet files before appends are refused.
    pub max_buffer_bytes: usize,
    /// The longest a record waits in the buffer before it is flushed.
    pub flush_interval: Duration,
    /// Flush as soon as the buffer holds this many bytes.
    pub flush_bytes: usize,
    /// Start a new log segment after this many bytes.
    pub segment_bytes: u64,
    /// How many recent record ids are remembered to acknowledge replays.
    pub recent_ids: usize,
    /// How often the flusher merges small files; files under `small_file_bytes` count as small.
    pub compact_interval: Duration,
    pub small_file_bytes: u64,
    pub observer: Option<Arc<dyn IngestObserver>>,
}

impl std::fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("max_buffer_bytes", &self.max_buffer_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("flush_bytes", &self.flush_bytes)
            .field("segment_bytes", &self.segment_bytes)
            .field("recent_ids", &self.recent_ids)
            .field("compact_interval", &self.compact_interval)
            .field("small_file_bytes", &self.small_file_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 256 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            flush_bytes: 64 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            recent_ids: 1_000_000,
            compact_interval: Duration::from_secs(60),
            small_file_bytes: 32 * 1024 * 1024,
            observer: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("the trace buffer is full; retry after {} ms", retry_after.as_millis())]
    Busy { retry_after: Duration },
    #[error("the trace store cannot make records durable: {0}")]
    Unavailable(String),
    #[error("the trace store is shutting down")]
    ShuttingDown,
}

/// What opening found and replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records replayed from the write-ahead log into the buffer.
    pub replayed: usize,
    /// Files of an unfinished flush that were removed (their records were replayed).
    pub removed_files: usize,
    /// Bytes of a torn, never-acknowledged frame cut from the log.
    pub torn_bytes: u64,
    /// Log segments damaged before their end (copies kept; see the log).
    pub damaged_segments: usize,
    /// Compactions a crash interrupted, finished or undone.
    pub compactions_resolved: usize,
}

struct Job {
    /// Each record with its canonical bytes (what the log stores).
    records: Vec<(StoredRecord, Vec<u8>)>,
    bytes: usize,
    reply: oneshot::Sender<Result<usize, IngestError>>,
}

#[derive(Default)]
struct Buffer {
    records: Vec<StoredRecord>,
    bytes: usize,
    /// Records a flush has taken and is writing: still visible to queries until
    /// their files are in place.
    flushing: Arc<Vec<StoredRecord>>,
}

/// Ids seen lately, oldest first out.
struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; false when it was already known.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

struct Shared {
    data_dir: PathBuf,
    marker: PathBuf,
    options: IngestOptions,
    /// Held while appending-and-buffering and while rotating-and-taking.
    wal: Mutex<Wal>,
    buffer: Mutex<Buffer>,
    /// One flush at a time: a later flush's marker must never cover an earlier
    /// flush's files before they are written.
    flush_lock: Mutex<()>,
    /// Bytes accepted and not yet flushed (queued, buffered or being written).
    reserved: AtomicUsize,
    running: AtomicBool,
    /// Why the last log append or flush failed, until one succeeds again.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn note(&self, outcome: Result<(), &dyn std::fmt::Display>) {
        *lock(&self.failure) = outcome.err().map(|e| e.to_string());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Ingest {
    jobs: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    shared: Arc<Shared>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    wake_flusher: SyncSender<()>,
}

impl Ingest {
    /// Opens the pipeline over `root` (`root/wal`, `root/data`, `root/flushed`),
    /// recovering whatever a crash left, and starts its threads.
    pub fn open(root: &Path, options: IngestOptions) -> Result<(Self, Recovered), IngestError> {
        let unavailable = |e: &dyn std::fmt::Display| IngestError::Unavailable(e.to_string());
        let data_dir = root.join("data");
        let marker = root.join("flushed");
        std::fs::create_dir_all(&data_dir).map_err(|e| unavailable(&e))?;
        let flushed = read_marker(&marker).map_err(|e| unavailable(&e))?;
        // Compactions first: their files all belong to finished flushes.
        let mut recovered = Recovered {
            compactions_resolved: compaction::recover(&data_dir).map_err(|e| unavailable(&e))?,
            ..Recovered::default()
        };
        for file in data_files(&data_dir).map_err(|e| unavailable(&e))? {
            if flush_of(&file).is_none_or(|f| f > flushed) {
                std::fs::remove_file(&file).map_err(|e| unavailable(&e))?;
                recovered.removed_files += 1;
            }
        }
        let (mut wal, frames, recovery) =
            Wal::open(&root.join("wal"), options.segment_bytes).map_err(|e| unavailable(&e))?;
        recovered.torn_bytes = recovery.torn_bytes;
        recovered.damaged_segments = recovery.damaged.len();
        wal.release_through(flushed).map_err(|e| unavailable(&e))?;
        let mut recent = RecentIds::new(options.recent_ids.max(1));
        // Remember the ids of the newest files, so that a batch replayed after a
        // restart is still recognised.
        let mut files = data_files(&data_dir).map_err(|e| unavailable(&e))?;
        files.sort_by_key(|f| std::cmp::Reverse(flush_of(f)));
        let mut newest: Vec<Vec<String>> = Vec::new();
        let mut remembered = 0;
        for file in files {
            if remembered >= recent.capacity {
                break;
            }
            let ids = read_ids(&file).map_err(|e| unavailable(&e))?;
            remembered += ids.len();
            newest.push(ids);
        }
        for id in newest.iter().rev().flatten() {
            recent.insert(id);
        }
        let mut buffer = Buffer::default();
        for frame in frames.into_iter().filter(|f| f.segment > flushed) {
            match StoredRecord::from_canonical(&frame.payload) {
                Ok(record) if recent.insert(record.id()) => {
                    buffer.bytes += frame.payload.len();
                    buffer.records.push(record);
                }
                Ok(_) => {}
                Err(error) => tracing::error!(error = %error, "unreadable record in the trace log; skipped"),
            }
        }
        recovered.replayed = buffer.records.len();
        let shared = Arc::new(Shared {
            data_dir,
            marker,
            reserved: AtomicUsize::new(buffer.bytes),
            options: options.clone(),
            wal: Mutex::new(wal),
            buffer: Mutex::new(buffer),
            flush_lock: Mutex::new(()),
            running: AtomicBool::new(true),
            failure: Mutex::new(None),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let (wake_flusher, wakes) = sync_channel(1);
        let writer_shared = shared.clone();
        let writer_wake = wake_flusher.clone();
        let spawn_error = |e: std::io::Error| IngestError::Unavailable(e.to_string());
        std::thread::Builder::new()
            .name("trace-wal-writer".into())
            .spawn(move || write_loop(&writer_shared, rx, recent, &writer_wake))
            .map_err(spawn_error)?;
        let flusher_shared = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("trace-flusher".into())
            .spawn(move || flush_loop(&flusher_shared, &wakes))
            .map_err(spawn_error)?;
        Ok((Self { jobs: Mutex::new(Some(tx)), shared, flusher: Mutex::new(Some(flusher)), wake_flusher }, recovered))
    }

    /// Makes `records` durable in the write-ahead log; returns how many were new
    /// (the rest were replays of recent ids). Refused with `Busy` when the buffer
    /// is full.
    pub async fn append(&self, records: Vec<StoredRecord>) -> Result<usize, IngestError> {
        self.append_prepared(records.into_iter().map(Prepared::from).collect()).await
    }

    /// [`Ingest::append`] for records whose canonical bytes are already computed.
    pub async fn append_prepared(&self, records: Vec<Prepared>) -> Result<usize, IngestError> {
        let Some(jobs) = lock(&self.jobs).clone() else { return Err(IngestError::ShuttingDown) };
        let records: Vec<(StoredRecord, Vec<u8>)> = records.into_iter().map(|p| (p.stored, p.canonical)).collect();
        let bytes: usize = records.iter().map(|(_, c)| c.len()).sum();
        let max = self.shared.options.max_buffer_bytes;
        let reserved = self.shared.reserved.fetch_add(bytes, Ordering::SeqCst);
        if reserved + bytes > max && reserved > 0 {
            self.shared.reserved.fetch_sub(bytes, Ordering::SeqCst);
            let _ = self.wake_flusher.try_send(());
            return Err(IngestError::Busy {
                retry_after: self.shared.options.flush_interval.max(Duration::from_secs(1)),
            });
        }
        let (reply, answer) = oneshot::channel();
        if jobs.send(Job { records, bytes, reply }).await.is_err() {
            self.shared.reserved.fetch_sub(bytes, Ordering::SeqCst);
            return Err(IngestError::ShuttingDown);
        }
        answer.await.map_err(|_| IngestError::ShuttingDown)?
    }

    /// The records not yet known to be in Parquet files (queries read them beside
    /// the files). While a flush is finishing, a record can be both here and in a
    /// file: readers keep one row per id.
    pub fn buffered(&self) -> Vec<StoredRecord> {
        self.buffered_matching(|_| true)
    }

    /// The buffered records that `keep` selects.
    pub fn buffered_matching(&self, keep: impl Fn(&StoredRecord) -> bool) -> Vec<StoredRecord> {
        let buffer = lock(&self.shared.buffer);
        buffer.flushing.iter().chain(&buffer.records).filter(|r| keep(r)).cloned().collect()
    }

    /// Why the last log append or flush failed, if the one after it has not succeeded.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Bytes accepted and not yet flushed.
    pub fn pending_bytes(&self) -> usize {
        self.shared.reserved.load(Ordering::SeqCst)
    }

    /// Where the Parquet files are.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// Flushes the buffer now (after any flush under way); returns the number of
    /// records written.
    pub fn flush(&self) -> Result<usize, IngestError> {
        flush_once(&self.shared)
    }

    /// Merges small files now (after any flush under way).
    pub fn compact(&self) -> Result<CompactionReport, IngestError> {
        compact_once(&self.shared)
    }

    /// Stops taking records, flushes what is buffered, and stops the threads.
    pub fn shutdown(self) -> Result<(), IngestError> {
        self.close()
    }

    /// Like [`Ingest::shutdown`], for a pipeline that is shared.
    pub fn close(&self) -> Result<(), IngestError> {
        self.stop_threads();
        flush_once(&self.shared).map(|_| ())
    }

    /// Closes the job queue (the log writer ends when it is drained) and ends the flusher.
    fn stop_threads(&self) {
        lock(&self.jobs).take();
        self.shared.running.store(false, Ordering::SeqCst);
        let _ = self.wake_flusher.try_send(());
        if let Some(flusher) = lock(&self.flusher).take() {
            let _ = flusher.join();
        }
    }
}

impl Drop for Ingest {
    /// Like a crash for what is buffered: it stays in the log and is replayed on open.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn write_loop(
    shared: &Shared,
    mut jobs: tokio::sync::mpsc::Receiver<Job>,
    mut recent: RecentIds,
    wake_flusher: &SyncSender<()>,
) {
    const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
    while let Some(first) = jobs.blocking_recv() {
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.bytes;
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        // Replays of recent ids (and repeats within the group) are not stored again.
        // Ids are remembered only once their records are durable: a batch refused
        // for an I/O error must be taken when it is retried.
        let mut in_group = HashSet::new();
        let mut fresh: Vec<Vec<(StoredRecord, Vec<u8>)>> = Vec::with_capacity(group.len());
        let mut skipped_bytes = 0;
        for job in &mut group {
            let mut kept = Vec::new();
            for (record, canonical) in std::mem::take(&mut job.records) {
                if recent.contains(record.id()) || !in_group.insert(record.id().to_owned()) {
                    skipped_bytes += canonical.len();
                } else {
                    kept.push((record, canonical));
                }
            }
            fresh.push(kept);
        }
        shared.reserved.fetch_sub(skipped_bytes, Ordering::SeqCst);
        let kept: Vec<usize> = fresh.iter().map(Vec::len).collect();
        let result = {
            let mut wal = lock(&shared.wal);
            let payloads: Vec<&[u8]> = fresh.iter().flatten().map(|(_, c)| c.as_slice()).collect();
            let appended = if payloads.is_empty() { Ok(0) } else { wal.append(&payloads) };
            appended.map(|_| {
                let mut buffer = lock(&shared.buffer);
                for (record, canonical) in fresh.drain(..).flatten() {
                    recent.insert(record.id());
                    buffer.bytes += canonical.len();
                    buffer.records.push(record);
                }
                buffer.bytes
            })
        };
        shared.note(result.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display));
        match result {
            Ok(buffered) => {
                for (job, kept) in group.into_iter().zip(kept) {
                    let _ = job.reply.send(Ok(kept));
                }
                if buffered >= shared.options.flush_bytes {
                    let _ = wake_flusher.try_send(());
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "trace log append failed; the batch was refused");
                let lost: usize = fresh.iter().flatten().map(|(_, c)| c.len()).sum();
                shared.reserved.fetch_sub(lost, Ordering::SeqCst);
                for job in group {
                    let _ = job.reply.send(Err(IngestError::Unavailable(error.to_string())));
                }
            }
        }
    }
}

fn flush_loop(shared: &Shared, wakes: &Receiver<()>) {
    let mut last = Instant::now();
    let mut last_compaction = Instant::now();
    while shared.running.load(Ordering::SeqCst) {
        let wait = shared.options.flush_interval.saturating_sub(last.elapsed());
        match wakes.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !shared.running.load(Ordering::SeqCst) {
            return;
        }
        last = Instant::now();
        let flushed = flush_once(shared);
        shared.note(flushed.as_ref().map(|_| ()).map_err(|e| e as &dyn std::fmt::Display));
        if let Err(error) = flushed {
            tracing::error!(error = %error, "flushing trace records failed; they stay buffered and in the log");
        }
        if last_compaction.elapsed() >= shared.options.compact_interval {
            last_compaction = Instant::now();
            if let Err(error) = compact_once(shared) {
                tracing::warn!(error = %error, "compacting trace files failed; the files stay as they are");
            }
        }
    }
}

/// Merges small files of finished flushes; never beside a flush.
fn compact_once(shared: &Shared) -> Result<CompactionReport, IngestError> {
    let _one_at_a_time = lock(&shared.flush_lock);
    let started = Instant::now();
    let flushed = read_marker(&shared.marker).map_err(|e| IngestError::Unavailable(e.to_string()))?;
    let report = compaction::compact(&shared.data_dir, flushed, shared.options.small_file_bytes)
        .map_err(|e| IngestError::Unavailable(e.to_string()))?;
    if let Some(observer) = &shared.options.observer
        && report.files_in > 0
    {
        observer.compacted(&report, started.elapsed());
    }
    Ok(report)
}

/// Writes everything buffered to Parquet, records the flush, releases the log.
fn flush_once(shared: &Shared) -> Result<usize, IngestError> {
    let _one_at_a_time = lock(&shared.flush_lock);
    let started = Instant::now();
    let failed = |e: &dyn std::fmt::Display| IngestError::Unavailable(e.to_string());
    let (segment, taken, bytes) = {
        let mut wal = lock(&shared.wal);
        let mut buffer = lock(&shared.buffer);
        if buffer.records.is_empty() {
            return Ok(0);
        }
        let segment = wal.rotate().map_err(|e: WalError| failed(&e))?;
        // Shared, not copied: the flush reads the records while queries still see them.
        let taken = Arc::new(std::mem::take(&mut buffer.records));
        buffer.flushing = taken.clone();
        (segment, taken, std::mem::take(&mut buffer.bytes))
    };
    let write = || -> Result<(), IngestError> {
        let mut parts: BTreeMap<PathBuf, Vec<&StoredRecord>> = BTreeMap::new();
        for record in taken.iter() {
            parts.entry(partition(record)).or_default().push(record);
        }
        for (part, records) in parts {
            let batch = to_record_batch(&records).map_err(|e| failed(&e))?;
            write_file(&shared.data_dir.join(part), segment, &batch).map_err(|e| failed(&e))?;
        }
        write_marker(&shared.marker, segment).map_err(|e| failed(&e))
    };
    let written = write();
    let count = taken.len();
    drop(taken);
    if let Err(error) = written {
        // Put the records back in front: they are still in the log's segments,
        // which stay until a flush succeeds; files written so far are removed on
        // the next start (their flush number is beyond the marker).
        let mut buffer = lock(&shared.buffer);
        let mut records = Arc::unwrap_or_clone(std::mem::take(&mut buffer.flushing));
        records.append(&mut buffer.records);
        buffer.records = records;
        buffer.bytes += bytes;
        return Err(error);
    }
    lock(&shared.buffer).flushing = Arc::default();
    lock(&shared.wal).release_through(segment).map_err(|e| failed(&e))?;
    shared.reserved.fetch_sub(bytes, Ordering::SeqCst);
    if let Some(observer) = &shared.options.observer {
        observer.flushed(count, started.elapsed());
    }
    Ok(count)
}

fn read_marker(path: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse().map_err(|_| std::io::Error::other(format!("{} is not a number", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_marker(path: &Path, segment: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, format!("{segment}\n").as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
