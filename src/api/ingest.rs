//! Write endpoints: batch ingestion, OTLP traces, scores, deletes. Every one answers only after
//! the store's writer has durably committed the change.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::{JsonBody, read_limited};
use super::{AnyKey, ApiError, AppState, Project};
use crate::ingest;
use crate::otel;
use crate::record::TimedChange;
use crate::store::WriteOp;
use crate::time::Timestamp;

async fn commit(
    state: &AppState,
    project: &str,
    changes: Vec<TimedChange>,
) -> Result<(), ApiError> {
    if changes.is_empty() {
        return Ok(());
    }
    state
        .store
        .writer()
        .submit(WriteOp::Changes {
            project: project.to_string(),
            changes,
        })
        .await
        .map_err(ApiError::from)
}

pub async fn batch(
    State(state): State<AppState>,
    AnyKey(p): AnyKey,
    JsonBody(value): JsonBody,
) -> Result<Response, ApiError> {
    // Scores naming a config are checked against the configs committed when parsing starts.
    let configs = state.store.writer().score_configs();
    let batch = match ingest::parse_batch(&value, p.access, &configs.project(&p.project_id)) {
        Ok(b) => b,
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Invalid request data", "errors": [e.0]})),
            )
                .into_response());
        }
    };
    let (ok, bad) = (batch.successes.len(), batch.errors.len());
    commit(&state, &p.project_id, batch.changes).await?;
    state.telemetry.count_ingested("batch", ok, bad);
    Ok((
        StatusCode::MULTI_STATUS,
        Json(json!({"successes": batch.successes, "errors": batch.errors})),
    )
        .into_response())
}

pub async fn otlp(
    State(state): State<AppState>,
    Project(p): Project,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = otel::Encoding::from_content_type(content_type).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "content type {content_type:?} is not OTLP; use application/x-protobuf or application/json"
        ))
    })?;
    if let Some(v) = headers.get("x-langfuse-ingestion-version") {
        let ok = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|n| n <= 4);
        if !ok {
            return Err(ApiError::bad_request(
                "x-langfuse-ingestion-version must be a number up to 4",
            ));
        }
    }
    let bytes = read_limited(&headers, body, state.config.max_body_bytes).await?;
    let request =
        otel::decode(&bytes, encoding).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mapped = otel::map_request(&request, Timestamp::now());
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let rejected = usize::try_from(mapped.rejected_spans).unwrap_or(usize::MAX);
    commit(&state, &p.project_id, mapped.changes).await?;
    state
        .telemetry
        .count_ingested("otlp", spans.saturating_sub(rejected), rejected);
    let body = otel::encode_response(
        encoding,
        mapped.rejected_spans,
        mapped.error_message.as_deref(),
    );
    Ok(([(header::CONTENT_TYPE, encoding.content_type())], body).into_response())
}

pub async fn scores(
    State(state): State<AppState>,
    AnyKey(p): AnyKey,
    JsonBody(value): JsonBody,
) -> Result<Response, ApiError> {
    let configs = state.store.writer().score_configs();
    let results = ingest::parse_scores(&value, Timestamp::now(), &configs.project(&p.project_id))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let single = !value.is_array();
    let mut changes = Vec::new();
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(c) => {
                if let crate::record::Change::Score(s) = &c.change {
                    ids.push(s.id.clone());
                }
                changes.push(c);
            }
            Err(e) => errors.push(json!({"index": i, "message": e.0})),
        }
    }
    if single && let Some(err) = errors.first() {
        return Err(ApiError::bad_request(
            err["message"]
                .as_str()
                .unwrap_or("invalid score")
                .to_string(),
        ));
    }
    let accepted = changes.len();
    commit(&state, &p.project_id, changes).await?;
    state
        .telemetry
        .count_ingested("scores", accepted, errors.len());
    if single {
        return Ok(Json(json!({"id": ids.first()})).into_response());
    }
    if errors.is_empty() {
        return Ok((StatusCode::ACCEPTED, Json(json!({"message": "Accepted"}))).into_response());
    }
    Ok((
        StatusCode::MULTI_STATUS,
        Json(json!({"accepted": accepted, "rejected": errors.len(), "errors": errors})),
    )
        .into_response())
}

/// Deletes one record after checking it exists in the caller's project (unknown ids are 404s,
/// not silent successes).
async fn delete_one(
    state: &AppState,
    project: String,
    kind: &'static str,
    id: String,
    exists: fn(&crate::store::Store, &str, &str) -> Result<bool, crate::store::StoreError>,
    op: WriteOp,
) -> Result<(), ApiError> {
    let (p, probe) = (project, id.clone());
    let found = state.read(move |s| Ok(exists(s, &p, &probe)?)).await?;
    if !found {
        return Err(ApiError::missing(kind, &id));
    }
    state.store.writer().submit(op).await?;
    Ok(())
}

pub async fn delete_trace(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let op = WriteOp::DeleteTraces {
        project: p.project_id.clone(),
        ids: vec![id.clone()],
    };
    delete_one(
        &state,
        p.project_id,
        "Trace",
        id,
        |s, p, i| Ok(s.trace(p, i)?.is_some()),
        op,
    )
    .await?;
    Ok(Json(json!({"message": "Trace deleted successfully"})))
}

pub async fn delete_traces(
    State(state): State<AppState>,
    Project(p): Project,
    JsonBody(value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = value
        .get("traceIds")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
        .ok_or_else(|| ApiError::bad_request("body must be {\"traceIds\": [string, ...]}"))?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::bad_request("traceIds must hold 1 to 1000 ids"));
    }
    state
        .store
        .writer()
        .submit(WriteOp::DeleteTraces {
            project: p.project_id,
            ids,
        })
        .await?;
    Ok(Json(json!({"message": "Traces deleted successfully"})))
}

pub async fn delete_score(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let op = WriteOp::DeleteScore {
        project: p.project_id.clone(),
        id: id.clone(),
    };
    delete_one(
        &state,
        p.project_id,
        "Score",
        id,
        |s, p, i| Ok(s.score(p, i)?.is_some()),
        op,
    )
    .await?;
    Ok(Json(json!({"message": "Score deleted successfully"})))
}
