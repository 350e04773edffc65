//! The real Langfuse Python SDK 2.60.10 (from PyPI, in a venv) writes a trace through batch
//! ingestion and reads it back with its own `fetch_trace`, `fetch_observations`,
//! `fetch_observation` and `client.sessions.get`: the values asserted here went through the
//! SDK's pydantic models, so they prove the models parse Sightline's JSON.

mod common;

use common::venv::Venv;
use common::{Findings, PROJECT_ID, PUBLIC_KEY, SECRET_KEY, Server, unique_id};
use serde_json::{Value, json};

#[test]
fn sdk_v2_writes_and_reads_back_a_full_trace() {
    let venv = Venv::ensure("langfuse2", "requirements-langfuse2.txt");
    let server = Server::start();
    let trace_id = unique_id("sdk-v2-trace");
    let session_id = unique_id("sdk-v2-session");

    let out = run_script(&venv, &server, &trace_id, &session_id);
    let mut check = Findings::default();

    check.eq("auth_check()", &out["auth_check"], &json!(true));

    // Trace, as parsed into TraceWithFullDetails.
    let trace = &out["trace"];
    check.eq(
        "trace class",
        &trace["class"],
        &json!("TraceWithFullDetails"),
    );
    check.eq("trace.id", &trace["id"], &json!(trace_id));
    check.eq("trace.name", &trace["name"], &json!("sdk-v2-roundtrip"));
    check.eq("trace.user_id", &trace["user_id"], &json!("sdk-user-1"));
    check.eq("trace.session_id", &trace["session_id"], &json!(session_id));
    check.eq("trace.release", &trace["release"], &json!("sdk-release-1"));
    check.eq("trace.version", &trace["version"], &json!("trace-v1"));
    check.eq(
        "trace.environment",
        &trace["environment"],
        &json!("sdk-test"),
    );
    check.eq("trace.public", &trace["public"], &json!(false));
    check.eq(
        "trace.input",
        &trace["input"],
        &json!({"question": "what is sightline?"}),
    );
    check.eq(
        "trace.output",
        &trace["output"],
        &json!({"answer": "hi there"}),
    );
    check.eq(
        "trace.metadata.tenant",
        &trace["metadata"]["tenant"],
        &json!("acme"),
    );
    check.eq(
        "trace.metadata.stage",
        &trace["metadata"]["stage"],
        &json!("done"),
    );
    let mut tags: Vec<String> = trace["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    check.eq("trace.tags", &json!(tags), &json!(["sdk", "v2"]));
    check.that(
        "trace.html_path is a non-empty string",
        out["trace_html_path"]
            .as_str()
            .is_some_and(|path| !path.is_empty()),
        &out["trace_html_path"],
    );
    check.that(
        "trace.latency is a number >= 0",
        out["trace_latency"]
            .as_f64()
            .is_some_and(|latency| latency >= 0.0),
        &out["trace_latency"],
    );

    // Observations embedded in the trace (ObservationsView).
    let ids = &out["ids"];
    let observations = out["trace_observations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check.eq(
        "number of observations in fetch_trace",
        &json!(observations.len()),
        &json!(6),
    );
    let find = |name: &str| -> Value {
        observations
            .iter()
            .find(|obs| obs["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let root = find("handle-request");
    let child = find("retrieve-context");
    let generation = find("chat-completion");
    let summarize = find("summarize");
    let event = find("cache-miss");
    let failing = find("post-process");

    check.eq("root.id", &root["id"], &ids["root"]);
    check.eq("root.type", &root["type"], &json!("SPAN"));
    check.eq("root.parent", &root["parent_observation_id"], &Value::Null);
    check.eq(
        "root.output",
        &root["output"],
        &json!({"answer": "hi there"}),
    );
    check.eq(
        "root.metadata.component",
        &root["metadata"]["component"],
        &json!("api"),
    );
    check.that(
        "root.end_time is set",
        root["end_time"].is_string(),
        &root["end_time"],
    );
    check.eq("child.id", &child["id"], &ids["child"]);
    check.eq("child.type", &child["type"], &json!("SPAN"));
    check.eq(
        "child.parent",
        &child["parent_observation_id"],
        &ids["root"],
    );
    check.eq("child.output", &child["output"], &json!({"documents": 3}));

    check_generation(&mut check, "fetch_trace", &generation, ids);

    check.eq("summarize.id", &summarize["id"], &ids["summarize"]);
    check.eq("summarize.type", &summarize["type"], &json!("GENERATION"));
    check.eq(
        "summarize.parent (created on the trace)",
        &summarize["parent_observation_id"],
        &Value::Null,
    );
    check.eq(
        "summarize.model",
        &summarize["model"],
        &json!("gpt-4o-mini"),
    );
    check.eq(
        "summarize.usage_details",
        &summarize["usage_details"],
        &json!({"input": 50, "output": 10, "cache_read_input_tokens": 5, "total": 65}),
    );
    check.eq(
        "summarize.usage.input (usageDetails keys containing \"input\")",
        &summarize["usage"]["input"],
        &json!(55),
    );
    check.eq(
        "summarize.usage.output",
        &summarize["usage"]["output"],
        &json!(10),
    );
    check.eq(
        "summarize.usage.total",
        &summarize["usage"]["total"],
        &json!(65),
    );

    check.eq("event.type", &event["type"], &json!("EVENT"));
    check.eq("event.level", &event["level"], &json!("WARNING"));
    check.eq(
        "event.parent",
        &event["parent_observation_id"],
        &ids["root"],
    );
    check.eq(
        "event.metadata.cache",
        &event["metadata"]["cache"],
        &json!("redis"),
    );

    check.eq("failing.id", &failing["id"], &ids["failing"]);
    check.eq("failing.level", &failing["level"], &json!("ERROR"));
    check.eq(
        "failing.status_message",
        &failing["status_message"],
        &json!("validation failed: empty list"),
    );
    for obs in &observations {
        check.eq(
            &format!("{}.environment", obs["name"]),
            &obs["environment"],
            &json!("sdk-test"),
        );
        check.eq(
            &format!("{}.trace_id", obs["name"]),
            &obs["trace_id"],
            &json!(trace_id),
        );
        check.eq(
            &format!("{}.class", obs["name"]),
            &obs["class"],
            &json!("ObservationsView"),
        );
    }
    for obs in [&root, &child, &generation, &summarize] {
        check.eq(
            &format!("{}.level", obs["name"]),
            &obs["level"],
            &json!("DEFAULT"),
        );
    }

    // Scores embedded in the trace (the Score union, discriminated by dataType).
    let scores = out["trace_scores"].as_array().cloned().unwrap_or_default();
    check.eq(
        "number of scores in fetch_trace",
        &json!(scores.len()),
        &json!(3),
    );
    let score = |name: &str| -> Value {
        scores
            .iter()
            .find(|score| score["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let helpfulness = score("helpfulness");
    check.eq(
        "helpfulness.class",
        &helpfulness["class"],
        &json!("Score_Numeric"),
    );
    check.eq("helpfulness.value", &helpfulness["value"], &json!(0.9));
    check.eq(
        "helpfulness.comment",
        &helpfulness["comment"],
        &json!("concise"),
    );
    check.eq(
        "helpfulness.observation_id",
        &helpfulness["observation_id"],
        &Value::Null,
    );
    check.eq("helpfulness.source", &helpfulness["source"], &json!("API"));
    let accurate = score("accurate");
    check.eq(
        "accurate.class",
        &accurate["class"],
        &json!("Score_Boolean"),
    );
    check.eq("accurate.value", &accurate["value"], &json!(1.0));
    check.eq(
        "accurate.string_value",
        &accurate["string_value"],
        &json!("True"),
    );
    check.eq(
        "accurate.observation_id",
        &accurate["observation_id"],
        &ids["generation"],
    );
    let correctness = score("correctness");
    check.eq(
        "correctness.class",
        &correctness["class"],
        &json!("Score_Categorical"),
    );
    check.eq(
        "correctness.string_value",
        &correctness["string_value"],
        &json!("correct"),
    );
    for score in &scores {
        check.eq(
            &format!("score {}.trace_id", score["name"]),
            &score["trace_id"],
            &json!(trace_id),
        );
    }

    // fetch_observations(trace_id=...) and fetch_observation(id).
    let mut listed: Vec<String> = out["listed_observations"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    listed.sort();
    let mut embedded: Vec<String> = observations
        .iter()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect();
    embedded.sort();
    check.eq(
        "fetch_observations ids = fetch_trace observation ids",
        &json!(listed),
        &json!(embedded),
    );
    check.eq(
        "fetch_observations meta.total_items",
        &out["listed_meta"]["total_items"],
        &json!(6),
    );
    check.eq(
        "fetch_observations meta.page",
        &out["listed_meta"]["page"],
        &json!(1),
    );
    let single = &out["single_observation"];
    // 2.60.10's `fetch_observation` parses GET /observations/{id} into ObservationsView.
    check.eq(
        "fetch_observation class",
        &single["class"],
        &json!("ObservationsView"),
    );
    check_generation(&mut check, "fetch_observation", single, ids);

    // client.sessions.get(session_id).
    let session = &out["session"];
    check.eq(
        "session class",
        &session["class"],
        &json!("SessionWithTraces"),
    );
    check.eq("session.id", &session["id"], &json!(session_id));
    check.eq(
        "session.project_id",
        &session["project_id"],
        &json!(PROJECT_ID),
    );
    check.eq(
        "session.trace_ids",
        &session["trace_ids"],
        &json!([trace_id]),
    );
    check.eq(
        "session.traces[0].user_id",
        &session["traces"][0]["user_id"],
        &json!("sdk-user-1"),
    );

    check.finish();

    // Kept last and separate: fails only for a missing cost model.
    let generation_cost = &generation["calculated_total_cost"];
    let summarize_cost = &summarize["calculated_total_cost"];
    let trace_cost = &out["trace_total_cost"];
    assert!(
        [generation_cost, summarize_cost, trace_cost]
            .iter()
            .all(|cost| cost.as_f64().is_some_and(|cost| cost > 0.0)),
        "cost_model_calculated_cost_is_nonzero: gpt-4o / gpt-4o-mini generations with usage must \
         have a calculated cost: chat-completion {generation_cost}, summarize {summarize_cost}, \
         trace total_cost {trace_cost}"
    );
}

/// The streamed gpt-4o generation, as seen through any of the SDK's read calls.
fn check_generation(check: &mut Findings, via: &str, generation: &Value, ids: &Value) {
    let what = |field: &str| format!("{via}: chat-completion.{field}");
    check.eq(&what("id"), &generation["id"], &ids["generation"]);
    check.eq(&what("type"), &generation["type"], &json!("GENERATION"));
    check.eq(
        &what("parent"),
        &generation["parent_observation_id"],
        &ids["root"],
    );
    check.eq(&what("model"), &generation["model"], &json!("gpt-4o"));
    let params = &generation["model_parameters"];
    check.that(
        &what("model_parameters.temperature == 0.2 (number or \"0.2\")"),
        params["temperature"].as_f64() == Some(0.2) || params["temperature"] == "0.2",
        params,
    );
    check.that(
        &what("model_parameters.max_tokens == 256"),
        params["max_tokens"].as_f64() == Some(256.0) || params["max_tokens"] == "256",
        params,
    );
    check.that(
        &what("model_parameters.stream == true"),
        params["stream"] == true || params["stream"] == "true",
        params,
    );
    check.eq(
        &what("input"),
        &generation["input"],
        &json!([{"role": "user", "content": "hello"}]),
    );
    check.eq(
        &what("output"),
        &generation["output"],
        &json!({"role": "assistant", "content": "hi there"}),
    );
    check.eq(
        &what("metadata.provider"),
        &generation["metadata"]["provider"],
        &json!("openai"),
    );
    check.eq(
        &what("usage.input"),
        &generation["usage"]["input"],
        &json!(120),
    );
    check.eq(
        &what("usage.output"),
        &generation["usage"]["output"],
        &json!(40),
    );
    check.eq(
        &what("usage.total"),
        &generation["usage"]["total"],
        &json!(160),
    );
    check.eq(
        &what("usage_details"),
        &generation["usage_details"],
        &json!({"input": 120, "output": 40, "total": 160}),
    );
    let start = generation["start_time"].as_str().unwrap_or_default();
    let completion = generation["completion_start_time"]
        .as_str()
        .unwrap_or_default();
    let end = generation["end_time"].as_str().unwrap_or_default();
    check.that(
        &what("start_time <= completion_start_time <= end_time"),
        !completion.is_empty()
            && instant(start) <= instant(completion)
            && instant(completion) <= instant(end),
        &json!([start, completion, end]),
    );
}

/// Seconds since the epoch of an ISO datetime as Python's `isoformat()` prints it.
fn instant(text: &str) -> f64 {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("not an RFC 3339 datetime {text:?}: {err}"));
    parsed.unix_timestamp_nanos() as f64 / 1e9
}

fn run_script(venv: &Venv, server: &Server, trace_id: &str, session_id: &str) -> Value {
    venv.run_json(
        "sdk_v2_roundtrip.py",
        &[],
        &[
            ("LANGFUSE_HOST", server.base_url()),
            ("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY.to_string()),
            ("LANGFUSE_SECRET_KEY", SECRET_KEY.to_string()),
            ("SIGHTLINE_TRACE_ID", trace_id.to_string()),
            ("SIGHTLINE_SESSION_ID", session_id.to_string()),
        ],
    )
}
