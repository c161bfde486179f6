//! `custody bench`: throughput and latency against a naive baseline measured in
//! the same run, on the same disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use custody_server::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable single-event audit appends over HTTP vs. SQLite with one INSERT per transaction
    #[command(long_about = "Start a server on a temporary directory and drive durable single-event appends over \
        HTTP with each client count in turn; in the same run, measure the naive baseline (SQLite, WAL, \
        synchronous=FULL, one INSERT per transaction) on the same disk. Prints appends/s, p50 and p99 \
        latency and the ratios to the baseline.\n\n\
        Build with --release for meaningful figures:\n  cargo run --release -p custody-cli -- bench audit")]
    Audit(AuditBenchArgs),
    /// Trace ingest over HTTP vs. a raw arrow-rs Parquet write; session tree; analytics; audit with traces broken
    #[command(long_about = "Start a server on a temporary directory and drive sustained trace ingest over HTTP \
        (model calls with about 2 KiB of content, in batches); in the same run, measure the baseline: the same \
        rows, already in memory, written by arrow-rs as zstd Parquet files. Then: the session tree of 1,000 \
        calls over HTTP; usage by model by day over --analytics-calls calls in Parquet files, beside a \
        hand-written scan of the same files; and audit append latency with the trace store healthy and with \
        it broken.\n\n\
        Build with --release for meaningful figures:\n  cargo run --release -p custody-cli -- bench trace")]
    Trace(crate::bench_trace::TraceBenchArgs),
    /// OTLP/HTTP protobuf span ingest vs. the native JSON trace API, same records, same run
    #[command(long_about = "Start a server on a temporary directory and drive sustained ingest of the same model \
        calls (about 2 KiB of content each) two ways in turn: the native JSON API (POST /api/v1/traces) and \
        OTLP/HTTP protobuf (POST /v1/traces) as GenAI spans — one agent span and its chat spans per request, \
        a new trace each time, so every span is attributed through the assembly window. Prints records/s, \
        request latency and the ratio of the OTLP rate to the native one.\n\n\
        Build with --release for meaningful figures:\n  cargo run --release -p custody-cli -- bench otlp")]
    Otlp(crate::bench_otlp::OtlpBenchArgs),
}

#[derive(Args)]
pub struct AuditBenchArgs {
    /// Seconds of measurement for each client count and for the baseline
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Where the temporary data goes (pick the disk to measure) [default: the current directory]
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Audit(args) => audit(args).await,
        BenchCommand::Trace(args) => crate::bench_trace::trace(args).await,
        BenchCommand::Otlp(args) => crate::bench_otlp::otlp(args).await,
    }
}

/// A server for a benchmark, its data in `data`, with an admin key of its own.
pub async fn bench_server(
    data: PathBuf,
    configure: impl FnOnce(&mut ServerConfig),
) -> anyhow::Result<(custody_server::RunningServer, String)> {
    let key = format!("bench-bootstrap-{}", std::process::id()) + "-0123456789abcdef";
    let mut config = ServerConfig::new(data, "127.0.0.1:0".parse()?);
    config.bootstrap_key = Some(key.clone());
    configure(&mut config);
    Ok((custody_server::start(config).await?, key))
}

/// A temporary directory under `dir` (default: the current directory), and a
/// warning when this build is not optimized.
pub fn bench_dir(dir: Option<&std::path::Path>) -> anyhow::Result<tempfile::TempDir> {
    let base = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir()?,
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are meaningful only with --release");
    }
    tempfile::Builder::new().prefix("custody-bench-").tempdir_in(&base).context("temporary directory")
}

pub struct Measured {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub count: usize,
}

pub fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Measured {
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Measured {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        count: latencies.len(),
    }
}

