//! Today's real clients, live against the binary: the Langfuse Python SDK 5.x (OpenTelemetry
//! based), LiteLLM with its `langfuse` and `langfuse_otel` callbacks, and the plain
//! OpenTelemetry SDK with only an endpoint set. Everything is read back through Langfuse 5.x's
//! own API client (`api.observations.get_many`, `api.scores.get_many`), so its models must parse
//! Sightline's answers. Versions are pinned in `tests/python/requirements-*.txt`.

mod common;

use common::venv::Venv;
use common::{Findings, PUBLIC_KEY, SECRET_KEY, Server, basic_auth, unique_id};
use serde_json::{Value, json};

fn sdk5_env(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("LANGFUSE_BASE_URL", server.base_url()),
        ("LANGFUSE_HOST", server.base_url()),
        ("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY.to_string()),
        ("LANGFUSE_SECRET_KEY", SECRET_KEY.to_string()),
    ]
}

/// Observations and scores of a session, through the 5.x API client.
fn read_back(server: &Server, session: &str, at_least: usize) -> Value {
    Venv::ensure("langfuse5", "requirements-langfuse5.txt").run_json(
        "read_back_v5.py",
        &[session, &at_least.to_string()],
        &sdk5_env(server),
    )
}

fn by_name<'a>(observations: &'a Value, name: &str) -> Vec<&'a Value> {
    observations
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == name)
        .collect()
}

fn one<'a>(observations: &'a Value, name: &str) -> &'a Value {
    let found = by_name(observations, name);
    assert_eq!(
        found.len(),
        1,
        "expected one observation {name:?} in {observations:#}"
    );
    found[0]
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|f| f > 0.0)
}

