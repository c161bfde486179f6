//! The trace API end to end, against a real server on a loopback port: the
//! swarm, bad input, back-pressure, and the independence of the two witnesses
//! with each store broken for real.

use std::path::Path;

use custody_client::TraceQuery;
use custody_trace::conformance::{sample_record, swarm};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::*;

fn record(n: u64) -> Value {
    serde_json::to_value(sample_record(&acme(), n)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_sent_in_any_order_reads_back_as_its_tree_with_rollups() {
    let t = TestServer::start().await;
    let writer = t.key("acme", "trace:write").await;
    let reader = t.key("acme", "read").await;
    let mut records: Vec<Value> =
        swarm(&acme(), "sess-swarm").into_iter().map(|r| serde_json::to_value(r).unwrap()).collect();
    // Children first, in three batches.
    records.reverse();
    for chunk in records.chunks(10) {
        let (status, body) = t.traces(&writer, chunk).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["accepted"], chunk.len());
        assert_eq!(body["rejected"], json!([]));
        assert_eq!(body["ids"].as_array().unwrap().len(), chunk.len(), "ids are assigned");
    }
    let (status, tree) = t.get(&reader, "/api/v1/traces/sessions/sess-swarm/tree?workspace=acme").await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    let root = &tree["processes"][0];
    assert_eq!(tree["processes"].as_array().unwrap().len(), 1);
    assert_eq!(root["process_id"], "root");
    let names = |node: &Value| -> Vec<String> {
        node["children"].as_array().unwrap().iter().map(|c| c["process_id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(root), ["crm", "drafter", "research"]);
    let research = &root["children"][2];
    assert_eq!(names(research), ["summarizer", "web"]);
    assert_eq!(research["children"][1]["path"], json!(["root", "research", "web"]));
    assert_eq!(tree["total"]["calls"], 21);
    assert_eq!(research["subtree"]["calls"], 15);
    assert_eq!(research["own"]["calls"], 4);
    assert_eq!(research["subtree"]["errors"], 1);
    assert_eq!(root["subtree"], tree["total"]);
    // Every process's own calls are listed with it.
    assert_eq!(research["calls"].as_array().unwrap().len(), 4 + 1);

    let (status, usage) =
        t.get(&reader, "/api/v1/traces/usage?workspace=acme&group_by=agent_name&session_id=sess-swarm").await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let groups = usage["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 6);
    for field in ["calls", "input_tokens", "output_tokens", "errors"] {
        let sum: u64 = groups.iter().map(|g| g[field].as_u64().unwrap()).sum();
        assert_eq!(json!(sum), tree["total"][field], "usage by agent adds up to the session's {field}");
    }
    assert!(groups.iter().all(|g| g["agent_name"].is_string() && g["latency_p95_ms"].is_number()), "{usage}");
    let (status, by_model) =
        t.get(&reader, "/api/v1/traces/usage?workspace=acme&group_by=provider,model,model_version,day").await;
    assert_eq!(status, StatusCode::OK, "{by_model}");
    assert_eq!(by_model["group_by"], json!(["provider", "model", "model_version", "day"]));
    assert_eq!(by_model["groups"][0]["day"], "2026-12-01");

    // The records of one process, with their path, through the client (which checks content hashes).
    let client = t.client(&reader);
    let query = TraceQuery {
        workspace: Some("acme".into()),
        process_id: Some("web".into()),
        kind: Some("model_call".into()),
        ..TraceQuery::default()
    };
    let (rows, next) = client.trace_records(&query).await.unwrap();
    assert_eq!(rows.len(), 4, "web's five calls, one a tool call");
    assert!(next.is_none());
    assert!(rows.iter().all(|r| r["process_path"] == json!(["root", "research", "web"])));
    let id = rows[0]["id"].as_str().unwrap();
    let one = client.trace_record("acme", id).await.unwrap().unwrap();
    assert_eq!(one, rows[0]);
    assert!(client.trace_record("acme", "0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11").await.unwrap().is_none());
    let tree_again = client.session_tree(Some("acme"), "sess-swarm").await.unwrap();
    assert_eq!(tree_again, tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_reads_back_as_sent_with_its_hash_and_a_replay_is_stored_once() {
    let t = TestServer::start().await;
    let (status, body) = t.traces(ADMIN, &[record(0), record(1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
    // The client retries the same batch (ids assigned the first time).
    let mut sent = vec![record(0), record(1)];
    for (r, id) in sent.iter_mut().zip(&ids) {
        r["id"] = json!(id);
    }
    let (status, body) = t.traces(ADMIN, &sent).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, page) = t.get(ADMIN, "/api/v1/traces/records?workspace=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["records"].as_array().unwrap().len(), 2, "stored once: {page}");
    let (status, row) = t.get(ADMIN, &format!("/api/v1/traces/records/{}?workspace=acme", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{row}");
    let mut expected = record(0);
    expected["id"] = json!(ids[0]);
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&row[field], value, "{field}");
    }
    assert_eq!(row["latency_ms"], 3_600_750);
    custody_client::verify_trace_row(&row).unwrap();
    let mut altered = row.clone();
    altered["output"][0]["content"] = json!("something else");
    assert!(custody_client::verify_trace_row(&altered).is_err(), "an altered row fails its hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_valid_records_of_a_batch_are_kept() {
    let t = TestServer::start_with(|c| c.body_limit = 64 * 1024).await;
    let writer = t.key("acme", "trace:write").await;
    // Some records invalid: the others are stored, the bad ones named by index.
    let mut no_model = record(2);
    no_model.as_object_mut().unwrap().remove("model");
    let mut bad_kind = record(3);
    bad_kind["kind"] = json!("llm");
    let (status, body) = t.traces(&writer, &[record(1), no_model, record(4), bad_kind, json!("text")]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3, 4]);
    assert!(rejected[0]["error"].as_str().unwrap().contains("model"), "{body}");
    assert_eq!(rejected[0]["code"], "missing_field");
    assert_eq!(rejected[1]["code"], "unknown_kind");
    let (_, page) = t.get(ADMIN, "/api/v1/traces/records?workspace=acme").await;
    assert_eq!(page["records"].as_array().unwrap().len(), 2);

    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("{not json", StatusCode::BAD_REQUEST, "malformed_json"),
        ("[]", StatusCode::BAD_REQUEST, "invalid_type"),
        ("{}", StatusCode::BAD_REQUEST, "missing_field"),
        (r#"{"records": {}}"#, StatusCode::BAD_REQUEST, "invalid_type"),
        (r#"{"records": []}"#, StatusCode::BAD_REQUEST, "invalid_value"),
        (r#"{"records": [], "extra": 1}"#, StatusCode::BAD_REQUEST, "unknown_field"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = t.post(&writer, "/api/v1/traces", body).await;
        assert_eq!((got, error_code(&answer)), (status, code), "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A body over the limit.
    let big: Vec<Value> = (0..200).map(record).collect();
    let (status, body) = t.traces(&writer, &big).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "{body}");
    // A workspace the key does not belong to: the whole batch is refused.
    let mut elsewhere = record(5);
    elsewhere["workspace"] = json!("globex");
    let (status, body) = t.traces(&writer, &[record(6), elsewhere]).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("globex"), "{body}");
    // A read key may not write; a write key may not read.
    let reader = t.key("acme", "read").await;
    let (status, _) = t.traces(&reader, &[record(7)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t.get(&writer, "/api/v1/traces/records?workspace=acme").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t.get(&reader, "/api/v1/traces/records?workspace=globex").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Queries that cannot be answered say what to fix.
    for (path, code) in [
        ("/api/v1/traces/records?workspace=acme&limit=0", "invalid_value"),
        ("/api/v1/traces/records?workspace=acme&cursor=nonsense", "invalid_value"),
        ("/api/v1/traces/records?workspace=acme&kind=llm", "invalid_value"),
        ("/api/v1/traces/records?workspace=acme&since=yesterday", "invalid_value"),
        ("/api/v1/traces/records?workspace=acme&colour=red", "unknown_parameter"),
        ("/api/v1/traces/usage?workspace=acme&group_by=model,colour", "invalid_value"),
        ("/api/v1/traces/usage?workspace=acme&group_by=model,model", "invalid_value"),
    ] {
        let (status, body) = t.get(&reader, path).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, code), "{path}: {body}");
    }
    let (status, body) = t.get(&reader, "/api/v1/traces/sessions/nope/tree?workspace=acme").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    let (status, body) = t.get(&reader, "/api/v1/traces/records/0193a5c2-7d1e-7c3a-9f00-3b2d1e0a9c11").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");

    let metrics = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("custody_trace_records_total{kind=\"model_call\"} 2"), "{metrics}");
    assert!(metrics.contains("custody_trace_rejected_records_total 3"), "{metrics}");
    assert!(metrics.contains("custody_trace_tokens_total{provider=\"openai\"}"), "{metrics}");
    for name in [
        "custody_trace_buffer_bytes",
        "custody_trace_wal_bytes",
        "custody_trace_parquet_files",
        "custody_trace_flush_duration_seconds",
        "custody_trace_append_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_429_with_retry_after_instead_of_growing() {
    let t = TestServer::start_with(|c| c.trace_buffer_bytes = 4096).await;
    let batch: Vec<Value> = (0..3).map(record).collect();
    let mut refused = None;
    for _ in 0..50 {
        let response = t
            .http
            .post(format!("{}/api/v1/traces", t.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "records": batch }))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response = refused.expect("a 429 once the buffer is full");
    let retry_after = response.headers().get("retry-after").unwrap().to_str().unwrap().parse::<u64>().unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "busy", "{body}");
    // The client reports it as Busy, with the delay.
    let err = loop {
        match t.client(ADMIN).append_traces(&batch).await {
            Err(e) => break e,
            Ok(_) => continue,
        }
    };
    assert!(
        matches!(err, custody_client::ClientError::Busy { retry_after_secs, .. } if retry_after_secs >= 1),
        "{err}"
    );
}

/// Mounts a small tmpfs at `dir` (tests run as root).
fn small_filesystem(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs at {} (the tests need root)", dir.display());
}

fn unmount(dir: &Path) {
    let _ = std::process::Command::new("umount").arg("-l").arg(dir).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_trace_store_on_a_full_disk_audit_appends_go_on() {
    let mount = tempfile::tempdir().unwrap();
    let traces = mount.path().join("traces");
    small_filesystem(&traces, "256k");
    let uri = format!("parquet://{}", traces.display());
    let t = TestServer::start_with(|c| c.trace_store = Some(uri)).await;
    // Fill the disk under the trace store: a file takes every free block.
    let filler = traces.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let big: Vec<Value> = (0..40).map(record).collect();
    let (status, body) = t.traces(ADMIN, &big).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("audit log is not affected"), "{body}");
    let ready = t.readyz().await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["stores"]["traces"]["status"], "unavailable", "{ready}");
    assert_eq!(ready["stores"]["audit"]["status"], "ok", "{ready}");
    // Per-store probes: a load balancer keeps routing audit traffic here.
    let probe = |store: &'static str| {
        let url = format!("{}/readyz?store={store}", t.base);
        let http = t.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(probe("audit").await, StatusCode::OK);
    assert_eq!(probe("traces").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.http.get(format!("{}/readyz", t.base)).send().await.unwrap().status(), StatusCode::OK);
    for n in 0..50 {
        let (status, body) = t.audit(ADMIN, n).await;
        assert_eq!(status, StatusCode::CREATED, "audit append {n} with the trace store full: {body}");
    }
    // Space comes back: trace ingest resumes.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = t.traces(ADMIN, &big[..2]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(t.readyz().await["stores"]["traces"]["status"], "ok");
    t.server.shutdown().await.unwrap();
    unmount(&traces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_store_that_cannot_open_leaves_the_audit_api_serving() {
    let dir = tempfile::tempdir().unwrap();
    // Where the trace store's directory should be, a file.
    let blocked = dir.path().join("traces");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let uri = format!("parquet://{}", blocked.display());
    let t = TestServer::start_with(|c| c.trace_store = Some(uri)).await;
    assert!(t.server.trace_store_error.is_some());
    let (status, body) = t.audit(ADMIN, 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = t.traces(ADMIN, &[record(1)]).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    let (status, _) = t.get(ADMIN, "/api/v1/traces/records?workspace=acme").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let ready = t.readyz().await;
    assert_eq!(ready["stores"]["audit"]["status"], "ok", "{ready}");
    assert_eq!(ready["stores"]["traces"]["status"], "unavailable", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_store_locked_trace_ingest_goes_on() {
    let t = TestServer::start().await;
    let (status, _) = t.audit(ADMIN, 0).await;
    assert_eq!(status, StatusCode::CREATED);
    // Another connection holds the audit database's write lock: nothing can commit.
    let lock = rusqlite::Connection::open(t.dir.path().join("data/audit.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = t.audit(ADMIN, 1).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    for n in 0..5 {
        let (status, body) = t.traces(ADMIN, &[record(n)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "trace ingest {n} with the audit store locked: {body}");
    }
    let (status, page) = t.get(ADMIN, "/api/v1/traces/records?workspace=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["records"].as_array().unwrap().len(), 5);
    let probe = t.http.get(format!("{}/readyz?store=traces", t.base)).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK, "the trace store is ready while the audit store is locked");
    let bogus = t.http.get(format!("{}/readyz?store=cache", t.base)).send().await.unwrap();
    assert_eq!(bogus.status(), StatusCode::BAD_REQUEST);
    lock.execute_batch("ROLLBACK").unwrap();
    let (status, _) = t.audit(ADMIN, 2).await;
    assert_eq!(status, StatusCode::CREATED);
}
