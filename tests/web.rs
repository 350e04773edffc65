//! The dashboard's HTTP surface, against the real binary: security headers, exact-path assets,
//! login sessions (cookie flags, server-side logout, rate limit, CSRF), project scoping, and
//! API keys managed from settings.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::{PROJECT_ID, Resp, Server};
use serde_json::{Value, json};

const EMAIL: &str = "dash@example.com";
const PASSWORD: &str = "correct horse battery";

fn server() -> Server {
    Server::builder()
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", PASSWORD)
        .start()
}

/// A client that sends no API key and follows no redirects.
fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn login(s: &Server, email: &str, password: &str) -> Resp {
    s.send(
        "POST /api/ui/login",
        browser()
            .post(s.url("/api/ui/login"))
            .header("x-sightline-csrf", "1")
            .json(&json!({"email": email, "password": password})),
    )
}

/// Logs in and returns the `name=value` cookie pair.
fn session(s: &Server) -> String {
    let r = login(s, EMAIL, PASSWORD);
    assert_eq!(r.status, 200, "login: {}", r.text());
    let set = r.headers["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

fn ui_get(s: &Server, cookie: &str, path: &str) -> Resp {
    s.send(
        &format!("GET {path}"),
        browser().get(s.url(path)).header("cookie", cookie),
    )
}

/// Sends bytes exactly as given (no URL normalisation) and returns the status code.
fn raw_status(s: &Server, path: &str) -> u16 {
    let addr = s.base_url().trim_start_matches("http://").to_string();
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn asset_base(html: &str) -> String {
    let start = html.find("/assets/").expect("page links its assets");
    let rest = &html[start..];
    let end = rest[8..].find('/').unwrap() + 8;
    rest[..end].to_string()
}

#[test]
fn html_carries_a_strict_csp_and_assets_are_cached_by_version() {
    let s = server();
    for path in ["/", "/project/p/traces/t1"] {
        let r = s.send(path, browser().get(s.url(path)));
        assert_eq!(r.status, 200);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        let html = r.text();
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "third-party origin in {html}"
        );
        assert!(!html.contains("<script>"), "inline script in {html}");
    }
    let html = s.send("/", browser().get(s.url("/"))).text();
    let base = asset_base(&html);
    let js = s.send("js", browser().get(s.url(&format!("{base}/js/main.js"))));
    assert_eq!(js.status, 200);
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        js.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(js.headers.contains_key("content-security-policy"));
    let etag = js.headers["etag"].to_str().unwrap().to_string();
    let again = s.send(
        "js again",
        browser()
            .get(s.url(&format!("{base}/js/main.js")))
            .header("if-none-match", &etag),
    );
    assert_eq!(again.status, 304);
    let gz = s.send(
        "css gzip",
        browser()
            .get(s.url(&format!("{base}/app.css")))
            .header("accept-encoding", "gzip"),
    );
    assert_eq!(gz.headers["content-encoding"], "gzip");
    // An old version's URL is not served: a stale page must reload, not mix versions.
    assert_eq!(raw_status(&s, "/assets/000000000000/js/main.js"), 404);
}

#[test]
fn traversal_and_odd_asset_paths_are_404() {
    let s = server();
    let html = s.send("/", browser().get(s.url("/"))).text();
    let base = asset_base(&html);
    assert_eq!(raw_status(&s, &format!("{base}/app.css")), 200);
    for tail in [
        "/../../Cargo.toml",
        "/js/../../Cargo.toml",
        "/%2e%2e/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/%252e%252e/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%5cCargo.toml",
        "/js%5c..%5c..%5cCargo.toml",
        "/app.css%00",
        "/app.css%00.js",
        "//etc/passwd",
        "/index.html",
        "/README.md",
        "/js/",
        "/JS/main.js",
    ] {
        assert_eq!(raw_status(&s, &format!("{base}{tail}")), 404, "{tail}");
    }
    assert_eq!(raw_status(&s, "/assets/../Cargo.toml"), 404);
    assert_eq!(raw_status(&s, "/assets/%2e%2e/Cargo.toml"), 404);
}

#[test]
fn encoded_traversal_forms_are_404_and_deep_links_never_serve_files() {
    let s = server();
    let html = s.send("/", browser().get(s.url("/"))).text();
    let base = asset_base(&html);
    for tail in [
        "/.%2e/.%2e/Cargo.toml",
        "/%2e./%2e./Cargo.toml",
        "/%c0%ae%c0%ae/%c0%ae%c0%ae/Cargo.toml",
        "/%u002e%u002e/Cargo.toml",
        "/..;/..;/Cargo.toml",
        "/%2e%2e%5c%2e%2e%5cCargo.toml",
        "/./app.css",
        "/app.css/.",
        "/app.css/",
        "/js/%2fmain.js",
        "/%00",
        "/app.css%0a",
        "/app.css%20",
        "/app.css;.js",
    ] {
        assert_eq!(raw_status(&s, &format!("{base}{tail}")), 404, "{tail}");
    }
    // A raw backslash or control byte is not a valid request target: refused before routing.
    for tail in ["/..\\..\\Cargo.toml", "/js\\main.js"] {
        let status = raw_status(&s, &format!("{base}{tail}"));
        assert!(status == 400 || status == 404, "{tail}: {status}");
    }
    // Deep links answer the page for any path, whatever it spells: never a file.
    for path in [
        "/project/..%2f..%2fCargo.toml",
        "/project/%2e%2e/%2e%2e/Cargo.toml",
        "/project/p/../../../../etc/passwd",
    ] {
        let r = s.send(path, browser().get(s.url(path)));
        let body = r.text();
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{path} served a file: {body:.200}"
        );
        if r.status == 200 {
            assert!(
                r.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            assert!(r.headers.contains_key("content-security-policy"), "{path}");
        }
    }
}

#[test]
fn the_session_cookie_is_secure_behind_an_https_proxy() {
    let s = server();
    let login_with = |proto: Option<&str>| {
        let mut req = browser()
            .post(s.url("/api/ui/login"))
            .header("x-sightline-csrf", "1")
            .json(&json!({"email": EMAIL, "password": PASSWORD}));
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        let r = s.send("login", req);
        assert_eq!(r.status, 200, "{}", r.text());
        r.headers["set-cookie"].to_str().unwrap().to_string()
    };
    let plain = login_with(None);
    let proxied = login_with(Some("https"));
    for cookie in [&plain, &proxied] {
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
            assert!(cookie.contains(flag), "{flag} missing from {cookie}");
        }
        assert!(!cookie.contains("Domain="), "a host-only cookie: {cookie}");
    }
    // A plain-http appliance could never log in with a Secure cookie; behind TLS it must be one.
    assert!(!plain.contains("Secure"), "{plain}");
    assert!(proxied.contains("; Secure"), "{proxied}");
    let cookie = proxied.split(';').next().unwrap().to_string();
    let out = s.send(
        "logout",
        browser()
            .post(s.url("/api/ui/logout"))
            .header("cookie", &cookie)
            .header("x-sightline-csrf", "1")
            .header("x-forwarded-proto", "https"),
    );
    let cleared = out.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("; Secure"),
        "{cleared}"
    );
}

