//! Owns the model catalogue: named models, each a list of immutable versions with their
//! provenance; the built-ins are seeded as version 1 once. Knows nothing about studies.

use dtop_studies::{FieldProblem, ModelRef, ModelSpec, Provenance};
use riverqueue::sqlx;

use crate::db::{in_tx, on_db, sqlx_error};
use crate::{Engine, EngineError, ModelStatus, ModelVersion, Review, ReviewDecision};

/// One `dtop_models` row.
type ModelRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

const MODEL_COLUMNS: &str = "name, version, spec, provenance, created_by, created_at, status, \
     reviewed_by, reviewed_at, review_note";

fn version_of(row: ModelRow) -> Result<ModelVersion, EngineError> {
    let (name, version, spec, provenance, created_by, created_at, status, by, at, note) = row;
    let bad = |e: serde_json::Error| EngineError::Internal(format!("model {name}@{version}: {e}"));
    let status = status
        .parse::<ModelStatus>()
        .map_err(|e| EngineError::Internal(format!("model {name}@{version}: {e}")))?;
    let review = match (by, at) {
        (Some(by), Some(at)) => Some(Review {
            by,
            at,
            note: note.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(ModelVersion {
        spec: serde_json::from_str(&spec).map_err(bad)?,
        provenance: serde_json::from_str(&provenance).map_err(bad)?,
        version: version as u32,
        name,
        created_by,
        created_at,
        status,
        review,
    })
}

impl Engine {
    /// Inserts each built-in model as version 1 unless that name already has a version 1.
    pub(crate) async fn seed_builtins(&self) -> Result<(), EngineError> {
        for (name, spec) in dtop_studies::model::builtin_models() {
            let spec =
                serde_json::to_string(&spec).map_err(|e| EngineError::Internal(e.to_string()))?;
            let provenance = serde_json::to_string(&Provenance::Builtin)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            on_db!(&self.inner.db, pool => {
                sqlx::query(
                    "INSERT INTO dtop_models (name, version, spec, provenance, created_by, created_at) \
                     VALUES ($1, 1, $2, $3, 'dtop', $4) ON CONFLICT (name, version) DO NOTHING",
                )
                .bind(name)
                .bind(&spec)
                .bind(&provenance)
                .bind(crate::now_rfc3339())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(sqlx_error)?;
        }
        Ok(())
    }

    /// Every model's every version, by name then version.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn models(&self) -> Result<Vec<ModelVersion>, EngineError> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM dtop_models ORDER BY name, version");
        let rows: Vec<ModelRow> =
            on_db!(&self.inner.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).fetch_all(pool).await)
                .map_err(sqlx_error)?;
        rows.into_iter().map(version_of).collect()
    }

    /// One model version (`name` alone: the latest).
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`.
    pub async fn model(&self, model: &ModelRef) -> Result<ModelVersion, EngineError> {
        let row: Option<ModelRow> = match model.version {
            Some(v) => {
                let sql = format!("SELECT {MODEL_COLUMNS} FROM dtop_models WHERE name = $1 AND version = $2");
                on_db!(&self.inner.db, pool => {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(&model.name).bind(i64::from(v)).fetch_optional(pool).await
                })
            }
            None => {
                let sql = format!(
                    "SELECT {MODEL_COLUMNS} FROM dtop_models WHERE name = $1 \
                     AND status IN ('current', 'approved') ORDER BY version DESC LIMIT 1"
                );
                on_db!(&self.inner.db, pool => {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(&model.name).fetch_optional(pool).await
                })
            }
        }
        .map_err(sqlx_error)?;
        match row {
            Some(row) => version_of(row),
            None => Err(EngineError::NotFound(format!("model {model}"))),
        }
    }

    /// Adds a new version of `name` (version 1 if new); refuses a non-physical model.
    ///
    /// # Errors
    /// `Invalid` (every problem of the name, the model and the creator), `Unavailable`.
    pub async fn add_model(
        &self,
        name: &str,
        spec: ModelSpec,
        provenance: Provenance,
        created_by: &str,
    ) -> Result<ModelVersion, EngineError> {
        self.add_model_as(name, spec, provenance, created_by, ModelStatus::Current)
            .await
    }

    /// [`Engine::add_model`] with the version's status: `Proposed` for a version a study files.
    pub(crate) async fn add_model_as(
        &self,
        name: &str,
        spec: ModelSpec,
        provenance: Provenance,
        created_by: &str,
        status: ModelStatus,
    ) -> Result<ModelVersion, EngineError> {
        let mut problems = Vec::new();
        if let Some(p) = ModelRef::name_problem(name) {
            problems.push(FieldProblem::new("name", p));
        }
        problems.extend(spec.problems());
        if created_by.trim().is_empty() {
            problems.push(FieldProblem::new("created_by", "must not be empty"));
        }
        if !problems.is_empty() {
            return Err(EngineError::Invalid(problems));
        }
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| EngineError::Internal(e.to_string()))?;
        let prov_json =
            serde_json::to_string(&provenance).map_err(|e| EngineError::Internal(e.to_string()))?;
        let created_at = crate::now_rfc3339();
        // The next version is read and written in one write transaction; the primary key makes
        // a concurrent writer of the same name fail rather than share a version.
        let version: i64 = in_tx!(&self.inner.db, tx => {
            let latest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM dtop_models WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
            let version = latest.unwrap_or(0) + 1;
            sqlx::query(
                "INSERT INTO dtop_models (name, version, spec, provenance, created_by, created_at, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(name)
            .bind(version)
            .bind(&spec_json)
            .bind(&prov_json)
            .bind(created_by)
            .bind(&created_at)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?;
            version
        });
        Ok(ModelVersion {
            name: name.to_owned(),
            version: version as u32,
            spec,
            provenance,
            created_by: created_by.to_owned(),
            created_at,
            status,
            review: None,
        })
    }

    /// Approves or rejects a proposed model version, once: the decision, who made it, when and
    /// why are stored with the version (the audit record) and logged.
    ///
    /// # Errors
    /// `NotFound` (no such version), `Conflict` (not proposed, or reviewed already, e.g. by a
    /// concurrent reviewer), `Invalid` (no reviewer name), `Unavailable`.
    pub async fn review_model(
        &self,
        name: &str,
        version: u32,
        decision: ReviewDecision,
        by: &str,
        note: &str,
    ) -> Result<ModelVersion, EngineError> {
        if by.trim().is_empty() {
            return Err(EngineError::Invalid(vec![FieldProblem::new(
                "by",
                "must not be empty",
            )]));
        }
        let reference = ModelRef {
            name: name.to_owned(),
            version: Some(version),
        };
        let current = self.model(&reference).await?;
        if current.status != ModelStatus::Proposed {
            return Err(EngineError::Conflict(format!(
                "{name}@{version} is {}; only a proposed version can be approved or rejected",
                current.status.as_str()
            )));
        }
        let status = match decision {
            ReviewDecision::Approve => ModelStatus::Approved,
            ReviewDecision::Reject => ModelStatus::Rejected,
        };
        let at = crate::now_rfc3339();
        let changed = on_db!(&self.inner.db, pool => {
            sqlx::query(
                "UPDATE dtop_models SET status = $3, reviewed_by = $4, reviewed_at = $5, review_note = $6 \
                 WHERE name = $1 AND version = $2 AND status = 'proposed'",
            )
            .bind(name)
            .bind(i64::from(version))
            .bind(status.as_str())
            .bind(by)
            .bind(&at)
            .bind(note)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(sqlx_error)?;
        if changed != 1 {
            return Err(EngineError::Conflict(format!(
                "{name}@{version} was reviewed by someone else meanwhile"
            )));
        }
        tracing::info!(model = %name, version, decision = status.as_str(), by, note, "Model version reviewed.");
        self.model(&reference).await
    }
}
