//! Test helpers that start real servers on loopback: InfluxDB 1.x (`influxd`), VictoriaMetrics
//! and Mosquitto. Each runs from a temporary directory and is killed by PID when its guard drops.
//!
//! A missing binary skips the test with a loud message, except under `CI` or
//! `DTOP_REQUIRE_SERVICES=1` (set by `scripts/test.sh`): then it fails.
//! Reusable by other crates' tests via `#[path = "../../twin-service/tests/support/mod.rs"]`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{Instant, sleep};

pub const INFLUXD: &str = "/usr/bin/influxd";
pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long a server may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary at `path`, or `None` (after saying so on stderr) when it is not installed and
/// neither `CI` nor `DTOP_REQUIRE_SERVICES=1` is set. Panics when it is missing and either is
/// set (`scripts/test.sh` sets the latter): CI must never skip silently.
pub fn require_binary(path: &str) -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(path),
        Path::new("/usr/bin").join(Path::new(path).file_name().unwrap()),
    ];
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var_os("CI").is_some()
        || std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
    {
        panic!(
            "{path} is not installed, and CI / DTOP_REQUIRE_SERVICES is set: this test must run, not skip"
        );
    }
    eprintln!("\n*** SKIPPING: {path} is not installed (set CI=1 to make this a failure) ***\n");
    None
}

