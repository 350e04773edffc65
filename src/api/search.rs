//! Full-text search over HTTP: the `q` parameter of the trace and observation lists, and
//! `GET /api/search` for the dashboard. Every caller goes through `Search::search`; this file
//! only maps parameters in and hits (with HTML-escaped highlights) out.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::params::Params;
use super::{ApiError, AppState, Project};
use crate::record::ObservationRecord;
use crate::search::{
    Highlight, Hit, HitKind, MAX_CANDIDATES, Scope, SearchOrder, SearchRequest, SearchResults,
};
use crate::store::{Io, Store, Window};

/// The search part of a list request: `q` and whether `orderBy=relevance` was asked for.
pub struct TextQuery {
    pub q: String,
    pub relevance: bool,
}

impl TextQuery {
    /// `q` from the query string; `None` without one. `orderBy=relevance` needs `q`.
    pub fn from_params(p: &Params) -> Result<Option<TextQuery>, ApiError> {
        let relevance = p.str("orderBy").as_deref() == Some("relevance");
        match p.str("q").filter(|q| !q.trim().is_empty()) {
            Some(q) => Ok(Some(TextQuery { q, relevance })),
            None if relevance => Err(ApiError::bad_request(
                "orderBy=relevance needs a search query in q",
            )),
            None => Ok(None),
        }
    }

    /// The search behind a list endpoint: every candidate, for the store to filter and page.
    /// Callers add what the index can apply itself (time window, filters, or one counted page).
    pub fn request(&self, project: &str, scope: Scope, newest_first: bool) -> SearchRequest {
        let order = if self.relevance {
            SearchOrder::Relevance
        } else if newest_first {
            SearchOrder::Newest
        } else {
            SearchOrder::Oldest
        };
        SearchRequest {
            project: project.to_string(),
            q: self.q.clone(),
            scope,
            order,
            from: None,
            to: None,
            filters: Vec::new(),
            offset: 0,
            limit: MAX_CANDIDATES,
            count: false,
        }
    }
}

/// Narrows `req` to one page, which the index answers and counts on its own: only for queries
/// whose every filter the index applies.
pub fn one_page(req: &mut SearchRequest, page: Window) {
    req.offset = page.skip;
    req.limit = page.limit;
    req.count = true;
}

/// Highlights as JSON: `[{"field", "snippet", "observationId"?}]`.
fn highlights_json(highlights: Vec<Highlight>, observation: Option<&str>) -> Value {
    highlights
        .into_iter()
        .map(|h| {
            let mut v = json!({"field": h.field.as_str(), "snippet": h.html});
            if let Some(o) = observation {
                v["observationId"] = json!(o);
            }
            v
        })
        .collect()
}

/// The hit that made each trace match, by trace id.
pub fn hits_by_trace(results: &SearchResults) -> HashMap<&str, &Hit> {
    results.by_trace().into_iter().collect()
}

/// `searchHighlights` of a trace item: snippets of the trace or of the observation that matched.
pub fn trace_highlights(
    results: &SearchResults,
    by_trace: &HashMap<&str, &Hit>,
    store: &Store,
    project: &str,
    trace_id: &str,
) -> Result<Value, ApiError> {
    let Some(hit) = by_trace.get(trace_id) else {
        return Ok(json!([]));
    };
    let observation = (hit.kind == HitKind::Observation).then_some(hit.id.as_str());
    Ok(highlights_json(
        results.highlights(store, project, hit)?,
        observation,
    ))
}

/// `searchHighlights` of an observation item whose record and payload are in hand.
pub fn observation_highlights_of(results: &SearchResults, o: &ObservationRecord, io: &Io) -> Value {
    highlights_json(results.observation_highlights(o, io), None)
}

/// `searchHighlights` of an observation item, read from the store.
pub fn observation_highlights(
    results: &SearchResults,
    store: &Store,
    project: &str,
    observation_id: &str,
    trace_id: &str,
) -> Result<Value, ApiError> {
    let hit = Hit {
        kind: HitKind::Observation,
        id: observation_id.to_string(),
        trace_id: trace_id.to_string(),
        score: None,
    };
    Ok(highlights_json(
        results.highlights(store, project, &hit)?,
        None,
    ))
}

/// `GET /api/search?q=`: hits (traces and observations) with snippets, for the dashboard.
///
/// Parameters: `q` (required), `scope` = `all` | `traces` | `observations`, `orderBy` =
/// `timestamp.desc` (default) | `timestamp.asc` | `relevance`, `limit` 1..=100 (20),
/// `fromTimestamp`/`toTimestamp` on the document time.
pub async fn search(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let q = params
        .str("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("q is required: the text to search for"))?;
    let scope = match params.str("scope").as_deref() {
        None | Some("all") => Scope::All,
        Some("traces") => Scope::Traces,
        Some("observations") => Scope::Observations,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scope must be all, traces or observations, got {other:?}"
            )));
        }
    };
    let order = match params.str("orderBy").as_deref() {
        None | Some("timestamp" | "timestamp.desc") => SearchOrder::Newest,
        Some("timestamp.asc") => SearchOrder::Oldest,
        Some("relevance") => SearchOrder::Relevance,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "orderBy must be relevance, timestamp.desc or timestamp.asc, got {other:?}"
            )));
        }
    };
    let limit = params.int("limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100"));
    }
    let req = SearchRequest {
        project: p.project_id.clone(),
        q,
        scope,
        order,
        from: params.time("fromTimestamp")?,
        to: params.time("toTimestamp")?,
        filters: Vec::new(),
        offset: 0,
        limit: limit as usize,
        count: true,
    };
    let search = state.search.clone();
    let store_seq = *state.store.writer().subscribe().borrow();
    state
        .read(move |s| {
            let results = search.search(&req)?;
            let project = &p.project_id;
            let mut data = Vec::with_capacity(results.hits.len());
            for hit in &results.hits {
                let mut item = match hit.kind {
                    HitKind::Trace => {
                        let Some(t) = s.trace(project, &hit.id)? else {
                            continue; // deleted since it was indexed
                        };
                        json!({
                            "type": "trace",
                            "id": t.id,
                            "traceId": t.id,
                            "name": t.name,
                            "timestamp": t.timestamp.to_iso(),
                            "userId": t.user_id,
                            "sessionId": t.session_id,
                        })
                    }
                    HitKind::Observation => {
                        let Some(o) = s.observation(project, &hit.id)? else {
                            continue;
                        };
                        json!({
                            "type": "observation",
                            "id": o.id,
                            "traceId": o.trace_id,
                            "name": o.name,
                            "timestamp": o.start_time.to_iso(),
                            "observationType": o.kind.as_str(),
                            "model": o.model,
                            "level": o.level.as_str(),
                        })
                    }
                };
                item["score"] = json!(hit.score);
                item["highlights"] = highlights_json(results.highlights(s, project, hit)?, None);
                data.push(item);
            }
            let status = search.status();
            Ok(Json(super::params::listed(
                data,
                json!({
                    "limit": limit,
                    "totalItems": results.total,
                    "truncated": results.truncated,
                    "indexedSeq": status.indexed_seq,
                    "storeSeq": store_seq,
                    "rebuilding": status.rebuilding,
                }),
            )))
        })
        .await
}
