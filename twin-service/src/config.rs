//! The twin's TOML configuration: shape (serde), defaults, and whole-config validation.
//!
//! Owns parsing and checking only; it opens no socket and creates no directory. Secret files are
//! read (never printed) so that an unreadable one is reported with every other problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtop_daemon::{BrokerAddr, BrokerKeys, BrokerList};
use dtop_dynamics::ShearBuildingConfig;
use dtop_dynamics::kalman::structural;
use dtop_proto::RigId;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::lineproto::Precision;

/// Everything `dtop-twin` needs to know about the system it runs in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// MQTT broker the edges publish to.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Where sample blocks are made durable. Without a `[storage.*]` table the twin writes
    /// line-protocol files under `./dtop-data/lines`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// When buffered lines are sent to storage.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The on-disk spool for batches storage has not acknowledged yet (outages, restarts), and
    /// the persisted-watermark state.
    #[serde(default)]
    pub spool: StorageSpoolConfig,
    /// HTTP client settings for the InfluxDB sinks.
    #[serde(default)]
    pub http: HttpConfig,
    /// Backoff between retries of a failed storage write.
    #[serde(default)]
    pub retry: BackoffConfig,
    /// Per-rig ingest limits.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The structural model each rig's state estimator runs on, its noise, and how often the
    /// estimated state is published and stored.
    #[serde(default)]
    pub model: ModelConfig,
    /// The twin-hosted velocity-feedback loop (off by default): which law each rig starts
    /// with and how close to the critical gain an operator may go.
    #[serde(default)]
    pub control: ControlConfig,
    /// The Prometheus endpoint (`GET /metrics`): storage and loss accounting per rig. Off unless
    /// `listen` is set.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Tracking of each rig's modes over sliding windows of live data, and drift alarms
    /// (`crate::tracking`). Off by default.
    #[serde(default)]
    pub tracking: TrackingConfig,
    /// Several twins sharing the rigs through rig leases on PostgreSQL (`dtop-lease`,
    /// ARCHITECTURE.md "Twins sharing the rigs"). Absent: this twin owns every rig it sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorConfig>,
}

/// `[coordinator]`: this twin is one of several that divide the rigs among themselves. Each
/// rig is owned by one of them at a time; the others neither store nor publish anything for
/// it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// This twin's id in the lease tables (`[A-Za-z0-9_.-]`, at most 64 bytes). Required, with
    /// no default: it must differ between the twins sharing the rigs (two twins under one id
    /// would both own the same rigs, since a lease held under an id is its holder's own) and stay
    /// the same across this twin's restarts (so a restarted twin takes its rigs back at once
    /// instead of waiting out its previous process's leases). The host name is a good choice
    /// when there is one twin per host.
    pub twin_id: String,
    /// `postgres://user@host:port/db` of the lease database. Prefer `database_url_file` when
    /// the URL holds a password; a password given here is never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// A file holding the lease database URL (a trailing newline is ignored), e.g. a systemd
    /// credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_file: Option<PathBuf>,
    /// Lease timing, the same for every twin sharing the rigs (`[coordinator.lease]`:
    /// `ttl_ms`, `renew_interval_ms`, `safety_margin_ms`).
    #[serde(default)]
    pub lease: dtop_lease::LeaseConfig,
}

impl CoordinatorConfig {
    /// This twin's id.
    ///
    /// # Errors
    /// When `twin_id` is not a valid id (validation reports it first).
    pub fn twin_id(&self) -> Result<dtop_lease::TwinId, dtop_lease::TwinIdError> {
        dtop_lease::TwinId::new(self.twin_id.clone())
    }

    /// The lease database URL: `database_url`, or read from `database_url_file`.
    ///
    /// # Errors
    /// When the file cannot be read or is empty (the message names the file, never its text).
    pub fn database_url(&self) -> Result<DatabaseUrl, SecretError> {
        match (&self.database_url, &self.database_url_file) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(path)) => {
                Secret::read_file(path).map(|s| DatabaseUrl(s.expose().trim().to_owned()))
            }
            (None, None) => Err(SecretError::Empty {
                path: PathBuf::from("(no coordinator.database_url)"),
            }),
        }
    }
}

/// A PostgreSQL URL that may hold a password: printed (`Debug`, `Display`) with the password
/// replaced by `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_password(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; anything else unchanged.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// What a tracked mode's frequency is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackingReference {
    /// The rig's structural model (`[model]`): drift from the model the twin runs on.
    #[default]
    Model,
    /// The first identification in which the mode was found: drift since tracking began.
    FirstWindow,
}

/// Operational modal analysis of each rig over sliding windows of its live floor
/// accelerations, and the drift alarm on each mode's frequency (issue 14, item 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Master switch; off: no window is kept and nothing is identified.
    #[serde(default)]
    pub enabled: bool,
    /// Length of each identified window, s of sample time.
    #[serde(default = "default_tracking_window_s")]
    pub window_s: f64,
    /// Time between the ends of consecutive windows, s of sample time (windows overlap when it
    /// is below `window_s`).
    #[serde(default = "default_tracking_interval_s")]
    pub interval_s: f64,
    /// Half-width of each mode's band around its reference frequency, % of the reference.
    #[serde(default = "default_tracking_band_percent")]
    pub band_percent: f64,
    /// What each mode's band is centred on.
    #[serde(default)]
    pub reference: TrackingReference,
    /// Half-width of each storey's stiffness band around its reference, % of the reference:
    /// every identified window's modes update the storey stiffnesses (`crate::tracking::
    /// stiffness`), and a storey outside its band raises a drift alarm. 0: no stiffness fit.
    #[serde(default = "default_tracking_stiffness_band_percent")]
    pub stiffness_band_percent: f64,
    /// An alarm clears after this many consecutive identifications with its mode back in band.
    #[serde(default = "default_tracking_clear_windows")]
    pub clear_windows: u32,
    /// Smallest MAC between an identified shape and a model mode's shape for them to match.
    #[serde(default = "default_tracking_min_mac")]
    pub min_mac: f64,
    /// SSI-cov block rows i (dtop-oma).
    #[serde(default = "default_tracking_block_rows")]
    pub block_rows: usize,
    /// SSI-cov lowest model order (dtop-oma).
    #[serde(default = "default_tracking_min_order")]
    pub min_order: usize,
    /// SSI-cov highest model order (dtop-oma).
    #[serde(default = "default_tracking_max_order")]
    pub max_order: usize,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            window_s: default_tracking_window_s(),
            interval_s: default_tracking_interval_s(),
            band_percent: default_tracking_band_percent(),
            reference: TrackingReference::default(),
            stiffness_band_percent: default_tracking_stiffness_band_percent(),
            clear_windows: default_tracking_clear_windows(),
            min_mac: default_tracking_min_mac(),
            block_rows: default_tracking_block_rows(),
            min_order: default_tracking_min_order(),
            max_order: default_tracking_max_order(),
        }
    }
}

const fn default_tracking_window_s() -> f64 {
    600.0
}
const fn default_tracking_interval_s() -> f64 {
    600.0
}
/// A 10 % loss of one Southampton storey moves some mode by 1.9 % (storey 2) or more, and
/// a 600 s window scatters the frequencies by well under 0.1 %: 1 % tells them apart.
const fn default_tracking_band_percent() -> f64 {
    1.0
}
/// A 10 % loss of a storey moves its fitted stiffness by the whole 10 %, while the scatter of
/// the fits over 120 s windows of the simulated rig stays well below 1 %: 5 % tells them apart
/// and leaves room for identification bias on a rig with an actuator's closely spaced pair.
const fn default_tracking_stiffness_band_percent() -> f64 {
    5.0
}
const fn default_tracking_clear_windows() -> u32 {
    3
}
const fn default_tracking_min_mac() -> f64 {
    0.8
}
const fn default_tracking_block_rows() -> usize {
    80
}
const fn default_tracking_min_order() -> usize {
    2
}
const fn default_tracking_max_order() -> usize {
    30
}

