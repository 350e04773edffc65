//! Fixture-driven tests: every captured client export is decoded, mapped, merged with the
//! store's merge rules (`record`), and compared with what its set's `manifest.json` says a
//! Langfuse server returns. Plus the edges: garbage, invalid ids, hostile nesting.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

use super::*;
use crate::record::{Change, Level, ObservationRecord, TraceRecord};
use crate::time::Timestamp;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");
const RECEIVED_AT: Timestamp = Timestamp::from_micros(1_900_000_000_000_000);

fn read(set: &str, file: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{set}/{file}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
}

fn decode_and_map(set: &str, file: &str, enc: Encoding) -> Mapped {
    let req = decode(&read(set, file), enc).unwrap_or_else(|e| panic!("{set}/{file}: {e}"));
    map_request(&req, RECEIVED_AT)
}

/// What the store would hold after merging the changes in the given order.
#[derive(Default)]
struct World {
    traces: BTreeMap<String, TraceRecord>,
    observations: BTreeMap<String, ObservationRecord>,
}

impl World {
    fn merge<'a>(changes: impl IntoIterator<Item = &'a TimedChange>) -> World {
        let mut world = World::default();
        for tc in changes {
            match tc.change.clone() {
                Change::Trace(p) => world
                    .traces
                    .entry(p.id.clone())
                    .or_insert_with(|| TraceRecord::empty(p.id.clone(), tc.at))
                    .merge(p, tc.at),
                Change::Observation(p) => {
                    let trace_id = p.trace_id.clone().unwrap_or_default();
                    world
                        .observations
                        .entry(p.id.clone())
                        .or_insert_with(|| ObservationRecord::empty(&p, trace_id, tc.at))
                        .merge(p, tc.at);
                }
                Change::Score(_) => panic!("otel never produces scores"),
            }
        }
        world
    }

    fn observations_of(&self, trace_id: &str) -> Vec<&ObservationRecord> {
        self.observations
            .values()
            .filter(|o| o.trace_id == trace_id)
            .collect()
    }
}

/// Decodes one body of a fixture set, maps it, merges the changes in emitted and in reversed
/// order (the stamps must make the order irrelevant), and checks both against the manifest.
fn check(set: &str, file: &str, enc: Encoding) {
    let mapped = decode_and_map(set, file, enc);
    assert_eq!(
        mapped.rejected_spans, 0,
        "{set}: {:?}",
        mapped.error_message
    );
    let manifest: Value = serde_json::from_slice(&read(set, "manifest.json")).unwrap();
    for (order, world) in [
        ("emitted", World::merge(&mapped.changes)),
        ("reversed", World::merge(mapped.changes.iter().rev())),
    ] {
        let ctx = format!("{set}/{file} ({order} order)");
        for obs in world.observations.values() {
            assert!(
                world.traces.contains_key(&obs.trace_id),
                "{ctx}: observation {} has no trace",
                obs.id
            );
        }
        for expected in manifest["traces"].as_array().unwrap() {
            check_trace(&world, expected, &ctx);
        }
        for id in manifest["session_trace_ids"].as_array().unwrap() {
            let trace = &world.traces[id.as_str().unwrap()];
            assert_eq!(
                trace.session_id.as_deref(),
                manifest["session_id"].as_str(),
                "{ctx}"
            );
        }
    }
}

