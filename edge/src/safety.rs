//! The actuator safety envelope: turns drive requests into the force to command each sample
//! period — magnitude clamp, slew limit, drive timeout, latched safety stop. Pure and synchronous:
//! time arrives as a count of sample periods; knows nothing of serial ports, MQTT or wall clocks.

use std::fmt;

use dtop_firmware::Manifest;

use crate::birth::actuator_limits;
use crate::config::ActuatorConfig;

/// What the envelope enforces, fixed per firmware manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvelopeLimits {
    /// Largest force magnitude, N: the smaller of the config's and the firmware's limit.
    pub max_force_n: f64,
    /// Largest change of the commanded force within one sample period, N (slew limit × period).
    pub max_step_n: f64,
    /// Sample periods a drive stays good for: the period boundary that completes this many
    /// periods without a new drive starts the ramp to 0 N.
    pub drive_timeout_periods: u64,
}

impl EnvelopeLimits {
    /// The limits for `manifest` under `config`; `None` when the firmware has no actuator (floor
    /// 0 or no usable force limit, PROTOCOL.md §4.2) or no sample rate to count periods by.
    pub fn new(config: &ActuatorConfig, manifest: &Manifest) -> Option<Self> {
        let firmware_max = manifest.actuator_max_force_n;
        if manifest.actuator_floor == 0
            || !(firmware_max.is_finite() && firmware_max > 0.0)
            || manifest.sample_rate_mhz == 0
        {
            return None;
        }
        // The birth announces exactly this limit, so controllers see what the edge enforces.
        let max_force_n = actuator_limits(manifest, config).max_force_n;
        // Period = 1000 / rate_mhz s; multiplying first keeps round rates exact (2000 N/s at
        // 1 kHz is exactly 2 N per period).
        let max_step_n = config.max_slew_n_per_s * 1000.0 / f64::from(manifest.sample_rate_mhz);
        Some(Self {
            max_force_n,
            max_step_n,
            drive_timeout_periods: u64::from(config.drive_timeout_periods),
        })
    }
}

/// Who asked for a drive; carried for logs, never trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveSource {
    /// The twin's controller, on the drive topic.
    Twin { controller_version: u64 },
    /// An operator's open-loop `SetDrive` command.
    Operator,
    /// The edge-hosted inner loop, running the twin's controller of this version.
    EdgeLoop { controller_version: u64 },
}

/// One request to drive the actuator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveRequest {
    /// Demanded force, N, before any limit.
    pub force_n: f64,
    /// Stream-0 sample index the demand was computed from.
    pub sample_index: u64,
    pub source: DriveSource,
}

/// Why a drive was not applied. A refusal is a value: the caller counts and logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The force is NaN or infinite.
    NonFinite,
    /// A safety stop is latched; only a reset releases it.
    Latched,
    /// The firmware has no actuator, or has not described itself yet.
    NoActuator,
    /// No sample periods are being counted (no samples yet, or they stopped), so neither the
    /// slew limit nor the timeout could be enforced.
    NoSampleClock,
    /// An operator disabled the actuator; only an enable command re-arms it.
    Disabled,
}

impl Refusal {
    /// Short label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::NonFinite => "non_finite",
            Refusal::Latched => "latched",
            Refusal::NoActuator => "no_actuator",
            Refusal::NoSampleClock => "no_sample_clock",
            Refusal::Disabled => "disabled",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the envelope is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SafetyState {
    /// Disabled; nothing has driven it since start or since a reset.
    #[default]
    Idle,
    /// Enabled and following drives.
    Driving,
    /// Drives stopped coming, the sample clock stopped, or the firmware disabled the actuator:
    /// ramping to 0 N (timeout only), then disabled. The next accepted drive resumes driving.
    SafeTimeout,
    /// A safety stop, or a fault that must not end in a restart by itself ([`LatchCause`]):
    /// disabled at 0 N, every drive refused until [`SafetyEnvelope::reset`].
    Latched,
    /// An operator's disable command: off at 0 N, drives refused until an enable command.
    Disabled,
}

impl SafetyState {
    /// Short label for logs and status displays.
    pub const fn as_str(self) -> &'static str {
        match self {
            SafetyState::Idle => "idle",
            SafetyState::Driving => "driving",
            SafetyState::SafeTimeout => "safe_timeout",
            SafetyState::Latched => "latched",
            SafetyState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for SafetyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the envelope latched. A fault latches like a safety stop so that the actuator never
/// starts again by itself when its link comes back (IEC 60204-1 §7.5, prevention of unexpected
/// start-up): only an operator's `SafetyReset` releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchCause {
    /// An operator's (or the twin's) safety stop.
    SafetyStop,
    /// The sample clock stopped while driving: the firmware restarted, fell silent, its port
    /// was lost, or its samples stalled.
    ClockLost,
    /// The Modbus actuator acknowledged no write for longer than the drive timeout.
    ActuatorLinkLost,
}

impl LatchCause {
    /// Short label for logs, status and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            LatchCause::SafetyStop => "safety_stop",
            LatchCause::ClockLost => "clock_lost",
            LatchCause::ActuatorLinkLost => "actuator_link_lost",
        }
    }
}

