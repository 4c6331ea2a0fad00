//! DTOP's HTTP API server: users log in with the broker's credentials file, then submit,
//! watch, cancel and fetch studies and manage catalogue models over the studies engine
//! (`dtop-engine`). Study changes are polled once and fanned out to SSE streams and, when
//! configured, to MQTT. The contract is the served OpenAPI 3.1 document. The same router
//! serves the browser pages ([`web`]) and the live rigs ([`live`]). `dtop up` runs [`serve`]
//! in-process; `dtop-server` is the daemon around it.
//!
//! # Layout
//! - [`config`]: the TOML config and its validation.
//! - [`users`]: the credentials file, reloaded when it changes; argon2 off the async threads.
//! - [`sessions`]: login tokens, stored hashed, with expiry and revocation.
//! - [`throttle`]: slowing down failed logins per user name and client address.
//! - [`extract`]: shared state, [`extract::AuthUser`], JSON bodies refused in the API's words.
//! - [`error`]: the one error type and its wire form.
//! - [`http`]: the router and one file per resource (auth, studies, models).
//! - [`events`]: the one study-change poller and its broadcast.
//! - [`mqtt`]: the study-state publisher.
//! - [`live`]: live rigs for browsers: the hub, WebSocket feeds, commands and history.
//! - [`metrics`]: counters and their Prometheus text.
//! - [`openapi`]: the OpenAPI document.
//! - [`web`]: the browser pages, their assets, cookie sessions and CSRF.
//! - [`tls`]: serving HTTPS from the configured certificate and key.

pub mod config;
pub mod error;
pub mod events;
pub mod extract;
pub mod http;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod openapi;
pub mod sessions;
pub mod throttle;
pub mod tls;
pub mod users;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtop_engine::{Engine, WorkerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

pub use config::ServerConfig;

use crate::events::Changes;
use crate::extract::AppState;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::throttle::Throttle;
use crate::users::Users;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The credentials file cannot be used.
    #[error(transparent)]
    Credentials(#[from] dtop_auth::CredentialsError),
    /// The MQTT publisher cannot start.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] dtop_daemon::tls::TlsError),
    /// Serving HTTP failed.
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the API on `listener` until `shutdown`: the HTTP server, the change poller, the MQTT
/// publisher and the live rig hub (if `[mqtt]` is configured) and in-process workers (if
/// `workers.count > 0`). Returns once
/// everything has stopped; running chunks of in-process workers are let finish.
///
/// # Errors
/// When the credentials file or the MQTT password file cannot be read, or serving fails.
pub async fn serve(
    config: ServerConfig,
    engine: Engine,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let users = Users::load(&config.credentials_file, config.http.max_concurrent_logins)?;
    let acceptor = config.http.tls.as_ref().map(tls::acceptor).transpose()?;
    let password = config
        .mqtt
        .as_ref()
        .map(mqtt::read_password)
        .transpose()?
        .flatten();
    let metrics = Arc::new(Metrics::default());
    let changes = Changes::new();
    let tracker = TaskTracker::new();

    tracker.spawn(events::run_poller(
        engine.clone(),
        Duration::from_millis(config.http.poll_interval_ms),
        changes.clone(),
        shutdown.clone(),
    ));
    let live = config.mqtt.as_ref().map(|mqtt_config| {
        let hub = live::LiveHub::spawn(
            mqtt_config,
            password.as_ref(),
            &config.live,
            &tracker,
            shutdown.clone(),
        );
        Arc::new(live::Live::new(hub, config.live.clone()))
    });
    if let Some(mqtt_config) = config.mqtt.clone() {
        tracker.spawn(mqtt::run_publisher(
            mqtt_config,
            password,
            changes.clone(),
            engine.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
    }
    if config.workers.count > 0 {
        let engine = engine.clone();
        let options = WorkerOptions {
            name: format!("dtop-server-{}", std::process::id()),
            concurrency: config.workers.count,
        };
        let shutdown = shutdown.clone();
        // The engine's worker future is not `Send` (it keeps a thread-local RNG across an
        // await), so it runs on its own thread with a current-thread runtime.
        tracker.spawn_blocking(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    error!(error = %e, "Cannot start the in-process worker's runtime.");
                    return;
                }
            };
            if let Err(e) = runtime.block_on(engine.run_worker(options, shutdown)) {
                error!(error = %e, "In-process worker stopped.");
            }
        });
    }
    tracker.close();

    let state = Arc::new(AppState {
        engine,
        users,
        sessions: Sessions::new(config.http.token_lifetime()),
        throttle: Throttle::new(
            config.http.free_login_failures,
            Duration::from_secs(config.http.max_login_delay_s),
        ),
        metrics,
        changes,
        shutdown: shutdown.clone(),
        live,
        tls: acceptor.is_some(),
    });
    let app = http::router(
        state,
        config.http.body_limit_bytes,
        config.http.study_body_limit_bytes,
        openapi::router(),
    );
    let addr = listener.local_addr()?;
    let stop = shutdown.clone();
    let served = match acceptor {
        None => {
            info!(%addr, "API and web server listening (HTTP).");
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        }
        Some(acceptor) => {
            info!(%addr, "API and web server listening (HTTPS).");
            let listener = tls::TlsListener::new(listener, acceptor, shutdown.clone())?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<tls::TlsPeer>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        }
    };
    // Whatever ended serving, the background tasks stop with it.
    shutdown.cancel();
    tracker.wait().await;
    served?;
    Ok(())
}
