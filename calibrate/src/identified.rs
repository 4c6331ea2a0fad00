//! Owns identified modes (what EMA produces) and the spatial model rebuilt from them: M, K
//! and C of the chain, with the modal mass scaled from the measured driving-point modal
//! constant. Cristallo instead assumed a modal mass of 5 for every mode (TOOLS.md § 8.2,
//! step 7), which sets the masses by fiat and the stiffnesses only up to that guess.

use dtop_dynamics::{Damping, ShearBuildingConfig};
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};

/// One identified mode: its pole and its modal constants at the measured channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifiedMode {
    /// Undamped natural frequency, in Hz.
    pub natural_frequency_hz: f64,
    /// Spread of the estimate (across channels for the circle fit), in Hz; `None` when there
    /// is nothing to spread over.
    pub natural_frequency_std_hz: Option<f64>,
    /// Damping ratio, fraction of critical.
    pub damping_ratio: f64,
    /// Spread of the damping estimate (across point pairs for the circle fit).
    pub damping_ratio_std: Option<f64>,
    /// Receptance modal constant A = φ_out·φ_in of each channel (mass-normalised φ), as
    /// `[re, im]`, in 1/kg: the channel's receptance near the mode is A/(ω_r² − ω² + 2jζω_rω).
    /// Real for classical damping; the imaginary part measures noise or non-classical
    /// damping.
    pub modal_constants_per_kg: Vec<[f64; 2]>,
}

impl IdentifiedMode {
    /// Whether every number of the mode is finite (frequency positive, damping in [0, 1)).
    pub fn is_finite(&self) -> bool {
        self.natural_frequency_hz.is_finite()
            && self.natural_frequency_hz > 0.0
            && self.damping_ratio.is_finite()
            && (0.0..1.0).contains(&self.damping_ratio)
            && self.natural_frequency_std_hz.is_none_or(f64::is_finite)
            && self.damping_ratio_std.is_none_or(f64::is_finite)
            && self
                .modal_constants_per_kg
                .iter()
                .flatten()
                .all(|x| x.is_finite())
    }

    /// The real parts of the modal constants: the mode shape at the channels, scaled by the
    /// shape at the input.
    pub fn real_shape(&self) -> Vec<f64> {
        self.modal_constants_per_kg.iter().map(|a| a[0]).collect()
    }

    /// Largest |Im A| / |A| over the channels: 0 for a perfectly real (classical) mode.
    pub fn complexity(&self) -> f64 {
        self.modal_constants_per_kg
            .iter()
            .map(|a| {
                let n = a[0].hypot(a[1]);
                if n > 0.0 { a[1].abs() / n } else { 0.0 }
            })
            .fold(0.0, f64::max)
    }
}

/// M, K and C rebuilt from a complete set of identified modes, and the nearest chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpatialModel {
    /// M = (Φ·Φᵀ)⁻¹ in floor order, row by row, in kg.
    pub mass_kg: Vec<Vec<f64>>,
    /// K = Φ⁻ᵀ·diag(ω²)·Φ⁻¹, row by row, in N/m.
    pub stiffness_n_per_m: Vec<Vec<f64>>,
    /// C = Φ⁻ᵀ·diag(2ζω)·Φ⁻¹, row by row, in N·s/m.
    pub damping_n_s_per_m: Vec<Vec<f64>>,
    /// Mass-normalised mode shapes, `shapes[r][floor − 1]`, in 1/√kg.
    pub shapes: Vec<Vec<f64>>,
    /// Largest |M_ij| (i ≠ j) over the largest M_ii: 0 for a lumped-mass chain; large values
    /// say the modes are not those of a chain (or are noisy).
    pub mass_off_diagonal_ratio: f64,
    /// ‖K − K_chain‖_F / ‖K‖_F for the least-squares chain stiffnesses below.
    pub stiffness_chain_misfit: f64,
    /// The nearest shear building: masses from diag(M), storey stiffnesses by least squares
    /// on the chain pattern of K, modal damping with the identified ratios.
    pub config: ShearBuildingConfig,
}

