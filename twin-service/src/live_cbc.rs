//! Owns one rig's live control-based continuation run on the twin (issue 15): the admission of
//! an operator's `RunCbc`, the run's channels and configuration, the hand-shake with the edge
//! (each target goes out as a `ControllerParams` version and runs from the sample the edge's
//! `controller/{version}` acknowledgement names), feeding the live samples of the actuator's
//! floor to [`dtop_nonlinear::LiveCbc`], and what the run leaves behind: one `dtop_twin_cbc`
//! line per point, one `dtop_twin_cbc_run` line when it ends, and the run's status as JSON for
//! `dtop/v1/twin/{rig}/cbc` (retained).
//!
//! Pure and synchronous: the rig actor ([`crate::rig`]) owns the run, passes wall time and
//! samples in, turns [`RunNext::Send`] into params through its [`crate::control::RigController`]
//! (which owns the params versions) and publishes what this module encodes.
//!
//! # The model
//! The run's quasi-Newton factors come from the rig's linear model: the building the twin
//! estimates on, without its inertial actuator, forced at the actuator's floor. A live run
//! measures the force the floor receives (a shaker's force gauge), so the proof mass is not
//! part of the structure being continued. The factors only speed the iteration up: every point
//! is judged on the measured force and response alone.

use std::fmt::Write as _;

use dtop_dynamics::ShearBuildingConfig;
use dtop_nonlinear::cbc::{CbcPoint, CbcStop};
use dtop_nonlinear::{
    LiveCbc, LiveCbcConfig, LiveNext, LiveTarget, NonlinearChain, NonlinearChainConfig,
};
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::{ChannelKind, CommandAck, RunCbc};
use serde::Serialize;

use crate::ingest::Manifest;
use crate::lineproto::{Precision, escape_key, write_float};

/// Points of every run, one per converged (or last unconverged) frequency.
pub const POINT_MEASUREMENT: &str = "dtop_twin_cbc";
/// One line per run when it ends: how and why.
pub const RUN_MEASUREMENT: &str = "dtop_twin_cbc_run";

/// How long the edge may take to acknowledge a target, in seconds of samples, before the run
/// stops: an edge that neither runs nor refuses a version is not following the run.
pub const ACK_TIMEOUT_S: f64 = 10.0;

/// The stream-0 channels a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CbcChannels {
    /// The actuator's floor.
    pub floor: u32,
    /// Its accelerometer.
    pub accel_channel_id: u32,
    /// The force gauge on that floor.
    pub force_channel_id: u32,
}

/// The channels of `manifest` a run on `floor` reads, or why there are none.
///
/// # Errors
/// A sentence for the operator: no accelerometer or no force gauge on the floor.
pub fn channels(manifest: &Manifest, floor: u32) -> Result<CbcChannels, String> {
    let on_stream_0 = |kind: ChannelKind| {
        manifest
            .channels
            .values()
            .filter(move |c| c.stream_id == 0 && c.kind == kind)
    };
    let accel = on_stream_0(ChannelKind::Acceleration)
        .find(|c| c.floor == floor)
        .ok_or_else(|| {
            format!("the rig has no stream-0 accelerometer on floor {floor}, the actuator's")
        })?;
    let force = on_stream_0(ChannelKind::Force)
        .find(|c| c.floor == floor)
        .ok_or_else(|| {
            format!(
                "the rig has no stream-0 force gauge on floor {floor}, the actuator's: a live run \
                 judges the force that floor receives (a shaker's stinger gauge), and a gauge \
                 elsewhere measures another force"
            )
        })?;
    Ok(CbcChannels {
        floor,
        accel_channel_id: accel.id,
        force_channel_id: force.id,
    })
}

/// The run `request` asks for on a rig sampled at `sample_rate_hz` whose edge limits the
/// force to `max_force_n`: the twin's defaults with the request's overrides.
pub fn config_for(request: &RunCbc, sample_rate_hz: f64, max_force_n: f64) -> LiveCbcConfig {
    let mut c = LiveCbcConfig::new(
        sample_rate_hz,
        request.frequency_start_hz,
        request.frequency_end_hz,
        request.frequency_steps as usize,
        request.target_amplitude_m,
        max_force_n,
    );
    if let Some(h) = request.harmonics {
        c.harmonics = h as usize;
    }
    if let Some(v) = request.proportional_gain_n_per_m {
        c.proportional_gain_n_per_m = v;
    }
    if let Some(v) = request.derivative_gain_n_s_per_m {
        c.derivative_gain_n_s_per_m = v;
    }
    if let Some(v) = request.integrator_corner_hz {
        c.integrator_corner_hz = v;
    }
    if let Some(v) = request.settle_s {
        c.settle_s = v;
    }
    if let Some(v) = request.measure_periods {
        c.measure_periods = v as usize;
    }
    if let Some(v) = request.max_iterations {
        c.max_iterations = v as usize;
    }
    if let Some(v) = request.invasiveness_tolerance {
        c.invasiveness_tolerance = v;
    }
    if let Some(v) = request.change_tolerance {
        c.change_tolerance = v;
    }
    c
}