/// One line of the results table: the step's figures and their ratios to the baseline.
fn print_row(clients: usize, m: &Measured, baseline: &Measured) {
    println!(
        "{:>7} {:>11.0} {:>9.3} {:>9.3} {:>11.1}x {:>13.2}x",
        clients,
        m.rate,
        ms(m.p50),
        ms(m.p99),
        m.rate / baseline.rate,
        m.p50.as_secs_f64() / baseline.p50.as_secs_f64()
    );
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An event like the documented example, about 900 bytes of JSON.
fn event_body(n: u64) -> String {
    format!(
        r#"{{"workspace":"bench","kind":"authz.decision",
        "principal":{{"type":"agent","id":"agent:mailer-{a}","on_behalf_of":"user:support-lead"}},
        "access_path":["user:support-lead","role:support","agent:mailer-{a}"],
        "action":"email.send","resource":{{"type":"email","id":"outbound/{n}","attributes":{{"external":true}}}},
        "decision":"allow","reason":"approved intent","severity":"high","ceiling":"medium",
        "policies":["external-email-requires-intent"],
        "approval":{{"intent_id":"intent-{n}","approver":"user:security-officer","approved_at":"2026-12-01T10:00:00Z"}},
        "credential":{{"type":"api_key","id":"key_4f2a","boundary":"workspace:bench/scope:email.send"}},
        "action_id":"act-{n}",
        "session":{{"session_id":"sess-9","process_id":"proc-2","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}},
        "classification":"confidential","occurred_at":"2026-12-01T10:00:01Z","attributes":{{"recipient_domain":"example.com"}}}}"#,
        a = n % 16
    )
}

async fn audit(args: AuditBenchArgs) -> anyhow::Result<()> {
    let tmp = bench_dir(args.dir.as_deref())?;
    let seconds = Duration::from_secs(args.seconds.max(1));
    println!("custody bench audit: durable single-event appends over HTTP (data in {})", tmp.path().display());

    eprintln!("measuring the baseline for {}s…", seconds.as_secs());
    let baseline_path = tmp.path().join("baseline.db");
    let baseline = tokio::task::spawn_blocking(move || naive_sqlite(&baseline_path, seconds)).await??;
    println!(
        "baseline (SQLite WAL, synchronous=FULL, one INSERT per transaction): {:.0} inserts/s, p50 {:.3} ms, p99 {:.3} ms",
        baseline.rate,
        ms(baseline.p50),
        ms(baseline.p99)
    );

    let (server, key) = bench_server(tmp.path().join("server"), |_| {}).await?;

    println!();
    println!(
        "{:>7} {:>11} {:>9} {:>9} {:>12} {:>14}",
        "clients", "appends/s", "p50 ms", "p99 ms", "x baseline", "p50/base p50"
    );
    let mut results = Vec::new();
    let metrics_url = format!("http://{}/metrics", server.local_addr);
    let mut groups = Vec::new();
    for &clients in &args.clients {
        eprintln!("driving {clients} clients for {}s…", seconds.as_secs());
        let before = commit_stats(&metrics_url).await?;
        let m = drive(server.local_addr, &key, clients.max(1), seconds).await?;
        let after = commit_stats(&metrics_url).await?;
        groups.push((clients, after.since(&before)));
        print_row(clients, &m, &baseline);
        results.push((clients, m));
    }
    server.shutdown().await?;

    // The same load without HTTP, straight into the writer: what HTTP costs.
    println!();
    println!("without HTTP (AuditLog::append from in-process tasks, same event, same disk):");
    let signer = custody_ledger::NoteSigner::from_seed("custody.bench/audit", [7; 32])?;
    let log: Arc<dyn custody_audit::AuditLog> = Arc::new(custody_audit::sqlite::SqliteAuditLog::open(
        &tmp.path().join("direct.db"),
        signer,
        custody_audit::OpenOptions::default(),
    )?);
    for &clients in &args.clients {
        let m = drive_direct(log.clone(), clients.max(1), seconds).await?;
        print_row(clients, &m, &baseline);
    }
    println!();
    println!("inside the writer (from /metrics, warm-up included):");
    for (clients, g) in &groups {
        println!(
            "{:>7} clients: {:.1} events per commit group, {:.3} ms per group commit ({} groups)",
            clients,
            g.events / g.groups.max(1.0),
            g.commit_seconds * 1000.0 / g.groups.max(1.0),
            g.groups
        );
    }
    println!();
    println!(
        "targets: at 64 clients >= 20000 appends/s, >= 8x the baseline, p99 <= 10 ms; at 1 client p50 <= 2x the baseline p50"
    );
    for (clients, m) in &results {
        if *clients == 64 {
            let ok = m.rate >= 20_000.0 && m.rate >= 8.0 * baseline.rate && m.p99 <= Duration::from_millis(10);
            println!("64 clients: {} ({} appends measured)", if ok { "target met" } else { "target missed" }, m.count);
        }
        if *clients == 1 {
            let ok = m.p50.as_secs_f64() <= 2.0 * baseline.p50.as_secs_f64();
            println!("1 client:   {} ({} appends measured)", if ok { "target met" } else { "target missed" }, m.count);
        }
    }
    Ok(())
}

/// Totals of the writer's commit histograms.
#[derive(Default)]
struct CommitStats {
    groups: f64,
    events: f64,
    commit_seconds: f64,
}

impl CommitStats {
    fn since(&self, before: &CommitStats) -> CommitStats {
        CommitStats {
            groups: self.groups - before.groups,
            events: self.events - before.events,
            commit_seconds: self.commit_seconds - before.commit_seconds,
        }
    }
}

async fn commit_stats(url: &str) -> anyhow::Result<CommitStats> {
    let text = reqwest::get(url).await?.text().await?;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    Ok(CommitStats {
        groups: value("custody_audit_commit_group_events_count "),
        events: value("custody_audit_commit_group_events_sum "),
        commit_seconds: value("custody_audit_commit_duration_seconds_sum "),
    })
}

/// One client of a load: appends the `n`th event however it reaches the log.
pub trait Appender: Send + 'static {
    fn append(&mut self, n: u64) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// Over HTTP: one keep-alive connection per client.
///
/// The load generator speaks minimal HTTP/1.1 itself: on two cores a
/// general-purpose client would take much of the CPU that the server under test
/// needs, and the figures would measure the client.
pub struct HttpAppender {
    pub connection: RawConnection,
    pub key: String,
}

impl Appender for HttpAppender {
    async fn append(&mut self, n: u64) -> anyhow::Result<()> {
        let status = self.connection.post("/api/v1/audit/events", &self.key, event_body(n).as_bytes()).await?;
        anyhow::ensure!(status == 201, "append answered {status}");
        Ok(())
    }
}

/// In-process: parse the same body and call the audit log directly.
struct DirectAppender(Arc<dyn custody_audit::AuditLog>);

impl Appender for DirectAppender {
    async fn append(&mut self, n: u64) -> anyhow::Result<()> {
        let events =
            custody_server::parse_events(event_body(n).as_bytes()).map_err(|e| anyhow::anyhow!("bench event: {e}"))?;
        self.0.append(events).await?;
        Ok(())
    }
}

/// Over HTTP from `clients` connections.
async fn drive(addr: SocketAddr, key: &str, clients: usize, duration: Duration) -> anyhow::Result<Measured> {
    let mut appenders = Vec::new();
    for _ in 0..clients {
        appenders.push(HttpAppender { connection: RawConnection::open(addr).await?, key: key.to_owned() });
    }
    measure(appenders, duration).await
}

/// In-process from `clients` tasks.
async fn drive_direct(
    log: Arc<dyn custody_audit::AuditLog>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    measure((0..clients).map(|_| DirectAppender(log.clone())).collect(), duration).await
}

/// Runs every appender in a loop on its own task: half a second of warm-up, then
/// `duration` of measured appends.
pub async fn measure<A: Appender>(appenders: Vec<A>, duration: Duration) -> anyhow::Result<Measured> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, mut appender) in appenders.into_iter().enumerate() {
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = c as u64 * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                appender.append(n).await?;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(summarize(all, elapsed))
}

