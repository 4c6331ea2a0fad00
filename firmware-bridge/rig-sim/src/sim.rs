//! Owns the running simulator: `start()` wires the pty, the Modbus server and the firmware
//! task, and `SimHandle` reports on them. The firmware task is the single owner of the
//! `Firmware` state machine; everything else talks to it through `Event`s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dtop_firmware::{ActuatorCommand, Frame, Samples};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_modbus::ExceptionCode;
use tokio_util::sync::CancellationToken;

use crate::config::{DamageConfig, SimConfig};
use crate::control;
use crate::error::SimError;
use crate::firmware::Firmware;
use crate::latency::LatencyProbe;
use crate::link::{self, Outgoing};
use crate::modbus;
use crate::pty::{self, PtyLink};
use crate::registers::{self, RegisterReply, RegisterRequest};
use crate::truth_log::{self as truth, TruthLog};

/// Frames from the edge and requests from Modbus clients waiting for the firmware task.
const EVENT_QUEUE: usize = 64;
/// Control frames (manifest, status, heartbeat, fault) waiting for the writer. Dropped, and
/// counted, only if the writer has been stuck for this many of them.
const CONTROL_QUEUE: usize = 32;
/// Samples frames waiting for the writer: our "ring buffer". Kept short so that a stalled
/// reader shows up as a full queue within about one write-stall timeout.
const SAMPLES_QUEUE: usize = 2;

/// What the firmware task reacts to, besides its timers.
#[derive(Debug)]
pub enum Event {
    /// A valid frame from the edge.
    Frame(Frame),
    /// A Modbus register request; the answer goes back on `reply_tx`.
    Register {
        /// The request.
        request: RegisterRequest,
        /// Where the reply (or the Modbus exception) goes.
        reply_tx: oneshot::Sender<Result<RegisterReply, ExceptionCode>>,
    },
    /// A storey change commanded while running (`crate::control`); the change as scheduled,
    /// or every problem with it, goes back on `reply_tx`.
    Damage {
        /// The change asked for.
        change: DamageConfig,
        /// Where the answer goes.
        reply_tx: oneshot::Sender<Result<AppliedChange, Vec<String>>>,
    },
}

/// A run-time change as the rig scheduled it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedChange {
    /// The change, its `at_s` moved to the next sample if it was earlier.
    pub change: DamageConfig,
    /// Index of the first sample it acts on.
    pub from_sample_index: u64,
}

/// Live counters, shared by the tasks that bump them.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) samples_generated_total: AtomicU64,
    pub(crate) frames_sent_total: AtomicU64,
    pub(crate) frames_dropped_total: AtomicU64,
    pub(crate) control_frames_dropped_total: AtomicU64,
    pub(crate) rx_bad_frames_total: AtomicU64,
    pub(crate) rx_dropped_bytes_total: AtomicU64,
}

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Samples the ADC took (sent or not).
    pub samples_generated_total: u64,
    /// `Samples` frames written whole to the pty.
    pub frames_sent_total: u64,
    /// `Samples` frames dropped because the pty made no progress (ring-buffer overflow).
    pub frames_dropped_total: u64,
    /// Control frames dropped because the writer was stuck.
    pub control_frames_dropped_total: u64,
    /// Bad frames received from the edge (PROTOCOL.md §6.4).
    pub rx_bad_frames_total: u64,
    /// Bytes received from the edge and dropped (PROTOCOL.md §6.4).
    pub rx_dropped_bytes_total: u64,
}

impl Counters {
    fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            samples_generated_total: get(&self.samples_generated_total),
            frames_sent_total: get(&self.frames_sent_total),
            frames_dropped_total: get(&self.frames_dropped_total),
            control_frames_dropped_total: get(&self.control_frames_dropped_total),
            rx_bad_frames_total: get(&self.rx_bad_frames_total),
            rx_dropped_bytes_total: get(&self.rx_dropped_bytes_total),
        }
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    pty_path: PathBuf,
    modbus_addr: Option<SocketAddr>,
    counters: Arc<Counters>,
    /// Child of the caller's token: cancelled on shutdown or when a task fails, so one
    /// failing task stops the others.
    stop: CancellationToken,
    max_reached_rx: watch::Receiver<bool>,
    tasks: Vec<(&'static str, JoinHandle<Result<(), SimError>>)>,
}