#[test]
fn failed_logins_from_one_address_are_limited_across_emails() {
    let s = server();
    for i in 0..5 {
        let r = login(&s, &format!("guess{i}@example.com"), "wrong");
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = login(&s, "yet-another@example.com", "wrong");
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.json()["message"].as_str().unwrap().contains("retry"));
    // Malformed attempts are refused without counting, and the dashboard's reads stay open to
    // nobody: the limiter never stands in for authentication.
    assert_eq!(ui_get(&s, "", "/api/ui/me").status, 401);
}

#[test]
fn login_sets_a_strict_http_only_cookie_and_logout_ends_the_session_server_side() {
    let s = server();
    // Without the CSRF header a login is refused before the password is looked at.
    let r = s.send(
        "login without csrf",
        browser()
            .post(s.url("/api/ui/login"))
            .json(&json!({"email": EMAIL, "password": PASSWORD})),
    );
    assert_eq!(r.status, 403);
    assert_eq!(login(&s, EMAIL, "wrong").status, 401);
    assert_eq!(login(&s, "nobody@example.com", PASSWORD).status, 401);

    let r = login(&s, &EMAIL.to_uppercase(), PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let token = cookie.split_once('=').unwrap().1;
    assert_eq!(token.len(), 64, "256-bit random token");

    let me = ui_get(&s, &cookie, "/api/ui/me").expect_json(200);
    assert_eq!(me["email"], EMAIL);
    assert_eq!(me["project"], PROJECT_ID);
    assert_eq!(
        ui_get(&s, &cookie, "/api/ui/me").headers["cache-control"],
        "no-store"
    );

    // The token is not in the data file: only its hash is stored.
    let db = std::fs::read(s.data_dir().join("sightline.redb")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "raw session token found in the database file"
    );

    let out = s.send(
        "logout",
        browser()
            .post(s.url("/api/ui/logout"))
            .header("cookie", &cookie)
            .header("x-sightline-csrf", "1"),
    );
    assert_eq!(out.status, 200);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // Replaying the old cookie fails: the session is gone on the server, not just in the browser.
    assert_eq!(ui_get(&s, &cookie, "/api/ui/me").status, 401);
    assert_eq!(ui_get(&s, &cookie, "/api/ui/traces").status, 401);
}

#[test]
fn failed_logins_are_rate_limited_per_email_and_address() {
    let s = server();
    for i in 0..5 {
        assert_eq!(login(&s, EMAIL, "wrong").status, 401, "attempt {i}");
    }
    let r = login(&s, EMAIL, "wrong");
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // Even the right password waits: guessing must not continue in the background.
    assert_eq!(login(&s, EMAIL, PASSWORD).status, 429);
}

#[test]
fn state_changes_need_the_csrf_header_and_a_same_origin() {
    let s = server();
    let cookie = session(&s);
    let no_header = s.send(
        "logout without header",
        browser()
            .post(s.url("/api/ui/logout"))
            .header("cookie", &cookie),
    );
    assert_eq!(no_header.status, 403);
    let cross = s.send(
        "logout cross-origin",
        browser()
            .post(s.url("/api/ui/logout"))
            .header("cookie", &cookie)
            .header("x-sightline-csrf", "1")
            .header("origin", "http://evil.example"),
    );
    assert_eq!(cross.status, 403);
    let key = s.send(
        "create key without header",
        browser()
            .post(s.url("/api/ui/keys"))
            .header("cookie", &cookie)
            .json(&json!({})),
    );
    assert_eq!(key.status, 403);
    // None of these ended the session.
    assert_eq!(ui_get(&s, &cookie, "/api/ui/me").status, 200);
}

#[test]
fn ui_reads_need_a_session_and_stay_in_the_users_projects() {
    let s = server();
    let trace_id = common::unique_id("t");
    s.ingest(vec![json!({
        "id": common::unique_id("e"), "type": "trace-create", "timestamp": common::now_iso(),
        "body": {"id": trace_id, "name": "hello", "userId": "u1"}
    })])
    .expect_json(207);
    assert_eq!(ui_get(&s, "", "/api/ui/traces").status, 401);
    assert_eq!(
        ui_get(&s, "sightline_session=forged", "/api/ui/traces").status,
        401
    );
    // API keys do not open the dashboard endpoints, and cookies do not open the public API.
    let keyed = s.get("/api/ui/traces");
    assert_eq!(keyed.status, 401);
    let cookie = session(&s);
    assert_eq!(ui_get(&s, &cookie, "/api/public/traces").status, 401);

    let list = ui_get(&s, &cookie, "/api/ui/traces").expect_json(200);
    assert_eq!(list["data"][0]["id"], trace_id.as_str());
    let public = s.get("/api/public/traces").expect_json(200);
    assert_eq!(
        list, public,
        "the dashboard reads the same shape as the public API"
    );
    let detail = ui_get(&s, &cookie, &format!("/api/ui/traces/{trace_id}")).expect_json(200);
    assert_eq!(detail["name"], "hello");

    let other = s.send(
        "other project",
        browser()
            .get(s.url("/api/ui/traces"))
            .header("cookie", &cookie)
            .header("x-sightline-project", "someone-elses"),
    );
    assert_eq!(other.status, 403);
    let events = s.send(
        "events other project",
        browser()
            .get(s.url("/api/ui/events?project=someone-elses"))
            .header("cookie", &cookie),
    );
    assert_eq!(events.status, 403);

    let users = ui_get(&s, &cookie, "/api/ui/users").expect_json(200);
    assert_eq!(users["data"][0]["userId"], "u1");
    let overview = ui_get(&s, &cookie, "/api/ui/overview").expect_json(200);
    assert_eq!(overview["traces"], 1);
}

#[test]
fn keys_created_in_settings_work_and_revoking_stops_them() {
    let s = server();
    let cookie = session(&s);
    let post = |path: &str, body: Value| {
        s.send(
            path,
            browser()
                .post(s.url(path))
                .header("cookie", &cookie)
                .header("x-sightline-csrf", "1")
                .json(&body),
        )
    };
    let created = post("/api/ui/keys", json!({"note": "ci"})).expect_json(200);
    let (pk, sk) = (
        created["publicKey"].as_str().unwrap().to_string(),
        created["secretKey"].as_str().unwrap().to_string(),
    );
    let listed = ui_get(&s, &cookie, "/api/ui/keys").expect_json(200);
    assert!(
        !listed.to_string().contains(&sk),
        "secret shown again: {listed}"
    );
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["publicKey"] == pk.as_str())
    );

    let with_key = |pk: &str, sk: &str| {
        s.send(
            "projects with new key",
            browser()
                .get(s.url("/api/public/projects"))
                .header("authorization", common::basic_auth(pk, sk)),
        )
        .status
    };
    assert_eq!(with_key(&pk, &sk), 200);
    let revoked = s.send(
        "revoke",
        browser()
            .delete(s.url(&format!("/api/ui/keys/{pk}")))
            .header("cookie", &cookie)
            .header("x-sightline-csrf", "1"),
    );
    assert_eq!(revoked.status, 200);
    assert_eq!(with_key(&pk, &sk), 401);
    // The bootstrap key still works.
    assert_eq!(s.get("/api/public/projects").status, 200);
}

