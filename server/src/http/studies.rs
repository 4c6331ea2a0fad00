//! Owns the study endpoints: kinds and their defaults, submit, list, read, cancel, the SSE
//! change stream, results and arrays. Thin over `dtop_engine::Engine`: each handler checks the
//! permission, turns the request into an engine call and the answer into JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dtop_auth::Action;
use dtop_engine::{ModelChoice, StudyFilter, StudyId, StudyRecord, StudyState, SubmitRequest};
use dtop_studies::{FieldProblem, ModelRef, ModelSpec, StudyKind};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, AuthUser, Shared};
use crate::http::schemas::{InputInfo, KindInfo, NamedArrayDoc, StudyRecordDoc, StudyResultDoc};
use crate::live::record::RecordSource;
use crate::metrics::Metrics;

/// One line about each kind, for the submit form.
pub fn describe(kind: StudyKind) -> &'static str {
    match kind {
        StudyKind::Modal => "Natural frequencies, mode shapes, modal damping and poles.",
        StudyKind::Frf => "One or more frequency response functions.",
        StudyKind::Control => "A vibration-control law assessed on the model (TMD, DVF, LQG).",
        StudyKind::Simulate => {
            "Time-domain response to an excitation, PSD and H1 estimates, optional Monte Carlo."
        }
        StudyKind::Uncertainty => {
            "Interval and Monte Carlo propagation of parameter uncertainty to FRFs."
        }
        StudyKind::Design => {
            "Design under uncertainty: Monte Carlo statistics, Fisher sensitivities, failure probability."
        }
        StudyKind::Oma => {
            "Operational modal analysis of a measured acceleration record: SSI-cov, stabilisation diagram, FDD cross-check."
        }
        StudyKind::Ema => {
            "Experimental modal analysis of a measured FRF or a shaker test: rational-fraction and circle fits."
        }
        StudyKind::Crossval => {
            "A model against a measured FRF, in numbers: frequency errors, MAC of mode shapes, FRAC per channel."
        }
        StudyKind::Update => {
            "Storey stiffnesses (and damping) fitted to identified modes; proposes the updated model for review."
        }
        StudyKind::Cbc => {
            "Control-based continuation on a model with cubic springs: response curve with folds, simulated CBC, steady-state sweeps."
        }
        StudyKind::Fea => {
            "The rig as a 3D frame (built-in beams or CalculiX): modes with torsion, mesh convergence, the condensed shear chain."
        }
    }
}

fn parse_kind(text: &str) -> Result<StudyKind, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::NotFound(format!("study kind {text:?} ({e})")))
}

