//! Prompt management against the real router in-process: Langfuse's `/api/public/v2/prompts`
//! rules (versions, `latest`, labels moving, tags shared, type fixed), its errors, folder names
//! with `%2F`, the legacy v1 routes, project isolation, list filters and pagination, concurrent
//! creates, the `promptId` of generations that name a version, and the dashboard's JSON.

mod common;

use common::in_process::InProcess;
use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const PK: &str = "pk-lf-test";
const SK: &str = "sk-lf-test";
const V2: &str = "/api/public/v2/prompts";

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

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as((PK, SK), method, path, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None)
    }

    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn create(&self, body: Value) -> Value {
        let (status, created) = self.send(Method::POST, V2, Some(body.clone()));
        assert_eq!(status, 201, "create {body}: {created}");
        created
    }

    /// Adds a second project with its own key pair.
    fn add_project(&self, id: &str, pk: &str, sk: &str) {
        let project = sightline::store::ProjectRecord {
            id: id.into(),
            name: id.into(),
            org_id: "org".into(),
            org_name: "Org".into(),
            created_at: sightline::time::Timestamp::now(),
            retention_days: None,
        };
        let key = sightline::auth::key_record(id, pk, sk, "test");
        let state = &self.server.state;
        state.store.put_admin(&[project], &[key], &[], &[]).unwrap();
        state.keys.reload(&state.store).unwrap();
    }
}

fn labels(p: &Value) -> Vec<String> {
    serde_json::from_value(p["labels"].clone()).unwrap()
}

fn text(name: &str, prompt: &str, labels: &[&str]) -> Value {
    json!({"name": name, "prompt": prompt, "labels": labels})
}

#[test]
fn text_and_chat_versions_with_labels_that_move() {
    let api = Api::new();
    let v1 = api.create(json!({
        "name": "greeter", "prompt": "Hello {{name}}", "labels": ["production"],
        "config": {"model": "gpt-4o", "temperature": 0.2}, "tags": ["support"],
        "commitMessage": "first"
    }));
    for field in [
        "id",
        "createdAt",
        "updatedAt",
        "commitMessage",
        "resolutionGraph",
    ] {
        assert!(v1.get(field).is_some(), "{field} missing in {v1}");
    }
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["type"], "text");
    assert_eq!(v1["projectId"], "proj");
    assert_eq!(v1["createdBy"], "API");
    assert_eq!(v1["isActive"], true);
    assert_eq!(labels(&v1), ["production", "latest"]);
    assert_eq!(v1["config"], json!({"model": "gpt-4o", "temperature": 0.2}));

    let v2 = api.create(text("greeter", "Hi {{name}}", &["staging"]));
    assert_eq!(v2["version"], 2);
    assert_eq!(labels(&v2), ["staging", "latest"]);
    assert_eq!(
        v2["tags"],
        json!(["support"]),
        "tags carry over when omitted"
    );
    assert_eq!(v2["config"], json!({}));
    assert_eq!(v2["isActive"], false);

    // No label or version: production. Labels and versions fetch their version.
    assert_eq!(api.ok(&format!("{V2}/greeter"))["version"], 1);
    assert_eq!(api.ok(&format!("{V2}/greeter?label=latest"))["version"], 2);
    assert_eq!(api.ok(&format!("{V2}/greeter?label=staging"))["version"], 2);
    let by_version = api.ok(&format!("{V2}/greeter?version=1"));
    assert_eq!(by_version["prompt"], "Hello {{name}}");
    assert_eq!(labels(&by_version), ["production"], "latest moved to v2");

    // A new production version takes the label; new tags apply to every version.
    let v3 = api.create(
        json!({"name": "greeter", "prompt": "Hey", "labels": ["production"], "tags": ["b2c"]}),
    );
    assert_eq!(v3["version"], 3);
    assert_eq!(api.ok(&format!("{V2}/greeter"))["version"], 3);
    let old = api.ok(&format!("{V2}/greeter?version=1"));
    assert_eq!(labels(&old), Vec::<String>::new());
    assert_eq!(old["tags"], json!(["b2c"]));

    let chat = api.create(json!({
        "name": "assistant", "type": "chat", "labels": ["production"],
        "prompt": [
            {"role": "system", "content": "You help with {{topic}}."},
            {"type": "placeholder", "name": "history"},
            {"role": "user", "content": "{{question}}"}
        ]
    }));
    assert_eq!(chat["type"], "chat");
    let fetched = api.ok(&format!("{V2}/assistant"));
    assert_eq!(fetched["prompt"], chat["prompt"]);
    assert_eq!(
        fetched["prompt"][1],
        json!({"type": "placeholder", "name": "history"})
    );
    assert_eq!(fetched["id"], chat["id"]);
}

