//! Owns the simulator's configuration: its TOML shape, defaults and whole-config validation.
//! Opens nothing; `start()` refuses a config whose `validate()` is not empty.

use std::net::SocketAddr;
use std::path::PathBuf;

use dtop_nonlinear::{PolynomialSpring, SpringLink};
use serde::{Deserialize, Serialize};

/// Storeys of the simulated (Southampton) rig; the channel table and the Modbus map assume
/// three.
pub const FLOORS: usize = 3;

/// Channels in the stream: floor 1..3 accelerometers, then the force gauge (or base
/// accelerometer in ground-acceleration mode).
pub const CHANNEL_COUNT: usize = 4;

/// Everything the simulator needs to run. Deserialised from TOML; see `validate()` for the
/// rules serde cannot express.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random stream (excitation and sensor noise). The same seed gives
    /// bit-identical raw samples at any `speed`, as long as the actuator commands are the same.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// ADC sample rate, Hz. Must be a whole number of millihertz, because the manifest carries
    /// it in mHz (PROTOCOL.md §4.2).
    #[serde(default = "default_sample_rate_hz")]
    pub sample_rate_hz: f64,
    /// Samples per `Samples` frame. 4 channels × this × 4 bytes + 11 must fit the 1024-byte
    /// payload (PROTOCOL.md §5), so at most 63.
    #[serde(default = "default_samples_per_frame")]
    pub samples_per_frame: u16,
    /// Time scale: 1.0 is real time, 10.0 ten times faster, 0.0 lock-step (a frame as soon as
    /// the previous one has been taken by the pty). Heartbeats and the actuator watchdog run on
    /// wall-clock time at any speed, because the edge's timers do.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Stop streaming after this many samples (heartbeats and replies continue). None = never.
    #[serde(default)]
    pub max_samples: Option<u64>,
    /// CSV `sample_index,raw0,raw1,raw2,raw3` of every sample written to the pty.
    #[serde(default)]
    pub truth_log: Option<PathBuf>,
    /// CSV `origin_sample_index,applied_at_sample_index,latency_ns` of every actuator command
    /// that names the sample it was computed from (PROTOCOL.md §4.4), written at exit: the
    /// control loop's latency from taking a sample to applying the drive.
    #[serde(default)]
    pub latency_log: Option<PathBuf>,
    /// Symlink to create pointing at the pty slave, removed on exit. An existing symlink there
    /// is replaced; any other file is an error.
    #[serde(default)]
    pub pty_link: Option<PathBuf>,
    /// Address of the Modbus TCP server. None = no Modbus server. Port 0 picks a free port;
    /// `SimHandle::modbus_addr()` reports it.
    #[serde(default)]
    pub modbus_listen: Option<SocketAddr>,
    /// Unix socket taking run-time commands (`crate::control`), e.g. a storey's stiffness or
    /// damping change. None = no command socket.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Firmware version string reported in the manifest, at most 32 bytes.
    #[serde(default = "default_firmware_version")]
    pub firmware_version: String,
    /// Floor carrying the inertial actuator (1..=3), or 0 for a rig without one.
    #[serde(default = "default_actuator_floor")]
    pub actuator_floor: u8,
    /// How the actuator pushes its floor.
    #[serde(default)]
    pub actuator_kind: ActuatorKind,
    /// Largest actuator force the firmware applies, N; commands are clamped to ± this.
    #[serde(default = "default_actuator_max_force_n")]
    pub actuator_max_force_n: f32,
    /// What drives the structure besides the actuator.
    #[serde(default)]
    pub excitation: ExcitationConfig,
    /// Where the excitation enters the structure.
    #[serde(default)]
    pub excitation_target: ExcitationTarget,
    /// Accelerometer noise, RMS, m/s² (white, Gaussian, added before quantisation).
    #[serde(default = "default_accel_noise_rms_m_s2")]
    pub accel_noise_rms_m_s2: f64,
    /// Force gauge noise, RMS, N (white, Gaussian, added before quantisation).
    #[serde(default = "default_force_noise_rms_n")]
    pub force_noise_rms_n: f64,
    /// Actuator watchdog: silence from the edge for this long while the actuator is enabled
    /// puts it in its safe state (PROTOCOL.md §7.1, §7.4).
    #[serde(default = "default_watchdog_timeout_ms")]
    pub watchdog_timeout_ms: u64,
    /// Firmware heartbeat period, ms (PROTOCOL.md §7.1).
    #[serde(default = "default_heartbeat_period_ms")]
    pub heartbeat_period_ms: u64,
    /// A `Samples` frame that cannot be handed to the pty for this long is dropped and
    /// counted, as a firmware ring buffer would overflow when nobody reads.
    #[serde(default = "default_write_stall_timeout_ms")]
    pub write_stall_timeout_ms: u64,
    /// Storey stiffness changes during the run, a rig with a known truth for identification
    /// and model updating (issue 14). Empty: the structure never changes.
    #[serde(default)]
    pub damage: Vec<DamageConfig>,
    /// Polynomial springs added to the linear storeys (issue 15): the nonlinear rig that
    /// control-based continuation traces. Same meaning and units as dtop-nonlinear's
    /// `PolynomialSpring` (a restoring force f(δ) = k₂δ² + k₃δ³ + k₅δ⁵ on a storey's drift
    /// or a floor's displacement, positive k₃ hardening), so
    /// [`crate::rig::Rig::nonlinear_chain`] gives numerical continuation the same chain.
    /// Empty: the rig is linear.
    #[serde(default)]
    pub springs: Vec<PolynomialSpring>,
}

