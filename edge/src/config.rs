//! The edge's TOML configuration: its shape (serde), its defaults, and `validate()`, which reports
//! every range and cross-field problem at once. Reads nothing but the password file, and only when
//! asked ([`MqttConfig::read_password`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtop_daemon::{BrokerAddr, BrokerKeys, BrokerList};
use dtop_proto::RigId;
use serde::{Deserialize, Serialize};

use crate::batcher::max_encoded_block_bytes;

/// Longest drive timeout accepted, sample periods (about 17 minutes at 1 kHz): beyond it the
/// timeout would not protect anything.
pub const MAX_DRIVE_TIMEOUT_PERIODS: u32 = 1_000_000;

/// Where the edge keeps its persistent counters unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dtop-edge";

/// Whole edge configuration (`dtop-edge --config PATH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Rig this edge speaks for; appears in every topic and in the `rig` tag downstream.
    pub rig_id: RigId,
    /// Directory holding the persistent `session` and `next_seq` counters. Must survive reboots:
    /// losing it lets a restarted edge reuse block sequence numbers.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The firmware's serial link.
    pub serial: SerialConfig,
    /// How samples are grouped into blocks.
    #[serde(default)]
    pub acquisition: AcquisitionConfig,
    /// The MQTT broker connection.
    pub mqtt: MqttConfig,
    /// What the edge lets the actuator do, whoever asks.
    pub actuator: ActuatorConfig,
    /// Modbus devices polled alongside the firmware stream, and an optional Modbus actuator.
    #[serde(default)]
    pub modbus: crate::modbus::config::ModbusConfig,
    /// Prometheus metrics endpoint; off unless `listen` is set.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The on-disk spool that keeps every block until the twin reports it stored.
    #[serde(default)]
    pub spool: SpoolSection,
}

/// What the spool does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicyName {
    /// Evict the oldest blocks (counted and logged as lost) and keep acquiring.
    #[default]
    DropOldest,
    /// Keep the oldest; new blocks are not taken (counted as lost, reason `paused`) until the
    /// twin's watermark frees room.
    Pause,
}

/// When spool appends are forced to disk. A SIGKILL loses nothing under any of these (each
/// append is one `write(2)`); the choice only decides what a power loss may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicyName {
    /// `fdatasync` after every block.
    Always,
    /// At most `fsync_interval_ms` of blocks lost on power loss (the default).
    #[default]
    Interval,
    /// Leave it to the kernel (typically 30 s on Linux).
    Never,
}

/// `[spool]`: the edge's durable block spool (ARCHITECTURE.md, "Nothing lost").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Spool directory; `{state_dir}/spool` when absent. Must survive reboots.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Rig time the spool holds, s: sized from the firmware stream's rate and channel count at
    /// the worst-case encoded block size, so at least this much survives an outage.
    #[serde(default = "default_spool_capacity_s")]
    pub capacity_s: f64,
    /// What to do when full: `"drop_oldest"` or `"pause"`.
    #[serde(default)]
    pub full_policy: FullPolicyName,
    /// `"always"`, `"interval"` (default) or `"never"`.
    #[serde(default)]
    pub fsync: FsyncPolicyName,
    /// Period of the `"interval"` fsync, ms.
    #[serde(default = "default_spool_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// How long the twin's watermark may stay below blocks already sent before they are sent
    /// again (a twin restart loses what it held only in memory), s. Doubles per fruitless try.
    #[serde(default = "default_spool_stall_s")]
    pub stall_s: f64,
    /// Most backfill blocks replayed per second; live blocks, drives and commands go first.
    #[serde(default = "default_spool_replay_blocks_per_s")]
    pub replay_blocks_per_s: u32,
}

impl Default for SpoolSection {
    fn default() -> Self {
        Self {
            dir: None,
            capacity_s: default_spool_capacity_s(),
            full_policy: FullPolicyName::default(),
            fsync: FsyncPolicyName::default(),
            fsync_interval_ms: default_spool_fsync_interval_ms(),
            stall_s: default_spool_stall_s(),
            replay_blocks_per_s: default_spool_replay_blocks_per_s(),
        }
    }
}

