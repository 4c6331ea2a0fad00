//! Owns the broker's lifetime: starts rumqttd on a named thread and waits until every listener
//! answers. Does not read files or handle signals (the binary's `main.rs` does).
//!
//! rumqttd has no shutdown: `Broker::start` blocks until all listener threads end, which only
//! happens when they fail. The broker therefore lives until the process exits.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info};

use crate::config::{BrokerConfig, ConfigErrors};
use crate::probe::{self, MqttVersion};
use crate::translate::rumqttd_config;

/// How long [`spawn`] waits for every listener to answer before giving up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Upper bound on one probe's connect and read, so a wedged listener cannot stall startup.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Name of the thread that owns rumqttd's `Broker` (its router and listeners get their own).
const BROKER_THREAD_NAME: &str = "dtop-broker";

/// Why the broker could not be started, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration failed validation; nothing was started.
    #[error("broker config is invalid")]
    Invalid(#[source] ConfigErrors),
    /// A listener address is already taken (or not ours to bind); nothing was started.
    #[error("cannot bind {key} {addr}")]
    Bind {
        /// Config key of the listener (`mqtt.listen`).
        key: &'static str,
        /// The address we tried.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The OS refused to start the broker thread.
    #[error("cannot start the broker thread")]
    Thread(#[source] io::Error),
    /// rumqttd returned: all its listeners failed, or it refused its configuration.
    #[error("rumqttd stopped: {reason}")]
    Exited {
        /// rumqttd's own description (its error type is not public).
        reason: String,
    },
    /// The broker thread panicked (rumqttd unwraps internally).
    #[error("the broker thread panicked")]
    Panicked,
    /// A listener did not answer an MQTT CONNECT within the startup timeout.
    #[error("{key} {addr} did not accept connections within {timeout:?}")]
    StartupTimeout {
        /// Config key of the listener.
        key: &'static str,
        /// The address we probed.
        addr: SocketAddr,
        /// How long we waited.
        timeout: Duration,
        /// The last probe's failure.
        #[source]
        last_error: io::Error,
    },
}

/// A running broker. Dropping the handle leaves the broker running until the process exits.
#[derive(Debug)]
pub struct BrokerHandle {
    /// Where MQTT 3.1.1 clients connect.
    mqtt_addr: SocketAddr,
    /// Where MQTT 5 clients connect, when that listener is configured.
    mqtt_v5_addr: Option<SocketAddr>,
    /// Where the debug console listens, when enabled.
    console_addr: Option<SocketAddr>,
    /// Joined never; kept so callers can ask whether the broker is still alive.
    thread: JoinHandle<()>,
    /// Fires once with rumqttd's result if `Broker::start` returns; closed if it panicked.
    exit_rx: oneshot::Receiver<Result<(), String>>,
}

impl BrokerHandle {
    /// Address of the MQTT 3.1.1 listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Address of the MQTT 5 listener, if configured.
    pub fn mqtt_v5_addr(&self) -> Option<SocketAddr> {
        self.mqtt_v5_addr
    }

    /// Address of the debug console, if enabled.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }

    /// Whether the broker thread is still running.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Resolves only if the broker stops on its own, which rumqttd does when every listener
    /// failed. Use it next to a shutdown signal so a dead broker does not go unnoticed.
    pub async fn stopped(self) -> BrokerError {
        exit_error(self.exit_rx.await)
    }
}

fn exit_error(exit: Result<Result<(), String>, oneshot::error::RecvError>) -> BrokerError {
    match exit {
        Ok(Ok(())) => BrokerError::Exited {
            reason: "every listener thread ended".to_owned(),
        },
        Ok(Err(reason)) => BrokerError::Exited { reason },
        Err(_) => BrokerError::Panicked,
    }
}

/// Validates `config`, starts rumqttd on a thread named `dtop-broker`, and blocks until every
/// listener completes an MQTT handshake (at most [`STARTUP_TIMEOUT`]). Call it from
/// `spawn_blocking` inside an async runtime.
///
/// Before starting, each address is bound once and released, because a probe would otherwise
/// happily handshake with some other broker already on the port.
pub fn spawn(config: &BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    config.validate().map_err(BrokerError::Invalid)?;

    let mut mqtt_listeners = vec![("mqtt.listen", config.mqtt.listen, MqttVersion::V311)];
    if let Some(v5) = &config.mqtt_v5 {
        mqtt_listeners.push(("mqtt_v5.listen", v5.listen, MqttVersion::V5));
    }
    let console_addr = config.console.as_ref().map(|console| console.listen);

    let all_addrs = mqtt_listeners
        .iter()
        .map(|(key, addr, _)| (*key, *addr))
        .chain(console_addr.map(|addr| ("console.listen", addr)));
    for (key, addr) in all_addrs {
        TcpListener::bind(addr)
            .map(drop)
            .map_err(|source| BrokerError::Bind { key, addr, source })?;
    }

    let rumqttd = rumqttd_config(config);
    let (exit_tx, mut exit_rx) = oneshot::channel();
    let thread = thread::Builder::new()
        .name(BROKER_THREAD_NAME.to_owned())
        .spawn(move || {
            // `Broker::new` starts the router thread; `start` starts one thread per listener
            // and blocks until they all end.
            let mut broker = rumqttd::Broker::new(rumqttd);
            let result = broker.start().map_err(|e| e.to_string());
            if let Err(reason) = &result {
                error!(reason = %reason, "rumqttd returned an error; the broker is down.");
            }
            // The receiver is gone only if the handle was dropped; nobody is left to tell.
            let _ = exit_tx.send(result);
        })
        .map_err(BrokerError::Thread)?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for (key, addr, version) in &mqtt_listeners {
        wait_until_ready(key, *addr, deadline, &mut exit_rx, |addr| {
            probe::probe_mqtt(addr, *version, PROBE_TIMEOUT)
        })?;
    }
    if let Some(addr) = console_addr {
        wait_until_ready("console.listen", addr, deadline, &mut exit_rx, |addr| {
            probe::probe_tcp(addr, PROBE_TIMEOUT)
        })?;
    }

    info!(
        mqtt = %config.mqtt.listen,
        mqtt_v5 = ?config.mqtt_v5.as_ref().map(|v5| v5.listen),
        console = ?console_addr,
        max_payload_bytes = config.limits.max_payload_bytes,
        max_connections = config.limits.max_connections,
        "Broker is accepting connections."
    );

    Ok(BrokerHandle {
        mqtt_addr: config.mqtt.listen,
        mqtt_v5_addr: config.mqtt_v5.as_ref().map(|v5| v5.listen),
        console_addr,
        thread,
        exit_rx,
    })
}

/// Probes `addr` until it answers, the broker thread ends, or `deadline` passes.
fn wait_until_ready(
    key: &'static str,
    addr: SocketAddr,
    deadline: Instant,
    exit_rx: &mut oneshot::Receiver<Result<(), String>>,
    probe: impl Fn(SocketAddr) -> io::Result<()>,
) -> Result<(), BrokerError> {
    loop {
        let last_error = match probe(addr) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match exit_rx.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {}
            Ok(exit) => return Err(exit_error(Ok(exit))),
            Err(oneshot::error::TryRecvError::Closed) => return Err(BrokerError::Panicked),
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::StartupTimeout {
                key,
                addr,
                timeout: STARTUP_TIMEOUT,
                last_error,
            });
        }
        thread::sleep(PROBE_INTERVAL);
    }
}

/// Finds a free loopback port by binding `127.0.0.1:0` and releasing it, for tests and tools
/// that must hand rumqttd a concrete port.
///
/// There is a small race: another process may take the port between this call and rumqttd's
/// bind. [`spawn`] notices most such losses as [`BrokerError::Bind`] or
/// [`BrokerError::StartupTimeout`]; the window is a few milliseconds, so tests accept it.
pub fn reserve_loopback_addr() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.local_addr()
}
