//! Owns the description of the rig as a 3D frame (storeys, floor plates, legs, material, feet,
//! mesh density), its serde shape, its validation (every problem at once) and the two built-in
//! rigs. Builds no matrices: that is `mesh.rs` and `assemble.rs`.
//!
//! Coordinates: SI, origin at the feet on the plan's centre, z up. Storey 1's legs stand on the
//! ground (z = 0); storey `i`'s legs join the underside of floor `i − 1` to the underside of
//! floor `i`; the legs stop at the plates (the plates are rigid, so a leg running through a
//! plate adds nothing).

use serde::{Deserialize, Serialize};

use crate::error::FeError;
use crate::units::{inches_to_m, psi_to_pa, slinch_per_in3_to_kg_m3};

/// Plan axis along which a leg's thin side (its thickness) lies: the leg bends easily in that
/// direction, so that is the rig's flexible sway direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAxis {
    /// Global x.
    X,
    /// Global y.
    Y,
}

/// Which beam theory the built-in solver uses for the legs' bending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeamTheory {
    /// Plane sections stay normal to the axis: no shear deformation.
    EulerBernoulli,
    /// Shear deformation included (shear coefficient κ of a rectangle by Cowper 1966, or
    /// `FrameConfig::shear_coefficient`). The
    /// default: the rig's legs are only ~6 section depths long in their stiff direction,
    /// where shear takes ~4 % off the storey stiffness.
    #[default]
    Timoshenko,
}

/// The legs' rectangular section, material and placement. All legs are alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegConfig {
    /// Width b of the section (its wide side), in m.
    pub width_m: f64,
    /// Thickness t of the section (its thin side), in m.
    pub thickness_m: f64,
    /// Plan axis along which the thickness lies (the legs' weak bending direction).
    pub thickness_along: PlanAxis,
    /// Young's modulus E, in Pa.
    pub youngs_modulus_pa: f64,
    /// Poisson's ratio ν, within (−1, 0.5); gives the shear modulus G = E / (2(1 + ν)).
    pub poisson_ratio: f64,
    /// Density of the legs, in kg/m³.
    pub density_kg_m3: f64,
    /// Distance between the centre lines of the legs along x, in m (legs at x = ±spacing/2).
    pub spacing_x_m: f64,
    /// Distance between the centre lines of the legs along y, in m (legs at y = ±spacing/2).
    pub spacing_y_m: f64,
}

/// The floor plates, all alike, each a rigid body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloorConfig {
    /// Plate length along x, in m.
    pub length_x_m: f64,
    /// Plate length along y, in m.
    pub length_y_m: f64,
    /// Plate thickness along z, in m.
    pub thickness_m: f64,
    /// Plate density, in kg/m³; gives the mass when `mass_kg` is absent.
    pub density_kg_m3: f64,
    /// Measured mass of one floor (plate plus fixings), in kg; overrides the density. The
    /// rotary inertia is that of a uniform plate of this mass and the plate's dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_kg: Option<f64>,
}

impl FloorConfig {
    /// Mass of one floor, in kg: `mass_kg` if given, else density × volume.
    pub fn mass(&self) -> f64 {
        self.mass_kg
            .unwrap_or(self.density_kg_m3 * self.length_x_m * self.length_y_m * self.thickness_m)
    }

    /// Rotary inertia of one floor about its centroid's x, y and z axes, in kg·m², as a
    /// uniform box: I_x = m(l_y² + t²)/12, I_y = m(l_x² + t²)/12, I_z = m(l_x² + l_y²)/12.
    pub fn rotary_inertia_kg_m2(&self) -> [f64; 3] {
        let m = self.mass();
        let (a, b, t) = (self.length_x_m, self.length_y_m, self.thickness_m);
        [
            m * (b * b + t * t) / 12.0,
            m * (a * a + t * t) / 12.0,
            m * (a * a + b * b) / 12.0,
        ]
    }
}

/// How the feet of storey 1's legs hold to the ground.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feet {
    /// Clamped: no translation, no rotation.
    Fixed,
    /// Each foot held by springs to the ground, the same in the three directions.
    Elastic {
        /// Stiffness of each translational spring (x, y and z), in N/m.
        translational_n_per_m: f64,
        /// Stiffness of each rotational spring (about x, y and z), in N·m/rad.
        rotational_n_m_per_rad: f64,
    },
}

