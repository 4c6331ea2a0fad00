//! The integration tests of `dtop-nonlinear`, one module per file beside this one, built as one test
//! binary (one link instead of one per file, which counts in a cold CI build). Run one file's
//! tests with `cargo test --release -p dtop-nonlinear --test integration FILE::`.

mod common;

mod cbc;
mod cristallo;
mod duffing;
mod linear_and_input;