/// Longest accepted `tracking.window_s`: a day of samples per rig held in memory is the most
/// a twin should carry (at 1 kHz and 3 floors, about 2 GB).
pub const MAX_TRACKING_WINDOW_S: f64 = 86_400.0;

/// Where the twin serves its Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. `127.0.0.1:9311`. Off when absent.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

/// A control law the twin can host, as named in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlLawName {
    /// No feedback: the twin publishes no drives.
    #[default]
    Off,
    /// Direct velocity feedback of the host floor's estimated velocity.
    Dvf,
}

/// The twin-hosted control loop (see `crate::control`).
///
/// With `enabled = false` (the default) the twin does not subscribe to command topics and
/// never publishes a drive, whatever the other keys say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Master switch: accept `SetControl` commands on `dtop/v1/rig/+/cmd` and publish
    /// `ActuatorDrive`s on `dtop/v1/rig/<rig>/drive`.
    #[serde(default = "default_control_enabled")]
    pub enabled: bool,
    /// Law each rig starts with after every birth (`"off"` or `"dvf"`); operators change it
    /// with `SetControl` commands.
    #[serde(default)]
    pub law: ControlLawName,
    /// Start-up DVF gain h: coil current per unit host-floor velocity, A/(m/s). The force on
    /// the host floor is −Bl·h·v.
    #[serde(default = "default_control_gain_a_per_m_s")]
    pub gain_a_per_m_s: f64,
    /// Highest DVF gain accepted, as a fraction of the rig's critical gain (the gain at which
    /// the loop goes unstable); 0.8 leaves a 1.9 dB gain margin.
    #[serde(default = "default_max_fraction_of_critical")]
    pub max_fraction_of_critical: f64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: default_control_enabled(),
            law: ControlLawName::default(),
            gain_a_per_m_s: default_control_gain_a_per_m_s(),
            max_fraction_of_critical: default_max_fraction_of_critical(),
        }
    }
}

/// MQTT client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or IP address (one broker); 127.0.0.1 when neither this nor
    /// `brokers` is given.
    #[serde(default)]
    pub host: Option<String>,
    /// Broker TCP port, with `host` only; 1883 when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// A failover list instead of `host`/`port`: `["host:port", ...]`, tried in this order.
    /// A lost or refused connection moves to the next; a round in which every one failed
    /// ends in the reconnect backoff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerAddr>,
    /// MQTT client id; must be unique on the broker, or the broker disconnects the older client.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name for the broker, if it requires a login.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (a trailing newline is ignored), e.g. a systemd
    /// credential. Requires `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive interval, s.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// How long a TCP connect plus CONNACK may take, s.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Backoff between reconnect attempts after the connection drops.
    #[serde(default)]
    pub reconnect: BackoffConfig,
}

/// Where sample blocks are stored: exactly one kind, or a list of storage nodes
/// (`[[storage.nodes]]`) that each get every line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Rotating line-protocol files on local disk, replayable into InfluxDB with curl.
    File(FileStorageConfig),
    /// InfluxDB 1.x (`/write`), or anything speaking its API.
    InfluxV1(InfluxV1Config),
    /// InfluxDB 2.x (`/api/v2/write`), or anything speaking its API (e.g. VictoriaMetrics).
    InfluxV2(InfluxV2Config),
    /// Several storage nodes, each written every line through its own writer (own spool,
    /// own retries); data counts as persisted once every node acknowledged it.
    Nodes(Vec<StorageNodeConfig>),
}

/// Most storage nodes one twin writes to.
pub const MAX_STORAGE_NODES: usize = 8;
/// Longest storage node name (it names a spool directory and a metric label).
pub const MAX_NODE_NAME_BYTES: usize = 32;

/// One entry of `[[storage.nodes]]`: a name and exactly one storage kind.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageNodeConfig {
    /// Unique, `[A-Za-z0-9_-]`, at most [`MAX_NODE_NAME_BYTES`]: the `node` label of the
    /// metrics and status, and the node's spool subdirectory (`{spool.dir}/nodes/{name}`).
    pub name: String,
    #[serde(default)]
    pub file: Option<FileStorageConfig>,
    #[serde(default)]
    pub influx_v1: Option<InfluxV1Config>,
    #[serde(default)]
    pub influx_v2: Option<InfluxV2Config>,
}

impl StorageNodeConfig {
    /// The kinds this entry names (a valid entry names one).
    pub fn kinds(&self) -> Vec<StorageConfig> {
        let mut out = Vec::new();
        if let Some(c) = &self.file {
            out.push(StorageConfig::File(c.clone()));
        }
        if let Some(c) = &self.influx_v1 {
            out.push(StorageConfig::InfluxV1(c.clone()));
        }
        if let Some(c) = &self.influx_v2 {
            out.push(StorageConfig::InfluxV2(c.clone()));
        }
        out
    }
}

/// One storage node the writer side runs: its name and single storage kind.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageNode {
    pub name: String,
    /// Never [`StorageConfig::Nodes`].
    pub storage: StorageConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::File(FileStorageConfig::default())
    }
}

impl StorageConfig {
    /// Where the data goes, in words for an operator; no secrets.
    pub fn describe(&self) -> String {
        match self {
            StorageConfig::File(c) => format!(
                "line-protocol files in {} (no InfluxDB configured; replay each file with: \
                 curl -XPOST 'http://127.0.0.1:8086/write?db=dtop&precision={}' --data-binary @FILE)",
                c.dir.display(),
                c.precision.v1_param()
            ),
            StorageConfig::InfluxV1(c) => format!(
                "InfluxDB 1.x at {}, database {} (precision {})",
                c.url,
                c.database,
                c.precision.as_str()
            ),
            StorageConfig::InfluxV2(c) => format!(
                "InfluxDB 2.x API at {}, org {}, bucket {} (precision {})",
                c.url,
                c.org,
                c.bucket,
                c.precision.as_str()
            ),
            StorageConfig::Nodes(_) => {
                let nodes = self.nodes();
                let each: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("node {}: {}", n.name, n.storage.describe()))
                    .collect();
                format!("{} storage nodes; {}", nodes.len(), each.join("; "))
            }
        }
    }

    /// Timestamp precision of the lines written to this storage (of every node: validation
    /// requires they agree, because every node gets the same lines).
    pub fn precision(&self) -> Precision {
        match self {
            StorageConfig::File(c) => c.precision,
            StorageConfig::InfluxV1(c) => c.precision,
            StorageConfig::InfluxV2(c) => c.precision,
            StorageConfig::Nodes(_) => self
                .nodes()
                .first()
                .map_or_else(default_precision, |n| n.storage.precision()),
        }
    }

    /// The config key of a single kind (`file`, `influx_v1`, `influx_v2`, `nodes`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            StorageConfig::File(_) => "file",
            StorageConfig::InfluxV1(_) => "influx_v1",
            StorageConfig::InfluxV2(_) => "influx_v2",
            StorageConfig::Nodes(_) => "nodes",
        }
    }

    /// Whether this is a list of nodes (`[[storage.nodes]]`) rather than one storage.
    pub fn is_node_list(&self) -> bool {
        matches!(self, StorageConfig::Nodes(_))
    }

    /// The storage nodes to write to: a single kind is one node named after it (`influx_v1`);
    /// a list gives each entry with its first kind (validation makes it the only one).
    pub fn nodes(&self) -> Vec<StorageNode> {
        match self {
            StorageConfig::Nodes(list) => list
                .iter()
                .filter_map(|n| {
                    n.kinds().into_iter().next().map(|storage| StorageNode {
                        name: n.name.clone(),
                        storage,
                    })
                })
                .collect(),
            single => vec![StorageNode {
                name: single.kind_name().to_owned(),
                storage: single.clone(),
            }],
        }
    }
}

/// Line-protocol files on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorageConfig {
    /// Directory the `.lp` files are written to; created if missing.
    #[serde(default = "default_file_dir")]
    pub dir: PathBuf,
    /// Timestamp precision of the written lines (`"us"` or `"ns"`); also part of each file name,
    /// because a replay must pass the same precision to InfluxDB.
    #[serde(default = "default_precision")]
    pub precision: Precision,
}

