//! `custody bench trace`: trace ingest over HTTP against a raw arrow-rs Parquet
//! write of the same rows; the session tree of 1k calls; analytics over many
//! calls against a hand-written scan of the same files; audit append latency
//! with the trace store broken.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use custody_model::{TraceRecord, WorkspaceName};
use custody_trace::parquet_files::{partition, to_record_batch, write_file};
use custody_trace::{IngestOptions, ParquetTraceStore, StoredRecord, TraceStore, UsageKey, UsageQuery};
use serde_json::{Value, json};

use crate::bench::{Appender, HttpAppender, Measured, RawConnection, bench_dir, bench_server, measure, ms, summarize};

#[derive(Args)]
pub struct TraceBenchArgs {
    /// Seconds of sustained ingest (and of each audit-latency step)
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent ingest connections
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records per ingest request
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Calls of the analytics data set (written straight to Parquet files)
    #[arg(long, default_value_t = 1_000_000)]
    analytics_calls: usize,
    /// Where the temporary data goes (pick the disk to measure) [default: the current directory]
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A model call with about 2 KiB of prompt and answer, as a caller sends it.
pub fn call(session: &str, process: usize, n: usize) -> Value {
    let filler = "The customer reports that order 1182 arrived damaged and asks for a replacement. ";
    json!({"workspace": "bench", "classification": "confidential", "kind": "model_call",
        "session_id": session, "process_id": format!("proc-{process}"),
        "parent_process_id": if process == 0 { Value::Null } else { json!(format!("proc-{}", (process - 1) / 3)) },
        "agent_name": format!("agent-{}", process % 5), "provider": "openai", "model": "gpt-4o",
        "model_version": "gpt-4o-2024-08-06",
        "input": [{"role": "system", "content": "You are a support assistant"},
                  {"role": "user", "content": filler.repeat(14)}],
        "output": [{"role": "assistant", "content": filler.repeat(10)}],
        "usage": {"input_tokens": 812, "output_tokens": 164},
        "started_at": format!("2026-12-01T10:{:02}:{:02}.{:03}Z", n / 60_000 % 60, n / 1000 % 60, n % 1000),
        "ended_at": "2026-12-01T11:00:00Z", "status": "ok"})
}

pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches(" kB").parse().ok()?;
    Some(kb / 1024.0)
}

/// Posts whole batches of trace records; a 429 waits and retries (not counted).
pub struct TraceAppender {
    pub connection: RawConnection,
    pub key: String,
    pub body: Vec<u8>,
}

impl TraceAppender {
    /// `n` keep-alive connections, each posting `body` with `key`.
    pub async fn connections(addr: SocketAddr, key: &str, body: &[u8], n: usize) -> anyhow::Result<Vec<Self>> {
        let mut appenders = Vec::with_capacity(n);
        for _ in 0..n {
            appenders.push(Self {
                connection: RawConnection::open(addr).await?,
                key: key.to_owned(),
                body: body.to_vec(),
            });
        }
        Ok(appenders)
    }
}

impl Appender for TraceAppender {
    async fn append(&mut self, _n: u64) -> anyhow::Result<()> {
        loop {
            let status = self.connection.post("/api/v1/traces", &self.key, &self.body).await?;
            match status {
                202 => return Ok(()),
                429 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => anyhow::bail!("trace ingest answered {other}"),
            }
        }
    }
}

/// Sends trace batches that the broken store refuses (503), at a steady pace.
struct RefusedTraceAppender(TraceAppender);

