//! `/api/evaluators`: LLM-as-a-judge evaluators of a project — list, create, get (with status),
//! patch (edit, pause, resume, budget), delete, backfill over stored records, and job listing.
//! Project Basic keys and dashboard sessions both work, like every `api` handler.
//!
//! Definitions and queued jobs go through the writer; the runner is woken after each write.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::body::{JsonBody, json as parse_json, read_limited};
use super::params::Params;
use super::{ApiError, AppState, Project};
use crate::eval::{DefError, EvalJob, EvalStatus, Evaluator, JobState, Target, target_key};
use crate::record::{ObservationType, TraceRecord};
use crate::store::{ObservationQuery, Store, TraceQuery, Window, WriteOp};
use crate::time::Timestamp;

/// Most records one backfill looks at; a wider range must be split.
const BACKFILL_CAP: usize = 100_000;
/// Jobs per queued write during a backfill.
const ENQUEUE_CHUNK: usize = 1000;

impl From<DefError> for ApiError {
    fn from(e: DefError) -> Self {
        ApiError::bad_request(e.0)
    }
}

fn with_status(state: &AppState, e: &Evaluator, s: &EvalStatus) -> Value {
    let budget = e.budget_tokens.unwrap_or(state.evals.default_budget());
    let mut v = e.to_json();
    v["status"] = json!({
        "pending": s.pending,
        "evaluated": s.succeeded + s.failed,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "skipped": s.skipped,
        "usedTokens": s.used_tokens,
        "budgetTokens": (budget > 0).then_some(budget),
        "budgetExhausted": budget > 0 && s.used_tokens >= budget,
        "lastError": s.last_error,
        "lastErrorAt": s.last_error_at.map(|t| t.to_iso()),
        "lastSuccessAt": s.last_success_at.map(|t| t.to_iso()),
        "judgeConfigured": state.evals.judge_configured(),
    });
    v
}

async fn load(state: &AppState, project: &str, id: &str) -> Result<Evaluator, ApiError> {
    let (p, i) = (project.to_string(), id.to_string());
    state
        .read(move |s| Ok(s.evaluator(&p, &i)?))
        .await?
        .ok_or_else(|| ApiError::missing("Evaluator", id))
}

async fn answer(state: &AppState, e: Evaluator) -> Result<Json<Value>, ApiError> {
    let (p, i) = (e.project_id.clone(), e.id.clone());
    let status = state.read(move |s| Ok(s.eval_status(&p, &i)?)).await?;
    Ok(Json(with_status(state, &e, &status)))
}

pub async fn list(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let (skip, limit) = (paging.skip(), paging.limit);
    let project = p.project_id.clone();
    let rows = state
        .read(move |s| {
            let all = s.evaluators(&project)?;
            let total = all.len() as u64;
            let mut out = Vec::new();
            for e in all.into_iter().skip(skip).take(limit) {
                let st = s.eval_status(&project, &e.id)?;
                out.push((e, st));
            }
            Ok((out, total))
        })
        .await?;
    let data: Vec<Value> = rows
        .0
        .iter()
        .map(|(e, s)| with_status(&state, e, s))
        .collect();
    Ok(Json(paging.answer(data, rows.1)))
}

pub async fn get(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = load(&state, &p.project_id, &id).await?;
    answer(&state, e).await
}

