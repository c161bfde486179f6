//! `custody demo`: the worked example. A support agent acting for a user: the
//! root agent spawns two helpers; one reads the customer's history from a CRM,
//! the other drafts an email with a model; sending an external email is above
//! the user's ceiling, so an intent is created and approved by a named
//! approver; the send is authorized and completed. The CRM helper also tries a
//! bulk export of the customer list and is denied. Everything goes through the
//! public API as a real integration's would: the audit append before each gated
//! step (the step runs only with a verified receipt), the model calls through
//! the trace API after they complete. Then the chain of custody of the send and
//! of the denial.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use custody_chain::{render_text, verify_bundle};
use custody_client::Client;
use custody_model::{AuditEvent, Receipt, Timestamp};
use serde_json::{Value, json};

const WORKSPACE: &str = "acme";

#[derive(Args)]
pub struct DemoArgs {
    /// A running server to use [default: start an embedded one]
    #[arg(long)]
    server: Option<String>,
    /// An admin key of that server (the demo creates the keys it needs with it)
    #[arg(long, env = "CUSTODY_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Where the embedded server keeps its data
    #[arg(long, default_value = "./custody-demo-data")]
    data_dir: PathBuf,
    /// Where the embedded server listens
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Where the bundle of the send is written
    #[arg(long, default_value = "custody-demo-send.json")]
    bundle: PathBuf,
    /// Stop the embedded server once the reports are printed, instead of serving the API and the dashboard until Ctrl-C
    #[arg(long)]
    no_serve: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    match &args.server {
        Some(url) => {
            let key =
                args.key.as_deref().context("--server needs --key (or CUSTODY_KEY): an admin key of that server")?;
            let reader = walk(url, key, &args).await?;
            println!("The dashboard: open {url}/ and sign in with the read key {reader}.");
        }
        None => {
            let key = format!("demo-admin-{:016x}{:08x}", Timestamp::now().unix_nanos(), std::process::id());
            let mut config = custody_server::ServerConfig::new(args.data_dir.clone(), args.listen);
            config.bootstrap_key = Some(key.clone());
            config.otlp_grpc_listen = None;
            let server = custody_server::start(config)
                .await
                .with_context(|| format!("starting the embedded server on {} (move it with --listen)", args.listen))?;
            let url = format!("http://{}", server.local_addr);
            eprintln!("embedded server on {url}, data in {}", args.data_dir.display());
            let reader = walk(&url, &key, &args).await?;
            if args.no_serve {
                server.shutdown().await?;
            } else {
                println!("The server keeps serving at {url} (read key {reader}); Ctrl-C stops it.");
                println!("The dashboard: open {url}/ and sign in with that key.");
                server.run_until(crate::shutdown_signal()).await?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The integration's side: keys bound to their job, and an audit append
/// before each gated step.
struct Platform {
    audit: Client,
    traces: Client,
    run: String,
}

impl Platform {
    /// Appends the event and returns its receipt, checked against the log's
    /// key; without one the step must not run.
    async fn record(&self, event: Value) -> anyhow::Result<Receipt> {
        let event = AuditEvent::from_value(event).context("a demo event")?;
        let receipt = self.audit.append(&event).await.context("the audit append before a gated step")?;
        Ok(receipt)
    }

    /// Records model calls, retrievals and tool calls after they completed; returns their ids.
    async fn traced(&self, records: Vec<Value>) -> anyhow::Result<Vec<String>> {
        let answer = self.traces.append_traces(&records).await.context("recording model calls")?;
        anyhow::ensure!(answer.rejected.is_empty(), "the trace store refused demo records: {:?}", answer.rejected);
        Ok(answer.ids)
    }

    fn id(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }
}

fn step(text: &str) {
    eprintln!("· {text}");
}

/// Runs the scenario against `url`; prints the two reports; returns the read key.
async fn walk(url: &str, admin_key: &str, args: &DemoArgs) -> anyhow::Result<String> {
    let admin = Client::new(url, admin_key)?;
    let (audit_key, _) = admin.create_key(WORKSPACE, "audit:write", Some("demo permission layer")).await?;
    let (trace_key, _) = admin.create_key(WORKSPACE, "trace:write", Some("demo agent runtime")).await?;
    let (read_key, _) = admin.create_key(WORKSPACE, "read", Some("demo reviewer")).await?;
    let run = format!("{:x}", Timestamp::now().unix_nanos() % (1 << 40));
    let p = Platform { audit: Client::new(url, &audit_key)?, traces: Client::new(url, &trace_key)?, run };
    let session = p.id("sess-support");
    let (root, crm, drafter) = (p.id("support"), p.id("crm-helper"), p.id("drafter"));
    let (send, export) = (p.id("act-send-email"), p.id("act-bulk-export"));
    let agent = |name: &str| json!({"type": "agent", "id": format!("agent:{name}"), "on_behalf_of": "user:alice"});
    // The story's clock: it starts a minute ago and moves on with each step, so that the
    // records' times tell the order things happened in (the log adds its own `recorded_at`).
    let clock = std::cell::Cell::new(Timestamp::now().unix_nanos() - 60_000_000_000);
    let advance = |ms: i64| {
        clock.set(clock.get() + ms * 1_000_000);
        Timestamp::from_unix_nanos(clock.get())
    };
    let now = || advance(50).to_string();
    let base = |kind: &str| json!({"workspace": WORKSPACE, "kind": kind});
    let merge = |mut a: Value, b: Value| {
        if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
            a.extend(b);
        }
        a
    };
    // Each takes as long as such a step does; agents run on (no end).
    let call = |process: &str, parent: Option<&str>, name: &str, kind: &str, extra: Value| {
        let took_ms: i64 = match kind {
            "model_call" => 1400,
            "tool_call" => 320,
            "retrieval" => 85,
            _ => 0,
        };
        let started = advance(50);
        let ended = (took_ms > 0).then(|| advance(took_ms).to_string());
        merge(
            json!({"workspace": WORKSPACE, "classification": "confidential", "kind": kind, "session_id": session,
                "process_id": process, "parent_process_id": parent, "agent_name": name,
                "started_at": started.to_string(), "ended_at": ended, "status": "ok"}),
            extra,
        )
    };

    step("the administrator grants alice the support role, and the mail relay's key is issued");
    p.record(merge(base("role.granted"), json!({"principal": {"type": "user", "id": "admin:carol"},
        "action": "role.grant", "resource": {"type": "principal", "id": "user:alice", "attributes": {"role": "support", "ceiling": "medium"}}})))
        .await?;
    p.record(merge(
        base("api_key.created"),
        json!({"principal": {"type": "user", "id": "admin:carol"},
        "action": "api_key.create", "resource": {"type": "api_key", "id": p.id("key-smtp")}}),
    ))
    .await?;

    step("alice asks the support agent to answer customer 42; it plans with a model and spawns two helpers");
    p.traced(vec![
        call(&root, None, "support", "agent", json!({})),
        call(
            &root,
            None,
            "support",
            "model_call",
            json!({"provider": "anthropic", "model": "claude-sonnet-4",
            "model_version": "claude-sonnet-4-20250514", "routing": {"router": "default", "reason": "planning"},
            "input": [{"role": "system", "content": "You are the support agent of Acme."},
                      {"role": "user", "content": "Customer 42 says order 1182 arrived damaged. Answer them."}],
            "output": [{"role": "assistant", "content": "Plan: read the customer's history, draft a reply, send it."}],
            "usage": {"input_tokens": 412, "output_tokens": 38}, "action_ids": [send]}),
        ),
        call(&crm, Some(&root), "crm-helper", "agent", json!({})),
        call(&drafter, Some(&root), "drafter", "agent", json!({})),
    ])
    .await?;

    step("the CRM helper reads customer 42's history (allowed within alice's ceiling)");
    let crm_read = p.id("act-crm-read");
    p.record(merge(
        base("authz.decision"),
        json!({"principal": agent("crm-helper"),
        "access_path": ["user:alice", "role:support", "agent:support", "agent:crm-helper"], "action": "crm.read",
        "resource": {"type": "crm_record", "id": "customers/42/history"}, "decision": "allow", "severity": "low",
        "ceiling": "medium", "policies": ["support-reads-crm"], "action_id": crm_read,
        "session": {"session_id": session, "process_id": crm}, "occurred_at": now()}),
    ))
    .await?;
    let history = "2026-11-28 order 1182 shipped; 2026-11-30 customer reports the parcel arrived damaged.";
    p.traced(vec![call(
        &crm,
        Some(&root),
        "crm-helper",
        "retrieval",
        json!({
        "retrieved_context": [{"source": "crm://customers/42/history", "content": history, "score": 0.91}],
        "action_ids": [crm_read, send]}),
    )])
    .await?;

    step("the drafter writes the email with a model, given the history");
    let draft = "Dear customer, we are sorry your order 1182 arrived damaged. A replacement ships today.";
    let ids = p
        .traced(vec![call(
            &drafter,
            Some(&root),
            "drafter",
            "model_call",
            json!({"provider": "openai",
            "model": "gpt-4o", "model_version": "gpt-4o-2024-08-06",
            "routing": {"router": "default", "reason": "primary", "region": "eu-west"},
            "input": [{"role": "system", "content": "Draft customer emails for Acme support."},
                      {"role": "user", "content": "Reply to customer 42 about order 1182."}],
            "retrieved_context": [{"source": "crm://customers/42/history", "content": history, "score": 0.91}],
            "output": [{"role": "assistant", "content": draft}],
            "tool_calls": [{"id": "call_1", "name": "send_email", "arguments": {"to": "customer-42@example.com"}}],
            "usage": {"input_tokens": 812, "output_tokens": 164}, "time_to_first_token_ms": 240,
            "action_ids": [send]}),
        )])
        .await?;
    let drafted = ids.first().cloned().context("no id for the drafter's call")?;

    step("sending an external email is high severity, above alice's ceiling: an intent, approved by bob");
    let intent = p.id("int-send");
    let email = json!({"type": "email", "id": "customer-42@example.com"});
    p.record(merge(
        base("intent.created"),
        json!({"principal": agent("support"), "action": "email.send",
        "resource": email, "severity": "high", "ceiling": "medium", "action_id": send,
        "attributes": {"intent_id": intent}, "occurred_at": now()}),
    ))
    .await?;
    let approved_at = now();
    p.record(merge(
        base("approval.granted"),
        json!({"principal": {"type": "user", "id": "user:bob"},
        "action": "email.send", "resource": {"type": "intent", "id": intent}, "action_id": send,
        "occurred_at": approved_at}),
    ))
    .await?;
    let receipt = p
        .record(merge(
            base("authz.decision"),
            json!({"principal": agent("support"),
            "access_path": ["user:alice", "role:support", "agent:support"], "action": "email.send", "resource": email,
            "decision": "allow", "severity": "high", "ceiling": "medium", "policies": ["external-email-needs-approval"],
            "approval": {"intent_id": intent, "approver": "user:bob", "approved_at": approved_at},
            "credential": {"type": "api_key", "id": p.id("key-smtp"), "boundary": "smtp-relay.acme.internal"},
            "action_id": send, "session": {"session_id": session, "process_id": root},
            "model_call_ids": [drafted], "occurred_at": now()}),
        ))
        .await?;
    step(&format!("the send runs on receipt #{} of the audit log; the relay accepts the email", receipt.seq));
    p.record(merge(
        base("action.completed"),
        json!({"principal": agent("support"), "action": "email.send",
        "resource": email, "action_id": send, "effect": {"relay": "accepted", "message_id": p.id("msg")},
        "occurred_at": now()}),
    ))
    .await?;
    p.traced(vec![call(
        &root,
        None,
        "support",
        "tool_call",
        json!({
        "tool_calls": [{"id": "call_1", "name": "send_email", "arguments": {"to": "customer-42@example.com"}}],
        "action_ids": [send]}),
    )])
    .await?;

    step("the CRM helper also tries to export the whole customer list: critical, denied, nothing runs");
    p.traced(vec![call(
        &crm,
        Some(&root),
        "crm-helper",
        "model_call",
        json!({"provider": "openai",
        "model": "gpt-4o-mini", "model_version": "gpt-4o-mini-2024-07-18",
        "input": [{"role": "user", "content": "Export all customers so I can look for similar complaints."}],
        "output": [{"role": "assistant", "content": "Calling crm.export on customers/*"}],
        "usage": {"input_tokens": 96, "output_tokens": 22}, "action_ids": [export]}),
    )])
    .await?;
    p.record(merge(
        base("authz.decision"),
        json!({"principal": agent("crm-helper"),
        "access_path": ["user:alice", "role:support", "agent:support", "agent:crm-helper"], "action": "crm.export",
        "resource": {"type": "crm_table", "id": "customers"}, "decision": "deny", "severity": "critical",
        "ceiling": "medium", "policies": ["no-bulk-export"], "reason": "bulk export of customer data is not allowed",
        "action_id": export, "session": {"session_id": session, "process_id": crm}, "occurred_at": now()}),
    ))
    .await?;

    let reader = Client::new(url, &read_key)?;
    for (action, bundle) in [(&send, Some(&args.bundle)), (&export, None)] {
        let bytes = reader.action_report(Some(WORKSPACE), action).await?;
        let verified = verify_bundle(&bytes, None).context("the report does not verify")?;
        println!();
        print!("{}", render_text(&verified.report));
        if let Some(path) = bundle {
            std::fs::write(path, serde_json::to_vec_pretty(&verified.report)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "\nThe bundle of the send: {} (check it offline: custody verify-bundle {})",
                path.display(),
                path.display()
            );
        }
    }
    println!();
    println!("Again any time: custody report {send} --server {url} --key {read_key}");
    Ok(read_key)
}
