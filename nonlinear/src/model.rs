//! Owns the nonlinear chain: its serde description (a linear shear building from
//! `dtop_dynamics`, polynomial springs, the forced floor), its validation, and the restoring
//! force and tangent stiffness of the springs. Knows nothing of harmonics or continuation.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig};

use crate::error::NonlinearError;

/// Cristallo's floor mass (TOOLS.md §5.1), in kg.
pub const CRISTALLO_FLOOR_MASS_KG: f64 = 0.2;
/// Cristallo's storey stiffness, in N/m.
pub const CRISTALLO_STOREY_STIFFNESS_N_PER_M: f64 = 200.0;
/// Cristallo's storey damper, in N·s/m.
pub const CRISTALLO_STOREY_DAMPING_N_S_PER_M: f64 = 0.1;
/// Cristallo's cubic stiffness between floor 1 and the ground, in N/m³ (hardening).
pub const CRISTALLO_CUBIC_N_PER_M3: f64 = 200.0;
/// Cristallo's forcing amplitude of its frequency sweep, in N.
pub const CRISTALLO_FORCING_N: f64 = 10.0;
/// Number of floors of Cristallo's chain.
pub const CRISTALLO_FLOORS: usize = 3;

/// What a polynomial spring joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpringLink {
    /// Storey `storey` (1-based): floor `storey` to the floor below (the ground for storey 1).
    /// The spring sees the inter-storey drift.
    Storey {
        /// 1-based storey number, within 1..=N.
        storey: usize,
    },
    /// Floor `floor` (1-based) to the ground: the spring sees the floor's own displacement.
    /// For floor 1 this is the same element as storey 1.
    FloorToGround {
        /// 1-based floor number, within 1..=N.
        floor: usize,
    },
}

/// A polynomial spring f(δ) = k₂·δ² + k₃·δ³ + k₅·δ⁵ on top of the linear chain, where δ is
/// the extension of the link (upper floor minus lower floor, or the floor's displacement).
///
/// Sign convention: f is a restoring force like the linear spring's k·δ. It pushes the upper
/// floor by −f and the lower floor by +f, so a positive cubic coefficient hardens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolynomialSpring {
    /// Where the spring sits.
    pub link: SpringLink,
    /// Quadratic coefficient k₂, in N/m² (asymmetric stiffness; zero for none).
    #[serde(default)]
    pub quadratic_n_per_m2: f64,
    /// Cubic coefficient k₃, in N/m³ (positive hardens, negative softens).
    #[serde(default)]
    pub cubic_n_per_m3: f64,
    /// Quintic coefficient k₅, in N/m⁵.
    #[serde(default)]
    pub quintic_n_per_m5: f64,
}

impl PolynomialSpring {
    /// Highest power with a non-zero coefficient (1 when the spring adds nothing).
    pub fn degree(&self) -> usize {
        if self.quintic_n_per_m5 != 0.0 {
            5
        } else if self.cubic_n_per_m3 != 0.0 {
            3
        } else if self.quadratic_n_per_m2 != 0.0 {
            2
        } else {
            1
        }
    }

    /// Restoring force f(δ), in N.
    pub fn force_n(&self, extension_m: f64) -> f64 {
        let d = extension_m;
        let d2 = d * d;
        d2 * (self.quadratic_n_per_m2 + d * (self.cubic_n_per_m3 + d2 * self.quintic_n_per_m5))
    }

    /// Tangent stiffness df/dδ, in N/m.
    pub fn tangent_n_per_m(&self, extension_m: f64) -> f64 {
        let d = extension_m;
        let d2 = d * d;
        d * (2.0 * self.quadratic_n_per_m2
            + d * (3.0 * self.cubic_n_per_m3 + 5.0 * d2 * self.quintic_n_per_m5))
    }
}

/// Description of a shear chain with polynomial springs, forced by F·cos(ωt) on one floor.
///
/// The equation of motion is M·ẍ + C·ẋ + K·x + f_nl(x) = e_j·F·cos(ωt), with M, C, K the
/// linear building's matrices (`dtop_dynamics::ShearBuilding`), displacements relative to
/// the ground, and e_j the unit vector of the forced floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonlinearChainConfig {
    /// The linear part: masses, storey stiffnesses, damping (and an actuator, whose proof
    /// mass is then one more DOF, last).
    pub building: ShearBuildingConfig,
    /// Polynomial springs added to the linear chain; may be empty (a linear chain).
    #[serde(default)]
    pub springs: Vec<PolynomialSpring>,
    /// Floor that carries the harmonic force, 1-based.
    pub forced_floor: usize,
}

