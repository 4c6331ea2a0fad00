//! Owns the model pages: the catalogue, one model's versions (who made each, when, from what),
//! one version's modal summary and receptance FRFs, and the comparison of two versions
//! (frequencies side by side, the MAC matrix of mode shapes, an FRF overlay drawn by
//! `web/src/model.ts`), and the "add" form (a new model or a new version of one, checked as
//! `dtop model add` and the API check it). Modal results come from
//! `dtop_dynamics::frf::modal_analysis`, FRFs from the `frf` study kind's own functions, and
//! the MAC from `dtop_dynamics::mac`; no arithmetic here.

use std::sync::atomic::AtomicBool;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use dtop_auth::Action;
use dtop_dynamics::frf::ModalAnalysis;
use dtop_engine::{ModelStatus, ModelVersion, ReviewDecision};
use dtop_studies::{Budget, ChunkCtx, FieldProblem, ModelRef, ModelSpec, Provenance, StudyKind};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::Shared;
use crate::web::page::{Chrome, PageError, PageUser, render, see_other};

const SECTION: &str = "models";
/// Points of the FRF drawn on model pages.
const FRF_POINTS: f64 = 600.0;

/// One row of the catalogue.
#[derive(Debug)]
struct Entry {
    name: String,
    latest: u32,
    description: String,
    created_by: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "models.html")]
struct ListPage {
    chrome: Chrome,
    entries: Vec<Entry>,
}

/// `GET /models`: every model with its latest version.
pub async fn list(State(state): State<Shared>, user: PageUser) -> Result<Response, PageError> {
    user.require(Action::ReadModels, "read models")?;
    let models = all(&state, &user).await?;
    let mut entries: Vec<Entry> = Vec::new();
    for m in models {
        let entry = Entry {
            name: m.name.clone(),
            latest: m.version,
            description: m.spec.description.clone(),
            created_by: m.created_by.clone(),
            created_at: m.created_at.clone(),
        };
        match entries.last_mut() {
            Some(last) if last.name == m.name => *last = entry,
            _ => entries.push(entry),
        }
    }
    render(&ListPage {
        chrome: user.chrome(SECTION),
        entries,
    })
}

#[derive(Template)]
#[template(path = "model_new.html")]
struct NewPage {
    chrome: Chrome,
    name: String,
    spec: String,
    /// The name is in the catalogue already: this adds its next version.
    new_version: bool,
    name_problems: Vec<String>,
    spec_problems: Vec<String>,
    may_add: bool,
    roles: String,
}

/// `GET /models/new?name=`.
#[derive(Debug, Deserialize)]
pub struct NewQuery {
    /// A catalogue model: the form adds its next version, pre-filled from its latest.
    pub name: Option<String>,
}

/// The spec a new model's form starts from: the Southampton rig's.
fn starting_spec() -> ModelSpec {
    dtop_studies::model::builtin_model("southampton").unwrap_or_else(|| ModelSpec {
        description: String::new(),
        structure: dtop_dynamics::ShearBuildingConfig::southampton(),
        sensors: Default::default(),
    })
}

fn pretty(spec: &ModelSpec) -> String {
    serde_json::to_string_pretty(spec).unwrap_or_default()
}

/// The form's problems, each put next to its field: the name's, and the model's (its JSON
/// path in front of the message), pure.
fn split_problems(problems: Vec<FieldProblem>) -> (Vec<String>, Vec<String>) {
    let (name, spec): (Vec<_>, Vec<_>) = problems.into_iter().partition(|p| p.field == "name");
    (
        name.into_iter().map(|p| p.message).collect(),
        spec.into_iter()
            .map(|p| match p.field.as_str() {
                "" | "spec" => p.message,
                field => format!("{field}: {}", p.message),
            })
            .collect(),
    )
}

