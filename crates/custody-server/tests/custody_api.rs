//! The chain of custody of an action: assembled from both stores, verified as
//! a bundle, refused when any part of the bundle is altered, and still
//! answered by one store when the other is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use custody_audit::{
    AppendError, AuditLog, EventPage, EventQuery, ProofQueryError, RawEntry, StoreError, StoredCheckpoint,
};
use custody_chain::{ActionReport, BundleError, Witness, verify_bundle};
use custody_ledger::{NoteSigner, NoteVerifier};
use custody_model::{AuditEvent, ConsistencyProof, InclusionProof, Receipt, WorkspaceName};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The audit events of the send: the roles and the key before it, the
/// intent, its approval, the decision above the agent's ceiling, the effect;
/// and an unrelated decision.
fn audit_events() -> Vec<Value> {
    let agent = json!({"type": "agent", "id": "agent:support", "on_behalf_of": "user:alice"});
    vec![
        json!({"workspace": "acme", "kind": "role.granted", "principal": {"type": "user", "id": "admin:root"},
            "action": "role.grant", "resource": {"type": "principal", "id": "user:alice", "attributes": {"role": "support"}}}),
        json!({"workspace": "acme", "kind": "api_key.created", "principal": {"type": "user", "id": "admin:root"},
            "action": "api_key.create", "resource": {"type": "api_key", "id": "key-7"}}),
        json!({"workspace": "acme", "kind": "intent.created", "principal": agent, "action": "email.send",
            "resource": {"type": "email", "id": "customer@example.com"}, "severity": "high", "action_id": "act-send",
            "occurred_at": "2026-12-01T10:00:00Z"}),
        json!({"workspace": "acme", "kind": "approval.granted", "principal": {"type": "user", "id": "user:bob"},
            "action": "email.send", "resource": {"type": "intent", "id": "int-1"}, "action_id": "act-send",
            "occurred_at": "2026-12-01T10:00:30Z"}),
        json!({"workspace": "acme", "kind": "authz.decision", "principal": agent,
            "access_path": ["user:alice", "role:support", "agent:support"], "action": "email.send",
            "resource": {"type": "email", "id": "customer@example.com"}, "decision": "allow",
            "severity": "high", "ceiling": "medium", "policies": ["external-email-needs-approval"],
            "approval": {"intent_id": "int-1", "approver": "user:bob", "approved_at": "2026-12-01T10:00:30Z"},
            "credential": {"type": "api_key", "id": "key-7", "boundary": "smtp-relay"}, "action_id": "act-send",
            "session": {"session_id": "sess-1", "process_id": "proc-root"}, "model_call_ids": ["0193a5c2-7d1e-7c3a-9f00-000000000003"],
            "occurred_at": "2026-12-01T10:01:00Z"}),
        json!({"workspace": "acme", "kind": "action.completed", "principal": agent, "action": "email.send",
            "resource": {"type": "email", "id": "customer@example.com"}, "action_id": "act-send",
            "effect": {"message_id": "msg-991"}, "occurred_at": "2026-12-01T10:01:02Z"}),
        json!({"workspace": "acme", "kind": "authz.decision", "principal": agent, "action": "crm.export",
            "resource": {"type": "crm", "id": "customers"}, "decision": "deny", "reason": "bulk export is not allowed",
            "action_id": "act-export"}),
    ]
}

const PLAN: &str = "0193a5c2-7d1e-7c3a-9f00-000000000001";
const CRM: &str = "0193a5c2-7d1e-7c3a-9f00-000000000002";
const DRAFT: &str = "0193a5c2-7d1e-7c3a-9f00-000000000003";
const OTHER: &str = "0193a5c2-7d1e-7c3a-9f00-000000000005";

fn record(id: &str, kind: &str, process: &str, parent: Option<&str>, at: &str, extra: Value) -> Value {
    let mut r = json!({"id": id, "workspace": "acme", "kind": kind, "session_id": "sess-1", "process_id": process,
        "parent_process_id": parent, "agent_name": process.trim_start_matches("proc-"), "started_at": at});
    if let (Value::Object(r), Value::Object(extra)) = (&mut r, extra) {
        r.extend(extra);
    }
    r
}

