//! Custody's HTTP server: the audit API, the trace API, API keys, health and metrics.
//!
//! The server reaches storage only through the [`AuditLog`], [`TraceStore`] and
//! [`KeyStore`] traits; which backend serves them is decided by URI at start-up.
//! The two witnesses share nothing: a trace store that cannot be opened leaves
//! the server running with the audit API intact (and the trace API answering
//! 503), and the reverse.

mod audit_api;
mod auth;
pub mod custody_api;
mod dashboard;
mod error;
mod health;
mod keys_api;
mod metrics;
mod otlp_api;
mod params;
mod trace_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use custody_audit::keys::{KeyRecord, KeyStore, SqliteKeyStore, generate_token, hash_token, token_id};
use custody_audit::{AuditLog, OpenOptions, open_audit_log, signing_key};
use custody_model::{ApiKeyInfo, Scope, Timestamp};
use custody_otlp::{Assembler, AssemblyOptions, ExportOptions, Exporter, ExportingStore};
use custody_trace::{IngestOptions, TraceStore, open_trace_store};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use audit_api::{MAX_BATCH_EVENTS, parse_events};
pub use error::ApiError;
use metrics::{CommitMetrics, IngestMetrics, Metrics};
pub use trace_api::MAX_BATCH_RECORDS;

/// Everything `custody serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The audit store URI; `sqlite://<data-dir>/audit.db` when `None`.
    pub audit_store: Option<String>,
    /// The checkpoint signing key; `<data-dir>/signing.key` (created on first start) when `None`.
    pub signing_key: Option<PathBuf>,
    /// The key name in checkpoints; each workspace's log origin is `<log_name>/<workspace>`.
    pub log_name: String,
    /// An operator-chosen admin key valid in every workspace.
    pub bootstrap_key: Option<String>,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// How long a commit waits for a database lock held elsewhere before failing (503).
    pub busy_timeout: Duration,
    /// The trace store URI; `parquet://<data-dir>/traces` when `None`.
    pub trace_store: Option<String>,
    /// Trace bytes accepted but not yet in Parquet files before ingest answers 429.
    pub trace_buffer_bytes: usize,
    /// Where OTLP/gRPC is served; `None` for no gRPC receiver (OTLP/HTTP is
    /// always at `/v1/traces` on `listen`).
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// The longest an OTLP span waits for its ancestors before it is attributed
    /// with what is known.
    pub otlp_window: Duration,
    /// Where stored records are exported as OTLP spans, if anywhere.
    pub otlp_export: Option<ExportOptions>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            audit_store: None,
            signing_key: None,
            log_name: DEFAULT_LOG_NAME.to_owned(),
            bootstrap_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            busy_timeout: Duration::from_secs(2),
            trace_store: None,
            trace_buffer_bytes: IngestOptions::default().max_buffer_bytes,
            otlp_grpc_listen: None,
            otlp_window: AssemblyOptions::default().window,
            otlp_export: None,
        }
    }

    pub fn trace_store_uri(&self) -> String {
        self.trace_store.clone().unwrap_or_else(|| format!("parquet://{}", self.data_dir.join("traces").display()))
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key.clone().unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    pub fn audit_store_uri(&self) -> String {
        self.audit_store.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("audit.db").display()))
    }
}

pub const DEFAULT_LOG_NAME: &str = "custody.local/audit";
/// The OTLP/gRPC port exporters use by default.
pub const DEFAULT_OTLP_GRPC_LISTEN: &str = "127.0.0.1:4317";
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    audit: Arc<dyn AuditLog>,
    traces: trace_api::TraceSlot,
    otlp: otlp_api::OtlpSlot,
    exporter: Option<Arc<Exporter>>,
    keys: Arc<dyn KeyStore>,
    metrics: Arc<Metrics>,
    refusals: Arc<auth::RefusalWindows>,
    sessions: Arc<dashboard::Sessions>,
    config: Arc<ServerConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error(transparent)]
    SigningKey(#[from] signing_key::SigningKeyError),
    #[error(transparent)]
    AuditStore(#[from] custody_audit::OpenError),
    #[error("the key store: {0}")]
    KeyStore(custody_audit::StoreError),
    #[error("bootstrap key: {0}")]
    Bootstrap(String),
    #[error("the OTLP exporter: {0}")]
    Export(String),
    #[error(
        "cannot listen for OTLP/gRPC on {addr}: {reason} (is another collector running there? choose another with --otlp-grpc-listen, or `off`)"
    )]
    GrpcListen { addr: SocketAddr, reason: String },
    #[error("cannot listen on {addr}: {reason} (is another server running there? choose another with --listen)")]
    Listen { addr: SocketAddr, reason: String },
}

