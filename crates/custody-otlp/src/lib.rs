//! OpenTelemetry in and out of the trace store.
//!
//! - [`decode`]: OTLP `ExportTraceServiceRequest`s from protobuf or OTLP/JSON
//!   bodies (gzip bounded), with the official protocol types of
//!   `opentelemetry-proto`.
//! - [`mapping`]: a span → its links in the trace and, for spans of the GenAI
//!   semantic conventions or OpenInference, the trace record it becomes.
//! - [`assembly`]: the window where spans wait, durably, for their ancestors,
//!   so that swarm attribution (session, process, parent process) is the same
//!   whatever order the spans arrive in.
//! - [`export`]: stored records out to an OTLP endpoint as GenAI spans, from a
//!   durable queue with a durable cursor.
//!
//! The last two need the trace store (feature `store`, on by default); the
//! fuzz target (`fuzz/`) builds decoding and mapping alone.

#[cfg(feature = "store")]
pub mod assembly;
pub mod attributes;
pub mod decode;
#[cfg(feature = "store")]
pub mod export;
pub mod mapping;

#[cfg(feature = "store")]
pub use assembly::{Assembler, AssemblyError, AssemblyOptions, AssemblyStats};
pub use decode::{DecodeError, Encoding, Mapped, RejectedSpan, decode, gunzip, map_request};
#[cfg(feature = "store")]
pub use export::{ExportOptions, ExportStats, Exporter, ExportingStore, Protocol};
pub use mapping::{SpanEntry, map_span, record_id};
