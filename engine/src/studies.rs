//! Owns the studies' rows: submission (validate, plan, insert the study and its first chunk
//! jobs in one transaction), listing, cancel, results and the revision feed. Running chunks is
//! `jobs`' business.

use dtop_studies::{ModelSpec, NamedArray, StudyKind};
use riverqueue::sqlx;

use crate::db::{self, in_tx, on_db, sqlx_error};
use crate::jobs;
use crate::{
    ArrayRef, Engine, EngineError, ModelChoice, StudyFilter, StudyId, StudyRecord, StudyResult,
    StudyState, SubmitRequest,
};

/// The columns of a [`StudyRecord`], in [`StudyRow`] order.
pub(crate) const STUDY_COLUMNS: &str = "id, kind, model_ref, model, params, seed, submitted_by, \
     submitted_at, finished_at, state, chunks_total, chunks_done, error, revision, inputs";

/// One `dtop_studies` row as the driver decodes it on either backend.
pub(crate) type StudyRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    String,
);

fn parse_state(s: &str) -> Result<StudyState, EngineError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| EngineError::Internal(format!("unknown study state {s:?} in the database")))
}

/// Decodes a row; a row that does not decode is a bug or a foreign write, so `Internal`.
pub(crate) fn record_of(row: StudyRow) -> Result<StudyRecord, EngineError> {
    let (
        id,
        kind,
        model_ref,
        model,
        params,
        seed,
        by,
        at,
        fin,
        state,
        total,
        done,
        error,
        rev,
        inputs,
    ) = row;
    let bad = |what: &str, e: String| EngineError::Internal(format!("study {id}: {what}: {e}"));
    Ok(StudyRecord {
        kind: kind.parse::<StudyKind>().map_err(|e| bad("kind", e))?,
        model: serde_json::from_str::<ModelSpec>(&model)
            .map_err(|e| bad("model", e.to_string()))?,
        params: serde_json::from_str(&params).map_err(|e| bad("params", e.to_string()))?,
        // Stored as the same 64 bits in a signed column.
        seed: seed as u64,
        submitted_by: by,
        submitted_at: at,
        finished_at: fin,
        state: parse_state(&state)?,
        chunks_total: total as u32,
        chunks_done: done as u32,
        error,
        revision: rev as u64,
        inputs: serde_json::from_str(&inputs).map_err(|e| bad("inputs", e.to_string()))?,
        model_ref,
        id: StudyId(id),
    })
}

/// A fresh study id: `st_` and a UUIDv7.
fn new_id() -> StudyId {
    StudyId(format!("st_{}", uuid::Uuid::now_v7().simple()))
}

/// A seed when the submitter gave none: the random bits of a UUIDv4-quality generator would
/// do; the low 64 bits of a fresh UUIDv7 are random (74 random bits in all).
fn draw_seed() -> u64 {
    uuid::Uuid::now_v7().as_u64_pair().1
}

