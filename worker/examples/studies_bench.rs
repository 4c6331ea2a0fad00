//! Benchmarks of the studies engine's queue and of its worker processes, each printing its
//! figures and a peer measured in the same run (BENCHMARKS.md, "Studies engine"). Bounded: every
//! loop has a deadline. Loopback only: it takes the URL of a running PostgreSQL (a fresh
//! database is created on it per call) and starts real `dtop-worker` processes.
//!
//! ```text
//! studies_bench queue  (--pg URL | --sqlite) [--jobs N] [--studies M] [--slots S]
//! studies_bench kill   --pg URL [--runs R] [--rescue-after-s S]
//! studies_bench cancel --pg URL [--runs R]
//! studies_bench study  --pg URL --kind design|uncertainty --workers W [--samples-per-chunk N]
//!                      [--frequencies-per-bounds-chunk F]
//! ```
//!
//! Every command takes `--cooldown-ms C` (River's fetch cooldown for the engine and its workers;
//! default the engine's, `dtop_engine::default_fetch_cooldown_ms`; River's own is 100) and
//! `--prefetch P` (chunks a worker claims ahead, `[engine.fetch] prefetch`; default the
//! engine's, 0 turns it off).
//! `study` prints each chunk's start and end, per worker, from River's job table, and the CPU
//! time the workers, this process and the PostgreSQL server (when it runs on this machine)
//! used over the study (`cpu_s`) and over 1 s idle before it; `BENCH_PG_DETAIL=1` splits the
//! server's by process, and `RUST_LOG=warn,dtop_engine::jobs=debug` (inherited by the workers)
//! adds the workers' own timings of each chunk and of the reduce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_engine::{Engine, EngineConfig, ModelChoice, StudyId, StudyState, SubmitRequest};
use dtop_studies::{ModelSpec, StudyKind};
use riverqueue::sqlx::{self, PgPool};
use riverqueue::{Job, JobArgs, QueueConfig, WorkContext, WorkOutcome, Workers};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A job that does nothing: River's own cost per job.
#[derive(Debug, Clone, Serialize, Deserialize, JobArgs)]
#[river(kind = "bench_noop")]
struct NoopJob {
    n: u64,
}

