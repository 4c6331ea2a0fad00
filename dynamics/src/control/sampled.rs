//! Owns the sampled-data controllers that run in the live loop at the sample rate: their
//! design (a steady-state Kalman filter on the discretized model plus a state-feedback row,
//! for DVF or LQR), their realization as one linear time-invariant system from measured
//! channels to actuator force, and the allocation-free stepper that runs it. Knows nothing
//! of where samples come from or where the force goes (the edge's inner loop and the twin do).
//!
//! # Timing model
//! The actuator force in effect while sample k is taken is the drive computed from sample
//! k − 1: the firmware applies a command at its next sample clock (PROTOCOL.md §4.5,
//! `applied_at_sample_index`), which is also what the rig simulator does. So the plant is
//! the ZOH model with u_a(k) = drive(k − 1). To cancel that one-sample delay the law acts on
//! the *predicted* state x̂(k+1|k), which for a pure one-step input delay is the optimal
//! policy with the undelayed feedback row.
//!
//! # The realization
//! Measured channels w(k) = [accelerations of the measured floors (m/s²); force on floor 1
//! (N)], controller state z(k) = [x̂(k|k−1); u_a(k)]:
//!
//! ```text
//! e(k)      = acc(k) − C·x̂(k|k−1) − D_f·f₁(k) − D_a·u_a(k)           innovation
//! x̂(k+1|k) = Ad·x̂(k|k−1) + Bd_f·f₁(k) + Bd_a·u_a(k) + K·e(k)          predictor
//! u(k)      = F·x̂(k+1|k)                                               law
//! u_a(k+1)  = the force actually applied (after the edge's safety envelope)
//! ```
//!
//! which is `u = c·z + d·w`, `z⁺ = A·z + B·w + e·u_applied`. Feeding back the *applied*
//! force (not the demanded one) keeps the estimate right while the envelope clamps or
//! ramps. Every other input (ground, unmeasured floor forces) is a disturbance.

use nalgebra::{DMatrix, DVector, RowDVector};

use crate::control::ControlError;
use crate::control::laws::LqgWeights;
use crate::control::plant::{ActuatedPlant, ActuatorElectrics};
use crate::frf::{C64, eigenvalues};
use crate::kalman::{StructuralNoise, solve_filter_dare};
use crate::model::ShearBuilding;

/// The law a sampled controller applies to the predicted state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampledLaw {
    /// Direct velocity feedback of the host floor: force on the proof mass
    /// +g·v̂_host, so the host floor feels the damper −g·v̂_host. g = Bl·h, in N·s/m.
    Dvf {
        /// g, N·s/m.
        gain_n_s_per_m: f64,
    },
    /// Discrete LQR with the cost Σ (xᵀ·E·x + ρ·i²)·dt of the continuous LQG design
    /// (E = the structure's energy, i = force / Bl), so both designs mean the same weights.
    Lqr {
        /// ρ and the (unused here) estimator intensities of the continuous design.
        weights: LqgWeights,
        /// Bl, to turn ρ per A² into a weight per N².
        electrics: ActuatorElectrics,
    },
}

/// A linear controller from measured channels to actuator force, ready to run:
/// `u = c·z + d·w`, then `z ← A·z + B·w + e·u_applied`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledController {
    /// Controller state matrix, n_z × n_z.
    pub a: DMatrix<f64>,
    /// Measured-channel input matrix, n_z × n_w.
    pub b: DMatrix<f64>,
    /// Where the applied force enters the state, n_z.
    pub e: DVector<f64>,
    /// Output row on the state, N per state unit.
    pub c: RowDVector<f64>,
    /// Output row on the measured channels.
    pub d: RowDVector<f64>,
    /// Sample period it was designed for, s.
    pub dt_s: f64,
}

impl SampledController {
    /// Controller states.
    pub fn n_states(&self) -> usize {
        self.a.nrows()
    }

    /// Measured channels it reads per sample.
    pub fn n_inputs(&self) -> usize {
        self.b.ncols()
    }

