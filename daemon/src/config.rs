//! Owns the config-loading shell: read the file, collect every parse-level problem, merge the
//! daemon's own validation problems, and say how a refused config reads to an operator.
//! Knows nothing about any daemon's config type beyond `Deserialize`.

pub mod collect;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use collect::{Collected, collect};

/// Exit status for a refused config (`EX_CONFIG` would be 78; DTOP uses sysexits' `EX_USAGE`,
/// 64, for every config and flag problem so scripts and systemd units check one number).
pub const EXIT_CONFIG: u8 = 64;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// TOML path of the offending value (`modbus.devices[0].registers[2].table`); empty when the
    /// problem is about the document as a whole or the daemon's check names no single key.
    pub path: String,
    /// 1-based line in the file, when the problem points at text.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path` with no line (validation problems are about values, not text).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }

    /// Whether this problem is about `path` or a value inside it.
    fn is_at_or_under(&self, path: &str) -> bool {
        match self.path.strip_prefix(path) {
            Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
            None => false,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, None) => write!(f, "{}", self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

/// Every problem found in a config, in the order an operator reads the file. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(Vec<ConfigProblem>);

impl ConfigProblems {
    /// Wraps `problems`; `None` when there are none, so an empty error cannot exist.
    pub fn from_problems(problems: Vec<ConfigProblem>) -> Option<Self> {
        (!problems.is_empty()).then_some(Self(problems))
    }

    /// The problems, in file order.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// The paths of the problems, in file order (what tests and scripts usually compare).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.path.as_str()).collect()
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// Why a config file could not be used. Each variant is a different fix for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a usable config: every problem is listed.
    #[error("config file {} is invalid, {problems}", path.display())]
    Invalid {
        /// The file that was read.
        path: PathBuf,
        /// Everything wrong with it.
        problems: ConfigProblems,
    },
}

impl LoadError {
    /// The problems, when the file was read.
    pub fn problems(&self) -> Option<&ConfigProblems> {
        match self {
            Self::Read { .. } => None,
            Self::Invalid { problems, .. } => Some(problems),
        }
    }
}

/// Parses `text` into `T` and runs `validate` on it, returning every problem at once.
///
/// Pure: no file system. Parse-level problems (syntax, unknown keys, wrong types, unknown enum
/// variants, out-of-range integers, values a type's own `Deserialize` refuses) come from
/// [`collect`]. When the parse got far enough to build a `T` from the values that were fine,
/// `validate` runs on it too; its problems about values already reported are dropped, since they
/// would be about the default that stood in for the bad value.
pub fn parse<T, F>(text: &str, validate: F) -> Result<T, ConfigProblems>
where
    T: DeserializeOwned,
    F: FnOnce(&T) -> Vec<ConfigProblem>,
{
    let Collected {
        value,
        mut problems,
    } = collect::<T>(text);
    let Some(value) = value else {
        // `collect` returns no value only together with at least one problem.
        return Err(ConfigProblems(problems));
    };
    let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
    problems.extend(validate(&value).into_iter().filter(|v| {
        !reported
            .iter()
            .any(|r| !r.is_empty() && v.is_at_or_under(r))
    }));
    match ConfigProblems::from_problems(problems) {
        None => Ok(value),
        Some(problems) => Err(problems),
    }
}

/// Reads the file at `path` and [`parse`]s it.
pub fn load<T, F>(path: &Path, validate: F) -> Result<T, LoadError>
where
    T: DeserializeOwned,
    F: FnOnce(&T) -> Vec<ConfigProblem>,
{
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, validate).map_err(|problems| LoadError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Small {
        #[serde(default)]
        port: u16,
        #[serde(default)]
        name: String,
    }

    fn no_port_zero(s: &Small) -> Vec<ConfigProblem> {
        if s.port == 0 {
            vec![ConfigProblem::new("port", "must not be 0")]
        } else {
            Vec::new()
        }
    }

    #[test]
    fn merges_validation_problems_with_parse_problems() {
        let problems = parse("colour = 1\nport = 0\n", no_port_zero).unwrap_err();
        assert_eq!(problems.paths(), ["colour", "port"]);
        assert_eq!(problems.problems()[0].line, Some(1));
    }

    #[test]
    fn drops_validation_problems_about_values_already_reported() {
        // The bad port was removed and defaulted to 0; "must not be 0" would be about the default.
        let problems = parse("port = 70000\n", no_port_zero).unwrap_err();
        assert_eq!(problems.paths(), ["port"]);
        assert!(
            problems.problems()[0].message.contains("70000"),
            "{problems}"
        );
    }

    #[test]
    fn a_good_file_is_parsed_and_validated() {
        let small = parse("port = 1\nname = \"a\"\n", no_port_zero).unwrap();
        assert_eq!(
            small,
            Small {
                port: 1,
                name: "a".into()
            }
        );
    }

    #[test]
    fn display_lists_every_problem_with_path_and_line() {
        let problems = parse("colour = 1\nport = \"x\"\nname = 3\n", no_port_zero).unwrap_err();
        let text = problems.to_string();
        assert!(text.starts_with("3 problems:"), "{text}");
        for needle in ["colour (line 1)", "port (line 2)", "name (line 3)"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn load_reports_a_missing_file_as_a_read_error() {
        let error = load(Path::new("/nonexistent/dtop.toml"), no_port_zero).unwrap_err();
        assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    }

    #[test]
    fn load_names_the_file_and_lists_the_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "port = -1\nextra = true\n").unwrap();
        let error = load(&path, no_port_zero).unwrap_err();
        assert_eq!(error.problems().unwrap().paths(), ["port", "extra"]);
        let text = error.to_string();
        assert!(text.contains("bad.toml"), "{text}");
        assert!(text.contains("2 problems"), "{text}");
    }
}
