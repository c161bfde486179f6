//! The dashboard at `/`: server-rendered HTML, no scripts, no external assets.
//! Sign-in takes a key with scope `read` (or `admin`) and keeps it in memory
//! behind a random session cookie (HttpOnly, SameSite=Strict); every page
//! authenticates that key again, so a revoked key ends its sessions. Pages:
//! the workspaces' logs and their verification, audit search, an action's
//! chain of custody with both witnesses side by side, a session's process
//! tree, and one model call in full.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use custody_audit::EventQuery;
use custody_audit::verify::verify_workspace;
use custody_chain::{ProvenEntry, Witness, text_at};
use custody_model::{Scope, Timestamp, WorkspaceName};
use custody_trace::ProcessNode;
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

const COOKIE: &str = "custody_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Signed-in sessions: a random token → the key it signed in with.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    fn open(&self, key: String) -> Option<String> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).ok()?;
        let token = hex::encode(token);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        open.retain(|_, (_, until)| *until > now);
        open.insert(token.clone(), (key, now + SESSION_LIFETIME));
        Some(token)
    }

    fn key(&self, token: &str) -> Option<String> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(token).filter(|(_, until)| *until > Instant::now()).map(|(key, _)| key.clone())
    }

    fn close(&self, token: &str) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .map(str::to_owned)
}

