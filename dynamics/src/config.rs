//! Owns the description of a shear building (masses, storey stiffnesses, damping, actuator),
//! its serde shape and its validation. Builds no matrices: that is `model.rs`.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Number of storeys of the Southampton laboratory building.
pub const SOUTHAMPTON_FLOORS: usize = 3;
/// Mass of one Southampton floor (plate plus fixings), in kg.
pub const SOUTHAMPTON_FLOOR_MASS_KG: f64 = 5.201;
/// Young's modulus of the aluminium columns, in Pa.
pub const SOUTHAMPTON_COLUMN_YOUNGS_MODULUS_PA: f64 = 70e9;
/// Column width (the dimension that does not bend), in m.
pub const SOUTHAMPTON_COLUMN_WIDTH_M: f64 = 0.025;
/// Column thickness (the bending dimension), in m.
pub const SOUTHAMPTON_COLUMN_THICKNESS_M: f64 = 0.003;
/// Free column length between two floors, in m.
pub const SOUTHAMPTON_COLUMN_LENGTH_M: f64 = 0.1533;
/// Columns per storey; they act in parallel.
pub const SOUTHAMPTON_COLUMNS_PER_STOREY: f64 = 4.0;
/// Second moment of area of one column, b·h³/12, in m⁴.
pub const SOUTHAMPTON_COLUMN_SECOND_MOMENT_M4: f64 = SOUTHAMPTON_COLUMN_WIDTH_M
    * SOUTHAMPTON_COLUMN_THICKNESS_M
    * SOUTHAMPTON_COLUMN_THICKNESS_M
    * SOUTHAMPTON_COLUMN_THICKNESS_M
    / 12.0;
/// Storey stiffness: each column is clamped at both ends (floors do not rotate), so it
/// contributes 12·E·J/l³, and the storey has four of them.
pub const SOUTHAMPTON_STOREY_STIFFNESS_N_PER_M: f64 = SOUTHAMPTON_COLUMNS_PER_STOREY
    * 12.0
    * SOUTHAMPTON_COLUMN_YOUNGS_MODULUS_PA
    * SOUTHAMPTON_COLUMN_SECOND_MOMENT_M4
    / (SOUTHAMPTON_COLUMN_LENGTH_M * SOUTHAMPTON_COLUMN_LENGTH_M * SOUTHAMPTON_COLUMN_LENGTH_M);
/// Damping ratio the Southampton model gives its first two modes (0.2 %, lightly damped
/// aluminium frame).
pub const SOUTHAMPTON_DAMPING_RATIO: f64 = 0.002;

/// Default mass of the actuator's housing, which is bolted to its host floor, in kg.
pub const fn default_actuator_base_mass_kg() -> f64 {
    0.5
}
/// Default moving (proof) mass of the actuator, in kg.
pub const fn default_actuator_proof_mass_kg() -> f64 {
    1.0
}
/// Default suspension stiffness between proof mass and housing, in N/m (about 6.5 Hz with
/// the default proof mass).
pub const fn default_actuator_stiffness_n_per_m() -> f64 {
    1670.0
}
/// Default suspension damping between proof mass and housing, in N·s/m.
pub const fn default_actuator_damping_n_s_per_m() -> f64 {
    5.0
}
/// Floor that `InertialActuator::default()` sits on; floor 1 exists in every building.
pub const fn default_actuator_floor() -> usize {
    1
}

