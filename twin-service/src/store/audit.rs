//! The audit: which block seqs of a rig InfluxDB actually holds, compared with the seq range
//! that should be there (`dtop-twin audit`), and which of the missing ones the edge declared
//! lost. The comparison is pure; the queries are InfluxQL requests over the 1.x `/query` API
//! (`dtop_blocks` and `dtop_blocks_overlap` carry every block's `seq`, `dtop_seq_losses` every
//! accounted loss declaration, see [`crate::lineproto`]).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use dtop_proto::RigId;
use serde::Serialize;

use crate::lineproto::{BLOCKS_MEASUREMENT, BLOCKS_OVERLAP_MEASUREMENT, SEQ_LOSSES_MEASUREMENT};

/// Seqs the edge declared lost for good, as stored in `dtop_seq_losses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredRange {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The edge's reason (`skipped`, `spool_full`, ...).
    pub reason: String,
}

/// What InfluxDB holds of an expected seq range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HoleReport {
    /// Expected seqs found at least once.
    pub present: u64,
    /// Expected seqs neither found nor declared lost, as inclusive ranges.
    pub holes: Vec<(u64, u64)>,
    /// Sum of the hole lengths.
    pub missing: u64,
    /// Expected seqs not found that the edge declared lost, as inclusive ranges with the
    /// declaration's reason.
    pub declared: Vec<DeclaredRange>,
    /// Sum of the declared lengths.
    pub declared_missing: u64,
    /// Seqs found in more than one point (a block stored under two timestamps or streams).
    pub duplicated: Vec<u64>,
    /// Seqs found outside the expected range.
    pub outside: u64,
}

impl HoleReport {
    /// Every expected seq is there exactly once, or declared lost.
    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.duplicated.is_empty()
    }

    /// Moves the parts of the holes that `declared` covers to [`HoleReport::declared`]. Where
    /// declarations overlap, the one listed first names the reason.
    pub fn with_declared(mut self, declared: &[DeclaredRange]) -> Self {
        let mut holes = Vec::new();
        for (first, last) in std::mem::take(&mut self.holes) {
            let mut at = first;
            while at <= last {
                let covering = declared
                    .iter()
                    .find(|d| d.first_seq <= at && at <= d.last_seq);
                let (end, reason) = match covering {
                    Some(d) => (d.last_seq.min(last), Some(&d.reason)),
                    // Up to the next declaration starting inside the hole.
                    None => {
                        let next = declared
                            .iter()
                            .map(|d| d.first_seq)
                            .filter(|&s| s > at && s <= last)
                            .min();
                        (next.map_or(last, |s| s - 1), None)
                    }
                };
                match reason {
                    Some(reason) => {
                        self.declared.push(DeclaredRange {
                            first_seq: at,
                            last_seq: end,
                            reason: reason.clone(),
                        });
                        self.declared_missing += end - at + 1;
                    }
                    None => holes.push((at, end)),
                }
                at = match end.checked_add(1) {
                    Some(n) => n,
                    None => break,
                };
            }
        }
        self.missing = holes.iter().map(|(a, b)| b - a + 1).sum();
        self.holes = holes;
        self
    }
}

/// Compares the seqs found (any order, repeats allowed) with the expected range.
pub fn holes(expected: RangeInclusive<u64>, found: &[u64]) -> HoleReport {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for &s in found {
        *counts.entry(s).or_default() += 1;
    }
    let mut report = HoleReport {
        duplicated: counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect(),
        outside: counts.keys().filter(|s| !expected.contains(s)).count() as u64,
        ..HoleReport::default()
    };
    let (lo, hi) = (*expected.start(), *expected.end());
    if lo > hi {
        return report;
    }
    let mut next = lo;
    for &s in counts.range(lo..=hi).map(|(s, _)| s) {
        if s > next {
            report.holes.push((next, s - 1));
            report.missing += s - next;
        }
        report.present += 1;
        if s == u64::MAX {
            return report;
        }
        next = s + 1;
    }
    if next <= hi {
        report.holes.push((next, hi));
        report.missing += hi - next + 1;
    }
    report
}

/// Why the audit query failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("InfluxDB query failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("InfluxDB answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected InfluxDB reply: {0}")]
    Reply(String),
    #[error(transparent)]
    Query(#[from] crate::store::query::QueryError),
}

/// Every `seq` value of `rig`'s `dtop_blocks` points in the database `query` reads, one per
/// point (a seq stored twice under different timestamps appears twice).
pub async fn stored_seqs(
    query: &crate::store::query::InfluxQuery,
    rig: &RigId,
) -> Result<Vec<u64>, AuditError> {
    // Blocks stored apart (their times were stored already) are stored too.
    let rows = query
        .rows(&format!(
            "SELECT seq FROM {BLOCKS_MEASUREMENT}, {BLOCKS_OVERLAP_MEASUREMENT} WHERE rig = {}",
            crate::store::query::quote(rig.as_str())
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let v = row.get("seq");
            v.and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
                .ok_or_else(|| AuditError::Reply(format!("bad seq {v:?}")))
        })
        .collect()
}

