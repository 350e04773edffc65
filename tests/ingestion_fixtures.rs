//! Recorded traffic of real clients (`shared/fixtures/`), replayed byte for byte; the read API
//! must then return what each set's manifest says. The fault-injection sets re-send the same
//! batches several times: ingestion must be idempotent.

mod common;

use std::time::Duration;

use common::fixtures::{check_manifest_within, first_difference, read_api_snapshot};
use common::{FixtureSet, ManifestReport, PROJECT_ID, Server, check_manifest};
use serde_json::{Value, json};

/// Replays a set on a fresh server and checks its manifest.
fn replay_and_check(set_name: &str) -> (Server, FixtureSet, ManifestReport) {
    let server = Server::start();
    let set = FixtureSet::load(set_name);
    set.replay(&server);
    let report = check_manifest(&server, &set.manifest);
    (server, set, report)
}

/// Every manifest trace was found, and each observation/score id is unique in the read API
/// although the fixture sent its batches more than once.
fn assert_each_entity_once(server: &Server, set: &FixtureSet, report: &ManifestReport) {
    let expected = set.manifest["traces"].as_array().map_or(0, Vec::len);
    assert_eq!(
        report.traces.len(),
        expected,
        "every manifest trace resolved"
    );
    for trace in &report.traces {
        let body = server
            .get(&format!(
                "/api/public/observations?traceId={}&limit=100",
                common::fixtures::encode(&trace.id)
            ))
            .expect_json(200);
        let ids: Vec<&str> = body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|obs| obs["id"].as_str())
            .collect();
        let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            ids.len(),
            unique.len(),
            "trace {}: duplicate observations {ids:?}",
            trace.id
        );
        let unique_scores: std::collections::BTreeSet<&String> = trace.score_ids.iter().collect();
        assert_eq!(
            unique_scores.len(),
            trace.score_ids.len(),
            "trace {}: duplicate scores {:?}",
            trace.id,
            trace.score_ids
        );
    }
}

/// Replaying the whole set again changes nothing the read API shows (except `updatedAt`).
fn assert_second_replay_changes_nothing(
    server: &Server,
    set: &FixtureSet,
    report: &ManifestReport,
) {
    let before = read_api_snapshot(server, report);
    set.replay(server);
    let after = read_api_snapshot(server, report);
    if let Some(difference) = first_difference(&before, &after, "") {
        panic!(
            "fixture {}: replaying the set a second time changed the read API (ingestion is \
             not idempotent by event/body id); first difference at {difference}",
            set.name
        );
    }
    check_manifest(server, &set.manifest);
}

#[test]
fn langfuse_python_2_60_10() {
    let (server, set, report) = replay_and_check("langfuse-python-2.60.10");
    assert_each_entity_once(&server, &set, &report);
}

#[test]
fn litellm_1_80_17_langfuse() {
    let (server, set, report) = replay_and_check("litellm-1.80.17-langfuse");
    assert_each_entity_once(&server, &set, &report);
}

#[test]
fn litellm_startup_projects_call_returns_the_key_project() {
    // LiteLLM's first request (GET /api/public/projects) reads the project id.
    let server = Server::start();
    let set = FixtureSet::load("litellm-1.80.17-langfuse");
    let request = &set.requests[0];
    assert_eq!(request.path, "/api/public/projects");
    let resp = common::fixtures::send_recorded(&server, request);
    let body = resp.expect_json(200);
    let data = body["data"].as_array().expect("`data` array");
    assert_eq!(data.len(), 1, "exactly the key's project: {body}");
    let project = &data[0];
    assert_eq!(project["id"], PROJECT_ID);
    assert!(project["name"].is_string(), "project name: {project}");
    assert_eq!(project["organization"]["id"], common::ORG_ID);
    assert!(project["organization"]["name"].is_string(), "{project}");
    assert!(
        project["metadata"].is_object(),
        "project metadata: {project}"
    );
}

#[test]
fn partial_errors_set_is_stored_once_despite_resent_batches() {
    let (server, set, report) = replay_and_check("langfuse-python-2.60.10-207-partial-errors");
    assert!(set.fault_injected);
    assert_each_entity_once(&server, &set, &report);
    assert_second_replay_changes_nothing(&server, &set, &report);
}

#[test]
fn retry_503_set_is_stored_once_despite_resent_batch() {
    let (server, set, report) = replay_and_check("langfuse-python-2.60.10-retry-503");
    assert!(set.fault_injected);
    assert_each_entity_once(&server, &set, &report);
    assert_second_replay_changes_nothing(&server, &set, &report);
}

