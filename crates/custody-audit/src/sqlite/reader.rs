//! Reads: queries, raw entries for verification, checkpoints and proofs.

use std::path::PathBuf;
use std::sync::Mutex;

use custody_ledger::merkle::{ProveError, consistency_proof as prove_consistency, inclusion_proof as prove_inclusion};
use custody_ledger::{Hash, NodeSource};
use custody_model::{ConsistencyProof, InclusionProof, StoredEntry, WorkspaceName};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{node_position, open_reader};
use super::writer::to_hash;
use crate::{
    EventPage, EventQuery, ProofQueryError, QueryCursor, RawEntry, StoreError, StoredCheckpoint, StoredEvent,
    hex_hashes,
};

/// A few reusable read connections.
pub struct ReaderPool {
    path: PathBuf,
    read_only: bool,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub fn new(path: PathBuf, read_only: bool) -> Self {
        Self { path, read_only, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `f` on an idle connection (opening one if none is idle).
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = match self.idle.lock().map(|mut idle| idle.pop()) {
            Ok(Some(conn)) => conn,
            _ => open_reader(&self.path, self.read_only)?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 8
        {
            idle.push(conn);
        }
        result
    }
}

pub fn store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            StoreError::Corrupt(e.to_string())
        }
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs an audit search. With a workspace and an indexed filter (action id,
/// resource id, principal) it reads the derived index up to its watermark and
/// scans the log beyond it; otherwise it walks the log in seq order.
pub fn query(conn: &Connection, q: &EventQuery) -> rusqlite::Result<Result<EventPage, StoreError>> {
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |value: SqlValue| {
        args.push(value);
        format!("?{}", args.len())
    };
    let mut filters = Vec::new();
    let ws = q.workspace.as_ref().map(|w| arg(w.to_string().into()));
    if let Some(ws) = &ws {
        filters.push(format!("e.workspace = {ws}"));
    }
    let text_filters = [
        ("e.principal_id", q.principal.clone()),
        ("e.action", q.action.clone()),
        ("e.kind", q.kind.map(|k| k.as_str().to_owned())),
        ("e.decision", q.decision.map(|d| d.as_str().to_owned())),
        ("e.resource_type", q.resource_type.clone()),
        ("e.resource_id", q.resource_id.clone()),
        ("e.action_id", q.action_id.clone()),
    ];
    let mut bound = std::collections::HashMap::new();
    for (column, value) in text_filters {
        if let Some(value) = value {
            let p = arg(value.into());
            filters.push(format!("{column} = {p}"));
            bound.insert(column, p);
        }
    }
    let since = q.since.map(|t| arg(t.unix_nanos().into()));
    let until = q.until.map(|t| arg(t.unix_nanos().into()));
    if let Some(p) = &since {
        filters.push(format!("e.ts_ns >= {p}"));
    }
    if let Some(p) = &until {
        filters.push(format!("e.ts_ns < {p}"));
    }
    if let Some(after) = &q.after {
        let (w, s) = (arg(after.workspace.clone().into()), arg((after.seq as i64).into()));
        filters.push(format!("(e.workspace > {w} OR (e.workspace = {w} AND e.seq > {s}))"));
    }
    let limit = q.limit.max(1);
    let columns = "SELECT e.workspace, e.seq, e.leaf_hash, e.payload FROM audit_events e";
    let filter = if filters.is_empty() { "1 = 1".to_owned() } else { filters.join(" AND ") };
    let candidates = match (&ws, has_index(conn)?) {
        (Some(ws), true) => {
            if let Some(p) = bound.get("e.action_id") {
                Some(format!("SELECT id FROM idx.by_action_id WHERE workspace = {ws} AND action_id = {p}"))
            } else if let Some(p) = bound.get("e.resource_id") {
                let of_type =
                    bound.get("e.resource_type").map(|t| format!(" AND resource_type = {t}")).unwrap_or_default();
                Some(format!("SELECT id FROM idx.by_resource WHERE workspace = {ws} AND resource_id = {p}{of_type}"))
            } else if let Some(p) = bound.get("e.principal_id") {
                let mut range = String::new();
                if let Some(s) = &since {
                    range.push_str(&format!(" AND ts_ns >= {s}"));
                }
                if let Some(u) = &until {
                    range.push_str(&format!(" AND ts_ns < {u}"));
                }
                Some(format!("SELECT id FROM idx.by_principal WHERE workspace = {ws} AND principal_id = {p}{range}"))
            } else {
                None
            }
        }
        _ => None,
    };
    let sql = match candidates {
        Some(candidates) => format!(
            "{columns} WHERE e.id IN ({candidates}) AND e.id <= (SELECT up_to FROM idx.indexed) AND {filter}
             UNION ALL
             {columns} WHERE e.id > (SELECT up_to FROM idx.indexed) AND {filter}
             ORDER BY 1, 2 LIMIT {}",
            limit + 1
        ),
        None => format!("{columns} WHERE {filter} ORDER BY e.workspace, e.seq LIMIT {}", limit + 1),
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?))
    })?;
    let mut events = Vec::new();
    let mut last = None;
    let mut more = false;
    for row in rows {
        let (ws, seq, leaf, payload) = row?;
        // The page asks for one row beyond `limit`: its presence means a next page.
        if events.len() == limit {
            more = true;
            break;
        }
        let Some(entry) = StoredEntry::parse(&payload) else {
            return Ok(Err(StoreError::Corrupt(format!("entry {ws}/{seq} is not a valid entry"))));
        };
        events.push(StoredEvent { entry, leaf_hash: to_hash(&leaf)? });
        last = Some(QueryCursor { workspace: ws, seq: seq as u64 });
    }
    Ok(Ok(EventPage { events, next_cursor: if more { last } else { None } }))
}

