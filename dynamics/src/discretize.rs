//! Owns exact zero-order-hold discretization and the allocation-free discrete step.
//! Knows nothing of where u comes from or where y goes.

use std::sync::{Mutex, PoisonError};

use nalgebra::{DMatrix, DVector};

use crate::error::ModelError;
use crate::state_space::{IoLayout, StateSpace};

/// Exact zero-order-hold discretization of ẋ = A·x + B·u over a step `dt_s`:
/// Ad = e^{A·dt} and Bd = ∫₀^dt e^{A·τ} dτ · B, read off one matrix exponential of the
/// augmented matrix [[A, B], [0, 0]]·dt, which equals [[Ad, Bd], [0, I]].
///
/// Uses nalgebra's `Matrix::exp` (Al-Mohy–Higham scaling and squaring with Padé
/// approximants, the algorithm behind SciPy's `expm`).
///
/// # Errors
/// [`ModelError::InvalidTimeStep`] unless `dt_s` is positive and finite;
/// [`ModelError::Numerical`] if A or B has non-finite entries or do not fit together, or
/// the exponential overflows.
pub fn zoh_matrices(
    a: &DMatrix<f64>,
    b: &DMatrix<f64>,
    dt_s: f64,
) -> Result<(DMatrix<f64>, DMatrix<f64>), ModelError> {
    if !(dt_s.is_finite() && dt_s > 0.0) {
        return Err(ModelError::InvalidTimeStep { dt_s });
    }
    let n = a.nrows();
    let m = b.ncols();
    if !a.is_square() || b.nrows() != n {
        return Err(ModelError::Numerical(
            "A must be square and B must have as many rows as A",
        ));
    }
    // Checked up front: nalgebra's scaling-and-squaring would loop for ~2⁶⁴ squarings on an
    // infinite norm.
    if a.iter().chain(b.iter()).any(|x| !x.is_finite()) {
        return Err(ModelError::Numerical("A or B has a non-finite entry"));
    }
    let mut augmented = DMatrix::zeros(n + m, n + m);
    augmented.view_mut((0, 0), (n, n)).copy_from(&(a * dt_s));
    augmented.view_mut((0, n), (n, m)).copy_from(&(b * dt_s));
    let exponential = augmented.exp();
    if exponential.iter().any(|x| !x.is_finite()) {
        return Err(ModelError::Numerical(
            "matrix exponential overflowed: time step too long for this system",
        ));
    }
    let ad = exponential.view((0, 0), (n, n)).into_owned();
    let bd = exponential.view((0, n), (n, m)).into_owned();
    Ok((ad, bd))
}

impl StateSpace {
    /// Exact zero-order-hold discretization: inputs are held constant over each step of
    /// `dt_s` seconds. C and D carry over unchanged.
    ///
    /// # Errors
    /// As [`zoh_matrices`].
    pub fn discretize_zoh(&self, dt_s: f64) -> Result<DiscreteStateSpace, ModelError> {
        let (ad, bd) = zoh_matrices(&self.a, &self.b, dt_s)?;
        let n_states = ad.nrows();
        Ok(DiscreteStateSpace {
            ad,
            bd,
            c: self.c.clone(),
            d: self.d.clone(),
            dt_s,
            layout: self.io_layout(),
            next_state: Mutex::new(DVector::zeros(n_states)),
        })
    }
}

/// Discrete-time model `x[k+1] = Ad·x[k] + Bd·u[k]`, `y[k] = C·x[k] + D·u[k]`.
///
/// States, inputs and outputs mean the same as in the [`StateSpace`] it came from.
#[derive(Debug)]
pub struct DiscreteStateSpace {
    /// State transition matrix e^{A·dt}.
    pub ad: DMatrix<f64>,
    /// Input matrix of the held input.
    pub bd: DMatrix<f64>,
    /// Output matrix (same as continuous).
    pub c: DMatrix<f64>,
    /// Feedthrough matrix (same as continuous).
    pub d: DMatrix<f64>,
    /// Sample period, in s.
    pub dt_s: f64,
    /// Meaning of u and y.
    layout: IoLayout,
    /// Ad·x + Bd·u cannot be written over x while x is still being read, so it lands here
    /// first. Kept here, pre-sized, so `step` never allocates; behind a mutex so `step`
    /// can take `&self` and the model stays `Sync` (an uncontended lock costs far less
    /// than the matrix-vector products).
    next_state: Mutex<DVector<f64>>,
}

impl Clone for DiscreteStateSpace {
    fn clone(&self) -> Self {
        Self {
            ad: self.ad.clone(),
            bd: self.bd.clone(),
            c: self.c.clone(),
            d: self.d.clone(),
            dt_s: self.dt_s,
            layout: self.layout,
            // Scratch content is meaningless between steps; a fresh buffer avoids locking.
            next_state: Mutex::new(DVector::zeros(self.ad.nrows())),
        }
    }
}

