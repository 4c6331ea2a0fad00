//! Loss audit against InfluxDB: which block seqs of a rig are stored (`dtop_blocks`), how many
//! samples they claim, and how many sample points `dtop_samples` holds; and the edge's own loss
//! report read from its Prometheus endpoint, and the twin's count of blocks the edge declared
//! lost, read from its log. Pure comparisons are in [`holes`] and [`declared_lost_blocks`].
//! For timestamps (issue 11): every stored block's time and index range ([`stored_blocks`]),
//! sample points per channel, and the pure checks [`time_overlaps`] and [`index_overlaps`].

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

/// One `dtop_blocks` point: a stored block's place in time and in its stream's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlock {
    pub seq: u64,
    pub stream: u32,
    pub first_sample_index: u64,
    pub samples: u64,
    pub sample_period_ns: u64,
    /// Time of the first sample, ns since the epoch.
    pub first_ns: i64,
}

impl StoredBlock {
    /// The time just after its last sample's period.
    fn end_ns(&self) -> i64 {
        self.first_ns + (self.samples * self.sample_period_ns) as i64
    }
}

/// Every `dtop_blocks` point of `rig` (a block written twice is one point).
pub fn stored_blocks(base_url: &str, db: &str, rig: &str) -> Result<Vec<StoredBlock>> {
    let q = format!(
        "SELECT \"seq\", \"stream\", \"first_sample_index\", \"samples\", \"sample_period_ns\" FROM \"dtop_blocks\" WHERE \"rig\" = '{rig}'"
    );
    let json = influx_query(base_url, db, &q)?;
    let mut out = Vec::new();
    let rows = json
        .pointer("/results/0/series/0/values")
        .and_then(|v| v.as_array());
    for row in rows.into_iter().flatten() {
        let int = |i: usize| row.get(i).and_then(|v| v.as_i64());
        let uint = |i: usize| row.get(i).and_then(|v| v.as_u64());
        // `stream` is a tag: InfluxQL returns it as a string.
        let stream = row
            .get(2)
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
            .and_then(|s| u32::try_from(s).ok());
        if let (Some(first_ns), Some(seq), Some(stream), Some(first), Some(samples), Some(period)) =
            (int(0), uint(1), stream, uint(3), uint(4), uint(5))
        {
            out.push(StoredBlock {
                seq,
                stream,
                first_sample_index: first,
                samples,
                sample_period_ns: period,
                first_ns,
            });
        }
    }
    Ok(out)
}

/// Pairs of blocks (seqs) of one stream whose time ranges overlap: the later one's samples
/// would share timestamps (InfluxDB points) with the earlier one's.
pub fn time_overlaps(blocks: &[StoredBlock]) -> Vec<(u64, u64)> {
    overlaps(blocks, |b| (b.first_ns, b.end_ns()))
}

/// Pairs of blocks (seqs) of one stream that carry the same sample index: a sample stored
/// twice.
pub fn index_overlaps(blocks: &[StoredBlock]) -> Vec<(u64, u64)> {
    overlaps(blocks, |b| {
        let first = b.first_sample_index as i64;
        (first, first + b.samples as i64)
    })
}

fn overlaps(blocks: &[StoredBlock], range: impl Fn(&StoredBlock) -> (i64, i64)) -> Vec<(u64, u64)> {
    let mut sorted: Vec<&StoredBlock> = blocks.iter().collect();
    sorted.sort_by_key(|b| (b.stream, range(b).0));
    let mut out = Vec::new();
    // The block reaching furthest so far in this stream, so one long block overlapping
    // several later ones reports each.
    let mut furthest: Option<(u32, i64, u64)> = None;
    for b in sorted {
        let (start, end) = range(b);
        if let Some((stream, reach, seq)) = furthest
            && stream == b.stream
            && start < reach
        {
            out.push((seq, b.seq));
        }
        furthest = match furthest {
            Some((stream, reach, seq)) if stream == b.stream && reach >= end => {
                Some((stream, reach, seq))
            }
            _ => Some((b.stream, end, b.seq)),
        };
    }
    out
}

/// `COUNT` of `dtop_samples` points of `rig`, per field (one field per channel).
pub fn sample_points_per_channel(
    base_url: &str,
    db: &str,
    rig: &str,
) -> Result<BTreeMap<String, u64>> {
    let q = format!("SELECT COUNT(*) FROM \"dtop_samples\" WHERE \"rig\" = '{rig}'");
    let json = influx_query(base_url, db, &q)?;
    let mut out = BTreeMap::new();
    let columns = json
        .pointer("/results/0/series/0/columns")
        .and_then(|v| v.as_array());
    let values = json
        .pointer("/results/0/series/0/values/0")
        .and_then(|v| v.as_array());
    if let (Some(columns), Some(values)) = (columns, values) {
        for (c, v) in columns.iter().zip(values).skip(1) {
            if let (Some(name), Some(n)) = (c.as_str(), v.as_u64()) {
                out.insert(name.trim_start_matches("count_").to_owned(), n);
            }
        }
    }
    Ok(out)
}

/// The twin logs one INFO per block that declares firmware samples no block carries, with
/// `samples=N` (`dtop_twin::rig`), once per block it received for the first time.
pub const TWIN_UNREAD_SAMPLES_LOG: &str = "The edge declared firmware samples no block carries";

/// Samples the edge declared no block carries, from the twin's log (ANSI colours stripped).
pub fn declared_unread_samples(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(TWIN_UNREAD_SAMPLES_LOG))
        .filter_map(|l| field_u64(&strip_ansi(l), "samples"))
        .sum()
}

fn field_u64(line: &str, name: &str) -> Option<u64> {
    let value = line.split(&format!(" {name}=")).nth(1)?;
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
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

    fn block(seq: u64, first_sample_index: u64, samples: u64, first_ns: i64) -> StoredBlock {
        StoredBlock {
            seq,
            stream: 0,
            first_sample_index,
            samples,
            sample_period_ns: 10,
            first_ns,
        }
    }

    #[test]
    fn finds_blocks_whose_time_or_index_ranges_overlap() {
        // 100 samples of 10 ns each: seq 1 starts where seq 0 ends; seq 2 reuses seq 1's time.
        let blocks = [
            block(0, 0, 100, 0),
            block(1, 100, 100, 1_000),
            block(2, 500, 100, 1_500),
            block(3, 550, 10, 10_000),
        ];
        assert_eq!(time_overlaps(&blocks), [(1, 2)]);
        assert_eq!(index_overlaps(&blocks), [(2, 3)]);
        let mut other_stream = block(4, 0, 100, 0);
        other_stream.stream = 1;
        assert!(time_overlaps(&[blocks[0], other_stream]).is_empty());
    }

    #[test]
    fn sums_the_samples_the_twin_logged_as_declared_unread() {
        let log = concat!(
            "2026 INFO dtop_twin::rig: The edge declared firmware samples no block carries. rig=r seq=4 samples=120 reason=\"edge_down\"\n",
            "2026 INFO other samples=5\n",
            "2026 \u{1b}[32m INFO\u{1b}[0m The edge declared firmware samples no block carries. \u{1b}[3msamples\u{1b}[0m\u{1b}[2m=\u{1b}[0m30\n",
        );
        assert_eq!(declared_unread_samples(log), 150);
    }

    #[test]
    fn holes_are_the_missing_seqs_as_ranges() {
        let found: BTreeMap<u64, u64> = [0, 1, 4, 6].iter().map(|&s| (s, 1)).collect();
        assert_eq!(holes(8, &found), [(2, 3), (5, 5), (7, 8)]);
        assert!(holes(1, &found).is_empty());
    }
}
