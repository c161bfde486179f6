//! One OTLP span → what the assembly window keeps of it: its links in the trace
//! (parent, whether it is an agent invocation, the session it names) and, for
//! spans the GenAI or OpenInference conventions describe, the trace record it
//! becomes — everything but the swarm attribution, which needs the ancestors.
//!
//! Conventions read (a newer name first, its deprecated forms after it):
//! - kind: `gen_ai.operation.name` (chat, text_completion, generate_content,
//!   embeddings → model call; execute_tool → tool call; retrieval; invoke_agent,
//!   create_agent → agent) or `openinference.span.kind` (LLM, EMBEDDING, TOOL,
//!   RETRIEVER, AGENT). Other spans only link their children to their parents.
//! - model: `gen_ai.request.model` / `llm.model_name` → `model`,
//!   `gen_ai.response.model` → `model_version`; provider: `gen_ai.provider.name`,
//!   `gen_ai.system`, `llm.provider`, `llm.system`.
//! - usage: `gen_ai.usage.{input,output}_tokens` (and `prompt_tokens`,
//!   `completion_tokens`), `gen_ai.usage.cache_read.input_tokens`,
//!   `gen_ai.usage.reasoning.output_tokens`, `llm.token_count.*`.
//! - content: `gen_ai.system_instructions`, `gen_ai.input.messages`,
//!   `gen_ai.output.messages`; the per-message events (`gen_ai.user.message`, …,
//!   `gen_ai.choice`) and `gen_ai.content.prompt` / `.completion`; the flattened
//!   `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`; OpenInference
//!   `llm.input_messages.*`, `llm.output_messages.*`, `retrieval.documents.*`.
//! - session: `gen_ai.conversation.id`, `session.id`; agent: `gen_ai.agent.name`,
//!   `agent.name`, else the span name after `invoke_agent `.
//! - status: the span status (error → `status: error`), `exception` events,
//!   `error.type`; action ids: `custody.action_id`, `custody.action_ids`.
//! - Custody's own exporter (`export.rs`) also writes `custody.record_id`,
//!   `custody.session_id`, `custody.process_id`, `custody.parent_process_id`,
//!   `custody.routing`, `custody.tool_calls` and
//!   `custody.time_to_first_token_ms`: a span that states its process needs no
//!   ancestors, and a record exported by one Custody comes back as it left.
//!
//! Attributes no convention claims are kept in the record's `attributes`, with
//! the span name (`otel.span.name`), the instrumentation scope
//! (`otel.scope.name`), the resource's `service.name` and other events.

use custody_model::event::check_id;
use custody_model::trace::{Message, RetrievedDocument, ToolCall, Usage};
use custody_model::{RecordKind, RecordStatus, Timestamp, TraceRecord, ValidationError, WorkspaceName};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::{Span, span::Event, status::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::attributes::{Bag, parse_if_text};

/// What the assembly window keeps of one span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEntry {
    pub workspace: WorkspaceName,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Set when the span is an agent invocation: a process of the swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// The conversation or session id the span itself names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The record the span becomes, attribution not yet filled in; none for a
    /// span that only links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<TraceRecord>,
    /// The span states its own attribution (`custody.process_id`, as Custody's
    /// exporter writes it): the record needs no ancestors.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attributed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a span came from: the workspace it is filed under and what its
/// resource and scope say.
pub struct Origin<'a> {
    pub workspace: &'a WorkspaceName,
    pub classification: Option<&'a str>,
    pub service_name: Option<&'a str>,
    pub scope: Option<&'a InstrumentationScope>,
}

/// The resource attribute that names the workspace (when the key allows it).
pub const WORKSPACE_ATTRIBUTE: &str = "custody.workspace";
/// The resource attribute that names the records' classification.
pub const CLASSIFICATION_ATTRIBUTE: &str = "custody.classification";