impl DiscreteStateSpace {
    /// Advances one sample: writes y = C·x + D·u (outputs at the current sample), then
    /// replaces x with Ad·x + Bd·u. Allocates nothing.
    ///
    /// # Panics
    /// If `x`, `u` or `y` do not have `n_states()`, `n_inputs()` and `n_outputs()` entries.
    pub fn step(&self, x: &mut DVector<f64>, u: &DVector<f64>, y: &mut DVector<f64>) {
        y.gemv(1.0, &self.c, x, 0.0);
        y.gemv(1.0, &self.d, u, 1.0);
        // The buffer's content is rebuilt from scratch below, so a panic that poisoned the
        // lock mid-step left nothing worth protecting.
        let mut next_state = self
            .next_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if next_state.len() != self.ad.nrows() {
            // Only reachable if a caller replaced `ad` through its public field with a
            // differently sized matrix; never in steady state.
            *next_state = DVector::zeros(self.ad.nrows());
        }
        next_state.gemv(1.0, &self.ad, x, 0.0);
        next_state.gemv(1.0, &self.bd, u, 1.0);
        x.copy_from(&next_state);
    }

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

    /// Meaning of each input and output index.
    pub fn io_layout(&self) -> IoLayout {
        self.layout
    }

    /// Index of the ground acceleration (m/s²) in u.
    pub fn input_ground_accel(&self) -> usize {
        self.layout.input_ground_accel()
    }

