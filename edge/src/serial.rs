//! Owns the firmware serial port and the actuator's safety envelope: opens (and reopens) the
//! port, does the Hello → Manifest handshake, sends heartbeats, watches for silence, forwards
//! manifests and sample frames downstream, turns drive requests into `ActuatorCommand`s (sample
//! frames are the envelope's clock), runs the edge-hosted inner loop ([`InnerLoop`]) on every
//! sample, and leaves the actuator in its safe state on shutdown. Knows nothing of blocks or
//! MQTT (controller acknowledgements go out as [`PublisherEvent`]s).

use std::io;
use std::time::Duration;

use dtop_daemon::Backoff;
use dtop_daemon::notify::Watchdog;
use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{ActuatorCommand, Fault, Frame, Heartbeat, Manifest, Samples};
use dtop_proto::v1::CommandAck;
use dtop_proto::v1::command_ack::Status as AckStatus;
use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep_until, timeout, timeout_at};
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::commands::Action;
use crate::config::{ActuatorConfig, SerialConfig};
use crate::inner_loop::InnerLoop;
use crate::publisher::{ControllerAck, PublisherEvent};
use crate::safety::{DriveRequest, DriveSource, EnvelopeLimits, SafetyEnvelope, SafetyState};
use crate::stats::StatsHandle;

/// How often the edge tells the firmware it is alive (PROTOCOL.md §4.6).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest gap between `Hello`s once the firmware keeps ignoring them. PROTOCOL.md §7.2 retries
/// every second; backing off to a few seconds spares a log full of retries when no firmware is
/// attached, while a rebooting rig is still picked up quickly.
pub const HELLO_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a frame write may block; a port that will not take bytes for this long is wedged.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long shutdown waits for the firmware to confirm the actuator is off.
pub const SAFE_STATE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest gap between commands to an enabled actuator. PROTOCOL.md §7.4 asks for one at least
/// every 250 ms against the 500 ms firmware watchdog; 200 ms leaves room for a slow write.
pub const ACTUATOR_REFRESH_INTERVAL: Duration = Duration::from_millis(200);
/// Shortest silence of the sample stream after which an enabled actuator is switched off: the
/// envelope's clock has stopped. Equal to the firmware watchdog (PROTOCOL.md §7.1), which would
/// cut the force then anyway were the edge silent too.
pub const SAMPLE_STALL_MIN: Duration = Duration::from_millis(500);
/// Actuator requests waiting for the serial task, at most. Small: a late drive is useless, so
/// senders drop what does not fit rather than wait.
pub const ACTUATOR_QUEUE_CAPACITY: usize = 8;

/// What the serial task is asked to do with the actuator, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum ActuatorRequest {
    Drive(DriveRequest),
    /// New parameters for the edge-hosted inner loop: checked now, swapped in at the next
    /// sample boundary, acknowledged either way.
    Controller(Box<dtop_proto::v1::ControllerParams>),
    /// An operator command the ledger admitted: applied at the next sample, acknowledged.
    Command {
        id: String,
        action: Action,
    },
    /// Latch a safety stop: 0 N and disabled at once, every drive refused until a reset.
    SafetyStop,
    /// Release a latched safety stop.
    SafetyReset,
}

/// What the serial task hands downstream, in arrival order.
#[derive(Debug, Clone)]
pub enum SerialEvent {
    /// The firmware (re)announced itself, after a `Hello`.
    Manifest(Box<Manifest>),
    Samples(Samples),
    /// An operator's `SetAcquisition`, for the acquisition task to apply at a block boundary
    /// and acknowledge.
    SetBlockSamples {
        command_id: String,
        block_samples: u32,
    },
}

/// Why the port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialOpenError {
    #[error("serial path {0:?} is not valid UTF-8")]
    BadPath(std::path::PathBuf),
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: tokio_serial::Error,
    },
}

/// Opens the configured port (a real UART, USB CDC device or pty) for async use.
pub fn open_port(config: &SerialConfig) -> Result<SerialStream, SerialOpenError> {
    let path = config
        .path
        .to_str()
        .ok_or_else(|| SerialOpenError::BadPath(config.path.clone()))?;
    tokio_serial::new(path, config.baud)
        .timeout(WRITE_TIMEOUT)
        .open_native_async()
        .map_err(|source| SerialOpenError::Open {
            path: path.to_owned(),
            source,
        })
}

/// How one link (one open port) ended.
#[derive(Debug)]
pub enum LinkEnd {
    /// Shutdown was requested; the actuator command to go safe has been sent.
    Shutdown,
    /// The port failed; reopen it.
    Lost(io::Error),
    /// Nobody downstream listens any more.
    DownstreamGone,
}

/// The serial task's channels.
#[derive(Debug)]
pub struct SerialChannels {
    /// Manifests and samples, downstream.
    pub events_tx: mpsc::Sender<SerialEvent>,
    /// Drives, controller params, safety stops and resets, from the publisher.
    pub requests_rx: mpsc::Receiver<ActuatorRequest>,
    /// Controller acknowledgements, to the publisher.
    pub acks_tx: mpsc::Sender<PublisherEvent>,
    /// When the actuator is a Modbus device: its setpoints, in place of the firmware's
    /// `ActuatorCommand`s (same envelope, same limits).
    pub modbus_output: Option<tokio::sync::watch::Sender<crate::modbus::ModbusSetpoint>>,
    /// Link losses its bus task declares; each latches the envelope.
    pub modbus_link_rx: Option<tokio::sync::watch::Receiver<crate::modbus::ModbusLinkReport>>,
}

/// The serial task: drives `port`, reopening the configured path with backoff whenever the link
/// is lost, until `shutdown`. Returns when downstream is gone or after shutdown.
pub async fn run(
    config: SerialConfig,
    actuator: ActuatorConfig,
    port: SerialStream,
    channels: SerialChannels,
    stats: StatsHandle,
    shutdown: CancellationToken,
) -> LinkEnd {
    let SerialChannels {
        events_tx,
        requests_rx,
        acks_tx,
        modbus_output,
        modbus_link_rx,
    } = channels;
    let mut link = Link::new(config, actuator, events_tx, requests_rx, stats).with_acks(acks_tx);
    link.modbus_output = modbus_output;
    link.modbus_link_rx = modbus_link_rx;
    let mut port = Some(port);
    let mut backoff = Backoff::new(link.config.hello_timeout(), HELLO_BACKOFF_MAX);
    let mut rng = StdRng::from_os_rng();
    loop {
        let Some(io) = port.take() else {
            link.watchdog.pet();
            let delay = backoff.next_delay(&mut rng);
            let reopen_at = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return LinkEnd::Shutdown,
                    () = sleep_until(reopen_at) => break,
                    // Requests still count (and a safety stop still latches) with no port open.
                    request = link.requests_rx.recv(), if link.requests_open => {
                        link.take_requests(request);
                    }
                }
            }
            match open_port(&link.config) {
                Ok(p) => {
                    info!(path = %link.config.path.display(), "Reopened the firmware serial port.");
                    backoff.reset();
                    port = Some(p);
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot reopen the firmware serial port.")
                }
            }
            continue;
        };
        match link.drive(io, &shutdown).await {
            LinkEnd::Lost(e) => {
                warn!(path = %link.config.path.display(), error = %e, "Lost the firmware serial port; reopening.");
                link.stats.update(|s| s.firmware_online = false);
                // No port, no clock: a Modbus actuator must not keep the last force meanwhile.
                link.stop_clock("the firmware serial port was lost");
                link.send_modbus_setpoint();
                link.publish_actuator_stats();
            }
            end => return end,
        }
    }
}

