//! Replaying recorded client traffic (`shared/fixtures/<set>/`) and checking the read API
//! against the set's `manifest.json`.
//!
//! Owns: the fixture file layout (see `shared/fixtures/README.md`) and the manifest semantics.
//! One replayer and one `check_manifest` serve every set, whatever the transport: a request is
//! replayed as recorded bytes with its recorded method, path, query and headers, so an OTLP
//! protobuf or gzip body needs nothing special here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::server::truncate;
use super::{Resp, Server, eventually, shared_dir};

/// Headers that describe the recorder's connection, not the client's request.
const DROPPED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "accept-encoding",
];

/// How long read-back checks may wait for ingested data to become visible.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One recorded HTTP request of a fixture set.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub seq: u64,
    pub meta_file: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Recorded headers in order, minus `DROPPED_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// The client sent the body with `Transfer-Encoding: chunked` (no Content-Length).
    pub chunked: bool,
    pub body: Vec<u8>,
    pub recorded_status: u16,
}

impl RecordedRequest {
    pub fn describe(&self) -> String {
        format!(
            "{} ({} {}{})",
            self.meta_file,
            self.method,
            self.path,
            if self.query.is_empty() {
                String::new()
            } else {
                format!("?{}", self.query)
            }
        )
    }

    /// The recorded `content-encoding`, lower-cased, if any.
    pub fn content_encoding(&self) -> Option<String> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, value)| value.to_ascii_lowercase())
    }

    /// For `POST /api/public/ingestion`: the envelope ids the server must acknowledge
    /// (every event except `sdk-log`, which appears in neither list).
    pub fn ingestion_event_ids(&self) -> Option<Vec<String>> {
        if self.path != "/api/public/ingestion" || self.content_encoding().is_some() {
            return None;
        }
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        let mut ids: Vec<String> = body["batch"]
            .as_array()?
            .iter()
            .filter(|event| event["type"] != "sdk-log")
            .map(|event| event["id"].as_str().unwrap_or("unknown").to_owned())
            .collect();
        ids.sort();
        Some(ids)
    }
}

/// A fixture set: its requests in arrival order and its manifest.
#[derive(Debug, Clone)]
pub struct FixtureSet {
    pub name: String,
    pub dir: PathBuf,
    pub requests: Vec<RecordedRequest>,
    pub manifest: Value,
    /// The recorder injected faults (non-empty `recorder_args`): recorded statuses are not the
    /// statuses a working server gives.
    pub fault_injected: bool,
}

impl FixtureSet {
    /// Loads `shared/fixtures/<name>/`.
    pub fn load(name: &str) -> FixtureSet {
        let dir = shared_dir().join("fixtures").join(name);
        assert!(
            dir.is_dir(),
            "fixture set {name} not found at {} (the repository expects ../shared beside it)",
            dir.display()
        );
        let manifest = read_json(&dir.join("manifest.json"));
        let recorder_args = read_json(&dir.join("recorder-args.json"));
        let fault_injected = recorder_args["recorder_args"]
            .as_array()
            .is_some_and(|args| !args.is_empty());

        let mut requests = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("list fixture dir") {
            let file_name = entry.expect("dir entry").file_name();
            let file_name = file_name.to_string_lossy().into_owned();
            if is_request_metadata(&file_name) {
                requests.push(load_request(&dir, &file_name));
            }
        }
        requests.sort_by_key(|request| request.seq);
        assert!(!requests.is_empty(), "fixture set {name} has no requests");
        for (index, request) in requests.iter().enumerate() {
            assert_eq!(
                request.seq,
                index as u64 + 1,
                "fixture set {name}: request sequence has a gap at {}",
                request.meta_file
            );
        }
        FixtureSet {
            name: name.to_owned(),
            dir,
            requests,
            manifest,
            fault_injected,
        }
    }

    /// The status a working server must give to `request`.
    ///
    /// Without fault injection, the recorder's answer. With it, a recorded 2xx stands; an
    /// injected failure is replaced by the 2xx the recorder gave the same endpoint elsewhere in
    /// the set (the client's successful retry).
    pub fn expected_status(&self, request: &RecordedRequest) -> ExpectedStatus {
        let recorded = request.recorded_status;
        if !self.fault_injected || (200..300).contains(&recorded) {
            return ExpectedStatus::Exactly(recorded);
        }
        self.requests
            .iter()
            .find(|other| {
                other.method == request.method
                    && other.path == request.path
                    && (200..300).contains(&other.recorded_status)
            })
            .map_or(ExpectedStatus::AnySuccess, |other| {
                ExpectedStatus::Exactly(other.recorded_status)
            })
    }

    /// Replays every request in order and asserts each answer (status; for batch ingestion
    /// also that every event was acknowledged as a success and none as an error).
    pub fn replay(&self, server: &Server) {
        for request in &self.requests {
            let resp = send_recorded(server, request);
            let context = format!("fixture {}: {}", self.name, request.describe());
            match self.expected_status(request) {
                ExpectedStatus::Exactly(status) => assert_eq!(
                    resp.status,
                    status,
                    "{context}: expected HTTP {status} (the recorder's answer{}), got {}: {}",
                    if status == request.recorded_status {
                        ""
                    } else {
                        " to the successful retry"
                    },
                    resp.status,
                    truncate(&resp.text(), 2000)
                ),
                ExpectedStatus::AnySuccess => assert!(
                    (200..300).contains(&resp.status),
                    "{context}: expected a 2xx, got {}: {}",
                    resp.status,
                    truncate(&resp.text(), 2000)
                ),
            }
            if let Some(expected_ids) = request.ingestion_event_ids()
                && resp.status == 207
            {
                check_ingestion_answer(&context, &resp, &expected_ids);
            }
        }
    }
}

/// What `FixtureSet::expected_status` demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedStatus {
    Exactly(u16),
    AnySuccess,
}

/// Sends one recorded request byte for byte: recorded method, path, query, headers (minus the
/// connection-level ones) and body; chunked when the client sent it chunked.
pub fn send_recorded(server: &Server, request: &RecordedRequest) -> Resp {
    let mut url = server.url(&request.path);
    if !request.query.is_empty() {
        url.push('?');
        url.push_str(&request.query);
    }
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .unwrap_or_else(|_| panic!("{}: bad method", request.describe()));
    // A plain client: the recorded headers carry the client's own Authorization.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build replay client");
    let mut builder = client.request(method, url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !request.body.is_empty() {
        builder = if request.chunked {
            // A reader body of unknown length goes out with Transfer-Encoding: chunked.
            builder.body(reqwest::blocking::Body::new(std::io::Cursor::new(
                request.body.clone(),
            )))
        } else {
            builder.body(request.body.clone())
        };
    }
    server.send(&request.describe(), builder)
}

/// A 207 answer must list every envelope id as a 201 success and report no errors: the events
/// in the fixtures are all valid.
fn check_ingestion_answer(context: &str, resp: &Resp, expected_ids: &[String]) {
    let body = resp.json();
    let errors = body["errors"].as_array().unwrap_or_else(|| {
        panic!("{context}: 207 body has no `errors` array: {body}");
    });
    assert!(
        errors.is_empty(),
        "{context}: the server reported per-event errors for valid events: {}",
        Value::Array(errors.clone())
    );
    let successes = body["successes"].as_array().unwrap_or_else(|| {
        panic!("{context}: 207 body has no `successes` array: {body}");
    });
    let mut got: Vec<String> = successes
        .iter()
        .map(|entry| {
            assert_eq!(
                entry["status"], 201,
                "{context}: success entry without status 201: {entry}"
            );
            entry["id"].as_str().unwrap_or("<no id>").to_owned()
        })
        .collect();
    got.sort();
    assert_eq!(
        got, expected_ids,
        "{context}: `successes` must list exactly the batch's envelope ids"
    );
}

fn is_request_metadata(file_name: &str) -> bool {
    let bytes = file_name.as_bytes();
    file_name.len() > 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b'-'
        && file_name.ends_with(".json")
        && !file_name.contains(".body.")
        && !file_name.ends_with(".decoded.json")
}

fn load_request(dir: &Path, meta_file: &str) -> RecordedRequest {
    let meta = read_json(&dir.join(meta_file));
    let field = |name: &str| -> String {
        meta[name]
            .as_str()
            .unwrap_or_else(|| panic!("{meta_file}: missing string field `{name}`"))
            .to_owned()
    };
    let mut headers = Vec::new();
    let mut chunked = false;
    for pair in meta["headers"].as_array().expect("headers array") {
        let name = pair[0].as_str().expect("header name").to_owned();
        let value = pair[1].as_str().expect("header value").to_owned();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            chunked = true;
        }
        if DROPPED_HEADERS
            .iter()
            .any(|dropped| name.eq_ignore_ascii_case(dropped))
        {
            continue;
        }
        headers.push((name, value));
    }
    let body = match meta["body_file"].as_str() {
        Some(body_file) => std::fs::read(dir.join(body_file))
            .unwrap_or_else(|err| panic!("{meta_file}: read {body_file}: {err}")),
        None => Vec::new(),
    };
    if let Some(size) = meta["body_size"].as_u64() {
        assert_eq!(
            body.len() as u64,
            size,
            "{meta_file}: body file size differs from the recorded body_size"
        );
    }
    RecordedRequest {
        seq: meta["seq"].as_u64().expect("seq"),
        meta_file: meta_file.to_owned(),
        method: field("method"),
        path: field("path"),
        query: meta["query"].as_str().unwrap_or("").to_owned(),
        headers,
        chunked,
        body,
        recorded_status: meta["response"]["status"]
            .as_u64()
            .and_then(|status| u16::try_from(status).ok())
            .expect("response.status"),
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Manifest check
// ---------------------------------------------------------------------------------------------

/// What `check_manifest` resolved: real trace ids and, per trace, observation key → id.
#[derive(Debug, Clone, Default)]
pub struct ManifestReport {
    pub traces: Vec<ResolvedTrace>,
    pub session_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ResolvedTrace {
    pub id: String,
    pub observation_ids: BTreeMap<String, String>,
    pub score_ids: Vec<String>,
}

/// Checks the read API against a manifest (semantics in `shared/fixtures/README.md`), retrying
/// for a short bounded time, then fails with every mismatch listed.
///
/// Missing calculated costs (`cost: true`) are reported by a separate, explicitly named
/// assertion after all other checks have passed, so a failure that only means "the cost model
/// has not landed" is obvious.
pub fn check_manifest(server: &Server, manifest: &Value) -> ManifestReport {
    check_manifest_within(server, manifest, READ_BACK_TIMEOUT)
}

/// `check_manifest` with an explicit read-back timeout.
pub fn check_manifest_within(
    server: &Server,
    manifest: &Value,
    timeout: Duration,
) -> ManifestReport {
    let outcome = eventually(timeout, || {
        let mut check = Check::default();
        let report = check_manifest_once(server, manifest, &mut check);
        if check.failures.is_empty() && check.cost_failures.is_empty() {
            Ok(report)
        } else {
            Err(check.render())
        }
    });
    outcome.unwrap_or_else(|rendered| panic!("{rendered}"))
}

/// Mismatches found by one pass over a manifest.
#[derive(Debug, Default)]
struct Check {
    failures: Vec<String>,
    cost_failures: Vec<String>,
}

impl Check {
    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    fn render(&self) -> String {
        let client = "read API does not match the fixture manifest";
        if !self.failures.is_empty() {
            let mut text = format!("{client}: {} mismatch(es):\n", self.failures.len());
            for failure in &self.failures {
                text.push_str("  - ");
                text.push_str(failure);
                text.push('\n');
            }
            if !self.cost_failures.is_empty() {
                text.push_str(&format!(
                    "(and {} cost-model mismatch(es), see cost_model_calculated_cost_is_nonzero)\n",
                    self.cost_failures.len()
                ));
            }
            text
        } else {
            let mut text = String::from(
                "cost_model_calculated_cost_is_nonzero: everything else matches the manifest, \
                 but observations marked `cost: true` have no non-zero calculated cost \
                 (the cost model computes it from the model price table):\n",
            );
            for failure in &self.cost_failures {
                text.push_str("  - ");
                text.push_str(failure);
                text.push('\n');
            }
            text
        }
    }
}

fn check_manifest_once(server: &Server, manifest: &Value, check: &mut Check) -> ManifestReport {
    let mut report = ManifestReport::default();
    let traces = manifest["traces"].as_array().cloned().unwrap_or_default();
    for expected in &traces {
        if let Some(resolved) = check_trace(server, expected, check) {
            report.traces.push(resolved);
        }
    }
    if let Some(session_id) = manifest["session_id"].as_str() {
        report.session_ids.push(session_id.to_owned());
        check_session(server, manifest, session_id, &traces, &report, check);
    }
    report
}

/// Finds the trace id: the manifest's, or by `lookup` (sessionId + name) when the client chose
/// a random one.
fn resolve_trace_id(server: &Server, expected: &Value, check: &mut Check) -> Option<String> {
    if let Some(id) = expected["id"].as_str() {
        return Some(id.to_owned());
    }
    let lookup = &expected["lookup"];
    let (Some(session_id), Some(name)) = (lookup["sessionId"].as_str(), lookup["name"].as_str())
    else {
        check.fail(format!(
            "manifest trace has neither `id` nor `lookup`: {expected}"
        ));
        return None;
    };
    let path = format!(
        "/api/public/traces?sessionId={}&name={}&limit=100",
        encode(session_id),
        encode(name)
    );
    let resp = server.get(&path);
    if resp.status != 200 {
        check.fail(format!(
            "GET {path}: expected 200, got {} {}",
            resp.status,
            truncate(&resp.text(), 500)
        ));
        return None;
    }
    let body = resp.json();
    let matches: Vec<&Value> = body["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|trace| trace["sessionId"] == session_id && trace["name"] == name)
                .collect()
        })
        .unwrap_or_default();
    match matches.as_slice() {
        [only] => only["id"].as_str().map(str::to_owned),
        _ => {
            check.fail(format!(
                "GET {path}: expected exactly one trace named {name:?} in session \
                 {session_id:?}, found {}",
                matches.len()
            ));
            None
        }
    }
}

fn check_trace(server: &Server, expected: &Value, check: &mut Check) -> Option<ResolvedTrace> {
    let trace_id = resolve_trace_id(server, expected, check)?;
    let path = format!("/api/public/traces/{}", encode(&trace_id));
    let resp = server.get(&path);
    if resp.status != 200 {
        check.fail(format!(
            "GET {path}: expected 200, got {} {}",
            resp.status,
            truncate(&resp.text(), 500)
        ));
        return None;
    }
    let trace = resp.json();
    let ctx = format!("trace {trace_id}");

    // Fields Langfuse's generated clients require (missing → their models fail to parse).
    for (field, kind) in [
        ("id", "string"),
        ("timestamp", "string"),
        ("tags", "array"),
        ("public", "bool"),
        ("environment", "string"),
        ("htmlPath", "string"),
        ("latency", "number"),
        ("totalCost", "number"),
        ("observations", "array"),
        ("scores", "array"),
    ] {
        if !has_kind(&trace[field], kind) {
            check.fail(format!(
                "{ctx}: GET {path} field `{field}` must be a {kind}, got {}",
                trace[field]
            ));
        }
    }
    if trace["id"] != trace_id.as_str() {
        check.fail(format!("{ctx}: `id` is {}", trace["id"]));
    }
    for field in [
        "name",
        "userId",
        "sessionId",
        "release",
        "version",
        "environment",
    ] {
        if let Some(want) = expected.get(field)
            && trace[field] != *want
        {
            check.fail(format!(
                "{ctx}: `{field}` expected {want}, got {}",
                trace[field]
            ));
        }
    }
    if let Some(want) = expected["tags"].as_array() {
        // Compared sorted, duplicates included: tags are a set union in Langfuse.
        let mut want: Vec<String> = want.iter().map(Value::to_string).collect();
        want.sort();
        let mut got: Vec<String> = trace["tags"]
            .as_array()
            .map(|tags| tags.iter().map(Value::to_string).collect())
            .unwrap_or_default();
        got.sort();
        if want != got {
            check.fail(format!(
                "{ctx}: `tags` expected {:?}, got {}",
                want, trace["tags"]
            ));
        }
    }
    if let Some(want) = expected["metadata"].as_object() {
        for (key, value) in want {
            if trace["metadata"][key] != *value {
                check.fail(format!(
                    "{ctx}: `metadata.{key}` expected {value}, got {} (metadata: {})",
                    trace["metadata"][key],
                    truncate(&trace["metadata"].to_string(), 300)
                ));
            }
        }
    }

    let embedded: Vec<Value> = trace["observations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let observation_ids =
        check_observations(server, &ctx, &trace_id, &trace, expected, &embedded, check);
    let score_ids = check_scores(
        server,
        &ctx,
        &trace_id,
        &trace,
        expected,
        &observation_ids,
        check,
    );

    let wants_cost = expected["observations"]
        .as_array()
        .is_some_and(|list| list.iter().any(|obs| obs["cost"] == true));
    if wants_cost && !trace["totalCost"].as_f64().is_some_and(|cost| cost > 0.0) {
        check.cost_failures.push(format!(
            "{ctx}: trace `totalCost` expected > 0, got {}",
            trace["totalCost"]
        ));
    }

    Some(ResolvedTrace {
        id: trace_id,
        observation_ids,
        score_ids,
    })
}

/// Checks the trace's observations; returns manifest key → observation id.
fn check_observations(
    server: &Server,
    ctx: &str,
    trace_id: &str,
    trace: &Value,
    expected: &Value,
    embedded: &[Value],
    check: &mut Check,
) -> BTreeMap<String, String> {
    let mut resolved = BTreeMap::new();
    if embedded.iter().any(|obs| !obs.is_object()) {
        check.fail(format!(
            "{ctx}: `observations` in GET /api/public/traces/{{id}} must be full objects, got {}",
            truncate(&trace["observations"].to_string(), 300)
        ));
        return resolved;
    }
    let embedded_ids: Vec<&str> = embedded
        .iter()
        .filter_map(|obs| obs["id"].as_str())
        .collect();
    let unique: BTreeSet<&str> = embedded_ids.iter().copied().collect();
    if unique.len() != embedded.len() {
        check.fail(format!(
            "{ctx}: observation ids in the trace are not unique (or missing): {embedded_ids:?}"
        ));
    }
    if let Some(count) = expected["observation_count"].as_u64()
        && embedded.len() as u64 != count
    {
        check.fail(format!(
            "{ctx}: expected {count} observations, the trace has {}: {}",
            embedded.len(),
            summarize_observations(embedded)
        ));
    }

    // The list endpoint must agree with the trace detail.
    let list_path = format!(
        "/api/public/observations?traceId={}&limit=100",
        encode(trace_id)
    );
    let list = server.get(&list_path);
    if list.status != 200 {
        check.fail(format!(
            "GET {list_path}: expected 200, got {} {}",
            list.status,
            truncate(&list.text(), 500)
        ));
    } else {
        let body = list.json();
        let listed: BTreeSet<&str> = body["data"]
            .as_array()
            .map(|items| items.iter().filter_map(|obs| obs["id"].as_str()).collect())
            .unwrap_or_default();
        if listed != unique {
            check.fail(format!(
                "GET {list_path}: ids {listed:?} differ from the trace's {unique:?}"
            ));
        }
        if body["meta"]["totalItems"].as_u64() != Some(unique.len() as u64) {
            check.fail(format!(
                "GET {list_path}: `meta.totalItems` expected {}, got {}",
                unique.len(),
                body["meta"]
            ));
        }
    }

    let wanted = expected["observations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Pass 1: match each manifest observation by name + type (+ id when given).
    for want in &wanted {
        let key = want["key"].as_str().unwrap_or("?").to_owned();
        let mut candidates: Vec<&Value> = embedded
            .iter()
            .filter(|obs| obs["name"] == want["name"] && obs["type"] == want["type"])
            .collect();
        if let Some(id) = want["id"].as_str() {
            candidates.retain(|obs| obs["id"] == id);
        }
        if candidates.len() > 1 && want["parent"].is_null() {
            candidates.retain(|obs| is_root(obs, &unique));
        }
        match candidates.as_slice() {
            [only] => {
                resolved.insert(key, only["id"].as_str().unwrap_or_default().to_owned());
            }
            [] => check.fail(format!(
                "{ctx}: no observation named {} of type {}{} (present: {})",
                want["name"],
                want["type"],
                want["id"]
                    .as_str()
                    .map(|id| format!(" with id {id}"))
                    .unwrap_or_default(),
                summarize_observations(embedded)
            )),
            many => check.fail(format!(
                "{ctx}: {} observations match name {} type {}; cannot tell which is `{key}`",
                many.len(),
                want["name"],
                want["type"]
            )),
        }
    }

    // Pass 2: field checks, on the trace's embedded object and on GET /observations/{id}.
    for want in &wanted {
        let key = want["key"].as_str().unwrap_or("?");
        let Some(id) = resolved.get(key) else {
            continue;
        };
        let obs_ctx = format!("{ctx} observation `{key}` ({id})");
        if let Some(obs) = embedded.iter().find(|obs| obs["id"] == id.as_str()) {
            check_observation_fields(
                &format!("{obs_ctx} in GET /api/public/traces/{{id}}"),
                trace_id,
                obs,
                want,
                &resolved,
                &unique,
                check,
            );
        }
        let path = format!("/api/public/observations/{}", encode(id));
        let resp = server.get(&path);
        if resp.status != 200 {
            check.fail(format!(
                "{obs_ctx}: GET {path} expected 200, got {} {}",
                resp.status,
                truncate(&resp.text(), 500)
            ));
            continue;
        }
        let single = resp.json();
        check_observation_fields(
            &format!("{obs_ctx} in GET {path}"),
            trace_id,
            &single,
            want,
            &resolved,
            &unique,
            check,
        );
    }
    resolved
}

#[allow(clippy::too_many_arguments)]
fn check_observation_fields(
    ctx: &str,
    trace_id: &str,
    obs: &Value,
    want: &Value,
    resolved: &BTreeMap<String, String>,
    trace_observation_ids: &BTreeSet<&str>,
    check: &mut Check,
) {
    // Required by the generated clients' Observation model.
    for (field, kind) in [
        ("id", "string"),
        ("type", "string"),
        ("startTime", "string"),
        ("level", "string"),
    ] {
        if !has_kind(&obs[field], kind) {
            check.fail(format!(
                "{ctx}: field `{field}` must be a {kind}, got {}",
                obs[field]
            ));
        }
    }
    if obs["traceId"] != trace_id {
        check.fail(format!(
            "{ctx}: `traceId` expected {trace_id:?}, got {}",
            obs["traceId"]
        ));
    }
    match &want["parent"] {
        Value::Null => {
            if !is_root(obs, trace_observation_ids) {
                check.fail(format!(
                    "{ctx}: expected a root (parentObservationId null or not an observation of \
                     the trace), got parentObservationId {}",
                    obs["parentObservationId"]
                ));
            }
        }
        Value::String(parent_key) => match resolved.get(parent_key) {
            Some(parent_id) if obs["parentObservationId"] == parent_id.as_str() => {}
            Some(parent_id) => check.fail(format!(
                "{ctx}: `parentObservationId` expected {parent_id:?} (`{parent_key}`), got {}",
                obs["parentObservationId"]
            )),
            None => check.fail(format!(
                "{ctx}: parent `{parent_key}` was not found, cannot check parentObservationId"
            )),
        },
        other => check.fail(format!("{ctx}: manifest `parent` is odd: {other}")),
    }
    if let Some(model) = want.get("model")
        && obs["model"] != *model
    {
        check.fail(format!(
            "{ctx}: `model` expected {model}, got {}",
            obs["model"]
        ));
    }
    if let Some(params) = want["modelParameters"].as_object() {
        for (name, value) in params {
            let got = &obs["modelParameters"][name];
            if !same_parameter(value, got) {
                check.fail(format!(
                    "{ctx}: `modelParameters.{name}` expected {value}, got {got} \
                     (modelParameters: {})",
                    obs["modelParameters"]
                ));
            }
        }
    }
    if let Some(usage) = want["usage"].as_object() {
        check_usage(ctx, obs, usage, check);
    }
    if let Some(details) = want["usageDetails"].as_object() {
        check_usage_details(ctx, obs, details, check);
    }
    if want["completionStartTime"] == true
        && !obs["completionStartTime"]
            .as_str()
            .is_some_and(looks_like_iso_datetime)
    {
        check.fail(format!(
            "{ctx}: `completionStartTime` expected an ISO datetime, got {}",
            obs["completionStartTime"]
        ));
    }
    if let Some(level) = want.get("level")
        && obs["level"] != *level
    {
        check.fail(format!(
            "{ctx}: `level` expected {level}, got {}",
            obs["level"]
        ));
    }
    if let Some(message) = want.get("statusMessage")
        && obs["statusMessage"] != *message
    {
        check.fail(format!(
            "{ctx}: `statusMessage` expected {message}, got {}",
            obs["statusMessage"]
        ));
    }
    if let Some(fragment) = want["statusMessageContains"].as_str()
        && !obs["statusMessage"]
            .as_str()
            .is_some_and(|message| message.contains(fragment))
    {
        check.fail(format!(
            "{ctx}: `statusMessage` expected to contain {fragment:?}, got {}",
            obs["statusMessage"]
        ));
    }
    if want["cost"] == true
        && !obs["calculatedTotalCost"]
            .as_f64()
            .is_some_and(|cost| cost > 0.0)
    {
        check.cost_failures.push(format!(
            "{ctx}: `calculatedTotalCost` expected > 0 for model {}, got {} (costDetails {})",
            obs["model"], obs["calculatedTotalCost"], obs["costDetails"]
        ));
    }
}

/// Manifest `usage` = input/output counts. They must show in `usageDetails.input/output` (what
/// the client reported) and in the legacy `usage` object, whose `input`/`output` are the sums
/// of the `usageDetails` keys containing "input"/"output" (spec 5.3).
fn check_usage(ctx: &str, obs: &Value, usage: &serde_json::Map<String, Value>, check: &mut Check) {
    let details = obs["usageDetails"].as_object();
    for (kind, want) in usage {
        let got = details.and_then(|details| details.get(kind));
        if !got.is_some_and(|got| same_number(want, got)) {
            check.fail(format!(
                "{ctx}: `usageDetails.{kind}` expected {want}, got {} (usageDetails: {})",
                got.unwrap_or(&Value::Null),
                obs["usageDetails"]
            ));
        }
        let derived: f64 = details
            .map(|details| {
                details
                    .iter()
                    .filter(|(key, _)| key.contains(kind.as_str()))
                    .filter_map(|(_, value)| value.as_f64())
                    .sum()
            })
            .unwrap_or(0.0);
        let got = &obs["usage"][kind];
        if got.as_f64() != Some(derived) {
            check.fail(format!(
                "{ctx}: legacy `usage.{kind}` expected {derived} (sum of usageDetails keys \
                 containing {kind:?}), got {got} (usage: {})",
                obs["usage"]
            ));
        }
    }
}

/// Manifest `usageDetails` = the exact keys. The only extra key allowed is the derived `total`
/// (Langfuse adds `total` = sum of all keys when the client sent none, spec 6.3).
fn check_usage_details(
    ctx: &str,
    obs: &Value,
    want: &serde_json::Map<String, Value>,
    check: &mut Check,
) {
    let Some(got) = obs["usageDetails"].as_object() else {
        check.fail(format!(
            "{ctx}: `usageDetails` expected {}, got {}",
            Value::Object(want.clone()),
            obs["usageDetails"]
        ));
        return;
    };
    let want_keys: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    let got_keys: BTreeSet<&str> = got
        .keys()
        .map(String::as_str)
        .filter(|key| *key != "total" || want_keys.contains("total"))
        .collect();
    let values_match = want
        .iter()
        .all(|(key, value)| got.get(key).is_some_and(|got| same_number(value, got)));
    if want_keys != got_keys || !values_match {
        check.fail(format!(
            "{ctx}: `usageDetails` expected exactly {} (plus a derived `total`), got {}",
            Value::Object(want.clone()),
            obs["usageDetails"]
        ));
    }
    if !want_keys.contains("total")
        && let Some(total) = got.get("total")
    {
        let sum: f64 = want.values().filter_map(Value::as_f64).sum();
        if total.as_f64() != Some(sum) {
            check.fail(format!(
                "{ctx}: derived `usageDetails.total` expected {sum} (sum of the reported keys), \
                 got {total}"
            ));
        }
    }
}

fn check_scores(
    server: &Server,
    ctx: &str,
    trace_id: &str,
    trace: &Value,
    expected: &Value,
    observation_ids: &BTreeMap<String, String>,
    check: &mut Check,
) -> Vec<String> {
    let Some(wanted) = expected["scores"].as_array() else {
        return Vec::new();
    };
    let path = format!(
        "/api/public/v2/scores?traceId={}&limit=100",
        encode(trace_id)
    );
    let resp = server.get(&path);
    if resp.status != 200 {
        check.fail(format!(
            "GET {path}: expected 200, got {} {}",
            resp.status,
            truncate(&resp.text(), 500)
        ));
        return Vec::new();
    }
    let body = resp.json();
    let scores: Vec<Value> = body["data"].as_array().cloned().unwrap_or_default();
    if scores.len() != wanted.len() {
        check.fail(format!(
            "GET {path}: expected {} scores, got {}: {}",
            wanted.len(),
            scores.len(),
            truncate(&Value::Array(scores.clone()).to_string(), 800)
        ));
    }
    let embedded = trace["scores"].as_array().map_or(0, Vec::len);
    if embedded != wanted.len() {
        check.fail(format!(
            "{ctx}: trace detail `scores` expected {} score objects, got {}",
            wanted.len(),
            truncate(&trace["scores"].to_string(), 800)
        ));
    }
    if trace["scores"]
        .as_array()
        .is_some_and(|list| list.iter().any(|score| !score.is_object()))
    {
        check.fail(format!(
            "{ctx}: trace detail `scores` must be objects, got {}",
            truncate(&trace["scores"].to_string(), 300)
        ));
    }
    let ids: Vec<String> = scores
        .iter()
        .filter_map(|score| score["id"].as_str().map(str::to_owned))
        .collect();
    if ids.iter().collect::<BTreeSet<_>>().len() != scores.len() {
        check.fail(format!(
            "GET {path}: score ids not unique or missing: {ids:?}"
        ));
    }

    for want in wanted {
        let name = &want["name"];
        let matching: Vec<&Value> = scores
            .iter()
            .filter(|score| score["name"] == *name)
            .collect();
        let [score] = matching.as_slice() else {
            check.fail(format!(
                "{ctx}: expected one score named {name}, found {}",
                matching.len()
            ));
            continue;
        };
        let score_ctx = format!("{ctx} score {name}");
        if score["traceId"] != trace_id {
            check.fail(format!("{score_ctx}: `traceId` is {}", score["traceId"]));
        }
        if let Some(data_type) = want.get("dataType")
            && score["dataType"] != *data_type
        {
            check.fail(format!(
                "{score_ctx}: `dataType` expected {data_type}, got {}",
                score["dataType"]
            ));
        }
        if let Some(value) = want.get("value")
            && !same_number(value, &score["value"])
        {
            check.fail(format!(
                "{score_ctx}: `value` expected {value}, got {}",
                score["value"]
            ));
        }
        if let Some(string_value) = want.get("stringValue")
            && score["stringValue"] != *string_value
        {
            check.fail(format!(
                "{score_ctx}: `stringValue` expected {string_value}, got {}",
                score["stringValue"]
            ));
        }
        match want["observation"].as_str() {
            Some(key) => match observation_ids.get(key) {
                Some(obs_id) if score["observationId"] == obs_id.as_str() => {}
                Some(obs_id) => check.fail(format!(
                    "{score_ctx}: `observationId` expected {obs_id:?} (`{key}`), got {}",
                    score["observationId"]
                )),
                None => check.fail(format!(
                    "{score_ctx}: observation `{key}` not found, cannot check observationId"
                )),
            },
            None => {
                if !score["observationId"].is_null() {
                    check.fail(format!(
                        "{score_ctx}: a trace-level score, but `observationId` is {}",
                        score["observationId"]
                    ));
                }
            }
        }
    }
    ids
}

fn check_session(
    server: &Server,
    manifest: &Value,
    session_id: &str,
    traces: &[Value],
    report: &ManifestReport,
    check: &mut Check,
) {
    // Which trace ids the session must hold: the manifest's list, else those we resolved.
    let listed: BTreeSet<String> = manifest["session_trace_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let expected_ids: BTreeSet<String> = if listed.is_empty() {
        traces
            .iter()
            .zip(&report.traces)
            .filter(|(trace, _)| trace["sessionId"] == session_id)
            .map(|(_, resolved)| resolved.id.clone())
            .collect()
    } else {
        listed
    };
    let expected_count = manifest["session_trace_count"]
        .as_u64()
        .unwrap_or(expected_ids.len() as u64);

    let path = format!("/api/public/sessions/{}", encode(session_id));
    let resp = server.get(&path);
    if resp.status != 200 {
        check.fail(format!(
            "GET {path}: expected 200, got {} {}",
            resp.status,
            truncate(&resp.text(), 500)
        ));
    } else {
        let session = resp.json();
        if session["id"] != session_id {
            check.fail(format!("GET {path}: `id` is {}", session["id"]));
        }
        let got: BTreeSet<String> = session["traces"]
            .as_array()
            .map(|traces| {
                traces
                    .iter()
                    .filter_map(|trace| trace["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let count = session["traces"].as_array().map_or(0, Vec::len) as u64;
        if count != expected_count || !expected_ids.is_subset(&got) {
            check.fail(format!(
                "GET {path}: expected {expected_count} traces {expected_ids:?}, got {got:?} \
                 ({count} entries)"
            ));
        }
    }

    let list_path = format!(
        "/api/public/traces?sessionId={}&limit=100",
        encode(session_id)
    );
    let resp = server.get(&list_path);
    if resp.status != 200 {
        check.fail(format!(
            "GET {list_path}: expected 200, got {} {}",
            resp.status,
            truncate(&resp.text(), 500)
        ));
        return;
    }
    let body = resp.json();
    let items = body["data"].as_array().cloned().unwrap_or_default();
    let got: BTreeSet<String> = items
        .iter()
        .filter_map(|trace| trace["id"].as_str().map(str::to_owned))
        .collect();
    if items.len() as u64 != expected_count || !expected_ids.is_subset(&got) {
        check.fail(format!(
            "GET {list_path}: expected {expected_count} traces {expected_ids:?}, got {got:?}"
        ));
    }
    if body["meta"]["totalItems"].as_u64() != Some(expected_count) {
        check.fail(format!(
            "GET {list_path}: `meta.totalItems` expected {expected_count}, got {}",
            body["meta"]
        ));
    }
    if items.iter().any(|trace| trace["sessionId"] != session_id) {
        check.fail(format!(
            "GET {list_path}: returned traces of another session"
        ));
    }

    // Filters by name and userId must find each trace too.
    for trace in traces {
        let (Some(name), Some(user_id)) = (trace["name"].as_str(), trace["userId"].as_str()) else {
            continue;
        };
        let path = format!(
            "/api/public/traces?name={}&userId={}&limit=100",
            encode(name),
            encode(user_id)
        );
        let resp = server.get(&path);
        if resp.status != 200 {
            check.fail(format!("GET {path}: expected 200, got {}", resp.status));
            continue;
        }
        let body = resp.json();
        let items = body["data"].as_array().cloned().unwrap_or_default();
        if items.is_empty()
            || items
                .iter()
                .any(|item| item["name"] != name || item["userId"] != user_id)
        {
            check.fail(format!(
                "GET {path}: expected only traces named {name:?} of user {user_id:?}, got {}",
                truncate(&Value::Array(items).to_string(), 500)
            ));
        }
    }
}

/// `parent: null` in a manifest: no parent, or a parent id that is not an observation of the
/// trace (a root started with an explicit trace context keeps its dangling parent id).
fn is_root(obs: &Value, trace_observation_ids: &BTreeSet<&str>) -> bool {
    match obs["parentObservationId"].as_str() {
        None => true,
        Some(parent) => !trace_observation_ids.contains(parent),
    }
}

fn summarize_observations(observations: &[Value]) -> String {
    let parts: Vec<String> = observations
        .iter()
        .map(|obs| format!("{}/{}", obs["name"], obs["type"]))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn has_kind(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "array" => value.is_array(),
        "bool" => value.is_boolean(),
        "number" => value.is_number(),
        "object" => value.is_object(),
        _ => unreachable!("unknown kind {kind}"),
    }
}

/// Numbers compare by value (`1` == `1.0`).
fn same_number(want: &Value, got: &Value) -> bool {
    match (want.as_f64(), got.as_f64()) {
        (Some(want), Some(got)) => (want - got).abs() <= 1e-9 * want.abs().max(1.0),
        _ => want == got,
    }
}

/// Model parameters: the 2.x SDK sends floats as strings (`"0.2"`), so a number in the
/// manifest also matches the same number written as a string.
fn same_parameter(want: &Value, got: &Value) -> bool {
    if same_number(want, got) {
        return true;
    }
    match (want.as_f64(), got.as_str()) {
        (Some(want), Some(text)) => text
            .trim()
            .parse::<f64>()
            .is_ok_and(|got| same_number(&json!(want), &json!(got))),
        _ => false,
    }
}

fn looks_like_iso_datetime(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.is_ascii()
        && text.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && (text.ends_with('Z') || text[19..].contains('+') || text[19..].contains('-'))
}

/// Percent-encodes a query or path component (RFC 3986 unreserved characters pass).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Snapshots for idempotency checks
// ---------------------------------------------------------------------------------------------

/// Everything the read API says about the traces of a report, with `updatedAt` removed.
pub fn read_api_snapshot(server: &Server, report: &ManifestReport) -> Value {
    let mut snapshot = serde_json::Map::new();
    let mut take = |path: String| {
        let resp = server.get(&path);
        let mut body = resp.expect_json(200);
        strip_key(&mut body, "updatedAt");
        snapshot.insert(path, body);
    };
    for trace in &report.traces {
        let id = encode(&trace.id);
        take(format!("/api/public/traces/{id}"));
        take(format!("/api/public/observations?traceId={id}&limit=100"));
        take(format!("/api/public/v2/scores?traceId={id}&limit=100"));
        for obs_id in trace.observation_ids.values() {
            take(format!("/api/public/observations/{}", encode(obs_id)));
        }
    }
    for session_id in &report.session_ids {
        let id = encode(session_id);
        take(format!("/api/public/sessions/{id}"));
        take(format!("/api/public/traces?sessionId={id}&limit=100"));
    }
    Value::Object(snapshot)
}

fn strip_key(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|child| strip_key(child, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|child| strip_key(child, key)),
        _ => {}
    }
}

/// The first place where two JSON values differ, as a JSON-pointer-ish path.
pub fn first_difference(left: &Value, right: &Value, path: &str) -> Option<String> {
    match (left, right) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                let child = format!("{path}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => first_difference(x, y, &child),
                    (x, y) => Some(format!("{child}: {x:?} vs {y:?}")),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(index, (x, y))| first_difference(x, y, &format!("{path}/{index}"))),
        _ if left == right => None,
        _ => Some(format!(
            "{path}: {} vs {}",
            truncate(&left.to_string(), 300),
            truncate(&right.to_string(), 300)
        )),
    }
}