/// The linear chain a run on `building` forced at `floor` iterates with (module docs).
///
/// # Errors
/// Why the chain cannot be built, for the operator.
pub fn chain_for(building: &ShearBuildingConfig, floor: u32) -> Result<NonlinearChain, String> {
    let config = NonlinearChainConfig {
        building: ShearBuildingConfig {
            actuator: None,
            ..building.clone()
        },
        springs: Vec::new(),
        forced_floor: floor as usize,
    };
    NonlinearChain::new(config).map_err(|e| format!("the rig's model cannot carry the run: {e}"))
}

/// Who started a run and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOrigin {
    /// Run id: the twin's wall clock at the start, ns (rising per rig).
    pub run: u64,
    /// The `RunCbc` command's id.
    pub command_id: String,
    /// Its sender.
    pub issued_by: String,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Iterating.
    Running,
    /// Every frequency converged.
    Completed,
    /// It ended early, for `reason`.
    Stopped,
}

/// What the rig actor must do after feeding a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunNext {
    /// Nothing to send.
    Continue,
    /// Send this target to the edge as a new params version, then call [`LiveRun::sent`].
    Send(LiveTarget),
    /// The run is over: switch the edge's loop off.
    Ended,
}

/// One point as stored and published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointRecord {
    /// Forcing frequency, Hz.
    pub frequency_hz: f64,
    /// Target first-harmonic amplitude, m.
    pub target_amplitude_m: f64,
    /// First-harmonic amplitude of the measured control force: the equivalent forcing, N.
    pub forcing_n: f64,
    /// First-harmonic amplitude of the floor's measured displacement, m.
    pub response_amplitude_m: f64,
    /// Largest higher harmonic of the control force over the first.
    pub invasiveness: f64,
    /// Largest relative change of the first harmonics since the previous iteration (null
    /// after a first iteration).
    pub change: Option<f64>,
    /// Iterations the point took.
    pub iterations: usize,
    /// Whether it met the tolerances.
    pub converged: bool,
}

impl PointRecord {
    fn of(point: &CbcPoint) -> Self {
        Self {
            frequency_hz: point.omega_rad_s / std::f64::consts::TAU,
            target_amplitude_m: point.target_amplitude_m,
            forcing_n: point.forcing_n,
            response_amplitude_m: point.amplitude_m.first().copied().unwrap_or(f64::NAN),
            invasiveness: point.invasiveness,
            change: point.change.is_finite().then_some(point.change),
            iterations: point.iterations,
            converged: point.converged,
        }
    }
}

/// A run's status: what `dtop/v1/twin/{rig}/cbc` carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus<'a> {
    pub rig: &'a str,
    #[serde(flatten)]
    pub origin: &'a RunOrigin,
    pub state: RunState,
    /// How the iteration stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<&'a CbcStop>,
    /// Why the run ended, in words (also for a completed run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    pub channels: CbcChannels,
    /// The target being iterated (the last one, once ended).
    pub frequency_hz: f64,
    /// Targets sent to the edge so far (iterations over all points).
    pub targets_sent: u64,
    /// The edge's params version running the current target, once it acknowledged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_version: Option<u64>,
    pub config: &'a LiveCbcConfig,
    pub points: Vec<PointRecord>,
}

/// A version sent to the edge and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaiting {
    version: u64,
    /// The next stream-0 sample when it was sent.
    sent_at_sample: u64,
}

/// One live run: the iteration, the hand-shake and the records.
#[derive(Debug, Clone)]
pub struct LiveRun {
    rig: String,
    origin: RunOrigin,
    channels: CbcChannels,
    cbc: LiveCbc,
    state: RunState,
    stop: Option<CbcStop>,
    reason: Option<String>,
    frequency_hz: f64,
    targets_sent: u64,
    awaiting: Option<Awaiting>,
    running_version: Option<u64>,
    /// Points already turned into lines.
    stored_points: usize,
    /// Lines waiting for the rig's next chunk.
    lines: String,
    line_count: usize,
    /// The status changed since [`take_status_json`](Self::take_status_json).
    status_changed: bool,
}

