//! Owns the work: River's `dtop_chunk` and `dtop_reduce` jobs, the fan-out (a finishing chunk
//! records its output and queues the next chunk in one transaction), and the worker runtime.
//! The computations themselves are `dtop_studies`' pure functions, run on blocking threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtop_studies::{ChunkCtx, ModelSpec, StudyError, StudyKind};
use riverqueue::sqlx;
use riverqueue::{
    BoxError, Job, JobArgs, MaintenanceConfig, QueueConfig, WorkCancelled, WorkContext,
    WorkOutcome, Workers,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::db::{in_tx, on_db, sqlx_error};
use crate::slots::{Core, CoreSlots};
use crate::{ArrayRef, Engine, EngineError, StudyState, WorkerOptions};

/// How often a running chunk looks at its study's state, so a cancel reaches it even where
/// River's cancel notification does not (SQLite across processes).
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// River starts a job's timeout a little before the job's code starts its clock, so a chunk
/// stopped this close to `rescue_after_s` counts as timed out.
const TIMEOUT_SLACK: Duration = Duration::from_millis(250);

/// One chunk of one study.
#[derive(Debug, Clone, Serialize, Deserialize, JobArgs)]
#[river(kind = "dtop_chunk")]
pub(crate) struct ChunkJob {
    /// The study's id.
    pub study: String,
    /// The chunk's index, `0..chunks_total`.
    pub index: u32,
}

/// The reduce step of one study, queued by the chunk that completes the set.
#[derive(Debug, Clone, Serialize, Deserialize, JobArgs)]
#[river(kind = "dtop_reduce")]
pub(crate) struct ReduceJob {
    /// The study's id.
    pub study: String,
}

/// Inserts chunk `$index` of `$study` in transaction `$tx` and remembers its job id (for
/// cancel).
macro_rules! insert_chunk {
    ($river:expr, $tx:ident, $study:expr, $index:expr, $max_attempts:expr) => {{
        let inserted = $river
            .insert($crate::jobs::ChunkJob {
                study: ($study).to_owned(),
                index: $index,
            })
            .opts(riverqueue::InsertOpts::default().with_max_attempts($max_attempts))
            .tx(&mut $tx)
            .await
            .map_err($crate::db::river_error)?;
        riverqueue::sqlx::query("INSERT INTO dtop_study_jobs (job_id, study_id) VALUES ($1, $2)")
            .bind(inserted.id())
            .bind($study)
            .execute(&mut *$tx)
            .await
            .map_err($crate::db::sqlx_error)?;
    }};
}
pub(crate) use insert_chunk;

/// Counters of the chunks this process ran, for `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Chunks computed and recorded.
    pub chunks_run_total: AtomicU64,
    /// Chunk attempts that failed (numerics, panics, database errors).
    pub chunks_failed_total: AtomicU64,
    /// Chunks stopped by a cancel.
    pub chunks_cancelled_total: AtomicU64,
    /// Chunks whose output was already recorded by an earlier (rescued) run.
    pub chunks_duplicate_total: AtomicU64,
    /// Sum of chunk computation times, microseconds.
    pub chunk_micros_total: AtomicU64,
    /// Reduce steps completed.
    pub reduces_total: AtomicU64,
    /// Chunks and reduce steps claimed ahead that found no free core within
    /// `prefetch_wait_ms` and went back to the queue.
    pub jobs_given_back_total: AtomicU64,
}

impl WorkerStats {
    /// The counters in the Prometheus text format, each prefixed `dtop_worker_`.
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# TYPE dtop_worker_chunks_run_total counter\ndtop_worker_chunks_run_total {}\n\
             # TYPE dtop_worker_chunks_failed_total counter\ndtop_worker_chunks_failed_total {}\n\
             # TYPE dtop_worker_chunks_cancelled_total counter\ndtop_worker_chunks_cancelled_total {}\n\
             # TYPE dtop_worker_chunks_duplicate_total counter\ndtop_worker_chunks_duplicate_total {}\n\
             # TYPE dtop_worker_chunk_seconds_total counter\ndtop_worker_chunk_seconds_total {}\n\
             # TYPE dtop_worker_reduces_total counter\ndtop_worker_reduces_total {}\n\
             # TYPE dtop_worker_jobs_given_back_total counter\ndtop_worker_jobs_given_back_total {}\n",
            g(&self.chunks_run_total),
            g(&self.chunks_failed_total),
            g(&self.chunks_cancelled_total),
            g(&self.chunks_duplicate_total),
            g(&self.chunk_micros_total) as f64 / 1e6,
            g(&self.reduces_total),
            g(&self.jobs_given_back_total),
        )
    }
}

