//! Prompt management (`/api/public/v2/prompts`, legacy `/api/public/prompts`) in Langfuse's
//! shapes, so the SDKs' `get_prompt`, `create_prompt` and `update_prompt` work; plus the prompt
//! link of generations that name a prompt version (`promptId`).
//!
//! Writes go through the writer as one `WriteOp::Prompt`, whose rules (`prompt::plan`) run in the
//! writer's transaction; the handler only validates the request and shapes the answer.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::params::Params;
use super::{ApiError, AppState};
use crate::auth::{AccessLevel, Principal};
use crate::prompt::{
    self, Action, ListFilter, PromptError, PromptVersion, Selector, parse_create, parse_labels,
};
use crate::record::ObservationRecord;
use crate::store::{PromptOutcome, PromptWrite, Store, WriteOp};

/// Langfuse's answer to a public key alone on any prompt route.
const BEARER_DENIED: &str = "Access denied - need to use basic auth with secret key to GET prompts";
/// Who created a version through a key (Langfuse's value).
const CREATED_BY_API: &str = "API";

impl From<PromptError> for ApiError {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::Invalid(m) => ApiError::bad_request(m),
            PromptError::NotFound(m) => ApiError::not_found(m),
        }
    }
}

/// A caller allowed to manage prompts: a secret key (or a dashboard session) of the project.
pub struct PromptAccess(Principal);

impl FromRequestParts<AppState> for PromptAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = super::principal(parts, state)?;
        if p.access != AccessLevel::Full {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                BEARER_DENIED,
                "ForbiddenError",
            ));
        }
        Ok(PromptAccess(p))
    }
}

/// Langfuse's `Prompt` object; `isActive` (legacy) is whether it carries `production`.
fn prompt_json(project: &str, p: &PromptVersion) -> Value {
    json!({
        "id": p.id,
        "projectId": project,
        "name": p.name,
        "version": p.version,
        "type": p.kind.as_str(),
        "prompt": p.prompt,
        "config": p.config,
        "labels": p.labels,
        "tags": p.tags,
        "commitMessage": p.commit_message,
        "createdBy": p.created_by,
        "createdAt": p.created_at.to_iso(),
        "updatedAt": p.updated_at.to_iso(),
        "isActive": p.has_label(prompt::PRODUCTION),
        "resolutionGraph": null,
    })
}

fn version_param(params: &Params) -> Result<Option<u32>, ApiError> {
    params
        .int("version")?
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| ApiError::bad_request(format!("version must be 1 or more, got {v}")))
        })
        .transpose()
}

/// `version` or `label`, not both, or neither.
fn selector(params: &Params) -> Result<Option<Selector>, ApiError> {
    match (version_param(params)?, params.str("label")) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Cannot specify both version and label; send one of them",
        )),
        (Some(v), None) => Ok(Some(Selector::Version(v))),
        (None, Some(l)) => Ok(Some(Selector::Label(l))),
        (None, None) => Ok(None),
    }
}

fn production() -> Selector {
    Selector::Label(prompt::PRODUCTION.into())
}

/// Runs a prompt write through the writer and returns what it came to.
async fn write(
    state: &AppState,
    project: String,
    name: String,
    action: Action,
) -> Result<Option<PromptVersion>, ApiError> {
    let outcome = PromptOutcome::default();
    state
        .store
        .writer()
        .submit(WriteOp::Prompt(Box::new(PromptWrite {
            project,
            name,
            action,
            outcome: outcome.clone(),
        })))
        .await?;
    let result = outcome
        .take()
        .ok_or_else(|| ApiError::internal("the prompt write was committed without a result"))?;
    Ok(result?)
}

async fn create_version(
    state: &AppState,
    project: String,
    body: Value,
    legacy: bool,
) -> Result<Response, ApiError> {
    let mut new = parse_create(&body, CREATED_BY_API)?;
    // Legacy `isActive: true` is the `production` label.
    if legacy && body.get("isActive").and_then(Value::as_bool) == Some(true) {
        new.labels.push(prompt::PRODUCTION.into());
    }
    let name = new.name.clone();
    let action = Action::Create {
        prompt: Box::new(new),
        id: uuid::Uuid::new_v4().to_string(),
    };
    let created = write(state, project.clone(), name, action)
        .await?
        .ok_or_else(|| ApiError::internal("a created prompt version is missing"))?;
    Ok((StatusCode::CREATED, Json(prompt_json(&project, &created))).into_response())
}