fn check_trace(world: &World, want: &Value, ctx: &str) {
    let trace = match want["id"].as_str() {
        Some(id) => world
            .traces
            .get(id)
            .unwrap_or_else(|| panic!("{ctx}: trace {id} missing")),
        None => {
            let (name, session) = (&want["lookup"]["name"], &want["lookup"]["sessionId"]);
            let found: Vec<_> = world
                .traces
                .values()
                .filter(|t| t.name.as_deref() == name.as_str())
                .filter(|t| t.session_id.as_deref() == session.as_str())
                .collect();
            assert_eq!(found.len(), 1, "{ctx}: trace lookup {name} {session}");
            found[0]
        }
    };
    let ctx = format!("{ctx}, trace {}", want["name"]);
    let opt = |k: &str| want.get(k).and_then(Value::as_str);
    assert_eq!(trace.name.as_deref(), opt("name"), "{ctx}: name");
    assert_eq!(trace.user_id.as_deref(), opt("userId"), "{ctx}: userId");
    assert_eq!(
        trace.session_id.as_deref(),
        opt("sessionId"),
        "{ctx}: sessionId"
    );
    assert_eq!(trace.release.as_deref(), opt("release"), "{ctx}: release");
    assert_eq!(trace.version.as_deref(), opt("version"), "{ctx}: version");
    if let Some(env) = opt("environment") {
        assert_eq!(trace.environment, env, "{ctx}: environment");
    }
    let mut tags: Vec<&str> = want["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    tags.sort_unstable();
    assert_eq!(trace.tags, tags, "{ctx}: tags");
    if let Some(meta) = want.get("metadata") {
        assert_subset(meta, &Value::Object(trace.metadata.clone()), &ctx);
    }

    let observations = world.observations_of(&trace.id);
    assert_eq!(
        Some(observations.len() as u64),
        want["observation_count"].as_u64(),
        "{ctx}: observation count"
    );
    let expected = want["observations"].as_array().unwrap();
    let mut ids_by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for exp in expected {
        let candidates: Vec<_> = match exp["id"].as_str() {
            Some(id) => observations.iter().filter(|o| o.id == id).collect(),
            None => observations
                .iter()
                .filter(|o| o.name.as_deref() == exp["name"].as_str())
                .filter(|o| Some(o.kind.as_str()) == exp["type"].as_str())
                .collect(),
        };
        assert_eq!(candidates.len(), 1, "{ctx}: observation {}", exp["key"]);
        ids_by_key.insert(exp["key"].as_str().unwrap(), &candidates[0].id);
    }
    for exp in expected {
        let key = exp["key"].as_str().unwrap();
        let obs = &world.observations[ids_by_key[key]];
        check_observation(world, obs, exp, &ids_by_key, &format!("{ctx}, obs {key}"));
    }
}

fn check_observation(
    world: &World,
    obs: &ObservationRecord,
    want: &Value,
    ids_by_key: &BTreeMap<&str, &str>,
    ctx: &str,
) {
    let opt = |k: &str| want.get(k).and_then(Value::as_str);
    assert_eq!(Some(obs.kind.as_str()), opt("type"), "{ctx}: type");
    assert_eq!(obs.name.as_deref(), opt("name"), "{ctx}: name");
    match opt("parent") {
        // A root: no parent, or one that is not an observation of this trace.
        None => assert!(
            obs.parent_observation_id.as_ref().is_none_or(|p| world
                .observations
                .get(p)
                .is_none_or(|o| o.trace_id != obs.trace_id)),
            "{ctx}: expected a root, parent {:?}",
            obs.parent_observation_id
        ),
        Some(key) => assert_eq!(
            obs.parent_observation_id.as_deref(),
            Some(ids_by_key[key]),
            "{ctx}: parent"
        ),
    }
    if let Some(model) = opt("model") {
        assert_eq!(obs.model.as_deref(), Some(model), "{ctx}: model");
    }
    let usage = serde_json::to_value(obs.provided_usage.clone().unwrap_or_default()).unwrap();
    for key in ["usage", "usageDetails"] {
        if let Some(expected) = want.get(key) {
            assert_subset(expected, &usage, &format!("{ctx}: {key}"));
        }
    }
    if let Some(params) = want.get("modelParameters") {
        let got = Value::Object(obs.model_parameters.clone().unwrap_or_default());
        assert_subset(params, &got, &format!("{ctx}: modelParameters"));
    }
    assert_eq!(
        obs.completion_start_time.is_some(),
        want["completionStartTime"] == json!(true),
        "{ctx}: completionStartTime"
    );
    assert_eq!(
        obs.level.as_str(),
        opt("level").unwrap_or(Level::Default.as_str()),
        "{ctx}: level"
    );
    match (opt("statusMessage"), opt("statusMessageContains")) {
        (Some(exact), _) => assert_eq!(obs.status_message.as_deref(), Some(exact), "{ctx}"),
        (None, Some(part)) => assert!(
            obs.status_message
                .as_deref()
                .is_some_and(|m| m.contains(part)),
            "{ctx}: statusMessage {:?}",
            obs.status_message
        ),
        (None, None) => assert_eq!(obs.status_message, None, "{ctx}: statusMessage"),
    }
}

/// Every key of `want` is in `got` with an equal value (numbers compared as numbers).
fn assert_subset(want: &Value, got: &Value, ctx: &str) {
    for (k, v) in want.as_object().unwrap() {
        let g = got.get(k);
        let equal = match (v.as_f64(), g.and_then(Value::as_f64)) {
            (Some(a), Some(b)) => a == b,
            _ => g == Some(v),
        };
        assert!(equal, "{ctx}: {k} = {v}, got {g:?} in {got}");
    }
}

const PY: &str = "langfuse-python-5.0.4";
const JS: &str = "langfuse-js-5.11.1";
const LITELLM: &str = "litellm-1.80.17-langfuse-otel";
const OTEL: &str = "opentelemetry-python-1.45.2";
const TRACES: &str = "001-POST-api-public-otel-v1-traces";

#[test]
fn langfuse_python_protobuf() {
    check(
        PY,
        &format!("{TRACES}.body.decompressed.bin"),
        Encoding::Protobuf,
    );
}

#[test]
fn langfuse_python_as_json() {
    check(PY, &format!("{TRACES}.decoded.json"), Encoding::Json);
}

#[test]
fn langfuse_js_json() {
    check(JS, &format!("{TRACES}.body.json"), Encoding::Json);
}

#[test]
fn litellm_protobuf() {
    check(LITELLM, &format!("{TRACES}.body.bin"), Encoding::Protobuf);
}

#[test]
fn litellm_as_json() {
    check(LITELLM, &format!("{TRACES}.decoded.json"), Encoding::Json);
}

#[test]
fn plain_opentelemetry_protobuf() {
    check(OTEL, &format!("{TRACES}.body.bin"), Encoding::Protobuf);
}

#[test]
fn plain_opentelemetry_as_json() {
    check(OTEL, &format!("{TRACES}.decoded.json"), Encoding::Json);
}

#[test]
fn protobuf_and_json_give_the_same_changes() {
    for (set, bin) in [
        (PY, "body.decompressed.bin"),
        (LITELLM, "body.bin"),
        (OTEL, "body.bin"),
    ] {
        let pb = decode_and_map(set, &format!("{TRACES}.{bin}"), Encoding::Protobuf);
        let js = decode_and_map(set, &format!("{TRACES}.decoded.json"), Encoding::Json);
        assert!(!pb.changes.is_empty(), "{set}");
        assert_eq!(pb, js, "{set}");
    }
}

fn observation<'a>(mapped: &'a Mapped, name: &str) -> &'a crate::record::ObservationPatch {
    mapped
        .changes
        .iter()
        .find_map(|c| match &c.change {
            Change::Observation(o) if o.name == crate::record::Patch::Set(name.into()) => Some(o),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no observation {name}"))
}

#[test]
fn as_root_span_keeps_its_dangling_parent() {
    let mapped = decode_and_map(PY, &format!("{TRACES}.decoded.json"), Encoding::Json);
    let root = observation(&mapped, "handle-request");
    assert_eq!(
        root.parent_observation_id.as_deref(),
        Some("a99864e5548f0f13")
    );
    let world = World::merge(&mapped.changes);
    let trace = &world.traces["50413cb4e491e757784bb9df8c5e4c3d"];
    // The trace starts when the root span does, whichever span was merged first.
    assert_eq!(trace.timestamp, root.start_time.unwrap());
    let reversed = World::merge(mapped.changes.iter().rev());
    assert_eq!(reversed.traces[&trace.id].timestamp, trace.timestamp);
}

#[test]
fn observation_metadata_has_context_blocks() {
    let mapped = decode_and_map(PY, &format!("{TRACES}.decoded.json"), Encoding::Json);
    let meta = observation(&mapped, "chat-completion")
        .metadata
        .clone()
        .unwrap();
    assert_eq!(meta["provider"], json!("openai"));
    assert_eq!(
        meta["resourceAttributes"]["langfuse.release"],
        json!("release-1.2.3")
    );
    assert_eq!(meta["scope"]["name"], json!("langfuse-sdk"));
    assert_eq!(
        meta["scope"]["attributes"]["public_key"],
        json!("pk-lf-test")
    );
    assert!(
        meta.get("attributes").is_none(),
        "langfuse-sdk spans carry no attributes block"
    );

    let otel = decode_and_map(OTEL, &format!("{TRACES}.body.bin"), Encoding::Protobuf);
    let gen_span = observation(&otel, "chat gpt-4o");
    let attributes = &gen_span.metadata.as_ref().unwrap()["attributes"];
    assert_eq!(attributes["gen_ai.usage.input_tokens"], json!("100"));
    assert!(attributes.get("gen_ai.input.messages").is_none());
    assert_eq!(gen_span.input.as_ref().unwrap()[0]["role"], json!("system"));
    let old_style = observation(&otel, "chat gpt-4o-mini");
    assert_eq!(
        old_style.input,
        Some(json!([{"role": "user", "content": "Summarize: Paris is the capital of France."}]))
    );
    let tool = observation(&otel, "get_weather");
    assert_eq!(tool.input, Some(json!({"city": "Paris"})));
}

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(v),
        key_strindex: 0,
    }
}

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, parent: Vec<u8>, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id,
        span_id,
        parent_span_id: parent,
        name: "s".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: attrs,
        ..Span::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// The resource and scope blocks are built once for all the spans below them: each span must
