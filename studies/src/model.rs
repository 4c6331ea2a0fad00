//! Owns models as data: [`ModelSpec`] (an N-storey shear chain with its damping, optional
//! inertial actuator and sensor layout), how a study names one ([`ModelRef`], `name@version`),
//! where a version came from ([`Provenance`]), and the built-in models the catalogue ships with.
//! Turning a spec into matrices is `dtop-dynamics`' job; this module only describes and checks.

use std::fmt;
use std::str::FromStr;

use dtop_dynamics::{Damping, InertialActuator, ShearBuilding, ShearBuildingConfig};
use serde::{Deserialize, Serialize};

use crate::problems::FieldProblem;

/// A model: the structure, and where its sensors are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// One line saying what this model is.
    #[serde(default)]
    pub description: String,
    /// Masses, storey stiffnesses, damping and the actuator, as `dtop-dynamics` takes them.
    pub structure: ShearBuildingConfig,
    /// Which floors carry accelerometers and where the force gauge is.
    #[serde(default)]
    pub sensors: SensorLayout,
}

/// Where the rig's sensors are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorLayout {
    /// Floors (1-based) with an accelerometer; empty means every floor.
    #[serde(default)]
    pub accelerometer_floors: Vec<usize>,
    /// Floor (1-based) where the shaker's force gauge acts, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_gauge_floor: Option<usize>,
}

impl ModelSpec {
    /// Every rule this model breaks, each under `model.`; empty when it is physical and
    /// consistent.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut problems: Vec<FieldProblem> = self
            .structure
            .problems()
            .into_iter()
            .map(|p| FieldProblem::new("model.structure", p))
            .collect();
        let floors = self.structure.floors();
        for (i, &f) in self.sensors.accelerometer_floors.iter().enumerate() {
            if f == 0 || f > floors {
                problems.push(FieldProblem::new(
                    format!("model.sensors.accelerometer_floors[{i}]"),
                    format!("floor {f} does not exist; floors are 1..={floors}"),
                ));
            }
        }
        if let Some(f) = self.sensors.force_gauge_floor
            && (f == 0 || f > floors)
        {
            problems.push(FieldProblem::new(
                "model.sensors.force_gauge_floor",
                format!("floor {f} does not exist; floors are 1..={floors}"),
            ));
        }
        problems
    }

    /// The structure's matrices and modes.
    ///
    /// # Errors
    /// Every problem of [`ModelSpec::problems`], or the reason the matrices could not be built
    /// (e.g. a stiffness that is not positive definite).
    pub fn building(&self) -> Result<ShearBuilding, Vec<FieldProblem>> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        ShearBuilding::new(self.structure.clone())
            .map_err(|e| vec![FieldProblem::new("model.structure", e.to_string())])
    }

    /// Number of floors.
    pub fn floors(&self) -> usize {
        self.structure.floors()
    }
}

/// A model named in the catalogue: `name` (its latest version) or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Catalogue name: lowercase letters, digits and `-`, 1 to 64 characters.
    pub name: String,
    /// Version, from 1; `None` for the latest.
    pub version: Option<u32>,
}

