//! Owns the Kalman filter proper: the linear-Gaussian model it believes, the gains it
//! designs once, and the allocation-free step that folds in one sample. Generic over any
//! model; naming states by floor is `structural.rs`'s job.

use nalgebra::{Cholesky, DMatrix, DVector, DVectorView};
use serde::{Deserialize, Serialize};

use super::KalmanError;
use super::dare::{DareSolution, solve_filter_dare};
use super::linalg;

/// Most measured channels for which [`GainSchedule::Auto`] tabulates one steady-state gain
/// per subset of available sensors: 2⁶ = 64 Riccati solutions at construction (a few ms)
/// and ~210 KB of gains for a 6-storey building. Above it the table doubles per channel,
/// and the time-varying update is used instead.
pub const MAX_TABULATED_CHANNELS: usize = 6;

/// Joint noise covariance [[Q, S], [Sᵀ, R]] may be this far below positive semi-definite,
/// relative to its largest eigenvalue, before it is rejected: room for rounding in
/// B·U·Bᵀ-style constructions, far too little to hide a sign error.
const PSD_TOLERANCE: f64 = 1e-10;

/// How the filter chooses its gain each sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GainSchedule {
    /// [`SteadyState`](Self::SteadyState) with at most [`MAX_TABULATED_CHANNELS`]
    /// measured channels, [`TimeVarying`](Self::TimeVarying) above.
    #[default]
    Auto,
    /// One steady-state gain per subset of available channels, all solved at construction.
    /// A step costs a few matrix-vector products. Optimal while the set of sensors stays the
    /// same; after a change it is the standard suboptimal approximation (see
    /// [`KalmanFilter`]).
    SteadyState,
    /// The full Riccati recursion every sample, started from the all-sensor steady state:
    /// the optimal filter for any pattern of missing samples, at O(n³) per step.
    TimeVarying,
}

/// What the filter believes: x(k+1) = Ad·x(k) + Bd·u(k) + w(k), y(k) = C·x(k) + D·u(k) + v(k),
/// with w and v white, zero-mean, Gaussian, `cov(w) = Q`, `cov(v) = R`, `cov(w, v) = S`
/// (same sample), and independent between samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianModel {
    /// State transition, n × n.
    pub ad: DMatrix<f64>,
    /// Input matrix of the held known input, n × p.
    pub bd: DMatrix<f64>,
    /// Output matrix of the measured channels, m × n.
    pub c: DMatrix<f64>,
    /// Feedthrough of the known input to the measured channels, m × p.
    pub d: DMatrix<f64>,
    /// Process noise covariance Q, n × n.
    pub process_noise: DMatrix<f64>,
    /// Measurement noise covariance R, m × m; must be positive definite.
    pub measurement_noise: DMatrix<f64>,
    /// Cross-covariance S = E[w·vᵀ], n × m.
    pub cross_noise: DMatrix<f64>,
}

impl GaussianModel {
    /// Length of x.
    pub fn n_states(&self) -> usize {
        self.ad.nrows()
    }

    /// Length of u.
    pub fn n_inputs(&self) -> usize {
        self.bd.ncols()
    }

    /// Length of y.
    pub fn n_outputs(&self) -> usize {
        self.c.nrows()
    }