/// A storey's stiffness and/or damper changed during the run: from `at_s` of simulated time
/// (sample index / sample rate) each goes linearly over `ramp_s` (0: a step, at that sample)
/// to its factor × its value before, and stays there. Entries on the same storey multiply.
///
/// A stiffness change keeps the damping's definition (the Southampton model's Rayleigh
/// damping is refitted, so modes 1 and 2 keep their damping ratio). A damping change scales
/// the storey's damper in the damping matrix C of the bare structure: storey s ≥ 2's damper
/// is the coupling −C[s−1][s−2] between its two floors, storey 1's is everything joining
/// floor 1 to the ground (the sum of C's first row); see `crate::rig::scale_storey_dampers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamageConfig {
    /// Storey, 1..=3 (storey 1 joins floor 1 to the ground).
    pub storey: usize,
    /// Stiffness at the end over the stiffness before, > 0 (0.9: a 10 % loss; 1: unchanged).
    #[serde(default = "unchanged")]
    pub stiffness_factor: f64,
    /// Storey damper at the end over the damper before, > 0 (2: twice the damping; 1:
    /// unchanged).
    #[serde(default = "unchanged")]
    pub damping_factor: f64,
    /// When the change begins, s of simulated time from the first sample, >= 0.
    pub at_s: f64,
    /// How long the change takes, s, >= 0; 0 is a step.
    #[serde(default)]
    pub ramp_s: f64,
}

const fn unchanged() -> f64 {
    1.0
}

impl DamageConfig {
    /// This entry's factor on its storey's stiffness at simulated time `t_s`.
    pub fn factor_at(&self, t_s: f64) -> f64 {
        self.ramp_at(t_s, self.stiffness_factor)
    }

    /// This entry's factor on its storey's damper at simulated time `t_s`.
    pub fn damping_factor_at(&self, t_s: f64) -> f64 {
        self.ramp_at(t_s, self.damping_factor)
    }

    fn ramp_at(&self, t_s: f64, end: f64) -> f64 {
        if t_s < self.at_s {
            1.0
        } else if self.ramp_s <= 0.0 || t_s >= self.at_s + self.ramp_s {
            end
        } else {
            1.0 + (end - 1.0) * (t_s - self.at_s) / self.ramp_s
        }
    }

