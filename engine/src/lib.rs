//! The studies engine: the queue, the studies, their results and the model catalogue on
//! PostgreSQL (or an embedded SQLite file), and the worker runtime that runs study chunks. The
//! API server, the worker daemon and `dtop up` program against [`Engine`]. The computations are
//! `dtop_studies`' pure functions; this crate schedules them and keeps what they return.
//!
//! # Layout
//! - [`db`]: the pool on either backend, the URL (redacted in logs), migrations, and the
//!   classification of database errors (away → [`EngineError::Unavailable`]).
//! - `catalogue`: the model catalogue (versions, provenance, status, built-ins seeded once),
//!   and the review (approve/reject, audited) of versions studies propose.
//! - `studies`: submit, list, get, cancel, results and the revision feed.
//! - `jobs`: River's `chunk` and `reduce` jobs, the fan-out (at most
//!   `chunks_in_flight_per_study` chunks of a study queued at once) and the worker runtime.
//! - [`store`]: the result store, one file per SHA-256 of an array's canonical JSON (results,
//!   and the measured inputs studies are given).
//! - [`solvers`]: the third-party solvers (CalculiX) workers run for chunks that ask.
//!
//! See ARCHITECTURE.md, section "Studies engine", for the schema and a study's life cycle.

mod catalogue;
pub mod db;
mod jobs;
mod slots;
pub mod solvers;
pub mod store;
mod studies;

pub use db::DatabaseUrl;
pub use jobs::{ChunkRecorded, WorkerStats};
pub use solvers::SolversConfig;

use std::path::PathBuf;
use std::time::Duration;

use dtop_studies::{Budget, FieldProblem, ModelRef, ModelSpec, NamedArray, Provenance, StudyKind};
use serde::{Deserialize, Serialize};

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
    /// Also each chunk's time limit (River rescues only jobs with a timeout): a chunk still
    /// running after it is stopped and retried.
    #[serde(default = "default_rescue_after_s")]
    pub rescue_after_s: f64,
    /// How often workers look for chunks to run (River's fetch pacing).
    #[serde(default)]
    pub fetch: FetchConfig,
    /// Third-party solvers this process's workers run for chunks that ask for them.
    #[serde(default)]
    pub solvers: SolversConfig,
}

/// How a worker's River client looks for jobs. The defaults suit chunks of about 0.1 s and
/// longer; River's own (a 100 ms cooldown) would idle a worker for up to 100 ms after every
/// chunk shorter than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Least time between two fetches of one worker, and between two "jobs inserted"
    /// notifications of one process. A worker whose chunk ends sooner than this after its
    /// last fetch waits out the rest before fetching again, so a worker runs at most
    /// `concurrency / cooldown` jobs per second. 1 ms to `poll_interval_ms`.
    #[serde(default = "default_fetch_cooldown_ms")]
    pub cooldown_ms: u64,
    /// A worker that has heard of no new job fetches anyway after this long (River adds up to
    /// 10 % jitter): the fallback when a notification is lost or suppressed by the cooldown.
    /// `cooldown_ms` to 60 000 ms.
    #[serde(default = "default_fetch_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Chunks a worker claims beyond its `concurrency` while its chunks are short, so the
    /// next chunk is claimed and its inputs read while the current one computes: the claim's
    /// round trips no longer sit between two chunks. 0 to 4.
    #[serde(default = "default_fetch_prefetch")]
    pub prefetch: u32,
    /// Claiming ahead starts after a computation shorter than this; a chunk claimed ahead
    /// that waits this long for a core goes back to the queue (for an idle worker) and
    /// claiming ahead stops. 1 to 10 000 ms.
    #[serde(default = "default_fetch_prefetch_wait_ms")]
    pub prefetch_wait_ms: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            cooldown_ms: default_fetch_cooldown_ms(),
            poll_interval_ms: default_fetch_poll_interval_ms(),
            prefetch: default_fetch_prefetch(),
            prefetch_wait_ms: default_fetch_prefetch_wait_ms(),
        }
    }
}

