//! `custody verify` finds every kind of tampering and names the entry.

mod common;

use std::path::{Path, PathBuf};

use custody_audit::conformance::sample_event;
use custody_audit::sqlite::SqliteAuditLog;
use custody_audit::{AuditLog, OpenOptions, signing_key};
use custody_ledger::{Checkpoint, NoteSigner};
use custody_model::WorkspaceName;
use rusqlite::{Connection, params};

/// A store with 10 entries in `acme` in five commit groups (checkpoints at 2, 4,
/// 6, 8, 10) and 3 entries in `beta`.
async fn pristine(dir: &Path) -> PathBuf {
    let data = dir.join("pristine");
    let (signer, _) = signing_key::load_or_create(&data.join("signing.key"), "custody.test/audit").unwrap();
    let log = SqliteAuditLog::open(&data.join("audit.db"), signer, OpenOptions::default()).unwrap();
    let acme = WorkspaceName::parse("acme").unwrap();
    for n in (0..10).step_by(2) {
        log.append(vec![sample_event(&acme, n), sample_event(&acme, n + 1)]).await.unwrap();
    }
    let beta = WorkspaceName::parse("beta").unwrap();
    log.append((0..3).map(|n| sample_event(&beta, n)).collect()).await.unwrap();
    drop(log);
    // Let the writer thread close its connection.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    data
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Opens the copy's database with the append-only triggers dropped, as an attacker would.
fn attack(data: &Path) -> Connection {
    let conn = Connection::open(data.join("audit.db")).unwrap();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(triggers.len(), 6);
    for t in triggers {
        conn.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
    }
    conn
}

fn verify(data: &Path) -> (Option<i32>, String) {
    let out = common::run(&["verify", "--data-dir", data.to_str().unwrap()]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn forged_note(conn: &Connection, size: i64, signer: &NoteSigner) -> String {
    let note: String = conn
        .query_row(
            "SELECT note FROM audit_checkpoints WHERE workspace = 'acme' AND tree_size = ?1",
            params![size],
            |r| r.get(0),
        )
        .unwrap();
    let text = &note[..note.find("\n\n").unwrap() + 1];
    Checkpoint::parse_text(text).unwrap().sign(signer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_bad_entry_for_every_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path()).await;
    let (code, out) = verify(&pristine);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("acme: 10 entries, 5 checkpoints") && out.contains("beta: 3 entries"), "{out}");

    let real_key = signing_key::load(&pristine.join("signing.key")).unwrap();
    let other_key = NoteSigner::from_seed("custody.test/audit", [99; 32]).unwrap();

    type Tamper = Box<dyn Fn(&Connection)>;
    let cases: Vec<(&str, Tamper, Vec<&str>)> = vec![
        (
            "one payload byte changed",
            Box::new(|c: &Connection| {
                c.execute(
                    "UPDATE audit_events SET payload = CAST(replace(CAST(payload AS TEXT), 'outbound/4', 'outbound/5') AS BLOB)
                     WHERE workspace = 'acme' AND seq = 4",
                    [],
                )
                .unwrap();
            }),
            vec!["workspace acme: entry seq 4", "edited"],
        ),
        (
            "one row deleted",
            Box::new(|c: &Connection| {
                c.execute("DELETE FROM audit_events WHERE workspace = 'acme' AND seq = 6", []).unwrap();
            }),
            vec!["workspace acme: entry seq 6", "deleted"],
        ),
        (
            "two rows swapped",
            Box::new(|c: &Connection| {
                c.execute_batch(
                    "CREATE TEMP TABLE t AS SELECT seq, leaf_hash, payload FROM audit_events WHERE workspace = 'acme' AND seq IN (2, 3);
                     UPDATE audit_events SET leaf_hash = (SELECT leaf_hash FROM t WHERE t.seq = 5 - audit_events.seq),
                                             payload = (SELECT payload FROM t WHERE t.seq = 5 - audit_events.seq)
                     WHERE workspace = 'acme' AND seq IN (2, 3);",
                )
                .unwrap();
            }),
            vec!["workspace acme: entry seq 2", "swapped"],
        ),
        (
            "a checkpoint re-signed with another key",
            {
                let other_key = other_key.clone();
                Box::new(move |c: &Connection| {
                    let note = forged_note(c, 6, &other_key);
                    c.execute(
                        "UPDATE audit_checkpoints SET note = ?1 WHERE workspace = 'acme' AND tree_size = 6",
                        params![note],
                    )
                    .unwrap();
                })
            },
            vec!["workspace acme: checkpoint of tree size 6", "forged"],
        ),
        (
            "the log truncated with a newer forged checkpoint",
            {
                let other_key = other_key.clone();
                Box::new(move |c: &Connection| {
                    c.execute_batch("DELETE FROM audit_events WHERE workspace = 'acme' AND seq >= 7;").unwrap();
                    let text = format!("custody.test/audit/acme\n7\n{}\n", "A".repeat(43) + "=");
                    let note = other_key.sign(&text).unwrap();
                    c.execute(
                        "INSERT INTO audit_checkpoints (workspace, id, tree_size, note)
                         VALUES ('acme', (SELECT max(id) + 1 FROM audit_checkpoints), 7, ?1)",
                        params![note],
                    )
                    .unwrap();
                })
            },
            vec!["workspace acme: entry seq 7", "truncated"],
        ),
        (
            "the log truncated, re-signed with the stolen real key",
            {
                let real_key = real_key.clone();
                Box::new(move |c: &Connection| {
                    c.execute_batch("DELETE FROM audit_events WHERE workspace = 'acme' AND seq >= 8;").unwrap();
                    let note = forged_note(c, 8, &real_key);
                    c.execute(
                        "INSERT INTO audit_checkpoints (workspace, id, tree_size, note)
                         VALUES ('acme', (SELECT max(id) + 1 FROM audit_checkpoints), 8, ?1)",
                        params![note],
                    )
                    .unwrap();
                })
            },
            vec!["workspace acme: entry seq 8", "truncated"],
        ),
    ];
    for (i, (name, tamper, expected)) in cases.into_iter().enumerate() {
        let copy = dir.path().join(format!("case-{i}"));
        copy_store(&pristine, &copy);
        tamper(&attack(&copy));
        let (code, out) = verify(&copy);
        assert_eq!(code, Some(1), "{name}: verify must exit 1\n{out}");
        let first = out.lines().find(|l| l.starts_with("tampered: ")).unwrap_or_else(|| panic!("{name}: {out}"));
        for needle in expected {
            assert!(first.contains(needle), "{name}: `{first}` should contain `{needle}`\n{out}");
        }
        assert!(
            out.contains("beta: 3 entries, 1 checkpoints, root") && out.contains(": intact"),
            "{name}: beta is untouched\n{out}"
        );
    }
}

#[test]
fn verify_explains_a_missing_store_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signing key"));
}
