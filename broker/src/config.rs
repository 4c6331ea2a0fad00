//! Owns the broker's configuration shape, its named defaults and whole-config validation.
//! Knows nothing about files (see `load`) or about rumqttd's own schema (see `translate`).
//! Role rules live in `acl`; this file only embeds them under `[auth]`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use serde::{Deserialize, Serialize};

use crate::acl::RolesConfig;

/// Largest "remaining length" an MQTT packet can declare (MQTT 3.1.1 §2.2.3, MQTT 5 §1.5.5).
pub const MQTT_MAX_REMAINING_LENGTH_BYTES: usize = 268_435_455;

/// Upper bound for `limits.max_connections`: rumqttd's router preallocates slots for every
/// allowed connection, so a typo like `10000000` would cost memory at startup.
pub const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// Whole broker configuration: `dtop-broker --config PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Plain-TCP MQTT listener. Serves MQTT 3.1.1 and MQTT 5 on the same port.
    #[serde(default)]
    pub mqtt: ListenerConfig,
    /// Optional second plain-TCP listener (kept from the rumqttd era, when MQTT 5 needed its
    /// own port). It serves both protocol versions too. Off when the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_v5: Option<ListenerConfig>,
    /// Optional MQTT over TLS listener (both protocol versions), with optional client
    /// certificates. Off when the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Optional MQTT over WebSocket listener (subprotocol `mqtt`) for browser dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<ListenerConfig>,
    /// Optional Prometheus metrics endpoint (`GET /metrics`). Off when the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Limits applied to every connection on every listener.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Threads the broker runs on.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Authentication and authorization. Without it every client is anonymous and may do
    /// anything (the broker logs a warning); with it, unknown users are refused and every
    /// publish, subscription and will is checked against the role's rules (default deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to accept clients on. Port 0 picks a free port; the running broker
    /// reports it (`BrokerHandle::mqtt_addr`).
    pub listen: SocketAddr,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: default_mqtt_listen(),
        }
    }
}

/// MQTT over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address and port of the TLS listener (MQTT's registered TLS port is 8883).
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// PEM file with the server certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file of CA certificates that sign client certificates. When set, clients must
    /// present a certificate chaining to one of them (mTLS), and its subject CN (or first DNS
    /// SAN) names the user in the credentials file; no password is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// The metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on. Loopback by default: the metrics name clients.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

/// Authentication and authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Credentials file (`username:role:rigs:argon2id-hash` per line), managed with
    /// `dtop-broker passwd --file PATH add|remove USER`.
    pub credentials_file: PathBuf,
    /// Topic rules per role; roles left out keep DTOP's built-in rules.
    #[serde(default)]
    pub roles: RolesConfig,
}

/// Per-connection limits, shared by all listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest MQTT packet a client may send, bytes (counted as the packet's remaining length:
    /// everything after the fixed header). Must be at least
    /// `dtop_proto::limits::MAX_MQTT_PACKET_BYTES` so that a full sample block fits. A larger
    /// PUBLISH is refused on its own (MQTT 5: reason 0x97; 3.1.1: acknowledged and dropped);
    /// the connection stays up.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most concurrent connections across all listeners; a CONNECT beyond it is answered with
    /// a refusing CONNACK (3.1.1: 0x03 server unavailable; 5: 0x89 server busy).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most QoS 1/2 messages in flight to one client (MQTT 5 clients may ask for fewer).
    #[serde(default = "default_max_inflight_count")]
    pub max_inflight_count: usize,
    /// How long a new connection may take to send its CONNECT before it is closed, ms.
    #[serde(default = "default_connection_timeout_ms")]
    pub connection_timeout_ms: u32,
    /// Messages queued for one client beyond those in flight (while it is slow or, with a
    /// persistent session, offline). When full, the oldest queued message is dropped and
    /// counted.
    #[serde(default = "default_max_queued_messages")]
    pub max_queued_messages: usize,
    /// Most PUBLISH packets per second one client may send; 0 = unlimited. Faster clients are
    /// throttled (the broker stops reading their socket until the budget refills).
    #[serde(default = "default_max_publish_rate_hz")]
    pub max_publish_rate_hz: u32,
    /// Upper bound on a session's expiry after disconnect, s. MQTT 3.1.1 persistent sessions
    /// (clean session = 0) and MQTT 5 sessions asking for more get this.
    #[serde(default = "default_max_session_expiry_s")]
    pub max_session_expiry_s: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload_bytes(),
            max_connections: default_max_connections(),
            max_inflight_count: default_max_inflight_count(),
            connection_timeout_ms: default_connection_timeout_ms(),
            max_queued_messages: default_max_queued_messages(),
            max_publish_rate_hz: default_max_publish_rate_hz(),
            max_session_expiry_s: default_max_session_expiry_s(),
        }
    }
}