/// Default of [`FetchConfig::cooldown_ms`].
pub const fn default_fetch_cooldown_ms() -> u64 {
    5
}
/// Default of [`FetchConfig::poll_interval_ms`].
pub const fn default_fetch_poll_interval_ms() -> u64 {
    1000
}
/// Default of [`FetchConfig::prefetch`].
pub const fn default_fetch_prefetch() -> u32 {
    1
}
/// Default of [`FetchConfig::prefetch_wait_ms`]: several times the gap it hides (5–13 ms
/// measured between two chunks of one worker), short against a chunk sized in seconds.
pub const fn default_fetch_prefetch_wait_ms() -> u64 {
    50
}
/// Largest [`FetchConfig::prefetch`].
pub const MAX_FETCH_PREFETCH: u32 = 4;
/// Largest [`FetchConfig::prefetch_wait_ms`].
pub const MAX_FETCH_PREFETCH_WAIT_MS: u64 = 10_000;
/// Largest [`FetchConfig::poll_interval_ms`]: a lost notification must not stall a study for
/// longer than this.
pub const MAX_FETCH_POLL_INTERVAL_MS: u64 = 60_000;

impl FetchConfig {
    /// [`Self::cooldown_ms`].
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }

    /// [`Self::poll_interval_ms`].
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// [`Self::prefetch_wait_ms`].
    pub fn prefetch_wait(&self) -> Duration {
        Duration::from_millis(self.prefetch_wait_ms)
    }

    /// Every problem of these settings, each under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        if self.cooldown_ms == 0 {
            out.push(FieldProblem::new(
                format!("{prefix}cooldown_ms"),
                "must be at least 1 ms (River's least)",
            ));
        }
        if self.poll_interval_ms < self.cooldown_ms {
            out.push(FieldProblem::new(
                format!("{prefix}poll_interval_ms"),
                format!(
                    "must be at least cooldown_ms ({} ms), got {} ms",
                    self.cooldown_ms, self.poll_interval_ms
                ),
            ));
        }
        if self.poll_interval_ms > MAX_FETCH_POLL_INTERVAL_MS {
            out.push(FieldProblem::new(
                format!("{prefix}poll_interval_ms"),
                format!(
                    "must be at most {MAX_FETCH_POLL_INTERVAL_MS} ms, got {} ms",
                    self.poll_interval_ms
                ),
            ));
        }
        if self.prefetch > MAX_FETCH_PREFETCH {
            out.push(FieldProblem::new(
                format!("{prefix}prefetch"),
                format!("must be 0 to {MAX_FETCH_PREFETCH}, got {}", self.prefetch),
            ));
        }
        if !(1..=MAX_FETCH_PREFETCH_WAIT_MS).contains(&self.prefetch_wait_ms) {
            out.push(FieldProblem::new(
                format!("{prefix}prefetch_wait_ms"),
                format!(
                    "must be 1 to {MAX_FETCH_PREFETCH_WAIT_MS} ms, got {} ms",
                    self.prefetch_wait_ms
                ),
            ));
        }
        out
    }
}

/// Default of [`EngineConfig::chunks_in_flight_per_study`].
pub const fn default_chunks_in_flight() -> u32 {
    8
}
/// Default of [`EngineConfig::max_attempts`].
pub const fn default_max_attempts() -> u16 {
    3
}
/// Default of [`EngineConfig::rescue_after_s`].
pub const fn default_rescue_after_s() -> f64 {
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
    /// Its name: the JSON form, the text stored in the database and what pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyState::Queued => "queued",
            StudyState::Running => "running",
            StudyState::Reducing => "reducing",
            StudyState::Succeeded => "succeeded",
            StudyState::Failed => "failed",
            StudyState::Cancelled => "cancelled",
        }
    }

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
    /// Measured tables the kind takes (`dtop_studies::inputs`), kept in the result store by
    /// content hash; empty for kinds that compute from the model alone.
    #[serde(default)]
    pub inputs: Vec<NamedArray>,
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
    /// The measured tables it was given, in the result store (fetch with
    /// [`Engine::input`]).
    #[serde(default)]
    pub inputs: Vec<ArrayRef>,
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
    /// `name@version` of the model version the study proposed (status `proposed`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_model: Option<String>,
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
    /// Whether it is in use, proposed by a study or reviewed.
    #[serde(default)]
    pub status: ModelStatus,
    /// Who reviewed a proposed version, when and why; `None` until reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

