//! Owns the broker's configuration shape, its named defaults and whole-config validation.
//! Knows nothing about files (see `load`) or about rumqttd's own schema (see `translate`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use serde::{Deserialize, Serialize};

/// Largest "remaining length" an MQTT packet can declare (MQTT 3.1.1 §2.2.3, MQTT 5 §1.5.5).
pub const MQTT_MAX_REMAINING_LENGTH_BYTES: usize = 268_435_455;

/// Upper bound for `limits.max_connections`: rumqttd preallocates router slots for every
/// allowed connection, so a typo like `10000000` would cost memory at startup.
pub const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// Whole broker configuration: `dtop-broker --config PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener. DTOP's own clients (edge, twin, cli) speak 3.1.1 here.
    #[serde(default)]
    pub mqtt: ListenerConfig,
    /// Optional MQTT 5 listener. rumqttd serves one protocol version per listener, so MQTT 5
    /// clients need their own port. Off when the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_v5: Option<ListenerConfig>,
    /// Limits applied to every connection on every listener.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// rumqttd's HTTP debug console. It has no authentication, so it is off unless this section
    /// is present, and it may only listen on a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
}

/// One MQTT listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to accept MQTT clients on. Port 0 is refused: rumqttd cannot report
    /// which port it bound, so no client could find it.
    pub listen: SocketAddr,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: default_mqtt_listen(),
        }
    }
}

/// Per-connection limits, shared by all listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest MQTT packet a client may send, bytes (counted as the packet's remaining length:
    /// everything after the fixed header). Must be at least
    /// `dtop_proto::limits::MAX_MQTT_PACKET_BYTES` so that a full sample block fits. The
    /// router's per-subscription-filter backlog is sized from this value.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most concurrent MQTT connections across all listeners; further CONNECTs are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most packets read from one connection in one batch before they are handed to the router.
    /// Note: rumqttd caps the broker-to-client QoS 1/2 window at 100 regardless of this value.
    #[serde(default = "default_max_inflight_count")]
    pub max_inflight_count: usize,
    /// How long a new TCP connection may take to send its CONNECT before it is dropped, ms.
    /// 1..=65535, because rumqttd stores it as a `u16`.
    #[serde(default = "default_connection_timeout_ms")]
    pub connection_timeout_ms: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload_bytes(),
            max_connections: default_max_connections(),
            max_inflight_count: default_max_inflight_count(),
            connection_timeout_ms: default_connection_timeout_ms(),
        }
    }
}

/// rumqttd's HTTP debug console (router state, subscriptions, connected clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address to serve the console on. Must be loopback (127.0.0.0/8 or ::1): the console has
    /// no authentication and reveals every client id and subscription.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: default_console_listen(),
        }
    }
}

/// `127.0.0.1:1883`: MQTT's registered port, loopback until an operator opts into exposure.
pub const fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883))
}

/// `127.0.0.1:3030`, rumqttd's customary console port.
pub const fn default_console_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3030))
}

/// Exactly the largest packet DTOP clients may publish.
pub const fn default_max_payload_bytes() -> usize {
    MAX_MQTT_PACKET_BYTES
}

/// Generous for a lab: a handful of rigs, twins and dashboards.
pub const fn default_max_connections() -> usize {
    1000
}

/// rumqttd's own default batch size.
pub const fn default_max_inflight_count() -> usize {
    100
}

/// Long enough for a client on a slow link, short enough that idle sockets cannot pile up.
pub const fn default_connection_timeout_ms() -> u32 {
    5000
}

impl BrokerConfig {
    /// Checks ranges and cross-field rules, returning every problem found (not just the first).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();

