//! The process skeleton every DTOP daemon shares, written once: loading a TOML config with
//! every problem reported at once (exit 64 before a device or socket is touched), signals and
//! the drain, sd_notify (READY, STOPPING, WATCHDOG), the `/metrics` endpoint, and jittered
//! backoff for reconnects. Edge, twin, broker, worker and API server all use it.
//!
//! # Layout
//! - [`config`]: reading the file, collecting every shape error ([`config::collect`]), merging
//!   the daemon's own `validate()` problems, and the exit code for a refused config.
//! - [`signals`]: SIGINT/SIGTERM, and [`signals::run_until_signal`], the drain with a grace
//!   period and a second-signal escape.
//! - [`notify`]: systemd `Type=notify` READY/STOPPING and the watchdog.
//! - [`metrics`]: the Prometheus `GET /metrics` endpoint over a daemon-supplied renderer.
//! - [`backoff`]: jittered exponential backoff as a pure calculator.
//! - [`failover`]: broker failover lists (`[mqtt] brokers = ["host:port", ...]`), their check,
//!   and the round-robin choice of the next broker, pure.
//! - [`subscriptions`]: which SUBSCRIBE each SUBACK answers and when to ask again for the
//!   filters a broker refused, pure.
//! - [`entry`]: the common flags, logging, config loading with `--check`, and the runtime with
//!   the drain, so each daemon's `main` is a few lines.
//! - [`tls`]: PEM files to a rustls acceptor (broker MQTT/TLS, server HTTPS).
//! - [`testing`]: for the daemons' integration tests, the check that a binary refuses a bad
//!   config with that exit code and lists every problem.

pub mod backoff;
pub mod config;
pub mod entry;
pub mod failover;
pub mod metrics;
pub mod notify;
pub mod signals;
pub mod subscriptions;
pub mod testing;
pub mod tls;

pub use backoff::Backoff;
pub use config::{ConfigProblem, ConfigProblems, EXIT_CONFIG, LoadError, load, parse};
pub use failover::{BrokerAddr, BrokerKeys, BrokerList, Failover, Retry};
pub use signals::{Ending, Signals, run_until_signal};
pub use subscriptions::Subscriptions;