/// One keep-alive HTTP/1.1 connection that sends requests and reads whole answers.
pub struct RawConnection {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
    buffer: Vec<u8>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufStream::new(stream), buffer: Vec::with_capacity(4096) })
    }

    /// Sends a JSON POST and returns the answer's status; the answer's body is read and dropped.
    pub async fn post(&mut self, path: &str, key: &str, body: &[u8]) -> anyhow::Result<u16> {
        self.request("POST", path, key, "application/json", body).await
    }

    /// Sends a POST of `content_type` and returns the answer's status.
    pub async fn post_as(&mut self, path: &str, key: &str, content_type: &str, body: &[u8]) -> anyhow::Result<u16> {
        self.request("POST", path, key, content_type, body).await
    }

    /// Sends a GET and returns the answer's status; the answer's body is read and dropped.
    pub async fn get(&mut self, path: &str, key: &str) -> anyhow::Result<u16> {
        self.request("GET", path, key, "application/json", b"").await
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<u16> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.stream.flush().await?;
        let mut status = 0;
        let mut length = 0usize;
        loop {
            self.buffer.clear();
            let n = self.stream.read_until(b'\n', &mut self.buffer).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            let line = std::str::from_utf8(&self.buffer)?.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        self.buffer.resize(length, 0);
        self.stream.read_exact(&mut self.buffer).await?;
        Ok(status)
    }
}

/// The naive durable write: one row, one transaction, one fsync, on one connection.
fn naive_sqlite(path: &std::path::Path, duration: Duration) -> anyhow::Result<Measured> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE events (workspace TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
                              PRIMARY KEY (workspace, seq)) WITHOUT ROWID",
    )?;
    let mut insert = conn.prepare("INSERT INTO events (workspace, seq, payload) VALUES ('bench', ?1, ?2)")?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut seq = 0i64;
    while started.elapsed() < duration {
        let body = event_body(seq as u64);
        let t = Instant::now();
        insert.execute(rusqlite::params![seq, body.as_bytes()])?;
        latencies.push(t.elapsed());
        seq += 1;
    }
    Ok(summarize(latencies, started.elapsed()))
}
