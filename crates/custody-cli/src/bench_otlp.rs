//! `custody bench otlp`: the same model calls ingested as OTLP/HTTP protobuf
//! GenAI spans and through the native JSON API, on one server, in one run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use custody_model::TraceRecord;
use custody_otlp::export::export_request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

use crate::bench::{Appender, Measured, RawConnection, bench_dir, bench_server, measure, ms};
use crate::bench_trace::{TraceAppender, call, peak_rss_mib};

#[derive(Args)]
pub struct OtlpBenchArgs {
    /// Seconds of sustained ingest for each path
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of each path
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Records per request (OTLP: one agent span and the rest chat spans)
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Where the temporary data goes (pick the disk to measure) [default: the current directory]
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The trace id every span of the template carries; each request writes a
/// new one over it, so each request is a trace of its own.
const TEMPLATE_TRACE: [u8; 16] = *b"custody-bench-tr";

/// One request's spans as an instrumented agent sends them: an `invoke_agent`
/// span and its chat spans (GenAI attributes, content as messages), without
/// any of the `custody.*` attributes Custody's own exporter adds, so every
/// span is attributed by the assembly window from its parent.
fn otlp_template(records: &[TraceRecord]) -> ExportTraceServiceRequest {
    let mut request = export_request(records, true);
    let agent_span_id = b"bench-ag".to_vec();
    let mut agent = Span {
        trace_id: TEMPLATE_TRACE.to_vec(),
        span_id: agent_span_id.clone(),
        name: "invoke_agent support".into(),
        start_time_unix_nano: 1_796_000_000_000_000_000,
        end_time_unix_nano: 1_796_000_001_000_000_000,
        attributes: vec![
            text("gen_ai.operation.name", "invoke_agent"),
            text("gen_ai.agent.name", "support"),
            text("gen_ai.conversation.id", "sess-otlp"),
        ],
        ..Span::default()
    };
    agent.kind = 1;
    let scope = &mut request.resource_spans[0].scope_spans[0];
    for (n, span) in scope.spans.iter_mut().enumerate() {
        span.trace_id = TEMPLATE_TRACE.to_vec();
        span.span_id = (n as u64 + 1).to_be_bytes().to_vec();
        span.parent_span_id = agent_span_id.clone();
        span.attributes.retain(|kv| !kv.key.starts_with("custody.") && kv.key != "gen_ai.conversation.id");
    }
    scope.spans.insert(0, agent);
    request
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

/// A server of its own in `data`, and a `trace:write` key of the `bench`
/// workspace: the OTLP requests name no workspace, so the key's files them.
async fn writer_server(data: PathBuf) -> anyhow::Result<(custody_server::RunningServer, String)> {
    let (server, key) = bench_server(data, |_| {}).await?;
    let client = custody_client::Client::new(&format!("http://{}", server.local_addr), &key)?;
    let (writer, _) = client.create_key("bench", "trace:write", Some("bench")).await?;
    Ok((server, writer))
}

/// Posts the template with a fresh trace id each time (written in place at the
/// offsets where the template's id sits).
struct OtlpAppender {
    connection: RawConnection,
    key: String,
    body: Vec<u8>,
    offsets: Vec<usize>,
    client: u64,
}

impl Appender for OtlpAppender {
    async fn append(&mut self, n: u64) -> anyhow::Result<()> {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.client.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        for &at in &self.offsets {
            self.body[at..at + 16].copy_from_slice(&id);
        }
        loop {
            let status = self.connection.post_as("/v1/traces", &self.key, "application/x-protobuf", &self.body).await?;
            match status {
                200 => return Ok(()),
                429 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => anyhow::bail!("OTLP ingest answered {other}"),
            }
        }
    }
}

fn print(label: &str, m: &Measured, records: usize, request_bytes: usize) -> f64 {
    let rate = m.rate * records as f64;
    println!(
        "  {label}: {rate:.0} records/s ({:.1} MB/s of request bodies), request p50 {:.1} ms, p99 {:.1} ms",
        m.rate * request_bytes as f64 / 1e6,
        ms(m.p50),
        ms(m.p99)
    );
    rate
}

pub async fn otlp(args: OtlpBenchArgs) -> anyhow::Result<()> {
    let tmp = bench_dir(args.dir.as_deref())?;
    let seconds = Duration::from_secs(args.seconds.max(1));
    let batch = args.batch.max(2);
    println!("custody bench otlp (data in {})", tmp.path().display());
    let calls: Vec<serde_json::Value> = (0..batch).map(|n| call("sess-native", n % 40, n)).collect();
    let native_body = serde_json::to_vec(&json!({ "records": calls }))?;
    let records: Vec<TraceRecord> =
        calls.iter().take(batch - 1).map(|v| TraceRecord::from_value(v.clone())).collect::<Result<_, _>>()?;
    let otlp_body = otlp_template(&records).encode_to_vec();
    let offsets: Vec<usize> =
        otlp_body.windows(16).enumerate().filter(|(_, w)| *w == TEMPLATE_TRACE).map(|(i, _)| i).collect();
    anyhow::ensure!(offsets.len() == batch, "the template's trace id is where the spans are");

    println!(
        "{} connections × {batch} records per request, {} s each, each path on a server of its own: \
         native JSON {} bytes, OTLP protobuf {} bytes per request",
        args.clients,
        seconds.as_secs(),
        native_body.len(),
        otlp_body.len()
    );

    eprintln!("driving the native JSON API…");
    let (server, writer) = writer_server(tmp.path().join("native")).await?;
    let native = measure(
        TraceAppender::connections(server.local_addr, &writer, &native_body, args.clients.max(1)).await?,
        seconds,
    )
    .await?;
    server.shutdown().await?;

    eprintln!("driving OTLP/HTTP protobuf…");
    let (server, writer) = writer_server(tmp.path().join("otlp")).await?;
    let mut otlp = Vec::new();
    for c in 0..args.clients.max(1) {
        otlp.push(OtlpAppender {
            connection: RawConnection::open(server.local_addr).await?,
            key: writer.clone(),
            body: otlp_body.clone(),
            offsets: offsets.clone(),
            client: c as u64 + 1,
        });
    }
    let otlp = measure(otlp, seconds).await?;
    server.shutdown().await?;
    println!();
    let native_rate =
        print("native JSON, POST /api/v1/traces (202 once in the trace WAL)", &native, batch, native_body.len());
    let otlp_rate = print(
        "OTLP/HTTP protobuf, POST /v1/traces (200 once in the trace WAL, links in the window's)",
        &otlp,
        batch,
        otlp_body.len(),
    );
    println!("  OTLP / native: {:.2}x", otlp_rate / native_rate);
    if let Some(rss) = peak_rss_mib() {
        println!("  peak RSS of the process (a server and the load generator): {rss:.0} MiB");
    }
    println!();
    println!("target: OTLP/HTTP protobuf ingest at least the native rate");
    println!("otlp: {}", if otlp_rate >= native_rate { "target met" } else { "target missed" });
    Ok(())
}
