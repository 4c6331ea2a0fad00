//! Rig leases: which `dtop-twin` instance owns which rig, and the **epoch** that fences each
//! owner's tenure. N twins divide the rigs among themselves; each rig has at most one owner at a
//! time, and its epoch grows every time a twin starts holding it, so the edge can refuse anything
//! sent under an older epoch (ARCHITECTURE.md, "Rig leases").
//!
//! PostgreSQL is the coordinator: the lease table, the membership heartbeats and the clock that
//! decides expiry all live there; a change of owner and its epoch increment are one statement.
//!
//! # Layout
//! - `ids`: [`TwinId`] (a twin process's identity) and [`Epoch`].
//! - `assign`: the pure rendezvous (highest-random-weight) assignment of rigs to live twins,
//!   with a stable hash every twin computes alike.
//! - `config`: [`LeaseConfig`] (TTL, renew interval, safety margin) and its validation.
//! - `plan`: the pure per-tick decision: which rigs to acquire, renew and release, and which
//!   held leases have run past their local deadline.
//! - `pg`: [`PgLeaseStore`], the tables and the one-statement operations on them.
//! - `coordinator`: [`Coordinator`], the task that heartbeats, follows the assignment and emits
//!   [`LeaseEvent`]s (`Owned`, then `Lost` before the lease could lapse).

pub mod assign;
pub mod config;
pub mod coordinator;
pub mod ids;
pub mod pg;
pub mod plan;

pub use assign::{assign, owner_of, weight};
pub use config::LeaseConfig;
pub use coordinator::{Coordinator, LeaseEvent, LostReason, Settled};
pub use ids::{Epoch, TwinId, TwinIdError};
pub use pg::{LeaseError, LeaseRow, PgLeaseStore};