impl Engine {
    /// Validates, plans and queues a study; nothing is queued unless it is valid.
    ///
    /// # Errors
    /// `Invalid`, `TooLarge`, `NotFound` (catalogue model), `Unavailable`.
    pub async fn submit(&self, request: SubmitRequest) -> Result<StudyRecord, EngineError> {
        let mut problems = Vec::new();
        if request.submitted_by.trim().is_empty() {
            problems.push(dtop_studies::FieldProblem::new(
                "submitted_by",
                "must not be empty",
            ));
        }
        let (model_ref, model_name, model) = match request.model {
            ModelChoice::Catalogue(r) => {
                let v = self.model(&r).await?;
                (
                    Some(format!("{}@{}", v.name, v.version)),
                    Some(v.name),
                    v.spec,
                )
            }
            ModelChoice::Inline(spec) => (None, None, spec),
        };
        let inputs = match dtop_studies::Inputs::new(request.inputs) {
            Ok(inputs) => inputs,
            Err(mut p) => {
                problems.append(&mut p);
                dtop_studies::Inputs::none()
            }
        };
        // The resolved params (defaults for the model merged in, chunk size fixed from this
        // engine's budget) are what is stored and what every chunk runs from.
        let planned = {
            let (kind, params, budget) = (request.kind, request.params, self.inner.config.budget);
            tokio::task::spawn_blocking(move || {
                let plan = dtop_studies::plan(kind, &model, &params, &inputs, &budget);
                (plan, model, inputs)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("planning the study: {e}")))?
        };
        let (planned, model, inputs) = planned;
        let resolved = match planned {
            Ok(resolved) => Some(resolved),
            Err(dtop_studies::StudyError::Invalid(mut p)) => {
                problems.append(&mut p);
                None
            }
            Err(other) => return Err(other.into()),
        };
        let plan = match (resolved, problems.is_empty()) {
            (Some(r), true) => r,
            _ => return Err(EngineError::Invalid(problems)),
        };
        // Kinds check their own budget; this catches a kind that forgot.
        let max_work_units = self.inner.config.budget.max_work_units;
        if plan.work_units > max_work_units {
            return Err(EngineError::TooLarge {
                work_units: plan.work_units,
                max_work_units,
            });
        }
        let id = new_id();
        let seed = request.seed.unwrap_or_else(draw_seed);
        // The inputs go to the result store before the study exists, so no worker can start a
        // chunk whose inputs are not there yet (an unreferenced file is harmless: content
        // addressed, written again by the next study with the same data).
        let input_refs = {
            let dir = self.inner.config.result_dir.clone();
            tokio::task::spawn_blocking(move || {
                inputs
                    .arrays()
                    .iter()
                    .map(|a| crate::store::put(&dir, a))
                    .collect::<Result<Vec<ArrayRef>, EngineError>>()
            })
            .await
            .map_err(|e| EngineError::Internal(format!("storing the inputs: {e}")))??
        };
        let inputs_json =
            serde_json::to_string(&input_refs).map_err(|e| EngineError::Internal(e.to_string()))?;
        let model_json =
            serde_json::to_string(&model).map_err(|e| EngineError::Internal(e.to_string()))?;
        let params_json = serde_json::to_string(&plan.params)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let first = plan
            .chunks
            .min(self.inner.config.chunks_in_flight_per_study);
        let max_attempts = i32::from(self.inner.config.max_attempts);
        let river = &self.inner.river;
        in_tx!(&self.inner.db, tx => {
            let revision = db::next_revision!(tx);
            sqlx::query(
                "INSERT INTO dtop_studies (id, kind, model_ref, model_name, model, params, seed, \
                 submitted_by, submitted_at, state, chunks_total, chunks_queued, chunks_done, revision, inputs) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11, 0, $12, $13)",
            )
            .bind(&id.0)
            .bind(request.kind.as_str())
            .bind(&model_ref)
            .bind(&model_name)
            .bind(&model_json)
            .bind(&params_json)
            .bind(seed as i64)
            .bind(&request.submitted_by)
            .bind(crate::now_rfc3339())
            .bind(i64::from(plan.chunks))
            .bind(i64::from(first))
            .bind(revision)
            .bind(&inputs_json)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?;
            for index in 0..first {
                jobs::insert_chunk!(river, tx, &id.0, index, max_attempts);
            }
        });
        tracing::info!(study = %id.0, kind = %request.kind, chunks = plan.chunks, work_units = plan.work_units, "Study queued.");
        self.study(&id).await
    }