/// A span id or trace id as lowercase hex; refused when absent, all zeroes or of the wrong length.
pub fn span_hex(field: &str, bytes: &[u8], len: usize) -> Result<String, ValidationError> {
    if bytes.len() != len || bytes.iter().all(|b| *b == 0) {
        let got = if bytes.is_empty() { "none".to_owned() } else { format!("{} bytes", bytes.len()) };
        return Err(ValidationError::new(
            "invalid_value",
            field,
            format!("must be {len} bytes and not all zero (OTLP), got {got}"),
        ));
    }
    Ok(hex::encode(bytes))
}

/// The record id of a span: a version 8 UUID from SHA-256 of the workspace,
/// trace id and span id, so a span delivered twice is one record.
pub fn record_id(workspace: &str, trace_id: &str, span_id: &str) -> String {
    let digest = Sha256::digest(format!("custody/otlp-span\0{workspace}\0{trace_id}\0{span_id}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Maps one span. Errors name the OTLP field or attribute at fault.
pub fn map_span(span: &Span, origin: &Origin<'_>) -> Result<SpanEntry, ValidationError> {
    let trace_id = span_hex("trace_id", &span.trace_id, 16)?;
    let span_id = span_hex("span_id", &span.span_id, 8)?;
    let parent_span_id = match span.parent_span_id.as_slice() {
        [] => None,
        bytes if bytes.iter().all(|b| *b == 0) => None,
        bytes => Some(span_hex("parent_span_id", bytes, 8)?),
    };
    let mut bag = Bag::new(&span.attributes);
    let operation = bag.get_str("gen_ai.operation.name").map(str::to_owned);
    let oi_kind = bag.get_str("openinference.span.kind").map(str::to_ascii_uppercase);
    let kind = match (operation.as_deref(), oi_kind.as_deref()) {
        (Some("chat" | "text_completion" | "generate_content" | "embeddings"), _) => Some(RecordKind::ModelCall),
        (Some("execute_tool"), _) => Some(RecordKind::ToolCall),
        (Some("retrieval"), _) => Some(RecordKind::Retrieval),
        (Some("invoke_agent" | "create_agent"), _) => Some(RecordKind::Agent),
        (_, Some("LLM" | "EMBEDDING")) => Some(RecordKind::ModelCall),
        (_, Some("TOOL")) => Some(RecordKind::ToolCall),
        (_, Some("RETRIEVER")) => Some(RecordKind::Retrieval),
        (_, Some("AGENT")) => Some(RecordKind::Agent),
        _ => None,
    };
    let is_process = operation.as_deref() == Some("invoke_agent") || oi_kind.as_deref() == Some("AGENT");
    let session = bag.take_text(&["gen_ai.conversation.id", "session.id"]);
    if let Some(session) = &session {
        check_id("gen_ai.conversation.id", session, 512)?;
    }
    let agent = is_process.then(|| Agent {
        name: bag
            .take_text(&["gen_ai.agent.name", "agent.name"])
            .or_else(|| span.name.strip_prefix("invoke_agent ").map(str::to_owned))
            .filter(|n| !n.is_empty()),
    });
    let mut entry = SpanEntry {
        workspace: origin.workspace.clone(),
        trace_id,
        span_id,
        parent_span_id,
        agent,
        session,
        record: None,
        attributed: false,
    };
    let Some(kind) = kind else { return Ok(entry) };
    let (record, attributed) = map_record(kind, span, bag, origin, &entry)?;
    entry.record = Some(record);
    entry.attributed = attributed;
    Ok(entry)
}

/// The record of a span, and whether the span stated its own attribution.
fn map_record(
    kind: RecordKind,
    span: &Span,
    mut bag: Bag,
    origin: &Origin<'_>,
    entry: &SpanEntry,
) -> Result<(TraceRecord, bool), ValidationError> {
    // What Custody's own exporter writes, so that its records come back as they left.
    let id = bag.take_text(&["custody.record_id"]);
    let process_id = bag.take_text(&["custody.process_id"]);
    let parent_process_id = bag.take_text(&["custody.parent_process_id"]);
    let session_id = bag.take_text(&["custody.session_id"]);
    let stated_agent =
        if process_id.is_some() && entry.agent.is_none() { bag.take_text(&["gen_ai.agent.name"]) } else { None };
    let routing = match bag.take_json("custody.routing") {
        Some(Value::Object(routing)) => Some(routing),
        _ => None,
    };
    let time_to_first_token_ms = bag.take_count(&["custody.time_to_first_token_ms"]);
    let stated_tool_calls = bag.take_json("custody.tool_calls");
    let provider = bag.take_text(&["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"]);
    let requested = bag.take_text(&["gen_ai.request.model", "llm.model_name"]);
    let responded = bag.take_text(&["gen_ai.response.model"]);
    let model = requested.or_else(|| responded.clone());
    if kind == RecordKind::ModelCall && model.is_none() {
        return Err(ValidationError::new(
            "missing_field",
            "gen_ai.request.model",
            "a model-call span needs `gen_ai.request.model`, `gen_ai.response.model` or `llm.model_name`",
        ));
    }
    let usage = take_usage(&mut bag);
    let mut events = Events::split(&span.events);
    let mut tool_calls = Vec::new();
    let mut input = take_input(&mut bag, &mut events);
    let mut output = take_output(&mut bag, &mut events, &mut tool_calls);
    let mut retrieved_context = take_documents(&mut bag);
    match kind {
        RecordKind::ToolCall => {
            let name = bag
                .take_text(&["gen_ai.tool.name", "tool.name"])
                .or_else(|| span.name.strip_prefix("execute_tool ").map(str::to_owned));
            let id = bag.take_text(&["gen_ai.tool.call.id", "tool_call.id"]);
            let arguments = bag
                .take_json("gen_ai.tool.call.arguments")
                .or_else(|| bag.take_json("tool_call.function.arguments"))
                .or_else(|| bag.take_json("input.value"))
                .unwrap_or(Value::Null);
            if let Some(result) = bag.take_json("gen_ai.tool.call.result").or_else(|| bag.take_json("output.value")) {
                output.push(Message {
                    role: "tool".into(),
                    content: result,
                    name: name.clone(),
                    tool_call_id: id.clone(),
                });
            }
            if let Some(name) = name {
                tool_calls.push(ToolCall { id, name, arguments });
            }
        }
        RecordKind::Retrieval => {
            if input.is_empty()
                && let Some(query) =
                    bag.take_json("gen_ai.retrieval.query.text").or_else(|| bag.take_json("input.value"))
            {
                input.push(Message { role: "user".into(), content: query, name: None, tool_call_id: None });
            }
            if retrieved_context.is_empty()
                && let Some(Value::Array(docs)) = bag.take_json("output.value")
            {
                retrieved_context = docs.into_iter().map(document).collect();
            }
        }
        RecordKind::ModelCall | RecordKind::Agent => {}
    }
    if let Some(Value::Array(calls)) = stated_tool_calls {
        tool_calls = calls.iter().filter_map(tool_call_from).collect();
    }
    let (status, error) = status_of(span, &mut bag, &mut events);
    let action_ids = take_action_ids(&mut bag);
    let mut attributes = bag.into_map();
    attributes.insert("otel.span.name".into(), Value::String(span.name.clone()));
    if let Some(scope) = origin.scope.filter(|s| !s.name.is_empty()) {
        attributes.insert("otel.scope.name".into(), Value::String(scope.name.clone()));
    }
    if let Some(service) = origin.service_name {
        attributes.insert("service.name".into(), Value::String(service.to_owned()));
    }
    if !events.other.is_empty() {
        attributes.insert("otel.events".into(), Value::Array(events.other));
    }
    let started_at = Timestamp::from_unix_nanos(i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX));
    let ended_at = (span.end_time_unix_nano >= span.start_time_unix_nano && span.end_time_unix_nano > 0)
        .then(|| Timestamp::from_unix_nanos(i64::try_from(span.end_time_unix_nano).unwrap_or(i64::MAX)));
    let attributed = process_id.is_some();
    let record = TraceRecord {
        id: Some(id.unwrap_or_else(|| record_id(entry.workspace.as_str(), &entry.trace_id, &entry.span_id))),
        workspace: entry.workspace.clone(),
        classification: origin.classification.map(str::to_owned),
        kind,
        // Unless the span stated them, filled in when the ancestors are known;
        // placeholders that validate until then.
        session_id: session_id
            .filter(|_| attributed)
            .or_else(|| entry.session.clone().filter(|_| attributed))
            .unwrap_or_else(|| entry.trace_id.clone()),
        process_id: process_id.unwrap_or_else(|| entry.span_id.clone()),
        parent_process_id: parent_process_id.filter(|_| attributed),
        agent_name: entry.agent.as_ref().and_then(|a| a.name.clone()).or(stated_agent),
        trace_id: Some(entry.trace_id.clone()),
        span_id: Some(entry.span_id.clone()),
        parent_span_id: entry.parent_span_id.clone(),
        provider,
        model,
        model_version: responded,
        routing,
        input,
        retrieved_context,
        output,
        tool_calls,
        usage,
        started_at,
        ended_at,
        time_to_first_token_ms,
        status,
        error,
        action_ids,
        attributes: Some(attributes),
    };
    record.validate()?;
    Ok((record, attributed))
}

fn take_usage(bag: &mut Bag) -> Option<Usage> {
    let input = bag.take_count(&["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"]);
    let output =
        bag.take_count(&["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"]);
    let cache_read = bag.take_count(&[
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ]);
    let reasoning = bag.take_count(&[
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.output_tokens.reasoning",
        "llm.token_count.completion_details.reasoning",
    ]);
    if input.is_none() && output.is_none() && cache_read.is_none() && reasoning.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
        cache_read_tokens: cache_read.unwrap_or(0),
        reasoning_tokens: reasoning.unwrap_or(0),
    })
}

