//! The indexer: keeps the derived query indexes up to date, off the commit path.
//!
//! Secondary indexes on random keys (action ids, resource ids) dirty a page per
//! entry; inside the group commit they cost more than everything else the writer
//! does. So the writer commits only the log, and this thread, with its own
//! database file (and so its own write lock), adds index rows for every new entry
//! in large batches, where many new keys share a page. Queries read the indexes up
//! to the `indexed.up_to` watermark and scan the log itself beyond it, so every
//! committed entry is visible to queries at once.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::schema::{index_path, open_indexer};

/// The most entries indexed in one transaction.
const BATCH: i64 = 50_000;
/// How long the indexer sleeps when no commit notifies it.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// The least time between two index batches. Under load this lets many entries
/// gather, so each dirtied index page takes many of them: the indexer's cost per
/// entry falls as the load rises. Queries scan the log beyond the watermark, so the
/// lag costs them a short scan, never a missing entry.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Opens (or rebuilds) the index database and returns its connection.
pub fn open(log_path: &Path) -> rusqlite::Result<Connection> {
    match open_indexer(log_path).and_then(|conn| check(&conn).map(|()| conn)) {
        Ok(conn) => Ok(conn),
        Err(error) => {
            // Derived data: when it cannot be used, start it again from the log.
            tracing::warn!(error = %error, "rebuilding the audit query indexes");
            let index = index_path(log_path);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", index.display()));
            }
            open_indexer(log_path)
        }
    }
}

/// An index that claims entries the log does not have belongs to another log.
fn check(conn: &Connection) -> rusqlite::Result<()> {
    let up_to: i64 = conn.query_row("SELECT up_to FROM indexed", [], |r| r.get(0))?;
    let max: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM log.audit_events", [], |r| r.get(0))?;
    if up_to > max {
        return Err(rusqlite::Error::InvalidQuery);
    }
    Ok(())
}

/// Indexes everything new, then waits for the writer's next notification. Ends
/// when the writer is gone (after a last catch-up).
pub fn run(conn: Connection, commits: Receiver<()>) {
    lower_priority();
    loop {
        let started = Instant::now();
        match index_batch(&conn) {
            Ok(n) if n > 0 => {
                std::thread::sleep(MIN_INTERVAL.saturating_sub(started.elapsed()));
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "indexing audit entries failed; retrying"),
        }
        match commits.recv_timeout(IDLE_WAIT) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                while matches!(index_batch(&conn), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// Indexes up to [`BATCH`] entries past the watermark; returns how many.
pub fn index_batch(conn: &Connection) -> rusqlite::Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let from: i64 = tx.query_row("SELECT up_to FROM indexed", [], |r| r.get(0))?;
    let to: Option<i64> = tx.query_row(
        "SELECT max(id) FROM (SELECT id FROM log.audit_events WHERE id > ?1 ORDER BY id LIMIT ?2)",
        params![from, BATCH],
        |r| r.get(0),
    )?;
    let Some(to) = to else { return Ok(0) };
    let count = tx.execute(
        "INSERT INTO by_principal (workspace, principal_id, ts_ns, id)
         SELECT workspace, principal_id, ts_ns, id FROM log.audit_events WHERE id > ?1 AND id <= ?2",
        params![from, to],
    )?;
    tx.execute(
        "INSERT INTO by_action_id (workspace, action_id, id)
         SELECT workspace, action_id, id FROM log.audit_events
         WHERE id > ?1 AND id <= ?2 AND action_id IS NOT NULL",
        params![from, to],
    )?;
    tx.execute(
        "INSERT INTO by_resource (workspace, resource_id, resource_type, id)
         SELECT workspace, resource_id, resource_type, id FROM log.audit_events WHERE id > ?1 AND id <= ?2",
        params![from, to],
    )?;
    tx.execute("UPDATE indexed SET up_to = ?1", params![to])?;
    tx.commit()?;
    Ok(count)
}

/// Index maintenance is background work: under full load the CPU goes first to
/// the writer and the request path, whose latency callers wait on.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their integer arguments; on Linux
        // PRIO_PROCESS with a thread id renices just this thread.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if result != 0 {
            tracing::debug!("could not lower the indexer's priority");
        }
    }
}
