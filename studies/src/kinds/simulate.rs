//! The `simulate` study: the time-domain response of a model to a force on one floor
//! (hammer pulse, harmonic, swept sine or band-limited white noise), by the exact
//! zero-order-hold discretisation of its state space at dt = 1/fs; the response's PSD (Welch
//! and periodogram, one-sided densities, scaling in `crate::signal`) and the H1 estimate with
//! coherence from the force to every floor; and, optionally, Monte Carlo dispersion of the
//! model's parameters with mean and percentile envelopes of the PSD and |H1|.
//!
//! Determinism: Monte Carlo sample `j` draws from `chunk_seed(seed, j)` and the nominal run
//! from `chunk_seed(seed, u32::MAX)`, so a sample is the same whichever chunk computes it and
//! the result does not depend on how the samples are split.

use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig};
use nalgebra::DVector;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::signal::{self, C64, SegmentSpectra};
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError, chunk_seed};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Most time steps one run may take.
pub const MAX_STEPS: u64 = 20_000_000;
/// Most time steps whose full history is returned as an array.
pub const MAX_TIME_HISTORY_STEPS: u64 = 1_000_000;
/// Most Monte Carlo samples.
pub const MAX_SAMPLES: u32 = 100_000;
/// Time steps between two looks at the cancel flag.
const STEPS_PER_CHECK: usize = 8192;
/// Draws of a dispersion factor before giving up on a positive one.
const MAX_FACTOR_DRAWS: usize = 1000;
/// Percentiles of the Monte Carlo envelopes.
const PERCENTILES: [f64; 3] = [5.0, 50.0, 95.0];

/// Parameters of `simulate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Simulated time, s; the run has round(duration_s·sample_rate_hz) samples at
    /// t_k = k/fs.
    pub duration_s: f64,
    /// Sample rate fs, Hz; the step is exactly 1/fs.
    pub sample_rate_hz: f64,
    /// Floor (1-based) the force acts on.
    pub force_floor: usize,
    /// The force.
    pub excitation: Excitation,
    /// Which motion the spectra and H1 are computed from.
    #[serde(default)]
    pub response: ResponseQuantity,
    /// Welch's method settings.
    pub welch: Welch,
    /// Whether the nominal run's time history is returned (at most 1 000 000 steps).
    #[serde(default = "default_true")]
    pub time_history: bool,
    /// Monte Carlo dispersion of the parameters; absent for the nominal run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<Dispersion>,
}

const fn default_true() -> bool {
    true
}

/// The force on `force_floor`, in N, as a function of time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Excitation {
    /// A Gaussian pulse amplitude·exp(−(t − t0)²/(2·width²)), impulse amplitude·width·√(2π).
    Hammer {
        /// Peak force, N.
        amplitude_n: f64,
        /// Standard deviation of the pulse, s; at least two samples.
        width_s: f64,
        /// Time of the peak, s.
        t0_s: f64,
    },
    /// amplitude·sin(2π·f·t).
    Harmonic {
        /// Amplitude, N.
        amplitude_n: f64,
        /// Frequency, Hz; below fs/2.
        frequency_hz: f64,
    },
    /// A swept sine from f0 to f1 over the whole duration.
    Sweep {
        /// Amplitude, N.
        amplitude_n: f64,
        /// Start frequency, Hz.
        f0_hz: f64,
        /// End frequency, Hz; below fs/2.
        f1_hz: f64,
        /// How the frequency moves from f0 to f1.
        law: SweepLaw,
    },
    /// Gaussian white noise, band-limited to [f_low_hz, f_high_hz] by zeroing its spectrum
    /// outside the band, with a one-sided PSD `psd_n2_per_hz` or an RMS `rms_n` (exactly one;
    /// rms² = psd·(f_high − f_low)). Seeded by the study seed.
    WhiteNoise {
        /// One-sided PSD level in the band, N²/Hz.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        psd_n2_per_hz: Option<f64>,
        /// RMS force, N.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rms_n: Option<f64>,
        /// Lower band edge, Hz (default 0).
        #[serde(default)]
        f_low_hz: f64,
        /// Upper band edge, Hz; at most fs/2 (default fs/2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        f_high_hz: Option<f64>,
    },
}

/// Frequency law of a swept sine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepLaw {
    /// f(t) = f0 + (f1 − f0)·t/T.
    Linear,
    /// f(t) = f0·(f1/f0)^(t/T); needs f0 > 0.
    Log,
}

/// The motion analysed by the spectra and H1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseQuantity {
    /// Displacement relative to the ground, m.
    Displacement,
    /// Velocity relative to the ground, m/s.
    Velocity,
    /// Absolute acceleration, m/s².
    #[default]
    Acceleration,
}

impl ResponseQuantity {
    fn unit(self) -> &'static str {
        match self {
            Self::Displacement => "m",
            Self::Velocity => "m_per_s",
            Self::Acceleration => "m_per_s2",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Displacement => "displacement",
            Self::Velocity => "velocity",
            Self::Acceleration => "acceleration",
        }
    }
}

/// Welch's method: Hann window of `nperseg` samples, segments overlapping by a fraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welch {
    /// Segment length, samples; 8 to the run's length. Resolution fs/nperseg.
    pub nperseg: usize,
    /// Overlap of consecutive segments, as a fraction of nperseg within [0, 0.95].
    pub overlap: f64,
}

/// Monte Carlo dispersion: each sample scales each floor mass, each storey stiffness and the
/// damping by independent factors 1 + std·z, z standard normal, redrawn while not above 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispersion {
    /// Number of samples, 1 to 100 000.
    pub n_samples: u32,
    /// Relative standard deviation of each floor mass, within [0, 0.5].
    #[serde(default)]
    pub mass_rel_std: f64,
    /// Relative standard deviation of each storey stiffness, within [0, 0.5].
    #[serde(default)]
    pub stiffness_rel_std: f64,
    /// Relative standard deviation of the damping (each storey damper, each modal ratio, or
    /// one factor on the Rayleigh coefficients or the damping matrix), within [0, 0.5].
    #[serde(default)]
    pub damping_rel_std: f64,
    /// Samples per chunk. Absent: as many as make about `Budget::default().chunk_work_units`
    /// work units (the chunk size must follow from the parameters alone, because a chunk is
    /// computed without the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_chunk: Option<u32>,
}

