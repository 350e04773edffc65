//! Operational metrics in Prometheus text format (`GET /metrics`): ingestion by result, queue
//! depth, commit latency, request latency by route, disk bytes, resident memory, and what
//! retention and the configured forward did (their counters live with them; this registers
//! them).
//!
//! Owns: the metric registry and the HTTP middleware that times requests. Must not touch
//! records: it only counts. Metrics carry no user content (routes are the matched patterns, never
//! raw paths, so ids in URLs never become label values).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::search::Search;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `batch`, `otlp` or `scores`.
    pub source: &'static str,
    /// `accepted` or `rejected`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

/// Shared by the router (as state of the middleware) and the handlers that count ingestion.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    ingested: Family<IngestLabels, Counter>,
    requests: Family<RouteLabels, Counter>,
    request_seconds: Family<RouteOnly, Histogram>,
    queue_depth: Gauge,
    disk_bytes: Gauge,
    rss_bytes: Gauge,
    commits: Gauge,
    search_lag: Gauge,
    search_bytes: Gauge,
    store: Store,
    search: Search,
    retention: crate::retention::Stats,
    forward: crate::forward::tee::Stats,
}

impl Telemetry {
    pub fn new(store: Store, search: Search) -> Telemetry {
        let retention = crate::retention::Stats::default();
        let forward = crate::forward::tee::Stats::default();
        let mut registry = Registry::with_prefix("sightline");
        let ingested = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingested_items",
            "Events, spans and scores received, by source and result",
            ingested.clone(),
        );
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to durably commit one group of writes",
            store.writer().stats().commit_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "write_queue_depth",
            "Write requests waiting for the writer",
            queue_depth.clone(),
        );
        let commits = Gauge::default();
        registry.register("commits", "Durable commits since start", commits.clone());
        let disk_bytes = Gauge::default();
        registry.register(
            "disk_bytes",
            "Bytes used by the database file",
            disk_bytes.clone(),
        );
        let rss_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "Resident set size of the process",
            rss_bytes.clone(),
        );
        let search_lag = Gauge::default();
        registry.register(
            "search_lag_changes",
            "Committed changes not yet searchable",
            search_lag.clone(),
        );
        let search_bytes = Gauge::default();
        registry.register(
            "search_index_bytes",
            "Bytes used by the search index directory",
            search_bytes.clone(),
        );
        registry.register(
            "index_skipped_records",
            "Records and change-log entries the search index left out because their stored bytes do not decode",
            search.skipped_records(),
        );
        register_retention(&mut registry, &retention);
        register_forward(&mut registry, &forward);
        Telemetry {
            inner: Arc::new(Inner {
                registry,
                ingested,
                requests,
                request_seconds,
                queue_depth,
                disk_bytes,
                rss_bytes,
                commits,
                search_lag,
                search_bytes,
                store,
                search,
                retention,
                forward,
            }),
        }
    }

    /// The counters the retention task updates.
    pub fn retention_stats(&self) -> crate::retention::Stats {
        self.inner.retention.clone()
    }

    /// The counters the server's forward updates.
    pub fn forward_stats(&self) -> crate::forward::tee::Stats {
        self.inner.forward.clone()
    }

    pub fn count_ingested(&self, source: &'static str, accepted: usize, rejected: usize) {
        for (result, n) in [("accepted", accepted), ("rejected", rejected)] {
            if n > 0 {
                self.inner
                    .ingested
                    .get_or_create(&IngestLabels { source, result })
                    .inc_by(n as u64);
            }
        }
    }

    /// The exposition text; samples the gauges first.
    pub fn render(&self) -> String {
        let i = &self.inner;
        let stats = i.store.writer().stats();
        i.queue_depth
            .set(stats.queued.load(std::sync::atomic::Ordering::Relaxed) as i64);
        i.commits
            .set(stats.commits.load(std::sync::atomic::Ordering::Relaxed) as i64);
        i.disk_bytes.set(i.store.disk_bytes() as i64);
        i.rss_bytes.set(resident_bytes().unwrap_or(0) as i64);
        let committed = *i.store.writer().subscribe().borrow();
        let indexed = i.search.status().indexed_seq;
        i.search_lag.set(committed.saturating_sub(indexed) as i64);
        i.search_bytes.set(i.search.disk_bytes() as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &i.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn register_retention(r: &mut Registry, s: &crate::retention::Stats) {
    let r = r.sub_registry_with_prefix("retention");
    r.register("runs", "Retention runs since start", s.runs.clone());
    r.register(
        "failures",
        "Retention runs that failed (retried next interval)",
        s.failures.clone(),
    );
    r.register(
        "deleted",
        "Records and change-log entries retention deleted, by kind",
        s.deleted.clone(),
    );
    r.register(
        "compactions",
        "Compactions of the database file",
        s.compactions.clone(),
    );
    r.register(
        "reclaimed_bytes",
        "Bytes compaction gave back to the file system",
        s.reclaimed_bytes.clone(),
    );
    r.register(
        "last_run_timestamp_seconds",
        "Unix time the last retention run ended",
        s.last_run_timestamp.clone(),
    );
    r.register(
        "last_run_duration_seconds",
        "How long the last retention run took",
        s.last_run_seconds.clone(),
    );
}

fn register_forward(r: &mut Registry, s: &crate::forward::tee::Stats) {
    let r = r.sub_registry_with_prefix("forward");
    r.register(
        "events",
        "Events the upstream acknowledged",
        s.events.clone(),
    );
    r.register("batches", "Batches sent upstream", s.batches.clone());
    r.register("deletes", "Deletes replayed upstream", s.deletes.clone());
    r.register(
        "rejected",
        "Events the upstream refused for good",
        s.rejected.clone(),
    );
    r.register(
        "failures",
        "Forward runs that failed (retried after a pause)",
        s.failures.clone(),
    );
    r.register(
        "cursor",
        "Last change-log sequence the upstream acknowledged",
        s.cursor.clone(),
    );
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Middleware: counts and times every request by its matched route pattern.
pub async fn track(State(t): State<Telemetry>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = RouteLabels {
        method,
        route: route.clone(),
        status: resp.status().as_u16(),
    };
    t.inner.requests.get_or_create(&labels).inc();
    t.inner
        .request_seconds
        .get_or_create(&RouteOnly { route })
        .observe(started.elapsed().as_secs_f64());
    resp
}

pub async fn metrics(State(t): State<Telemetry>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.render(),
    )
        .into_response()
}
