//! The SQLite schema and connection settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

const SCHEMA: &str = "
-- A rowid table: entries are about a kilobyte, too large for WITHOUT ROWID, and
-- new rows always go to the right edge of the rowid tree.
CREATE TABLE IF NOT EXISTS audit_events (
    id            INTEGER PRIMARY KEY,
    workspace     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    ts_ns         INTEGER NOT NULL,  -- occurred_at, else recorded_at: what time filters use
    kind          TEXT    NOT NULL,
    principal_id  TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    decision      TEXT,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    action_id     TEXT,
    leaf_hash     BLOB    NOT NULL,
    payload       BLOB    NOT NULL,  -- the canonical entry bytes the leaf hash covers
    UNIQUE (workspace, seq)
);
-- The query indexes (principal + time, action id, resource) live in the derived
-- index database; see INDEX_SCHEMA and the indexer.

-- Interior Merkle nodes, keyed by their position in the order the log creates
-- hashes (see `node_position`), so each commit appends at the end of the tree.
CREATE TABLE IF NOT EXISTS audit_nodes (
    workspace TEXT    NOT NULL,
    pos       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    PRIMARY KEY (workspace, pos)
) WITHOUT ROWID;

-- `id` grows with every checkpoint the writer signs (it never reuses one: rows are
-- never deleted), so it orders checkpoints by when they were written.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    workspace  TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    tree_size  INTEGER NOT NULL,
    note       TEXT    NOT NULL,
    PRIMARY KEY (workspace, id)
) WITHOUT ROWID;
";

/// Where interior node `(level ≥ 1, index)` stands among all the hashes of a log in
/// the order they are created (each leaf, then the nodes it completes, lowest
/// first). The node is created right after leaf `k = (index + 1)·2^level − 1`;
/// before that leaf stand `k` leaves and `Σ_{l≥1} ⌊k / 2^l⌋` nodes, then come the
/// leaf itself and the `level − 1` nodes below this one.
pub fn node_position(level: u32, index: u64) -> i64 {
    let k = ((index + 1) << level) - 1;
    let nodes_before: u64 = (1..64).map(|l| k >> l).sum();
    (k + nodes_before + u64::from(level)) as i64
}

/// The derived query indexes, in their own database file. Each is a WITHOUT ROWID
/// table whose key ends in the entry's rowid in `audit_events`; `indexed` holds the
/// highest rowid indexed so far. Everything here can be rebuilt from the log.
const INDEX_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS by_principal (
    workspace TEXT NOT NULL, principal_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (workspace, principal_id, ts_ns, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_action_id (
    workspace TEXT NOT NULL, action_id TEXT NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (workspace, action_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS by_resource (
    workspace TEXT NOT NULL, resource_id TEXT NOT NULL, resource_type TEXT NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (workspace, resource_id, resource_type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexed (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    up_to     INTEGER NOT NULL
);
INSERT OR IGNORE INTO indexed (singleton, up_to) VALUES (0, 0);
";

/// The index database of a log database: `audit.db` → `audit.index.db`.
pub fn index_path(log_path: &Path) -> std::path::PathBuf {
    let stem = log_path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    log_path.with_file_name(format!("{stem}.index.db"))
}

/// The indexer's connection: the index database, with the log attached read-only
/// as `log`. The index is derived data, so `synchronous=NORMAL` (no fsync per
/// commit) is enough: a crash loses at most recent index rows, which the indexer
/// rebuilds from the log on start.
pub fn open_indexer(log_path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(index_path(log_path))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Random keys dirty the same index pages again and again; a checkpoint writes
    // each page once however often the WAL holds it, so checkpoint rarely here,
    // where no caller waits.
    conn.pragma_update(None, "wal_autocheckpoint", INDEX_WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.execute_batch(INDEX_SCHEMA)?;
    attach(&conn, log_path, "log")?;
    Ok(conn)
}

/// Attaches a database read-only under `name`.
fn attach(conn: &Connection, path: &Path, name: &str) -> rusqlite::Result<()> {
    let uri = format!("file:{}?mode=ro", path.display().to_string().replace('?', "%3f").replace('#', "%23"));
    conn.execute("ATTACH DATABASE ?1 AS ?2", rusqlite::params![uri, name])?;
    Ok(())
}

/// Triggers that make the three tables append-only inside the database, so that
/// not even a bug in Custody can rewrite history through SQL.
pub const APPEND_ONLY_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: update refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: delete refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_nodes_no_update BEFORE UPDATE ON audit_nodes
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: update refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_nodes_no_delete BEFORE DELETE ON audit_nodes
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: delete refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: update refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: delete refused'); END;
";

pub const PAGE_SIZE: u32 = 4096;
pub const LOG_WAL_AUTOCHECKPOINT_PAGES: u32 = 1_000;
pub const INDEX_WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The writer's connection: WAL, `synchronous=FULL` (a commit returns only after
/// the WAL is fsynced), schema and triggers in place.
pub fn open_writer(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    // Takes effect only when the file is created (before WAL mode is set).
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Copying the WAL back into the database file pauses the commit group that
    // triggers it, for longer the more pages have gathered: SQLite's default of
    // 1,000 pages kept p99 under 10 ms at 64 clients, where 4,000 and 10,000 pages
    // gave a little more throughput and p99 of 10 to 20 ms (BENCHMARKS.md).
    conn.pragma_update(None, "wal_autocheckpoint", LOG_WAL_AUTOCHECKPOINT_PAGES)?;
    // 64 MiB of page cache keeps the indexes' hot pages in memory.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(APPEND_ONLY_TRIGGERS)?;
    Ok(conn)
}

pub fn open_reader(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_URI)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Queries read the derived indexes as `idx` when they exist (a store opened
    // read-only for verification may have none).
    let index = index_path(path);
    if index.exists() {
        attach(&conn, &index, "idx")?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::node_position;

    #[test]
    fn node_positions_follow_creation_order() {
        // Leaves 0..8 and their nodes in creation order, leaves marked level 0.
        let mut order = Vec::new();
        for leaf in 0u64..8 {
            order.push((0, leaf));
            let mut level = 0;
            while (leaf >> level) & 1 == 1 {
                level += 1;
                order.push((level, leaf >> level));
            }
        }
        for (pos, (level, index)) in order.into_iter().enumerate() {
            if level > 0 {
                assert_eq!(node_position(level, index), pos as i64, "node ({level}, {index})");
            }
        }
    }
}
