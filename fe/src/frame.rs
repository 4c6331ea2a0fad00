//! Owns the built-in frame model: a validated `FrameConfig` meshed and assembled, its natural
//! frequencies and mode shapes, and each mode's class from its effective masses. The static
//! condensation to the shear chain is in `condense.rs`.

use dtop_dynamics::Modes;
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::assemble::{Assembled, FootSprings, RigidFloorInertia, assemble, rigid_influence};
use crate::beam::BeamProperties;
use crate::config::{BeamTheory, Feet, FrameConfig, PlanAxis};
use crate::error::FeError;
use crate::mesh::FrameMesh;

/// Below this effective-mass fraction in every direction a mode moves no mass as a whole
/// (an antisymmetric or local mode) and is classed `Other`. Rounding leaves fractions of
/// order 1e-20 on such modes; the weakest global mode of a 10-storey chain still has 1e-4.
pub const MIN_CLASSIFYING_FRACTION: f64 = 1e-9;

/// Most DOFs the built-in solver accepts. It solves the dense eigenproblem of all DOFs
/// (O(n³)): 522 DOFs (the Southampton rig at 8 elements per leg) take ~0.3 s, 1098 DOFs
/// ~3.6 s on one core of the CI machine, so 1500 DOFs stay under ~10 s. Finer meshes are for
/// CalculiX.
pub const MAX_BUILTIN_DOFS: usize = 1500;

/// What a mode mostly does, from its effective masses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeClass {
    /// Lateral sway along x (the shear chain's direction in the built-in rigs).
    SwayX,
    /// Lateral sway along y (out of the shear chain's plane).
    SwayY,
    /// Twist about the vertical axis.
    Torsion,
    /// Vertical (axial) motion.
    Vertical,
    /// No net motion in any of the four directions (antisymmetric or local leg modes).
    Other,
}

/// Effective modal mass of one mode in each direction, as a fraction of the structure's
/// total (mass for x, y, z; rotary inertia about the vertical axis for torsion). Over all
/// modes each direction's fractions sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EffectiveMassFractions {
    /// Along x.
    pub x: f64,
    /// Along y.
    pub y: f64,
    /// Along z.
    pub z: f64,
    /// About the vertical axis through the plan's centre.
    pub torsion: f64,
}

impl EffectiveMassFractions {
    /// The class of the largest fraction, or `Other` if none reaches
    /// [`MIN_CLASSIFYING_FRACTION`].
    pub fn class(&self) -> ModeClass {
        let candidates = [
            (self.x, ModeClass::SwayX),
            (self.y, ModeClass::SwayY),
            (self.torsion, ModeClass::Torsion),
            (self.z, ModeClass::Vertical),
        ];
        let (largest, class) =
            candidates
                .into_iter()
                .fold((0.0, ModeClass::Other), |best, candidate| {
                    if candidate.0 > best.0 {
                        candidate
                    } else {
                        best
                    }
                });
        if largest >= MIN_CLASSIFYING_FRACTION {
            class
        } else {
            ModeClass::Other
        }
    }
}

/// One natural mode of the frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameMode {
    /// Natural frequency, in Hz.
    pub frequency_hz: f64,
    /// What the mode mostly does.
    pub class: ModeClass,
    /// Effective masses as fractions of the totals.
    pub effective_mass: EffectiveMassFractions,
    /// Motion of each floor's centroid (u_x, u_y, u_z, θ_x, θ_y, θ_z), lowest floor first, of
    /// the mass-normalised shape (φᵀ·M·φ = 1: translations in m and rotations in rad per
    /// √kg of modal coordinate).
    pub floor_motions: Vec<[f64; 6]>,
    /// Translation (u_x, u_y, u_z) of every mesh node, same normalisation, in the order of
    /// `FrameMesh::nodes`: enough to draw the deformed legs.
    pub node_translations: Vec<[f64; 3]>,
}

/// The lowest natural modes of a frame, ascending in frequency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameModes {
    /// The modes asked for (or all, if there are fewer DOFs).
    pub modes: Vec<FrameMode>,
    /// Number of DOFs of the assembled model.
    pub dofs: usize,
    /// Total mass of the model (floors and legs, feet excluded when clamped), in kg.
    pub total_mass_kg: f64,
}

impl FrameModes {
    /// Frequencies of the modes, ascending, in Hz.
    pub fn frequencies_hz(&self) -> Vec<f64> {
        self.modes.iter().map(|m| m.frequency_hz).collect()
    }

    /// Frequencies of the modes of one class, ascending, in Hz.
    pub fn frequencies_of_hz(&self, class: ModeClass) -> Vec<f64> {
        self.modes
            .iter()
            .filter(|m| m.class == class)
            .map(|m| m.frequency_hz)
            .collect()
    }
}

/// A validated, meshed and assembled frame.
#[derive(Debug, Clone)]
pub struct FrameModel {
    /// Kept so callers can show what the model was built from.
    config: FrameConfig,
    mesh: FrameMesh,
    assembled: Assembled,
}