/// still get its own resource's and scope's, on its observation and on its trace.
#[test]
fn each_span_gets_its_own_resource_and_scope_blocks() {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let text = |s: &str| any_value::Value::StringValue(s.into());
    let mut resource_spans = Vec::new();
    for r in 0..2u8 {
        let scope_spans = (0..2u8)
            .map(|sc| ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("scope-{r}-{sc}"),
                    ..InstrumentationScope::default()
                }),
                spans: vec![span(
                    vec![10 * r + sc + 1; 16],
                    vec![10 * r + sc + 1; 8],
                    vec![],
                    vec![],
                )],
                ..ScopeSpans::default()
            })
            .collect();
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", text(&format!("service-{r}")))],
                ..Resource::default()
            }),
            scope_spans,
            ..ResourceSpans::default()
        });
    }
    let mapped = map_request(&ExportTraceServiceRequest { resource_spans }, RECEIVED_AT);
    assert_eq!(mapped.rejected_spans, 0, "{:?}", mapped.error_message);
    let mut seen = Vec::new();
    for c in &mapped.changes {
        let (id, meta) = match &c.change {
            Change::Observation(o) => (o.id.clone(), o.metadata.clone().unwrap()),
            Change::Trace(t) => (t.id.clone(), t.metadata.clone().unwrap()),
            Change::Score(_) => unreachable!(),
        };
        // Every id, trace or span, repeats the byte 10 × resource + scope + 1.
        let n = u8::from_str_radix(&id[..2], 16).unwrap() - 1;
        let (r, sc) = (n / 10, n % 10);
        let service = format!("service-{r}");
        assert_eq!(
            meta["resourceAttributes"]["service.name"],
            json!(service),
            "{id}"
        );
        assert_eq!(
            meta["scope"]["name"],
            json!(format!("scope-{r}-{sc}")),
            "{id}"
        );
        seen.push(id);
    }
    // Four spans, each the root of a trace of its own.
    assert_eq!(seen.len(), 8, "{seen:?}");
}

