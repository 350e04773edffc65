//! Property tests of the decoders that read untrusted input (the same entry points the
//! `fuzz/` targets drive): whatever arrives, each returns a result or a clear error, never a
//! panic, and accounts for every event or span it was given.

mod common;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sightline::auth::AccessLevel;
use sightline::ingest::{parse_batch, parse_scores};
use sightline::otel::{Encoding, ExportTraceServiceRequest, decode, map_request};
use sightline::score_config::NoConfigs;
use sightline::time::Timestamp;

const EVENT_TYPES: [&str; 16] = [
    "trace-create",
    "span-create",
    "span-update",
    "generation-create",
    "generation-update",
    "event-create",
    "score-create",
    "sdk-log",
    "observation-create",
    "observation-update",
    "agent-create",
    "tool-create",
    "retriever-create",
    "embedding-create",
    "guardrail-create",
    "banana-create",
];

/// Keys that have tripped parsers elsewhere, plus arbitrary ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("__proto__".to_string()),
        Just("constructor".to_string()),
        Just("../../etc/passwd".to_string()),
        Just(String::new()),
        Just("k".repeat(10_000)),
        Just("id".to_string()),
        Just("traceId".to_string()),
        Just("usageDetails".to_string()),
        Just("costDetails".to_string()),
        Just("metadata".to_string()),
        Just("startTime".to_string()),
        Just("value".to_string()),
        "\\PC{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,40}".prop_map(Value::String),
        Just(json!("2025-01-01T00:00:00Z")),
        Just(json!("2025-13-45T99:99:99Z")),
        Just(json!("NaN")),
        Just(json!("Infinity")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An event body: mostly the fields real events have (with ids that usually parse), with
/// arbitrary values.
fn event_body() -> impl Strategy<Value = Value> {
    let fields = proptest::collection::vec(
        (
            prop_oneof![
                Just("id"),
                Just("traceId"),
                Just("name"),
                Just("startTime"),
                Just("endTime"),
                Just("model"),
                Just("usage"),
                Just("usageDetails"),
                Just("costDetails"),
                Just("input"),
                Just("output"),
                Just("metadata"),
                Just("level"),
                Just("value"),
                Just("dataType"),
                Just("parentObservationId"),
                Just("tags"),
                Just("type"),
                Just("completionStartTime"),
                Just("environment"),
            ]
            .prop_map(str::to_string),
            json_value(),
        ),
        0..4,
    );
    (
        prop_oneof![3 => "[a-z0-9-]{1,12}".prop_map(|s| json!(s)), 1 => json_value()],
        prop_oneof![3 => Just(json!("trace-1")), 1 => json_value()],
        fields,
    )
        .prop_map(|(id, trace, kv)| {
            let mut body: Map<String, Value> = kv.into_iter().collect();
            body.entry("id").or_insert(id);
            body.entry("traceId").or_insert(trace);
            Value::Object(body)
        })
}

fn event() -> impl Strategy<Value = Value> {
    (
        prop_oneof![3 => "[a-z0-9-]{1,12}".prop_map(Value::String), 1 => json_value()],
        prop_oneof![
            3 => proptest::sample::select(&EVENT_TYPES[..]).prop_map(|t| json!(t)),
            1 => json_value()
        ],
        prop_oneof![3 => Just(json!("2025-01-01T00:00:00.000Z")), 1 => json_value()],
        prop_oneof![3 => event_body(), 1 => json_value()],
    )
        .prop_map(
            |(id, kind, ts, body)| json!({"id": id, "type": kind, "timestamp": ts, "body": body}),
        )
}

/// Each event shows up once in `successes` or `errors` (an `sdk-log` in neither), every error
/// says what is wrong, and only successful events become changes.
fn check_batch(value: &Value, access: AccessLevel) -> Result<(), TestCaseError> {
    let Ok(batch) = parse_batch(value, access, &NoConfigs) else {
        prop_assert!(!value.get("batch").is_some_and(Value::is_array));
        return Ok(());
    };
    let events = value["batch"].as_array().map_or(0, Vec::len);
    prop_assert_eq!(batch.successes.len(), batch.changes.len());
    prop_assert!(batch.successes.len() + batch.errors.len() <= events);
    for e in &batch.errors {
        prop_assert!(e.status == 400 || e.status == 401, "{:?}", e);
        prop_assert!(!e.message.is_empty() && !e.error.is_empty(), "{:?}", e);
    }
    Ok(())
}

fn spans_in(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

fn check_otlp(body: &[u8], encoding: Encoding) -> Result<(), TestCaseError> {
    match decode(body, encoding) {
        Ok(request) => {
            let mapped = map_request(&request, Timestamp::from_micros(0));
            prop_assert!(mapped.rejected_spans <= spans_in(&request));
            prop_assert!(mapped.rejected_spans == 0 || mapped.error_message.is_some());
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

fn fixture_bodies(suffix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let root = common::shared_dir().join("fixtures");
    for set in std::fs::read_dir(&root).expect("shared fixtures") {
        let set = set.unwrap().path();
        if !set.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&set).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.contains("otel-v1-traces") && name.ends_with(suffix) {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(!out.is_empty(), "no fixture ends with {suffix}");
    out
}

/// An OTLP attribute value in proto3 JSON, including forms exporters get wrong.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,30}".prop_map(|s| json!({"stringValue": s})),
        any::<bool>().prop_map(|b| json!({"boolValue": b})),
        any::<i64>().prop_map(|i| json!({"intValue": i.to_string()})),
        any::<i64>().prop_map(|i| json!({"intValue": i})),
        any::<f64>().prop_map(|f| json!({"doubleValue": f.to_string()})),
        Just(json!({"doubleValue": "NaN"})),
        Just(json!({"arrayValue": {}})),
        Just(json!({"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}})),
        Just(json!({"stringValue": "{\"input\": 5, \"output\": -3}"})),
        json_value(),
    ]
}

fn attribute() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("langfuse.observation.type".to_string()),
            Just("langfuse.observation.usage_details".to_string()),
            Just("langfuse.observation.cost_details".to_string()),
            Just("langfuse.observation.model.name".to_string()),
            Just("langfuse.observation.completion_start_time".to_string()),
            Just("langfuse.trace.metadata.__proto__".to_string()),
            Just("langfuse.internal.as_root".to_string()),
            Just("gen_ai.usage.input_tokens".to_string()),
            Just("gen_ai.prompt.0.content".to_string()),
            key(),
        ],
        any_value(),
    )
        .prop_map(|(k, v)| json!({"key": k, "value": v}))
}

fn hex_id(len: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), len)
            .prop_map(|b| { json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()) }),
        json_value(),
    ]
}

