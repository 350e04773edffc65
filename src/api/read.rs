//! Read endpoints: traces, observations (legacy and v2), sessions, scores (v1, v2, v3),
//! projects, health.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{Params, encode_cursor, listed};
use super::prompts;
use super::search::{self, TextQuery};
use super::shape::{self, V2Fields};
use super::{ApiError, AppState, Project};
use crate::record::{Level, ObservationType};
use crate::search::{Filter, Scope};
use crate::store::{
    Io, ObservationQuery, ScoreQuery, Store, TraceField, TraceOrder, TraceQuery, Window,
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Health fails when the store cannot read or cannot durably write: a check that stays green
/// while the database is broken is worse than none. A full write queue is load, not failure.
pub async fn health(State(state): State<AppState>) -> Response {
    let readable = state.read(|s| Ok(s.check_readable()?)).await.is_ok();
    let writable = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.store.writer().submit(crate::store::WriteOp::Probe),
    )
    .await
    {
        Ok(Ok(())) | Ok(Err(crate::store::StoreError::Busy)) => true,
        Ok(Err(_)) | Err(_) => false,
    } && !state
        .store
        .writer()
        .stats()
        .failing(std::time::Duration::from_secs(60));
    if readable && writable {
        Json(json!({"status": "OK", "version": VERSION})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Database not available", "version": VERSION})),
        )
            .into_response()
    }
}

pub async fn ready(State(state): State<AppState>) -> Response {
    if state.store.writer().is_accepting() {
        Json(json!({"status": "OK", "version": VERSION})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "Shutting down", "version": VERSION})),
        )
            .into_response()
    }
}

pub async fn projects(
    State(state): State<AppState>,
    Project(p): Project,
) -> Result<Json<Value>, ApiError> {
    let project = state
        .read(move |s| Ok(s.project(&p.project_id)?))
        .await?
        .ok_or_else(|| ApiError::not_found("project of this key no longer exists"))?;
    let mut item = json!({
        "id": project.id,
        "name": project.name,
        "organization": {"id": project.org_id, "name": project.org_name},
        "metadata": {},
    });
    // The configured retention is the one enforced here.
    let days = state
        .config
        .retention
        .max_age_days_for(&project.id)
        .or(project.retention_days);
    if let Some(days) = days {
        item["retentionDays"] = json!(days);
    }
    Ok(Json(json!({"data": [item]})))
}

fn trace_order(p: &Params) -> Result<TraceOrder, ApiError> {
    let Some(raw) = p.str("orderBy") else {
        return Ok(TraceOrder::TimestampDesc);
    };
    if raw == "relevance" {
        // TextQuery::from_params refuses it without q.
        return Ok(TraceOrder::Relevance);
    }
    let (field, dir) = raw.split_once('.').unwrap_or((raw.as_str(), "desc"));
    let desc = match dir {
        "desc" => true,
        "asc" => false,
        _ => {
            return Err(ApiError::bad_request(format!(
                "orderBy direction must be asc or desc, got {dir:?}"
            )));
        }
    };
    let field = match field {
        "timestamp" => {
            return Ok(if desc {
                TraceOrder::TimestampDesc
            } else {
                TraceOrder::TimestampAsc
            });
        }
        "id" => TraceField::Id,
        "name" => TraceField::Name,
        "userId" => TraceField::UserId,
        "release" => TraceField::Release,
        "version" => TraceField::Version,
        "public" => TraceField::Public,
        "bookmarked" => TraceField::Bookmarked,
        "sessionId" => TraceField::SessionId,
        other => {
            return Err(ApiError::bad_request(format!(
                "cannot order traces by {other:?}"
            )));
        }
    };
    Ok(TraceOrder::Field(field, desc))
}

/// Field groups of the traces endpoints (`core,io,scores,observations,metrics`, and
/// Sightline's `preview`: `inputPreview`/`outputPreview` text for list rows, only on request).
struct TraceFields {
    io: bool,
    preview: bool,
    scores: bool,
    observations: bool,
    metrics: bool,
}