impl Default for FileStorageConfig {
    fn default() -> Self {
        Self {
            dir: default_file_dir(),
            precision: default_precision(),
        }
    }
}

/// An InfluxDB 1.x database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxV1Config {
    /// Base URL, e.g. `http://127.0.0.1:8086`; a path prefix is kept (reverse proxies).
    pub url: String,
    /// Database to write to; it must exist (`CREATE DATABASE ...`).
    pub database: String,
    /// User for HTTP basic auth, if the server requires it.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password for `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Timestamp precision of the written lines (`"us"` or `"ns"`).
    #[serde(default = "default_precision")]
    pub precision: Precision,
}

/// An InfluxDB 2.x bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxV2Config {
    /// Base URL, e.g. `http://127.0.0.1:8086`; a path prefix is kept (reverse proxies).
    pub url: String,
    /// Organisation name.
    pub org: String,
    /// Bucket to write to.
    pub bucket: String,
    /// File holding the API token (sent as `Authorization: Token ...`).
    pub token_file: PathBuf,
    /// Timestamp precision of the written lines (`"us"` or `"ns"`).
    #[serde(default = "default_precision")]
    pub precision: Precision,
}

/// When the storage writer sends what it has buffered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Send once at least this many lines are buffered (a batch never splits a block, so it may
    /// exceed this by one block's lines).
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Send at most this long after the first line of a batch was buffered, ms.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// After shutdown begins, how long the writer keeps retrying the last batches before it
    /// drops them, ms.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_lines: default_max_lines(),
            max_delay_ms: default_max_delay_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

impl BatchConfig {
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// How batches storage has not acknowledged are kept (see `store::outbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpoolConfig {
    /// Directory of the on-disk spool (created if missing; owned by one twin). Unset: batches
    /// wait in memory only, a twin restart loses them, and watermarks restart from the first
    /// block stored.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Most disk the spool may use, MiB; beyond it new batches are dropped and counted.
    #[serde(default = "default_spool_capacity_mib")]
    pub capacity_mib: u64,
    /// When spooled batches are forced to disk: `"always"` (every batch), `"interval"` (every
    /// `fsync_interval_ms`), or `"never"` (the kernel decides). A SIGKILL loses nothing spooled
    /// under any of them; a power loss loses what was not fsynced yet.
    #[serde(default)]
    pub fsync: SpoolFsync,
    /// Fsync period for `fsync = "interval"`, ms.
    #[serde(default = "default_spool_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Most line protocol held in memory while storage keeps up (or is slow), MiB; beyond it,
    /// and for everything while storage is failing, batches go to the disk spool; without one,
    /// the oldest are dropped and counted.
    #[serde(default = "default_spool_memory_mib")]
    pub memory_mib: u64,
}

impl Default for StorageSpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            capacity_mib: default_spool_capacity_mib(),
            fsync: SpoolFsync::default(),
            fsync_interval_ms: default_spool_fsync_interval_ms(),
            memory_mib: default_spool_memory_mib(),
        }
    }
}

/// Fsync policy of the storage spool, as named in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFsync {
    Always,
    #[default]
    Interval,
    Never,
}

/// HTTP client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Whole-request timeout of one write (connect, send, response), ms.
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_http_timeout_ms(),
        }
    }
}

impl HttpConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Jittered exponential backoff: the n-th wait is drawn from `[d/2, d]` with
/// `d = min(initial_ms * 2^n, max_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Upper bound of the first wait, ms.
    #[serde(default = "default_backoff_initial_ms")]
    pub initial_ms: u64,
    /// Upper bound of any wait, ms.
    #[serde(default = "default_backoff_max_ms")]
    pub max_ms: u64,
}

impl BackoffConfig {
    /// The calculator these bounds configure (`dtop_daemon::Backoff`, shared by every daemon);
    /// a `max_ms` below `initial_ms` counts as `initial_ms`.
    pub fn backoff(self) -> dtop_daemon::Backoff {
        dtop_daemon::Backoff::new(
            Duration::from_millis(self.initial_ms),
            Duration::from_millis(self.max_ms),
        )
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: default_backoff_initial_ms(),
            max_ms: default_backoff_max_ms(),
        }
    }
}

/// Per-rig ingest limits; they bound memory whatever the edges publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Blocks held per rig while its birth (manifest) has not arrived; older ones are dropped
    /// and counted beyond this.
    #[serde(default = "default_pre_birth_queue_blocks")]
    pub pre_birth_queue_blocks: usize,
    /// Most rigs tracked at once; frames of further rigs are rejected and counted.
    #[serde(default = "default_max_rigs")]
    pub max_rigs: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            pre_birth_queue_blocks: default_pre_birth_queue_blocks(),
            max_rigs: default_max_rigs(),
        }
    }
}

/// The structural model behind each rig's Kalman filter.
///
/// Every rig uses `building` unless `rigs.<rig_id>` gives it its own. The actuator is not
/// taken from here: the floor comes from each birth's `actuator.floor` (0 = none fitted),
/// and only the actuator's masses, stiffness and damping come from the model's `actuator`
/// table (the defaults when it has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// How often each rig's estimated state is published (MQTT `twin/<rig>/state`) and stored
    /// (`dtop_twin_state`), per second of sample time, Hz.
    #[serde(default = "default_state_publish_hz")]
    pub state_publish_hz: f64,
    /// How often each rig's estimator is checkpointed into storage (`dtop_twin_checkpoint`),
    /// per second of sample time, s; a replay starts at the last checkpoint before its range.
    /// 0 stores none: every replay then starts where the estimator started.
    #[serde(default = "default_checkpoint_interval_s")]
    pub checkpoint_interval_s: f64,
    /// The building every rig is assumed to be; the Southampton three-storey rig by default.
    #[serde(default)]
    pub building: ShearBuildingConfig,
    /// Per-rig buildings, by rig id, replacing `building` for that rig.
    #[serde(default)]
    pub rigs: BTreeMap<String, ShearBuildingConfig>,
    /// Noise the estimator assumes.
    #[serde(default)]
    pub noise: NoiseConfig,
    /// A catalogue model every rig follows (`crate::adopt`): each usable version published
    /// on `dtop/v1/models/<name>/latest` replaces the rig's building at the next block
    /// boundary. Until one arrives a rig runs on its configured building. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    /// Per-rig catalogue models to follow, by rig id, replacing `follow` for that rig.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub follow_rigs: BTreeMap<String, String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            state_publish_hz: default_state_publish_hz(),
            checkpoint_interval_s: default_checkpoint_interval_s(),
            building: ShearBuildingConfig::default(),
            rigs: BTreeMap::new(),
            noise: NoiseConfig::default(),
            follow: None,
            follow_rigs: BTreeMap::new(),
        }
    }
}

impl ModelConfig {
    /// The building of `rig`.
    pub fn building_for(&self, rig: &RigId) -> &ShearBuildingConfig {
        self.rigs.get(rig.as_str()).unwrap_or(&self.building)
    }

    /// The catalogue model `rig` follows, if any (`follow_rigs.<rig>`, else `follow`).
    pub fn follows(&self, rig: &RigId) -> Option<&str> {
        self.follow_rigs
            .get(rig.as_str())
            .or(self.follow.as_ref())
            .map(String::as_str)
    }

    /// Whether any rig follows a catalogue model (the twin then subscribes to them).
    pub fn follows_any(&self) -> bool {
        self.follow.is_some() || !self.follow_rigs.is_empty()
    }
}

