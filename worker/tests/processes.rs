//! The engine across processes: real `dtop-worker` processes on a real PostgreSQL, studies
//! submitted and read through `dtop_engine::Engine` in the test process. A worker SIGKILLed
//! mid-chunk, a cancel reaching other processes, PostgreSQL restarted mid-study, and the
//! first-output-kept rule for a chunk recorded twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dtop_engine::{
    ChunkRecorded, Engine, EngineConfig, EngineError, ModelChoice, StudyId, StudyRecord,
    StudyState, SubmitRequest, WorkerOptions,
};
use dtop_studies::{ChunkCtx, ModelSpec, StudyKind};
use riverqueue::sqlx::{self, PgPool};
use tokio_util::sync::CancellationToken;

/// The tests share two cores with their worker processes; run them one at a time so chunk
/// times stay well inside `rescue_after_s`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seconds after which a silent worker's chunk runs again; also each chunk's time limit.
const RESCUE_AFTER_S: f64 = 6.0;
/// Design samples per chunk: 48 blocks of 16 384, about 0.4 s of work on an idle core (the
/// shared build machine makes it two to four times that, well inside `RESCUE_AFTER_S`).
const SAMPLES_PER_CHUNK: u64 = 48 * 16_384;

fn design_model() -> ModelSpec {
    dtop_studies::model::builtin_models()
        .into_iter()
        .find(|(n, _)| *n == "cristallo-design")
        .expect("built-in cristallo-design")
        .1
}

fn design_params(chunks: u64) -> serde_json::Value {
    let mut p = dtop_studies::defaults(StudyKind::Design, &design_model());
    p["samples"] = serde_json::json!(chunks * SAMPLES_PER_CHUNK);
    p["samples_per_chunk"] = serde_json::json!(SAMPLES_PER_CHUNK);
    p
}

fn design_request(chunks: u64, seed: u64) -> SubmitRequest {
    SubmitRequest {
        kind: StudyKind::Design,
        model: ModelChoice::Catalogue("cristallo-design".parse().unwrap()),
        params: design_params(chunks),
        seed: Some(seed),
        submitted_by: "ada".into(),
        inputs: Vec::new(),
    }
}

/// What a study's result is reduced to for comparison: the summary, and each stored array's
/// name and SHA-256.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    summary: serde_json::Value,
    arrays: Vec<(String, String)>,
}