    /// Every size or finiteness rule the matrices break; empty when runnable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (n, m) = (self.a.nrows(), self.b.ncols());
        if !self.a.is_square() {
            problems.push(format!(
                "A is {}×{}, not square",
                self.a.nrows(),
                self.a.ncols()
            ));
        }
        if self.b.nrows() != n {
            problems.push(format!("B has {} rows, A has {n}", self.b.nrows()));
        }
        if self.e.len() != n {
            problems.push(format!("e has {} entries, A has {n} rows", self.e.len()));
        }
        if self.c.len() != n {
            problems.push(format!("c has {} entries, A has {n} rows", self.c.len()));
        }
        if self.d.len() != m {
            problems.push(format!("d has {} entries, B has {m} columns", self.d.len()));
        }
        let all = self.a.iter().chain(self.b.iter()).chain(self.e.iter());
        if all
            .chain(self.c.iter())
            .chain(self.d.iter())
            .any(|x| !x.is_finite())
        {
            problems.push("a matrix entry is not finite".to_owned());
        }
        if !(self.dt_s.is_finite() && self.dt_s > 0.0) {
            problems.push(format!("dt_s = {} must be positive", self.dt_s));
        }
        problems
    }
}

/// A design and the pieces it was made of, for reports and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledDesign {
    /// The runnable controller.
    pub controller: SampledController,
    /// F: force on the proof mass per unit of the predicted plant state, N.
    pub feedback_row: RowDVector<f64>,
    /// Predictor gain K, states × accelerometers.
    pub predictor_gain: DMatrix<f64>,
    /// Floors whose accelerations w carries, in order (then the force on floor 1).
    pub measured_floors: Vec<usize>,
    /// Host floor of the actuator, 1-based.
    pub host_floor: usize,
    /// Largest |eigenvalue| of Ad + Bd_a·F (the regulator with the delay compensated).
    pub regulator_spectral_radius: f64,
    /// Largest |eigenvalue| of Ad − K·C (the estimator's error dynamics).
    pub estimator_spectral_radius: f64,
}

impl SampledDesign {
    /// Whether both halves are stable, and so (separation principle) the loop on the model.
    pub fn is_stable(&self) -> bool {
        self.regulator_spectral_radius < 1.0 && self.estimator_spectral_radius < 1.0
    }
}