/// The rig as a 3D frame: floors as rigid plates on four legs per storey, one leg at each
/// corner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    /// Free length of the legs of each storey (between the ground or the plate below and the
    /// plate above), lowest first, in m. Its length is the number of storeys.
    pub storey_leg_lengths_m: Vec<f64>,
    /// The legs (four per storey).
    pub leg: LegConfig,
    /// The floor plates (one per storey, on top of it).
    pub floor: FloorConfig,
    /// The feet of storey 1.
    pub feet: Feet,
    /// Beam elements per leg; more elements give more accurate higher modes.
    pub elements_per_leg: usize,
    /// Beam theory of the built-in solver (CalculiX's expanded beams are 3D solids and
    /// include shear deformation on their own).
    #[serde(default)]
    pub beam_theory: BeamTheory,
    /// Timoshenko shear coefficient κ of the legs' section (shear area κ·A), within (0, 1].
    /// Absent (the default): Cowper's value for a rectangle, the one 3D elasticity gives
    /// (see [`cowper_rectangle_shear_coefficient`]). Set it to reproduce an element with
    /// another: CalculiX's B31, expanded to one brick across the section, carries a
    /// constant shear strain over the depth, κ = 1 (measured, ARCHITECTURE.md "Finite
    /// elements").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shear_coefficient: Option<f64>,
}

/// Cowper's shear coefficient of a solid rectangle, κ = 10(1 + ν)/(12 + 11ν) (J. Appl. Mech.
/// 33, 1966, Table 1): 0.850 for aluminium's ν = 0.33.
pub fn cowper_rectangle_shear_coefficient(poisson_ratio: f64) -> f64 {
    10.0 * (1.0 + poisson_ratio) / (12.0 + 11.0 * poisson_ratio)
}

/// Beam elements per leg in the built-in rigs: the first leg-bending frequency of a cantilever
/// is then within 0.01 % of its closed form, and a 3-storey rig has a few hundred DOFs.
pub const fn default_elements_per_leg() -> usize {
    8
}

/// Southampton: number of storeys (README of the Cristallo data).
pub const SOUTHAMPTON_STOREYS: usize = 3;
/// Southampton: free leg length, in m (README: 153.3 mm).
pub const SOUTHAMPTON_LEG_LENGTH_M: f64 = 0.1533;
/// Southampton: leg section width, in m (README: 25 mm).
pub const SOUTHAMPTON_LEG_WIDTH_M: f64 = 0.025;
/// Southampton: leg section thickness, in m (README: 3 mm).
pub const SOUTHAMPTON_LEG_THICKNESS_M: f64 = 0.003;
/// Southampton: Young's modulus of the aluminium legs, in Pa (README: 70 GPa).
pub const SOUTHAMPTON_YOUNGS_MODULUS_PA: f64 = 70e9;
/// Southampton: floor mass, in kg (README: 5.201 kg).
pub const SOUTHAMPTON_FLOOR_MASS_KG: f64 = 5.201;
/// Southampton: plate thickness, in m. The README's floor heights are 178.3 mm apart and the
/// legs are 153.3 mm long, which leaves 25 mm per plate.
pub const SOUTHAMPTON_FLOOR_THICKNESS_M: f64 = 0.025;
/// Aluminium density used for the legs of both built-in rigs, in kg/m³ (Cristallo's default
/// after conversion, TOOLS.md §7).
pub const ALUMINIUM_DENSITY_KG_M3: f64 = 2700.0;
/// Aluminium Poisson's ratio (Cristallo's default, TOOLS.md §7; the README does not give one).
pub const ALUMINIUM_POISSON_RATIO: f64 = 0.33;

/// Cristallo FEA default: Young's modulus, in psi (TOOLS.md §7).
pub const CRISTALLO_YOUNGS_MODULUS_PSI: f64 = 1.015e7;
/// Cristallo FEA default: density, in slinch/in³ (TOOLS.md §7).
pub const CRISTALLO_DENSITY_SLINCH_PER_IN3: f64 = 2.5265e-4;
/// Cristallo FEA default: Poisson's ratio (TOOLS.md §7).
pub const CRISTALLO_POISSON_RATIO: f64 = 0.33;
/// Cristallo FEA default: leg section 1 in × 0.125 in, in inches (TOOLS.md §7).
pub const CRISTALLO_LEG_SECTION_IN: (f64, f64) = (1.0, 0.125);
/// Cristallo FEA default: floor plates 10 in × 12 in × 1 in (TOOLS.md §7).
pub const CRISTALLO_FLOOR_IN: (f64, f64, f64) = (10.0, 12.0, 1.0);
/// Cristallo FEA default: the undersides of the floors, in inches above the feet
/// (TOOLS.md §7: floors at z = 7, 14, 21 in on 22 in legs, so the top plate ends flush with
/// the legs' tops).
pub const CRISTALLO_FLOOR_UNDERSIDES_IN: [f64; 3] = [7.0, 14.0, 21.0];
/// Cristallo FEA default: mesh seed on the legs, in inches (TOOLS.md §7).
pub const CRISTALLO_LEG_MESH_SEED_IN: f64 = 0.5;
/// Beam elements per leg matching Cristallo's 0.5 in leg seed on its shorter (6 in) legs.
pub const CRISTALLO_ELEMENTS_PER_LEG: usize = 12;