fn has_index(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM pragma_database_list WHERE name = 'idx'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

pub fn entries(
    conn: &Connection,
    ws: &str,
    from_seq: u64,
    limit: usize,
) -> rusqlite::Result<Result<Vec<RawEntry>, StoreError>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, leaf_hash, payload FROM audit_events WHERE workspace = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![ws, from_seq as i64, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, leaf, payload) = row?;
        // A leaf hash column of the wrong length is tampering, reported by the verifier
        // as a mismatch rather than as an unreadable store.
        let leaf_hash = Hash::try_from(leaf.as_slice()).unwrap_or([0; 32]);
        out.push(RawEntry { seq: seq as u64, leaf_hash, payload });
    }
    Ok(Ok(out))
}

pub fn workspaces(conn: &Connection) -> rusqlite::Result<Result<Vec<WorkspaceName>, StoreError>> {
    let mut stmt = conn.prepare(
        "SELECT workspace FROM audit_events GROUP BY workspace
         UNION SELECT workspace FROM audit_checkpoints GROUP BY workspace ORDER BY 1",
    )?;
    let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(names.into_iter().map(|n| WorkspaceName::parse(&n).map_err(StoreError::Corrupt)).collect())
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint { id: r.get::<_, i64>(0)? as u64, tree_size: r.get::<_, i64>(1)? as u64, note: r.get(2)? })
}

pub fn latest_checkpoint(
    conn: &Connection,
    ws: &str,
) -> rusqlite::Result<Result<Option<StoredCheckpoint>, StoreError>> {
    let row = conn
        .prepare_cached(
            "SELECT id, tree_size, note FROM audit_checkpoints WHERE workspace = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![ws], checkpoint_row)
        .optional()?;
    Ok(Ok(row))
}

pub fn checkpoints(conn: &Connection, ws: &str) -> rusqlite::Result<Result<Vec<StoredCheckpoint>, StoreError>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, tree_size, note FROM audit_checkpoints WHERE workspace = ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![ws], checkpoint_row)?.collect::<Result<_, _>>()?;
    Ok(Ok(rows))
}

/// Tree nodes of one workspace, read from the store.
struct StoredNodes<'a> {
    conn: &'a Connection,
    ws: &'a str,
}

impl NodeSource for StoredNodes<'_> {
    type Error = rusqlite::Error;
    fn node(&self, level: u32, index: u64) -> rusqlite::Result<Hash> {
        let bytes: Vec<u8> = if level == 0 {
            self.conn
                .prepare_cached("SELECT leaf_hash FROM audit_events WHERE workspace = ?1 AND seq = ?2")?
                .query_row(params![self.ws, index as i64], |r| r.get(0))?
        } else {
            self.conn
                .prepare_cached("SELECT hash FROM audit_nodes WHERE workspace = ?1 AND pos = ?2")?
                .query_row(params![self.ws, node_position(level, index)], |r| r.get(0))?
        };
        to_hash(&bytes)
    }
}

fn tree_size(conn: &Connection, ws: &str) -> rusqlite::Result<u64> {
    let size: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) + 1 FROM audit_events WHERE workspace = ?1")?
        .query_row(params![ws], |r| r.get(0))?;
    Ok(size.unwrap_or(0) as u64)
}

fn proof_error(e: ProveError<rusqlite::Error>) -> ProofQueryError {
    match e {
        ProveError::Proof(p) => ProofQueryError::OutOfRange(p.to_string()),
        ProveError::Source(s) => ProofQueryError::Store(store_error(s)),
    }
}

fn check_size(conn: &Connection, ws: &str, wanted: u64) -> Result<(), ProofQueryError> {
    let size = tree_size(conn, ws).map_err(|e| ProofQueryError::Store(store_error(e)))?;
    if wanted > size {
        return Err(ProofQueryError::OutOfRange(format!(
            "tree_size {wanted} is beyond the log of workspace {ws}, which has {size} entries"
        )));
    }
    Ok(())
}

pub fn inclusion_proof(conn: &Connection, ws: &str, seq: u64, size: u64) -> Result<InclusionProof, ProofQueryError> {
    check_size(conn, ws, size)?;
    let nodes = StoredNodes { conn, ws };
    let hashes = prove_inclusion(&nodes, seq, size).map_err(proof_error)?;
    let leaf = nodes.node(0, seq).map_err(|e| ProofQueryError::Store(store_error(e)))?;
    Ok(InclusionProof {
        workspace: ws.to_owned(),
        seq,
        tree_size: size,
        leaf_hash: hex::encode(leaf),
        hashes: hex_hashes(&hashes),
    })
}

pub fn consistency_proof(
    conn: &Connection,
    ws: &str,
    first: u64,
    second: u64,
) -> Result<ConsistencyProof, ProofQueryError> {
    check_size(conn, ws, second)?;
    let nodes = StoredNodes { conn, ws };
    let hashes = prove_consistency(&nodes, first, second).map_err(proof_error)?;
    Ok(ConsistencyProof { workspace: ws.to_owned(), first, second, hashes: hex_hashes(&hashes) })
}
