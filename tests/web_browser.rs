//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
//! pinned Selenium in a venv): log in, overview numbers equal the public API's, search and filter
//! find a trace, trace → generation shows its cost and tokens and links its prompt version, whose
//! page diffs it against the previous version, a new trace appears without a reload, hostile
//! prompts run no script on any view, a score is added by hand from the trace view, logout ends
//! the session. Screenshots of every view land in
//! `<target>/test-artifacts/web/`.
//!
//! One test, one browser session: the machine is shared and Chromium is the slow part.

mod common;

use std::path::{Path, PathBuf};

use common::venv::Venv;
use common::{PROJECT_ID, PUBLIC_KEY, SECRET_KEY, Server, unique_id};
use serde_json::{Value, json};

const EMAIL: &str = "browser@example.com";
const PASSWORD: &str = "a long test password";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// A word only the searched trace carries (in its input).
const SEARCH_WORD: &str = "zebraunicorn";
/// Observations of the large trace (the tree draws 300 before "show all").
const BIG_TRACE: usize = 1000;
/// Characters of the long input (previews show 2000).
const LONG_TEXT: usize = 50_000;

/// The managed prompt the seeded generation names (a folder name: `/` travels encoded).
const PROMPT: &str = "support/answer";
/// The line version 2 of it adds, and the one it drops.
const PROMPT_ADDED: &str = "Always cite the order number.";
const PROMPT_REMOVED: &str = "Keep it short.";

/// Each payload sets `window.__pwned` or the title if it ever runs.
const XSS: [&str; 6] = [
    "<script>window.__pwned='script'</script>",
    "<img src=x onerror=\"window.__pwned='img';document.title='pwned'\">",
    "javascript:window.__pwned='js-url'",
    "<svg onload=\"window.__pwned='svg'\"><script>window.__pwned='svg-script'</script></svg>",
    "<a href=\"javascript:window.__pwned='link'\">click me</a>",
    "\"><iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
];

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts")
        .join("web")
}

fn iso_ago(ms: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(ms);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).expect("format timestamp")
}

fn event(kind: &str, body: Value) -> Value {
    json!({"id": unique_id("ev"), "type": kind, "timestamp": common::now_iso(), "body": body})
}

struct Seeded {
    big: String,
    long_obs: String,
    trace: String,
    generation: String,
    xss_trace: String,
    xss_generation: String,
    xss_session: String,
    xss_prompt: String,
}