#[test]
fn garbage_protobuf_is_an_error() {
    // Field 1, length-delimited, with a length far past the end of the body.
    let err = decode(b"\x0a\xff\xff\xff\xff\x0f\x01", Encoding::Protobuf).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to parse otlp protobuf trace export"),
        "{err}"
    );
    assert_eq!(
        err.langfuse_message(),
        "Failed to parse OTel Protobuf Trace"
    );
    assert!(decode(b"not json", Encoding::Json).is_err());
}

#[test]
fn invalid_ids_reject_only_their_span() {
    let good = span(vec![1; 16], vec![2; 8], vec![], vec![]);
    let req = request(vec![
        span(vec![0; 16], vec![2; 8], vec![], vec![]),
        span(vec![1; 16], vec![2; 7], vec![], vec![]),
        span(vec![1; 16], vec![3; 8], vec![4; 3], vec![]),
        good,
    ]);
    let mapped = map_request(&req, RECEIVED_AT);
    assert_eq!(mapped.rejected_spans, 3);
    let message = mapped.error_message.unwrap();
    assert!(
        message.starts_with("3 spans rejected; first: trace id"),
        "{message}"
    );
    assert_eq!(
        mapped.changes.len(),
        2,
        "the valid span's trace and observation"
    );

    // Non-hex ids in OTLP/JSON do not fail the export either.
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "zz", "spanId": "0102030405060708"},
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
         "parentSpanId": "nothex!!"},
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"}
    ]}]}]});
    let req = decode(body.to_string().as_bytes(), Encoding::Json).unwrap();
    let mapped = map_request(&req, RECEIVED_AT);
    assert_eq!(mapped.rejected_spans, 2);
    assert_eq!(mapped.changes.len(), 2);
    let Change::Observation(obs) = &mapped.changes[1].change else {
        panic!("expected the observation second");
    };
    // No timestamps at all: the receive time stands in.
    assert_eq!(obs.start_time, Some(RECEIVED_AT));
}

