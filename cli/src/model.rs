//! `dtop model list | show | add | import`: the catalogue from the command line, and the
//! reading of model files — a ModelSpec (JSON or TOML), or Cristallo-style plain chain
//! parameters (see [`from_plain_parameters`]) for `import`. Requests go through
//! [`crate::client`].

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use dtop_dynamics::{Damping, ShearBuildingConfig};
use dtop_studies::{ModelRef, ModelSpec, Provenance};

use crate::client::{ApiClient, ClientError, ConnectionArgs, path_segment};
use crate::params;

/// `dtop model ...`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// The `dtop model` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ModelCommand {
    /// Every version of every catalogue model, as JSON.
    List,
    /// One model: `NAME` (every version) or `NAME@VERSION`, as JSON.
    Show {
        /// `name` or `name@version`.
        model: String,
    },
    /// Add a version of NAME from a ModelSpec file (JSON or TOML); provenance "manual".
    Add {
        /// Catalogue name.
        name: String,
        /// The ModelSpec file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Import a version of NAME from a file, recording its name and SHA-256: a ModelSpec, or
    /// Cristallo-style plain chain parameters (`m`, `k`, `zeta`, optional `floors`).
    Import {
        /// Catalogue name.
        name: String,
        /// The file (JSON, or TOML by its `.toml` extension).
        #[arg(long)]
        file: PathBuf,
    },
    /// Approve a version a study proposed (`NAME@VERSION`): the twin may then adopt it.
    /// Who, when and the note are kept with the version.
    Approve {
        /// `name@version`.
        model: String,
        /// Why (kept with the version).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a version a study proposed (`NAME@VERSION`).
    Reject {
        /// `name@version`.
        model: String,
        /// Why (kept with the version).
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// `name@version` (a version is required: one reviews a version, not "the latest").
fn exact_version(model: &str) -> Result<(String, u32), ClientError> {
    let r: ModelRef = model
        .parse()
        .map_err(|e: String| ClientError::Usage(vec![e]))?;
    match r.version {
        Some(v) => Ok((r.name, v)),
        None => Err(ClientError::Usage(vec![format!(
            "{model:?}: name the version to review, e.g. {}@2 (`dtop model show {}` lists them)",
            r.name, r.name
        )])),
    }
}

/// Runs a `dtop model` command; the exit status on success.
///
/// # Errors
/// Every way it can fail, each with its exit status.
pub fn run(args: &ModelArgs) -> Result<u8, ClientError> {
    let answer = match &args.command {
        ModelCommand::List => ApiClient::login(&args.connection)?.get("models", &[])?,
        ModelCommand::Show { model } => {
            let r: ModelRef = model
                .parse()
                .map_err(|e: String| ClientError::Usage(vec![e]))?;
            let api = ApiClient::login(&args.connection)?;
            match r.version {
                Some(v) => api.get(&format!("models/{}/{v}", path_segment(&r.name)), &[])?,
                None => api.get(&format!("models/{}", path_segment(&r.name)), &[])?,
            }
        }
        ModelCommand::Add { name, file } => {
            let mut problems: Vec<String> = ModelRef::name_problem(name).into_iter().collect();
            let spec = params::read_model_spec(file).map_err(|mut p| {
                problems.append(&mut p);
                ClientError::Usage(problems.clone())
            })?;
            if !problems.is_empty() {
                return Err(ClientError::Usage(problems));
            }
            let body = json!({"name": name, "spec": spec, "provenance": Provenance::Manual});
            ApiClient::login(&args.connection)?.post("models", &body)?
        }
        ModelCommand::Import { name, file } => {
            let mut problems: Vec<String> = ModelRef::name_problem(name).into_iter().collect();
            let (spec, provenance) = import_file(file).map_err(|mut p| {
                problems.append(&mut p);
                ClientError::Usage(problems.clone())
            })?;
            if !problems.is_empty() {
                return Err(ClientError::Usage(problems));
            }
            let body = json!({"name": name, "spec": spec, "provenance": provenance});
            ApiClient::login(&args.connection)?.post("models", &body)?
        }
        ModelCommand::Approve { model, note } | ModelCommand::Reject { model, note } => {
            let decision = if matches!(args.command, ModelCommand::Approve { .. }) {
                "approve"
            } else {
                "reject"
            };
            let (name, version) = exact_version(model)?;
            let body = json!({"decision": decision, "note": note});
            ApiClient::login(&args.connection)?.post(
                &format!("models/{}/{version}/review", path_segment(&name)),
                &body,
            )?
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(0)
}

/// Reads `path` for `dtop model import`: the spec, and the provenance naming the file and the
/// SHA-256 of its bytes.
///
/// # Errors
/// Every problem of the file.
pub fn import_file(path: &Path) -> Result<(ModelSpec, Provenance), Vec<String>> {
    let bytes =
        std::fs::read(path).map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| vec![format!("{} is not UTF-8 text", path.display())])?;
    let spec = import_text(&text, params::is_toml(path)).map_err(|p| {
        p.into_iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
    })?;
    let sha256_hex = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((
        spec,
        Provenance::Imported {
            file_name,
            sha256_hex,
        },
    ))
}

/// A ModelSpec when the document has a `structure`; otherwise plain chain parameters.
///
/// # Errors
/// Every problem found.
pub fn import_text(text: &str, toml: bool) -> Result<ModelSpec, Vec<String>> {
    let value = params::parse_document(text, toml).map_err(|e| vec![e])?;
    let spec = if value.get("structure").is_some() {
        serde_json::from_value::<ModelSpec>(value)
            .map_err(|e| vec![format!("not a ModelSpec: {e}")])?
    } else {
        from_plain_parameters(value)?
    };
    let problems: Vec<String> = spec
        .problems()
        .into_iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

/// A number for every floor, or one number for all of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PerFloor {
    /// The same value on every floor.
    One(f64),
    /// One value per floor, lowest first.
    Each(Vec<f64>),
}

/// Cristallo-style plain chain parameters (the shape of its profile files, e.g. `m = 5`,
/// `k = 40000`), in SI units.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainParameters {
    /// Floor masses, kg: one for all floors or one per floor.
    m: PerFloor,
    /// Storey stiffnesses, N/m: one for all or one per storey.
    k: PerFloor,
    /// Modal damping ratio (fraction of critical) of every mode.
    zeta: Option<f64>,
    /// Storey dashpots, N·s/m: accepted only to refuse them with the reason.
    c: Option<Value>,
    /// Number of floors when `m` and `k` are single numbers (default 3, Cristallo's chain).
    floors: Option<usize>,
    /// Free text kept as the model's description.
    description: Option<String>,
}

/// Converts Cristallo-style plain parameters to a ModelSpec with classical modal damping.
///
/// Cristallo's profiles give storey dashpots `c`. A chain of dashpots is not classical damping
/// in general and `ModelSpec` has no explicit damping matrix, so `c` is refused with the reason
/// rather than silently approximated: give `zeta` instead.
///
/// # Errors
/// Every problem found.
pub fn from_plain_parameters(value: Value) -> Result<ModelSpec, Vec<String>> {
    let plain: PlainParameters = serde_json::from_value(value).map_err(|e| {
        vec![format!(
            "neither a ModelSpec (no `structure`) nor plain parameters `m`, `k`, `zeta`, `floors`: {e}"
        )]
    })?;
    let mut problems = Vec::new();
    if plain.c.is_some() {
        problems.push(
            "`c` (storey dashpots) cannot be imported: a dashpot chain is not classical damping \
             and a model's damping is Rayleigh or modal; give `zeta`, the modal damping ratio"
                .to_owned(),
        );
    }
    let floors = match (&plain.m, &plain.k) {
        (PerFloor::Each(m), _) => m.len(),
        (_, PerFloor::Each(k)) => k.len(),
        _ => plain.floors.unwrap_or(3),
    };
    if plain.floors.is_some_and(|f| f != floors) {
        problems.push(format!(
            "`floors` = {} disagrees with the {floors} values given",
            plain.floors.unwrap_or_default()
        ));
    }
    let expand = |v: &PerFloor| match v {
        PerFloor::One(x) => vec![*x; floors],
        PerFloor::Each(xs) => xs.clone(),
    };
    let Some(zeta) = plain.zeta else {
        problems.push("`zeta` (modal damping ratio, e.g. 0.02) is missing".to_owned());
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ModelSpec {
        description: plain
            .description
            .unwrap_or_else(|| "Imported from plain chain parameters".to_owned()),
        structure: ShearBuildingConfig {
            floor_masses_kg: expand(&plain.m),
            storey_stiffness_n_per_m: expand(&plain.k),
            damping: Damping::Modal {
                zetas: vec![zeta; floors],
            },
            actuator: None,
        },
        sensors: Default::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_expand_to_three_floors_with_modal_damping() {
        let spec = import_text("m = 5.0\nk = 40000.0\nzeta = 0.02\n", true).unwrap();
        assert_eq!(spec.structure.floor_masses_kg, vec![5.0; 3]);
        assert_eq!(spec.structure.storey_stiffness_n_per_m, vec![40000.0; 3]);
        assert_eq!(
            spec.structure.damping,
            Damping::Modal {
                zetas: vec![0.02; 3]
            }
        );
    }

    #[test]
    fn plain_lists_set_the_floor_count() {
        let spec = import_text(
            r#"{"m": [5.3, 5.1, 4.9, 5], "k": 40000, "zeta": 0.01}"#,
            false,
        )
        .unwrap();
        assert_eq!(spec.floors(), 4);
        assert_eq!(spec.structure.storey_stiffness_n_per_m.len(), 4);
    }

    #[test]
    fn dashpots_a_missing_zeta_and_a_negative_mass_are_refused_with_reasons() {
        let problems = import_text(r#"{"m": 5, "k": 4e4, "c": 6}"#, false).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("dashpot"));
        let problems =
            import_text(r#"{"m": [5, -1, 5], "k": 4e4, "zeta": 0.02}"#, false).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("floor_masses_kg[1]")),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_model_spec_imports_as_itself_with_the_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rig.json");
        let spec = dtop_studies::model::builtin_models().remove(0).1;
        std::fs::write(&path, b"").unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        std::fs::write(&path, &text).unwrap();
        let (imported, provenance) = import_file(&path).unwrap();
        assert_eq!(imported, spec);
        // The digest checked against an independent implementation: `sha256sum` of the bytes.
        let expected = std::process::Command::new("sha256sum")
            .arg(&path)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap();
        assert_eq!(
            provenance,
            Provenance::Imported {
                file_name: "rig.json".into(),
                sha256_hex: expected
            }
        );
    }
}
