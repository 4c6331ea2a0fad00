//! Owns the operator's side of closed-loop runs: sending a `SetControl` command over MQTT and
//! waiting for the acknowledgements (the twin's, and the edge's `controller/{version}` for an
//! edge-hosted law), and reading the rig simulator's control-loop latency log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::set_control::{Law, Placement};
use dtop_proto::v1::{Command, CommandAck, SetControl};
use dtop_proto::{Message, RigId};

/// Waits until `rig`'s twin estimates its state (it refuses control, and live CBC, before):
/// sends a law that changes nothing, `SetControl` off, until the twin applies it.
pub fn wait_until_estimating(port: u16, rig: &str, within: Duration) -> Result<()> {
    set_control(port, rig, Law::Off, 0.0, Placement::Twin, within).map(|_| ())
}

/// Sends `SetControl { law, gain, placement }` to `rig` until the twin applies it (it refuses
/// while its estimator is not yet running), then, for an edge-hosted law, waits for the edge's
/// acknowledgement. Returns the acks seen, twin's first.
pub fn set_control(
    port: u16,
    rig: &str,
    law: Law,
    gain_n_s_per_m: f64,
    placement: Placement,
    within: Duration,
) -> Result<Vec<CommandAck>> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let rig_id = RigId::new(rig)?;
    // A client id of its own per call: a broker may still be closing the previous call's
    // session under the same id (NATS closes the newcomer then).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut opts = MqttOptions::new(
        format!("e2e-operator-{}-{call}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(opts, 16);
    // QoS 0: on NATS a QoS 1 subscription is a JetStream consumer, which a loaded cluster may
    // refuse (0x80) past its `js_api_timeout`; an ack lost at QoS 0 is a command sent again
    // ([`ACK_LOST_AFTER`]).
    client.subscribe(topic::rig(&rig_id, RigTopic::CmdAck), QoS::AtMostOnce)?;
    let deadline = Instant::now() + within;
    let mut attempt = 0;
    let mut acks = Vec::new();
    let mut waiting_for: Option<String> = None;
    let mut send_at = Instant::now();
    let mut sent_at = Instant::now();
    while Instant::now() < deadline {
        // An ack lost at QoS 0: the command goes again under a new id.
        if waiting_for.as_deref().is_some_and(|w| w != "controller/")
            && sent_at.elapsed() > ACK_LOST_AFTER
        {
            waiting_for = None;
        }
        if waiting_for.is_none() && Instant::now() >= send_at {
            sent_at = Instant::now();
            attempt += 1;
            let command = Command {
                id: format!("bench-{}-{attempt}", std::process::id()),
                deadline_ns: 0,
                target_rig: rig.to_owned(),
                issued_by: "dtop-e2e".to_owned(),
                kind: Some(Kind::SetControl(SetControl {
                    law: law as i32,
                    gain_n_s_per_m,
                    placement: placement as i32,
                })),
            };
            waiting_for = Some(command.id.clone());
            client.publish(
                topic::rig(&rig_id, RigTopic::Cmd),
                QoS::AtLeastOnce,
                false,
                command.encode_to_vec(),
            )?;
        }
        let event = match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => event.context("MQTT connection")?,
            Err(_) => continue,
        };
        let Event::Incoming(Packet::Publish(p)) = event else {
            continue;
        };
        let ack = CommandAck::decode(p.payload)?;
        match &waiting_for {
            Some(id) if ack.command_id == *id => {
                if ack.status() == Status::Applied {
                    acks.push(ack);
                    if placement == Placement::Twin || law == Law::Off {
                        return Ok(acks);
                    }
                    waiting_for = Some(String::from("controller/"));
                } else {
                    // The twin refuses until its estimator runs; try again shortly.
                    waiting_for = None;
                    send_at = Instant::now() + Duration::from_millis(500);
                }
            }
            Some(prefix) if prefix == "controller/" && ack.command_id.starts_with(prefix) => {
                if ack.status() != Status::Applied {
                    bail!("the edge refused the controller: {}", ack.reason);
                }
                acks.push(ack);
                return Ok(acks);
            }
            _ => {}
        }
    }
    bail!("no applied acknowledgement within {within:?} (acks so far: {acks:?})")
}

/// How long [`set_control`] waits for a command's ack before it counts it lost and sends the
/// command again.
const ACK_LOST_AFTER: Duration = Duration::from_secs(5);

/// One line of the rig simulator's `--latency-log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSample {
    pub origin_sample_index: u64,
    pub applied_at_sample_index: u64,
    pub latency_ns: u64,
}

/// Reads a `--latency-log` CSV.
pub fn read_latency_log(path: &Path) -> Result<Vec<LoopSample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split(',').map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(o)), Some(Ok(a)), Some(Ok(l))) => out.push(LoopSample {
                origin_sample_index: o,
                applied_at_sample_index: a,
                latency_ns: l,
            }),
            _ => bail!("bad latency log line {line:?}"),
        }
    }
    Ok(out)
}

/// Percentiles and counts of a latency log between `first` and `last` origin sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopSummary {
    pub drives: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Drives applied after the next sample had already been taken.
    pub late: usize,
    /// Samples in the window that no applied drive came from.
    pub lost: u64,
}

/// Summarizes `samples` (drives in the order applied).
pub fn summarize(samples: &[LoopSample]) -> Option<LoopSummary> {
    let first = samples.first()?.origin_sample_index;
    let last = samples.last()?.origin_sample_index;
    let mut latencies: Vec<u64> = samples.iter().map(|s| s.latency_ns).collect();
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)] as f64 / 1e3
    };
    Some(LoopSummary {
        drives: samples.len(),
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        p999_us: pick(0.999),
        max_us: pick(1.0),
        late: samples
            .iter()
            .filter(|s| s.applied_at_sample_index > s.origin_sample_index + 1)
            .count(),
        lost: (last - first + 1).saturating_sub(samples.len() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_late_and_lost_drives() {
        let s = |o, a, l| LoopSample {
            origin_sample_index: o,
            applied_at_sample_index: a,
            latency_ns: l,
        };
        let log = [s(10, 11, 100_000), s(11, 13, 1_500_000), s(13, 14, 200_000)];
        let summary = summarize(&log).unwrap();
        assert_eq!((summary.drives, summary.late, summary.lost), (3, 1, 1));
        assert_eq!(summary.p50_us, 200.0);
        assert_eq!(summary.max_us, 1500.0);
    }
}
