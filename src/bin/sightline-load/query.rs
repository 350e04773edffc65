//! `sightline-load query`: read-path latencies against a running Sightline holding a data set
//! that `ingest` wrote with the same seed and shape (so trace ids, users and planted words are
//! known without asking the server).
//!
//! Owns: the list of benchmarked requests and their sanity checks (a rare word must find exactly
//! the generations it was planted in). Requests run one at a time, as a dashboard user's would.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::blocking::Client;
use serde::Serialize;
use serde_json::{Value, json};

use crate::data::{self, Rng, Shape};
use crate::stats::Latencies;

#[derive(clap::Args, Clone, Debug)]
pub struct QueryArgs {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Seed, traces and spans per trace the data set was ingested with.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1_000)]
    pub traces: u64,
    #[arg(long, default_value_t = 4)]
    pub spans_per_trace: usize,
    /// The run was ingested with `--ordered-ids`.
    #[arg(long)]
    pub ordered_ids: bool,
    /// Other runs in the same store, as SEED:TRACES (same spans per trace): their planted
    /// words count too.
    #[arg(long = "also", value_parser = parse_run)]
    pub also: Vec<(u64, u64)>,
    /// Timed requests per query (after two untimed warm-ups).
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Time one query may take in all: a slow query stops early with fewer timed requests
    /// (`n` in the report says how many).
    #[arg(long, default_value_t = 60)]
    pub budget_secs: u64,
    #[arg(long, env = "LANGFUSE_PUBLIC_KEY", default_value = "pk-lf-load")]
    pub public_key: String,
    #[arg(long, env = "LANGFUSE_SECRET_KEY", default_value = "sk-lf-load")]
    pub secret_key: String,
    /// Dashboard login: with both, the dashboard's first data load is measured too.
    #[arg(long)]
    pub ui_email: Option<String>,
    #[arg(long, env = "SIGHTLINE_LOAD_UI_PASSWORD")]
    pub ui_password: Option<String>,
    /// The project the dashboard requests name (`X-Sightline-Project`).
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct QueryResult {
    pub name: String,
    pub request: String,
    pub n: usize,
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// What the answer said (items, totalItems, rows), to show the query did its work.
    pub answer: String,
}

/// A request template: `{id}`-style parts are filled per iteration by `make`.
struct Bench<'a> {
    name: &'a str,
    make: Box<dyn FnMut(&mut Rng) -> String + 'a>,
    check: Box<dyn Fn(&Value) -> String + 'a>,
    ui: bool,
    /// The `totalItems` the answer must have (planted words): a wrong count fails the run.
    expect_total: Option<u64>,
}

fn items(v: &Value) -> String {
    format!(
        "{} items, totalItems {}",
        v["data"].as_array().map_or(0, Vec::len),
        v["meta"]["totalItems"]
    )
}

fn observations(v: &Value) -> String {
    format!(
        "{} observations",
        v["observations"].as_array().map_or(0, Vec::len)
    )
}

fn found(v: &Value) -> String {
    format!("type {}", v["type"])
}

fn rows(v: &Value) -> String {
    format!("{} rows", v["data"].as_array().map_or(0, Vec::len))
}

fn overview(v: &Value) -> String {
    format!(
        "{} traces, {} observations, truncated {}",
        v["traces"], v["observations"], v["truncated"]
    )
}

