//! `custody report` and `custody verify-bundle`: the chain of custody of an
//! action from a running server, and the offline check of its bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use custody_chain::{Witness, render_text, verify_bundle};
use custody_ledger::NoteVerifier;

use crate::traces::ServerArgs;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The action's id (the `action_id` of its audit events and trace records)
    action_id: String,
    #[command(flatten)]
    server: ServerArgs,
    /// The workspace of the action [default: the key's own]
    #[arg(long)]
    workspace: Option<String>,
    /// text (readable) or json (the report as the server assembled it)
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Also write the report as a self-contained bundle to FILE, for `custody verify-bundle`
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// The log's verifier key (from GET /api/v1/audit/public-key) the checkpoint must be signed with
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
}

pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let bytes = client.action_report(args.workspace.as_deref(), &args.action_id).await?;
    let pinned = args.public_key.as_deref().map(NoteVerifier::parse).transpose().context("--public-key")?;
    // The report is checked as a bundle before anything is shown or written.
    let verified =
        verify_bundle(&bytes, pinned.as_ref()).context("the server's report does not verify; nothing was written")?;
    if let Some(path) = &args.bundle {
        let pretty = serde_json::to_vec_pretty(&verified.report)?;
        std::fs::write(path, pretty).with_context(|| format!("writing the bundle to {}", path.display()))?;
    }
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&verified.report)?),
        ReportFormat::Text => {
            print!("{}", render_text(&verified.report));
            println!();
            println!("{}", verified_line(&verified));
        }
    }
    if let Some(path) = &args.bundle {
        eprintln!("bundle written to {} (check it with `custody verify-bundle {}`)", path.display(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verified_line(verified: &custody_chain::Verified) -> String {
    let audit = match (&verified.report.audit, &verified.key) {
        (Witness::Available(a), Some(key)) => format!(
            "{} audit entries proven against the checkpoint of {} entries signed by {key}",
            verified.audit_entries, a.tree_size
        ),
        _ => "no audit side (the audit log did not answer)".to_owned(),
    };
    let trace = match &verified.report.trace {
        Witness::Available(_) => format!("{} trace records match their content hashes", verified.trace_records),
        Witness::Unavailable { .. } => "no trace side (the trace store did not answer)".to_owned(),
    };
    format!("verified: {audit}; {trace}")
}

#[derive(Args)]
pub struct VerifyBundleArgs {
    /// The bundle (`custody report ACTION_ID --bundle FILE`)
    file: PathBuf,
    /// The log's verifier key (from GET /api/v1/audit/public-key) the checkpoint must be signed with
    /// [default: the key in the bundle, printed so that you can compare it]
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
}

pub fn verify(args: VerifyBundleArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let pinned = args.public_key.as_deref().map(NoteVerifier::parse).transpose().context("--public-key")?;
    match verify_bundle(&bytes, pinned.as_ref()) {
        Ok(verified) => {
            println!(
                "{}: valid — action {} of workspace {}",
                args.file.display(),
                verified.report.action_id,
                verified.report.workspace
            );
            println!("{}", verified_line(&verified));
            if pinned.is_none() && verified.key.is_some() {
                println!("the key is the bundle's own: compare it with the log's published key, or pass --public-key");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{}: INVALID — {error}", args.file.display());
            Ok(ExitCode::from(1))
        }
    }
}
