//! Score configs (`/api/public/score-configs`) and scores checked against them on every write
//! path (single and array `POST /api/public/scores`, batch ingestion, the dashboard), plus
//! scores on traces, observations and sessions read back through the v2/v3 filters. Against the
//! real binary.

mod common;

use std::time::Duration;

use common::{Resp, Server, now_iso, unique_id};
use serde_json::{Value, json};

const EMAIL: &str = "annotator@example.com";
const PASSWORD: &str = "correct horse battery";

fn post(s: &Server, path: &str, body: Value) -> Resp {
    s.send(
        &format!("POST {path}"),
        s.client().post(s.url(path)).json(&body),
    )
}

fn patch(s: &Server, path: &str, body: Value) -> Resp {
    s.send(
        &format!("PATCH {path}"),
        s.client().patch(s.url(path)).json(&body),
    )
}

fn create_config(s: &Server, body: Value) -> Value {
    post(s, "/api/public/score-configs", body).expect_json(200)
}

fn event(kind: &str, body: Value) -> Value {
    json!({"id": unique_id("ev"), "type": kind, "timestamp": now_iso(), "body": body})
}

fn message(r: &Resp) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn score_config_crud_and_clear_400s() {
    let s = Server::start();
    let num = create_config(
        &s,
        json!({"name": "accuracy", "dataType": "NUMERIC", "minValue": 0, "maxValue": 1,
               "description": "share of correct facts"}),
    );
    assert_eq!(num["dataType"], "NUMERIC");
    assert_eq!(num["isArchived"], false);
    assert_eq!(num["minValue"], 0.0);
    assert_eq!(num["projectId"], common::PROJECT_ID);
    for k in ["id", "createdAt", "updatedAt", "categories", "description"] {
        assert!(num.get(k).is_some(), "{k} missing: {num}");
    }
    let boolean = create_config(&s, json!({"name": "helpful", "dataType": "BOOLEAN"}));
    assert_eq!(
        boolean["categories"],
        json!([{"label": "True", "value": 1.0}, {"label": "False", "value": 0.0}])
    );
    let cat = create_config(
        &s,
        json!({"name": "tone", "dataType": "CATEGORICAL",
               "categories": [{"label": "polite", "value": 1}, {"label": "rude", "value": 0}]}),
    );

    let page = s.get("/api/public/score-configs?limit=2").expect_json(200);
    assert_eq!(page["meta"]["totalItems"], 3);
    assert_eq!(page["meta"]["totalPages"], 2);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    // Newest first.
    assert_eq!(page["data"][0]["id"], cat["id"]);
    let page2 = s
        .get("/api/public/score-configs?limit=2&page=2")
        .expect_json(200);
    assert_eq!(page2["data"][0]["id"], num["id"]);

    let id = num["id"].as_str().unwrap();
    let got = s
        .get(&format!("/api/public/score-configs/{id}"))
        .expect_json(200);
    assert_eq!(got, num);
    let r = s.get("/api/public/score-configs/no-such-config");
    assert_eq!(r.status, 404, "{}", r.text());

    let changed = patch(
        &s,
        &format!("/api/public/score-configs/{id}"),
        json!({"maxValue": 10, "description": null}),
    )
    .expect_json(200);
    assert_eq!(changed["maxValue"], 10.0);
    assert_eq!(changed["description"], Value::Null);
    assert_eq!(changed["createdAt"], num["createdAt"]);

    let bad: &[(Value, &str)] = &[
        (json!({"dataType": "NUMERIC"}), "name is required"),
        (
            json!({"name": "x", "dataType": "FLOAT"}),
            "dataType must be",
        ),
        (
            json!({"name": "x", "dataType": "CATEGORICAL"}),
            "need categories",
        ),
        (
            json!({"name": "x", "dataType": "NUMERIC", "minValue": 3, "maxValue": 2}),
            "must be greater than minValue",
        ),
        (
            json!({"name": "x", "dataType": "BOOLEAN", "categories": [{"label": "a", "value": 1}]}),
            "BOOLEAN configs take no categories",
        ),
        (
            json!({"name": "a name that is far longer than thirty-five", "dataType": "NUMERIC"}),
            "1 to 35 characters",
        ),
        (
            json!({"name": "slash/name", "dataType": "NUMERIC"}),
            "may contain only",
        ),
        (
            json!({"name": "x", "dataType": "CATEGORICAL",
                   "categories": [{"label": "a", "value": 1}, {"label": "b", "value": 1}]}),
            "appears twice",
        ),
    ];
    for (body, want) in bad {
        let r = post(&s, "/api/public/score-configs", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(message(&r).contains(want), "{body}: {}", r.text());
    }
    let r = patch(
        &s,
        &format!("/api/public/score-configs/{id}"),
        json!({"dataType": "BOOLEAN"}),
    );
    assert_eq!(r.status, 400);
    assert!(message(&r).contains("cannot change"), "{}", r.text());
    let r = patch(
        &s,
        &format!("/api/public/score-configs/{id}"),
        json!({"minValue": 50}),
    );
    assert_eq!(r.status, 400, "min above the stored max: {}", r.text());
    let r = patch(
        &s,
        "/api/public/score-configs/nope",
        json!({"isArchived": true}),
    );
    assert_eq!(r.status, 404);
    let no_key = s.send(
        "GET configs without key",
        reqwest::blocking::Client::new().get(s.url("/api/public/score-configs")),
    );
    assert_eq!(no_key.status, 401);
}

#[test]
fn scores_must_fit_their_config_on_every_write_path() {
    let s = Server::start();
    let trace = unique_id("trace");
    let r = post(
        &s,
        "/api/public/ingestion",
        json!({"batch": [event("trace-create", json!({"id": trace, "name": "t"}))]}),
    );
    r.expect_json(207);
    let num = create_config(
        &s,
        json!({"name": "accuracy", "dataType": "NUMERIC", "minValue": 0, "maxValue": 1}),
    );
    let cat = create_config(
        &s,
        json!({"name": "tone", "dataType": "CATEGORICAL",
               "categories": [{"label": "polite", "value": 1}, {"label": "rude", "value": 0}]}),
    );
    let boolean = create_config(&s, json!({"name": "helpful", "dataType": "BOOLEAN"}));
    let (num_id, cat_id, bool_id) = (
        num["id"].as_str().unwrap(),
        cat["id"].as_str().unwrap(),
        boolean["id"].as_str().unwrap(),
    );

    let rejected: &[(Value, &str)] = &[
        (
            json!({"value": 1.5, "configId": num_id}),
            "above the maxValue 1",
        ),
        (
            json!({"value": -0.5, "configId": num_id}),
            "below the minValue 0",
        ),
        (
            json!({"value": "high", "configId": num_id}),
            "value must be a number",
        ),
        (
            json!({"value": 1, "dataType": "BOOLEAN", "configId": num_id}),
            "does not match",
        ),
        (
            json!({"value": "grumpy", "configId": cat_id}),
            "\"polite\", \"rude\"",
        ),
        (json!({"value": 7, "configId": cat_id}), "not a category"),
        (json!({"value": 2, "configId": bool_id}), "must be 0 or 1"),
        (
            json!({"value": 1, "configId": "no-such-config"}),
            "does not match a score config",
        ),
        (
            json!({"value": 1, "source": "ANNOTATION", "name": "manual"}),
            "ANNOTATION scores need a configId",
        ),
    ];
    for (extra, want) in rejected {
        let mut body = json!({"traceId": trace, "name": "whatever"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(&s, "/api/public/scores", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(message(&r).contains(want), "{body}: {}", r.text());
    }

    // Accepted: the name comes from the config; categories by label or by value.
    let ok = |body: Value| -> String {
        let r = post(&s, "/api/public/scores", body);
        r.expect_json(200)["id"].as_str().unwrap().to_string()
    };
    let a = ok(json!({"traceId": trace, "name": "ignored", "value": 0.75, "configId": num_id}));
    let b = ok(json!({"traceId": trace, "name": "tone", "value": "rude", "configId": cat_id}));
    let c = ok(json!({"traceId": trace, "name": "tone", "value": 1, "configId": cat_id}));
    let d = ok(
        json!({"traceId": trace, "name": "helpful", "value": 1, "configId": bool_id,
                      "source": "ANNOTATION"}),
    );
    let get = |id: &str| s.get(&format!("/api/public/scores/{id}")).expect_json(200);
    let sa = get(&a);
    assert_eq!(
        (sa["name"].clone(), sa["value"].clone()),
        (json!("accuracy"), json!(0.75))
    );
    assert_eq!(sa["dataType"], "NUMERIC");
    assert_eq!(sa["configId"], num_id);
    let sb = get(&b);
    assert_eq!(
        (sb["stringValue"].clone(), sb["value"].clone()),
        (json!("rude"), json!(0.0))
    );
    assert_eq!(sb["dataType"], "CATEGORICAL");
    let sc = get(&c);
    assert_eq!(
        (sc["stringValue"].clone(), sc["value"].clone()),
        (json!("polite"), json!(1.0))
    );
    let sd = get(&d);
    assert_eq!(
        (sd["stringValue"].clone(), sd["dataType"].clone()),
        (json!("True"), json!("BOOLEAN"))
    );
    assert_eq!(sd["source"], "ANNOTATION");

    // A config change applies to the very next score.
    patch(
        &s,
        &format!("/api/public/score-configs/{num_id}"),
        json!({"maxValue": 10}),
    )
    .expect_json(200);
    ok(json!({"traceId": trace, "value": 7, "configId": num_id}));
    patch(
        &s,
        &format!("/api/public/score-configs/{num_id}"),
        json!({"isArchived": true}),
    )
    .expect_json(200);
    let r = post(
        &s,
        "/api/public/scores",
        json!({"traceId": trace, "value": 0.5, "configId": num_id}),
    );
    assert_eq!(r.status, 400);
    assert!(message(&r).contains("archived"), "{}", r.text());

    // Batch ingestion: each bad score is its own 400 in the 207; the good ones are stored.
    let good_id = unique_id("score");
    let (e_good, e_bad, e_cat) = (
        event(
            "score-create",
            json!({"id": good_id, "traceId": trace, "name": "x", "value": 0, "configId": bool_id}),
        ),
        event(
            "score-create",
            json!({"id": unique_id("score"), "traceId": trace, "name": "x", "value": 5, "configId": bool_id}),
        ),
        event(
            "score-create",
            json!({"id": unique_id("score"), "traceId": trace, "name": "x", "value": "meh", "configId": cat_id}),
        ),
    );
    let r = post(
        &s,
        "/api/public/ingestion",
        json!({"batch": [e_good.clone(), e_bad.clone(), e_cat.clone()]}),
    )
    .expect_json(207);
    assert_eq!(
        r["successes"],
        json!([{"id": e_good["id"], "status": 201}]),
        "{r}"
    );
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{r}");
    assert_eq!(errors[0]["id"], e_bad["id"]);
    assert_eq!(errors[0]["status"], 400);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("must be 0 or 1"),
        "{r}"
    );
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a category"),
        "{r}"
    );
    assert_eq!(get(&good_id)["stringValue"], "False");

    // The 5.x SDK's array form: 207 with the rejected indexes.
    let r = post(
        &s,
        "/api/public/scores",
        json!([
            {"traceId": trace, "name": "tone", "value": "polite", "configId": cat_id},
            {"traceId": trace, "name": "tone", "value": "sarcastic", "configId": cat_id},
        ]),
    )
    .expect_json(207);
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(r["errors"][0]["index"], 1, "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a category")
    );

    // Nothing rejected was stored.
    let all = s
        .get(&format!("/api/public/v2/scores?traceId={trace}&limit=100"))
        .expect_json(200);
    assert_eq!(all["meta"]["totalItems"], 7, "{all}");
}

#[test]
fn scores_on_traces_observations_and_sessions_read_back_and_filter() {
    let s = Server::start();
    let (trace, obs, session) = (unique_id("trace"), unique_id("obs"), unique_id("session"));
    post(
        &s,
        "/api/public/ingestion",
        json!({"batch": [
            event("trace-create", json!({"id": trace, "name": "t", "sessionId": session, "userId": "u1"})),
            event("generation-create", json!({"id": obs, "traceId": trace, "name": "g", "model": "gpt-4o"})),
        ]}),
    )
    .expect_json(207);
    let quality = create_config(
        &s,
        json!({"name": "quality", "dataType": "NUMERIC", "minValue": 0, "maxValue": 10}),
    );
    let q_id = quality["id"].as_str().unwrap();
    let ids: Vec<String> = [
        json!({"traceId": trace, "value": 8, "configId": q_id}),
        json!({"traceId": trace, "observationId": obs, "value": 3, "configId": q_id}),
        json!({"sessionId": session, "name": "session-ok", "value": 1, "dataType": "BOOLEAN"}),
        json!({"traceId": trace, "name": "label", "value": "fine"}),
    ]
    .into_iter()
    .map(|b| {
        post(&s, "/api/public/scores", b).expect_json(200)["id"]
            .as_str()
            .unwrap()
            .to_string()
    })
    .collect();

    let v2 = |q: &str| -> Vec<String> {
        let r = s
            .get(&format!("/api/public/v2/scores?{q}"))
            .expect_json(200);
        let mut v: Vec<String> = r["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |v: &[&String]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(v2(&format!("configId={q_id}")), sorted(&[&ids[0], &ids[1]]));
    assert_eq!(v2("dataType=BOOLEAN"), sorted(&[&ids[2]]));
    assert_eq!(v2("dataType=CATEGORICAL"), sorted(&[&ids[3]]));
    assert_eq!(
        v2(&format!("configId={q_id}&operator=>=&value=5")),
        sorted(&[&ids[0]])
    );
    assert_eq!(v2(&format!("observationId={obs}")), sorted(&[&ids[1]]));
    assert_eq!(v2(&format!("sessionId={session}")), sorted(&[&ids[2]]));
    assert_eq!(
        v2("userId=u1").len(),
        3,
        "trace-bound scores carry the trace's user"
    );
    let one = s
        .get(&format!("/api/public/v2/scores?scoreIds={}", ids[1]))
        .expect_json(200);
    assert_eq!(one["data"][0]["observationId"], obs.as_str());
    assert_eq!(one["data"][0]["trace"]["userId"], "u1");

    let v3 = s
        .get(&format!(
            "/api/public/v3/scores?configId={q_id}&valueMin=2&valueMax=5"
        ))
        .expect_json(200);
    let data = v3["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v3}");
    assert_eq!(
        data[0]["subject"],
        json!({"kind": "observation", "id": obs, "traceId": trace})
    );
    let session_v3 = s
        .get(&format!("/api/public/v3/scores?sessionId={session}"))
        .expect_json(200);
    assert_eq!(session_v3["data"][0]["subject"]["kind"], "session");
    assert_eq!(session_v3["data"][0]["value"], true);

    let t = s
        .get(&format!("/api/public/traces/{trace}"))
        .expect_json(200);
    assert_eq!(t["scores"].as_array().unwrap().len(), 3, "{t}");
}

#[test]
fn dashboard_annotates_through_the_same_endpoints_with_csrf() {
    let s = Server::builder()
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", PASSWORD)
        .start();
    let trace = unique_id("trace");
    post(
        &s,
        "/api/public/ingestion",
        json!({"batch": [event("trace-create", json!({"id": trace, "name": "t"}))]}),
    )
    .expect_json(207);
    let browser = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let login = s.send(
        "POST /api/ui/login",
        browser
            .post(s.url("/api/ui/login"))
            .header("x-sightline-csrf", "1")
            .json(&json!({"email": EMAIL, "password": PASSWORD})),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ui = |method: reqwest::Method, path: &str, body: Option<Value>, csrf: bool| {
        let mut req = browser
            .request(method.clone(), s.url(path))
            .header("cookie", &cookie);
        if csrf {
            req = req.header("x-sightline-csrf", "1");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        s.send(&format!("{method} {path}"), req)
    };
    let config = ui(
        reqwest::Method::POST,
        "/api/ui/score-configs",
        Some(json!({"name": "relevance", "dataType": "CATEGORICAL",
                    "categories": [{"label": "on topic", "value": 1}, {"label": "off topic", "value": 0}]})),
        true,
    )
    .expect_json(200);
    let body = json!({"traceId": trace, "name": "relevance", "value": "on topic",
                      "configId": config["id"], "source": "ANNOTATION",
                      "comment": "checked by hand", "authorUserId": EMAIL});
    let r = ui(
        reqwest::Method::POST,
        "/api/ui/scores",
        Some(body.clone()),
        false,
    );
    assert_eq!(
        r.status,
        403,
        "a write without the CSRF header is refused: {}",
        r.text()
    );
    let id = ui(reqwest::Method::POST, "/api/ui/scores", Some(body), true).expect_json(200)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad = ui(
        reqwest::Method::POST,
        "/api/ui/scores",
        Some(
            json!({"traceId": trace, "value": "maybe", "configId": config["id"], "source": "ANNOTATION"}),
        ),
        true,
    );
    assert_eq!(bad.status, 400);
    assert!(message(&bad).contains("not a category"), "{}", bad.text());
    let listed = ui(
        reqwest::Method::GET,
        "/api/ui/scores?source=ANNOTATION&name=relevance",
        None,
        false,
    )
    .expect_json(200);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["data"][0]["stringValue"], "on topic");
    assert_eq!(listed["data"][0]["comment"], "checked by hand");
    assert_eq!(listed["data"][0]["authorUserId"], EMAIL);
    // And the public API sees the same score.
    let public = s.get(&format!("/api/public/scores/{id}")).expect_json(200);
    assert_eq!(public["configId"], config["id"]);
}
