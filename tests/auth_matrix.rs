//! Who may call what, generated from the route table: every route × every kind of caller gets
//! the answer its access class promises, the router answers nothing the table does not list,
//! and ids in paths or bodies never reach another project's records.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::in_process::InProcess;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sightline::routes::{Access, Verb};
use sightline::store::{ProjectRecord, UserRecord, WebSessionRecord, WriteOp};
use sightline::time::Timestamp;

const OWN: (&str, &str) = ("pk-lf-test", "sk-lf-test");
const OTHER: (&str, &str) = ("pk-lf-other", "sk-lf-other");
const EMAIL: &str = "matrix@example.com";

/// A kind of caller.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    /// The project's public key with a wrong secret.
    WrongKey,
    /// `Bearer <public key>`: the project's public key alone.
    PublicKeyOnly,
    /// Basic credentials of another project.
    OtherProject,
    /// Basic credentials of the project.
    Owner,
    /// A live dashboard session (with the CSRF header a dashboard page sends).
    Session,
    /// A session whose expiry has passed.
    ExpiredSession,
}

const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::WrongKey,
    Caller::PublicKeyOnly,
    Caller::OtherProject,
    Caller::Owner,
    Caller::Session,
    Caller::ExpiredSession,
];

#[derive(Debug, PartialEq)]
enum Expect {
    /// Past authentication: the handler answered (any status but 401/403/5xx, and not "no such
    /// route").
    Allowed,
    Status(u16),
}

/// What each access class promises each caller.
fn expected(access: Access, caller: Caller) -> Expect {
    use Caller::*;
    match (access, caller) {
        (Access::Public | Access::Anonymous, _) => Expect::Allowed,
        (Access::ApiBasic | Access::ApiBearerOrBasic, Owner | OtherProject) => Expect::Allowed,
        (Access::ApiBasic, PublicKeyOnly) => Expect::Status(403),
        (Access::ApiBearerOrBasic, PublicKeyOnly) => Expect::Allowed,
        // Cookies do not open the public API, and API keys do not open the dashboard's.
        (Access::ApiBasic | Access::ApiBearerOrBasic, _) => Expect::Status(401),
        (Access::Session, Session) => Expect::Allowed,
        (Access::Session, _) => Expect::Status(401),
    }
}

fn basic((pk, sk): (&str, &str)) -> String {
    common::basic_auth(pk, sk)
}

/// The in-process server with a second project and a dashboard user of the first.
struct Fixture {
    server: InProcess,
    http: reqwest::blocking::Client,
}

impl Fixture {
    fn start() -> Fixture {
        let server = InProcess::start();
        let now = Timestamp::now();
        let other = ProjectRecord {
            id: "other".into(),
            name: "Other".into(),
            org_id: "org".into(),
            org_name: "Org".into(),
            created_at: now,
            retention_days: None,
        };
        let user = UserRecord {
            email: EMAIL.into(),
            name: "Matrix".into(),
            // Never verified: sessions are written directly below.
            password_hash: "unused".into(),
            project_ids: vec!["proj".into()],
            created_at: now,
        };
        let key = sightline::auth::key_record("other", OTHER.0, OTHER.1, "test");
        let store = &server.state.store;
        store.put_admin(&[other], &[key], &[user], &[]).unwrap();
        server.state.keys.reload(store).unwrap();
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Fixture { server, http }
    }

    /// Writes a session for the test user that expires `ttl_secs` from now (negative: already
    /// expired) and returns its cookie.
    fn session(&self, ttl_secs: i64) -> String {
        let token = common::unique_id("session-token");
        let now = Timestamp::now();
        let hash: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.server
            .state
            .store
            .writer()
            .submit_blocking(WriteOp::PutWebSession {
                token_hash: hash,
                session: WebSessionRecord {
                    email: EMAIL.into(),
                    created_at: now,
                    expires_at: Timestamp::from_micros(now.micros() + ttl_secs * 1_000_000),
                },
                now,
            })
            .unwrap();
        format!("{}={token}", sightline::web::COOKIE_NAME)
    }

