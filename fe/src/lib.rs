//! Finite elements of the rig for DTOP: a built-in 3D frame model (the legs as Timoshenko or
//! Euler–Bernoulli beams, the floors as rigid bodies, the feet fixed or on springs) giving natural frequencies
//! and mode shapes, torsion and out-of-plane sway included; its static condensation to the
//! shear chain's storey stiffnesses (a `dtop_dynamics::ShearBuildingConfig`); and CalculiX as
//! a peer solver: an input-deck writer, a parser of its results and a cancellable runner.
//!
//! Pure numerics except [`calculix::runner`], which starts `ccx`. Everything is SI, with
//! units in the names.
//!
//! ```
//! use dtop_fe::{FloorMotion, FrameConfig, FrameModel, ModeClass, PlanAxis};
//!
//! let frame = FrameModel::new(FrameConfig::southampton())?;
//! let modes = frame.modes(6)?;
//! assert_eq!(modes.modes[0].class, ModeClass::SwayX);
//! let chain = frame.condense_to_shear_chain(PlanAxis::X, FloorMotion::TranslationOnly)?;
//! let building = chain.shear_building_config(dtop_dynamics::Damping::Modal {
//!     zetas: vec![0.002; 3],
//! });
//! assert!(building.validate().is_ok());
//! # Ok::<(), dtop_fe::FeError>(())
//! ```
//!
//! # Layout
//! - [`config`] — `FrameConfig` (storeys, legs, floors, feet, mesh density), the Southampton
//!   rig and Cristallo's FEA defaults, `validate()` with every problem at once.
//! - [`units`] — Cristallo's inch–slinch–second inputs to SI, once.
//! - [`mesh`] — `FrameMesh`: nodes, leg elements, floor centroids, shared by both solvers.
//! - `beam` — the 12-DOF beam element (Timoshenko or Euler–Bernoulli stiffness, consistent
//!   mass).
//! - `assemble` — global M and K with rigid floors (reference node, slaved leg ends) and
//!   foot springs.
//! - [`frame`] — `FrameModel`: modes, their classes (sway x, sway y, torsion, vertical) by
//!   effective mass.
//! - [`condense`] — static condensation to the floors' lateral DOFs and the shear chain's
//!   storey stiffnesses.
//! - [`calculix`] — the `.inp` deck writer and `.dat` parser (pure), and the `ccx` runner.
//! - [`opensees`] — the same frame as an OpenSeesPy script (pure), the second peer, and a
//!   reader of the frequencies it prints.
//! - [`error`] — `FeError` (CalculiX errors live in `calculix`).
//!
//! # Where DTOP differs from Cristallo
//! Cristallo's FEA tool (TOOLS.md §7) writes an ABAQUS script of a solid (tetrahedral) model
//! and returns nothing numeric. DTOP solves a beam-and-rigid-plate model itself, writes the
//! same geometry for CalculiX (free software) and reads its frequencies back; the mount
//! plates and L-section feet of Cristallo's model are replaced by fixed or elastic feet.

mod assemble;
mod beam;
pub mod calculix;
pub mod condense;
pub mod config;
pub mod error;
pub mod frame;
pub mod mesh;
pub mod opensees;
pub mod units;

#[cfg(test)]
mod closed_form_tests;

pub use condense::{FloorMotion, ShearCondensation};
pub use config::{BeamTheory, Feet, FloorConfig, FrameConfig, LegConfig, PlanAxis};
pub use error::FeError;
pub use frame::{EffectiveMassFractions, FrameMode, FrameModel, FrameModes, ModeClass};
pub use mesh::{Attachment, FrameMesh, LegElement, MeshNode};
