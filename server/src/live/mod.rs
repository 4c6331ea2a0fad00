//! Live rigs for browsers: the server, logged in to the broker as its own `server` user, keeps
//! every rig's recent samples, the twin's estimates and both sides' accounting, streams them to
//! each browser over one WebSocket per rig, forwards operators' commands and reads history
//! from InfluxDB or VictoriaMetrics. Every forward is decided by the web user's *own* MQTT rules (`dtop_auth`).
//!
//! # Layout
//! - [`frame`]: the binary frame layout a browser decodes (pure).
//! - [`window`]: the sliding window of frames per rig and its RMS (pure).
//! - [`rig`]: one rig's live state and summary (pure).
//! - [`hub`]: the task that owns every rig's state and the MQTT connection.
//! - [`ws`]: `GET /ws/rigs/{rig}` and `GET /ws/rigs`, the browser's live feeds.
//! - [`history`]: `GET /api/v1/rigs/{rig}/history[.csv]`, min/max per pixel bucket; InfluxQL.
//! - [`range`]: a history request's range, its bucket grid, and a store's errors (pure).
//! - [`victoria`]: the same buckets read from VictoriaMetrics with MetricsQL (pure).
//! - [`record`]: a stored range's raw samples as a study input (`oma` on a rig's data).
//! - [`parameters`]: a rig's parameter history (tracked modes, drift alarms) from the store.

pub mod frame;
pub mod history;
pub mod hub;
pub mod parameters;
pub mod range;
pub mod record;
pub mod rig;
pub mod victoria;
pub mod window;
pub mod ws;

use dtop_auth::{Acl, Identity};
use dtop_proto::RigId;
use dtop_proto::topic::{self, RigTopic, TwinTopic};

use crate::config::LiveConfig;

pub use hub::LiveHub;

/// What one user may get of one rig, by the MQTT rules of their own identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// Watch the rig at all: its samples (`rig/{rig}/samples`).
    pub samples: bool,
    /// The twin's estimates (`twin/{rig}/state`).
    pub estimates: bool,
    /// The twin's live CBC runs (`twin/{rig}/cbc`).
    pub cbc: bool,
    /// Command answers (`rig/{rig}/cmd/ack`).
    pub acks: bool,
    /// Send commands (`rig/{rig}/cmd`).
    pub command: bool,
}

/// The rights of `who` on `rig` under `acl`: exactly what the broker would let them subscribe
/// to and publish.
pub fn rights(acl: &Acl, who: &Identity, rig: &RigId) -> Rights {
    Rights {
        samples: acl.may_subscribe(who, &topic::rig(rig, RigTopic::Samples)),
        estimates: acl.may_subscribe(who, &topic::twin(rig, TwinTopic::State)),
        cbc: acl.may_subscribe(who, &topic::twin(rig, TwinTopic::Cbc)),
        acks: acl.may_subscribe(who, &topic::rig(rig, RigTopic::CmdAck)),
        command: acl.may_publish(who, &topic::rig(rig, RigTopic::Cmd)),
    }
}

/// The DVF gain limit of a rig's actuator as its twin published it (`dvf_limit` in the
/// twin's retained status, ARCHITECTURE.md § Topic map): the server shows and enforces the
/// twin's own figure, computed on the twin's model with its `control.max_fraction_of_critical`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GainLimit {
    /// Host floor of the actuator.
    pub floor: u32,
    /// Feedback gain at which the loop goes unstable, N·s/m.
    pub critical_gain_n_s_per_m: f64,
    /// The twin's `control.max_fraction_of_critical`.
    pub max_fraction_of_critical: f64,
    /// The highest gain the twin accepts, and so the highest the server sends, N·s/m.
    pub max_gain_n_s_per_m: f64,
}

/// Everything the live routes share.
#[derive(Debug)]
pub struct Live {
    /// The hub.
    pub hub: LiveHub,
    /// The role rules (the broker's).
    pub acl: Acl,
    /// The config.
    pub config: LiveConfig,
    /// The InfluxDB client for history, when configured.
    pub history: Option<history::History>,
}

impl Live {
    /// The live routes' state over a running hub.
    pub fn new(hub: LiveHub, config: LiveConfig) -> Self {
        let history = config.history.clone().map(history::History::new);
        Self {
            hub,
            acl: Acl::new(&config.roles),
            config,
            history,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dtop_auth::{RigScope, Role, RolesConfig};

    fn who(role: Role, rigs: RigScope) -> Identity {
        Identity {
            username: "u".into(),
            role,
            rigs,
        }
    }

    #[test]
    fn rights_follow_the_mqtt_rules_of_each_role_and_rig_scope() {
        let acl = Acl::new(&RolesConfig::default());
        let a = RigId::new("rig-a").unwrap();
        let b = RigId::new("rig-b").unwrap();
        let op_a = who(Role::Operator, RigScope::Only(vec!["rig-a".into()]));
        assert_eq!(
            rights(&acl, &op_a, &a),
            Rights {
                samples: true,
                estimates: true,
                cbc: true,
                acks: true,
                command: true
            }
        );
        assert_eq!(rights(&acl, &op_a, &b), Rights::default());
        let wall = who(Role::Dashboard, RigScope::All);
        assert_eq!(
            rights(&acl, &wall, &b),
            Rights {
                samples: true,
                estimates: true,
                cbc: true,
                acks: false,
                command: false
            }
        );
        let researcher = who(Role::Researcher, RigScope::All);
        assert!(!rights(&acl, &researcher, &a).command);
        assert!(rights(&acl, &who(Role::Admin, RigScope::All), &b).command);
        let rig_a = who(Role::Rig, RigScope::Only(vec!["rig-a".into()]));
        assert!(
            !rights(&acl, &rig_a, &a).samples,
            "an edge reads no samples"
        );
    }
}