/// One hour of rig data: at 8 channels × 1 kHz that is at most about 150 MB on disk.
const fn default_spool_capacity_s() -> f64 {
    3_600.0
}
const fn default_spool_fsync_interval_ms() -> u64 {
    1_000
}
const fn default_spool_stall_s() -> f64 {
    10.0
}
/// 200 blocks of 100 samples at 1 kHz: a backlog drains 20× faster than it grows.
const fn default_spool_replay_blocks_per_s() -> u32 {
    200
}

impl SpoolSection {
    pub fn full(&self) -> dtop_spool::FullPolicy {
        match self.full_policy {
            FullPolicyName::DropOldest => dtop_spool::FullPolicy::DropOldest,
            FullPolicyName::Pause => dtop_spool::FullPolicy::Refuse,
        }
    }

    pub fn fsync(&self) -> dtop_spool::FsyncPolicy {
        match self.fsync {
            FsyncPolicyName::Always => dtop_spool::FsyncPolicy::Always,
            FsyncPolicyName::Interval => {
                dtop_spool::FsyncPolicy::IntervalMs(self.fsync_interval_ms)
            }
            FsyncPolicyName::Never => dtop_spool::FsyncPolicy::Never,
        }
    }

    pub fn stall(&self) -> Duration {
        Duration::from_secs_f64(self.stall_s)
    }

    /// Spool bytes for `capacity_s` of a stream of `channels` at `sample_rate_hz`, in blocks of
    /// `block_samples`, at the worst-case encoded size plus the 16-byte frame header.
    pub fn capacity_bytes(
        &self,
        sample_rate_hz: f64,
        channels: usize,
        block_samples: usize,
    ) -> u64 {
        let blocks = (self.capacity_s * sample_rate_hz / block_samples.max(1) as f64).ceil();
        let per_block = (max_encoded_block_bytes(channels, block_samples.max(1)) + 16) as f64;
        ((blocks * per_block) as u64).max(dtop_spool::spool::MIN_CAPACITY_BYTES)
    }
}

/// The firmware's serial port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyACM0` or a pty made by `dtop-rig-sim`.
    pub path: PathBuf,
    /// Line rate, bit/s. Ignored by USB CDC and ptys, honoured by real UARTs.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// How long to wait for a `Manifest` after the first `Hello`, ms. Later resends wait longer
    /// (jittered exponential backoff, capped at 5 s).
    #[serde(default = "default_hello_timeout_ms")]
    pub hello_timeout_ms: u64,
    /// Silence after which the firmware is presumed dead and the edge re-sends `Hello`, ms.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
}

/// How firmware samples become `SampleBlock`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquisitionConfig {
    /// Samples per channel in one published block (a block closes early only at a
    /// discontinuity or at shutdown). Must fit `MAX_SAMPLE_BLOCK_BYTES` even with the most
    /// channels the firmware protocol allows.
    #[serde(default = "default_block_samples")]
    pub block_samples: u32,
}

/// The MQTT connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address (one broker). Either this or `brokers`.
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
    /// MQTT client id; defaults to `dtop-edge-{rig_id}`. Two clients with one id evict each other.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval, s. The broker publishes the last will after 1.5 × this of silence.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// How long one TCP connect plus CONNACK may take, s.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (systemd `LoadCredential=` friendly); trailing newline ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// First reconnect delay, ms; doubles per failed attempt (with jitter) up to the maximum.
    #[serde(default = "default_reconnect_backoff_min_ms")]
    pub reconnect_backoff_min_ms: u64,
    /// Largest reconnect delay, ms.
    #[serde(default = "default_reconnect_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
    /// Blocks held in memory while the broker is unreachable; beyond this the oldest are
    /// dropped and counted.
    #[serde(default = "default_queue_max_blocks")]
    pub queue_max_blocks: usize,
    /// How long shutdown waits for queued blocks to be acknowledged before giving up, ms.
    #[serde(default = "default_shutdown_flush_timeout_ms")]
    pub shutdown_flush_timeout_ms: u64,
}

