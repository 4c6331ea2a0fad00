//! Renders the live status of a `dtop up` run from twin and edge stats. Pure: no I/O.

use std::fmt::Write as _;

use dtop_edge::EdgeStats;
use dtop_twin::TwinStats;

/// One status block: a line per rig the twin knows, plus the edge and storage counters.
pub fn render(elapsed_s: f64, twin: &TwinStats, edge: &EdgeStats) -> String {
    let mut out = String::new();
    if twin.rigs.is_empty() {
        let _ = writeln!(
            out,
            "[{elapsed_s:7.1} s] waiting for a rig (edge: firmware {}, mqtt {})",
            on(edge.firmware_online),
            on(edge.mqtt_connected)
        );
    }
    for (rig, r) in &twin.rigs {
        let rms: Vec<String> = r
            .floor_accel_rms_m_s2
            .iter()
            .map(|(floor, v)| format!("{floor}: {v:.3}"))
            .collect();
        let rms = if rms.is_empty() {
            "-".to_owned()
        } else {
            rms.join("  ")
        };
        let _ = writeln!(
            out,
            "[{elapsed_s:7.1} s] rig {rig}  {rate:7.1} samples/s  RMS accel by floor (m/s²) {rms}  | blocks stored {stored}, missing {missing}, declared lost {declared}, duplicate {dup} | lines stored {lines}",
            rate = r.samples_per_s,
            stored = r.blocks_stored,
            missing = r.blocks_missing,
            declared = r.blocks_declared_lost,
            dup = r.blocks_duplicate,
            lines = r.lines_written,
        );
        if let Some(st) = twin.store.rigs.get(rig) {
            let by_reason = |m: &std::collections::BTreeMap<String, u64>| -> String {
                let total: u64 = m.values().sum();
                if total == 0 {
                    return "0".to_owned();
                }
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("{total} ({})", parts.join(", "))
            };
            let _ = writeln!(
                out,
                "          storage {rig}: {stored} samples stored, persisted to seq {persisted}, backlog {backlog:.1} s | samples dropped by the twin {dropped} | declared lost by the edge {lost}, seqs skipped {skipped}",
                stored = st.samples_stored,
                persisted = st
                    .persisted_seq
                    .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                backlog = st.backlog_s,
                dropped = by_reason(&st.samples_dropped),
                lost = by_reason(&st.samples_lost_at_edge),
                skipped = st.seqs_skipped_at_edge,
            );
        }
    }
    let _ = writeln!(
        out,
        "          edge: samples produced {}, stored per the twin's watermark {}, dropped {}, spool backlog {:.1} s | blocks published {}, queued {}, serial bytes dropped {} | storage: {} lines in {} batches, {} write errors",
        edge.samples_produced_total,
        edge.samples_stored_total,
        edge.samples_dropped_total,
        edge.backlog_s,
        edge.blocks_published_total,
        edge.queued_blocks,
        edge.dropped_bytes_total,
        twin.store.lines_written_total,
        twin.store.batches_written_total,
        twin.store.write_errors_total,
    );
    out
}

fn on(b: bool) -> &'static str {
    if b { "up" } else { "down" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_it_is_waiting_before_any_rig_is_born() {
        let text = render(1.0, &TwinStats::default(), &EdgeStats::default());
        assert!(text.contains("waiting for a rig"), "{text}");
        assert!(text.contains("blocks published 0"), "{text}");
    }

    #[test]
    fn shows_rate_rms_per_floor_and_blocks_stored_per_rig() {
        let mut twin = TwinStats::default();
        let rig = dtop_proto::RigId::new("so-3s").unwrap_or_else(|e| panic!("{e}"));
        let r = twin.rigs.entry(rig).or_default();
        r.samples_per_s = 1000.0;
        r.floor_accel_rms_m_s2.insert(1, 4.5);
        r.floor_accel_rms_m_s2.insert(3, 6.25);
        r.blocks_stored = 40;
        let mut st = dtop_twin::stats::RigStoreStats {
            samples_stored: 4000,
            persisted_seq: Some(39),
            backlog_s: 0.25,
            ..Default::default()
        };
        st.samples_lost_at_edge.insert("spool_full".into(), 300);
        twin.store.rigs.insert(
            dtop_proto::RigId::new("so-3s").unwrap_or_else(|e| panic!("{e}")),
            st,
        );
        let edge = EdgeStats {
            samples_produced_total: 4300,
            backlog_s: 1.5,
            ..EdgeStats::default()
        };
        let text = render(2.0, &twin, &edge);
        assert!(
            text.contains("4000 samples stored, persisted to seq 39, backlog 0.2 s"),
            "{text}"
        );
        assert!(
            text.contains("declared lost by the edge 300 (spool_full 300)"),
            "{text}"
        );
        assert!(text.contains("samples produced 4300"), "{text}");
        assert!(text.contains("spool backlog 1.5 s"), "{text}");
        assert!(text.contains("rig so-3s"), "{text}");
        assert!(text.contains("1000.0 samples/s"), "{text}");
        assert!(text.contains("1: 4.500  3: 6.250"), "{text}");
        assert!(text.contains("blocks stored 40"), "{text}");
    }
}
