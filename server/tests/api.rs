//! The API against a real engine (SQLite in a temp dir, or PostgreSQL with
//! `DTOP_TEST_POSTGRES_URL`), real logins from a real credentials file, the real server on
//! 127.0.0.1:0 and reqwest. The role expectations are written out from the contract's role
//! table, not computed by `dtop_auth::allowed`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Options, Server, WAIT, modal_study, password};
use dtop_auth::Role;
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What an endpoint needs, in the contract's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Any logged-in user.
    Login,
    ReadStudies,
    Submit,
    /// Cancel a study someone else (the admin) submitted.
    CancelOthers,
    ReadModels,
    AddModel,
    /// Approve or reject a proposed model version.
    Review,
}

/// The contract's role table, written out.
fn expected(role: Role, needs: Needs) -> bool {
    use Needs::*;
    match role {
        Role::Admin => true,
        Role::Operator => true,
        Role::Researcher => !matches!(needs, CancelOthers | Review),
        Role::Dashboard => matches!(needs, Login | ReadStudies | ReadModels),
        Role::Twin => matches!(needs, Login | ReadModels),
        Role::Rig | Role::Server => needs == Login,
    }
}

fn endpoints(study: &str) -> Vec<(Method, String, Option<Value>, Needs)> {
    use Needs::*;
    let model = json!({
        "name": "table-test",
        "spec": serde_json::to_value(&dtop_studies::model::builtin_models()[0].1).unwrap(),
    });
    vec![
        (Method::GET, "/api/v1/whoami".into(), None, Login),
        (Method::GET, "/api/v1/kinds".into(), None, ReadStudies),
        (
            Method::GET,
            "/api/v1/kinds/modal/defaults?model=southampton".into(),
            None,
            ReadStudies,
        ),
        (
            Method::POST,
            "/api/v1/studies".into(),
            Some(modal_study()),
            Submit,
        ),
        (Method::GET, "/api/v1/studies".into(), None, ReadStudies),
        (
            Method::GET,
            format!("/api/v1/studies/{study}"),
            None,
            ReadStudies,
        ),
        (
            Method::GET,
            format!("/api/v1/studies/{study}/events"),
            None,
            ReadStudies,
        ),
        (
            Method::GET,
            format!("/api/v1/studies/{study}/result"),
            None,
            ReadStudies,
        ),
        (
            Method::GET,
            format!("/api/v1/studies/{study}/arrays/none"),
            None,
            ReadStudies,
        ),
        (
            Method::GET,
            format!("/api/v1/studies/{study}/inputs/none"),
            None,
            ReadStudies,
        ),
        (
            Method::POST,
            format!("/api/v1/studies/{study}/cancel"),
            None,
            CancelOthers,
        ),
        (Method::GET, "/api/v1/models".into(), None, ReadModels),
        (
            Method::GET,
            "/api/v1/models/southampton".into(),
            None,
            ReadModels,
        ),
        (
            Method::GET,
            "/api/v1/models/southampton/latest".into(),
            None,
            ReadModels,
        ),
        (Method::POST, "/api/v1/models".into(), Some(model), AddModel),
        // Allowed roles get 409: the built-in version is current, not proposed.
        (
            Method::POST,
            "/api/v1/models/southampton/1/review".into(),
            Some(json!({"decision": "approve"})),
            Review,
        ),
    ]
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

async fn submit(server: &Server, token: &str, body: &Value) -> Value {
    let r = call(
        server,
        Method::POST,
        "/api/v1/studies",
        Some(body),
        Some(token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

fn postgres() -> Option<String> {
    std::env::var("DTOP_TEST_POSTGRES_URL").ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_endpoints_and_strangers_get_401() {
    let server = Server::start(Options::default()).await;
    let root = server.login("root").await;
    let study = submit(&server, &root, &modal_study()).await;
    let id = study["id"].as_str().unwrap().to_owned();

    let mut mismatches = Vec::new();
    for (user, role) in common::USERS {
        let token = server.login(user).await;
        for (method, path, body, needs) in endpoints(&id) {
            let r = call(&server, method.clone(), &path, body.as_ref(), Some(&token)).await;
            let status = r.status();
            let allowed = !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if allowed != expected(*role, needs) || status.is_server_error() {
                mismatches.push(format!("{user} ({role}) {method} {path}: {status}"));
            }
        }
    }
    let expired = {
        let short = Server::start(Options {
            token_lifetime_s: 1,
            ..Options::default()
        })
        .await;
        let token = short.login("root").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let r = call(&short, Method::GET, "/api/v1/whoami", None, Some(&token)).await;
        short.stop().await;
        r.status()
    };
    assert_eq!(expired, StatusCode::UNAUTHORIZED, "expired token");
    for token in [None, Some("not-a-token")] {
        for (method, path, body, _) in endpoints(&id) {
            let r = call(&server, method.clone(), &path, body.as_ref(), token).await;
            if r.status() != StatusCode::UNAUTHORIZED
                || r.headers().get("www-authenticate").map(|v| v.as_bytes()) != Some(b"Bearer")
            {
                mismatches.push(format!("token {token:?} {method} {path}: {}", r.status()));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Logout revokes the token.
    let token = server.login("wall").await;
    let r = call(&server, Method::POST, "/api/v1/logout", None, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(&server, Method::GET, "/api/v1/whoami", None, Some(&token)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researchers_cancel_their_own_studies_but_not_others() {
    let server = Server::start(Options::default()).await;
    let ada = server.login("ada").await;
    let bob = server.login("bob").await;
    let mine = submit(&server, &ada, &modal_study()).await;
    let path = format!("/api/v1/studies/{}/cancel", mine["id"].as_str().unwrap());
    let r = call(&server, Method::POST, &path, None, Some(&bob)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = call(&server, Method::POST, &path, None, Some(&ada)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let record: Value = r.json().await.unwrap();
    assert_eq!(record["state"], "cancelled");
    // A second cancel conflicts with the final state.
    let r = call(&server, Method::POST, &path, None, Some(&ada)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_every_problem_and_where() {
    let server = Server::start(Options::default()).await;
    let token = server.login("op").await;
    let post = |body: String| {
        server
            .client
            .post(server.url("/api/v1/studies"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Over the body limit: the study route's own (studies may carry measured tables), and
    // every other route's general one.
    let body_of = |bytes: usize| {
        format!(
            "{{\"kind\":\"modal\",\"model\":\"southampton\",\"params\":{{\"x\":\"{}\"}}}}",
            "a".repeat(bytes)
        )
    };
    let r = post(body_of(300 * 1024)).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    let r = post(body_of(100 * 1024)).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "under the study limit: read, and refused for params.x"
    );
    let r = server
        .client
        .post(server.url("/api/v1/models"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body_of(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "the general limit"
    );
    // Malformed JSON says where.
    let r = post("{\"kind\": \"modal\",\n \"model\": }".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 2")
    );
    // Unknown fields.
    let r = post(json!({"kind": "modal", "model": "southampton", "colour": 1}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    // Validation problems from the engine: all of them.
    let mut model = serde_json::to_value(&dtop_studies::model::builtin_models()[0].1).unwrap();
    let masses = model["structure"]["floor_masses_kg"].as_array_mut();
    if let Some(masses) = masses {
        for m in masses.iter_mut() {
            *m = json!(-1.0);
        }
    }
    let r = post(json!({"kind": "modal", "model": model, "params": {"nonsense": 1}}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid");
    assert!(body["problems"].as_array().unwrap().len() >= 2, "{body}");
    // An unknown catalogue model.
    let r = post(json!({"kind": "modal", "model": "no-such-model"}).to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    server.stop().await;

    // Over the budget: 400 too_large with the figures.
    let small = Server::start(Options {
        max_work_units: Some(1),
        ..Options::default()
    })
    .await;
    let token = small.login("op").await;
    let r = call(
        &small,
        Method::POST,
        "/api/v1/studies",
        Some(&modal_study()),
        Some(&token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    assert_eq!(body["max_work_units"], 1);
    assert!(body["work_units"].as_u64().unwrap() > 1);
    small.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_logins_get_429_with_retry_after_and_never_reach_the_logs() {
    let server = Server::start(Options::default()).await;
    let login = |user: &str, pw: &str| {
        server
            .client
            .post(server.url("/api/v1/login"))
            .json(&json!({"username": user, "password": pw}))
            .send()
    };
    let wrong = "wrong-password-7f3a9c";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(login("ada", wrong).await.unwrap().status().as_u16());
    }
    // Three free failures (the default), then the fourth blocks the next attempt.
    assert_eq!(statuses[..4], [401, 401, 401, 401]);
    assert_eq!(statuses[4], 429);
    let r = login("ada", &password("ada")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    // The right password after the wait works.
    let token = server.login("ada").await;
    let r = call(&server, Method::GET, "/api/v1/whoami", None, Some(&token)).await;
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["role"], "researcher");
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("dtop_server_logins_failed_total 4"), "{text}");
    server.stop().await;
    let logs = common::logs().text();
    assert!(logs.contains("Login failed"), "the capture works");
    for secret in [wrong.to_owned(), password("ada"), token] {
        assert!(!logs.contains(&secret), "a secret reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_a_study_from_queued_to_succeeded() {
    let server = Server::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    let token = server.login("ada").await;
    let study = submit(&server, &token, &modal_study()).await;
    let id = study["id"].as_str().unwrap();
    let r = call(
        &server,
        Method::GET,
        &format!("/api/v1/studies/{id}/events"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut bytes = r.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = bytes.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("stream ends after the final state");
    let states: Vec<String> = text
        .split("\n\n")
        .filter(|e| e.contains("event: study"))
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .map(|data| {
            serde_json::from_str::<Value>(&data).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(!states.is_empty());
    assert!(
        states[0] == "queued" || states[0] == "running" || states[0] == "succeeded",
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    // The result and its arrays are then readable, as JSON and CSV.
    let r = call(
        &server,
        Method::GET,
        &format!("/api/v1/studies/{id}/result"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let result: Value = r.json().await.unwrap();
    if let Some(first) = result["arrays"].as_array().and_then(|a| a.first()) {
        let name = first["name"].as_str().unwrap();
        let r = call(
            &server,
            Method::GET,
            &format!("/api/v1/studies/{id}/arrays/{name}?format=csv"),
            None,
            Some(&token),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_served_and_in_the_openapi_document() {
    let server = Server::start(Options::default()).await;
    let doc: Value = server
        .client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = dtop_server::http::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // Each listed route is one the router answers (not the 404 fallback, not 405).
    for (method, path) in dtop_server::http::ROUTES {
        let concrete = path
            .replace("{id}", "st_x")
            .replace("{kind}", "modal")
            .replace("{name}", "southampton")
            .replace("{version}", "latest")
            .replace("{rig}", "r1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = server
            .client
            .request(method.clone(), server.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let text = r.text().await.unwrap();
        assert!(!text.contains("no such endpoint"), "{method} {path}");
    }
    let r = server
        .client
        .get(server.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_gives_503_with_retry_after() {
    if postgres().is_some() {
        // The SQLite file trick below is the test; PostgreSQL runs are covered by the others.
        return;
    }
    let server = Server::start(Options::default()).await;
    let token = server.login("root").await;
    // Take the database away: the file and its directory become unreadable.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::remove_file(&server.db_path).unwrap();
    std::fs::create_dir(&server.db_path).unwrap();
    std::fs::set_permissions(&server.db_path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let r = call(&server, Method::GET, "/api/v1/studies", None, Some(&token)).await;
    let status = r.status();
    let retry = r.headers().get("retry-after").cloned();
    std::fs::set_permissions(&server.db_path, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some());
    server.stop().await;
}

/// Polls a study until it is final; its record.
async fn wait_final(server: &Server, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = call(
            server,
            Method::GET,
            &format!("/api/v1/studies/{id}"),
            None,
            Some(token),
        )
        .await;
        let record: Value = r.json().await.unwrap();
        if matches!(
            record["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposed_model_is_filed_for_review_and_only_an_operator_approves_it_once() {
    let server = Server::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    let ada = server.login("ada").await;
    let op = server.login("op").await;
    // `update` with its default targets (the model's own modes) proposes the model back.
    let study = submit(
        &server,
        &ada,
        &json!({"kind": "update", "model": "southampton", "params": {}}),
    )
    .await;
    let id = study["id"].as_str().unwrap();
    let done = wait_final(&server, &ada, id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let result: Value = call(
        &server,
        Method::GET,
        &format!("/api/v1/studies/{id}/result"),
        None,
        Some(&ada),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(result["proposed_model"], "southampton@2", "{result}");
    let get = |path: String, token: String| {
        let server = &server;
        async move {
            let r = call(server, Method::GET, &path, None, Some(&token)).await;
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (_, proposed) = get("/api/v1/models/southampton/2".into(), ada.clone()).await;
    assert_eq!(proposed["status"], "proposed");
    assert_eq!(proposed["provenance"]["study_id"], id);
    assert_eq!(proposed["created_by"], "ada");
    // Nothing runs on a proposal by accident: `latest` is still the built-in.
    let (_, latest) = get("/api/v1/models/southampton/latest".into(), ada.clone()).await;
    assert_eq!(latest["version"], 1);

    let review = |token: String, body: Value| {
        let server = &server;
        async move {
            call(
                server,
                Method::POST,
                "/api/v1/models/southampton/2/review",
                Some(&body),
                Some(&token),
            )
            .await
        }
    };
    let r = review(ada.clone(), json!({"decision": "approve"})).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "researchers do not approve"
    );
    let r = review(op.clone(), json!({"decision": "maybe"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = review(
        op.clone(),
        json!({"decision": "approve", "note": "identified after the storey-2 repair"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let approved: Value = r.json().await.unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["review"]["by"], "op");
    assert_eq!(
        approved["review"]["note"],
        "identified after the storey-2 repair"
    );
    let r = review(op.clone(), json!({"decision": "reject"})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "reviewed once");
    let (_, latest) = get("/api/v1/models/southampton/latest".into(), ada.clone()).await;
    assert_eq!(latest["version"], 2);

    // Inputs: a kind that takes none refuses one; a required one missing is named; a bad
    // table is reported cell by cell, all at once.
    let bad = |body: Value| {
        let server = &server;
        let ada = ada.clone();
        async move {
            let r = call(
                server,
                Method::POST,
                "/api/v1/studies",
                Some(&body),
                Some(&ada),
            )
            .await;
            assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            let body: Value = r.json().await.unwrap();
            body["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["field"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let table = json!({"name": "frf", "columns": [{"name": "frequency_hz", "values": [1.0, 2.0]}]});
    let fields = bad(json!({"kind": "modal", "model": "southampton", "inputs": [table]})).await;
    assert_eq!(fields, ["inputs.frf"]);
    let fields = bad(json!({"kind": "oma", "model": "southampton"})).await;
    assert_eq!(fields, ["inputs.acceleration"]);
    let ragged = json!({"name": "acceleration", "columns": [
        {"name": "time_s", "values": [0.0, 0.001]},
        {"name": "floor1_accel", "values": [1.0]},
    ]});
    let fields = bad(json!({"kind": "oma", "model": "southampton", "inputs": [ragged]})).await;
    assert!(
        fields.contains(&"inputs.acceleration.floor1_accel".to_owned()),
        "{fields:?}"
    );
    server.stop().await;
}
