//! Owns the study pages: the list (filters in the query string, so a filtered list is a
//! shareable URL), the submit form per kind (pre-filled from the same defaults call as
//! `GET /api/v1/kinds/{kind}/defaults`, every problem next to its field), the study page
//! (progress and plots are drawn by `web/src/study.ts` from the API) with cancel, and the whole
//! result as JSON or CSV. Permissions are `dtop_auth::allowed`, as in the API.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtop_auth::Action;
use dtop_engine::{
    ModelChoice, ModelVersion, StudyFilter, StudyId, StudyRecord, StudyState, SubmitRequest,
};
use dtop_studies::{FieldProblem, ModelRef, StudyKind};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::Shared;
use crate::http::studies::describe;
use crate::live::record::RecordSource;
use crate::web::form::{self, FormField};
use crate::web::page::{Chrome, PageError, PageUser, render, see_other};

const SECTION: &str = "studies";
/// The model a form opens on when none is chosen and the catalogue has it.
const DEFAULT_MODEL: &str = "cristallo-msd3";

/// One row of the list.
#[derive(Debug)]
struct Row {
    id: String,
    kind: &'static str,
    model: String,
    submitted_by: String,
    submitted_at: String,
    state: &'static str,
    progress: String,
}

fn row(r: &StudyRecord) -> Row {
    Row {
        id: r.id.0.clone(),
        kind: r.kind.as_str(),
        model: r.model_ref.clone().unwrap_or_else(|| "(inline)".to_owned()),
        submitted_by: r.submitted_by.clone(),
        submitted_at: r.submitted_at.clone(),
        state: r.state.as_str(),
        progress: format!("{}/{}", r.chunks_done, r.chunks_total),
    }
}

#[derive(Template)]
#[template(path = "studies.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    kinds: Vec<&'static str>,
    models: Vec<String>,
    kind: String,
    model: String,
    user: String,
    may_submit: bool,
}

/// Filters of the list page.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this kind (empty: all).
    #[serde(default)]
    pub kind: String,
    /// Only this catalogue model name.
    #[serde(default)]
    pub model: String,
    /// Only this submitter.
    #[serde(default)]
    pub user: String,
}

fn model_names(models: &[ModelVersion]) -> Vec<String> {
    let mut names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    names.dedup();
    names
}

/// `GET /studies`.
pub async fn list(
    State(state): State<Shared>,
    user: PageUser,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    user.require(Action::ReadStudies, "read studies")?;
    let kind = if query.kind.is_empty() {
        None
    } else {
        Some(
            query
                .kind
                .parse::<StudyKind>()
                .map_err(|e| PageError::api(&user, SECTION, ApiError::invalid("kind", e)))?,
        )
    };
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = StudyFilter {
        kind,
        model_name: non_empty(&query.model),
        submitted_by: non_empty(&query.user),
        state: None,
        limit: Some(500),
    };
    let studies = state
        .engine
        .list_studies(&filter)
        .await
        .map_err(|e| PageError::api(&user, SECTION, e))?;
    let models = state
        .engine
        .models()
        .await
        .map_err(|e| PageError::api(&user, SECTION, e))?;
    render(&ListPage {
        chrome: user.chrome(SECTION),
        rows: studies.iter().map(row).collect(),
        kinds: StudyKind::ALL.iter().map(|k| k.as_str()).collect(),
        models: model_names(&models),
        kind: query.kind,
        model: query.model,
        user: query.user,
        may_submit: user.may(Action::SubmitStudy),
    })
}

#[derive(Template)]
#[template(path = "study_new.html")]
struct NewPage {
    chrome: Chrome,
    kind: &'static str,
    description: &'static str,
    models: Vec<String>,
    model: String,
    seed: String,
    fields: Vec<FormField>,
    general: Vec<FieldProblem>,
    may_submit: bool,
    roles: String,
    /// The measured tables the kind takes; empty for kinds that compute from the model alone.
    inputs: Vec<dtop_studies::InputSpec>,
    /// The "from a rig's stored range" fields, as posted.
    record: RecordFields,
}

