//! `sightline-load ingest`: sends the synthetic traces with N concurrent clients, then waits
//! until the server's read API counts every span (stored) and, for Sightline, until full-text
//! search finds them all (searchable), and reports throughput, latency, memory and disk.
//!
//! Owns: the request loop, retries on 429/503, and the "stored" / "searchable" probes for each
//! kind of server. Data and encodings come from `data` and `encode`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::blocking::Client;
use serde::Serialize;
use serde_json::{Value, json};

use crate::data::{LoadArgs, Shape};
use crate::encode::{self, Format, Target};
use crate::stats::{self, Latencies};

/// The server under load: decides the default endpoint and how spans are counted back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Sightline,
    Phoenix,
}

#[derive(clap::Args, Clone, Debug)]
pub struct IngestArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, value_enum, default_value = "sightline")]
    pub server: Kind,
    #[arg(long, value_enum, default_value = "otlp")]
    pub format: Format,
    /// Request path; defaults to the server's endpoint for the format.
    #[arg(long)]
    pub path: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[arg(long)]
    pub gzip: bool,
    #[arg(long, env = "LANGFUSE_PUBLIC_KEY", default_value = "pk-lf-load")]
    pub public_key: String,
    #[arg(long, env = "LANGFUSE_SECRET_KEY", default_value = "sk-lf-load")]
    pub secret_key: String,
    /// Server process id: its resident memory is sampled during the run.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The server's data directory: bytes on disk per stored span.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long to wait for the read API to count every span.
    #[arg(long, default_value_t = 600)]
    pub stored_timeout_secs: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default, Debug)]
pub struct Report {
    pub server: String,
    pub format: String,
    pub gzip: bool,
    pub traces: u64,
    pub spans_sent: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub retries_busy: u64,
    pub spans_ok: u64,
    pub first_error: Option<String>,
    pub seconds_to_ack: f64,
    pub spans_per_sec_accepted: f64,
    pub spans_stored: u64,
    pub seconds_to_stored: f64,
    pub spans_per_sec_stored: f64,
    /// Sightline: search for the run's tag finds every span (after the last acknowledgement).
    pub spans_searchable: Option<u64>,
    pub searchable_after_last_ack_ms: Option<f64>,
    pub request_p50_ms: f64,
    pub request_p99_ms: f64,
    pub request_bytes_mean: f64,
    pub rss_before_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    /// Peak of the anonymous part (heap, stacks) alone, sampled every 50 ms: the rest of the
    /// resident set is mapped index files the kernel can drop.
    pub rss_peak_anon_mib: Option<f64>,
    pub rss_after_mib: Option<f64>,
    pub disk_bytes_added: Option<u64>,
    pub disk_bytes_per_span: Option<f64>,
    /// Server CPU (all threads) per stored span, and its split by thread name, from the start
    /// of sending until everything was searchable: robust where wall time is not (shared
    /// machine), and it says where the time goes.
    pub server_cpu_us_per_span: Option<f64>,
    pub server_cpu_seconds_by_thread: Option<std::collections::BTreeMap<String, f64>>,
    /// This generator's own CPU per span sent, while sending: it shares the machine with the
    /// server, so server + generator CPU per span bounds what the cores can store.
    pub generator_cpu_us_per_span: Option<f64>,
}

/// Everything the workers share.
struct Run {
    args: IngestArgs,
    shape: Shape,
    environment: String,
    url: String,
    next: AtomicU64,
    per_request: u64,
}

#[derive(Default)]
struct WorkerTally {
    requests_ok: u64,
    requests_failed: u64,
    retries: u64,
    spans_ok: u64,
    bytes: u64,
    latencies: Latencies,
    first_error: Option<String>,
}

/// An HTTP client that sends the project's Basic credentials with every request.
pub fn client(public_key: &str, secret_key: &str) -> anyhow::Result<Client> {
    use base64::Engine as _;
    let mut headers = reqwest::header::HeaderMap::new();
    let raw = format!("{public_key}:{secret_key}");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    headers.insert(reqwest::header::AUTHORIZATION, auth.parse()?);
    Ok(Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(4)
        .build()?)
}