/// What recording a chunk's output did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRecorded {
    /// The first output of this chunk: stored, and the next chunk or the reduce queued.
    First,
    /// The chunk already had an output; it was kept and this one dropped.
    Duplicate,
    /// The study is no longer running (cancelled or failed): nothing stored.
    NotWanted,
    /// No such study.
    NoStudy,
}

/// Why recording a chunk failed: the engine's errors, or River's / serde's boxed.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    /// From the database.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Anything else.
    #[error(transparent)]
    Other(BoxError),
}

/// What a job needs of its study.
struct JobStudy {
    kind: StudyKind,
    model: ModelSpec,
    params: serde_json::Value,
    seed: u64,
    state: StudyState,
    /// The measured tables it was given, in the result store.
    input_refs: Vec<ArrayRef>,
    /// Its catalogue model's name, where a proposed model is filed.
    model_name: Option<String>,
    submitted_by: String,
}

/// A model a reduce proposes, ready to file: where, and the spec as stored.
struct Proposal {
    name: String,
    spec_json: String,
}

/// Checks a proposed model and picks its catalogue name: the study's catalogue model's, or the
/// kind's suggestion for an inline model. A non-physical proposal fails the study (a kind must
/// refuse it itself; this is the last guard before the catalogue).
fn proposal(
    p: dtop_studies::ProposedModel,
    model_name: Option<&str>,
) -> Result<Proposal, StudyError> {
    let problems = p.spec.problems();
    if !problems.is_empty() {
        return Err(StudyError::Numerics(format!(
            "the proposed model is not physical, so it is not filed: {}",
            dtop_studies::problems::join(&problems)
        )));
    }
    let name = model_name.map_or_else(|| p.name.clone(), str::to_owned);
    if let Some(why) = dtop_studies::ModelRef::name_problem(&name) {
        return Err(StudyError::Numerics(format!(
            "the proposed model's name: {why}"
        )));
    }
    let spec_json =
        serde_json::to_string(&p.spec).map_err(|e| StudyError::Numerics(e.to_string()))?;
    Ok(Proposal { name, spec_json })
}

/// How a chunk or reduce attempt ended, before it is told to River.
enum Ending {
    /// The computation failed deterministically: fail the study now, no retry.
    Deterministic(String),
    /// May succeed on another attempt (panic, database away).
    Retry(String),
}

impl Engine {
    async fn job_study(&self, study: &str) -> Result<Option<JobStudy>, EngineError> {
        type Row = (
            String,
            String,
            String,
            i64,
            String,
            String,
            Option<String>,
            String,
        );
        let row: Option<Row> = on_db!(&self.inner.db, pool => {
            sqlx::query_as("SELECT kind, model, params, seed, state, inputs, model_name, submitted_by \
                            FROM dtop_studies WHERE id = $1")
                .bind(study)
                .fetch_optional(pool)
                .await
        })
        .map_err(sqlx_error)?;
        let Some((kind, model, params, seed, state, inputs, model_name, submitted_by)) = row else {
            return Ok(None);
        };
        let bad = |e: String| EngineError::Internal(format!("study {study}: {e}"));
        Ok(Some(JobStudy {
            input_refs: serde_json::from_str(&inputs).map_err(|e| bad(e.to_string()))?,
            model_name,
            submitted_by,
            kind: kind.parse().map_err(bad)?,
            model: serde_json::from_str(&model).map_err(|e| bad(e.to_string()))?,
            params: serde_json::from_str(&params).map_err(|e| bad(e.to_string()))?,
            seed: seed as u64,
            state: serde_json::from_value(serde_json::Value::String(state))
                .map_err(|e| bad(e.to_string()))?,
        }))
    }

