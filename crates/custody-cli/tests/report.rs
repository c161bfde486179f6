//! `custody report` and `custody verify-bundle` against a running server: the
//! readable report, its JSON, the bundle, and the exit codes of the offline check.

mod common;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_a_bundle_that_verify_bundle_accepts_and_an_altered_copy_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = common::serve(&dir.path().join("data"));
    let client = custody_client::Client::new(&url, common::ADMIN).unwrap();
    let agent = json!({"type": "agent", "id": "agent:support", "on_behalf_of": "user:alice"});
    for event in [
        json!({"workspace": "acme", "kind": "approval.granted", "principal": {"type": "user", "id": "user:bob"},
            "action": "email.send", "resource": {"type": "intent", "id": "int-1"}, "action_id": "act-cli"}),
        json!({"workspace": "acme", "kind": "authz.decision", "principal": agent, "action": "email.send",
            "resource": {"type": "email", "id": "customer@example.com"}, "decision": "allow", "severity": "high",
            "ceiling": "medium", "approval": {"intent_id": "int-1", "approver": "user:bob"}, "action_id": "act-cli"}),
    ] {
        client.append(&serde_json::from_value(event).unwrap()).await.unwrap();
    }
    let record = json!({"workspace": "acme", "kind": "model_call", "session_id": "sess-cli", "process_id": "drafter",
        "provider": "openai", "model": "gpt-4o", "model_version": "gpt-4o-2024-08-06",
        "input": [{"role": "user", "content": "Draft the reply"}], "output": [{"role": "assistant", "content": "Dear customer"}],
        "started_at": "2026-12-01T10:00:00Z", "action_ids": ["act-cli"]});
    assert_eq!(client.append_traces(&[record]).await.unwrap().accepted, 1);

    let bundle = dir.path().join("act-cli.json");
    let bundle_arg = bundle.display().to_string();
    let base = ["--server", url.as_str(), "--key", common::ADMIN, "--workspace", "acme"];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(base);
        common::run(&all)
    };
    let out = run(&["report", "act-cli", "--bundle", &bundle_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Who authorized it?") && text.contains("approved by user:bob"), "{text}");
    assert!(text.contains("openai gpt-4o (version gpt-4o-2024-08-06)"), "{text}");
    assert!(text.contains("verified: 2 audit entries proven"), "{text}");
    let out = run(&["report", "act-cli", "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["audit"]["status"], "available");
    assert_eq!(json["trace"]["records"].as_array().unwrap().len(), 1);
    let out = run(&["report", "act-missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("act-missing"), "{out:?}");

    // Offline: no server needed.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = common::run(&["verify-bundle", &bundle_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"), "{out:?}");
    let key = json["audit"]["public_key"].as_str().unwrap().trim().to_owned();
    assert_eq!(common::run(&["verify-bundle", &bundle_arg, "--public-key", &key]).status.code(), Some(0));

    let mut altered: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    altered["trace"]["records"][0]["output"][0]["content"] = json!("Dear fool");
    let altered_path = dir.path().join("altered.json");
    std::fs::write(&altered_path, serde_json::to_vec(&altered).unwrap()).unwrap();
    let out = common::run(&["verify-bundle", &altered_path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INVALID") && err.contains("content_hash"), "{err}");
}
