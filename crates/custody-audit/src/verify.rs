//! Offline verification of a whole audit store.
//!
//! For every workspace: each entry's leaf hash is recomputed from its stored bytes
//! and compared with the stored hash, the entry's own `seq` with its position, and
//! the sequence must be dense from 0. The Merkle root is recomputed at every
//! checkpointed size; each checkpoint's signature must verify with the log's key,
//! its origin must name the workspace, sizes must never go backwards, and its root
//! must equal the recomputed one. Two checkpoints whose roots both equal roots
//! recomputed from one verified entry sequence are consistent by construction, so
//! this also establishes consistency between every pair of consecutive checkpoints.

use std::collections::BTreeMap;
use std::fmt;

use custody_ledger::merkle::{empty_root, hash_leaf};
use custody_ledger::{Checkpoint, Hash, MerkleFrontier, NoteVerifier};
use custody_model::{StoredEntry, WorkspaceName};

use crate::{AuditLog, StoreError};

const PAGE: usize = 10_000;

/// Something that does not verify, located as precisely as the evidence allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub workspace: String,
    /// The first bad entry, when one can be named.
    pub seq: Option<u64>,
    /// The tree size of the checkpoint at fault, when a checkpoint is.
    pub checkpoint_size: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workspace {}", self.workspace)?;
        if let Some(seq) = self.seq {
            write!(f, ": entry seq {seq}")?;
        }
        if let Some(size) = self.checkpoint_size {
            write!(f, ": checkpoint of tree size {size}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a verified workspace log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSummary {
    pub workspace: String,
    pub entries: u64,
    pub checkpoints: u64,
    pub root: Hash,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOutcome {
    pub workspaces: Vec<WorkspaceSummary>,
    pub findings: Vec<Finding>,
}

impl VerifyOutcome {
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies every workspace log of `log` against `verifier`. `progress` is called
/// with the workspace and the number of entries checked so far.
pub async fn verify_log(
    log: &dyn AuditLog,
    verifier: &NoteVerifier,
    mut progress: impl FnMut(&str, u64),
) -> Result<VerifyOutcome, StoreError> {
    let mut outcome = VerifyOutcome::default();
    for ws in log.workspaces().await? {
        let (summary, findings) = verify_workspace(log, verifier, &ws, &mut progress).await?;
        outcome.workspaces.push(summary);
        outcome.findings.extend(findings);
    }
    Ok(outcome)
}

/// Verifies one workspace log of `log` (what [`verify_log`] does for each).
pub async fn verify_workspace(
    log: &dyn AuditLog,
    verifier: &NoteVerifier,
    ws: &WorkspaceName,
    progress: &mut impl FnMut(&str, u64),
) -> Result<(WorkspaceSummary, Vec<Finding>), StoreError> {
    let name = ws.to_string();
    let finding = |seq: Option<u64>, checkpoint_size: Option<u64>, detail: String| Finding {
        workspace: name.clone(),
        seq,
        checkpoint_size,
        detail,
    };
    let checkpoints = log.checkpoints(ws).await?;
    let mut wanted_roots: BTreeMap<u64, Option<Hash>> = checkpoints.iter().map(|c| (c.tree_size, None)).collect();
    let mut findings = Vec::new();
    let mut frontier = MerkleFrontier::new();
    // Entries are checked up to the first bad one: everything after it would only
    // repeat the same damage.
    'entries: loop {
        let page = log.entries(ws, frontier.size(), PAGE).await?;
        if page.is_empty() {
            break;
        }
        for raw in &page {
            let expected = frontier.size();
            if raw.seq != expected {
                findings.push(finding(
                    Some(expected),
                    None,
                    format!("is missing (the next stored entry is seq {}): an entry was deleted", raw.seq),
                ));
                break 'entries;
            }
            let Some(entry) = StoredEntry::parse(&raw.payload) else {
                findings.push(finding(
                    Some(expected),
                    None,
                    "the stored bytes are not a valid entry: it was edited".into(),
                ));
                break 'entries;
            };
            if entry.seq != raw.seq {
                findings.push(finding(
                    Some(expected),
                    None,
                    format!("holds the entry written as seq {}: entries were reordered or swapped", entry.seq),
                ));
                break 'entries;
            }
            if entry.event.get("workspace").and_then(|w| w.as_str()) != Some(ws.as_str()) {
                findings.push(finding(Some(expected), None, "holds an event of another workspace".into()));
                break 'entries;
            }
            let leaf = hash_leaf(&raw.payload);
            if leaf != raw.leaf_hash {
                findings.push(finding(
                    Some(expected),
                    None,
                    "its content does not match its leaf hash: the entry was edited".into(),
                ));
                break 'entries;
            }
            frontier.append(leaf);
            if let Some(root) = wanted_roots.get_mut(&frontier.size()) {
                *root = Some(frontier.root());
            }
        }
        progress(ws.as_str(), frontier.size());
    }
    let entries = frontier.size();
    let entries_ok = findings.is_empty();

    let origin_suffix = format!("/{ws}");
    let mut previous: Option<(u64, u64)> = None; // (size, id)
    for cp in &checkpoints {
        let at = Some(cp.tree_size);
        let parsed = match Checkpoint::open(&cp.note, verifier) {
            Ok(parsed) => parsed,
            Err(e) => {
                findings.push(finding(None, at, format!("does not verify with the log's key ({e}): it is forged")));
                continue;
            }
        };
        if parsed.size != cp.tree_size || !parsed.origin.ends_with(&origin_suffix) {
            findings.push(finding(
                None,
                at,
                format!("signs size {} of `{}`, not this log at this size", parsed.size, parsed.origin),
            ));
            continue;
        }
        if let Some((prev_size, prev_id)) = previous
            && parsed.size < prev_size
        {
            findings.push(finding(
                None,
                at,
                format!(
                    "was written after checkpoint #{prev_id} of size {prev_size}: the log was rolled back or truncated"
                ),
            ));
        }
        previous = Some((parsed.size, cp.id));
        if parsed.size > entries {
            if entries_ok {
                findings.push(finding(
                    Some(entries),
                    at,
                    format!("is missing: the log holds {entries} entries but a signed checkpoint covers {}: the log was truncated", parsed.size),
                ));
            }
            continue;
        }
        // Every size up to `entries` had its root recomputed, but 0: the empty tree.
        let recomputed = wanted_roots.get(&parsed.size).copied().flatten().unwrap_or_else(empty_root);
        if recomputed != parsed.root {
            findings.push(finding(
                None,
                at,
                "its root does not match the entries: entries before this size were altered".into(),
            ));
        }
    }
    let summary = WorkspaceSummary {
        workspace: name.clone(),
        entries,
        checkpoints: checkpoints.len() as u64,
        root: frontier.root(),
    };
    Ok((summary, findings))
}
