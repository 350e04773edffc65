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
use tokio::sync::watch;
use tower_http::compression::CompressionLayer;

use crate::api::{self, ApiError, AppState};
use crate::routes::{Access, Route, Table, Verb};
use crate::store::StoreError;

pub use assets::{CSP, security_headers};
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

/// The dashboard: its routes and the middleware of its two access classes.
pub struct Dashboard {
    state: WebState,
}

impl Dashboard {
    pub fn new(app: AppState, live: Live) -> Dashboard {
        Dashboard {
            state: WebState {
                app,
                limiter: Arc::new(session::RateLimiter::default()),
                live,
                assets: Arc::new(assets::Table::build()),
            },
        }
    }

    /// `/`, `/project/...` deep links, `/assets/<version>/...` and `/api/ui/...`.
    pub fn routes(&self) -> Vec<Route> {
        use Access::{Anonymous, Session};
        use Verb::{Delete, Get, Post};
        // The Langfuse-shaped views (`/api/ui/traces`, ...) are listed beside their public routes
        // in `api::routes`; the session middleware gives them the project the session may read.
        let mut routes = Table::new(self.state.app.clone())
            .add(
                Get,
                "/api/ui/prompts/{name}/versions",
                Session,
                api::prompts::versions,
            )
            .into_routes();
        routes.extend(
            Table::new(self.state.clone())
                .add(Get, "/api/ui/me", Session, session::me)
                .add(Post, "/api/ui/logout", Session, session::logout)
                .add(Get, "/api/ui/overview", Session, overview::overview)
                .add(Get, "/api/ui/users", Session, overview::users)
                .add(Get, "/api/ui/keys", Session, data::keys)
                .add(Post, "/api/ui/keys", Session, data::create_key)
                .add(
                    Delete,
                    "/api/ui/keys/{public_key}",
                    Session,
                    data::revoke_key,
                )
                .add(Post, "/api/ui/projects", Session, data::create_project)
                .add(Get, "/api/ui/events", Session, data::events)
                .add(Get, "/", Anonymous, assets::index)
                .add(Get, "/project/{*rest}", Anonymous, assets::index)
                .add(Get, "/assets/{version}/{*path}", Anonymous, assets::asset)
                .add(Post, "/api/ui/login", Anonymous, session::login)
                .into_routes(),
        );
        routes
    }

    /// The middleware of a dashboard class: `Session` routes need a live session (and CSRF
    /// proof on state changes) and are never cached; every dashboard response carries the
    /// security headers (CSP included) and may be compressed.
    pub fn layer(&self, access: Access, routes: Router) -> Router {
        let routes = if access == Access::Session {
            routes
                .layer(middleware::from_fn_with_state(
                    self.state.clone(),
                    session::require,
                ))
                .layer(middleware::map_response(no_store))
        } else {
            routes
        };
        // DefaultPredicate skips `text/event-stream`, so the live stream is never buffered.
        routes
            .layer(CompressionLayer::new())
            .layer(middleware::map_response(assets::security_headers))
    }
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
