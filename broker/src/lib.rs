//! DTOP's MQTT broker: an authorizing front that speaks MQTT 3.1.1 and 5 on every listener
//! (TCP, TLS, WebSocket), authenticates users (argon2id credentials or client certificates),
//! checks every PUBLISH, SUBSCRIBE and will against role rules, keeps MQTT session semantics,
//! and hands messages to rumqttd's router (through its public local-link API) for fan-out and
//! retained messages. Sized so that a full sample block
//! (`dtop_proto::limits::MAX_MQTT_PACKET_BYTES`) fits in one packet.
//!
//! The binary `dtop-broker` is a thin shell over [`load_config`] and [`spawn`]; `dtop up` and the
//! integration tests start the same broker in-process through [`spawn`].
//!
//! # Layout
//! - [`config`]: the TOML shape ([`BrokerConfig`]), named defaults and whole-config validation.
//! - [`load`]: reading a file, reporting unknown keys together with invalid values.
//! - [`acl`], [`credentials`], [`secret`]: re-exported from `dtop-auth`, which owns identities,
//!   roles and the credentials file for the broker and the API server alike.
//! - [`front`]: listeners, connections, sessions, the MQTT wire model, router links.
//! - [`metrics`]: counters and the Prometheus endpoint.
//! - [`translate`]: the pure mapping from [`BrokerConfig`] to rumqttd's router config.
//! - [`probe`]: a readiness probe (one MQTT CONNECT/CONNACK exchange over std TCP).
//! - [`run`]: loading, binding and starting everything on a named thread.
//!
//! # What we add over rumqttd 0.20 (see `tests/conformance.rs`)
//! - One port serves MQTT 3.1.1 and 5; keep-alive 0 is accepted; delivery QoS is
//!   min(published, granted); MQTT 5 Session Expiry and No Local are honoured; an oversize
//!   PUBLISH is refused on its own (5: 0x97) instead of dropping the connection; over the
//!   connection limit a client gets a refusing CONNACK.
//! - MQTT 5 Maximum Packet Size both ways (CONNACK announces ours; a PUBLISH too large for a
//!   client is discarded for it alone) and Message Expiry (expired messages are not delivered,
//!   forwarded intervals count down); see `tests/paho_suites.rs` for the Paho suites.
//! - A repeated SUBSCRIBE re-sends retained messages (read through a one-shot router link), and
//!   an empty non-retained PUBLISH no longer clears the topic's retained message (rumqttd treats
//!   every empty payload as a retained delete; it crosses the router as a placeholder).
//! - Under overload, a subscriber more than the router's per-filter log (`SEGMENTS_PER_FILTER`,
//!   about 68 MiB) behind is skipped ahead by rumqttd, at QoS 0 or 1: every front link reads the
//!   router at QoS 0, so the log's depth, not the session's queue, bounds how far a session may
//!   fall behind a blast before messages are lost.
//! - The broker has no shutdown: rumqttd's router cannot be stopped, so everything lives until
//!   the process exits.

pub mod config;
/// Roles and topic rules, re-exported from `dtop-auth` (shared with the API server).
pub use dtop_auth::acl;
/// The credentials file, re-exported from `dtop-auth`.
pub use dtop_auth::credentials;
/// The redacted secret newtype, re-exported from `dtop-auth`.
pub use dtop_auth::secret;
pub mod front;
pub mod load;
pub mod metrics;
pub mod probe;
pub mod run;
pub mod translate;

pub use acl::{Acl, Identity, RigScope, Role, RoleRules, RolesConfig};
pub use config::{
    AuthConfig, BrokerConfig, ConfigErrors, ConfigProblem, LimitsConfig, ListenerConfig,
    MetricsConfig, RuntimeConfig, TlsConfig,
};
pub use load::{ConfigError, load_config, parse_config};
pub use metrics::{Metrics, Refusal};
pub use run::{BrokerError, BrokerHandle, STARTUP_TIMEOUT, reserve_loopback_addr, spawn};
pub use secret::Secret;
pub use translate::rumqttd_config;

/// The documented example configuration shipped next to the crate. Its values are exactly
/// [`BrokerConfig::default()`] (a test checks this), so `--print-default-config` prints it.
pub const EXAMPLE_CONFIG_TOML: &str = include_str!("../dtop-broker.example.toml");