/// The undisturbed result: every chunk computed one after the other in this process by the
/// pure functions, then reduced, and the arrays hashed as the result store does.
fn reference(chunks: u64, seed: u64) -> Fingerprint {
    let model = design_model();
    let params = design_params(chunks);
    let flag = std::sync::atomic::AtomicBool::new(false);
    let outputs: Vec<serde_json::Value> = (0..chunks as u32)
        .map(|i| {
            dtop_studies::run_chunk(
                StudyKind::Design,
                &model,
                &params,
                seed,
                i,
                &ChunkCtx::new(&flag),
                &dtop_studies::Inputs::none(),
            )
            .unwrap()
        })
        .collect();
    let out = dtop_studies::reduce(
        StudyKind::Design,
        &model,
        &params,
        seed,
        &outputs,
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    Fingerprint {
        summary: out.summary,
        arrays: out
            .arrays
            .iter()
            .map(|a| (a.name.clone(), dtop_engine::store::canonical(a).unwrap().1))
            .collect(),
    }
}

async fn fingerprint(engine: &Engine, id: &StudyId) -> Fingerprint {
    let r = engine.result(id).await.unwrap();
    Fingerprint {
        summary: r.summary,
        arrays: r
            .arrays
            .into_iter()
            .map(|a| (a.name, a.sha256_hex))
            .collect(),
    }
}

/// A `dtop-worker` process, SIGKILLed (by its PID) if still running when dropped.
struct WorkerProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    /// Writes a config for `config` into `dir` and starts the real binary on it.
    fn spawn(name: &str, config: &EngineConfig, dir: &Path) -> WorkerProcess {
        let path = dir.join(format!("{name}.toml"));
        let text = format!(
            "[engine]\ndatabase_url = {:?}\nresult_dir = {:?}\nchunks_in_flight_per_study = {}\n\
             max_attempts = {}\nrescue_after_s = {}\n\n[worker]\nname = {name:?}\nconcurrency = 1\n\
             grace_s = 5.0\n",
            config.database_url,
            config.result_dir.display().to_string(),
            config.chunks_in_flight_per_study,
            config.max_attempts,
            config.rescue_after_s,
        );
        std::fs::write(&path, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_dtop-worker"))
            .arg("--config")
            .arg(&path)
            .args(["--log", "info"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        WorkerProcess {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} did not stop on SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn engine_config(database_url: String, dir: &Path) -> EngineConfig {
    EngineConfig {
        rescue_after_s: RESCUE_AFTER_S,
        chunks_in_flight_per_study: 4,
        ..support::config(database_url, dir)
    }
}

/// Waits (bounded) until the study is final; the workers' logs go into the failure message.
async fn wait_final(
    engine: &Engine,
    id: &StudyId,
    within: Duration,
    workers: &[&WorkerProcess],
) -> StudyRecord {
    let until = Instant::now() + within;
    loop {
        if let Ok(s) = engine.study(id).await {
            if s.state.is_final() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "study still {:?} ({}/{} chunks) after {within:?}; logs:\n{}",
                s.state,
                s.chunks_done,
                s.chunks_total,
                workers
                    .iter()
                    .map(|w| format!("--- {}\n{}", w.name, w.log()))
                    .collect::<String>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The study's chunk jobs in River's table: (job id, chunk index, state, last attempted_by).
async fn chunk_jobs(pool: &PgPool, id: &StudyId) -> Vec<(i64, i64, String, Option<String>)> {
    sqlx::query_as(
        "SELECT j.id, (j.args->>'index')::bigint, j.state::text, j.attempted_by[array_length(j.attempted_by, 1)] \
         FROM river_job j WHERE j.args->>'study' = $1 AND j.kind = 'dtop_chunk' ORDER BY j.id",
    )
    .bind(&id.0)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits (bounded) until at least `n` of the study's chunks are running, and returns them.
async fn wait_running(
    pool: &PgPool,
    id: &StudyId,
    holders: usize,
    within: Duration,
) -> Vec<(i64, i64, String, Option<String>)> {
    let until = Instant::now() + within;
    loop {
        let running: Vec<_> = chunk_jobs(pool, id)
            .await
            .into_iter()
            .filter(|j| j.2 == "running")
            .collect();
        let by: std::collections::BTreeSet<_> = running
            .iter()
            .filter_map(|j| Some(j.3.as_deref()?.split('-').next()?.to_owned()))
            .collect();
        if by.len() >= holders {
            return running;
        }
        assert!(
            Instant::now() < until,
            "chunks running on fewer than {holders} workers after {within:?}: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_loses_nothing_and_the_result_is_unchanged() {
    let _serial = SERIAL.lock().await;
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.fresh_database().await;
    let config = engine_config(url.clone(), dir.path());
    let engine = Engine::connect(&config).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let mut wa = WorkerProcess::spawn("wa", &config, dir.path());
    let mut wb = WorkerProcess::spawn("wb", &config, dir.path());
    const CHUNKS: u64 = 6;
    let record = engine.submit(design_request(CHUNKS, 11)).await.unwrap();
    // Both workers busy; kill the one holding a running chunk (River records the client id,
    // which starts with the worker's name, in `attempted_by`). A worker holds its chunk and
    // the one it claimed ahead (`[engine.fetch] prefetch = 1`).
    let running = wait_running(&pool, &record.id, 2, Duration::from_secs(30)).await;
    let holder = running[0]
        .3
        .clone()
        .expect("a running job has an attempted_by");
    let (victim, survivor) = if holder.starts_with("wa-") {
        (&mut wa, &mut wb)
    } else {
        assert!(holder.starts_with("wb-"), "{holder}");
        (&mut wb, &mut wa)
    };
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = victim.child.wait();
    // The chunk the dead process held: still `running` in River's table, attempted by it.
    let prefix = format!("{}-", victim.name);
    let held: Vec<_> = chunk_jobs(&pool, &record.id)
        .await
        .into_iter()
        .filter(|j| j.2 == "running" && j.3.as_deref().is_some_and(|b| b.starts_with(&prefix)))
        .collect();
    assert!(
        (1..=2).contains(&held.len()),
        "the killed worker held its chunk and at most one claimed ahead: {held:?}"
    );
    let done = wait_final(
        &engine,
        &record.id,
        Duration::from_secs(60),
        &[&*victim, &*survivor],
    )
    .await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    assert_eq!(done.chunks_done, CHUNKS as u32);
    // Each killed chunk ran again (a second attempt, on the survivor) and its output is the
    // one recorded.
    for (job_id, index, _, _) in held {
        let (attempt, by): (i64, Vec<String>) =
            sqlx::query_as("SELECT attempt::bigint, attempted_by FROM river_job WHERE id = $1")
                .bind(job_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(attempt >= 2, "chunk {index} was not run again: {attempt}");
        assert!(
            by.last()
                .unwrap()
                .starts_with(&format!("{}-", survivor.name)),
            "{by:?}"
        );
        let recorded_attempt: i64 = sqlx::query_scalar(
            "SELECT attempt FROM dtop_chunks WHERE study_id = $1 AND chunk_index = $2",
        )
        .bind(&record.id.0)
        .bind(index)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(recorded_attempt >= 2, "chunk {index}: {recorded_attempt}");
    }
    assert_eq!(
        fingerprint(&engine, &record.id).await,
        reference(CHUNKS, 11)
    );
    assert!(survivor.alive(), "{}", survivor.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_chunk_on_workers_in_other_processes() {
    let _serial = SERIAL.lock().await;
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.fresh_database().await;
    let config = engine_config(url.clone(), dir.path());
    let engine = Engine::connect(&config).await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let mut wa = WorkerProcess::spawn("wa", &config, dir.path());
    let mut wb = WorkerProcess::spawn("wb", &config, dir.path());
    let record = engine.submit(design_request(40, 5)).await.unwrap();
    let running = wait_running(&pool, &record.id, 2, Duration::from_secs(30)).await;
    let holders: std::collections::BTreeSet<String> = running
        .iter()
        .map(|j| j.3.clone().unwrap()[..2].to_owned())
        .collect();
    assert_eq!(holders.len(), 2, "both processes run chunks: {running:?}");
    let cancelled = engine.cancel(&record.id, "grace").await.unwrap();
    assert_eq!(cancelled.state, StudyState::Cancelled);
    // Every chunk job stops: none running, queued or waiting for a retry.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = chunk_jobs(&pool, &record.id).await;
        let live: Vec<_> = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.2.as_str(),
                    "running" | "available" | "retryable" | "scheduled" | "pending"
                )
            })
            .collect();
        if live.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "chunks still live 10 s after the cancel: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = engine.study(&record.id).await.unwrap();
    assert_eq!(after.state, StudyState::Cancelled);
    assert!(after.chunks_done < after.chunks_total);
    // The workers are alive and take other work.
    assert!(wa.alive(), "{}", wa.log());
    assert!(wb.alive(), "{}", wb.log());
    let next = engine.submit(design_request(2, 6)).await.unwrap();
    let done = wait_final(&engine, &next.id, Duration::from_secs(30), &[&wa, &wb]).await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    assert!(wa.terminate().success());
    assert!(wb.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_pause_while_postgres_restarts_and_the_study_completes_unchanged() {
    let _serial = SERIAL.lock().await;
    // The test's own cluster, so it can be stopped and started (same data dir and port).
    let mut cluster = support::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let url = {
        let pool = PgPool::connect(&cluster.url()).await.unwrap();
        sqlx::query("CREATE DATABASE dtop_restart")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        support::database_url_with(&cluster.url(), "dtop_restart")
    };
    let config = engine_config(url.clone(), dir.path());
    let engine = Engine::connect(&config).await.unwrap();
    let wa = WorkerProcess::spawn("wa", &config, dir.path());
    let wb = WorkerProcess::spawn("wb", &config, dir.path());
    let mut workers = [wa, wb];
    const CHUNKS: u64 = 6;
    let record = engine.submit(design_request(CHUNKS, 23)).await.unwrap();
    // Mid-study: some chunks done, others running.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.study(&record.id).await.unwrap();
        if s.chunks_done >= 2 {
            assert!(s.chunks_done < CHUNKS as u32, "study ended too soon");
            break;
        }
        assert!(Instant::now() < until, "no chunk done after 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop_server();
    assert!(
        matches!(engine.health().await, Err(EngineError::Unavailable(_))),
        "health while PostgreSQL is down"
    );
    assert!(matches!(
        engine.study(&record.id).await,
        Err(EngineError::Unavailable(_))
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    for w in &mut workers {
        assert!(
            w.alive(),
            "{} exited while PostgreSQL was down:\n{}",
            w.name,
            w.log()
        );
    }
    cluster.start_server();
    let until = Instant::now() + Duration::from_secs(20);
    while engine.health().await.is_err() {
        assert!(Instant::now() < until, "engine did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = wait_final(
        &engine,
        &record.id,
        Duration::from_secs(60),
        &[&workers[0], &workers[1]],
    )
    .await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    assert_eq!(
        fingerprint(&engine, &record.id).await,
        reference(CHUNKS, 23)
    );
    let [wa, wb] = workers;
    assert!(wa.terminate().success());
    assert!(wb.terminate().success());
}

/// A chunk's output recorded twice keeps the first; a worker that then runs the same chunk
/// again (what a rescued chunk's late first run amounts to) changes nothing.
async fn a_chunk_recorded_twice_keeps_its_first_output(config: EngineConfig) {
    const CHUNKS: u64 = 3;
    let engine = Engine::connect(&config).await.unwrap();
    let record = engine.submit(design_request(CHUNKS, 31)).await.unwrap();
    let flag = std::sync::atomic::AtomicBool::new(false);
    let first = dtop_studies::run_chunk(
        StudyKind::Design,
        &design_model(),
        &design_params(CHUNKS),
        31,
        0,
        &ChunkCtx::new(&flag),
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    assert_eq!(
        engine
            .record_chunk_output(&record.id, 0, 1, &first)
            .await
            .unwrap(),
        ChunkRecorded::First
    );
    let other = serde_json::json!({"not": "the first output"});
    assert_eq!(
        engine
            .record_chunk_output(&record.id, 0, 2, &other)
            .await
            .unwrap(),
        ChunkRecorded::Duplicate
    );
    let s = engine.study(&record.id).await.unwrap();
    assert_eq!(s.chunks_done, 1, "a duplicate is not counted");
    // A worker now runs every queued chunk, chunk 0's job too: its output is the second.
    let stop = CancellationToken::new();
    let e = engine.clone();
    let s = stop.clone();
    let worker = tokio::spawn(async move {
        e.run_worker(
            WorkerOptions {
                name: "solo".into(),
                concurrency: 1,
            },
            s,
        )
        .await
    });
    let done = wait_final(&engine, &record.id, Duration::from_secs(60), &[]).await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    assert_eq!(done.chunks_done, CHUNKS as u32);
    let stats = engine.worker_stats();
    assert_eq!(
        stats
            .chunks_duplicate_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        fingerprint(&engine, &record.id).await,
        reference(CHUNKS, 31)
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_recorded_twice_keeps_its_first_output_on_postgres() {
    let _serial = SERIAL.lock().await;
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    a_chunk_recorded_twice_keeps_its_first_output(engine_config(
        pg.fresh_database().await,
        dir.path(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_recorded_twice_keeps_its_first_output_on_sqlite() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    a_chunk_recorded_twice_keeps_its_first_output(EngineConfig {
        rescue_after_s: RESCUE_AFTER_S,
        ..support::sqlite_config(dir.path())
    })
    .await;
}
