//! `/api/public/score-configs`: list, create, get, patch (archive) a project's score configs.
//!
//! Reads answer from the writer's in-memory config set (the one scores are checked against);
//! writes go through the writer, which swaps that set before the request is answered, so a score
//! sent after a config change is checked against the change.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use super::body::JsonBody;
use super::params::Params;
use super::{ApiError, AppState, Project};
use crate::score_config::{ConfigError, ScoreConfig};
use crate::store::WriteOp;
use crate::time::Timestamp;

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::bad_request(e.0)
    }
}

fn missing(id: &str) -> ApiError {
    ApiError::missing("Score config", id)
}

pub async fn list(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let set = state.store.writer().score_configs();
    let all = set.list(&p.project_id);
    Ok(Json(paging.page_of(&all, |c| c.to_json())))
}

pub async fn get(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let set = state.store.writer().score_configs();
    set.get(&p.project_id, &id)
        .map(|c| Json(c.to_json()))
        .ok_or_else(|| missing(&id))
}

pub async fn create(
    State(state): State<AppState>,
    Project(p): Project,
    JsonBody(value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let config = ScoreConfig::create(&value, &p.project_id, Timestamp::now())?;
    put(&state, config).await
}

pub async fn patch(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
    JsonBody(value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let set = state.store.writer().score_configs();
    let old = set.get(&p.project_id, &id).ok_or_else(|| missing(&id))?;
    let config = old.patched(&value, Timestamp::now())?;
    put(&state, config).await
}

async fn put(state: &AppState, config: ScoreConfig) -> Result<Json<Value>, ApiError> {
    let response = config.to_json();
    state
        .store
        .writer()
        .submit(WriteOp::PutScoreConfig(Box::new(config)))
        .await?;
    Ok(Json(response))
}
