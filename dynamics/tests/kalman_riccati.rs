//! The steady state the filter is built on, checked independently: the scalar Riccati
//! equation's closed form, the residual of the matrix equation for every subset of sensors
//! on the Southampton models, and agreement with the plain Riccati recursion.

// Helpers outside #[test] fns panic on broken preconditions too; that is how tests fail.
#![allow(clippy::expect_used)]

mod kalman_support;

use dtop_dynamics::kalman::solve_filter_dare;
use dtop_dynamics::{GainSchedule, GaussianModel, KalmanFilter, ShearBuilding, StructuralNoise};
use kalman_support::discretize;
use nalgebra::DMatrix;

fn scalar(value: f64) -> DMatrix<f64> {
    DMatrix::from_element(1, 1, value)
}

/// Positive root of the scalar DARE after removing the cross term:
/// p = ã²·p − ã²·c²·p²/(c²·p + r) + q̃, i.e. c²·p² + (r·(1 − ã²) − q̃·c²)·p − q̃·r = 0.
fn scalar_riccati(a: f64, c: f64, q: f64, r: f64, s: f64) -> f64 {
    let a_t = a - s * c / r;
    let q_t = q - s * s / r;
    let b = r * (1.0 - a_t * a_t) - q_t * c * c;
    (-b + (b * b + 4.0 * c * c * q_t * r).sqrt()) / (2.0 * c * c)
}

#[test]
fn scalar_steady_state_gain_matches_the_closed_form() {
    // Stable, unstable, and with correlated noise (q·r − s² > 0 keeps the joint
    // covariance positive definite).
    for (a, c, q, r, s) in [
        (0.95, 2.0, 0.3, 0.5, 0.0),
        (1.2, 0.7, 0.01, 2.0, 0.0),
        (0.95, 2.0, 0.3, 0.5, 0.1),
        (0.5, -1.5, 1e-4, 1e-2, -5e-4),
    ] {
        let p = scalar_riccati(a, c, q, r, s);
        let model = GaussianModel {
            ad: scalar(a),
            bd: scalar(1.0),
            c: scalar(c),
            d: scalar(0.0),
            process_noise: scalar(q),
            measurement_noise: scalar(r),
            cross_noise: scalar(s),
        };
        let filter = KalmanFilter::new(&model, GainSchedule::SteadyState).expect("valid");
        let sol = filter.steady_state();
        let sigma = c * c * p + r;
        // The closed form itself is accurate to a few ulps of its largest term; 1e-12
        // relative leaves room for that and the doubling's last step.
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-12 * want.abs().max(1e-300);
        assert!(
            close(sol.covariance[(0, 0)], p),
            "{a} {c}: P = {} vs {p}",
            sol.covariance
        );
        assert!(close(sol.innovation_covariance[(0, 0)], sigma));
        assert!(close(sol.filter_gain[(0, 0)], p * c / sigma));
        assert!(close(sol.predictor_gain[(0, 0)], (a * p * c + s) / sigma));
        // The root really solves the original (uncorrected) equation.
        let original = a * a * p + q - (a * p * c + s).powi(2) / sigma;
        assert!((original - p).abs() <= 1e-12 * p);
    }
}

fn southampton_models() -> Vec<(&'static str, GaussianModel)> {
    let mut models = Vec::new();
    for (name, building) in [
        ("bare", ShearBuilding::southampton()),
        (
            "actuator on floor 3",
            ShearBuilding::southampton_with_actuator(3).expect("floor 3 exists"),
        ),
    ] {
        let dss = discretize(&building);
        let noise = StructuralNoise::defaults(dss.io_layout());
        models.push((name, noise.gaussian_model(&dss).expect("valid")));
    }
    models
}

