//! The integration tests of `dtop-server`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code of tokio, axum, reqwest and fantoccini
//! instead of one per file, which is much of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-server --test integration FILE::`.

mod common;

mod api;
mod browser_rigs;
mod browser_roles;
mod browser_studies;
mod history;
mod live;
mod mqtt;
mod web;