/// A span's events, sorted by what mapping does with them.
#[derive(Default)]
struct Events {
    /// Deprecated per-message events (`gen_ai.system.message` …) in order: (role, attributes).
    input_messages: Vec<(String, Bag)>,
    /// `gen_ai.choice` events.
    choices: Vec<Bag>,
    /// `gen_ai.content.prompt` / `gen_ai.content.completion` events.
    prompt: Option<Bag>,
    completion: Option<Bag>,
    exceptions: Vec<Bag>,
    other: Vec<Value>,
}

impl Events {
    fn split(events: &[Event]) -> Self {
        let mut sorted = Events::default();
        for event in events {
            let bag = Bag::new(&event.attributes);
            match event.name.as_str() {
                "gen_ai.system.message" => sorted.input_messages.push(("system".into(), bag)),
                "gen_ai.user.message" => sorted.input_messages.push(("user".into(), bag)),
                "gen_ai.assistant.message" => sorted.input_messages.push(("assistant".into(), bag)),
                "gen_ai.tool.message" => sorted.input_messages.push(("tool".into(), bag)),
                "gen_ai.choice" => sorted.choices.push(bag),
                "gen_ai.content.prompt" => sorted.prompt = Some(bag),
                "gen_ai.content.completion" => sorted.completion = Some(bag),
                "exception" => sorted.exceptions.push(bag),
                name => sorted.other.push(json!({
                    "name": name,
                    "time_unix_nano": event.time_unix_nano,
                    "attributes": Value::Object(bag.into_map()),
                })),
            }
        }
        sorted
    }
}

