//! The dashboard's own JSON: overview and per-user aggregates, API-key settings, and the
//! live-update stream. Aggregates are computed from store queries on the blocking pool; trace
//! cost and latency come from `api::shape::trace_metrics`, the same numbers the public traces
//! endpoint reports, so the overview always agrees with the API.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{UiUser, check_csrf};
use super::{WebError, WebState};
use crate::api::params::Params;
use crate::api::shape;
use crate::record::{Level, ObservationRecord, ObservationType, TraceRecord};
use crate::store::{ChangeRef, ObservationQuery, Store, StoreError, TraceQuery, Window, WriteOp};
use crate::time::Timestamp;

/// Most traces (and observations) one aggregate scans; beyond it the answer says `truncated`.
const SCAN_CAP: usize = 200_000;
/// Buckets of the usage timeline.
const TIMELINE_BUCKETS: i64 = 30;
/// Live updates are coalesced: at most one event per this interval.
const LIVE_COALESCE: Duration = Duration::from_millis(300);
/// Change-log entries one live check reads to decide whether the project was touched.
const LIVE_SCAN: usize = 10_000;

/// Traces and observations of one time range, with each trace's latency and cost.
struct Scan {
    traces: Vec<(TraceRecord, f64, f64)>,
    observations: Vec<ObservationRecord>,
    truncated: bool,
}

fn scan(
    s: &Store,
    project: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Scan, StoreError> {
    let window = Window {
        skip: 0,
        limit: SCAN_CAP,
    };
    let tq = TraceQuery {
        from,
        to,
        ..Default::default()
    };
    let page = s.list_traces(project, &tq, window)?;
    let mut traces = Vec::with_capacity(page.items.len());
    for t in page.items {
        let (latency, cost) = shape::trace_metrics(&s.trace_summaries(project, &t.id)?);
        traces.push((t, latency, cost));
    }
    let oq = ObservationQuery {
        from,
        to,
        ..Default::default()
    };
    let obs = s.list_observations(project, &oq, window)?;
    let truncated = page.total as usize > SCAN_CAP || obs.total as usize > SCAN_CAP;
    Ok(Scan {
        traces,
        observations: obs.items,
        truncated,
    })
}

/// Input, output and total units of an observation, summed as the public shape does.
fn tokens(o: &ObservationRecord) -> (u64, u64, u64) {
    let sum = |needle: &str| -> u64 {
        o.usage_details
            .iter()
            .filter(|(k, _)| k.contains(needle))
            .map(|(_, v)| *v)
            .sum()
    };
    let (i, out) = (sum("input"), sum("output"));
    let total = o.usage_details.get("total").copied().unwrap_or(i + out);
    (i, out, total)
}

fn percentile(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    // Nearest-rank: the smallest value with at least p of the data at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    json!(sorted[rank - 1])
}

fn range(params: &Params) -> Result<(Option<Timestamp>, Option<Timestamp>), WebError> {
    Ok((params.time("fromTimestamp")?, params.time("toTimestamp")?))
}

/// `GET /api/ui/overview?fromTimestamp&toTimestamp`.
pub async fn overview(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    params: Params,
) -> Result<Json<Value>, WebError> {
    let (from, to) = range(&params)?;
    let project = u.project;
    let scan = state.read(move |s| scan(s, &project, from, to)).await?;
    Ok(Json(summarize(&scan, from, to)))
}

#[derive(Default)]
struct ModelRow {
    count: u64,
    input: u64,
    output: u64,
    total: u64,
    cost: f64,
    unpriced: u64,
}

fn summarize(scan: &Scan, from: Option<Timestamp>, to: Option<Timestamp>) -> Value {
    let total_cost = scan.traces.iter().fold(0.0, |acc, (_, _, c)| acc + c);
    let mut latencies: Vec<f64> = scan.traces.iter().map(|(_, l, _)| *l).collect();
    latencies.sort_by(f64::total_cmp);

    let mut models: BTreeMap<String, ModelRow> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut error_count = 0u64;
    for o in &scan.observations {
        if o.level == Level::Error {
            error_count += 1;
            if errors.len() < 10 {
                errors.push(json!({
                    "observationId": o.id, "traceId": o.trace_id, "name": o.name,
                    "statusMessage": o.status_message, "startTime": o.start_time.to_iso(),
                }));
            }
        }
        let Some(model) = &o.model else { continue };
        if o.kind != ObservationType::Generation && o.usage_details.is_empty() {
            continue;
        }
        let row = models.entry(model.clone()).or_default();
        let (i, out, total) = tokens(o);
        row.count += 1;
        row.input += i;
        row.output += out;
        row.total += total;
        match o.cost_details.get("total") {
            Some(c) => row.cost += c,
            None => row.unpriced += 1,
        }
    }
    let unpriced: Vec<Value> = models
        .iter()
        .filter(|(_, r)| r.unpriced > 0)
        .map(|(m, r)| json!({"model": m, "observations": r.unpriced}))
        .collect();
    let models: Vec<Value> = models
        .into_iter()
        .map(|(m, r)| {
            json!({"model": m, "observations": r.count, "inputTokens": r.input,
                   "outputTokens": r.output, "totalTokens": r.total, "totalCost": r.cost})
        })
        .collect();

    json!({
        "traces": scan.traces.len(),
        "observations": scan.observations.len(),
        "totalCost": total_cost,
        "latency": {
            "p50": percentile(&latencies, 0.50), "p90": percentile(&latencies, 0.90),
            "p95": percentile(&latencies, 0.95), "p99": percentile(&latencies, 0.99),
        },
        "models": models,
        "unpricedModels": unpriced,
        "errors": {"count": error_count, "recent": errors},
        "timeline": timeline(scan, from, to),
        "truncated": scan.truncated,
    })
}

/// Trace counts and cost per time bucket across the range (or across the data when open).
fn timeline(scan: &Scan, from: Option<Timestamp>, to: Option<Timestamp>) -> Value {
    let times = scan.traces.iter().map(|(t, _, _)| t.timestamp.micros());
    let lo = from.map(Timestamp::micros).or_else(|| times.clone().min());
    let hi = to
        .map(Timestamp::micros)
        .or_else(|| times.max().map(|m| m + 1));
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return json!([]);
    };
    let width = ((hi - lo) / TIMELINE_BUCKETS).max(1);
    let mut buckets = vec![(0u64, 0f64); TIMELINE_BUCKETS as usize];
    for (t, _, cost) in &scan.traces {
        let i = ((t.timestamp.micros() - lo) / width).clamp(0, TIMELINE_BUCKETS - 1) as usize;
        buckets[i].0 += 1;
        buckets[i].1 += cost;
    }
    let rows: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, (n, c))| {
            let start = Timestamp::from_micros(lo + width * i as i64);
            json!({"start": start.to_iso(), "traces": n, "totalCost": c})
        })
        .collect();
    Value::Array(rows)
}