struct Args {
    command: String,
    pg: Option<String>,
    sqlite: bool,
    jobs: u64,
    studies: u64,
    runs: u32,
    rescue_after_s: f64,
    kind: String,
    workers: u32,
    slots: usize,
    cooldown_ms: u64,
    prefetch: u32,
    samples_per_chunk: Option<u64>,
    frequencies_per_bounds_chunk: Option<u64>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        command: it
            .next()
            .context("command: queue | kill | cancel | study")?,
        pg: None,
        sqlite: false,
        jobs: 5_000,
        studies: 200,
        runs: 3,
        rescue_after_s: 3.0,
        kind: "design".into(),
        workers: 1,
        slots: 8,
        cooldown_ms: dtop_engine::default_fetch_cooldown_ms(),
        prefetch: dtop_engine::default_fetch_prefetch(),
        samples_per_chunk: None,
        frequencies_per_bounds_chunk: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pg" => a.pg = Some(value()?),
            "--sqlite" => a.sqlite = true,
            "--jobs" => a.jobs = value()?.parse()?,
            "--studies" => a.studies = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--rescue-after-s" => a.rescue_after_s = value()?.parse()?,
            "--kind" => a.kind = value()?,
            "--workers" => a.workers = value()?.parse()?,
            "--slots" => a.slots = value()?.parse()?,
            "--cooldown-ms" => a.cooldown_ms = value()?.parse()?,
            "--prefetch" => a.prefetch = value()?.parse()?,
            "--samples-per-chunk" => a.samples_per_chunk = Some(value()?.parse()?),
            "--frequencies-per-bounds-chunk" => {
                a.frequencies_per_bounds_chunk = Some(value()?.parse()?)
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let base = match url[scheme_end..].find('/') {
        Some(i) => &url[..scheme_end + i],
        None => url,
    };
    format!("{base}/{name}")
}

/// A new database on the server of `url`.
async fn fresh_database(url: &str) -> Result<String> {
    let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let pool = PgPool::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(with_database(url, &name))
}

fn engine_config(database_url: String, dir: &Path, rescue_after_s: f64, a: &Args) -> EngineConfig {
    let fetch = dtop_engine::FetchConfig {
        cooldown_ms: a.cooldown_ms,
        poll_interval_ms: dtop_engine::default_fetch_poll_interval_ms().max(a.cooldown_ms),
        prefetch: a.prefetch,
        ..Default::default()
    };
    EngineConfig {
        database_url,
        result_dir: dir.join("results"),
        budget: Default::default(),
        chunks_in_flight_per_study: 8,
        max_attempts: 3,
        rescue_after_s,
        fetch,
        solvers: Default::default(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn builtin(name: &str) -> ModelSpec {
    dtop_studies::model::builtin_models()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a built-in model")
        .1
}

/// A `design` study on `cristallo-design` of `samples`, in chunks of `per_chunk` (`None`: as
/// the engine's budget makes them).
fn design(samples: u64, per_chunk: Option<u64>, seed: u64) -> SubmitRequest {
    let mut p = dtop_studies::defaults(StudyKind::Design, &builtin("cristallo-design"));
    p["samples"] = serde_json::json!(samples);
    if let Some(n) = per_chunk {
        p["samples_per_chunk"] = serde_json::json!(n);
    }
    SubmitRequest {
        kind: StudyKind::Design,
        model: ModelChoice::Catalogue("cristallo-design".parse().unwrap()),
        params: p,
        seed: Some(seed),
        submitted_by: "bench".into(),
        inputs: Vec::new(),
    }
}

/// An `uncertainty` study on `cristallo-msd3`: 10^5 samples × 1000 frequencies, in chunks of
/// `per_chunk` samples and bounds chunks of `per_bounds_chunk` frequencies (`None`: as the
/// engine's budget makes them).
fn uncertainty(per_chunk: Option<u64>, per_bounds_chunk: Option<u64>, seed: u64) -> SubmitRequest {
    let mut p = dtop_studies::defaults(StudyKind::Uncertainty, &builtin("cristallo-msd3"));
    p["samples"] = serde_json::json!(100_000);
    p["frequencies"] = serde_json::json!(1000);
    if let Some(n) = per_chunk {
        p["samples_per_chunk"] = serde_json::json!(n);
    }
    if let Some(f) = per_bounds_chunk {
        p["frequencies_per_bounds_chunk"] = serde_json::json!(f);
    }
    SubmitRequest {
        kind: StudyKind::Uncertainty,
        model: ModelChoice::Catalogue("cristallo-msd3".parse().unwrap()),
        params: p,
        seed: Some(seed),
        submitted_by: "bench".into(),
        inputs: Vec::new(),
    }
}

/// A `dtop-worker` process (the binary beside this example's directory), concurrency 1.
struct WorkerProcess {
    name: String,
    child: Child,
}

impl WorkerProcess {
    fn spawn(name: &str, config: &EngineConfig, dir: &Path) -> Result<WorkerProcess> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[engine]\ndatabase_url = {:?}\nresult_dir = {:?}\nchunks_in_flight_per_study = {}\n\
                 rescue_after_s = {}\n\n[engine.fetch]\ncooldown_ms = {}\npoll_interval_ms = {}\nprefetch = {}\n\n\
                 [worker]\nname = {name:?}\nconcurrency = 1\ngrace_s = 5.0\n",
                config.database_url,
                config.result_dir.display().to_string(),
                config.chunks_in_flight_per_study,
                config.rescue_after_s,
                config.fetch.cooldown_ms,
                config.fetch.poll_interval_ms,
                config.fetch.prefetch,
            ),
        )?;
        let child = Command::new(worker_binary()?)
            .arg("--config")
            .arg(&path)
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()?;
        Ok(WorkerProcess {
            name: name.to_owned(),
            child,
        })
    }

    fn signal(&self, s: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), s);
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `target/release/dtop-worker`, beside `target/release/examples/`.
fn worker_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("no parent directory")?
        .join("dtop-worker");
    if !bin.exists() {
        bail!(
            "{} missing: cargo build --release -p dtop-worker",
            bin.display()
        );
    }
    Ok(bin)
}

