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
//! - [`inner_loop`]: pure: the edge-hosted control law (the twin's `ControllerParams`), checked
//!   against the manifest, swapped in at a sample boundary, stepped on every sample.
//! - [`batcher`]: pure: frames → fixed-size blocks, index continuity, timestamps, seq, and the
//!   samples no block carries (declared on the next block).
//! - [`sample_clock`]: pure: the rule that gives a sample its time from its index, across
//!   restarts and index jumps (kept in `{state_dir}/sample_clock.json`).
//! - [`acquisition`]: the task around the batcher; keeps block seqs inside the durable
//!   reservation (the `next_seq` file).
//! - [`seq_reservation`]: pure: the block-seq reservation (hi/lo allocator): when to renew
//!   the bound, where a restart starts.
//! - [`birth`]: pure: `RigBirth` from the firmware manifest and the config.
//! - [`fence`]: pure: fencing by owner epoch, whether a twin's params, drive or watermark
//!   may act on the rig (the highest epoch seen is kept in `{state_dir}/owner_epoch`).
//! - [`commands`]: operator commands: what each asks for, the ledger that answers a repeated
//!   id without applying it twice, and its fsynced journal across restarts.
//! - [`modbus`]: Modbus TCP/RTU devices from a register map: bus tasks that poll them into
//!   streams 1, 2, ... (joined by the acquisition task), and a Modbus actuator output.
//! - [`backlog`]: the on-disk spool of every block until the twin's persisted watermark
//!   covers it, replays (reconnect, stalled watermark) and loss accounting.
//! - [`losses`]: the lost seq ranges the twin's watermark has not passed yet, declared on
//!   `rig/{rig}/loss` until it does, kept in `{state_dir}/lost_seqs.json`.
//! - [`outbox`]: pure: bounded block queue, in-flight window, resend after reconnect.
//! - [`publisher`]: owns the MQTT connection: session, will, birth, blocks, drives, goodbye.
//! - [`state_file`]: atomic on-disk counters (`session`, `next_seq`).
//! - [`stats`]: [`EdgeStats`], published through a `watch`.
//! - [`metrics`]: the Prometheus endpoint (`[metrics] listen`), rendered from the stats.
//!
//! # Shutdown
//! Cancelling the token passed to [`run`] flows downstream: the serial task stops forwarding
//! samples and commands the actuator off (zero force); the acquisition task then closes the
//! partial block; the publisher flushes its queue (bounded by `shutdown_flush_timeout_ms`),
//! publishes `RigDeath { reason: "shutdown" }` and disconnects.

pub mod acquisition;
pub mod backlog;
pub mod batcher;
pub mod birth;
pub mod commands;
pub mod config;
pub mod fence;
pub mod inner_loop;
pub mod losses;
pub mod metrics;
pub mod modbus;
pub mod outbox;
pub mod publisher;
pub mod safety;
pub mod sample_clock;
pub mod seq_reservation;
pub mod serial;
pub mod state_file;
pub mod stats;

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::EdgeConfig;
pub use stats::EdgeStats;

use crate::acquisition::Acquisition;
use crate::publisher::{Publisher, PublisherConfig};
use crate::serial::LinkEnd;
use crate::stats::StatsHandle;

/// Frames or blocks in flight between two tasks; small, since every consumer keeps up or has
/// its own bounded queue (the publisher's outbox).
const CHANNEL_CAPACITY: usize = 64;