    /// Every problem with this change, each naming `field` (e.g. `damage[0]`).
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=FLOORS).contains(&self.storey) {
            problems.push(format!(
                "{field}.storey = {} must be a storey 1..={FLOORS}",
                self.storey
            ));
        }
        for (name, value) in [
            ("stiffness_factor", self.stiffness_factor),
            ("damping_factor", self.damping_factor),
        ] {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!(
                    "{field}.{name} = {value} must be finite and > 0 (1 leaves it unchanged)"
                ));
            }
        }
        check_non_negative(&mut problems, &format!("{field}.at_s"), self.at_s);
        check_non_negative(&mut problems, &format!("{field}.ramp_s"), self.ramp_s);
        problems
    }
}

/// The excitation signal. Amplitudes are in the target's unit: N for a floor force,
/// m/s² for ground acceleration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExcitationConfig {
    /// No excitation: only sensor noise and the actuator move anything.
    None,
    /// White Gaussian noise through 4th-order Butterworth filters, scaled to `rms`.
    Noise {
        /// RMS of the filtered signal.
        rms: f64,
        /// High-pass corner, Hz; 0 = no high-pass.
        low_hz: f64,
        /// Low-pass corner, Hz; below 0.45 × the sample rate.
        high_hz: f64,
    },
    /// `amplitude · sin(2π f t)`, t = sample index / sample rate.
    Sine {
        /// Peak value.
        amplitude: f64,
        /// Frequency, Hz, below the Nyquist frequency.
        frequency_hz: f64,
    },
    /// Linear sweep from `f0_hz` to `f1_hz` over `period_s`, then again from `f0_hz`.
    Chirp {
        /// Peak value.
        amplitude: f64,
        /// Start frequency, Hz.
        f0_hz: f64,
        /// End frequency, Hz, below the Nyquist frequency.
        f1_hz: f64,
        /// Duration of one sweep, s.
        period_s: f64,
    },
}

/// How the actuator at `actuator_floor` acts on the structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActuatorKind {
    /// An inertial (proof-mass) actuator bolted to the floor (dtop-dynamics'
    /// `InertialActuator` defaults): the commanded force pushes the proof mass one way and
    /// the floor the other, and the proof mass is one more DOF of the structure.
    #[default]
    Inertial,
    /// A shaker on a stinger from a fixed frame, as in control-based continuation
    /// experiments: the commanded force acts on the floor itself (positive along the floor's
    /// displacement), and the structure is the bare building. With the excitation on floor 1
    /// the force gauge (channel 3) sits on the shaker's stinger and reads the shaker's
    /// force, so the twin sees the control force; with ground excitation it stays the base
    /// accelerometer.
    Shaker,
}

/// Where the excitation enters the structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExcitationTarget {
    /// A force at floor 1 (a modal hammer or shaker on the first floor); channel 3 is a force
    /// gauge measuring it.
    #[default]
    Floor1Force,
    /// Base shaker: the excitation is the ground acceleration; channel 3 is a base
    /// accelerometer (floor 0) measuring it.
    GroundAccel,
}

/// Default excitation: band-limited noise, 5 N RMS, 0–50 Hz.
impl Default for ExcitationConfig {
    fn default() -> Self {
        Self::Noise {
            rms: DEFAULT_NOISE_RMS,
            low_hz: 0.0,
            high_hz: DEFAULT_NOISE_HIGH_HZ,
        }
    }
}

const DEFAULT_NOISE_RMS: f64 = 5.0;
const DEFAULT_NOISE_HIGH_HZ: f64 = 50.0;

/// Largest sample rate the simulator accepts, Hz. The model is discretised exactly, so this
/// is about CPU, not accuracy.
pub const MAX_SAMPLE_RATE_HZ: f64 = 100_000.0;

/// Highest filter corner relative to the sample rate; above this the bilinear transform
/// warps the Butterworth shape beyond recognition.
const MAX_CORNER_FRACTION: f64 = 0.45;