#[test]
fn errors_say_what_is_wrong() {
    let api = Api::new();
    api.create(text("p", "x", &["staging"]));
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::GET,
            format!("{V2}/p"),
            None,
            404,
            "Prompt not found: 'p' with label 'production'",
        ),
        (
            Method::GET,
            format!("{V2}/p?version=7"),
            None,
            404,
            "Prompt not found: 'p' with version 7",
        ),
        (
            Method::GET,
            format!("{V2}/nope?label=staging"),
            None,
            404,
            "Prompt not found: 'nope' with label 'staging'",
        ),
        (
            Method::GET,
            format!("{V2}/p?version=1&label=staging"),
            None,
            400,
            "both version and label",
        ),
        (
            Method::GET,
            format!("{V2}/p?version=one"),
            None,
            400,
            "version must be an integer",
        ),
        (
            Method::GET,
            format!("{V2}/p?version=0"),
            None,
            400,
            "version must be 1 or more",
        ),
        (
            Method::POST,
            V2.into(),
            Some(text("p", "x", &["Prod"])),
            400,
            "label \"Prod\" is invalid",
        ),
        (
            Method::POST,
            V2.into(),
            Some(text("p", "x", &["has space"])),
            400,
            "is invalid",
        ),
        (
            Method::POST,
            V2.into(),
            Some(text("a|b", "x", &[])),
            400,
            "'|'",
        ),
        (
            Method::POST,
            V2.into(),
            Some(text("new", "x", &[])),
            400,
            "reserved",
        ),
        (
            Method::POST,
            V2.into(),
            Some(json!({"name": "p"})),
            400,
            "prompt is required",
        ),
        (
            Method::POST,
            V2.into(),
            Some(
                json!({"name": "p", "type": "chat", "prompt": [{"role": "user", "content": "x"}]}),
            ),
            400,
            "keeps its type",
        ),
        (
            Method::PATCH,
            format!("{V2}/p/versions/9"),
            Some(json!({"newLabels": ["a"]})),
            404,
            "Prompt not found: 'p' with version 9",
        ),
        (
            Method::PATCH,
            format!("{V2}/p/versions/1"),
            Some(json!({"newLabels": ["latest"]})),
            400,
            "latest",
        ),
        (
            Method::PATCH,
            format!("{V2}/p/versions/1"),
            Some(json!({"labels": ["a"]})),
            400,
            "newLabels",
        ),
        (
            Method::PATCH,
            format!("{V2}/p/versions/x"),
            Some(json!({"newLabels": []})),
            400,
            "version must be",
        ),
        (
            Method::DELETE,
            format!("{V2}/p?version=1&label=staging"),
            None,
            400,
            "both version and label",
        ),
        (
            Method::DELETE,
            format!("{V2}/p?label=production"),
            None,
            404,
            "with label 'production'",
        ),
        (
            Method::DELETE,
            format!("{V2}/nope"),
            None,
            404,
            "Prompt not found: 'nope'",
        ),
        (
            Method::GET,
            "/api/public/prompts".into(),
            None,
            400,
            "name is required",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, answer) = api.send(method.clone(), &path, body);
        assert_eq!(got, status, "{method} {path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{method} {path}: {message:?} lacks {needle:?}"
        );
    }
    // Not JSON at all.
    let r = api
        .http
        .post(format!("{}{V2}", api.server.base))
        .basic_auth(PK, Some(SK))
        .body("{")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Nothing refused above was written: still one version.
    assert_eq!(api.ok(&format!("{V2}/p?label=latest"))["version"], 1);
}

