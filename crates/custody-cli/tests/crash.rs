//! SIGKILL in the middle of a 64-client append load: every receipt that was
//! returned survives the crash and verifies, and `custody verify` exits 0.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use custody_client::Client;
use custody_ledger::merkle::verify_inclusion;
use custody_ledger::{Checkpoint, Hash};
use custody_model::{AuditEvent, Receipt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_receipt_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = common::serve(&data);
    let receipts: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..64usize {
        let client = Client::new(&url, common::ADMIN).unwrap();
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let event = AuditEvent::from_value(json!({
                    "workspace": format!("crash-{}", c % 4), "kind": "authz.decision",
                    "principal": {"type": "agent", "id": format!("agent:{c}")},
                    "action": "email.send", "resource": {"type": "email", "id": format!("{c}/{n}")},
                    "decision": "allow"}))
                .unwrap();
                // The client verifies every receipt before returning it.
                match client.append(&event).await {
                    Ok(receipt) => receipts.lock().unwrap().push(receipt),
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load build up, then kill the server without warning.
    let started = std::time::Instant::now();
    while receipts.lock().unwrap().len() < 2000 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let receipts = std::mem::take(&mut *receipts.lock().unwrap());
    assert!(receipts.len() >= 100, "the load produced only {} receipts", receipts.len());

    let (mut child, url) = common::serve(&data);
    let client = Client::new(&url, common::ADMIN).unwrap();
    let verifier = client.verifier().await.unwrap();
    for receipt in &receipts {
        let checkpoint = Checkpoint::open(&receipt.checkpoint, &verifier).unwrap();
        let proof = client.inclusion_proof(&receipt.workspace, receipt.seq, receipt.tree_size).await.unwrap();
        assert_eq!(proof.leaf_hash, receipt.leaf_hash, "entry {}/{} after restart", receipt.workspace, receipt.seq);
        let path: Vec<Hash> = proof.hashes.iter().map(|h| hex::decode(h).unwrap().try_into().unwrap()).collect();
        let leaf: Hash = hex::decode(&receipt.leaf_hash).unwrap().try_into().unwrap();
        verify_inclusion(&leaf, receipt.seq, receipt.tree_size, &path, &checkpoint.root).unwrap();
    }
    // The restarted server goes on appending where the log ended.
    let event = AuditEvent::from_value(json!({"workspace": "crash-0", "kind": "file.accessed",
        "principal": {"type": "user", "id": "u"}, "action": "file.read", "resource": {"type": "file", "id": "f"}}))
    .unwrap();
    client.append(&event).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let out = common::run(&["verify", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("intact"), "{stdout}");
    eprintln!("{} receipts checked after SIGKILL", receipts.len());
}
