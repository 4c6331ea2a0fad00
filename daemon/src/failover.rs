//! Broker failover lists, pure: the `host:port` addresses of an `[mqtt]` section's `brokers`
//! key (or its single `host`/`port`), the check that reports every problem with them, and the
//! choice of the next address after a lost or refused connection. Opens no socket and knows
//! nothing of MQTT clients: each daemon points its own client at [`Failover::current`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The MQTT port when a `[mqtt]` section gives a `host` and no `port`.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// A connection that lived at least this long counts as a success: the next failure starts a
/// fresh round. One that died sooner (a broker that accepts and then drops the client) does
/// not, so the round it interrupted goes on and ends in a backoff instead of cycling the list
/// with no wait.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// One broker's address: a host name, IPv4 address or bracketed IPv6 address (`[::1]`), and a
/// port. Written `host:port` in a config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    /// As written, brackets included for IPv6, so `format!("{host}:{port}")` resolves.
    host: String,
    port: u16,
}

impl BrokerAddr {
    /// `host` is used as given (see [`BrokerAddr::host`]); the config check refuses an empty one.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The host as written (an IPv6 address keeps its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a `host:port` string is not a broker address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerAddrError {
    #[error("{0:?} has no port; write host:port, e.g. 127.0.0.1:1883")]
    NoPort(String),
    #[error("{0:?} has an empty host")]
    EmptyHost(String),
    #[error("{0:?} has a space in it")]
    Whitespace(String),
    #[error("{0:?}: the port must be a number in 1..=65535")]
    BadPort(String),
    #[error("{0:?}: an IPv6 address goes in brackets, e.g. [::1]:1883")]
    BareIpv6(String),
}

impl FromStr for BrokerAddr {
    type Err = BrokerAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.chars().any(char::is_whitespace) {
            return Err(BrokerAddrError::Whitespace(text.to_owned()));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(BrokerAddrError::NoPort(text.to_owned()));
        };
        if host.is_empty() || host == "[]" {
            return Err(BrokerAddrError::EmptyHost(text.to_owned()));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(BrokerAddrError::BareIpv6(text.to_owned()));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self::new(host, port)),
            _ => Err(BrokerAddrError::BadPort(text.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for BrokerAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for BrokerAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The brokers a client may connect to, in the order it tries them; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerList(Vec<BrokerAddr>);

impl BrokerList {
    /// `None` for an empty list.
    pub fn new(brokers: Vec<BrokerAddr>) -> Option<Self> {
        (!brokers.is_empty()).then_some(Self(brokers))
    }

    /// One broker.
    pub fn one(broker: BrokerAddr) -> Self {
        Self(vec![broker])
    }

    /// The first one tried.
    pub fn first(&self) -> &BrokerAddr {
        // Proven safe: the constructors refuse an empty list.
        &self.0[0]
    }

    pub fn as_slice(&self) -> &[BrokerAddr] {
        &self.0
    }
}

impl fmt::Display for BrokerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

/// One thing wrong with the keys that say where to connect, at its TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerProblem {
    /// `mqtt.host`, `mqtt.port` or `mqtt.brokers`.
    pub field: &'static str,
    pub problem: String,
}

/// The keys of a `[mqtt]` section that say where to connect, as a daemon's config holds them:
/// either `host` (with `port`, default [`DEFAULT_MQTT_PORT`]) or `brokers`, never both.
#[derive(Debug, Clone, Copy)]
pub struct BrokerKeys<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub brokers: &'a [BrokerAddr],
    /// The host when neither `host` nor `brokers` is given; `None` makes one of them required.
    pub default_host: Option<&'a str>,
}

impl BrokerKeys<'_> {
    /// Every problem at once (none for a usable section).
    pub fn problems(&self) -> Vec<BrokerProblem> {
        let mut out = Vec::new();
        let mut bad = |field, problem: String| out.push(BrokerProblem { field, problem });
        let listed = !self.brokers.is_empty();
        if let Some(host) = self.host {
            if host.trim().is_empty() {
                bad("mqtt.host", "must not be empty".into());
            }
            if listed {
                bad(
                    "mqtt.brokers",
                    "give either mqtt.host (with mqtt.port) or mqtt.brokers, not both".into(),
                );
            }
        } else if !listed && self.default_host.is_none() {
            bad(
                "mqtt.host",
                "missing: give mqtt.host (one broker) or mqtt.brokers (a failover list)".into(),
            );
        }
        match self.port {
            Some(0) => bad("mqtt.port", "must not be 0".into()),
            Some(_) if listed && self.host.is_none() => bad(
                "mqtt.port",
                "goes with mqtt.host only; each entry of mqtt.brokers names its own port".into(),
            ),
            _ => {}
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if self.brokers[..i].contains(b) {
                bad("mqtt.brokers", format!("lists {b} twice"));
            }
        }
        out
    }

