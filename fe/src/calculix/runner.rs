//! Owns running `ccx` on a deck: writes `<job>.inp` into a directory the caller gives (the
//! caller owns it and its files: `<job>.inp`, `.dat`, `.frd`, `.stdout`, `.stderr` and ccx's
//! others), starts ccx there as a child process with its output sent to files, waits while
//! polling a cancel flag and a time limit, kills the child (by its PID, through
//! `Child::kill`) on either, and parses `<job>.dat` and `<job>.frd`. The only module of the
//! crate with I/O. It blocks the calling thread while ccx runs: async callers run it on a
//! blocking thread (`tokio::task::spawn_blocking`) and cancel through the flag.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::calculix::dat::{CalculixMode, parse_eigenvalues, tail_lines};
use crate::calculix::error::CalculixError;
use crate::calculix::frd::{FrdResults, parse_frd};

/// Lines of ccx's output kept in an error.
const TAIL_LINES: usize = 30;

/// How to run ccx.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// The program to start (`ccx` on PATH by default).
    pub program: &'a Path,
    /// Threads ccx may use (`OMP_NUM_THREADS`, `CCX_NPROC_EQUATION_SOLVER`).
    pub threads: usize,
    /// Set to true by another thread to stop the run; the child is killed.
    pub cancel: Option<&'a AtomicBool>,
    /// Longest the run may take before it is killed.
    pub time_limit: Option<Duration>,
    /// How often the flag and the child are checked.
    pub poll_interval: Duration,
}

/// The default program name.
pub const DEFAULT_PROGRAM: &str = "ccx";

impl Default for RunOptions<'_> {
    fn default() -> Self {
        Self {
            program: Path::new(DEFAULT_PROGRAM),
            threads: 1,
            cancel: None,
            time_limit: None,
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// What a successful run returns.
#[derive(Debug, Clone, PartialEq)]
pub struct CalculixRun {
    /// The modes ccx printed, in its order (ascending eigenvalue).
    pub modes: Vec<CalculixMode>,
    /// The whole `.dat` text, for the record.
    pub dat: String,
    /// Node coordinates and mode shapes from the `.frd` file, when ccx wrote one that
    /// parses (decks from [`crate::calculix::write_deck`] ask for it).
    pub shapes: Option<FrdResults>,
    /// Wall time of the ccx process.
    pub elapsed: Duration,
}

fn io_error(action: String) -> impl FnOnce(std::io::Error) -> CalculixError {
    move |error| CalculixError::Io {
        action,
        message: error.to_string(),
    }
}

/// Writes `deck` as `<work_dir>/<job>.inp`, runs ccx on it and parses the eigenvalues.
///
/// `job` must be a plain file stem (letters, digits, `-`, `_`), because ccx appends its own
/// extensions to it.
///
/// # Errors
/// [`CalculixError::Missing`] if the program cannot be started, [`CalculixError::Failed`]
/// with the tail of its output if it exits with a failure, [`CalculixError::NoEigenvalues`]
/// if it prints none, [`CalculixError::Cancelled`] / [`CalculixError::TimedOut`] after
/// killing it, [`CalculixError::Io`] if the job's files cannot be written or read,
/// [`CalculixError::Invalid`] for a bad job name or zero threads.
pub fn run_ccx(
    deck: &str,
    work_dir: &Path,
    job: &str,
    options: &RunOptions<'_>,
) -> Result<CalculixRun, CalculixError> {
    let mut problems = Vec::new();
    if job.is_empty()
        || !job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(format!(
            "job name {job:?} must be a non-empty plain stem of letters, digits, '-' and '_'"
        ));
    }
    if options.threads == 0 {
        problems.push("threads = 0: ccx needs at least one thread".to_owned());
    }
    if !problems.is_empty() {
        return Err(CalculixError::Invalid(problems));
    }
    let path = |extension: &str| -> PathBuf { work_dir.join(format!("{job}.{extension}")) };
    let input = path("inp");
    fs::write(&input, deck).map_err(io_error(format!("writing {}", input.display())))?;
    let stdout_path = path("stdout");
    let stderr_path = path("stderr");
    let stdout = fs::File::create(&stdout_path)
        .map_err(io_error(format!("creating {}", stdout_path.display())))?;
    let stderr = fs::File::create(&stderr_path)
        .map_err(io_error(format!("creating {}", stderr_path.display())))?;
    let threads = options.threads.to_string();
    let started = Instant::now();
    let mut child = Command::new(options.program)
        .arg("-i")
        .arg(job)
        .current_dir(work_dir)
        .env("OMP_NUM_THREADS", &threads)
        .env("CCX_NPROC_EQUATION_SOLVER", &threads)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|error| CalculixError::Missing {
            program: options.program.display().to_string(),
            message: error.to_string(),
        })?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(error) => {
                // Cannot tell whether it still runs: make sure it does not.
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_error("waiting for ccx".to_owned())(error));
            }
        }
        let cancelled = options
            .cancel
            .is_some_and(|flag| flag.load(Ordering::Relaxed));
        let timed_out = options
            .time_limit
            .is_some_and(|limit| started.elapsed() > limit);
        if cancelled || timed_out {
            // Killing a child that has just exited fails harmlessly; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            return Err(if cancelled {
                CalculixError::Cancelled
            } else {
                CalculixError::TimedOut {
                    limit_s: options.time_limit.map_or(0.0, |d| d.as_secs_f64()),
                }
            });
        }
        std::thread::sleep(options.poll_interval);
    };
    let elapsed = started.elapsed();
    let output_tail = || {
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        let mut text = read(&stdout_path);
        text.push_str(&read(&stderr_path));
        tail_lines(&text, TAIL_LINES)
    };
    if !status.success() {
        return Err(CalculixError::Failed {
            status: status.to_string(),
            tail: output_tail(),
        });
    }
    let dat_path = path("dat");
    let dat = fs::read_to_string(&dat_path).unwrap_or_default();
    let modes = parse_eigenvalues(&dat).map_err(|_| CalculixError::NoEigenvalues {
        tail: output_tail(),
    })?;
    let shapes = fs::read_to_string(path("frd"))
        .ok()
        .and_then(|frd| parse_frd(&frd).ok());
    Ok(CalculixRun {
        modes,
        dat,
        shapes,
        elapsed,
    })
}
