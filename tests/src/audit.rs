//! Loss audit against InfluxDB: which block seqs of a rig are stored (`dtop_blocks`), how many
//! samples they claim, and how many sample points `dtop_samples` holds; and the edge's own loss
//! report read from its Prometheus endpoint, and the twin's count of blocks the edge declared
//! lost, read from its log. Pure comparisons are in [`holes`] and [`declared_lost_blocks`].

use std::collections::BTreeMap;

use anyhow::Result;

use crate::http::blocking_client;
use crate::query::influx_query;

/// What InfluxDB holds for one rig.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// `samples` of each stored block, by seq (a block written twice is one entry).
    pub blocks: BTreeMap<u64, u64>,
    /// Rows of `dtop_samples` (one per sample and stream).
    pub sample_points: u64,
}

impl Stored {
    pub fn block_samples(&self) -> u64 {
        self.blocks.values().sum()
    }
}

/// Reads the rig's stored blocks and sample count.
pub fn stored(base_url: &str, db: &str, rig: &str) -> Result<Stored> {
    let q = format!("SELECT \"seq\", \"samples\" FROM \"dtop_blocks\" WHERE \"rig\" = '{rig}'");
    let json = influx_query(base_url, db, &q)?;
    let mut out = Stored::default();
    if let Some(values) = json
        .pointer("/results/0/series/0/values")
        .and_then(|v| v.as_array())
    {
        for row in values {
            // A row without both fields is not a whole block point; it counts as missing.
            if let (Some(seq), Some(samples)) = (
                row.get(1).and_then(|v| v.as_u64()),
                row.get(2).and_then(|v| v.as_u64()),
            ) {
                out.blocks.insert(seq, samples);
            }
        }
    }
    // COUNT over one field that every sample row carries: the first channel of stream 0.
    let q = format!("SELECT COUNT(*) FROM \"dtop_samples\" WHERE \"rig\" = '{rig}'");
    let json = influx_query(base_url, db, &q)?;
    if let Some(row) = json
        .pointer("/results/0/series/0/values/0")
        .and_then(|v| v.as_array())
    {
        out.sample_points = row
            .iter()
            .skip(1)
            .filter_map(|v| v.as_u64())
            .max()
            .unwrap_or(0);
    }
    Ok(out)
}

/// Seqs in `0..=last` missing from `found`, as inclusive ranges.
pub fn holes(last: u64, found: &BTreeMap<u64, u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for seq in 0..=last {
        if found.contains_key(&seq) {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.1 + 1 == seq => r.1 = seq,
            _ => out.push((seq, seq)),
        }
    }
    out
}

/// The edge's metrics, `name{labels}` → value.
pub fn edge_metrics(port: u16) -> Result<BTreeMap<String, f64>> {
    let resp = blocking_client()?
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .send()?;
    let mut out = BTreeMap::new();
    for line in resp.text().lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.parse::<f64>()
        {
            // Drop the rig label: one rig per edge.
            let key = match key.split_once('{') {
                Some((name, labels)) => {
                    let rest: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|l| !l.starts_with("rig="))
                        .collect();
                    if rest.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}{{{}}}", rest.join(","))
                    }
                }
                None => key.to_owned(),
            };
            out.insert(key, v);
        }
    }
    Ok(out)
}

/// The twin logs one WARN per loss declaration that accounted new seqs, with `blocks=N` the
/// seqs it newly counted lost (`dtop_twin::store::writer`); repeats are not logged at WARN.
pub const TWIN_DECLARED_LOSS_LOG: &str = "The edge declared blocks lost for good";

/// The twin logs one INFO per block it had passed as declared lost that storage acknowledged
/// later (`dtop_twin::store::writer::STORED_AFTER_ALL_LOG`).
pub const TWIN_STORED_AFTER_ALL_LOG: &str = "A block declared lost was stored after all";

/// Blocks the twin counts as declared lost and never stored, from its log: the `blocks=N` of
/// its declaration warnings, less the blocks it logged as stored after all (ANSI colours
/// stripped).
pub fn declared_lost_blocks(log: &str) -> u64 {
    let after_all = log
        .lines()
        .filter(|l| l.contains(TWIN_STORED_AFTER_ALL_LOG))
        .count() as u64;
    declared_blocks(log).saturating_sub(after_all)
}

fn declared_blocks(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(TWIN_DECLARED_LOSS_LOG))
        .filter_map(|l| {
            let plain = strip_ansi(l);
            let value = plain.split(" blocks=").nth(1)?;
            value
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_blocks_of_the_twins_declaration_warnings_less_those_stored_after_all() {
        let log = concat!(
            "2026 WARN dtop_twin::store::writer: The edge declared blocks lost for good; x rig=r blocks=12 samples=1200\n",
            "2026 \u{1b}[33m WARN\u{1b}[0m The edge declared blocks lost for good \u{1b}[3mblocks\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 \u{1b}[3msamples\u{1b}[0m=300\n",
            "2026 INFO something else blocks=99\n",
            "2026 INFO A block declared lost was stored after all; it no longer counts as lost. seq=7\n",
        );
        assert_eq!(declared_lost_blocks(log), 14);
    }

    #[test]
    fn holes_are_the_missing_seqs_as_ranges() {
        let found: BTreeMap<u64, u64> = [0, 1, 4, 6].iter().map(|&s| (s, 1)).collect();
        assert_eq!(holes(8, &found), [(2, 3), (5, 5), (7, 8)]);
        assert!(holes(1, &found).is_empty());
    }
}
