//! Owns how an operator's request becomes a `Command`: the request as data ([`CommandRequest`],
//! what `dtop cmd` parses from flags and the web server from JSON), its validation (every
//! problem at once) and the one builder both use, so the CLI and the browser send the same
//! bytes. Knows nothing about MQTT or who may send what.

use serde::{Deserialize, Serialize};

use crate::ids::RigId;
use crate::v1::command::Kind;
use crate::v1::command_ack::Status;
use crate::v1::excitation::Waveform;
use crate::v1::set_control::{Law, Placement};
use crate::v1::{
    ActuatorEnable, Command, CommandAck, Excitation, Rebirth, RunCbc, SafetyReset, SafetyStop,
    SetAcquisition, SetControl, SetDrive,
};

/// What an operator asks a rig to do, before it has an id, a deadline and a sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandRequest {
    /// Switch active control on or off, with its law, gain and where it runs (the twin answers).
    SetControl {
        /// The law.
        law: LawName,
        /// DVF feedback gain g = Bl·h, N·s/m (required for `dvf`).
        #[serde(default)]
        gain_n_s_per_m: Option<f64>,
        /// Where the law runs (default: the twin).
        #[serde(default)]
        placement: PlacementName,
    },
    /// Arm the actuator after a disable.
    ActuatorEnable {},
    /// Disable the actuator (0 N, off) until enabled again.
    ActuatorDisable {},
    /// Hold an open-loop drive force.
    SetDrive {
        /// The force, N.
        force_n: f64,
    },
    /// Latch the actuator off until a safety reset (top priority at the edge).
    SafetyStop {},
    /// Release a latched safety stop.
    SafetyReset {},
    /// Ask the edge to publish its birth again.
    Rebirth {},
    /// Samples per block from the next block on.
    SetAcquisition {
        /// Samples per block, at least 1.
        block_samples: u32,
    },
    /// Start or stop the rig's shaker.
    Excitation {
        /// The waveform (`off` stops it).
        waveform: WaveformName,
        /// RMS force for noise, amplitude for sine and chirp, N.
        #[serde(default)]
        amplitude_n: f64,
        /// Sine frequency or chirp start, Hz.
        #[serde(default)]
        frequency_hz: f64,
        /// Chirp end or noise band edge, Hz.
        #[serde(default)]
        frequency_end_hz: f64,
    },
    /// Trace the actuator floor's response curve by live control-based continuation (the twin
    /// answers and runs it; issue 15).
    RunCbc(CbcRequest),
    /// Stop the running live continuation, keeping its points, and switch the edge's loop off.
    StopCbc {},
}

/// A live control-based continuation: the frequencies and the target amplitude, and any of the
/// twin's defaults to override (`dtop_nonlinear::LiveCbcConfig`; unset fields keep them). Only
/// the shape is checked here; the twin checks the run against the rig (sample rate, force
/// limit, channels) and refuses with every problem at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CbcRequest {
    /// First forcing frequency, Hz.
    pub frequency_start_hz: f64,
    /// Last forcing frequency, Hz.
    pub frequency_end_hz: f64,
    /// Evenly spaced frequencies from the first to the last, inclusive (≥ 1).
    pub frequency_steps: u32,
    /// First-harmonic amplitude of the floor's displacement target, m.
    pub target_amplitude_m: f64,
    /// Harmonics of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmonics: Option<u32>,
    /// Proportional gain, N/m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proportional_gain_n_per_m: Option<f64>,
    /// Derivative gain, N·s/m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivative_gain_n_s_per_m: Option<f64>,
    /// Corner of the edge's leaky integrators, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrator_corner_hz: Option<f64>,
    /// Time discarded after each new target, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_s: Option<f64>,
    /// Forcing periods analysed per iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure_periods: Option<u32>,
    /// Iterations allowed per point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// Largest higher harmonic of the control force over its first, at convergence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invasiveness_tolerance: Option<f64>,
    /// Largest relative change of the first harmonics between iterations, at convergence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_tolerance: Option<f64>,
}

