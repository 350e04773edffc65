//! `/api/public/models`: the project's custom model prices, listed together with the built-in
//! (Langfuse-managed) and config-file models they override.
//!
//! Created models are stored through the writer, which swaps the price book before the POST is
//! answered: every observation ingested after the response is priced with the new model.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::params::Params;
use super::{ApiError, AppState, Project};
use crate::cost::{CostError, ModelDef};
use crate::store::WriteOp;
use crate::time::Timestamp;

const NOT_FOUND: &str = "No model with this id found.";

impl From<CostError> for ApiError {
    fn from(e: CostError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

pub async fn list(
    State(state): State<AppState>,
    Project(p): Project,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let paging = params.paging(50, 100)?;
    let book = state.prices.current();
    let all = book.models(&p.project_id);
    Ok(Json(paging.page_of(&all, |m| m.to_langfuse_json())))
}

pub async fn get(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let book = state.prices.current();
    book.get(&p.project_id, &id)
        .map(|m| Json(m.to_langfuse_json()))
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))
}

pub async fn create(
    State(state): State<AppState>,
    Project(p): Project,
    JsonBody(mut value): JsonBody,
) -> Result<Json<Value>, ApiError> {
    // The server assigns ids and times; a client cannot pick them (or another project).
    if let Some(obj) = value.as_object_mut() {
        for k in ["id", "createdAt", "updatedAt", "projectId"] {
            obj.remove(k);
        }
    }
    let mut model = ModelDef::from_langfuse_json(&value)?;
    model.project_id = Some(p.project_id.clone());
    model.created_at = Timestamp::now();
    model.updated_at = model.created_at;
    let project = p.project_id.clone();
    let name = model.model_name.clone();
    let taken = state
        .read(move |s| {
            Ok(s.project_models(&project)?
                .iter()
                .any(|m| m.model_name == name))
        })
        .await?;
    if taken {
        return Err(ApiError::bad_request(format!(
            "a model named {:?} already exists in this project; delete it first or choose another modelName",
            model.model_name
        )));
    }
    let response = model.to_langfuse_json();
    state
        .store
        .writer()
        .submit(WriteOp::PutModel(Box::new(model)))
        .await?;
    Ok(Json(response))
}

pub async fn delete(
    State(state): State<AppState>,
    Project(p): Project,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (project, lookup) = (p.project_id.clone(), id.clone());
    // Only models stored for this project can go: built-ins and config-file models are 404,
    // as Langfuse answers for its managed models.
    let stored = state.read(move |s| Ok(s.model(&project, &lookup)?)).await?;
    if stored.is_none() {
        return Err(ApiError::not_found(NOT_FOUND));
    }
    state
        .store
        .writer()
        .submit(WriteOp::DeleteModel {
            project: p.project_id,
            id,
        })
        .await?;
    Ok(Json(json!({"message": "Model successfully deleted"})))
}