pub async fn create(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create_version(&state, p.project_id, body, false).await
}

pub async fn get(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let sel = selector(&params)?.unwrap_or_else(production);
    // Prompt references are stored as written; there is nothing to resolve, so `resolve` only
    // has to be well-formed.
    params.bool("resolve")?;
    state
        .read(move |s| {
            let versions = s.prompt_versions(&p.project_id, &name)?;
            let found = prompt::find(&versions, &sel).ok_or_else(|| sel.not_found(&name))?;
            Ok(Json(prompt_json(&p.project_id, found)))
        })
        .await
}

/// Every version of one prompt, oldest first: what the dashboard shows and diffs.
pub async fn versions(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .read(move |s| {
            let versions = s.prompt_versions(&p.project_id, &name)?;
            if versions.is_empty() {
                return Err(ApiError::not_found(format!("Prompt not found: '{name}'")));
            }
            let data: Vec<Value> = versions
                .iter()
                .map(|v| prompt_json(&p.project_id, v))
                .collect();
            Ok(Json(json!({"data": data})))
        })
        .await
}

pub async fn list(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(10, 100)?;
    let filter = ListFilter {
        name: params.str("name"),
        label: params.str("label"),
        tag: params.str("tag"),
        version: version_param(&params)?,
        from_updated: params.time("fromUpdatedAt")?,
        to_updated: params.time("toUpdatedAt")?,
    };
    let all = state.read(move |s| Ok(s.prompts(&p.project_id)?)).await?;
    let summaries = prompt::summarize(&all, &filter);
    let data: Vec<Value> = summaries
        .iter()
        .skip(paging.skip())
        .take(paging.limit)
        .map(|s| {
            json!({
                "name": s.name,
                "type": s.kind.as_str(),
                "versions": s.versions,
                "labels": s.labels,
                "tags": s.tags,
                "lastUpdatedAt": s.last_updated_at.to_iso(),
                "lastConfig": s.last_config,
            })
        })
        .collect();
    let meta = paging.meta(summaries.len() as u64);
    // Langfuse repeats `meta` as `pagination`, and clients written against it read either.
    Ok(Json(
        json!({"data": data, "meta": meta, "pagination": meta}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    Path(name): Path<String>,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let sel = selector(&params)?;
    write(&state, p.project_id, name, Action::Delete(sel)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH .../{name}/versions/{version}` with `{"newLabels": [...]}`.
pub async fn relabel(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    Path((name, version)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let version = version
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::bad_request(format!("version must be 1 or more, got {version:?}"))
        })?;
    let labels = match body.get("newLabels") {
        Some(v) if v.is_array() => parse_labels(Some(v), "newLabels")?,
        _ => {
            return Err(ApiError::bad_request(
                "body must be {\"newLabels\": [...]} with the labels to add",
            ));
        }
    };
    let project = p.project_id.clone();
    let updated = write(
        &state,
        p.project_id,
        name,
        Action::Relabel { version, labels },
    )
    .await?
    .ok_or_else(|| ApiError::internal("a relabelled prompt version is missing"))?;
    Ok(Json(prompt_json(&project, &updated)))
}

/// Legacy `GET /api/public/prompts?name=&version=`: the version, else the `production` one.
pub async fn legacy_get(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let name = params
        .str("name")
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let sel = version_param(&params)?.map_or_else(production, Selector::Version);
    state
        .read(move |s| {
            let versions = s.prompt_versions(&p.project_id, &name)?;
            let found = prompt::find(&versions, &sel).ok_or_else(|| sel.not_found(&name))?;
            Ok(Json(prompt_json(&p.project_id, found)))
        })
        .await
}

/// Legacy `POST /api/public/prompts`: a v2 create body plus `isActive`.
pub async fn legacy_create(
    State(state): State<AppState>,
    PromptAccess(p): PromptAccess,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    create_version(&state, p.project_id, body, true).await
}

/// Sets `promptId` on an observation's JSON when it names a stored prompt version.
pub(crate) fn link_prompt(
    s: &Store,
    project: &str,
    o: &ObservationRecord,
    v: &mut Value,
) -> Result<(), ApiError> {
    if let (Some(name), Some(version)) = (&o.prompt_name, o.prompt_version)
        && let Some(id) = s.prompt_id(project, name, version)?
    {
        v["promptId"] = Value::String(id);
    }
    Ok(())
}
