//! OpenTelemetry in: OTLP/HTTP at `POST /v1/traces` on the main listener
//! (protobuf or JSON, optionally gzip) and OTLP/gRPC `TraceService/Export` on
//! a listener of its own. Both take the same Bearer keys and end in [`export`]:
//! spans are mapped, the valid ones made durable in the assembly window, and
//! the invalid ones reported as OTLP partial success.
//!
//! Errors are answered as OTLP defines them: over HTTP a `google.rpc.Status`
//! in the request's encoding with the HTTP status of the failure (400, 401,
//! 403, 413, 415, 429 and 503 with `Retry-After`); over gRPC the matching
//! status code (`UNAVAILABLE` for both busy and unavailable, which exporters
//! retry).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_model::{Scope, WorkspaceName};
use custody_otlp::mapping::WORKSPACE_ATTRIBUTE;
use custody_otlp::{Assembler, AssemblyError, DecodeError, Encoding, decode, gunzip, map_request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

use crate::AppState;
use crate::audit_api::body_error;
use crate::auth::Caller;
use crate::error::ApiError;

/// The assembly window, or why it could not be opened.
pub type OtlpSlot = Result<Arc<Assembler>, String>;

impl From<AssemblyError> for ApiError {
    fn from(e: AssemblyError) -> Self {
        match e {
            AssemblyError::Busy { retry_after } => ApiError::TooManyRequests {
                message: format!("{e}; the audit log is not affected"),
                retry_after_secs: retry_after.as_secs().max(1),
            },
            AssemblyError::Unavailable(_) | AssemblyError::ShuttingDown => {
                ApiError::Unavailable { message: format!("{e}; the audit log is not affected") }
            }
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            other => ApiError::bad_request("malformed_otlp", other.to_string()),
        }
    }
}

fn window(state: &AppState) -> Result<&Arc<Assembler>, ApiError> {
    state.otlp.as_ref().map_err(|reason| ApiError::Unavailable {
        message: format!("the OTLP receiver is not running ({reason}); the audit log is not affected"),
    })
}

/// One export request, from either protocol.
pub async fn export(
    state: &AppState,
    caller: &Caller,
    request: ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, ApiError> {
    state.authorize(caller, Scope::TraceWrite, caller.workspace(), "trace.append")?;
    let window = window(state)?;
    // Every workspace the resources name must be the key's; a request for one
    // it does not reach is refused whole, as on the native API.
    let named: BTreeSet<&str> = request
        .resource_spans
        .iter()
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| r.attributes.iter())
        .filter(|kv| kv.key == WORKSPACE_ATTRIBUTE)
        .filter_map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    for workspace in named.iter().filter(|w| WorkspaceName::parse(w).is_ok()) {
        state.authorize(caller, Scope::TraceWrite, Some(workspace), "trace.append")?;
    }
    let mapped = map_request(&request, |named| {
        let name = match (named, caller.workspace()) {
            (Some(name), _) | (None, Some(name)) => name,
            (None, None) => {
                return Err(format!(
                    "the key is valid in every workspace, so the resource must say which: set the resource attribute `{WORKSPACE_ATTRIBUTE}`"
                ));
            }
        };
        let workspace = WorkspaceName::parse(name)?;
        if workspace.is_system() {
            return Err(format!("workspace `{workspace}` is reserved for Custody's own events: use another"));
        }
        Ok(workspace)
    });
    let metrics = &state.metrics;
    metrics.otlp_spans_rejected.inc_by(mapped.rejected.len() as u64);
    let error_message = mapped.error_message();
    let rejected = mapped.rejected.len() as i64;
    let accepted = mapped.entries.len() as u64;
    if let Err(error) = window.admit(mapped.entries).await {
        tracing::warn!(error = %error, spans = accepted, "OTLP spans refused");
        return Err(error.into());
    }
    metrics.otlp_spans_accepted.inc_by(accepted);
    let partial_success =
        (rejected > 0).then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message });
    Ok(ExportTraceServiceResponse { partial_success })
}