impl CbcRequest {
    /// Every problem with the request's shape (non-finite or non-positive values, a count of
    /// zero), each naming its field.
    fn problems(&self) -> Vec<CommandProblem> {
        let mut problems = Vec::new();
        let positive = [
            ("frequency_start_hz", Some(self.frequency_start_hz)),
            ("frequency_end_hz", Some(self.frequency_end_hz)),
            ("target_amplitude_m", Some(self.target_amplitude_m)),
            ("integrator_corner_hz", self.integrator_corner_hz),
            ("settle_s", self.settle_s),
            ("invasiveness_tolerance", self.invasiveness_tolerance),
            ("change_tolerance", self.change_tolerance),
        ];
        for (field, value) in positive {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                problems.push(CommandProblem::new(
                    field,
                    format!("{v} must be finite and > 0"),
                ));
            }
        }
        for (field, value) in [
            ("proportional_gain_n_per_m", self.proportional_gain_n_per_m),
            ("derivative_gain_n_s_per_m", self.derivative_gain_n_s_per_m),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                problems.push(CommandProblem::new(
                    field,
                    format!("{v} must be finite and >= 0"),
                ));
            }
        }
        for (field, value) in [
            ("frequency_steps", Some(self.frequency_steps)),
            ("harmonics", self.harmonics),
            ("measure_periods", self.measure_periods),
            ("max_iterations", self.max_iterations),
        ] {
            if value == Some(0) {
                problems.push(CommandProblem::new(field, "must be at least 1"));
            }
        }
        if self.frequency_end_hz < self.frequency_start_hz {
            problems.push(CommandProblem::new(
                "frequency_end_hz",
                format!(
                    "{} Hz is below frequency_start_hz {} Hz",
                    self.frequency_end_hz, self.frequency_start_hz
                ),
            ));
        }
        problems
    }

    fn to_wire(&self) -> RunCbc {
        RunCbc {
            stop: false,
            frequency_start_hz: self.frequency_start_hz,
            frequency_end_hz: self.frequency_end_hz,
            frequency_steps: self.frequency_steps,
            target_amplitude_m: self.target_amplitude_m,
            harmonics: self.harmonics,
            proportional_gain_n_per_m: self.proportional_gain_n_per_m,
            derivative_gain_n_s_per_m: self.derivative_gain_n_s_per_m,
            integrator_corner_hz: self.integrator_corner_hz,
            settle_s: self.settle_s,
            measure_periods: self.measure_periods,
            max_iterations: self.max_iterations,
            invasiveness_tolerance: self.invasiveness_tolerance,
            change_tolerance: self.change_tolerance,
        }
    }
}

/// A control law by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LawName {
    /// No control.
    Off,
    /// Direct velocity feedback.
    Dvf,
    /// LQG.
    Lqg,
}

/// Where a control law runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementName {
    /// The twin computes drives from its estimate.
    #[default]
    Twin,
    /// The edge runs a controller the twin designs, at the sample rate.
    Edge,
}

/// An excitation waveform by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveformName {
    /// Shaker off.
    Off,
    /// Band-limited noise.
    Noise,
    /// Sine.
    Sine,
    /// Chirp.
    Chirp,
}

/// One thing wrong with a command request: which field (as the request names it) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandProblem {
    /// The field, e.g. `gain_n_s_per_m` or `rig`.
    pub field: &'static str,
    /// A sentence for the operator.
    pub message: String,
}

impl CommandProblem {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Everything that makes a request a `Command` besides its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope<'a> {
    /// The rig it is for.
    pub rig: &'a str,
    /// Unique id; the rig applies each id at most once.
    pub id: &'a str,
    /// Expires unless applied within this many seconds (0 = never).
    pub deadline_s: f64,
    /// Who sends it (the user name), for the audit log.
    pub issued_by: &'a str,
    /// Wall clock now, ns since the Unix epoch.
    pub now_unix_ns: u64,
}

impl CommandRequest {
    /// Whether this request can make the structure move (the web page asks to confirm these).
    pub fn moves_the_structure(&self) -> bool {
        match self {
            Self::SetControl { law, .. } => *law != LawName::Off,
            Self::ActuatorEnable {} | Self::SafetyReset {} | Self::RunCbc(_) => true,
            Self::SetDrive { force_n } => *force_n != 0.0,
            Self::Excitation { waveform, .. } => *waveform != WaveformName::Off,
            Self::ActuatorDisable {}
            | Self::SafetyStop {}
            | Self::Rebirth {}
            | Self::SetAcquisition { .. }
            | Self::StopCbc {} => false,
        }
    }

    /// The DVF gain asked for, N·s/m, if this switches DVF on.
    pub fn dvf_gain_n_s_per_m(&self) -> Option<f64> {
        match self {
            Self::SetControl {
                law: LawName::Dvf,
                gain_n_s_per_m,
                ..
            } => *gain_n_s_per_m,
            _ => None,
        }
    }
}

