//! The one table of HTTP routes: method, path pattern, who may call it, and the handler.
//!
//! Owns: the access classes and the construction of the router from the table, so a route can
//! only be served by being listed here with its class. The class decides which middleware a
//! route gets (the caller maps each class to its layers) and what `tests/auth_matrix.rs`
//! expects of it for every kind of credential. Must not: decide what a handler does with a
//! principal — handlers still ask for the access level they need through `api`'s extractors.

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Anyone, no credentials: liveness, readiness, Prometheus metrics.
    Public,
    /// Basic auth with a project's public and secret key; a Bearer public key is refused (403).
    ApiBasic,
    /// Basic auth, or a Bearer public key alone (Langfuse lets browsers write scores with it).
    ApiBearerOrBasic,
    /// A live dashboard session cookie (`/api/ui/*`); API keys do not open these.
    Session,
    /// Anyone: the dashboard page, its assets, the login form.
    Anonymous,
}

/// The methods routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub const ALL: [Verb; 5] = [Verb::Get, Verb::Post, Verb::Put, Verb::Patch, Verb::Delete];

    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One entry: `verb path` answered by `handler` for callers of class `access`.
pub struct Route {
    pub verb: Verb,
    /// An axum path pattern (`/api/public/traces/{id}`).
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter,
}

/// Collects the routes whose handlers share one state type.
pub struct Table<S> {
    state: S,
    routes: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Table<S> {
    pub fn new(state: S) -> Self {
        Table {
            state,
            routes: Vec::new(),
        }
    }

    /// Adds `verb path` → `handler`, open to callers of class `access`.
    pub fn add<H, T>(mut self, verb: Verb, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.routes.push(Route {
            verb,
            path,
            access,
            handler: on(verb.filter(), handler).with_state(self.state.clone()),
        });
        self
    }

    /// Serves the route added last also at `path`, for callers of class `access`: the
    /// dashboard's `/api/ui/*` views of public endpoints are the same handlers behind a session.
    pub fn also(mut self, path: &'static str, access: Access) -> Self {
        if let Some(last) = self.routes.last() {
            let route = Route {
                verb: last.verb,
                path,
                access,
                handler: last.handler.clone(),
            };
            self.routes.push(route);
        }
        self
    }

    pub fn into_routes(self) -> Vec<Route> {
        self.routes
    }
}

/// The router serving exactly `routes`. `layer` gives each access class its middleware (it is
/// called once per class, with a router of that class's routes); routes of different classes
/// may share a path (`GET` for one class, `POST` for another). Panics, when the router is
/// built at start-up, if two entries name the same method and path.
pub fn router(routes: Vec<Route>, mut layer: impl FnMut(Access, Router) -> Router) -> Router {
    let mut groups: BTreeMap<Access, Router> = BTreeMap::new();
    for r in routes {
        let group = groups.remove(&r.access).unwrap_or_default();
        groups.insert(r.access, group.route(r.path, r.handler));
    }
    groups
        .into_iter()
        .fold(Router::new(), |all, (access, group)| {
            all.merge(layer(access, group))
        })
}
