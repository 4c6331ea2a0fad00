//! Owns the model catalogue endpoints: list, read a name's versions or one version, add a
//! version. Thin over `dtop_engine::Engine`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dtop_auth::Action;
use dtop_engine::{ModelVersion, ReviewDecision};
use dtop_studies::{ModelRef, ModelSpec, Provenance};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, AuthUser, Shared};
use crate::http::schemas::ModelVersionDoc;

/// Every version of every model.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, body = Vec<ModelVersionDoc>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Shared>,
    user: AuthUser,
) -> Result<Json<Vec<ModelVersion>>, ApiError> {
    user.require(Action::ReadModels)?;
    Ok(Json(state.engine.models().await?))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    match ModelRef::name_problem(name) {
        Some(problem) => Err(ApiError::NotFound(format!("model {name:?} ({problem})"))),
        None => Ok(()),
    }
}

/// Every version of one model.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = Vec<ModelVersionDoc>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn versions(
    State(state): State<Shared>,
    user: AuthUser,
    Path(name): Path<String>,
) -> Result<Json<Vec<ModelVersion>>, ApiError> {
    user.require(Action::ReadModels)?;
    check_name(&name)?;
    let versions: Vec<ModelVersion> = state
        .engine
        .models()
        .await?
        .into_iter()
        .filter(|m| m.name == name)
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("model {name:?}")));
    }
    Ok(Json(versions))
}

/// One version of a model (`latest` for the newest).
#[utoipa::path(get, path = "/api/v1/models/{name}/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Version number or `latest`")),
    responses((status = 200, body = ModelVersionDoc), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn version(
    State(state): State<Shared>,
    user: AuthUser,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelVersion>, ApiError> {
    user.require(Action::ReadModels)?;
    check_name(&name)?;
    let version = match version.as_str() {
        "latest" => None,
        v => Some(
            v.parse::<u32>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| ApiError::NotFound(format!("version {v:?} of model {name:?}")))?,
        ),
    };
    Ok(Json(state.engine.model(&ModelRef { name, version }).await?))
}

/// A new model version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddModelBody {
    /// Catalogue name: lowercase letters, digits and `-`.
    pub name: String,
    /// The model.
    #[schema(value_type = Object)]
    pub spec: ModelSpec,
    /// Where it came from (default `manual`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<Provenance>,
}

/// Adds a version of a model (version 1 if the name is new).
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = AddModelBody,
    responses((status = 201, body = ModelVersionDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<Shared>,
    user: AuthUser,
    ApiJson(body): ApiJson<AddModelBody>,
) -> Result<(StatusCode, Json<ModelVersion>), ApiError> {
    user.require(Action::AddModel)?;
    if let Some(problem) = ModelRef::name_problem(&body.name) {
        return Err(ApiError::invalid("name", problem));
    }
    let added = state
        .engine
        .add_model(
            &body.name,
            body.spec,
            body.provenance.unwrap_or(Provenance::Manual),
            &user.0.username,
        )
        .await?;
    tracing::info!(model = %added.name, version = added.version, user = %user.0.username, "Model added.");
    Ok((StatusCode::CREATED, Json(added)))
}

/// An operator's decision on a proposed model version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `approve` or `reject`.
    #[schema(value_type = String)]
    pub decision: ReviewDecision,
    /// Why, kept with the version (optional).
    #[serde(default)]
    pub note: String,
}

/// Approves or rejects a version a study proposed, once; who, when and why are kept with it.
#[utoipa::path(post, path = "/api/v1/models/{name}/{version}/review", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number")),
    request_body = ReviewBody,
    responses((status = 200, body = ModelVersionDoc), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not proposed, or reviewed already"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn review(
    State(state): State<Shared>,
    user: AuthUser,
    Path((name, version)): Path<(String, String)>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> Result<Json<ModelVersion>, ApiError> {
    user.require(Action::ReviewModel)?;
    check_name(&name)?;
    let version = version
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::NotFound(format!("version {version:?} of model {name:?}")))?;
    if body.note.len() > 2000 {
        return Err(ApiError::invalid("note", "at most 2000 bytes"));
    }
    let reviewed = state
        .engine
        .review_model(&name, version, body.decision, &user.0.username, &body.note)
        .await?;
    Ok(Json(reviewed))
}
