//! The MQTT topic map: the only place topic strings are built or parsed.
//!
//! ```text
//! dtop/v1/rig/{rig}/birth         RigBirth            edge → all   retained, QoS 1
//! dtop/v1/rig/{rig}/death         RigDeath            edge → all   last will, QoS 1
//! dtop/v1/rig/{rig}/samples       SampleBlock         edge → twin  QoS 1
//! dtop/v1/rig/{rig}/status        (JSON) edge status  edge → all   retained, QoS 0
//! dtop/v1/rig/{rig}/cmd           Command             operator → edge  QoS 1
//! dtop/v1/rig/{rig}/cmd/ack       CommandAck          edge → operator  QoS 1
//! dtop/v1/rig/{rig}/drive         ActuatorDrive       twin → edge  QoS 0
//! dtop/v1/rig/{rig}/persisted     PersistedWatermark  twin → edge  retained, QoS 1
//! dtop/v1/rig/{rig}/controller    ControllerParams    twin → edge  QoS 1 (acked on cmd/ack)
//! dtop/v1/rig/{rig}/loss          SeqLoss             edge → twin  QoS 1 (repeated until covered)
//! dtop/v1/twin/{rig}/state        TwinState           twin → dashboards  QoS 0
//! dtop/v1/twin/{rig}/state/json   TwinState as JSON   twin → dashboards  QoS 0
//! dtop/v1/twin/{rig}/status       (JSON) twin status  twin → all   retained, QoS 0
//! dtop/v1/sim/{run}/request       simulation request  researcher → twin
//! dtop/v1/sim/{run}/result        simulation result   twin → researcher
//! ```
//!
//! Every rig-scoped topic puts the rig id at level 3, so one ACL pattern with `{rig}` covers a rig.

use std::fmt;

use crate::ids::{RigId, RigIdError};

/// Namespace root; bumping the major wire version changes it.
pub const ROOT: &str = "dtop/v1";

/// What a rig-scoped topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RigTopic {
    Birth,
    Death,
    Samples,
    Status,
    Cmd,
    CmdAck,
    Drive,
    Persisted,
    Controller,
    /// Seqs the edge lost for good (`SeqLoss`); the twin's watermark passes them.
    Loss,
}

impl RigTopic {
    pub const ALL: [RigTopic; 10] = [
        RigTopic::Birth,
        RigTopic::Death,
        RigTopic::Samples,
        RigTopic::Status,
        RigTopic::Cmd,
        RigTopic::CmdAck,
        RigTopic::Drive,
        RigTopic::Persisted,
        RigTopic::Controller,
        RigTopic::Loss,
    ];

    /// The levels after `dtop/v1/rig/{rig}/`.
    pub const fn suffix(self) -> &'static str {
        match self {
            RigTopic::Birth => "birth",
            RigTopic::Death => "death",
            RigTopic::Samples => "samples",
            RigTopic::Status => "status",
            RigTopic::Cmd => "cmd",
            RigTopic::CmdAck => "cmd/ack",
            RigTopic::Drive => "drive",
            RigTopic::Persisted => "persisted",
            RigTopic::Controller => "controller",
            RigTopic::Loss => "loss",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.suffix() == s)
    }
}

/// What a twin-scoped topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TwinTopic {
    State,
    StateJson,
    /// The twin's storage and loss accounting for the rig, JSON, retained, every second.
    Status,
    /// The rig's latest live control-based continuation run, JSON, retained (issue 15).
    Cbc,
}

impl TwinTopic {
    pub const ALL: [TwinTopic; 4] = [
        TwinTopic::State,
        TwinTopic::StateJson,
        TwinTopic::Status,
        TwinTopic::Cbc,
    ];

    pub const fn suffix(self) -> &'static str {
        match self {
            TwinTopic::State => "state",
            TwinTopic::StateJson => "state/json",
            TwinTopic::Status => "status",
            TwinTopic::Cbc => "cbc",
        }
    }

    fn from_suffix(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.suffix() == s)
    }
}

/// What a simulation topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimTopic {
    Request,
    Result,
}

impl SimTopic {
    pub const fn suffix(self) -> &'static str {
        match self {
            SimTopic::Request => "request",
            SimTopic::Result => "result",
        }
    }
}

/// A parsed DTOP topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Rig(RigId, RigTopic),
    Twin(RigId, TwinTopic),
    /// Simulation run id (same character rules as a rig id).
    Sim(RigId, SimTopic),
}

/// Why a topic string is not a DTOP topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under {ROOT}/")]
    ForeignNamespace(String),
    #[error("topic {0:?} has an unknown shape")]
    UnknownShape(String),
    #[error("topic {topic:?} has a bad id: {source}")]
    BadId {
        topic: String,
        #[source]
        source: RigIdError,
    },
}