fn take_input(bag: &mut Bag, events: &mut Events) -> Vec<Message> {
    let system = bag.take_json("gen_ai.system_instructions");
    let sources = [
        bag.take_json("gen_ai.input.messages"),
        events.prompt.take().and_then(|mut e| e.take_json("gen_ai.prompt")),
        bag.take_nested("gen_ai.prompt"),
        bag.take_nested("llm.input_messages"),
    ];
    let mut messages: Vec<Message> = Vec::new();
    if let Some(system) = system {
        messages.push(Message {
            role: "system".into(),
            content: parts_content(system),
            name: None,
            tool_call_id: None,
        });
    }
    // Tool calls a model asked for earlier in the conversation are history, not this call's.
    let mut history_calls = Vec::new();
    if let Some(found) = first_messages(sources, "user", &mut history_calls) {
        messages.extend(found);
    } else {
        for (role, mut event) in std::mem::take(&mut events.input_messages) {
            let role = event.take_text(&["role"]).unwrap_or(role);
            let content = event.take_json("content").unwrap_or(Value::Null);
            let tool_call_id = event.take_text(&["id", "tool_call_id"]);
            messages.push(Message { role, content, name: None, tool_call_id });
        }
    }
    messages
}

fn take_output(bag: &mut Bag, events: &mut Events, tool_calls: &mut Vec<ToolCall>) -> Vec<Message> {
    let sources = [
        bag.take_json("gen_ai.output.messages"),
        events.completion.take().and_then(|mut e| e.take_json("gen_ai.completion")),
        bag.take_nested("gen_ai.completion"),
        bag.take_nested("llm.output_messages"),
    ];
    if let Some(found) = first_messages(sources, "assistant", tool_calls) {
        return found;
    }
    std::mem::take(&mut events.choices)
        .into_iter()
        .filter_map(|mut choice| {
            let message = choice.take_json("message").unwrap_or_else(
                || json!({"role": "assistant", "content": choice.take_json("content").unwrap_or(Value::Null)}),
            );
            message_from(message, "assistant", tool_calls)
        })
        .collect()
}