/// HTML-escapes text.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one query value or path segment.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}\
header a{color:#cfe0ff;text-decoration:none}main{padding:1em 1.5em;max-width:1400px}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #dde1e7;padding:.3em .5em;\
text-align:left;vertical-align:top}th{background:#eef1f5}.cols{display:grid;grid-template-columns:1fr 1fr;gap:1.2em}\
.box{background:#fff;border:1px solid #dde1e7;padding:.8em 1em;margin-bottom:1em}.ok{color:#176b2c}\
.bad{color:#a3141c;font-weight:600}pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f6;padding:.5em}\
dt{font-weight:600}dd{margin:0 0 .5em 0}ul.tree{list-style:none;padding-left:1.2em;border-left:2px solid #dde1e7}\
form.inline{display:inline}input,button{font:inherit;padding:.2em .4em}";

fn page(title: &str, signed_in: bool, body: &str) -> Response {
    let nav = if signed_in {
        "<a href=\"/\">Logs</a><a href=\"/audit\">Audit search</a>\
         <form class=\"inline\" method=\"post\" action=\"/signout\"><button>Sign out</button></form>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Custody</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><strong>Custody</strong>{nav}</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    );
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    // No scripts, styles only from this page, nothing framed or fetched from elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn sign_in_page(message: Option<&str>) -> Response {
    let note = message.map(|m| format!("<p class=\"bad\">{}</p>", esc(m))).unwrap_or_default();
    page(
        "Sign in",
        false,
        &format!(
            "{note}<form method=\"post\" action=\"/signin\" class=\"box\"><p>Sign in with an API key of scope \
             <code>read</code> (or <code>admin</code>): <code>custody keys create --scope read</code>.</p>\
             <label>API key <input type=\"password\" name=\"key\" size=\"60\" autocomplete=\"off\" required></label> \
             <button>Sign in</button></form>"
        ),
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let mut response = page("Not shown", true, &format!("<p class=\"bad\">{}</p>", esc(message)));
    *response.status_mut() = status;
    response
}

/// The caller behind the session cookie, or the sign-in page to show instead.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let key =
        session_token(headers).and_then(|t| state.sessions.key(&t)).ok_or_else(|| Box::new(sign_in_page(None)))?;
    state
        .authenticate(Some(&format!("Bearer {key}")))
        .map_err(|_| Box::new(sign_in_page(Some("the key of this session is no longer valid: sign in again"))))
}

/// [`reader`], and the trace store the page reads.
fn trace_reader<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    named: Option<&str>,
) -> Result<(WorkspaceName, &'a dyn custody_trace::TraceStore), Box<Response>> {
    let ws = reader(state, headers, named)?;
    let store = crate::trace_api::store(state).map_err(refused)?;
    Ok((ws, store.as_ref()))
}

/// The signed-in caller and the workspace the page is about, checked for `read`.
fn reader(state: &AppState, headers: &HeaderMap, named: Option<&str>) -> Result<WorkspaceName, Box<Response>> {
    let caller = signed_in(state, headers)?;
    workspace_of(state, &caller, named)
}

/// The workspace a page is about — the one named, else the key's own — checked
/// for `read` as on the API.
fn workspace_of(state: &AppState, caller: &Caller, named: Option<&str>) -> Result<WorkspaceName, Box<Response>> {
    let named = named.filter(|w| !w.is_empty()).map(WorkspaceName::parse).transpose();
    let named = named.map_err(|m| refused(ApiError::bad_request("invalid_value", format!("workspace: {m}"))))?;
    state.readable_workspace(caller, named, "dashboard.read").map_err(refused)
}

/// An API refusal as a page, with its status.
fn refused(error: ApiError) -> Box<Response> {
    Box::new(error_page(error.status(), &error.to_string()))
}

#[derive(Deserialize)]
pub struct SignIn {
    key: String,
}

pub async fn sign_in(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    let key = form.key.trim().to_owned();
    let caller = match state.authenticate(Some(&format!("Bearer {key}"))) {
        Ok(caller) => caller,
        Err(_) => return with_status(sign_in_page(Some("that key is not valid here")), StatusCode::UNAUTHORIZED),
    };
    if state.authorize(&caller, Scope::Read, caller.workspace(), "dashboard.sign_in").is_err() {
        return with_status(
            sign_in_page(Some("that key cannot read: use a key of scope read or admin")),
            StatusCode::FORBIDDEN,
        );
    }
    let Some(token) = state.sessions.open(key) else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a session token");
    };
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_LIFETIME.as_secs());
    ([(header::SET_COOKIE, cookie), (header::LOCATION, "/".to_owned())], StatusCode::SEE_OTHER).into_response()
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        state.sessions.close(&token);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie), (header::LOCATION, "/".to_owned())], StatusCode::SEE_OTHER).into_response()
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// `/`: each workspace log the key reads, its latest checkpoint, and "verify now".
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match signed_in(&state, &headers) {
        Ok(c) => c,
        Err(page) => return *page,
    };
    let workspaces = match caller.workspace() {
        Some(own) => WorkspaceName::parse(own).into_iter().collect(),
        None => match state.audit.workspaces().await {
            Ok(all) => all,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
    };
    let mut body = String::from(
        "<table><tr><th>workspace</th><th>entries</th><th>latest signed checkpoint</th><th>verification</th></tr>",
    );
    for ws in workspaces.iter().filter(|w| !w.is_system()) {
        let checkpoint = match state.audit.latest_checkpoint(ws).await {
            Ok(Some(cp)) => cp,
            Ok(None) => continue,
            Err(e) => {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td colspan=3 class=\"bad\">{}</td></tr>",
                    esc(ws.as_str()),
                    esc(&e.to_string())
                );
                continue;
            }
        };
        let first_line = checkpoint.note.lines().take(3).collect::<Vec<_>>().join(" · ");
        let _ = write!(
            body,
            "<tr><td><a href=\"/audit?workspace={w}\">{ws}</a></td><td>{}</td><td><code>{}</code></td>\
             <td><form method=\"post\" action=\"/verify?workspace={w}\"><button>Verify now</button></form></td></tr>",
            checkpoint.tree_size,
            esc(&first_line),
            w = enc(ws.as_str()),
            ws = esc(ws.as_str()),
        );
    }
    body.push_str("</table>");
    let _ =
        write!(body, "<p>Checkpoints are signed by <code>{}</code>.</p>", esc(&state.audit.verifier().to_key_string()));
    page("Workspace logs", true, &body)
}

#[derive(Deserialize, Default)]
pub struct WorkspaceParam {
    workspace: Option<String>,
}

/// `POST /verify`: recomputes every entry's leaf hash and the tree's root, and
/// checks them against the latest checkpoint and its signature.
pub async fn verify(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<WorkspaceParam>) -> Response {
    let ws = match reader(&state, &headers, q.workspace.as_deref()) {
        Ok(ws) => ws,
        Err(page) => return *page,
    };
    let outcome = verify_log(&state, &ws).await;
    let body = match outcome {
        Ok(text) => format!("<p class=\"ok\" id=\"verdict\">intact — {}</p>", esc(&text)),
        Err(text) => format!("<p class=\"bad\" id=\"verdict\">NOT intact — {}</p>", esc(&text)),
    };
    page(&format!("Verification of {ws}"), true, &format!("{body}<p><a href=\"/\">Back to the logs</a></p>"))
}