impl Params {
    /// The defaults for `model`: Cristallo's simulator (TOOLS.md §9.1): 5 s at 2048 Hz, a
    /// 300 N hammer of width 0.01 s at 0.5 s on the force gauge's floor (floor 1 without
    /// one), acceleration spectra, Welch with 1-s Hann segments and half overlap, no
    /// dispersion.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        Self {
            duration_s: 5.0,
            sample_rate_hz: 2048.0,
            force_floor: model.sensors.force_gauge_floor.unwrap_or(1),
            excitation: Excitation::Hammer {
                amplitude_n: 300.0,
                width_s: 0.01,
                t0_s: 0.5,
            },
            response: ResponseQuantity::Acceleration,
            welch: Welch {
                nperseg: 2048,
                overlap: 0.5,
            },
            time_history: true,
            dispersion: None,
        }
    }

    /// Number of time steps.
    fn steps(&self) -> u64 {
        let n = (self.duration_s * self.sample_rate_hz).round();
        if n.is_finite() && n >= 0.0 {
            n as u64
        } else {
            0
        }
    }

    fn noverlap(&self) -> usize {
        ((self.welch.nperseg as f64) * self.welch.overlap).floor() as usize
    }
}

fn finite_in(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && x >= lo && x <= hi
}

/// Every problem of `params` on a model of `floors` floors, each under `params.`.
fn problems(floors: usize, params: &Params) -> Vec<FieldProblem> {
    let mut p = Vec::new();
    let mut bad = |field: &str, message: String| p.push(FieldProblem::new(field, message));
    let fs = params.sample_rate_hz;
    let nyquist = fs / 2.0;
    if !finite_in(params.duration_s, 1e-6, 1e6) {
        bad(
            "params.duration_s",
            format!("{} s must be within [1e-6, 1e6]", params.duration_s),
        );
    }
    if !finite_in(fs, 1.0, 1e6) {
        bad(
            "params.sample_rate_hz",
            format!("{fs} Hz must be within [1, 1e6]"),
        );
    }
    let steps = params.steps();
    if !(16..=MAX_STEPS).contains(&steps) {
        bad(
            "params.duration_s",
            format!("duration × sample rate gives {steps} samples; allowed 16 to {MAX_STEPS}"),
        );
    }
    if !(1..=floors).contains(&params.force_floor) {
        bad(
            "params.force_floor",
            format!(
                "floor {} does not exist; floors are 1..={floors}",
                params.force_floor
            ),
        );
    }
    match params.excitation {
        Excitation::Hammer {
            amplitude_n,
            width_s,
            t0_s,
        } => {
            if !finite_in(amplitude_n, -1e9, 1e9) {
                bad(
                    "params.excitation.amplitude_n",
                    format!("{amplitude_n} N must be finite, within ±1e9"),
                );
            }
            if !(width_s.is_finite() && width_s >= 2.0 / fs && width_s <= params.duration_s) {
                bad(
                    "params.excitation.width_s",
                    format!(
                        "{width_s} s must be at least two samples (2/fs = {}) and at most the duration",
                        2.0 / fs
                    ),
                );
            }
            if !finite_in(t0_s, 0.0, params.duration_s) {
                bad(
                    "params.excitation.t0_s",
                    format!("{t0_s} s must be within [0, duration_s]"),
                );
            }
        }
        Excitation::Harmonic {
            amplitude_n,
            frequency_hz,
        } => {
            if !finite_in(amplitude_n, -1e9, 1e9) {
                bad(
                    "params.excitation.amplitude_n",
                    format!("{amplitude_n} N must be finite, within ±1e9"),
                );
            }
            if !(frequency_hz.is_finite() && frequency_hz > 0.0 && frequency_hz < nyquist) {
                bad(
                    "params.excitation.frequency_hz",
                    format!("{frequency_hz} Hz must be within (0, fs/2 = {nyquist})"),
                );
            }
        }
        Excitation::Sweep {
            amplitude_n,
            f0_hz,
            f1_hz,
            law,
        } => {
            if !finite_in(amplitude_n, -1e9, 1e9) {
                bad(
                    "params.excitation.amplitude_n",
                    format!("{amplitude_n} N must be finite, within ±1e9"),
                );
            }
            let lo = if law == SweepLaw::Log {
                f64::MIN_POSITIVE
            } else {
                0.0
            };
            for (field, f) in [("f0_hz", f0_hz), ("f1_hz", f1_hz)] {
                if !(f.is_finite() && f >= lo && f < nyquist) {
                    bad(
                        &format!("params.excitation.{field}"),
                        format!(
                            "{f} Hz must be within {}[0, fs/2 = {nyquist})",
                            if law == SweepLaw::Log {
                                "(0 for a log sweep) "
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
            if law == SweepLaw::Log && f0_hz == f1_hz {
                bad(
                    "params.excitation.f1_hz",
                    "a log sweep needs f1_hz different from f0_hz".into(),
                );
            }
        }
        Excitation::WhiteNoise {
            psd_n2_per_hz,
            rms_n,
            f_low_hz,
            f_high_hz,
        } => {
            match (psd_n2_per_hz, rms_n) {
                (Some(v), None) | (None, Some(v)) => {
                    if !finite_in(v, 0.0, 1e18) {
                        bad(
                            "params.excitation",
                            format!("the noise level {v} must be zero or positive and finite"),
                        );
                    }
                }
                _ => bad(
                    "params.excitation.psd_n2_per_hz",
                    "give exactly one of psd_n2_per_hz or rms_n".into(),
                ),
            }
            let high = f_high_hz.unwrap_or(nyquist);
            if !(f_low_hz.is_finite() && f_low_hz >= 0.0 && f_low_hz < high) {
                bad(
                    "params.excitation.f_low_hz",
                    format!("{f_low_hz} Hz must be zero or positive and below f_high_hz = {high}"),
                );
            }
            if !(high.is_finite() && high > 0.0 && high <= nyquist) {
                bad(
                    "params.excitation.f_high_hz",
                    format!("{high} Hz must be within (0, fs/2 = {nyquist}]"),
                );
            }
        }
    }
    if params.welch.nperseg < 8 || params.welch.nperseg as u64 > steps {
        bad(
            "params.welch.nperseg",
            format!(
                "{} must be within 8..={steps} (the run's samples)",
                params.welch.nperseg
            ),
        );
    }
    if !finite_in(params.welch.overlap, 0.0, 0.95) {
        bad(
            "params.welch.overlap",
            format!("{} must be within [0, 0.95]", params.welch.overlap),
        );
    }
    if params.time_history && steps > MAX_TIME_HISTORY_STEPS {
        bad(
            "params.time_history",
            format!(
                "{steps} steps is more than the {MAX_TIME_HISTORY_STEPS} a returned history may \
                 have: set time_history to false or shorten the run"
            ),
        );
    }
    if let Some(d) = &params.dispersion {
        if !(1..=MAX_SAMPLES).contains(&d.n_samples) {
            bad(
                "params.dispersion.n_samples",
                format!("{} must be within 1..={MAX_SAMPLES}", d.n_samples),
            );
        }
        for (field, v) in [
            ("mass_rel_std", d.mass_rel_std),
            ("stiffness_rel_std", d.stiffness_rel_std),
            ("damping_rel_std", d.damping_rel_std),
        ] {
            if !finite_in(v, 0.0, 0.5) {
                bad(
                    &format!("params.dispersion.{field}"),
                    format!("{v} must be within [0, 0.5]"),
                );
            }
        }
        if d.samples_per_chunk == Some(0) {
            bad(
                "params.dispersion.samples_per_chunk",
                "must be at least 1".into(),
            );
        }
    }
    p
}

/// Samples per chunk: given, or about `Budget::default().chunk_work_units` worth (only for
/// params stored before `plan` fixed the chunk size from the engine's budget).
fn samples_per_chunk(params: &Params, dofs: u64) -> u32 {
    let Some(d) = &params.dispersion else {
        return 1;
    };
    d.samples_per_chunk.unwrap_or_else(|| {
        samples_per_chunk_within(params, dofs, Budget::default().chunk_work_units)
    })
}

/// Samples making about `chunk_work_units` work units (at least 1): what `plan` fixes in the
/// resolved params when the submitter gave no `dispersion.samples_per_chunk`.
pub(crate) fn samples_per_chunk_within(params: &Params, dofs: u64, chunk_work_units: u64) -> u32 {
    let per_sample = params.steps().saturating_mul(dofs).max(1);
    let n = chunk_work_units / per_sample;
    u32::try_from(n.clamp(1, u64::from(MAX_SAMPLES))).unwrap_or(1)
}

fn n_samples(params: &Params) -> u32 {
    params.dispersion.map_or(0, |d| d.n_samples)
}

/// The nominal run plus one chunk per `samples_per_chunk` Monte Carlo samples (the nominal
/// run rides in chunk 0); work = (1 + samples) × steps × DOFs.
///
/// # Errors
/// Every problem of the model and the parameters; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(building.floors(), params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let dofs = building.dofs() as u64;
    let runs = 1 + u64::from(n_samples(params));
    let work_units = runs.saturating_mul(params.steps()).saturating_mul(dofs);
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    let per_chunk = samples_per_chunk(params, dofs);
    let chunks = n_samples(params).div_ceil(per_chunk).max(1);
    Ok(Plan { chunks, work_units })
}

/// The force history, one value per sample, from `rng` for white noise.
fn force_history(params: &Params, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = params.steps() as usize;
    let fs = params.sample_rate_hz;
    let t = |k: usize| k as f64 / fs;
    let tau = std::f64::consts::TAU;
    match params.excitation {
        Excitation::Hammer {
            amplitude_n,
            width_s,
            t0_s,
        } => (0..n)
            .map(|k| {
                let u = (t(k) - t0_s) / width_s;
                amplitude_n * (-0.5 * u * u).exp()
            })
            .collect(),
        Excitation::Harmonic {
            amplitude_n,
            frequency_hz,
        } => (0..n)
            .map(|k| amplitude_n * (tau * frequency_hz * t(k)).sin())
            .collect(),
        Excitation::Sweep {
            amplitude_n,
            f0_hz,
            f1_hz,
            law,
        } => {
            let duration = params.duration_s;
            (0..n)
                .map(|k| {
                    let t = t(k);
                    let phase = match law {
                        SweepLaw::Linear => {
                            tau * (f0_hz * t + (f1_hz - f0_hz) * t * t / (2.0 * duration))
                        }
                        SweepLaw::Log => {
                            let r = f1_hz / f0_hz;
                            tau * f0_hz * duration / r.ln() * (r.powf(t / duration) - 1.0)
                        }
                    };
                    amplitude_n * phase.sin()
                })
                .collect()
        }
        Excitation::WhiteNoise {
            psd_n2_per_hz,
            rms_n,
            f_low_hz,
            f_high_hz,
        } => {
            let f_high = f_high_hz.unwrap_or(fs / 2.0);
            let level = match (psd_n2_per_hz, rms_n) {
                (Some(s), _) => s,
                (None, Some(rms)) => rms * rms / (f_high - f_low_hz),
                (None, None) => 0.0,
            };
            // A white sequence of variance σ² has the one-sided density 2σ²/fs; zeroing bins
            // outside the band leaves the density inside it unchanged.
            let sigma = (level * fs / 2.0).sqrt();
            let mut buf: Vec<C64> = (0..n)
                .map(|_| C64::new(rng.sample::<f64, _>(StandardNormal), 0.0))
                .collect();
            let mut planner = FftPlanner::new();
            planner.plan_fft_forward(n).process(&mut buf);
            for (k, v) in buf.iter_mut().enumerate() {
                let f = k.min(n - k) as f64 * fs / n as f64;
                if f < f_low_hz || f > f_high {
                    *v = C64::new(0.0, 0.0);
                }
            }
            planner.plan_fft_inverse(n).process(&mut buf);
            buf.iter().map(|v| v.re * sigma / n as f64).collect()
        }
    }
}

/// One dispersion factor 1 + std·z, redrawn until positive.
fn factor(rng: &mut ChaCha8Rng, rel_std: f64) -> Result<f64, StudyError> {
    for _ in 0..MAX_FACTOR_DRAWS {
        let f = 1.0 + rel_std * rng.sample::<f64, _>(StandardNormal);
        if f > 0.0 {
            return Ok(f);
        }
    }
    Err(StudyError::Numerics(
        "no positive dispersion factor in 1000 draws".into(),
    ))
}

/// The model of one Monte Carlo sample.
fn dispersed(
    structure: &ShearBuildingConfig,
    d: &Dispersion,
    rng: &mut ChaCha8Rng,
) -> Result<ShearBuildingConfig, StudyError> {
    let mut s = structure.clone();
    for m in &mut s.floor_masses_kg {
        *m *= factor(rng, d.mass_rel_std)?;
    }
    for k in &mut s.storey_stiffness_n_per_m {
        *k *= factor(rng, d.stiffness_rel_std)?;
    }
    s.damping = match s.damping {
        Damping::Rayleigh {
            alpha_per_s,
            beta_s,
        } => {
            let f = factor(rng, d.damping_rel_std)?;
            Damping::Rayleigh {
                alpha_per_s: alpha_per_s * f,
                beta_s: beta_s * f,
            }
        }
        Damping::RayleighModes {
            zeta,
            mode_a,
            mode_b,
        } => Damping::RayleighModes {
            zeta: (zeta * factor(rng, d.damping_rel_std)?).min(0.99),
            mode_a,
            mode_b,
        },
        Damping::Modal { zetas } => Damping::Modal {
            zetas: zetas
                .into_iter()
                .map(|z| Ok((z * factor(rng, d.damping_rel_std)?).min(0.99)))
                .collect::<Result<_, StudyError>>()?,
        },
        Damping::StoreyDampers {
            storey_damping_n_s_per_m,
        } => Damping::StoreyDampers {
            storey_damping_n_s_per_m: storey_damping_n_s_per_m
                .into_iter()
                .map(|c| Ok(c * factor(rng, d.damping_rel_std)?))
                .collect::<Result<_, StudyError>>()?,
        },
        Damping::Matrix { matrix_n_s_per_m } => {
            let f = factor(rng, d.damping_rel_std)?;
            Damping::Matrix {
                matrix_n_s_per_m: matrix_n_s_per_m
                    .into_iter()
                    .map(|row| row.into_iter().map(|c| c * f).collect())
                    .collect(),
            }
        }
    };
    Ok(s)
}

/// The motion of every floor at every sample: `[floor][k]`.
#[derive(Debug, Clone, Default)]
struct Histories {
    displacement_m: Vec<Vec<f64>>,
    velocity_m_per_s: Vec<Vec<f64>>,
    acceleration_m_per_s2: Vec<Vec<f64>>,
}

/// Integrates `building` under `force` on `floor` from rest: x[k+1] = Ad·x[k] + Bd·u[k]
/// with u held over each step (ZOH), outputs at t_k.
fn integrate(
    building: &ShearBuilding,
    floor: usize,
    force: &[f64],
    dt_s: f64,
    ctx: &ChunkCtx<'_>,
) -> Result<Histories, StudyError> {
    let model = building
        .state_space()
        .discretize_zoh(dt_s)
        .map_err(|e| StudyError::Numerics(e.to_string()))?;
    let floors = building.floors();
    let input = model.input_floor_force(floor);
    let mut x = DVector::zeros(model.n_states());
    let mut u = DVector::zeros(model.n_inputs());
    let mut y = DVector::zeros(model.n_outputs());
    let n = force.len();
    let mut h = Histories {
        displacement_m: vec![Vec::with_capacity(n); floors],
        velocity_m_per_s: vec![Vec::with_capacity(n); floors],
        acceleration_m_per_s2: vec![Vec::with_capacity(n); floors],
    };
    for (k, f) in force.iter().enumerate() {
        if k % STEPS_PER_CHECK == 0 {
            ctx.check()?;
        }
        u[input] = *f;
        let displacement: Vec<f64> = (0..floors).map(|i| x[i]).collect();
        model.step(&mut x, &u, &mut y);
        for i in 0..floors {
            h.displacement_m[i].push(displacement[i]);
            h.velocity_m_per_s[i].push(y[model.output_floor_velocity(i + 1)]);
            h.acceleration_m_per_s2[i].push(y[model.output_floor_accel(i + 1)]);
        }
    }
    let finite = x.iter().all(|v| v.is_finite())
        && h.acceleration_m_per_s2
            .iter()
            .all(|a| a.iter().all(|v| v.is_finite()));
    if !finite {
        return Err(StudyError::Numerics(
            "the simulated response is not finite".into(),
        ));
    }
    Ok(h)
}

/// Spectra of one run: per floor, the Welch PSD and the H1 estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSpectra {
    /// Welch PSD of the force, N²/Hz.
    force_psd: Vec<f64>,
    /// Welch PSD of each floor's response, `[floor][bin]`.
    response_psd: Vec<Vec<f64>>,
    /// H1 of each floor, `[floor][bin]`.
    h1: Vec<Vec<C64Pair>>,
    /// Coherence of each floor, `[floor][bin]`.
    coherence: Vec<Vec<f64>>,
}

/// A complex number as (re, im), for JSON.
type C64Pair = (f64, f64);

fn spectra(params: &Params, force: &[f64], response: &[Vec<f64>]) -> RunSpectra {
    let fs = params.sample_rate_hz;
    let window = signal::hann(params.welch.nperseg);
    let mut planner = FftPlanner::new();
    let f = SegmentSpectra::new(force, &window, params.noverlap(), fs, &mut planner);
    let mut out = RunSpectra {
        force_psd: f.power(),
        response_psd: Vec::new(),
        h1: Vec::new(),
        coherence: Vec::new(),
    };
    for r in response {
        let x = SegmentSpectra::new(r, &window, params.noverlap(), fs, &mut planner);
        let (h1, coherence) = signal::h1_and_coherence(&f, &x);
        out.response_psd.push(x.power());
        out.h1.push(h1.iter().map(|z| (z.re, z.im)).collect());
        out.coherence.push(coherence);
    }
    out
}

fn pick(h: &Histories, q: ResponseQuantity) -> &[Vec<f64>] {
    match q {
        ResponseQuantity::Displacement => &h.displacement_m,
        ResponseQuantity::Velocity => &h.velocity_m_per_s,
        ResponseQuantity::Acceleration => &h.acceleration_m_per_s2,
    }
}

/// What a chunk returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkOutput {
    /// Chunk 0 only: the nominal run's arrays and summary.
    nominal: Option<StudyOutput>,
    /// The Monte Carlo samples of this chunk, by index.
    samples: Vec<SampleOutput>,
}

/// One Monte Carlo sample's spectra, reduced to what the envelopes need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleOutput {
    /// Sample index, from 0.
    index: u32,
    /// Welch PSD of each floor's response, `[floor][bin]`.
    response_psd: Vec<Vec<f64>>,
    /// |H1| of each floor, `[floor][bin]`.
    h1_magnitude: Vec<Vec<f64>>,
}

fn column(name: impl Into<String>, values: Vec<f64>) -> Column {
    Column {
        name: name.into(),
        values,
    }
}

/// The nominal run: time history, Welch and periodogram PSDs, H1 and coherence.
fn nominal(
    building: &ShearBuilding,
    params: &Params,
    seed: u64,
    ctx: &ChunkCtx<'_>,
) -> Result<StudyOutput, StudyError> {
    let fs = params.sample_rate_hz;
    let mut rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, u32::MAX));
    let force = force_history(params, &mut rng);
    let h = integrate(building, params.force_floor, &force, 1.0 / fs, ctx)?;
    ctx.check()?;
    let q = params.response;
    let unit = q.unit();
    let response = pick(&h, q);
    let s = spectra(params, &force, response);
    let floors = building.floors();
    let mut arrays = Vec::new();
    if params.time_history {
        let mut columns = vec![
            column("time_s", (0..force.len()).map(|k| k as f64 / fs).collect()),
            column("force_n", force.clone()),
        ];
        for i in 0..floors {
            columns.push(column(
                format!("floor{}_displacement_m", i + 1),
                h.displacement_m[i].clone(),
            ));
            columns.push(column(
                format!("floor{}_velocity_m_per_s", i + 1),
                h.velocity_m_per_s[i].clone(),
            ));
            columns.push(column(
                format!("floor{}_acceleration_m_per_s2", i + 1),
                h.acceleration_m_per_s2[i].clone(),
            ));
        }
        arrays.push(NamedArray {
            name: "time-history".into(),
            columns,
        });
    }
    let welch_f = signal::bin_frequencies_hz(params.welch.nperseg, fs);
    let mut welch = vec![
        column("frequency_hz", welch_f.clone()),
        column("force_n2_per_hz", s.force_psd.clone()),
    ];
    for (i, p) in s.response_psd.iter().enumerate() {
        welch.push(column(
            format!("floor{}_{}_{unit}2_per_hz", i + 1, q.name()),
            p.clone(),
        ));
    }
    arrays.push(NamedArray {
        name: "psd-welch".into(),
        columns: welch,
    });
    let mut periodogram = vec![
        column("frequency_hz", signal::bin_frequencies_hz(force.len(), fs)),
        column("force_n2_per_hz", signal::periodogram(&force, fs)),
    ];
    for (i, r) in response.iter().enumerate() {
        periodogram.push(column(
            format!("floor{}_{}_{unit}2_per_hz", i + 1, q.name()),
            signal::periodogram(r, fs),
        ));
    }
    arrays.push(NamedArray {
        name: "psd-periodogram".into(),
        columns: periodogram,
    });
    let mut h1 = vec![column("frequency_hz", welch_f)];
    for i in 0..floors {
        let z: Vec<C64> = s.h1[i].iter().map(|(re, im)| C64::new(*re, *im)).collect();
        h1.push(column(
            format!("floor{}_magnitude_{unit}_per_n", i + 1),
            z.iter().map(|z| z.norm()).collect(),
        ));
        h1.push(column(
            format!("floor{}_phase_deg", i + 1),
            z.iter().map(|z| z.arg().to_degrees()).collect(),
        ));
        h1.push(column(
            format!("floor{}_coherence", i + 1),
            s.coherence[i].clone(),
        ));
    }
    arrays.push(NamedArray {
        name: "h1".into(),
        columns: h1,
    });
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
    let peak = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    let per_floor: Vec<_> = (0..floors)
        .map(|i| {
            serde_json::json!({
                "floor": i + 1,
                "displacement_rms_m": rms(&h.displacement_m[i]),
                "displacement_peak_m": peak(&h.displacement_m[i]),
                "velocity_rms_m_per_s": rms(&h.velocity_m_per_s[i]),
                "acceleration_rms_m_per_s2": rms(&h.acceleration_m_per_s2[i]),
                "acceleration_peak_m_per_s2": peak(&h.acceleration_m_per_s2[i]),
            })
        })
        .collect();
    Ok(StudyOutput {
        summary: serde_json::json!({
            "natural_frequencies_hz": building.natural_frequencies_hz(),
            "steps": force.len(),
            "dt_s": 1.0 / fs,
            "force_rms_n": rms(&force),
            "force_peak_n": peak(&force),
            "welch_segments": SegmentSpectra::new(&force, &signal::hann(params.welch.nperseg), params.noverlap(), fs, &mut FftPlanner::new()).len(),
            "welch_resolution_hz": fs / params.welch.nperseg as f64,
            "floors": per_floor,
        }),
        arrays,
        proposed_model: None,
    })
}