/// The `Command` `request` and `envelope` describe, or every problem with them.
///
/// # Errors
/// Every problem at once, each naming its field.
pub fn build(
    request: &CommandRequest,
    envelope: &CommandEnvelope<'_>,
) -> Result<Command, Vec<CommandProblem>> {
    let mut problems = Vec::new();
    if let Err(e) = RigId::new(envelope.rig) {
        problems.push(CommandProblem::new(
            "rig",
            format!("{:?}: {e}", envelope.rig),
        ));
    }
    if !(envelope.deadline_s.is_finite() && envelope.deadline_s >= 0.0) {
        problems.push(CommandProblem::new(
            "deadline_s",
            format!("{} must be >= 0", envelope.deadline_s),
        ));
    }
    if envelope.id.is_empty() || envelope.id.len() > 128 {
        problems.push(CommandProblem::new("id", "must be 1..=128 bytes"));
    }
    let kind = match request {
        CommandRequest::SetControl {
            law,
            gain_n_s_per_m,
            placement,
        } => {
            let law = match law {
                LawName::Off => Law::Off,
                LawName::Dvf => Law::Dvf,
                LawName::Lqg => Law::Lqg,
            };
            let gain = match (law, gain_n_s_per_m) {
                (Law::Dvf, None) => {
                    problems.push(CommandProblem::new(
                        "gain_n_s_per_m",
                        "set_control with law dvf needs a gain",
                    ));
                    0.0
                }
                (Law::Dvf, Some(g)) if !(g.is_finite() && *g >= 0.0) => {
                    problems.push(CommandProblem::new(
                        "gain_n_s_per_m",
                        format!("{g} must be finite and >= 0"),
                    ));
                    0.0
                }
                (_, g) => g.unwrap_or(0.0),
            };
            Kind::SetControl(SetControl {
                law: law as i32,
                gain_n_s_per_m: gain,
                placement: match placement {
                    PlacementName::Twin => Placement::Twin,
                    PlacementName::Edge => Placement::Edge,
                } as i32,
            })
        }
        CommandRequest::ActuatorEnable {} => Kind::ActuatorEnable(ActuatorEnable { enabled: true }),
        CommandRequest::ActuatorDisable {} => {
            Kind::ActuatorEnable(ActuatorEnable { enabled: false })
        }
        CommandRequest::SetDrive { force_n } => {
            if !force_n.is_finite() {
                problems.push(CommandProblem::new(
                    "force_n",
                    format!("{force_n} must be finite"),
                ));
            }
            Kind::SetDrive(SetDrive { force_n: *force_n })
        }
        CommandRequest::SafetyStop {} => Kind::SafetyStop(SafetyStop {}),
        CommandRequest::SafetyReset {} => Kind::SafetyReset(SafetyReset {}),
        CommandRequest::Rebirth {} => Kind::Rebirth(Rebirth {}),
        CommandRequest::SetAcquisition { block_samples } => {
            if *block_samples == 0 {
                problems.push(CommandProblem::new("block_samples", "must be at least 1"));
            }
            Kind::SetAcquisition(SetAcquisition {
                block_samples: *block_samples,
            })
        }
        CommandRequest::Excitation {
            waveform,
            amplitude_n,
            frequency_hz,
            frequency_end_hz,
        } => {
            for (name, v) in [
                ("amplitude_n", amplitude_n),
                ("frequency_hz", frequency_hz),
                ("frequency_end_hz", frequency_end_hz),
            ] {
                if !(v.is_finite() && *v >= 0.0) {
                    problems.push(CommandProblem::new(
                        name,
                        format!("{v} must be finite and >= 0"),
                    ));
                }
            }
            Kind::Excitation(Excitation {
                waveform: match waveform {
                    WaveformName::Off => Waveform::Off,
                    WaveformName::Noise => Waveform::Noise,
                    WaveformName::Sine => Waveform::Sine,
                    WaveformName::Chirp => Waveform::Chirp,
                } as i32,
                amplitude_n: *amplitude_n,
                frequency_hz: *frequency_hz,
                frequency_end_hz: *frequency_end_hz,
            })
        }
        CommandRequest::RunCbc(run) => {
            problems.extend(run.problems());
            Kind::RunCbc(run.to_wire())
        }
        CommandRequest::StopCbc {} => Kind::RunCbc(RunCbc {
            stop: true,
            ..RunCbc::default()
        }),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let deadline_ns = if envelope.deadline_s == 0.0 {
        0
    } else {
        envelope.now_unix_ns + (envelope.deadline_s * 1e9) as u64
    };
    Ok(Command {
        id: envelope.id.to_owned(),
        deadline_ns,
        target_rig: envelope.rig.to_owned(),
        issued_by: envelope.issued_by.to_owned(),
        kind: Some(kind),
    })
}

/// An acknowledgement's status as operators read it: `applied`, `refused`, `expired`,
/// `latched` (or `unspecified`).
pub fn ack_status_name(ack: &CommandAck) -> String {
    let status = ack.status().as_str_name();
    status
        .strip_prefix("STATUS_")
        .unwrap_or(status)
        .to_ascii_lowercase()
}

/// Whether an answer means the command took effect.
pub fn ack_succeeded(ack: &CommandAck) -> bool {
    matches!(ack.status(), Status::Applied | Status::Latched)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn envelope() -> CommandEnvelope<'static> {
        CommandEnvelope {
            rig: "lab-1",
            id: "c1",
            deadline_s: 2.0,
            issued_by: "alice",
            now_unix_ns: 1_000,
        }
    }

    #[test]
    fn builds_an_edge_hosted_dvf_command_from_json() {
        let request: CommandRequest = serde_json::from_str(
            r#"{"kind":"set_control","law":"dvf","gain_n_s_per_m":8,"placement":"edge"}"#,
        )
        .unwrap();
        let c = build(&request, &envelope()).unwrap();
        assert_eq!((c.id.as_str(), c.deadline_ns), ("c1", 2_000_001_000));
        assert_eq!(c.issued_by, "alice");
        let Some(Kind::SetControl(s)) = c.kind else {
            panic!()
        };
        assert_eq!(
            (s.law(), s.gain_n_s_per_m, s.placement()),
            (Law::Dvf, 8.0, Placement::Edge)
        );
        assert!(request.moves_the_structure());
        assert_eq!(request.dvf_gain_n_s_per_m(), Some(8.0));
    }

    #[test]
    fn reports_every_problem_at_once_with_its_field() {
        let request = CommandRequest::SetControl {
            law: LawName::Dvf,
            gain_n_s_per_m: None,
            placement: PlacementName::Twin,
        };
        let bad = CommandEnvelope {
            rig: "bad rig!",
            deadline_s: -1.0,
            ..envelope()
        };
        let fields: Vec<_> = build(&request, &bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["rig", "deadline_s", "gain_n_s_per_m"]);
    }

    #[test]
    fn refuses_unknown_kinds_and_unknown_fields_of_every_kind() {
        assert!(serde_json::from_str::<CommandRequest>(r#"{"kind":"launch"}"#).is_err());
        assert!(
            serde_json::from_str::<CommandRequest>(r#"{"kind":"set_drive","force_n":1,"x":1}"#)
                .is_err()
        );
        // Kinds without fields are empty struct variants, not unit variants: serde applies
        // deny_unknown_fields only to the former in an internally tagged enum.
        for kind in [
            "actuator_enable",
            "actuator_disable",
            "safety_stop",
            "safety_reset",
            "rebirth",
        ] {
            let json = format!(r#"{{"kind":"{kind}","gain":1}}"#);
            assert!(
                serde_json::from_str::<CommandRequest>(&json).is_err(),
                "{json}"
            );
        }
        let stop: CommandRequest = serde_json::from_str(r#"{"kind":"safety_stop"}"#).unwrap();
        assert!(serde_json::from_str::<CommandRequest>(r#"{"kind":"stop_cbc","x":1}"#).is_err());
        assert!(!stop.moves_the_structure());
        assert_eq!(
            serde_json::to_string(&stop).unwrap(),
            r#"{"kind":"safety_stop"}"#
        );
    }

    #[test]
    fn builds_a_live_cbc_from_json_with_its_overrides_and_checks_every_field() {
        let request: CommandRequest = serde_json::from_str(
            r#"{"kind":"run_cbc","frequency_start_hz":6.8,"frequency_end_hz":7.4,
                "frequency_steps":3,"target_amplitude_m":2e-4,"settle_s":1.5}"#,
        )
        .unwrap();
        assert!(request.moves_the_structure());
        let Some(Kind::RunCbc(run)) = build(&request, &envelope()).unwrap().kind else {
            panic!()
        };
        assert_eq!(
            (run.stop, run.frequency_steps, run.settle_s, run.harmonics),
            (false, 3, Some(1.5), None)
        );
        let bad: CommandRequest = serde_json::from_str(
            r#"{"kind":"run_cbc","frequency_start_hz":7,"frequency_end_hz":6,
                "frequency_steps":0,"target_amplitude_m":-1,"proportional_gain_n_per_m":-5}"#,
        )
        .unwrap();
        let fields: Vec<_> = build(&bad, &envelope())
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "target_amplitude_m",
                "proportional_gain_n_per_m",
                "frequency_steps",
                "frequency_end_hz"
            ]
        );
        let stop: CommandRequest = serde_json::from_str(r#"{"kind":"stop_cbc"}"#).unwrap();
        assert!(!stop.moves_the_structure());
        let Some(Kind::RunCbc(run)) = build(&stop, &envelope()).unwrap().kind else {
            panic!()
        };
        assert!(run.stop);
    }
}
