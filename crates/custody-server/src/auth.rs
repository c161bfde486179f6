//! Bearer-key authentication and authorization, and the audit trail of refusals.
//!
//! A missing or unknown key gets 401; a revoked key gets 401 and is recorded; a
//! key used outside its workspace or scope gets 403 and is recorded. Recording is
//! rate-limited per key and reason: the first refusal in a window is written at
//! once, later ones are counted and written as one summary event when the window
//! closes, so a flood of bad requests cannot flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use custody_audit::keys::{KeyRecord, token_id};
use custody_model::{ApiKeyInfo, AuditEvent, Scope, WorkspaceName};
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::ReasonLabels;

/// The window within which repeated refusals of one key are aggregated.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Distinct (key, reason) windows tracked at once; beyond this, refusals only count in metrics.
const MAX_TRACKED: usize = 10_000;

/// A request's verified key.
pub struct Caller(pub KeyRecord);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.authenticate(parts.headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()))
    }
}

impl AppState {
    /// The key an `Authorization` header (HTTP) or `authorization` metadata
    /// entry (gRPC) carries: 401 when it is missing, unknown or revoked.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let unauthenticated = |code, message: &str| ApiError::Unauthenticated { code, message: message.to_owned() };
        let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            self.metrics.auth_refusals.get_or_create(&ReasonLabels { reason: "missing_key" }).inc();
            return Err(unauthenticated(
                "missing_key",
                "this endpoint needs an API key: send `Authorization: Bearer <key>` (create keys with `custody keys create`)",
            ));
        };
        let record = self.keys.get(token_id(token)).filter(|r| r.matches(token));
        let Some(record) = record else {
            self.metrics.auth_refusals.get_or_create(&ReasonLabels { reason: "unknown_key" }).inc();
            return Err(unauthenticated("unknown_key", "the API key is not known to this server: check it for typos"));
        };
        if record.info.revoked_at.is_some() {
            let workspace = record.info.workspace.clone().unwrap_or_default();
            self.refuse(&record, "revoked", "api.request", &workspace, "the key is revoked");
            return Err(unauthenticated("revoked_key", "the API key was revoked: ask an admin for a new one"));
        }
        Ok(Caller(record))
    }
}

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.info.id
    }

    /// The workspace this key is bound to; `None` for a key valid everywhere.
    pub fn workspace(&self) -> Option<&str> {
        self.0.info.workspace.as_deref()
    }

    /// The workspace a request acts on: the one it names, else the key's own.
    pub fn target_workspace(&self, named: Option<WorkspaceName>) -> Result<Option<WorkspaceName>, ApiError> {
        match (named, self.workspace()) {
            (Some(ws), _) => Ok(Some(ws)),
            (None, Some(own)) => {
                WorkspaceName::parse(own).map(Some).map_err(|m| ApiError::bad_request("invalid_value", m))
            }
            (None, None) => Ok(None),
        }
    }
}

impl AppState {
    /// The one workspace a read is about — the one `named`, else the key's own —
    /// checked for scope `read`; `action` names the read in refusals.
    pub fn readable_workspace(
        &self,
        caller: &Caller,
        named: Option<WorkspaceName>,
        action: &str,
    ) -> Result<WorkspaceName, ApiError> {
        let workspace = caller
            .target_workspace(named)?
            .ok_or_else(|| ApiError::bad_request("missing_parameter", "the query parameter `workspace` is required"))?;
        self.authorize(caller, Scope::Read, Some(workspace.as_str()), action)?;
        Ok(workspace)
    }

    /// Checks that `caller` may do what `needed` allows in `workspace`; records and
    /// refuses with 403 when it may not.
    pub fn authorize(
        &self,
        caller: &Caller,
        needed: Scope,
        workspace: Option<&str>,
        action: &str,
    ) -> Result<(), ApiError> {
        let info = &caller.0.info;
        if !info.scope.permits(needed) {
            let target = workspace.or(info.workspace.as_deref()).unwrap_or("*").to_owned();
            let message = format!("the key's scope `{}` does not allow this; it needs `{needed}`", info.scope);
            self.refuse(&caller.0, "scope", action, &target, &message);
            return Err(ApiError::Forbidden { message: format!("{message}: use a key with that scope") });
        }
        if let (Some(own), Some(target)) = (info.workspace.as_deref(), workspace)
            && own != target
        {
            let message = format!("the key belongs to workspace `{own}` and may not access workspace `{target}`");
            self.refuse(&caller.0, "workspace", action, target, &message);
            return Err(ApiError::Forbidden { message: format!("{message}: use a key of `{target}`") });
        }
        if info.workspace.is_some() && workspace.is_none() {
            // Only keys valid everywhere may act across workspaces.
            return Err(ApiError::bad_request("missing_workspace", "name the `workspace` this request is for"));
        }
        Ok(())
    }

