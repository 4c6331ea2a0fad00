//! SCAFFOLD (issue 12): the public API of the studies engine, which the API server, the worker
//! daemon and `dtop up` program against. Bodies are filled in by the engine's implementation.

#![allow(clippy::todo, unused_variables)]

use std::path::PathBuf;
use std::time::Duration;

use dtop_studies::{Budget, FieldProblem, ModelRef, ModelSpec, NamedArray, Provenance, StudyKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Where the engine keeps its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `postgres://user@host:port/db` or `sqlite:///path/to/file.db` (created if missing).
    /// Never logged with its password.
    pub database_url: String,
    /// Directory of the result store: large arrays, one file per content hash.
    pub result_dir: PathBuf,
    /// Study size limits and chunk size.
    #[serde(default)]
    pub budget: Budget,
    /// At most this many chunks of one study are queued or running at once, so one big study
    /// does not starve others.
    #[serde(default = "default_chunks_in_flight")]
    pub chunks_in_flight_per_study: u32,
    /// A failed chunk is tried this many times in all before its study fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u16,
    /// A chunk whose worker stopped answering (killed, cut off) runs again elsewhere after this.
    #[serde(default = "default_rescue_after_s")]
    pub rescue_after_s: f64,
}

fn default_chunks_in_flight() -> u32 {
    8
}
fn default_max_attempts() -> u16 {
    3
}
fn default_rescue_after_s() -> f64 {
    30.0
}

/// A study's id: `st_` and a UUIDv7 (time-ordered, citable, unguessable enough to share).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StudyId(pub String);

/// Where a study is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Accepted, no chunk started yet.
    Queued,
    /// Chunks running.
    Running,
    /// All chunks done; the reduce step is running.
    Reducing,
    /// Result stored.
    Succeeded,
    /// Ended with an error (`StudyRecord::error` says why).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl StudyState {
    /// Whether the study will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StudyState::Succeeded | StudyState::Failed | StudyState::Cancelled
        )
    }
}

/// The model a study is submitted with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelChoice {
    /// From the catalogue (`name` for the latest version, or `name@version`).
    Catalogue(ModelRef),
    /// Given in full with the request.
    Inline(ModelSpec),
}

/// A study to submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// What to compute.
    pub kind: StudyKind,
    /// On which model.
    pub model: ModelChoice,
    /// The kind's parameters (validated against the kind before anything is queued).
    pub params: serde_json::Value,
    /// Seed of the study's random streams; the engine draws one if `None`.
    pub seed: Option<u64>,
    /// User name of the submitter.
    pub submitted_by: String,
}

/// A study as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Its id.
    pub id: StudyId,
    /// What it computes.
    pub kind: StudyKind,
    /// `name@version` of the catalogue model it ran on, or `None` for an inline model.
    pub model_ref: Option<String>,
    /// The model, resolved at submission (a later catalogue version does not change it).
    pub model: ModelSpec,
    /// The parameters as submitted.
    pub params: serde_json::Value,
    /// The seed.
    pub seed: u64,
    /// Who submitted it.
    pub submitted_by: String,
    /// When, RFC 3339 UTC.
    pub submitted_at: String,
    /// When it reached a final state, RFC 3339 UTC.
    pub finished_at: Option<String>,
    /// Where it is.
    pub state: StudyState,
    /// Chunks in all.
    pub chunks_total: u32,
    /// Chunks finished.
    pub chunks_done: u32,
    /// Why it failed or who cancelled it.
    pub error: Option<String>,
    /// Increases on every change; for watchers.
    pub revision: u64,
}

/// Filters for [`Engine::list_studies`]; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyFilter {
    /// Only this kind.
    pub kind: Option<StudyKind>,
    /// Only studies on this catalogue model name (any version).
    pub model_name: Option<String>,
    /// Only studies submitted by this user.
    pub submitted_by: Option<String>,
    /// Only studies in this state.
    pub state: Option<StudyState>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A finished study's result: the summary, and each large array's name, hash and shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyResult {
    /// The study.
    pub study: StudyId,
    /// The kind's JSON summary.
    pub summary: serde_json::Value,
    /// The arrays, kept in the result store.
    pub arrays: Vec<ArrayRef>,
}

/// A stored array: fetch it with [`Engine::array`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRef {
    /// Name, unique within the study.
    pub name: String,
    /// SHA-256 of its canonical JSON, hex: its address in the result store.
    pub sha256_hex: String,
    /// Rows.
    pub rows: u64,
    /// Column names.
    pub columns: Vec<String>,
}