    /// Checks sizes, finiteness, symmetry and definiteness, reporting every problem.
    ///
    /// # Errors
    /// [`KalmanError::Invalid`] listing every problem found.
    pub fn validate(&self) -> Result<(), KalmanError> {
        let (n, p, m) = (self.n_states(), self.n_inputs(), self.n_outputs());
        let mut problems = Vec::new();
        if n == 0 {
            problems.push("the model has no states".to_owned());
        }
        if m == 0 {
            problems.push("the model has no measured outputs".to_owned());
        }
        let sizes = [
            ("Ad", self.ad.shape(), (n, n)),
            ("Bd", self.bd.shape(), (n, p)),
            ("C", self.c.shape(), (m, n)),
            ("D", self.d.shape(), (m, p)),
            ("Q", self.process_noise.shape(), (n, n)),
            ("R", self.measurement_noise.shape(), (m, m)),
            ("S", self.cross_noise.shape(), (n, m)),
        ];
        for (name, got, want) in sizes {
            if got != want {
                problems.push(format!(
                    "{name} is {}×{}, expected {}×{}",
                    got.0, got.1, want.0, want.1
                ));
            }
        }
        let matrices = [
            ("Ad", &self.ad),
            ("Bd", &self.bd),
            ("C", &self.c),
            ("D", &self.d),
            ("Q", &self.process_noise),
            ("R", &self.measurement_noise),
            ("S", &self.cross_noise),
        ];
        for (name, matrix) in matrices {
            if matrix.iter().any(|v| !v.is_finite()) {
                problems.push(format!("{name} has a non-finite entry"));
            }
        }
        if !problems.is_empty() {
            return Err(KalmanError::Invalid(problems));
        }
        for (name, matrix) in [("Q", &self.process_noise), ("R", &self.measurement_noise)] {
            let scale = matrix.amax().max(f64::MIN_POSITIVE);
            if (matrix - matrix.transpose()).amax() > 1e-12 * scale {
                problems.push(format!("{name} is not symmetric"));
            }
        }
        if Cholesky::new(self.measurement_noise.clone()).is_none() {
            problems.push("R is not positive definite: every channel needs some noise".into());
        }
        let mut joint = DMatrix::zeros(n + m, n + m);
        joint
            .view_mut((0, 0), (n, n))
            .copy_from(&self.process_noise);
        joint.view_mut((0, n), (n, m)).copy_from(&self.cross_noise);
        joint
            .view_mut((n, 0), (m, n))
            .copy_from(&self.cross_noise.transpose());
        joint
            .view_mut((n, n), (m, m))
            .copy_from(&self.measurement_noise);
        let joint = (&joint + joint.transpose()) * 0.5;
        let eigenvalues = joint.symmetric_eigenvalues();
        let largest = eigenvalues.amax();
        if eigenvalues.min() < -PSD_TOLERANCE * largest {
            problems.push(
                "the joint noise covariance [[Q, S], [Sᵀ, R]] is not positive semi-definite".into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KalmanError::Invalid(problems))
        }
    }

    /// C, R and S as they are when only the channels flagged in `available` report: an
    /// absent channel becomes one that carries no information (zero row of C, zero column
    /// of S, unit variance uncorrelated with the rest). Its innovation is held at zero, so
    /// it adds nothing to the update or to the NIS, and every product keeps its full size.
    fn masked(&self, available: &[bool]) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
        let mut c = self.c.clone();
        let mut r = self.measurement_noise.clone();
        let mut s = self.cross_noise.clone();
        mask_in_place(available, &self.c, &self.measurement_noise, &mut c, &mut r);
        for (i, _) in available.iter().enumerate().filter(|(_, a)| !**a) {
            s.column_mut(i).fill(0.0);
        }
        (c, r, s)
    }
}

/// Writes into `c_out`/`r_out` the masked C and R (see `GaussianModel::masked`); shared by
/// construction and the allocation-free time-varying step.
fn mask_in_place(
    available: &[bool],
    c: &DMatrix<f64>,
    r: &DMatrix<f64>,
    c_out: &mut DMatrix<f64>,
    r_out: &mut DMatrix<f64>,
) {
    c_out.copy_from(c);
    r_out.copy_from(r);
    for (i, present) in available.iter().enumerate() {
        if !present {
            c_out.row_mut(i).fill(0.0);
            r_out.row_mut(i).fill(0.0);
            r_out.column_mut(i).fill(0.0);
            r_out[(i, i)] = 1.0;
        }
    }
}

/// What one step saw, for the caller's innovation monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepReport {
    /// Normalised innovation squared eᵀ·Σ⁻¹·e over the channels present. For a filter
    /// whose model is right it is χ²-distributed with `measured` degrees of freedom: mean
    /// `measured`, variance 2·`measured`. 0 when nothing was measured.
    pub nis: f64,
    /// Channels that reported a finite sample this step.
    pub measured: usize,
}

/// What a [`KalmanFilter`] carries between steps, and nothing it can recompute from its model:
/// the prediction x̂(k|k−1), the last estimate x̂(k−1|k−1) and, for the time-varying schedule,
/// P(k|k−1) (column-major). The steady-state gains and every scratch buffer are functions of
/// the model, so a filter rebuilt from the same model and restored from this continues bit for
/// bit. Serializes with exact floats (serde_json with `float_roundtrip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSnapshot {
    pub predicted_state: Vec<f64>,
    pub state: Vec<f64>,
    pub covariance: Option<Vec<f64>>,
}