/// A word made of letters only (the tokenizer keeps it whole), unique to the run.
fn run_tag(seed: u64) -> String {
    let mut n = seed ^ rand::random::<u64>();
    let mut tag = String::from("lgrun");
    for _ in 0..10 {
        tag.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    tag
}

pub fn run(args: IngestArgs) -> anyhow::Result<Report> {
    let tag = run_tag(args.load.seed);
    let shape = args.load.shape(tag.clone())?;
    let path = args.path.clone().unwrap_or_else(|| {
        match (args.server, args.format) {
            (Kind::Phoenix, _) => "/v1/traces",
            (Kind::Sightline, Format::Otlp) => "/api/public/otel/v1/traces",
            (Kind::Sightline, Format::Langfuse) => "/api/public/ingestion",
        }
        .to_owned()
    });
    let per_request = args.load.traces_per_request();
    let run = Arc::new(Run {
        url: format!("{}{}", args.url.trim_end_matches('/'), path),
        environment: format!("load-{tag}"),
        shape,
        next: AtomicU64::new(0),
        per_request,
        args,
    });
    let args = &run.args;
    let disk_before = args.data_dir.as_deref().map(stats::disk_bytes);
    let rss_before = args.pid.and_then(stats::rss).map(|r| r.0);
    let cpu_before = args.pid.map(stats::cpu_by_thread);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = args.pid.map(|pid| {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let (mut peak, mut peak_anon) = (0, 0);
            while sampling.load(Ordering::Relaxed) {
                if let Some((now, hwm)) = stats::rss(pid) {
                    peak = peak.max(now).max(hwm);
                }
                peak_anon = peak_anon.max(stats::rss_anon(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, peak_anon)
        })
    });

    let own_cpu_before = stats::process_cpu(std::process::id());
    let started = Instant::now();
    let workers: Vec<_> = (0..args.load.concurrency.max(1))
        .map(|_| {
            let run = run.clone();
            std::thread::spawn(move || worker(&run))
        })
        .collect();
    let mut tally = WorkerTally::default();
    for w in workers {
        let t = w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        tally.requests_ok += t.requests_ok;
        tally.requests_failed += t.requests_failed;
        tally.retries += t.retries;
        tally.spans_ok += t.spans_ok;
        tally.bytes += t.bytes;
        tally.latencies.extend(t.latencies);
        tally.first_error = tally.first_error.or(t.first_error);
    }
    let acked = started.elapsed();
    let own_cpu = own_cpu_before
        .zip(stats::process_cpu(std::process::id()))
        .map(|(before, after)| after - before);

    let reader = client(&args.public_key, &args.secret_key)?;
    let deadline = Instant::now() + Duration::from_secs(args.stored_timeout_secs);
    let stored = poll(deadline, tally.spans_ok, || count_stored(&reader, &run))?;
    let stored_at = started.elapsed();
    let searchable = match args.server {
        Kind::Sightline => {
            let n = poll(deadline, tally.spans_ok, || {
                count_searchable(&reader, &run.args.url, &tag)
            })?;
            Some((n, started.elapsed()))
        }
        Kind::Phoenix => None,
    };

    let cpu = args
        .pid
        .zip(cpu_before)
        .map(|(pid, before)| stats::cpu_delta(&before, &stats::cpu_by_thread(pid)));
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.and_then(|s| s.join().ok());
    let disk_after = args.data_dir.as_deref().map(stats::disk_bytes);
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let spans_sent = args.load.spans();
    let added = disk_before
        .zip(disk_after)
        .map(|(b, a)| a.saturating_sub(b));
    Ok(Report {
        server: format!("{:?}", args.server).to_lowercase(),
        format: format!("{:?}", args.format).to_lowercase(),
        gzip: args.gzip,
        traces: args.load.traces,
        spans_sent,
        requests_ok: tally.requests_ok,
        requests_failed: tally.requests_failed,
        retries_busy: tally.retries,
        spans_ok: tally.spans_ok,
        first_error: tally.first_error,
        seconds_to_ack: secs(acked),
        spans_per_sec_accepted: tally.spans_ok as f64 / secs(acked),
        spans_stored: stored,
        seconds_to_stored: secs(stored_at),
        spans_per_sec_stored: stored as f64 / secs(stored_at),
        spans_searchable: searchable.map(|s| s.0),
        searchable_after_last_ack_ms: searchable
            .map(|s| s.1.saturating_sub(acked).as_secs_f64() * 1e3),
        request_p50_ms: tally.latencies.percentile_ms(0.50),
        request_p99_ms: tally.latencies.percentile_ms(0.99),
        request_bytes_mean: tally.bytes as f64 / tally.latencies.len().max(1) as f64,
        rss_before_mib: rss_before.map(stats::mib),
        rss_peak_mib: peak.map(|p| stats::mib(p.0)),
        rss_peak_anon_mib: peak.map(|p| stats::mib(p.1)),
        rss_after_mib: args.pid.and_then(stats::rss).map(|r| stats::mib(r.0)),
        disk_bytes_added: added,
        disk_bytes_per_span: added.map(|a| a as f64 / stored.max(1) as f64),
        server_cpu_us_per_span: cpu
            .as_ref()
            .map(|c| c.values().sum::<f64>() * 1e6 / stored.max(1) as f64),
        server_cpu_seconds_by_thread: cpu,
        generator_cpu_us_per_span: own_cpu.map(|c| c * 1e6 / spans_sent.max(1) as f64),
    })
}

fn worker(run: &Run) -> anyhow::Result<WorkerTally> {
    let args = &run.args;
    let http = client(&args.public_key, &args.secret_key)?;
    let target = Target {
        environment: &run.environment,
        project: &run.environment,
    };
    let mut tally = WorkerTally::default();
    loop {
        let first = run.next.fetch_add(run.per_request, Ordering::Relaxed);
        if first >= args.load.traces {
            return Ok(tally);
        }
        let last = (first + run.per_request).min(args.load.traces);
        let traces: Vec<_> = (first..last).map(|i| run.shape.trace(i)).collect();
        let spans = (last - first) * args.load.spans_per_trace as u64;
        let mut body = encode::encode(args.format, &traces, &target);
        if args.gzip {
            body = encode::gzip(&body);
        }
        tally.bytes += body.len() as u64;
        let sent = Instant::now();
        match send(&http, run, body, &mut tally.retries) {
            Ok(()) => {
                tally.requests_ok += 1;
                tally.spans_ok += spans;
            }
            Err(e) => {
                tally.requests_failed += 1;
                tally.first_error.get_or_insert(e);
            }
        }
        tally.latencies.push(sent.elapsed());
    }
}

/// One request, retried while the server says it is busy (429/503, up to a minute).
fn send(http: &Client, run: &Run, body: Vec<u8>, retries: &mut u64) -> Result<(), String> {
    let busy_until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut req = http
            .post(&run.url)
            .header("content-type", run.args.format.content_type())
            .body(body.clone());
        if run.args.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = req.send().map_err(|e| format!("transport: {e}"))?;
        let status = resp.status().as_u16();
        if (status == 429 || status == 503) && Instant::now() < busy_until {
            *retries += 1;
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map_or(Duration::from_millis(100), |s| {
                    Duration::from_secs(s.min(2))
                });
            std::thread::sleep(wait);
            continue;
        }
        let text = resp.text().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}: {}", truncate(&text)));
        }
        // Langfuse batch ingestion answers 207 with per-event errors.
        if status == 207
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["errors"].as_array().is_some_and(|e| !e.is_empty())
        {
            return Err(format!(
                "207 with errors: {}",
                truncate(&v["errors"].to_string())
            ));
        }
        return Ok(());
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Polls `count` until it reaches `want` or the deadline passes; returns the last count.
/// Waits at least 20 ms and four times the last count's duration between polls, so a slow
/// count query (Phoenix's) never takes more than a fifth of the server's time.
fn poll(
    deadline: Instant,
    want: u64,
    mut count: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    loop {
        let asked = Instant::now();
        let n = count()?;
        if n >= want || Instant::now() >= deadline {
            return Ok(n);
        }
        std::thread::sleep((asked.elapsed() * 4).max(Duration::from_millis(20)));
    }
}

