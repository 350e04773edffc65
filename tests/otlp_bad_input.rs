//! Hostile and malformed OTLP exports: each gets a clear answer, the good spans of a partly bad
//! export are stored, and the server stays healthy.

mod common;

use std::io::Write as _;

use common::{PUBLIC_KEY, Server};
use serde_json::{Value, json};

const OTLP: &str = "/api/public/otel/v1/traces";

fn span(trace_id: &str, span_id: &str, name: &str) -> Value {
    json!({"traceId": trace_id, "spanId": span_id, "name": name, "kind": 1,
           "startTimeUnixNano": "1746093600000000000", "endTimeUnixNano": "1746093601000000000",
           "attributes": [{"key": "langfuse.observation.type", "value": {"stringValue": "span"}}]})
}

fn export(spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{"resource": {"attributes": []},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]})
}

fn post(
    server: &Server,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> common::Resp {
    let mut req = server
        .client()
        .post(server.url(OTLP))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    server.send("POST otlp", req)
}

fn assert_healthy(server: &Server) {
    assert_eq!(server.get("/api/public/health").status, 200);
}

#[test]
fn garbage_protobuf_is_a_400_with_a_message() {
    let server = Server::start();
    let resp = post(
        &server,
        "application/x-protobuf",
        None,
        vec![0xff, 0x13, 0x37, 0x00, 0x42],
    );
    let body = resp.expect_json(400);
    assert!(
        body["message"].as_str().unwrap().contains("protobuf"),
        "{body}"
    );
    let resp = post(
        &server,
        "application/json",
        None,
        b"{\"resourceSpans\": 5}".to_vec(),
    );
    resp.expect_json(400);
    assert_healthy(&server);
}

#[test]
fn unknown_content_type_is_415() {
    let server = Server::start();
    let resp = post(&server, "text/plain", None, b"hello".to_vec());
    let body = resp.expect_json(415);
    assert!(
        body["message"].as_str().unwrap().contains("content type"),
        "{body}"
    );
}

#[test]
fn gzip_bomb_is_413_without_inflating_it_all() {
    let server = Server::builder()
        .env("SIGHTLINE_MAX_BODY_BYTES", "1048576")
        .start();
    // 200 MB of zeros compresses to ~200 KB; the server must stop at the 1 MiB limit.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&chunk).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb itself fits under the limit");
    let resp = post(&server, "application/x-protobuf", Some("gzip"), bomb);
    resp.expect_json(413);
    assert_healthy(&server);
}

#[test]
fn invalid_ids_reject_only_their_spans() {
    let server = Server::start();
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let body = export(vec![
        span(trace_id, "eee19b7ec3c1b174", "good-span"),
        span(trace_id, "not-hex!", "bad-span-id"),
        span(
            "00000000000000000000000000000000",
            "aaa19b7ec3c1b175",
            "zero-trace-id",
        ),
    ]);
    let resp = post(
        &server,
        "application/json",
        None,
        serde_json::to_vec(&body).unwrap(),
    );
    let answer = resp.expect_json(200);
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    assert!(rejected == "2" || rejected == 2, "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let obs = server
        .get(&format!("/api/public/observations?traceId={trace_id}"))
        .expect_json(200);
    let names: Vec<&str> = obs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good-span"]);
}

#[test]
fn retried_export_is_idempotent() {
    let server = Server::start();
    let trace_id = "6b8efff798038103d269b633813fc60c";
    let body =
        serde_json::to_vec(&export(vec![span(trace_id, "eee19b7ec3c1b174", "once")])).unwrap();
    for _ in 0..3 {
        post(&server, "application/json", None, body.clone()).expect_json(200);
    }
    let obs = server
        .get(&format!("/api/public/observations?traceId={trace_id}"))
        .expect_json(200);
    assert_eq!(obs["meta"]["totalItems"], 1);
    let traces = server.get("/api/public/traces").expect_json(200);
    assert_eq!(traces["meta"]["totalItems"], 1);
}

#[test]
fn public_key_alone_cannot_export_spans() {
    let server = Server::start();
    let body = serde_json::to_vec(&export(vec![])).unwrap();
    let resp = server.send(
        "POST otlp with bearer",
        reqwest::blocking::Client::new()
            .post(server.url(OTLP))
            .header("authorization", format!("Bearer {PUBLIC_KEY}"))
            .header("content-type", "application/json")
            .body(body.clone()),
    );
    assert_eq!(resp.status, 403, "{}", resp.text());
    let resp = server.send(
        "POST otlp without auth",
        reqwest::blocking::Client::new()
            .post(server.url(OTLP))
            .header("content-type", "application/json")
            .body(body),
    );
    assert_eq!(resp.status, 401);
}

// ---------------------------------------------------------------------------------------------
// Hostile payloads
// ---------------------------------------------------------------------------------------------

/// The answer to a hostile export: a 200 (possibly with partial success) or a 4xx with a
/// message, and a server that still answers.
fn assert_handled(server: &Server, resp: &common::Resp) -> bool {
    assert!(
        resp.status == 200 || (400..500).contains(&resp.status),
        "{}: {} {}",
        resp.what,
        resp.status,
        resp.text()
    );
    if resp.status != 200 {
        let body = resp.json();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    assert_healthy(server);
    resp.status == 200
}

fn attr(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn span_with(trace_id: &str, span_id: &str, attrs: Vec<Value>) -> Value {
    let mut s = span(trace_id, span_id, "hostile");
    s["attributes"].as_array_mut().unwrap().extend(attrs);
    s
}

fn post_json(server: &Server, body: &Value) -> common::Resp {
    post(
        server,
        "application/json",
        None,
        serde_json::to_vec(body).unwrap(),
    )
}

#[test]
fn deeply_nested_attribute_values_are_handled() {
    // Building, encoding and dropping 1000-level values recurses in this test's own code.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(deeply_nested)
        .unwrap()
        .join()
        .unwrap();
}

fn deeply_nested() {
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, KeyValue, KeyValueList, any_value::Value as V,
    };
    use prost::Message as _;
    let server = Server::start();
    for depth in [100usize, 1000] {
        let mut nested = json!({"stringValue": "leaf"});
        for _ in 0..depth {
            nested = json!({"kvlistValue": {"values": [{"key": "a", "value": nested}]}});
        }
        let trace_id = format!("{depth:032x}");
        let body = export(vec![span_with(
            &trace_id,
            "1000000000000001",
            vec![attr("langfuse.observation.input", nested)],
        )]);
        // serde_json stops at 128 levels: the JSON body may be refused, never mishandled.
        assert_handled(&server, &post_json(&server, &body));

        let mut value = AnyValue {
            value: Some(V::StringValue("leaf".into())),
        };
        for _ in 0..depth {
            value = AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key_strindex: 0,
                        key: "a".into(),
                        value: Some(value),
                    }],
                })),
            };
        }
        let mut request: sightline::otel::ExportTraceServiceRequest = serde_json::from_value(
            export(vec![span(&trace_id, "1000000000000002", "proto-deep")]),
        )
        .unwrap();
        request.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(KeyValue {
                key_strindex: 0,
                key: "langfuse.observation.input".into(),
                value: Some(value),
            });
        let resp = post(
            &server,
            "application/x-protobuf",
            None,
            request.encode_to_vec(),
        );
        // prost's recursion limit (100 messages) refuses the deep one.
        assert_eq!(assert_handled(&server, &resp), depth < 40, "depth {depth}");
    }
}

