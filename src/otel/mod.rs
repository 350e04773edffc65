//! OTLP trace ingestion: decoding `ExportTraceServiceRequest`s and mapping their spans to
//! Langfuse traces and observations.
//!
//! Owns: the OTLP wire formats (protobuf and OTLP/JSON, including the quirks real exporters
//! send), the export response, and Langfuse's span → trace/observation mapping rules
//! (`shared/spec/langfuse-wire-api.md` section 3): which span is a root, how the observation type
//! is inferred, and which attribute families fill which field. The result is a list of
//! [`TimedChange`]s for the store to merge with the rules in `record`.
//!
//! Must not touch: HTTP (content negotiation beyond [`Encoding::from_content_type`], gzip, status
//! codes and auth belong to the route), storage, cost computation or model matching. Everything
//! here is a pure function of its input: no clock (the caller passes `received_at`), no I/O.
//!
//! Robustness: no input panics. Decoders bound nesting (prost's recursion limit, serde_json's),
//! attribute values are converted to JSON a bounded number of levels deep, and a
//! span with an invalid id is rejected on its own (counted in [`Mapped::rejected_spans`]) while the
//! rest of the export is mapped.

mod attrs;
mod decode;
mod generation;
mod io;
mod kind;
mod map;
mod usage;

#[cfg(test)]
mod tests;

pub use decode::{decode, encode_response};
pub use map::map_request;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::record::TimedChange;

/// The two OTLP/HTTP body encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf, `application/x-protobuf`.
    Protobuf,
    /// OTLP/JSON, `application/json`.
    Json,
}

impl Encoding {
    /// Picks the encoding from a `Content-Type` value the way Langfuse does: the header must
    /// *contain* `application/x-protobuf` or `application/json` (parameters and case are
    /// ignored). `None` means "unsupported media type".
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let ct = ct.to_ascii_lowercase();
        if ct.contains("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if ct.contains("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` an answer in this encoding carries.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why an export body could not be decoded. Any of these means "reject the whole request".
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("failed to parse otlp protobuf trace export: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("failed to parse otlp json trace export: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid otlp trace export: {0}")]
    InvalidExport(String),
}

impl OtelError {
    /// The `error` string Langfuse answers with (HTTP 400) for this failure, for clients or
    /// tests that compare it verbatim.
    pub fn langfuse_message(&self) -> &'static str {
        match self {
            OtelError::Protobuf(_) => "Failed to parse OTel Protobuf Trace",
            OtelError::Json(_) => "Failed to parse OTel JSON Trace",
            OtelError::InvalidExport(_) => "Invalid OTLP trace export",
        }
    }
}

/// The normalised result of one export.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    /// Trace and observation patches, in span order (a span's trace patch precedes its
    /// observation patch).
    pub changes: Vec<TimedChange>,
    /// Spans dropped because their trace, span or parent id was invalid.
    pub rejected_spans: u64,
    /// Why spans were rejected (set whenever `rejected_spans > 0`), for the partial-success
    /// answer.
    pub error_message: Option<String>,
}
