//! The integration tests of `dtop-e2e`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code instead of one per file, which is
//! much of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-e2e --test integration FILE::`.

mod closed_loop;
mod faults;
mod fleet_faults;
mod live_cbc;
mod nats_acl_matrix;
mod nats_failover;
mod pipeline;
mod replay;
mod systemd_units;
mod twin_leases;