/// State of the serial task that outlives one open port.
#[derive(Debug)]
pub struct Link {
    config: SerialConfig,
    events_tx: mpsc::Sender<SerialEvent>,
    stats: StatsHandle,
    started: Instant,
    /// Codec counters reached before the current port was opened (a new port gets a new codec).
    dropped_bytes_base: u64,
    bad_frames_base: u64,
    /// Codec counters already reported for the current port.
    dropped_bytes_seen: u64,
    bad_frames_seen: u64,
    actuator_seq: u16,
    rng: StdRng,
    actuator: ActuatorConfig,
    requests_rx: mpsc::Receiver<ActuatorRequest>,
    /// False once every request sender is gone.
    requests_open: bool,
    envelope: SafetyEnvelope,
    /// The last command sent enabled the actuator: the firmware may be applying force, so
    /// commands must keep coming (PROTOCOL.md §7.4) until one disables it.
    firmware_enabled: bool,
    /// Force of the last command sent, N.
    last_command_force_n: f64,
    last_command_at: Instant,
    actuator_commands_total: u64,
    /// When the last `Samples` frame arrived: the envelope's clock ticks only with samples.
    last_samples_at: Instant,
    /// Sample silence after which an enabled actuator is presumed to have lost its clock.
    stall_after: Duration,
    /// The edge-hosted control law, stepped on every sample.
    inner: InnerLoop,
    /// Checked params waiting for the next sample boundary.
    pending_controller: Option<crate::inner_loop::PreparedController>,
    /// The manifest the firmware streams under, for checking controller params.
    manifest: Option<Manifest>,
    /// Where controller acknowledgements go; None in tests that do not look.
    acks_tx: Option<mpsc::Sender<PublisherEvent>>,
    /// The index the firmware's next sample will carry, once samples flow: where a command
    /// applied now takes effect.
    next_sample_index: Option<u64>,
    /// Command acks decided by the last requests, sent once the actuator was commanded.
    command_acks: Vec<CommandAck>,
    /// systemd's watchdog, pinged as this loop turns (heartbeats, samples, reopen attempts).
    watchdog: Watchdog,
    /// A Modbus actuator's setpoints; when set, the firmware's actuator is never enabled.
    modbus_output: Option<tokio::sync::watch::Sender<crate::modbus::ModbusSetpoint>>,
    /// The Modbus actuator's declared link losses, and how many the envelope has latched for.
    modbus_link_rx: Option<tokio::sync::watch::Receiver<crate::modbus::ModbusLinkReport>>,
    modbus_link_losses_seen_n: u64,
    /// The drive timeout as a duration at the current sample rate (zero before a manifest).
    drive_timeout: Duration,
}

/// How the handshake ended.
enum Handshake {
    Manifest(Manifest),
    End(LinkEnd),
}

/// Why streaming stopped.
enum StreamEnd {
    /// No valid frame within the read timeout (PROTOCOL.md §7.3).
    Silent,
    /// The sample index went backwards: the firmware restarted (PROTOCOL.md §7.5).
    Restarted {
        expected: u64,
        got: u64,
    },
    End(LinkEnd),
}

impl Link {
    pub fn new(
        config: SerialConfig,
        actuator: ActuatorConfig,
        events_tx: mpsc::Sender<SerialEvent>,
        requests_rx: mpsc::Receiver<ActuatorRequest>,
        stats: StatsHandle,
    ) -> Self {
        let now = Instant::now();
        Self {
            config,
            events_tx,
            stats,
            started: now,
            dropped_bytes_base: 0,
            bad_frames_base: 0,
            dropped_bytes_seen: 0,
            bad_frames_seen: 0,
            actuator_seq: 0,
            rng: StdRng::from_os_rng(),
            actuator,
            requests_rx,
            requests_open: true,
            envelope: SafetyEnvelope::new(),
            firmware_enabled: false,
            last_command_force_n: 0.0,
            last_command_at: now,
            actuator_commands_total: 0,
            last_samples_at: now,
            stall_after: SAMPLE_STALL_MIN,
            inner: InnerLoop::default(),
            pending_controller: None,
            manifest: None,
            acks_tx: None,
            next_sample_index: None,
            command_acks: Vec::new(),
            watchdog: Watchdog::from_env(),
            modbus_output: None,
            modbus_link_rx: None,
            modbus_link_losses_seen_n: 0,
            drive_timeout: Duration::ZERO,
        }
    }

    /// Sends controller acknowledgements to `acks_tx`.
    #[must_use]
    pub fn with_acks(mut self, acks_tx: mpsc::Sender<PublisherEvent>) -> Self {
        self.acks_tx = Some(acks_tx);
        self
    }