#[test]
fn hostile_attributes_do_not_panic() {
    let deep_json = "[".repeat(200_000);
    let huge = "x".repeat(2_000_000);
    let mut nested = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..45 {
        nested = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![nested],
            })),
        };
    }
    let text = |s: &str| any_value::Value::StringValue(s.into());
    let mut attrs: Vec<KeyValue> = [
        "langfuse.observation.input",
        "langfuse.observation.output",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
        "langfuse.observation.model.parameters",
        "langfuse.observation.metadata",
        "langfuse.observation.metadata.k",
        "langfuse.observation.completion_start_time",
        "langfuse.trace.tags",
        "langfuse.trace.metadata",
        "gen_ai.system_instructions",
        "llm.invocation_parameters",
        "events",
    ]
    .iter()
    .flat_map(|k| [attr(k, text(&deep_json)), attr(k, text(&huge))])
    .collect();
    attrs.push(attr(
        "gen_ai.prompt.99999999999999999999.content",
        text("x"),
    ));
    attrs.push(attr(
        &format!("gen_ai.prompt.{}", "0.".repeat(5000)),
        text("x"),
    ));
    attrs.push(KeyValue {
        key: "nested".into(),
        value: Some(nested),
        key_strindex: 0,
    });
    let req = request(vec![span(vec![1; 16], vec![2; 8], vec![], attrs)]);
    let mapped = map_request(&req, RECEIVED_AT);
    assert_eq!(mapped.rejected_spans, 0);
    // Round trip through both decoders too: prost and serde_json bound their nesting.
    let pb = decode(&req.encode_to_vec(), Encoding::Protobuf).unwrap();
    assert_eq!(map_request(&pb, RECEIVED_AT), mapped);

    let mut too_deep = AnyValue::default();
    for _ in 0..500 {
        too_deep = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![too_deep],
            })),
        };
    }
    let deep_req = request(vec![span(
        vec![1; 16],
        vec![2; 8],
        vec![],
        vec![KeyValue {
            key: "deep".into(),
            value: Some(too_deep),
            key_strindex: 0,
        }],
    )]);
    let _ = map_request(&deep_req, RECEIVED_AT);
    assert!(decode(&deep_req.encode_to_vec(), Encoding::Protobuf).is_err());
    let deep_body = format!("{{\"resourceSpans\":{}", "[".repeat(100_000));
    assert!(decode(deep_body.as_bytes(), Encoding::Json).is_err());
}

#[test]
fn content_types() {
    assert_eq!(
        Encoding::from_content_type("application/x-protobuf"),
        Some(Encoding::Protobuf)
    );
    assert_eq!(
        Encoding::from_content_type("Application/JSON; charset=utf-8"),
        Some(Encoding::Json)
    );
    assert_eq!(Encoding::from_content_type("text/plain"), None);
}
