//! Owns the twin's side of control-based continuation (CBC) on a live rig: from the samples
//! of the controlled floor's acceleration and of the control force the rig measured, the
//! Fourier coefficients at the target frequency, the quasi-Newton update of the target
//! (shared with [`crate::cbc`]), the judgement of each point and the stepping from point to
//! point. Pure and deterministic: it knows nothing of MQTT, the edge or clocks. A shell sends
//! the targets it asks for, tells it from which sample each one runs, and feeds it samples.
//!
//! The edge follows the target in acceleration: its law sees the error e(k) = r(k) − a(k),
//! r = ẍ* (`HarmonicTarget` in control.proto), through a PD on the doubly leaky-integrated
//! error,
//!   v_e(k+1) = λ·v_e(k) + T·e(k),  x_e(k+1) = λ·x_e(k) + T·v_e(k),
//!   u(k) = k_p·x_e(k) + k_d·v_e(k),  λ = e^{−2π·f_c·T},
//! which [`LiveCbcConfig::controller`] writes as the edge's state-space law. An accelerometer
//! cannot see a displacement directly; integrating it on the edge keeps the sensor the rig
//! has, and the leak (corner f_c, well below the fundamental) keeps noise and offsets from
//! winding the integrators up. The controlled quantity's harmonic k is then
//! X_k = −A_k/(kω)², exactly for a periodic response, and the controller's phasor from
//! displacement error to force is C_k = −(kω)²·(k_p·T²/(z−λ)² + k_d·T/(z−λ)), z = e^{ikωT}
//! (k_p + i·kω·k_d for ideal integrators), which sets the quasi-Newton factors.
//!
//! The target's time origin is stream sample 0 (t = k/f_s), as on the edge, so the phasors
//! measured here and the coefficients sent there share one clock. The mean of the control
//! force is not judged: a target followed through an accelerometer has no mean, so the
//! controller cannot remove one (it vanishes by itself for springs symmetric in δ).

use nalgebra::{Complex, DMatrix, DVector, RowDVector};
use serde::{Deserialize, Serialize};

use dtop_dynamics::control::SampledController;

use crate::cbc::{
    CbcPoint, CbcStop, first_harmonic_change, invasiveness, newton_factors, update_target,
};
use crate::error::NonlinearError;
use crate::model::NonlinearChain;

/// Most target harmonics (the edge's limit, `MAX_TARGET_HARMONICS` in dtop-edge).
pub const MAX_LIVE_HARMONICS: usize = 32;

/// Default target harmonics: odd harmonics of a cubic chain fall fast below its first
/// mode; 5 leaves the controller fighting the 7th and above only.
pub const fn default_live_harmonics() -> usize {
    5
}
/// Default proportional gain, N/m: about a tenth of the Southampton rig's storey stiffness.
pub const fn default_live_proportional_gain_n_per_m() -> f64 {
    5000.0
}
/// Default derivative gain, N·s/m: damps the controlled floor's modes to a few seconds'
/// settling on the Southampton rig.
pub const fn default_live_derivative_gain_n_s_per_m() -> f64 {
    50.0
}
/// Default corner of the leaky integrators, Hz.
pub const fn default_integrator_corner_hz() -> f64 {
    0.5
}
/// Default settling time after every change of the target, s.
pub const fn default_live_settle_s() -> f64 {
    2.0
}
/// Default periods analysed per iteration: on the simulated Southampton rig near 7 Hz, 30
/// periods bring the sensor noise's share of the first harmonics to about 1e-3 (10 leave
/// the settling check wandering at 1e-2).
pub const fn default_live_measure_periods() -> usize {
    30
}
/// Default iteration budget per point.
pub const fn default_live_max_iterations() -> usize {
    12
}
/// Default invasiveness tolerance (largest higher harmonic of the control force over its
/// first): well above the force gauge's noise over a measurement, and an invasiveness ε moves
/// the response by about ε, far inside the 2 % a live point is held to.
pub const fn default_live_invasiveness_tolerance() -> f64 {
    5e-3
}
/// Default settling tolerance: relative change of the first harmonics between iterations;
/// a few times the noise's share above, and well inside the 2 % a live point is held to.
pub const fn default_live_change_tolerance() -> f64 {
    5e-3
}

