//! `/metrics` (Prometheus text) and health, served by the real router in-process.

mod common;

use common::in_process::InProcess;

/// Every sample line is `name{labels} value` with a numeric value.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("non-numeric value in {line:?}"));
        let bare = name.split('{').next().unwrap();
        assert!(
            bare.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        out.push((name.to_string(), value));
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "exposition must end with # EOF"
    );
    out
}

fn value(samples: &[(String, f64)], name_prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| n.starts_with(name_prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_count_ingestion_commits_and_requests() {
    let server = InProcess::start();
    let client = reqwest::blocking::Client::new();
    let body = serde_json::json!({"batch": [
        {"id": "e1", "type": "trace-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"id": "t1"}},
        {"id": "e2", "type": "span-create", "timestamp": "2025-01-01T00:00:00Z", "body": {"id": "s1", "traceId": "t1"}},
        {"id": "e3", "type": "span-create", "timestamp": "not a time", "body": {"id": "s2", "traceId": "t1"}},
    ]});
    let resp = client
        .post(format!("{}/api/public/ingestion", server.base))
        .basic_auth("pk-lf-test", Some("sk-lf-test"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 207);
    let resp = client
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    let samples = parse_exposition(&text);
    assert_eq!(
        value(
            &samples,
            r#"sightline_ingested_items_total{source="batch",result="accepted"}"#
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            r#"sightline_ingested_items_total{source="batch",result="rejected"}"#
        ),
        1.0
    );
    assert!(value(&samples, "sightline_commits") >= 1.0);
    assert!(value(&samples, "sightline_commit_duration_seconds_count") >= 1.0);
    assert!(value(&samples, "sightline_disk_bytes") > 0.0);
    assert!(value(&samples, "sightline_resident_memory_bytes") > 0.0);
    // Exposed (and zero) before any record fails to decode (src/search/skip_tests.rs makes it 1).
    assert!(
        samples
            .iter()
            .any(|(n, v)| n == "sightline_index_skipped_records_total" && *v == 0.0),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/public/ingestion""#),
        "request metrics are labelled by route pattern: {text}"
    );
    // Ids in paths never become label values.
    client
        .get(format!("{}/api/public/traces/t1", server.base))
        .basic_auth("pk-lf-test", Some("sk-lf-test"))
        .send()
        .unwrap();
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains(r#"route="/api/public/traces/{id}""#),
        "{text}"
    );
    assert!(!text.contains("/traces/t1"));
}