fn seed(s: &Server) -> Seeded {
    let (trace, span, generation) = (unique_id("checkout"), unique_id("span"), unique_id("gen"));
    let (trace_b, gen_b, err_b) = (unique_id("support"), unique_id("gen"), unique_id("span"));
    let (xss_trace, xss_generation) = (unique_id("xss"), unique_id("gen"));
    let xss_all = XSS.join(" ");
    let xss_session = XSS[1].to_string();
    let events = vec![
        event(
            "trace-create",
            json!({"id": trace, "name": "checkout-flow", "userId": "alice", "sessionId": "sess-1",
               "tags": ["prod"], "timestamp": iso_ago(5000),
               "input": [{"role": "user", "content": format!("Where is my order? {SEARCH_WORD}")}],
               "output": {"role": "assistant", "content": "It ships tomorrow."},
               "metadata": {"region": "eu"}}),
        ),
        event(
            "span-create",
            json!({"id": span, "traceId": trace, "name": "retrieve", "startTime": iso_ago(5000),
               "endTime": iso_ago(4200)}),
        ),
        event(
            "generation-create",
            json!({"id": generation, "traceId": trace, "parentObservationId": span, "name": "answer",
               "model": "gpt-4o", "modelParameters": {"temperature": 0.2, "max_tokens": 300},
               "promptName": PROMPT, "promptVersion": 2,
               "startTime": iso_ago(4100), "completionStartTime": iso_ago(3900), "endTime": iso_ago(3000),
               "usageDetails": {"input": 1200, "output": 350},
               "input": [{"role": "system", "content": "You are helpful."},
                         {"role": "user", "content": "Where is my order?"}],
               "output": {"role": "assistant", "content": "It ships tomorrow."}}),
        ),
        event(
            "score-create",
            json!({"id": unique_id("score"), "traceId": trace, "name": "helpfulness", "value": 0.9,
               "comment": "good"}),
        ),
        event(
            "trace-create",
            json!({"id": trace_b, "name": "support-bot", "userId": "bob", "timestamp": iso_ago(8000)}),
        ),
        event(
            "generation-create",
            json!({"id": gen_b, "traceId": trace_b, "name": "reply", "model": "gpt-4o-mini",
               "startTime": iso_ago(8000), "endTime": iso_ago(6500),
               "usageDetails": {"input": 400, "output": 120}}),
        ),
        event(
            "span-create",
            json!({"id": err_b, "traceId": trace_b, "name": "tool-call", "level": "ERROR",
               "statusMessage": "upstream timeout", "startTime": iso_ago(7000), "endTime": iso_ago(6900)}),
        ),
        // Every string a view shows carries the payloads.
        event(
            "trace-create",
            json!({"id": xss_trace, "name": XSS[0], "userId": XSS[2], "sessionId": xss_session,
               "tags": [XSS[1], XSS[3]], "release": XSS[4], "version": XSS[5], "timestamp": iso_ago(2000),
               "input": [{"role": "user", "content": xss_all},
                         {"role": "assistant", "content": [{"type": "text", "text": XSS[3]}]}],
               "output": XSS[1], "metadata": {XSS[0]: XSS[1], "link": XSS[2]}}),
        ),
        event(
            "generation-create",
            json!({"id": xss_generation, "traceId": xss_trace, "name": XSS[3], "model": XSS[1],
               "level": "ERROR", "statusMessage": XSS[0], "startTime": iso_ago(2000), "endTime": iso_ago(1500),
               "modelParameters": {XSS[2]: XSS[4]}, "usageDetails": {"input": 10, "output": 5},
               "input": {"prompt": xss_all}, "output": xss_all, "metadata": {"k": XSS[5]}}),
        ),
        event(
            "score-create",
            json!({"id": unique_id("score"), "traceId": xss_trace, "name": XSS[1], "value": 1,
               "comment": XSS[0]}),
        ),
    ];
    s.ingest(events).expect_json(207);
    // A large trace: the tree must stay capped and long text truncated until asked for.
    let big = unique_id("big");
    let mut events = vec![event(
        "trace-create",
        json!({"id": big, "name": "large-trace", "timestamp": iso_ago(60_000)}),
    )];
    let long_obs = unique_id("long");
    events.push(event(
        "span-create",
        json!({"id": long_obs, "traceId": big, "name": "long-input", "startTime": iso_ago(60_000),
           "endTime": iso_ago(59_000), "input": "x".repeat(LONG_TEXT)}),
    ));
    for i in 1..BIG_TRACE {
        events.push(event(
            "span-create",
            json!({"id": format!("{big}-{i}"), "traceId": big, "name": format!("step {i}"),
               "startTime": iso_ago(60_000 - i as i64), "endTime": iso_ago(59_000 - i as i64)}),
        ));
    }
    s.ingest(events).expect_json(207);
    let prompts = [
        json!({"name": PROMPT, "labels": ["production"], "config": {"model": "gpt-4o"},
               "prompt": format!("You answer support questions.\n{PROMPT_REMOVED}\nBe kind.")}),
        json!({"name": PROMPT, "config": {"model": "gpt-4o", "temperature": 0.2},
               "prompt": format!("You answer support questions.\nBe kind.\n{PROMPT_ADDED}")}),
        // Every string the prompt page shows carries the payloads.
        json!({"name": XSS[1], "type": "chat", "tags": [XSS[3]], "config": {XSS[2]: XSS[4]},
               "commitMessage": XSS[5],
               "prompt": [{"role": "system", "content": xss_all},
                          {"type": "placeholder", "name": XSS[0]}]}),
        json!({"name": XSS[1], "type": "chat", "commitMessage": XSS[0],
               "prompt": [{"role": XSS[2], "content": XSS[3]}]}),
    ];
    for p in prompts {
        s.post_json("/api/public/v2/prompts", &p).expect_json(201);
    }
    // Manual annotation picks a config; an evaluator whose texts carry the payloads.
    s.post_json(
        "/api/public/score-configs",
        &json!({"name": "relevance", "dataType": "CATEGORICAL",
                "categories": [{"label": "on topic", "value": 1}, {"label": "off topic", "value": 0}]}),
    )
    .expect_json(200);
    s.post_json(
        "/api/evaluators",
        &json!({"name": XSS[1], "prompt": format!("{} {{{{input}}}}", XSS[0]),
                "output": {"scoreName": XSS[3]}, "filter": {"names": [XSS[5]]}}),
    )
    .expect_json(200);
    Seeded {
        big,
        long_obs,
        trace,
        generation,
        xss_trace,
        xss_generation,
        xss_session,
        xss_prompt: XSS[1].to_string(),
    }
}