/// Every loss declaration of `rig` the twin stored (`dtop_seq_losses`), repeats merged.
pub async fn declared_losses(
    query: &crate::store::query::InfluxQuery,
    rig: &RigId,
) -> Result<Vec<DeclaredRange>, AuditError> {
    let rows = query
        .rows(&format!(
            "SELECT first_seq, last_seq, reason FROM {SEQ_LOSSES_MEASUREMENT} WHERE rig = {}",
            crate::store::query::quote(rig.as_str())
        ))
        .await?;
    let int = |row: &crate::store::query::Row, name: &str| {
        let v = row.get(name);
        v.and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .ok_or_else(|| {
                AuditError::Reply(format!("bad {name} {v:?} in {SEQ_LOSSES_MEASUREMENT}"))
            })
    };
    let mut ranges = rows
        .iter()
        .map(|row| {
            Ok(DeclaredRange {
                first_seq: int(row, "first_seq")?,
                last_seq: int(row, "last_seq")?,
                reason: row
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unspecified")
                    .to_owned(),
            })
        })
        .collect::<Result<Vec<_>, AuditError>>()?;
    ranges.sort_by_key(|d| (d.first_seq, d.last_seq));
    ranges.dedup();
    Ok(ranges)
}

/// Every `seq` value of `rig`'s `dtop_blocks` points in an InfluxDB 1.x database, one per
/// point (a seq stored twice under different timestamps appears twice).
pub async fn stored_seqs_v1(
    base_url: &str,
    database: &str,
    rig: &RigId,
    timeout: Duration,
) -> Result<Vec<u64>, AuditError> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    // Rig ids are [A-Za-z0-9_-], so quoting them needs no escaping.
    let q = format!(
        "SELECT seq FROM {BLOCKS_MEASUREMENT}, {BLOCKS_OVERLAP_MEASUREMENT} WHERE rig = '{rig}'"
    );
    let mut url = reqwest::Url::parse(&format!("{}/query", base_url.trim_end_matches('/')))
        .map_err(|e| AuditError::Reply(format!("bad URL {base_url}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("db", database)
        .append_pair("q", &q)
        .append_pair("epoch", "ns");
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(AuditError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| AuditError::Reply(e.to_string()))?;
    let result = &reply["results"][0];
    if let Some(e) = result.get("error") {
        return Err(AuditError::Reply(e.to_string()));
    }
    let mut seqs = Vec::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let col = series["columns"]
            .as_array()
            .and_then(|c| c.iter().position(|n| n == "seq"))
            .ok_or_else(|| AuditError::Reply("no seq column".into()))?;
        for row in series["values"].as_array().into_iter().flatten() {
            let seq = row[col]
                .as_u64()
                .or_else(|| row[col].as_f64().map(|f| f as u64))
                .ok_or_else(|| AuditError::Reply(format!("bad seq in {row}")))?;
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_range_has_no_holes() {
        let r = holes(1..=5, &[3, 1, 2, 5, 4]);
        assert!(r.is_complete());
        assert_eq!(r.present, 5);
        assert!(r.holes.is_empty());
    }

    #[test]
    fn reports_holes_at_the_start_middle_and_end() {
        let r = holes(1..=10, &[3, 4, 7]);
        assert_eq!(r.holes, [(1, 2), (5, 6), (8, 10)]);
        assert_eq!(r.missing, 7);
        assert_eq!(r.present, 3);
        assert!(!r.is_complete());
    }

    #[test]
    fn nothing_found_is_one_hole() {
        let r = holes(4..=6, &[]);
        assert_eq!(r.holes, [(4, 6)]);
        assert_eq!(r.missing, 3);
        let r = holes(4..=6, &[1, 9]);
        assert_eq!(r.holes, [(4, 6)]);
        assert_eq!(r.outside, 2);
    }

    #[test]
    fn counts_duplicates_and_seqs_outside_the_range() {
        let r = holes(1..=3, &[1, 2, 2, 3, 9]);
        assert_eq!(r.duplicated, [2]);
        assert_eq!(r.outside, 1);
        assert_eq!(r.missing, 0);
        assert!(!r.is_complete());
    }

    fn declared(first_seq: u64, last_seq: u64, reason: &str) -> DeclaredRange {
        DeclaredRange {
            first_seq,
            last_seq,
            reason: reason.into(),
        }
    }

    #[test]
    fn declared_losses_are_listed_apart_from_the_holes_they_cover() {
        let r = holes(0..=20, &[0, 1, 2, 3, 8, 9, 15, 20]).with_declared(&[
            declared(4, 7, "skipped"),
            declared(10, 12, "spool_full"),
            declared(30, 40, "crash"),
        ]);
        assert_eq!(
            r.declared,
            [declared(4, 7, "skipped"), declared(10, 12, "spool_full")]
        );
        assert_eq!(r.declared_missing, 7);
        assert_eq!(r.holes, [(13, 14), (16, 19)]);
        assert_eq!(r.missing, 6);
        assert!(!r.is_complete());
        let r = holes(0..=9, &[0, 9]).with_declared(&[declared(1, 8, "skipped")]);
        assert!(r.is_complete(), "{r:?}");
        assert_eq!(r.declared_missing, 8);
    }

    #[test]
    fn handles_the_top_of_the_seq_space() {
        let r = holes(u64::MAX - 1..=u64::MAX, &[u64::MAX]);
        assert_eq!(r.holes, [(u64::MAX - 1, u64::MAX - 1)]);
        let r = holes(u64::MAX - 1..=u64::MAX, &[u64::MAX - 1, u64::MAX]);
        assert!(r.is_complete());
    }
}