/// Rebuilds M, K, C of an N-floor chain from N identified modes measured at all N floors.
///
/// `input_floor` is where the force entered and `output_floors[c]` is channel `c`'s floor;
/// the driving-point constant A_kk = φ_k² gives φ_k = √A_kk (Re A_kk must be positive) and
/// every other floor φ_j = A_jk/φ_k, so Φ is mass-normalised without any assumed modal
/// mass. Then M = Φ⁻ᵀΦ⁻¹, K = Φ⁻ᵀ·diag(ω_r²)·Φ⁻¹ and C = Φ⁻ᵀ·diag(2ζ_rω_r)·Φ⁻¹ (real parts
/// of the modal constants; complexity is ignored).
///
/// # Errors
/// [`CalibrateError::Invalid`] when the modes and channels do not make a square, complete
/// set; [`CalibrateError::NotIdentifiable`] when a driving-point constant is not positive or
/// Φ is singular.
pub fn model_from_modes(
    modes: &[IdentifiedMode],
    input_floor: usize,
    output_floors: &[usize],
) -> Result<SpatialModel, CalibrateError> {
    let n = modes.len();
    let mut problems = Vec::new();
    if n == 0 {
        problems.push("no modes given".into());
    }
    let mut sorted_floors = output_floors.to_vec();
    sorted_floors.sort_unstable();
    if sorted_floors != (1..=n).collect::<Vec<_>>() {
        problems.push(format!(
            "output floors {output_floors:?} must be exactly floors 1..={n}, one channel each, \
             to rebuild a {n}-floor model from {n} modes"
        ));
    }
    let driving = output_floors.iter().position(|&f| f == input_floor);
    if driving.is_none() {
        problems.push(format!(
            "no channel measures the input floor {input_floor}: the driving point fixes the \
             modal mass"
        ));
    }
    for (r, m) in modes.iter().enumerate() {
        if m.modal_constants_per_kg.len() != output_floors.len() {
            problems.push(format!(
                "mode {r} has {} modal constants for {} channels",
                m.modal_constants_per_kg.len(),
                output_floors.len()
            ));
        }
        if !(m.natural_frequency_hz.is_finite() && m.natural_frequency_hz > 0.0) {
            problems.push(format!(
                "mode {r}: natural frequency {} Hz must be positive",
                m.natural_frequency_hz
            ));
        }
        if !(m.damping_ratio.is_finite() && m.damping_ratio >= 0.0 && m.damping_ratio < 1.0) {
            problems.push(format!(
                "mode {r}: damping ratio {} must lie in [0, 1)",
                m.damping_ratio
            ));
        }
        if m.modal_constants_per_kg
            .iter()
            .flatten()
            .any(|x| !x.is_finite())
        {
            problems.push(format!("mode {r} has a modal constant that is not finite"));
        }
    }
    check(problems)?;
    let driving = driving.unwrap_or(0);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        modes[a]
            .natural_frequency_hz
            .total_cmp(&modes[b].natural_frequency_hz)
    });
    let mut phi = DMatrix::zeros(n, n);
    for (col, &r) in order.iter().enumerate() {
        let a = &modes[r].modal_constants_per_kg;
        let a_kk = a[driving][0];
        if a_kk.is_nan() || a_kk <= 0.0 {
            return Err(CalibrateError::NotIdentifiable(format!(
                "mode at {:.4} Hz: the driving-point modal constant {a_kk} 1/kg is not \
                 positive, so φ_in = √A_kk does not exist (wrong input floor, or a mode the \
                 driving point does not see)",
                modes[r].natural_frequency_hz
            )));
        }
        let phi_k = a_kk.sqrt();
        for (c, &floor) in output_floors.iter().enumerate() {
            phi[(floor - 1, col)] = a[c][0] / phi_k;
        }
    }
    // Shapes that are (nearly) parallel make Φ⁻¹ meaningless: refuse beyond a condition
    // number no 3- to 10-floor chain approaches (its Φ is M^{-1/2}·orthogonal).
    let singular = phi.singular_values();
    let condition = singular.max() / singular.min();
    let phi_inv = phi
        .clone()
        .try_inverse()
        .filter(|_| condition.is_finite() && condition < 1e10)
        .ok_or_else(|| {
            CalibrateError::NotIdentifiable(format!(
                "the identified mode shapes are linearly dependent (Φ has condition number                  {condition:.2e})"
            ))
        })?;
    let omegas: Vec<f64> = order
        .iter()
        .map(|&r| std::f64::consts::TAU * modes[r].natural_frequency_hz)
        .collect();
    let zetas: Vec<f64> = order.iter().map(|&r| modes[r].damping_ratio).collect();
    let sandwich = |d: DVector<f64>| {
        let m = phi_inv.transpose() * DMatrix::from_diagonal(&d) * &phi_inv;
        (&m + m.transpose()) * 0.5
    };
    let mass = sandwich(DVector::from_element(n, 1.0));
    let stiffness = sandwich(DVector::from_iterator(n, omegas.iter().map(|w| w * w)));
    let damping = sandwich(DVector::from_iterator(
        n,
        omegas.iter().zip(&zetas).map(|(w, z)| 2.0 * z * w),
    ));
    let max_diag = (0..n).map(|i| mass[(i, i)]).fold(0.0, f64::max);
    let mut max_off: f64 = 0.0;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                max_off = max_off.max(mass[(i, j)].abs());
            }
        }
    }
    let storey = chain_stiffness_fit(&stiffness)?;
    let chain = chain_matrix(&storey);
    let misfit = (&stiffness - &chain).norm() / stiffness.norm();
    let masses: Vec<f64> = (0..n).map(|i| mass[(i, i)]).collect();
    let to_rows = |m: &DMatrix<f64>| -> Vec<Vec<f64>> {
        (0..m.nrows())
            .map(|i| m.row(i).iter().copied().collect())
            .collect()
    };
    Ok(SpatialModel {
        mass_kg: to_rows(&mass),
        stiffness_n_per_m: to_rows(&stiffness),
        damping_n_s_per_m: to_rows(&damping),
        shapes: (0..n)
            .map(|c| phi.column(c).iter().copied().collect())
            .collect(),
        mass_off_diagonal_ratio: if max_diag > 0.0 {
            max_off / max_diag
        } else {
            f64::INFINITY
        },
        stiffness_chain_misfit: misfit,
        config: ShearBuildingConfig {
            floor_masses_kg: masses,
            storey_stiffness_n_per_m: storey,
            damping: Damping::Modal { zetas },
            actuator: None,
        },
    })
}

