//! The test harness: a real engine on a temporary SQLite file (or on PostgreSQL when
//! `DTOP_TEST_POSTGRES_URL` is set), a real credentials file with one user per role, and the
//! real server bound on 127.0.0.1:0, with its logs captured so tests can search them.

// Helpers fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dtop_auth::credentials::add_user;
use dtop_auth::{RigSpec, Role, Secret};
use dtop_engine::{Engine, EngineConfig};
use dtop_server::ServerConfig;
use dtop_server::config::{HttpConfig, MqttConfig, WorkersConfig};
use tokio_util::sync::CancellationToken;

pub mod browser;
pub mod influx;
pub mod pipeline;

/// Upper bound on every wait in these tests; generous for a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// One user per role, and a second researcher; password = `pw-` + name.
pub const USERS: &[(&str, Role)] = &[
    ("root", Role::Admin),
    ("op", Role::Operator),
    ("ada", Role::Researcher),
    ("bob", Role::Researcher),
    ("wall", Role::Dashboard),
    ("twin", Role::Twin),
    ("r1", Role::Rig),
    ("api", Role::Server),
];

pub fn password(user: &str) -> String {
    format!("pw-{user}-correct-horse")
}

/// Everything the server logged in this test binary.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs the capturing subscriber once per test binary (debug level for our crates and
/// tower-http, so the request log lines are in).
pub fn logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,dtop_server=debug,tower_http=debug",
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buffer
    })
    .clone()
}

/// Whether missing services fail the test instead of being skipped.
pub fn services_required() -> bool {
    std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Options of one test server.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: u32,
    pub token_lifetime_s: u64,
    pub body_limit_bytes: usize,
    /// The study route's own limit (studies may carry measured tables).
    pub study_body_limit_bytes: usize,
    pub max_work_units: Option<u64>,
    pub mqtt: Option<SocketAddr>,
    pub postgres_url: Option<String>,
    /// Serve HTTPS with this certificate and key; the client then trusts `tls_root_pem`.
    pub tls: Option<dtop_server::config::TlsConfig>,
    /// The CA the client trusts under `tls`.
    pub tls_root_pem: Option<String>,
    /// Where the rig pages read history (`[live.history]`).
    pub history: Option<dtop_server::config::HistoryConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 0,
            token_lifetime_s: 3600,
            body_limit_bytes: 64 * 1024,
            study_body_limit_bytes: 256 * 1024,
            max_work_units: None,
            mqtt: None,
            postgres_url: None,
            tls: None,
            tls_root_pem: None,
            history: None,
        }
    }
}

/// A running server.
pub struct Server {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub db_path: PathBuf,
    pub credentials_file: PathBuf,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), dtop_server::ServerError>>>,
}

/// Writes the credentials file with every test user.
pub fn write_users(path: &std::path::Path) {
    for (user, role) in USERS {
        let rigs = if *role == Role::Rig {
            RigSpec::Default
        } else {
            RigSpec::All
        };
        add_user(path, user, *role, rigs, Some(&Secret::new(password(user)))).unwrap();
    }
}

impl Server {
    pub async fn start(options: Options) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let credentials_file = dir.path().join("passwd");
        let path = credentials_file.clone();
        tokio::task::spawn_blocking(move || write_users(&path))
            .await
            .unwrap();
        let db_path = dir.path().join("studies.db");
        let mut engine = EngineConfig {
            database_url: options
                .postgres_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", db_path.display())),
            result_dir: dir.path().join("results"),
            budget: Default::default(),
            chunks_in_flight_per_study: 8,
            max_attempts: 3,
            fetch: Default::default(),
            solvers: Default::default(),
            rescue_after_s: 30.0,
        };
        if let Some(max) = options.max_work_units {
            engine.budget.max_work_units = max;
        }
        // Bound first, so each server's MQTT client id is its own (two servers on one broker
        // would otherwise take each other's session).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ServerConfig {
            http: HttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                body_limit_bytes: options.body_limit_bytes,
                study_body_limit_bytes: options.study_body_limit_bytes,
                token_lifetime_s: options.token_lifetime_s,
                poll_interval_ms: 50,
                tls: options.tls.clone(),
                ..HttpConfig::default()
            },
            credentials_file: credentials_file.clone(),
            engine: engine.clone(),
            mqtt: options.mqtt.map(|addr| {
                let pw_file = dir.path().join("mqtt-password");
                std::fs::write(&pw_file, format!("{}\n", password("api"))).unwrap();
                MqttConfig {
                    host: Some(addr.ip().to_string()),
                    port: Some(addr.port()),
                    brokers: Vec::new(),
                    client_id: format!("dtop-server-test-{}", addr.port()),
                    username: Some("api".to_owned()),
                    password_file: Some(pw_file),
                }
            }),
            workers: WorkersConfig {
                count: options.workers,
            },
            live: dtop_server::config::LiveConfig {
                history: options.history.clone(),
                ..dtop_server::config::LiveConfig::default()
            },
        };
        let engine = Engine::connect(&engine).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dtop_server::serve(
            config,
            engine,
            listener,
            shutdown.clone(),
        ));
        let mut client = reqwest::Client::builder().timeout(WAIT);
        if let Some(pem) = &options.tls_root_pem {
            client =
                client.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()]);
        }
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Self {
            base: format!("{scheme}://{addr}"),
            dir,
            db_path,
            credentials_file,
            client: client.build().unwrap(),
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs `user` in with the right password; the token.
    pub async fn login(&self, user: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/login"))
            .json(&serde_json::json!({"username": user, "password": password(user)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login {user}");
        let body: serde_json::Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// A modal study of the built-in model.
pub fn modal_study() -> serde_json::Value {
    serde_json::json!({"kind": "modal", "model": "southampton", "params": {}})
}
