//! Owns the firmware serial port: opens (and reopens) it, does the Hello → Manifest handshake,
//! sends heartbeats, watches for silence, forwards manifests and sample frames downstream, and
//! leaves the actuator in its safe state on shutdown. Knows nothing of blocks or MQTT.

use std::io;
use std::time::Duration;

use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{ActuatorCommand, Frame, Heartbeat, Manifest, Samples};
use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep, timeout, timeout_at};
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::SerialConfig;
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

/// What the serial task hands downstream, in arrival order.
#[derive(Debug, Clone)]
pub enum SerialEvent {
    /// The firmware (re)announced itself, after a `Hello`.
    Manifest(Box<Manifest>),
    Samples(Samples),
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

/// The serial task: drives `port`, reopening the configured path with backoff whenever the link
/// is lost, until `shutdown`. Returns when downstream is gone or after shutdown.
pub async fn run(
    config: SerialConfig,
    port: SerialStream,
    events_tx: mpsc::Sender<SerialEvent>,
    stats: StatsHandle,
    shutdown: CancellationToken,
) -> LinkEnd {
    let mut link = Link::new(config, events_tx, stats);
    let mut port = Some(port);
    let mut backoff = Backoff::new(link.config.hello_timeout(), HELLO_BACKOFF_MAX);
    let mut rng = StdRng::from_os_rng();
    loop {
        let Some(io) = port.take() else {
            let delay = backoff.next_delay(&mut rng);
            tokio::select! {
                () = shutdown.cancelled() => return LinkEnd::Shutdown,
                () = sleep(delay) => {}
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
        events_tx: mpsc::Sender<SerialEvent>,
        stats: StatsHandle,
    ) -> Self {
        Self {
            config,
            events_tx,
            stats,
            started: Instant::now(),
            dropped_bytes_base: 0,
            bad_frames_base: 0,
            dropped_bytes_seen: 0,
            bad_frames_seen: 0,
            actuator_seq: 0,
            rng: StdRng::from_os_rng(),
        }
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
        // PROTOCOL.md §7.3: heartbeats go out every second whatever else happens.
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            let manifest = match self.handshake(&mut framed, &mut heartbeat, shutdown).await {
                Handshake::Manifest(m) => m,
                Handshake::End(end) => break end,
            };
            info!(
                firmware_version = manifest.version_str(),
                channels = manifest.channels().len(),
                sample_rate_hz = manifest.sample_rate_hz(),
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
                    next_sample_index = Some(s.next_sample_index());
                    SerialEvent::Samples(s)
                }
                Frame::Manifest(m) => SerialEvent::Manifest(Box::new(m)),
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
        self.actuator_seq = self.actuator_seq.wrapping_add(1);
        let seq = self.actuator_seq;
        let command = ActuatorCommand {
            seq,
            enable: false,
            force_n: 0.0,
        };
        if let Err(e) = send(framed, Frame::ActuatorCommand(command)).await {
            warn!(error = %e, "Could not send the actuator safe-state command.");
            return;
        }
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