impl Topic {
    /// Parses a concrete (wildcard-free) topic name.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::ForeignNamespace(topic.to_owned()))?;
        let (family, rest) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::UnknownShape(topic.to_owned()))?;
        let (id, suffix) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::UnknownShape(topic.to_owned()))?;
        let id = RigId::new(id).map_err(|source| TopicError::BadId {
            topic: topic.to_owned(),
            source,
        })?;
        let unknown = || TopicError::UnknownShape(topic.to_owned());
        match family {
            "rig" => RigTopic::from_suffix(suffix)
                .map(|t| Topic::Rig(id, t))
                .ok_or_else(unknown),
            "twin" => TwinTopic::from_suffix(suffix)
                .map(|t| Topic::Twin(id, t))
                .ok_or_else(unknown),
            "sim" => match suffix {
                "request" => Ok(Topic::Sim(id, SimTopic::Request)),
                "result" => Ok(Topic::Sim(id, SimTopic::Result)),
                _ => Err(unknown()),
            },
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Rig(id, t) => write!(f, "{ROOT}/rig/{id}/{}", t.suffix()),
            Topic::Twin(id, t) => write!(f, "{ROOT}/twin/{id}/{}", t.suffix()),
            Topic::Sim(id, t) => write!(f, "{ROOT}/sim/{id}/{}", t.suffix()),
        }
    }
}

/// `dtop/v1/rig/{rig}/{kind}`.
pub fn rig(rig: &RigId, kind: RigTopic) -> String {
    Topic::Rig(rig.clone(), kind).to_string()
}

/// `dtop/v1/twin/{rig}/{kind}`.
pub fn twin(rig: &RigId, kind: TwinTopic) -> String {
    Topic::Twin(rig.clone(), kind).to_string()
}

/// `dtop/v1/twin/{rig}/modes`: the twin's tracking history records (JSON). Not (yet) a
/// [`TwinTopic`], so that adding it breaks no exhaustive match; [`Topic`] does not parse it.
pub fn twin_modes(rig: &RigId) -> String {
    format!("{ROOT}/twin/{rig}/modes")
}

/// `dtop/v1/twin/{rig}/alarm/drift`: the twin's drift alarms (JSON, retained). As
/// [`twin_modes`], not (yet) a [`TwinTopic`].
pub fn twin_drift_alarm(rig: &RigId) -> String {
    format!("{ROOT}/twin/{rig}/alarm/drift")
}

/// `dtop/v1/twin/{rig}/cbc`: the rig's latest live control-based continuation run, its
/// configuration, state and converged points (JSON, retained; issue 15).
pub fn twin_cbc(rig: &RigId) -> String {
    twin(rig, TwinTopic::Cbc)
}

/// Subscription filter for one kind of rig topic across all rigs: `dtop/v1/rig/+/{kind}`.
pub fn all_rigs(kind: RigTopic) -> String {
    format!("{ROOT}/rig/+/{}", kind.suffix())
}

/// Subscription filter for one kind of twin topic across all rigs: `dtop/v1/twin/+/{kind}`.
pub fn all_twins(kind: TwinTopic) -> String {
    format!("{ROOT}/twin/+/{}", kind.suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig_id() -> RigId {
        RigId::new("so-3s").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_topic_round_trips_through_its_string() {
        let id = rig_id();
        let mut all: Vec<Topic> = RigTopic::ALL
            .iter()
            .map(|t| Topic::Rig(id.clone(), *t))
            .collect();
        all.extend(TwinTopic::ALL.iter().map(|t| Topic::Twin(id.clone(), *t)));
        all.push(Topic::Sim(id.clone(), SimTopic::Request));
        all.push(Topic::Sim(id.clone(), SimTopic::Result));
        for t in all {
            let s = t.to_string();
            assert_eq!(Topic::parse(&s), Ok(t), "{s}");
        }
    }

    #[test]
    fn builds_the_documented_strings() {
        let id = rig_id();
        assert_eq!(rig(&id, RigTopic::CmdAck), "dtop/v1/rig/so-3s/cmd/ack");
        assert_eq!(
            twin(&id, TwinTopic::StateJson),
            "dtop/v1/twin/so-3s/state/json"
        );
        assert_eq!(all_rigs(RigTopic::Samples), "dtop/v1/rig/+/samples");
        assert_eq!(rig(&id, RigTopic::Loss), "dtop/v1/rig/so-3s/loss");
    }

    #[test]
    fn refuses_foreign_unknown_and_wildcard_topics() {
        assert!(matches!(
            Topic::parse("spBv1.0/x"),
            Err(TopicError::ForeignNamespace(_))
        ));
        assert!(matches!(
            Topic::parse("dtop/v1/rig/r1/nope"),
            Err(TopicError::UnknownShape(_))
        ));
        assert!(matches!(
            Topic::parse("dtop/v1/rig/r1"),
            Err(TopicError::UnknownShape(_))
        ));
        assert!(matches!(
            Topic::parse("dtop/v1/rig/+/samples"),
            Err(TopicError::BadId { .. })
        ));
        assert!(matches!(
            Topic::parse("dtop/v1/rig/r1/cmd/ack/x"),
            Err(TopicError::UnknownShape(_))
        ));
    }
}