/// Limits on actuator drive, enforced by the edge before anything reaches the firmware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorConfig {
    /// Largest drive force magnitude, N. The effective limit is the smaller of this and the
    /// firmware's own `actuator_max_force_n`.
    pub max_force_n: f64,
    /// Largest drive slew rate, N/s.
    pub max_slew_n_per_s: f64,
    /// Sample periods a drive stays good for. Once this many pass without a new one, the edge
    /// ramps the force to 0 N at the slew limit and disables the actuator. Must exceed the gap
    /// between drives: a controller that answers each published block drives once per
    /// `acquisition.block_samples` periods.
    #[serde(default = "default_drive_timeout_periods")]
    pub drive_timeout_periods: u32,
}

/// The Prometheus endpoint (`GET /metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve metrics on, e.g. `127.0.0.1:9310`. Off when absent.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
const fn default_baud() -> u32 {
    921_600
}
/// PROTOCOL.md §7.1 "Hello retry".
const fn default_hello_timeout_ms() -> u64 {
    1_000
}
/// PROTOCOL.md §7.1 "Link-lost timeout".
const fn default_read_timeout_ms() -> u64 {
    3_000
}
const fn default_block_samples() -> u32 {
    100
}
/// 2.5 blocks of the default 100 samples (250 ms at 1 kHz), so a twin answering every block
/// keeps the actuator driven with slack for one late drive.
const fn default_drive_timeout_periods() -> u32 {
    250
}
const fn default_keepalive_s() -> u64 {
    10
}
const fn default_connect_timeout_s() -> u64 {
    5
}
const fn default_reconnect_backoff_min_ms() -> u64 {
    250
}
const fn default_reconnect_backoff_max_ms() -> u64 {
    30_000
}
const fn default_queue_max_blocks() -> usize {
    600
}
const fn default_shutdown_flush_timeout_ms() -> u64 {
    5_000
}

impl Default for AcquisitionConfig {
    fn default() -> Self {
        Self {
            block_samples: default_block_samples(),
        }
    }
}

/// A credential. Its `Debug` never shows the value, so configs and errors can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call only where it is handed to the peer that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending field, e.g. `mqtt.keepalive_s`.
    pub field: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Everything `validate()` found wrong, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded: unreadable, or every problem in it (parse-level and
/// validation alike, with TOML paths and lines).
pub type ConfigLoadError = dtop_daemon::LoadError;

/// Why the MQTT password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading password file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("password file {path} is empty")]
    Empty { path: PathBuf },
}

impl EdgeConfig {
    /// Parses TOML text (shape only; call [`EdgeConfig::validate`] next). Reports every
    /// parse-level problem at once, not just the first.
    pub fn from_toml(text: &str) -> Result<Self, dtop_daemon::ConfigProblems> {
        dtop_daemon::parse(text, |_: &Self| Vec::new())
    }