/// Reads the posted spec text as a ModelSpec, or the problem at its JSON path (pure).
fn parse_spec(text: &str) -> Result<ModelSpec, FieldProblem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let spec = serde_path_to_error::deserialize::<_, ModelSpec>(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let field = if at == "." || at.is_empty() {
            "spec".to_owned()
        } else {
            format!("model.{at}")
        };
        FieldProblem::new(field, e.inner().to_string())
    })?;
    de.end()
        .map_err(|e| FieldProblem::new("spec", e.to_string()))?;
    Ok(spec)
}

/// `GET /models/new[?name=]`: the form, for a new model or the next version of `name`;
/// read-only for a role that may not add models.
pub async fn new_form(
    State(state): State<Shared>,
    user: PageUser,
    Query(query): Query<NewQuery>,
) -> Result<Response, PageError> {
    user.require(Action::ReadModels, "read models")?;
    let (name, spec, new_version) = match query.name.filter(|n| !n.trim().is_empty()) {
        Some(name) => {
            let latest = all(&state, &user)
                .await?
                .into_iter()
                .filter(|m| m.name == name)
                .max_by_key(|m| m.version);
            match latest {
                Some(m) => (name, pretty(&m.spec), true),
                None => (name, pretty(&starting_spec()), false),
            }
        }
        None => (String::new(), pretty(&starting_spec()), false),
    };
    render(&NewPage {
        chrome: user.chrome(SECTION),
        name,
        spec,
        new_version,
        name_problems: Vec::new(),
        spec_problems: Vec::new(),
        may_add: user.may(Action::AddModel),
        roles: crate::web::page::roles_allowed(Action::AddModel).join(", "),
    })
}

/// `POST /models/new`: adds the version (CSRF and `AddModel` checked first), then shows it;
/// with problems, the form again with every problem next to its field and the text kept.
pub async fn add(
    State(state): State<Shared>,
    user: PageUser,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let field = |name: &str| {
        crate::web::form::posted(&pairs, name)
            .unwrap_or_default()
            .to_owned()
    };
    user.check_csrf(&field(crate::web::cookie::CSRF_FIELD))?;
    user.require(Action::AddModel, "add models")?;
    let name = field("name").trim().to_owned();
    let spec_text = field("spec");
    let mut problems: Vec<FieldProblem> = ModelRef::name_problem(&name)
        .map(|p| FieldProblem::new("name", p))
        .into_iter()
        .collect();
    match parse_spec(&spec_text) {
        Err(problem) => problems.push(problem),
        Ok(spec) if problems.is_empty() => {
            let added = state
                .engine
                .add_model(&name, spec, Provenance::Manual, &user.identity.username)
                .await;
            match added.map_err(ApiError::from) {
                Ok(added) => {
                    tracing::info!(model = %added.name, version = added.version, user = %user.identity.username, "Model added from the web form.");
                    return Ok(see_other(&format!(
                        "/models/{}/{}",
                        added.name, added.version
                    )));
                }
                Err(ApiError::Invalid(found)) => problems = found,
                Err(e) => return Err(PageError::api(&user, SECTION, e)),
            }
        }
        // A bad name is reported with the spec checked too: every problem at once.
        Ok(spec) => problems.extend(spec.problems()),
    }
    let new_version = all(&state, &user).await?.iter().any(|m| m.name == name);
    let (name_problems, spec_problems) = split_problems(problems);
    let mut response = render(&NewPage {
        chrome: user.chrome(SECTION),
        name,
        spec: spec_text,
        new_version,
        name_problems,
        spec_problems,
        may_add: true,
        roles: String::new(),
    })?;
    *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    Ok(response)
}

async fn all(state: &Shared, user: &PageUser) -> Result<Vec<ModelVersion>, PageError> {
    state
        .engine
        .models()
        .await
        .map_err(|e| PageError::api(user, SECTION, e))
}

/// One version as a table row.
#[derive(Debug)]
struct VersionRow {
    version: u32,
    created_by: String,
    created_at: String,
    provenance: String,
    floors: usize,
    /// `current`, `proposed`, `approved` or `rejected`.
    status: &'static str,
    /// "by <who> at <when>: <note>" once reviewed; empty before.
    review: String,
}

