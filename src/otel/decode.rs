//! OTLP/HTTP bodies in and out: protobuf through prost, OTLP/JSON through serde after a repair
//! pass for what real exporters send.
//!
//! The repair pass exists because `opentelemetry-proto`'s serde derive is stricter than the
//! exporters in the wild: a single non-hex id, a `null`, an `{"arrayValue": {}}` (how proto3 JSON
//! writes an empty array), a `"NaN"` double or a `{high, low}` timestamp would otherwise fail the
//! whole export. After the pass every id is a hex string — an id that cannot be read becomes the
//! one-byte id `ff`, which the mapper rejects for that span alone.

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::{Map, Value, json};

use super::{Encoding, OtelError};

/// Deeper than any OTLP/JSON document the schema allows with the serde_json parse limit (128);
/// a guard so the repair walk is bounded even if that limit is ever lifted.
const MAX_REPAIR_DEPTH: usize = 256;

/// What an unreadable id is replaced with: valid hex, but the wrong length for any id (and not
/// zero, which a parent id may be).
const UNREADABLE_ID: &str = "ff";

/// Decodes an (already gunzipped) export body.
pub fn decode(body: &[u8], enc: Encoding) -> Result<ExportTraceServiceRequest, OtelError> {
    match enc {
        Encoding::Protobuf => Ok(ExportTraceServiceRequest::decode(body)?),
        Encoding::Json => decode_json(body),
    }
}

fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, OtelError> {
    let mut doc: Value = serde_json::from_slice(body)?;
    let Value::Object(top) = &doc else {
        return Err(OtelError::InvalidExport(
            "the body must be a json object with a resourceSpans array".into(),
        ));
    };
    if !top.contains_key("resourceSpans")
        && (top.contains_key("resourceLogs") || top.contains_key("resourceMetrics"))
    {
        return Err(OtelError::InvalidExport(
            "the body holds otlp logs or metrics, not traces; send it to the matching endpoint"
                .into(),
        ));
    }
    repair(&mut doc, 0);
    Ok(serde_json::from_value(doc)?)
}

/// Encodes the `ExportTraceServiceResponse`: empty on full success, `partial_success` when spans
/// were rejected.
pub fn encode_response(enc: Encoding, rejected_spans: u64, error_message: Option<&str>) -> Vec<u8> {
    let partial = (rejected_spans > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected_spans).unwrap_or(i64::MAX),
        error_message: error_message
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{rejected_spans} spans rejected")),
    });
    match enc {
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Encoding::Json => {
            let body = match partial {
                // proto3 JSON writes int64 as a string.
                Some(p) => json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => json!({}),
            };
            body.to_string().into_bytes()
        }
    }
}

/// Rewrites an OTLP/JSON document in place into the shape `opentelemetry-proto`'s serde accepts.
/// Keys are matched by name anywhere in the tree: every object key in an OTLP document is a
/// schema field (user keys only ever appear as `"key": "..."` values), so this cannot misfire on
/// user data.
fn repair(v: &mut Value, depth: usize) {
    if depth > MAX_REPAIR_DEPTH {
        return;
    }
    match v {
        Value::Array(items) => {
            // proto3 JSON has no null elements; drop them rather than fail the export.
            items.retain(|x| !x.is_null());
            for item in items {
                repair(item, depth + 1);
            }
        }
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            for (key, x) in map.iter_mut() {
                match key.as_str() {
                    "traceId" | "spanId" | "parentSpanId" => repair_id(x),
                    "startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano" => repair_nanos(x),
                    "kind" => repair_enum(x, &SPAN_KINDS),
                    "code" => repair_enum(x, &STATUS_CODES),
                    _ => repair(x, depth + 1),
                }
            }
            repair_any_value(map);
        }
        _ => {}
    }
}

/// Fix-ups inside an `AnyValue` object (`{"stringValue": ..}`, `{"arrayValue": ..}`, ...).
fn repair_any_value(map: &mut Map<String, Value>) {
    for key in ["arrayValue", "kvlistValue"] {
        if let Some(Value::Object(inner)) = map.get_mut(key) {
            inner
                .entry("values")
                .or_insert_with(|| Value::Array(Vec::new()));
        }
    }
    if let Some(Value::String(s)) = map.get("doubleValue") {
        // "NaN"/"Infinity" (and anything else non-numeric) are kept as strings, as Langfuse does.
        let replacement = match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => ("doubleValue", json!(f)),
            _ => ("stringValue", Value::String(s.clone())),
        };
        map.remove("doubleValue");
        map.insert(replacement.0.into(), replacement.1);
    }
    let int_fix = match map.get("intValue") {
        Some(Value::String(s)) if s.trim().parse::<i64>().is_err() => {
            Some(("stringValue", Value::String(s.clone())))
        }
        Some(Value::Number(n)) if n.as_i64().is_none() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(("intValue", json!(f as i64))),
            Some(f) => Some(("doubleValue", json!(f))),
            None => None,
        },
        Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => Some(("intValue", json!(0))),
        _ => None,
    };
    if let Some((key, value)) = int_fix {
        map.remove("intValue");
        map.insert(key.into(), value);
    }
}

