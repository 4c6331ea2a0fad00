//! Test support shared by the engine's and the worker's tests: a real PostgreSQL (see
//! `postgres.rs`, also used by dtop-lease's tests) and engine configurations.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod postgres;

use std::path::Path;

use dtop_engine::EngineConfig;

pub use postgres::*;

/// An engine configuration on `database_url` with its result store under `dir`.
pub fn config(database_url: String, dir: &Path) -> EngineConfig {
    EngineConfig {
        database_url,
        result_dir: dir.join("results"),
        budget: Default::default(),
        chunks_in_flight_per_study: 2,
        max_attempts: 3,
        fetch: Default::default(),
        solvers: Default::default(),
        rescue_after_s: 3.0,
    }
}

/// An SQLite engine configuration in `dir`.
pub fn sqlite_config(dir: &Path) -> EngineConfig {
    config(
        format!("sqlite://{}", dir.join("studies.db").display()),
        dir,
    )
}