fn provenance(p: &dtop_studies::Provenance) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

fn version_row(m: &ModelVersion) -> VersionRow {
    VersionRow {
        version: m.version,
        created_by: m.created_by.clone(),
        created_at: m.created_at.clone(),
        provenance: provenance(&m.provenance),
        floors: m.spec.floors(),
        status: m.status.as_str(),
        review: m.review.as_ref().map_or_else(String::new, |r| {
            if r.note.is_empty() {
                format!("by {} at {} UTC", r.by, r.at)
            } else {
                format!("by {} at {} UTC: {}", r.by, r.at, r.note)
            }
        }),
    }
}

#[derive(Template)]
#[template(path = "model_versions.html")]
struct VersionsPage {
    chrome: Chrome,
    name: String,
    description: String,
    rows: Vec<VersionRow>,
}

/// `GET /models/{name}`: every version.
pub async fn versions(
    State(state): State<Shared>,
    user: PageUser,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    user.require(Action::ReadModels, "read models")?;
    let versions: Vec<ModelVersion> = all(&state, &user)
        .await?
        .into_iter()
        .filter(|m| m.name == name)
        .collect();
    let Some(latest) = versions.last() else {
        return Err(PageError::NotFound(
            Some(Box::new(user.chrome(SECTION))),
            format!("There is no model {name:?}."),
        ));
    };
    render(&VersionsPage {
        chrome: user.chrome(SECTION),
        description: latest.spec.description.clone(),
        rows: versions.iter().rev().map(version_row).collect(),
        name,
    })
}

/// One mode as the page shows it.
#[derive(Debug)]
struct ModeRow {
    mode: usize,
    frequency_hz: String,
    damping_percent: String,
    shape: Vec<String>,
}

