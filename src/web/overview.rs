//! The overview and users pages: aggregates answered from the usage rollups through the same
//! metrics queries as `/api/public/metrics` (O(buckets), whatever the number of records), plus
//! the recent errors from the search index. Reads only; never scans records, so the first
//! paint costs the same at a thousand traces and at a million.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::session::UiUser;
use super::{WebError, WebState};
use crate::analytics::query::{self, QueryError, Version};
use crate::api::ApiError;
use crate::api::params::Params;
use crate::record::Level;
use crate::search::{Filter, Scope, Search, SearchOrder, SearchRequest};
use crate::store::{Store, TraceOrder, TraceQuery, Window};
use crate::time::Timestamp;

/// Most timeline bars: finer granularity is chosen only while it stays below this.
const TIMELINE_BARS: i64 = 100;
/// Errors listed by name on the overview.
const RECENT_ERRORS: usize = 10;
/// Users listed (by traces, most first); first/last trace times cost two index reads each.
const USERS_LIMIT: usize = 500;

/// Longest the overview waits for the search index to catch up with the store.
const INDEX_WAIT: Duration = Duration::from_secs(2);

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// One metrics query over the rollups, in the public API's own query language.
fn run(
    s: &Store,
    project: &str,
    view: &str,
    dimension: Option<&str>,
    metrics: &[(&str, &str)],
    granularity: Option<&str>,
    (from, to): (i64, i64),
) -> Result<Vec<Value>, QueryError> {
    let raw = json!({
        "view": view,
        "dimensions": dimension.map(|d| vec![json!({"field": d})]).unwrap_or_default(),
        "metrics": metrics.iter().map(|(m, a)| json!({"measure": m, "aggregation": a})).collect::<Vec<_>>(),
        "filters": [],
        "timeDimension": granularity.map(|g| json!({"granularity": g})),
        "fromTimestamp": Timestamp::from_micros(from).to_iso(),
        "toTimestamp": Timestamp::from_micros(to).to_iso(),
        "orderBy": null,
    });
    let q = query::parse(&raw.to_string(), Version::V1)?;
    query::run(s, project, &q)
}

