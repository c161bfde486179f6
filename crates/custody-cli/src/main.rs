//! `custody`: the one binary. It serves the API, verifies a store offline,
//! manages API keys on a running server, and measures itself.
//!
//! Exit codes: 0 success; 1 verification found tampering; 2 usage,
//! configuration or operational error.

mod bench;
mod bench_otlp;
mod bench_trace;
mod demo;
mod keys;
mod report;
mod traces;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use custody_otlp::{ExportOptions, Protocol};
use custody_server::{DEFAULT_BODY_LIMIT, DEFAULT_LOG_NAME, DEFAULT_OTLP_GRPC_LISTEN, ServerConfig};

// The server allocates on request threads and frees on the writer thread; glibc's
// allocator serialises that on arena locks (visible in profiles under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "custody",
    version,
    about = "Custody: the chain of custody for AI agent actions",
    long_about = "Custody keeps a tamper-evident audit log of every authorization event (who did what, and \
                  who allowed it): written synchronously, before the action proceeds, append-only, with signed \
                  Merkle checkpoints and proofs. Beside it, a trace store of every model call of every agent and \
                  sub-agent (what the model saw and produced), written asynchronously into Parquet files.\n\n\
                  Start a server with `custody serve`; it prints an admin key on first start. Create narrower \
                  keys with `custody keys create`; check a store offline with `custody verify`; read \
                  traces with `custody traces`.\n\n\
                  Exit codes: 0 success, 1 verification found tampering, 2 usage, configuration or operational error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (audit API, trace API, OTLP receivers, keys, /healthz, /readyz, /metrics)
    #[command(long_about = "Run the server on embedded stores.\n\n\
        On first start it creates DATA_DIR with the SQLite audit log (audit.db), the API keys (keys.db), \
        the trace store (traces/: write-ahead log and Parquet files), the OTLP assembly window (otlp/) \
        and the checkpoint signing key (signing.key, mode 0600), and prints a bootstrap admin key once. \
        Set CUSTODY_BOOTSTRAP_KEY to choose that key yourself (for automation).\n\n\
        OpenTelemetry exporters send spans to http://LISTEN/v1/traces (OTLP/HTTP, protobuf or JSON) or to \
        --otlp-grpc-listen (OTLP/gRPC) with the header `authorization=Bearer <key>` of a trace:write key; \
        a key valid in every workspace needs the resource attribute custody.workspace.\n\n\
        Example:\n  custody serve --data-dir /var/lib/custody --listen 0.0.0.0:7300")]
    Serve(ServeArgs),
    /// Verify every workspace log of a store offline (exit 1 on tampering)
    #[command(long_about = "Verify every workspace log of a store offline, without a server.\n\n\
        Recomputes each entry's leaf hash from the stored bytes, checks that seqs are dense, recomputes the \
        Merkle root at every checkpoint, verifies every checkpoint's signature and that sizes never go back. \
        Exits 0 when everything is intact, 1 naming the workspace and the first bad entry otherwise.\n\n\
        Example:\n  custody verify --data-dir ./custody-data")]
    Verify(verify::VerifyArgs),
    /// Create, list and revoke API keys on a running server
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Query the trace store of a running server: records, session trees, usage
    #[command(subcommand)]
    Traces(traces::TracesCommand),
    /// The chain of custody of an action: both witnesses side by side, checked
    #[command(long_about = "The chain of custody of an action, from a running server.\n\n\
        Shows what the agent did, who authorized it (within the principal's ceiling, or on which intent \
        approved by whom and when), which model produced the output and what data it considered; then the \
        audit events with their inclusion proofs against the latest signed checkpoint, and the model calls, \
        retrievals and tool calls with their content hashes. The report is verified before it is shown. \
        When one store is down, the report says so and shows the other.\n\n\
        Examples:\n  custody report act-123 --workspace acme\n  \
        custody report act-123 --format json\n  custody report act-123 --bundle act-123.json")]
    Report(report::ReportArgs),
    /// Check a bundle offline, without a server (exit 1 naming what is wrong)
    #[command(long_about = "Check a bundle written by `custody report --bundle`, offline.\n\n\
        Verifies the checkpoint's signature, that every audit entry's bytes hash to its leaf and its \
        inclusion proof leads to the checkpoint's root, that the events shown are the entries' events, that \
        every trace record hashes to its content hash and every model call the audit events name is there, \
        and that the answers follow from that evidence. Exits 0 when valid, 1 with the reason otherwise.\n\n\
        Example:\n  custody verify-bundle act-123.json --public-key \"$(curl -s -H 'authorization: Bearer …' \
        http://127.0.0.1:7300/api/v1/audit/public-key)\"")]
    VerifyBundle(report::VerifyBundleArgs),
    /// The worked example: a support agent's swarm, an approved send and a denied export, their chains of custody
    #[command(long_about = "The worked example, through the public API as a real integration's would be.\n\n\
        A support agent acting for user alice spawns two helpers: one reads the customer's history from a CRM, \
        the other drafts an email with a model. Sending an external email is above alice's ceiling, so an \
        intent is created and approved by user bob; the send is authorized and completed. The CRM helper also \
        tries a bulk export of the customer list and is denied. Each gated step runs only after its audit \
        append returned a verified receipt; model calls are recorded after they complete. Then it prints the \
        chain of custody of the send and of the denial, writes the bundle of the send, and keeps the \
        embedded server serving (the API, and the dashboard at /) until Ctrl-C (--no-serve stops at once). Without --server it starts an embedded server.\n\n\
        Examples:\n  custody demo\n  custody demo --server http://127.0.0.1:7300 --key $ADMIN_KEY")]
    Demo(demo::DemoArgs),
    /// Measure Custody against a naive baseline in the same run
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Where the embedded stores and the signing key live
    #[arg(long, env = "CUSTODY_DATA_DIR", default_value = "./custody-data")]
    data_dir: PathBuf,
    /// The address the HTTP API listens on
    #[arg(long, env = "CUSTODY_LISTEN", default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// The audit store URI [default: sqlite://DATA_DIR/audit.db]
    #[arg(long, env = "CUSTODY_AUDIT_STORE", value_name = "URI")]
    audit_store: Option<String>,
    /// The checkpoint signing key (a note private key) [default: DATA_DIR/signing.key, created if missing]
    #[arg(long, env = "CUSTODY_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// The name of a newly created signing key; each log's origin is NAME/WORKSPACE
    #[arg(long, env = "CUSTODY_LOG_NAME", default_value = DEFAULT_LOG_NAME)]
    log_name: String,
    /// The largest request body, in bytes
    #[arg(long, env = "CUSTODY_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// How long a commit waits for a database lock held elsewhere before appends fail with 503, in ms
    #[arg(long, env = "CUSTODY_BUSY_TIMEOUT_MS", default_value_t = 2000)]
    busy_timeout_ms: u64,
    /// The trace store URI [default: parquet://DATA_DIR/traces]
    #[arg(long, env = "CUSTODY_TRACE_STORE", value_name = "URI")]
    trace_store: Option<String>,
    /// Trace bytes acknowledged but not yet written to Parquet before ingest answers 429
    #[arg(long, env = "CUSTODY_TRACE_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    trace_buffer_bytes: usize,
    /// Where OTLP/gRPC (TraceService/Export) listens, or `off`; OTLP/HTTP is always at /v1/traces on --listen
    #[arg(long, env = "CUSTODY_OTLP_GRPC_LISTEN", value_name = "ADDR|off", default_value = DEFAULT_OTLP_GRPC_LISTEN,
          value_parser = parse_listen_or_off)]
    otlp_grpc_listen: ListenOrOff,
    /// The longest an OTLP span waits for its ancestors before it is attributed with what is known, in seconds
    #[arg(long, env = "CUSTODY_OTLP_WINDOW_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    otlp_window_secs: u64,
    /// Export every stored trace record as an OTLP span to this collector, e.g. http://127.0.0.1:4318
    #[arg(long, env = "CUSTODY_OTLP_EXPORT_ENDPOINT", value_name = "URL")]
    otlp_export_endpoint: Option<String>,
    /// The export protocol: `http/protobuf` (POST URL/v1/traces) or `grpc`
    #[arg(long, env = "CUSTODY_OTLP_EXPORT_PROTOCOL", default_value = "http/protobuf", value_parser = parse_protocol)]
    otlp_export_protocol: Protocol,
    /// A header sent with every export request, `NAME=VALUE` (repeat for more), e.g. `authorization=Bearer KEY`
    #[arg(long = "otlp-export-header", value_name = "NAME=VALUE", value_parser = parse_header)]
    otlp_export_headers: Vec<(String, String)>,
    /// Include message content (prompts, outputs, retrieved documents, tool arguments) in exported spans
    #[arg(long, env = "CUSTODY_OTLP_EXPORT_CONTENT")]
    otlp_export_content: bool,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("`{s}` is not an export protocol: use http/protobuf or grpc"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("`{s}` is not NAME=VALUE, e.g. authorization=Bearer KEY")),
    }
}