impl SimHandle {
    /// The pty slave the edge should open (`/dev/pts/N`).
    pub fn pty_path(&self) -> &Path {
        &self.pty_path
    }

    /// The Modbus TCP address actually bound, if the server is on.
    pub fn modbus_addr(&self) -> Option<SocketAddr> {
        self.modbus_addr
    }

    /// Current counters.
    pub fn stats(&self) -> SimStats {
        self.counters.snapshot()
    }

    /// Resolves with true once `max_samples` samples have been taken, every frame of them
    /// has been written to the pty or dropped, and the truth log is flushed; with false if the
    /// simulator stops first.
    /// Never resolves before shutdown when `max_samples` is unset.
    pub async fn wait_max_samples(&self) -> bool {
        let mut rx = self.max_reached_rx.clone();
        tokio::select! {
            reached = async { rx.wait_for(|reached| *reached).await.is_ok() } => reached,
            () = self.stop.cancelled() => *self.max_reached_rx.borrow(),
        }
    }

    /// Resolves when the simulator stops, by shutdown or because a task failed; `join()`
    /// then tells which.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Stops the simulator (same as cancelling the token given to `start`).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits for every task to finish and returns the final counters, or the first task
    /// error. Call after cancelling the shutdown token (or `shutdown()`).
    pub async fn join(self) -> Result<SimStats, SimError> {
        let mut first_error = None;
        for (name, task) in self.tasks {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) => Err(SimError::Task(format!("{name}: {e}"))),
            };
            if let Err(e) = outcome {
                tracing::error!(task = name, error = %e, "Simulator task failed.");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.counters.snapshot()),
        }
    }
}

/// Validates `config`, builds the model, opens the pty (and the Modbus listener and truth
/// log, if configured) and spawns the simulator. Nothing is opened if the config is invalid.
pub async fn start(config: SimConfig, shutdown: CancellationToken) -> Result<SimHandle, SimError> {
    config.validate()?;
    let firmware = Firmware::new(&config)?;
    let truth_log = match &config.truth_log {
        Some(path) => Some(TruthLog::create(path).await?),
        None => None,
    };
    let changes_log = match &config.truth_log {
        Some(path) => {
            let changes = truth::changes_path(path);
            truth::create_changes(&changes, &config.damage, config.sample_rate_hz).await?;
            Some(changes)
        }
        None => None,
    };
    let control_socket = match &config.control_socket {
        Some(path) => Some((control::bind(path)?, path.clone())),
        None => None,
    };
    let modbus = match config.modbus_listen {
        Some(addr) => Some(modbus::bind(addr).await?),
        None => None,
    };
    let pty = pty::open()?;
    let link = match &config.pty_link {
        Some(path) => Some(PtyLink::create(path, &pty.path)?),
        None => None,
    };

    let stop = shutdown.child_token();
    let counters = Arc::new(Counters::default());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (samples_tx, samples_rx) = mpsc::channel(SAMPLES_QUEUE);
    let (max_reached_tx, max_reached_rx) = watch::channel(false);
    let (reader, writer) = tokio::io::split(pty.master);
    let pty_path = pty.path;

    let mut tasks = Vec::new();
    let task = FirmwareTask {
        firmware,
        events_rx,
        control_tx,
        counters: Arc::clone(&counters),
        boot: Instant::now(),
        frame_period: frame_period(&config),
        heartbeat_period: Duration::from_millis(config.heartbeat_period_ms),
        stall_timeout: Duration::from_millis(config.write_stall_timeout_ms),
        first_lost: None,
        out: Vec::new(),
        changes_log,
        changes: Vec::new(),
        sample_rate_hz: config.sample_rate_hz,
        latency: config
            .latency_log
            .clone()
            .map(|path| (path, LatencyProbe::default())),
    };
    let keepalive = pty.slave_keepalive;
    let firmware_stop = stop.clone();
    tasks.push((
        "firmware",
        spawn_stopping(stop.clone(), async move {
            let result = task.run(samples_tx, firmware_stop).await;
            // Held to here: the edge's side of the pty and its link live as long as the
            // firmware does.
            drop((keepalive, link));
            result
        }),
    ));
    tasks.push((
        "pty reader",
        spawn_stopping(
            stop.clone(),
            link::run_reader(
                reader,
                events_tx.clone(),
                Arc::clone(&counters),
                stop.clone(),
            ),
        ),
    ));
    tasks.push((
        "pty writer",
        spawn_stopping(
            stop.clone(),
            link::run_writer(
                writer,
                control_rx,
                samples_rx,
                truth_log,
                Arc::clone(&counters),
                max_reached_tx,
                stop.clone(),
            ),
        ),
    ));
    if let Some((listener, path)) = control_socket {
        tasks.push((
            "control",
            spawn_stopping(
                stop.clone(),
                control::serve(listener, path, events_tx.clone(), stop.clone()),
            ),
        ));
    }
    let modbus_addr = modbus.as_ref().map(|(_, addr)| *addr);
    if let Some((listener, addr)) = modbus {
        tasks.push((
            "modbus",
            spawn_stopping(
                stop.clone(),
                modbus::serve(listener, addr, events_tx, stop.clone()),
            ),
        ));
    }
    tracing::info!(
        pty = %pty_path.display(),
        modbus = ?modbus_addr,
        seed = config.seed,
        speed = config.speed,
        "Rig simulator started; waiting for Hello."
    );
    Ok(SimHandle {
        pty_path,
        modbus_addr,
        counters,
        stop,
        max_reached_rx,
        tasks,
    })
}

