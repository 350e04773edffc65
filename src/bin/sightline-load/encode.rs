//! Wire formats for a group of traces: OTLP/HTTP protobuf (OpenInference attributes, which both
//! Sightline and Arize Phoenix map to LLM spans) and Langfuse batch ingestion JSON.
//!
//! Owns: turning `TraceData` into request bodies, and gzip. Sends nothing.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use prost::Message as _;
use serde_json::{Value, json};

use crate::data::{SpanData, TraceData, hex};

/// Request bodies the generator can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OTLP/HTTP protobuf (`/api/public/otel/v1/traces`, or Phoenix's `/v1/traces`).
    Otlp,
    /// Langfuse batch ingestion (`/api/public/ingestion`).
    Langfuse,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Otlp => "application/x-protobuf",
            Format::Langfuse => "application/json",
        }
    }
}

/// Where every record of one run goes: the Langfuse environment (Sightline) and the
/// OpenInference project (Phoenix), so a run's records can be counted apart from others.
pub struct Target<'a> {
    pub environment: &'a str,
    pub project: &'a str,
}

pub fn encode(format: Format, traces: &[TraceData], target: &Target) -> Vec<u8> {
    match format {
        Format::Otlp => otlp(traces, target),
        Format::Langfuse => langfuse(traces, target),
    }
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: u64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value as i64))
}

fn nanos(micros: i64) -> u64 {
    u64::try_from(micros).unwrap_or(0) * 1_000
}

fn otlp_span(t: &TraceData, sp: &SpanData) -> Span {
    let mut attrs = vec![
        s("input.value", sp.input.to_string()),
        s("input.mime_type", "application/json"),
        s("output.value", sp.output.to_string()),
        s("output.mime_type", "application/json"),
        s("metadata", sp.metadata.to_string()),
    ];
    match sp.model {
        Some(model) => {
            attrs.push(s("openinference.span.kind", "LLM"));
            attrs.push(s("llm.model_name", model));
            if let Some((input, output)) = sp.usage {
                attrs.push(i("llm.token_count.prompt", input));
                attrs.push(i("llm.token_count.completion", output));
                attrs.push(i("llm.token_count.total", input + output));
            }
        }
        None => {
            attrs.push(s("openinference.span.kind", "CHAIN"));
            attrs.push(s("user.id", t.user.clone()));
            attrs.push(s("session.id", t.session.clone()));
        }
    }
    Span {
        trace_id: t.trace_id.to_vec(),
        span_id: sp.span_id.to_vec(),
        parent_span_id: sp.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: sp.name.to_owned(),
        kind: if sp.model.is_some() {
            span::SpanKind::Client as i32
        } else {
            span::SpanKind::Server as i32
        },
        start_time_unix_nano: nanos(sp.start_micros),
        end_time_unix_nano: nanos(sp.end_micros),
        attributes: attrs,
        ..Default::default()
    }
}

fn otlp(traces: &[TraceData], target: &Target) -> Vec<u8> {
    let spans = traces
        .iter()
        .flat_map(|t| t.spans.iter().map(move |sp| otlp_span(t, sp)))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "sightline-load"),
                    s("openinference.project.name", target.project),
                    s("deployment.environment.name", target.environment),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "sightline-load".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn iso(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&f).unwrap_or_default()
}

fn event(kind: &str, id: String, at: i64, body: Value) -> Value {
    json!({"id": id, "type": kind, "timestamp": iso(at), "body": body})
}

fn langfuse(traces: &[TraceData], target: &Target) -> Vec<u8> {
    let mut batch = Vec::new();
    for t in traces {
        let trace_id = hex(&t.trace_id);
        let root = &t.spans[0];
        batch.push(event(
            "trace-create",
            format!("{trace_id}-t"),
            root.start_micros,
            json!({
                "id": trace_id, "timestamp": iso(root.start_micros), "name": t.name,
                "userId": t.user, "sessionId": t.session, "environment": target.environment,
                "input": root.input, "output": root.output, "metadata": root.metadata,
            }),
        ));
        for sp in &t.spans {
            let id = hex(&sp.span_id);
            let mut body = json!({
                "id": id, "traceId": trace_id, "name": sp.name,
                "startTime": iso(sp.start_micros), "endTime": iso(sp.end_micros),
                "environment": target.environment, "metadata": sp.metadata,
                "input": sp.input, "output": sp.output,
            });
            if let Some(parent) = sp.parent {
                body["parentObservationId"] = json!(hex(&parent));
            }
            let kind = match sp.model {
                Some(model) => {
                    body["model"] = json!(model);
                    if let Some((input, output)) = sp.usage {
                        body["usageDetails"] = json!({"input": input, "output": output});
                    }
                    "generation-create"
                }
                None => "span-create",
            };
            batch.push(event(kind, format!("{id}-e"), sp.start_micros, body));
        }
    }
    serde_json::to_vec(&json!({"batch": batch})).unwrap_or_default()
}