#[derive(Clone, Copy)]
struct ListenOrOff(Option<SocketAddr>);

fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    if s == "off" {
        return Ok(ListenOrOff(None));
    }
    s.parse().map(|a| ListenOrOff(Some(a))).map_err(|e| format!("{e}: give an address like 127.0.0.1:4317, or `off`"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("custody: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
            Command::Verify(args) => verify::run(args).await,
            Command::Keys(command) => keys::run(command).await.map(|()| ExitCode::SUCCESS),
            Command::Traces(command) => traces::run(command).await.map(|()| ExitCode::SUCCESS),
            Command::Report(args) => report::report(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::VerifyBundle(args) => report::verify(args),
            Command::Bench(command) => bench::run(command).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("custody: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(args.data_dir, args.listen);
    config.audit_store = args.audit_store;
    config.signing_key = args.signing_key;
    config.log_name = args.log_name;
    config.body_limit = args.body_limit;
    config.busy_timeout = Duration::from_millis(args.busy_timeout_ms);
    config.trace_store = args.trace_store;
    config.trace_buffer_bytes = args.trace_buffer_bytes;
    config.otlp_grpc_listen = args.otlp_grpc_listen.0;
    config.otlp_window = Duration::from_secs(args.otlp_window_secs);
    config.otlp_export = args.otlp_export_endpoint.map(|endpoint| ExportOptions {
        headers: args.otlp_export_headers,
        include_content: args.otlp_export_content,
        ..ExportOptions::new(endpoint, args.otlp_export_protocol)
    });
    config.bootstrap_key = std::env::var("CUSTODY_BOOTSTRAP_KEY").ok().filter(|k| !k.is_empty());
    let data_dir = config.data_dir.clone();
    let server = custody_server::start(config).await?;
    if let Some(key) = &server.generated_bootstrap_key {
        eprintln!(
            "\ncustody: created a bootstrap admin key, valid in every workspace.\n\
             It is shown only this once; store it now:\n\n    {key}\n\n\
             Use it as `Authorization: Bearer <key>`, or export CUSTODY_KEY=<key> for `custody keys`.\n"
        );
    }
    if let Some(addr) = server.otlp_grpc_addr {
        println!("OTLP/gRPC receiver on {addr}");
    }
    println!("custody serving on http://{} (data in {})", server.local_addr, data_dir.display());
    println!("checkpoint verifier key: {}", server.verifier_key);
    if let Some(reason) = &server.trace_store_error {
        eprintln!("custody: the trace store is unavailable ({reason}); serving the audit API without it");
    }
    // Ctrl-C or SIGTERM: stop accepting requests and finish those in flight.
    server.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("custody: shutting down");
}