/// How the structure (floors and storeys, not the actuator) dissipates energy.
///
/// Every variant defines the damping of the *bare* structure: floor masses and storey
/// stiffnesses only, without the actuator's housing or proof mass. Bolting an actuator on
/// adds inertia, not structural damping, so the structural damping matrix stays the same and
/// the actuator's own damper is added on top of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Damping {
    /// C = α·M + β·K with the coefficients given directly.
    Rayleigh {
        /// Mass-proportional coefficient α, in 1/s.
        alpha_per_s: f64,
        /// Stiffness-proportional coefficient β, in s.
        beta_s: f64,
    },
    /// Rayleigh damping whose α and β are chosen so that two modes get the same ratio.
    RayleighModes {
        /// Damping ratio (fraction of critical, not percent) of modes `mode_a` and `mode_b`.
        zeta: f64,
        /// First mode to match, 1-based, counted from the lowest frequency of the bare structure.
        mode_a: usize,
        /// Second mode to match, 1-based; must differ from `mode_a`.
        mode_b: usize,
    },
    /// Classical modal damping: each mode of the bare structure gets its own ratio,
    /// C = M·Φ·diag(2·ζ_r·ω_r)·Φᵀ·M with mass-normalised Φ.
    Modal {
        /// One damping ratio per mode, lowest frequency first; one entry per floor.
        zetas: Vec<f64>,
    },
    /// One viscous damper per storey, alongside its spring: C has the pattern of K (storey
    /// `i`'s damper joins floor `i` to the floor below, the ground for storey 1). This is the
    /// damping of Cristallo's 3-DOF chain (TOOLS.md §3.1); it is not classical in general.
    StoreyDampers {
        /// Damping coefficient of each storey, lowest first, in N·s/m; zero or positive, one
        /// entry per floor.
        storey_damping_n_s_per_m: Vec<f64>,
    },
    /// An explicit damping matrix of the bare structure (floors only, N×N, row by row), in
    /// N·s/m. It must be symmetric and positive semi-definite, or the model would create
    /// energy.
    Matrix {
        /// C, row by row: N rows of N entries.
        matrix_n_s_per_m: Vec<Vec<f64>>,
    },
}

/// Relative tolerance of the symmetry and semi-definiteness checks of an explicit damping
/// matrix: entries typed to ~12 digits must pass, a genuinely indefinite matrix must not.
const DAMPING_MATRIX_TOLERANCE: f64 = 1e-9;

/// An inertial (proof-mass) actuator fitted to one floor.
///
/// The housing moves with its host floor. The proof mass is an extra degree of freedom tied
/// to the host floor by a spring and a damper. The coil force acts `+f` on the proof mass
/// and `−f` on the host floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InertialActuator {
    /// Host floor, 1-based (1 = lowest floor above the ground). Required in config files,
    /// because placement is the decision that matters.
    pub floor: usize,
    /// Housing mass, in kg. It is added to the host floor's mass.
    #[serde(default = "default_actuator_base_mass_kg")]
    pub base_mass_kg: f64,
    /// Moving mass that the coil pushes against, in kg.
    #[serde(default = "default_actuator_proof_mass_kg")]
    pub proof_mass_kg: f64,
    /// Suspension stiffness between proof mass and host floor, in N/m.
    #[serde(default = "default_actuator_stiffness_n_per_m")]
    pub stiffness_n_per_m: f64,
    /// Suspension damping between proof mass and host floor, in N·s/m.
    #[serde(default = "default_actuator_damping_n_s_per_m")]
    pub damping_n_s_per_m: f64,
}

impl Default for InertialActuator {
    fn default() -> Self {
        Self {
            floor: default_actuator_floor(),
            base_mass_kg: default_actuator_base_mass_kg(),
            proof_mass_kg: default_actuator_proof_mass_kg(),
            stiffness_n_per_m: default_actuator_stiffness_n_per_m(),
            damping_n_s_per_m: default_actuator_damping_n_s_per_m(),
        }
    }
}

/// Description of an N-storey shear building on a fixed (or shaken) base.
///
/// Floor `i` (1-based) is joined to floor `i − 1` by storey `i`; floor 0 is the ground.
/// Validate with [`ShearBuildingConfig::validate`]; `ShearBuilding::new` does so too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShearBuildingConfig {
    /// Mass of each floor, lowest first, in kg. Its length is the number of floors.
    pub floor_masses_kg: Vec<f64>,
    /// Lateral stiffness of each storey, lowest first, in N/m. Entry `i` joins floor `i + 1`
    /// to the floor below (or to the ground).
    pub storey_stiffness_n_per_m: Vec<f64>,
    /// Damping of the bare structure.
    pub damping: Damping,
    /// Inertial actuator, if one is fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator: Option<InertialActuator>,
}