/// How long shutdown waits for each Modbus bus task (its last request, then the actuator's
/// safe-state write, each bounded by the device's request timeout).
const MODBUS_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    #[error("binding the metrics endpoint {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the command journal {path}: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    let reserved_until = read(next_seq_path.clone()).await?;
    let spool_dir = config.spool_dir();
    let spool_last_seq = tokio::task::spawn_blocking(move || backlog::spool_last_seq(&spool_dir))
        .await
        .map_err(|_| EdgeError::TaskFailed("spool reader"))?
        .unwrap_or_else(|e| {
            // The publisher reports the spool itself when it opens it.
            warn!(error = %e, "Could not read the spool's last seq; starting from the next_seq file alone.");
            None
        });
    let next_seq = seq_reservation::start_seq(reserved_until, spool_last_seq);
    let clock_path = config.state_dir.join(sample_clock::CLOCK_FILE_NAME);
    let (clock_record, spool_end_index) = {
        let (clock_path, spool_dir) = (clock_path.clone(), config.spool_dir());
        tokio::task::spawn_blocking(move || {
            let record = state_file::read_json::<sample_clock::ClockRecord>(&clock_path)
                .unwrap_or_else(|e| {
                    // Only timestamps after a restart get weaker: they re-anchor on the wall clock.
                    warn!(error = %e, "Could not read the sample clock; anchoring anew.");
                    None
                });
            let end = backlog::spool_stream_end_index(&spool_dir, 0).unwrap_or_else(|e| {
                warn!(error = %e, "Could not read the spool's last block; the loss accounting resumes from the clock file.");
                None
            });
            (record, end)
        })
        .await
        .map_err(|_| EdgeError::TaskFailed("state reader"))?
    };
    let last_session = read(session_path.clone()).await?.unwrap_or(0);
    // A corrupt epoch file stops the start like the other counters: guessing it would either
    // let a fenced twin drive or lock the current owner out.
    let owner_epoch_path = config.owner_epoch_path();
    let owner_epoch = read(owner_epoch_path.clone()).await?;
    let port = serial::open_port(&config.serial)?;
    info!(
        rig = %config.rig_id,
        serial = %config.serial.path.display(),
        brokers = %config.mqtt.broker_list(),
        next_seq,
        reserved_until,
        spool_last_seq,
        last_session,
        owner_epoch,
        "Edge starting."
    );

    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| EdgeError::MetricsBind { addr, source })?,
        ),
        None => None,
    };
    let stats = StatsHandle::new(stats_tx);
    stats.update(|s| s.started_at_ns = acquisition::wall_clock_ns());
    // Any task failing stops the others through this token, which the serial task (the head of
    // the pipeline) watches; the rest drain as their inputs close.
    let stop = shutdown.child_token();
    let (serial_tx, serial_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (publisher_tx, publisher_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (actuator_tx, actuator_rx) = mpsc::channel(serial::ACTUATOR_QUEUE_CAPACITY);
    // Setpoints of a Modbus actuator: the serial task's safety envelope drives them instead of
    // the firmware's actuator command when `[modbus.actuator]` is configured.
    let (modbus_setpoint_tx, modbus_setpoint_rx) = watch::channel(modbus::ModbusSetpoint::SAFE);
    // Its bus task declares link losses back, for the envelope to latch on.
    let (modbus_link_tx, modbus_link_rx) = watch::channel(modbus::ModbusLinkReport::default());
    let modbus_actuator = config.modbus.actuator.is_some();

    // The serial port is open (Modbus buses connect in their own tasks, with backoff): tell
    // systemd before the serial loop's first watchdog ping.
    dtop_daemon::notify::ready("dtop-edge");
    let serial_task = tokio::spawn(serial::run(
        config.serial.clone(),
        config.actuator.clone(),
        port,
        serial::SerialChannels {
            events_tx: serial_tx,
            requests_rx: actuator_rx,
            acks_tx: publisher_tx.clone(),
            modbus_output: modbus_actuator.then(|| modbus_setpoint_tx.clone()),
            modbus_link_rx: modbus_actuator.then_some(modbus_link_rx),
        },
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
        stop.clone(),
    )
    .with_sample_clock(clock_path, clock_record, spool_end_index);
    // Modbus: one task per bus; polled samples join the acquisition task as streams 1, 2, ...
    let (polled_tx, polled_rx) = mpsc::channel(modbus::poller::POLLED_QUEUE_CAPACITY);
    let acquisition = acquisition.with_polled(
        &config.rig_id,
        config.acquisition.block_samples as usize,
        &modbus::polled_streams(&config.modbus),
        polled_rx,
    );
    // The sender stays alive (here and in the serial task) until shutdown, so the bus task
    // does not read its loss as a fault.
    let _modbus_setpoint_tx = modbus_setpoint_tx;
    let bus_tasks = modbus::spawn_buses(
        &config.modbus,
        polled_tx,
        modbus_actuator.then_some(modbus::ActuatorChannels {
            setpoint_rx: modbus_setpoint_rx,
            link_tx: modbus_link_tx,
        }),
        stop.clone(),
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
    let journal_path = config.state_dir.join("commands.jsonl");
    let rig_id = config.rig_id.clone();
    let commands = tokio::task::spawn_blocking(move || {
        commands::Journal::open(&journal_path, &rig_id).map_err(|source| EdgeError::Journal {
            path: journal_path,
            source,
        })
    })
    .await
    .map_err(|_| EdgeError::TaskFailed("journal reader"))??;
    let (publisher, eventloop) = Publisher::new(
        PublisherConfig {
            rig_id: config.rig_id.clone(),
            mqtt: config.mqtt.clone(),
            client_id: config.mqtt_client_id(),
            password,
            actuator: config.actuator.clone(),
            session_path,
            last_session,
            owner_epoch_path,
            owner_epoch,
            polled_channels: modbus::birth_channels(&config.modbus),
            shaker: config.modbus.shaker.as_ref().and_then(|sh| {
                let device = config.modbus.devices.iter().find(|d| d.name == sh.device)?;
                Some((sh.clone(), device.clone()))
            }),
            spool: config.spool.clone(),
            spool_dir: config.spool_dir(),
            block_samples: config.acquisition.block_samples as usize,
            next_seq_at_start: next_seq,
        },
        actuator_tx,
        commands,
        stats.clone(),
    );
    let publisher_task = tokio::spawn(publisher.run(eventloop, publisher_rx));
    let metrics_task = metrics_listener.map(|listener| {
        info!(addr = ?listener.local_addr().ok(), "Serving Prometheus metrics on /metrics.");
        let (rig, stats) = (config.rig_id.to_string(), stats.subscribe());
        let render: dtop_daemon::metrics::Render =
            std::sync::Arc::new(move || metrics::render(&rig, &stats.borrow()));
        tokio::spawn(dtop_daemon::metrics::serve(listener, render, stop.clone()))
    });

    let (serial_end, acquisition_end, publisher_end) =
        tokio::join!(serial_task, acquisition_task, publisher_task);
    // The bus tasks stop with `stop`, leaving a Modbus actuator in its safe state.
    stop.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    modbus::poller::join_buses(bus_tasks, MODBUS_SHUTDOWN_GRACE).await;
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
