//! Owns the condensation of the frame to the shear chain: the static (Guyan) condensation of
//! the stiffness onto one lateral translation per floor, and the storey stiffnesses read from
//! it by unit storey drifts, ready as a `dtop_dynamics::ShearBuildingConfig`.
//!
//! Condensation keeps the floors' translations along one axis and lets every other DOF take
//! its static equilibrium: K_c = K_rr − K_ro·K_oo⁻¹·K_or. The storey stiffness k_i is the
//! shear in storey i when storey i alone drifts by one (floors i..N move by 1, floors below
//! stay): k_i = Σ_{j ≥ i, l ≥ i} K_c[j, l]. For a true shear chain this returns its storey
//! stiffnesses exactly; a frame whose floors rock (legs' axial strain) couples non-adjacent
//! floors, and `non_chain_fraction` says how much of K_c the chain cannot represent.

use dtop_dynamics::{Damping, ShearBuildingConfig};
use nalgebra::{Cholesky, DMatrix};
use serde::{Deserialize, Serialize};

use crate::config::PlanAxis;
use crate::error::FeError;
use crate::frame::FrameModel;

/// What the floors may do besides translating along the chosen axis while the frame is
/// condensed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorMotion {
    /// The shear-building idealisation: the floors only translate along the axis (their
    /// other translations and all rotations are held), so each leg is clamped–guided and a
    /// storey of four legs has exactly 4·12·E·J/l³.
    TranslationOnly,
    /// The floors find their own rotations and other translations (rocking on the legs'
    /// axial stiffness, for instance), as they do in the frame.
    Free,
}

/// The frame condensed to one lateral DOF per floor, and the shear chain read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShearCondensation {
    /// Axis of the floors' kept translation.
    pub axis: PlanAxis,
    /// What the floors could do besides.
    pub floor_motion: FloorMotion,
    /// Condensed stiffness K_c (N × N, row by row, lowest floor first), in N/m.
    pub condensed_stiffness_n_per_m: Vec<Vec<f64>>,
    /// Storey stiffnesses by unit storey drifts, lowest first, in N/m.
    pub storey_stiffness_n_per_m: Vec<f64>,
    /// Floor masses for the chain (the rigid plates only, as in the Southampton shear model;
    /// the legs' mass is left out), in kg.
    pub floor_masses_kg: Vec<f64>,
    /// ‖K_c − K_chain‖_F / ‖K_c‖_F: 0 for a frame that is exactly a shear chain.
    pub non_chain_fraction: f64,
}

impl ShearCondensation {
    /// The shear building with these storey stiffnesses and floor masses, and the given
    /// damping (the frame model has none), ready to be proposed as a model version.
    pub fn shear_building_config(&self, damping: Damping) -> ShearBuildingConfig {
        ShearBuildingConfig {
            floor_masses_kg: self.floor_masses_kg.clone(),
            storey_stiffness_n_per_m: self.storey_stiffness_n_per_m.clone(),
            damping,
            actuator: None,
        }
    }
}

/// Static condensation K_rr − K_ro·K_oo⁻¹·K_or of a symmetric stiffness onto `retained`
/// DOFs, after deleting (holding at zero) the `held` DOFs. Every other DOF is condensed.
///
/// # Errors
/// [`FeError::Numerical`] if K_oo is not positive definite (a mechanism among the
/// condensed DOFs).
pub(crate) fn condense(
    stiffness: &DMatrix<f64>,
    retained: &[usize],
    held: &[usize],
) -> Result<DMatrix<f64>, FeError> {
    let n = stiffness.nrows();
    let other: Vec<usize> = (0..n)
        .filter(|i| !retained.contains(i) && !held.contains(i))
        .collect();
    let pick = |rows: &[usize], cols: &[usize]| {
        DMatrix::from_fn(rows.len(), cols.len(), |r, c| stiffness[(rows[r], cols[c])])
    };
    let k_rr = pick(retained, retained);
    if other.is_empty() {
        return Ok(k_rr);
    }
    let k_ro = pick(retained, &other);
    let k_oo = pick(&other, &other);
    let factor = Cholesky::new(k_oo).ok_or_else(|| {
        FeError::Numerical(
            "the condensed DOFs' stiffness is not positive definite (a mechanism)".to_owned(),
        )
    })?;
    let solved = factor.solve(&k_ro.transpose());
    let condensed = k_rr - &k_ro * solved;
    Ok((&condensed + condensed.transpose()) * 0.5)
}

