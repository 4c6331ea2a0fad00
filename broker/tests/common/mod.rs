//! Shared test helpers: start a real broker on a reserved loopback port and connect real
//! rumqttc clients to it. Owns no assertions about broker behaviour.

#![allow(dead_code)]
// Each test binary uses a different subset.
// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtop_broker::{BrokerConfig, BrokerHandle, ListenerConfig};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

/// Upper bound on every network wait in these tests; generous for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A loopback listener on a port the OS picks.
pub fn loopback_any() -> ListenerConfig {
    ListenerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    }
}

/// Starts an anonymous broker (no `[auth]`) on a loopback port the OS picks.
pub fn start_broker() -> BrokerHandle {
    let config = BrokerConfig {
        mqtt: loopback_any(),
        ..BrokerConfig::default()
    };
    dtop_broker::spawn(&config).expect("broker starts")
}

/// A rumqttc client sized like DTOP's own clients (both directions at the packet limit).
pub fn client(id: &str, addr: SocketAddr) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    AsyncClient::new(options, 16)
}

/// Polls `eventloop` until `pick` returns `Some`, failing the test on a connection error or
/// after [`WAIT`].
pub async fn poll_until<T>(
    eventloop: &mut EventLoop,
    what: &str,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = pick(&packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection error while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Keeps polling in the background so queued requests go out and acks come back.
pub fn drive(mut eventloop: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}

/// A user for [`start_auth_broker`]: name, role, rig scope (`-`, `*` or a list), password.
pub type TestUser<'a> = (&'a str, dtop_broker::Role, &'a str, &'a str);

/// Writes a credentials file for `users` (argon2id via the library, as `passwd add` does).
pub fn write_credentials(dir: &std::path::Path, users: &[TestUser<'_>]) -> std::path::PathBuf {
    let path = dir.join("broker.passwd");
    for (name, role, rigs, password) in users {
        let rigs = dtop_broker::credentials::RigSpec::parse(rigs).unwrap();
        let password = dtop_broker::Secret::new((*password).to_owned());
        dtop_broker::credentials::add_user(&path, name, *role, rigs, Some(&password)).unwrap();
    }
    path
}

/// Starts a broker with `[auth]` for `users` on an OS-picked loopback port. Keep the returned
/// directory alive as long as the broker.
pub fn start_auth_broker(users: &[TestUser<'_>]) -> (BrokerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let credentials_file = write_credentials(dir.path(), users);
    let config = BrokerConfig {
        mqtt: loopback_any(),
        auth: Some(dtop_broker::AuthConfig {
            credentials_file,
            roles: dtop_broker::RolesConfig::default(),
        }),
        ..BrokerConfig::default()
    };
    (dtop_broker::spawn(&config).expect("broker starts"), dir)
}

/// A rumqttc MQTT 3.1.1 client with credentials.
pub fn client_as(
    id: &str,
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    options.set_credentials(user, password);
    AsyncClient::new(options, 16)
}

/// A rumqttc MQTT 5 client, with credentials when `login` is given.
pub fn v5_client(
    id: &str,
    addr: SocketAddr,
    login: Option<(&str, &str)>,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    rumqttc::v5::AsyncClient::new(options, 64)
}

/// [`poll_until`] for MQTT 5 clients.
pub async fn v5_poll_until<T>(
    eventloop: &mut rumqttc::v5::EventLoop,
    what: &str,
    mut pick: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(packet)) => {
                    if let Some(found) = pick(&packet) {
                        return found;
                    }
                }
                Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                Err(e) => panic!("connection error while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Collects MQTT 5 PUBLISHes until `quiet` passes without one.
pub async fn v5_collect(
    eventloop: &mut rumqttc::v5::EventLoop,
    quiet: Duration,
) -> Vec<rumqttc::v5::mqttbytes::v5::Publish> {
    let mut got = Vec::new();
    // Bounded: at most 10 000 events, each wait at most `quiet`.
    for _ in 0..10_000 {
        match tokio::time::timeout(quiet, eventloop.poll()).await {
            Ok(Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(
                p,
            )))) => got.push(p),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection error while collecting: {e}"),
            Err(_) => break,
        }
    }
    got
}

/// Whether a missing third-party peer fails the test (`CI` or `DTOP_REQUIRE_SERVICES=1`, as
/// under `scripts/test.sh`) rather than skipping it.
pub fn services_required() -> bool {
    std::env::var_os("CI").is_some()
        || std::env::var("DTOP_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Finds `name` on PATH (or in /usr/bin); `None`, after saying the test is skipped, when it is
/// missing and peers are optional. Panics when it is missing and required.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path_dirs)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            !services_required(),
            "{name} is required (CI or DTOP_REQUIRE_SERVICES=1) but was not found on PATH or in \
             /usr/bin; install mosquitto-clients (and coreutils for stdbuf)"
        );
        eprintln!("SKIPPED: {name} not found on PATH or in /usr/bin; with CI set this fails");
    }
    found
}

/// The Python with paho-mqtt: `DTOP_TEST_PYTHON`, else the workspace venv that
/// `scripts/test.sh` makes. Panics when it is missing and required.
pub fn require_python() -> Option<PathBuf> {
    let candidate = std::env::var_os("DTOP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-peers/bin/python")
        });
    if candidate.is_file() {
        return Some(candidate);
    }
    assert!(
        !services_required(),
        "paho-mqtt's Python ({}) is required but missing",
        candidate.display()
    );
    eprintln!(
        "SKIPPED: no Python with paho-mqtt at {}; set DTOP_TEST_PYTHON",
        candidate.display()
    );
    None
}
