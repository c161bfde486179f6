//! `custody demo`: the worked example end to end on an embedded server; the
//! bundle of the send verifies offline and every altered copy is refused.

mod common;

use serde_json::{Value, json};

#[test]
fn the_demo_prints_both_chains_of_custody_and_a_bundle_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("send.json");
    let data = dir.path().join("data");
    let out = common::run(&[
        "demo",
        "--no-serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.display().to_string(),
        "--bundle",
        &bundle.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("Chain of custody of action").count(), 2, "{stdout}");
    for shown in [
        "approved by user:bob",
        "openai gpt-4o (version gpt-4o-2024-08-06)",
        "crm://customers/42/history",
        "agent crm-helper",
        "agent drafter",
        "nobody: denied under no-bulk-export",
        "role.granted",
        "api_key.created",
    ] {
        assert!(stdout.contains(shown), "the demo's reports should show `{shown}`:\n{stdout}");
    }

    let bundle_arg = bundle.display().to_string();
    let out = common::run(&["verify-bundle", &bundle_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let good: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let decision = good["audit"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["event"]["kind"] == "authz.decision")
        .unwrap();
    let records = good["trace"]["records"].as_array().unwrap().clone();
    let find = |keep: &dyn Fn(&Value) -> bool| records.iter().position(keep).expect("such a record in the bundle");
    let prompted = find(&|r| r["input"].as_array().is_some_and(|m| m.len() > 1));
    let retrieval = find(&|r| r["kind"] == "retrieval");
    type Alter = Box<dyn Fn(&mut Value)>;
    let alterations: Vec<(&str, Alter)> = vec![
        (
            "the approver",
            Box::new(move |b| b["audit"]["events"][decision]["event"]["approval"]["approver"] = json!("user:eve")),
        ),
        (
            "an entry's bytes",
            Box::new(move |b| {
                let e = b["audit"]["events"][decision]["entry"].as_str().unwrap().replace("user:bob", "user:eve");
                b["audit"]["events"][decision]["entry"] = json!(e);
            }),
        ),
        ("a proof", Box::new(|b| b["audit"]["events"][0]["proof"][0] = json!("11".repeat(32)))),
        (
            "the checkpoint",
            Box::new(|b| {
                let note = b["audit"]["checkpoint"].as_str().unwrap().replacen('\n', "\n1", 1);
                b["audit"]["checkpoint"] = json!(note);
            }),
        ),
        ("a grant", Box::new(|b| b["audit"]["grants"][0]["event"]["resource"]["id"] = json!("user:mallory"))),
        ("the credential's lifecycle", Box::new(|b| b["audit"]["credential_events"][0]["seq"] = json!(0))),
        (
            "a prompt",
            Box::new(move |b| b["trace"]["records"][prompted]["input"][1]["content"] = json!("Insult the customer")),
        ),
        (
            "the retrieved context",
            Box::new(move |b| {
                b["trace"]["records"][retrieval]["retrieved_context"][0]["source"] = json!("crm://elsewhere")
            }),
        ),
        ("a content hash", Box::new(|b| b["trace"]["records"][3]["content_hash"] = json!("22".repeat(32)))),
        ("the answer of who authorized", Box::new(|b| b["answers"]["authorized"] = json!("user:eve"))),
        ("the data considered", Box::new(|b| b["answers"]["data_considered"] = json!([]))),
    ];
    for (what, alter) in alterations {
        let mut altered = good.clone();
        alter(&mut altered);
        assert_ne!(altered, good, "{what}: the alteration changed nothing");
        let path = dir.path().join("altered.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&altered).unwrap()).unwrap();
        let out = common::run(&["verify-bundle", &path.display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID"), "{what}");
    }
}
