//! The integration tests of `dtop-calibrate`, one module per file beside this one, built as one test
//! binary (one link instead of one per file, which counts in a cold CI build). Run one file's
//! tests with `cargo test --release -p dtop-calibrate --test integration FILE::`.

mod common;

mod bad_input;
mod crossval;
mod ema;
mod real_data;
mod update;
