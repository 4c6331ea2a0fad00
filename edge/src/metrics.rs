//! Owns the edge's Prometheus metrics: rendering [`EdgeStats`] in the text exposition format
//! (pure, tested). Serving them on `GET /metrics` is `dtop_daemon::metrics`; how the counters
//! are kept is the stats watch's.

use std::fmt::Write as _;

use dtop_daemon::metrics::escape_label as escape;

use crate::fence::Fenced;
use crate::safety::SafetyState;
use crate::stats::EdgeStats;

/// Every safety state, for the one-hot `dtop_edge_safety_state` gauge.
const SAFETY_STATES: [SafetyState; 5] = [
    SafetyState::Idle,
    SafetyState::Driving,
    SafetyState::SafeTimeout,
    SafetyState::Latched,
    SafetyState::Disabled,
];

/// `stats` of rig `rig` in the Prometheus text exposition format (version 0.0.4).
pub fn render(rig: &str, stats: &EdgeStats) -> String {
    let mut out = String::with_capacity(4096);
    let rig = escape(rig);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{rig=\"{rig}\"{labels}}} {value}");
        }
    };
    let flag = |b: bool| f64::from(u8::from(b));
    let s = stats;
    // One sample each: name, type, help, value.
    let single = [
        (
            "dtop_edge_samples_in_total",
            "counter",
            "Samples read from the firmware.",
            s.samples_in_total as f64,
        ),
        (
            "dtop_edge_blocks_published_total",
            "counter",
            "Sample blocks the broker acknowledged.",
            s.blocks_published_total as f64,
        ),
        (
            "dtop_edge_samples_dropped_total",
            "counter",
            "Samples dropped before publication (queue full, oversized).",
            s.samples_dropped_total as f64,
        ),
        (
            "dtop_edge_queued_blocks",
            "gauge",
            "Blocks waiting for the broker.",
            s.queued_blocks as f64,
        ),
        (
            "dtop_edge_mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            flag(s.mqtt_connected),
        ),
        (
            "dtop_edge_mqtt_session",
            "gauge",
            "MQTT session number; each increase is a (re)connect.",
            s.session as f64,
        ),
        (
            "dtop_edge_firmware_online",
            "gauge",
            "1 while the firmware streams samples.",
            flag(s.firmware_online),
        ),
        (
            "dtop_edge_serial_bad_frames_total",
            "counter",
            "Firmware frames dropped for a bad CRC, version or payload.",
            s.bad_frames_total as f64,
        ),
    ];
    for (name, kind, help, value) in single {
        metric(name, kind, help, &[(String::new(), value)]);
    }
    // Loss accounting and the spool (issue 6): one sample each.
    let spool = [
        (
            "dtop_edge_samples_produced_total",
            "counter",
            "Samples in blocks handed to the publisher (and its spool) by this process (since dtop_edge_process_start_time_seconds).",
            s.samples_produced_total as f64,
        ),
        (
            "dtop_edge_samples_stored_total",
            "counter",
            "Samples in blocks the twin's persisted watermark covered (stored in InfluxDB), seen by this process.",
            s.samples_stored_total as f64,
        ),
        (
            "dtop_edge_samples_released_unconfirmed_total",
            "counter",
            "Samples released from the spool on the broker's PUBACK alone: the twin's watermark waits for a seq this edge lost.",
            s.samples_released_unconfirmed_total as f64,
        ),
        (
            "dtop_edge_persisted_seq",
            "gauge",
            "The twin's persisted watermark for this rig (-1 before any).",
            s.persisted_seq.map_or(-1.0, |w| w as f64),
        ),
        (
            "dtop_edge_backlog_seconds",
            "gauge",
            "Rig time in the spool not yet covered by the twin's watermark, s.",
            s.backlog_s,
        ),
        (
            "dtop_edge_backlog_blocks",
            "gauge",
            "Blocks in the spool not yet covered by the twin's watermark.",
            s.backlog_blocks as f64,
        ),
        (
            "dtop_edge_backlog_bytes",
            "gauge",
            "Spool bytes of those blocks.",
            s.backlog_bytes as f64,
        ),
        (
            "dtop_edge_blocks_replayed_total",
            "counter",
            "Backfill blocks replayed from the spool.",
            s.blocks_replayed_total as f64,
        ),
        (
            "dtop_edge_lost_ranges_uncovered",
            "gauge",
            "Lost seq ranges declared to the twin that its watermark has not passed yet.",
            s.lost_ranges_uncovered as f64,
        ),
        (
            "dtop_edge_loss_declarations_total",
            "counter",
            "SeqLoss declarations published (repeats included).",
            s.loss_declarations_total as f64,
        ),
        (
            "dtop_edge_seqs_skipped_total",
            "counter",
            "Seqs declared skipped at start: the previous run's unused reservation (or blocks numbered but never spooled before a crash).",
            s.seqs_skipped_total as f64,
        ),
        (
            "dtop_edge_next_seq",
            "gauge",
            "The next block seq the edge will number: every seq it used is below it.",
            s.next_seq as f64,
        ),
        (
            "dtop_edge_process_start_time_seconds",
            "gauge",
            "When this edge process started, s since the Unix epoch: every counter here counts from it.",
            s.started_at_ns as f64 / 1e9,
        ),
    ];
    for (name, kind, help, value) in spool {
        metric(name, kind, help, &[(String::new(), value)]);
    }
    let by_reason = |m: &std::collections::BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(reason, n)| (format!(",reason=\"{reason}\""), *n as f64))
            .collect::<Vec<_>>()
    };
    metric(
        "dtop_edge_samples_lost_total",
        "counter",
        "Samples given up, by reason (evicted_unconfirmed: evicted after the broker's PUBACK, before the watermark).",
        &by_reason(&s.samples_dropped_by_reason),
    );
    metric(
        "dtop_edge_samples_unread_total",
        "counter",
        "Samples the firmware produced that no block carries, declared on the next block, by reason (edge_down, not_delivered, firmware_restart).",
        &by_reason(&s.samples_unread_by_reason),
    );
    metric(
        "dtop_edge_blocks_lost_total",
        "counter",
        "Blocks given up for sure, by reason.",
        &by_reason(&s.blocks_dropped_by_reason),
    );
    metric(
        "dtop_edge_safety_state",
        "gauge",
        "The actuator safety envelope's state (one-hot).",
        &SAFETY_STATES
            .iter()
            .map(|st| {
                (
                    format!(",state=\"{}\"", st.as_str()),
                    f64::from(u8::from(*st == s.safety_state)),
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "dtop_edge_safety_latched",
        "gauge",
        "1 while the safety envelope is latched, by cause (safety_stop, clock_lost, actuator_link_lost); only a SafetyReset releases it.",
        &s.latch_cause
            .map(|c| vec![(format!(",cause=\"{}\"", c.as_str()), 1.0)])
            .unwrap_or_default(),
    );
    metric(
        "dtop_edge_fault_latches_total",
        "counter",
        "Latches by a fault (sample clock or actuator link lost while driving).",
        &[(String::new(), s.fault_latches_total as f64)],
    );
    metric(
        "dtop_edge_actuator_force_newtons",
        "gauge",
        "Force of the last actuator command (a Modbus actuator: of the last write it acknowledged), N; NaN while a Modbus actuator's writes fail.",
        &[(
            String::new(),
            if s.actuator_write_failing {
                f64::NAN
            } else {
                s.last_applied_force_n
            },
        )],
    );
    metric(
        "dtop_edge_actuator_enabled",
        "gauge",
        "1 while the actuator is enabled (a Modbus actuator: as its last acknowledged write says); NaN while a Modbus actuator's writes fail.",
        &[(
            String::new(),
            if s.actuator_write_failing {
                f64::NAN
            } else {
                flag(s.actuator_enabled)
            },
        )],
    );
    metric(
        "dtop_edge_owner_epoch",
        "gauge",
        "The highest owner epoch seen for this rig (0: no lease coordinator yet).",
        &[(String::new(), s.owner_epoch as f64)],
    );
    // Every kind always, so a rate over it exists before the first fenced message.
    metric(
        "dtop_edge_fenced_total",
        "counter",
        "Twin messages refused for an older owner epoch (or none after a coordinator's), by kind.",
        &[Fenced::Params, Fenced::Drive, Fenced::Watermark].map(|kind| {
            let n = s.fenced_by_kind.get(kind.as_str()).copied().unwrap_or(0);
            (format!(",kind=\"{}\"", kind.as_str()), n as f64)
        }),
    );
    metric(
        "dtop_edge_drives_total",
        "counter",
        "Actuator drives by outcome.",
        &[
            (",outcome=\"applied\"".into(), s.drives_applied_total as f64),
            (",outcome=\"refused\"".into(), s.drives_refused_total as f64),
            (",outcome=\"bad\"".into(), s.drives_bad_total as f64),
            (",outcome=\"dropped\"".into(), s.drives_dropped_total as f64),
            (",outcome=\"ignored\"".into(), s.drives_ignored_total as f64),
        ],
    );
    metric(
        "dtop_edge_drive_timeouts_total",
        "counter",
        "Times drives stopped arriving and the actuator went to its safe state.",
        &[(String::new(), s.drive_timeouts_total as f64)],
    );
    metric(
        "dtop_edge_commands_total",
        "counter",
        "Operator commands by outcome.",
        &[
            (
                ",outcome=\"applied\"".into(),
                s.commands_applied_total as f64,
            ),
            (
                ",outcome=\"refused\"".into(),
                s.commands_refused_total as f64,
            ),
            (
                ",outcome=\"expired\"".into(),
                s.commands_expired_total as f64,
            ),
        ],
    );
    metric(
        "dtop_edge_inner_loop_running",
        "gauge",
        "1 while the edge-hosted control loop runs.",
        &[(String::new(), flag(s.inner_loop_running))],
    );
    metric(
        "dtop_edge_inner_loop_version",
        "gauge",
        "Version of the controller params last applied.",
        &[(String::new(), s.inner_loop_version as f64)],
    );
    let per_device = |f: &dyn Fn(&crate::modbus::ModbusDeviceStats) -> u64| {
        s.modbus
            .iter()
            .map(|(device, d)| (format!(",device=\"{}\"", escape(device)), f(d) as f64))
            .collect::<Vec<_>>()
    };
    metric(
        "dtop_edge_modbus_requests_total",
        "counter",
        "Modbus requests sent, by device.",
        &per_device(&|d| d.requests_total),
    );
    metric(
        "dtop_edge_modbus_errors_total",
        "counter",
        "Modbus requests that failed, by device and kind.",
        &s.modbus
            .iter()
            .flat_map(|(device, d)| {
                let device = escape(device);
                [
                    ("timeout", d.timeouts_total),
                    ("exception", d.exceptions_total),
                    ("transport", d.transport_errors_total),
                ]
                .map(|(kind, n)| (format!(",device=\"{device}\",kind=\"{kind}\""), n as f64))
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "dtop_edge_modbus_samples_total",
        "counter",
        "Polled samples, by device.",
        &per_device(&|d| d.samples_total),
    );
    metric(
        "dtop_edge_modbus_samples_missed_total",
        "counter",
        "Poll periods without a sample (timeout, transport error, overrun, full queue), by device.",
        &per_device(&|d| d.samples_missed_total),
    );
    metric(
        "dtop_edge_modbus_connects_total",
        "counter",
        "Successful (re)connects of the device's bus, by device.",
        &per_device(&|d| d.connects_total),
    );
    let per_channel = |f: &dyn Fn(
        &crate::modbus::ModbusDeviceStats,
    ) -> &std::collections::BTreeMap<String, u64>| {
        s.modbus
            .iter()
            .flat_map(|(device, d)| {
                let device = escape(device);
                f(d).iter().map(move |(channel, n)| {
                    (
                        format!(",device=\"{device}\",channel=\"{}\"", escape(channel)),
                        *n as f64,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    metric(
        "dtop_edge_modbus_register_exceptions_total",
        "counter",
        "Reads the device refused, by channel; each one published that channel's value as missing.",
        &per_channel(&|d| &d.exceptions_by_channel),
    );
    metric(
        "dtop_edge_modbus_out_of_range_total",
        "counter",
        "Values outside a SampleBlock's i32 at the channel's scale, by channel; each one published as missing.",
        &per_channel(&|d| &d.out_of_range_by_channel),
    );
    metric(
        "dtop_edge_modbus_actuator_writes_total",
        "counter",
        "Modbus actuator setpoints by outcome (acknowledged, failed), by device.",
        &s.modbus
            .iter()
            .flat_map(|(device, d)| {
                let device = escape(device);
                [
                    ("acknowledged", d.actuator_writes_total),
                    ("failed", d.actuator_write_failures_total),
                ]
                .map(|(outcome, n)| {
                    (
                        format!(",device=\"{device}\",outcome=\"{outcome}\""),
                        n as f64,
                    )
                })
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "dtop_edge_modbus_actuator_link_losses_total",
        "counter",
        "Times the Modbus actuator acknowledged nothing for longer than the drive timeout while driving (each latched the envelope), by device.",
        &per_device(&|d| d.actuator_link_losses_total),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_the_one_hot_safety_state() {
        let stats = EdgeStats {
            samples_in_total: 1234,
            safety_state: SafetyState::Latched,
            commands_refused_total: 2,
            ..EdgeStats::default()
        };
        let text = render("lab\"1", &stats);
        assert!(
            text.contains("dtop_edge_samples_in_total{rig=\"lab\\\"1\"} 1234\n"),
            "{text}"
        );
        assert!(text.contains("dtop_edge_safety_state{rig=\"lab\\\"1\",state=\"latched\"} 1\n"));
        assert!(text.contains("dtop_edge_safety_state{rig=\"lab\\\"1\",state=\"idle\"} 0\n"));
        assert!(
            text.contains("dtop_edge_commands_total{rig=\"lab\\\"1\",outcome=\"refused\"} 2\n")
        );
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap_or("");
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn renders_modbus_counters_per_channel_and_an_unknown_actuator_state_as_nan() {
        let mut device = crate::modbus::ModbusDeviceStats {
            samples_missed_total: 3,
            connects_total: 2,
            actuator_writes_total: 5,
            actuator_write_failures_total: 4,
            actuator_link_losses_total: 1,
            ..Default::default()
        };
        device.exceptions_by_channel.insert("refused".into(), 7);
        device.out_of_range_by_channel.insert("big".into(), 9);
        let mut stats = EdgeStats {
            safety_state: SafetyState::Latched,
            latch_cause: Some(crate::safety::LatchCause::ActuatorLinkLost),
            actuator_write_failing: true,
            last_applied_force_n: 3.5,
            ..EdgeStats::default()
        };
        stats.modbus.insert("py".into(), device);
        let text = render("r", &stats);
        for want in [
            "dtop_edge_modbus_register_exceptions_total{rig=\"r\",device=\"py\",channel=\"refused\"} 7\n",
            "dtop_edge_modbus_out_of_range_total{rig=\"r\",device=\"py\",channel=\"big\"} 9\n",
            "dtop_edge_modbus_samples_missed_total{rig=\"r\",device=\"py\"} 3\n",
            "dtop_edge_modbus_connects_total{rig=\"r\",device=\"py\"} 2\n",
            "dtop_edge_modbus_actuator_writes_total{rig=\"r\",device=\"py\",outcome=\"acknowledged\"} 5\n",
            "dtop_edge_modbus_actuator_writes_total{rig=\"r\",device=\"py\",outcome=\"failed\"} 4\n",
            "dtop_edge_modbus_actuator_link_losses_total{rig=\"r\",device=\"py\"} 1\n",
            "dtop_edge_safety_latched{rig=\"r\",cause=\"actuator_link_lost\"} 1\n",
            "dtop_edge_actuator_force_newtons{rig=\"r\"} NaN\n",
            "dtop_edge_actuator_enabled{rig=\"r\"} NaN\n",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    #[test]
    fn renders_losses_by_reason_and_the_backlog() {
        let mut stats = EdgeStats {
            samples_produced_total: 1000,
            samples_stored_total: 700,
            backlog_s: 0.2,
            persisted_seq: Some(6),
            lost_ranges_uncovered: 2,
            ..EdgeStats::default()
        };
        stats.samples_dropped_by_reason.insert("paused", 100);
        stats.blocks_dropped_by_reason.insert("paused", 1);
        let text = render("r", &stats);
        for line in [
            "dtop_edge_samples_produced_total{rig=\"r\"} 1000\n",
            "dtop_edge_samples_stored_total{rig=\"r\"} 700\n",
            "dtop_edge_samples_lost_total{rig=\"r\",reason=\"paused\"} 100\n",
            "dtop_edge_blocks_lost_total{rig=\"r\",reason=\"paused\"} 1\n",
            "dtop_edge_backlog_seconds{rig=\"r\"} 0.2\n",
            "dtop_edge_persisted_seq{rig=\"r\"} 6\n",
            "dtop_edge_lost_ranges_uncovered{rig=\"r\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn renders_the_owner_epoch_and_fenced_messages_of_every_kind() {
        let mut stats = EdgeStats {
            owner_epoch: 7,
            ..EdgeStats::default()
        };
        stats.fenced_by_kind.insert("watermark", 3);
        let text = render("r", &stats);
        for line in [
            "dtop_edge_owner_epoch{rig=\"r\"} 7\n",
            "dtop_edge_fenced_total{rig=\"r\",kind=\"watermark\"} 3\n",
            "dtop_edge_fenced_total{rig=\"r\",kind=\"params\"} 0\n",
            "dtop_edge_fenced_total{rig=\"r\",kind=\"drive\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