/// Every study kind.
#[utoipa::path(get, path = "/api/v1/kinds", tag = "studies",
    responses((status = 200, body = Vec<KindInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn kinds(user: AuthUser) -> Result<Json<Vec<KindInfo>>, ApiError> {
    user.require(Action::ReadStudies)?;
    Ok(Json(
        StudyKind::ALL
            .into_iter()
            .map(|k| KindInfo {
                kind: k.as_str().to_owned(),
                description: describe(k).to_owned(),
                inputs: dtop_studies::inputs(k)
                    .iter()
                    .map(|i| InputInfo {
                        name: i.name.to_owned(),
                        required: i.required,
                        description: i.description.to_owned(),
                    })
                    .collect(),
            })
            .collect(),
    ))
}

/// Query of the defaults endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DefaultsQuery {
    /// `name` or `name@version` of a catalogue model.
    pub model: String,
}

/// The kind's default parameters on a model, to fill a form.
#[utoipa::path(get, path = "/api/v1/kinds/{kind}/defaults", tag = "studies",
    params(("kind" = String, Path, description = "Study kind"), DefaultsQuery),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn defaults(
    State(state): State<Shared>,
    user: AuthUser,
    Path(kind): Path<String>,
    ApiQuery(query): ApiQuery<DefaultsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    user.require(Action::ReadStudies)?;
    let kind = parse_kind(&kind)?;
    let model: ModelRef = query
        .model
        .parse()
        .map_err(|e: String| ApiError::invalid("model", e))?;
    let version = state.engine.model(&model).await?;
    Ok(Json(dtop_studies::defaults(kind, &version.spec)))
}

/// A study to submit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Study kind (`modal`, `frf`, ...).
    #[schema(value_type = String)]
    pub kind: StudyKind,
    /// `name` or `name@version` of a catalogue model, or a whole ModelSpec object.
    #[schema(value_type = Object)]
    pub model: serde_json::Value,
    /// The kind's parameters (see `/kinds/{kind}/defaults`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Seed of the study's random streams; drawn by the server if absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Measured tables the kind takes (`GET /kinds` lists each kind's): a measured FRF for
    /// `ema`, a time record for `oma`. Kept with the study by content hash.
    #[serde(default)]
    #[schema(value_type = Vec<NamedArrayDoc>)]
    pub inputs: Vec<dtop_studies::NamedArray>,
    /// A rig's stored range the server reads as one more input (e.g. `oma` on live data).
    #[serde(default)]
    pub record: Option<RecordSource>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The model of a submit body: a catalogue reference or an inline spec.
pub fn model_choice(model: serde_json::Value) -> Result<ModelChoice, Vec<FieldProblem>> {
    match model {
        serde_json::Value::String(text) => text
            .parse::<ModelRef>()
            .map(ModelChoice::Catalogue)
            .map_err(|e| vec![FieldProblem::new("model", e)]),
        object @ serde_json::Value::Object(_) => {
            let de = serde_path_to_error::deserialize::<_, ModelSpec>(object);
            de.map(ModelChoice::Inline).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "model".to_owned()
                } else {
                    format!("model.{path}")
                };
                vec![FieldProblem::new(field, e.into_inner().to_string())]
            })
        }
        _ => Err(vec![FieldProblem::new(
            "model",
            "must be a catalogue name (`name` or `name@version`) or a model object",
        )]),
    }
}