impl ShearBuildingConfig {
    /// The Southampton three-storey aluminium building without an actuator.
    pub fn southampton() -> Self {
        Self {
            floor_masses_kg: vec![SOUTHAMPTON_FLOOR_MASS_KG; SOUTHAMPTON_FLOORS],
            storey_stiffness_n_per_m: vec![
                SOUTHAMPTON_STOREY_STIFFNESS_N_PER_M;
                SOUTHAMPTON_FLOORS
            ],
            damping: Damping::RayleighModes {
                zeta: SOUTHAMPTON_DAMPING_RATIO,
                mode_a: 1,
                mode_b: 2,
            },
            actuator: None,
        }
    }

    /// Number of floors described by the masses.
    pub fn floors(&self) -> usize {
        self.floor_masses_kg.len()
    }

    /// Every rule this config breaks, as sentences; empty when it is valid. Callers that
    /// embed this config in a larger one can merge these with their own problems.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let floors = self.floors();
        if floors == 0 {
            problems.push("floor_masses_kg is empty: a building needs at least one floor".into());
        }
        if self.storey_stiffness_n_per_m.len() != floors {
            problems.push(format!(
                "storey_stiffness_n_per_m has {} entries but floor_masses_kg has {floors}: \
                 give one storey per floor",
                self.storey_stiffness_n_per_m.len()
            ));
        }
        for (i, &m) in self.floor_masses_kg.iter().enumerate() {
            if !is_positive(m) {
                problems.push(format!(
                    "floor_masses_kg[{i}] = {m} must be positive and finite"
                ));
            }
        }
        for (i, &k) in self.storey_stiffness_n_per_m.iter().enumerate() {
            if !is_positive(k) {
                problems.push(format!(
                    "storey_stiffness_n_per_m[{i}] = {k} must be positive and finite \
                     (otherwise the stiffness matrix is not positive definite)"
                ));
            }
        }
        damping_problems(&self.damping, floors, &mut problems);
        if let Some(actuator) = &self.actuator {
            actuator_problems(actuator, floors, &mut problems);
        }
        problems
    }

    /// Checks every rule at once.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] listing every problem found.
    pub fn validate(&self) -> Result<(), ModelError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Invalid(problems))
        }
    }
}

impl Default for ShearBuildingConfig {
    fn default() -> Self {
        Self::southampton()
    }
}

fn is_positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn is_non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn is_damping_ratio(zeta: f64) -> bool {
    // Rejects NaN too, because NaN is in no range.
    (0.0..1.0).contains(&zeta)
}

fn damping_problems(damping: &Damping, floors: usize, problems: &mut Vec<String>) {
    match damping {
        Damping::Rayleigh {
            alpha_per_s,
            beta_s,
        } => {
            if !is_non_negative(*alpha_per_s) {
                problems.push(format!(
                    "damping.alpha_per_s = {alpha_per_s} must be zero or positive and finite"
                ));
            }
            if !is_non_negative(*beta_s) {
                problems.push(format!(
                    "damping.beta_s = {beta_s} must be zero or positive and finite"
                ));
            }
        }
        Damping::RayleighModes {
            zeta,
            mode_a,
            mode_b,
        } => {
            if !is_damping_ratio(*zeta) {
                problems.push(format!("damping.zeta = {zeta} must be within [0, 1)"));
            }
            for (name, mode) in [("mode_a", mode_a), ("mode_b", mode_b)] {
                if !(1..=floors).contains(mode) {
                    problems.push(format!(
                        "damping.{name} = {mode} must be a 1-based mode number within 1..={floors}"
                    ));
                }
            }
            if mode_a == mode_b {
                problems.push(format!(
                    "damping.mode_a and damping.mode_b are both {mode_a}: two different modes \
                     are needed to fix α and β (use kind = \"modal\" to set one mode)"
                ));
            }
        }
        Damping::StoreyDampers {
            storey_damping_n_s_per_m,
        } => {
            if storey_damping_n_s_per_m.len() != floors {
                problems.push(format!(
                    "damping.storey_damping_n_s_per_m has {} entries but the building has \
                     {floors} storeys: give one damper per storey",
                    storey_damping_n_s_per_m.len()
                ));
            }
            for (i, c) in storey_damping_n_s_per_m.iter().enumerate() {
                if !is_non_negative(*c) {
                    problems.push(format!(
                        "damping.storey_damping_n_s_per_m[{i}] = {c} must be zero or positive \
                         and finite"
                    ));
                }
            }
        }
        Damping::Matrix { matrix_n_s_per_m } => {
            damping_matrix_problems(matrix_n_s_per_m, floors, problems);
        }
        Damping::Modal { zetas } => {
            if zetas.len() != floors {
                problems.push(format!(
                    "damping.zetas has {} entries but the building has {floors} modes",
                    zetas.len()
                ));
            }
            for (i, zeta) in zetas.iter().enumerate() {
                if !is_damping_ratio(*zeta) {
                    problems.push(format!("damping.zetas[{i}] = {zeta} must be within [0, 1)"));
                }
            }
        }
    }
}

