//! Owns the ACL matrix every enforcer of DTOP's roles is held to: one user per role, every
//! topic family on the user's own rig and on a foreign one, and for each whether the role may
//! publish and subscribe there. The expectations are written out from the role descriptions
//! (issues 4, 12, 13 and 15), never computed by [`crate::acl`]'s engine or from its default
//! patterns, so a wrong rule cannot agree with itself.
//!
//! Used by the unit test below (the pure engine), by `dtop-broker`'s integration test (the
//! broker itself, MQTT 5) and by `dtop-e2e`'s (a NATS cluster with the permissions
//! [`crate::nats`] generates): the same users, cases and expectations for all three, kept
//! here because this crate owns the roles and sits below both of the others.

use dtop_proto::ids::RigId;
use dtop_proto::topic::{self, RigTopic, SimTopic, Topic, TwinTopic};

use crate::acl::Role;

/// Every matrix user's password.
pub const PASSWORD: &str = "correct horse";

/// One matrix user as `dtop-broker passwd add` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixUser {
    pub name: &'static str,
    pub role: Role,
    /// The rig scope as the credentials file writes it (`-`, `*` or a list).
    pub rigs: &'static str,
}

/// One user per role; the operator `op` is scoped to `r1`, the rig `r1` to itself.
pub const USERS: [MatrixUser; 7] = [
    MatrixUser {
        name: "r1",
        role: Role::Rig,
        rigs: "-",
    },
    MatrixUser {
        name: "twin",
        role: Role::Twin,
        rigs: "*",
    },
    MatrixUser {
        name: "op",
        role: Role::Operator,
        rigs: "r1",
    },
    MatrixUser {
        name: "dash",
        role: Role::Dashboard,
        rigs: "*",
    },
    MatrixUser {
        name: "ada",
        role: Role::Researcher,
        rigs: "*",
    },
    MatrixUser {
        name: "api",
        role: Role::Server,
        rigs: "-",
    },
    MatrixUser {
        name: "root",
        role: Role::Admin,
        rigs: "*",
    },
];

/// The admin of [`USERS`], who may read everything: the watcher that proves no forbidden
/// publish reaches anyone.
pub const WATCHER: &str = "root";

/// One topic family on a given rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Rig(RigTopic),
    Twin(TwinTopic),
    Sim(SimTopic),
    /// `dtop/v1/studies/{id}/state`, published by the API server (issue 12); not rig-scoped.
    Studies,
}

/// Every family the matrix covers.
pub const FAMILIES: [Family; 17] = [
    Family::Rig(RigTopic::Birth),
    Family::Rig(RigTopic::Death),
    Family::Rig(RigTopic::Samples),
    Family::Rig(RigTopic::Status),
    Family::Rig(RigTopic::Cmd),
    Family::Rig(RigTopic::CmdAck),
    Family::Rig(RigTopic::Drive),
    Family::Rig(RigTopic::Persisted),
    Family::Rig(RigTopic::Controller),
    Family::Rig(RigTopic::Loss),
    Family::Twin(TwinTopic::State),
    Family::Twin(TwinTopic::StateJson),
    Family::Twin(TwinTopic::Status),
    Family::Twin(TwinTopic::Cbc),
    Family::Sim(SimTopic::Request),
    Family::Sim(SimTopic::Result),
    Family::Studies,
];

/// The topic of `family` on `rig`.
pub fn topic_of(family: Family, rig: &RigId) -> String {
    match family {
        Family::Rig(kind) => topic::rig(rig, kind),
        Family::Twin(kind) => topic::twin(rig, kind),
        Family::Sim(kind) => Topic::Sim(rig.clone(), kind).to_string(),
        Family::Studies => format!("dtop/v1/studies/st-{rig}/state"),
    }
}

/// Publish or subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Publish,
    Subscribe,
}

