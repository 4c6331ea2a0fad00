//! Owns the server's TOML config: the HTTP listener and its limits, the credentials file, the
//! engine's database, the optional MQTT publisher and in-process workers, the optional TLS
//! certificate, the live rig views (`[live]`) and their history store, and `validate()`, which
//! reports every range problem at once (checking that the TLS files exist, and reading the
//! broker's config for its `[auth.roles]`, the web users' rules). Reads no other file but the
//! MQTT password file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dtop_daemon::{BrokerAddr, BrokerKeys, BrokerList, ConfigProblem};
use dtop_engine::EngineConfig;
use serde::{Deserialize, Serialize};

/// The whole server config (`dtop-server --config PATH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The HTTP listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// The broker's credentials file (`user:role:rigs:argon2id-hash`); re-read when it changes.
    pub credentials_file: PathBuf,
    /// The studies engine's database and result store.
    pub engine: EngineConfig,
    /// Where to publish study state on MQTT; absent = no publisher.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// In-process workers.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// Live rig views, commands and history (they need `[mqtt]`).
    #[serde(default)]
    pub live: LiveConfig,
}

/// Live rig views: what the server keeps per rig for browsers, whose rules it applies to each
/// user (the broker's own, read from the broker's config), and where history is read. The DVF
/// gain limit is not configured here: the twin owns the model and publishes the limit it
/// enforces in each rig's status, and the server applies that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Seconds of samples kept per rig, sent to a browser when it connects.
    #[serde(default = "default_window_s")]
    pub window_s: f64,
    /// A rig whose newest block arrived longer ago than this is shown as stale, s.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: f64,
    /// Frames queued per rig for browsers; a browser further behind loses frames (counted and
    /// reported to it).
    #[serde(default = "default_queue_frames")]
    pub queue_frames: usize,
    /// The broker's config file (`dtop-broker.toml`): each web user gets exactly what its
    /// `[auth.roles]` allow their identity on MQTT. Read at start; a missing or bad file stops
    /// the server (exit 64). Absent: DTOP's built-in rules, which are also what a broker
    /// without `[auth.roles]` applies.
    #[serde(default)]
    pub broker_config: Option<PathBuf>,
    /// The rules in force, read from `broker_config` when the config is loaded (or handed
    /// over by `dtop up`, which runs the broker itself); not a key of the file.
    #[serde(skip)]
    pub roles: dtop_auth::RolesConfig,
    /// Where past samples are read for the history view; absent = no history.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
}

/// The role rules of a broker config file's text: its `[auth.roles]`, DTOP's built-in rules
/// where it has none, every problem of that section as `live.broker_config` problems (pure).
///
/// # Errors
/// Every problem found, each naming the broker file's key.
pub fn roles_of_broker_config(text: &str) -> Result<dtop_auth::RolesConfig, Vec<String>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| vec![e.message().to_owned()])?;
    let roles = match table.get("auth").and_then(|auth| auth.get("roles")) {
        None => dtop_auth::RolesConfig::default(),
        Some(value) => value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| vec![format!("[auth.roles]: {}", e.message())])?,
    };
    let problems: Vec<String> = roles
        .problems()
        .into_iter()
        .map(|(key, message)| format!("{key}: {message}"))
        .collect();
    if problems.is_empty() {
        Ok(roles)
    } else {
        Err(problems)
    }
}

/// Reads [`roles_of_broker_config`] from `path`.
///
/// # Errors
/// Every problem, the unreadable file included.
pub fn read_broker_roles(path: &std::path::Path) -> Result<dtop_auth::RolesConfig, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    roles_of_broker_config(&text)
}

/// The store the twin writes samples to, read back for the history view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Which store: `"influx_v1"` (InfluxQL on `/query`; the twin's `[storage.influx_v1]`) or
    /// `"victoria_metrics"` (MetricsQL on `/api/v1/query_range`; the twin's
    /// `[storage.influx_v2]` pointed at VictoriaMetrics).
    #[serde(default)]
    pub backend: HistoryBackend,
    /// Base URL of the store, e.g. `http://127.0.0.1:8086` (InfluxDB) or
    /// `http://127.0.0.1:8428` (VictoriaMetrics).
    pub url: String,
    /// The database the twin writes (`[storage.influx_v1] database`); `influx_v1` only.
    #[serde(default)]
    pub database: Option<String>,
    /// Seconds to wait for an answer; past it the request is answered 503.
    #[serde(default = "default_history_timeout_s")]
    pub timeout_s: f64,
    /// Widest range one request may ask for, s (the query reads every sample in it: one day
    /// at 1 kHz is 86.4 million points per channel).
    #[serde(default = "default_history_max_range_s")]
    pub max_range_s: u64,
}

