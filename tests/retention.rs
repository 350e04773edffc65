//! Retention end to end: traces older than a project's age go with their observations, scores,
//! search hits, rollup contributions, emptied sessions and change-log entries, while everything
//! newer stays; per-project overrides; the disk cap deletes the oldest first and compaction
//! shrinks the file; ingestion goes on during a run. In-process against the real router (the
//! tests need the store handle to measure and to check rollups), plus one run of the real
//! binary configured by environment, where the background task does the work.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::in_process::InProcess;
use common::{Server, eventually};
use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use sightline::background::StopSignal;
use sightline::config;
use sightline::retention::{Retention, RunReport};
use sightline::store::{Compaction, Tally, WriteOp};
use sightline::time::Timestamp;

const PROJECT: &str = "proj";
const KEYS: (&str, &str) = ("pk-lf-test", "sk-lf-test");
const DAY_MICROS: i64 = 86_400_000_000;
const HOUR_MICROS: i64 = 3_600_000_000;

struct Api {
    server: InProcess,
    http: Client,
}

impl Api {
    fn new() -> Api {
        Api {
            server: InProcess::start(),
            http: Client::new(),
        }
    }

    fn send_as(
        &self,
        keys: (&str, &str),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.server.send_as(keys, method, path, body)
    }

    fn get_as(&self, keys: (&str, &str), path: &str) -> Value {
        let (status, body) = self.send_as(keys, Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn get(&self, path: &str) -> Value {
        self.get_as(KEYS, path)
    }

    fn status(&self, path: &str) -> u16 {
        self.send_as(KEYS, Method::GET, path, None).0
    }

    fn ingest_as(&self, keys: (&str, &str), batch: Vec<Value>) {
        for chunk in batch.chunks(100) {
            let (status, body) = self.send_as(
                keys,
                Method::POST,
                "/api/public/ingestion",
                Some(json!({ "batch": chunk })),
            );
            assert_eq!(status, 207, "{body}");
            assert_eq!(body["errors"], json!([]), "{body}");
        }
    }

    fn ingest(&self, batch: Vec<Value>) {
        self.ingest_as(KEYS, batch);
    }

    /// Every trace id the traces list shows.
    fn trace_ids_as(&self, keys: (&str, &str)) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for page in 1.. {
            let body = self.get_as(keys, &format!("/api/public/traces?limit=100&page={page}"));
            let data = body["data"].as_array().unwrap();
            if data.is_empty() {
                break;
            }
            out.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        }
        out
    }

    fn trace_ids(&self) -> BTreeSet<String> {
        self.trace_ids_as(KEYS)
    }

    fn search_hits(&self, word: &str) -> usize {
        self.get(&format!("/api/public/observations?q={word}&limit=100"))["meta"]["totalItems"]
            .as_u64()
            .unwrap() as usize
    }

    /// Waits until the search index has applied every commit.
    fn index_caught_up(&self) {
        let state = &self.server.state;
        eventually(Duration::from_secs(60), || {
            let committed = *state.store.writer().subscribe().borrow();
            let indexed = state.search.status().indexed_seq;
            (indexed >= committed)
                .then_some(())
                .ok_or(format!("indexed {indexed} of {committed}"))
        })
        .unwrap();
    }

    fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.server.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    fn retention(&self, policy: config::Retention) -> Retention {
        let s = &self.server.state;
        Retention::new(
            policy,
            s.store.clone(),
            s.search.clone(),
            s.telemetry.retention_stats(),
        )
    }

    fn db_bytes(&self) -> u64 {
        self.server.state.store.disk_bytes()
    }

    fn add_project(&self, id: &str, pk: &str, sk: &str) {
        let s = &self.server.state;
        let key = sightline::auth::key_record(id, pk, sk, "test");
        let project = sightline::store::ProjectRecord {
            id: id.into(),
            name: id.into(),
            org_id: "org".into(),
            org_name: "Org".into(),
            created_at: Timestamp::now(),
            retention_days: None,
        };
        s.store.put_admin(&[project], &[key], &[], &[]).unwrap();
        s.keys.reload(&s.store).unwrap();
    }
}

fn policy(max_age_days: u32) -> config::Retention {
    config::Retention {
        max_age_days,
        check_interval: Duration::from_secs(3600),
        compact: true,
        ..Default::default()
    }
}

fn run(r: &mut Retention) -> RunReport {
    r.run_once(&StopSignal::default()).unwrap()
}

/// An ISO time `micros_ago` before now.
fn ago(micros_ago: i64) -> String {
    Timestamp::from_micros(Timestamp::now().micros() - micros_ago).to_iso()
}

/// A trace at `ts` with a priced generation and a score, optionally in a session; `word` goes
/// into the generation's input so search can find it, `filler` bytes of incompressible text too.
fn trace(id: &str, ts: &str, session: Option<&str>, word: &str, filler: usize) -> Vec<Value> {
    let mut trace = json!({"id": id, "timestamp": ts, "name": "chat", "userId": "u1"});
    if let Some(s) = session {
        trace["sessionId"] = json!(s);
    }
    let text = format!("{word} {}", noise(id, filler));
    vec![
        json!({"id": format!("{id}-e1"), "type": "trace-create", "timestamp": ts, "body": trace}),
        json!({"id": format!("{id}-e2"), "type": "generation-create", "timestamp": ts,
               "body": {"id": format!("{id}-gen"), "traceId": id, "name": "llm", "model": "gpt-4o",
                        "startTime": ts, "endTime": ts, "input": text, "output": "ok",
                        "usageDetails": {"input": 100, "output": 20}}}),
        json!({"id": format!("{id}-e3"), "type": "score-create", "timestamp": ts,
               "body": {"id": format!("{id}-score"), "traceId": id, "name": "quality", "value": 1,
                        "timestamp": ts}}),
    ]
}

/// Deterministic text that LZ4 cannot shrink much: words of pseudo-random letters.
fn noise(seed: &str, bytes: usize) -> String {
    let mut x: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        for _ in 0..7 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(char::from(b'a' + (x % 26) as u8));
        }
        out.push(' ');
    }
    out
}

