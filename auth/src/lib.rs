//! Who may do what in DTOP, decided in one place: the credentials file (one line per user with a
//! role, a rig scope and an argon2id hash) and the role rules over topic patterns. The MQTT
//! broker (`dtop-broker`) and the HTTP API server (`dtop-server`) both authenticate against the
//! same file and authorize with the same rules, so an operator of rig A is refused rig B on
//! every door. Pure apart from reading and rewriting the credentials file; knows nothing about
//! MQTT sessions or HTTP.
//!
//! # Layout
//! - [`acl`]: roles, topic patterns with `{rig}`/`{username}`, the pure authorization engine,
//!   and [`allowed`], the same roles' HTTP API permissions.
//! - [`credentials`]: the credentials file (argon2id, and bcrypt for NATS) and its edits
//!   (`dtop-broker passwd`).
//! - [`nats`]: the same users and rules as a NATS server's `authorization` block (pure).
//! - [`matrix`]: the ACL matrix every enforcer (this engine, `dtop-broker`, a NATS cluster) is
//!   tested against, written out from the role descriptions rather than computed.
//! - [`secret`]: the redacted-`Debug` [`Secret`] newtype for passwords and tokens.

pub mod acl;
pub mod credentials;
pub mod matrix;
pub mod nats;
pub mod secret;

pub use acl::{Acl, Action, Identity, RigScope, Role, RoleRules, RolesConfig, allowed};
pub use credentials::{Credentials, CredentialsError, RigSpec};
pub use secret::Secret;
