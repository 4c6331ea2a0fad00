//! Vibration control of a shear building through one coil-driven inertial actuator: the plant
//! seen by a controller, the control laws (passive tuned-mass damper, direct velocity
//! feedback, LQG), and their frequency-domain assessment (kinetic-energy spectra, effort,
//! Nyquist locus, gain margin, closed-loop stability, critical gain). Pure maths: no I/O.
//! Definitions and units are in `dynamics/CONTROL.md`.
//!
//! - [`plant`] — `ActuatorElectrics` and `ActuatedPlant`, the first-order model with the coil
//!   current as its control input.
//! - [`compensator`] — `Compensator`, a proper rational C(s) and its state-space realization.
//! - [`riccati`] — continuous algebraic Riccati and Lyapunov solvers for the LQG design.
//! - [`laws`] — `ControlLaw` and the controller (state space) each law produces.
//! - [`analysis`] — closing the loop, spectra, margins, `ControlStudy` and its report.
//! - [`sampled`] — the controllers of the live loop: a Kalman predictor plus DVF or LQR at
//!   the sample rate, realized as one LTI system from measured channels to force, and the
//!   allocation-free `SampledLoop` that runs it (on the edge or in the twin).

pub mod analysis;
pub mod compensator;
pub mod laws;
pub mod plant;
pub mod riccati;
pub mod sampled;

use crate::error::ModelError;
use crate::frf::FrfError;

pub use analysis::{ControlReport, ControlStudy, CriticalGain, dvf_critical_gain};
pub use compensator::Compensator;
pub use laws::{ControlLaw, Controller, LqgWeights, Measurement, TmdTuning};
pub use plant::{ActuatedPlant, ActuatorElectrics};
pub use sampled::{SampledController, SampledDesign, SampledLaw, SampledLoop, design_sampled};

/// Everything that can go wrong while designing or assessing a controller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The study or law is not valid (floor out of range, negative gain, improper
    /// compensator…); every problem is listed, so they can all be fixed in one pass.
    #[error("invalid control study: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The structural model itself was refused.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The linear algebra failed; says which step.
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}

impl From<FrfError> for ControlError {
    fn from(e: FrfError) -> Self {
        match e {
            FrfError::Invalid(problems) => Self::Invalid(problems),
            FrfError::Numerical(what) => Self::Numerical(what),
        }
    }
}
