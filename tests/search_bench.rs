//! Search benchmark (not part of the suite): indexing throughput while ingesting, rebuild
//! throughput, index bytes per document, and search latency percentiles for a mix of queries.
//!
//! ```text
//! SEARCH_BENCH_N=100000 cargo test --release --test search_bench -- --ignored --nocapture
//! ```
//!
//! Data is synthetic but shaped like LLM traffic: one trace per ten generations, chat-message
//! inputs (system + user) and assistant outputs of 40–120 words, mixing English, German,
//! Chinese and Arabic text, with rare marker words planted at known rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sightline::record::{
    Change, ObservationPatch, ObservationRecord, ObservationType, Patch, TimedChange, TracePatch,
};
use sightline::search::{Scope, Search, SearchOrder, SearchRequest};
use sightline::store::{Io, Pricer, Store, WriteOp};
use sightline::time::Timestamp;

struct NoPrices;
impl Pricer for NoPrices {
    fn apply(&self, _: &str, _: &mut ObservationRecord, _: &Io) {}
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }
}

const EN: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "please",
    "summarize",
    "document",
    "customer",
    "order",
    "refund",
    "policy",
    "weather",
    "tomorrow",
    "report",
    "invoice",
    "account",
    "password",
    "reset",
    "shipping",
    "delay",
    "product",
    "review",
    "translate",
    "email",
    "meeting",
    "schedule",
    "code",
    "function",
    "error",
    "stack",
    "trace",
    "database",
    "query",
    "latency",
    "budget",
    "forecast",
    "sales",
    "region",
    "quarter",
    "growth",
    "risk",
    "contract",
    "clause",
    "legal",
    "draft",
    "and",
    "with",
    "for",
    "about",
    "from",
    "this",
    "that",
    "which",
    "could",
    "would",
    "should",
];
const DE: &[&str] = &[
    "Straße",
    "Größe",
    "Rechnung",
    "Kunde",
    "Bestellung",
    "Lieferung",
    "Verspätung",
    "bitte",
    "zusammenfassen",
    "Vertrag",
    "und",
    "mit",
    "für",
    "über",
];
const ZH: &[&str] = &[
    "我们", "客户", "订单", "退款", "政策", "天气", "明天", "报告", "发票", "账户", "密码", "海蛇",
    "产品", "评论", "翻译", "会议",
];
const AR: &[&str] = &[
    "مرحبا",
    "المكتبة",
    "العميل",
    "الطلب",
    "استرداد",
    "السياسة",
    "الطقس",
    "غدا",
    "التقرير",
];

fn sentence(rng: &mut Rng, words: usize, marker: Option<&str>) -> String {
    let lang = rng.next() % 10;
    let mut out = String::new();
    for i in 0..words {
        let w = match lang {
            0..=5 => rng.pick(EN),
            6 | 7 => rng.pick(DE),
            8 => rng.pick(ZH),
            _ => rng.pick(AR),
        };
        if i > 0 && lang != 8 {
            out.push(' ');
        }
        out.push_str(w);
        if i == words / 2
            && let Some(m) = marker
        {
            out.push(' ');
            out.push_str(m);
        }
    }
    out
}

fn changes(rng: &mut Rng, from: usize, n: usize) -> Vec<TimedChange> {
    let mut out = Vec::with_capacity(n + n / 10 + 1);
    for i in from..from + n {
        let at = Timestamp::from_micros(1_700_000_000_000_000 + i as i64 * 1000);
        let trace = format!("t{}", i / 10);
        if i % 10 == 0 {
            out.push(TimedChange {
                at,
                change: Change::Trace(TracePatch {
                    id: trace.clone(),
                    timestamp: Some(at),
                    name: Patch::Set("chat".into()),
                    user_id: Patch::Set(format!("user{}", rng.next() % 500)),
                    ..Default::default()
                }),
            });
        }
        let marker = match i {
            i if i % 10_000 == 7 => Some(format!("zanzibar{}", i % 3)),
            i if i % 100 == 3 => Some("quokka".to_string()),
            _ => None,
        };
        let len_in = 40 + (rng.next() % 80) as usize;
        let len_out = 40 + (rng.next() % 80) as usize;
        let mut p = ObservationPatch::new(format!("o{i}"), ObservationType::Generation);
        p.trace_id = Some(trace);
        p.start_time = Some(at);
        p.name = Patch::Set("llm-call".into());
        p.model = Patch::Set(["gpt-4o", "claude-3-5-sonnet", "llama-3"][i % 3].into());
        p.input = Some(json!([
            {"role": "system", "content": "You are a helpful assistant for our support team."},
            {"role": "user", "content": sentence(rng, len_in, marker.as_deref())},
        ]));
        p.output = Some(json!({"role": "assistant", "content": sentence(rng, len_out, None)}));
        out.push(TimedChange {
            at,
            change: Change::Observation(p),
        });
    }
    out
}