/// The swarm: the root agent plans, a helper retrieves the history, another
/// drafts the email (the call the decision names); one call comes after the
/// decision and one is another helper's, neither part of the chain.
fn trace_records() -> Vec<Value> {
    vec![
        record(
            "0193a5c2-7d1e-7c3a-9f00-000000000001",
            "model_call",
            "proc-root",
            None,
            "2026-12-01T09:59:00Z",
            json!({"provider": "anthropic", "model": "claude-sonnet-4", "model_version": "claude-sonnet-4-20250514",
                   "input": [{"role": "user", "content": "Reply to the customer about order 1182"}],
                   "output": [{"role": "assistant", "content": "Fetch the history, then draft"}]}),
        ),
        record(
            "0193a5c2-7d1e-7c3a-9f00-000000000002",
            "retrieval",
            "proc-crm",
            Some("proc-root"),
            "2026-12-01T09:59:10Z",
            json!({"retrieved_context": [{"source": "crm://customers/42/history", "content": "Order 1182 arrived damaged", "score": 0.82}],
                   "action_ids": ["act-send"]}),
        ),
        record(
            "0193a5c2-7d1e-7c3a-9f00-000000000003",
            "model_call",
            "proc-drafter",
            Some("proc-root"),
            "2026-12-01T09:59:20Z",
            json!({"provider": "openai", "model": "gpt-4o", "model_version": "gpt-4o-2024-08-06",
                   "routing": {"router": "default", "reason": "primary"},
                   "input": [{"role": "user", "content": "Draft a reply"}],
                   "output": [{"role": "assistant", "content": "Dear customer, ..."}]}),
        ),
        record(
            "0193a5c2-7d1e-7c3a-9f00-000000000004",
            "model_call",
            "proc-root",
            None,
            "2026-12-01T10:05:00Z",
            json!({"provider": "openai", "model": "gpt-4o-mini"}),
        ),
        record(
            "0193a5c2-7d1e-7c3a-9f00-000000000005",
            "model_call",
            "proc-exporter",
            Some("proc-root"),
            "2026-12-01T09:59:30Z",
            json!({"provider": "openai", "model": "gpt-4o-mini", "action_ids": ["act-export"]}),
        ),
    ]
}