fn get_json(http: &Client, url: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).send().with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let text = resp.text()?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}: {}", truncate(&text));
    }
    Ok(serde_json::from_str(&text)?)
}

/// Spans of this run the read API counts: Sightline's metrics API (observations in the run's
/// environment), Phoenix's GraphQL span count of the run's project.
fn count_stored(http: &Client, run: &Run) -> anyhow::Result<u64> {
    let base = run.args.url.trim_end_matches('/');
    match run.args.server {
        Kind::Sightline => {
            let from = run.shape.start_micros - 86_400_000_000;
            let to = crate::now_micros() + 86_400_000_000;
            let query = json!({
                "view": "observations",
                "metrics": [{"measure": "count", "aggregation": "count"}],
                "filters": [{"column": "environment", "operator": "=", "value": run.environment,
                             "type": "string"}],
                "fromTimestamp": crate::iso(from), "toTimestamp": crate::iso(to),
            });
            let url = format!(
                "{base}/api/public/v2/metrics?query={}",
                crate::urlencode(&query.to_string())
            );
            let v = get_json(http, &url)?;
            Ok(v["data"]
                .get(0)
                .and_then(|row| {
                    let c = &row["count_count"];
                    c.as_u64().or_else(|| c.as_str()?.parse().ok())
                })
                .unwrap_or(0))
        }
        Kind::Phoenix => crate::phoenix::span_count(http, base, &run.environment),
    }
}

