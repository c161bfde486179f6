//! The real OpenTelemetry Python SDK exports a two-level agent swarm to a
//! running `custody serve`, over OTLP/HTTP and OTLP/gRPC at once
//! (`tests/otel/swarm.py`); the stored records have the right models, tokens,
//! content, session and process tree.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::python::python;
use serde_json::{Value, json};

async fn get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    let response = http.get(url).bearer_auth(key).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_swarm_is_stored_with_its_models_tokens_content_and_tree() {
    let Some(python) = python() else {
        eprintln!(
            "note: the OpenTelemetry SDK test did not run; `bash .ci/run` creates target/ci-venv with the SDK and exporters"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, grpc) = common::serve_with_grpc(&dir.path().join("data"));
    let client = custody_client::Client::new(&url, common::ADMIN).unwrap();
    let (writer, _) = client.create_key("acme", "trace:write", Some("otel-sdk")).await.unwrap();
    let (reader, _) = client.create_key("acme", "read", Some("review")).await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/swarm.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("CUSTODY_HTTP", &url)
        .env("CUSTODY_GRPC", &grpc)
        .env("CUSTODY_KEY", &writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stdout.starts_with(b"exported"), "swarm.py failed:\n{stderr}");
    assert!(!stderr.contains("Failed to export"), "an exporter was refused:\n{stderr}");

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let page = get(&http, &format!("{url}/api/v1/traces/records?workspace=acme&limit=100"), &reader).await;
        let records = page["records"].as_array().unwrap().clone();
        if records.len() >= 9 || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 9, "4 agents, 4 chats, 1 tool call: {records:#?}");
    let find = |kind: &str, key: &str, value: &str| -> Value {
        records
            .iter()
            .find(|r| r["kind"] == kind && r[key] == value)
            .unwrap_or_else(|| panic!("no {kind} with {key} = {value}"))
            .clone()
    };
    let process = |name: &str| find("agent", "agent_name", name)["process_id"].as_str().unwrap().to_owned();
    let (planner, researcher, writer_p, editor) =
        (process("planner"), process("researcher"), process("writer"), process("editor"));
    for r in &records {
        assert_eq!(r["session_id"], "conv-py", "one session, named by the root's conversation id: {r}");
        assert_eq!(r["attributes"]["service.name"], "support-swarm");
    }

    let research = find("model_call", "model", "claude-sonnet");
    assert_eq!(research["provider"], "anthropic");
    assert_eq!(research["model_version"], "claude-sonnet-2024-08-06");
    assert_eq!((&research["process_id"], &research["parent_process_id"]), (&json!(researcher), &json!(planner)));
    assert_eq!(research["agent_name"], "researcher");
    assert_eq!(research["usage"]["input_tokens"], 300);
    assert_eq!(research["usage"]["output_tokens"], 60);
    assert_eq!(research["input"], json!([{"role": "user", "content": "Find the order history"}]));
    assert_eq!(research["output"], json!([{"role": "assistant", "content": "Order 1182 arrived damaged"}]));
    assert_eq!(research["process_path"], json!([planner, researcher]));

    let tool = find("tool_call", "process_id", &researcher);
    assert_eq!(tool["tool_calls"], json!([{"id": "call_7", "name": "crm_lookup", "arguments": {"customer": 42}}]));

    let polish = find("model_call", "process_id", &editor);
    assert_eq!(
        (polish["model"].as_str(), polish["parent_process_id"].as_str()),
        (Some("gpt-4o-mini"), Some(&*writer_p))
    );
    assert_eq!(polish["process_path"], json!([planner, writer_p, editor]));
    assert_eq!(polish["attributes"]["otel.scope.name"], "swarm.grpc", "came over gRPC");
    let plan = find("model_call", "process_id", &planner);
    assert_eq!((plan["model"].as_str(), plan["parent_process_id"].as_str()), (Some("gpt-4o"), None));
    assert_eq!(plan["attributes"]["otel.scope.name"], "swarm.http", "came over HTTP");

    let tree = get(&http, &format!("{url}/api/v1/traces/sessions/conv-py/tree?workspace=acme"), &reader).await;
    let roots = tree["processes"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{tree:#}");
    let root = &roots[0];
    assert_eq!(root["process_id"], json!(planner));
    let children: Vec<&str> =
        root["children"].as_array().unwrap().iter().map(|c| c["agent_name"].as_str().unwrap()).collect();
    assert_eq!(children.len(), 2, "{tree:#}");
    assert!(children.contains(&"researcher") && children.contains(&"writer"), "{children:?}");
    let subtree = &root["subtree"];
    assert_eq!(subtree["calls"], 5, "four chats and a tool call: {tree:#}");
    assert_eq!(subtree["input_tokens"], 120 + 300 + 200 + 90);
    assert_eq!(subtree["output_tokens"], 30 + 60 + 80 + 40);

    child.kill().unwrap();
    child.wait().unwrap();
}