async fn populate(t: &TestServer) {
    for event in audit_events() {
        let (status, body) = t.post(ADMIN, "/api/v1/audit/events", event.to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

async fn fetch(t: &TestServer, action: &str) -> (StatusCode, Vec<u8>) {
    let response = t
        .http
        .get(format!("{}/api/v1/custody/actions/{action}?workspace=acme", t.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

fn ids(report: &ActionReport) -> Vec<String> {
    let trace = report.trace.available().expect("trace side");
    trace.records.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lays_both_witnesses_side_by_side_and_verifies() {
    let t = TestServer::start().await;
    populate(&t).await;
    let (status, body) = t.traces(ADMIN, &trace_records()).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(5)), "{body}");

    let (status, bytes) = fetch(&t, "act-send").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let verified = verify_bundle(&bytes, None).expect("the server's report verifies");
    let report = verified.report;
    let audit = report.audit.available().expect("audit side");
    let kinds: Vec<&str> = audit.events.iter().map(|e| e.event["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["intent.created", "approval.granted", "authz.decision", "action.completed"]);
    assert_eq!(audit.grants.len(), 1, "alice's role grant, in force before the decision");
    assert_eq!(audit.grants[0].event["resource"]["id"], "user:alice");
    assert_eq!(audit.credential_events.len(), 1);
    assert_eq!(audit.credential_events[0].event["kind"], "api_key.created");
    assert_eq!(audit.tree_size, 7);
    // Named by the action, named by the decision, and the deciding process before the decision.
    assert_eq!(ids(&report), [PLAN, CRM, DRAFT]);
    assert_eq!(report.trace.available().unwrap().sessions, ["sess-1"]);
    let answers = &report.answers;
    assert_eq!(
        answers.authorized.as_deref(),
        Some(
            "above the principal's ceiling (severity high, ceiling medium) on intent int-1, approved by user:bob at \
             2026-12-01T10:00:30Z under external-email-needs-approval"
        )
    );
    let what = answers.what.as_deref().unwrap();
    assert!(
        what.starts_with(
            "agent agent:support (on behalf of user:alice) asked to email.send email customer@example.com: allow"
        ),
        "{what}"
    );
    assert!(what.contains("msg-991"), "{what}");
    assert_eq!(
        answers.models,
        [
            "anthropic claude-sonnet-4 (version claude-sonnet-4-20250514)",
            r#"openai gpt-4o (version gpt-4o-2024-08-06), routing {"reason":"primary","router":"default"}"#
        ]
    );
    assert_eq!(answers.data_considered, ["crm://customers/42/history"]);

    // The denial: its own decision, nobody authorized it.
    let (status, bytes) = fetch(&t, "act-export").await;
    assert_eq!(status, StatusCode::OK);
    let denial = verify_bundle(&bytes, None).unwrap().report;
    assert_eq!(denial.answers.authorized.as_deref(), Some("nobody: denied: bulk export is not allowed"));
    assert_eq!(ids(&denial), [OTHER]);

    let (status, body) = t.get(ADMIN, "/api/v1/custody/actions/act-none?workspace=acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("act-none"), "{body}");
    let (status, body) = t.get(ADMIN, "/api/v1/custody/actions/act-send").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_parameter")));
    let reader = t.key("other", "read").await;
    let (status, _) = t.get(&reader, "/api/v1/custody/actions/act-send?workspace=acme").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key of another workspace reads nothing of acme");
}

/// Each alteration of a bundle, and the part verification must name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_altered_part_of_a_bundle_is_refused() {
    let t = TestServer::start().await;
    populate(&t).await;
    t.traces(ADMIN, &trace_records()).await;
    let (_, bytes) = fetch(&t, "act-send").await;
    let good: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(verify_bundle(&bytes, None).is_ok());
    let pinned = NoteVerifier::parse(good["audit"]["public_key"].as_str().unwrap().trim()).unwrap();
    assert!(verify_bundle(&bytes, Some(&pinned)).is_ok());

    let other_key = NoteSigner::from_seed("custody.test/other", [7; 32]).unwrap();
    type Alter = Box<dyn Fn(&mut Value)>;
    type Expected = fn(&BundleError) -> bool;
    let decision = 2; // index of the decision among the action's events
    let cases: Vec<(&str, Alter, Expected)> = vec![
        (
            "the approver shown",
            Box::new(move |b| b["audit"]["events"][decision]["event"]["approval"]["approver"] = json!("user:mallory")),
            |e| matches!(e, BundleError::Entry { .. }),
        ),
        (
            "the entry's bytes",
            Box::new(move |b| {
                let entry = b["audit"]["events"][decision]["entry"].as_str().unwrap().replace("user:bob", "user:eve");
                b["audit"]["events"][decision]["entry"] = json!(entry);
            }),
            |e| matches!(e, BundleError::Entry { .. }),
        ),
        (
            "the bytes and the leaf hash together",
            Box::new(move |b| {
                let entry = b["audit"]["events"][decision]["entry"].as_str().unwrap().replace("user:bob", "user:eve");
                let leaf = hex::encode(custody_ledger::merkle::hash_leaf(entry.as_bytes()));
                b["audit"]["events"][decision]["entry"] = json!(entry);
                b["audit"]["events"][decision]["leaf_hash"] = json!(leaf);
            }),
            |e| matches!(e, BundleError::Entry { .. }),
        ),
        ("a proof hash", Box::new(move |b| b["audit"]["events"][decision]["proof"][0] = json!("00".repeat(32))), |e| {
            matches!(e, BundleError::Entry { .. })
        }),
        ("a grant's proof", Box::new(|b| b["audit"]["grants"][0]["proof"] = json!([])), |e| {
            matches!(e, BundleError::Entry { .. })
        }),
        (
            "the checkpoint's size",
            Box::new(|b| {
                let note = b["audit"]["checkpoint"].as_str().unwrap().replacen("\n7\n", "\n8\n", 1);
                b["audit"]["checkpoint"] = json!(note);
            }),
            |e| matches!(e, BundleError::Checkpoint(_)),
        ),
        ("the tree size", Box::new(|b| b["audit"]["tree_size"] = json!(8)), |e| {
            matches!(e, BundleError::Checkpoint(_))
        }),
        (
            "the public key",
            Box::new(move |b| b["audit"]["public_key"] = json!(other_key.verifier().to_key_string())),
            |e| matches!(e, BundleError::Checkpoint(_)),
        ),
        (
            "the decision dropped",
            Box::new(move |b| {
                b["audit"]["events"].as_array_mut().unwrap().remove(decision);
            }),
            |e| matches!(e, BundleError::Answers { field: "what" }),
        ),
        ("the events out of order", Box::new(|b| b["audit"]["events"].as_array_mut().unwrap().swap(0, 1)), |e| {
            matches!(e, BundleError::Entry { .. })
        }),
        ("a record's content", Box::new(|b| b["trace"]["records"][2]["output"][0]["content"] = json!("Pay us")), |e| {
            matches!(e, BundleError::Record { .. })
        }),
        (
            "a record's content hash",
            Box::new(|b| b["trace"]["records"][0]["content_hash"] = json!("00".repeat(32))),
            |e| matches!(e, BundleError::Record { .. }),
        ),
        (
            "the named model call removed",
            Box::new(|b| {
                b["trace"]["records"].as_array_mut().unwrap().remove(2);
            }),
            |e| matches!(e, BundleError::Entry { .. }),
        ),
        ("a record of another workspace", Box::new(|b| b["trace"]["records"][1]["workspace"] = json!("other")), |e| {
            matches!(e, BundleError::Record { .. })
        }),
        (
            "the answer to who authorized",
            Box::new(|b| b["answers"]["authorized"] = json!("within the principal's ceiling")),
            |e| matches!(e, BundleError::Answers { field: "authorized" }),
        ),
        ("the models answered", Box::new(|b| b["answers"]["models"] = json!(["openai gpt-5"])), |e| {
            matches!(e, BundleError::Answers { field: "models" })
        }),
        ("the action id", Box::new(|b| b["action_id"] = json!("act-other")), |e| {
            matches!(e, BundleError::Entry { .. })
        }),
        ("the workspace", Box::new(|b| b["workspace"] = json!("other")), |e| matches!(e, BundleError::Checkpoint(_))),
        ("a field nobody knows", Box::new(|b| b["note"] = json!("trust me")), |e| {
            matches!(e, BundleError::Malformed(_))
        }),
        ("the format", Box::new(|b| b["format"] = json!(2)), |e| matches!(e, BundleError::Malformed(_))),
    ];
    for (what, alter, expected) in cases {
        let mut bundle = good.clone();
        alter(&mut bundle);
        let outcome = verify_bundle(&serde_json::to_vec(&bundle).unwrap(), None);
        match outcome {
            Err(error) => assert!(expected(&error), "{what}: refused for the wrong reason: {error}"),
            Ok(_) => panic!("{what}: the altered bundle was accepted"),
        }
    }
    // A bundle signed by a key other than the pinned one.
    let other =
        NoteVerifier::parse(&NoteSigner::from_seed("custody.test/other", [7; 32]).unwrap().verifier().to_key_string())
            .unwrap();
    assert!(matches!(verify_bundle(&bytes, Some(&other)), Err(BundleError::UnexpectedKey { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_trace_store_down_the_report_shows_the_audit_side() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("traces");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let uri = format!("parquet://{}", blocked.display());
    let t = TestServer::start_with(|c| c.trace_store = Some(uri)).await;
    populate(&t).await;
    let (status, bytes) = fetch(&t, "act-send").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let report = verify_bundle(&bytes, None).expect("a report with one side still verifies").report;
    let Witness::Unavailable { error } = &report.trace else { panic!("the trace side is there: {:?}", report.trace) };
    assert!(error.contains("trace store"), "{error}");
    assert_eq!(report.audit.available().unwrap().events.len(), 4);
    assert!(report.answers.authorized.as_deref().unwrap().contains("approved by user:bob"));
    assert!(report.answers.models.is_empty());
}

/// The real SQLite log, whose reads fail while `down` is set (as when its
/// database cannot be reached).
struct Failing {
    inner: Arc<dyn AuditLog>,
    down: AtomicBool,
}

impl Failing {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("database unreachable, as the test asks".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AuditLog for Failing {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<Receipt>, AppendError> {
        self.inner.append(events).await
    }
    async fn query(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.check()?;
        self.inner.query(query).await
    }
    async fn entries(&self, ws: &WorkspaceName, from: u64, limit: usize) -> Result<Vec<RawEntry>, StoreError> {
        self.check()?;
        self.inner.entries(ws, from, limit).await
    }
    async fn workspaces(&self) -> Result<Vec<WorkspaceName>, StoreError> {
        self.check()?;
        self.inner.workspaces().await
    }
    async fn latest_checkpoint(&self, ws: &WorkspaceName) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.check()?;
        self.inner.latest_checkpoint(ws).await
    }
    async fn checkpoints(&self, ws: &WorkspaceName) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.check()?;
        self.inner.checkpoints(ws).await
    }
    async fn inclusion_proof(
        &self,
        ws: &WorkspaceName,
        seq: u64,
        size: u64,
    ) -> Result<InclusionProof, ProofQueryError> {
        self.check()?;
        self.inner.inclusion_proof(ws, seq, size).await
    }
    async fn consistency_proof(&self, ws: &WorkspaceName, a: u64, b: u64) -> Result<ConsistencyProof, ProofQueryError> {
        self.check()?;
        self.inner.consistency_proof(ws, a, b).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.health().await
    }
    fn verifier(&self) -> NoteVerifier {
        self.inner.verifier()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_store_down_the_report_shows_the_trace_side() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_seed("custody.test/audit", [5; 32]).unwrap();
    let uri = format!("sqlite://{}", dir.path().join("audit.db").display());
    let inner = custody_audit::open_audit_log(&uri, signer, Default::default()).await.unwrap();
    let audit = Failing { inner, down: false.into() };
    let events: Vec<AuditEvent> = audit_events().into_iter().map(|e| AuditEvent::from_value(e).unwrap()).collect();
    audit.append(events).await.unwrap();
    let traces = custody_trace::open_trace_store(
        &format!("parquet://{}", dir.path().join("traces").display()),
        custody_trace::IngestOptions::default(),
    )
    .unwrap();
    let records = trace_records()
        .into_iter()
        .map(|r| custody_trace::StoredRecord::prepare(custody_model::TraceRecord::from_value(r).unwrap()))
        .collect();
    traces.append(records).await.unwrap();
    let workspace = WorkspaceName::parse("acme").unwrap();

    let whole = custody_server::custody_api::assemble(&audit, Ok(traces.as_ref()), &workspace, "act-send").await;
    assert_eq!(whole.audit.available().unwrap().events.len(), 4);
    assert_eq!(ids(&whole), [PLAN, CRM, DRAFT]);

    audit.down.store(true, Ordering::SeqCst);
    let report = custody_server::custody_api::assemble(&audit, Ok(traces.as_ref()), &workspace, "act-send").await;
    let Witness::Unavailable { error } = &report.audit else { panic!("the audit side is there") };
    assert!(error.contains("database unreachable"), "{error}");
    // Without the decision, the trace side is what names the action.
    assert_eq!(ids(&report), [CRM]);
    assert_eq!(report.answers.data_considered, ["crm://customers/42/history"]);
    assert_eq!(report.answers.authorized, None);
    let bytes = serde_json::to_vec(&report).unwrap();
    assert!(verify_bundle(&bytes, None).is_ok(), "a report with one side still verifies");
    traces.close().await.unwrap();
}
