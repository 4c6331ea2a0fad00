//! The process skeleton every DTOP daemon shares, written once. Today it holds only config
//! loading: a TOML file becomes a typed, validated config, or a list of *every* problem in it
//! (parse-level and validation alike, each with its TOML path and line), so an operator fixes
//! them all in one pass and the daemon exits 64 before it opens a device or a socket.
//!
//! # Layout
//! - [`config`]: reading the file, collecting every shape error ([`config::collect`]), merging
//!   the daemon's own `validate()` problems, and the exit code for a refused config.
//! - [`testing`]: for the daemons' integration tests, the check that a binary refuses a bad
//!   config with that exit code and lists every problem.
//!
//! Issue 12 grows this crate into the rest of the skeleton the daemons still carry each on
//! their own: signals and drain, sd_notify, the `/metrics` endpoint.

pub mod config;
pub mod testing;

pub use config::{ConfigProblem, ConfigProblems, EXIT_CONFIG, LoadError, load, parse};