fn mode_rows(modal: &ModalAnalysis) -> Vec<ModeRow> {
    modal
        .modes
        .iter()
        .map(|m| ModeRow {
            mode: m.mode,
            frequency_hz: format!("{:.4}", m.frequency_hz),
            damping_percent: format!("{:.3}", m.modal_damping_ratio * 100.0),
            shape: m.shape.iter().map(|x| format!("{x:+.4}")).collect(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "model_version.html")]
struct VersionPage {
    chrome: Chrome,
    name: String,
    version: u32,
    row: VersionRow,
    spec: String,
    modes: Vec<ModeRow>,
    dofs: Vec<String>,
    frf: String,
    versions: Vec<u32>,
    /// Whether to show the approve/reject form: a proposed version, a user who may review.
    may_review: bool,
}

async fn find(
    state: &Shared,
    user: &PageUser,
    name: &str,
    version: Option<u32>,
) -> Result<ModelVersion, PageError> {
    if let Some(problem) = ModelRef::name_problem(name) {
        return Err(PageError::NotFound(
            Some(Box::new(user.chrome(SECTION))),
            format!("There is no model {name:?} ({problem})."),
        ));
    }
    state
        .engine
        .model(&ModelRef {
            name: name.to_owned(),
            version,
        })
        .await
        .map_err(|e| PageError::api(user, SECTION, e))
}

fn modal(spec: &ModelSpec) -> Result<ModalAnalysis, ApiError> {
    let building = spec.building().map_err(ApiError::Invalid)?;
    dtop_dynamics::frf::modal_analysis(&building).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The receptance FRF magnitudes of `spec` for a force at its force-gauge floor, from the
/// `frf` kind, on `f_min_hz..f_max_hz`: `{"frequency_hz": [...], "series": [{"name", "values"}]}`.
fn frf(spec: &ModelSpec, f_min_hz: f64, f_max_hz: f64) -> Result<serde_json::Value, ApiError> {
    let params = serde_json::json!({"grid": {
        "f_min_hz": f_min_hz,
        "f_max_hz": f_max_hz,
        "df_hz": (f_max_hz - f_min_hz) / FRF_POINTS,
    }});
    let study = |e: dtop_studies::StudyError| ApiError::Internal(e.to_string());
    let resolved = dtop_studies::plan(
        StudyKind::Frf,
        spec,
        &params,
        &dtop_studies::Inputs::none(),
        &Budget::default(),
    )
    .map_err(study)?;
    let never = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&never);
    let chunks = (0..resolved.chunks)
        .map(|i| {
            dtop_studies::run_chunk(
                StudyKind::Frf,
                spec,
                &resolved.params,
                0,
                i,
                &ctx,
                &dtop_studies::Inputs::none(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(study)?;
    let output = dtop_studies::reduce(
        StudyKind::Frf,
        spec,
        &resolved.params,
        0,
        &chunks,
        &dtop_studies::Inputs::none(),
    )
    .map_err(study)?;
    let mut frequency_hz = serde_json::Value::Null;
    let mut series = Vec::new();
    for array in &output.arrays {
        for column in &array.columns {
            if column.name == "frequency_hz" {
                frequency_hz = serde_json::json!(column.values);
            } else if column.name.contains("magnitude") {
                series.push(serde_json::json!({"name": column.name, "values": column.values}));
            }
        }
    }
    Ok(serde_json::json!({"frequency_hz": frequency_hz, "series": series}))
}

/// The FRF band that shows every mode of both analyses: 1/20 of the lowest to 1.5× the highest.
fn band(analyses: &[&ModalAnalysis]) -> (f64, f64) {
    let freqs = analyses
        .iter()
        .flat_map(|a| a.modes.iter().map(|m| m.frequency_hz));
    let (lo, hi) = freqs.fold((f64::INFINITY, 0.0_f64), |(lo, hi), f| {
        (lo.min(f), hi.max(f))
    });
    if lo.is_finite() && hi > 0.0 {
        (lo / 20.0, hi * 1.5)
    } else {
        (0.1, 100.0)
    }
}

/// `GET /models/{name}/{version}` (`latest` for the newest).
pub async fn version(
    State(state): State<Shared>,
    user: PageUser,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, PageError> {
    user.require(Action::ReadModels, "read models")?;
    let number = parse_version(&user, &version)?;
    let model = find(&state, &user, &name, number).await?;
    let versions = all(&state, &user)
        .await?
        .iter()
        .filter(|m| m.name == name)
        .map(|m| m.version)
        .collect();
    let spec = model.spec.clone();
    let computed = tokio::task::spawn_blocking(move || {
        let analysis = modal(&spec)?;
        let (lo, hi) = band(&[&analysis]);
        let frf = frf(&spec, lo, hi)?;
        Ok::<_, ApiError>((analysis, frf))
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?
    .map_err(|e| PageError::api(&user, SECTION, e))?;
    let (analysis, frf) = computed;
    render(&VersionPage {
        chrome: user.chrome(SECTION),
        row: version_row(&model),
        spec: serde_json::to_string_pretty(&model.spec).unwrap_or_default(),
        dofs: dof_names(&analysis),
        modes: mode_rows(&analysis),
        frf: frf.to_string(),
        may_review: model.status == ModelStatus::Proposed && user.may(Action::ReviewModel),
        version: model.version,
        name: model.name,
        versions,
    })
}

/// The approve/reject form's fields.
#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    decision: ReviewDecision,
    #[serde(default)]
    note: String,
}

/// `POST /models/{name}/{version}/review`: approves or rejects a proposed version.
pub async fn review(
    State(state): State<Shared>,
    user: PageUser,
    Path((name, version)): Path<(String, String)>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    user.require(Action::ReviewModel, "approve or reject model versions")?;
    let Some(number) = parse_version(&user, &version)? else {
        return Err(PageError::NotFound(
            Some(Box::new(user.chrome(SECTION))),
            "Name the version to review.".into(),
        ));
    };
    state
        .engine
        .review_model(
            &name,
            number,
            form.decision,
            &user.identity.username,
            form.note.trim(),
        )
        .await
        .map_err(|e| PageError::api(&user, SECTION, e))?;
    Ok(see_other(&format!("/models/{name}/{number}")))
}

fn dof_names(analysis: &ModalAnalysis) -> Vec<String> {
    (0..analysis.dofs)
        .map(|i| {
            if i < analysis.floors {
                format!("floor {}", i + 1)
            } else {
                "proof mass".to_owned()
            }
        })
        .collect()
}

fn parse_version(user: &PageUser, text: &str) -> Result<Option<u32>, PageError> {
    match text {
        "latest" => Ok(None),
        v => v
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1)
            .map(Some)
            .ok_or_else(|| {
                PageError::NotFound(
                    Some(Box::new(user.chrome(SECTION))),
                    format!("There is no version {v:?}."),
                )
            }),
    }
}

/// The MAC of two versions' shapes over the floors both have (the lower floors, when one
/// version has more storeys), written to three decimals; "–" when a shape is all zeros.
fn mac_cell(a: &[f64], b: &[f64]) -> String {
    let n = a.len().min(b.len());
    dtop_dynamics::mac(&a[..n], &b[..n]).map_or_else(|| "–".to_owned(), |m| format!("{m:.3}"))
}

/// One frequency row of the comparison.
#[derive(Debug)]
struct CompareRow {
    mode: usize,
    a_hz: String,
    b_hz: String,
    diff_hz: String,
    diff_percent: String,
    positive: bool,
    a_zeta_percent: String,
    b_zeta_percent: String,
}

#[derive(Template)]
#[template(path = "model_compare.html")]
struct ComparePage {
    chrome: Chrome,
    a: String,
    b: String,
    models: Vec<String>,
    rows: Vec<CompareRow>,
    mac_rows: Vec<(usize, Vec<String>)>,
    mac_cols: Vec<usize>,
    frf_a: String,
    frf_b: String,
}

/// `?a=name@v&b=name@v` of the comparison.
#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// First model.
    #[serde(default)]
    pub a: String,
    /// Second model.
    #[serde(default)]
    pub b: String,
}

fn parse_ref(user: &PageUser, text: &str) -> Result<ModelRef, PageError> {
    text.parse::<ModelRef>().map_err(|e| {
        PageError::api(
            user,
            SECTION,
            ApiError::invalid("a/b", format!("{text:?}: {e}")),
        )
    })
}

/// `GET /models/compare?a=name@v&b=name@v`.
pub async fn compare(
    State(state): State<Shared>,
    user: PageUser,
    Query(query): Query<CompareQuery>,
) -> Result<Response, PageError> {
    user.require(Action::ReadModels, "read models")?;
    let ra = parse_ref(&user, &query.a)?;
    let rb = parse_ref(&user, &query.b)?;
    let a = find(&state, &user, &ra.name, ra.version).await?;
    let b = find(&state, &user, &rb.name, rb.version).await?;
    let models = all(&state, &user)
        .await?
        .iter()
        .map(|m| format!("{}@{}", m.name, m.version))
        .collect();
    let (spec_a, spec_b) = (a.spec.clone(), b.spec.clone());
    let (ma, mb, frf_a, frf_b) = tokio::task::spawn_blocking(move || {
        let ma = modal(&spec_a)?;
        let mb = modal(&spec_b)?;
        let (lo, hi) = band(&[&ma, &mb]);
        Ok::<_, ApiError>((ma, mb, frf(&spec_a, lo, hi)?, frf(&spec_b, lo, hi)?))
    })
    .await
    .map_err(|e| PageError::Internal(e.to_string()))?
    .map_err(|e| PageError::api(&user, SECTION, e))?;
    let rows = ma
        .modes
        .iter()
        .zip(&mb.modes)
        .map(|(x, y)| {
            let diff = y.frequency_hz - x.frequency_hz;
            CompareRow {
                mode: x.mode,
                a_hz: format!("{:.4}", x.frequency_hz),
                b_hz: format!("{:.4}", y.frequency_hz),
                diff_hz: format!("{diff:+.4}"),
                diff_percent: format!("{:+.2}", 100.0 * diff / x.frequency_hz),
                positive: diff > 0.0,
                a_zeta_percent: format!("{:.3}", x.modal_damping_ratio * 100.0),
                b_zeta_percent: format!("{:.3}", y.modal_damping_ratio * 100.0),
            }
        })
        .collect();
    let mac_rows = ma
        .modes
        .iter()
        .map(|x| {
            (
                x.mode,
                mb.modes
                    .iter()
                    .map(|y| mac_cell(&x.shape, &y.shape))
                    .collect(),
            )
        })
        .collect();
    render(&ComparePage {
        chrome: user.chrome(SECTION),
        a: format!("{}@{}", a.name, a.version),
        b: format!("{}@{}", b.name, b.version),
        models,
        rows,
        mac_cols: mb.modes.iter().map(|m| m.mode).collect(),
        mac_rows,
        frf_a: frf_a.to_string(),
        frf_b: frf_b.to_string(),
    })
}

#[cfg(test)]
mod form_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_spec_problem_names_its_json_path_and_a_name_problem_stays_with_the_name() {
        let problem = parse_spec(r#"{"structure": {"floor_masses_kg": "heavy"}}"#).unwrap_err();
        assert_eq!(problem.field, "model.structure.floor_masses_kg");
        assert!(parse_spec("{} trailing").is_err());
        assert!(parse_spec(&pretty(&starting_spec())).is_ok());
        let (name, spec) = split_problems(vec![
            FieldProblem::new("name", "must not be empty"),
            FieldProblem::new("model.structure", "floor_masses_kg is empty"),
        ]);
        assert_eq!(name, ["must not be empty"]);
        assert_eq!(spec, ["model.structure: floor_masses_kg is empty"]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_mac_cell_compares_the_floors_both_versions_have() {
        assert_eq!(mac_cell(&[1.0, 2.0, 3.0], &[-2.0, -4.0]), "1.000");
        assert_eq!(mac_cell(&[0.0, 0.0], &[1.0, 1.0]), "–");
    }

    #[test]
    fn the_frf_of_a_model_has_a_peak_at_each_natural_frequency() {
        // Two independent computations: the eigen-solution (modal) and the frequency-response
        // solve (frf kind). The global maximum of one receptance need not be mode 1 (a floor
        // near a mode's node, or a mode with more mass participation, peaks higher), so the
        // check is that every mode in the band is a local maximum of some floor's magnitude.
        let spec = dtop_studies::model::builtin_model("southampton").unwrap();
        let m = modal(&spec).unwrap();
        let (lo, hi) = band(&[&m]);
        let frf = frf(&spec, lo, hi).unwrap();
        let f: Vec<f64> = serde_json::from_value(frf["frequency_hz"].clone()).unwrap();
        let series: Vec<Vec<f64>> = frf["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_value(s["values"].clone()).unwrap())
            .collect();
        assert!(!series.is_empty());
        let peaks: Vec<f64> = series
            .iter()
            .flat_map(|mag| {
                (1..mag.len() - 1)
                    .filter(|&i| mag[i] > mag[i - 1] && mag[i] >= mag[i + 1])
                    .map(|i| f[i])
                    .collect::<Vec<_>>()
            })
            .collect();
        // The grid step is (hi - lo) / 600; a lightly damped peak sits within a step or two.
        let step = (hi - lo) / FRF_POINTS;
        for mode in &m.modes {
            let fn_hz = mode.frequency_hz;
            assert!(
                peaks.iter().any(|p| (p - fn_hz).abs() < 2.0 * step),
                "no FRF peak near the mode at {fn_hz} Hz; peaks at {peaks:?}"
            );
        }
    }
}