#[test]
fn folder_names_travel_as_one_encoded_segment() {
    let api = Api::new();
    let created = api.create(text("team/support/greeter", "Hi", &["production"]));
    assert_eq!(created["name"], "team/support/greeter");
    let path = format!("{V2}/team%2Fsupport%2Fgreeter");
    assert_eq!(api.ok(&path)["name"], "team/support/greeter");
    let (status, updated) = api.send(
        Method::PATCH,
        &format!("{path}/versions/1"),
        Some(json!({"newLabels": ["staging"]})),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(labels(&updated), ["production", "latest", "staging"]);
    let listed = api.ok(&format!("{V2}?name=team%2Fsupport%2Fgreeter"));
    assert_eq!(listed["data"][0]["name"], "team/support/greeter");
    let (status, _) = api.send(Method::DELETE, &path, None);
    assert_eq!(status, 204);
    assert_eq!(api.get(&path).0, 404);
}

#[test]
fn patch_moves_labels_and_delete_hands_latest_on() {
    let api = Api::new();
    for i in 1..=3 {
        api.create(text(
            "p",
            &format!("v{i}"),
            if i == 1 { &["production"] } else { &[] },
        ));
    }
    let (status, moved) = api.send(
        Method::PATCH,
        &format!("{V2}/p/versions/2"),
        Some(json!({"newLabels": ["production", "canary"]})),
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["version"], 2);
    assert_eq!(labels(&moved), ["production", "canary"]);
    assert_eq!(moved["isActive"], true);
    assert_eq!(api.ok(&format!("{V2}/p"))["version"], 2);
    assert!(labels(&api.ok(&format!("{V2}/p?version=1"))).is_empty());

    // Deleting the version that holds `latest` gives it to the newest one left.
    let (status, body) = api.send(Method::DELETE, &format!("{V2}/p?version=3"), None);
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(
        labels(&api.ok(&format!("{V2}/p?label=latest"))),
        ["production", "canary", "latest"]
    );
    // By label: every version carrying it.
    assert_eq!(
        api.send(Method::DELETE, &format!("{V2}/p?label=canary"), None)
            .0,
        204
    );
    assert_eq!(api.ok(&format!("{V2}/p?label=latest"))["version"], 1);
    assert_eq!(
        api.get(&format!("{V2}/p")).0,
        404,
        "production went with v2"
    );
    // Neither: the whole prompt.
    assert_eq!(api.send(Method::DELETE, &format!("{V2}/p"), None).0, 204);
    assert_eq!(api.ok(V2)["data"], json!([]));
    // The name starts again at version 1.
    assert_eq!(api.create(text("p", "again", &[]))["version"], 1);
}

#[test]
fn bearer_keys_are_refused_and_projects_do_not_see_each_other() {
    let api = Api::new();
    api.create(text("shared-name", "mine", &["production"]));
    for (method, path) in [
        (Method::GET, format!("{V2}/shared-name")),
        (Method::GET, V2.to_string()),
        (Method::POST, V2.to_string()),
        (
            Method::GET,
            "/api/public/prompts?name=shared-name".to_string(),
        ),
    ] {
        let r = api
            .http
            .request(method.clone(), format!("{}{path}", api.server.base))
            .bearer_auth(PK)
            .json(&text("x", "y", &[]))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{method} {path}");
        let body: Value = r.json().unwrap();
        assert_eq!(
            body["message"],
            "Access denied - need to use basic auth with secret key to GET prompts"
        );
    }
    assert_eq!(
        api.send_as((PK, "wrong"), Method::GET, V2, None).0,
        401,
        "a wrong secret"
    );

    api.add_project("other", "pk-lf-other", "sk-lf-other");
    let other = ("pk-lf-other", "sk-lf-other");
    let (status, _) = api.send_as(other, Method::GET, &format!("{V2}/shared-name"), None);
    assert_eq!(status, 404);
    let (_, list) = api.send_as(other, Method::GET, V2, None);
    assert_eq!(list["meta"]["totalItems"], 0);
    // The same name in the other project is its own prompt, starting at version 1.
    let (status, theirs) = api.send_as(
        other,
        Method::POST,
        V2,
        Some(text("shared-name", "theirs", &["production"])),
    );
    assert_eq!(status, 201);
    assert_eq!(
        (theirs["version"].clone(), theirs["projectId"].clone()),
        (json!(1), json!("other"))
    );
    let (status, _) = api.send_as(other, Method::DELETE, &format!("{V2}/shared-name"), None);
    assert_eq!(status, 204);
    let mine = api.ok(&format!("{V2}/shared-name"));
    assert_eq!(mine["prompt"], "mine");
}

#[test]
fn list_pages_by_name_and_filters_versions() {
    let api = Api::new();
    for i in 0..12 {
        api.create(json!({"name": format!("p{i:02}"), "prompt": "x", "tags": [if i % 2 == 0 { "even" } else { "odd" }]}));
    }
    let before_v2 = sightline::time::Timestamp::now().to_iso_micros();
    std::thread::sleep(std::time::Duration::from_millis(5));
    api.create(json!({"name": "p00", "prompt": "y", "labels": ["production"], "config": {"k": 2}}));

    let first = api.ok(V2);
    assert_eq!(
        first["data"].as_array().unwrap().len(),
        10,
        "default limit 10"
    );
    assert_eq!(
        first["meta"],
        json!({"page": 1, "limit": 10, "totalItems": 12, "totalPages": 2})
    );
    assert_eq!(first["pagination"], first["meta"]);
    assert_eq!(first["data"][0]["name"], "p00");
    assert_eq!(first["data"][0]["versions"], json!([1, 2]));
    assert_eq!(first["data"][0]["labels"], json!(["latest", "production"]));
    assert_eq!(first["data"][0]["lastConfig"], json!({"k": 2}));
    assert_eq!(first["data"][0]["type"], "text");
    assert!(first["data"][0]["lastUpdatedAt"].is_string());
    let second = api.ok(&format!("{V2}?page=2"));
    let names: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p10", "p11"]);
    assert_eq!(
        api.ok(&format!("{V2}?limit=5&page=3"))["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let count = |query: &str| api.ok(&format!("{V2}?{query}"))["meta"]["totalItems"].clone();
    assert_eq!(count("name=p03"), 1);
    assert_eq!(count("tag=odd"), 6);
    assert_eq!(count("label=production"), 1);
    assert_eq!(count("version=2"), 1);
    let updated_since = format!("fromUpdatedAt={}", urlencode(&before_v2));
    assert_eq!(count(&updated_since), 1, "only p00 changed after the mark");
    let until = format!("toUpdatedAt={}", urlencode(&before_v2));
    assert_eq!(
        count(&until),
        11,
        "p00's versions were both touched after the mark"
    );
    let production = api.ok(&format!("{V2}?label=production"));
    assert_eq!(production["data"][0]["versions"], json!([2]));
    for bad in [
        "limit=101",
        "page=0",
        "fromUpdatedAt=yesterday",
        "version=x",
    ] {
        assert_eq!(api.get(&format!("{V2}?{bad}")).0, 400, "{bad}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[test]
fn legacy_v1_routes_use_is_active() {
    let api = Api::new();
    let (status, created) = api.send(
        Method::POST,
        "/api/public/prompts",
        Some(json!({"name": "old", "prompt": "v1 {{x}}", "isActive": true, "config": null})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["isActive"], true);
    assert_eq!(labels(&created), ["production", "latest"]);
    let (_, inactive) = api.send(
        Method::POST,
        "/api/public/prompts",
        Some(json!({"name": "old", "prompt": "v2", "isActive": false})),
    );
    assert_eq!(inactive["isActive"], false);
    let active = api.ok("/api/public/prompts?name=old");
    assert_eq!(
        (active["version"].clone(), active["isActive"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(
        api.ok("/api/public/prompts?name=old&version=2")["prompt"],
        "v2"
    );
    assert_eq!(api.get("/api/public/prompts?name=missing").0, 404);
}

#[test]
fn concurrent_creates_get_consecutive_versions_and_one_production() {
    let api = Api::new();
    let base = api.server.base.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let r = Client::new()
                    .post(format!("{base}{V2}"))
                    .basic_auth(PK, Some(SK))
                    .json(&text("race", &format!("from {i}"), &["production"]))
                    .send()
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
                r.json::<Value>().unwrap()["version"].as_u64().unwrap()
            })
        })
        .collect();
    let mut versions: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let mut holders = Vec::new();
    for v in 1..=8 {
        let p = api.ok(&format!("{V2}/race?version={v}"));
        for l in labels(&p) {
            holders.push((l, v));
        }
    }
    holders.sort();
    assert_eq!(
        holders,
        vec![("latest".to_string(), 8), ("production".to_string(), 8)],
        "each label on exactly one version, the newest"
    );
}

#[test]
fn generations_naming_a_prompt_version_carry_its_id() {
    let api = Api::new();
    let v1 = api.create(text("summarize", "Summarize {{text}}", &["production"]));
    let event = |id: &str, version: i64| {
        json!({"id": format!("ev-{id}"), "type": "generation-create", "timestamp": "2025-03-01T10:00:00Z",
               "body": {"id": id, "traceId": "t1", "name": "llm", "startTime": "2025-03-01T10:00:00Z",
                        "model": "gpt-4o", "promptName": "summarize", "promptVersion": version}})
    };
    let (status, body) = api.send(
        Method::POST,
        "/api/public/ingestion",
        Some(json!({"batch": [
            {"id": "ev-t1", "type": "trace-create", "timestamp": "2025-03-01T10:00:00Z",
             "body": {"id": "t1", "timestamp": "2025-03-01T10:00:00Z"}},
            event("linked", 1),
            event("dangling", 5),
        ]})),
    );
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["errors"], json!([]));

    let linked = api.ok("/api/public/observations/linked");
    assert_eq!(linked["promptId"], v1["id"]);
    assert_eq!(
        (
            linked["promptName"].clone(),
            linked["promptVersion"].clone()
        ),
        (json!("summarize"), json!(1))
    );
    let dangling = api.ok("/api/public/observations/dangling");
    assert_eq!(dangling["promptId"], Value::Null, "no such version stored");
    assert_eq!(dangling["promptVersion"], 5);

    let v2 = api.ok("/api/public/v2/observations?traceId=t1&fields=core,prompt");
    let ids: Vec<(Value, Value)> = v2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].clone(), o["promptId"].clone()))
        .collect();
    assert!(ids.contains(&(json!("linked"), v1["id"].clone())), "{v2}");
    assert!(ids.contains(&(json!("dangling"), Value::Null)), "{v2}");
    let without = api.ok("/api/public/v2/observations?traceId=t1&fields=core");
    assert!(
        without["data"][0].get("promptId").is_none(),
        "prompt group not asked for"
    );
    let trace = api.ok("/api/public/traces/t1");
    let in_trace = trace["observations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "linked")
        .unwrap();
    assert_eq!(in_trace["promptId"], v1["id"]);
}

#[test]
fn dashboard_reads_prompts_through_a_session() {
    let api = Api::new();
    let hash = sightline::auth::hash_password("pw-prompts-test").unwrap();
    let user = sightline::store::UserRecord {
        email: "ui@example.com".into(),
        name: "UI".into(),
        password_hash: hash,
        project_ids: vec!["proj".into()],
        created_at: sightline::time::Timestamp::now(),
    };
    api.server
        .state
        .store
        .put_admin(&[], &[], &[user], &[])
        .unwrap();
    api.create(text("team/a", "one", &["production"]));
    api.create(text("team/a", "two\nlines", &[]));

    let login = api
        .http
        .post(format!("{}/api/ui/login", api.server.base))
        .header("x-sightline-csrf", "1")
        .json(&json!({"email": "ui@example.com", "password": "pw-prompts-test"}))
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ui = |path: &str| {
        let r = api
            .http
            .get(format!("{}/api/ui/{path}", api.server.base))
            .header("cookie", &cookie)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (status, list) = ui("prompts");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["name"], "team/a");
    let (status, versions) = ui("prompts/team%2Fa/versions");
    assert_eq!(status, 200, "{versions}");
    let texts: Vec<&str> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two\nlines"]);
    assert_eq!(ui("prompts/team%2Fa").1["prompt"], "one");
    assert_eq!(ui("prompts/none/versions").0, 404);
    // Without the session cookie the dashboard routes refuse.
    let anon = api
        .http
        .get(format!("{}/api/ui/prompts", api.server.base))
        .send()
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}

/// The real Langfuse Python SDK 5.x (from PyPI, pinned) against the binary: creates and fetches
/// prompts, moves a label, links a generation; then our read API must show the link.
#[test]
fn langfuse_python_sdk_5_manages_prompts_and_links_generations() {
    use common::venv::Venv;
    use common::{Findings, PUBLIC_KEY, SECRET_KEY, Server, unique_id};

    let venv = Venv::ensure("langfuse5", "requirements-langfuse5.txt");
    let server = Server::start();
    let run = unique_id("prompts");
    let env = vec![
        ("LANGFUSE_BASE_URL", server.base_url()),
        ("LANGFUSE_HOST", server.base_url()),
        ("LANGFUSE_PUBLIC_KEY", PUBLIC_KEY.to_string()),
        ("LANGFUSE_SECRET_KEY", SECRET_KEY.to_string()),
        ("SIGHTLINE_RUN_ID", run.clone()),
    ];
    let out = venv.run_json("sdk_v5_prompts.py", &[], &env);
    let text_name = format!("live/{run}/greeter");
    let mut check = Findings::default();
    let version_labels = |key: &str| json!([out[key]["version"], out[key]["labels"]]);

    check.eq(
        "create v1",
        &version_labels("createdV1"),
        &json!([1, ["production", "latest"]]),
    );
    check.eq(
        "create v2",
        &version_labels("createdV2"),
        &json!([2, ["staging", "latest"]]),
    );
    check.eq("v1 tags", &out["createdV1"]["tags"], &json!(["live"]));
    check.eq(
        "v2 keeps the tags",
        &out["createdV2"]["tags"],
        &json!(["live"]),
    );
    check.eq(
        "class",
        &out["default"]["class"],
        &json!("TextPromptClient"),
    );
    check.eq(
        "default is production",
        &out["default"]["version"],
        &json!(1),
    );
    check.eq(
        "not a fallback",
        &out["default"]["isFallback"],
        &json!(false),
    );
    check.eq(
        "config",
        &out["default"]["config"],
        &json!({"model": "gpt-4o", "temperature": 0.1}),
    );
    check.eq("label staging", &out["staging"]["version"], &json!(2));
    check.eq("version 1", &out["byVersion"]["version"], &json!(1));
    check.eq("label latest", &out["latest"]["version"], &json!(2));
    check.eq(
        "compile",
        &out["compiled"],
        &json!("Hello Ada, welcome to Sightline."),
    );
    check.eq(
        "update_prompt answer",
        &out["updated"],
        &json!({"version": 2, "labels": ["staging", "latest", "production"]}),
    );
    check.eq("production moved", &out["afterMove"]["version"], &json!(2));
    check.eq(
        "v1 lost production",
        &out["v1AfterMove"]["labels"],
        &json!([]),
    );
    check.eq(
        "chat class",
        &out["chat"]["class"],
        &json!("ChatPromptClient"),
    );
    check.eq("chat version", &out["chat"]["version"], &json!(1));
    check.eq(
        "chat compile",
        &out["chatCompiled"],
        &json!([
            {"role": "system", "content": "You are a ship's navigator."},
            {"role": "user", "content": "Earlier question"},
            {"role": "user", "content": "Where are we?"},
        ]),
    );
    check.eq(
        "list through the SDK",
        &out["listed"],
        &json!([{"name": text_name, "type": "text", "versions": [1, 2],
                 "labels": ["latest", "production", "staging"]}]),
    );
    check.eq("list total", &out["listedTotal"], &json!(1));
    check.that(
        "404 as NotFoundError",
        out["missing"].as_str().is_some_and(|m| {
            m.starts_with("NotFoundError")
                && m.contains("Prompt not found: 'no-such-prompt' with label 'production'")
        }),
        &out["missing"],
    );

    // The SDK read the link back; check it through our own API too.
    let generation_id = out["generationId"].as_str().unwrap();
    let stored = server
        .get(&format!("{V2}/{}?version=2", text_name.replace('/', "%2F")))
        .expect_json(200);
    check.eq(
        "SDK read-back of the generation",
        &out["observations"],
        &json!([{"id": generation_id, "promptId": stored["id"], "promptName": text_name, "promptVersion": 2}]),
    );
    let obs = server
        .get(&format!("/api/public/observations/{generation_id}"))
        .expect_json(200);
    check.eq("promptName", &obs["promptName"], &json!(text_name));
    check.eq("promptVersion", &obs["promptVersion"], &json!(2));
    check.eq("promptId", &obs["promptId"], &stored["id"]);
    check.that("promptId is set", stored["id"].is_string(), &stored["id"]);
    check.finish();
}