impl NonlinearChainConfig {
    /// Cristallo's nonlinear 3-DOF chain (TOOLS.md §5.1): m = 0.2 kg per floor, s = 200 N/m
    /// and b = 0.1 N·s/m per storey (storey dampers, so C = 5e-4·K), a cubic spring of
    /// 200 N/m³ between floor 1 and the ground, forced on floor 1.
    ///
    /// Cristallo writes M·ẍ + B·ẋ + S·x + [s₁₃·x₁³, 0, 0] + [Φ·sin ωt, 0, 0] = 0: its cubic
    /// term is restoring like ours (positive hardens), and its forcing −Φ·sin ωt is ours,
    /// F·cos ωt, delayed by a quarter period: x_cristallo(t) = x_dtop(t + π/(2ω)) with F = Φ.
    /// Amplitudes, stability and folds are the same; phases differ by k·90° at harmonic k.
    pub fn cristallo() -> Self {
        Self {
            building: ShearBuildingConfig {
                floor_masses_kg: vec![CRISTALLO_FLOOR_MASS_KG; CRISTALLO_FLOORS],
                storey_stiffness_n_per_m: vec![
                    CRISTALLO_STOREY_STIFFNESS_N_PER_M;
                    CRISTALLO_FLOORS
                ],
                damping: Damping::StoreyDampers {
                    storey_damping_n_s_per_m: vec![
                        CRISTALLO_STOREY_DAMPING_N_S_PER_M;
                        CRISTALLO_FLOORS
                    ],
                },
                actuator: None,
            },
            springs: vec![PolynomialSpring {
                link: SpringLink::FloorToGround { floor: 1 },
                quadratic_n_per_m2: 0.0,
                cubic_n_per_m3: CRISTALLO_CUBIC_N_PER_M3,
                quintic_n_per_m5: 0.0,
            }],
            forced_floor: 1,
        }
    }

    /// Every rule this config breaks, as sentences; empty when it is valid. Includes the
    /// building's own problems.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .building
            .problems()
            .into_iter()
            .map(|p| format!("building: {p}"))
            .collect();
        let floors = self.building.floors();
        if !(1..=floors).contains(&self.forced_floor) {
            problems.push(format!(
                "forced_floor = {} must be a 1-based floor within 1..={floors}",
                self.forced_floor
            ));
        }
        for (i, spring) in self.springs.iter().enumerate() {
            let (name, index) = match spring.link {
                SpringLink::Storey { storey } => ("storey", storey),
                SpringLink::FloorToGround { floor } => ("floor", floor),
            };
            if !(1..=floors).contains(&index) {
                problems.push(format!(
                    "springs[{i}].link.{name} = {index} must be within 1..={floors}"
                ));
            }
            for (field, value) in [
                ("quadratic_n_per_m2", spring.quadratic_n_per_m2),
                ("cubic_n_per_m3", spring.cubic_n_per_m3),
                ("quintic_n_per_m5", spring.quintic_n_per_m5),
            ] {
                if !value.is_finite() {
                    problems.push(format!("springs[{i}].{field} = {value} must be finite"));
                }
            }
        }
        problems
    }

    /// Checks every rule at once.
    ///
    /// # Errors
    /// [`NonlinearError::Invalid`] listing every problem found.
    pub fn validate(&self) -> Result<(), NonlinearError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NonlinearError::Invalid(problems))
        }
    }
}

/// A spring resolved to DOF indices: `upper` is 0-based, `lower` is `None` for the ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpringElement {
    pub upper: usize,
    pub lower: Option<usize>,
    pub spring: PolynomialSpring,
}

impl SpringElement {
    /// Extension of the element for DOF displacements `x`.
    pub fn extension(&self, x: &[f64]) -> f64 {
        x[self.upper] - self.lower.map_or(0.0, |l| x[l])
    }
}

/// A validated nonlinear chain: the linear matrices and the springs on DOF indices.
#[derive(Debug, Clone)]
pub struct NonlinearChain {
    /// Kept so results can say what they were computed from.
    config: NonlinearChainConfig,
    /// The linear building (M, C, K, modes), from `dtop_dynamics`.
    building: ShearBuilding,
    /// Springs with their DOF indices; springs whose coefficients are all zero are dropped.
    elements: Vec<SpringElement>,
    /// 0-based DOF of the forced floor.
    forced_dof: usize,
}

