//! The integration tests of `dtop-worker`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code instead of one per file, which is
//! much of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-worker --test integration FILE::`.

mod config;
mod processes;