    /// The list to connect to. Meaningful once [`BrokerKeys::problems`] is empty; before that
    /// it still returns a list (an empty host stands in for a missing one).
    pub fn list(&self) -> BrokerList {
        if let Some(list) = BrokerList::new(self.brokers.to_vec()) {
            return list;
        }
        let host = self.host.or(self.default_host).unwrap_or_default();
        BrokerList::one(BrokerAddr::new(
            host,
            self.port.unwrap_or(DEFAULT_MQTT_PORT),
        ))
    }
}

/// What to do after a failure, beside having moved to the next address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The round has brokers left to try: connect to [`Failover::current`] at once.
    Now,
    /// Every broker of the round failed: wait the daemon's backoff first.
    AfterBackoff,
}

/// Round-robin over a [`BrokerList`]: a lost or refused connection moves to the next address;
/// a round in which every address failed ends in a backoff. With one broker every failure
/// ends a round, which is the single-`host` behaviour.
#[derive(Debug, Clone)]
pub struct Failover {
    brokers: BrokerList,
    current: usize,
    /// Failures in the current round.
    failed_in_round: usize,
    /// When the live connection was made, if there is one.
    connected_at: Option<Instant>,
    /// `failed_in_round` when it was made, resumed if it proves unstable.
    failed_before_connect: usize,
    stable_after: Duration,
}

impl Failover {
    /// Starts at the list's first broker; a connection counts as stable after
    /// [`STABLE_CONNECTION`].
    pub fn new(brokers: BrokerList) -> Self {
        Self::with_stable_after(brokers, STABLE_CONNECTION)
    }

    pub fn with_stable_after(brokers: BrokerList, stable_after: Duration) -> Self {
        Self {
            brokers,
            current: 0,
            failed_in_round: 0,
            connected_at: None,
            failed_before_connect: 0,
            stable_after,
        }
    }

    /// The broker to connect to (or connected to) now.
    pub fn current(&self) -> &BrokerAddr {
        &self.brokers.as_slice()[self.current]
    }

    pub fn brokers(&self) -> &BrokerList {
        &self.brokers
    }