impl FrameConfig {
    /// The Southampton rig from the published facts (Cristallo data README): three storeys of
    /// four 25 mm × 3 mm aluminium legs (E = 70 GPa), 153.3 mm free length, clamped at both
    /// ends into 25 mm plates of 5.201 kg, feet fixed.
    ///
    /// The README does not give the plate's plan size, the legs' placement, ν or the legs'
    /// density. This model assumes Cristallo's 10 in × 12 in plate plan (254 mm × 304.8 mm,
    /// TOOLS.md §7), legs flush with the plate corners, their thin side along x (so x is the
    /// flexible sway direction the shear chain describes), and aluminium ν = 0.33,
    /// ρ = 2700 kg/m³.
    pub fn southampton() -> Self {
        let (plate_x_m, plate_y_m) = (
            inches_to_m(CRISTALLO_FLOOR_IN.0),
            inches_to_m(CRISTALLO_FLOOR_IN.1),
        );
        Self {
            storey_leg_lengths_m: vec![SOUTHAMPTON_LEG_LENGTH_M; SOUTHAMPTON_STOREYS],
            leg: LegConfig {
                width_m: SOUTHAMPTON_LEG_WIDTH_M,
                thickness_m: SOUTHAMPTON_LEG_THICKNESS_M,
                thickness_along: PlanAxis::X,
                youngs_modulus_pa: SOUTHAMPTON_YOUNGS_MODULUS_PA,
                poisson_ratio: ALUMINIUM_POISSON_RATIO,
                density_kg_m3: ALUMINIUM_DENSITY_KG_M3,
                spacing_x_m: plate_x_m - SOUTHAMPTON_LEG_THICKNESS_M,
                spacing_y_m: plate_y_m - SOUTHAMPTON_LEG_WIDTH_M,
            },
            floor: FloorConfig {
                length_x_m: plate_x_m,
                length_y_m: plate_y_m,
                thickness_m: SOUTHAMPTON_FLOOR_THICKNESS_M,
                density_kg_m3: ALUMINIUM_DENSITY_KG_M3,
                mass_kg: Some(SOUTHAMPTON_FLOOR_MASS_KG),
            },
            feet: Feet::Fixed,
            elements_per_leg: default_elements_per_leg(),
            beam_theory: BeamTheory::Timoshenko,
            shear_coefficient: None,
        }
    }

    /// Cristallo's FEA defaults (TOOLS.md §7), converted once from inch–slinch–second to SI
    /// (see [`crate::units`]): E = 1.015e7 psi, ν = 0.33, ρ = 2.5265e-4 slinch/in³, legs
    /// 1 in × 0.125 in, floors 10 in × 12 in × 1 in with undersides at 7, 14 and 21 in on
    /// 22 in legs (free lengths 7, 6 and 6 in), mass from the density, 0.5 in elements on the
    /// legs (12 per 6 in leg).
    ///
    /// Where DTOP differs on purpose: Cristallo meshes solids (tetrahedra) and adds mount
    /// plates and L-section feet; this frame has beam legs, rigid plates and fixed feet at the
    /// legs' bottoms (its feet faces are fixed too). Legs sit flush with the plate corners,
    /// thin side along x.
    pub fn cristallo_defaults() -> Self {
        let (width_in, thickness_in) = CRISTALLO_LEG_SECTION_IN;
        let (plate_x_in, plate_y_in, plate_t_in) = CRISTALLO_FLOOR_IN;
        let mut below_in = 0.0;
        let mut lengths_m = Vec::with_capacity(CRISTALLO_FLOOR_UNDERSIDES_IN.len());
        for underside_in in CRISTALLO_FLOOR_UNDERSIDES_IN {
            lengths_m.push(inches_to_m(underside_in - below_in));
            below_in = underside_in + plate_t_in;
        }
        let density_kg_m3 = slinch_per_in3_to_kg_m3(CRISTALLO_DENSITY_SLINCH_PER_IN3);
        Self {
            storey_leg_lengths_m: lengths_m,
            leg: LegConfig {
                width_m: inches_to_m(width_in),
                thickness_m: inches_to_m(thickness_in),
                thickness_along: PlanAxis::X,
                youngs_modulus_pa: psi_to_pa(CRISTALLO_YOUNGS_MODULUS_PSI),
                poisson_ratio: CRISTALLO_POISSON_RATIO,
                density_kg_m3,
                spacing_x_m: inches_to_m(plate_x_in - thickness_in),
                spacing_y_m: inches_to_m(plate_y_in - width_in),
            },
            floor: FloorConfig {
                length_x_m: inches_to_m(plate_x_in),
                length_y_m: inches_to_m(plate_y_in),
                thickness_m: inches_to_m(plate_t_in),
                density_kg_m3,
                mass_kg: None,
            },
            feet: Feet::Fixed,
            elements_per_leg: CRISTALLO_ELEMENTS_PER_LEG,
            beam_theory: BeamTheory::Timoshenko,
            shear_coefficient: None,
        }
    }

