//! `GET /api/v1/custody/actions/{action_id}`: the chain of custody of one
//! action, assembled from the audit log and the trace store independently.
//! A store that cannot answer is reported as unavailable and the other side
//! still shows; neither side's reads depend on the other's success.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use custody_audit::{AuditLog, EventQuery, QueryCursor, StoredEvent};
use custody_chain::{ActionReport, Answers, AuditSide, ProvenEntry, REPORT_FORMAT, TraceSide, Witness, text_at};
use custody_model::{EventKind, Timestamp, WorkspaceName};
use custody_trace::{RecordQuery, TraceRow, TraceStore};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Params, QueryPairs};

/// The most events or records one side of a report gathers.
const MAX_ITEMS: usize = 10_000;

pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path(action_id): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let params = Params::new(pairs, &["workspace"])?;
    let workspace = state.readable_workspace(&caller, params.workspace()?, "custody.read")?;
    let report = report(&state, &workspace, &action_id).await;
    let empty_audit = report.audit.available().is_some_and(|a| a.events.is_empty());
    let empty_trace = report.trace.available().is_some_and(|t| t.records.is_empty());
    if empty_audit && empty_trace {
        return Err(ApiError::NotFound {
            message: format!(
                "no audit event and no trace record of workspace `{workspace}` names action `{action_id}`: check the id and the workspace"
            ),
        });
    }
    Ok(Json(report).into_response())
}

/// The report of `action_id` from the server's stores (the API's and the dashboard's).
pub(crate) async fn report(state: &AppState, workspace: &WorkspaceName, action_id: &str) -> ActionReport {
    let traces = crate::trace_api::store(state).map(|t| t.as_ref()).map_err(|e| e.to_string());
    assemble(state.audit.as_ref(), traces, workspace, action_id).await
}

/// The report of `action_id`, each side read on its own.
pub async fn assemble(
    audit: &dyn AuditLog,
    traces: Result<&dyn TraceStore, String>,
    workspace: &WorkspaceName,
    action_id: &str,
) -> ActionReport {
    let audit = match audit_side(audit, workspace, action_id).await {
        Ok(side) => Witness::Available(side),
        Err(error) => Witness::Unavailable { error: format!("the audit log could not answer: {error}") },
    };
    let decision = audit.available().and_then(AuditSide::decision).cloned();
    let named_calls: Vec<String> =
        audit.available().into_iter().flat_map(AuditSide::named_model_calls).map(|(_, id)| id.to_owned()).collect();
    let trace = match traces {
        Ok(store) => match trace_side(store, workspace, action_id, decision.as_ref(), &named_calls).await {
            Ok(side) => Witness::Available(side),
            Err(error) => Witness::Unavailable { error: format!("the trace store could not answer: {error}") },
        },
        Err(error) => Witness::Unavailable { error },
    };
    let answers = Answers::derive(audit.available(), trace.available());
    ActionReport {
        format: REPORT_FORMAT,
        action_id: action_id.to_owned(),
        workspace: workspace.to_string(),
        generated_at: Timestamp::now().to_string(),
        audit,
        trace,
        answers,
    }
}

/// Every event of a query, page after page (at most [`MAX_ITEMS`]).
async fn all_events(audit: &dyn AuditLog, query: EventQuery) -> Result<Vec<StoredEvent>, String> {
    let mut out = Vec::new();
    let mut after: Option<QueryCursor> = None;
    loop {
        let page = audit
            .query(EventQuery { after: after.clone(), limit: 1000, ..query.clone() })
            .await
            .map_err(|e| e.to_string())?;
        out.extend(page.events);
        match page.next_cursor {
            Some(next) if out.len() < MAX_ITEMS => after = Some(next),
            _ => return Ok(out),
        }
    }
}

