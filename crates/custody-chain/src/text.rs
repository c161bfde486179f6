//! The report as readable text (`custody report`).

use std::fmt::Write as _;

use serde_json::Value;

use crate::{ActionReport, ProvenEntry, Witness, text_at};

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    text_at(v, &[key]).unwrap_or("-")
}

fn entry_line(out: &mut String, entry: &ProvenEntry) {
    let e = &entry.event;
    let principal = e.get("principal").map_or("-".to_owned(), |p| format!("{} {}", field(p, "type"), field(p, "id")));
    let resource = e.get("resource").map_or("-".to_owned(), |r| format!("{} {}", field(r, "type"), field(r, "id")));
    let decision = e.get("decision").and_then(Value::as_str).map(|d| format!(" → {d}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "  #{:<6} {}  {:<16} {principal}: {} {resource}{decision}",
        entry.seq,
        entry.recorded_at,
        field(e, "kind"),
        field(e, "action")
    );
}

fn content_summary(messages: Option<&Value>) -> String {
    let text: String = messages
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => format!("[{}] {s}", field(m, "role")),
            Some(other) => format!("[{}] {other}", field(m, "role")),
            None => format!("[{}]", field(m, "role")),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut short: String = text.chars().take(160).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Renders the report for a terminal.
pub fn render_text(report: &ActionReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Chain of custody of action {} (workspace {})", report.action_id, report.workspace);
    let _ = writeln!(out, "assembled {}", report.generated_at);
    let _ = writeln!(out);
    let a = &report.answers;
    let _ = writeln!(
        out,
        "What did the agent do?     {}",
        a.what.as_deref().unwrap_or("unknown: the audit log did not answer")
    );
    let _ = writeln!(
        out,
        "Who authorized it?         {}",
        a.authorized.as_deref().unwrap_or("unknown: the audit log did not answer")
    );
    let models = if a.models.is_empty() { "none recorded".to_owned() } else { a.models.join("; ") };
    let _ = writeln!(out, "Which model produced it?   {models}");
    let data = if a.data_considered.is_empty() { "none recorded".to_owned() } else { a.data_considered.join(", ") };
    let _ = writeln!(out, "What data did it consider? {data}");
    let _ = writeln!(out);
    match &report.audit {
        Witness::Available(audit) => {
            let _ = writeln!(
                out,
                "Audit log — {} entries proven against the signed checkpoint of {} entries",
                audit.events.len() + audit.grants.len() + audit.credential_events.len(),
                audit.tree_size
            );
            let _ = writeln!(out, " the action's events:");
            audit.events.iter().for_each(|e| entry_line(&mut out, e));
            if !audit.grants.is_empty() {
                let _ = writeln!(out, " roles in force before the decision:");
                audit.grants.iter().for_each(|e| entry_line(&mut out, e));
            }
            if !audit.credential_events.is_empty() {
                let _ = writeln!(out, " the credential's lifecycle:");
                audit.credential_events.iter().for_each(|e| entry_line(&mut out, e));
            }
            if let Some(decision) = audit.decision() {
                let e = &decision.event;
                if let Some(path) = e.get("access_path").and_then(Value::as_array) {
                    let path: Vec<&str> = path.iter().filter_map(Value::as_str).collect();
                    let _ = writeln!(out, " access path: {}", path.join(" → "));
                }
                if let Some(c) = e.get("credential") {
                    let _ = writeln!(
                        out,
                        " credential: {} {} (boundary {})",
                        field(c, "type"),
                        field(c, "id"),
                        field(c, "boundary")
                    );
                }
            }
        }
        Witness::Unavailable { error } => {
            let _ = writeln!(out, "Audit log — UNAVAILABLE: {error}");
        }
    }
    let _ = writeln!(out);
    match &report.trace {
        Witness::Available(trace) => {
            let _ = writeln!(
                out,
                "Trace store — {} records from session(s) {}",
                trace.records.len(),
                trace.sessions.join(", ")
            );
            for r in &trace.records {
                let path: Vec<&str> = r
                    .get("process_path")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let model = match r.get("model").and_then(Value::as_str) {
                    Some(model) => format!(" {} {model} {}", field(r, "provider"), field(r, "model_version")),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {} {:<10}{model}  agent {} ({})  sha256 {}",
                    field(r, "started_at"),
                    field(r, "kind"),
                    field(r, "agent_name"),
                    path.join("/"),
                    &field(r, "content_hash").chars().take(16).collect::<String>()
                );
                for call in r.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let arguments = call.get("arguments").map(Value::to_string).unwrap_or_default();
                    let _ = writeln!(out, "      tool:     {}({arguments})", field(call, "name"));
                }
                let input = content_summary(r.get("input"));
                if !input.is_empty() {
                    let _ = writeln!(out, "      saw:      {input}");
                }
                for d in r.get("retrieved_context").and_then(Value::as_array).into_iter().flatten() {
                    let _ = writeln!(out, "      context:  {}", field(d, "source"));
                }
                let output = content_summary(r.get("output"));
                if !output.is_empty() {
                    let _ = writeln!(out, "      produced: {output}");
                }
            }
        }
        Witness::Unavailable { error } => {
            let _ = writeln!(out, "Trace store — UNAVAILABLE: {error}");
        }
    }
    out
}