impl ModelRef {
    /// Why `name` cannot be a model name, if it cannot.
    pub fn name_problem(name: &str) -> Option<String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        (!ok).then(|| {
            format!(
                "model name {name:?} must be 1 to 64 lowercase letters, digits or '-', not starting with '-'"
            )
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl FromStr for ModelRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.split_once('@') {
            Some((name, v)) => {
                let v: u32 = v.parse().ok().filter(|&v| v >= 1).ok_or_else(|| {
                    format!("model version in {s:?} must be a whole number from 1")
                })?;
                (name, Some(v))
            }
            None => (s, None),
        };
        if let Some(p) = ModelRef::name_problem(name) {
            return Err(p);
        }
        Ok(ModelRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl Serialize for ModelRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a model version came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum Provenance {
    /// Shipped with DTOP.
    Builtin,
    /// Typed by hand (CLI, API or web form).
    Manual,
    /// Imported from a file.
    Imported {
        /// The file's name as given.
        file_name: String,
        /// SHA-256 of the file's bytes, hex.
        sha256_hex: String,
    },
    /// Produced by a study.
    Study {
        /// The study's id.
        study_id: String,
    },
}

/// Host floor of the `southampton-actuator` built-in. The top floor: the first mode, which
/// carries most of the response to a force on floor 1, has its largest amplitude there, so a
/// proof-mass actuator gets the most authority over it (TOOLS.md §2.2 allows floors 1–3).
pub const SOUTHAMPTON_ACTUATOR_FLOOR: usize = 3;

/// Cristallo's `msd3` library defaults (TOOLS.md §3.2): masses in units of 1e4 kg.
pub const CRISTALLO_MSD3_MASSES_KG: [f64; 3] = [5.362e4, 5.144e4, 5.142e4];
/// Cristallo's `msd3` library defaults: storey stiffnesses in units of 1e8 N/m.
pub const CRISTALLO_MSD3_STIFFNESS_N_PER_M: [f64; 3] = [3.846e8, 4.464e8, 4.589e8];
/// Cristallo's `msd3` library defaults: storey dampers in units of 1e4 N·s/m.
pub const CRISTALLO_MSD3_DAMPING_N_S_PER_M: [f64; 3] = [1.699e4, 1.016e4, 1.34e4];

/// Cristallo's design-under-uncertainty means (TOOLS.md §4.2): floor masses, kg.
pub const CRISTALLO_DESIGN_MASSES_KG: [f64; 3] = [4.872_488_2, 5.475_803_3, 5.692_324_9];
/// Cristallo's design-under-uncertainty means: storey stiffnesses, N/m.
pub const CRISTALLO_DESIGN_STIFFNESS_N_PER_M: [f64; 3] = [4203.0027, 4147.6895, 5101.4822];
/// Storey dampers of `cristallo-design`, N·s/m. c₁ is Cristallo's Gaussian mean. For c₂ and
/// c₃ Cristallo types the pairs (0.6018186, 0.0015333) and (2.3842358, 0.0010963) as Gamma
/// shape/scale, which makes the nominal dampers 9.23e-4 and 2.61e-3 N·s/m, a thousand times
/// lighter than c₁; the pairs read as Gaussian mean/σ entered under the wrong type (TOOLS.md
/// §4.2, §10.5). We take the first number of each pair as the mean, as for c₁.
pub const CRISTALLO_DESIGN_DAMPING_N_S_PER_M: [f64; 3] = [2.200_714_6, 0.601_818_6, 2.384_235_8];

/// The built-in models: `(name, spec)`, each shipped as version 1.
pub fn builtin_models() -> Vec<(&'static str, ModelSpec)> {
    let every_floor = SensorLayout::default();
    vec![
        (
            "southampton",
            ModelSpec {
                description:
                    "Southampton three-storey aluminium shear frame (Cristallo's physical twin), \
                     bare: 5.201 kg floors, 4·12·E·J/l³ storeys, 0.2 % Rayleigh damping on modes \
                     1 and 2; shaker force gauge on floor 1"
                        .to_owned(),
                structure: ShearBuildingConfig::southampton(),
                sensors: SensorLayout {
                    force_gauge_floor: Some(1),
                    ..every_floor.clone()
                },
            },
        ),
        (
            "southampton-actuator",
            ModelSpec {
                description: format!(
                    "Southampton frame with the default inertial actuator (0.5 kg housing, 1 kg \
                     proof mass on 1670 N/m and 5 N·s/m) on floor {SOUTHAMPTON_ACTUATOR_FLOOR}, \
                     the antinode of mode 1; shaker force gauge on floor 1"
                ),
                structure: ShearBuildingConfig {
                    actuator: Some(InertialActuator {
                        floor: SOUTHAMPTON_ACTUATOR_FLOOR,
                        ..InertialActuator::default()
                    }),
                    ..ShearBuildingConfig::southampton()
                },
                sensors: SensorLayout {
                    force_gauge_floor: Some(1),
                    ..every_floor.clone()
                },
            },
        ),
        (
            "cristallo-msd3",
            ModelSpec {
                description: "Cristallo's generic 3-DOF chain (unquant msd3 library defaults: \
                              masses ×1e4 kg, stiffnesses ×1e8 N/m, storey dampers ×1e4 N·s/m), \
                              excited on floor 3"
                    .to_owned(),
                structure: ShearBuildingConfig {
                    floor_masses_kg: CRISTALLO_MSD3_MASSES_KG.to_vec(),
                    storey_stiffness_n_per_m: CRISTALLO_MSD3_STIFFNESS_N_PER_M.to_vec(),
                    damping: Damping::StoreyDampers {
                        storey_damping_n_s_per_m: CRISTALLO_MSD3_DAMPING_N_S_PER_M.to_vec(),
                    },
                    actuator: None,
                },
                sensors: SensorLayout {
                    force_gauge_floor: Some(3),
                    ..every_floor.clone()
                },
            },
        ),
        (
            "cristallo-design",
            ModelSpec {
                description: "Cristallo's design-under-uncertainty chain at its means (about 5 kg \
                              floors, 4–5 kN/m storeys), excited on floor 1; storey dampers \
                              2.2007, 0.6018 and 2.3842 N·s/m: Cristallo's Gamma shape·scale \
                              for c2 and c3 (9.2e-4, 2.6e-3 N·s/m) is a typing bug, we use the \
                              first number of each pair as the mean"
                    .to_owned(),
                structure: ShearBuildingConfig {
                    floor_masses_kg: CRISTALLO_DESIGN_MASSES_KG.to_vec(),
                    storey_stiffness_n_per_m: CRISTALLO_DESIGN_STIFFNESS_N_PER_M.to_vec(),
                    damping: Damping::StoreyDampers {
                        storey_damping_n_s_per_m: CRISTALLO_DESIGN_DAMPING_N_S_PER_M.to_vec(),
                    },
                    actuator: None,
                },
                sensors: SensorLayout {
                    force_gauge_floor: Some(1),
                    ..every_floor
                },
            },
        ),
    ]
}

/// The built-in model called `name`, if there is one.
pub fn builtin_model(name: &str) -> Option<ModelSpec> {
    builtin_models()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, spec)| spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_parse_and_print() {
        let r: ModelRef = "southampton@3".parse().unwrap();
        assert_eq!(r.version, Some(3));
        assert_eq!(r.to_string(), "southampton@3");
        assert_eq!("a-1".parse::<ModelRef>().unwrap().version, None);
        for bad in ["", "A", "x@0", "x@", "x@y", "-x", "a b"] {
            assert!(bad.parse::<ModelRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn builtins_are_physical() {
        for (name, spec) in builtin_models() {
            assert!(ModelRef::name_problem(name).is_none());
            assert!(spec.building().is_ok(), "{name}");
        }
    }

    /// The three roots of det(K − λ·M) = 0 for a 3-storey chain, from the characteristic
    /// cubic of M⁻¹·K solved by the trigonometric method (all roots are real and positive for
    /// a physical chain). Independent of the eigen-solver in `dtop-dynamics`.
    fn chain_frequencies_hz_by_cubic(m: [f64; 3], k: [f64; 3]) -> [f64; 3] {
        let [m1, m2, m3] = m;
        let [k1, k2, k3] = k;
        // A = M⁻¹·K, row by row.
        let a = [
            [(k1 + k2) / m1, -k2 / m1, 0.0],
            [-k2 / m2, (k2 + k3) / m2, -k3 / m2],
            [0.0, -k3 / m3, k3 / m3],
        ];
        let trace = a[0][0] + a[1][1] + a[2][2];
        let minors = a[0][0] * a[1][1] - a[0][1] * a[1][0] + a[0][0] * a[2][2] - a[0][2] * a[2][0]
            + a[1][1] * a[2][2]
            - a[1][2] * a[2][1];
        let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
        // λ³ − trace·λ² + minors·λ − det = 0; λ = t + trace/3 gives t³ + p·t + q = 0.
        let p = minors - trace * trace / 3.0;
        let q = -2.0 * trace.powi(3) / 27.0 + trace * minors / 3.0 - det;
        let r = (-p / 3.0).sqrt();
        let phi = ((3.0 * q) / (2.0 * p * r)).clamp(-1.0, 1.0).acos() / 3.0;
        let mut lambdas: Vec<f64> = (0..3)
            .map(|j| {
                2.0 * r * (phi - 2.0 * std::f64::consts::PI * j as f64 / 3.0).cos() + trace / 3.0
            })
            .collect();
        lambdas.sort_by(f64::total_cmp);
        let hz = |l: f64| l.sqrt() / std::f64::consts::TAU;
        [hz(lambdas[0]), hz(lambdas[1]), hz(lambdas[2])]
    }

    fn assert_close_hz(got: &[f64], want: &[f64], name: &str) {
        for (g, w) in got.iter().zip(want) {
            // The trigonometric cubic loses a few digits to cancellation; 1e-9 is far above it
            // and far below any modelling difference.
            assert!(
                ((g - w) / w).abs() < 1e-9,
                "{name}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn every_builtin_has_a_description_and_builds() {
        let names: Vec<_> = builtin_models().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "southampton",
                "southampton-actuator",
                "cristallo-msd3",
                "cristallo-design"
            ]
        );
        for (name, spec) in builtin_models() {
            assert!(!spec.description.is_empty(), "{name}");
            assert!(spec.problems().is_empty(), "{name}: {:?}", spec.problems());
        }
    }

    #[test]
    fn three_storey_builtins_have_the_frequencies_of_their_characteristic_cubic() {
        let k_soton = 4.0 * 12.0 * 70.0e9 * (0.025 * 0.003_f64.powi(3) / 12.0) / 0.1533_f64.powi(3);
        let cases = [
            ("southampton", [5.201; 3], [k_soton; 3]),
            (
                "cristallo-msd3",
                [5.362e4, 5.144e4, 5.142e4],
                [3.846e8, 4.464e8, 4.589e8],
            ),
            (
                "cristallo-design",
                [4.8724882, 5.4758033, 5.6923249],
                [4203.0027, 4147.6895, 5101.4822],
            ),
        ];
        for (name, m, k) in cases {
            let building = builtin_model(name).unwrap().building().unwrap();
            let want = chain_frequencies_hz_by_cubic(m, k);
            assert_close_hz(&building.natural_frequencies_hz(), &want, name);
        }
        // Cristallo's own figures for its twin (TOOLS.md §2.1), to their 6 printed digits.
        let soton = builtin_model("southampton").unwrap().building().unwrap();
        for (got, want) in soton
            .natural_frequencies_hz()
            .iter()
            .zip([7.11370, 19.93213, 28.80276])
        {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn the_actuated_builtin_has_a_proof_mass_mode_where_det_k_minus_w2_m_vanishes() {
        let building = builtin_model("southampton-actuator")
            .unwrap()
            .building()
            .unwrap();
        assert_eq!(building.dofs(), 4);
        assert_eq!(
            building.actuator().unwrap().floor,
            SOUTHAMPTON_ACTUATOR_FLOOR
        );
        let (m, k) = (building.mass_matrix(), building.stiffness_matrix());
        let det_k = k.determinant();
        for f in building.natural_frequencies_hz() {
            let w2 = (std::f64::consts::TAU * f).powi(2);
            // det(K − ω²M) by LU, not by the eigen-solver: it vanishes at each root; away
            // from one (1 % off) it is many orders larger.
            let at = (k - m * w2).determinant() / det_k;
            let off = (k - m * (w2 * 1.0201)).determinant() / det_k;
            assert!(at.abs() < 1e-9 && off.abs() > 1e-4, "{f} Hz: {at} vs {off}");
        }
    }

    #[test]
    fn non_physical_models_are_refused_with_the_reason() {
        let mut spec = builtin_model("cristallo-design").unwrap();
        spec.structure.storey_stiffness_n_per_m[2] = 0.0;
        spec.structure.damping = Damping::Matrix {
            matrix_n_s_per_m: vec![
                vec![1.0, 2.0, 0.0],
                vec![2.0, 1.0, 0.0],
                vec![0.0, 0.0, 1.0],
            ],
        };
        let problems = spec.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("storey_stiffness_n_per_m[2]")
                    && p.message.contains("positive definite")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("not positive semi-definite")),
            "{problems:?}"
        );
        assert!(spec.building().is_err());
    }

    #[test]
    fn a_negative_mass_is_refused_with_the_reason() {
        let mut spec = builtin_models().remove(0).1;
        spec.structure.floor_masses_kg[1] = -1.0;
        let problems = spec.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("floor_masses_kg[1]")),
            "{problems:?}"
        );
    }
}
