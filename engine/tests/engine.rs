//! The engine through its public API on real SQLite files and a real PostgreSQL: submit →
//! chunks → reduce → result, validation, cancel, the revision feed and the model catalogue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use dtop_engine::{
    Engine, EngineConfig, EngineError, ModelChoice, StudyFilter, StudyId, StudyRecord, StudyState,
    SubmitRequest, WorkerOptions,
};
use dtop_studies::{ModelRef, ModelSpec, Provenance, StudyKind};
use tokio_util::sync::CancellationToken;

fn southampton() -> ModelSpec {
    dtop_studies::model::builtin_models().remove(0).1
}

fn modal_request(model: ModelChoice) -> SubmitRequest {
    SubmitRequest {
        kind: StudyKind::Modal,
        model,
        params: serde_json::json!({}),
        seed: Some(7),
        submitted_by: "ada".into(),
        inputs: Vec::new(),
    }
}

/// Starts an in-process worker; cancel the token to stop it.
fn spawn_worker(
    engine: &Engine,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), EngineError>>,
) {
    let stop = CancellationToken::new();
    let e = engine.clone();
    let s = stop.clone();
    let h = tokio::spawn(async move {
        e.run_worker(
            WorkerOptions {
                name: "test".into(),
                concurrency: 2,
            },
            s,
        )
        .await
    });
    (stop, h)
}