#[test]
fn langfuse_python_sdk_5_traces_scores_and_reads_back() {
    let venv = Venv::ensure("langfuse5", "requirements-langfuse5.txt");
    let server = Server::start();
    let run = unique_id("lf5");
    let mut env = sdk5_env(&server);
    env.push(("SIGHTLINE_RUN_ID", run.clone()));
    let out = venv.run_json("sdk_v5_live.py", &[], &env);
    let mut check = Findings::default();

    let obs = &out["observations"];
    check.eq(
        "manual trace observation count",
        &json!(obs.as_array().unwrap().len()),
        &json!(4),
    );
    let root = one(obs, "handle-request");
    let generation = one(obs, "chat-completion");
    let tool = one(obs, "web-search");
    let bad = one(obs, "post-process");
    check.eq("root type", &root["type"], &json!("SPAN"));
    check.that(
        "root keeps its dangling remote parent",
        root["parentObservationId"].is_string(),
        &root["parentObservationId"],
    );
    check.eq(
        "isRootObservation=true finds the as_root span",
        &out["rootIds"],
        &json!([root["id"]]),
    );
    check.eq("generation type", &generation["type"], &json!("GENERATION"));
    check.eq(
        "generation parent",
        &generation["parentObservationId"],
        &root["id"],
    );
    check.eq(
        "generation id as the SDK saw it",
        &generation["id"],
        &out["generationId"],
    );
    check.eq("generation model", &generation["model"], &json!("gpt-4o"));
    check.eq(
        "generation usage",
        &generation["usageDetails"],
        &json!({"input": 1000, "output": 500, "cache_read_input_tokens": 20, "total": 1520}),
    );
    // gpt-4o: 1000 × 2.5e-6 + 500 × 1e-5 + 20 cache-read tokens × 1.25e-6.
    check.eq(
        "generation cost",
        &generation["costDetails"]["total"],
        &json!(0.007525),
    );
    check.that(
        "completionStartTime set",
        generation["completionStartTime"].is_string(),
        &generation["completionStartTime"],
    );
    check.eq("tool type", &tool["type"], &json!("TOOL"));
    check.eq("error level", &bad["level"], &json!("ERROR"));
    check.eq(
        "status message",
        &bad["statusMessage"],
        &json!("citation missing"),
    );
    for o in obs.as_array().unwrap() {
        check.eq(
            "userId propagated",
            &o["userId"],
            &json!(format!("user-{run}")),
        );
        check.eq(
            "sessionId propagated",
            &o["sessionId"],
            &json!(format!("session-{run}")),
        );
        check.eq("environment", &o["environment"], &json!("live-test"));
        check.eq("traceId", &o["traceId"], &out["manualTraceId"]);
    }

    let mut scores: Vec<(String, Value, String, String)> = out["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["value"].clone(),
                s["class"].as_str().unwrap().to_string(),
                s["subject"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    scores.sort_by(|a, b| a.0.cmp(&b.0));
    check.eq(
        "scores as the SDK parsed them",
        &json!(scores),
        &json!([
            ["helpfulness", 0.9, "ScoreV3_Numeric", "observation"],
            ["thumbs", true, "ScoreV3_Boolean", "trace"],
            ["verdict", "correct", "ScoreV3_Categorical", "trace"],
        ]),
    );

    let decorated = &out["decorated"];
    let llm = one(decorated, "decorated-llm");
    let pipeline = one(decorated, "decorated_pipeline");
    check.eq(
        "decorated generation parent",
        &llm["parentObservationId"],
        &pipeline["id"],
    );
    check.eq("decorated model", &llm["model"], &json!("gpt-4o-mini"));
    check.eq(
        "decorated usage",
        &llm["usageDetails"],
        &json!({"input": 12, "output": 7, "total": 19}),
    );
    check.that(
        "decorated cost priced",
        positive(&llm["costDetails"]["total"]),
        &llm["costDetails"],
    );
    check.eq(
        "score_current_trace",
        &out["decoratedScores"][0]["name"],
        &json!("pipeline-score"),
    );
    check.finish();
}

fn litellm(server: &Server, mode: &str, run: &str) {
    let venv = Venv::ensure("litellm", "requirements-litellm.txt");
    let mut env = sdk5_env(server);
    env.push(("SIGHTLINE_RUN_ID", run.to_string()));
    venv.run("litellm_live.py", &[mode], &env);
}

/// What both LiteLLM callbacks must produce: three generations with LiteLLM's names, models,
/// mock usage, priced, the failed call as an ERROR.
fn check_litellm(out: &Value, run: &str, check: &mut Findings) {
    let obs = &out["observations"];
    let generation = |name: &str| {
        by_name(obs, name)
            .into_iter()
            .find(|o| o["type"] == "GENERATION")
            .cloned()
            .unwrap_or_else(|| panic!("no generation {name:?} in {obs:#}"))
    };
    let chat = generation("litellm-chat-generation");
    let stream = generation("litellm-stream-generation");
    let error = generation("litellm-error-generation");
    check.eq("chat model", &chat["model"], &json!("gpt-4o"));
    check.eq(
        "chat usage input",
        &chat["usageDetails"]["input"],
        &json!(10),
    );
    check.eq(
        "chat usage output",
        &chat["usageDetails"]["output"],
        &json!(20),
    );
    // gpt-4o: 10 × 2.5e-6 + 20 × 1e-5 (or LiteLLM's own identical price).
    check.eq("chat cost", &chat["totalCost"], &json!(0.000225));
    check.that(
        "stream usage reported",
        positive(&stream["usageDetails"]["output"]),
        &stream["usageDetails"],
    );
    check.that(
        "stream priced",
        positive(&stream["totalCost"]),
        &stream["totalCost"],
    );
    check.eq("error level", &error["level"], &json!("ERROR"));
    check.eq(
        "chat trace name",
        &chat["traceName"],
        &json!("litellm-chat"),
    );
    for o in [&chat, &stream, &error] {
        check.eq("userId", &o["userId"], &json!(format!("user-{run}")));
        check.eq(
            "sessionId",
            &o["sessionId"],
            &json!(format!("session-{run}")),
        );
        let mut tags: Vec<String> = o["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        check.eq("tags", &json!(tags), &json!(["litellm", "live"]));
    }
}

#[test]
fn litellm_langfuse_callback() {
    let server = Server::start();
    let run = unique_id("llm-lf");
    litellm(&server, "langfuse", &run);
    let out = read_back(&server, &format!("session-{run}"), 3);
    let mut check = Findings::default();
    check_litellm(&out, &run, &mut check);
    let error = one(&out["observations"], "litellm-error-generation");
    check.that(
        "error status message names the exception",
        error["statusMessage"]
            .as_str()
            .is_some_and(|m| m.contains("RateLimitError")),
        &error["statusMessage"],
    );
    // The callback uses the caller's trace ids.
    check.eq(
        "trace id from metadata",
        &one(&out["observations"], "litellm-chat-generation")["traceId"],
        &json!(format!("{run}-chat")),
    );
    check.finish();
}

#[test]
fn litellm_langfuse_otel_callback() {
    let server = Server::start();
    let run = unique_id("llm-otel");
    litellm(&server, "langfuse_otel", &run);
    // Two spans per successful call (the LLM span and its raw-response child), one for the error.
    let out = read_back(&server, &format!("session-{run}"), 5);
    let mut check = Findings::default();
    check_litellm(&out, &run, &mut check);
    check.eq(
        "observation count",
        &json!(out["observations"].as_array().unwrap().len()),
        &json!(5),
    );
    check.finish();
}

#[test]
fn plain_opentelemetry_sdk_with_only_an_endpoint() {
    let venv = Venv::ensure("otel", "requirements-otel.txt");
    let server = Server::start();
    let run = unique_id("otel");
    let auth = basic_auth(PUBLIC_KEY, SECRET_KEY).replace(' ', "%20");
    venv.run(
        "otel_live.py",
        &[],
        &[
            // The exporter appends /v1/traces: Sightline serves the OTel default path too.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", server.base_url()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("Authorization={auth}"),
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string()),
            ("SIGHTLINE_RUN_ID", run.clone()),
        ],
    );
    let out = read_back(&server, &format!("session-{run}"), 5);
    let obs = &out["observations"];
    let mut check = Findings::default();
    check.eq(
        "observation count",
        &json!(obs.as_array().unwrap().len()),
        &json!(5),
    );
    let root = one(obs, "otel-agent-run");
    check.eq("root is root", &root["isRoot"], &json!(true));
    check.eq(
        "root input from input.value",
        &root["input"],
        &json!("Plan a trip to see sea snakes"),
    );
    check.eq(
        "trace name from the root span",
        &root["traceName"],
        &json!("otel-agent-run"),
    );
    check.eq(
        "environment from deployment.environment.name",
        &root["environment"],
        &json!("staging"),
    );
    let chat = one(obs, "chat gpt-4o");
    check.eq("current semconv type", &chat["type"], &json!("GENERATION"));
    check.eq(
        "response model wins",
        &chat["model"],
        &json!("gpt-4o-2024-08-06"),
    );
    check.eq(
        "usage",
        &chat["usageDetails"],
        &json!({"input": 1000, "output": 500, "total": 1500}),
    );
    check.eq(
        "gpt-4o price for 1000 in + 500 out",
        &chat["totalCost"],
        &json!(0.0075),
    );
    let legacy = one(obs, "chat gpt-4o-mini");
    check.eq("older semconv type", &legacy["type"], &json!("GENERATION"));
    check.eq(
        "older semconv usage",
        &legacy["usageDetails"],
        &json!({"input": 50, "output": 10, "total": 60}),
    );
    check.eq(
        "flattened prompt rebuilt",
        &legacy["input"],
        &json!(r#"[{"role":"user","content":"Summarise"}]"#),
    );
    let tool = one(obs, "get_weather");
    check.eq(
        "tool named by gen_ai.tool.name",
        &tool["type"],
        &json!("TOOL"),
    );
    let bad = one(obs, "validate-answer");
    check.eq("status ERROR → level", &bad["level"], &json!("ERROR"));
    check.eq(
        "status message",
        &bad["statusMessage"],
        &json!("answer failed validation"),
    );
    for o in obs.as_array().unwrap() {
        check.eq(
            "user from user.id",
            &o["userId"],
            &json!(format!("user-{run}")),
        );
    }
    check.finish();
}