/// A Kalman filter on a fixed-size linear-Gaussian model.
///
/// Each [`step`](Self::step) takes the known input u(k) and the samples y(k) (any of which
/// may be missing), and produces the filtered state x̂(k|k) and the prediction x̂(k+1|k).
/// Every buffer is allocated at construction; `step` allocates nothing.
///
/// # Missing samples and dropped-out sensors
/// An absent (or non-finite) sample is treated as a channel that carries no information.
/// With none present the step is a pure prediction.
///
/// With [`GainSchedule::SteadyState`] the filter carries no covariance, only the estimate:
/// each sample uses the steady-state gains of the channels present in *that* sample. While
/// the set of channels is constant this is the optimal filter. Just after a change it is
/// the standard suboptimal approximation: after a long outage the true error covariance
/// has grown towards the open-loop one, but the gain assumes the steady state, so the filter
/// trusts its prediction more than it should and the error decays at the closed-loop rate
/// of the steady-state filter rather than in one step. The NIS shows it, exceeding its
/// expected value until the estimate has caught up. Each tabulated gain stabilizes its own
/// error dynamics; stability under arbitrarily fast switching is not guaranteed by theory,
/// but sensor dropouts switch rarely compared with the closed-loop settling time, and the
/// tests check boundedness and recovery. [`GainSchedule::TimeVarying`] is exact for any
/// pattern, at O(n³) per step.
#[derive(Debug, Clone)]
pub struct KalmanFilter {
    n_states: usize,
    n_inputs: usize,
    n_outputs: usize,
    /// [Ad Bd], for the time-varying schedule (the tabulated one folds it into its gains).
    transition: DMatrix<f64>,
    /// [C D]: the predicted output is one product with [x̂; u].
    observation: DMatrix<f64>,
    /// The all-channel steady state, kept for callers (and as the time-varying start).
    nominal: DareSolution,
    gains: Gains,
    /// [x̂(k|k−1); u(k); e(k)], contiguous so that the prediction [A B K]·(·) and the
    /// output prediction [C D]·(·) each read one vector. e is y − ŷ for present channels
    /// and 0 for absent ones.
    stacked: DVector<f64>,
    /// x̂(k|k) after the last step.
    posterior: DVector<f64>,
    /// C·x̂(k|k−1) + D·u(k).
    predicted_output: DVector<f64>,
    /// x̂(k+1|k) while x̂(k|k−1) is still being read.
    next_prior: DVector<f64>,
    /// Whitened innovation G⁻¹·e, Σ = G·Gᵀ, whose squared norm is the NIS.
    whitened: DVector<f64>,
    /// Which channels reported this step.
    available: Vec<bool>,
    last: StepReport,
}

#[derive(Debug, Clone)]
enum Gains {
    /// Indexed by the availability bitmask (bit i = channel i present).
    SteadyState(Vec<SubsetGains>),
    /// Boxed: much larger than the other variant and only used for big sensor sets.
    TimeVarying(Box<Riccati>),
}

/// Steady-state gains for one subset of channels, with zero columns for the absent ones.
#[derive(Debug, Clone)]
struct SubsetGains {
    /// L, n × m.
    filter_gain: DMatrix<f64>,
    /// [Ad Bd K], n × (n + p + m): the whole prediction in one product with `stacked`.
    prediction: DMatrix<f64>,
    /// G⁻¹ with Σ = G·Gᵀ (masked), m × m: NIS = ‖G⁻¹·e‖².
    whitening: DMatrix<f64>,
}