impl fmt::Display for LatchCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the actuator should be doing now: the content of the next `ActuatorCommand`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActuatorOutput {
    pub enable: bool,
    /// Force to apply, N; always 0 when disabled.
    pub force_n: f64,
}

impl ActuatorOutput {
    pub const OFF: Self = Self {
        enable: false,
        force_n: 0.0,
    };
}

/// Running totals, for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvelopeCounters {
    pub drives_applied_total: u64,
    pub drives_refused_total: u64,
    /// Applied drives whose magnitude was cut to the force limit.
    pub drives_clamped_total: u64,
    /// Entries into [`SafetyState::SafeTimeout`] for want of drives.
    pub drive_timeouts_total: u64,
    /// Entries into [`SafetyState::Latched`] by a safety stop.
    pub safety_stops_total: u64,
    /// Entries into [`SafetyState::Latched`] by a fault ([`LatchCause::ClockLost`],
    /// [`LatchCause::ActuatorLinkLost`]).
    pub fault_latches_total: u64,
}

/// The envelope. Feed it [`drive`](Self::drive)s, [`advance`](Self::advance) it by the sample
/// periods that pass, and command the firmware with what [`output`](Self::output) says.
#[derive(Debug, Clone)]
pub struct SafetyEnvelope {
    limits: Option<EnvelopeLimits>,
    /// False until periods are counted, and again once they stop.
    clock_running: bool,
    state: SafetyState,
    /// Why it is latched; `None` unless `state` is [`SafetyState::Latched`].
    latch_cause: Option<LatchCause>,
    /// Force the output slews towards, already clamped.
    target_n: f64,
    output: ActuatorOutput,
    /// Slew still allowed within the current sample period, N.
    step_left_n: f64,
    periods_since_drive: u64,
    last_drive: Option<DriveRequest>,
    counters: EnvelopeCounters,
}

impl Default for SafetyEnvelope {
    fn default() -> Self {
        Self::new()
    }
}

impl SafetyEnvelope {
    /// Idle, without limits (every drive refused until [`set_limits`](Self::set_limits)) and
    /// with its clock stopped.
    pub const fn new() -> Self {
        Self {
            limits: None,
            clock_running: false,
            state: SafetyState::Idle,
            latch_cause: None,
            target_n: 0.0,
            output: ActuatorOutput::OFF,
            step_left_n: 0.0,
            periods_since_drive: 0,
            last_drive: None,
            counters: EnvelopeCounters {
                drives_applied_total: 0,
                drives_refused_total: 0,
                drives_clamped_total: 0,
                drive_timeouts_total: 0,
                safety_stops_total: 0,
                fault_latches_total: 0,
            },
        }
    }

    pub fn state(&self) -> SafetyState {
        self.state
    }

    pub fn output(&self) -> ActuatorOutput {
        self.output
    }

    /// Why it is latched, while it is.
    pub fn latch_cause(&self) -> Option<LatchCause> {
        self.latch_cause
    }

    pub fn counters(&self) -> EnvelopeCounters {
        self.counters
    }

    pub fn limits(&self) -> Option<EnvelopeLimits> {
        self.limits
    }