/// Noise of the rig as the estimator models it, in physical units (see
/// `dtop_dynamics::StructuralNoise`). The accelerometers' ADC step is each channel's scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// White noise of each floor accelerometer, RMS, m/s².
    #[serde(default = "default_accel_noise_rms_m_s2")]
    pub accel_noise_rms_m_s2: f64,
    /// Noise of the force gauge on floor 1 (the shaker's), RMS, N.
    #[serde(default = "default_force_gauge_noise_rms_n")]
    pub force_gauge_noise_rms_n: f64,
    /// Unmeasured force on each other floor, RMS per sample, N.
    #[serde(default = "default_unmeasured_force_rms_n")]
    pub unmeasured_force_rms_n: f64,
    /// Unmeasured ground (lab floor) acceleration, RMS per sample, m/s².
    #[serde(default = "default_ground_accel_rms_m_s2")]
    pub ground_accel_rms_m_s2: f64,
    /// Delivered minus commanded actuator force, RMS per sample, N.
    #[serde(default = "default_actuator_force_error_rms_n")]
    pub actuator_force_error_rms_n: f64,
    /// Unmodelled acceleration of every degree of freedom, RMS per sample, m/s².
    #[serde(default = "default_model_error_accel_rms_m_s2")]
    pub model_error_accel_rms_m_s2: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            accel_noise_rms_m_s2: default_accel_noise_rms_m_s2(),
            force_gauge_noise_rms_n: default_force_gauge_noise_rms_n(),
            unmeasured_force_rms_n: default_unmeasured_force_rms_n(),
            ground_accel_rms_m_s2: default_ground_accel_rms_m_s2(),
            actuator_force_error_rms_n: default_actuator_force_error_rms_n(),
            model_error_accel_rms_m_s2: default_model_error_accel_rms_m_s2(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            brokers: Vec::new(),
            client_id: default_client_id(),
            username: None,
            password_file: None,
            keepalive_s: default_keepalive_s(),
            connect_timeout_s: default_connect_timeout_s(),
            reconnect: BackoffConfig::default(),
        }
    }
}

/// The broker when a config names none.
pub const DEFAULT_MQTT_HOST: &str = "127.0.0.1";

impl MqttConfig {
    fn broker_keys(&self) -> BrokerKeys<'_> {
        BrokerKeys {
            host: self.host.as_deref(),
            port: self.port,
            brokers: &self.brokers,
            default_host: Some(DEFAULT_MQTT_HOST),
        }
    }

    /// The brokers to connect to, in order: `brokers`, or the one `host`/`port`.
    pub fn broker_list(&self) -> BrokerList {
        self.broker_keys().list()
    }
}

fn default_client_id() -> String {
    "dtop-twin".to_owned()
}
const fn default_keepalive_s() -> u64 {
    30
}
const fn default_connect_timeout_s() -> u64 {
    5
}
fn default_file_dir() -> PathBuf {
    PathBuf::from("./dtop-data/lines")
}
/// Microseconds: exact for any sample period that is a whole number of µs, and 3 bytes per line
/// shorter than nanoseconds.
const fn default_precision() -> Precision {
    Precision::Us
}
const fn default_spool_capacity_mib() -> u64 {
    1024
}
const fn default_spool_fsync_interval_ms() -> u64 {
    1000
}
/// About seven minutes of an 8-channel, 1 kHz rig's line protocol.
const fn default_spool_memory_mib() -> u64 {
    64
}
const fn default_max_lines() -> usize {
    5000
}
const fn default_max_delay_ms() -> u64 {
    100
}
const fn default_drain_timeout_ms() -> u64 {
    5000
}
const fn default_http_timeout_ms() -> u64 {
    10_000
}
const fn default_backoff_initial_ms() -> u64 {
    100
}
const fn default_backoff_max_ms() -> u64 {
    30_000
}
const fn default_pre_birth_queue_blocks() -> usize {
    64
}
const fn default_max_rigs() -> usize {
    256
}
const fn default_state_publish_hz() -> f64 {
    10.0
}
const fn default_checkpoint_interval_s() -> f64 {
    10.0
}
/// Control is opt-in: a twin must never drive an actuator nobody asked it to.
const fn default_control_enabled() -> bool {
    false
}
const fn default_control_gain_a_per_m_s() -> f64 {
    0.0
}
const fn default_max_fraction_of_critical() -> f64 {
    0.8
}
const fn default_accel_noise_rms_m_s2() -> f64 {
    structural::DEFAULT_ACCEL_NOISE_RMS_M_S2
}
const fn default_force_gauge_noise_rms_n() -> f64 {
    structural::DEFAULT_FORCE_GAUGE_NOISE_RMS_N
}
const fn default_unmeasured_force_rms_n() -> f64 {
    structural::DEFAULT_UNMEASURED_FORCE_RMS_N
}
const fn default_ground_accel_rms_m_s2() -> f64 {
    structural::DEFAULT_GROUND_ACCEL_RMS_M_S2
}
const fn default_actuator_force_error_rms_n() -> f64 {
    structural::DEFAULT_ACTUATOR_FORCE_ERROR_RMS_N
}
const fn default_model_error_accel_rms_m_s2() -> f64 {
    structural::DEFAULT_MODEL_ERROR_ACCEL_RMS_M_S2
}

/// A credential read from a file. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads a secret file, dropping one trailing newline (`echo` and most editors add one).
    pub fn read_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {} is empty", path.display())]
    Empty { path: PathBuf },
}

/// Why a configuration file could not be loaded: unreadable, or every problem in it (parse-level
/// and validation alike, with TOML paths and lines).
pub type ConfigError = dtop_daemon::LoadError;

/// Every range and cross-field problem of a configuration, found at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigProblems(pub Vec<String>);

impl ConfigProblems {
    fn push(&mut self, field: &str, problem: impl fmt::Display) {
        self.0.push(format!("{field}: {problem}"));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The same problems as the shared loader lists them, each split back into the
    /// `field: problem` that [`ConfigProblems::push`] joined.
    pub fn into_daemon_problems(self) -> Vec<dtop_daemon::ConfigProblem> {
        self.0
            .into_iter()
            .map(|line| match line.split_once(": ") {
                Some((field, problem)) => dtop_daemon::ConfigProblem::new(field, problem),
                None => dtop_daemon::ConfigProblem::new("", line),
            })
            .collect()
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// Highest accepted `batch.max_lines`: a batch must stay well below InfluxDB's default 25 MB
/// request body limit (a DTOP sample line is ~100 bytes).
pub const MAX_BATCH_LINES: usize = 100_000;

impl TwinConfig {
    /// Parses TOML (shape only; call [`TwinConfig::validate`] next). Reports every parse-level
    /// problem at once, not just the first.
    pub fn from_toml_str(text: &str) -> Result<Self, dtop_daemon::ConfigProblems> {
        dtop_daemon::parse(text, |_: &Self| Vec::new())
    }

    /// Reads, parses and validates a config file, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        dtop_daemon::load(path, |config: &Self| match config.validate() {
            Ok(()) => Vec::new(),
            Err(problems) => problems.into_daemon_problems(),
        })
    }

