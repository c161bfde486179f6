//! The group-commit writer: one thread owns the write connection.
//!
//! It blocks for the first waiting job, drains every job queued behind it (up to
//! `max_group_events`), and commits them all in one transaction — one fsync for
//! the whole group. Only after the commit returns does any caller get a receipt;
//! if anything fails, every caller of the group gets the error and the in-memory
//! tree state stays as it was before the group.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use custody_ledger::merkle::hash_leaf;
use custody_ledger::{Checkpoint, Hash, MerkleFrontier, NoteSigner};
use custody_model::{AuditEvent, Receipt, Timestamp, entry_bytes};
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::schema::node_position;
use crate::{AppendError, OpenOptions};

/// Events with their canonical bytes, and where to send the outcome.
pub struct AppendJob {
    pub events: Vec<(AuditEvent, Vec<u8>)>,
    pub reply: oneshot::Sender<Result<Vec<Receipt>, AppendError>>,
}

pub struct GroupCommitWriter {
    conn: Connection,
    signer: NoteSigner,
    options: OpenOptions,
    /// The committed right edge of each workspace's tree.
    frontiers: HashMap<String, MerkleFrontier>,
    /// Tells the indexer that new entries are committed.
    indexer: SyncSender<()>,
    /// The id of the last checkpoint written.
    last_checkpoint_id: i64,
}

impl GroupCommitWriter {
    pub fn new(
        conn: Connection,
        signer: NoteSigner,
        options: OpenOptions,
        indexer: SyncSender<()>,
    ) -> rusqlite::Result<Self> {
        let frontiers = load_frontiers(&conn)?;
        let last_checkpoint_id = last_checkpoint_id(&conn)?;
        Ok(Self { conn, signer, options, frontiers, indexer, last_checkpoint_id })
    }