/// Ids are hex in OTLP/JSON; `protobuf`'s `json_format` writes base64 and Node buffers arrive as
/// byte arrays. Everything is turned into lowercase hex; unreadable ids into [`UNREADABLE_ID`].
fn repair_id(x: &mut Value) {
    let bytes = match x {
        Value::String(s) => id_bytes(s.trim()),
        Value::Array(items) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    };
    *x = Value::String(match bytes {
        Some(b) => hex_encode(&b),
        None => UNREADABLE_ID.into(),
    });
}

fn id_bytes(s: &str) -> Option<Vec<u8>> {
    // 24 and 12 characters are never valid hex ids (12 and 6 bytes) but are exactly the base64
    // lengths of 16- and 8-byte ids.
    if matches!(s.len(), 24 | 12)
        && let Ok(b) = base64::engine::general_purpose::STANDARD.decode(s)
    {
        return Some(b);
    }
    hex_decode(s)
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let raw = s.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

/// Times may be a decimal string, a number, or a protobuf.js `Long` `{high, low}`. Anything
/// unreadable becomes 0, which the mapper treats as "missing".
fn repair_nanos(x: &mut Value) {
    let nanos = match x {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Object(o) => {
            let high = o.get("high").and_then(Value::as_i64);
            let low = o.get("low").and_then(Value::as_i64);
            match (high, low) {
                // `low` is a signed 32-bit number in protobuf.js; reinterpret its bits.
                (Some(h), Some(l)) => u64::try_from(h)
                    .ok()
                    .map(|h| (h << 32) | u64::from(l as u32)),
                _ => None,
            }
        }
        _ => None,
    };
    *x = json!(nanos.unwrap_or(0));
}

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// OTLP/JSON requires enums as integers; accept their proto names too. Unknown → 0.
fn repair_enum(x: &mut Value, names: &[&str]) {
    let n = match x {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(s.trim()))
            .and_then(|i| i32::try_from(i).ok())
            .or_else(|| s.trim().parse::<i32>().ok()),
        _ => None,
    };
    *x = json!(n.unwrap_or(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_every_spelling_become_hex() {
        assert_eq!(id_bytes("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(id_bytes("0AFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(id_bytes("xyz"), None);
        // base64 of 8 bytes
        assert_eq!(id_bytes("AQIDBAUGBwg="), Some(vec![1, 2, 3, 4, 5, 6, 7, 8]));
        let mut v = json!([1, 2, 255]);
        repair_id(&mut v);
        assert_eq!(v, json!("0102ff"));
        let mut v = json!("not-an-id");
        repair_id(&mut v);
        assert_eq!(v, json!(UNREADABLE_ID));
    }

    #[test]
    fn long_timestamps_are_combined() {
        let mut v = json!({"high": 1, "low": -1});
        repair_nanos(&mut v);
        assert_eq!(v, json!((1u64 << 32) | 0xffff_ffff));
        let mut v = json!("garbage");
        repair_nanos(&mut v);
        assert_eq!(v, json!(0));
    }

    #[test]
    fn quirky_json_decodes() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"0123456789abcdef0123456789abcdef","spanId":"0123456789abcdef",
            "parentSpanId":null,"kind":"SPAN_KIND_CLIENT","status":{"code":"STATUS_CODE_ERROR"},
            "startTimeUnixNano":{"high":408,"low":0},"endTimeUnixNano":1.5e18,
            "attributes":[
              {"key":"a","value":{"arrayValue":{}}},
              {"key":"b","value":{"doubleValue":"NaN"}},
              {"key":"c","value":{"intValue":3.0}},
              {"key":"d","value":null},
              {"key":"e","value":{"kvlistValue":{}}}
            ]}]}]}]}"#;
        let req = decode(body, Encoding::Json).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 3);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(span.start_time_unix_nano, 408u64 << 32);
        assert_eq!(span.end_time_unix_nano, 1_500_000_000_000_000_000);
        assert_eq!(span.attributes.len(), 5);
        assert!(span.parent_span_id.is_empty());
    }

    #[test]
    fn logs_posted_to_traces_are_refused() {
        let err = decode(br#"{"resourceLogs":[]}"#, Encoding::Json).unwrap_err();
        assert!(matches!(err, OtelError::InvalidExport(_)), "{err}");
        assert!(decode(b"[1,2]", Encoding::Json).is_err());
        assert!(decode(b"{", Encoding::Json).is_err());
    }

    #[test]
    fn responses_in_both_encodings() {
        assert_eq!(encode_response(Encoding::Json, 0, None), b"{}");
        assert!(encode_response(Encoding::Protobuf, 0, None).is_empty());
        let json: Value =
            serde_json::from_slice(&encode_response(Encoding::Json, 2, Some("bad ids"))).unwrap();
        assert_eq!(
            json,
            json!({"partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad ids"}})
        );
        let pb = encode_response(Encoding::Protobuf, 2, Some("bad ids"));
        let resp = ExportTraceServiceResponse::decode(pb.as_slice()).unwrap();
        let partial = resp.partial_success.unwrap();
        assert_eq!(partial.rejected_spans, 2);
        assert_eq!(partial.error_message, "bad ids");
    }
}
