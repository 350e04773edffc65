//! Hostile and broken requests: each gets a clear 4xx (or a per-event error inside a 207), never
//! a 500 or a dropped connection, and the server stays healthy.

mod common;

use std::io::Write as _;

use common::fixtures::encode;
use common::{PUBLIC_KEY, Resp, SECRET_KEY, Server, basic_auth, now_iso, unique_id};
use serde_json::{Value, json};

const INGESTION: &str = "/api/public/ingestion";

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// POSTs raw bytes to the ingestion endpoint with the given `Authorization` (None = no header)
/// and extra headers.
fn post_raw(
    server: &Server,
    body: Vec<u8>,
    authorization: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut request = reqwest::blocking::Client::new()
        .post(server.url(INGESTION))
        .header("content-type", "application/json")
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    server.send(&format!("POST {INGESTION}"), request)
}

fn authed() -> String {
    basic_auth(PUBLIC_KEY, SECRET_KEY)
}

/// The answer has `status` and a JSON body with a non-empty `message`; the server lives on.
fn assert_error_json(server: &Server, resp: &Resp, status: u16) {
    let body = resp.expect_json(status);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{}: a {status} needs a JSON `message`, got {body}",
        resp.what
    );
    server.assert_healthy();
}

/// The answer to hostile input: not a 5xx, a JSON body, and a healthy server afterwards. For a
/// 207, every envelope id must be accounted for once, errors with a 4xx status and a message.
/// Returns the ids reported as successes.
fn assert_handled(server: &Server, resp: &Resp, event_ids: &[&str]) -> Vec<String> {
    assert!(
        resp.status < 500,
        "{}: hostile input must get a clear 4xx or per-event errors, got {} {}",
        resp.what,
        resp.status,
        common::server::truncate(&resp.text(), 1000)
    );
    assert!(
        (400..500).contains(&resp.status) || resp.status == 207,
        "{}: unexpected status {} {}",
        resp.what,
        resp.status,
        resp.text()
    );
    let body = resp.json();
    let mut successes = Vec::new();
    if resp.status == 207 {
        let mut seen = Vec::new();
        for entry in body["successes"].as_array().expect("successes array") {
            let id = entry["id"].as_str().unwrap_or("<none>").to_owned();
            successes.push(id.clone());
            seen.push(id);
        }
        for entry in body["errors"].as_array().expect("errors array") {
            let status = entry["status"].as_u64().unwrap_or(0);
            assert!(
                (400..500).contains(&status),
                "per-event error must be a 4xx: {entry}"
            );
            assert!(
                entry["message"].as_str().is_some_and(|m| !m.is_empty()),
                "per-event error needs a message: {entry}"
            );
            seen.push(entry["id"].as_str().unwrap_or("<none>").to_owned());
        }
        seen.sort();
        let mut expected: Vec<String> = event_ids.iter().map(|id| (*id).to_owned()).collect();
        expected.sort();
        assert_eq!(
            seen, expected,
            "each event exactly once in successes or errors: {body}"
        );
    } else {
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: a {} needs a JSON `message`, got {body}",
            resp.what,
            resp.status
        );
    }
    server.assert_healthy();
    eprintln!(
        "{}: answered {}, stored events {successes:?}",
        resp.what, resp.status
    );
    successes
}

fn trace_event(event_id: &str, trace_id: &str, extra: Value) -> Value {
    let mut body = json!({"id": trace_id, "name": "bad-input-trace"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    json!({"id": event_id, "type": "trace-create", "timestamp": now_iso(), "body": body})
}

fn batch_bytes(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "batch": events })).expect("serialize")
}