impl TraceFields {
    fn parse(p: &Params) -> Self {
        let f = p.all("fields");
        let has = |g: &str| f.is_empty() || f.iter().any(|x| x == g);
        TraceFields {
            io: has("io"),
            preview: f.iter().any(|x| x == "preview"),
            scores: has("scores"),
            observations: has("observations"),
            metrics: has("metrics"),
        }
    }

    /// Whether the answer shows the trace's input/output (whole or as previews).
    fn wants_io(&self) -> bool {
        self.io || self.preview
    }
}

/// A trace in the list shape (ids of observations and scores) or the detail shape (objects).
/// `io`: the trace's input/output, read by the caller when `f.wants_io()`.
fn trace_json(
    store: &Store,
    project: &str,
    (t, io): (crate::record::TraceRecord, Io),
    f: &TraceFields,
    detail: bool,
) -> Result<Value, ApiError> {
    let summaries = store.trace_summaries(project, &t.id)?;
    let observations = if !f.observations {
        vec![]
    } else if detail {
        let with_io = if f.io {
            store.trace_observations_with_io(project, &t.id)?
        } else {
            let observations = store.trace_observations(project, &t.id)?;
            observations
                .into_iter()
                .map(|o| (o, Io::default()))
                .collect()
        };
        let mut out = Vec::with_capacity(with_io.len());
        for (o, io) in with_io {
            let mut v = shape::observation(project, &o, io);
            prompts::link_prompt(store, project, &o, &mut v)?;
            out.push(v);
        }
        out
    } else {
        summaries.iter().map(|(id, _)| json!(id)).collect()
    };
    let scores = if !f.scores {
        vec![]
    } else {
        store
            .trace_scores(project, &t.id)?
            .iter()
            .map(|s| if detail { shape::score(s) } else { json!(s.id) })
            .collect()
    };
    let previews = f.preview.then(|| {
        (
            shape::preview(io.input.as_ref()),
            shape::preview(io.output.as_ref()),
        )
    });
    let mut m = shape::trace(project, t, io);
    if let Some((input, output)) = previews {
        m.insert("inputPreview".into(), input);
        m.insert("outputPreview".into(), output);
    }
    if !f.io {
        m.insert("input".into(), Value::Null);
        m.insert("output".into(), Value::Null);
        m.insert("metadata".into(), json!({}));
    }
    let (latency, cost) = if f.metrics {
        shape::trace_metrics(&summaries)
    } else {
        (-1.0, -1.0)
    };
    m.insert("latency".into(), json!(latency));
    m.insert("totalCost".into(), json!(cost));
    m.insert("observations".into(), Value::Array(observations));
    m.insert("scores".into(), Value::Array(scores));
    Ok(Value::Object(m))
}

/// The traces list filters; the export endpoint takes the same ones.
pub(super) fn trace_query(params: &Params) -> Result<TraceQuery, ApiError> {
    Ok(TraceQuery {
        user_id: params.str("userId"),
        name: params.str("name"),
        session_id: params.str("sessionId"),
        tags: params.all("tags"),
        environments: params.all("environment"),
        release: params.str("release"),
        version: params.str("version"),
        from: params.time("fromTimestamp")?,
        to: params.time("toTimestamp")?,
        order: trace_order(params)?,
        ids: None,
    })
}