/// An explicit damping matrix must be N×N, finite, symmetric and positive semi-definite.
fn damping_matrix_problems(rows: &[Vec<f64>], floors: usize, problems: &mut Vec<String>) {
    let before = problems.len();
    if rows.len() != floors {
        problems.push(format!(
            "damping.matrix_n_s_per_m has {} rows but the building has {floors} floors: \
             give an N×N matrix of the bare structure",
            rows.len()
        ));
    }
    for (r, row) in rows.iter().enumerate() {
        if row.len() != floors {
            problems.push(format!(
                "damping.matrix_n_s_per_m[{r}] has {} entries; every row needs {floors}",
                row.len()
            ));
        }
        for (c, value) in row.iter().enumerate() {
            if !value.is_finite() {
                problems.push(format!(
                    "damping.matrix_n_s_per_m[{r}][{c}] = {value} must be finite"
                ));
            }
        }
    }
    if problems.len() > before || floors == 0 {
        return;
    }
    let c = nalgebra::DMatrix::from_fn(floors, floors, |r, col| rows[r][col]);
    let scale = c.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    for r in 0..floors {
        for col in r + 1..floors {
            if (c[(r, col)] - c[(col, r)]).abs() > DAMPING_MATRIX_TOLERANCE * scale {
                problems.push(format!(
                    "damping.matrix_n_s_per_m is not symmetric: [{r}][{col}] = {} but \
                     [{col}][{r}] = {}",
                    c[(r, col)],
                    c[(col, r)]
                ));
            }
        }
    }
    if problems.len() > before {
        return;
    }
    let lowest = nalgebra::SymmetricEigen::new(c)
        .eigenvalues
        .iter()
        .fold(f64::INFINITY, |m, v| m.min(*v));
    if lowest < -DAMPING_MATRIX_TOLERANCE * scale {
        problems.push(format!(
            "damping.matrix_n_s_per_m is not positive semi-definite (lowest eigenvalue \
             {lowest:.6e} N·s/m): such a damper would feed energy into the structure"
        ));
    }
}

