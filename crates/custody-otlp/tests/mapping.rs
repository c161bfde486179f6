//! Span → record mapping for each convention and content form.

mod common;

use common::*;
use custody_model::{RecordKind, RecordStatus, TraceRecord, WorkspaceName};
use custody_otlp::mapping::{Origin, SpanEntry, map_span};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

fn map(span: &Span) -> Result<SpanEntry, custody_model::ValidationError> {
    let workspace = WorkspaceName::parse("acme").unwrap();
    map_span(
        span,
        &Origin {
            workspace: &workspace,
            classification: Some("confidential"),
            service_name: Some("support-bot"),
            scope: None,
        },
    )
}

fn record(span: &Span) -> TraceRecord {
    map(span).unwrap().record.expect("a record")
}

fn messages(record: &[custody_model::trace::Message]) -> Value {
    serde_json::to_value(record).unwrap()
}

#[test]
fn a_genai_chat_span_maps_models_usage_content_and_keeps_the_rest() {
    let mut span = chat(11, Some(1), "gpt-4o", 812);
    span.attributes.extend([
        kv("gen_ai.response.model", s("gpt-4o-2024-08-06")),
        kv("gen_ai.usage.cache_read.input_tokens", i(100)),
        kv("gen_ai.usage.reasoning.output_tokens", i(3)),
        kv("gen_ai.conversation.id", s("conv-1")),
        kv("gen_ai.system_instructions", s(r#"[{"type":"text","content":"You are a support assistant"}]"#)),
        kv(
            "gen_ai.input.messages",
            s(r#"[{"role":"user","parts":[{"type":"text","content":"Draft a reply"}]}]"#),
        ),
        kv(
            "gen_ai.output.messages",
            s(r#"[{"role":"assistant","parts":[{"type":"text","content":"Dear customer"},{"type":"tool_call","id":"call_1","name":"send_email","arguments":{"to":"c@example.com"}}],"finish_reason":"tool_call"}]"#),
        ),
        kv("gen_ai.request.temperature", AnyValueF(0.2).into()),
        kv("custody.action_id", s("act-123")),
        kv("user.id", s("u-42")),
    ]);
    let entry = map(&span).unwrap();
    assert_eq!(entry.session.as_deref(), Some("conv-1"));
    assert_eq!(entry.parent_span_id.as_deref(), Some("0000000000001001"));
    assert!(entry.agent.is_none());
    let r = entry.record.unwrap();
    assert_eq!(r.kind, RecordKind::ModelCall);
    assert_eq!((r.provider.as_deref(), r.model.as_deref()), (Some("openai"), Some("gpt-4o")));
    assert_eq!(r.model_version.as_deref(), Some("gpt-4o-2024-08-06"));
    let usage = r.usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.reasoning_tokens),
        (812, 7, 100, 3)
    );
    assert_eq!(
        messages(&r.input),
        json!([{"role": "system", "content": "You are a support assistant"}, {"role": "user", "content": "Draft a reply"}])
    );
    assert_eq!(r.output.len(), 1);
    assert_eq!(r.output[0].role, "assistant");
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!((r.tool_calls[0].name.as_str(), r.tool_calls[0].id.as_deref()), ("send_email", Some("call_1")));
    assert_eq!(r.tool_calls[0].arguments, json!({"to": "c@example.com"}));
    assert_eq!(r.action_ids, vec!["act-123"]);
    assert_eq!(r.classification.as_deref(), Some("confidential"));
    assert_eq!(r.latency_ms(), Some(250));
    assert_eq!(r.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    let attributes = r.attributes.unwrap();
    assert_eq!(attributes["user.id"], json!("u-42"));
    assert_eq!(attributes["gen_ai.request.temperature"], json!(0.2));
    assert_eq!(attributes["gen_ai.operation.name"], json!("chat"));
    assert_eq!(attributes["otel.span.name"], json!("chat gpt-4o"));
    assert_eq!(attributes["service.name"], json!("support-bot"));
    for taken in ["gen_ai.input.messages", "gen_ai.usage.input_tokens", "gen_ai.request.model", "custody.action_id"] {
        assert!(!attributes.contains_key(taken), "{taken} is mapped, not kept");
    }
}

/// A double attribute value.
struct AnyValueF(f64);
impl From<AnyValueF> for opentelemetry_proto::tonic::common::v1::AnyValue {
    fn from(v: AnyValueF) -> Self {
        Self { value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(v.0)) }
    }
}

#[test]
fn deprecated_forms_map_like_the_current_ones() {
    // Per-message span events and `gen_ai.system`.
    let events = with_events(
        span(
            11,
            None,
            "chat gpt-4o",
            vec![
                kv("gen_ai.operation.name", s("chat")),
                kv("gen_ai.system", s("openai")),
                kv("gen_ai.request.model", s("gpt-4o")),
                kv("gen_ai.usage.prompt_tokens", i(5)),
                kv("gen_ai.usage.completion_tokens", i(6)),
            ],
        ),
        vec![
            ("gen_ai.system.message", vec![kv("content", s("Be brief"))]),
            ("gen_ai.user.message", vec![kv("content", s("Hi"))]),
            ("gen_ai.choice", vec![kv("index", i(0)), kv("message", s(r#"{"role":"assistant","content":"Hello"}"#))]),
        ],
    );
    let r = record(&events);
    assert_eq!(r.provider.as_deref(), Some("openai"));
    assert_eq!(
        messages(&r.input),
        json!([{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(messages(&r.output), json!([{"role": "assistant", "content": "Hello"}]));
    assert_eq!((r.usage.unwrap().input_tokens, r.usage.unwrap().output_tokens), (5, 6));

    // Flattened `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`.
    let flat = span(
        12,
        None,
        "openai.chat",
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.request.model", s("gpt-4o-mini")),
            kv("gen_ai.prompt.0.role", s("system")),
            kv("gen_ai.prompt.0.content", s("Be brief")),
            kv("gen_ai.prompt.1.role", s("user")),
            kv("gen_ai.prompt.1.content", s("Hi")),
            kv("gen_ai.completion.0.role", s("assistant")),
            kv("gen_ai.completion.0.content", s("Hello")),
            kv("gen_ai.completion.0.tool_calls.0.name", s("lookup")),
            kv("gen_ai.completion.0.tool_calls.0.arguments", s(r#"{"q":1}"#)),
        ],
    );
    let r = record(&flat);
    assert_eq!(
        messages(&r.input),
        json!([{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}])
    );
    assert_eq!(messages(&r.output), json!([{"role": "assistant", "content": "Hello"}]));
    assert_eq!((r.tool_calls[0].name.as_str(), &r.tool_calls[0].arguments), ("lookup", &json!({"q": 1})));
    assert!(!r.attributes.unwrap().keys().any(|k| k.starts_with("gen_ai.prompt")), "flattened keys are taken");
}

#[test]
fn openinference_spans_map_messages_tokens_sessions_and_documents() {
    let llm = span(
        11,
        None,
        "ChatCompletion",
        vec![
            kv("openinference.span.kind", s("LLM")),
            kv("llm.model_name", s("gpt-4o")),
            kv("llm.provider", s("openai")),
            kv("llm.input_messages.0.message.role", s("user")),
            kv("llm.input_messages.0.message.content", s("Hi")),
            kv("llm.output_messages.0.message.role", s("assistant")),
            kv("llm.output_messages.0.message.content", s("Hello")),
            kv("llm.output_messages.0.message.tool_calls.0.tool_call.id", s("call_9")),
            kv("llm.output_messages.0.message.tool_calls.0.tool_call.function.name", s("search")),
            kv("llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments", s(r#"{"q":"x"}"#)),
            kv("llm.token_count.prompt", i(12)),
            kv("llm.token_count.completion", i(4)),
            kv("llm.token_count.prompt_details.cache_read", i(2)),
            kv("llm.token_count.completion_details.reasoning", i(1)),
            kv("session.id", s("sess-oi")),
            kv("user.id", s("u-1")),
        ],
    );
    let entry = map(&llm).unwrap();
    assert_eq!(entry.session.as_deref(), Some("sess-oi"));
    let r = entry.record.unwrap();
    assert_eq!(
        (r.kind, r.model.as_deref(), r.provider.as_deref()),
        (RecordKind::ModelCall, Some("gpt-4o"), Some("openai"))
    );
    assert_eq!(messages(&r.input), json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(messages(&r.output), json!([{"role": "assistant", "content": "Hello"}]));
    assert_eq!((r.tool_calls[0].id.as_deref(), r.tool_calls[0].name.as_str()), (Some("call_9"), "search"));
    let u = r.usage.unwrap();
    assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens), (12, 4, 2, 1));
    assert_eq!(r.attributes.unwrap()["user.id"], json!("u-1"));

    let retriever = span(
        12,
        None,
        "retrieve",
        vec![
            kv("openinference.span.kind", s("RETRIEVER")),
            kv("input.value", s("order 1182")),
            kv("retrieval.documents.0.document.id", s("crm://customers/42/history")),
            kv("retrieval.documents.0.document.content", s("Order 1182 arrived damaged")),
            kv("retrieval.documents.0.document.score", AnyValueF(0.82).into()),
        ],
    );
    let r = record(&retriever);
    assert_eq!(r.kind, RecordKind::Retrieval);
    assert_eq!(messages(&r.input), json!([{"role": "user", "content": "order 1182"}]));
    assert_eq!(
        serde_json::to_value(&r.retrieved_context).unwrap(),
        json!([{"source": "crm://customers/42/history", "content": "Order 1182 arrived damaged", "score": 0.82}])
    );

    let agent =
        span(13, None, "support", vec![kv("openinference.span.kind", s("AGENT")), kv("agent.name", s("support"))]);
    let entry = map(&agent).unwrap();
    assert_eq!(entry.agent.unwrap().name.as_deref(), Some("support"));
    assert_eq!(entry.record.unwrap().kind, RecordKind::Agent);
}

#[test]
fn tool_calls_agents_and_failures() {
    let tool = span(
        14,
        Some(1),
        "execute_tool send_email",
        vec![
            kv("gen_ai.operation.name", s("execute_tool")),
            kv("gen_ai.tool.name", s("send_email")),
            kv("gen_ai.tool.call.id", s("call_1")),
            kv("gen_ai.tool.call.arguments", s(r#"{"to":"c@example.com"}"#)),
            kv("gen_ai.tool.call.result", s("sent")),
        ],
    );
    let r = record(&tool);
    assert_eq!(r.kind, RecordKind::ToolCall);
    assert_eq!(r.tool_calls[0].arguments, json!({"to": "c@example.com"}));
    assert_eq!(
        messages(&r.output),
        json!([{"role": "tool", "content": "sent", "name": "send_email", "tool_call_id": "call_1"}])
    );

    let invoke = agent(1, None, "planner", vec![kv("gen_ai.request.model", s("gpt-4o"))]);
    let entry = map(&invoke).unwrap();
    assert_eq!(entry.agent.as_ref().unwrap().name.as_deref(), Some("planner"));
    let r = entry.record.unwrap();
    assert_eq!((r.kind, r.agent_name.as_deref()), (RecordKind::Agent, Some("planner")));

    let create = span(2, None, "create_agent helper", vec![kv("gen_ai.operation.name", s("create_agent"))]);
    let entry = map(&create).unwrap();
    assert!(entry.agent.is_none(), "creating an agent is not running one");
    assert_eq!(entry.record.unwrap().kind, RecordKind::Agent);

    let broken = failed(
        with_events(
            chat(15, None, "gpt-4o", 1),
            vec![(
                "exception",
                vec![kv("exception.type", s("RateLimitError")), kv("exception.message", s("slow down"))],
            )],
        ),
        "",
    );
    let r = record(&broken);
    assert_eq!((r.status, r.error.as_deref()), (RecordStatus::Error, Some("RateLimitError: slow down")));
    let r = record(&failed(chat(16, None, "gpt-4o", 1), "upstream 503"));
    assert_eq!(r.error.as_deref(), Some("upstream 503"));

    let plain = span(20, Some(1), "GET /", vec![kv("http.request.method", s("GET"))]);
    let entry = map(&plain).unwrap();
    assert!(entry.record.is_none() && entry.agent.is_none(), "a span of no convention only links");
}

#[test]
fn invalid_spans_are_refused_with_the_field_named() {
    let mut no_trace = chat(11, None, "gpt-4o", 1);
    no_trace.trace_id.clear();
    assert_eq!(map(&no_trace).unwrap_err().field, "trace_id");
    let mut zero_span = chat(11, None, "gpt-4o", 1);
    zero_span.span_id = vec![0; 8];
    assert_eq!(map(&zero_span).unwrap_err().field, "span_id");
    let mut short_parent = chat(11, None, "gpt-4o", 1);
    short_parent.parent_span_id = vec![1, 2, 3];
    assert_eq!(map(&short_parent).unwrap_err().field, "parent_span_id");
    let no_model = span(11, None, "chat", vec![kv("gen_ai.operation.name", s("chat"))]);
    let e = map(&no_model).unwrap_err();
    assert_eq!((e.code, e.field.as_str()), ("missing_field", "gen_ai.request.model"));
    let mut bad_session = chat(11, None, "gpt-4o", 1);
    bad_session.attributes.push(kv("gen_ai.conversation.id", s("a\u{0}b")));
    assert_eq!(map(&bad_session).unwrap_err().field, "gen_ai.conversation.id");
}

#[test]
fn the_record_id_is_the_same_for_the_same_span_and_a_uuid() {
    let a = record(&chat(11, None, "gpt-4o", 1));
    let b = record(&chat(11, None, "gpt-4o", 99));
    let c = record(&chat(12, None, "gpt-4o", 1));
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    let id = a.id.unwrap();
    assert_eq!((id.len(), &id[14..15]), (36, "8"), "{id}: a version 8 UUID");
}
