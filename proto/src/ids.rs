//! Validated identifiers. Owns the rules for what may appear inside a topic level.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RigIdError {
    #[error("rig id is empty")]
    Empty,
    #[error("rig id is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("rig id {id:?} contains {ch:?}; only ASCII letters, digits, '-' and '_' are allowed")]
    BadChar { id: String, ch: char },
}

/// A rig's identity, as it appears in topics and as the InfluxDB `rig` tag.
///
/// Restricted to `[A-Za-z0-9_-]{1,64}` so it can never contain MQTT wildcards, a level separator,
/// or characters that line protocol would need to escape.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RigId(String);

impl RigId {
    /// Longest accepted id, bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, RigIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(RigIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(RigIdError::TooLong {
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        if let Some(ch) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(RigIdError::BadChar { id, ch });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RigId {
    type Error = RigIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<RigId> for String {
    fn from(id: RigId) -> Self {
        id.0
    }
}

impl fmt::Display for RigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RigId({})", self.0)
    }
}

impl std::str::FromStr for RigId {
    type Err = RigIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(
            RigId::new("southampton-3s_01").map(|r| r.to_string()),
            Ok("southampton-3s_01".into())
        );
    }

    #[test]
    fn refuses_wildcards_separators_and_spaces() {
        for bad in ["a/b", "+", "#", "a b", "ri,g", "é"] {
            assert!(
                matches!(RigId::new(bad), Err(RigIdError::BadChar { .. })),
                "{bad}"
            );
        }
        assert_eq!(RigId::new(""), Err(RigIdError::Empty));
        assert!(matches!(
            RigId::new("x".repeat(65)),
            Err(RigIdError::TooLong { .. })
        ));
    }
}
