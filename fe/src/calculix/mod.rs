//! CalculiX (`ccx`, GPL, Debian `calculix-ccx`) as a peer of the built-in solver: the same
//! frame written as an input deck, `ccx`'s eigenvalue output read back, and a runner.
//!
//! # Layout
//! - [`deck`] — `.inp` writer (pure).
//! - [`dat`] — `.dat` eigenvalue parser (pure).
//! - [`frd`] — `.frd` node and mode-shape parser (pure).
//! - [`runner`] — starts `ccx` in a caller's directory, cancellable, the only I/O here.
//! - [`error`] — `CalculixError`.

pub mod dat;
pub mod deck;
pub mod error;
pub mod frd;
pub mod runner;

pub use dat::{CalculixMode, parse_eigenvalues};
pub use deck::{BeamElementType, DeckOptions, LegMesh, write_deck};
pub use error::CalculixError;
pub use frd::{FrdModeShape, FrdResults, parse_frd};
pub use runner::{CalculixRun, RunOptions, run_ccx};