/// Waits (bounded) until the study is final, following the revision feed.
async fn wait_final(engine: &Engine, id: &StudyId, within: Duration) -> StudyRecord {
    let until = Instant::now() + within;
    loop {
        let s = engine.study(id).await.unwrap();
        if s.state.is_final() {
            return s;
        }
        assert!(
            Instant::now() < until,
            "study still {:?} after {within:?}",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn modal_study_runs_to_its_result(config: EngineConfig) {
    let engine = Engine::connect(&config).await.unwrap();
    let record = engine
        .submit(modal_request(ModelChoice::Catalogue(
            "southampton".parse().unwrap(),
        )))
        .await
        .unwrap();
    // `submit` answers with the study as it is now: queued, as no worker runs yet (with one
    // running it may already be claimed).
    assert_eq!(record.state, StudyState::Queued);
    let (stop, worker) = spawn_worker(&engine);
    assert_eq!(record.model_ref.as_deref(), Some("southampton@1"));
    assert!(record.id.0.starts_with("st_"));
    let done = wait_final(&engine, &record.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    assert_eq!((done.chunks_done, done.chunks_total), (1, 1));
    assert!(done.finished_at.is_some());
    // The stored summary is what the kind computes, unchanged by the trip through the
    // database (an independent in-process run of the same pure functions).
    let flag = std::sync::atomic::AtomicBool::new(false);
    let chunk = dtop_studies::run_chunk(
        StudyKind::Modal,
        &southampton(),
        &serde_json::json!({}),
        7,
        0,
        &dtop_studies::ChunkCtx::new(&flag),
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    let direct = dtop_studies::reduce(
        StudyKind::Modal,
        &southampton(),
        &serde_json::json!({}),
        7,
        &[chunk],
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    let result = engine.result(&record.id).await.unwrap();
    assert_eq!(result.summary, direct.summary);
    // The feed saw the study's changes in order, ending with success.
    let (changes, highest) = engine.changes_since(0).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.id == record.id && c.state == StudyState::Succeeded)
    );
    assert_eq!(highest, done.revision);
    assert!(engine.changes_since(highest).await.unwrap().0.is_empty());
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modal_study_runs_to_its_result_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    modal_study_runs_to_its_result(support::sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modal_study_runs_to_its_result_on_postgres() {
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    modal_study_runs_to_its_result(support::config(pg.fresh_database().await, dir.path())).await;
}

async fn refuses_invalid_requests_with_every_problem(config: EngineConfig) {
    let engine = Engine::connect(&config).await.unwrap();
    let mut bad_model = southampton();
    bad_model.structure.floor_masses_kg[0] = -1.0;
    let request = SubmitRequest {
        kind: StudyKind::Modal,
        model: ModelChoice::Inline(bad_model.clone()),
        params: serde_json::json!({"bogus": 1}),
        seed: None,
        submitted_by: " ".into(),
        inputs: Vec::new(),
    };
    let Err(EngineError::Invalid(problems)) = engine.submit(request).await else {
        panic!("expected Invalid");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"submitted_by"), "{fields:?}");
    assert!(fields.iter().any(|f| f.starts_with("params")), "{fields:?}");
    assert!(fields.iter().any(|f| f.starts_with("model")), "{fields:?}");
    // Nothing was queued.
    assert!(
        engine
            .list_studies(&StudyFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // A non-physical model is refused by the catalogue too.
    assert!(matches!(
        engine
            .add_model("broken", bad_model, Provenance::Manual, "ada")
            .await,
        Err(EngineError::Invalid(_))
    ));
    // An unknown catalogue model is NotFound.
    assert!(matches!(
        engine
            .submit(modal_request(ModelChoice::Catalogue(
                "nope".parse().unwrap()
            )))
            .await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_invalid_requests_with_every_problem_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    refuses_invalid_requests_with_every_problem(support::sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_invalid_requests_with_every_problem_on_postgres() {
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    refuses_invalid_requests_with_every_problem(support::config(
        pg.fresh_database().await,
        dir.path(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_study_above_the_budget_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::sqlite_config(dir.path());
    // modal on 3 storeys costs 3³ = 27 work units.
    config.budget.max_work_units = 26;
    let engine = Engine::connect(&config).await.unwrap();
    let r = engine
        .submit(modal_request(ModelChoice::Inline(southampton())))
        .await;
    assert!(
        matches!(
            r,
            Err(EngineError::TooLarge {
                work_units: 27,
                max_work_units: 26
            })
        ),
        "{r:?}"
    );
    assert!(
        engine
            .list_studies(&StudyFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn cancel_ends_a_queued_study_once(config: EngineConfig) {
    let engine = Engine::connect(&config).await.unwrap();
    let record = engine
        .submit(modal_request(ModelChoice::Inline(southampton())))
        .await
        .unwrap();
    let cancelled = engine.cancel(&record.id, "grace").await.unwrap();
    assert_eq!(cancelled.state, StudyState::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("cancelled by grace"));
    assert!(cancelled.revision > record.revision);
    assert!(matches!(
        engine.cancel(&record.id, "grace").await,
        Err(EngineError::Conflict(_))
    ));
    assert!(matches!(
        engine.cancel(&StudyId("st_missing".into()), "grace").await,
        Err(EngineError::NotFound(_))
    ));
    // A worker started afterwards runs nothing of it.
    let (stop, worker) = spawn_worker(&engine);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = engine.study(&record.id).await.unwrap();
    assert_eq!((after.state, after.chunks_done), (StudyState::Cancelled, 0));
    assert!(matches!(
        engine.result(&record.id).await,
        Err(EngineError::NotFound(_))
    ));
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_queued_study_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    cancel_ends_a_queued_study_once(support::sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_queued_study_once_on_postgres() {
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    cancel_ends_a_queued_study_once(support::config(pg.fresh_database().await, dir.path())).await;
}

async fn catalogue_keeps_versions_and_provenance(config: EngineConfig) {
    let engine = Engine::connect(&config).await.unwrap();
    // Connecting again does not seed the built-ins twice.
    let again = Engine::connect(&config).await.unwrap();
    let builtins: Vec<_> = again.models().await.unwrap();
    assert_eq!(builtins.len(), dtop_studies::model::builtin_models().len());
    let seeded = builtins
        .iter()
        .find(|m| m.name == "southampton")
        .expect("the southampton built-in");
    assert_eq!(seeded.version, 1);
    assert!(
        builtins
            .iter()
            .all(|m| m.version == 1 && m.provenance == Provenance::Builtin)
    );

    let mut stiffer = southampton();
    stiffer.structure.storey_stiffness_n_per_m[0] *= 2.0;
    let v1 = engine
        .add_model("rig-b", southampton(), Provenance::Manual, "ada")
        .await
        .unwrap();
    let v2 = engine
        .add_model(
            "rig-b",
            stiffer.clone(),
            Provenance::Study {
                study_id: "st_x".into(),
            },
            "bob",
        )
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let latest = engine
        .model(&"rig-b".parse::<ModelRef>().unwrap())
        .await
        .unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.spec, stiffer);
    assert_eq!(latest.created_by, "bob");
    assert_eq!(
        latest.provenance,
        Provenance::Study {
            study_id: "st_x".into()
        }
    );
    let first = engine
        .model(&"rig-b@1".parse::<ModelRef>().unwrap())
        .await
        .unwrap();
    assert_eq!(first.spec, southampton());
    assert!(matches!(
        engine.model(&"rig-b@3".parse::<ModelRef>().unwrap()).await,
        Err(EngineError::NotFound(_))
    ));
    let names: Vec<(String, u32)> = engine
        .models()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.name == "rig-b" || m.name == "southampton")
        .map(|m| (m.name, m.version))
        .collect();
    assert_eq!(
        names,
        vec![
            ("rig-b".into(), 1),
            ("rig-b".into(), 2),
            ("southampton".into(), 1)
        ]
    );
    // A study on `rig-b` resolves to the latest version at submission.
    let s = engine
        .submit(modal_request(ModelChoice::Catalogue(
            "rig-b".parse().unwrap(),
        )))
        .await
        .unwrap();
    assert_eq!(s.model_ref.as_deref(), Some("rig-b@2"));
    assert_eq!(s.model, stiffer);
    let filter = StudyFilter {
        model_name: Some("rig-b".into()),
        ..Default::default()
    };
    assert_eq!(engine.list_studies(&filter).await.unwrap().len(), 1);
    let filter = StudyFilter {
        model_name: Some("southampton".into()),
        ..Default::default()
    };
    assert!(engine.list_studies(&filter).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_keeps_versions_and_provenance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    catalogue_keeps_versions_and_provenance(support::sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_keeps_versions_and_provenance_on_postgres() {
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    catalogue_keeps_versions_and_provenance(support::config(pg.fresh_database().await, dir.path()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = support::config(format!("postgres://u:pw@127.0.0.1:{port}/none"), dir.path());
    let r = Engine::connect(&config).await;
    match r {
        Err(EngineError::Unavailable(m)) => assert!(!m.contains("pw"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A design study given only `samples`, on an engine whose budget makes small chunks: the
/// stored params are the resolved ones (defaults merged, chunk size from this engine's
/// budget), and the result equals an in-process run at the default budget's chunking.
async fn stores_the_resolved_params_and_their_result_ignores_the_chunking(
    mut config: EngineConfig,
) {
    config.budget.chunk_work_units = 3 * 16_384;
    let budget = config.budget;
    let engine = Engine::connect(&config).await.unwrap();
    let msd3 = dtop_studies::model::builtin_model("cristallo-msd3").unwrap();
    let submitted = serde_json::json!({ "samples": 40_000 });
    let record = engine
        .submit(SubmitRequest {
            kind: StudyKind::Design,
            model: ModelChoice::Inline(msd3.clone()),
            params: submitted.clone(),
            seed: Some(5),
            submitted_by: "ada".into(),
            inputs: Vec::new(),
        })
        .await
        .unwrap();
    let resolved = dtop_studies::plan(
        StudyKind::Design,
        &msd3,
        &submitted,
        &dtop_studies::Inputs::none(),
        &budget,
    )
    .unwrap();
    assert_eq!(record.params, resolved.params);
    // One block a chunk by the budget would be 3 chunks; the plan makes the count even:
    // 2 chunks of 2 blocks.
    assert_eq!(record.params["samples_per_chunk"], 2 * 16_384);
    assert_eq!(record.chunks_total, 2);
    let (stop, worker) = spawn_worker(&engine);
    let done = wait_final(&engine, &record.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, StudyState::Succeeded, "{:?}", done.error);
    // In process, one chunk (the default budget), from the same submission.
    let one = dtop_studies::plan(
        StudyKind::Design,
        &msd3,
        &submitted,
        &dtop_studies::Inputs::none(),
        &dtop_studies::Budget::default(),
    )
    .unwrap();
    assert_eq!(one.chunks, 1);
    let flag = std::sync::atomic::AtomicBool::new(false);
    let chunk = dtop_studies::run_chunk(
        StudyKind::Design,
        &msd3,
        &one.params,
        5,
        0,
        &dtop_studies::ChunkCtx::new(&flag),
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    let direct = dtop_studies::reduce(
        StudyKind::Design,
        &msd3,
        &one.params,
        5,
        &[chunk],
        &dtop_studies::Inputs::none(),
    )
    .unwrap();
    let result = engine.result(&record.id).await.unwrap();
    assert_eq!(result.summary, direct.summary);
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_the_resolved_params_and_their_result_ignores_the_chunking_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    stores_the_resolved_params_and_their_result_ignores_the_chunking(support::sqlite_config(
        dir.path(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_the_resolved_params_and_their_result_ignores_the_chunking_on_postgres() {
    let pg = support::Postgres::get();
    let dir = tempfile::tempdir().unwrap();
    stores_the_resolved_params_and_their_result_ignores_the_chunking(support::config(
        pg.fresh_database().await,
        dir.path(),
    ))
    .await;
}
