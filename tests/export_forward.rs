//! Export, import and forward through the real binary: a varied data set in server A comes out
//! of A's data directory (while A runs) as JSONL, goes into server B by `sightline import`, and
//! B's read API then answers exactly as A's does; the streaming endpoint returns the same JSONL
//! and a CSV with one row per observation; `sightline forward` interrupted (batch limit, then
//! SIGKILL) and resumed leaves B with exactly A's data, deletes included, and a forward that is
//! already caught up sends nothing; `serve` with `[forward]` configured tees to B by itself and
//! catches up after B was down, from its cursor, without sending everything again.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{PUBLIC_KEY, SECRET_KEY, Server, eventually};
use serde_json::{Value, json};

fn sightline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .env_remove("SIGHTLINE_DATA_DIR")
        // The secret goes by environment, as the help text recommends.
        .env("SIGHTLINE_UPSTREAM_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stderr}");
    assert!(
        !stderr.contains(SECRET_KEY),
        "{what} printed the secret key: {stderr}"
    );
    stderr
}

fn at(second: u32) -> String {
    format!("2025-03-01T10:00:{second:02}.123456Z")
}

/// Traces with nested observations of several types, generations with reported usage, reported
/// cost, computed cost and tokenizer-estimated usage, updates, an explicit null that clears,
/// scores of every data type on traces, observations, sessions and dataset runs, a large input,
/// text that CSV must quote, and an observation whose trace was never sent.
fn varied_events(prefix: &str, traces: usize) -> Vec<Value> {
    let mut ev = Vec::new();
    let mut n = 0;
    let mut push = |ty: &str, ts: String, body: Value| {
        n += 1;
        ev.push(
            json!({"id": format!("{prefix}-ev-{n}"), "type": ty, "timestamp": ts, "body": body}),
        );
    };
    for i in 0..traces {
        let t = format!("{prefix}-trace-{i}");
        let span = format!("{t}-span");
        let gen_ = format!("{t}-gen");
        push(
            "trace-create",
            at(1),
            json!({"id": t, "timestamp": at(1), "name": if i == 0 { "to be cleared" } else { "chat" },
                   "userId": format!("user-{}", i % 2), "sessionId": format!("{prefix}-session-{}", i % 2),
                   "release": "r1", "version": "v1", "tags": ["a", format!("t{i}")],
                   "metadata": {"k": i, "nested": {"x": [1, 2]}}, "environment": if i % 2 == 0 { "production" } else { "staging" },
                   "input": if i == 1 { json!({"big": "x".repeat(300_000)}) } else { json!({"q": format!("question {i}")}) },
                   "output": "answer", "public": i == 2}),
        );
        push(
            "span-create",
            at(1),
            json!({"id": span, "traceId": t, "name": "root", "startTime": at(1), "input": {"step": 1},
                   "metadata": {"m": true}, "environment": "production"}),
        );
        push(
            "generation-create",
            at(2),
            json!({"id": gen_, "traceId": t, "parentObservationId": span, "name": "say \"hi\", then\nleave",
                   "startTime": at(2), "completionStartTime": at(3), "endTime": at(4), "model": "gpt-4o",
                   "modelParameters": {"temperature": 0.2, "stop": ["\n"]},
                   "input": [{"role": "user", "content": "hello"}], "output": {"role": "assistant", "content": "hi"},
                   "usageDetails": {"input": 100 + i, "output": 20, "input_cached_tokens": 7},
                   "level": "WARNING", "statusMessage": "slow", "version": "g1",
                   "promptName": "p", "promptVersion": 3}),
        );
        push(
            "generation-create",
            at(5),
            json!({"id": format!("{t}-gen-cost"), "traceId": t, "parentObservationId": span, "name": "priced",
                   "startTime": at(5), "endTime": at(6), "model": "gpt-4o-mini",
                   "usageDetails": {"input": 10, "output": 5}, "costDetails": {"input": 0.001, "output": 0.002, "total": 0.003}}),
        );
        push(
            "generation-create",
            at(6),
            json!({"id": format!("{t}-gen-est"), "traceId": t, "name": "estimated", "startTime": at(6),
                   "model": "gpt-4o", "input": "count these tokens please", "output": "ok then"}),
        );
        for (k, ty) in [
            "tool",
            "agent",
            "retriever",
            "event",
            "chain",
            "embedding",
            "guardrail",
            "evaluator",
        ]
        .iter()
        .enumerate()
        {
            push(
                &format!("{ty}-create"),
                at(7),
                json!({"id": format!("{t}-{ty}"), "traceId": t, "parentObservationId": if k % 2 == 0 { gen_.clone() } else { span.clone() },
                       "name": ty, "startTime": at(7), "input": {"k": k}}),
            );
        }
        // Later updates: the span ends, gains output; the first trace loses its name.
        push(
            "span-update",
            at(9),
            json!({"id": span, "traceId": t, "endTime": at(9), "output": {"done": true}, "metadata": {"later": 1}}),
        );
        if i == 0 {
            push(
                "trace-create",
                at(10),
                json!({"id": t, "name": null, "tags": ["late"]}),
            );
        }
        push(
            "score-create",
            at(11),
            json!({"id": format!("{t}-s-num"), "traceId": t, "name": "quality", "value": 0.75, "dataType": "NUMERIC",
                   "comment": "fine", "metadata": {"by": "judge"}, "source": "EVAL"}),
        );
        push(
            "score-create",
            at(11),
            json!({"id": format!("{t}-s-bool"), "traceId": t, "observationId": gen_, "name": "ok", "value": 1, "dataType": "BOOLEAN"}),
        );
        push(
            "score-create",
            at(11),
            json!({"id": format!("{t}-s-cat"), "traceId": t, "name": "label", "value": "good", "dataType": "CATEGORICAL"}),
        );
        push(
            "score-create",
            at(11),
            json!({"id": format!("{t}-s-fix"), "traceId": t, "name": "fix", "value": "better text", "dataType": "CORRECTION"}),
        );
    }
    push(
        "score-create",
        at(12),
        json!({"id": format!("{prefix}-s-session"), "sessionId": format!("{prefix}-session-0"), "name": "session note",
               "value": "nice session", "dataType": "TEXT"}),
    );
    push(
        "score-create",
        at(12),
        json!({"id": format!("{prefix}-s-run"), "datasetRunId": "run-1", "name": "run score", "value": 3}),
    );
    push(
        "span-create",
        at(13),
        json!({"id": format!("{prefix}-orphan"), "traceId": format!("{prefix}-never-sent"), "name": "orphan", "startTime": at(13)}),
    );
    ev
}