    /// The last drive applied, as requested (before clamping).
    pub fn last_drive(&self) -> Option<DriveRequest> {
        self.last_drive
    }

    /// Installs the limits of a (new) firmware manifest; `None` means there is nothing to drive.
    /// A tighter force limit takes effect at once, output included: moving towards 0 N is never
    /// the unsafe direction.
    pub fn set_limits(&mut self, limits: Option<EnvelopeLimits>) -> ActuatorOutput {
        self.limits = limits;
        match limits {
            None => {
                self.drop_to_safe();
            }
            Some(l) => {
                self.target_n = self.target_n.clamp(-l.max_force_n, l.max_force_n);
                self.output.force_n = self.output.force_n.clamp(-l.max_force_n, l.max_force_n);
                self.step_left_n = self.step_left_n.min(l.max_step_n);
            }
        }
        self.output
    }

    /// Applies a drive: clamps it, enables the actuator and moves the output towards it by what
    /// is left of this period's slew budget. A refused drive changes nothing, not even the
    /// timeout, so a stream of bad drives still times out.
    pub fn drive(&mut self, request: DriveRequest) -> Result<ActuatorOutput, Refusal> {
        let limits = match self.admit(request.force_n) {
            Ok(limits) => limits,
            Err(refusal) => {
                self.counters.drives_refused_total += 1;
                return Err(refusal);
            }
        };
        let clamped = request
            .force_n
            .clamp(-limits.max_force_n, limits.max_force_n);
        if clamped != request.force_n {
            self.counters.drives_clamped_total += 1;
        }
        self.counters.drives_applied_total += 1;
        self.last_drive = Some(request);
        self.state = SafetyState::Driving;
        self.target_n = clamped;
        self.periods_since_drive = 0;
        self.output.enable = true;
        self.slew();
        Ok(self.output)
    }

    /// Lets `periods` sample periods pass (and starts the clock). Each period renews the slew
    /// budget, steps the output towards its target, and counts towards the drive timeout.
    pub fn advance(&mut self, periods: u64) -> ActuatorOutput {
        self.clock_running = true;
        let Some(limits) = self.limits else {
            return self.output;
        };
        let mut left = periods;
        while left > 0 {
            let settled = self.output.force_n == self.target_n;
            match self.state {
                // Nothing changes with time in these states once the output has settled; the
                // period now running has its whole slew budget.
                SafetyState::Idle | SafetyState::Latched | SafetyState::Disabled => {
                    self.step_left_n = limits.max_step_n;
                    break;
                }
                SafetyState::SafeTimeout if settled && !self.output.enable => {
                    self.step_left_n = limits.max_step_n;
                    break;
                }
                SafetyState::Driving
                    if settled
                        && matches!(
                            self.last_drive.map(|d| d.source),
                            Some(DriveSource::Operator)
                        ) =>
                {
                    self.step_left_n = limits.max_step_n;
                    break;
                }
                SafetyState::Driving if settled => {
                    // Periods that only count towards the timeout need no stepping, so a long
                    // gap in the sample index costs no more than a short one.
                    let quiet = limits
                        .drive_timeout_periods
                        .saturating_sub(1)
                        .saturating_sub(self.periods_since_drive)
                        .min(left);
                    if quiet > 0 {
                        self.periods_since_drive += quiet;
                        self.step_left_n = limits.max_step_n;
                        left -= quiet;
                        continue;
                    }
                }
                _ => {}
            }
            self.tick(&limits);
            left -= 1;
        }
        self.output
    }

    /// A safety stop: 0 N and disabled at once (no slew limit applies to a stop), latched until
    /// [`reset`](Self::reset).
    pub fn safety_stop(&mut self) -> ActuatorOutput {
        self.latch(LatchCause::SafetyStop)
    }

    /// Latches for `cause` (a latch already in place keeps its first cause): 0 N and disabled
    /// at once.
    fn latch(&mut self, cause: LatchCause) -> ActuatorOutput {
        if self.state != SafetyState::Latched {
            match cause {
                LatchCause::SafetyStop => self.counters.safety_stops_total += 1,
                LatchCause::ClockLost | LatchCause::ActuatorLinkLost => {
                    self.counters.fault_latches_total += 1
                }
            }
            self.latch_cause = Some(cause);
        }
        self.state = SafetyState::Latched;
        self.target_n = 0.0;
        self.output = ActuatorOutput::OFF;
        self.output
    }