fn actuator_problems(actuator: &InertialActuator, floors: usize, problems: &mut Vec<String>) {
    if !(1..=floors).contains(&actuator.floor) {
        problems.push(format!(
            "actuator.floor = {} must be a 1-based floor within 1..={floors}",
            actuator.floor
        ));
    }
    // A zero housing mass is allowed: some users fold it into the floor mass already.
    if !is_non_negative(actuator.base_mass_kg) {
        problems.push(format!(
            "actuator.base_mass_kg = {} must be zero or positive and finite",
            actuator.base_mass_kg
        ));
    }
    if !is_positive(actuator.proof_mass_kg) {
        problems.push(format!(
            "actuator.proof_mass_kg = {} must be positive and finite",
            actuator.proof_mass_kg
        ));
    }
    if !is_positive(actuator.stiffness_n_per_m) {
        problems.push(format!(
            "actuator.stiffness_n_per_m = {} must be positive and finite",
            actuator.stiffness_n_per_m
        ));
    }
    if !is_non_negative(actuator.damping_n_s_per_m) {
        problems.push(format!(
            "actuator.damping_n_s_per_m = {} must be zero or positive and finite",
            actuator.damping_n_s_per_m
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn southampton_config_is_valid() {
        assert_eq!(
            ShearBuildingConfig::southampton().problems(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn southampton_stiffness_is_about_52_460_n_per_m() {
        // The published figure is rounded to four significant digits.
        assert!((SOUTHAMPTON_STOREY_STIFFNESS_N_PER_M - 52_460.0).abs() < 5.0);
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let config = ShearBuildingConfig {
            floor_masses_kg: vec![5.0, -1.0, f64::NAN],
            storey_stiffness_n_per_m: vec![1000.0, 0.0],
            damping: Damping::Modal {
                zetas: vec![0.01, 1.0],
            },
            actuator: Some(InertialActuator {
                floor: 4,
                proof_mass_kg: 0.0,
                ..InertialActuator::default()
            }),
        };
        let Err(ModelError::Invalid(problems)) = config.validate() else {
            panic!("an invalid config passed validation");
        };
        let expected = [
            "storey_stiffness_n_per_m has 2 entries",
            "floor_masses_kg[1]",
            "floor_masses_kg[2]",
            "storey_stiffness_n_per_m[1]",
            "damping.zetas has 2 entries",
            "damping.zetas[1]",
            "actuator.floor = 4",
            "actuator.proof_mass_kg",
        ];
        for needle in expected {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "missing problem {needle:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn rejects_an_empty_building_and_equal_rayleigh_modes() {
        let config = ShearBuildingConfig {
            floor_masses_kg: vec![],
            storey_stiffness_n_per_m: vec![],
            damping: Damping::RayleighModes {
                zeta: -0.1,
                mode_a: 1,
                mode_b: 1,
            },
            actuator: None,
        };
        let problems = config.problems();
        assert!(problems.iter().any(|p| p.contains("at least one floor")));
        assert!(problems.iter().any(|p| p.contains("damping.zeta")));
        assert!(problems.iter().any(|p| p.contains("damping.mode_a = 1")));
        assert!(problems.iter().any(|p| p.contains("both 1")));
    }

    #[test]
    fn parses_a_toml_building_with_actuator_defaults() {
        let text = r#"
            floor_masses_kg = [5.201, 5.201]
            storey_stiffness_n_per_m = [52460.0, 52460.0]
            [damping]
            kind = "rayleigh_modes"
            zeta = 0.002
            mode_a = 1
            mode_b = 2
            [actuator]
            floor = 2
        "#;
        let config: ShearBuildingConfig = toml::from_str(text).expect("valid TOML");
        config.validate().expect("valid config");
        assert_eq!(
            config.actuator,
            Some(InertialActuator {
                floor: 2,
                ..InertialActuator::default()
            })
        );
    }

    #[test]
    fn rejects_unknown_fields_in_toml() {
        let typo_top = r#"
            floor_masses_kg = [1.0]
            storey_stiffness_n_per_m = [1.0]
            stiffnes = 3
            damping = { kind = "modal", zetas = [0.01] }
        "#;
        assert!(toml::from_str::<ShearBuildingConfig>(typo_top).is_err());
        let typo_damping = r#"
            floor_masses_kg = [1.0]
            storey_stiffness_n_per_m = [1.0]
            damping = { kind = "modal", zetas = [0.01], zeta = 0.1 }
        "#;
        assert!(toml::from_str::<ShearBuildingConfig>(typo_damping).is_err());
        let typo_actuator = r#"
            floor_masses_kg = [1.0]
            storey_stiffness_n_per_m = [1.0]
            damping = { kind = "modal", zetas = [0.01] }
            actuator = { floor = 1, proof_mass = 2.0 }
        "#;
        assert!(toml::from_str::<ShearBuildingConfig>(typo_actuator).is_err());
    }

    #[test]
    fn default_config_round_trips_through_toml() {
        let config = ShearBuildingConfig {
            actuator: Some(InertialActuator::default()),
            ..ShearBuildingConfig::default()
        };
        let text = toml::to_string(&config).expect("serializable");
        let back: ShearBuildingConfig = toml::from_str(&text).expect("parses its own output");
        assert_eq!(back, config);
    }
}