impl KalmanFilter {
    /// Validates `model`, solves the steady-state Riccati equation(s) and allocates every
    /// buffer. The estimate starts at x̂(0|−1) = 0 (structure at rest).
    ///
    /// # Errors
    /// [`KalmanError::Invalid`] if the model is malformed (see
    /// [`GaussianModel::validate`]) or `SteadyState` is asked for with more than
    /// [`MAX_TABULATED_CHANNELS`] channels; [`KalmanError::Numerical`] if some subset of
    /// channels leaves a non-decaying mode unseen.
    pub fn new(model: &GaussianModel, schedule: GainSchedule) -> Result<Self, KalmanError> {
        model.validate()?;
        let (n, p, m) = (model.n_states(), model.n_inputs(), model.n_outputs());
        let nominal = solve_filter_dare(
            &model.ad,
            &model.c,
            &model.process_noise,
            &model.measurement_noise,
            &model.cross_noise,
        )?;
        let mut transition = DMatrix::zeros(n, n + p);
        transition.view_mut((0, 0), (n, n)).copy_from(&model.ad);
        transition.view_mut((0, n), (n, p)).copy_from(&model.bd);
        let tabulate = match schedule {
            GainSchedule::Auto => m <= MAX_TABULATED_CHANNELS,
            GainSchedule::SteadyState if m > MAX_TABULATED_CHANNELS => {
                return Err(KalmanError::Invalid(vec![format!(
                    "steady-state gains are tabulated for at most {MAX_TABULATED_CHANNELS} \
                     channels, this model has {m}; use the time-varying schedule"
                )]));
            }
            GainSchedule::SteadyState => true,
            GainSchedule::TimeVarying => false,
        };
        let gains = if tabulate {
            let table = (0..1usize << m)
                .map(|mask| subset_gains(model, mask, &nominal, &transition))
                .collect::<Result<Vec<_>, _>>()?;
            Gains::SteadyState(table)
        } else {
            Gains::TimeVarying(Box::new(Riccati::new(model, &nominal.covariance)))
        };
        let mut observation = DMatrix::zeros(m, n + p);
        observation.view_mut((0, 0), (m, n)).copy_from(&model.c);
        observation.view_mut((0, n), (m, p)).copy_from(&model.d);
        Ok(Self {
            n_states: n,
            n_inputs: p,
            n_outputs: m,
            transition,
            observation,
            nominal,
            gains,
            stacked: DVector::zeros(n + p + m),
            posterior: DVector::zeros(n),
            predicted_output: DVector::zeros(m),
            next_prior: DVector::zeros(n),
            whitened: DVector::zeros(m),
            available: vec![false; m],
            last: StepReport::default(),
        })
    }

    /// Folds in one sample: `u` is the known input u(k) (held over the sample, as in the
    /// ZOH model) and `y[i]` the sample of channel i, `None` if it did not arrive. A
    /// non-finite sample counts as missing. Allocates nothing.
    ///
    /// `u` must be finite: an input is known by definition, and a NaN would poison the
    /// estimate until [`reset`](Self::reset).
    ///
    /// # Panics
    /// If `u` or `y` do not have `n_inputs()` and `n_outputs()` entries, like an
    /// out-of-range slice index.
    pub fn step(&mut self, u: &[f64], y: &[Option<f64>]) -> StepReport {
        let (n, p, m) = (self.n_states, self.n_inputs, self.n_outputs);
        assert_eq!(u.len(), p, "u has the wrong length");
        assert_eq!(y.len(), m, "y has the wrong length");
        let (prior_and_input, innovation) = self.stacked.as_mut_slice().split_at_mut(n + p);
        prior_and_input[n..].copy_from_slice(u);
        let predicted = self.predicted_output.as_mut_slice();
        predicted.fill(0.0);
        mul_add(predicted, self.observation.as_slice(), prior_and_input);
        let mut mask = 0usize;
        let mut measured = 0;
        for (i, sample) in y.iter().enumerate() {
            match sample {
                Some(value) if value.is_finite() => {
                    innovation[i] = value - predicted[i];
                    self.available[i] = true;
                    // Only read by the tabulated schedule, where i < MAX_TABULATED_CHANNELS.
                    mask |= 1usize.checked_shl(i as u32).unwrap_or(0);
                    measured += 1;
                }
                _ => {
                    innovation[i] = 0.0;
                    self.available[i] = false;
                }
            }
        }
        let stacked = self.stacked.as_slice();
        let (prior, innovation) = (&stacked[..n], &stacked[n + p..]);
        let nis = match &mut self.gains {
            Gains::SteadyState(table) => {
                let gains = &table[mask];
                let posterior = self.posterior.as_mut_slice();
                posterior.copy_from_slice(prior);
                mul_add(posterior, gains.filter_gain.as_slice(), innovation);
                let next = self.next_prior.as_mut_slice();
                next.fill(0.0);
                mul_add(next, gains.prediction.as_slice(), stacked);
                let whitened = self.whitened.as_mut_slice();
                whitened.fill(0.0);
                mul_add(whitened, gains.whitening.as_slice(), innovation);
                whitened.iter().map(|w| w * w).sum()
            }
            Gains::TimeVarying(riccati) => {
                riccati.update(&self.available);
                let innovation = self.stacked.rows(n + p, m);
                self.posterior.copy_from(&self.stacked.rows(0, n));
                self.posterior
                    .gemv_tr(1.0, &riccati.filter_gain_t, &innovation, 1.0);
                self.next_prior
                    .gemv(1.0, &self.transition, &self.stacked.rows(0, n + p), 0.0);
                self.next_prior
                    .gemv_tr(1.0, &riccati.predictor_gain_t, &innovation, 1.0);
                self.whitened.copy_from(&innovation);
                linalg::forward_substitute(&riccati.sigma_factor, &mut self.whitened);
                self.whitened.norm_squared()
            }
        };
        self.stacked.rows_mut(0, n).copy_from(&self.next_prior);
        self.last = StepReport { nis, measured };
        self.last
    }

