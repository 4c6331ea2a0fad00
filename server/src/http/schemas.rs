//! Owns the documentation mirrors of the engine's records for the OpenAPI document (the
//! engine and studies crates stay free of utoipa; `crate::openapi`'s test keeps each mirror's
//! field names equal to the real type's JSON), and [`KindInfo`], which the API also answers.

use serde::Serialize;
use utoipa::ToSchema;

/// A study kind and what it computes.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindInfo {
    /// Its name (`modal`, `frf`, ...).
    pub kind: String,
    /// One line.
    pub description: String,
    /// The measured tables it takes (none for kinds that compute from the model alone).
    pub inputs: Vec<InputInfo>,
}

/// One measured table a study kind takes.
#[derive(Debug, Serialize, ToSchema)]
pub struct InputInfo {
    /// The input's name in `inputs` (`acceleration`, `frf`).
    pub name: String,
    /// Whether the kind refuses a study without it.
    pub required: bool,
    /// Its columns and units, and where it usually comes from.
    pub description: String,
}

/// `dtop_engine::StudyRecord`: a study as stored.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StudyRecord)]
pub struct StudyRecordDoc {
    /// `st_` and a UUIDv7.
    pub id: String,
    /// Study kind.
    pub kind: String,
    /// `name@version` of the catalogue model, or null for an inline model.
    pub model_ref: Option<String>,
    /// The model as resolved at submission.
    #[schema(value_type = Object)]
    pub model: serde_json::Value,
    /// The parameters as submitted.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// The seed.
    pub seed: u64,
    /// Submitter's user name.
    pub submitted_by: String,
    /// RFC 3339 UTC.
    pub submitted_at: String,
    /// RFC 3339 UTC, once final.
    pub finished_at: Option<String>,
    /// `queued`, `running`, `reducing`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Chunks in all.
    pub chunks_total: u32,
    /// Chunks finished.
    pub chunks_done: u32,
    /// Why it failed or who cancelled it.
    pub error: Option<String>,
    /// Increases on every change.
    pub revision: u64,
    /// The measured tables it was given (`GET /studies/{id}/inputs/{name}`).
    pub inputs: Vec<ArrayRefDoc>,
}

/// `dtop_engine::ArrayRef`: a stored array.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ArrayRef)]
pub struct ArrayRefDoc {
    /// Name, unique within the study.
    pub name: String,
    /// SHA-256 of its canonical JSON, hex.
    pub sha256_hex: String,
    /// Rows.
    pub rows: u64,
    /// Column names.
    pub columns: Vec<String>,
}

/// `dtop_engine::StudyResult`: a finished study's result.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StudyResult)]
pub struct StudyResultDoc {
    /// The study id.
    pub study: String,
    /// The kind's JSON summary.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// The arrays.
    pub arrays: Vec<ArrayRefDoc>,
    /// `name@version` of the model version the study proposed (status `proposed`), if any.
    pub proposed_model: Option<String>,
}

/// `dtop_studies::Column`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Column)]
pub struct ColumnDoc {
    /// Name with its unit (`frequency_hz`).
    pub name: String,
    /// One value per row.
    pub values: Vec<f64>,
}

/// `dtop_studies::NamedArray`: a table of equal-length columns.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NamedArray)]
pub struct NamedArrayDoc {
    /// Name.
    pub name: String,
    /// Columns.
    pub columns: Vec<ColumnDoc>,
}

/// `dtop_engine::ModelVersion`: one version of a catalogue model.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ModelVersion)]
pub struct ModelVersionDoc {
    /// Catalogue name.
    pub name: String,
    /// From 1.
    pub version: u32,
    /// The model (`dtop_studies::ModelSpec`).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Where it came from (`dtop_studies::Provenance`).
    #[schema(value_type = Object)]
    pub provenance: serde_json::Value,
    /// Who made it.
    pub created_by: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// `current` (built in, by hand, imported), `proposed` (by a study, awaiting review),
    /// `approved` or `rejected`.
    pub status: String,
    /// The review of a proposed version: who, when, why.
    pub review: Option<ReviewDoc>,
}

/// `dtop_engine::Review`: an operator's decision on a proposed model version.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Review)]
pub struct ReviewDoc {
    /// Who decided.
    pub by: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// Why, as written.
    pub note: String,
}
