//! Nonlinear shear chains for DTOP: an N-storey chain (the linear part from
//! `dtop_dynamics`) with polynomial springs, forced by F·cos(ωt) on one floor; its periodic
//! steady states by harmonic balance, traced by pseudo-arclength continuation in the
//! forcing frequency or amplitude, with Floquet stability and located folds. This is the
//! reference that control-based continuation (CBC) results are checked against.
//!
//! Pure numerics: no I/O, no clocks, no logging; deterministic.
//!
//! ```
//! use dtop_nonlinear::{ContinuationConfig, NonlinearChain, Sweep, continue_branch};
//!
//! let chain = NonlinearChain::cristallo()?;
//! let sweep = Sweep::Frequency { start_rad_s: 1.0, end_rad_s: 50.0, forcing_n: 10.0 };
//! let branch = continue_branch(&chain, &ContinuationConfig::new(sweep, 3))?;
//! assert!(branch.folds.len() >= 2);
//! # Ok::<(), dtop_nonlinear::NonlinearError>(())
//! ```
//!
//! Choices, and how they differ from Cristallo (TOOLS.md §5):
//! - Harmonic balance rather than shooting: one harmonic reproduces the textbook
//!   first-order relations exactly (a test checks them to 1e-9), more harmonics converge
//!   spectrally, and no time integration is needed to find an orbit. The springs' forces
//!   go through the alternating frequency–time scheme with a direct DFT sized so that
//!   polynomial springs alias nothing, and the Jacobian is analytic.
//! - Stability comes from the monodromy matrix (variational equations integrated along the
//!   balanced orbit by a fourth-order Magnus method), not Hill's method, so no sorting of
//!   Hill eigenvalues is needed: the 2n Floquet multipliers are its eigenvalues.
//! - Cristallo sweeps its model with short open-loop runs that measure transients; these
//!   are steady states, unstable ones included. Its forcing −Φ·sin ωt is our F·cos ωt a
//!   quarter period later (see [`NonlinearChainConfig::cristallo`]).
//! - CBC: Cristallo copies measured harmonics into the target, keeps 5 of them and does not
//!   let its runs settle; here a quasi-Newton update, enough harmonics that the controller
//!   fights none, invasiveness checked over all resolved harmonics, and a settling check
//!   (see [`cbc`]).
//!
//! # Layout
//! - [`model`] — `NonlinearChainConfig` (building, `PolynomialSpring`s on storeys or
//!   floor-to-ground, forced floor), its validation, and `NonlinearChain` with the springs'
//!   forces and tangent stiffness; Cristallo's 3-DOF defaults.
//! - [`harmonic`] — the Fourier layout, the balance residual and analytic Jacobian (AFT),
//!   Newton at a fixed forcing, `DofHarmonics` with amplitudes and peak-to-peak.
//! - [`floquet`] — the monodromy matrix and Floquet multipliers.
//! - [`continuation`] — `ContinuationConfig` and `Sweep`, `continue_branch` (tangent
//!   predictor, arclength corrector, step control, stop reasons, folds), `Branch`,
//!   `PeriodicResponse`, `Fold`; `trace_branch` from the two configs; `periodic_response`
//!   at one forcing.
//! - [`cbc`] — control-based continuation on the model: the simulated experiment (RK4,
//!   noisy sensors, sampled PD control following a Fourier target), the quasi-Newton
//!   iteration to a non-invasive control force, the stepping of the target amplitude.
//! - [`live`] — control-based continuation on a live rig, the twin's pure core: Fourier
//!   coefficients from blocks of measured acceleration and control force, the shared
//!   quasi-Newton update, convergence, stepping through a frequency range, and the edge's
//!   PD-on-integrated-acceleration law it sends targets to.
//! - [`sweep`] — open-loop stepped-sine sweeps up and down, each point run to steady state
//!   by a documented settling criterion: they jump at the folds.
//! - `integrate` (private) — the allocation-free RK4 step of the chain shared by both, and
//!   `held_force_response` (re-exported): the chain under a sampled, held force.
//! - [`error`] — `NonlinearError`.

pub mod cbc;
pub mod continuation;
pub mod error;
pub mod floquet;
pub mod harmonic;
mod integrate;
pub mod live;
pub mod model;
pub mod sweep;

pub use cbc::{CbcConfig, CbcPoint, CbcRun, CbcStop, run_cbc};
pub use continuation::{
    Branch, ContinuationConfig, Fold, PeriodicResponse, StopReason, Sweep, continue_branch,
    forcing_for_amplitude, periodic_response, periodic_response_near, trace_branch,
};
pub use error::NonlinearError;
pub use floquet::{floquet_multipliers, monodromy};
pub use harmonic::DofHarmonics;
pub use integrate::{ChainSample, held_force_response};
pub use live::{LiveCbc, LiveCbcConfig, LiveNext, LiveTarget};
pub use model::{NonlinearChain, NonlinearChainConfig, PolynomialSpring, SpringLink};
pub use sweep::{OpenLoopSweep, OpenLoopSweepConfig, SweepPoint, open_loop_sweep};