    /// Restarts from x̂(k|k−1) = `x0` (the estimate before the next sample) and, for the
    /// time-varying schedule, the all-channel steady-state covariance.
    ///
    /// # Panics
    /// If `x0` does not have `n_states()` entries.
    pub fn reset(&mut self, x0: &[f64]) {
        assert_eq!(x0.len(), self.n_states, "x0 has the wrong length");
        self.stacked.fill(0.0);
        self.stacked.rows_mut(0, self.n_states).copy_from_slice(x0);
        self.posterior.copy_from_slice(x0);
        self.last = StepReport::default();
        if let Gains::TimeVarying(riccati) = &mut self.gains {
            riccati.p.copy_from(&self.nominal.covariance);
        }
    }

    /// Everything the filter carries from one step to the next, exactly (see
    /// [`FilterSnapshot`]).
    pub fn snapshot(&self) -> FilterSnapshot {
        FilterSnapshot {
            predicted_state: self.predicted_state().iter().copied().collect(),
            state: self.posterior.iter().copied().collect(),
            covariance: self.covariance().map(|p| p.as_slice().to_vec()),
        }
    }

    /// Continues from `snapshot`, taken from a filter built from the same model and schedule:
    /// the following steps are then bit for bit those the snapshotted filter would have made.
    ///
    /// # Errors
    /// [`KalmanError::Invalid`] when the snapshot does not fit this filter (lengths, a
    /// covariance for the wrong schedule, non-finite values); the filter is left unchanged.
    pub fn restore(&mut self, snapshot: &FilterSnapshot) -> Result<(), KalmanError> {
        let n = self.n_states;
        let mut problems = Vec::new();
        for (what, v) in [
            ("predicted state", &snapshot.predicted_state),
            ("state", &snapshot.state),
        ] {
            if v.len() != n {
                problems.push(format!(
                    "the {what} has {} entries, the filter {n}",
                    v.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                problems.push(format!("the {what} is not finite"));
            }
        }
        match (&self.gains, &snapshot.covariance) {
            (Gains::SteadyState(_), None) => {}
            (Gains::SteadyState(_), Some(_)) => problems
                .push("a covariance was saved but this filter uses steady-state gains".into()),
            (Gains::TimeVarying(_), None) => {
                problems.push("no covariance was saved but this filter is time-varying".into())
            }
            (Gains::TimeVarying(_), Some(p)) => {
                if p.len() != n * n {
                    problems.push(format!("the covariance has {} entries, not {n}²", p.len()));
                }
                if p.iter().any(|x| !x.is_finite()) {
                    problems.push("the covariance is not finite".into());
                }
            }
        }
        if !problems.is_empty() {
            return Err(KalmanError::Invalid(problems));
        }
        self.reset(&snapshot.predicted_state);
        self.posterior.copy_from_slice(&snapshot.state);
        if let (Gains::TimeVarying(riccati), Some(p)) = (&mut self.gains, &snapshot.covariance) {
            riccati.p.copy_from_slice(p);
        }
        Ok(())
    }

    /// Filtered estimate x̂(k|k) after the last step (x0 before the first).
    pub fn state(&self) -> &DVector<f64> {
        &self.posterior
    }

    /// Prediction x̂(k+1|k) for the next sample.
    pub fn predicted_state(&self) -> DVectorView<'_, f64> {
        self.stacked.rows(0, self.n_states)
    }

    /// Innovation y(k) − C·x̂(k|k−1) − D·u(k) of the last step, 0 for absent channels.
    pub fn innovation(&self) -> DVectorView<'_, f64> {
        self.stacked
            .rows(self.n_states + self.n_inputs, self.n_outputs)
    }

