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