fn span() -> impl Strategy<Value = Value> {
    (
        hex_id(16),
        hex_id(8),
        prop_oneof![hex_id(8), Just(Value::Null)],
        "\\PC{0,20}",
        prop_oneof![
            any::<u64>().prop_map(|n| json!(n.to_string())),
            json_value()
        ],
        prop_oneof![
            any::<u64>().prop_map(|n| json!(n.to_string())),
            json_value()
        ],
        proptest::collection::vec(attribute(), 0..8),
    )
        .prop_map(|(trace, span, parent, name, start, end, attrs)| {
            json!({"traceId": trace, "spanId": span, "parentSpanId": parent, "name": name,
                   "startTimeUnixNano": start, "endTimeUnixNano": end, "attributes": attrs})
        })
}

fn export() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(attribute(), 0..4),
        proptest::collection::vec(span(), 0..5),
    )
        .prop_map(|(resource, spans)| {
            json!({"resourceSpans": [{"resource": {"attributes": resource},
                   "scopeSpans": [{"scope": {"name": "langfuse-sdk"}, "spans": spans}]}]})
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ingestion_of_arbitrary_bytes_is_a_batch_or_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            check_batch(&value, AccessLevel::Full)?;
        }
    }

    #[test]
    fn every_event_of_a_batch_is_accounted_for(events in proptest::collection::vec(event(), 0..8)) {
        let value = json!({"batch": events});
        check_batch(&value, AccessLevel::Full)?;
        check_batch(&value, AccessLevel::ScoresOnly)?;
        let batch = parse_batch(&value, AccessLevel::Full, &NoConfigs).unwrap();
        let logs = events.iter().filter(|e| e["type"] == "sdk-log").count();
        // An sdk-log with a bad envelope is an error, a good one is dropped silently.
        prop_assert!(batch.successes.len() + batch.errors.len() + logs >= events.len());
        for result in parse_scores(&Value::Array(events), Timestamp::from_micros(0), &NoConfigs).unwrap() {
            if let Err(e) = result {
                prop_assert!(!e.0.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_envelopes_never_panic(value in json_value()) {
        check_batch(&value, AccessLevel::Full)?;
        let _ = parse_scores(&value, Timestamp::from_micros(0), &NoConfigs);
    }

    #[test]
    fn otlp_protobuf_of_arbitrary_bytes_is_an_export_or_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check_otlp(&bytes, Encoding::Protobuf)?;
    }

    #[test]
    fn damaged_real_protobuf_exports_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bodies = fixture_bodies(".decompressed.bin");
        let mut body = which.get(&bodies).clone();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        check_otlp(&body, Encoding::Protobuf)?;
        body.truncate(cut.index(body.len() + 1));
        check_otlp(&body, Encoding::Protobuf)?;
    }

    #[test]
    fn otlp_json_exports_of_arbitrary_shape_never_panic(export in export()) {
        check_otlp(&serde_json::to_vec(&export).unwrap(), Encoding::Json)?;
    }

    #[test]
    fn otlp_json_of_arbitrary_bytes_is_an_export_or_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_otlp(&bytes, Encoding::Json)?;
    }

    #[test]
    fn search_queries_are_searchable_or_a_clear_error(q in prop_oneof![
        "\\PC{0,60}",
        "[a-zA-Z:*()\"\\- ]{0,40}",
        proptest::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("\""), Just("-"), Just("NOT "), Just(" OR "), Just("*"),
            Just("name:"), Just("tags:"), Just("nmae:"), Just("foo"), Just("東京"), Just(" "),
        ], 0..24).prop_map(|parts| parts.concat()),
    ]) {
        if let Err(e) = sightline::search::check_query(&q) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn real_fixture_exports_decode_cleanly() {
    // The damaged-export property starts from these; make sure they are what it assumes.
    for body in fixture_bodies(".decompressed.bin") {
        let request = decode(&body, Encoding::Protobuf).unwrap();
        assert!(spans_in(&request) > 0);
        assert_eq!(
            map_request(&request, Timestamp::from_micros(0)).rejected_spans,
            0
        );
    }
}

#[test]
fn generated_inputs_reach_the_mapping_and_the_events() {
    // The properties above only mean something if the generators get past the decoders often.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut mapped, mut changes) = (0, 0);
    for _ in 0..200 {
        let body = serde_json::to_vec(&export().new_tree(&mut runner).unwrap().current()).unwrap();
        if let Ok(request) = decode(&body, Encoding::Json) {
            mapped += 1;
            changes += map_request(&request, Timestamp::from_micros(0))
                .changes
                .len();
        }
    }
    assert!(
        mapped > 50 && changes > 50,
        "{mapped} of 200 exports decoded, {changes} changes"
    );
    let mut accepted = 0;
    for _ in 0..200 {
        let events = proptest::collection::vec(event(), 1..4)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        accepted += parse_batch(&json!({"batch": events}), AccessLevel::Full, &NoConfigs)
            .unwrap()
            .changes
            .len();
    }
    assert!(
        accepted > 20,
        "only {accepted} generated events were accepted"
    );
}