/// Threads the broker runs on. rumqttd's router always has one thread of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads serving client connections (the front: sockets, ACL checks, sessions). With 1,
    /// every connection runs on one event-loop thread beside the router thread: each message
    /// costs the fewest thread wake-ups, which is what keeps latency low when the CPU is
    /// oversubscribed. More threads add throughput only with many busy clients.
    #[serde(default = "default_front_threads")]
    pub front_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            front_threads: default_front_threads(),
        }
    }
}

/// Upper bound for `runtime.front_threads`.
pub const MAX_FRONT_THREADS: usize = 64;

/// One: on DTOP's 2-core targets the router thread and one front thread fill the machine,
/// and a second front thread only adds wake-ups between threads (measured in BENCHMARKS.md).
pub const fn default_front_threads() -> usize {
    1
}

/// `127.0.0.1:1883`: MQTT's registered port, loopback until an operator opts into exposure.
pub const fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883))
}

/// `127.0.0.1:8883`: MQTT's registered TLS port.
pub const fn default_tls_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8883))
}

/// `127.0.0.1:9883`: loopback, next to the MQTT ports.
pub const fn default_metrics_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9883))
}

/// Exactly the largest packet DTOP clients may publish.
pub const fn default_max_payload_bytes() -> usize {
    MAX_MQTT_PACKET_BYTES
}

/// Generous for a lab: a handful of rigs, twins and dashboards.
pub const fn default_max_connections() -> usize {
    1000
}

/// rumqttd's own window, and what DTOP clients use.
pub const fn default_max_inflight_count() -> usize {
    100
}

/// Long enough for a client on a slow link, short enough that idle sockets cannot pile up.
pub const fn default_connection_timeout_ms() -> u32 {
    5000
}

/// About 10 s of one rig's sample blocks plus its commands.
pub const fn default_max_queued_messages() -> usize {
    1000
}

/// Unlimited: DTOP's twin legitimately publishes drives at kHz rates.
pub const fn default_max_publish_rate_hz() -> u32 {
    0
}

/// One day: an edge that was away overnight resumes its session.
pub const fn default_max_session_expiry_s() -> u32 {
    86_400
}

