//! Owns the twin's Prometheus metrics: rendering [`TwinStats`] in the text exposition format
//! (pure, tested). Serving them on `GET /metrics` is `dtop_daemon::metrics`; how the counters
//! are kept is the service's, read through its stats snapshot.

use std::fmt::Write as _;
use std::sync::Arc;

use dtop_daemon::metrics::escape_label as escape;

use crate::service::TwinHandle;
use crate::stats::TwinStats;

/// One metric family being written: its samples share the `# HELP` and `# TYPE` lines.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                // Writing to a String cannot fail.
                let _ = write!(self.out, "{key}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

/// `stats` in the Prometheus text exposition format (version 0.0.4).
pub fn render(stats: &TwinStats) -> String {
    let mut out = String::with_capacity(8192);
    let flag = |b: bool| f64::from(u8::from(b));
    let store = &stats.store;
    for (name, kind, help, value) in [
        (
            "dtop_twin_mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            flag(stats.mqtt_connected),
        ),
        (
            "dtop_twin_mqtt_connection_errors_total",
            "counter",
            "Failed MQTT connection attempts and dropped connections.",
            stats.mqtt_connection_errors_total as f64,
        ),
        (
            "dtop_twin_storage_lines_written_total",
            "counter",
            "Lines storage acknowledged.",
            store.lines_written_total as f64,
        ),
        (
            "dtop_twin_storage_batches_written_total",
            "counter",
            "Batches storage acknowledged.",
            store.batches_written_total as f64,
        ),
        (
            "dtop_twin_storage_write_errors_total",
            "counter",
            "Failed storage writes (each retried or counted as rejected).",
            store.write_errors_total as f64,
        ),
        (
            "dtop_twin_storage_lines_rejected_total",
            "counter",
            "Lines storage refused as malformed; never stored.",
            store.lines_rejected_total as f64,
        ),
        (
            "dtop_twin_storage_lines_dropped_total",
            "counter",
            "Lines dropped before storage (queues or spool full); never stored.",
            store.lines_dropped_total as f64,
        ),
        (
            "dtop_twin_storage_lines_pending",
            "gauge",
            "Lines waiting for storage (batch, memory and disk spool).",
            store.lines_pending as f64,
        ),
        (
            "dtop_twin_storage_batches_spooled",
            "gauge",
            "Batches waiting in the disk spool.",
            store.batches_spooled as f64,
        ),
        (
            "dtop_twin_storage_spool_bytes",
            "gauge",
            "Bytes in the disk spool.",
            store.spool_bytes as f64,
        ),
        (
            "dtop_twin_storage_failing",
            "gauge",
            "1 while the last storage write failed.",
            flag(store.storage_failing),
        ),
    ] {
        family(&mut out, name, kind, help).sample(name, &[], value);
    }
    let name = "dtop_twin_frames_rejected_total";
    let mut f = family(&mut out, name, "counter", "Frames refused, by reason.");
    for (reason, n) in &stats.frames_rejected_total {
        f.sample(name, &[("reason", &reason.to_string())], *n as f64);
    }

    type RigValue = fn(&crate::stats::RigStats) -> f64;
    let per_rig: [(&str, &str, &str, RigValue); 14] = [
        (
            "dtop_twin_rig_online",
            "gauge",
            "1 while the rig is born and not dead.",
            |r| f64::from(u8::from(r.online)),
        ),
        (
            "dtop_twin_rig_samples_per_second",
            "gauge",
            "Live sample instants over the last second.",
            |r| r.samples_per_s,
        ),
        (
            "dtop_twin_rig_blocks_received_total",
            "counter",
            "Sample blocks received.",
            |r| r.blocks_received as f64,
        ),
        (
            "dtop_twin_rig_blocks_missing",
            "gauge",
            "Blocks missing between the seqs received.",
            |r| r.blocks_missing as f64,
        ),
        (
            "dtop_twin_rig_blocks_duplicate_total",
            "counter",
            "Blocks received more than once.",
            |r| r.blocks_duplicate as f64,
        ),
        (
            "dtop_twin_rig_blocks_waiting_for_birth",
            "gauge",
            "Sample blocks held until the birth of their session arrives.",
            |r| r.blocks_waiting_for_birth as f64,
        ),
        (
            "dtop_twin_rig_blocks_not_owned_total",
            "counter",
            "Sample blocks dropped because another twin (or nobody yet) owned the rig.",
            |r| r.blocks_not_owned as f64,
        ),
        (
            "dtop_twin_rig_takeover_gaps_skipped_total",
            "counter",
            "Seqs a run continued after a takeover skipped because they did not arrive in time.",
            |r| r.takeover_gaps_skipped as f64,
        ),
        (
            "dtop_twin_rig_owned",
            "gauge",
            "1 while this twin owns the rig (always without a lease coordinator).",
            |r| f64::from(u8::from(r.owned)),
        ),
        (
            "dtop_twin_rig_owner_epoch",
            "gauge",
            "The owner epoch this twin owns the rig at, or lost it at (0: no coordinator).",
            |r| r.owner_epoch as f64,
        ),
        (
            "dtop_twin_rig_estimating",
            "gauge",
            "1 while the rig's state is estimated.",
            |r| f64::from(u8::from(r.estimating)),
        ),
        (
            "dtop_twin_rig_states_dropped_total",
            "counter",
            "Estimated states the publisher had no room for.",
            |r| r.twin_states_dropped as f64,
        ),
        (
            "dtop_twin_rig_model_switches_total",
            "counter",
            "Catalogue model versions the rig's estimator switched to (crate::adopt).",
            |r| r.adoption.switches_total as f64,
        ),
        (
            "dtop_twin_rig_controllers_stopped_by_model_total",
            "counter",
            "Running controllers stopped because a new model version does not allow them.",
            |r| r.adoption.controllers_stopped_total as f64,
        ),
    ];
    for (name, kind, help, value) in per_rig {
        let mut f = family(&mut out, name, kind, help);
        for (rig, r) in &stats.rigs {
            f.sample(name, &[("rig", rig.as_str())], value(r));
        }
    }
    {
        let name = "dtop_twin_rig_tracking_windows_total";
        let mut f = family(
            &mut out,
            name,
            "counter",
            "Tracking windows by result: identified, failed (a history record with the reason), skipped (identification still busy).",
        );
        for (rig, r) in &stats.rigs {
            let Some(t) = &r.tracking else { continue };
            for (result, n) in [
                ("identified", t.windows_identified_total),
                ("failed", t.windows_failed_total),
                ("skipped", t.windows_skipped_total),
            ] {
                f.sample(name, &[("rig", rig.as_str()), ("result", result)], n as f64);
            }
        }
    }
    type TrackingValue = fn(&crate::tracking::TrackingCounters) -> f64;
    let per_rig_tracking: [(&str, &str, &str, TrackingValue); 3] = [
        (
            "dtop_twin_rig_tracking_window_restarts_total",
            "counter",
            "Gaps in the samples that restarted the tracking window.",
            |t| t.window_restarts_total as f64,
        ),
        (
            "dtop_twin_rig_drift_alarms_raised_total",
            "counter",
            "Drift alarms raised (a mode's frequency left its band).",
            |t| t.drift_alarms_raised_total as f64,
        ),
        (
            "dtop_twin_rig_drift_alarms_active",
            "gauge",
            "Modes whose drift alarm is raised now.",
            |t| t.drift_alarms_active as f64,
        ),
    ];
    for (name, kind, help, value) in per_rig_tracking {
        let mut f = family(&mut out, name, kind, help);
        for (rig, r) in &stats.rigs {
            if let Some(t) = &r.tracking {
                f.sample(name, &[("rig", rig.as_str())], value(t));
            }
        }
    }
    // Model adoption (crate::adopt): refusals before any rig, and by a rig.
    let name = "dtop_twin_model_messages_refused_total";
    let mut f = family(
        &mut out,
        name,
        "counter",
        "Catalogue model versions refused, never applied, by reason (rig \"\" before any rig).",
    );
    for (reason, n) in &stats.model_messages_refused_total {
        f.sample(name, &[("rig", ""), ("reason", reason.as_str())], *n as f64);
    }
    for (rig, r) in &stats.rigs {
        for (reason, n) in &r.adoption.refused {
            f.sample(
                name,
                &[("rig", rig.as_str()), ("reason", reason.as_str())],
                *n as f64,
            );
        }
    }
    type RigByReason = fn(&crate::stats::RigStats) -> &std::collections::BTreeMap<String, u64>;
    let per_rig_reason: [(&str, &str, RigByReason); 3] = [
        (
            "dtop_twin_rig_takeovers_total",
            "Takeovers of the rig by this twin, by outcome: continued (the previous owner's run restored from storage) or why a new run started instead.",
            |r| &r.takeovers,
        ),
        (
            "dtop_twin_rig_blocks_stored_apart_total",
            "Blocks stored apart (dtop_samples_overlap) because their times were already stored from another edge clock, by reason.",
            |r| &r.blocks_stored_apart,
        ),
        (
            "dtop_twin_rig_samples_stored_apart_total",
            "Sample instants of blocks stored apart, by reason.",
            |r| &r.samples_stored_apart,
        ),
    ];
    for (name, help, pick) in per_rig_reason {
        let mut f = family(&mut out, name, "counter", help);
        for (rig, r) in &stats.rigs {
            for (reason, n) in pick(r) {
                f.sample(
                    name,
                    &[("rig", rig.as_str()), ("reason", reason)],
                    *n as f64,
                );
            }
        }
    }

    {
        let name = "dtop_twin_rig_samples_unread_at_edge_total";
        let mut f = family(
            &mut out,
            name,
            "counter",
            "Samples the firmware produced that the edge declared no block carries, by reason.",
        );
        for (rig, r) in &stats.rigs {
            for (reason, n) in &r.samples_unread_at_edge {
                f.sample(
                    name,
                    &[("rig", rig.as_str()), ("reason", reason)],
                    *n as f64,
                );
            }
        }
    }

    type StoreValue = fn(&crate::stats::RigStoreStats) -> Option<f64>;
    let per_rig_store: [(&str, &str, &str, StoreValue); 7] = [
        (
            "dtop_twin_rig_blocks_stored_total",
            "counter",
            "Blocks storage acknowledged, replays included.",
            |r| Some(r.blocks_stored as f64),
        ),
        (
            "dtop_twin_rig_samples_stored_total",
            "counter",
            "Sample instants storage acknowledged.",
            |r| Some(r.samples_stored as f64),
        ),
        (
            "dtop_twin_rig_blocks_duplicate_stored_total",
            "counter",
            "Blocks storage acknowledged again (idempotent re-writes).",
            |r| Some(r.blocks_duplicate_stored as f64),
        ),
        (
            "dtop_twin_rig_blocks_fenced_total",
            "counter",
            "Blocks dropped before storage because this twin lost the rig first; its next owner stores them.",
            |r| Some(r.blocks_fenced as f64),
        ),
        (
            "dtop_twin_rig_seqs_skipped_at_edge_total",
            "counter",
            "Seqs a restarted edge declared skipped (reserved, never carried data).",
            |r| Some(r.seqs_skipped_at_edge as f64),
        ),
        (
            "dtop_twin_rig_backlog_seconds",
            "gauge",
            "Rig time waiting for storage.",
            |r| Some(r.backlog_s),
        ),
        (
            "dtop_twin_rig_persisted_seq",
            "gauge",
            "The persisted watermark: every seq up to it is stored or declared lost.",
            |r| r.persisted_seq.map(|s| s as f64),
        ),
    ];
    for (name, kind, help, value) in per_rig_store {
        let mut f = family(&mut out, name, kind, help);
        for (rig, r) in &store.rigs {
            if let Some(v) = value(r) {
                f.sample(name, &[("rig", rig.as_str())], v);
            }
        }
    }
    for (name, help, pick) in [
        (
            "dtop_twin_rig_samples_dropped_total",
            "Sample instants this twin will never store, by reason.",
            (|r| &r.samples_dropped)
                as fn(&crate::stats::RigStoreStats) -> &std::collections::BTreeMap<String, u64>,
        ),
        (
            "dtop_twin_rig_samples_lost_at_edge_total",
            "Sample instants the edge declared lost for good, by reason.",
            |r| &r.samples_lost_at_edge,
        ),
        (
            "dtop_twin_rig_blocks_lost_at_edge_total",
            "Blocks the edge declared lost for good, by reason.",
            |r| &r.blocks_lost_at_edge,
        ),
    ] {
        let mut f = family(&mut out, name, "counter", help);
        for (rig, r) in &store.rigs {
            for (reason, n) in pick(r) {
                f.sample(
                    name,
                    &[("rig", rig.as_str()), ("reason", reason)],
                    *n as f64,
                );
            }
        }
    }
    if !store.nodes.is_empty() {
        render_nodes(&mut out, store);
    }
    out
}

/// With `[[storage.nodes]]`: each node's writes, spool and per-rig loss accounting, with a
/// `node` label (the unlabelled families above combine the nodes).
fn render_nodes(out: &mut String, store: &crate::stats::StoreStats) {
    type NodeValue = fn(&crate::stats::StoreStats) -> f64;
    let per_node: [(&str, &str, &str, NodeValue); 7] = [
        (
            "dtop_twin_node_storage_failing",
            "gauge",
            "1 while the node's last storage write failed.",
            |s| f64::from(u8::from(s.storage_failing)),
        ),
        (
            "dtop_twin_node_lines_written_total",
            "counter",
            "Lines the node acknowledged.",
            |s| s.lines_written_total as f64,
        ),
        (
            "dtop_twin_node_write_errors_total",
            "counter",
            "Failed writes to the node (each retried or counted as rejected).",
            |s| s.write_errors_total as f64,
        ),
        (
            "dtop_twin_node_lines_dropped_total",
            "counter",
            "Lines given up before the node stored them; never stored there.",
            |s| s.lines_dropped_total as f64,
        ),
        (
            "dtop_twin_node_lines_pending",
            "gauge",
            "Lines waiting for the node (batch, memory and its disk spool).",
            |s| s.lines_pending as f64,
        ),
        (
            "dtop_twin_node_batches_spooled",
            "gauge",
            "Batches waiting in the node's disk spool.",
            |s| s.batches_spooled as f64,
        ),
        (
            "dtop_twin_node_spool_bytes",
            "gauge",
            "Bytes in the node's disk spool.",
            |s| s.spool_bytes as f64,
        ),
    ];
    for (name, kind, help, value) in per_node {
        let mut f = family(out, name, kind, help);
        for (node, s) in &store.nodes {
            f.sample(name, &[("node", node)], value(s));
        }
    }
    type StoreValue = fn(&crate::stats::RigStoreStats) -> Option<f64>;
    let per_node_rig: [(&str, &str, &str, StoreValue); 4] = [
        (
            "dtop_twin_node_rig_blocks_stored_total",
            "counter",
            "Blocks the node acknowledged, replays included.",
            |r| Some(r.blocks_stored as f64),
        ),
        (
            "dtop_twin_node_rig_samples_stored_total",
            "counter",
            "Sample instants the node acknowledged.",
            |r| Some(r.samples_stored as f64),
        ),
        (
            "dtop_twin_node_rig_backlog_seconds",
            "gauge",
            "Rig time waiting for the node.",
            |r| Some(r.backlog_s),
        ),
        (
            "dtop_twin_node_rig_persisted_seq",
            "gauge",
            "The node's watermark: every seq up to it is stored on the node or declared lost (the published one is the lowest over the nodes).",
            |r| r.persisted_seq.map(|s| s as f64),
        ),
    ];
    for (name, kind, help, value) in per_node_rig {
        let mut f = family(out, name, kind, help);
        for (node, s) in &store.nodes {
            for (rig, r) in &s.rigs {
                if let Some(v) = value(r) {
                    f.sample(name, &[("node", node), ("rig", rig.as_str())], v);
                }
            }
        }
    }
    type ByReason = fn(&crate::stats::RigStoreStats) -> &std::collections::BTreeMap<String, u64>;
    let per_node_reason: [(&str, &str, ByReason); 2] = [
        (
            "dtop_twin_node_rig_blocks_dropped_total",
            "Blocks the twin will never store on the node, by reason.",
            |r| &r.blocks_dropped,
        ),
        (
            "dtop_twin_node_rig_samples_dropped_total",
            "Sample instants the twin will never store on the node, by reason.",
            |r| &r.samples_dropped,
        ),
    ];
    for (name, help, pick) in per_node_reason {
        let mut f = family(out, name, "counter", help);
        for (node, s) in &store.nodes {
            for (rig, r) in &s.rigs {
                for (reason, n) in pick(r) {
                    f.sample(
                        name,
                        &[("node", node), ("rig", rig.as_str()), ("reason", reason)],
                        *n as f64,
                    );
                }
            }
        }
    }
}

/// What `dtop_daemon::metrics::serve` renders for the twin: a fresh snapshot per scrape.
pub fn renderer(twin: TwinHandle) -> dtop_daemon::metrics::Render {
    Arc::new(move || render(&twin.stats()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::stats::{RigStats, RigStoreStats};
    use dtop_proto::RigId;

    #[test]
    fn renders_per_rig_storage_and_loss_accounting_by_reason() {
        let rig = RigId::new("so-3s").unwrap();
        let mut stats = TwinStats {
            mqtt_connected: true,
            ..TwinStats::default()
        };
        let mut rig_stats = RigStats {
            online: true,
            blocks_received: 12,
            owned: true,
            owner_epoch: 4,
            blocks_not_owned: 7,
            samples_unread_at_edge: [("edge_down".to_owned(), 300)].into(),
            tracking: Some(crate::tracking::TrackingCounters {
                windows_identified_total: 5,
                windows_failed_total: 1,
                drift_alarms_raised_total: 2,
                drift_alarms_active: 1,
                ..Default::default()
            }),
            ..RigStats::default()
        };
        rig_stats
            .samples_stored_apart
            .insert("other_session".into(), 300);
        stats.rigs.insert(rig.clone(), rig_stats);
        let mut store = RigStoreStats {
            blocks_stored: 10,
            samples_stored: 1000,
            backlog_s: 0.5,
            persisted_seq: Some(11),
            ..RigStoreStats::default()
        };
        store.samples_dropped.insert("rejected".into(), 100);
        store.samples_lost_at_edge.insert("spool_full".into(), 200);
        store.blocks_lost_at_edge.insert("spool_full".into(), 2);
        stats.store.rigs.insert(rig, store);
        let text = render(&stats);
        for line in [
            "dtop_twin_mqtt_connected 1",
            "dtop_twin_rig_online{rig=\"so-3s\"} 1",
            "dtop_twin_rig_blocks_received_total{rig=\"so-3s\"} 12",
            "dtop_twin_rig_blocks_not_owned_total{rig=\"so-3s\"} 7",
            "dtop_twin_rig_owned{rig=\"so-3s\"} 1",
            "dtop_twin_rig_owner_epoch{rig=\"so-3s\"} 4",
            "dtop_twin_rig_samples_unread_at_edge_total{rig=\"so-3s\",reason=\"edge_down\"} 300",
            "dtop_twin_rig_samples_stored_total{rig=\"so-3s\"} 1000",
            "dtop_twin_rig_backlog_seconds{rig=\"so-3s\"} 0.5",
            "dtop_twin_rig_persisted_seq{rig=\"so-3s\"} 11",
            "dtop_twin_rig_samples_dropped_total{rig=\"so-3s\",reason=\"rejected\"} 100",
            "dtop_twin_rig_samples_lost_at_edge_total{rig=\"so-3s\",reason=\"spool_full\"} 200",
            "dtop_twin_rig_blocks_lost_at_edge_total{rig=\"so-3s\",reason=\"spool_full\"} 2",
            "dtop_twin_rig_samples_stored_apart_total{rig=\"so-3s\",reason=\"other_session\"} 300",
            "dtop_twin_rig_tracking_windows_total{rig=\"so-3s\",result=\"identified\"} 5",
            "dtop_twin_rig_tracking_windows_total{rig=\"so-3s\",result=\"failed\"} 1",
            "dtop_twin_rig_drift_alarms_raised_total{rig=\"so-3s\"} 2",
            "dtop_twin_rig_drift_alarms_active{rig=\"so-3s\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        // Every family is declared once, before its samples.
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut unique = declared.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), declared.len());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(&name), "{name} has no # TYPE");
        }
    }
}
