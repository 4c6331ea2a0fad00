//! `dtop cmd`: the operator's command line. Builds a `Command` (pure, validated: every problem
//! at once, exit 64), publishes it on the rig's cmd topic at QoS 1 and prints the answers on
//! cmd/ack as JSON: the edge's or the twin's, and for an edge-hosted control law or a live CBC
//! run also the edge's `controller/{version}` acknowledgement. `run-cbc --wait` then follows
//! the run's retained status on `dtop/v1/twin/{rig}/cbc` until it ends. Knows nothing of what
//! the rig does with it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use dtop_proto::command::{
    self, CbcRequest, CommandEnvelope, CommandRequest, LawName, PlacementName, WaveformName,
};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::set_control::{Law, Placement};
use dtop_proto::v1::{Command, CommandAck};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};

/// `dtop cmd [OPTIONS] <KIND>`.
#[derive(Debug, Args)]
pub struct CmdArgs {
    /// Rig to command.
    #[arg(long)]
    pub rig: String,
    /// MQTT broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// MQTT broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT username (the broker's `operator` role).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password (first line).
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Command id; the rig applies each id at most once. Default: unique per call.
    #[arg(long)]
    pub id: Option<String>,
    /// The command expires unless applied within this many seconds (0 = never).
    #[arg(long, default_value_t = 10.0)]
    pub deadline_s: f64,
    /// How long to wait for the acknowledgements, s.
    #[arg(long, default_value_t = 10.0)]
    pub timeout_s: f64,
    #[command(subcommand)]
    pub kind: KindArgs,
}