    /// Number of storeys (and of floors).
    pub fn storeys(&self) -> usize {
        self.storey_leg_lengths_m.len()
    }

    /// Shear modulus G = E / (2(1 + ν)) of the legs, in Pa.
    pub fn shear_modulus_pa(&self) -> f64 {
        self.leg.youngs_modulus_pa / (2.0 * (1.0 + self.leg.poisson_ratio))
    }

    /// The legs' Timoshenko shear coefficient κ: `shear_coefficient` if set, else Cowper's
    /// for a rectangle of the legs' Poisson's ratio.
    pub fn leg_shear_coefficient(&self) -> f64 {
        self.shear_coefficient
            .unwrap_or_else(|| cowper_rectangle_shear_coefficient(self.leg.poisson_ratio))
    }

    /// Every rule this config breaks, as sentences; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.storey_leg_lengths_m.is_empty() {
            problems.push(
                "storey_leg_lengths_m is empty: a frame needs at least one storey".to_owned(),
            );
        }
        for (i, &l) in self.storey_leg_lengths_m.iter().enumerate() {
            positive(&mut problems, &format!("storey_leg_lengths_m[{i}]"), l);
        }
        if self.elements_per_leg == 0 {
            problems
                .push("elements_per_leg = 0: each leg needs at least one beam element".to_owned());
        }
        let leg = &self.leg;
        for (name, value) in [
            ("leg.width_m", leg.width_m),
            ("leg.thickness_m", leg.thickness_m),
            ("leg.youngs_modulus_pa", leg.youngs_modulus_pa),
            ("leg.density_kg_m3", leg.density_kg_m3),
            ("leg.spacing_x_m", leg.spacing_x_m),
            ("leg.spacing_y_m", leg.spacing_y_m),
        ] {
            positive(&mut problems, name, value);
        }
        // Rejects NaN too, because NaN is in no range.
        if !(leg.poisson_ratio > -1.0 && leg.poisson_ratio < 0.5) {
            problems.push(format!(
                "leg.poisson_ratio = {} must be within (−1, 0.5) for a stable isotropic material",
                leg.poisson_ratio
            ));
        }
        let floor = &self.floor;
        for (name, value) in [
            ("floor.length_x_m", floor.length_x_m),
            ("floor.length_y_m", floor.length_y_m),
            ("floor.thickness_m", floor.thickness_m),
            ("floor.density_kg_m3", floor.density_kg_m3),
        ] {
            positive(&mut problems, name, value);
        }
        if let Some(kappa) = self.shear_coefficient {
            // Rejects NaN too.
            if !(kappa > 0.0 && kappa <= 1.0) {
                problems.push(format!(
                    "shear_coefficient = {kappa} must be within (0, 1] (a solid rectangle's is \
                     0.85; leave it out for Cowper's value)"
                ));
            }
        }
        if let Some(mass_kg) = floor.mass_kg {
            positive(&mut problems, "floor.mass_kg", mass_kg);
        }
        if let Feet::Elastic {
            translational_n_per_m,
            rotational_n_m_per_rad,
        } = self.feet
        {
            positive(
                &mut problems,
                "feet.translational_n_per_m",
                translational_n_per_m,
            );
            positive(
                &mut problems,
                "feet.rotational_n_m_per_rad",
                rotational_n_m_per_rad,
            );
        }
        problems
    }

    /// Checks every rule at once.
    ///
    /// # Errors
    /// [`FeError::Invalid`] listing every problem found.
    pub fn validate(&self) -> Result<(), FeError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FeError::Invalid(problems))
        }
    }
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self::southampton()
    }
}

fn positive(problems: &mut Vec<String>, name: &str, value: f64) {
    if !(value.is_finite() && value > 0.0) {
        problems.push(format!("{name} = {value} must be positive and finite"));
    }
}
