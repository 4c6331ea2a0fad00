//! Owns the third-party solvers a worker offers to study chunks (`dtop_studies::ExternalSolvers`):
//! CalculiX, started by `dtop_fe`'s runner as a child process in a private temporary directory
//! that is removed after the run, killed when the study is cancelled or the run outlives its
//! limit. Which program, how many threads and how long are the `[engine.solvers]` config.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dtop_fe::calculix::{CalculixError, CalculixRun, RunOptions, run_ccx};
use dtop_studies::{ExternalSolvers, FieldProblem};
use serde::{Deserialize, Serialize};

/// `[engine.solvers]`: the third-party programs this process's workers may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolversConfig {
    /// CalculiX's solver (`ccx`, Debian `calculix-ccx`): a path or a name on `PATH`. Without
    /// it, `fea` studies with `solver = "calculix"` fail on this worker with that reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculix: Option<PathBuf>,
    /// Threads one CalculiX run may use.
    #[serde(default = "default_calculix_threads")]
    pub calculix_threads: usize,
    /// Longest one CalculiX run may take before it is killed, seconds.
    #[serde(default = "default_calculix_time_limit_s")]
    pub calculix_time_limit_s: f64,
}

impl Default for SolversConfig {
    fn default() -> Self {
        Self {
            calculix: None,
            calculix_threads: default_calculix_threads(),
            calculix_time_limit_s: default_calculix_time_limit_s(),
        }
    }
}

/// Default of [`SolversConfig::calculix_threads`].
pub const fn default_calculix_threads() -> usize {
    1
}

/// Default of [`SolversConfig::calculix_time_limit_s`].
pub const fn default_calculix_time_limit_s() -> f64 {
    600.0
}

impl SolversConfig {
    /// Every problem, each under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        if self.calculix_threads == 0 || self.calculix_threads > 256 {
            out.push(FieldProblem::new(
                format!("{prefix}calculix_threads"),
                format!("must be 1..=256, got {}", self.calculix_threads),
            ));
        }
        if !(self.calculix_time_limit_s.is_finite()
            && (1.0..=86_400.0).contains(&self.calculix_time_limit_s))
        {
            out.push(FieldProblem::new(
                format!("{prefix}calculix_time_limit_s"),
                format!("must be 1 to 86400 s, got {}", self.calculix_time_limit_s),
            ));
        }
        if let Some(p) = &self.calculix
            && p.as_os_str().is_empty()
        {
            out.push(FieldProblem::new(
                format!("{prefix}calculix"),
                "must name a program (e.g. \"ccx\"), or be left out",
            ));
        }
        out
    }
}

/// The solvers of [`SolversConfig`], as chunks see them.
#[derive(Debug, Clone)]
pub(crate) struct Solvers {
    config: SolversConfig,
}

impl Solvers {
    pub(crate) fn new(config: SolversConfig) -> Self {
        Self { config }
    }
}

impl ExternalSolvers for Solvers {
    fn calculix(&self, deck: &str, cancelled: &AtomicBool) -> Result<CalculixRun, CalculixError> {
        let Some(program) = &self.config.calculix else {
            return Err(CalculixError::Missing {
                program: "ccx".to_owned(),
                message: "this worker runs no CalculiX: install calculix-ccx and set \
                          [engine.solvers] calculix = \"ccx\" in its config"
                    .to_owned(),
            });
        };
        let dir = tempfile::Builder::new()
            .prefix("dtop-ccx-")
            .tempdir()
            .map_err(|e| CalculixError::Io {
                action: "creating a work directory".to_owned(),
                message: e.to_string(),
            })?;
        let options = RunOptions {
            program,
            threads: self.config.calculix_threads,
            cancel: Some(cancelled),
            time_limit: Some(Duration::from_secs_f64(self.config.calculix_time_limit_s)),
            ..RunOptions::default()
        };
        run_ccx(deck, dir.path(), "frame", &options)
    }
}