/// A live CBC run: the points to trace, the controller, the budgets and the rig's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveCbcConfig {
    /// The stream's sample rate, Hz (from the rig's birth).
    pub sample_rate_hz: f64,
    /// First forcing frequency, Hz.
    pub frequency_start_hz: f64,
    /// Last forcing frequency, Hz; at least the first.
    pub frequency_end_hz: f64,
    /// Frequencies from start to end inclusive, evenly spaced; 1 traces the start only.
    pub frequency_steps: usize,
    /// First-harmonic amplitude A* of the controlled floor's displacement target, m.
    pub target_amplitude_m: f64,
    /// Harmonics of the target, 1..=[`MAX_LIVE_HARMONICS`]; 2..=H are iterated.
    #[serde(default = "default_live_harmonics")]
    pub harmonics: usize,
    /// Proportional gain k_p, N/m, ≥ 0.
    #[serde(default = "default_live_proportional_gain_n_per_m")]
    pub proportional_gain_n_per_m: f64,
    /// Derivative gain k_d, N·s/m, ≥ 0 (not both zero).
    #[serde(default = "default_live_derivative_gain_n_s_per_m")]
    pub derivative_gain_n_s_per_m: f64,
    /// Corner f_c of the edge's leaky integrators, Hz; below a tenth of the first frequency.
    #[serde(default = "default_integrator_corner_hz")]
    pub integrator_corner_hz: f64,
    /// Time discarded after each target starts, s, > 0.
    #[serde(default = "default_live_settle_s")]
    pub settle_s: f64,
    /// Forcing periods Fourier-analysed per iteration, ≥ 1.
    #[serde(default = "default_live_measure_periods")]
    pub measure_periods: usize,
    /// Iterations allowed per point before the run stops, ≥ 1.
    #[serde(default = "default_live_max_iterations")]
    pub max_iterations: usize,
    /// Converged when every judged harmonic of the control force but the first is at most
    /// this fraction of the first; within (0, 1).
    #[serde(default = "default_live_invasiveness_tolerance")]
    pub invasiveness_tolerance: f64,
    /// ... and the first harmonics of force and response changed by at most this fraction
    /// since the previous iteration; within (0, 1).
    #[serde(default = "default_live_change_tolerance")]
    pub change_tolerance: f64,
    /// The actuator's force limit (the edge envelope's), N: a measured force at it stops the
    /// run, because a clipped force is no longer the law's.
    pub max_force_n: f64,
}

impl LiveCbcConfig {
    /// A run over `steps` frequencies from `start_hz` to `end_hz` at target amplitude
    /// `target_m`, with the default controller and budgets.
    pub fn new(
        sample_rate_hz: f64,
        start_hz: f64,
        end_hz: f64,
        steps: usize,
        target_m: f64,
        max_force_n: f64,
    ) -> Self {
        Self {
            sample_rate_hz,
            frequency_start_hz: start_hz,
            frequency_end_hz: end_hz,
            frequency_steps: steps,
            target_amplitude_m: target_m,
            harmonics: default_live_harmonics(),
            proportional_gain_n_per_m: default_live_proportional_gain_n_per_m(),
            derivative_gain_n_s_per_m: default_live_derivative_gain_n_s_per_m(),
            integrator_corner_hz: default_integrator_corner_hz(),
            settle_s: default_live_settle_s(),
            measure_periods: default_live_measure_periods(),
            max_iterations: default_live_max_iterations(),
            invasiveness_tolerance: default_live_invasiveness_tolerance(),
            change_tolerance: default_live_change_tolerance(),
            max_force_n,
        }
    }

    /// The i-th frequency of the run, Hz.
    pub fn frequency_hz(&self, i: usize) -> f64 {
        if self.frequency_steps <= 1 {
            self.frequency_start_hz
        } else {
            self.frequency_start_hz
                + (self.frequency_end_hz - self.frequency_start_hz) * i as f64
                    / (self.frequency_steps - 1) as f64
        }
    }

