//! Full-text search through the real router: `q` on the trace and observation lists,
//! `/api/search`, freshness after an acknowledged ingestion, and a rebuild after the index
//! directory is deleted. The server runs in-process (`server::open` + `server::run` on a port-0
//! listener), exactly as the binary runs it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

const PK: &str = "pk-lf-test";
const SK: &str = "sk-lf-test";
/// How often the freshness test looks for a new document.
const POLL_MS: u64 = 50;

/// A server on 127.0.0.1:<port 0> over a data directory, stopped on drop.
struct Server {
    base: String,
    client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let dir = dir.to_path_buf();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let config = sightline::config::Config::for_data_dir(&dir);
                let init = sightline::config::Bootstrap {
                    org_id: Some("org".into()),
                    project_id: Some("proj".into()),
                    public_key: Some(PK.into()),
                    secret_key: Some(SK.into()),
                    ..Default::default()
                };
                let (state, _) =
                    tokio::task::spawn_blocking(move || sightline::server::open(&config, &init))
                        .await
                        .unwrap()
                        .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                sightline::server::run(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        Server {
            base: format!("http://{addr}"),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked");
        }
    }

    fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .basic_auth(PK, Some(SK))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn ok(&self, path_and_query: &str) -> Value {
        let (status, body) = self.get(path_and_query);
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body
    }