pub async fn list_traces(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let text = TextQuery::from_params(&params)?;
    let mut q = trace_query(&params)?;
    let fields = TraceFields::parse(&params);
    let index = state.search.clone();
    state
        .read(move |s| {
            let project = &p.project_id;
            // With q: the traces whose own text or any observation's matches, then every other
            // filter and the pagination as usual.
            let found = text
                .map(|t| {
                    let newest = q.order != TraceOrder::TimestampAsc;
                    let mut req = t.request(project, Scope::All, newest);
                    // Trace-level filters narrow the candidates in the index, so a frequent word
                    // cannot crowd one user's traces out of the candidate limit.
                    req.filters =
                        Filter::trace_level(q.user_id.as_deref(), q.session_id.as_deref(), &q.tags);
                    Ok::<_, ApiError>(index.search(&req)?)
                })
                .transpose()?;
            if let Some(found) = &found {
                q.ids = Some(
                    found
                        .by_trace()
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .collect(),
                );
            }
            let by_trace = found.as_ref().map(search::hits_by_trace);
            let page = s.list_traces(project, &q, paging.window())?;
            let mut data = Vec::with_capacity(page.items.len());
            for t in page.items {
                let highlights = match (&found, &by_trace) {
                    (Some(found), Some(by_trace)) => Some(search::trace_highlights(
                        found, by_trace, s, project, &t.id,
                    )?),
                    _ => None,
                };
                let io = if fields.wants_io() {
                    s.trace_io(project, &t.id)?
                } else {
                    Io::default()
                };
                let mut v = trace_json(s, project, (t, io), &fields, false)?;
                if let Some(h) = highlights {
                    v["searchHighlights"] = h;
                }
                data.push(v);
            }
            Ok(Json(paging.answer(data, page.total)))
        })
        .await
}

pub async fn get_trace(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let fields = TraceFields::parse(&params);
    state
        .read(move |s| {
            let trace = if fields.wants_io() {
                s.trace_with_io(&p.project_id, &id)?
            } else {
                s.trace(&p.project_id, &id)?.map(|t| (t, Io::default()))
            };
            let trace = trace.ok_or_else(|| ApiError::missing("Trace", &id))?;
            Ok(Json(trace_json(s, &p.project_id, trace, &fields, true)?))
        })
        .await
}

fn observation_query(p: &Params) -> Result<ObservationQuery, ApiError> {
    let kind = p
        .str("type")
        .map(|t| {
            ObservationType::parse(&t)
                .ok_or_else(|| ApiError::bad_request(format!("unknown observation type {t:?}")))
        })
        .transpose()?;
    let level = p
        .str("level")
        .map(|l| {
            Level::parse(&l).ok_or_else(|| ApiError::bad_request(format!("unknown level {l:?}")))
        })
        .transpose()?;
    Ok(ObservationQuery {
        trace_id: p.str("traceId"),
        name: p.str("name"),
        user_id: p.str("userId"),
        session_id: p.str("sessionId"),
        kind,
        level,
        parent_observation_id: p.str("parentObservationId"),
        environments: p.all("environment"),
        version: p.str("version"),
        from: p.time("fromStartTime")?,
        to: p.time("toStartTime")?,
        is_root: p.bool("isRootObservation")?,
        after: None,
        ids: None,
        keep_id_order: false,
    })
}

pub async fn list_observations(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let mut q = observation_query(&params)?;
    let text = TextQuery::from_params(&params)?;
    let index = state.search.clone();
    state
        .read(move |s| {
            let project = &p.project_id;
            let found = restrict_to_hits(
                &index,
                project,
                text.as_ref(),
                &mut q,
                Some(paging.window()),
            )?;
            // When the index answered the page and counted the matches, the store renders it.
            let counted = found.as_ref().and_then(|f| f.total);
            let window = match counted {
                Some(_) => Window {
                    skip: 0,
                    limit: paging.limit,
                },
                None => paging.window(),
            };
            let page = s.list_observations(project, &q, window)?;
            let total = counted.unwrap_or(page.total);
            let mut data = Vec::with_capacity(page.items.len());
            for o in &page.items {
                let io = s.observation_io(project, &o.id)?;
                let highlights = found
                    .as_ref()
                    .map(|found| search::observation_highlights_of(found, o, &io));
                let mut v = shape::observation(project, o, io);
                prompts::link_prompt(s, project, o, &mut v)?;
                if let Some(h) = highlights {
                    v["searchHighlights"] = h;
                }
                data.push(v);
            }
            Ok(Json(paging.answer(data, total)))
        })
        .await
}