/// What the overview and generation view must show, read from the public API.
fn expected(s: &Server, seeded: &Seeded) -> Value {
    let list = s.get("/api/public/traces?limit=100").expect_json(200);
    let total_cost: f64 = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["totalCost"].as_f64().unwrap())
        .sum();
    let generation = s
        .get(&format!("/api/public/observations/{}", seeded.generation))
        .expect_json(200);
    assert!(
        generation["calculatedTotalCost"].as_f64().unwrap_or(0.0) > 0.0,
        "seeded generation is priced: {generation}"
    );
    json!({
        "traces": list["meta"]["totalItems"],
        "totalCost": total_cost,
        "generationCost": generation["calculatedTotalCost"],
        "generationInput": generation["usage"]["input"],
        "generationOutput": generation["usage"]["output"],
    })
}

#[test]
fn dashboard_in_headless_chromium() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: apt-get install -y chromium chromium-driver (tests/run.sh does)"
        );
    }
    let server = Server::builder()
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", PASSWORD)
        .start();
    let seeded = seed(&server);
    let expect = expected(&server, &seeded);
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let profile = tempfile::tempdir().unwrap();

    let venv = Venv::ensure("browser", "requirements-browser.txt");
    let result = venv.run_json(
        "dashboard_browser.py",
        &[],
        &[
            ("BASE_URL", server.base_url()),
            ("EMAIL", EMAIL.into()),
            ("PASSWORD", PASSWORD.into()),
            ("PROJECT", PROJECT_ID.into()),
            ("PUBLIC_KEY", PUBLIC_KEY.into()),
            ("SECRET_KEY", SECRET_KEY.into()),
            ("ARTIFACTS", artifacts.display().to_string()),
            ("PROFILE_DIR", profile.path().display().to_string()),
            ("CHROMIUM", CHROMIUM.into()),
            ("CHROMEDRIVER", CHROMEDRIVER.into()),
            ("SEARCH_WORD", SEARCH_WORD.into()),
            (
                "SEEDED",
                json!({
                    "trace": seeded.trace, "generation": seeded.generation,
                    "xssTrace": seeded.xss_trace, "xssGeneration": seeded.xss_generation,
                    "xssSession": seeded.xss_session, "xssPrompt": seeded.xss_prompt,
                    "prompt": PROMPT, "promptAdded": PROMPT_ADDED, "promptRemoved": PROMPT_REMOVED,
                    "big": seeded.big, "longObs": seeded.long_obs, "bigCount": BIG_TRACE,
                })
                .to_string(),
            ),
            ("EXPECT", expect.to_string()),
        ],
    );
    assert_eq!(result["ok"], true, "browser run: {result:#}");
    for shot in [
        "overview",
        "traces",
        "trace",
        "generation",
        "sessions",
        "users",
        "scores",
        "prompt",
        "prompts",
        "evaluators",
        "annotated",
        "evaluator-form",
    ] {
        assert!(
            artifacts.join(format!("{shot}.png")).exists(),
            "screenshot {shot}.png missing"
        );
    }
}