impl Appender for RefusedTraceAppender {
    async fn append(&mut self, _n: u64) -> anyhow::Result<()> {
        let status = self.0.connection.post("/api/v1/traces", &self.0.key, &self.0.body).await?;
        anyhow::ensure!(status == 503, "a broken trace store answered {status}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }
}

pub async fn trace(args: TraceBenchArgs) -> anyhow::Result<()> {
    let tmp = bench_dir(args.dir.as_deref())?;
    let seconds = Duration::from_secs(args.seconds.max(1));
    println!("custody bench trace (data in {})", tmp.path().display());
    let batch: Vec<Value> = (0..args.batch.max(1)).map(|n| call("sess-load", n % 40, n)).collect();
    let body = serde_json::to_vec(&json!({ "records": batch }))?;
    let record_bytes = body.len() / batch.len();

    // Baseline: the same rows, already in memory, written by arrow-rs as zstd Parquet.
    eprintln!("measuring the baseline…");
    let rows: Vec<StoredRecord> = batch
        .iter()
        .map(|v| TraceRecord::from_value(v.clone()).map(StoredRecord::prepare))
        .collect::<Result<_, _>>()?;
    let baseline_dir = tmp.path().join("baseline");
    let baseline = {
        let started = Instant::now();
        let mut written = 0usize;
        let mut flush = 0;
        while started.elapsed() < seconds {
            let big: Vec<&StoredRecord> = rows.iter().cycle().take(50_000).collect();
            let rb = to_record_batch(&big)?;
            flush += 1;
            write_file(&baseline_dir, flush, &rb)?;
            written += big.len();
        }
        written as f64 / started.elapsed().as_secs_f64()
    };
    println!("baseline (arrow-rs: record batch + zstd Parquet file, rows already in memory): {baseline:.0} rows/s");

    let (server, key) = bench_server(tmp.path().join("server"), |_| {}).await?;
    let addr = server.local_addr;
    eprintln!("driving {} connections × {} records per request for {}s…", args.clients, args.batch, seconds.as_secs());
    let m = measure(TraceAppender::connections(addr, &key, &body, args.clients.max(1)).await?, seconds).await?;
    let calls = m.rate * batch.len() as f64;
    println!();
    println!(
        "ingest over HTTP ({} connections, {} records of {} bytes per request, acknowledged once in the fsynced WAL):",
        args.clients,
        batch.len(),
        record_bytes
    );
    println!(
        "  {calls:.0} calls/s ({:.1} MB/s), request p50 {:.1} ms, p99 {:.1} ms; {:.2}x the baseline",
        calls * record_bytes as f64 / 1e6,
        ms(m.p50),
        ms(m.p99),
        calls / baseline
    );
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS of the process (server and load generator): {rss:.0} MiB");
    }

    // The session tree of 1k calls, read from Parquet files.
    let tree_calls: Vec<Value> = (0..1000).map(|n| call("sess-tree", n % 40, n)).collect();
    let mut tree_client = RawConnection::open(addr).await?;
    for chunk in tree_calls.chunks(200) {
        let status =
            tree_client.post("/api/v1/traces", &key, &serde_json::to_vec(&json!({ "records": chunk }))?).await?;
        anyhow::ensure!(status == 202, "tree records answered {status}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // flushed by then (1 s interval)
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let status = tree_client.get("/api/v1/traces/sessions/sess-tree/tree?workspace=bench", &key).await?;
        anyhow::ensure!(status == 200, "tree answered {status}");
        latencies.push(started.elapsed());
    }
    let tree = summarize(latencies, Duration::from_secs(1));
    println!();
    println!(
        "session tree of 1,000 calls in 40 processes over HTTP (among {} stored calls): p50 {:.1} ms, p99 {:.1} ms",
        m.count * batch.len(),
        ms(tree.p50),
        ms(tree.p99)
    );
    server.shutdown().await?;

    analytics(tmp.path(), args.analytics_calls).await?;
    audit_with_traces_broken(tmp.path(), seconds, &body).await?;

    println!();
    println!(
        "targets: ingest >= 50000 calls/s and >= 0.3x the baseline; session tree of 1k calls <= 50 ms; analytics over 10M calls <= 2 s"
    );
    let ok = calls >= 50_000.0 && calls >= 0.3 * baseline;
    println!("ingest: {}", if ok { "target met" } else { "target missed" });
    println!("session tree: {}", if tree.p99 <= Duration::from_millis(50) { "target met" } else { "target missed" });
    Ok(())
}

/// Usage (tokens by model by day) over `n` calls in Parquet files, against a
/// hand-written single-threaded scan of the same files.
async fn analytics(dir: &Path, n: usize) -> anyhow::Result<()> {
    let root = dir.join("analytics");
    let data = root.join("data");
    let ws = WorkspaceName::parse("bench").map_err(anyhow::Error::msg)?;
    eprintln!("writing {n} calls for the analytics run…");
    let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "gemini-2.5-pro"];
    let chunk = 100_000;
    let mut written = 0;
    while written < n {
        let take = chunk.min(n - written);
        let records: Vec<StoredRecord> = (written..written + take)
            .map(|i| {
                let day = i % 30 + 1;
                TraceRecord::from_value(json!({"workspace": "bench", "kind": "model_call",
                    "session_id": format!("s-{}", i / 1000), "process_id": format!("p-{}", i % 7),
                    "provider": "bench", "model": models[i % models.len()],
                    "usage": {"input_tokens": 500 + i % 1000, "output_tokens": 100 + i % 300},
                    "started_at": format!("2026-11-{day:02}T10:00:00Z"), "ended_at": "2026-12-01T10:00:00Z"}))
                .map(StoredRecord::prepare)
            })
            .collect::<Result<_, _>>()?;
        let mut parts: HashMap<PathBuf, Vec<&StoredRecord>> = HashMap::new();
        for r in &records {
            parts.entry(partition(r)).or_default().push(r);
        }
        for (part, rows) in parts {
            // Flush number 0: files of a finished flush, as the store would have left them.
            write_file(&data.join(part), 0, &to_record_batch(&rows)?)?;
        }
        written += take;
    }
    let store = ParquetTraceStore::open(&root, IngestOptions::default())?;
    let query =
        UsageQuery { workspace: Some(ws), group_by: vec![UsageKey::Model, UsageKey::Day], ..UsageQuery::default() };
    let mut times = Vec::new();
    let mut groups = 0;
    for _ in 0..5 {
        let started = Instant::now();
        groups = store.usage(&query).await?.len();
        times.push(started.elapsed());
    }
    let engine = summarize(times, Duration::from_secs(1));
    let started = Instant::now();
    let scanned = naive_scan(&data)?;
    let naive = started.elapsed();
    println!();
    println!(
        "analytics over {n} calls (calls, tokens, latency p50/p95/p99 by model by day; {groups} groups): p50 {:.0} ms, max of 5 {:.0} ms",
        ms(engine.p50),
        ms(engine.p99)
    );
    println!(
        "  hand-written single-threaded scan of the same files (sums only, no percentiles, {scanned} groups): {:.0} ms; ratio {:.2}x",
        ms(naive),
        engine.p50.as_secs_f64() / naive.as_secs_f64()
    );
    store.close().await?;
    Ok(())
}

/// Reads the model, started_at and token columns of every file and sums per (model, day).
fn naive_scan(data: &Path) -> anyhow::Result<usize> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    let mut sums: HashMap<(String, i64), (u64, i64, i64)> = HashMap::new();
    for file in custody_trace::parquet_files::data_files(data)? {
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file)?)?;
        let schema = reader.parquet_schema();
        let wanted: Vec<usize> = ["model", "input_tokens", "output_tokens", "started_at"]
            .iter()
            .filter_map(|name| schema.columns().iter().position(|c| c.name() == *name))
            .collect();
        let mask = parquet::arrow::ProjectionMask::leaves(schema, wanted);
        for batch in reader.with_projection(mask).build()? {
            let batch = batch?;
            let model = batch.column_by_name("model").context("model")?.as_string::<i32>();
            let input = batch.column_by_name("input_tokens").context("input")?.as_primitive::<Int64Type>();
            let output = batch.column_by_name("output_tokens").context("output")?.as_primitive::<Int64Type>();
            let started =
                batch.column_by_name("started_at").context("started_at")?.as_primitive::<TimestampNanosecondType>();
            for i in 0..batch.num_rows() {
                let day = started.value(i).div_euclid(86_400_000_000_000);
                let entry = sums.entry((model.value(i).to_owned(), day)).or_default();
                entry.0 += 1;
                entry.1 += input.value(i);
                entry.2 += output.value(i);
            }
        }
    }
    Ok(sums.len())
}