impl LiveRun {
    /// Starts a run: the iteration on `chain` with `config`, reading `channels`. Returns the
    /// run and its first target, to send.
    ///
    /// # Errors
    /// Every problem of the configuration, or why the model cannot carry the run.
    pub fn start(
        rig: &str,
        origin: RunOrigin,
        channels: CbcChannels,
        chain: &NonlinearChain,
        config: LiveCbcConfig,
    ) -> Result<(Self, LiveTarget), String> {
        let (cbc, first) = LiveCbc::start(chain, config).map_err(|e| e.to_string())?;
        let run = Self {
            rig: rig.to_owned(),
            origin,
            channels,
            cbc,
            state: RunState::Running,
            stop: None,
            reason: None,
            frequency_hz: first.frequency_hz,
            targets_sent: 0,
            awaiting: None,
            running_version: None,
            stored_points: 0,
            lines: String::new(),
            line_count: 0,
            status_changed: true,
        };
        Ok((run, first))
    }

    pub fn origin(&self) -> &RunOrigin {
        &self.origin
    }

    pub fn config(&self) -> &LiveCbcConfig {
        self.cbc.config()
    }

    pub fn channels(&self) -> CbcChannels {
        self.channels
    }

    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// The target just returned went out as params `version`, at the rig's next stream-0
    /// sample `next_sample_index`.
    pub fn sent(&mut self, target: &LiveTarget, version: u64, next_sample_index: u64) {
        self.frequency_hz = target.frequency_hz;
        self.targets_sent += 1;
        self.awaiting = Some(Awaiting {
            version,
            sent_at_sample: next_sample_index,
        });
        self.status_changed = true;
    }

    /// An acknowledgement on the rig's cmd/ack: the edge's answer to the awaited version
    /// starts the target's measurement, or ends the run if the edge refused it. Others are
    /// ignored.
    pub fn on_ack(&mut self, ack: &CommandAck, now_unix_ns: u64, precision: Precision) -> RunNext {
        let Some(awaiting) = self.awaiting else {
            return RunNext::Continue;
        };
        if !self.is_running() || ack.command_id != format!("controller/{}", awaiting.version) {
            return RunNext::Continue;
        }
        self.awaiting = None;
        if ack.status() == Status::Applied {
            self.running_version = Some(awaiting.version);
            self.cbc.started(ack.applied_at_sample_index);
            self.status_changed = true;
            RunNext::Continue
        } else {
            self.end(
                None,
                format!(
                    "the edge did not run controller/{}: {} ({})",
                    awaiting.version,
                    ack.status().as_str_name(),
                    ack.reason
                ),
                now_unix_ns,
                precision,
            )
        }
    }

    /// A live stream-0 block from `first_sample_index`: the floor's acceleration (m/s²) and the
    /// gauge's force (N) per sample, `None` where the edge had no value. `end_unix_ns` is the
    /// time of the block's last sample, for the lines it may produce.
    pub fn on_samples(
        &mut self,
        first_sample_index: u64,
        accel_m_s2: &[Option<f64>],
        force_n: &[Option<f64>],
        end_unix_ns: u64,
        precision: Precision,
    ) -> RunNext {
        if !self.is_running() {
            return RunNext::Continue;
        }
        let samples = accel_m_s2.len().min(force_n.len());
        let last = first_sample_index + samples.saturating_sub(1) as u64;
        if let Some(awaiting) = self.awaiting {
            let timeout = (ACK_TIMEOUT_S / self.sample_period_s()).ceil() as u64;
            if last > awaiting.sent_at_sample + timeout {
                return self.end(
                    None,
                    format!(
                        "the edge did not acknowledge controller/{} within {ACK_TIMEOUT_S} s of \
                         samples",
                        awaiting.version
                    ),
                    end_unix_ns,
                    precision,
                );
            }
        }
        // A sample without a value breaks the stretch: the iteration sees the gap and settles
        // again, as after lost blocks.
        let mut next = LiveNext::Continue;
        let mut i = 0;
        while i < samples {
            let start = i;
            let (mut a, mut f) = (Vec::new(), Vec::new());
            while i < samples {
                let (Some(x), Some(y)) = (accel_m_s2[i], force_n[i]) else {
                    break;
                };
                a.push(x);
                f.push(y);
                i += 1;
            }
            if !a.is_empty() {
                next = self
                    .cbc
                    .on_samples(first_sample_index + start as u64, &a, &f);
                if next != LiveNext::Continue {
                    break;
                }
            }
            i += 1;
        }
        self.record_points(end_unix_ns, precision);
        match next {
            LiveNext::Continue => RunNext::Continue,
            LiveNext::Send(target) => RunNext::Send(target),
            LiveNext::Stop(stop) => {
                let reason = describe(&stop);
                self.end(Some(stop), reason, end_unix_ns, precision)
            }
        }
    }

    /// Ends a running run for `reason` (an operator's stop, a new birth, the rig's death).
    pub fn abort(&mut self, reason: String, now_unix_ns: u64, precision: Precision) -> RunNext {
        if !self.is_running() {
            return RunNext::Continue;
        }
        self.end(None, reason, now_unix_ns, precision)
    }

