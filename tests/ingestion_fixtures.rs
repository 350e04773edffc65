//! Recorded traffic of real clients (`shared/fixtures/`), replayed byte for byte; the read API
//! must then return what each set's manifest says. The fault-injection sets re-send the same
//! batches several times: ingestion must be idempotent.

mod common;

use common::fixtures::{first_difference, read_api_snapshot};
use common::{FixtureSet, ManifestReport, PROJECT_ID, Server, check_manifest};
use serde_json::Value;

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
