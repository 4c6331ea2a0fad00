//! The integration tests of `dtop-cli`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code instead of one per file, which is
//! much of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-cli --test integration FILE::`.

mod common;
mod studies_up;
mod study_cli;
mod walkthrough;