    fn request(&self, verb: Verb, path: &str, caller: Caller) -> reqwest::blocking::RequestBuilder {
        let method = reqwest::Method::from_bytes(verb.method().as_str().as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.base))
            .header(sightline::web::CSRF_HEADER, "1");
        if matches!(verb, Verb::Post | Verb::Put | Verb::Patch | Verb::Delete) {
            req = req.header("content-type", "application/json").body("{}");
        }
        match caller {
            Caller::Anonymous => req,
            Caller::WrongKey => req.header("authorization", basic((OWN.0, "sk-lf-wrong"))),
            Caller::PublicKeyOnly => req.header("authorization", format!("Bearer {}", OWN.0)),
            Caller::OtherProject => req.header("authorization", basic(OTHER)),
            Caller::Owner => req.header("authorization", basic(OWN)),
            Caller::Session => req.header("cookie", self.session(3600)),
            Caller::ExpiredSession => req.header("cookie", self.session(-60)),
        }
    }

    /// Status and, unless it is a success (which may be an endless stream), the body.
    fn call(&self, verb: Verb, path: &str, caller: Caller) -> (u16, String) {
        let resp = self
            .request(verb, path, caller)
            .send()
            .unwrap_or_else(|e| panic!("{verb:?} {path} as {caller:?}: no answer: {e}"));
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return (status, String::new());
        }
        (status, resp.text().unwrap_or_default())
    }

    fn json(&self, verb: Verb, path: &str, key: (&str, &str), body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(verb.method().as_str().as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server.base))
            .header("authorization", basic(key));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A concrete path for a pattern: every parameter gets a value no record has.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| match seg {
            s if s.starts_with("{*") => "matrix/x".to_string(),
            s if s.starts_with('{') => "matrix-x".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The router's own "no such route" and "wrong method" answers.
fn unrouted(status: u16, body: &str) -> bool {
    status == 405 || (status == 404 && body.contains("no such route"))
}

#[test]
fn every_route_answers_each_caller_as_its_access_class_promises() {
    let f = Fixture::start();
    let routes = sightline::server::routes(&f.server.state);
    assert!(routes.len() > 40, "the table lists every route");
    let mut failures = Vec::new();
    let mut cells = 0;
    for route in &routes {
        let path = concrete(route.path);
        for caller in CALLERS {
            cells += 1;
            let (status, body) = f.call(route.verb, &path, caller);
            let want = expected(route.access, caller);
            let ok = match want {
                Expect::Status(s) => status == s,
                Expect::Allowed => {
                    status != 401 && status != 403 && status < 500 && !unrouted(status, &body)
                }
            };
            if !ok {
                failures.push(format!(
                    "{:?} {} ({:?}) as {caller:?}: expected {want:?}, got {status} {}",
                    route.verb,
                    route.path,
                    route.access,
                    body.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    eprintln!("{cells} cells checked over {} routes", routes.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_router_answers_only_what_the_table_lists() {
    let f = Fixture::start();
    let routes = sightline::server::routes(&f.server.state);
    let mut listed = BTreeSet::new();
    for r in &routes {
        assert!(
            listed.insert((r.path, r.verb)),
            "{:?} {} is listed twice",
            r.verb,
            r.path
        );
    }
    let paths: BTreeSet<&str> = routes.iter().map(|r| r.path).collect();
    let cookie = f.session(3600);
    let mut failures = Vec::new();
    for path in &paths {
        for verb in Verb::ALL {
            if listed.contains(&(*path, verb)) {
                continue;
            }
            // Fully credentialed, so only the absence of a route can refuse the request.
            let resp = f
                .request(verb, &concrete(path), Caller::Owner)
                .header("cookie", &cookie)
                .send()
                .unwrap();
            let status = resp.status().as_u16();
            if status != 405 {
                failures.push(format!(
                    "{verb:?} {path} is not in the table but answered {status}"
                ));
            }
        }
    }
    for path in [
        "/api/public/nothing",
        "/api/ui/nothing",
        "/api/public/traces/a/b",
        "/x",
    ] {
        for caller in [Caller::Owner, Caller::Session] {
            let (status, body) = f.call(Verb::Get, path, caller);
            if !unrouted(status, &body) {
                failures.push(format!(
                    "GET {path} is not in the table but answered {status}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn event(kind: &str, body: Value) -> Value {
    json!({"id": common::unique_id("evt"), "type": kind, "timestamp": common::now_iso(),
           "body": body})
}

fn ingest(f: &Fixture, key: (&str, &str), events: Vec<Value>) {
    let (status, body) = f.json(
        Verb::Post,
        "/api/public/ingestion",
        key,
        Some(json!({ "batch": events })),
    );
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["errors"], json!([]), "{body}");
}

#[test]
fn ids_in_bodies_and_paths_never_reach_another_project() {
    let f = Fixture::start();
    // Project A's records.
    ingest(
        &f,
        OWN,
        vec![
            event(
                "trace-create",
                json!({"id": "shared-t", "name": "alice-trace",
                                         "userId": "alice", "sessionId": "shared-s"}),
            ),
            event(
                "span-create",
                json!({"id": "shared-o", "traceId": "shared-t",
                                        "name": "alice-span"}),
            ),
            event(
                "score-create",
                json!({"id": "shared-sc", "traceId": "shared-t",
                                         "name": "quality", "value": 1}),
            ),
            event("trace-create", json!({"id": "only-a-t", "name": "a-only"})),
            event(
                "score-create",
                json!({"id": "only-a-sc", "traceId": "only-a-t",
                                         "name": "quality", "value": 0.5}),
            ),
        ],
    );
    let (status, model) = f.json(
        Verb::Post,
        "/api/public/models",
        OWN,
        Some(json!({"modelName": "a-llm", "matchPattern": "(?i)^a-llm$",
                    "unit": "TOKENS", "inputPrice": 0.000001})),
    );
    assert_eq!(status, 200, "{model}");
    let model_path = format!("/api/public/models/{}", model["id"].as_str().unwrap());
    let snapshot = |path: &str| {
        let (status, body) = f.json(Verb::Get, path, OWN, None);
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let a_paths = [
        "/api/public/traces/shared-t",
        "/api/public/observations/shared-o",
        "/api/public/scores/shared-sc",
        "/api/public/sessions/shared-s",
        "/api/public/traces/only-a-t",
        model_path.as_str(),
    ];
    let before: Vec<Value> = a_paths.iter().map(|p| snapshot(p)).collect();

    // Project B writes events carrying A's ids: they land in B, A's records are untouched.
    ingest(
        &f,
        OTHER,
        vec![
            event(
                "trace-create",
                json!({"id": "shared-t", "name": "mallory",
                                         "userId": "mallory", "sessionId": "shared-s",
                                         "tags": ["owned"]}),
            ),
            event(
                "span-create",
                json!({"id": "shared-o", "traceId": "shared-t",
                                        "name": "mallory-span", "level": "ERROR"}),
            ),
            event(
                "score-create",
                json!({"id": "shared-sc", "traceId": "shared-t",
                                         "name": "quality", "value": 0}),
            ),
            event(
                "score-create",
                json!({"traceId": "only-a-t", "name": "sneaky",
                                         "value": 0}),
            ),
        ],
    );
    let (status, _) = f.json(
        Verb::Post,
        "/api/public/scores",
        OTHER,
        Some(json!({"traceId": "only-a-t", "name": "sneaky-direct", "value": 0})),
    );
    assert_eq!(status, 200);
    let bearer = f
        .http
        .post(format!("{}/api/public/scores", f.server.base))
        .header("authorization", format!("Bearer {}", OTHER.0))
        .json(&json!({"traceId": "only-a-t", "name": "sneaky-bearer", "value": 0}))
        .send()
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);

    let (_, theirs) = f.json(Verb::Get, "/api/public/traces/shared-t", OTHER, None);
    assert_eq!(theirs["name"], "mallory", "B's copy lives in B: {theirs}");
    let (_, theirs) = f.json(Verb::Get, "/api/public/v2/scores?limit=100", OTHER, None);
    let names: BTreeSet<&str> = theirs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["quality", "sneaky", "sneaky-direct", "sneaky-bearer"]),
        "{theirs}"
    );

    // B cannot read, delete or score-delete what only A has.
    for path in [
        "/api/public/traces/only-a-t",
        "/api/public/scores/only-a-sc",
        "/api/public/v2/scores/only-a-sc",
        &model_path,
    ] {
        let (status, body) = f.json(Verb::Get, path, OTHER, None);
        assert_eq!(status, 404, "GET {path} as B: {body}");
    }
    for path in [
        "/api/public/traces/only-a-t",
        "/api/public/scores/only-a-sc",
        &model_path,
    ] {
        let (status, body) = f.json(Verb::Delete, path, OTHER, None);
        assert_eq!(status, 404, "DELETE {path} as B: {body}");
    }
    let (status, body) = f.json(
        Verb::Delete,
        "/api/public/traces",
        OTHER,
        Some(json!({"traceIds": ["only-a-t", "shared-t"]})),
    );
    assert_eq!(status, 200, "{body}");

    let after: Vec<Value> = a_paths.iter().map(|p| snapshot(p)).collect();
    assert_eq!(
        before, after,
        "project B's requests changed project A's records"
    );
    let (_, scores) = f.json(Verb::Get, "/api/public/v2/scores?limit=100", OWN, None);
    let names: BTreeSet<&str> = scores["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["quality"]), "{scores}");
    // B's bulk delete removed its own shared-t, not A's.
    let (status, _) = f.json(Verb::Get, "/api/public/traces/shared-t", OTHER, None);
    assert_eq!(status, 404);
}

#[test]
fn every_dashboard_response_carries_the_csp_and_html_never_comes_without_it() {
    let f = Fixture::start();
    let routes = sightline::server::routes(&f.server.state);
    let mut checked = 0;
    let mut failures = Vec::new();
    // Unknown paths a browser may land on: the fallback answers with the same headers.
    let extra = [
        (Verb::Get, "/project", Access::Anonymous),
        (Verb::Get, "/assets/none/app.css", Access::Anonymous),
        (Verb::Get, "/nothing.html", Access::Anonymous),
        (Verb::Post, "/api/ui/nothing", Access::Anonymous),
    ];
    let listed = routes
        .iter()
        .map(|r| (r.verb, r.path, r.access))
        .chain(extra);
    for (verb, path, access) in listed {
        let path = concrete(path);
        for caller in [Caller::Anonymous, Caller::Session, Caller::Owner] {
            let resp = f.request(verb, &path, caller).send().unwrap();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let html = header("content-type").is_some_and(|c| c.starts_with("text/html"));
            let csp = header("content-security-policy");
            checked += 1;
            let dashboard = matches!(access, Access::Session | Access::Anonymous);
            if (html || dashboard) && csp.as_deref() != Some(sightline::web::CSP) {
                failures.push(format!(
                    "{verb:?} {path} as {caller:?}: {} html={html} csp={csp:?}",
                    resp.status()
                ));
            }
        }
    }
    eprintln!("{checked} responses checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A conditional request for the page still gets the policy with its 304.
    let page = f.request(Verb::Get, "/", Caller::Anonymous).send().unwrap();
    let etag = page.headers()["etag"].clone();
    let again = f
        .request(Verb::Get, "/", Caller::Anonymous)
        .header("if-none-match", etag)
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(
        again.headers()["content-security-policy"],
        sightline::web::CSP
    );
}