    /// Runs the protocol over one open transport until it fails or `shutdown`. Generic so tests
    /// can use in-memory pipes.
    pub async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut io: T,
        shutdown: &CancellationToken,
    ) -> LinkEnd {
        // PROTOCOL.md §7.2.1: a lone delimiter first flushes whatever the firmware had buffered.
        match timeout(WRITE_TIMEOUT, io.write_all(&[0])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return LinkEnd::Lost(e),
            Err(_elapsed) => {
                return LinkEnd::Lost(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "serial write timed out",
                ));
            }
        }
        let mut framed = Framed::new(io, FirmwareCodec::new());
        self.dropped_bytes_base += self.dropped_bytes_seen;
        self.bad_frames_base += self.bad_frames_seen;
        self.dropped_bytes_seen = 0;
        self.bad_frames_seen = 0;
        // No samples, no clock: whatever the envelope was doing stops until samples flow again.
        self.stop_clock("the firmware link (re)opened");
        if let Err(e) = self.command_actuator(&mut framed).await {
            return LinkEnd::Lost(e);
        }
        // PROTOCOL.md §7.3: heartbeats go out every second whatever else happens.
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            let manifest = match self.handshake(&mut framed, &mut heartbeat, shutdown).await {
                Handshake::Manifest(m) => m,
                Handshake::End(end) => break end,
            };
            self.install_limits(&manifest);
            self.stop_inner_loop("the firmware (re)started");
            self.manifest = Some(manifest);
            info!(
                firmware_version = manifest.version_str(),
                channels = manifest.channels().len(),
                sample_rate_hz = manifest.sample_rate_hz(),
                actuator_max_force_n = self.envelope.limits().map_or(0.0, |l| l.max_force_n),
                "Firmware manifest received; streaming."
            );
            self.stats.update(|s| s.firmware_online = true);
            if self
                .events_tx
                .send(SerialEvent::Manifest(Box::new(manifest)))
                .await
                .is_err()
            {
                break LinkEnd::DownstreamGone;
            }
            match self.stream(&mut framed, &mut heartbeat, shutdown).await {
                StreamEnd::Silent => warn!(
                    silent_ms = self.config.read_timeout_ms,
                    "No frame from the firmware within the read timeout; presuming the link lost and saying Hello again."
                ),
                StreamEnd::Restarted { expected, got } => warn!(
                    expected_index = expected,
                    got_index = got,
                    "Firmware sample index went backwards; treating it as a firmware restart and saying Hello again."
                ),
                StreamEnd::End(end) => break end,
            }
            self.stats.update(|s| s.firmware_online = false);
            self.stop_clock("the firmware restarted or fell silent");
            if let Err(e) = self.command_actuator(&mut framed).await {
                break LinkEnd::Lost(e);
            }
        };
        if matches!(end, LinkEnd::Shutdown | LinkEnd::DownstreamGone) {
            self.go_safe(&mut framed).await;
        }
        end
    }

    /// Sends `Hello` until a `Manifest` answers; each wait is longer than the last.
    async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<T, FirmwareCodec>,
        heartbeat: &mut Interval,
        shutdown: &CancellationToken,
    ) -> Handshake {
        let mut backoff = Backoff::new(self.config.hello_timeout(), HELLO_BACKOFF_MAX);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Err(e) = send(framed, Frame::Hello).await {
                return Handshake::End(LinkEnd::Lost(e));
            }
            let deadline = Instant::now() + backoff.next_delay(&mut self.rng);
            let mut ignored_samples: u64 = 0;
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Handshake::End(LinkEnd::Shutdown),
                    _ = heartbeat.tick() => {
                        if let Err(e) = self.send_heartbeat(framed).await {
                            return Handshake::End(LinkEnd::Lost(e));
                        }
                        continue;
                    }
                    // Without samples every drive is refused, but a safety stop still latches.
                    request = self.requests_rx.recv(), if self.requests_open => {
                        self.take_requests(request);
                        if let Err(e) = self.command_actuator(framed).await {
                            return Handshake::End(LinkEnd::Lost(e));
                        }
                        continue;
                    }
                    () = modbus_link_changed(&mut self.modbus_link_rx) => {
                        self.take_link_report();
                        if let Err(e) = self.command_actuator(framed).await {
                            return Handshake::End(LinkEnd::Lost(e));
                        }
                        continue;
                    }
                    next = timeout_at(deadline, framed.next()) => next,
                };
                let frame = match next {
                    Err(_elapsed) => break,
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(e))) => return Handshake::End(LinkEnd::Lost(io::Error::other(e))),
                    Ok(None) => {
                        return Handshake::End(LinkEnd::Lost(io::ErrorKind::UnexpectedEof.into()));
                    }
                };
                self.note_frame(framed.codec(), &frame);
                match frame {
                    Frame::Manifest(m) => {
                        if ignored_samples > 0 {
                            debug!(
                                samples = ignored_samples,
                                "Discarded samples that arrived before the manifest."
                            );
                        }
                        return Handshake::Manifest(m);
                    }
                    // PROTOCOL.md §7.2.4: samples are meaningless without the manifest.
                    Frame::Samples(s) => ignored_samples += s.sample_count() as u64,
                    Frame::Fault(f) => warn!(
                        code = f.code,
                        sample_index = f.sample_index,
                        "Firmware reported a fault."
                    ),
                    other => {
                        debug!(frame = ?other, "Ignored a frame while waiting for the manifest.")
                    }
                }
            }
            self.note_codec(framed.codec());
            warn!(attempt, path = %self.config.path.display(), "No Manifest in reply to Hello; sending Hello again.");
        }
    }

    /// Forwards frames until silence, a firmware restart, failure or shutdown.
    async fn stream<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<T, FirmwareCodec>,
        heartbeat: &mut Interval,
        shutdown: &CancellationToken,
    ) -> StreamEnd {
        let read_timeout = self.config.read_timeout();
        let mut silent_after = Instant::now() + read_timeout;
        // Both only move forward while the firmware keeps running (PROTOCOL.md §7.5).
        let mut next_sample_index: Option<u64> = None;
        let mut last_heartbeat_index: Option<u64> = None;
        self.last_samples_at = Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return StreamEnd::End(LinkEnd::Shutdown),
                _ = heartbeat.tick() => {
                    if let Err(e) = self.send_heartbeat(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    continue;
                }
                request = self.requests_rx.recv(), if self.requests_open => {
                    self.take_requests(request);
                    if let Err(e) = self.command_actuator(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    continue;
                }
                () = modbus_link_changed(&mut self.modbus_link_rx) => {
                    self.take_link_report();
                    if let Err(e) = self.command_actuator(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    continue;
                }
                () = sleep_until(self.last_command_at + ACTUATOR_REFRESH_INTERVAL), if self.firmware_enabled => {
                    self.check_sample_stall();
                    if let Err(e) = self.command_actuator(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    continue;
                }
                next = timeout_at(silent_after, framed.next()) => next,
            };
            let frame = match next {
                Err(_elapsed) => {
                    self.note_codec(framed.codec());
                    return StreamEnd::Silent;
                }
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => return StreamEnd::End(LinkEnd::Lost(io::Error::other(e))),
                Ok(None) => {
                    return StreamEnd::End(LinkEnd::Lost(io::ErrorKind::UnexpectedEof.into()));
                }
            };
            silent_after = Instant::now() + read_timeout;
            self.note_frame(framed.codec(), &frame);
            let event = match frame {
                Frame::Samples(s) => {
                    if let Some(expected) = next_sample_index.filter(|&e| s.first_sample_index < e)
                    {
                        return StreamEnd::Restarted {
                            expected,
                            got: s.first_sample_index,
                        };
                    }
                    // A gap is time that passed too: count the lost samples' periods.
                    let periods = match next_sample_index {
                        Some(expected) => s.next_sample_index() - expected,
                        None => s.sample_count() as u64,
                    };
                    next_sample_index = Some(s.next_sample_index());
                    self.next_sample_index = next_sample_index;
                    self.last_samples_at = Instant::now();
                    self.watchdog.pet();
                    self.clock_samples(&s, periods);
                    if let Err(e) = self.command_actuator(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    SerialEvent::Samples(s)
                }
                Frame::Manifest(m) => {
                    self.install_limits(&m);
                    self.stop_inner_loop("the firmware announced a new manifest");
                    self.manifest = Some(m);
                    if let Err(e) = self.command_actuator(framed).await {
                        return StreamEnd::End(LinkEnd::Lost(e));
                    }
                    SerialEvent::Manifest(Box::new(m))
                }
                Frame::Heartbeat(h) => {
                    if let Some(last) = last_heartbeat_index.filter(|&l| h.sample_index < l) {
                        return StreamEnd::Restarted {
                            expected: last,
                            got: h.sample_index,
                        };
                    }
                    last_heartbeat_index = Some(h.sample_index);
                    continue;
                }
                Frame::Fault(f) => {
                    warn!(
                        code = f.code,
                        sample_index = f.sample_index,
                        "Firmware reported a fault."
                    );
                    if matches!(f.code, Fault::ACTUATOR_WATCHDOG | Fault::ACTUATOR_FAULT) {
                        // PROTOCOL.md §7.4: the firmware has disabled the actuator itself.
                        self.envelope.firmware_disabled();
                        self.firmware_enabled = false;
                        self.last_command_force_n = 0.0;
                        self.publish_actuator_stats();
                    }
                    continue;
                }
                Frame::ActuatorStatus(st) => {
                    debug!(
                        seq = st.seq,
                        enabled = st.enabled,
                        force_n = st.force_n,
                        "Actuator status."
                    );
                    continue;
                }
                other => {
                    debug!(frame = ?other, "Ignored a frame the firmware should not send.");
                    continue;
                }
            };
            if self.events_tx.send(event).await.is_err() {
                return StreamEnd::End(LinkEnd::DownstreamGone);
            }
        }
    }

    async fn send_heartbeat<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<T, FirmwareCodec>,
    ) -> io::Result<()> {
        // Heartbeats go out every second whatever the firmware does: the loop is alive.
        self.watchdog.pet();
        // The edge has no sample index of its own; PROTOCOL.md §4.6 has it send 0.
        let beat = Heartbeat {
            uptime_ms: self.uptime_ms(),
            sample_index: 0,
        };
        send(framed, Frame::Heartbeat(beat)).await
    }

    /// Commands the actuator off and zero force, and waits briefly for the firmware to confirm.
    /// Best effort: the firmware's watchdog also disables it once commands stop (PROTOCOL.md §7.4).
    async fn go_safe<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<T, FirmwareCodec>,
    ) {
        // A shutdown is deliberate, not a fault: disabled, not latched.
        self.envelope.disable();
        self.stop_clock("shutdown");
        if let Some(tx) = &self.modbus_output {
            // The bus task writes the safe state, and writes it again when it stops.
            tx.send_replace(crate::modbus::ModbusSetpoint::SAFE);
            self.last_command_force_n = 0.0;
            self.publish_actuator_stats();
            return;
        }
        self.actuator_seq = self.actuator_seq.wrapping_add(1);
        let seq = self.actuator_seq;
        let command = ActuatorCommand {
            seq,
            enable: false,
            force_n: 0.0,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        };
        if let Err(e) = send(framed, Frame::ActuatorCommand(command)).await {
            warn!(error = %e, "Could not send the actuator safe-state command.");
            self.publish_actuator_stats();
            return;
        }
        self.firmware_enabled = false;
        self.last_command_force_n = 0.0;
        self.last_command_at = Instant::now();
        self.actuator_commands_total += 1;
        self.publish_actuator_stats();
        let confirmed = timeout(SAFE_STATE_TIMEOUT, async {
            while let Some(Ok(frame)) = framed.next().await {
                // §7.4: a coalesced status reports the latest seq, which is ours.
                if matches!(frame, Frame::ActuatorStatus(st) if st.seq == seq && !st.enabled) {
                    return true;
                }
            }
            false
        })
        .await;
        match confirmed {
            Ok(true) => info!(seq, "Firmware confirmed the actuator is disabled."),
            _ => warn!(
                seq,
                wait_ms = SAFE_STATE_TIMEOUT.as_millis() as u64,
                "Sent the actuator safe-state command; the firmware did not confirm it."
            ),
        }
    }

    /// The envelope limits for a (new) manifest, and the sample silence that means its clock
    /// stopped: the drive timeout's duration, but never less than [`SAMPLE_STALL_MIN`].
    fn install_limits(&mut self, manifest: &Manifest) {
        let limits = EnvelopeLimits::new(&self.actuator, manifest);
        self.envelope.set_limits(limits);
        let timeout_s = limits.map_or(0.0, |l| {
            l.drive_timeout_periods as f64 / manifest.sample_rate_hz()
        });
        self.drive_timeout = Duration::try_from_secs_f64(timeout_s).unwrap_or(Duration::MAX);
        self.stall_after = self.drive_timeout.max(SAMPLE_STALL_MIN);
        if limits.is_none() && manifest.actuator_floor != 0 {
            warn!(
                actuator_floor = manifest.actuator_floor,
                firmware_max_force_n = manifest.actuator_max_force_n,
                "Firmware reports an actuator without a usable force limit; refusing every drive."
            );
        }
    }

    /// Applies `first` and everything queued behind it (so a burst costs one command), in order.
    /// `None` means every sender is gone.
    fn take_requests(&mut self, first: Option<ActuatorRequest>) {
        let Some(first) = first else {
            self.requests_open = false;
            return;
        };
        self.apply_request(first);
        while let Ok(request) = self.requests_rx.try_recv() {
            self.apply_request(request);
        }
        self.publish_actuator_stats();
        for ack in std::mem::take(&mut self.command_acks) {
            if let Some(tx) = &self.acks_tx
                && tx.try_send(PublisherEvent::CommandAck(ack)).is_err()
            {
                warn!(
                    "Could not hand a command acknowledgement to the publisher; the operator will time out waiting for it."
                );
            }
        }
    }

    fn apply_request(&mut self, request: ActuatorRequest) {
        match request {
            ActuatorRequest::Drive(drive) if self.inner.is_running() => {
                let total = {
                    let mut total = 0;
                    self.stats.update(|s| {
                        s.drives_ignored_total += 1;
                        total = s.drives_ignored_total;
                    });
                    total
                };
                if total.is_power_of_two() {
                    warn!(
                        sample_index = drive.sample_index,
                        source = ?drive.source,
                        drives_ignored_total = total,
                        "Ignored a drive: the edge-hosted inner loop owns the actuator."
                    );
                }
            }
            ActuatorRequest::Drive(drive) => {
                if let Err(refusal) = self.envelope.drive(drive) {
                    let total = self.envelope.counters().drives_refused_total;
                    // While latched every drive is refused; a power-of-two cadence keeps the
                    // log readable and still shows the count growing.
                    if total.is_power_of_two() {
                        warn!(
                            reason = %refusal,
                            force_n = drive.force_n,
                            sample_index = drive.sample_index,
                            source = ?drive.source,
                            drives_refused_total = total,
                            "Refused an actuator drive."
                        );
                    }
                }
            }
            ActuatorRequest::Controller(params) => self.prepare_controller(&params),
            ActuatorRequest::Command {
                id,
                action: Action::SetAcquisition { block_samples },
            } => {
                // Blocks are the acquisition task's: it applies and acknowledges this.
                let event = SerialEvent::SetBlockSamples {
                    command_id: id.clone(),
                    block_samples,
                };
                if self.events_tx.try_send(event).is_err() {
                    self.command_acks.push(CommandAck {
                        command_id: id,
                        rig_id: String::new(),
                        status: AckStatus::Refused as i32,
                        applied_at_sample_index: 0,
                        reason: "the acquisition task is busy; send the command again".into(),
                    });
                }
            }
            ActuatorRequest::Command { id, action } => {
                let ack = self.apply_command(&id, action);
                info!(
                    command_id = %ack.command_id,
                    status = ack.status().as_str_name(),
                    applied_at_sample_index = ack.applied_at_sample_index,
                    reason = %ack.reason,
                    safety_state = %self.envelope.state(),
                    "Decided an operator command."
                );
                self.command_acks.push(ack);
            }
            ActuatorRequest::SafetyStop => {
                self.stop_inner_loop("safety stop");
                if self.envelope.state() != SafetyState::Latched {
                    warn!(
                        force_n = self.envelope.output().force_n,
                        "Safety stop: actuator at 0 N and disabled until a reset."
                    );
                }
                self.envelope.safety_stop();
            }
            ActuatorRequest::SafetyReset => {
                if self.envelope.reset() {
                    info!("Safety stop released; drives are accepted again.");
                }
            }
        }
    }

    /// Clocks the envelope with a samples frame that ends `periods` periods after the last
    /// one, running the inner loop on each of its samples when a law is installed.
    fn clock_samples(&mut self, samples: &Samples, periods: u64) {
        let count = samples.sample_count() as u64;
        let running = self.inner.is_running() || self.pending_controller.is_some();
        if !running {
            self.advance_envelope(periods);
            return;
        }
        // Lost samples are time that passed before this frame.
        self.advance_envelope(periods.saturating_sub(count));
        let channels = usize::from(samples.channel_count);
        for s in 0..count {
            let index = samples.first_sample_index + s;
            if let Some(prepared) = self.pending_controller.take() {
                self.install_controller(prepared, index);
            }
            let row = s as usize * channels;
            let Some(force_n) = self.inner.demand(index, &samples.raw[row..row + channels]) else {
                self.advance_envelope(1);
                continue;
            };
            let request = DriveRequest {
                force_n,
                sample_index: index,
                source: DriveSource::EdgeLoop {
                    controller_version: self.inner.version(),
                },
            };
            if let Err(refusal) = self.envelope.drive(request) {
                debug!(reason = %refusal, sample_index = index, force_n, "The envelope refused an inner-loop drive.");
            }
            self.advance_envelope(1);
            let out = self.envelope.output();
            self.inner
                .applied(if out.enable { out.force_n } else { 0.0 });
        }
    }

    /// Applies an operator's actuator command to the envelope; the answer says at which sample
    /// it takes effect, or why not.
    fn apply_command(&mut self, id: &str, action: Action) -> CommandAck {
        let at = self.next_sample_index.unwrap_or(0);
        let ack = |status: AckStatus, reason: String| CommandAck {
            command_id: id.to_owned(),
            rig_id: String::new(),
            status: status as i32,
            applied_at_sample_index: if status == AckStatus::Refused { 0 } else { at },
            reason,
        };
        match action {
            Action::SafetyStop => {
                self.stop_inner_loop("safety stop");
                if self.envelope.state() != SafetyState::Latched {
                    warn!(
                        force_n = self.envelope.output().force_n,
                        command_id = id,
                        "Safety stop: actuator at 0 N and disabled until a reset."
                    );
                }
                self.envelope.safety_stop();
                ack(AckStatus::Latched, String::new())
            }
            Action::SafetyReset => {
                if self.envelope.reset() {
                    info!(
                        command_id = id,
                        "Safety stop released; drives are accepted again."
                    );
                    ack(AckStatus::Applied, String::new())
                } else {
                    ack(AckStatus::Applied, "no safety stop was latched".into())
                }
            }
            Action::ActuatorEnable(false) => {
                self.stop_inner_loop("the actuator was disabled by command");
                self.envelope.disable();
                ack(AckStatus::Applied, String::new())
            }
            Action::ActuatorEnable(true) => match self.envelope.enable() {
                Ok(()) => ack(AckStatus::Applied, String::new()),
                Err(_) => ack(
                    AckStatus::Refused,
                    "a safety stop is latched; send SafetyReset first".into(),
                ),
            },
            Action::SetDrive { force_n } => {
                let Some(limits) = self.envelope.limits() else {
                    return ack(
                        AckStatus::Refused,
                        "the firmware reports no usable actuator (or has not described itself yet)"
                            .into(),
                    );
                };
                if force_n.abs() > limits.max_force_n {
                    return ack(
                        AckStatus::Refused,
                        format!(
                            "force {force_n} N exceeds the actuator limit of {} N (the smaller of                              actuator.max_force_n and the firmware's limit)",
                            limits.max_force_n
                        ),
                    );
                }
                if self.inner.is_running() {
                    return ack(
                        AckStatus::Refused,
                        "the edge-hosted inner loop owns the actuator; switch control off first"
                            .into(),
                    );
                }
                let request = DriveRequest {
                    force_n,
                    sample_index: at.saturating_sub(1),
                    source: DriveSource::Operator,
                };
                match self.envelope.drive(request) {
                    Ok(_) => ack(AckStatus::Applied, String::new()),
                    Err(refusal) => ack(
                        AckStatus::Refused,
                        format!("the safety envelope refused it: {refusal}"),
                    ),
                }
            }
            Action::Rebirth | Action::SetAcquisition { .. } | Action::Excitation { .. } => ack(
                AckStatus::Refused,
                "not an actuator command (a bug: the publisher should have handled it)".into(),
            ),
        }
    }

    /// Checks controller params against the manifest; refusals are acknowledged at once,
    /// accepted params wait for the next sample.
    fn prepare_controller(&mut self, params: &dtop_proto::v1::ControllerParams) {
        match self.inner.prepare(params, self.manifest.as_ref()) {
            Ok(prepared) => {
                if prepared.is_off() {
                    let version = prepared.version();
                    self.inner.install(prepared);
                    self.pending_controller = None;
                    info!(version, "Inner loop switched off by the twin.");
                    let at = self.envelope.last_drive().map_or(0, |d| d.sample_index);
                    self.ack(ControllerAck {
                        version,
                        result: Ok(at),
                    });
                    self.publish_inner_stats();
                } else {
                    self.pending_controller = Some(prepared);
                }
            }
            Err(reason) => {
                warn!(version = params.version, %reason, "Refused controller params.");
                self.stats
                    .update(|s| s.inner_loop_params_refused_total += 1);
                self.ack(ControllerAck {
                    version: params.version,
                    result: Err(reason),
                });
            }
        }
    }

    fn install_controller(&mut self, prepared: crate::inner_loop::PreparedController, at: u64) {
        let version = prepared.version();
        self.inner.install(prepared);
        info!(
            version,
            law = self.inner.description().unwrap_or(""),
            first_sample_index = at,
            "Inner loop running new controller params."
        );
        self.ack(ControllerAck {
            version,
            result: Ok(at),
        });
        self.publish_inner_stats();
    }

    fn stop_inner_loop(&mut self, why: &str) {
        self.pending_controller = None;
        if self.inner.is_running() {
            warn!(
                version = self.inner.version(),
                why, "Inner loop stopped; it needs new params to run again."
            );
            self.inner.stop();
            self.publish_inner_stats();
        }
    }

    fn ack(&self, ack: ControllerAck) {
        if let Some(tx) = &self.acks_tx
            && tx.try_send(PublisherEvent::ControllerAck(ack)).is_err()
        {
            warn!(
                "Could not hand a controller acknowledgement to the publisher; the twin will time out waiting for it."
            );
        }
    }

    fn publish_inner_stats(&self) {
        let (version, running) = (self.inner.version(), self.inner.is_running());
        self.stats.update(|s| {
            s.inner_loop_version = version;
            s.inner_loop_running = running;
        });
    }

    /// Lets `periods` sample periods pass in the envelope and logs a drive timeout.
    fn advance_envelope(&mut self, periods: u64) {
        let (before, was_enabled) = (self.envelope.state(), self.envelope.output().enable);
        let out = self.envelope.advance(periods);
        let after = self.envelope.state();
        if before == SafetyState::Driving && after == SafetyState::SafeTimeout {
            warn!(
                drive_timeout_periods = self.actuator.drive_timeout_periods,
                last_drive_sample_index = self.envelope.last_drive().map(|d| d.sample_index),
                force_n = out.force_n,
                "No actuator drive within the timeout; ramping the force to 0 N at the slew limit, then disabling."
            );
        }
        if was_enabled && !out.enable && after == SafetyState::SafeTimeout {
            info!("Actuator reached 0 N after the drive timeout; disabled.");
        }
    }

    /// An enabled actuator whose samples stopped has no clock left for its envelope: off now.
    fn check_sample_stall(&mut self) {
        let silent = self.last_samples_at.elapsed();
        if silent >= self.stall_after && self.envelope.output().enable {
            warn!(
                silent_ms = silent.as_millis() as u64,
                force_n = self.envelope.output().force_n,
                "No samples while the actuator was enabled: the drive timeout cannot run without them, so the actuator goes to 0 N and off now."
            );
            self.stop_clock("samples stalled while the actuator was enabled");
        }
    }

    /// The envelope's clock stopped (`why`); logs the latch when it was driving.
    fn stop_clock(&mut self, why: &str) {
        let before = self.envelope.state();
        self.envelope.clock_stopped();
        if before != SafetyState::Latched && self.envelope.state() == SafetyState::Latched {
            warn!(
                why,
                "The sample clock stopped while driving: the actuator stays off (latched) until an operator's SafetyReset, so it cannot start again by itself (IEC 60204-1)."
            );
        }
    }

    /// Takes in the Modbus actuator's declared link losses: each latches the envelope.
    fn take_link_report(&mut self) {
        let Some(rx) = &mut self.modbus_link_rx else {
            return;
        };
        let report = *rx.borrow_and_update();
        if report.link_losses_n <= self.modbus_link_losses_seen_n {
            return;
        }
        self.modbus_link_losses_seen_n = report.link_losses_n;
        self.stop_inner_loop("the Modbus actuator's link was lost");
        let before = self.envelope.state();
        self.envelope.actuator_link_lost();
        if before != SafetyState::Latched && self.envelope.state() == SafetyState::Latched {
            warn!(
                link_losses_n = report.link_losses_n,
                "The Modbus actuator was unreachable for longer than the drive timeout: the envelope stays latched until an operator's SafetyReset (IEC 60204-1, no unexpected start-up)."
            );
        }
        self.publish_actuator_stats();
    }

    /// The sample the commanded force was computed from, while driving.
    fn origin_sample_index(&self) -> u64 {
        match self.envelope.last_drive() {
            Some(drive) if self.envelope.state() == SafetyState::Driving => drive.sample_index,
            _ => ActuatorCommand::NO_ORIGIN,
        }
    }

    /// Hands the envelope's output to a Modbus actuator's bus task, if it changed; `false`
    /// when there is no Modbus actuator.
    fn send_modbus_setpoint(&mut self) -> bool {
        let Some(tx) = &self.modbus_output else {
            return false;
        };
        let out = self.envelope.output();
        let origin_sample_index = self.origin_sample_index();
        // The bus task writes changes at once and refreshes an enabled setpoint itself.
        let setpoint = crate::modbus::ModbusSetpoint {
            enable: out.enable,
            force_n: out.force_n,
            origin_sample_index,
            link_timeout: self.drive_timeout,
            link_losses_seen_n: self.modbus_link_losses_seen_n,
        };
        if *tx.borrow() != setpoint {
            tx.send_replace(setpoint);
            self.actuator_commands_total += 1;
            self.last_command_force_n = out.force_n;
        }
        true
    }

    /// Sends the envelope's output while the firmware is, or is about to be, enabled: one
    /// command per drive burst and per samples frame, and a last one that disables it. An actuator
    /// that was never enabled is left alone.
    async fn command_actuator<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        framed: &mut Framed<T, FirmwareCodec>,
    ) -> io::Result<()> {
        let out = self.envelope.output();
        let origin_sample_index = self.origin_sample_index();
        if self.send_modbus_setpoint() {
            self.publish_actuator_stats();
            return Ok(());
        }
        if !(out.enable || self.firmware_enabled) {
            self.publish_actuator_stats();
            return Ok(());
        }
        self.actuator_seq = self.actuator_seq.wrapping_add(1);
        let command = ActuatorCommand {
            seq: self.actuator_seq,
            enable: out.enable,
            // Within ±max_force_n, which is itself an f32 the firmware reported or a config
            // value; the rounding is far below any actuator's resolution.
            force_n: out.force_n as f32,
            origin_sample_index,
        };
        send(framed, Frame::ActuatorCommand(command)).await?;
        self.firmware_enabled = out.enable;
        self.last_command_force_n = f64::from(command.force_n);
        self.last_command_at = Instant::now();
        self.actuator_commands_total += 1;
        self.publish_actuator_stats();
        Ok(())
    }

    fn publish_actuator_stats(&self) {
        let counters = self.envelope.counters();
        let (state, latch_cause) = (self.envelope.state(), self.envelope.latch_cause());
        let (enabled, force_n, commands) = (
            self.firmware_enabled,
            self.last_command_force_n,
            self.actuator_commands_total,
        );
        // A Modbus actuator's bus task reports what the device acknowledged instead.
        let firmware_actuator = self.modbus_output.is_none();
        self.stats.update(|s| {
            s.safety_state = state;
            s.latch_cause = latch_cause;
            s.fault_latches_total = counters.fault_latches_total;
            if firmware_actuator {
                s.actuator_enabled = enabled;
                s.last_applied_force_n = force_n;
            }
            s.actuator_commands_total = commands;
            s.drives_applied_total = counters.drives_applied_total;
            s.drives_refused_total = counters.drives_refused_total;
            s.drive_timeouts_total = counters.drive_timeouts_total;
        });
    }

    /// Counts the frame, then reports any growth of the codec's loss counters.
    fn note_frame(&mut self, codec: &FirmwareCodec, frame: &Frame) {
        let samples = match frame {
            Frame::Samples(s) => s.sample_count() as u64,
            _ => 0,
        };
        self.stats.update(|s| {
            s.frames_in_total += 1;
            s.samples_in_total += samples;
        });
        self.note_codec(codec);
    }

    /// Logs (WARN) and publishes growth of the codec's dropped-bytes and bad-frame counters.
    fn note_codec(&mut self, codec: &FirmwareCodec) {
        let (dropped, bad) = (codec.dropped_bytes_total(), codec.bad_frames_total());
        let new_dropped = dropped.saturating_sub(self.dropped_bytes_seen);
        let new_bad = bad.saturating_sub(self.bad_frames_seen);
        if new_dropped == 0 && new_bad == 0 {
            return;
        }
        self.dropped_bytes_seen = dropped;
        self.bad_frames_seen = bad;
        let (dropped_total, bad_total) = (
            self.dropped_bytes_base + dropped,
            self.bad_frames_base + bad,
        );
        // A link that only carries wrong-version frames is a deployment error (PROTOCOL.md §2.2):
        // the last error names the version seen.
        let last_error = codec
            .last_error()
            .map(|e| e.to_string())
            .unwrap_or_default();
        warn!(
            dropped_bytes = new_dropped,
            bad_frames = new_bad,
            dropped_bytes_total = dropped_total,
            bad_frames_total = bad_total,
            last_error = %last_error,
            "Dropped bytes on the firmware link."
        );
        self.stats.update(|s| {
            s.dropped_bytes_total = dropped_total;
            s.bad_frames_total = bad_total;
        });
    }

    fn uptime_ms(&self) -> u32 {
        // Wraps after 49 days, as the protocol's u32 field does on the firmware side too.
        self.started.elapsed().as_millis() as u32
    }
}