/// Spawns `task`; if it fails, cancels `stop` so its siblings wind down too.
fn spawn_stopping<F>(stop: CancellationToken, task: F) -> JoinHandle<Result<(), SimError>>
where
    F: Future<Output = Result<(), SimError>> + Send + 'static,
{
    tokio::spawn(async move {
        let result = task.await;
        if result.is_err() {
            stop.cancel();
        }
        result
    })
}

/// Wall-clock time between frames, or None in lock-step mode.
fn frame_period(config: &SimConfig) -> Option<Duration> {
    (config.speed > 0.0).then(|| {
        Duration::from_secs_f64(
            f64::from(config.samples_per_frame) / config.sample_rate_hz / config.speed,
        )
    })
}

/// The I/O shell around `Firmware`: timers in, frames out.
struct FirmwareTask {
    firmware: Firmware,
    events_rx: mpsc::Receiver<Event>,
    control_tx: mpsc::Sender<Frame>,
    counters: Arc<Counters>,
    /// Firmware uptime starts here.
    boot: Instant,
    /// None = lock-step.
    frame_period: Option<Duration>,
    heartbeat_period: Duration,
    stall_timeout: Duration,
    /// First sample index of the current run of dropped frames. While set, the writer is
    /// known to be stuck, so new frames are dropped at once instead of waiting again.
    first_lost: Option<u64>,
    /// Reused buffer for the state machine's replies.
    out: Vec<Frame>,
    /// Where run-time structural changes are logged (beside the truth log); None = not logged.
    changes_log: Option<PathBuf>,
    /// Run-time changes scheduled but not yet logged.
    changes: Vec<DamageConfig>,
    sample_rate_hz: f64,
    /// Where to write the loop latency at exit, and the probe; None = not measured.
    latency: Option<(PathBuf, LatencyProbe)>,
}

