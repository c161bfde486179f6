//! `/api/v1/keys`: create, list and revoke API keys (admin scope).
//!
//! Each change is recorded in the audit log *before* it takes effect: if the
//! record cannot be made durable, the key is neither created nor revoked.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_audit::keys::{KeyRecord, generate_token, hash_token};
use custody_model::{ApiKeyInfo, AuditEvent, Scope, Timestamp, WorkspaceName};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::audit_api::body_error;
use crate::auth::{Caller, key_log_workspace};
use crate::error::ApiError;
use crate::params::{Params, QueryPairs};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    workspace: String,
    scope: String,
    #[serde(default)]
    label: Option<String>,
}

/// The audit event of a key's creation or revocation, by `actor`.
pub fn key_event(kind: &str, actor: Option<&KeyRecord>, key: &ApiKeyInfo) -> Result<AuditEvent, ApiError> {
    let ws = key_log_workspace(key);
    let (principal_type, principal_id, boundary) = match actor {
        Some(a) => (
            "api_key",
            a.info.id.clone(),
            Some(format!("workspace:{}/scope:{}", a.info.workspace.as_deref().unwrap_or("*"), a.info.scope)),
        ),
        None => ("system", "custody".to_owned(), None),
    };
    let mut event = json!({
        "workspace": ws.as_str(),
        "kind": kind,
        "principal": {"type": principal_type, "id": principal_id},
        "action": if kind == "api_key.created" { "api_key.create" } else { "api_key.revoke" },
        "resource": {"type": "api_key", "id": key.id, "attributes": {
            "workspace": key.workspace.as_deref().unwrap_or("*"),
            "scope": key.scope.as_str(),
        }},
    });
    if let Some(boundary) = boundary {
        event["credential"] = json!({"type": "api_key", "id": principal_id, "boundary": boundary});
    }
    AuditEvent::from_value(event).map_err(ApiError::from)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(r, state.config.body_limit))?;
    let request: CreateKey = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("{e}; send {{\"workspace\": \"acme\", \"scope\": \"audit:write\", \"label\": \"optional\"}}"),
        )
    })?;
    let workspace = WorkspaceName::parse(&request.workspace)
        .map_err(|m| ApiError::bad_request("invalid_value", format!("workspace: {m}")))?;
    if workspace.is_system() {
        return Err(ApiError::bad_request("reserved_workspace", format!("workspace `{workspace}` is reserved")));
    }
    let scope =
        Scope::parse(&request.scope).map_err(|m| ApiError::bad_request("invalid_value", format!("scope: {m}")))?;
    if let Some(label) = &request.label
        && (label.len() > 200 || label.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request("invalid_value", "label: at most 200 characters, no control characters"));
    }
    state.authorize(&caller, Scope::Admin, Some(workspace.as_str()), "api_key.create")?;
    let (id, token) =
        generate_token().map_err(|e| ApiError::Unavailable { message: format!("no randomness for a new key: {e}") })?;
    let info = ApiKeyInfo {
        id,
        workspace: Some(workspace.to_string()),
        scope,
        label: request.label,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    state.audit.append(vec![key_event("api_key.created", Some(&caller.0), &info)?]).await?;
    state.keys.insert(KeyRecord { info: info.clone(), token_hash: hash_token(&token) }).await?;
    tracing::info!(key_id = %info.id, workspace = %workspace, scope = %scope, by = %caller.id(), "api key created");
    Ok((StatusCode::CREATED, Json(json!({"key": token, "info": info}))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryPairs(pairs): QueryPairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::new(pairs, &["workspace"])?;
    let workspace = caller.target_workspace(params.workspace()?)?;
    state.authorize(&caller, Scope::Admin, workspace.as_ref().map(|w| w.as_str()), "api_key.list")?;
    let keys: Vec<ApiKeyInfo> = state
        .keys
        .list()
        .into_iter()
        .map(|r| r.info)
        .filter(|info| workspace.as_ref().is_none_or(|w| info.workspace.as_deref() == Some(w.as_str())))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let not_found = || ApiError::NotFound { message: format!("no API key has the id `{id}`: see `custody keys list`") };
    let key = state.keys.get(&id).ok_or_else(not_found)?;
    match key.info.workspace.as_deref() {
        Some(ws) => state.authorize(&caller, Scope::Admin, Some(ws), "api_key.revoke")?,
        // A key valid everywhere can be revoked only by another such key.
        None if caller.workspace().is_none() => state.authorize(&caller, Scope::Admin, None, "api_key.revoke")?,
        None => {
            return Err(ApiError::Forbidden {
                message: "only a key valid in every workspace may revoke this key".into(),
            });
        }
    }
    if key.info.revoked_at.is_some() {
        return Ok(Json(json!({ "info": key.info })));
    }
    state.audit.append(vec![key_event("api_key.revoked", Some(&caller.0), &key.info)?]).await?;
    let revoked = state.keys.revoke(&id, Timestamp::now()).await?.ok_or_else(not_found)?;
    tracing::info!(key_id = %id, by = %caller.id(), "api key revoked");
    Ok(Json(json!({ "info": revoked.info })))
}