#[test]
fn replaying_a_clean_set_twice_changes_nothing() {
    let (server, set, report) = replay_and_check("langfuse-python-2.60.10");
    assert_second_replay_changes_nothing(&server, &set, &report);
}

#[test]
fn fault_sets_resend_identical_batches() {
    // Guards the premise of the idempotency tests: the fixture really re-sends event ids.
    for name in [
        "langfuse-python-2.60.10-207-partial-errors",
        "langfuse-python-2.60.10-retry-503",
    ] {
        let set = FixtureSet::load(name);
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for request in &set.requests {
            let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
            for event in body["batch"].as_array().expect("batch") {
                *seen
                    .entry(event["id"].as_str().expect("event id").to_owned())
                    .or_default() += 1;
            }
        }
        assert!(
            seen.values().any(|count| *count > 1),
            "{name}: expected re-sent event ids"
        );
    }
}

/// The panic message of `check_manifest` for a manifest that should not match.
fn mismatch_report(server: &Server, manifest: &Value) -> String {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_manifest_within(server, manifest, Duration::ZERO)
    }));
    match outcome {
        Ok(_) => panic!("check_manifest accepted a manifest that does not match the data"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    }
}

/// Guards the checker itself: every kind of mismatch in a manifest is reported, so the passing
/// fixture tests are not vacuous.
#[test]
fn manifest_check_reports_every_kind_of_mismatch() {
    let (server, set, _) = replay_and_check("langfuse-python-2.60.10");
    let mut manifest = set.manifest.clone();
    let trace = &mut manifest["traces"][0];
    trace["name"] = json!("wrong-name");
    trace["tags"]
        .as_array_mut()
        .expect("tags")
        .push(json!("extra"));
    trace["metadata"]["tenant"] = json!("other");
    trace["observation_count"] = json!(8);
    let observations = trace["observations"].as_array_mut().expect("observations");
    for obs in observations.iter_mut() {
        match obs["key"].as_str() {
            Some("tool") => obs["parent"] = json!("root"),
            Some("gen") => {
                obs["usage"]["input"] = json!(121);
                obs["usageDetails"]["bogus"] = json!(1);
                obs["modelParameters"]["temperature"] = json!(0.3);
            }
            Some("event") => obs["level"] = json!("ERROR"),
            Some("bad") => obs["statusMessage"] = json!("another message"),
            _ => {}
        }
    }
    for score in trace["scores"].as_array_mut().expect("scores") {
        match score["name"].as_str() {
            Some("helpfulness") => score["value"] = json!(0.8),
            Some("user-feedback") => score["observation"] = json!("gen"),
            _ => {}
        }
    }
    manifest["traces"][1]["scores"]
        .as_array_mut()
        .expect("scores")
        .push(json!({"name": "never-sent", "value": 1}));
    manifest["session_trace_ids"]
        .as_array_mut()
        .expect("session_trace_ids")
        .push(json!("ghost-trace"));

    let report = mismatch_report(&server, &manifest);
    for expected in [
        "`name` expected \"wrong-name\"",
        "`tags` expected",
        "`metadata.tenant` expected \"other\"",
        "expected 8 observations",
        "`parentObservationId` expected",
        "`usageDetails.input` expected 121",
        "`usageDetails` expected exactly",
        "`modelParameters.temperature` expected 0.3",
        "`level` expected \"ERROR\"",
        "`statusMessage` expected \"another message\"",
        "`value` expected 0.8",
        "`observationId` expected",
        "expected 2 scores",
        "ghost-trace",
    ] {
        assert!(
            report.contains(expected),
            "the checker did not report {expected:?}; its report:\n{report}"
        );
    }
    assert!(!report.starts_with("cost_model"), "{report}");

    // A missing cost alone is reported under its own name.
    let mut manifest = set.manifest.clone();
    for obs in manifest["traces"][0]["observations"]
        .as_array_mut()
        .expect("observations")
    {
        if obs["key"] == "event" {
            obs["cost"] = json!(true);
        }
    }
    let report = mismatch_report(&server, &manifest);
    assert!(
        report.starts_with("cost_model_calculated_cost_is_nonzero")
            && report.contains("observation `event`"),
        "a cost-only mismatch must be reported as such: {report}"
    );

    // A trace that is not there.
    let mut manifest = set.manifest.clone();
    manifest["traces"][1]["id"] = json!("ghost-trace-id");
    let report = mismatch_report(&server, &manifest);
    assert!(
        report.contains("GET /api/public/traces/ghost-trace-id: expected 200, got 404"),
        "{report}"
    );
}
