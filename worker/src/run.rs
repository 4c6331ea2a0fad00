//! Owns the worker's life: connect to the engine (retrying with backoff while the database is
//! away), tell systemd it is ready, serve `/metrics`, run chunks until `shutdown`. No config
//! parsing, no signals.

use std::time::Duration;

use dtop_daemon::backoff::Backoff;
use dtop_engine::{Engine, EngineConfig, EngineError, WorkerOptions};
use tokio_util::sync::CancellationToken;

/// Why the worker stopped other than by `shutdown`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine refused the configuration.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The metrics address could not be bound.
    #[error("metrics listen {addr}: {source}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`run`] needs besides the engine configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Chunk concurrency and name.
    pub worker: WorkerOptions,
    /// `/metrics` address, if any.
    pub metrics_listen: Option<String>,
}

/// Connects (retrying while the database is away) and runs until `shutdown`.
///
/// # Errors
/// A configuration the engine refuses, or a metrics address that cannot be bound.
pub async fn run(
    config: EngineConfig,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let engine = loop {
        match Engine::connect(&config).await {
            Ok(engine) => break engine,
            Err(EngineError::Unavailable(reason)) => {
                let delay = backoff.next_delay(&mut rand_source());
                tracing::warn!(
                    reason,
                    delay_ms = delay.as_millis() as u64,
                    "Database away; retrying."
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(other) => return Err(other.into()),
        }
    };
    if let Some(addr) = &options.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Metrics {
                addr: addr.clone(),
                source,
            })?;
        let stats = engine.worker_stats();
        let render: dtop_daemon::metrics::Render = std::sync::Arc::new(move || stats.render());
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = dtop_daemon::metrics::serve(listener, render, cancel).await {
                tracing::warn!(error = %e, "Metrics endpoint stopped.");
            }
        });
    }
    dtop_daemon::notify::ready("dtop-worker connected");
    tokio::spawn(dtop_daemon::notify::Watchdog::from_env().run(shutdown.clone()));
    engine.run_worker(options.worker, shutdown).await?;
    Ok(())
}

fn rand_source() -> impl rand::Rng {
    rand::rng()
}
