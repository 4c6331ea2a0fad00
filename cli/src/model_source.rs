//! Owns `--model M` on `dtop modal | frf | control | dvf-critical-gain`: finds the model as a
//! built-in name, a ModelSpec file, or a catalogue version fetched from the API server, in that
//! order. Knows nothing about the computations.

use clap::Args;

use dtop_dynamics::ShearBuildingConfig;
use dtop_studies::ModelSpec;

use crate::client::{ApiClient, ClientError, ConnectionArgs, path_segment};
use crate::params::{self, ModelArg};

/// `--model` and, for catalogue models, how to reach the server.
#[derive(Debug, Clone, Args)]
pub struct ModelOption {
    /// The model: a built-in name (`southampton`, ...), a ModelSpec file (JSON or TOML), or
    /// `name[@version]` from the API server's catalogue. Default: the Southampton building.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The built-in model called `name`, if there is one.
pub fn builtin(name: &str) -> Option<ModelSpec> {
    dtop_studies::model::builtin_models()
        .into_iter()
        .find_map(|(n, spec)| (n == name).then_some(spec))
}

/// The structure to compute on.
///
/// # Errors
/// `Usage` for a bad name or file; the client's errors for a catalogue fetch.
pub fn resolve(option: &ModelOption) -> Result<ShearBuildingConfig, ClientError> {
    let Some(text) = option.model.as_deref() else {
        return Ok(ShearBuildingConfig::southampton());
    };
    if let Some(spec) = builtin(text) {
        return Ok(spec.structure);
    }
    let spec = match ModelArg::parse(text).map_err(|e| ClientError::Usage(vec![e]))? {
        ModelArg::File(path) => params::read_model_spec(&path).map_err(ClientError::Usage)?,
        ModelArg::Catalogue(r) => {
            let api = ApiClient::login(&option.connection)?;
            let version = r
                .version
                .map_or_else(|| "latest".to_owned(), |v| v.to_string());
            let answer = api.get(&format!("models/{}/{version}", path_segment(&r.name)), &[])?;
            serde_json::from_value::<ModelSpec>(answer["spec"].clone()).map_err(|e| {
                ClientError::Failed(format!("the server's model {r} is not a ModelSpec: {e}"))
            })?
        }
    };
    Ok(spec.structure)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn option(model: Option<&str>) -> ModelOption {
        ModelOption {
            model: model.map(str::to_owned),
            connection: ConnectionArgs {
                server: "http://127.0.0.1:9".into(),
                user: None,
                password_file: None,
            },
        }
    }

    #[test]
    fn without_model_and_by_builtin_name_it_is_the_southampton_building() {
        assert_eq!(
            resolve(&option(None)).unwrap(),
            ShearBuildingConfig::southampton()
        );
        assert_eq!(
            resolve(&option(Some("southampton"))).unwrap(),
            ShearBuildingConfig::southampton()
        );
    }

    #[test]
    fn a_model_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.toml");
        std::fs::write(
            &path,
            "[structure]\nfloor_masses_kg = [2.0, 1.0]\nstorey_stiffness_n_per_m = [800.0, 400.0]\n\
             [structure.damping]\nkind = \"modal\"\nzetas = [0.01, 0.01]\n",
        )
        .unwrap();
        let structure = resolve(&option(Some(path.to_str().unwrap()))).unwrap();
        assert_eq!(structure.floor_masses_kg, vec![2.0, 1.0]);
        std::fs::write(&path, "[structure]\nfloor_masses_kg = [-2.0]\n").unwrap();
        assert!(matches!(
            resolve(&option(Some(path.to_str().unwrap()))),
            Err(ClientError::Usage(_))
        ));
    }
}