/// Computes chunk `chunk`: the nominal run in chunk 0, and the chunk's Monte Carlo samples.
///
/// # Errors
/// [`StudyError::Invalid`], [`StudyError::Numerics`], [`StudyError::Cancelled`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(building.floors(), params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let nominal = if chunk == 0 {
        Some(nominal(&building, params, seed, ctx)?)
    } else {
        None
    };
    let mut samples = Vec::new();
    if let Some(d) = &params.dispersion {
        let per_chunk = samples_per_chunk(params, building.dofs() as u64);
        let first = chunk.saturating_mul(per_chunk);
        let last = first.saturating_add(per_chunk).min(d.n_samples);
        for index in first..last {
            ctx.check()?;
            let mut rng = ChaCha8Rng::seed_from_u64(chunk_seed(seed, index));
            let structure = dispersed(&model.structure, d, &mut rng)?;
            let sample = ShearBuilding::new(structure).map_err(|e| {
                StudyError::Numerics(format!("sample {index} gave an invalid model: {e}"))
            })?;
            let force = force_history(params, &mut rng);
            let h = integrate(
                &sample,
                params.force_floor,
                &force,
                1.0 / params.sample_rate_hz,
                ctx,
            )?;
            let s = spectra(params, &force, pick(&h, params.response));
            samples.push(SampleOutput {
                index,
                response_psd: s.response_psd,
                h1_magnitude: s
                    .h1
                    .iter()
                    .map(|f| f.iter().map(|(re, im)| re.hypot(*im)).collect())
                    .collect(),
            });
        }
    }
    serde_json::to_value(ChunkOutput { nominal, samples })
        .map_err(|e| StudyError::Numerics(e.to_string()))
}

