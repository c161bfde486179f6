//! `/api/v1/audit/...`: append, search, checkpoints, proofs, the public key.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_audit::{EventQuery, QueryCursor};
use custody_model::{AuditEvent, Decision, EventKind, Scope, ValidationError};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::{AppendLabels, ReasonLabels};
use crate::params::{Params, QueryPairs};

/// The most events one request may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// The default and the largest page of an audit search.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Turns a body-reading failure into our JSON error (413 for an oversized body).
pub fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::bad_request("unreadable_body", rejection.body_text())
    }
}

/// Parses a body that is one event or `{"events": [...]}`.
pub fn parse_events(body: &[u8]) -> Result<Vec<AuditEvent>, ApiError> {
    if !is_batch(body) {
        // The common case, parsed straight into the event type.
        return Ok(vec![AuditEvent::from_json(body)?]);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request("invalid_type", "the body must be an event or {\"events\": [...]}"));
    };
    if obj.len() != 1 {
        return Err(ApiError::bad_request("unknown_field", "a batch is `{\"events\": [...]}` with no other fields"));
    }
    let Some(Value::Array(items)) = obj.remove("events") else {
        return Err(ValidationError::new("invalid_type", "events", "must be an array of events").into());
    };
    if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("events: a batch holds 1 to {MAX_BATCH_EVENTS} events, got {}", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| AuditEvent::from_value(item).map_err(|e| e.within(&format!("events[{i}]")).into()))
        .collect()
}

/// Whether the body's first member is `"events"`: a batch has no other member,
/// and an event has no member of that name.
fn is_batch(body: &[u8]) -> bool {
    let rest = body.trim_ascii_start();
    rest.strip_prefix(b"{").is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"events\""))
}

pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body = body.map_err(|r| body_error(r, state.config.body_limit))?;
    let events = parse_events(&body)?;
    for event in &events {
        if event.workspace.is_system() {
            return Err(ApiError::bad_request(
                "reserved_workspace",
                format!("workspace `{}` is reserved for Custody's own events: use another", event.workspace),
            ));
        }
        state.authorize(&caller, Scope::AuditWrite, Some(event.workspace.as_str()), "audit.append")?;
    }
    let labels: Vec<AppendLabels> = events
        .iter()
        .map(|e| AppendLabels { kind: e.kind.as_str(), decision: e.decision.map_or("none", |d| d.as_str()) })
        .collect();
    let receipts = match state.audit.append(events).await {
        Ok(receipts) => receipts,
        Err(error) => {
            tracing::warn!(error = %error, "audit append refused: not durable");
            if matches!(error, custody_audit::AppendError::ShuttingDown) {
                state.metrics.append_failures.get_or_create(&ReasonLabels { reason: "shutting_down" }).inc();
            }
            return Err(error.into());
        }
    };
    for label in &labels {
        state.metrics.appends.get_or_create(label).inc();
    }
    state.metrics.append_duration.observe(started.elapsed().as_secs_f64());
    Ok((StatusCode::CREATED, Json(json!({ "receipts": receipts }))).into_response())
}

const QUERY_PARAMS: &[&str] = &[
    "workspace",
    "principal",
    "action",
    "kind",
    "decision",
    "resource_type",
    "resource_id",
    "action_id",
    "since",
    "until",
    "limit",
    "cursor",
];

pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(pairs, QUERY_PARAMS)?;
    let workspace = caller.target_workspace(params.workspace()?)?;
    state.authorize(&caller, Scope::Read, workspace.as_ref().map(|w| w.as_str()), "audit.read")?;
    let limit = params.number::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request("invalid_value", format!("`limit` must be 1 to {MAX_LIMIT}, got {limit}")));
    }
    let after = match params.string("cursor") {
        Some(c) => Some(QueryCursor::decode(&c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_value",
                "`cursor` is not one this server gave out: pass `next_cursor` as it came",
            )
        })?),
        None => None,
    };
    let query = EventQuery {
        workspace,
        principal: params.string("principal"),
        action: params.string("action"),
        kind: params.parsed("kind", EventKind::parse, &EventKind::names())?,
        decision: params.parsed("decision", Decision::parse, "allow, deny")?,
        resource_type: params.string("resource_type"),
        resource_id: params.string("resource_id"),
        action_id: params.string("action_id"),
        since: params.timestamp("since")?,
        until: params.timestamp("until")?,
        limit,
        after,
    };
    let page = state.audit.query(query).await?;
    let events: Vec<Value> = page.events.iter().map(|e| e.entry.to_api_json(&hex::encode(e.leaf_hash))).collect();
    Ok(Json(json!({"events": events, "next_cursor": page.next_cursor.map(|c| c.encode())})))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

pub async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "audit.read")?;
    let latest = state.audit.latest_checkpoint(&workspace).await?.ok_or_else(|| ApiError::NotFound {
        message: format!("workspace `{workspace}` has no log yet: it starts with its first event"),
    })?;
    Ok(text(latest.note))
}

pub async fn public_key(State(state): State<AppState>, _caller: Caller) -> Response {
    text(format!("{}\n", state.audit.verifier().to_key_string()))
}

pub async fn inclusion_proof(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace", "seq", "tree_size"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "audit.read")?;
    let seq = params.required_number("seq")?;
    let tree_size = params.required_number("tree_size")?;
    let proof = state.audit.inclusion_proof(&workspace, seq, tree_size).await?;
    Ok(Json(proof).into_response())
}

pub async fn consistency_proof(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace", "first", "second"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "audit.read")?;
    let first = params.required_number("first")?;
    let second = params.required_number("second")?;
    let proof = state.audit.consistency_proof(&workspace, first, second).await?;
    Ok(Json(proof).into_response())
}
