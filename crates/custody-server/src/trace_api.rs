//! `/api/v1/traces/...`: ingest of model-call records, and the queries over them.
//!
//! Nothing here touches the audit log except through the shared refusal trail
//! of the key checks: a broken trace store answers 503 on these endpoints and
//! nowhere else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_model::{RecordKind, RecordStatus, Scope, TraceRecord, ValidationError};
use custody_trace::{RecordCursor, RecordQuery, StoredRecord, TraceError, TraceStore, UsageKey, UsageQuery};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::audit_api::body_error;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Params, QueryPairs};

/// The most records one request may carry.
pub const MAX_BATCH_RECORDS: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The trace store, or why it could not be opened.
pub type TraceSlot = Result<Arc<dyn TraceStore>, String>;

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Busy { retry_after } => ApiError::TooManyRequests {
                message: format!(
                    "the trace buffer is full while records are written out; retry the same batch after {} s",
                    retry_after.as_secs().max(1)
                ),
                retry_after_secs: retry_after.as_secs().max(1),
            },
            TraceError::InvalidQuery(message) => ApiError::bad_request("invalid_query", message),
            e @ (TraceError::Unavailable(_) | TraceError::ShuttingDown) => {
                ApiError::Unavailable { message: format!("{e}; the audit log is not affected") }
            }
        }
    }
}

pub(crate) fn store(state: &AppState) -> Result<&Arc<dyn TraceStore>, ApiError> {
    state.traces.as_ref().map_err(|reason| ApiError::Unavailable {
        message: format!("the trace store could not be opened at start ({reason}); the audit log is not affected"),
    })
}

/// Parses `{"records": [...]}`: the batch's shape must be right; each record is
/// judged on its own.
fn parse_batch(body: &[u8]) -> Result<Vec<Result<TraceRecord, ValidationError>>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request("invalid_type", "the body must be {\"records\": [...]}"));
    };
    let Some(records) = obj.remove("records") else {
        return Err(ValidationError::new("missing_field", "records", "the body must be {\"records\": [...]}").into());
    };
    if let Some(other) = obj.keys().next() {
        return Err(ApiError::bad_request(
            "unknown_field",
            format!("`{other}`: a batch is {{\"records\": [...]}} with no other fields"),
        ));
    }
    let Value::Array(items) = records else {
        return Err(ValidationError::new("invalid_type", "records", "must be an array of records").into());
    };
    if items.is_empty() || items.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("records: a batch holds 1 to {MAX_BATCH_RECORDS} records, got {}", items.len()),
        ));
    }
    Ok(items
        .into_iter()
        .map(|item| {
            let record = TraceRecord::from_value(item)?;
            if record.workspace.is_system() {
                return Err(ValidationError::new(
                    "reserved_workspace",
                    "workspace",
                    format!("workspace `{}` is reserved for Custody's own events: use another", record.workspace),
                ));
            }
            Ok(record)
        })
        .collect())
}

pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(r, state.config.body_limit))?;
    // The key's scope first (its workspaces once the records are read); then a
    // store that cannot take records refuses before the batch is parsed.
    state.authorize(&caller, Scope::TraceWrite, caller.workspace(), "trace.append")?;
    let store = store(&state)?;
    let parsed = parse_batch(&body)?;
    // The key must reach every workspace the valid records name; a batch for a
    // workspace it does not reach is refused whole.
    let workspaces: BTreeSet<&str> = parsed.iter().flatten().map(|r| r.workspace.as_str()).collect();
    for workspace in &workspaces {
        state.authorize(&caller, Scope::TraceWrite, Some(workspace), "trace.append")?;
    }
    let mut rejected = Vec::new();
    let mut records = Vec::new();
    for (index, item) in parsed.into_iter().enumerate() {
        match item.and_then(StoredRecord::prepare_checked) {
            Ok(prepared) => records.push(prepared),
            Err(e) => rejected.push(json!({"index": index, "error": e.to_string(), "code": e.code})),
        }
    }
    let metrics = &state.metrics;
    metrics.trace_rejected.inc_by(rejected.len() as u64);
    let ids: Vec<String> = records.iter().map(|r| r.stored.id().to_owned()).collect();
    let accepted = records.len();
    if accepted > 0 {
        let started = Instant::now();
        let observed: Vec<(RecordKind, Option<String>, u64)> = records
            .iter()
            .map(|p| {
                let r = &p.stored.record;
                let usage = r.usage.unwrap_or_default();
                (r.kind, r.provider.clone(), usage.input_tokens + usage.output_tokens)
            })
            .collect();
        let bytes = body.len() as u64;
        match store.append_prepared(records).await {
            Ok(_new) => {
                metrics.trace_ingested(&observed, bytes, started.elapsed());
            }
            Err(error) => {
                metrics.trace_failed(&error);
                tracing::warn!(error = %error, records = accepted, "trace ingest refused");
                return Err(error.into());
            }
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": accepted, "rejected": rejected, "ids": ids}))).into_response())
}

pub async fn record(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "trace.read")?;
    let row = store(&state)?.record(&workspace, &id).await?.ok_or_else(|| ApiError::NotFound {
        message: format!(
            "workspace `{workspace}` has no trace record `{}`",
            custody_model::workspace::truncate(&id, 60)
        ),
    })?;
    Ok(Json(row).into_response())
}