/// A started server.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// The bootstrap admin key, when this start generated it (show it once).
    pub generated_bootstrap_key: Option<String>,
    pub verifier_key: String,
    /// Why the trace store could not be opened, if it could not (the server runs without it).
    pub trace_store_error: Option<String>,
    /// Where OTLP/gRPC is served, when it is.
    pub otlp_grpc_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    grpc: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    traces: Option<Arc<dyn TraceStore>>,
    otlp: Option<Arc<Assembler>>,
}

impl RunningServer {
    /// Stops accepting requests, finishes those in flight, and returns.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.task).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.close_traces().await;
        served
    }

    /// Stops the gRPC receiver, hands the attributed OTLP spans to the trace
    /// store, and writes what the trace store buffers out to its files.
    async fn close_traces(&mut self) {
        if let Some((stop, task)) = self.grpc.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some(otlp) = self.otlp.take()
            && let Err(error) = otlp.close().await
        {
            tracing::error!(error = %error, "closing the OTLP window; its log keeps every accepted span");
        }
        if let Some(traces) = self.traces.take()
            && let Err(error) = traces.close().await
        {
            tracing::error!(error = %error, "closing the trace store; its write-ahead log keeps every acknowledged record");
        }
    }

    /// Serves until `signal` resolves, then shuts down gracefully; or until the
    /// server stops by itself (a fatal error).
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let finished = tokio::select! {
            result = &mut self.task => Some(result),
            () = signal => None,
        };
        match finished {
            Some(result) => {
                self.close_traces().await;
                result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
            None => self.shutdown().await,
        }
    }
}

/// Opens the stores, makes sure an admin key exists, binds and starts serving.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir { path: config.data_dir.display().to_string(), reason: e.to_string() })?;
    let key_path = config.signing_key_path();
    let (signer, created) = signing_key::load_or_create(&key_path, &config.log_name)?;
    if created {
        tracing::info!(path = %key_path.display(), "created the checkpoint signing key");
    }
    let metrics = Metrics::new();
    let options = OpenOptions {
        busy_timeout: config.busy_timeout,
        observer: Some(Arc::new(CommitMetrics(metrics.clone()))),
        ..OpenOptions::default()
    };
    let audit = open_audit_log(&config.audit_store_uri(), signer, options).await?;
    let keys: Arc<dyn KeyStore> =
        Arc::new(SqliteKeyStore::open(&config.data_dir.join("keys.db")).map_err(StartError::KeyStore)?);
    let verifier_key = audit.verifier().to_key_string();
    let traces = open_traces(&config, &metrics).await;
    let trace_store_error = traces.as_ref().err().cloned();
    let (traces, exporter) = export_traces(&config, traces)?;
    let otlp = open_otlp(&config, &traces).await;
    let state = AppState {
        audit,
        traces: traces.clone(),
        otlp: otlp.clone(),
        exporter,
        keys,
        metrics,
        refusals: Arc::new(auth::RefusalWindows::default()),
        sessions: Arc::new(dashboard::Sessions::default()),
        config: Arc::new(config.clone()),
    };
    let generated_bootstrap_key = ensure_bootstrap_key(&state, config.bootstrap_key.as_deref()).await?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen { addr: config.listen, reason: e.to_string() })?;
    let local_addr =
        listener.local_addr().map_err(|e| StartError::Listen { addr: config.listen, reason: e.to_string() })?;
    let grpc = match config.otlp_grpc_listen {
        Some(addr) => Some(serve_grpc(addr, state.clone()).await?),
        None => None,
    };
    let otlp_grpc_addr = grpc.as_ref().map(|g| g.0);
    tokio::spawn(flush_refusals_periodically(state.clone()));
    let app = router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(addr = %local_addr, "custody is serving");
    Ok(RunningServer {
        local_addr,
        generated_bootstrap_key,
        verifier_key,
        trace_store_error,
        otlp_grpc_addr,
        shutdown: Some(tx),
        task,
        grpc: grpc.map(|(_, stop, task)| (stop, task)),
        traces: traces.ok(),
        otlp: otlp.ok(),
    })
}