/// Designs the sampled controller of `law` for `building` (which must carry its actuator)
/// at period `dt_s`, with the Kalman filter's noise from `noise` (every floor in
/// `noise.measured_floors` measured; the force on floor 1 and the applied actuator force are
/// known inputs).
///
/// # Errors
/// [`ControlError::Invalid`] for a building without actuator, a bad period or law;
/// [`ControlError::Numerical`] if a Riccati equation has no stabilizing solution.
pub fn design_sampled(
    building: &ShearBuilding,
    dt_s: f64,
    noise: &StructuralNoise,
    law: SampledLaw,
) -> Result<SampledDesign, ControlError> {
    let mut problems = Vec::new();
    if !(dt_s.is_finite() && dt_s > 0.0) {
        problems.push(format!("dt_s = {dt_s} must be positive"));
    }
    match law {
        SampledLaw::Dvf { gain_n_s_per_m } if !(gain_n_s_per_m.is_finite()) => {
            problems.push(format!("DVF gain {gain_n_s_per_m} N·s/m is not finite"));
        }
        SampledLaw::Lqr { weights, electrics } => {
            problems.extend(electrics.problems());
            let rho = weights.current_weight_j_per_a2;
            if !(rho.is_finite() && rho > 0.0) {
                problems.push(format!("LQR current weight {rho} J/A² must be positive"));
            }
        }
        SampledLaw::Dvf { .. } => {}
    }
    let Some(actuator) = building.actuator().copied() else {
        problems.push("a sampled controller needs a building with an actuator".into());
        return Err(ControlError::Invalid(problems));
    };
    if !problems.is_empty() {
        return Err(ControlError::Invalid(problems));
    }
    let model = building.state_space().discretize_zoh(dt_s)?;
    let layout = model.io_layout();
    let gaussian = noise
        .gaussian_model(&model)
        .map_err(|e| ControlError::Invalid(vec![e.to_string()]))?;
    let dare = solve_filter_dare(
        &gaussian.ad,
        &gaussian.c,
        &gaussian.process_noise,
        &gaussian.measurement_noise,
        &gaussian.cross_noise,
    )
    .map_err(|_| ControlError::Numerical("sampled controller: estimator Riccati failed"))?;
    let k = dare.predictor_gain;

    let n = model.n_states();
    let dofs = n / 2;
    let actuator_input = layout
        .input_actuator()
        .ok_or(ControlError::Numerical("actuator fitted but not an input"))?;
    let force_input = layout.input_floor_force(1);
    let bd_a = model.bd.column(actuator_input).into_owned();
    let bd_f = model.bd.column(force_input).into_owned();
    let d_a = gaussian.d.column(actuator_input).into_owned();
    let d_f = gaussian.d.column(force_input).into_owned();
    let c = &gaussian.c;

    let feedback_row = match law {
        SampledLaw::Dvf { gain_n_s_per_m } => {
            let mut row = RowDVector::zeros(n);
            row[dofs + actuator.floor - 1] = gain_n_s_per_m;
            row
        }
        SampledLaw::Lqr { weights, electrics } => {
            lqr_row(building, &model.ad, &bd_a, dt_s, &weights, electrics)?
        }
    };

    // z = [x̂(k|k−1); u_a(k)], w = [acc; f₁].
    let m = c.nrows();
    let (nz, nw) = (n + 1, m + 1);
    let mut ez = DMatrix::zeros(m, nz);
    ez.view_mut((0, 0), (m, n)).copy_from(&(-c));
    ez.set_column(n, &(-&d_a));
    let mut ew = DMatrix::zeros(m, nw);
    ew.view_mut((0, 0), (m, m)).fill_with_identity();
    ew.set_column(m, &(-&d_f));

    let mut predict_z = DMatrix::zeros(n, nz);
    predict_z.view_mut((0, 0), (n, n)).copy_from(&model.ad);
    predict_z.set_column(n, &bd_a);
    predict_z += &k * &ez;
    let mut predict_w = DMatrix::zeros(n, nw);
    predict_w.set_column(m, &bd_f);
    predict_w += &k * &ew;

    let mut a = DMatrix::zeros(nz, nz);
    a.view_mut((0, 0), (n, nz)).copy_from(&predict_z);
    let mut b = DMatrix::zeros(nz, nw);
    b.view_mut((0, 0), (n, nw)).copy_from(&predict_w);
    let mut e = DVector::zeros(nz);
    e[n] = 1.0;
    let controller = SampledController {
        a,
        b,
        e,
        c: &feedback_row * &predict_z,
        d: &feedback_row * &predict_w,
        dt_s,
    };

    let regulator = &model.ad + &bd_a * &feedback_row;
    let estimator = &model.ad - &k * c;
    Ok(SampledDesign {
        controller,
        feedback_row,
        predictor_gain: k,
        measured_floors: noise.measured_floors.clone(),
        host_floor: actuator.floor,
        regulator_spectral_radius: spectral_radius(&regulator)?,
        estimator_spectral_radius: spectral_radius(&estimator)?,
    })
}

/// The discrete LQR row F (u = F·x) for Σ (xᵀ·E·x + ρ·(u/Bl)²)·dt, by the filter DARE of the
/// dual system (Adᵀ, Bd_aᵀ): its predictor gain is Ad·P·Bd_a·(Bd_aᵀ·P·Bd_a + R)⁻¹ = −Fᵀ.
fn lqr_row(
    building: &ShearBuilding,
    ad: &DMatrix<f64>,
    bd_a: &DVector<f64>,
    dt_s: f64,
    weights: &LqgWeights,
    electrics: ActuatorElectrics,
) -> Result<RowDVector<f64>, ControlError> {
    let plant = ActuatedPlant::inertial(building, electrics)?;
    let bl = electrics.force_factor_n_per_a;
    let q = &plant.structure_energy * dt_s;
    let r = DMatrix::from_element(1, 1, weights.current_weight_j_per_a2 / (bl * bl) * dt_s);
    let cross = DMatrix::zeros(ad.nrows(), 1);
    let dual = solve_filter_dare(
        &ad.transpose(),
        &DMatrix::from_column_slice(1, bd_a.len(), bd_a.as_slice()),
        &q,
        &r,
        &cross,
    )
    .map_err(|_| ControlError::Numerical("sampled controller: regulator Riccati failed"))?;
    Ok(-dual.predictor_gain.transpose().row(0).into_owned())
}

fn spectral_radius(m: &DMatrix<f64>) -> Result<f64, ControlError> {
    Ok(eigenvalues(m)?.iter().map(|l| l.norm()).fold(0.0, f64::max))
}

