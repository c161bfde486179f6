//! The review questions, answered from the two witnesses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditSide, TraceSide, text_at};

/// What a review asks of an action, in words, each derived only from the
/// evidence beside it (so a bundle cannot claim more than it proves).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// What the agent did: the action, on what, as whom, and its final effect.
    pub what: Option<String>,
    /// Who authorized it: within the principal's ceiling, on which intent
    /// approved by whom and when, or why it was denied.
    pub authorized: Option<String>,
    /// The models that produced the output (provider, model, version, routing).
    pub models: Vec<String>,
    /// The data the models considered: the sources of retrieved context.
    pub data_considered: Vec<String>,
}

fn who(event: &Value) -> String {
    let kind = text_at(event, &["principal", "type"]).unwrap_or("principal");
    let id = text_at(event, &["principal", "id"]).unwrap_or("?");
    match text_at(event, &["principal", "on_behalf_of"]) {
        Some(user) => format!("{kind} {id} (on behalf of {user})"),
        None => format!("{kind} {id}"),
    }
}

fn when(event: &Value) -> Option<&str> {
    text_at(event, &["occurred_at"]).or_else(|| text_at(event, &["recorded_at"]))
}

impl Answers {
    /// The answers the evidence gives; a side that is not there answers nothing.
    pub fn derive(audit: Option<&AuditSide>, trace: Option<&TraceSide>) -> Self {
        let mut answers = Answers::default();
        if let Some(audit) = audit {
            let events: Vec<&Value> = audit.events.iter().map(|e| &e.event).collect();
            let of_kind = |kind: &str| events.iter().copied().find(|e| text_at(e, &["kind"]) == Some(kind));
            if let Some(decision) = audit.decision().map(|d| &d.event) {
                let action = text_at(decision, &["action"]).unwrap_or("?");
                let resource = format!(
                    "{} {}",
                    text_at(decision, &["resource", "type"]).unwrap_or("resource"),
                    text_at(decision, &["resource", "id"]).unwrap_or("?")
                );
                let effect = match of_kind("action.completed") {
                    Some(done) => match done.get("effect") {
                        Some(effect) => format!("completed at {}: {effect}", when(done).unwrap_or("?")),
                        None => format!("completed at {}", when(done).unwrap_or("?")),
                    },
                    None => "no final effect recorded".to_owned(),
                };
                let outcome = text_at(decision, &["decision"]).unwrap_or("?");
                answers.what = Some(format!("{} asked to {action} {resource}: {outcome}; {effect}", who(decision)));
                answers.authorized = Some(authorized(decision, of_kind("approval.granted")));
            }
        }
        if let Some(trace) = trace {
            for record in &trace.records {
                if text_at(record, &["kind"]) == Some("model_call") {
                    let mut model = format!(
                        "{} {}",
                        text_at(record, &["provider"]).unwrap_or("unknown provider"),
                        text_at(record, &["model"]).unwrap_or("?")
                    );
                    if let Some(version) = text_at(record, &["model_version"]) {
                        model.push_str(&format!(" (version {version})"));
                    }
                    if let Some(routing) = record.get("routing").filter(|r| r.is_object()) {
                        model.push_str(&format!(", routing {routing}"));
                    }
                    push_unique(&mut answers.models, model);
                }
                for document in record.get("retrieved_context").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(source) = text_at(document, &["source"]) {
                        push_unique(&mut answers.data_considered, source.to_owned());
                    }
                }
            }
        }
        answers
    }
}

fn authorized(decision: &Value, approval_event: Option<&Value>) -> String {
    let severity = text_at(decision, &["severity"]);
    let ceiling = text_at(decision, &["ceiling"]);
    let policies: Vec<&str> =
        decision.get("policies").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let by_policies = if policies.is_empty() { String::new() } else { format!(" under {}", policies.join(", ")) };
    if text_at(decision, &["decision"]) == Some("deny") {
        let reason = text_at(decision, &["reason"]).map(|r| format!(": {r}")).unwrap_or_default();
        return format!("nobody: denied{by_policies}{reason}");
    }
    let grade = match (severity, ceiling) {
        (Some(s), Some(c)) => format!("severity {s}, ceiling {c}"),
        (Some(s), None) => format!("severity {s}"),
        _ => "no severity given".to_owned(),
    };
    let intent = text_at(decision, &["approval", "intent_id"]);
    let approver = text_at(decision, &["approval", "approver"]).map(str::to_owned).or_else(|| {
        approval_event.map(|e| {
            format!(
                "{} {}",
                text_at(e, &["principal", "type"]).unwrap_or(""),
                text_at(e, &["principal", "id"]).unwrap_or("?")
            )
            .trim()
            .to_owned()
        })
    });
    let approved_at = text_at(decision, &["approval", "approved_at"]).or_else(|| approval_event.and_then(when));
    match (intent, approver) {
        (Some(intent), approver) => format!(
            "above the principal's ceiling ({grade}) on intent {intent}, approved by {} at {}{by_policies}",
            approver.as_deref().unwrap_or("an approver the log does not name"),
            approved_at.unwrap_or("an unrecorded time")
        ),
        (None, _) => format!("within the principal's ceiling ({grade}){by_policies}, no approval needed"),
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}