/// A batch [good trace, `bad`, good span]: the bad event (envelope id `evt-bad`) gets its own
/// 400 entry in `errors`, the others succeed and are stored.
fn assert_rejected_alone(bad: Value) {
    let server = Server::start();
    let trace_id = unique_id("partial");
    let span_id = unique_id("span");
    let now = now_iso();
    let events = vec![
        trace_event("evt-good-trace", &trace_id, json!({})),
        bad,
        json!({"id": "evt-good-span", "type": "span-create", "timestamp": now,
               "body": {"id": span_id, "traceId": trace_id, "name": "good-span",
                        "startTime": now}}),
    ];
    let resp = server.ingest(events);
    let body = resp.expect_json(207);
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "exactly the bad event is an error: {body}");
    assert_eq!(
        errors[0]["id"], "evt-bad",
        "error entry names the envelope id: {body}"
    );
    assert_eq!(errors[0]["status"], 400, "bad event → status 400: {body}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error entry needs a message: {body}"
    );
    let mut successes: Vec<(&str, &Value)> = body["successes"]
        .as_array()
        .expect("successes array")
        .iter()
        .map(|entry| (entry["id"].as_str().unwrap_or(""), &entry["status"]))
        .collect();
    successes.sort_by_key(|(id, _)| *id);
    assert_eq!(
        successes,
        vec![
            ("evt-good-span", &json!(201)),
            ("evt-good-trace", &json!(201))
        ],
        "the good events succeed: {body}"
    );

    let trace = server
        .get(&format!("/api/public/traces/{}", encode(&trace_id)))
        .expect_json(200);
    assert_eq!(trace["name"], "bad-input-trace");
    let observation_ids: Vec<&Value> = trace["observations"]
        .as_array()
        .expect("observations")
        .iter()
        .map(|obs| &obs["id"])
        .collect();
    assert_eq!(
        observation_ids,
        vec![&json!(span_id)],
        "only the good span is stored in the trace: {trace}"
    );
    server.assert_healthy();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip finish")
}

/// A valid one-event batch of about `size` bytes (the trace input is padding).
fn batch_of_size(trace_id: &str, size: usize) -> Vec<u8> {
    let skeleton = batch_bytes(&[trace_event("evt-size", trace_id, json!({"input": ""}))]);
    let padding = "p".repeat(size.saturating_sub(skeleton.len()));
    let bytes = batch_bytes(&[trace_event("evt-size", trace_id, json!({"input": padding}))]);
    assert!(bytes.len().abs_diff(size) < 16, "padding arithmetic");
    bytes
}

// ---------------------------------------------------------------------------------------------
// Envelope-level errors
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_json_is_400_with_message() {
    let server = Server::start();
    let resp = post_raw(
        &server,
        br#"{"batch": [{"id": "x", "#.to_vec(),
        Some(&authed()),
        &[],
    );
    assert_error_json(&server, &resp, 400);
}

#[test]
fn envelope_without_batch_array_is_400() {
    let server = Server::start();
    for body in [&br#"{"batch": 5}"#[..], b"[]", br#""hello""#, b"{}"] {
        let resp = post_raw(&server, body.to_vec(), Some(&authed()), &[]);
        assert_error_json(&server, &resp, 400);
    }
}

#[test]
fn empty_batch_is_207_with_empty_lists() {
    let server = Server::start();
    let body = server.ingest(vec![]).expect_json(207);
    assert_eq!(body, json!({"successes": [], "errors": []}));
}