#[test]
fn hostile_attribute_keys_are_stored_as_data() {
    let server = Server::start();
    let trace_id = "7b8efff798038103d269b633813fc60c";
    let long = "k".repeat(10 * 1024);
    let keys = [
        "__proto__",
        "../../etc/passwd",
        "",
        long.as_str(),
        "constructor",
    ];
    let mut attrs: Vec<Value> = keys
        .iter()
        .map(|k| {
            attr(
                &format!("langfuse.trace.metadata.{k}"),
                json!({"stringValue": "t"}),
            )
        })
        .collect();
    attrs.extend(keys.iter().map(|k| {
        attr(
            &format!("langfuse.observation.metadata.{k}"),
            json!({"stringValue": "o"}),
        )
    }));
    attrs.extend(keys.iter().map(|k| attr(k, json!({"stringValue": "raw"}))));
    attrs.push(attr("langfuse.trace.name", json!({"stringValue": "keys"})));
    attrs.push(attr(
        "langfuse.internal.as_root",
        json!({"boolValue": true}),
    ));
    let resp = post_json(
        &server,
        &export(vec![span_with(trace_id, "eee19b7ec3c1b174", attrs)]),
    );
    assert!(assert_handled(&server, &resp), "{}", resp.text());
    let trace = server
        .get(&format!("/api/public/traces/{trace_id}"))
        .expect_json(200);
    assert_eq!(trace["name"], "keys");
    // A root span's own metadata may also land on the trace (Langfuse's mapping); either way
    // every hostile key is there as plain data.
    for key in keys {
        assert!(
            trace["metadata"][key].is_string(),
            "trace metadata key {key:.40} missing"
        );
    }
    let obs = server
        .get("/api/public/observations/eee19b7ec3c1b174")
        .expect_json(200);
    for key in keys {
        assert_eq!(
            obs["metadata"][key], "o",
            "observation metadata key {key:.40}"
        );
    }
}