/// A metric value as a number: integer measures come back as strings, as Langfuse's do.
fn num(row: &Value, key: &str) -> f64 {
    match &row[key] {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// A count or token sum: whole numbers, answered as JSON integers.
fn int(row: &Value, key: &str) -> u64 {
    num(row, key).max(0.0).round() as u64
}

/// A latency percentile in seconds (the rollups keep milliseconds), null when nothing counted.
fn secs(row: &Value, key: &str) -> Value {
    match &row[key] {
        Value::Null => Value::Null,
        _ => json!(num(row, key) / 1000.0),
    }
}

/// The requested range with open ends resolved to the data: the first trace (so "all time"
/// draws a timeline over the data, not since 1970) and the later of now and the newest trace
/// (clients with a fast clock send traces from the future).
fn resolve_range(
    s: &Store,
    project: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<(i64, i64), QueryError> {
    let edge = |order| -> Result<Option<i64>, QueryError> {
        let q = TraceQuery {
            order,
            ..Default::default()
        };
        let page = s.list_traces(project, &q, Window { skip: 0, limit: 1 })?;
        Ok(page.items.first().map(|t| t.timestamp.micros()))
    };
    let to = match to {
        Some(t) => t.micros(),
        None => {
            let now = Timestamp::now().micros();
            edge(TraceOrder::TimestampDesc)?.map_or(now, |newest| now.max(newest + 1))
        }
    };
    let from = match from {
        Some(f) => f.micros(),
        None => edge(TraceOrder::TimestampAsc)?.unwrap_or(to - DAY_US),
    };
    Ok((from.min(to), to))
}

fn granularity(from: i64, to: i64) -> &'static str {
    let span = to - from;
    if span / HOUR_US < TIMELINE_BARS {
        "hour"
    } else if span / DAY_US < TIMELINE_BARS {
        "day"
    } else if span / (7 * DAY_US) < TIMELINE_BARS {
        "week"
    } else {
        "month"
    }
}

fn summarize(s: &Store, project: &str, range: (i64, i64)) -> Result<Value, QueryError> {
    let gran = granularity(range.0, range.1);
    let timeline = run(
        s,
        project,
        "traces",
        None,
        &[("count", "count"), ("totalCost", "sum")],
        Some(gran),
        range,
    )?;
    let traces: u64 = timeline.iter().map(|r| int(r, "count_count")).sum();
    let total_cost: f64 = timeline.iter().map(|r| num(r, "sum_totalCost")).sum();
    let timeline: Vec<Value> = timeline
        .iter()
        .map(|r| {
            json!({"start": r["time_dimension"], "traces": int(r, "count_count"),
                   "totalCost": num(r, "sum_totalCost")})
        })
        .collect();

    let by_type = run(
        s,
        project,
        "observations",
        Some("type"),
        &[
            ("count", "count"),
            ("latency", "p50"),
            ("latency", "p90"),
            ("latency", "p95"),
            ("latency", "p99"),
        ],
        None,
        range,
    )?;
    let observations: u64 = by_type.iter().map(|r| int(r, "count_count")).sum();
    let generations = by_type
        .iter()
        .find(|r| r["type"] == "GENERATION")
        .cloned()
        .unwrap_or(Value::Null);

    let by_model = run(
        s,
        project,
        "observations",
        Some("providedModelName"),
        &[
            ("count", "count"),
            ("inputTokens", "sum"),
            ("outputTokens", "sum"),
            ("totalTokens", "sum"),
            ("totalCost", "sum"),
            ("unpricedCount", "sum"),
            ("latency", "p50"),
            ("latency", "p95"),
        ],
        None,
        range,
    )?;
    let mut models = Vec::new();
    let mut unpriced = Vec::new();
    for r in by_model {
        let Some(model) = r["providedModelName"].as_str().filter(|m| !m.is_empty()) else {
            continue;
        };
        if int(&r, "sum_unpricedCount") > 0 {
            unpriced.push(json!({"model": model, "observations": int(&r, "sum_unpricedCount")}));
        }
        models.push(json!({
            "model": model, "observations": int(&r, "count_count"),
            "inputTokens": int(&r, "sum_inputTokens"), "outputTokens": int(&r, "sum_outputTokens"),
            "totalTokens": int(&r, "sum_totalTokens"), "totalCost": num(&r, "sum_totalCost"),
            "latencyP50": secs(&r, "p50_latency"), "latencyP95": secs(&r, "p95_latency"),
        }));
    }
    models.sort_by(|a, b| num(b, "totalCost").total_cmp(&num(a, "totalCost")));

    Ok(json!({
        "from": Timestamp::from_micros(range.0).to_iso(),
        "to": Timestamp::from_micros(range.1).to_iso(),
        "granularity": gran,
        "traces": traces,
        "observations": observations,
        "totalCost": total_cost,
        "latency": {
            "p50": secs(&generations, "p50_latency"), "p90": secs(&generations, "p90_latency"),
            "p95": secs(&generations, "p95_latency"), "p99": secs(&generations, "p99_latency"),
        },
        "models": models,
        "unpricedModels": unpriced,
        "timeline": timeline,
    }))
}

/// Error-level observations in the range, newest first, from the search index (which keeps
/// `level` as a keyword); `count` is null while the index cannot answer. The index trails the
/// store by a commit interval, so this first waits (briefly) until it has applied everything
/// committed before the request: the error count then agrees with the other numbers.
fn errors(search: &Search, s: &Store, project: &str, range: (i64, i64)) -> Value {
    let committed = *s.writer().subscribe().borrow();
    let deadline = Instant::now() + INDEX_WAIT;
    while search.status().indexed_seq < committed
        && !search.status().rebuilding
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let req = SearchRequest {
        project: project.to_string(),
        q: "level:error".into(),
        scope: Scope::Observations,
        order: SearchOrder::Newest,
        from: Some(Timestamp::from_micros(range.0)),
        to: Some(Timestamp::from_micros(range.1)),
        filters: vec![Filter::Level(Level::Error)],
        offset: 0,
        limit: RECENT_ERRORS,
        count: true,
    };
    let Ok(found) = search.search(&req) else {
        return json!({"count": null, "recent": []});
    };
    let recent: Vec<Value> = found
        .hits
        .iter()
        .filter_map(|h| s.observation(project, &h.id).ok().flatten())
        .map(|o| {
            json!({"observationId": o.id, "traceId": o.trace_id, "name": o.name,
                   "statusMessage": o.status_message, "startTime": o.start_time.to_iso()})
        })
        .collect();
    json!({"count": found.total, "recent": recent})
}

fn query_err(e: QueryError) -> ApiError {
    e.into()
}

/// Runs `f` on the blocking pool over the request's time range, open ends resolved to the data.
async fn over_range<F>(
    state: &WebState,
    project: String,
    params: &Params,
    f: F,
) -> Result<Json<Value>, WebError>
where
    F: FnOnce(&Store, &str, (i64, i64)) -> Result<Value, ApiError> + Send + 'static,
{
    let (from, to) = (params.time("fromTimestamp")?, params.time("toTimestamp")?);
    let body = state
        .app
        .read(move |s| {
            let range = resolve_range(s, &project, from, to).map_err(query_err)?;
            f(s, &project, range)
        })
        .await?;
    Ok(Json(body))
}

/// `GET /api/ui/overview?fromTimestamp&toTimestamp`: traces, cost, observations, generation
/// latency percentiles, cost and tokens by model, unpriced models, errors, and a timeline.
pub async fn overview(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    params: Params,
) -> Result<Json<Value>, WebError> {
    let search = state.app.search.clone();
    over_range(&state, u.project, &params, move |s, project, range| {
        let mut body = summarize(s, project, range).map_err(query_err)?;
        body["errors"] = errors(&search, s, project, range);
        Ok(body)
    })
    .await
}

/// `GET /api/ui/users`: traces, tokens and cost per user id in the range (most traces first),
/// with each user's first and last trace time from the by-user index.
pub async fn users(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    params: Params,
) -> Result<Json<Value>, WebError> {
    over_range(&state, u.project, &params, move |s, project, range| {
        let rows = run(
            s,
            project,
            "traces",
            Some("userId"),
            &[
                ("count", "count"),
                ("totalCost", "sum"),
                ("totalTokens", "sum"),
            ],
            None,
            range,
        )
        .map_err(query_err)?;
        let mut data = Vec::new();
        let truncated = rows.len() > USERS_LIMIT;
        for r in rows.iter().take(USERS_LIMIT) {
            let Some(user) = r["userId"].as_str().filter(|u| !u.is_empty()) else {
                continue;
            };
            let edge = |order| -> Result<Option<String>, ApiError> {
                let q = TraceQuery {
                    user_id: Some(user.to_string()),
                    from: Some(Timestamp::from_micros(range.0)),
                    to: Some(Timestamp::from_micros(range.1)),
                    order,
                    ..Default::default()
                };
                let page = s.list_traces(project, &q, Window { skip: 0, limit: 1 })?;
                Ok(page.items.first().map(|t| t.timestamp.to_iso()))
            };
            data.push(json!({
                "userId": user, "traces": int(r, "count_count"),
                "totalCost": num(r, "sum_totalCost"), "totalTokens": int(r, "sum_totalTokens"),
                "firstTrace": edge(TraceOrder::TimestampAsc)?,
                "lastTrace": edge(TraceOrder::TimestampDesc)?,
            }));
        }
        Ok(json!({"data": data, "truncated": truncated}))
    })
    .await
}