fn try_metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metric(text: &str, name: &str) -> f64 {
    try_metric(text, name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

fn daily(api: &Api) -> Vec<Value> {
    api.get("/api/public/metrics/daily?limit=100")["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn expired_traces_go_with_everything_derived_from_them_and_newer_data_stays() {
    let api = Api::new();
    let old = 400 * DAY_MICROS;
    let mut events = Vec::new();
    for i in 0..10 {
        let session = if i == 0 {
            "mixed-session"
        } else {
            "old-session"
        };
        events.extend(trace(
            &format!("old-{i}"),
            &ago(old + i * HOUR_MICROS),
            Some(session),
            "ancientword",
            0,
        ));
    }
    for i in 0..5 {
        let session = if i == 0 {
            "mixed-session"
        } else {
            "new-session"
        };
        events.extend(trace(
            &format!("new-{i}"),
            &ago(DAY_MICROS + i * HOUR_MICROS),
            Some(session),
            "freshword",
            0,
        ));
    }
    // Just inside and just outside the 30-day window.
    events.extend(trace(
        "edge-kept",
        &ago(30 * DAY_MICROS - HOUR_MICROS),
        None,
        "edgeword",
        0,
    ));
    events.extend(trace(
        "edge-gone",
        &ago(30 * DAY_MICROS + HOUR_MICROS),
        None,
        "edgeword",
        0,
    ));
    // Observations whose trace was never sent: an old group and a new one.
    for (id, ts) in [("orphan-old", ago(old)), ("orphan-new", ago(HOUR_MICROS))] {
        events.push(
            json!({"id": format!("{id}-e"), "type": "span-create", "timestamp": ts,
            "body": {"id": id, "traceId": format!("{id}-trace"), "name": "lonely", "startTime": ts,
                     "input": "orphanword"}}),
        );
    }
    // Scores on no trace: an old and a new session score, an old dataset-run score; an old
    // score on a new trace stays with its trace.
    events.push(json!({"id": "s1", "type": "score-create", "timestamp": ago(old),
        "body": {"id": "old-session-score", "sessionId": "old-session", "name": "s", "value": 1, "timestamp": ago(old)}}));
    events.push(json!({"id": "s2", "type": "score-create", "timestamp": ago(HOUR_MICROS),
        "body": {"id": "new-session-score", "sessionId": "new-session", "name": "s", "value": 1, "timestamp": ago(HOUR_MICROS)}}));
    events.push(json!({"id": "s3", "type": "score-create", "timestamp": ago(old),
        "body": {"id": "old-run-score", "datasetRunId": "run-1", "name": "s", "value": 2, "timestamp": ago(old)}}));
    events.push(json!({"id": "s4", "type": "score-create", "timestamp": ago(old),
        "body": {"id": "old-score-new-trace", "traceId": "new-1", "name": "s", "value": 3, "timestamp": ago(old)}}));
    api.ingest(events);
    api.index_caught_up();
    assert_eq!(api.search_hits("ancientword"), 10);
    assert_eq!(api.search_hits("orphanword"), 2);
    let days_before = daily(&api);
    let old_day = days_before.last().unwrap()["date"].clone();
    assert!(days_before.len() >= 3, "{days_before:?}");

    // A delete asked for with a cutoff older than the trace does nothing: the writer checks
    // again, so a trace that became newer between the scan and the delete survives.
    let tally = std::sync::Arc::new(Tally::default());
    api.server
        .state
        .store
        .writer()
        .submit_blocking(WriteOp::Expire {
            project: PROJECT.into(),
            cutoff: Timestamp::from_micros(Timestamp::now().micros() - 30 * DAY_MICROS),
            traces: vec!["new-0".into(), "orphan-new-trace".into()],
            scores: vec!["new-session-score".into(), "old-score-new-trace".into()],
            tally: tally.clone(),
        })
        .unwrap();
    assert_eq!(tally.get().records(), 0);

    let mut r = api.retention(policy(30));
    let report = run(&mut r);
    let d = report.deleted;
    assert_eq!(d.traces, 11, "{report:?}");
    // 11 generations + the old orphan span.
    assert_eq!(d.observations, 12, "{report:?}");
    // 11 trace scores + the old session score + the dataset-run score.
    assert_eq!(d.scores, 13, "{report:?}");
    assert_eq!(
        d.sessions, 1,
        "only old-session lost all its traces: {report:?}"
    );
    assert!(d.changes > 0, "{report:?}");

    let want: BTreeSet<String> = ["new-0", "new-1", "new-2", "new-3", "new-4", "edge-kept"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(api.trace_ids(), want);
    for gone in [
        "/api/public/traces/old-3",
        "/api/public/traces/edge-gone",
        "/api/public/observations/old-3-gen",
        "/api/public/observations/orphan-old",
        "/api/public/scores/old-3-score",
        "/api/public/scores/old-session-score",
        "/api/public/scores/old-run-score",
        "/api/public/sessions/old-session",
    ] {
        assert_eq!(api.status(gone), 404, "{gone}");
    }
    for kept in [
        "/api/public/traces/new-1",
        "/api/public/traces/edge-kept",
        "/api/public/observations/new-1-gen",
        "/api/public/observations/orphan-new",
        "/api/public/scores/new-session-score",
        "/api/public/scores/old-score-new-trace",
        "/api/public/sessions/mixed-session",
        "/api/public/sessions/new-session",
    ] {
        assert_eq!(api.status(kept), 200, "{kept}");
    }
    let mixed = api.get("/api/public/sessions/mixed-session");
    assert_eq!(mixed["traces"].as_array().unwrap().len(), 1, "{mixed}");

    // Search agrees.
    api.index_caught_up();
    assert_eq!(api.search_hits("ancientword"), 0);
    assert_eq!(api.search_hits("freshword"), 5);
    assert_eq!(api.search_hits("orphanword"), 1);
    assert_eq!(api.search_hits("edgeword"), 1);

    // Metrics agree: the old day is gone, the newer days did not move, and the rollups equal a
    // recomputation from the records.
    let days_after = daily(&api);
    assert!(
        days_after.iter().all(|d| d["date"] != old_day),
        "{days_after:?}"
    );
    let newer: Vec<&Value> = days_before
        .iter()
        .filter(|d| days_after.iter().any(|a| a["date"] == d["date"]))
        .collect();
    assert_eq!(newer.len(), days_after.len());
    for (b, a) in newer.iter().zip(&days_after) {
        let edge_day = b["countTraces"] != a["countTraces"];
        // Only the day holding edge-gone may differ, by exactly that trace.
        if edge_day {
            assert_eq!(
                b["countTraces"].as_u64().unwrap() - 1,
                a["countTraces"].as_u64().unwrap()
            );
        } else {
            assert_eq!(*b, a);
        }
    }
    let diffs = sightline::analytics::verify(&api.server.state.store).unwrap();
    assert!(
        diffs.is_empty(),
        "rollups differ from the records: {diffs:?}"
    );

    // The change log no longer names what is gone.
    let log = api.server.state.store.changes_since(0, 1_000_000).unwrap();
    let named_old: Vec<_> = log
        .iter()
        .filter(|(_, c)| format!("{c:?}").contains("old-"))
        .filter(|(_, c)| !format!("{c:?}").contains("old-score-new-trace"))
        .collect();
    assert!(named_old.is_empty(), "{named_old:?}");

    // /metrics says what happened.
    let m = api.metrics();
    assert_eq!(metric(&m, "sightline_retention_runs_total"), 1.0);
    assert_eq!(
        metric(&m, "sightline_retention_deleted_total{kind=\"trace\"}"),
        11.0
    );
    assert_eq!(
        metric(
            &m,
            "sightline_retention_deleted_total{kind=\"observation\"}"
        ),
        12.0
    );
    assert!(metric(&m, "sightline_retention_last_run_timestamp_seconds") > 1.7e9);

    // A second run finds nothing more.
    let again = run(&mut r);
    assert_eq!(again.deleted.records(), 0, "{again:?}");
    assert_eq!(api.trace_ids(), want);
}

#[test]
fn a_project_override_beats_the_default_age() {
    let api = Api::new();
    api.add_project("keep", "pk-lf-keep", "sk-lf-keep");
    api.add_project("short", "pk-lf-short", "sk-lf-short");
    let keys = |p: &str| match p {
        "keep" => ("pk-lf-keep", "sk-lf-keep"),
        "short" => ("pk-lf-short", "sk-lf-short"),
        _ => KEYS,
    };
    for p in [PROJECT, "keep", "short"] {
        let mut ev = trace("ancient", &ago(400 * DAY_MICROS), None, "w", 0);
        ev.extend(trace("week", &ago(7 * DAY_MICROS), None, "w", 0));
        ev.extend(trace("today", &ago(HOUR_MICROS), None, "w", 0));
        api.ingest_as(keys(p), ev);
    }
    let mut p = policy(30);
    p.projects.insert("keep".into(), 0);
    p.projects.insert("short".into(), 2);
    run(&mut api.retention(p));
    let ids = |p: &str| api.trace_ids_as(keys(p)).into_iter().collect::<Vec<_>>();
    assert_eq!(ids(PROJECT), ["today", "week"]);
    assert_eq!(ids("keep"), ["ancient", "today", "week"]);
    assert_eq!(ids("short"), ["today"]);
    assert_eq!(
        sightline::analytics::verify(&api.server.state.store).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn the_disk_cap_deletes_the_oldest_first_and_compaction_shrinks_the_file() {
    let api = Api::new();
    let n = 300i64;
    let mut events = Vec::new();
    for i in 0..n {
        // trace-000 is the oldest; one hour apart, all well within any age limit.
        events.extend(trace(
            &format!("trace-{i:03}"),
            &ago((n - i) * HOUR_MICROS),
            None,
            "w",
            16_000,
        ));
    }
    api.ingest(events);
    api.index_caught_up();
    let file_before = api.db_bytes();
    let used = file_before + api.server.state.search.disk_bytes();
    let cap = used * 6 / 10;
    let mut p = policy(0);
    p.max_disk_bytes = cap;
    let report = run(&mut api.retention(p));

    assert!(report.deleted.traces > 0, "{report:?}");
    assert!(
        report.compactions >= 1 && report.reclaimed_bytes > 0,
        "{report:?}"
    );
    // The run measured itself under the cap; the search index may still be merging away the
    // deleted documents' segments, so the directory is measured again until it settles.
    eventually(Duration::from_secs(60), || {
        let used = api.db_bytes() + api.server.state.search.disk_bytes();
        (used <= cap)
            .then_some(())
            .ok_or(format!("{used} bytes used, cap {cap}: {report:?}"))
    })
    .unwrap();
    let file_after = api.db_bytes();
    assert!(
        file_after < file_before * 7 / 10,
        "the file shrank only from {file_before} to {file_after} bytes"
    );
    // Oldest first: what is left is exactly the newest traces.
    let left = api.trace_ids();
    let k = left.len() as i64;
    assert!(k > 0 && k < n, "{k} of {n} traces left");
    let want: BTreeSet<String> = (n - k..n).map(|i| format!("trace-{i:03}")).collect();
    assert_eq!(left, want);
    let m = api.metrics();
    assert!(metric(&m, "sightline_retention_reclaimed_bytes_total") > 0.0);
    assert!(metric(&m, "sightline_retention_compactions_total") >= 1.0);

    // Under the cap, a run deletes nothing.
    let mut p = policy(0);
    p.max_disk_bytes = cap;
    assert_eq!(run(&mut api.retention(p)).deleted.records(), 0);
}

#[test]
fn age_expiry_of_most_of_the_data_compacts_the_file() {
    let api = Api::new();
    let mut events = Vec::new();
    for i in 0..200 {
        let age = if i < 180 {
            100 * DAY_MICROS
        } else {
            HOUR_MICROS
        };
        events.extend(trace(
            &format!("t-{i:03}"),
            &ago(age + i * 1000),
            None,
            "w",
            16_000,
        ));
    }
    api.ingest(events);
    let before = api.db_bytes();
    let report = run(&mut api.retention(policy(30)));
    assert_eq!(report.deleted.traces, 180, "{report:?}");
    assert_eq!(report.compactions, 1, "{report:?}");
    let after = api.db_bytes();
    assert!(after < before / 2, "{before} → {after} bytes");
    assert_eq!(api.trace_ids().len(), 20);
    for i in [180, 199] {
        let t = api.get(&format!("/api/public/traces/t-{i:03}"));
        assert_eq!(t["observations"].as_array().unwrap().len(), 1, "{t}");
    }
}

#[test]
fn compaction_waits_for_readers_and_gives_up_rather_than_block_them() {
    let api = Api::new();
    api.ingest(trace("t", &ago(HOUR_MICROS), None, "w", 1000));
    let store = &api.server.state.store;
    let snapshot = store.snapshot().unwrap();
    assert_eq!(store.writer().compact_blocking().unwrap(), Compaction::Busy);
    drop(snapshot);
    assert!(matches!(
        store.writer().compact_blocking().unwrap(),
        Compaction::Done { .. }
    ));
    // Reads and writes work after it.
    api.ingest(trace("t2", &ago(HOUR_MICROS), None, "w", 1000));
    assert_eq!(api.trace_ids().len(), 2);
}

#[test]
fn ingestion_keeps_working_during_a_retention_run() {
    let api = Api::new();
    let mut old = Vec::new();
    for i in 0..3000 {
        old.extend(trace(
            &format!("old-{i}"),
            &ago(100 * DAY_MICROS + i),
            None,
            "w",
            0,
        ));
    }
    api.ingest(old);
    let mut r = api.retention(policy(30));
    let worker = std::thread::spawn(move || run(&mut r));
    let mut sent = 0;
    while !worker.is_finished() || sent < 5 {
        api.ingest(trace(
            &format!("new-{sent}"),
            &ago(HOUR_MICROS),
            None,
            "w",
            0,
        ));
        sent += 1;
    }
    let report = worker.join().unwrap();
    assert_eq!(report.deleted.traces, 3000, "{report:?}");
    let want: BTreeSet<String> = (0..sent).map(|i| format!("new-{i}")).collect();
    assert_eq!(
        api.trace_ids(),
        want,
        "every trace ingested during the run is there"
    );
    assert_eq!(
        sightline::analytics::verify(&api.server.state.store).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn the_server_enforces_retention_in_the_background_from_its_configuration() {
    let server = Server::builder()
        .env("SIGHTLINE_RETENTION_MAX_AGE_DAYS", "30")
        .env("SIGHTLINE_RETENTION_CHECK_INTERVAL", "1s")
        .start();
    let mut events = trace("old", &ago(90 * DAY_MICROS), None, "w", 0);
    events.extend(trace("new", &ago(HOUR_MICROS), None, "w", 0));
    server.ingest(events).expect_json(207);
    eventually(Duration::from_secs(30), || {
        let s = server.get("/api/public/traces/old").status;
        (s == 404)
            .then_some(())
            .ok_or(format!("old trace still answers {s}"))
    })
    .unwrap();
    server.get("/api/public/traces/new").expect_json(200);
    let projects = server.get("/api/public/projects").expect_json(200);
    assert_eq!(projects["data"][0]["retentionDays"], 30, "{projects}");
    // The counters move when the run ends, a moment after its deletes.
    eventually(Duration::from_secs(30), || {
        let m = server.get("/metrics").text();
        // The per-kind series appear with the first run's end.
        let deleted = try_metric(&m, "sightline_retention_deleted_total{kind=\"trace\"}");
        (metric(&m, "sightline_retention_runs_total") >= 1.0 && deleted == Some(1.0))
            .then_some(())
            .ok_or(m)
    })
    .unwrap();
}