/// Submits a study.
#[utoipa::path(post, path = "/api/v1/studies", tag = "studies", request_body = SubmitBody,
    responses((status = 201, body = StudyRecordDoc),
        (status = 400, body = ErrorBody, description = "invalid (every problem) or too_large (with the budget)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<Shared>,
    user: AuthUser,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<(StatusCode, Json<StudyRecord>), ApiError> {
    user.require(Action::SubmitStudy)?;
    let model = model_choice(body.model).map_err(ApiError::Invalid)?;
    let mut inputs = body.inputs;
    if let Some(source) = &body.record {
        inputs.push(crate::http::rigs::record_input(&state, &user.0, source).await?);
    }
    let record = state
        .engine
        .submit(SubmitRequest {
            kind: body.kind,
            model,
            params: body.params,
            seed: body.seed,
            submitted_by: user.0.username.clone(),
            inputs,
        })
        .await?;
    tracing::info!(study = %record.id.0, kind = %record.kind, user = %user.0.username, "Study submitted.");
    Ok((StatusCode::CREATED, Json(record)))
}

/// Filters of the study list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only studies on this catalogue model name.
    pub model: Option<String>,
    /// Only studies by this user.
    pub submitted_by: Option<String>,
    /// Only studies in this state.
    pub state: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// The filter of a list query; every bad value at once.
pub fn list_filter(query: ListQuery) -> Result<StudyFilter, ApiError> {
    let mut problems = Vec::new();
    let kind = query.kind.and_then(|k| match k.parse::<StudyKind>() {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(FieldProblem::new("kind", e));
            None
        }
    });
    let state = query.state.and_then(|s| {
        match serde_json::from_value::<StudyState>(serde_json::Value::String(s.clone())) {
            Ok(state) => Some(state),
            Err(_) => {
                problems.push(FieldProblem::new(
                    "state",
                    format!("unknown state {s:?}: queued, running, reducing, succeeded, failed or cancelled"),
                ));
                None
            }
        }
    });
    if let Some(limit) = query.limit
        && !(1..=1000).contains(&limit)
    {
        problems.push(FieldProblem::new("limit", "must be between 1 and 1000"));
    }
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    Ok(StudyFilter {
        kind,
        model_name: query.model,
        submitted_by: query.submitted_by,
        state,
        limit: query.limit,
    })
}

/// Studies, newest first.
#[utoipa::path(get, path = "/api/v1/studies", tag = "studies", params(ListQuery),
    responses((status = 200, body = Vec<StudyRecordDoc>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Shared>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<StudyRecord>>, ApiError> {
    user.require(Action::ReadStudies)?;
    let filter = list_filter(query)?;
    Ok(Json(state.engine.list_studies(&filter).await?))
}

/// One study.
#[utoipa::path(get, path = "/api/v1/studies/{id}", tag = "studies",
    params(("id" = String, Path, description = "Study id")),
    responses((status = 200, body = StudyRecordDoc), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<Shared>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<StudyRecord>, ApiError> {
    user.require(Action::ReadStudies)?;
    Ok(Json(state.engine.study(&StudyId(id)).await?))
}

/// Cancels a study: its submitter, operators and admins may.
#[utoipa::path(post, path = "/api/v1/studies/{id}/cancel", tag = "studies",
    params(("id" = String, Path, description = "Study id")),
    responses((status = 200, body = StudyRecordDoc), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<Shared>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<StudyRecord>, ApiError> {
    let id = StudyId(id);
    if user.require(Action::CancelAnyStudy).is_err() {
        user.require(Action::CancelOwnStudy)?;
        // Only reading is needed to learn the owner; someone who may not read gets 403 above.
        let study = state.engine.study(&id).await?;
        if study.submitted_by != user.0.username {
            return Err(ApiError::Forbidden);
        }
    }
    let record = state.engine.cancel(&id, &user.0.username).await?;
    tracing::info!(study = %record.id.0, user = %user.0.username, "Study cancelled.");
    Ok(Json(record))
}

/// Keeps the SSE client gauge right however the stream ends.
struct SseClient(Arc<Metrics>);

impl SseClient {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn study_event(record: &StudyRecord) -> Event {
    Event::default()
        .event("study")
        .json_data(record)
        .unwrap_or_else(|_| Event::default().event("study"))
}

/// The study's changes as server-sent events (`event: study`, the record as data), from its
/// current record until a final state.
#[utoipa::path(get, path = "/api/v1/studies/{id}/events", tag = "studies",
    params(("id" = String, Path, description = "Study id")),
    responses((status = 200, content_type = "text/event-stream", description = "`event: study` per change, data: the StudyRecord"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<Shared>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    user.require(Action::ReadStudies)?;
    let id = StudyId(id);
    // Subscribe before reading, so no change between the read and the first poll is lost.
    let mut rx = state.changes.subscribe();
    let first = state.engine.study(&id).await?;
    let client = SseClient::new(Arc::clone(&state.metrics));
    let shutdown = state.shutdown.clone();
    let engine = state.engine.clone();
    let stream = async_stream(move |tx| async move {
        let _client = client;
        let mut revision = first.revision;
        let mut done = first.state.is_final();
        if tx.send(study_event(&first)).await.is_err() {
            return;
        }
        while !done {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = rx.recv() => next,
            };
            let record = match next {
                Ok(record) if record.id == id => (*record).clone(),
                Ok(_) => continue,
                // Fell behind: the current record stands in for whatever was skipped.
                Err(RecvError::Lagged(_)) => match engine.study(&id).await {
                    Ok(record) => record,
                    Err(_) => return,
                },
                Err(RecvError::Closed) => return,
            };
            if record.revision <= revision {
                continue;
            }
            revision = record.revision;
            done = record.state.is_final();
            if tx.send(study_event(&record)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a task: the task ends when the client goes away (sends fail).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(body(tx));
    let abort = task.abort_handle();
    // Dropping the stream (client gone) aborts the task even if it is waiting on a change.
    let guard = AbortOnDrop(abort);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|e| (Ok(e), (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A succeeded study's result.
#[utoipa::path(get, path = "/api/v1/studies/{id}/result", tag = "studies",
    params(("id" = String, Path, description = "Study id")),
    responses((status = 200, body = StudyResultDoc), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such study, or not succeeded yet"),
        (status = 409, body = ErrorBody, description = "The study failed or was cancelled"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn result(
    State(state): State<Shared>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<dtop_engine::StudyResult>, ApiError> {
    user.require(Action::ReadStudies)?;
    let id = StudyId(id);
    let study = state.engine.study(&id).await?;
    match study.state {
        StudyState::Succeeded => Ok(Json(state.engine.result(&id).await?)),
        StudyState::Failed | StudyState::Cancelled => Err(ApiError::Conflict(format!(
            "study {} is {}",
            id.0,
            if study.state == StudyState::Failed {
                "failed"
            } else {
                "cancelled"
            }
        ))),
        _ => Err(ApiError::NotFound(format!(
            "result of study {} (not finished yet)",
            id.0
        ))),
    }
}

/// Format of an array download.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArrayQuery {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// One array of a study's result, as JSON or CSV.
#[utoipa::path(get, path = "/api/v1/studies/{id}/arrays/{name}", tag = "studies",
    params(("id" = String, Path, description = "Study id"), ("name" = String, Path, description = "Array name"), ArrayQuery),
    responses((status = 200, body = NamedArrayDoc, description = "JSON, or text/csv with format=csv"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn array(
    State(state): State<Shared>,
    user: AuthUser,
    Path((id, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ArrayQuery>,
) -> Result<Response, ApiError> {
    user.require(Action::ReadStudies)?;
    let csv = csv_wanted(&query)?;
    let array = state.engine.array(&StudyId(id), &name).await?;
    Ok(table_response(array, csv))
}

/// One of the measured tables a study was given, as JSON or CSV.
#[utoipa::path(get, path = "/api/v1/studies/{id}/inputs/{name}", tag = "studies",
    params(("id" = String, Path, description = "Study id"), ("name" = String, Path, description = "Input name"), ArrayQuery),
    responses((status = 200, body = NamedArrayDoc, description = "JSON, or text/csv with format=csv"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn input(
    State(state): State<Shared>,
    user: AuthUser,
    Path((id, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ArrayQuery>,
) -> Result<Response, ApiError> {
    user.require(Action::ReadStudies)?;
    let csv = csv_wanted(&query)?;
    let table = state.engine.input(&StudyId(id), &name).await?;
    Ok(table_response(table, csv))
}

fn csv_wanted(query: &ArrayQuery) -> Result<bool, ApiError> {
    match query.format.as_deref() {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            "format",
            format!("unknown format {other:?}: json or csv"),
        )),
    }
}

fn table_response(table: dtop_studies::NamedArray, csv: bool) -> Response {
    if csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            table.to_csv(),
        )
            .into_response()
    } else {
        Json(table).into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_model_is_a_catalogue_reference_or_an_inline_spec() {
        assert!(matches!(
            model_choice(serde_json::json!("so-3s@2")),
            Ok(ModelChoice::Catalogue(ModelRef {
                version: Some(2),
                ..
            }))
        ));
        let problems = model_choice(serde_json::json!("Bad Name")).unwrap_err();
        assert_eq!(problems[0].field, "model");
        let problems = model_choice(serde_json::json!({"structure": 3})).unwrap_err();
        assert_eq!(problems[0].field, "model.structure");
        assert!(model_choice(serde_json::json!(7)).is_err());
    }

    #[test]
    fn list_filters_report_every_bad_value() {
        let err = list_filter(ListQuery {
            kind: Some("nope".into()),
            model: None,
            submitted_by: None,
            state: Some("done".into()),
            limit: Some(0),
        })
        .unwrap_err();
        let ApiError::Invalid(problems) = err else {
            panic!()
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["kind", "state", "limit"]);
        let ok = list_filter(ListQuery {
            kind: Some("modal".into()),
            model: Some("so-3s".into()),
            submitted_by: None,
            state: Some("succeeded".into()),
            limit: Some(5),
        })
        .unwrap();
        assert_eq!(ok.kind, Some(StudyKind::Modal));
        assert_eq!(ok.state, Some(StudyState::Succeeded));
    }

    #[test]
    fn every_kind_has_a_description() {
        for kind in StudyKind::ALL {
            assert!(!describe(kind).is_empty());
        }
    }
}
