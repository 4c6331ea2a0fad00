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
            "[{elapsed_s:7.1} s] rig {rig}  {rate:7.1} samples/s  RMS accel by floor (m/s²) {rms}  | blocks stored {stored}, missing {missing}, duplicate {dup} | lines stored {lines}",
            rate = r.samples_per_s,
            stored = r.blocks_stored,
            missing = r.blocks_missing,
            dup = r.blocks_duplicate,
            lines = r.lines_written,
        );
    }
    let _ = writeln!(
        out,
        "          edge: blocks published {}, queued {}, samples dropped {}, serial bytes dropped {} | storage: {} lines in {} batches, {} write errors",
        edge.blocks_published_total,
        edge.queued_blocks,
        edge.samples_dropped_total,
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
        let text = render(2.0, &twin, &EdgeStats::default());
        assert!(text.contains("rig so-3s"), "{text}");
        assert!(text.contains("1000.0 samples/s"), "{text}");
        assert!(text.contains("1: 4.500  3: 6.250"), "{text}");
        assert!(text.contains("blocks stored 40"), "{text}");
    }
}
