//! The HTTP API end to end, against a real server on a loopback port.

use std::time::Duration;

use custody_client::{AuditQuery, Client};
use custody_model::AuditEvent;
use custody_server::{RunningServer, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "test-bootstrap-key-0123456789abcdef";

struct TestServer {
    server: RunningServer,
    dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl TestServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        config.bootstrap_key = Some(ADMIN.to_owned());
        config.busy_timeout = Duration::from_millis(200);
        let server = custody_server::start(config).await.unwrap();
        let base = format!("http://{}", server.local_addr);
        Self { server, dir, base, http: reqwest::Client::new() }
    }

    fn client(&self, key: &str) -> Client {
        Client::new(&self.base, key).unwrap()
    }

    async fn post(&self, key: Option<&str>, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}/api/v1/audit/events", self.base)).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn events(&self, workspace: &str) -> Vec<Value> {
        let query = AuditQuery { workspace: Some(workspace.into()), limit: Some(1000), ..Default::default() };
        self.client(ADMIN).query(&query).await.unwrap().events
    }

    async fn key(&self, workspace: &str, scope: &str) -> (String, String) {
        let (token, info) = self.client(ADMIN).create_key(workspace, scope, Some("test")).await.unwrap();
        (token, info.id)
    }
}

fn event(workspace: &str, n: usize) -> Value {
    json!({"workspace": workspace, "kind": "authz.decision",
           "principal": {"type": "agent", "id": format!("agent:{}", n % 2)},
           "action": "email.send", "resource": {"type": "email", "id": format!("out/{n}")},
           "decision": "allow", "action_id": format!("act-{n}")})
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A key, a body, the status and error code expected, and a word the message must contain.
type Case<'a> = (Option<&'a str>, Vec<u8>, StatusCode, &'a str, &'a str);