    pub fn run(mut self, mut jobs: mpsc::Receiver<AppendJob>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut count = first.events.len();
            let mut group = vec![first];
            while count < self.options.max_group_events {
                match jobs.try_recv() {
                    Ok(job) => {
                        count += job.events.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            match self.commit(&group) {
                Ok(mut receipts) => {
                    // A full channel means the indexer already has news to act on.
                    let _ = self.indexer.try_send(());
                    if let Some(observer) = &self.options.observer {
                        observer.group_committed(count, started.elapsed());
                    }
                    for job in group.into_iter().rev() {
                        let mine = receipts.split_off(receipts.len() - job.events.len());
                        // A caller that went away no longer needs its receipt; the
                        // events are durable either way.
                        let _ = job.reply.send(Ok(mine));
                    }
                }
                Err(error) => {
                    let reason = failure_reason(&error);
                    tracing::error!(error = %error, events = count, "audit commit group failed; no receipts issued");
                    if let Some(observer) = &self.options.observer {
                        observer.group_failed(count, reason);
                    }
                    for job in group {
                        let _ = job.reply.send(Err(AppendError::Unavailable(error.to_string())));
                    }
                    // The transaction rolled back and the state was never touched;
                    // re-read it anyway in case the file changed under us.
                    if let (Ok(frontiers), Ok(id)) = (load_frontiers(&self.conn), last_checkpoint_id(&self.conn)) {
                        self.frontiers = frontiers;
                        self.last_checkpoint_id = id;
                    }
                }
            }
        }
        tracing::info!("audit writer stopped");
    }

    /// Commits one group; returns the receipts in job order.
    fn commit(&mut self, group: &[AppendJob]) -> rusqlite::Result<Vec<Receipt>> {
        let recorded_at = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut staged: HashMap<&str, MerkleFrontier> = HashMap::new();
        let mut placed: Vec<(&str, u64, Hash)> = Vec::new();
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO audit_events (workspace, seq, ts_ns, kind, principal_id, action, decision,
                     resource_type, resource_id, action_id, leaf_hash, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut insert_node =
                tx.prepare_cached("INSERT INTO audit_nodes (workspace, pos, hash) VALUES (?1, ?2, ?3)")?;
            for (event, canonical) in group.iter().flat_map(|job| job.events.iter()) {
                let ws = event.workspace.as_str();
                let frontier = staged.entry(ws).or_insert_with(|| self.frontiers.get(ws).cloned().unwrap_or_default());
                let seq = frontier.size();
                let payload = entry_bytes(canonical, seq, &recorded_at);
                let leaf = hash_leaf(&payload);
                insert_event.execute(params![
                    ws,
                    seq as i64,
                    event.effective_time(recorded_at).unix_nanos(),
                    event.kind.as_str(),
                    event.principal.id,
                    event.action,
                    event.decision.map(|d| d.as_str()),
                    event.resource.kind,
                    event.resource.id,
                    event.action_id,
                    &leaf[..],
                    payload,
                ])?;
                for node in frontier.append(leaf) {
                    insert_node.execute(params![ws, node_position(node.level, node.index), &node.hash[..]])?;
                }
                placed.push((ws, seq, leaf));
            }
        }
        let mut notes: HashMap<&str, (u64, String)> = HashMap::new();
        let mut next_checkpoint_id = self.last_checkpoint_id;
        {
            let mut insert_checkpoint = tx.prepare_cached(
                "INSERT INTO audit_checkpoints (workspace, id, tree_size, note) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (ws, frontier) in &staged {
                let checkpoint =
                    Checkpoint { origin: origin(&self.signer, ws), size: frontier.size(), root: frontier.root() };
                let note =
                    checkpoint.sign(&self.signer).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                next_checkpoint_id += 1;
                insert_checkpoint.execute(params![ws, next_checkpoint_id, frontier.size() as i64, note])?;
                notes.insert(ws, (frontier.size(), note));
            }
        }
        tx.commit()?;
        let receipts = placed
            .into_iter()
            .map(|(ws, seq, leaf)| {
                let (tree_size, note) = notes.get(ws).cloned().unwrap_or_default();
                Receipt {
                    workspace: ws.to_owned(),
                    seq,
                    leaf_hash: hex::encode(leaf),
                    tree_size,
                    checkpoint: note,
                    recorded_at,
                }
            })
            .collect();
        for (ws, frontier) in staged {
            self.frontiers.insert(ws.to_owned(), frontier);
        }
        self.last_checkpoint_id = next_checkpoint_id;
        Ok(receipts)
    }
}

/// The checkpoint origin of a workspace's log: `<key name>/<workspace>`.
pub fn origin(signer: &NoteSigner, workspace: &str) -> String {
    format!("{}/{workspace}", signer.name())
}

fn failure_reason(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::*;
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => "locked",
        Some(DiskFull) => "disk_full",
        Some(ReadOnly | CannotOpen | PermissionDenied) => "read_only",
        Some(SystemIoFailure) => "io",
        _ => "other",
    }
}

/// Rebuilds every workspace's frontier from the stored nodes at its peaks.
fn load_frontiers(conn: &Connection) -> rusqlite::Result<HashMap<String, MerkleFrontier>> {
    let mut sizes = conn.prepare("SELECT workspace, MAX(seq) + 1 FROM audit_events GROUP BY workspace")?;
    let sizes: Vec<(String, i64)> = sizes.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut leaf = conn.prepare("SELECT leaf_hash FROM audit_events WHERE workspace = ?1 AND seq = ?2")?;
    let mut node = conn.prepare("SELECT hash FROM audit_nodes WHERE workspace = ?1 AND pos = ?2")?;
    let mut out = HashMap::new();
    for (ws, size) in sizes {
        let size = size as u64;
        let mut peaks = Vec::new();
        for (level, index) in MerkleFrontier::peak_positions(size) {
            let bytes: Vec<u8> = if level == 0 {
                leaf.query_row(params![ws, index as i64], |r| r.get(0))?
            } else {
                node.query_row(params![ws, node_position(level, index)], |r| r.get(0))?
            };
            peaks.push(to_hash(&bytes)?);
        }
        let frontier = MerkleFrontier::from_peaks(size, peaks)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        out.insert(ws, frontier);
    }
    Ok(out)
}

fn last_checkpoint_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM audit_checkpoints", [], |r| r.get(0))
}

pub fn to_hash(bytes: &[u8]) -> rusqlite::Result<Hash> {
    Hash::try_from(bytes).map_err(|_| rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob))
}