    /// Reads, parses and validates the file at `path`, reporting every problem at once.
    pub fn load(path: &Path) -> Result<Self, ConfigLoadError> {
        dtop_daemon::load(path, |config: &Self| match config.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .0
                .into_iter()
                .map(|p| dtop_daemon::ConfigProblem::new(p.field, p.problem))
                .collect(),
        })
    }

    /// Checks every range and cross-field rule, returning all violations at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        let mut bad =
            |field: &'static str, problem: String| problems.push(ConfigProblem { field, problem });

        if self.state_dir.as_os_str().is_empty() {
            bad("state_dir", "must not be empty".into());
        }

        let s = &self.serial;
        if s.path.as_os_str().is_empty() {
            bad("serial.path", "must not be empty".into());
        }
        if s.baud == 0 {
            bad("serial.baud", "must be positive".into());
        }
        if !(10..=60_000).contains(&s.hello_timeout_ms) {
            bad(
                "serial.hello_timeout_ms",
                format!("{} is outside 10..=60000", s.hello_timeout_ms),
            );
        }
        if !(100..=3_600_000).contains(&s.read_timeout_ms) {
            bad(
                "serial.read_timeout_ms",
                format!("{} is outside 100..=3600000", s.read_timeout_ms),
            );
        }

        let block_samples = self.acquisition.block_samples as usize;
        if block_samples == 0 {
            bad("acquisition.block_samples", "must be at least 1".into());
        } else {
            let worst = max_encoded_block_bytes(dtop_firmware::MAX_CHANNELS, block_samples);
            if worst > dtop_proto::limits::MAX_SAMPLE_BLOCK_BYTES {
                bad(
                    "acquisition.block_samples",
                    format!(
                        "{block_samples} samples × {} channels may encode to {worst} bytes, above the {} byte block limit",
                        dtop_firmware::MAX_CHANNELS,
                        dtop_proto::limits::MAX_SAMPLE_BLOCK_BYTES
                    ),
                );
            }
        }

        let m = &self.mqtt;
        for p in m.broker_keys().problems() {
            bad(p.field, p.problem);
        }
        if let Some(id) = &m.client_id {
            if id.is_empty() {
                bad(
                    "mqtt.client_id",
                    "must not be empty (omit it for the default)".into(),
                );
            } else if id.len() > 65_535 {
                bad("mqtt.client_id", "is longer than MQTT allows".into());
            }
        }
        if !(1..=65_535).contains(&m.keepalive_s) {
            bad(
                "mqtt.keepalive_s",
                format!("{} is outside 1..=65535", m.keepalive_s),
            );
        }
        if !(1..=300).contains(&m.connect_timeout_s) {
            bad(
                "mqtt.connect_timeout_s",
                format!("{} is outside 1..=300", m.connect_timeout_s),
            );
        }
        if m.password_file.is_some() && m.username.is_none() {
            bad("mqtt.password_file", "needs mqtt.username as well".into());
        }
        if m.reconnect_backoff_min_ms == 0 {
            bad("mqtt.reconnect_backoff_min_ms", "must be positive".into());
        }
        if m.reconnect_backoff_max_ms < m.reconnect_backoff_min_ms {
            bad(
                "mqtt.reconnect_backoff_max_ms",
                format!(
                    "{} is below reconnect_backoff_min_ms ({})",
                    m.reconnect_backoff_max_ms, m.reconnect_backoff_min_ms
                ),
            );
        }
        if m.queue_max_blocks == 0 {
            bad("mqtt.queue_max_blocks", "must be at least 1".into());
        }
        if m.shutdown_flush_timeout_ms > 600_000 {
            bad(
                "mqtt.shutdown_flush_timeout_ms",
                format!("{} is above 600000", m.shutdown_flush_timeout_ms),
            );
        }

        let a = &self.actuator;
        if !(a.max_force_n.is_finite() && a.max_force_n > 0.0) {
            bad(
                "actuator.max_force_n",
                format!("{} is not a positive finite force", a.max_force_n),
            );
        }
        if !(a.max_slew_n_per_s.is_finite() && a.max_slew_n_per_s > 0.0) {
            bad(
                "actuator.max_slew_n_per_s",
                format!("{} is not a positive finite slew rate", a.max_slew_n_per_s),
            );
        }
        if !(1..=MAX_DRIVE_TIMEOUT_PERIODS).contains(&a.drive_timeout_periods) {
            bad(
                "actuator.drive_timeout_periods",
                format!(
                    "{} is outside 1..={MAX_DRIVE_TIMEOUT_PERIODS}",
                    a.drive_timeout_periods
                ),
            );
        }

        let sp = &self.spool;
        if !(sp.capacity_s.is_finite() && sp.capacity_s > 0.0) {
            bad(
                "spool.capacity_s",
                format!("{} is not a positive finite duration", sp.capacity_s),
            );
        }
        if !(1..=3_600_000).contains(&sp.fsync_interval_ms) {
            bad(
                "spool.fsync_interval_ms",
                format!("{} is outside 1..=3600000", sp.fsync_interval_ms),
            );
        }
        if !(sp.stall_s.is_finite() && (0.1..=86_400.0).contains(&sp.stall_s)) {
            bad(
                "spool.stall_s",
                format!("{} is outside 0.1..=86400", sp.stall_s),
            );
        }
        if sp.replay_blocks_per_s == 0 {
            bad("spool.replay_blocks_per_s", "must be at least 1".into());
        }

        self.modbus.validate_into(&mut problems);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// The MQTT client id: the configured one, else `dtop-edge-{rig_id}`.
    pub fn mqtt_client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("dtop-edge-{}", self.rig_id))
    }

    /// Path of the persisted MQTT session counter.
    pub fn session_path(&self) -> PathBuf {
        self.state_dir.join("session")
    }

    /// Path of the highest owner epoch seen (`crate::fence`).
    pub fn owner_epoch_path(&self) -> PathBuf {
        self.state_dir.join(crate::fence::OWNER_EPOCH_FILE_NAME)
    }

    /// Path of the persisted next block sequence number.
    pub fn next_seq_path(&self) -> PathBuf {
        self.state_dir.join("next_seq")
    }

    /// The spool directory: `[spool] dir`, else `{state_dir}/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("spool"))
    }
}

