//! Cost, custom models and usage analytics end to end: batch ingestion in, Langfuse's read,
//! models and metrics APIs out, against the real router in-process.

mod common;

use common::in_process::InProcess;
use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Api {
    server: InProcess,
    http: Client,
}

const DAY: &str = "2026-01-05";

impl Api {
    fn new() -> Api {
        Self::with(InProcess::start())
    }

    fn with(server: InProcess) -> Api {
        Api {
            server,
            http: Client::new(),
        }
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.base))
            .basic_auth("pk-lf-test", Some("sk-lf-test"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn ingest(&self, batch: Vec<Value>) {
        let (status, body) = self.send(
            Method::POST,
            "/api/public/ingestion",
            Some(json!({ "batch": batch })),
        );
        assert_eq!(status, 207, "{body}");
        assert_eq!(body["errors"], json!([]), "{body}");
    }

    /// A trace with one generation of `model` at `hour` of the test day; `extra` goes into the
    /// generation body (usage, costDetails, input/output...).
    fn generation(&self, id: &str, model: &str, hour: u32, extra: Value) {
        let ts = format!("{DAY}T{hour:02}:00:00.000Z");
        let end = format!("{DAY}T{hour:02}:00:02.000Z");
        let mut body = json!({
            "id": id, "traceId": format!("t-{id}"), "name": "llm", "model": model,
            "startTime": ts, "endTime": end,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.ingest(vec![
            json!({"id": format!("e-t-{id}"), "type": "trace-create", "timestamp": ts,
                   "body": {"id": format!("t-{id}"), "name": "chat", "userId": "u1", "timestamp": ts}}),
            json!({"id": format!("e-g-{id}"), "type": "generation-create", "timestamp": ts, "body": body}),
        ]);
    }

    fn observation(&self, id: &str) -> Value {
        self.get(&format!("/api/public/observations/{id}"))
    }

    fn metrics(&self, version: &str, query: Value) -> Value {
        let q = serde_json::to_string(&query).unwrap();
        let path = format!("/api/public/{version}metrics?query={}", url_encode(&q));
        self.get(&path)["data"].clone()
    }

    fn verify_rollups(&self) {
        let diffs = sightline::analytics::verify(&self.server.state.store).unwrap();
        assert!(diffs.is_empty(), "rollups differ: {diffs:#?}");
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn usage(input: u64, output: u64) -> Value {
    json!({"usageDetails": {"input": input, "output": output}})
}

fn range() -> (String, String) {
    (
        format!("{DAY}T00:00:00.000Z"),
        "2026-01-06T00:00:00.000Z".into(),
    )
}

#[test]
fn gpt4o_1000_in_500_out_costs_0_0075_everywhere() {
    let api = Api::new();
    api.generation("g1", "gpt-4o", 10, usage(1000, 500));
    let o = api.observation("g1");
    assert_eq!(o["calculatedTotalCost"], json!(0.0075), "{o}");
    assert_eq!(o["calculatedInputCost"], json!(0.0025));
    assert_eq!(o["calculatedOutputCost"], json!(0.005));
    assert_eq!(
        o["costDetails"],
        json!({"input": 0.0025, "output": 0.005, "total": 0.0075})
    );
    assert_eq!(
        o["usageDetails"],
        json!({"input": 1000, "output": 500, "total": 1500})
    );
    assert_eq!(o["inputPrice"], json!(2.5e-6));
    let t = api.get("/api/public/traces/t-g1");
    assert_eq!(t["totalCost"], json!(0.0075));
    // v2 observations: prices are strings, cost in the usage group.
    let v2 = api.get("/api/public/v2/observations?traceId=t-g1");
    let row = &v2["data"][0];
    assert_eq!(row["inputPrice"], json!("0.0000025"), "{row}");
    assert_eq!(row["outputPrice"], json!("0.00001"));
    assert_eq!(row["totalCost"], json!(0.0075));
    // Daily metrics and the metrics API report the same figure.
    let daily = api.get("/api/public/metrics/daily");
    assert_eq!(daily["meta"]["totalItems"], json!(1));
    let d = &daily["data"][0];
    assert_eq!(d["date"], json!(DAY));
    assert_eq!(d["countTraces"], json!(1));
    assert_eq!(d["countObservations"], json!(1));
    assert_eq!(d["totalCost"], json!(0.0075));
    assert_eq!(
        d["usage"],
        json!([{"model": "gpt-4o", "inputUsage": 1000, "outputUsage": 500, "totalUsage": 1500,
                "countObservations": 1, "countTraces": 1, "totalCost": 0.0075, "countUnpriced": 0}])
    );
    let (from, to) = range();
    let rows = api.metrics(
        "",
        json!({"view": "observations", "dimensions": [{"field": "providedModelName"}],
               "metrics": [{"measure": "totalCost", "aggregation": "sum"},
                           {"measure": "count", "aggregation": "count"},
                           {"measure": "totalTokens", "aggregation": "sum"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    assert_eq!(
        rows,
        json!([{"providedModelName": "gpt-4o", "sum_totalCost": 0.0075, "count_count": "1",
                "sum_totalTokens": "1500"}])
    );
    api.verify_rollups();
}

#[test]
fn cached_reasoning_and_tiered_usage_are_priced_by_their_own_prices() {
    let api = Api::new();
    api.generation(
        "cached",
        "gpt-4o",
        1,
        json!({"usageDetails": {"input": 20, "input_cached_tokens": 100, "output": 30, "total": 150}}),
    );
    assert_eq!(
        api.observation("cached")["costDetails"],
        json!({"input": 5e-05, "input_cached_tokens": 1.25e-04, "output": 3e-04, "total": 4.75e-04})
    );
    api.generation(
        "reasoning",
        "openai/o3",
        2,
        json!({"usageDetails": {"input": 100, "output": 200, "output_reasoning_tokens": 300}}),
    );
    let o = api.observation("reasoning");
    assert_eq!(o["calculatedTotalCost"], json!(4.2e-03), "{o}");
    assert_eq!(o["costDetails"]["output_reasoning_tokens"], json!(2.4e-03));
    api.generation("tier", "gemini-2.5-pro", 3, usage(250_000, 1000));
    let o = api.observation("tier");
    assert_eq!(o["usagePricingTierName"], json!("Large Context"));
    assert_eq!(o["calculatedTotalCost"], json!(0.64));
    api.verify_rollups();
}

#[test]
fn client_supplied_cost_wins_over_the_price_list() {
    let api = Api::new();
    api.generation(
        "c1",
        "gpt-4o",
        4,
        json!({"usageDetails": {"input": 1000, "output": 500}, "costDetails": {"input": 1.0, "output": 2.0}}),
    );
    let o = api.observation("c1");
    assert_eq!(o["calculatedTotalCost"], json!(3.0), "{o}");
    assert_eq!(api.get("/api/public/traces/t-c1")["totalCost"], json!(3.0));
}

#[test]
fn unknown_models_are_reported_unpriced_not_zero() {
    let api = Api::new();
    api.generation("u1", "acme-frontier-9", 5, usage(100, 50));
    api.generation("p1", "gpt-4o", 5, usage(1000, 500));
    let o = api.observation("u1");
    assert_eq!(o["calculatedTotalCost"], Value::Null, "{o}");
    assert_eq!(o["costDetails"], json!({}));
    assert_eq!(o["modelId"], Value::Null);
    let d = &api.get("/api/public/metrics/daily")["data"][0];
    assert_eq!(d["countUnpriced"], json!(1), "{d}");
    let acme = d["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["model"] == json!("acme-frontier-9"))
        .unwrap();
    assert_eq!(acme["countUnpriced"], json!(1));
    let unpriced = api.get("/api/public/metrics/unpriced");
    assert_eq!(
        unpriced["data"],
        json!([{"model": "acme-frontier-9", "countObservations": 1, "firstSeen": DAY, "lastSeen": DAY}])
    );
    let (from, to) = range();
    let rows = api.metrics(
        "v2/",
        json!({"view": "observations", "metrics": [{"measure": "unpricedCount", "aggregation": "sum"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    assert_eq!(rows, json!([{"sum_unpricedCount": "1"}]));
}

#[test]
fn tokenizer_fallback_counts_a_known_string() {
    let api = Api::new();
    api.generation(
        "tok",
        "gpt-4o",
        6,
        json!({"input": "hello world", "output": "hello world"}),
    );
    let o = api.observation("tok");
    assert_eq!(
        o["usageDetails"],
        json!({"input": 2, "output": 2, "total": 4}),
        "{o}"
    );
    assert_eq!(o["usageEstimated"], json!(true));
    assert_eq!(o["calculatedTotalCost"], json!(2.5e-05));
}

#[test]
fn a_model_created_through_the_api_overrides_the_built_in_until_deleted() {
    let api = Api::new();
    let (status, created) = api.send(
        Method::POST,
        "/api/public/models",
        Some(
            json!({"modelName": "my-gpt-4o", "matchPattern": "(?i)^gpt-4o$", "unit": "TOKENS",
                    "inputPrice": 0.000001, "outputPrice": 0.000002}),
        ),
    );
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["isLangfuseManaged"], json!(false));
    assert_eq!(created["pricingTiers"][0]["name"], json!("Standard"));
    let id = created["id"].as_str().unwrap().to_string();
    // Priced with the new model right after the POST answered (Langfuse bug #2491: the project
    // model wins although a built-in pattern matches too).
    api.generation("m1", "gpt-4o", 7, usage(1000, 500));
    assert_eq!(api.observation("m1")["calculatedTotalCost"], json!(0.002));
    assert_eq!(api.observation("m1")["modelId"], json!(id));

    let one = api.get(&format!("/api/public/models/{id}"));
    assert_eq!(one["modelName"], json!("my-gpt-4o"));
    let list = api.get("/api/public/models?limit=100");
    assert!(
        list["meta"]["totalItems"].as_u64().unwrap() > 100,
        "{}",
        list["meta"]
    );
    let page2 = api.get("/api/public/models?limit=100&page=2");
    assert!(!page2["data"].as_array().unwrap().is_empty());
    let (status, dup) = api.send(
        Method::POST,
        "/api/public/models",
        Some(json!({"modelName": "my-gpt-4o", "matchPattern": "x", "totalPrice": 1})),
    );
    assert_eq!(status, 400, "{dup}");
    let (status, bad) = api.send(
        Method::POST,
        "/api/public/models",
        Some(json!({"modelName": "x", "matchPattern": "(", "inputPrice": 1})),
    );
    assert_eq!(status, 400, "{bad}");

    // Built-ins cannot be deleted.
    let builtin = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["isLangfuseManaged"] == json!(true))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = api.send(
        Method::DELETE,
        &format!("/api/public/models/{builtin}"),
        None,
    );
    assert_eq!(status, 404);
    let (status, body) = api.send(Method::DELETE, &format!("/api/public/models/{id}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], json!("Model successfully deleted"));
    let (status, _) = api.send(Method::GET, &format!("/api/public/models/{id}"), None);
    assert_eq!(status, 404);
    api.generation("m2", "gpt-4o", 8, usage(1000, 500));
    assert_eq!(api.observation("m2")["calculatedTotalCost"], json!(0.0075));
    api.verify_rollups();
}

#[test]
fn a_model_from_the_config_file_overrides_the_built_in() {
    let raw: sightline::config::RawConfig = toml::from_str(
        "[[models]]\nmodelName = \"cheap-4o\"\nmatchPattern = \"(?i)^gpt-4o$\"\ninputPrice = 0.000001\noutputPrice = 0.000001\n",
    )
    .unwrap();
    let models = raw.validate().unwrap().models;
    let server = InProcess::start_configured(tempfile::tempdir().unwrap(), None, |c| {
        c.models = models;
    });
    let api = Api::with(server);
    api.generation("cfg", "gpt-4o", 9, usage(1000, 500));
    assert_eq!(api.observation("cfg")["calculatedTotalCost"], json!(0.0015));
    let m = api.get("/api/public/models/config-cheap-4o");
    assert_eq!(m["isLangfuseManaged"], json!(false));
    let (status, _) = api.send(Method::DELETE, "/api/public/models/config-cheap-4o", None);
    assert_eq!(status, 404, "config models are changed in the config file");
}

#[test]
fn metrics_query_answers_langfuse_shapes_from_rollups_and_scans() {
    let api = Api::new();
    api.generation("a", "gpt-4o", 1, usage(1000, 500));
    api.generation("b", "gpt-4o", 1, usage(1000, 500));
    api.generation("c", "gpt-4o-mini", 13, usage(1000, 0));
    let (from, to) = range();
    // Time series by hour, filled with empty buckets (Langfuse's WITH FILL).
    let rows = api.metrics(
        "v2/",
        json!({"view": "observations",
               "metrics": [{"measure": "count", "aggregation": "count"}],
               "filters": [{"column": "providedModelName", "operator": "=", "value": "gpt-4o", "type": "string"}],
               "timeDimension": {"granularity": "hour"},
               "fromTimestamp": from, "toTimestamp": to}),
    );
    assert_eq!(rows.as_array().unwrap().len(), 24, "{rows}");
    assert_eq!(
        rows[1],
        json!({"count_count": "2", "time_dimension": format!("{DAY}T01:00:00.000Z")})
    );
    assert_eq!(rows[0]["count_count"], json!("0"));
    // Latency percentiles come from the histograms (every generation took 2 s).
    let rows = api.metrics(
        "",
        json!({"view": "observations", "dimensions": [{"field": "providedModelName"}],
               "metrics": [{"measure": "latency", "aggregation": "p95"}, {"measure": "latency", "aggregation": "avg"}],
               "orderBy": [{"field": "providedModelName", "direction": "asc"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    let p95 = rows[0]["p95_latency"].as_f64().unwrap();
    assert!((p95 - 2000.0).abs() / 2000.0 < 0.1, "{rows}");
    assert_eq!(rows[0]["avg_latency"], json!(2000.0));
    // Two non-environment dimensions and max: the record scan answers, exactly.
    let rows = api.metrics(
        "",
        json!({"view": "observations", "dimensions": [{"field": "providedModelName"}, {"field": "traceName"}],
               "metrics": [{"measure": "latency", "aggregation": "max"}, {"measure": "totalCost", "aggregation": "sum"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    assert_eq!(
        rows[0],
        json!({"providedModelName": "gpt-4o", "traceName": "chat", "max_latency": "2000", "sum_totalCost": 0.015})
    );
    // Traces view (v1 only): cost per user from trace rollups.
    let rows = api.metrics(
        "",
        json!({"view": "traces", "dimensions": [{"field": "userId"}],
               "metrics": [{"measure": "count", "aggregation": "count"}, {"measure": "totalCost", "aggregation": "sum"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    let cost = 0.0075 * 2.0 + 1000.0 * 1.5e-7;
    assert_eq!(rows[0]["userId"], json!("u1"));
    assert_eq!(rows[0]["count_count"], json!("3"));
    assert!(
        (rows[0]["sum_totalCost"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{rows}"
    );
    // Score views scan scores.
    let (status, _) = api.send(
        Method::POST,
        "/api/public/scores",
        Some(json!({"traceId": "t-a", "name": "quality", "value": 0.5, "timestamp": format!("{DAY}T02:00:00Z")})),
    );
    assert_eq!(status, 200);
    let rows = api.metrics(
        "v2/",
        json!({"view": "scores-numeric", "dimensions": [{"field": "name"}],
               "metrics": [{"measure": "value", "aggregation": "avg"}],
               "fromTimestamp": from, "toTimestamp": to}),
    );
    assert_eq!(rows, json!([{"name": "quality", "avg_value": 0.5}]));
    // Unsupported combinations are a clear 400.
    let q = json!({"view": "traces", "metrics": [{"measure": "count", "aggregation": "count"}],
                   "fromTimestamp": from, "toTimestamp": to});
    let (status, body) = api.send(
        Method::GET,
        &format!(
            "/api/public/v2/metrics?query={}",
            url_encode(&q.to_string())
        ),
        None,
    );
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("traces view"),
        "{body}"
    );
    let (status, _) = api.send(Method::GET, "/api/public/metrics", None);
    assert_eq!(status, 400);
}

#[test]
fn daily_metrics_filter_by_trace_and_follow_deletes() {
    let api = Api::new();
    api.generation("x", "gpt-4o", 1, usage(1000, 500));
    api.generation("y", "gpt-4o", 2, usage(1000, 500));
    let d = api.get("/api/public/metrics/daily?userId=u1&traceName=chat");
    assert_eq!(d["data"][0]["totalCost"], json!(0.015), "{d}");
    assert_eq!(d["data"][0]["usage"][0]["countTraces"], json!(2));
    let none = api.get("/api/public/metrics/daily?userId=nobody");
    assert_eq!(none["data"], json!([]));
    let (status, _) = api.send(Method::DELETE, "/api/public/traces/t-x", None);
    assert_eq!(status, 200);
    let d = api.get("/api/public/metrics/daily");
    assert_eq!(d["data"][0]["totalCost"], json!(0.0075), "{d}");
    assert_eq!(d["data"][0]["countTraces"], json!(1));
    api.verify_rollups();
}

/// `sightline recost` re-prices stored generations after a price is added, offline, and the
/// rollups follow.
#[test]
fn recost_reprices_after_a_config_model_is_added() {
    let api = Api::new();
    api.generation("r1", "acme-frontier-9", 3, usage(1000, 1000));
    assert_eq!(api.observation("r1")["calculatedTotalCost"], Value::Null);
    let dir = api.server.stop();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[[models]]\nmodelName = \"acme\"\nmatchPattern = \"(?i)^acme-frontier-9$\"\ninputPrice = 0.000001\noutputPrice = 0.000003\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "recost",
            "--since",
            DAY,
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("SIGHTLINE_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 changed"), "{stdout}");
    let raw = sightline::config::RawConfig::from_file(&config).unwrap();
    let models = raw.validate().unwrap().models;
    let api = Api::with(InProcess::start_configured(dir, None, |c| {
        c.models = models
    }));
    assert_eq!(api.observation("r1")["calculatedTotalCost"], json!(0.004));
    let d = &api.get("/api/public/metrics/daily")["data"][0];
    assert_eq!(d["totalCost"], json!(0.004), "{d}");
    assert_eq!(d["countUnpriced"], json!(0));
    api.verify_rollups();
}