/// The role semantics, written out. `own` is whether the topic is on a rig the user is scoped
/// to (its own rig for `rig`, an allowed rig for `operator`).
pub fn expected(role: Role, op: Op, family: Family, own: bool) -> bool {
    use Family::{Rig, Sim, Studies, Twin};
    use RigTopic as R;
    match (role, op) {
        (Role::Admin, _) => true,
        // A rig publishes only its own rig topics (its telemetry, command acks and loss
        // declarations) and receives only its own cmd, drive, persisted and controller.
        (Role::Rig, Op::Publish) => {
            own && matches!(
                family,
                Rig(R::Birth | R::Death | R::Samples | R::Status | R::CmdAck | R::Loss)
            )
        }
        (Role::Rig, Op::Subscribe) => {
            own && matches!(
                family,
                Rig(R::Cmd | R::Drive | R::Persisted | R::Controller)
            )
        }
        // The twin reads all rig topics and simulation requests; writes drive, persisted,
        // controller params, command acks, twin topics and simulation results.
        (Role::Twin, Op::Publish) => matches!(
            family,
            Rig(R::Drive | R::Persisted | R::Controller | R::CmdAck)
                | Twin(_)
                | Sim(SimTopic::Result)
        ),
        (Role::Twin, Op::Subscribe) => matches!(family, Rig(_) | Sim(SimTopic::Request)),
        // An operator writes cmd for its rigs and reads everything on them.
        (Role::Operator, Op::Publish) => own && family == Rig(R::Cmd),
        // Operators also read every study (issue 12).
        (Role::Operator, Op::Subscribe) => {
            (own && matches!(family, Rig(_) | Twin(_))) || family == Studies
        }
        // A dashboard, and a researcher (issue 12), read twin, telemetry and study topics and
        // write nothing: no rig command, no drive.
        (Role::Dashboard | Role::Researcher, Op::Publish) => false,
        (Role::Dashboard | Role::Researcher, Op::Subscribe) => matches!(
            family,
            Twin(_) | Rig(R::Birth | R::Death | R::Samples | R::Status) | Studies
        ),
        // The API and web server's MQTT user publishes study topics, and rig commands on behalf
        // of web users it has checked against their own rules (issue 13); it reads what the
        // live pages show: rig telemetry, command acks, the twin's state and status, and its
        // live CBC runs (issue 15).
        (Role::Server, Op::Publish) => family == Studies || family == Rig(R::Cmd),
        (Role::Server, Op::Subscribe) => matches!(
            family,
            Rig(R::Birth | R::Death | R::Samples | R::Status | R::CmdAck)
                | Twin(TwinTopic::State | TwinTopic::Status | TwinTopic::Cbc)
        ),
    }
}

/// One cell pair of the matrix: a topic and whether the role may subscribe and publish there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub topic: String,
    pub may_subscribe: bool,
    pub may_publish: bool,
}

/// The user's own rig and the foreign one.
const OWN_RIG: &str = "r1";
const FOREIGN_RIG: &str = "r2";

/// Every topic family on the own rig `r1` and on the foreign rig `r2`, with `role`'s
/// expectations: the matrix every enforcer is held to.
pub fn cases(role: Role) -> Vec<Case> {
    let mut cases = Vec::new();
    for (rig, is_own) in [(OWN_RIG, true), (FOREIGN_RIG, false)] {
        let Ok(rig) = RigId::new(rig) else {
            // Both are valid rig ids; nothing to list otherwise.
            continue;
        };
        for family in FAMILIES {
            // Sim topics are not rig-scoped; count them as "own" for every scope.
            let own_scope = is_own || matches!(family, Family::Sim(_));
            cases.push(Case {
                topic: topic_of(family, &rig),
                may_subscribe: expected(role, Op::Subscribe, family, own_scope),
                may_publish: expected(role, Op::Publish, family, own_scope),
            });
        }
    }
    cases
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::acl::{Acl, RolesConfig};
    use crate::credentials::Credentials;

    /// The pure engine with the default rules agrees with every cell of the matrix, for the
    /// identities the credentials file gives the matrix users.
    #[test]
    fn the_engine_with_the_default_rules_holds_to_the_matrix() {
        let text: String = USERS
            .iter()
            .map(|u| format!("{}:{}:{}:-\n", u.name, u.role.as_str(), u.rigs))
            .collect();
        let credentials = Credentials::parse(&text).expect("matrix users parse");
        let acl = Acl::new(&RolesConfig::default());
        let mut mismatches = Vec::new();
        let mut cells = 0;
        for user in USERS {
            let who = credentials.identity(user.name).expect("user exists");
            for case in cases(user.role) {
                cells += 2;
                if acl.may_subscribe(&who, &case.topic) != case.may_subscribe {
                    mismatches.push(format!("{} subscribe {}", user.name, case.topic));
                }
                if acl.may_publish(&who, &case.topic) != case.may_publish {
                    mismatches.push(format!("{} publish {}", user.name, case.topic));
                }
            }
        }
        assert_eq!(cells, 7 * 2 * 2 * FAMILIES.len());
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    /// The matrix can fail: it has both outcomes for every non-admin role and direction.
    #[test]
    fn every_non_admin_role_has_allowed_and_refused_cells() {
        for user in USERS.iter().filter(|u| u.role != Role::Admin) {
            let all = cases(user.role);
            assert!(all.iter().any(|c| !c.may_subscribe), "{}", user.name);
            assert!(all.iter().any(|c| c.may_subscribe), "{}", user.name);
            assert!(all.iter().any(|c| !c.may_publish), "{}", user.name);
        }
    }
}
