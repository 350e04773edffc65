//! The read API's filters, ordering, pagination, deletes and score forms, and project isolation
//! (a key sees only its own project), against the real router in-process.

mod common;

use common::in_process::InProcess;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const PK: &str = "pk-lf-test";
const SK: &str = "sk-lf-test";

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

    fn get_as(&self, keys: (&str, &str), path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.server.base))
            .basic_auth(keys.0, Some(keys.1))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_as((PK, SK), path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        keys: (&str, &str),
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.base))
            .basic_auth(keys.0, Some(keys.1));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn ingest_as(&self, keys: (&str, &str), batch: Vec<Value>) {
        let (status, body) = self.send(
            reqwest::Method::POST,
            "/api/public/ingestion",
            Some(json!({"batch": batch})),
            keys,
        );
        assert_eq!(status, 207, "{body}");
        assert_eq!(body["errors"], json!([]), "{body}");
    }

    fn ingest(&self, batch: Vec<Value>) {
        self.ingest_as((PK, SK), batch);
    }
}

fn trace_event(id: &str, ts: &str, extra: Value) -> Value {
    let mut body = json!({"id": id, "timestamp": ts, "name": format!("name-{id}")});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    json!({"id": format!("ev-{id}-{ts}"), "type": "trace-create", "timestamp": ts, "body": body})
}

fn seed(api: &Api) {
    api.ingest(vec![
        trace_event("t1", "2025-01-01T10:00:00Z", json!({"userId": "alice", "sessionId": "s1", "tags": ["a", "b"], "environment": "prod", "release": "r1", "version": "v1"})),
        trace_event("t2", "2025-01-02T10:00:00Z", json!({"userId": "bob", "sessionId": "s1", "tags": ["a"], "environment": "dev"})),
        trace_event("t3", "2025-01-03T10:00:00Z", json!({"userId": "alice", "tags": ["b"], "environment": "prod"})),
        json!({"id": "g1", "type": "generation-create", "timestamp": "2025-01-01T10:00:01Z",
               "body": {"id": "o1", "traceId": "t1", "name": "llm", "startTime": "2025-01-01T10:00:01Z",
                        "endTime": "2025-01-01T10:00:03Z", "model": "gpt-4o", "level": "WARNING",
                        "usageDetails": {"input": 1000, "output": 500}}}),
        json!({"id": "sp1", "type": "span-create", "timestamp": "2025-01-01T10:00:00Z",
               "body": {"id": "o2", "traceId": "t1", "name": "root", "startTime": "2025-01-01T10:00:00Z",
                        "endTime": "2025-01-01T10:00:04Z"}}),
    ]);
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn trace_filters_order_and_pagination() {
    let api = Api::new();
    seed(&api);
    assert_eq!(ids(&api.get("/api/public/traces")), ["t3", "t2", "t1"]);
    assert_eq!(
        ids(&api.get("/api/public/traces?orderBy=timestamp.asc")),
        ["t1", "t2", "t3"]
    );
    assert_eq!(
        ids(&api.get("/api/public/traces?orderBy=userId.desc"))
            .first()
            .unwrap(),
        "t2"
    );
    assert_eq!(
        ids(&api.get("/api/public/traces?userId=alice")),
        ["t3", "t1"]
    );
    assert_eq!(
        ids(&api.get("/api/public/traces?sessionId=s1")),
        ["t2", "t1"]
    );
    assert_eq!(ids(&api.get("/api/public/traces?tags=a&tags=b")), ["t1"]);
    assert_eq!(ids(&api.get("/api/public/traces?environment=dev")), ["t2"]);
    assert_eq!(
        ids(&api.get("/api/public/traces?environment=dev&environment=prod")).len(),
        3
    );
    assert_eq!(
        ids(&api.get("/api/public/traces?release=r1&version=v1")),
        ["t1"]
    );
    assert_eq!(ids(&api.get("/api/public/traces?name=name-t2")), ["t2"]);
    assert_eq!(
        ids(&api.get(
            "/api/public/traces?fromTimestamp=2025-01-02T00:00:00Z&toTimestamp=2025-01-03T10:00:00Z"
        )),
        ["t2"]
    );
    let page = api.get("/api/public/traces?limit=2&page=2");
    assert_eq!(ids(&page), ["t1"]);
    assert_eq!(
        page["meta"],
        json!({"page": 2, "limit": 2, "totalItems": 3, "totalPages": 2})
    );
    let (status, body) = api.get_as((PK, SK), "/api/public/traces?limit=101");
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.get_as((PK, SK), "/api/public/traces?orderBy=nonsense.asc");
    assert_eq!(status, 400);
    // Trace list metrics: latency spans the observations (4 s), cost is the generation's.
    let t1 = &api.get("/api/public/traces?userId=alice&limit=1&page=2")["data"][0];
    assert_eq!(t1["latency"], json!(4.0));
    assert_eq!(t1["totalCost"], json!(0.0075));
    assert_eq!(t1["observations"].as_array().unwrap().len(), 2);
    let core = &api.get("/api/public/traces?fields=core&userId=alice&limit=1&page=2")["data"][0];
    assert_eq!(core["latency"], json!(-1.0));
    assert_eq!(core["input"], Value::Null);
}

#[test]
fn observation_filters_and_v2_cursor() {
    let api = Api::new();
    seed(&api);
    let gens = api.get("/api/public/observations?type=GENERATION");
    assert_eq!(ids(&gens), ["o1"]);
    assert_eq!(gens["data"][0]["calculatedTotalCost"], json!(0.0075));
    assert_eq!(
        ids(&api.get("/api/public/observations?level=WARNING")),
        ["o1"]
    );
    assert_eq!(
        ids(&api.get("/api/public/observations?userId=bob")),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&api.get("/api/public/observations?userId=alice")).len(),
        2
    );
    let (status, _) = api.get_as((PK, SK), "/api/public/observations?type=BOGUS");
    assert_eq!(status, 400);
    // Cursor pagination walks every observation exactly once.
    let first = api.get("/api/public/v2/observations?limit=1");
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    let cursor = first["meta"]["cursor"]
        .as_str()
        .expect("a cursor for the next page");
    let second = api.get(&format!(
        "/api/public/v2/observations?limit=1&cursor={cursor}"
    ));
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    assert_eq!(second["meta"]["cursor"], Value::Null);
    let price = &second["data"][0]["inputPrice"];
    assert!(
        price.is_string() || price.is_null(),
        "v2 prices are strings: {price}"
    );
    let (status, _) = api.get_as((PK, SK), "/api/public/v2/observations?cursor=garbage!");
    assert_eq!(status, 400);
}