    /// Checks every range and cross-field rule and reads the secret files; returns all problems.
    pub fn validate(&self) -> Result<(), ConfigProblems> {
        let mut p = ConfigProblems::default();
        let m = &self.mqtt;
        for problem in m.broker_keys().problems() {
            p.push(problem.field, problem.problem);
        }
        if m.client_id.is_empty() {
            p.push("mqtt.client_id", "is empty");
        }
        if m.keepalive_s == 0 {
            // 0 would disable keep-alive, and with it the only way to notice a silently dead broker.
            p.push("mqtt.keepalive_s", "must be at least 1");
        }
        if m.keepalive_s > u64::from(u16::MAX) {
            p.push(
                "mqtt.keepalive_s",
                format!("is {}; MQTT allows at most {}", m.keepalive_s, u16::MAX),
            );
        }
        if m.connect_timeout_s == 0 {
            p.push("mqtt.connect_timeout_s", "must be at least 1");
        }
        if m.password_file.is_some() && m.username.is_none() {
            p.push("mqtt.password_file", "is set but mqtt.username is not");
        }
        if let Some(path) = &m.password_file {
            check_secret(&mut p, "mqtt.password_file", path);
        }
        validate_backoff(&mut p, "mqtt.reconnect", &m.reconnect);

        validate_storage(&mut p, &self.storage);

        let b = &self.batch;
        if b.max_lines == 0 {
            p.push("batch.max_lines", "must be at least 1");
        }
        if b.max_lines > MAX_BATCH_LINES {
            p.push(
                "batch.max_lines",
                format!("is {}; must be at most {MAX_BATCH_LINES}", b.max_lines),
            );
        }
        if b.max_delay_ms == 0 {
            p.push("batch.max_delay_ms", "must be at least 1");
        }
        let sp = &self.spool;
        if sp.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            p.push("spool.dir", "is empty; leave it out for no disk spool");
        }
        if sp.capacity_mib == 0 {
            p.push("spool.capacity_mib", "must be at least 1");
        }
        if sp.fsync == SpoolFsync::Interval && sp.fsync_interval_ms == 0 {
            p.push("spool.fsync_interval_ms", "must be at least 1");
        }
        if sp.memory_mib == 0 {
            p.push("spool.memory_mib", "must be at least 1");
        }
        if self.http.timeout_ms == 0 {
            p.push("http.timeout_ms", "must be at least 1");
        }
        validate_backoff(&mut p, "retry", &self.retry);
        if self.ingest.max_rigs == 0 {
            p.push("ingest.max_rigs", "must be at least 1");
        }
        validate_model(&mut p, &self.model);
        validate_control(&mut p, &self.control);
        validate_tracking(&mut p, &self.tracking);
        if let Some(c) = &self.coordinator {
            validate_coordinator(&mut p, c);
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// Checks `[storage.*]`, or every `[[storage.nodes]]` entry and the list as a whole.
fn validate_storage(p: &mut ConfigProblems, storage: &StorageConfig) {
    let StorageConfig::Nodes(list) = storage else {
        validate_storage_kind(p, "storage", storage);
        return;
    };
    if list.is_empty() {
        p.push("storage.nodes", "is empty; give at least one node");
    }
    if list.len() > MAX_STORAGE_NODES {
        p.push(
            "storage.nodes",
            format!("has {} nodes; at most {MAX_STORAGE_NODES}", list.len()),
        );
    }
    // (name, where the node writes, precision) of the entries seen so far.
    let mut seen: Vec<(usize, &str, String, Precision)> = Vec::new();
    for (i, node) in list.iter().enumerate() {
        let at = format!("storage.nodes[{i}]");
        if let Err(why) = check_node_name(&node.name) {
            p.push(&format!("{at}.name"), why);
        } else if let Some((j, ..)) = seen.iter().find(|(_, n, ..)| *n == node.name) {
            p.push(
                &format!("{at}.name"),
                format!("{:?} is also the name of storage.nodes[{j}]", node.name),
            );
        }
        let kinds = node.kinds();
        let storage = match kinds.as_slice() {
            [] => {
                p.push(
                    &at,
                    "names no storage; give one of file, influx_v1, influx_v2",
                );
                continue;
            }
            [one] => one,
            several => {
                let names: Vec<&str> = several.iter().map(StorageConfig::kind_name).collect();
                p.push(
                    &at,
                    format!(
                        "names {} storages ({}); give exactly one per node",
                        several.len(),
                        names.join(", ")
                    ),
                );
                continue;
            }
        };
        validate_storage_kind(p, &at, storage);
        let target = storage_target(storage);
        if let Some((j, ..)) = seen.iter().find(|(_, _, t, _)| *t == target) {
            p.push(
                &at,
                format!("writes to the same place as storage.nodes[{j}] ({target})"),
            );
        }
        if let Some((j, _, _, first)) = seen.first()
            && *first != storage.precision()
        {
            p.push(
                &format!("{at}.{}.precision", storage.kind_name()),
                format!(
                    "is {:?} but storage.nodes[{j}] writes {:?}; every node gets the same lines",
                    storage.precision().as_str(),
                    first.as_str()
                ),
            );
        }
        seen.push((i, &node.name, target, storage.precision()));
    }
}

/// Where a single storage kind writes, to find two nodes naming the same place.
fn storage_target(storage: &StorageConfig) -> String {
    match storage {
        StorageConfig::File(c) => format!("file {}", c.dir.display()),
        StorageConfig::InfluxV1(c) => format!(
            "{} database {}",
            c.url.trim_end_matches('/'),
            c.database.trim()
        ),
        StorageConfig::InfluxV2(c) => format!(
            "{} org {} bucket {}",
            c.url.trim_end_matches('/'),
            c.org.trim(),
            c.bucket.trim()
        ),
        StorageConfig::Nodes(_) => String::new(),
    }
}

/// A node name: 1 to [`MAX_NODE_NAME_BYTES`] of `[A-Za-z0-9_-]` (a directory name and a
/// metric label value as it is).
fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_NODE_NAME_BYTES}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("{name:?} may hold only A-Z, a-z, 0-9, _ and -"));
    }
    Ok(())
}

/// Checks one storage kind whose keys are under `prefix` (`storage`, `storage.nodes[1]`).
fn validate_storage_kind(p: &mut ConfigProblems, prefix: &str, storage: &StorageConfig) {
    match storage {
        StorageConfig::File(f) => {
            if f.dir.as_os_str().is_empty() {
                p.push(&format!("{prefix}.file.dir"), "is empty");
            }
        }
        StorageConfig::InfluxV1(c) => {
            check_url(p, &format!("{prefix}.influx_v1.url"), &c.url);
            if c.database.trim().is_empty() {
                p.push(&format!("{prefix}.influx_v1.database"), "is empty");
            }
            if c.password_file.is_some() && c.username.is_none() {
                p.push(
                    &format!("{prefix}.influx_v1.password_file"),
                    format!("is set but {prefix}.influx_v1.username is not"),
                );
            }
            if let Some(path) = &c.password_file {
                check_secret(p, &format!("{prefix}.influx_v1.password_file"), path);
            }
        }
        StorageConfig::InfluxV2(c) => {
            check_url(p, &format!("{prefix}.influx_v2.url"), &c.url);
            if c.org.trim().is_empty() {
                p.push(&format!("{prefix}.influx_v2.org"), "is empty");
            }
            if c.bucket.trim().is_empty() {
                p.push(&format!("{prefix}.influx_v2.bucket"), "is empty");
            }
            check_secret(p, &format!("{prefix}.influx_v2.token_file"), &c.token_file);
        }
        StorageConfig::Nodes(_) => {
            p.push(&format!("{prefix}.nodes"), "cannot be nested");
        }
    }
}

