//! `/healthz` (the process answers), `/readyz` (each store, separately), `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
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
    // Each store is reported on its own; ready means both can take writes.
    let ready = audit["status"] == "ok" && traces["status"] == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body =
        json!({"status": if ready { "ready" } else { "not_ready" }, "stores": {"audit": audit, "traces": traces}});
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(traces) = &state.traces {
        state.metrics.trace_stats(&traces.stats());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}