impl NonlinearChain {
    /// Validates the config and assembles the linear matrices.
    ///
    /// # Errors
    /// [`NonlinearError::Invalid`] listing every problem with the config.
    pub fn new(config: NonlinearChainConfig) -> Result<Self, NonlinearError> {
        config.validate()?;
        let building = ShearBuilding::new(config.building.clone())
            .map_err(|e| NonlinearError::Invalid(vec![format!("building: {e}")]))?;
        let elements = config
            .springs
            .iter()
            .filter(|s| s.degree() > 1)
            .map(|s| match s.link {
                SpringLink::Storey { storey } => SpringElement {
                    upper: storey - 1,
                    lower: storey.checked_sub(2),
                    spring: *s,
                },
                SpringLink::FloorToGround { floor } => SpringElement {
                    upper: floor - 1,
                    lower: None,
                    spring: *s,
                },
            })
            .collect();
        let forced_dof = config.forced_floor - 1;
        Ok(Self {
            config,
            building,
            elements,
            forced_dof,
        })
    }

    /// Cristallo's default chain, [`NonlinearChainConfig::cristallo`].
    ///
    /// # Errors
    /// Never in practice (the constants are valid, see the tests); kept fallible so no
    /// panic path exists.
    pub fn cristallo() -> Result<Self, NonlinearError> {
        Self::new(NonlinearChainConfig::cristallo())
    }

    /// The config this chain was built from.
    pub fn config(&self) -> &NonlinearChainConfig {
        &self.config
    }

    /// The linear building (matrices and undamped modes).
    pub fn building(&self) -> &ShearBuilding {
        &self.building
    }

    /// Number of degrees of freedom (floors, plus the proof mass if an actuator is fitted).
    pub fn dofs(&self) -> usize {
        self.building.dofs()
    }

    /// 0-based DOF that carries the harmonic force.
    pub fn forced_dof(&self) -> usize {
        self.forced_dof
    }

    /// Mass matrix M, in kg.
    pub fn mass(&self) -> &DMatrix<f64> {
        self.building.mass_matrix()
    }

    /// M⁻¹, in 1/kg.
    ///
    /// # Errors
    /// [`NonlinearError::Numerical`] if the mass matrix is singular.
    pub fn mass_inverse(&self) -> Result<DMatrix<f64>, NonlinearError> {
        self.mass()
            .clone()
            .try_inverse()
            .ok_or(NonlinearError::Numerical("the mass matrix is singular"))
    }

    /// Damping matrix C, in N·s/m.
    pub fn damping(&self) -> &DMatrix<f64> {
        self.building.damping_matrix()
    }

    /// Linear stiffness matrix K, in N/m.
    pub fn stiffness(&self) -> &DMatrix<f64> {
        self.building.stiffness_matrix()
    }

    /// True when no spring adds a nonlinear term.
    pub fn is_linear(&self) -> bool {
        self.elements.is_empty()
    }

    /// Highest polynomial degree of any spring (1 for a linear chain).
    pub fn degree(&self) -> usize {
        self.elements
            .iter()
            .map(|e| e.spring.degree())
            .max()
            .unwrap_or(1)
    }

    pub(crate) fn elements(&self) -> &[SpringElement] {
        &self.elements
    }

    /// Adds the springs' restoring forces f_nl(x) to `force`, in N, one entry per DOF.
    pub fn add_spring_forces(&self, x_m: &[f64], force_n: &mut [f64]) {
        for e in &self.elements {
            let f = e.spring.force_n(e.extension(x_m));
            force_n[e.upper] += f;
            if let Some(l) = e.lower {
                force_n[l] -= f;
            }
        }
    }