fn validate_coordinator(p: &mut ConfigProblems, c: &CoordinatorConfig) {
    if let Err(e) = c.twin_id() {
        p.push("coordinator.twin_id", e);
    }
    let field = match (&c.database_url, &c.database_url_file) {
        (Some(_), Some(_)) => {
            p.push(
                "coordinator.database_url_file",
                "give database_url or database_url_file, not both",
            );
            None
        }
        (None, None) => {
            p.push(
                "coordinator.database_url",
                "give database_url or database_url_file",
            );
            None
        }
        (Some(_), None) => Some("coordinator.database_url"),
        (None, Some(_)) => Some("coordinator.database_url_file"),
    };
    if let Some(field) = field {
        match c.database_url() {
            // The URL itself is not repeated: it may hold a password.
            Ok(url) if !is_postgres_url(url.expose()) => p.push(
                field,
                "must be a PostgreSQL URL (postgres://… or postgresql://…)",
            ),
            Ok(_) => {}
            Err(e) => p.push(field, e),
        }
    }
    for problem in c.lease.problems("coordinator.lease.") {
        p.push(&problem.path, problem.message);
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Highest accepted `model.state_publish_hz`: far above what a dashboard can show, and low
/// enough that state lines stay a small fraction of sample lines.
pub const MAX_STATE_PUBLISH_HZ: f64 = 1000.0;

/// Longest accepted `model.checkpoint_interval_s`: a day of samples to replay is the most a
/// review should have to wait through.
pub const MAX_CHECKPOINT_INTERVAL_S: f64 = 86_400.0;

fn validate_model(p: &mut ConfigProblems, m: &ModelConfig) {
    let hz = m.state_publish_hz;
    if !(hz.is_finite() && hz > 0.0 && hz <= MAX_STATE_PUBLISH_HZ) {
        p.push(
            "model.state_publish_hz",
            format!("is {hz}; must be above 0 and at most {MAX_STATE_PUBLISH_HZ}"),
        );
    }
    let every_s = m.checkpoint_interval_s;
    if !(every_s.is_finite() && (0.0..=MAX_CHECKPOINT_INTERVAL_S).contains(&every_s)) {
        p.push(
            "model.checkpoint_interval_s",
            format!("is {every_s}; must be 0 (none) up to {MAX_CHECKPOINT_INTERVAL_S} s"),
        );
    }
    for problem in m.building.problems() {
        p.push("model.building", problem);
    }
    for (rig, building) in &m.rigs {
        let field = format!("model.rigs.{rig}");
        if let Err(e) = RigId::new(rig.as_str()) {
            p.push(&field, format!("is not a valid rig id: {e}"));
        }
        for problem in building.problems() {
            p.push(&field, problem);
        }
    }
    if let Some(name) = &m.follow
        && let Some(problem) = crate::adopt::name_problem(name)
    {
        p.push("model.follow", problem);
    }
    for (rig, name) in &m.follow_rigs {
        let field = format!("model.follow_rigs.{rig}");
        if let Err(e) = RigId::new(rig.as_str()) {
            p.push(&field, format!("is not a valid rig id: {e}"));
        }
        if let Some(problem) = crate::adopt::name_problem(name) {
            p.push(&field, problem);
        }
    }
    let n = &m.noise;
    let noises = [
        ("accel_noise_rms_m_s2", n.accel_noise_rms_m_s2),
        ("force_gauge_noise_rms_n", n.force_gauge_noise_rms_n),
        ("unmeasured_force_rms_n", n.unmeasured_force_rms_n),
        ("ground_accel_rms_m_s2", n.ground_accel_rms_m_s2),
        ("actuator_force_error_rms_n", n.actuator_force_error_rms_n),
        ("model_error_accel_rms_m_s2", n.model_error_accel_rms_m_s2),
    ];
    for (name, value) in noises {
        if !(value.is_finite() && value >= 0.0) {
            p.push(
                &format!("model.noise.{name}"),
                format!("is {value}; must be finite and >= 0"),
            );
        }
    }
    if n.accel_noise_rms_m_s2 == 0.0 {
        // With an ideal ADC as well, R would be singular and no filter can be designed.
        p.push("model.noise.accel_noise_rms_m_s2", "must be above 0");
    }
}

fn validate_control(p: &mut ConfigProblems, c: &ControlConfig) {
    let fraction = c.max_fraction_of_critical;
    // At the critical gain itself the loop is marginally stable, so 1 is excluded.
    if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
        p.push(
            "control.max_fraction_of_critical",
            format!("is {fraction}; must be above 0 and below 1"),
        );
    }
    let gain = c.gain_a_per_m_s;
    if !(gain.is_finite() && gain >= 0.0) {
        p.push(
            "control.gain_a_per_m_s",
            format!("is {gain}; must be finite and >= 0"),
        );
    }
    if c.law == ControlLawName::Dvf && gain == 0.0 {
        p.push(
            "control.gain_a_per_m_s",
            "must be above 0 when control.law = \"dvf\" (use law = \"off\" for no feedback)",
        );
    }
    if c.law != ControlLawName::Off && !c.enabled {
        p.push(
            "control.law",
            "is not \"off\" but control.enabled is false; set enabled = true to start the loop",
        );
    }
}

fn validate_tracking(p: &mut ConfigProblems, t: &TrackingConfig) {
    let window_s = t.window_s;
    if !(window_s.is_finite() && window_s > 0.0 && window_s <= MAX_TRACKING_WINDOW_S) {
        p.push(
            "tracking.window_s",
            format!("is {window_s}; must be above 0 and at most {MAX_TRACKING_WINDOW_S} s"),
        );
    }
    let interval_s = t.interval_s;
    if !(interval_s.is_finite() && interval_s > 0.0) {
        p.push(
            "tracking.interval_s",
            format!("is {interval_s}; must be above 0 (e.g. equal to window_s)"),
        );
    }
    let band = t.band_percent;
    if !(band.is_finite() && band > 0.0 && band < 100.0) {
        p.push(
            "tracking.band_percent",
            format!("is {band}; must be above 0 and below 100 (e.g. 2)"),
        );
    }
    let stiffness_band = t.stiffness_band_percent;
    if !(stiffness_band.is_finite() && (0.0..100.0).contains(&stiffness_band)) {
        p.push(
            "tracking.stiffness_band_percent",
            format!("is {stiffness_band}; must be at least 0 (0: no stiffness fit) and below 100 (e.g. 5)"),
        );
    }
    if t.clear_windows == 0 {
        p.push(
            "tracking.clear_windows",
            "must be at least 1 (1 clears an alarm at the first window back in band)",
        );
    }
    let mac = t.min_mac;
    if !(mac.is_finite() && mac > 0.0 && mac <= 1.0) {
        p.push(
            "tracking.min_mac",
            format!("is {mac}; must be above 0 and at most 1 (e.g. 0.8)"),
        );
    }
    if t.block_rows < 2 {
        p.push(
            "tracking.block_rows",
            format!("is {}; must be at least 2 (e.g. 80)", t.block_rows),
        );
    }
    if t.min_order == 0 {
        p.push("tracking.min_order", "must be at least 1 (e.g. 2)");
    }
    if t.max_order < t.min_order {
        p.push(
            "tracking.max_order",
            format!(
                "is {}, below tracking.min_order = {}; raise max_order",
                t.max_order, t.min_order
            ),
        );
    }
}

fn validate_backoff(p: &mut ConfigProblems, field: &str, b: &BackoffConfig) {
    if b.initial_ms == 0 {
        p.push(&format!("{field}.initial_ms"), "must be at least 1");
    }
    if b.max_ms < b.initial_ms {
        p.push(
            &format!("{field}.max_ms"),
            format!(
                "is {}; must be at least initial_ms ({})",
                b.max_ms, b.initial_ms
            ),
        );
    }
}

fn check_secret(p: &mut ConfigProblems, field: &str, path: &Path) {
    if let Err(e) = Secret::read_file(path) {
        p.push(field, e);
    }
}

fn check_url(p: &mut ConfigProblems, field: &str, url: &str) {
    match parse_base_url(url) {
        Ok(_) => {}
        Err(e) => p.push(field, e),
    }
}

/// Parses a storage base URL: http(s), with a host, without query, fragment or credentials
/// (credentials belong in the `*_file` settings, where they are never logged).
pub fn parse_base_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not embed credentials; use the username and *_file settings".to_owned());
    }
    Ok(parsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const EXAMPLE: &str = crate::EXAMPLE_CONFIG;

    #[test]
    fn backoff_bounds_in_ms_become_the_shared_backoffs_ceilings() {
        use rand::SeedableRng as _;
        let ceilings_ms = |config: BackoffConfig| {
            let mut backoff = config.backoff();
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            (0..5)
                .map(|_| {
                    let ceiling = backoff.ceiling();
                    backoff.next_delay(&mut rng);
                    ceiling.as_millis()
                })
                .collect::<Vec<_>>()
        };
        let config = |initial_ms, max_ms| BackoffConfig { initial_ms, max_ms };
        assert_eq!(ceilings_ms(config(100, 1000)), [100, 200, 400, 800, 1000]);
        // A max below the first wait is the first wait.
        assert_eq!(ceilings_ms(config(300, 10)), [300, 300, 300, 300, 300]);
    }

    #[test]
    fn example_config_parses_validates_and_equals_the_defaults() {
        let config = TwinConfig::from_toml_str(EXAMPLE).unwrap();
        config.validate().unwrap();
        assert_eq!(config, TwinConfig::default());
    }

    #[test]
    fn empty_file_gives_file_storage_under_dtop_data() {
        let config = TwinConfig::from_toml_str("").unwrap();
        assert_eq!(
            config.storage,
            StorageConfig::File(FileStorageConfig {
                dir: "./dtop-data/lines".into(),
                precision: Precision::Us
            })
        );
        assert_eq!(config.mqtt.broker_list().to_string(), "127.0.0.1:1883");
        let described = config.storage.describe();
        assert!(
            described.starts_with("line-protocol files in ./dtop-data/lines (no InfluxDB"),
            "{described}"
        );
        assert!(
            described.contains("write?db=dtop&precision=u' --data-binary @FILE"),
            "{described}"
        );
        assert_eq!(config.batch.max_lines, 5000);
        config.validate().unwrap();
    }

    #[test]
    fn refuses_unknown_fields_anywhere() {
        assert!(TwinConfig::from_toml_str("[mqtt]\nhots = \"x\"\n").is_err());
        assert!(
            TwinConfig::from_toml_str("[storage.file]\ndir = \"x\"\nprecison = \"us\"\n").is_err()
        );
        assert!(TwinConfig::from_toml_str("[storage.influx_v3]\nurl = \"x\"\n").is_err());
        assert!(TwinConfig::from_toml_str("[storage.file]\nprecision = \"ms\"\n").is_err());
    }

    #[test]
    fn parses_each_storage_kind() {
        let v1 = TwinConfig::from_toml_str(
            "[storage.influx_v1]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"dtop\"\nprecision = \"ns\"\n",
        )
        .unwrap();
        assert!(matches!(&v1.storage, StorageConfig::InfluxV1(c) if c.database == "dtop"));
        assert_eq!(v1.storage.precision(), Precision::Ns);
        let v2 = TwinConfig::from_toml_str(
            "[storage.influx_v2]\nurl = \"http://h:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"/t\"\n",
        )
        .unwrap();
        assert!(matches!(&v2.storage, StorageConfig::InfluxV2(c) if c.bucket == "b"));
        assert_eq!(v2.storage.precision(), Precision::Us);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
[mqtt]
host = ""
keepalive_s = 0
password_file = "/nonexistent/pw"

[storage.influx_v1]
url = "ftp://x"
database = " "

[batch]
max_lines = 0
max_delay_ms = 0

[http]
timeout_ms = 0

[retry]
initial_ms = 10
max_ms = 5
"#;
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        let all = problems.to_string();
        for field in [
            "mqtt.host",
            "mqtt.keepalive_s",
            "mqtt.password_file: is set but",
            "mqtt.password_file: cannot read",
            "storage.influx_v1.url",
            "storage.influx_v1.database",
            "batch.max_lines",
            "batch.max_delay_ms",
            "http.timeout_ms",
            "retry.max_ms",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert_eq!(problems.0.len(), 10, "{all}");
    }

    #[test]
    fn a_list_of_storage_nodes_parses_and_a_single_kind_is_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("vm-token");
        std::fs::write(&token, "unused-by-victoria-metrics\n").unwrap();
        let text = r#"
[[storage.nodes]]
name = "influx-a"
influx_v1 = { url = "http://10.0.0.5:8086", database = "dtop" }

[[storage.nodes]]
name = "vm_b"
[storage.nodes.influx_v2]
url = "http://10.0.0.6:8428"
org = "dtop"
bucket = "dtop"
token_file = "TOKEN"
"#
        .replace("TOKEN", &token.display().to_string());
        let config = TwinConfig::from_toml_str(&text).unwrap();
        config.validate().unwrap();
        let nodes = config.storage.nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].name, "influx-a");
        assert!(matches!(&nodes[0].storage, StorageConfig::InfluxV1(c) if c.database == "dtop"));
        assert_eq!(nodes[1].name, "vm_b");
        assert!(matches!(&nodes[1].storage, StorageConfig::InfluxV2(c) if c.bucket == "dtop"));
        assert_eq!(config.storage.precision(), Precision::Us);
        assert!(config.storage.is_node_list());
        let described = config.storage.describe();
        assert!(described.starts_with("2 storage nodes"), "{described}");
        assert!(described.contains("node vm_b: InfluxDB 2.x"), "{described}");

        let single = TwinConfig::from_toml_str(
            "[storage.influx_v1]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"dtop\"\n",
        )
        .unwrap();
        let nodes = single.storage.nodes();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name, "influx_v1");
        assert_eq!(nodes[0].storage, single.storage);
        assert!(!single.storage.is_node_list());
    }

    #[test]
    fn every_storage_node_problem_is_reported_at_once() {
        let text = r#"
[[storage.nodes]]
name = "a"
influx_v1 = { url = "http://10.0.0.5:8086", database = "dtop" }

[[storage.nodes]]
name = "a"
influx_v1 = { url = "http://10.0.0.5:8086/", database = "dtop", precision = "ns" }

[[storage.nodes]]
name = "no kind"

[[storage.nodes]]
name = ""
file = { dir = "x" }
influx_v1 = { url = "http://10.0.0.7:8086", database = "dtop" }

[[storage.nodes]]
name = "this-name-is-far-too-long-for-a-label-0123456789"
influx_v1 = { url = "ftp://x", database = " " }
"#;
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        let all = problems.to_string();
        for expected in [
            "storage.nodes[1].name: \"a\" is also the name of storage.nodes[0]",
            "storage.nodes[1]: writes to the same place as storage.nodes[0]",
            "storage.nodes[1].influx_v1.precision: is \"ns\" but storage.nodes[0] writes \"us\"",
            "storage.nodes[2].name: \"no kind\" may hold only",
            "storage.nodes[2]: names no storage",
            "storage.nodes[3].name: is empty",
            "storage.nodes[3]: names 2 storages (file, influx_v1)",
            "storage.nodes[4].name: is 48 bytes long",
            "storage.nodes[4].influx_v1.url",
            "storage.nodes[4].influx_v1.database: is empty",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(problems.0.len(), 10, "{all}");

        let empty = TwinConfig::from_toml_str("storage = { nodes = [] }\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(empty.contains("storage.nodes: is empty"), "{empty}");
        // A kind beside the list is a shape error, as two kinds always were.
        assert!(
            TwinConfig::from_toml_str(
                "[storage.file]\ndir = \"x\"\n[[storage.nodes]]\nname = \"a\"\n"
            )
            .is_err()
        );
        assert!(
            TwinConfig::from_toml_str("[[storage.nodes]]\nname = \"a\"\nurl = \"x\"\n").is_err()
        );
    }

    #[test]
    fn the_spool_is_off_by_default_and_every_spool_problem_is_reported() {
        let config = TwinConfig::from_toml_str("").unwrap();
        assert_eq!(config.spool.dir, None);
        let text = "[spool]\ndir = \"\"\ncapacity_mib = 0\nfsync = \"interval\"\nfsync_interval_ms = 0\nmemory_mib = 0\n";
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        let fields: Vec<_> = problems
            .iter()
            .filter(|p| p.starts_with("spool."))
            .collect();
        assert_eq!(fields.len(), 4, "{problems}");
        let ok = TwinConfig::from_toml_str(
            "[spool]\ndir = \"/var/lib/dtop/spool\"\nfsync = \"always\"\nfsync_interval_ms = 0\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert!(TwinConfig::from_toml_str("[spool]\nfsync = \"sometimes\"\n").is_err());
    }

    #[test]
    fn control_is_off_by_default_and_every_control_problem_is_reported() {
        let config = TwinConfig::from_toml_str("").unwrap();
        assert!(!config.control.enabled);
        assert_eq!(config.control.law, ControlLawName::Off);
        assert_eq!(config.control.max_fraction_of_critical, 0.8);
        let config = TwinConfig::from_toml_str(
            "[control]\nlaw = \"dvf\"\ngain_a_per_m_s = 0.0\nmax_fraction_of_critical = 1.0\n",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let all = problems.to_string();
        for field in [
            "control.max_fraction_of_critical",
            "control.gain_a_per_m_s: must be above 0",
            "control.law: is not \"off\"",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert_eq!(problems.0.len(), 3, "{all}");
        let config = TwinConfig::from_toml_str("[control]\ngain_a_per_m_s = -1.0\n").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("must be finite and >= 0")
        );
        assert!(TwinConfig::from_toml_str("[control]\nlaw = \"lqg\"\n").is_err());
        assert!(TwinConfig::from_toml_str("[control]\ngain = 1.0\n").is_err());
        let config = TwinConfig::from_toml_str(
            "[control]\nenabled = true\nlaw = \"dvf\"\ngain_a_per_m_s = 1.0\n",
        )
        .unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn a_coordinator_section_is_optional_and_every_problem_in_it_is_reported() {
        let config = TwinConfig::from_toml_str("").unwrap();
        assert_eq!(config.coordinator, None);
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("lease-db");
        std::fs::write(&url_file, "postgres://dtop:pw@db.lab:5432/dtop\n").unwrap();
        let text = format!(
            "[coordinator]\ntwin_id = \"twin-a\"\ndatabase_url_file = \"{}\"\n\
             [coordinator.lease]\nttl_ms = 2000\nrenew_interval_ms = 400\nsafety_margin_ms = 500\n",
            url_file.display()
        );
        let config = TwinConfig::from_toml_str(&text).unwrap();
        config.validate().unwrap();
        let c = config.coordinator.as_ref().unwrap();
        assert_eq!(c.twin_id().unwrap().as_str(), "twin-a");
        assert_eq!(c.lease.renew_interval_ms, 400);
        let url = c.database_url().unwrap();
        assert_eq!(url.expose(), "postgres://dtop:pw@db.lab:5432/dtop");
        assert_eq!(url.to_string(), "postgres://dtop:***@db.lab:5432/dtop");
        let inline = TwinConfig::from_toml_str(
            "[coordinator]\ntwin_id = \"twin-a\"\ndatabase_url = \"postgres://dtop:pw@db.lab/dtop\"\n",
        )
        .unwrap();
        inline.validate().unwrap();
        let printed = format!("{inline:?}");
        assert!(
            printed.contains("postgres://dtop:***@db.lab/dtop") && !printed.contains("pw@"),
            "{printed}"
        );

        // Every problem at once, with the twin's other problems.
        let text = "[http]\ntimeout_ms = 0\n\n[coordinator]\ntwin_id = \"twin a\"\n\
                    database_url = \"mysql://u:secret@h/d\"\ndatabase_url_file = \"/x\"\n\
                    [coordinator.lease]\nttl_ms = 500\nrenew_interval_ms = 400\n";
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        let all = problems.to_string();
        for field in [
            "http.timeout_ms",
            "coordinator.twin_id: twin id \"twin a\" contains ' '",
            "coordinator.database_url_file: give database_url or database_url_file, not both",
            "coordinator.lease.ttl_ms: must be more than",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert_eq!(problems.0.len(), 4, "{all}");
        let text = "[coordinator]\ntwin_id = \"t\"\ndatabase_url = \"mysql://u:secret@h/d\"\n";
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            problems.0,
            ["coordinator.database_url: must be a PostgreSQL URL (postgres://… or postgresql://…)"]
        );
        let problems = TwinConfig::from_toml_str("[coordinator]\ntwin_id = \"t\"\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            problems.0,
            ["coordinator.database_url: give database_url or database_url_file"]
        );
        // The id is required, and unknown keys are refused, in the lease table too.
        assert!(
            TwinConfig::from_toml_str("[coordinator]\ndatabase_url = \"postgres://h/d\"\n")
                .is_err()
        );
        assert!(
            TwinConfig::from_toml_str(
                "[coordinator]\ntwin_id = \"t\"\n[coordinator.lease]\nttl_s = 5\n"
            )
            .is_err()
        );
    }

    #[test]
    fn a_database_url_prints_without_its_password() {
        for (url, shown) in [
            ("postgres://u:p@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgresql://u:p:q@h?sslmode=require",
                "postgresql://u:***@h?sslmode=require",
            ),
            ("postgres://h/d", "postgres://h/d"),
        ] {
            assert_eq!(DatabaseUrl::new(url).to_string(), shown);
            assert_eq!(
                format!("{:?}", DatabaseUrl::new(url)),
                format!("DatabaseUrl({shown})")
            );
        }
    }

    #[test]
    fn refuses_urls_with_credentials_query_or_no_host() {
        assert!(parse_base_url("http://user:pw@h:8086").is_err());
        assert!(parse_base_url("http://h:8086/?db=x").is_err());
        assert!(parse_base_url("http://").is_err());
        assert!(parse_base_url("not a url").is_err());
        assert_eq!(
            parse_base_url("https://h/influx/").map(|u| u.path().to_owned()),
            Ok("/influx/".to_owned())
        );
    }

    #[test]
    fn secret_drops_one_trailing_newline_and_hides_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret = Secret::read_file(&path).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Secret::read_file(&path),
            Err(SecretError::Empty { .. })
        ));
    }

    #[test]
    fn reports_missing_token_file_for_influx_v2() {
        let config = TwinConfig::from_toml_str(
            "[storage.influx_v2]\nurl = \"http://h:8086\"\norg = \"\"\nbucket = \"b\"\ntoken_file = \"/nonexistent/t\"\n",
        )
        .unwrap();
        let problems = config.validate().unwrap_err().to_string();
        assert!(problems.contains("storage.influx_v2.org"), "{problems}");
        assert!(
            problems.contains("storage.influx_v2.token_file"),
            "{problems}"
        );
    }

    #[test]
    fn model_section_takes_per_rig_buildings_and_reports_every_problem() {
        let text = r#"
[model]
state_publish_hz = 0.0

[model.rigs.lab-1s]
floor_masses_kg = [4.0]
storey_stiffness_n_per_m = [30000.0]
damping = { kind = "modal", zetas = [0.01] }

[model.rigs."bad rig"]
floor_masses_kg = [-1.0]
storey_stiffness_n_per_m = [30000.0]
damping = { kind = "modal", zetas = [0.01] }

[model.noise]
accel_noise_rms_m_s2 = 0.0
ground_accel_rms_m_s2 = -1.0
"#;
        let config = TwinConfig::from_toml_str(text).unwrap();
        let lab = RigId::new("lab-1s").unwrap();
        assert_eq!(config.model.building_for(&lab).floors(), 1);
        assert_eq!(
            config.model.building_for(&RigId::new("other").unwrap()),
            &ShearBuildingConfig::southampton()
        );
        let all = config.validate().unwrap_err().to_string();
        for field in [
            "model.state_publish_hz",
            "model.rigs.bad rig: is not a valid rig id",
            "model.rigs.bad rig: floor_masses_kg[0]",
            "model.noise.accel_noise_rms_m_s2",
            "model.noise.ground_accel_rms_m_s2",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert!(TwinConfig::from_toml_str("[model]\npublish_hz = 1.0\n").is_err());
    }

    #[test]
    fn tracking_is_off_by_default_and_every_tracking_problem_is_reported_at_once() {
        let config = TwinConfig::from_toml_str("").unwrap();
        assert!(!config.tracking.enabled);
        assert_eq!(config.tracking.reference, TrackingReference::Model);
        let text = "[tracking]\nenabled = true\nwindow_s = 0.0\ninterval_s = -1.0\n\
                    band_percent = 100.0\nreference = \"first_window\"\nclear_windows = 0\n\
                    stiffness_band_percent = -1.0\n\
                    min_mac = 1.5\nblock_rows = 1\nmin_order = 0\n";
        let config = TwinConfig::from_toml_str(text).unwrap();
        assert_eq!(config.tracking.reference, TrackingReference::FirstWindow);
        let problems = config.validate().unwrap_err();
        let all = problems.to_string();
        for field in [
            "tracking.window_s",
            "tracking.interval_s",
            "tracking.band_percent",
            "tracking.stiffness_band_percent",
            "tracking.clear_windows",
            "tracking.min_mac",
            "tracking.block_rows",
            "tracking.min_order",
        ] {
            assert!(all.contains(field), "missing {field:?} in:\n{all}");
        }
        assert_eq!(problems.0.len(), 8, "{all}");
        let text = "[tracking]\nmin_order = 10\nmax_order = 4\n";
        let problems = TwinConfig::from_toml_str(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            problems.to_string().contains("tracking.max_order"),
            "{problems}"
        );
        // Shape errors are caught by serde: an unknown key and an unknown reference.
        assert!(TwinConfig::from_toml_str("[tracking]\nwindow = 60.0\n").is_err());
        assert!(TwinConfig::from_toml_str("[tracking]\nreference = \"nominal\"\n").is_err());
    }
}