/// Puts the exporter, when one is configured, behind the trace store: every
/// record the store takes (natively or over OTLP) is then queued for export.
/// A misconfigured endpoint stops the start; an export queue that cannot be
/// opened is reported, and the trace store goes on without the exporter.
fn export_traces(
    config: &ServerConfig,
    traces: trace_api::TraceSlot,
) -> Result<(trace_api::TraceSlot, Option<Arc<Exporter>>), StartError> {
    let (Some(options), Ok(store)) = (config.otlp_export.clone(), &traces) else { return Ok((traces, None)) };
    let endpoint = options.endpoint.clone();
    match Exporter::open(&config.data_dir.join("export"), options) {
        Ok(exporter) => {
            tracing::info!(endpoint = %endpoint, "exporting trace records as OTLP spans");
            let store: Arc<dyn TraceStore> = Arc::new(ExportingStore::new(store.clone(), exporter.clone()));
            Ok((Ok(store), Some(exporter)))
        }
        Err(error @ custody_otlp::export::ExportError::Endpoint { .. }) => Err(StartError::Export(error.to_string())),
        Err(error) => {
            tracing::error!(error = %error, "the OTLP exporter could not start; records are stored, not exported");
            Ok((traces, None))
        }
    }
}

/// Opens the OTLP assembly window in `<data-dir>/otlp` (replaying its log), in
/// front of the trace store; without a trace store there is no window.
async fn open_otlp(config: &ServerConfig, traces: &trace_api::TraceSlot) -> otlp_api::OtlpSlot {
    let store = traces.clone().map_err(|reason| format!("the trace store is unavailable: {reason}"))?;
    let dir = config.data_dir.join("otlp");
    let options = AssemblyOptions { window: config.otlp_window, ..AssemblyOptions::default() };
    let opened = tokio::task::spawn_blocking(move || Assembler::open(&dir, options, store)).await;
    match opened {
        Ok(Ok(window)) => Ok(window),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "the OTLP receiver is unavailable");
            Err(error.to_string())
        }
        Err(error) => Err(format!("opening the OTLP window stopped: {error}")),
    }
}

/// Binds the OTLP/gRPC listener and serves `TraceService` on it until told to stop.
async fn serve_grpc(
    addr: SocketAddr,
    state: AppState,
) -> Result<(SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>), StartError> {
    let listen_error = |e: std::io::Error| StartError::GrpcListen { addr, reason: e.to_string() };
    let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let (tx, rx) = oneshot::channel::<()>();
    let service = otlp_api::GrpcTraceService::server(state);
    let task = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(error = %error, "the OTLP/gRPC receiver stopped");
        }
    });
    tracing::info!(addr = %local, "OTLP/gRPC is serving");
    Ok((local, tx, task))
}

/// Opens the trace store (replaying its log) off the async threads. A failure
/// is reported, not fatal: the audit witness must not depend on the trace one.
async fn open_traces(config: &ServerConfig, metrics: &Arc<Metrics>) -> trace_api::TraceSlot {
    let uri = config.trace_store_uri();
    let options = IngestOptions {
        max_buffer_bytes: config.trace_buffer_bytes,
        observer: Some(Arc::new(IngestMetrics(metrics.clone()))),
        ..IngestOptions::default()
    };
    let opened = tokio::task::spawn_blocking(move || open_trace_store(&uri, options)).await;
    match opened {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "the trace store is unavailable; serving the audit API without it");
            Err(error.to_string())
        }
        Err(error) => Err(format!("opening the trace store stopped: {error}")),
    }
}