#[test]
fn nan_and_infinity_literals_are_400() {
    let server = Server::start();
    for literal in ["NaN", "Infinity", "-Infinity"] {
        let body = format!(
            r#"{{"batch":[{{"id":"e1","type":"generation-create","timestamp":"{}","body":{{"id":"g1","traceId":"t1","usageDetails":{{"input":{literal}}}}}}}]}}"#,
            now_iso()
        );
        let resp = post_raw(&server, body.into_bytes(), Some(&authed()), &[]);
        assert_error_json(&server, &resp, 400);
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// Routes that need the project's Basic credentials.
const AUTHED_GETS: [&str; 4] = [
    "/api/public/traces",
    "/api/public/traces/some-trace",
    "/api/public/observations?traceId=some-trace",
    "/api/public/projects",
];

fn assert_unauthorized_everywhere(authorization: Option<&str>) {
    let server = Server::start();
    let batch = batch_bytes(&[trace_event("evt-auth", &unique_id("auth"), json!({}))]);
    let resp = post_raw(&server, batch, authorization, &[]);
    assert_error_json(&server, &resp, 401);
    for path in AUTHED_GETS {
        let mut request = reqwest::blocking::Client::new().get(server.url(path));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let resp = server.send(&format!("GET {path}"), request);
        assert_error_json(&server, &resp, 401);
    }
}

#[test]
fn missing_authorization_is_401() {
    assert_unauthorized_everywhere(None);
}

#[test]
fn wrong_secret_is_401() {
    assert_unauthorized_everywhere(Some(&basic_auth(PUBLIC_KEY, "sk-lf-wrong")));
}

#[test]
fn unknown_public_key_is_401() {
    assert_unauthorized_everywhere(Some(&basic_auth("pk-lf-unknown", SECRET_KEY)));
}

#[test]
fn garbled_basic_credentials_are_401() {
    assert_unauthorized_everywhere(Some("Basic !!!not-base64!!!"));
}

#[test]
fn health_needs_no_auth() {
    let server = Server::start();
    let resp = server.send(
        "GET /api/public/health",
        reqwest::blocking::Client::new().get(server.url("/api/public/health")),
    );
    let body = resp.expect_json(200);
    assert_eq!(body["status"], "OK");
    assert!(
        body["version"].is_string(),
        "health needs a version: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Body size limits
// ---------------------------------------------------------------------------------------------

const SMALL_LIMIT: usize = 4096;

fn small_limit_server() -> Server {
    Server::builder()
        .env("SIGHTLINE_MAX_BODY_BYTES", &SMALL_LIMIT.to_string())
        .start()
}

#[test]
fn body_over_limit_is_413_and_under_limit_is_accepted() {
    let server = small_limit_server();
    let under = batch_of_size(&unique_id("under"), SMALL_LIMIT / 2);
    let resp = post_raw(&server, under, Some(&authed()), &[]);
    assert_eq!(resp.status, 207, "a body under the limit: {}", resp.text());

    let over = batch_of_size(&unique_id("over"), SMALL_LIMIT * 2);
    let resp = post_raw(&server, over, Some(&authed()), &[]);
    assert_eq!(resp.status, 413, "a body over the limit: {}", resp.text());
    server.assert_healthy();
}

#[test]
fn chunked_body_over_limit_is_413() {
    let server = small_limit_server();
    let over = batch_of_size(&unique_id("chunked"), SMALL_LIMIT * 2);
    // A reader body has no Content-Length: it goes out chunked, so the limit must be enforced
    // while reading, not from the header.
    let request = reqwest::blocking::Client::new()
        .post(server.url(INGESTION))
        .header("authorization", authed())
        .header("content-type", "application/json")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(over)));
    let resp = server.send("POST (chunked) /api/public/ingestion", request);
    assert_eq!(
        resp.status,
        413,
        "chunked body over the limit: {}",
        resp.text()
    );
    server.assert_healthy();
}

#[test]
fn gzip_body_under_limit_is_accepted_and_stored() {
    let server = small_limit_server();
    let trace_id = unique_id("gzip-ok");
    let plain = batch_bytes(&[trace_event("evt-gzip", &trace_id, json!({}))]);
    let resp = post_raw(
        &server,
        gzip(&plain),
        Some(&authed()),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(resp.status, 207, "gzip body: {}", resp.text());
    server
        .get(&format!("/api/public/traces/{}", encode(&trace_id)))
        .expect_json(200);
}

#[test]
fn gzip_body_inflating_past_limit_is_413() {
    let server = small_limit_server();
    // ~1 MB of JSON that compresses to about 1 KB: under the limit on the wire, far over it
    // once inflated.
    let inflated = batch_of_size(&unique_id("gzip-bomb"), 1_000_000);
    let compressed = gzip(&inflated);
    assert!(
        compressed.len() < SMALL_LIMIT,
        "compressed to {}",
        compressed.len()
    );
    let resp = post_raw(
        &server,
        compressed,
        Some(&authed()),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(
        resp.status,
        413,
        "gzip body whose inflated size exceeds the limit: {}",
        resp.text()
    );
    server.assert_healthy();
}

#[test]
fn default_limit_is_4_5_mb() {
    let server = Server::start();
    let over = batch_of_size(&unique_id("default-over"), 4_718_592 + 100_000);
    let resp = post_raw(&server, over, Some(&authed()), &[]);
    assert_eq!(
        resp.status,
        413,
        "body over the 4.5 MB default: {}",
        resp.text()
    );
    let under = batch_of_size(&unique_id("default-under"), 4_600_000);
    let resp = post_raw(&server, under, Some(&authed()), &[]);
    assert_eq!(
        resp.status,
        207,
        "body under the 4.5 MB default: {}",
        resp.text()
    );
    server.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// One bad event in a batch
// ---------------------------------------------------------------------------------------------

#[test]
fn generation_without_id_is_a_per_event_400() {
    assert_rejected_alone(json!({
        "id": "evt-bad", "type": "generation-create", "timestamp": now_iso(),
        "body": {"traceId": "whatever", "name": "no-id", "model": "gpt-4o"}
    }));
}

#[test]
fn unparseable_timestamp_is_a_per_event_400() {
    assert_rejected_alone(json!({
        "id": "evt-bad", "type": "trace-create", "timestamp": "yesterday at noon",
        "body": {"id": unique_id("bad-ts"), "name": "bad-ts"}
    }));
}

#[test]
fn timestamp_without_offset_is_a_per_event_400() {
    assert_rejected_alone(json!({
        "id": "evt-bad", "type": "trace-create", "timestamp": "2025-01-01T12:00:00",
        "body": {"id": unique_id("no-offset"), "name": "no-offset"}
    }));
}

#[test]
fn unknown_event_type_is_a_per_event_400() {
    assert_rejected_alone(json!({
        "id": "evt-bad", "type": "banana-create", "timestamp": now_iso(),
        "body": {"id": unique_id("banana")}
    }));
}

#[test]
fn score_without_name_is_a_per_event_400() {
    assert_rejected_alone(json!({
        "id": "evt-bad", "type": "score-create", "timestamp": now_iso(),
        "body": {"id": unique_id("score"), "traceId": "whatever", "value": 1}
    }));
}

// ---------------------------------------------------------------------------------------------
// Unknown ids
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_ids_are_404_with_message() {
    let server = Server::start();
    for path in [
        "/api/public/traces/no-such-trace",
        "/api/public/observations/no-such-observation",
        "/api/public/sessions/no-such-session",
    ] {
        let resp = server.get(path);
        assert_error_json(&server, &resp, 404);
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile payloads
// ---------------------------------------------------------------------------------------------

#[test]
fn deeply_nested_json_is_handled() {
    let server = Server::start();
    // 100 levels is within serde_json's limit of 128 and must be stored; deeper is a 400.
    for depth in [100, 200, 10_000] {
        let trace_id = unique_id("deep");
        let nested = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let body = format!(
            r#"{{"batch":[{{"id":"evt-deep","type":"trace-create","timestamp":"{}","body":{{"id":"{trace_id}","name":"deep","input":{nested}}}}}]}}"#,
            now_iso()
        );
        let resp = post_raw(&server, body.into_bytes(), Some(&authed()), &[]);
        let stored = assert_handled(&server, &resp, &["evt-deep"]);
        assert_eq!(
            !stored.is_empty(),
            depth <= 100,
            "depth {depth}: {}",
            resp.text()
        );
        if !stored.is_empty() {
            // Stored: reading it back must work too (the test's own JSON parser stops at 128
            // levels, so count the nesting in the raw answer).
            let resp = server.get(&format!("/api/public/traces/{}", encode(&trace_id)));
            assert_eq!(resp.status, 200, "read back deep trace: {}", resp.text());
            assert!(
                resp.text().matches(r#""a""#).count() >= depth,
                "the stored input lost its nesting"
            );
        }
    }
}

#[test]
fn ten_megabyte_string_is_413_by_default_and_stored_whole_under_a_larger_limit() {
    let big = "x".repeat(10 * 1024 * 1024);
    let server = Server::start();
    let events = [trace_event(
        "evt-10mb",
        &unique_id("10mb"),
        json!({"input": big}),
    )];
    let resp = post_raw(&server, batch_bytes(&events), Some(&authed()), &[]);
    assert_error_json(&server, &resp, 413);

    let server = Server::builder()
        .env("SIGHTLINE_MAX_BODY_BYTES", &(16 * 1024 * 1024).to_string())
        .start();
    let trace_id = unique_id("10mb");
    let events = [trace_event(
        "evt-10mb",
        &trace_id,
        json!({"input": big, "output": big}),
    )];
    let resp = post_raw(
        &server,
        batch_bytes(&events)[..].to_vec(),
        Some(&authed()),
        &[],
    );
    // 20 MB of strings in a 16 MiB limit: refused whole, then half of it stored whole.
    assert_error_json(&server, &resp, 413);
    let events = [trace_event("evt-10mb", &trace_id, json!({"input": big}))];
    let resp = post_raw(&server, batch_bytes(&events), Some(&authed()), &[]);
    assert_eq!(assert_handled(&server, &resp, &["evt-10mb"]), ["evt-10mb"]);
    let trace = server
        .get(&format!("/api/public/traces/{}", encode(&trace_id)))
        .expect_json(200);
    assert_eq!(trace["input"].as_str().map(str::len), Some(big.len()));
}

#[test]
fn broken_and_nested_gzip_is_a_clear_error() {
    let server = Server::start();
    let plain = batch_bytes(&[trace_event("evt-gz", &unique_id("gz"), json!({}))]);
    let good = gzip(&plain);
    let truncated = good[..good.len() / 2].to_vec();
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage after the gzip stream");
    for (what, body, encoding, status) in [
        ("truncated gzip", truncated, "gzip", 400),
        ("gzip inside gzip", gzip(&good), "gzip", 400),
        ("not gzip at all", plain.clone(), "gzip", 400),
        ("unsupported encoding", plain.clone(), "br", 415),
    ] {
        let resp = post_raw(
            &server,
            body,
            Some(&authed()),
            &[("content-encoding", encoding)],
        );
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        assert_error_json(&server, &resp, status);
    }
    // Bytes after a complete gzip member are either read as another member or ignored; the
    // batch inside is what counts.
    let resp = post_raw(
        &server,
        trailing,
        Some(&authed()),
        &[("content-encoding", "gzip")],
    );
    assert_handled(&server, &resp, &["evt-gz"]);
}

#[test]
fn duplicate_ids_are_each_answered_and_merge_deterministically() {
    let server = Server::start();
    let trace_id = unique_id("dup");
    let early = "2025-01-01T00:00:00.000Z";
    let late = "2025-01-01T00:00:01.000Z";
    let events = vec![
        json!({"id": "evt-dup", "type": "trace-create", "timestamp": late,
               "body": {"id": trace_id, "name": "later", "tags": ["b"]}}),
        json!({"id": "evt-dup", "type": "trace-create", "timestamp": early,
               "body": {"id": trace_id, "name": "earlier", "userId": "u1", "tags": ["a"]}}),
        json!({"id": "evt-dup", "type": "span-create", "timestamp": early,
               "body": {"id": format!("{trace_id}-s"), "traceId": trace_id, "name": "one"}}),
        json!({"id": "evt-dup-2", "type": "span-create", "timestamp": late,
               "body": {"id": format!("{trace_id}-s"), "traceId": trace_id, "name": "two"}}),
    ];
    let resp = server.ingest(events.clone());
    let stored = assert_handled(
        &server,
        &resp,
        &["evt-dup", "evt-dup", "evt-dup", "evt-dup-2"],
    );
    assert_eq!(stored.len(), 4, "{}", resp.text());
    let path = format!("/api/public/traces/{}", encode(&trace_id));
    let trace = server.get(&path).expect_json(200);
    // The later event wins, absent fields never overwrite, tags union: whatever the order.
    assert_eq!(trace["name"], "later", "{trace}");
    assert_eq!(trace["userId"], "u1", "{trace}");
    assert_eq!(trace["tags"], json!(["a", "b"]), "{trace}");
    let observations = trace["observations"].as_array().unwrap();
    assert_eq!(observations.len(), 1, "{trace}");
    assert_eq!(observations[0]["name"], "two");
    // The whole batch again, reversed: the same record (ingestion is idempotent).
    let mut reversed = events;
    reversed.reverse();
    server.ingest(reversed).expect_json(207);
    let again = server.get(&path).expect_json(200);
    assert_eq!(again["name"], trace["name"]);
    assert_eq!(again["tags"], trace["tags"]);
    assert_eq!(again["observations"].as_array().unwrap().len(), 1);

    // A key twice in one JSON object: one of the two values is kept, nothing breaks.
    let dup_key = format!(
        r#"{{"batch":[{{"id":"evt-key","type":"trace-create","timestamp":"{}","body":{{"id":"{trace_id}-k","id":"{trace_id}-k2","name":"first","name":"second"}}}}]}}"#,
        now_iso()
    );
    let resp = post_raw(&server, dup_key.into_bytes(), Some(&authed()), &[]);
    if assert_handled(&server, &resp, &["evt-key"]).len() == 1 {
        let a = server.get(&format!("/api/public/traces/{trace_id}-k"));
        let b = server.get(&format!("/api/public/traces/{trace_id}-k2"));
        assert_eq!(
            [a.status, b.status].iter().filter(|s| **s == 200).count(),
            1,
            "exactly one of the duplicated ids names the stored trace"
        );
    }
}

#[test]
fn overflowing_numbers_and_non_finite_costs_never_reach_the_numbers() {
    let server = Server::start();
    let trace_id = unique_id("overflow");
    let generation = |suffix: &str, fields: &str| {
        format!(
            r#"{{"id":"evt-{suffix}","type":"generation-create","timestamp":"{}","body":{{"id":"{trace_id}-{suffix}","traceId":"{trace_id}","model":"gpt-4o",{fields}}}}}"#,
            now_iso()
        )
    };
    let events = [
        generation(
            "u64",
            r#""usageDetails":{"input":18446744073709551615,"output":18446744073709551615}"#,
        ),
        generation(
            "beyond",
            r#""usageDetails":{"input":18446744073709551616,"output":1}"#,
        ),
        generation(
            "i64min",
            r#""usageDetails":{"input":-9223372036854775808,"output":1}"#,
        ),
        generation(
            "negcost",
            r#""costDetails":{"input":-5,"output":-1e308,"total":-1e308}"#,
        ),
        generation(
            "hugecost",
            r#""costDetails":{"input":1e308,"output":1e308}"#,
        ),
        generation(
            "nancost",
            r#""costDetails":{"input":"NaN","total":"Infinity"}"#,
        ),
        generation(
            "strusage",
            r#""usage":{"input":"Infinity","output":"-Infinity","unit":"TOKENS"}"#,
        ),
    ];
    let trace = serde_json::to_string(&trace_event("evt-trace", &trace_id, json!({}))).unwrap();
    let body = format!(r#"{{"batch":[{trace},{}]}}"#, events.join(","));
    let ids = [
        "evt-trace",
        "evt-u64",
        "evt-beyond",
        "evt-i64min",
        "evt-negcost",
        "evt-hugecost",
        "evt-nancost",
        "evt-strusage",
    ];
    let resp = post_raw(&server, body.into_bytes(), Some(&authed()), &[]);
    let stored = assert_handled(&server, &resp, &ids);
    for id in stored.iter().filter(|id| *id != "evt-trace") {
        let suffix = id.trim_start_matches("evt-");
        let resp = server.get(&format!("/api/public/observations/{trace_id}-{suffix}"));
        // serde_json cannot produce NaN or Infinity, so valid JSON means finite numbers.
        let obs = resp.expect_json(200);
        for field in ["usageDetails", "costDetails"] {
            for (key, value) in obs[field].as_object().into_iter().flatten() {
                assert!(
                    value.is_number() || value.is_null(),
                    "{id}: {field}.{key} = {value}"
                );
            }
        }
    }
    // The rollups summed all of it without overflowing or poisoning the totals.
    let daily = server.get("/api/public/metrics/daily").expect_json(200);
    for day in daily["data"].as_array().unwrap() {
        assert!(day["totalCost"].is_number(), "{daily}");
    }
    let trace = server
        .get(&format!("/api/public/traces/{}", encode(&trace_id)))
        .expect_json(200);
    assert!(trace["totalCost"].is_number(), "{trace}");
}

#[test]
fn hostile_keys_are_stored_as_data() {
    let server = Server::start();
    let long_key = "k".repeat(10 * 1024);
    let mut weird = serde_json::Map::new();
    weird.insert("__proto__".into(), json!({"polluted": true}));
    weird.insert(
        "constructor".into(),
        json!({"prototype": {"polluted": true}}),
    );
    weird.insert("../../etc/passwd".into(), json!("traversal"));
    weird.insert(String::new(), json!("empty"));
    weird.insert(long_key.clone(), json!("long"));
    weird.insert("a.b[0]".into(), json!("path-like"));
    let trace_id = unique_id("keys");
    let plain_id = unique_id("plain");
    let events = vec![
        trace_event(
            "evt-keys",
            &trace_id,
            json!({"metadata": weird, "input": weird, "tags": ["__proto__", "", "../x"]}),
        ),
        json!({"id": "evt-keys-obs", "type": "span-create", "timestamp": now_iso(),
               "body": {"id": format!("{trace_id}-s"), "traceId": trace_id,
                        "metadata": weird, "name": "../../span"}}),
        trace_event("evt-plain", &plain_id, json!({"metadata": {"ok": 1}})),
    ];
    let resp = server.ingest(events);
    let stored = assert_handled(&server, &resp, &["evt-keys", "evt-keys-obs", "evt-plain"]);
    assert_eq!(stored.len(), 3, "{}", resp.text());
    let trace = server
        .get(&format!("/api/public/traces/{}", encode(&trace_id)))
        .expect_json(200);
    for (key, value) in &weird {
        assert_eq!(&trace["metadata"][key], value, "metadata key {:.40}", key);
        assert_eq!(&trace["input"][key], value, "input key {:.40}", key);
    }
    let obs = server
        .get(&format!(
            "/api/public/observations/{}",
            encode(&format!("{trace_id}-s"))
        ))
        .expect_json(200);
    assert_eq!(obs["metadata"]["__proto__"], json!({"polluted": true}));
    // No key leaked into another record.
    let plain = server
        .get(&format!("/api/public/traces/{}", encode(&plain_id)))
        .expect_json(200);
    assert_eq!(plain["metadata"], json!({"ok": 1}));
    // Filtering and searching over such records keeps working.
    server
        .get("/api/public/traces?tags=__proto__")
        .expect_json(200);
    let found = common::eventually(std::time::Duration::from_secs(10), || {
        let r = server.get("/api/public/traces?q=traversal");
        let body = r.json();
        if body["data"].as_array().is_some_and(|d| !d.is_empty()) {
            Ok(body)
        } else {
            Err(format!("not searchable yet: {body}"))
        }
    })
    .unwrap();
    assert_eq!(found["data"][0]["id"], trace_id.as_str());
}

#[test]
fn three_megabyte_string_is_handled() {
    let server = Server::start();
    let trace_id = unique_id("big-string");
    let big = "x".repeat(3 * 1024 * 1024);
    let events = [trace_event("evt-big", &trace_id, json!({"input": big}))];
    let resp = post_raw(&server, batch_bytes(&events), Some(&authed()), &[]);
    assert_ne!(resp.status, 413, "3 MB is under the 4.5 MB default limit");
    let stored = assert_handled(&server, &resp, &["evt-big"]);
    if !stored.is_empty() {
        let trace = server
            .get(&format!("/api/public/traces/{}", encode(&trace_id)))
            .expect_json(200);
        assert_eq!(
            trace["input"].as_str().map(str::len),
            Some(big.len()),
            "the 3 MB input must be stored whole"
        );
    }
}

#[test]
fn invalid_utf8_is_handled() {
    let server = Server::start();
    let mut body = format!(
        r#"{{"batch":[{{"id":"evt-utf8","type":"trace-create","timestamp":"{}","body":{{"id":"utf8-trace","name":""#,
        now_iso()
    )
    .into_bytes();
    body.extend_from_slice(b"bad \xff\xfe\xc3 bytes");
    body.extend_from_slice(br#""}}]}"#);
    let resp = post_raw(&server, body, Some(&authed()), &[]);
    let stored = assert_handled(&server, &resp, &["evt-utf8"]);
    if !stored.is_empty() {
        // Whatever was stored must come back as valid UTF-8 JSON.
        server.get("/api/public/traces/utf8-trace").expect_json(200);
    }
}

#[test]
fn negative_usage_is_never_stored_negative() {
    let server = Server::start();
    let trace_id = unique_id("negative");
    let now = now_iso();
    let events = vec![
        trace_event("evt-neg-trace", &trace_id, json!({})),
        json!({"id": "evt-neg-details", "type": "generation-create", "timestamp": now,
               "body": {"id": format!("{trace_id}-a"), "traceId": trace_id, "model": "gpt-4o",
                        "usageDetails": {"input": -5, "output": 3}}}),
        json!({"id": "evt-neg-legacy", "type": "generation-create", "timestamp": now,
               "body": {"id": format!("{trace_id}-b"), "traceId": trace_id, "model": "gpt-4o",
                        "usage": {"input": -5, "output": 3, "unit": "TOKENS"}}}),
    ];
    let resp = server.ingest(events);
    let stored = assert_handled(
        &server,
        &resp,
        &["evt-neg-trace", "evt-neg-details", "evt-neg-legacy"],
    );
    for (event_id, suffix) in [("evt-neg-details", "a"), ("evt-neg-legacy", "b")] {
        if !stored.iter().any(|id| id == event_id) {
            continue;
        }
        let obs = server
            .get(&format!(
                "/api/public/observations/{}",
                encode(&format!("{trace_id}-{suffix}"))
            ))
            .expect_json(200);
        for field in ["usageDetails", "usage", "costDetails"] {
            if let Some(map) = obs[field].as_object() {
                for (key, value) in map {
                    assert!(
                        !value.as_f64().is_some_and(|v| v < 0.0),
                        "{event_id}: `{field}.{key}` stored negative: {}",
                        obs[field]
                    );
                }
            }
        }
        for field in ["calculatedTotalCost", "calculatedInputCost", "promptTokens"] {
            assert!(
                !obs[field].as_f64().is_some_and(|v| v < 0.0),
                "{event_id}: `{field}` negative: {}",
                obs[field]
            );
        }
    }
}

#[test]
fn out_of_range_number_is_handled() {
    let server = Server::start();
    let trace_id = unique_id("huge");
    let body = format!(
        r#"{{"batch":[{{"id":"evt-huge","type":"generation-create","timestamp":"{}","body":{{"id":"{trace_id}-g","traceId":"{trace_id}","model":"gpt-4o","usageDetails":{{"input":1e999,"output":2}},"metadata":{{"x":-1e999}}}}}}]}}"#,
        now_iso()
    );
    let resp = post_raw(&server, body.into_bytes(), Some(&authed()), &[]);
    let stored = assert_handled(&server, &resp, &["evt-huge"]);
    if !stored.is_empty() {
        // If kept, it must read back as valid JSON (no `inf`).
        server
            .get(&format!("/api/public/observations/{trace_id}-g"))
            .expect_json(200);
    }
}