/// `POST /v1/traces`.
pub async fn http_export(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding = match content_type.split(';').next().map(str::trim) {
        Some("application/x-protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        _ => {
            let error = ApiError::UnsupportedMediaType {
                message: format!(
                    "OTLP/HTTP bodies are `application/x-protobuf` or `application/json`, got `{}`",
                    custody_model::workspace::truncate(content_type, 60)
                ),
            };
            return otlp_error(Encoding::Protobuf, error);
        }
    };
    match http_export_inner(&state, caller, &headers, body, encoding).await {
        Ok(response) => encode(encoding, StatusCode::OK, &response),
        Err(error) => otlp_error(encoding, error),
    }
}

async fn http_export_inner(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    encoding: Encoding,
) -> Result<ExportTraceServiceResponse, ApiError> {
    let caller = caller?;
    let limit = state.config.body_limit;
    let body = body.map_err(|r| body_error(r, limit))?;
    let gzipped = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "Content-Encoding `{}` is not supported: send gzip or no encoding",
                    custody_model::workspace::truncate(other, 40)
                ),
            });
        }
    };
    let request = if gzipped { decode(&gunzip(&body, limit)?, encoding)? } else { decode(&body, encoding)? };
    export(state, &caller, request).await
}

fn encode(encoding: Encoding, status: StatusCode, response: &ExportTraceServiceResponse) -> Response {
    match encoding {
        Encoding::Protobuf => {
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], response.encode_to_vec()).into_response()
        }
        Encoding::Json => (status, axum::Json(response)).into_response(),
    }
}

/// The OTLP/HTTP failure answer: the status and headers of the API error, with
/// a `google.rpc.Status` body in the request's encoding.
fn otlp_error(encoding: Encoding, error: ApiError) -> Response {
    let code = grpc_code(&error) as i32;
    let message = error.to_string();
    let mut response = error.into_response();
    let body = match encoding {
        Encoding::Protobuf => {
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
            tonic_types::Status { code, message, details: Vec::new() }.encode_to_vec()
        }
        Encoding::Json => {
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            serde_json::to_vec(&serde_json::json!({"code": code, "message": message})).unwrap_or_default()
        }
    };
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = axum::body::Body::from(body);
    response
}

fn grpc_code(error: &ApiError) -> tonic::Code {
    match error {
        ApiError::BadRequest { .. } => tonic::Code::InvalidArgument,
        ApiError::Unauthenticated { .. } => tonic::Code::Unauthenticated,
        ApiError::Forbidden { .. } => tonic::Code::PermissionDenied,
        ApiError::NotFound { .. } => tonic::Code::NotFound,
        ApiError::MethodNotAllowed { .. } | ApiError::UnsupportedMediaType { .. } => tonic::Code::Unimplemented,
        ApiError::PayloadTooLarge { .. } => tonic::Code::InvalidArgument,
        ApiError::TooManyRequests { .. } | ApiError::Unavailable { .. } => tonic::Code::Unavailable,
    }
}

/// The OTLP/gRPC `TraceService`.
#[derive(Clone)]
pub struct GrpcTraceService {
    state: AppState,
}

impl GrpcTraceService {
    pub fn server(state: AppState) -> TraceServiceServer<Self> {
        let limit = state.config.body_limit;
        TraceServiceServer::new(Self { state })
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let result = match self.state.authenticate(authorization) {
            Ok(caller) => export(&self.state, &caller, request.into_inner()).await,
            Err(error) => Err(error),
        };
        result.map(tonic::Response::new).map_err(|error| tonic::Status::new(grpc_code(&error), error.to_string()))
    }
}

/// Takes the assembly window's and the exporter's figures that are read rather than counted.
pub fn observe(state: &AppState) {
    if let Some(exporter) = &state.exporter {
        let counters = &exporter.counters;
        state.metrics.otlp_export(
            &exporter.stats(),
            [
                counters.exported.load(Ordering::Relaxed),
                counters.failures.load(Ordering::Relaxed),
                counters.dropped.load(Ordering::Relaxed),
            ],
        );
    }
    if let Ok(window) = &state.otlp {
        let stats = window.stats();
        let counters = &window.counters;
        state.metrics.otlp_window(
            &stats,
            [
                ("complete", counters.resolved_complete.load(Ordering::Relaxed)),
                ("timeout", counters.resolved_timeout.load(Ordering::Relaxed)),
                ("pressure", counters.resolved_pressure.load(Ordering::Relaxed)),
            ],
        );
    }
}
