//! DTOP's MQTT broker: an embedded rumqttd configured from DTOP's own TOML and sized so that a
//! full sample block (`dtop_proto::limits::MAX_MQTT_PACKET_BYTES`) fits in one packet.
//!
//! The binary `dtop-broker` is a thin shell over [`load_config`] and [`spawn`]; `dtop up` and the
//! integration tests start the same broker in-process through [`spawn`].
//!
//! # Layout
//! - [`config`]: the TOML shape ([`BrokerConfig`]), named defaults and whole-config validation.
//! - [`load`]: reading a file, reporting unknown keys together with invalid values.
//! - [`translate`]: the pure mapping from [`BrokerConfig`] to `rumqttd::Config`.
//! - [`probe`]: the readiness probe (one MQTT CONNECT/CONNACK exchange over std TCP).
//! - [`run`]: starting rumqttd on a named thread and waiting until it accepts MQTT clients.
//!
//! # What rumqttd cannot do (and what we do about it)
//! - It serves exactly one protocol version per listener (3.1.1 on `[mqtt]`, 5 on `[mqtt_v5]`).
//! - It cannot report the port it bound, so listeners must name a port (no port 0); tests
//!   reserve one with [`reserve_loopback_addr`].
//! - It has no shutdown: its threads live until the process exits.
//! - It refuses clients whose CONNECT carries keep-alive 0.

pub mod config;
pub mod load;
pub mod probe;
pub mod run;
pub mod translate;

pub use config::{
    BrokerConfig, ConfigErrors, ConfigProblem, ConsoleConfig, LimitsConfig, ListenerConfig,
};
pub use load::{ConfigError, load_config, parse_config};
pub use run::{BrokerError, BrokerHandle, STARTUP_TIMEOUT, reserve_loopback_addr, spawn};
pub use translate::rumqttd_config;

/// The documented example configuration shipped next to the crate. Its values are exactly
/// [`BrokerConfig::default()`] (a test checks this), so `--print-default-config` prints it.
pub const EXAMPLE_CONFIG_TOML: &str = include_str!("../dtop-broker.example.toml");