/// Storey stiffnesses by unit storey drifts: k_i = Σ_{j ≥ i, l ≥ i} K_c[j, l].
pub(crate) fn storey_stiffnesses(condensed: &DMatrix<f64>) -> Vec<f64> {
    let n = condensed.nrows();
    (0..n)
        .map(|i| condensed.view((i, i), (n - i, n - i)).sum())
        .collect()
}

/// The tridiagonal stiffness of a shear chain on a fixed base.
pub(crate) fn chain_stiffness(storeys: &[f64]) -> DMatrix<f64> {
    let n = storeys.len();
    let mut k = DMatrix::zeros(n, n);
    for (i, &ki) in storeys.iter().enumerate() {
        k[(i, i)] += ki;
        if i > 0 {
            k[(i - 1, i - 1)] += ki;
            k[(i - 1, i)] -= ki;
            k[(i, i - 1)] -= ki;
        }
    }
    k
}

impl FrameModel {
    /// Condenses the frame onto its floors' translations along `axis` and reads the shear
    /// chain's storey stiffnesses from it.
    ///
    /// # Errors
    /// [`FeError::Numerical`] if the frame has a mechanism (it has none when valid).
    pub fn condense_to_shear_chain(
        &self,
        axis: PlanAxis,
        floor_motion: FloorMotion,
    ) -> Result<ShearCondensation, FeError> {
        let assembled = self.assembled();
        let along = Self::axis_dof(axis);
        let retained: Vec<usize> = assembled
            .floor_starts
            .iter()
            .map(|start| start + along)
            .collect();
        let held: Vec<usize> = match floor_motion {
            FloorMotion::Free => Vec::new(),
            FloorMotion::TranslationOnly => assembled
                .floor_starts
                .iter()
                .flat_map(|start| (0..6).filter(|&d| d != along).map(move |d| start + d))
                .collect(),
        };
        let condensed = condense(&assembled.stiffness, &retained, &held)?;
        let storeys = storey_stiffnesses(&condensed);
        let chain = chain_stiffness(&storeys);
        let non_chain_fraction = (&condensed - chain).norm() / condensed.norm();
        let condensed_rows = condensed
            .row_iter()
            .map(|row| row.iter().copied().collect())
            .collect();
        Ok(ShearCondensation {
            axis,
            floor_motion,
            condensed_stiffness_n_per_m: condensed_rows,
            storey_stiffness_n_per_m: storeys,
            floor_masses_kg: vec![self.config().floor.mass(); self.config().storeys()],
            non_chain_fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit storey drifts return a chain's own storey stiffnesses.
    #[test]
    fn unit_storey_drifts_recover_a_chains_storey_stiffnesses() {
        let storeys = [3.0e4, 2.0e4, 1.0e4];
        let found = storey_stiffnesses(&chain_stiffness(&storeys));
        for (a, b) in found.iter().zip(storeys) {
            assert!((a - b).abs() < 1e-9 * b);
        }
    }

    /// Condensing a two-spring series chain onto its end gives k₁k₂/(k₁ + k₂).
    #[test]
    fn condensing_springs_in_series_gives_their_series_stiffness() {
        let k = chain_stiffness(&[3.0, 6.0]);
        let condensed = condense(&k, &[1], &[]).unwrap_or_else(|_| DMatrix::zeros(1, 1));
        assert!((condensed[(0, 0)] - 2.0).abs() < 1e-12);
    }
}