    /// Counts a refusal, and records it in the audit log unless this key's refusals
    /// for this reason were recorded within the window.
    pub fn refuse(&self, key: &KeyRecord, reason: &'static str, action: &str, target: &str, message: &str) {
        self.metrics.auth_refusals.get_or_create(&ReasonLabels { reason }).inc();
        if let Some(carried) = self.refusals.note(&key.info.id, reason)
            && let Some(event) = refusal_event(key, reason, action, target, message, carried + 1)
        {
            self.record_in_background(event);
        }
    }

    /// Writes the summaries of refusal windows that have closed.
    pub fn flush_refusals(&self, now: Instant) {
        for ((key_id, reason), count) in self.refusals.closed(now) {
            let Some(key) = self.keys.get(&key_id) else { continue };
            let workspace = key.info.workspace.clone().unwrap_or_default();
            let message = format!(
                "{count} further requests were refused for the same reason within {}s",
                REFUSAL_WINDOW.as_secs()
            );
            if let Some(event) = refusal_event(&key, reason, "api.request", &workspace, &message, count) {
                self.record_in_background(event);
            }
        }
    }

    fn record_in_background(&self, event: AuditEvent) {
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(error) = audit.append(vec![event]).await {
                tracing::warn!(error = %error, "could not record an authentication refusal");
            }
        });
    }
}

/// The workspace whose log holds events about a key: its own, or the system log.
pub fn key_log_workspace(key: &ApiKeyInfo) -> WorkspaceName {
    key.workspace.as_deref().and_then(|w| WorkspaceName::parse(w).ok()).unwrap_or_else(WorkspaceName::system)
}

fn refusal_event(
    key: &KeyRecord,
    reason: &str,
    action: &str,
    target: &str,
    message: &str,
    count: u64,
) -> Option<AuditEvent> {
    let ws = key_log_workspace(&key.info);
    let boundary = format!("workspace:{}/scope:{}", key.info.workspace.as_deref().unwrap_or("*"), key.info.scope);
    AuditEvent::from_value(json!({
        "workspace": ws.as_str(),
        "kind": "authz.decision",
        "principal": {"type": "api_key", "id": key.info.id},
        "action": action,
        "resource": {"type": "workspace", "id": if target.is_empty() { "*" } else { target }},
        "decision": "deny",
        "reason": message,
        "credential": {"type": "api_key", "id": key.info.id, "boundary": boundary},
        "attributes": {"refusal": reason, "refused_requests": count},
    }))
    .ok()
}

/// A key id and the reason its requests were refused.
type RefusalKey = (String, &'static str);

/// Per (key, reason) windows of refusals: when each opened, and how many
/// refusals it has suppressed since.
#[derive(Default)]
pub struct RefusalWindows {
    windows: Mutex<HashMap<RefusalKey, (Instant, u64)>>,
}

impl RefusalWindows {
    /// Notes one refusal. `Some(n)` when it opens a new window and must be recorded
    /// now, standing also for `n` earlier refusals of a closed window not yet flushed.
    pub fn note(&self, key_id: &str, reason: &'static str) -> Option<u64> {
        let mut windows = self.windows.lock().ok()?;
        let now = Instant::now();
        let key = (key_id.to_owned(), reason);
        let full = windows.len() >= MAX_TRACKED;
        let carried = match windows.get_mut(&key) {
            Some((opened, suppressed)) if now.duration_since(*opened) < REFUSAL_WINDOW => {
                *suppressed += 1;
                return None;
            }
            Some((_, suppressed)) => *suppressed,
            None if full => return None,
            None => 0,
        };
        windows.insert(key, (now, 0));
        Some(carried)
    }

    /// Removes the windows that closed by `now`; returns those with suppressed refusals.
    pub fn closed(&self, now: Instant) -> Vec<(RefusalKey, u64)> {
        let Ok(mut windows) = self.windows.lock() else { return Vec::new() };
        let mut out = Vec::new();
        windows.retain(|key, (opened, suppressed)| {
            if now.duration_since(*opened) < REFUSAL_WINDOW {
                return true;
            }
            if *suppressed > 0 {
                out.push((key.clone(), *suppressed));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_open_one_window_per_key_and_reason_and_summarise_the_rest() {
        let windows = RefusalWindows::default();
        assert_eq!(windows.note("k1", "scope"), Some(0));
        for _ in 0..500 {
            assert_eq!(windows.note("k1", "scope"), None);
        }
        assert_eq!(windows.note("k1", "workspace"), Some(0));
        assert_eq!(windows.note("k2", "scope"), Some(0));
        assert!(windows.closed(Instant::now()).is_empty(), "windows still open");
        let later = Instant::now() + REFUSAL_WINDOW;
        let mut closed = windows.closed(later);
        closed.sort();
        assert_eq!(closed, vec![(("k1".to_owned(), "scope"), 500)]);
        assert_eq!(windows.note("k1", "scope"), Some(0), "a new window opens after the old one closed");
    }
}