/// K of a fixed-base chain: storey i joins floor i to floor i − 1 (the ground for i = 1).
pub(crate) fn chain_matrix(storey_n_per_m: &[f64]) -> DMatrix<f64> {
    let n = storey_n_per_m.len();
    let mut k = DMatrix::zeros(n, n);
    for (i, &s) in storey_n_per_m.iter().enumerate() {
        k[(i, i)] += s;
        if i > 0 {
            k[(i - 1, i - 1)] += s;
            k[(i - 1, i)] -= s;
            k[(i, i - 1)] -= s;
        }
    }
    k
}

/// Storey stiffnesses whose chain matrix is nearest K in the Frobenius norm (a linear least
/// squares problem: K is linear in the storey stiffnesses).
fn chain_stiffness_fit(stiffness: &DMatrix<f64>) -> Result<Vec<f64>, CalibrateError> {
    let n = stiffness.nrows();
    let mut a = DMatrix::zeros(n * n, n);
    for s in 0..n {
        let mut unit = vec![0.0; n];
        unit[s] = 1.0;
        let basis = chain_matrix(&unit);
        for (row, value) in basis.iter().enumerate() {
            a[(row, s)] = *value;
        }
    }
    let b = DVector::from_iterator(n * n, stiffness.iter().copied());
    let solution = a
        .svd(true, true)
        .solve(&b, 1e-14)
        .map_err(|e| CalibrateError::Numerical(format!("chain stiffness fit: {e}")))?;
    Ok(solution.iter().copied().collect())
}

/// Refuses a result with a non-finite number instead of handing it on as an answer.
pub(crate) fn ensure_finite(modes: &[IdentifiedMode], method: &str) -> Result<(), CalibrateError> {
    match modes.iter().position(|m| !m.is_finite()) {
        Some(r) => Err(CalibrateError::Numerical(format!(
            "{method} produced a non-finite estimate for mode {r}; the data around it may be \
             degenerate"
        ))),
        None => Ok(()),
    }
}