/// The history store's query language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryBackend {
    /// InfluxDB 1.x, InfluxQL.
    #[default]
    InfluxV1,
    /// VictoriaMetrics, MetricsQL.
    VictoriaMetrics,
}

impl HistoryConfig {
    /// Reads `database` of the InfluxDB 1.x at `url`, with the default timeout and widest range.
    pub fn influx_v1(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            backend: HistoryBackend::InfluxV1,
            url: url.into(),
            database: Some(database.into()),
            timeout_s: default_history_timeout_s(),
            max_range_s: default_history_max_range_s(),
        }
    }

    /// Reads the VictoriaMetrics at `url`, with the default timeout and widest range.
    pub fn victoria_metrics(url: impl Into<String>) -> Self {
        Self {
            backend: HistoryBackend::VictoriaMetrics,
            url: url.into(),
            database: None,
            timeout_s: default_history_timeout_s(),
            max_range_s: default_history_max_range_s(),
        }
    }

    fn problems(&self, problems: &mut Vec<ConfigProblem>) {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(ConfigProblem::new(
                "live.history.url",
                "must start with http:// or https://",
            ));
        }
        match (self.backend, self.database.as_deref()) {
            (HistoryBackend::InfluxV1, None | Some("")) => problems.push(ConfigProblem::new(
                "live.history.database",
                "must name the twin's InfluxDB database (backend influx_v1)",
            )),
            (HistoryBackend::VictoriaMetrics, Some(_)) => problems.push(ConfigProblem::new(
                "live.history.database",
                "is for backend influx_v1 only (VictoriaMetrics has no databases)",
            )),
            _ => {}
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0 && self.timeout_s <= 300.0) {
            problems.push(ConfigProblem::new(
                "live.history.timeout_s",
                "must be in (0, 300]",
            ));
        }
        if !(1..=MAX_HISTORY_RANGE_S).contains(&self.max_range_s) {
            problems.push(ConfigProblem::new(
                "live.history.max_range_s",
                format!("must be between 1 and {MAX_HISTORY_RANGE_S}"),
            ));
        }
    }
}

const fn default_window_s() -> f64 {
    10.0
}
const fn default_stale_after_s() -> f64 {
    2.0
}
const fn default_queue_frames() -> usize {
    256
}
const fn default_history_timeout_s() -> f64 {
    10.0
}
const fn default_history_max_range_s() -> u64 {
    86_400
}

/// Upper bound of `live.history.max_range_s`: one year.
const MAX_HISTORY_RANGE_S: u64 = 365 * 86_400;

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            window_s: default_window_s(),
            stale_after_s: default_stale_after_s(),
            queue_frames: default_queue_frames(),
            broker_config: None,
            roles: dtop_auth::RolesConfig::default(),
            history: None,
        }
    }
}

impl LiveConfig {
    /// Reads the rules of `broker_config` into `roles` (DTOP's built-in rules without one).
    ///
    /// # Errors
    /// Every problem of the broker's file, in one message.
    pub fn load_roles(&mut self) -> Result<(), String> {
        if let Some(path) = &self.broker_config {
            self.roles = read_broker_roles(path).map_err(|found| {
                format!(
                    "live.broker_config {}: {}",
                    path.display(),
                    found.join("; ")
                )
            })?;
        }
        Ok(())
    }

