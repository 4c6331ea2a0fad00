//! Owns the credentials file: one user per line with role, rig scope, an argon2id hash and a
//! bcrypt hash of the same password for NATS, and the `dtop-broker passwd` edits of it. Knows
//! nothing about MQTT or topic rules.
//!
//! Format, one line per user (`#` starts a comment):
//!
//! ```text
//! username:role:rigs:hash[:nats-hash]
//! so-3s:rig:-:$argon2id$v=19$m=19456,t=2,p=1$...:$2b$11$...
//! alice:operator:so-3s,so-5s:$argon2id$...:$2b$11$...
//! twin:twin:*:$argon2id$...
//! edge-cert:rig:so-3s:-
//! ```
//!
//! `rigs` is `*` (all), a comma list, or `-` (for a rig: its own username; otherwise none).
//! A hash of `-` allows no password login (certificate only). PHC hash strings contain no `:`.
//! The fifth field, optional so that files written before it still parse (issue 16), is the
//! bcrypt hash NATS verifies (it cannot verify argon2id); `dtop nats-config` needs it for
//! every password user. Bcrypt strings contain no `:` either.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use dtop_proto::RigId;

use crate::acl::{Identity, RigScope, Role};
use crate::secret::Secret;

/// Why `username` cannot hold `role` with `rigs`: a rig with the default scope addresses its
/// own topics by its user name (`{rig}` becomes the name), so the name must be a valid rig id;
/// `+`, `#` or `/` in it would widen or break every pattern it is substituted into.
pub fn username_problem(username: &str, role: Role, rigs: &RigSpec) -> Option<String> {
    if role != Role::Rig || *rigs != RigSpec::Default {
        return None;
    }
    RigId::new(username).err().map(|e| {
        format!("user name {username:?} is not a valid rig id for role rig (its topics use the name): {e}")
    })
}

/// Why the credentials file could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing the file failed.
    #[error("cannot access the credentials file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Lines are malformed; every problem is listed.
    #[error("credentials file has {} bad line(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Malformed(Vec<String>),
    /// A user name or rig list cannot be stored in the line format.
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    /// Hashing failed (argon2 or bcrypt parameters, or the OS RNG).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Which rigs a user may address, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RigSpec {
    /// `-`: the default (a rig's own username, nothing for other roles).
    Default,
    /// `*`: every rig.
    All,
    /// An explicit list.
    List(Vec<String>),
}

impl RigSpec {
    /// Parses the third field.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "-" | "" => Ok(Self::Default),
            "*" => Ok(Self::All),
            list => {
                let rigs: Vec<String> = list.split(',').map(|r| r.trim().to_owned()).collect();
                // The same rule as every rig id in DTOP, so a scope can name only real rigs.
                match rigs.iter().find_map(|r| RigId::new(r.as_str()).err()) {
                    Some(bad) => Err(format!("bad rig in {list:?}: {bad}")),
                    None => Ok(Self::List(rigs)),
                }
            }
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Default => "-".to_owned(),
            Self::All => "*".to_owned(),
            Self::List(rigs) => rigs.join(","),
        }
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// Selects the topic rules.
    pub role: Role,
    /// Substituted for `{rig}`.
    pub rigs: RigSpec,
    /// argon2id PHC string; `None` allows no password login.
    pub hash: Option<Secret<String>>,
    /// bcrypt hash of the same password, for NATS; `None` in lines written before issue 16
    /// (or for certificate-only users).
    pub nats_hash: Option<Secret<String>>,
}

/// The parsed credentials file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    users: BTreeMap<String, UserEntry>,
}

/// Verifies against this when the user is unknown, so a miss costs as much time as a hit
/// and response timing does not reveal which user names exist.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHRvcC1kZWNveS1zYWx0$mOCvGpF3sTbFNt1W1Gp2S8fEu8D0vNVjmCLzjCTBK/I";