    /// NIS and channel count of the last step.
    pub fn last_report(&self) -> StepReport {
        self.last
    }

    /// The all-channel steady state: covariance, innovation covariance and gains.
    pub fn steady_state(&self) -> &DareSolution {
        &self.nominal
    }

    /// The prediction covariance P(k+1|k) the time-varying schedule carries; `None` for
    /// the steady-state schedule, which carries none.
    pub fn covariance(&self) -> Option<&DMatrix<f64>> {
        match &self.gains {
            Gains::SteadyState(_) => None,
            Gains::TimeVarying(riccati) => Some(&riccati.p),
        }
    }

    /// True when gains are tabulated per subset of channels (see [`GainSchedule`]).
    pub fn is_steady_state(&self) -> bool {
        matches!(self.gains, Gains::SteadyState(_))
    }

    /// Length of x.
    pub fn n_states(&self) -> usize {
        self.n_states
    }

    /// Length of u.
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    /// Length of y.
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }
}

/// `transition` is [Ad Bd], which every subset's prediction matrix starts with.
fn subset_gains(
    model: &GaussianModel,
    mask: usize,
    nominal: &DareSolution,
    transition: &DMatrix<f64>,
) -> Result<SubsetGains, KalmanError> {
    let (n, m) = (model.n_states(), model.n_outputs());
    let columns = transition.ncols();
    let prediction = |gain: &DMatrix<f64>| {
        let mut stacked = DMatrix::zeros(n, columns + m);
        stacked.view_mut((0, 0), (n, columns)).copy_from(transition);
        stacked.view_mut((0, columns), (n, m)).copy_from(gain);
        stacked
    };
    let available: Vec<bool> = (0..m).map(|i| mask & (1 << i) != 0).collect();
    if mask == 0 {
        // Nothing to learn from: pure prediction. No Riccati solution is needed (and for a
        // model with an undamped mode none exists).
        return Ok(SubsetGains {
            filter_gain: DMatrix::zeros(n, m),
            prediction: prediction(&DMatrix::zeros(n, m)),
            whitening: DMatrix::zeros(m, m),
        });
    }
    let solution = if available.iter().all(|a| *a) {
        nominal.clone()
    } else {
        let (c, r, s) = model.masked(&available);
        solve_filter_dare(&model.ad, &c, &model.process_noise, &r, &s).map_err(|e| {
            let present: Vec<usize> = (0..m).filter(|i| available[*i]).collect();
            KalmanError::Numerical(format!("with only channels {present:?} present: {e}"))
        })?
    };
    let factor = Cholesky::new(solution.innovation_covariance.clone())
        .ok_or_else(|| {
            KalmanError::Numerical("innovation covariance is not positive definite".into())
        })?
        .l();
    let whitening = factor
        .solve_lower_triangular(&DMatrix::identity(m, m))
        .ok_or_else(|| KalmanError::Numerical("singular innovation covariance factor".into()))?;
    Ok(SubsetGains {
        prediction: prediction(&solution.predictor_gain),
        filter_gain: solution.filter_gain,
        whitening,
    })
}

/// `out += a · x` for a column-major `a` with `out.len()` rows, on plain slices: the
/// tabulated step's only kernel. Four columns at a time, so `out` is loaded and stored a
/// quarter as often and the inner loop has four independent products to vectorize; at
/// these sizes that is ~1.6× faster than nalgebra's `gemv`, whose per-call shape checks
/// and column-at-a-time axpy cost as much as the arithmetic (measured with
/// `examples/kalman_step.rs`).
#[inline]
fn mul_add(out: &mut [f64], a: &[f64], x: &[f64]) {
    let rows = out.len();
    debug_assert_eq!(a.len(), rows * x.len());
    let mut blocks = a.chunks_exact(4 * rows);
    let mut xs = x.chunks_exact(4);
    for (block, x4) in (&mut blocks).zip(&mut xs) {
        let (c0, rest) = block.split_at(rows);
        let (c1, rest) = rest.split_at(rows);
        let (c2, c3) = rest.split_at(rows);
        let (x0, x1, x2, x3) = (x4[0], x4[1], x4[2], x4[3]);
        let columns = c0.iter().zip(c1).zip(c2.iter().zip(c3));
        for (o, ((a0, a1), (a2, a3))) in out.iter_mut().zip(columns) {
            *o += x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3;
        }
    }
    for (column, &xj) in blocks.remainder().chunks_exact(rows).zip(xs.remainder()) {
        for (o, &c) in out.iter_mut().zip(column) {
            *o += xj * c;
        }
    }
}