fn wait_indexed(search: &Search, store: &Store, limit: Duration) -> Duration {
    let started = Instant::now();
    let target = *store.writer().subscribe().borrow();
    while search.status().indexed_seq < target || search.status().rebuilding {
        assert!(started.elapsed() < limit, "index did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture, preferably --release"]
fn search_benchmark() {
    let n: usize = std::env::var("SEARCH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1024, Arc::new(NoPrices)).unwrap();
    let search = Search::start(dir.path(), store.clone()).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // Ingest in batches of 500 observations while the indexer follows.
    let started = Instant::now();
    let batch = 500;
    for from in (0..n).step_by(batch) {
        let changes = changes(&mut rng, from, batch.min(n - from));
        store
            .writer()
            .submit_blocking(WriteOp::Changes {
                project: "bench".into(),
                changes,
            })
            .unwrap();
    }
    let ingest = started.elapsed();
    let tail = wait_indexed(&search, &store, Duration::from_secs(3600));
    let follow = started.elapsed();
    let docs = n + n.div_ceil(10);
    assert_eq!(search.num_docs(), docs as u64, "live index document count");
    let bytes = search.disk_bytes();
    println!(
        "documents: {docs} ({n} observations, {} traces)",
        n.div_ceil(10)
    );
    println!(
        "ingest (store, fsync per batch of {batch}): {:.1} s = {:.0} obs/s",
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64()
    );
    println!(
        "indexed while ingesting: all searchable {:.1} s after the first write ({:.0} docs/s), {} ms after the last ack",
        follow.as_secs_f64(),
        docs as f64 / follow.as_secs_f64(),
        tail.as_millis()
    );
    println!(
        "index size: {:.1} MB = {:.0} bytes/document (store file: {:.1} MB)",
        bytes as f64 / 1e6,
        bytes as f64 / docs as f64,
        store.disk_bytes() as f64 / 1e6
    );

    let queries: &[(&str, Scope, SearchOrder)] = &[
        ("zanzibar1", Scope::Observations, SearchOrder::Newest),
        ("quokka", Scope::Observations, SearchOrder::Newest),
        ("quokka", Scope::Observations, SearchOrder::Relevance),
        ("refund", Scope::Observations, SearchOrder::Newest),
        ("refund policy", Scope::Observations, SearchOrder::Relevance),
        (
            "\"refund policy\"",
            Scope::Observations,
            SearchOrder::Newest,
        ),
        ("ref*", Scope::Observations, SearchOrder::Newest),
        ("strasse", Scope::Observations, SearchOrder::Newest),
        ("海蛇", Scope::Observations, SearchOrder::Newest),
        ("المكتبة", Scope::Observations, SearchOrder::Newest),
        (
            "output:invoice model:llama-3",
            Scope::Observations,
            SearchOrder::Newest,
        ),
        ("quokka", Scope::All, SearchOrder::Newest),
    ];
    println!("\n| query | scope | order | hits | p50 ms | p99 ms |\n|---|---|---|---|---|---|");
    let rounds = 50;
    let mut all = Vec::new();
    for (q, scope, order) in queries {
        let req = SearchRequest {
            project: "bench".into(),
            q: q.to_string(),
            scope: *scope,
            order: *order,
            from: None,
            to: None,
            filters: Vec::new(),
            offset: 0,
            limit: 10_000,
            count: false,
        };
        let mut times = Vec::with_capacity(rounds);
        let mut hits = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            hits = search.search(&req).unwrap().hits.len();
            times.push(t.elapsed());
        }
        times.sort();
        all.extend_from_slice(&times);
        println!(
            "| `{q}` | {scope:?} | {order:?} | {hits} | {:.2} | {:.2} |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    all.sort();
    println!(
        "all queries: p50 {:.2} ms, p99 {:.2} ms (each collects up to 10 000 hits with their ids)",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3
    );

    // The same searches through HTTP: search, store filtering of every candidate, one page.
    search.shutdown();
    store.shutdown();
    drop(store);
    http_latencies(dir.path());
    let store = Store::open(dir.path(), 1024, Arc::new(NoPrices)).unwrap();

    // Pure rebuild throughput.
    let t = Instant::now();
    let report = sightline::search::reindex(dir.path(), &store).unwrap();
    let rebuild = t.elapsed();
    assert_eq!(report.docs, docs as u64, "rebuilt index document count");
    println!(
        "\nrebuild (sightline reindex): {} documents in {:.1} s = {:.0} docs/s",
        report.docs,
        rebuild.as_secs_f64(),
        report.docs as f64 / rebuild.as_secs_f64()
    );
    store.shutdown();
}

/// p50/p99 of list requests with `q` against the real router over the benchmark's data.
fn http_latencies(dir: &std::path::Path) {
    let config = sightline::config::Config::for_data_dir(dir);
    let init = sightline::config::Bootstrap {
        org_id: Some("org".into()),
        project_id: Some("bench".into()),
        public_key: Some("pk-lf-bench".into()),
        secret_key: Some("sk-lf-bench".into()),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (state, _) = sightline::server::open(&config, &init).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(sightline::server::run(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::blocking::Client::new();
    println!("\n| HTTP request | totalItems | p50 ms | p99 ms |\n|---|---|---|---|");
    for path in [
        "/api/public/observations?q=zanzibar1&limit=50",
        "/api/public/observations?q=quokka&limit=50",
        "/api/public/observations?q=refund&limit=50",
        "/api/public/observations?q=refund&limit=50&orderBy=relevance",
        "/api/public/traces?q=quokka&limit=50",
        "/api/public/traces?q=refund&limit=50",
        "/api/public/traces?q=refund&limit=50&userId=user7",
        "/api/search?q=refund%20policy&orderBy=relevance&limit=20",
    ] {
        let mut times = Vec::new();
        let mut total = serde_json::Value::Null;
        for _ in 0..20 {
            let t = Instant::now();
            let body: serde_json::Value = client
                .get(format!("{base}{path}"))
                .basic_auth("pk-lf-bench", Some("sk-lf-bench"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            times.push(t.elapsed());
            total = body["meta"]["totalItems"].clone();
        }
        times.sort();
        println!(
            "| `{path}` | {total} | {:.1} | {:.1} |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
}
