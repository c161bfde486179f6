//! Custody's domain types: audit events as callers send them, their validation and
//! canonical encoding, receipts, workspaces and API-key scopes. No I/O lives here,
//! so the server, the client and offline verifiers all agree on one definition.

pub mod canonical;
pub mod entry;
pub mod event;
pub mod keys;
pub mod proofs;
pub mod receipt;
pub mod timestamp;
pub mod trace;
pub mod validation;
pub mod workspace;

pub use entry::{ENTRY_FORMAT, StoredEntry, entry_bytes};
pub use event::{AuditEvent, Decision, EventKind, MAX_EVENT_BYTES, Severity};
pub use keys::{ApiKeyInfo, Scope};
pub use proofs::{ConsistencyProof, InclusionProof};
pub use receipt::Receipt;
pub use timestamp::Timestamp;
pub use trace::{RecordKind, RecordStatus, TraceRecord};
pub use validation::ValidationError;
pub use workspace::WorkspaceName;