/// The time-varying covariance recursion, with every intermediate preallocated. Gains are
/// stored transposed (m × n) because the Cholesky solves run down contiguous columns.
#[derive(Debug, Clone)]
struct Riccati {
    a_t: DMatrix<f64>,
    q: DMatrix<f64>,
    c: DMatrix<f64>,
    r: DMatrix<f64>,
    s_t: DMatrix<f64>,
    /// P(k|k−1) before `update`, P(k+1|k) after.
    p: DMatrix<f64>,
    /// Which channels the masked copies below were built for.
    masked_for: Vec<bool>,
    /// Masked Cᵀ (n × m) and Sᵀ (m × n), and masked R, rebuilt only when the set changes.
    c_t_masked: DMatrix<f64>,
    s_t_masked: DMatrix<f64>,
    r_masked: DMatrix<f64>,
    /// Scratch for the masked C before it is transposed into `c_t_masked`.
    c_masked: DMatrix<f64>,
    /// P·Aᵀ.
    p_a_t: DMatrix<f64>,
    /// A·P·Aᵀ.
    a_p_a_t: DMatrix<f64>,
    /// C·P (= (P·Cᵀ)ᵀ).
    c_p: DMatrix<f64>,
    /// C·P·Aᵀ + Sᵀ (= (A·P·Cᵀ + S)ᵀ).
    c_p_a_t: DMatrix<f64>,
    /// Lower Cholesky factor G of Σ = C·P·Cᵀ + R.
    sigma_factor: DMatrix<f64>,
    /// Lᵀ = Σ⁻¹·C·P.
    filter_gain_t: DMatrix<f64>,
    /// Kᵀ = Σ⁻¹·(C·P·Aᵀ + Sᵀ).
    predictor_gain_t: DMatrix<f64>,
}

impl Riccati {
    fn new(model: &GaussianModel, p0: &DMatrix<f64>) -> Self {
        let (n, m) = (model.n_states(), model.n_outputs());
        let mut riccati = Self {
            a_t: model.ad.transpose(),
            q: model.process_noise.clone(),
            c: model.c.clone(),
            r: model.measurement_noise.clone(),
            s_t: model.cross_noise.transpose(),
            p: p0.clone(),
            masked_for: vec![false; m],
            c_t_masked: DMatrix::zeros(n, m),
            s_t_masked: DMatrix::zeros(m, n),
            r_masked: DMatrix::zeros(m, m),
            c_masked: DMatrix::zeros(m, n),
            p_a_t: DMatrix::zeros(n, n),
            a_p_a_t: DMatrix::zeros(n, n),
            c_p: DMatrix::zeros(m, n),
            c_p_a_t: DMatrix::zeros(m, n),
            sigma_factor: DMatrix::zeros(m, m),
            filter_gain_t: DMatrix::zeros(m, n),
            predictor_gain_t: DMatrix::zeros(m, n),
        };
        riccati.remask(&vec![true; m]);
        riccati
    }

    fn remask(&mut self, available: &[bool]) {
        mask_in_place(
            available,
            &self.c,
            &self.r,
            &mut self.c_masked,
            &mut self.r_masked,
        );
        self.c_masked.transpose_to(&mut self.c_t_masked);
        self.s_t_masked.copy_from(&self.s_t);
        for (i, present) in available.iter().enumerate() {
            if !present {
                self.s_t_masked.row_mut(i).fill(0.0);
            }
        }
        self.masked_for.copy_from_slice(available);
    }

