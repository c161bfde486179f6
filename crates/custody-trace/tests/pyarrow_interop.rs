//! Parquet files written by Custody are read by another engine, pyarrow, with
//! the partitions as columns and the same rows.
//!
//! The Python interpreter is found as for every client test
//! (`custody-cli/tests/common/python.rs`).

use std::process::Command;

use custody_model::TraceRecord;
use custody_trace::parquet_files::{partition, to_record_batch, write_file};
use custody_trace::record::StoredRecord;
use serde_json::{Value, json};

#[path = "../../custody-cli/tests/common/python.rs"]
mod python;

use python::python;

const READ: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
rows = []
for r in table.to_pylist():
    rows.append({
        "id": r["id"], "workspace": str(r["workspace"]), "day": str(r["day"]),
        "classification": str(r["classification"]), "model": r["model"],
        "input_tokens": r["input_tokens"], "latency_ms": r["latency_ms"],
        "content_hash": r["content_hash"], "action_ids": r["action_ids"], "input": json.loads(r["input"]),
    })
started = table.column("started_at").cast(pa.int64()).to_pylist()
for row, ns in zip(rows, started):
    row["started_at_ns"] = ns
print(json.dumps(sorted(rows, key=lambda r: r["id"])))
"#;

#[test]
fn pyarrow_reads_the_files_with_partitions_and_the_same_rows() {
    let Some(python) = python() else {
        eprintln!(
            "note: pyarrow interop not checked; `python3 -m venv target/ci-venv && target/ci-venv/bin/pip install pyarrow` enables it"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<StoredRecord> = (0..6u64)
        .map(|n| {
            let mut value = json!({"workspace": if n < 4 { "acme" } else { "beta" }, "kind": "model_call",
                "session_id": "s", "process_id": format!("p{n}"), "model": "gpt-4o",
                "input": [{"role": "user", "content": format!("q{n}")}],
                "usage": {"input_tokens": n * 10, "output_tokens": 1},
                "started_at": format!("2026-12-0{}T10:00:00.5Z", 1 + n % 2), "ended_at": "2026-12-03T00:00:00Z",
                "action_ids": [format!("act-{n}")]});
            if n % 3 == 0 {
                value["classification"] = json!("confidential");
            }
            StoredRecord::prepare(TraceRecord::from_value(value).unwrap())
        })
        .collect();
    let mut parts: std::collections::BTreeMap<std::path::PathBuf, Vec<StoredRecord>> = Default::default();
    for r in &records {
        parts.entry(partition(r)).or_default().push(r.clone());
    }
    for (part, group) in &parts {
        write_file(&dir.path().join(part), 1, &to_record_batch(group).unwrap()).unwrap();
    }
    let out = Command::new(&python).arg("-c").arg(READ).arg(dir.path()).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: Vec<Value> = records
        .iter()
        .map(|s| {
            let r = &s.record;
            json!({"id": s.id(), "workspace": r.workspace.as_str(), "day": r.started_at.utc_day(),
                "classification": r.classification.as_deref().unwrap_or("unclassified"), "model": r.model,
                "input_tokens": r.usage.unwrap().input_tokens, "latency_ms": r.latency_ms(),
                "content_hash": hex::encode(s.content_hash),
                "action_ids": r.action_ids, "input": r.input, "started_at_ns": r.started_at.unix_nanos()})
        })
        .collect();
    expected.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(rows, expected);
}