impl Credentials {
    /// Parses the file's text, reporting every bad line at once.
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        let mut users = BTreeMap::new();
        let mut problems = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = index + 1;
            let fields: Vec<&str> = line.splitn(5, ':').collect();
            let (user, role, rigs, hash, nats_hash) = match fields[..] {
                [user, role, rigs, hash] => (user, role, rigs, hash, "-"),
                [user, role, rigs, hash, nats_hash] => (user, role, rigs, hash, nats_hash),
                _ => {
                    problems.push(format!(
                        "line {n}: expected username:role:rigs:hash[:nats-hash]"
                    ));
                    continue;
                }
            };
            let Some(role) = Role::parse(role) else {
                problems.push(format!("line {n}: unknown role {role:?}"));
                continue;
            };
            let rigs = match RigSpec::parse(rigs) {
                Ok(rigs) => rigs,
                Err(e) => {
                    problems.push(format!("line {n}: {e}"));
                    continue;
                }
            };
            let hash = match hash {
                "-" => None,
                phc if PasswordHash::new(phc).is_ok() => Some(Secret::new(phc.to_owned())),
                _ => {
                    problems.push(format!("line {n}: the hash is not a PHC string"));
                    continue;
                }
            };
            let nats_hash = match nats_hash {
                "-" => None,
                bcrypt_hash if is_bcrypt(bcrypt_hash) => Some(Secret::new(bcrypt_hash.to_owned())),
                _ => {
                    problems.push(format!(
                        "line {n}: the NATS hash (fifth field) is not a bcrypt hash; set the \
                         password again with `dtop-broker passwd add`"
                    ));
                    continue;
                }
            };
            if nats_hash.is_some() && hash.is_none() {
                problems.push(format!(
                    "line {n}: a NATS hash without a password hash; set the password again \
                     with `dtop-broker passwd add`"
                ));
                continue;
            }
            if user.is_empty() {
                problems.push(format!("line {n}: empty username"));
                continue;
            }
            if let Some(problem) = username_problem(user, role, &rigs) {
                problems.push(format!("line {n}: {problem}"));
                continue;
            }
            if users
                .insert(
                    user.to_owned(),
                    UserEntry {
                        role,
                        rigs,
                        hash,
                        nats_hash,
                    },
                )
                .is_some()
            {
                problems.push(format!("line {n}: user {user:?} appears twice"));
            }
        }
        if problems.is_empty() {
            Ok(Self { users })
        } else {
            Err(CredentialsError::Malformed(problems))
        }
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The file text for these users, sorted by name.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# dtop-broker credentials: username:role:rigs:argon2id-hash[:bcrypt-hash-for-nats]\n",
        );
        for (user, entry) in &self.users {
            let hash = entry.hash.as_ref().map_or("-", |h| h.expose().as_str());
            text.push_str(&format!(
                "{user}:{}:{}:{hash}",
                entry.role,
                entry.rigs.render()
            ));
            if let Some(nats_hash) = &entry.nats_hash {
                text.push(':');
                text.push_str(nats_hash.expose());
            }
            text.push('\n');
        }
        text
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The entry of `username`.
    pub fn user(&self, username: &str) -> Option<&UserEntry> {
        self.users.get(username)
    }

    /// Every user with its entry, sorted by name.
    pub fn users(&self) -> impl Iterator<Item = (&str, &UserEntry)> {
        self.users
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    /// Users whose name cannot stand for `{username}` in their role's rules (`uses_username`
    /// says which roles' rules contain it): the name must be a valid rig id, since a `/`, `+`
    /// or `#` in it would change what the pattern matches. Every such user is listed.
    pub fn placeholder_problems(&self, uses_username: impl Fn(Role) -> bool) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, entry)| uses_username(entry.role))
            .filter_map(|(user, entry)| {
                RigId::new(user.as_str()).err().map(|e| {
                    format!(
                        "user {user:?}: role {} substitutes the user name into topics, but it is not a valid rig id: {e}",
                        entry.role
                    )
                })
            })
            .collect()
    }

    /// Adds or replaces a user.
    pub fn upsert(&mut self, username: &str, entry: UserEntry) -> Result<(), CredentialsError> {
        if username.is_empty() || username.contains([':', '\n', '\r']) || username.starts_with('#')
        {
            return Err(CredentialsError::InvalidEntry(format!(
                "user name {username:?} must be non-empty and contain no ':' or newline"
            )));
        }
        if let Some(problem) = username_problem(username, entry.role, &entry.rigs) {
            return Err(CredentialsError::InvalidEntry(problem));
        }
        self.users.insert(username.to_owned(), entry);
        Ok(())
    }

    /// Removes a user; whether it existed.
    pub fn remove(&mut self, username: &str) -> bool {
        self.users.remove(username).is_some()
    }

    /// The identity of `username` (its rig scope resolved), without checking a password: for
    /// client certificates, whose chain the TLS layer has already verified.
    pub fn identity(&self, username: &str) -> Option<Identity> {
        let entry = self.users.get(username)?;
        let rigs = match (&entry.rigs, entry.role) {
            (RigSpec::All, _) => RigScope::All,
            (RigSpec::List(rigs), _) => RigScope::Only(rigs.clone()),
            (RigSpec::Default, Role::Rig) => RigScope::Only(vec![username.to_owned()]),
            (RigSpec::Default, _) => RigScope::Only(Vec::new()),
        };
        Some(Identity {
            username: username.to_owned(),
            role: entry.role,
            rigs,
        })
    }

    /// Checks a password login. Slow on purpose (argon2id); call from a blocking thread.
    pub fn verify(&self, username: &str, password: &[u8]) -> Option<Identity> {
        let hash = self.users.get(username).and_then(|e| e.hash.as_ref());
        let phc = hash.map_or(DECOY_HASH, |h| h.expose().as_str());
        let ok = PasswordHash::new(phc)
            .ok()
            .is_some_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok());
        if ok && hash.is_some() {
            self.identity(username)
        } else {
            None
        }
    }
}