    fn problems(&self, problems: &mut Vec<ConfigProblem>) {
        if !(self.window_s.is_finite() && (1.0..=600.0).contains(&self.window_s)) {
            problems.push(ConfigProblem::new(
                "live.window_s",
                "must be between 1 and 600",
            ));
        }
        if !(self.stale_after_s.is_finite() && (0.1..=600.0).contains(&self.stale_after_s)) {
            problems.push(ConfigProblem::new(
                "live.stale_after_s",
                "must be between 0.1 and 600",
            ));
        }
        if !(1..=65_536).contains(&self.queue_frames) {
            problems.push(ConfigProblem::new(
                "live.queue_frames",
                "must be between 1 and 65536",
            ));
        }
        if let Some(path) = &self.broker_config
            && let Err(found) = read_broker_roles(path)
        {
            for message in found {
                problems.push(ConfigProblem::new("live.broker_config", message));
            }
        }
        if let Some(h) = &self.history {
            h.problems(problems);
        }
    }
}

/// The HTTP listener and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_body_limit_bytes")]
    pub body_limit_bytes: usize,
    /// Largest study submission accepted, in bytes: a study may carry measured tables (a
    /// 10-minute record of 4 channels at 1 kHz is about 50 MB of JSON).
    #[serde(default = "default_study_body_limit_bytes")]
    pub study_body_limit_bytes: usize,
    /// How long a login token lives, in seconds.
    #[serde(default = "default_token_lifetime_s")]
    pub token_lifetime_s: u64,
    /// How often the study change poller asks the database, in milliseconds (one poller for
    /// every SSE client and the MQTT publisher).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// At most this many argon2 verifications run at once (each takes ~19 MiB and tens of ms).
    #[serde(default = "default_max_concurrent_logins")]
    pub max_concurrent_logins: usize,
    /// Failed logins allowed per user name or client address before they are slowed down.
    #[serde(default = "default_free_login_failures")]
    pub free_login_failures: u32,
    /// Longest wait imposed after repeated failed logins, in seconds.
    #[serde(default = "default_max_login_delay_s")]
    pub max_login_delay_s: u64,
    /// Serve HTTPS with this certificate and key; absent = plain HTTP (behind a TLS proxy or
    /// on loopback). Session cookies are marked `Secure` under TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// The server's own TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

const fn default_body_limit_bytes() -> usize {
    1024 * 1024
}
const fn default_study_body_limit_bytes() -> usize {
    128 * 1024 * 1024
}
const fn default_token_lifetime_s() -> u64 {
    12 * 3600
}
const fn default_poll_interval_ms() -> u64 {
    500
}
const fn default_max_concurrent_logins() -> usize {
    4
}
const fn default_free_login_failures() -> u32 {
    3
}
const fn default_max_login_delay_s() -> u64 {
    300
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            body_limit_bytes: default_body_limit_bytes(),
            study_body_limit_bytes: default_study_body_limit_bytes(),
            token_lifetime_s: default_token_lifetime_s(),
            poll_interval_ms: default_poll_interval_ms(),
            max_concurrent_logins: default_max_concurrent_logins(),
            free_login_failures: default_free_login_failures(),
            max_login_delay_s: default_max_login_delay_s(),
            tls: None,
        }
    }
}

impl HttpConfig {
    /// The token lifetime.
    pub fn token_lifetime(&self) -> Duration {
        Duration::from_secs(self.token_lifetime_s)
    }
}

/// The MQTT publisher of study state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host (one broker). Either this or `brokers`.
    #[serde(default)]
    pub host: Option<String>,
    /// Broker port, with `host` only; 1883 when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// A failover list instead of `host`/`port`: `["host:port", ...]`, tried in this order.
    /// A lost or refused connection moves to the next; a round in which every one failed
    /// ends in the reconnect backoff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerAddr>,
    /// Client id.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name (role `server` in the broker's credentials file); absent = anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (first line), e.g. a systemd credential.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl MqttConfig {
    fn broker_keys(&self) -> BrokerKeys<'_> {
        BrokerKeys {
            host: self.host.as_deref(),
            port: self.port,
            brokers: &self.brokers,
            default_host: None,
        }
    }

    /// The brokers to connect to, in order: `brokers`, or the one `host`/`port`.
    pub fn broker_list(&self) -> BrokerList {
        self.broker_keys().list()
    }
}

fn default_client_id() -> String {
    "dtop-server".to_owned()
}

