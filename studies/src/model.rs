//! Owns models as data: [`ModelSpec`] (an N-storey shear chain with its damping, optional
//! inertial actuator and sensor layout), how a study names one ([`ModelRef`], `name@version`),
//! where a version came from ([`Provenance`]), and the built-in models the catalogue ships with.
//! Turning a spec into matrices is `dtop-dynamics`' job; this module only describes and checks.

use std::fmt;
use std::str::FromStr;

use dtop_dynamics::{ShearBuilding, ShearBuildingConfig};
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

/// The built-in models: `(name, spec)`, each shipped as version 1.
pub fn builtin_models() -> Vec<(&'static str, ModelSpec)> {
    vec![(
        "southampton",
        ModelSpec {
            description:
                "Southampton three-storey aluminium shear frame (Cristallo's physical twin), bare"
                    .to_owned(),
            structure: ShearBuildingConfig::southampton(),
            sensors: SensorLayout::default(),
        },
    )]
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