impl FrameModel {
    /// Validates, meshes and assembles a frame.
    ///
    /// # Errors
    /// [`FeError::Invalid`] listing every config problem, including a mesh with more than
    /// [`MAX_BUILTIN_DOFS`] DOFs; [`FeError::Numerical`] if the assembly fails (it does not
    /// for a valid config).
    pub fn new(config: FrameConfig) -> Result<Self, FeError> {
        let mut problems = config.problems();
        let dofs = builtin_dofs(&config);
        if dofs > MAX_BUILTIN_DOFS {
            problems.push(format!(
                "elements_per_leg = {} gives {dofs} DOFs, more than the built-in solver's \
                 {MAX_BUILTIN_DOFS} (its dense eigen-solve grows as DOFs³): use fewer elements \
                 or CalculiX",
                config.elements_per_leg
            ));
        }
        if !problems.is_empty() {
            return Err(FeError::Invalid(problems));
        }
        let mesh = FrameMesh::new(&config)?;
        let leg = &config.leg;
        // Local axis 2 lies along the thickness, so I₃ (bending along 2) is the weak b·t³/12.
        let euler_bernoulli = BeamProperties::rectangle(
            leg.thickness_m,
            leg.width_m,
            leg.youngs_modulus_pa,
            config.shear_modulus_pa(),
            leg.density_kg_m3,
        );
        let beam = match config.beam_theory {
            BeamTheory::EulerBernoulli => euler_bernoulli,
            BeamTheory::Timoshenko => {
                euler_bernoulli.with_shear_coefficient(config.leg_shear_coefficient())
            }
        };
        let inertia = RigidFloorInertia {
            mass_kg: config.floor.mass(),
            inertia_kg_m2: config.floor.rotary_inertia_kg_m2(),
        };
        let feet = match config.feet {
            Feet::Fixed => None,
            Feet::Elastic {
                translational_n_per_m,
                rotational_n_m_per_rad,
            } => Some(FootSprings {
                translational_n_per_m,
                rotational_n_m_per_rad,
            }),
        };
        let assembled = assemble(&mesh, &beam, &vec![inertia; config.storeys()], feet)?;
        Ok(Self {
            config,
            mesh,
            assembled,
        })
    }

    /// The config this model was built from.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The mesh (nodes, elements, floor centroids).
    pub fn mesh(&self) -> &FrameMesh {
        &self.mesh
    }

    /// Number of DOFs after the supports and rigid floors are applied.
    pub fn dofs(&self) -> usize {
        self.assembled.mass.nrows()
    }

    /// Global mass matrix (SI), DOFs as the assembly numbers them.
    pub fn mass_matrix(&self) -> &DMatrix<f64> {
        &self.assembled.mass
    }

    /// Global stiffness matrix (SI).
    pub fn stiffness_matrix(&self) -> &DMatrix<f64> {
        &self.assembled.stiffness
    }

    pub(crate) fn assembled(&self) -> &Assembled {
        &self.assembled
    }

    /// The `count` lowest natural modes (all of them if the model has fewer DOFs), by the
    /// generalized symmetric eigenproblem K·φ = ω²·M·φ (Cholesky of M, then nalgebra's
    /// symmetric QR, through `dtop_dynamics::Modes`), each classified by its effective
    /// masses.
    ///
    /// # Errors
    /// [`FeError::Invalid`] if `count` is 0; [`FeError::Numerical`] if the eigen-solver fails.
    pub fn modes(&self, count: usize) -> Result<FrameModes, FeError> {
        if count == 0 {
            return Err(FeError::Invalid(vec![
                "mode count = 0: ask for at least one mode".to_owned(),
            ]));
        }
        let mass = &self.assembled.mass;
        let solved = Modes::solve(mass, &self.assembled.stiffness)?;
        let influence = rigid_influence(&self.mesh, &self.assembled);
        let totals: Vec<f64> = influence.iter().map(|v| v.dot(&(mass * v))).collect();
        let m_influence: Vec<DVector<f64>> = influence.iter().map(|v| mass * v).collect();
        let mut modes = Vec::new();
        for r in 0..solved.len().min(count) {
            let phi: DVector<f64> = solved.shapes.column(r).into_owned();
            let fraction = |d: usize| {
                let gamma = phi.dot(&m_influence[d]);
                gamma * gamma / totals[d]
            };
            let effective_mass = EffectiveMassFractions {
                x: fraction(0),
                y: fraction(1),
                z: fraction(2),
                torsion: fraction(3),
            };
            let floor_motions = self
                .assembled
                .floor_starts
                .iter()
                .map(|&start| {
                    let mut motion = [0.0; 6];
                    for (d, value) in motion.iter_mut().enumerate() {
                        *value = phi[start + d];
                    }
                    motion
                })
                .collect();
            let node_translations = self
                .assembled
                .node_dofs
                .iter()
                .map(|dofs| {
                    let u = dofs.displacements(&phi);
                    [u[0], u[1], u[2]]
                })
                .collect();
            modes.push(FrameMode {
                frequency_hz: solved.omegas_rad_s[r] / std::f64::consts::TAU,
                class: effective_mass.class(),
                effective_mass,
                floor_motions,
                node_translations,
            });
        }
        Ok(FrameModes {
            modes,
            dofs: self.dofs(),
            total_mass_kg: totals[0],
        })
    }

    /// Index (0..6) of a floor's translation along `axis`.
    pub(crate) fn axis_dof(axis: PlanAxis) -> usize {
        match axis {
            PlanAxis::X => 0,
            PlanAxis::Y => 1,
        }
    }
}

/// DOFs of the assembled model: six per inner leg node, per elastic foot and per floor.
fn builtin_dofs(config: &FrameConfig) -> usize {
    let storeys = config.storeys();
    let inner = 4 * storeys * config.elements_per_leg.saturating_sub(1);
    let feet = match config.feet {
        Feet::Fixed => 0,
        Feet::Elastic { .. } => 4,
    };
    6 * (inner + feet + storeys)
}