/// Where a model version stands. Built-in, hand-made and imported versions are `current`; a
/// version a study files (an `update` or `fea` result) is `proposed` until an operator approves
/// or rejects it, once. The twin adopts only `current` or `approved` versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Usable: built in, typed by hand or imported.
    #[default]
    Current,
    /// Filed by a study; not to be run on until approved.
    Proposed,
    /// A proposed version an operator approved.
    Approved,
    /// A proposed version an operator rejected.
    Rejected,
}

impl ModelStatus {
    /// Its name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Current => "current",
            ModelStatus::Proposed => "proposed",
            ModelStatus::Approved => "approved",
            ModelStatus::Rejected => "rejected",
        }
    }

    /// Whether the twin and operators may run on a version with this status.
    pub fn is_usable(self) -> bool {
        matches!(self, ModelStatus::Current | ModelStatus::Approved)
    }
}

impl std::str::FromStr for ModelStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" => Ok(ModelStatus::Current),
            "proposed" => Ok(ModelStatus::Proposed),
            "approved" => Ok(ModelStatus::Approved),
            "rejected" => Ok(ModelStatus::Rejected),
            other => Err(format!(
                "unknown model status {other:?}; expected current, proposed, approved or rejected"
            )),
        }
    }
}

/// An operator's decision on a proposed model version: the audit record kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Who decided.
    pub by: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Why, as they wrote it (may be empty).
    pub note: String,
}

/// What an operator decides about a proposed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// Use it.
    Approve,
    /// Do not use it.
    Reject,
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

impl From<dtop_studies::StudyError> for EngineError {
    fn from(e: dtop_studies::StudyError) -> Self {
        use dtop_studies::StudyError;
        match e {
            StudyError::Invalid(p) => EngineError::Invalid(p),
            StudyError::TooLarge {
                work_units,
                max_work_units,
            } => EngineError::TooLarge {
                work_units,
                max_work_units,
            },
            other => EngineError::Internal(other.to_string()),
        }
    }
}

/// The engine: a handle on the database and the result store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: std::sync::Arc<Inner>,
}

/// What every clone of an [`Engine`] shares.
#[derive(Debug)]
struct Inner {
    /// Our tables and River's.
    db: db::Db,
    /// An insert-only River client: submissions, fan-out and cancels go through it.
    river: riverqueue::Client,
    /// As given to [`Engine::connect`].
    config: EngineConfig,
    /// Counters of the chunks this process ran, for `/metrics`.
    stats: std::sync::Arc<WorkerStats>,
    /// The third-party solvers chunks may ask for.
    solvers: solvers::Solvers,
}

/// How a worker process runs chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerOptions {
    /// Name in logs and in the database (default: host name and PID).
    pub name: String,
    /// Chunks run at once (default: the number of cores).
    pub concurrency: u32,
}

impl EngineConfig {
    /// Every problem of this configuration (ranges and the URL's scheme), each under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        if let Err(m) = db::backend_of(&self.database_url) {
            out.push(FieldProblem::new(format!("{prefix}database_url"), m));
        }
        if self.chunks_in_flight_per_study == 0 {
            out.push(FieldProblem::new(
                format!("{prefix}chunks_in_flight_per_study"),
                "must be at least 1",
            ));
        }
        if self.max_attempts == 0 {
            out.push(FieldProblem::new(
                format!("{prefix}max_attempts"),
                "must be at least 1",
            ));
        }
        if !(self.rescue_after_s.is_finite() && self.rescue_after_s >= 1.0) {
            out.push(FieldProblem::new(
                format!("{prefix}rescue_after_s"),
                format!("must be at least 1 s, got {}", self.rescue_after_s),
            ));
        }
        if self.budget.chunk_work_units == 0 {
            out.push(FieldProblem::new(
                format!("{prefix}budget.chunk_work_units"),
                "must be at least 1",
            ));
        }
        out.extend(self.fetch.problems(&format!("{prefix}fetch.")));
        out.extend(self.solvers.problems(&format!("{prefix}solvers.")));
        out
    }
}

/// Now, RFC 3339 UTC.
pub(crate) fn now_rfc3339() -> String {
    riverqueue::jiff::Timestamp::now().to_string()
}

