//! The integration tests of `dtop-fe`, one module per file beside this one, built as one test
//! binary (one link instead of one per file, which counts in a cold CI build). Run one file's
//! tests with `cargo test --release -p dtop-fe --test integration FILE::`.

mod calculix;
mod frame;
mod opensees;