        check_listen_port("mqtt.listen", self.mqtt.listen, &mut problems);
        if let Some(v5) = &self.mqtt_v5 {
            check_listen_port("mqtt_v5.listen", v5.listen, &mut problems);
            if addrs_collide(v5.listen, self.mqtt.listen) {
                problems.push(ConfigProblem::new(
                    "mqtt_v5.listen",
                    format!(
                        "{} collides with mqtt.listen {}",
                        v5.listen, self.mqtt.listen
                    ),
                ));
            }
        }
        if let Some(console) = &self.console {
            check_listen_port("console.listen", console.listen, &mut problems);
            if !console.listen.ip().is_loopback() {
                problems.push(ConfigProblem::new(
                    "console.listen",
                    format!(
                        "{} is not a loopback address; the console has no authentication, \
                         so it may only listen on 127.0.0.0/8 or ::1",
                        console.listen
                    ),
                ));
            }
            let mqtt_listeners = std::iter::once(("mqtt.listen", self.mqtt.listen)).chain(
                self.mqtt_v5
                    .as_ref()
                    .map(|v5| ("mqtt_v5.listen", v5.listen)),
            );
            for (key, addr) in mqtt_listeners {
                if addrs_collide(console.listen, addr) {
                    problems.push(ConfigProblem::new(
                        "console.listen",
                        format!("{} collides with {key} {addr}", console.listen),
                    ));
                }
            }
        }

        let limits = &self.limits;
        if limits.max_payload_bytes < MAX_MQTT_PACKET_BYTES {
            problems.push(ConfigProblem::new(
                "limits.max_payload_bytes",
                format!(
                    "{} is below {MAX_MQTT_PACKET_BYTES}, the largest packet DTOP clients \
                     publish (a full sample block); the broker would disconnect them",
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
                    "{} is outside 1..={} (rumqttd stores it as u16 milliseconds)",
                    limits.connection_timeout_ms,
                    u16::MAX
                ),
            ));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

fn check_listen_port(key: &str, addr: SocketAddr, problems: &mut Vec<ConfigProblem>) {
    if addr.port() == 0 {
        problems.push(ConfigProblem::new(
            key,
            format!("{addr} uses port 0; rumqttd cannot report the port it binds, so name a port"),
        ));
    }
}

/// Two listeners collide when they share a port and one address covers the other
/// (an unspecified address binds every interface).
fn addrs_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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
        assert!(config.console.is_none(), "console must be off by default");
        assert!(config.mqtt_v5.is_none());
        assert_eq!(config.limits.max_payload_bytes, MAX_MQTT_PACKET_BYTES);
    }

    #[test]
    fn refuses_non_loopback_console() {
        for listen in ["0.0.0.0:3030", "192.168.1.10:3030", "[::]:3030"] {
            let config = BrokerConfig {
                console: Some(ConsoleConfig {
                    listen: listen.parse().unwrap(),
                }),
                ..BrokerConfig::default()
            };
            let errors = config.validate().unwrap_err();
            assert_eq!(keys(&errors), ["console.listen"], "{listen}");
        }
    }

    #[test]
    fn accepts_loopback_console_on_v4_and_v6() {
        for listen in ["127.0.0.1:3030", "127.0.0.2:3030", "[::1]:3030"] {
            let config = BrokerConfig {
                console: Some(ConsoleConfig {
                    listen: listen.parse().unwrap(),
                }),
                ..BrokerConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{listen}");
        }
    }

    #[test]
    fn reports_every_limit_problem_at_once() {
        let config = BrokerConfig {
            limits: LimitsConfig {
                max_payload_bytes: 1024,
                max_connections: 0,
                max_inflight_count: 0,
                connection_timeout_ms: 70_000,
            },
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
    fn refuses_port_zero_and_colliding_listeners() {
        let config = BrokerConfig {
            mqtt: ListenerConfig {
                listen: "0.0.0.0:1883".parse().unwrap(),
            },
            mqtt_v5: Some(ListenerConfig {
                listen: "127.0.0.1:1883".parse().unwrap(),
            }),
            console: Some(ConsoleConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            }),
            ..BrokerConfig::default()
        };
        let errors = config.validate().unwrap_err();
        assert_eq!(keys(&errors), ["mqtt_v5.listen", "console.listen"]);
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