/// The messages of the first source that has any.
fn first_messages(sources: [Option<Value>; 4], role: &str, tool_calls: &mut Vec<ToolCall>) -> Option<Vec<Message>> {
    sources.into_iter().flatten().find_map(|value| {
        let items = match value {
            Value::Array(items) => items,
            Value::Null => return None,
            one => vec![one],
        };
        let messages: Vec<Message> = items.into_iter().filter_map(|m| message_from(m, role, tool_calls)).collect();
        (!messages.is_empty()).then_some(messages)
    })
}

/// One message in any of the shapes the conventions use: GenAI `{role, parts}`,
/// OpenAI-style `{role, content, tool_calls}`, OpenInference `{message: {…}}`.
fn message_from(value: Value, default_role: &str, tool_calls: &mut Vec<ToolCall>) -> Option<Message> {
    let Value::Object(mut m) = value else {
        return (!value.is_null()).then(|| Message {
            role: default_role.into(),
            content: value,
            name: None,
            tool_call_id: None,
        });
    };
    if let Some(Value::Object(inner)) = m.remove("message") {
        return message_from(Value::Object(inner), default_role, tool_calls);
    }
    let role = m.remove("role").and_then(|r| r.as_str().map(str::to_owned)).unwrap_or_else(|| default_role.into());
    let name = m.remove("name").and_then(|n| n.as_str().map(str::to_owned));
    let mut tool_call_id = m.remove("tool_call_id").and_then(|n| n.as_str().map(str::to_owned));
    let content = if let Some(Value::Array(parts)) = m.remove("parts") {
        for part in &parts {
            match part.get("type").and_then(Value::as_str) {
                Some("tool_call") => tool_calls.extend(tool_call_from(part)),
                Some("tool_call_response") => {
                    tool_call_id = tool_call_id.or_else(|| part.get("id").and_then(Value::as_str).map(str::to_owned));
                }
                _ => {}
            }
        }
        parts_content(Value::Array(parts))
    } else if let Some(Value::Array(contents)) = m.remove("contents") {
        // OpenInference: [{message_content: {type, text}}]
        parts_content(Value::Array(
            contents.into_iter().map(|c| c.get("message_content").cloned().unwrap_or(c)).collect(),
        ))
    } else {
        // Content given as content (text or an array of parts) is kept as sent.
        m.remove("content").unwrap_or(Value::Null)
    };
    if let Some(Value::Array(calls)) = m.remove("tool_calls") {
        tool_calls.extend(calls.iter().filter_map(tool_call_from));
    }
    Some(Message { role, content, name, tool_call_id })
}

