//! Golden fixtures from real instrumentation (`tests/fixtures/generate.py`):
//! OTLP payloads that `opentelemetry-instrumentation-openai-v2` and
//! `openinference-instrumentation-openai` wrote around the official `openai`
//! client, and the records Custody makes of them.
//!
//! `CUSTODY_BLESS=1` rewrites the `.expected.json` files from what the mapping
//! gives now; review the diff before committing it.

use std::path::{Path, PathBuf};

use custody_model::{RecordKind, TraceRecord, WorkspaceName};
use custody_otlp::assembly::resolve_batches;
use custody_otlp::{Encoding, decode, map_request};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The records a fixture maps to, model call first, checked against its golden file.
fn golden(name: &str) -> Vec<TraceRecord> {
    let body = std::fs::read(fixture(&format!("{name}.otlp.pb"))).unwrap();
    let request = decode(&body, Encoding::Protobuf).unwrap();
    let workspace = WorkspaceName::parse("acme").unwrap();
    let mapped = map_request(&request, |_| Ok(workspace.clone()));
    assert_eq!(mapped.rejected, vec![]);
    let mut records = resolve_batches(vec![mapped.entries]);
    records.sort_by_key(|r| r.kind == RecordKind::Agent);
    let got: Value = serde_json::to_value(&records).unwrap();
    let expected_path = fixture(&format!("{name}.expected.json"));
    if std::env::var("CUSTODY_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&expected_path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
    assert_eq!(got, expected, "{name}: the mapping changed; if on purpose, CUSTODY_BLESS=1 and review the diff");
    records
}

#[test]
fn golden_openai_v2_chat_inside_an_agent() {
    let records = golden("openai_v2");
    let [call, agent] = records.as_slice() else { panic!("a chat span and its agent: {records:?}") };
    assert_eq!(call.kind, RecordKind::ModelCall);
    assert_eq!(
        (call.provider.as_deref(), call.model.as_deref(), call.model_version.as_deref()),
        (Some("openai"), Some("gpt-4o-mini"), Some("gpt-4o-mini-2024-07-18")),
    );
    let usage = call.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (42, 12));
    assert_eq!(call.session_id, "conv-1182", "the agent's conversation id");
    assert_eq!(call.process_id, agent.process_id);
    assert_eq!((call.agent_name.as_deref(), agent.agent_name.as_deref()), (Some("support"), Some("support")));
    let attributes = call.attributes.as_ref().unwrap();
    assert_eq!(attributes["gen_ai.request.temperature"], json!(0.2));
    assert_eq!(attributes["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(attributes["otel.scope.name"], json!("opentelemetry.instrumentation.openai_v2"));
    assert_eq!(attributes["service.name"], json!("support-bot"));
}

#[test]
fn golden_openinference_chat_inside_an_agent() {
    let records = golden("openinference_openai");
    let [call, agent] = records.as_slice() else { panic!("a chat span and its agent: {records:?}") };
    assert_eq!(call.kind, RecordKind::ModelCall);
    assert_eq!((call.provider.as_deref(), call.model.as_deref()), (Some("openai"), Some("gpt-4o-mini-2024-07-18")));
    let usage = call.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (42, 12));
    assert_eq!(
        serde_json::to_value(&call.input).unwrap(),
        json!([{"role": "system", "content": "You are a support assistant"},
               {"role": "user", "content": "Draft a reply about the damaged order 1182"}])
    );
    assert_eq!(
        serde_json::to_value(&call.output).unwrap(),
        json!([{"role": "assistant", "content": "Dear customer, we are sorry about order 1182."}])
    );
    assert_eq!(call.session_id, "sess-1182", "OpenInference's session.id");
    assert_eq!(call.process_id, agent.process_id);
    assert_eq!((agent.agent_name.as_deref(), agent.session_id.as_str()), (Some("support"), "sess-1182"));
}