    /// The measured tables `refs` from the result store, checked again as tables.
    async fn load_inputs(
        &self,
        study: &str,
        refs: &[ArrayRef],
    ) -> Result<dtop_studies::Inputs, EngineError> {
        if refs.is_empty() {
            return Ok(dtop_studies::Inputs::none());
        }
        let dir = self.inner.config.result_dir.clone();
        let hashes: Vec<String> = refs.iter().map(|r| r.sha256_hex.clone()).collect();
        let arrays = tokio::task::spawn_blocking(move || {
            hashes
                .iter()
                .map(|h| crate::store::get(&dir, h))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| EngineError::Internal(format!("study {study}: loading inputs: {e}")))??;
        dtop_studies::Inputs::new(arrays).map_err(|p| {
            EngineError::Internal(format!(
                "study {study}: stored inputs no longer check: {}",
                dtop_studies::problems::join(&p)
            ))
        })
    }

    async fn study_state(&self, study: &str) -> Result<Option<StudyState>, EngineError> {
        Ok(self.job_study(study).await?.map(|i| i.state))
    }

    /// Sets `cancelled` when River cancels the job (remote cancel, client stop) or the study
    /// reaches a final state, whichever comes first; ends when `done` is cancelled.
    fn watch_cancel(
        &self,
        study: String,
        token: CancellationToken,
        cancelled: Arc<AtomicBool>,
        done: CancellationToken,
    ) {
        let engine = self.clone();
        tokio::spawn(async move {
            // The first look is one period in: the chunk's job read the state just before.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + CANCEL_POLL, CANCEL_POLL);
            loop {
                tokio::select! {
                    () = done.cancelled() => return,
                    () = token.cancelled() => {
                        cancelled.store(true, Ordering::Relaxed);
                        return;
                    }
                    _ = tick.tick() => {
                        if let Ok(Some(s)) = engine.study_state(&study).await
                            && s.is_final()
                        {
                            cancelled.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Fails `study` with `reason` and cancels its other jobs.
    async fn fail_study(&self, study: &str, reason: &str, own_job: i64) {
        match self
            .finish_unsuccessfully(study, StudyState::Failed, reason)
            .await
        {
            Ok(true) => {
                tracing::warn!(study, reason, "Study failed.");
                self.cancel_jobs(study, Some(own_job)).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(study, error = %e, "Could not mark the study failed; a retry will.")
            }
        }
    }

    async fn work_chunk(
        &self,
        ctx: WorkContext,
        job: Job<ChunkJob>,
        slots: &CoreSlots,
    ) -> Result<WorkOutcome, BoxError> {
        // River's job timeout runs from the claim, which a claimed-ahead chunk makes earlier
        // than its computation by up to `prefetch_wait_ms`.
        let claimed = Instant::now();
        let study = job.args.study.clone();
        let index = job.args.index;
        let Some(study_row) = self.job_study(&study).await? else {
            return Ok(WorkOutcome::Discard);
        };
        if study_row.state.is_final() {
            return Ok(WorkOutcome::Cancel);
        }
        if study_row.state == StudyState::Queued {
            self.mark_running(&study).await?;
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let done = CancellationToken::new();
        self.watch_cancel(
            study.clone(),
            ctx.cancellation_token().clone(),
            cancelled.clone(),
            done.clone(),
        );
        let tables = self.load_inputs(&study, &study_row.input_refs).await?;
        let Some(core) = self.take_core(&ctx, slots).await else {
            done.cancel();
            return Ok(WorkOutcome::Snooze(Duration::ZERO));
        };
        let started = Instant::now();
        let flag = cancelled.clone();
        let engine = self.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let ctx = ChunkCtx::new(&flag).with_solvers(&engine.inner.solvers);
            dtop_studies::run_chunk(
                study_row.kind,
                &study_row.model,
                &study_row.params,
                study_row.seed,
                index,
                &ctx,
                &tables,
            )
        })
        .await;
        self.computed(&ctx, slots, core, started.elapsed());
        done.cancel();
        let stats = &self.inner.stats;
        let ending = match computed {
            Ok(Ok(output)) => {
                let computed_at = Instant::now();
                stats.chunk_micros_total.fetch_add(
                    (computed_at - started).as_micros() as u64,
                    Ordering::Relaxed,
                );
                let outcome = self.record_chunk(&ctx, &job, output).await;
                tracing::debug!(
                    study,
                    chunk = index,
                    before_compute_ms = (started - claimed).as_secs_f64() * 1e3,
                    compute_ms = (computed_at - started).as_secs_f64() * 1e3,
                    record_ms = computed_at.elapsed().as_secs_f64() * 1e3,
                    "Chunk done."
                );
                return outcome;
            }
            Ok(Err(StudyError::Cancelled)) => {
                stats.chunks_cancelled_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(study, chunk = index, "Chunk stopped by a cancel.");
                if ctx.cancellation_token().is_cancelled() {
                    let still_wanted = matches!(
                        self.study_state(&study).await,
                        Ok(Some(s)) if !s.is_final()
                    );
                    if still_wanted && claimed.elapsed() + TIMEOUT_SLACK >= self.rescue_after() {
                        // River's job timeout (= rescue_after_s): a failed attempt, retried
                        // until max_attempts, then the study fails with this reason.
                        Ending::Retry(format!(
                            "chunk {index} ran longer than rescue_after_s = {} s",
                            self.rescue_after().as_secs_f64()
                        ))
                    } else {
                        // River's own cancel (remote cancel, or this client stopping): on a
                        // stop the job becomes available again without using an attempt.
                        return Err(Box::new(WorkCancelled));
                    }
                } else {
                    return Ok(WorkOutcome::Cancel);
                }
            }
            Ok(Err(e)) => Ending::Deterministic(format!("chunk {index}: {e}")),
            Err(join) => Ending::Retry(format!("chunk {index} panicked: {join}")),
        };
        stats.chunks_failed_total.fetch_add(1, Ordering::Relaxed);
        self.end_attempt(
            &study,
            job.row.id,
            job.row.attempt,
            job.row.max_attempts,
            ending,
        )
        .await
    }

    /// A core for a job's computation (see [`CoreSlots`]), or `None` when the job was claimed
    /// ahead of a long computation: the caller gives it back (a snooze, which uses no
    /// attempt) and this worker stops claiming ahead, so the job goes to an idle worker.
    async fn take_core(&self, ctx: &WorkContext, slots: &CoreSlots) -> Option<Core> {
        let core = slots.take().await;
        if core.is_none() {
            self.inner
                .stats
                .jobs_given_back_total
                .fetch_add(1, Ordering::Relaxed);
            set_river_slots(ctx, slots.after_give_back());
        }
        core
    }

    /// Frees the core of a computation that took `took`; short ones let the worker claim
    /// ahead.
    fn computed(&self, ctx: &WorkContext, slots: &CoreSlots, core: Core, took: Duration) {
        drop(core);
        set_river_slots(ctx, slots.after_compute(took));
    }

    /// Tells River how a failed attempt ended, failing the study when it will not be retried.
    async fn end_attempt(
        &self,
        study: &str,
        job_id: i64,
        attempt: i32,
        max_attempts: i32,
        ending: Ending,
    ) -> Result<WorkOutcome, BoxError> {
        match ending {
            Ending::Deterministic(reason) => {
                self.fail_study(study, &reason, job_id).await;
                Ok(WorkOutcome::Discard)
            }
            Ending::Retry(reason) => {
                if attempt >= max_attempts {
                    self.fail_study(
                        study,
                        &format!("{reason} (attempt {attempt} of {max_attempts})"),
                        job_id,
                    )
                    .await;
                }
                Err(reason.into())
            }
        }
    }

    async fn mark_running(&self, study: &str) -> Result<(), EngineError> {
        in_tx!(&self.inner.db, tx => {
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM dtop_studies WHERE id = $1")
                .bind(study)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sqlx_error)?;
            if state.as_deref() == Some("queued") {
                let revision = crate::db::next_revision!(tx);
                sqlx::query("UPDATE dtop_studies SET state = 'running', revision = $2 WHERE id = $1 AND state = 'queued'")
                    .bind(study)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
            }
        });
        Ok(())
    }

    /// Records a chunk's output, queues the next chunk (or the reduce step) and completes the
    /// job, all in one transaction: a crash before the commit leaves the job to be rescued, a
    /// crash after it leaves nothing to redo. A chunk already recorded (a rescued duplicate)
    /// keeps its first output.
    async fn record_chunk(
        &self,
        ctx: &WorkContext,
        job: &Job<ChunkJob>,
        output: serde_json::Value,
    ) -> Result<WorkOutcome, BoxError> {
        let study = job.args.study.as_str();
        let index = job.args.index;
        let recorded = self
            .record_chunk_with(Some(ctx), study, index, job.row.attempt, &output)
            .await?;
        match recorded {
            ChunkRecorded::NoStudy => return Ok(WorkOutcome::Discard),
            ChunkRecorded::First => {
                self.inner
                    .stats
                    .chunks_run_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            ChunkRecorded::Duplicate | ChunkRecorded::NotWanted => {
                self.inner
                    .stats
                    .chunks_duplicate_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    study,
                    chunk = index,
                    "Chunk already recorded or no longer wanted; kept the first output."
                );
            }
        }
        Ok(WorkOutcome::Complete)
    }

    /// Records chunk `index` of `study` as attempt `attempt` produced it, exactly as a worker
    /// does when a chunk finishes (the same transaction, less the completion of a River job):
    /// the first output of a chunk is kept, a later one is not written over it. For tests of
    /// that rule, which in production needs a rescued chunk whose first run finishes late.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] or `Internal` from the database.
    #[doc(hidden)]
    pub async fn record_chunk_output(
        &self,
        study: &crate::StudyId,
        index: u32,
        attempt: i32,
        output: &serde_json::Value,
    ) -> Result<ChunkRecorded, EngineError> {
        self.record_chunk_with(None, &study.0, index, attempt, output)
            .await
            .map_err(|e| match e {
                RecordError::Engine(e) => e,
                RecordError::Other(e) => EngineError::Internal(e.to_string()),
            })
    }

    /// The transaction of [`Self::record_chunk`]; completes the River job of `ctx` if given.
    async fn record_chunk_with(
        &self,
        ctx: Option<&WorkContext>,
        study: &str,
        index: u32,
        attempt: i32,
        output: &serde_json::Value,
    ) -> Result<ChunkRecorded, RecordError> {
        let output = serde_json::to_string(output).map_err(|e| RecordError::Other(e.into()))?;
        let river = &self.inner.river;
        let max_attempts = i32::from(self.inner.config.max_attempts);
        let recorded;
        in_tx!(&self.inner.db, tx => {
            // Lock the study row first (PostgreSQL), so concurrent chunks and a cancel serialize.
            let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
                "UPDATE dtop_studies SET chunks_done = chunks_done WHERE id = $1 \
                 RETURNING state, chunks_done, chunks_queued, chunks_total",
            )
            .bind(study)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sqlx_error)?;
            let Some((state, done_before, queued, total)) = row else {
                return Ok(ChunkRecorded::NoStudy);
            };
            if !matches!(state.as_str(), "queued" | "running") {
                // Cancelled or failed meanwhile: the output is not wanted.
                recorded = ChunkRecorded::NotWanted;
            } else {
                let inserted = sqlx::query(
                    "INSERT INTO dtop_chunks (study_id, chunk_index, output, attempt, finished_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (study_id, chunk_index) DO NOTHING",
                )
                .bind(study)
                .bind(i64::from(index))
                .bind(&output)
                .bind(i64::from(attempt))
                .bind(crate::now_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(sqlx_error)?
                .rows_affected();
                if inserted == 0 {
                    recorded = ChunkRecorded::Duplicate;
                } else {
                    recorded = ChunkRecorded::First;
                    // The row is locked: its counters are the ones read above, so the next
                    // state is known here and one UPDATE writes it with both counters.
                    let done = done_before + 1;
                    let queue_next = queued < total;
                    if queue_next {
                        insert_chunk!(river, tx, study, queued as u32, max_attempts);
                    }
                    let next_state = if done >= total {
                        river
                            .insert(ReduceJob { study: study.to_owned() })
                            .opts(riverqueue::InsertOpts::default().with_max_attempts(max_attempts))
                            .tx(&mut tx)
                            .await
                            .map_err(crate::db::river_error)?;
                        StudyState::Reducing
                    } else {
                        StudyState::Running
                    };
                    let revision = crate::db::next_revision!(tx);
                    sqlx::query(
                        "UPDATE dtop_studies SET chunks_done = $2, chunks_queued = $3, state = $4, \
                         revision = $5 WHERE id = $1",
                    )
                    .bind(study)
                    .bind(done)
                    .bind(queued + i64::from(queue_next))
                    .bind(next_state.as_str())
                    .bind(revision)
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
                }
            }
            if let Some(ctx) = ctx {
                ctx.job_complete_tx(&mut tx).await.map_err(crate::db::river_error)?;
            }
        });
        Ok(recorded)
    }

    async fn work_reduce(
        &self,
        ctx: WorkContext,
        job: Job<ReduceJob>,
        slots: &CoreSlots,
    ) -> Result<WorkOutcome, BoxError> {
        let claimed = Instant::now();
        let study = job.args.study.clone();
        let Some(study_row) = self.job_study(&study).await? else {
            return Ok(WorkOutcome::Discard);
        };
        if study_row.state != StudyState::Reducing {
            return Ok(WorkOutcome::Cancel);
        }
        let outputs: Vec<String> = on_db!(&self.inner.db, pool => {
            sqlx::query_scalar("SELECT output FROM dtop_chunks WHERE study_id = $1 ORDER BY chunk_index")
                .bind(&study)
                .fetch_all(pool)
                .await
        })
        .map_err(sqlx_error)?;
        let fetched = Instant::now();
        let chunks = outputs
            .iter()
            .map(|o| serde_json::from_str::<serde_json::Value>(o))
            .collect::<Result<Vec<_>, _>>()?;
        let parsed = Instant::now();
        let dir = self.inner.config.result_dir.clone();
        let tables = self.load_inputs(&study, &study_row.input_refs).await?;
        let JobStudy {
            kind,
            model,
            params,
            seed,
            model_name,
            submitted_by,
            ..
        } = study_row;
        let Some(core) = self.take_core(&ctx, slots).await else {
            return Ok(WorkOutcome::Snooze(Duration::ZERO));
        };
        let started = Instant::now();
        let reduced = tokio::task::spawn_blocking(move || {
            let out = dtop_studies::reduce(kind, &model, &params, seed, &chunks, &tables)?;
            let refs = out
                .arrays
                .iter()
                .map(|a| crate::store::put(&dir, a))
                .collect::<Result<Vec<_>, EngineError>>()
                .map_err(|e| StudyError::Numerics(format!("storing arrays: {e}")))?;
            let proposed = out
                .proposed_model
                .map(|p| proposal(p, model_name.as_deref()))
                .transpose()?;
            Ok::<_, StudyError>((out.summary, refs, proposed))
        })
        .await;
        let reduced_at = Instant::now();
        self.computed(&ctx, slots, core, reduced_at - started);
        let (summary, refs, proposed) = match reduced {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let ending = Ending::Deterministic(format!("reduce: {e}"));
                return self
                    .end_attempt(
                        &study,
                        job.row.id,
                        job.row.attempt,
                        job.row.max_attempts,
                        ending,
                    )
                    .await;
            }
            Err(join) => {
                let ending = Ending::Retry(format!("reduce panicked: {join}"));
                return self
                    .end_attempt(
                        &study,
                        job.row.id,
                        job.row.attempt,
                        job.row.max_attempts,
                        ending,
                    )
                    .await;
            }
        };
        let summary = serde_json::to_string(&summary)?;
        let arrays = serde_json::to_string(&refs)?;
        let provenance = serde_json::to_string(&dtop_studies::Provenance::Study {
            study_id: study.clone(),
        })?;
        let filed = in_tx!(&self.inner.db, tx => {
            let revision = crate::db::next_revision!(tx);
            let changed = sqlx::query(
                "UPDATE dtop_studies SET state = 'succeeded', finished_at = $2, revision = $3 \
                 WHERE id = $1 AND state = 'reducing'",
            )
            .bind(&study)
            .bind(crate::now_rfc3339())
            .bind(revision)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?
            .rows_affected();
            // The proposed model is filed in the same transaction as the result, so a retried
            // reduce never files a second version, and a study that was cancelled meanwhile
            // files none.
            let mut filed = None;
            if changed == 1 {
                if let Some(p) = &proposed {
                    let latest: Option<i64> =
                        sqlx::query_scalar("SELECT MAX(version) FROM dtop_models WHERE name = $1")
                            .bind(&p.name)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(sqlx_error)?;
                    let version = latest.unwrap_or(0) + 1;
                    sqlx::query(
                        "INSERT INTO dtop_models (name, version, spec, provenance, created_by, created_at, status) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'proposed')",
                    )
                    .bind(&p.name)
                    .bind(version)
                    .bind(&p.spec_json)
                    .bind(&provenance)
                    .bind(&submitted_by)
                    .bind(crate::now_rfc3339())
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_error)?;
                    filed = Some(format!("{}@{version}", p.name));
                }
                sqlx::query(
                    "INSERT INTO dtop_results (study_id, summary, arrays, created_at, proposed_model) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (study_id) DO NOTHING",
                )
                .bind(&study)
                .bind(&summary)
                .bind(&arrays)
                .bind(crate::now_rfc3339())
                .bind(&filed)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_error)?;
            }
            ctx.job_complete_tx(&mut tx).await.map_err(crate::db::river_error)?;
            filed
        });
        tracing::debug!(
            study,
            fetch_ms = (fetched - claimed).as_secs_f64() * 1e3,
            parse_ms = (parsed - fetched).as_secs_f64() * 1e3,
            reduce_ms = (reduced_at - started).as_secs_f64() * 1e3,
            file_ms = reduced_at.elapsed().as_secs_f64() * 1e3,
            "Reduce done."
        );
        if let Some(filed) = &filed {
            tracing::info!(study, model = %filed, "Study proposed a model version; it awaits review.");
        }
        self.inner
            .stats
            .reduces_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(study, "Study succeeded.");
        Ok(WorkOutcome::Complete)
    }

    /// Runs chunks (and reduce steps) until `shutdown`, then stops fetching and lets running
    /// chunks finish. In-process for `dtop up`, and the body of `dtop-worker`. While the
    /// database is away River's fetch loop keeps retrying; starting is retried here with
    /// backoff.
    ///
    /// # Errors
    /// `Internal` when the worker cannot be built (bad options).
    pub async fn run_worker(
        &self,
        options: WorkerOptions,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        if options.concurrency == 0 {
            return Err(EngineError::Invalid(vec![dtop_studies::FieldProblem::new(
                "worker.concurrency",
                "must be at least 1",
            )]));
        }
        let fetch = self.inner.config.fetch;
        // River claims up to `concurrency` jobs, `concurrency + prefetch` while chunks are
        // short (`set_river_slots`); `slots` lets `concurrency` of them compute at once.
        let slots = CoreSlots::new(options.concurrency, fetch.prefetch, fetch.prefetch_wait());
        let mut workers = Workers::new();
        let (e, s) = (self.clone(), slots.clone());
        workers
            .add_fn(move |ctx: WorkContext, job: Job<ChunkJob>| {
                let (e, s) = (e.clone(), s.clone());
                async move { snooze_if_unavailable(e.work_chunk(ctx, job, &s).await) }
            })
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let (e, s) = (self.clone(), slots.clone());
        workers
            .add_fn(move |ctx: WorkContext, job: Job<ReduceJob>| {
                let (e, s) = (e.clone(), s.clone());
                async move { snooze_if_unavailable(e.work_reduce(ctx, job, &s).await) }
            })
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let rescue_after = self.rescue_after();
        // The leader's chores run often enough that a rescued chunk is made available again
        // soon after it becomes rescuable. A killed leader is replaced only when its lease
        // ends (River: elect interval + 10 s), so the elect interval is kept short too.
        let chores = (rescue_after / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let maintenance = MaintenanceConfig::default()
            .with_rescue_after(rescue_after)
            .with_rescuer_interval(chores)
            .with_scheduler_interval(chores)
            .with_elect_interval(chores.max(Duration::from_secs(1)));
        let client_id = river_client_id(&options.name);
        let client = on_db!(&self.inner.db, pool => {
            riverqueue::Client::builder(pool.clone())
                .id(client_id.clone())
                .workers(workers)
                // Fetch pacing (`EngineConfig::fetch`): River's default cooldown of 100 ms
                // would idle a worker after every chunk shorter than that.
                .fetch_cooldown(fetch.cooldown())
                .queue(
                    "default",
                    QueueConfig::new(slots.initial_slots())
                        .with_fetch_poll_interval(fetch.poll_interval()),
                )
                // River's rescuer skips running jobs without a timeout (they "may run
                // forever"), so without one a killed worker's chunk would never run again.
                // A chunk must therefore finish within `rescue_after_s`; one that does not
                // is stopped and retried like a failure (`work_chunk`).
                .job_timeout(rescue_after)
                .maintenance(maintenance)
                .build()
        })
        .map_err(|e| EngineError::Internal(format!("building the worker: {e}")))?;
        let mut backoff =
            dtop_daemon::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut run = loop {
            match client.start() {
                Ok(run) => break run,
                Err(e) => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(worker = %options.name, error = %e, delay_ms = delay.as_millis() as u64, "Worker could not start; retrying.");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        tracing::info!(worker = %options.name, river_client = %client_id, concurrency = options.concurrency, prefetch = fetch.prefetch, rescue_after_s = rescue_after.as_secs_f64(), fetch_cooldown_ms = fetch.cooldown_ms, "Worker running.");
        tokio::select! {
            () = shutdown.cancelled() => {}
            res = run.wait() => {
                return res.map_err(|e| EngineError::Internal(format!("worker stopped: {e}")));
            }
        }
        tracing::info!(worker = %options.name, "Worker stopping; letting running chunks finish.");
        run.stop()
            .await
            .map_err(|e| EngineError::Internal(format!("worker stop: {e}")))
    }
}

/// Sets the worker's River job slots (the default queue's `max_workers`) when `slots` says
/// they change. River applies it while running; lowering never cancels a job.
fn set_river_slots(ctx: &WorkContext, slots: Option<usize>) {
    let (Some(n), Some(client)) = (slots, ctx.client()) else {
        return;
    };
    let queues = client.local_queues();
    let Some(config) = queues.configs().remove("default") else {
        return;
    };
    match queues.update("default", config.with_max_workers(n)) {
        Ok(()) => tracing::debug!(river_slots = n, "Claiming ahead changed."),
        Err(e) => {
            tracing::warn!(error = %e, river_slots = n, "Could not change the worker's job slots.")
        }
    }
}

/// How long a job waits when the database was away during its attempt.
const UNAVAILABLE_SNOOZE: Duration = Duration::from_secs(1);

/// A job whose attempt failed because the database was away is snoozed, which does not use
/// one of its attempts: an outage longer than a few retries must not fail studies. (While the
/// database is away River cannot record the snooze either; it keeps retrying, and the rescuer
/// covers an attempt it gave up on.)
fn snooze_if_unavailable(result: Result<WorkOutcome, BoxError>) -> Result<WorkOutcome, BoxError> {
    match result {
        Err(e) if is_unavailable(e.as_ref()) => {
            tracing::warn!(error = %e, "Database away during a job; snoozed.");
            Ok(WorkOutcome::Snooze(UNAVAILABLE_SNOOZE))
        }
        other => other,
    }
}

fn is_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<EngineError>(),
        Some(EngineError::Unavailable(_))
    ) || matches!(
        e.downcast_ref::<RecordError>(),
        Some(RecordError::Engine(EngineError::Unavailable(_)))
    )
}

/// The River client id of a worker named `name`: the name (what River records in a job's
/// `attempted_by` and the leader table) and a random suffix, because River requires the id
/// to be unique per running process and two workers may be given one name. At most 100
/// bytes, River's limit.
pub(crate) fn river_client_id(name: &str) -> String {
    let suffix = format!("-{:08x}", rand::random::<u32>());
    let mut head: String = name.to_owned();
    while head.len() + suffix.len() > 100 {
        head.pop();
    }
    if head.is_empty() {
        head.push_str("worker");
    }
    head + &suffix
}