/// The offline verifier's check of one workspace log (`custody verify`), run
/// through the server's store.
async fn verify_log(state: &AppState, ws: &WorkspaceName) -> Result<String, String> {
    let verifier = state.audit.verifier();
    let (summary, findings) =
        verify_workspace(state.audit.as_ref(), &verifier, ws, &mut |_, _| {}).await.map_err(|e| e.to_string())?;
    if !findings.is_empty() {
        return Err(findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    Ok(format!(
        "{} entries recomputed; the roots of all {} signed checkpoints match and their signatures verify",
        summary.entries, summary.checkpoints
    ))
}

#[derive(Deserialize, Default)]
pub struct SearchParams {
    workspace: Option<String>,
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn opt(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `/audit`: search by principal, action, resource and time.
pub async fn audit(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<SearchParams>) -> Response {
    let ws = match reader(&state, &headers, q.workspace.as_deref()) {
        Ok(ws) => ws,
        Err(page) => return *page,
    };
    let time = |v: &Option<String>, name: &str| {
        opt(v).map(|t| Timestamp::parse(&t).map_err(|_| format!("`{name}` is not an RFC 3339 time: {t}"))).transpose()
    };
    let (since, until) = match (time(&q.since, "since"), time(&q.until, "until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let value = |v: &Option<String>| esc(&opt(v).unwrap_or_default());
    let mut body = format!(
        "<form method=\"get\" action=\"/audit\" class=\"box\"><input type=\"hidden\" name=\"workspace\" value=\"{}\">\
         <label>principal <input name=\"principal\" value=\"{}\"></label> <label>action <input name=\"action\" value=\"{}\"></label> \
         <label>resource id <input name=\"resource\" value=\"{}\"></label> <label>since <input name=\"since\" value=\"{}\" placeholder=\"2026-12-01T00:00:00Z\"></label> \
         <label>until <input name=\"until\" value=\"{}\"></label> <button>Search</button></form>",
        esc(ws.as_str()),
        value(&q.principal),
        value(&q.action),
        value(&q.resource),
        value(&q.since),
        value(&q.until)
    );
    let query = EventQuery {
        workspace: Some(ws.clone()),
        principal: opt(&q.principal),
        action: opt(&q.action),
        resource_id: opt(&q.resource),
        since,
        until,
        limit: 200,
        ..EventQuery::default()
    };
    let page_of = match state.audit.query(query).await {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("the audit log could not answer: {e}")),
    };
    body.push_str("<table><tr><th>seq</th><th>when</th><th>kind</th><th>principal</th><th>action</th><th>resource</th><th>decision</th><th>action id</th></tr>");
    for e in &page_of.events {
        let ev = &e.entry.event;
        let action_id = text_at(ev, &["action_id"]).map_or(String::new(), |id| {
            format!("<a href=\"/actions/{}?workspace={}\">{}</a>", enc(id), enc(ws.as_str()), esc(id))
        });
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{action_id}</td></tr>",
            e.entry.seq,
            esc(text_at(ev, &["occurred_at"]).unwrap_or(&e.entry.recorded_at.to_string())),
            esc(text_at(ev, &["kind"]).unwrap_or("")),
            esc(text_at(ev, &["principal", "id"]).unwrap_or("")),
            esc(text_at(ev, &["action"]).unwrap_or("")),
            esc(text_at(ev, &["resource", "type"]).unwrap_or("")),
            esc(text_at(ev, &["resource", "id"]).unwrap_or("")),
            esc(text_at(ev, &["decision"]).unwrap_or("")),
        );
    }
    body.push_str("</table>");
    if page_of.next_cursor.is_some() {
        body.push_str("<p>The first 200 events are shown: narrow the search to see the rest.</p>");
    }
    page(&format!("Audit search — {ws}"), true, &body)
}

fn entry_rows(out: &mut String, title: &str, entries: &[ProvenEntry]) {
    if entries.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h3>{}</h3><table><tr><th>seq</th><th>kind</th><th>principal</th><th>details</th></tr>",
        esc(title)
    );
    for e in entries {
        let ev = &e.event;
        let mut details = String::new();
        for key in ["action", "decision", "severity", "ceiling", "reason"] {
            if let Some(v) = text_at(ev, &[key]) {
                let _ = write!(details, "{key}: {}<br>", esc(v));
            }
        }
        if let Some(r) = ev.get("resource") {
            let _ = write!(
                details,
                "resource: {} {}<br>",
                esc(text_at(r, &["type"]).unwrap_or("")),
                esc(text_at(r, &["id"]).unwrap_or(""))
            );
        }
        for key in ["approval", "credential", "effect", "access_path", "policies"] {
            if let Some(v) = ev.get(key) {
                let _ = write!(details, "{key}: <code>{}</code><br>", esc(&v.to_string()));
            }
        }
        let principal = ev.get("principal").map_or(String::new(), |p| {
            let behalf = text_at(p, &["on_behalf_of"]).map(|u| format!(" (for {})", esc(u))).unwrap_or_default();
            format!("{} {}{behalf}", esc(text_at(p, &["type"]).unwrap_or("")), esc(text_at(p, &["id"]).unwrap_or("")))
        });
        let _ = write!(
            out,
            "<tr><td>{}<br><small>proof: {} hashes</small></td><td>{}</td><td>{principal}</td><td>{details}</td></tr>",
            e.seq,
            e.proof.len(),
            esc(text_at(ev, &["kind"]).unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

/// `/actions/{id}`: the chain of custody, both witnesses side by side.
pub async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action_id): Path<String>,
    Query(q): Query<WorkspaceParam>,
) -> Response {
    let ws = match reader(&state, &headers, q.workspace.as_deref()) {
        Ok(ws) => ws,
        Err(page) => return *page,
    };
    let report = crate::custody_api::report(&state, &ws, &action_id).await;
    let bundle_check = match custody_chain::verify_bundle(&serde_json::to_vec(&report).unwrap_or_default(), None) {
        Ok(_) => "<p class=\"ok\">Every audit entry below is proven against the signed checkpoint; every trace record matches its content hash.</p>".to_owned(),
        Err(e) => format!("<p class=\"bad\">The report does not verify: {}</p>", esc(&e.to_string())),
    };
    let a = &report.answers;
    let none = "—".to_owned();
    let mut body = format!(
        "<div class=\"box\"><dl><dt>What did the agent do?</dt><dd id=\"what\">{}</dd>\
         <dt>Who authorized it?</dt><dd id=\"authorized\">{}</dd><dt>Which model produced the output?</dt><dd id=\"models\">{}</dd>\
         <dt>What data did it consider?</dt><dd id=\"data\">{}</dd></dl>{bundle_check}</div><div class=\"cols\"><section class=\"box\"><h2>Audit log</h2>",
        esc(a.what.as_ref().unwrap_or(&none)),
        esc(a.authorized.as_ref().unwrap_or(&none)),
        esc(&if a.models.is_empty() { none.clone() } else { a.models.join("; ") }),
        esc(&if a.data_considered.is_empty() { none.clone() } else { a.data_considered.join(", ") }),
    );
    match &report.audit {
        Witness::Available(side) => {
            let _ = write!(body, "<p>Checkpoint of {} entries.</p>", side.tree_size);
            entry_rows(&mut body, "The action's events", &side.events);
            entry_rows(&mut body, "Roles in force before the decision", &side.grants);
            entry_rows(&mut body, "The credential's lifecycle", &side.credential_events);
        }
        Witness::Unavailable { error } => {
            let _ = write!(body, "<p class=\"bad\">Unavailable: {}</p>", esc(error));
        }
    }
    body.push_str("</section><section class=\"box\"><h2>Trace store</h2>");
    match &report.trace {
        Witness::Available(side) => {
            for session in &side.sessions {
                let _ = write!(
                    body,
                    "<p>Session <a href=\"/sessions/{}?workspace={}\">{}</a></p>",
                    enc(session),
                    enc(ws.as_str()),
                    esc(session)
                );
            }
            body.push_str(
                "<table><tr><th>started</th><th>kind</th><th>agent</th><th>model</th><th>content hash</th></tr>",
            );
            for r in &side.records {
                let id = text_at(r, &["id"]).unwrap_or("");
                let model = [text_at(r, &["provider"]), text_at(r, &["model"]), text_at(r, &["model_version"])]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = write!(
                    body,
                    "<tr><td><a href=\"/calls/{}?workspace={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}…</code></td></tr>",
                    enc(id),
                    enc(ws.as_str()),
                    esc(text_at(r, &["started_at"]).unwrap_or("")),
                    esc(text_at(r, &["kind"]).unwrap_or("")),
                    esc(text_at(r, &["agent_name"]).unwrap_or(text_at(r, &["process_id"]).unwrap_or(""))),
                    esc(&model),
                    esc(&text_at(r, &["content_hash"]).unwrap_or("").chars().take(16).collect::<String>()),
                );
            }
            body.push_str("</table>");
        }
        Witness::Unavailable { error } => {
            let _ = write!(body, "<p class=\"bad\">Unavailable: {}</p>", esc(error));
        }
    }
    body.push_str("</section></div>");
    page(&format!("Chain of custody of {action_id}"), true, &body)
}

fn tree_node(out: &mut String, node: &ProcessNode, ws: &str) {
    let s = &node.subtree;
    let _ = write!(
        out,
        "<li><strong class=\"agent\">{}</strong> <small>({})</small> — own {} calls; subtree {} calls, {}/{} tokens, \
         {} ms total, p95 {} ms, {} errors<ul>",
        esc(node.agent_name.as_deref().unwrap_or("(unnamed)")),
        esc(&node.process_id),
        node.own.calls,
        s.calls,
        s.input_tokens,
        s.output_tokens,
        s.total_latency_ms,
        s.p95_latency_ms.map_or("—".to_owned(), |p| p.to_string()),
        s.errors
    );
    for call in &node.calls {
        let _ = write!(
            out,
            "<li><a href=\"/calls/{}?workspace={}\">{} {}</a> {}</li>",
            enc(&call.id),
            enc(ws),
            esc(call.kind.as_str()),
            esc(call.model.as_deref().unwrap_or("")),
            esc(&call.started_at.to_string())
        );
    }
    out.push_str("</ul>");
    if !node.children.is_empty() {
        out.push_str("<ul class=\"tree\">");
        for child in &node.children {
            tree_node(out, child, ws);
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
}

/// `/sessions/{id}`: the swarm's process tree with per-agent rollups.
pub async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
    Query(q): Query<WorkspaceParam>,
) -> Response {
    let (ws, store) = match trace_reader(&state, &headers, q.workspace.as_deref()) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let tree = match store.session_tree(&ws, &session_id).await {
        Ok(Some(tree)) => tree,
        Ok(None) => {
            return error_page(StatusCode::NOT_FOUND, &format!("session `{session_id}` has no records in `{ws}`"));
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let t = &tree.total;
    let mut body = format!(
        "<p>{} calls, {}/{} tokens, {} errors.</p><ul class=\"tree\">",
        t.calls, t.input_tokens, t.output_tokens, t.errors
    );
    for root in &tree.processes {
        tree_node(&mut body, root, ws.as_str());
    }
    body.push_str("</ul>");
    page(&format!("Session {session_id}"), true, &body)
}

fn messages(out: &mut String, title: &str, value: Option<&Value>) {
    let Some(list) = value.and_then(Value::as_array).filter(|l| !l.is_empty()) else { return };
    let _ = write!(out, "<h3>{}</h3>", esc(title));
    for m in list {
        let role = text_at(m, &["role"]).or_else(|| text_at(m, &["source"])).unwrap_or("");
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
            None => String::new(),
        };
        let _ = write!(out, "<p><strong>{}</strong></p><pre>{}</pre>", esc(role), esc(&content));
    }
}

/// `/calls/{id}`: one record in full — prompt, retrieved context, output, tool calls.
pub async fn call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WorkspaceParam>,
) -> Response {
    let (ws, store) = match trace_reader(&state, &headers, q.workspace.as_deref()) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let row = match store.record(&ws, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no record `{id}` in `{ws}`")),
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let r = serde_json::to_value(&row).unwrap_or(Value::Null);
    let mut body = String::from("<div class=\"box\"><dl>");
    for key in [
        "kind",
        "provider",
        "model",
        "model_version",
        "agent_name",
        "process_id",
        "session_id",
        "started_at",
        "ended_at",
        "status",
        "error",
        "content_hash",
    ] {
        if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let _ = write!(body, "<dt>{key}</dt><dd>{}</dd>", esc(&shown));
        }
    }
    for key in ["routing", "usage", "process_path", "action_ids"] {
        if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
            let _ = write!(body, "<dt>{key}</dt><dd><code>{}</code></dd>", esc(&v.to_string()));
        }
    }
    body.push_str("</dl></div><div class=\"box\">");
    messages(&mut body, "Prompt", r.get("input"));
    messages(&mut body, "Retrieved context", r.get("retrieved_context"));
    messages(&mut body, "Output", r.get("output"));
    if let Some(calls) = r.get("tool_calls").and_then(Value::as_array).filter(|c| !c.is_empty()) {
        let _ = write!(
            body,
            "<h3>Tool calls</h3><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(calls).unwrap_or_default())
        );
    }
    body.push_str("</div>");
    page(&format!("{} {id}", row.record.kind.as_str()), true, &body)
}