/// With a text query: searches observations (within the query's start-time window and the
/// filters the index holds) and limits the store query to the hits, in relevance order when
/// asked for. When no filter needs the store, the index answers `page` alone and counts every
/// match, so a frequent word costs one page of records instead of every candidate.
fn restrict_to_hits(
    index: &crate::search::Search,
    project: &str,
    text: Option<&TextQuery>,
    q: &mut ObservationQuery,
    page: Option<Window>,
) -> Result<Option<crate::search::SearchResults>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    // Filters only the store can apply (through the trace, or not indexed as exact values).
    let store_only = q.user_id.is_some()
        || q.session_id.is_some()
        || q.name.is_some()
        || q.parent_observation_id.is_some()
        || q.version.is_some()
        || q.is_root.is_some()
        || q.after.is_some();
    let mut filters = Vec::new();
    if let Some(t) = q.kind {
        filters.push(Filter::ObservationType(t));
    }
    if let Some(l) = q.level {
        filters.push(Filter::Level(l));
    }
    if !q.environments.is_empty() {
        filters.push(Filter::Environments(q.environments.clone()));
    }
    if let Some(t) = &q.trace_id {
        filters.push(Filter::TraceId(t.clone()));
    }
    // Applied by the index to narrow the candidates; the store still checks them exactly.
    filters.extend(Filter::trace_level(
        q.user_id.as_deref(),
        q.session_id.as_deref(),
        &[],
    ));
    let mut req = text.request(project, Scope::Observations, true);
    (req.from, req.to, req.filters) = (q.from, q.to, filters);
    if let Some(page) = page.filter(|_| !store_only) {
        search::one_page(&mut req, page);
    }
    let found = index.search(&req)?;
    q.ids = Some(found.hits.iter().map(|h| h.id.clone()).collect());
    q.keep_id_order = text.relevance;
    Ok(Some(found))
}

pub async fn get_observation(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .read(move |s| {
            let (o, io) = s
                .observation_with_io(&p.project_id, &id)?
                .ok_or_else(|| ApiError::missing("Observation", &id))?;
            let mut v = shape::observation(&p.project_id, &o, io);
            prompts::link_prompt(s, &p.project_id, &o, &mut v)?;
            Ok(Json(v))
        })
        .await
}

pub async fn list_observations_v2(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    if params.bool("parseIoAsJson")? == Some(true) {
        return Err(ApiError::bad_request(
            "parseIoAsJson is not supported; parse input/output on the client",
        ));
    }
    let limit = params.int("limit")?.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let limit = limit as usize;
    let mut q = observation_query(&params)?;
    q.after = params.cursor()?;
    let text = TextQuery::from_params(&params)?;
    if text.as_ref().is_some_and(|t| t.relevance) {
        return Err(ApiError::bad_request(
            "v2 observations page by start time; use /api/public/observations for orderBy=relevance",
        ));
    }
    let fields = V2Fields::parse(&params.all("fields"));
    let index = state.search.clone();
    state
        .read(move |s| {
            let found = restrict_to_hits(&index, &p.project_id, text.as_ref(), &mut q, None)?;
            let page = s.list_observations(&p.project_id, &q, Window { skip: 0, limit })?;
            let mut data = Vec::with_capacity(page.items.len());
            for o in &page.items {
                let io = if fields.io {
                    s.observation_io(&p.project_id, &o.id)?
                } else {
                    Default::default()
                };
                let trace = if fields.needs_trace() {
                    s.trace(&p.project_id, &o.trace_id)?
                } else {
                    None
                };
                let mut v = shape::observation_v2(&p.project_id, o, &io, trace.as_ref(), fields);
                if fields.prompt {
                    prompts::link_prompt(s, &p.project_id, o, &mut v)?;
                }
                if let Some(found) = &found {
                    v["searchHighlights"] = search::observation_highlights(
                        found,
                        s,
                        &p.project_id,
                        &o.id,
                        &o.trace_id,
                    )?;
                }
                data.push(v);
            }
            let cursor = (page.total as usize > page.items.len())
                .then(|| {
                    page.items
                        .last()
                        .map(|o| encode_cursor(o.start_time, &o.id))
                })
                .flatten();
            Ok(Json(listed(data, json!({"cursor": cursor}))))
        })
        .await
}