/// Most samples per frame with 4 channels: 11 + 4·C·S ≤ 1024 (PROTOCOL.md §4.3, §5).
pub const MAX_SAMPLES_PER_FRAME: u16 =
    ((dtop_firmware::MAX_PAYLOAD_LEN - 11) / (4 * CHANNEL_COUNT)) as u16;

const fn default_seed() -> u64 {
    1
}
const fn default_sample_rate_hz() -> f64 {
    1000.0
}
const fn default_samples_per_frame() -> u16 {
    10
}
const fn default_speed() -> f64 {
    1.0
}
fn default_firmware_version() -> String {
    concat!("rig-sim-", env!("CARGO_PKG_VERSION")).to_owned()
}
const fn default_actuator_floor() -> u8 {
    3
}
const fn default_actuator_max_force_n() -> f32 {
    20.0
}
const fn default_accel_noise_rms_m_s2() -> f64 {
    0.002
}
const fn default_force_noise_rms_n() -> f64 {
    0.005
}
const fn default_watchdog_timeout_ms() -> u64 {
    500
}
const fn default_heartbeat_period_ms() -> u64 {
    1000
}
const fn default_write_stall_timeout_ms() -> u64 {
    200
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: default_seed(),
            sample_rate_hz: default_sample_rate_hz(),
            samples_per_frame: default_samples_per_frame(),
            speed: default_speed(),
            max_samples: None,
            truth_log: None,
            latency_log: None,
            pty_link: None,
            modbus_listen: None,
            control_socket: None,
            firmware_version: default_firmware_version(),
            actuator_floor: default_actuator_floor(),
            actuator_kind: ActuatorKind::default(),
            actuator_max_force_n: default_actuator_max_force_n(),
            excitation: ExcitationConfig::default(),
            excitation_target: ExcitationTarget::default(),
            accel_noise_rms_m_s2: default_accel_noise_rms_m_s2(),
            force_noise_rms_n: default_force_noise_rms_n(),
            watchdog_timeout_ms: default_watchdog_timeout_ms(),
            heartbeat_period_ms: default_heartbeat_period_ms(),
            write_stall_timeout_ms: default_write_stall_timeout_ms(),
            damage: Vec::new(),
            springs: Vec::new(),
        }
    }
}

/// Every problem `validate()` found, so an operator can fix them all in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulator config: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

impl SimConfig {
    /// Parses TOML text (phase one: shape). Call `validate()` afterwards. Reports every
    /// parse-level problem at once, not just the first.
    pub fn from_toml(text: &str) -> Result<Self, dtop_daemon::ConfigProblems> {
        dtop_daemon::parse(text, |_: &Self| Vec::new())
    }

    /// Phase two: every range and cross-field rule. Returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let fs = self.sample_rate_hz;
        let nyquist_hz = fs / 2.0;

