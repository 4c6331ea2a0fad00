//! Owns the server's view of the broker's credentials file: loaded at start, re-read when its
//! modification time or size changes (checked on each use; a stat is cheap), and kept as it was
//! when a new version does not parse. Password checks run argon2 on blocking threads, a bounded
//! number at once. Knows nothing about tokens or HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use dtop_auth::{Credentials, CredentialsError, Identity, Secret};
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// What identifies one version of the file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The credentials file, reloaded when it changes.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    current: Mutex<(Stamp, Arc<Credentials>)>,
    verifications: Semaphore,
}

impl Users {
    /// Loads `path`; at most `max_concurrent` password checks run at once.
    ///
    /// # Errors
    /// When the file cannot be read or has bad lines (every one listed).
    pub fn load(path: &Path, max_concurrent: usize) -> Result<Self, CredentialsError> {
        let st = stamp(path);
        let credentials = Credentials::load(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: Mutex::new((st, Arc::new(credentials))),
            verifications: Semaphore::new(max_concurrent.max(1)),
        })
    }

    /// The credentials as they are now on disk (or the last good version).
    pub fn current(&self) -> Arc<Credentials> {
        let now = stamp(&self.path);
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now != guard.0 {
            guard.0 = now;
            match Credentials::load(&self.path) {
                Ok(fresh) => {
                    info!(users = fresh.len(), "Credentials file changed; reloaded.");
                    guard.1 = Arc::new(fresh);
                }
                Err(e) => {
                    warn!(error = %e, "Credentials file changed but cannot be used; keeping the previous version.");
                }
            }
        }
        Arc::clone(&guard.1)
    }

    /// The identity of `username` now (`None` if removed since).
    pub fn identity(&self, username: &str) -> Option<Identity> {
        self.current().identity(username)
    }

    /// Checks a password on a blocking thread, waiting for a free verification slot.
    pub async fn verify(&self, username: &str, password: Secret<String>) -> Option<Identity> {
        let _permit = self.verifications.acquire().await.ok()?;
        let credentials = self.current();
        let username = username.to_owned();
        tokio::task::spawn_blocking(move || {
            credentials.verify(&username, password.expose().as_bytes())
        })
        .await
        .ok()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dtop_auth::{RigSpec, Role, credentials::add_user};

    fn pw(s: &str) -> Secret<String> {
        Secret::new(s.to_owned())
    }

    #[tokio::test]
    async fn picks_up_users_added_and_removed_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        add_user(&path, "ada", Role::Researcher, RigSpec::All, Some(&pw("a"))).unwrap();
        let users = Users::load(&path, 2).unwrap();
        assert_eq!(
            users.verify("ada", pw("a")).await.unwrap().role,
            Role::Researcher
        );
        assert!(users.verify("ada", pw("b")).await.is_none());
        assert!(users.identity("bob").is_none());
        add_user(&path, "bob", Role::Dashboard, RigSpec::All, Some(&pw("b"))).unwrap();
        assert_eq!(users.identity("bob").unwrap().role, Role::Dashboard);
        dtop_auth::credentials::remove_user(&path, "ada").unwrap();
        assert!(users.identity("ada").is_none());
    }

    #[tokio::test]
    async fn keeps_the_last_good_file_when_a_new_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        add_user(&path, "ada", Role::Admin, RigSpec::All, Some(&pw("a"))).unwrap();
        let users = Users::load(&path, 1).unwrap();
        std::fs::write(&path, "this is not a credentials line\n").unwrap();
        assert_eq!(users.identity("ada").unwrap().role, Role::Admin);
    }
}
