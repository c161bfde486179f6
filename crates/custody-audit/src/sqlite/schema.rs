//! The SQLite schema and connection settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_events (
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
    PRIMARY KEY (workspace, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_events_principal_time ON audit_events (workspace, principal_id, ts_ns);
CREATE INDEX IF NOT EXISTS audit_events_action_id ON audit_events (workspace, action_id) WHERE action_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_resource ON audit_events (workspace, resource_type, resource_id);

CREATE TABLE IF NOT EXISTS audit_nodes (
    workspace TEXT    NOT NULL,
    level     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    PRIMARY KEY (workspace, level, idx)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace  TEXT    NOT NULL,
    tree_size  INTEGER NOT NULL,
    note       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoints_workspace ON audit_checkpoints (workspace, id);
";

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

/// The writer's connection: WAL, `synchronous=FULL` (a commit returns only after
/// the WAL is fsynced), schema and triggers in place.
pub fn open_writer(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpoint the WAL into the main file in the background of commits, not in
    // one long pause: the default 1000 pages is fine for small rows.
    conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
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
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}
