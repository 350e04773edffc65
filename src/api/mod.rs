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

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use error::{ApiError, not_found};

use crate::routes::{Access, Route, Table, Verb};

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
    /// Runs a store read on the blocking pool (redb reads touch the disk), every read of it on
    /// one read transaction (`Store::pinned`): an answer is one state of the store.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.pinned();
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

/// The `/api/public` routes (with the dashboard's `/api/ui` views of them), the OTLP default
/// path, `/api/search` and `/metrics`. To add a route, add a line here (or to
/// `web::Dashboard::routes`): see ARCHITECTURE.md, "Routes".
pub fn routes(state: &AppState) -> Vec<Route> {
    use Access::{ApiBasic, ApiBearerOrBasic, Public, Session};
    use Verb::{Delete, Get, Patch, Post};
    let mut routes = Table::new(state.clone())
        .add(Get, "/api/public/health", Public, read::health)
        .add(Get, "/api/public/ready", Public, read::ready)
        .add(Get, "/api/public/projects", ApiBasic, read::projects)
        .add(
            Post,
            "/api/public/ingestion",
            ApiBearerOrBasic,
            ingest::batch,
        )
        .add(Get, "/api/public/export", ApiBasic, export::export)
        .add(Post, "/api/public/otel/v1/traces", ApiBasic, ingest::otlp)
        .add(Post, "/v1/traces", ApiBasic, ingest::otlp)
        .add(Get, "/api/public/traces", ApiBasic, read::list_traces)
        .also("/api/ui/traces", Session)
        .add(
            Delete,
            "/api/public/traces",
            ApiBasic,
            ingest::delete_traces,
        )
        .add(Get, "/api/public/traces/{id}", ApiBasic, read::get_trace)
        .also("/api/ui/traces/{id}", Session)
        .add(
            Delete,
            "/api/public/traces/{id}",
            ApiBasic,
            ingest::delete_trace,
        )
        .add(
            Get,
            "/api/public/observations",
            ApiBasic,
            read::list_observations,
        )
        .add(
            Get,
            "/api/public/observations/{id}",
            ApiBasic,
            read::get_observation,
        )
        .also("/api/ui/observations/{id}", Session)
        .add(
            Get,
            "/api/public/v2/observations",
            ApiBasic,
            read::list_observations_v2,
        )
        .add(Get, "/api/public/sessions", ApiBasic, read::list_sessions)
        .also("/api/ui/sessions", Session)
        .add(
            Get,
            "/api/public/sessions/{id}",
            ApiBasic,
            read::get_session,
        )
        .also("/api/ui/sessions/{id}", Session)
        .add(Post, "/api/public/scores", ApiBearerOrBasic, ingest::scores)
        .also("/api/ui/scores", Session)
        .add(Get, "/api/public/scores", ApiBasic, read::list_scores_v1)
        .add(Get, "/api/public/scores/{id}", ApiBasic, read::get_score)
        .add(
            Delete,
            "/api/public/scores/{id}",
            ApiBasic,
            ingest::delete_score,
        )
        .add(Get, "/api/public/v2/scores", ApiBasic, read::list_scores_v2)
        .also("/api/ui/scores", Session)
        .add(Get, "/api/public/v2/scores/{id}", ApiBasic, read::get_score)
        .add(Get, "/api/public/v3/scores", ApiBasic, read::list_scores_v3)
        .add(Get, "/api/public/metrics", ApiBasic, metrics::metrics_v1)
        .add(Get, "/api/public/v2/metrics", ApiBasic, metrics::metrics_v2)
        .add(Get, "/api/public/metrics/daily", ApiBasic, metrics::daily)
        .also("/api/ui/metrics/daily", Session)
        .add(
            Get,
            "/api/public/metrics/unpriced",
            ApiBasic,
            metrics::unpriced,
        )
        .also("/api/ui/metrics/unpriced", Session)
        .add(Get, "/api/public/models", ApiBasic, models::list)
        .also("/api/ui/models", Session)
        .add(Post, "/api/public/models", ApiBasic, models::create)
        .also("/api/ui/models", Session)
        .add(Get, "/api/public/models/{id}", ApiBasic, models::get)
        .add(Delete, "/api/public/models/{id}", ApiBasic, models::delete)
        .also("/api/ui/models/{id}", Session)
        .add(Get, "/api/public/v2/prompts", ApiBasic, prompts::list)
        .also("/api/ui/prompts", Session)
        .add(Post, "/api/public/v2/prompts", ApiBasic, prompts::create)
        .add(Get, "/api/public/v2/prompts/{name}", ApiBasic, prompts::get)
        .also("/api/ui/prompts/{name}", Session)
        .add(
            Delete,
            "/api/public/v2/prompts/{name}",
            ApiBasic,
            prompts::delete,
        )
        .add(
            Patch,
            "/api/public/v2/prompts/{name}/versions/{version}",
            ApiBasic,
            prompts::relabel,
        )
        .add(Get, "/api/public/prompts", ApiBasic, prompts::legacy_get)
        .add(
            Post,
            "/api/public/prompts",
            ApiBasic,
            prompts::legacy_create,
        )
        .add(
            Get,
            "/api/public/score-configs",
            ApiBasic,
            score_configs::list,
        )
        .also("/api/ui/score-configs", Session)
        .add(
            Post,
            "/api/public/score-configs",
            ApiBasic,
            score_configs::create,
        )
        .also("/api/ui/score-configs", Session)
        .add(
            Get,
            "/api/public/score-configs/{id}",
            ApiBasic,
            score_configs::get,
        )
        .also("/api/ui/score-configs/{id}", Session)
        .add(
            Patch,
            "/api/public/score-configs/{id}",
            ApiBasic,
            score_configs::patch,
        )
        .also("/api/ui/score-configs/{id}", Session)
        .add(Get, "/api/evaluators", ApiBasic, evaluators::list)
        .also("/api/ui/evaluators", Session)
        .add(Post, "/api/evaluators", ApiBasic, evaluators::create)
        .also("/api/ui/evaluators", Session)
        .add(Get, "/api/evaluators/{id}", ApiBasic, evaluators::get)
        .also("/api/ui/evaluators/{id}", Session)
        .add(Patch, "/api/evaluators/{id}", ApiBasic, evaluators::patch)
        .also("/api/ui/evaluators/{id}", Session)
        .add(Delete, "/api/evaluators/{id}", ApiBasic, evaluators::delete)
        .also("/api/ui/evaluators/{id}", Session)
        .add(
            Post,
            "/api/evaluators/{id}/backfill",
            ApiBasic,
            evaluators::backfill,
        )
        .also("/api/ui/evaluators/{id}/backfill", Session)
        .add(Get, "/api/evaluators/{id}/jobs", ApiBasic, evaluators::jobs)
        .also("/api/ui/evaluators/{id}/jobs", Session)
        .add(Get, "/api/search", ApiBasic, search::search)
        .into_routes();
    routes.extend(
        Table::new(state.telemetry.clone())
            .add(Get, "/metrics", Public, crate::telemetry::metrics)
            .into_routes(),
    );
    routes
}
