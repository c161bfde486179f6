//! Span builders for the tests.
#![allow(dead_code)]

use custody_model::TraceRecord;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};

pub const TRACE: [u8; 16] =
    [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
pub const T0: u64 = 1_796_000_000_000_000_000;

pub fn s(v: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(v.into())) }
}

pub fn i(v: i64) -> AnyValue {
    AnyValue { value: Some(any_value::Value::IntValue(v)) }
}

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value), key_strindex: 0 }
}

pub fn span_id(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0x10, n]
}

pub fn span(n: u8, parent: Option<u8>, name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: span_id(n),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.into(),
        kind: 1,
        start_time_unix_nano: T0 + u64::from(n) * 1_000_000,
        end_time_unix_nano: T0 + u64::from(n) * 1_000_000 + 250_000_000,
        attributes,
        ..Span::default()
    }
}

pub fn with_events(mut span: Span, events: Vec<(&str, Vec<KeyValue>)>) -> Span {
    span.events = events
        .into_iter()
        .map(|(name, attributes)| Event {
            name: name.into(),
            time_unix_nano: span.start_time_unix_nano,
            attributes,
            ..Event::default()
        })
        .collect();
    span
}

pub fn failed(mut span: Span, message: &str) -> Span {
    span.status = Some(Status { message: message.into(), code: 2 });
    span
}

/// An agent invocation span.
pub fn agent(n: u8, parent: Option<u8>, name: &str, extra: Vec<KeyValue>) -> Span {
    let mut attributes = vec![kv("gen_ai.operation.name", s("invoke_agent")), kv("gen_ai.agent.name", s(name))];
    attributes.extend(extra);
    span(n, parent, &format!("invoke_agent {name}"), attributes)
}

/// A chat span.
pub fn chat(n: u8, parent: Option<u8>, model: &str, input_tokens: i64) -> Span {
    span(
        n,
        parent,
        &format!("chat {model}"),
        vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.request.model", s(model)),
            kv("gen_ai.usage.input_tokens", i(input_tokens)),
            kv("gen_ai.usage.output_tokens", i(7)),
        ],
    )
}

pub fn request(spans: Vec<Span>, resource: Vec<KeyValue>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, ..Resource::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "tests".into(), ..InstrumentationScope::default() }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// A swarm in one trace: root agent 1 (conversation "conv-7") → helpers 2, 3, 4;
/// helper 3 → 5, 6. Each agent makes one chat call (spans 11–16, parent the
/// agent), and helper 5 makes its call under a plain HTTP span 20.
pub fn swarm() -> Vec<Span> {
    let mut spans = vec![
        agent(1, None, "planner", vec![kv("gen_ai.conversation.id", s("conv-7"))]),
        agent(2, Some(1), "researcher", vec![]),
        agent(3, Some(1), "writer", vec![]),
        agent(4, Some(1), "reviewer", vec![]),
        agent(5, Some(3), "drafter", vec![]),
        agent(6, Some(3), "editor", vec![]),
        span(20, Some(5), "POST /v1/chat/completions", vec![kv("http.request.method", s("POST"))]),
    ];
    for (call, parent) in [(11, 1), (12, 2), (13, 3), (14, 4), (15, 20), (16, 6)] {
        spans.push(chat(call, Some(parent), "gpt-4o", i64::from(call) * 10));
    }
    spans
}

/// Takes away what a receiver adds about where a span came from — its
/// provenance attributes and span ids — where the original did not have them.
pub fn without_provenance(mut back: TraceRecord, original: &TraceRecord) -> TraceRecord {
    if original.trace_id.is_none() {
        back.trace_id = None;
    }
    if original.span_id.is_none() {
        back.span_id = None;
    }
    if let Some(attributes) = back.attributes.as_mut() {
        for key in ["otel.span.name", "otel.scope.name", "service.name", "gen_ai.operation.name"] {
            if original.attributes.as_ref().is_none_or(|a| !a.contains_key(key)) {
                attributes.remove(key);
            }
        }
        if attributes.is_empty() && original.attributes.is_none() {
            back.attributes = None;
        }
    }
    back
}