/// Audit append latency at 16 clients with the trace store healthy and idle, then
/// with it broken (its directory is a file) while trace batches keep arriving.
async fn audit_with_traces_broken(dir: &Path, seconds: Duration, trace_body: &[u8]) -> anyhow::Result<()> {
    let mut results: Vec<(&str, Measured)> = Vec::new();
    for (label, broken) in [("trace store healthy, idle", false), ("trace store broken, refusing batches", true)] {
        let data = dir.join(if broken { "audit-broken" } else { "audit-healthy" });
        std::fs::create_dir_all(&data)?;
        let blocked = data.join("traces-blocked");
        if broken {
            std::fs::write(&blocked, b"not a directory")?;
        }
        let (server, key) = bench_server(data.clone(), |config| {
            if broken {
                config.trace_store = Some(format!("parquet://{}", blocked.display()));
            }
        })
        .await?;
        let refusers: Vec<RefusedTraceAppender> =
            TraceAppender::connections(server.local_addr, &key, trace_body, if broken { 2 } else { 0 })
                .await?
                .into_iter()
                .map(RefusedTraceAppender)
                .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut refusers = refusers;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && !refusers.is_empty() {
                    for r in &mut refusers {
                        n += 1;
                        r.append(n).await?;
                    }
                }
                anyhow::Ok(n)
            })
        };
        let mut appenders = Vec::new();
        for _ in 0..16 {
            appenders
                .push(HttpAppender { connection: RawConnection::open(server.local_addr).await?, key: key.clone() });
        }
        let m = measure(appenders, seconds).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let refused = background.await??;
        server.shutdown().await?;
        println!();
        println!(
            "audit appends, 16 clients, {label}: {:.0} appends/s, p50 {:.3} ms, p99 {:.3} ms{}",
            m.rate,
            ms(m.p50),
            ms(m.p99),
            if broken { format!(" ({refused} trace batches refused meanwhile)") } else { String::new() }
        );
        results.push((label, m));
    }
    if let [(_, healthy), (_, broken)] = &results[..] {
        println!(
            "  broken / healthy: rate {:.2}x, p50 {:.2}x, p99 {:.2}x",
            broken.rate / healthy.rate,
            broken.p50.as_secs_f64() / healthy.p50.as_secs_f64(),
            broken.p99.as_secs_f64() / healthy.p99.as_secs_f64()
        );
    }
    Ok(())
}