#[test]
fn live_stream_announces_changes_of_the_project() {
    let s = server();
    let cookie = session(&s);
    let mut resp = browser()
        .get(s.url("/api/ui/events"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    s.ingest(vec![json!({
        "id": common::unique_id("e"), "type": "trace-create", "timestamp": common::now_iso(),
        "body": {"id": common::unique_id("t"), "name": "live"}
    })])
    .expect_json(207);
    let mut buf = [0u8; 256];
    let mut got = String::new();
    while !got.contains("event: change") {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// The overview and users pages answer from the rollups; their numbers must be the public API's
/// for a data set spread over months (the "all time" range starts at the first trace, not 1970),
/// with several models, an unpriced one, an error, and users with several traces.
#[test]
fn overview_and_users_agree_with_the_public_api() {
    let s = server();
    let mut events = Vec::new();
    let generation = |trace: &str, at: &str, model: &str, input: u64, output: u64, level: &str| {
        json!({"id": common::unique_id("e"), "type": "generation-create", "timestamp": at,
               "body": {"id": common::unique_id("g"), "traceId": trace, "name": "llm", "model": model,
                        "startTime": at, "endTime": at, "level": level,
                        "statusMessage": if level == "ERROR" { "rate limited" } else { "" },
                        "usageDetails": {"input": input, "output": output}}})
    };
    let days = [
        "2026-07-01T10:00:00Z",
        "2026-09-15T12:00:00Z",
        "2026-11-20T08:30:00Z",
    ];
    for (i, at) in days.iter().enumerate() {
        for (j, user) in ["alice", "bob", "alice"].iter().enumerate() {
            let trace = format!("ov-{i}-{j}");
            events.push(
                json!({"id": common::unique_id("e"), "type": "trace-create", "timestamp": at,
                "body": {"id": trace, "name": "chat", "userId": user, "timestamp": at}}),
            );
            events.push(generation(&trace, at, "gpt-4o", 1000, 200, "DEFAULT"));
            events.push(generation(
                &trace,
                at,
                "claude-3-5-sonnet-20241022",
                500,
                50,
                "DEFAULT",
            ));
        }
    }
    events.push(generation(
        "ov-2-0",
        days[2],
        "my-inhouse-llm",
        10,
        10,
        "ERROR",
    ));
    s.ingest(events).expect_json(207);
    let cookie = session(&s);

    let public = s.get("/api/public/traces?limit=100").expect_json(200);
    let api_cost: f64 = public["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["totalCost"].as_f64().unwrap())
        .sum();
    assert!(api_cost > 0.0);
    // Errors come from the search index, which trails the store; the overview waits for it to
    // apply what was acknowledged before the request, so the count is right at once.
    let o = ui_get(&s, &cookie, "/api/ui/overview").expect_json(200);
    assert_eq!(o["errors"]["count"], 1, "{}", o["errors"]);
    assert_eq!(o["traces"], 9);
    assert_eq!(o["traces"], public["meta"]["totalItems"]);
    assert!(
        (o["totalCost"].as_f64().unwrap() - api_cost).abs() < 1e-9,
        "{o}"
    );
    assert_eq!(o["observations"], 19);
    assert_eq!(
        o["from"], "2026-07-01T10:00:00.000Z",
        "all time starts at the data"
    );
    assert_eq!(o["granularity"], "week", "{}", o["granularity"]);
    let bars = o["timeline"].as_array().unwrap();
    assert!(bars.len() > 3 && bars.len() <= 100, "{} bars", bars.len());
    let bar_traces: u64 = bars.iter().map(|b| b["traces"].as_u64().unwrap()).sum();
    assert_eq!(bar_traces, 9);
    let gpt = o["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .expect("gpt-4o row");
    assert_eq!(gpt["observations"], 9);
    assert_eq!(gpt["inputTokens"], 9000);
    assert_eq!(gpt["outputTokens"], 1800);
    assert_eq!(
        o["unpricedModels"],
        json!([{"model": "my-inhouse-llm", "observations": 1}])
    );
    assert_eq!(o["errors"]["recent"][0]["statusMessage"], "rate limited");
    assert_eq!(o["errors"]["recent"][0]["traceId"], "ov-2-0");

    // A range narrows every number the same way as the API's fromTimestamp does.
    let from = "fromTimestamp=2026-09-01T00:00:00Z";
    let narrowed = ui_get(&s, &cookie, &format!("/api/ui/overview?{from}")).expect_json(200);
    let public_narrow = s
        .get(&format!("/api/public/traces?{from}"))
        .expect_json(200);
    assert_eq!(narrowed["traces"], public_narrow["meta"]["totalItems"]);
    assert_eq!(narrowed["traces"], 6);

    let users = ui_get(&s, &cookie, "/api/ui/users").expect_json(200);
    let alice = &users["data"][0];
    assert_eq!(alice["userId"], "alice", "most traces first: {users}");
    assert_eq!(alice["traces"], 6);
    assert_eq!(alice["firstTrace"], "2026-07-01T10:00:00.000Z");
    assert_eq!(alice["lastTrace"], "2026-11-20T08:30:00.000Z");
    assert_eq!(users["data"][1]["userId"], "bob");
    assert_eq!(users["data"][1]["traces"], 3);
    assert_eq!(alice["totalTokens"], 6 * (1200 + 550) + 20);
}

/// The ids of `GET /api/ui/me`'s projects, in order.
fn project_ids(me: &Value) -> Vec<String> {
    me["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// A project created from the dashboard is the user's at once, gets its own keys, and sees only
/// its own data; the project header selects it and a project the user is not in is refused.
#[test]
fn projects_created_in_the_dashboard_are_separate_and_selectable() {
    let s = server();
    let cookie = session(&s);
    let post = |path: &str, project: Option<&str>, body: Value| {
        let mut req = browser()
            .post(s.url(path))
            .header("cookie", &cookie)
            .header("x-sightline-csrf", "1");
        if let Some(p) = project {
            req = req.header("x-sightline-project", p);
        }
        s.send(path, req.json(&body))
    };
    let get = |path: &str, project: &str| {
        s.send(
            path,
            browser()
                .get(s.url(path))
                .header("cookie", &cookie)
                .header("x-sightline-project", project),
        )
    };
    assert_eq!(
        post("/api/ui/projects", None, json!({"name": "  "})).status,
        400
    );
    let created = post("/api/ui/projects", None, json!({"name": "Second team!"})).expect_json(200);
    let second = created["id"].as_str().unwrap().to_string();
    assert!(second.starts_with("second-team-"), "{second}");
    assert_ne!(second, PROJECT_ID);
    let me = ui_get(&s, &cookie, "/api/ui/me").expect_json(200);
    let ids = project_ids(&me);
    assert_eq!(ids, [PROJECT_ID, second.as_str()]);

    // Keys made in the new project's settings write into it and nowhere else.
    let key = post("/api/ui/keys", Some(&second), json!({})).expect_json(200);
    let auth = common::basic_auth(
        key["publicKey"].as_str().unwrap(),
        key["secretKey"].as_str().unwrap(),
    );
    let trace = common::unique_id("second");
    let batch = json!({"batch": [{"id": common::unique_id("e"), "type": "trace-create",
        "timestamp": common::now_iso(), "body": {"id": trace, "name": "in-second"}}]});
    s.send(
        "ingest into the second project",
        browser()
            .post(s.url("/api/public/ingestion"))
            .header("authorization", &auth)
            .json(&batch),
    )
    .expect_json(207);
    let theirs = get("/api/ui/traces", &second).expect_json(200);
    assert_eq!(theirs["meta"]["totalItems"], 1);
    assert_eq!(theirs["data"][0]["id"], trace.as_str());
    let ours = get("/api/ui/traces", PROJECT_ID).expect_json(200);
    assert_eq!(ours["meta"]["totalItems"], 0);
    assert_eq!(s.get(&format!("/api/public/traces/{trace}")).status, 404);
    assert_eq!(get("/api/ui/traces", "not-mine").status, 403);
}

/// Provisioning another project for an existing user (a second `LANGFUSE_INIT_PROJECT_ID`)
/// makes the user a member of both, without touching the password.
#[test]
fn a_newly_provisioned_project_joins_the_existing_users_projects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Server::builder()
        .data_dir(&data)
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", PASSWORD)
        .start();
    assert_eq!(first.terminate().code(), Some(0));
    let s = Server::builder()
        .data_dir(&data)
        .env("LANGFUSE_INIT_PROJECT_ID", "provisioned-later")
        .env("LANGFUSE_INIT_PROJECT_PUBLIC_KEY", "pk-lf-later")
        .env("LANGFUSE_INIT_PROJECT_SECRET_KEY", "sk-lf-later")
        .env("LANGFUSE_INIT_USER_EMAIL", EMAIL)
        .env("LANGFUSE_INIT_USER_PASSWORD", "a different password")
        .start();
    let cookie = session(&s);
    let me = ui_get(&s, &cookie, "/api/ui/me").expect_json(200);
    let ids = project_ids(&me);
    assert_eq!(ids, [PROJECT_ID, "provisioned-later"]);
}
