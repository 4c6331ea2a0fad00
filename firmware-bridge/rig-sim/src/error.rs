//! Owns the crate's error type: one variant per reaction a caller may take (fix the config,
//! fix the environment, or give up because the running simulator failed).

use std::path::PathBuf;

use crate::config::ConfigError;

/// Everything `start()` and `SimHandle::join()` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The config breaks one or more rules; nothing was opened.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The structural model could not be built or discretised.
    #[error("building the structural model")]
    Model(#[from] dtop_dynamics::ModelError),
    /// The manifest could not be built from the config (a bug: validate() should have caught it).
    #[error("building the manifest")]
    Manifest(#[from] dtop_firmware::ManifestError),
    /// Creating the pseudo-terminal failed.
    #[error("creating the pseudo-terminal")]
    Pty(#[source] std::io::Error),
    /// Creating or replacing the pty symlink failed.
    #[error("creating the pty link {path}")]
    PtyLink {
        /// The requested link path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Writing the control-loop latency log failed.
    #[error("writing the latency log {path}")]
    LatencyLog {
        /// The latency log path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Opening or writing the truth log failed.
    #[error("writing the truth log {path}")]
    TruthLog {
        /// The truth log path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Binding or serving the Modbus TCP listener failed.
    #[error("Modbus TCP server on {addr}")]
    Modbus {
        /// The address we tried to listen on.
        addr: std::net::SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Binding the run-time command socket failed.
    #[error("control socket {path}")]
    Control {
        /// The socket path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to the pty failed while running.
    #[error("pty I/O")]
    PtyIo(#[source] std::io::Error),
    /// A simulator task panicked or was aborted (a bug).
    #[error("simulator task failed: {0}")]
    Task(String),
}
