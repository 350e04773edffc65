//! The server as a function of (listener, config, shutdown signal): opens the store, applies the
//! bootstrap, starts the search indexer, the retention task and the configured forward, serves
//! the API until the signal, then stops those tasks, drains the writer and stops the indexer.
//! The binary and the tests call the same `run`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use crate::api::{self, AppState};
use crate::auth::{self, FirstRun, KeyCache};
use crate::config::{Bootstrap, Config};
use crate::cost::{LivePrices, PriceBook};
use crate::routes::{self, Access, Route};
use crate::search::Search;
use crate::store::Store;
use crate::web;

/// How long shutdown waits for retention and forward to reach a stopping point.
const TASK_GRACE: Duration = Duration::from_secs(5);

/// Opens the data directory: price table, store, bootstrap. Returns the state to serve and what
/// a first run created (for the one-time banner).
pub fn open(config: &Config, init: &Bootstrap) -> anyhow::Result<(AppState, Option<FirstRun>)> {
    open_with_faults(config, init, None)
}

/// `open` with storage faults injectable (tests of disk-full and failed-fsync behaviour).
pub fn open_with_faults(
    config: &Config,
    init: &Bootstrap,
    faults: Option<Arc<crate::store::faults::FaultPlan>>,
) -> anyhow::Result<(AppState, Option<FirstRun>)> {
    use anyhow::Context;
    let builtin = PriceBook::builtin().context("loading the built-in model price table")?;
    let prices = Arc::new(LivePrices::new(&builtin, config.models.clone()));
    let store = Store::open_with_faults(
        &config.data_dir,
        config.queue_capacity,
        prices.clone(),
        faults,
    )
    .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let first_run = auth::bootstrap(&store, init, &config.data_dir)
        .context("bootstrapping projects and keys")?;
    let keys = KeyCache::load(&store).context("loading API keys")?;
    let search = Search::start(&config.data_dir, store.clone()).with_context(|| {
        format!(
            "opening the search index in {}",
            config.data_dir.join(crate::search::DIR).display()
        )
    })?;
    let evals = crate::eval::Evals::start(store.clone(), &config.judge)
        .map_err(|e| anyhow::anyhow!("starting the evaluation runner: {e}"))?;
    Ok((
        AppState {
            telemetry: crate::telemetry::Telemetry::new(store.clone(), search.clone()),
            evals,
            store,
            prices,
            search,
            keys,
            config: Arc::new(config.clone()),
            started: Instant::now(),
        },
        first_run,
    ))
}

/// The whole HTTP surface for tests that never shut down gracefully.
pub fn app(state: AppState) -> Router {
    app_with(state, web::Live::default())
}

/// Every route the server answers: the router is built from this list and nothing else.
pub fn routes(state: &AppState) -> Vec<Route> {
    table(
        state,
        &web::Dashboard::new(state.clone(), web::Live::default()),
    )
}

fn table(state: &AppState, dashboard: &web::Dashboard) -> Vec<Route> {
    let mut all = api::routes(state);
    all.extend(dashboard.routes());
    all
}

/// The public API and the dashboard. `live` ends the dashboard's long-lived streams on shutdown.
pub fn app_with(state: AppState, live: web::Live) -> Router {
    // Langfuse reflects any origin on its public API (no credentials).
    let cors = CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::mirror_request())
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request());
    let track =
        axum::middleware::from_fn_with_state(state.telemetry.clone(), crate::telemetry::track);
    let dashboard = web::Dashboard::new(state.clone(), live);
    // CORS applies to the public API only: the dashboard is same-origin by design.
    routes::router(table(&state, &dashboard), |access, group| match access {
        Access::Public | Access::ApiBasic | Access::ApiBearerOrBasic => {
            group.layer(track.clone()).layer(cors.clone())
        }
        Access::Session | Access::Anonymous => dashboard.layer(access, group),
    })
    // A browser may land on any unknown path: its 404 carries the dashboard's headers too.
    .fallback_service(
        tower::ServiceBuilder::new()
            .layer(track)
            .layer(axum::middleware::map_response(web::security_headers))
            .service(axum::routing::any(api::not_found)),
    )
    .layer(TraceLayer::new_for_http())
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish and
/// commits everything queued before returning.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = state.store.clone();
    let search = state.search.clone();
    // Off the runtime: the forward's blocking HTTP client cannot be built on it.
    let tasks = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || start_tasks(&state)).await??
    };
    let evals = state.evals.clone();
    let live = web::Live::default();
    let stop = live.clone();
    let shutdown = async move {
        shutdown.await;
        stop.stop();
    };
    let limits = crate::serve::Limits {
        header_read_timeout: state.config.header_read_timeout,
        body_read_timeout: state.config.body_read_timeout,
    };
    crate::serve::serve(listener, app_with(state, live), limits, shutdown).await;
    // In-flight requests have been answered; flush whatever the writer still holds, then stop
    // the indexer (what it has not committed is redone from the change log next start).
    // Judge calls that finish in the grace period still commit; the rest run again next start.
    tokio::task::spawn_blocking(move || {
        evals.shutdown();
        for task in tasks {
            task.stop(TASK_GRACE);
        }
        store.shutdown();
        search.shutdown();
    })
    .await?;
    Ok(())
}

/// Starts retention (when configured) and the configured forward. A forward that cannot start
/// (bad url, no such project) stops the server from starting: it was asked for.
fn start_tasks(state: &AppState) -> anyhow::Result<Vec<crate::background::Task>> {
    use anyhow::Context;
    let mut tasks = Vec::new();
    let retention = crate::retention::Retention::new(
        state.config.retention.clone(),
        state.store.clone(),
        state.search.clone(),
        state.telemetry.retention_stats(),
    );
    tasks.extend(retention.start().context("starting the retention task")?);
    if let Some(f) = &state.config.forward {
        tasks.push(
            crate::forward::tee::start(
                f,
                state.store.clone(),
                &state.config.data_dir,
                state.telemetry.forward_stats(),
            )
            .context("starting [forward]")?,
        );
    }
    Ok(tasks)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining writes");
}