/// The form's record fields: a rig and a range in RFC 3339 UTC.
#[derive(Debug, Clone, Default)]
struct RecordFields {
    rig: String,
    from: String,
    to: String,
    problems: Vec<String>,
}

impl RecordFields {
    fn read(pairs: &[(String, String)]) -> Self {
        let field = |name: &str| {
            crate::web::form::posted(pairs, name)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Self {
            rig: field("record_rig"),
            from: field("record_from"),
            to: field("record_to"),
            problems: Vec::new(),
        }
    }

    /// The record source when a rig is named, or every problem with the fields.
    fn source(&mut self) -> Option<RecordSource> {
        if self.rig.is_empty() {
            return None;
        }
        let ms =
            |text: &str, what: &str, problems: &mut Vec<String>| match time::OffsetDateTime::parse(
                text,
                &time::format_description::well_known::Rfc3339,
            ) {
                Ok(t) => Some((t.unix_timestamp_nanos() / 1_000_000) as i64),
                Err(_) => {
                    problems.push(format!(
                        "{what} {text:?} is not an RFC 3339 time such as 2026-12-06T21:00:00Z"
                    ));
                    None
                }
            };
        let mut problems = Vec::new();
        let from = ms(&self.from, "from", &mut problems);
        let to = ms(&self.to, "to", &mut problems);
        self.problems = problems;
        Some(RecordSource {
            rig: self.rig.clone(),
            from_ms: from?,
            to_ms: to?,
            input: "acceleration".into(),
            channels: Vec::new(),
        })
    }
}

/// `?model=` of the form.
#[derive(Debug, Deserialize)]
pub struct ModelQuery {
    /// `name` or `name@version`.
    #[serde(default)]
    pub model: Option<String>,
}

fn parse_kind(user: &PageUser, text: &str) -> Result<StudyKind, PageError> {
    text.parse().map_err(|_| {
        PageError::NotFound(
            Some(Box::new(user.chrome(SECTION))),
            format!("There is no study kind {text:?}."),
        )
    })
}

/// The model to open the form on, its version, and the catalogue's names.
async fn form_model(
    state: &Shared,
    user: &PageUser,
    chosen: Option<&str>,
) -> Result<(String, ModelVersion, Vec<String>), PageError> {
    let models = state
        .engine
        .models()
        .await
        .map_err(|e| PageError::api(user, SECTION, e))?;
    let names = model_names(&models);
    let text = chosen
        .map(str::to_owned)
        .or_else(|| names.iter().find(|n| *n == DEFAULT_MODEL).cloned())
        .or_else(|| names.first().cloned())
        .ok_or_else(|| {
            PageError::NotFound(
                Some(Box::new(user.chrome(SECTION))),
                "The model catalogue is empty.".to_owned(),
            )
        })?;
    let reference: ModelRef = text
        .parse()
        .map_err(|e: String| PageError::api(user, SECTION, ApiError::invalid("model", e)))?;
    let version = state
        .engine
        .model(&reference)
        .await
        .map_err(|e| PageError::api(user, SECTION, e))?;
    Ok((text, version, names))
}

fn new_page(
    user: &PageUser,
    kind: StudyKind,
    model: String,
    models: Vec<String>,
    seed: String,
    fields: Vec<FormField>,
    general: Vec<FieldProblem>,
    record: RecordFields,
) -> NewPage {
    NewPage {
        inputs: dtop_studies::inputs(kind).to_vec(),
        record,
        chrome: user.chrome(SECTION),
        kind: kind.as_str(),
        description: describe(kind),
        models,
        model,
        seed,
        fields,
        general,
        may_submit: user.may(Action::SubmitStudy),
        roles: crate::web::page::roles_allowed(Action::SubmitStudy).join(", "),
    }
}

/// `GET /studies/new/{kind}?model=`: the form, pre-filled with the kind's defaults for the
/// model; read-only for a role that may not submit.
pub async fn new_form(
    State(state): State<Shared>,
    user: PageUser,
    Path(kind): Path<String>,
    Query(query): Query<ModelQuery>,
) -> Result<Response, PageError> {
    user.require(Action::ReadStudies, "read studies")?;
    let kind = parse_kind(&user, &kind)?;
    let (model, version, models) = form_model(&state, &user, query.model.as_deref()).await?;
    let fields = form::fields(&dtop_studies::defaults(kind, &version.spec));
    render(&new_page(
        &user,
        kind,
        model,
        models,
        String::new(),
        fields,
        Vec::new(),
        RecordFields::default(),
    ))
}

/// `POST /studies/new/{kind}`: submits, or shows the form again with every problem next to
/// its field.
pub async fn submit(
    State(state): State<Shared>,
    user: PageUser,
    Path(kind): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |name: &str| crate::web::form::posted(&pairs, name).map(str::to_owned);
    user.check_csrf(&field(crate::web::cookie::CSRF_FIELD).unwrap_or_default())?;
    user.require(Action::SubmitStudy, "submit studies")?;
    let kind = parse_kind(&user, &kind)?;
    let chosen = field("model").filter(|m| !m.trim().is_empty());
    let (model, version, models) = form_model(&state, &user, chosen.as_deref()).await?;
    let defaults = dtop_studies::defaults(kind, &version.spec);
    let (params, mut fields, mut problems) = form::read(&defaults, &pairs);
    let seed_text = field("seed").unwrap_or_default();
    let seed = if seed_text.trim().is_empty() {
        None
    } else if let Ok(seed) = seed_text.trim().parse::<u64>() {
        Some(seed)
    } else {
        problems.push(FieldProblem::new(
            "seed",
            "must be a whole number from 0 to 18446744073709551615, or empty",
        ));
        None
    };
    let mut record = RecordFields::read(&pairs);
    let mut inputs = Vec::new();
    let source = record.source();
    if !record.problems.is_empty() {
        problems.extend(
            record
                .problems
                .iter()
                .map(|p| FieldProblem::new("record", p.clone())),
        );
    } else if let (Some(source), true) = (source, problems.is_empty()) {
        match crate::http::rigs::record_input(&state, &user.identity, &source).await {
            Ok(table) => inputs.push(table),
            Err(ApiError::Invalid(p)) => problems.extend(p),
            Err(e) => return Err(PageError::api(&user, SECTION, e)),
        }
    }
    if problems.is_empty() {
        let reference = ModelRef {
            name: version.name.clone(),
            version: Some(version.version),
        };
        let submitted = state
            .engine
            .submit(SubmitRequest {
                kind,
                model: ModelChoice::Catalogue(reference),
                params,
                seed,
                submitted_by: user.identity.username.clone(),
                inputs,
            })
            .await;
        match submitted.map_err(ApiError::from) {
            Ok(record) => {
                tracing::info!(study = %record.id.0, kind = %record.kind, user = %user.identity.username, "Study submitted from the web form.");
                return Ok(see_other(&format!("/studies/{}", record.id.0)));
            }
            Err(ApiError::Invalid(engine_problems)) => problems = engine_problems,
            Err(e @ ApiError::TooLarge { .. }) => {
                problems = vec![FieldProblem::new("params", e.body().message)];
            }
            Err(e) => return Err(PageError::api(&user, SECTION, e)),
        }
    }
    let general = form::attach(&mut fields, problems);
    let mut response = render(&new_page(
        &user, kind, model, models, seed_text, fields, general, record,
    ))?;
    *response.status_mut() = StatusCode::BAD_REQUEST;
    Ok(response)
}

#[derive(Template)]
#[template(path = "study.html")]
struct StudyPage {
    chrome: Chrome,
    study: Row,
    record: StudyRecord,
    params: String,
    may_cancel: bool,
    is_final: bool,
    percent: u32,
}

async fn record(state: &Shared, user: &PageUser, id: &str) -> Result<StudyRecord, PageError> {
    state
        .engine
        .study(&StudyId(id.to_owned()))
        .await
        .map_err(|e| PageError::api(user, SECTION, e))
}

/// Whether `user` may cancel `study`: anyone's with `CancelAnyStudy`, their own with
/// `CancelOwnStudy` (the API's rule).
fn may_cancel(user: &PageUser, study: &StudyRecord) -> bool {
    user.may(Action::CancelAnyStudy)
        || (user.may(Action::CancelOwnStudy) && study.submitted_by == user.identity.username)
}

/// `GET /studies/{id}`.
pub async fn show(
    State(state): State<Shared>,
    user: PageUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    user.require(Action::ReadStudies, "read studies")?;
    let study = record(&state, &user, &id).await?;
    let percent = study
        .chunks_done
        .saturating_mul(100)
        .checked_div(study.chunks_total)
        .unwrap_or(0);
    render(&StudyPage {
        chrome: user.chrome(SECTION),
        study: row(&study),
        params: serde_json::to_string_pretty(&study.params).unwrap_or_default(),
        may_cancel: may_cancel(&user, &study),
        is_final: study.state.is_final(),
        percent,
        record: study,
    })
}

/// `POST /studies/{id}/cancel` (form, CSRF-checked).
pub async fn cancel(
    State(state): State<Shared>,
    user: PageUser,
    Path(id): Path<String>,
    Form(form): Form<crate::web::login::CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    user.require(Action::ReadStudies, "read studies")?;
    let study = record(&state, &user, &id).await?;
    if !may_cancel(&user, &study) {
        let action = if user.may(Action::CancelOwnStudy) {
            Action::CancelAnyStudy
        } else {
            Action::CancelOwnStudy
        };
        return Err(PageError::Forbidden {
            chrome: Box::new(user.chrome(SECTION)),
            action,
            what: if action == Action::CancelAnyStudy {
                "cancel other users' studies"
            } else {
                "cancel studies"
            },
        });
    }
    state
        .engine
        .cancel(&study.id, &user.identity.username)
        .await
        .map_err(|e| PageError::api(&user, SECTION, e))?;
    tracing::info!(study = %id, user = %user.identity.username, "Study cancelled from the web page.");
    Ok(see_other(&format!("/studies/{id}")))
}

/// The whole result: the record, the summary and every array.
async fn whole_result(
    state: &Shared,
    user: &PageUser,
    id: &str,
) -> Result<
    (
        StudyRecord,
        serde_json::Value,
        Vec<dtop_studies::NamedArray>,
    ),
    PageError,
> {
    user.require(Action::ReadStudies, "read studies")?;
    let study = record(state, user, id).await?;
    if study.state != StudyState::Succeeded {
        return Err(PageError::NotFound(
            Some(Box::new(user.chrome(SECTION))),
            format!("Study {id} has no result (it is {}).", study.state.as_str()),
        ));
    }
    let result = state
        .engine
        .result(&study.id)
        .await
        .map_err(|e| PageError::api(user, SECTION, e))?;
    let mut arrays = Vec::new();
    for a in &result.arrays {
        arrays.push(
            state
                .engine
                .array(&study.id, &a.name)
                .await
                .map_err(|e| PageError::api(user, SECTION, e))?,
        );
    }
    Ok((study, result.summary, arrays))
}

fn attachment(content_type: &'static str, file_name: String, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /studies/{id}/download.json`: record, summary and arrays in one JSON document.
pub async fn download_json(
    State(state): State<Shared>,
    user: PageUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (study, summary, arrays) = whole_result(&state, &user, &id).await?;
    let body = serde_json::json!({"study": study, "summary": summary, "arrays": arrays});
    Ok(attachment(
        "application/json",
        format!("{id}.json"),
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    ))
}

/// `GET /studies/{id}/download.csv`: every array as CSV, each after a `# array: NAME` line.
pub async fn download_csv(
    State(state): State<Shared>,
    user: PageUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (_, _, arrays) = whole_result(&state, &user, &id).await?;
    let mut body = String::new();
    for array in &arrays {
        body.push_str(&format!("# array: {}\n", array.name));
        body.push_str(&array.to_csv());
        body.push('\n');
    }
    Ok(attachment(
        "text/csv; charset=utf-8",
        format!("{id}.csv"),
        body,
    ))
}
