//! LLM-as-a-judge end to end: the real binary drives evaluators against a fake
//! OpenAI-compatible server started by the test (real HTTP, canned completions, every request
//! recorded). Matching records get EVAL scores with the reasoning as comment and the rendered
//! template reaches the judge; others do not; sampling is deterministic; failures retry and
//! surface in the evaluator's status; a budget stops calls; the rate limit spaces calls; judge
//! calls are traced and never judged; backfill covers stored records; restarts (graceful or
//! kill -9) never score twice.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fake_judge::{Answer, FakeJudge, Seen, completion};
use common::{Resp, Server, eventually, now_iso, unique_id};
use serde_json::{Value, json};

const JUDGE_KEY: &str = "sk-judge-never-logged-7f3a";
const WAIT: Duration = Duration::from_secs(30);

fn judge_server(fake: &FakeJudge, concurrency: &str) -> Server {
    judge_server_limited(fake, concurrency, "0")
}

fn judge_server_limited(fake: &FakeJudge, concurrency: &str, per_minute: &str) -> Server {
    Server::builder()
        .env("SIGHTLINE_JUDGE_BASE_URL", &fake.base_url)
        .env("SIGHTLINE_JUDGE_API_KEY", JUDGE_KEY)
        .env("SIGHTLINE_JUDGE_REQUESTS_PER_MINUTE", per_minute)
        .env("SIGHTLINE_JUDGE_RETRY_BACKOFF_MS", "20")
        .env("SIGHTLINE_JUDGE_MAX_ATTEMPTS", "3")
        .env("SIGHTLINE_JUDGE_CONCURRENCY", concurrency)
        .start()
}