/// One version of a catalogue model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Catalogue name.
    pub name: String,
    /// Version, from 1.
    pub version: u32,
    /// The model.
    pub spec: ModelSpec,
    /// Where it came from.
    pub provenance: Provenance,
    /// Who made it.
    pub created_by: String,
    /// When, RFC 3339 UTC.
    pub created_at: String,
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is invalid: every problem (HTTP 400).
    #[error("invalid request: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
    /// The study is larger than the budget (HTTP 400 with the budget).
    #[error("study too large: {work_units} work units, budget {max_work_units}")]
    TooLarge {
        /// What it would cost.
        work_units: u64,
        /// What the budget allows.
        max_work_units: u64,
    },
    /// No such study, model or array (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the state (e.g. cancelling a finished study; HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached (HTTP 503); retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else, with the reason.
    #[error("{0}")]
    Internal(String),
}

/// The engine: a handle on the database and the result store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {}

/// How a worker process runs chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerOptions {
    /// Name in logs and in the database (default: host name and PID).
    pub name: String,
    /// Chunks run at once (default: the number of cores).
    pub concurrency: u32,
}

impl Engine {
    /// Connects, applies migrations (River's and ours), and seeds the built-in models.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] when the database cannot be reached.
    pub async fn connect(config: &EngineConfig) -> Result<Engine, EngineError> {
        todo!()
    }

    /// Whether the database answers now.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn health(&self) -> Result<(), EngineError> {
        todo!()
    }

    /// Validates, plans and queues a study; nothing is queued unless it is valid.
    ///
    /// # Errors
    /// `Invalid`, `TooLarge`, `NotFound` (catalogue model), `Unavailable`.
    pub async fn submit(&self, request: SubmitRequest) -> Result<StudyRecord, EngineError> {
        todo!()
    }

    /// The studies matching `filter`, newest first.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list_studies(
        &self,
        filter: &StudyFilter,
    ) -> Result<Vec<StudyRecord>, EngineError> {
        todo!()
    }

    /// One study.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`.
    pub async fn study(&self, id: &StudyId) -> Result<StudyRecord, EngineError> {
        todo!()
    }

    /// Cancels a study: every queued chunk is dropped and running ones, on any machine, stop
    /// within seconds.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` (already final), `Unavailable`.
    pub async fn cancel(&self, id: &StudyId, by: &str) -> Result<StudyRecord, EngineError> {
        todo!()
    }

    /// The result of a succeeded study.
    ///
    /// # Errors
    /// `NotFound` (no such study, or no result yet), `Unavailable`.
    pub async fn result(&self, id: &StudyId) -> Result<StudyResult, EngineError> {
        todo!()
    }

    /// One array of a study's result, from the result store.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`, `Internal` (store file missing or corrupt).
    pub async fn array(&self, id: &StudyId, name: &str) -> Result<NamedArray, EngineError> {
        todo!()
    }

    /// Studies whose revision changed after `after_revision` (any study), oldest change first,
    /// with the highest revision seen: for SSE streams and the MQTT publisher.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn changes_since(
        &self,
        after_revision: u64,
    ) -> Result<(Vec<StudyRecord>, u64), EngineError> {
        todo!()
    }

    /// Every model's every version, by name then version.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn models(&self) -> Result<Vec<ModelVersion>, EngineError> {
        todo!()
    }

    /// One model version (`name` alone: the latest).
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`.
    pub async fn model(&self, model: &ModelRef) -> Result<ModelVersion, EngineError> {
        todo!()
    }

    /// Adds a new version of `name` (version 1 if new); refuses a non-physical model.
    ///
    /// # Errors
    /// `Invalid`, `Unavailable`.
    pub async fn add_model(
        &self,
        name: &str,
        spec: ModelSpec,
        provenance: Provenance,
        created_by: &str,
    ) -> Result<ModelVersion, EngineError> {
        todo!()
    }

    /// Runs chunks (and reduce steps) until `shutdown`, then stops fetching and lets running
    /// chunks finish. In-process for `dtop up`, and the body of `dtop-worker`. While the
    /// database is away it pauses and retries with backoff.
    ///
    /// # Errors
    /// `Internal` when the worker cannot start.
    pub async fn run_worker(
        &self,
        options: WorkerOptions,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        todo!()
    }

    /// Time after which a silent worker's chunk runs again elsewhere.
    pub fn rescue_after(&self) -> Duration {
        todo!()
    }
}
