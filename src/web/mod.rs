//! The dashboard: the embedded single-page UI, its login sessions, and the `/api/ui` JSON
//! endpoints it (and any script holding a session cookie) reads.
//!
//! Owns: dashboard routes, the asset table (files embedded in the binary, served by exact path,
//! never from the filesystem), security headers, login sessions (cookie token, hash stored via
//! the store's writer), login rate limiting, CSRF checks, and the aggregates the overview and
//! users views show. Must not: write records itself (traces, observations) — manual scores,
//! score configs and evaluators are written by the same `api` handlers scripts use; open redb
//! transactions itself; build Langfuse JSON shapes of its own — trace, observation, session,
//! score and prompt views reuse `api`'s handlers.

mod assets;
mod data;
mod overview;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::watch;
use tower_http::compression::CompressionLayer;

use crate::api::{self, ApiError, AppState};
use crate::store::StoreError;

pub use assets::CSP;
pub use session::{COOKIE_NAME, CSRF_HEADER, PROJECT_HEADER};

/// Tells long-lived responses (the live-update stream) that the server is shutting down, so
/// graceful shutdown is not held open by a browser tab.
#[derive(Clone)]
pub struct Live {
    stop: Arc<watch::Sender<bool>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            stop: Arc::new(watch::channel(false).0),
        }
    }
}

impl Live {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// State of the dashboard's own handlers.
#[derive(Clone)]
pub struct WebState {
    app: AppState,
    limiter: Arc<session::RateLimiter>,
    live: Live,
    assets: Arc<assets::Table>,
}

/// What can go wrong in a dashboard request; mapped to status + JSON like the public API.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not logged in")]
    NotLoggedIn,
    #[error("wrong email or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {0} seconds")]
    RateLimited(u64),
    #[error("missing or cross-site request header; send {CSRF_HEADER} from the same origin")]
    Csrf,
    #[error("no access to project {0:?}")]
    NoProject(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError::Api(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let msg = self.to_string();
        let (status, name) = match self {
            WebError::Api(e) => return e.into_response(),
            WebError::Store(e) => return ApiError::from(e).into_response(),
            WebError::NotLoggedIn | WebError::BadCredentials => {
                (StatusCode::UNAUTHORIZED, "UnauthorizedError")
            }
            WebError::RateLimited(secs) => {
                let mut r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, msg, "RateLimitError")
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            WebError::Csrf | WebError::NoProject(_) => (StatusCode::FORBIDDEN, "ForbiddenError"),
            WebError::BadRequest(_) => (StatusCode::BAD_REQUEST, "InvalidRequestError"),
        };
        ApiError::new(status, msg, name).into_response()
    }
}

/// The dashboard routes: `/`, `/project/...` deep links, `/assets/<version>/...`, `/api/ui/...`.
pub fn router(app: AppState, live: Live) -> Router {
    let state = WebState {
        app: app.clone(),
        limiter: Arc::new(session::RateLimiter::default()),
        live,
        assets: Arc::new(assets::Table::build()),
    };
    // Langfuse-shaped views reuse the public API's handlers; the session middleware below gives
    // them the project the session may read.
    let shaped = Router::new()
        .route("/api/ui/traces", get(api::read::list_traces))
        .route("/api/ui/traces/{id}", get(api::read::get_trace))
        .route("/api/ui/observations/{id}", get(api::read::get_observation))
        .route("/api/ui/sessions", get(api::read::list_sessions))
        .route("/api/ui/sessions/{id}", get(api::read::get_session))
        .route(
            "/api/ui/scores",
            get(api::read::list_scores_v2).post(api::ingest::scores),
        )
        .route(
            "/api/ui/score-configs",
            get(api::score_configs::list).post(api::score_configs::create),
        )
        .route(
            "/api/ui/score-configs/{id}",
            get(api::score_configs::get).patch(api::score_configs::patch),
        )
        .route(
            "/api/ui/evaluators",
            get(api::evaluators::list).post(api::evaluators::create),
        )
        .route(
            "/api/ui/evaluators/{id}",
            get(api::evaluators::get)
                .patch(api::evaluators::patch)
                .delete(api::evaluators::delete),
        )
        .route(
            "/api/ui/evaluators/{id}/backfill",
            post(api::evaluators::backfill),
        )
        .route("/api/ui/evaluators/{id}/jobs", get(api::evaluators::jobs))
        .route("/api/ui/prompts", get(api::prompts::list))
        .route("/api/ui/prompts/{name}", get(api::prompts::get))
        .route(
            "/api/ui/prompts/{name}/versions",
            get(api::prompts::versions),
        )
        .route("/api/ui/metrics/daily", get(api::metrics::daily))
        .route("/api/ui/metrics/unpriced", get(api::metrics::unpriced))
        .route(
            "/api/ui/models",
            get(api::models::list).post(api::models::create),
        )
        .route("/api/ui/models/{id}", delete(api::models::delete))
        .with_state(app);
    let own = Router::new()
        .route("/api/ui/me", get(session::me))
        .route("/api/ui/logout", post(session::logout))
        .route("/api/ui/overview", get(overview::overview))
        .route("/api/ui/users", get(overview::users))
        .route("/api/ui/keys", get(data::keys).post(data::create_key))
        .route("/api/ui/keys/{public_key}", delete(data::revoke_key))
        .route("/api/ui/projects", post(data::create_project))
        .route("/api/ui/events", get(data::events))
        .with_state(state.clone());
    let authenticated = shaped
        .merge(own)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session::require,
        ))
        .layer(middleware::map_response(no_store));
    let open = Router::new()
        .route("/", get(assets::index))
        .route("/project/{*rest}", get(assets::index))
        .route("/assets/{version}/{*path}", get(assets::asset))
        .route("/api/ui/login", post(session::login))
        .with_state(state);
    // DefaultPredicate skips `text/event-stream`, so the live stream is never buffered.
    authenticated
        .merge(open)
        .layer(CompressionLayer::new())
        .layer(middleware::map_response(assets::security_headers))
}

/// Dashboard JSON is private to the logged-in user: never cached by the browser or a proxy.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl WebState {
    async fn read<T, F>(&self, f: F) -> Result<T, WebError>
    where
        F: FnOnce(&crate::store::Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.app.read(move |s| Ok(f(s)?)).await?)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
