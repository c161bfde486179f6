//! `custody verify`: offline verification of a store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use base64::Engine as _;
use clap::Args;
use custody_audit::signing_key;
use custody_audit::sqlite::SqliteAuditLog;
use custody_audit::verify::verify_log;
use custody_ledger::NoteVerifier;

#[derive(Args)]
pub struct VerifyArgs {
    /// The data directory of the store to verify
    #[arg(long, env = "CUSTODY_DATA_DIR", default_value = "./custody-data")]
    data_dir: PathBuf,
    /// The audit store URI [default: sqlite://DATA_DIR/audit.db]
    #[arg(long, value_name = "URI")]
    audit_store: Option<String>,
    /// The log's verifier key (name+id+key, from GET /api/v1/audit/public-key). Give it when the
    /// signing key in the data directory is not to be trusted [default: derived from DATA_DIR/signing.key]
    #[arg(long, value_name = "KEY")]
    public_key: Option<String>,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let verifier = match &args.public_key {
        Some(key) => NoteVerifier::parse(key).context("--public-key")?,
        None => signing_key::load(&args.data_dir.join("signing.key"))
            .context("no --public-key given, and the data directory's signing key cannot be read")?
            .verifier(),
    };
    let uri =
        args.audit_store.clone().unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("audit.db").display()));
    let path = uri
        .strip_prefix("sqlite://")
        .with_context(|| format!("`{uri}`: offline verification reads sqlite:// stores"))?;
    let log = SqliteAuditLog::open_read_only(std::path::Path::new(path), verifier.clone())?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let outcome = verify_log(&log, &verifier, |ws, checked| {
        if last_report.elapsed().as_secs() >= 2 {
            eprintln!("  {ws}: {checked} entries checked…");
            last_report = Instant::now();
        }
    })
    .await?;
    for ws in &outcome.workspaces {
        let bad = outcome.findings.iter().any(|f| f.workspace == ws.workspace);
        println!(
            "{}: {} entries, {} checkpoints, root {}: {}",
            ws.workspace,
            ws.entries,
            ws.checkpoints,
            base64::engine::general_purpose::STANDARD.encode(ws.root),
            if bad { "TAMPERED" } else { "intact" }
        );
    }
    if outcome.is_intact() {
        println!(
            "verified {} workspace logs in {:.1}s: intact",
            outcome.workspaces.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for finding in &outcome.findings {
        println!("tampered: {finding}");
    }
    eprintln!("custody verify: the audit log does not verify ({} findings)", outcome.findings.len());
    Ok(ExitCode::from(1))
}
