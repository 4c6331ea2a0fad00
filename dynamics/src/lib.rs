//! Structural dynamics for DTOP: turns a description of an N-storey shear building (with an
//! optional inertial actuator) into mass, damping and stiffness matrices, undamped modes, a
//! continuous state-space model and its exact zero-order-hold discretization.
//!
//! Pure numerics: no I/O, no clocks, no logging. Everything is deterministic, so the rig
//! simulator, the twin's estimators and the tests all see the same model.
//!
//! Conventions used everywhere:
//! - SI units, spelled out in names (`dt_s`, `floor_masses_kg`).
//! - Floors are 1-based in every public signature (floor 0 is the ground); matrix rows and
//!   columns are 0-based DOFs, with floor `i` at DOF `i − 1` and the actuator's proof mass,
//!   if fitted, last.
//! - Displacements and velocities are relative to the ground; ground acceleration enters
//!   as the inertial load −M·1·a_g, and acceleration outputs are absolute.
//!
//! ```
//! use dtop_dynamics::ShearBuilding;
//! use nalgebra::DVector;
//!
//! let building = ShearBuilding::southampton_with_actuator(3)?;
//! let model = building.state_space().discretize_zoh(1e-3)?;
//! let mut x = DVector::zeros(model.n_states());
//! let mut u = DVector::zeros(model.n_inputs());
//! let mut y = DVector::zeros(model.n_outputs());
//! u[model.input_actuator().unwrap_or(0)] = 1.0;
//! model.step(&mut x, &u, &mut y);
//! # Ok::<(), dtop_dynamics::ModelError>(())
//! ```
//!
//! # Layout
//! - [`config`] — `ShearBuildingConfig`, `Damping`, `InertialActuator`, the Southampton
//!   constants and `validate()`, which reports every problem at once.
//! - [`model`] — `ShearBuilding`, the assembly of M, C and K (structural damping is defined
//!   on the bare building; the actuator adds housing mass, proof-mass DOF, spring, damper).
//! - [`modes`] — the generalized symmetric eigenproblem K·φ = ω²·M·φ via Cholesky, giving
//!   ascending frequencies and mass-normalised shapes.
//! - [`state_space`] — continuous A, B, C, D of a building, and `IoLayout`, the names of the
//!   input and output indices.
//! - [`discretize`] — exact ZOH via the matrix exponential of the augmented matrix, and
//!   `DiscreteStateSpace::step`, which allocates nothing.
//! - [`error`] — `ModelError`.
//! - [`frf`] — frequency response functions (receptance, mobility, accelerance) by state
//!   space, second-order form and modal superposition; modal analysis (shapes, modal
//!   damping ratios, poles); the sweep grid and the generic complex solvers.
//! - [`control`] — vibration control through the inertial actuator: the current-driven
//!   plant, passive TMD / DVF / LQG laws, kinetic-energy and effort spectra, Nyquist locus,
//!   gain margin, stability and the DVF critical gain (definitions in `CONTROL.md`).
//! - [`kalman`] — state estimation on the discretized model: a Kalman filter (steady-state
//!   gains per subset of available sensors, or the time-varying recursion) that estimates
//!   floor displacements and velocities from floor accelerations and known inputs, with
//!   missing samples, sensor dropouts and NIS per step; `StructuralNoise` designs Q, R, S.

pub mod config;
pub mod control;
pub mod discretize;
pub mod error;
pub mod frf;
pub mod kalman;
pub mod mac;
pub mod model;
pub mod modes;
pub mod state_space;

pub use config::{Damping, InertialActuator, ShearBuildingConfig};
pub use control::{ActuatorElectrics, ControlError, ControlLaw, ControlReport, ControlStudy};
pub use discretize::{DiscreteStateSpace, zoh_matrices};
pub use error::ModelError;
pub use frf::{FrequencyGrid, FrfError, FrfInput, FrfKind, FrfMethod, FrfRequest, ModalAnalysis};
pub use kalman::{
    FilterSnapshot, GainSchedule, GaussianModel, KalmanError, KalmanFilter, StepReport,
    StructuralEstimator, StructuralNoise,
};
pub use mac::mac;
pub use model::ShearBuilding;
pub use modes::Modes;
pub use state_space::{IoLayout, StateSpace};