    /// Adds the springs' tangent stiffness ∂f_nl/∂x at `x` to `k`, in N/m.
    pub fn add_spring_tangent(&self, x_m: &[f64], k: &mut DMatrix<f64>) {
        for e in &self.elements {
            let kt = e.spring.tangent_n_per_m(e.extension(x_m));
            k[(e.upper, e.upper)] += kt;
            if let Some(l) = e.lower {
                k[(l, l)] += kt;
                k[(e.upper, l)] -= kt;
                k[(l, e.upper)] -= kt;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cristallo_chain_is_valid_and_has_its_published_natural_frequencies() {
        let chain = NonlinearChain::cristallo().expect("valid");
        assert_eq!(chain.dofs(), 3);
        assert_eq!(chain.degree(), 3);
        let omegas = &chain.building().modes().omegas_rad_s;
        // TOOLS.md §5.1 prints 14.0735, 39.4330, 56.9823 rad/s (six digits).
        for (got, want) in omegas.iter().zip([14.0735, 39.4330, 56.9823]) {
            assert!((got - want).abs() < 1e-4, "{omegas:?}");
        }
        // C = 5e-4·K exactly, so the storey dampers are stiffness-proportional.
        let c = chain.damping();
        let k = chain.stiffness();
        for (ci, ki) in c.iter().zip(k.iter()) {
            assert!((ci - 5e-4 * ki).abs() < 1e-15);
        }
    }

    #[test]
    fn spring_force_and_tangent_are_the_polynomial_and_its_derivative() {
        let s = PolynomialSpring {
            link: SpringLink::Storey { storey: 1 },
            quadratic_n_per_m2: 2.0,
            cubic_n_per_m3: -3.0,
            quintic_n_per_m5: 0.5,
        };
        let d: f64 = 0.7;
        let want_f = 2.0 * d.powi(2) - 3.0 * d.powi(3) + 0.5 * d.powi(5);
        let want_k = 4.0 * d - 9.0 * d.powi(2) + 2.5 * d.powi(4);
        // Horner's rule against powi: a few ulps apart.
        assert!((s.force_n(d) - want_f).abs() < 1e-14);
        assert!((s.tangent_n_per_m(d) - want_k).abs() < 1e-14);
        assert_eq!(s.degree(), 5);
    }

    #[test]
    fn storey_springs_act_on_the_drift_with_equal_and_opposite_forces() {
        let mut config = NonlinearChainConfig::cristallo();
        config.springs = vec![PolynomialSpring {
            link: SpringLink::Storey { storey: 3 },
            quadratic_n_per_m2: 0.0,
            cubic_n_per_m3: 10.0,
            quintic_n_per_m5: 0.0,
        }];
        let chain = NonlinearChain::new(config).expect("valid");
        let x = [0.1, 0.3, 0.8];
        let mut f = [0.0; 3];
        chain.add_spring_forces(&x, &mut f);
        let want = 10.0 * 0.5_f64.powi(3);
        assert!((f[2] - want).abs() < 1e-15 && (f[1] + want).abs() < 1e-15 && f[0] == 0.0);
        let mut k = DMatrix::zeros(3, 3);
        chain.add_spring_tangent(&x, &mut k);
        let kt = 30.0 * 0.25;
        assert!((k[(2, 2)] - kt).abs() < 1e-14 && (k[(1, 2)] + kt).abs() < 1e-14);
    }

    #[test]
    fn every_problem_with_the_chain_is_reported_at_once() {
        let mut config = NonlinearChainConfig::cristallo();
        config.building.floor_masses_kg[1] = 0.0;
        config.building.storey_stiffness_n_per_m[2] = -5.0;
        config.forced_floor = 4;
        config.springs.push(PolynomialSpring {
            link: SpringLink::Storey { storey: 0 },
            quadratic_n_per_m2: f64::NAN,
            cubic_n_per_m3: 1.0,
            quintic_n_per_m5: f64::INFINITY,
        });
        let Err(NonlinearError::Invalid(problems)) = NonlinearChain::new(config) else {
            panic!("an invalid chain was accepted");
        };
        for needle in [
            "floor_masses_kg[1]",
            "storey_stiffness_n_per_m[2]",
            "forced_floor = 4",
            "springs[1].link.storey = 0",
            "springs[1].quadratic_n_per_m2",
            "springs[1].quintic_n_per_m5",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "missing {needle:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn the_config_round_trips_through_json_and_refuses_unknown_fields() {
        let config = NonlinearChainConfig::cristallo();
        let text = serde_json::to_string(&config).expect("serializable");
        let back: NonlinearChainConfig = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, config);
        let typo = text.replace("cubic_n_per_m3", "cubic");
        assert!(serde_json::from_str::<NonlinearChainConfig>(&typo).is_err());
    }
}