    fn end(
        &mut self,
        stop: Option<CbcStop>,
        reason: String,
        t_unix_ns: u64,
        precision: Precision,
    ) -> RunNext {
        self.record_points(t_unix_ns, precision);
        self.state = if stop == Some(CbcStop::Completed) {
            RunState::Completed
        } else {
            RunState::Stopped
        };
        self.stop = stop;
        self.reason = Some(reason);
        self.awaiting = None;
        self.status_changed = true;
        if let Some(ts) = precision.from_ns(t_unix_ns) {
            self.run_line(ts);
        }
        RunNext::Ended
    }

    fn sample_period_s(&self) -> f64 {
        1.0 / self.cbc.config().sample_rate_hz
    }

    /// Lines for the points converged since the last call.
    fn record_points(&mut self, t_unix_ns: u64, precision: Precision) {
        let Some(ts) = precision.from_ns(t_unix_ns) else {
            return;
        };
        while self.stored_points < self.cbc.points().len() {
            let i = self.stored_points;
            let p = PointRecord::of(&self.cbc.points()[i]);
            self.point_line(i, &p, ts);
            self.stored_points += 1;
            self.status_changed = true;
        }
    }

    fn series(&mut self, measurement: &str) {
        self.lines.push_str(measurement);
        self.lines.push_str(",rig=");
        escape_key(&mut self.lines, &self.rig);
        let _ = write!(self.lines, ",run={}", self.origin.run);
    }

    fn point_line(&mut self, index: usize, p: &PointRecord, ts: i64) {
        self.series(POINT_MEASUREMENT);
        let _ = write!(self.lines, ",point={index} ");
        let mut first = true;
        for (name, v) in [
            ("frequency_hz", p.frequency_hz),
            ("target_amplitude_m", p.target_amplitude_m),
            ("forcing_n", p.forcing_n),
            ("response_amplitude_m", p.response_amplitude_m),
            ("invasiveness", p.invasiveness),
            ("change", p.change.unwrap_or(f64::NAN)),
        ] {
            if v.is_finite() {
                if !first {
                    self.lines.push(',');
                }
                first = false;
                let _ = write!(self.lines, "{name}=");
                write_float(&mut self.lines, v);
            }
        }
        let _ = writeln!(
            self.lines,
            "{}iterations={}i,converged={} {ts}",
            if first { "" } else { "," },
            p.iterations,
            p.converged
        );
        self.line_count += 1;
    }

    fn run_line(&mut self, ts: i64) {
        self.series(RUN_MEASUREMENT);
        let state = match self.state {
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Stopped => "stopped",
        };
        let _ = write!(
            self.lines,
            " state=\"{state}\",points={}i,targets_sent={}i,reason=\"",
            self.cbc.points().len(),
            self.targets_sent
        );
        for c in self.reason.as_deref().unwrap_or("").chars() {
            if matches!(c, '"' | '\\') {
                self.lines.push('\\');
            }
            // Line protocol has no escape for a newline inside a string.
            self.lines.push(if c == '\n' { ' ' } else { c });
        }
        let _ = writeln!(self.lines, "\" {ts}");
        self.line_count += 1;
    }

    /// The lines made since the last call, and how many.
    pub fn take_lines(&mut self) -> Option<(String, usize)> {
        if self.line_count == 0 {
            return None;
        }
        Some((
            std::mem::take(&mut self.lines),
            std::mem::take(&mut self.line_count),
        ))
    }

    /// The status as JSON, when it changed since the last call.
    pub fn take_status_json(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.status_changed) {
            return None;
        }
        serde_json::to_vec(&self.status()).ok()
    }

    /// The run's status now.
    pub fn status(&self) -> RunStatus<'_> {
        RunStatus {
            rig: &self.rig,
            origin: &self.origin,
            state: self.state.clone(),
            stop: self.stop.as_ref(),
            reason: self.reason.as_deref(),
            channels: self.channels,
            frequency_hz: self.frequency_hz,
            targets_sent: self.targets_sent,
            controller_version: self.running_version,
            config: self.cbc.config(),
            points: self.cbc.points().iter().map(PointRecord::of).collect(),
        }
    }
}

/// How the iteration stopped, in words.
fn describe(stop: &CbcStop) -> String {
    match stop {
        CbcStop::Completed => "every frequency converged".to_owned(),
        CbcStop::NotConverged { invasiveness, .. } => format!(
            "a point did not converge within the iteration budget (invasiveness {invasiveness:.2e})"
        ),
        CbcStop::ForceLimit { force_n, .. } => format!(
            "the measured force reached the actuator's limit ({force_n:.2} N): a clipped force \
             is no longer the law's, so the run stopped at once"
        ),
        CbcStop::Diverged { .. } => {
            "a sample was not finite: the loop diverged at these gains".to_owned()
        }
    }
}