fn ingest_all(server: &Server, events: &[Value]) {
    // Small batches: the large input alone is most of a batch.
    for chunk in events.chunks(20) {
        let body = server.ingest(chunk.to_vec()).expect_json(207);
        assert_eq!(body["errors"], json!([]), "ingestion errors: {body}");
    }
}

/// Removes the fields a copy legitimately changes (when it was written here).
fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("createdAt");
            m.remove("updatedAt");
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn sorted_by_id(mut items: Vec<Value>) -> Vec<Value> {
    items.iter_mut().for_each(strip);
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    items
}

/// Every item of a paged list endpoint.
fn all_pages(server: &Server, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let sep = if path.contains('?') { '&' } else { '?' };
        let body = server
            .get(&format!("{path}{sep}limit=100&page={page}"))
            .expect_json(200);
        let data = body["data"].as_array().unwrap().clone();
        if data.is_empty() {
            break;
        }
        out.extend(data);
    }
    out
}

/// Everything the read API says about the project, in a comparable form.
fn snapshot(server: &Server) -> Value {
    let traces = sorted_by_id(all_pages(server, "/api/public/traces"));
    let details: Vec<Value> = traces
        .iter()
        .map(|t| {
            let id = t["id"].as_str().unwrap();
            let resp = server.get(&format!("/api/public/traces/{id}"));
            // A server still receiving a forward can delete a trace between the list and this
            // read: the snapshot then shows it as gone, differs, and `eventually_same` looks
            // again, while a settled server never answers 404 for a listed trace.
            if resp.status == 404 {
                return json!({"id": id, "deletedWhileReading": true});
            }
            let mut d = resp.expect_json(200);
            strip(&mut d);
            if let Some(obs) = d["observations"].as_array_mut() {
                obs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            }
            if let Some(sc) = d["scores"].as_array_mut() {
                sc.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            }
            d
        })
        .collect();
    let mut traces = traces;
    for t in &mut traces {
        for key in ["observations", "scores"] {
            if let Some(ids) = t[key].as_array_mut() {
                ids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    json!({
        "traces": traces,
        "details": details,
        "observations": sorted_by_id(all_pages(server, "/api/public/observations")),
        "scores": sorted_by_id(all_pages(server, "/api/public/v2/scores")),
        "sessions": sorted_by_id(all_pages(server, "/api/public/sessions")),
    })
}

fn assert_same(a: &Value, b: &Value) {
    if a == b {
        return;
    }
    for key in ["traces", "details", "observations", "scores", "sessions"] {
        let (x, y) = (a[key].as_array().unwrap(), b[key].as_array().unwrap());
        assert_eq!(x.len(), y.len(), "{key}: different counts");
        for (x, y) in x.iter().zip(y) {
            assert_eq!(x, y, "{key} differ");
        }
    }
    panic!("snapshots differ");
}

fn counts(s: &Value) -> (usize, usize, usize) {
    let n = |k: &str| s[k].as_array().unwrap().len();
    (n("traces"), n("observations"), n("scores"))
}

/// A minimal RFC 4180 reader: quoted fields with doubled quotes and embedded line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

fn data_dir(server: &Server) -> String {
    server.data_dir().to_str().unwrap().to_string()
}

#[test]
fn export_while_serving_then_import_reproduces_the_read_api() {
    let a = Server::start();
    let events = varied_events("rt", 4);
    ingest_all(&a, &events);
    let want = snapshot(&a);
    assert_eq!(counts(&want), (4, 4 * 12 + 1, 4 * 4 + 2));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let stderr = ok(
        &sightline(&[
            "export",
            "--data-dir",
            &data_dir(&a),
            "--out",
            file.to_str().unwrap(),
        ]),
        "export",
    );
    assert!(
        stderr.contains("exported 4 traces, 49 observations, 18 scores"),
        "{stderr}"
    );
    let jsonl = std::fs::read_to_string(&file).unwrap();
    assert_eq!(jsonl.lines().count(), 4 + 49 + 18);

    // The streaming endpoint gives the same bytes.
    let streamed = a.get("/api/public/export?format=jsonl");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.headers["content-type"], "application/x-ndjson");
    assert!(
        streamed.text() == jsonl,
        "endpoint and command line exports differ"
    );
    // Filters are the traces list's.
    let user0 = a.get("/api/public/export?userId=user-0").text();
    let trace_lines = user0
        .lines()
        .filter(|l| l.contains("\"trace-create\""))
        .count();
    assert_eq!(trace_lines, 2, "{user0}");
    assert!(
        !user0.contains("rt-orphan"),
        "a filtered export holds only matching traces"
    );
    assert_eq!(a.get("/api/public/export?format=xml").status, 400);
    assert_eq!(
        a.send(
            "GET export without auth",
            reqwest::blocking::Client::new().get(a.url("/api/public/export"))
        )
        .status,
        401
    );

    // CSV: a header and one row per observation, quoting intact.
    let csv = a.get("/api/public/export?format=csv");
    assert_eq!(csv.status, 200);
    let rows = parse_csv(&csv.text());
    assert_eq!(rows.len(), 1 + 49);
    assert!(rows.iter().all(|r| r.len() == rows[0].len()));
    assert_eq!(rows[0][0], "id");
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let gen_row = rows.iter().find(|r| r[0] == "rt-trace-1-gen").unwrap();
    assert_eq!(gen_row[col("name")], "say \"hi\", then\nleave");
    assert_eq!(gen_row[col("input_tokens")], "108");
    assert_eq!(gen_row[col("output_tokens")], "20");
    assert_eq!(gen_row[col("user_id")], "user-1");
    assert_eq!(gen_row[col("level")], "WARNING");
    let priced = rows.iter().find(|r| r[0] == "rt-trace-1-gen-cost").unwrap();
    assert_eq!(priced[col("total_cost")], "0.003");

    // Import into a fresh server: the read API answers the same.
    let b = Server::start();
    let stderr = ok(
        &sightline(&[
            "import",
            file.to_str().unwrap(),
            "--to",
            &b.base_url(),
            "--public-key",
            PUBLIC_KEY,
            "--batch-bytes",
            "100000",
        ]),
        "import",
    );
    assert!(stderr.contains("imported 71 events"), "{stderr}");
    assert_same(&want, &snapshot(&b));
    // The estimated usage was estimated again, not carried as reported.
    let est = b
        .get("/api/public/observations/rt-trace-0-gen-est")
        .expect_json(200);
    assert_eq!(est["usageEstimated"], true, "{est}");
    assert!(est["usageDetails"]["input"].as_u64().unwrap() > 0, "{est}");

    // Importing again changes nothing: replays are idempotent.
    ok(
        &sightline(&[
            "import",
            file.to_str().unwrap(),
            "--to",
            &b.base_url(),
            "--public-key",
            PUBLIC_KEY,
        ]),
        "second import",
    );
    assert_same(&want, &snapshot(&b));
}

#[test]
fn import_reports_rejected_events_and_bad_keys() {
    let b = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let good =
        json!({"id": "e1", "type": "trace-create", "timestamp": at(1), "body": {"id": "t-ok"}});
    let bad = json!({"id": "e2", "type": "generation-create", "timestamp": at(1), "body": {"name": "no id"}});
    std::fs::write(&file, format!("{good}\n\n{bad}\n")).unwrap();
    let out = sightline(&[
        "import",
        file.to_str().unwrap(),
        "--to",
        &b.base_url(),
        "--public-key",
        PUBLIC_KEY,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rejected event e2: 400"), "{stderr}");
    b.get("/api/public/traces/t-ok").expect_json(200);

    let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["import", file.to_str().unwrap(), "--to", &b.base_url()])
        .args(["--public-key", PUBLIC_KEY, "--secret-key", "sk-lf-wrong"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("sk-lf-wrong"), "{stderr}");
}

fn forward_args<'a>(a: &'a str, b: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "forward",
        "--data-dir",
        a,
        "--to",
        b,
        "--public-key",
        PUBLIC_KEY,
        "--batch-bytes",
        "20000",
        "--poll-ms",
        "50",
    ];
    args.extend_from_slice(extra);
    args
}

fn ingested_metrics(server: &Server) -> String {
    server
        .get("/metrics")
        .text()
        .lines()
        .filter(|l| l.contains("ingested_items") && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn forward_interrupted_and_resumed_leaves_exactly_the_same_data() {
    let a = Server::start();
    let b = Server::start();
    ingest_all(&a, &varied_events("fw", 6));
    let (dir_a, url_b) = (data_dir(&a), b.base_url());

    // Interruption 1: stop after two batches. B has some of A, not all of it.
    let stderr = ok(
        &sightline(&forward_args(
            &dir_a,
            &url_b,
            &["--once", "--max-batches", "2"],
        )),
        "forward --max-batches 2",
    );
    assert!(stderr.contains("in 2 batches"), "{stderr}");
    assert!(
        !stderr.contains(SECRET_KEY) && stderr.contains("pk-lf-te…"),
        "{stderr}"
    );
    let partial = counts(&snapshot(&b));
    let full = counts(&snapshot(&a));
    assert!(
        partial != full && partial != (0, 0, 0),
        "{partial:?} vs {full:?}"
    );
    let cursor: Vec<_> = std::fs::read_dir(a.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cursor"))
        .collect();
    assert_eq!(cursor.len(), 1, "one cursor file in the data dir");

    // Interruption 2: a following forward, killed with SIGKILL while new data arrives.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(forward_args(&dir_a, &url_b, &[]))
        .env_remove("SIGHTLINE_DATA_DIR")
        .env("SIGHTLINE_UPSTREAM_SECRET_KEY", SECRET_KEY)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ingest_all(&a, &varied_events("fw2", 3));
    // It tees: the new data reaches B while it runs.
    eventually(Duration::from_secs(60), || {
        let r = b.get("/api/public/traces/fw2-trace-0");
        (r.status == 200).then_some(()).ok_or(r.text())
    })
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Changes after the kill: more data, a deleted trace, a deleted score.
    ingest_all(&a, &varied_events("fw3", 2));
    assert_eq!(
        a.send(
            "DELETE trace",
            a.client().delete(a.url("/api/public/traces/fw-trace-3"))
        )
        .status,
        200
    );
    assert_eq!(
        a.send(
            "DELETE score",
            a.client()
                .delete(a.url("/api/public/scores/fw-trace-4-s-num"))
        )
        .status,
        200
    );

    // Resume: B ends with exactly A's data.
    ok(
        &sightline(&forward_args(&dir_a, &url_b, &["--once"])),
        "forward --once",
    );
    let want = snapshot(&a);
    assert_same(&want, &snapshot(&b));
    assert_eq!(b.get("/api/public/traces/fw-trace-3").status, 404);

    // Already caught up: nothing is sent.
    let before = ingested_metrics(&b);
    let stderr = ok(
        &sightline(&forward_args(&dir_a, &url_b, &["--once"])),
        "forward --once when caught up",
    );
    assert!(
        stderr.contains(": 0 events in 0 batches, 0 deletes"),
        "{stderr}"
    );
    assert_eq!(
        before,
        ingested_metrics(&b),
        "a caught-up forward sent something"
    );
}

#[test]
fn export_refuses_what_it_cannot_do() {
    let a = Server::start();
    let out = sightline(&["export", "--data-dir", "/nonexistent/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sightline.redb"));
    let out = sightline(&["export", "--data-dir", &data_dir(&a), "--project", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no project \"nope\""));
    let out = sightline(&[
        "export",
        "--data-dir",
        &data_dir(&a),
        "--since",
        "last tuesday",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    let out = sightline(&[
        "forward",
        "--data-dir",
        &data_dir(&a),
        "--to",
        "ftp://cloud.langfuse.com",
        "--public-key",
        PUBLIC_KEY,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported scheme \"ftp\""));
    // --since narrows to traces from that day on.
    ingest_all(&a, &varied_events("since", 1));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.jsonl");
    let args = |since: &str| {
        vec![
            "export".to_string(),
            "--data-dir".into(),
            data_dir(&a),
            "--since".into(),
            since.into(),
            "--out".into(),
            file.to_str().unwrap().into(),
        ]
    };
    let run = |since: &str| {
        let a = args(since);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&sightline(&refs), "export --since");
        std::fs::read_to_string(&file).unwrap()
    };
    assert!(run("2025-03-01").contains("since-trace-0"));
    assert!(!run("2025-03-02").contains("trace-create"));
    assert!(!Path::new(&file.with_extension("partial")).exists());
}

/// Events B accepted since it started (its counters start at zero on each start).
fn accepted(server: &Server) -> u64 {
    ingested_metrics(server)
        .lines()
        .filter(|l| l.contains("result=\"accepted\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn eventually_same(a: &Server, b: &Server) {
    let result = eventually(Duration::from_secs(90), || {
        let (x, y) = (snapshot(a), snapshot(b));
        (x == y)
            .then_some(())
            .ok_or(format!("{:?} vs {:?}", counts(&x), counts(&y)))
    });
    if let Err(e) = result {
        assert_same(&snapshot(a), &snapshot(b));
        panic!("{e}");
    }
}

#[test]
fn serve_with_forward_configured_tees_and_catches_up_after_an_outage() {
    let port = common::server::free_port();
    let mut b = Server::builder().port(port).start();
    let mut a = Server::builder()
        .env("SIGHTLINE_FORWARD_URL", &b.base_url())
        .env("SIGHTLINE_FORWARD_PUBLIC_KEY", PUBLIC_KEY)
        .env("SIGHTLINE_FORWARD_SECRET_KEY", SECRET_KEY)
        .env("SIGHTLINE_FORWARD_POLL_MS", "50")
        .env("SIGHTLINE_FORWARD_BATCH_BYTES", "20000")
        .start();
    ingest_all(&a, &varied_events("tee", 6));
    eventually_same(&a, &b);

    // The upstream goes away; A takes more data and a delete, and restarts itself meanwhile.
    b.terminate();
    ingest_all(&a, &varied_events("tee2", 1));
    assert_eq!(
        a.send(
            "DELETE trace",
            a.client().delete(a.url("/api/public/traces/tee-trace-2"))
        )
        .status,
        200
    );
    a.terminate();
    a.restart();
    b.restart();
    eventually_same(&a, &b);
    assert_eq!(b.get("/api/public/traces/tee-trace-2").status, 404);

    // From the cursor: B (counting from its restart) received each record that changed during
    // the outage once, and nothing from before it. (A read everything after its cursor in one
    // pass, since all of it was committed before B came back.)
    let after_outage = snapshot(&a);
    let new_records: usize = ["traces", "observations", "scores"]
        .iter()
        .map(|k| {
            after_outage[k]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["id"].as_str().unwrap().starts_with("tee2"))
                .count()
        })
        .sum();
    let (t, o, s) = counts(&after_outage);
    let received = accepted(&b) as usize;
    eprintln!(
        "after the outage B received {received} events: {new_records} records changed, {} in all",
        t + o + s
    );
    assert!(
        received == new_records && received < (t + o + s) / 2,
        "B received {received} events after the outage; {new_records} records changed, {} in all",
        t + o + s
    );
    let metrics = a.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sightline_forward_events_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The secret key never reaches the log.
    assert!(!a.log_tail().contains(SECRET_KEY));
}

#[test]
fn retention_deletes_are_not_forwarded() {
    let b = Server::start();
    let a = Server::builder()
        .env("SIGHTLINE_FORWARD_URL", &b.base_url())
        .env("SIGHTLINE_FORWARD_PUBLIC_KEY", PUBLIC_KEY)
        .env("SIGHTLINE_FORWARD_SECRET_KEY", SECRET_KEY)
        .env("SIGHTLINE_FORWARD_POLL_MS", "50")
        .env("SIGHTLINE_RETENTION_MAX_AGE_DAYS", "30")
        .env("SIGHTLINE_RETENTION_CHECK_INTERVAL", "3s")
        .start();
    let trace = |id: &str, ts: &str| {
        json!({"id": format!("ev-{id}"), "type": "trace-create", "timestamp": ts,
               "body": {"id": id, "timestamp": ts, "name": "t"}})
    };
    // Old enough for A's retention (2025-03-01 is long ago), sent upstream before it runs.
    a.ingest(vec![trace("old", &at(1))]).expect_json(207);
    let found = |s: &Server, id: &str| s.get(&format!("/api/public/traces/{id}")).status;
    eventually(Duration::from_secs(30), || {
        (found(&b, "old") == 200)
            .then_some(())
            .ok_or("not forwarded yet".to_string())
    })
    .unwrap();
    eventually(Duration::from_secs(30), || {
        (found(&a, "old") == 404)
            .then_some(())
            .ok_or("not expired yet".to_string())
    })
    .unwrap();
    // A change after the expiry reaches B, so the forward has gone past the expiry's entries.
    a.ingest(vec![trace("new", &common::now_iso())])
        .expect_json(207);
    eventually(Duration::from_secs(30), || {
        (found(&b, "new") == 200)
            .then_some(())
            .ok_or("new trace not forwarded".to_string())
    })
    .unwrap();
    assert_eq!(
        found(&b, "old"),
        200,
        "the upstream keeps what retention deleted here"
    );
    let metrics = a.get("/metrics").text();
    assert!(
        metrics.contains("sightline_forward_deletes_total 0"),
        "{metrics}"
    );
}