/// The nominal run's output, plus the Monte Carlo envelopes (mean and 5/50/95th
/// percentiles of each floor's Welch PSD and |H1|) when there is dispersion.
///
/// # Errors
/// [`StudyError::BadChunk`] when the chunks are not this study's, in order.
pub fn reduce(
    _model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let mut nominal = None;
    let mut samples: Vec<SampleOutput> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let c: ChunkOutput = serde_json::from_value(c.clone())
            .map_err(|e| StudyError::BadChunk(format!("simulate chunk {i}: {e}")))?;
        if i == 0 {
            nominal = c.nominal;
        }
        samples.extend(c.samples);
    }
    let mut out = nominal
        .ok_or_else(|| StudyError::BadChunk("simulate chunk 0 carries no nominal run".into()))?;
    let expected = n_samples(params);
    if samples.len() != expected as usize
        || samples
            .iter()
            .enumerate()
            .any(|(i, s)| s.index as usize != i)
    {
        return Err(StudyError::BadChunk(format!(
            "expected Monte Carlo samples 0..{expected} in order, got {}",
            samples.len()
        )));
    }
    if samples.is_empty() {
        return Ok(out);
    }
    let frequency = signal::bin_frequencies_hz(params.welch.nperseg, params.sample_rate_hz);
    let unit = params.response.unit();
    let floors = samples[0].response_psd.len();
    for (name, pick, unit_name) in [
        (
            "mc-psd",
            (|s: &SampleOutput| &s.response_psd) as fn(&SampleOutput) -> &Vec<Vec<f64>>,
            format!("{}_{unit}2_per_hz", params.response.name()),
        ),
        (
            "mc-h1",
            (|s: &SampleOutput| &s.h1_magnitude) as fn(&SampleOutput) -> &Vec<Vec<f64>>,
            format!("magnitude_{unit}_per_n"),
        ),
    ] {
        let mut columns = vec![column("frequency_hz", frequency.clone())];
        for floor in 0..floors {
            let mut mean = Vec::with_capacity(frequency.len());
            let mut bands: Vec<Vec<f64>> =
                vec![Vec::with_capacity(frequency.len()); PERCENTILES.len()];
            for bin in 0..frequency.len() {
                let mut values: Vec<f64> = samples
                    .iter()
                    .map(|s| {
                        pick(s)
                            .get(floor)
                            .and_then(|f| f.get(bin))
                            .copied()
                            .unwrap_or(f64::NAN)
                    })
                    .collect();
                mean.push(values.iter().sum::<f64>() / values.len() as f64);
                for (band, p) in bands.iter_mut().zip(PERCENTILES) {
                    band.push(signal::percentile(&mut values, p));
                }
            }
            columns.push(column(format!("floor{}_mean_{unit_name}", floor + 1), mean));
            for (band, p) in bands.into_iter().zip(PERCENTILES) {
                columns.push(column(
                    format!("floor{}_p{p:02}_{unit_name}", floor + 1),
                    band,
                ));
            }
        }
        out.arrays.push(NamedArray {
            name: name.into(),
            columns,
        });
    }
    if let Some(obj) = out.summary.as_object_mut() {
        obj.insert(
            "monte_carlo_samples".into(),
            serde_json::json!(samples.len()),
        );
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::f64::consts::{PI, TAU};
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::StudyKind;
    use crate::kinds;
    use crate::model::{SensorLayout, builtin_model};

    /// A single storey of mass m on a spring tuned to fn_hz with modal damping ζ.
    fn sdof(m: f64, fn_hz: f64, zeta: f64) -> ModelSpec {
        ModelSpec {
            description: String::new(),
            structure: ShearBuildingConfig {
                floor_masses_kg: vec![m],
                storey_stiffness_n_per_m: vec![m * (TAU * fn_hz).powi(2)],
                damping: Damping::Modal { zetas: vec![zeta] },
                actuator: None,
            },
            sensors: SensorLayout::default(),
        }
    }

    fn run(model: &ModelSpec, params: &serde_json::Value, seed: u64) -> StudyOutput {
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let plan = kinds::plan(
            StudyKind::Simulate,
            model,
            params,
            &crate::Inputs::none(),
            &Budget::default(),
        )
        .unwrap();
        let chunks: Vec<_> = (0..plan.chunks)
            .map(|i| {
                kinds::run_chunk(
                    StudyKind::Simulate,
                    model,
                    params,
                    seed,
                    i,
                    &ctx,
                    &crate::Inputs::none(),
                )
                .unwrap()
            })
            .collect();
        kinds::reduce(
            StudyKind::Simulate,
            model,
            params,
            seed,
            &chunks,
            &crate::Inputs::none(),
        )
        .unwrap()
    }

    fn col<'a>(out: &'a StudyOutput, array: &str, name: &str) -> &'a [f64] {
        let a = out
            .arrays
            .iter()
            .find(|a| a.name == array)
            .unwrap_or_else(|| panic!("no array {array}"));
        &a.columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name} in {array}"))
            .values
    }

    /// Receptance 1/(k − mω² + jcω) of the SDOF built by `sdof`.
    fn receptance(m: f64, fn_hz: f64, zeta: f64, f_hz: f64) -> C64 {
        let wn = TAU * fn_hz;
        let w = TAU * f_hz;
        C64::new(1.0, 0.0) / C64::new(m * (wn * wn - w * w), 2.0 * zeta * wn * m * w)
    }

    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            (PI * x).sin() / (PI * x)
        }
    }

    #[test]
    fn harmonic_steady_state_amplitude_is_the_receptance_at_that_frequency() {
        let (m, fn_hz, zeta, f, a, fs) = (1.0, 5.0, 0.02, 3.0, 2.0, 1000.0);
        let params = serde_json::json!({
            "duration_s": 30.0, "sample_rate_hz": fs, "force_floor": 1,
            "excitation": { "kind": "harmonic", "amplitude_n": a, "frequency_hz": f },
            "response": "displacement", "welch": { "nperseg": 1000, "overlap": 0.5 }
        });
        let out = run(&sdof(m, fn_hz, zeta), &params, 1);
        let x = col(&out, "time-history", "floor1_displacement_m");
        let t = col(&out, "time-history", "time_s");
        // The last 5 s hold 15 whole periods; by then the transient has decayed by
        // e^(−ζ·ωn·25 s) ≈ 1.5e-7.
        let tail = x.len() - 5000;
        let (mut c, mut s) = (0.0, 0.0);
        for k in tail..x.len() {
            c += x[k] * (TAU * f * t[k]).cos();
            s += x[k] * (TAU * f * t[k]).sin();
        }
        let amplitude = 2.0 / 5000.0 * c.hypot(s);
        // A held (ZOH) sinusoid has a fundamental sinc(f/fs) times the sampled one.
        let want = a * receptance(m, fn_hz, zeta, f).norm() * sinc(f / fs);
        assert!(
            ((amplitude - want) / want).abs() < 1e-5,
            "{amplitude} vs {want}"
        );
    }

    #[test]
    fn hammer_response_of_an_sdof_is_the_pulse_convolved_with_the_impulse_response() {
        let (m, fn_hz, zeta) = (2.0, 4.0, 0.03);
        let (a, sigma, t0, fs) = (50.0, 0.01, 0.2, 5000.0);
        let params = serde_json::json!({
            "duration_s": 3.0, "sample_rate_hz": fs, "force_floor": 1,
            "excitation": { "kind": "hammer", "amplitude_n": a, "width_s": sigma, "t0_s": t0 },
            "welch": { "nperseg": 5000, "overlap": 0.5 }
        });
        let out = run(&sdof(m, fn_hz, zeta), &params, 1);
        let x = col(&out, "time-history", "floor1_displacement_m");
        let wn = TAU * fn_hz;
        let wd = wn * (1.0 - zeta * zeta).sqrt();
        let s = C64::new(zeta * wn, -wd);
        // Once the pulse is over: x(t) = A·σ·√(2π)/(m·ωd) · Im[e^(−s(t−t0)) · e^(s²σ²/2)],
        // with h(t) = Im[e^(−s·t)]/(m·ωd). A held input acts as the continuous one delayed by
        // dt/2, to second order in dt.
        let closed = |t: f64| {
            let z = (-s * (t - t0)).exp() * (s * s * sigma * sigma / 2.0).exp();
            a * sigma * (TAU).sqrt() / (m * wd) * z.im
        };
        let dt = 1.0 / fs;
        let peak = x.iter().fold(0.0_f64, |p, v| p.max(v.abs()));
        let mut worst = 0.0_f64;
        for (k, xk) in x.iter().enumerate() {
            let t = k as f64 * dt;
            if t > t0 + 10.0 * sigma {
                worst = worst.max((xk - closed(t - dt / 2.0)).abs() / peak);
            }
        }
        assert!(worst < 1e-4, "worst error {worst} of the peak {peak}");
    }

    /// White noise through an SDOF, shared by the spectral tests.
    fn white_noise_run() -> (StudyOutput, f64, f64, f64, f64, f64) {
        let (m, fn_hz, zeta, fs, level) = (1.0, 10.0, 0.05, 200.0, 2.0);
        let params = serde_json::json!({
            "duration_s": 400.0, "sample_rate_hz": fs, "force_floor": 1,
            "excitation": { "kind": "white_noise", "psd_n2_per_hz": level },
            "welch": { "nperseg": 1600, "overlap": 0.5 }
        });
        (
            run(&sdof(m, fn_hz, zeta), &params, 42),
            m,
            fn_hz,
            zeta,
            fs,
            level,
        )
    }

    #[test]
    fn welch_psd_of_white_noise_through_an_sdof_is_h_squared_times_the_force_psd() {
        let (out, m, fn_hz, zeta, fs, level) = white_noise_run();
        let f = col(&out, "psd-welch", "frequency_hz");
        let force = col(&out, "psd-welch", "force_n2_per_hz");
        let accel = col(&out, "psd-welch", "floor1_acceleration_m_per_s22_per_hz");
        // The force: flat at the requested level (99 segments: ~3 % per-bin scatter, far less
        // over 700 bins).
        let mean_force = force[10..790].iter().sum::<f64>() / 780.0;
        assert!((mean_force / level - 1.0).abs() < 0.03, "{mean_force}");
        // The response around resonance: |H_a|²·S·sinc²(f/fs) (the held input's spectrum).
        let mut ratios = Vec::new();
        for (k, fk) in f.iter().enumerate() {
            if (8.0..=12.0).contains(fk) {
                let ha = receptance(m, fn_hz, zeta, *fk) * (TAU * fk).powi(2);
                ratios.push(accel[k] / (ha.norm_sqr() * level * sinc(fk / fs).powi(2)));
            }
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!(
            (mean - 1.0).abs() < 0.1,
            "mean ratio {mean} over {} bins",
            ratios.len()
        );
    }

    #[test]
    fn psd_integrals_equal_the_variance_parseval() {
        let (out, ..) = white_noise_run();
        let a = col(&out, "time-history", "floor1_acceleration_m_per_s2");
        let mean_square = a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64;
        let f = col(&out, "psd-periodogram", "frequency_hz");
        let p = col(
            &out,
            "psd-periodogram",
            "floor1_acceleration_m_per_s22_per_hz",
        );
        let integral = p.iter().sum::<f64>() * (f[1] - f[0]);
        // Exact for the rectangular-window periodogram.
        assert!(
            (integral / mean_square - 1.0).abs() < 1e-9,
            "{integral} vs {mean_square}"
        );
        let fw = col(&out, "psd-welch", "frequency_hz");
        let w = col(&out, "psd-welch", "floor1_acceleration_m_per_s22_per_hz");
        let welch_integral = w.iter().sum::<f64>() * (fw[1] - fw[0]);
        // Welch averages windowed segments: equal in expectation, a few % apart here.
        assert!(
            (welch_integral / mean_square - 1.0).abs() < 0.05,
            "{welch_integral} vs {mean_square}"
        );
    }

    #[test]
    fn h1_matches_the_true_frf_with_coherence_near_one_at_resonance() {
        let (out, m, fn_hz, zeta, fs, _) = white_noise_run();
        let f = col(&out, "h1", "frequency_hz");
        let h1 = col(&out, "h1", "floor1_magnitude_m_per_s2_per_n");
        let coherence = col(&out, "h1", "floor1_coherence");
        let k = f.iter().position(|&x| (x - fn_hz).abs() < 1e-9).unwrap();
        let want =
            (receptance(m, fn_hz, zeta, fn_hz) * (TAU * fn_hz).powi(2)).norm() * sinc(fn_hz / fs);
        assert!((h1[k] / want - 1.0).abs() < 0.05, "{} vs {want}", h1[k]);
        // Noise-free, so γ² < 1 only by the response's memory across segment edges: the part
        // of a segment's response driven by force before it, about τ/T_seg with
        // τ = 1/(ζ·ωn) = 0.32 s and T_seg = 8 s (Hann-weighted, so less): 0.98 here.
        assert!(coherence[k] > 0.95, "{}", coherence[k]);
    }

    #[test]
    fn one_chunk_and_several_chunks_in_any_order_give_the_same_monte_carlo_result() {
        let model = builtin_model("southampton").unwrap();
        let params = |per_chunk: u32| {
            serde_json::json!({
                "duration_s": 2.0, "sample_rate_hz": 256.0, "force_floor": 1,
                "excitation": { "kind": "white_noise", "rms_n": 1.0, "f_high_hz": 60.0 },
                "welch": { "nperseg": 128, "overlap": 0.5 },
                "dispersion": { "n_samples": 5, "mass_rel_std": 0.05, "stiffness_rel_std": 0.05,
                                "damping_rel_std": 0.2, "samples_per_chunk": per_chunk }
            })
        };
        let one = run(&model, &params(5), 9);
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let p = params(2);
        let plan = kinds::plan(
            StudyKind::Simulate,
            &model,
            &p,
            &crate::Inputs::none(),
            &Budget::default(),
        )
        .unwrap();
        assert_eq!(plan.chunks, 3);
        let mut chunks: Vec<_> = (0..plan.chunks)
            .rev()
            .map(|i| {
                (
                    i,
                    kinds::run_chunk(
                        StudyKind::Simulate,
                        &model,
                        &p,
                        9,
                        i,
                        &ctx,
                        &crate::Inputs::none(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        chunks.sort_by_key(|(i, _)| *i);
        let chunks: Vec<_> = chunks.into_iter().map(|(_, c)| c).collect();
        let many = kinds::reduce(
            StudyKind::Simulate,
            &model,
            &p,
            9,
            &chunks,
            &crate::Inputs::none(),
        )
        .unwrap();
        assert_eq!(one, many);
        let names: Vec<&str> = one.arrays.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "time-history",
                "psd-welch",
                "psd-periodogram",
                "h1",
                "mc-psd",
                "mc-h1"
            ]
        );
        let p05 = col(&one, "mc-h1", "floor3_p05_magnitude_m_per_s2_per_n");
        let p95 = col(&one, "mc-h1", "floor3_p95_magnitude_m_per_s2_per_n");
        assert!(p05.iter().zip(p95).all(|(a, b)| a <= b));
        assert!(
            p05.iter().zip(p95).any(|(a, b)| a < b),
            "the samples should differ"
        );
    }

    #[test]
    fn a_cancelled_study_stops_its_chunk() {
        let model = builtin_model("southampton").unwrap();
        let params = kinds::defaults(StudyKind::Simulate, &model);
        let flag = AtomicBool::new(true);
        let ctx = ChunkCtx::new(&flag);
        assert_eq!(
            kinds::run_chunk(
                StudyKind::Simulate,
                &model,
                &params,
                1,
                0,
                &ctx,
                &crate::Inputs::none()
            ),
            Err(StudyError::Cancelled)
        );
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let model = builtin_model("southampton").unwrap();
        let params = serde_json::json!({
            "duration_s": 1.0, "sample_rate_hz": 100.0, "force_floor": 9,
            "excitation": { "kind": "harmonic", "amplitude_n": 1.0, "frequency_hz": 70.0 },
            "welch": { "nperseg": 4, "overlap": 1.0 },
            "dispersion": { "n_samples": 0, "mass_rel_std": -0.1 }
        });
        let Err(StudyError::Invalid(problems)) = kinds::plan(
            StudyKind::Simulate,
            &model,
            &params,
            &crate::Inputs::none(),
            &Budget::default(),
        ) else {
            panic!("invalid params were planned");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "params.force_floor",
                "params.excitation.frequency_hz",
                "params.welch.nperseg",
                "params.welch.overlap",
                "params.dispersion.n_samples",
                "params.dispersion.mass_rel_std",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn defaults_plan_for_every_builtin_and_a_study_above_the_budget_is_refused() {
        for (name, model) in crate::model::builtin_models() {
            let params = kinds::defaults(StudyKind::Simulate, &model);
            let plan = kinds::plan(
                StudyKind::Simulate,
                &model,
                &params,
                &crate::Inputs::none(),
                &Budget::default(),
            );
            assert!(plan.is_ok(), "{name}: {plan:?}");
        }
        let model = builtin_model("southampton").unwrap();
        let params = kinds::defaults(StudyKind::Simulate, &model);
        let budget = Budget {
            max_work_units: 1000,
            chunk_work_units: 100,
        };
        assert!(matches!(
            kinds::plan(
                StudyKind::Simulate,
                &model,
                &params,
                &crate::Inputs::none(),
                &budget
            ),
            Err(StudyError::TooLarge {
                work_units: 30_720,
                ..
            })
        ));
    }
}