    /// Every rule this run breaks, as sentences with a way out; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let positive = |name: &str, v: f64, problems: &mut Vec<String>| {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{name} = {v} must be positive and finite"));
            }
        };
        positive("sample_rate_hz", self.sample_rate_hz, &mut problems);
        positive("frequency_start_hz", self.frequency_start_hz, &mut problems);
        positive("target_amplitude_m", self.target_amplitude_m, &mut problems);
        positive("settle_s", self.settle_s, &mut problems);
        positive("max_force_n", self.max_force_n, &mut problems);
        positive(
            "integrator_corner_hz",
            self.integrator_corner_hz,
            &mut problems,
        );
        if !(self.frequency_end_hz.is_finite() && self.frequency_end_hz >= self.frequency_start_hz)
        {
            problems.push(format!(
                "frequency_end_hz = {} must be finite and at least frequency_start_hz = {}",
                self.frequency_end_hz, self.frequency_start_hz
            ));
        }
        if !(1..=10_000).contains(&self.frequency_steps) {
            problems.push(format!(
                "frequency_steps = {} must be within 1..=10000",
                self.frequency_steps
            ));
        }
        if !(1..=MAX_LIVE_HARMONICS).contains(&self.harmonics) {
            problems.push(format!(
                "harmonics = {} must be within 1..={MAX_LIVE_HARMONICS} (the edge's limit)",
                self.harmonics
            ));
        }
        // The judged force harmonics (3H) must lie below the Nyquist frequency.
        let highest_hz = 3.0 * self.harmonics as f64 * self.frequency_end_hz;
        if highest_hz.is_finite() && highest_hz >= self.sample_rate_hz / 2.0 {
            problems.push(format!(
                "harmonic {} of {} Hz is at or above the Nyquist frequency {} Hz: fewer \
                 harmonics or a lower frequency",
                3 * self.harmonics,
                self.frequency_end_hz,
                self.sample_rate_hz / 2.0
            ));
        }
        for (name, v) in [
            ("proportional_gain_n_per_m", self.proportional_gain_n_per_m),
            ("derivative_gain_n_s_per_m", self.derivative_gain_n_s_per_m),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name} = {v} must be zero or positive and finite"));
            }
        }
        if self.proportional_gain_n_per_m == 0.0 && self.derivative_gain_n_s_per_m == 0.0 {
            problems.push("both controller gains are zero: nothing would be controlled".into());
        }
        if self.integrator_corner_hz.is_finite()
            && self.frequency_start_hz.is_finite()
            && self.integrator_corner_hz > 0.1 * self.frequency_start_hz
        {
            problems.push(format!(
                "integrator_corner_hz = {} must be at most a tenth of frequency_start_hz = {}, \
                 or the integrators stop integrating at the fundamental",
                self.integrator_corner_hz, self.frequency_start_hz
            ));
        }
        if self.measure_periods == 0 {
            problems.push("measure_periods must be at least 1".into());
        }
        if self.max_iterations == 0 {
            problems.push("max_iterations must be at least 1".into());
        }
        for (name, v) in [
            ("invasiveness_tolerance", self.invasiveness_tolerance),
            ("change_tolerance", self.change_tolerance),
        ] {
            if !(v > 0.0 && v < 1.0) {
                problems.push(format!("{name} = {v} must be within (0, 1)"));
            }
        }
        problems
    }

    fn sample_period_s(&self) -> f64 {
        1.0 / self.sample_rate_hz
    }

    fn leak(&self) -> f64 {
        (-std::f64::consts::TAU * self.integrator_corner_hz * self.sample_period_s()).exp()
    }

    /// The edge's law for this run (see the module docs): one input (the acceleration error,
    /// m/s²), states [v_e, x_e].
    pub fn controller(&self) -> SampledController {
        let (t, l) = (self.sample_period_s(), self.leak());
        SampledController {
            a: DMatrix::from_row_slice(2, 2, &[l, 0.0, t, l]),
            b: DMatrix::from_row_slice(2, 1, &[t, 0.0]),
            e: DVector::zeros(2),
            c: RowDVector::from_row_slice(&[
                self.derivative_gain_n_s_per_m,
                self.proportional_gain_n_per_m,
            ]),
            d: RowDVector::from_row_slice(&[0.0]),
            dt_s: t,
        }
    }

    /// The law's phasor from displacement error to force at angular frequency `w_rad_s`:
    /// C = −w²·(k_p·T²/(z−λ)² + k_d·T/(z−λ)), z = e^{iwT}.
    pub fn controller_phasor(&self, w_rad_s: f64) -> Complex<f64> {
        let (t, l) = (self.sample_period_s(), self.leak());
        let z = Complex::from_polar(1.0, w_rad_s * t);
        let integrator = Complex::new(t, 0.0) / (z - l);
        -(w_rad_s * w_rad_s)
            * (integrator * integrator * self.proportional_gain_n_per_m
                + integrator * self.derivative_gain_n_s_per_m)
    }
}