    /// Index of the external force (N) on `floor` (1-based) in u.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn input_floor_force(&self, floor: usize) -> usize {
        self.layout.input_floor_force(floor)
    }

    /// Index of the actuator force (N) in u, if an actuator is fitted.
    pub fn input_actuator(&self) -> Option<usize> {
        self.layout.input_actuator()
    }

    /// Index of the absolute acceleration (m/s²) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_accel(&self, floor: usize) -> usize {
        self.layout.output_floor_accel(floor)
    }

    /// Index of the relative velocity (m/s) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_velocity(&self, floor: usize) -> usize {
        self.layout.output_floor_velocity(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Damping, ShearBuildingConfig};
    use crate::model::ShearBuilding;

    fn sdof(mass_kg: f64, stiffness_n_per_m: f64, damping: Damping) -> ShearBuilding {
        ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![mass_kg],
            storey_stiffness_n_per_m: vec![stiffness_n_per_m],
            damping,
            actuator: None,
        })
        .expect("valid SDOF")
    }

    #[test]
    fn zoh_of_an_undamped_oscillator_matches_the_closed_form() {
        let (m, k) = (2.0_f64, 800.0_f64);
        let w = (k / m).sqrt();
        let undamped = Damping::Rayleigh {
            alpha_per_s: 0.0,
            beta_s: 0.0,
        };
        let ss = sdof(m, k, undamped).state_space();
        for dt_s in [1e-4, 1e-3, 0.02, 0.5] {
            let dss = ss.discretize_zoh(dt_s).expect("valid step");
            let (s, c) = (w * dt_s).sin_cos();
            let want_ad = DMatrix::from_row_slice(2, 2, &[c, s / w, -w * s, c]);
            // Force column: ∫ e^{Aτ} dτ · [0; 1/m].
            // 1 − cos written as 2·sin²(·/2) so the reference keeps full precision at tiny dt.
            let one_minus_cos = 2.0 * (w * dt_s / 2.0).sin().powi(2);
            let want_bd_force = [one_minus_cos / (m * w * w), s / (m * w)];
            // Ground column: the same with generalized force −m·a_g.
            let want_bd_ground = [-one_minus_cos / (w * w), -s / w];
            // Padé scaling and squaring is accurate to a few ulps of ‖e^{A·dt}‖ ≤ w here;
            // 1e-12 relative to the entry's natural scale leaves room for that.
            for r in 0..2 {
                for col in 0..2 {
                    let scale = want_ad.row(r).amax().max(1.0);
                    assert!(
                        (dss.ad[(r, col)] - want_ad[(r, col)]).abs() < 1e-12 * scale,
                        "dt {dt_s}: Ad = {}",
                        dss.ad
                    );
                }
                let f = dss.bd[(r, ss.input_floor_force(1))];
                let g = dss.bd[(r, ss.input_ground_accel())];
                let scale = want_bd_ground[r].abs().max(1e-30);
                assert!(
                    (f - want_bd_force[r]).abs() < 1e-12 * scale / m,
                    "Bd = {}",
                    dss.bd
                );
                assert!(
                    (g - want_bd_ground[r]).abs() < 1e-12 * scale,
                    "Bd = {}",
                    dss.bd
                );
            }
        }
    }

    #[test]
    fn damped_step_response_matches_the_analytic_one_and_settles_at_f_over_k() {
        let (m, k, zeta, force_n) = (1.5, 2400.0, 0.05, 3.0);
        let ss = sdof(m, k, Damping::Modal { zetas: vec![zeta] }).state_space();
        let dt_s = 1e-3;
        let dss = ss.discretize_zoh(dt_s).expect("valid step");
        let wn = (k / m).sqrt();
        let wd = wn * (1.0 - zeta * zeta).sqrt();
        let static_m = force_n / k;
        let analytic = |t: f64| {
            static_m
                * (1.0
                    - (-zeta * wn * t).exp()
                        * ((wd * t).cos() + zeta / (1.0 - zeta * zeta).sqrt() * (wd * t).sin()))
        };
        let mut x = DVector::zeros(dss.n_states());
        let mut u = DVector::zeros(dss.n_inputs());
        let mut y = DVector::zeros(dss.n_outputs());
        u[dss.input_floor_force(1)] = force_n;
        let checkpoints = [7, 50, 137, 500, 2000];
        let mut steps = 0;
        for &at in &checkpoints {
            while steps < at {
                dss.step(&mut x, &u, &mut y);
                steps += 1;
            }
            let t = at as f64 * dt_s;
            let want = analytic(t);
            // ZOH is exact for a held step, so only rounding accumulates: ~steps·ε ≪ 1e-9.
            assert!(
                ((x[0] - want) / want).abs() < 1e-9,
                "t = {t}: x = {}, analytic {want}",
                x[0]
            );
        }
        // e^{−ζ·ωn·t} after 30 s is ~1e-26: the transient is gone.
        while steps < 30_000 {
            dss.step(&mut x, &u, &mut y);
            steps += 1;
        }
        assert!(((x[0] - static_m) / static_m).abs() < 1e-9, "x = {}", x[0]);
        assert!(x[1].abs() < 1e-12);
    }

    #[test]
    fn step_reports_outputs_of_the_state_before_it_advances() {
        let dss = ShearBuilding::southampton()
            .state_space()
            .discretize_zoh(1e-3)
            .expect("valid");
        let mut x = DVector::from_fn(dss.n_states(), |i, _| 1e-3 * (i as f64 + 1.0));
        let x0 = x.clone();
        let u = DVector::from_fn(dss.n_inputs(), |i, _| 0.5 - i as f64);
        let mut y = DVector::zeros(dss.n_outputs());
        dss.step(&mut x, &u, &mut y);
        let want_y = &dss.c * &x0 + &dss.d * &u;
        let want_x = &dss.ad * &x0 + &dss.bd * &u;
        // Same products in a different summation order: equal to a few ulps.
        assert!((y - want_y).amax() < 1e-12);
        assert!((x - want_x).amax() < 1e-15);
    }

    #[test]
    fn constant_ground_acceleration_drives_absolute_accelerations_to_it() {
        let a_g = -1.3;
        let building = ShearBuilding::new(ShearBuildingConfig {
            damping: Damping::Modal {
                zetas: vec![0.05; 3],
            },
            actuator: Some(crate::config::InertialActuator {
                floor: 3,
                ..Default::default()
            }),
            ..ShearBuildingConfig::southampton()
        })
        .expect("valid");
        let dss = building.state_space().discretize_zoh(1e-3).expect("valid");
        let mut x = DVector::zeros(dss.n_states());
        let mut u = DVector::zeros(dss.n_inputs());
        let mut y = DVector::zeros(dss.n_outputs());
        u[dss.input_ground_accel()] = a_g;
        // Slowest decay is 5 % of ~6 Hz: e^{−0.05·2π·6·60} ≈ 1e-49 after 60 s.
        for _ in 0..60_000 {
            dss.step(&mut x, &u, &mut y);
        }
        for floor in 1..=3 {
            // Static terms k·x/m of size |a_g| cancel to a few ulps of them.
            assert!(
                (y[dss.output_floor_accel(floor)] - a_g).abs() < 1e-12,
                "{y}"
            );
            assert!(y[dss.output_floor_velocity(floor)].abs() < 1e-12, "{y}");
        }
    }

    #[test]
    fn rejects_time_steps_that_are_not_positive_and_finite() {
        let ss = ShearBuilding::southampton().state_space();
        for dt_s in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                ss.discretize_zoh(dt_s),
                Err(ModelError::InvalidTimeStep { .. })
            ));
        }
    }

    #[test]
    fn rejects_non_finite_system_matrices() {
        let mut a = DMatrix::identity(2, 2);
        a[(0, 1)] = f64::INFINITY;
        let b = DMatrix::zeros(2, 1);
        assert!(matches!(
            zoh_matrices(&a, &b, 1e-3),
            Err(ModelError::Numerical(_))
        ));
    }

    #[test]
    fn clones_step_independently() {
        let dss = ShearBuilding::southampton_with_actuator(1)
            .expect("valid")
            .state_space()
            .discretize_zoh(2e-3)
            .expect("valid");
        let twin = dss.clone();
        let u = DVector::from_element(dss.n_inputs(), 1.0);
        let (mut xa, mut xb) = (
            DVector::zeros(dss.n_states()),
            DVector::zeros(dss.n_states()),
        );
        let (mut ya, mut yb) = (
            DVector::zeros(dss.n_outputs()),
            DVector::zeros(dss.n_outputs()),
        );
        for _ in 0..100 {
            dss.step(&mut xa, &u, &mut ya);
            twin.step(&mut xb, &u, &mut yb);
        }
        assert_eq!(xa, xb);
        assert_eq!(ya, yb);
        assert_eq!(twin.input_actuator(), Some(4));
    }
}