    /// The studies matching `filter`, newest first.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list_studies(
        &self,
        filter: &StudyFilter,
    ) -> Result<Vec<StudyRecord>, EngineError> {
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 1000));
        let sql = format!(
            "SELECT {STUDY_COLUMNS} FROM dtop_studies \
             WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR model_name = $2) \
             AND ($3 IS NULL OR submitted_by = $3) AND ($4 IS NULL OR state = $4) \
             ORDER BY id DESC LIMIT $5"
        );
        let kind = filter.kind.map(|k| k.as_str().to_owned());
        let state = filter.state.map(|s| s.as_str().to_owned());
        let rows: Vec<StudyRow> = on_db!(&self.inner.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&kind)
                .bind(&filter.model_name)
                .bind(&filter.submitted_by)
                .bind(&state)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(sqlx_error)?;
        rows.into_iter().map(record_of).collect()
    }

    /// One study.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`.
    pub async fn study(&self, id: &StudyId) -> Result<StudyRecord, EngineError> {
        let sql = format!("SELECT {STUDY_COLUMNS} FROM dtop_studies WHERE id = $1");
        let row: Option<StudyRow> = on_db!(&self.inner.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(&id.0).fetch_optional(pool).await
        })
        .map_err(sqlx_error)?;
        match row {
            Some(row) => record_of(row),
            None => Err(EngineError::NotFound(format!("study {}", id.0))),
        }
    }

    /// Cancels a study: every queued chunk is dropped and running ones, on any machine, stop
    /// within seconds (River's remote cancel, and the chunk's own poll of the study's state).
    ///
    /// # Errors
    /// `NotFound`, `Conflict` (already final), `Unavailable`.
    pub async fn cancel(&self, id: &StudyId, by: &str) -> Result<StudyRecord, EngineError> {
        let current = self.study(id).await?;
        if current.state.is_final() {
            return Err(EngineError::Conflict(format!(
                "study {} is already {}",
                id.0,
                current.state.as_str()
            )));
        }
        let reason = format!("cancelled by {by}");
        let changed = self
            .finish_unsuccessfully(&id.0, StudyState::Cancelled, &reason)
            .await?;
        if !changed {
            let now = self.study(id).await?;
            return Err(EngineError::Conflict(format!(
                "study {} is already {}",
                id.0,
                now.state.as_str()
            )));
        }
        self.cancel_jobs(&id.0, None).await;
        tracing::info!(study = %id.0, by, "Study cancelled.");
        self.study(id).await
    }

    /// Moves a study that is not final to `state` (failed or cancelled) with `reason`.
    /// Returns whether it changed.
    pub(crate) async fn finish_unsuccessfully(
        &self,
        id: &str,
        state: StudyState,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let changed = in_tx!(&self.inner.db, tx => {
            let revision = db::next_revision!(tx);
            sqlx::query(
                "UPDATE dtop_studies SET state = $2, error = $3, finished_at = $4, revision = $5 \
                 WHERE id = $1 AND state IN ('queued', 'running', 'reducing')",
            )
            .bind(id)
            .bind(state.as_str())
            .bind(reason)
            .bind(crate::now_rfc3339())
            .bind(revision)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?
            .rows_affected()
                == 1
        });
        Ok(changed)
    }

    /// Cancels the study's River jobs that are not final (except `except`, the caller's own
    /// job). They are found in River's table by their `study` argument among the jobs not
    /// final, which are few (at most `chunks_in_flight_per_study` per running study). Best
    /// effort: a job that cannot be cancelled now still sees the study's final state when it
    /// starts or polls, and stops.
    pub(crate) async fn cancel_jobs(&self, study: &str, except: Option<i64>) {
        /// The argument every job of a study has.
        #[derive(serde::Deserialize)]
        struct StudyArg {
            study: String,
        }
        use riverqueue::{JobArgs as _, JobListParams, JobState};
        let params = JobListParams::default()
            .kinds([crate::jobs::ChunkJob::KIND, crate::jobs::ReduceJob::KIND])
            .states([
                JobState::Available,
                JobState::Pending,
                JobState::Retryable,
                JobState::Running,
                JobState::Scheduled,
            ])
            .limit(1000);
        let mut ids = Vec::new();
        let mut page = params.clone();
        loop {
            let listed = match self.inner.river.jobs().list(page).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(study, error = %e, "Could not list the study's jobs to cancel them; they stop when they see the study's state.");
                    break;
                }
            };
            ids.extend(
                listed
                    .jobs
                    .iter()
                    .filter(|j| j.decode_args::<StudyArg>().is_ok_and(|a| a.study == study))
                    .map(|j| j.id),
            );
            match listed.last_cursor {
                Some(cursor) => page = params.clone().after(cursor),
                None => break,
            }
        }
        for job in ids.into_iter().filter(|j| Some(*j) != except) {
            if let Err(e) = self.inner.river.jobs().cancel(job).await {
                tracing::warn!(study, job, error = %e, "Could not cancel a job; it stops when it sees the study's state.");
            }
        }
    }

    /// The result of a succeeded study.
    ///
    /// # Errors
    /// `NotFound` (no such study, or no result yet), `Unavailable`.
    pub async fn result(&self, id: &StudyId) -> Result<StudyResult, EngineError> {
        let row: Option<(String, String, Option<String>)> = on_db!(&self.inner.db, pool => {
            sqlx::query_as("SELECT summary, arrays, proposed_model FROM dtop_results WHERE study_id = $1")
                .bind(&id.0)
                .fetch_optional(pool)
                .await
        })
        .map_err(sqlx_error)?;
        let Some((summary, arrays, proposed_model)) = row else {
            // Distinguish "no such study" from "no result yet" in the message only.
            let study = self.study(id).await?;
            return Err(EngineError::NotFound(format!(
                "result of study {} (it is {})",
                id.0,
                study.state.as_str()
            )));
        };
        let bad = |e: serde_json::Error| EngineError::Internal(format!("result of {}: {e}", id.0));
        Ok(StudyResult {
            study: id.clone(),
            summary: serde_json::from_str(&summary).map_err(bad)?,
            arrays: serde_json::from_str::<Vec<ArrayRef>>(&arrays).map_err(bad)?,
            proposed_model,
        })
    }

    /// The table with this hash, from the result store (off the async threads).
    pub(crate) async fn stored(&self, sha256_hex: &str) -> Result<NamedArray, EngineError> {
        let dir = self.inner.config.result_dir.clone();
        let hash = sha256_hex.to_owned();
        tokio::task::spawn_blocking(move || crate::store::get(&dir, &hash))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
    }

    /// One of the measured tables a study was given, from the result store.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`, `Internal` (store file missing or corrupt).
    pub async fn input(&self, id: &StudyId, name: &str) -> Result<NamedArray, EngineError> {
        let study = self.study(id).await?;
        let Some(r) = study.inputs.iter().find(|a| a.name == name) else {
            return Err(EngineError::NotFound(format!(
                "input {name:?} of study {}",
                id.0
            )));
        };
        self.stored(&r.sha256_hex).await
    }

    /// One array of a study's result, from the result store.
    ///
    /// # Errors
    /// `NotFound`, `Unavailable`, `Internal` (store file missing or corrupt).
    pub async fn array(&self, id: &StudyId, name: &str) -> Result<NamedArray, EngineError> {
        let result = self.result(id).await?;
        let Some(r) = result.arrays.iter().find(|a| a.name == name) else {
            return Err(EngineError::NotFound(format!(
                "array {name:?} of study {}",
                id.0
            )));
        };
        self.stored(&r.sha256_hex).await
    }

    /// Studies whose revision changed after `after_revision` (any study), oldest change first,
    /// with the highest revision seen: for SSE streams and the MQTT publisher. At most 1000 per
    /// call; call again with the returned revision for more.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn changes_since(
        &self,
        after_revision: u64,
    ) -> Result<(Vec<StudyRecord>, u64), EngineError> {
        let sql = format!(
            "SELECT {STUDY_COLUMNS} FROM dtop_studies WHERE revision > $1 ORDER BY revision LIMIT 1000"
        );
        let rows: Vec<StudyRow> = on_db!(&self.inner.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(after_revision as i64).fetch_all(pool).await
        })
        .map_err(sqlx_error)?;
        let records = rows
            .into_iter()
            .map(record_of)
            .collect::<Result<Vec<_>, _>>()?;
        let highest = records
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(after_revision);
        Ok((records, highest))
    }
}