/// `GET /api/ui/users`: traces, tokens and cost per user id in the range.
pub async fn users(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    params: Params,
) -> Result<Json<Value>, WebError> {
    let (from, to) = range(&params)?;
    let project = u.project;
    let scan = state.read(move |s| scan(s, &project, from, to)).await?;
    #[derive(Default)]
    struct Row {
        traces: u64,
        cost: f64,
        tokens: u64,
        first: Option<Timestamp>,
        last: Option<Timestamp>,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut user_of: HashMap<&str, &str> = HashMap::new();
    for (t, _, cost) in &scan.traces {
        let Some(user) = &t.user_id else { continue };
        user_of.insert(&t.id, user);
        let r = rows.entry(user.clone()).or_default();
        r.traces += 1;
        r.cost += cost;
        r.first = Some(r.first.map_or(t.timestamp, |f| f.min(t.timestamp)));
        r.last = Some(r.last.map_or(t.timestamp, |l| l.max(t.timestamp)));
    }
    for o in &scan.observations {
        if let Some(user) = user_of.get(o.trace_id.as_str())
            && let Some(r) = rows.get_mut(*user)
        {
            r.tokens += tokens(o).2;
        }
    }
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(id, r)| {
            json!({"userId": id, "traces": r.traces, "totalCost": r.cost, "totalTokens": r.tokens,
                   "firstTrace": r.first.map(|t| t.to_iso()), "lastTrace": r.last.map(|t| t.to_iso())})
        })
        .collect();
    Ok(Json(json!({"data": data, "truncated": scan.truncated})))
}