/// The eigenvalues of `m` (for tests and reports).
///
/// # Errors
/// [`ControlError::Numerical`] if the eigenvalue iteration fails.
pub fn eigenvalues_of(m: &DMatrix<f64>) -> Result<Vec<C64>, ControlError> {
    Ok(eigenvalues(m)?)
}

/// Runs a [`SampledController`]: fixed-size buffers, no allocation per sample.
#[derive(Debug, Clone)]
pub struct SampledLoop {
    controller: SampledController,
    z: DVector<f64>,
    scratch: DVector<f64>,
}

impl SampledLoop {
    /// A loop at rest (zero state, zero force in effect).
    ///
    /// # Errors
    /// Every problem of [`SampledController::problems`], in words.
    pub fn new(controller: SampledController) -> Result<Self, Vec<String>> {
        let problems = controller.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let n = controller.n_states();
        Ok(Self {
            controller,
            z: DVector::zeros(n),
            scratch: DVector::zeros(n),
        })
    }

    /// The controller it runs.
    pub fn controller(&self) -> &SampledController {
        &self.controller
    }

    /// The force demanded for the measured channels `w` of the current sample, N.
    ///
    /// # Panics
    /// If `w` does not have [`SampledController::n_inputs`] entries.
    pub fn output(&self, w: &[f64]) -> f64 {
        let c = &self.controller;
        assert_eq!(w.len(), c.n_inputs(), "one value per measured channel");
        let mut u = c.c.dot(&self.z.transpose());
        for (d, x) in c.d.iter().zip(w) {
            u += d * x;
        }
        u
    }

    /// Ends the sample: folds in `w` and the force actually applied for the next sample.
    ///
    /// # Panics
    /// If `w` does not have [`SampledController::n_inputs`] entries.
    pub fn advance(&mut self, w: &[f64], applied_force_n: f64) {
        let c = &self.controller;
        assert_eq!(w.len(), c.n_inputs(), "one value per measured channel");
        self.scratch.gemv(1.0, &c.a, &self.z, 0.0);
        for (j, x) in w.iter().enumerate() {
            self.scratch.axpy(*x, &c.b.column(j), 1.0);
        }
        self.scratch.axpy(applied_force_n, &c.e, 1.0);
        std::mem::swap(&mut self.z, &mut self.scratch);
    }

    /// Back to rest: after a gap in the samples, the state no longer describes the rig.
    pub fn reset(&mut self) {
        self.z.fill(0.0);
    }

