//! The AuditLog conformance suite against the embedded SQLite backend.

use std::sync::Arc;

use custody_audit::{AuditLog, OpenOptions, open_audit_log};
use custody_ledger::NoteSigner;

async fn open_sqlite() -> (Arc<dyn AuditLog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = NoteSigner::from_seed("custody.test/audit", [42; 32]).expect("signer");
    let uri = format!("sqlite://{}", dir.path().join("audit.db").display());
    let log = open_audit_log(&uri, signer, OpenOptions::default()).await.expect("open sqlite log");
    (log, dir)
}

custody_audit::audit_log_conformance!(open_sqlite);