/// What to ask for.
#[derive(Debug, Clone, Subcommand)]
pub enum KindArgs {
    /// Switch active control on or off; choose the law, gain and where it runs (twin answers).
    SetControl {
        #[arg(long, value_enum)]
        law: LawArg,
        /// DVF feedback gain g = Bl·h, N·s/m (required for dvf).
        #[arg(long)]
        gain_n_s_per_m: Option<f64>,
        #[arg(long, value_enum, default_value = "twin")]
        placement: PlacementArg,
    },
    /// Arm the actuator after a disable.
    ActuatorEnable,
    /// Disable the actuator (0 N, off) until enabled again.
    ActuatorDisable,
    /// Hold an open-loop drive force, N.
    SetDrive {
        #[arg(long, allow_negative_numbers = true)]
        force_n: f64,
    },
    /// Latch the actuator off until safety-reset (top priority at the edge).
    SafetyStop,
    /// Release a latched safety stop.
    SafetyReset,
    /// Ask the edge to publish its birth again.
    Rebirth,
    /// Samples per block from the next block on.
    SetAcquisition {
        #[arg(long)]
        block_samples: u32,
    },
    /// Trace the actuator floor's response curve by live control-based continuation: the
    /// twin iterates a harmonic target the edge follows until the control force has no higher
    /// harmonics, at each frequency (twin answers; needs `[control] enabled = true`).
    RunCbc {
        /// First forcing frequency, Hz.
        #[arg(long)]
        frequency_start_hz: f64,
        /// Last forcing frequency, Hz (default: the first).
        #[arg(long)]
        frequency_end_hz: Option<f64>,
        /// Evenly spaced frequencies, first and last included.
        #[arg(long, default_value_t = 1)]
        frequency_steps: u32,
        /// First-harmonic amplitude of the floor's displacement target, m.
        #[arg(long)]
        target_amplitude_m: f64,
        /// Target harmonics (default 5).
        #[arg(long)]
        harmonics: Option<u32>,
        /// Proportional gain, N/m (default 5000).
        #[arg(long)]
        proportional_gain_n_per_m: Option<f64>,
        /// Derivative gain, N·s/m (default 50).
        #[arg(long)]
        derivative_gain_n_s_per_m: Option<f64>,
        /// Corner of the edge's leaky integrators, Hz (default 0.5).
        #[arg(long)]
        integrator_corner_hz: Option<f64>,
        /// Time discarded after each new target, s (default 2).
        #[arg(long)]
        settle_s: Option<f64>,
        /// Forcing periods analysed per iteration (default 30).
        #[arg(long)]
        measure_periods: Option<u32>,
        /// Iterations allowed per point (default 12).
        #[arg(long)]
        max_iterations: Option<u32>,
        /// Converged when no higher harmonic of the force exceeds this fraction of the first
        /// (default 5e-3).
        #[arg(long)]
        invasiveness_tolerance: Option<f64>,
        /// ... and the first harmonics changed by at most this fraction (default 5e-3).
        #[arg(long)]
        change_tolerance: Option<f64>,
        /// After the acknowledgements, follow the run until it ends (within --timeout-s,
        /// which then covers the whole run) and print `{"acks": [...], "run": {...}}`.
        #[arg(long)]
        wait: bool,
    },
    /// Stop the running live CBC run, keeping its points, and switch the edge's loop off.
    StopCbc,
    /// Start or stop the rig's shaker.
    Excitation {
        #[arg(long, value_enum)]
        waveform: WaveformArg,
        #[arg(long, default_value_t = 0.0)]
        amplitude_n: f64,
        #[arg(long, default_value_t = 0.0)]
        frequency_hz: f64,
        #[arg(long, default_value_t = 0.0)]
        frequency_end_hz: f64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LawArg {
    Off,
    Dvf,
    Lqg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlacementArg {
    Twin,
    Edge,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WaveformArg {
    Off,
    Noise,
    Sine,
    Chirp,
}

/// The shared request `args` describe (`dtop_proto::command`, also used by the web server).
pub fn request(args: &CmdArgs) -> CommandRequest {
    match &args.kind {
        KindArgs::SetControl {
            law,
            gain_n_s_per_m,
            placement,
        } => CommandRequest::SetControl {
            law: match law {
                LawArg::Off => LawName::Off,
                LawArg::Dvf => LawName::Dvf,
                LawArg::Lqg => LawName::Lqg,
            },
            gain_n_s_per_m: *gain_n_s_per_m,
            placement: match placement {
                PlacementArg::Twin => PlacementName::Twin,
                PlacementArg::Edge => PlacementName::Edge,
            },
        },
        KindArgs::ActuatorEnable => CommandRequest::ActuatorEnable {},
        KindArgs::ActuatorDisable => CommandRequest::ActuatorDisable {},
        KindArgs::SetDrive { force_n } => CommandRequest::SetDrive { force_n: *force_n },
        KindArgs::RunCbc {
            frequency_start_hz,
            frequency_end_hz,
            frequency_steps,
            target_amplitude_m,
            harmonics,
            proportional_gain_n_per_m,
            derivative_gain_n_s_per_m,
            integrator_corner_hz,
            settle_s,
            measure_periods,
            max_iterations,
            invasiveness_tolerance,
            change_tolerance,
            wait: _,
        } => CommandRequest::RunCbc(CbcRequest {
            frequency_start_hz: *frequency_start_hz,
            frequency_end_hz: frequency_end_hz.unwrap_or(*frequency_start_hz),
            frequency_steps: *frequency_steps,
            target_amplitude_m: *target_amplitude_m,
            harmonics: *harmonics,
            proportional_gain_n_per_m: *proportional_gain_n_per_m,
            derivative_gain_n_s_per_m: *derivative_gain_n_s_per_m,
            integrator_corner_hz: *integrator_corner_hz,
            settle_s: *settle_s,
            measure_periods: *measure_periods,
            max_iterations: *max_iterations,
            invasiveness_tolerance: *invasiveness_tolerance,
            change_tolerance: *change_tolerance,
        }),
        KindArgs::StopCbc => CommandRequest::StopCbc {},
        KindArgs::SafetyStop => CommandRequest::SafetyStop {},
        KindArgs::SafetyReset => CommandRequest::SafetyReset {},
        KindArgs::Rebirth => CommandRequest::Rebirth {},
        KindArgs::SetAcquisition { block_samples } => CommandRequest::SetAcquisition {
            block_samples: *block_samples,
        },
        KindArgs::Excitation {
            waveform,
            amplitude_n,
            frequency_hz,
            frequency_end_hz,
        } => CommandRequest::Excitation {
            waveform: match waveform {
                WaveformArg::Off => WaveformName::Off,
                WaveformArg::Noise => WaveformName::Noise,
                WaveformArg::Sine => WaveformName::Sine,
                WaveformArg::Chirp => WaveformName::Chirp,
            },
            amplitude_n: *amplitude_n,
            frequency_hz: *frequency_hz,
            frequency_end_hz: *frequency_end_hz,
        },
    }
}

/// The command `args` describe, sent at `now_unix_ns`, or every problem with them (built by
/// `dtop_proto::command::build`, the same builder the web server uses).
pub fn build(args: &CmdArgs, now_unix_ns: u64) -> Result<Command, Vec<String>> {
    let mut problems = Vec::new();
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        problems.push(format!("--timeout-s {} must be > 0", args.timeout_s));
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("dtop-cli-{}-{now_unix_ns}", std::process::id()));
    let issued_by = args
        .username
        .clone()
        .unwrap_or_else(|| format!("dtop-cli@{}", hostname()));
    let envelope = CommandEnvelope {
        rig: &args.rig,
        id: &id,
        deadline_s: args.deadline_s,
        issued_by: &issued_by,
        now_unix_ns,
    };
    match command::build(&request(args), &envelope) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(
                more.into_iter()
                    .map(|p| format!("--{} {}", p.field.replace('_', "-"), p.message)),
            );
            Err(problems)
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Wall clock, ns since the Unix epoch (deadlines are wall-clock instants).
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An acknowledgement as operators read it: the status by name (`applied`, `refused`,
/// `expired`, `latched`).
pub fn ack_json(ack: &CommandAck) -> serde_json::Value {
    serde_json::json!({
        "command_id": ack.command_id,
        "rig_id": ack.rig_id,
        "status": command::ack_status_name(ack),
        "applied_at_sample_index": ack.applied_at_sample_index,
        "reason": ack.reason,
    })
}

/// Whether an answer means the command took effect.
pub fn succeeded(ack: &CommandAck) -> bool {
    command::ack_succeeded(ack)
}

/// The connection `args` describe, as client `{prefix}-{pid}`, logged in when they name a user
/// and a password file (its first line).
fn mqtt_options(args: &CmdArgs, prefix: &str) -> anyhow::Result<MqttOptions> {
    let mut options = MqttOptions::new(
        format!("{prefix}-{}", std::process::id()),
        args.host.as_str(),
        args.port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    if let (Some(user), Some(path)) = (&args.username, &args.password_file) {
        let password =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let password = password.lines().next().unwrap_or("").to_owned();
        options.set_credentials(user.clone(), password);
    }
    Ok(options)
}

/// Publishes `command` and returns the acknowledgements: the first answer to its id, and for
/// an edge-hosted control law that was applied, the edge's `controller/{version}` answer too.
///
/// # Errors
/// No connection, or no answer within `timeout`.
pub async fn send(
    args: &CmdArgs,
    command: &Command,
    timeout: Duration,
) -> anyhow::Result<Vec<CommandAck>> {
    let rig = RigId::new(args.rig.as_str())?;
    let options = mqtt_options(args, "dtop-cli")?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    eventloop.network_options.set_tcp_nodelay(true);
    // The twin's answer, then the edge's to the params it pushed.
    let edge_law = matches!(
        &command.kind,
        Some(Kind::SetControl(s)) if s.placement == Placement::Edge as i32 && s.law != Law::Off as i32
    ) || matches!(&command.kind, Some(Kind::RunCbc(r)) if !r.stop);
    let work = async {
        let mut acks = Vec::new();
        let mut published = false;
        loop {
            match eventloop.poll().await.context("MQTT connection")? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    // QoS 0: an answer is live (it follows the command), and on NATS a QoS 1
                    // subscription is a JetStream consumer the gateway may refuse while a
                    // node's leaders are re-elected.
                    client
                        .subscribe(topic::rig(&rig, RigTopic::CmdAck), QoS::AtMostOnce)
                        .await?;
                }
                Event::Incoming(Packet::SubAck(ack))
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    bail!(
                        "the broker refused the subscription to {}: this user's role may not \
                         read it, so no answer could be heard; the command was not sent",
                        topic::rig(&rig, RigTopic::CmdAck)
                    );
                }
                // Publish only once the subscription is in place, so no answer is missed.
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    published = true;
                    client
                        .publish(
                            topic::rig(&rig, RigTopic::Cmd),
                            QoS::AtLeastOnce,
                            false,
                            command.encode_to_vec(),
                        )
                        .await?;
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let Ok(ack) = CommandAck::decode(p.payload) else {
                        continue;
                    };
                    let ours = ack.command_id == command.id;
                    let controller = acks.len() == 1 && ack.command_id.starts_with("controller/");
                    if ours && acks.is_empty() {
                        let done = !(edge_law && succeeded(&ack));
                        acks.push(ack);
                        if done {
                            return anyhow::Ok(acks);
                        }
                    } else if controller {
                        acks.push(ack);
                        return Ok(acks);
                    }
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => {
            let _ = client.disconnect().await;
            result
        }
        Err(_) => bail!(
            "no acknowledgement for command {} within {timeout:?}: is the rig (and, for \
             set-control, the twin) running and subscribed?",
            command.id
        ),
    }
}

/// Whether `args` asks to follow a live CBC run after its acknowledgements.
pub fn waits_for_cbc(args: &CmdArgs) -> bool {
    matches!(args.kind, KindArgs::RunCbc { wait: true, .. })
}

/// Follows the live CBC run started by command `command_id` on its retained status topic,
/// printing each new point to stderr, until it ends; returns its last status.
///
/// # Errors
/// No connection, or the run did not end within `timeout`.
pub async fn wait_cbc(
    args: &CmdArgs,
    command_id: &str,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let rig = RigId::new(args.rig.as_str())?;
    let options = mqtt_options(args, "dtop-cli-cbc")?;
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let status_topic = topic::twin_cbc(&rig);
    let work = async {
        let mut shown = 0;
        loop {
            match eventloop.poll().await.context("MQTT connection")? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    // Retained and superseded at every point: QoS 0 (see above).
                    client.subscribe(&status_topic, QoS::AtMostOnce).await?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == status_topic => {
                    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    if status["command_id"] != command_id {
                        continue;
                    }
                    let points = status["points"].as_array().map_or(&[][..], Vec::as_slice);
                    for point in points.iter().skip(shown) {
                        eprintln!("point: {point}");
                    }
                    shown = shown.max(points.len());
                    if status["state"] != "running" {
                        return anyhow::Ok(status);
                    }
                }
                _ => {}
            }
        }
    };
    let result = tokio::time::timeout(timeout, work).await;
    let _ = client.disconnect().await;
    match result {
        Ok(status) => status,
        Err(_) => bail!(
            "live CBC run of command {command_id} did not end within {timeout:?}; it goes on \
             (stop it with: dtop cmd --rig {} stop-cbc)",
            args.rig
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CmdArgs,
    }

    fn parse(argv: &[&str]) -> CmdArgs {
        Wrapper::try_parse_from(std::iter::once("dtop-cmd").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn builds_an_edge_hosted_dvf_command_with_a_deadline() {
        let args = parse(&[
            "--rig",
            "lab-1",
            "--id",
            "c1",
            "--deadline-s",
            "2",
            "set-control",
            "--law",
            "dvf",
            "--gain-n-s-per-m",
            "8",
            "--placement",
            "edge",
        ]);
        let c = build(&args, 1_000).unwrap();
        assert_eq!((c.id.as_str(), c.deadline_ns), ("c1", 2_000_001_000));
        let Some(Kind::SetControl(s)) = c.kind else {
            panic!()
        };
        assert_eq!(
            (s.law(), s.gain_n_s_per_m, s.placement()),
            (Law::Dvf, 8.0, Placement::Edge)
        );
    }

    #[test]
    fn builds_a_live_cbc_run_and_its_stop() {
        let args = parse(&[
            "--rig",
            "lab-1",
            "run-cbc",
            "--frequency-start-hz",
            "6.8",
            "--frequency-end-hz",
            "7.4",
            "--frequency-steps",
            "3",
            "--target-amplitude-m",
            "2e-4",
            "--settle-s",
            "1.5",
            "--wait",
        ]);
        assert!(waits_for_cbc(&args));
        let Some(Kind::RunCbc(r)) = build(&args, 0).unwrap().kind else {
            panic!()
        };
        assert_eq!(
            (r.stop, r.frequency_end_hz, r.frequency_steps, r.settle_s),
            (false, 7.4, 3, Some(1.5))
        );
        let args = parse(&["--rig", "lab-1", "stop-cbc"]);
        let Some(Kind::RunCbc(r)) = build(&args, 0).unwrap().kind else {
            panic!()
        };
        assert!(r.stop && !waits_for_cbc(&args));
        let args = parse(&[
            "--rig",
            "lab-1",
            "run-cbc",
            "--frequency-start-hz",
            "7",
            "--frequency-end-hz",
            "6",
            "--target-amplitude-m",
            "0",
        ]);
        let problems = build(&args, 0).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let args = parse(&[
            "--rig",
            "bad rig!",
            "--timeout-s",
            "0",
            "set-control",
            "--law",
            "dvf",
        ]);
        let problems = build(&args, 0).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        let args = parse(&["--rig", "r", "set-drive", "--force-n", "-2.5"]);
        assert!(build(&args, 0).is_ok(), "negative forces are fine");
    }
}
