//! Langfuse's public HTTP API (`/api/public/...`): ingestion endpoints and read endpoints with
//! Langfuse's paths, parameters and JSON shapes, so Langfuse's own clients parse our answers.
//!
//! Owns: routing, request decoding (size limits, gzip), authentication of each request, and the
//! mapping of records to Langfuse's wire shapes. Must not touch redb directly: every read goes
//! through `Store` queries on the blocking pool, every write through the store's writer. Text
//! search (`q`, `/api/search`) goes through `Search`, also on the blocking pool.

mod body;
mod error;
pub(crate) mod evaluators;
mod export;
pub(crate) mod ingest;
pub(crate) mod metrics;
pub(crate) mod models;
pub(crate) mod params;
pub(crate) mod prompts;
pub(crate) mod read;
pub(crate) mod score_configs;
pub(crate) mod search;
pub(crate) mod shape;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, patch, post};

pub use error::ApiError;

use crate::auth::{AccessLevel, KeyCache, Principal};
use crate::config::Config;
use crate::search::Search;
use crate::store::Store;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The prices the writer uses: the models endpoints list and validate against these.
    pub prices: Arc<crate::cost::LivePrices>,
    /// The full-text index; follows the store on its own thread.
    pub search: Search,
    /// The evaluation runner (LLM-as-a-judge); API writes wake it.
    pub evals: crate::eval::Evals,
    pub telemetry: crate::telemetry::Telemetry,
    pub keys: KeyCache,
    pub config: Arc<Config>,
    pub started: Instant,
}

impl AppState {
    /// Runs a store read on the blocking pool: redb reads touch the disk.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
    }
}

/// A principal established by a dashboard session (see `web`), placed in request extensions.
#[derive(Clone)]
pub struct SessionPrincipal(pub Principal);

/// A caller with full (secret key) access to its project.
pub struct Project(pub Principal);
/// A caller with at least public-key access (may only write scores).
pub struct AnyKey(pub Principal);

fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    // The dashboard's `/api/ui` routes authenticate a session cookie in their own middleware and
    // hand the read handlers here the project it may see. Only server code can set extensions,
    // and the public routes never run that middleware.
    if let Some(p) = parts.extensions.get::<SessionPrincipal>() {
        return Ok(p.0.clone());
    }
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.keys.authenticate(header).map_err(ApiError::from)
}

impl FromRequestParts<AppState> for Project {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = principal(parts, state)?;
        if p.access != AccessLevel::Full {
            return Err(ApiError::from(crate::auth::AuthError::Forbidden));
        }
        Ok(Project(p))
    }
}

impl FromRequestParts<AppState> for AnyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        principal(parts, state).map(AnyKey)
    }
}

/// The `/api/public` routes and the OTLP default path.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/public/health", get(read::health))
        .route("/api/public/ready", get(read::ready))
        .route("/api/public/projects", get(read::projects))
        .route("/api/public/ingestion", post(ingest::batch))
        .route("/api/public/export", get(export::export))
        .route("/api/public/otel/v1/traces", post(ingest::otlp))
        .route("/v1/traces", post(ingest::otlp))
        .route(
            "/api/public/traces",
            get(read::list_traces).delete(ingest::delete_traces),
        )
        .route(
            "/api/public/traces/{id}",
            get(read::get_trace).delete(ingest::delete_trace),
        )
        .route("/api/public/observations", get(read::list_observations))
        .route("/api/public/observations/{id}", get(read::get_observation))
        .route(
            "/api/public/v2/observations",
            get(read::list_observations_v2),
        )
        .route("/api/public/sessions", get(read::list_sessions))
        .route("/api/public/sessions/{id}", get(read::get_session))
        .route(
            "/api/public/scores",
            post(ingest::scores).get(read::list_scores_v1),
        )
        .route(
            "/api/public/scores/{id}",
            get(read::get_score).delete(ingest::delete_score),
        )
        .route("/api/public/v2/scores", get(read::list_scores_v2))
        .route("/api/public/v2/scores/{id}", get(read::get_score))
        .route("/api/public/v3/scores", get(read::list_scores_v3))
        .route("/api/public/metrics", get(metrics::metrics_v1))
        .route("/api/public/v2/metrics", get(metrics::metrics_v2))
        .route("/api/public/metrics/daily", get(metrics::daily))
        .route("/api/public/metrics/unpriced", get(metrics::unpriced))
        .route("/api/public/models", get(models::list).post(models::create))
        .route(
            "/api/public/models/{id}",
            get(models::get).delete(models::delete),
        )
        .route(
            "/api/public/v2/prompts",
            get(prompts::list).post(prompts::create),
        )
        .route(
            "/api/public/v2/prompts/{name}",
            get(prompts::get).delete(prompts::delete),
        )
        .route(
            "/api/public/v2/prompts/{name}/versions/{version}",
            patch(prompts::relabel),
        )
        .route(
            "/api/public/prompts",
            get(prompts::legacy_get).post(prompts::legacy_create),
        )
        .route(
            "/api/public/score-configs",
            get(score_configs::list).post(score_configs::create),
        )
        .route(
            "/api/public/score-configs/{id}",
            get(score_configs::get).patch(score_configs::patch),
        )
        .route(
            "/api/evaluators",
            get(evaluators::list).post(evaluators::create),
        )
        .route(
            "/api/evaluators/{id}",
            get(evaluators::get)
                .patch(evaluators::patch)
                .delete(evaluators::delete),
        )
        .route("/api/evaluators/{id}/backfill", post(evaluators::backfill))
        .route("/api/evaluators/{id}/jobs", get(evaluators::jobs))
        .route("/api/search", get(search::search))
        .fallback(error::not_found)
        .with_state(state)
}