        if !(fs.is_finite() && fs > 0.0 && fs <= MAX_SAMPLE_RATE_HZ) {
            problems.push(format!(
                "sample_rate_hz = {fs} must be in (0, {MAX_SAMPLE_RATE_HZ}]"
            ));
        } else if (fs * 1000.0 - (fs * 1000.0).round()).abs() > 1e-6 {
            problems.push(format!(
                "sample_rate_hz = {fs} must be a whole number of millihertz (PROTOCOL.md §4.2)"
            ));
        }
        if self.samples_per_frame == 0 || self.samples_per_frame > MAX_SAMPLES_PER_FRAME {
            problems.push(format!(
                "samples_per_frame = {} must be in 1..={MAX_SAMPLES_PER_FRAME} (PROTOCOL.md §5)",
                self.samples_per_frame
            ));
        }
        if !(self.speed.is_finite() && self.speed >= 0.0) {
            problems.push(format!("speed = {} must be finite and >= 0", self.speed));
        } else if self.speed > 0.0 && fs.is_finite() && fs > 0.0 {
            let frame_period_s = f64::from(self.samples_per_frame.max(1)) / fs / self.speed;
            if frame_period_s < 1e-6 {
                problems.push(format!(
                    "speed = {} makes the frame period {frame_period_s:e} s, below 1 µs; use speed = 0 (lock-step) instead",
                    self.speed
                ));
            }
        }
        if self.max_samples == Some(0) {
            problems.push("max_samples = 0 would never stream; omit it or use >= 1".to_owned());
        }
        if self.firmware_version.len() > dtop_firmware::MAX_VERSION_LEN {
            problems.push(format!(
                "firmware_version is {} bytes, at most {} allowed (PROTOCOL.md §4.2)",
                self.firmware_version.len(),
                dtop_firmware::MAX_VERSION_LEN
            ));
        }
        if self.actuator_floor > 3 {
            problems.push(format!(
                "actuator_floor = {} must be 0 (none) or a floor 1..=3",
                self.actuator_floor
            ));
        }
        if !(self.actuator_max_force_n.is_finite() && self.actuator_max_force_n >= 0.0) {
            problems.push(format!(
                "actuator_max_force_n = {} must be finite and >= 0",
                self.actuator_max_force_n
            ));
        }
        check_non_negative(
            &mut problems,
            "accel_noise_rms_m_s2",
            self.accel_noise_rms_m_s2,
        );
        check_non_negative(&mut problems, "force_noise_rms_n", self.force_noise_rms_n);
        for (i, d) in self.damage.iter().enumerate() {
            problems.extend(d.problems(&format!("damage[{i}]")));
        }
        for (i, spring) in self.springs.iter().enumerate() {
            problems.extend(spring_problems(spring, &format!("springs[{i}]")));
        }
        if self.watchdog_timeout_ms == 0 {
            problems.push("watchdog_timeout_ms must be >= 1".to_owned());
        }
        if self.heartbeat_period_ms == 0 {
            problems.push("heartbeat_period_ms must be >= 1".to_owned());
        }
        if self.write_stall_timeout_ms == 0 {
            problems.push("write_stall_timeout_ms must be >= 1".to_owned());
        }
        if self
            .truth_log
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("truth_log must not be an empty path".to_owned());
        }
        if self
            .latency_log
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("latency_log must not be an empty path".to_owned());
        }
        if self
            .pty_link
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("pty_link must not be an empty path".to_owned());
        }
        self.validate_excitation(&mut problems, nyquist_hz);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Whether any spring adds a nonlinear term (all-zero springs add none).
    pub fn is_nonlinear(&self) -> bool {
        self.springs.iter().any(|s| s.degree() > 1)
    }

    fn validate_excitation(&self, problems: &mut Vec<String>, nyquist_hz: f64) {
        let max_corner_hz = 2.0 * MAX_CORNER_FRACTION * nyquist_hz;
        match &self.excitation {
            ExcitationConfig::None => {}
            ExcitationConfig::Noise {
                rms,
                low_hz,
                high_hz,
            } => {
                check_non_negative(problems, "excitation.rms", *rms);
                check_non_negative(problems, "excitation.low_hz", *low_hz);
                if !(high_hz.is_finite() && *high_hz > 0.0 && *high_hz <= max_corner_hz) {
                    problems.push(format!(
                        "excitation.high_hz = {high_hz} must be in (0, {max_corner_hz}] (0.45 × sample rate)"
                    ));
                }
                if low_hz.is_finite() && high_hz.is_finite() && *low_hz >= *high_hz {
                    problems.push(format!(
                        "excitation.low_hz = {low_hz} must be below excitation.high_hz = {high_hz}"
                    ));
                }
                if *low_hz > 0.0 && *low_hz < MIN_HIGH_PASS_HZ {
                    problems.push(format!(
                        "excitation.low_hz = {low_hz} must be 0 (no high-pass) or >= {MIN_HIGH_PASS_HZ} Hz"
                    ));
                }
            }
            ExcitationConfig::Sine {
                amplitude,
                frequency_hz,
            } => {
                check_non_negative(problems, "excitation.amplitude", *amplitude);
                check_below_nyquist(
                    problems,
                    "excitation.frequency_hz",
                    *frequency_hz,
                    nyquist_hz,
                );
            }
            ExcitationConfig::Chirp {
                amplitude,
                f0_hz,
                f1_hz,
                period_s,
            } => {
                check_non_negative(problems, "excitation.amplitude", *amplitude);
                check_below_nyquist(problems, "excitation.f0_hz", *f0_hz, nyquist_hz);
                check_below_nyquist(problems, "excitation.f1_hz", *f1_hz, nyquist_hz);
                if !(period_s.is_finite() && *period_s > 0.0) {
                    problems.push(format!("excitation.period_s = {period_s} must be > 0"));
                } else if *period_s * self.sample_rate_hz < 1.0 {
                    problems.push(format!(
                        "excitation.period_s = {period_s} is shorter than one sample"
                    ));
                }
            }
        }
    }

    /// Sample rate as carried in the manifest, mHz. Valid only after `validate()`.
    pub fn sample_rate_mhz(&self) -> u32 {
        // validate() bounds the rate to 100 kHz = 1e8 mHz, well inside u32.
        (self.sample_rate_hz * 1000.0).round() as u32
    }
}

