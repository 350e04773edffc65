//! The load generator against the real binary, small: its counts must be right (every span
//! acknowledged, counted by the read API and found by search; planted words found exactly as
//! often as planted), whatever the speed. The benchmarks in BENCHMARKS.md run the same tool big.

mod common;

use std::process::Command;

use common::{PROJECT_ID, PUBLIC_KEY, SECRET_KEY, Server};
use serde_json::Value;

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "smoke-password-1";

fn load(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sightline-load"))
        .args(args)
        .args(["--public-key", PUBLIC_KEY, "--secret-key", SECRET_KEY])
        .output()
        .expect("run sightline-load");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ingest(s: &Server, extra: &[&str]) -> Value {
    ingest_traces(s, "200", extra)
}

fn ingest_traces(s: &Server, traces: &str, extra: &[&str]) -> Value {
    let pid = s.pid().to_string();
    let data_dir = s.data_dir().display().to_string();
    let url = s.base_url();
    let mut args = vec![
        "ingest",
        "--url",
        &url,
        "--traces",
        traces,
        "--spans-per-trace",
        "4",
        "--batch",
        "40",
        "--concurrency",
        "3",
        "--pid",
        &pid,
        "--data-dir",
        &data_dir,
        "--stored-timeout-secs",
        "60",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = load(&args);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\n{stderr}"));
    assert!(ok, "sightline-load ingest failed: {report}\n{stderr}");
    report
}

fn assert_complete(report: &Value) {
    let sent = report["spans_sent"].as_u64().expect("spans_sent");
    assert_eq!(sent, 800, "{report}");
    assert_eq!(report["requests_ok"], 20, "{report}");
    assert_eq!(report["requests_failed"], 0, "{report}");
    assert_eq!(report["spans_ok"], sent, "{report}");
    assert_eq!(report["spans_stored"], sent, "{report}");
    assert_eq!(report["spans_searchable"], sent, "{report}");
    assert!(
        report["rss_peak_mib"].as_f64().unwrap_or(0.0) > 1.0,
        "{report}"
    );
    assert!(
        report["disk_bytes_per_span"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    // Building 800 spans and sending them takes some CPU; the report says how much per span.
    assert!(
        report["generator_cpu_us_per_span"]
            .as_f64()
            .is_some_and(|us| us >= 0.0),
        "{report}"
    );
}

#[test]
fn generator_counts_match_what_the_read_api_and_search_see() {
    let s = Server::builder()
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", PASSWORD)
        .start();

    let otlp = ingest(&s, &["--seed", "1", "--format", "otlp"]);
    assert_complete(&otlp);
    // The query benchmark (over the first run's data set) checks its planted-word counts itself and fails on a mismatch.
    let url = s.base_url();
    let (ok, stdout, stderr) = load(&[
        "query",
        "--url",
        &url,
        "--seed",
        "1",
        "--traces",
        "200",
        "--iterations",
        "3",
        "--ui-email",
        EMAIL,
        "--ui-password",
        PASSWORD,
        "--project",
        PROJECT_ID,
        "--json",
    ]);
    assert!(ok, "sightline-load query failed:\n{stdout}\n{stderr}");
    let results: Value = serde_json::from_str(stdout.trim()).expect("query report is JSON");
    let by_name = |name: &str| -> &Value {
        results
            .as_array()
            .and_then(|r| r.iter().find(|q| q["name"] == name))
            .unwrap_or_else(|| panic!("no {name:?} in {results}"))
    };
    assert!(
        by_name("search, 1 % word")["answer"]
            .as_str()
            .is_some_and(|a| a.contains("totalItems 6 (planted in 6)")),
        "{results}"
    );
    assert_eq!(
        by_name("trace detail (with its observations)")["answer"],
        "4 observations"
    );
    assert_eq!(by_name("dashboard trace list, 7 days")["n"], 3);

    let langfuse = ingest(&s, &["--seed", "2", "--format", "langfuse", "--gzip"]);
    assert_complete(&langfuse);

    // A second run (other seed, other format) adds separate records: 1,600 observations in all.
    let all = s.get("/api/public/observations?limit=1").expect_json(200);
    assert_eq!(all["meta"]["totalItems"], 1600, "{all}");

    // Time-ordered ids: the seed, the trace's index, the span, as the server stores them.
    let ordered = ingest(&s, &["--seed", "4", "--format", "otlp", "--ordered-ids"]);
    assert_complete(&ordered);
    let all = s.get("/api/public/observations?limit=1").expect_json(200);
    assert_eq!(all["meta"]["totalItems"], 2400, "{all}");
    let second_trace_third_span = s
        .get("/api/public/observations/0004000000000102")
        .expect_json(200);
    assert_eq!(second_trace_third_span["type"], "GENERATION");
    let trace = second_trace_third_span["traceId"].as_str().unwrap();
    assert!(trace.starts_with("0004000000000100"), "{trace}");
}

/// The probe (BENCHMARKS.md's baseline without Sightline) stores and indexes every record it
/// is sent, once, in group commits, at each index level.
#[test]
fn the_probe_stores_and_indexes_every_record_once() {
    for level in ["positions", "text", "none"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sightline-load"))
            .args(["probe", "--traces", "30", "--spans-per-trace", "4"])
            .args([
                "--batch",
                "40",
                "--concurrency",
                "3",
                "--index",
                level,
                "--json",
            ])
            .output()
            .expect("run sightline-load probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "probe report is not JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success(), "{report}");
        // A Langfuse batch carries one trace event and one event per span: 30 × (1 + 4).
        assert_eq!(report["spans"], 120, "{report}");
        assert_eq!(report["events"], 150, "{report}");
        assert_eq!(report["records"], 150, "{report}");
        assert_eq!(report["rows_stored"], 150, "{report}");
        let indexed = if level == "none" {
            Value::Null
        } else {
            150.into()
        };
        assert_eq!(report["documents_indexed"], indexed, "{report}");
        // Three requests of ten traces: at most one commit each, fewer when they queue up.
        let commits = report["commits"].as_u64().expect("commits");
        assert!((1..=3).contains(&commits), "{report}");
        assert!(
            report["disk_bytes_per_span"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
    }
}

#[test]
fn memory_a_burst_freed_goes_back_to_the_system_once_the_server_is_quiet() {
    let s = Server::start();
    let report = ingest_traces(&s, "2000", &["--seed", "3", "--format", "otlp"]);
    // The heap, not mapped files: the binary's own pages and tantivy's maps are the kernel's.
    let peak = report["rss_peak_anon_mib"]
        .as_f64()
        .expect("rss_peak_anon_mib");
    // Nothing asks for it back: jemalloc's background thread returns pages unused for about a
    // second (`src/main.rs`; measured: 98 → 47 MiB within a second). Without that thread the
    // heap shrinks only as the allocator is next used (100 → 87 MiB, 80 after 8 s), which
    // also passes here: `the_server_allocates_with_jemalloc_as_configured` checks the thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut now = peak;
    while std::time::Instant::now() < deadline {
        now = anon_mib(s.pid());
        if now < 0.85 * peak {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("anonymous memory stayed at {now:.1} MiB after a peak of {peak:.1} MiB: {report}");
}

/// The server runs on jemalloc with the options `src/main.rs` compiles in: its background
/// thread, which returns freed pages, only exists when jemalloc read them.
#[test]
fn the_server_allocates_with_jemalloc_as_configured() {
    let s = Server::start();
    let found = common::eventually(std::time::Duration::from_secs(10), || {
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
            .map_err(|e| e.to_string())?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        match threads.iter().filter(|t| *t == "jemalloc_bg_thd").count() {
            1 => Ok(()),
            n => Err(format!(
                "{n} jemalloc background threads, not 1: {threads:?}"
            )),
        }
    });
    found.unwrap();
}

fn anon_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon");
    kib / 1024.0
}

/// What `sightline disk-usage` prints, run read-only beside the running server.
fn disk_usage(data_dir: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["disk-usage", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run sightline disk-usage");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("disk-usage prints JSON")
}

/// Rows of one table, from `disk_usage`.
fn table_rows(data_dir: &std::path::Path, table: &str) -> u64 {
    let usage = disk_usage(data_dir);
    usage["database"]["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == table))
        .and_then(|t| t["rows"].as_u64())
        .unwrap_or_else(|| panic!("no table {table} in {usage}"))
}

/// Past a few MiB of values the server trains a compression dictionary from them and writes
/// every later value with it. Those values must read in every other process: a reader beside
/// the server, and after a kill -9 a full search index rebuild and the rollup check (each
/// reads every record), and the restarted server.
#[test]
fn values_compressed_with_a_trained_dictionary_read_in_every_process() {
    let mut s = Server::start();
    let dir = s.data_dir().to_path_buf();
    ingest_traces(&s, "1500", &["--seed", "5", "--format", "otlp"]);
    common::eventually(std::time::Duration::from_secs(60), || {
        match table_rows(&dir, "dicts") {
            1 => Ok(()),
            n => Err(format!("{n} dictionaries")),
        }
    })
    .expect("a dictionary trained from the first 6,000 spans");
    // Written with the trained dictionary, in the other wire format.
    ingest_traces(&s, "300", &["--seed", "6", "--format", "langfuse"]);
    assert_eq!(table_rows(&dir, "observations"), 7_200);
    s.kill9();

    std::fs::remove_dir_all(dir.join("search")).expect("remove the search index");
    for args in [&["reindex"][..], &["rollups", "verify"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env("SIGHTLINE_LOG", "info")
            .env("SIGHTLINE_LOG_FORMAT", "json")
            .output()
            .expect("run sightline");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sightline {args:?}: {text}");
        if args[0] == "reindex" {
            // 1,800 traces and 7,200 observations, every one decoded.
            let rebuilt = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| {
                    l["target"] == "sightline::cli"
                        && l["fields"]["message"] == "search index rebuilt"
                });
            assert_eq!(
                rebuilt.as_ref().map(|l| &l["fields"]["documents"]),
                Some(&Value::from(9000)),
                "{text}"
            );
        }
    }

    s.restart();
    let all = s.get("/api/public/observations?limit=1").expect_json(200);
    assert_eq!(all["meta"]["totalItems"], 7200, "{all}");
    let page = s.get("/api/public/observations?limit=100").expect_json(200);
    let items = page["data"].as_array().expect("data");
    assert_eq!(items.len(), 100);
    assert!(
        items
            .iter()
            .all(|o| !o["input"].is_null() && !o["name"].is_null()),
        "{page}"
    );
    // The rebuilt index found the text inside those values.
    let hits = s
        .get("/api/public/observations?q=refund&limit=1")
        .expect_json(200);
    assert!(
        hits["meta"]["totalItems"].as_u64().unwrap_or(0) > 0,
        "{hits}"
    );
}

/// `sightline disk-usage` beside the running server says where the search index's bytes go: a
/// document per trace and per observation, text with positions, the delete keys without, and
/// parts that add up to no more than the directory holds.
#[test]
fn disk_usage_breaks_the_search_index_down_by_field() {
    let s = Server::start();
    assert_complete(&ingest(&s, &["--seed", "3", "--format", "otlp"]));
    // Searchable means committed; a merge finishing meanwhile can still move files under the
    // reader, which the command reports as an error beside its other figures.
    let index = common::eventually(std::time::Duration::from_secs(30), || {
        let usage = disk_usage(s.data_dir());
        match usage["searchIndex"]["documents"].as_u64() {
            // 200 traces of 4 spans each.
            Some(1000) => Ok(usage),
            _ => Err(format!("{usage}")),
        }
    })
    .expect("every trace and observation document in the breakdown");
    let total = index["searchIndexBytes"].as_u64().expect("directory bytes");
    let index = &index["searchIndex"];
    let fields = index["fields"].as_array().expect("fields");
    let field = |name: &str| -> &Value {
        fields
            .iter()
            .find(|f| f["field"] == name)
            .unwrap_or_else(|| panic!("no field {name} in {index}"))
    };
    let bytes = |f: &Value, part: &str| f[part].as_u64().unwrap_or_else(|| panic!("{part}: {f}"));
    for text in ["input", "output"] {
        let f = field(text);
        for part in ["termDictionary", "postings", "positions", "norms"] {
            assert!(bytes(f, part) > 0, "{text} {part}: {f}");
        }
    }
    let key = field("key");
    assert!(bytes(key, "termDictionary") > 0, "{key}");
    assert_eq!(bytes(key, "positions"), 0, "{key}");
    assert!(bytes(field("time"), "fastField") > 0, "{index}");
    assert!(index["docStore"].as_u64().is_some_and(|b| b > 0), "{index}");
    // Each field's total is its parts, the largest field comes first, and all of it is in the
    // directory (which also holds the commit metadata).
    let parts = [
        "termDictionary",
        "postings",
        "positions",
        "fastField",
        "norms",
    ];
    for f in fields {
        assert_eq!(
            bytes(f, "total"),
            parts.iter().map(|p| bytes(f, p)).sum::<u64>(),
            "{f}"
        );
    }
    let totals: Vec<u64> = fields.iter().map(|f| bytes(f, "total")).collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
    assert_eq!(fields[0]["field"], "input", "{index}");
    let accounted = totals.iter().sum::<u64>()
        + index["docStore"].as_u64().unwrap()
        + index["deletes"].as_u64().unwrap();
    assert!(accounted <= total, "{accounted} of {total} bytes: {index}");
}