/// Observations whose text contains the run's tag, counted by the search index.
fn count_searchable(http: &Client, base: &str, tag: &str) -> anyhow::Result<u64> {
    let url = format!(
        "{}/api/public/observations?q={tag}&limit=1",
        base.trim_end_matches('/')
    );
    let v = get_json(http, &url)?;
    Ok(v["meta"]["totalItems"].as_u64().unwrap_or(0))
}

impl Report {
    /// Whether every span sent was accepted, counted by the read API and, where the server
    /// has search, found by it.
    pub fn complete(&self) -> bool {
        self.requests_failed == 0
            && self.spans_stored == self.spans_sent
            && self.spans_searchable.is_none_or(|n| n == self.spans_sent)
    }
}

pub fn print(r: &Report) {
    println!(
        "{} {}{}: {} traces, {} spans sent",
        r.server,
        r.format,
        if r.gzip { "+gzip" } else { "" },
        r.traces,
        r.spans_sent
    );
    println!(
        "requests ok {} failed {} (busy retries {}){}",
        r.requests_ok,
        r.requests_failed,
        r.retries_busy,
        r.first_error
            .as_deref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    println!(
        "accepted {:.0} spans/s ({} spans in {:.2} s); request p50 {:.1} ms p99 {:.1} ms, {:.0} bytes mean",
        r.spans_per_sec_accepted,
        r.spans_ok,
        r.seconds_to_ack,
        r.request_p50_ms,
        r.request_p99_ms,
        r.request_bytes_mean
    );
    println!(
        "stored {:.0} spans/s ({} counted by the read API after {:.2} s)",
        r.spans_per_sec_stored, r.spans_stored, r.seconds_to_stored
    );
    if let (Some(n), Some(ms)) = (r.spans_searchable, r.searchable_after_last_ack_ms) {
        println!("searchable: {n} spans, all found {ms:.0} ms after the last acknowledgement");
    }
    if let Some(peak) = r.rss_peak_mib {
        println!(
            "server RSS: before {:.1} MiB, peak {:.1} MiB (anonymous {:.1} MiB), after {:.1} MiB",
            r.rss_before_mib.unwrap_or(0.0),
            peak,
            r.rss_peak_anon_mib.unwrap_or(0.0),
            r.rss_after_mib.unwrap_or(0.0)
        );
    }
    if let (Some(per), Some(threads)) = (r.server_cpu_us_per_span, &r.server_cpu_seconds_by_thread)
    {
        let split: Vec<String> = threads.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!(
            "server CPU: {per:.0} µs per span; seconds by thread: {}",
            split.join(", ")
        );
    }
    if let Some(per) = r.generator_cpu_us_per_span {
        println!("generator CPU while sending: {per:.0} µs per span");
    }
    if let (Some(added), Some(per)) = (r.disk_bytes_added, r.disk_bytes_per_span) {
        println!(
            "disk: {:.1} MiB added, {per:.0} bytes per span",
            stats::mib(added)
        );
    }
}
