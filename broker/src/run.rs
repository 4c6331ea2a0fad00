//! Owns the broker's lifetime: loads credentials and TLS material, binds every listener,
//! starts rumqttd's router and the front's runtime on a named thread. Does not read the config
//! file or handle signals (the binary's `main.rs` does).
//!
//! rumqttd's router has no shutdown, and the front lives as long as it: the broker runs until
//! the process exits.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::acl::Acl;
use crate::config::{AuthConfig, BrokerConfig, ConfigErrors};
use crate::credentials::{Credentials, CredentialsError};
use crate::front::listener;
use crate::front::{Auth, Front};
use crate::metrics::Metrics;
use crate::translate::rumqttd_config;

/// Kept for callers that bound their own waits on startup; [`spawn`] binds synchronously and
/// returns as soon as the listeners exist.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the thread that runs the front (rumqttd's router gets its own).
const BROKER_THREAD_NAME: &str = "dtop-broker";

/// Why the broker could not be started, or why it stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration failed validation; nothing was started.
    #[error("broker config is invalid")]
    Invalid(#[source] ConfigErrors),
    /// The credentials file is missing or malformed; nothing was started.
    #[error("cannot load the credentials file")]
    Credentials(#[source] CredentialsError),
    /// The TLS certificate, key or client CA could not be loaded; nothing was started.
    #[error("cannot set up TLS")]
    Tls(#[source] dtop_daemon::tls::TlsError),
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
    /// The OS refused to start the broker thread or its runtime.
    #[error("cannot start the broker thread")]
    Thread(#[source] io::Error),
    /// Every listener task ended (they only end on a runtime failure).
    #[error("the broker stopped: {reason}")]
    Exited {
        /// What ended.
        reason: String,
    },
    /// The broker thread panicked.
    #[error("the broker thread panicked")]
    Panicked,
}

/// A running broker. Dropping the handle leaves the broker running until the process exits.
#[derive(Debug)]
pub struct BrokerHandle {
    /// Where plain MQTT clients (3.1.1 and 5) connect.
    mqtt_addr: SocketAddr,
    /// The second plain listener, when configured.
    mqtt_v5_addr: Option<SocketAddr>,
    /// The TLS listener, when configured.
    tls_addr: Option<SocketAddr>,
    /// The WebSocket listener, when configured.
    websocket_addr: Option<SocketAddr>,
    /// The metrics endpoint, when configured.
    metrics_addr: Option<SocketAddr>,
    /// Live counters, also served on the metrics endpoint.
    metrics: Arc<Metrics>,
    /// Joined never; kept so callers can ask whether the broker is still alive.
    thread: JoinHandle<()>,
    /// Fires once if the front's listeners end; closed if the thread panicked.
    exit_rx: oneshot::Receiver<String>,
}

impl BrokerHandle {
    /// Address of the plain MQTT listener (bound port, also when configured as 0).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Address of the second plain listener (`[mqtt_v5]`), if configured. It serves MQTT 3.1.1
    /// and 5 like every listener.
    pub fn mqtt_v5_addr(&self) -> Option<SocketAddr> {
        self.mqtt_v5_addr
    }

    /// Address of the TLS listener, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Address of the WebSocket listener, if configured.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// Address of the metrics endpoint, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The broker's live metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the broker thread is still running.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Resolves only if the broker stops on its own. Use it next to a shutdown signal so a
    /// dead broker does not go unnoticed.
    pub async fn stopped(self) -> BrokerError {
        match self.exit_rx.await {
            Ok(reason) => BrokerError::Exited { reason },
            Err(_) => BrokerError::Panicked,
        }
    }
}

fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| BrokerError::Bind { key, addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BrokerError::Bind { key, addr, source })?;
    Ok(listener)
}

fn local_addr(
    key: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, BrokerError> {
    listener
        .local_addr()
        .map_err(|source| BrokerError::Bind { key, addr, source })
}

/// The front's runtime. With one thread it is a current-thread runtime driven by the
/// `dtop-broker` thread itself: socket readiness, router notifications and timers all wake that
/// one thread, instead of also waking idle workers to steal work.
fn front_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("dtop-broker-front")
            .enable_all()
            .build()
    }
}

/// Loads `auth`'s credentials file and checks it against the role rules: every user of a role
/// whose rules contain `{username}` must have a name that is a valid rig id.
pub fn load_credentials(auth: &AuthConfig) -> Result<Credentials, CredentialsError> {
    let credentials = Credentials::load(&auth.credentials_file)?;
    let problems = credentials.placeholder_problems(|role| auth.roles.rules(role).uses_username());
    if problems.is_empty() {
        Ok(credentials)
    } else {
        Err(CredentialsError::Malformed(problems))
    }
}

/// Validates `config`, loads credentials and TLS material, binds every listener, starts
/// rumqttd's router and the front on a thread named `dtop-broker`, and returns once clients
/// can connect. Blocking (file reads, thread start); call it from `spawn_blocking` inside an
/// async runtime.
pub fn spawn(config: &BrokerConfig) -> Result<BrokerHandle, BrokerError> {
    config.validate().map_err(BrokerError::Invalid)?;

    let auth = match &config.auth {
        Some(auth) => {
            let credentials = load_credentials(auth).map_err(BrokerError::Credentials)?;
            if credentials.is_empty() {
                warn!(file = %auth.credentials_file.display(), "The credentials file has no users; every client will be refused.");
            }
            Some(Auth {
                credentials,
                acl: Acl::new(&auth.roles),
            })
        }
        None => {
            warn!(
                "No [auth] section: authorization is off, every client may publish and subscribe anywhere."
            );
            None
        }
    };
    let tls = config
        .tls
        .as_ref()
        .map(|tls| listener::tls_acceptor(tls).map(|acceptor| (tls.listen, acceptor)))
        .transpose()
        .map_err(BrokerError::Tls)?;

    let mqtt = bind("mqtt.listen", config.mqtt.listen)?;
    let mqtt_addr = local_addr("mqtt.listen", config.mqtt.listen, &mqtt)?;
    let mqtt_v5 = config
        .mqtt_v5
        .as_ref()
        .map(|v5| {
            bind("mqtt_v5.listen", v5.listen)
                .and_then(|l| Ok((local_addr("mqtt_v5.listen", v5.listen, &l)?, l)))
        })
        .transpose()?;
    let tls = tls
        .map(|(addr, acceptor)| {
            bind("tls.listen", addr)
                .and_then(|l| Ok((local_addr("tls.listen", addr, &l)?, l, acceptor)))
        })
        .transpose()?;
    let websocket = config
        .websocket
        .as_ref()
        .map(|ws| {
            bind("websocket.listen", ws.listen)
                .and_then(|l| Ok((local_addr("websocket.listen", ws.listen, &l)?, l)))
        })
        .transpose()?;
    let metrics_listener = config
        .metrics
        .as_ref()
        .map(|m| {
            bind("metrics.listen", m.listen)
                .and_then(|l| Ok((local_addr("metrics.listen", m.listen, &l)?, l)))
        })
        .transpose()?;

    if let Some(m) = &config.metrics
        && !m.listen.ip().is_loopback()
    {
        warn!(listen = %m.listen, "The metrics endpoint has no authentication and is not on loopback.");
    }
    let metrics = Arc::new(Metrics::default());
    let runtime = front_runtime(config.runtime.front_threads).map_err(BrokerError::Thread)?;
    // `Broker::new` starts rumqttd's router thread; none of rumqttd's listeners are started.
    let broker = rumqttd::Broker::new(rumqttd_config(config));
    let front = Arc::new(Front::new(
        broker,
        config.limits.clone(),
        auth,
        Arc::clone(&metrics),
    ));

    let handle_addrs = (
        mqtt_v5.as_ref().map(|(a, _)| *a),
        tls.as_ref().map(|(a, _, _)| *a),
        websocket.as_ref().map(|(a, _)| *a),
        metrics_listener.as_ref().map(|(a, _)| *a),
    );
    let (exit_tx, exit_rx) = oneshot::channel();
    let serve_metrics = Arc::clone(&metrics);
    let thread = thread::Builder::new()
        .name(BROKER_THREAD_NAME.to_owned())
        .spawn(move || {
            let reason = runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                let to_tokio = |l: TcpListener| tokio::net::TcpListener::from_std(l);
                match to_tokio(mqtt) {
                    Ok(l) => {
                        tasks.spawn(listener::serve_tcp(l, Arc::clone(&front)));
                    }
                    Err(e) => return format!("mqtt listener: {e}"),
                }
                if let Some((_, l)) = mqtt_v5 {
                    match to_tokio(l) {
                        Ok(l) => {
                            tasks.spawn(listener::serve_tcp(l, Arc::clone(&front)));
                        }
                        Err(e) => return format!("mqtt_v5 listener: {e}"),
                    }
                }
                if let Some((_, l, acceptor)) = tls {
                    match to_tokio(l) {
                        Ok(l) => {
                            tasks.spawn(listener::serve_tls(l, acceptor, Arc::clone(&front)));
                        }
                        Err(e) => return format!("tls listener: {e}"),
                    }
                }
                if let Some((_, l)) = websocket {
                    match to_tokio(l) {
                        Ok(l) => {
                            tasks.spawn(listener::serve_ws(l, Arc::clone(&front)));
                        }
                        Err(e) => return format!("websocket listener: {e}"),
                    }
                }
                if let Some((_, l)) = metrics_listener {
                    match to_tokio(l) {
                        Ok(l) => {
                            let render = crate::metrics::renderer(serve_metrics);
                            // Never cancelled: the endpoint lives as long as the broker's
                            // runtime, which ends with the process.
                            let forever = tokio_util::sync::CancellationToken::new();
                            tasks.spawn(async move {
                                if let Err(e) =
                                    dtop_daemon::metrics::serve(l, render, forever).await
                                {
                                    error!(error = %e, "The metrics endpoint failed.");
                                }
                            });
                        }
                        Err(e) => return format!("metrics listener: {e}"),
                    }
                }
                match tasks.join_next().await {
                    Some(Err(e)) => format!("a listener task failed: {e}"),
                    _ => "a listener task ended".to_owned(),
                }
            });
            error!(reason = %reason, "The broker front stopped.");
            // The receiver is gone only if the handle was dropped; nobody is left to tell.
            let _ = exit_tx.send(reason);
        })
        .map_err(BrokerError::Thread)?;

    info!(
        mqtt = %mqtt_addr,
        mqtt_v5 = ?handle_addrs.0,
        tls = ?handle_addrs.1,
        websocket = ?handle_addrs.2,
        metrics = ?handle_addrs.3,
        auth = config.auth.is_some(),
        max_payload_bytes = config.limits.max_payload_bytes,
        max_connections = config.limits.max_connections,
        front_threads = config.runtime.front_threads,
        "Broker is accepting connections."
    );

    Ok(BrokerHandle {
        mqtt_addr,
        mqtt_v5_addr: handle_addrs.0,
        tls_addr: handle_addrs.1,
        websocket_addr: handle_addrs.2,
        metrics_addr: handle_addrs.3,
        metrics,
        thread,
        exit_rx,
    })
}

/// Finds a free loopback port by binding `127.0.0.1:0` and releasing it, for tools that must
/// name a concrete port before starting something (the broker itself accepts port 0).
///
/// There is a small race: another process may take the port between this call and the bind;
/// [`spawn`] then fails with [`BrokerError::Bind`].
pub fn reserve_loopback_addr() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.local_addr()
}