impl SerialConfig {
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.hello_timeout_ms)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
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

    /// Reads the password file, if one is configured.
    pub fn read_password(&self) -> Result<Option<Secret>, SecretError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.clone(),
            source,
        })?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(SecretError::Empty { path: path.clone() });
        }
        Ok(Some(Secret::new(value)))
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_s)
    }

    pub fn reconnect_backoff_min(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_min_ms)
    }

    pub fn reconnect_backoff_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_max_ms)
    }

    pub fn shutdown_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_flush_timeout_ms)
    }
}

/// The shipped example configuration, printed by `--print-default-config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../dtop-edge.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> EdgeConfig {
        EdgeConfig::from_toml(EXAMPLE_CONFIG)
            .unwrap_or_else(|e| panic!("example config does not parse: {e}"))
    }

    #[test]
    fn example_config_parses_and_validates() {
        let config = example();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.rig_id.as_str(), "southampton-3s");
    }

    #[test]
    fn minimal_config_takes_the_documented_defaults() {
        let config = EdgeConfig::from_toml(
            r#"
            rig_id = "r1"
            [serial]
            path = "/dev/ttyACM0"
            [mqtt]
            host = "broker"
            [actuator]
            max_force_n = 10.0
            max_slew_n_per_s = 1000.0
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/dtop-edge"));
        assert_eq!(config.serial.baud, 921_600);
        assert_eq!(config.acquisition.block_samples, 100);
        assert_eq!(config.mqtt.broker_list().to_string(), "broker:1883");
        assert_eq!(config.mqtt_client_id(), "dtop-edge-r1");
        assert_eq!(config.actuator.drive_timeout_periods, 250);
        assert_eq!(
            config.session_path(),
            PathBuf::from("/var/lib/dtop-edge/session")
        );
        assert_eq!(
            config.spool_dir(),
            PathBuf::from("/var/lib/dtop-edge/spool")
        );
        assert_eq!(config.spool.full(), dtop_spool::FullPolicy::DropOldest);
        assert_eq!(
            config.spool.fsync(),
            dtop_spool::FsyncPolicy::IntervalMs(1000)
        );
        assert_eq!(config.spool.stall(), Duration::from_secs(10));
    }

    #[test]
    fn sizes_the_spool_from_seconds_of_rig_data_at_the_worst_case_block_size() {
        let spool = SpoolSection {
            capacity_s: 600.0,
            ..SpoolSection::default()
        };
        // 8 channels x 1 kHz in 100-sample blocks: 6000 blocks of at most 256 + 8 x 524 bytes,
        // plus a 16-byte frame header each.
        assert_eq!(
            spool.capacity_bytes(1000.0, 8, 100),
            6000 * (256 + 8 * 524 + 16)
        );
        let tiny = SpoolSection {
            capacity_s: 0.001,
            ..SpoolSection::default()
        };
        assert_eq!(
            tiny.capacity_bytes(1000.0, 1, 100),
            dtop_spool::spool::MIN_CAPACITY_BYTES
        );
    }

    #[test]
    fn reports_every_bad_spool_setting() {
        let mut config = example();
        config.spool.capacity_s = 0.0;
        config.spool.fsync_interval_ms = 0;
        config.spool.stall_s = f64::NAN;
        config.spool.replay_blocks_per_s = 0;
        let errors = config.validate().err().map(|e| e.0).unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "spool.capacity_s",
                "spool.fsync_interval_ms",
                "spool.stall_s",
                "spool.replay_blocks_per_s"
            ]
        );
    }

    #[test]
    fn takes_a_failover_list_of_brokers_instead_of_one_host() {
        let text = |mqtt: &str| {
            format!(
                "rig_id = \"r1\"\n[serial]\npath = \"/dev/ttyACM0\"\n[mqtt]\n{mqtt}\n\
                 [actuator]\nmax_force_n = 10.0\nmax_slew_n_per_s = 1000.0\n"
            )
        };
        let config = EdgeConfig::from_toml(&text(
            "brokers = [\"127.0.0.1:4223\", \"127.0.0.1:4224\", \"[::1]:4225\"]",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(
            config.mqtt.broker_list().to_string(),
            "127.0.0.1:4223,127.0.0.1:4224,[::1]:4225"
        );
        let config = EdgeConfig::from_toml(&text(
            "host = \"b\"\nport = 1\nbrokers = [\"a:1\", \"a:1\"]",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let errors = config.validate().err().map(|e| e.0).unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["mqtt.brokers", "mqtt.brokers"]);
        let config = EdgeConfig::from_toml(&text("")).unwrap_or_else(|e| panic!("{e}"));
        let errors = config.validate().err().map(|e| e.0).unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "mqtt.host");
        assert!(EdgeConfig::from_toml(&text("brokers = [\"a\"]")).is_err());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut config = example();
        config.serial.baud = 0;
        config.mqtt.reconnect_backoff_max_ms = 1;
        config.actuator.max_force_n = f64::NAN;
        let errors = config
            .validate()
            .err()
            .unwrap_or_else(|| panic!("three problems went unnoticed"));
        let fields: Vec<_> = errors.0.iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "serial.baud",
                "mqtt.reconnect_backoff_max_ms",
                "actuator.max_force_n"
            ]
        );
        let text = errors.to_string();
        assert!(text.starts_with("3 configuration problem(s):"), "{text}");
    }

    #[test]
    fn refuses_a_zero_drive_timeout() {
        let mut config = example();
        config.actuator.drive_timeout_periods = 0;
        let errors = config
            .validate()
            .err()
            .unwrap_or_else(|| panic!("a zero drive timeout was accepted"));
        let fields: Vec<_> = errors.0.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["actuator.drive_timeout_periods"]);
    }

    #[test]
    fn refuses_a_block_that_cannot_fit_the_size_limit() {
        let mut config = example();
        config.acquisition.block_samples = 100_000;
        let errors = config
            .validate()
            .err()
            .unwrap_or_else(|| panic!("oversized block accepted"));
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].field, "acquisition.block_samples");
    }

    #[test]
    fn refuses_unknown_fields_and_bad_rig_ids() {
        let unknown = EXAMPLE_CONFIG.replace("[serial]", "[serial]\nbaud_rate = 9600");
        assert!(EdgeConfig::from_toml(&unknown).is_err());
        let bad_id = EXAMPLE_CONFIG.replace("rig_id = \"southampton-3s\"", "rig_id = \"a/b\"");
        assert_ne!(bad_id, EXAMPLE_CONFIG);
        assert!(EdgeConfig::from_toml(&bad_id).is_err());
    }

    #[test]
    fn secrets_never_print_their_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn reads_the_password_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        let mut config = example();
        config.mqtt.username = Some("edge".into());
        config.mqtt.password_file = Some(path);
        let pw = config
            .mqtt
            .read_password()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pw.as_ref().map(Secret::expose), Some("s3cret"));
    }
}