const SEARCH_PARAMS: &[&str] = &[
    "workspace",
    "session_id",
    "process_id",
    "agent_name",
    "model",
    "kind",
    "status",
    "action_id",
    "since",
    "until",
    "limit",
    "cursor",
];

pub async fn records(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, SEARCH_PARAMS)?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "trace.read")?;
    let limit = params.number::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request("invalid_value", format!("`limit` must be 1 to {MAX_LIMIT}, got {limit}")));
    }
    let after = params
        .string("cursor")
        .map(|c| {
            RecordCursor::decode(&c).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_value",
                    "`cursor` is not one this server gave out: pass `next_cursor` as it came",
                )
            })
        })
        .transpose()?;
    let query = RecordQuery {
        workspace: Some(workspace),
        session_id: params.string("session_id"),
        process_id: params.string("process_id"),
        agent_name: params.string("agent_name"),
        model: params.string("model"),
        kind: params.parsed("kind", RecordKind::parse, "model_call, tool_call, retrieval, agent")?,
        status: params.parsed(
            "status",
            |s| match s {
                "ok" => Some(RecordStatus::Ok),
                "error" => Some(RecordStatus::Error),
                _ => None,
            },
            "ok, error",
        )?,
        action_id: params.string("action_id"),
        since: params.timestamp("since")?,
        until: params.timestamp("until")?,
        limit,
        after,
    };
    let page = store(&state)?.records(&query).await?;
    Ok(Json(page).into_response())
}

pub async fn session_tree(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "trace.read")?;
    let tree = store(&state)?.session_tree(&workspace, &session_id).await?.ok_or_else(|| ApiError::NotFound {
        message: format!(
            "workspace `{workspace}` has no records of session `{}`",
            custody_model::workspace::truncate(&session_id, 60)
        ),
    })?;
    Ok(Json(tree).into_response())
}

pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace", "group_by", "session_id", "since", "until"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "trace.read")?;
    let mut group_by = Vec::new();
    for name in params.string("group_by").unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let key = UsageKey::parse(name).ok_or_else(|| {
            let known: Vec<&str> = UsageKey::ALL.iter().map(UsageKey::as_str).collect();
            ApiError::bad_request(
                "invalid_value",
                format!("`group_by` takes a comma-separated list of {}; `{name}` is not one", known.join(", ")),
            )
        })?;
        if group_by.contains(&key) {
            return Err(ApiError::bad_request("invalid_value", format!("`group_by` names `{name}` twice")));
        }
        group_by.push(key);
    }
    let query = UsageQuery {
        workspace: Some(workspace),
        group_by: group_by.clone(),
        session_id: params.string("session_id"),
        since: params.timestamp("since")?,
        until: params.timestamp("until")?,
    };
    let rows = store(&state)?.usage(&query).await?;
    let groups: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let mut obj = Map::new();
            for (key, value) in group_by.iter().zip(&row.group) {
                obj.insert(key.as_str().to_owned(), json!(value));
            }
            if let Ok(Value::Object(numbers)) = serde_json::to_value(&row) {
                obj.extend(numbers.into_iter().filter(|(k, _)| k != "group"));
            }
            Value::Object(obj)
        })
        .collect();
    let keys: Vec<&str> = group_by.iter().map(UsageKey::as_str).collect();
    Ok(Json(json!({"group_by": keys, "groups": groups})).into_response())
}
