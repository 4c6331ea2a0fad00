//! Owns login tokens: random 256-bit values handed to the client once, kept here only as their
//! SHA-256 with the user name, an expiry and the session's own random CSRF token (which browser
//! pages echo back on every state-changing request); logout revokes. Knows nothing about HTTP
//! or passwords.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dtop_auth::Secret;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// The SHA-256 of a token: what the server keeps.
type TokenHash = [u8; 32];

/// One live login.
#[derive(Debug, Clone)]
struct Session {
    username: String,
    expires_at: Instant,
    /// Random, per session: a page proves it was served to this session's holder by sending it.
    csrf: String,
}

/// What a live token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Whose session.
    pub username: String,
    /// The session's CSRF token (base64url of 32 random bytes).
    pub csrf: String,
}

/// Every live token, by hash.
#[derive(Debug)]
pub struct Sessions {
    lifetime: Duration,
    by_hash: Mutex<HashMap<TokenHash, Session>>,
}

/// 32 random bytes from the OS, base64url without padding.
pub fn random_base64url() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Tokens issued here live `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    /// How long a new token lives.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new token for `username` (32 random bytes from the OS, base64url without padding).
    ///
    /// # Errors
    /// When the OS random source fails.
    pub fn issue(&self, username: &str) -> Result<Secret<String>, RandomError> {
        let token = random_base64url()?;
        let csrf = random_base64url()?;
        let now = Instant::now();
        let mut map = self.lock();
        // Expired sessions are dropped at each login, so the map stays as big as the live ones.
        map.retain(|_, s| s.expires_at > now);
        map.insert(
            hash(&token),
            Session {
                username: username.to_owned(),
                expires_at: now + self.lifetime,
                csrf,
            },
        );
        Ok(Secret::new(token))
    }

    /// The user name of a live token.
    pub fn user(&self, token: &str) -> Option<String> {
        self.info(token).map(|s| s.username)
    }

    /// The user name and CSRF token of a live token.
    pub fn info(&self, token: &str) -> Option<SessionInfo> {
        let key = hash(token);
        let mut map = self.lock();
        let session = map.get(&key)?;
        if session.expires_at <= Instant::now() {
            map.remove(&key);
            return None;
        }
        Some(SessionInfo {
            username: session.username.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Revokes a token; whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        self.lock().remove(&hash(token)).is_some()
    }

    /// Live sessions (for metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Session>> {
        // A panic while holding this lock leaves a consistent map (each operation is one
        // insert or remove), so a poisoned lock is still usable.
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_token_is_256_random_bits_in_base64url() {
        let s = Sessions::new(Duration::from_secs(60));
        let a = s.issue("ada").unwrap();
        let b = s.issue("ada").unwrap();
        assert_eq!(a.expose().len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn keeps_only_the_hash_of_a_token() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = s.issue("ada").unwrap();
        let stored = format!("{:?}", s.by_hash.lock().unwrap());
        assert!(!stored.contains(t.expose().as_str()));
        assert_eq!(s.user(t.expose()).as_deref(), Some("ada"));
        assert_eq!(s.user("not-a-token"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_expires_after_its_lifetime() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = s.issue("ada").unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(s.user(t.expose()).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.user(t.expose()).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn each_session_has_its_own_random_csrf_token() {
        let s = Sessions::new(Duration::from_secs(60));
        let a = s.info(s.issue("ada").unwrap().expose()).unwrap();
        let b = s.info(s.issue("ada").unwrap().expose()).unwrap();
        assert_eq!(a.csrf.len(), 43);
        assert_ne!(a.csrf, b.csrf);
    }

    #[test]
    fn logout_revokes_only_that_token() {
        let s = Sessions::new(Duration::from_secs(60));
        let a = s.issue("ada").unwrap();
        let b = s.issue("ada").unwrap();
        assert!(s.revoke(a.expose()));
        assert!(!s.revoke(a.expose()));
        assert!(s.user(a.expose()).is_none());
        assert!(s.user(b.expose()).is_some());
    }
}