    /// The actuator's own link (a Modbus actuator's writes) went unacknowledged for longer than
    /// the drive timeout while it was driving or ramping down. It is presumed off (its own
    /// watchdog), and it must not pick up the drive by itself when it answers again: latched
    /// until an operator's reset. Idle or disabled, there is nothing to restart: no change.
    pub fn actuator_link_lost(&mut self) -> ActuatorOutput {
        if matches!(self.state, SafetyState::Driving | SafetyState::SafeTimeout) {
            return self.latch(LatchCause::ActuatorLinkLost);
        }
        self.output
    }

    /// An operator's disable: off at 0 N at once, drives refused until [`enable`](Self::enable).
    /// A latched safety stop stays latched (it is the stronger state).
    pub fn disable(&mut self) -> ActuatorOutput {
        if self.state != SafetyState::Latched {
            self.state = SafetyState::Disabled;
        }
        self.target_n = 0.0;
        self.output = ActuatorOutput::OFF;
        self.output
    }

    /// An operator's enable: re-arms after [`disable`](Self::disable); `Err` while a safety
    /// stop is latched, which only a reset releases.
    pub fn enable(&mut self) -> Result<(), Refusal> {
        match self.state {
            SafetyState::Latched => Err(Refusal::Latched),
            SafetyState::Disabled => {
                self.state = SafetyState::Idle;
                self.periods_since_drive = 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Releases a latched safety stop (back to idle); `false` if none was latched.
    pub fn reset(&mut self) -> bool {
        if self.state != SafetyState::Latched {
            return false;
        }
        self.state = SafetyState::Idle;
        self.latch_cause = None;
        self.periods_since_drive = 0;
        true
    }

    /// Sample periods stopped arriving (link lost, firmware restart, samples stalled). Without a
    /// clock neither slew nor timeout can be enforced, so the output drops to 0 N disabled now,
    /// as the firmware's own watchdog would do, and drives are refused until periods pass again.
    /// While driving, that is a fault: latched ([`LatchCause::ClockLost`]), so the drive does
    /// not resume by itself once samples flow again.
    pub fn clock_stopped(&mut self) -> ActuatorOutput {
        self.clock_running = false;
        if self.state == SafetyState::Driving {
            return self.latch(LatchCause::ClockLost);
        }
        self.drop_to_safe()
    }

    /// The firmware switched the actuator off by itself (watchdog, hardware fault). Following it
    /// makes the next drive ramp up from 0 N instead of stepping back to the old force.
    pub fn firmware_disabled(&mut self) -> ActuatorOutput {
        self.drop_to_safe()
    }

    fn admit(&self, force_n: f64) -> Result<EnvelopeLimits, Refusal> {
        if !force_n.is_finite() {
            return Err(Refusal::NonFinite);
        }
        if self.state == SafetyState::Latched {
            return Err(Refusal::Latched);
        }
        if self.state == SafetyState::Disabled {
            return Err(Refusal::Disabled);
        }
        let Some(limits) = self.limits else {
            return Err(Refusal::NoActuator);
        };
        if !self.clock_running {
            return Err(Refusal::NoSampleClock);
        }
        Ok(limits)
    }

    fn drop_to_safe(&mut self) -> ActuatorOutput {
        if matches!(self.state, SafetyState::Driving | SafetyState::SafeTimeout) {
            self.state = SafetyState::SafeTimeout;
        }
        self.target_n = 0.0;
        self.output = ActuatorOutput::OFF;
        self.output
    }

    /// One sample period boundary.
    fn tick(&mut self, limits: &EnvelopeLimits) {
        self.step_left_n = limits.max_step_n;
        // An operator's open-loop drive is a deliberate hold: it stays until the next command
        // or a safety event. Only computed drives (twin, inner loop) must keep coming.
        let holding = matches!(
            self.last_drive.map(|d| d.source),
            Some(DriveSource::Operator)
        );
        if self.state == SafetyState::Driving && !holding {
            self.periods_since_drive += 1;
            if self.periods_since_drive >= limits.drive_timeout_periods {
                self.state = SafetyState::SafeTimeout;
                self.target_n = 0.0;
                self.counters.drive_timeouts_total += 1;
            }
        }
        self.slew();
    }

    /// Moves the output towards the target by at most the budget left in this period; a timed
    /// out actuator is disabled once it reaches 0 N.
    fn slew(&mut self) {
        let diff = self.target_n - self.output.force_n;
        if diff.abs() <= self.step_left_n {
            // Land exactly on the target, not on output + diff, which may round.
            self.output.force_n = self.target_n;
            self.step_left_n -= diff.abs();
        } else {
            self.output.force_n += self.step_left_n.copysign(diff);
            self.step_left_n = 0.0;
        }
        if self.state == SafetyState::SafeTimeout && self.output.force_n == 0.0 {
            self.output.enable = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use dtop_firmware::{ChannelDesc, ChannelKind};

    use super::*;

    /// 10 N limit, 2 N per period (2000 N/s at 1 kHz), 5-period timeout: every expected value
    /// below is a small integer, exact in binary floating point.
    const LIMITS: EnvelopeLimits = EnvelopeLimits {
        max_force_n: 10.0,
        max_step_n: 2.0,
        drive_timeout_periods: 5,
    };

    fn req(force_n: f64) -> DriveRequest {
        DriveRequest {
            force_n,
            sample_index: 0,
            source: DriveSource::Twin {
                controller_version: 1,
            },
        }
    }

    fn on(force_n: f64) -> ActuatorOutput {
        ActuatorOutput {
            enable: true,
            force_n,
        }
    }

    /// An envelope with `limits` whose clock is running.
    fn running(limits: EnvelopeLimits) -> SafetyEnvelope {
        let mut e = SafetyEnvelope::new();
        e.set_limits(Some(limits));
        assert_eq!(e.advance(1), ActuatorOutput::OFF);
        e
    }

    fn applied(e: &mut SafetyEnvelope, force_n: f64) -> ActuatorOutput {
        e.drive(req(force_n))
            .unwrap_or_else(|r| panic!("drive {force_n} refused: {r}"))
    }

    /// Forces after each of `n` single periods.
    fn forces(e: &mut SafetyEnvelope, n: usize) -> Vec<f64> {
        (0..n).map(|_| e.advance(1).force_n).collect()
    }

    fn manifest(actuator_floor: u8, max_force_n: f32, rate_mhz: u32) -> Manifest {
        let channels = [ChannelDesc {
            id: 0,
            kind: ChannelKind::Acceleration,
            floor: 1,
            scale: 0.001,
        }];
        Manifest::new("t", rate_mhz, 3, actuator_floor, max_force_n, &channels)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn config(max_force_n: f64) -> ActuatorConfig {
        ActuatorConfig {
            max_force_n,
            max_slew_n_per_s: 2000.0,
            drive_timeout_periods: 250,
        }
    }

    #[test]
    fn clamps_drive_magnitude_to_the_force_limit() {
        let mut e = running(EnvelopeLimits {
            max_step_n: 100.0,
            ..LIMITS
        });
        assert_eq!(applied(&mut e, 50.0), on(10.0));
        assert_eq!(applied(&mut e, -1e9), on(-10.0));
        assert_eq!(applied(&mut e, 3.0), on(3.0));
        let c = e.counters();
        assert_eq!((c.drives_applied_total, c.drives_clamped_total), (3, 2));
    }

    #[test]
    fn limits_slew_to_one_step_per_sample_period() {
        let mut e = running(LIMITS);
        assert_eq!(applied(&mut e, 7.0), on(2.0));
        assert_eq!(forces(&mut e, 4), [4.0, 6.0, 7.0, 7.0]);
        assert_eq!(applied(&mut e, -3.0), on(5.0));
        assert_eq!(forces(&mut e, 4), [3.0, 1.0, -1.0, -3.0]);
        assert!(e.output().enable);
        assert_eq!(e.state(), SafetyState::Driving);
    }

    #[test]
    fn a_drive_in_a_period_whose_slew_is_spent_waits_for_the_next_period() {
        let mut e = running(LIMITS);
        assert_eq!(applied(&mut e, 10.0), on(2.0));
        assert_eq!(applied(&mut e, -10.0), on(2.0));
        assert_eq!(forces(&mut e, 3), [0.0, -2.0, -4.0]);
    }

    #[test]
    fn times_out_after_exactly_the_configured_periods_and_ramps_to_zero() {
        let mut e = running(LIMITS);
        assert_eq!(applied(&mut e, 6.0), on(2.0));
        let steps: Vec<(SafetyState, ActuatorOutput)> = (0..8)
            .map(|_| {
                let out = e.advance(1);
                (e.state(), out)
            })
            .collect();
        use SafetyState::{Driving, SafeTimeout};
        assert_eq!(
            steps,
            [
                (Driving, on(4.0)),
                (Driving, on(6.0)),
                (Driving, on(6.0)),
                (Driving, on(6.0)),
                // Period 5 without a drive: the timeout starts the ramp at the slew limit.
                (SafeTimeout, on(4.0)),
                (SafeTimeout, on(2.0)),
                (SafeTimeout, ActuatorOutput::OFF),
                (SafeTimeout, ActuatorOutput::OFF),
            ]
        );
        assert_eq!(e.counters().drive_timeouts_total, 1);
    }

    #[test]
    fn the_timeout_is_the_configured_number_of_periods_whatever_it_is() {
        for timeout in [1, 2, 3, 50, 250] {
            let mut e = running(EnvelopeLimits {
                drive_timeout_periods: timeout,
                ..LIMITS
            });
            assert_eq!(applied(&mut e, 0.0), on(0.0));
            for period in 1..timeout {
                assert_eq!(e.advance(1), on(0.0), "timeout {timeout}, period {period}");
                assert_eq!(e.state(), SafetyState::Driving);
            }
            assert_eq!(e.advance(1), ActuatorOutput::OFF, "timeout {timeout}");
            assert_eq!(e.state(), SafetyState::SafeTimeout);
        }
    }

    #[test]
    fn a_fresh_drive_restarts_the_timeout() {
        let mut e = running(LIMITS);
        applied(&mut e, 1.0);
        e.advance(4);
        applied(&mut e, 1.0);
        e.advance(4);
        assert_eq!(e.state(), SafetyState::Driving);
        assert_eq!(e.advance(1), ActuatorOutput::OFF);
        assert_eq!(e.state(), SafetyState::SafeTimeout);
    }

    #[test]
    fn advancing_many_periods_at_once_matches_one_at_a_time() {
        let script: [(Option<f64>, u64); 6] = [
            (Some(9.0), 3),
            (Some(-10.0), 2),
            (None, 1),
            (Some(4.0), 4),
            (None, 7),
            (Some(1.0), 1000),
        ];
        let mut bulk = running(LIMITS);
        let mut single = running(LIMITS);
        for (drive, periods) in script {
            if let Some(f) = drive {
                assert_eq!(applied(&mut bulk, f), applied(&mut single, f));
            }
            let out = bulk.advance(periods);
            for _ in 0..periods {
                single.advance(1);
            }
            assert_eq!(
                out,
                single.output(),
                "after {drive:?} and {periods} periods"
            );
            assert_eq!(bulk.state(), single.state());
            assert_eq!(bulk.counters(), single.counters());
        }
    }

    #[test]
    fn a_drive_after_a_timeout_ramps_up_again_from_zero() {
        let mut e = running(LIMITS);
        applied(&mut e, 2.0);
        e.advance(10);
        assert_eq!(e.output(), ActuatorOutput::OFF);
        assert_eq!(applied(&mut e, 5.0), on(2.0));
        assert_eq!(e.state(), SafetyState::Driving);
    }

    #[test]
    fn latches_on_safety_stop_and_needs_a_reset() {
        let mut e = running(LIMITS);
        applied(&mut e, 8.0);
        assert_eq!(forces(&mut e, 2), [4.0, 6.0]);
        // No slew limit on a stop: straight to 0 N, disabled.
        assert_eq!(e.safety_stop(), ActuatorOutput::OFF);
        assert_eq!(e.state(), SafetyState::Latched);
        assert_eq!(e.advance(100), ActuatorOutput::OFF);
        assert_eq!(
            e.state(),
            SafetyState::Latched,
            "time alone never releases it"
        );
        assert!(e.reset());
        assert_eq!(e.state(), SafetyState::Idle);
        assert!(!e.reset(), "nothing left to reset");
        assert_eq!(applied(&mut e, 1.0), on(1.0));
        assert_eq!(e.counters().safety_stops_total, 1);
    }

    #[test]
    fn refuses_drives_while_latched() {
        let mut e = running(LIMITS);
        e.safety_stop();
        e.safety_stop();
        for force in [1.0, 0.0, -5.0] {
            assert_eq!(e.drive(req(force)), Err(Refusal::Latched));
        }
        assert_eq!(e.output(), ActuatorOutput::OFF);
        let c = e.counters();
        assert_eq!(
            (
                c.drives_applied_total,
                c.drives_refused_total,
                c.safety_stops_total
            ),
            (0, 3, 1)
        );
    }

    #[test]
    fn refuses_non_finite_forces_without_resetting_the_timeout() {
        let mut e = running(LIMITS);
        assert_eq!(applied(&mut e, 2.0), on(2.0));
        e.advance(3);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(e.drive(req(bad)), Err(Refusal::NonFinite));
        }
        assert_eq!(e.output(), on(2.0));
        assert_eq!(e.advance(1), on(2.0));
        assert_eq!(
            e.advance(1),
            ActuatorOutput::OFF,
            "period 5 still times out"
        );
        assert_eq!(e.counters().drives_refused_total, 3);
    }

    #[test]
    fn refuses_drives_without_an_actuator_or_a_sample_clock() {
        let mut e = SafetyEnvelope::new();
        assert_eq!(e.drive(req(1.0)), Err(Refusal::NoActuator));
        e.set_limits(Some(LIMITS));
        assert_eq!(e.drive(req(1.0)), Err(Refusal::NoSampleClock));
        e.advance(1);
        assert_eq!(applied(&mut e, 1.0), on(1.0));
        // Timed out (not driving), a stopped clock only holds drives off until it runs again.
        e.advance(10);
        assert_eq!(e.clock_stopped(), ActuatorOutput::OFF);
        assert_eq!(e.state(), SafetyState::SafeTimeout);
        assert_eq!(e.drive(req(1.0)), Err(Refusal::NoSampleClock));
        e.advance(1);
        assert_eq!(applied(&mut e, 3.0), on(2.0), "ramps up from 0 N again");
    }

    #[test]
    fn a_clock_lost_while_driving_latches_until_an_operator_resets_it() {
        for source in [
            DriveSource::Operator,
            DriveSource::Twin {
                controller_version: 1,
            },
        ] {
            let mut e = running(LIMITS);
            assert_eq!(
                e.drive(DriveRequest {
                    force_n: 2.0,
                    sample_index: 0,
                    source
                }),
                Ok(on(2.0))
            );
            assert_eq!(e.clock_stopped(), ActuatorOutput::OFF);
            assert_eq!(e.state(), SafetyState::Latched);
            assert_eq!(e.latch_cause(), Some(LatchCause::ClockLost));
            // Samples flow again and drives keep coming: nothing starts by itself.
            e.advance(100);
            assert_eq!(e.drive(req(2.0)), Err(Refusal::Latched));
            assert_eq!(e.enable(), Err(Refusal::Latched));
            assert_eq!(e.output(), ActuatorOutput::OFF);
            assert!(e.reset());
            assert_eq!(e.latch_cause(), None);
            assert_eq!(applied(&mut e, 2.0), on(2.0));
            let c = e.counters();
            assert_eq!((c.fault_latches_total, c.safety_stops_total), (1, 0));
        }
    }

    #[test]
    fn a_lost_actuator_link_latches_only_an_actuator_that_was_driving() {
        let mut idle = running(LIMITS);
        assert_eq!(idle.actuator_link_lost(), ActuatorOutput::OFF);
        assert_eq!(idle.state(), SafetyState::Idle);
        let mut e = running(LIMITS);
        applied(&mut e, 6.0);
        assert_eq!(e.actuator_link_lost(), ActuatorOutput::OFF);
        assert_eq!(
            (e.state(), e.latch_cause()),
            (SafetyState::Latched, Some(LatchCause::ActuatorLinkLost))
        );
        // A later stop keeps the first cause.
        e.safety_stop();
        assert_eq!(e.latch_cause(), Some(LatchCause::ActuatorLinkLost));
        assert_eq!(e.drive(req(1.0)), Err(Refusal::Latched));
        assert!(e.reset());
        e.advance(1);
        assert_eq!(applied(&mut e, 1.0), on(1.0));
    }

    #[test]
    fn follows_the_firmware_when_it_disables_the_actuator() {
        let mut e = running(LIMITS);
        applied(&mut e, 6.0);
        assert_eq!(forces(&mut e, 2), [4.0, 6.0]);
        assert_eq!(e.firmware_disabled(), ActuatorOutput::OFF);
        assert_eq!(e.state(), SafetyState::SafeTimeout);
        // This period's slew went into the last step up; the ramp resumes from 0 N next period.
        assert_eq!(applied(&mut e, 6.0), on(0.0));
        assert_eq!(forces(&mut e, 2), [2.0, 4.0]);
    }

    #[test]
    fn a_tighter_limit_applies_to_the_output_at_once() {
        let mut e = running(LIMITS);
        applied(&mut e, 10.0);
        e.advance(4);
        assert_eq!(e.output(), on(10.0));
        let tighter = EnvelopeLimits {
            max_force_n: 3.0,
            ..LIMITS
        };
        assert_eq!(e.set_limits(Some(tighter)), on(3.0));
        assert_eq!(e.set_limits(None), ActuatorOutput::OFF);
        assert_eq!(e.drive(req(1.0)), Err(Refusal::NoActuator));
    }

    #[test]
    fn limits_take_the_smaller_force_and_scale_slew_by_the_sample_period() {
        let at_1khz = manifest(3, 10.0, 1_000_000);
        assert_eq!(
            EnvelopeLimits::new(&config(20.0), &at_1khz),
            Some(EnvelopeLimits {
                max_force_n: 10.0,
                max_step_n: 2.0,
                drive_timeout_periods: 250
            })
        );
        let at_100hz = manifest(3, 10.0, 100_000);
        assert_eq!(
            EnvelopeLimits::new(&config(5.0), &at_100hz).map(|l| (l.max_force_n, l.max_step_n)),
            Some((5.0, 20.0))
        );
        assert_eq!(
            EnvelopeLimits::new(&config(5.0), &manifest(0, 10.0, 1_000_000)),
            None,
            "no actuator floor"
        );
        assert_eq!(
            EnvelopeLimits::new(&config(5.0), &manifest(3, 0.0, 1_000_000)),
            None,
            "firmware force limit 0"
        );
    }

    #[test]
    fn an_operator_drive_holds_without_timing_out_until_disabled() {
        let mut e = running(LIMITS);
        let hold = DriveRequest {
            force_n: 4.0,
            sample_index: 0,
            source: DriveSource::Operator,
        };
        assert_eq!(e.drive(hold), Ok(on(2.0)));
        assert_eq!(forces(&mut e, 3), [4.0, 4.0, 4.0]);
        // Far past the 5-period timeout, the hold stands.
        assert_eq!(e.advance(1_000), on(4.0));
        assert_eq!(e.state(), SafetyState::Driving);
        assert_eq!(e.disable(), ActuatorOutput::OFF);
        assert_eq!(e.state(), SafetyState::Disabled);
        assert_eq!(e.drive(req(1.0)), Err(Refusal::Disabled));
        assert_eq!(e.enable(), Ok(()));
        assert_eq!(applied(&mut e, 1.0), on(1.0));
    }

    #[test]
    fn enable_does_not_release_a_latched_safety_stop() {
        let mut e = running(LIMITS);
        applied(&mut e, 3.0);
        e.safety_stop();
        e.disable();
        assert_eq!(e.state(), SafetyState::Latched);
        assert_eq!(e.enable(), Err(Refusal::Latched));
        assert!(e.reset());
        assert_eq!(e.enable(), Ok(()));
    }
}