pub fn run(args: &QueryArgs) -> anyhow::Result<Vec<QueryResult>> {
    let http = crate::ingest::client(&args.public_key, &args.secret_key)?;
    let shape = Shape {
        seed: args.seed,
        spans: args.spans_per_trace,
        payload_bytes: 0,
        start_micros: 0,
        step_micros: 0,
        run_tag: String::new(),
        ordered_ids: args.ordered_ids,
    }
    .checked()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let now = crate::now_micros();
    let week_ago = crate::iso(now - 7 * 86_400_000_000);
    let tomorrow = crate::iso(now + 86_400_000_000);
    let cost_query = json!({
        "view": "observations",
        "dimensions": [{"field": "providedModelName"}],
        "metrics": [{"measure": "totalCost", "aggregation": "sum"},
                    {"measure": "count", "aggregation": "count"}],
        "fromTimestamp": week_ago, "toTimestamp": tomorrow,
    })
    .to_string();
    let traces = args.traces.max(1);
    let planted = |every: u64| -> u64 {
        let also: u64 = args
            .also
            .iter()
            .map(|&(seed, n)| {
                Shape {
                    seed,
                    ..shape.clone()
                }
                .planted_count(n, every)
            })
            .sum();
        shape.planted_count(traces, every) + also
    };
    let generations = args.spans_per_trace.max(2) - 1;
    let s = &shape;
    let mut benches: Vec<Bench> = vec![
        Bench {
            name: "trace list, newest 50",
            make: Box::new(|_| "/api/public/traces?limit=50".into()),
            check: Box::new(items),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "trace list, newest 50 of one user",
            make: Box::new(move |r| {
                let user = s.user(r.below(traces));
                format!("/api/public/traces?limit=50&userId={user}")
            }),
            check: Box::new(items),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "trace detail (with its observations)",
            make: Box::new(move |r| {
                let id = data::hex(&s.trace_id(r.below(traces)));
                format!("/api/public/traces/{id}")
            }),
            check: Box::new(observations),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "observation by id",
            make: Box::new(move |r| {
                let t = r.below(traces);
                let g = 1 + r.below(generations as u64) as usize;
                format!("/api/public/observations/{}", data::hex(&s.span_id(t, g)))
            }),
            check: Box::new(found),
            ui: false,
            expect_total: None,
        },
        search(
            "search, rare word",
            data::RARE_WORD,
            planted(data::RARE_EVERY),
        ),
        search(
            "search, 1 % word",
            data::UNCOMMON_WORD,
            planted(data::UNCOMMON_EVERY),
        ),
        Bench {
            name: "search, common word",
            make: Box::new(|_| {
                format!("/api/public/observations?q={}&limit=50", data::COMMON_WORD)
            }),
            check: Box::new(items),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "trace list, search rare word",
            make: Box::new(|_| format!("/api/public/traces?q={}&limit=50", data::RARE_WORD)),
            check: Box::new(items),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "cost by model, 7 days",
            make: Box::new(move |_| {
                format!(
                    "/api/public/v2/metrics?query={}",
                    crate::urlencode(&cost_query)
                )
            }),
            check: Box::new(rows),
            ui: false,
            expect_total: None,
        },
        Bench {
            name: "daily metrics",
            make: Box::new(|_| "/api/public/metrics/daily?limit=30".into()),
            check: Box::new(rows),
            ui: false,
            expect_total: None,
        },
    ];
    let ui_from = crate::urlencode(&week_ago);
    let session = match (&args.ui_email, &args.ui_password) {
        (Some(email), Some(password)) => {
            let project = args
                .project
                .clone()
                .context("--project is needed with --ui-email")?;
            Some((login(&base, email, password)?, project))
        }
        _ => None,
    };
    if session.is_some() {
        let overview_from = ui_from.clone();
        benches.push(Bench {
            name: "dashboard overview, 7 days",
            make: Box::new(move |_| format!("/api/ui/overview?fromTimestamp={overview_from}")),
            check: Box::new(overview),
            ui: true,
            expect_total: None,
        });
        benches.push(Bench {
            name: "dashboard trace list, 7 days",
            make: Box::new(move |_| {
                format!(
                    "/api/ui/traces?fromTimestamp={ui_from}&page=1&limit=50&fields=core,metrics"
                )
            }),
            check: Box::new(items),
            ui: true,
            expect_total: None,
        });
    }

    let mut results = Vec::new();
    let mut rng = Rng::new(args.seed ^ 0x5EED);
    for mut b in benches {
        let mut lat = Latencies::default();
        let mut first = None;
        let mut answer = String::new();
        let budget = Instant::now() + Duration::from_secs(args.budget_secs);
        for i in 0..args.iterations + 2 {
            if i > 2 && Instant::now() > budget {
                break;
            }
            let path = (b.make)(&mut rng);
            let mut req = http.get(format!("{base}{path}"));
            if b.ui {
                let (cookie, project) = session.as_ref().context("dashboard session")?;
                req = req
                    .header("cookie", cookie)
                    .header("x-sightline-csrf", "1")
                    .header("x-sightline-project", project);
            }
            let t = Instant::now();
            let resp = req.send().with_context(|| format!("GET {path}"))?;
            let status = resp.status();
            let body = resp.bytes()?;
            let took = t.elapsed();
            if !status.is_success() {
                bail!(
                    "{}: GET {path}: HTTP {status}: {}",
                    b.name,
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
            first.get_or_insert(took);
            if i >= 2 {
                lat.push(took);
            }
            if i == 0 {
                let v: Value = serde_json::from_slice(&body)?;
                answer = (b.check)(&v);
                if let Some(want) = b.expect_total
                    && v["meta"]["totalItems"].as_u64() != Some(want)
                {
                    bail!("{}: GET {path} found {answer}, expected {want}", b.name);
                }
            }
        }
        results.push(QueryResult {
            name: b.name.to_owned(),
            request: (b.make)(&mut rng),
            n: lat.len(),
            first_ms: first.unwrap_or(Duration::ZERO).as_secs_f64() * 1e3,
            p50_ms: lat.percentile_ms(0.5),
            p99_ms: lat.percentile_ms(0.99),
            answer,
        });
    }
    Ok(results)
}

fn parse_run(s: &str) -> Result<(u64, u64), String> {
    let (seed, traces) = s.split_once(':').ok_or("expected SEED:TRACES")?;
    Ok((
        seed.parse().map_err(|e| format!("seed: {e}"))?,
        traces.parse().map_err(|e| format!("traces: {e}"))?,
    ))
}

/// A search whose hits are known: the answer shows the count next to the planted one.
fn search<'a>(name: &'a str, word: &'static str, planted: u64) -> Bench<'a> {
    Bench {
        name,
        make: Box::new(move |_| format!("/api/public/observations?q={word}&limit=50")),
        check: Box::new(move |v| format!("{} (planted in {planted})", items(v))),
        ui: false,
        expect_total: Some(planted),
    }
}

/// Logs in to the dashboard; returns the session cookie (`name=value`).
fn login(base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let http = Client::new();
    let resp = http
        .post(format!("{base}/api/ui/login"))
        .header("x-sightline-csrf", "1")
        .json(&json!({"email": email, "password": password}))
        .send()?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = resp.text().unwrap_or_default();
    match cookie {
        Some(cookie) if status.is_success() => Ok(cookie),
        _ => bail!("dashboard login: HTTP {status}: {body}"),
    }
}

pub fn print(results: &[QueryResult]) {
    println!(
        "{:<40} {:>5} {:>9} {:>9} {:>9}  answer",
        "query", "n", "first ms", "p50 ms", "p99 ms"
    );
    for r in results {
        println!(
            "{:<40} {:>5} {:>9.2} {:>9.2} {:>9.2}  {}",
            r.name, r.n, r.first_ms, r.p50_ms, r.p99_ms, r.answer
        );
    }
}
