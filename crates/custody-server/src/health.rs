//! `/healthz` (the process answers), `/readyz` (each store, separately), `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::params::{Params, QueryPairs};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness of each store. `/readyz` answers 200 while at least one store can
/// take writes (`"ready"` when both can, `"degraded"` when one cannot), so a
/// broken trace store does not take the audit API out of a load balancer, nor
/// the reverse; `/readyz?store=audit` or `?store=traces` answers for one store
/// alone (503 when it cannot take writes), for routing each API on its own.
pub async fn readyz(State(state): State<AppState>, QueryPairs(pairs): QueryPairs) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["store"])?;
    let only = params.parsed("store", |s| ["audit", "traces"].contains(&s).then(|| s.to_owned()), "audit, traces")?;
    let audit = match state.audit.health().await {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "unavailable", "error": e.to_string()}),
    };
    let traces = match &state.traces {
        Ok(store) => match store.health().await {
            Ok(()) => json!({"status": "ok"}),
            Err(e) => json!({"status": "unavailable", "error": e.to_string()}),
        },
        Err(reason) => json!({"status": "unavailable", "error": format!("not opened: {reason}")}),
    };
    let ok = |v: &serde_json::Value| v["status"] == "ok";
    let (status, body) = match only.as_deref() {
        Some(name) => {
            let store = if name == "audit" { audit } else { traces };
            let code = if ok(&store) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (code, json!({"status": if ok(&store) { "ready" } else { "not_ready" }, "stores": {name: store}}))
        }
        None => {
            let (status, word) = match (ok(&audit), ok(&traces)) {
                (true, true) => (StatusCode::OK, "ready"),
                (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
                _ => (StatusCode::OK, "degraded"),
            };
            (status, json!({"status": word, "stores": {"audit": audit, "traces": traces}}))
        }
    };
    Ok((status, Json(body)).into_response())
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(traces) = &state.traces {
        state.metrics.trace_stats(&traces.stats());
    }
    crate::otlp_api::observe(&state);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}