impl FirmwareTask {
    /// `samples_tx` is passed in rather than kept in `self`, so a pending permit on it does
    /// not borrow the whole task while the other branches mutate the state machine.
    async fn run(
        mut self,
        samples_tx: mpsc::Sender<Outgoing>,
        cancel: CancellationToken,
    ) -> Result<(), SimError> {
        let mut heartbeat =
            tokio::time::interval_at(self.boot + self.heartbeat_period, self.heartbeat_period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut ticker: Option<Interval> = self.frame_period.map(|period| {
            let mut ticker = tokio::time::interval(period);
            // Burst: after a stall the sample clock catches up, so the index keeps pace with
            // time and the edge sees the lost frames as a gap.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            ticker
        });
        // A frame the writer has not taken yet, and when we give up on it.
        let mut pending: Option<(Samples, Instant)> = None;
        let mut max_state = MaxState::Streaming;
        let far_future = self.boot + Duration::from_secs(86_400 * 365);

        loop {
            let can_produce = pending.is_none() && self.firmware.can_stream();
            let watchdog_at = self.firmware.watchdog_deadline().map(|d| self.boot + d);
            let give_up_at = pending.as_ref().map(|(_, at)| *at);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                event = self.events_rx.recv() => match event {
                    Some(event) => {
                        let was_streaming = self.firmware.is_streaming();
                        self.handle_event(event);
                        self.log_changes().await?;
                        if !was_streaming && self.firmware.is_streaming() {
                            if let Some(ticker) = ticker.as_mut() {
                                ticker.reset();
                            }
                            tracing::info!(
                                sample_index = self.firmware.next_sample_index(),
                                "Edge said Hello; streaming samples."
                            );
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(watchdog_at.unwrap_or(far_future)), if watchdog_at.is_some() => {
                    let now = self.uptime();
                    if self.firmware.check_watchdog(now, &mut self.out) {
                        tracing::warn!(
                            sample_index = self.firmware.next_sample_index(),
                            "Edge silent while the actuator was enabled; actuator put in its safe state."
                        );
                    }
                    self.send_control();
                },
                _ = heartbeat.tick() => {
                    let frame = self.firmware.heartbeat(self.uptime());
                    self.out.push(frame);
                    self.send_control();
                },
                permit = samples_tx.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else { break };
                    if let Some((samples, _)) = pending.take() {
                        permit.send(Outgoing::Samples(samples));
                        self.end_drop_run();
                    }
                },
                // Queued behind the last samples, so the writer flushes the truth log only
                // after writing them; awaited here, not inline, so a stuck pty cannot stop
                // heartbeats, the watchdog or Modbus.
                permit = samples_tx.reserve(), if max_state == MaxState::Announcing => {
                    let Ok(permit) = permit else { break };
                    permit.send(Outgoing::MaxSamplesReached);
                    max_state = MaxState::Announced;
                },
                () = tokio::time::sleep_until(give_up_at.unwrap_or(far_future)), if give_up_at.is_some() => {
                    if let Some((samples, _)) = pending.take() {
                        self.drop_frame(&samples);
                    }
                },
                _ = tick(&mut ticker), if can_produce && ticker.is_some() => {
                    pending = self.produce(&samples_tx);
                },
                () = std::future::ready(()), if can_produce && ticker.is_none() => {
                    pending = self.produce(&samples_tx);
                },
            }
            if max_state == MaxState::Streaming
                && pending.is_none()
                && self.firmware.max_samples_reached()
            {
                max_state = MaxState::Announcing;
                tracing::info!(
                    samples = self.firmware.next_sample_index(),
                    frames_sent = self.counters.frames_sent_total.load(Ordering::Relaxed),
                    frames_dropped = self.counters.frames_dropped_total.load(Ordering::Relaxed),
                    "Reached max_samples; streaming stopped, still answering the edge."
                );
            }
        }
        tracing::info!(
            samples = self.firmware.next_sample_index(),
            "Firmware stopped."
        );
        if let Some((path, probe)) = self.latency.take() {
            tokio::fs::write(&path, probe.to_csv())
                .await
                .map_err(|source| SimError::LatencyLog {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(
                path = %path.display(),
                commands = probe.records().len(),
                unmatched = probe.unmatched_total(),
                "Wrote the control-loop latency log."
            );
        }
        Ok(())
    }

    /// Appends the run-time changes scheduled since the last call to the changes log.
    async fn log_changes(&mut self) -> Result<(), SimError> {
        for change in std::mem::take(&mut self.changes) {
            tracing::info!(
                storey = change.storey,
                stiffness_factor = change.stiffness_factor,
                damping_factor = change.damping_factor,
                at_s = change.at_s,
                ramp_s = change.ramp_s,
                "Structural change commanded."
            );
            if let Some(path) = &self.changes_log {
                truth::append_change(path, &change, self.sample_rate_hz).await?;
            }
        }
        Ok(())
    }

    fn uptime(&self) -> Duration {
        Instant::now().saturating_duration_since(self.boot)
    }

    fn handle_event(&mut self, event: Event) {
        let now = self.uptime();
        match event {
            Event::Frame(frame) => {
                let origin = match &frame {
                    Frame::ActuatorCommand(c)
                        if c.origin_sample_index != ActuatorCommand::NO_ORIGIN =>
                    {
                        Some(c.origin_sample_index)
                    }
                    _ => None,
                };
                self.firmware.handle_frame(frame, now, &mut self.out);
                if let (Some(origin), Some((_, probe))) = (origin, self.latency.as_mut()) {
                    probe.applied(origin, self.firmware.next_sample_index(), now);
                }
            }
            Event::Register { request, reply_tx } => {
                let names_origin = matches!(
                    &request,
                    RegisterRequest::WriteHolding { address, words, .. }
                        if usize::from(*address) + words.len() > usize::from(registers::HOLDING_ORIGIN)
                );
                let reply = self
                    .firmware
                    .handle_register_request(request, now, &mut self.out);
                let origin = self.firmware.actuator_origin();
                if names_origin
                    && reply.is_ok()
                    && origin != u64::MAX
                    && let Some((_, probe)) = self.latency.as_mut()
                {
                    probe.applied(origin, self.firmware.next_sample_index(), now);
                }
                // The client may have timed out and gone; nothing to do about that here.
                let _ = reply_tx.send(reply);
            }
            Event::Damage { change, reply_tx } => {
                let reply = self.firmware.schedule_damage(change).map(|change| {
                    self.changes.push(change.clone());
                    AppliedChange {
                        from_sample_index: truth::first_sample_index(
                            change.at_s,
                            self.sample_rate_hz,
                        ),
                        change,
                    }
                });
                // As above: the client may be gone.
                let _ = reply_tx.send(reply);
            }
        }
        self.send_control();
    }

    /// Queues the state machine's replies for the writer without ever waiting: a stuck
    /// writer must not stop the sample clock or the watchdog.
    fn send_control(&mut self) {
        for frame in self.out.drain(..) {
            match self.control_tx.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(frame)) => {
                    self.counters
                        .control_frames_dropped_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?frame, "Writer stuck; dropped a control frame.");
                }
                // The writer only stops on shutdown.
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Takes the next frame and hands it to the writer if it has room. Returns the frame if
    /// it must wait for room (with the time to give up), None if it was sent or dropped.
    fn produce(&mut self, samples_tx: &mpsc::Sender<Outgoing>) -> Option<(Samples, Instant)> {
        let samples = self.firmware.next_samples()?;
        let taken = samples.sample_count() as u64;
        let now = self.uptime();
        if let Some((_, probe)) = self.latency.as_mut() {
            probe.sampled(samples.first_sample_index, taken, now);
        }
        self.counters
            .samples_generated_total
            .fetch_add(taken, Ordering::Relaxed);
        match samples_tx.try_reserve() {
            Ok(permit) => {
                permit.send(Outgoing::Samples(samples));
                self.end_drop_run();
                None
            }
            // Timed mode only: in lock-step there is no clock to keep pace with, and dropping
            // at once would spin the CPU generating frames nobody reads.
            Err(TrySendError::Full(()))
                if self.first_lost.is_some() && self.frame_period.is_some() =>
            {
                self.drop_frame(&samples);
                None
            }
            Err(TrySendError::Full(())) => Some((samples, Instant::now() + self.stall_timeout)),
            // The writer stops only on shutdown or failure, and both cancel this task too.
            Err(TrySendError::Closed(())) => None,
        }
    }

    /// A frame got through: if frames were lost before it, tell the edge (PROTOCOL.md §4.7).
    fn end_drop_run(&mut self) {
        if let Some(first_lost) = self.first_lost.take() {
            tracing::warn!(
                first_lost,
                dropped_total = self.counters.frames_dropped_total.load(Ordering::Relaxed),
                "The pty is being read again; samples were lost."
            );
            self.out.push(Firmware::samples_dropped_fault(first_lost));
            self.send_control();
        }
    }

    fn drop_frame(&mut self, samples: &Samples) {
        self.counters
            .frames_dropped_total
            .fetch_add(1, Ordering::Relaxed);
        if self.first_lost.is_none() {
            self.first_lost = Some(samples.first_sample_index);
            tracing::warn!(
                first_lost = samples.first_sample_index,
                "Nobody is reading the pty; dropping frames like a full firmware ring buffer."
            );
        }
    }
}

/// Progress towards telling the writer that `max_samples` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MaxState {
    Streaming,
    Announcing,
    Announced,
}

/// Ticks `ticker`, or never resolves without one.
async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