/// Workers running inside the server process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// Chunks run at once by an in-process worker; 0 = none (production runs separate
    /// `dtop-worker` daemons).
    #[serde(default)]
    pub count: u32,
}

impl ServerConfig {
    /// A config for `--print-default-config`: loopback, SQLite under /var/lib/dtop.
    pub fn example() -> Self {
        Self {
            http: HttpConfig::default(),
            credentials_file: PathBuf::from("/etc/dtop/broker.passwd"),
            engine: EngineConfig {
                database_url: "sqlite:///var/lib/dtop/studies.db".to_owned(),
                result_dir: PathBuf::from("/var/lib/dtop/results"),
                budget: Default::default(),
                chunks_in_flight_per_study: 8,
                max_attempts: 3,
                fetch: Default::default(),
                solvers: Default::default(),
                rescue_after_s: 30.0,
            },
            mqtt: None,
            workers: WorkersConfig::default(),
            live: LiveConfig::default(),
        }
    }

    /// Every range and cross-field problem at once.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let h = &self.http;
        if h.body_limit_bytes < 1024 {
            problems.push(ConfigProblem::new(
                "http.body_limit_bytes",
                "must be at least 1024",
            ));
        }
        if h.study_body_limit_bytes < h.body_limit_bytes {
            problems.push(ConfigProblem::new(
                "http.study_body_limit_bytes",
                format!(
                    "must be at least http.body_limit_bytes ({})",
                    h.body_limit_bytes
                ),
            ));
        }
        if !(60..=30 * 24 * 3600).contains(&h.token_lifetime_s) {
            problems.push(ConfigProblem::new(
                "http.token_lifetime_s",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        if !(10..=60_000).contains(&h.poll_interval_ms) {
            problems.push(ConfigProblem::new(
                "http.poll_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if h.max_concurrent_logins == 0 {
            problems.push(ConfigProblem::new(
                "http.max_concurrent_logins",
                "must be at least 1",
            ));
        }
        if h.max_login_delay_s == 0 {
            problems.push(ConfigProblem::new(
                "http.max_login_delay_s",
                "must be at least 1",
            ));
        }
        if let Some(tls) = &h.tls {
            for (field, path) in [
                ("http.tls.cert_file", &tls.cert_file),
                ("http.tls.key_file", &tls.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    problems.push(ConfigProblem::new(field, "must not be empty"));
                } else if !path.is_file() {
                    problems.push(ConfigProblem::new(
                        field,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        if self.credentials_file.as_os_str().is_empty() {
            problems.push(ConfigProblem::new("credentials_file", "must not be empty"));
        }
        let url = &self.engine.database_url;
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            problems.push(ConfigProblem::new(
                "engine.database_url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        problems.extend(
            self.engine
                .fetch
                .problems("engine.fetch.")
                .into_iter()
                .chain(self.engine.solvers.problems("engine.solvers."))
                .map(|p| ConfigProblem::new(p.field, p.message)),
        );
        if let Some(mqtt) = &self.mqtt {
            problems.extend(
                mqtt.broker_keys()
                    .problems()
                    .into_iter()
                    .map(|p| ConfigProblem::new(p.field, p.problem)),
            );
            if mqtt.client_id.is_empty() {
                problems.push(ConfigProblem::new("mqtt.client_id", "must not be empty"));
            }
            if mqtt.password_file.is_some() && mqtt.username.is_none() {
                problems.push(ConfigProblem::new(
                    "mqtt.password_file",
                    "needs mqtt.username",
                ));
            }
        }
        if self.workers.count > 1024 {
            problems.push(ConfigProblem::new("workers.count", "must be at most 1024"));
        }
        self.live.problems(&mut problems);
        problems
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn example_file_parses_and_validates() {
        // The example points at the installed broker config; here, at the broker's example.
        let broker_example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../broker/dtop-broker.example.toml"
        );
        let text = include_str!("../dtop-server.example.toml")
            .replace("/etc/dtop/dtop-broker.toml", broker_example);
        let config: ServerConfig = dtop_daemon::parse(&text, ServerConfig::validate).unwrap();
        assert_eq!(config.http.token_lifetime_s, 12 * 3600);
        assert!(config.mqtt.is_some());
        assert_eq!(
            config.live.broker_config.as_deref(),
            Some(std::path::Path::new(broker_example))
        );
    }

    #[test]
    fn the_roles_are_the_broker_configs_own_with_built_in_rules_where_it_sets_none() {
        let custom = roles_of_broker_config(
            "[mqtt]\nlisten = \"127.0.0.1:1883\"\n[auth]\ncredentials_file = \"/p\"\n\
             [auth.roles.dashboard]\nsubscribe = [\"dtop/v1/rig/+/status\"]\npublish = []\n",
        )
        .unwrap();
        assert_eq!(
            custom.dashboard.subscribe,
            vec!["dtop/v1/rig/+/status".to_owned()]
        );
        assert_eq!(custom.operator, dtop_auth::RolesConfig::default().operator);
        assert_eq!(
            roles_of_broker_config("[mqtt]\nlisten = \"127.0.0.1:1883\"\n").unwrap(),
            dtop_auth::RolesConfig::default()
        );
        let bad = roles_of_broker_config("[auth.roles.dashboard]\nsubscribe = 3\n").unwrap_err();
        assert!(bad[0].contains("auth.roles"), "{bad:?}");
        assert!(roles_of_broker_config("not toml [").is_err());
    }

    #[test]
    fn default_config_round_trips_through_toml() {
        let text = toml::to_string(&ServerConfig::example()).unwrap();
        let back: ServerConfig = dtop_daemon::parse(&text, ServerConfig::validate).unwrap();
        assert_eq!(back, ServerConfig::example());
    }

    #[test]
    fn a_history_backend_is_chosen_by_name_and_database_belongs_to_influx_only() {
        let base = "credentials_file = \"/p\"\n[engine]\ndatabase_url = \"sqlite://x\"\nresult_dir = \"/tmp/r\"\n";
        let parse = |history: &str| {
            dtop_daemon::parse::<ServerConfig, _>(
                &format!("{base}[live.history]\n{history}"),
                ServerConfig::validate,
            )
        };
        let vm =
            parse("backend = \"victoria_metrics\"\nurl = \"http://127.0.0.1:8428\"\n").unwrap();
        assert_eq!(
            vm.live.history,
            Some(HistoryConfig::victoria_metrics("http://127.0.0.1:8428"))
        );
        let influx = parse("url = \"http://127.0.0.1:8086\"\ndatabase = \"dtop\"\n").unwrap();
        assert_eq!(
            influx.live.history,
            Some(HistoryConfig::influx_v1("http://127.0.0.1:8086", "dtop"))
        );
        let paths: Vec<String> = [
            "backend = \"victoria_metrics\"\nurl = \"http://x\"\ndatabase = \"dtop\"\n",
            "url = \"http://x\"\n",
            "backend = \"flux\"\nurl = \"http://x\"\ndatabase = \"d\"\n",
        ]
        .into_iter()
        .flat_map(|h| {
            let problems = parse(h).unwrap_err();
            problems
                .paths()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
        assert_eq!(
            paths,
            [
                "live.history.database",
                "live.history.database",
                "live.history.backend"
            ]
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
credentials_file = ""
[http]
body_limit_bytes = 10
token_lifetime_s = 1
[http.tls]
cert_file = "/nonexistent/cert.pem"
key_file = ""
[engine]
database_url = "mysql://x"
result_dir = "/tmp/r"
[engine.fetch]
cooldown_ms = 0
[mqtt]
host = ""
password_file = "/p"
[live]
window_s = 0
broker_config = "/nonexistent/dtop-broker.toml"
[live.history]
url = "ftp://x"
database = ""
max_range_s = 0
"#;
        let problems =
            dtop_daemon::parse::<ServerConfig, _>(text, ServerConfig::validate).unwrap_err();
        let mut paths = problems.paths();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "credentials_file",
                "engine.database_url",
                "engine.fetch.cooldown_ms",
                "http.body_limit_bytes",
                "http.tls.cert_file",
                "http.tls.key_file",
                "http.token_lifetime_s",
                "live.broker_config",
                "live.history.database",
                "live.history.max_range_s",
                "live.history.url",
                "live.window_s",
                "mqtt.host",
                "mqtt.password_file",
            ]
        );
    }
}