/// A target for the edge: `HarmonicTarget`'s content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveTarget {
    /// Fundamental frequency, Hz.
    pub frequency_hz: f64,
    /// Cosine coefficients of harmonics 1..=H of the displacement target, m.
    pub cos_m: Vec<f64>,
    /// Sine coefficients of harmonics 1..=H, m.
    pub sin_m: Vec<f64>,
}

/// A sample that ends the run: non-finite, or a force at the actuator's limit.
fn check_sample(config: &LiveCbcConfig, a: f64, f: f64) -> Option<CbcStop> {
    let amplitude = config.target_amplitude_m;
    if !(a.is_finite() && f.is_finite()) {
        return Some(CbcStop::Diverged {
            target_amplitude_m: amplitude,
        });
    }
    // The gauge reads a clipped force within its quantisation of the limit.
    (f.abs() >= config.max_force_n * (1.0 - 1e-3)).then_some(CbcStop::ForceLimit {
        target_amplitude_m: amplitude,
        force_n: f,
    })
}

/// What the shell must do after a stretch of samples.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveNext {
    /// Keep feeding samples.
    Continue,
    /// Send this target to the edge, then call [`LiveCbc::started`] with the sample it runs
    /// from.
    Send(LiveTarget),
    /// The run is over; the points so far are kept.
    Stop(CbcStop),
}

/// Where the iteration of the current point is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// A target was asked for; waiting to hear from which sample it runs.
    Sent,
    /// Discarding samples before `measure_from`, then summing `window` of them.
    Running { measure_from: u64, window: Window },
    /// Stopped, for this reason.
    Done(CbcStop),
}

/// Sums of one measurement window: e^{−ikωt}-weighted acceleration and force.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    count: usize,
    accel: Vec<Complex<f64>>,
    force: Vec<Complex<f64>>,
}

/// The live CBC iteration: feed it samples, send what it asks for.
#[derive(Debug, Clone)]
pub struct LiveCbc {
    config: LiveCbcConfig,
    /// Index of the current frequency.
    point: usize,
    omega_rad_s: f64,
    /// Quasi-Newton factors per frequency, harmonics 0..=H each.
    newton: Vec<Vec<Complex<f64>>>,
    /// Target phasors X*_k (k = 0..=H; X*_0 stays 0).
    target: Vec<Complex<f64>>,
    iteration: usize,
    previous: Option<(Complex<f64>, Complex<f64>)>,
    phase: Phase,
    /// Samples per measurement window at the current frequency.
    window_samples: usize,
    settle_samples: u64,
    points: Vec<CbcPoint>,
}