/// Lowest high-pass corner: the noise normaliser sums the filter's impulse response, which
/// takes ~fs/low_hz samples to decay.
pub const MIN_HIGH_PASS_HZ: f64 = 0.1;

fn check_non_negative(problems: &mut Vec<String>, name: &str, value: f64) {
    if !(value.is_finite() && value >= 0.0) {
        problems.push(format!("{name} = {value} must be finite and >= 0"));
    }
}

fn check_below_nyquist(problems: &mut Vec<String>, name: &str, value_hz: f64, nyquist_hz: f64) {
    if !(value_hz.is_finite() && value_hz >= 0.0 && value_hz < nyquist_hz) {
        problems.push(format!(
            "{name} = {value_hz} must be in [0, {nyquist_hz}) (below the Nyquist frequency)"
        ));
    }
}

/// Every problem with one polynomial spring of the rig, each naming `field`.
fn spring_problems(spring: &PolynomialSpring, field: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (name, index) = match spring.link {
        SpringLink::Storey { storey } => ("storey", storey),
        SpringLink::FloorToGround { floor } => ("floor", floor),
    };
    if !(1..=FLOORS).contains(&index) {
        problems.push(format!(
            "{field}.link.{name} = {index} must be within 1..={FLOORS} (the rig has {FLOORS} floors)"
        ));
    }
    for (name, value) in [
        ("quadratic_n_per_m2", spring.quadratic_n_per_m2),
        ("cubic_n_per_m3", spring.cubic_n_per_m3),
        ("quintic_n_per_m5", spring.quintic_n_per_m5),
    ] {
        if !value.is_finite() {
            problems.push(format!(
                "{field}.{name} = {value} must be finite (0 for none)"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
    }

    #[test]
    fn example_config_is_the_default_and_valid() {
        let example = SimConfig::from_toml(include_str!("../dtop-rig-sim.example.toml")).unwrap();
        // The default version string follows the crate version; everything else must match.
        let default = SimConfig {
            firmware_version: example.firmware_version.clone(),
            ..SimConfig::default()
        };
        assert_eq!(example, default);
        assert_eq!(example.validate(), Ok(()));
    }

    #[test]
    fn empty_toml_gives_the_defaults() {
        let parsed = SimConfig::from_toml("").unwrap();
        assert_eq!(parsed, SimConfig::default());
    }

    #[test]
    fn default_config_survives_a_toml_round_trip() {
        let text = toml::to_string(&SimConfig::default()).unwrap();
        assert_eq!(SimConfig::from_toml(&text).unwrap(), SimConfig::default());
    }

    #[test]
    fn every_damage_problem_is_reported_at_once() {
        let config = SimConfig::from_toml(
            "[[damage]]\nstorey = 4\nstiffness_factor = 0.0\ndamping_factor = -0.5\nat_s = -1.0\n\
             ramp_s = nan\n\n[[damage]]\nstorey = 2\nstiffness_factor = 0.9\nat_s = 10.0\n\n\
             [[damage]]\nstorey = 3\ndamping_factor = 3.0\nat_s = 10.0\n",
        )
        .unwrap();
        let Err(ConfigError(problems)) = config.validate() else {
            panic!("bad damage accepted");
        };
        for needle in [
            "damage[0].storey = 4",
            "damage[0].stiffness_factor = 0",
            "damage[0].damping_factor = -0.5",
            "damage[0].at_s = -1",
            "damage[0].ramp_s = NaN",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 5, "{problems:?}");
        // A damping change alone leaves the stiffness unchanged.
        assert_eq!(config.damage[2].stiffness_factor, 1.0);
        assert!(
            SimConfig::from_toml("[[damage]]\nstorey = 1\nstifness_factor = 0.9\nat_s = 0.0\n")
                .is_err()
        );
    }

    #[test]
    fn rejects_unknown_fields_at_top_level_and_in_the_excitation() {
        assert!(SimConfig::from_toml("sped = 2.0").is_err());
        let text =
            "[excitation]\nkind = \"sine\"\namplitude = 1.0\nfrequency_hz = 5.0\nphase = 1.0\n";
        assert!(SimConfig::from_toml(text).is_err());
    }

    #[test]
    fn parses_every_excitation_kind() {
        let sine = "[excitation]\nkind = \"sine\"\namplitude = 1.0\nfrequency_hz = 5.0\n";
        assert_eq!(
            SimConfig::from_toml(sine).unwrap().excitation,
            ExcitationConfig::Sine {
                amplitude: 1.0,
                frequency_hz: 5.0
            }
        );
        let chirp = "[excitation]\nkind = \"chirp\"\namplitude = 1.0\nf0_hz = 1.0\nf1_hz = 40.0\nperiod_s = 10.0\n";
        assert!(matches!(
            SimConfig::from_toml(chirp).unwrap().excitation,
            ExcitationConfig::Chirp { .. }
        ));
        let none = "excitation_target = \"ground_accel\"\n[excitation]\nkind = \"none\"\n";
        let parsed = SimConfig::from_toml(none).unwrap();
        assert_eq!(parsed.excitation, ExcitationConfig::None);
        assert_eq!(parsed.excitation_target, ExcitationTarget::GroundAccel);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let config = SimConfig {
            sample_rate_hz: 1000.0,
            samples_per_frame: 0,
            speed: -1.0,
            actuator_floor: 4,
            actuator_max_force_n: f32::NAN,
            firmware_version: "x".repeat(40),
            excitation: ExcitationConfig::Noise {
                rms: -1.0,
                low_hz: 60.0,
                high_hz: 50.0,
            },
            ..SimConfig::default()
        };
        let problems = config.validate().unwrap_err().0;
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    #[test]
    fn refuses_corner_frequencies_near_nyquist() {
        let config = SimConfig {
            excitation: ExcitationConfig::Noise {
                rms: 1.0,
                low_hz: 0.0,
                high_hz: 460.0,
            },
            ..SimConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn refuses_sample_rates_finer_than_a_millihertz() {
        let config = SimConfig {
            sample_rate_hz: 1000.0004,
            ..SimConfig::default()
        };
        assert!(config.validate().is_err());
        let config = SimConfig {
            sample_rate_hz: 1000.5,
            ..SimConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sample_rate_mhz(), 1_000_500);
    }

    #[test]
    fn max_samples_per_frame_fills_the_payload_exactly() {
        let payload = 11 + 4 * CHANNEL_COUNT * usize::from(MAX_SAMPLES_PER_FRAME);
        assert!(payload <= dtop_firmware::MAX_PAYLOAD_LEN);
        assert!(payload + 4 * CHANNEL_COUNT > dtop_firmware::MAX_PAYLOAD_LEN);
    }
}
