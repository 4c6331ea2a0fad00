//! Owns turning a TOML file into a validated [`BrokerConfig`], reporting every problem at once
//! (unknown keys, wrong types and invalid values, with TOML paths and lines) so an operator fixes
//! everything in one pass. Binds nothing. The collecting itself is `dtop-daemon`'s, shared by
//! every daemon.

use std::path::Path;

use dtop_daemon::ConfigProblems;

use crate::config::{BrokerConfig, ConfigErrors};

/// Why a configuration could not be used: unreadable, or every problem in it.
pub type ConfigError = dtop_daemon::LoadError;

/// Reads, parses and validates the configuration at `path`.
pub fn load_config(path: &Path) -> Result<BrokerConfig, ConfigError> {
    dtop_daemon::load(path, validation_problems)
}

/// Parses and validates configuration text. Pure: no file system, no sockets.
pub fn parse_config(text: &str) -> Result<BrokerConfig, ConfigProblems> {
    dtop_daemon::parse(text, validation_problems)
}

/// `validate()`'s problems as the shared loader lists them.
fn validation_problems(config: &BrokerConfig) -> Vec<dtop_daemon::ConfigProblem> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => daemon_problems(errors),
    }
}

/// `errors` as the shared loader lists them, for reports outside [`load_config`] (the built-in
/// defaults, the startup re-check).
pub fn daemon_problems(errors: ConfigErrors) -> Vec<dtop_daemon::ConfigProblem> {
    errors
        .into_problems()
        .into_iter()
        .map(|p| dtop_daemon::ConfigProblem::new(p.key, p.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_keys(text: &str) -> Vec<String> {
        match parse_config(text) {
            Err(problems) => problems.paths().into_iter().map(str::to_owned).collect(),
            Ok(config) => panic!("expected problems, got {config:?}"),
        }
    }

    #[test]
    fn reads_front_threads_and_reports_unknown_runtime_keys_with_bad_values() {
        let config = parse_config("[runtime]\nfront_threads = 2\n").unwrap();
        assert_eq!(config.runtime.front_threads, 2);
        assert_eq!(
            parse_config("").unwrap().runtime.front_threads,
            crate::config::default_front_threads()
        );
        assert_eq!(
            problem_keys("[runtime]\nfront_threads = 0\nrouter_threads = 2\n"),
            ["runtime.router_threads", "runtime.front_threads"]
        );
    }

    #[test]
    fn empty_text_is_the_default_config() {
        assert_eq!(parse_config("").unwrap(), BrokerConfig::default());
    }

    #[test]
    fn reports_unknown_keys_at_every_level_with_invalid_values() {
        let text = r#"
            colour = "blue"
            [limits]
            max_connections = 0
            max_payloads = 5
            [metrics]
            listen = "127.0.0.1:1883"
        "#;
        assert_eq!(
            problem_keys(text),
            [
                "colour",
                "limits.max_payloads",
                "metrics.listen",
                "limits.max_connections"
            ]
        );
    }

    #[test]
    fn wrong_type_has_its_path_and_line() {
        let problems = parse_config("[limits]\nmax_connections = \"many\"\n").unwrap_err();
        assert_eq!(problems.paths(), ["limits.max_connections"]);
        assert_eq!(problems.problems()[0].line, Some(2));
    }

    #[test]
    fn wrong_type_next_to_an_unknown_key_reports_both_with_paths() {
        assert_eq!(
            problem_keys("typo = 1\n[limits]\nmax_connections = \"many\"\n"),
            ["typo", "limits.max_connections"]
        );
    }

    #[test]
    fn broken_toml_is_reported_with_its_line() {
        let problems = parse_config("[limits\n").unwrap_err();
        assert_eq!(problems.problems()[0].line, Some(1));
    }
}
