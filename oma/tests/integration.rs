//! The integration tests of `dtop-oma`, one module per file beside this one, built as one test
//! binary (one link instead of one per file, which counts in a cold CI build). Run one file's
//! tests with `cargo test --release -p dtop-oma --test integration FILE::`.

mod support;

mod bad_input;
mod cristallo_noise;
mod damage_and_segments;
mod efdd_checks;
mod ssi_shear_building;
