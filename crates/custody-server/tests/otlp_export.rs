//! Round trip: records stored by one Custody (through the native API and
//! through its OTLP receiver) → its OTLP exporter → the OTLP receiver of a
//! second Custody → the same records, over HTTP protobuf and over gRPC.

use std::time::{Duration, Instant};

use custody_model::{TraceRecord, WorkspaceName};
use custody_otlp::{ExportOptions, Protocol};
use custody_trace::conformance::{sample_record, swarm};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::Value;

mod common;
#[path = "../../custody-otlp/tests/common/mod.rs"]
mod spans;

use common::*;

impl TestServer {
    /// Every record of `workspace`, once there are `n`, in id order.
    async fn all_records(&self, key: &str, workspace: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) =
                self.get(key, &format!("/api/v1/traces/records?workspace={workspace}&limit=1000")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let mut records = body["records"].as_array().unwrap().clone();
            if records.len() >= n || Instant::now() > deadline {
                assert_eq!(records.len(), n, "{workspace}: {body}");
                records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn record_of(row: &Value) -> TraceRecord {
    let mut record = row.clone();
    let object = record.as_object_mut().unwrap();
    for derived in ["content_hash", "latency_ms", "process_path"] {
        object.remove(derived);
    }
    TraceRecord::from_value(record).unwrap()
}

async fn round_trip(receiver: &TestServer, endpoint: String, protocol: Protocol, workspace: &str) {
    let sender = TestServer::start_with(|c| {
        c.otlp_export = Some(ExportOptions {
            headers: vec![("authorization".into(), format!("Bearer {ADMIN}"))],
            include_content: true,
            batch_records: 25,
            interval: Duration::from_millis(100),
            ..ExportOptions::new(endpoint, protocol)
        });
    })
    .await;
    let ws = WorkspaceName::parse(workspace).unwrap();
    let mut native: Vec<Value> =
        swarm(&ws, "sess-native").into_iter().map(|r| serde_json::to_value(r).unwrap()).collect();
    native.extend((0..30).map(|n| serde_json::to_value(sample_record(&ws, n)).unwrap()));
    let (status, body) = sender.traces(ADMIN, &native).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let request = spans::request(spans::swarm(), vec![spans::kv("custody.workspace", spans::s(workspace))]);
    let response = sender
        .http
        .post(format!("{}/v1/traces", sender.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let total = native.len() + 12;

    let sent = sender.all_records(ADMIN, workspace, total).await;
    let received = receiver.all_records(ADMIN, workspace, total).await;
    for (back, original) in received.iter().zip(&sent) {
        if original["attributes"]["otel.span.name"].is_string() {
            // Came in over OTLP: goes out and comes back the same, hash and all.
            assert_eq!(back, original);
        } else {
            let original_record = record_of(original);
            assert_eq!(spans::without_provenance(record_of(back), &original_record), original_record);
            assert_eq!(back["process_path"], original["process_path"]);
        }
    }
    let metrics = sender.http.get(format!("{}/metrics", sender.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("custody_otlp_exported_records_total {total}")), "{metrics}");
    assert!(metrics.contains("custody_otlp_export_pending_records 0"), "{metrics}");
    assert!(metrics.contains("custody_otlp_export_lag_seconds 0.0"), "{metrics}");
    sender.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_exported_by_one_custody_come_back_the_same_in_another() {
    let receiver = TestServer::start_with(|c| c.otlp_grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    round_trip(&receiver, receiver.base.clone(), Protocol::HttpProtobuf, "acme").await;
    let grpc = format!("http://{}", receiver.server.otlp_grpc_addr.unwrap());
    round_trip(&receiver, grpc, Protocol::Grpc, "globex").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_export_endpoint_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = custody_server::ServerConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.otlp_export = Some(ExportOptions::new("collector:4318", Protocol::HttpProtobuf));
    let error = custody_server::start(config).await.err().expect("refused").to_string();
    assert!(error.contains("collector:4318") && error.contains("http://"), "{error}");
}