#[test]
fn sessions_scores_and_deletes() {
    let api = Api::new();
    seed(&api);
    let sessions = api.get("/api/public/sessions");
    assert_eq!(ids(&sessions), ["s1"]);
    let s1 = api.get("/api/public/sessions/s1");
    assert_eq!(s1["traces"].as_array().unwrap().len(), 2);
    let (status, _) = api.get_as((PK, SK), "/api/public/sessions/nope");
    assert_eq!(status, 404);

    // Object form → 200 {id}; array form → 202; a bad item in an array → 207.
    let (status, body) = api.send(
        reqwest::Method::POST,
        "/api/public/scores",
        Some(json!({"name": "q", "value": 0.7, "traceId": "t1"})),
        (PK, SK),
    );
    assert_eq!(status, 200, "{body}");
    let score_id = body["id"].as_str().unwrap().to_string();
    let (status, body) = api.send(reqwest::Method::POST, "/api/public/scores",
        Some(json!([{"id": "sc2", "name": "ok", "value": 1, "dataType": "BOOLEAN", "traceId": "t1"}])), (PK, SK));
    assert_eq!((status, body), (202, json!({"message": "Accepted"})));
    let (status, body) = api.send(
        reqwest::Method::POST,
        "/api/public/scores",
        Some(json!([{"name": "ok", "value": 1, "traceId": "t1"}, {"name": "", "value": 1}])),
        (PK, SK),
    );
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["rejected"], 1);
    let (status, _) = api.send(
        reqwest::Method::POST,
        "/api/public/scores",
        Some(json!({"name": "bad", "value": "x", "dataType": "NUMERIC", "traceId": "t1"})),
        (PK, SK),
    );
    assert_eq!(status, 400);
    // Public key alone may write scores but read nothing.
    let r = api
        .http
        .post(format!("{}/api/public/scores", api.server.base))
        .bearer_auth(PK)
        .json(&json!({"name": "pub", "value": 1, "traceId": "t1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api
        .http
        .get(format!("{}/api/public/traces", api.server.base))
        .bearer_auth(PK)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    let v2 = api.get("/api/public/v2/scores?traceId=t1");
    assert_eq!(v2["meta"]["totalItems"], 4);
    assert_eq!(v2["data"][0]["trace"]["userId"], "alice");
    assert_eq!(
        api.get("/api/public/v2/scores?name=ok&dataType=BOOLEAN")["meta"]["totalItems"],
        1
    );
    assert_eq!(
        api.get("/api/public/v2/scores?userId=bob")["meta"]["totalItems"],
        0
    );
    let v3 = api.get("/api/public/v3/scores?limit=2&traceId=t1");
    assert_eq!(v3["data"].as_array().unwrap().len(), 2);
    assert!(v3["meta"]["cursor"].is_string());
    assert_eq!(
        api.get(&format!("/api/public/scores/{score_id}"))["value"],
        0.7
    );

    let (status, _) = api.send(
        reqwest::Method::DELETE,
        &format!("/api/public/scores/{score_id}"),
        None,
        (PK, SK),
    );
    assert_eq!(status, 200);
    let (status, _) = api.get_as((PK, SK), &format!("/api/public/scores/{score_id}"));
    assert_eq!(status, 404);
    let (status, _) = api.send(
        reqwest::Method::DELETE,
        "/api/public/scores/nope",
        None,
        (PK, SK),
    );
    assert_eq!(status, 404);

    let (status, _) = api.send(
        reqwest::Method::DELETE,
        "/api/public/traces/t1",
        None,
        (PK, SK),
    );
    assert_eq!(status, 200);
    let (status, _) = api.get_as((PK, SK), "/api/public/traces/t1");
    assert_eq!(status, 404);
    let (status, _) = api.get_as((PK, SK), "/api/public/observations/o1");
    assert_eq!(status, 404);
    assert_eq!(
        api.get("/api/public/v2/scores?traceId=t1")["meta"]["totalItems"],
        0
    );
    let (status, _) = api.send(
        reqwest::Method::DELETE,
        "/api/public/traces",
        Some(json!({"traceIds": ["t2", "t3"]})),
        (PK, SK),
    );
    assert_eq!(status, 200);
    assert_eq!(api.get("/api/public/traces")["meta"]["totalItems"], 0);
}

#[test]
fn a_key_sees_only_its_own_project() {
    let api = Api::new();
    seed(&api);
    let other = sightline::auth::key_record("other", "pk-lf-other", "sk-lf-other", "test");
    let project = sightline::store::ProjectRecord {
        id: "other".into(),
        name: "Other".into(),
        org_id: "org".into(),
        org_name: "Org".into(),
        created_at: sightline::time::Timestamp::now(),
        retention_days: None,
    };
    api.server
        .state
        .store
        .put_admin(&[project], &[other], &[], &[])
        .unwrap();
    api.server
        .state
        .keys
        .reload(&api.server.state.store)
        .unwrap();
    let other_keys = ("pk-lf-other", "sk-lf-other");
    // Same ids, other project: a separate record.
    api.ingest_as(
        other_keys,
        vec![trace_event(
            "t1",
            "2025-02-01T00:00:00Z",
            json!({"userId": "mallory"}),
        )],
    );
    let (_, mine) = api.get_as((PK, SK), "/api/public/traces/t1");
    let (_, theirs) = api.get_as(other_keys, "/api/public/traces/t1");
    assert_eq!(mine["userId"], "alice");
    assert_eq!(theirs["userId"], "mallory");
    let (_, list) = api.get_as(other_keys, "/api/public/traces");
    assert_eq!(list["meta"]["totalItems"], 1);
    for path in ["/api/public/observations/o1", "/api/public/sessions/s1"] {
        let (status, _) = api.get_as(other_keys, path);
        assert_eq!(status, 404, "{path}");
    }
    let (_, projects) = api.get_as(other_keys, "/api/public/projects");
    assert_eq!(projects["data"][0]["id"], "other");
    // Deleting through the other key leaves this project's trace alone.
    let (status, _) = api.send(
        reqwest::Method::DELETE,
        "/api/public/traces/t1",
        None,
        other_keys,
    );
    assert_eq!(status, 200);
    assert_eq!(api.get("/api/public/traces/t1")["userId"], "alice");
    // A wrong secret for a real public key is refused.
    let (status, body) = api.get_as(("pk-lf-other", SK), "/api/public/traces");
    assert_eq!(status, 401, "{body}");
}