    /// Whether the state is still finite (a corrupt sample could poison it).
    pub fn is_finite(&self) -> bool {
        self.z.iter().all(|x| x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlStudy;
    use crate::control::compensator::Compensator;

    fn southampton_noise(building: &ShearBuilding, dt_s: f64) -> StructuralNoise {
        let model = building
            .state_space()
            .discretize_zoh(dt_s)
            .expect("discretizes");
        let mut noise = StructuralNoise::defaults(model.io_layout());
        // The edge knows the force it applied; only its delivery error remains.
        if let Some(a) = model.io_layout().input_actuator() {
            noise.input_uncertainty_rms[a] = 0.01;
        }
        noise
    }

    fn design(floor: usize, law: SampledLaw) -> (ShearBuilding, SampledDesign) {
        let building = ShearBuilding::southampton_with_actuator(floor).expect("model");
        let noise = southampton_noise(&building, 1e-3);
        let design = design_sampled(&building, 1e-3, &noise, law).expect("design");
        (building, design)
    }

    /// The loop of the controller with the plant it was designed for (input delay included),
    /// built independently of the design algebra: [x; u_a; z].
    fn interconnection(building: &ShearBuilding, design: &SampledDesign) -> DMatrix<f64> {
        let model = building.state_space().discretize_zoh(1e-3).expect("model");
        let layout = model.io_layout();
        let n = model.n_states();
        let act = layout.input_actuator().expect("actuator");
        let rows: Vec<usize> = design
            .measured_floors
            .iter()
            .map(|&f| layout.output_floor_accel(f))
            .collect();
        let m = rows.len();
        // Plant: xp = [x; u_a], y = [C·x + D_a·u_a; f₁ = 0].
        let mut ap = DMatrix::zeros(n + 1, n + 1);
        ap.view_mut((0, 0), (n, n)).copy_from(&model.ad);
        ap.view_mut((0, n), (n, 1))
            .copy_from(&model.bd.column(act).into_owned());
        let mut bp = DVector::zeros(n + 1);
        bp[n] = 1.0;
        let mut cy = DMatrix::zeros(m + 1, n + 1);
        for (i, &r) in rows.iter().enumerate() {
            for j in 0..n {
                cy[(i, j)] = model.c[(r, j)];
            }
            cy[(i, n)] = model.d[(r, act)];
        }
        let k = &design.controller;
        let nz = k.n_states();
        let np = n + 1;
        let mut closed = DMatrix::zeros(np + nz, np + nz);
        // u = c·z + d·Cy·xp; the plant's u_a and the controller's applied force are both u.
        let d_cy = &k.d * &cy;
        closed
            .view_mut((0, 0), (np, np))
            .copy_from(&(&ap + &bp * &d_cy));
        closed.view_mut((0, np), (np, nz)).copy_from(&(&bp * &k.c));
        closed
            .view_mut((np, 0), (nz, np))
            .copy_from(&(&k.b * &cy + &k.e * &d_cy));
        closed
            .view_mut((np, np), (nz, nz))
            .copy_from(&(&k.a + &k.e * &k.c));
        closed
    }

    /// Matches every eigenvalue of `expected` to a distinct one of `actual`.
    fn assert_same_spectrum(actual: &[C64], expected: &[C64], tol: f64) {
        assert_eq!(actual.len(), expected.len());
        let mut unused: Vec<C64> = actual.to_vec();
        for e in expected {
            let (i, dist) = unused
                .iter()
                .enumerate()
                .map(|(i, a)| (i, (a - e).norm()))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("one left");
            assert!(
                dist < tol,
                "eigenvalue {e} has no partner (closest {dist:e})"
            );
            unused.swap_remove(i);
        }
    }

    fn separation_holds(floor: usize, law: SampledLaw) {
        let (building, design) = design(floor, law);
        let model = building.state_space().discretize_zoh(1e-3).expect("model");
        let act = model.input_actuator().expect("actuator");
        let closed = eigenvalues_of(&interconnection(&building, &design)).expect("eig");
        let c = model.c.select_rows(
            design
                .measured_floors
                .iter()
                .map(|&f| model.output_floor_accel(f))
                .collect::<Vec<_>>()
                .iter(),
        );
        let regulator = &model.ad + model.bd.column(act) * &design.feedback_row;
        let estimator = &model.ad - &design.predictor_gain * c;
        let mut expected = eigenvalues_of(&regulator).expect("eig");
        expected.extend(eigenvalues_of(&estimator).expect("eig"));
        // The delay state of the plant and the controller's copy of the applied force.
        expected.extend([C64::new(0.0, 0.0), C64::new(0.0, 0.0)]);
        assert_same_spectrum(&closed, &expected, 1e-6);
    }

    #[test]
    fn dvf_loop_eigenvalues_are_the_regulator_and_estimator_eigenvalues() {
        separation_holds(
            3,
            SampledLaw::Dvf {
                gain_n_s_per_m: 8.0,
            },
        );
    }

    #[test]
    fn lqr_loop_eigenvalues_are_the_regulator_and_estimator_eigenvalues() {
        separation_holds(
            1,
            SampledLaw::Lqr {
                weights: LqgWeights::default(),
                electrics: ActuatorElectrics::default(),
            },
        );
    }

    #[test]
    fn sampled_dvf_is_stable_below_and_unstable_above_the_continuous_critical_gain() {
        for floor in 1..=3 {
            let critical = ControlStudy::southampton(floor)
                .dvf_critical_gain(&Compensator::unity())
                .expect("study")
                .expect("finite critical gain");
            let bl = ActuatorElectrics::default().force_factor_n_per_a;
            let g_crit = critical.gain_a_per_m_s * bl;
            let (_, below) = design(
                floor,
                SampledLaw::Dvf {
                    gain_n_s_per_m: 0.8 * g_crit,
                },
            );
            let (_, above) = design(
                floor,
                SampledLaw::Dvf {
                    gain_n_s_per_m: 1.2 * g_crit,
                },
            );
            assert!(below.is_stable(), "floor {floor}: {below:?}");
            assert!(
                above.regulator_spectral_radius > 1.0,
                "floor {floor}: radius {}",
                above.regulator_spectral_radius
            );
        }
    }

    #[test]
    fn discrete_lqr_row_approaches_the_continuous_lqr_gain_as_the_period_shrinks() {
        // Independent route: the continuous CARE solution of the LQG design, i = −K·x, and
        // force = Bl·i, so F → −Bl·K as dt → 0.
        let building = ShearBuilding::southampton_with_actuator(3).expect("model");
        let electrics = ActuatorElectrics::default();
        let weights = LqgWeights::default();
        let plant = ActuatedPlant::inertial(&building, electrics).expect("plant");
        let continuous = crate::control::laws::lqg_controller(&plant, &weights).expect("lqg");
        let target = -&continuous.regulator_gain * electrics.force_factor_n_per_a;
        let dt_s = 1e-5;
        let model = building.state_space().discretize_zoh(dt_s).expect("model");
        let act = model.input_actuator().expect("actuator");
        let row = lqr_row(
            &building,
            &model.ad,
            &model.bd.column(act).into_owned(),
            dt_s,
            &weights,
            electrics,
        )
        .expect("lqr");
        let error = (&row - &target).norm() / target.norm();
        eprintln!("discrete vs continuous LQR: relative difference {error:e}");
        assert!(error < 1e-2, "relative difference {error:e}");
    }

    #[test]
    fn dvf_force_tracks_the_true_host_velocity_on_the_noisy_model() {
        // Independent check of the estimator path: run the designed controller open-loop
        // (applied force 0) against the model driven by random floor-1 force, and compare
        // the demanded force with g times the true predicted host velocity.
        use rand::{Rng, SeedableRng};
        let g = 5.0;
        let (building, design) = design(3, SampledLaw::Dvf { gain_n_s_per_m: g });
        let model = building.state_space().discretize_zoh(1e-3).expect("model");
        let layout = model.io_layout();
        let mut run = SampledLoop::new(design.controller.clone()).expect("valid");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut x = DVector::zeros(model.n_states());
        let mut u = DVector::zeros(model.n_inputs());
        let mut y = DVector::zeros(model.n_outputs());
        let (mut err2, mut ref2) = (0.0, 0.0);
        let host = layout.output_floor_velocity(3);
        for k in 0..20_000 {
            let f1: f64 = rng.random_range(-1.0..1.0) * 3.0;
            u[layout.input_floor_force(1)] = f1;
            model.step(&mut x, &u, &mut y);
            let mut w: Vec<f64> = (1..=3)
                .map(|f| y[layout.output_floor_accel(f)] + rng.random_range(-1.0..1.0) * 0.003)
                .collect();
            w.push(f1 + rng.random_range(-1.0..1.0) * 0.008);
            let demanded = run.output(&w);
            run.advance(&w, 0.0);
            // x now holds x(k+1): what the law aimed at.
            let truth = g * (model.c.row(host) * &x)[0];
            if k > 2_000 {
                err2 += (demanded - truth).powi(2);
                ref2 += truth.powi(2);
            }
        }
        let relative = (err2 / ref2).sqrt();
        eprintln!(
            "DVF force vs g·v_true: RMS error {relative:.4} of RMS {:.4} N",
            (ref2 / 17_999.0).sqrt()
        );
        assert!(relative < 0.05, "RMS error {relative} of RMS force");
    }

    #[test]
    fn refuses_a_building_without_an_actuator() {
        let building = ShearBuilding::southampton();
        let model = building.state_space().discretize_zoh(1e-3).expect("model");
        let noise = StructuralNoise::defaults(model.io_layout());
        let err = design_sampled(
            &building,
            1e-3,
            &noise,
            SampledLaw::Dvf {
                gain_n_s_per_m: 1.0,
            },
        )
        .expect_err("no actuator");
        assert!(matches!(err, ControlError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn loop_refuses_mismatched_matrices() {
        let (_, d) = design(
            2,
            SampledLaw::Dvf {
                gain_n_s_per_m: 1.0,
            },
        );
        let mut bad = d.controller.clone();
        bad.d = RowDVector::zeros(2);
        bad.dt_s = 0.0;
        let problems = SampledLoop::new(bad).expect_err("invalid");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