fn send(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
    let mut req = s.client().request(method.clone(), s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    s.send(&format!("{method} {path}"), req)
}

fn create_evaluator(s: &Server, mut body: Value) -> Value {
    if body.get("delaySeconds").is_none() {
        body["delaySeconds"] = json!(0);
    }
    send(s, reqwest::Method::POST, "/api/evaluators", Some(body)).expect_json(200)
}

fn status(s: &Server, id: &str) -> Value {
    s.get(&format!("/api/evaluators/{id}")).expect_json(200)["status"].clone()
}

fn wait_status(s: &Server, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, || {
        let st = status(s, id);
        if ok(&st) {
            Ok(st)
        } else {
            Err(format!("{what}: status is {st}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail()))
}

fn trace(id: &str, name: &str, tags: &[&str], input: Value, output: Value) -> Value {
    json!({"id": unique_id("ev"), "type": "trace-create", "timestamp": now_iso(),
           "body": {"id": id, "name": name, "tags": tags, "input": input, "output": output,
                    "metadata": {"customer": "acme"}}})
}

fn ingest(s: &Server, batch: Vec<Value>) {
    let r = s.post_json("/api/public/ingestion", &json!({"batch": batch}));
    let body = r.expect_json(207);
    assert_eq!(body["errors"], json!([]), "{body}");
}

/// Scores of a trace (and its observations), by name.
fn scores(s: &Server, trace: &str) -> Vec<Value> {
    s.get(&format!("/api/public/v2/scores?traceId={trace}&limit=100"))
        .expect_json(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn named(scores: &[Value], name: &str) -> Vec<Value> {
    scores
        .iter()
        .filter(|x| x["name"] == name)
        .cloned()
        .collect()
}

fn verdict(score: f64, reasoning: &str) -> String {
    json!({"score": score, "reasoning": reasoning}).to_string()
}

fn quiet_period() {
    // Long enough for several dispatcher rounds (it polls at least every second).
    std::thread::sleep(Duration::from_millis(2500));
}

#[test]
fn matching_records_get_eval_scores_and_judge_calls_are_traced_not_judged() {
    let fake = FakeJudge::start(|r: &Seen, _: &[Seen]| {
        let user = r.message("user");
        let content = if user.starts_with("Question:") {
            verdict(0.9, "Correct arithmetic.")
        } else if user.starts_with("GEN") {
            json!({"score": "polite", "reasoning": "Courteous wording."}).to_string()
        } else if user.starts_with("ALL:") {
            // Wrapped in prose and a fence, as models like to answer.
            "Here you go:\n```json\n{\"score\": true, \"reasoning\": \"Has content.\"}\n```".into()
        } else {
            verdict(0.5, "Sampled.")
        };
        Answer::ok(completion(&content, 120, 30))
    });
    let s = judge_server(&fake, "2");

    let qa = create_evaluator(
        &s,
        json!({"name": "qa-correctness", "target": "trace",
               "filter": {"names": ["qa"], "tags": ["prod"]},
               "prompt": "Question: {{input.question}}\nAnswer: {{output}}\nCustomer: {{metadata.customer}}",
               "output": {"scoreName": "correctness", "dataType": "NUMERIC", "minValue": 0, "maxValue": 1}}),
    );
    let all = create_evaluator(
        &s,
        json!({"name": "sanity", "prompt": "ALL: {{input}}",
               "output": {"scoreName": "sanity", "dataType": "BOOLEAN"}}),
    );
    let tone = send(
        &s,
        reqwest::Method::POST,
        "/api/public/score-configs",
        Some(json!({"name": "tone", "dataType": "CATEGORICAL",
                    "categories": [{"label": "polite", "value": 1}, {"label": "rude", "value": 0}]})),
    )
    .expect_json(200);
    let gen_ev = create_evaluator(
        &s,
        json!({"name": "generation-tone", "target": "observation",
               "filter": {"models": ["gpt-4o"]},
               "prompt": "GEN {{output}} in {{trace.name}}",
               "output": {"configId": tone["id"]}}),
    );
    assert_eq!(gen_ev["output"]["scoreName"], "tone");
    assert_eq!(gen_ev["output"]["categories"], json!(["polite", "rude"]));
    let sample = create_evaluator(
        &s,
        json!({"name": "half", "filter": {"names": ["sampled"], "sampleRate": 0.5},
               "prompt": "SAMPLE {{input}}", "output": {"scoreName": "sampled"}}),
    );

    let mut batch = vec![
        trace(
            "t-other",
            "chat",
            &["prod"],
            json!({"question": "hi"}),
            json!("hello"),
        ),
        trace(
            "t-notag",
            "qa",
            &[],
            json!({"question": "1+1?"}),
            json!("2"),
        ),
        trace(
            "t-match",
            "qa",
            &["prod"],
            json!({"question": "What is 2+2?"}),
            json!("4"),
        ),
    ];
    for (id, model) in [("g-4o", "gpt-4o"), ("g-other", "claude-3-haiku")] {
        batch.push(
            json!({"id": unique_id("ev"), "type": "generation-create", "timestamp": now_iso(),
            "body": {"id": id, "traceId": "t-other", "name": "llm", "model": model,
                     "input": "say hi", "output": format!("hello from {model}")}}),
        );
    }
    let sampled_ids: Vec<String> = (0..16).map(|i| format!("sampled-{i}")).collect();
    for id in &sampled_ids {
        batch.push(trace(id, "sampled", &[], json!(id), json!("x")));
    }
    ingest(&s, batch);

    // The matching trace: an EVAL score with the judge's reasoning as comment.
    let got = eventually(WAIT, || {
        named(&scores(&s, "t-match"), "correctness")
            .pop()
            .ok_or_else(|| "no correctness score yet".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail()));
    assert_eq!(got["source"], "EVAL");
    assert_eq!(got["value"], 0.9);
    assert_eq!(got["comment"], "Correct arithmetic.");
    assert_eq!(got["metadata"]["evaluatorId"], qa["id"]);

    // The judge saw the rendered template, the key, the model and the output contract.
    let asked = fake.requests_with("Question:");
    assert_eq!(asked.len(), 1, "{asked:?}");
    let r = &asked[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(
        r.message("user"),
        "Question: What is 2+2?\nAnswer: 4\nCustomer: acme"
    );
    assert_eq!(
        r.authorization.as_deref(),
        Some(format!("Bearer {JUDGE_KEY}").as_str())
    );
    assert_eq!(r.body["model"], "gpt-4o-mini");
    assert_eq!(r.body["response_format"], json!({"type": "json_object"}));
    let system = r.message("system");
    assert!(
        system.contains("correctness") && system.contains("a number from 0 to 1"),
        "{system}"
    );

    // Every user trace gets the unfiltered evaluator's score; observations the observation one.
    let n_sampled: usize = sampled_ids
        .iter()
        .filter(|id| {
            sightline::eval::sampled(sample["id"].as_str().unwrap(), &format!("t:{id}"), 0.5)
        })
        .count();
    wait_status(
        &s,
        all["id"].as_str().unwrap(),
        "19 user traces judged",
        |st| st["succeeded"] == 19 && st["pending"] == 0,
    );
    wait_status(
        &s,
        gen_ev["id"].as_str().unwrap(),
        "one generation judged",
        |st| st["succeeded"] == 1,
    );
    wait_status(
        &s,
        sample["id"].as_str().unwrap(),
        "the sample judged",
        |st| st["succeeded"] == n_sampled && st["pending"] == 0,
    );
    let other = scores(&s, "t-other");
    let tone_scores = named(&other, "tone");
    assert_eq!(tone_scores.len(), 1, "{other:?}");
    assert_eq!(tone_scores[0]["observationId"], "g-4o");
    assert_eq!(tone_scores[0]["stringValue"], "polite");
    assert_eq!(tone_scores[0]["value"], 1.0);
    assert_eq!(tone_scores[0]["configId"], tone["id"]);
    assert_eq!(
        fake.requests_with("GEN ")[0].message("user"),
        "GEN hello from gpt-4o in chat"
    );
    assert_eq!(named(&other, "sanity")[0]["value"], 1.0);
    assert_eq!(named(&other, "sanity")[0]["comment"], "Has content.");
    // Non-matching traces: no correctness score.
    for t in ["t-other", "t-notag"] {
        assert!(
            named(&scores(&s, t), "correctness").is_empty(),
            "{t} was judged"
        );
    }

    // Sampling took exactly the records its hash takes.
    let want: BTreeSet<&str> = sampled_ids
        .iter()
        .filter(|id| {
            sightline::eval::sampled(sample["id"].as_str().unwrap(), &format!("t:{id}"), 0.5)
        })
        .map(String::as_str)
        .collect();
    let have: BTreeSet<&str> = sampled_ids
        .iter()
        .filter(|id| !named(&scores(&s, id), "sampled").is_empty())
        .map(String::as_str)
        .collect();
    assert_eq!(have, want);

    // The judge call is a trace of its own, in the judge environment, with the generation.
    let exec = got["metadata"]["executionTraceId"].as_str().unwrap();
    let jt = s
        .get(&format!("/api/public/traces/{exec}"))
        .expect_json(200);
    assert_eq!(jt["environment"], "sightline-eval");
    assert_eq!(jt["name"], "eval: qa-correctness");
    assert_eq!(jt["metadata"]["targetTraceId"], "t-match");
    let gens = jt["observations"].as_array().unwrap();
    assert_eq!(gens.len(), 1, "{jt}");
    assert_eq!(gens[0]["type"], "GENERATION");
    assert_eq!(gens[0]["model"], "fake-judge-1");
    assert_eq!(gens[0]["usageDetails"]["input"], 120);
    assert_eq!(gens[0]["usageDetails"]["output"], 30);
    assert_eq!(jt["output"]["reasoning"], "Correct arithmetic.");

    // No loop: judge traces are never judged, so the calls stop at one per taken record.
    let expected_calls = 1 + 19 + 1 + n_sampled;
    assert_eq!(fake.requests().len(), expected_calls);
    quiet_period();
    assert_eq!(
        fake.requests().len(),
        expected_calls,
        "judge traces were judged"
    );
    let judge_traces = s
        .get("/api/public/traces?environment=sightline-eval&limit=100")
        .expect_json(200);
    assert_eq!(judge_traces["meta"]["totalItems"], expected_calls);
    for t in judge_traces["data"].as_array().unwrap() {
        assert!(scores(&s, t["id"].as_str().unwrap()).is_empty());
    }

    let st = status(&s, qa["id"].as_str().unwrap());
    assert_eq!(
        (
            st["succeeded"].clone(),
            st["failed"].clone(),
            st["pending"].clone(),
            st["usedTokens"].clone()
        ),
        (json!(1), json!(0), json!(0), json!(150)),
        "{st}"
    );
    assert_eq!(st["judgeConfigured"], true);
    assert!(
        !s.log_tail().contains(JUDGE_KEY),
        "the judge key reached the log"
    );
}

#[test]
fn judge_failures_retry_surface_in_status_and_the_budget_stops_calls() {
    let fake = FakeJudge::start(|r: &Seen, before: &[Seen]| {
        let user = r.message("user");
        let prior = |tag: &str| {
            before
                .iter()
                .filter(|b| b.message("user").starts_with(tag))
                .count()
        };
        if user.starts_with("FLAKY") && prior("FLAKY") < 2 {
            Answer::status(500, "overloaded, try again")
        } else if user.starts_with("BROKEN") {
            Answer::status(500, "upstream exploded")
        } else if user.starts_with("DENIED") {
            Answer::status(401, "invalid api key")
        } else if user.starts_with("GARBLED") {
            Answer::ok(completion("I think it is fine.", 10, 5))
        } else {
            Answer::ok(completion(&verdict(1.0, "fine"), 80, 20))
        }
    });
    let s = judge_server(&fake, "1");
    let ev = |name: &str, tag: &str, extra: Value| {
        let mut body = json!({"name": name, "filter": {"names": [name]},
                              "prompt": format!("{tag} {{{{input}}}}"),
                              "output": {"scoreName": name}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        create_evaluator(&s, body)["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let flaky = ev("flaky", "FLAKY", json!({}));
    let broken = ev("broken", "BROKEN", json!({}));
    let denied = ev("denied", "DENIED", json!({}));
    let garbled = ev("garbled", "GARBLED", json!({}));
    let budget = ev("budget", "BUDGET", json!({"budgetTokens": 250}));
    let mut batch = vec![
        trace("f-1", "flaky", &[], json!("a"), json!("b")),
        trace("b-1", "broken", &[], json!("a"), json!("b")),
        trace("d-1", "denied", &[], json!("a"), json!("b")),
        trace("x-1", "garbled", &[], json!("a"), json!("b")),
    ];
    for i in 0..5 {
        batch.push(trace(
            &format!("budget-{i}"),
            "budget",
            &[],
            json!(i),
            json!("b"),
        ));
    }
    ingest(&s, batch);

    // 500, 500, then an answer: retried and scored; every attempt is in the judge trace.
    wait_status(&s, &flaky, "flaky scored", |st| st["succeeded"] == 1);
    assert_eq!(fake.requests_with("FLAKY").len(), 3);
    let score = named(&scores(&s, "f-1"), "flaky")
        .pop()
        .expect("flaky score");
    let jt = s
        .get(&format!(
            "/api/public/traces/{}",
            score["metadata"]["executionTraceId"].as_str().unwrap()
        ))
        .expect_json(200);
    let mut levels: Vec<String> = jt["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["level"].as_str().unwrap().to_string())
        .collect();
    levels.sort();
    assert_eq!(levels, ["DEFAULT", "ERROR", "ERROR"], "{jt}");
    assert_eq!(status(&s, &flaky)["failed"], 0);

    // Always 500: three attempts, then a failure with the judge's words in the status.
    let st = wait_status(&s, &broken, "broken failed", |st| st["failed"] == 1);
    let err = st["lastError"].as_str().unwrap();
    assert!(
        err.contains("HTTP 500")
            && err.contains("upstream exploded")
            && err.contains("after 3 attempts"),
        "{err}"
    );
    assert!(st["lastErrorAt"].is_string());
    assert_eq!(fake.requests_with("BROKEN").len(), 3);
    assert!(scores(&s, "b-1").is_empty());
    let failed = s
        .get(&format!("/api/evaluators/{broken}/jobs?state=FAILED"))
        .expect_json(200);
    assert_eq!(failed["data"][0]["traceId"], "b-1");
    assert_eq!(failed["data"][0]["attempts"], 3);

    // 401 is not worth retrying.
    let st = wait_status(&s, &denied, "denied failed", |st| st["failed"] == 1);
    assert!(
        st["lastError"].as_str().unwrap().contains("HTTP 401"),
        "{st}"
    );
    assert_eq!(fake.requests_with("DENIED").len(), 1);

    // An answer without a verdict is retried, then fails.
    let st = wait_status(&s, &garbled, "garbled failed", |st| st["failed"] == 1);
    assert!(
        st["lastError"].as_str().unwrap().contains("no JSON object"),
        "{st}"
    );
    assert_eq!(fake.requests_with("GARBLED").len(), 3);

    // 100 tokens a call, budget 250: the third call crosses it, then nothing more is asked.
    wait_status(&s, &budget, "budget spent", |st| st["succeeded"] == 3);
    quiet_period();
    let st = status(&s, &budget);
    assert_eq!(fake.requests_with("BUDGET").len(), 3, "{st}");
    assert_eq!(
        (
            st["pending"].clone(),
            st["usedTokens"].clone(),
            st["budgetExhausted"].clone()
        ),
        (json!(2), json!(300), json!(true)),
        "{st}"
    );
    // A larger budget lets the waiting jobs run.
    send(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/evaluators/{budget}"),
        Some(json!({"budgetTokens": 1000})),
    )
    .expect_json(200);
    wait_status(&s, &budget, "budget raised", |st| {
        st["succeeded"] == 5 && st["budgetExhausted"] == false
    });
    assert_eq!(fake.requests_with("BUDGET").len(), 5);

    // A backfill queues the failed job again (and it fails again, counted once).
    let r = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/evaluators/{broken}/backfill"),
        None,
    )
    .expect_json(200);
    assert_eq!(r["matched"], 1);
    eventually(WAIT, || {
        let n = fake.requests_with("BROKEN").len();
        if n == 6 {
            Ok(())
        } else {
            Err(format!("{n} BROKEN requests"))
        }
    })
    .unwrap();
    let st = wait_status(&s, &broken, "failed again", |st| st["pending"] == 0);
    assert_eq!(st["failed"], 1, "{st}");
}

#[test]
fn backfill_and_restarts_resume_without_scoring_twice() {
    let fake = FakeJudge::start(|r: &Seen, _: &[Seen]| {
        let mut a = Answer::ok(completion(&verdict(1.0, "ok"), 10, 5));
        if r.message("user").contains("SLOW") {
            a.delay = Duration::from_millis(700);
        }
        a
    });
    let mut s = judge_server(&fake, "1");
    let old = |id: &str, ts: &str| {
        json!({"id": unique_id("ev"), "type": "trace-create", "timestamp": now_iso(),
               "body": {"id": id, "name": "legacy", "timestamp": ts, "input": id}})
    };
    ingest(
        &s,
        vec![
            old("old-jan", "2024-01-10T00:00:00Z"),
            old("old-jun", "2024-06-10T00:00:00Z"),
            trace("old-now", "legacy", &[], json!("old-now"), json!("x")),
        ],
    );
    let id = create_evaluator(
        &s,
        json!({"name": "legacy", "filter": {"names": ["legacy"]}, "prompt": "LEGACY {{input}}",
               "output": {"scoreName": "legacy"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let one_score = |s: &Server, t: &str| named(&scores(s, t), "legacy").len();

    // Records stored before the evaluator are not judged on their own...
    quiet_period();
    assert!(fake.requests().is_empty());
    // ...but on request, by time range.
    let r = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/evaluators/{id}/backfill"),
        Some(
            json!({"fromTimestamp": "2024-05-01T00:00:00Z", "toTimestamp": "2024-12-31T00:00:00Z"}),
        ),
    )
    .expect_json(200);
    assert_eq!(r["matched"], 1, "{r}");
    wait_status(&s, &id, "range backfilled", |st| st["succeeded"] == 1);
    assert_eq!(one_score(&s, "old-jun"), 1);
    assert_eq!(one_score(&s, "old-jan"), 0);
    let r = send(
        &s,
        reqwest::Method::POST,
        &format!("/api/evaluators/{id}/backfill"),
        Some(json!({})),
    )
    .expect_json(200);
    assert_eq!(r["matched"], 3);
    wait_status(&s, &id, "all backfilled", |st| st["succeeded"] == 3);
    // Judged records are not judged again by another backfill.
    send(
        &s,
        reqwest::Method::POST,
        &format!("/api/evaluators/{id}/backfill"),
        None,
    )
    .expect_json(200);
    quiet_period();
    assert_eq!(fake.requests().len(), 3);

    // Paused: new records are passed over; a backfill after resuming catches them.
    send(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/evaluators/{id}"),
        Some(json!({"paused": true})),
    )
    .expect_json(200);
    ingest(
        &s,
        vec![trace("while-paused", "legacy", &[], json!("p"), json!("x"))],
    );
    quiet_period();
    assert_eq!(one_score(&s, "while-paused"), 0);
    let resumed = send(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/evaluators/{id}"),
        Some(json!({"paused": false})),
    )
    .expect_json(200);
    assert_eq!(resumed["paused"], false);
    send(
        &s,
        reqwest::Method::POST,
        &format!("/api/evaluators/{id}/backfill"),
        None,
    )
    .expect_json(200);
    wait_status(&s, &id, "paused record backfilled", |st| {
        st["succeeded"] == 4
    });

    // Graceful restart: the cursor and the jobs survive; new records are judged once.
    s.terminate();
    s.restart();
    ingest(
        &s,
        vec![trace(
            "after-restart",
            "legacy",
            &[],
            json!("r"),
            json!("x"),
        )],
    );
    wait_status(&s, &id, "judged after restart", |st| st["succeeded"] == 5);
    quiet_period();
    assert_eq!(fake.requests().len(), 5);

    // kill -9 while judge calls are in flight: every record still ends with exactly one score.
    let slow: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    ingest(
        &s,
        slow.iter()
            .map(|t| trace(t, "legacy", &[], json!(format!("SLOW {t}")), json!("x")))
            .collect(),
    );
    eventually(WAIT, || {
        if fake.requests_with("SLOW").is_empty() {
            Err("no SLOW call yet".to_string())
        } else {
            Ok(())
        }
    })
    .unwrap();
    s.kill9();
    s.restart();
    wait_status(&s, &id, "slow records judged after kill -9", |st| {
        st["succeeded"] == 9 && st["pending"] == 0
    });
    for t in slow.iter().map(String::as_str).chain([
        "old-jan",
        "old-jun",
        "old-now",
        "while-paused",
        "after-restart",
    ]) {
        assert_eq!(one_score(&s, t), 1, "{t}");
    }
    assert!(fake.requests_with("SLOW").len() >= 4);

    // Deleting the evaluator ends it.
    send(
        &s,
        reqwest::Method::DELETE,
        &format!("/api/evaluators/{id}"),
        None,
    )
    .expect_json(200);
    assert_eq!(s.get(&format!("/api/evaluators/{id}")).status, 404);
}

#[test]
fn the_rate_limit_spaces_judge_calls_across_workers() {
    let fake =
        FakeJudge::start(|_: &Seen, _: &[Seen]| Answer::ok(completion(&verdict(1.0, "ok"), 5, 5)));
    // 300 a minute = one call per 200 ms, however many workers are idle.
    let s = judge_server_limited(&fake, "3", "300");
    let id = create_evaluator(
        &s,
        json!({"name": "limited", "prompt": "RATE {{input}}", "output": {"scoreName": "r"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    ingest(
        &s,
        (0..5)
            .map(|i| trace(&format!("r-{i}"), "t", &[], json!(i), json!("x")))
            .collect(),
    );
    wait_status(&s, &id, "all judged", |st| st["succeeded"] == 5);
    let mut at: Vec<_> = fake.requests().iter().map(|r| r.at).collect();
    at.sort();
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(180), "calls {gap:?} apart");
    }
}

#[test]
fn evaluator_definitions_are_validated_with_clear_400s() {
    let fake = FakeJudge::start(|_: &Seen, _: &[Seen]| Answer::ok(completion("{}", 1, 1)));
    let s = judge_server(&fake, "1");
    let cases: &[(Value, &str)] = &[
        (
            json!({"prompt": "{{input}}", "output": {"scoreName": "q"}}),
            "name is required",
        ),
        (
            json!({"name": "e", "output": {"scoreName": "q"}}),
            "prompt is required",
        ),
        (
            json!({"name": "e", "prompt": "no variables", "output": {"scoreName": "q"}}),
            "no {{variable}}",
        ),
        (
            json!({"name": "e", "prompt": "{{answer}}", "output": {"scoreName": "q"}}),
            "does not name a field",
        ),
        (
            json!({"name": "e", "prompt": "{{input}}"}),
            "output is required",
        ),
        (
            json!({"name": "e", "prompt": "{{input}}", "output": {"scoreName": "q", "dataType": "TEXT"}}),
            "NUMERIC, BOOLEAN or CATEGORICAL",
        ),
        (
            json!({"name": "e", "prompt": "{{input}}", "output": {"scoreName": "q"}, "filter": {"sampleRate": 1.5}}),
            "sampleRate",
        ),
        (
            json!({"name": "e", "prompt": "{{input}}", "output": {"configId": "nope"}}),
            "does not match a score config",
        ),
        (
            json!({"name": "e", "target": "span", "prompt": "{{input}}", "output": {"scoreName": "q"}}),
            "target must be",
        ),
    ];
    for (body, want) in cases {
        let r = send(
            &s,
            reqwest::Method::POST,
            "/api/evaluators",
            Some(body.clone()),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let e = create_evaluator(
        &s,
        json!({"name": "e", "prompt": "{{input}}", "output": {"scoreName": "q"}}),
    );
    let id = e["id"].as_str().unwrap();
    let r = send(
        &s,
        reqwest::Method::PATCH,
        &format!("/api/evaluators/{id}"),
        Some(json!({"filter": {"sampleRate": -1}})),
    );
    assert_eq!(r.status, 400);
    let listed = s.get("/api/evaluators").expect_json(200);
    assert_eq!(listed["meta"]["totalItems"], 1);
    assert_eq!(listed["data"][0]["status"]["pending"], 0);
    assert_eq!(s.get("/api/evaluators/unknown").status, 404);
    let no_key = s.send(
        "GET /api/evaluators without key",
        reqwest::blocking::Client::new().get(s.url("/api/evaluators")),
    );
    assert_eq!(no_key.status, 401);
}

/// CPU seconds (user + system) the server's thread named `name` has used so far.
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        total += (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks;
    }
    total
}

#[test]
fn the_runner_sleeps_when_idle_without_a_judge() {
    // No judge configured: the runner has no workers, and must still wait rather than poll.
    let s = Server::start();
    ingest(
        &s,
        vec![trace(
            &unique_id("idle"),
            "idle",
            &[],
            json!("q"),
            json!("a"),
        )],
    );
    let before = thread_cpu_seconds(s.pid(), "sightline-evals");
    std::thread::sleep(Duration::from_secs(2));
    let used = thread_cpu_seconds(s.pid(), "sightline-evals") - before;
    assert!(
        used < 0.2,
        "the evaluation runner used {used:.2} s of CPU in 2 s of idling"
    );
}
