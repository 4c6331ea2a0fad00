//! `dtop nats-config`: writes the NATS `authorization` block generated from DTOP's credentials
//! file and role rules (`dtop_auth::nats`), so a NATS cluster enforces the rules `dtop-broker`
//! does. Owns only the file handling; the translation is dtop-auth's.

use std::path::PathBuf;

use dtop_auth::{Credentials, RolesConfig, nats};

/// Options of `dtop nats-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfigArgs {
    /// `dtop-broker`'s configuration: its `[auth]` credentials file and role rules are used,
    /// so the cluster holds exactly the broker's rules.
    #[arg(long, value_name = "FILE")]
    pub broker_config: Option<PathBuf>,
    /// A credentials file, with DTOP's built-in role rules (instead of --broker-config).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Where to write the `authorization { ... }` block (mode 0600, replaced atomically).
    /// `include` it in every node's configuration and reload the nodes.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Why no block was written.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// The options, the broker configuration, the credentials or the rules are unusable;
    /// every problem is listed (exit 64).
    #[error("{} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What was written: the number of users, and the certificate-only users left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// NATS users generated.
    pub users: usize,
    /// Users that log in with a certificate only, not generated.
    pub certificate_only: Vec<String>,
}

/// The credentials and rules the options name, or every problem with them.
fn sources(args: &NatsConfigArgs) -> Result<(Credentials, RolesConfig), Vec<String>> {
    let (credentials_path, roles) = match (&args.broker_config, &args.credentials) {
        (Some(_), Some(_)) => {
            return Err(vec![
                "give --broker-config or --credentials, not both (the broker's config names \
                 its credentials file)"
                    .to_owned(),
            ]);
        }
        (None, None) => {
            return Err(vec![
                "give --broker-config FILE (dtop-broker's config with [auth]) or \
                 --credentials FILE"
                    .to_owned(),
            ]);
        }
        (None, Some(path)) => (path.clone(), RolesConfig::default()),
        (Some(path), None) => {
            let config = dtop_broker::load_config(path)
                .map_err(|e| vec![format!("--broker-config {}: {e}", path.display())])?;
            let Some(auth) = config.auth else {
                return Err(vec![format!(
                    "--broker-config {}: has no [auth] section, so the broker lets everyone do \
                     everything; there are no users to generate",
                    path.display()
                )]);
            };
            (auth.credentials_file, auth.roles)
        }
    };
    let credentials = Credentials::load(&credentials_path)
        .map_err(|e| vec![format!("credentials {}: {e}", credentials_path.display())])?;
    Ok((credentials, roles))
}

/// Generates the block and writes it to `args.out`.
pub fn run(args: &NatsConfigArgs) -> Result<Written, NatsConfigError> {
    let (credentials, roles) = sources(args).map_err(NatsConfigError::Invalid)?;
    let authorization =
        nats::authorization(&credentials, &roles).map_err(NatsConfigError::Invalid)?;
    dtop_auth::credentials::write_private(&args.out, &authorization.render()).map_err(
        |source| NatsConfigError::Write {
            path: args.out.clone(),
            source,
        },
    )?;
    Ok(Written {
        users: authorization.users.len(),
        certificate_only: authorization.certificate_only,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dtop_auth::{RigSpec, Role, Secret, credentials::add_user};
    use std::path::Path;

    fn args(dir: &Path) -> NatsConfigArgs {
        NatsConfigArgs {
            broker_config: None,
            credentials: None,
            out: dir.join("users.conf"),
        }
    }

    #[test]
    fn writes_a_private_block_for_every_password_user() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("passwd");
        let pw = Secret::new("pw".to_owned());
        add_user(&creds, "r1", Role::Rig, RigSpec::Default, Some(&pw)).unwrap();
        add_user(&creds, "edge", Role::Rig, RigSpec::Default, None).unwrap();
        let broker = dir.path().join("broker.toml");
        std::fs::write(
            &broker,
            format!(
                "[auth]\ncredentials_file = \"{}\"\n[auth.roles.rig]\npublish = [\"x/{{rig}}\"]\nsubscribe = []\n",
                creds.display()
            ),
        )
        .unwrap();
        let written = run(&NatsConfigArgs {
            broker_config: Some(broker),
            ..args(dir.path())
        })
        .unwrap();
        assert_eq!(written.users, 1);
        assert_eq!(written.certificate_only, ["edge"]);
        let out = dir.path().join("users.conf");
        let text = std::fs::read_to_string(&out).unwrap();
        // The broker config's own rule for rigs, not the built-in one.
        assert!(text.contains("publish: { allow: [\"x.r1\"] }"), "{text}");
        assert!(text.contains("subscribe: { deny: [\">\"] }"), "{text}");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn lists_every_problem_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let Err(NatsConfigError::Invalid(problems)) = run(&args(dir.path())) else {
            panic!("no source is a usage problem");
        };
        assert!(problems[0].contains("--broker-config"), "{problems:?}");
        let creds = dir.path().join("passwd");
        // Two lines from before NATS support (no bcrypt hash): both reported at once.
        let argon = dtop_auth::credentials::hash_password(&Secret::new("pw".to_owned())).unwrap();
        std::fs::write(
            &creds,
            format!("a:operator:*:{h}\nb:twin:*:{h}\n", h = argon.expose()),
        )
        .unwrap();
        let Err(NatsConfigError::Invalid(problems)) = run(&NatsConfigArgs {
            credentials: Some(creds),
            ..args(dir.path())
        }) else {
            panic!("users without a NATS hash are problems");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(!dir.path().join("users.conf").exists());
    }
}