/// `GET /api/ui/keys`: the project's API keys, secrets masked.
pub async fn keys(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
) -> Result<Json<Value>, WebError> {
    let project = u.project;
    let keys = state.read(|s| s.all_api_keys()).await?;
    let data: Vec<Value> = keys
        .into_iter()
        .filter(|k| k.project_id == project)
        .map(|k| {
            json!({"publicKey": k.public_key, "displaySecretKey": k.display_secret,
                   "note": k.note, "createdAt": k.created_at.to_iso()})
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

#[derive(Deserialize, Default)]
pub struct NewKey {
    #[serde(default)]
    note: Option<String>,
}

async fn reload_keys(state: &WebState) -> Result<(), WebError> {
    let (keys, store) = (state.app.keys.clone(), state.app.store.clone());
    state.read(move |_| keys.reload(&store)).await
}

/// `POST /api/ui/keys` `{note?}`: a new key pair; the secret is in this answer only.
pub async fn create_key(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    Json(body): Json<NewKey>,
) -> Result<Json<Value>, WebError> {
    let note = body.note.unwrap_or_default();
    if note.len() > 200 {
        return Err(WebError::BadRequest("note is longer than 200 bytes".into()));
    }
    let (public_key, secret_key) = crate::auth::new_key_pair();
    let rec = crate::auth::key_record(&u.project, &public_key, &secret_key, &note);
    let display = rec.display_secret.clone();
    state
        .app
        .store
        .writer()
        .submit(WriteOp::PutApiKey(rec))
        .await?;
    reload_keys(&state).await?;
    Ok(Json(
        json!({"publicKey": public_key, "secretKey": secret_key,
                   "displaySecretKey": display, "note": note}),
    ))
}

/// `DELETE /api/ui/keys/{public_key}`: revokes a key of the selected project.
pub async fn revoke_key(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    Path(public_key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, WebError> {
    // The middleware checked already; repeated here because revoking is the most harmful
    // state change the dashboard offers.
    check_csrf(&headers)?;
    state
        .app
        .store
        .writer()
        .submit(WriteOp::DeleteApiKey {
            project: u.project,
            public_key,
        })
        .await?;
    reload_keys(&state).await?;
    Ok(Json(json!({"ok": true})))
}

fn touches(c: &ChangeRef, project: &str) -> bool {
    match c {
        ChangeRef::Trace { project: p, .. }
        | ChangeRef::Observation { project: p, .. }
        | ChangeRef::Score { project: p, .. }
        | ChangeRef::TraceDeleted { project: p, .. }
        | ChangeRef::ScoreDeleted { project: p, .. } => p == project,
    }
}

struct Follow {
    state: WebState,
    project: String,
    committed: tokio::sync::watch::Receiver<u64>,
    stopped: tokio::sync::watch::Receiver<bool>,
    seen: u64,
}

/// `GET /api/ui/events?project=`: server-sent `change` events whenever a commit touched the
/// selected project (ids are not sent: the page re-reads what it shows). Ends on shutdown.
pub async fn events(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let committed = state.app.store.writer().subscribe();
    let seen = *committed.borrow();
    let follow = Follow {
        stopped: state.live.stopped(),
        state,
        project: u.project,
        committed,
        seen,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if *f.stopped.borrow() {
                return None;
            }
            tokio::select! {
                r = f.committed.changed() => { if r.is_err() { return None; } }
                _ = f.stopped.changed() => { return None; }
            }
            tokio::time::sleep(LIVE_COALESCE).await;
            let newest = *f.committed.borrow_and_update();
            let (after, project) = (f.seen, f.project.clone());
            let relevant = f
                .state
                .read(move |s| {
                    let changes = s.changes_since(after, LIVE_SCAN)?;
                    // Past the scan limit, assume yes: a spurious refresh is cheaper than a scan.
                    Ok(changes.len() >= LIVE_SCAN
                        || changes.iter().any(|(_, c)| touches(c, &project)))
                })
                .await
                .unwrap_or(true);
            f.seen = newest;
            if relevant {
                let ev = Event::default().event("change").data(newest.to_string());
                return Some((Ok(ev), f));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v, 0.99), 10.0);
        assert_eq!(percentile(&[], 0.5), serde_json::Value::Null);
    }
}