pub async fn list_sessions(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let (from, to) = (params.time("fromTimestamp")?, params.time("toTimestamp")?);
    let envs = params.all("environment");
    state
        .read(move |s| {
            let page = s.list_sessions(&p.project_id, from, to, &envs, paging.window())?;
            let data: Vec<Value> = page
                .items
                .iter()
                .map(|x| Value::Object(shape::session(&p.project_id, x)))
                .collect();
            Ok(Json(paging.answer(data, page.total)))
        })
        .await
}

pub async fn get_session(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .read(move |s| {
            let session = s
                .session(&p.project_id, &id)?
                .ok_or_else(|| ApiError::missing("Session", &id))?;
            let mut m = shape::session(&p.project_id, &session);
            let mut traces = Vec::new();
            for t in s.session_traces(&p.project_id, &id)? {
                let io = s.trace_io(&p.project_id, &t.id)?;
                traces.push(Value::Object(shape::trace(&p.project_id, t, io)));
            }
            m.insert("traces".into(), Value::Array(traces));
            Ok(Json(Value::Object(m)))
        })
        .await
}

fn score_query(p: &Params) -> Result<ScoreQuery, ApiError> {
    let value = match (p.str("operator"), p.float("value")?) {
        (Some(op), Some(v)) => Some((op, v)),
        (None, Some(v)) => Some(("=".to_string(), v)),
        _ => None,
    };
    let mut score_ids = p.all("scoreIds");
    score_ids.extend(p.all("id"));
    Ok(ScoreQuery {
        trace_id: p.str("traceId"),
        observation_ids: p.all("observationId"),
        session_id: p.str("sessionId"),
        score_ids,
        name: p.str("name"),
        user_id: p.str("userId"),
        source: p.str("source"),
        data_type: p.str("dataType"),
        config_id: p.str("configId"),
        queue_id: p.str("queueId"),
        environments: p.all("environment"),
        from: p.time("fromTimestamp")?,
        to: p.time("toTimestamp")?,
        value,
        value_min: p.float("valueMin")?,
        value_max: p.float("valueMax")?,
        after: None,
    })
}

async fn list_scores_paged(
    state: AppState,
    project: String,
    params: Params,
    with_trace: bool,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let q = score_query(&params)?;
    state
        .read(move |s| {
            let page = s.list_scores(&project, &q, paging.window())?;
            let mut data = Vec::with_capacity(page.items.len());
            for score in &page.items {
                let mut v = shape::score(score);
                if with_trace
                    && let Some(tid) = score.trace_id()
                    && let Some(t) = s.trace(&project, tid)?
                {
                    v["trace"] = json!({"userId": t.user_id, "tags": t.tags, "environment": t.environment, "sessionId": t.session_id});
                }
                data.push(v);
            }
            Ok(Json(paging.answer(data, page.total)))
        })
        .await
}

pub async fn list_scores_v1(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    list_scores_paged(state, p.project_id, params, false).await
}

pub async fn list_scores_v2(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    list_scores_paged(state, p.project_id, params, true).await
}

pub async fn list_scores_v3(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let limit = params.int("limit")?.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let limit = limit as usize;
    let mut q = score_query(&params)?;
    q.after = params.cursor()?;
    state
        .read(move |s| {
            let page = s.list_scores(&p.project_id, &q, Window { skip: 0, limit })?;
            let data: Vec<Value> = page
                .items
                .iter()
                .map(|x| shape::score_v3(&p.project_id, x))
                .collect();
            let cursor = (page.total as usize > page.items.len())
                .then(|| page.items.last().map(|x| encode_cursor(x.timestamp, &x.id)))
                .flatten();
            Ok(Json(listed(
                data,
                json!({"limit": limit, "cursor": cursor}),
            )))
        })
        .await
}

pub async fn get_score(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .read(move |s| {
            let score = s
                .score(&p.project_id, &id)?
                .ok_or_else(|| ApiError::missing("Score", &id))?;
            Ok(Json(shape::score(&score)))
        })
        .await
}