impl LiveCbc {
    /// Starts a run on a rig modelled by `chain` (its linear part sets the quasi-Newton
    /// factors; its forced floor is the controlled one). Returns the first target to send.
    ///
    /// # Errors
    /// [`NonlinearError::Invalid`] listing every problem of the run;
    /// [`NonlinearError::Numerical`] if the linear chain is singular at a harmonic.
    pub fn start(
        chain: &NonlinearChain,
        config: LiveCbcConfig,
    ) -> Result<(Self, LiveTarget), NonlinearError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(NonlinearError::Invalid(problems));
        }
        let h = config.harmonics;
        let settle_samples = (config.settle_s * config.sample_rate_hz).ceil() as u64;
        // Every frequency's factors up front, so a run never fails half-way for the model.
        let newton = (0..config.frequency_steps)
            .map(|i| {
                newton_factors(
                    chain,
                    std::f64::consts::TAU * config.frequency_hz(i),
                    h,
                    |kw| config.controller_phasor(kw),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut run = Self {
            point: 0,
            omega_rad_s: 0.0,
            newton,
            target: vec![Complex::new(0.0, 0.0); h + 1],
            iteration: 0,
            previous: None,
            phase: Phase::Sent,
            window_samples: 0,
            settle_samples,
            points: Vec::new(),
            config,
        };
        run.enter_point(0);
        let first = run.live_target();
        Ok((run, first))
    }

    /// The points converged so far, in order.
    pub fn points(&self) -> &[CbcPoint] {
        &self.points
    }

    /// The run's configuration.
    pub fn config(&self) -> &LiveCbcConfig {
        &self.config
    }

    /// The last target sent runs from stream sample `sample_index` on (the edge's ack).
    pub fn started(&mut self, sample_index: u64) {
        if self.phase == Phase::Sent {
            self.phase = Phase::Running {
                measure_from: sample_index + self.settle_samples,
                window: self.empty_window(),
            };
        }
    }

    /// Takes consecutive samples from stream index `first_sample_index`: the controlled
    /// floor's acceleration (m/s²) and the control force (N), one each per sample. Samples
    /// before [`started`](Self::started) only go through the limit checks.
    pub fn on_samples(
        &mut self,
        first_sample_index: u64,
        accel_m_s2: &[f64],
        force_n: &[f64],
    ) -> LiveNext {
        for (i, (&a, &f)) in accel_m_s2.iter().zip(force_n).enumerate() {
            let index = first_sample_index + i as u64;
            let (measure_from, count) = match &self.phase {
                Phase::Done(stop) => return LiveNext::Stop(stop.clone()),
                Phase::Sent => (u64::MAX, 0),
                Phase::Running {
                    measure_from,
                    window,
                } => (*measure_from, window.count),
            };
            if let Some(stop) = check_sample(&self.config, a, f) {
                return self.stop(stop);
            }
            if index < measure_from {
                continue;
            }
            if index != measure_from + count as u64 {
                // Samples were lost: the window no longer covers whole periods. Settle again.
                self.phase = Phase::Running {
                    measure_from: index + self.settle_samples,
                    window: self.empty_window(),
                };
                continue;
            }
            let cycles = (self.omega_rad_s / std::f64::consts::TAU * index as f64
                / self.config.sample_rate_hz)
                .fract();
            let e1 = Complex::from_polar(1.0, -std::f64::consts::TAU * cycles);
            let mut full = false;
            if let Phase::Running { window, .. } = &mut self.phase {
                let mut e = Complex::new(1.0, 0.0);
                for (sum_a, sum_f) in window.accel.iter_mut().zip(window.force.iter_mut()) {
                    *sum_a += e * a;
                    *sum_f += e * f;
                    e *= e1;
                }
                window.count += 1;
                full = window.count >= self.window_samples;
            }
            if full {
                // The rest of this stretch ran on the old target: not needed.
                return self.judge();
            }
        }
        LiveNext::Continue
    }

    fn stop(&mut self, stop: CbcStop) -> LiveNext {
        self.phase = Phase::Done(stop.clone());
        LiveNext::Stop(stop)
    }

    /// A full window: the harmonics, the judgement, and what to send next.
    fn judge(&mut self) -> LiveNext {
        let Phase::Running { window, .. } = &self.phase else {
            return LiveNext::Continue;
        };
        let n = window.count as f64;
        let scale = |k: usize| if k == 0 { 1.0 / n } else { 2.0 / n };
        let force: Vec<Complex<f64>> = window
            .force
            .iter()
            .enumerate()
            .map(|(k, c)| c * scale(k))
            .collect();
        let h = self.config.harmonics;
        // X_k = −A_k/(kω)²; the mean displacement is unseen (0).
        let response: Vec<Complex<f64>> = (0..=h)
            .map(|k| {
                if k == 0 {
                    Complex::new(0.0, 0.0)
                } else {
                    let kw = k as f64 * self.omega_rad_s;
                    -window.accel[k] * scale(k) / (kw * kw)
                }
            })
            .collect();
        self.iteration += 1;
        // The mean of the force is not judged (module docs): from harmonic 1 on.
        let mut judged = force.clone();
        judged[0] = Complex::new(0.0, 0.0);
        let invasive = invasiveness(&judged);
        let (u1, x1) = (force[1], response[1]);
        let change = first_harmonic_change(self.previous, u1, x1);
        self.previous = Some((u1, x1));
        let converged = invasive <= self.config.invasiveness_tolerance
            && change <= self.config.change_tolerance;
        let point = CbcPoint {
            target_amplitude_m: self.config.target_amplitude_m,
            omega_rad_s: self.omega_rad_s,
            forcing_n: u1.norm(),
            amplitude_m: vec![x1.norm()],
            invasiveness: invasive,
            change,
            iterations: self.iteration,
            converged,
        };
        if converged {
            self.points.push(point);
            if self.point + 1 >= self.config.frequency_steps {
                return self.stop(CbcStop::Completed);
            }
            self.enter_point(self.point + 1);
        } else {
            if self.iteration >= self.config.max_iterations {
                self.points.push(point);
                return self.stop(CbcStop::NotConverged {
                    target_amplitude_m: self.config.target_amplitude_m,
                    invasiveness: invasive,
                });
            }
            if let Some(newton) = self.newton.get(self.point) {
                update_target(&mut self.target, &response, newton, 2);
            }
        }
        self.phase = Phase::Sent;
        LiveNext::Send(self.live_target())
    }

    /// Moves to frequency `i`: new factors and window; the target's higher harmonics carry
    /// over from the previous point (a good start for a small step).
    fn enter_point(&mut self, i: usize) {
        let f = self.config.frequency_hz(i);
        let omega = std::f64::consts::TAU * f;
        self.point = i;
        self.omega_rad_s = omega;
        self.iteration = 0;
        self.previous = None;
        self.target[1] = Complex::new(self.config.target_amplitude_m, 0.0);
        self.window_samples = (self.config.measure_periods as f64 * self.config.sample_rate_hz / f)
            .round()
            .max(1.0) as usize;
    }

    fn empty_window(&self) -> Window {
        let width = 3 * self.config.harmonics + 1;
        Window {
            count: 0,
            accel: vec![Complex::new(0.0, 0.0); width],
            force: vec![Complex::new(0.0, 0.0); width],
        }
    }

    /// The current target as the edge's coefficients: X*_k = c_k − i·s_k.
    fn live_target(&self) -> LiveTarget {
        LiveTarget {
            frequency_hz: self.omega_rad_s / std::f64::consts::TAU,
            cos_m: self.target[1..].iter().map(|c| c.re).collect(),
            sin_m: self.target[1..].iter().map(|c| -c.im).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::continuation::{Branch, ContinuationConfig, Sweep, continue_branch};
    use crate::integrate::Stepper;
    use crate::model::{NonlinearChainConfig, PolynomialSpring, SpringLink};
    use dtop_dynamics::ShearBuildingConfig;
    use dtop_dynamics::control::SampledLoop;

    /// The Southampton rig (no actuator: a shaker on floor 1) with a hardening cubic spring
    /// on storey 1, forced and controlled on floor 1.
    fn chain() -> NonlinearChain {
        NonlinearChain::new(NonlinearChainConfig {
            building: ShearBuildingConfig::southampton(),
            springs: vec![PolynomialSpring {
                link: SpringLink::Storey { storey: 1 },
                quadratic_n_per_m2: 0.0,
                cubic_n_per_m3: 1e11,
                quintic_n_per_m5: 0.0,
            }],
            forced_floor: 1,
        })
        .expect("valid")
    }

    /// ẍ* of the target at sample `k`, written out from the coefficients.
    fn target_accel(t: &LiveTarget, fs: f64, k: u64) -> f64 {
        let time_s = k as f64 / fs;
        (1..=t.cos_m.len())
            .map(|h| {
                let w = std::f64::consts::TAU * t.frequency_hz * h as f64;
                -w * w * (t.cos_m[h - 1] * (w * time_s).cos() + t.sin_m[h - 1] * (w * time_s).sin())
            })
            .sum()
    }

    /// A rig in the test: the chain integrated by RK4 (4 steps per sample) under the force
    /// the edge's law (run here by dtop-dynamics' `SampledLoop` on the tracking error) held
    /// over each sample; the core sees the acceleration and the force, as the twin does.
    fn run(config: LiveCbcConfig) -> (LiveCbc, CbcStop) {
        let chain = chain();
        let fs = config.sample_rate_hz;
        let (mut cbc, mut target) = LiveCbc::start(&chain, config.clone()).expect("starts");
        let mut law = SampledLoop::new(config.controller()).expect("valid law");
        let mut rig = Stepper::new(&chain).expect("stepper");
        let dt = 1.0 / fs;
        cbc.started(0);
        let mut k = 0u64;
        loop {
            let u = law.output(&[0.0]);
            let a = rig.acceleration(u)[0];
            let e = target_accel(&target, fs, k) - a;
            law.advance(&[e], u);
            match cbc.on_samples(k, &[a], &[u]) {
                LiveNext::Continue => {}
                LiveNext::Send(next) => {
                    target = next;
                    // The edge's ack: the new target runs from the next sample.
                    cbc.started(k + 1);
                }
                LiveNext::Stop(stop) => return (cbc, stop),
            }
            for _ in 0..4 {
                rig.step(0.0, dt / 4.0, |_| u);
            }
            k += 1;
            assert!(k < 5_000_000, "the run never ended");
        }
    }

    /// The balance continued in F at `omega` (7 harmonics, fine steps), the reference a
    /// live point is checked against: F as a function of floor 1's amplitude along it.
    fn reference(omega: f64, end_n: f64) -> Branch {
        let mut config = ContinuationConfig::new(
            Sweep::Amplitude {
                start_n: 0.0,
                end_n,
                omega_rad_s: omega,
            },
            7,
        );
        config.initial_step = 0.005;
        config.max_step = 0.005;
        config.stability = false;
        continue_branch(&chain(), &config).expect("continues")
    }

    /// F at floor-1 amplitude `a` along `branch`, linearly between its points (the steps
    /// are fine enough that this errs far below the tolerance).
    fn forcing_at(branch: &Branch, a: f64) -> f64 {
        let p = &branch.points;
        let i = (0..p.len() - 1)
            .find(|&i| (p[i].amplitude_m[0] - a) * (p[i + 1].amplitude_m[0] - a) <= 0.0)
            .expect("the amplitude lies on the branch");
        let (a0, a1) = (p[i].amplitude_m[0], p[i + 1].amplitude_m[0]);
        p[i].forcing_n + (p[i + 1].forcing_n - p[i].forcing_n) * (a - a0) / (a1 - a0)
    }

    /// Live CBC's core on an exactly simulated nonlinear rig: every point converges
    /// (non-invasive to 5e-3), and its (ω, F, A) lies on the harmonic-balance continuation:
    /// F within 1 % of the balance's at the measured amplitude. The 1 %: an invasiveness ε
    /// moves the orbit by about ε (5e-3), the held force's sampling by (ωT)²/24 ≈ 7e-5.
    #[test]
    fn live_cbc_points_on_a_simulated_cubic_rig_lie_on_the_continuation() {
        let config = LiveCbcConfig::new(1000.0, 6.8, 7.4, 3, 2e-4, 20.0);
        let (cbc, stop) = run(config);
        assert_eq!(stop, CbcStop::Completed, "{:#?}", cbc.points());
        assert_eq!(cbc.points().len(), 3);
        for p in cbc.points() {
            assert!(p.converged && p.invasiveness <= 5e-3, "{p:?}");
            let branch = reference(p.omega_rad_s, 2.0 * p.forcing_n);
            let want = forcing_at(&branch, p.amplitude_m[0]);
            let error = (p.forcing_n - want).abs() / want;
            println!(
                "{:.4} Hz: A = {:.5} m, F = {:.5} N, balance {want:.5} N, error {error:.2e}, \
                 {} iterations, invasiveness {:.1e}",
                p.omega_rad_s / std::f64::consts::TAU,
                p.amplitude_m[0],
                p.forcing_n,
                p.iterations,
                p.invasiveness
            );
            assert!(error < 0.01, "{p:?}: balance says {want} N");
        }
        // The spring matters: the linear chain needs a force at least 5 % different for the
        // last point's amplitude, beyond the tolerance above.
        let last = cbc.points().last().expect("points");
        let mut linear = chain().config().clone();
        linear.springs.clear();
        let linear = NonlinearChain::new(linear).expect("valid");
        let per_newton = crate::continuation::periodic_response(&linear, 1, last.omega_rad_s, 1.0)
            .expect("linear response")
            .amplitude_m[0];
        let linear_n = last.amplitude_m[0] / per_newton;
        println!("linear chain at the last point: {linear_n:.5} N");
        assert!((linear_n / last.forcing_n - 1.0).abs() > 0.05, "{linear_n}");
    }

    #[test]
    fn a_force_at_the_actuators_limit_stops_the_run_and_keeps_its_points() {
        let config = LiveCbcConfig::new(1000.0, 6.8, 7.4, 3, 2e-4, 0.05);
        let (cbc, stop) = run(config);
        assert!(matches!(stop, CbcStop::ForceLimit { .. }), "{stop:?}");
        assert!(cbc.points().is_empty());
    }

    #[test]
    fn every_problem_of_a_live_run_is_reported_at_once() {
        let mut config = LiveCbcConfig::new(100.0, 2.0, 1.0, 0, -1.0, 0.0);
        config.harmonics = 40;
        config.proportional_gain_n_per_m = 0.0;
        config.derivative_gain_n_s_per_m = 0.0;
        config.integrator_corner_hz = 1.0;
        let Err(NonlinearError::Invalid(problems)) = LiveCbc::start(&chain(), config) else {
            panic!("an invalid run started");
        };
        for needle in [
            "target_amplitude_m",
            "max_force_n",
            "frequency_end_hz",
            "frequency_steps",
            "harmonics = 40",
            "Nyquist",
            "both controller gains are zero",
            "integrator_corner_hz",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle:?} missing from {problems:#?}"
            );
        }
    }

    /// The law's phasor is the transfer of the matrices it sends: a sinusoidal error
    /// through `controller()` gives the force `controller_phasor` predicts (in steady state).
    #[test]
    fn the_controller_phasor_is_the_transfer_of_the_sent_law() {
        let config = LiveCbcConfig::new(1000.0, 7.0, 7.0, 1, 2e-4, 20.0);
        let mut law = SampledLoop::new(config.controller()).expect("valid");
        let w = std::f64::consts::TAU * 7.0;
        // Displacement error δ(t) = cos wt, i.e. acceleration error −w²·cos wt.
        let (mut re, mut im) = (0.0, 0.0);
        let n = 60_000u64;
        let window = 10_000u64; // 70 whole periods at the end
        for k in 0..n {
            let t = k as f64 / 1000.0;
            let u = law.output(&[0.0]);
            law.advance(&[-w * w * (w * t).cos()], u);
            if k >= n - window {
                re += 2.0 / window as f64 * u * (w * t).cos();
                im -= 2.0 / window as f64 * u * (w * t).sin();
            }
        }
        let want = config.controller_phasor(w);
        // The leak's transient (corner 0.5 Hz) has decayed by e^{-3.1·50} in 50 s.
        assert!(
            (Complex::new(re, im) - want).norm() < 1e-6 * want.norm(),
            "{re} {im} against {want}"
        );
        // And close to the ideal PD (k_p + i·w·k_d) a decade above the corner.
        let ideal = Complex::new(5000.0, w * 50.0);
        assert!(
            (want - ideal).norm() < 0.25 * ideal.norm(),
            "{want} against {ideal}"
        );
    }
}
