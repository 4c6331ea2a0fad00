//! Owns the identifiers of this crate: a twin process's [`TwinId`] and a tenure's [`Epoch`].
//! Rig ids are `dtop_proto::RigId`, the same validated id the topics use.

use std::fmt;

/// Why a string is not a valid twin id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinIdError {
    #[error("twin id is empty")]
    Empty,
    #[error("twin id is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error(
        "twin id {id:?} contains {ch:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
    )]
    BadChar { id: String, ch: char },
}

/// One `dtop-twin` process's identity in the membership and lease tables, stable across its
/// restarts (a host name, or the twin's MQTT client id).
///
/// Restricted to `[A-Za-z0-9_.-]{1,64}`: it is printed in logs and compared byte for byte by
/// every twin's assignment, so it carries no whitespace or look-alike characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TwinId(String);

impl TwinId {
    /// Longest accepted id, bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, TwinIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(TwinIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(TwinIdError::TooLong {
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(TwinIdError::BadChar { id, ch });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TwinId {
    type Error = TwinIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TwinId> for String {
    fn from(id: TwinId) -> Self {
        id.0
    }
}

impl fmt::Display for TwinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TwinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TwinId({})", self.0)
    }
}

/// A tenure of one rig: grows by one every time a twin starts holding the rig's lease, and never
/// changes while that twin renews it. Stored as a `BIGINT`, so it stays below 2⁶³.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Epoch(u64);

impl Epoch {
    /// A registered rig that nobody has held yet; the first owner gets `Epoch(1)`.
    pub const NEVER_OWNED: Epoch = Epoch(0);

    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_and_refuses_spaces_and_wildcards() {
        assert_eq!(
            TwinId::new("twin-3.lab_a").map(|t| t.to_string()),
            Ok("twin-3.lab_a".into())
        );
        for bad in ["a b", "a/b", "+", "é"] {
            assert!(
                matches!(TwinId::new(bad), Err(TwinIdError::BadChar { .. })),
                "{bad}"
            );
        }
        assert_eq!(TwinId::new(""), Err(TwinIdError::Empty));
        assert!(matches!(
            TwinId::new("t".repeat(65)),
            Err(TwinIdError::TooLong { .. })
        ));
    }
}
