//! Owns the worker's configuration file: its shape (serde, unknown keys refused), its defaults
//! and its validation (every problem at once). Reads the `database_url_file` when asked; knows
//! nothing about running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dtop_daemon::config::ConfigProblem;
use dtop_engine::{EngineConfig, FetchConfig};
use dtop_studies::Budget;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Where the studies live (the same for every worker and the API server).
    pub engine: EngineSection,
    /// This worker.
    #[serde(default)]
    pub worker: WorkerSection,
    /// The `/metrics` endpoint; absent: none.
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
}

/// `[engine]`: [`EngineConfig`], with the database URL either inline or in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// `postgres://user@host:port/db` or `sqlite:///path/studies.db`. Prefer
    /// `database_url_file` when the URL holds a password.
    #[serde(default)]
    pub database_url: Option<String>,
    /// A file holding the URL (first line), e.g. a systemd credential.
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// Directory of the result store (shared by every worker and the API server).
    pub result_dir: PathBuf,
    /// Study size limits and chunk size.
    #[serde(default)]
    pub budget: Budget,
    /// At most this many chunks of one study queued or running at once.
    #[serde(default = "dtop_engine::default_chunks_in_flight")]
    pub chunks_in_flight_per_study: u32,
    /// Attempts of a failing chunk before its study fails.
    #[serde(default = "dtop_engine::default_max_attempts")]
    pub max_attempts: u16,
    /// Seconds after which a silent worker's chunk runs again elsewhere; also each chunk's
    /// time limit (a chunk still running after it is stopped and retried).
    #[serde(default = "dtop_engine::default_rescue_after_s")]
    pub rescue_after_s: f64,
    /// How often this worker looks for chunks (`[engine.fetch]`).
    #[serde(default)]
    pub fetch: FetchConfig,
    /// Third-party solvers this worker runs for chunks that ask (`[engine.solvers]`:
    /// `calculix = "ccx"` for `fea` studies with `solver = calculix`).
    #[serde(default)]
    pub solvers: dtop_engine::SolversConfig,
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Name in logs (default: host name and PID).
    #[serde(default)]
    pub name: Option<String>,
    /// Chunks run at once (default: the number of cores).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Seconds a shutdown waits for running chunks before exiting anyway.
    #[serde(default = "default_grace_s")]
    pub grace_s: f64,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            name: None,
            concurrency: None,
            grace_s: default_grace_s(),
        }
    }
}

const fn default_grace_s() -> f64 {
    30.0
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of `GET /metrics`, e.g. `127.0.0.1:9464`.
    pub listen: String,
}

impl WorkerConfig {
    /// Every problem the parse could not see.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let e = &self.engine;
        match (&e.database_url, &e.database_url_file) {
            (Some(_), Some(_)) => out.push(ConfigProblem::new(
                "engine.database_url_file",
                "give database_url or database_url_file, not both",
            )),
            (None, None) => out.push(ConfigProblem::new(
                "engine.database_url",
                "give database_url or database_url_file",
            )),
            _ => {}
        }
        let probe =
            self.engine_config_with(e.database_url.clone().unwrap_or_else(|| "sqlite:x".into()));
        out.extend(
            probe
                .problems("engine.")
                .into_iter()
                .map(|p| ConfigProblem::new(p.field, p.message)),
        );
        if self.worker.concurrency == Some(0) {
            out.push(ConfigProblem::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        if !(self.worker.grace_s.is_finite() && self.worker.grace_s >= 0.0) {
            out.push(ConfigProblem::new(
                "worker.grace_s",
                "must be a number of seconds, at least 0",
            ));
        }
        if let Some(m) = &self.metrics
            && m.listen.parse::<SocketAddr>().is_err()
        {
            out.push(ConfigProblem::new(
                "metrics.listen",
                format!("{:?} is not an address like 127.0.0.1:9464", m.listen),
            ));
        }
        out
    }

    fn engine_config_with(&self, database_url: String) -> EngineConfig {
        let e = &self.engine;
        EngineConfig {
            database_url,
            result_dir: e.result_dir.clone(),
            budget: e.budget,
            chunks_in_flight_per_study: e.chunks_in_flight_per_study,
            max_attempts: e.max_attempts,
            rescue_after_s: e.rescue_after_s,
            fetch: e.fetch,
            solvers: e.solvers.clone(),
        }
    }

    /// The engine configuration, reading `database_url_file` if given.
    ///
    /// # Errors
    /// When the file cannot be read or is empty (the message names the file, never its text).
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        let url = match (&self.engine.database_url, &self.engine.database_url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => read_url_file(file)?,
            (None, None) => return Err("no database_url".into()),
        };
        Ok(self.engine_config_with(url))
    }

    /// The worker's name: configured, or host name and PID.
    pub fn name(&self) -> String {
        self.worker.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// Chunks at once: configured, or the number of cores.
    pub fn concurrency(&self) -> u32 {
        self.worker
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }
}

fn read_url_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("engine.database_url_file {}: {e}", path.display()))?;
    let url = text.lines().next().unwrap_or("").trim().to_owned();
    if url.is_empty() {
        return Err(format!(
            "engine.database_url_file {} is empty",
            path.display()
        ));
    }
    Ok(url)
}

/// Loads and validates the file at `path`.
///
/// # Errors
/// Every problem at once.
pub fn load(path: &Path) -> Result<WorkerConfig, dtop_daemon::config::LoadError> {
    dtop_daemon::config::load(path, WorkerConfig::problems)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let c: WorkerConfig =
            dtop_daemon::config::parse(crate::EXAMPLE_CONFIG, WorkerConfig::problems).unwrap();
        assert!(c.engine.database_url.is_some() || c.engine.database_url_file.is_some());
        assert!(c.metrics.is_some());
    }

    #[test]
    fn reports_every_validation_problem_at_once() {
        let text = "[engine]\nresult_dir = \"/tmp/r\"\nmax_attempts = 0\nrescue_after_s = 0.1\n\
                    [engine.fetch]\ncooldown_ms = 0\n\
                    [worker]\nconcurrency = 0\n[metrics]\nlisten = \"nowhere\"\n";
        let e = dtop_daemon::config::parse(text, WorkerConfig::problems).unwrap_err();
        let paths = e.paths();
        for p in [
            "engine.database_url",
            "engine.max_attempts",
            "engine.rescue_after_s",
            "engine.fetch.cooldown_ms",
            "worker.concurrency",
            "metrics.listen",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn reads_the_url_from_a_file_and_never_echoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://dtop:secret@db/dtop\n").unwrap();
        let text = format!(
            "[engine]\ndatabase_url_file = {:?}\nresult_dir = \"/tmp/r\"\n",
            f.display().to_string()
        );
        let c = dtop_daemon::config::parse(&text, WorkerConfig::problems).unwrap();
        assert_eq!(
            c.engine_config().unwrap().database_url,
            "postgres://dtop:secret@db/dtop"
        );
        std::fs::write(&f, "").unwrap();
        let e = c.engine_config().unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