#[tokio::test]
async fn bad_input_is_refused_with_json_errors_nothing_is_written_and_the_server_keeps_serving() {
    let t = TestServer::start().await;
    let (acme_writer, _) = t.key("acme", "audit:write").await;
    let (acme_reader, _) = t.key("acme", "read").await;
    let (revoked, revoked_id) = t.key("acme", "audit:write").await;
    t.client(ADMIN).revoke_key(&revoked_id).await.unwrap();

    let cases: Vec<Case> = vec![
        (
            Some(ADMIN),
            b"{\"workspace\": \"bad\", ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "not valid JSON",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e["action"] = json!(5);
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "action",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e["colour"] = json!("red");
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "unknown_field",
            "colour",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e.as_object_mut().unwrap().remove("resource");
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "missing_field",
            "resource",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e["kind"] = json!("email.sent");
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "unknown_kind",
            "expected one of",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e["occurred_at"] = json!("12/01/2026");
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_value",
            "RFC 3339",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&{
                let mut e = event("bad", 0);
                e["attributes"] = json!({"blob": "x".repeat(70_000)});
                e
            })
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "event_too_large",
            "limit",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&json!({"events": [event("bad", 0), {"workspace": "bad"}]})).unwrap(),
            StatusCode::BAD_REQUEST,
            "missing_field",
            "events[1]",
        ),
        (Some(ADMIN), vec![b' '; 10 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "limit"),
        (None, serde_json::to_vec(&event("bad", 0)).unwrap(), StatusCode::UNAUTHORIZED, "missing_key", "Authorization"),
        (
            Some("cust_000000000000_nope"),
            serde_json::to_vec(&event("bad", 0)).unwrap(),
            StatusCode::UNAUTHORIZED,
            "unknown_key",
            "not known",
        ),
        (
            Some(&revoked),
            serde_json::to_vec(&event("bad", 0)).unwrap(),
            StatusCode::UNAUTHORIZED,
            "revoked_key",
            "revoked",
        ),
        (
            Some(&acme_writer),
            serde_json::to_vec(&event("bad", 0)).unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
            "workspace `acme`",
        ),
        (
            Some(&acme_reader),
            serde_json::to_vec(&event("acme", 0)).unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
            "audit:write",
        ),
        (
            Some(ADMIN),
            serde_json::to_vec(&event("custody-system", 0)).unwrap(),
            StatusCode::BAD_REQUEST,
            "reserved_workspace",
            "reserved",
        ),
    ];
    for (key, body, status, code, says) in cases {
        let (got_status, got) = t.post(key, body).await;
        assert_eq!(got_status, status, "{got}");
        assert_eq!(error_code(&got), code, "{got}");
        let message = got["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "`{message}` should mention `{says}`");
    }
    let response = t.http.delete(format!("{}/api/v1/audit/events", t.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "method_not_allowed");
    let (status, body) = t.get(ADMIN, "/api/v2/nothing").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    // Nothing reached the log of `bad`, and the server still serves: the next
    // valid event is entry 0.
    assert!(t.events("bad").await.is_empty());
    let (status, body) = t.post(Some(ADMIN), serde_json::to_vec(&event("bad", 1)).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["receipts"][0]["seq"], 0);
    // An acme writer appending to acme still works.
    let (status, _) = t.post(Some(&acme_writer), serde_json::to_vec(&event("acme", 1)).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_see_only_their_workspace_and_scope() {
    let t = TestServer::start().await;
    let (acme_reader, _) = t.key("acme", "read").await;
    let (other_admin, _) = t.key("other", "admin").await;
    t.client(ADMIN).append(&AuditEvent::from_value(event("acme", 0)).unwrap()).await.unwrap();

    let (status, body) = t.get(&acme_reader, "/api/v1/audit/events").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kinds: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["api_key.created", "authz.decision"], "a workspace key reads its own workspace by default");
    let (status, body) = t.get(&acme_reader, "/api/v1/audit/events?workspace=other").await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = t.get(&other_admin, "/api/v1/audit/checkpoint?workspace=acme").await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let err = t.client(&acme_reader).create_key("acme", "admin", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = t.client(&other_admin).create_key("acme", "read", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // An admin of `other` manages `other` only.
    let (_, info) = t.client(&other_admin).create_key("other", "read", None).await.unwrap();
    assert_eq!(info.workspace.as_deref(), Some("other"));
    let listed = t.client(&other_admin).list_keys(None).await.unwrap();
    assert!(listed.iter().all(|k| k.workspace.as_deref() == Some("other")), "{listed:?}");
    t.server.shutdown().await.unwrap();
}

async fn wait_for_events(t: &TestServer, workspace: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let events = t.events(workspace).await;
        if pred(&events) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the expected events did not appear in {workspace}: {:#?}", t.events(workspace).await);
}

#[tokio::test]
async fn key_lifecycle_and_refusals_are_recorded_and_refusal_floods_are_aggregated() {
    let t = TestServer::start().await;
    let (reader, reader_id) = t.key("acme", "read").await;
    // Twenty out-of-scope attempts: one refusal event now, the rest counted for the summary.
    for n in 0..20 {
        let (status, _) = t.post(Some(&reader), serde_json::to_vec(&event("acme", n)).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    t.client(ADMIN).revoke_key(&reader_id).await.unwrap();
    for _ in 0..5 {
        let (status, _) = t.get(&reader, "/api/v1/audit/events").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let events =
        wait_for_events(&t, "acme", |events| events.iter().filter(|e| e["decision"] == "deny").count() >= 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "api_key.created").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "api_key.revoked").count(), 1, "{kinds:?}");
    let created = events.iter().find(|e| e["kind"] == "api_key.created").unwrap();
    assert_eq!(created["resource"]["id"], reader_id.as_str());
    assert_eq!(created["principal"]["id"], "bootstrap", "the admin who created it");
    let refusals: Vec<&Value> = events.iter().filter(|e| e["decision"] == "deny").collect();
    assert_eq!(refusals.len(), 2, "one per key and reason within the window: {refusals:#?}");
    assert!(refusals.iter().all(|e| e["principal"]["id"] == reader_id.as_str()));
    let reasons: Vec<&str> = refusals.iter().map(|e| e["attributes"]["refusal"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["scope", "revoked"]);
    // The bootstrap key's own creation is in the system log.
    let system = t.events("custody-system").await;
    assert_eq!(system[0]["kind"], "api_key.created");
    assert_eq!(system[0]["resource"]["id"], "bootstrap");
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn appends_fail_closed_with_503_while_the_database_cannot_commit() {
    let t = TestServer::start().await;
    let client = t.client(ADMIN);
    client.append(&AuditEvent::from_value(event("acme", 0)).unwrap()).await.unwrap();
    // Another process holds the write lock: no commit can become durable.
    let lock = rusqlite::Connection::open(t.dir.path().join("data/audit.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = t.post(Some(ADMIN), serde_json::to_vec(&event("acme", 1)).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("must not proceed"), "{body}");
    assert!(body.get("receipts").is_none());
    let metrics = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("custody_audit_append_failures_total{reason=\"locked\"} 1"), "{metrics}");
    lock.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone the log goes on where it was: the refused event took no seq.
    let receipt = client.append(&AuditEvent::from_value(event("acme", 2)).unwrap()).await.unwrap();
    assert_eq!(receipt.seq, 1);
    assert_eq!(t.events("acme").await.len(), 2);
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn receipts_proofs_checkpoints_and_searches_work_through_the_client() {
    let t = TestServer::start().await;
    let client = t.client(ADMIN);
    let events: Vec<AuditEvent> = (0..5).map(|n| AuditEvent::from_value(event("acme", n)).unwrap()).collect();
    let first = client.append_batch(&events[..2]).await.unwrap();
    let second = client.append_batch(&events[2..]).await.unwrap();
    for receipt in first.iter().chain(&second) {
        client.verify_inclusion(receipt).await.unwrap();
    }
    let (_, older) = client.checkpoint("acme").await.unwrap();
    assert_eq!(older.size, 5);
    let verifier = client.verifier().await.unwrap();
    let cp2 = custody_ledger::Checkpoint::open(&first[0].checkpoint, &verifier).unwrap();
    client.verify_growth("acme", &cp2, &older).await.unwrap();
    let by_principal =
        AuditQuery { workspace: Some("acme".into()), principal: Some("agent:1".into()), ..Default::default() };
    let page = client.query(&by_principal).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 3]);
    let paged = AuditQuery { workspace: Some("acme".into()), limit: Some(3), ..Default::default() };
    let page = client.query(&paged).await.unwrap();
    assert_eq!(page.events.len(), 3);
    let rest = client.query(&AuditQuery { cursor: page.next_cursor.clone(), ..paged.clone() }).await.unwrap();
    assert_eq!(rest.events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 4]);
    assert!(rest.next_cursor.is_none());

    for (path, code) in [
        ("/api/v1/audit/events?colour=red", "unknown_parameter"),
        ("/api/v1/audit/events?workspace=acme&limit=0", "invalid_value"),
        ("/api/v1/audit/events?workspace=acme&since=yesterday", "invalid_value"),
        ("/api/v1/audit/events?workspace=acme&decision=maybe", "invalid_value"),
        ("/api/v1/audit/events?workspace=acme&cursor=zzz", "invalid_value"),
        ("/api/v1/audit/proofs/inclusion?workspace=acme&seq=9&tree_size=5", "out_of_range"),
        ("/api/v1/audit/proofs/inclusion?workspace=acme&seq=1&tree_size=50", "out_of_range"),
        ("/api/v1/audit/proofs/inclusion?workspace=acme&seq=1", "missing_parameter"),
        ("/api/v1/audit/proofs/consistency?workspace=acme&first=4&second=2", "out_of_range"),
        ("/api/v1/audit/checkpoint?workspace=Not%20Valid", "invalid_value"),
        ("/api/v1/audit/checkpoint?workspace=empty", "not_found"),
    ] {
        let (status, body) = t.get(ADMIN, path).await;
        assert!(status.is_client_error(), "{path}: {status}");
        assert_eq!(error_code(&body), code, "{path}: {body}");
    }
    t.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_readiness_and_metrics_report_each_store() {
    let t = TestServer::start().await;
    t.client(ADMIN).append(&AuditEvent::from_value(event("acme", 0)).unwrap()).await.unwrap();
    let ready: Value = t.http.get(format!("{}/readyz", t.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready", "stores": {"audit": {"status": "ok"}, "traces": {"status": "ok"}}}));
    let health = t.http.get(format!("{}/healthz", t.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    for series in [
        "custody_audit_appends_total{kind=\"authz.decision\",decision=\"allow\"} 1",
        "custody_audit_append_duration_seconds_count 1",
        "custody_audit_commit_group_events_count",
        "custody_audit_commit_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(series), "missing `{series}` in\n{metrics}");
    }
    t.server.shutdown().await.unwrap();
}