    fn ingest(&self, batch: Vec<Value>) {
        let r = self
            .client
            .post(format!("{}/api/public/ingestion", self.base))
            .basic_auth(PK, Some(SK))
            .json(&json!({"batch": batch}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 207);
        let body: Value = r.json().unwrap();
        assert_eq!(body["errors"], json!([]), "{body}");
    }

    /// Waits until the index has applied everything the store has committed.
    fn wait_indexed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let meta = &self.ok("/api/search?q=anything")["meta"];
            if meta["indexedSeq"].as_u64() >= meta["storeSeq"].as_u64()
                && meta["rebuilding"] == json!(false)
            {
                return;
            }
            assert!(Instant::now() < deadline, "index never caught up: {meta}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn enc(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn event(id: &str, kind: &str, body: Value) -> Value {
    json!({"id": id, "type": kind, "timestamp": "2025-03-01T10:00:00.000Z", "body": body})
}

fn trace(id: &str, user: &str, time: &str, name: &str) -> Value {
    event(
        &format!("e-{id}"),
        "trace-create",
        json!({"id": id, "userId": user, "timestamp": time, "name": name}),
    )
}

fn generation(id: &str, trace: &str, time: &str, input: Value, output: Value) -> Value {
    event(
        &format!("e-{id}"),
        "generation-create",
        json!({"id": id, "traceId": trace, "startTime": time, "name": "chat",
               "model": "gpt-4o", "input": input, "output": output}),
    )
}

fn corpus() -> Vec<Value> {
    vec![
        trace("t-en", "alice", "2025-03-01T10:00:00Z", "support chat"),
        generation(
            "o-en",
            "t-en",
            "2025-03-01T10:00:01Z",
            json!([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Where do quokkas live? <script>x</script>"}]),
            json!({"role": "assistant", "content": "On Rottnest Island near Perth."}),
        ),
        trace("t-de", "bob", "2025-03-02T10:00:00Z", "german"),
        generation(
            "o-de",
            "t-de",
            "2025-03-02T10:00:01Z",
            json!("Welche Größe hat die Straße vor dem Haus?"),
            json!("Die Straße ist breit."),
        ),
        trace("t-zh", "alice", "2025-03-03T10:00:00Z", "chinese"),
        generation(
            "o-zh",
            "t-zh",
            "2025-03-03T10:00:01Z",
            json!("我们在海里看到了一条巨大的海蛇。"),
            json!("海蛇很危险。"),
        ),
        generation(
            "o-ja",
            "t-zh",
            "2025-03-03T10:00:02Z",
            json!("東京タワーはどこにありますか"),
            json!("港区にあります"),
        ),
        trace("t-ar", "carol", "2025-03-04T10:00:00Z", "arabic"),
        generation(
            "o-ar",
            "t-ar",
            "2025-03-04T10:00:01Z",
            json!("أين تقع المكتبة؟"),
            json!({"tool_calls": [{"function": {"name": "search",
                   "arguments": "{\"query\": \"library opening hours\"}"}}]}),
        ),
    ]
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn observations(s: &Server, q: &str) -> Vec<String> {
    ids(&s.ok(&format!("/api/public/observations?q={}", enc(q))))
}

fn traces(s: &Server, q: &str, extra: &str) -> Vec<String> {
    ids(&s.ok(&format!("/api/public/traces?q={}{extra}", enc(q))))
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    (dir, path)
}

#[test]
fn q_finds_the_right_observation_in_any_language() {
    let (_tmp, dir) = data_dir();
    let s = Server::start(&dir);
    s.ingest(corpus());
    s.wait_indexed();
    let cases: &[(&str, &[&str])] = &[
        ("quokkas", &["o-en"]),  // rare word in input
        ("rottnest", &["o-en"]), // word in output
        ("Straße", &["o-de"]),   // German, as written
        ("strasse", &["o-de"]),  // German, folded
        ("Größe", &["o-de"]),
        ("Groesse", &["o-de"]), // umlaut spelled out
        ("grosse", &["o-de"]),  // umlaut dropped
        ("\"welche groesse hat\"", &["o-de"]),
        ("海蛇", &["o-zh"]),                // inside a Chinese sentence
        ("東京タワー", &["o-ja"]),          // Japanese phrase
        ("المكتبة", &["o-ar"]),             // Arabic
        ("\"rottnest island\"", &["o-en"]), // phrase
        ("\"island rottnest\"", &[]),
        ("quok*", &["o-en"]),           // prefix
        ("output:rottnest", &["o-en"]), // field-qualified
        ("input:rottnest", &[]),
        ("opening hours", &["o-ar"]), // tool-call arguments
        ("xylophone", &[]),           // absent word
    ];
    for (q, want) in cases {
        assert_eq!(observations(&s, q), *want, "q={q}");
    }
    // An absent word is an empty page, not an error.
    let empty = s.ok("/api/public/observations?q=xylophone");
    assert_eq!(empty["meta"]["totalItems"], 0);
    // Metrics show the index caught up and its size.
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sightline_search_lag_changes 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sightline_search_index_bytes 0\n"),
        "{metrics}"
    );
    // Newest first, and every observation of a model.
    assert_eq!(
        observations(&s, "model:gpt-4o"),
        ["o-ar", "o-ja", "o-zh", "o-de", "o-en"]
    );
}

#[test]
fn q_combines_with_filters_pagination_and_order() {
    let (_tmp, dir) = data_dir();
    let s = Server::start(&dir);
    s.ingest(corpus());
    s.wait_indexed();
    // Traces match through any of their observations (or their own text).
    assert_eq!(traces(&s, "海蛇", ""), ["t-zh"]);
    assert_eq!(traces(&s, "german", ""), ["t-de"]);
    assert_eq!(
        traces(&s, "model:gpt-4o", ""),
        ["t-ar", "t-zh", "t-de", "t-en"]
    );
    // q with userId.
    assert_eq!(
        traces(&s, "model:gpt-4o", "&userId=alice"),
        ["t-zh", "t-en"]
    );
    assert_eq!(traces(&s, "海蛇", "&userId=bob"), Vec::<String>::new());
    // q with a time window, on both lists.
    assert_eq!(
        traces(
            &s,
            "model:gpt-4o",
            "&fromTimestamp=2025-03-02T00:00:00Z&toTimestamp=2025-03-04T00:00:00Z"
        ),
        ["t-zh", "t-de"]
    );
    assert_eq!(
        ids(&s.ok(&format!(
            "/api/public/observations?q={}&fromStartTime=2025-03-03T00:00:00Z",
            enc("model:gpt-4o")
        ))),
        ["o-ar", "o-ja", "o-zh"]
    );
    // q with the observation filters.
    assert_eq!(
        ids(&s.ok(&format!(
            "/api/public/observations?q={}&traceId=t-zh&type=GENERATION&level=DEFAULT&environment=default",
            enc("model:gpt-4o")
        ))),
        ["o-ja", "o-zh"]
    );
    assert_eq!(
        ids(&s.ok(&format!(
            "/api/public/observations?q={}&type=SPAN",
            enc("海蛇")
        ))),
        Vec::<String>::new()
    );
    // Pagination counts every match.
    let page = s.ok(&format!(
        "/api/public/traces?q={}&limit=2&page=2",
        enc("model:gpt-4o")
    ));
    assert_eq!(ids(&page), ["t-de", "t-en"]);
    assert_eq!(page["meta"]["totalItems"], 4);
    // Observation pages: answered and counted by the index alone, or through the store when a
    // filter needs it (userId lives on the trace); both agree.
    for (extra, want, total) in [
        ("&limit=2&page=2", vec!["o-zh", "o-de"], 5),
        ("&limit=2&page=3", vec!["o-en"], 5),
        ("&limit=2&page=1&userId=alice", vec!["o-ja", "o-zh"], 3),
        ("&limit=2&page=2&userId=alice", vec!["o-en"], 3),
    ] {
        let page = s.ok(&format!(
            "/api/public/observations?q={}{extra}",
            enc("model:gpt-4o")
        ));
        assert_eq!(ids(&page), want, "{extra}");
        assert_eq!(page["meta"]["totalItems"], total, "{extra}");
    }
    assert_eq!(
        s.ok(&format!(
            "/api/search?q={}",
            enc("model:gpt-4o OR type:trace")
        ))["meta"]["totalItems"],
        9
    );
    // Oldest first on request; relevance on request.
    assert_eq!(
        traces(&s, "model:gpt-4o", "&orderBy=timestamp.asc"),
        ["t-en", "t-de", "t-zh", "t-ar"]
    );
    let rel = traces(&s, "海蛇 OR quokkas OR rottnest", "&orderBy=relevance");
    assert_eq!(rel.len(), 2);
    // v2 observations take q as well.
    assert_eq!(
        ids(&s.ok(&format!("/api/public/v2/observations?q={}", enc("港区")))),
        ["o-ja"]
    );
}

#[test]
fn hits_carry_escaped_highlights_and_bad_queries_are_400() {
    let (_tmp, dir) = data_dir();
    let s = Server::start(&dir);
    s.ingest(corpus());
    s.wait_indexed();
    let obs = s.ok(&format!("/api/public/observations?q={}", enc("quokkas")));
    let hl = &obs["data"][0]["searchHighlights"];
    assert_eq!(hl[0]["field"], "input");
    let snippet = hl[0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("<mark>quokkas</mark>"), "{snippet}");
    assert!(snippet.contains("&lt;script&gt;"), "{snippet}");
    assert!(!snippet.contains("<script>"), "{snippet}");
    // A trace that matched through an observation says which one.
    let tr = s.ok(&format!("/api/public/traces?q={}", enc("海蛇")));
    let hl = &tr["data"][0]["searchHighlights"];
    assert_eq!(hl[0]["observationId"], "o-zh");
    assert!(
        hl[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<mark>海蛇</mark>")
    );
    // Without q the lists are unchanged.
    assert!(
        s.ok("/api/public/traces")["data"][0]
            .get("searchHighlights")
            .is_none()
    );
    // The dashboard endpoint: one search function, hits with snippets.
    let hits = s.ok(&format!(
        "/api/search?q={}&orderBy=relevance",
        enc("straße")
    ));
    assert_eq!(hits["data"][0]["id"], "o-de");
    assert_eq!(hits["data"][0]["type"], "observation");
    assert!(hits["data"][0]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(hits["data"][0]["highlights"].as_array().unwrap().len(), 2);
    // Malformed queries: 400 with a message, never a panic.
    for bad in ["\"unclosed", "(a OR b", "inptu:x", "a OR", "*"] {
        for path in [
            "/api/public/traces",
            "/api/public/observations",
            "/api/search",
        ] {
            let (status, body) = s.get(&format!("{path}?q={}", enc(bad)));
            assert_eq!(status, 400, "{path} q={bad}: {body}");
            assert!(body["message"].as_str().unwrap().len() > 10, "{body}");
        }
    }
    let (status, body) = s.get("/api/public/traces?orderBy=relevance");
    assert_eq!(status, 400, "{body}");
    // Deleting a trace removes it from search.
    let r = s
        .client
        .delete(format!("{}/api/public/traces/t-zh", s.base))
        .basic_auth(PK, Some(SK))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.wait_indexed();
    assert!(observations(&s, "海蛇").is_empty());
    assert!(traces(&s, "海蛇", "").is_empty());
}

#[test]
fn a_document_is_searchable_within_a_second_of_its_ack() {
    // The indexer commits every 150 ms, so a fresh document is normally searchable in a few
    // hundred ms. The machine running the suite is shared with other test binaries, so one round
    // may be descheduled past the second: the claim is checked on the median of five rounds, and
    // any round that takes 10 s (an indexer that stopped) fails outright.
    let (_tmp, dir) = data_dir();
    let s = Server::start(&dir);
    s.ingest(corpus());
    s.wait_indexed();
    let mut rounds = Vec::new();
    for round in 0..5 {
        let word = format!("zebrafinch{round}");
        let id = format!("o-fresh-{round}");
        s.ingest(vec![generation(
            &id,
            "t-en",
            "2025-03-05T10:00:00Z",
            json!(format!("a note about {word}")),
            json!(""),
        )]);
        let acked = Instant::now();
        let found = loop {
            if observations(&s, &word) == [id.clone()] {
                break acked.elapsed();
            }
            assert!(
                acked.elapsed() < Duration::from_secs(10),
                "{word} not searchable 10 s after its ingestion was acknowledged"
            );
            std::thread::sleep(Duration::from_millis(POLL_MS));
        };
        eprintln!("round {round}: {} ms", found.as_millis());
        rounds.push(found);
    }
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    eprintln!(
        "searchable after ack: median {} ms, worst {} ms",
        median.as_millis(),
        rounds[rounds.len() - 1].as_millis()
    );
    assert!(
        median < Duration::from_secs(1),
        "median time from ack to searchable was {} ms",
        median.as_millis()
    );
}

#[test]
fn deleting_the_index_and_restarting_restores_identical_results() {
    let (_tmp, dir) = data_dir();
    let queries = [
        "quokkas",
        "strasse",
        "海蛇",
        "東京タワー",
        "المكتبة",
        "model:gpt-4o",
        "\"rottnest island\"",
    ];
    let snapshot = |s: &Server| {
        queries
            .iter()
            .flat_map(|q| {
                [
                    s.ok(&format!("/api/public/traces?q={}", enc(q)))["data"].clone(),
                    s.ok(&format!("/api/public/observations?q={}", enc(q)))["data"].clone(),
                ]
            })
            .collect::<Vec<Value>>()
    };
    let mut s = Server::start(&dir);
    s.ingest(corpus());
    s.wait_indexed();
    let before = snapshot(&s);
    assert!(before.iter().all(|d| !d.as_array().unwrap().is_empty()));
    s.stop();
    std::fs::remove_dir_all(dir.join("search")).unwrap();
    let s = Server::start(&dir);
    s.wait_indexed();
    assert_eq!(snapshot(&s), before);
}

/// Observation documents carry their trace's user, session and tags — also when the trace
/// arrives after its observations (OTel order) and when the trace later changes them.
#[test]
fn observations_are_found_by_their_traces_user_session_and_tags() {
    let (_dir, path) = data_dir();
    let s = Server::start(&path);
    // The generation first, its trace afterwards.
    s.ingest(vec![generation(
        "o-late",
        "t-late",
        "2025-03-05T10:00:01Z",
        json!("the narwhal question"),
        json!("tusks"),
    )]);
    s.ingest(vec![event(
        "e-t-late",
        "trace-create",
        json!({"id": "t-late", "userId": "dora", "sessionId": "s-9", "tags": ["beta"],
               "timestamp": "2025-03-05T10:00:00Z"}),
    )]);
    s.wait_indexed();
    let hits = |q: &str| -> Vec<String> {
        ids(&s.ok(&format!("/api/search?q={}&scope=observations", enc(q))))
    };
    assert_eq!(hits("narwhal userId:dora"), ["o-late"]);
    assert_eq!(hits("narwhal sessionId:s-9 tags:beta"), ["o-late"]);
    assert!(hits("narwhal userId:erin").is_empty());

    // The trace moves to another user: its observations follow.
    s.ingest(vec![event(
        "e-t-late-2",
        "trace-create",
        json!({"id": "t-late", "userId": "erin"}),
    )]);
    s.wait_indexed();
    assert_eq!(hits("narwhal userId:erin"), ["o-late"]);
    assert!(hits("narwhal userId:dora").is_empty());
    // And the public list filters agree.
    assert_eq!(observations(&s, "narwhal"), ["o-late"]);
    assert_eq!(
        ids(&s.ok("/api/public/observations?q=narwhal&userId=erin")),
        ["o-late"]
    );
}

/// A word in more documents than the index hands to the store must not hide one user's traces:
/// the user filter is applied inside the index, before the candidate limit.
#[test]
fn a_frequent_word_does_not_crowd_out_a_users_traces() {
    let (_dir, path) = data_dir();
    let s = Server::start(&path);
    s.ingest(vec![event(
        "e-old",
        "trace-create",
        json!({"id": "t-old", "userId": "rare-user", "timestamp": "2025-01-01T00:00:00Z",
               "input": "weather report"}),
    )]);
    // Newer than rare-user's trace, so they fill a newest-first candidate list.
    let crowd = sightline::search::MAX_CANDIDATES + 200;
    for chunk in (0..crowd).collect::<Vec<_>>().chunks(2000) {
        let batch = chunk
            .iter()
            .map(|i| {
                event(
                    &format!("e-c{i}"),
                    "trace-create",
                    json!({"id": format!("t-c{i}"), "userId": "busy", "timestamp": "2025-02-01T00:00:00Z",
                           "input": format!("weather report {i}")}),
                )
            })
            .collect();
        s.ingest(batch);
    }
    s.wait_indexed();
    assert_eq!(traces(&s, "weather", "&userId=rare-user"), ["t-old"]);
}