pub async fn create(
    State(state): State<AppState>,
    Project(p): Project,
    JsonBody(value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let configs = state.store.writer().score_configs();
    let e = Evaluator::create(&value, &p.project_id, &configs, Timestamp::now())?;
    put(&state, e).await
}

pub async fn patch(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
    JsonBody(value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let old = load(&state, &p.project_id, &id).await?;
    let configs = state.store.writer().score_configs();
    let e = old.patched(&value, &configs, Timestamp::now())?;
    put(&state, e).await
}

async fn put(state: &AppState, e: Evaluator) -> Result<Json<Value>, ApiError> {
    state
        .store
        .writer()
        .submit(WriteOp::PutEvaluator(Box::new(e.clone())))
        .await?;
    state.evals.kick();
    answer(state, e).await
}

pub async fn delete(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    load(&state, &p.project_id, &id).await?;
    state
        .store
        .writer()
        .submit(WriteOp::DeleteEvaluator {
            project: p.project_id,
            id,
        })
        .await?;
    Ok(Json(json!({"message": "Evaluator deleted"})))
}

/// `GET /api/evaluators/{id}/jobs?state=FAILED&limit=50`: recent jobs, newest first.
pub async fn jobs(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    load(&state, &p.project_id, &id).await?;
    let job_state = match params.str("state") {
        None => None,
        Some(s) => Some(
            [
                JobState::Pending,
                JobState::Done,
                JobState::Failed,
                JobState::Skipped,
            ]
            .into_iter()
            .find(|j| j.as_str().eq_ignore_ascii_case(&s))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state must be PENDING, DONE, FAILED or SKIPPED; got {s:?}"
                ))
            })?,
        ),
    };
    let limit = params.int("limit")?.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let project = p.project_id;
    let rows = state
        .read(move |s| Ok(s.eval_jobs(&project, &id, job_state, limit as usize)?))
        .await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|j| {
            json!({
                "traceId": j.trace_id,
                "observationId": j.observation_id,
                "state": j.state.as_str(),
                "attempts": j.attempts,
                "error": j.error,
                "scoreId": j.score_id,
                "enqueuedAt": j.enqueued_at.to_iso(),
                "dueAt": j.due_at.to_iso(),
                "finishedAt": j.finished_at.map(|t| t.to_iso()),
            })
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

/// `POST /api/evaluators/{id}/backfill` with optional `{"fromTimestamp", "toTimestamp"}`:
/// queues every stored record in the range that the evaluator takes (filter and sample), except
/// those it already judged; failed and skipped ones are queued again. Paused evaluators keep
/// the jobs until resumed.
pub async fn backfill(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_limited(&headers, body, state.config.max_body_bytes).await?;
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_json(&bytes)?
    };
    let time = |k: &str| match value.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Timestamp::parse(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{k} must be an ISO-8601 datetime with offset, got {s:?}"
            ))
        }),
        Some(_) => Err(ApiError::bad_request(format!("{k} must be a string"))),
    };
    let (from, to) = (time("fromTimestamp")?, time("toTimestamp")?);
    if let (Some(f), Some(t)) = (from, to)
        && t <= f
    {
        return Err(ApiError::bad_request(
            "toTimestamp must be after fromTimestamp",
        ));
    }
    let ev = load(&state, &p.project_id, &id).await?;
    let scan_ev = ev.clone();
    let (jobs, scanned) = state
        .read(move |s| Ok(backfill_jobs(s, &scan_ev, from, to)?))
        .await?;
    if scanned > BACKFILL_CAP {
        return Err(ApiError::bad_request(format!(
            "more than {BACKFILL_CAP} {}s in this range; backfill a narrower fromTimestamp/toTimestamp range at a time",
            ev.target.as_str()
        )));
    }
    let matched = jobs.len();
    let mut chunks = jobs;
    while !chunks.is_empty() {
        let rest = chunks.split_off(chunks.len().min(ENQUEUE_CHUNK));
        state
            .store
            .writer()
            .submit(WriteOp::EvalEnqueue {
                jobs: chunks,
                cursor: None,
                requeue_failed: true,
            })
            .await?;
        chunks = rest;
    }
    state.evals.kick();
    Ok(Json(json!({"matched": matched, "scanned": scanned})))
}

/// The jobs a backfill would queue, and how many records it looked at (more than the cap means
/// the range is too wide and nothing is queued).
fn backfill_jobs(
    s: &Store,
    ev: &Evaluator,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<(Vec<EvalJob>, usize), crate::store::StoreError> {
    let now = Timestamp::now();
    let window = Window {
        skip: 0,
        limit: BACKFILL_CAP + 1,
    };
    let project = &ev.project_id;
    let job = |trace: &str, obs: Option<&str>| {
        let mut j = EvalJob::new(ev, trace, obs, now);
        j.due_at = now;
        j
    };
    let mut jobs = Vec::new();
    match ev.target {
        Target::Trace => {
            let q = TraceQuery {
                from,
                to,
                ..Default::default()
            };
            let page = s.list_traces(project, &q, window)?;
            for t in &page.items {
                if ev.matches_trace(t) && ev.samples(&target_key(&t.id, None)) {
                    jobs.push(job(&t.id, None));
                }
            }
            Ok((jobs, page.items.len()))
        }
        Target::Observation => {
            let kind: Option<ObservationType> = match ev.filter.types.as_slice() {
                [one] => Some(*one),
                _ => None,
            };
            let q = ObservationQuery {
                from,
                to,
                kind,
                ..Default::default()
            };
            let page = s.list_observations(project, &q, window)?;
            let mut traces: HashMap<String, Option<TraceRecord>> = HashMap::new();
            for o in &page.items {
                if !traces.contains_key(&o.trace_id) {
                    let t = s.trace(project, &o.trace_id)?;
                    traces.insert(o.trace_id.clone(), t);
                }
                let trace = traces.get(&o.trace_id).and_then(Option::as_ref);
                if ev.matches_observation(o, trace)
                    && ev.samples(&target_key(&o.trace_id, Some(&o.id)))
                {
                    jobs.push(job(&o.trace_id, Some(&o.id)));
                }
            }
            Ok((jobs, page.items.len()))
        }
    }
}