/// Content as text when it is one text part, else the parts as sent.
fn parts_content(parts: Value) -> Value {
    match parts {
        Value::Array(items) if items.len() == 1 && is_text_part(&items[0]) => text_of(&items[0]),
        Value::Array(items) if items.iter().all(is_text_part) && !items.is_empty() => Value::String(
            items.iter().filter_map(|p| text_of(p).as_str().map(str::to_owned)).collect::<Vec<_>>().join("\n"),
        ),
        other => other,
    }
}

fn is_text_part(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str) == Some("text")
        && (part.get("content").is_some_and(Value::is_string) || part.get("text").is_some_and(Value::is_string))
}

fn text_of(part: &Value) -> Value {
    part.get("content").or_else(|| part.get("text")).cloned().unwrap_or(Value::Null)
}

/// A tool call in the GenAI part shape `{type: tool_call, id, name, arguments}`,
/// OpenAI's `{id, function: {name, arguments}}` or OpenInference's `{tool_call: {…}}`.
fn tool_call_from(value: &Value) -> Option<ToolCall> {
    let value = value.get("tool_call").unwrap_or(value);
    let function = value.get("function");
    let name = value.get("name").or_else(|| function.and_then(|f| f.get("name")))?.as_str()?.to_owned();
    let arguments = value
        .get("arguments")
        .or_else(|| function.and_then(|f| f.get("arguments")))
        .cloned()
        .map(parse_if_text)
        .unwrap_or(Value::Null);
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    Some(ToolCall { id, name, arguments })
}

fn take_documents(bag: &mut Bag) -> Vec<RetrievedDocument> {
    let nested = bag.take_nested("retrieval.documents");
    let json = bag.take_json("gen_ai.retrieval.documents");
    match nested.or(json) {
        Some(Value::Array(docs)) => docs.into_iter().map(document).collect(),
        _ => Vec::new(),
    }
}

/// A document as OpenInference (`{document: {id, content, score, metadata}}`) or plainly (`{id|source, content, score}`).
fn document(value: Value) -> RetrievedDocument {
    let value = match value {
        Value::Object(mut m) => match m.remove("document") {
            Some(inner @ Value::Object(_)) => inner,
            _ => Value::Object(m),
        },
        other => return RetrievedDocument { source: None, content: other, score: None },
    };
    let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let source = text("source")
        .or_else(|| {
            value
                .get("metadata")
                .map(|m| parse_if_text(m.clone()))
                .and_then(|m| m.get("source").and_then(Value::as_str).map(str::to_owned))
        })
        .or_else(|| text("id"));
    RetrievedDocument {
        source,
        content: value.get("content").cloned().unwrap_or(Value::Null),
        score: value.get("score").and_then(Value::as_f64),
    }
}

fn status_of(span: &Span, bag: &mut Bag, events: &mut Events) -> (RecordStatus, Option<String>) {
    let error_type = bag.take_text(&["error.type"]);
    let failed = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32) || error_type.is_some();
    if !failed {
        return (RecordStatus::Ok, None);
    }
    let message = span.status.as_ref().map(|s| s.message.clone()).filter(|m| !m.is_empty());
    let exception = events.exceptions.first_mut().map(|e| {
        let kind = e.take_text(&["exception.type"]);
        let text = e.take_text(&["exception.message"]);
        match (kind, text) {
            (Some(k), Some(t)) => format!("{k}: {t}"),
            (Some(k), None) => k,
            (None, Some(t)) => t,
            (None, None) => "exception".into(),
        }
    });
    (RecordStatus::Error, message.or(exception).or(error_type))
}

fn take_action_ids(bag: &mut Bag) -> Vec<String> {
    let mut ids = Vec::new();
    if let Some(one) = bag.take_text(&["custody.action_id"]) {
        ids.push(one);
    }
    if let Some(Value::Array(many)) = bag.take_json("custody.action_ids") {
        ids.extend(many.into_iter().filter_map(|v| v.as_str().map(str::to_owned)));
    }
    ids
}
