//! Metrics endpoints: Langfuse's daily metrics, its metrics query API (v1 and v2), and
//! Sightline's list of unpriced models. The answers come from `analytics`; this module only
//! reads parameters and shapes JSON.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, AppState, Project};
use crate::analytics::agg::usd;
use crate::analytics::daily::{self, DailyQuery};
use crate::analytics::query::{self, QueryError, Version};
use crate::time::Timestamp;

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Store(s) => s.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

fn daily_query(p: &Params) -> Result<DailyQuery, ApiError> {
    Ok(DailyQuery {
        trace_name: p.str("traceName"),
        user_id: p.str("userId"),
        tags: p.all("tags"),
        environments: p.all("environment"),
        from: p.time("fromTimestamp")?,
        to: p.time("toTimestamp")?,
    })
}

fn model_json(model: &str) -> Value {
    if model.is_empty() {
        Value::Null
    } else {
        json!(model)
    }
}

/// `GET /api/public/metrics/daily`: days newest first, paginated by day. `countUnpriced`
/// (Sightline's) counts generations whose model matched no price.
pub async fn daily(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let q = daily_query(&params)?;
    state
        .read(move |s| {
            let days = daily::daily(s, &p.project_id, &q)?;
            let data: Vec<Value> = days
                .iter()
                .skip(paging.skip())
                .take(paging.limit)
                .map(|d| {
                    let usage: Vec<Value> = d
                        .models
                        .iter()
                        .map(|m| {
                            json!({
                                "model": model_json(&m.model),
                                "inputUsage": m.agg.usage_key("input"),
                                "outputUsage": m.agg.usage_key("output"),
                                "totalUsage": m.agg.usage_key("total"),
                                "countObservations": m.agg.observations,
                                "countTraces": m.agg.traces,
                                "totalCost": usd(m.agg.total_cost),
                                "countUnpriced": m.agg.unpriced,
                            })
                        })
                        .collect();
                    json!({
                        "date": Timestamp::from_micros(d.day).date(),
                        "countTraces": d.traces,
                        "countObservations": d.observations(),
                        "totalCost": usd(d.total_cost()),
                        "countUnpriced": d.unpriced(),
                        "usage": usage,
                    })
                })
                .collect();
            Ok(Json(paging.answer(data, days.len() as u64)))
        })
        .await
}

/// `GET /api/public/metrics/unpriced` (Sightline): models seen in the range that matched no
/// price, with how many generations and the days they were seen — what to add a model for.
pub async fn unpriced(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let q = daily_query(&params)?;
    state
        .read(move |s| {
            let days = daily::daily(s, &p.project_id, &q)?;
            // model → (count, first day, last day); days come newest first.
            let mut models: std::collections::BTreeMap<String, (i64, i64, i64)> =
                Default::default();
            for d in &days {
                for m in d.models.iter().filter(|m| m.agg.unpriced > 0) {
                    let e = models.entry(m.model.clone()).or_insert((0, d.day, d.day));
                    e.0 += m.agg.unpriced;
                    e.1 = e.1.min(d.day);
                    e.2 = e.2.max(d.day);
                }
            }
            let data: Vec<Value> = models
                .into_iter()
                .map(|(model, (n, first, last))| {
                    json!({
                        "model": model_json(&model),
                        "countObservations": n,
                        "firstSeen": Timestamp::from_micros(first).date(),
                        "lastSeen": Timestamp::from_micros(last).date(),
                    })
                })
                .collect();
            Ok(Json(json!({"data": data})))
        })
        .await
}

async fn metrics_query(
    state: AppState,
    project: String,
    params: Params,
    version: Version,
) -> Result<Json<Value>, ApiError> {
    let raw = params
        .str("query")
        .ok_or_else(|| ApiError::bad_request("query is required: a JSON metrics query"))?;
    let q = query::parse(&raw, version)?;
    state
        .read(move |s| {
            let data = query::run(s, &project, &q)?;
            Ok(Json(json!({"data": data})))
        })
        .await
}

/// `GET /api/public/metrics` (v1: also the traces view).
pub async fn metrics_v1(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    metrics_query(state, p.project_id, params, Version::V1).await
}

/// `GET /api/public/v2/metrics`.
pub async fn metrics_v2(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    metrics_query(state, p.project_id, params, Version::V2).await
}
