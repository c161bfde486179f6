//! OTLP export requests from bytes (protobuf or OTLP/JSON, optionally gzip),
//! and the spans they carry mapped, each refused on its own when it is invalid.

use std::io::Read;

use custody_model::{ValidationError, WorkspaceName};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::attributes::Bag;
use crate::mapping::{CLASSIFICATION_ATTRIBUTE, Origin, SpanEntry, WORKSPACE_ATTRIBUTE, map_span};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not a valid OTLP protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(String),
    #[error("the body is not a valid OTLP/JSON ExportTraceServiceRequest: {0}")]
    Json(String),
    #[error("the gzip body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the body is over {limit} bytes once decompressed")]
    TooLarge { limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Decompresses a gzip body, refusing to grow past `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string())),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string())),
    }
}

/// One span that could not be taken, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSpan {
    /// The span id in hex, when it had one.
    pub span_id: Option<String>,
    pub error: ValidationError,
}

/// A request's spans, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    pub entries: Vec<SpanEntry>,
    pub rejected: Vec<RejectedSpan>,
}

impl Mapped {
    /// The OTLP partial-success message: how many spans were refused and the first reasons.
    pub fn error_message(&self) -> String {
        if self.rejected.is_empty() {
            return String::new();
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .take(5)
            .map(|r| match &r.span_id {
                Some(id) => format!("span {id}: {}", r.error),
                None => r.error.to_string(),
            })
            .collect();
        let more = self.rejected.len().saturating_sub(reasons.len());
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        format!("{} span(s) rejected: {}{tail}", self.rejected.len(), reasons.join("; "))
    }
}

/// Maps every span of `request`. `workspace_for` turns the resource's
/// `custody.workspace` (if any) into the workspace the caller's key may write,
/// or says why not; the spans of a resource it refuses are all rejected.
pub fn map_request(
    request: &ExportTraceServiceRequest,
    workspace_for: impl Fn(Option<&str>) -> Result<WorkspaceName, String>,
) -> Mapped {
    let mut mapped = Mapped::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref().map(|r| Bag::new(&r.attributes)).unwrap_or_default();
        let spans = resource_spans.scope_spans.iter().flat_map(|s| s.spans.iter().map(move |span| (s, span)));
        let workspace = match workspace_for(resource.get_str(WORKSPACE_ATTRIBUTE)) {
            Ok(w) => w,
            Err(message) => {
                let error = ValidationError::new("forbidden_workspace", WORKSPACE_ATTRIBUTE, message);
                mapped.rejected.extend(
                    spans.map(|(_, span)| RejectedSpan { span_id: hex_id(&span.span_id), error: error.clone() }),
                );
                continue;
            }
        };
        let classification = resource.get_str(CLASSIFICATION_ATTRIBUTE);
        if let Some(label) = classification
            && let Err(message) = custody_model::workspace::check_label(label)
        {
            let error = ValidationError::new("invalid_value", CLASSIFICATION_ATTRIBUTE, message);
            mapped
                .rejected
                .extend(spans.map(|(_, span)| RejectedSpan { span_id: hex_id(&span.span_id), error: error.clone() }));
            continue;
        }
        for (scope_spans, span) in spans {
            let origin = Origin {
                workspace: &workspace,
                classification,
                service_name: resource.get_str("service.name"),
                scope: scope_spans.scope.as_ref(),
            };
            match map_span(span, &origin) {
                Ok(entry) => mapped.entries.push(entry),
                Err(error) => mapped.rejected.push(RejectedSpan { span_id: hex_id(&span.span_id), error }),
            }
        }
    }
    mapped
}

fn hex_id(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trace example of the OTLP specification (opentelemetry-proto's
    /// `examples/trace.json`): upper-case hex ids, 64-bit integers as strings.
    const SPEC_EXAMPLE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
      "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C",
      "spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
      "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","kind":2,
      "attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;

    #[test]
    fn the_specification_example_decodes_as_otlp_json() {
        let request = decode(SPEC_EXAMPLE.as_bytes(), Encoding::Json).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex::encode(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(hex::encode(&span.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!((span.start_time_unix_nano, span.kind), (1_544_712_660_000_000_000, 2));
        assert_eq!(Bag::new(&span.attributes).into_map()["n"], serde_json::json!(42));
        // The same request as protobuf decodes to the same message.
        let bytes = prost::Message::encode_to_vec(&request);
        assert_eq!(decode(&bytes, Encoding::Protobuf).unwrap(), request);
        assert!(matches!(decode(b"{", Encoding::Json), Err(DecodeError::Json(_))));
        assert!(matches!(decode(&[0xff, 0xff], Encoding::Protobuf), Err(DecodeError::Protobuf(_))));
    }

    #[test]
    fn gzip_is_bounded_once_inflated() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[7u8; 10_000]).unwrap();
        let body = encoder.finish().unwrap();
        assert_eq!(gunzip(&body, 10_000).unwrap().len(), 10_000);
        assert!(matches!(gunzip(&body, 9_999), Err(DecodeError::TooLarge { limit: 9_999 })));
        assert!(matches!(gunzip(b"plain", 100), Err(DecodeError::Gzip(_))));
    }
}