/// A port that was free a moment ago on 127.0.0.1. The servers started here cannot report the
/// port they bound, so a start that loses the race is retried with a new port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL, by PID) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) -> bool {
        match self.child.try_wait().unwrap() {
            None => true,
            Some(status) => {
                eprintln!("{} exited with {status}; log:\n{}", self.name, self.log());
                false
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `ready` until it is true, the child exits (`false`), or the startup timeout passes
/// (panic).
async fn wait_ready<F, Fut>(child: &mut ChildGuard, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if !child.assert_running() {
            return false;
        }
        if ready().await {
            return true;
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not become ready in {STARTUP_TIMEOUT:?}; log:\n{}",
                child.name,
                child.log()
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// A throwaway InfluxDB 1.x server.
#[derive(Debug)]
pub struct InfluxD {
    child: ChildGuard,
    pub url: String,
    pub port: u16,
    client: reqwest::Client,
    _dir: TempDir,
}

impl InfluxD {
    /// Starts on a given HTTP port (retries other ports only when `port` is `None`).
    pub async fn start_on(port: Option<u16>) -> Self {
        let binary =
            require_binary(INFLUXD).expect("influxd is required; check with require_binary first");
        for _ in 0..5 {
            let http_port = port.unwrap_or_else(free_port);
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let config = format!(
                r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{meta}"

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[coordinator]

[retention]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
"#,
                rpc = free_port(),
                meta = d.join("meta").display(),
                data = d.join("data").display(),
                wal = d.join("wal").display(),
            );
            let config_path = d.join("influxdb.conf");
            std::fs::write(&config_path, config).unwrap();
            let mut command = Command::new(&binary);
            command.arg("-config").arg(&config_path);
            let mut child = ChildGuard::spawn("influxd", command, d.join("influxd.log"));
            let url = format!("http://127.0.0.1:{http_port}");
            let client = http();
            let ping = format!("{url}/ping");
            let up = wait_ready(&mut child, || {
                let (client, ping) = (client.clone(), ping.clone());
                async move {
                    client
                        .get(&ping)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 204)
                }
            })
            .await;
            if up {
                return Self {
                    child,
                    url,
                    port: http_port,
                    client,
                    _dir: dir,
                };
            }
            if port.is_some() {
                break;
            }
        }
        panic!("influxd did not start");
    }

    /// Starts on a free port; `None` when `influxd` is not installed (outside CI).
    pub async fn start_if_installed() -> Option<Self> {
        require_binary(INFLUXD)?;
        Some(Self::start_on(None).await)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// SIGKILLs the server (by PID) and reaps it; its data directory and port stay reserved
    /// for [`InfluxD::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
    }

    /// Starts the server again on the same data directory and port, and waits until it
    /// answers.
    pub async fn restart(&mut self) {
        let binary = require_binary(INFLUXD).expect("influxd is required");
        let d = self._dir.path();
        let mut command = Command::new(&binary);
        command.arg("-config").arg(d.join("influxdb.conf"));
        let log = d.join(format!("influxd-{}.log", self.child.pid()));
        self.child = ChildGuard::spawn("influxd", command, log);
        let client = self.client.clone();
        let ping = format!("{}/ping", self.url);
        let up = wait_ready(&mut self.child, || {
            let (client, ping) = (client.clone(), ping.clone());
            async move {
                client
                    .get(&ping)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 204)
            }
        })
        .await;
        assert!(up, "influxd did not restart; log:\n{}", self.child.log());
    }

    /// Runs an InfluxQL statement that changes something (`CREATE DATABASE ...`).
    pub async fn execute(&self, statement: &str) {
        let mut url = reqwest::Url::parse(&format!("{}/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("q", statement);
        let response = self.client.post(url).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status.is_success() && !body.contains("\"error\""),
            "{statement}: HTTP {status}: {body}"
        );
    }

    pub async fn create_database(&self, name: &str) {
        self.execute(&format!("CREATE DATABASE \"{name}\"")).await;
    }

    /// Runs a query with nanosecond epochs and returns the JSON reply.
    pub async fn query(&self, database: &str, q: &str) -> serde_json::Value {
        let mut url = reqwest::Url::parse(&format!("{}/query", self.url)).unwrap();
        url.query_pairs_mut()
            .append_pair("db", database)
            .append_pair("epoch", "ns")
            .append_pair("q", q);
        let response = self.client.get(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "query {q}: HTTP {}",
            response.status()
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// The rows of the first series of a single-statement query, as column name → value maps.
    pub async fn rows(&self, database: &str, q: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
        let reply = self.query(database, q).await;
        let result = &reply["results"][0];
        assert!(result.get("error").is_none(), "query {q}: {reply}");
        let Some(series) = result["series"].as_array() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for s in series {
            let columns: Vec<String> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            for values in s["values"].as_array().unwrap() {
                let values = values.as_array().unwrap();
                rows.push(
                    columns
                        .iter()
                        .cloned()
                        .zip(values.iter().cloned())
                        .collect(),
                );
            }
        }
        rows
    }
}

/// One series of VictoriaMetrics' `/api/v1/export` (JSON lines).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ExportedSeries {
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    /// Milliseconds since the Unix epoch: VictoriaMetrics stores ms.
    pub timestamps: Vec<i64>,
}

/// A throwaway VictoriaMetrics single-node server.
#[derive(Debug)]
pub struct VictoriaMetrics {
    child: ChildGuard,
    pub url: String,
    pub port: u16,
    client: reqwest::Client,
    _dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts on a free port; `None` when it is not installed (outside CI).
    pub async fn start_if_installed() -> Option<Self> {
        require_binary(VICTORIA_METRICS)?;
        Some(Self::start_on(None).await)
    }

    /// Starts on a given port (retries other ports only when `port` is `None`).
    pub async fn start_on(port: Option<u16>) -> Self {
        let binary = require_binary(VICTORIA_METRICS).expect("victoria-metrics is required");
        for _ in 0..5 {
            let http_port = port.unwrap_or_else(free_port);
            let dir = tempfile::tempdir().unwrap();
            let mut command = Command::new(&binary);
            command
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("-httpListenAddr=127.0.0.1:{http_port}"))
                // Test data may carry fixed timestamps from years ago; keep them.
                .arg("-retentionPeriod=100y");
            let mut child =
                ChildGuard::spawn("victoria-metrics", command, dir.path().join("vm.log"));
            let url = format!("http://127.0.0.1:{http_port}");
            let client = http();
            let health = format!("{url}/health");
            let up = wait_ready(&mut child, || {
                let (client, health) = (client.clone(), health.clone());
                async move {
                    client
                        .get(&health)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await;
            if up {
                return Self {
                    child,
                    url,
                    port: http_port,
                    client,
                    _dir: dir,
                };
            }
            if port.is_some() {
                break;
            }
        }
        panic!("victoria-metrics did not start");
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Raw points of every series matching `selector` (e.g. `{__name__=~"dtop_.*"}`).
    pub async fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/export", self.url)).unwrap();
        url.query_pairs_mut().append_pair("match[]", selector);
        let response = self.client.get(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "export: HTTP {}",
            response.status()
        );
        let body = response.text().await.unwrap();
        let mut series: Vec<ExportedSeries> = body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        series.sort_by(|a, b| a.metric.cmp(&b.metric));
        series
    }

    /// Polls [`VictoriaMetrics::export`] until `done` accepts it: freshly written points become
    /// searchable after about a second.
    pub async fn wait_for_export(
        &self,
        selector: &str,
        timeout: Duration,
        mut done: impl FnMut(&[ExportedSeries]) -> bool,
    ) -> Vec<ExportedSeries> {
        let deadline = Instant::now() + timeout;
        loop {
            let series = self.export(selector).await;
            if done(&series) {
                return series;
            }
            if Instant::now() > deadline {
                panic!(
                    "VictoriaMetrics export of {selector} never became complete; last: {series:#?}"
                );
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A throwaway Mosquitto broker on loopback, anonymous access allowed.
#[derive(Debug)]
pub struct Mosquitto {
    child: ChildGuard,
    pub port: u16,
    _dir: TempDir,
}

impl Mosquitto {
    /// Starts on a free port; `None` when it is not installed (outside CI).
    pub async fn start_if_installed() -> Option<Self> {
        require_binary(MOSQUITTO)?;
        Some(Self::start_on(None).await)
    }

    /// Starts on a given port (retries other ports only when `port` is `None`).
    pub async fn start_on(port: Option<u16>) -> Self {
        let binary = require_binary(MOSQUITTO).expect("mosquitto is required");
        for _ in 0..5 {
            let requested = port;
            let port = requested.unwrap_or_else(free_port);
            let dir = tempfile::tempdir().unwrap();
            let config_path = dir.path().join("mosquitto.conf");
            std::fs::write(
                &config_path,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"),
            )
            .unwrap();
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&config_path);
            let mut child =
                ChildGuard::spawn("mosquitto", command, dir.path().join("mosquitto.log"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let up = wait_ready(&mut child, || async move {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await;
            if up {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            if requested.is_some() {
                break;
            }
        }
        panic!("mosquitto did not start");
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log(&self) -> String {
        self.child.log()
    }
}

/// A twin that stores into `influx`'s database `db` as MQTT client `client_id` on the broker at
/// `mqtt_port`, batching within 20 ms and giving up an HTTP request after 2 s; tests add their
/// own spool and retry settings with `..`.
pub fn influx_twin_config(
    mqtt_port: u16,
    influx: &InfluxD,
    db: &str,
    client_id: &str,
) -> dtop_twin::config::TwinConfig {
    use dtop_twin::config::{
        BatchConfig, HttpConfig, InfluxV1Config, MqttConfig, StorageConfig, TwinConfig,
    };
    use dtop_twin::lineproto::Precision;
    TwinConfig {
        mqtt: MqttConfig {
            port: Some(mqtt_port),
            client_id: client_id.into(),
            ..MqttConfig::default()
        },
        storage: StorageConfig::InfluxV1(InfluxV1Config {
            url: influx.url.clone(),
            database: db.into(),
            username: None,
            password_file: None,
            precision: Precision::Us,
        }),
        batch: BatchConfig {
            max_delay_ms: 20,
            ..BatchConfig::default()
        },
        http: HttpConfig { timeout_ms: 2000 },
        ..TwinConfig::default()
    }
}
