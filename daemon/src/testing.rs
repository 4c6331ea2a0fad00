//! Test support for the daemons' own integration tests: the one check every daemon's
//! `config_errors` test makes, written once. Run the real binary on a config with several
//! mistakes, both with `--check` and without, and assert that it refuses the file with
//! [`EXIT_CONFIG`] and lists every mistake by its TOML path.
//!
//! Std-only and small, so it is compiled always rather than behind a feature; nothing in a daemon
//! calls it. Its functions fail the calling test by panicking, like the assertions they serve.

use std::fmt;
use std::path::Path;
use std::process::Command;

use crate::EXIT_CONFIG;

/// How a daemon printing [`crate::ConfigProblems`] opens each problem's line: `  - PATH (line N)`.
/// A daemon that puts something else before the path (a file name) names its own marker.
pub const LISTED: &str = "  - ";

/// One run of a daemon that refused its config: what it was given and what it said.
#[derive(Debug)]
pub struct Refusal {
    /// The arguments after the binary, as assertion messages show them.
    pub args: Vec<String>,
    /// Everything the daemon wrote to stderr.
    pub stderr: String,
}

/// Reads `[args]: stderr`, so an assertion message names the run and shows what it printed.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.args, self.stderr)
    }
}

/// Runs the daemon `command` makes with `--check --config CONFIG`, then with `--config CONFIG`,
/// and asserts that each run exits [`EXIT_CONFIG`] and lists every one of `paths` on stderr as
/// `{before_path}{path} (line `. Both modes are run because a daemon must refuse a bad file the
/// same way whether an operator checks it first or just starts the service.
///
/// `command` builds a fresh [`Command`] per run (a `Command` runs once), so a test can set a
/// working directory; `after_each` gets each run right after it, for the daemon's own checks
/// (the problem count, that nothing was opened), so a failure names the run that caused it.
pub fn assert_refuses_config(
    command: impl Fn() -> Command,
    config: &Path,
    before_path: &str,
    paths: &[&str],
    mut after_each: impl FnMut(&Refusal),
) {
    let config = config
        .to_str()
        .unwrap_or_else(|| panic!("config path {} is not UTF-8", config.display()));
    for args in [
        vec!["--check", "--config", config],
        vec!["--config", config],
    ] {
        let mut command = command();
        let output = command
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        let run = Refusal {
            args: args.iter().map(ToString::to_string).collect(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert_eq!(output.status.code(), Some(i32::from(EXIT_CONFIG)), "{run}");
        for path in paths {
            assert!(
                run.stderr.contains(&format!("{before_path}{path} (line ")),
                "{:?}: {path} missing from:\n{}",
                run.args,
                run.stderr
            );
        }
        after_each(&run);
    }
}