/// Riccati residual A·P·Aᵀ + Q − (A·P·Cᵀ + S)·Σ⁻¹·(A·P·Cᵀ + S)ᵀ − P, entry (i, j) divided by
/// √(Pᵢᵢ·Pⱼⱼ): a relative measure that does not let the large velocity variances hide
/// errors in the displacement ones, which are ~10⁴ times smaller.
fn scaled_residual(
    a: &DMatrix<f64>,
    c: &DMatrix<f64>,
    q: &DMatrix<f64>,
    r: &DMatrix<f64>,
    s: &DMatrix<f64>,
    p: &DMatrix<f64>,
) -> f64 {
    let sigma = c * p * c.transpose() + r;
    let cross = a * p * c.transpose() + s;
    let sigma_inv = sigma.try_inverse().expect("Σ is positive definite");
    let residual = a * p * a.transpose() + q - &cross * sigma_inv * cross.transpose() - p;
    let mut worst: f64 = 0.0;
    for i in 0..p.nrows() {
        for j in 0..p.ncols() {
            worst = worst.max(residual[(i, j)].abs() / (p[(i, i)] * p[(j, j)]).sqrt());
        }
    }
    worst
}

#[test]
fn dare_solution_satisfies_the_riccati_equation_for_every_sensor_subset() {
    for (name, model) in southampton_models() {
        let m = model.n_outputs();
        for mask in 1..(1usize << m) {
            let rows: Vec<usize> = (0..m).filter(|i| mask & (1 << i) != 0).collect();
            let c = model.c.select_rows(rows.iter());
            let r = model
                .measurement_noise
                .select_rows(rows.iter())
                .select_columns(rows.iter());
            let s = model.cross_noise.select_columns(rows.iter());
            let sol = solve_filter_dare(&model.ad, &c, &model.process_noise, &r, &s)
                .expect("every subset sees every (damped) mode");
            let p = &sol.covariance;
            let residual = scaled_residual(&model.ad, &c, &model.process_noise, &r, &s, p);
            assert!(
                residual < 1e-9,
                "{name}, channels {rows:?}: residual {residual:e}"
            );
            // A covariance: symmetric, positive semi-definite (to rounding of its largest
            // eigenvalue).
            assert!((p - p.transpose()).amax() <= 1e-15 * p.amax());
            let eigenvalues = p.clone().symmetric_eigenvalues();
            assert!(
                eigenvalues.min() > -1e-12 * eigenvalues.max(),
                "{eigenvalues}"
            );
            // The stabilizing solution: the error dynamics A − K·C are stable.
            let closed_loop = &model.ad - &sol.predictor_gain * &c;
            let radius = closed_loop
                .complex_eigenvalues()
                .iter()
                .map(|z| z.norm())
                .fold(0.0, f64::max);
            assert!(
                radius < 1.0,
                "{name}, channels {rows:?}: spectral radius {radius}"
            );
        }
    }
}

#[test]
fn doubling_agrees_with_the_plain_riccati_recursion() {
    let (_, model) = southampton_models().remove(0);
    let (a, c, q, r, s) = (
        &model.ad,
        &model.c,
        &model.process_noise,
        &model.measurement_noise,
        &model.cross_noise,
    );
    // The recursion from P = 0 converges at the closed-loop rate, which with every floor
    // measured is fast; 20 000 steps (20 s) is far past settling.
    let mut p = DMatrix::zeros(a.nrows(), a.nrows());
    for _ in 0..20_000 {
        let sigma = c * &p * c.transpose() + r;
        let cross = a * &p * c.transpose() + s;
        let next = a * &p * a.transpose() + q
            - &cross * sigma.try_inverse().expect("positive definite") * cross.transpose();
        p = (&next + next.transpose()) * 0.5;
    }
    let sol = solve_filter_dare(a, c, q, r, s).expect("detectable");
    let mut worst: f64 = 0.0;
    for i in 0..p.nrows() {
        for j in 0..p.ncols() {
            let d = (p[(i, j)] - sol.covariance[(i, j)]).abs();
            worst = worst.max(d / (p[(i, i)] * p[(j, j)]).sqrt());
        }
    }
    // Two different algorithms, both converged (they agree to ~1e-14 in practice): 1e-10 of
    // each entry's scale leaves room for rounding in the 20 000 recursion steps.
    assert!(worst < 1e-10, "recursion vs doubling: {worst:e}");
}