/// Writes one frame, giving up after [`WRITE_TIMEOUT`].
async fn send<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, FirmwareCodec>,
    frame: Frame,
) -> io::Result<()> {
    match timeout(WRITE_TIMEOUT, framed.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "serial write timed out",
        )),
    }
}

/// Resolves when a Modbus actuator's link report changes; never without one (or once its
/// bus task is gone).
async fn modbus_link_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<crate::modbus::ModbusLinkReport>>,
) {
    if let Some(r) = rx
        && r.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    //! The serial task over an in-memory pipe, with tokio's clock paused: timer behaviour is
    //! exact and instant.

    use dtop_firmware::{ActuatorStatus, ChannelDesc, ChannelKind};
    use tokio::io::DuplexStream;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::safety::DriveSource;
    use crate::stats::EdgeStats;

    const WAIT: Duration = Duration::from_secs(10);

    /// The firmware end of a running link.
    struct Bench {
        fw: Framed<DuplexStream, FirmwareCodec>,
        requests_tx: mpsc::Sender<ActuatorRequest>,
        stats: watch::Receiver<EdgeStats>,
        shutdown: CancellationToken,
        link: JoinHandle<LinkEnd>,
    }

    fn manifest() -> Manifest {
        let channels = [ChannelDesc {
            id: 0,
            kind: ChannelKind::Acceleration,
            floor: 3,
            scale: 0.001,
        }];
        // 1 kHz, actuator on floor 3 limited to 10 N by the firmware.
        Manifest::new("bench", 1_000_000, 3, 3, 10.0, &channels).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn on(force_n: f32) -> (bool, f32) {
        (true, force_n)
    }

    const OFF: (bool, f32) = (false, 0.0);

    /// A link driven by a 20 N / 2000 N/s / 50-period config (2 N per period at 1 kHz), past its
    /// handshake.
    async fn start() -> Bench {
        let (edge_io, fw_io) = tokio::io::duplex(1 << 16);
        let (events_tx, mut events_rx) = mpsc::channel(64);
        let (requests_tx, requests_rx) = mpsc::channel(ACTUATOR_QUEUE_CAPACITY);
        let (stats_tx, stats) = watch::channel(EdgeStats::default());
        let config = SerialConfig {
            path: "in-memory".into(),
            baud: 921_600,
            hello_timeout_ms: 1_000,
            read_timeout_ms: 3_000,
        };
        let actuator = ActuatorConfig {
            max_force_n: 20.0,
            max_slew_n_per_s: 2000.0,
            drive_timeout_periods: 50,
        };
        let mut link = Link::new(
            config,
            actuator,
            events_tx,
            requests_rx,
            StatsHandle::new(stats_tx),
        );
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let link = tokio::spawn(async move { link.drive(edge_io, &token).await });
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        let mut fw = Framed::new(fw_io, FirmwareCodec::new());
        loop {
            match timeout(WAIT, fw.next()).await {
                Ok(Some(Ok(Frame::Hello))) => break,
                Ok(Some(Ok(_))) => {}
                other => panic!("no Hello from the edge: {other:?}"),
            }
        }
        fw.send(Frame::Manifest(manifest()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Bench {
            fw,
            requests_tx,
            stats,
            shutdown,
            link,
        }
    }

    impl Bench {
        async fn request(&self, request: ActuatorRequest) {
            self.requests_tx
                .send(request)
                .await
                .unwrap_or_else(|_| panic!("the serial task is gone"));
        }

        async fn drive(&self, force_n: f64) {
            self.request(ActuatorRequest::Drive(DriveRequest {
                force_n,
                sample_index: 0,
                source: DriveSource::Operator,
            }))
            .await;
        }

        /// Sends samples `first..first + n` and waits until the edge has counted them.
        async fn samples(&mut self, first: u64, n: u64) {
            let frame =
                Samples::new(first, 1, vec![0; n as usize]).unwrap_or_else(|e| panic!("{e:?}"));
            self.fw
                .send(Frame::Samples(frame))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            self.wait_stats(|s| s.samples_in_total == first + n).await;
        }

        async fn wait_stats(&self, ready: impl FnMut(&EdgeStats) -> bool) -> EdgeStats {
            let mut stats = self.stats.clone();
            match timeout(WAIT, stats.wait_for(ready)).await {
                Ok(Ok(s)) => s.clone(),
                _ => panic!("stats never got there: {:?}", *self.stats.borrow()),
            }
        }

        /// The next actuator command, answered as PROTOCOL.md §7.4 says; heartbeats skipped.
        async fn command(&mut self) -> ActuatorCommand {
            loop {
                match self.fw.next().await {
                    Some(Ok(Frame::ActuatorCommand(c))) => {
                        let status = ActuatorStatus {
                            seq: c.seq,
                            enabled: c.enable,
                            force_n: if c.enable { c.force_n } else { 0.0 },
                            applied_at_sample_index: 0,
                        };
                        let _ = self.fw.send(Frame::ActuatorStatus(status)).await;
                        return c;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("link ended: {other:?}"),
                }
            }
        }

        async fn expect_command(&mut self) -> ActuatorCommand {
            timeout(WAIT, self.command())
                .await
                .unwrap_or_else(|_| panic!("no actuator command"))
        }
    }

    fn shape(c: ActuatorCommand) -> (bool, f32) {
        (c.enable, c.force_n)
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_an_enabled_actuator_and_cuts_it_off_when_samples_stop() {
        let mut bench = start().await;
        bench.drive(5.0).await;
        bench.wait_stats(|s| s.drives_refused_total == 1).await;

        bench.samples(0, 10).await;
        bench.drive(5.0).await;
        let first = bench.expect_command().await;
        assert_eq!((first.seq, shape(first)), (1, on(2.0)));
        let t0 = Instant::now();
        // Unchanged force, re-sent against the firmware watchdog (PROTOCOL.md §7.4).
        for (ms, seq) in [(200, 2), (400, 3)] {
            let c = bench.expect_command().await;
            assert_eq!((c.seq, shape(c)), (seq, on(2.0)));
            assert_eq!(t0.elapsed(), Duration::from_millis(ms));
        }
        // 500 ms without samples: no clock for the envelope, so off at once.
        let c = bench.expect_command().await;
        assert_eq!((c.seq, shape(c)), (4, OFF));
        assert_eq!(t0.elapsed(), Duration::from_millis(600));
        assert!(
            timeout(Duration::from_secs(2), bench.command())
                .await
                .is_err(),
            "a disabled actuator needs no more commands"
        );
        let s = bench.wait_stats(|s| !s.actuator_enabled).await;
        // Stalled while driving: latched, so the drive cannot resume by itself.
        assert_eq!(s.safety_state, SafetyState::Latched);
        assert_eq!(s.latch_cause, Some(crate::safety::LatchCause::ClockLost));
        assert_eq!((s.drives_applied_total, s.drives_refused_total), (1, 1));
        assert_eq!(s.last_applied_force_n, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_safety_stop_cuts_the_force_at_once_and_holds_until_reset() {
        let mut bench = start().await;
        bench.samples(0, 10).await;
        bench.drive(5.0).await;
        assert_eq!(shape(bench.expect_command().await), on(2.0));
        bench.samples(10, 10).await;
        assert_eq!(shape(bench.expect_command().await), on(5.0));

        bench.request(ActuatorRequest::SafetyStop).await;
        let stop = bench.expect_command().await;
        assert_eq!(shape(stop), OFF);
        bench.drive(5.0).await;
        bench.samples(20, 10).await;
        let s = bench.wait_stats(|s| s.drives_refused_total == 1).await;
        assert_eq!(s.safety_state, SafetyState::Latched);

        bench.request(ActuatorRequest::SafetyReset).await;
        bench.drive(3.0).await;
        let next = bench.expect_command().await;
        assert_eq!(
            (next.seq, shape(next)),
            (stop.seq + 1, on(2.0)),
            "nothing was sent while latched"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_disables_a_driven_actuator() {
        let mut bench = start().await;
        bench.samples(0, 10).await;
        bench.drive(-7.0).await;
        assert_eq!(shape(bench.expect_command().await), on(-2.0));
        bench.shutdown.cancel();
        assert_eq!(shape(bench.expect_command().await), OFF);
        let end = timeout(WAIT, &mut bench.link)
            .await
            .unwrap_or_else(|_| panic!("link did not stop"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(end, LinkEnd::Shutdown), "{end:?}");
        let s = bench.stats.borrow().clone();
        assert!(!s.actuator_enabled);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_firmware_watchdog_trip_and_ramps_up_again() {
        let mut bench = start().await;
        bench.samples(0, 10).await;
        bench.drive(8.0).await;
        assert_eq!(shape(bench.expect_command().await), on(2.0));
        bench.samples(10, 2).await;
        assert_eq!(shape(bench.expect_command().await), on(6.0));
        let fault = dtop_firmware::Fault {
            code: dtop_firmware::Fault::ACTUATOR_WATCHDOG,
            sample_index: 12,
        };
        bench
            .fw
            .send(Frame::Fault(fault))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        bench.wait_stats(|s| !s.actuator_enabled).await;
        bench.samples(12, 1).await;
        bench.drive(8.0).await;
        assert_eq!(
            shape(bench.expect_command().await),
            on(2.0),
            "ramps from 0 N, not back to 6 N"
        );
    }
}