async fn flush_refusals_periodically(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        state.flush_refusals(Instant::now());
    }
}

/// Installs the operator's bootstrap key, or generates one when no key exists.
/// Returns a generated key so the caller can show it once.
async fn ensure_bootstrap_key(state: &AppState, supplied: Option<&str>) -> Result<Option<String>, StartError> {
    let (id, token) = match supplied {
        Some(token) => {
            if token.len() < 24 {
                return Err(StartError::Bootstrap("CUSTODY_BOOTSTRAP_KEY must be at least 24 characters".into()));
            }
            let id = token_id(token).to_owned();
            if let Some(existing) = state.keys.get(&id) {
                if !existing.matches(token) {
                    return Err(StartError::Bootstrap(format!(
                        "a different key with id `{id}` is already stored; keep the original CUSTODY_BOOTSTRAP_KEY or use a new key id"
                    )));
                }
                if existing.info.revoked_at.is_some() {
                    return Err(StartError::Bootstrap("CUSTODY_BOOTSTRAP_KEY was revoked; choose a new one".into()));
                }
                return Ok(None);
            }
            (id, token.to_owned())
        }
        None if state.keys.list().is_empty() => {
            generate_token().map_err(|e| StartError::Bootstrap(format!("no randomness for a key: {e}")))?
        }
        None => return Ok(None),
    };
    let info = ApiKeyInfo {
        id,
        workspace: None,
        scope: Scope::Admin,
        label: Some("bootstrap".into()),
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    let event =
        keys_api::key_event("api_key.created", None, &info).map_err(|e| StartError::Bootstrap(e.to_string()))?;
    state.audit.append(vec![event]).await.map_err(|e| StartError::Bootstrap(e.to_string()))?;
    state.keys.insert(KeyRecord { info, token_hash: hash_token(&token) }).await.map_err(StartError::KeyStore)?;
    Ok(if supplied.is_some() { None } else { Some(token) })
}

fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/api/v1/audit/events", post(audit_api::append).get(audit_api::query))
        .route("/api/v1/audit/checkpoint", get(audit_api::checkpoint))
        .route("/api/v1/audit/public-key", get(audit_api::public_key))
        .route("/api/v1/audit/proofs/inclusion", get(audit_api::inclusion_proof))
        .route("/api/v1/audit/proofs/consistency", get(audit_api::consistency_proof))
        .route("/api/v1/traces", post(trace_api::ingest))
        .route("/api/v1/traces/records", get(trace_api::records))
        .route("/api/v1/traces/records/{id}", get(trace_api::record))
        .route("/api/v1/traces/sessions/{session_id}/tree", get(trace_api::session_tree))
        .route("/api/v1/traces/usage", get(trace_api::usage))
        .route("/v1/traces", post(otlp_api::http_export))
        .route("/api/v1/custody/actions/{action_id}", get(custody_api::action))
        .route("/api/v1/keys", post(keys_api::create).get(keys_api::list))
        .route("/api/v1/keys/{id}", delete(keys_api::revoke))
        .route("/", get(dashboard::home))
        .route("/signin", post(dashboard::sign_in))
        .route("/signout", post(dashboard::sign_out))
        .route("/verify", post(dashboard::verify))
        .route("/audit", get(dashboard::audit))
        .route("/actions/{action_id}", get(dashboard::action))
        .route("/sessions/{session_id}", get(dashboard::session))
        .route("/calls/{id}", get(dashboard::call))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        message: format!("{} does not take {method}: see README's endpoint table", uri.path()),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound { message: format!("no endpoint at {}: the API lives under /api/v1/", uri.path()) }
}
