//! `dtop-edge`: reads a rig's firmware stream over a serial port, cuts it into protobuf
//! `SampleBlock`s, and publishes them over MQTT with a birth/death lifecycle; keeps the actuator
//! safe when it stops.
//!
//! Data path: serial port → [`serial`] (frames) → [`acquisition`] ([`batcher`]) → [`publisher`]
//! ([`outbox`]) → broker. Each arrow is a bounded `mpsc` channel; each task owns its state.
//!
//! Drive path: broker → [`publisher`] (decodes `ActuatorDrive`) → [`serial`] ([`safety`]
//! envelope, clocked by sample frames) → `ActuatorCommand` → firmware. The channel is small and
//! lossy (`try_send`): a late drive is useless, and the envelope times out without fresh ones.
//!
//! # Layout
//! - [`config`]: the TOML configuration, its defaults and whole-config validation.
//! - [`serial`]: owns the serial port and the actuator: handshake, heartbeats, silence
//!   detection, actuator commands, safe state.
//! - [`safety`]: pure: the actuator safety envelope (clamp, slew limit, drive timeout, latch).
//! - [`batcher`]: pure: frames → fixed-size blocks, index continuity, timestamps, seq.
//! - [`acquisition`]: the task around the batcher; persists `next_seq`.
//! - [`birth`]: pure: `RigBirth` from the firmware manifest and the config.
//! - [`outbox`]: pure: bounded block queue, in-flight window, resend after reconnect.
//! - [`publisher`]: owns the MQTT connection: session, will, birth, blocks, drives, goodbye.
//! - [`backoff`]: pure jittered exponential backoff.
//! - [`state_file`]: atomic on-disk counters (`session`, `next_seq`).
//! - [`stats`]: [`EdgeStats`], published through a `watch`.
//!
//! # Shutdown
//! Cancelling the token passed to [`run`] flows downstream: the serial task stops forwarding
//! samples and commands the actuator off (zero force); the acquisition task then closes the
//! partial block; the publisher flushes its queue (bounded by `shutdown_flush_timeout_ms`),
//! publishes `RigDeath { reason: "shutdown" }` and disconnects.

pub mod acquisition;
pub mod backoff;
pub mod batcher;
pub mod birth;
pub mod config;
pub mod outbox;
pub mod publisher;
pub mod safety;
pub mod serial;
pub mod state_file;
pub mod stats;

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use config::EdgeConfig;
pub use stats::EdgeStats;

use crate::acquisition::Acquisition;
use crate::publisher::{Publisher, PublisherConfig};
use crate::serial::LinkEnd;
use crate::stats::StatsHandle;

/// Frames or blocks in flight between two tasks; small, since every consumer keeps up or has
/// its own bounded queue (the publisher's outbox).
const CHANNEL_CAPACITY: usize = 64;

/// Why the edge stopped or could not start. Start-up variants leave nothing opened behind.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] config::ConfigErrors),
    #[error(transparent)]
    Secret(#[from] config::SecretError),
    #[error("creating state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    StateFile(#[from] state_file::StateFileError),
    #[error(transparent)]
    SerialOpen(#[from] serial::SerialOpenError),
    /// A task ended early and took the pipeline down with it.
    #[error("the {0} task stopped unexpectedly")]
    TaskFailed(&'static str),
}

/// Runs the edge until `shutdown` is cancelled and the shutdown sequence completes.
pub async fn run(config: EdgeConfig, shutdown: CancellationToken) -> Result<(), EdgeError> {
    let (stats_tx, _stats_rx) = watch::channel(EdgeStats::default());
    run_with_stats(config, shutdown, stats_tx).await
}

/// [`run`], publishing live [`EdgeStats`] into `stats_tx` (subscribe to it before calling).
pub async fn run_with_stats(
    config: EdgeConfig,
    shutdown: CancellationToken,
    stats_tx: watch::Sender<EdgeStats>,
) -> Result<(), EdgeError> {
    config.validate()?;
    let password = config.mqtt.read_password()?;
    tokio::fs::create_dir_all(&config.state_dir)
        .await
        .map_err(|source| EdgeError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
    let (next_seq_path, session_path) = (config.next_seq_path(), config.session_path());
    let read = |path: PathBuf| async move {
        tokio::task::spawn_blocking(move || state_file::read_counter(&path))
            .await
            .map_err(|_| EdgeError::TaskFailed("state reader"))?
            .map_err(EdgeError::from)
    };
    let next_seq = read(next_seq_path.clone()).await?.unwrap_or(0);
    let last_session = read(session_path.clone()).await?.unwrap_or(0);
    let port = serial::open_port(&config.serial)?;
    info!(
        rig = %config.rig_id,
        serial = %config.serial.path.display(),
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        next_seq,
        last_session,
        "Edge starting."
    );

    let stats = StatsHandle::new(stats_tx);
    // Any task failing stops the others through this token, which the serial task (the head of
    // the pipeline) watches; the rest drain as their inputs close.
    let stop = shutdown.child_token();
    let (serial_tx, serial_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (publisher_tx, publisher_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (actuator_tx, actuator_rx) = mpsc::channel(serial::ACTUATOR_QUEUE_CAPACITY);

    let serial_task = tokio::spawn(serial::run(
        config.serial.clone(),
        config.actuator.clone(),
        port,
        serial_tx,
        actuator_rx,
        stats.clone(),
        stop.clone(),
    ));
    let acquisition = Acquisition::new(
        config.rig_id.clone(),
        config.acquisition.block_samples as usize,
        next_seq,
        next_seq_path,
        publisher_tx,
        stats.clone(),
    );
    let acquisition_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let result = acquisition.run(serial_rx).await;
            if result.is_err() {
                stop.cancel();
            }
            result
        }
    });
    let (publisher, eventloop) = Publisher::new(
        PublisherConfig {
            rig_id: config.rig_id.clone(),
            mqtt: config.mqtt.clone(),
            client_id: config.mqtt_client_id(),
            password,
            actuator: config.actuator.clone(),
            session_path,
            last_session,
        },
        actuator_tx,
        stats.clone(),
    );
    let publisher_task = tokio::spawn(publisher.run(eventloop, publisher_rx));

    let (serial_end, acquisition_end, publisher_end) =
        tokio::join!(serial_task, acquisition_task, publisher_task);
    let mut result = Ok(());
    match serial_end {
        Ok(LinkEnd::Shutdown) => {}
        Ok(LinkEnd::DownstreamGone | LinkEnd::Lost(_)) | Err(_) => {
            result = Err(EdgeError::TaskFailed("serial"))
        }
    }
    if !matches!(acquisition_end, Ok(Ok(()))) {
        result = Err(EdgeError::TaskFailed("acquisition"));
    }
    if publisher_end.is_err() {
        result = Err(EdgeError::TaskFailed("publisher"));
    }
    let s = stats.snapshot();
    match &result {
        Ok(()) => info!(
            frames_in = s.frames_in_total,
            samples_in = s.samples_in_total,
            blocks_made = s.blocks_made_total,
            blocks_published = s.blocks_published_total,
            samples_dropped = s.samples_dropped_total,
            dropped_bytes = s.dropped_bytes_total,
            "Edge stopped cleanly."
        ),
        Err(e) => error!(error = %e, "Edge stopped after a task failure."),
    }
    result
}