    /// A CONNACK from [`Failover::current`] at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.failed_before_connect = self.failed_in_round;
    }

    /// The connection to [`Failover::current`] was lost, or could not be made, at `now`:
    /// moves to the next broker and says whether to wait first.
    pub fn failed(&mut self, now: Instant) -> Retry {
        if let Some(at) = self.connected_at.take() {
            self.failed_in_round = if now.saturating_duration_since(at) >= self.stable_after {
                0
            } else {
                self.failed_before_connect
            };
        }
        self.failed_in_round += 1;
        let n = self.brokers.as_slice().len();
        self.current = (self.current + 1) % n;
        if self.failed_in_round >= n {
            self.failed_in_round = 0;
            Retry::AfterBackoff
        } else {
            Retry::Now
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> BrokerAddr {
        s.parse().unwrap()
    }

    fn list(addrs: &[&str]) -> BrokerList {
        BrokerList::new(addrs.iter().map(|a| addr(a)).collect()).unwrap()
    }

    #[test]
    fn parses_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(addr("127.0.0.1:4223"), BrokerAddr::new("127.0.0.1", 4223));
        assert_eq!(addr("broker.lab:1883"), BrokerAddr::new("broker.lab", 1883));
        let v6 = addr("[::1]:1883");
        assert_eq!((v6.host(), v6.port()), ("[::1]", 1883));
        assert_eq!(v6.to_string(), "[::1]:1883");
    }

    #[test]
    fn refuses_addresses_without_a_usable_host_or_port() {
        use BrokerAddrError::*;
        let err = |s: &str| s.parse::<BrokerAddr>().unwrap_err();
        assert_eq!(err("broker"), NoPort("broker".into()));
        assert_eq!(err(":1883"), EmptyHost(":1883".into()));
        assert_eq!(err("[]:1883"), EmptyHost("[]:1883".into()));
        assert_eq!(err("b:0"), BadPort("b:0".into()));
        assert_eq!(err("b:65536"), BadPort("b:65536".into()));
        assert_eq!(err("b:x"), BadPort("b:x".into()));
        assert_eq!(err("::1:1883"), BareIpv6("::1:1883".into()));
        assert_eq!(err("a b:1883"), Whitespace("a b:1883".into()));
    }

    #[test]
    fn deserializes_a_list_and_serializes_it_back_as_strings() {
        #[derive(Debug, Deserialize, Serialize)]
        struct T {
            brokers: Vec<BrokerAddr>,
        }
        let t: T = toml::from_str("brokers = [\"127.0.0.1:1\", \"[::1]:2\"]").unwrap();
        assert_eq!(t.brokers, vec![addr("127.0.0.1:1"), addr("[::1]:2")]);
        assert_eq!(
            toml::to_string(&t).unwrap(),
            "brokers = [\"127.0.0.1:1\", \"[::1]:2\"]\n"
        );
        let e = toml::from_str::<T>("brokers = [\"nope\"]").unwrap_err();
        assert!(e.to_string().contains("has no port"), "{e}");
    }

    fn keys<'a>(
        host: Option<&'a str>,
        port: Option<u16>,
        brokers: &'a [BrokerAddr],
    ) -> BrokerKeys<'a> {
        BrokerKeys {
            host,
            port,
            brokers,
            default_host: None,
        }
    }

    fn fields(problems: &[BrokerProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_single_host_keeps_its_port_or_the_default() {
        assert!(keys(Some("b"), None, &[]).problems().is_empty());
        assert_eq!(keys(Some("b"), None, &[]).list(), list(&["b:1883"]));
        assert_eq!(keys(Some("b"), Some(7), &[]).list(), list(&["b:7"]));
    }

    #[test]
    fn a_list_is_used_in_its_order() {
        let brokers = [addr("a:1"), addr("b:2")];
        assert!(keys(None, None, &brokers).problems().is_empty());
        assert_eq!(keys(None, None, &brokers).list(), list(&["a:1", "b:2"]));
    }

    #[test]
    fn reports_every_conflict_at_once() {
        let brokers = [addr("a:1"), addr("b:2"), addr("a:1")];
        let p = keys(Some(" "), Some(0), &brokers).problems();
        assert_eq!(
            fields(&p),
            ["mqtt.host", "mqtt.brokers", "mqtt.port", "mqtt.brokers"]
        );
        assert!(p[3].problem.contains("a:1 twice"), "{p:?}");
        let p = keys(None, Some(1883), &brokers[..2]).problems();
        assert_eq!(fields(&p), ["mqtt.port"]);
    }

    #[test]
    fn neither_host_nor_list_takes_the_default_or_is_missing() {
        let p = keys(None, None, &[]).problems();
        assert_eq!(fields(&p), ["mqtt.host"]);
        let with_default = BrokerKeys {
            default_host: Some("127.0.0.1"),
            ..keys(None, Some(1884), &[])
        };
        assert!(with_default.problems().is_empty());
        assert_eq!(with_default.list(), list(&["127.0.0.1:1884"]));
    }

    #[test]
    fn moves_round_robin_and_backs_off_only_after_a_full_round() {
        let t0 = Instant::now();
        let mut f = Failover::new(list(&["a:1", "b:2", "c:3"]));
        assert_eq!(f.current(), &addr("a:1"));
        assert_eq!(f.failed(t0), Retry::Now);
        assert_eq!(f.current(), &addr("b:2"));
        assert_eq!(f.failed(t0), Retry::Now);
        assert_eq!(f.current(), &addr("c:3"));
        assert_eq!(f.failed(t0), Retry::AfterBackoff);
        assert_eq!(f.current(), &addr("a:1"));
        assert_eq!(f.failed(t0), Retry::Now);
    }

    #[test]
    fn a_lost_stable_connection_moves_on_at_once() {
        let t0 = Instant::now();
        let mut f = Failover::new(list(&["a:1", "b:2", "c:3"]));
        assert_eq!(f.failed(t0), Retry::Now); // a refused
        f.connected(t0); // b
        assert_eq!(f.failed(t0 + STABLE_CONNECTION), Retry::Now);
        assert_eq!(f.current(), &addr("c:3"));
        // c and a refuse too: the round that started with b's loss is over.
        assert_eq!(f.failed(t0), Retry::Now);
        assert_eq!(f.failed(t0), Retry::AfterBackoff);
        assert_eq!(f.current(), &addr("b:2"));
    }

    #[test]
    fn brokers_that_accept_and_drop_at_once_still_end_their_round_in_a_backoff() {
        let t0 = Instant::now();
        let short = Duration::from_millis(10);
        let mut f = Failover::new(list(&["a:1", "b:2", "c:3"]));
        let mut retries = Vec::new();
        for _ in 0..6 {
            f.connected(t0);
            retries.push(f.failed(t0 + short));
        }
        use Retry::*;
        assert_eq!(retries, [Now, Now, AfterBackoff, Now, Now, AfterBackoff]);
    }

    #[test]
    fn one_broker_backs_off_after_every_failure_as_a_single_host_does() {
        let t0 = Instant::now();
        let mut f = Failover::new(list(&["a:1"]));
        assert_eq!(f.failed(t0), Retry::AfterBackoff);
        f.connected(t0);
        assert_eq!(f.failed(t0 + STABLE_CONNECTION * 2), Retry::AfterBackoff);
        assert_eq!(f.current(), &addr("a:1"));
    }
}