/// Hashes `password` with argon2id (the crate's default, OWASP-recommended parameters) and a
/// fresh random salt.
pub fn hash_password(password: &Secret<String>) -> Result<Secret<String>, CredentialsError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| Secret::new(hash.to_string()))
        .map_err(|e| CredentialsError::Hash(e.to_string()))
}

/// bcrypt's cost for the NATS hash: 2^11 rounds, the cost NATS's own password tool uses. NATS
/// pays it at every password login.
pub const NATS_BCRYPT_COST: u32 = 11;

/// Hashes `password` with bcrypt (a fresh random salt), the form NATS verifies.
pub fn hash_password_for_nats(
    password: &Secret<String>,
) -> Result<Secret<String>, CredentialsError> {
    bcrypt::hash(password.expose().as_bytes(), NATS_BCRYPT_COST)
        .map(Secret::new)
        .map_err(|e| CredentialsError::Hash(e.to_string()))
}

/// Whether `text` is a bcrypt hash string (`$2b$11$` + 53 characters).
fn is_bcrypt(text: &str) -> bool {
    text.parse::<bcrypt::HashParts>().is_ok()
}

/// Loads `path`, or an empty set when it does not exist yet.
fn load_or_empty(path: &Path) -> Result<Credentials, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Credentials::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(source) => Err(CredentialsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `credentials` to `path` atomically (temp file + rename), readable by the owner only.
fn store(path: &Path, credentials: &Credentials) -> Result<(), CredentialsError> {
    write_private(path, &credentials.render()).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to `path` through a synced temp file and a rename, readable by the owner
/// only: for files holding password hashes (the credentials file, NATS's generated users).
///
/// # Errors
/// Creating, writing, syncing or renaming the temp file.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `dtop-broker passwd add`: adds or replaces `username` in the file at `path`.
pub fn add_user(
    path: &Path,
    username: &str,
    role: Role,
    rigs: RigSpec,
    password: Option<&Secret<String>>,
) -> Result<(), CredentialsError> {
    let mut credentials = load_or_empty(path)?;
    let hash = password.map(hash_password).transpose()?;
    // Both hashes come from the one password given here, so they never disagree; a new
    // password replaces both.
    let nats_hash = password.map(hash_password_for_nats).transpose()?;
    credentials.upsert(
        username,
        UserEntry {
            role,
            rigs,
            hash,
            nats_hash,
        },
    )?;
    store(path, &credentials)
}

/// `dtop-broker passwd remove`: removes `username`; whether it was there.
pub fn remove_user(path: &Path, username: &str) -> Result<bool, CredentialsError> {
    let mut credentials = load_or_empty(path)?;
    let removed = credentials.remove(username);
    if removed {
        store(path, &credentials)?;
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_argon2id_and_verifies_only_the_right_password() {
        let hash = hash_password(&Secret::new("s3cret".to_owned())).unwrap();
        assert!(hash.expose().starts_with("$argon2id$"));
        let mut creds = Credentials::default();
        creds
            .upsert(
                "r1",
                UserEntry {
                    role: Role::Rig,
                    rigs: RigSpec::Default,
                    hash: Some(hash),
                    nats_hash: None,
                },
            )
            .unwrap();
        let identity = creds.verify("r1", b"s3cret").unwrap();
        assert_eq!(identity.rigs, RigScope::Only(vec!["r1".to_owned()]));
        assert!(creds.verify("r1", b"wrong").is_none());
        assert!(creds.verify("nobody", b"s3cret").is_none());
    }

    #[test]
    fn round_trips_through_text_and_reports_every_bad_line() {
        let text = "# c\nop:operator:a,b:-\ntw:twin:*:-\n";
        let creds = Credentials::parse(text).unwrap();
        assert_eq!(Credentials::parse(&creds.render()).unwrap(), creds);
        assert_eq!(
            creds.identity("op").unwrap().rigs,
            RigScope::Only(vec!["a".into(), "b".into()])
        );
        let Err(CredentialsError::Malformed(problems)) =
            Credentials::parse("x:wizard:-:-\ny\nz:rig:a/b:-\nop:admin:-:notahash\n")
        else {
            panic!("expected Malformed");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn refuses_rig_names_that_are_not_rig_ids_in_the_file_and_in_edits() {
        let Err(CredentialsError::Malformed(problems)) =
            Credentials::parse("+:rig:-:-\na/b:rig:-:-\nok:rig:-:-\nx/y:operator:-:-\n")
        else {
            panic!("expected Malformed");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 1:") && problems[1].starts_with("line 2:"));
        let entry = UserEntry {
            role: Role::Rig,
            rigs: RigSpec::Default,
            hash: None,
            nats_hash: None,
        };
        let mut creds = Credentials::default();
        assert!(creds.upsert("+", entry.clone()).is_err());
        assert!(creds.upsert("so-3s", entry).is_ok());
        // With an explicit rig list the name is never substituted into a topic.
        let listed = Credentials::parse("a/b:rig:so-3s:-\n").unwrap();
        assert!(listed.placeholder_problems(|_| false).is_empty());
        assert_eq!(
            listed.placeholder_problems(|role| role == Role::Rig).len(),
            1
        );
    }

    #[test]
    fn reads_lines_without_a_nats_hash_and_round_trips_lines_with_one() {
        let argon = hash_password(&Secret::new("pw".to_owned())).unwrap();
        let nats = hash_password_for_nats(&Secret::new("pw".to_owned())).unwrap();
        let old = format!("r1:rig:-:{}\n", argon.expose());
        let creds = Credentials::parse(&old).unwrap();
        assert_eq!(creds.user("r1").unwrap().nats_hash, None);
        // A file without NATS hashes is written back exactly as it was read.
        assert!(creds.render().ends_with(&old), "{}", creds.render());
        let new = format!("r1:rig:-:{}:{}\n", argon.expose(), nats.expose());
        let creds = Credentials::parse(&new).unwrap();
        assert_eq!(creds.user("r1").unwrap().nats_hash.as_ref(), Some(&nats));
        assert_eq!(Credentials::parse(&creds.render()).unwrap(), creds);
        let Err(CredentialsError::Malformed(problems)) = Credentials::parse(&format!(
            "a:rig:-:{}:notbcrypt\nb:rig:-:-:{}\n",
            argon.expose(),
            nats.expose()
        )) else {
            panic!("expected Malformed");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("not a bcrypt hash"), "{problems:?}");
    }

    #[test]
    fn add_user_writes_a_bcrypt_hash_of_the_same_password_for_nats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let pw = Secret::new("correct horse".to_owned());
        add_user(&path, "op", Role::Operator, RigSpec::All, Some(&pw)).unwrap();
        let creds = Credentials::load(&path).unwrap();
        let nats = creds.user("op").unwrap().nats_hash.clone().unwrap();
        // Checked with the bcrypt crate's own verifier, independent of how we stored it.
        assert!(nats.expose().starts_with("$2b$11$"));
        assert!(bcrypt::verify("correct horse", nats.expose()).unwrap());
        assert!(!bcrypt::verify("wrong horse", nats.expose()).unwrap());
        add_user(&path, "cert", Role::Rig, RigSpec::Default, None).unwrap();
        let creds = Credentials::load(&path).unwrap();
        assert_eq!(creds.user("cert").unwrap().nats_hash, None);
    }

    #[test]
    fn certificate_only_users_cannot_log_in_with_a_password() {
        let creds = Credentials::parse("edge:rig:-:-\n").unwrap();
        assert!(creds.verify("edge", b"").is_none());
        assert!(creds.identity("edge").is_some());
    }

    #[test]
    fn decoy_hash_is_a_valid_phc_string() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
    }

    #[test]
    fn add_and_remove_edit_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let pw = Secret::new("pw".to_owned());
        add_user(&path, "r1", Role::Rig, RigSpec::Default, Some(&pw)).unwrap();
        add_user(&path, "d", Role::Dashboard, RigSpec::All, Some(&pw)).unwrap();
        let creds = Credentials::load(&path).unwrap();
        assert_eq!(creds.len(), 2);
        assert!(creds.verify("d", b"pw").is_some());
        assert!(remove_user(&path, "r1").unwrap());
        assert!(!remove_user(&path, "r1").unwrap());
        assert_eq!(Credentials::load(&path).unwrap().len(), 1);
    }
}