impl Engine {
    /// Connects, applies migrations (River's and ours), and seeds the built-in models.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] when the database cannot be reached; `Invalid` for a bad
    /// configuration.
    pub async fn connect(config: &EngineConfig) -> Result<Engine, EngineError> {
        let problems = config.problems("");
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems));
        }
        let url = DatabaseUrl::new(config.database_url.clone());
        let db = db::connect(&url).await?;
        // The insert-only client: its cooldown paces the "jobs inserted" notifications that
        // wake idle workers.
        let river = db::on_db!(&db, pool => riverqueue::Client::builder(pool.clone())
            .fetch_cooldown(config.fetch.cooldown())
            .build())
        .map_err(db::river_error)?;
        let engine = Engine {
            inner: std::sync::Arc::new(Inner {
                db,
                river,
                config: config.clone(),
                stats: std::sync::Arc::new(WorkerStats::default()),
                solvers: solvers::Solvers::new(config.solvers.clone()),
            }),
        };
        engine.seed_builtins().await?;
        tracing::info!(database = %url, "Studies engine connected.");
        Ok(engine)
    }

    /// Whether the database answers now.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`].
    pub async fn health(&self) -> Result<(), EngineError> {
        use riverqueue::sqlx;
        db::on_db!(&self.inner.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))
            .map(|_| ())
            .map_err(db::sqlx_error)
    }

    /// Time after which a silent worker's chunk runs again elsewhere.
    pub fn rescue_after(&self) -> Duration {
        Duration::from_secs_f64(self.inner.config.rescue_after_s)
    }

    /// This process's chunk counters (for `/metrics`).
    pub fn worker_stats(&self) -> std::sync::Arc<WorkerStats> {
        self.inner.stats.clone()
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(fetch: FetchConfig) -> EngineConfig {
        EngineConfig {
            database_url: "sqlite:///tmp/x.db".into(),
            result_dir: PathBuf::from("/tmp/r"),
            budget: Budget::default(),
            chunks_in_flight_per_study: 8,
            max_attempts: 3,
            rescue_after_s: 30.0,
            fetch,
            solvers: Default::default(),
        }
    }

    fn fields(c: &EngineConfig) -> Vec<String> {
        c.problems("engine.").into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_state_s_name_is_its_json_form() {
        use StudyState::*;
        for state in [Queued, Running, Reducing, Succeeded, Failed, Cancelled] {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(serde_json::Value::String(state.as_str().to_owned()))
            );
        }
    }

    #[test]
    fn the_default_fetch_settings_are_valid_and_faster_than_rivers() {
        let f = FetchConfig::default();
        assert!(fields(&config_with(f)).is_empty());
        assert!(f.cooldown() < riverqueue::FETCH_COOLDOWN_DEFAULT);
        assert!(f.poll_interval() >= f.cooldown());
    }

    #[test]
    fn a_zero_cooldown_and_a_too_long_poll_interval_are_both_reported() {
        let c = config_with(FetchConfig {
            cooldown_ms: 0,
            poll_interval_ms: MAX_FETCH_POLL_INTERVAL_MS + 1,
            ..FetchConfig::default()
        });
        assert_eq!(
            fields(&c),
            ["engine.fetch.cooldown_ms", "engine.fetch.poll_interval_ms"]
        );
    }

    #[test]
    fn a_poll_interval_shorter_than_the_cooldown_is_refused_as_river_would() {
        let c = config_with(FetchConfig {
            cooldown_ms: 50,
            poll_interval_ms: 20,
            ..FetchConfig::default()
        });
        assert_eq!(fields(&c), ["engine.fetch.poll_interval_ms"]);
    }

    #[test]
    fn a_prefetch_and_a_prefetch_wait_out_of_range_are_both_reported() {
        let c = config_with(FetchConfig {
            prefetch: MAX_FETCH_PREFETCH + 1,
            prefetch_wait_ms: 0,
            ..FetchConfig::default()
        });
        assert_eq!(
            fields(&c),
            ["engine.fetch.prefetch", "engine.fetch.prefetch_wait_ms"]
        );
        let off = config_with(FetchConfig {
            prefetch: 0,
            ..FetchConfig::default()
        });
        assert!(fields(&off).is_empty());
    }
}