async fn audit_side(audit: &dyn AuditLog, workspace: &WorkspaceName, action_id: &str) -> Result<AuditSide, String> {
    let base = EventQuery { workspace: Some(workspace.clone()), ..EventQuery::default() };
    let events = all_events(audit, EventQuery { action_id: Some(action_id.to_owned()), ..base.clone() }).await?;
    let decision =
        events.iter().find(|e| text_at(&e.entry.event, &["kind"]) == Some(EventKind::AuthzDecision.as_str()));
    let mut grants = Vec::new();
    let mut credential_events = Vec::new();
    if let Some(decision) = decision {
        let event = &decision.entry.event;
        // A role event names its grantee as its resource; the ceiling may come from the user acted for.
        let grantees: BTreeSet<&str> =
            [text_at(event, &["principal", "id"]), text_at(event, &["principal", "on_behalf_of"])]
                .into_iter()
                .flatten()
                .collect();
        for grantee in grantees {
            for kind in [EventKind::RoleGranted, EventKind::RoleRevoked] {
                let query = EventQuery { kind: Some(kind), resource_id: Some(grantee.to_owned()), ..base.clone() };
                grants.extend(all_events(audit, query).await?.into_iter().filter(|e| e.entry.seq < decision.entry.seq));
            }
        }
        grants.sort_by_key(|e| e.entry.seq);
        grants.dedup_by_key(|e| e.entry.seq);
        if let Some(credential) = text_at(event, &["credential", "id"]) {
            let query = EventQuery { resource_id: Some(credential.to_owned()), ..base.clone() };
            credential_events.extend(
                all_events(audit, query)
                    .await?
                    .into_iter()
                    .filter(|e| text_at(&e.entry.event, &["kind"]).is_some_and(|k| k.starts_with("api_key."))),
            );
        }
    }
    // Read after the events, so that it covers every one of them.
    let checkpoint = audit
        .latest_checkpoint(workspace)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("workspace `{workspace}` has no signed checkpoint yet"))?;
    let tree_size = checkpoint.tree_size;
    let prove = async |events: Vec<StoredEvent>| -> Result<Vec<ProvenEntry>, String> {
        let mut out = Vec::with_capacity(events.len());
        for e in events.into_iter().filter(|e| e.entry.seq < tree_size) {
            let seq = e.entry.seq;
            let raw = audit.entries(workspace, seq, 1).await.map_err(|e| e.to_string())?;
            let raw = raw.into_iter().find(|r| r.seq == seq).ok_or_else(|| format!("entry {seq} is not in the log"))?;
            let proof = audit.inclusion_proof(workspace, seq, tree_size).await.map_err(|e| e.to_string())?;
            let leaf_hash = hex::encode(raw.leaf_hash);
            out.push(ProvenEntry {
                seq,
                recorded_at: e.entry.recorded_at.to_string(),
                entry: String::from_utf8(raw.payload).map_err(|_| format!("entry {seq} is not UTF-8"))?,
                event: e.entry.to_api_json(&leaf_hash),
                leaf_hash,
                proof: proof.hashes,
            });
        }
        Ok(out)
    };
    let events = prove(events).await?;
    let grants = prove(grants).await?;
    let credential_events = prove(credential_events).await?;
    Ok(AuditSide {
        public_key: audit.verifier().to_key_string(),
        checkpoint: checkpoint.note,
        tree_size,
        events,
        grants,
        credential_events,
    })
}

/// Every record of a query, page after page (at most [`MAX_ITEMS`]).
async fn all_records(store: &dyn TraceStore, query: RecordQuery) -> Result<Vec<TraceRow>, String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page =
            store.records(&RecordQuery { after, limit: 1000, ..query.clone() }).await.map_err(|e| e.to_string())?;
        out.extend(page.records);
        match page.next_cursor.as_deref().and_then(custody_trace::RecordCursor::decode) {
            Some(next) if out.len() < MAX_ITEMS => after = Some(next),
            _ => return Ok(out),
        }
    }
}

/// The records that name the action, the model calls its events name, and —
/// when the decision says where in a swarm it was taken — the records of the
/// deciding process and its ancestors up to the decision.
async fn trace_side(
    store: &dyn TraceStore,
    workspace: &WorkspaceName,
    action_id: &str,
    decision: Option<&ProvenEntry>,
    named_calls: &[String],
) -> Result<TraceSide, String> {
    let base = RecordQuery { workspace: Some(workspace.clone()), ..RecordQuery::default() };
    let mut rows = all_records(store, RecordQuery { action_id: Some(action_id.to_owned()), ..base.clone() }).await?;
    for id in named_calls {
        if let Some(row) = store.record(workspace, id).await.map_err(|e| e.to_string())? {
            rows.push(row);
        }
    }
    let at = decision.and_then(|d| {
        let e = &d.event;
        text_at(e, &["occurred_at"]).or_else(|| text_at(e, &["recorded_at"])).and_then(|t| Timestamp::parse(t).ok())
    });
    let session = decision.and_then(|d| text_at(&d.event, &["session", "session_id"]));
    let process = decision.and_then(|d| text_at(&d.event, &["session", "process_id"]));
    if let (Some(session), Some(process)) = (session, process) {
        let of_session: Vec<TraceRow> =
            all_records(store, RecordQuery { session_id: Some(session.to_owned()), ..base.clone() })
                .await?
                .into_iter()
                .filter(|r| at.is_none_or(|at| r.record.started_at <= at))
                .collect();
        let lineage: Vec<String> = of_session
            .iter()
            .find(|r| r.record.process_id == process)
            .map_or_else(|| vec![process.to_owned()], |r| r.process_path.clone());
        rows.extend(of_session.into_iter().filter(|r| lineage.contains(&r.record.process_id)));
    }
    rows.sort_by(|a, b| (a.record.started_at, a.id()).cmp(&(b.record.started_at, b.id())));
    rows.dedup_by(|a, b| a.id() == b.id());
    let sessions: BTreeSet<String> = rows.iter().map(|r| r.record.session_id.clone()).collect();
    let records = rows.iter().map(serde_json::to_value).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    Ok(TraceSide { sessions: sessions.into_iter().collect(), records })
}