    /// Computes this step's gains from P(k|k−1) and advances P to P(k+1|k).
    fn update(&mut self, available: &[bool]) {
        if self.masked_for != available {
            self.remask(available);
        }
        linalg::mul_into(&mut self.p_a_t, &self.p, &self.a_t);
        linalg::mul_tr_into(&mut self.a_p_a_t, 1.0, &self.a_t, &self.p_a_t, 0.0);
        linalg::mul_tr_into(&mut self.c_p, 1.0, &self.c_t_masked, &self.p, 0.0);
        linalg::mul_into(&mut self.sigma_factor, &self.c_p, &self.c_t_masked);
        self.sigma_factor += &self.r_masked;
        self.c_p_a_t.copy_from(&self.s_t_masked);
        linalg::mul_tr_into(&mut self.c_p_a_t, 1.0, &self.c_t_masked, &self.p_a_t, 1.0);
        if !linalg::cholesky_in_place(&mut self.sigma_factor) {
            // Σ = C·P·Cᵀ + R with R positive definite cannot lose definiteness unless P has
            // been wrecked by non-finite inputs; predict only rather than divide by it.
            self.sigma_factor.fill_with_identity();
            self.filter_gain_t.fill(0.0);
            self.predictor_gain_t.fill(0.0);
            self.p.copy_from(&self.a_p_a_t);
            self.p += &self.q;
            return;
        }
        self.filter_gain_t.copy_from(&self.c_p);
        linalg::cholesky_solve_columns(&self.sigma_factor, &mut self.filter_gain_t);
        self.predictor_gain_t.copy_from(&self.c_p_a_t);
        linalg::cholesky_solve_columns(&self.sigma_factor, &mut self.predictor_gain_t);
        // P ← A·P·Aᵀ + Q − K·Σ·Kᵀ, and K·Σ·Kᵀ = Kᵀᵀ·(C·P·Aᵀ + Sᵀ).
        self.p.copy_from(&self.a_p_a_t);
        self.p += &self.q;
        linalg::mul_tr_into(
            &mut self.p,
            -1.0,
            &self.predictor_gain_t,
            &self.c_p_a_t,
            1.0,
        );
        linalg::symmetrize(&mut self.p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_model(q: f64, r: f64, s: f64) -> GaussianModel {
        let one = DMatrix::from_element(1, 1, 1.0);
        GaussianModel {
            ad: one.clone() * 0.9,
            bd: one.clone(),
            c: one.clone(),
            d: DMatrix::zeros(1, 1),
            process_noise: one.clone() * q,
            measurement_noise: one * r,
            cross_noise: DMatrix::from_element(1, 1, s),
        }
    }

    #[test]
    fn rejects_a_joint_covariance_that_is_not_positive_semi_definite() {
        // |s| > √(q·r): no random vector has these second moments.
        let err = KalmanFilter::new(&scalar_model(1.0, 1.0, 1.5), GainSchedule::Auto)
            .expect_err("impossible noise");
        assert!(matches!(err, KalmanError::Invalid(_)), "{err:?}");
        assert!(KalmanFilter::new(&scalar_model(1.0, 1.0, 0.9), GainSchedule::Auto).is_ok());
    }

    #[test]
    fn mul_add_matches_nalgebra_with_and_without_leftover_columns() {
        for (rows, cols) in [(1, 3), (6, 4), (6, 13), (12, 25), (5, 0)] {
            let a = DMatrix::from_fn(rows, cols, |i, j| ((i * 7 + j) as f64).sin());
            let x = DVector::from_fn(cols, |i, _| (i as f64).cos());
            let start = DVector::from_fn(rows, |i, _| i as f64);
            let mut out = start.clone();
            mul_add(out.as_mut_slice(), a.as_slice(), x.as_slice());
            // Same sum in another order: a few ulps of terms of size ≤ cols.
            assert!((out - (start + &a * &x)).amax() < 1e-13, "{rows}×{cols}");
        }
    }

    #[test]
    fn rejects_a_noiseless_measurement() {
        assert!(matches!(
            KalmanFilter::new(&scalar_model(1.0, 0.0, 0.0), GainSchedule::Auto),
            Err(KalmanError::Invalid(_))
        ));
    }

    #[test]
    fn both_schedules_agree_in_steady_state() {
        let model = scalar_model(0.2, 0.5, 0.1);
        let mut tabulated = KalmanFilter::new(&model, GainSchedule::SteadyState).expect("ok");
        let mut exact = KalmanFilter::new(&model, GainSchedule::TimeVarying).expect("ok");
        for k in 0..50 {
            let y = [Some((k as f64 * 0.3).sin())];
            let a = tabulated.step(&[0.1], &y);
            let b = exact.step(&[0.1], &y);
            // The time-varying filter starts at the steady-state covariance and stays there;
            // the two differ only by rounding.
            assert!((a.nis - b.nis).abs() < 1e-12);
            assert!((tabulated.state() - exact.state()).amax() < 1e-12);
        }
        let p = exact.covariance().expect("time-varying");
        assert!((p - &tabulated.steady_state().covariance).amax() < 1e-12);
    }
}