impl BrokerConfig {
    /// Every listener as `(config key, address)`, in a fixed order.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut all = vec![("mqtt.listen", self.mqtt.listen)];
        if let Some(v5) = &self.mqtt_v5 {
            all.push(("mqtt_v5.listen", v5.listen));
        }
        if let Some(tls) = &self.tls {
            all.push(("tls.listen", tls.listen));
        }
        if let Some(ws) = &self.websocket {
            all.push(("websocket.listen", ws.listen));
        }
        if let Some(metrics) = &self.metrics {
            all.push(("metrics.listen", metrics.listen));
        }
        all
    }

    /// Checks ranges and cross-field rules, returning every problem found (not just the first).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();

        let listeners = self.listeners();
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other_key, other)) = listeners[..i]
                .iter()
                .find(|(_, other)| addrs_collide(*addr, *other))
            {
                problems.push(ConfigProblem::new(
                    *key,
                    format!("{addr} collides with {other_key} {other}"),
                ));
            }
        }

        let limits = &self.limits;
        if limits.max_payload_bytes < MAX_MQTT_PACKET_BYTES {
            problems.push(ConfigProblem::new(
                "limits.max_payload_bytes",
                format!(
                    "{} is below {MAX_MQTT_PACKET_BYTES}, the largest packet DTOP clients \
                     publish (a full sample block); the broker would refuse them",
                    limits.max_payload_bytes
                ),
            ));
        } else if limits.max_payload_bytes > MQTT_MAX_REMAINING_LENGTH_BYTES {
            problems.push(ConfigProblem::new(
                "limits.max_payload_bytes",
                format!(
                    "{} exceeds {MQTT_MAX_REMAINING_LENGTH_BYTES}, the largest packet MQTT \
                     can encode",
                    limits.max_payload_bytes
                ),
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&limits.max_connections) {
            problems.push(ConfigProblem::new(
                "limits.max_connections",
                format!(
                    "{} is outside 1..={MAX_CONNECTIONS_LIMIT}",
                    limits.max_connections
                ),
            ));
        }
        let max_u16 = usize::from(u16::MAX);
        if !(1..=max_u16).contains(&limits.max_inflight_count) {
            problems.push(ConfigProblem::new(
                "limits.max_inflight_count",
                format!("{} is outside 1..={max_u16}", limits.max_inflight_count),
            ));
        }
        if !(1..=u32::from(u16::MAX)).contains(&limits.connection_timeout_ms) {
            problems.push(ConfigProblem::new(
                "limits.connection_timeout_ms",
                format!(
                    "{} is outside 1..={}",
                    limits.connection_timeout_ms,
                    u16::MAX
                ),
            ));
        }
        if !(1..=1_000_000).contains(&limits.max_queued_messages) {
            problems.push(ConfigProblem::new(
                "limits.max_queued_messages",
                format!("{} is outside 1..=1000000", limits.max_queued_messages),
            ));
        }
        if !(1..=MAX_FRONT_THREADS).contains(&self.runtime.front_threads) {
            problems.push(ConfigProblem::new(
                "runtime.front_threads",
                format!(
                    "{} is outside 1..={MAX_FRONT_THREADS}",
                    self.runtime.front_threads
                ),
            ));
        }
        if let Some(auth) = &self.auth {
            for (key, message) in auth.roles.problems() {
                problems.push(ConfigProblem::new(key, message));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// Two listeners collide when they share a port and one address covers the other
/// (an unspecified address binds every interface). Port 0 never collides: each bind picks its
/// own free port.
fn addrs_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// One problem with one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending key (`limits.max_connections`); empty when the problem is
    /// about the document as a whole.
    pub key: String,
    /// What is wrong and, where it helps, why the rule exists.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub(crate) Vec<ConfigProblem>);

impl ConfigErrors {
    /// Wraps a list of problems; `None` when there are none, so an empty error cannot exist.
    pub fn from_problems(problems: Vec<ConfigProblem>) -> Option<Self> {
        if problems.is_empty() {
            None
        } else {
            Some(Self(problems))
        }
    }

    /// The problems, in the order they were found.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// Consumes the list.
    pub fn into_problems(self) -> Vec<ConfigProblem> {
        self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(f, "{count} problem{}:", if count == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(errors: &ConfigErrors) -> Vec<&str> {
        errors.problems().iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn defaults_are_valid_and_listen_on_loopback_1883() {
        let config = BrokerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.mqtt.listen, "127.0.0.1:1883".parse().unwrap());
        assert!(config.metrics.is_none(), "metrics must be off by default");
        assert!(config.auth.is_none());
        assert!(config.mqtt_v5.is_none());
        assert_eq!(config.limits.max_payload_bytes, MAX_MQTT_PACKET_BYTES);
    }

    #[test]
    fn reports_every_limit_problem_at_once() {
        let config = BrokerConfig {
            limits: LimitsConfig {
                max_payload_bytes: 1024,
                max_connections: 0,
                max_inflight_count: 0,
                connection_timeout_ms: 70_000,
                max_queued_messages: 0,
                ..LimitsConfig::default()
            },
            runtime: RuntimeConfig { front_threads: 0 },
            ..BrokerConfig::default()
        };
        let errors = config.validate().unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                "limits.max_payload_bytes",
                "limits.max_connections",
                "limits.max_inflight_count",
                "limits.connection_timeout_ms",
                "limits.max_queued_messages",
                "runtime.front_threads",
            ]
        );
    }

    #[test]
    fn refuses_payload_limit_above_what_mqtt_can_encode() {
        let mut config = BrokerConfig::default();
        config.limits.max_payload_bytes = MQTT_MAX_REMAINING_LENGTH_BYTES + 1;
        assert_eq!(
            keys(&config.validate().unwrap_err()),
            ["limits.max_payload_bytes"]
        );
    }

    #[test]
    fn refuses_colliding_listeners_but_allows_port_zero_twice() {
        let config = BrokerConfig {
            mqtt: ListenerConfig {
                listen: "0.0.0.0:1883".parse().unwrap(),
            },
            mqtt_v5: Some(ListenerConfig {
                listen: "127.0.0.1:1883".parse().unwrap(),
            }),
            metrics: Some(MetricsConfig {
                listen: "127.0.0.1:1883".parse().unwrap(),
            }),
            ..BrokerConfig::default()
        };
        let errors = config.validate().unwrap_err();
        assert_eq!(keys(&errors), ["mqtt_v5.listen", "metrics.listen"]);
        let zeros = BrokerConfig {
            mqtt: ListenerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            },
            websocket: Some(ListenerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            }),
            ..BrokerConfig::default()
        };
        assert_eq!(zeros.validate(), Ok(()));
    }

    #[test]
    fn reports_malformed_role_patterns() {
        let mut roles = RolesConfig::default();
        roles.twin.subscribe.push("dtop/#/x".to_owned());
        let config = BrokerConfig {
            auth: Some(AuthConfig {
                credentials_file: "/etc/dtop/passwd".into(),
                roles,
            }),
            ..BrokerConfig::default()
        };
        assert_eq!(
            keys(&config.validate().unwrap_err()),
            ["auth.roles.twin.subscribe"]
        );
    }

    #[test]
    fn listeners_on_different_ips_with_the_same_port_do_not_collide() {
        assert!(!addrs_collide(
            "127.0.0.1:1883".parse().unwrap(),
            "127.0.0.2:1883".parse().unwrap()
        ));
        assert!(addrs_collide(
            "[::]:1883".parse().unwrap(),
            "127.0.0.1:1883".parse().unwrap()
        ));
    }

    #[test]
    fn error_list_names_every_key() {
        let errors = ConfigErrors::from_problems(vec![
            ConfigProblem::new("a.b", "bad"),
            ConfigProblem::new("", "whole document"),
        ])
        .unwrap();
        assert_eq!(
            errors.to_string(),
            "2 problems:\n  - a.b: bad\n  - whole document"
        );
        assert!(ConfigErrors::from_problems(Vec::new()).is_none());
    }
}