/// Waits (bounded) until the study is final.
async fn wait_final(engine: &Engine, id: &StudyId, within: Duration) -> Result<StudyState> {
    let until = Instant::now() + within;
    loop {
        let s = engine.study(id).await?;
        if s.state.is_final() {
            return Ok(s.state);
        }
        if Instant::now() > until {
            bail!("study still {:?} after {within:?}", s.state);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Makes the bench's database notify channel `bench_study_final` with a study's id when the
/// study reaches a final state (a trigger in this database only; the engine is unchanged), so
/// the bench can wait for the end without querying every few ms: the polls' own CPU (this
/// process and its PostgreSQL backend) would be taken from the workers on a 2-core machine.
async fn notify_final_states(pool: &PgPool) -> Result<()> {
    sqlx::query(
        "CREATE FUNCTION bench_study_final() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.state IN ('succeeded', 'failed', 'cancelled') AND NEW.state IS DISTINCT FROM OLD.state \
         THEN PERFORM pg_notify('bench_study_final', NEW.id); END IF; RETURN NEW; END $$",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TRIGGER bench_study_final AFTER UPDATE OF state ON dtop_studies \
         FOR EACH ROW EXECUTE FUNCTION bench_study_final()",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Waits (bounded) until the study is final: on `listener`'s notification for it (see
/// [`notify_final_states`]), with a look at the study every second in case one is missed.
async fn wait_final_notified(
    engine: &Engine,
    listener: &mut sqlx::postgres::PgListener,
    id: &StudyId,
    within: Duration,
) -> Result<StudyState> {
    let until = Instant::now() + within;
    loop {
        let s = engine.study(id).await?;
        if s.state.is_final() {
            return Ok(s.state);
        }
        if Instant::now() > until {
            bail!("study still {:?} after {within:?}", s.state);
        }
        let next = (Instant::now() + Duration::from_secs(1)).min(until);
        while let Ok(n) = tokio::time::timeout_at(next.into(), listener.recv()).await {
            if n?.payload() == id.0 {
                break;
            }
        }
    }
}

/// The study's chunk jobs that are running: (job id, last attempted_by).
async fn running_chunks(pool: &PgPool, id: &StudyId) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT j.id, j.attempted_by[array_length(j.attempted_by, 1)] FROM river_job j \
         JOIN dtop_study_jobs s ON s.job_id = j.id \
         WHERE s.study_id = $1 AND j.kind = 'dtop_chunk' AND j.state = 'running'",
    )
    .bind(&id.0)
    .fetch_all(pool)
    .await?)
}

async fn wait_running(pool: &PgPool, id: &StudyId, n: usize) -> Result<Vec<(i64, String)>> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let r = running_chunks(pool, id).await?;
        if r.len() >= n {
            return Ok(r);
        }
        if Instant::now() > until {
            bail!("fewer than {n} chunks running after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// No-op jobs per second through River (our client settings), modal studies per second
/// through the engine, and, on PostgreSQL, pgbench's bare SKIP LOCKED dequeue on the same
/// server.
async fn queue(a: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = match (&a.pg, a.sqlite) {
        (Some(pg), false) => fresh_database(pg).await?,
        (None, true) => format!("sqlite://{}", dir.path().join("bench.db").display()),
        _ => bail!("give --pg URL or --sqlite"),
    };
    let config = engine_config(url.clone(), dir.path(), 30.0, a);
    let engine = Engine::connect(&config).await?;

    // 1. River no-op jobs: N inserted first, then one client with `--slots` job slots (default
    //    8, as the engine's in-process worker here) drains them. River fetches at most the free
    //    slots once per fetch cooldown (`--cooldown-ms`), so slots / cooldown is its ceiling.
    let mut workers = Workers::new();
    workers.add_fn(|_ctx: WorkContext, _job: Job<NoopJob>| async {
        Ok::<_, riverqueue::BoxError>(WorkOutcome::Complete)
    })?;
    let count_completed;
    let elapsed_s = if a.sqlite {
        let pool = riverqueue::sqlx::SqlitePool::connect(&url).await?;
        let client = riverqueue::Client::builder(pool.clone())
            .workers(workers)
            .fetch_cooldown(config.fetch.cooldown())
            .queue(
                "default",
                QueueConfig::new(a.slots).with_fetch_poll_interval(config.fetch.poll_interval()),
            )
            .build()?;
        for start in (0..a.jobs).step_by(1000) {
            client
                .insert_many((start..(start + 1000).min(a.jobs)).map(|n| NoopJob { n }))
                .await?;
        }
        let t0 = Instant::now();
        let mut run = client.start()?;
        let until = t0 + Duration::from_secs(300);
        loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM river_job WHERE kind = 'bench_noop' AND state = 'completed'",
            )
            .fetch_one(&pool)
            .await?;
            if done as u64 >= a.jobs {
                count_completed = done;
                break;
            }
            if Instant::now() > until {
                bail!("no-op jobs not done after 300 s: {done}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = t0.elapsed().as_secs_f64();
        run.stop().await?;
        e
    } else {
        let pool = PgPool::connect(&url).await?;
        let client = riverqueue::Client::builder(pool.clone())
            .workers(workers)
            .fetch_cooldown(config.fetch.cooldown())
            .queue(
                "default",
                QueueConfig::new(a.slots).with_fetch_poll_interval(config.fetch.poll_interval()),
            )
            .build()?;
        for start in (0..a.jobs).step_by(1000) {
            client
                .insert_many((start..(start + 1000).min(a.jobs)).map(|n| NoopJob { n }))
                .await?;
        }
        let t0 = Instant::now();
        let mut run = client.start()?;
        let until = t0 + Duration::from_secs(300);
        loop {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM river_job WHERE kind = 'bench_noop' AND state = 'completed'",
            )
            .fetch_one(&pool)
            .await?;
            if done as u64 >= a.jobs {
                count_completed = done;
                break;
            }
            if Instant::now() > until {
                bail!("no-op jobs not done after 300 s: {done}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = t0.elapsed().as_secs_f64();
        run.stop().await?;
        e
    };
    println!(
        "river_noop_jobs={count_completed} seconds={elapsed_s:.3} jobs_per_s={:.0}",
        count_completed as f64 / elapsed_s
    );

    // 2. Modal studies on a 3-storey model through the engine: submit, one chunk job, one
    //    reduce job (one result-store file), each recorded in its transactions.
    let mut ids = Vec::new();
    for i in 0..a.studies {
        let r = engine
            .submit(SubmitRequest {
                kind: StudyKind::Modal,
                model: ModelChoice::Catalogue("southampton".parse().unwrap()),
                params: serde_json::json!({}),
                seed: Some(i),
                submitted_by: "bench".into(),
                inputs: Vec::new(),
            })
            .await?;
        ids.push(r.id);
    }
    let stop = CancellationToken::new();
    let e = engine.clone();
    let s = stop.clone();
    let slots = a.slots as u32;
    let t0 = Instant::now();
    let worker = tokio::spawn(async move {
        e.run_worker(
            dtop_engine::WorkerOptions {
                name: "bench".into(),
                concurrency: slots,
            },
            s,
        )
        .await
    });
    for id in &ids {
        let state = wait_final(&engine, id, Duration::from_secs(300)).await?;
        if state != StudyState::Succeeded {
            bail!("study {} ended {state:?}", id.0);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.cancel();
    worker.await??;
    println!(
        "engine_modal_studies={} seconds={elapsed:.3} studies_per_s={:.1} jobs_per_s={:.1}",
        a.studies,
        a.studies as f64 / elapsed,
        2.0 * a.studies as f64 / elapsed
    );

    // 3. The floor of any PostgreSQL queue: pgbench, 2 clients, each transaction takes the
    //    oldest available row with FOR UPDATE SKIP LOCKED, marks it running, then completed.
    if let Some(pg) = &a.pg {
        let pool = PgPool::connect(&url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE q (id bigserial PRIMARY KEY, state text NOT NULL, attempt int NOT NULL DEFAULT 0, \
             args jsonb NOT NULL); CREATE INDEX q_available ON q (id) WHERE state = 'available'; \
             INSERT INTO q (state, args) SELECT 'available', jsonb_build_object('n', g) \
             FROM generate_series(1, {}) g; ANALYZE q;",
            a.jobs + 1000
        )))
        .execute(&pool)
        .await?;
        pool.close().await;
        let script = dir.path().join("skip_locked.sql");
        std::fs::write(&script, SKIP_LOCKED_SQL)?;
        let pgbench = pgbench_binary()?;
        let (host, port) = host_port(pg)?;
        let out = Command::new(pgbench)
            .args(["-n", "-c", "2", "-j", "2", "-t"])
            .arg((a.jobs / 2).to_string())
            .args(["-h", &host, "-p", &port, "-U", "postgres", "-f"])
            .arg(&script)
            .arg(url.rsplit('/').next().unwrap_or("postgres"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text
            .lines()
            .find(|l| l.starts_with("tps = "))
            .with_context(|| {
                format!(
                    "pgbench said: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        println!("pgbench_skip_locked_jobs={} {tps}", a.jobs);
    }
    Ok(())
}

/// One dequeue and one completion per transaction: the least work any PostgreSQL queue does
/// per job.
const SKIP_LOCKED_SQL: &str = "BEGIN;\n\
UPDATE q SET state = 'running', attempt = attempt + 1 WHERE id = (SELECT id FROM q WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \\gset\n\
UPDATE q SET state = 'completed' WHERE id = :id;\n\
COMMIT;\n";

fn pgbench_binary() -> Result<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v.pop()
        .context("no PostgreSQL installed")?
        .join("bin/pgbench"))
}

fn host_port(url: &str) -> Result<(String, String)> {
    let rest = url.split_once("://").context("URL")?.1;
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let (h, p) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    Ok((h.to_owned(), p.to_owned()))
}

/// Time from a worker's SIGKILL to its chunk running again on the other worker.
async fn kill(a: &Args) -> Result<()> {
    let pg = a.pg.as_deref().context("--pg URL")?;
    let dir = tempfile::tempdir()?;
    let url = fresh_database(pg).await?;
    let config = engine_config(url.clone(), dir.path(), a.rescue_after_s, a);
    let engine = Engine::connect(&config).await?;
    let pool = PgPool::connect(&url).await?;
    let mut procs = vec![
        WorkerProcess::spawn("w0", &config, dir.path())?,
        WorkerProcess::spawn("w1", &config, dir.path())?,
    ];
    let mut next_name = 2;
    let mut times = Vec::new();
    for run in 0..a.runs {
        // Chunks of about half a second: long enough to be mid-run when killed.
        let r = engine
            .submit(design(40 * 64 * 16_384, Some(64 * 16_384), u64::from(run)))
            .await?;
        let running = wait_running(&pool, &r.id, 2).await?;
        let leader: Option<String> =
            sqlx::query_scalar("SELECT leader_id FROM river_leader LIMIT 1")
                .fetch_optional(&pool)
                .await?;
        // Even runs kill the leader's chunk, odd runs the other worker's: a dead leader adds
        // River's lease to the rescue.
        let want_leader = run % 2 == 0;
        let (job, holder) = running
            .iter()
            .find(|(_, h)| (leader.as_deref() == Some(h.as_str())) == want_leader)
            .unwrap_or(&running[0])
            .clone();
        let victim = procs
            .iter()
            .position(|p| holder.starts_with(&format!("{}-", p.name)))
            .context("holder is none of ours")?;
        let was_leader = leader.as_deref() == Some(holder.as_str());
        let mut p = procs.remove(victim);
        p.signal(nix::sys::signal::Signal::SIGKILL);
        let t0 = Instant::now();
        let _ = p.child.wait();
        let until = t0 + Duration::from_secs(120);
        loop {
            let (state, attempt): (String, i32) =
                sqlx::query_as("SELECT state::text, attempt::int4 FROM river_job WHERE id = $1")
                    .bind(job)
                    .fetch_one(&pool)
                    .await?;
            if attempt >= 2 && (state == "running" || state == "completed") {
                break;
            }
            if Instant::now() > until {
                bail!("chunk not running again 120 s after SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = t0.elapsed().as_secs_f64();
        println!(
            "run={run} kill_to_rerun_s={t:.2} rescue_after_s={} victim_was_leader={was_leader}",
            a.rescue_after_s
        );
        times.push(t);
        engine.cancel(&r.id, "bench").await?;
        procs.push(WorkerProcess::spawn(
            &format!("w{next_name}"),
            &config,
            dir.path(),
        )?);
        next_name += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (what, parity) in [("leader", 0), ("not_leader", 1)] {
        let mut v: Vec<f64> = times
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, t)| *t)
            .collect();
        if !v.is_empty() {
            let m = median(&mut v);
            println!(
                "victim={what} kill_to_rerun_s median={m:.2} min={:.2} max={:.2} runs={} (rescue_after_s={})",
                v[0],
                v[v.len() - 1],
                v.len(),
                a.rescue_after_s
            );
        }
    }
    Ok(())
}

/// Time from cancel to the last chunk stopping, two worker processes, against how long one
/// chunk runs when left alone.
async fn cancel(a: &Args) -> Result<()> {
    let pg = a.pg.as_deref().context("--pg URL")?;
    let dir = tempfile::tempdir()?;
    let url = fresh_database(pg).await?;
    let config = engine_config(url.clone(), dir.path(), 30.0, a);
    let engine = Engine::connect(&config).await?;
    let pool = PgPool::connect(&url).await?;
    let _procs = [
        WorkerProcess::spawn("w0", &config, dir.path())?,
        WorkerProcess::spawn("w1", &config, dir.path())?,
    ];
    let mut stop_times = Vec::new();
    for run in 0..a.runs {
        let r = engine
            .submit(design(40 * 64 * 16_384, Some(64 * 16_384), u64::from(run)))
            .await?;
        // Let a few chunks complete (the peer: their run time), then cancel mid-chunk.
        let until = Instant::now() + Duration::from_secs(60);
        while engine.study(&r.id).await?.chunks_done < 4 {
            if Instant::now() > until {
                bail!("no chunks done");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        wait_running(&pool, &r.id, 2).await?;
        let t0 = Instant::now();
        engine.cancel(&r.id, "bench").await?;
        let until = t0 + Duration::from_secs(60);
        while !running_chunks(&pool, &r.id).await?.is_empty() {
            if Instant::now() > until {
                bail!("chunks still running 60 s after the cancel");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = t0.elapsed().as_secs_f64();
        let chunk_s: Vec<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (j.finalized_at - j.attempted_at))::float8 FROM river_job j \
             JOIN dtop_study_jobs s ON s.job_id = j.id \
             WHERE s.study_id = $1 AND j.kind = 'dtop_chunk' AND j.state = 'completed'",
        )
        .bind(&r.id.0)
        .fetch_all(&pool)
        .await?;
        let mut chunk_s = chunk_s;
        println!(
            "run={run} cancel_to_last_chunk_stopped_s={t:.3} chunk_run_s_median={:.3} (of {})",
            median(&mut chunk_s),
            chunk_s.len()
        );
        stop_times.push(t);
    }
    println!(
        "cancel_to_last_chunk_stopped_s median={:.3} min={:.3} max={:.3}",
        median(&mut stop_times),
        stop_times[0],
        stop_times[stop_times.len() - 1]
    );
    Ok(())
}

/// A big study on W worker processes (started and connected before the submit): seconds from
/// submit to succeeded.
async fn study(a: &Args) -> Result<()> {
    let pg = a.pg.as_deref().context("--pg URL")?;
    let dir = tempfile::tempdir()?;
    let url = fresh_database(pg).await?;
    let config = engine_config(url.clone(), dir.path(), 60.0, a);
    let engine = Engine::connect(&config).await?;
    let pool = PgPool::connect(&url).await?;
    let procs: Vec<WorkerProcess> = (0..a.workers)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), &config, dir.path()))
        .collect::<Result<_>>()?;
    // Workers up and fetching before the clock starts: a one-block study runs first.
    let warm = engine.submit(design(16_384, Some(16_384), 1)).await?;
    wait_final(&engine, &warm.id, Duration::from_secs(60)).await?;
    let postmaster = postmaster_pid(&pool).await;
    // The background CPU of idle workers and an idle server (fetch polls, leader chores),
    // the peer of the study's own CPU below.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_before = CpuSample::take(&procs, postmaster);
    let idle_t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    print!("idle ");
    CpuSample::take(&procs, postmaster).print_since(&idle_before, idle_t0.elapsed().as_secs_f64());
    let request = match a.kind.as_str() {
        "design" => design(1_000_000, a.samples_per_chunk, 7),
        "uncertainty" => uncertainty(a.samples_per_chunk, a.frequencies_per_bounds_chunk, 7),
        other => bail!("unknown kind {other}"),
    };
    notify_final_states(&pool).await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("bench_study_final").await?;
    let cpu_before = CpuSample::take(&procs, postmaster);
    let t0 = Instant::now();
    let r = engine.submit(request).await?;
    let state =
        wait_final_notified(&engine, &mut listener, &r.id, Duration::from_secs(1800)).await?;
    let t = t0.elapsed().as_secs_f64();
    let cpu_after = CpuSample::take(&procs, postmaster);
    let (connections, opened): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE backend_start > now() - make_interval(secs => $1)) \
         FROM pg_stat_activity WHERE datname = current_database()",
    )
    .bind(t0.elapsed().as_secs_f64())
    .fetch_one(&pool)
    .await?;
    println!("connections={connections} opened_during_study={opened}");
    if state != StudyState::Succeeded {
        bail!(
            "study ended {state:?}: {:?}",
            engine.study(&r.id).await?.error
        );
    }
    let s = engine.study(&r.id).await?;
    println!(
        "kind={} workers={} chunks={} cooldown_ms={} prefetch={} submit_to_succeeded_s={t:.3}",
        a.kind, a.workers, s.chunks_total, a.cooldown_ms, a.prefetch
    );
    cpu_after.print_since(&cpu_before, t);
    timeline(&pool, &r.id).await?;
    for mut p in procs {
        p.signal(nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(10);
        while p.child.try_wait()?.is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The workers' own per-job timings, when their log level shows them
    // (`RUST_LOG=warn,dtop_engine::jobs=debug`, inherited by the workers).
    for i in 0..a.workers {
        let log = std::fs::read_to_string(dir.path().join(format!("w{i}.log"))).unwrap_or_default();
        for line in log
            .lines()
            .filter(|l| l.contains(&r.id.0) && l.contains("done."))
        {
            println!("w{i}: {line}");
        }
    }
    Ok(())
}

/// CPU time of a process's threads, ns (Linux `/proc/PID/task/*/schedstat`, first field);
/// threads that ended before the read are not counted. 0 when the process is gone.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The PostgreSQL server's postmaster, from its `postmaster.pid` (the bench runs beside the
/// server, as root or its owner); `None` when that file cannot be read.
async fn postmaster_pid(pool: &PgPool) -> Option<u32> {
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(pool)
        .await
        .ok()?;
    std::fs::read_to_string(Path::new(&dir).join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The postmaster and its children (the backends and background processes).
fn postgres_pids(postmaster: u32) -> Vec<u32> {
    let mut pids = vec![postmaster];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Field 4 (PPID) follows the command in parentheses, which may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The whole machine's busy and total jiffies (`/proc/stat`, first line).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU used so far by each worker, this process, and the PostgreSQL server, and the machine's.
struct CpuSample {
    workers_ns: Vec<u64>,
    bench_ns: u64,
    postgres_ns: u64,
    /// Each PostgreSQL process's CPU, ns, by PID.
    postgres_by_pid: Vec<(u32, u64)>,
    machine_busy_jiffies: u64,
    machine_total_jiffies: u64,
}

impl CpuSample {
    fn take(procs: &[WorkerProcess], postmaster: Option<u32>) -> CpuSample {
        let (busy, total) = machine_jiffies();
        let postgres_by_pid: Vec<(u32, u64)> = postmaster
            .map(postgres_pids)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p, cpu_ns(p)))
            .collect();
        CpuSample {
            postgres_by_pid,
            workers_ns: procs.iter().map(|p| cpu_ns(p.child.id())).collect(),
            bench_ns: cpu_ns(std::process::id()),
            postgres_ns: postmaster.map_or(0, |pm| postgres_pids(pm).into_iter().map(cpu_ns).sum()),
            machine_busy_jiffies: busy,
            machine_total_jiffies: total,
        }
    }

    /// Prints CPU seconds used since `before` over a wall time of `wall_s`.
    fn print_since(&self, before: &CpuSample, wall_s: f64) {
        let s = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e9;
        let workers: Vec<String> = self
            .workers_ns
            .iter()
            .zip(&before.workers_ns)
            .map(|(a, b)| format!("{:.3}", s(*a, *b)))
            .collect();
        let machine_busy_s =
            (self.machine_busy_jiffies - before.machine_busy_jiffies) as f64 / 100.0;
        let machine_total_s =
            (self.machine_total_jiffies - before.machine_total_jiffies) as f64 / 100.0;
        println!(
            "cpu_s workers=[{}] bench={:.3} postgres={:.3} machine_busy={machine_busy_s:.2} of {machine_total_s:.2} (wall {wall_s:.3} s)",
            workers.join(","),
            s(self.bench_ns, before.bench_ns),
            s(self.postgres_ns, before.postgres_ns),
        );
        if std::env::var_os("BENCH_PG_DETAIL").is_some() {
            for (pid, ns) in &self.postgres_by_pid {
                let was = before
                    .postgres_by_pid
                    .iter()
                    .find(|(p, _)| p == pid)
                    .map_or(0, |(_, n)| *n);
                let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ");
                if *ns > was {
                    println!(
                        "  postgres pid={pid} cpu_s={:.3} {}",
                        s(*ns, was),
                        title.trim()
                    );
                }
            }
        }
    }
}

/// Where the time of a study went, from River's job table: each job's queueing, start and end
/// (ms after the study's first job was queued, i.e. the submit's commit) and worker; then per
/// worker its jobs, busy time and the idle gaps between its jobs.
async fn timeline(pool: &PgPool, id: &StudyId) -> Result<()> {
    let rows: Vec<(String, Option<i64>, String, f64, f64, f64)> = sqlx::query_as(
        "WITH j AS (SELECT * FROM river_job WHERE args->>'study' = $1), \
              t0 AS (SELECT min(created_at) AS t FROM j) \
         SELECT j.kind, (j.args->>'index')::int8, \
                regexp_replace(j.attempted_by[array_length(j.attempted_by, 1)], '-[0-9a-f]{8}$', ''), \
                EXTRACT(EPOCH FROM (j.created_at - t0.t))::float8 * 1e3, \
                EXTRACT(EPOCH FROM (j.attempted_at - t0.t))::float8 * 1e3, \
                EXTRACT(EPOCH FROM (j.finalized_at - t0.t))::float8 * 1e3 \
         FROM j, t0 ORDER BY j.attempted_at",
    )
    .bind(&id.0)
    .fetch_all(pool)
    .await?;
    let finished_ms: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (s.finished_at::timestamptz - \
                (SELECT min(created_at) FROM river_job WHERE args->>'study' = $1)))::float8 * 1e3 \
         FROM dtop_studies s WHERE s.id = $1",
    )
    .bind(&id.0)
    .fetch_one(pool)
    .await?;
    for (kind, index, worker, queued, start, end) in &rows {
        let what = match index {
            Some(i) => format!("{kind}[{i}]"),
            None => kind.clone(),
        };
        println!(
            "job={what} worker={worker} queued_ms={queued:.1} start_ms={start:.1} end_ms={end:.1} run_ms={:.1}",
            end - start
        );
    }
    let mut workers: Vec<&String> = rows.iter().map(|r| &r.2).collect();
    workers.sort();
    workers.dedup();
    for w in workers {
        let mine: Vec<_> = rows.iter().filter(|r| &r.2 == w).collect();
        let busy: f64 = mine.iter().map(|r| r.5 - r.4).sum();
        let gaps: f64 = mine.windows(2).map(|p| p[1].4 - p[0].5).sum();
        println!(
            "worker={w} jobs={} first_start_ms={:.1} last_end_ms={:.1} busy_ms={busy:.1} gaps_between_jobs_ms={gaps:.1}",
            mine.len(),
            mine.first().map_or(0.0, |r| r.4),
            mine.last().map_or(0.0, |r| r.5),
        );
    }
    println!("study_succeeded_ms={finished_ms:.1}");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = parse_args()?;
    match a.command.as_str() {
        "queue" => queue(&a).await,
        "kill" => kill(&a).await,
        "cancel" => cancel(&a).await,
        "study" => study(&a).await,
        other => bail!("unknown command {other}"),
    }
}