#[test]
fn non_finite_and_overflowing_numbers_never_reach_stored_numbers() {
    let server = Server::start();
    let trace_id = "8b8efff798038103d269b633813fc60c";
    let spans = vec![
        span_with(
            trace_id,
            "a000000000000001",
            vec![
                attr(
                    "langfuse.observation.type",
                    json!({"stringValue": "generation"}),
                ),
                attr("gen_ai.usage.cost", json!({"doubleValue": "NaN"})),
                attr(
                    "gen_ai.usage.input_tokens",
                    json!({"intValue": "99999999999999999999"}),
                ),
            ],
        ),
        span_with(
            trace_id,
            "a000000000000002",
            vec![
                attr(
                    "langfuse.observation.type",
                    json!({"stringValue": "generation"}),
                ),
                attr("gen_ai.usage.cost", json!({"doubleValue": "Infinity"})),
                attr("gen_ai.usage.input_tokens", json!({"intValue": "-5"})),
            ],
        ),
        span_with(
            trace_id,
            "a000000000000003",
            vec![
                attr(
                    "langfuse.observation.type",
                    json!({"stringValue": "generation"}),
                ),
                attr(
                    "langfuse.observation.cost_details",
                    json!({"stringValue": "{\"input\": 1e308, \"output\": 1e308, \"x\": \"NaN\"}"}),
                ),
                attr(
                    "langfuse.observation.usage_details",
                    json!({"stringValue": "{\"input\": 18446744073709551615, \"output\": 18446744073709551615}"}),
                ),
            ],
        ),
    ];
    let resp = post_json(&server, &export(spans));
    assert_handled(&server, &resp);
    for id in ["a000000000000001", "a000000000000002", "a000000000000003"] {
        let resp = server.get(&format!("/api/public/observations/{id}"));
        if resp.status == 404 {
            continue;
        }
        // Valid JSON from serde_json means every number is finite.
        let obs = resp.expect_json(200);
        for field in ["usageDetails", "costDetails"] {
            for (key, value) in obs[field].as_object().into_iter().flatten() {
                assert!(value.is_number(), "{id}: {field}.{key} = {value}");
                assert!(
                    value.as_f64().unwrap() >= 0.0,
                    "{id}: {field}.{key} = {value}"
                );
            }
        }
    }
    server.get("/api/public/metrics/daily").expect_json(200);
    server
        .get(&format!("/api/public/traces/{trace_id}"))
        .expect_json(200);
}

#[test]
fn invalid_utf8_duplicate_spans_and_huge_strings_are_handled() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
    use prost::Message as _;
    let server = Server::start();
    let trace_id = "9b8efff798038103d269b633813fc60c";
    let mut request: sightline::otel::ExportTraceServiceRequest =
        serde_json::from_value(export(vec![span(trace_id, "b000000000000001", "utf8")])).unwrap();
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key_strindex: 0,
            key: "langfuse.observation.input".into(),
            value: Some(AnyValue {
                value: Some(V::StringValue("MARKER".into())),
            }),
        });
    let mut bytes = request.encode_to_vec();
    let at = bytes
        .windows(6)
        .position(|w| w == b"MARKER")
        .expect("marker in the encoding");
    bytes[at..at + 3].copy_from_slice(b"\xff\xfe\xc3");
    let resp = post(&server, "application/x-protobuf", None, bytes);
    assert_eq!(
        resp.status,
        400,
        "protobuf strings must be UTF-8: {}",
        resp.text()
    );
    assert_handled(&server, &resp);

    // The same span three times in one export: one observation, the last version.
    let spans = ["first", "second", "third"]
        .iter()
        .map(|name| span(trace_id, "b000000000000002", name))
        .collect();
    assert!(assert_handled(&server, &post_json(&server, &export(spans))));
    let obs = server
        .get(&format!("/api/public/observations?traceId={trace_id}"))
        .expect_json(200);
    assert_eq!(obs["meta"]["totalItems"], 1, "{obs}");

    // A 10 MB attribute: over the default 4.5 MB body limit, a readable 413.
    let big = span_with(
        trace_id,
        "b000000000000003",
        vec![attr(
            "langfuse.observation.input",
            json!({"stringValue": "x".repeat(10 << 20)}),
        )],
    );
    let resp = post_json(&server, &export(vec![big]));
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_handled(&server, &resp);
}
