//! The OTLP receivers end to end: spans of a two-level swarm delivered over
//! OTLP/HTTP (protobuf, JSON, gzip) and OTLP/gRPC in many orders give the same
//! stored rows; bad input gets the OTLP-defined answers and the server keeps
//! serving.

use std::io::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::Value;

mod common;
#[path = "../../custody-otlp/tests/common/mod.rs"]
mod spans;

use common::*;
use spans::{kv, request, s, swarm};

async fn start() -> TestServer {
    TestServer::start_with(|c| c.otlp_grpc_listen = Some("127.0.0.1:0".parse().unwrap())).await
}

fn acme_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    request(spans, vec![kv("service.name", s("support-bot"))])
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Protobuf,
    ProtobufGzip,
    Json,
    Grpc,
}

impl TestServer {
    async fn otlp_http(&self, key: Option<&str>, content_type: &str, body: Vec<u8>, gzip: bool) -> reqwest::Response {
        let mut builder =
            self.http.post(format!("{}/v1/traces", self.base)).header("content-type", content_type).body(body);
        if let Some(key) = key {
            builder = builder.bearer_auth(key);
        }
        if gzip {
            builder = builder.header("content-encoding", "gzip");
        }
        builder.send().await.unwrap()
    }

    async fn export(&self, key: &str, via: Via, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
        let protobuf = |r: reqwest::Response| async move {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["content-type"], "application/x-protobuf");
            ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap()
        };
        match via {
            Via::Protobuf => {
                protobuf(self.otlp_http(Some(key), "application/x-protobuf", request.encode_to_vec(), false).await)
                    .await
            }
            Via::ProtobufGzip => {
                let body = gzip(&request.encode_to_vec());
                protobuf(self.otlp_http(Some(key), "application/x-protobuf", body, true).await).await
            }
            Via::Json => {
                let body = serde_json::to_vec(&request).unwrap();
                let r = self.otlp_http(Some(key), "application/json", body, false).await;
                assert_eq!(r.status(), StatusCode::OK);
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
            }
            Via::Grpc => self.grpc(Some(key), request).await.unwrap(),
        }
    }

    async fn grpc(
        &self,
        key: Option<&str>,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let addr = self.server.otlp_grpc_addr.unwrap();
        let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let mut request = tonic::Request::new(request);
        if let Some(key) = key {
            request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        client.export(request).await.map(tonic::Response::into_inner)
    }

    /// The workspace's stored records, once there are `n` of them.
    async fn stored(&self, reader: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(reader, "/api/v1/traces/records?workspace=acme&limit=1000").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let records = body["records"].as_array().unwrap().clone();
            if records.len() >= n || Instant::now() > deadline {
                assert_eq!(records.len(), n, "{body}");
                return records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Sent in `plan`'s batches, over the protocols given, the swarm's rows.
async fn deliver(plan: &[(Vec<usize>, Via)]) -> Vec<Value> {
    let t = start().await;
    let writer = t.key("acme", "trace:write").await;
    let reader = t.key("acme", "read").await;
    let all = swarm();
    for (indexes, via) in plan {
        let batch: Vec<Span> = indexes.iter().map(|&i| all[i].clone()).collect();
        let response = t.export(&writer, *via, acme_request(batch)).await;
        assert_eq!(response.partial_success, None, "every span is valid");
    }
    let rows = t.stored(&reader, 12).await;
    // Nothing more arrives later: duplicates were stored once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.stored(&reader, 12)
        .await
        .into_iter()
        .zip(rows)
        .map(|(later, first)| {
            assert_eq!(later, first);
            later
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_order_over_http_and_grpc_stores_the_same_rows() {
    let n = swarm().len();
    let forward: Vec<usize> = (0..n).collect();
    let backward: Vec<usize> = (0..n).rev().collect();
    let reference = deliver(&[(forward.clone(), Via::Protobuf)]).await;

    // What the reference says: the swarm's processes, sessions and parents.
    let by_span = |span: &str| reference.iter().find(|r| r["span_id"] == span).unwrap().clone();
    let call = by_span("000000000000100f"); // helper 5's call, under a plain HTTP span
    assert_eq!(call["session_id"], "conv-7");
    assert_eq!(call["process_id"], "0000000000001005");
    assert_eq!(call["parent_process_id"], "0000000000001003");
    assert_eq!(call["agent_name"], "drafter");
    assert_eq!(call["process_path"], serde_json::json!(["0000000000001001", "0000000000001003", "0000000000001005"]));
    assert_eq!(call["model"], "gpt-4o");
    assert_eq!(call["usage"]["input_tokens"], 150);
    let root = by_span("0000000000001001");
    assert_eq!((root["kind"].as_str(), root["parent_process_id"].as_str()), (Some("agent"), None));

    let plans: Vec<Vec<(Vec<usize>, Via)>> = vec![
        // Children first, parents last, one protocol after another, a batch twice.
        vec![
            (backward[..4].to_vec(), Via::ProtobufGzip),
            (backward[4..7].to_vec(), Via::Grpc),
            (backward[7..10].to_vec(), Via::Json),
            (backward[4..7].to_vec(), Via::Grpc),
            (backward[10..].to_vec(), Via::Protobuf),
        ],
        // One span a request, the protocols taking turns, then everything again.
        backward
            .iter()
            .enumerate()
            .map(|(k, &i)| (vec![i], [Via::Grpc, Via::Json, Via::Protobuf][k % 3]))
            .chain([(forward.clone(), Via::Grpc)])
            .collect(),
        // Interleaved halves.
        vec![
            (forward.iter().copied().filter(|i| i % 2 == 1).collect(), Via::Json),
            (forward.iter().copied().filter(|i| i % 2 == 0).collect(), Via::Grpc),
        ],
    ];
    for plan in plans {
        let rows = deliver(&plan).await;
        assert_eq!(rows, reference, "plan {plan:?}");
    }
}

fn otlp_status(bytes: &[u8]) -> tonic_types::Status {
    tonic_types::Status::decode(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_otlp_answers_nothing_is_stored_twice_and_the_server_keeps_serving() {
    let t = TestServer::start_with(|c| {
        c.otlp_grpc_listen = Some("127.0.0.1:0".parse().unwrap());
        c.body_limit = 64 * 1024;
    })
    .await;
    let writer = t.key("acme", "trace:write").await;
    let other = t.key("globex", "trace:write").await;
    let reader = t.key("acme", "read").await;
    let protobuf = "application/x-protobuf";

    let r = t.otlp_http(Some(&writer), protobuf, vec![0xff, 0xff, 0xff, 0xff], false).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let status = otlp_status(&r.bytes().await.unwrap());
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("protobuf"), "{}", status.message);

    let r = t.otlp_http(Some(&writer), "application/json", b"{\"resourceSpans\": 7}".to_vec(), false).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], tonic::Code::InvalidArgument as i32, "{body}");
    assert!(body["message"].as_str().unwrap().contains("OTLP/JSON"), "{body}");

    let r = t.otlp_http(Some(&writer), "text/plain", b"hello".to_vec(), false).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(otlp_status(&r.bytes().await.unwrap()).message.contains("application/x-protobuf"));

    let r = t.otlp_http(Some(&writer), protobuf, vec![0; 100 * 1024], false).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bomb = gzip(&vec![0; 4 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let r = t.otlp_http(Some(&writer), protobuf, bomb, true).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "the limit holds once decompressed");
    let r = t.otlp_http(Some(&writer), protobuf, b"not gzip".to_vec(), true).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let valid = acme_request(swarm()[..1].to_vec());
    let r = t.otlp_http(None, protobuf, valid.encode_to_vec(), false).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(otlp_status(&r.bytes().await.unwrap()).code, tonic::Code::Unauthenticated as i32);
    let named = request(swarm()[..1].to_vec(), vec![kv("custody.workspace", s("acme"))]);
    let r = t.otlp_http(Some(&other), protobuf, named.encode_to_vec(), false).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a key of globex may not write acme");
    assert_eq!(t.grpc(None, valid.clone()).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(t.grpc(Some(&other), named).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    // An admin key must say which workspace: its spans are refused, not filed anywhere.
    let response = t.export(ADMIN, Via::Protobuf, valid.clone()).await;
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("custody.workspace"), "{}", partial.error_message);

    // Spans without ids are refused one by one; the others are stored.
    let mut spans = swarm()[..3].to_vec();
    spans[1].trace_id.clear();
    spans[2].span_id = vec![0; 8];
    for via in [Via::Protobuf, Via::Grpc] {
        let partial = t.export(&writer, via, acme_request(spans.clone())).await.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 2, "{via:?}");
        assert!(partial.error_message.contains("trace_id") && partial.error_message.contains("span_id"));
    }
    t.export(&writer, Via::Json, valid.clone()).await;
    let stored = t.stored(&reader, 1).await;
    assert_eq!(stored[0]["span_id"], "0000000000001001");

    // Still serving, and still counting.
    let (status, _) = t.get(&reader, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = t.http.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("custody_otlp_spans_rejected_total 5"), "{metrics}");
    assert!(metrics.contains("custody_otlp_resolved_spans_total{how=\"complete\"}"), "{metrics}");
}
